//! An amount as gateways send it (integer minor units) together with its ISO
//! 4217 currency, formatted the way the confirmation template shows it.

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
}
