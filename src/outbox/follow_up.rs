//! What follows an outcome, whoever recorded it (the sender, or a status
//! proving an unsure send): a sent message's early statuses apply and the
//! proofs kept for it are forgotten, a sent confirmation stamps its order
//! and releases its link, a dead one cancels it.

use super::delivery::apply_pending;
use super::row::{Kind, Status};
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;

/// What follows a message recorded as sent, whoever recorded it (the
/// sender, or a status proving an unsure send): its early statuses apply,
/// and a confirmation stamps its order and releases its link.
pub(super) fn after_sent(conn: &Conn, id: &str, message_id: &str, now: i64) -> Result<(), DbError> {
    apply_pending(conn, message_id, now)?;
    forget_proofs(conn, id)?;
    let (order_id, kind): (String, Kind) = conn
        .prepare_cached("SELECT order_id, kind FROM outbox WHERE id = $1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if kind == Kind::Confirmation {
        conn.prepare_cached(
            "UPDATE orders SET last_confirmation_sent_at = $2, updated_at = $2 WHERE id = $1",
        )?
        .execute(params![order_id, now])?;
        conn.prepare_cached(
            "UPDATE outbox SET status = $3, next_attempt_at = $2, updated_at = $2, last_error = NULL
             WHERE order_id = $1 AND kind = $4 AND status IN ($5, $6)",
        )?
        .execute(params![
            order_id,
            now,
            Status::Queued,
            Kind::Link,
            Status::Waiting,
            Status::Cancelled
        ])?;
    }
    Ok(())
}

/// The message `id` was sent: the proofs kept for its order and recipient
/// were about it (see `unsure`'s note) and must not prove a later one.
fn forget_proofs(conn: &Conn, id: &str) -> Result<(), DbError> {
    // Found through the order's index, which is empty for nearly every
    // order: the `IN (SELECT …)` form built a temporary table for every
    // message sent (a tenth of the writer's work per message).
    conn.prepare_cached(
        "DELETE FROM unsure_proofs AS p
         WHERE p.order_id = (SELECT o.order_id FROM outbox o WHERE o.id = $1)
           AND EXISTS (SELECT 1 FROM outbox o
                       WHERE o.id = $1
                         AND ((o.recipient <> '' AND p.recipient = o.recipient)
                              OR (o.recipient_user_id IS NOT NULL
                                  AND p.recipient_user_id = o.recipient_user_id)))",
    )?
    .execute([id])?;
    Ok(())
}

/// A dead confirmation's link message is cancelled.
pub(super) fn cancel_link_of_dead(conn: &Conn, id: &str, now: i64) -> Result<(), DbError> {
    let row: Option<(String, Kind)> = conn
        .prepare_cached("SELECT order_id, kind FROM outbox WHERE id = $1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((order_id, kind)) = row {
        if kind == Kind::Confirmation {
            conn.prepare_cached(
                "UPDATE outbox SET status = $3, last_error = 'confirmation failed', updated_at = $2
                 WHERE order_id = $1 AND kind = $4 AND status = $5",
            )?
            .execute(params![
                order_id,
                now,
                Status::Cancelled,
                Kind::Link,
                Status::Waiting
            ])?;
        }
    }
    Ok(())
}
