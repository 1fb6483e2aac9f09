//! Meta's side of SPEC §9 and the admin API of §10: webhook payloads in the
//! shapes the WhatsApp Cloud API sends, signed with `X-Hub-Signature-256`
//! like Meta signs them, and small clients for the handshake and `/admin`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::app::{into_resp, Resp, TestApp, APP_SECRET, PHONE_NUMBER_ID};
use super::fake_graph::{FakeGraph, RecordedRequest};
use super::signing::now_secs;
use super::{pay, payment_event, Processed, PATIENCE};

/// The `wa_id` of the elder who opens the forwarded link first.
pub const ELDER_A: &str = "919811111111";
/// A second elder on the same link.
pub const ELDER_B: &str = "919822222222";
/// Someone the shop has never heard of.
pub const STRANGER: &str = "447700900123";

/// `sha256=` + hex(HMAC-SHA256(secret, raw body)), as Meta signs its webhooks.
pub fn meta_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh message id in Meta's style.
pub fn fresh_wamid() -> String {
    format!(
        "wamid.HBgM{}",
        uuid::Uuid::new_v4().simple().to_string().to_uppercase()
    )
}

/// One `entry[].changes[].value` wrapped in the `whatsapp_business_account` envelope.
pub fn envelope(value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{"field": "messages", "value": value}]
        }]
    })
}

fn metadata() -> Value {
    json!({
        "display_phone_number": "15550100000",
        "phone_number_id": PHONE_NUMBER_ID
    })
}

/// A `messages` change: `contacts[]` from `(wa_id, profile name)`, and the messages as given.
pub fn inbound_payload(contacts: &[(&str, &str)], messages: Vec<Value>) -> Value {
    let contacts: Vec<Value> = contacts
        .iter()
        .map(|(wa_id, name)| json!({"profile": {"name": name}, "wa_id": wa_id}))
        .collect();
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": contacts,
        "messages": messages
    }))
}

/// One `messages[]` entry of any type; `content` is the type's own object.
pub fn message_of_type(from: &str, wamid: &str, kind: &str, content: Value) -> Value {
    let mut m = json!({
        "from": from,
        "id": wamid,
        "timestamp": now_secs().to_string(),
        "type": kind
    });
    m[kind] = content;
    m
}

/// One text `messages[]` entry.
pub fn text_message(from: &str, wamid: &str, body: &str) -> Value {
    message_of_type(from, wamid, "text", json!({"body": body}))
}

/// A whole webhook body carrying one text from `from` (profile `name`).
pub fn text_payload(from: &str, name: &str, wamid: &str, body: &str) -> Value {
    inbound_payload(&[(from, name)], vec![text_message(from, wamid, body)])
}

/// The text an elder sends after tapping `processed`'s wa.me link: its
/// prefilled text, token and all, from `from` (profile `name`).
pub fn prefilled_text_payload(from: &str, name: &str, wamid: &str, processed: &Processed) -> Value {
    text_payload(from, name, wamid, &prefilled_text(&processed.whatsapp_link))
}

/// One `statuses[]` entry.
pub fn status(message_id: &str, status: &str, recipient: &str) -> Value {
    json!({
        "id": message_id,
        "status": status,
        "timestamp": now_secs().to_string(),
        "recipient_id": recipient,
        "conversation": {"id": "c0ffee", "origin": {"type": "utility"}},
        "pricing": {"billable": true, "pricing_model": "CBP", "category": "utility"}
    })
}

/// A `failed` status with Meta's error code and title.
pub fn failed_status(message_id: &str, recipient: &str, code: i64, title: &str) -> Value {
    json!({
        "id": message_id,
        "status": "failed",
        "timestamp": now_secs().to_string(),
        "recipient_id": recipient,
        "errors": [{
            "code": code,
            "title": title,
            "message": title,
            "error_data": {"details": "Message failed to send."}
        }]
    })
}

/// A `statuses` change holding these statuses, in this order.
pub fn statuses_payload(statuses: Vec<Value>) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "statuses": statuses
    }))
}

/// The prefilled text the wa.me link carries, decoded from its `text=` parameter.
pub fn prefilled_text(whatsapp_link: &str) -> String {
    let encoded = whatsapp_link
        .split_once("?text=")
        .unwrap_or_else(|| panic!("no ?text= in {whatsapp_link}"))
        .1;
    percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .expect("the prefilled text is UTF-8")
        .into_owned()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .redirects(0)
        .build()
}

