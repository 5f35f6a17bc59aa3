//! The admin API on the ops listener: bearer-token auth (off when unset), search, timelines,
//! pagination, replay, registering an expected payment, and the console page.

use payhook_shared::testing::TestEnv;
use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("{}/admin/{path}", self.ops_address)
    }

    /// GET with the admin token; (status, JSON body).
    pub(crate) async fn admin_get(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POST with the admin token and an optional JSON body; (status, JSON body).
    pub(crate) async fn admin_post(&self, path: &str, body: Option<String>) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Stores an event row directly (as ingest and the worker leave it); returns its id.
    async fn seed_event(
        &self,
        provider: &str,
        external_id: &str,
        event_type: &str,
        resource_id: Option<&str>,
        status: &str,
        last_error: Option<&str>,
    ) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO webhook_events (provider, external_id, event_type, resource_id, payload,
                                         status, attempts, last_error, occurred_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
             RETURNING id",
        )
        .bind(provider)
        .bind(external_id)
        .bind(event_type)
        .bind(resource_id)
        .bind(json!({ "id": external_id, "seeded": true }))
        .bind(status)
        .bind(if status == "dead" { 3 } else { 1 })
        .bind(last_error)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    /// Ada (mandate MD1) with payment PM1 (reference REF-1): her mandate event, the payment's
    /// created (processed) and confirmed (dead) events, and an unrelated Paystack event.
    async fn seed_world(&self) -> World {
        let member: i64 = sqlx::query_scalar(
            "INSERT INTO members (mandate_id, name, email) VALUES ('MD1', 'Ada Lovelace', 'Ada@Example.org') RETURNING id",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO payments (provider, external_id, reference, member_id, mandate_id, amount_minor, currency, status)
             VALUES ('gocardless', 'PM1', 'REF-1', $1, 'MD1', 2750, 'GBP', 'pending')",
        )
        .bind(member)
        .execute(&self.pool)
        .await
        .unwrap();
        World {
            mandate: self
                .seed_event(
                    "gocardless",
                    "EV1",
                    "mandates.created",
                    Some("MD1"),
                    "processed",
                    None,
                )
                .await,
            created: self
                .seed_event(
                    "gocardless",
                    "EV2",
                    "payments.created",
                    Some("PM1"),
                    "processed",
                    None,
                )
                .await,
            confirmed: self
                .seed_event(
                    "gocardless",
                    "EV3",
                    "payments.confirmed",
                    Some("PM1"),
                    "dead",
                    Some("GET /payments/PM1: HTTP 404"),
                )
                .await,
            other: self
                .seed_event(
                    "paystack",
                    "charge.success:9",
                    "charge.success",
                    Some("ref-9"),
                    "processed",
                    None,
                )
                .await,
        }
    }
}

