//! The one read path of the admin views (SPEC §10, §12): the JSON API and the
//! merchant's page both call these queries, so what the page shows and what
//! the API answers cannot drift apart. Plain functions on a `&Connection`;
//! tokens are masked here, before any caller sees a row.

use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{mask_token, Money};
use crate::error::AppError;
use crate::logging::mask_uuids;
use crate::outbox;
use serde_json::{json, Value};

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
    text.map(|t| Value::String(mask_uuids(&t)))
        .unwrap_or(Value::Null)
}

fn message_json(r: &crate::db::sql::Row<'_>) -> Result<Value, DbError> {
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
        // While `sending`: when the claim runs out and the row is due again.
        "lease_until": rfc3339(r.get("lease_until")?),
        // Which way the link went and why (on the row that carried it).
        "link_via": r.get::<_, Option<String>>("link_via")?,
        // What Meta's statuses said it cost (SPEC §9); `paid` is null until one says.
        "pricing": {
            "category": r.get::<_, Option<String>>("pricing_category")?,
            "type": r.get::<_, Option<String>>("pricing_type")?,
            "billable": r.get::<_, Option<bool>>("pricing_billable")?,
            "paid": r.get::<_, Option<bool>>("pricing_paid")?,
        },
        // SPEC §5: an unsure message keeps its status (`queued`, or `dead`
        // once it may not go again) and says until when it waits for
        // Meta's status; `last_error` says why.
        "unsure_until": match r.get::<_, String>("status")?.as_str() {
            crate::outbox::SENT => Value::Null,
            _ => rfc3339(r.get("unsure_until")?),
        },
    }))
}

const MESSAGE_COLUMNS: &str =
    "id, order_id, kind, recipient, recipient_user_id, status, variant, attempts, next_attempt_at,
     last_error, graph_message_id, sent_at, delivery_status, delivery_error, delivery_updated_at,
     lease_until, link_via, pricing_category, pricing_type, pricing_billable, pricing_paid,
     unsure_until";

fn inbound_json(r: &crate::db::sql::Row<'_>) -> Result<Value, DbError> {
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

/// A contact of the admin views: its ids, the orders linked to it, and its
/// messages.
pub struct ContactView {
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub orders: Vec<Value>,
    pub messages: Vec<Value>,
}

/// `GET /admin/contacts/{id}`: a sender known by its phone number (`wa_id`)
/// or its business-scoped user id is found by either.
pub fn contact_view(c: &Conn, id: &str) -> Result<Option<ContactView>, DbError> {
    let found: Option<(String, Option<String>, Option<String>)> = c
        .prepare_cached("SELECT id, wa_id, user_id FROM contacts WHERE user_id = ?1 OR wa_id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((contact_id, wa_id, user_id)) = found else {
        return Ok(None);
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
    Ok(Some(ContactView {
        wa_id,
        user_id,
        orders,
        messages,
    }))
}

/// How the merchant's page names a contact: its number, else its
/// business-scoped user id (a username-only elder has no number).
pub fn contact_label(wa_id: Option<&str>, user_id: Option<&str>) -> String {
    match (wa_id, user_id) {
        (Some(number), _) => format!("+{number}"),
        (None, Some(user)) => user.to_owned(),
        (None, None) => "(unknown sender)".to_owned(),
    }
}

/// The statuses `GET /admin/messages?status=` accepts: every status a row
/// can hold, `sending` included, so messages in flight (claimed by a sender
/// until their lease ends) are visible too.
pub const LISTABLE_STATUSES: [&str; 6] = [
    outbox::DEAD,
    outbox::QUEUED,
    outbox::WAITING,
    outbox::SENDING,
    outbox::SENT,
    outbox::CANCELLED,
];

/// Messages in one outbox status, most recently changed first (dead letters).
pub fn messages_with_status(c: &Conn, status: &str) -> Result<Vec<Value>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE status = ?1 ORDER BY updated_at DESC LIMIT 500"
    ))?
    .query_map([status], message_json)?
    .collect::<Result<_, _>>()
}

