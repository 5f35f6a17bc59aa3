//! Money as integer minor units, converted exactly: decimal major amounts (`"100.50"`, JSON
//! `10.00`, `1.5e2`) become minor units by the currency's exponent (ISO 4217, plus XRP = 6 and
//! BTC = 8) with integer arithmetic on the decimal text, never through `f64`. An amount that
//! cannot be converted exactly (`"1.005"` GBP, too many digits, not a number) is an error.
//!
//! serde_json (without its `arbitrary_precision` feature, which would break the strict parser
//! in [`crate::json`]) keeps a JSON number with a fraction as an `f64`. Reading such a number
//! from a [`serde_json::Value`] is exact only up to 15 significant digits, so the worker reads
//! amounts from the JSON *text* instead ([`raw_scalar_at`]): PostgreSQL's `jsonb` keeps a
//! number's decimal digits (`10.00` stays `10.00`), and the raw text carries them to us.

use serde_json::value::RawValue;
use serde_json::Value;

/// Why an amount could not be converted. Always a permanent error: retrying won't help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("amount is not a decimal number")]
    NotANumber,
    #[error("amount has more decimals than {currency} allows ({exponent})")]
    Inexact { currency: String, exponent: u32 },
    #[error("amount is too large")]
    Overflow,
    #[error("amount must be a JSON number or a string, not {0}")]
    WrongType(&'static str),
}

/// Currencies whose minor unit is not 1/100 (ISO 4217 list three, plus two crypto units the
/// gateways settle in).
const EXPONENTS: &[(&str, u32)] = &[
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    ("CLF", 4),
    ("UYW", 4),
    ("XRP", 6),
    ("BTC", 8),
];

/// Active ISO 4217 codes with two decimals. A code in neither list is refused rather than
/// guessed: a wrong exponent is a hundredfold error.
const TWO_DECIMALS: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR", "KPW",
    "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT",
    "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK",
    "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR",
    "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU",
    "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
];

/// Digits after the decimal point of `currency`'s minor unit (case-insensitive code).
pub fn exponent(currency: &str) -> Result<u32, MoneyError> {
    let code = currency.to_ascii_uppercase();
    if let Some((_, e)) = EXPONENTS.iter().find(|(c, _)| *c == code) {
        return Ok(*e);
    }
    if TWO_DECIMALS.contains(&code.as_str()) {
        return Ok(2);
    }
    Err(MoneyError::UnknownCurrency(currency.to_owned()))
}

/// Converts a decimal text (`"100.50"`, `"-3"`, `"1.5e2"`, `"10.00"`) of major units to minor
/// units of `currency`, exactly.
pub fn to_minor(decimal: &str, currency: &str) -> Result<i64, MoneyError> {
    let exp = exponent(currency)?;
    scale_by(decimal, exp, &currency.to_ascii_uppercase())
}

/// `decimal` × 10^`exp` as an integer; `unit` names the currency in the error.
fn scale_by(decimal: &str, exp: u32, unit: &str) -> Result<i64, MoneyError> {
    let d = Decimal::parse(decimal.trim())?;
    // value = digits × 10^(scale); minor = value × 10^exp.
    let shift = i64::from(exp) + d.scale;
    let mut digits = d.digits.as_bytes();
    // Leading zeros carry nothing and would only count against the overflow check.
    while digits.len() > 1 && digits[0] == b'0' {
        digits = &digits[1..];
    }
    let magnitude: i128 = if shift >= 0 {
        let mut m = parse_digits(digits)?;
        for _ in 0..shift {
            m = m.checked_mul(10).ok_or(MoneyError::Overflow)?;
            if m > i128::from(i64::MAX) + 1 {
                return Err(MoneyError::Overflow);
            }
        }
        m
    } else {
        // Digits past the minor unit must all be zero.
        let cut = usize::try_from(-shift).map_err(|_| MoneyError::Overflow)?;
        let (kept, dropped) = if cut >= digits.len() {
            (&b""[..], digits)
        } else {
            digits.split_at(digits.len() - cut)
        };
        if dropped.iter().any(|&b| b != b'0') {
            return Err(MoneyError::Inexact {
                currency: unit.to_owned(),
                exponent: exp,
            });
        }
        parse_digits(kept)?
    };
    let signed = if d.negative { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| MoneyError::Overflow)
}

