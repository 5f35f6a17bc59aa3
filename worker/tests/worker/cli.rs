//! The operator subcommands `show` and `send-test`, run as the real binary.
//!
//! `send-test` posts to a real ingest running in-process (payhook-ingest is a dev-dependency):
//! the answer comes from the same routes, verification and storage a gateway's delivery goes
//! through, so a sample the gateway's own check would refuse, or a signature made with the
//! wrong secret, fails here.

use std::process::Output;
use std::time::Duration;

use payhook_ingest::{Application, IngestConfig};
use payhook_shared::config::{IngestSettings, ProviderSecrets};
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
    for col in ["ID", "WHEN", "TYPE", "GATEWAY ID", "STATUS", "ATTEMPTS"] {
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

/// An ingest on loopback accepting `OLD` and `NEW` for every gateway but Flutterwave.
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
        payhook_shared::telemetry::init_logging();
        let env = TestEnv::new();
        let secrets = || Some(Secrets::new([OLD, NEW]));
        let config = IngestConfig {
            ingest: IngestSettings {
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
            secrets: ProviderSecrets {
                gocardless: secrets(),
                paystack: secrets(),
                flutterwave: None,
                payqi: secrets(),
                payqi_tolerance_secs: 300,
            },
            admin_token: None,
        };
        let app = Application::build(config).await.expect("ingest builds");
        let url = format!("http://127.0.0.1:{}", app.webhook_addr().port());
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
