-- The sender's claim lives in the row (issue 10): a sender takes due rows
-- with one UPDATE … RETURNING that sets status 'sending', who claimed them
-- and until when. A row whose lease ran out (its claimant crashed) is due
-- again; an outcome is written only by the claim that still holds the row.
-- Plain ALTER TABLE ADD COLUMN and CREATE INDEX: SQLite and PostgreSQL
-- both take this file as it is.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until BIGINT;
CREATE INDEX outbox_sending_lease ON outbox (status, lease_until);
