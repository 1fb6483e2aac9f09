//! The admin API (SPEC §10): read-only views of an order's funnel and of a
//! contact, the dead letters, and a retry. Bearer `ADMIN_TOKEN`, compared in
//! constant time; without a token configured the whole API is 404. Tokens
//! are masked everywhere in its answers, message texts included.

use crate::db::DbError;
use crate::domain::{mask_digits, mask_token, Money};
use crate::error::AppError;
use crate::outbox;
use crate::sender::{mask_tokens_in, now_ms};
use crate::signature::constant_time_eq;
use crate::state::AppState;
use rocket::http::uri::{fmt::Path, Segments};
use rocket::http::Status;
use rocket::request::{FromRequest, Outcome, Request};
use rocket::serde::json::{json, Value};
use rocket::{get, post, routes, State};
use rusqlite::{params, Connection, OptionalExtension};

pub fn routes() -> Vec<rocket::Route> {
    routes![order, contact, messages, retry]
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Admin {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let Some(state) = req.rocket().state::<AppState>() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        let Some(expected) = state.config.admin_token.as_deref() else {
            return Outcome::Error((Status::NotFound, ()));
        };
        let given = req
            .headers()
            .get_one("Authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(token) if constant_time_eq(expected, token) => Outcome::Success(Admin),
            _ => Outcome::Error((Status::Unauthorized, ())),
        }
    }
}

pub fn rfc3339(ms: Option<i64>) -> Value {
    use time::format_description::well_known::Rfc3339;
    match ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }) {
        Some(t) => t.format(&Rfc3339).map(Value::String).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

fn masked_text(text: Option<String>) -> Value {
    text.map(|t| Value::String(mask_tokens_in(&t)))
        .unwrap_or(Value::Null)
}

fn message_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>("id")?,
        "order_id": r.get::<_, String>("order_id")?,
        "kind": r.get::<_, String>("kind")?,
        "recipient": r.get::<_, String>("recipient")?,
        "recipient_user_id": r.get::<_, Option<String>>("recipient_user_id")?,
        "status": r.get::<_, String>("status")?,
        "variant": r.get::<_, String>("variant")?,
        "attempts": r.get::<_, i64>("attempts")?,
        "next_attempt_at": rfc3339(r.get("next_attempt_at")?),
        "last_error": masked_text(r.get("last_error")?),
        "graph_message_id": r.get::<_, Option<String>>("graph_message_id")?,
        "sent_at": rfc3339(r.get("sent_at")?),
        "delivery_status": r.get::<_, Option<String>>("delivery_status")?,
        "delivery_error": r.get::<_, Option<String>>("delivery_error")?,
        "delivery_updated_at": rfc3339(r.get("delivery_updated_at")?),
    }))
}

const MESSAGE_COLUMNS: &str =
    "id, order_id, kind, recipient, recipient_user_id, status, variant, attempts, next_attempt_at, last_error,
     graph_message_id, sent_at, delivery_status, delivery_error, delivery_updated_at";

fn inbound_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "wamid": r.get::<_, String>("wamid")?,
        "wa_id": r.get::<_, Option<String>>("wa_id")?,
        "user_id": r.get::<_, Option<String>>("user_id")?,
        "profile_name": r.get::<_, Option<String>>("profile_name")?,
        "type": r.get::<_, String>("message_type")?,
        "text": masked_text(r.get("body")?),
        "sent_at": rfc3339(r.get("sent_at")?),
        "received_at": rfc3339(r.get("received_at")?),
        "attribution": r.get::<_, String>("attribution")?,
        "order_id": r.get::<_, Option<String>>("order_id")?,
    }))
}

const INBOUND_COLUMNS: &str =
    "wamid, wa_id, user_id, profile_name, message_type, body, sent_at, received_at, attribution, order_id";

fn delivered(status: Option<&Value>) -> bool {
    matches!(status.and_then(Value::as_str), Some("delivered" | "read"))
}

