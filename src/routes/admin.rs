//! The admin API (SPEC §10): read-only views of an order's funnel and of a
//! contact, the dead letters, and a retry. Bearer `ADMIN_TOKEN`, compared in
//! constant time; without a token configured the whole API is 404. Tokens
//! are masked everywhere in its answers, message texts included.

use crate::admin_view::chats::contact_view;
use crate::admin_view::messages::{messages_with_status, Message, LISTABLE_STATUSES};
use crate::admin_view::order::order_view;
use crate::admin_view::orders::{
    orders_list, OrderRow, OrdersQuery, ORDERS_DEFAULT_LIMIT, ORDERS_MAX_LIMIT,
};
use crate::clock::now_ms;
use crate::db::MayRunTwice;
use crate::domain::mask_digits;
use crate::error::AppError;
use crate::outbox::{self, Requeue, Status};
use crate::state::AppState;
use rocket::http::uri::{fmt::Path, Segments};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::serde::json::{json, Value};
use rocket::{get, post, routes, State};

pub fn routes() -> Vec<rocket::Route> {
    routes![orders, order, contact, messages, retry]
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Admin {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        super::bearer::bearer(req, |config| config.admin_token.as_deref()).map(|()| Admin)
    }
}

/// `GET /admin/orders?limit=&before=&q=`: newest first; `before` is the last
/// order id of the previous page (the answer's `next_before`).
#[get("/admin/orders?<limit>&<before>&<q>", rank = 1)]
async fn orders(
    _admin: Admin,
    limit: Option<&str>,
    before: Option<&str>,
    q: Option<&str>,
    state: &State<AppState>,
) -> Result<Value, AppError> {
    let limit = match limit {
        None => ORDERS_DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=ORDERS_MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(AppError::InvalidPayload(format!(
                    "limit must be a whole number from 1 to {}",
                    ORDERS_MAX_LIMIT
                )))
            }
        },
    };
    let query = OrdersQuery {
        limit,
        before: before.map(str::to_owned),
        search: q.map(str::to_owned),
    };
    let page = state
        .db
        .reads
        .read(move |c| orders_list(c, &query))
        .await??;
    let rows: Vec<Value> = page.rows.iter().map(OrderRow::json).collect();
    Ok(json!({"count": rows.len(), "orders": rows, "next_before": page.next_before}))
}

#[get("/admin/orders/<id..>", rank = 2)]
async fn order(
    _admin: Admin,
    id: Segments<'_, Path>,
    state: &State<AppState>,
) -> Result<Value, AppError> {
    let order_id = id.collect::<Vec<_>>().join("/");
    let wanted = order_id.clone();
    state
        .db
        .reads
        .read(move |c| order_view(c, &wanted))
        .await?
        .map(|view| view.json)
        .ok_or_else(|| AppError::NotFound(format!("no order {order_id}")))
}

/// `{id}` is a phone number (`wa_id`, `+` optional) or a business-scoped
/// user id: a contact known by either is found by either.
#[get("/admin/contacts/<id>")]
async fn contact(_admin: Admin, id: &str, state: &State<AppState>) -> Result<Value, AppError> {
    let key = id.trim().trim_start_matches('+').to_owned();
    let shown = match crate::domain::Bsuid::parse(&key) {
        Ok(bsuid) => bsuid.to_string(),
        Err(_) => mask_digits(&key),
    };
    let view = state.db.reads.read(move |c| contact_view(c, &key)).await?;
    let Some(view) = view else {
        return Err(AppError::NotFound(format!(
            "no messages or orders for contact {shown}"
        )));
    };
    Ok(json!({
        "wa_id": view.wa_id,
        "user_id": view.user_id,
        "orders": view.orders,
        "messages": view.messages,
    }))
}

#[get("/admin/messages?<status>")]
async fn messages(
    _admin: Admin,
    status: Option<&str>,
    state: &State<AppState>,
) -> Result<Value, AppError> {
    let wanted = match status {
        None => Status::Dead,
        Some(text) => match Status::parse(text).filter(|s| LISTABLE_STATUSES.contains(s)) {
            Some(status) => status,
            None => {
                return Err(AppError::InvalidPayload(format!(
                    "status must be one of {}",
                    LISTABLE_STATUSES.map(Status::as_str).join(", ")
                )))
            }
        },
    };
    let list: Vec<Value> = state
        .db
        .reads
        .read(move |c| messages_with_status(c, wanted))
        .await?
        .iter()
        .map(Message::json)
        .collect();
    Ok(json!({"status": wanted.as_str(), "count": list.len(), "messages": list}))
}

/// Queues a dead-lettered (or cancelled) message again (`outbox::requeue`,
/// the same path as the page's button).
#[post("/admin/messages/<id>/retry")]
async fn retry(_admin: Admin, id: &str, state: &State<AppState>) -> Result<Value, AppError> {
    let id = id.to_owned();
    let now = now_ms();
    let shown = id.clone();
    let outcome = state
        .db
        .writer
        .run(MayRunTwice::new(move |c| outbox::requeue(c, &id, now)))
        .await?;
    let next = requeued(&shown, outcome)?;
    state.sender.wake();
    state.db.writer.announce();
    log::info!("admin: message {shown} queued again ({next})");
    Ok(json!({"id": shown, "status": next.as_str()}))
}

/// A retry's answer, for the JSON retry and the page's button alike: the
/// status the message is in now, or why it was not queued again (404, 409).
pub(super) fn requeued(id: &str, outcome: Requeue) -> Result<Status, AppError> {
    match outcome {
        Requeue::Done(next) => Ok(next),
        Requeue::NotFound => Err(AppError::NotFound(format!("no message {id}"))),
        Requeue::Refused(status) => Err(AppError::Conflict(format!(
            "message {id} is {status}; only dead or cancelled messages can be retried"
        ))),
    }
}
