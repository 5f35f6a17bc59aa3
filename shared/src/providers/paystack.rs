//! Paystack: `x-paystack-signature` is the hex HMAC-SHA512 of the raw body keyed with the
//! account's secret key. One event per body (`{"event": "charge.success", "data": {...}}`).
//! Paystack has no event id, so the dedup key is `event:data.id`; events whose `data` has no
//! id (`refund.processed`) fall back to `event:` + the body's SHA-256, which still makes a
//! byte-identical retry a duplicate.

use serde_json::Value;

use super::signature::{self, Digest, Secrets};
use super::{Headers, NewEvent, ParseError, Provider, VerifyError};
use crate::json;

const SIGNATURE_HEADER: &str = "x-paystack-signature";

pub struct Paystack {
    secrets: Secrets,
}

impl Paystack {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets }
    }
}

impl Provider for Paystack {
    fn name(&self) -> &'static str {
        "paystack"
    }

    fn audit_headers(&self) -> &'static [&'static str] {
        &[
            "content-type",
            "user-agent",
            "x-forwarded-for",
            "x-request-id",
            SIGNATURE_HEADER,
        ]
    }

    fn verify(&self, headers: &Headers, body: &[u8], _now: i64) -> Result<(), VerifyError> {
        signature::verify_hex_hmac(
            SIGNATURE_HEADER,
            headers.get(SIGNATURE_HEADER),
            Digest::Sha512,
            &self.secrets,
            body,
        )
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<NewEvent>, ParseError> {
        parse_event(body).map(|e| vec![e]).map_err(ParseError)
    }
}

