//! The elder's chat coming back (SPEC §9): Meta's webhook payload read
//! tolerantly into messages and statuses, then stored, attributed to an
//! order through the token, and turned into at most one reply per new link.

use crate::db::DbError;
use crate::domain::InviteToken;
use crate::outbox;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub wamid: String,
    pub wa_id: String,
    pub profile_name: Option<String>,
    pub kind: String,
    pub body: Option<String>,
    pub sent_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub message_id: String,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_title: Option<String>,
}

/// What a payload held; `skipped` lists what was not understood, for the log.
#[derive(Debug, Default)]
pub struct Parsed {
    pub messages: Vec<Inbound>,
    pub statuses: Vec<StatusUpdate>,
    pub skipped: Vec<String>,
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().map(str::to_owned)
}

/// Reads `entry[].changes[].value.{contacts,messages,statuses}`. Anything
/// else is noted in `skipped`, never an error: Meta would re-send it.
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
            let contacts = value.get("contacts").and_then(Value::as_array);
            let profile_of = |wa_id: &str| {
                contacts?
                    .iter()
                    .find(|c| c.get("wa_id").and_then(Value::as_str) == Some(wa_id))
                    .and_then(|c| text(c, &["profile", "name"]))
            };
            for m in value
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match read_message(m) {
                    Some(mut msg) => {
                        msg.profile_name = profile_of(&msg.wa_id);
                        out.messages.push(msg);
                    }
                    None => out.skipped.push("a message without id or from".into()),
                }
            }
            for s in value
                .get("statuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match (text(s, &["id"]), text(s, &["status"])) {
                    (Some(message_id), Some(status)) => {
                        let error = s.get("errors").and_then(|e| e.get(0));
                        out.statuses.push(StatusUpdate {
                            message_id,
                            status,
                            error_code: error.and_then(|e| e.get("code")).and_then(Value::as_i64),
                            error_title: error.and_then(|e| {
                                text(e, &["title"]).or_else(|| text(e, &["message"]))
                            }),
                        });
                    }
                    _ => out.skipped.push("a status without id or status".into()),
                }
            }
            if value.get("messages").is_none() && value.get("statuses").is_none() {
                out.skipped.push(format!(
                    "change {field:?} with neither messages nor statuses"
                ));
            }
        }
    }
    out
}

