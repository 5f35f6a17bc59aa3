//! Deliveries, start to ack. Events are applied in one PostgreSQL transaction, each behind
//! its savepoint, and marked in it (processed, retrying or dead: see `domain::batch`); a
//! message is acked only after that commit, or after its retry or dead-letter copy is
//! confirmed by the broker — so a crash at any point leaves the message in the queue, never
//! lost.
//!
//! - done (processed, ignored, already done): ack.
//! - transient error: attempts + 1, status `retrying`; a copy goes to `<prefix>.retry` with
//!   `payhook-retry` naming the delay of this attempt (1 s, 5 s, … 1 h) and the original
//!   routing key, so the delay queue sends it back to `<prefix>.events` when its TTL ends.
//! - after the last delay, or a permanent error: status `dead`, a copy to `<prefix>.dlx`
//!   (→ `<prefix>.dead`).
//! - the transaction itself failed (PostgreSQL away): each event alone, retried as above,
//!   counted on the message's attempt header if PostgreSQL cannot count it.
//!
//! When the retry or dead-letter copy cannot be published, the message is returned to the
//! queue (nack) instead: it is tried again, and the quorum queue's delivery limit bounds that.

use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use payhook_shared::amqp::{retry_delay, EventMessage, Outgoing, RETRY_HEADER};
use payhook_shared::domain::{self, events, events::Outcome, Processed};
use tracing::Instrument;

use crate::startup::Shared;

/// Header carrying the attempt count on retry and dead-letter copies: the fallback count when
/// PostgreSQL (which normally keeps it) cannot be reached.
pub const ATTEMPT_HEADER: &str = "x-payhook-attempt";

/// How long a retry or dead-letter publish may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Processes a batch of deliveries in one transaction and settles each with the broker: an
/// event that failed was rolled back and marked alone ([`domain::batch`]), so only its own
/// message goes to a delay queue or the dead letters. If the transaction itself fails (the
/// database went away), each event goes through [`handle`] alone.
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
                let settled: Vec<_> = std::mem::take(&mut together)
                    .into_iter()
                    .zip(results)
                    .map(|((delivery, msg), p)| {
                        metrics::histogram!("payhook_event_processing_seconds", "provider" => msg.provider.clone())
                            .record(seconds);
                        (delivery, msg, p)
                    })
                    .collect();
                settle_all(shared, settled).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, events = ids.len(), "batch transaction failed; applying its events one by one");
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
    let result = domain::process_event(&shared.pool, &shared.ctx, msg.id).await;
    metrics::histogram!("payhook_event_processing_seconds", "provider" => msg.provider.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(p) => settle_all(shared, vec![(delivery, msg, p)]).await,
        // The transaction itself failed: PostgreSQL is away, most likely.
        Err(e) => retry_without_database(shared, &delivery, &msg, &e.to_string()).await,
    }
}

/// Settles messages whose transaction went through, each by what it did to its event: done
/// ones are acked; the retry and dead-letter copies of the failed ones go out together, one
/// wait for the broker's confirms instead of one per failed event (a batch with failures
/// settles nearly as fast as one without).
async fn settle_all(shared: &Shared, settled: Vec<(Delivery, EventMessage, Processed)>) {
    let mut failed = Vec::new();
    for (delivery, msg, p) in settled {
        let span = tracing::info_span!("event", event_id = msg.id, provider = %msg.provider, event_type = %msg.event_type);
        match p.outcome {
            Outcome::Processed | Outcome::Ignored | Outcome::AlreadyDone => {
                count(&labels(&msg), p.outcome.label());
                ack(&delivery).await;
            }
            outcome => failed.push((delivery, msg, outcome, span)),
        }
    }
    if failed.is_empty() {
        return;
    }
    let mut onward = Vec::with_capacity(failed.len());
    for (delivery, msg, outcome, span) in &failed {
        let _entered = span.enter();
        let next = match outcome {
            Outcome::Retrying {
                attempt,
                delay,
                error,
            } => {
                tracing::warn!(error = %error, attempt, delay, "event failed; retrying later");
                Onward::Retry {
                    attempt: i64::from(*attempt),
                    delay,
                }
            }
            Outcome::Dead { attempts, error } => {
                tracing::error!(error = %error, attempts, "event failed for good; dead-lettering it");
                Onward::Dead {
                    attempt: Some(i64::from(*attempts)),
                }
            }
            _ => {
                tracing::error!("no such event in the database; dead-lettering the message");
                Onward::Dead { attempt: None }
            }
        };
        onward.push((delivery, labels(msg), next));
    }
    send_onward(shared, onward).await;
}

fn labels(msg: &EventMessage) -> (String, String) {
    (msg.provider.clone(), msg.event_type.clone())
}

