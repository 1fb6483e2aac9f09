//! A customer's WhatsApp number, normalised to E.164 so that every message,
//! log mask and lookup agrees on one spelling of it.

use phonenumber::country;
use std::fmt;

/// A phone number that libphonenumber's metadata accepts as valid, held as
/// E.164 digits without the leading `+` (the form Graph's `to` wants).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164(String);

impl fmt::Debug for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneE164({})", self.masked())
    }
}

/// The region used to read numbers written without a country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(country::Id);

impl Region {
    pub fn parse(code: &str) -> Result<Region, String> {
        let upper = code.trim().to_ascii_uppercase();
        upper
            .parse::<country::Id>()
            .map(Region)
            .map_err(|_| format!("`{code}` is not an ISO 3166 region code such as IN"))
    }
}

impl PhoneE164 {
    /// Accepts `+91 98765 43210`, `919876543210`, `+91-98765-43210`,
    /// `(0) 98765 43210` with a default region, and so on. Anything with
    /// letters or that the numbering plan does not know is refused.
    pub fn parse(raw: &str, default_region: Option<Region>) -> Result<PhoneE164, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("phone number is empty".into());
        }
        if trimmed.len() > 32 {
            return Err("phone number is too long".into());
        }
        let mut plus = false;
        let mut digits = String::with_capacity(16);
        for (i, c) in trimmed.chars().enumerate() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
                _ => return Err("phone number holds characters other than digits".into()),
            }
        }
        if digits.len() < 6 || digits.len() > 15 {
            return Err("phone number has the wrong number of digits".into());
        }
        // A leading 0 is a national trunk prefix, never a country code.
        let international = if digits.starts_with('0') {
            None
        } else {
            Self::valid(None, &format!("+{digits}"))
        };
        if let Some(found) = international {
            return Ok(found);
        }
        if !plus {
            if let Some(Region(id)) = default_region {
                if let Some(found) = Self::valid(Some(id), &digits) {
                    return Ok(found);
                }
            }
        }
        Err(if default_region.is_none() && !plus {
            "phone number has no valid country code (set PHONE_DEFAULT_REGION to accept national numbers)".into()
        } else {
            "phone number is not a valid number".into()
        })
    }

    fn valid(region: Option<country::Id>, text: &str) -> Option<PhoneE164> {
        let number = phonenumber::parse(region, text).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
        Some(PhoneE164(digits))
    }

    /// Trusted constructor for digits already stored by this program.
    pub fn from_stored(digits: &str) -> PhoneE164 {
        PhoneE164(digits.to_owned())
    }

    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The form logs may show: the last four digits only.
    pub fn masked(&self) -> String {
        mask_digits(&self.0)
    }
}

pub fn mask_digits(digits: &str) -> String {
    let tail: String = digits
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("***{tail}")
}

impl fmt::Display for PhoneE164 {
    /// Display masks, so a phone can never reach a log whole by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<String, String> {
        PhoneE164::parse(raw, None).map(|p| p.digits().to_owned())
    }

    #[test]
    fn spaced_international_number_is_normalised() {
        assert_eq!(parse("+91 98765 43210").unwrap(), "919876543210");
        assert_eq!(parse("+91-98765-43210").unwrap(), "919876543210");
        assert_eq!(parse("+1 (415) 555-2671").unwrap(), "14155552671");
    }

    #[test]
    fn plus_is_optional_for_international_numbers() {
        assert_eq!(parse("919876543210").unwrap(), "919876543210");
    }

    #[test]
    fn national_number_needs_a_default_region() {
        assert!(parse("09876543210").is_err());
        let india = Region::parse("IN").unwrap();
        let p = PhoneE164::parse("09876543210", Some(india)).unwrap();
        assert_eq!(p.digits(), "919876543210");
        let p = PhoneE164::parse("98765 43210", Some(india)).unwrap();
        assert_eq!(p.digits(), "919876543210");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "   ",
            "+",
            "abc",
            "+91 98765 4321x",
            "12",
            "+999 1234567",
            "++919876543210",
            "9198765432101234567",
            "+91 00000 00000",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn region_codes_are_checked() {
        assert!(Region::parse("in").is_ok());
        assert!(Region::parse("XX").is_err());
    }

    #[test]
    fn display_masks_all_but_the_last_four_digits() {
        let p = PhoneE164::parse("+91 98765 43210", None).unwrap();
        assert_eq!(p.to_string(), "***3210");
        assert!(!format!("{p:?}").contains("9876543210"));
    }
}
