//! Issue 11's targets, each met or not with its measured ratio, and, where a target is out of
//! reach, what the CPU per event allows on this machine: with C ms of CPU per processed event
//! in all and N cores, no configuration processes more than N × 1000 / C events per second,
//! so a target above that ceiling needs the cost per event to fall, and the per-component
//! figures say which component's.

use super::report::{parts_sum, DrainRow, StepSet, Verdict};
use crate::benchmark::common::Target;
use crate::human;

const NEEDS_PEER: &str = "run with --peer ../shared/peers/flask_celery";

/// The targets, and the reach lines.
pub fn evaluate(
    main: &StepSet,
    poisoned: &DrainRow,
    side: Option<&(StepSet, StepSet)>,
    verdict: &Verdict,
    nproc: usize,
) -> (Vec<Target>, Vec<String>) {
    let v = &verdict.payhook;
    let mut targets = vec![Target::at_most(
        "0 accepted events dead or missing (payhook, every step)",
        (v.dead + v.missing) as f64,
        0.0,
        format!(
            "{} dead, {} missing of {} accepted",
            v.dead,
            v.missing,
            human(v.accepted_events)
        ),
    )];
    // A failing event costs only itself: the poisoned backlog is finished (processed or dead)
    // at nearly the clean backlog's rate.
    let clean = &main.drain;
    let p = poisoned.finished_per_s / clean.finished_per_s;
    targets.push(Target::at_least(
        "drain with 10 % of events failing permanently within 15 % of the clean drain",
        p,
        0.85,
        format!(
            "{:.2} × ({:.0} vs {:.0} events finished/s; {} dead)",
            p, poisoned.finished_per_s, clean.finished_per_s, poisoned.dead
        ),
    ));
    let mut reach = Vec::new();
    match side {
        Some((p, q)) => {
            let e = p.e2e.sustained_per_s / q.e2e.sustained_per_s;
            targets.push(Target::at_least(
                "end-to-end sustained ≥ 10 × peer (GoCardless mix, 1 worker, 32 conns)",
                e,
                10.0,
                format!(
                    "{:.2} × ({:.0} vs {:.0} events/s)",
                    e, p.e2e.sustained_per_s, q.e2e.sustained_per_s
                ),
            ));
            let c = p.e2e.cpu_per_event.total / q.e2e.cpu_per_event.total;
            let (ps, qs) = (parts_sum(p), parts_sum(q));
            targets.push(Target::at_most(
                "total CPU per processed event ≤ 1/10 of the peer's (end to end)",
                c,
                0.1,
                format!(
                    "{:.3} × ({:.2} vs {:.2} ms; ingest alone + drain: {:.2} vs {:.2} ms, {:.3} ×)",
                    c,
                    p.e2e.cpu_per_event.total,
                    q.e2e.cpu_per_event.total,
                    ps.total,
                    qs.total,
                    ps.total / qs.total
                ),
            ));
            let d = p.drain.processed_per_s / q.drain.processed_per_s;
            targets.push(Target::at_least(
                "drain from a full queue, 1 worker, ≥ 10 × peer",
                d,
                10.0,
                format!(
                    "{:.2} × ({:.0} vs {:.0} events/s)",
                    d, p.drain.processed_per_s, q.drain.processed_per_s
                ),
            ));
            // End to end, an event costs its ingest and its processing: the parts measured
            // alone (the end-to-end figure charges a growing backlog's ingest to the events
            // processed, so it overstates the cost while the backlog grows).
            for (what, ours, theirs) in [
                ("end to end (ingest alone + drain per event)", &ps, &qs),
                ("drain", &p.drain.cpu_per_event, &q.drain.cpu_per_event),
            ] {
                let rate = if what.starts_with("drain") {
                    (p.drain.processed_per_s, q.drain.processed_per_s)
                } else {
                    (p.e2e.sustained_per_s, q.e2e.sustained_per_s)
                };
                reach.push(ceiling(what, ours, theirs, rate, nproc));
            }
        }
        None => {
            for t in [
                "end-to-end sustained ≥ 10 × peer",
                "total CPU per processed event ≤ 1/10 of the peer's",
                "drain from a full queue, 1 worker, ≥ 10 × peer",
            ] {
                targets.push(Target::unmeasured(t, NEEDS_PEER.into()));
            }
        }
    }
    let e = &main.e2e;
    targets.push(Target::at_most(
        "p99 at 32 connections with the worker running ≤ 20 ms",
        e.p99_ms,
        20.0,
        format!(
            "{:.2} ms ({} events/s sustained)",
            e.p99_ms,
            human(e.sustained_per_s as u64)
        ),
    ));
    let i = &main.ingest;
    targets.push(Target::at_most(
        "ingest alone, p99 at 32 connections ≤ 10 ms",
        i.p99_ms,
        10.0,
        format!("{:.2} ms ({} req/s)", i.p99_ms, human(i.rps as u64)),
    ));
    (targets, reach)
}

/// One reach line: the CPU ceiling at payhook's cost per event against 10 × the peer's rate.
fn ceiling(
    what: &str,
    ours: &crate::procs::CpuPerEvent,
    theirs: &crate::procs::CpuPerEvent,
    (our_rate, their_rate): (f64, f64),
    nproc: usize,
) -> String {
    let budget = nproc as f64 * 1000.0;
    let ceiling = budget / ours.total;
    let needed = 10.0 * their_rate;
    let parts = [
        ("ingest", ours.ingest),
        ("the worker", ours.workers),
        ("PostgreSQL", ours.postgres),
        ("RabbitMQ", ours.rabbitmq),
    ];
    let (top, top_ms) = parts
        .iter()
        .copied()
        .fold(("", 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let verdict = if needed > ceiling {
        format!(
            "**out of reach at this cost**: 10 × the peer ({} events/s) would need at most \
             {:.2} ms per event; {top} alone takes {top_ms:.2} ms ({:.0} % of payhook's)",
            human(needed as u64),
            budget / needed,
            top_ms / ours.total * 100.0
        )
    } else {
        format!(
            "within the CPU budget: 10 × the peer is {} events/s; the measured {} events/s is \
             bounded by something else than CPU (latency, batching, one worker)",
            human(needed as u64),
            human(our_rate as u64)
        )
    };
    format!(
        "{what}: payhook spends {:.2} ms of CPU per processed event in all (ingest {:.2}, worker \
         {:.2}, PostgreSQL {:.2}, RabbitMQ {:.2}; the peer {:.2}), so {nproc} cores process at \
         most {} events/s; {verdict}.",
        ours.total,
        ours.ingest,
        ours.workers,
        ours.postgres,
        ours.rabbitmq,
        theirs.total,
        human(ceiling as u64)
    )
}
