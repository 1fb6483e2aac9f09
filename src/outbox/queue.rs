//! A message's way through the outbox: queued (`enqueue`), claimed by a
//! sender (`claim`, `release`), and its outcome recorded (`mark_sent`,
//! `mark_retry`, `mark_dead`), each guarded by the claim.

use super::delivery::status_lock;
use super::follow_up::{after_sent, cancel_link_of_dead};
use super::row::{truncate, Kind, LinkVia, Recipient, Status, Variant};
use super::unsure;
use super::window::set_link_via;
use crate::db::sql::{params, Conn, Dialect, OptionalExtension, Param};
use crate::db::DbError;

/// A due message with everything needed to render it.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub order_id: String,
    pub kind: Kind,
    pub recipient: Recipient,
    pub variant: Variant,
    pub attempts: u32,
    pub total_amount: i64,
    pub currency: String,
    pub note: Option<String>,
    pub token: Option<String>,
}

/// Inserts a message row; `false` when the (order, kind, slot) already has
/// one, which is how a second copy is made impossible.
#[allow(clippy::too_many_arguments)]
pub fn enqueue(
    conn: &Conn,
    order_id: &str,
    kind: Kind,
    slot: &str,
    recipient: &Recipient,
    status: Status,
    variant: Variant,
    now: i64,
) -> Result<bool, DbError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (id, order_id, kind, slot, recipient, recipient_user_id, status, variant,
                             attempts, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $9, $9)
         ON CONFLICT (order_id, kind, slot) DO NOTHING",
    )?;
    let (phone, user_id) = recipient.columns();
    let n = stmt.execute(params![
        crate::ids::new_id(),
        order_id,
        kind,
        slot,
        phone,
        user_id,
        status,
        variant,
        now
    ])?;
    Ok(n == 1)
}

/// What a claimed message needs of its order: amount, currency, note and
/// the order's first token.
type OrderPart = (i64, String, Option<String>, Option<String>);

