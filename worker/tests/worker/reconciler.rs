//! The reconciler: one worker at a time, the event relay, the domain relay, pending payments
//! checked with the (fake) gateways, `reconcile --once`, and its metrics.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use payhook_shared::testing::Proxy;
use serde_json::json;

use crate::gocardless_payments::{ledger, payment};
use crate::support::*;

/// Waits until the payment has `status`.
async fn wait_payment(h: &Harness, provider: &str, external_id: &str, status: &str) {
    let what = format!("{provider} payment {external_id} {status}");
    eventually(&what, || async {
        let s: Option<String> = sqlx::query_scalar(
            "SELECT status FROM payments WHERE provider = $1 AND external_id = $2",
        )
        .bind(provider)
        .bind(external_id)
        .fetch_optional(&h.pool)
        .await
        .ok()?;
        (s.as_deref() == Some(status)).then_some(())
    })
    .await;
}

/// A Paystack `charge.success` body.
fn paystack_charge(reference: &str, id: i64, amount: i64) -> serde_json::Value {
    json!({"event": "charge.success", "data": {"id": id, "reference": reference, "amount": amount,
           "currency": "NGN", "status": "success"}})
}

fn worker_binary(h: &Harness, ops_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .env("DATABASE_URL", &h.env.database.database_url)
        .env("AMQP_URL", &h.env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix)
        .env("WORKER_OPS_ADDR", format!("127.0.0.1:{ops_port}"))
        .env("RECONCILE_INTERVAL", "200ms")
        .env("RELAY_AFTER", "0s")
        .env(
            "RUST_LOG",
            std::env::var("WORKER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the worker binary starts")
}

/// `payhook_reconciler_runs_total{outcome="ok"}` of the worker on `port`.
async fn ok_runs(port: u16) -> Option<f64> {
    let text = scrape(([127, 0, 0, 1], port).into()).await?;
    metric_value(&text, r#"payhook_reconciler_runs_total{outcome="ok"}"#)
}

/// Sessions holding the reconciler's leader lock in this test's database.
async fn leader_locks(h: &Harness) -> i64 {
    h.scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND l.objid = 1 AND l.granted AND d.datname = current_database()",
    )
    .await
}

#[tokio::test]
async fn only_one_of_two_workers_reconciles_and_the_other_takes_over_when_it_is_killed() {
    let h = Harness::without_worker().await;
    let ports = [free_port(), free_port()];
    let mut children: Vec<Child> = ports.iter().map(|p| worker_binary(&h, *p)).collect();

    let leader = eventually("one worker has run a few passes", || async {
        let a = ok_runs(ports[0]).await?;
        let b = ok_runs(ports[1]).await?;
        match (a >= 3.0, b >= 3.0) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    })
    .await;
    let other = 1 - leader;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        ok_runs(ports[other]).await,
        Some(0.0),
        "the other worker never reconciles while the leader lives"
    );
    assert_eq!(leader_locks(&h).await, 1);

    children[leader].kill().unwrap(); // SIGKILL: its session ends without any goodbye
    children[leader].wait().unwrap();
    eventually("the other worker takes over", || async {
        (ok_runs(ports[other]).await? >= 1.0).then_some(())
    })
    .await;
    assert_eq!(leader_locks(&h).await, 1);

    // And it does the work: an event stored without being published is relayed and processed.
    let ids = h
        .store("paystack", &paystack_charge("ps-takeover", 1, 5000))
        .await;
    h.unpublish(&ids).await;
    h.wait_processed(&ids).await;
    assert_eq!(ledger(&h, "paystack", "ps-takeover").await.len(), 1);
    h.assert_queues_drained().await;

    children[other].kill().unwrap();
    children[other].wait().unwrap();
}

