//! Group commit (shared/src/intake.rs) directly: deliveries that queue up while a batch is in
//! flight share the next transaction, and one the database refuses does not fail the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use payhook_shared::amqp::Broker;
use payhook_shared::intake::{Delivery, Intake, IntakeConfig, IntakeError};
use payhook_shared::providers::NewEvent;
use payhook_shared::testing::TestEnv;

fn delivery(id: &str, payload: serde_json::Value) -> Delivery {
    Delivery {
        provider: "payqi",
        headers: serde_json::json!({}),
        body: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        events: vec![NewEvent {
            external_id: id.to_owned(),
            event_type: "payment.completed".into(),
            resource_id: None,
            payload,
            occurred_at: None,
        }],
    }
}

#[tokio::test]
async fn a_delivery_the_database_refuses_does_not_fail_the_others_in_its_batch() {
    let env = TestEnv::new();
    let pool = env.pool().await;
    let broker = Arc::new(Broker::new(&env.broker));
    let (intake, _tasks) = Intake::start(
        pool.clone(),
        broker,
        IntakeConfig {
            batch_max: 64,
            confirm_timeout: Duration::from_secs(5),
            accept_without_broker: false,
        },
    );

    // Hold the table so the first delivery's batch waits, and the rest queue up behind it.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE webhook_deliveries IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = tokio::spawn({
        let intake = intake.clone();
        async move {
            intake
                .submit(
                    delivery("first", serde_json::json!({})),
                    Duration::from_secs(10),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rest = Vec::new();
    for i in 0..10 {
        // PostgreSQL's jsonb cannot hold U+0000: this one is refused by the database itself.
        let payload = if i == 5 {
            serde_json::json!({"note": "a\u{0}b"})
        } else {
            serde_json::json!({})
        };
        let intake = intake.clone();
        rest.push(tokio::spawn(async move {
            intake
                .submit(delivery(&format!("e{i}"), payload), Duration::from_secs(10))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.commit().await.unwrap();

    assert!(first.await.unwrap().is_ok());
    let results: Vec<_> = futures::future::join_all(rest)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (i, r) in results.iter().enumerate() {
        if i == 5 {
            assert!(matches!(r, Err(IntakeError::Database(_))), "{r:?}");
        } else {
            assert!(r.as_ref().is_ok_and(|a| a.published), "delivery {i}: {r:?}");
        }
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE status = 'published'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, 10, "the first and the nine good ones");
    let batches: Vec<String> =
        sqlx::query_scalar("SELECT external_id FROM webhook_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!batches.contains(&"e5".to_string()));
    env.delete_topology_blocking();
}

#[tokio::test]
async fn marking_published_keeps_a_status_a_worker_already_set_and_still_records_the_time() {
    let env = TestEnv::new();
    let pool = env.pool().await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_events (provider, external_id, event_type, payload, status)
         VALUES ('payqi', 'a', 'payment.completed', '{}', 'received'),
                ('payqi', 'b', 'payment.completed', '{}', 'processed')
         RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    payhook_shared::intake::mark_published(&pool, &ids)
        .await
        .unwrap();
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, published_at IS NOT NULL FROM webhook_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("published".into(), true), ("processed".into(), true)]
    );
}

#[tokio::test]
async fn marking_published_skips_a_row_a_worker_holds_instead_of_waiting_for_its_batch() {
    let env = TestEnv::new();
    let pool = env.pool().await;
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_events (provider, external_id, event_type, payload, status)
         VALUES ('payqi', 'held', 'payment.completed', '{}', 'received'),
                ('payqi', 'free', 'payment.completed', '{}', 'received')
         RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    // A worker's batch got the message first and holds the row until it commits.
    let mut worker = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM webhook_events WHERE id = $1 FOR UPDATE")
        .bind(ids[0])
        .execute(&mut *worker)
        .await
        .unwrap();

    tokio::time::timeout(
        Duration::from_secs(2),
        payhook_shared::intake::mark_published(&pool, &ids),
    )
    .await
    .expect("marking waited for the worker's batch")
    .unwrap();
    worker.rollback().await.unwrap();

    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT status, published_at IS NOT NULL FROM webhook_events ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("received".into(), false), ("published".into(), true)],
        "the held row is left for the worker (or the relay), the other is marked"
    );
}
