//! PayQI: `X-PayQI-Signature` is the hex HMAC-SHA256 of the raw body, and
//! `X-PayQI-Timestamp` (unix seconds) must lie within the configured tolerance of our clock, so
//! a delivery captured long ago is not accepted again on its own. One event per body
//! (`{"id", "type", "created", "data": {...}}`), deduplicated on its `id`.
//!
//! Checks run cheapest first (signature header shape, then timestamp, then the HMAC), so a
//! delivery refused on its header or clock costs no hashing.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::signature::{self, Digest, Secrets};
use super::{Headers, NewEvent, ParseError, Provider, VerifyError};
use crate::json;

const SIGNATURE_HEADER: &str = "X-PayQI-Signature";
const TIMESTAMP_HEADER: &str = "X-PayQI-Timestamp";

pub struct PayQi {
    secrets: Secrets,
    /// How far, in seconds, the delivery's timestamp may be from our clock, either way.
    tolerance: u64,
}

impl PayQi {
    pub fn new(secrets: Secrets, tolerance: u64) -> Self {
        Self { secrets, tolerance }
    }
}

impl Provider for PayQi {
    fn name(&self) -> &'static str {
        "payqi"
    }

    fn accepted_status(&self) -> u16 {
        204
    }

    fn rejected_signature_status(&self) -> u16 {
        401
    }

    fn audit_headers(&self) -> &'static [&'static str] {
        &[
            "content-type",
            "user-agent",
            "x-forwarded-for",
            "x-request-id",
            "x-payqi-timestamp",
            "x-payqi-signature",
        ]
    }

    fn verify(&self, headers: &Headers, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let sig = headers.get(SIGNATURE_HEADER);
        check_signature_shape(sig)?;
        let ts = timestamp(headers.get(TIMESTAMP_HEADER))?;
        if now.abs_diff(ts) > self.tolerance {
            return Err(VerifyError::StaleTimestamp);
        }
        signature::verify_hex_hmac(SIGNATURE_HEADER, sig, Digest::Sha256, &self.secrets, body)
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<NewEvent>, ParseError> {
        parse_event(body).map(|e| vec![e]).map_err(ParseError)
    }
}

/// The same presence and shape rules as [`signature::verify_hex_hmac`], applied before the
/// timestamp so that a missing signature is reported as such, whatever the timestamp.
fn check_signature_shape(value: Option<&[u8]>) -> Result<(), VerifyError> {
    let value = value.ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(SIGNATURE_HEADER));
    }
    // 32 bytes of SHA-256, hex encoded.
    if value.len() != 64 || !value.iter().all(u8::is_ascii_hexdigit) {
        return Err(VerifyError::Malformed(SIGNATURE_HEADER));
    }
    Ok(())
}

/// Unix seconds as plain ASCII digits: no sign, no fraction, no exponent.
fn timestamp(value: Option<&[u8]>) -> Result<i64, VerifyError> {
    let value = value.ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(TIMESTAMP_HEADER));
    }
    if !value.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::Malformed(TIMESTAMP_HEADER));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(VerifyError::Malformed(TIMESTAMP_HEADER))
}

fn parse_event(body: &[u8]) -> Result<NewEvent, String> {
    let top = json::parse_object(body)?;
    let id = json::id(&top, "", "id")?;
    let event_type = json::id(&top, "", "type")?;
    let data = json::object(&top, "", "data")?;
    let resource_id = json::optional_id(data, "data", "id")?;
    let occurred_at = created(&top)?;
    Ok(NewEvent {
        external_id: id,
        event_type,
        resource_id,
        payload: Value::Object(top),
        occurred_at,
    })
}

