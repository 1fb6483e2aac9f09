//! Unsure messages (SPEC §5): a send whose answer was lost — a timeout after
//! the request was written, a connection broken before the answer, a 2xx
//! naming no message id, a sender that stopped before recording (its claim's
//! lease ran out) — may have been accepted by Meta. Sending it again at once
//! would be a second copy; instead the row waits until `unsure_until` for a
//! status webhook that proves Meta took it: one whose
//! `biz_opaque_callback_data` names the row's order, whose recipient is the
//! row's, and whose message id we do not know yet. Such a status records the
//! row as sent with that id. Only a wait that passes without one lets the row
//! be sent again.
//!
//! A proof may come before the send is known to be unsure (while it is in
//! flight, or before a dead sender's lease ran out), so every such status is
//! kept in `unsure_proofs` until a message of its order and recipient is sent
//! (then it belonged to that message) or turns unsure (then it proves it).
//! An order's link waits for its confirmation, so at most one message of an
//! order to one recipient is in flight or unsure at a time: the proofs kept
//! for an order and recipient can only belong to that one message.
//!
//! Every step here runs under the order's key lock, so a proof arriving on
//! one PostgreSQL connection and the send turning unsure on another cannot
//! miss each other (each sees the other's committed write).

use super::follow_up::{after_sent, cancel_link_of_dead};
use super::row::{truncate, Kind, Status};
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use serde_json::Value;

/// A status that names an order: evidence that Meta accepted a message of
/// that order to that recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    pub message_id: String,
    pub order_id: String,
    pub recipient_id: Option<String>,
    pub recipient_user_id: Option<String>,
    /// The status's own `timestamp` (Meta's, seconds), in milliseconds.
    pub reported_at: Option<i64>,
}

/// A status older than the unsure send (by more than Meta's one-second
/// timestamp granularity and some clock skew) is about an earlier message.
const SKEW_MS: i64 = 2_000;

impl Proof {
    /// The lock `record_proof` takes first.
    pub fn lock(&self) -> String {
        order_lock(&self.order_id)
    }

    /// The statuses of a webhook payload that can prove a send: those with
    /// an id, a `biz_opaque_callback_data` and a recipient. Field names:
    /// Meta's "Status messages" webhook reference (`statuses[].id`,
    /// `recipient_id`, `recipient_user_id`, `biz_opaque_callback_data`,
    /// `timestamp`).
    pub fn read_all(payload: &Value) -> Vec<Proof> {
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let statuses = payload
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("changes").and_then(Value::as_array))
            .flatten()
            .filter_map(|c| c.pointer("/value/statuses").and_then(Value::as_array))
            .flatten();
        statuses
            .filter_map(|s| {
                let recipient_id = text(s, "recipient_id")
                    .map(|r| r.trim_start_matches('+').to_owned())
                    .filter(|r| r.bytes().all(|b| b.is_ascii_digit()) && !r.is_empty());
                let recipient_user_id = text(s, "recipient_user_id");
                if recipient_id.is_none() && recipient_user_id.is_none() {
                    return None;
                }
                Some(Proof {
                    message_id: text(s, "id")?,
                    order_id: text(s, "biz_opaque_callback_data")?,
                    recipient_id,
                    recipient_user_id,
                    reported_at: text(s, "timestamp")
                        .and_then(|t| t.parse::<i64>().ok())
                        .map(|secs| secs.saturating_mul(1000)),
                })
            })
            .collect()
    }
}

/// Which message a proof recorded as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Proven {
    pub order_id: String,
    pub kind: Kind,
    pub message_id: String,
}

/// The lock (`Conn::lock_key`) that makes an order's unsure sends and the
/// proofs naming it take turns.
fn order_lock(order_id: &str) -> String {
    format!("unsure:{order_id}")
}

fn lock_order(conn: &Conn, order_id: &str) -> Result<(), DbError> {
    conn.lock_key(&order_lock(order_id))
}

