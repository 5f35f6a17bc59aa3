//! Our own failures: with PostgreSQL or RabbitMQ out of reach the gateway gets 503 (so it
//! retries), nothing is claimed published, and what was stored is published later.

use std::time::Duration;

use payhook_shared::testing::{Proxy, TestEnv};

use crate::helpers::*;

/// An app whose broker connection goes through a proxy the test can cut.
async fn app_behind_broker_proxy(accept_without_broker: bool) -> (TestApp, Proxy) {
    let env = TestEnv::new();
    let proxy = Proxy::start(env.broker_target()).await;
    let mut config = test_config(&env);
    config.broker = env.broker_via(&proxy);
    config.ingest.ingest_accept_without_broker = accept_without_broker;
    config.ingest.ingest_timeout = Duration::from_secs(3);
    (spawn_app_with(env, config).await, proxy)
}

#[tokio::test]
async fn broker_down_answers_503_and_claims_nothing_published() {
    let (app, broker) = app_behind_broker_proxy(false).await;
    broker.cut();
    let res = app
        .send(Gateway::GoCardless, &Gateway::GoCardless.sample("EV1"))
        .await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    // Stored for the relay, but not marked published.
    let rows: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT status, published_at FROM webhook_events")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, vec![("received".to_string(), None)]);
    assert_eq!(app.env.queue_len(&app.env.names().events_queue()).await, 0);
}

#[tokio::test]
async fn the_gateways_retry_after_a_broker_outage_publishes_the_stored_event() {
    let (app, broker) = app_behind_broker_proxy(false).await;
    let body = Gateway::Paystack.sample("77");
    broker.cut();
    assert_eq!(app.send(Gateway::Paystack, &body).await.status(), 503);
    broker.restore();
    // The retry is a duplicate, but its event was never published: dedup must not hide that.
    assert_eq!(app.send(Gateway::Paystack, &body).await.status(), 200);
    assert_eq!(
        app.events().await,
        vec![(
            "charge.success:77".into(),
            "charge.success".into(),
            "published".into()
        )]
    );
    let messages = app.published(5).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].message_id.as_deref(),
        Some("paystack:charge.success:77")
    );
    assert_eq!(app.count("webhook_deliveries").await, 2);
}

#[tokio::test]
async fn ingest_recovers_by_itself_when_the_broker_comes_back() {
    let (app, broker) = app_behind_broker_proxy(false).await;
    broker.cut();
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("a"))
            .await
            .status(),
        503
    );
    broker.restore();
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("b"))
            .await
            .status(),
        204
    );
    assert_eq!(app.published(5).await.len(), 1);
}

#[tokio::test]
async fn accept_without_broker_answers_2xx_once_stored_and_leaves_the_event_for_the_relay() {
    let (app, broker) = app_behind_broker_proxy(true).await;
    broker.cut();
    let res = app
        .send(Gateway::Flutterwave, &Gateway::Flutterwave.sample("5"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.events().await,
        vec![(
            "charge.completed:5".into(),
            "charge.completed".into(),
            "received".into()
        )]
    );
}

#[tokio::test]
async fn database_down_answers_503() {
    let (app, proxy) = app_behind_database_proxy().await;
    proxy.cut();
    let res = app
        .send(Gateway::GoCardless, &Gateway::GoCardless.sample("EV1"))
        .await;
    assert_eq!(res.status(), 503);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        err["error"], "temporarily unavailable, retry later",
        "no internal detail leaks"
    );
    app.assert_nothing_persisted().await;
    assert_eq!(app.env.queue_len(&app.env.names().events_queue()).await, 0);
}

#[tokio::test]
async fn ingest_recovers_by_itself_when_the_database_comes_back() {
    let (app, proxy) = app_behind_database_proxy().await;
    proxy.cut();
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("a"))
            .await
            .status(),
        503
    );
    proxy.restore();
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("b"))
            .await
            .status(),
        204
    );
    assert_eq!(app.count("webhook_events").await, 1);
}

#[tokio::test]
async fn with_a_cluster_listed_ingest_moves_to_the_next_node_when_its_node_is_lost() {
    let env = TestEnv::new();
    let (a, b) = (
        Proxy::start(env.broker_target()).await,
        Proxy::start(env.broker_target()).await,
    );
    let mut config = test_config(&env);
    config.broker.amqp_url = format!(
        "{},{}",
        env.broker_via(&a).amqp_url,
        env.broker_via(&b).amqp_url
    );
    config.ingest.ingest_timeout = Duration::from_secs(3);
    let app = spawn_app_with(env, config).await;
    assert_eq!(
        app.send(Gateway::PayQi, &Gateway::PayQi.sample("a"))
            .await
            .status(),
        204
    );

    a.cut(); // the node ingest publishes to is lost
             // A delivery in flight on the lost connection may be answered 503 (never 2xx unless
             // confirmed); the gateway's retry, or the next delivery, goes through the other node.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let status = app
            .send(Gateway::PayQi, &Gateway::PayQi.sample(&format!("b{i}")))
            .await
            .status()
            .as_u16();
        statuses.push(status);
    }
    assert!(
        statuses.iter().all(|s| *s == 204 || *s == 503),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&204), "{statuses:?}");
    // Every event answered 2xx is in the queue; none claimed published without a confirm.
    let accepted = 1 + statuses.iter().filter(|s| **s == 204).count();
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE published_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(published as usize, accepted);
    assert_eq!(app.published(10).await.len(), accepted);
}
