//! `GET /metrics` (SPEC §14): the Prometheus scrape, behind its own bearer
//! token, 404 when `METRICS_TOKEN` is unset (as the admin API is without
//! its token), so a server never exposes its numbers by default.

use crate::error::{AppError, Refused};
use crate::metrics::{self, Metrics};
use crate::state::AppState;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{ContentType, Method};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{get, routes, Data, Response, State};
use std::sync::Arc;
use std::time::Instant;

pub fn routes() -> Vec<rocket::Route> {
    routes![scrape]
}

/// Proof that the request carried the metrics bearer token.
pub struct Scraper;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Scraper {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        super::bearer::bearer(req, |config| config.metrics_token.as_deref()).map(|()| Scraper)
    }
}

#[get("/metrics")]
async fn scrape(
    _scraper: Scraper,
    state: &State<AppState>,
    metrics: &State<Arc<Metrics>>,
) -> Result<(ContentType, String), AppError> {
    let paused = state.sender.is_paused();
    let config = state.config.clone();
    let metrics = Arc::clone(metrics);
    let text = state
        .db
        .reads
        .read(move |conn| {
            let held = crate::template_health::health(conn, &config)?.held;
            let roles: Vec<&str> = held.iter().map(|(role, _)| *role).collect();
            metrics.templates_held(&roles);
            metrics.render(conn, paused)
        })
        .await?
        .map_err(AppError::Internal)?;
    let content_type =
        ContentType::parse_flexible(metrics::CONTENT_TYPE).unwrap_or(ContentType::Plain);
    Ok((content_type, text))
}

/// The webhook sources `orderlink_webhooks_total` knows (the last segment of
/// `/webhooks/{source}`); any other path is not a webhook.
const SOURCES: [&str; 5] = ["payment", "razorpay", "stripe", "cashfree", "whatsapp"];

/// Times every webhook (`orderlink_webhook_duration_seconds`) and counts the
/// refused ones under their error code; handlers count the ones they answer.
/// Holds the same `Metrics` the app manages as state.
pub struct WebhookTimer(pub Arc<Metrics>);

struct Started(Instant);

fn webhook_source(req: &Request<'_>) -> Option<&'static str> {
    if req.method() != Method::Post {
        return None;
    }
    let path = req.uri().path();
    let source = path.as_str().strip_prefix("/webhooks/")?;
    SOURCES.into_iter().find(|s| *s == source)
}

#[rocket::async_trait]
impl Fairing for WebhookTimer {
    fn info(&self) -> Info {
        Info {
            name: "webhook metrics",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        if webhook_source(req).is_some() {
            req.local_cache(|| Started(Instant::now()));
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let Some(source) = webhook_source(req) else {
            return;
        };
        let m = &self.0;
        let status = res.status().code;
        if status >= 400 {
            // Refusals made by Rocket's catchers (a gateway route whose
            // secret is unset forwards to the 404 catcher) carry no
            // `AppError`: the catchers' own codes, from the status.
            let refused = req.local_cache(|| {
                Refused(match status {
                    400 => "bad_request",
                    401 => "unauthorized",
                    404 => "not_found",
                    413 => "payload_too_large",
                    415 => "unsupported_media_type",
                    422 => "invalid_payload",
                    500.. => "internal",
                    _ => "error",
                })
            });
            m.webhook(source, refused.0);
        }
        let started = req.local_cache(|| Started(Instant::now()));
        m.webhook_latency(source, started.0.elapsed());
    }
}
