//! The black-box harness: the real binary, a fake Graph API, signed webhooks,
//! and small helpers to build payloads and await conditions with a deadline.
#![allow(dead_code)]

pub mod app;
pub mod child;
pub mod fake_graph;
pub mod meta;
pub mod pg_cluster;
#[path = "../../common/ports.rs"]
pub mod ports;
pub mod signing;
pub mod store;

use std::time::Duration;

use serde_json::{json, Value};

pub use app::{fresh_webhook_id, wait_until, Resp, TestApp, TestAppBuilder, BUSINESS_NUMBER};
pub use fake_graph::{FakeGraph, Outcome, RecordedRequest, Reply};

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
pub const GRACE: Duration = Duration::from_millis(500);

/// The SPEC §4 example event, for `order_id`.
pub fn payment_event(order_id: &str) -> Value {
    json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "type": "payment_succeeded",
        "created_at": "2026-11-26T10:00:00Z",
        "data": {
            "order_id": order_id,
            "payment_id": "pay_9XyZ31",
            "user_id": "user_77",
            "amount": 49900,
            "currency": "INR",
            "customer_phone": "+91 98765 43210",
            "note": "Arrives by Friday"
        }
    })
}

/// The example event with `data` fields replaced (a `null` value removes the field).
pub fn payment_event_with(order_id: &str, data: Value) -> Value {
    let mut event = payment_event(order_id);
    let target = event["data"].as_object_mut().expect("data object");
    for (k, v) in data.as_object().expect("overrides object") {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
    event
}

// The tests check the product's encoding of the wa.me link, so they must not
// encode with a copy of the product's encoder: what they expect is written out
// here, computed with JavaScript's `encodeURIComponent` (node), as SPEC §5 says.

/// `encodeURIComponent("Hi, I\u{2019}m contacting on behalf of order ")`.
const PREFILLED_BEFORE_ORDER: &str =
    "Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20";
/// `encodeURIComponent(". Token: ")`.
const PREFILLED_BEFORE_TOKEN: &str = ".%20Token%3A%20";

/// `encodeURIComponent` of an order id or a token, whose characters SPEC §4
/// limits to `A-Z a-z 0-9 - _ . : /`: of those, JavaScript escapes only `:`
/// (`%3A`) and `/` (`%2F`). Any other character is a mistake in the test.
fn encoded_id(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            ':' => "%3A".to_string(),
            '/' => "%2F".to_string(),
            c if c.is_ascii_alphanumeric() || "-_.".contains(c) => c.to_string(),
            c => panic!("{c:?} in {id:?}: outside SPEC §4's alphabet, add its encoding here"),
        })
        .collect()
}

/// The wa.me link of SPEC §5 for this order and token.
pub fn wa_me_link(order_id: &str, token: &str) -> String {
    format!(
        "https://wa.me/{BUSINESS_NUMBER}?text={PREFILLED_BEFORE_ORDER}{}{PREFILLED_BEFORE_TOKEN}{}",
        encoded_id(order_id),
        encoded_id(token)
    )
}

/// The token at the end of an `invite_url`, checked to be a lowercase hyphenated v4 UUID.
pub fn token_of(invite_url: &str) -> String {
    let token = invite_url
        .rsplit('/')
        .next()
        .expect("invite_url has a last segment")
        .to_string();
    assert_is_lowercase_v4(&token);
    token
}

pub fn assert_is_lowercase_v4(token: &str) {
    let parsed = uuid::Uuid::parse_str(token)
        .unwrap_or_else(|e| panic!("token {token:?} is not a UUID: {e}"));
    assert_eq!(parsed.get_version_num(), 4, "token {token} is not v4");
    assert_eq!(
        parsed.hyphenated().to_string(),
        token,
        "token is not lowercase hyphenated"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    // Whole links from node's `encodeURIComponent`, so the pieces above are
    // checked against JavaScript as one string.
    #[test]
    fn wa_me_link_matches_javascript_for_the_spec_message() {
        assert_eq!(
            wa_me_link("ORD-1042", "x"),
            "https://wa.me/919999900000?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20ORD-1042.%20Token%3A%20x"
        );
        assert_eq!(
            wa_me_link("shop/2026:ORD-7", "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"),
            "https://wa.me/919999900000?text=Hi%2C%20I%E2%80%99m%20contacting%20on%20behalf%20of%20order%20shop%2F2026%3AORD-7.%20Token%3A%203f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b"
        );
    }

    #[test]
    #[should_panic(expected = "outside SPEC")]
    fn wa_me_link_refuses_a_character_it_has_no_encoding_for() {
        wa_me_link("ORD 1", "x");
    }
}

/// A `processed` answer, checked.
#[derive(Debug, Clone)]
pub struct Processed {
    pub order_id: String,
    pub token: String,
    pub invite_url: String,
    pub whatsapp_link: String,
}

/// Posts `event` signed under a fresh id and asserts a full `processed` answer.
pub fn pay(app: &TestApp, event: &Value) -> Processed {
    let resp = app.post_webhook(&event.to_string());
    assert_eq!(resp.status, 200, "webhook answer: {}", resp.body);
    let json = resp.json();
    assert_eq!(json["status"], "processed", "webhook answer: {json}");
    let order_id = event["data"]["order_id"]
        .as_str()
        .expect("order_id")
        .to_string();
    assert_eq!(
        json["order_id"],
        order_id.as_str(),
        "webhook answer: {json}"
    );
    let invite_url = json["invite_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no invite_url in {json}"))
        .to_string();
    let whatsapp_link = json["whatsapp_link"]
        .as_str()
        .unwrap_or_else(|| panic!("no whatsapp_link in {json}"))
        .to_string();
    let token = token_of(&invite_url);
    Processed {
        order_id,
        token,
        invite_url,
        whatsapp_link,
    }
}

/// Asserts that no table the webhook writes holds a row.
pub fn assert_nothing_written(app: &TestApp) {
    for table in ["orders", "whatsapp_tokens", "webhook_events", "outbox"] {
        assert_eq!(
            app.count(&format!("SELECT COUNT(*) FROM {table}")),
            0,
            "rows in {table}"
        );
    }
}
