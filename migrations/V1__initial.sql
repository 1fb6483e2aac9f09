-- Portable DDL only (SQLite, PostgreSQL, MySQL): no AUTOINCREMENT, no
-- database-generated defaults. Ids are produced by the application (UUID v4
-- text, or the merchant's own order id); timestamps are Unix milliseconds
-- (BIGINT) written by the application.

CREATE TABLE orders (
    id VARCHAR(64) NOT NULL PRIMARY KEY,
    user_id VARCHAR(255),
    payment_id VARCHAR(255),
    status VARCHAR(16) NOT NULL,
    customer_phone_e164 VARCHAR(16),
    total_amount BIGINT NOT NULL,
    currency CHAR(3) NOT NULL,
    note VARCHAR(1024),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_confirmation_sent_at BIGINT
);

CREATE TABLE whatsapp_tokens (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    order_id VARCHAR(64) NOT NULL REFERENCES orders (id),
    token VARCHAR(36) NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    consumed_at BIGINT,
    created_at BIGINT NOT NULL
);

CREATE INDEX whatsapp_tokens_order ON whatsapp_tokens (order_id);

-- One row per idempotency key: claiming a key is an insert that does nothing
-- on conflict, inside the same transaction as everything the event causes.
CREATE TABLE webhook_events (
    idempotency_key VARCHAR(255) NOT NULL PRIMARY KEY,
    event_id VARCHAR(255),
    event_type VARCHAR(64) NOT NULL,
    order_id VARCHAR(64),
    processed_at BIGINT NOT NULL
);

-- The durable outbox. UNIQUE (order_id, kind, slot) makes a second
-- confirmation or link message for an order impossible: slot is '' for the
-- customer's two messages and the elder's wa_id for elder replies.
-- status: waiting (link held until the confirmation is accepted), queued,
-- sent, dead, cancelled (its confirmation died).
CREATE TABLE outbox (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    order_id VARCHAR(64) NOT NULL REFERENCES orders (id),
    kind VARCHAR(16) NOT NULL,
    slot VARCHAR(32) NOT NULL,
    recipient VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    variant VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error VARCHAR(1024),
    graph_message_id VARCHAR(128) UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_at BIGINT,
    UNIQUE (order_id, kind, slot)
);

CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE invite_clicks (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    token_id VARCHAR(36) NOT NULL REFERENCES whatsapp_tokens (id),
    order_id VARCHAR(64) NOT NULL REFERENCES orders (id),
    clicked_at BIGINT NOT NULL,
    user_agent VARCHAR(512),
    is_preview BOOLEAN NOT NULL
);

CREATE INDEX invite_clicks_order ON invite_clicks (order_id);

-- One row, rewritten by /healthz to prove the database takes writes.
CREATE TABLE heartbeat (
    id INTEGER NOT NULL PRIMARY KEY,
    beat_at BIGINT NOT NULL
);

INSERT INTO heartbeat (id, beat_at) VALUES (1, 0);