#[tokio::test]
async fn events_stored_while_the_broker_was_down_are_relayed_and_processed_once() {
    let mut h = Harness::without_worker().await;
    let proxy = Proxy::start(h.env.broker_target()).await;
    let mut config = h.config();
    config.broker = h.env.broker_via(&proxy);
    config.worker.reconcile = fast_reconcile();
    let addr = h.spawn_worker_with(config).await;

    // RabbitMQ goes away; ingest (INGEST_ACCEPT_WITHOUT_BROKER) keeps storing events.
    proxy.cut();
    let mut ids = Vec::new();
    for i in 0..20 {
        let body = paystack_charge(&format!("ps-outage-{i}"), i + 1, 1000 + i);
        ids.extend(h.store("paystack", &body).await);
    }
    h.unpublish(&ids).await;
    eventually(
        "a reconcile pass fails while the broker is away",
        || async {
            let text = scrape(addr).await?;
            (metric_value(&text, r#"payhook_reconciler_runs_total{outcome="error"}"#)? >= 1.0)
                .then_some(())
        },
    )
    .await;
    let waiting: i64 = h
        .scalar("SELECT count(*) FROM webhook_events WHERE status = 'received'")
        .await;
    assert_eq!(
        waiting, 20,
        "nothing is marked published while the broker is away"
    );

    proxy.restore();
    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;

    let (rows, payments, completions): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transactions), (SELECT count(DISTINCT payment_id) FROM transactions),
                (SELECT count(*) FROM domain_outbox WHERE event_type = 'payment.completed')",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((rows, payments, completions), (20, 20, 20));
    let unstamped: i64 = h
        .scalar("SELECT count(*) FROM webhook_events WHERE published_at IS NULL")
        .await;
    assert_eq!(
        unstamped, 0,
        "every relayed event records when it was published"
    );
    let retried: i64 = h
        .scalar("SELECT count(*) FROM webhook_events WHERE attempts <> 0")
        .await;
    assert_eq!(retried, 0);
    let text = scrape(addr).await.unwrap();
    assert!(
        !text.contains(r#"outcome="duplicate""#),
        "no event was handed to the worker twice"
    );
    h.stop_workers().await;
}

#[tokio::test]
async fn a_registered_pending_payment_is_completed_from_the_gateway_verify_answer() {
    let mut h = Harness::without_worker().await;
    h.pending_payment("paystack", "ps-pending-1", 275000, "NGN")
        .await;
    h.gateway.route(
        "GET",
        "/transaction/verify/ps-pending-1",
        200,
        json!({"status": true, "data": {"id": 4099, "status": "success", "amount": 275000,
                                        "currency": "NGN", "reference": "ps-pending-1"}}),
    );

    let summary = h.reconciler().pass().await;
    assert_eq!(
        (
            summary.payments.checked,
            summary.payments.changed,
            summary.failed_steps
        ),
        (1, 1, 0)
    );
    let calls = h.gateway.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/transaction/verify/ps-pending-1");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some("Bearer ps-test-token")
    );
    // Published like ingest publishes: on the events queue, marked published.
    assert_eq!(h.env.queue_len(&h.env.names().events_queue()).await, 1);

    h.spawn_worker().await;
    wait_payment(&h, "paystack", "ps-pending-1", "completed").await;
    assert_eq!(
        h.history("paystack", "ps-pending-1").await,
        [(
            "reconcile.completed".to_owned(),
            "reconcile:ps-pending-1:completed".to_owned(),
            "processed".to_owned(),
            None
        )]
    );
    assert_eq!(
        ledger(&h, "paystack", "ps-pending-1").await,
        [(
            "payment".into(),
            "ps-pending-1".into(),
            275000,
            "NGN".into()
        )]
    );
    let meta: serde_json::Value = h.scalar("SELECT metadata FROM payments").await;
    assert_eq!(meta["paystack_id"], "4099");
    assert_eq!(
        h.outbox_types().await,
        ["payment.completed", "transaction.recorded"]
    );
    h.assert_queues_drained().await;
    h.stop_workers().await;
}

#[tokio::test]
async fn a_payment_the_gateway_answers_404_for_expires() {
    let mut h = Harness::without_worker().await;
    h.pending_payment("gocardless", "PM404", 1500, "GBP").await;

    let summary = h.reconciler().pass().await;
    assert_eq!((summary.payments.checked, summary.payments.changed), (1, 1));
    assert_eq!(h.gateway.call_lines(), ["GET /payments/PM404"]);

    h.spawn_worker().await;
    wait_payment(&h, "gocardless", "PM404", "expired").await;
    let p = payment(&h, "gocardless", "PM404").await;
    assert!(p.failure_reason.unwrap().contains("404"));
    assert!(ledger(&h, "gocardless", "PM404").await.is_empty());
    let history = h.history("gocardless", "PM404").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, "reconcile.expired");
    assert_eq!(history[0].2, "processed");
    assert_eq!(h.outbox_types().await, ["payment.expired"]);
    h.assert_queues_drained().await;
    h.stop_workers().await;
}

