//! What the sender's unit tests share: a sandbox configuration, a due row,
//! and Meta's answers.

use crate::config::Config;
use crate::outbox::{Due, Kind, Recipient, Variant};
use crate::whatsapp::SendOutcome;
use std::time::Duration;

struct Pairs(Vec<(&'static str, &'static str)>);

impl crate::config::Source for Pairs {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Sandbox configuration; `pairs` override the defaults.
pub(super) fn config(pairs: &[(&'static str, &'static str)]) -> Config {
    let mut all = pairs.to_vec();
    all.extend([
        ("WHATSAPP_MAX_MPS", "1000000"),
        ("WHATSAPP_RETRY_BASE_MS", "1000"),
        ("WHATSAPP_MAX_ATTEMPTS", "3"),
    ]);
    Config::from_source(&Pairs(all)).unwrap()
}

pub(super) fn due(kind: Kind, variant: Variant, attempts: u32) -> Due {
    Due {
        id: "0190f0f0-0000-7000-8000-000000000001".into(),
        order_id: "ORD-1".into(),
        kind,
        recipient: Recipient::Phone("919876543210".into()),
        variant,
        attempts,
        total_amount: 49900,
        currency: "INR".into(),
        note: None,
        token: None,
    }
}

pub(super) fn transient(code: Option<i64>, retry_after: Option<Duration>) -> SendOutcome {
    SendOutcome::Transient {
        reason: "busy".into(),
        retry_after,
        code,
    }
}

pub(super) fn unsure() -> SendOutcome {
    SendOutcome::Unsure {
        reason: "timeout".into(),
    }
}

pub(super) fn rejected(code: i64) -> SendOutcome {
    SendOutcome::Rejected {
        code: Some(code),
        reason: format!("({code})"),
    }
}