/// How far along the funnel of SPEC §12 an order got, in funnel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Paid,
    ConfirmationSent,
    ConfirmationDelivered,
    LinkSent,
    LinkDelivered,
    LinkOpened,
    ElderLinked,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Paid,
        Stage::ConfirmationSent,
        Stage::ConfirmationDelivered,
        Stage::LinkSent,
        Stage::LinkDelivered,
        Stage::LinkOpened,
        Stage::ElderLinked,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Stage::Paid => "paid",
            Stage::ConfirmationSent => "confirmation_sent",
            Stage::ConfirmationDelivered => "confirmation_delivered",
            Stage::LinkSent => "link_sent",
            Stage::LinkDelivered => "link_delivered",
            Stage::LinkOpened => "link_opened",
            Stage::ElderLinked => "elder_linked",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Paid => "Paid",
            Stage::ConfirmationSent => "Confirmation sent",
            Stage::ConfirmationDelivered => "Confirmation delivered",
            Stage::LinkSent => "Link sent",
            Stage::LinkDelivered => "Link delivered",
            Stage::LinkOpened => "Link opened",
            Stage::ElderLinked => "Elder linked",
        }
    }

    /// 1-based position, for the page's step counter.
    pub fn step(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }
}

/// Where one step of an order stands. A step whose message was dead-lettered,
/// cancelled or failed at WhatsApp is `Failed`, never `Done`, whatever later
/// steps reached (an elder can link through a link forwarded another way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Done,
    Failed,
    Todo,
}

/// Each step of SPEC §12's funnel for one order, in `Stage::ALL` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub steps: [StepState; 7],
}

impl Progress {
    /// The furthest step done.
    pub fn stage(&self) -> Stage {
        Stage::ALL
            .iter()
            .zip(self.steps)
            .filter(|(_, s)| *s == StepState::Done)
            .map(|(stage, _)| *stage)
            .next_back()
            .unwrap_or(Stage::Paid)
    }

    /// The first step that failed: where the order stopped.
    pub fn stopped(&self) -> Option<Stage> {
        Stage::ALL
            .iter()
            .zip(self.steps)
            .find(|(_, s)| *s == StepState::Failed)
            .map(|(stage, _)| *stage)
    }

    /// Where the order stands, in words a merchant reads at a glance.
    pub fn words(&self) -> String {
        let reached = self.stage();
        if let Some(stop) = self.stopped() {
            let why = match stop {
                Stage::ConfirmationSent => "the confirmation was not sent",
                Stage::ConfirmationDelivered => "WhatsApp could not deliver the confirmation",
                Stage::LinkSent => "the link message was not sent",
                Stage::LinkDelivered => "WhatsApp could not deliver the link message",
                // Only messages fail; the other steps are done or not yet.
                _ => "a step failed",
            };
            return if reached > stop {
                format!("Stopped: {why} (later: {})", reached.label().to_lowercase())
            } else {
                format!("Stopped: {why}")
            };
        }
        match reached {
            Stage::Paid => "Paid · confirmation not sent yet",
            Stage::ConfirmationSent => "Confirmation sent · not delivered yet",
            Stage::ConfirmationDelivered => "Confirmation delivered · link not sent yet",
            Stage::LinkSent => "Link sent · not delivered yet",
            Stage::LinkDelivered => "Link delivered · not opened yet",
            Stage::LinkOpened => "Link opened · no elder has written yet",
            Stage::ElderLinked => "Done: elder linked",
        }
        .to_owned()
    }
}

/// Each step's state, from what the outbox (status, delivery status of the
/// confirmation and of the link) and the click and contact tables hold.
pub fn progress_of(
    confirmation: (Option<&str>, Option<&str>),
    link: (Option<&str>, Option<&str>),
    opened: bool,
    linked: bool,
) -> Progress {
    let sent = |status: Option<&str>| match status {
        Some(outbox::SENT) => StepState::Done,
        Some(outbox::DEAD | outbox::CANCELLED) => StepState::Failed,
        _ => StepState::Todo,
    };
    let delivered = |delivery: Option<&str>| match delivery {
        Some("delivered" | "read") => StepState::Done,
        Some("failed") => StepState::Failed,
        _ => StepState::Todo,
    };
    let done = |yes: bool| {
        if yes {
            StepState::Done
        } else {
            StepState::Todo
        }
    };
    Progress {
        steps: [
            StepState::Done,
            sent(confirmation.0),
            delivered(confirmation.1),
            sent(link.0),
            delivered(link.1),
            done(opened),
            done(linked),
        ],
    }
}