/// `created`: unix seconds or an RFC 3339 string; absent is fine, anything else is not.
fn created(top: &Map<String, Value>) -> Result<Option<DateTime<Utc>>, String> {
    match json::get(top, "created") {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .map(Some)
            .ok_or_else(|| "created is not a unix time in whole seconds".to_owned()),
        Some(Value::String(_)) => json::timestamp(top, "", "created"),
        Some(other) => Err(format!(
            "created must be unix seconds or an RFC 3339 string, not {}",
            json::type_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z
    const BODY: &[u8] = br#"{"id":"evt_001","type":"payment.completed","created":1714557600,"data":{"id":"pay_001","amount":"27.50","currency":"GBP","status":"completed","metadata":{"order_id":"order-42"}}}"#;

    fn provider() -> PayQi {
        PayQi::new("old-secret,new-secret".parse().unwrap(), 300)
    }

    fn headers(sig: Option<&str>, ts: Option<&str>) -> Headers {
        let mut h = Headers::new();
        if let Some(sig) = sig {
            h.insert("X-PayQI-Signature", sig.as_bytes());
        }
        if let Some(ts) = ts {
            h.insert("X-PayQI-Timestamp", ts.as_bytes());
        }
        h
    }

    fn sig(key: &str) -> String {
        signature::sign_hex(Digest::Sha256, key.as_bytes(), BODY)
    }

    fn verify(sig: Option<&str>, ts: Option<&str>) -> Result<(), VerifyError> {
        provider().verify(&headers(sig, ts), BODY, NOW)
    }

    fn verify_at(ts: i64) -> Result<(), VerifyError> {
        verify(Some(&sig("new-secret")), Some(&ts.to_string()))
    }

    fn parse(v: Value) -> Result<NewEvent, ParseError> {
        let mut events = provider().parse(v.to_string().as_bytes())?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    fn parse_err(v: Value) -> String {
        parse(v).unwrap_err().0
    }

    fn body() -> Value {
        serde_json::from_slice(BODY).unwrap()
    }

    #[test]
    fn answers_as_payqi_expects() {
        let p = provider();
        assert_eq!(p.name(), "payqi");
        assert_eq!(p.accepted_status(), 204);
        assert_eq!(p.rejected_signature_status(), 401);
        assert!(!p.wants_client_cert());
    }

    #[test]
    fn audit_headers_keep_the_timestamp_and_the_signature() {
        let h = provider().audit_headers();
        assert!(h.contains(&"x-payqi-timestamp"));
        assert!(h.contains(&"x-payqi-signature"));
    }

    #[test]
    fn valid_signature_is_accepted() {
        assert_eq!(verify(Some(&sig("new-secret")), Some("1714557600")), Ok(()));
    }

    #[test]
    fn second_secret_of_a_rotation_is_accepted() {
        assert_eq!(verify(Some(&sig("old-secret")), Some("1714557600")), Ok(()));
    }

    #[test]
    fn wrong_secret_is_refused() {
        assert_eq!(
            verify(Some(&sig("other")), Some("1714557600")),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn missing_signature_is_refused() {
        assert_eq!(
            verify(None, Some("1714557600")),
            Err(VerifyError::MissingHeader("X-PayQI-Signature"))
        );
    }

    #[test]
    fn empty_signature_is_refused() {
        assert_eq!(
            verify(Some(""), Some("1714557600")),
            Err(VerifyError::MissingHeader("X-PayQI-Signature"))
        );
    }

    #[test]
    fn truncated_signature_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")[..62]), Some("1714557600")),
            Err(VerifyError::Malformed("X-PayQI-Signature"))
        );
    }

    #[test]
    fn odd_length_hex_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")[..63]), Some("1714557600")),
            Err(VerifyError::Malformed("X-PayQI-Signature"))
        );
    }

    #[test]
    fn non_hex_signature_is_refused() {
        assert_eq!(
            verify(Some(&"x".repeat(64)), Some("1714557600")),
            Err(VerifyError::Malformed("X-PayQI-Signature"))
        );
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        assert_eq!(
            verify(Some(&sig("new-secret").to_uppercase()), Some("1714557600")),
            Ok(())
        );
    }

    #[test]
    fn timestamp_at_the_edge_of_the_window_is_accepted() {
        assert_eq!(verify_at(NOW - 300), Ok(()));
        assert_eq!(verify_at(NOW + 300), Ok(()));
    }

    #[test]
    fn old_timestamp_is_refused() {
        assert_eq!(verify_at(NOW - 301), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn future_timestamp_is_refused() {
        assert_eq!(verify_at(NOW + 301), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn missing_timestamp_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")), None),
            Err(VerifyError::MissingHeader("X-PayQI-Timestamp"))
        );
    }

    #[test]
    fn empty_timestamp_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")), Some(" ")),
            Err(VerifyError::MissingHeader("X-PayQI-Timestamp"))
        );
    }

    #[test]
    fn non_numeric_timestamp_is_refused() {
        for ts in [
            "yesterday",
            "1714557600.0",
            "1.7e9",
            "+1714557600",
            "0x66320000",
            "2024-05-01T10:00:00Z",
        ] {
            assert_eq!(
                verify(Some(&sig("new-secret")), Some(ts)),
                Err(VerifyError::Malformed("X-PayQI-Timestamp")),
                "{ts}"
            );
        }
    }

    #[test]
    fn negative_timestamp_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")), Some("-1714557600")),
            Err(VerifyError::Malformed("X-PayQI-Timestamp"))
        );
    }

    #[test]
    fn timestamp_too_large_for_i64_is_refused() {
        assert_eq!(
            verify(Some(&sig("new-secret")), Some("99999999999999999999")),
            Err(VerifyError::Malformed("X-PayQI-Timestamp"))
        );
    }

    #[test]
    fn huge_timestamp_does_not_overflow_the_window_check() {
        assert_eq!(verify_at(i64::MAX), Err(VerifyError::StaleTimestamp));
    }

    #[test]
    fn signature_header_is_checked_before_the_timestamp() {
        assert_eq!(
            verify(None, None),
            Err(VerifyError::MissingHeader("X-PayQI-Signature"))
        );
        assert_eq!(
            verify(Some("nothex"), Some("1")),
            Err(VerifyError::Malformed("X-PayQI-Signature"))
        );
    }

    #[test]
    fn timestamp_is_checked_before_the_hmac() {
        assert_eq!(
            verify(Some(&sig("other")), Some("1")),
            Err(VerifyError::StaleTimestamp)
        );
    }

    #[test]
    fn parses_the_fields_of_a_payment() {
        let events = provider().parse(BODY).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.external_id, "evt_001");
        assert_eq!(e.event_type, "payment.completed");
        assert_eq!(e.resource_id.as_deref(), Some("pay_001"));
        assert_eq!(e.occurred_at, DateTime::from_timestamp(NOW, 0));
        assert_eq!(e.payload, body());
    }

    #[test]
    fn created_may_be_an_rfc3339_string() {
        let mut b = body();
        b["created"] = json!("2024-05-01T11:00:00+01:00");
        assert_eq!(
            parse(b).unwrap().occurred_at,
            DateTime::from_timestamp(NOW, 0)
        );
    }

    #[test]
    fn missing_created_gives_no_occurred_at() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("created");
        assert_eq!(parse(b).unwrap().occurred_at, None);
    }

    #[test]
    fn unparseable_created_string_is_refused() {
        let mut b = body();
        b["created"] = json!("1 May 2024");
        assert_eq!(parse_err(b), "created is not an RFC 3339 timestamp");
    }

    #[test]
    fn fractional_created_is_refused() {
        let mut b = body();
        b["created"] = json!(1714557600.5);
        assert_eq!(parse_err(b), "created is not a unix time in whole seconds");
    }

    #[test]
    fn created_of_another_type_is_refused() {
        let mut b = body();
        b["created"] = json!(true);
        assert_eq!(
            parse_err(b),
            "created must be unix seconds or an RFC 3339 string, not a boolean"
        );
    }

    #[test]
    fn missing_id_is_refused() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("id");
        assert_eq!(parse_err(b), "id is missing");
    }

    #[test]
    fn empty_id_is_refused() {
        let mut b = body();
        b["id"] = json!("");
        assert_eq!(parse_err(b), "id is empty");
    }

    #[test]
    fn numeric_id_is_refused() {
        let mut b = body();
        b["id"] = json!(1);
        assert_eq!(parse_err(b), "id must be a string, not a number");
    }

    #[test]
    fn missing_type_is_refused() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("type");
        assert_eq!(parse_err(b), "type is missing");
    }

    #[test]
    fn missing_data_is_refused() {
        let mut b = body();
        b.as_object_mut().unwrap().remove("data");
        assert_eq!(parse_err(b), "data is missing");
    }

    #[test]
    fn data_that_is_not_an_object_is_refused() {
        let mut b = body();
        b["data"] = json!("pay_001");
        assert_eq!(parse_err(b), "data must be an object, not a string");
    }

    #[test]
    fn data_without_id_has_no_resource_id() {
        let mut b = body();
        b["data"].as_object_mut().unwrap().remove("id");
        assert_eq!(parse(b).unwrap().resource_id, None);
    }

    #[test]
    fn non_string_data_id_is_refused() {
        let mut b = body();
        b["data"]["id"] = json!(9);
        assert_eq!(parse_err(b), "data.id must be a string, not a number");
    }

    #[test]
    fn body_that_is_not_an_object_is_refused() {
        assert_eq!(parse_err(json!([body()])), "the body must be a JSON object");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let body = br#"{"id":"evt_1","type":"payment.completed","data":{"id":"p","metadata":{"order_id":"a","order_id":"b"}}}"#;
        let e = provider().parse(body).unwrap_err().0;
        assert!(
            e.starts_with(r#"duplicate key "order_id" in an object"#),
            "{e}"
        );
    }
}
