//! Test support: a worker running in-process on a test's own database and AMQP prefix, events
//! fed exactly as ingest feeds them (delivery + event rows, then a confirmed publish), a fake
//! gateway API on loopback that records the calls it gets, and polling helpers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use payhook_shared::amqp::{Broker, EventMessage, Outgoing};
use payhook_shared::gateway::GatewaySettings;
use payhook_shared::providers::{Flutterwave, GoCardless, PayQi, Paystack, Provider};
use payhook_shared::shutdown::CancellationToken;
use payhook_shared::testing::TestEnv;
use payhook_worker::{Worker, WorkerConfig, WorkerSettings};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const GC_TOKEN: &str = "gc-test-token";
pub const WAIT: Duration = Duration::from_secs(20);

/// One test's world: database, broker namespace, fake gateway, and its workers.
pub struct Harness {
    pub env: TestEnv,
    pub pool: PgPool,
    pub broker: Broker,
    pub gateway: FakeGateway,
    workers: Vec<(
        CancellationToken,
        JoinHandle<anyhow::Result<()>>,
        SocketAddr,
    )>,
    pub retry_failed_payments: bool,
}

impl Harness {
    /// A fresh world with one worker running.
    pub async fn start() -> Self {
        let mut h = Self::without_worker().await;
        h.spawn_worker().await;
        h
    }

    /// A fresh world, topology declared, no worker yet.
    pub async fn without_worker() -> Self {
        static TOKEN: Once = Once::new();
        // Before any worker reads it; every test sets the same value.
        TOKEN.call_once(|| std::env::set_var("GOCARDLESS_API_TOKEN", GC_TOKEN));
        payhook_shared::telemetry::init_logging();
        let env = TestEnv::new();
        let pool = env.pool().await;
        let broker = Broker::new(&env.broker);
        broker
            .channel()
            .await
            .expect("RabbitMQ is reachable (run scripts/test)");
        let gateway = FakeGateway::start().await;
        Self {
            env,
            pool,
            broker,
            gateway,
            workers: Vec::new(),
            retry_failed_payments: false,
        }
    }

    /// A fresh world whose workers have no gateway API token at all (an installation with
    /// only its webhook secrets), no worker yet. nextest runs each test in a process of its
    /// own, so removing the variables here touches no other test.
    pub async fn without_api_tokens() -> Self {
        let h = Self::without_worker().await;
        for var in [
            "GOCARDLESS_API_TOKEN",
            "PAYSTACK_API_TOKEN",
            "FLUTTERWAVE_API_TOKEN",
            "PAYQI_API_TOKEN",
            "GOCARDLESS_BANK_SECRET_ID",
            "GOCARDLESS_BANK_SECRET_KEY",
        ] {
            std::env::remove_var(var);
        }
        h
    }

    /// A fresh world whose workers have the Bank Account Data API's secrets, no worker yet
    /// (each test runs in a process of its own: see [`Self::without_api_tokens`]).
    pub async fn with_bank_secrets() -> Self {
        let h = Self::without_worker().await;
        std::env::set_var("GOCARDLESS_BANK_SECRET_ID", "bank-secret-id");
        std::env::set_var("GOCARDLESS_BANK_SECRET_KEY", "bank-secret-key");
        h
    }

    pub fn gateway_settings(&self) -> GatewaySettings {
        let url = self.gateway.url();
        GatewaySettings {
            gocardless_api_url: url.clone(),
            paystack_api_url: url.clone(),
            flutterwave_api_url: url.clone(),
            payqi_api_url: url.clone(),
            gocardless_bank_api_url: url,
            // No pacing and no cache: every lookup reaches the fake, at once.
            bank_api_interval: Duration::ZERO,
            bank_api_cache: Duration::ZERO,
            gateway_timeout: Duration::from_secs(2),
        }
    }

    pub fn config(&self) -> WorkerConfig {
        WorkerConfig {
            worker: WorkerSettings {
                worker_ops_addr: "127.0.0.1:0".parse().unwrap(),
                worker_concurrency: 4,
                worker_batch_max: 32,
                worker_prefetch: 16,
                worker_queue_poll: Duration::from_millis(200),
                gocardless_retry_failed_payments: self.retry_failed_payments,
                gateways: self.gateway_settings(),
                reconcile: Default::default(),
            },
            database: self.env.database.clone(),
            broker: self.env.broker.clone(),
        }
    }

