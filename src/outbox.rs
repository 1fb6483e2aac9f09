//! The durable outbox: plain functions on a `&Connection`. A message exists
//! here before anyone tries to send it, and its row records every outcome,
//! so a restart resumes exactly where the last process stopped.

use crate::db::DbError;
use rusqlite::{params, Connection, OptionalExtension};

pub const CONFIRMATION: &str = "confirmation";
pub const LINK: &str = "link";
pub const ELDER_REPLY: &str = "elder_reply";

pub const WAITING: &str = "waiting";
pub const QUEUED: &str = "queued";
pub const SENT: &str = "sent";
pub const DEAD: &str = "dead";
pub const CANCELLED: &str = "cancelled";

pub const VARIANT_TEXT: &str = "text";
pub const VARIANT_TEMPLATE: &str = "template";

/// A due message with everything needed to render it.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub order_id: String,
    pub kind: String,
    pub recipient: String,
    pub variant: String,
    pub attempts: u32,
    pub total_amount: i64,
    pub currency: String,
    pub note: Option<String>,
    pub token: Option<String>,
}

/// Row ids are time-ordered (UUID v7): new rows append to the end of each
/// primary-key index instead of landing on a random page, so a batch of
/// webhooks dirties (and writes to the WAL) a few pages rather than one per
/// row. Invite tokens stay random v4: they are secrets, ids are not.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// Inserts a message row; `false` when the (order, kind, slot) already has
/// one, which is how a second copy is made impossible.
#[allow(clippy::too_many_arguments)]
pub fn enqueue(
    conn: &Connection,
    order_id: &str,
    kind: &str,
    slot: &str,
    recipient: &str,
    status: &str,
    variant: &str,
    now: i64,
) -> Result<bool, DbError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                             next_attempt_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8, ?8)
         ON CONFLICT (order_id, kind, slot) DO NOTHING",
    )?;
    let n = stmt.execute(params![
        new_id(),
        order_id,
        kind,
        slot,
        recipient,
        status,
        variant,
        now
    ])?;
    Ok(n == 1)
}

/// Queued messages whose time has come, oldest first.
pub fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<Due>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, m.order_id, m.kind, m.recipient, m.variant, m.attempts,
                o.total_amount, o.currency, o.note,
                (SELECT t.token FROM whatsapp_tokens t WHERE t.order_id = m.order_id
                  ORDER BY t.created_at LIMIT 1)
         FROM outbox m JOIN orders o ON o.id = m.order_id
         WHERE m.status = 'queued' AND m.next_attempt_at <= ?1
         ORDER BY m.next_attempt_at, m.created_at
         LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![now, limit as i64], |r| {
            Ok(Due {
                id: r.get(0)?,
                order_id: r.get(1)?,
                kind: r.get(2)?,
                recipient: r.get(3)?,
                variant: r.get(4)?,
                attempts: r.get(5)?,
                total_amount: r.get(6)?,
                currency: r.get(7)?,
                note: r.get(8)?,
                token: r.get(9)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// When the next queued message falls due, if any is queued.
pub fn next_due_at(conn: &Connection) -> Result<Option<i64>, DbError> {
    let at = conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'queued'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))?;
    Ok(at)
}

/// Meta accepted the message. A confirmation releases its link message and
/// stamps the order. Guarded by `status = 'queued'` so an outcome can never
/// be recorded twice.
pub fn mark_sent(
    conn: &Connection,
    id: &str,
    message_id: &str,
    variant: &str,
    attempts: u32,
    now: i64,
) -> Result<(), DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = 'sent', graph_message_id = ?2, variant = ?3, attempts = ?4,
                    sent_at = ?5, updated_at = ?5, last_error = NULL
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, message_id, variant, attempts, now])?;
    if n == 0 {
        return Ok(());
    }
    crate::inbound::apply_pending(conn, message_id, now)?;
    let (order_id, kind): (String, String) = conn
        .prepare_cached("SELECT order_id, kind FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if kind == CONFIRMATION {
        conn.prepare_cached(
            "UPDATE orders SET last_confirmation_sent_at = ?2, updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![order_id, now])?;
        conn.prepare_cached(
            "UPDATE outbox SET status = 'queued', next_attempt_at = ?2, updated_at = ?2, last_error = NULL
             WHERE order_id = ?1 AND kind = 'link' AND status IN ('waiting', 'cancelled')",
        )?
        .execute(params![order_id, now])?;
    }
    Ok(())
}

/// A transient failure: try again at `next_at`.
pub fn mark_retry(
    conn: &Connection,
    id: &str,
    attempts: u32,
    variant: &str,
    next_at: i64,
    error: &str,
    now: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET attempts = ?2, variant = ?3, next_attempt_at = ?4, last_error = ?5,
                updated_at = ?6
         WHERE id = ?1 AND status = 'queued'",
    )?
    .execute(params![
        id,
        attempts,
        variant,
        next_at,
        truncate(error),
        now
    ])?;
    Ok(())
}

/// Failed for good. A dead confirmation cancels its link message: the
/// customer must not get a link for an order they were never told about.
pub fn mark_dead(
    conn: &Connection,
    id: &str,
    attempts: u32,
    error: &str,
    now: i64,
) -> Result<(), DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = 'dead', attempts = ?2, last_error = ?3, updated_at = ?4
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, attempts, truncate(error), now])?;
    if n == 0 {
        return Ok(());
    }
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT order_id, kind FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((order_id, kind)) = row {
        if kind == CONFIRMATION {
            conn.prepare_cached(
                "UPDATE outbox SET status = 'cancelled', last_error = 'confirmation failed', updated_at = ?2
                 WHERE order_id = ?1 AND kind = 'link' AND status = 'waiting'",
            )?
            .execute(params![order_id, now])?;
        }
    }
    Ok(())
}

fn truncate(error: &str) -> String {
    error.chars().take(1000).collect()
}

/// Counts by status, for /healthz.
pub fn depth(conn: &Connection) -> Result<(i64, i64), DbError> {
    let (queued, dead) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN status IN ('queued', 'waiting') THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0)
             FROM outbox",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((queued, dead))
}
