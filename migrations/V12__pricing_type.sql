-- SPEC §9: since July 2025 Meta prices each message and says so in a status's
-- `pricing.type` (`regular`, `free_customer_service`, `free_entry_point`);
-- `billable` is deprecated. A message is paid when its type is `regular`, or,
-- without a type, when it is billable: `pricing_paid` holds that verdict, worked
-- out once by `outbox::Pricing::paid` as each status is applied, so the page and
-- the metrics count one column instead of repeating the rule in SQL.
ALTER TABLE outbox ADD COLUMN pricing_type VARCHAR(32);
ALTER TABLE outbox ADD COLUMN pricing_paid BOOLEAN;
ALTER TABLE pending_statuses ADD COLUMN pricing_type VARCHAR(32);

-- Rows priced before V12 carry no type: billable decides.
UPDATE outbox SET pricing_paid = pricing_billable WHERE pricing_billable IS NOT NULL;

-- SPEC §14: `orderlink_paid_messages` by category at any database size, kept in
-- the transaction that records a status's pricing, like `billable_counts` (V8).
CREATE TABLE paid_counts (
    category VARCHAR(32) PRIMARY KEY,
    messages BIGINT NOT NULL
);

INSERT INTO paid_counts (category, messages)
SELECT COALESCE(pricing_category, ''), COUNT(*)
FROM outbox
WHERE pricing_paid = TRUE
GROUP BY COALESCE(pricing_category, '');

-- The overview's paid messages per window and per day, from the index alone.
CREATE INDEX outbox_paid ON outbox (pricing_paid, created_at, pricing_category);
