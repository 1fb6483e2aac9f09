//! The payment gateway's event, parsed straight from the raw body into types
//! that can only hold valid values: a `PaymentEvent` that exists is one the
//! webhook may act on.

use super::money::Money;
use super::note::Note;
use super::order_id::OrderId;
use super::phone::{PhoneE164, Region};
use serde::Deserialize;
use serde_json::value::RawValue;

pub const PAYMENT_SUCCEEDED: &str = "payment_succeeded";

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentEvent {
    pub event_id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    PaymentSucceeded(Payment),
    /// Recorded for idempotency, otherwise ignored.
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub order_id: OrderId,
    pub payment_id: String,
    pub user_id: Option<String>,
    pub amount: Money,
    /// An unusable phone is not a bad event: the order is still paid, the
    /// customer just cannot be messaged.
    pub phone: Result<PhoneE164, String>,
    pub note: Option<Note>,
}

/// Why a body was refused. `Malformed` is not JSON at all (400); `Invalid`
/// is JSON that does not describe a usable event (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    Malformed(String),
    Invalid(String),
}

/// `data` and `customer_phone` are kept as the text they were sent as and
/// read only when needed: building a `Value` tree of `data` and then
/// converting it was most of the parse's cost.
#[derive(Deserialize)]
struct RawEvent<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawPayment<'a> {
    order_id: String,
    payment_id: String,
    #[serde(default)]
    user_id: Option<String>,
    amount: i64,
    currency: String,
    #[serde(default, borrow)]
    customer_phone: Option<&'a RawValue>,
    #[serde(default)]
    note: Option<String>,
}

/// A shape error inside `data`, worded as before: without the position,
/// which would count from the start of `data`, not of the body.
fn data_error(e: serde_json::Error) -> EventError {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let text = text.strip_suffix(&position).unwrap_or(&text);
    EventError::Invalid(format!("data: {text}"))
}

const MAX_TEXT_ID: usize = 255;

fn short_text(field: &str, value: &str) -> Result<(), EventError> {
    if value.is_empty() || value.len() > MAX_TEXT_ID || value.chars().any(char::is_control) {
        return Err(EventError::Invalid(format!(
            "{field} must be 1 to {MAX_TEXT_ID} printable characters"
        )));
    }
    Ok(())
}

/// Refuses a JSON text that repeats a key in any object, at any depth:
/// parsers disagree on which value wins (serde's `Value` keeps
/// the last, others the first), so a body that reads as two different
/// events to the signer and to us is not one we act on. Keys are compared
/// after unescaping: `"a"` and `"\u0061"` are the same key.
pub fn reject_duplicate_keys(body: &[u8]) -> Result<(), EventError> {
    serde_json::from_slice::<UniqueKeys>(body)
        .map(|_| ())
        .map_err(classify)
}

