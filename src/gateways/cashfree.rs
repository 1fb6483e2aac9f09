//! Cashfree Payments (§11): `x-webhook-signature` is the base64 HMAC-SHA256
//! of `{x-webhook-timestamp}{raw body}` (no separator) keyed with the client
//! secret as text. Amounts are JSON decimals in major units (`170.00`), read
//! from the raw number text: a float cannot hold `0.10` exactly. Phones are
//! often 10 national digits, read with `PHONE_DEFAULT_REGION` (IN if unset).

use super::{gateway_text, parse_json, phone, Mapped, Source};
use crate::config::Config;
use crate::domain::{EventKind, Money, Note, OrderId, Payment, PaymentEvent, Region};
use crate::error::AppError;
use crate::signature::TextSecrets;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rocket::http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub struct Cashfree;

pub const SIGNATURE_HEADER: &str = "x-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
const PAYING: &str = "PAYMENT_SUCCESS_WEBHOOK";

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(default, borrow)]
    order: Option<Order<'a>>,
    #[serde(default, borrow)]
    payment: Option<PaymentData<'a>>,
    #[serde(default)]
    customer_details: Option<Customer>,
}

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default, borrow)]
    order_amount: Option<&'a RawValue>,
    #[serde(default)]
    order_currency: Option<String>,
    #[serde(default)]
    order_tags: Value,
}

#[derive(Deserialize)]
struct PaymentData<'a> {
    /// A number in older API versions, a string in newer ones.
    #[serde(default)]
    cf_payment_id: Value,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default, borrow)]
    payment_amount: Option<&'a RawValue>,
    #[serde(default)]
    payment_currency: Option<String>,
}

#[derive(Deserialize)]
struct Customer {
    #[serde(default)]
    customer_phone: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
}

fn payment_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The exact text of a JSON number (or of a string holding one); `None`
/// for null or absent.
fn decimal_text(raw: Option<&RawValue>) -> Option<&str> {
    let text = raw?.get().trim();
    match text {
        "null" => None,
        t if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') => Some(&t[1..t.len() - 1]),
        t => Some(t),
    }
}

impl Source for Cashfree {
    type Secret = TextSecrets;
    const NAME: &'static str = "cashfree";
    const NAMESPACED: bool = true;

    fn secret(config: &Config) -> Option<&TextSecrets> {
        config.gateway_secrets.cashfree.as_ref()
    }

