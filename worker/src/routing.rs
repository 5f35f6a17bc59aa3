//! One delivery, start to ack. The event is applied in one PostgreSQL transaction; the message
//! is acked only after that commit, or after its retry or dead-letter copy is confirmed by
//! the broker — so a crash at any point leaves the message in the queue, never lost.
//!
//! - done (processed, ignored, already done): ack.
//! - transient error: attempts + 1, status `retrying`; a copy goes to `<prefix>.retry` with
//!   `payhook-retry` naming the delay of this attempt (1 s, 5 s, … 1 h) and the original
//!   routing key, so the delay queue sends it back to `<prefix>.events` when its TTL ends.
//! - after the last delay, or a permanent error: status `dead`, a copy to `<prefix>.dlx`
//!   (→ `<prefix>.dead`).
//!
//! When the retry or dead-letter copy cannot be published, the message is returned to the
//! queue (nack) instead: it is tried again, and the quorum queue's delivery limit bounds that.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use payhook_shared::amqp::{EventMessage, Outgoing, RETRY_DELAYS, RETRY_HEADER};
use payhook_shared::domain::{self, events, events::Outcome, DomainError, Processed};
use tracing::Instrument;

use crate::startup::Shared;

/// Header carrying the attempt count on retry and dead-letter copies: the fallback count when
/// PostgreSQL (which normally keeps it) cannot be reached.
pub const ATTEMPT_HEADER: &str = "x-payhook-attempt";

/// How long a retry or dead-letter publish may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Processes a batch of deliveries in one transaction and settles each with the broker. If
/// the transaction fails, each event goes through [`handle`] alone, so the error lands on the
/// event that caused it (retry, dead letter) and the others are still applied.
pub async fn handle_batch(shared: &Shared, deliveries: Vec<Delivery>) {
    metrics::histogram!("payhook_worker_batch_size").record(deliveries.len() as f64);
    let mut together = Vec::new();
    let mut alone = Vec::new();
    for delivery in deliveries {
        match serde_json::from_slice::<EventMessage>(&delivery.data) {
            Ok(m) if domain::may_batch(&shared.ctx, &m.provider, &m.event_type) => {
                together.push((delivery, m))
            }
            _ => alone.push(delivery),
        }
    }
    if together.len() > 1 {
        let started = Instant::now();
        let ids: Vec<i64> = together.iter().map(|(_, m)| m.id).collect();
        match domain::process_events(&shared.pool, &shared.ctx, &ids).await {
            Ok(results) => {
                let seconds = started.elapsed().as_secs_f64();
                for ((delivery, msg), p) in std::mem::take(&mut together).into_iter().zip(results) {
                    let labels = (msg.provider.clone(), msg.event_type.clone());
                    metrics::histogram!("payhook_event_processing_seconds", "provider" => labels.0.clone())
                        .record(seconds);
                    let span = tracing::info_span!("event", event_id = msg.id, provider = %msg.provider, event_type = %msg.event_type);
                    settle(shared, &delivery, p, &labels).instrument(span).await;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, events = ids.len(), "batch failed; applying its events one by one");
            }
        }
    }
    for (delivery, msg) in together {
        let span = tracing::info_span!("event", event_id = msg.id, provider = %msg.provider, event_type = %msg.event_type);
        process(shared, delivery, msg).instrument(span).await;
    }
    for delivery in alone {
        handle(shared, delivery).await;
    }
}

/// Processes one delivery and settles it with the broker.
pub async fn handle(shared: &Shared, delivery: Delivery) {
    let msg: EventMessage = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            // Not ours to understand: keep it for an operator in the dead queue.
            tracing::error!(error = %e, "undecodable message on the events queue; dead-lettering it");
            let label = ("unknown".to_owned(), "unknown".to_owned());
            dead_letter(shared, &delivery, None, &label).await;
            return;
        }
    };
    let span = tracing::info_span!("event", event_id = msg.id, provider = %msg.provider, event_type = %msg.event_type);
    process(shared, delivery, msg).instrument(span).await;
}

async fn process(shared: &Shared, delivery: Delivery, msg: EventMessage) {
    let started = Instant::now();
    let labels = (msg.provider.clone(), msg.event_type.clone());
    let result = domain::process_event(&shared.pool, &shared.ctx, msg.id).await;
    metrics::histogram!("payhook_event_processing_seconds", "provider" => labels.0.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(p) => settle(shared, &delivery, p, &labels).await,
        Err(DomainError::Transient(e)) => retry(shared, &delivery, &msg, &e, &labels).await,
        Err(DomainError::Permanent(e)) => {
            tracing::error!(error = %e, "event failed permanently; dead-lettering it");
            if let Err(db) = events::record_dead(&shared.pool, msg.id, &e, true).await {
                tracing::warn!(error = %db, "could not mark the event dead");
            }
            dead_letter(
                shared,
                &delivery,
                attempt_header(&delivery).map(|n| n + 1),
                &labels,
            )
            .await;
        }
    }
}

