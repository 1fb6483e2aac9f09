//! The elders' side of the admin views: who wrote (a contact, named by its
//! number or its business-scoped user id), the orders linked to them, and
//! the latest inbound messages.

use super::format::{masked_text, rfc3339};
use crate::db::sql::{Conn, OptionalExtension};
use crate::db::DbError;
use crate::logging::mask_uuids;
use serde_json::{json, Value};

pub(super) fn inbound_json(r: &crate::db::sql::Row<'_>) -> Result<Value, DbError> {
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

pub(super) const INBOUND_COLUMNS: &str =
    "wamid, wa_id, user_id, profile_name, message_type, body, sent_at, received_at, attribution, order_id";

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
        .prepare_cached("SELECT id, wa_id, user_id FROM contacts WHERE user_id = $1 OR wa_id = $1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((contact_id, wa_id, user_id)) = found else {
        return Ok(None);
    };
    let orders: Vec<Value> = c
        .prepare_cached(
            "SELECT l.order_id, l.profile_name, l.linked_at, o.status FROM contact_links l
             JOIN orders o ON o.id = l.order_id WHERE l.contact_id = $1 ORDER BY l.linked_at DESC",
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
            "SELECT {INBOUND_COLUMNS} FROM inbound_messages WHERE contact_id = $1 ORDER BY received_at"
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
         WHERE order_id IS NULL ORDER BY received_at DESC LIMIT $1"
    } else {
        "SELECT received_at, wa_id, user_id, profile_name, message_type, body, order_id FROM inbound_messages
         ORDER BY received_at DESC LIMIT $1"
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
