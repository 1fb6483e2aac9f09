//! The merchant's own order id: the key every row hangs off, so it is
//! restricted to characters that are safe in URLs, logs and template text.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<OrderId, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "order_id must be 1 to {} characters long",
                Self::MAX_LEN
            ));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/');
        if !raw.chars().all(allowed) {
            return Err("order_id may only hold A-Z a-z 0-9 - _ . : /".into());
        }
        Ok(OrderId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        OrderId::parse(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_with_allowed_punctuation_parse() {
        for ok in ["ORD-1042", "a", "shop:2026/11/26.7_x", &"x".repeat(64)] {
            assert_eq!(OrderId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn empty_long_and_foreign_characters_are_refused() {
        for bad in [
            "",
            " ORD",
            "ORD 1",
            "ORD#1",
            "<b>",
            "ORD'1",
            "ऑर्डर",
            "a\nb",
            &"x".repeat(65),
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
