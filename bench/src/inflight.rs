//! What is still in flight in a payhook database and its broker: events not finished, the
//! depth of the events queue, the delay queues and the dead-letter queue, the domain outbox
//! not yet published. Queue depths come from passive declares (the names are DESIGN.md's,
//! "Broker"), so no management plugin is needed. The chaos run's drain and the benchmark's
//! backlog figures both read it from here.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::Serialize;
use sqlx::PgPool;

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
    let mut names = vec![format!("{prefix}.events"), format!("{prefix}.dead")];
    names.extend(RETRY_QUEUES.iter().map(|l| format!("{prefix}.retry.{l}")));
    let q = queues(amqp_url, &names).await?;
    Ok((q[0].0, q[2..].iter().map(|(m, _)| m).sum(), q[1].0))
}

/// (messages ready, consumers) of each queue in `names`, which must exist.
pub async fn queues(amqp_url: &str, names: &[String]) -> anyhow::Result<Vec<(u64, u32)>> {
    let conn = connect(amqp_url).await?;
    let ch = conn.create_channel().await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let q = ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        out.push((u64::from(q.message_count()), q.consumer_count()));
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(out)
}

/// Empties `name` (the peer's Celery queue between steps); a queue that does not exist yet is
/// empty already.
pub async fn purge(amqp_url: &str, name: &str) -> anyhow::Result<()> {
    let conn = connect(amqp_url).await?;
    let ch = conn.create_channel().await?;
    let _ = ch
        .queue_purge(name.into(), lapin::options::QueuePurgeOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// A connection to the broker; `amqp_url` may list a cluster's nodes (comma-separated), as
/// payhook's `AMQP_URL` does: the first that answers.
pub async fn connect(amqp_url: &str) -> anyhow::Result<Connection> {
    let mut last = anyhow::anyhow!("no AMQP URL");
    for url in amqp_url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(url, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => last = e.into(),
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}