fn order_view(c: &Connection, order_id: &str) -> Result<Option<Value>, DbError> {
    let order = c
        .prepare_cached(
            "SELECT id, user_id, payment_id, status, customer_phone_e164, total_amount, currency, note,
                    created_at, updated_at, last_confirmation_sent_at, order_id_source
             FROM orders WHERE id = ?1",
        )?
        .query_row([order_id], |r| {
            let amount: i64 = r.get("total_amount")?;
            let currency: String = r.get("currency")?;
            Ok(json!({
                "id": r.get::<_, String>("id")?,
                "user_id": r.get::<_, Option<String>>("user_id")?,
                "payment_id": r.get::<_, Option<String>>("payment_id")?,
                "status": r.get::<_, String>("status")?,
                "customer_phone": r.get::<_, Option<String>>("customer_phone_e164")?.map(|p| format!("+{p}")),
                "amount_minor": amount,
                "currency": currency,
                "amount": Money::new(amount, &currency).map(|m| m.display()).ok(),
                "note": r.get::<_, Option<String>>("note")?,
                "created_at": rfc3339(r.get("created_at")?),
                "updated_at": rfc3339(r.get("updated_at")?),
                "last_confirmation_sent_at": rfc3339(r.get("last_confirmation_sent_at")?),
                "order_id_source": r.get::<_, Option<String>>("order_id_source")?,
            }))
        })
        .optional()?;
    let Some(order) = order else { return Ok(None) };

    let token = c
        .prepare_cached("SELECT token, expires_at, consumed_at, created_at FROM whatsapp_tokens WHERE order_id = ?1 ORDER BY created_at LIMIT 1")?
        .query_row([order_id], |r| {
            Ok(json!({
                "token": mask_token(&r.get::<_, String>(0)?),
                "expires_at": rfc3339(r.get(1)?),
                "consumed_at": rfc3339(r.get(2)?),
                "created_at": rfc3339(r.get(3)?),
            }))
        })
        .optional()?;
    let messages: Vec<Value> = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE order_id = ?1 ORDER BY created_at, kind"
        ))?
        .query_map([order_id], message_json)?
        .collect::<Result<_, _>>()?;
    let (human, preview, last_click): (i64, i64, Option<i64>) = c
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN is_preview THEN 0 ELSE 1 END), 0),
                    COALESCE(SUM(CASE WHEN is_preview THEN 1 ELSE 0 END), 0),
                    MAX(CASE WHEN is_preview THEN NULL ELSE clicked_at END)
             FROM invite_clicks WHERE order_id = ?1",
        )?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    type Link = (String, Option<String>, Option<String>, Option<String>, i64);
    let links: Vec<Link> = c
        .prepare_cached(
            "SELECT c.id, c.wa_id, c.user_id, l.profile_name, l.linked_at
             FROM contact_links l JOIN contacts c ON c.id = l.contact_id
             WHERE l.order_id = ?1 ORDER BY l.linked_at",
        )?
        .query_map([order_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut contacts = Vec::new();
    for (contact_id, wa_id, user_id, profile_name, linked_at) in &links {
        let msgs: Vec<Value> = c
            .prepare_cached(&format!(
                "SELECT {INBOUND_COLUMNS} FROM inbound_messages WHERE order_id = ?1 AND contact_id = ?2 ORDER BY received_at"
            ))?
            .query_map(params![order_id, contact_id], inbound_json)?
            .collect::<Result<_, _>>()?;
        let reply_ids: Vec<String> = c
            .prepare_cached(
                "SELECT id FROM outbox WHERE order_id = ?1 AND kind = ?2 AND slot = ?3",
            )?
            .query_map(
                params![order_id, outbox::Kind::ElderReply, contact_id],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        let replies: Vec<Value> = messages
            .iter()
            .filter(|m| reply_ids.iter().any(|id| m["id"] == id.as_str()))
            .cloned()
            .collect();
        contacts.push(json!({
            "wa_id": wa_id,
            "user_id": user_id,
            "profile_name": profile_name,
            "linked_at": rfc3339(Some(*linked_at)),
            "messages": msgs,
            "replies": replies,
        }));
    }
    let of_kind = |kind: &str| messages.iter().find(|m| m["kind"] == kind);
    let funnel = json!({
        "paid": order["status"] == "PAID",
        "confirmation_sent": of_kind(outbox::CONFIRMATION).is_some_and(|m| m["status"] == outbox::SENT),
        "confirmation_delivered": delivered(of_kind(outbox::CONFIRMATION).map(|m| &m["delivery_status"])),
        "link_sent": of_kind(outbox::LINK).is_some_and(|m| m["status"] == outbox::SENT),
        "link_delivered": delivered(of_kind(outbox::LINK).map(|m| &m["delivery_status"])),
        "link_opened": human > 0,
        "elder_linked": !links.is_empty(),
    });
    Ok(Some(json!({
        "order": order,
        "token": token,
        "funnel": funnel,
        "messages": messages,
        "invite_clicks": {"human": human, "preview": preview, "last_human_click_at": rfc3339(last_click)},
        "contacts": contacts,
    })))
}

#[get("/admin/orders/<id..>")]
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
    let view = state
        .db
        .reads
        .read(move |c| {
            let found: Option<(String, Option<String>, Option<String>)> = c
                .prepare_cached(
                    "SELECT id, wa_id, user_id FROM contacts WHERE user_id = ?1 OR wa_id = ?1",
                )?
                .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((contact_id, wa_id, user_id)) = found else {
                return Ok::<_, DbError>(None);
            };
            let orders: Vec<Value> = c
                .prepare_cached(
                    "SELECT l.order_id, l.profile_name, l.linked_at, o.status FROM contact_links l
                     JOIN orders o ON o.id = l.order_id WHERE l.contact_id = ?1 ORDER BY l.linked_at DESC",
                )?
                .query_map([&contact_id], |r| {
                    Ok(json!({
                        "order_id": r.get::<_, String>(0)?,
                        "profile_name": r.get::<_, Option<String>>(1)?,
                        "linked_at": rfc3339(r.get(2)?),
                        "order_status": r.get::<_, String>(3)?,
                    }))
                })?
                .collect::<Result<_, _>>()?;
            let messages: Vec<Value> = c
                .prepare_cached(&format!(
                    "SELECT {INBOUND_COLUMNS} FROM inbound_messages WHERE contact_id = ?1 ORDER BY received_at"
                ))?
                .query_map([&contact_id], inbound_json)?
                .collect::<Result<_, _>>()?;
            Ok(Some((wa_id, user_id, orders, messages)))
        })
        .await?;
    let Some((wa_id, user_id, orders, messages)) = view else {
        return Err(AppError::NotFound(format!(
            "no messages or orders for contact {shown}"
        )));
    };
    Ok(json!({"wa_id": wa_id, "user_id": user_id, "orders": orders, "messages": messages}))
}

#[get("/admin/messages?<status>")]
async fn messages(
    _admin: Admin,
    status: Option<&str>,
    state: &State<AppState>,
) -> Result<Value, AppError> {
    let status = status.unwrap_or(outbox::DEAD).to_owned();
    let known = [
        outbox::DEAD,
        outbox::QUEUED,
        outbox::WAITING,
        outbox::SENT,
        outbox::CANCELLED,
    ];
    if !known.contains(&status.as_str()) {
        return Err(AppError::InvalidPayload(format!(
            "status must be one of {}",
            known.join(", ")
        )));
    }
    let wanted = status.clone();
    let list: Vec<Value> = state
        .db
        .reads
        .read(move |c| {
            Ok::<_, DbError>(
                c.prepare_cached(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE status = ?1 ORDER BY updated_at DESC LIMIT 500"
                ))?
                .query_map([&wanted], message_json)?
                .collect::<Result<_, _>>()?,
            )
        })
        .await?;
    Ok(json!({"status": status, "count": list.len(), "messages": list}))
}

