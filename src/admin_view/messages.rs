//! The outbox's messages as the admin views show them: one JSON shape for a
//! message wherever it appears (an order's view, `GET /admin/messages`), and
//! the words the page uses for how a message went.

use super::format::{masked_text, rfc3339};
use crate::db::sql::Conn;
use crate::db::DbError;
use crate::outbox;
use serde_json::{json, Value};

pub(super) fn message_json(r: &crate::db::sql::Row<'_>) -> Result<Value, DbError> {
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

pub(super) const MESSAGE_COLUMNS: &str =
    "id, order_id, kind, recipient, recipient_user_id, status, variant, attempts, next_attempt_at,
     last_error, graph_message_id, sent_at, delivery_status, delivery_error, delivery_updated_at,
     lease_until, link_via, pricing_category, pricing_type, pricing_billable, pricing_paid,
     unsure_until";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_reads_paid_or_why_it_was_free() {
        assert_eq!(price_words(true, Some("regular")), "paid message");
        assert!(price_words(false, Some("free_customer_service")).contains("24-hour window"));
        assert!(price_words(false, Some("free_entry_point")).contains("entry point"));
        assert!(is_sandbox_id(Some("sandbox-0195")));
        assert!(!is_sandbox_id(Some("wamid.HBg")));
    }
}
