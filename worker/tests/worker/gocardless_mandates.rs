//! GoCardless mandate events → members.

use serde_json::json;

use crate::support::*;

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct MemberRow {
    name: Option<String>,
    email: Option<String>,
    membership_type: String,
    address_line1: Option<String>,
    address_line2: Option<String>,
    city: Option<String>,
    county: Option<String>,
    postcode: Option<String>,
    status: String,
    status_reason: Option<String>,
    joined_on: Option<chrono::NaiveDate>,
}

async fn member(h: &Harness, mandate: &str) -> MemberRow {
    sqlx::query_as(
        "SELECT name, email, membership_type, address_line1, address_line2, city, county, postcode,
                status, status_reason, joined_on FROM members WHERE mandate_id = $1",
    )
    .bind(mandate)
    .fetch_one(&h.pool)
    .await
    .unwrap()
}

fn date(s: &str) -> Option<chrono::NaiveDate> {
    Some(s.parse().unwrap())
}

fn created(ev: &str, mandate: &str, metadata: serde_json::Value, at: &str) -> serde_json::Value {
    gc_event(
        ev,
        "mandates",
        "created",
        json!({"mandate": mandate}),
        json!({"origin": "api", "cause": "mandate_created"}),
        metadata,
        at,
    )
}

fn status_event(ev: &str, mandate: &str, action: &str, cause: &str, at: &str) -> serde_json::Value {
    gc_event(
        ev,
        "mandates",
        action,
        json!({"mandate": mandate}),
        json!({"origin": "bank", "cause": cause}),
        json!({}),
        at,
    )
}

