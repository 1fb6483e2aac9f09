//! One order, for `GET /admin/orders/{id}` and the order page: its summary
//! (order, token, messages, clicks, linked elders, funnel) and its timeline.

use super::chats::{contact_label, inbound_json, INBOUND_COLUMNS};
use super::format::rfc3339;
use super::messages::{
    is_sandbox_id, message_json, price_words, MESSAGE_COLUMNS, SANDBOX_RECORDED,
};
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{mask_token, Money};
use crate::logging::mask_uuids;
use crate::outbox;
use serde_json::{json, Value};

fn delivered(status: Option<&Value>) -> bool {
    matches!(status.and_then(Value::as_str), Some("delivered" | "read"))
}

/// `GET /admin/orders/{id}` and the order page's summary.
pub fn order_view(c: &Conn, order_id: &str) -> Result<Option<Value>, DbError> {
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
        // The one reply of an order to a contact sits in the slot named by the contact.
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
    let link_via = messages
        .iter()
        .filter(|m| m["status"] == outbox::SENT)
        .find_map(|m| m["link_via"].as_str().and_then(outbox::LinkVia::parse));
    let funnel = json!({
        "paid": order["status"] == "PAID",
        "confirmation_sent": of_kind(outbox::CONFIRMATION).is_some_and(|m| m["status"] == outbox::SENT),
        "confirmation_delivered": delivered(of_kind(outbox::CONFIRMATION).map(|m| &m["delivery_status"])),
        "link_sent": link_via.is_some() || of_kind(outbox::LINK).is_some_and(|m| m["status"] == outbox::SENT),
        "link_delivered": delivered(of_kind(outbox::LINK).map(|m| &m["delivery_status"])),
        "link_opened": human > 0,
        "elder_linked": !links.is_empty(),
    });
    let paid_messages = messages
        .iter()
        .filter(|m| m["pricing"]["paid"] == true)
        .count();
    Ok(Some(json!({
        "order": order,
        "token": token,
        "funnel": funnel,
        "paid_messages": paid_messages,
        "messages": messages,
        "invite_clicks": {"human": human, "preview": preview, "last_human_click_at": rfc3339(last_click)},
        "contacts": contacts,
        "link_via": link_via.map(|v| json!({"code": v.as_str(), "line": v.line()})),
    })))
}

/// One line of an order's timeline.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: i64,
    /// A short kind for the page's icon and colour: webhook, message,
    /// error, click, preview, linked, elder (what an elder wrote).
    pub kind: &'static str,
    pub title: String,
    pub detail: Option<String>,
}

