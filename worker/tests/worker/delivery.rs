//! Exactly once in effect: redeliveries, any order, several workers.

use crate::gocardless_payments::{ledger, payment};
use crate::support::*;

#[tokio::test]
async fn the_same_event_delivered_three_times_makes_one_ledger_row() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    let body = gc_body(vec![gc_payment(
        "EV1",
        "confirmed",
        "PM1",
        "MD1",
        "2750",
        "2024-05-01T10:00:00Z",
    )]);
    // The gateway resends the delivery, and the broker redelivers its message: three copies.
    let ids = h.deliver("gocardless", &body).await;
    h.deliver("gocardless", &body).await;
    h.publish(ids[0]).await;
    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;

    assert_eq!(ledger(&h, "gocardless", "PM1").await.len(), 1);
    let events: i64 = h.scalar("SELECT count(*) FROM webhook_events").await;
    assert_eq!(events, 1);
    let completed: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE event_type = 'payment.completed'")
        .await;
    assert_eq!(completed, 1, "one domain event, however many copies");
}

/// Every order of four events of one lifecycle, each order on its own payment, all published
/// at once (so the worker's concurrency interleaves them further): every payment ends paid
/// out with exactly one ledger row.
#[tokio::test]
async fn events_in_any_order_end_in_the_same_state() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    let lifecycle = ["created", "submitted", "confirmed", "paid_out"];
    let mut all = Vec::new();
    for (n, order) in permutations(&[0, 1, 2, 3]).into_iter().enumerate() {
        let pm = format!("PM{n}");
        for i in order {
            let action = lifecycle[i];
            let ev = gc_payment(
                &format!("EV{n}-{action}"),
                action,
                &pm,
                "MD1",
                "1200",
                &format!("2024-05-0{}T10:00:00Z", i + 1),
            );
            all.extend(h.deliver("gocardless", &gc_body(vec![ev])).await);
        }
    }
    h.wait_processed(&all).await;
    h.assert_queues_drained().await;

    for n in 0..24 {
        let pm = format!("PM{n}");
        let p = payment(&h, "gocardless", &pm).await;
        assert_eq!(
            (p.status.as_str(), p.amount_minor),
            ("paid_out", Some(1200)),
            "{pm}"
        );
        assert_eq!(ledger(&h, "gocardless", &pm).await.len(), 1, "{pm}");
    }
    let recorded: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE event_type = 'transaction.recorded'")
        .await;
    assert_eq!(recorded, 24);
}

#[tokio::test]
async fn a_late_pending_event_never_undoes_a_completed_payment() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    let confirmed = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV2",
                "confirmed",
                "PM2",
                "MD1",
                "900",
                "2024-05-03T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&confirmed).await;
    let late = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV1",
                "created",
                "PM2",
                "MD1",
                "900",
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&late).await;

    assert_eq!(payment(&h, "gocardless", "PM2").await.status, "completed");
    assert_eq!(
        h.outbox_types()
            .await
            .iter()
            .filter(|t| t.starts_with("payment."))
            .count(),
        1,
        "the late event changed nothing"
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn two_workers_on_one_queue_apply_each_event_once() {
    let mut h = Harness::start().await;
    h.known_member("MD1").await;
    h.spawn_worker().await;
    let n = 200;
    let events: Vec<_> = (0..n)
        .map(|i| {
            gc_payment(
                &format!("EV{i}"),
                "confirmed",
                &format!("PM{i}"),
                "MD1",
                "100",
                "2024-05-01T10:00:00Z",
            )
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in events.chunks(50) {
        ids.extend(h.deliver("gocardless", &gc_body(chunk.to_vec())).await);
    }
    // Every message twice: both workers will see copies of the same events.
    for id in &ids {
        h.publish(*id).await;
    }
    h.wait_processed(&ids).await;
    h.assert_queues_drained().await;

    let rows: i64 = h.scalar("SELECT count(*) FROM transactions").await;
    let distinct: i64 = h
        .scalar("SELECT count(DISTINCT payment_id) FROM transactions")
        .await;
    let recorded: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE event_type = 'transaction.recorded'")
        .await;
    assert_eq!((rows, distinct, recorded), (n, n, n));
    let sum: i64 = h
        .scalar("SELECT sum(amount_minor)::bigint FROM transactions")
        .await;
    assert_eq!(sum, 100 * n);
    h.stop_workers().await;
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, *first);
            out.push(p);
        }
    }
    out
}

#[test]
fn there_are_24_orders_of_four_events() {
    assert_eq!(permutations(&[0, 1, 2, 3]).len(), 24);
}
