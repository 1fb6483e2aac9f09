//! Meta's webhook: the verification handshake and the deliveries of
//! messages and statuses. A validly signed body is always answered 200
//! (Meta re-sends anything else for days); what was not understood is
//! logged instead.

use crate::clock::now_ms;
use crate::db::MayRunTwice;
use crate::error::AppError;
use crate::inbound::{self, Carried, Stored};
use crate::metrics::Metrics;
use crate::outbox;
use crate::signature::{constant_time_eq, verify_meta};
use crate::state::AppState;
use crate::template_health::{self, News};
use rocket::data::{self, Data, FromData};
use rocket::http::Status;
use rocket::outcome::Outcome;
use rocket::request::Request;
use rocket::serde::json::{json, Value};
use rocket::{get, post, routes, FromForm, State};
use std::sync::Arc;

const BODY_LIMIT: u64 = 1024 * 1024;

pub fn routes() -> Vec<rocket::Route> {
    routes![verify, receive]
}

/// `hub.mode`, `hub.verify_token`, `hub.challenge`.
#[derive(FromForm)]
pub struct Hub {
    mode: Option<String>,
    verify_token: Option<String>,
    challenge: Option<String>,
}

#[get("/webhooks/whatsapp?<hub>")]
fn verify(hub: Hub, state: &State<AppState>) -> (Status, (rocket::http::ContentType, String)) {
    let plain = rocket::http::ContentType::Plain;
    let expected = state.config.verify_token.as_deref();
    let ok = hub.mode.as_deref() == Some("subscribe")
        && matches!((expected, hub.verify_token.as_deref()), (Some(e), Some(given)) if constant_time_eq(e, given));
    match (ok, hub.challenge) {
        (true, Some(challenge)) => (Status::Ok, (plain, challenge)),
        _ => {
            log::warn!("GET /webhooks/whatsapp: verification refused (wrong or missing verify token, or WHATSAPP_VERIFY_TOKEN unset)");
            (Status::Forbidden, (plain, "verification failed".into()))
        }
    }
}

/// A webhook body Meta signed: read once as the exact bytes sent (413 past
/// `BODY_LIMIT`), and its `X-Hub-Signature-256` checked over those bytes
/// with `WHATSAPP_APP_SECRET` before the handler runs, as
/// `gateways::Verified` does for the payment routes. Without an app secret
/// (sandbox mode) the body is taken unsigned.
pub struct HubSignature {
    body: Vec<u8>,
}

impl HubSignature {
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}

#[rocket::async_trait]
impl<'r> FromData<'r> for HubSignature {
    type Error = AppError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let fail = |e: AppError| Outcome::Error((e.status(), e));
        let Some(state) = req.rocket().state::<AppState>() else {
            return fail(AppError::Internal("no AppState managed".into()));
        };
        let body = match crate::raw_body::read(data, BODY_LIMIT).await {
            Ok(body) => body,
            Err(e) => return fail(e),
        };
        if let Some(secret) = &state.config.app_secret {
            match req.headers().get_one("X-Hub-Signature-256") {
                None => {
                    return fail(AppError::InvalidSignature(
                        "X-Hub-Signature-256 header is required",
                    ))
                }
                Some(sig) if !verify_meta(secret, sig, &body) => {
                    return fail(AppError::InvalidSignature(
                        "X-Hub-Signature-256 does not match",
                    ))
                }
                Some(_) => {}
            }
        }
        Outcome::Success(HubSignature { body })
    }
}

