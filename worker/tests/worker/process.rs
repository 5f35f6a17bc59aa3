//! The `payhook-worker` process: killed mid-batch, stopped with SIGTERM, its ops endpoints.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn spawn_binary(h: &Harness) -> Child {
    Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .env("DATABASE_URL", &h.env.database.database_url)
        .env("AMQP_URL", &h.env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix)
        .env("WORKER_OPS_ADDR", "127.0.0.1:0")
        .env("WORKER_CONCURRENCY", "8")
        .env("GOCARDLESS_API_URL", h.gateway.url())
        .env("GOCARDLESS_API_TOKEN", GC_TOKEN)
        .env(
            "RUST_LOG",
            std::env::var("WORKER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker binary starts")
}

/// `n` confirmed payments whose events lack the mandate, so each one asks the (slow) fake API:
/// slow enough to kill the worker in the middle.
async fn slow_batch(h: &Harness, n: usize) -> Vec<i64> {
    h.known_member("MD1").await;
    h.gateway.prefix(
        "GET",
        "/payments/",
        200,
        json!({"payments": {"amount": 300, "currency": "GBP", "status": "confirmed", "links": {"mandate": "MD1"}}}),
    );
    h.gateway.set_delay(Duration::from_millis(15));
    let events: Vec<_> = (0..n)
        .map(|i| {
            gc_event(
                &format!("EV{i}"),
                "payments",
                "confirmed",
                json!({"payment": format!("PM{i}")}),
                json!({}),
                json!({"amount": "300", "currency": "GBP"}),
                "2024-05-01T10:00:00Z",
            )
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in events.chunks(100) {
        ids.extend(h.deliver("gocardless", &gc_body(chunk.to_vec())).await);
    }
    ids
}

async fn processed(h: &Harness) -> i64 {
    h.scalar("SELECT count(*) FROM webhook_events WHERE status = 'processed'")
        .await
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing() {
    let mut h = Harness::without_worker().await;
    let n = 400;
    let ids = slow_batch(&h, n).await;
    let mut child = spawn_binary(&h);
    eventually("the worker is part way through", || async {
        let done = processed(&h).await;
        (done >= 40).then_some(done)
    })
    .await;
    child.kill().unwrap(); // SIGKILL: no cleanup at all
    child.wait().unwrap();
    let done_at_kill = processed(&h).await;
    assert!(
        done_at_kill < n as i64,
        "killed mid-batch ({done_at_kill} of {n} done)"
    );

    h.spawn_worker().await;
    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;

    let rows: i64 = h.scalar("SELECT count(*) FROM transactions").await;
    let distinct: i64 = h
        .scalar("SELECT count(DISTINCT payment_id) FROM transactions")
        .await;
    let completed: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE event_type = 'payment.completed'")
        .await;
    assert_eq!((rows, distinct, completed), (n as i64, n as i64, n as i64));
    h.stop_workers().await;
}

#[tokio::test]
async fn sigterm_finishes_the_events_in_flight_and_exits_zero() {
    let h = Harness::without_worker().await;
    // More than the worker holds at once (8 batches of up to 32, prefetch 256), twice over:
    // SIGTERM must find work it has not started.
    let n = 1000;
    let ids = slow_batch(&h, n).await;
    let mut child = spawn_binary(&h);
    eventually("the worker is busy", || async {
        (processed(&h).await >= 20).then_some(())
    })
    .await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Waited for off the runtime: the fake gateway the in-flight events call runs on it.
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );

    // Everything is either processed or back in the queue, ready (the prefetched messages
    // return as the broker closes the channel): nothing lost, nothing processed and queued.
    let done = processed(&h).await;
    assert!(done < n as i64, "stopped before the end ({done} of {n})");
    let events_queue = h.env.names().events_queue();
    eventually("every unprocessed message is back in the queue", || async {
        let queued = h.env.queue_len(&events_queue).await as i64;
        (done + queued == n as i64).then_some(())
    })
    .await;
    let in_between: i64 = h
        .scalar(
            "SELECT count(*) FROM webhook_events WHERE status NOT IN ('processed', 'published')",
        )
        .await;
    assert_eq!(in_between, 0);
    let _ = ids;
}

#[tokio::test]
async fn the_ops_listener_serves_health_readiness_and_the_worker_metrics() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV1",
                "confirmed",
                "PM1",
                "MD1",
                "100",
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    let addr = h.ops_addrs()[0];

    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap(),
        json!({"postgres": true, "rabbitmq": true})
    );
    assert_eq!(
        reqwest::get(format!("http://{addr}/nope"))
            .await
            .unwrap()
            .status(),
        404
    );

    let events_queue = h.env.names().events_queue();
    let text = eventually("the queue depth gauge is published", || async {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains(&format!("payhook_queue_depth{{queue=\"{events_queue}\"}}"))
            .then_some(text)
    })
    .await;
    for needle in [
        "payhook_events_processed_total{",
        "payhook_event_processing_seconds_bucket{",
        &format!(
            "payhook_queue_depth{{queue=\"{}\"}}",
            h.env.names().dead_queue()
        ),
        &format!(
            "payhook_queue_depth{{queue=\"{}\"}}",
            h.env.names().retry_queue("1h")
        ),
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}");
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("payhook_events_processed_total")
            && l.contains(r#"provider="gocardless""#)
            && l.contains(r#"event_type="payments.confirmed""#)
            && l.contains(r#"outcome="processed""#)));
}