/// The furthest stage reached, from what the outbox and the click and
/// contact tables hold for one order.
pub fn stage_of(
    confirmation: (Option<&str>, Option<&str>),
    link: (Option<&str>, Option<&str>),
    opened: bool,
    linked: bool,
) -> Stage {
    let delivered = |d: Option<&str>| matches!(d, Some("delivered" | "read"));
    let sent = |s: Option<&str>| s == Some(outbox::SENT);
    if linked {
        Stage::ElderLinked
    } else if opened {
        Stage::LinkOpened
    } else if delivered(link.1) {
        Stage::LinkDelivered
    } else if sent(link.0) {
        Stage::LinkSent
    } else if delivered(confirmation.1) {
        Stage::ConfirmationDelivered
    } else if sent(confirmation.0) {
        Stage::ConfirmationSent
    } else {
        Stage::Paid
    }
}

/// One row of the orders list.
#[derive(Debug, Clone)]
pub struct OrderRow {
    pub id: String,
    pub status: String,
    pub phone_e164: Option<String>,
    pub amount: String,
    pub created_at: i64,
    pub stage: Stage,
    /// Each step, failed ones apart from done ones.
    pub progress: Progress,
    /// A message of the order is dead-lettered or was refused by WhatsApp.
    pub trouble: Option<String>,
}

impl OrderRow {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "status": self.status,
            "customer_phone": self.phone_e164.as_ref().map(|p| format!("+{p}")),
            "amount": self.amount,
            "created_at": rfc3339(Some(self.created_at)),
            "stage": self.stage.code(),
            "stopped_at": self.progress.stopped().map(Stage::code),
            "stage_words": self.progress.words(),
            "trouble": self.trouble,
        })
    }
}

pub const ORDERS_DEFAULT_LIMIT: usize = 25;
pub const ORDERS_MAX_LIMIT: usize = 200;

/// A page of the orders list: newest first, keyset-paginated by the last
/// order shown (`before`), optionally filtered.
#[derive(Debug, Clone, Default)]
pub struct OrdersQuery {
    pub limit: usize,
    pub before: Option<String>,
    /// An order id (or its beginning), or the last digits of a phone number.
    pub search: Option<String>,
}

pub struct OrdersPage {
    pub rows: Vec<OrderRow>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next_before: Option<String>,
}

/// The digits of a search that can be the end of a phone number: 3 to 15
/// digits, spaces, dashes and a leading `+` allowed.
fn phone_tail(q: &str) -> Option<String> {
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let only_phone_chars = q
        .chars()
        .all(|ch| ch.is_ascii_digit() || matches!(ch, ' ' | '-' | '+' | '(' | ')'));
    (only_phone_chars && (3..=15).contains(&digits.len())).then_some(digits)
}

