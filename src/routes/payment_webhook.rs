//! `POST /webhooks/payment`: verify, parse, commit one unit of work, answer.
//! Nothing here waits on WhatsApp; the sender picks the messages up.

use crate::domain::{EventError, EventKind, PaymentEvent};
use crate::error::AppError;
use crate::payments::{self, Context, Outcome};
use crate::sender::now_ms;
use crate::state::AppState;
use rocket::data::Data;
use rocket::request::{FromRequest, Outcome as GuardOutcome, Request};
use rocket::serde::json::{json, Value};
use rocket::{post, routes, State};

pub const BODY_LIMIT: u64 = 64 * 1024;

pub fn routes() -> Vec<rocket::Route> {
    routes![payment_webhook]
}

/// The Standard Webhooks headers, as sent (any may be missing).
pub struct WebhookHeaders {
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for WebhookHeaders {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> GuardOutcome<Self, Self::Error> {
        let get = |name: &str| req.headers().get_one(name).map(str::to_owned);
        GuardOutcome::Success(WebhookHeaders {
            id: get("webhook-id"),
            timestamp: get("webhook-timestamp"),
            signature: get("webhook-signature"),
        })
    }
}

#[post("/webhooks/payment", data = "<body>")]
async fn payment_webhook(
    headers: WebhookHeaders,
    body: Data<'_>,
    state: &State<AppState>,
) -> Result<Value, AppError> {
    let config = &state.config;
    let body = super::read_raw_body(body, BODY_LIMIT).await?;

    if let Some(secret) = &config.webhook_secret {
        let (Some(id), Some(ts), Some(sig)) = (&headers.id, &headers.timestamp, &headers.signature)
        else {
            return Err(AppError::InvalidSignature(
                "webhook-id, webhook-timestamp and webhook-signature headers are required",
            ));
        };
        secret
            .verify(id, ts, sig, &body, now_ms() / 1000)
            .map_err(AppError::InvalidSignature)?;
    }

    let event = PaymentEvent::parse(&body, config.default_region).map_err(|e| match e {
        EventError::Malformed(m) => AppError::MalformedJson(m),
        EventError::Invalid(m) => AppError::InvalidPayload(m),
    })?;
    let key = headers.id.clone().unwrap_or_else(|| event.event_id.clone());
    if key.is_empty() || key.len() > 255 {
        return Err(AppError::InvalidPayload(
            "webhook-id must be 1 to 255 characters".into(),
        ));
    }
    if let EventKind::PaymentSucceeded(p) = &event.kind {
        if let Err(why) = &p.phone {
            log::warn!("order {}: not messaging the customer: {why}", p.order_id);
        }
    }

    let ctx = Context {
        now_ms: now_ms(),
        token_ttl_ms: config.token_ttl.as_millis() as i64,
    };
    let outcome = state
        .db
        .writer
        .run(move |conn| payments::record(conn, &key, &event, &ctx))
        .await?;
    if matches!(outcome, Outcome::Processed { .. }) {
        state.sender.wake();
    }
    Ok(respond(state, outcome))
}

fn links(state: &AppState, order_id: &str, token: Option<&str>) -> Value {
    let config = &state.config;
    match token.and_then(|t| {
        payments::links_for(&config.app_base_url, &config.business_number, order_id, t)
    }) {
        Some((invite, wa)) => json!({"invite_url": invite, "whatsapp_link": wa}),
        None => json!({}),
    }
}

fn respond(state: &AppState, outcome: Outcome) -> Value {
    let (status, order_id, token, extra) = match &outcome {
        Outcome::Processed { order_id, token } => {
            ("processed", Some(order_id), Some(token.as_str()), None)
        }
        Outcome::SkippedInvalidPhone { order_id } => (
            "processed",
            Some(order_id),
            None,
            Some(("whatsapp", "skipped_invalid_phone")),
        ),
        Outcome::Duplicate { order_id, token } => {
            ("duplicate", order_id.as_ref(), token.as_deref(), None)
        }
        Outcome::AlreadyConfirmed { order_id, token } => {
            ("already_confirmed", Some(order_id), token.as_deref(), None)
        }
        Outcome::Ignored => ("ignored", None, None, None),
    };
    let mut body = json!({"status": status});
    if let Some(order_id) = order_id {
        body["order_id"] = json!(order_id);
        if let Value::Object(map) = links(state, order_id, token) {
            for (k, v) in map {
                body[k] = v;
            }
        }
    }
    if let Some((k, v)) = extra {
        body[k] = json!(v);
    }
    if let Outcome::Processed { order_id, .. } = &outcome {
        log::info!("order {order_id}: paid; confirmation and link message queued");
    }
    body
}
