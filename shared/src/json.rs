//! Strict JSON for signed webhook bodies, and the strict field readers the providers share.
//!
//! serde_json accepts an object with the same key twice and silently keeps the last value.
//! A signed body such as `{"amount": 100, "amount": 1}` is then read one way by payhook and
//! possibly the other way by another system (or by the gateway's own logs); the signature
//! proves who sent the bytes, not which `amount` was meant. [`parse_strict`] refuses such a
//! body instead of picking one. Everything else is parsed exactly as serde_json does
//! (same number handling, same UTF-8 and escape rules, same nesting limit).
//!
//! The readers below ([`parse_object`], [`id`], [`timestamp`], ...) return messages that are
//! shown to the gateway in a 400 answer, so they name fields and JSON types, never values.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};
use sha2::{Digest as _, Sha256};

/// Parses `body` as one JSON value, refusing duplicate keys in any object, at any depth.
///
/// Invalid UTF-8, invalid JSON and anything after the value but whitespace are errors. The
/// message says where (line and column) and never quotes a value.
pub fn parse_strict(body: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = StrictValue
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(describe)?;
    Ok(value)
}

fn describe(e: serde_json::Error) -> String {
    match e.classify() {
        // Only our own visitor raises data errors (it accepts every JSON type), so the message
        // is already complete.
        serde_json::error::Category::Data => e.to_string(),
        _ => format!("invalid JSON: {e}"),
    }
}

/// Builds a [`Value`] like serde_json's own visitor, except for duplicate keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json: JSON text cannot express NaN or infinity, so this is never Null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(StrictValue)?);
                }
                Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format_args!(
                        "duplicate key {} in an object",
                        quoted_key(slot.key())
                    )));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// A key for an error message: quoted and escaped, and cut short, since a key is sent back to
/// the caller and could be up to a whole body long.
fn quoted_key(key: &str) -> String {
    const MAX_CHARS: usize = 64;
    match key.char_indices().nth(MAX_CHARS) {
        None => format!("{key:?}"),
        Some((cut, _)) => format!("{:?}…", &key[..cut]),
    }
}

// ---------------------------------------------------------------------------------------------
// Field readers shared by the providers. `parent` is the path of the enclosing object in
// messages ("" for the top level, "data", "events[2]"); it is only formatted on error.

/// The longest id, type or reference accepted by default, in bytes (`PAYHOOK_MAX_ID_BYTES`).
pub const MAX_ID_BYTES: usize = 255;

/// The limit in force: one per process, set once at start from `PAYHOOK_MAX_ID_BYTES`
/// ([`set_max_id_bytes`]). A process-wide value rather than a parameter because every
/// provider's parser reads it and parsing has no other settings; raising it is how an
/// installation follows a gateway whose ids grew, then reparses what was refused meanwhile.
static MAX_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_ID_BYTES);

/// Sets the longest id accepted from now on (see [`MAX_ID`]).
pub fn set_max_id_bytes(n: usize) {
    MAX_ID.store(n, std::sync::atomic::Ordering::Relaxed);
}

fn max_id_bytes() -> usize {
    MAX_ID.load(std::sync::atomic::Ordering::Relaxed)
}

/// A webhook body: strict JSON, an object at the top level, and storable in PostgreSQL.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    let Value::Object(top) = parse_strict(body)? else {
        return Err("the body must be a JSON object".into());
    };
    check_no_nul(&top)?;
    Ok(top)
}

/// PostgreSQL `jsonb` (the `payload` column) cannot hold U+0000, so such a body could never be
/// stored: refusing it with 400 beats failing the insert and having the gateway retry forever.
fn check_no_nul(top: &Map<String, Value>) -> Result<(), String> {
    let Some(found) = find_nul(top) else {
        return Ok(());
    };
    // The path is only built for the error, walking back up from where the NUL was found.
    let mut path = String::new();
    for step in found.path.iter().rev() {
        match step {
            Step::Key(k) => path = join(&path, k),
            Step::Index(i) => path = format!("{path}[{i}]"),
        }
    }
    if found.in_key {
        let at = if path.is_empty() { "the body" } else { &path };
        Err(format!(
            "an object key in {at} contains \\u0000, which cannot be stored"
        ))
    } else {
        Err(format!("{path} contains \\u0000, which cannot be stored"))
    }
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Nul<'a> {
    /// Innermost step first.
    path: Vec<Step<'a>>,
    in_key: bool,
}