fn parse_event(body: &[u8]) -> Result<NewEvent, String> {
    let top = json::parse_object(body)?;
    let event = json::id(&top, "", "event")?;
    let data = json::object(&top, "", "data")?;
    let external_id = match json::optional_id_or_integer(data, "data", "id")? {
        Some(id) => format!("{event}:{id}"),
        None => format!("{event}:{}", json::sha256_hex(body)),
    };
    let resource_id = json::optional_id(data, "data", "reference")?;
    // Informative only (the ledger takes its dates elsewhere), and Paystack's spelling varies
    // between events, so an odd value is no reason to refuse a delivery.
    let occurred_at = ["paid_at", "created_at", "createdAt"]
        .into_iter()
        .find_map(|key| json::lenient_timestamp(data, key));
    Ok(NewEvent {
        external_id,
        event_type: event,
        resource_id,
        payload: Value::Object(top),
        occurred_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    const BODY: &[u8] = br#"{"event":"charge.success","data":{"id":123,"domain":"live","status":"success","reference":"ref-001","amount":275000,"currency":"NGN","paid_at":"2024-05-01T10:00:00.000Z","created_at":"2024-05-01T09:59:00.000Z","customer":{"email":"someone@example.com"}}}"#;

    fn provider() -> Paystack {
        Paystack::new("old-secret,new-secret".parse().unwrap())
    }

    fn headers(sig: &str) -> Headers {
        [("x-paystack-signature", sig.as_bytes())]
            .into_iter()
            .collect()
    }

    fn signed(key: &str, body: &[u8]) -> Headers {
        headers(&signature::sign_hex(Digest::Sha512, key.as_bytes(), body))
    }

    fn parse(v: Value) -> Result<NewEvent, ParseError> {
        let mut events = provider().parse(v.to_string().as_bytes())?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    fn parse_err(v: Value) -> String {
        parse(v).unwrap_err().0
    }

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn answers_as_paystack_expects() {
        let p = provider();
        assert_eq!(p.name(), "paystack");
        assert_eq!(p.accepted_status(), 200);
        assert_eq!(p.rejected_signature_status(), 401);
        assert!(!p.wants_client_cert());
    }

    #[test]
    fn audit_headers_keep_the_signature() {
        assert!(provider().audit_headers().contains(&"x-paystack-signature"));
    }

    #[test]
    fn valid_signature_is_accepted() {
        assert_eq!(
            provider().verify(&signed("new-secret", BODY), BODY, 0),
            Ok(())
        );
    }

    #[test]
    fn second_secret_of_a_rotation_is_accepted() {
        assert_eq!(
            provider().verify(&signed("old-secret", BODY), BODY, 0),
            Ok(())
        );
    }

    #[test]
    fn wrong_secret_is_refused() {
        let r = provider().verify(&signed("other-secret", BODY), BODY, 0);
        assert_eq!(r, Err(VerifyError::Mismatch));
    }

    #[test]
    fn missing_header_is_refused() {
        let r = provider().verify(&Headers::new(), BODY, 0);
        assert_eq!(r, Err(VerifyError::MissingHeader("x-paystack-signature")));
    }

    #[test]
    fn empty_header_is_refused() {
        let r = provider().verify(&headers(""), BODY, 0);
        assert_eq!(r, Err(VerifyError::MissingHeader("x-paystack-signature")));
    }

    #[test]
    fn prefix_of_the_signature_is_refused() {
        let sig = signature::sign_hex(Digest::Sha512, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig[..64]), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("x-paystack-signature")));
    }

    #[test]
    fn odd_length_hex_is_refused() {
        let sig = signature::sign_hex(Digest::Sha512, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig[..127]), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("x-paystack-signature")));
    }

    #[test]
    fn non_hex_signature_is_refused() {
        let r = provider().verify(&headers(&"g".repeat(128)), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("x-paystack-signature")));
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let sig = signature::sign_hex(Digest::Sha512, b"new-secret", BODY).to_uppercase();
        assert_eq!(provider().verify(&headers(&sig), BODY, 0), Ok(()));
    }

    #[test]
    fn sha256_signature_is_refused() {
        let sig = signature::sign_hex(Digest::Sha256, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("x-paystack-signature")));
    }

    #[test]
    fn parses_the_fields_of_a_charge() {
        let events = provider().parse(BODY).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.external_id, "charge.success:123");
        assert_eq!(e.event_type, "charge.success");
        assert_eq!(e.resource_id.as_deref(), Some("ref-001"));
        assert_eq!(e.occurred_at, at("2024-05-01T10:00:00Z"));
        assert_eq!(e.payload, serde_json::from_slice::<Value>(BODY).unwrap());
    }

    #[test]
    fn numeric_and_string_data_id_give_the_same_key() {
        let n = parse(json!({"event": "charge.success", "data": {"id": 123}})).unwrap();
        let s = parse(json!({"event": "charge.success", "data": {"id": "123"}})).unwrap();
        assert_eq!(n.external_id, "charge.success:123");
        assert_eq!(s.external_id, "charge.success:123");
    }

    #[test]
    fn refund_without_id_is_keyed_on_the_body_hash() {
        let body = br#"{"event":"refund.processed","data":{"status":"processed","transaction_reference":"ref-001","amount":10000,"currency":"NGN"}}"#;
        let events = provider().parse(body).unwrap();
        // sha256 of exactly these bytes, computed independently (`sha256sum`).
        assert_eq!(
            events[0].external_id,
            "refund.processed:7899e35abf0e60c3e5b3c467ce74063c6a46911e913a7c2cca504e8538f85802"
        );
        assert_eq!(events[0].event_type, "refund.processed");
        assert_eq!(events[0].resource_id, None);
    }

    #[test]
    fn null_data_id_is_keyed_on_the_body_hash() {
        let body = br#"{"event":"refund.processed","data":{"id":null}}"#;
        let events = provider().parse(body).unwrap();
        assert_eq!(
            events[0].external_id,
            format!("refund.processed:{}", json::sha256_hex(body))
        );
    }

    #[test]
    fn fractional_data_id_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": {"id": 12.5}})),
            "data.id must be a string or an integer, not a fractional number"
        );
    }

    #[test]
    fn boolean_or_object_data_id_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": {"id": true}})),
            "data.id must be a string or an integer, not a boolean"
        );
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": {"id": {"n": 1}}})),
            "data.id must be a string or an integer, not an object"
        );
    }

    #[test]
    fn empty_string_data_id_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": {"id": ""}})),
            "data.id is empty"
        );
    }

    #[test]
    fn missing_event_is_refused() {
        assert_eq!(parse_err(json!({"data": {"id": 1}})), "event is missing");
    }

    #[test]
    fn non_string_event_is_refused() {
        assert_eq!(
            parse_err(json!({"event": 5, "data": {"id": 1}})),
            "event must be a string, not a number"
        );
    }

    #[test]
    fn missing_data_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success"})),
            "data is missing"
        );
    }

    #[test]
    fn data_that_is_not_an_object_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": [1]})),
            "data must be an object, not an array"
        );
    }

    #[test]
    fn non_string_reference_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.success", "data": {"id": 1, "reference": 7}})),
            "data.reference must be a string, not a number"
        );
    }

    #[test]
    fn occurred_at_falls_back_through_the_spellings() {
        let e = parse(json!({"event": "x", "data": {"id": 1,
            "paid_at": null, "created_at": "not a date", "createdAt": "2024-05-01T09:00:00Z"}}))
        .unwrap();
        assert_eq!(e.occurred_at, at("2024-05-01T09:00:00Z"));
        let e = parse(
            json!({"event": "x", "data": {"id": 1, "created_at": "2024-05-01T08:00:00+01:00"}}),
        )
        .unwrap();
        assert_eq!(e.occurred_at, at("2024-05-01T07:00:00Z"));
    }

    #[test]
    fn unparseable_dates_give_no_occurred_at() {
        let e = parse(json!({"event": "x", "data": {"id": 1, "paid_at": 1714550400, "created_at": "yesterday"}}))
            .unwrap();
        assert_eq!(e.occurred_at, None);
    }

    #[test]
    fn body_that_is_not_an_object_is_refused() {
        assert_eq!(
            parse_err(json!("charge.success")),
            "the body must be a JSON object"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let body = br#"{"event":"charge.success","data":{"id":1,"amount":100,"amount":1}}"#;
        let e = provider().parse(body).unwrap_err().0;
        assert!(
            e.starts_with(r#"duplicate key "amount" in an object"#),
            "{e}"
        );
    }
}
