//! Bank data (DESIGN.md, "Bank data"): GoCardless bank-account events → connections,
//! transactions, and the match of each credit to the expected payment it pays: matched, none,
//! ambiguous, debit, late registration, the reconciler's retry, two racers; enrichment
//! through a fake Bank Account Data API; out of order and resent events.

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::gocardless_payments::{ledger, payment};
use crate::support::*;

/// `transaction.created` carrying the transaction in `details`.
fn credit(ev: &str, tx: &str, amount: &str, currency: &str, remittance: &str) -> Value {
    gc_event(
        ev,
        "transaction",
        "created",
        json!({ "connection": "CN1", "account": "AC1", "transaction": tx }),
        json!({
            "transactionId": tx, "bookingDate": "2026-12-01",
            "transactionAmount": { "amount": amount, "currency": currency },
            "remittanceInformationUnstructured": remittance, "debtorName": "Jo Payer",
        }),
        json!({}),
        "2026-12-01T10:00:00Z",
    )
}

/// `transaction.created` carrying ids only: the worker must ask the Bank Account Data API.
fn bare_credit(ev: &str, tx: &str) -> Value {
    gc_event(
        ev,
        "transaction",
        "created",
        json!({ "connection": "CN1", "account": "AC1", "transaction": tx }),
        json!({}),
        json!({}),
        "2026-12-01T10:00:00Z",
    )
}

fn revoked(ev: &str, connection: &str, at: &str) -> Value {
    gc_event(
        ev,
        "connection",
        "revoked",
        json!({ "connection": connection }),
        json!({ "cause": "customer_revoked" }),
        json!({}),
        at,
    )
}

fn authorization(ev: &str, status: &str, expires: &str, at: &str) -> Value {
    gc_event(
        ev,
        "authorization",
        "updated",
        json!({ "connection": "CN1" }),
        json!({ "status": status, "expires_at": expires }),
        json!({}),
        at,
    )
}

/// Delivers one event body and waits until it is processed.
async fn deliver_one(h: &Harness, event: Value) -> i64 {
    let ids = h.deliver("gocardless", &gc_body(vec![event])).await;
    h.wait_processed(&ids).await;
    ids[0]
}

/// An expected payment of any provider, registered as `POST /admin/payments` does.
async fn expect(pool: &PgPool, provider: &str, reference: &str, amount: i64, currency: &str) {
    payhook_shared::lookup::register_pending_payment(
        pool,
        &payhook_shared::lookup::NewPendingPayment {
            provider: provider.into(),
            external_id: reference.into(),
            reference: reference.into(),
            amount_minor: amount,
            currency: currency.into(),
        },
    )
    .await
    .expect("payment registered");
}

