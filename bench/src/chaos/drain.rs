//! The end of the run: wait until nothing is left in flight. Every stored event `processed`
//! (or `dead`/`ignored`), the events queue and every retry queue empty, the domain outbox
//! fully published — with a time limit that fails the run. What is in flight is read by
//! [`crate::inflight`].
//!
//! A stall ends the wait early: events still unfinished while every queue has been empty for
//! [`STALL`] can never finish (no message is left to carry them; the relay only republishes
//! events never published), so there is no point waiting out the whole time limit.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;

use super::say;
use super::stack::Stack;
use crate::inflight::{backlog, Backlog};

/// How long unfinished events may sit with every queue empty before the drain gives up.
pub const STALL: Duration = Duration::from_secs(120);

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
