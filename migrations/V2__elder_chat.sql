-- The elder's side of the conversation (SPEC §9): inbound messages, the
-- links between a sender and an order, and delivery states of our own
-- outbound messages. Portable DDL, application-made ids and times.

CREATE TABLE inbound_messages (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    wamid VARCHAR(255) NOT NULL UNIQUE,
    wa_id VARCHAR(32) NOT NULL,
    profile_name VARCHAR(255),
    message_type VARCHAR(32) NOT NULL,
    body TEXT,
    sent_at BIGINT,
    received_at BIGINT NOT NULL,
    -- token | expired_token | linked_sender | none
    attribution VARCHAR(16) NOT NULL,
    order_id VARCHAR(64) REFERENCES orders (id),
    token_id VARCHAR(36) REFERENCES whatsapp_tokens (id)
);

CREATE INDEX inbound_messages_sender ON inbound_messages (wa_id, received_at);
CREATE INDEX inbound_messages_order ON inbound_messages (order_id);

-- One row per (order, sender): several elders may come through one token.
CREATE TABLE contact_links (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    order_id VARCHAR(64) NOT NULL REFERENCES orders (id),
    wa_id VARCHAR(32) NOT NULL,
    profile_name VARCHAR(255),
    token_id VARCHAR(36) REFERENCES whatsapp_tokens (id),
    linked_at BIGINT NOT NULL,
    UNIQUE (order_id, wa_id)
);

CREATE INDEX contact_links_sender ON contact_links (wa_id, linked_at);

-- sent -> delivered -> read, never backwards; or failed with Meta's error.
ALTER TABLE outbox ADD COLUMN delivery_status VARCHAR(16);
ALTER TABLE outbox ADD COLUMN delivery_error VARCHAR(512);
ALTER TABLE outbox ADD COLUMN delivery_updated_at BIGINT;

-- A status can arrive before the send call that produced its message id
-- has returned; it waits here and is applied when the id is recorded.
CREATE TABLE pending_statuses (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    graph_message_id VARCHAR(255) NOT NULL,
    status VARCHAR(16) NOT NULL,
    error_code BIGINT,
    error_title VARCHAR(512),
    received_at BIGINT NOT NULL
);

CREATE INDEX pending_statuses_message ON pending_statuses (graph_message_id);
