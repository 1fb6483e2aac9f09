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
        if region.is_none() {
            if let Some(answer) = fast::international(text) {
                return answer;
            }
        }
        Self::valid_slow(region, text)
    }

    /// libphonenumber's answer, through the `phonenumber` crate.
    fn valid_slow(region: Option<country::Id>, text: &str) -> Option<PhoneE164> {
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

/// The common case, `+` and digits under a country code that one region
/// owns, answered from the same metadata without the `phonenumber` crate's
/// parser and regex cache (a mutex and a hash of each pattern's text per
/// match; together about the cost of the rest of a webhook). Every step
/// mirrors what `phonenumber::parse` and `is_valid` do for such a number;
/// anything else (several regions under one code, a national prefix to
/// strip, prefix-parsing rules) is left to the crate. A proptest below
/// compares the two.
mod fast {
    use super::PhoneE164;
    use regex::{Regex, RegexBuilder};
    use std::collections::HashMap;
    use std::sync::{Arc, OnceLock, RwLock};

    /// A descriptor: its pattern (matched from the first digit, as the
    /// crate's `find(..).start() == 0`) and its possible lengths.
    struct Pattern {
        regex: Regex,
        lengths: Vec<u16>,
    }

    impl Pattern {
        fn new(desc: &phonenumber::metadata::Descriptor) -> Option<Pattern> {
            // The crate builds its patterns with whitespace ignored; the
            // newline ends any comment before the group closes.
            let regex = RegexBuilder::new(&format!("\\A(?:{}\n)", desc.national_number().as_str()))
                .ignore_whitespace(true)
                .build()
                .ok()?;
            Some(Pattern {
                regex,
                lengths: desc.possible_length().to_vec(),
            })
        }

        fn is_match(&self, national: &str) -> bool {
            (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
                && self.regex.is_match(national)
        }
    }

    /// What a country code needs: `None` when the fast path does not apply.
    struct Plan {
        national_prefix: Option<String>,
        general: Pattern,
        /// Premium rate, toll free, … mobile: valid when one matches.
        kinds: Vec<Pattern>,
    }

    fn plan_for(code: u16) -> Option<Plan> {
        let db = &*phonenumber::metadata::DATABASE;
        let regions = db.region(&code)?;
        let [region] = regions.as_slice() else {
            return None;
        };
        if *region == "001" {
            return None;
        }
        let meta = db.by_id(*region)?;
        if meta.national_prefix_for_parsing().is_some()
            || meta.national_prefix_transform_rule().is_some()
        {
            return None;
        }
        let d = meta.descriptors();
        let kinds = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ]
        .into_iter()
        .flatten()
        .map(Pattern::new)
        .collect::<Option<Vec<_>>>()?;
        Some(Plan {
            national_prefix: meta.national_prefix().map(str::to_owned),
            general: Pattern::new(d.general())?,
            kinds,
        })
    }

    type Plans = RwLock<HashMap<u16, Option<Arc<Plan>>>>;

    fn plan(code: u16) -> Option<Arc<Plan>> {
        static PLANS: OnceLock<Plans> = OnceLock::new();
        let plans = PLANS.get_or_init(Plans::default);
        if let Some(p) = plans.read().unwrap_or_else(|e| e.into_inner()).get(&code) {
            return p.clone();
        }
        let made = plan_for(code).map(Arc::new);
        plans
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(code, made.clone());
        made
    }

    /// `Some(answer)` for `+digits` the fast path covers; `None` to ask
    /// the crate.
    pub(super) fn international(text: &str) -> Option<Option<PhoneE164>> {
        let digits = text.strip_prefix('+')?;
        if digits.len() < 6
            || digits.len() > 15
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        // The crate takes the shortest prefix that is a known code.
        let db = &*phonenumber::metadata::DATABASE;
        let (code, national) = (1..=3).find_map(|len| {
            let code: u16 = digits[..len].parse().ok()?;
            db.by_code(&code).map(|_| (code, &digits[len..]))
        })?;
        let plan = plan(code)?;
        // A national prefix after the code is stripped by the crate under
        // rules of its own; a leading zero is kept apart from the value.
        if national.starts_with('0')
            || plan
                .national_prefix
                .as_deref()
                .is_some_and(|p| national.starts_with(p))
        {
            return None;
        }
        let valid =
            plan.general.is_match(national) && plan.kinds.iter().any(|k| k.is_match(national));
        Some(valid.then(|| PhoneE164(digits.to_owned())))
    }
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

    /// Country codes of one region (most of them) and of several (`1`,
    /// `7`, `44`), with and without national prefixes, and non-geographic
    /// ones (`800`, `882`).
    const CODES: [&str; 24] = [
        "1", "7", "20", "27", "33", "39", "44", "49", "52", "55", "61", "62", "65", "81", "86",
        "91", "92", "234", "254", "800", "880", "882", "971", "977",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// The fast path gives libphonenumber's answer wherever it answers.
        #[test]
        fn the_fast_path_agrees_with_phonenumber(
            code in proptest::sample::select(&CODES[..]),
            rest in "[0-9]{3,13}",
        ) {
            let text = format!("+{code}{rest}");
            if let Some(fast) = fast::international(&text) {
                let slow = PhoneE164::valid_slow(None, &text);
                proptest::prop_assert_eq!(fast, slow, "{}", text);
            }
        }

        /// Indian mobile numbers, the shop's usual customer: all answered
        /// by the fast path, the same as libphonenumber.
        #[test]
        fn indian_mobiles_take_the_fast_path(rest in "[1-9][0-9]{9}") {
            let text = format!("+91{rest}");
            let fast = fast::international(&text);
            proptest::prop_assert!(fast.is_some(), "{} not covered", text);
            proptest::prop_assert_eq!(fast.unwrap(), PhoneE164::valid_slow(None, &text), "{}", text);
        }

        /// Any digits at all, as a payment form may send them.
        #[test]
        fn any_digits_agree(digits in "[1-9][0-9]{5,14}") {
            let text = format!("+{digits}");
            if let Some(fast) = fast::international(&text) {
                proptest::prop_assert_eq!(fast, PhoneE164::valid_slow(None, &text), "{}", text);
            }
        }
    }

    #[test]
    fn the_fast_path_answers_the_samples_as_phonenumber_does() {
        for text in [
            "+919876543210",
            "+910000000000",
            "+9100000",
            "+4915123456789",
            "+8613800138000",
            "+14155552671",
            "+447911123456",
            "+2348031234567",
        ] {
            if let Some(fast) = fast::international(text) {
                assert_eq!(fast, PhoneE164::valid_slow(None, text), "{text}");
            }
        }
        assert!(fast::international("+919876543210").is_some());
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
