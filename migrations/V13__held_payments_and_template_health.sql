-- SPEC §11: a Razorpay payment.captured whose only order id is Razorpay's own
-- (`order_…`) is recorded here, not confirmed, until the same payment's
-- order.paid names the merchant's order (the row is then deleted in the
-- same transaction that confirms it) or `due_at` passes (the row is then
-- confirmed under `order_id` and deleted, in one transaction). Kept in the
-- database so the wait survives a restart.
CREATE TABLE held_payments (
    source VARCHAR(32) NOT NULL,
    payment_id VARCHAR(255) NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    order_id VARCHAR(64) NOT NULL,
    order_id_source VARCHAR(64),
    user_id VARCHAR(255),
    total_amount BIGINT NOT NULL,
    currency CHAR(3) NOT NULL,
    customer_phone_e164 VARCHAR(16),
    note VARCHAR(1024),
    received_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    PRIMARY KEY (source, payment_id)
);

CREATE INDEX held_payments_due ON held_payments (due_at);

-- SPEC §9: the last word of Meta's template webhooks on each template and
-- language (message_template_status_update, template_category_update). A
-- paused, disabled or rejected confirmation or invite template holds its
-- sending until a later event approves it again.
CREATE TABLE template_health (
    name VARCHAR(512) NOT NULL,
    language VARCHAR(16) NOT NULL,
    status VARCHAR(32),
    reason VARCHAR(1024),
    status_at BIGINT,
    category VARCHAR(32),
    previous_category VARCHAR(32),
    category_note VARCHAR(255),
    category_at BIGINT,
    PRIMARY KEY (name, language)
);

-- SPEC §9: Meta's value-level `errors` (outside any status): a system- or
-- account-level problem, shown on the merchant's page.
CREATE TABLE whatsapp_errors (
    id VARCHAR(36) NOT NULL PRIMARY KEY,
    code BIGINT,
    title VARCHAR(1024),
    details VARCHAR(2048),
    received_at BIGINT NOT NULL
);

CREATE INDEX whatsapp_errors_received ON whatsapp_errors (received_at);
