//! Flutterwave: no HMAC; the `verif-hash` header carries the "secret hash" configured in the
//! dashboard, compared in constant time with each configured secret. That header IS the
//! secret, so it is never kept in the audit trail. One event per body
//! (`{"event": "charge.completed", "data": {...}}`), deduplicated on `event:data.id`, or on
//! `event:` + the body's SHA-256 when `data` carries no id.

use serde_json::Value;

use super::signature::{self, Secrets};
use super::{Headers, NewEvent, ParseError, Provider, VerifyError};
use crate::json;

const SECRET_HEADER: &str = "verif-hash";

pub struct Flutterwave {
    secrets: Secrets,
}

impl Flutterwave {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets }
    }
}

impl Provider for Flutterwave {
    fn name(&self) -> &'static str {
        "flutterwave"
    }

    fn verify(&self, headers: &Headers, _body: &[u8], _now: i64) -> Result<(), VerifyError> {
        signature::verify_shared_secret(SECRET_HEADER, headers.get(SECRET_HEADER), &self.secrets)
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
    let resource_id = json::optional_id(data, "data", "tx_ref")?;
    // Informative only; not worth refusing a delivery over.
    let occurred_at = json::lenient_timestamp(data, "created_at");
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

    const BODY: &[u8] = br#"{"event":"charge.completed","data":{"id":285959875,"tx_ref":"order-42","flw_ref":"FLW-1","amount":100.5,"currency":"NGN","status":"successful","created_at":"2024-05-01T10:00:00.000Z","customer":{"email":"someone@example.com"}},"event.type":"CARD_TRANSACTION"}"#;

    fn provider() -> Flutterwave {
        Flutterwave::new("old-hash,new-hash".parse().unwrap())
    }

    fn headers(value: &str) -> Headers {
        [("verif-hash", value.as_bytes())].into_iter().collect()
    }

    fn parse(v: Value) -> Result<NewEvent, ParseError> {
        let mut events = provider().parse(v.to_string().as_bytes())?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    fn parse_err(v: Value) -> String {
        parse(v).unwrap_err().0
    }

    #[test]
    fn answers_as_flutterwave_expects() {
        let p = provider();
        assert_eq!(p.name(), "flutterwave");
        assert_eq!(p.accepted_status(), 200);
        assert_eq!(p.rejected_signature_status(), 401);
        assert!(!p.wants_client_cert());
    }

    #[test]
    fn audit_headers_never_hold_the_secret_hash() {
        assert!(!provider()
            .audit_headers()
            .iter()
            .any(|h| h.eq_ignore_ascii_case("verif-hash")));
    }

    #[test]
    fn valid_secret_hash_is_accepted() {
        assert_eq!(provider().verify(&headers("new-hash"), BODY, 0), Ok(()));
    }

    #[test]
    fn header_name_is_case_insensitive() {
        let h: Headers = [("Verif-Hash", b"new-hash".as_slice())]
            .into_iter()
            .collect();
        assert_eq!(provider().verify(&h, BODY, 0), Ok(()));
    }

    #[test]
    fn second_secret_of_a_rotation_is_accepted() {
        assert_eq!(provider().verify(&headers("old-hash"), BODY, 0), Ok(()));
    }

    #[test]
    fn wrong_secret_is_refused() {
        assert_eq!(
            provider().verify(&headers("other-hash"), BODY, 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn missing_header_is_refused() {
        let r = provider().verify(&Headers::new(), BODY, 0);
        assert_eq!(r, Err(VerifyError::MissingHeader("verif-hash")));
    }

    #[test]
    fn empty_header_is_refused() {
        assert_eq!(
            provider().verify(&headers(""), BODY, 0),
            Err(VerifyError::MissingHeader("verif-hash"))
        );
    }

    #[test]
    fn prefix_of_the_secret_is_refused() {
        assert_eq!(
            provider().verify(&headers("new-has"), BODY, 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn secret_with_extra_characters_is_refused() {
        assert_eq!(
            provider().verify(&headers("new-hashX"), BODY, 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn secret_in_another_case_is_refused() {
        assert_eq!(
            provider().verify(&headers("NEW-HASH"), BODY, 0),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn parses_the_fields_of_a_charge() {
        let events = provider().parse(BODY).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.external_id, "charge.completed:285959875");
        assert_eq!(e.event_type, "charge.completed");
        assert_eq!(e.resource_id.as_deref(), Some("order-42"));
        assert_eq!(
            e.occurred_at,
            Some("2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert_eq!(e.payload, serde_json::from_slice::<Value>(BODY).unwrap());
    }

    #[test]
    fn numeric_and_string_data_id_give_the_same_key() {
        let n = parse(json!({"event": "charge.completed", "data": {"id": 123}})).unwrap();
        let s = parse(json!({"event": "charge.completed", "data": {"id": "123"}})).unwrap();
        assert_eq!(n.external_id, "charge.completed:123");
        assert_eq!(s.external_id, n.external_id);
    }

    #[test]
    fn missing_data_id_is_keyed_on_the_body_hash() {
        let body = br#"{"event":"transfer.completed","data":{"tx_ref":"t-1"}}"#;
        let events = provider().parse(body).unwrap();
        assert_eq!(
            events[0].external_id,
            format!("transfer.completed:{}", json::sha256_hex(body))
        );
    }

    #[test]
    fn fractional_data_id_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.completed", "data": {"id": 1.5}})),
            "data.id must be a string or an integer, not a fractional number"
        );
    }

    #[test]
    fn boolean_data_id_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.completed", "data": {"id": false}})),
            "data.id must be a string or an integer, not a boolean"
        );
    }

    #[test]
    fn missing_event_is_refused() {
        // `event.type` is a different member; only `event` names the event.
        assert_eq!(
            parse_err(json!({"event.type": "CARD_TRANSACTION", "data": {"id": 1}})),
            "event is missing"
        );
    }

    #[test]
    fn empty_event_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "", "data": {"id": 1}})),
            "event is empty"
        );
    }

    #[test]
    fn missing_data_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.completed"})),
            "data is missing"
        );
    }

    #[test]
    fn data_that_is_not_an_object_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.completed", "data": "x"})),
            "data must be an object, not a string"
        );
    }

    #[test]
    fn non_string_tx_ref_is_refused() {
        assert_eq!(
            parse_err(json!({"event": "charge.completed", "data": {"id": 1, "tx_ref": 42}})),
            "data.tx_ref must be a string, not a number"
        );
    }

    #[test]
    fn unparseable_created_at_gives_no_occurred_at() {
        let e =
            parse(json!({"event": "charge.completed", "data": {"id": 1, "created_at": "1 May"}}))
                .unwrap();
        assert_eq!(e.occurred_at, None);
    }

    #[test]
    fn body_that_is_not_an_object_is_refused() {
        assert_eq!(parse_err(json!(null)), "the body must be a JSON object");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let body = br#"{"event":"charge.completed","event":"charge.failed","data":{"id":1}}"#;
        let e = provider().parse(body).unwrap_err().0;
        assert!(
            e.starts_with(r#"duplicate key "event" in an object"#),
            "{e}"
        );
    }
}
