-- The merchant's page (SPEC §12): sign-in sessions, and the indexes that keep
-- its pages fast at 100,000 orders. Portable DDL; ids and times from the
-- application.

-- A session id is 32 random bytes held only by the browser's cookie; the
-- table keeps its SHA-256, so a copy of the database signs nobody in.
-- token_hash is the SHA-256 of the ADMIN_TOKEN the session was opened with:
-- changing ADMIN_TOKEN signs every session out.
CREATE TABLE admin_sessions (
    id_hash CHAR(64) NOT NULL PRIMARY KEY,
    token_hash CHAR(64) NOT NULL,
    csrf_token CHAR(64) NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

-- Orders list: newest first, keyset pagination; the phone is in the index so
-- a search by its last digits reads the index alone.
CREATE INDEX orders_created ON orders (created_at, id, customer_phone_e164);
-- Overview funnel: messages of each kind queued in a window, with their
-- delivery state, and their price, read from the index alone.
CREATE INDEX outbox_funnel ON outbox (kind, created_at, delivery_status);
CREATE INDEX outbox_pricing ON outbox (pricing_billable, created_at, pricing_category);
CREATE INDEX invite_clicks_time ON invite_clicks (clicked_at, is_preview, order_id);
CREATE INDEX contact_links_time ON contact_links (linked_at, order_id);
-- One order's timeline.
CREATE INDEX webhook_events_order ON webhook_events (order_id);
-- Elder chats: the latest inbound messages, and the unattributed ones.
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
CREATE INDEX inbound_messages_order_time ON inbound_messages (order_id, received_at);