/// Minor units of `currency` from a JSON string or number of major units. A JSON number with a
/// fraction read from a `Value` has been through `f64` (see the module doc): prefer
/// [`raw_scalar_at`] + [`to_minor`] where the JSON text is at hand.
pub fn value_to_minor(value: &Value, currency: &str) -> Result<i64, MoneyError> {
    match value {
        Value::String(s) => to_minor(s, currency),
        Value::Number(n) => to_minor(&n.to_string(), currency),
        other => Err(MoneyError::WrongType(type_name(other))),
    }
}

/// An amount that is already in minor units (GoCardless, Paystack): a JSON integer or a
/// string of digits (GoCardless metadata values are strings, `"2750"`).
pub fn minor_units(value: &Value) -> Result<i64, MoneyError> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        other => return Err(MoneyError::WrongType(type_name(other))),
    };
    // `2750.0` is accepted as a whole number; `27.5` is not.
    scale_by(&text, 0, "minor units")
}

/// The JSON text of the scalar at `path` in the JSON document `json` (`["data", "amount"]`),
/// without going through `f64`: a number's own digits, or a string's content. `None` when the
/// path is absent or null.
pub fn raw_scalar_at(json: &str, path: &[&str]) -> Result<Option<String>, MoneyError> {
    let mut current: &RawValue = serde_json::from_str(json).map_err(|_| MoneyError::NotANumber)?;
    for key in path {
        let object: std::collections::HashMap<String, &RawValue> =
            match serde_json::from_str(current.get()) {
                Ok(o) => o,
                Err(_) => return Ok(None),
            };
        match object.get(*key) {
            Some(v) => current = v,
            None => return Ok(None),
        }
    }
    let text = current.get().trim();
    if text == "null" {
        return Ok(None);
    }
    if text.starts_with('"') {
        let s: String = serde_json::from_str(text).map_err(|_| MoneyError::NotANumber)?;
        return Ok(Some(s));
    }
    if text.starts_with('{') || text.starts_with('[') {
        return Err(MoneyError::WrongType(if text.starts_with('{') {
            "object"
        } else {
            "array"
        }));
    }
    if text == "true" || text == "false" {
        return Err(MoneyError::WrongType("boolean"));
    }
    Ok(Some(text.to_owned()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A parsed decimal: `digits` × 10^`scale`, with a sign.
struct Decimal<'a> {
    negative: bool,
    digits: std::borrow::Cow<'a, str>,
    scale: i64,
}

impl<'a> Decimal<'a> {
    /// JSON number syntax, plus an optional leading `+` (strings from gateways): sign, integer
    /// part, optional fraction, optional exponent.
    fn parse(s: &'a str) -> Result<Self, MoneyError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty()
            || !all_digits(int)
            || !all_digits(frac)
            || (mantissa.contains('.') && frac.is_empty())
        {
            return Err(MoneyError::NotANumber);
        }
        let exp: i64 = match exp {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) || digits.len() > 6 {
                    return Err(MoneyError::NotANumber);
                }
                e.parse().map_err(|_| MoneyError::NotANumber)?
            }
        };
        let digits = if frac.is_empty() {
            std::borrow::Cow::Borrowed(int)
        } else {
            std::borrow::Cow::Owned(format!("{int}{frac}"))
        };
        Ok(Self {
            negative,
            digits,
            scale: exp - frac.len() as i64,
        })
    }
}

