//! Batched transactions (worker/src/routing.rs `handle_batch`): events already waiting in the
//! queue are applied together, and one that fails does not hold up or undo the others.

use serde_json::json;

use crate::support::*;

/// A backlog published before the worker starts: the first deliveries arrive together.
async fn backlog(h: &Harness, bad_at: Option<usize>) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..20 {
        let amount = if Some(i) == bad_at { "10.005" } else { "10.00" };
        let body = json!({"event": "charge.completed", "data": {"id": i, "tx_ref": format!("fw-{i}"),
            "amount": amount, "currency": "NGN", "status": "successful"}});
        ids.extend(h.deliver("flutterwave", &body).await);
    }
    ids
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_with_every_event_processed_once() {
    let mut h = Harness::without_worker().await;
    let ids = backlog(&h, None).await;
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
    let ids = backlog(&h, Some(7)).await;
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
