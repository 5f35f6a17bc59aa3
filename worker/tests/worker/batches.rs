//! Batched transactions (worker/src/routing.rs `handle_batch`): events already waiting in the
//! queue are applied together, and one that fails does not hold up or undo the others.

use serde_json::json;

use crate::support::*;

/// A backlog published before the worker starts: the first deliveries arrive together.
async fn backlog(h: &Harness, bad_at: &[usize]) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..20 {
        let amount = if bad_at.contains(&i) {
            "10.005"
        } else {
            "10.00"
        };
        let body = json!({"event": "charge.completed", "data": {"id": i, "tx_ref": format!("fw-{i}"),
            "amount": amount, "currency": "NGN", "status": "successful"}});
        ids.extend(h.deliver("flutterwave", &body).await);
    }
    ids
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_with_every_event_processed_once() {
    let mut h = Harness::without_worker().await;
    let ids = backlog(&h, &[]).await;
    let ops = h.spawn_worker().await;
    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;

    let payments: i64 = h
        .scalar("SELECT count(*) FROM payments WHERE status = 'completed' AND amount_minor = 1000")
        .await;
    assert_eq!(payments, 20);
    let ledger: i64 = h.scalar("SELECT count(*) FROM transactions").await;
    assert_eq!(ledger, 20, "one ledger row per payment");
    let metrics = scrape(ops).await.expect("the worker serves /metrics");
    let batches = metric_value(&metrics, "payhook_worker_batch_size_count").unwrap();
    assert!(
        batches < 20.0,
        "20 waiting events took {batches} transactions: they were not batched"
    );
}

#[tokio::test]
async fn an_event_that_fails_in_a_batch_goes_dead_alone_and_the_others_are_applied() {
    let mut h = Harness::without_worker().await;
    let ids = backlog(&h, &[7]).await;
    h.spawn_worker().await;
    let (bad, good): (Vec<i64>, Vec<i64>) = ids.iter().partition(|id| **id == ids[7]);
    h.wait_status(&bad, "dead").await;
    h.wait_processed(&good).await;

    let payments: i64 = h
        .scalar("SELECT count(*) FROM payments WHERE status = 'completed'")
        .await;
    assert_eq!(payments, 19, "the batch's other events are applied");
    let fw7: i64 = h
        .scalar("SELECT count(*) FROM payments WHERE reference = 'fw-7'")
        .await;
    assert_eq!(fw7, 0, "nothing of the bad event is kept");
    let attempts: i32 = h
        .scalar(&format!(
            "SELECT attempts FROM webhook_events WHERE id = {}",
            ids[7]
        ))
        .await;
    assert_eq!(attempts, 1, "a permanent error: one attempt, no retry");
    let dead = h
        .env
        .take_messages(
            &h.env.names().dead_queue(),
            5,
            std::time::Duration::from_secs(2),
        )
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body["id"], ids[7]);
}

/// Distinct transactions the events were committed in: processed_at is the transaction's
/// start time, shared by every event of one batch.
async fn transactions_of(h: &Harness, ids: &[i64]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT processed_at) FROM webhook_events WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_poison_event_does_not_send_its_batch_down_the_one_by_one_path() {
    let mut h = Harness::without_worker().await;
    let ids = backlog(&h, &[3]).await;
    h.spawn_worker().await;
    let good: Vec<i64> = ids.iter().copied().filter(|id| *id != ids[3]).collect();
    h.wait_status(&[ids[3]], "dead").await;
    h.wait_processed(&good).await;

    let transactions = transactions_of(&h, &good).await;
    assert!(
        transactions < good.len() as i64 / 2,
        "19 good events took {transactions} transactions: the poison split its batch"
    );
    let error: String = h
        .scalar(&format!(
            "SELECT last_error FROM webhook_events WHERE id = {}",
            ids[3]
        ))
        .await;
    assert!(error.contains("amount"), "{error}");
}

