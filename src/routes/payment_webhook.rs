//! `POST /webhooks/payment` (§4), and the one path every payment webhook
//! takes once its source's data guard has verified and mapped it: commit one
//! unit of work, wake the senders, answer. Nothing here waits on WhatsApp.

use crate::clock::now_ms;
use crate::db::MayRunTwice;
use crate::domain::{EventKind, PaymentEvent};
use crate::error::AppError;
use crate::gateways::standard::Standard;
use crate::gateways::{Source, Verified};
use crate::held_payments;
use crate::metrics::Metrics;
use crate::payments::{self, Context, Outcome};
use crate::state::AppState;
use crate::token_cache::CachedToken;
use rocket::serde::json::{json, Value};
use rocket::{post, routes, State};
use std::sync::Arc;

pub fn routes() -> Vec<rocket::Route> {
    routes![payment_webhook]
}

#[post("/webhooks/payment", data = "<webhook>")]
async fn payment_webhook(
    webhook: Result<Verified<Standard>, AppError>,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<Value, AppError> {
    accept(state, metrics, webhook?).await
}

/// Record, wake the senders, answer: the same for every source.
pub async fn accept<S: Source>(
    state: &AppState,
    metrics: &Metrics,
    webhook: Verified<S>,
) -> Result<Value, AppError> {
    let awaits_order = webhook.awaits_order();
    let (key, event, order_id_source) = webhook.into_parts();
    let ctx = Context {
        now_ms: now_ms(),
        token_ttl_ms: state.config.token_ttl.as_millis() as i64,
        link_message: state.config.link_in.sends_link_message(),
    };
    // PostgreSQL: a new event of the plain webhook (no gateway payment to
    // match, no order to wait for) in one statement, one round trip; a key
    // already taken falls through to the general job, which answers it.
    let alone = match (&event.kind, S::NAMESPACED || awaits_order) {
        (EventKind::PaymentSucceeded(p), false) if state.db.writer.is_postgres() => {
            let (key, event_id, p) = (key.clone(), event.event_id.clone(), p.clone());
            let source = order_id_source.clone();
            state
                .db
                .writer
                .run_alone(MayRunTwice::new(move |conn| {
                    let source = source.as_deref();
                    payments::record_in_one_statement(conn, &key, &event_id, &p, source, &ctx)
                }))
                .await?
        }
        _ => None,
    };
    let (outcome, made) = match alone {
        Some((outcome, made)) => {
            let made = match (&outcome, made) {
                (Outcome::Processed { order_id, .. }, Some(t)) => Some(CachedToken {
                    token_id: t.id.into(),
                    order_id: order_id.as_str().into(),
                    expires_at: t.expires_at,
                }),
                _ => None,
            };
            (outcome, made)
        }
        None => record::<S>(state, key, event, order_id_source, awaits_order, ctx).await?,
    };
    finish::<S>(state, metrics, outcome, made)
}

/// The general job: every source, every case (a duplicate, a gateway
/// payment already recorded under another order, one held for its order).
async fn record<S: Source>(
    state: &AppState,
    key: String,
    event: PaymentEvent,
    order_id_source: Option<String>,
    awaits_order: bool,
    ctx: Context,
) -> Result<(Outcome, Option<CachedToken>), AppError> {
    let wait_ms = state.config.razorpay_order_wait.as_millis() as i64;
    Ok(state
        .db
        .writer
        .run(MayRunTwice::new(move |conn| {
            // It may run twice, so the event it adjusts is its own copy.
            let mut event = event.clone();
            let mut has_order = false;
            if S::NAMESPACED {
                has_order = payments::keep_with_its_order(conn, S::NAME, &mut event.kind)?;
            }
            // §11: only the gateway's own order id, and no order yet: wait
            // for the event that names the merchant's.
            if awaits_order && !has_order && wait_ms > 0 {
                let due = ctx.now_ms + wait_ms;
                let source = order_id_source.as_deref();
                let held =
                    held_payments::hold(conn, S::NAME, &key, &event, source, ctx.now_ms, due)?;
                if let Some(outcome) = held {
                    return Ok((outcome, None));
                }
            }
            let outcome = payments::record(conn, &key, &event, &ctx)?;
            let recorded = matches!(
                outcome,
                Outcome::Processed { .. }
                    | Outcome::SkippedInvalidPhone { .. }
                    | Outcome::AlreadyConfirmed { .. }
            );
            if let (true, Some(source), EventKind::PaymentSucceeded(p)) =
                (recorded, &order_id_source, &event.kind)
            {
                payments::note_order_id_source(conn, &p.order_id, source)?;
            }
            if let (true, true, EventKind::PaymentSucceeded(p)) =
                (recorded, S::NAMESPACED, &event.kind)
            {
                held_payments::settle(conn, S::NAME, &p.payment_id, p.order_id.as_str())?;
            }
            // The new token as the redirect will want it, read inside the
            // transaction that made it and remembered once that commits.
            let made = match &outcome {
                Outcome::Processed { order_id, token } => {
                    payments::token_made(conn, token)?.map(|(token_id, expires_at)| CachedToken {
                        token_id: token_id.into(),
                        order_id: order_id.as_str().into(),
                        expires_at,
                    })
                }
                _ => None,
            };
            Ok((outcome, made))
        }))
        .await?)
}

/// Remembers the new token, wakes the senders, counts and answers.
fn finish<S: Source>(
    state: &AppState,
    metrics: &Metrics,
    outcome: Outcome,
    made: Option<CachedToken>,
) -> Result<Value, AppError> {
    if let (Outcome::Processed { token, .. }, Some(made)) = (&outcome, made) {
        if let Some(t) = crate::domain::InviteToken::parse(token.as_str()) {
            state.tokens.insert(t.uuid(), made);
        }
    }
    if matches!(outcome, Outcome::Processed { .. }) {
        state.sender.wake();
        state.db.writer.announce();
    }
    metrics.webhook(
        if S::NAMESPACED { S::NAME } else { "payment" },
        outcome.label(),
    );
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
        Outcome::Held { gateway_order_id } => {
            return json!({"status": "waiting", "gateway_order_id": gateway_order_id, "waiting_for": "order.paid"});
        }
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
