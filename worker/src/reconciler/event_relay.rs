//! Step 1, the event relay: events persisted but still `received` after `RELAY_AFTER` (the
//! broker was down, ingest crashed between commit and confirm, `INGEST_ACCEPT_WITHOUT_BROKER`)
//! are published to `<prefix>.events` exactly as ingest publishes them, with confirms, in
//! batches, then marked `published`. A copy ingest published meanwhile makes a duplicate
//! message, which the worker skips (the event row is done): never a lost event.
//!
//! Also events still `retrying` well after their delayed copy was due (`retry_due` +
//! `RELAY_AFTER` + 10 s): dead-lettering out of a delay queue is at-most-once, and a copy
//! whose TTL ends while RabbitMQ restarts is dropped.

use payhook_shared::amqp::{EventMessage, Outgoing};
use payhook_shared::intake::mark_published;
use sqlx::PgPool;

use super::{Reconciler, CONFIRM_TIMEOUT};

/// Publishes every event due; returns how many.
pub async fn run(r: &Reconciler) -> anyhow::Result<u64> {
    let mut relayed = 0u64;
    // Keyset paging: a batch the worker marks done meanwhile cannot make us loop.
    let mut after = 0i64;
    loop {
        if r.shutdown.is_cancelled() {
            break;
        }
        let batch = due(&r.pool, r, after).await?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.id;
        let out: Vec<Outgoing> = batch
            .iter()
            .map(|m| Outgoing::event(r.broker.names(), m))
            .collect();
        r.broker.publish_confirmed(&out, CONFIRM_TIMEOUT).await?;
        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
        mark_published(&r.pool, &ids).await?;
        // A `retrying` event just republished is not due again until its copy had time to
        // come back: a minute, then the relay looks again (a duplicate is harmless).
        sqlx::query(
            "UPDATE webhook_events SET retry_due = now() + interval '1 minute'
             WHERE id = ANY($1) AND status = 'retrying'",
        )
        .bind(&ids)
        .execute(&r.pool)
        .await?;
        relayed += ids.len() as u64;
        tracing::info!(events = ids.len(), "relayed unpublished events");
        if batch.len() < r.settings.relay_batch as usize {
            break;
        }
    }
    Ok(relayed)
}

/// The events due, skipping any a worker holds: it is applying that event right now (its
/// message arrived; our stamp skipped the row it had locked, see `intake::mark_published`),
/// and publishing it again would only hand the worker a duplicate.
async fn due(pool: &PgPool, r: &Reconciler, after: i64) -> Result<Vec<EventMessage>, sqlx::Error> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT id, provider, external_id, event_type FROM webhook_events
         WHERE id > $2
           AND ((published_at IS NULL AND status = 'received' AND received_at < now() - $1::interval)
             OR (retry_due < now() - $1::interval - interval '10 seconds' AND status = 'retrying'))
         ORDER BY id LIMIT $3
         FOR UPDATE SKIP LOCKED",
    )
    .bind(r.settings.relay_after)
    .bind(after)
    .bind(i64::from(r.settings.relay_batch))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, provider, external_id, event_type)| EventMessage {
            id,
            provider,
            external_id,
            event_type,
        })
        .collect())
}
