//! Money: decimal text → integer minor units by the currency's exponent. Never panics; what
//! converts round-trips and agrees with the other exponents, with a float estimate and with the
//! JSON readers; what is refused is refused for a reason that holds across currencies.
//!
//! Input: `[currency selector][decimal text]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_shared::money::{
    exponent, minor_units, raw_scalar_at, to_minor, value_to_minor, MoneyError,
};
use serde_json::Value;

/// Every exponent there is (0, 2, 3, 4, 6, 8), a lower-case code, and unknown codes.
const CURRENCIES: &[&str] = &[
    "JPY", "GBP", "KWD", "CLF", "XRP", "BTC", "NGN", "usd", "bhd", "XXX", "", "GB",
];
/// One currency per exponent, for comparing the same text across exponents.
const BY_EXPONENT: &[&str] = &["JPY", "GBP", "KWD", "CLF", "XRP", "BTC"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let cur = CURRENCIES[usize::from(sel) % CURRENCIES.len()];
    let got = to_minor(text, cur);

    let Ok(exp) = exponent(cur) else {
        assert_eq!(got, Err(MoneyError::UnknownCurrency(cur.to_owned())));
        return;
    };
    match &got {
        Ok(m) => converted(text, cur, exp, *m),
        Err(MoneyError::NotANumber) => {
            // Syntax does not depend on the currency.
            for c in BY_EXPONENT {
                assert_eq!(to_minor(text, c), Err(MoneyError::NotANumber), "{c}");
            }
        }
        Err(MoneyError::Inexact { .. }) => {
            // Too fine for this exponent is too fine for any smaller one.
            for c in BY_EXPONENT {
                if exponent(c).unwrap() < exp {
                    assert!(
                        matches!(to_minor(text, c), Err(MoneyError::Inexact { .. })),
                        "{c}"
                    );
                }
            }
        }
        Err(MoneyError::Overflow) => {}
        Err(e) => panic!("unexpected error {e:?}"),
    }

    // Minor units (exponent 0) read from a JSON string: the same rules as JPY.
    let as_minor = minor_units(&Value::String(text.to_owned()));
    let as_jpy = to_minor(text, "JPY");
    assert_eq!(as_minor.as_ref().ok(), as_jpy.as_ref().ok());
    assert_eq!(
        as_minor.as_ref().err().map(std::mem::discriminant),
        as_jpy.as_ref().err().map(std::mem::discriminant)
    );
    assert_eq!(value_to_minor(&Value::String(text.to_owned()), cur), got);

    json_readers(text, cur);
});

fn converted(text: &str, cur: &str, exp: u32, m: i64) {
    // Round trip: the amount written back as a major-unit decimal, plain or with an exponent.
    assert_eq!(to_minor(&major(m, exp), cur), Ok(m), "{}", major(m, exp));
    assert_eq!(to_minor(&format!("{m}e-{exp}"), cur), Ok(m));

    // A float estimate of the same text agrees (f64 is only an estimate: ~1e-15 relative).
    if let Ok(f) = text.trim().parse::<f64>() {
        if f.is_finite() {
            let estimate = f * 10f64.powi(exp as i32);
            let tolerance = (m as f64).abs() * 1e-13;
            assert!(
                (estimate - m as f64).abs() <= tolerance,
                "{text:?} {cur}: got {m}, a float says {estimate}"
            );
        }
    }

    // The same text at a larger exponent is the same amount, scaled, or too large.
    for c in BY_EXPONENT {
        let e2 = exponent(c).unwrap();
        if e2 < exp {
            continue;
        }
        let want = 10i64
            .checked_pow(e2 - exp)
            .and_then(|p| m.checked_mul(p))
            .ok_or(MoneyError::Overflow);
        assert_eq!(to_minor(text, c), want, "{text:?} at {c}");
    }

    // A sign in front: minus negates, plus changes nothing.
    let t = text.trim();
    if !t.starts_with(['-', '+']) {
        assert_eq!(to_minor(&format!("-{t}"), cur), Ok(-m));
        assert_eq!(to_minor(&format!("+{t}"), cur), Ok(m));
    }
}

/// `m` minor units as a major-unit decimal with exactly `exp` decimals.
fn major(m: i64, exp: u32) -> String {
    let sign = if m < 0 { "-" } else { "" };
    let abs = m.unsigned_abs().to_string();
    let exp = exp as usize;
    if exp == 0 {
        return format!("{sign}{abs}");
    }
    let padded = format!("{abs:0>width$}", width = exp + 1);
    let (int, frac) = padded.split_at(padded.len() - exp);
    format!("{sign}{int}.{frac}")
}

/// The text as a JSON amount: read from the raw JSON text, it converts as the text itself.
fn json_readers(text: &str, cur: &str) {
    let doc = format!(r#"{{"data":{{"amount":{text}}}}}"#);
    let raw = raw_scalar_at(&doc, &["data", "amount"]);
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Number(n)) => {
            let raw = raw.expect("a JSON number is a scalar").expect("present");
            assert_eq!(to_minor(&raw, cur), to_minor(text.trim(), cur));
            // Through a Value, integers stay exact.
            let v = Value::Number(n.clone());
            let through_value = value_to_minor(&v, cur);
            if n.is_i64() || n.is_u64() {
                assert_eq!(through_value, to_minor(&n.to_string(), cur));
            }
        }
        Ok(Value::String(s)) => {
            let raw = raw.expect("a JSON string is a scalar").expect("present");
            assert_eq!(raw, s);
            assert_eq!(
                value_to_minor(&Value::String(s.clone()), cur),
                to_minor(&s, cur)
            );
        }
        Ok(Value::Null) => assert_eq!(raw, Ok(None)),
        Ok(Value::Bool(_)) => assert_eq!(raw, Err(MoneyError::WrongType("boolean"))),
        _ => {}
    }
}
