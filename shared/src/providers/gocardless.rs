//! GoCardless: `Webhook-Signature` is the hex HMAC-SHA256 of the raw body with the endpoint's
//! secret. One delivery batches many events (`{"events": [...], "meta": {...}}`); each event
//! is deduplicated on its own `id`, since GoCardless may resend an event in another batch.
//! GoCardless asks for 498 on a bad signature and may present a client certificate.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::signature::{self, Digest, Secrets};
use super::{Headers, NewEvent, ParseError, Provider, VerifyError};
use crate::json;

const SIGNATURE_HEADER: &str = "Webhook-Signature";

/// More than this in one body is refused rather than half-processed; GoCardless batches far
/// fewer (its documented maximum is 250), so the cap only bounds what a body can make us do.
pub const MAX_EVENTS: usize = 1000;

pub struct GoCardless {
    secrets: Secrets,
}

impl GoCardless {
    pub fn new(secrets: Secrets) -> Self {
        Self { secrets }
    }
}

impl Provider for GoCardless {
    fn name(&self) -> &'static str {
        "gocardless"
    }

    fn accepted_status(&self) -> u16 {
        204
    }

    fn rejected_signature_status(&self) -> u16 {
        // "498 Invalid Token", as GoCardless's webhook documentation asks.
        498
    }

    fn wants_client_cert(&self) -> bool {
        true
    }

    fn audit_headers(&self) -> &'static [&'static str] {
        &[
            "content-type",
            "user-agent",
            "x-forwarded-for",
            "x-request-id",
            "origin",
            "webhook-signature",
        ]
    }

    fn verify(&self, headers: &Headers, body: &[u8], _now: i64) -> Result<(), VerifyError> {
        signature::verify_hex_hmac(
            SIGNATURE_HEADER,
            headers.get(SIGNATURE_HEADER),
            Digest::Sha256,
            &self.secrets,
            body,
        )
    }

    fn parse(&self, body: &[u8]) -> Result<Vec<NewEvent>, ParseError> {
        parse_events(body).map_err(ParseError)
    }
}

fn parse_events(body: &[u8]) -> Result<Vec<NewEvent>, String> {
    let mut top = json::parse_object(body)?;
    let events = match top.remove("events") {
        None | Some(Value::Null) => return Err("events is missing".into()),
        Some(Value::Array(events)) => events,
        Some(other) => {
            return Err(format!(
                "events must be an array, not {}",
                json::type_name(&other)
            ))
        }
    };
    if events.is_empty() {
        return Err("events is empty".into());
    }
    if events.len() > MAX_EVENTS {
        return Err(format!(
            "events has {} elements; at most {MAX_EVENTS} are accepted in one body",
            events.len()
        ));
    }
    let mut seen = HashSet::with_capacity(events.len());
    let mut out = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let path = format!("events[{i}]");
        let Value::Object(event) = event else {
            return Err(format!(
                "{path} must be an object, not {}",
                json::type_name(&event)
            ));
        };
        let new = parse_event(event, &path)?;
        // An event named twice is stored once, as its first copy (the raw body, kept whole in
        // webhook_deliveries, still shows both). Refusing the body instead would make
        // GoCardless retry all of it, and its other events would never be stored.
        if seen.insert(new.external_id.clone()) {
            out.push(new);
        }
    }
    Ok(out)
}

fn parse_event(event: Map<String, Value>, path: &str) -> Result<NewEvent, String> {
    let id = json::id(&event, path, "id")?;
    let resource_type = json::id(&event, path, "resource_type")?;
    let action = json::id(&event, path, "action")?;
    let occurred_at = json::timestamp(&event, path, "created_at")?;
    let resource_id = match json::get(&event, "links") {
        None => None,
        Some(Value::Object(links)) => match link_name(&resource_type) {
            Some(name) => json::optional_id(links, &json::join(path, "links"), name)?,
            None => None,
        },
        Some(other) => {
            return Err(format!(
                "{path}.links must be an object, not {}",
                json::type_name(other)
            ))
        }
    };
    Ok(NewEvent {
        external_id: id,
        event_type: format!("{resource_type}.{action}"),
        resource_id,
        payload: Value::Object(event),
        occurred_at,
    })
}