    /// Starts one more in-process worker on the same queue; returns its ops address.
    pub async fn spawn_worker(&mut self) -> SocketAddr {
        let worker = Worker::build(self.config()).await.expect("worker builds");
        let addr = worker.ops_addr();
        let token = CancellationToken::new();
        let handle = tokio::spawn(worker.run_until_stopped(token.clone()));
        self.workers.push((token, handle, addr));
        self.wait_ready(addr).await;
        addr
    }

    /// A member for `mandate`, straight into the table (for tests about payments).
    pub async fn known_member(&self, mandate: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO members (mandate_id, name, email) VALUES ($1, 'Test Member', 'member@example.com') RETURNING id",
        )
        .bind(mandate)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// The ops addresses of the running workers.
    pub fn ops_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.2).collect()
    }

    /// Waits until the worker's /readyz says it consumes.
    pub async fn wait_ready(&self, addr: SocketAddr) {
        let url = format!("http://{addr}/readyz");
        eventually("the worker is ready", || async {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    /// Stops every worker gracefully and waits for them.
    pub async fn stop_workers(&mut self) {
        for (token, _, _) in &self.workers {
            token.cancel();
        }
        for (_, handle, _) in self.workers.drain(..) {
            handle
                .await
                .expect("worker task")
                .expect("worker stops cleanly");
        }
    }

    /// Stores a delivery and its events as ingest does, publishes every event, returns their
    /// `webhook_events.id`s in body order.
    pub async fn deliver(&self, provider: &str, body: &Value) -> Vec<i64> {
        let ids = self.store(provider, body).await;
        for id in &ids {
            self.publish(*id).await;
        }
        ids
    }

    /// Stores without publishing.
    pub async fn store(&self, provider: &str, body: &Value) -> Vec<i64> {
        let bytes = body.to_string().into_bytes();
        let parser: Box<dyn Provider> = match provider {
            "gocardless" => Box::new(GoCardless::new("s".parse().unwrap())),
            "paystack" => Box::new(Paystack::new("s".parse().unwrap())),
            "flutterwave" => Box::new(Flutterwave::new("s".parse().unwrap())),
            "payqi" => Box::new(PayQi::new("s".parse().unwrap(), 300)),
            other => panic!("no provider {other}"),
        };
        let events = parser.parse(&bytes).expect("a valid test body");
        let delivery: i64 = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (provider, headers, body) VALUES ($1, '{}', $2) RETURNING id",
        )
        .bind(provider)
        .bind(&bytes)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let mut ids = Vec::new();
        for e in events {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO webhook_events (delivery_id, provider, external_id, event_type, resource_id,
                                             payload, occurred_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'published')
                 ON CONFLICT (provider, external_id) DO UPDATE SET provider = EXCLUDED.provider
                 RETURNING id",
            )
            .bind(delivery)
            .bind(provider)
            .bind(&e.external_id)
            .bind(&e.event_type)
            .bind(&e.resource_id)
            .bind(&e.payload)
            .bind(e.occurred_at)
            .fetch_one(&self.pool)
            .await
            .unwrap();
            ids.push(id);
        }
        ids
    }

    /// Publishes the message of a stored event (again).
    pub async fn publish(&self, id: i64) {
        let (provider, external_id, event_type): (String, String, String) = sqlx::query_as(
            "SELECT provider, external_id, event_type FROM webhook_events WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        let msg = EventMessage {
            id,
            provider,
            external_id,
            event_type,
        };
        self.broker
            .publish_confirmed(
                &[Outgoing::event(self.broker.names(), &msg)],
                Duration::from_secs(10),
            )
            .await
            .expect("publish confirmed");
    }

    /// Waits until every event in `ids` has `status`.
    pub async fn wait_status(&self, ids: &[i64], status: &str) {
        let what = format!("events {ids:?} {status}");
        eventually(&what, || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM webhook_events WHERE id = ANY($1) AND status = $2",
            )
            .bind(ids)
            .bind(status)
            .fetch_one(&self.pool)
            .await
            .ok()?;
            (n == ids.len() as i64).then_some(())
        })
        .await;
    }

    /// Waits until the events are processed.
    pub async fn wait_processed(&self, ids: &[i64]) {
        self.wait_status(ids, "processed").await;
    }

    /// One value from the database.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: Send + Unpin + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// The events queue and the dead queue are empty (nothing left over, nothing dead).
    pub async fn assert_queues_drained(&self) {
        let names = self.env.names();
        eventually("the events queue drains", || async {
            (self.env.queue_len(&names.events_queue()).await == 0).then_some(())
        })
        .await;
        assert_eq!(
            self.env.queue_len(&names.dead_queue()).await,
            0,
            "nothing dead-lettered"
        );
        for (label, _) in payhook_shared::amqp::RETRY_DELAYS {
            let queue = names.retry_queue(label);
            assert_eq!(
                self.env.queue_len(&queue).await,
                0,
                "nothing left waiting in {queue}"
            );
        }
    }

    /// Domain events written to the outbox, by type, in order.
    pub async fn outbox_types(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM domain_outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    /// Deletes this test's queues and exchanges, even when the test failed: every quorum
    /// queue holds file handles in RabbitMQ, and a few hundred left behind exhaust a node
    /// running with the default 1024-descriptor limit (it then stops accepting connections).
    fn drop(&mut self) {
        self.env.delete_topology_blocking();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- GoCardless bodies -------------------------------------------------------------------

/// One GoCardless event (an element of `events`).
pub fn gc_event(
    id: &str,
    resource: &str,
    action: &str,
    links: Value,
    details: Value,
    metadata: Value,
    at: &str,
) -> Value {
    json!({
        "id": id, "created_at": at, "resource_type": resource, "action": action,
        "links": links, "details": details, "metadata": metadata,
    })
}

/// A GoCardless delivery body.
pub fn gc_body(events: Vec<Value>) -> Value {
    json!({ "events": events, "meta": { "webhook_id": "WB000" } })
}

/// A `payments.<action>` event with its amount in metadata, as the test gateway sends them.
pub fn gc_payment(
    ev: &str,
    action: &str,
    payment: &str,
    mandate: &str,
    amount: &str,
    at: &str,
) -> Value {
    gc_event(
        ev,
        "payments",
        action,
        json!({ "payment": payment, "mandate": mandate }),
        json!({ "origin": "gocardless", "cause": format!("payment_{action}") }),
        json!({ "amount": amount, "currency": "GBP", "reference": format!("REF-{payment}") }),
        at,
    )
}

// ---- fake gateway API ----------------------------------------------------------------------

/// A call the fake gateway received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub gocardless_version: Option<String>,
}

#[derive(Default)]
struct GatewayState {
    /// "GET /path" → answers given once each, in order, before the standing answer.
    once: HashMap<String, VecDeque<(u16, String)>>,
    /// "GET /path" → the standing answer.
    routes: HashMap<String, (u16, String)>,
    /// "GET /prefix" → the standing answer for every path under it.
    prefixes: Vec<(String, u16, String)>,
    delay: Duration,
    calls: Vec<Call>,
}

/// A tiny HTTP/1.1 server on loopback answering canned JSON, recording every call.
pub struct FakeGateway {
    addr: SocketAddr,
    state: Arc<Mutex<GatewayState>>,
    task: JoinHandle<()>,
}

impl FakeGateway {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<GatewayState>> = Arc::default();
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, s).await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The standing answer of `method path`.
    pub fn route(&self, method: &str, path: &str, status: u16, body: Value) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(format!("{method} {path}"), (status, body.to_string()));
    }

    /// An answer given once, before the standing one.
    pub fn once(&self, method: &str, path: &str, status: u16, body: Value) {
        self.state
            .lock()
            .unwrap()
            .once
            .entry(format!("{method} {path}"))
            .or_default()
            .push_back((status, body.to_string()));
    }

    /// The answer for every path starting with `prefix`.
    pub fn prefix(&self, method: &str, prefix: &str, status: u16, body: Value) {
        self.state.lock().unwrap().prefixes.push((
            format!("{method} {prefix}"),
            status,
            body.to_string(),
        ));
    }

    /// Every answer waits this long (a slow gateway).
    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// "GET /path" of every call, in order.
    pub fn call_lines(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }

    /// GoCardless answers for a payment, its mandate and customer.
    pub fn gocardless_payment(&self, payment: &str, mandate: &str, amount: i64) {
        self.route(
            "GET",
            &format!("/payments/{payment}"),
            200,
            json!({"payments": {"id": payment, "amount": amount, "currency": "GBP", "status": "confirmed",
                                "charge_date": "2024-05-03", "reference": format!("API-{payment}"),
                                "links": {"mandate": mandate, "creditor": "CR1"}}}),
        );
    }

    pub fn gocardless_mandate(&self, mandate: &str, customer: &str, mandate_type: &str) {
        self.route(
            "GET",
            &format!("/mandates/{mandate}"),
            200,
            json!({"mandates": {"id": mandate, "created_at": "2024-04-01T09:00:00.000Z",
                                "links": {"customer": customer, "customer_bank_account": "BA1"},
                                "metadata": {"mandate_type": mandate_type}}}),
        );
    }

    pub fn gocardless_customer(&self, customer: &str, body: Value) {
        self.route(
            "GET",
            &format!("/customers/{customer}"),
            200,
            json!({ "customers": body }),
        );
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    state: Arc<Mutex<GatewayState>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;

    let key = format!("{method} {path}");
    let (answer, delay) = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call {
            method: method.clone(),
            path: path.clone(),
            authorization: headers.get("authorization").cloned(),
            gocardless_version: headers.get("gocardless-version").cloned(),
        });
        let once = s.once.get_mut(&key).and_then(VecDeque::pop_front);
        let answer = once
            .or_else(|| s.routes.get(&key).cloned())
            .or_else(|| {
                s.prefixes
                    .iter()
                    .find(|(p, _, _)| key.starts_with(p.as_str()))
                    .map(|(_, st, b)| (*st, b.clone()))
            })
            .unwrap_or((404, json!({"error": {"message": "not found"}}).to_string()));
        (answer, s.delay)
    };
    tokio::time::sleep(delay).await;
    let (status, body) = answer;
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = reader.into_inner();
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

