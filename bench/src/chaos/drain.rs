//! The end of the run: wait until nothing is left in flight. Every stored event `processed`
//! (or `dead`/`ignored`), the events queue and every retry queue empty, the domain outbox
//! fully published — with a time limit that fails the run. Queue depths come from passive
//! declares (the names are DESIGN.md's, "Broker"), so no management plugin is needed.
//!
//! A stall ends the wait early: events still unfinished while every queue has been empty for
//! [`STALL`] can never finish (no message is left to carry them; the relay only republishes
//! events never published), so there is no point waiting out the whole time limit.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use sqlx::PgPool;

use super::say;
use super::stack::Stack;

/// How long unfinished events may sit with every queue empty before the drain gives up.
pub const STALL: Duration = Duration::from_secs(120);

/// The delay queues' suffixes (DESIGN.md "Broker": 1 s, 5 s, 30 s, 2 min, 10 min, 1 h).
const RETRY_QUEUES: [&str; 6] = ["1s", "5s", "30s", "2m", "10m", "1h"];

/// What was still in flight at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Events `received`, `published` or `retrying`.
    pub events_unfinished: i64,
    /// Messages ready in `<prefix>.events`.
    pub events_queue: u64,
    /// Messages waiting in the delay queues.
    pub retry_queues: u64,
    /// Messages in `<prefix>.dead`.
    pub dead_queue: u64,
    /// `domain_outbox` rows not yet published.
    pub outbox_unpublished: i64,
    /// False when RabbitMQ could not be asked (counts as not drained).
    pub queues_read: bool,
}

impl Backlog {
    pub fn drained(&self) -> bool {
        self.queues_read
            && self.events_unfinished == 0
            && self.events_queue == 0
            && self.retry_queues == 0
            && self.outbox_unpublished == 0
    }
}

/// How the drain went.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub drained: bool,
    /// From the last acknowledgement to drained (or to giving up), seconds.
    pub seconds: f64,
    /// Why the wait ended without draining (time limit, or a stall).
    pub gave_up: Option<String>,
    /// What was left at the end (all zero when drained).
    pub left: Backlog,
}

pub async fn wait(
    pool: &PgPool,
    amqp_url: &str,
    prefix: &str,
    stack: &mut Stack,
    timeout: Duration,
) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let mut shown = Instant::now();
    // Since when (and at what count) unfinished events have sat with every queue empty.
    let mut stalled: Option<(Instant, i64)> = None;
    loop {
        stack.restart_crashed()?;
        let left = backlog(pool, amqp_url, prefix).await;
        let idle = left.queues_read
            && left.events_unfinished > 0
            && left.events_queue == 0
            && left.retry_queues == 0;
        stalled = match stalled {
            Some((since, n)) if idle && n == left.events_unfinished => Some((since, n)),
            _ if idle => Some((Instant::now(), left.events_unfinished)),
            _ => None,
        };
        let gave_up = if left.drained() {
            None
        } else if started.elapsed() > timeout {
            Some(format!("time limit of {} s reached", timeout.as_secs()))
        } else {
            stalled
                .filter(|(since, _)| since.elapsed() > STALL)
                .map(|(_, n)| {
                    format!(
                        "stalled: {n} event(s) unfinished with every queue empty for {} s",
                        STALL.as_secs()
                    )
                })
        };
        if left.drained() || gave_up.is_some() {
            return Ok(Drain {
                drained: left.drained(),
                seconds: started.elapsed().as_secs_f64(),
                gave_up,
                left,
            });
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            say(format!(
                "drain {:>5.0} s: {} events unfinished, queues: events {} retry {} dead {}, \
                 outbox {} unpublished",
                started.elapsed().as_secs_f64(),
                left.events_unfinished,
                left.events_queue,
                left.retry_queues,
                left.dead_queue,
                left.outbox_unpublished
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What is in flight now (a database error reads as "everything unfinished": try again).
pub async fn backlog(pool: &PgPool, amqp_url: &str, prefix: &str) -> Backlog {
    let mut b = Backlog {
        events_unfinished: i64::MAX,
        outbox_unpublished: i64::MAX,
        ..Backlog::default()
    };
    if let Ok((events, outbox)) = sqlx::query_as::<_, (i64, i64)>(
        "SELECT (SELECT count(*) FROM webhook_events
                  WHERE status IN ('received', 'published', 'retrying')),
                (SELECT count(*) FROM domain_outbox WHERE published_at IS NULL)",
    )
    .fetch_one(pool)
    .await
    {
        b.events_unfinished = events;
        b.outbox_unpublished = outbox;
    }
    if let Ok((events, retry, dead)) = queue_depths(amqp_url, prefix).await {
        b.events_queue = events;
        b.retry_queues = retry;
        b.dead_queue = dead;
        b.queues_read = true;
    }
    b
}

/// (events queue, all retry queues, dead queue): messages ready in each.
async fn queue_depths(amqp_url: &str, prefix: &str) -> anyhow::Result<(u64, u64, u64)> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(amqp_url, ConnectionProperties::default()),
    )
    .await??;
    let ch = conn.create_channel().await?;
    let depth = async |queue: String| -> anyhow::Result<u64> {
        let q = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(u64::from(q.message_count()))
    };
    let events = depth(format!("{prefix}.events")).await?;
    let mut retry = 0;
    for label in RETRY_QUEUES {
        retry += depth(format!("{prefix}.retry.{label}")).await?;
    }
    let dead = depth(format!("{prefix}.dead")).await?;
    let _ = conn.close(200, "done".into()).await;
    Ok((events, retry, dead))
}
