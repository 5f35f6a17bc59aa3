//! The realistic suite's steps, the same for payhook and the peer:
//!
//! - [`fill_and_drain`]: a backlog ingested at N connections with the worker stopped (that
//!   fill is the "ingest alone" measurement), then the one worker started and timed from
//!   consuming to nothing left for it;
//! - [`end_to_end`]: front and one worker running together under the closed loop, a warm-up,
//!   then a steady period counted on its own: accepted and processed rates, latency, the
//!   backlog at its start and end, CPU per processed event;
//! - [`settle`]: after each step, with the worker running, until nothing is left in flight
//!   (given up after a while without progress), so no step inherits another's work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::report::{DrainRow, EndToEndRow, IngestRow, Settled};
use super::system::{Backlog, System};
use crate::benchmark::common::{checkpoint, say};
use crate::human;
use crate::load::{self, Load, Stop, Window};
use crate::procs::CpuProbe;
use crate::workload::stream::Stream;

/// A drain that makes no progress for this long is given up (reported, and its leftovers
/// count as missing if they never finish).
const DRAIN_STALL: Duration = Duration::from_secs(60);

/// How the steps are run.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub connections: usize,
    pub warmup: Duration,
    pub steady: Duration,
    pub settle: Duration,
}

/// Ingests `stream` (a bounded one) with the worker stopped, then drains it with one worker.
pub async fn fill_and_drain<S: System>(
    sys: &mut S,
    stream: Arc<Stream>,
    plan: &StepPlan,
    probe: &CpuProbe,
) -> anyhow::Result<(IngestRow, DrainRow)> {
    let name = sys.name();
    sys.stop_worker().await?;
    sys.prepare_fill().await?;
    checkpoint(sys.pool()).await?;
    say(format!(
        "{name}: ingest alone, {} connections, filling the queue with the worker stopped",
        plan.connections
    ));
    let before = sys.progress().await?;
    let cpu0 = sys.cpu(probe);
    let filling = tokio::spawn(load::run(
        Load {
            addr: sys.addr(),
            connections: plan.connections,
            secrets: sys.secrets(),
            stop: Stop::Exhausted,
            window: None,
        },
        stream.clone(),
    ));
    let mut shown = Instant::now();
    while !filling.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            let (d, e) = stream.accepted_totals();
            say(format!(
                "  … {} deliveries ({} events) accepted",
                human(d),
                human(e)
            ));
        }
    }
    let r = filling.await?;
    let cpu = cpu0.seconds_until(&sys.cpu(probe));
    require_accepted(&r, &format!("{name}: filling the queue"))?;
    let ingest = IngestRow::new(name, plan.connections, &r, cpu);
    say(format!(
        "  {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms{}",
        ingest.rps,
        ingest.events_per_s,
        ingest.p50_ms,
        ingest.p99_ms,
        errors_note(&r)
    ));

    let stored = sys.progress().await?;
    let backlog = stored.active - before.active;
    checkpoint(sys.pool()).await?;
    say(format!(
        "{name}: drain, 1 worker, {} events queued",
        human(backlog.max(0) as u64)
    ));
    let spawned = Instant::now();
    sys.start_worker().await?;
    let ready = Instant::now();
    let cpu0 = sys.cpu(probe);
    let start = sys.progress().await?;
    let fast0 = sys.finished_fast().await;
    // The peer's progress is its SQL counter: polled less often, so that polling costs its
    // PostgreSQL little (payhook's comes from the worker's /metrics).
    let poll = if fast0.is_some() {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(250)
    };
    let mut last = (start.active, Instant::now());
    let mut shown = Instant::now();
    let mut counted = Instant::now();
    let mut stalled = false;
    let (end, done_at) = loop {
        tokio::time::sleep(poll).await;
        sys.check_alive()?;
        // The cheap counter says when to count in SQL; a retried event is counted twice
        // there, so SQL has the last word, at most every 100 ms (and every 2 s regardless,
        // for the progress line and the stall check).
        let maybe_done = match (fast0, sys.finished_fast().await) {
            (Some(a), Some(b)) => b - a >= start.active,
            _ => true,
        };
        let due = if maybe_done {
            counted.elapsed() >= Duration::from_millis(100).max(poll)
        } else {
            shown.elapsed() >= Duration::from_secs(2)
        };
        if !due {
            continue;
        }
        let now = Instant::now();
        counted = now;
        let p = sys.progress().await?;
        if p.active == 0 {
            break (p, now);
        }
        if p.active < last.0 {
            last = (p.active, now);
        } else if last.1.elapsed() > DRAIN_STALL {
            say(format!(
                "  drain stalled: {} events left for {} s",
                p.active,
                DRAIN_STALL.as_secs()
            ));
            stalled = true;
            break (p, now);
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            shown = Instant::now();
            say(format!(
                "  … {} left, {:.0} events/s processed so far",
                human(p.active as u64),
                (p.done - start.done) as f64 / ready.elapsed().as_secs_f64()
            ));
        }
    };
    let cpu = cpu0.seconds_until(&sys.cpu(probe));
    let seconds = done_at.duration_since(ready).as_secs_f64();
    let processed = (end.done - start.done).max(0) as u64;
    let mut drain = DrainRow {
        system: name.to_owned(),
        events: start.active.max(0) as u64,
        seconds,
        startup_s: ready.duration_since(spawned).as_secs_f64(),
        finished_per_s: (start.active - end.active) as f64 / seconds,
        processed_per_s: processed as f64 / seconds,
        processed,
        dead: (end.dead - start.dead).max(0) as u64,
        retrying_at_end: end.retrying.max(0) as u64,
        stalled,
        cpu_per_event: cpu.per_event_ms(processed),
        cpu,
        settled: Settled::default(),
    };
    say(format!(
        "  {:.0} events/s processed ({} in {:.2} s after a {:.2} s start); {} dead, {} retrying",
        drain.processed_per_s,
        human(processed),
        seconds,
        drain.startup_s,
        drain.dead,
        drain.retrying_at_end
    ));
    drain.settled = settle(sys, plan.settle).await?;
    sys.stop_worker().await?;
    Ok((ingest, drain))
}

