//! Step 2, the domain relay: `domain_outbox` rows not yet published go to `<prefix>.domain`
//! in id order — routing key the domain event type, body the row's payload (`{"type",
//! "occurred_at", "payment"|"member": {...}}`, written by `payhook_shared::domain::outbox`),
//! `message_id` the outbox row id, persistent, confirmed — and `published_at` is stamped only
//! after the broker confirmed them.
//!
//! Exactly once as downstream sees it, provided it deduplicates on `message_id`: a crash (or
//! a lost PostgreSQL) between the confirm and the stamp sends those rows again with the same
//! ids on the next pass. Nothing is skipped: a batch that fails stops the relay for this pass,
//! so later rows never overtake it.
//!
//! Published without `mandatory`: a domain event no queue is bound for yet is dropped by
//! RabbitMQ, as for any topic exchange; a downstream system binds its durable queue before it
//! relies on the events.

use payhook_shared::amqp::Outgoing;

use super::{Reconciler, CONFIRM_TIMEOUT};

/// Publishes every unpublished domain event; returns how many.
pub async fn run(r: &Reconciler) -> anyhow::Result<u64> {
    let mut relayed = 0u64;
    let exchange = r.broker.names().domain_exchange();
    loop {
        if r.shutdown.is_cancelled() {
            break;
        }
        // The payload as PostgreSQL prints it: numbers keep every digit.
        let batch: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, event_type, payload::text FROM domain_outbox
             WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(i64::from(r.settings.relay_batch))
        .fetch_all(&r.pool)
        .await?;
        if batch.is_empty() {
            break;
        }
        let out: Vec<Outgoing> = batch
            .iter()
            .map(|(id, event_type, payload)| Outgoing {
                exchange: exchange.clone(),
                routing_key: event_type.clone(),
                message_id: id.to_string(),
                body: payload.clone().into_bytes(),
                headers: None,
            })
            .collect();
        r.broker
            .publish_confirmed_unrouted_ok(&out, CONFIRM_TIMEOUT)
            .await?;
        let ids: Vec<i64> = batch.iter().map(|b| b.0).collect();
        sqlx::query("UPDATE domain_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&r.pool)
            .await?;
        relayed += ids.len() as u64;
        tracing::debug!(domain_events = ids.len(), "relayed domain events");
        if batch.len() < r.settings.relay_batch as usize {
            break;
        }
    }
    Ok(relayed)
}