/// Any JSON value, walked only to check that no object repeats a key.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        // Keys borrowed from the body where they hold no escape, and a short
        // list scanned in place for the few keys objects usually have: this
        // walk runs on every webhook, and a String and a hashed set per
        // object were a visible share of the request thread's allocations.
        // A large object moves to a set, so a hostile body stays linear.
        let mut few: Vec<Key<'de>> = Vec::new();
        let mut many: Option<std::collections::HashSet<Key<'de>>> = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let repeated = match &mut many {
                Some(set) => !set.insert(key.clone()),
                None if few.contains(&key) => true,
                None if few.len() < 16 => {
                    few.push(key.clone());
                    false
                }
                None => {
                    let mut set: std::collections::HashSet<Key<'de>> = few.drain(..).collect();
                    set.insert(key.clone());
                    many = Some(set);
                    false
                }
            };
            if repeated {
                return Err(serde::de::Error::custom(format!(
                    "the key `{}` appears twice in one object",
                    key.0.chars().take(64).collect::<String>()
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// An object key as written, unescaped: borrowed from the body when it
/// holds no escape sequence.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl PaymentEvent {
    pub fn parse(body: &[u8], region: Option<Region>) -> Result<PaymentEvent, EventError> {
        reject_duplicate_keys(body)?;
        Self::parse_unique(body, region)
    }

    /// `parse` for a body already known to repeat no key (the webhook
    /// guard checked it): the same result, one walk of the body fewer.
    pub fn parse_unique(body: &[u8], region: Option<Region>) -> Result<PaymentEvent, EventError> {
        let raw: RawEvent = serde_json::from_slice(body).map_err(classify)?;
        short_text("id", &raw.id)?;
        short_text("type", &raw.kind)?;
        if raw.kind != PAYMENT_SUCCEEDED {
            return Ok(PaymentEvent {
                event_id: raw.id,
                kind: EventKind::Other(raw.kind),
            });
        }
        let data = raw
            .data
            .ok_or_else(|| EventError::Invalid("data is missing".into()))?;
        let data: RawPayment = serde_json::from_str(data.get()).map_err(data_error)?;
        let order_id = OrderId::parse(&data.order_id).map_err(EventError::Invalid)?;
        short_text("data.payment_id", &data.payment_id)?;
        if let Some(user_id) = &data.user_id {
            short_text("data.user_id", user_id)?;
        }
        let amount = Money::new(data.amount, &data.currency)
            .map_err(|e| EventError::Invalid(format!("data: {e}")))?;
        // `null` reads as `None` already.
        let phone = match data.customer_phone {
            None => Err("customer_phone is missing".into()),
            Some(raw) if raw.get().starts_with('"') => {
                match serde_json::from_str::<std::borrow::Cow<str>>(raw.get()) {
                    Ok(text) => PhoneE164::parse(&text, region),
                    Err(_) => Err("customer_phone is not a string".into()),
                }
            }
            Some(_) => Err("customer_phone is not a string".into()),
        };
        let note = data.note.as_deref().and_then(Note::clean);
        Ok(PaymentEvent {
            event_id: raw.id,
            kind: EventKind::PaymentSucceeded(Payment {
                order_id,
                payment_id: data.payment_id,
                user_id: data.user_id,
                amount,
                phone,
                note,
            }),
        })
    }
}

fn classify(e: serde_json::Error) -> EventError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            EventError::Malformed(format!("body is not valid JSON: {e}"))
        }
        Category::Data => EventError::Invalid(format!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"id":"evt_01JD7X2K9","type":"payment_succeeded","created_at":"2026-11-26T10:00:00Z","data":{"order_id":"ORD-1042","payment_id":"pay_9XyZ31","user_id":"user_77","amount":49900,"currency":"INR","customer_phone":"+91 98765 43210","note":"Arrives by Friday"}}"#;

    fn payment(body: &str) -> Payment {
        match PaymentEvent::parse(body.as_bytes(), None).unwrap().kind {
            EventKind::PaymentSucceeded(p) => p,
            other => panic!("not a payment: {other:?}"),
        }
    }

    #[test]
    fn the_spec_sample_parses() {
        let p = payment(SAMPLE);
        assert_eq!(p.order_id.as_str(), "ORD-1042");
        assert_eq!(p.amount.display(), "INR 499.00");
        assert_eq!(p.phone.unwrap().digits(), "919876543210");
        assert_eq!(p.note.unwrap().as_str(), "Arrives by Friday");
    }

    #[test]
    fn syntax_errors_are_malformed_and_shape_errors_invalid() {
        assert!(matches!(
            PaymentEvent::parse(b"{", None),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            PaymentEvent::parse(b"", None),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            PaymentEvent::parse(b"[]", None),
            Err(EventError::Invalid(_))
        ));
        for bad in [
            SAMPLE.replace("49900", "499.5"),
            SAMPLE.replace("49900", "-1"),
            SAMPLE.replace("49900", "\"49900\""),
            SAMPLE.replace("\"INR\"", "\"RUP\""),
            SAMPLE.replace("ORD-1042", "ORD 1042"),
            SAMPLE.replace("\"order_id\":\"ORD-1042\",", ""),
            SAMPLE.replace("\"id\":\"evt_01JD7X2K9\",", ""),
            SAMPLE.replace("pay_9XyZ31", ""),
        ] {
            assert!(
                matches!(
                    PaymentEvent::parse(bad.as_bytes(), None),
                    Err(EventError::Invalid(_))
                ),
                "accepted {bad}"
            );
        }
    }

    #[test]
    fn a_bad_phone_still_parses_the_payment() {
        let p = payment(&SAMPLE.replace("+91 98765 43210", "12"));
        assert!(p.phone.is_err());
        let p = payment(&SAMPLE.replace("\"customer_phone\":\"+91 98765 43210\",", ""));
        assert!(p.phone.is_err());
    }

    #[test]
    fn other_types_need_no_data() {
        let e = PaymentEvent::parse(br#"{"id":"evt_2","type":"payment_failed"}"#, None).unwrap();
        assert_eq!(e.kind, EventKind::Other("payment_failed".into()));
    }

    #[test]
    fn a_key_repeated_at_any_depth_is_invalid() {
        for bad in [
            SAMPLE.replace("\"amount\":49900,", "\"amount\":49900,\"amount\":1,"),
            SAMPLE.replace("\"note\":", "\"note\":\"x\",\"note\":"),
            SAMPLE.replace(
                "\"currency\":\"INR\",",
                "\"currency\":\"INR\",\"c\\u0075rrency\":\"USD\",",
            ),
            SAMPLE.replace("\"created_at\":", "\"created_at\":1,\"created_at\":"),
            SAMPLE.replace(
                "\"user_id\":\"user_77\",",
                "\"extra\":[{\"a\":{\"b\":1,\"b\":2}}],",
            ),
        ] {
            match PaymentEvent::parse(bad.as_bytes(), None) {
                Err(EventError::Invalid(why)) => assert!(why.contains("twice"), "{why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // The same key in two different objects is fine.
        let nested = SAMPLE.replace(
            "\"user_id\":\"user_77\",",
            "\"extra\":{\"id\":1,\"data\":{\"id\":2}},",
        );
        assert!(PaymentEvent::parse(nested.as_bytes(), None).is_ok());
    }

    #[test]
    fn blank_notes_are_absent() {
        assert!(payment(&SAMPLE.replace("Arrives by Friday", " \\n\\t "))
            .note
            .is_none());
        assert!(payment(&SAMPLE.replace("\"Arrives by Friday\"", "null"))
            .note
            .is_none());
    }
}
