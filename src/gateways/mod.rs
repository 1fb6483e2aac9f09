//! Where payment webhooks come in (SPEC §4 and §11). Each source — the
//! generic Standard Webhooks route and each gateway — is a module holding its
//! signature scheme and its mapping onto the one `PaymentEvent`; the data
//! guard `Verified<S>` is the only way a handler gets an event, so no route
//! can skip reading the body once under the limit, checking the signature
//! over those exact bytes, or deriving the idempotency key. Below the
//! mapping nothing is gateway-specific: `payments::record` does the rest.

pub mod cashfree;
pub mod razorpay;
pub mod standard;
pub mod stripe;

use crate::config::Config;
use crate::domain::{EventError, EventKind, OrderId, PaymentEvent, Region};
use crate::error::AppError;
use crate::state::AppState;
use rocket::data::{self, Data, FromData};
use rocket::http::{HeaderMap, Status};
use rocket::outcome::Outcome;
use rocket::Request;
use serde::Deserialize;
use std::marker::PhantomData;

/// Every webhook body is read once, as bytes, and never past this.
pub const BODY_LIMIT: u64 = 64 * 1024;

/// A webhook source: its secret, its signature scheme, its mapping.
pub trait Source: Send + Sync + 'static {
    /// Secrets as configured for this source.
    type Secret: Send + Sync;
    /// `razorpay`, `stripe`, …: the idempotency-key namespace, and the
    /// prefix of `order_id_source`.
    const NAME: &'static str;
    /// Whether idempotency keys are namespaced with `NAME:`. The generic
    /// route keeps `webhook-id` as it is (keys already stored stay valid).
    const NAMESPACED: bool;
    /// Whether `map` refuses a repeated key itself (with the same answer
    /// the guard would give), so the guard need not walk the body for it.
    const MAP_REFUSES_DUPLICATE_KEYS: bool = false;

    fn secret(config: &Config) -> Option<&Self::Secret>;

    /// Checks the signature over the raw bytes; the message says what is
    /// wrong without revealing anything secret.
    fn verify(
        secret: &Self::Secret,
        headers: &HeaderMap<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str>;

    /// Maps a verified body onto the payment event.
    fn map(headers: &HeaderMap<'_>, body: &[u8], config: &Config) -> Result<Mapped, AppError>;
}

/// A source's event, mapped.
#[derive(Debug)]
pub struct Mapped {
    /// The key within the source's namespace.
    pub key: String,
    pub event: PaymentEvent,
    /// Which field the order id came from (`payment.notes.order_id`, …).
    pub order_id_source: Option<&'static str>,
    /// The event names only the gateway's own order id, and a later event of
    /// the same payment may name the merchant's (SPEC §11, Razorpay's
    /// `payment.captured`): it waits for that one before it confirms.
    pub awaits_order: bool,
}

/// A payment webhook that passed its source's checks: read once under
/// `BODY_LIMIT`, signature verified (or unsigned in sandbox mode without a
/// secret), mapped, keyed. Only the guard below can build one.
pub struct Verified<S: Source> {
    key: String,
    event: PaymentEvent,
    order_id_source: Option<String>,
    awaits_order: bool,
    _source: PhantomData<S>,
}

impl<S: Source> Verified<S> {
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn event(&self) -> &PaymentEvent {
        &self.event
    }

    /// What `payments::record` needs, plus where the order id came from.
    pub fn into_parts(self) -> (String, PaymentEvent, Option<String>) {
        (self.key, self.event, self.order_id_source)
    }

    /// Whether the event waits for another of its payment (see `Mapped`).
    pub fn awaits_order(&self) -> bool {
        self.awaits_order
    }
}

fn fail<'r, T>(e: AppError) -> data::Outcome<'r, T, AppError> {
    Outcome::Error((e.status(), e))
}

#[rocket::async_trait]
impl<'r, S: Source> FromData<'r> for Verified<S> {
    type Error = AppError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let Some(state) = req.rocket().state::<AppState>() else {
            return fail(AppError::Internal("no AppState managed".into()));
        };
        let config = &state.config;
        let secret = S::secret(config);
        // Live mode without this source's secret: the route does not exist.
        if secret.is_none() && !config.is_sandbox() {
            return Outcome::Forward((data, Status::NotFound));
        }
        let body = match crate::raw_body::read(data, BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        if let Some(secret) = secret {
            let now = crate::clock::now_ms() / 1000;
            if let Err(why) = S::verify(secret, req.headers(), &body, now) {
                return fail(AppError::InvalidSignature(why));
            }
        }
        // §4: a key repeated at any depth is ambiguous (two parsers may read
        // it differently), for a gateway's body as for orderlink's own.
        if !S::MAP_REFUSES_DUPLICATE_KEYS {
            if let Err(e) = refuse_duplicate_keys(&body) {
                return fail(e);
            }
        }
        let mapped = match S::map(req.headers(), &body, config) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        let key = if S::NAMESPACED {
            format!("{}:{}", S::NAME, mapped.key)
        } else {
            mapped.key.clone()
        };
        if mapped.key.is_empty() || key.len() > 255 {
            return fail(AppError::InvalidPayload(
                "the idempotency key must be 1 to 255 characters".into(),
            ));
        }
        if let EventKind::PaymentSucceeded(p) = &mapped.event.kind {
            if let Err(why) = &p.phone {
                log::warn!(
                    "{} order {}: not messaging the customer: {why}",
                    S::NAME,
                    p.order_id
                );
            }
        }
        Outcome::Success(Verified {
            key,
            event: mapped.event,
            order_id_source: mapped
                .order_id_source
                .map(|field| format!("{} {field}", S::NAME)),
            awaits_order: mapped.awaits_order,
            _source: PhantomData,
        })
    }
}

/// A JSON body into `T`, with §4's split: not JSON at all is 400, JSON of
/// the wrong shape 422.
pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                AppError::MalformedJson(format!("body is not valid JSON: {e}"))
            }
            Category::Data => AppError::InvalidPayload(format!("{e}")),
        }
    })
}