fn find_nul(obj: &Map<String, Value>) -> Option<Nul<'_>> {
    for (key, value) in obj {
        if key.contains('\0') {
            return Some(Nul {
                path: Vec::new(),
                in_key: true,
            });
        }
        if let Some(mut found) = find_nul_in(value) {
            found.path.push(Step::Key(key));
            return Some(found);
        }
    }
    None
}

fn find_nul_in(value: &Value) -> Option<Nul<'_>> {
    match value {
        Value::String(s) if s.contains('\0') => Some(Nul {
            path: Vec::new(),
            in_key: false,
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            find_nul_in(v).map(|mut found| {
                found.path.push(Step::Index(i));
                found
            })
        }),
        Value::Object(obj) => find_nul(obj),
        _ => None,
    }
}

/// `parent.key`, or `key` at the top level.
pub fn join(parent: &str, key: &str) -> String {
    let key = if key.len() > 64 {
        quoted_key(key)
    } else {
        key.to_owned()
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// `obj[key]`, with JSON `null` read as absent.
pub fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// The JSON type of `v`, for messages (values themselves are never echoed).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required object member.
pub fn object<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'a Map<String, Value>, String> {
    match get(obj, key) {
        None => Err(format!("{} is missing", join(parent, key))),
        Some(Value::Object(m)) => Ok(m),
        Some(v) => Err(format!(
            "{} must be an object, not {}",
            join(parent, key),
            type_name(v)
        )),
    }
}

/// A required id, type or reference: a non-empty string of at most [`MAX_ID_BYTES`] bytes (or
/// the limit set at start)
/// without control characters (it becomes part of a key, a routing key and log fields).
pub fn id(obj: &Map<String, Value>, parent: &str, key: &str) -> Result<String, String> {
    optional_id(obj, parent, key)?.ok_or_else(|| format!("{} is missing", join(parent, key)))
}

/// As [`id`], but absent (or `null`) is `None`; present with another type is still an error.
pub fn optional_id(
    obj: &Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<String>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => check_id(s, parent, key).map(|()| Some(s.clone())),
        Some(v) => Err(format!(
            "{} must be a string, not {}",
            join(parent, key),
            type_name(v)
        )),
    }
}

/// A gateway's object id, which some gateways send as a JSON number and others as a string:
/// both spellings give the same text, so `123` and `"123"` make the same dedup key.
pub fn optional_id_or_integer(
    obj: &Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<String>, String> {
    match get(obj, key) {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(Value::Number(_)) => Err(format!(
            "{} must be a string or an integer, not a fractional number",
            join(parent, key)
        )),
        Some(Value::String(_)) | None => optional_id(obj, parent, key),
        Some(v) => Err(format!(
            "{} must be a string or an integer, not {}",
            join(parent, key),
            type_name(v)
        )),
    }
}

fn check_id(s: &str, parent: &str, key: &str) -> Result<(), String> {
    if s.is_empty() {
        Err(format!("{} is empty", join(parent, key)))
    } else if s.len() > max_id_bytes() {
        Err(format!(
            "{} is longer than {} bytes",
            join(parent, key),
            max_id_bytes()
        ))
    } else if s.chars().any(char::is_control) {
        Err(format!(
            "{} contains a control character",
            join(parent, key)
        ))
    } else {
        Ok(())
    }
}

/// An optional RFC 3339 timestamp; present but not one is an error.
pub fn timestamp(
    obj: &Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<DateTime<Utc>>, String> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => rfc3339(s)
            .map(Some)
            .ok_or_else(|| format!("{} is not an RFC 3339 timestamp", join(parent, key))),
        Some(v) => Err(format!(
            "{} must be an RFC 3339 timestamp string, not {}",
            join(parent, key),
            type_name(v)
        )),
    }
}