/// (match_status, amount_minor, currency, payment's external_id) of bank transaction `tx`.
async fn bank_row(h: &Harness, tx: &str) -> (String, i64, String, Option<String>) {
    sqlx::query_as(
        "SELECT b.match_status, b.amount_minor, b.currency, p.external_id
         FROM bank_transactions b LEFT JOIN payments p ON p.id = b.payment_id
         WHERE b.transaction_id = $1",
    )
    .bind(tx)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

/// Delivers one event that must fail, waits until it is `status` (retrying, dead); its
/// `last_error`.
async fn ends(h: &Harness, event: Value, status: &str) -> String {
    let ids = h.deliver("gocardless", &gc_body(vec![event])).await;
    h.wait_status(&ids, status).await;
    sqlx::query_scalar("SELECT last_error FROM webhook_events WHERE id = $1")
        .bind(ids[0])
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

async fn count(h: &Harness, sql: &str) -> i64 {
    h.scalar(sql).await
}

// ---- matching outcomes ------------------------------------------------------------------

#[tokio::test]
async fn a_credit_naming_one_expected_payment_with_its_amount_completes_it_with_a_bank_ledger_row()
{
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;
    deliver_one(
        &h,
        credit("EV1", "TX1", "42.00", "GBP", "Invoice INV-1001 thanks"),
    )
    .await;

    assert_eq!(
        bank_row(&h, "TX1").await,
        (
            "matched".into(),
            4200,
            "GBP".into(),
            Some("INV-1001".into())
        )
    );
    assert_eq!(payment(&h, "bank", "INV-1001").await.status, "completed");
    assert_eq!(
        ledger(&h, "bank", "INV-1001").await,
        vec![("payment".into(), "bank:TX1".into(), 4200, "GBP".into())]
    );
    let outbox = h.outbox_types().await;
    for t in [
        "bank_transaction.recorded",
        "payment.completed",
        "transaction.recorded",
        "bank_transaction.matched",
    ] {
        assert!(outbox.contains(&t.to_owned()), "{t} in {outbox:?}");
    }
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn the_reference_is_found_in_the_remittance_text_whatever_its_case_and_spaces() {
    let h = Harness::start().await;
    expect(&h.pool, "paystack", "ref 77 ab", 500_000, "NGN").await;
    deliver_one(
        &h,
        credit("EV1", "TX1", "5000.00", "NGN", "PAYMENT REF77AB JUNE"),
    )
    .await;
    assert_eq!(bank_row(&h, "TX1").await.0, "matched");
    assert_eq!(
        payment(&h, "paystack", "ref 77 ab").await.status,
        "completed"
    );
}

#[tokio::test]
async fn a_credit_that_names_no_expected_payment_is_unmatched_and_completes_nothing() {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;
    // The right reference with another amount, another currency; the right amount without it.
    deliver_one(&h, credit("EV1", "TX1", "42.01", "GBP", "INV-1001")).await;
    deliver_one(&h, credit("EV2", "TX2", "42.00", "EUR", "INV-1001")).await;
    deliver_one(&h, credit("EV3", "TX3", "42.00", "GBP", "rent")).await;

    for tx in ["TX1", "TX2", "TX3"] {
        assert_eq!(bank_row(&h, tx).await.0, "unmatched", "{tx}");
    }
    assert_eq!(payment(&h, "bank", "INV-1001").await.status, "pending");
    assert_eq!(count(&h, "SELECT count(*) FROM transactions").await, 0);
}

#[tokio::test]
async fn a_credit_two_expected_payments_could_be_is_ambiguous_and_completes_neither() {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1", 1000, "GBP").await;
    expect(&h.pool, "payqi", "INV-12", 1000, "GBP").await;
    // "INV-12" contains both references.
    deliver_one(&h, credit("EV1", "TX1", "10.00", "GBP", "INV-12")).await;

    assert_eq!(bank_row(&h, "TX1").await.0, "ambiguous");
    assert_eq!(payment(&h, "bank", "INV-1").await.status, "pending");
    assert_eq!(payment(&h, "payqi", "INV-12").await.status, "pending");
    assert_eq!(count(&h, "SELECT count(*) FROM transactions").await, 0);
}

#[tokio::test]
async fn a_debit_is_stored_negative_and_ignored_even_when_it_names_a_payment() {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1001", 300, "GBP").await;
    deliver_one(&h, credit("EV1", "TX1", "-3.00", "GBP", "INV-1001")).await;

    assert_eq!(
        bank_row(&h, "TX1").await,
        ("ignored".into(), -300, "GBP".into(), None)
    );
    assert_eq!(payment(&h, "bank", "INV-1001").await.status, "pending");
}

#[tokio::test]
async fn an_amount_the_currency_cannot_hold_exactly_sends_the_event_dead_and_stores_nothing() {
    let h = Harness::start().await;
    let error = ends(&h, credit("EV1", "TX1", "12.505", "GBP", "x"), "dead").await;
    assert!(error.contains("amount"), "{error}");
    assert_eq!(count(&h, "SELECT count(*) FROM bank_transactions").await, 0);
}

#[tokio::test]
async fn a_payment_registered_after_its_credit_arrived_is_matched_at_registration() {
    let h = Harness::start().await;
    deliver_one(&h, credit("EV1", "TX1", "42.00", "GBP", "INV-1001")).await;
    assert_eq!(bank_row(&h, "TX1").await.0, "unmatched");

    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;
    assert_eq!(bank_row(&h, "TX1").await.0, "matched");
    assert_eq!(payment(&h, "bank", "INV-1001").await.status, "completed");
    assert_eq!(ledger(&h, "bank", "INV-1001").await.len(), 1);
}

#[tokio::test]
async fn the_reconciler_matches_a_waiting_credit_once_its_gateway_reports_the_payment() {
    let h = Harness::start().await;
    deliver_one(&h, credit("EV1", "TX1", "25.00", "GBP", "order ORD-9")).await;
    // The gateway's own event arrives after the bank transfer.
    let created = json!({"id": "pq_evt_1", "type": "payment.created", "created": 1_700_000_000,
        "data": {"id": "pq_1", "amount": "25.00", "currency": "GBP", "status": "created",
                 "metadata": {"order_id": "ORD-9"}}});
    let ids = h.deliver("payqi", &created).await;
    h.wait_processed(&ids).await;
    assert_eq!(bank_row(&h, "TX1").await.0, "unmatched");

    let summary = h.reconciler().pass().await;
    assert_eq!((summary.bank.tried, summary.bank.matched), (1, 1));
    assert_eq!(
        bank_row(&h, "TX1").await,
        ("matched".into(), 2500, "GBP".into(), Some("pq_1".into()))
    );
    assert_eq!(payment(&h, "payqi", "pq_1").await.status, "completed");
}

#[tokio::test]
async fn a_payment_completed_by_its_gateway_first_is_never_taken_by_a_credit() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    deliver_one(
        &h,
        gc_payment(
            "EV1",
            "confirmed",
            "PM1",
            "MD1",
            "2750",
            "2026-12-01T09:00:00Z",
        ),
    )
    .await;
    deliver_one(&h, credit("EV2", "TX1", "27.50", "GBP", "REF-PM1")).await;

    assert_eq!(bank_row(&h, "TX1").await.0, "unmatched");
    assert_eq!(
        ledger(&h, "gocardless", "PM1").await,
        vec![("payment".into(), "PM1".into(), 2750, "GBP".into())]
    );
}

#[tokio::test]
async fn a_payment_matched_by_a_credit_and_then_confirmed_by_its_gateway_has_one_completion_row() {
    let h = Harness::start().await;
    h.known_member("MD1").await;
    deliver_one(
        &h,
        gc_payment(
            "EV1",
            "created",
            "PM1",
            "MD1",
            "2750",
            "2026-12-01T09:00:00Z",
        ),
    )
    .await;
    deliver_one(&h, credit("EV2", "TX1", "27.50", "GBP", "REF-PM1")).await;
    assert_eq!(bank_row(&h, "TX1").await.0, "matched");
    deliver_one(
        &h,
        gc_payment(
            "EV3",
            "confirmed",
            "PM1",
            "MD1",
            "2750",
            "2026-12-02T09:00:00Z",
        ),
    )
    .await;

    assert_eq!(
        ledger(&h, "gocardless", "PM1").await,
        vec![("payment".into(), "bank:TX1".into(), 2750, "GBP".into())]
    );
}

#[tokio::test]
async fn two_credits_for_one_payment_racing_on_two_workers_and_the_reconciler_complete_it_once() {
    let mut h = Harness::start().await;
    h.spawn_worker().await;
    expect(&h.pool, "bank", "INV-7", 700, "GBP").await;
    // Ten transfers that each name the invoice (a payer who paid several times), delivered
    // separately so the two workers take them at once, while the reconciler retries too.
    let mut ids = Vec::new();
    for i in 0..10 {
        let ev = credit(&format!("EV{i}"), &format!("TX{i}"), "7.00", "GBP", "INV-7");
        ids.extend(h.store("gocardless", &gc_body(vec![ev])).await);
    }
    let reconciler = h.reconciler();
    let publish = async {
        for id in &ids {
            h.publish(*id).await;
        }
    };
    let retry = async {
        for _ in 0..5 {
            let _ = reconciler.pass().await;
        }
    };
    tokio::join!(publish, retry);
    h.wait_processed(&ids).await;
    let _ = reconciler.pass().await;

    assert_eq!(ledger(&h, "bank", "INV-7").await.len(), 1);
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM bank_transactions WHERE match_status = 'matched'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM bank_transactions WHERE match_status = 'unmatched'"
        )
        .await,
        9
    );
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM domain_outbox WHERE event_type = 'bank_transaction.matched'"
        )
        .await,
        1
    );
}

