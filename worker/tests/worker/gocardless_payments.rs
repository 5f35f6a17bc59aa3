//! GoCardless payment events → payments and the ledger.

use serde_json::json;

use crate::support::*;

#[derive(Debug, PartialEq, sqlx::FromRow)]
pub struct PaymentRow {
    pub status: String,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub reference: Option<String>,
    pub mandate_id: Option<String>,
    pub member_id: Option<i64>,
    pub failure_reason: Option<String>,
}

pub async fn payment(h: &Harness, provider: &str, external_id: &str) -> PaymentRow {
    sqlx::query_as(
        "SELECT status, amount_minor, currency, reference, mandate_id, member_id, failure_reason
         FROM payments WHERE provider = $1 AND external_id = $2",
    )
    .bind(provider)
    .bind(external_id)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

/// (kind, external_ref, amount_minor, currency) of the payment's ledger rows.
pub async fn ledger(
    h: &Harness,
    provider: &str,
    external_id: &str,
) -> Vec<(String, String, i64, String)> {
    sqlx::query_as(
        "SELECT t.kind, t.external_ref, t.amount_minor, t.currency FROM transactions t
         JOIN payments p ON p.id = t.payment_id
         WHERE p.provider = $1 AND p.external_id = $2 ORDER BY t.id",
    )
    .bind(provider)
    .bind(external_id)
    .fetch_all(&h.pool)
    .await
    .unwrap()
}

/// A member for `mandate`, from a complete `mandates.created`.
async fn member(h: &Harness, mandate: &str) -> i64 {
    let ev = gc_event(
        &format!("EV-{mandate}"),
        "mandates",
        "created",
        json!({"mandate": mandate}),
        json!({}),
        json!({"name": "N", "email": "n@example.com"}),
        "2024-04-01T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![ev])).await;
    h.wait_processed(&ids).await;
    sqlx::query_scalar("SELECT id FROM members WHERE mandate_id = $1")
        .bind(mandate)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn payment_created_then_submitted_is_pending_then_submitted_and_linked_to_the_member() {
    let h = Harness::start().await;
    let member_id = member(&h, "MD1").await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV1",
                "created",
                "PM1",
                "MD1",
                "2750",
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    let p = payment(&h, "gocardless", "PM1").await;
    assert_eq!(p.status, "pending");
    assert_eq!(
        (p.amount_minor, p.currency.as_deref()),
        (Some(2750), Some("GBP"))
    );
    assert_eq!(p.reference.as_deref(), Some("REF-PM1"));
    assert_eq!(p.member_id, Some(member_id));

    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV2",
                "submitted",
                "PM1",
                "MD1",
                "2750",
                "2024-05-02T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    assert_eq!(payment(&h, "gocardless", "PM1").await.status, "submitted");
    assert!(
        ledger(&h, "gocardless", "PM1").await.is_empty(),
        "no money yet"
    );
    assert_eq!(
        h.outbox_types().await,
        ["member.created", "payment.pending", "payment.submitted"]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payment_confirmed_completes_it_with_one_ledger_row() {
    let h = Harness::start().await;
    let member_id = member(&h, "MD1").await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV3",
                "confirmed",
                "PM3",
                "MD1",
                "2750",
                "2024-05-03T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;

    assert_eq!(payment(&h, "gocardless", "PM3").await.status, "completed");
    assert_eq!(
        ledger(&h, "gocardless", "PM3").await,
        [("payment".into(), "PM3".into(), 2750, "GBP".into())]
    );
    let ledger_member: Option<i64> = h.scalar("SELECT member_id FROM transactions").await;
    assert_eq!(ledger_member, Some(member_id));
    assert_eq!(
        h.outbox_types().await,
        [
            "member.created",
            "payment.completed",
            "transaction.recorded"
        ]
    );
    assert!(h.gateway.calls().is_empty());
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payment_confirmed_for_an_unknown_mandate_fetches_the_payment_and_creates_the_member_first()
{
    let h = Harness::start().await;
    h.gateway.gocardless_payment("PM4", "MD4", 1500);
    h.gateway.gocardless_mandate("MD4", "CU4", "lifetime");
    h.gateway.gocardless_customer(
        "CU4",
        json!({"given_name": "Alan", "family_name": "Turing", "email": "alan@example.com"}),
    );
    // As GoCardless really sends it: ids only.
    let ev = gc_event(
        "EV4",
        "payments",
        "confirmed",
        json!({"payment": "PM4"}),
        json!({"origin": "gocardless", "cause": "payment_confirmed"}),
        json!({}),
        "2024-05-04T10:00:00Z",
    );
    let ids = h.deliver("gocardless", &gc_body(vec![ev])).await;
    h.wait_processed(&ids).await;

    assert_eq!(
        h.gateway.call_lines(),
        [
            "GET /payments/PM4",
            "GET /mandates/MD4",
            "GET /customers/CU4"
        ]
    );
    let (member_id, name, kind): (i64, String, String) =
        sqlx::query_as("SELECT id, name, membership_type FROM members WHERE mandate_id = 'MD4'")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), kind.as_str()), ("Alan Turing", "lifetime"));
    let p = payment(&h, "gocardless", "PM4").await;
    assert_eq!(
        p,
        PaymentRow {
            status: "completed".into(),
            amount_minor: Some(1500),
            currency: Some("GBP".into()),
            reference: Some("API-PM4".into()),
            mandate_id: Some("MD4".into()),
            member_id: Some(member_id),
            failure_reason: None,
        }
    );
    assert_eq!(
        ledger(&h, "gocardless", "PM4").await,
        [("payment".into(), "PM4".into(), 1500, "GBP".into())]
    );
    assert_eq!(
        h.outbox_types().await,
        [
            "member.created",
            "payment.completed",
            "transaction.recorded"
        ]
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payment_paid_out_failed_and_cancelled_set_the_status_and_the_reason() {
    let h = Harness::start().await;
    member(&h, "MD1").await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![
                gc_payment(
                    "EV51",
                    "confirmed",
                    "PM51",
                    "MD1",
                    "1000",
                    "2024-05-01T10:00:00Z",
                ),
                gc_payment(
                    "EV52",
                    "submitted",
                    "PM52",
                    "MD1",
                    "1000",
                    "2024-05-01T10:00:00Z",
                ),
                gc_payment(
                    "EV53",
                    "created",
                    "PM53",
                    "MD1",
                    "1000",
                    "2024-05-01T10:00:00Z",
                ),
            ]),
        )
        .await;
    h.wait_processed(&ids).await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![
                gc_payment(
                    "EV54",
                    "paid_out",
                    "PM51",
                    "MD1",
                    "1000",
                    "2024-05-05T10:00:00Z",
                ),
                gc_payment(
                    "EV55",
                    "failed",
                    "PM52",
                    "MD1",
                    "1000",
                    "2024-05-05T10:00:00Z",
                ),
                gc_payment(
                    "EV56",
                    "cancelled",
                    "PM53",
                    "MD1",
                    "1000",
                    "2024-05-05T10:00:00Z",
                ),
            ]),
        )
        .await;
    h.wait_processed(&ids).await;

    assert_eq!(payment(&h, "gocardless", "PM51").await.status, "paid_out");
    let failed = payment(&h, "gocardless", "PM52").await;
    assert_eq!(
        (failed.status.as_str(), failed.failure_reason.as_deref()),
        ("failed", Some("payment_failed"))
    );
    let cancelled = payment(&h, "gocardless", "PM53").await;
    assert_eq!(
        (
            cancelled.status.as_str(),
            cancelled.failure_reason.as_deref()
        ),
        ("cancelled", Some("payment_cancelled"))
    );
    assert_eq!(
        ledger(&h, "gocardless", "PM51").await.len(),
        1,
        "paid out: still the one payment row"
    );
    assert!(ledger(&h, "gocardless", "PM52").await.is_empty());
    assert!(ledger(&h, "gocardless", "PM53").await.is_empty());
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn payment_charged_back_adds_a_negative_ledger_row() {
    let h = Harness::start().await;
    member(&h, "MD1").await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV61",
                "confirmed",
                "PM61",
                "MD1",
                "2750",
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV62",
                "charged_back",
                "PM61",
                "MD1",
                "2750",
                "2024-05-20T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;

    assert_eq!(
        payment(&h, "gocardless", "PM61").await.status,
        "charged_back"
    );
    assert_eq!(
        ledger(&h, "gocardless", "PM61").await,
        [
            ("payment".into(), "PM61".into(), 2750, "GBP".into()),
            ("chargeback".into(), "PM61".into(), -2750, "GBP".into())
        ]
    );
    let balance: i64 = h
        .scalar("SELECT sum(amount_minor)::bigint FROM transactions")
        .await;
    assert_eq!(balance, 0);
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn failed_payment_for_insufficient_funds_is_retried_once_when_enabled() {
    let mut h = Harness::without_worker().await;
    h.retry_failed_payments = true;
    h.spawn_worker().await;
    h.gateway.route(
        "POST",
        "/payments/PM71/actions/retry",
        200,
        json!({"payments": {"id": "PM71", "status": "pending_submission"}}),
    );
    let failed = |ev: &str, at: &str| {
        gc_event(
            ev,
            "payments",
            "failed",
            json!({"payment": "PM71", "mandate": "MD1"}),
            json!({"origin": "bank", "cause": "insufficient_funds"}),
            json!({"amount": "500", "currency": "GBP"}),
            at,
        )
    };
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![failed("EV71", "2024-05-01T10:00:00Z")]),
        )
        .await;
    h.wait_processed(&ids).await;
    // The retry fails again: no second retry.
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![failed("EV72", "2024-05-08T10:00:00Z")]),
        )
        .await;
    h.wait_processed(&ids).await;

    assert_eq!(
        h.gateway.call_lines(),
        ["POST /payments/PM71/actions/retry"]
    );
    let p = payment(&h, "gocardless", "PM71").await;
    assert_eq!(
        (p.status.as_str(), p.failure_reason.as_deref()),
        ("failed", Some("insufficient_funds"))
    );
    h.assert_queues_drained().await;
}