/// Claims up to `limit` due rows for `claim` with one write: queued rows
/// whose time has come, and claimed rows whose lease ran out (their sender
/// died). Oldest first. Run in the writer's transaction, so two claims can
/// never take the same row; PostgreSQL adds `FOR UPDATE SKIP LOCKED`.
///
/// Each kind is read in its own index's order with its own LIMIT: one
/// `WHERE … OR …` over both read every due row and sorted them all to return
/// a few. On SQLite a claim's cost grew with the backlog
/// (`sqlite3BtreeTableMoveto` was the writer's top function with 10,000
/// queued); on PostgreSQL the `OR` form was a sequential scan of the whole
/// outbox, sent rows included (886 pages and 22.9 ms per claim, from
/// `pg_stat_statements`, in the bench's 20,000-webhook run).
pub fn claim(
    conn: &Conn,
    claim: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> Result<Vec<Due>, DbError> {
    // The one statement the dialects cannot share: SQLite has no row locks
    // (its single writer already serialises claims), while on PostgreSQL
    // concurrent claims from several instances must skip the rows another
    // claim holds instead of waiting for it and then taking them again.
    // On PostgreSQL the statement also reads each row's order (a round trip
    // per message saved); SQLite, which has no UPDATE in a CTE, reads it
    // after, in function calls.
    let with_order = conn.dialect() == Dialect::Postgres;
    let mut stmt = conn.prepare_cached(match conn.dialect() {
        Dialect::Sqlite => {
            "UPDATE outbox SET status = $5, claimed_by = $1, lease_until = $3
             WHERE id IN (SELECT id FROM (
                              SELECT id FROM (SELECT id FROM outbox
                                              WHERE status = $6 AND next_attempt_at <= $2
                                              ORDER BY next_attempt_at LIMIT $4) AS due
                              UNION ALL
                              SELECT id FROM (SELECT id FROM outbox
                                              WHERE status = $5 AND lease_until <= $2
                                              ORDER BY lease_until LIMIT $4) AS lapsed) AS claimable
                          LIMIT $4)
             RETURNING id, order_id, kind, recipient, variant, attempts, recipient_user_id"
        }
        Dialect::Postgres => {
            // Row locks may not sit under a UNION, so each branch is a CTE;
            // the second runs only when the first leaves room.
            "WITH due AS (SELECT id FROM outbox
                          WHERE status = $6 AND next_attempt_at <= $2
                          ORDER BY next_attempt_at LIMIT $4
                          FOR UPDATE SKIP LOCKED),
                  lapsed AS (SELECT id FROM outbox
                             WHERE status = $5 AND lease_until <= $2
                             ORDER BY lease_until LIMIT $4
                             FOR UPDATE SKIP LOCKED),
                  claimed AS (
                      UPDATE outbox SET status = $5, claimed_by = $1, lease_until = $3
                      WHERE id IN (SELECT id FROM (SELECT id FROM due
                                                   UNION ALL
                                                   SELECT id FROM lapsed) AS claimable
                                   LIMIT $4)
                      RETURNING id, order_id, kind, recipient, variant, attempts,
                                recipient_user_id)
             SELECT c.id, c.order_id, c.kind, c.recipient, c.variant, c.attempts,
                    c.recipient_user_id, o.total_amount, o.currency, o.note,
                    (SELECT t.token FROM whatsapp_tokens t WHERE t.order_id = c.order_id
                      ORDER BY t.created_at LIMIT 1)
             FROM claimed c LEFT JOIN orders o ON o.id = c.order_id"
        }
    })?;
    let claimed = stmt
        .query_map(
            params![
                claim,
                now,
                lease_until,
                limit as i64,
                Status::Sending,
                Status::Queued
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Kind>(2)?,
                    Recipient::from_columns(r.get(3)?, r.get(6)?)?,
                    r.get::<_, Variant>(4)?,
                    r.get::<_, u32>(5)?,
                    with_order
                        .then(|| -> Result<OrderPart, DbError> {
                            Ok((r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?))
                        })
                        .transpose()?,
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    // Prepared once per claim, and only where the statement did not read it.
    let mut order = if with_order {
        None
    } else {
        Some(conn.prepare_cached(
            "SELECT o.total_amount, o.currency, o.note,
                    (SELECT t.token FROM whatsapp_tokens t WHERE t.order_id = o.id
                      ORDER BY t.created_at LIMIT 1)
             FROM orders o WHERE o.id = $1",
        )?)
    };
    let mut rows = Vec::with_capacity(claimed.len());
    for (id, order_id, kind, recipient, variant, attempts, part) in claimed {
        let (total_amount, currency, note, token) = match (part, order.as_mut()) {
            (Some(part), _) => part,
            (None, Some(order)) => order.query_row([&order_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?,
            (None, None) => unreachable!("the PostgreSQL claim reads each row's order"),
        };
        rows.push(Due {
            id,
            order_id,
            kind,
            recipient,
            variant,
            attempts,
            total_amount,
            currency,
            note,
            token,
        });
    }
    // RETURNING keeps no order: within a batch the sends may go in any
    // order, which nothing depends on (a link waits for its confirmation
    // in the 'waiting' status, not behind it in a batch).
    Ok(rows)
}

/// Gives claimed rows back unsent (a sender stopping with rows in hand), so
/// they are due at once rather than after the lease.
pub fn release(conn: &Conn, claim: &str, ids: &[String]) -> Result<(), DbError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE outbox SET status = $3, claimed_by = NULL, lease_until = NULL
         WHERE id = $1 AND status = $4 AND claimed_by = $2",
    )?;
    for id in ids {
        stmt.execute(params![id, claim, Status::Queued, Status::Sending])?;
    }
    Ok(())
}

/// When the next row falls due (a queued row's time, or a claim's lease
/// running out), if any can.
pub fn next_due_at(conn: &Conn) -> Result<Option<i64>, DbError> {
    let at = conn
        .prepare_cached(
            "SELECT MIN(at) FROM (
                SELECT MIN(next_attempt_at) AS at FROM outbox WHERE status = $1
                UNION ALL
                SELECT MIN(lease_until) AS at FROM outbox WHERE status = $2) AS due",
        )?
        .query_row([Status::Queued, Status::Sending], |r| {
            r.get::<_, Option<i64>>(0)
        })?;
    Ok(at)
}

/// Meta accepted the message. A confirmation releases its link message and
/// stamps the order; a link records how it went (`via`, SPEC §5's
/// `link_via`). Guarded by the claim: an outcome is recorded once, and
/// never by a sender whose lease was taken over. Best run holding
/// `status_lock(message_id)` from its start (`Writer::run_blocking_locked`):
/// on PostgreSQL it takes that lock first.
#[allow(clippy::too_many_arguments)]
pub fn mark_sent(
    conn: &Conn,
    id: &str,
    claim: &str,
    message_id: &str,
    variant: Variant,
    attempts: u32,
    via: Option<LinkVia>,
    now: i64,
) -> Result<(), DbError> {
    // The guarded update's values, `$1` to `$8` on both stores.
    let guarded: [&dyn Param; 8] = [
        &id,
        &message_id,
        &variant,
        &attempts,
        &now,
        &Status::Sent,
        &Status::Sending,
        &claim,
    ];
    let (updated, follow_up) = match conn.dialect() {
        Dialect::Sqlite => {
            if let Some(via) = via {
                set_link_via(conn, id, claim, via)?;
            }
            let n = conn
                .prepare_cached(
                    "UPDATE outbox SET status = $6, graph_message_id = $2, variant = $3,
                            attempts = $4, sent_at = $5, updated_at = $5, last_error = NULL,
                            claimed_by = NULL, lease_until = NULL
                     WHERE id = $1 AND status = $7 AND claimed_by = $8",
                )?
                .execute(&guarded[..])?;
            (n > 0, true)
        }
        Dialect::Postgres => sent_at_once(conn, message_id, &guarded, via)?,
    };
    if !updated {
        // The claim no longer holds the row (its lease ran out, so it was
        // made unsure): the answer still proves Meta took it.
        return unsure::prove_row(conn, id, message_id, now);
    }
    if follow_up {
        after_sent(conn, id, message_id, now)?;
    }
    Ok(())
}

/// `mark_sent`'s update on PostgreSQL, where each statement is a round
/// trip: with what follows it (`after_sent`) in one statement, unless
/// statuses that came before the send was recorded wait for it in
/// `pending_statuses`; then those must apply first, and the rest after
/// them, as on SQLite: the second value says `after_sent` is still to run.
/// The statement runs after the status lock is held, so its snapshot sees
/// every status that was kept before.
/// The link's `via` rides on the guarded update: only the claim sets it,
/// and a row claimed is a row `sending` (every write that clears the
/// status clears the claim), so the guard is `set_link_via`'s own.
fn sent_at_once(
    conn: &Conn,
    message_id: &str,
    guarded: &[&dyn Param; 8],
    via: Option<LinkVia>,
) -> Result<(bool, bool), DbError> {
    conn.lock_key(&status_lock(message_id))?;
    let follow: [&dyn Param; 6] = [
        &Kind::Confirmation,
        &Status::Queued,
        &Kind::Link,
        &Status::Waiting,
        &Status::Cancelled,
        &via,
    ];
    let values: Vec<&dyn Param> = guarded.iter().chain(&follow).copied().collect();
    let (sent, early): (i64, bool) = conn
        .prepare_cached(
            "WITH early AS (
                 SELECT EXISTS (SELECT 1 FROM pending_statuses WHERE graph_message_id = $2) AS waits
             ), sent AS (
                 UPDATE outbox SET status = $6, graph_message_id = $2, variant = $3, attempts = $4,
                        sent_at = $5, updated_at = $5, last_error = NULL,
                        claimed_by = NULL, lease_until = NULL, link_via = COALESCE($14, link_via)
                 WHERE id = $1 AND status = $7 AND claimed_by = $8
                 RETURNING order_id, kind, recipient, recipient_user_id
             ), proofs AS (
                 DELETE FROM unsure_proofs AS p USING sent AS s, early
                 WHERE NOT early.waits AND p.order_id = s.order_id
                   AND ((s.recipient <> '' AND p.recipient = s.recipient)
                        OR (s.recipient_user_id IS NOT NULL
                            AND p.recipient_user_id = s.recipient_user_id))
             ), stamp AS (
                 UPDATE orders SET last_confirmation_sent_at = $5, updated_at = $5
                 FROM sent, early
                 WHERE NOT early.waits AND orders.id = sent.order_id AND sent.kind = $9
             ), link AS (
                 UPDATE outbox AS l SET status = $10, next_attempt_at = $5, updated_at = $5,
                        last_error = NULL
                 FROM sent, early
                 WHERE NOT early.waits AND sent.kind = $9 AND l.order_id = sent.order_id
                   AND l.kind = $11 AND l.status IN ($12, $13)
             )
             SELECT (SELECT COUNT(*) FROM sent), early.waits FROM early",
        )?
        .query_row(&values[..], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((sent > 0, early))
}

/// A transient failure: queued again for `next_at`, if the claim still
/// holds the row.
#[allow(clippy::too_many_arguments)]
pub fn mark_retry(
    conn: &Conn,
    id: &str,
    claim: &str,
    attempts: u32,
    variant: Variant,
    next_at: i64,
    error: &str,
    now: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET status = $8, attempts = $2, variant = $3, next_attempt_at = $4,
                last_error = $5, updated_at = $6, claimed_by = NULL, lease_until = NULL
         WHERE id = $1 AND status = $7 AND claimed_by = $9",
    )?
    .execute(params![
        id,
        attempts,
        variant,
        next_at,
        truncate(error),
        now,
        Status::Sending,
        Status::Queued,
        claim
    ])?;
    Ok(())
}

