//! Stored history for the steps that need tables full of rows ingest did not write: processed
//! events and their raw deliveries, inserted with plain SQL (`generate_series`, one statement
//! per 10,000 deliveries) so that a million rows take a minute, not an hour of load. Used by
//! the friendly suite's cost-growth step (recent rows) and the retention step (rows old
//! enough to be pruned).
//!
//! Rows look like ingest's own: a GoCardless body of `events_per_delivery` copies of a
//! `payments.created` event, the content type and user agent GoCardless sends, each event
//! `processed` and pointing at its delivery. Ids grow with `received_at`, oldest first, as
//! they do in production: retention walks each table in id order and stops at the first
//! batch that reaches a row too young to go, so history stored newest-first would stop it at
//! once.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use super::common::{checkpoint, say};
use crate::human;
use crate::load;

/// What to store.
#[derive(Debug, Clone, Copy)]
pub struct History {
    pub deliveries: u64,
    pub events_per_delivery: u32,
    /// How old the newest delivery is; each earlier one is one second older.
    pub newest_age: Duration,
}

/// What was stored, and how long storing it took.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stored {
    pub deliveries: u64,
    pub events: u64,
    /// The size of one stored body.
    pub body_bytes: usize,
    /// `received_at` of the oldest and the newest delivery, in days before the start.
    pub oldest_days: f64,
    pub newest_days: f64,
    /// The inserts, then VACUUM ANALYZE and CHECKPOINT.
    pub insert_s: f64,
    pub vacuum_s: f64,
}

/// Deliveries per statement: big enough that a million rows take few round trips, small
/// enough that no statement holds much WAL or memory.
const CHUNK: u64 = 10_000;

/// Stores `h` (ingest should be idle: nothing else writes meanwhile), then VACUUM ANALYZE
/// and CHECKPOINT, so the step that follows starts with visibility maps, statistics and
/// dirty pages as a long-running installation has them.
pub async fn store(pool: &PgPool, h: &History) -> anyhow::Result<Stored> {
    let k = h.events_per_delivery.max(1);
    let event = load::gocardless_event("@@", 0);
    say(format!(
        "storing {} deliveries of {k} event(s) with SQL ({} rows)",
        human(h.deliveries),
        human(h.deliveries * (1 + u64::from(k)))
    ));
    let age = format!("{} seconds", h.newest_age.as_secs());
    let t = Instant::now();
    let mut shown = Instant::now();
    let mut done = 0;
    while done < h.deliveries {
        let n = CHUNK.min(h.deliveries - done);
        // g runs over the whole history (1 = oldest), so the ids inside the bodies never
        // repeat across statements.
        sqlx::query(
            "WITH d AS (
               INSERT INTO webhook_deliveries (provider, received_at, headers, body)
               SELECT 'gocardless', now() - $4::interval - make_interval(secs => $5::bigint - g),
                      '{\"content-type\": \"application/json\", \"user-agent\": \"gocardless-webhooks-service/1.1\"}'::jsonb,
                      convert_to('{\"events\":[' || repeat(replace($1, '@@', 'H' || g) || ',', $6::int - 1)
                                 || replace($1, '@@', 'H' || g) || ']}', 'UTF8')
               FROM generate_series($2::bigint, $3::bigint) g
               ORDER BY g
               RETURNING id, received_at)
             INSERT INTO webhook_events (delivery_id, provider, external_id, event_type, resource_id,
                                         payload, status, attempts, occurred_at, received_at,
                                         published_at, processed_at)
             SELECT d.id, 'gocardless', 'EVH' || d.id || '-' || i, 'payments.created',
                    'PMH' || d.id || '-' || i, replace($1, '@@', 'H' || d.id || '-' || i)::jsonb,
                    'processed', 1, d.received_at, d.received_at, d.received_at, d.received_at
             FROM d CROSS JOIN generate_series(0, $6::int - 1) i",
        )
        .bind(&event)
        .bind((done + 1) as i64)
        .bind((done + n) as i64)
        .bind(&age)
        .bind(h.deliveries as i64)
        .bind(k as i32)
        .execute(pool)
        .await?;
        done += n;
        if shown.elapsed() >= Duration::from_secs(5) || done == h.deliveries {
            shown = Instant::now();
            say(format!(
                "  … {} deliveries, {} events ({:.0} s)",
                human(done),
                human(done * u64::from(k)),
                t.elapsed().as_secs_f64()
            ));
        }
    }
    let insert_s = t.elapsed().as_secs_f64();
    say("  VACUUM ANALYZE, CHECKPOINT");
    let t = Instant::now();
    sqlx::query("VACUUM ANALYZE webhook_deliveries")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE webhook_events")
        .execute(pool)
        .await?;
    checkpoint(pool).await?;
    let middle = format!("H{}", h.deliveries / 2 + 1);
    let one = event.replace("@@", &middle);
    let day = 86_400.0;
    Ok(Stored {
        deliveries: h.deliveries,
        events: h.deliveries * u64::from(k),
        body_bytes: r#"{"events":[]}"#.len() + k as usize * one.len() + (k as usize - 1),
        oldest_days: (h.newest_age.as_secs_f64() + h.deliveries.saturating_sub(1) as f64) / day,
        newest_days: h.newest_age.as_secs_f64() / day,
        insert_s,
        vacuum_s: t.elapsed().as_secs_f64(),
    })
}
