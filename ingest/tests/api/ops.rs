//! The ops listener: liveness, readiness (PostgreSQL and RabbitMQ), Prometheus metrics.

use payhook_shared::testing::{Proxy, TestEnv};

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_while_the_process_is_up() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn readyz_is_ok_when_postgres_and_rabbitmq_are_reachable() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/readyz", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"postgres": true, "rabbitmq": true})
    );
}

#[tokio::test]
async fn readyz_is_503_and_names_the_broker_when_rabbitmq_is_unreachable() {
    let env = TestEnv::new();
    let proxy = Proxy::start(env.broker_target()).await;
    let mut config = test_config(&env);
    config.broker = env.broker_via(&proxy);
    let app = spawn_app_with(env, config).await;
    proxy.cut();
    let res = app
        .client
        .get(format!("{}/readyz", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"postgres": true, "rabbitmq": false})
    );
}

#[tokio::test]
async fn metrics_count_requests_by_provider_and_outcome() {
    let app = spawn_app().await;
    assert_eq!(
        app.send(Gateway::Paystack, &Gateway::Paystack.sample("1"))
            .await
            .status(),
        200
    );
    assert_eq!(app.post("paystack", "{}", &[]).await.status(), 401);
    let text = app.metrics().await;
    assert!(
        text.contains(
            r#"payhook_webhook_requests_total{provider="paystack",outcome="accepted"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"payhook_webhook_requests_total{provider="paystack",outcome="invalid_signature"} 1"#
    ));
    assert!(text.contains("payhook_webhook_request_seconds_bucket"));
    assert!(text.contains("payhook_publish_confirm_seconds_bucket"));
}

#[tokio::test]
async fn the_ops_listener_is_not_the_webhook_listener() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .post(format!("{}/webhooks/paystack", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}
