//! Replay: put events back in line (status `published`, attempts from zero) and publish them
//! to `<prefix>.events` again, with confirms. Replaying is always safe: an event already
//! processed is skipped by the worker. Used by `payhook-worker replay` and the admin API.
//!
//! [`replay_dead`] replays what is in `<prefix>.dead` (events that went dead, and poison
//! messages RabbitMQ dead-lettered after the delivery limit, whose rows never said `dead`) and
//! every event whose row says `dead`; each once. Messages taken from the dead queue are acked
//! only after their copy is confirmed on the events exchange, and put back if it is not.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicRejectOptions};
use sqlx::PgPool;

use crate::amqp::{Broker, EventMessage, Outgoing, PublishError};
use crate::domain::events::{self, ReplayTarget};
use crate::lookup::{self, EventRef};

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const BATCH: usize = 100;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub replayed: usize,
    /// Names given that match no event.
    pub unknown: Vec<String>,
    /// Names that are a gateway event id of several providers, each with what it names
    /// ([`EventRef::ambiguity`]); nothing is replayed for them.
    pub ambiguous: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("RabbitMQ: {0}")]
    Broker(#[from] PublishError),
}

impl From<lapin::Error> for ReplayError {
    fn from(e: lapin::Error) -> Self {
        Self::Broker(PublishError::Unavailable(e.to_string()))
    }
}

/// Called after each confirmed batch with (done, total).
pub type Progress<'a> = &'a mut (dyn FnMut(usize, usize) + Send);

/// Replays the named events (payhook ids or gateway event ids, resolved as
/// [`lookup::resolve_event`] does, so the CLI and the admin API agree on what a name means).
pub async fn replay_named(
    pool: &PgPool,
    broker: &Broker,
    names: &[String],
    progress: Progress<'_>,
) -> Result<ReplayReport, ReplayError> {
    replay_named_of(pool, broker, names, None, progress).await
}

/// [`replay_named`], the gateway ids read as `provider`'s when it is given.
pub async fn replay_named_of(
    pool: &PgPool,
    broker: &Broker,
    names: &[String],
    provider: Option<&str>,
    progress: Progress<'_>,
) -> Result<ReplayReport, ReplayError> {
    let mut ids = Vec::new();
    let mut report = ReplayReport::default();
    for name in names {
        match lookup::resolve_event(pool, name, provider).await? {
            EventRef::One(id) if !ids.contains(&id) => ids.push(id),
            EventRef::One(_) => {}
            EventRef::None => report.unknown.push(name.clone()),
            EventRef::Ambiguous(c) => report.ambiguous.push(EventRef::ambiguity(name, &c)),
        }
    }
    let targets: Vec<ReplayTarget> = sqlx::query_as(
        "SELECT id, provider, external_id, event_type, status FROM webhook_events
         WHERE id = ANY($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    report.replayed = publish(pool, broker, &targets, progress).await?;
    Ok(report)
}

/// Replays one event by payhook's id; `None` when there is no such event.
pub async fn replay_event(
    pool: &PgPool,
    broker: &Broker,
    id: i64,
) -> Result<Option<ReplayTarget>, ReplayError> {
    let target: Option<ReplayTarget> = sqlx::query_as(
        "SELECT id, provider, external_id, event_type, status FROM webhook_events WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(target) = target else {
        return Ok(None);
    };
    publish(pool, broker, std::slice::from_ref(&target), &mut |_, _| {}).await?;
    Ok(Some(target))
}

/// Replays everything dead: the dead queue's messages and the rows marked `dead`.
pub async fn replay_dead(
    pool: &PgPool,
    broker: &Broker,
    progress: Progress<'_>,
) -> Result<ReplayReport, ReplayError> {
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
    let result = async {
        for t in events::dead_events(pool).await? {
            targets.entry(t.id).or_insert(t);
        }
        let targets: Vec<ReplayTarget> = targets.into_values().collect();
        publish(pool, broker, &targets, progress).await
    }
    .await;
    match result {
        Ok(replayed) => {
            // Their copies are confirmed on the events exchange: the dead copies can go.
            for d in taken {
                d.acker.ack(BasicAckOptions::default()).await?;
            }
            Ok(ReplayReport {
                replayed,
                ..Default::default()
            })
        }
        Err(e) => {
            // Back in the dead queue for the next try (a long-lived channel, as in ingest,
            // would otherwise hold them unacked until it closes).
            for d in taken {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
            Err(e)
        }
    }
}

async fn publish(
    pool: &PgPool,
    broker: &Broker,
    targets: &[ReplayTarget],
    progress: Progress<'_>,
) -> Result<usize, ReplayError> {
    let mut done = 0;
    for chunk in targets.chunks(BATCH) {
        let mut out = Vec::with_capacity(chunk.len());
        let mut before = Vec::with_capacity(chunk.len());
        for t in chunk {
            if let Some(old) = reset(pool, t.id).await? {
                before.push((t.id, old));
            }
            let msg = EventMessage {
                id: t.id,
                provider: t.provider.clone(),
                external_id: t.external_id.clone(),
                event_type: t.event_type.clone(),
            };
            out.push(Outgoing::event(broker.names(), &msg));
        }
        if let Err(e) = broker.publish_confirmed(&out, CONFIRM_TIMEOUT).await {
            // Not published after all: the rows say what they said before (a dead event stays
            // visible as dead), unless a worker got to one meanwhile.
            for (id, (status, attempts)) in before {
                let _ = sqlx::query(
                    "UPDATE webhook_events SET status = $2, attempts = $3
                     WHERE id = $1 AND status = 'published'",
                )
                .bind(id)
                .bind(status)
                .bind(attempts)
                .execute(pool)
                .await;
            }
            return Err(e.into());
        }
        done += chunk.len();
        progress(done, targets.len());
    }
    Ok(done)
}

/// Puts an event back in line before it is published again: not done yet, attempts from zero
/// (so it gets every retry again). Returns its status and attempts before, `None` when it was
/// left alone (processed or ignored: the worker will skip it).
async fn reset(pool: &PgPool, id: i64) -> Result<Option<(String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_events e SET status = 'published', attempts = 0, published_at = now()
         FROM (SELECT id, status, attempts FROM webhook_events WHERE id = $1 FOR UPDATE) old
         WHERE e.id = old.id AND old.status NOT IN ('processed', 'ignored')
         RETURNING old.status, old.attempts",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}