fn parse_digits(digits: &[u8]) -> Result<i128, MoneyError> {
    let mut m: i128 = 0;
    for &b in digits {
        m = m
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(MoneyError::Overflow)?;
        if m > i128::from(i64::MAX) + 1 {
            return Err(MoneyError::Overflow);
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn decimal_strings_convert_by_the_currency_exponent() {
        assert_eq!(to_minor("100.50", "NGN"), Ok(10050));
        assert_eq!(to_minor("10.00", "usd"), Ok(1000));
        assert_eq!(to_minor("10", "GBP"), Ok(1000));
        assert_eq!(to_minor("1500", "JPY"), Ok(1500));
        assert_eq!(to_minor("1.234", "KWD"), Ok(1234));
        assert_eq!(to_minor("0.000001", "XRP"), Ok(1));
        assert_eq!(to_minor("0.00000001", "BTC"), Ok(1));
        assert_eq!(to_minor("-2.5", "EUR"), Ok(-250));
        assert_eq!(to_minor("1.5e2", "EUR"), Ok(15000));
        assert_eq!(to_minor("1.500E-1", "EUR"), Ok(15));
        assert_eq!(to_minor("100.5000", "GBP"), Ok(10050));
    }

    #[test]
    fn an_amount_finer_than_the_minor_unit_is_an_error() {
        assert!(matches!(
            to_minor("1.005", "GBP"),
            Err(MoneyError::Inexact { .. })
        ));
        assert!(matches!(
            to_minor("1.5", "JPY"),
            Err(MoneyError::Inexact { .. })
        ));
        assert!(matches!(
            to_minor("1e-3", "GBP"),
            Err(MoneyError::Inexact { .. })
        ));
        assert!(matches!(
            to_minor("0.0000001", "XRP"),
            Err(MoneyError::Inexact { .. })
        ));
    }

    #[test]
    fn malformed_unknown_or_huge_amounts_are_errors() {
        for bad in [
            "", "abc", "1.", ".5", "1..2", "1,5", "0x10", "1e", "--1", "NaN", "1 000",
        ] {
            assert_eq!(to_minor(bad, "GBP"), Err(MoneyError::NotANumber), "{bad:?}");
        }
        assert_eq!(
            to_minor("1", "XXX"),
            Err(MoneyError::UnknownCurrency("XXX".into()))
        );
        assert_eq!(
            to_minor("92233720368547758.08", "GBP"),
            Err(MoneyError::Overflow)
        );
        assert_eq!(to_minor("1e4000000", "GBP"), Err(MoneyError::NotANumber));
        assert_eq!(to_minor("1e99999", "GBP"), Err(MoneyError::Overflow));
        assert_eq!(to_minor("92233720368547758.07", "GBP"), Ok(i64::MAX));
        assert_eq!(to_minor("-92233720368547758.08", "GBP"), Ok(i64::MIN));
    }

    #[test]
    fn json_values_strings_and_numbers_convert_alike() {
        assert_eq!(value_to_minor(&json!("100.50"), "NGN"), Ok(10050));
        assert_eq!(value_to_minor(&json!(100.5), "NGN"), Ok(10050));
        assert_eq!(value_to_minor(&json!(100), "NGN"), Ok(10000));
        assert_eq!(
            value_to_minor(&json!(true), "NGN"),
            Err(MoneyError::WrongType("boolean"))
        );
        assert_eq!(minor_units(&json!("2750")), Ok(2750));
        assert_eq!(minor_units(&json!(275000)), Ok(275000));
        assert_eq!(minor_units(&json!("2750.0")), Ok(2750));
        assert!(minor_units(&json!("27.5")).is_err());
        assert!(minor_units(&json!(null)).is_err());
    }

    #[test]
    fn raw_text_keeps_the_digits_f64_would_lose() {
        let doc = r#"{"data": {"amount": 12345678901234567.89, "currency": "USD", "n": null}}"#;
        assert_eq!(
            raw_scalar_at(doc, &["data", "amount"]).unwrap().as_deref(),
            Some("12345678901234567.89")
        );
        assert_eq!(
            to_minor(
                &raw_scalar_at(doc, &["data", "amount"]).unwrap().unwrap(),
                "USD"
            ),
            Ok(1234567890123456789)
        );
        assert_eq!(
            raw_scalar_at(doc, &["data", "currency"])
                .unwrap()
                .as_deref(),
            Some("USD")
        );
        assert_eq!(raw_scalar_at(doc, &["data", "n"]).unwrap(), None);
        assert_eq!(raw_scalar_at(doc, &["data", "missing"]).unwrap(), None);
        assert_eq!(raw_scalar_at(doc, &["data", "amount", "x"]).unwrap(), None);
        assert!(raw_scalar_at(doc, &["data"]).is_err());
    }

    fn currency() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["GBP", "JPY", "KWD", "CLF", "XRP", "BTC", "NGN"])
    }

    proptest! {
        /// Writing minor units as a major-unit decimal and reading it back is the identity,
        /// however many trailing zeros or whatever exponent notation the sender used.
        #[test]
        fn any_minor_amount_round_trips_through_its_decimal_text(
            minor in any::<i64>(), cur in currency(), zeros in 0usize..4, sci in any::<bool>()
        ) {
            let exp = exponent(cur).unwrap() as usize;
            let sign = if minor < 0 { "-" } else { "" };
            let abs = minor.unsigned_abs().to_string();
            let padded = format!("{abs:0>width$}", width = exp + 1);
            let (int, frac) = padded.split_at(padded.len() - exp);
            let text = if sci {
                // digits × 10^-exp written in exponent form, e.g. 12345e-2.
                format!("{sign}{abs}{}e-{}", "0".repeat(zeros), exp + zeros)
            } else if exp == 0 && zeros == 0 {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}{}", "0".repeat(zeros))
            };
            prop_assert_eq!(to_minor(&text, cur), Ok(minor));
        }

        /// One more non-zero digit past the minor unit is always refused.
        #[test]
        fn any_digit_past_the_minor_unit_is_refused(
            minor in 0i64..1_000_000_000, cur in currency(), extra in 1u8..10
        ) {
            let exp = exponent(cur).unwrap() as usize;
            let padded = format!("{minor:0>width$}", width = exp + 1);
            let (int, frac) = padded.split_at(padded.len() - exp);
            let text = format!("{int}.{frac}{extra}");
            let is_inexact = matches!(to_minor(&text, cur), Err(MoneyError::Inexact { .. }));
            prop_assert!(is_inexact);
        }

        /// Arbitrary text never panics: it converts or it is an error.
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,40}", cur in currency()) {
            let _ = to_minor(&s, cur);
        }
    }

    /// Every currency payhook knows, so every exponent (0, 2, 3, 4, 6, 8) and every code.
    fn any_known_currency() -> impl Strategy<Value = &'static str> {
        let mut all: Vec<&'static str> = EXPONENTS.iter().map(|(c, _)| *c).collect();
        all.extend_from_slice(TWO_DECIMALS);
        prop::sample::select(all)
    }

    /// `minor` as a major-unit decimal with exactly `exp` decimals (`-0.05`, `1500`).
    fn major_text(minor: i64, exp: u32) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let exp = exp as usize;
        let abs = format!("{:0>width$}", minor.unsigned_abs(), width = exp + 1);
        let (int, frac) = abs.split_at(abs.len() - exp);
        if exp == 0 {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    }

    /// A whole number of major units that fits in an i64 once scaled, with up to `exp`
    /// decimals, spelled with optional leading zeros and a sign.
    fn major_amount() -> impl Strategy<Value = (&'static str, bool, u64, String, usize)> {
        any_known_currency().prop_flat_map(|cur| {
            let exp = exponent(cur).unwrap();
            let max_int = i64::MAX as u64 / 10u64.pow(exp);
            (
                Just(cur),
                any::<bool>(),
                0..max_int,
                prop::string::string_regex(&format!("[0-9]{{0,{exp}}}")).unwrap(),
                0usize..3,
            )
        })
    }

    proptest! {
        /// major → minor → major: any decimal a gateway may send in any known currency
        /// converts to minor units, and those written back as major units are the same amount
        /// (the canonical spelling: no leading zeros, exactly `exponent` decimals).
        #[test]
        fn major_to_minor_to_major_round_trips_in_every_currency(
            (cur, neg, int, frac, leading_zeros) in major_amount(), lower in any::<bool>()
        ) {
            let exp = exponent(cur).unwrap();
            let sign = if neg { "-" } else { "" };
            let zeros = "0".repeat(leading_zeros);
            let text = if frac.is_empty() {
                format!("{sign}{zeros}{int}")
            } else {
                format!("{sign}{zeros}{int}.{frac}")
            };
            let code = if lower { cur.to_ascii_lowercase() } else { cur.to_owned() };
            let minor = to_minor(&text, &code);
            prop_assert!(minor.is_ok(), "{text} {cur}: {minor:?}");
            let minor = minor.unwrap();
            let frac_padded = format!("{frac:0<width$}", width = exp as usize);
            let magnitude = format!("{int}{frac_padded}").parse::<i64>().unwrap();
            prop_assert_eq!(minor, if neg { -magnitude } else { magnitude });
            let back = major_text(minor, exp);
            prop_assert_eq!(to_minor(&back, cur), Ok(minor));
            let canonical = if exp == 0 {
                format!("{}{int}", if minor < 0 { "-" } else { "" })
            } else {
                format!("{}{int}.{frac_padded}", if minor < 0 { "-" } else { "" })
            };
            prop_assert_eq!(back, canonical);
        }

        /// More decimals than the currency's exponent, the last one not zero, is refused as
        /// inexact in every currency, plain or in exponent notation, either sign.
        #[test]
        fn more_decimals_than_the_exponent_is_refused_in_every_currency(
            cur in any_known_currency(), int in 0u64..1_000_000_000_000, allowed in any::<u64>(),
            extra in "[0-9]{0,6}[1-9]", neg in any::<bool>(), sci in any::<bool>()
        ) {
            let exp = exponent(cur).unwrap();
            let allowed = if exp == 0 {
                String::new()
            } else {
                format!("{:0>width$}", allowed % 10u64.pow(exp), width = exp as usize)
            };
            let frac = format!("{allowed}{extra}");
            let sign = if neg { "-" } else { "" };
            let text = if sci {
                format!("{sign}{int}{frac}e-{}", frac.len())
            } else {
                format!("{sign}{int}.{frac}")
            };
            prop_assert_eq!(
                to_minor(&text, cur),
                Err(MoneyError::Inexact { currency: cur.to_owned(), exponent: exp })
            );
        }

        /// `MANTISSAeK` for any i64 mantissa and power of ten, checked against i128
        /// arithmetic: the exact minor amount when it is whole and fits in an i64, `Inexact`
        /// when it is not whole, `Overflow` when it does not fit. Never a panic, never a
        /// wrapped value.
        #[test]
        fn exponent_notation_converts_exactly_or_says_why_not(
            mantissa in any::<i64>(), k in -45i32..45, cur in any_known_currency(), upper in any::<bool>()
        ) {
            let exp = exponent(cur).unwrap();
            let shift = k + exp as i32;
            let m = i128::from(mantissa);
            let want = if mantissa == 0 {
                Ok(0)
            } else if shift >= 0 {
                10i128
                    .checked_pow(shift as u32)
                    .and_then(|p| m.checked_mul(p))
                    .and_then(|v| i64::try_from(v).ok())
                    .ok_or(MoneyError::Overflow)
            } else {
                match 10i128.checked_pow(shift.unsigned_abs()) {
                    Some(p) if m % p == 0 => Ok(i64::try_from(m / p).unwrap()),
                    _ => Err(MoneyError::Inexact { currency: cur.to_owned(), exponent: exp }),
                }
            };
            let text = format!("{mantissa}{}{k}", if upper { 'E' } else { 'e' });
            prop_assert_eq!(to_minor(&text, cur), want, "{}", text);
        }

        /// Digit strings far longer than an i64 holds are refused (too large, or inexact when
        /// they also carry too many decimals): no panic, no wrap.
        #[test]
        fn huge_amounts_are_refused_without_overflowing(
            digits in "[1-9][0-9]{19,80}", frac in "[0-9]{0,10}", cur in any_known_currency(),
            neg in any::<bool>()
        ) {
            let exp = exponent(cur).unwrap() as usize;
            let sign = if neg { "-" } else { "" };
            let text = if frac.is_empty() { format!("{sign}{digits}") } else { format!("{sign}{digits}.{frac}") };
            let too_fine = frac.len() > exp && frac[exp..].bytes().any(|b| b != b'0');
            let got = to_minor(&text, cur);
            if too_fine {
                prop_assert!(matches!(got, Err(MoneyError::Inexact { .. })), "{text}: {got:?}");
            } else {
                prop_assert_eq!(got, Err(MoneyError::Overflow), "{}", text);
            }
        }

        /// Amounts already in minor units (GoCardless, Paystack) read back as themselves, from
        /// a JSON number or a string of digits, for every i64.
        #[test]
        fn any_minor_units_read_back_from_json_as_themselves(n in any::<i64>()) {
            prop_assert_eq!(minor_units(&json!(n)), Ok(n));
            prop_assert_eq!(minor_units(&json!(n.to_string())), Ok(n));
            prop_assert_eq!(minor_units(&json!(format!(" {n}.000 "))), Ok(n));
        }
    }
}
