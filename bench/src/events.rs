//! Payment events as the gateway sends them (SPEC §4), signed requests, and
//! databases pre-populated through the product's own unit of work.

use orderlink::clock::now_ms;
use orderlink::domain::PaymentEvent;
use orderlink::payments::{self, Context};
use orderlink::signature::WebhookSecret;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const PHONE: &str = "+91 98765 43210";
const TOKEN_TTL_MS: i64 = 90 * 24 * 3600 * 1000;

/// A `payment_succeeded` body shaped like SPEC §4's example.
pub fn payment_body(event_id: &str, order_id: &str) -> String {
    serde_json::json!({
        "id": event_id,
        "type": "payment_succeeded",
        "created_at": "2026-11-26T10:00:00Z",
        "data": {
            "order_id": order_id,
            "payment_id": format!("pay_{event_id}"),
            "user_id": "user_77",
            "amount": 49900,
            "currency": "INR",
            "customer_phone": PHONE,
            "note": "Arrives by Friday"
        }
    })
    .to_string()
}

/// `n` unique signed `POST /webhooks/payment` requests, as raw bytes.
/// `run` keeps ids unique across the webhook children of one benchmark.
pub fn signed_webhooks(addr: SocketAddr, run: &str, n: usize) -> Vec<Vec<u8>> {
    let secret = WebhookSecret::parse(SECRET).expect("bench secret parses");
    let ts = (now_ms() / 1000).to_string();
    (0..n)
        .map(|i| {
            let id = format!("msg_{run}_{i:06}");
            let body = payment_body(&format!("evt_{run}_{i:06}"), &format!("ORD-{run}-{i:06}"));
            let sig = secret.sign(&id, &ts, body.as_bytes());
            format!(
                "POST /webhooks/payment HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 webhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}

/// Writes `orders` paid orders (each with its token and both messages
/// queued, exactly as the webhook would) through `payments::record`, in
/// transactions of `batch`. Returns how long it took.
pub fn populate(path: &Path, prefix: &str, orders: usize, batch: usize) -> Duration {
    let conn = orderlink::db::Conn::from(crate::ceiling::open_migrated(path));
    let start = std::time::Instant::now();
    let mut i = 0;
    while i < orders {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let ctx = Context {
            now_ms: now_ms(),
            token_ttl_ms: TOKEN_TTL_MS,
            link_message: true,
        };
        for j in i..(i + batch).min(orders) {
            let key = format!("pre_{prefix}_{j:07}");
            let body = payment_body(&key, &format!("PRE-{prefix}-{j:07}"));
            let event = PaymentEvent::parse(body.as_bytes(), None).expect("bench event parses");
            payments::record(&conn, &key, &event, &ctx).expect("record");
        }
        conn.execute_batch("COMMIT").expect("commit");
        i += batch;
    }
    start.elapsed()
}

/// Marks every queued or waiting message as already accepted by Meta, as in
/// a database that has been serving for a while (used for the start-up
/// figure on a large database, so the sender has nothing to do).
pub fn mark_all_sent(path: &Path) {
    let conn = crate::ceiling::open_migrated(path);
    let now = now_ms();
    conn.execute_batch(&format!(
        "BEGIN;
         UPDATE outbox SET status = 'sent', sent_at = {now}, updated_at = {now}, attempts = 1,
                graph_message_id = 'wamid.pre.' || id
          WHERE status IN ('queued', 'waiting');
         UPDATE orders SET last_confirmation_sent_at = {now};
         COMMIT;"
    ))
    .expect("mark the outbox sent");
}

/// The Razorpay webhook secret the bench children run with (§11).
pub const RAZORPAY_SECRET: &str = "bench_razorpay_webhook_secret";

/// A `payment.captured` body shaped like Razorpay's documented sample
/// (razorpay.com/docs/webhooks/payloads/payments), the merchant's order id
/// in `notes.order_id`: a gateway body is larger than §4's, as in real life.
pub fn razorpay_body(payment_id: &str, order_id: &str) -> String {
    serde_json::json!({
        "entity": "event",
        "account_id": "acc_BFQ7uQEaa7j2z7",
        "event": "payment.captured",
        "contains": ["payment"],
        "payload": {"payment": {"entity": {
            "id": payment_id, "entity": "payment", "amount": 49900, "currency": "INR",
            "status": "captured", "order_id": format!("order_{payment_id}"), "invoice_id": null,
            "international": false, "method": "upi", "amount_refunded": 0,
            "refund_status": null, "captured": true, "description": "Purchase",
            "card_id": null, "bank": null, "wallet": null, "vpa": "gaurav.kumar@exampleupi",
            "email": "gaurav.kumar@example.com", "contact": PHONE,
            "notes": {"order_id": order_id, "note": "Arrives by Friday"},
            "fee": 1180, "tax": 180, "error_code": null, "error_description": null,
            "error_source": null, "error_step": null, "error_reason": null,
            "acquirer_data": {"rrn": "033814379298"}, "created_at": 1567674599
        }}},
        "created_at": 1567674606
    })
    .to_string()
}

/// `n` unique signed `POST /webhooks/razorpay` requests, as raw bytes.
pub fn razorpay_webhooks(addr: SocketAddr, run: &str, n: usize) -> Vec<Vec<u8>> {
    let secret = orderlink::signature::TextSecrets::parse(RAZORPAY_SECRET).expect("secret");
    (0..n)
        .map(|i| {
            let body = razorpay_body(&format!("pay_{run}{i:06}"), &format!("RZP-{run}-{i:06}"));
            let sig: String = secret
                .sign(&[body.as_bytes()])
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!(
                "POST /webhooks/razorpay HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 X-Razorpay-Signature: {sig}\r\nx-razorpay-event-id: evt_{run}_{i:06}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}

/// A sent message as Meta's statuses name it: its id, the order it carried
/// as `biz_opaque_callback_data`, and its recipient.
pub struct Sent {
    pub message_id: String,
    pub order_id: String,
    pub recipient: String,
}

/// One signed `POST /webhooks/whatsapp` per message: a `delivered` status
/// priced as Meta prices per message since July 2025, in the shape of its
/// "Status messages" webhook reference (`statuses[].pricing.type`).
pub fn signed_statuses(addr: SocketAddr, sent: &[Sent]) -> Vec<Vec<u8>> {
    let ts = (now_ms() / 1000).to_string();
    sent.iter()
        .map(|m| {
            let body = serde_json::json!({
                "object": "whatsapp_business_account",
                "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": crate::child::BUSINESS_NUMBER,
                                 "phone_number_id": crate::child::PHONE_NUMBER_ID},
                    "statuses": [{
                        "id": m.message_id,
                        "status": "delivered",
                        "timestamp": ts,
                        "recipient_id": m.recipient,
                        "biz_opaque_callback_data": m.order_id,
                        "pricing": {"billable": true, "pricing_model": "PMP",
                                    "category": "utility", "type": "regular"}
                    }]
                }}]}]
            })
            .to_string();
            let sig = orderlink::signature::sign_meta(crate::child::APP_SECRET.as_bytes(), body.as_bytes());
            format!(
                "POST /webhooks/whatsapp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 X-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}