/// A transient failure of the transaction itself: the attempt is counted in PostgreSQL if it
/// answers, else on the message (its attempt header).
async fn retry_without_database(
    shared: &Shared,
    delivery: &Delivery,
    msg: &EventMessage,
    error: &str,
) {
    let labels = (msg.provider.clone(), msg.event_type.clone());
    let attempt = match events::record_retry(&shared.pool, msg.id, error).await {
        Ok(Some(n)) => n.max(1) as usize,
        Ok(None) => {
            // Finished meanwhile (by a redelivery on another worker): nothing left to retry.
            count(&labels, "duplicate");
            ack(delivery).await;
            return;
        }
        Err(_) => attempt_header(delivery).unwrap_or(0) as usize + 1,
    };
    let Some((delay, wait)) = retry_delay(attempt as i64) else {
        let e = format!("gave up after {} attempts: {error}", attempt);
        tracing::error!(error = %error, attempts = attempt, "event still failing after the last retry; dead-lettering it");
        if let Err(db) = events::record_dead(&shared.pool, msg.id, &e, false).await {
            tracing::warn!(error = %db, "could not mark the event dead");
        }
        dead_letter(shared, delivery, Some(attempt as i64), &labels).await;
        return;
    };
    tracing::warn!(error = %error, attempt, delay, "event failed; retrying later");
    if let Err(db) = events::record_retry_due(&shared.pool, msg.id, *wait).await {
        // Without it the relay republishes the event early: a duplicate, never a loss.
        tracing::warn!(error = %db, "could not record when the retry is due");
    }
    publish_retry(shared, delivery, attempt as i64, delay, &labels).await;
}

/// Where a failed event's message goes next.
enum Onward {
    /// To the delay queue of `delay` (`payhook-retry`), with the attempt count.
    Retry { attempt: i64, delay: &'static str },
    /// To the dead letters, with the attempt count when known.
    Dead { attempt: Option<i64> },
}

/// Sends the message's copy to the delay queue of `delay`, then acks the message; if the copy
/// is not confirmed, the message goes back to the queue instead.
async fn publish_retry(
    shared: &Shared,
    delivery: &Delivery,
    attempt: i64,
    delay: &'static str,
    labels: &(String, String),
) {
    let onward = Onward::Retry { attempt, delay };
    send_onward(shared, vec![(delivery, labels.clone(), onward)]).await;
}

async fn dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    attempt: Option<i64>,
    labels: &(String, String),
) {
    let onward = Onward::Dead { attempt };
    send_onward(shared, vec![(delivery, labels.clone(), onward)]).await;
}

/// Publishes the copies (retry or dead letter) of these messages together and, once the
/// broker confirmed them all, acks the messages; if not confirmed, every one of them goes back
/// to the queue instead, so none is lost (a copy that did arrive is a duplicate the worker
/// skips).
async fn send_onward(shared: &Shared, items: Vec<(&Delivery, (String, String), Onward)>) {
    if items.is_empty() {
        return;
    }
    let copies: Vec<Outgoing> = items
        .iter()
        .map(|(delivery, _, onward)| {
            let mut headers = FieldTable::default();
            match onward {
                Onward::Retry { attempt, delay } => {
                    headers
                        .insert(
                            RETRY_HEADER.into(),
                            AMQPValue::LongString(LongString::from(delay.as_bytes().to_vec())),
                        )
                        .insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(*attempt));
                    copy_of(delivery, shared.names.retry_exchange(), headers)
                }
                Onward::Dead { attempt } => {
                    if let Some(n) = attempt {
                        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(*n));
                    }
                    copy_of(delivery, shared.names.dead_letter_exchange(), headers)
                }
            }
        })
        .collect();
    match shared
        .broker
        .publish_confirmed(&copies, CONFIRM_TIMEOUT)
        .await
    {
        Ok(()) => {
            for (delivery, labels, onward) in &items {
                match onward {
                    Onward::Retry { delay, .. } => {
                        metrics::counter!("payhook_retries_total", "provider" => labels.0.clone(), "delay" => *delay).increment(1);
                        count(labels, "retry");
                    }
                    Onward::Dead { .. } => {
                        metrics::counter!("payhook_dead_letters_total", "provider" => labels.0.clone())
                            .increment(1);
                        count(labels, "dead");
                    }
                }
                ack(delivery).await;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, messages = items.len(), "could not publish the retry or dead-letter copies; returning the messages to the queue");
            // One pause for all, so a broker that refuses everything is not hammered.
            tokio::time::sleep(Duration::from_secs(1)).await;
            for (delivery, _, _) in &items {
                nack_requeue(delivery).await;
            }
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

async fn nack_requeue(delivery: &Delivery) {
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
