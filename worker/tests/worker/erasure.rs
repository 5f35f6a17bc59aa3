//! A member's right to be forgotten (DESIGN.md, "Data lifecycle"): `payhook-worker forget`
//! clears the personal data wherever payhook stored it, keeps the money, says what it erased,
//! is idempotent, and a later event brings personal data back only if it carries it anew.

use serde_json::json;

use crate::support::*;

async fn forget_cli(h: &Harness, target: &str) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .args(["forget", target])
        .env("DATABASE_URL", &h.env.database.database_url)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mandate_created(ev: &str, mandate: &str, name: &str, email: &str) -> serde_json::Value {
    gc_event(
        ev,
        "mandates",
        "created",
        json!({ "mandate": mandate }),
        json!({}),
        json!({ "name": name, "email": email, "address_line1": "1 Analytical Street",
                "city": "London", "postcode": "N1 1AA" }),
        "2024-05-01T10:00:00.000Z",
    )
}

/// Ada (MD1) and Grace (MD2), in one delivery, and a confirmed payment of Ada's.
async fn two_members(h: &Harness) {
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![
                mandate_created("EV1", "MD1", "Ada Lovelace", "ada@example.org"),
                mandate_created("EV2", "MD2", "Grace Hopper", "grace@example.org"),
            ]),
        )
        .await;
    h.wait_processed(&ids).await;
    let pay = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_payment(
                "EV3",
                "confirmed",
                "PM1",
                "MD1",
                "2750",
                "2024-05-02T10:00:00.000Z",
            )]),
        )
        .await;
    h.wait_processed(&pay).await;
}

/// How many stored rows of `table` still mention `text` anywhere.
async fn mentions(h: &Harness, table: &str, text: &str) -> i64 {
    h.scalar(&format!(
        "SELECT count(*) FROM {table} t WHERE t::text LIKE '%{text}%'"
    ))
    .await
}

#[tokio::test]
async fn forget_clears_a_members_personal_data_everywhere_and_keeps_the_money() {
    let h = Harness::start().await;
    two_members(&h).await;
    let (ok, stdout, stderr) = forget_cli(&h, "MD1").await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("(MD1): name, email and address cleared; personal fields of"),
        "{stdout}"
    );
    // The mandates' delivery (shared with Grace) and the payment's.
    assert!(stdout.contains("2 raw delivery(ies) deleted"), "{stdout}");

    let (name, email, address, city, erased): (Option<String>, Option<String>, Option<String>, Option<String>, bool) =
        sqlx::query_as(
            "SELECT name, email, address_line1, city, erased_at IS NOT NULL FROM members WHERE mandate_id = 'MD1'",
        )
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        (name, email, address, city, erased),
        (None, None, None, None, true)
    );
    for table in [
        "webhook_events",
        "webhook_deliveries",
        "domain_outbox",
        "members",
    ] {
        assert_eq!(mentions(&h, table, "Ada").await, 0, "{table}");
        assert_eq!(mentions(&h, table, "ada@example.org").await, 0, "{table}");
    }
    // The money and the other member stay.
    let (status, amount, ledger): (String, i64, i64) = sqlx::query_as(
        "SELECT p.status, p.amount_minor, (SELECT sum(amount_minor)::bigint FROM transactions)
         FROM payments p WHERE external_id = 'PM1'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), amount, ledger), ("completed", 2750, 2750));
    assert_eq!(mentions(&h, "members", "Grace Hopper").await, 1);
    assert_eq!(
        mentions(&h, "webhook_events", "grace@example.org").await,
        1,
        "Grace's event keeps its payload though the delivery it shared with Ada's is gone"
    );
    assert!(h.outbox_types().await.contains(&"member.erased".to_owned()));
}

#[tokio::test]
async fn forget_twice_says_nothing_is_left_and_writes_no_second_domain_event() {
    let h = Harness::start().await;
    two_members(&h).await;
    assert!(forget_cli(&h, "ada@example.org").await.0, "by email");
    let (ok, stdout, _) = forget_cli(&h, "MD1").await;
    assert!(ok);
    assert!(stdout.contains("(MD1): nothing left to erase"), "{stdout}");
    let erased = h
        .outbox_types()
        .await
        .iter()
        .filter(|t| *t == "member.erased")
        .count();
    assert_eq!(erased, 1);
}

#[tokio::test]
async fn forget_of_nobody_says_so_and_exits_1() {
    let h = Harness::without_worker().await;
    let (ok, _, stderr) = forget_cli(&h, "MD404").await;
    assert!(!ok);
    assert!(
        stderr.contains("no member has that mandate id or email"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_later_mandate_event_brings_personal_data_back_only_if_it_carries_it() {
    let h = Harness::start().await;
    h.gateway.gocardless_mandate("MD1", "CU1", "individual");
    h.gateway.gocardless_customer(
        "CU1",
        json!({"given_name": "Ada", "family_name": "Lovelace", "email": "ada@example.org"}),
    );
    two_members(&h).await;
    assert!(forget_cli(&h, "MD1").await.0);

    // Ids only (as GoCardless sends them): the API knows Ada, but is not asked.
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![gc_event(
                "EV9",
                "mandates",
                "created",
                json!({ "mandate": "MD1" }),
                json!({}),
                json!({}),
                "2024-06-01T10:00:00.000Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    assert_eq!(mentions(&h, "members", "Ada").await, 0);
    assert!(
        !h.gateway
            .call_lines()
            .iter()
            .any(|c| c.contains("/mandates/MD1")),
        "{:?}",
        h.gateway.call_lines()
    );

    // Carried anew by the event itself: recorded.
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![mandate_created(
                "EV10",
                "MD1",
                "A. Lovelace",
                "al@example.org",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    assert_eq!(mentions(&h, "members", "al@example.org").await, 1);
}