/// Meta's webhook and the admin API, spoken to a running app.
pub trait MetaApi {
    /// `POST /webhooks/whatsapp` with exactly these headers (nothing signed for you).
    fn post_whatsapp_with_headers(&self, body: &str, headers: &[(&str, &str)]) -> Resp;
    /// Signed with the harness's `WHATSAPP_APP_SECRET`, as Meta would.
    fn post_whatsapp(&self, body: &str) -> Resp;
    /// Signs and posts `payload`, asserting the 200 Meta needs.
    fn deliver(&self, payload: &Value);
    /// `GET /webhooks/whatsapp` with these query pairs (percent-encoded for you).
    fn verify_webhook(&self, query: &[(&str, &str)]) -> Resp;
    /// A request to `/admin…` with `Authorization` set to `authorization` when given.
    fn admin(&self, method: &str, path: &str, authorization: Option<&str>) -> Resp;
}

impl MetaApi for TestApp {
    fn post_whatsapp_with_headers(&self, body: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = agent()
            .post(&self.url("/webhooks/whatsapp"))
            .set("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        into_resp(req.send_string(body))
    }

    fn post_whatsapp(&self, body: &str) -> Resp {
        let signature = meta_signature(APP_SECRET, body);
        self.post_whatsapp_with_headers(body, &[("X-Hub-Signature-256", &signature)])
    }

    fn deliver(&self, payload: &Value) {
        let resp = self.post_whatsapp(&payload.to_string());
        assert_eq!(
            resp.status, 200,
            "POST /webhooks/whatsapp answered {}: {}",
            resp.status, resp.body
        );
    }

    fn verify_webhook(&self, query: &[(&str, &str)]) -> Resp {
        let mut req = agent().get(&self.url("/webhooks/whatsapp"));
        for (k, v) in query {
            req = req.query(k, v);
        }
        into_resp(req.call())
    }

    fn admin(&self, method: &str, path: &str, authorization: Option<&str>) -> Resp {
        let mut req = agent().request(method, &self.url(path));
        if let Some(value) = authorization {
            req = req.set("Authorization", value);
        }
        into_resp(req.call())
    }
}

/// What `ELDER_REPLY_TEXT` is set to by [`app_with_reply`].
pub const REPLY_TEXT: &str =
    "Thank you for writing about order {order_id}. Someone from the shop will answer here.";

/// [`REPLY_TEXT`] as the elder should receive it.
pub fn reply_text_for(order_id: &str) -> String {
    REPLY_TEXT.replace("{order_id}", order_id)
}

/// The harness's live app with `ELDER_REPLY_TEXT` and a verify token set.
pub fn app_with_reply(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .spawn()
}

/// [`app_with_reply`] on SQLite whatever the run's store.
pub fn app_with_reply_on_sqlite(graph: &FakeGraph) -> TestApp {
    TestApp::builder(graph)
        .env("ELDER_REPLY_TEXT", REPLY_TEXT)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .on_sqlite()
        .spawn()
}

/// What `WHATSAPP_VERIFY_TOKEN` is set to by [`app_with_reply`].
pub const VERIFY_TOKEN: &str = "verify-me-7d1e";

/// Pays for `order_id` and waits until Meta accepted its confirmation and link.
pub fn pay_and_send(app: &TestApp, order_id: &str) -> Processed {
    let processed = pay(app, &payment_event(order_id));
    app.wait_for_outbox_status(order_id, "confirmation", "sent", PATIENCE);
    app.wait_for_outbox_status(order_id, "link", "sent", PATIENCE);
    processed
}

/// Requests the fake Graph API received addressed to `wa_id`.
pub fn requests_to(graph: &FakeGraph, wa_id: &str) -> Vec<RecordedRequest> {
    graph
        .requests()
        .into_iter()
        .filter(|r| r.body.get("to").and_then(Value::as_str) == Some(wa_id))
        .collect()
}

/// Waits until `n` requests addressed to `wa_id` were accepted by the fake.
pub fn wait_for_replies(graph: &FakeGraph, wa_id: &str, n: usize) -> Vec<RecordedRequest> {
    graph.wait_for(
        &format!("{n} accepted message(s) to {wa_id}"),
        PATIENCE,
        |all| {
            all.iter()
                .filter(|r| {
                    r.body.get("to").and_then(Value::as_str) == Some(wa_id) && r.was_accepted()
                })
                .count()
                >= n
        },
    );
    requests_to(graph, wa_id)
}

/// The senders linked to `order_id` (`contact_links`), each by its number
/// or, when it has none, its BSUID, sorted.
pub fn linked_senders(app: &TestApp, order_id: &str) -> Vec<String> {
    let db = app.db();
    let mut stmt = db
        .prepare(
            "SELECT COALESCE(c.wa_id, c.user_id) AS who FROM contact_links l \
             JOIN contacts c ON c.id = l.contact_id WHERE l.order_id = $1 ORDER BY who",
        )
        .expect("contact_links query");

    stmt.query_map([order_id], |r| r.get(0))
        .expect("contact_links rows")
        .collect::<Result<Vec<String>, _>>()
        .expect("contact_links row")
}

/// One stored inbound message; `wa_id` is the sender's number, or its
/// BSUID when the message came without one.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRow {
    pub wa_id: String,
    pub profile_name: Option<String>,
    pub message_type: String,
    pub body: Option<String>,
    pub order_id: Option<String>,
}