fn is_known(conn: &Conn, message_id: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM outbox WHERE graph_message_id = $1")?
        .query_row([message_id], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// A status arrived: if its message id is one of ours it proves nothing
/// else; otherwise it is kept, and proves the order's unsure message, if
/// one is waiting.
pub fn record_proof(conn: &Conn, proof: &Proof, now: i64) -> Result<Option<Proven>, DbError> {
    lock_order(conn, &proof.order_id)?;
    if is_known(conn, &proof.message_id)? {
        return Ok(None);
    }
    conn.prepare_cached(
        "INSERT INTO unsure_proofs (graph_message_id, order_id, recipient, recipient_user_id,
                                    reported_at, received_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (graph_message_id) DO NOTHING",
    )?
    .execute(params![
        proof.message_id,
        proof.order_id,
        proof.recipient_id.as_deref().unwrap_or(""),
        proof.recipient_user_id,
        proof.reported_at,
        now
    ])?;
    let unsure: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM outbox
             WHERE order_id = $1 AND unsure_until IS NOT NULL AND status IN ($2, $3, $4)",
        )?
        .query_map(
            params![
                proof.order_id,
                Status::Queued,
                Status::Sending,
                Status::Dead
            ],
            |r| r.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for id in unsure {
        if let Some(proven) = settle(conn, &id, now)? {
            return Ok(Some(proven));
        }
    }
    Ok(None)
}

/// The row `id` is unsure: records it sent if a kept proof matches it.
fn settle(conn: &Conn, id: &str, now: i64) -> Result<Option<Proven>, DbError> {
    let found: Option<String> = conn
        .prepare_cached(
            "SELECT p.graph_message_id FROM unsure_proofs p, outbox o
             WHERE o.id = $1 AND p.order_id = o.order_id
               AND ((o.recipient <> '' AND p.recipient = o.recipient)
                    OR (o.recipient_user_id IS NOT NULL AND p.recipient_user_id = o.recipient_user_id))
               AND (o.unsure_since IS NULL OR p.reported_at IS NULL
                    OR p.reported_at >= o.unsure_since - $2)
               AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.graph_message_id = p.graph_message_id)
             ORDER BY p.received_at, p.graph_message_id LIMIT 1",
        )?
        .query_row(params![id, SKEW_MS], |r| r.get(0))
        .optional()?;
    match found {
        Some(message_id) => prove(conn, id, &message_id, now),
        None => Ok(None),
    }
}

/// Records the unsure row `id` as sent with `message_id`.
fn prove(conn: &Conn, id: &str, message_id: &str, now: i64) -> Result<Option<Proven>, DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $3, graph_message_id = $2, sent_at = $4, updated_at = $4,
                    last_error = NULL, unsure_until = NULL, claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND unsure_until IS NOT NULL AND status IN ($5, $6, $7)",
        )?
        .execute(params![
            id,
            message_id,
            Status::Sent,
            now,
            Status::Queued,
            Status::Sending,
            Status::Dead
        ])?;
    if n == 0 {
        return Ok(None);
    }
    conn.prepare_cached("DELETE FROM unsure_proofs WHERE graph_message_id = $1")?
        .execute([message_id])?;
    after_sent(conn, id, message_id, now)?;
    let (order_id, kind) = conn
        .prepare_cached("SELECT order_id, kind FROM outbox WHERE id = $1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Some(Proven {
        order_id,
        kind,
        message_id: message_id.to_owned(),
    }))
}

/// A sender's answer came after its claim was gone (its lease ran out and
/// the row was made unsure): the answer is itself the proof.
pub fn prove_row(conn: &Conn, id: &str, message_id: &str, now: i64) -> Result<(), DbError> {
    if is_known(conn, message_id)? {
        return Ok(());
    }
    prove(conn, id, message_id, now).map(drop)
}

/// The claim `claim` sent the row and lost the answer: it waits until
/// `until` for a proof (one kept already settles it at once). With
/// `give_up` (its attempts are spent) it is dead-lettered instead of
/// waiting to go again, and a late proof still records it sent. So is a
/// row that was unsure before: this send was its one second copy (SPEC
/// §5), and a third is never sent.
#[allow(clippy::too_many_arguments)]
pub fn mark_unsure(
    conn: &Conn,
    id: &str,
    order_id: &str,
    claim: &str,
    attempts: u32,
    until: i64,
    since: i64,
    error: &str,
    give_up: bool,
    now: i64,
) -> Result<Option<Proven>, DbError> {
    lock_order(conn, order_id)?;
    let before: Option<Option<i64>> = conn
        .prepare_cached("SELECT unsure_until FROM outbox WHERE id = $1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let again = matches!(before, Some(Some(_)));
    let give_up = give_up || again;
    let error = if again {
        format!("{error}; this was its second copy after an earlier lost answer, so it is not sent a third time (a status from WhatsApp naming the order still records it as sent)")
    } else {
        error.to_owned()
    };
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $2, attempts = $3, next_attempt_at = $4, unsure_until = $4,
                    unsure_since = $5, last_error = $6, updated_at = $7,
                    claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND status = $8 AND claimed_by = $9",
        )?
        .execute(params![
            id,
            if give_up {
                Status::Dead
            } else {
                Status::Queued
            },
            attempts,
            until,
            since,
            truncate(&error),
            now,
            Status::Sending,
            claim
        ])?;
    if n == 0 {
        return Ok(None);
    }
    let proven = settle(conn, id, now)?;
    if give_up && proven.is_none() {
        cancel_link_of_dead(conn, id, now)?;
    }
    Ok(proven)
}