struct World {
    mandate: i64,
    created: i64,
    confirmed: i64,
    other: i64,
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {page}"))
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn without_an_admin_token_configured_the_api_and_the_console_page_are_absent() {
    let env = TestEnv::new();
    let mut config = test_config(&env);
    config.admin_token = None;
    let app = spawn_app_with(env, config).await;
    for path in ["events", "payments", "members", "stats", "events/1"] {
        let res = app
            .client
            .get(app.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    let res = app
        .client
        .post(app.admin_url("events/replay?status=dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app.client.get(app.admin_url("")).send().await.unwrap();
    assert_eq!(res.status(), 404, "the console page too");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "error": "not found" }));
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/admin", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "and its redirect");
    // The ops endpoints are unaffected.
    let res = app
        .client
        .get(format!("{}/healthz", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_the_right_one_is_200() {
    let app = spawn_app().await;
    let url = app.admin_url("events");

    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("bearer token"));

    let same_length_wrong: String = ADMIN_TOKEN
        .chars()
        .rev()
        .collect::<String>()
        .replace('a', "b");
    for wrong in [
        "nope",
        same_length_wrong.as_str(),
        &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
    ] {
        let res = app
            .client
            .get(&url)
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{wrong}");
    }
    let res = app
        .client
        .get(&url)
        .header("Authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "only a bearer token counts");

    let res = app
        .client
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "items": [], "next": null }));
}

#[tokio::test]
async fn the_console_page_is_served_without_a_token() {
    let app = spawn_app().await;
    let res = app.client.get(app.admin_url("")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(res.headers().contains_key("content-security-policy"));
    let html = res.text().await.unwrap();
    assert!(html.contains("payhook") && html.contains("Replay all dead"));

    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/admin", app.ops_address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/admin/");
}

#[tokio::test]
async fn events_are_found_by_reference_event_id_gateway_id_mandate_and_email() {
    let app = spawn_app().await;
    let w = app.seed_world().await;
    let payment_events = vec![w.created, w.confirmed];
    let member_events = vec![w.mandate, w.created, w.confirmed];
    let cases: Vec<(String, Vec<i64>)> = vec![
        ("REF-1".into(), payment_events.clone()),
        ("PM1".into(), payment_events.clone()),
        (w.confirmed.to_string(), vec![w.confirmed]),
        ("EV3".into(), vec![w.confirmed]),
        ("MD1".into(), member_events.clone()),
        ("ada@example.org".into(), member_events.clone()),
        ("ADA@EXAMPLE.ORG".into(), member_events),
        ("ref-9".into(), vec![w.other]),
        ("nothing-like-this".into(), vec![]),
    ];
    for (q, expected) in cases {
        let (status, page) = app.admin_get(&format!("events?q={}", urlencode(&q))).await;
        assert_eq!(status, 200, "{q}");
        assert_eq!(sorted(ids(&page)), sorted(expected), "q={q}");
    }

    // Filters narrow the search; newest first.
    let (_, page) = app.admin_get("events?q=MD1&status=dead").await;
    assert_eq!(ids(&page), [w.confirmed]);
    let (_, page) = app.admin_get("events?provider=paystack").await;
    assert_eq!(ids(&page), [w.other]);
    let (_, page) = app.admin_get("events").await;
    assert_eq!(ids(&page), [w.other, w.confirmed, w.created, w.mandate]);
    let item = &page["items"][1];
    assert_eq!(item["status"], "dead");
    assert_eq!(item["attempts"], 3);
    assert_eq!(item["last_error"], "GET /payments/PM1: HTTP 404");
    assert_eq!(item["external_id"], "EV3");

    let (status, body) = app.admin_get("events?status=lost").await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("status must be one of"));
    let (status, _) = app.admin_get("events?provider=stripe").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn one_event_comes_with_its_payload() {
    let app = spawn_app().await;
    let w = app.seed_world().await;
    let (status, event) = app.admin_get(&format!("events/{}", w.confirmed)).await;
    assert_eq!(status, 200);
    assert_eq!(event["id"], w.confirmed);
    assert_eq!(event["event_type"], "payments.confirmed");
    assert_eq!(event["payload"], json!({ "id": "EV3", "seeded": true }));

    let (status, body) = app.admin_get("events/999999").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no event \"999999\"");
}

#[tokio::test]
async fn an_event_is_found_and_replayed_by_the_gateways_event_id() {
    let app = spawn_app().await;
    let w = app.seed_world().await;
    let (status, event) = app.admin_get("events/EV3").await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["id"], w.confirmed);
    assert_eq!(event["payload"], json!({ "id": "EV3", "seeded": true }));

    let (status, body) = app.admin_post("events/EV3/replay", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["id"], w.confirmed);
    assert_eq!(body["event"]["status"], "published");
    let published = app.published(5).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].message_id.as_deref(), Some("gocardless:EV3"));

    let (status, body) = app.admin_get("events/EV404").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no event \"EV404\"");
    let (status, _) = app.admin_post("events/EV404/replay", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_gateway_event_id_two_providers_share_is_409_until_the_provider_is_named() {
    let app = spawn_app().await;
    let gc = app
        .seed_event(
            "gocardless",
            "evt_1",
            "payments.created",
            None,
            "dead",
            None,
        )
        .await;
    let pq = app
        .seed_event("payqi", "evt_1", "payment.created", None, "dead", None)
        .await;

    let (status, body) = app.admin_get("events/evt_1").await;
    assert_eq!(status, 409, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("gocardless (event {gc})"))
            && error.contains(&format!("payqi (event {pq})")),
        "{error}"
    );
    let (status, _) = app.admin_post("events/evt_1/replay", None).await;
    assert_eq!(status, 409);
    assert!(app.published(1).await.is_empty(), "nothing replayed");

    let (status, event) = app.admin_get("events/evt_1?provider=payqi").await;
    assert_eq!(status, 200);
    assert_eq!(event["id"], pq);
    let (status, body) = app
        .admin_post("events/evt_1/replay?provider=gocardless", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["id"], gc);
    let published = app.published(5).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].message_id.as_deref(), Some("gocardless:evt_1"));

    let (status, body) = app.admin_get("events/evt_1?provider=paystack").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no paystack event \"evt_1\"");
    let (status, body) = app.admin_get("events/evt_1?provider=stripe").await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("provider must be one of"));
    // payhook's own id needs no provider.
    let (status, event) = app.admin_get(&format!("events/{pq}")).await;
    assert_eq!((status, event["id"].as_i64()), (200, Some(pq)));
}

