-- An order's token is read as its first one (ORDER BY created_at LIMIT 1) when a
-- webhook repeats and for every message claimed. With the index on order_id alone
-- each read sorted the order's tokens in a temporary sorter; with created_at in the
-- index the first row is the answer. Same number of indexes, so writes cost the
-- same. Portable DDL (SPEC §2, §13). V15: issue 21.
DROP INDEX whatsapp_tokens_order;
CREATE INDEX whatsapp_tokens_order ON whatsapp_tokens (order_id, created_at);
