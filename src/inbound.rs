//! The elder's chat coming back (SPEC §9): Meta's webhook payload read
//! tolerantly into messages, statuses and identity changes, then stored,
//! attributed to an order through the token, and turned into at most one
//! reply per new link. A sender is a contact known by its business-scoped
//! user id (BSUID), its phone number (`wa_id`), or both.
//!
//! Field names follow Meta's "Business-scoped user IDs" page and its
//! webhook references: `messages[].from` and `contacts[].wa_id` are left
//! out for a user with a username, `messages[].from_user_id` and
//! `contacts[].user_id` carry the BSUID, `statuses[].recipient_id` and
//! `statuses[].recipient_user_id` the recipient's; an identity change comes
//! as a `user_id_update` change or as a `system` message of type
//! `user_changed_number` / `user_changed_user_id`. Every one of them may be
//! missing, so each is optional here.

use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::domain::{Bsuid, InviteToken};
use crate::outbox::{
    self, text_enum, DeliveryState, Kind, Pricing, Recipient, Status, StatusUpdate, Variant,
};
use serde_json::Value;

/// Who wrote: at least one of the two is known.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sender {
    pub wa_id: Option<String>,
    pub user_id: Option<Bsuid>,
}

impl Sender {
    fn is_empty(&self) -> bool {
        self.wa_id.is_none() && self.user_id.is_none()
    }
}

impl std::fmt::Display for Sender {
    /// Masked, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.user_id, &self.wa_id) {
            (Some(id), Some(wa)) => write!(f, "{id} / {}", crate::domain::mask_digits(wa)),
            (Some(id), None) => write!(f, "{id}"),
            (None, Some(wa)) => f.write_str(&crate::domain::mask_digits(wa)),
            (None, None) => f.write_str("nobody"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub wamid: String,
    pub sender: Sender,
    pub profile_name: Option<String>,
    pub kind: String,
    pub body: Option<String>,
    pub sent_at: Option<i64>,
}

/// Meta reports that a user's number or BSUID changed: the links of the
/// contact known as `old` carry over to `new`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityChange {
    pub old: Sender,
    pub new: Sender,
    pub source: &'static str,
}

/// What a payload held; `skipped` lists what was not understood, for the log.
#[derive(Debug, Default)]
pub struct Parsed {
    pub identity_changes: Vec<IdentityChange>,
    pub messages: Vec<Inbound>,
    pub statuses: Vec<StatusUpdate>,
    pub skipped: Vec<String>,
}

text_enum! {
    /// How an inbound message was tied to an order.
    Attribution {
        Token = "token",
        ExpiredToken = "expired_token",
        LinkedSender = "linked_sender",
        Unattributed = "none",
    }
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().map(str::to_owned)
}