#[tokio::test]
async fn a_failing_gateway_does_not_stop_the_checks_of_another() {
    let mut h = Harness::without_worker().await;
    for i in 0..5 {
        h.pending_payment("flutterwave", &format!("fw-{i}"), 1000, "NGN")
            .await;
    }
    h.pending_payment("payqi", "pq-1", 1250, "GBP").await;
    h.gateway.prefix(
        "GET",
        "/v3/transactions/verify_by_reference",
        503,
        json!({"status": "error"}),
    );
    h.gateway.route(
        "GET",
        "/v1/payments/pq-1",
        200,
        json!({"id": "pq-1", "status": "completed", "amount": "12.50", "currency": "GBP",
               "metadata": {"order_id": "order-1"}}),
    );

    let summary = h.reconciler().pass().await;
    // Three failures in a row and the rest of Flutterwave's payments wait for the next pass.
    assert_eq!(summary.payments.gateway_errors, 3);
    assert_eq!((summary.payments.checked, summary.payments.changed), (1, 1));
    assert_eq!(
        summary.failed_steps, 0,
        "a gateway's failure is not the pass's"
    );
    let errors: i64 = h
        .scalar("SELECT count(*) FROM reconciler_checks WHERE last_error LIKE '%HTTP 503%'")
        .await;
    assert_eq!(errors, 3);

    h.spawn_worker().await;
    wait_payment(&h, "payqi", "pq-1", "completed").await;
    assert_eq!(
        ledger(&h, "payqi", "pq-1").await,
        [("payment".into(), "pq-1".into(), 1250, "GBP".into())]
    );
    let still_pending: i64 = h
        .scalar(
            "SELECT count(*) FROM payments WHERE provider = 'flutterwave' AND status = 'pending'",
        )
        .await;
    assert_eq!(still_pending, 5);
    h.assert_queues_drained().await;
    h.stop_workers().await;
}