pub fn orders_list(c: &Conn, q: &OrdersQuery) -> Result<Result<OrdersPage, AppError>, DbError> {
    let cursor: Option<(i64, String)> = match &q.before {
        None => None,
        Some(id) => {
            let at = c
                .prepare_cached("SELECT created_at FROM orders WHERE id = ?1")?
                .query_row([id], |r| r.get::<_, i64>(0))
                .optional()?;
            match at {
                Some(at) => Some((at, id.clone())),
                None => {
                    return Ok(Err(AppError::InvalidPayload(format!(
                        "before: no order {id}"
                    ))))
                }
            }
        }
    };
    let search = q.search.as_deref().map(str::trim).filter(|s| !s.is_empty());
    // An id prefix as a range on the primary key (no LIKE escaping, and the
    // index answers it); a phone tail as a suffix match.
    let id_lo = search.map(str::to_owned);
    let id_hi = search.map(|s| format!("{s}\u{10FFFF}"));
    let phone_like = search.and_then(phone_tail).map(|d| format!("%{d}"));
    let limit = q.limit.clamp(1, ORDERS_MAX_LIMIT);
    // Only the conditions in use are in the statement, so that SQLite can
    // seek: the keyset as a row value on (created_at, id), an id prefix as a
    // range of the primary key. A phone tail cannot use an index; it is
    // checked on the covering index orders_created (V6), never the table.
    let mut conditions = Vec::new();
    let mut args: Vec<(&str, &dyn crate::db::sql::Param)> = Vec::new();
    if let Some((at, id)) = &cursor {
        conditions.push("(o.created_at, o.id) < (:before_at, :before_id)");
        args.push((":before_at", at));
        args.push((":before_id", id));
    }
    match (&id_lo, &id_hi, &phone_like) {
        (Some(lo), Some(hi), None) => {
            conditions.push("o.id >= :lo AND o.id < :hi");
            args.push((":lo", lo));
            args.push((":hi", hi));
        }
        (Some(lo), Some(hi), Some(like)) => {
            conditions.push("((o.id >= :lo AND o.id < :hi) OR o.customer_phone_e164 LIKE :like)");
            args.push((":lo", lo));
            args.push((":hi", hi));
            args.push((":like", like));
        }
        _ => {}
    }
    let fetch = (limit + 1) as i64;
    args.push((":limit", &fetch));
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT o.id, o.status, o.customer_phone_e164, o.total_amount, o.currency, o.created_at,
                (SELECT m.status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'confirmation' AND m.slot = ''),
                (SELECT m.delivery_status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'confirmation' AND m.slot = ''),
                (SELECT m.status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'link' AND m.slot = ''),
                (SELECT m.delivery_status FROM outbox m WHERE m.order_id = o.id AND m.kind = 'link' AND m.slot = ''),
                EXISTS (SELECT 1 FROM invite_clicks k WHERE k.order_id = o.id AND NOT k.is_preview),
                EXISTS (SELECT 1 FROM contact_links l WHERE l.order_id = o.id),
                (SELECT MIN(m.kind) FROM outbox m WHERE m.order_id = o.id
                   AND (m.status = 'dead' OR m.delivery_status = 'failed'))
         FROM orders o
         {filter}
         ORDER BY o.created_at DESC, o.id DESC
         LIMIT :limit"
    ))?;
    let mut rows: Vec<OrderRow> = stmt
        .query_map(args.as_slice(), |r| {
            let amount: i64 = r.get(3)?;
            let currency: String = r.get(4)?;
            let conf_status: Option<String> = r.get(6)?;
            let conf_delivery: Option<String> = r.get(7)?;
            let link_status: Option<String> = r.get(8)?;
            let link_delivery: Option<String> = r.get(9)?;
            let trouble: Option<String> = r.get(12)?;
            let progress = progress_of(
                (conf_status.as_deref(), conf_delivery.as_deref()),
                (link_status.as_deref(), link_delivery.as_deref()),
                r.get(10)?,
                r.get(11)?,
            );
            Ok(OrderRow {
                id: r.get(0)?,
                status: r.get(1)?,
                phone_e164: r.get(2)?,
                amount: Money::new(amount, &currency)
                    .map(|m| m.display())
                    .unwrap_or_else(|_| format!("{currency} {amount}")),
                created_at: r.get(5)?,
                stage: stage_of(
                    (conf_status.as_deref(), conf_delivery.as_deref()),
                    (link_status.as_deref(), link_delivery.as_deref()),
                    r.get(10)?,
                    r.get(11)?,
                ),
                progress,
                trouble: trouble.map(|kind| format!("{kind} failed")),
            })
        })?
        .collect::<Result<_, _>>()?;
    let next_before = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Ok(OrdersPage { rows, next_before }))
}