pub fn event_error(e: EventError) -> AppError {
    match e {
        EventError::Malformed(m) => AppError::MalformedJson(m),
        EventError::Invalid(m) => AppError::InvalidPayload(m),
    }
}

/// 422 when a JSON object of the body repeats a key, at any depth (the
/// domain's rule, for a gateway's body as for orderlink's own); a body that
/// is not JSON at all is 400.
pub fn refuse_duplicate_keys(body: &[u8]) -> Result<(), AppError> {
    crate::domain::reject_duplicate_keys(body).map_err(event_error)
}

/// The first candidate that is a valid order id (§4), with its field name.
pub fn first_order_id<'a>(
    candidates: impl IntoIterator<Item = (&'static str, Option<&'a str>)>,
) -> Option<(OrderId, &'static str)> {
    candidates.into_iter().find_map(|(field, value)| {
        value
            .and_then(|v| OrderId::parse(v).ok())
            .map(|id| (id, field))
    })
}

/// A stable key for an ignored event that carries no id of its own.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(body)[..16])
}

/// Gateway ids end up in the database and in answers: printable, bounded.
pub fn gateway_text(field: &str, value: &str) -> Result<String, AppError> {
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(AppError::InvalidPayload(format!(
            "{field} must be 1 to 255 printable characters"
        )));
    }
    Ok(value.to_owned())
}

/// Phone text to E.164 with the given default region; a missing phone is
/// not an error of the event (§4: `skipped_invalid_phone`).
pub fn phone(
    raw: Option<&str>,
    region: Option<Region>,
) -> Result<crate::domain::PhoneE164, String> {
    match raw {
        Some(p) => crate::domain::PhoneE164::parse(p, region),
        None => Err("the gateway sent no phone number".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_at_any_depth_are_refused() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"data":{"order":{"order_id":"A","order_id":"B"}}}"#,
            r#"[{"x":[{"k":1,"k":1}]}]"#,
            r#"{"a\u0062":1,"ab":2}"#,
        ] {
            let e = refuse_duplicate_keys(bad.as_bytes()).unwrap_err();
            assert_eq!(e.status().code, 422, "{bad}");
        }
        for ok in [
            r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#,
            "[]",
            "1.5",
            r#""x""#,
        ] {
            assert!(refuse_duplicate_keys(ok.as_bytes()).is_ok(), "{ok}");
        }
        for not_json in ["{", ""] {
            let e = refuse_duplicate_keys(not_json.as_bytes()).unwrap_err();
            assert_eq!(e.status().code, 400, "{not_json}");
        }
        // Objects with many keys (past the short list the check starts with),
        // the repeat early, late, or spelled with an escape.
        let wide = |repeat: &str| {
            let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
            format!("{{{},{repeat}}}", keys.join(","))
        };
        for repeat in [r#""k3":0"#, r#""k39":0"#, r#""k\u0032\u0035":0"#] {
            let body = wide(repeat);
            let e = refuse_duplicate_keys(body.as_bytes()).unwrap_err();
            assert_eq!(e.status().code, 422, "{body}");
        }
        assert!(refuse_duplicate_keys(wide(r#""k40":0"#).as_bytes()).is_ok());
    }

    #[test]
    fn the_first_valid_candidate_wins() {
        let found = first_order_id([
            ("a", None),
            ("b", Some("not valid!")),
            ("c", Some("ORD-1")),
            ("d", Some("ORD-2")),
        ]);
        assert_eq!(
            found.map(|(id, f)| (id.as_str().to_owned(), f)),
            Some(("ORD-1".into(), "c"))
        );
        assert!(first_order_id([("a", Some(""))]).is_none());
    }
}
