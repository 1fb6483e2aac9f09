//! The generic route of §4: Standard Webhooks signatures, orderlink's own
//! event format, `webhook-id` as the idempotency key.

use super::{Mapped, Source};
use crate::config::Config;
use crate::domain::PaymentEvent;
use crate::error::AppError;
use crate::signature::WebhookSecret;
use rocket::http::HeaderMap;

pub struct Standard;

impl Source for Standard {
    type Secret = WebhookSecret;
    const NAME: &'static str = "webhook";
    const NAMESPACED: bool = false;
    /// `PaymentEvent::parse` checks, first thing, as the guard would.
    const MAP_REFUSES_DUPLICATE_KEYS: bool = true;

    fn secret(config: &Config) -> Option<&WebhookSecret> {
        config.webhook_secret.as_ref()
    }

    fn verify(
        secret: &WebhookSecret,
        headers: &HeaderMap<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), &'static str> {
        let get = |name| headers.get_one(name);
        let (Some(id), Some(ts), Some(sig)) = (
            get("webhook-id"),
            get("webhook-timestamp"),
            get("webhook-signature"),
        ) else {
            return Err("webhook-id, webhook-timestamp and webhook-signature headers are required");
        };
        secret.verify(id, ts, sig, body, now_secs)
    }

    fn map(headers: &HeaderMap<'_>, body: &[u8], config: &Config) -> Result<Mapped, AppError> {
        let event = PaymentEvent::parse(body, config.default_region).map_err(super::event_error)?;
        // In sandbox mode without a secret the header may be missing.
        let key = headers
            .get_one("webhook-id")
            .map(str::to_owned)
            .unwrap_or_else(|| event.event_id.clone());
        if key.is_empty() || key.len() > 255 {
            return Err(AppError::InvalidPayload(
                "webhook-id must be 1 to 255 characters".into(),
            ));
        }
        Ok(Mapped {
            key,
            event,
            order_id_source: Some("data.order_id"),
            awaits_order: false,
        })
    }
}