/// Everything that happened to one order, oldest first. Texts written by
/// customers or elders come back with tokens masked; escaping is the page's.
pub fn order_timeline(c: &Conn, order_id: &str) -> Result<Vec<Event>, DbError> {
    let mut events = Vec::new();
    let mut stmt = c.prepare_cached(
        "SELECT processed_at, event_type, event_id FROM webhook_events WHERE order_id = ?1",
    )?;
    for row in stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })? {
        let (at, event_type, event_id) = row?;
        events.push(Event {
            at,
            kind: "webhook",
            title: format!("Payment webhook received: {event_type}"),
            detail: event_id.map(|id| format!("event {}", mask_uuids(&id))),
        });
    }
    let mut stmt = c.prepare_cached(
        "SELECT kind, recipient, status, variant, attempts, last_error, created_at, updated_at,
                sent_at, delivery_status, delivery_error, delivery_updated_at, id, link_via,
                graph_message_id, pricing_paid, pricing_category, pricing_type
         FROM outbox WHERE order_id = ?1 ORDER BY created_at, kind",
    )?;
    for row in stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, Option<i64>>(8)?,
            r.get::<_, Option<String>>(9)?,
            r.get::<_, Option<String>>(10)?,
            r.get::<_, Option<i64>>(11)?,
            r.get::<_, String>(12)?,
            r.get::<_, Option<String>>(13)?,
            (
                r.get::<_, Option<String>>(14)?,
                r.get::<_, Option<bool>>(15)?,
                r.get::<_, Option<String>>(16)?,
                r.get::<_, Option<String>>(17)?,
            ),
        ))
    })? {
        let (
            kind,
            _recipient,
            status,
            variant,
            attempts,
            last_error,
            created_at,
            updated_at,
            sent_at,
            delivery,
            delivery_error,
            delivery_at,
            id,
            link_via,
            (graph_id, paid, category, pricing_type),
        ) = row?;
        let name = match kind.as_str() {
            outbox::CONFIRMATION => "Confirmation",
            outbox::LINK => "Link message",
            outbox::ELDER_REPLY => "Reply to the elder",
            _ => "Message",
        };
        events.push(Event {
            at: created_at,
            kind: "message",
            title: format!(
                "{name} queued{}",
                if status == outbox::WAITING {
                    " (waits for the confirmation)"
                } else {
                    ""
                }
            ),
            detail: None,
        });
        if attempts > 0 || last_error.is_some() {
            let error = last_error.as_deref().map(mask_uuids);
            if status == outbox::DEAD {
                events.push(Event {
                    at: updated_at,
                    kind: "error",
                    title: format!("{name} dead-lettered after {attempts} attempt(s)"),
                    detail: Some(format!("{} · message {id}", error.unwrap_or_default())),
                });
            } else if status != outbox::SENT || error.is_some() {
                events.push(Event {
                    at: updated_at,
                    kind: if error.is_some() { "error" } else { "message" },
                    title: format!("{name} attempted {attempts} time(s)"),
                    detail: error.map(|e| format!("last error: {e}")),
                });
            }
        }
        if status == outbox::CANCELLED {
            events.push(Event {
                at: updated_at,
                kind: "error",
                title: format!("{name} cancelled"),
                detail: last_error.as_deref().map(mask_uuids),
            });
        }
        if let Some(at) = sent_at {
            events.push(Event {
                at,
                kind: "message",
                title: if is_sandbox_id(graph_id.as_deref()) {
                    format!("{name} {SANDBOX_RECORDED}")
                } else {
                    format!("{name} accepted by WhatsApp")
                },
                detail: Some(format!("sent as {variant}, after {attempts} attempt(s)")),
            });
            if let Some(via) = link_via.as_deref().and_then(outbox::LinkVia::parse) {
                events.push(Event {
                    at,
                    kind: "message",
                    title: via.line().to_owned(),
                    detail: None,
                });
            }
        }
        if let Some(paid) = paid {
            events.push(Event {
                at: delivery_at.or(sent_at).unwrap_or(updated_at),
                kind: if paid { "paid" } else { "free" },
                title: format!("{name}: {}", price_words(paid, pricing_type.as_deref())),
                detail: category.map(|c| format!("pricing category {c}")),
            });
        }
        if let (Some(state), Some(at)) = (delivery.as_deref(), delivery_at) {
            let (title, kind) = match state {
                "delivered" => (format!("{name} delivered"), "message"),
                "read" => (format!("{name} delivered and read"), "message"),
                "failed" => (format!("{name} failed at WhatsApp"), "error"),
                other => (format!("{name}: {other}"), "message"),
            };
            events.push(Event {
                at,
                kind,
                title,
                detail: delivery_error
                    .as_deref()
                    .map(|e| format!("error: {}", mask_uuids(e))),
            });
        }
    }
    let mut stmt = c.prepare_cached(
        "SELECT clicked_at, is_preview, user_agent FROM invite_clicks WHERE order_id = ?1
         ORDER BY clicked_at LIMIT 200",
    )?;
    for row in stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, bool>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })? {
        let (at, preview, ua) = row?;
        events.push(Event {
            at,
            kind: if preview { "preview" } else { "click" },
            title: if preview {
                "Link preview fetched (not a person)".into()
            } else {
                "Link opened by a person".into()
            },
            detail: ua.map(|ua| mask_uuids(&ua)),
        });
    }
    let mut stmt = c.prepare_cached(
        "SELECT l.linked_at, c.wa_id, c.user_id, l.profile_name
         FROM contact_links l JOIN contacts c ON c.id = l.contact_id WHERE l.order_id = ?1",
    )?;
    for row in stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })? {
        let (at, wa_id, user_id, name) = row?;
        events.push(Event {
            at,
            kind: "elder",
            title: format!(
                "Elder linked: {}",
                name.unwrap_or_else(|| "(no name)".into())
            ),
            detail: Some(format!(
                "WhatsApp {}",
                contact_label(wa_id.as_deref(), user_id.as_deref())
            )),
        });
    }
    let mut stmt = c.prepare_cached(
        "SELECT received_at, profile_name, wa_id, user_id, message_type, body FROM inbound_messages
         WHERE order_id = ?1 ORDER BY received_at LIMIT 500",
    )?;
    for row in stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })? {
        let (at, name, wa_id, user_id, kind, body) = row?;
        events.push(Event {
            at,
            kind: "elder",
            title: format!(
                "{} wrote",
                name.unwrap_or_else(|| contact_label(wa_id.as_deref(), user_id.as_deref()))
            ),
            detail: Some(match body {
                Some(text) => mask_uuids(&text),
                None => format!("({kind} message)"),
            }),
        });
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}
