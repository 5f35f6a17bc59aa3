//! Retention (DESIGN.md, "Data lifecycle"): `payhook-worker prune` and the reconciler's pass
//! delete old raw deliveries, processed / ignored events and published domain events, and
//! nothing else; an event that comes back after its row was pruned changes nothing.

use serde_json::json;

use crate::support::*;

/// `payhook-worker prune` with `args`, run as the binary against the harness's database.
async fn prune_cli(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"));
    cmd.arg("prune").args(args);
    cmd.env("DATABASE_URL", &h.env.database.database_url);
    for var in ["RETAIN_DELIVERIES", "RETAIN_EVENTS"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One stored GoCardless event (and its delivery) in `status`, received `days` ago.
async fn event_aged(h: &Harness, id: &str, status: &str, days: i32) -> i64 {
    let ids = h
        .store(
            "gocardless",
            &gc_body(vec![gc_event(
                id,
                "payments",
                "created",
                json!({"payment": format!("PM{id}")}),
                json!({}),
                json!({}),
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    sqlx::query(
        "WITH e AS (UPDATE webhook_events SET status = $2, received_at = now() - make_interval(days => $3)
                    WHERE id = $1 RETURNING delivery_id)
         UPDATE webhook_deliveries SET received_at = now() - make_interval(days => $3)
         WHERE id = (SELECT delivery_id FROM e)",
    )
    .bind(ids[0])
    .bind(status)
    .bind(days)
    .execute(&h.pool)
    .await
    .unwrap();
    ids[0]
}

/// A domain outbox row created `days` ago, published or not.
async fn outbox_aged(h: &Harness, published: bool, days: i32) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO domain_outbox (event_type, payload, created_at, published_at)
         VALUES ('payment.completed', '{}', now() - make_interval(days => $1),
                 CASE WHEN $2 THEN now() - make_interval(days => $1) END)
         RETURNING id",
    )
    .bind(days)
    .bind(published)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

async fn ids_of(h: &Harness, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT id FROM {table} ORDER BY id"))
        .fetch_all(&h.pool)
        .await
        .unwrap()
}

async fn delivery_of(h: &Harness, event: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT delivery_id FROM webhook_events WHERE id = $1")
        .bind(event)
        .fetch_one(&h.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn prune_deletes_old_deliveries_and_finished_events_and_keeps_every_other_row() {
    let h = Harness::without_worker().await;
    let processed = event_aged(&h, "EV1", "processed", 100).await;
    let ignored = event_aged(&h, "EV2", "ignored", 100).await;
    let mut kept = Vec::new();
    for (id, status) in [
        ("EV3", "dead"),
        ("EV4", "retrying"),
        ("EV5", "received"),
        ("EV6", "published"),
    ] {
        kept.push(event_aged(&h, id, status, 100).await);
    }
    // Processed, but younger than RETAIN_EVENTS; its delivery older than RETAIN_DELIVERIES.
    let young = event_aged(&h, "EV7", "processed", 40).await;
    let fresh = event_aged(&h, "EV8", "processed", 1).await;
    let fresh_delivery = delivery_of(&h, fresh).await;
    let old_published = outbox_aged(&h, true, 100).await;
    let old_unpublished = outbox_aged(&h, false, 100).await;
    let young_published = outbox_aged(&h, true, 10).await;
    let member = h.known_member("MD1").await;
    // Bank data a hundred days old: never pruned.
    sqlx::query(
        "WITH c AS (INSERT INTO bank_connections (connection_id, created_at, updated_at)
                    VALUES ('CN1', now() - interval '100 days', now() - interval '100 days'))
         INSERT INTO bank_transactions (connection_id, transaction_id, booked_on, amount_minor,
                                        currency, match_status, created_at)
         VALUES ('CN1', 'TX1', current_date - 100, 500, 'GBP', 'unmatched', now() - interval '100 days')",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    let (members, payments, ledger) = (
        ids_of(&h, "members").await,
        ids_of(&h, "payments").await,
        ids_of(&h, "transactions").await,
    );
    let bank = (
        ids_of(&h, "bank_connections").await,
        ids_of(&h, "bank_transactions").await,
    );

    let (ok, stdout, stderr) = prune_cli(&h, &[], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "prune: removed webhook_deliveries 7, webhook_events 2, domain_outbox 1"
    );
    let mut events = kept.clone();
    events.extend([young, fresh]);
    assert_eq!(ids_of(&h, "webhook_events").await, events);
    assert!(!events.contains(&processed) && !events.contains(&ignored));
    assert_eq!(
        ids_of(&h, "webhook_deliveries").await,
        vec![fresh_delivery.unwrap()]
    );
    for e in kept.iter().chain([&young]) {
        assert_eq!(delivery_of(&h, *e).await, None, "outlives its delivery");
    }
    assert_eq!(
        ids_of(&h, "domain_outbox").await,
        vec![old_unpublished, young_published]
    );
    assert!(!ids_of(&h, "domain_outbox").await.contains(&old_published));
    assert_eq!(ids_of(&h, "members").await, members);
    assert!(members.contains(&member));
    assert_eq!(ids_of(&h, "payments").await, payments);
    assert_eq!(ids_of(&h, "transactions").await, ledger);
    assert_eq!(
        (
            ids_of(&h, "bank_connections").await,
            ids_of(&h, "bank_transactions").await
        ),
        bank
    );
    assert_eq!(bank.1.len(), 1);
}

#[tokio::test]
async fn prune_dry_run_counts_and_removes_nothing() {
    let h = Harness::without_worker().await;
    event_aged(&h, "EV1", "processed", 100).await;
    event_aged(&h, "EV2", "dead", 100).await;
    let (ok, stdout, _) = prune_cli(&h, &["--dry-run"], &[]).await;
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        "prune: would remove webhook_deliveries 2, webhook_events 1, domain_outbox 0"
    );
    assert_eq!(ids_of(&h, "webhook_events").await.len(), 2);
    assert_eq!(ids_of(&h, "webhook_deliveries").await.len(), 2);
}

#[tokio::test]
async fn retention_0_keeps_for_ever_and_small_batches_walk_the_whole_table() {
    let h = Harness::without_worker().await;
    for i in 0..25 {
        event_aged(&h, &format!("EV{i}"), "processed", 100).await;
    }
    let (ok, stdout, _) = prune_cli(
        &h,
        &["--prune-batch", "4", "--prune-pause", "0s"],
        &[("RETAIN_DELIVERIES", "0")],
    )
    .await;
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        "prune: removed webhook_deliveries 0, webhook_events 25, domain_outbox 0"
    );
    assert_eq!(ids_of(&h, "webhook_deliveries").await.len(), 25);
    let (_, stdout, _) = prune_cli(
        &h,
        &[],
        &[("RETAIN_EVENTS", "0"), ("RETAIN_DELIVERIES", "0")],
    )
    .await;
    assert_eq!(
        stdout.trim(),
        "prune: removed webhook_deliveries 0, webhook_events 0, domain_outbox 0"
    );
}

/// PM1's status and amount, the ledger rows and the domain events: what a resend must not
/// change.
async fn money_rows(h: &Harness) -> (String, i64, i64, i64) {
    sqlx::query_as(
        "SELECT p.status, p.amount_minor, (SELECT count(*) FROM transactions),
                (SELECT count(*) FROM domain_outbox)
         FROM payments p WHERE external_id = 'PM1'",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_payment_event_delivered_again_after_it_was_pruned_changes_nothing() {
    let mut h = Harness::start().await;
    h.known_member("MD1").await;
    let body = gc_body(vec![gc_payment(
        "EV1",
        "confirmed",
        "PM1",
        "MD1",
        "2750",
        "2024-05-02T10:00:00.000Z",
    )]);
    let first = h.deliver("gocardless", &body).await;
    h.wait_processed(&first).await;
    h.stop_workers().await;
    let before = money_rows(&h).await;
    sqlx::query("UPDATE webhook_events SET received_at = now() - interval '100 days'")
        .execute(&h.pool)
        .await
        .unwrap();
    let (ok, stdout, _) = prune_cli(&h, &[], &[]).await;
    assert!(ok && stdout.contains("webhook_events 1"), "{stdout}");

    // The gateway sends it again (a late retry, a replay from its dashboard).
    h.spawn_worker().await;
    let again = h.deliver("gocardless", &body).await;
    assert_ne!(again, first, "a new row: the old one is gone");
    h.wait_processed(&again).await;
    let after = money_rows(&h).await;
    assert_eq!(after, before, "no payment, ledger or domain event change");
}

#[tokio::test]
async fn every_reconciler_pass_prunes_too() {
    let h = Harness::without_worker().await;
    event_aged(&h, "EV1", "processed", 100).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhook-worker"))
        .args(["reconcile", "--once"])
        .env("DATABASE_URL", &h.env.database.database_url)
        .env("AMQP_URL", &h.env.broker.amqp_url)
        .env("PAYHOOK_AMQP_PREFIX", &h.env.broker.amqp_prefix)
        .env_remove("RETAIN_DELIVERIES")
        .env_remove("RETAIN_EVENTS")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("; pruned webhook_deliveries 1, webhook_events 1, domain_outbox 0"),
        "{stdout}"
    );
    assert!(ids_of(&h, "webhook_events").await.is_empty());
}