fn wa_id_at(v: &Value, path: &[&str]) -> Option<String> {
    text(v, path)
        .map(|w| {
            w.trim()
                .trim_start_matches('+')
                .chars()
                .take(32)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
}

/// A BSUID where Meta puts one; a value that is not one is ignored (and
/// noted), never stored as an identity.
fn bsuid_at(v: &Value, path: &[&str], skipped: &mut Vec<String>) -> Option<Bsuid> {
    let raw = text(v, path)?;
    match Bsuid::parse(&raw) {
        Ok(id) => Some(id),
        Err(e) => {
            skipped.push(format!("{}: {e}", path.join(".")));
            None
        }
    }
}

/// Reads `entry[].changes[].value.{contacts,messages,statuses,user_id_update}`.
/// Anything else is noted in `skipped`, never an error: Meta would re-send it.
pub fn parse(payload: &Value) -> Parsed {
    let mut out = Parsed::default();
    let Some(entries) = payload.get("entry").and_then(Value::as_array) else {
        out.skipped.push("payload has no entry[]".into());
        return out;
    };
    for entry in entries {
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            out.skipped.push("entry without changes[]".into());
            continue;
        };
        for change in changes {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let Some(value) = change.get("value") else {
                out.skipped.push(format!("change {field:?} without value"));
                continue;
            };
            let contacts: Vec<&Value> = value
                .get("contacts")
                .and_then(Value::as_array)
                .map(|c| c.iter().collect())
                .unwrap_or_default();
            let mut understood = false;
            for m in value
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                understood = true;
                match read_message(m, &contacts, &mut out) {
                    Some(msg) => out.messages.push(msg),
                    None => out
                        .skipped
                        .push("a message without id, or without from and from_user_id".into()),
                }
            }
            for s in value
                .get("statuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                understood = true;
                match read_status(s) {
                    Ok(status) => out.statuses.push(status),
                    Err(why) => out.skipped.push(why),
                }
            }
            let updates: Vec<&Value> = match value.get("user_id_update") {
                Some(Value::Array(list)) => list.iter().collect(),
                Some(one @ Value::Object(_)) => vec![one],
                _ if field == "user_id_update" => vec![value],
                _ => Vec::new(),
            };
            for u in updates {
                understood = true;
                match read_user_id_update(u, &mut out.skipped) {
                    Some(change) => out.identity_changes.push(change),
                    None => out
                        .skipped
                        .push("a user_id_update without a previous and a current user id".into()),
                }
            }
            // Template health and value-level errors have their own reader
            // (crate::template_health).
            let elsewhere =
                crate::template_health::FIELDS.contains(&field) || value.get("errors").is_some();
            if !understood && !elsewhere {
                out.skipped.push(format!(
                    "change {field:?} with neither messages, statuses nor user_id_update"
                ));
            }
        }
    }
    out
}

/// `user_id: {previous, current}` (also accepted: `previous_user_id` with
/// `user_id` as the current one), with the user's `wa_id` when Meta may
/// share it.
fn read_user_id_update(u: &Value, skipped: &mut Vec<String>) -> Option<IdentityChange> {
    let (previous, current) = match u.get("user_id") {
        Some(Value::Object(_)) => (
            bsuid_at(u, &["user_id", "previous"], skipped),
            bsuid_at(u, &["user_id", "current"], skipped),
        ),
        _ => (
            bsuid_at(u, &["previous_user_id"], skipped),
            bsuid_at(u, &["user_id"], skipped),
        ),
    };
    let (previous, current) = (previous?, current?);
    let wa_id = wa_id_at(u, &["wa_id"]);
    Some(IdentityChange {
        old: Sender {
            wa_id: wa_id.clone(),
            user_id: Some(previous),
        },
        new: Sender {
            wa_id,
            user_id: Some(current),
        },
        source: "user_id_update",
    })
}

fn read_status(s: &Value) -> Result<StatusUpdate, String> {
    let (Some(message_id), Some(status)) = (text(s, &["id"]), text(s, &["status"])) else {
        return Err("a status without id or status".into());
    };
    let Some(state) = DeliveryState::parse(&status) else {
        return Err(format!("a status {status:?} that is not a delivery state"));
    };
    let error = s.get("errors").and_then(|e| e.get(0));
    let pricing = s.get("pricing").map(|p| Pricing {
        billable: p.get("billable").and_then(Value::as_bool),
        category: text(p, &["category"]).map(|c| c.chars().take(32).collect()),
        pricing_type: text(p, &["type"]).map(|t| t.chars().take(32).collect()),
    });
    Ok(StatusUpdate {
        message_id,
        state,
        error_code: error.and_then(|e| e.get("code")).and_then(Value::as_i64),
        error_title: error.and_then(|e| text(e, &["title"]).or_else(|| text(e, &["message"]))),
        pricing,
    })
}