/// Front and one worker together: `plan.warmup` of load, then `plan.steady` counted.
pub async fn end_to_end<S: System>(
    sys: &mut S,
    stream: Arc<Stream>,
    plan: &StepPlan,
    probe: &CpuProbe,
) -> anyhow::Result<EndToEndRow> {
    let name = sys.name();
    checkpoint(sys.pool()).await?;
    sys.start_worker().await?;
    say(format!(
        "{name}: end to end, front + 1 worker, {} connections, {} s warm-up + {} s steady",
        plan.connections,
        plan.warmup.as_secs(),
        plan.steady.as_secs()
    ));
    let from = Instant::now() + plan.warmup;
    let until = from + plan.steady;
    let running = tokio::spawn(load::run(
        Load {
            addr: sys.addr(),
            connections: plan.connections,
            secrets: sys.secrets(),
            stop: Stop::At(until),
            window: Some(Window { from, until }),
        },
        stream.clone(),
    ));
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = sys.cpu(probe);
    let p0 = sys.progress().await?;
    let b0 = Backlog {
        events: p0.active + p0.retrying,
        queue: sys.queue_depth().await,
    };
    let (_, e0) = stream.accepted_totals();
    let mut last_line = Instant::now();
    while Instant::now() + Duration::from_millis(100) < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sys.check_alive()?;
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            let (_, e) = stream.accepted_totals();
            say(format!(
                "  … {:.0} s: {} events accepted",
                from.elapsed().as_secs_f64(),
                human(e - e0)
            ));
        }
    }
    tokio::time::sleep_until(until.into()).await;
    let cpu = cpu0.seconds_until(&sys.cpu(probe));
    let p1 = sys.progress().await?;
    let b1 = Backlog {
        events: p1.active + p1.retrying,
        queue: sys.queue_depth().await,
    };
    let r = running.await?;
    let processed = (p1.done - p0.done).max(0) as u64;
    let mut row = EndToEndRow::new(name, plan, &r, processed, (p1.dead - p0.dead).max(0) as u64);
    row.backlog_start = b0;
    row.backlog_end = b1;
    // Growth beyond a small noise band (the closed loop keeps up to one batch in flight).
    let slack = 100.0_f64.max(0.02 * r.events as f64);
    row.backlog_grew = (b1.events - b0.events) as f64 > slack;
    row.backlog_growth_per_s = (b1.events - b0.events) as f64 / plan.steady.as_secs_f64();
    row.sustained_per_s = if row.backlog_grew {
        row.processed_per_s
    } else {
        row.processed_per_s.min(row.accepted_events_per_s)
    };
    row.cpu_per_event = cpu.per_event_ms(processed);
    row.cpu = cpu;
    say(format!(
        "  {:.0} req/s ({:.0} events/s) accepted, {:.0} events/s processed, p50 {:.2} ms, \
         p99 {:.2} ms; backlog {} → {} events{}{}",
        row.accepted_rps,
        row.accepted_events_per_s,
        row.processed_per_s,
        row.p50_ms,
        row.p99_ms,
        b0.events,
        b1.events,
        if row.backlog_grew {
            " (GROWING: the processed rate is the sustainable one)"
        } else {
            ""
        },
        errors_note(&r)
    ));
    row.settled = settle(sys, plan.settle).await?;
    sys.stop_worker().await?;
    Ok(row)
}

/// With the worker running, waits until nothing is in flight. A backlog that still shrinks is
/// waited for (an end-to-end step can leave minutes of work); the wait gives up once nothing
/// has finished for `limit` (events parked for a long retry, or stuck).
pub async fn settle<S: System>(sys: &mut S, limit: Duration) -> anyhow::Result<Settled> {
    sys.start_worker().await?;
    let started = Instant::now();
    let mut shown = Instant::now();
    let mut best = (i64::MAX, Instant::now());
    loop {
        sys.check_alive()?;
        let p = sys.progress().await?;
        let queue = sys.queue_depth().await;
        let left = p.active + p.retrying;
        if left == 0 && queue == 0 {
            return Ok(Settled {
                seconds: started.elapsed().as_secs_f64(),
                left: 0,
                settled: true,
            });
        }
        if left < best.0 {
            best = (left, Instant::now());
        } else if best.1.elapsed() > limit {
            say(format!(
                "  {}: {left} event(s) unfinished, none finished for {} s; moving on (they \
                 count as missing if they never finish)",
                sys.name(),
                limit.as_secs()
            ));
            return Ok(Settled {
                seconds: started.elapsed().as_secs_f64(),
                left: left.max(0) as u64,
                settled: false,
            });
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            shown = Instant::now();
            say(format!(
                "  {}: settling, {} active + {} retrying events, {} messages queued",
                sys.name(),
                p.active,
                p.retrying,
                queue
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn errors_note(r: &load::LoadResult) -> String {
    if r.errors == 0 {
        return String::new();
    }
    format!(
        "; {} ERRORS (first: {})",
        r.errors,
        r.first_error.as_deref().unwrap_or("?")
    )
}

/// Fails a step whose load could not even start (every connection refused).
fn require_accepted(r: &load::LoadResult, what: &str) -> anyhow::Result<()> {
    if r.accepted_all == 0 {
        bail!(
            "{what}: nothing was accepted ({})",
            r.first_error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(())
}