    fn verify(
        secret: &TextSecrets,
        headers: &HeaderMap<'_>,
        body: &[u8],
        _now_secs: i64,
    ) -> Result<(), &'static str> {
        let (Some(sig), Some(ts)) = (
            headers.get_one(SIGNATURE_HEADER),
            headers.get_one(TIMESTAMP_HEADER),
        ) else {
            return Err("x-webhook-signature and x-webhook-timestamp headers are required");
        };
        let tag = BASE64
            .decode(sig.trim())
            .map_err(|_| "x-webhook-signature is not base64")?;
        if secret.verify(&[ts.as_bytes(), body], &tag) {
            Ok(())
        } else {
            Err("x-webhook-signature does not match")
        }
    }

    fn map(_headers: &HeaderMap<'_>, body: &[u8], config: &Config) -> Result<Mapped, AppError> {
        let raw: Body = parse_json(body)?;
        let kind = gateway_text("type", &raw.kind)?;
        let data = raw.data;
        let payment = data.as_ref().and_then(|d| d.payment.as_ref());
        let cf_id = payment.and_then(|p| payment_id(&p.cf_payment_id));
        let success =
            kind == PAYING && payment.and_then(|p| p.payment_status.as_deref()) == Some("SUCCESS");
        if !success {
            // A failed or dropped attempt must never take the key a later
            // success of the same payment id will need.
            let key = match &cf_id {
                Some(id) => format!("{kind}:{id}"),
                None => format!("{kind}:{}", super::body_digest(body)),
            };
            let status = payment
                .and_then(|p| p.payment_status.clone())
                .unwrap_or_else(|| "no payment_status".into());
            return Ok(Mapped {
                event: PaymentEvent {
                    event_id: key.clone(),
                    kind: EventKind::Other(format!("{kind} ({status})")),
                },
                key,
                order_id_source: None,
                awaits_order: false,
            });
        }
        let (Some(data), Some(payment), Some(cf_id)) = (&data, payment, cf_id) else {
            return Err(AppError::InvalidPayload(
                "PAYMENT_SUCCESS_WEBHOOK without data.payment.cf_payment_id".into(),
            ));
        };
        let key = gateway_text("data.payment.cf_payment_id", &cf_id)?;
        let order = data.order.as_ref();
        let order_id = order
            .and_then(|o| o.order_id.as_deref())
            .ok_or_else(|| AppError::InvalidPayload("data.order.order_id is missing".into()))
            .and_then(|id| {
                OrderId::parse(id).map_err(|e| AppError::InvalidPayload(format!("data.order: {e}")))
            })?;
        let currency = payment
            .payment_currency
            .as_deref()
            .or_else(|| order.and_then(|o| o.order_currency.as_deref()))
            .unwrap_or("INR")
            .to_ascii_uppercase();
        let (field, text) = match decimal_text(payment.payment_amount) {
            Some(t) => ("data.payment.payment_amount", t),
            None => (
                "data.order.order_amount",
                decimal_text(order.and_then(|o| o.order_amount)).ok_or_else(|| {
                    AppError::InvalidPayload("no payment_amount or order_amount".into())
                })?,
            ),
        };
        let amount = Money::from_major_text(text, &currency)
            .map_err(|e| AppError::InvalidPayload(format!("{field}: {e}")))?;
        let customer = data.customer_details.as_ref();
        let region = config.default_region.or_else(|| Region::parse("IN").ok());
        let note = order
            .and_then(|o| o.order_tags.get("note"))
            .and_then(Value::as_str)
            .and_then(Note::clean);
        Ok(Mapped {
            event: PaymentEvent {
                event_id: key.clone(),
                kind: EventKind::PaymentSucceeded(Payment {
                    order_id,
                    payment_id: key.clone(),
                    user_id: customer
                        .and_then(|c| c.customer_id.clone())
                        .filter(|c| gateway_text("customer_id", c).is_ok()),
                    amount,
                    phone: phone(customer.and_then(|c| c.customer_phone.as_deref()), region),
                    note,
                }),
            },
            key,
            order_id_source: Some("data.order.order_id"),
            awaits_order: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC appendix vector.
    const SECRET: &str = "test_client_secret";
    const TS: &str = "1746427759733";
    const BODY: &str = r#"{"data":{"order":{"order_id":"order_OFR_2","order_amount":2.00},"customer_details":{"customer_phone":"9908734801"}},"type":"PAYMENT_SUCCESS_WEBHOOK"}"#;
    const SIG: &str = "h5uLps6DC3qtbImT4kGXQF1Dt/yRMigJm89rjunfOAQ=";

    fn check(
        secret: &str,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
    ) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        if let Some(ts) = ts {
            headers.add_raw(TIMESTAMP_HEADER, ts.to_owned());
        }
        if let Some(sig) = sig {
            headers.add_raw(SIGNATURE_HEADER, sig.to_owned());
        }
        Cashfree::verify(
            &TextSecrets::parse(secret).unwrap(),
            &headers,
            body.as_bytes(),
            0,
        )
    }

    #[test]
    fn the_spec_vector_verifies_and_signs() {
        assert_eq!(check(SECRET, Some(TS), Some(SIG), BODY), Ok(()));
        let tag = TextSecrets::parse(SECRET)
            .unwrap()
            .sign(&[TS.as_bytes(), BODY.as_bytes()]);
        assert_eq!(BASE64.encode(tag), SIG);
    }

    #[test]
    fn tampering_and_rotation() {
        assert!(check(SECRET, Some("1746427759734"), Some(SIG), BODY).is_err());
        assert!(check(SECRET, Some(TS), Some(SIG), &BODY.replace("2.00", "200")).is_err());
        assert!(check(SECRET, None, Some(SIG), BODY).is_err());
        assert!(check(SECRET, Some(TS), None, BODY).is_err());
        assert!(check(SECRET, Some(TS), Some(&SIG[..40]), BODY).is_err());
        assert!(check(SECRET, Some(TS), Some(""), BODY).is_err());
        // With a separator it is another scheme.
        let dotted = BASE64.encode(TextSecrets::parse(SECRET).unwrap().sign(&[
            TS.as_bytes(),
            b".",
            BODY.as_bytes(),
        ]));
        assert!(check(SECRET, Some(TS), Some(&dotted), BODY).is_err());
        assert_eq!(
            check(&format!("rotated {SECRET}"), Some(TS), Some(SIG), BODY),
            Ok(())
        );
    }

    fn body(amount: &str, currency: &str, phone: &str) -> String {
        format!(
            r#"{{"data":{{"order":{{"order_id":"ORD-7","order_amount":{amount},"order_currency":"{currency}","order_tags":{{"note":"Ships Monday"}}}},"payment":{{"cf_payment_id":5114910595236,"payment_status":"SUCCESS","payment_amount":{amount},"payment_currency":"{currency}"}},"customer_details":{{"customer_phone":"{phone}","customer_id":"cust_1"}}}},"type":"PAYMENT_SUCCESS_WEBHOOK"}}"#
        )
    }

    fn pay(body: &str) -> Result<(String, Payment), AppError> {
        let config = Config::from_source(&[]).unwrap();
        let m = Cashfree::map(&HeaderMap::new(), body.as_bytes(), &config)?;
        match m.event.kind {
            EventKind::PaymentSucceeded(p) => Ok((m.key, p)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn amounts_are_read_from_their_text() {
        for (text, shown) in [
            ("170.00", "INR 170.00"),
            ("1.5", "INR 1.50"),
            ("0.10", "INR 0.10"),
            ("\"2.00\"", "INR 2.00"),
        ] {
            let (key, p) = pay(&body(text, "INR", "9908734801")).unwrap();
            assert_eq!(p.amount.display(), shown);
            assert_eq!(key, "5114910595236");
            assert_eq!(p.note.as_ref().unwrap().as_str(), "Ships Monday");
        }
        for bad in ["1.005", "-1.00", "1e2", "true"] {
            let e = pay(&body(bad, "INR", "9908734801")).unwrap_err();
            assert_eq!(e.status().code, 422, "{bad}: {e:?}");
        }
    }

    #[test]
    fn ten_digit_phones_are_read_as_indian_when_no_region_is_set() {
        let (_, p) = pay(&body("1.00", "INR", "9908734801")).unwrap();
        assert_eq!(p.phone.unwrap().digits(), "919908734801");
        let (_, p) = pay(&body("1.00", "INR", "+14155552671")).unwrap();
        assert_eq!(p.phone.unwrap().digits(), "14155552671");
    }

    #[test]
    fn only_a_successful_payment_pays() {
        let config = Config::from_source(&[]).unwrap();
        let failed = body("1.00", "INR", "1")
            .replace("SUCCESS", "FAILED")
            .replace("PAYMENT_SUCCESS_WEBHOOK", "PAYMENT_FAILED_WEBHOOK");
        let m = Cashfree::map(&HeaderMap::new(), failed.as_bytes(), &config).unwrap();
        assert!(matches!(m.event.kind, EventKind::Other(_)));
        assert_eq!(m.key, "PAYMENT_FAILED_WEBHOOK:5114910595236");
        // The appendix body carries no payment: not a success to act on.
        let m = Cashfree::map(&HeaderMap::new(), BODY.as_bytes(), &config).unwrap();
        assert!(matches!(m.event.kind, EventKind::Other(_)));
    }
}