/// `obj[key]` if it is an RFC 3339 string, else `None`: for timestamps that are informative
/// only and not worth refusing a delivery over.
pub fn lenient_timestamp(obj: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    get(obj, key).and_then(Value::as_str).and_then(rfc3339)
}

pub fn rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Lower-case hex SHA-256 of `body`: the dedup key of an event that carries no id of its own.
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_like_serde_json() {
        let body = br#" {"a": [1, -2, 3.5, "x\u00e9", true, null, {}], "b": {"c": 18446744073709551615}} "#;
        assert_eq!(
            parse_strict(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }

    #[test]
    fn scalars_at_the_top_level_are_values() {
        assert_eq!(parse_strict(b"42").unwrap(), json!(42));
        assert_eq!(parse_strict(b"\"s\"").unwrap(), json!("s"));
        assert_eq!(parse_strict(b"null").unwrap(), Value::Null);
    }

    #[test]
    fn duplicate_key_is_refused() {
        let e = parse_strict(br#"{"id": 1, "amount": 100, "amount": 1}"#).unwrap_err();
        assert!(
            e.starts_with(r#"duplicate key "amount" in an object"#),
            "{e}"
        );
    }

    #[test]
    fn nested_duplicate_key_is_refused() {
        let e = parse_strict(br#"{"events": [{"links": {"payment": "a", "payment": "b"}}]}"#)
            .unwrap_err();
        assert!(e.starts_with(r#"duplicate key "payment""#), "{e}");
    }

    #[test]
    fn duplicate_key_message_names_the_key_but_not_the_values() {
        let e = parse_strict(br#"{"email": "someone@example.com", "email": "x@y.z"}"#).unwrap_err();
        assert!(e.contains("\"email\""), "{e}");
        assert!(!e.contains('@'), "{e}");
    }

    #[test]
    fn a_long_duplicate_key_is_cut_short_in_the_message() {
        let key = "k".repeat(10_000);
        let e = parse_strict(format!(r#"{{"{key}": 1, "{key}": 2}}"#).as_bytes()).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn same_key_in_different_objects_is_fine() {
        let v = parse_strict(br#"{"id": 1, "data": {"id": 2}, "list": [{"id": 3}, {"id": 4}]}"#)
            .unwrap();
        assert_eq!(v["data"]["id"], 2);
    }

    #[test]
    fn keys_equal_after_unescaping_are_duplicates() {
        assert!(parse_strict(br#"{"id": 1, "\u0069d": 2}"#).is_err());
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let e = parse_strict(br#"{"a": 1} x"#).unwrap_err();
        assert!(e.starts_with("invalid JSON: trailing characters"), "{e}");
        assert!(parse_strict(br#"{"a": 1}{"a": 2}"#).is_err());
    }

    #[test]
    fn trailing_whitespace_is_fine() {
        assert!(parse_strict(b"{\"a\": 1}\r\n\t ").is_ok());
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(parse_strict(b"{\"a\": \"\xff\xfe\"}").is_err());
        assert!(
            parse_strict(b"\xef\xbb\xbf{}").is_err(),
            "a byte order mark is not JSON"
        );
    }

    #[test]
    fn empty_body_is_refused() {
        assert!(parse_strict(b"")
            .unwrap_err()
            .starts_with("invalid JSON: EOF"));
    }

    #[test]
    fn syntax_error_says_where() {
        let e = parse_strict(b"{\"a\": }").unwrap_err();
        assert_eq!(e, "invalid JSON: expected value at line 1 column 7");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let body = "[".repeat(100_000);
        assert!(parse_strict(body.as_bytes()).is_err());
    }

    #[test]
    fn parse_object_refuses_a_non_object_body() {
        assert_eq!(
            parse_object(b"[]").unwrap_err(),
            "the body must be a JSON object"
        );
        assert_eq!(
            parse_object(b"\"x\"").unwrap_err(),
            "the body must be a JSON object"
        );
    }

    #[test]
    fn parse_object_refuses_nul_that_jsonb_cannot_store() {
        let e = parse_object(br#"{"data": {"list": ["ok", "a\u0000b"]}}"#).unwrap_err();
        assert_eq!(e, "data.list[1] contains \\u0000, which cannot be stored");
        let e = parse_object(br#"{"data": {"a\u0000": 1}}"#).unwrap_err();
        assert_eq!(
            e,
            "an object key in data contains \\u0000, which cannot be stored"
        );
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        // `\\u0000` is a backslash then "u0000", which jsonb stores; only `\u0000` is NUL.
        // (fuzz/seeds/json/regress-escaped-backslash-u0000, from the json fuzz target.)
        let top = parse_object(br#"{"\\u0000AA": 2, "s": "a\\u0000"}"#).unwrap();
        assert_eq!(top["\\u0000AA"], 2);
        assert_eq!(top["s"], "a\\u0000");
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn id_rules() {
        let o = obj(
            json!({"ok": "EV1", "empty": "", "num": 5, "ctl": "a\nb", "long": "x".repeat(256), "null": null}),
        );
        assert_eq!(id(&o, "events[2]", "ok").unwrap(), "EV1");
        assert_eq!(
            id(&o, "events[2]", "nope").unwrap_err(),
            "events[2].nope is missing"
        );
        assert_eq!(
            id(&o, "events[2]", "null").unwrap_err(),
            "events[2].null is missing"
        );
        assert_eq!(id(&o, "", "empty").unwrap_err(), "empty is empty");
        assert_eq!(
            id(&o, "", "num").unwrap_err(),
            "num must be a string, not a number"
        );
        assert_eq!(
            id(&o, "", "ctl").unwrap_err(),
            "ctl contains a control character"
        );
        assert_eq!(
            id(&o, "", "long").unwrap_err(),
            "long is longer than 255 bytes"
        );
        assert_eq!(optional_id(&o, "", "null").unwrap(), None);
    }

    #[test]
    fn id_or_integer_rules() {
        let o = obj(json!({"n": 123, "s": "123", "neg": -4, "f": 1.5, "b": true, "o": {}}));
        assert_eq!(
            optional_id_or_integer(&o, "data", "n").unwrap().unwrap(),
            "123"
        );
        assert_eq!(
            optional_id_or_integer(&o, "data", "s").unwrap().unwrap(),
            "123"
        );
        assert_eq!(
            optional_id_or_integer(&o, "data", "neg").unwrap().unwrap(),
            "-4"
        );
        assert_eq!(optional_id_or_integer(&o, "data", "missing").unwrap(), None);
        for (k, t) in [
            ("f", "a fractional number"),
            ("b", "a boolean"),
            ("o", "an object"),
        ] {
            assert_eq!(
                optional_id_or_integer(&o, "data", k).unwrap_err(),
                format!("data.{k} must be a string or an integer, not {t}")
            );
        }
    }

    #[test]
    fn timestamp_rules() {
        let o = obj(
            json!({"t": "2024-05-01T10:00:00.000Z", "off": "2024-05-01T12:00:00+02:00", "bad": "yesterday", "n": 5}),
        );
        let want = "2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(timestamp(&o, "", "t").unwrap(), Some(want));
        assert_eq!(timestamp(&o, "", "off").unwrap(), Some(want));
        assert_eq!(timestamp(&o, "", "none").unwrap(), None);
        assert_eq!(
            timestamp(&o, "e", "bad").unwrap_err(),
            "e.bad is not an RFC 3339 timestamp"
        );
        assert!(timestamp(&o, "", "n").is_err());
        assert_eq!(lenient_timestamp(&o, "bad"), None);
        assert_eq!(lenient_timestamp(&o, "n"), None);
        assert_eq!(lenient_timestamp(&o, "t"), Some(want));
    }

    #[test]
    fn sha256_hex_is_lower_case_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
