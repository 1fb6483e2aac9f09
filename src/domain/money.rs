//! An amount as gateways send it (integer minor units, or a decimal in major
//! units read from its exact text) together with its ISO 4217 currency,
//! formatted the way the confirmation template shows it.

use iso_currency::Currency;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

impl Money {
    /// Refuses negative amounts and codes that are not active ISO 4217
    /// currencies with a defined number of minor digits (so no `XAU`).
    pub fn new(minor_units: i64, currency_code: &str) -> Result<Money, String> {
        if minor_units < 0 {
            return Err("amount must not be negative".into());
        }
        let currency = Currency::from_code(currency_code)
            .filter(|c| c.exponent().is_some())
            .ok_or_else(|| "currency must be an ISO 4217 code such as INR".to_string())?;
        Ok(Money {
            minor_units,
            currency,
        })
    }

    /// A decimal in major units exactly as written (`170.00`, `1.5`, `0.10`),
    /// never through a float. More fraction digits than the currency has are
    /// refused (`1.005` INR), unless they are only trailing zeros, which
    /// change nothing. No sign, no exponent, no spaces.
    pub fn from_major_text(text: &str, currency_code: &str) -> Result<Money, String> {
        let unit = Money::new(0, currency_code)?;
        let digits = unit.minor_digits() as usize;
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(format!(
                "amount `{}` must be a plain decimal such as 170.00",
                text.chars().take(32).collect::<String>()
            ));
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > digits {
            return Err(format!(
                "amount {text} has more decimals than {currency_code} allows ({digits})"
            ));
        }
        let padded = format!("{whole}{fraction:0<digits$}");
        let minor_units: i64 = padded
            .parse()
            .map_err(|_| format!("amount {text} is too large"))?;
        Money::new(minor_units, currency_code)
    }

    /// An amount in `from_digits` decimals (how a gateway counts, e.g.
    /// Stripe's two-decimal ISK) converted to this currency's own minor
    /// units; refused when the conversion would drop a non-zero digit.
    pub fn rescaled(amount: i64, from_digits: u32, currency_code: &str) -> Result<Money, String> {
        let unit = Money::new(0, currency_code)?;
        let to = unit.minor_digits();
        let minor = if to >= from_digits {
            amount.checked_mul(10_i64.pow(to - from_digits))
        } else {
            let scale = 10_i64.pow(from_digits - to);
            (amount % scale == 0).then_some(amount / scale)
        };
        let minor = minor.ok_or_else(|| {
            format!("amount {amount} cannot be expressed in whole {currency_code} minor units")
        })?;
        Money::new(minor, currency_code)
    }

    pub fn minor_digits_of(currency_code: &str) -> Option<u32> {
        Money::new(0, currency_code).ok().map(|m| m.minor_digits())
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency_code(&self) -> &'static str {
        self.currency.code()
    }

    fn minor_digits(&self) -> u32 {
        u32::from(self.currency.exponent().unwrap_or(2))
    }

    /// `INR 499.00`, `JPY 500`, `KWD 1.250`: code, a space, major units with
    /// exactly the currency's minor digits.
    pub fn display(&self) -> String {
        let digits = self.minor_digits();
        let code = self.currency_code();
        if digits == 0 {
            return format!("{code} {}", self.minor_units);
        }
        let scale = 10_i64.pow(digits);
        let major = self.minor_units / scale;
        let minor = self.minor_units % scale;
        format!("{code} {major}.{minor:0width$}", width = digits as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(minor: i64, code: &str) -> String {
        Money::new(minor, code).unwrap().display()
    }

    #[test]
    fn amounts_use_each_currencys_minor_digits() {
        assert_eq!(show(49900, "INR"), "INR 499.00");
        assert_eq!(show(500, "JPY"), "JPY 500");
        assert_eq!(show(1250, "KWD"), "KWD 1.250");
        assert_eq!(show(5, "USD"), "USD 0.05");
        assert_eq!(show(0, "EUR"), "EUR 0.00");
        assert_eq!(show(i64::MAX, "INR"), "INR 92233720368547758.07");
    }

    #[test]
    fn unknown_or_lowercase_currencies_and_negative_amounts_are_refused() {
        for code in ["", "inr", "XXX", "XAU", "RUPEES", "IN"] {
            assert!(Money::new(100, code).is_err(), "{code:?} was accepted");
        }
        assert!(Money::new(-1, "INR").is_err());
    }

    fn major(text: &str, code: &str) -> Result<i64, String> {
        Money::from_major_text(text, code).map(|m| m.minor_units())
    }

    #[test]
    fn decimal_text_is_read_exactly() {
        assert_eq!(major("170.00", "INR"), Ok(17000));
        assert_eq!(major("1.5", "INR"), Ok(150));
        assert_eq!(major("0.10", "INR"), Ok(10));
        assert_eq!(major("2", "INR"), Ok(200));
        assert_eq!(major("0.1", "KWD"), Ok(100));
        assert_eq!(major("1.250", "KWD"), Ok(1250));
        assert_eq!(major("500", "JPY"), Ok(500));
        assert_eq!(major("500.00", "JPY"), Ok(500));
        assert_eq!(major("1.000", "INR"), Ok(100));
        // 0.1 + 0.2 through a float would be 30.000000000000004 paise.
        assert_eq!(major("0.30", "INR"), Ok(30));
        assert_eq!(major("92233720368547758.07", "INR"), Ok(i64::MAX));
    }

    #[test]
    fn decimal_text_with_too_many_digits_or_odd_spelling_is_refused() {
        for (bad, code) in [
            ("1.005", "INR"),
            ("500.5", "JPY"),
            ("1.0001", "KWD"),
            ("-1.00", "INR"),
            ("1e2", "INR"),
            ("1.", "INR"),
            (".5", "INR"),
            ("", "INR"),
            (" 1.00", "INR"),
            ("1,00", "INR"),
            ("92233720368547758.08", "INR"),
            ("1.00", "XXX"),
        ] {
            assert!(major(bad, code).is_err(), "{bad} {code} accepted");
        }
    }

    #[test]
    fn rescaling_keeps_every_digit_or_refuses() {
        let r = |a, d, c| Money::rescaled(a, d, c).map(|m| m.minor_units());
        assert_eq!(r(50000, 2, "ISK"), Ok(500));
        assert!(r(50050, 2, "ISK").is_err());
        assert_eq!(r(500, 0, "JPY"), Ok(500));
        assert_eq!(r(12, 0, "MGA"), Ok(1200));
        assert_eq!(r(49900, 2, "INR"), Ok(49900));
        assert!(r(i64::MAX, 0, "INR").is_err());
    }
}
