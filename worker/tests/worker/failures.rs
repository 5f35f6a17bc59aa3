//! Retries through the delay queues, dead letters, and replays.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::gocardless_payments::{ledger, payment};
use crate::support::*;

/// `payments.confirmed` with ids only: the worker must ask the API for the amount.
fn bare_confirmed(ev: &str, pm: &str) -> serde_json::Value {
    gc_event(
        ev,
        "payments",
        "confirmed",
        json!({"payment": pm}),
        json!({"cause": "payment_confirmed"}),
        json!({}),
        "2024-05-01T10:00:00Z",
    )
}

#[tokio::test]
async fn a_transient_gateway_failure_is_retried_after_the_first_delay_then_processed() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    h.gateway
        .once("GET", "/payments/PM1", 503, json!({"error": "try later"}));
    h.gateway.gocardless_payment("PM1", "MD1", 2750);
    let started = Instant::now();
    let ids = h
        .deliver("gocardless", &gc_body(vec![bare_confirmed("EV1", "PM1")]))
        .await;

    h.wait_status(&ids, "retrying").await;
    let retry_queue = h.env.names().retry_queue("1s");
    eventually("the message waits in the 1 s delay queue", || async {
        (h.env.queue_len(&retry_queue).await == 1).then_some(())
    })
    .await;
    h.wait_processed(&ids).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited the first delay"
    );

    let (attempts, error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM webhook_events")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.unwrap().contains("HTTP 503"));
    assert_eq!(
        h.gateway.call_lines(),
        ["GET /payments/PM1", "GET /payments/PM1"]
    );
    assert_eq!(ledger(&h, "gocardless", "PM1").await.len(), 1);
    assert_eq!(h.env.queue_len(&retry_queue).await, 0);
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn after_the_last_delay_a_still_failing_event_goes_dead() {
    let h = Harness::start().await;
    h.gateway.route("GET", "/payments/PM2", 503, json!({}));
    let ids = h
        .store("gocardless", &gc_body(vec![bare_confirmed("EV2", "PM2")]))
        .await;
    // Six attempts already made (1 s … 1 h): this is the seventh.
    sqlx::query("UPDATE webhook_events SET attempts = 6, status = 'retrying'")
        .execute(&h.pool)
        .await
        .unwrap();
    h.publish(ids[0]).await;
    h.wait_status(&ids, "dead").await;

    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM webhook_events")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 7);
    assert!(error.starts_with("gave up after 7 attempts"), "{error}");
    let dead = h
        .env
        .take_messages(&h.env.names().dead_queue(), 5, Duration::from_secs(2))
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].body["id"].as_i64(), dead[0].routing_key.as_str()),
        (Some(ids[0]), "gocardless.payments.confirmed")
    );
}

#[tokio::test]
async fn a_permanent_failure_goes_dead_and_replaying_it_after_the_fix_processes_it() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    // The API doesn't know the payment (yet): 404, a permanent error for an event.
    let ids = h
        .deliver("gocardless", &gc_body(vec![bare_confirmed("EV3", "PM3")]))
        .await;
    h.wait_status(&ids, "dead").await;
    let error: String = h.scalar("SELECT last_error FROM webhook_events").await;
    assert!(error.contains("/payments/PM3: HTTP 404"), "{error}");
    let dead_queue = h.env.names().dead_queue();
    eventually("the message is in the dead queue", || async {
        (h.env.queue_len(&dead_queue).await == 1).then_some(())
    })
    .await;
    assert!(ledger(&h, "gocardless", "PM3").await.is_empty());

    h.gateway.gocardless_payment("PM3", "MD1", 4200);
    let report = payhook_worker::replay::replay_dead(&h.pool, &h.broker, false)
        .await
        .unwrap();
    assert_eq!(report.replayed, 1);
    h.wait_processed(&ids).await;

    assert_eq!(payment(&h, "gocardless", "PM3").await.status, "completed");
    assert_eq!(
        ledger(&h, "gocardless", "PM3").await,
        [("payment".into(), "PM3".into(), 4200, "GBP".into())]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn replay_by_gateway_event_id_from_the_command_line_processes_a_dead_event() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    let ids = h
        .deliver("gocardless", &gc_body(vec![bare_confirmed("EV4", "PM4")]))
        .await;
    h.wait_status(&ids, "dead").await;
    h.gateway.gocardless_payment("PM4", "MD1", 100);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .args(["replay", "EV4", "no-such-event"])
        .env("DATABASE_URL", &h.env.database.database_url)
        .env("AMQP_URL", &h.env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("replayed 1 event(s)"), "{stdout} {stderr}");
    assert!(!out.status.success(), "an unknown id is an error");
    assert!(
        stderr.contains("no event matches: no-such-event"),
        "{stderr}"
    );

    h.wait_processed(&ids).await;
    assert_eq!(ledger(&h, "gocardless", "PM4").await.len(), 1);
    let attempts: i32 = h.scalar("SELECT attempts FROM webhook_events").await;
    assert_eq!(attempts, 0, "a replay starts the attempts over");
}