#[tokio::test]
async fn domain_events_reach_a_bound_queue_once_each_in_order_with_the_outbox_id() {
    let mut h = Harness::start().await;
    let tap = DomainTap::bind(&h).await;
    let mut ids = h
        .deliver("paystack", &paystack_charge("ps-d1", 1, 10000))
        .await;
    ids.extend(
        h.deliver("paystack", &paystack_charge("ps-d2", 2, 20000))
            .await,
    );
    let refund = json!({"event": "refund.processed", "data": {"id": 9, "transaction_reference": "ps-d1",
                        "amount": 4000, "currency": "NGN", "status": "processed"}});
    ids.extend(h.deliver("paystack", &refund).await);
    h.wait_processed(&ids).await;

    // Through the pass lock, as `reconcile --once` does: never beside the worker's own pass.
    let reconciler = h.reconciler();
    let wait = Duration::from_secs(10);
    let first = reconciler.once(wait).await.unwrap().unwrap();
    let second = reconciler.once(wait).await.unwrap().unwrap();
    let outbox: Vec<(i64, String, serde_json::Value)> =
        sqlx::query_as("SELECT id, event_type, payload FROM domain_outbox ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(outbox.len(), 6, "{outbox:?}");
    assert_eq!(first.domain_events, 6);
    assert_eq!(second.domain_events, 0, "a stamped row is not sent again");

    let got = tap.drain(Duration::from_secs(1)).await;
    assert_eq!(got.len(), outbox.len(), "once each: {got:?}");
    for (m, (id, event_type, payload)) in got.iter().zip(&outbox) {
        assert_eq!(m.message_id.as_deref(), Some(id.to_string().as_str()));
        assert_eq!(&m.routing_key, event_type);
        assert!(m.persistent);
        assert_eq!(&m.body, payload);
        assert_eq!(m.body["type"], event_type.as_str());
        assert!(m.body["occurred_at"].is_string());
        assert!(m.body["payment"]["external_id"].is_string());
    }
    let unstamped: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE published_at IS NULL")
        .await;
    assert_eq!(unstamped, 0);
    tap.close().await;
    h.stop_workers().await;
}

#[tokio::test]
async fn reconcile_once_from_the_command_line_prints_its_summary() {
    let h = Harness::without_worker().await;
    let mut ids = h
        .store("paystack", &paystack_charge("ps-cli-1", 1, 100))
        .await;
    ids.extend(
        h.store("paystack", &paystack_charge("ps-cli-2", 2, 200))
            .await,
    );
    h.unpublish(&ids).await;
    sqlx::query(
        "INSERT INTO domain_outbox (event_type, payload)
         VALUES ('member.created', '{\"type\": \"member.created\", \"occurred_at\": \"2024-05-01T10:00:00Z\", \"member\": {\"id\": 1}}')",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    h.pending_payment("payqi", "pq-cli", 500, "GBP").await;
    h.gateway.route(
        "GET",
        "/v1/payments/pq-cli",
        200,
        json!({"id": "pq-cli", "status": "failed", "amount": "5.00", "currency": "GBP"}),
    );

    let out = tokio::task::spawn_blocking({
        let (db, amqp, prefix, gw) = (
            h.env.database.database_url.clone(),
            h.env.broker.amqp_url.clone(),
            h.env.broker.amqp_prefix.clone(),
            h.gateway.url(),
        );
        move || {
            Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
                .args(["reconcile", "--once"])
                .env("DATABASE_URL", db)
                .env("AMQP_URL", amqp)
                .env("PAYHOOK_AMQP_PREFIX", prefix)
                .env("RELAY_AFTER", "0s")
                .env("PENDING_AFTER", "1m")
                .env("PAYQI_API_URL", gw)
                .env("PAYQI_API_TOKEN", "pq-test-token")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    // Log lines go to the same stream; the summary is its own line.
    assert_eq!(
        stdout.lines().find(|l| l.starts_with("reconcile: ")).unwrap_or_default(),
        "reconcile: relayed 2 event(s), 1 domain event(s); checked 1 payment(s), changed 1; 0 gateway error(s)"
    );

    // Rows: the two events and the new reconcile event published, the domain event stamped.
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT external_id, status FROM webhook_events ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [
            ("charge.success:1".to_owned(), "published".to_owned()),
            ("charge.success:2".to_owned(), "published".to_owned()),
            ("reconcile:pq-cli:failed".to_owned(), "published".to_owned()),
        ]
    );
    let unstamped: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE published_at IS NULL")
        .await;
    assert_eq!(unstamped, 0);
    // Broker: three messages wait on the events queue for a worker.
    assert_eq!(h.env.queue_len(&h.env.names().events_queue()).await, 3);
}

#[tokio::test]
async fn the_worker_lists_the_reconciler_metrics_from_its_start() {
    let mut h = Harness::without_worker().await;
    gateway_tokens();
    let mut config = h.config();
    config.worker.reconcile = fast_reconcile();
    let addr = h.spawn_worker_with(config).await;
    let text = scrape(addr).await.unwrap();
    for series in [
        "payhook_dead_letters_total",
        "payhook_retries_total",
        r#"payhook_reconciler_runs_total{outcome="error"}"#,
    ] {
        assert_eq!(metric_value(&text, series), Some(0.0), "{series} in {text}");
    }
    assert!(metric_value(&text, r#"payhook_reconciler_runs_total{outcome="ok"}"#).is_some());
    assert_eq!(
        metric_value(&text, "payhook_outbox_oldest_unpublished_seconds"),
        Some(0.0)
    );

    // A payment the gateway still calls pending: counted by the gauge, left as it is.
    h.pending_payment("payqi", "pq-wait", 100, "GBP").await;
    h.gateway.route(
        "GET",
        "/v1/payments/pq-wait",
        200,
        json!({"id": "pq-wait", "status": "pending", "amount": "1.00", "currency": "GBP"}),
    );
    eventually("the gauge counts the pending payment", || async {
        let text = scrape(addr).await?;
        (metric_value(&text, "payhook_pending_payments")? == 1.0).then_some(())
    })
    .await;
    eventually("the gateway was asked", || async {
        h.gateway
            .call_lines()
            .contains(&"GET /v1/payments/pq-wait".to_owned())
            .then_some(())
    })
    .await;
    let events: i64 = h.scalar("SELECT count(*) FROM webhook_events").await;
    assert_eq!(events, 0, "no news, no event");
    assert_eq!(payment(&h, "payqi", "pq-wait").await.status, "pending");
    h.stop_workers().await;
}

#[tokio::test]
async fn reconcile_once_waits_for_the_pass_in_progress_before_running_its_own() {
    use sqlx::Connection;
    let h = Harness::without_worker().await;
    let ids = h
        .store("paystack", &paystack_charge("ps-wait", 1, 100))
        .await;
    h.unpublish(&ids).await;
    // A pass in progress elsewhere: its session holds the pass lock ("payh", 2).
    let mut elsewhere = sqlx::PgConnection::connect(&h.env.database.database_url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, 2)")
        .bind(0x7061_7968_i32)
        .execute(&mut elsewhere)
        .await
        .unwrap();

    let reconciler = h.reconciler();
    let once = tokio::spawn(async move { reconciler.once(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!once.is_finished(), "it waits while the other pass runs");
    let status: String = h.scalar("SELECT status FROM webhook_events").await;
    assert_eq!(status, "received", "and touches nothing meanwhile");

    elsewhere.close().await.unwrap();
    let summary = once
        .await
        .unwrap()
        .unwrap()
        .expect("it ran once the lock was free");
    assert_eq!(summary.events, 1);
    let status: String = h.scalar("SELECT status FROM webhook_events").await;
    assert_eq!(status, "published");
    assert_eq!(h.env.queue_len(&h.env.names().events_queue()).await, 1);
}

/// Dead-lettering out of a delay queue is at-most-once: a copy whose TTL ends while RabbitMQ
/// restarts is dropped, leaving the event `retrying` with no message anywhere. The relay
/// republishes it once its copy is well overdue, and it is processed once.
#[tokio::test]
async fn a_retrying_event_whose_delayed_copy_was_lost_is_republished_and_processed() {
    let mut h = Harness::without_worker().await;
    let ids = stored_retrying(&h, "ps-lost-retry", "now() - interval '1 minute'").await;
    let mut config = h.config();
    config.worker.reconcile = fast_reconcile();
    h.spawn_worker_with(config).await;

    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;
    let (rows, amount): (i64, i64) =
        sqlx::query_as("SELECT count(*), COALESCE(sum(amount_minor), 0)::bigint FROM transactions")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((rows, amount), (1, 2500), "applied once");
}

/// A `retrying` event whose delayed copy is still on its way is left alone.
#[tokio::test]
async fn a_retrying_event_whose_copy_is_not_yet_due_is_not_republished() {
    let mut h = Harness::without_worker().await;
    let ids = stored_retrying(&h, "ps-waiting-retry", "now() + interval '1 hour'").await;
    let mut config = h.config();
    config.worker.reconcile = fast_reconcile();
    let addr = h.spawn_worker_with(config).await;
    eventually("two reconcile passes", || async {
        let text = scrape(addr).await?;
        (metric_value(&text, r#"payhook_reconciler_runs_total{outcome="ok"}"#)? >= 2.0)
            .then_some(())
    })
    .await;

    let status: String = h
        .scalar(&format!(
            "SELECT status FROM webhook_events WHERE id = {}",
            ids[0]
        ))
        .await;
    assert_eq!(status, "retrying", "its delayed copy will bring it back");
}

/// A stored charge left `retrying` after one attempt, its delayed copy due at `due` (SQL).
async fn stored_retrying(h: &Harness, reference: &str, due: &str) -> Vec<i64> {
    let ids = h
        .store("paystack", &paystack_charge(reference, 1, 2500))
        .await;
    sqlx::query(&format!(
        "UPDATE webhook_events SET status = 'retrying', attempts = 1, retry_due = {due}
         WHERE id = $1"
    ))
    .bind(ids[0])
    .execute(&h.pool)
    .await
    .unwrap();
    ids
}

#[tokio::test]
async fn the_relay_leaves_alone_an_unstamped_event_a_worker_is_applying() {
    use sqlx::Connection;
    let h = Harness::without_worker().await;
    let ids = h
        .store("paystack", &paystack_charge("ps-held-1", 1, 100))
        .await;
    h.unpublish(&ids).await;
    // A worker's batch holds the row (ingest's stamp skipped it): the event is in hand.
    let mut worker = sqlx::PgConnection::connect(&h.env.database.database_url)
        .await
        .unwrap();
    let mut held = worker.begin().await.unwrap();
    sqlx::query("SELECT id FROM webhook_events WHERE id = $1 FOR UPDATE")
        .bind(ids[0])
        .execute(&mut *held)
        .await
        .unwrap();
    let relay = || {
        let (db, amqp, prefix) = (
            h.env.database.database_url.clone(),
            h.env.broker.amqp_url.clone(),
            h.env.broker.amqp_prefix.clone(),
        );
        tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
            .args(["reconcile", "--once"])
            .env("DATABASE_URL", db)
            .env("AMQP_URL", amqp)
            .env("PAYHOOK_AMQP_PREFIX", prefix)
            .env("RELAY_AFTER", "0s")
            .output()
    };
    let out = relay().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reconcile: relayed 0 event(s)"), "{stdout}");
    assert_eq!(h.env.queue_len(&h.env.names().events_queue()).await, 0);
    // Released unfinished (its transaction rolled back): relayed next time.
    held.rollback().await.unwrap();
    let out = relay().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("reconcile: relayed 1 event(s)"), "{stdout}");
}