/// What `lapse` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Lapsed {
    pub order_id: String,
    pub kind: Kind,
    pub proven: Option<String>,
    /// It had been unsure before: dead-lettered, never sent a third time.
    pub gave_up: bool,
}

/// Rows whose claim's lease ran out: their sender stopped (a crash, a lost
/// database, a shutdown past its bound) maybe after sending. Unsure, not
/// due: each waits `wait_ms` for a proof. `lease_ms` is a claim's length,
/// so `lease_until - lease_ms` is when the send could have started. A row
/// that was unsure before may have gone twice already: dead-lettered (a
/// proof still records it sent).
pub fn lapse(conn: &Conn, now: i64, wait_ms: i64, lease_ms: i64) -> Result<Vec<Lapsed>, DbError> {
    let rows: Vec<(String, String, Kind, Status)> = conn
        .prepare_cached(
            "UPDATE outbox SET
                    status = CASE WHEN unsure_until IS NULL THEN $2 ELSE $6 END,
                    last_error = CASE WHEN unsure_until IS NULL
                        THEN 'unsure: its sender stopped before recording the answer (a crash, a lost database or a lease that ran out)'
                        ELSE 'unsure again: its sender stopped before recording the answer of its second copy, so it is not sent a third time (a status from WhatsApp naming the order still records it as sent)' END,
                    next_attempt_at = $3, unsure_until = $3,
                    unsure_since = lease_until - $4, updated_at = $1,
                    claimed_by = NULL, lease_until = NULL
             WHERE status = $5 AND lease_until <= $1
             RETURNING id, order_id, kind, status",
        )?
        .query_map(
            params![
                now,
                Status::Queued,
                now + wait_ms,
                lease_ms,
                Status::Sending,
                Status::Dead
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, Status>(3)?)),
        )?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, order_id, kind, status) in rows {
        lock_order(conn, &order_id)?;
        let proven = settle(conn, &id, now)?.map(|p| p.message_id);
        let gave_up = status == Status::Dead && proven.is_none();
        if gave_up {
            cancel_link_of_dead(conn, &id, now)?;
        }
        out.push(Lapsed {
            order_id,
            kind,
            proven,
            gave_up,
        });
    }
    Ok(out)
}

/// Proofs for messages that never turn unsure (sent by other tools, or
/// whose send was recorded) are dropped after a week.
pub fn prune(conn: &Conn, now: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM unsure_proofs WHERE received_at < $1")?
        .execute([now - 7 * 86_400_000])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_naming_an_order_and_a_recipient_are_proofs() {
        // Shapes from Meta's "Status messages" webhook reference, with a
        // BSUID recipient as on its "Business-scoped user IDs" page.
        let payload: Value = serde_json::from_str(
            r#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[
                {"id":"wamid.A","status":"sent","timestamp":"1764150000","recipient_id":"919876543210","biz_opaque_callback_data":"ORD-1"},
                {"id":"wamid.B","status":"delivered","timestamp":"1764150001","recipient_user_id":"IN.1648738043044942","biz_opaque_callback_data":"ORD-2"},
                {"id":"wamid.C","status":"sent","timestamp":"1764150002","recipient_id":"919876543210"},
                {"id":"wamid.D","status":"sent","biz_opaque_callback_data":"ORD-3"}
            ]}}]}]}"#,
        )
        .unwrap();
        let proofs = Proof::read_all(&payload);
        assert_eq!(proofs.len(), 2, "{proofs:?}");
        assert_eq!(proofs[0].order_id, "ORD-1");
        assert_eq!(proofs[0].recipient_id.as_deref(), Some("919876543210"));
        assert_eq!(proofs[0].reported_at, Some(1_764_150_000_000));
        assert_eq!(
            proofs[1].recipient_user_id.as_deref(),
            Some("IN.1648738043044942")
        );
    }
}