fn read_message(m: &Value, contacts: &[&Value], out: &mut Parsed) -> Option<Inbound> {
    let wamid = text(m, &["id"])?;
    let from = wa_id_at(m, &["from"]);
    let from_user_id = bsuid_at(m, &["from_user_id"], &mut out.skipped);
    // The `contacts[]` entry of this sender: by number, by BSUID, or the
    // only one there is.
    let contact = contacts
        .iter()
        .find(|c| from.is_some() && wa_id_at(c, &["wa_id"]) == from)
        .or_else(|| {
            let id = from_user_id.as_ref()?.as_str();
            contacts
                .iter()
                .find(|c| text(c, &["user_id"]).as_deref() == Some(id))
        })
        .or_else(|| (contacts.len() == 1).then(|| &contacts[0]));
    let mut sender = Sender {
        wa_id: from.or_else(|| contact.and_then(|c| wa_id_at(c, &["wa_id"]))),
        user_id: from_user_id
            .or_else(|| contact.and_then(|c| bsuid_at(c, &["user_id"], &mut out.skipped))),
    };
    let kind = text(m, &["type"]).unwrap_or_else(|| "unknown".into());
    if kind == "system" {
        if let Some(change) = read_system_change(m, &sender, &mut out.skipped) {
            // The notice itself belongs to the user as they are now.
            sender = change.new.clone();
            out.identity_changes.push(change);
        }
    }
    if sender.is_empty() {
        return None;
    }
    let body = match kind.as_str() {
        "text" => text(m, &["text", "body"]),
        "button" => text(m, &["button", "text"]),
        "interactive" => text(m, &["interactive", "button_reply", "title"])
            .or_else(|| text(m, &["interactive", "list_reply", "title"])),
        "reaction" => text(m, &["reaction", "emoji"]),
        "image" | "video" | "document" => text(m, &[kind.as_str(), "caption"]),
        "system" => text(m, &["system", "body"]),
        "location" => {
            let loc = m.get("location");
            let lat = loc.and_then(|l| l.get("latitude")).and_then(Value::as_f64);
            let lon = loc.and_then(|l| l.get("longitude")).and_then(Value::as_f64);
            match (lat, lon) {
                (Some(lat), Some(lon)) => Some(format!("{lat},{lon}")),
                _ => None,
            }
        }
        _ => None,
    };
    let sent_at = text(m, &["timestamp"])
        .and_then(|t| t.parse::<i64>().ok())
        .map(|s| s.saturating_mul(1000));
    Some(Inbound {
        wamid,
        sender,
        profile_name: contact.and_then(|c| text(c, &["profile", "name"])),
        kind: kind.chars().take(32).collect(),
        body: body.map(|b| b.chars().take(8192).collect()),
        sent_at,
    })
}

/// `system.type` `user_changed_number`: the message comes from the old
/// number, `system.wa_id` is the new one, `system.user_id` the new BSUID
/// and `system.previous_user_id` the old one, when given.
/// `user_changed_user_id`: only the BSUID changed.
fn read_system_change(
    m: &Value,
    sender: &Sender,
    skipped: &mut Vec<String>,
) -> Option<IdentityChange> {
    let kind = text(m, &["system", "type"])?;
    let previous_user_id = bsuid_at(m, &["system", "previous_user_id"], skipped);
    let new_user_id = bsuid_at(m, &["system", "user_id"], skipped);
    let old = Sender {
        wa_id: sender.wa_id.clone(),
        user_id: previous_user_id.or_else(|| sender.user_id.clone()),
    };
    let new = match kind.as_str() {
        "user_changed_number" | "customer_changed_number" => Sender {
            wa_id: wa_id_at(m, &["system", "wa_id"])
                .or_else(|| wa_id_at(m, &["system", "new_wa_id"])),
            user_id: new_user_id,
        },
        "user_changed_user_id" => Sender {
            wa_id: sender.wa_id.clone(),
            user_id: new_user_id,
        },
        _ => return None,
    };
    if old.is_empty() || new.is_empty() || old == new {
        skipped.push(format!(
            "a system message {kind:?} without an old and a new identity"
        ));
        return None;
    }
    Some(IdentityChange {
        old,
        new,
        source: "system message",
    })
}

/// What storing one message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Duplicate,
    Unattributed,
    ExpiredToken,
    Attributed { order_id: String, new_link: bool },
}