/// The stored inbound message with this `wamid`, if any.
pub fn inbound_row(app: &TestApp, wamid: &str) -> Option<InboundRow> {
    use orderlink::db::sql::OptionalExtension;
    app.db()
        .query_row(
            "SELECT COALESCE(wa_id, user_id), profile_name, message_type, body, order_id \
             FROM inbound_messages WHERE wamid = $1",
            [wamid],
            |r| {
                Ok(InboundRow {
                    wa_id: r.get(0)?,
                    profile_name: r.get(1)?,
                    message_type: r.get(2)?,
                    body: r.get(3)?,
                    order_id: r.get(4)?,
                })
            },
        )
        .optional()
        .expect("inbound_messages query")
}

/// `whatsapp_tokens.consumed_at` of `token`.
pub fn consumed_at(app: &TestApp, token: &str) -> Option<i64> {
    app.db()
        .query_row(
            "SELECT consumed_at FROM whatsapp_tokens WHERE token = $1",
            [token],
            |r| r.get(0),
        )
        .expect("token row")
}

/// `(delivery_status, delivery_error)` of our outbound message with this Graph id.
pub fn delivery_of(app: &TestApp, graph_message_id: &str) -> (Option<String>, Option<String>) {
    app.db()
        .query_row(
            "SELECT delivery_status, delivery_error FROM outbox WHERE graph_message_id = $1",
            [graph_message_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("no outbox row with graph id {graph_message_id}: {e}"))
}

/// `(recipient, status)` of each elder reply queued for `order_id`, by recipient.
pub fn elder_replies(app: &TestApp, order_id: &str) -> Vec<(String, String)> {
    let db = app.db();
    let mut stmt = db
        .prepare(
            "SELECT recipient, status FROM outbox WHERE order_id = $1 AND kind = 'elder_reply' \
             ORDER BY recipient",
        )
        .expect("outbox query");

    stmt.query_map([order_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("outbox rows")
        .collect::<Result<Vec<(String, String)>, _>>()
        .expect("outbox row")
}

// ------------------------------------------------------------ usernames
//
// Payload shapes from Meta's "Business-scoped user IDs" page
// (developers.facebook.com/documentation/business-messaging/whatsapp/business-scoped-user-ids/):
// a user with a username has no `from` in `messages[]` and no `wa_id` in
// `contacts[]`; `from_user_id` and `contacts[].user_id` carry the BSUID and
// `contacts[].profile.username` the username. Statuses of a message sent to
// a BSUID carry `recipient_user_id` and may leave out `recipient_id`
// (summarised the same way by dualhook.com/docs/contacts-bsuid-webhooks).
// The example BSUID `IN.1648738043044942` is SPEC §9's.

/// The BSUID of an elder who adopted a username and hides their number.
pub const ELDER_BSUID: &str = "IN.1648738043044942";
/// The BSUID Meta gives the same elder after a change.
pub const ELDER_NEW_BSUID: &str = "IN.7730215586402219";

/// [`prefilled_text_payload`] from a username-only user (BSUID `user_id`).
pub fn username_prefilled_text_payload(
    user_id: &str,
    name: &str,
    wamid: &str,
    processed: &Processed,
) -> Value {
    username_text_payload(
        user_id,
        name,
        wamid,
        &prefilled_text(&processed.whatsapp_link),
    )
}

/// A text from a username-only user: BSUID, no phone number anywhere.
pub fn username_text_payload(user_id: &str, name: &str, wamid: &str, body: &str) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": [{"profile": {"name": name, "username": "@asha.devi"}, "user_id": user_id}],
        "messages": [{
            "from_user_id": user_id,
            "id": wamid,
            "timestamp": now_secs().to_string(),
            "type": "text",
            "text": {"body": body}
        }]
    }))
}