fn read_message(m: &Value) -> Option<Inbound> {
    let wamid = text(m, &["id"])?;
    let wa_id = text(m, &["from"])?;
    let kind = text(m, &["type"]).unwrap_or_else(|| "unknown".into());
    let body = match kind.as_str() {
        "text" => text(m, &["text", "body"]),
        "button" => text(m, &["button", "text"]),
        "interactive" => text(m, &["interactive", "button_reply", "title"])
            .or_else(|| text(m, &["interactive", "list_reply", "title"])),
        "reaction" => text(m, &["reaction", "emoji"]),
        "image" | "video" | "document" => text(m, &[kind.as_str(), "caption"]),
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
        wa_id: wa_id.chars().take(32).collect(),
        profile_name: None,
        kind: kind.chars().take(32).collect(),
        body: body.map(|b| b.chars().take(8192).collect()),
        sent_at,
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

/// Stores a message once (the wamid is unique) and attributes it; a new
/// (order, sender) link queues the elder reply when one is configured.
pub fn store_message(
    conn: &Connection,
    msg: &Inbound,
    reply_configured: bool,
    now: i64,
) -> Result<Stored, DbError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM inbound_messages WHERE wamid = ?1")?
        .query_row([&msg.wamid], |_| Ok(()))
        .optional()?
        .is_some();
    if exists {
        return Ok(Stored::Duplicate);
    }
    let mut token_hit: Option<(String, String, i64)> = None;
    if let Some(body) = &msg.body {
        for token in InviteToken::find_all(body) {
            let row = conn
                .prepare_cached(
                    "SELECT id, order_id, expires_at FROM whatsapp_tokens WHERE token = ?1",
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
        Some((token_id, _, expires_at)) if expires_at <= now => {
            ("expired_token", None, Some(token_id), Stored::ExpiredToken)
        }
        Some((token_id, order_id, _)) => {
            let new_link = conn
                .prepare_cached(
                    "INSERT INTO contact_links (id, order_id, wa_id, profile_name, token_id, linked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (order_id, wa_id) DO NOTHING",
                )?
                .execute(params![outbox::new_id(), order_id, msg.wa_id, msg.profile_name, token_id, now])?
                == 1;
            conn.prepare_cached(
                "UPDATE whatsapp_tokens SET consumed_at = ?2 WHERE id = ?1 AND consumed_at IS NULL",
            )?
            .execute(params![token_id, now])?;
            if new_link && reply_configured {
                outbox::enqueue(
                    conn,
                    &order_id,
                    outbox::ELDER_REPLY,
                    &msg.wa_id,
                    &msg.wa_id,
                    outbox::QUEUED,
                    outbox::VARIANT_TEXT,
                    now,
                )?;
            }
            let stored = Stored::Attributed {
                order_id: order_id.clone(),
                new_link,
            };
            ("token", Some(order_id), Some(token_id), stored)
        }
        None => {
            let linked: Option<String> = conn
                .prepare_cached(
                    "SELECT order_id FROM contact_links WHERE wa_id = ?1
                     ORDER BY linked_at DESC, id DESC LIMIT 1",
                )?
                .query_row([&msg.wa_id], |r| r.get(0))
                .optional()?;
            match linked {
                Some(order_id) => (
                    "linked_sender",
                    Some(order_id.clone()),
                    None,
                    Stored::Attributed {
                        order_id,
                        new_link: false,
                    },
                ),
                None => ("none", None, None, Stored::Unattributed),
            }
        }
    };
    conn.prepare_cached(
        "INSERT INTO inbound_messages (id, wamid, wa_id, profile_name, message_type, body, sent_at,
                                       received_at, attribution, order_id, token_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        outbox::new_id(),
        msg.wamid,
        msg.wa_id,
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

fn rank(status: &str) -> i32 {
    match status {
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 0,
        _ => -1,
    }
}

/// Moves a message's delivery state forward only. `failed` applies while
/// the message is not yet known delivered. Unknown ids wait in
/// `pending_statuses`.
pub fn apply_status(conn: &Connection, s: &StatusUpdate, now: i64) -> Result<bool, DbError> {
    if rank(&s.status) < 0 {
        return Ok(false);
    }
    let current: Option<Option<String>> = conn
        .prepare_cached("SELECT delivery_status FROM outbox WHERE graph_message_id = ?1")?
        .query_row([&s.message_id], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        conn.prepare_cached(
            "INSERT INTO pending_statuses (id, graph_message_id, status, error_code, error_title, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![outbox::new_id(), s.message_id, s.status, s.error_code, s.error_title, now])?;
        return Ok(false);
    };
    let current_rank = current.as_deref().map(rank).unwrap_or(-1);
    let forward = if s.status == "failed" {
        current_rank < 2 && current.as_deref() != Some("failed")
    } else {
        rank(&s.status) > current_rank
    };
    if !forward {
        return Ok(false);
    }
    let error = match (s.error_code, &s.error_title) {
        (Some(code), Some(title)) => Some(format!("{code}: {title}")),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(title)) => Some(title.clone()),
        (None, None) => None,
    };
    conn.prepare_cached(
        "UPDATE outbox SET delivery_status = ?2, delivery_error = COALESCE(?3, delivery_error),
                delivery_updated_at = ?4
         WHERE graph_message_id = ?1",
    )?
    .execute(params![s.message_id, s.status, error, now])?;
    Ok(true)
}

/// Applies statuses that arrived before their message id was recorded.
pub fn apply_pending(conn: &Connection, message_id: &str, now: i64) -> Result<(), DbError> {
    let pending: Vec<StatusUpdate> = conn
        .prepare_cached(
            "SELECT graph_message_id, status, error_code, error_title FROM pending_statuses
             WHERE graph_message_id = ?1 ORDER BY received_at",
        )?
        .query_map([message_id], |r| {
            Ok(StatusUpdate {
                message_id: r.get(0)?,
                status: r.get(1)?,
                error_code: r.get(2)?,
                error_title: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if pending.is_empty() {
        return Ok(());
    }
    for s in &pending {
        apply_status(conn, s, now)?;
    }
    conn.prepare_cached("DELETE FROM pending_statuses WHERE graph_message_id = ?1")?
        .execute([message_id])?;
    Ok(())
}

/// Statuses for ids that never turn up (messages sent by other tools on the
/// same number) are dropped after a week.
pub fn prune_pending(conn: &Connection, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM pending_statuses WHERE received_at < ?1")?
        .execute([now - 7 * 86_400_000])?;
    Ok(())
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
                {"id":"wamid.D"}
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
        assert_eq!(parsed.statuses[0].error_code, Some(131026));
        assert_eq!(
            parsed.statuses[0].error_title.as_deref(),
            Some("Message undeliverable")
        );
        assert_eq!(parsed.skipped.len(), 1);
    }

    #[test]
    fn unrelated_payloads_are_noted_not_errors() {
        assert_eq!(parse(&json!({"hello": 1})).skipped.len(), 1);
        assert_eq!(parse(&json!([1, 2])).skipped.len(), 1);
    }

    #[test]
    fn delivery_ranks_only_move_forward() {
        assert!(rank("read") > rank("delivered"));
        assert!(rank("delivered") > rank("sent"));
        assert!(rank("bogus") < 0);
    }
}
