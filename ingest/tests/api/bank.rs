//! The admin API's bank transactions (DESIGN.md, "Bank data"): the list by match status, one
//! with its payment, an operator's match by hand and every way it is refused, and the
//! registration of an expected payment matching a credit that waited for it.

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    /// A bank transaction row as the worker leaves it; returns its id.
    async fn seed_bank(&self, tx: &str, amount: i64, reference: &str, status: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO bank_transactions (connection_id, transaction_id, booked_on, amount_minor,
                                            currency, reference, counterparty, match_status)
             VALUES ('CN1', $1, '2026-12-01', $2, 'GBP', $3, 'Jo Payer', $4) RETURNING id",
        )
        .bind(tx)
        .bind(amount)
        .bind(reference)
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn seed_payment(&self, external_id: &str, amount: i64, status: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO payments (provider, external_id, reference, amount_minor, currency, status)
             VALUES ('bank', $1, $1, $2, 'GBP', $3) RETURNING id",
        )
        .bind(external_id)
        .bind(amount)
        .bind(status)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn match_by_hand(&self, id: i64, payment_id: Value) -> (u16, Value) {
        self.admin_post(
            &format!("bank-transactions/{id}/match"),
            Some(json!({ "payment_id": payment_id }).to_string()),
        )
        .await
    }

    async fn match_by_hand_path(&self, path: &str) -> (u16, Value) {
        self.admin_post(path, Some(json!({"payment_id": 1}).to_string()))
            .await
    }

    /// (ledger rows, outbox rows) written so far.
    async fn written(&self) -> (i64, i64) {
        (
            self.count("transactions").await,
            self.count("domain_outbox").await,
        )
    }
}

#[tokio::test]
async fn bank_transactions_are_listed_newest_first_and_filtered_by_match_status() {
    let app = spawn_app().await;
    let a = app.seed_bank("TX1", 100, "a", "unmatched").await;
    let b = app.seed_bank("TX2", -100, "b", "ignored").await;
    let c = app.seed_bank("TX3", 300, "c", "ambiguous").await;

    let (status, page) = app.admin_get("bank-transactions").await;
    assert_eq!(status, 200);
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![c, b, a]);
    assert_eq!(page["items"][0]["amount_minor"], 300);
    assert_eq!(page["items"][0]["booked_on"], "2026-12-01");

    let (_, page) = app.admin_get("bank-transactions?status=unmatched").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["transaction_id"], "TX1");

    let (status, err) = app.admin_get("bank-transactions?status=lost").await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("status"), "{err}");

    let (_, stats) = app.admin_get("stats").await;
    assert_eq!(stats["bank_waiting"], 2);
}

#[tokio::test]
async fn an_operator_matches_a_waiting_credit_and_the_payment_completes_with_one_ledger_row() {
    let app = spawn_app().await;
    let credit = app
        .seed_bank("TX1", 4200, "inv 1001 typo", "ambiguous")
        .await;
    let payment = app.seed_payment("INV-1001", 4200, "pending").await;

    let (status, row) = app.match_by_hand(credit, json!(payment)).await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["match_status"], "matched");
    assert_eq!(row["payment_id"], payment);
    assert_eq!(row["payment"]["status"], "completed");

    let ledger: (i64, String, i64) =
        sqlx::query_as("SELECT payment_id, external_ref, amount_minor FROM transactions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(ledger, (payment, "bank:TX1".into(), 4200));
    let matched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM domain_outbox WHERE event_type = 'bank_transaction.matched'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(matched, 1);

    // Found from the payment's side too.
    let (_, one) = app.admin_get(&format!("bank-transactions/{credit}")).await;
    assert_eq!(one["payment"]["id"], payment);
}

#[tokio::test]
async fn a_match_by_hand_is_refused_with_409_for_a_debit_a_matched_credit_a_payment_no_longer_expected_or_other_amounts(
) {
    let app = spawn_app().await;
    let debit = app.seed_bank("TX1", -4200, "INV-1", "ignored").await;
    let credit = app.seed_bank("TX2", 4200, "INV-1", "unmatched").await;
    let other = app.seed_bank("TX3", 4200, "INV-1", "unmatched").await;
    let pending = app.seed_payment("INV-1", 4200, "pending").await;
    let completed = app.seed_payment("INV-2", 4200, "completed").await;
    let dearer = app.seed_payment("INV-3", 5000, "pending").await;

    let cases = [
        (debit, pending, "debit"),
        (credit, completed, "only a pending or submitted payment"),
        (credit, dearer, "amounts and currencies must be equal"),
    ];
    for (id, payment, says) in cases {
        let (status, err) = app.match_by_hand(id, json!(payment)).await;
        assert_eq!(status, 409, "{id} → {payment}: {err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains(says), "{text}");
    }
    assert_eq!(app.written().await, (0, 0), "nothing written when refused");

    let (status, _) = app.match_by_hand(credit, json!(pending)).await;
    assert_eq!(status, 200);
    let (status, err) = app.match_by_hand(credit, json!(pending)).await;
    assert_eq!(status, 409);
    assert!(err["error"].as_str().unwrap().contains("already matched"));
    // The payment is taken: another credit cannot have it.
    let (status, err) = app.match_by_hand(other, json!(pending)).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(app.count("transactions").await, 1);
}

#[tokio::test]
async fn a_match_by_hand_of_something_unknown_is_404_and_a_bad_body_or_id_is_400() {
    let app = spawn_app().await;
    let credit = app.seed_bank("TX1", 4200, "INV-1", "unmatched").await;
    let payment = app.seed_payment("INV-1", 4200, "pending").await;

    let (status, err) = app.match_by_hand(credit + 100, json!(payment)).await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = app.match_by_hand(credit, json!(payment + 100)).await;
    assert_eq!(status, 404, "{err}");
    for body in [
        "not json",
        "{}",
        r#"{"payment_id": "x"}"#,
        r#"{"payment_id": 1, "extra": 2}"#,
    ] {
        let (status, err) = app
            .admin_post(
                &format!("bank-transactions/{credit}/match"),
                Some(body.to_owned()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {err}");
    }
    let (status, _) = app.match_by_hand_path("bank-transactions/abc/match").await;
    assert_eq!(status, 400);
    let (status, _) = app.admin_get("bank-transactions/abc").await;
    assert_eq!(status, 400);
    let (status, _) = app
        .admin_get(&format!("bank-transactions/{}", credit + 100))
        .await;
    assert_eq!(status, 404);
    assert_eq!(app.written().await, (0, 0));
    let still: String =
        sqlx::query_scalar("SELECT match_status FROM bank_transactions WHERE id = $1")
            .bind(credit)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(still, "unmatched");
}

#[tokio::test]
async fn registering_the_payment_a_credit_waits_for_answers_it_completed() {
    let app = spawn_app().await;
    let credit = app
        .seed_bank("TX1", 4200, "Payment INV 1001", "unmatched")
        .await;
    let body = json!({"provider": "bank", "external_id": "INV-1001", "reference": "inv1001",
                      "amount_minor": 4200, "currency": "GBP"});
    let (status, row) = app.admin_post("payments", Some(body.to_string())).await;
    assert_eq!(status, 201, "{row}");
    assert_eq!(row["provider"], "bank");
    assert_eq!(row["status"], "completed");
    let (_, one) = app.admin_get(&format!("bank-transactions/{credit}")).await;
    assert_eq!(one["match_status"], "matched");
    assert_eq!(one["payment_id"], row["id"]);
}