// ---- reconciler ------------------------------------------------------------------------------

/// Sets the API tokens of the gateways other than GoCardless (the harness sets that one), before
/// any worker reads them; every test sets the same values.
pub fn gateway_tokens() {
    static TOKENS: Once = Once::new();
    TOKENS.call_once(|| {
        std::env::set_var("PAYSTACK_API_TOKEN", "ps-test-token");
        std::env::set_var("FLUTTERWAVE_API_TOKEN", "fw-test-token");
        std::env::set_var("PAYQI_API_TOKEN", "pq-test-token");
    });
}

/// Reconciler settings for tests: every pending payment older than a minute is due, every
/// `received` event at once, no rate-limit wait worth the name.
pub fn fast_reconcile() -> payhook_worker::settings::ReconcileSettings {
    payhook_worker::settings::ReconcileSettings {
        reconcile_interval: Duration::from_millis(200),
        relay_after: Duration::ZERO,
        pending_after: Duration::from_secs(60),
        relay_batch: 50,
        reconcile_checks_per_pass: 100,
        reconcile_gateway_interval: Duration::from_millis(1),
        ..Default::default()
    }
}

impl Harness {
    /// Starts one more in-process worker with this configuration; returns its ops address.
    pub async fn spawn_worker_with(&mut self, config: WorkerConfig) -> SocketAddr {
        let worker = Worker::build(config).await.expect("worker builds");
        let addr = worker.ops_addr();
        let token = CancellationToken::new();
        let handle = tokio::spawn(worker.run_until_stopped(token.clone()));
        self.workers.push((token, handle, addr));
        self.wait_ready(addr).await;
        addr
    }

