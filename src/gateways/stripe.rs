//! Stripe Checkout (§11): `Stripe-Signature: t=…,v1=…[,v1=…]`, hex
//! HMAC-SHA256 of `{t}.{raw body}` keyed with the whole `whsec_…` string as
//! text; any `v1` may match (Stripe sends one per active secret while a
//! secret is being rolled), other schemes (`v0`) are ignored, `t` must be
//! within 5 minutes. A session completed with `payment_status` `unpaid`
//! (bank transfers, vouchers) is not paid yet: the later
//! `checkout.session.async_payment_succeeded` pays. One completed with
//! `no_payment_required` (a 100 % discount) is a paid order of amount 0.

use super::{first_order_id, gateway_text, parse_json, phone, Mapped, Source};
use crate::config::Config;
use crate::domain::{EventKind, Money, Note, Payment, PaymentEvent};
use crate::error::AppError;
use crate::signature::{TextSecrets, TOLERANCE_SECS};
use rocket::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

pub struct Stripe;

pub const SIGNATURE_HEADER: &str = "stripe-signature";
const COMPLETED: &str = "checkout.session.completed";
const ASYNC_SUCCEEDED: &str = "checkout.session.async_payment_succeeded";
/// A session whose discounts cover the whole amount (SPEC §11: confirmed).
const NO_PAYMENT_REQUIRED: &str = "no_payment_required";

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    object: Session,
}

#[derive(Deserialize)]
struct Session {
    id: String,
    #[serde(default)]
    amount_total: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Value,
    /// An id, or the expanded object, or null.
    #[serde(default)]
    payment_intent: Value,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    customer: Value,
    #[serde(default)]
    customer_details: Option<CustomerDetails>,
}

#[derive(Deserialize)]
struct CustomerDetails {
    #[serde(default)]
    phone: Option<String>,
}

/// Currencies Stripe counts in whole units although ISO 4217 gives them
/// minor digits, or that ISO gives none and Stripe counts anyway
/// (docs.stripe.com/currencies: "zero-decimal" and "special cases").
const ZERO_DECIMAL: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// ISK became zero-decimal, but Stripe's API keeps it two-decimal for
/// backwards compatibility: 500 króna is `50000`, always a multiple of 100.
const TWO_DECIMAL_SPECIAL: [&str; 1] = ["ISK"];

/// How many decimals Stripe's integer amounts carry for `code` (upper case).
pub fn stripe_decimals(code: &str) -> Option<u32> {
    if ZERO_DECIMAL.contains(&code) {
        Some(0)
    } else if TWO_DECIMAL_SPECIAL.contains(&code) {
        Some(2)
    } else {
        Money::minor_digits_of(code)
    }
}

/// Stripe's `amount` in `currency` (lower case, as Stripe sends it) as
/// orderlink's `Money` (ISO minor units).
pub fn money(amount: i64, currency: &str) -> Result<Money, String> {
    let code = currency.to_ascii_uppercase();
    let decimals = stripe_decimals(&code).ok_or("currency must be an ISO 4217 code such as inr")?;
    Money::rescaled(amount, decimals, &code)
}

fn meta<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get(key)?.as_str()
}

/// `pi_…` whether `payment_intent` is the id or the expanded object.
fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("id")?.as_str())
}

impl Source for Stripe {
    type Secret = TextSecrets;
    const NAME: &'static str = "stripe";
    const NAMESPACED: bool = true;

    fn secret(config: &Config) -> Option<&TextSecrets> {
        config.gateway_secrets.stripe.as_ref()
    }

    fn verify(
        secret: &TextSecrets,
        headers: &HeaderMap<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str> {
        let header = headers
            .get_one(SIGNATURE_HEADER)
            .ok_or("Stripe-Signature header is required")?;
        let mut t = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            match item.trim().split_once('=') {
                Some(("t", value)) if t.is_none() => t = Some(value),
                Some(("v1", value)) => v1.push(value),
                _ => {}
            }
        }
        let t = t.ok_or("Stripe-Signature has no timestamp (t=)")?;
        let ts: i64 = t
            .parse()
            .map_err(|_| "Stripe-Signature t= is not a Unix time")?;
        if (now_secs - ts).abs() > TOLERANCE_SECS {
            return Err("Stripe-Signature timestamp is more than 5 minutes from now");
        }
        let parts: [&[u8]; 3] = [t.as_bytes(), b".", body];
        let matched = v1
            .iter()
            .filter_map(|hex_tag| hex::decode(hex_tag).ok())
            .any(|tag| secret.verify(&parts, &tag));
        if matched {
            Ok(())
        } else {
            Err("Stripe-Signature has no v1 signature that matches")
        }
    }