/// The `links` member naming the resource an event is about: the singular of its
/// `resource_type`. Other resource types have no resource id.
fn link_name(resource_type: &str) -> Option<&'static str> {
    Some(match resource_type {
        "payments" => "payment",
        "mandates" => "mandate",
        "refunds" => "refund",
        "payouts" => "payout",
        "subscriptions" => "subscription",
        "customers" => "customer",
        // Bank-account data (DESIGN.md, "Bank data"): singular resource types; an
        // authorization is about its connection.
        "transaction" => "transaction",
        "connection" | "authorization" => "connection",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    const BODY: &[u8] = br#"{"events":[{"id":"EV123","created_at":"2024-05-01T10:00:00.000Z","resource_type":"mandates","action":"created","links":{"mandate":"MD123"},"details":{"origin":"api"},"metadata":{}}],"meta":{"webhook_id":"WB123"}}"#;

    fn provider() -> GoCardless {
        GoCardless::new("old-secret,new-secret".parse().unwrap())
    }

    fn headers(sig: &str) -> Headers {
        [("Webhook-Signature", sig.as_bytes())]
            .into_iter()
            .collect()
    }

    fn signed(key: &str, body: &[u8]) -> Headers {
        headers(&signature::sign_hex(Digest::Sha256, key.as_bytes(), body))
    }

    fn parse(v: Value) -> Result<Vec<NewEvent>, ParseError> {
        provider().parse(v.to_string().as_bytes())
    }

    fn parse_err(v: Value) -> String {
        parse(v).unwrap_err().0
    }

    fn event() -> Value {
        json!({"id": "EV1", "resource_type": "payments", "action": "confirmed",
               "links": {"payment": "PM1"}, "created_at": "2024-05-01T10:00:00Z"})
    }

    #[test]
    fn answers_as_gocardless_expects() {
        let p = provider();
        assert_eq!(p.name(), "gocardless");
        assert_eq!(p.accepted_status(), 204);
        assert_eq!(p.rejected_signature_status(), 498);
        assert!(p.wants_client_cert());
    }

    #[test]
    fn audit_headers_keep_the_signature() {
        assert!(provider().audit_headers().contains(&"webhook-signature"));
    }

    #[test]
    fn valid_signature_is_accepted() {
        assert_eq!(
            provider().verify(&signed("new-secret", BODY), BODY, 0),
            Ok(())
        );
    }

    #[test]
    fn header_name_is_case_insensitive() {
        let sig = signature::sign_hex(Digest::Sha256, b"new-secret", BODY);
        let h: Headers = [("webhook-signature", sig.as_bytes())]
            .into_iter()
            .collect();
        assert_eq!(provider().verify(&h, BODY, 0), Ok(()));
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
    fn altered_body_is_refused() {
        let r = provider().verify(&signed("new-secret", BODY), b"{\"events\":[]}", 0);
        assert_eq!(r, Err(VerifyError::Mismatch));
    }

    #[test]
    fn missing_header_is_refused() {
        let r = provider().verify(&Headers::new(), BODY, 0);
        assert_eq!(r, Err(VerifyError::MissingHeader("Webhook-Signature")));
    }

    #[test]
    fn empty_header_is_refused() {
        let r = provider().verify(&headers(""), BODY, 0);
        assert_eq!(r, Err(VerifyError::MissingHeader("Webhook-Signature")));
    }

    #[test]
    fn truncated_signature_is_refused() {
        let sig = signature::sign_hex(Digest::Sha256, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig[..62]), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("Webhook-Signature")));
    }

    #[test]
    fn odd_length_hex_is_refused() {
        let sig = signature::sign_hex(Digest::Sha256, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig[..63]), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("Webhook-Signature")));
    }

    #[test]
    fn non_hex_signature_is_refused() {
        let r = provider().verify(&headers(&"zz".repeat(32)), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("Webhook-Signature")));
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let sig = signature::sign_hex(Digest::Sha256, b"new-secret", BODY).to_uppercase();
        assert_eq!(provider().verify(&headers(&sig), BODY, 0), Ok(()));
    }

    #[test]
    fn sha512_signature_is_refused() {
        let sig = signature::sign_hex(Digest::Sha512, b"new-secret", BODY);
        let r = provider().verify(&headers(&sig), BODY, 0);
        assert_eq!(r, Err(VerifyError::Malformed("Webhook-Signature")));
    }

    #[test]
    fn parses_the_fields_of_an_event() {
        let events = provider().parse(BODY).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.external_id, "EV123");
        assert_eq!(e.event_type, "mandates.created");
        assert_eq!(e.resource_id.as_deref(), Some("MD123"));
        assert_eq!(
            e.occurred_at,
            Some("2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert_eq!(e.payload["details"]["origin"], "api");
    }

    #[test]
    fn payload_is_the_single_event_not_the_body() {
        let events = provider().parse(BODY).unwrap();
        assert_eq!(events[0].payload["id"], "EV123");
        assert!(events[0].payload.get("meta").is_none());
        assert!(events[0].payload.get("events").is_none());
    }

    #[test]
    fn every_event_of_a_body_is_returned_in_order() {
        let mut second = event();
        second["id"] = json!("EV2");
        second["resource_type"] = json!("refunds");
        second["action"] = json!("paid");
        second["links"] = json!({"refund": "RF1", "payment": "PM1"});
        let events = parse(json!({"events": [event(), second], "meta": {}})).unwrap();
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.external_id.as_str(),
                    e.event_type.as_str(),
                    e.resource_id.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("EV1", "payments.confirmed", Some("PM1")),
                ("EV2", "refunds.paid", Some("RF1"))
            ]
        );
    }

    #[test]
    fn resource_id_follows_the_resource_type() {
        for (rt, link) in [
            ("payments", "payment"),
            ("mandates", "mandate"),
            ("refunds", "refund"),
            ("payouts", "payout"),
            ("subscriptions", "subscription"),
            ("customers", "customer"),
        ] {
            let mut e = event();
            e["resource_type"] = json!(rt);
            e["links"] = json!({ link: "X1", "creditor": "CR1" });
            let got = parse(json!({ "events": [e] })).unwrap();
            assert_eq!(got[0].resource_id.as_deref(), Some("X1"), "{rt}");
        }
    }

    #[test]
    fn unknown_resource_type_has_no_resource_id() {
        let mut e = event();
        e["resource_type"] = json!("creditors");
        e["links"] = json!({"creditor": "CR1"});
        let got = parse(json!({ "events": [e] })).unwrap();
        assert_eq!(got[0].event_type, "creditors.confirmed");
        assert_eq!(got[0].resource_id, None);
    }

    #[test]
    fn missing_links_give_no_resource_id() {
        let mut e = event();
        e.as_object_mut().unwrap().remove("links");
        assert_eq!(
            parse(json!({ "events": [e] })).unwrap()[0].resource_id,
            None
        );
    }

    #[test]
    fn links_that_are_not_an_object_are_refused() {
        let mut e = event();
        e["links"] = json!(["PM1"]);
        assert_eq!(
            parse_err(json!({ "events": [e] })),
            "events[0].links must be an object, not an array"
        );
    }

    #[test]
    fn a_non_string_link_is_refused() {
        let mut e = event();
        e["links"] = json!({"payment": 5});
        assert_eq!(
            parse_err(json!({ "events": [e] })),
            "events[0].links.payment must be a string, not a number"
        );
    }

    #[test]
    fn missing_created_at_gives_no_occurred_at() {
        let mut e = event();
        e.as_object_mut().unwrap().remove("created_at");
        assert_eq!(
            parse(json!({ "events": [e] })).unwrap()[0].occurred_at,
            None
        );
    }

    #[test]
    fn unparseable_created_at_is_refused() {
        let mut e = event();
        e["created_at"] = json!("01/05/2024");
        assert_eq!(
            parse_err(json!({ "events": [event(), e] })),
            "events[1].created_at is not an RFC 3339 timestamp"
        );
    }

    #[test]
    fn missing_id_is_refused_naming_the_event() {
        let mut second = event();
        second["id"] = json!("EV2");
        let mut e = event();
        e.as_object_mut().unwrap().remove("id");
        assert_eq!(
            parse_err(json!({ "events": [event(), second, e] })),
            "events[2].id is missing"
        );
    }

    #[test]
    fn an_id_repeated_in_one_body_is_one_event_its_first_copy() {
        let mut second = event();
        second["id"] = json!("EV2");
        let mut again = event();
        again["action"] = json!("failed");
        let events = parse(json!({ "events": [event(), second, again] })).unwrap();
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.external_id.as_str(), e.event_type.as_str()))
            .collect();
        assert_eq!(
            got,
            [("EV1", "payments.confirmed"), ("EV2", "payments.confirmed")]
        );
    }

    #[test]
    fn a_repeated_event_is_still_checked() {
        let mut again = event();
        again["created_at"] = json!("yesterday");
        assert_eq!(
            parse_err(json!({ "events": [event(), again] })),
            "events[1].created_at is not an RFC 3339 timestamp"
        );
    }

    #[test]
    fn missing_resource_type_or_action_is_refused() {
        for field in ["resource_type", "action"] {
            let mut e = event();
            e.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse_err(json!({ "events": [e] })),
                format!("events[0].{field} is missing")
            );
        }
    }

    #[test]
    fn empty_id_is_refused() {
        let mut e = event();
        e["id"] = json!("");
        assert_eq!(parse_err(json!({ "events": [e] })), "events[0].id is empty");
    }

    #[test]
    fn numeric_id_is_refused() {
        let mut e = event();
        e["id"] = json!(17);
        assert_eq!(
            parse_err(json!({ "events": [e] })),
            "events[0].id must be a string, not a number"
        );
    }

    #[test]
    fn id_with_a_control_character_is_refused() {
        let mut e = event();
        e["action"] = json!("created\n");
        assert_eq!(
            parse_err(json!({ "events": [e] })),
            "events[0].action contains a control character"
        );
    }

    #[test]
    fn overlong_id_is_refused() {
        let mut e = event();
        e["id"] = json!("E".repeat(256));
        assert_eq!(
            parse_err(json!({ "events": [e] })),
            "events[0].id is longer than 255 bytes"
        );
        e["id"] = json!("E".repeat(255));
        assert!(parse(json!({ "events": [e] })).is_ok());
    }

    #[test]
    fn missing_events_is_refused() {
        assert_eq!(parse_err(json!({"meta": {}})), "events is missing");
    }

    #[test]
    fn empty_events_is_refused() {
        assert_eq!(parse_err(json!({"events": []})), "events is empty");
    }

    #[test]
    fn events_that_is_not_an_array_is_refused() {
        assert_eq!(
            parse_err(json!({"events": event()})),
            "events must be an array, not an object"
        );
        assert_eq!(
            parse_err(json!({"events": "EV1"})),
            "events must be an array, not a string"
        );
    }

    #[test]
    fn an_event_that_is_not_an_object_is_refused() {
        assert_eq!(
            parse_err(json!({"events": [event(), [event()]]})),
            "events[1] must be an object, not an array"
        );
        assert_eq!(
            parse_err(json!({"events": ["EV1"]})),
            "events[0] must be an object, not a string"
        );
    }

    #[test]
    fn at_most_1000_events_are_accepted() {
        let many = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| {
                    let mut e = event();
                    e["id"] = json!(format!("EV{i}"));
                    e
                })
                .collect()
        };
        assert_eq!(parse(json!({ "events": many(1000) })).unwrap().len(), 1000);
        assert_eq!(
            parse_err(json!({ "events": many(1001) })),
            "events has 1001 elements; at most 1000 are accepted in one body"
        );
    }

    #[test]
    fn body_that_is_not_an_object_is_refused() {
        assert_eq!(
            parse_err(json!([event()])),
            "the body must be a JSON object"
        );
    }

    #[test]
    fn body_that_is_not_json_is_refused() {
        let e = provider().parse(b"events=EV1").unwrap_err().0;
        assert!(e.starts_with("invalid JSON:"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let body = br#"{"events":[{"id":"EV1","id":"EV2","resource_type":"payments","action":"created"}]}"#;
        let e = provider().parse(body).unwrap_err().0;
        assert!(e.starts_with(r#"duplicate key "id" in an object"#), "{e}");
    }

    #[test]
    fn messages_do_not_echo_values() {
        let mut e = event();
        e["created_at"] = json!("jane@example.com");
        let msg = parse_err(json!({ "events": [e] }));
        assert!(!msg.contains("jane"), "{msg}");
    }
}