// ---- out of order, resent ---------------------------------------------------------------

#[tokio::test]
async fn the_same_transaction_in_two_events_is_one_row_matched_once() {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1", 100, "GBP").await;
    deliver_one(&h, credit("EV1", "TX1", "1.00", "GBP", "INV-1")).await;
    deliver_one(&h, credit("EV2", "TX1", "1.00", "GBP", "INV-1")).await;

    assert_eq!(count(&h, "SELECT count(*) FROM bank_transactions").await, 1);
    assert_eq!(ledger(&h, "bank", "INV-1").await.len(), 1);
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM domain_outbox WHERE event_type LIKE 'bank_transaction.%'"
        )
        .await,
        2,
        "recorded once, matched once"
    );
}

#[tokio::test]
async fn a_transaction_before_its_connection_is_known_creates_the_connection_active() {
    let h = Harness::start().await;
    deliver_one(&h, credit("EV1", "TX1", "1.00", "GBP", "x")).await;
    let status: String = h
        .scalar("SELECT status FROM bank_connections WHERE connection_id = 'CN1'")
        .await;
    assert_eq!(status, "active");
}

#[tokio::test]
async fn a_revoked_connection_stays_revoked_and_its_late_transaction_is_still_stored_and_matched() {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1", 100, "GBP").await;
    deliver_one(&h, revoked("EV1", "CN1", "2026-12-02T10:00:00Z")).await;
    deliver_one(
        &h,
        authorization(
            "EV2",
            "valid",
            "2027-03-01T00:00:00Z",
            "2026-12-03T10:00:00Z",
        ),
    )
    .await;
    deliver_one(&h, credit("EV3", "TX1", "1.00", "GBP", "INV-1")).await;

    let (status, changed): (String, String) = sqlx::query_as(
        "SELECT status, to_char(status_changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
         FROM bank_connections WHERE connection_id = 'CN1'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), changed.as_str()),
        ("revoked", "2026-12-02")
    );
    assert_eq!(bank_row(&h, "TX1").await.0, "matched");
}

