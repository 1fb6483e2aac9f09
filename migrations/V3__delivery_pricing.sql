-- SPEC §9: each delivery status's `pricing` (billable, category) is recorded with the
-- message, so the merchant can see what the messages cost (§12 overview, §14 metrics).
-- A status may arrive before the send that produced its id has returned, so the pending
-- table carries the same two columns until it is applied.
ALTER TABLE outbox ADD COLUMN pricing_billable BOOLEAN;
ALTER TABLE outbox ADD COLUMN pricing_category VARCHAR(32);

ALTER TABLE pending_statuses ADD COLUMN pricing_billable BOOLEAN;
ALTER TABLE pending_statuses ADD COLUMN pricing_category VARCHAR(32);