#[tokio::test]
async fn a_database_outage_is_retried_through_the_delay_queue() {
    let mut h = Harness::without_worker().await;
    h.known_member("MD1").await;
    let proxy = payhook_shared::testing::Proxy::start(h.env.database_target()).await;
    let mut config = h.config();
    config.database = h.env.database_via(&proxy);
    let worker = payhook_worker::Worker::build(config).await.unwrap();
    let token = payhook_shared::shutdown::CancellationToken::new();
    let run = tokio::spawn(worker.run_until_stopped(token.clone()));

    proxy.cut();
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV5",
                "confirmed",
                "PM5",
                "MD1",
                "700",
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    let retry_queue = h.env.names().retry_queue("1s");
    eventually("the message is sent to the 1 s delay queue", || async {
        (h.env.queue_len(&retry_queue).await == 1).then_some(())
    })
    .await;
    proxy.restore();
    h.wait_processed(&ids).await;

    assert_eq!(ledger(&h, "gocardless", "PM5").await.len(), 1);
    h.assert_queues_drained().await;
    token.cancel();
    run.await.unwrap().unwrap();
    h.stop_workers().await;
}

/// Earlier builds bound the delay queues on an `x-` header, which a headers exchange ignores:
/// every retry went to every delay queue. A worker starting on such a broker removes those
/// bindings, and a retry waits in one queue only.
#[tokio::test]
async fn a_retry_waits_in_one_delay_queue_even_on_a_broker_set_up_by_an_earlier_build() {
    use lapin::options::QueueBindOptions;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use payhook_shared::amqp::{LEGACY_RETRY_HEADER, RETRY_DELAYS};

    let mut h = Harness::without_worker().await;
    let ch = h.broker.channel().await.unwrap();
    for (label, _) in RETRY_DELAYS {
        let mut legacy = FieldTable::default();
        legacy
            .insert(
                "x-match".into(),
                AMQPValue::LongString(LongString::from("all")),
            )
            .insert(
                LEGACY_RETRY_HEADER.into(),
                AMQPValue::LongString(LongString::from(label)),
            );
        ch.queue_bind(
            h.env.names().retry_queue(label).as_str().into(),
            h.env.names().retry_exchange().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            legacy,
        )
        .await
        .unwrap();
    }
    h.spawn_worker().await;
    h.known_member("MD1").await;
    h.gateway
        .once("GET", "/payments/PM1", 503, json!({"error": "try later"}));
    h.gateway.gocardless_payment("PM1", "MD1", 2750);
    let ids = h
        .deliver("gocardless", &gc_body(vec![bare_confirmed("EV1", "PM1")]))
        .await;

    h.wait_processed(&ids).await;
    // Every delay queue but 1 s would hold a copy if the old bindings were still there.
    h.assert_queues_drained().await;
    assert_eq!(ledger(&h, "gocardless", "PM1").await.len(), 1);
}