/// A new contact's id: 32 characters, so it fits the outbox's slot column.
fn new_contact_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

fn contact_by(conn: &Conn, column: &str, value: &str) -> Result<Option<String>, DbError> {
    let sql = match column {
        "user_id" => "SELECT id FROM contacts WHERE user_id = $1",
        _ => "SELECT id FROM contacts WHERE wa_id = $1",
    };
    conn.prepare_cached(sql)?
        .query_row([value], |r| r.get(0))
        .optional()
}

/// The contact a sender is: found by BSUID first, then by number.
fn find_contact(conn: &Conn, who: &Sender) -> Result<Option<String>, DbError> {
    if let Some(id) = &who.user_id {
        if let Some(found) = contact_by(conn, "user_id", id.as_str())? {
            return Ok(Some(found));
        }
    }
    match &who.wa_id {
        Some(wa_id) => contact_by(conn, "wa_id", wa_id),
        None => Ok(None),
    }
}

/// Moves everything of contact `from` to contact `into` and deletes `from`:
/// its links (an order linked to both stays linked once), its messages and
/// its elder-reply slots (so a merged contact is not replied to twice).
fn merge_contacts(conn: &Conn, from: &str, into: &str) -> Result<usize, DbError> {
    let moved = conn
        .prepare_cached(
            "UPDATE contact_links SET contact_id = $2
             WHERE contact_id = $1
               AND order_id NOT IN (SELECT order_id FROM contact_links WHERE contact_id = $2)",
        )?
        .execute(params![from, into])?;
    conn.prepare_cached("DELETE FROM contact_links WHERE contact_id = $1")?
        .execute([from])?;
    conn.prepare_cached("UPDATE inbound_messages SET contact_id = $2 WHERE contact_id = $1")?
        .execute(params![from, into])?;
    outbox::move_reply_slots(conn, from, into)?;
    conn.prepare_cached("DELETE FROM contacts WHERE id = $1")?
        .execute([from])?;
    Ok(moved)
}

/// Gives contact `id` the identifiers of `who` that are known (the newest
/// wins), taking them from any other contact that held them.
fn set_identity(conn: &Conn, id: &str, who: &Sender, now: i64) -> Result<(), DbError> {
    if let Some(user_id) = &who.user_id {
        conn.prepare_cached("UPDATE contacts SET user_id = NULL WHERE user_id = $1 AND id <> $2")?
            .execute(params![user_id, id])?;
    }
    if let Some(wa_id) = &who.wa_id {
        conn.prepare_cached("UPDATE contacts SET wa_id = NULL WHERE wa_id = $1 AND id <> $2")?
            .execute(params![wa_id, id])?;
    }
    conn.prepare_cached(
        "UPDATE contacts SET user_id = COALESCE($2, user_id), wa_id = COALESCE($3, wa_id),
                updated_at = $4
         WHERE id = $1",
    )?
    .execute(params![id, who.user_id, who.wa_id, now])?;
    Ok(())
}

