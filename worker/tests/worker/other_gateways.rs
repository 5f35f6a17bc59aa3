//! Paystack, Flutterwave and PayQI events; unknown event types; amounts that can't be exact.

use serde_json::json;

use crate::gocardless_payments::{ledger, payment};
use crate::support::*;

#[tokio::test]
async fn paystack_charge_success_completes_the_payment_with_a_ledger_row() {
    let h = Harness::start().await;
    let body = json!({"event": "charge.success", "data": {"id": 4099, "reference": "ps-ref-1", "amount": 275000,
                      "currency": "NGN", "status": "success", "paid_at": "2024-05-01T10:00:00.000Z",
                      "customer": {"email": "someone@example.com"}}});
    let ids = h.deliver("paystack", &body).await;
    h.wait_processed(&ids).await;

    let p = payment(&h, "paystack", "ps-ref-1").await;
    assert_eq!(
        (p.status.as_str(), p.amount_minor, p.currency.as_deref()),
        ("completed", Some(275000), Some("NGN"))
    );
    assert_eq!(p.reference.as_deref(), Some("ps-ref-1"));
    let meta: serde_json::Value = h.scalar("SELECT metadata FROM payments").await;
    assert_eq!(meta["paystack_id"], "4099");
    assert_eq!(
        ledger(&h, "paystack", "ps-ref-1").await,
        [("payment".into(), "ps-ref-1".into(), 275000, "NGN".into())]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn paystack_refund_processed_refunds_the_payment_with_a_negative_row_per_refund() {
    let h = Harness::start().await;
    let charge = json!({"event": "charge.success", "data": {"id": 1, "reference": "ps-ref-2", "amount": 100000, "currency": "NGN", "status": "success"}});
    let ids = h.deliver("paystack", &charge).await;
    h.wait_processed(&ids).await;
    // Two partial refunds; the second has no id (keyed on the body hash).
    let first = json!({"event": "refund.processed", "data": {"id": 77, "transaction_reference": "ps-ref-2", "amount": 30000, "currency": "NGN", "status": "processed"}});
    let second = json!({"event": "refund.processed", "data": {"transaction_reference": "ps-ref-2", "amount": 20000, "currency": "NGN", "status": "processed"}});
    let mut ids = h.deliver("paystack", &first).await;
    ids.extend(h.deliver("paystack", &second).await);
    h.wait_processed(&ids).await;

    assert_eq!(payment(&h, "paystack", "ps-ref-2").await.status, "refunded");
    // The two refunds may be applied in either order (two workers' tasks): sort by amount.
    let mut rows = ledger(&h, "paystack", "ps-ref-2").await;
    rows.sort_by_key(|r| std::cmp::Reverse(r.2));
    let amounts: Vec<(String, i64)> = rows.iter().map(|r| (r.0.clone(), r.2)).collect();
    assert_eq!(
        amounts,
        [
            ("payment".into(), 100000),
            ("refund".into(), -20000),
            ("refund".into(), -30000)
        ]
    );
    assert_eq!(rows[2].1, "77", "a refund with an id is keyed on it");
    assert!(
        rows[1].1.starts_with("refund.processed:"),
        "else on the event's dedup key"
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn flutterwave_charge_completed_successful_completes_and_failed_fails_with_exact_amounts() {
    let h = Harness::start().await;
    // A decimal string and a JSON number with trailing zeros: both exact, neither through f64.
    let ok = json!({"event": "charge.completed", "data": {"id": 285959875, "tx_ref": "fw-ok", "flw_ref": "FLW-1",
                    "amount": "100.50", "currency": "NGN", "status": "successful"}});
    let failed: serde_json::Value = serde_json::from_str(
        r#"{"event": "charge.completed", "data": {"id": 285959876, "tx_ref": "fw-failed", "amount": 10.00,
            "currency": "USD", "status": "failed", "processor_response": "Declined"}}"#,
    )
    .unwrap();
    let mut ids = h.deliver("flutterwave", &ok).await;
    ids.extend(h.deliver("flutterwave", &failed).await);
    h.wait_processed(&ids).await;

    let p = payment(&h, "flutterwave", "fw-ok").await;
    assert_eq!(
        (p.status.as_str(), p.amount_minor, p.reference.as_deref()),
        ("completed", Some(10050), Some("fw-ok"))
    );
    assert_eq!(
        ledger(&h, "flutterwave", "fw-ok").await,
        [("payment".into(), "fw-ok".into(), 10050, "NGN".into())]
    );
    let f = payment(&h, "flutterwave", "fw-failed").await;
    assert_eq!(
        (
            f.status.as_str(),
            f.amount_minor,
            f.failure_reason.as_deref()
        ),
        ("failed", Some(1000), Some("Declined"))
    );
    assert!(ledger(&h, "flutterwave", "fw-failed").await.is_empty());
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payqi_payment_lifecycle_uses_the_order_id_as_reference() {
    let h = Harness::start().await;
    let ev = |id: &str, kind: &str, payment: &str, created: i64| {
        serde_json::from_str::<serde_json::Value>(&format!(
            r#"{{"id": "{id}", "type": "payment.{kind}", "created": {created},
                "data": {{"id": "{payment}", "amount": 25.00, "currency": "XRP", "status": "{kind}",
                          "metadata": {{"order_id": "order-{payment}"}}}}}}"#
        ))
        .unwrap()
    };
    for (id, kind, pay, t) in [
        ("pq1", "created", "pay_1", 1714557600),
        ("pq2", "pending", "pay_1", 1714557601),
    ] {
        let ids = h.deliver("payqi", &ev(id, kind, pay, t)).await;
        h.wait_processed(&ids).await;
        assert_eq!(payment(&h, "payqi", "pay_1").await.status, "pending");
    }
    let mut ids = h
        .deliver("payqi", &ev("pq3", "completed", "pay_1", 1714557602))
        .await;
    ids.extend(
        h.deliver("payqi", &ev("pq4", "failed", "pay_2", 1714557602))
            .await,
    );
    ids.extend(
        h.deliver("payqi", &ev("pq5", "expired", "pay_3", 1714557602))
            .await,
    );
    h.wait_processed(&ids).await;

    let p = payment(&h, "payqi", "pay_1").await;
    assert_eq!(
        (p.status.as_str(), p.reference.as_deref()),
        ("completed", Some("order-pay_1"))
    );
    assert_eq!(
        (p.amount_minor, p.currency.as_deref()),
        (Some(25_000_000), Some("XRP")),
        "XRP has 6 decimals"
    );
    assert_eq!(
        ledger(&h, "payqi", "pay_1").await,
        [("payment".into(), "pay_1".into(), 25_000_000, "XRP".into())]
    );
    assert_eq!(payment(&h, "payqi", "pay_2").await.status, "failed");
    assert_eq!(payment(&h, "payqi", "pay_3").await.status, "expired");
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn an_unknown_event_type_is_stored_as_ignored_and_counted() {
    let h = Harness::start().await;
    let body = json!({"event": "subscription.create", "data": {"id": 9, "status": "active"}});
    let ids = h.deliver("paystack", &body).await;
    h.wait_status(&ids, "ignored").await;

    let (last_error, processed): (Option<String>, bool) =
        sqlx::query_as("SELECT last_error, processed_at IS NOT NULL FROM webhook_events")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((last_error, processed), (None, true));
    let metrics = reqwest::get(format!("http://{}/metrics", h.ops_addrs()[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("payhook_events_processed_total")
                && l.contains(r#"event_type="subscription.create""#)
                && l.contains(r#"outcome="ignored""#)),
        "ignored events are counted"
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn an_amount_that_cannot_be_converted_exactly_is_a_permanent_error() {
    let h = Harness::start().await;
    let body = json!({"event": "charge.completed", "data": {"id": 1, "tx_ref": "fw-odd", "amount": "10.005", "currency": "NGN", "status": "successful"}});
    let ids = h.deliver("flutterwave", &body).await;
    h.wait_status(&ids, "dead").await;

    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM webhook_events")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "no retry for a permanent error");
    assert!(error.contains("more decimals than NGN allows"), "{error}");
    let payments: i64 = h.scalar("SELECT count(*) FROM payments").await;
    assert_eq!(payments, 0, "nothing half-applied");
    let dead = h
        .env
        .take_messages(
            &h.env.names().dead_queue(),
            5,
            std::time::Duration::from_secs(2),
        )
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body["id"], ids[0]);
    assert_eq!(dead[0].routing_key, "flutterwave.charge.completed");
}
