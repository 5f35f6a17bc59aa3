//! Arrival order never sends an event dead (DESIGN.md, Domain rules): a payment before its
//! mandate, with and without an API token, with the API down; a refund before its charge; an
//! event that truly needs the API and has no token retries, then goes dead naming the setting.

use std::time::Duration;

use serde_json::{json, Value};

use crate::gocardless_payments::{ledger, payment, PaymentRow};
use crate::support::*;

/// `mandates.created` carrying the member in its metadata, as ka-member sends it.
fn mandate_created(ev: &str, mandate: &str, metadata: Value) -> Value {
    gc_event(
        ev,
        "mandates",
        "created",
        json!({ "mandate": mandate }),
        json!({ "origin": "api", "cause": "mandate_created" }),
        metadata,
        "2024-05-01T09:00:00Z",
    )
}

fn member_meta(name: &str) -> Value {
    json!({ "name": name, "email": format!("{}@example.com", name.to_lowercase()) })
}

/// `payments.confirmed` with ids only: only the API knows its amount.
fn bare_confirmed(ev: &str, pm: &str) -> Value {
    gc_event(
        ev,
        "payments",
        "confirmed",
        json!({ "payment": pm }),
        json!({ "cause": "payment_confirmed" }),
        json!({}),
        "2024-05-02T10:00:00Z",
    )
}