/// Queues a dead-lettered (or cancelled) message again. A message Meta
/// accepted is never re-queued: that would be a second copy.
#[post("/admin/messages/<id>/retry")]
async fn retry(_admin: Admin, id: &str, state: &State<AppState>) -> Result<Value, AppError> {
    let id = id.to_owned();
    let now = now_ms();
    let shown = id.clone();
    let result = state
        .db
        .writer
        .run(move |c| {
            let row: Option<(String, String, String)> = c
                .prepare_cached("SELECT status, kind, order_id FROM outbox WHERE id = ?1")?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((status, kind, order_id)) = row else {
                return Ok(Err(AppError::NotFound(format!("no message {id}"))));
            };
            if status != outbox::DEAD && status != outbox::CANCELLED {
                return Ok(Err(AppError::Conflict(format!(
                    "message {id} is {status}; only dead or cancelled messages can be retried"
                ))));
            }
            // A link waits for its confirmation to be accepted.
            let confirmation_sent = kind != outbox::LINK
                || c.prepare_cached("SELECT 1 FROM outbox WHERE order_id = ?1 AND kind = 'confirmation' AND status = 'sent'")?
                    .query_row([&order_id], |_| Ok(()))
                    .optional()?
                    .is_some();
            let next = if confirmation_sent { outbox::QUEUED } else { outbox::WAITING };
            c.prepare_cached(
                "UPDATE outbox SET status = ?2, attempts = 0, next_attempt_at = ?3, updated_at = ?3,
                        last_error = NULL
                 WHERE id = ?1",
            )?
            .execute(params![id, next, now])?;
            Ok(Ok(next))
        })
        .await?;
    let next = result?;
    state.sender.wake();
    log::info!("admin: message {shown} queued again ({next})");
    Ok(json!({"id": shown, "status": next}))
}