#[tokio::test]
async fn payments_and_members_are_found_by_what_an_operator_knows() {
    let app = spawn_app().await;
    app.seed_world().await;
    for q in ["REF-1", "PM1", "MD1", "ada@example.org"] {
        let (status, page) = app.admin_get(&format!("payments?q={}", urlencode(q))).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "q={q}");
        assert_eq!(items[0]["reference"], "REF-1");
        assert_eq!(items[0]["amount_minor"], 2750);
        assert_eq!(items[0]["status"], "pending");
    }
    let (_, page) = app.admin_get("payments?q=REF-2").await;
    assert_eq!(page, json!({ "items": [], "next": null }));

    for q in ["MD1", "ADA@example.org", "lovelace", "Ada"] {
        let (status, page) = app.admin_get(&format!("members?q={}", urlencode(q))).await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "q={q}");
        assert_eq!(items[0]["mandate_id"], "MD1");
        assert_eq!(items[0]["name"], "Ada Lovelace");
    }
    let (_, page) = app.admin_get("members?q=%25").await;
    assert_eq!(
        ids(&page),
        Vec::<i64>::new(),
        "a % is a character, not a wildcard"
    );
}

#[tokio::test]
async fn lists_are_paginated_by_cursor_and_the_limit_is_capped() {
    let app = spawn_app().await;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(
            app.seed_event(
                "payqi",
                &format!("evt_{i}"),
                "payment.pending",
                None,
                "processed",
                None,
            )
            .await,
        );
    }
    all.reverse(); // newest first

    let mut seen = Vec::new();
    let mut path = "events?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = app.admin_get(&path).await;
        assert_eq!(status, 200);
        pages += 1;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2);
        seen.extend(page_ids);
        match page["next"].as_i64() {
            Some(cursor) => path = format!("events?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every event once, newest first");

    let (status, page) = app.admin_get("events?limit=100000").await;
    assert_eq!(status, 200, "a large limit is capped, not refused");
    assert_eq!(ids(&page).len(), 5);
    for bad in ["limit=0", "limit=ten", "cursor=abc", "cursor=-4"] {
        let (status, body) = app.admin_get(&format!("events?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].is_string());
    }
    let (_, page) = app.admin_get("payments?limit=1").await;
    assert_eq!(page, json!({ "items": [], "next": null }));
}

#[tokio::test]
async fn replaying_a_dead_event_puts_it_back_in_line_and_publishes_it() {
    let app = spawn_app().await;
    let w = app.seed_world().await;
    let (status, body) = app
        .admin_post(&format!("events/{}/replay", w.confirmed), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 1);
    assert_eq!(body["event"]["status"], "published");
    assert_eq!(body["event"]["attempts"], 0);

    let published = app.published(5).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].routing_key, "gocardless.payments.confirmed");
    assert_eq!(published[0].message_id.as_deref(), Some("gocardless:EV3"));
    assert!(published[0].persistent);
    assert_eq!(
        published[0].body,
        json!({"id": w.confirmed, "provider": "gocardless", "external_id": "EV3",
               "event_type": "payments.confirmed"})
    );
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM webhook_events WHERE id = $1")
            .bind(w.confirmed)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), attempts), ("published", 0));

    let (status, _) = app.admin_post("events/999999/replay", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn replay_all_dead_publishes_every_dead_event_once() {
    let app = spawn_app().await;
    let w = app.seed_world().await;
    let second = app
        .seed_event(
            "payqi",
            "evt_dead",
            "payment.completed",
            Some("pay_1"),
            "dead",
            Some("amount 1.005 GBP is not exact"),
        )
        .await;
    let (status, stats) = app.admin_get("stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["events"]["dead"], 2);
    assert_eq!(stats["events"]["processed"], 3);
    assert_eq!(stats["events"]["received"], 0);
    assert_eq!(stats["events"]["retrying"], 0);
    assert_eq!(stats["payments"]["pending"], 1);

    let (status, body) = app.admin_post("events/replay?status=failed", None).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("status=dead"));

    let (status, body) = app.admin_post("events/replay?status=dead", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "replayed": 2 }));
    let published = app.published(5).await;
    let mut got: Vec<i64> = published
        .iter()
        .map(|m| m.body["id"].as_i64().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, sorted(vec![w.confirmed, second]));
    let (_, stats) = app.admin_get("stats").await;
    assert_eq!(stats["events"]["dead"], 0);
    assert_eq!(stats["events"]["published"], 2);
}

