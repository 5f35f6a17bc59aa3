//! The paths existing integrations gave their gateways (Payymo and ka-member for GoCardless,
//! Payshift for Paystack and Flutterwave) answer exactly as payhook's own: an installation
//! moves by changing only the host.

use serde_json::Value;

use crate::helpers::*;

const LEGACY: [(Gateway, &str); 8] = [
    (Gateway::GoCardless, "/api/gocardless/webhook"),
    (Gateway::GoCardless, "/api/gocardless/webhook/"),
    (Gateway::GoCardless, "/api/webhook/gocardless"),
    (Gateway::GoCardless, "/api/webhook/gocardless/"),
    (Gateway::Paystack, "/payment/webhooks/paystack/"),
    (Gateway::Paystack, "/payment/webhooks/paystack"),
    (Gateway::Flutterwave, "/payment/webhooks/flutterwave/"),
    (Gateway::Flutterwave, "/payment/webhooks/flutterwave"),
];

impl TestApp {
    async fn post_to(&self, path: &str, body: &str, headers: &[(String, String)]) -> u16 {
        let mut req = self
            .client
            .post(format!("{}{path}", self.address))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.unwrap().status().as_u16()
    }
}

#[tokio::test]
async fn a_delivery_on_an_older_integrations_path_is_stored_and_published_as_on_payhooks() {
    for (gw, path) in LEGACY {
        let app = spawn_app().await;
        let body = gw.sample("ev1");
        let status = app
            .post_to(path, &body, &gw.sign(NEW_SECRET, body.as_bytes()))
            .await;
        assert_eq!(status, gw.accepted(), "{path}");
        let stored: (String, Vec<u8>) =
            sqlx::query_as("SELECT provider, body FROM webhook_deliveries")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(stored, (gw.name().to_owned(), body.into_bytes()), "{path}");
        let events = app.events().await;
        assert_eq!(events.len(), 1, "{path}");
        assert_eq!(events[0].0, gw.sample_external_id("ev1"), "{path}");
        let published = app.published(5).await;
        assert_eq!(published.len(), 1, "{path}");
        assert_eq!(
            published[0].message_id,
            Some(format!("{}:{}", gw.name(), gw.sample_external_id("ev1")))
        );
    }
}

#[tokio::test]
async fn an_older_integrations_path_refuses_what_payhooks_refuses() {
    let app = spawn_app().await;
    for (gw, path) in LEGACY {
        let body = gw.sample("ev1");
        let forged = app
            .post_to(path, &body, &gw.sign("not-our-secret", body.as_bytes()))
            .await;
        assert_eq!(forged, gw.rejected(), "{path}");
        let not_json = "not json";
        let bad = app
            .post_to(path, not_json, &gw.sign(NEW_SECRET, not_json.as_bytes()))
            .await;
        assert_eq!(bad, 400, "{path}");
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{path}");
    }
    // The forged bodies are never kept; the genuine unreadable one is, as on payhook's paths:
    // one row per gateway, an attempt per path it was sent to.
    app.assert_nothing_accepted().await;
    let kept = app.rejected().await;
    assert!(kept.iter().all(|r| r.1 == b"not json"), "{kept:?}");
    assert_eq!(
        kept.iter().map(|r| r.3 as usize).sum::<usize>(),
        LEGACY.len()
    );
}

#[tokio::test]
async fn an_older_integrations_path_is_absent_when_its_gateway_has_no_secret() {
    let env = payhook_shared::testing::TestEnv::new();
    let mut config = test_config(&env);
    config.secrets.paystack = None;
    let app = spawn_app_with(env, config).await;
    let body = Gateway::Paystack.sample("ev1");
    let headers = Gateway::Paystack.sign(NEW_SECRET, body.as_bytes());
    for path in ["/payment/webhooks/paystack/", "/payment/webhooks/paystack"] {
        let res = app
            .client
            .post(format!("{}{path}", app.address))
            .body(body.clone())
            .header(&headers[0].0, &headers[0].1)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"], "not found");
    }
    app.assert_nothing_persisted().await;
}