/// Failed for good. A dead confirmation cancels its link message: the
/// customer must not get a link for an order they were never told about.
pub fn mark_dead(
    conn: &Conn,
    id: &str,
    claim: &str,
    attempts: u32,
    error: &str,
    now: i64,
) -> Result<(), DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $5, attempts = $2, last_error = $3, updated_at = $4,
                    claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND status = $6 AND claimed_by = $7",
        )?
        .execute(params![
            id,
            attempts,
            truncate(error),
            now,
            Status::Dead,
            Status::Sending,
            claim
        ])?;
    if n == 0 {
        return Ok(());
    }
    cancel_link_of_dead(conn, id, now)
}

/// Counts by status, for /healthz.
pub fn depth(conn: &Conn) -> Result<(i64, i64), DbError> {
    let (queued, dead) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN status IN ($1, $2, $4) THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN status = $3 THEN 1 ELSE 0 END), 0)
             FROM outbox",
        )?
        .query_row(
            params![
                Status::Queued,
                Status::Waiting,
                Status::Dead,
                Status::Sending
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
    Ok((queued, dead))
}

/// Queued rows waiting out a pause whose cause is gone (a template Meta
/// approved again) are due at `now`: those whose last error matches `like`,
/// a SQL LIKE pattern. Returns how many.
pub fn due_now_where_error(conn: &Conn, like: &str, now: i64) -> Result<usize, DbError> {
    conn.prepare_cached(
        "UPDATE outbox SET next_attempt_at = $1
         WHERE status = $2 AND next_attempt_at > $1 AND last_error LIKE $3",
    )?
    .execute(params![now, Status::Queued, like])
}

/// Queues a paid order's messages to its customer: the confirmation at
/// once and, when the order gets a link message of its own, the link
/// `waiting` for the confirmation. This is where the link's gate starts:
/// `after_sent` opens it when the confirmation is accepted,
/// `cancel_link_of_dead` closes it when the confirmation dies, and `requeue`
/// puts a retried link back behind it.
pub fn enqueue_order(
    conn: &Conn,
    order_id: &str,
    customer: &Recipient,
    link_message: bool,
    now: i64,
) -> Result<(), DbError> {
    enqueue(
        conn,
        order_id,
        Kind::Confirmation,
        "",
        customer,
        Status::Queued,
        Variant::Template,
        now,
    )?;
    if link_message {
        enqueue(
            conn,
            order_id,
            Kind::Link,
            "",
            customer,
            Status::Waiting,
            Variant::Text,
            now,
        )?;
    }
    Ok(())
}

/// What an admin's "send again" did to a message (`requeue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Queued again: `Queued`, or `Waiting` for a link whose confirmation
    /// is not sent.
    Done(Status),
    /// No message has this id.
    NotFound,
    /// The message is in this status, which is neither dead nor cancelled;
    /// nothing changed.
    Refused(Status),
}

