//! The outbox row's vocabulary: which message a row is (`Kind`), where it
//! stands (`Status`), how it is rendered (`Variant`), which way a link went
//! (`LinkVia`), what Meta reported (`DeliveryState`) and whom it goes to
//! (`Recipient`), each stored as text with one spelling.

use crate::db::DbError;
use crate::domain::Bsuid;
use std::fmt;

/// A closed set of states stored as text: each value has one spelling, a
/// typo does not compile, and a value the code does not know is an error
/// when read back rather than a silent fallthrough.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::db::sql::Param for $name {
            fn value(&self) -> $crate::db::sql::Value<'_> {
                $crate::db::sql::Value::Text(self.as_str())
            }
        }

        impl $crate::db::sql::FromValue for $name {
            fn from_value(value: $crate::db::sql::Value<'_>) -> ::std::result::Result<Self, String> {
                let text = String::from_value(value)?;
                $name::parse(&text)
                    .ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)))
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Which message of an order a row is; one row per (order, kind, slot).
    Kind {
        Confirmation = "confirmation",
        Link = "link",
        ElderReply = "elder_reply",
    }
}

text_enum! {
    /// Where a row stands in the sending process.
    Status {
        /// The link message, held until its confirmation is accepted.
        Waiting = "waiting",
        Queued = "queued",
        /// Claimed by a sender until `lease_until`; due again after it.
        Sending = "sending",
        Sent = "sent",
        Dead = "dead",
        /// A link message whose confirmation died.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// How a message is rendered: the link goes out as a template when Meta
    /// refuses the text outside the 24-hour window.
    Variant {
        Text = "text",
        Template = "template",
    }
}

text_enum! {
    /// Which way an order's link went and why (`outbox.link_via`, SPEC §5):
    /// shown by the merchant's page and the admin order view.
    LinkVia {
        /// As the seed's text: the customer wrote within 23 h 55 min.
        TextWindowOpen = "text_window_open",
        /// As the seed's text: `WHATSAPP_INVITE_TEMPLATE` is not set.
        TextNoTemplate = "text_no_template",
        /// As the invite template: the customer's window was closed.
        TemplateWindowClosed = "template_window_closed",
        /// As the invite template, after Meta refused the text with 131047.
        TemplateAfter131047 = "template_after_131047",
        /// In the confirmation's fourth body parameter.
        InConfirmation = "in_confirmation",
        /// In the confirmation's URL button.
        InButton = "in_button",
    }
}

impl LinkVia {
    /// One line for the admin order view and the page.
    pub fn line(self) -> &'static str {
        match self {
            LinkVia::TextWindowOpen => "Link sent as a text: the customer wrote to the shop within the last 24 hours, so it was free",
            LinkVia::TextNoTemplate => "Link sent as a text: WHATSAPP_INVITE_TEMPLATE is not set, so there is no template to fall back on",
            LinkVia::TemplateWindowClosed => "Link sent as the invite template: the customer's 24-hour window was closed",
            LinkVia::TemplateAfter131047 => "Link sent as the invite template: WhatsApp refused the text outside the 24-hour window (131047)",
            LinkVia::InConfirmation => "Link sent inside the confirmation (WHATSAPP_LINK_IN=confirmation)",
            LinkVia::InButton => "Link sent as the confirmation's button (WHATSAPP_LINK_IN=button)",
        }
    }
}

text_enum! {
    /// What Meta reported about a message it accepted (SPEC §9). The order
    /// of the variants is the order states may move in: proof of delivery
    /// outranks a failure, and a failure outranks a late `sent`. "None" is
    /// a NULL column (`Option<DeliveryState>`), below every variant.
    DeliveryState {
        Sent = "sent",
        Failed = "failed",
        Delivered = "delivered",
        Read = "read",
    }
}

impl DeliveryState {
    /// The state after `reported` arrives while `current` is recorded:
    /// `None` when it would move backwards or stay put, so no caller can
    /// write a move down the order.
    pub fn advance(
        current: Option<DeliveryState>,
        reported: DeliveryState,
    ) -> Option<DeliveryState> {
        (Some(reported) > current).then_some(reported)
    }
}

// The text forms, for the JSON views that compare stored values.
pub const CONFIRMATION: &str = Kind::Confirmation.as_str();
pub const LINK: &str = Kind::Link.as_str();
pub const ELDER_REPLY: &str = Kind::ElderReply.as_str();
pub const WAITING: &str = Status::Waiting.as_str();
pub const QUEUED: &str = Status::Queued.as_str();
pub const SENDING: &str = Status::Sending.as_str();
pub const SENT: &str = Status::Sent.as_str();
pub const DEAD: &str = Status::Dead.as_str();
pub const CANCELLED: &str = Status::Cancelled.as_str();

/// Whom a message goes to: a phone number (Meta's `to`) or, for an elder
/// known only by username, a business-scoped user id (Meta's `recipient`).
#[derive(Clone, PartialEq, Eq)]
pub enum Recipient {
    Phone(String),
    User(Bsuid),
}

impl Recipient {
    /// The row's two columns: `recipient` (digits, empty when there are
    /// none) and `recipient_user_id`. A number wins when both are known:
    /// it is what Meta prefers too.
    pub(super) fn from_columns(
        phone: String,
        user_id: Option<Bsuid>,
    ) -> Result<Recipient, DbError> {
        match (phone.is_empty(), user_id) {
            (false, _) => Ok(Recipient::Phone(phone)),
            (true, Some(id)) => Ok(Recipient::User(id)),
            (true, None) => Err(DbError::Value(
                "outbox row with neither recipient nor recipient_user_id".into(),
            )),
        }
    }

    pub(super) fn columns(&self) -> (&str, Option<&Bsuid>) {
        match self {
            Recipient::Phone(digits) => (digits, None),
            Recipient::User(id) => ("", Some(id)),
        }
    }
}

impl fmt::Display for Recipient {
    /// Masked: the last four digits of a number, or of a BSUID.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Phone(digits) => f.write_str(&crate::domain::mask_digits(digits)),
            Recipient::User(id) => write!(f, "{id}"),
        }
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({self})")
    }
}

/// `last_error` keeps the first thousand characters of a failure.
pub(super) fn truncate(error: &str) -> String {
    error.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sql::Conn;

    #[test]
    fn delivery_states_only_move_up_the_order_of_spec_9() {
        use DeliveryState::*;
        // none < sent < failed < delivered < read
        let order = [None, Some(Sent), Some(Failed), Some(Delivered), Some(Read)];
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        for (i, current) in order.iter().enumerate() {
            for (j, reported) in order.iter().enumerate().skip(1) {
                let reported = reported.unwrap();
                let expected = (j > i).then_some(reported);
                assert_eq!(DeliveryState::advance(*current, reported), expected);
            }
        }
        // The two moves the issue names.
        assert_eq!(DeliveryState::advance(Some(Failed), Sent), None);
        assert_eq!(
            DeliveryState::advance(Some(Failed), Delivered),
            Some(Delivered)
        );
    }

    #[test]
    fn state_texts_round_trip_and_unknown_texts_are_refused() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(*kind));
        }
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(*status));
        }
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(Variant::parse("template"), Some(Variant::Template));
        assert_eq!(DeliveryState::parse("deleted"), None);
        let conn = Conn::from(rusqlite::Connection::open_in_memory().unwrap());
        let read: Result<DeliveryState, DbError> =
            conn.query_row("SELECT 'bogus'", [], |r| r.get(0));
        assert!(read.is_err());
        let stored: DeliveryState = conn
            .query_row("SELECT $1", [DeliveryState::Delivered], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, DeliveryState::Delivered);
    }
}
