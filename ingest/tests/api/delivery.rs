//! What an accepted delivery leaves behind: rows, the raw body, the audit headers, and one
//! persistent message per new event on the events queue. Duplicates: same answer, a new
//! delivery row (audit trail), no new event, no second message.

use std::collections::HashSet;

use crate::helpers::*;

#[tokio::test]
async fn a_multi_event_gocardless_body_stores_one_delivery_and_one_row_per_event() {
    let app = spawn_app().await;
    let body = gocardless_body(&[
        ("mandates", "created", "EV1"),
        ("payments", "created", "EV2"),
        ("payments", "confirmed", "EV3"),
    ]);
    let res = app.send(Gateway::GoCardless, &body).await;
    assert_eq!(res.status(), 204);
    assert_eq!(app.count("webhook_deliveries").await, 1);
    let events = app.events().await;
    assert_eq!(
        events,
        vec![
            ("EV1".into(), "mandates.created".into(), "published".into()),
            ("EV2".into(), "payments.created".into(), "published".into()),
            (
                "EV3".into(),
                "payments.confirmed".into(),
                "published".into()
            ),
        ]
    );
    let resources: Vec<Option<String>> =
        sqlx::query_scalar("SELECT resource_id FROM webhook_events ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        resources,
        vec![
            Some("MDEV1".into()),
            Some("PMEV2".into()),
            Some("PMEV3".into())
        ]
    );
}

#[tokio::test]
async fn every_new_event_is_published_persistent_with_its_id_and_routing_key() {
    let app = spawn_app().await;
    let body = gocardless_body(&[
        ("mandates", "created", "EV1"),
        ("payments", "confirmed", "EV2"),
    ]);
    assert_eq!(app.send(Gateway::GoCardless, &body).await.status(), 204);

    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let mut messages = app.published(10).await;
    messages.sort_by_key(|m| m.body["id"].as_i64());
    assert_eq!(messages.len(), 2);
    let m = &messages[0];
    assert_eq!(m.exchange, app.env.names().events_exchange());
    assert_eq!(m.routing_key, "gocardless.mandates.created");
    assert_eq!(m.message_id.as_deref(), Some("gocardless:EV1"));
    assert!(m.persistent);
    assert_eq!(
        m.body,
        serde_json::json!({"id": ids[0], "provider": "gocardless", "external_id": "EV1", "event_type": "mandates.created"})
    );
    assert_eq!(messages[1].routing_key, "gocardless.payments.confirmed");
    assert_eq!(messages[1].body["id"], ids[1]);
}

#[tokio::test]
async fn each_gateway_publishes_under_its_own_routing_key() {
    let app = spawn_app().await;
    for gw in ALL {
        let res = app.send(gw, &gw.sample("ev1")).await;
        assert_eq!(res.status().as_u16(), gw.accepted(), "{gw:?}");
    }
    let keys: HashSet<String> = app
        .published(10)
        .await
        .into_iter()
        .map(|m| m.routing_key)
        .collect();
    let expected: HashSet<String> = [
        "gocardless.payments.confirmed",
        "paystack.charge.success",
        "flutterwave.charge.completed",
        "payqi.payment.completed",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys, expected);
    let ids: HashSet<String> = app.events().await.into_iter().map(|e| e.0).collect();
    let expected: HashSet<String> = ALL.iter().map(|g| g.sample_external_id("ev1")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_resent_delivery_is_answered_the_same_and_adds_only_an_audit_row() {
    let app = spawn_app().await;
    let body = gocardless_body(&[
        ("payments", "created", "EV1"),
        ("payments", "submitted", "EV2"),
    ]);
    assert_eq!(app.send(Gateway::GoCardless, &body).await.status(), 204);
    assert_eq!(app.send(Gateway::GoCardless, &body).await.status(), 204);

    assert_eq!(
        app.count("webhook_deliveries").await,
        2,
        "each delivery is audited"
    );
    assert_eq!(
        app.count("webhook_events").await,
        2,
        "no event is stored twice"
    );
    assert_eq!(
        app.published(10).await.len(),
        2,
        "no event is published twice"
    );
}

#[tokio::test]
async fn a_body_that_names_the_same_event_twice_is_accepted_and_the_event_stored_once() {
    let app = spawn_app().await;
    let body = gocardless_body(&[
        ("payments", "created", "EV1"),
        ("payments", "submitted", "EV2"),
        ("payments", "created", "EV1"),
    ]);
    let res = app.send(Gateway::GoCardless, &body).await;
    assert_eq!(res.status(), 204, "{:?}", res.text().await);
    assert_eq!(app.count("webhook_deliveries").await, 1);
    assert_eq!(
        app.events().await,
        vec![
            ("EV1".into(), "payments.created".into(), "published".into()),
            (
                "EV2".into(),
                "payments.submitted".into(),
                "published".into()
            ),
        ]
    );
    let mut ids: Vec<String> = app
        .published(10)
        .await
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["gocardless:EV1", "gocardless:EV2"],
        "each published once"
    );
}

#[tokio::test]
async fn a_paystack_event_resent_by_the_gateway_is_one_event() {
    let app = spawn_app().await;
    let body = Gateway::Paystack.sample("4099260516");
    for _ in 0..3 {
        assert_eq!(app.send(Gateway::Paystack, &body).await.status(), 200);
    }
    assert_eq!(app.count("webhook_events").await, 1);
    assert_eq!(app.count("webhook_deliveries").await, 3);
}

#[tokio::test]
async fn the_raw_body_is_stored_byte_for_byte() {
    let app = spawn_app().await;
    // Odd spacing, key order and escapes: a re-serialized body would differ.
    let body =
        "{ \"event\":\"charge.success\",  \"data\":{\"reference\":\"r\\u00e9f-1\",\"id\":7}\n}";
    assert_eq!(app.send(Gateway::Paystack, body).await.status(), 200);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT body FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, body.as_bytes());
}