/// A text from a user Meta identifies by both number and BSUID.
pub fn both_ids_text_payload(
    wa_id: &str,
    user_id: &str,
    name: &str,
    wamid: &str,
    body: &str,
) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id, "user_id": user_id}],
        "messages": [{
            "from": wa_id,
            "from_user_id": user_id,
            "id": wamid,
            "timestamp": now_secs().to_string(),
            "type": "text",
            "text": {"body": body}
        }]
    }))
}

/// A status of a message sent to a BSUID: `recipient_user_id`, no `recipient_id`.
pub fn bsuid_status(message_id: &str, status: &str, user_id: &str) -> Value {
    json!({
        "id": message_id,
        "status": status,
        "timestamp": now_secs().to_string(),
        "recipient_user_id": user_id,
        "pricing": {"billable": true, "pricing_model": "PMP", "category": "service", "type": "free_customer_service"}
    })
}

/// Meta's `user_id_update` notice: the user's BSUID changed from `previous`
/// to `current`. Shape as Meta's "Business-scoped user IDs" page describes
/// it (`user_id: {previous, current}`, `wa_id` when shareable); the full
/// syntax block of that page was not retrievable here, only excerpts, and
/// Meta's changelog of 2026-08-11 says such changes now come as `system`
/// messages (`user_changed_user_id`), so the server accepts both.
pub fn user_id_update_payload(wa_id: Option<&str>, previous: &str, current: &str) -> Value {
    let mut update = json!({
        "detail": "Business-scoped User ID (BSUID) has been updated",
        "user_id": {"previous": previous, "current": current},
        "timestamp": now_secs().to_string()
    });
    if let Some(wa_id) = wa_id {
        update["wa_id"] = json!(wa_id);
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{"field": "user_id_update", "value": {
                "messaging_product": "whatsapp",
                "metadata": metadata(),
                "user_id_update": [update]
            }}]
        }]
    })
}

/// Meta's system message `user_changed_number` (System messages webhook
/// reference: sent from the old number, `system.wa_id` is the new one, no
/// `contacts[]`).
pub fn changed_number_payload(old_wa_id: &str, new_wa_id: &str, wamid: &str) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "messages": [{
            "from": old_wa_id,
            "id": wamid,
            "timestamp": now_secs().to_string(),
            "type": "system",
            "system": {
                "body": format!("User Asha Devi changed from {old_wa_id} to {new_wa_id}"),
                "wa_id": new_wa_id,
                "type": "user_changed_number"
            }
        }]
    }))
}

/// Meta's system message `user_changed_user_id` (changelog of 2026-08-11:
/// `system.previous_user_id` beside the new `system.user_id`; no number).
pub fn changed_user_id_payload(previous: &str, current: &str, wamid: &str) -> Value {
    envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "messages": [{
            "from_user_id": current,
            "id": wamid,
            "timestamp": now_secs().to_string(),
            "type": "system",
            "system": {
                "body": "User Asha Devi changed their business-scoped user ID",
                "user_id": current,
                "previous_user_id": previous,
                "type": "user_changed_user_id"
            }
        }]
    }))
}

/// Requests the fake Graph API received addressed to the BSUID `user_id`.
pub fn requests_to_user(graph: &FakeGraph, user_id: &str) -> Vec<RecordedRequest> {
    graph
        .requests()
        .into_iter()
        .filter(|r| r.body.get("recipient").and_then(Value::as_str) == Some(user_id))
        .collect()
}

/// `(pricing_billable, pricing_category)` of our message with this Graph id.
pub fn pricing_of(app: &TestApp, graph_message_id: &str) -> (Option<bool>, Option<String>) {
    app.db()
        .query_row(
            "SELECT pricing_billable, pricing_category FROM outbox WHERE graph_message_id = $1",
            [graph_message_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("no outbox row with graph id {graph_message_id}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_signature_is_hex_hmac_sha256_of_the_raw_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            meta_signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn prefilled_text_decodes_the_wa_me_link() {
        let link = super::super::wa_me_link("A/B:1", "t");
        assert_eq!(
            prefilled_text(&link),
            "Hi, I\u{2019}m contacting on behalf of order A/B:1. Token: t"
        );
    }
}
