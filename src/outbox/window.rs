//! The link message and Meta's 24-hour window (SPEC §5): whether the
//! customer's window is open, the row's way back to the queue when Meta
//! refuses the text in a later `failed` status (131047), or refuses a BSUID
//! recipient (131062), and the record of which way the link went.
//!
//! Every move back to the queue is one conditional UPDATE on the row's own
//! state, so a status Meta delivers twice, or that two instances receive
//! at once, requeues at most once.

use super::row::{Kind, LinkVia, Status, Variant};
use crate::db::sql::{params, Conn, OptionalExtension};
use crate::db::DbError;
use crate::whatsapp::{BSUID_REFUSED, OUTSIDE_WINDOW};

/// A window Meta counts as 24 hours, judged five minutes short, so a text
/// sent at the edge does not race the window's close on its way to Meta.
pub const LINK_WINDOW_MS: i64 = (23 * 60 + 55) * 60_000;

/// Whether a customer whose latest message to the business carries the
/// timestamp `last` (ms) is still inside the window at `now`. No message
/// known: not open.
pub fn window_open(last: Option<i64>, now: i64) -> bool {
    last.is_some_and(|at| now - at < LINK_WINDOW_MS)
}

/// The newest own `timestamp` (ms) of a message the order's customer sent
/// the business: from the order's number, or from a BSUID Meta has shown
/// to belong to that number (one `contacts` row holds both).
pub fn last_customer_message_at(conn: &Conn, order_id: &str) -> Result<Option<i64>, DbError> {
    let at = conn
        .prepare_cached(
            "SELECT MAX(m.sent_at) FROM orders o
             JOIN contacts c ON c.wa_id = o.customer_phone_e164
             JOIN inbound_messages m ON m.contact_id = c.id
             WHERE o.id = $1",
        )?
        .query_row([order_id], |r| r.get::<_, Option<i64>>(0))
        .optional()?;
    Ok(at.flatten())
}

/// Records which way the link went on the row that carried it, while
/// `claim` still holds it: SQLite's `mark_sent`, before its update
/// (PostgreSQL's sets it in the update itself).
pub(super) fn set_link_via(
    conn: &Conn,
    id: &str,
    claim: &str,
    via: LinkVia,
) -> Result<(), DbError> {
    conn.prepare_cached("UPDATE outbox SET link_via = $3 WHERE id = $1 AND claimed_by = $2")?
        .execute(params![id, claim, via])?;
    Ok(())
}

/// The codes of a `failed` status that `after_failure` may act on.
pub(super) fn requeues_on(code: Option<i64>) -> bool {
    matches!(code, Some(OUTSIDE_WINDOW) | Some(BSUID_REFUSED))
}

/// What a `failed` status just recorded means for the message beyond its
/// state (SPEC §5): 131047 for the link text sends the link as the invite
/// template; 131062 for a message sent to a BSUID sends it to the number.
/// The other codes (131026, 131049, 130472, …) end it where it stands.
pub(super) fn after_failure(
    conn: &Conn,
    message_id: &str,
    error_code: Option<i64>,
    error: &str,
    now: i64,
) -> Result<(), DbError> {
    let (requeued, what) = match error_code {
        Some(OUTSIDE_WINDOW) => (
            refused_outside_window(conn, message_id, error, now)?,
            "a later status refused the link text outside the 24-hour window (131047); the link goes as the invite template",
        ),
        Some(BSUID_REFUSED) => (
            refused_bsuid(conn, message_id, error, now)?,
            "a later status refused a message sent to a BSUID (131062); sending it to the phone number",
        ),
        _ => (false, ""),
    };
    if requeued {
        log::info!("{what}");
    }
    Ok(())
}

/// A later `failed` status refused the link text with 131047: the link is
/// due again as the invite template (the sender dead-letters it, naming
/// the variable, when `WHATSAPP_INVITE_TEMPLATE` is not set). Only a sent
/// link text moves, once: a duplicate status finds the row queued (or its
/// message id gone) and changes nothing. The refused text's id is let go,
/// so statuses of it that come late cannot touch the template's state.
pub fn refused_outside_window(
    conn: &Conn,
    message_id: &str,
    error: &str,
    now: i64,
) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $3, variant = $4, next_attempt_at = $2, updated_at = $2,
                    last_error = $5, graph_message_id = NULL, delivery_status = NULL,
                    delivery_error = NULL, delivery_updated_at = NULL
             WHERE graph_message_id = $1 AND kind = $6 AND variant = $7 AND status = $8",
        )?
        .execute(params![
            message_id,
            now,
            Status::Queued,
            Variant::Template,
            format!("{error} (in a later status); the link goes as the invite template"),
            Kind::Link,
            Variant::Text,
            Status::Sent
        ])?;
    Ok(n == 1)
}

/// A later `failed` status refused a message sent to a BSUID (131062):
/// due again, to the phone number, when the contact has one. Once: the row
/// then has a number and no longer matches.
pub fn refused_bsuid(
    conn: &Conn,
    message_id: &str,
    error: &str,
    now: i64,
) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $3, next_attempt_at = $2, updated_at = $2, last_error = $4,
                    recipient = (SELECT c.wa_id FROM contacts c
                                 WHERE c.user_id = outbox.recipient_user_id),
                    graph_message_id = NULL, delivery_status = NULL, delivery_error = NULL,
                    delivery_updated_at = NULL
             WHERE graph_message_id = $1 AND status = $5 AND recipient = ''
               AND EXISTS (SELECT 1 FROM contacts c
                           WHERE c.user_id = outbox.recipient_user_id AND c.wa_id IS NOT NULL)",
        )?
        .execute(params![
            message_id,
            now,
            Status::Queued,
            format!("{error} (in a later status); sending it to the phone number"),
            Status::Sent
        ])?;
    Ok(n == 1)
}

/// Meta answered 131062 to a send addressed by BSUID: queued again for
/// the contact's phone number, if the claim still holds the row and a
/// number is known. `false`: no number (the caller dead-letters it).
pub fn retry_to_phone(
    conn: &Conn,
    id: &str,
    claim: &str,
    attempts: u32,
    error: &str,
    now: i64,
) -> Result<bool, DbError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET status = $4, attempts = $3, next_attempt_at = $5, updated_at = $5,
                    last_error = $6, claimed_by = NULL, lease_until = NULL,
                    recipient = (SELECT c.wa_id FROM contacts c
                                 WHERE c.user_id = outbox.recipient_user_id)
             WHERE id = $1 AND claimed_by = $2 AND status = $7 AND recipient = ''
               AND EXISTS (SELECT 1 FROM contacts c
                           WHERE c.user_id = outbox.recipient_user_id AND c.wa_id IS NOT NULL)",
        )?
        .execute(params![
            id,
            claim,
            attempts,
            Status::Queued,
            now,
            format!("{error}; sending it to the phone number"),
            Status::Sending
        ])?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_for_23_hours_55_minutes_after_the_customers_message() {
        let now = 100 * 86_400_000;
        assert!(!window_open(None, now), "no message known: closed");
        assert!(window_open(Some(now), now));
        assert!(window_open(Some(now - LINK_WINDOW_MS + 1), now));
        assert!(!window_open(Some(now - LINK_WINDOW_MS), now));
        assert!(!window_open(Some(now - 24 * 3_600_000), now));
        // A timestamp a little ahead of our clock is a message just sent.
        assert!(window_open(Some(now + 5_000), now));
        assert_eq!(LINK_WINDOW_MS, 86_100_000);
    }
}