#[tokio::test]
async fn the_audit_headers_are_kept_and_no_secret_is() {
    let app = spawn_app().await;
    let body = Gateway::Flutterwave.sample("ev1");
    let mut headers = Gateway::Flutterwave.sign(NEW_SECRET, body.as_bytes());
    headers.push(("User-Agent".into(), "Flutterwave-Webhooks/1.0".into()));
    assert_eq!(app.post("flutterwave", body, &headers).await.status(), 200);
    let stored: serde_json::Value = sqlx::query_scalar("SELECT headers FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored["user-agent"], "Flutterwave-Webhooks/1.0");
    assert!(stored.get("verif-hash").is_none(), "{stored}");
    assert!(!stored.to_string().contains(NEW_SECRET), "{stored}");
}

#[tokio::test]
async fn the_signature_headers_are_kept_so_an_auditor_can_reverify_the_stored_body() {
    let app = spawn_app().await;
    for gw in [Gateway::GoCardless, Gateway::Paystack, Gateway::PayQi] {
        let body = gw.sample("ev1");
        let headers = gw.sign(NEW_SECRET, body.as_bytes());
        let res = app.post(gw.name(), body, &headers).await;
        assert_eq!(res.status().as_u16(), gw.accepted(), "{gw:?}");
        let stored: serde_json::Value =
            sqlx::query_scalar("SELECT headers FROM webhook_deliveries WHERE provider = $1")
                .bind(gw.name())
                .fetch_one(&app.pool)
                .await
                .unwrap();
        for (name, value) in headers {
            assert_eq!(
                stored[name.to_ascii_lowercase()],
                value.as_str(),
                "{gw:?} keeps {name}: {stored}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_deliveries_are_all_stored_and_published_once() {
    let app = spawn_app().await;
    let n = 200;
    let sends = (0..n).map(|i| {
        let app = &app;
        async move {
            // Every 10th delivery repeats an earlier event id: concurrent duplicates.
            let id = if i % 10 == 9 {
                format!("ev{}", i - 1)
            } else {
                format!("ev{i}")
            };
            app.send(Gateway::PayQi, &Gateway::PayQi.sample(&id))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    assert_eq!(app.count("webhook_deliveries").await, n);
    assert_eq!(app.count("webhook_events").await, 180);
    let published: HashSet<String> = app
        .published(400)
        .await
        .into_iter()
        .map(|m| m.message_id.unwrap())
        .collect();
    assert_eq!(published.len(), 180, "each event is on the queue");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT status FROM webhook_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(statuses, vec!["published".to_string()]);
}

#[tokio::test]
async fn a_gateway_without_a_secret_is_not_mounted() {
    let env = payhook_shared::testing::TestEnv::new();
    let mut config = test_config(&env);
    config.secrets.flutterwave = None;
    let app = spawn_app_with(env, config).await;
    let body = Gateway::Flutterwave.sample("ev1");
    let res = app
        .post(
            "flutterwave",
            body.clone(),
            &Gateway::Flutterwave.sign(NEW_SECRET, body.as_bytes()),
        )
        .await;
    assert_eq!(res.status(), 404);
    app.assert_nothing_persisted().await;
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("ev1"))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn an_unknown_gateway_is_not_found() {
    let app = spawn_app().await;
    let res = app.post("stripe", "{}", &[]).await;
    assert_eq!(res.status(), 404);
    app.assert_nothing_persisted().await;
}

#[tokio::test]
async fn an_event_whose_ids_are_at_the_length_limit_is_published_and_ingest_keeps_accepting() {
    let app = spawn_app().await;
    // Within the 255-byte limit, but `paystack:charge.success:<id>` is longer than the 255
    // bytes AMQP carries as a message id: it must not take the publisher down.
    let long = "9".repeat(250);
    let res = app
        .send(Gateway::Paystack, &Gateway::Paystack.sample(&long))
        .await;
    assert_eq!(res.status(), 200);
    let published = app.published(1).await;
    assert_eq!(published.len(), 1);
    let message_id = published[0].message_id.clone().unwrap_or_default();
    assert!(message_id.starts_with("paystack:sha256:"), "{message_id}");
    assert_eq!(
        published[0].body["external_id"],
        format!("charge.success:{long}")
    );
    let next = app
        .send(Gateway::Paystack, &Gateway::Paystack.sample("after"))
        .await;
    assert_eq!(next.status(), 200, "ingest still publishes");
}
