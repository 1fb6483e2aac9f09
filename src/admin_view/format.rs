//! How the admin views write what they read: times as RFC 3339 (or null),
//! texts a person wrote with tokens masked.

use crate::logging::mask_uuids;
use serde_json::Value;

pub fn rfc3339(ms: Option<i64>) -> Value {
    use time::format_description::well_known::Rfc3339;
    match ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    }) {
        Some(t) => t.format(&Rfc3339).map(Value::String).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

pub(super) fn masked_text(text: Option<String>) -> Value {
    text.map(|t| Value::String(mask_uuids(&t)))
        .unwrap_or(Value::Null)
}