#[tokio::test]
async fn a_transient_failure_in_a_batch_retries_that_event_alone_and_commits_the_rest() {
    let mut h = Harness::without_worker().await;
    h.known_member("MD1").await;
    // One GoCardless payment with ids only, whose API answers 503 once, among a backlog.
    h.gateway
        .once("GET", "/payments/PM1", 503, json!({"error": "try later"}));
    h.gateway.gocardless_payment("PM1", "MD1", 2750);
    let mut ids = backlog(&h, &[]).await;
    let bare = crate::support::gc_event(
        "EV1",
        "payments",
        "confirmed",
        json!({"payment": "PM1"}),
        json!({"cause": "payment_confirmed"}),
        json!({}),
        "2024-05-01T10:00:00Z",
    );
    let flaky = h.deliver("gocardless", &gc_body(vec![bare])).await;
    ids.extend(backlog_more(&h).await);
    h.spawn_worker().await;

    let good: Vec<i64> = ids.clone();
    h.wait_processed(&good).await;
    assert!(transactions_of(&h, &good).await < good.len() as i64 / 2);
    h.wait_processed(&flaky).await;
    let attempts: i32 = h
        .scalar(&format!(
            "SELECT attempts FROM webhook_events WHERE id = {}",
            flaky[0]
        ))
        .await;
    assert_eq!(
        attempts, 1,
        "one failed attempt, then processed after the delay"
    );
    let ledger: i64 = h.scalar("SELECT count(*) FROM transactions").await;
    assert_eq!(ledger, 40 + 1);
    h.assert_queues_drained().await;
}

/// Twenty more Flutterwave payments (fw-100 …), published after whatever came before.
async fn backlog_more(h: &Harness) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 100..120 {
        let body = json!({"event": "charge.completed", "data": {"id": i, "tx_ref": format!("fw-{i}"),
            "amount": "10.00", "currency": "NGN", "status": "successful"}});
        ids.extend(h.deliver("flutterwave", &body).await);
    }
    ids
}

#[tokio::test]
async fn an_event_processed_before_ingest_stamped_it_published_gets_its_published_at_from_the_worker(
) {
    // Ingest skips the rows a worker holds (intake::mark_published); the worker stamps them.
    let h = Harness::start().await;
    let body = json!({"event": "charge.completed", "data": {"id": 1, "tx_ref": "fw-1",
        "amount": "10.00", "currency": "NGN", "status": "successful"}});
    let ids = h.deliver("flutterwave", &body).await;
    // The harness stores and publishes without stamping `published_at`, as a skipped mark.
    h.wait_processed(&ids).await;

    let stamped: i64 = h
        .scalar("SELECT count(*) FROM webhook_events WHERE status = 'processed' AND published_at IS NOT NULL")
        .await;
    assert_eq!(stamped, 1, "the relay would otherwise publish it again");
}

#[tokio::test]
async fn several_failures_in_one_batch_are_each_dead_lettered_once_and_the_rest_acked() {
    let mut h = Harness::without_worker().await;
    let bad_at = [2, 9, 15];
    let ids = backlog(&h, &bad_at).await;
    h.spawn_worker().await;
    let bad: Vec<i64> = bad_at.iter().map(|i| ids[*i]).collect();
    let good: Vec<i64> = ids.iter().copied().filter(|id| !bad.contains(id)).collect();
    h.wait_status(&bad, "dead").await;
    h.wait_processed(&good).await;

    let mut dead: Vec<i64> = h
        .env
        .take_messages(
            &h.env.names().dead_queue(),
            10,
            std::time::Duration::from_secs(2),
        )
        .await
        .iter()
        .map(|m| m.body["id"].as_i64().unwrap())
        .collect();
    dead.sort();
    assert_eq!(dead, bad, "one dead-letter copy per failed event");
    eventually("the events queue drains", || async {
        (h.env.queue_len(&h.env.names().events_queue()).await == 0).then_some(())
    })
    .await;
    let payments: i64 = h
        .scalar("SELECT count(*) FROM payments WHERE status = 'completed'")
        .await;
    assert_eq!(payments, 17);
}