#[tokio::test]
async fn an_expected_payment_is_registered_once_as_pending() {
    let app = spawn_app().await;
    let body = json!({"provider": "paystack", "external_id": "ref-77", "reference": "ref-77",
                      "amount_minor": 500000, "currency": "NGN"});
    let (status, row) = app.admin_post("payments", Some(body.to_string())).await;
    assert_eq!(status, 201, "{row}");
    assert_eq!(row["provider"], "paystack");
    assert_eq!(row["external_id"], "ref-77");
    assert_eq!(row["reference"], "ref-77");
    assert_eq!(row["amount_minor"], 500000);
    assert_eq!(row["currency"], "NGN");
    assert_eq!(row["status"], "pending");
    assert!(row["id"].is_i64());
    let stored: (String, String, i64, String, String) = sqlx::query_as(
        "SELECT provider, reference, amount_minor, currency, status FROM payments WHERE external_id = 'ref-77'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            "paystack".into(),
            "ref-77".into(),
            500000,
            "NGN".into(),
            "pending".into()
        )
    );

    let (status, err) = app.admin_post("payments", Some(body.to_string())).await;
    assert_eq!(status, 409);
    assert_eq!(err["error"], "payment paystack/ref-77 already exists");
    assert_eq!(app.count("payments").await, 1);

    let bad = [
        ("not json".to_owned(), "expected"),
        (
            json!({"provider": "paystack", "external_id": "x"}).to_string(),
            "missing field",
        ),
        (
            json!({"provider": "stripe", "external_id": "x", "reference": "x", "amount_minor": 1, "currency": "GBP"}).to_string(),
            "provider must be one of",
        ),
        (
            json!({"provider": "payqi", "external_id": "x", "reference": "x", "amount_minor": -5, "currency": "GBP"}).to_string(),
            "amount_minor",
        ),
        (
            json!({"provider": "payqi", "external_id": "x", "reference": "x", "amount_minor": 10.5, "currency": "GBP"}).to_string(),
            "expected",
        ),
        (
            json!({"provider": "payqi", "external_id": "x", "reference": "x", "amount_minor": 5, "currency": "pounds"}).to_string(),
            "currency",
        ),
        (
            json!({"provider": "payqi", "external_id": "", "reference": "x", "amount_minor": 5, "currency": "GBP"}).to_string(),
            "external_id must not be empty",
        ),
    ];
    for (body, says) in bad {
        let (status, err) = app.admin_post("payments", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(app.count("payments").await, 1, "nothing persisted on error");

    // And it is found like any payment.
    let (_, page) = app.admin_get("payments?q=ref-77").await;
    assert_eq!(page["items"][0]["id"], row["id"]);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn forgetting_a_member_answers_what_was_erased_and_keeps_the_payment() {
    let app = spawn_app().await;
    app.seed_world().await;
    let member: i64 = sqlx::query_scalar("SELECT id FROM members WHERE mandate_id = 'MD1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (status, body) = app
        .admin_post(&format!("members/{member}/forget"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["member_id"], member);
    assert_eq!(body["mandate_id"], "MD1");
    assert_eq!(body["member_cleared"], true);
    let (name, email): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT name, email FROM members WHERE id = $1")
            .bind(member)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((name, email), (None, None));
    assert_eq!(app.count("payments").await, 1);

    let (_, again) = app
        .admin_post(&format!("members/{member}/forget"), None)
        .await;
    assert_eq!(again["member_cleared"], false, "idempotent: {again}");
    assert_eq!(again["payloads_cleared"], 0);
}

#[tokio::test]
async fn forgetting_refuses_a_bad_id_an_unknown_member_and_a_missing_token() {
    let app = spawn_app().await;
    assert_eq!(app.admin_post("members/abc/forget", None).await.0, 400);
    assert_eq!(app.admin_post("members/99/forget", None).await.0, 404);
    let res = app
        .client
        .post(app.admin_url("members/1/forget"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
