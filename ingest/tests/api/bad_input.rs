//! The bad-input matrix: each malformed request gets its clear 4xx, nothing is stored, and the
//! service still accepts the next valid delivery.

use crate::helpers::*;

/// Sends `body` correctly signed by `gw`, expects `status` (with a JSON error for 4xx bodies),
/// no delivery or event stored, the genuine body kept in rejected_deliveries with the reason
/// the gateway was told (a 400 is a refusal of its content), and a valid delivery accepted
/// right after.
async fn assert_bad_input(gw: Gateway, body: Vec<u8>, status: u16) {
    let app = spawn_app().await;
    let headers = gw.sign(NEW_SECRET, &body);
    let res = app.post(gw.name(), body.clone(), &headers).await;
    assert_eq!(res.status().as_u16(), status);
    let err: serde_json::Value = res.json().await.expect("a JSON error body");
    let reason = err["error"].as_str().unwrap_or_default().to_owned();
    assert!(!reason.is_empty(), "{err}");
    app.assert_nothing_accepted().await;
    assert_eq!(
        app.rejected().await,
        vec![(gw.name().to_owned(), body, reason, 1)],
        "the genuine body is kept once, with the reason"
    );
    let ok = app.send(gw, &gw.sample("after")).await;
    assert_eq!(
        ok.status().as_u16(),
        gw.accepted(),
        "the service still accepts valid deliveries"
    );
}

fn gc_event(fields: &str) -> Vec<u8> {
    format!(r#"{{"events":[{fields}],"meta":{{"webhook_id":"WB1"}}}}"#).into_bytes()
}

const GC_OK: &str = r#"{"id":"EV1","created_at":"2026-11-24T10:00:00Z","resource_type":"payments","action":"confirmed","links":{"payment":"PM1"}}"#;

macro_rules! bad_input {
    ($($name:ident: $gw:expr, $body:expr => $status:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            assert_bad_input($gw, $body, $status).await;
        }
    )*};
}

