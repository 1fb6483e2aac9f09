//! Razorpay (§11): `X-Razorpay-Signature` is the hex HMAC-SHA256 of the raw
//! body keyed with the webhook secret as text. There is no timestamp, so the
//! idempotency key is the only replay defence. `payment.captured` and
//! `order.paid` both pay; for one payment both arrive, in any order, and the
//! second finds the order already confirmed. `payment.captured` carries no
//! order entity: when its only order id is Razorpay's own, it is held for
//! the `order.paid` that names the merchant's (`crate::held_payments`).

use super::{first_order_id, gateway_text, parse_json, phone, Mapped, Source};
use crate::config::Config;
use crate::domain::{EventKind, Money, Note, Payment, PaymentEvent};
use crate::error::AppError;
use crate::signature::TextSecrets;
use rocket::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

pub struct Razorpay;

pub const SIGNATURE_HEADER: &str = "x-razorpay-signature";
pub const EVENT_ID_HEADER: &str = "x-razorpay-event-id";
const CAPTURED: &str = "payment.captured";
const PAYING: [&str; 2] = [CAPTURED, "order.paid"];
/// The candidate that is Razorpay's own id, not the merchant's.
pub const GATEWAY_ORDER_ID: &str = "payment.order_id";

#[derive(Deserialize)]
struct Body {
    event: String,
    #[serde(default)]
    payload: Payload,
}

#[derive(Deserialize, Default)]
struct Payload {
    #[serde(default)]
    payment: Option<Wrapped<PaymentEntity>>,
    #[serde(default)]
    order: Option<Wrapped<OrderEntity>>,
}

#[derive(Deserialize)]
struct Wrapped<T> {
    entity: T,
}

#[derive(Deserialize)]
struct PaymentEntity {
    id: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    contact: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
    /// `[]` when empty, an object otherwise.
    #[serde(default)]
    notes: Value,
}

#[derive(Deserialize)]
struct OrderEntity {
    #[serde(default)]
    receipt: Option<String>,
    #[serde(default)]
    notes: Value,
}

/// A text value of Razorpay's `notes` (`[]`, an object, or absent).
fn note<'a>(notes: &'a Value, key: &str) -> Option<&'a str> {
    notes.as_object()?.get(key)?.as_str()
}

impl Source for Razorpay {
    type Secret = TextSecrets;
    const NAME: &'static str = "razorpay";
    const NAMESPACED: bool = true;

    fn secret(config: &Config) -> Option<&TextSecrets> {
        config.gateway_secrets.razorpay.as_ref()
    }

