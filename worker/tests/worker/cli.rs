//! The operator subcommands `show` and `send-test`, run as the real binary.
//!
//! `send-test` posts to a real ingest running in-process (payhook-ingest is a dev-dependency):
//! the answer comes from the same routes, verification and storage a gateway's delivery goes
//! through, so a sample the gateway's own check would refuse, or a signature made with the
//! wrong secret, fails here.

use std::process::Output;
use std::time::Duration;

use payhook_ingest::Application;
use payhook_shared::config::ProviderSecrets;
use payhook_shared::providers::signature::{sign_hex, Digest};
use payhook_shared::providers::Secrets;
use payhook_shared::shutdown::CancellationToken;
use payhook_shared::testing::TestEnv;
use serde_json::json;

use crate::support::*;

/// Runs the binary without blocking the runtime (the in-process ingest and worker share it).
async fn worker_cli(args: &[&str], env: &[(&str, &str)]) -> (Output, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"));
    cmd.args(args);
    for var in [
        "GOCARDLESS_WEBHOOK_SECRET",
        "PAYSTACK_SECRET_KEY",
        "FLUTTERWAVE_SECRET_HASH",
        "PAYQI_WEBHOOK_SECRET",
        "PAYHOOK_INGEST_URL",
        "INGEST_ADDR",
        "INGEST_TLS_CERT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

async fn show(h: &Harness, query: &str) -> (bool, String, String) {
    let (out, stdout, stderr) = worker_cli(
        &["show", query],
        &[("DATABASE_URL", &h.env.database.database_url)],
    )
    .await;
    (out.status.success(), stdout, stderr)
}

/// The line of the events table for gateway event `external_id`.
fn event_line<'a>(stdout: &'a str, external_id: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == external_id))
        .unwrap_or_else(|| panic!("no line for {external_id} in:\n{stdout}"))
}

#[tokio::test]
async fn show_prints_a_payment_and_its_events_in_the_order_they_happened() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    // Delivered out of order: confirmed first, created (older) after.
    let confirmed = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV2",
                "confirmed",
                "PM1",
                "MD1",
                "2750",
                "2024-05-02T10:00:00.000Z",
            )]),
        )
        .await;
    h.wait_processed(&confirmed).await;
    let created = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV1",
                "created",
                "PM1",
                "MD1",
                "2750",
                "2024-05-01T10:00:00.000Z",
            )]),
        )
        .await;
    h.wait_processed(&created).await;

    let (ok, stdout, stderr) = show(&h, "REF-PM1").await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("payment "), "{stdout}");
    assert!(
        stdout.contains("gocardless PM1  reference REF-PM1"),
        "{stdout}"
    );
    assert!(stdout.contains("status completed"), "{stdout}");
    assert!(stdout.contains("amount 27.50 GBP"), "{stdout}");
    assert!(stdout.contains("mandate MD1"), "{stdout}");
    let header = stdout
        .lines()
        .find(|l| l.contains("LAST ERROR"))
        .expect("a table header");
    for col in [
        "ID",
        "WHEN",
        "TYPE",
        "GATEWAY ID",
        "STATUS",
        "ATTEMPTS",
        "DELIVERY",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let first = stdout.find("EV1").unwrap();
    let second = stdout.find("EV2").unwrap();
    assert!(first < second, "oldest first:\n{stdout}");
    assert!(event_line(&stdout, "EV1").contains("payments.created"));
    assert!(event_line(&stdout, "EV2").contains("processed"));

    // By payhook's event id: the payment it is about, the event marked.
    let (ok, by_id, _) = show(&h, &confirmed[0].to_string()).await;
    assert!(ok);
    assert!(by_id.contains("reference REF-PM1"), "{by_id}");
    assert!(
        event_line(&by_id, "EV2").trim_start().starts_with('→'),
        "{by_id}"
    );
    assert!(!event_line(&by_id, "EV1").contains('→'));

    // By the member's email and mandate: the member, its payment, all events.
    for q in ["member@example.com", "MD1"] {
        let (ok, out, _) = show(&h, q).await;
        assert!(ok);
        assert!(
            out.contains("member ") && out.contains("Test Member"),
            "{out}"
        );
        assert!(out.contains("EV1") && out.contains("EV2"), "{out}");
    }
}

