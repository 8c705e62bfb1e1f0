//! Money: a non-negative amount with at most two decimal places, stored as `DECIMAL(12,2)` and
//! written on the wire as a string with exactly two places (`"19.90"`), never a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest amount a `DECIMAL(12,2)` column holds.
const MAX: Decimal = Decimal::from_parts(3_567_587_327, 232, 0, false, 2); // 9_999_999_999.99

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

/// What [`Money`] parses from, as a regular expression (the OpenAPI document's pattern): at most
/// ten digits before the point and two after it.
pub const MONEY_PATTERN: &str = r"^[0-9]{1,10}(\.[0-9]{1,2})?$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must be a decimal string such as \"19.90\"")]
    NotANumber,
    #[error("must not be negative")]
    Negative,
    #[error("must have at most 2 decimal places")]
    TooPrecise,
    #[error("must be at most 9999999999.99")]
    TooLarge,
    #[error("must have at most 10 digits before the decimal point")]
    TooManyDigits,
}

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Validates an amount: non-negative, at most two decimal places, fits `DECIMAL(12,2)`.
    pub fn new(amount: Decimal) -> Result<Money, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        if amount.normalize().scale() > 2 {
            return Err(MoneyError::TooPrecise);
        }
        if amount > MAX {
            return Err(MoneyError::TooLarge);
        }
        let mut amount = amount;
        amount.rescale(2);
        Ok(Money(amount))
    }

    pub fn amount(self) -> Decimal {
        self.0
    }

    /// `self × quantity`, or `None` when the result would not fit the column.
    pub fn times(self, quantity: u32) -> Option<Money> {
        self.0
            .checked_mul(Decimal::from(quantity))
            .and_then(|d| Money::new(d).ok())
    }

    /// `self + other`, or `None` when the result would not fit the column.
    pub fn plus(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).and_then(|d| Money::new(d).ok())
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Money, MoneyError> {
        // Decimal::from_str accepts forms like "1e3", "_" and "-0"; money is plain digits with
        // at most two places and nothing around them: `^[0-9]{1,10}(\.[0-9]{1,2})?$`, the
        // document's pattern (leading zeros count: "00000000000000000001.00" is refused).
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let (whole, cents) = match unsigned.split_once('.') {
            Some((whole, cents)) => (whole, Some(cents)),
            None => (unsigned, None),
        };
        if !digits(whole) || cents.is_some_and(|c| !digits(c)) {
            return Err(MoneyError::NotANumber);
        }
        if unsigned.len() != s.len() {
            return Err(MoneyError::Negative);
        }
        if cents.is_some_and(|c| c.len() > 2) {
            return Err(MoneyError::TooPrecise);
        }
        if whole.len() > 10 {
            return Err(MoneyError::TooManyDigits);
        }
        let amount = Decimal::from_str(s).map_err(|_| MoneyError::NotANumber)?;
        Money::new(amount)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Money, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(s: &str) -> Result<Money, MoneyError> {
        s.parse()
    }

    #[test]
    fn formats_with_exactly_two_places() {
        assert_eq!(money("19.9").unwrap().to_string(), "19.90");
        assert_eq!(money("7").unwrap().to_string(), "7.00");
        assert_eq!(money("0.05").unwrap().to_string(), "0.05");
        assert_eq!(
            serde_json::to_string(&money("12.3").unwrap()).unwrap(),
            "\"12.30\""
        );
    }

    #[test]
    fn rejects_bad_amounts() {
        assert_eq!(money("-1.00"), Err(MoneyError::Negative));
        assert_eq!(money("1.001"), Err(MoneyError::TooPrecise));
        assert_eq!(money("1e3"), Err(MoneyError::NotANumber));
        assert_eq!(money(""), Err(MoneyError::NotANumber));
        assert_eq!(money("abc"), Err(MoneyError::NotANumber));
        assert_eq!(money("10000000000.00"), Err(MoneyError::TooManyDigits));
        assert!(money("9999999999.99").is_ok());
        assert!(
            money("0000000001.00").is_ok(),
            "10 digits, as the pattern allows"
        );
        assert_eq!(
            money("00000000000000000001.00"),
            Err(MoneyError::TooManyDigits)
        );
        // Exactly the OpenAPI pattern: no third place even when it is a zero, nothing around.
        assert_eq!(money("1.500"), Err(MoneyError::TooPrecise));
        assert_eq!(money("-0"), Err(MoneyError::Negative));
        for bad in [" 1.00", "1.00 ", "+1", ".5", "1.", "1_000"] {
            assert_eq!(money(bad), Err(MoneyError::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn json_numbers_are_refused() {
        assert!(serde_json::from_str::<Money>("19.9").is_err());
        assert_eq!(
            serde_json::from_str::<Money>("\"19.9\"")
                .unwrap()
                .to_string(),
            "19.90"
        );
    }

    #[test]
    fn arithmetic_is_exact_and_bounded() {
        let price = money("0.10").unwrap();
        assert_eq!(price.times(3).unwrap().to_string(), "0.30");
        assert_eq!(
            price.plus(money("0.20").unwrap()).unwrap().to_string(),
            "0.30"
        );
        assert!(money("9999999999.99").unwrap().times(2).is_none());
    }

    #[test]
    fn the_pattern_agrees_with_the_parser() {
        let pattern = regex::Regex::new(MONEY_PATTERN).unwrap();
        let corpus = [
            "0",
            "1",
            "19.9",
            "19.90",
            "0.01",
            "9999999999.99",
            "0001.00",
            "",
            ".5",
            "5.",
            "1.234",
            "-1",
            "+1",
            "1e3",
            "1_000",
            " 1",
            "1 ",
            "12345678901",
            "1,5",
            "١٢",
            "0x10",
        ];
        for raw in corpus {
            assert_eq!(
                pattern.is_match(raw),
                raw.parse::<Money>().is_ok(),
                "{raw:?}"
            );
        }
    }
}