/// Queues a dead-lettered (or cancelled) message again, for the JSON retry
/// and the page's button alike. A message Meta accepted is never re-queued:
/// that would be a second copy. Runs inside the writer's transaction.
///
/// One guarded statement (`… WHERE status IN ('dead', 'cancelled')`), so
/// nothing can change the row between the look and the write. A link goes
/// back to `waiting` unless its confirmation is sent (the same gate as
/// `enqueue`'s and `after_sent`'s); on PostgreSQL the confirmation's row is
/// read `FOR SHARE`, which waits for a confirmation outcome being written
/// at that moment and reads what it wrote. Without that, a retry racing the
/// confirmation's `sent` read "not sent", wrote `waiting` after `mark_sent`
/// had released the order's waiting links, and left the link waiting for
/// ever (SQLite's one writer never interleaves the two).
pub fn requeue(conn: &Conn, id: &str, now: i64) -> Result<Requeue, DbError> {
    let sql = match conn.dialect() {
        Dialect::Sqlite => {
            "UPDATE outbox SET
                status = CASE WHEN kind <> $4 OR EXISTS (
                        SELECT 1 FROM outbox c
                        WHERE c.order_id = outbox.order_id AND c.kind = $5 AND c.status = $6)
                    THEN $7 ELSE $8 END,
                attempts = 0, next_attempt_at = $2, updated_at = $2, last_error = NULL
             WHERE id = $1 AND status IN ($3, $9)
             RETURNING status"
        }
        Dialect::Postgres => {
            "WITH confirmation AS (
                SELECT c.status FROM outbox c
                WHERE c.order_id = (SELECT order_id FROM outbox WHERE id = $1) AND c.kind = $5
                FOR SHARE)
             UPDATE outbox SET
                status = CASE WHEN kind <> $4 OR (SELECT status FROM confirmation) = $6
                    THEN $7 ELSE $8 END,
                attempts = 0, next_attempt_at = $2, updated_at = $2, last_error = NULL
             WHERE id = $1 AND status IN ($3, $9)
             RETURNING status"
        }
    };
    let next: Option<Status> = conn
        .prepare_cached(sql)?
        .query_row(
            params![
                id,
                now,
                Status::Dead,
                Kind::Link,
                Kind::Confirmation,
                Status::Sent,
                Status::Queued,
                Status::Waiting,
                Status::Cancelled
            ],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(next) = next {
        return Ok(Requeue::Done(next));
    }
    // Nothing changed; say why (a read after the fact, for the answer only).
    let status: Option<Status> = conn
        .prepare_cached("SELECT status FROM outbox WHERE id = $1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(match status {
        None => Requeue::NotFound,
        Some(status) => Requeue::Refused(status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_queues_only_dead_or_cancelled_messages_and_a_link_waits_for_its_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let mut lite = crate::db::open_writer(&dir.path().join("requeue.db")).unwrap();
        crate::db::migrate(&mut lite).unwrap();
        let c = Conn::from(lite);
        c.execute_batch(
            "INSERT INTO orders (id, status, total_amount, currency, created_at, updated_at)
             VALUES ('O1', 'PAID', 1, 'INR', 1, 1), ('O2', 'PAID', 1, 'INR', 1, 1);
             INSERT INTO outbox (id, order_id, kind, slot, recipient, status, variant, attempts,
                                 next_attempt_at, created_at, updated_at)
             VALUES ('c1', 'O1', 'confirmation', '', '91', 'dead', 'template', 8, 1, 1, 1),
                    ('l1', 'O1', 'link', '', '91', 'cancelled', 'text', 0, 1, 1, 1),
                    ('c2', 'O2', 'confirmation', '', '91', 'sent', 'template', 1, 1, 1, 1),
                    ('l2', 'O2', 'link', '', '91', 'dead', 'text', 8, 1, 1, 1);",
        )
        .unwrap();
        // The first order's confirmation is dead, not sent: its link waits.
        assert_eq!(
            requeue(&c, "l1", 5).unwrap(),
            Requeue::Done(Status::Waiting)
        );
        assert_eq!(requeue(&c, "l2", 5).unwrap(), Requeue::Done(Status::Queued));
        assert_eq!(requeue(&c, "c1", 5).unwrap(), Requeue::Done(Status::Queued));
        assert_eq!(
            requeue(&c, "c1", 5).unwrap(),
            Requeue::Refused(Status::Queued)
        );
        assert_eq!(
            requeue(&c, "c2", 5).unwrap(),
            Requeue::Refused(Status::Sent)
        );
        assert_eq!(requeue(&c, "nope", 5).unwrap(), Requeue::NotFound);
        let attempts: i64 = c
            .query_row("SELECT attempts FROM outbox WHERE id = 'c1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(attempts, 0);
    }
}
