//! One order, for `GET /admin/orders/{id}` and the order page: its summary
//! (order, token, messages, clicks, linked elders, funnel) and its timeline.

use super::chats::{contact_label, inbound_json, INBOUND_COLUMNS};
use super::format::rfc3339;
use super::messages::{is_sandbox_id, price_words, Message, MESSAGE_COLUMNS, SANDBOX_RECORDED};
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{mask_token, Money};
use crate::logging::mask_uuids;
use crate::outbox::{DeliveryState, Kind, LinkVia, Status, Variant};
use serde_json::{json, Value};

/// One order as the admin views show it.
#[derive(Debug, Clone)]
pub struct OrderView {
    /// The answer of `GET /admin/orders/{id}`, which the page shows too.
    pub json: Value,
    /// The order's messages, oldest first, states typed: the page reads
    /// where each one stands from these, not from the JSON's texts.
    pub messages: Vec<Message>,
}

impl OrderView {
    /// The order's first message of this kind, if it has one.
    pub fn message(&self, kind: Kind) -> Option<&Message> {
        self.messages.iter().find(|m| m.kind == kind)
    }
}

/// `GET /admin/orders/{id}` and the order page's summary.
pub fn order_view(c: &Conn, order_id: &str) -> Result<Option<OrderView>, DbError> {
    let order = c
        .prepare_cached(
            "SELECT id, user_id, payment_id, status, customer_phone_e164, total_amount, currency, note,
                    created_at, updated_at, last_confirmation_sent_at, order_id_source
             FROM orders WHERE id = $1",
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
        .prepare_cached("SELECT token, expires_at, consumed_at, created_at FROM whatsapp_tokens WHERE order_id = $1 ORDER BY created_at LIMIT 1")?
        .query_row([order_id], |r| {
            Ok(json!({
                "token": mask_token(&r.get::<_, String>(0)?),
                "expires_at": rfc3339(r.get(1)?),
                "consumed_at": rfc3339(r.get(2)?),
                "created_at": rfc3339(r.get(3)?),
            }))
        })
        .optional()?;
    let messages: Vec<Message> = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE order_id = $1 ORDER BY created_at, kind"
        ))?
        .query_map([order_id], Message::read)?
        .collect::<Result<_, _>>()?;
    let (human, preview, last_click): (i64, i64, Option<i64>) = c
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN is_preview THEN 0 ELSE 1 END), 0),
                    COALESCE(SUM(CASE WHEN is_preview THEN 1 ELSE 0 END), 0),
                    MAX(CASE WHEN is_preview THEN NULL ELSE clicked_at END)
             FROM invite_clicks WHERE order_id = $1",
        )?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    type Link = (String, Option<String>, Option<String>, Option<String>, i64);
    let links: Vec<Link> = c
        .prepare_cached(
            "SELECT c.id, c.wa_id, c.user_id, l.profile_name, l.linked_at
             FROM contact_links l JOIN contacts c ON c.id = l.contact_id
             WHERE l.order_id = $1 ORDER BY l.linked_at",
        )?
        .query_map([order_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut contacts = Vec::new();
    for (contact_id, wa_id, user_id, profile_name, linked_at) in &links {
        let msgs: Vec<Value> = c
            .prepare_cached(&format!(
                "SELECT {INBOUND_COLUMNS} FROM inbound_messages WHERE order_id = $1 AND contact_id = $2 ORDER BY received_at"
            ))?
            .query_map(params![order_id, contact_id], inbound_json)?
            .collect::<Result<_, _>>()?;
        // The one reply of an order to a contact sits in the slot named by the contact.
        let reply_ids: Vec<String> = c
            .prepare_cached(
                "SELECT id FROM outbox WHERE order_id = $1 AND kind = $2 AND slot = $3",
            )?
            .query_map(params![order_id, Kind::ElderReply, contact_id], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let replies: Vec<Value> = messages
            .iter()
            .filter(|m| reply_ids.contains(&m.id))
            .map(Message::json)
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
    let of_kind = |kind: Kind| messages.iter().find(|m| m.kind == kind);
    let sent = |kind: Kind| of_kind(kind).is_some_and(|m| m.status == Status::Sent);
    let delivered = |kind: Kind| of_kind(kind).is_some_and(Message::delivered);
    let link_via = messages
        .iter()
        .filter(|m| m.status == Status::Sent)
        .find_map(|m| m.link_via);
    let funnel = json!({
        "paid": order["status"] == "PAID",
        "confirmation_sent": sent(Kind::Confirmation),
        "confirmation_delivered": delivered(Kind::Confirmation),
        "link_sent": link_via.is_some() || sent(Kind::Link),
        "link_delivered": delivered(Kind::Link),
        "link_opened": human > 0,
        "elder_linked": !links.is_empty(),
    });
    let paid_messages = messages
        .iter()
        .filter(|m| m.pricing_paid == Some(true))
        .count();
    let json = json!({
        "order": order,
        "token": token,
        "funnel": funnel,
        "paid_messages": paid_messages,
        "messages": messages.iter().map(Message::json).collect::<Vec<_>>(),
        "invite_clicks": {"human": human, "preview": preview, "last_human_click_at": rfc3339(last_click)},
        "contacts": contacts,
        "link_via": link_via.map(|v| json!({"code": v.as_str(), "line": v.line()})),
    });
    Ok(Some(OrderView { json, messages }))
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
    // Pushed source by source; the sort is stable, so events at the same
    // moment keep this order.
    let mut events = webhook_events(c, order_id)?;
    for m in timeline_messages(c, order_id)? {
        message_events(&m, &mut events);
    }
    events.extend(click_events(c, order_id)?);
    events.extend(elder_link_events(c, order_id)?);
    events.extend(elder_message_events(c, order_id)?);
    events.sort_by_key(|e| e.at);
    Ok(events)
}

/// The payment webhooks recorded for the order.
fn webhook_events(c: &Conn, order_id: &str) -> Result<Vec<Event>, DbError> {
    c.prepare_cached(
        "SELECT processed_at, event_type, event_id FROM webhook_events WHERE order_id = $1",
    )?
    .query_map([order_id], |r| {
        let event_type: String = r.get(1)?;
        let event_id: Option<String> = r.get(2)?;
        Ok(Event {
            at: r.get(0)?,
            kind: "webhook",
            title: format!("Payment webhook received: {event_type}"),
            detail: event_id.map(|id| format!("event {}", mask_uuids(&id))),
        })
    })?
    .collect()
}

/// An outbox row as the timeline tells it, states typed.
struct TimelineMessage {
    id: String,
    kind: Kind,
    status: Status,
    variant: Variant,
    attempts: i64,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    sent_at: Option<i64>,
    delivery: Option<DeliveryState>,
    delivery_error: Option<String>,
    delivery_at: Option<i64>,
    link_via: Option<LinkVia>,
    graph_message_id: Option<String>,
    paid: Option<bool>,
    pricing_category: Option<String>,
    pricing_type: Option<String>,
}

fn timeline_messages(c: &Conn, order_id: &str) -> Result<Vec<TimelineMessage>, DbError> {
    c.prepare_cached(
        "SELECT kind, status, variant, attempts, last_error, created_at, updated_at,
                sent_at, delivery_status, delivery_error, delivery_updated_at, id, link_via,
                graph_message_id, pricing_paid, pricing_category, pricing_type
         FROM outbox WHERE order_id = $1 ORDER BY created_at, kind",
    )?
    .query_map([order_id], |r| {
        Ok(TimelineMessage {
            kind: r.get(0)?,
            status: r.get(1)?,
            variant: r.get(2)?,
            attempts: r.get(3)?,
            last_error: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            sent_at: r.get(7)?,
            delivery: r.get(8)?,
            delivery_error: r.get(9)?,
            delivery_at: r.get(10)?,
            id: r.get(11)?,
            link_via: r.get(12)?,
            graph_message_id: r.get(13)?,
            paid: r.get(14)?,
            pricing_category: r.get(15)?,
            pricing_type: r.get(16)?,
        })
    })?
    .collect()
}

/// One message's story: queued, attempted or dead-lettered, cancelled,
/// accepted (and which way the link went), priced, delivered or failed.
fn message_events(m: &TimelineMessage, events: &mut Vec<Event>) {
    let name = match m.kind {
        Kind::Confirmation => "Confirmation",
        Kind::Link => "Link message",
        Kind::ElderReply => "Reply to the elder",
    };
    events.push(Event {
        at: m.created_at,
        kind: "message",
        title: format!(
            "{name} queued{}",
            if m.status == Status::Waiting {
                " (waits for the confirmation)"
            } else {
                ""
            }
        ),
        detail: None,
    });
    let attempts = m.attempts;
    if attempts > 0 || m.last_error.is_some() {
        let error = m.last_error.as_deref().map(mask_uuids);
        if m.status == Status::Dead {
            events.push(Event {
                at: m.updated_at,
                kind: "error",
                title: format!("{name} dead-lettered after {attempts} attempt(s)"),
                detail: Some(format!("{} · message {}", error.unwrap_or_default(), m.id)),
            });
        } else if m.status != Status::Sent || error.is_some() {
            events.push(Event {
                at: m.updated_at,
                kind: if error.is_some() { "error" } else { "message" },
                title: format!("{name} attempted {attempts} time(s)"),
                detail: error.map(|e| format!("last error: {e}")),
            });
        }
    }
    if m.status == Status::Cancelled {
        events.push(Event {
            at: m.updated_at,
            kind: "error",
            title: format!("{name} cancelled"),
            detail: m.last_error.as_deref().map(mask_uuids),
        });
    }
    if let Some(at) = m.sent_at {
        events.push(Event {
            at,
            kind: "message",
            title: if is_sandbox_id(m.graph_message_id.as_deref()) {
                format!("{name} {SANDBOX_RECORDED}")
            } else {
                format!("{name} accepted by WhatsApp")
            },
            detail: Some(format!(
                "sent as {}, after {attempts} attempt(s)",
                m.variant
            )),
        });
        if let Some(via) = m.link_via {
            events.push(Event {
                at,
                kind: "message",
                title: via.line().to_owned(),
                detail: None,
            });
        }
    }
    if let Some(paid) = m.paid {
        events.push(Event {
            at: m.delivery_at.or(m.sent_at).unwrap_or(m.updated_at),
            kind: if paid { "paid" } else { "free" },
            title: format!("{name}: {}", price_words(paid, m.pricing_type.as_deref())),
            detail: m
                .pricing_category
                .as_ref()
                .map(|c| format!("pricing category {c}")),
        });
    }
    if let (Some(state), Some(at)) = (m.delivery, m.delivery_at) {
        let (title, kind) = match state {
            DeliveryState::Delivered => (format!("{name} delivered"), "message"),
            DeliveryState::Read => (format!("{name} delivered and read"), "message"),
            DeliveryState::Failed => (format!("{name} failed at WhatsApp"), "error"),
            DeliveryState::Sent => (format!("{name}: {state}"), "message"),
        };
        events.push(Event {
            at,
            kind,
            title,
            detail: m
                .delivery_error
                .as_deref()
                .map(|e| format!("error: {}", mask_uuids(e))),
        });
    }
}

/// Opens of the invite link, a person's apart from a link preview's.
fn click_events(c: &Conn, order_id: &str) -> Result<Vec<Event>, DbError> {
    c.prepare_cached(
        "SELECT clicked_at, is_preview, user_agent FROM invite_clicks WHERE order_id = $1
         ORDER BY clicked_at LIMIT 200",
    )?
    .query_map([order_id], |r| {
        let preview: bool = r.get(1)?;
        let ua: Option<String> = r.get(2)?;
        Ok(Event {
            at: r.get(0)?,
            kind: if preview { "preview" } else { "click" },
            title: if preview {
                "Link preview fetched (not a person)".into()
            } else {
                "Link opened by a person".into()
            },
            detail: ua.map(|ua| mask_uuids(&ua)),
        })
    })?
    .collect()
}

/// The elders linked to the order.
fn elder_link_events(c: &Conn, order_id: &str) -> Result<Vec<Event>, DbError> {
    c.prepare_cached(
        "SELECT l.linked_at, c.wa_id, c.user_id, l.profile_name
         FROM contact_links l JOIN contacts c ON c.id = l.contact_id WHERE l.order_id = $1",
    )?
    .query_map([order_id], |r| {
        let wa_id: Option<String> = r.get(1)?;
        let user_id: Option<String> = r.get(2)?;
        let name: Option<String> = r.get(3)?;
        Ok(Event {
            at: r.get(0)?,
            kind: "elder",
            title: format!(
                "Elder linked: {}",
                name.unwrap_or_else(|| "(no name)".into())
            ),
            detail: Some(format!(
                "WhatsApp {}",
                contact_label(wa_id.as_deref(), user_id.as_deref())
            )),
        })
    })?
    .collect()
}

/// What elders wrote about the order.
fn elder_message_events(c: &Conn, order_id: &str) -> Result<Vec<Event>, DbError> {
    c.prepare_cached(
        "SELECT received_at, profile_name, wa_id, user_id, message_type, body FROM inbound_messages
         WHERE order_id = $1 ORDER BY received_at LIMIT 500",
    )?
    .query_map([order_id], |r| {
        let name: Option<String> = r.get(1)?;
        let wa_id: Option<String> = r.get(2)?;
        let user_id: Option<String> = r.get(3)?;
        let kind: String = r.get(4)?;
        let body: Option<String> = r.get(5)?;
        Ok(Event {
            at: r.get(0)?,
            kind: "elder",
            title: format!(
                "{} wrote",
                name.unwrap_or_else(|| contact_label(wa_id.as_deref(), user_id.as_deref()))
            ),
            detail: Some(match body {
                Some(text) => mask_uuids(&text),
                None => format!("({kind} message)"),
            }),
        })
    })?
    .collect()
}
