//! A WhatsApp business-scoped user id (BSUID, SPEC §9 "Identity"): the only
//! handle on an elder who adopted a username and hides their number. It is
//! personal data, so it can only be shown masked, like a phone number.

use crate::db::sql::{FromValue, Param, Value};
use std::fmt;

/// Longest part after the country code (and `ENT.` of a parent BSUID).
const MAX_ID_CHARS: usize = 128;

/// `IN.1648738043044942`: a two-letter country code, a dot, and up to 128
/// letters or digits; a parent BSUID has `ENT.` after the country code
/// (`US.ENT.11815799212886844830`). Held exactly as Meta sent it, because
/// it must be sent back exactly so.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bsuid(String);

impl Bsuid {
    pub fn parse(raw: &str) -> Result<Bsuid, String> {
        let raw = raw.trim();
        let Some((country, rest)) = raw.split_once('.') else {
            return Err("a business-scoped user id starts with a country code and a dot".into());
        };
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("a business-scoped user id starts with a two-letter country code".into());
        }
        let id = rest.strip_prefix("ENT.").unwrap_or(rest);
        if id.is_empty() || id.len() > MAX_ID_CHARS {
            return Err(format!(
                "a business-scoped user id has 1 to {MAX_ID_CHARS} characters after its country code"
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("a business-scoped user id holds only letters and digits".into());
        }
        Ok(Bsuid(raw.to_owned()))
    }

    /// The exact id, for Meta's `recipient` field and the database only.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What logs and messages may show: the country prefix and the last
    /// four characters (`IN.***4942`).
    pub fn masked(&self) -> String {
        // `parse` guarantees an ASCII country code and a dot in front.
        let rest = &self.0[3..];
        let (prefix, id) = match rest.strip_prefix("ENT.") {
            Some(id) => (&self.0[..7], id),
            None => (&self.0[..3], rest),
        };
        let tail = &id[id.len().saturating_sub(4)..];
        format!("{prefix}***{tail}")
    }
}

impl fmt::Display for Bsuid {
    /// Display masks, so a BSUID can never reach a log whole by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for Bsuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bsuid({})", self.masked())
    }
}

impl Param for Bsuid {
    fn value(&self) -> Value<'_> {
        Value::Text(&self.0)
    }
}

impl FromValue for Bsuid {
    fn from_value(value: Value<'_>) -> Result<Self, String> {
        Bsuid::parse(&String::from_value(value)?).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_examples_are_accepted_as_given() {
        // Examples from Meta's "Business-scoped user IDs" page and SPEC §9.
        for raw in [
            "IN.1648738043044942",
            "US.13491208655302741918",
            "BR.1502576394655843",
            "US.ENT.11815799212886844830",
        ] {
            assert_eq!(Bsuid::parse(raw).unwrap().as_str(), raw);
        }
        let longest = format!("IN.{}", "a".repeat(128));
        assert!(Bsuid::parse(&longest).is_ok());
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "1648738043044942",
            "919811111111",
            "IN.",
            "in.1648738043044942",
            "IND.1648738043044942",
            "IN.1648-738",
            "IN.ENT.",
            "IN.16487 38043",
            &format!("IN.{}", "1".repeat(129)),
        ] {
            assert!(Bsuid::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn display_and_debug_mask_all_but_the_country_and_last_four() {
        let id = Bsuid::parse("IN.1648738043044942").unwrap();
        assert_eq!(id.to_string(), "IN.***4942");
        assert!(!format!("{id:?}").contains("16487380430"));
        let parent = Bsuid::parse("US.ENT.11815799212886844830").unwrap();
        assert_eq!(parent.to_string(), "US.ENT.***4830");
    }
}
