//! The consume loop. One AMQP connection and channel for consuming (manual acks, prefetch
//! bounded by `WORKER_PREFETCH`). Deliveries already handed over are taken together, up to
//! `WORKER_BATCH_MAX`, and each batch runs in its own task (one transaction), at most
//! `WORKER_CONCURRENCY` at a time. There is no timer: a lone delivery is a batch of one. A broken connection is reopened with backoff: the messages
//! it had handed us unacked go back to the queue, and their redelivery changes nothing.
//!
//! On shutdown the consumer is cancelled first (no new deliveries), the tasks in flight finish
//! and ack, and only then is the channel closed: prefetched messages never started return to
//! the queue for another worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use payhook_shared::amqp::declare_topology;
use payhook_shared::shutdown::CancellationToken;
use tokio::sync::Semaphore;

use crate::routing;
use crate::startup::Shared;

const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Longest a (re)connection may take until the consumer is registered.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Consumes until `shutdown` is cancelled; returns once every event in flight is acked.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(shared.concurrency));
    let mut delays = reconnect_delays();
    while !shutdown.is_cancelled() {
        match session(&shared, &permits, &shutdown).await {
            Ok(()) => break,
            Err(e) => {
                // A session that got as far as consuming was healthy: start the delays over.
                if shared.consuming.swap(false, Ordering::Relaxed) {
                    delays = reconnect_delays();
                }
                let backoff = delays.next().unwrap_or(RECONNECT_MAX);
                tracing::warn!(error = %e, retry_in = ?backoff, "consumer lost RabbitMQ; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    shared.consuming.store(false, Ordering::Relaxed);
    // Whatever session ended, let its tasks finish (they hold the permits).
    let _ = permits.acquire_many(shared.concurrency as u32).await;
}

/// One connection's worth of consuming. `Ok` on shutdown, `Err` when the connection broke.
async fn session(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let setup = async {
        let conn = shared.nodes.connect().await.map_err(anyhow::Error::msg)?;
        let ch = conn.create_channel().await?;
        declare_topology(&ch, &shared.names).await?;
        ch.basic_qos(shared.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("payhook-worker-{}-{}", std::process::id(), next_tag());
        let consumer = ch
            .basic_consume(
                shared.names.events_queue().as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        anyhow::Ok((conn, ch, tag, consumer))
    };
    // Bounded: a node that accepts the connection but never answers the declares (restarting,
    // or in a minority) must not keep the worker from the other nodes, or from stopping.
    let (conn, ch, tag, mut consumer) = tokio::select! {
        r = tokio::time::timeout(SETUP_TIMEOUT, setup) => r
            .map_err(|_| anyhow::anyhow!("connecting and consuming took over {SETUP_TIMEOUT:?}"))??,
        _ = shutdown.cancelled() => return Ok(()),
    };
    shared.consuming.store(true, Ordering::Relaxed);
    tracing::info!(queue = %shared.names.events_queue(), prefetch = shared.prefetch, "consuming");

    let result = loop {
        // A permit first: a delivery is only taken off the stream when a task can run it.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            d = consumer.next() => d,
        };
        let first = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
        };
        // Whatever else has already arrived joins the batch; nothing is waited for.
        let mut batch = vec![first];
        let mut broken = None;
        while batch.len() < shared.batch_max {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => batch.push(delivery),
                Some(Some(Err(e))) => {
                    broken = Some(anyhow::Error::from(e));
                    break;
                }
                Some(None) => {
                    broken = Some(anyhow::anyhow!("the broker cancelled the consumer"));
                    break;
                }
                None => break,
            }
        }
        let task_shared = shared.clone();
        tokio::spawn(async move {
            routing::handle_batch(&task_shared, batch).await;
            drop(permit);
        });
        if let Some(e) = broken {
            break Err(e);
        }
    };

    // On an error `run` clears the flag (it reads it to tell a broken session from a failed
    // connect).
    if result.is_ok() {
        shared.consuming.store(false, Ordering::Relaxed);
        tracing::info!("stopping: no new deliveries; finishing the events in flight");
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        // Every permit back = every task done and acked; then the channel may close.
        let _ = permits.acquire_many(shared.concurrency as u32).await;
        let _ = conn.close(200, "shutdown".into()).await;
    }
    result
}

/// Exponential, with jitter so N workers don't reconnect in lockstep, forever.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(RECONNECT_MIN)
        .with_max_delay(RECONNECT_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

fn next_tag() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
