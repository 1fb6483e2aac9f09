-- Issue 19: the metrics' counts of billable and paid messages (V8, V12) without one
-- hot row per category. Every priced status moved its category's one row, whose lock
-- PostgreSQL holds until the status's transaction commits, so two instances' status
-- webhooks waited for each other's commits in single file: 373 statuses/s, p99 230 ms
-- (bench --only postgres, 2026-12-07). A count is now the sum of its category's rows,
-- one per slot: PostgreSQL writes a status's change into the row of its connection's
-- slot, so concurrent statuses touch different rows. SQLite has one writer: slot 0.
--
-- Portable DDL (SPEC §2, §13): rebuilt and renamed, as SQLite cannot change a primary
-- key in place. What was counted is kept in slot 0.

CREATE TABLE billable_counts_v17 (
    category VARCHAR(32) NOT NULL,
    slot INTEGER NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL,
    PRIMARY KEY (category, slot)
);
INSERT INTO billable_counts_v17 (category, slot, messages)
SELECT category, 0, messages FROM billable_counts;
DROP TABLE billable_counts;
ALTER TABLE billable_counts_v17 RENAME TO billable_counts;

CREATE TABLE paid_counts_v17 (
    category VARCHAR(32) NOT NULL,
    slot INTEGER NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL,
    PRIMARY KEY (category, slot)
);
INSERT INTO paid_counts_v17 (category, slot, messages)
SELECT category, 0, messages FROM paid_counts;
DROP TABLE paid_counts;
ALTER TABLE paid_counts_v17 RENAME TO paid_counts;