/// (payments.member_id, transactions.member_id) of a GoCardless payment and its ledger row.
async fn links(h: &Harness, pm: &str) -> (Option<i64>, Option<i64>) {
    sqlx::query_as(
        "SELECT p.member_id, t.member_id FROM payments p JOIN transactions t ON t.payment_id = p.id
         WHERE p.provider = 'gocardless' AND p.external_id = $1",
    )
    .bind(pm)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

async fn member_id(h: &Harness, mandate: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM members WHERE mandate_id = $1")
        .bind(mandate)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_payment_before_its_mandate_without_an_api_token_is_recorded_then_linked_by_the_mandate()
{
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let pay = gc_payment(
        "EV1",
        "confirmed",
        "PM1",
        "MD1",
        "2750",
        "2024-05-02T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![pay])).await;
    h.wait_processed(&ids).await;

    assert_eq!(
        payment(&h, "gocardless", "PM1").await,
        PaymentRow {
            status: "completed".into(),
            amount_minor: Some(2750),
            currency: Some("GBP".into()),
            reference: Some("REF-PM1".into()),
            mandate_id: Some("MD1".into()),
            member_id: None,
            failure_reason: None,
        }
    );
    assert_eq!(
        ledger(&h, "gocardless", "PM1").await,
        [("payment".into(), "PM1".into(), 2750, "GBP".into())]
    );
    assert_eq!(links(&h, "PM1").await, (None, None));

    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![mandate_created("EV2", "MD1", member_meta("Ada"))]),
        )
        .await;
    h.wait_processed(&ids).await;
    let member = member_id(&h, "MD1").await;
    assert_eq!(links(&h, "PM1").await, (Some(member), Some(member)));
    assert!(
        h.gateway.calls().is_empty(),
        "no token: the API is never asked"
    );
    assert_eq!(
        h.outbox_types().await,
        [
            "payment.completed",
            "transaction.recorded",
            "member.created"
        ]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn a_payment_before_its_mandate_while_the_api_is_down_is_recorded_and_not_retried() {
    let h = Harness::start().await;
    h.gateway
        .prefix("GET", "/mandates/", 503, json!({"error": "maintenance"}));
    let pay = gc_payment(
        "EV1",
        "confirmed",
        "PM1",
        "MD1",
        "1000",
        "2024-05-02T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![pay])).await;
    h.wait_processed(&ids).await;

    assert_eq!(h.gateway.call_lines(), ["GET /mandates/MD1"]);
    let p = payment(&h, "gocardless", "PM1").await;
    assert_eq!(
        (p.status.as_str(), p.mandate_id.as_deref(), p.member_id),
        ("completed", Some("MD1"), None)
    );
    assert_eq!(ledger(&h, "gocardless", "PM1").await.len(), 1);
    let attempts: i32 = h.scalar("SELECT attempts FROM webhook_events").await;
    assert_eq!(
        attempts, 0,
        "an API that is away is not the event's failure"
    );

    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![mandate_created("EV2", "MD1", member_meta("Ada"))]),
        )
        .await;
    h.wait_processed(&ids).await;
    let member = member_id(&h, "MD1").await;
    assert_eq!(links(&h, "PM1").await, (Some(member), Some(member)));
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn a_mandate_with_partial_metadata_and_no_api_token_makes_the_member_from_what_it_has() {
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let ev = mandate_created("EV1", "MD1", json!({ "name": "Grace Hopper" }));
    let ids = h.deliver("gocardless", &gc_body(vec![ev])).await;
    h.wait_processed(&ids).await;

    let (name, email, status): (Option<String>, Option<String>, String) =
        sqlx::query_as("SELECT name, email, status FROM members WHERE mandate_id = 'MD1'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_deref(), email, status.as_str()),
        (Some("Grace Hopper"), None, "active")
    );
    assert!(h.gateway.calls().is_empty());
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn an_event_with_only_ids_and_no_api_token_retries_then_goes_dead_naming_the_setting() {
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let ids = h
        .deliver("gocardless", &gc_body(vec![bare_confirmed("EV1", "PM1")]))
        .await;
    h.wait_status(&ids, "retrying").await;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM webhook_events")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.contains("GOCARDLESS_API_TOKEN is not set"), "{error}");
    let retry_queue = h.env.names().retry_queue("1s");
    assert_eq!(
        h.env
            .take_messages(&retry_queue, 5, Duration::from_secs(2))
            .await
            .len(),
        1,
        "it waits in the first delay queue"
    );

    // The last delay used up: the next attempt is the seventh.
    sqlx::query("UPDATE webhook_events SET attempts = 6")
        .execute(&h.pool)
        .await
        .unwrap();
    h.publish(ids[0]).await;
    h.wait_status(&ids, "dead").await;
    let error: String = h.scalar("SELECT last_error FROM webhook_events").await;
    assert!(error.starts_with("gave up after 7 attempts"), "{error}");
    assert!(error.contains("GOCARDLESS_API_TOKEN is not set"), "{error}");
    let payments: i64 = h.scalar("SELECT count(*) FROM payments").await;
    assert_eq!(payments, 0, "nothing recorded without an amount");
    let dead = h
        .env
        .take_messages(&h.env.names().dead_queue(), 5, Duration::from_secs(2))
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body["id"], ids[0]);
}

#[tokio::test]
async fn a_payment_created_with_only_ids_and_no_api_token_is_recorded_pending_without_an_amount() {
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let ev = gc_event(
        "EV1",
        "payments",
        "created",
        json!({ "payment": "PM1", "mandate": "MD1" }),
        json!({ "cause": "payment_created" }),
        json!({}),
        "2024-05-01T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![ev])).await;
    h.wait_processed(&ids).await;
    let p = payment(&h, "gocardless", "PM1").await;
    assert_eq!(
        (p.status.as_str(), p.amount_minor, p.mandate_id.as_deref()),
        ("pending", None, Some("MD1"))
    );

    // The confirmation carries the amount: completed, one ledger row.
    let confirmed = gc_payment(
        "EV2",
        "confirmed",
        "PM1",
        "MD1",
        "500",
        "2024-05-03T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![confirmed])).await;
    h.wait_processed(&ids).await;
    assert_eq!(
        ledger(&h, "gocardless", "PM1").await,
        [("payment".into(), "PM1".into(), 500, "GBP".into())]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn a_paystack_refund_before_its_charge_ends_refunded_with_both_ledger_rows() {
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let refund = json!({"event": "refund.processed", "data": {"id": 77, "transaction_reference": "ps-1",
        "amount": 2000, "currency": "NGN", "status": "processed"}});
    let ids = h.deliver("paystack", &refund).await;
    h.wait_processed(&ids).await;
    let charge = json!({"event": "charge.success", "data": {"id": 9, "reference": "ps-1",
        "amount": 5000, "currency": "NGN", "status": "success"}});
    let ids = h.deliver("paystack", &charge).await;
    h.wait_processed(&ids).await;

    let p = payment(&h, "paystack", "ps-1").await;
    assert_eq!(
        (p.status.as_str(), p.amount_minor, p.currency.as_deref()),
        ("refunded", Some(5000), Some("NGN"))
    );
    assert_eq!(
        ledger(&h, "paystack", "ps-1").await,
        [
            ("refund".into(), "77".into(), -2000, "NGN".into()),
            ("payment".into(), "ps-1".into(), 5000, "NGN".into()),
        ]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn a_gocardless_chargeback_before_its_confirmation_writes_both_rows_once() {
    let mut h = Harness::without_api_tokens().await;
    h.spawn_worker().await;
    let at = "2024-05-09T10:00:00Z";
    let back = gc_payment("EV2", "charged_back", "PM1", "MD1", "1200", at);
    let ids = h.deliver("gocardless", &gc_body(vec![back])).await;
    h.wait_processed(&ids).await;
    let confirmed = gc_payment(
        "EV1",
        "confirmed",
        "PM1",
        "MD1",
        "1200",
        "2024-05-03T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![confirmed])).await;
    h.wait_processed(&ids).await;

    assert_eq!(
        payment(&h, "gocardless", "PM1").await.status,
        "charged_back"
    );
    assert_eq!(
        ledger(&h, "gocardless", "PM1").await,
        [
            ("payment".into(), "PM1".into(), 1200, "GBP".into()),
            ("chargeback".into(), "PM1".into(), -1200, "GBP".into()),
        ]
    );
    h.assert_queues_drained().await;
}

/// Many mandates, each followed by four payments, all published in a shuffled order before
/// two workers start: payments are often applied before, or at the same moment as, their
/// mandate, in other transactions. Every payment must end linked to its member.
#[tokio::test]
async fn payments_and_their_mandates_applied_at_once_by_two_workers_all_end_linked() {
    let mut h = Harness::without_api_tokens().await;
    let mandates = 60;
    let mut bodies = Vec::new();
    for m in 0..mandates {
        let md = format!("MD{m}");
        bodies.push(gc_body(vec![mandate_created(
            &format!("EVM{m}"),
            &md,
            member_meta(&format!("Member{m}")),
        )]));
        for k in 0..4 {
            bodies.push(gc_body(vec![gc_payment(
                &format!("EVP{m}-{k}"),
                "confirmed",
                &format!("PM{m}-{k}"),
                &md,
                "1000",
                "2024-05-02T10:00:00Z",
            )]));
        }
    }
    // A fixed interleaving (no rand dependency): stride through the bodies.
    let n = bodies.len();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.extend(h.deliver("gocardless", &bodies[(i * 7) % n]).await);
    }
    h.spawn_worker().await;
    h.spawn_worker().await;
    h.wait_processed(&ids).await;

    let unlinked: i64 = h
        .scalar(
            "SELECT count(*) FROM payments p LEFT JOIN transactions t ON t.payment_id = p.id
             WHERE p.member_id IS NULL OR t.member_id IS NULL
                OR p.member_id <> (SELECT id FROM members m WHERE m.mandate_id = p.mandate_id)",
        )
        .await;
    assert_eq!(
        unlinked, 0,
        "every payment and ledger row points at its member"
    );
    let ledger_rows: i64 = h.scalar("SELECT count(*) FROM transactions").await;
    assert_eq!(ledger_rows, mandates * 4);
    let members: i64 = h.scalar("SELECT count(*) FROM members").await;
    assert_eq!(members, mandates);
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payments_of_a_mandate_not_known_yet_never_wait_on_each_other_only_on_its_member_being_created(
) {
    use payhook_shared::domain::members::lock_mandates;
    let h = Harness::without_worker().await;
    let m = vec!["MD-LOCKS".to_owned()];
    let mut paying = h.pool.begin().await.unwrap();
    lock_mandates(&mut paying, &[], &m).await.unwrap();

    // A second batch paying into the same mandate goes ahead at once.
    let mut other = h.pool.begin().await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), lock_mandates(&mut other, &[], &m))
        .await
        .expect("a payment batch waited on another payment batch")
        .unwrap();
    other.rollback().await.unwrap();

    // Creating the member waits until the payments are committed, so it links them.
    let mut creating = h.pool.begin().await.unwrap();
    let waited = tokio::time::timeout(
        Duration::from_millis(500),
        lock_mandates(&mut creating, &m, &[]),
    )
    .await;
    assert!(
        waited.is_err(),
        "the member's creation did not wait for the payment batch"
    );
    drop(creating);
    paying.rollback().await.unwrap();
}
