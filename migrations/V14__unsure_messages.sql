-- Issue 18, SPEC §5 "unsure" messages: a send whose answer was lost waits for
-- a status webhook that proves Meta accepted it, instead of going again at once.
-- unsure_until: when the wait ends (the row is queued for then); NULL once the
--   message is known sent. unsure_since: when the lost send could have started,
--   so a status older than that cannot prove it.
-- unsure_proofs: statuses naming an order (biz_opaque_callback_data) whose
--   message id we do not know yet, kept until a message of that order and
--   recipient turns out unsure (or is sent, or a week passes): a proof may come
--   while the send is still in flight, and survives a restart.
-- Portable DDL (SPEC §2, §13). V14: assigned to this branch.
ALTER TABLE outbox ADD COLUMN unsure_until BIGINT;
ALTER TABLE outbox ADD COLUMN unsure_since BIGINT;
CREATE TABLE unsure_proofs (
    graph_message_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_user_id TEXT,
    reported_at BIGINT,
    received_at BIGINT NOT NULL
);
CREATE INDEX unsure_proofs_order ON unsure_proofs (order_id);