bad_input! {
    a_body_that_is_not_json_is_refused: Gateway::Paystack, b"event=charge.success".to_vec() => 400;
    an_empty_body_is_refused: Gateway::GoCardless, Vec::new() => 400;
    a_json_array_at_the_top_is_refused: Gateway::PayQi, b"[]".to_vec() => 400;
    a_json_string_at_the_top_is_refused: Gateway::Flutterwave, br#""charge.completed""#.to_vec() => 400;
    json_null_is_refused: Gateway::Paystack, b"null".to_vec() => 400;
    invalid_utf8_is_refused: Gateway::Paystack, b"{\"event\":\"charge.success\",\"data\":{\"id\":\"\xff\xfe\"}}".to_vec() => 400;
    trailing_bytes_after_the_json_are_refused: Gateway::PayQi, [Gateway::PayQi.sample("x").into_bytes(), b" {}".to_vec()].concat() => 400;
    a_truncated_json_body_is_refused: Gateway::Flutterwave, br#"{"event":"charge.completed","data":{"id":1"#.to_vec() => 400;
    a_duplicate_key_at_the_top_is_refused: Gateway::Paystack, br#"{"event":"charge.success","event":"refund.processed","data":{"id":1}}"#.to_vec() => 400;
    a_duplicate_key_in_a_nested_object_is_refused: Gateway::Flutterwave, br#"{"event":"charge.completed","data":{"id":1,"amount":"1.00","amount":"1000.00"}}"#.to_vec() => 400;
    gocardless_events_that_are_not_an_array_are_refused: Gateway::GoCardless, br#"{"events":{"id":"EV1"}}"#.to_vec() => 400;
    gocardless_without_events_is_refused: Gateway::GoCardless, br#"{"meta":{"webhook_id":"WB1"}}"#.to_vec() => 400;
    gocardless_with_an_empty_event_list_is_refused: Gateway::GoCardless, br#"{"events":[]}"#.to_vec() => 400;
    gocardless_nested_arrays_are_refused: Gateway::GoCardless, format!(r#"{{"events":[[{GC_OK}]]}}"#).into_bytes() => 400;
    a_gocardless_event_without_an_id_is_refused: Gateway::GoCardless, gc_event(r#"{"resource_type":"payments","action":"confirmed"}"#) => 400;
    a_gocardless_event_with_a_numeric_id_is_refused: Gateway::GoCardless, gc_event(r#"{"id":12,"resource_type":"payments","action":"confirmed"}"#) => 400;
    a_gocardless_event_without_a_resource_type_is_refused: Gateway::GoCardless, gc_event(r#"{"id":"EV1","action":"confirmed"}"#) => 400;
    a_gocardless_body_with_one_bad_event_among_good_ones_is_refused_whole: Gateway::GoCardless, gc_event(&format!(r#"{GC_OK},{{"id":"EV2"}}"#)) => 400;
    a_paystack_body_without_event_is_refused: Gateway::Paystack, br#"{"data":{"id":1}}"#.to_vec() => 400;
    a_paystack_body_whose_data_is_not_an_object_is_refused: Gateway::Paystack, br#"{"event":"charge.success","data":[1]}"#.to_vec() => 400;
    a_paystack_id_that_is_a_fraction_is_refused: Gateway::Paystack, br#"{"event":"charge.success","data":{"id":1.5}}"#.to_vec() => 400;
    a_flutterwave_event_that_is_a_number_is_refused: Gateway::Flutterwave, br#"{"event":7,"data":{"id":1}}"#.to_vec() => 400;
    a_payqi_body_without_id_is_refused: Gateway::PayQi, br#"{"type":"payment.completed","created":1764000000,"data":{"id":"p1"}}"#.to_vec() => 400;
    a_payqi_created_that_is_not_a_time_is_refused: Gateway::PayQi, br#"{"id":"e1","type":"payment.completed","created":true,"data":{"id":"p1"}}"#.to_vec() => 400;
    an_event_id_longer_than_255_bytes_is_refused: Gateway::PayQi, format!(r#"{{"id":"{}","type":"payment.completed","data":{{"id":"p1"}}}}"#, "e".repeat(300)).into_bytes() => 400;
    a_nul_character_that_postgres_cannot_store_is_refused: Gateway::Paystack, br#"{"event":"charge.success","data":{"id":1,"note":"a\u0000b"}}"#.to_vec() => 400;
    json_nested_deeper_than_the_parser_allows_is_refused: Gateway::Paystack, format!(r#"{{"event":"charge.success","data":{{"id":1,"x":{}1{}}}}}"#, "[".repeat(5000), "]".repeat(5000)).into_bytes() => 400;
}

#[tokio::test]
async fn a_get_on_a_webhook_route_is_method_not_allowed() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/webhooks/paystack", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    app.assert_nothing_persisted().await;
    assert_eq!(
        app.send(Gateway::Paystack, &Gateway::Paystack.sample("a"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_put_on_a_webhook_route_is_method_not_allowed() {
    let app = spawn_app().await;
    let body = Gateway::GoCardless.sample("EV1");
    let res = app
        .client
        .put(format!("{}/webhooks/gocardless", app.address))
        .headers(header_map(
            Gateway::GoCardless.sign(NEW_SECRET, body.as_bytes()),
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    app.assert_nothing_persisted().await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_too_large() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"id":"e1","type":"payment.completed","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let headers = Gateway::PayQi.sign(NEW_SECRET, body.as_bytes());
    let res = app.post("payqi", body, &headers).await;
    assert_eq!(res.status(), 413);
    app.assert_nothing_persisted().await;
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("a"))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn a_chunked_body_over_one_mebibyte_is_too_large() {
    let app = spawn_app().await;
    // No Content-Length: the limit must hold while streaming, too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let res = app
        .client
        .post(format!("{}/webhooks/paystack", app.address))
        .header("x-paystack-signature", "00")
        .body(body)
        .send()
        .await;
    // The server may answer 413 and close before reading the rest; either way nothing lands.
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
    }
    app.assert_nothing_persisted().await;
    assert_eq!(
        app.send(Gateway::Paystack, &Gateway::Paystack.sample("a"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unsigned_body_of_garbage_is_refused_before_it_is_parsed() {
    let app = spawn_app().await;
    let res = app.post("gocardless", vec![0u8, 159, 146, 150], &[]).await;
    assert_eq!(res.status(), 498);
    app.assert_nothing_persisted().await;
}

fn header_map(h: Vec<(String, String)>) -> reqwest::header::HeaderMap {
    h.into_iter()
        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
        .collect()
}