#[tokio::test]
async fn show_tells_why_an_event_is_dead_and_how_to_replay_it() {
    let h = Harness::start().await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_event(
                "EV9",
                "payments",
                "confirmed",
                json!({"payment": "PM9"}),
                json!({"cause": "payment_confirmed"}),
                json!({}),
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_status(&ids, "dead").await;

    let (ok, stdout, stderr) = show(&h, "EV9").await;
    assert!(ok, "{stdout}{stderr}");
    let line = event_line(&stdout, "EV9");
    assert!(line.contains("dead"), "{line}");
    assert!(line.contains("/payments/PM9: HTTP 404"), "{line}");
    assert!(
        stdout.contains(&format!("payhook-worker replay {}", ids[0])),
        "{stdout}"
    );

    let (ok, _, stderr) = show(&h, "no-such-thing").await;
    assert!(!ok);
    assert!(
        stderr.contains("nothing matches \"no-such-thing\""),
        "{stderr}"
    );
}

/// An ingest on loopback accepting `OLD` and `NEW` for every gateway (Flutterwave only when
/// asked).
struct Ingest {
    url: String,
    env: TestEnv,
    pool: sqlx::PgPool,
    shutdown: CancellationToken,
}

const OLD: &str = "old-webhook-secret";
const NEW: &str = "new-webhook-secret";

impl Ingest {
    async fn start() -> Self {
        Self::start_with(None, false).await
    }

    /// With `tls` (certificate chain, key): HTTPS on the webhook listener; `flutterwave`:
    /// that route mounted too.
    async fn start_with(tls: Option<(&str, &str)>, flutterwave: bool) -> Self {
        payhook_shared::telemetry::init_logging();
        let env = TestEnv::new();
        let secrets = || Some(Secrets::new([OLD, NEW]));
        let mut config = ingest_config(
            &env,
            ProviderSecrets {
                gocardless: secrets(),
                paystack: secrets(),
                flutterwave: if flutterwave { secrets() } else { None },
                payqi: secrets(),
                payqi_tolerance_secs: 300,
            },
        );
        config.ingest.ingest_tls_cert = tls.map(|t| fixture(t.0));
        config.ingest.ingest_tls_key = tls.map(|t| fixture(t.1));
        let app = Application::build(config).await.expect("ingest builds");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", app.webhook_addr().port());
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let pool = env.pool().await;
        Self {
            url,
            env,
            pool,
            shutdown,
        }
    }

    async fn send_test(
        &self,
        provider: &str,
        secret_var: &str,
        secrets: &str,
    ) -> (bool, String, String) {
        let (out, stdout, stderr) = worker_cli(
            &["send-test", provider, "--ingest-url", &self.url],
            &[(secret_var, secrets)],
        )
        .await;
        (out.status.success(), stdout, stderr)
    }

    async fn events(&self) -> Vec<(String, String, String)> {
        sqlx::query_as("SELECT provider, external_id, event_type FROM webhook_events ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// A file of `tests/worker/fixtures/`: ingest-chain.pem is a certificate for localhost,
/// 127.0.0.1 and ::1 followed by the test CA that signed it; ingest-key.pem is its key.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/worker/fixtures")
        .join(name)
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.env.delete_topology_blocking();
    }
}

#[tokio::test]
async fn send_test_signs_with_the_first_configured_secret_and_ingest_accepts_it() {
    let ingest = Ingest::start().await;
    let cases = [
        ("gocardless", "GOCARDLESS_WEBHOOK_SECRET", "204 No Content"),
        ("paystack", "PAYSTACK_SECRET_KEY", "200 OK"),
        ("payqi", "PAYQI_WEBHOOK_SECRET", "204 No Content"),
    ];
    for (provider, var, status) in cases {
        // The first secret of the list signs; the second is one ingest would refuse.
        let (ok, stdout, stderr) = ingest
            .send_test(provider, var, &format!("{NEW},not-a-secret-ingest-knows"))
            .await;
        assert!(ok, "{provider}: {stdout}{stderr}");
        assert!(stdout.contains(status), "{provider}: {stdout}");
        assert!(
            stdout.contains("accepted: stored and published"),
            "{stdout}"
        );
        assert!(stdout.contains("payhook-worker show "), "{stdout}");
    }
    let events = ingest.events().await;
    assert_eq!(events.len(), 3, "{events:?}");
    for ((provider, external_id, event_type), (expected, _, _)) in events.iter().zip(cases) {
        assert_eq!(provider, expected);
        assert_eq!(event_type, "payhook.test");
        assert!(!external_id.is_empty());
    }
    // A second run is a new event, not a duplicate.
    let (ok, _, _) = ingest.send_test("payqi", "PAYQI_WEBHOOK_SECRET", OLD).await;
    assert!(ok);
    assert_eq!(ingest.events().await.len(), 4);
}

#[tokio::test]
async fn send_test_explains_a_refusal() {
    let ingest = Ingest::start().await;

    let (ok, stdout, stderr) = ingest
        .send_test("gocardless", "GOCARDLESS_WEBHOOK_SECRET", "a-wrong-secret")
        .await;
    assert!(!ok);
    assert!(stdout.contains("498"), "{stdout}");
    assert!(
        stdout.contains("signature refused: GOCARDLESS_WEBHOOK_SECRET here is not one of the secrets ingest accepts"),
        "{stdout}"
    );
    assert!(stderr.contains("not accepted (498)"), "{stderr}");

    let (ok, stdout, _) = ingest
        .send_test("paystack", "PAYSTACK_SECRET_KEY", "a-wrong-secret")
        .await;
    assert!(!ok);
    assert!(stdout.contains("401 Unauthorized"), "{stdout}");

    // Ingest has no Flutterwave secret: the route is not mounted.
    let (ok, stdout, _) = ingest
        .send_test("flutterwave", "FLUTTERWAVE_SECRET_HASH", NEW)
        .await;
    assert!(!ok);
    assert!(stdout.contains("404"), "{stdout}");
    assert!(
        stdout.contains("does not serve /webhooks/flutterwave"),
        "{stdout}"
    );
    assert!(ingest.events().await.is_empty(), "nothing stored");

    // No secret configured here: said before anything is sent.
    let (out, _, stderr) =
        worker_cli(&["send-test", "payqi", "--ingest-url", &ingest.url], &[]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("PAYQI_WEBHOOK_SECRET is unset"), "{stderr}");

    // Nobody listening: said plainly.
    let (ok, _, stderr) = {
        let (out, stdout, stderr) = worker_cli(
            &["send-test", "payqi", "--ingest-url", "http://127.0.0.1:9"],
            &[("PAYQI_WEBHOOK_SECRET", NEW)],
        )
        .await;
        (out.status.success(), stdout, stderr)
    };
    assert!(!ok);
    assert!(stderr.contains("could not reach ingest"), "{stderr}");
}

/// `replay` run as the binary against the harness's database and broker.
async fn replay_cli(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    let (out, stdout, stderr) = worker_cli(
        &all,
        &[
            ("DATABASE_URL", &h.env.database.database_url),
            ("AMQP_URL", &h.env.broker.amqp_url),
            ("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix),
        ],
    )
    .await;
    (out.status.success(), stdout, stderr)
}

#[tokio::test]
async fn replay_of_a_gateway_id_two_providers_share_names_them_and_provider_picks_one() {
    let h = Harness::without_worker().await;
    let gc = h
        .store(
            "gocardless",
            &gc_body(vec![gc_event(
                "evt_1",
                "payments",
                "created",
                json!({"payment": "PM1"}),
                json!({}),
                json!({}),
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await[0];
    let pq = h
        .store(
            "payqi",
            &json!({"id": "evt_1", "type": "payment.created", "created": 1714557600,
                    "data": {"id": "pay_1", "amount": "1.00", "currency": "GBP", "status": "pending"}}),
        )
        .await[0];
    sqlx::query("UPDATE webhook_events SET status = 'dead', attempts = 3")
        .execute(&h.pool)
        .await
        .unwrap();
    let statuses = || async {
        sqlx::query_as::<_, (i64, String)>("SELECT id, status FROM webhook_events ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap()
    };

    let (ok, stdout, stderr) = replay_cli(&h, &["evt_1"]).await;
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("replayed 0 event(s)"), "{stdout}");
    assert!(
        stderr.contains(&format!("gocardless (event {gc})"))
            && stderr.contains(&format!("payqi (event {pq})"))
            && stderr.contains("--provider"),
        "{stderr}"
    );
    assert_eq!(
        statuses().await,
        [(gc, "dead".into()), (pq, "dead".into())],
        "nothing replayed"
    );

    let (ok, stdout, stderr) = replay_cli(&h, &["--provider", "payqi", "evt_1"]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replayed 1 event(s)"), "{stdout}");
    assert_eq!(
        statuses().await,
        [(gc, "dead".into()), (pq, "published".into())]
    );
    let published = h
        .env
        .take_messages(&h.env.names().events_queue(), 5, Duration::from_secs(2))
        .await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].message_id.as_deref(), Some("payqi:evt_1"));

    let (ok, _, stderr) = replay_cli(&h, &["--provider", "paystack", "evt_1"]).await;
    assert!(!ok);
    assert!(
        stderr.contains("no event matches: evt_1 (paystack)"),
        "{stderr}"
    );
}

/// The port of ingest's webhook listener.
fn port_of(url: &str) -> String {
    url.rsplit(':').next().unwrap().to_owned()
}

#[tokio::test]
async fn send_test_finds_ingest_through_ingest_addr_from_the_same_env_file() {
    let ingest = Ingest::start().await;
    // Ingest's own variables, as one env file gives both binaries: no PAYHOOK_INGEST_URL.
    let addr = format!("0.0.0.0:{}", port_of(&ingest.url));
    let (out, stdout, stderr) = worker_cli(
        &["send-test", "paystack"],
        &[("PAYSTACK_SECRET_KEY", NEW), ("INGEST_ADDR", &addr)],
    )
    .await;
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("POST {}/webhooks/paystack", ingest.url)),
        "0.0.0.0 is reached on loopback: {stdout}"
    );
    assert!(stdout.contains("200 OK"), "{stdout}");
    let events = ingest.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "paystack");
    assert_eq!(events[0].2, "payhook.test");
}

#[tokio::test]
async fn send_test_speaks_https_and_trusts_ingests_certificate_when_ingest_tls_cert_is_set() {
    let ingest = Ingest::start_with(Some(("ingest-chain.pem", "ingest-key.pem")), false).await;
    let addr = format!("127.0.0.1:{}", port_of(&ingest.url));
    let cert = fixture("ingest-chain.pem");
    let (out, stdout, stderr) = worker_cli(
        &["send-test", "payqi"],
        &[
            ("PAYQI_WEBHOOK_SECRET", NEW),
            ("INGEST_ADDR", &addr),
            ("INGEST_TLS_CERT", cert.to_str().unwrap()),
        ],
    )
    .await;
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("POST https://{addr}/webhooks/payqi")),
        "{stdout}"
    );
    assert!(stdout.contains("204 No Content"), "{stdout}");
    assert_eq!(ingest.events().await.len(), 1);

    // Without the certificate it is plain HTTP, which an HTTPS listener does not answer.
    let (out, _, stderr) = worker_cli(
        &["send-test", "payqi"],
        &[("PAYQI_WEBHOOK_SECRET", NEW), ("INGEST_ADDR", &addr)],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("http://{addr}")), "{stderr}");
    assert_eq!(ingest.events().await.len(), 1);
}

