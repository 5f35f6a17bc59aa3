//! `spawn_app()`: an ingest service on random ports with its own database and AMQP prefix,
//! and the gateways' ways of signing a delivery.

use std::time::Duration;

use payhook_ingest::{Application, IngestConfig};
use payhook_shared::config::{IngestSettings, ProviderSecrets};
use payhook_shared::providers::signature::{sign_hex, Digest};
use payhook_shared::providers::Secrets;
use payhook_shared::shutdown::CancellationToken;
use payhook_shared::testing::{Message, TestEnv};
use sqlx::PgPool;

/// Each provider is configured with two secrets, as during a rotation.
pub const OLD_SECRET: &str = "old-secret-0123456789";
pub const NEW_SECRET: &str = "new-secret-9876543210";
/// The admin API's bearer token in tests.
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

pub struct TestApp {
    pub address: String,
    pub ops_address: String,
    pub env: TestEnv,
    pub pool: PgPool,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

pub fn test_settings() -> IngestSettings {
    IngestSettings {
        ingest_addr: "127.0.0.1:0".parse().unwrap(),
        ingest_ops_addr: "127.0.0.1:0".parse().unwrap(),
        ingest_tls_cert: None,
        ingest_tls_key: None,
        ingest_client_ca: None,
        payqi_tolerance_secs: 300,
        ingest_accept_without_broker: false,
        ingest_batch_max: 256,
        ingest_timeout: Duration::from_secs(5),
    }
}

pub fn all_secrets() -> ProviderSecrets {
    let s = || Some(Secrets::new([OLD_SECRET, NEW_SECRET]));
    ProviderSecrets {
        gocardless: s(),
        paystack: s(),
        flutterwave: s(),
        payqi: s(),
        payqi_tolerance_secs: 300,
    }
}

pub fn test_config(env: &TestEnv) -> IngestConfig {
    IngestConfig {
        ingest: test_settings(),
        database: env.database.clone(),
        broker: env.broker.clone(),
        secrets: all_secrets(),
        admin_token: Some(ADMIN_TOKEN.into()),
    }
}

pub async fn spawn_app() -> TestApp {
    let env = TestEnv::new();
    let config = test_config(&env);
    spawn_app_with(env, config).await
}

/// An app whose PostgreSQL connections go through a proxy the test can cut (answers within
/// 5 s when it is cut).
pub async fn app_behind_database_proxy() -> (TestApp, payhook_shared::testing::Proxy) {
    let env = TestEnv::new();
    let proxy = payhook_shared::testing::Proxy::start(env.database_target()).await;
    let mut config = test_config(&env);
    config.database = env.database_via(&proxy);
    config.ingest.ingest_timeout = Duration::from_secs(5);
    (spawn_app_with(env, config).await, proxy)
}

pub async fn spawn_app_with(env: TestEnv, config: IngestConfig) -> TestApp {
    payhook_shared::telemetry::init_logging();
    let tls = config.ingest.ingest_tls_cert.is_some();
    let app = Application::build(config).await.expect("ingest builds");
    let scheme = if tls { "https" } else { "http" };
    let address = format!("{scheme}://localhost:{}", app.webhook_addr().port());
    let ops_address = format!("http://127.0.0.1:{}", app.ops_addr().port());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let pool = env.pool().await;
    TestApp {
        address,
        ops_address,
        env,
        pool,
        client: reqwest::Client::new(),
        shutdown,
    }
}

impl TestApp {
    /// POSTs `body` with `headers` to `/webhooks/{provider}`.
    pub async fn post(
        &self,
        provider: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(String, String)],
    ) -> reqwest::Response {
        self.post_with(&self.client, provider, body, headers).await
    }