    /// A reconciler on this test's world (its own broker connection), for one pass at a time.
    pub fn reconciler(&self) -> payhook_worker::reconciler::Reconciler {
        gateway_tokens();
        payhook_worker::reconciler::Reconciler {
            pool: self.pool.clone(),
            broker: Arc::new(Broker::new(&self.env.broker)),
            gateways: payhook_shared::gateway::Gateways::from_settings(&self.gateway_settings())
                .unwrap(),
            settings: fast_reconcile(),
            shutdown: CancellationToken::new(),
        }
    }

    /// A payment registered as expected (as `POST /admin/payments` does), last changed an
    /// hour ago: due for a check.
    pub async fn pending_payment(
        &self,
        provider: &str,
        external_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO payments (provider, external_id, reference, amount_minor, currency, status,
                                   created_at, updated_at)
             VALUES ($1, $2, $2, $3, $4, 'pending', now() - interval '1 hour', now() - interval '1 hour')
             RETURNING id",
        )
        .bind(provider)
        .bind(external_id)
        .bind(amount_minor)
        .bind(currency)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Turns stored events back into never-published ones, received a minute ago (as if the
    /// broker had been down when they came in).
    pub async fn unpublish(&self, ids: &[i64]) {
        sqlx::query(
            "UPDATE webhook_events SET status = 'received', published_at = NULL,
                    received_at = now() - interval '1 minute'
             WHERE id = ANY($1)",
        )
        .bind(ids)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// The events of a payment in time order: (event_type, external_id, status, delivery_id).
    pub async fn history(
        &self,
        provider: &str,
        resource: &str,
    ) -> Vec<(String, String, String, Option<i64>)> {
        sqlx::query_as(
            "SELECT event_type, external_id, status, delivery_id FROM webhook_events
             WHERE provider = $1 AND resource_id = $2 ORDER BY id",
        )
        .bind(provider)
        .bind(resource)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// The value of one series in Prometheus text (`name{labels}` exactly as printed), if listed.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// `/metrics` of the worker at `addr`, if it answers.
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// A loopback port free right now (for a worker binary's ops listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A message read from a [`DomainTap`].
#[derive(Debug, Clone)]
pub struct Tapped {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub persistent: bool,
    pub body: Value,
}

/// A downstream system's view of `<prefix>.domain`: a server-named, exclusive queue bound with
/// `#`. RabbitMQ deletes it when its connection closes ([`DomainTap::close`], or the test
/// process ending).
pub struct DomainTap {
    conn: lapin::Connection,
    ch: lapin::Channel,
    queue: String,
}

impl DomainTap {
    /// Binds the tap (the harness's broker has declared the exchange).
    pub async fn bind(h: &Harness) -> Self {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        let conn = lapin::Connection::connect(
            &h.env.broker.amqp_url,
            lapin::ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ is reachable");
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        let queue = q.name().to_string();
        ch.queue_bind(
            queue.as_str().into(),
            h.env.names().domain_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        Self { conn, ch, queue }
    }

    /// Every message that arrives until none came for `quiet`, acked.
    pub async fn drain(&self, quiet: Duration) -> Vec<Tapped> {
        use lapin::options::{BasicAckOptions, BasicGetOptions};
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            let got = self
                .ch
                .basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .unwrap();
            let Some(m) = got else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let d = m.delivery;
            out.push(Tapped {
                routing_key: d.routing_key.to_string(),
                message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
                persistent: *d.properties.delivery_mode() == Some(2),
                body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
            });
            d.acker.ack(BasicAckOptions::default()).await.unwrap();
            last = Instant::now();
        }
        out
    }

    /// Closes the connection: RabbitMQ deletes the queue.
    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// An in-process ingest's settings on `env`'s database and broker namespace, with these
/// webhook secrets, on free loopback ports, plain HTTP, no admin API.
pub fn ingest_config(
    env: &TestEnv,
    secrets: payhook_shared::config::ProviderSecrets,
) -> payhook_ingest::IngestConfig {
    payhook_ingest::IngestConfig {
        ingest: payhook_shared::config::IngestSettings {
            ingest_addr: "127.0.0.1:0".parse().unwrap(),
            ingest_ops_addr: "127.0.0.1:0".parse().unwrap(),
            ingest_tls_cert: None,
            ingest_tls_key: None,
            ingest_client_ca: None,
            payqi_tolerance_secs: 300,
            ingest_accept_without_broker: false,
            ingest_batch_max: 16,
            ingest_timeout: Duration::from_secs(10),
        },
        database: env.database.clone(),
        broker: env.broker.clone(),
        secrets,
        admin_token: None,
    }
}
