-- Issue 10 (speed on one core): every claim and every outcome moves a row's status
-- to or from 'sending', and each such move rewrote an entry in both status indexes,
-- outbox_due (status, next_attempt_at) and outbox_sending_lease (status, lease_until).
-- Rows in 'sending' are only those claimed and not yet recorded (a few per sender), so
-- the claim's "lease ran out" read and next_due_at find them through outbox_due's
-- status prefix and filter on lease_until; the second index only cost writes.
-- Portable DDL (SPEC §2, §13). V10: V9 may be taken by another branch.
DROP INDEX outbox_sending_lease;
