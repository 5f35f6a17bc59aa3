//! The `payhook-ingest` binary as an operator runs it: `--help`, bad configuration, SIGTERM,
//! and what reaches its logs.

use std::process::{Command, Stdio};
use std::time::Duration;

use payhook_shared::testing::TestEnv;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_payhook-ingest");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary configured for `env`, with all four secrets, on free ports.
fn ingest_command(env: &TestEnv) -> (Command, u16, u16) {
    let (port, ops) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("DATABASE_URL", &env.database.database_url)
        .env("AMQP_URL", &env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &env.broker.amqp_prefix)
        .env("INGEST_ADDR", format!("127.0.0.1:{port}"))
        .env("INGEST_OPS_ADDR", format!("127.0.0.1:{ops}"))
        .env(
            "GOCARDLESS_WEBHOOK_SECRET",
            format!("{OLD_SECRET},{NEW_SECRET}"),
        )
        .env("PAYSTACK_SECRET_KEY", NEW_SECRET)
        .env("FLUTTERWAVE_SECRET_HASH", NEW_SECRET)
        .env("PAYQI_WEBHOOK_SECRET", NEW_SECRET)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cmd, port, ops)
}

async fn wait_ready(ops: u16) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{ops}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payhook-ingest did not become ready");
}

#[test]
fn help_documents_every_option_and_env_var() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "DATABASE_URL",
        "AMQP_URL",
        "PAYHOOK_AMQP_PREFIX",
        "INGEST_ADDR",
        "INGEST_OPS_ADDR",
        "INGEST_TLS_CERT",
        "INGEST_TLS_KEY",
        "INGEST_CLIENT_CA",
        "GOCARDLESS_WEBHOOK_SECRET",
        "PAYSTACK_SECRET_KEY",
        "FLUTTERWAVE_SECRET_HASH",
        "PAYQI_WEBHOOK_SECRET",
        "PAYQI_TOLERANCE_SECS",
        "PAYHOOK_ADMIN_TOKEN",
        "INGEST_ACCEPT_WITHOUT_BROKER",
        "INGEST_BATCH_MAX",
        "INGEST_TIMEOUT",
        "DATABASE_MAX_CONNECTIONS",
        "LOG_FORMAT",
        "RUST_LOG",
    ] {
        assert!(help.contains(var), "--help does not mention {var}:\n{help}");
    }
}

/// Runs the binary with one bad setting; it must fail at once with one clear line.
fn assert_fails_with_one_line(var: &str, value: &str, expected: &str) {
    let out = Command::new(BIN)
        .env_clear()
        .env(var, value)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error exits 2");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unparseable_database_url_fails_at_start_with_one_line() {
    assert_fails_with_one_line("DATABASE_URL", "not a url", "DATABASE_URL");
}

#[test]
fn a_listen_address_without_port_fails_at_start_with_one_line() {
    assert_fails_with_one_line("INGEST_ADDR", "127.0.0.1", "INGEST_ADDR");
}

#[test]
fn an_amqp_url_with_a_bad_port_fails_at_start_with_one_line() {
    assert_fails_with_one_line(
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:notaport/%2f",
        "AMQP_URL",
    );
}

#[test]
fn an_empty_secret_in_a_rotation_list_fails_at_start_without_echoing_it() {
    let out = Command::new(BIN)
        .env_clear()
        .env("PAYSTACK_SECRET_KEY", "sk_live_abc,")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("PAYSTACK_SECRET_KEY"), "{stderr}");
    assert!(
        !stderr.contains("sk_live_abc"),
        "the secret is not echoed: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_deliveries_and_exits_zero() {
    let env = TestEnv::new();
    let (mut cmd, port, ops) = ingest_command(&env);
    let child = cmd.spawn().unwrap();
    wait_ready(ops).await;

    let client = reqwest::Client::new();
    let sends = (0..50).map(|i| {
        let client = client.clone();
        async move {
            let body = Gateway::PayQi.sample(&format!("e{i}"));
            client
                .post(format!("http://127.0.0.1:{port}/webhooks/payqi"))
                .headers(
                    Gateway::PayQi
                        .sign(NEW_SECRET, body.as_bytes())
                        .into_iter()
                        .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                        .collect(),
                )
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let pid = child.id();
    let (answers, ()) = tokio::join!(futures::future::join_all(sends), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
    });
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every request either got its 204 or was never accepted (connection refused): no 5xx,
    // and every 204 is stored and published.
    let accepted = answers.iter().filter(|a| matches!(a, Ok(204))).count();
    assert!(
        answers.iter().all(|a| matches!(a, Ok(204)) || a.is_err()),
        "{answers:?}"
    );
    let pool = env.pool().await;
    let published: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE status = 'published'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        published as usize >= accepted,
        "{published} published, {accepted} answered 204"
    );
}

#[tokio::test]
async fn no_secret_and_no_body_reaches_the_logs() {
    let env = TestEnv::new();
    let (mut cmd, port, ops) = ingest_command(&env);
    let child = cmd.spawn().unwrap();
    wait_ready(ops).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhooks/flutterwave");
    let body = r#"{"event":"charge.completed","data":{"id":9,"tx_ref":"t","customer":{"email":"ada@example.org","name":"Ada Lovelace"}}}"#;
    // One accepted, one refused with a wrong secret that is nearly the right one.
    let ok = client
        .post(&url)
        .header("verif-hash", NEW_SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .post(&url)
        .header("verif-hash", format!("{NEW_SECRET}x"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("webhook accepted"),
        "the logs are captured: {logs}"
    );
    for secret_or_personal in [NEW_SECRET, OLD_SECRET, "ada@example.org", "Ada Lovelace"] {
        assert!(
            !logs.contains(secret_or_personal),
            "{secret_or_personal} leaked into:\n{logs}"
        );
    }
}
