//! HTTP routes, one module each, plus the catchers that keep every error
//! answer in the same JSON shape (and the invite pages in HTML).

pub mod admin;
pub mod admin_page;
pub mod admin_page_session;
pub mod admin_page_templates;
pub mod admin_page_views;
pub mod bearer;
pub mod gateway_webhooks;
pub mod health;
pub mod invite;
pub mod metrics;
pub mod payment_webhook;
pub mod request_log;
pub mod whatsapp_webhook;

use crate::error::json_error;
use rocket::http::Status;
use rocket::response::{self, Responder, Response};
use rocket::{catch, catchers, Catcher, Request};

pub fn routes() -> Vec<rocket::Route> {
    let mut all = Vec::new();
    all.extend(payment_webhook::routes());
    all.extend(gateway_webhooks::routes());
    all.extend(invite::routes());
    all.extend(health::routes());
    all.extend(whatsapp_webhook::routes());
    all.extend(admin::routes());
    all.extend(admin_page::routes());
    all.extend(metrics::routes());
    all
}

pub fn catchers() -> Vec<Catcher> {
    catchers![not_found, default_catcher]
}

struct CaughtError(Status, &'static str, String);

impl<'r> Responder<'r, 'static> for CaughtError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Ok(json_error(self.0, self.1, &self.2))
    }
}

enum NotFound {
    Json(CaughtError),
    Html(Response<'static>),
}

impl<'r> Responder<'r, 'static> for NotFound {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        match self {
            NotFound::Json(e) => e.respond_to(req),
            NotFound::Html(r) => Ok(r),
        }
    }
}

#[catch(404)]
fn not_found(req: &Request<'_>) -> NotFound {
    if req.uri().path().starts_with("/w/") {
        return NotFound::Html(invite::not_found_page());
    }
    NotFound::Json(CaughtError(
        Status::NotFound,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    ))
}

#[catch(default)]
fn default_catcher(status: Status, req: &Request<'_>) -> CaughtError {
    let code = match status.code {
        400 => "bad_request",
        401 => "unauthorized",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_payload",
        500 => "internal",
        503 => "unavailable",
        _ => "error",
    };
    if status.code >= 500 {
        log::error!("{} {}: {}", req.method(), req.uri().path(), status);
    } else {
        log::warn!("{} {}: {}", req.method(), req.uri().path(), status);
    }
    CaughtError(
        status,
        code,
        status.reason().unwrap_or("error").to_lowercase(),
    )
}