#[post("/webhooks/whatsapp", data = "<signed>")]
async fn receive(
    signed: Result<HubSignature, AppError>,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<Value, AppError> {
    let body = signed?.into_body();
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            log::warn!(
                "POST /webhooks/whatsapp: signed body is not JSON ({e}); acknowledged and dropped"
            );
            metrics.webhook("whatsapp", "ignored");
            return Ok(json!({"status": "ignored"}));
        }
    };
    let parsed = inbound::parse(&payload);
    let news = template_health::parse(&payload);
    let proofs = outbox::unsure::Proof::read_all(&payload);
    for what in &parsed.skipped {
        log::info!("POST /webhooks/whatsapp: not understood: {what}");
    }
    let reply_configured = state.config.elder_reply_text.is_some();
    let (changes, messages, statuses) = (parsed.identity_changes, parsed.messages, parsed.statuses);
    let counts = (messages.len(), statuses.len());
    let now = now_ms();
    // A refused link text or BSUID send goes back to the queue: send it now.
    let requeues = statuses.iter().any(outbox::may_requeue);
    let news = std::sync::Arc::new(news);
    let reported = news.clone();
    // Week-old statuses and proofs: a minute late is as good as now.
    let prune = !statuses.is_empty() && state.prune.due(now);
    // The locks the job takes, in its order: each proof's order, then each
    // status's message. On PostgreSQL they ride with BEGIN.
    let locks: Vec<String> = proofs
        .iter()
        .map(outbox::unsure::Proof::lock)
        .chain(statuses.iter().map(|s| outbox::status_lock(&s.message_id)))
        .collect();
    let (carried, results) = state
        .db
        .writer
        .run_locked(
            locks,
            MayRunTwice::new(move |conn| {
                // Before the messages: a notice of a new number comes with (or
                // before) the first message from it.
                let mut carried = Vec::with_capacity(changes.len());
                for change in &changes {
                    carried.push((
                        change.clone(),
                        inbound::apply_identity_change(conn, change, now)?,
                    ));
                }
                let mut stored = Vec::with_capacity(messages.len());
                for m in &messages {
                    stored.push((
                        m.wamid.clone(),
                        inbound::store_message(conn, m, reply_configured, now)?,
                    ));
                }
                // Before the statuses: a status that proves an unsure send
                // records its message id, which the status then updates.
                let mut proven = Vec::new();
                for p in &proofs {
                    proven.extend(outbox::unsure::record_proof(conn, p, now)?);
                }
                for s in &statuses {
                    outbox::apply_status(conn, s, now)?;
                }
                if prune {
                    outbox::prune_pending(conn, now)?;
                    outbox::unsure::prune(conn, now)?;
                }
                if !news.is_empty() {
                    template_health::apply(conn, &news, now)?;
                }
                Ok((carried, (stored, proven)))
            }),
        )
        .await?;
    let (results, proven) = results;
    for p in &proven {
        log::info!(
            "{} for order {}: WhatsApp's status proves it was accepted ({}); recorded as sent, not sent again",
            p.kind,
            p.order_id,
            p.message_id
        );
    }
    for (change, outcome) in &carried {
        match outcome {
            Carried::UnknownContact => log::info!(
                "{}: {} is now {}; no contact was known by the old identity",
                change.source,
                change.old,
                change.new
            ),
            Carried::Links(n) => log::info!(
                "{}: contact {} is now {}; {n} link(s) to orders carried over",
                change.source,
                change.old,
                change.new
            ),
        }
    }
    report_template_news(state, metrics, &reported);
    let mut new_replies = false;
    for (wamid, stored) in &results {
        match stored {
            Stored::Duplicate => log::info!("inbound {wamid}: duplicate delivery, ignored"),
            Stored::Unattributed => {
                log::info!("inbound {wamid}: stored, not attributed to an order")
            }
            Stored::ExpiredToken => {
                log::info!("inbound {wamid}: carries an expired token; stored, not linked")
            }
            Stored::Attributed { order_id, new_link } => {
                log::info!(
                    "inbound {wamid}: attributed to order {order_id}{}",
                    if *new_link {
                        " (new contact linked)"
                    } else {
                        ""
                    }
                );
                new_replies |= *new_link && reply_configured;
                if *new_link {
                    metrics.elder_linked();
                }
            }
        }
    }
    // A proven confirmation has made its link due; a refused link text or
    // BSUID send went back to the queue: send it now.
    if new_replies || requeues || !proven.is_empty() {
        state.sender.wake();
        state.db.writer.announce();
    }
    metrics.webhook("whatsapp", "processed");
    Ok(json!({"status": "ok", "messages": counts.0, "statuses": counts.1}))
}

/// Says what Meta's template webhooks and value-level errors mean for this
/// shop (SPEC §9): a log line each, the metric, and, when the confirmation
/// or invite template is approved again, sending resumes at once.
fn report_template_news(state: &AppState, metrics: &Metrics, news: &News) {
    let config = &state.config;
    for s in &news.statuses {
        metrics.template_event(&s.event);
        let why = s
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        match template_health::role(config, &s.name, &s.language) {
            Some(role) if s.holds() => log::error!(
                "TEMPLATE {}: Meta reports the {role} template {} ({}) {}{why}; sending it is paused until Meta approves it again",
                s.event, s.name, s.language, s.event
            ),
            Some(role) => {
                log::warn!(
                    "template: Meta reports the {role} template {} ({}) {}{why}; it may be sent",
                    s.name, s.language, s.event
                );
                state.sender.resume(&format!("the {role} template is {}", s.event));
            }
            None => log::info!(
                "template: Meta reports template {} ({}) {}{why} (not one this shop sends)",
                s.name, s.language, s.event
            ),
        }
    }
    for c in &news.categories {
        match template_health::role(config, &c.name, &c.language) {
            Some(role) => log::warn!(
                "template: the {role} template {} ({}): {}; what each message costs changes with it",
                c.name,
                c.language,
                c.describe()
            ),
            None => log::info!("template {} ({}): {}", c.name, c.language, c.describe()),
        }
    }
    for e in &news.errors {
        metrics.whatsapp_error(e.code);
        log::error!(
            "WhatsApp reports a problem of the account or system (code {}): {}{}",
            e.code.map_or("none".into(), |c| c.to_string()),
            e.title.as_deref().unwrap_or("no title"),
            e.details
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
}