/// An event its transaction got through: ack it, or dead-letter a message with no event.
async fn settle(shared: &Shared, delivery: &Delivery, p: Processed, labels: &(String, String)) {
    if p.outcome == Outcome::Missing {
        // Published by another installation sharing the broker, or its row was deleted.
        tracing::error!("no such event in the database; dead-lettering the message");
        dead_letter(shared, delivery, None, labels).await;
    } else {
        tracing::debug!(outcome = p.outcome.label(), "event done");
        count(labels, p.outcome.label());
        ack(delivery).await;
    }
}

async fn retry(
    shared: &Shared,
    delivery: &Delivery,
    msg: &EventMessage,
    error: &str,
    labels: &(String, String),
) {
    let attempt = match events::record_retry(&shared.pool, msg.id, error).await {
        Ok(Some(n)) => n.max(1) as usize,
        Ok(None) => {
            // Finished meanwhile (by a redelivery on another worker): nothing left to retry.
            count(labels, "duplicate");
            ack(delivery).await;
            return;
        }
        // PostgreSQL is what failed, most likely: count on the message itself.
        Err(_) => attempt_header(delivery).unwrap_or(0) as usize + 1,
    };
    let Some((delay, wait)) = RETRY_DELAYS.get(attempt - 1) else {
        let e = format!("gave up after {} attempts: {error}", attempt);
        tracing::error!(error = %error, attempts = attempt, "event still failing after the last retry; dead-lettering it");
        if let Err(db) = events::record_dead(&shared.pool, msg.id, &e, false).await {
            tracing::warn!(error = %db, "could not mark the event dead");
        }
        dead_letter(shared, delivery, Some(attempt as i64), labels).await;
        return;
    };
    tracing::warn!(error = %error, attempt, delay, "event failed; retrying later");
    if let Err(db) = events::record_retry_due(&shared.pool, msg.id, *wait).await {
        // Without it the relay republishes the event early: a duplicate, never a loss.
        tracing::warn!(error = %db, "could not record when the retry is due");
    }
    let mut headers = FieldTable::default();
    headers
        .insert(
            RETRY_HEADER.into(),
            AMQPValue::LongString(LongString::from(delay.as_bytes().to_vec())),
        )
        .insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(attempt as i64),
        );
    let copy = copy_of(delivery, shared.names.retry_exchange(), headers);
    match shared
        .broker
        .publish_confirmed(&[copy], CONFIRM_TIMEOUT)
        .await
    {
        Ok(()) => {
            metrics::counter!("payhook_retries_total", "provider" => labels.0.clone(), "delay" => *delay).increment(1);
            count(labels, "retry");
            ack(delivery).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not publish the retry copy; returning the message to the queue");
            requeue(delivery).await;
        }
    }
}

async fn dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    attempt: Option<i64>,
    labels: &(String, String),
) {
    let mut headers = FieldTable::default();
    if let Some(n) = attempt {
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(n));
    }
    let copy = copy_of(delivery, shared.names.dead_letter_exchange(), headers);
    match shared
        .broker
        .publish_confirmed(&[copy], CONFIRM_TIMEOUT)
        .await
    {
        Ok(()) => {
            metrics::counter!("payhook_dead_letters_total", "provider" => labels.0.clone())
                .increment(1);
            count(labels, "dead");
            ack(delivery).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not publish the dead-letter copy; returning the message to the queue");
            requeue(delivery).await;
        }
    }
}

/// The same body, message id and routing key (the way back from a delay queue), new headers.
fn copy_of(delivery: &Delivery, exchange: String, headers: FieldTable) -> Outgoing {
    Outgoing {
        exchange,
        routing_key: delivery.routing_key.to_string(),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        body: delivery.data.clone(),
        headers: Some(headers),
    }
}

fn attempt_header(delivery: &Delivery) -> Option<i64> {
    match delivery
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get(ATTEMPT_HEADER)?
    {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

fn count(labels: &(String, String), outcome: &'static str) {
    metrics::counter!(
        "payhook_events_processed_total",
        "provider" => labels.0.clone(),
        "event_type" => labels.1.clone(),
        "outcome" => outcome
    )
    .increment(1);
}

async fn ack(delivery: &Delivery) {
    // A failed ack means the channel broke: the message comes back, and is skipped as done.
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(error = %e, "ack failed; the message will be redelivered and skipped");
    }
}

async fn requeue(delivery: &Delivery) {
    // A short pause so a broker that refuses everything is not hammered in a tight loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Err(e) = delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
    {
        tracing::warn!(error = %e, "nack failed; the broker will redeliver the message anyway");
    }
}