/// The funnel's five numbers over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Funnel {
    pub paid: i64,
    pub confirmation_delivered: i64,
    pub link_delivered: i64,
    pub link_opened: i64,
    pub elder_linked: i64,
}

impl Funnel {
    pub fn steps(&self) -> [(&'static str, i64); 5] {
        [
            ("Paid", self.paid),
            ("Confirmation delivered", self.confirmation_delivered),
            ("Link delivered", self.link_delivered),
            ("Link opened by a person", self.link_opened),
            ("Elder linked", self.elder_linked),
        ]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: i64,
    pub waiting: i64,
    pub dead: i64,
}

pub fn queue_depth(c: &Conn) -> Result<QueueDepth, DbError> {
    let mut depth = QueueDepth::default();
    let mut stmt = c.prepare_cached(
        "SELECT status, COUNT(*) FROM outbox WHERE status IN ('queued', 'sending', 'waiting', 'dead') GROUP BY status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        match status.as_str() {
            // A claimed row is still on its way out.
            outbox::QUEUED | outbox::SENDING => depth.queued += n,
            outbox::WAITING => depth.waiting = n,
            _ => depth.dead = n,
        }
    }
    Ok(depth)
}

/// Everything the overview shows, for the windows starting at each `since`.
#[derive(Debug, Clone)]
pub struct Overview {
    pub windows: Vec<(&'static str, Funnel)>,
    pub queue: QueueDepth,
    /// Paid messages (SPEC §9: pricing type `regular`, or billable without
    /// a type) by category, each with its count per window (same order as
    /// `windows`).
    pub costs: Vec<(String, Vec<i64>)>,
}

/// Paid messages queued on each day: `days` are the days' starts, oldest
/// first (midnights in the merchant's zone); the last day runs to now. One
/// range scan of the `outbox_paid` index (V12).
pub fn paid_per_day(c: &Conn, days: &[i64]) -> Result<Vec<i64>, DbError> {
    let Some(first) = days.first() else {
        return Ok(Vec::new());
    };
    let n = days.len();
    let args: Vec<i64> = days.iter().copied().chain([*first]).collect();
    // Messages since each day's start; a day is its count less the next's.
    let since: Vec<i64> = c
        .prepare_cached(&format!(
            "SELECT {} FROM outbox WHERE pricing_paid = TRUE AND created_at >= ?{}",
            per_window("created_at", n, None),
            n + 1
        ))?
        .query_row(crate::db::sql::params_from_iter(args.iter()), |r| {
            (0..n).map(|i| r.get(i)).collect()
        })?;
    Ok((0..n)
        .map(|i| since[i] - since.get(i + 1).copied().unwrap_or(0))
        .collect())
}

/// One count per window, `?1`…`?n` being the windows' starts: a single scan
/// of the widest window (`?n+1`) counts them all.
fn per_window(column: &str, n: usize, distinct: Option<&str>) -> String {
    (1..=n)
        .map(|i| match distinct {
            None => format!("COALESCE(SUM(CASE WHEN {column} >= ?{i} THEN 1 ELSE 0 END), 0)"),
            Some(d) => format!("COUNT(DISTINCT CASE WHEN {column} >= ?{i} THEN {d} END)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The funnel and the paid messages for windows `[since, now]`. Each
/// step is counted where it happened: orders by payment time, their messages
/// by the time they were queued (in the payment's own transaction, so the
/// same cohort), link opens and linked elders by their own time; paid
/// messages (migration V12's column, filled from Meta's statuses) by the
/// time they were queued. Five index range scans of V6's indexes, one per
/// table and step, each over the widest window: the cost follows the
/// month's traffic, not the database's size.
pub fn overview(c: &Conn, windows: &[(&'static str, i64)]) -> Result<Overview, DbError> {
    let n = windows.len();
    let widest = windows.iter().map(|w| w.1).min().unwrap_or(0);
    let args: Vec<i64> = windows.iter().map(|w| w.1).chain([widest]).collect();
    let args = crate::db::sql::params_from_iter(args.iter());
    let counts = |r: &crate::db::sql::Row<'_>, from: usize| -> Result<Vec<i64>, DbError> {
        (from..from + n).map(|i| r.get(i)).collect()
    };
    let w = n + 1;
    let paid = c
        .prepare_cached(&format!(
            "SELECT {} FROM orders WHERE created_at >= ?{w}",
            per_window("created_at", n, None)
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let mut delivered: Vec<(String, Vec<i64>)> = c
        .prepare_cached(&format!(
            "SELECT kind, {} FROM outbox WHERE kind IN ('confirmation', 'link') AND created_at >= ?{w}
               AND delivery_status IN ('delivered', 'read') GROUP BY kind",
            per_window("created_at", n, None)
        ))?
        .query_map(args.clone(), |r| Ok((r.get(0)?, counts(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delivered_of = |kind: &str| {
        delivered
            .iter_mut()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_else(|| vec![0; n])
    };
    let confirmation = delivered_of(outbox::CONFIRMATION);
    let link = delivered_of(outbox::LINK);
    let opened = c
        .prepare_cached(&format!(
            "SELECT {} FROM invite_clicks WHERE clicked_at >= ?{w} AND NOT is_preview",
            per_window("clicked_at", n, Some("order_id"))
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let linked = c
        .prepare_cached(&format!(
            "SELECT {} FROM contact_links WHERE linked_at >= ?{w}",
            per_window("linked_at", n, Some("order_id"))
        ))?
        .query_row(args.clone(), |r| counts(r, 0))?;
    let costs: Vec<(String, Vec<i64>)> = c
        .prepare_cached(&format!(
            "SELECT COALESCE(pricing_category, 'unknown'), {} FROM outbox
             WHERE pricing_paid = TRUE AND created_at >= ?{w}
             GROUP BY COALESCE(pricing_category, 'unknown') ORDER BY 1",
            per_window("created_at", n, None)
        ))?
        .query_map(args, |r| Ok((r.get(0)?, counts(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    let funnels = windows
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            (
                *name,
                Funnel {
                    paid: paid[i],
                    confirmation_delivered: confirmation[i],
                    link_delivered: link[i],
                    link_opened: opened[i],
                    elder_linked: linked[i],
                },
            )
        })
        .collect();
    Ok(Overview {
        windows: funnels,
        queue: queue_depth(c)?,
        // A category billed in no window of the page is left out.
        costs: costs
            .into_iter()
            .filter(|(_, v)| v.iter().any(|n| *n > 0))
            .collect(),
    })
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

/// What sandbox mode does instead of sending (SPEC §3): the message is
/// recorded with a `sandbox-` id and never reaches WhatsApp.
pub const SANDBOX_RECORDED: &str = "recorded (sandbox, not sent)";

/// Whether a message was recorded by sandbox mode rather than sent.
pub fn is_sandbox_id(graph_message_id: Option<&str>) -> bool {
    graph_message_id.is_some_and(|id| id.starts_with("sandbox-"))
}

/// A message's price in words, from `pricing_paid` and Meta's `pricing.type`.
pub fn price_words(paid: bool, pricing_type: Option<&str>) -> String {
    match (paid, pricing_type) {
        (true, _) => "paid message".into(),
        (false, Some("free_customer_service")) => {
            "free (inside the customer's 24-hour window)".into()
        }
        (false, Some("free_entry_point")) => {
            "free (entry point: 72 hours after an ad or a Page button)".into()
        }
        (false, Some(other)) => format!("free ({other})"),
        (false, None) => "free (not billable)".into(),
    }
}

/// One inbound message for the elder chats list.
#[derive(Debug, Clone)]
pub struct Chat {
    pub received_at: i64,
    /// The sender as the page names it: number, else business-scoped user id.
    pub sender: String,
    pub profile_name: Option<String>,
    pub message_type: String,
    pub text: Option<String>,
    pub order_id: Option<String>,
}

/// The latest inbound messages, newest first: all of them, or only those
/// attributed to no order.
pub fn latest_chats(c: &Conn, unattributed_only: bool, limit: usize) -> Result<Vec<Chat>, DbError> {
    let sql = if unattributed_only {
        "SELECT received_at, wa_id, user_id, profile_name, message_type, body, order_id FROM inbound_messages
         WHERE order_id IS NULL ORDER BY received_at DESC LIMIT ?1"
    } else {
        "SELECT received_at, wa_id, user_id, profile_name, message_type, body, order_id FROM inbound_messages
         ORDER BY received_at DESC LIMIT ?1"
    };
    c.prepare_cached(sql)?
        .query_map([limit as i64], |r| {
            Ok(Chat {
                received_at: r.get(0)?,
                sender: contact_label(
                    r.get::<_, Option<String>>(1)?.as_deref(),
                    r.get::<_, Option<String>>(2)?.as_deref(),
                ),
                profile_name: r.get(3)?,
                message_type: r.get(4)?,
                text: r.get::<_, Option<String>>(5)?.map(|t| mask_uuids(&t)),
                order_id: r.get(6)?,
            })
        })?
        .collect::<Result<_, _>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_is_the_furthest_step_reached() {
        assert_eq!(
            stage_of((None, None), (None, None), false, false),
            Stage::Paid
        );
        assert_eq!(
            stage_of(
                (Some("sent"), Some("read")),
                (Some("waiting"), None),
                false,
                false
            ),
            Stage::ConfirmationDelivered
        );
        assert_eq!(
            stage_of(
                (Some("sent"), None),
                (Some("sent"), Some("delivered")),
                false,
                false
            ),
            Stage::LinkDelivered
        );
        // An elder can be linked through a forwarded link whose delivery
        // status never arrived: the furthest step wins.
        assert_eq!(
            stage_of((Some("dead"), None), (None, None), false, true),
            Stage::ElderLinked
        );
    }

    #[test]
    fn a_failed_or_dead_step_is_never_done_and_the_words_say_where_it_stopped() {
        // The link failed at WhatsApp, yet an elder linked (a link forwarded
        // some other way): the link's delivery is failed, not done.
        let p = progress_of(
            (Some("sent"), Some("delivered")),
            (Some("sent"), Some("failed")),
            false,
            true,
        );
        assert_eq!(p.steps[4], StepState::Failed);
        assert_eq!(p.stopped(), Some(Stage::LinkDelivered));
        assert_eq!(
            p.words(),
            "Stopped: WhatsApp could not deliver the link message (later: elder linked)"
        );
        // A dead confirmation: nothing after it is done.
        let p = progress_of((Some("dead"), None), (Some("waiting"), None), false, false);
        assert_eq!(
            p.steps,
            [
                StepState::Done,
                StepState::Failed,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo,
                StepState::Todo
            ]
        );
        assert_eq!(p.words(), "Stopped: the confirmation was not sent");
        assert_eq!(p.stage(), Stage::Paid);
        // No failure: the furthest step and what comes next.
        let p = progress_of(
            (Some("sent"), Some("read")),
            (Some("sent"), Some("delivered")),
            false,
            false,
        );
        assert_eq!(p.stopped(), None);
        assert_eq!(p.words(), "Link delivered · not opened yet");
        let p = progress_of((Some("sent"), None), (Some("sent"), None), true, true);
        assert_eq!(p.words(), "Done: elder linked");
    }

    #[test]
    fn a_price_reads_paid_or_why_it_was_free() {
        assert_eq!(price_words(true, Some("regular")), "paid message");
        assert!(price_words(false, Some("free_customer_service")).contains("24-hour window"));
        assert!(price_words(false, Some("free_entry_point")).contains("entry point"));
        assert!(is_sandbox_id(Some("sandbox-0195")));
        assert!(!is_sandbox_id(Some("wamid.HBg")));
    }

    #[test]
    fn a_phone_tail_is_three_to_fifteen_digits() {
        assert_eq!(phone_tail("3210").as_deref(), Some("3210"));
        assert_eq!(
            phone_tail("+91 98765-43210").as_deref(),
            Some("919876543210")
        );
        assert_eq!(phone_tail("12"), None);
        assert_eq!(phone_tail("ORD-1042"), None);
    }
}