    pub async fn post_with(
        &self,
        client: &reqwest::Client,
        provider: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(String, String)],
    ) -> reqwest::Response {
        let mut req = client
            .post(format!("{}/webhooks/{provider}", self.address))
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.expect("ingest answers")
    }

    /// Signs `body` as `gw` would with `secret`, and POSTs it.
    pub async fn send(&self, gw: Gateway, body: &str) -> reqwest::Response {
        self.post(
            gw.name(),
            body.to_owned(),
            &gw.sign(NEW_SECRET, body.as_bytes()),
        )
        .await
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// (external_id, event_type, status) of every event, in id order.
    pub async fn events(&self) -> Vec<(String, String, String)> {
        sqlx::query_as("SELECT external_id, event_type, status FROM webhook_events ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Asserts nothing at all was stored: no delivery, no event, no rejected body.
    pub async fn assert_nothing_persisted(&self) {
        self.assert_nothing_accepted().await;
        assert_eq!(
            self.count("rejected_deliveries").await,
            0,
            "no rejected_deliveries row"
        );
    }

    /// Asserts no delivery and no event was stored (a rejected body may have been kept).
    pub async fn assert_nothing_accepted(&self) {
        assert_eq!(self.count("webhook_deliveries").await, 0, "no delivery row");
        assert_eq!(self.count("webhook_events").await, 0, "no event row");
    }

    /// The rejected_deliveries rows: (provider, body, reason, attempts), in id order.
    pub async fn rejected(&self) -> Vec<(String, Vec<u8>, String, i32)> {
        sqlx::query_as(
            "SELECT provider, body, reason, attempts FROM rejected_deliveries ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The ops listener's /metrics text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Messages on the events queue (waits up to 2 s for the first, then takes what is there).
    pub async fn published(&self, max: usize) -> Vec<Message> {
        self.env
            .take_messages(
                &self.env.names().events_queue(),
                max,
                Duration::from_secs(2),
            )
            .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.env.delete_topology_blocking();
    }
}

/// The four gateways as a test client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    GoCardless,
    Paystack,
    Flutterwave,
    PayQi,
}

pub const ALL: [Gateway; 4] = [
    Gateway::GoCardless,
    Gateway::Paystack,
    Gateway::Flutterwave,
    Gateway::PayQi,
];

impl Gateway {
    pub fn name(self) -> &'static str {
        match self {
            Gateway::GoCardless => "gocardless",
            Gateway::Paystack => "paystack",
            Gateway::Flutterwave => "flutterwave",
            Gateway::PayQi => "payqi",
        }
    }

    pub fn accepted(self) -> u16 {
        match self {
            Gateway::GoCardless | Gateway::PayQi => 204,
            Gateway::Paystack | Gateway::Flutterwave => 200,
        }
    }

    pub fn rejected(self) -> u16 {
        match self {
            Gateway::GoCardless => 498,
            _ => 401,
        }
    }

    /// The header carrying the signature (or, for Flutterwave, the secret hash).
    pub fn signature_header(self) -> &'static str {
        match self {
            Gateway::GoCardless => "Webhook-Signature",
            Gateway::Paystack => "x-paystack-signature",
            Gateway::Flutterwave => "verif-hash",
            Gateway::PayQi => "X-PayQI-Signature",
        }
    }

    /// The signature value for `body` with `secret`.
    pub fn signature(self, secret: &str, body: &[u8]) -> String {
        match self {
            Gateway::GoCardless | Gateway::PayQi => {
                sign_hex(Digest::Sha256, secret.as_bytes(), body)
            }
            Gateway::Paystack => sign_hex(Digest::Sha512, secret.as_bytes(), body),
            Gateway::Flutterwave => secret.to_owned(),
        }
    }

    /// Every header a genuine delivery carries.
    pub fn sign(self, secret: &str, body: &[u8]) -> Vec<(String, String)> {
        let mut h = vec![(
            self.signature_header().to_owned(),
            self.signature(secret, body),
        )];
        if self == Gateway::PayQi {
            h.push(("X-PayQI-Timestamp".into(), now().to_string()));
        }
        h
    }

    /// A realistic one-event body whose event id is `id`.
    pub fn sample(self, id: &str) -> String {
        match self {
            Gateway::GoCardless => gocardless_body(&[("payments", "confirmed", id)]),
            Gateway::Paystack => format!(
                r#"{{"event":"charge.success","data":{{"id":"{id}","reference":"ref-{id}","amount":500000,"currency":"NGN","status":"success","customer":{{"email":"ada@example.org"}}}}}}"#
            ),
            Gateway::Flutterwave => format!(
                r#"{{"event":"charge.completed","data":{{"id":"{id}","tx_ref":"tx-{id}","amount":"100.50","currency":"NGN","status":"successful"}}}}"#
            ),
            Gateway::PayQi => format!(
                r#"{{"id":"{id}","type":"payment.completed","created":1764000000,"data":{{"id":"pay_{id}","amount":"10.00","currency":"GBP","status":"completed","metadata":{{"order_id":"ord-{id}"}}}}}}"#
            ),
        }
    }

    /// The dedup key ingest stores for `sample(id)`.
    pub fn sample_external_id(self, id: &str) -> String {
        match self {
            Gateway::GoCardless | Gateway::PayQi => id.to_owned(),
            Gateway::Paystack => format!("charge.success:{id}"),
            Gateway::Flutterwave => format!("charge.completed:{id}"),
        }
    }
}

/// A GoCardless body with one event per `(resource_type, action, id)`.
pub fn gocardless_body(events: &[(&str, &str, &str)]) -> String {
    let events: Vec<String> = events
        .iter()
        .map(|(rt, action, id)| {
            let link = rt.trim_end_matches('s');
            format!(
                r#"{{"id":"{id}","created_at":"2026-11-24T10:00:00.000Z","resource_type":"{rt}","action":"{action}","links":{{"{link}":"{}{id}"}},"details":{{"origin":"gocardless","cause":"payment_confirmed"}}}}"#,
                if *rt == "mandates" { "MD" } else { "PM" }
            )
        })
        .collect();
    format!(
        r#"{{"events":[{}],"meta":{{"webhook_id":"WB{}"}}}}"#,
        events.join(","),
        events.len()
    )
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
