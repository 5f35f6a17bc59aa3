//! `payhook-worker replay EVENT_ID…` and `replay --dead`: put events back in line (status
//! `published`, attempts from zero) and publish them to `<prefix>.events` again, with
//! confirms. Replaying is always safe: an event already processed is skipped by the worker.
//!
//! `--dead` replays what is in `<prefix>.dead` (events that went dead, and poison messages
//! RabbitMQ dead-lettered after the delivery limit, whose rows never said `dead`) and every
//! event whose row says `dead`; each once. Messages taken from the dead queue are acked only
//! after their copy is confirmed on the events exchange.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions};
use payhook_shared::amqp::{Broker, EventMessage, Outgoing};
use payhook_shared::domain::events::{self, ReplayTarget};
use sqlx::PgPool;

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const BATCH: usize = 100;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: usize,
    /// Names given on the command line that match no event.
    pub unknown: Vec<String>,
}

/// Replays the named events (payhook ids or gateway event ids).
pub async fn replay_named(
    pool: &PgPool,
    broker: &Broker,
    names: &[String],
    progress: bool,
) -> anyhow::Result<ReplayReport> {
    let (targets, unknown) = events::find_for_replay(pool, names).await?;
    let replayed = publish(pool, broker, &targets, progress).await?;
    Ok(ReplayReport { replayed, unknown })
}

/// Replays everything dead: the dead queue's messages and the rows marked `dead`.
pub async fn replay_dead(
    pool: &PgPool,
    broker: &Broker,
    progress: bool,
) -> anyhow::Result<ReplayReport> {
    let ch = broker.channel().await?;
    let queue = broker.names().dead_queue();
    // Only what is there now: an event that goes dead again while we replay must not loop.
    let waiting = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?
        .message_count();

    let mut targets: BTreeMap<i64, ReplayTarget> = BTreeMap::new();
    let mut taken = Vec::new();
    for _ in 0..waiting {
        let Some(m) = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        match serde_json::from_slice::<EventMessage>(&m.delivery.data) {
            Ok(msg) => {
                targets.entry(msg.id).or_insert(ReplayTarget {
                    id: msg.id,
                    provider: msg.provider,
                    external_id: msg.external_id,
                    event_type: msg.event_type,
                    status: String::new(),
                });
                taken.push(m.delivery);
            }
            Err(_) => {
                // Not an event message: leave it for a human (requeued; we stop at `waiting`).
                m.delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await?;
            }
        }
    }
    for t in events::dead_events(pool).await? {
        targets.entry(t.id).or_insert(t);
    }
    let targets: Vec<ReplayTarget> = targets.into_values().collect();
    let replayed = publish(pool, broker, &targets, progress).await?;
    // Their copies are confirmed on the events exchange: the dead copies can go.
    for d in taken {
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    Ok(ReplayReport {
        replayed,
        unknown: Vec::new(),
    })
}

async fn publish(
    pool: &PgPool,
    broker: &Broker,
    targets: &[ReplayTarget],
    progress: bool,
) -> anyhow::Result<usize> {
    let mut bar = Progress::new(targets.len(), progress && targets.len() > 1);
    let mut done = 0;
    for chunk in targets.chunks(BATCH) {
        let mut out = Vec::with_capacity(chunk.len());
        for t in chunk {
            events::reset_for_replay(pool, t.id).await?;
            let msg = EventMessage {
                id: t.id,
                provider: t.provider.clone(),
                external_id: t.external_id.clone(),
                event_type: t.event_type.clone(),
            };
            out.push(Outgoing::event(broker.names(), &msg));
        }
        broker.publish_confirmed(&out, CONFIRM_TIMEOUT).await?;
        done += chunk.len();
        bar.set(done);
    }
    bar.finish();
    Ok(done)
}

/// A progress bar on stderr, redrawn in place: `[#######.............] 120/400`.
struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize, on: bool) -> Self {
        Self { total, on }
    }

    fn set(&mut self, done: usize) {
        if !self.on {
            return;
        }
        const WIDTH: usize = 30;
        let filled = done * WIDTH / self.total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rreplaying [{}{}] {done}/{}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.total
        );
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.on {
            eprintln!();
        }
    }
}