#[tokio::test]
async fn mandate_created_makes_an_active_member_from_the_event_metadata() {
    let h = Harness::start().await;
    let metadata = json!({
        "name": "Ada Lovelace", "email": "ada@example.com", "mandate_type": "household",
        "address_line1": "1 High Street", "address_line2": "Flat 2", "city": "London",
        "county": "Greater London", "postcode": "N1 1AA",
    });
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![created(
                "EV1",
                "MD1",
                metadata,
                "2024-05-01T10:00:00.000Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;

    assert_eq!(
        member(&h, "MD1").await,
        MemberRow {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.com".into()),
            membership_type: "household".into(),
            address_line1: Some("1 High Street".into()),
            address_line2: Some("Flat 2".into()),
            city: Some("London".into()),
            county: Some("Greater London".into()),
            postcode: Some("N1 1AA".into()),
            status: "active".into(),
            status_reason: None,
            joined_on: date("2024-05-01"),
        }
    );
    assert!(
        h.gateway.calls().is_empty(),
        "metadata was complete: no API call"
    );
    assert_eq!(h.outbox_types().await, ["member.created"]);
    let payload: serde_json::Value = h.scalar("SELECT payload FROM domain_outbox").await;
    assert_eq!(payload["member"]["mandate_id"], "MD1");
    assert_eq!(payload["type"], "member.created");
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn mandate_created_without_metadata_is_enriched_from_the_gocardless_api() {
    let h = Harness::start().await;
    h.gateway.gocardless_mandate("MD2", "CU2", "corporate");
    h.gateway.gocardless_customer(
        "CU2",
        json!({"id": "CU2", "given_name": "Grace", "family_name": "Hopper", "company_name": "Hopper Ltd",
               "email": "grace@example.com", "address_line1": "2 Low Road", "address_line2": null,
               "city": "Leeds", "region": "West Yorkshire", "postal_code": "LS1 1AA"}),
    );
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![created(
                "EV2",
                "MD2",
                json!({}),
                "2024-05-02T08:30:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;

    let m = member(&h, "MD2").await;
    assert_eq!(m.name.as_deref(), Some("Hopper Ltd"), "company name first");
    assert_eq!(m.email.as_deref(), Some("grace@example.com"));
    assert_eq!(m.membership_type, "corporate");
    assert_eq!(
        m.county.as_deref(),
        Some("West Yorkshire"),
        "county = region"
    );
    assert_eq!(
        m.postcode.as_deref(),
        Some("LS1 1AA"),
        "postcode = postal_code"
    );
    assert_eq!(m.address_line2, None);
    assert_eq!(m.joined_on, date("2024-05-02"), "the event's date");
    assert_eq!(
        h.gateway.call_lines(),
        ["GET /mandates/MD2", "GET /customers/CU2"]
    );
    for call in h.gateway.calls() {
        assert_eq!(
            call.authorization.as_deref(),
            Some(format!("Bearer {GC_TOKEN}").as_str())
        );
        assert_eq!(call.gocardless_version.as_deref(), Some("2015-07-06"));
    }
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn mandate_cancelled_failed_or_expired_suspends_the_member_with_the_cause() {
    let h = Harness::start().await;
    let full = json!({"name": "N", "email": "e@example.com"});
    let mut ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![
                created("EV10", "MD10", full.clone(), "2024-05-01T10:00:00Z"),
                created("EV11", "MD11", full.clone(), "2024-05-01T10:00:00Z"),
                created("EV12", "MD12", full, "2024-05-01T10:00:00Z"),
            ]),
        )
        .await;
    h.wait_processed(&ids).await;
    ids.extend(
        h.deliver(
            "gocardless",
            &gc_body(vec![
                status_event(
                    "EV13",
                    "MD10",
                    "cancelled",
                    "bank_account_closed",
                    "2024-06-01T10:00:00Z",
                ),
                status_event(
                    "EV14",
                    "MD11",
                    "failed",
                    "invalid_bank_details",
                    "2024-06-01T10:00:00Z",
                ),
                status_event(
                    "EV15",
                    "MD12",
                    "expired",
                    "mandate_expired",
                    "2024-06-01T10:00:00Z",
                ),
            ]),
        )
        .await,
    );
    h.wait_processed(&ids).await;

    for (mandate, cause) in [
        ("MD10", "bank_account_closed"),
        ("MD11", "invalid_bank_details"),
        ("MD12", "mandate_expired"),
    ] {
        let m = member(&h, mandate).await;
        assert_eq!(
            (m.status.as_str(), m.status_reason.as_deref()),
            ("suspended", Some(cause)),
            "{mandate}"
        );
    }
    let suspended: i64 = h
        .scalar("SELECT count(*) FROM domain_outbox WHERE event_type = 'member.suspended'")
        .await;
    assert_eq!(suspended, 3);
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn mandate_reinstated_makes_the_member_active_again() {
    let h = Harness::start().await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![
                created(
                    "EV20",
                    "MD20",
                    json!({"name": "N", "email": "e@example.com"}),
                    "2024-05-01T10:00:00Z",
                ),
                status_event(
                    "EV21",
                    "MD20",
                    "cancelled",
                    "bank_account_closed",
                    "2024-05-02T10:00:00Z",
                ),
            ]),
        )
        .await;
    h.wait_processed(&ids).await;
    assert_eq!(member(&h, "MD20").await.status, "suspended");

    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![status_event(
                "EV22",
                "MD20",
                "reinstated",
                "mandate_reinstated",
                "2024-05-03T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    let m = member(&h, "MD20").await;
    assert_eq!((m.status.as_str(), m.status_reason), ("active", None));
    assert_eq!(
        h.outbox_types().await.last().map(String::as_str),
        Some("member.reinstated")
    );
    h.assert_queues_drained().await;
}

#[tokio::test]
async fn a_late_mandate_created_does_not_reactivate_a_member_cancelled_after_it() {
    let h = Harness::start().await;
    // The cancellation arrives first; the creation (older) comes late.
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![status_event(
                "EV31",
                "MD30",
                "cancelled",
                "bank_account_closed",
                "2024-05-02T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;
    let ids = h
        .deliver(
            "gocardless",
            &gc_body(vec![created(
                "EV30",
                "MD30",
                json!({"name": "Late", "email": "late@example.com"}),
                "2024-05-01T10:00:00Z",
            )]),
        )
        .await;
    h.wait_processed(&ids).await;

    let m = member(&h, "MD30").await;
    assert_eq!(m.status, "suspended", "the newer cancellation stands");
    assert_eq!(m.status_reason.as_deref(), Some("bank_account_closed"));
    assert_eq!(m.name.as_deref(), Some("Late"), "the details are filled in");
    assert_eq!(m.joined_on, date("2024-05-01"));
    assert_eq!(
        h.outbox_types().await,
        ["member.suspended", "member.updated"]
    );
    h.assert_queues_drained().await;
}