    fn map(_headers: &HeaderMap<'_>, body: &[u8], config: &Config) -> Result<Mapped, AppError> {
        let raw: Event = parse_json(body)?;
        let key = gateway_text("id", &raw.id)?;
        let kind = gateway_text("type", &raw.kind)?;
        let ignored = |kind: String| Mapped {
            event: PaymentEvent {
                event_id: key.clone(),
                kind: EventKind::Other(kind),
            },
            key: key.clone(),
            order_id_source: None,
            awaits_order: false,
        };
        if kind != COMPLETED && kind != ASYNC_SUCCEEDED {
            return Ok(ignored(kind));
        }
        let s = raw
            .data
            .ok_or_else(|| AppError::InvalidPayload(format!("{kind} without data.object")))?
            .object;
        let free = s.payment_status.as_deref() == Some(NO_PAYMENT_REQUIRED);
        if kind == COMPLETED && s.payment_status.as_deref() != Some("paid") && !free {
            // `unpaid`: the async payment is still pending.
            return Ok(ignored(format!(
                "{kind} ({})",
                s.payment_status.as_deref().unwrap_or("no payment_status")
            )));
        }
        let (order_id, field) = first_order_id([
            ("client_reference_id", s.client_reference_id.as_deref()),
            ("metadata.order_id", meta(&s.metadata, "order_id")),
            ("payment_intent", id_of(&s.payment_intent)),
        ])
        .ok_or_else(|| {
            AppError::InvalidPayload(
                "no order id: create the Checkout Session with client_reference_id set to your order id".into(),
            )
        })?;
        // Nothing to pay: Stripe sends `amount_total` 0 (or, defensively, none).
        let amount_total = s.amount_total.or(free.then_some(0));
        let (Some(amount), Some(currency)) = (amount_total, s.currency.as_deref()) else {
            return Err(AppError::InvalidPayload(
                "the session has no amount_total or currency".into(),
            ));
        };
        let amount = money(amount, currency).map_err(AppError::InvalidPayload)?;
        let payment_id = id_of(&s.payment_intent).unwrap_or(&s.id);
        Ok(Mapped {
            event: PaymentEvent {
                event_id: key.clone(),
                kind: EventKind::PaymentSucceeded(Payment {
                    order_id,
                    payment_id: gateway_text("payment_intent", payment_id)?,
                    user_id: id_of(&s.customer)
                        .filter(|c| gateway_text("customer", c).is_ok())
                        .map(str::to_owned),
                    amount,
                    phone: phone(
                        s.customer_details.as_ref().and_then(|c| c.phone.as_deref()),
                        config.default_region,
                    ),
                    note: meta(&s.metadata, "note").and_then(Note::clean),
                }),
            },
            key,
            order_id_source: Some(field),
            awaits_order: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC appendix vector.
    const SECRET: &str = "whsec_test_secret";
    const BODY: &str = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    const HEADER: &str =
        "t=1700000000,v1=4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150";
    const T: i64 = 1_700_000_000;

    fn check(secret: &str, header: &str, body: &str, now: i64) -> Result<(), &'static str> {
        let mut headers = HeaderMap::new();
        headers.add_raw(SIGNATURE_HEADER, header.to_owned());
        Stripe::verify(
            &TextSecrets::parse(secret).unwrap(),
            &headers,
            body.as_bytes(),
            now,
        )
    }

    #[test]
    fn the_spec_vector_verifies_and_signs() {
        assert_eq!(check(SECRET, HEADER, BODY, T), Ok(()));
        let tag = TextSecrets::parse(SECRET)
            .unwrap()
            .sign(&[b"1700000000", b".", BODY.as_bytes()]);
        assert_eq!(format!("t={T},v1={}", hex::encode(tag)), HEADER);
    }

    #[test]
    fn any_v1_may_match_and_v0_is_ignored() {
        let good = &HEADER["t=1700000000,v1=".len()..];
        let bad = "5".repeat(64);
        for header in [
            format!("t={T},v1={bad},v1={good}"),
            format!("t={T},v0={bad},v1={good}"),
            format!("v1={good},t={T}"),
            format!("t={T}, v1={good}"),
        ] {
            assert_eq!(check(SECRET, &header, BODY, T), Ok(()), "{header}");
        }
        for header in [
            format!("t={T},v0={good}"),
            format!("t={T},v1={bad}"),
            format!("t={T},v1={}", &good[..63]),
            format!("t={T},v1="),
            format!("v1={good}"),
            format!("t=soon,v1={good}"),
            format!("t={},v1={good}", T + 1),
            String::new(),
        ] {
            assert!(check(SECRET, &header, BODY, T).is_err(), "{header} passed");
        }
        assert!(check(SECRET, HEADER, &BODY.replace("evt_", "evt"), T).is_err());
        assert!(check("whsec_other", HEADER, BODY, T).is_err());
        assert_eq!(
            check(&format!("whsec_new {SECRET}"), HEADER, BODY, T),
            Ok(())
        );
    }

    #[test]
    fn five_minutes_either_way() {
        assert_eq!(check(SECRET, HEADER, BODY, T + 300), Ok(()));
        assert_eq!(check(SECRET, HEADER, BODY, T - 300), Ok(()));
        assert!(check(SECRET, HEADER, BODY, T + 301).is_err());
        assert!(check(SECRET, HEADER, BODY, T - 301).is_err());
    }

    #[test]
    fn zero_decimal_and_special_currencies_follow_stripe() {
        let show = |a, c| money(a, c).map(|m| m.display());
        assert_eq!(show(49900, "inr"), Ok("INR 499.00".into()));
        assert_eq!(show(500, "jpy"), Ok("JPY 500".into()));
        assert_eq!(show(1500, "krw"), Ok("KRW 1500".into()));
        // Zero-decimal in Stripe, two ISO digits.
        assert_eq!(show(1200, "mga"), Ok("MGA 1200.00".into()));
        assert_eq!(show(50000, "isk"), Ok("ISK 500".into()));
        assert!(show(50050, "isk").is_err());
        assert_eq!(show(5000, "ugx"), Ok("UGX 5000".into()));
        assert_eq!(show(1250, "kwd"), Ok("KWD 1.250".into()));
        assert_eq!(show(1000, "huf"), Ok("HUF 10.00".into()));
        assert!(show(100, "xyz").is_err());
    }
}
