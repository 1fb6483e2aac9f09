//! The outbox's messages as the admin views show them: one JSON shape for a
//! message wherever it appears (an order's view, `GET /admin/messages`), and
//! the words the page uses for how a message went.

use super::format::rfc3339;
use crate::db::sql::{Conn, Row};
use crate::db::DbError;
use crate::logging::mask_uuids;
use crate::outbox::{DeliveryState, Kind, LinkVia, Status, Variant};
use serde_json::{json, Value};

/// An outbox row as the admin views show it. Its states are read once, as
/// the outbox's enums: a stored value the code does not know is an error
/// here, not a string a later comparison silently misses. Texts a person
/// or Meta wrote are masked on the way in.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub order_id: String,
    pub kind: Kind,
    pub recipient: String,
    pub recipient_user_id: Option<String>,
    pub status: Status,
    pub variant: Variant,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    /// Tokens masked.
    pub last_error: Option<String>,
    pub graph_message_id: Option<String>,
    pub sent_at: Option<i64>,
    pub delivery: Option<DeliveryState>,
    pub delivery_error: Option<String>,
    pub delivery_updated_at: Option<i64>,
    /// While `sending`: when the claim runs out and the row is due again.
    pub lease_until: Option<i64>,
    /// Which way the link went and why (on the row that carried it).
    pub link_via: Option<LinkVia>,
    pub pricing_category: Option<String>,
    pub pricing_type: Option<String>,
    pub pricing_billable: Option<bool>,
    /// What Meta's statuses said it cost (SPEC §9); `None` until one says.
    pub pricing_paid: Option<bool>,
    pub unsure_until: Option<i64>,
}

impl Message {
    /// A row selected with `MESSAGE_COLUMNS`.
    pub(super) fn read(r: &Row<'_>) -> Result<Message, DbError> {
        Ok(Message {
            id: r.get("id")?,
            order_id: r.get("order_id")?,
            kind: r.get("kind")?,
            recipient: r.get("recipient")?,
            recipient_user_id: r.get("recipient_user_id")?,
            status: r.get("status")?,
            variant: r.get("variant")?,
            attempts: r.get("attempts")?,
            next_attempt_at: r.get("next_attempt_at")?,
            last_error: r
                .get::<_, Option<String>>("last_error")?
                .map(|t| mask_uuids(&t)),
            graph_message_id: r.get("graph_message_id")?,
            sent_at: r.get("sent_at")?,
            delivery: r.get("delivery_status")?,
            delivery_error: r.get("delivery_error")?,
            delivery_updated_at: r.get("delivery_updated_at")?,
            lease_until: r.get("lease_until")?,
            link_via: r.get("link_via")?,
            pricing_category: r.get("pricing_category")?,
            pricing_type: r.get("pricing_type")?,
            pricing_billable: r.get("pricing_billable")?,
            pricing_paid: r.get("pricing_paid")?,
            unsure_until: r.get("unsure_until")?,
        })
    }

    /// The message as the admin API answers it: the states as their stored
    /// texts.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "order_id": self.order_id,
            "kind": self.kind.as_str(),
            "recipient": self.recipient,
            "recipient_user_id": self.recipient_user_id,
            "status": self.status.as_str(),
            "variant": self.variant.as_str(),
            "attempts": self.attempts,
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "last_error": self.last_error,
            "graph_message_id": self.graph_message_id,
            "sent_at": rfc3339(self.sent_at),
            "delivery_status": self.delivery.map(DeliveryState::as_str),
            "delivery_error": self.delivery_error,
            "delivery_updated_at": rfc3339(self.delivery_updated_at),
            "lease_until": rfc3339(self.lease_until),
            "link_via": self.link_via.map(LinkVia::as_str),
            "pricing": {
                "category": self.pricing_category,
                "type": self.pricing_type,
                "billable": self.pricing_billable,
                "paid": self.pricing_paid,
            },
            // SPEC §5: an unsure message keeps its status (`queued`, or `dead`
            // once it may not go again) and says until when it waits for
            // Meta's status; `last_error` says why.
            "unsure_until": match self.status {
                Status::Sent => Value::Null,
                _ => rfc3339(self.unsure_until),
            },
        })
    }

    /// Meta reported it delivered (or read).
    pub fn delivered(&self) -> bool {
        matches!(
            self.delivery,
            Some(DeliveryState::Delivered | DeliveryState::Read)
        )
    }
}

pub(super) const MESSAGE_COLUMNS: &str =
    "id, order_id, kind, recipient, recipient_user_id, status, variant, attempts, next_attempt_at,
     last_error, graph_message_id, sent_at, delivery_status, delivery_error, delivery_updated_at,
     lease_until, link_via, pricing_category, pricing_type, pricing_billable, pricing_paid,
     unsure_until";

/// The statuses `GET /admin/messages?status=` accepts, in the order its
/// refusal names them: every status a row can hold, `sending` included, so
/// messages in flight (claimed by a sender until their lease ends) are
/// visible too.
pub const LISTABLE_STATUSES: [Status; 6] = [
    Status::Dead,
    Status::Queued,
    Status::Waiting,
    Status::Sending,
    Status::Sent,
    Status::Cancelled,
];

/// Messages in one outbox status, most recently changed first (dead letters).
pub fn messages_with_status(c: &Conn, status: Status) -> Result<Vec<Message>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM outbox WHERE status = $1 ORDER BY updated_at DESC LIMIT 500"
    ))?
    .query_map([status], Message::read)?
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

    /// One stored row, `status` as given, in `MESSAGE_COLUMNS`' names.
    fn stored(status: &str) -> Result<Message, DbError> {
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        conn.query_row(
            "SELECT 'm1' AS id, 'O1' AS order_id, 'link' AS kind, '919876543210' AS recipient,
                    NULL AS recipient_user_id, $1 AS status, 'template' AS variant, 2 AS attempts,
                    NULL AS next_attempt_at, 'token 0195f2a4-1c2b-7d3e-8f90-a1b2c3d4e5f6' AS last_error,
                    'wamid.X' AS graph_message_id, 0 AS sent_at, 'read' AS delivery_status,
                    NULL AS delivery_error, NULL AS delivery_updated_at, NULL AS lease_until,
                    'template_window_closed' AS link_via, 'utility' AS pricing_category,
                    'regular' AS pricing_type, 1 AS pricing_billable, 1 AS pricing_paid,
                    0 AS unsure_until",
            [status],
            Message::read,
        )
    }

    #[test]
    fn a_message_is_read_with_typed_states_and_answers_the_stored_texts() {
        let m = stored("sent").unwrap();
        assert_eq!((m.kind, m.status), (Kind::Link, Status::Sent));
        assert!(m.delivered());
        let json = m.json();
        assert_eq!(json["kind"], "link");
        assert_eq!(json["status"], "sent");
        assert_eq!(json["variant"], "template");
        assert_eq!(json["delivery_status"], "read");
        assert_eq!(json["link_via"], "template_window_closed");
        assert_eq!(json["pricing"]["paid"], true);
        assert!(!json["last_error"]
            .as_str()
            .unwrap()
            .contains("a1b2c3d4e5f6"));
        // A sent message waits for no status.
        assert_eq!(json["unsure_until"], Value::Null);
        assert_eq!(
            stored("queued").unwrap().json()["unsure_until"],
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_stored_status_the_code_does_not_know_is_an_error_not_a_default() {
        assert!(stored("parked").is_err());
    }
}
