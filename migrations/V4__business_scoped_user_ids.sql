-- SPEC §9 "Identity": a sender is known by its business-scoped user id
-- (BSUID, `user_id`), by its phone number (`wa_id`), or by both once both
-- were seen. Links and messages hang off one `contacts` row, so a contact
-- whose number or BSUID changes keeps its links to orders.
--
-- Portable DDL only (SQLite, PostgreSQL, MySQL): tables are rebuilt and
-- renamed rather than altered in place (SQLite cannot drop NOT NULL or a
-- UNIQUE constraint), no database-made ids or times. Existing contacts get
-- their wa_id as id (a wa_id is at most 32 characters); new ones get a
-- 32-character UUID from the application, so the outbox's elder-reply slot
-- (VARCHAR(32)) can hold the contact id either way.
-- A BSUID is a two-letter country code, a dot, an optional `ENT.` (parent
-- BSUIDs) and up to 128 characters: VARCHAR(160) holds it.

CREATE TABLE contacts (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    wa_id VARCHAR(32) UNIQUE,
    user_id VARCHAR(160) UNIQUE,
    profile_name VARCHAR(255),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

INSERT INTO contacts (id, wa_id, user_id, profile_name, created_at, updated_at)
SELECT seen.wa_id, seen.wa_id, NULL, MAX(seen.profile_name), MIN(seen.at), MAX(seen.at)
FROM (
    SELECT wa_id, profile_name, linked_at AS at FROM contact_links
    UNION ALL
    SELECT wa_id, profile_name, received_at AS at FROM inbound_messages
) seen
GROUP BY seen.wa_id;

-- One row per (order, contact): several elders may come through one token.
CREATE TABLE contact_links_v4 (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    order_id VARCHAR(64) NOT NULL REFERENCES orders (id),
    contact_id VARCHAR(36) NOT NULL REFERENCES contacts (id),
    profile_name VARCHAR(255),
    token_id VARCHAR(36) REFERENCES whatsapp_tokens (id),
    linked_at BIGINT NOT NULL,
    UNIQUE (order_id, contact_id)
);

INSERT INTO contact_links_v4 (id, order_id, contact_id, profile_name, token_id, linked_at)
SELECT id, order_id, wa_id, profile_name, token_id, linked_at FROM contact_links;

DROP TABLE contact_links;
ALTER TABLE contact_links_v4 RENAME TO contact_links;
CREATE INDEX contact_links_contact ON contact_links (contact_id, linked_at);

-- Each message keeps the identity it arrived with (either may be missing)
-- and points at the contact it belongs to.
-- attribution: token | expired_token | linked_sender | none
CREATE TABLE inbound_messages_v4 (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    wamid VARCHAR(255) NOT NULL UNIQUE,
    contact_id VARCHAR(36) NOT NULL REFERENCES contacts (id),
    wa_id VARCHAR(32),
    user_id VARCHAR(160),
    profile_name VARCHAR(255),
    message_type VARCHAR(32) NOT NULL,
    body TEXT,
    sent_at BIGINT,
    received_at BIGINT NOT NULL,
    attribution VARCHAR(16) NOT NULL,
    order_id VARCHAR(64) REFERENCES orders (id),
    token_id VARCHAR(36) REFERENCES whatsapp_tokens (id)
);

INSERT INTO inbound_messages_v4 (id, wamid, contact_id, wa_id, user_id, profile_name, message_type,
                                 body, sent_at, received_at, attribution, order_id, token_id)
SELECT id, wamid, wa_id, wa_id, NULL, profile_name, message_type,
       body, sent_at, received_at, attribution, order_id, token_id
FROM inbound_messages;

DROP TABLE inbound_messages;
ALTER TABLE inbound_messages_v4 RENAME TO inbound_messages;
CREATE INDEX inbound_messages_contact ON inbound_messages (contact_id, received_at);
CREATE INDEX inbound_messages_order ON inbound_messages (order_id);

-- outbox.recipient is VARCHAR(16), an E.164 number: too short for a BSUID.
-- An elder known only by BSUID is written to through `recipient_user_id`
-- (Meta's send API takes it as `recipient` instead of `to`); `recipient`
-- is then empty.
ALTER TABLE outbox ADD COLUMN recipient_user_id VARCHAR(160);