    fn verify(
        secret: &TextSecrets,
        headers: &HeaderMap<'_>,
        body: &[u8],
        _now_secs: i64,
    ) -> Result<(), &'static str> {
        let sig = headers
            .get_one(SIGNATURE_HEADER)
            .ok_or("X-Razorpay-Signature header is required")?;
        let tag = hex::decode(sig.trim()).map_err(|_| "X-Razorpay-Signature is not hex")?;
        if secret.verify(&[body], &tag) {
            Ok(())
        } else {
            Err("X-Razorpay-Signature does not match")
        }
    }

    fn map(headers: &HeaderMap<'_>, body: &[u8], config: &Config) -> Result<Mapped, AppError> {
        let raw: Body = parse_json(body)?;
        let event_type = gateway_text("event", &raw.event)?;
        let payment = raw.payload.payment.map(|p| p.entity);
        let key = match (headers.get_one(EVENT_ID_HEADER), &payment) {
            (Some(id), _) => gateway_text("x-razorpay-event-id", id)?,
            (None, Some(p)) => format!("{}:{event_type}", gateway_text("payment.id", &p.id)?),
            (None, None) => format!("{event_type}:{}", super::body_digest(body)),
        };
        if !PAYING.contains(&event_type.as_str()) {
            return Ok(Mapped {
                event: PaymentEvent {
                    event_id: key.clone(),
                    kind: EventKind::Other(event_type),
                },
                key,
                order_id_source: None,
                awaits_order: false,
            });
        }
        let p = payment.ok_or_else(|| {
            AppError::InvalidPayload(format!("{event_type} without payload.payment.entity"))
        })?;
        let order = raw.payload.order.map(|o| o.entity);
        let empty = Value::Null;
        let order_notes = order.as_ref().map_or(&empty, |o| &o.notes);
        let (order_id, field) = first_order_id([
            ("payment.notes.order_id", note(&p.notes, "order_id")),
            ("order.notes.order_id", note(order_notes, "order_id")),
            (
                "order.receipt",
                order.as_ref().and_then(|o| o.receipt.as_deref()),
            ),
            (GATEWAY_ORDER_ID, p.order_id.as_deref()),
        ])
        .ok_or_else(|| {
            AppError::InvalidPayload(
                "no order id: set notes.order_id (or the order's receipt) to your own order id"
                    .into(),
            )
        })?;
        let amount = Money::new(p.amount, &p.currency.to_ascii_uppercase())
            .map_err(|e| AppError::InvalidPayload(format!("payment: {e}")))?;
        let note_text = note(&p.notes, "note").or_else(|| note(order_notes, "note"));
        Ok(Mapped {
            event: PaymentEvent {
                event_id: key.clone(),
                kind: EventKind::PaymentSucceeded(Payment {
                    order_id,
                    payment_id: gateway_text("payment.id", &p.id)?,
                    user_id: p
                        .customer_id
                        .filter(|c| gateway_text("customer_id", c).is_ok()),
                    amount,
                    phone: phone(p.contact.as_deref(), config.default_region),
                    note: note_text.and_then(Note::clean),
                }),
            },
            key,
            order_id_source: Some(field),
            awaits_order: event_type == CAPTURED && field == GATEWAY_ORDER_ID,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "test_webhook_secret";
    /// SPEC appendix vector.
    const BODY: &str = r#"{"entity":"event","event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_DESlfW9H8K9uqM","amount":100,"currency":"INR","order_id":"order_DESlLckIVRkHWj","contact":"+919876543210","notes":[]}}}}"#;
    const SIG: &str = "40d29170f8e2f04ae97e1a2699a0b4b141e4af2949d1c952f2086e226970c4e6";

    fn check(secret: &str, sig: Option<&str>, body: &str) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(sig) = sig {
            headers.add_raw(SIGNATURE_HEADER, sig.to_owned());
        }
        Razorpay::verify(
            &TextSecrets::parse(secret).unwrap(),
            &headers,
            body.as_bytes(),
            0,
        )
    }

    #[test]
    fn the_spec_vector_verifies_and_signs() {
        assert_eq!(check(SECRET, Some(SIG), BODY), Ok(()));
        let tag = TextSecrets::parse(SECRET).unwrap().sign(&[BODY.as_bytes()]);
        assert_eq!(hex::encode(tag), SIG);
        assert_eq!(check(SECRET, Some(&SIG.to_uppercase()), BODY), Ok(()));
    }

    #[test]
    fn tampering_and_rotation() {
        assert!(check(SECRET, Some(SIG), &BODY.replace("100", "1000")).is_err());
        assert!(check("other", Some(SIG), BODY).is_err());
        assert!(check(SECRET, Some(&SIG[..62]), BODY).is_err());
        assert!(check(SECRET, Some(""), BODY).is_err());
        assert!(check(SECRET, None, BODY).is_err());
        assert!(check(SECRET, Some(&format!("sha256={SIG}")), BODY).is_err());
        assert_eq!(check(&format!("new {SECRET}"), Some(SIG), BODY), Ok(()));
        assert_eq!(check(&format!("{SECRET} old"), Some(SIG), BODY), Ok(()));
    }

    fn map(body: &str) -> Mapped {
        let config = Config::from_source(&[]).unwrap();
        Razorpay::map(&HeaderMap::new(), body.as_bytes(), &config).unwrap()
    }

    #[test]
    fn the_vector_maps_to_the_gateway_order_id_with_empty_notes() {
        let m = map(BODY);
        assert_eq!(m.key, "pay_DESlfW9H8K9uqM:payment.captured");
        assert_eq!(m.order_id_source, Some("payment.order_id"));
        let EventKind::PaymentSucceeded(p) = m.event.kind else {
            panic!()
        };
        assert_eq!(p.order_id.as_str(), "order_DESlLckIVRkHWj");
        assert_eq!(p.amount.display(), "INR 1.00");
        assert_eq!(p.phone.unwrap().digits(), "919876543210");
        assert!(p.note.is_none());
    }

    #[test]
    fn merchant_ids_come_first_in_the_spec_order() {
        let body = |pn: &str, on: &str, receipt: &str| {
            format!(
                r#"{{"event":"order.paid","payload":{{"payment":{{"entity":{{"id":"pay_1","amount":5,"currency":"INR","order_id":"order_1","notes":{pn}}}}},"order":{{"entity":{{"id":"order_1","receipt":{receipt},"notes":{on}}}}}}}}}"#
            )
        };
        let id = |b: String| {
            let m = map(&b);
            let EventKind::PaymentSucceeded(p) = m.event.kind else {
                panic!()
            };
            (p.order_id.as_str().to_owned(), m.order_id_source.unwrap())
        };
        assert_eq!(
            id(body(
                r#"{"order_id":"A-1","note":"x"}"#,
                r#"{"order_id":"B-1"}"#,
                r#""R-1""#
            )),
            ("A-1".into(), "payment.notes.order_id")
        );
        assert_eq!(
            id(body("[]", r#"{"order_id":"B-1"}"#, r#""R-1""#)),
            ("B-1".into(), "order.notes.order_id")
        );
        assert_eq!(
            id(body(r#"{"order_id":"not valid!"}"#, "[]", r#""R-1""#)),
            ("R-1".into(), "order.receipt")
        );
        assert_eq!(
            id(body("[]", "[]", "null")),
            ("order_1".into(), "payment.order_id")
        );
    }

    #[test]
    fn other_events_are_ignored_and_keyed() {
        let m = map(
            r#"{"event":"payment.failed","payload":{"payment":{"entity":{"id":"pay_2","amount":5,"currency":"INR"}}}}"#,
        );
        assert_eq!(m.event.kind, EventKind::Other("payment.failed".into()));
        assert_eq!(m.key, "pay_2:payment.failed");
    }
}