#[tokio::test]
async fn an_authorization_update_sets_status_and_expiry_and_an_older_one_arriving_late_changes_nothing(
) {
    let h = Harness::start().await;
    deliver_one(
        &h,
        authorization(
            "EV2",
            "expiring",
            "2026-12-10T00:00:00Z",
            "2026-12-03T10:00:00Z",
        ),
    )
    .await;
    deliver_one(
        &h,
        authorization(
            "EV1",
            "valid",
            "2027-06-01T00:00:00Z",
            "2026-12-01T10:00:00Z",
        ),
    )
    .await;

    let row: (String, String, String) = sqlx::query_as(
        "SELECT status, authorization_status,
                to_char(authorization_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
         FROM bank_connections WHERE connection_id = 'CN1'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        ("active".into(), "expiring".into(), "2026-12-10".into())
    );
}

#[tokio::test]
async fn an_authorization_status_payhook_does_not_know_sends_the_event_dead_naming_the_field() {
    let h = Harness::start().await;
    let error = ends(
        &h,
        authorization(
            "EV1",
            "suspended",
            "2027-01-01T00:00:00Z",
            "2026-12-01T10:00:00Z",
        ),
        "dead",
    )
    .await;
    assert!(error.contains("details.status"), "{error}");
    assert_eq!(count(&h, "SELECT count(*) FROM bank_connections").await, 0);
}

// ---- enrichment through the Bank Account Data API ----------------------------------------

/// The fake Bank Account Data API: a token, and account AC1's transactions.
fn bank_api(h: &Harness, booked: Value, pending: Value) {
    h.gateway.route(
        "POST",
        "/api/v2/token/new/",
        200,
        json!({"access": "bank-access-token", "access_expires": 86400,
               "refresh": "r", "refresh_expires": 2_592_000}),
    );
    h.gateway.route(
        "GET",
        "/api/v2/accounts/AC1/transactions/",
        200,
        json!({"transactions": {"booked": booked, "pending": pending}}),
    );
}

fn api_transaction(tx: &str, amount: &str, remittance: &str) -> Value {
    json!({"transactionId": tx, "bookingDate": "2026-12-01",
           "transactionAmount": {"amount": amount, "currency": "GBP"},
           "remittanceInformationUnstructured": remittance, "debtorName": "Jo Payer"})
}

#[tokio::test]
async fn a_transaction_carrying_only_ids_is_fetched_from_the_bank_api_and_matched() {
    let mut h = Harness::with_bank_secrets().await;
    h.spawn_worker().await;
    bank_api(
        &h,
        json!([
            api_transaction("TX0", "1.00", "other"),
            api_transaction("TX1", "42.00", "INV-1001")
        ]),
        json!([]),
    );
    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;
    deliver_one(&h, bare_credit("EV1", "TX1")).await;

    assert_eq!(
        bank_row(&h, "TX1").await,
        (
            "matched".into(),
            4200,
            "GBP".into(),
            Some("INV-1001".into())
        )
    );
    let calls = h.gateway.calls();
    let data = calls
        .iter()
        .find(|c| c.path == "/api/v2/accounts/AC1/transactions/")
        .expect("the transactions were fetched");
    assert_eq!(
        data.authorization.as_deref(),
        Some("Bearer bank-access-token")
    );
}

#[tokio::test]
async fn a_transaction_not_booked_yet_is_retried_not_stored() {
    let mut h = Harness::with_bank_secrets().await;
    h.spawn_worker().await;
    bank_api(
        &h,
        json!([]),
        json!([api_transaction("TX1", "42.00", "INV-1001")]),
    );
    let error = ends(&h, bare_credit("EV1", "TX1"), "retrying").await;
    assert!(error.contains("not booked"), "{error}");
    assert_eq!(count(&h, "SELECT count(*) FROM bank_transactions").await, 0);
}

#[tokio::test]
async fn a_bank_api_that_answers_5xx_makes_the_event_retry() {
    let mut h = Harness::with_bank_secrets().await;
    h.spawn_worker().await;
    bank_api(&h, json!([]), json!([]));
    h.gateway.route(
        "GET",
        "/api/v2/accounts/AC1/transactions/",
        503,
        json!({"detail": "down"}),
    );
    let error = ends(&h, bare_credit("EV1", "TX1"), "retrying").await;
    assert!(error.contains("503"), "{error}");
}

#[tokio::test]
async fn a_transaction_carrying_only_ids_without_bank_secrets_retries_naming_the_variables() {
    let h = Harness::start().await;
    let error = ends(&h, bare_credit("EV1", "TX1"), "retrying").await;
    assert!(error.contains("GOCARDLESS_BANK_SECRET_ID"), "{error}");
    assert!(
        h.gateway.calls().is_empty(),
        "no call without secrets: {:?}",
        h.gateway.call_lines()
    );
}

// ---- end to end: a signed delivery through ingest, then the worker --------------------------

#[tokio::test]
async fn a_signed_bank_delivery_through_ingest_is_stored_once_and_matched_by_the_worker() {
    use payhook_ingest::Application;
    use payhook_shared::config::ProviderSecrets;
    use payhook_shared::providers::signature::{sign_hex, Digest};
    use payhook_shared::providers::Secrets;
    use payhook_shared::shutdown::CancellationToken;

    let h = Harness::start().await;
    let config = ingest_config(
        &h.env,
        ProviderSecrets {
            gocardless: Some(Secrets::new(["bank-webhook-secret"])),
            paystack: None,
            flutterwave: None,
            payqi: None,
            payqi_tolerance_secs: 300,
        },
    );
    let app = Application::build(config).await.expect("ingest builds");
    let url = format!(
        "http://127.0.0.1:{}/webhooks/gocardless",
        app.webhook_addr().port()
    );
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone()));
    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;

    let body = gc_body(vec![
        authorization(
            "EV0",
            "valid",
            "2027-03-01T00:00:00Z",
            "2026-12-01T09:00:00Z",
        ),
        credit("EV1", "TX1", "42.00", "GBP", "INV-1001"),
    ])
    .to_string();
    let post = |signature: String| {
        reqwest::Client::new()
            .post(&url)
            .header("Webhook-Signature", signature)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
    };
    let forged = post(sign_hex(Digest::Sha256, b"not-the-secret", body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 498);
    let good = sign_hex(Digest::Sha256, b"bank-webhook-secret", body.as_bytes());
    for _ in 0..2 {
        // The gateway's retry of the same body changes nothing.
        assert_eq!(post(good.clone()).await.unwrap().status().as_u16(), 204);
    }

    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM webhook_events ORDER BY id")
        .fetch_all(&h.pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    h.wait_processed(&ids).await;
    assert_eq!(
        bank_row(&h, "TX1").await,
        (
            "matched".into(),
            4200,
            "GBP".into(),
            Some("INV-1001".into())
        )
    );
    assert_eq!(ledger(&h, "bank", "INV-1001").await.len(), 1);
    let auth: String = h
        .scalar("SELECT authorization_status FROM bank_connections WHERE connection_id = 'CN1'")
        .await;
    assert_eq!(auth, "valid");
    h.assert_queues_drained().await;
    stop.cancel();
}

/// `payhook-worker show QUERY` against the test's database: (success, stdout).
async fn show(h: &Harness, query: &str) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .args(["show", query])
        .env("DATABASE_URL", &h.env.database.database_url)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn show_of_a_payment_names_the_credit_that_completed_it_and_show_of_the_credit_names_the_payment(
) {
    let h = Harness::start().await;
    expect(&h.pool, "bank", "INV-1001", 4200, "GBP").await;
    deliver_one(&h, credit("EV1", "TX1", "42.00", "GBP", "INV-1001")).await;
    deliver_one(&h, credit("EV2", "TX2", "9.99", "GBP", "rent")).await;

    let (ok, out) = show(&h, "INV-1001").await;
    assert!(ok, "{out}");
    assert!(out.contains("status completed"), "{out}");
    assert!(out.contains("paid by bank credit TX1"), "{out}");

    let (ok, out) = show(&h, "TX1").await;
    assert!(ok, "{out}");
    assert!(out.contains("bank transaction"), "{out}");
    assert!(out.contains("42.00 GBP  matched"), "{out}");
    assert!(out.contains("payment 1  bank INV-1001"), "{out}");

    let (ok, out) = show(&h, "TX2").await;
    assert!(ok, "{out}");
    assert!(out.contains("9.99 GBP  unmatched"), "{out}");
    assert!(out.contains("waiting: register the payment"), "{out}");
}

#[tokio::test]
async fn the_worker_counts_active_connections_by_authorization_state_for_the_alert() {
    let mut h = Harness::start().await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::days(60)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let at = "2026-12-01T10:00:00Z";
    let mut events = Vec::new();
    // CN1 expires in 3 days (the bank still says valid); CN2 in 60; CN3 has run out; CN4 is
    // expired but its connection was revoked: not a feed anyone waits for.
    for (i, (cn, expires)) in [
        ("CN1", &soon),
        ("CN2", &later),
        ("CN3", &past),
        ("CN4", &past),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = authorization(&format!("EV{i}"), "valid", expires, at);
        e["links"]["connection"] = json!(cn);
        events.push(e);
    }
    events.push(revoked("EV9", "CN4", at));
    let ids = h.deliver("gocardless", &gc_body(events)).await;
    h.wait_processed(&ids).await;
    h.stop_workers().await;

    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .env("DATABASE_URL", &h.env.database.database_url)
        .env("AMQP_URL", &h.env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix)
        .env("WORKER_OPS_ADDR", format!("127.0.0.1:{port}"))
        .env("RECONCILE_INTERVAL", "200ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let counts = eventually("the gauge counts the connections", || async {
        let text = scrape(([127, 0, 0, 1], port).into()).await?;
        let get = |s: &str| {
            metric_value(
                &text,
                &format!("payhook_bank_authorizations{{status=\"{s}\"}}"),
            )
        };
        let c = (
            get("valid")?,
            get("expiring")?,
            get("expired")?,
            get("revoked")?,
        );
        (c != (0.0, 0.0, 0.0, 0.0)).then_some(c)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(counts, (1.0, 1.0, 1.0, 0.0));
}