/// The contact who wrote, created or completed: once a message carries
/// both a BSUID and a number, the contact holds both, and two contacts
/// that turn out to be one person become one.
fn resolve_contact(
    conn: &Conn,
    who: &Sender,
    profile_name: Option<&str>,
    now: i64,
) -> Result<String, DbError> {
    let by_user = match &who.user_id {
        Some(id) => contact_by(conn, "user_id", id.as_str())?,
        None => None,
    };
    let by_number = match &who.wa_id {
        Some(wa_id) => contact_by(conn, "wa_id", wa_id)?,
        None => None,
    };
    let id = match (by_user, by_number) {
        (Some(a), Some(b)) if a != b => {
            merge_contacts(conn, &b, &a)?;
            a
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => {
            let id = new_contact_id();
            conn.prepare_cached(
                "INSERT INTO contacts (id, wa_id, user_id, profile_name, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )?
            .execute(params![id, who.wa_id, who.user_id, profile_name, now])?;
            return Ok(id);
        }
    };
    set_identity(conn, &id, who, now)?;
    if let Some(name) = profile_name {
        conn.prepare_cached("UPDATE contacts SET profile_name = $2 WHERE id = $1")?
            .execute(params![id, name])?;
    }
    Ok(id)
}

/// What an identity change did.
#[derive(Debug, Clone, PartialEq)]
pub enum Carried {
    /// No contact was known by the old identity: nothing to carry.
    UnknownContact,
    /// The contact now answers to the new identity, with this many links
    /// to orders.
    Links(usize),
}

/// Carries a contact's links over to its new identity. When the new
/// identity already has a contact of its own (the user wrote from the new
/// number before Meta's notice arrived), the two become one.
pub fn apply_identity_change(
    conn: &Conn,
    change: &IdentityChange,
    now: i64,
) -> Result<Carried, DbError> {
    let Some(old) = find_contact(conn, &change.old)? else {
        return Ok(Carried::UnknownContact);
    };
    let target = match find_contact(conn, &change.new)? {
        Some(existing) if existing != old => {
            merge_contacts(conn, &old, &existing)?;
            existing
        }
        _ => old,
    };
    set_identity(conn, &target, &change.new, now)?;
    let links = conn
        .prepare_cached("SELECT COUNT(*) FROM contact_links WHERE contact_id = $1")?
        .query_row([&target], |r| r.get::<_, i64>(0))?;
    Ok(Carried::Links(links as usize))
}

/// Stores a message once (the wamid is unique) and attributes it; a new
/// (order, contact) link queues the elder reply when one is configured.
pub fn store_message(
    conn: &Conn,
    msg: &Inbound,
    reply_configured: bool,
    now: i64,
) -> Result<Stored, DbError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM inbound_messages WHERE wamid = $1")?
        .query_row([&msg.wamid], |_| Ok(()))
        .optional()?
        .is_some();
    if exists {
        return Ok(Stored::Duplicate);
    }
    let contact_id = resolve_contact(conn, &msg.sender, msg.profile_name.as_deref(), now)?;
    let mut token_hit: Option<(String, String, i64)> = None;
    if let Some(body) = &msg.body {
        for token in InviteToken::find_all(body) {
            let row = conn
                .prepare_cached(
                    "SELECT id, order_id, expires_at FROM whatsapp_tokens WHERE token = $1",
                )?
                .query_row([token.as_string()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if row.is_some() {
                token_hit = row;
                break;
            }
        }
    }
    let (attribution, order_id, token_id, stored) = match token_hit {
        Some((token_id, _, expires_at)) if expires_at <= now => (
            Attribution::ExpiredToken,
            None,
            Some(token_id),
            Stored::ExpiredToken,
        ),
        Some((token_id, order_id, _)) => {
            let new_link = conn
                .prepare_cached(
                    "INSERT INTO contact_links (id, order_id, contact_id, profile_name, token_id, linked_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (order_id, contact_id) DO NOTHING",
                )?
                .execute(params![crate::ids::new_id(), order_id, contact_id, msg.profile_name, token_id, now])?
                == 1;
            conn.prepare_cached(
                "UPDATE whatsapp_tokens SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL",
            )?
            .execute(params![token_id, now])?;
            if new_link && reply_configured {
                let recipient = reply_recipient(conn, &contact_id)?;
                outbox::enqueue(
                    conn,
                    &order_id,
                    Kind::ElderReply,
                    &contact_id,
                    &recipient,
                    Status::Queued,
                    Variant::Text,
                    now,
                )?;
            }
            let stored = Stored::Attributed {
                order_id: order_id.clone(),
                new_link,
            };
            (Attribution::Token, Some(order_id), Some(token_id), stored)
        }
        None => {
            let linked: Option<String> = conn
                .prepare_cached(
                    "SELECT order_id FROM contact_links WHERE contact_id = $1
                     ORDER BY linked_at DESC, id DESC LIMIT 1",
                )?
                .query_row([&contact_id], |r| r.get(0))
                .optional()?;
            match linked {
                Some(order_id) => (
                    Attribution::LinkedSender,
                    Some(order_id.clone()),
                    None,
                    Stored::Attributed {
                        order_id,
                        new_link: false,
                    },
                ),
                None => (Attribution::Unattributed, None, None, Stored::Unattributed),
            }
        }
    };
    conn.prepare_cached(
        "INSERT INTO inbound_messages (id, wamid, contact_id, wa_id, user_id, profile_name,
                                       message_type, body, sent_at, received_at, attribution,
                                       order_id, token_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )?
    .execute(params![
        crate::ids::new_id(),
        msg.wamid,
        contact_id,
        msg.sender.wa_id,
        msg.sender.user_id,
        msg.profile_name,
        msg.kind,
        msg.body,
        msg.sent_at,
        now,
        attribution,
        order_id,
        token_id
    ])?;
    Ok(stored)
}

/// The elder's number when known, else their BSUID (SPEC §9).
fn reply_recipient(conn: &Conn, contact_id: &str) -> Result<Recipient, DbError> {
    let (wa_id, user_id): (Option<String>, Option<Bsuid>) = conn
        .prepare_cached("SELECT wa_id, user_id FROM contacts WHERE id = $1")?
        .query_row([contact_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(match (wa_id, user_id) {
        (Some(digits), _) => Recipient::Phone(digits),
        (None, Some(id)) => Recipient::User(id),
        // A contact is only ever created with one of the two.
        (None, None) => Recipient::Phone(String::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn meta_payload_shapes_are_read() {
        let payload = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp",
            "contacts":[{"profile":{"name":"Asha"},"wa_id":"919811111111"}],
            "messages":[
                {"from":"919811111111","id":"wamid.A","timestamp":"1764150000","type":"text","text":{"body":"hello"}},
                {"from":"919811111111","id":"wamid.B","timestamp":"1764150001","type":"reaction","reaction":{"message_id":"wamid.X","emoji":"👍"}},
                {"from":"919811111111","id":"wamid.C","timestamp":"1764150002","type":"image","image":{"id":"m1","mime_type":"image/jpeg"}},
                {"from":"919811111111","type":"text","text":{"body":"no id"}}
            ],
            "statuses":[{"id":"wamid.S","status":"failed","timestamp":"1","recipient_id":"1","errors":[{"code":131026,"title":"Message undeliverable"}]}]
        }}]}]});
        let parsed = parse(&payload);
        assert_eq!(parsed.messages.len(), 3);
        assert_eq!(parsed.messages[0].profile_name.as_deref(), Some("Asha"));
        assert_eq!(parsed.messages[0].sent_at, Some(1_764_150_000_000));
        assert_eq!(parsed.messages[1].body.as_deref(), Some("👍"));
        assert_eq!(parsed.messages[2].kind, "image");
        assert_eq!(parsed.messages[2].body, None);
        assert_eq!(parsed.statuses[0].state, DeliveryState::Failed);
        assert_eq!(parsed.statuses[0].error_code, Some(131026));
        assert_eq!(
            parsed.statuses[0].error_title.as_deref(),
            Some("Message undeliverable")
        );
        assert_eq!(parsed.skipped.len(), 1);
    }

    #[test]
    fn a_username_only_sender_is_read_by_bsuid() {
        // Shape of Meta's "Business-scoped user IDs" page, incoming messages:
        // no `from` and no `contacts[].wa_id` for a user with a username;
        // `from_user_id` and `contacts[].user_id` carry the BSUID.
        let payload = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp",
            "contacts":[{"profile":{"name":"Asha","username":"@asha"},"user_id":"IN.1648738043044942"}],
            "messages":[{"from_user_id":"IN.1648738043044942","id":"wamid.U","timestamp":"1764150000","type":"text","text":{"body":"hi"}}],
            "statuses":[{"id":"wamid.S","status":"delivered","timestamp":"1","recipient_user_id":"IN.1648738043044942",
                         "pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}}]
        }}]}]});
        let parsed = parse(&payload);
        let sender = &parsed.messages[0].sender;
        assert_eq!(sender.wa_id, None);
        assert_eq!(
            sender.user_id.as_ref().unwrap().as_str(),
            "IN.1648738043044942"
        );
        assert_eq!(parsed.messages[0].profile_name.as_deref(), Some("Asha"));
        assert_eq!(
            parsed.statuses[0].pricing,
            Some(Pricing {
                billable: Some(true),
                category: Some("utility".into()),
                pricing_type: Some("regular".into()),
            })
        );
        assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
    }

    #[test]
    fn identity_changes_are_read_from_both_of_metas_notices() {
        let update = json!({"entry":[{"changes":[{"field":"user_id_update","value":{
            "messaging_product":"whatsapp",
            "user_id_update":[{"wa_id":"919811111111","detail":"Business-scoped User ID (BSUID) has been updated",
                "user_id":{"previous":"IN.1648738043044942","current":"IN.9990001112223334"},"timestamp":"1764150000"}]
        }}]}]});
        let parsed = parse(&update);
        assert_eq!(parsed.identity_changes.len(), 1, "{:?}", parsed.skipped);
        let change = &parsed.identity_changes[0];
        assert_eq!(
            change.old.user_id.as_ref().unwrap().as_str(),
            "IN.1648738043044942"
        );
        assert_eq!(
            change.new.user_id.as_ref().unwrap().as_str(),
            "IN.9990001112223334"
        );

        // Meta's system messages webhook reference, user_changed_number.
        let system = json!({"entry":[{"changes":[{"field":"messages","value":{
            "messaging_product":"whatsapp",
            "messages":[{"from":"16505551234","id":"wamid.SYS","timestamp":"1739321024","type":"system",
                "system":{"body":"User Sheena Nelson changed from 16505551234 to 12195555358","wa_id":"12195555358","type":"user_changed_number"}}]
        }}]}]});
        let parsed = parse(&system);
        let change = &parsed.identity_changes[0];
        assert_eq!(change.old.wa_id.as_deref(), Some("16505551234"));
        assert_eq!(change.new.wa_id.as_deref(), Some("12195555358"));
        assert_eq!(
            parsed.messages[0].sender.wa_id.as_deref(),
            Some("12195555358")
        );

        // Meta's changelog, 2026-08-11: `user_changed_user_id`, with
        // `system.previous_user_id` beside the new `system.user_id`.
        let bsuid_only = json!({"entry":[{"changes":[{"field":"messages","value":{
            "messages":[{"from_user_id":"IN.9990001112223334","id":"wamid.SYS2","timestamp":"1739321024","type":"system",
                "system":{"body":"User changed","user_id":"IN.9990001112223334","previous_user_id":"IN.1648738043044942","type":"user_changed_user_id"}}]
        }}]}]});
        let parsed = parse(&bsuid_only);
        let change = &parsed.identity_changes[0];
        assert_eq!(
            change.old.user_id.as_ref().unwrap().as_str(),
            "IN.1648738043044942"
        );
        assert_eq!(
            change.new.user_id.as_ref().unwrap().as_str(),
            "IN.9990001112223334"
        );
        assert_eq!(change.new.wa_id, None);
    }

    #[test]
    fn a_malformed_bsuid_is_noted_and_not_taken_as_an_identity() {
        let payload = json!({"entry":[{"changes":[{"field":"messages","value":{
            "messages":[{"from_user_id":"not a bsuid","id":"wamid.X","type":"text","text":{"body":"x"}}]
        }}]}]});
        let parsed = parse(&payload);
        assert!(parsed.messages.is_empty());
        assert_eq!(parsed.skipped.len(), 2, "{:?}", parsed.skipped);
    }

    #[test]
    fn unrelated_payloads_are_noted_not_errors() {
        assert_eq!(parse(&json!({"hello": 1})).skipped.len(), 1);
        assert_eq!(parse(&json!([1, 2])).skipped.len(), 1);
    }

    mod embedded {
        refinery::embed_migrations!("migrations");
    }

    #[test]
    fn migration_v4_moves_contacts_links_and_messages_of_a_v3_database_without_loss() {
        // Arrange: a database built with V1–V3 holding an order, a linked
        // elder with two messages, a stranger, and the elder's reply.
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::db::open_writer(&dir.path().join("v3.db")).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(3))
            .run(&mut conn)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO orders (id, status, customer_phone_e164, total_amount, currency, created_at, updated_at)
               VALUES ('ORD-1', 'PAID', '919876543210', 100, 'INR', 1, 1);
             INSERT INTO whatsapp_tokens (id, order_id, token, expires_at, consumed_at, created_at)
               VALUES ('t1', 'ORD-1', '0b0e3c1e-7b6d-4c55-9a4a-2b9f1f0c9d11', 9999999999999, 5, 1);
             INSERT INTO contact_links (id, order_id, wa_id, profile_name, token_id, linked_at)
               VALUES ('l1', 'ORD-1', '919811111111', 'Asha', 't1', 5);
             INSERT INTO inbound_messages (id, wamid, wa_id, profile_name, message_type, body, sent_at,
                                           received_at, attribution, order_id, token_id)
               VALUES ('m1', 'wamid.1', '919811111111', 'Asha', 'text', 'token text', 4, 5, 'token', 'ORD-1', 't1'),
                      ('m2', 'wamid.2', '919811111111', 'Asha', 'text', 'thanks', 6, 7, 'linked_sender', 'ORD-1', NULL),
                      ('m3', 'wamid.3', '447700900123', 'Sam', 'text', 'hello?', 8, 9, 'none', NULL, NULL);
             INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                                 next_attempt_at, created_at, updated_at)
               VALUES ('r1', 'ORD-1', 'elder_reply', '919811111111', '919811111111', 'sent', 'text', 1, 5, 5, 5);",
        )
        .unwrap();

        // Act
        crate::db::migrate(&mut conn).unwrap();
        let conn = crate::db::Conn::from(conn);

        // Assert: every row is still there, tied to its contact.
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM contacts"), 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM contacts WHERE id = '919811111111' AND wa_id = '919811111111' AND user_id IS NULL AND profile_name = 'Asha'"),
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM contact_links WHERE contact_id = '919811111111' AND order_id = 'ORD-1' AND token_id = 't1' AND linked_at = 5"),
            1
        );
        assert_eq!(count("SELECT COUNT(*) FROM inbound_messages"), 3);
        assert_eq!(
            count("SELECT COUNT(*) FROM inbound_messages WHERE contact_id = wa_id AND user_id IS NULL"),
            3
        );
        let attribution: Attribution = conn
            .query_row(
                "SELECT attribution FROM inbound_messages WHERE wamid = 'wamid.3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(attribution, Attribution::Unattributed);

        // And the migrated elder, now also known by BSUID, keeps the order
        // and is not replied to a second time.
        let msg = Inbound {
            wamid: "wamid.4".into(),
            sender: Sender {
                wa_id: Some("919811111111".into()),
                user_id: Some(Bsuid::parse("IN.1648738043044942").unwrap()),
            },
            profile_name: Some("Asha".into()),
            kind: "text".into(),
            body: Some("again: 0b0e3c1e-7b6d-4c55-9a4a-2b9f1f0c9d11".into()),
            sent_at: None,
        };
        let stored = store_message(&conn, &msg, true, 10).unwrap();
        assert_eq!(
            stored,
            Stored::Attributed {
                order_id: "ORD-1".into(),
                new_link: false
            }
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM outbox WHERE kind = 'elder_reply'"),
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM contacts WHERE id = '919811111111' AND user_id = 'IN.1648738043044942'"),
            1
        );
    }
}