impl Ingest {
    /// Posts `body` to `/webhooks/{provider}` with `headers`; the status.
    async fn post(&self, provider: &str, body: &str, headers: &[(&str, String)]) -> u16 {
        let mut req = reqwest::Client::new()
            .post(format!("{}/webhooks/{provider}", self.url))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// The id of the newest stored delivery.
    async fn last_delivery(&self) -> i64 {
        sqlx::query_scalar("SELECT max(id) FROM webhook_deliveries")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `verify-delivery ID` with `env`; (success, stdout, stderr).
    async fn verify(&self, id: i64, env: &[(&str, &str)]) -> (bool, String, String) {
        let mut all = vec![("DATABASE_URL", self.env.database.database_url.as_str())];
        all.extend_from_slice(env);
        let (out, stdout, stderr) = worker_cli(&["verify-delivery", &id.to_string()], &all).await;
        (out.status.success(), stdout, stderr)
    }
}

fn hmac(digest: Digest, key: &str, body: &str) -> String {
    sign_hex(digest, key.as_bytes(), body.as_bytes())
}

#[tokio::test]
async fn verify_delivery_says_which_secret_of_the_list_signed_a_stored_delivery() {
    let ingest = Ingest::start().await;
    let body = r#"{"event":"charge.success","data":{"id":1,"reference":"r-1","amount":100,"currency":"NGN"}}"#;
    let sig = hmac(Digest::Sha512, OLD, body);
    assert_eq!(
        ingest
            .post("paystack", body, &[("x-paystack-signature", sig)])
            .await,
        200
    );
    let id = ingest.last_delivery().await;

    let list = format!("{NEW},{OLD}");
    let (ok, stdout, stderr) = ingest.verify(id, &[("PAYSTACK_SECRET_KEY", &list)]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("delivery {id} (paystack, received "))
            && stdout.contains("genuine: signed with secret 2 of 2 in PAYSTACK_SECRET_KEY"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(OLD) && !stderr.contains(OLD),
        "no secret printed"
    );

    let (ok, stdout, stderr) = ingest.verify(id, &[("PAYSTACK_SECRET_KEY", NEW)]).await;
    assert!(!ok);
    assert!(
        stdout.contains("NOT verified: the signature matches none of the 1 secret(s)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("delivery {id} is not verified")),
        "{stderr}"
    );
}

#[tokio::test]
async fn verify_delivery_rechecks_gocardless_and_payqi_deliveries_from_their_stored_headers() {
    let ingest = Ingest::start().await;
    let gc = r#"{"events":[{"id":"EV1","resource_type":"payments","action":"created","links":{"payment":"PM1"}}]}"#;
    let status = ingest
        .post(
            "gocardless",
            gc,
            &[("Webhook-Signature", hmac(Digest::Sha256, NEW, gc))],
        )
        .await;
    assert_eq!(status, 204);
    let gc_id = ingest.last_delivery().await;
    let pq = r#"{"id":"evt_1","type":"payment.pending","data":{"id":"pay_1"}}"#;
    let now = chrono::Utc::now().timestamp().to_string();
    let status = ingest
        .post(
            "payqi",
            pq,
            &[
                ("X-PayQI-Signature", hmac(Digest::Sha256, NEW, pq)),
                ("X-PayQI-Timestamp", now.clone()),
            ],
        )
        .await;
    assert_eq!(status, 204);
    let pq_id = ingest.last_delivery().await;

    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT headers FROM webhook_deliveries WHERE id = $1")
            .bind(pq_id)
            .fetch_one(&ingest.pool)
            .await
            .unwrap();
    assert_eq!(stored["x-payqi-signature"], hmac(Digest::Sha256, NEW, pq));
    assert_eq!(stored["x-payqi-timestamp"], now.as_str());

    let (ok, stdout, _) = ingest
        .verify(gc_id, &[("GOCARDLESS_WEBHOOK_SECRET", NEW)])
        .await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("signed with secret 1 of 1 in GOCARDLESS_WEBHOOK_SECRET"),
        "{stdout}"
    );
    let list = format!("{OLD},{NEW}");
    let (ok, stdout, _) = ingest
        .verify(pq_id, &[("PAYQI_WEBHOOK_SECRET", &list)])
        .await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("signed with secret 2 of 2 in PAYQI_WEBHOOK_SECRET"),
        "{stdout}"
    );

    // A stored body changed afterwards no longer verifies.
    sqlx::query(
        "UPDATE webhook_deliveries
         SET body = convert_to(replace(convert_from(body, 'UTF8'), 'EV1', 'EV2'), 'UTF8')
         WHERE id = $1",
    )
    .bind(gc_id)
    .execute(&ingest.pool)
    .await
    .unwrap();
    let (ok, stdout, _) = ingest
        .verify(gc_id, &[("GOCARDLESS_WEBHOOK_SECRET", NEW)])
        .await;
    assert!(!ok);
    assert!(stdout.contains("NOT verified"), "{stdout}");
}

#[tokio::test]
async fn verify_delivery_refuses_what_it_cannot_check() {
    let ingest = Ingest::start_with(None, true).await;
    let fw = r#"{"event":"charge.completed","data":{"id":7,"tx_ref":"t-7"}}"#;
    assert_eq!(
        ingest
            .post("flutterwave", fw, &[("verif-hash", NEW.to_owned())])
            .await,
        200
    );
    let id = ingest.last_delivery().await;
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT headers FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_one(&ingest.pool)
            .await
            .unwrap();
    assert!(stored.get("verif-hash").is_none(), "{stored}");
    assert!(
        !stored.to_string().contains(NEW),
        "the secret is never stored: {stored}"
    );

    let (ok, stdout, _) = ingest.verify(id, &[("FLUTTERWAVE_SECRET_HASH", NEW)]).await;
    assert!(!ok);
    assert!(
        stdout.contains("a Flutterwave delivery cannot be re-verified"),
        "{stdout}"
    );

    let (ok, _, stderr) = ingest.verify(999_999, &[]).await;
    assert!(!ok);
    assert!(stderr.contains("no delivery 999999"), "{stderr}");

    let ps = r#"{"event":"charge.success","data":{"id":2}}"#;
    let sig = hmac(Digest::Sha512, NEW, ps);
    assert_eq!(
        ingest
            .post("paystack", ps, &[("x-paystack-signature", sig)])
            .await,
        200
    );
    let (ok, _, stderr) = ingest.verify(ingest.last_delivery().await, &[]).await;
    assert!(!ok);
    assert!(stderr.contains("PAYSTACK_SECRET_KEY is unset"), "{stderr}");
}

/// `reparse` run as the binary against the harness's database and broker, with `env` added.
async fn reparse_cli(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut all = vec!["reparse"];
    all.extend_from_slice(args);
    let mut vars = vec![
        ("DATABASE_URL", h.env.database.database_url.as_str()),
        ("AMQP_URL", h.env.broker.amqp_url.as_str()),
        ("PAYHOOK_AMQP_PREFIX", h.env.broker.amqp_prefix.as_str()),
    ];
    vars.extend_from_slice(env);
    let (out, stdout, stderr) = worker_cli(&all, &vars).await;
    (out.status.success(), stdout, stderr)
}

/// A PayQI delivery ingest refused (its event id is over the default 255 bytes) and kept,
/// as `payhook_shared::rejected::keep` leaves it; returns its id.
async fn rejected_long_id(h: &Harness) -> (i64, String) {
    let event_id = "e".repeat(300);
    let body = json!({
        "id": event_id, "type": "payment.completed", "created": 1764000000,
        "data": {"id": "p-long", "amount": "12.50", "currency": "GBP", "status": "succeeded",
                 "metadata": {"order_id": "ORD-9"}}
    })
    .to_string();
    let id = payhook_shared::rejected::keep(
        &h.pool,
        "payqi",
        &json!({}),
        body.as_bytes(),
        "id is longer than 255 bytes",
    )
    .await
    .unwrap();
    (id, event_id)
}

#[tokio::test]
async fn reparse_with_the_limit_raised_ingests_a_rejected_delivery_and_the_worker_processes_it() {
    let h = Harness::start().await;
    let (id, event_id) = rejected_long_id(&h).await;
    let (ok, stdout, stderr) =
        reparse_cli(&h, &["--all"], &[("PAYHOOK_MAX_ID_BYTES", "1000")]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{id}  payqi  ingested")),
        "{stdout}"
    );
    assert!(
        stdout.contains("reparse: 1 ingested, 0 still refused"),
        "{stdout}"
    );
    let event: i64 = sqlx::query_scalar("SELECT id FROM webhook_events WHERE external_id = $1")
        .bind(&event_id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    h.wait_processed(&[event]).await;
    let (status, amount): (String, i64) = sqlx::query_as(
        "SELECT status, amount_minor FROM payments WHERE provider = 'payqi' AND external_id = 'p-long'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), amount), ("completed", 1250));
    // Reparsed once: `--all` now finds nothing, and naming it again adds nothing.
    let (ok, stdout, _) = reparse_cli(&h, &["--all"], &[("PAYHOOK_MAX_ID_BYTES", "1000")]).await;
    assert!(ok && stdout.contains("reparse: 0 ingested"), "{stdout}");
    let (ok, stdout, _) =
        reparse_cli(&h, &[&id.to_string()], &[("PAYHOOK_MAX_ID_BYTES", "1000")]).await;
    assert!(
        ok && stdout.contains("0 new event(s), 1 already stored"),
        "{stdout}"
    );
    assert_eq!(
        h.scalar::<i64>("SELECT count(*) FROM webhook_events").await,
        1
    );
}

#[tokio::test]
async fn reparse_by_the_same_version_says_why_it_is_still_refused_and_exits_1() {
    let h = Harness::without_worker().await;
    let (id, _) = rejected_long_id(&h).await;
    let (ok, stdout, stderr) = reparse_cli(&h, &[&id.to_string()], &[]).await;
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "{id}  payqi  still refused: id is longer than 255 bytes"
        )),
        "{stdout}"
    );
    assert!(stderr.contains("still refused by this version"), "{stderr}");
    assert_eq!(
        h.scalar::<i64>("SELECT count(*) FROM webhook_events").await,
        0
    );
    let (ok, _, stderr) = reparse_cli(&h, &["9999"], &[]).await;
    assert!(!ok && stderr.contains("not reparsed"), "{stderr}");
}
