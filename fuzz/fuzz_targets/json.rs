//! The strict JSON parser: parses exactly like serde_json except that it refuses duplicate
//! keys, and never panics; the field readers the providers use never panic either, and what
//! they accept keeps their promises (ids non-empty, bounded, without control characters).
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhook_shared::json;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let strict = json::parse_strict(data);
    let loose = serde_json::from_slice::<Value>(data);
    match (&strict, &loose) {
        (Ok(s), Ok(l)) => assert_eq!(s, l, "strict and serde_json disagree"),
        (Ok(_), Err(e)) => panic!("strict parser accepted what serde_json refuses: {e}"),
        (Err(e), Ok(_)) => assert!(e.starts_with("duplicate key "), "{e}"),
        (Err(_), Err(_)) => {}
    }

    let Ok(top) = json::parse_object(data) else {
        return;
    };
    assert_eq!(strict.as_ref().ok(), Some(&Value::Object(top.clone())));
    assert!(!payhook_fuzz::holds_nul(&Value::Object(top.clone())));

    for (key, value) in &top {
        let _ = json::type_name(value);
        if let Ok(id) = json::id(&top, "", key) {
            assert!(!id.is_empty() && id.len() <= json::MAX_ID_BYTES);
            assert!(!id.chars().any(char::is_control));
        }
        if let Ok(Some(id)) = json::optional_id_or_integer(&top, "", key) {
            assert!(!id.is_empty());
        }
        let _ = json::timestamp(&top, "data", key);
        let _ = json::lenient_timestamp(&top, key);
        if let Value::Object(inner) = value {
            let _ = json::object(&top, "", key);
            for k in inner.keys() {
                let _ = json::optional_id(inner, key, k);
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = payhook_shared::money::raw_scalar_at(text, &["data", "amount"]);
    }
});
