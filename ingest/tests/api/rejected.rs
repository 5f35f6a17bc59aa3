//! A genuine delivery is never thrown away: a correctly signed body payhook cannot read is
//! answered 400 and kept in rejected_deliveries (once per body), listed and reparsed through
//! the admin API; a forged one is never kept; if it cannot be kept, the answer is 503.
//! (Every content refusal of the bad-input matrix also asserts its row: `bad_input.rs`.)

use serde_json::Value;

use crate::helpers::*;

/// A PayQI body whose event id is over the 255-byte limit: refused by this version, read once
/// the limit is raised (`PAYHOOK_MAX_ID_BYTES`), as after an upgrade.
fn long_id_body() -> String {
    format!(
        r#"{{"id":"{}","type":"payment.completed","created":1764000000,"data":{{"id":"p-long","amount":"12.50","currency":"GBP","status":"succeeded","metadata":{{"order_id":"ORD-9"}}}}}}"#,
        "e".repeat(300)
    )
}

/// Sends [`long_id_body`], refused and kept; returns its rejected_deliveries id.
async fn reject_long_id(app: &TestApp) -> i64 {
    assert_eq!(
        app.send(Gateway::PayQi, &long_id_body()).await.status(),
        400
    );
    sqlx::query_scalar("SELECT id FROM rejected_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_gateways_resends_of_a_rejected_body_add_attempts_to_its_one_row() {
    let app = spawn_app().await;
    let body = br#"{"events":{"id":"EV1"}}"#.to_vec();
    for _ in 0..3 {
        let res = app
            .post(
                "gocardless",
                body.clone(),
                &Gateway::GoCardless.sign(NEW_SECRET, &body),
            )
            .await;
        assert_eq!(res.status(), 400);
    }
    let rows = app.rejected().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].3, 3, "three attempts on one row");
    app.assert_nothing_accepted().await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"payhook_rejected_deliveries_total{provider="gocardless"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"payhook_rejected_deliveries_total{provider="paystack"} 0"#),
        "every mounted gateway's counter exists from the start: {metrics}"
    );
}

#[tokio::test]
async fn a_rejected_body_is_kept_with_its_signature_headers_so_it_can_be_reverified() {
    let app = spawn_app().await;
    let body = b"not json at all".to_vec();
    let headers = Gateway::Paystack.sign(NEW_SECRET, &body);
    assert_eq!(app.post("paystack", body, &headers).await.status(), 400);
    let kept: Value = sqlx::query_scalar("SELECT headers FROM rejected_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept["x-paystack-signature"], headers[0].1.as_str());
}

#[tokio::test]
async fn a_forged_unreadable_body_is_never_kept() {
    let app = spawn_app().await;
    let body = br#"{"events":{"id":"EV1"}}"#.to_vec();
    let res = app
        .post(
            "gocardless",
            body.clone(),
            &Gateway::GoCardless.sign("not-the-secret", &body),
        )
        .await;
    assert_eq!(res.status(), 498);
    app.assert_nothing_persisted().await;
}

#[tokio::test]
async fn a_rejected_body_that_cannot_be_kept_is_answered_503_so_the_gateway_retries() {
    let (app, proxy) = app_behind_database_proxy().await;
    proxy.cut();
    let res = app.send(Gateway::PayQi, "[]").await;
    assert_eq!(
        res.status(),
        503,
        "never a 400 for a body that was not kept"
    );
    proxy.restore();
    app.assert_nothing_persisted().await;
    // The gateway's retry, once PostgreSQL is back, is kept.
    assert_eq!(app.send(Gateway::PayQi, "[]").await.status(), 400);
    assert_eq!(app.rejected().await.len(), 1);
}

#[tokio::test]
async fn the_admin_api_lists_a_rejected_delivery_and_shows_its_body() {
    let app = spawn_app().await;
    assert_eq!(app.send(Gateway::Flutterwave, "[1, 2]").await.status(), 400);
    let (status, page) = app.admin_get("rejected").await;
    assert_eq!(status, 200, "{page}");
    let item = &page["items"][0];
    assert_eq!(item["provider"], "flutterwave");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["reason"], "the body must be a JSON object");
    assert!(item["reparsed_at"].is_null());
    assert!(item.get("body").is_none(), "lists leave the body out");
    assert_eq!(page["next"], Value::Null);

    let (status, one) = app.admin_get(&format!("rejected/{}", item["id"])).await;
    assert_eq!(status, 200);
    assert_eq!(one["body"], "[1, 2]");
    let (_, stats) = app.admin_get("stats").await;
    assert_eq!(stats["rejected"], 1);
    let (_, other) = app.admin_get("rejected?provider=paystack").await;
    assert_eq!(other["items"], Value::Array(vec![]));
}

#[tokio::test]
async fn the_rejected_calls_refuse_bad_ids_unknown_ids_and_missing_tokens() {
    let app = spawn_app().await;
    assert_eq!(app.admin_get("rejected/abc").await.0, 400);
    assert_eq!(app.admin_get("rejected/99").await.0, 404);
    assert_eq!(app.admin_post("rejected/99/reparse", None).await.0, 404);
    assert_eq!(app.admin_get("rejected?provider=stripe").await.0, 400);
    let res = app
        .client
        .get(app.admin_url("rejected"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_reparse_that_this_version_still_refuses_says_why_and_ingests_nothing() {
    let app = spawn_app().await;
    let id = reject_long_id(&app).await;
    let (status, res) = app
        .admin_post(&format!("rejected/{id}/reparse"), None)
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["outcome"], "still_rejected");
    assert_eq!(res["reason"], "id is longer than 255 bytes");
    assert!(res["rejected"]["reparsed_at"].is_null());
    app.assert_nothing_accepted().await;
}

#[tokio::test]
async fn a_rejected_body_reparsed_after_the_fix_is_stored_and_published_once_however_often() {
    let app = spawn_app().await;
    let id = reject_long_id(&app).await;
    // The upgrade: this process now reads longer ids (PAYHOOK_MAX_ID_BYTES at start).
    payhook_shared::json::set_max_id_bytes(1000);

    let (status, res) = app
        .admin_post(&format!("rejected/{id}/reparse"), None)
        .await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["outcome"], "ingested");
    assert_eq!(res["new_event_ids"].as_array().map(Vec::len), Some(1));
    assert!(res["rejected"]["reparsed_at"].is_string());
    let events = app.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "e".repeat(300));
    let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        body,
        long_id_body().into_bytes(),
        "the raw body, as received"
    );
    let published = app.published(10).await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].routing_key, "payqi.payment.completed");

    // Again: dedup on the gateway's id, as for any resend.
    let (_, again) = app
        .admin_post(&format!("rejected/{id}/reparse"), None)
        .await;
    assert_eq!(again["outcome"], "ingested");
    assert_eq!(again["new_event_ids"], Value::Array(vec![]));
    assert_eq!(again["duplicates"], 1);
    assert_eq!(app.events().await.len(), 1);
    assert_eq!(app.published(10).await.len(), 0, "published once");
    assert_eq!(app.admin_get("stats").await.1["rejected"], 0);
}
