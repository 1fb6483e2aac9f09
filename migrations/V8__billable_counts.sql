-- SPEC §14: `GET /metrics` reports billable messages by pricing category at any database
-- size. Counting `outbox` at each scrape grows with history (15 ms at 100,000 orders), so
-- the count is kept here, in the same transaction that records a status's pricing
-- (inbound::apply_status). Portable DDL (§13). V8: V7 is taken by the outbox claims.
CREATE TABLE billable_counts (
    category VARCHAR(32) PRIMARY KEY,
    messages BIGINT NOT NULL
);

INSERT INTO billable_counts (category, messages)
SELECT COALESCE(pricing_category, ''), COUNT(*)
FROM outbox
WHERE pricing_billable = TRUE
GROUP BY COALESCE(pricing_category, '');
