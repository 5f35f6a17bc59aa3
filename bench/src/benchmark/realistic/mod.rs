//! The default suite (issue 11, "a benchmark that cannot flatter"): payhook under the traffic
//! of a real installation that has only its webhook secrets — the realistic mix of
//! [`crate::workload`] (all four gateways, GoCardless as accounts, lifecycles interleaved and
//! out of order, payments before their mandate, verbatim re-sends; no API token) — measured
//! three ways, each on a fresh stream of the mix:
//!
//! 1. ingest alone: the drain's backlog ingested at 32 connections with the worker stopped;
//! 2. drain: that backlog, one worker, timed from consuming to empty;
//! 3. end to end: ingest and one worker together at 32 connections, a warm-up, then a steady
//!    period: accepted and processed rates, latency, the backlog at its start and end, CPU
//!    seconds per processed event for ingest, the worker, PostgreSQL and RabbitMQ.
//!
//! With `--peer DIR` the same three steps run for payhook and the Flask + Celery peer on the
//! GoCardless mix (byte-identical deliveries for both), interleaved, and the report puts every
//! ratio beside the figures. At the end, after everything settled, the verdict: accepted
//! events dead or missing (and the chaos run's checks on the same model); any of those, or a
//! refused delivery, fails the run. Targets are reported, never asserted.
//!
//! Then, on a database of its own, [`retention`]: old rows pruned by `payhook-worker prune`
//! while ingest is measured against the same load without pruning (issue 15).
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`system`] | a system under test as the steps see it; payhook's processes |
//! | [`peer`] | the Flask + gunicorn + Celery peer's processes and counters |
//! | [`steps`] | fill + drain, end to end, settle: the same for both |
//! | [`targets`] | issue 11's targets, and what the CPU per event allows on this machine |
//! | [`report`] | the rows, the verdict, the markdown |
//! | [`retention`] | issue 15: ingest while `payhook-worker prune` deletes old rows, against ingest without |

mod peer;
mod report;
mod retention;
mod steps;
mod system;
mod targets;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use super::common::{self, loadavg, say, Machine};
use super::{Args, WorkloadArg};
use crate::human;
use crate::load::Gateway;
use crate::procs::{self, CpuProbe};
use crate::verdict;
use crate::workload::stream::{self, Stream};
use crate::workload::{Effect, Mix, Spec, Target};
use peer::{Peer, PeerConfig};
use report::{DeadByType, PayhookVerdict, PeerVerdict, Report, StepSet, Verdict};
use steps::StepPlan;
use system::{Payhook, System};

/// Events per generated chunk of an endless stream: long enough for lifecycles to interleave
/// and payments to overtake their mandate across the chunk.
const CHUNK_EVENTS: usize = 5000;

/// The streams of one mix, made alike for payhook and the peer.
struct Streams {
    fill: Arc<Stream>,
    e2e: Arc<Stream>,
}

/// Where the end-to-end stream's numeric ids start: far above any fill's.
const E2E_ID_BASE: u64 = 50_000_000;

/// Where the poisoned drain's numeric ids start: apart from the other streams'.
const POISONED_ID_BASE: u64 = 80_000_000;

/// A backlog of the mix in which one event in ten fails permanently (issue 11: "a drain with
/// 10 % of events failing permanently stays within 15 % of the clean drain").
fn poisoned_fill(
    tag: &str,
    mix: Mix,
    seed: u64,
    drain_events: u64,
    duplicates: f64,
) -> Arc<Stream> {
    let events = drain_events as usize * 9 / 10;
    Stream::new(
        Spec {
            tag: format!("{tag}p"),
            events,
            duplicates,
            poison: (drain_events as usize).saturating_sub(events),
            id_base: POISONED_ID_BASE,
            mix,
        },
        seed ^ 0xBAD,
        Some(1),
    )
}

fn streams(tag: &str, mix: Mix, seed: u64, drain_events: u64, duplicates: f64) -> Streams {
    let spec = |suffix: &str, events: usize, id_base: u64| Spec {
        tag: format!("{tag}{suffix}"),
        events,
        duplicates,
        poison: 0,
        id_base,
        mix,
    };
    let m = match mix {
        Mix::GoCardless => "g",
        _ => "r",
    };
    Streams {
        fill: Stream::new(
            spec(&format!("{m}d"), drain_events as usize, 0),
            seed,
            Some(1),
        ),
        e2e: Stream::new(
            spec(&format!("{m}e"), CHUNK_EVENTS, E2E_ID_BASE),
            seed ^ 0xE2E,
            None,
        ),
    }
}

async fn step_set<S: System>(
    sys: &mut S,
    mix: Mix,
    s: &Streams,
    plan: &StepPlan,
    probe: &CpuProbe,
) -> anyhow::Result<StepSet> {
    let (ingest, drain) = steps::fill_and_drain(sys, s.fill.clone(), plan, probe).await?;
    let e2e = steps::end_to_end(sys, s.e2e.clone(), plan, probe).await?;
    Ok(StepSet {
        system: sys.name().to_owned(),
        mix,
        ingest,
        drain,
        e2e,
    })
}

/// Where the CPU breakdown finds PostgreSQL and RabbitMQ.
fn probe(args: &Args) -> CpuProbe {
    let probe = CpuProbe {
        postmaster: args
            .pg_data
            .as_ref()
            .and_then(|d| procs::pid_from_file(&d.join("postmaster.pid"))),
        rabbit: args
            .rabbit_pid_file
            .as_deref()
            .and_then(procs::pid_from_file),
    };
    if probe.postmaster.is_none() || probe.rabbit.is_none() {
        say("no PostgreSQL data directory or RabbitMQ pid file: their CPU reads 0 (use scripts/bench)");
    }
    probe
}

/// Runs the suite (with `--prune-only`, the retention step alone); whether the verdict passed.
pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let quick = args.quick;
    let plan = StepPlan {
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup_secs.unwrap_or(if quick { 1 } else { 5 })),
        steady: Duration::from_secs(args.steady_secs.unwrap_or(if quick { 5 } else { 30 })),
        settle: Duration::from_secs(args.settle_secs),
    };
    let drain_events = args
        .drain_events
        .unwrap_or(if quick { 3_000 } else { 30_000 });
    if plan.connections == 0 || plan.steady.is_zero() || drain_events == 0 {
        bail!("--connections, --steady-secs and --drain-events must be at least 1");
    }
    for bin in ["payhook-ingest", "payhook-worker"] {
        if !args.bin_dir.join(bin).is_file() {
            bail!(
                "{} not found; build it first (cargo build --release -p {bin})",
                args.bin_dir.join(bin).display()
            );
        }
    }
    std::fs::create_dir_all(&args.log_dir)?;
    if args.prune_only {
        return retention::run_alone(args, &probe(args)).await;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let unix = now.as_secs();
    let seed = args.seed.unwrap_or(now.as_nanos() as u64 % 1_000_000_007);
    let tag = format!("{unix:x}");
    let main_mix = match args.workload {
        WorkloadArg::GoCardless => Mix::GoCardless,
        _ => Mix::Realistic,
    };
    say(format!(
        "realistic suite: {}, seed {seed} (replay with --seed {seed}){}",
        report::mix_label(main_mix),
        if args.peer.is_some() {
            "; with the peer side by side on the GoCardless mix"
        } else {
            ""
        }
    ));

    let db_name = format!("payhook_bench_{unix}");
    let (db_url, pg_version) = common::create_database(&args.pg_url, &db_name).await?;
    say(format!(
        "database {db_name}, AMQP prefix bench{unix}, logs in {}",
        args.log_dir.display()
    ));
    let mut payhook = Payhook::start(
        args.bin_dir.clone(),
        args.log_dir.clone(),
        db_url,
        args.amqp_url.clone(),
        format!("bench{unix}"),
        args.reconcile_interval.clone(),
    )
    .await?;
    say(format!("payhook-ingest ready on {}", payhook.ingest_addr));
    let probe = probe(args);
    let load_start = loadavg();

    // payhook alone on the chosen mix.
    let main_streams = streams(&tag, main_mix, seed, drain_events, args.duplicates);
    let main = step_set(&mut payhook, main_mix, &main_streams, &plan, &probe).await?;
    let poisoned = poisoned_fill(&tag, main_mix, seed, drain_events, args.duplicates);
    say("drain again, one event in ten failing permanently");
    let (_, poisoned_drain) =
        steps::fill_and_drain(&mut payhook, poisoned.clone(), &plan, &probe).await?;
    let mut payhook_streams = vec![main_streams];

    // Side by side on the GoCardless mix, interleaved step by step.
    let mut side = None;
    let mut peer_records = None;
    let mut peer_streams = None;
    let mut peer_db = None;
    if let Some(dir) = &args.peer {
        let mut peer = Peer::start(PeerConfig {
            dir: dir.clone(),
            venv: args.peer_venv.clone(),
            web_workers: args.peer_web_workers,
            celery_concurrency: args.peer_celery_concurrency,
            log_dir: args.log_dir.clone(),
            pg_url: args.pg_url.clone(),
            db_name: format!("peer_{unix}"),
            amqp_url: args.amqp_url.clone(),
        })
        .await
        .context("starting the peer")?;
        peer_db = Some(format!("peer_{unix}"));
        say(format!(
            "peer web app ready on {} (DSN {})",
            peer.addr(),
            peer.pg_dsn
        ));
        let gc = streams(&tag, Mix::GoCardless, seed, drain_events, args.duplicates);
        let theirs = streams(&tag, Mix::GoCardless, seed, drain_events, args.duplicates);
        let ours = if main_mix == Mix::GoCardless {
            None
        } else {
            Some(gc)
        };
        let outcome = async {
            let (pi, pd, pe);
            if let Some(o) = &ours {
                let (i, d) =
                    steps::fill_and_drain(&mut payhook, o.fill.clone(), &plan, &probe).await?;
                (pi, pd) = (Some(i), Some(d));
            } else {
                (pi, pd) = (None, None);
            }
            let (qi, qd) =
                steps::fill_and_drain(&mut peer, theirs.fill.clone(), &plan, &probe).await?;
            if let Some(o) = &ours {
                pe = Some(steps::end_to_end(&mut payhook, o.e2e.clone(), &plan, &probe).await?);
            } else {
                pe = None;
            }
            let qe = steps::end_to_end(&mut peer, theirs.e2e.clone(), &plan, &probe).await?;
            let p = match (pi, pd, pe) {
                (Some(ingest), Some(drain), Some(e2e)) => StepSet {
                    system: "payhook".into(),
                    mix: Mix::GoCardless,
                    ingest,
                    drain,
                    e2e,
                },
                _ => main.clone(),
            };
            let q = StepSet {
                system: "peer".into(),
                mix: Mix::GoCardless,
                ingest: qi,
                drain: qd,
                e2e: qe,
            };
            anyhow::Ok((p, q))
        }
        .await;
        let (p, q) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = peer.stop().await;
                return Err(e);
            }
        };
        side = Some((p, q));
        peer_records = Some(peer.records().await?);
        peer.stop().await?;
        if let Some(o) = ours {
            payhook_streams.push(o);
        }
        peer_streams = Some(theirs);
    }

    // The verdict, once everything has settled (each step ended settling; a last look).
    let left = steps::settle(&mut payhook, plan.settle).await?;
    if !left.settled {
        say(format!("{} payhook event(s) never finished", left.left));
    }
    let mut payhook_verdict = payhook_verdict(&payhook, &payhook_streams, &poisoned).await?;
    payhook_verdict.first_error = std::iter::once(&main)
        .chain(side.as_ref().map(|(p, _)| p))
        .find_map(StepSet::first_error);
    let peer_verdict = match (peer_records, &peer_streams) {
        (Some(records), Some(s)) => {
            let mut v = peer_verdict(&records, s);
            v.first_error = side.as_ref().and_then(|(_, q)| q.first_error());
            Some(v)
        }
        _ => None,
    };
    let verdict = Verdict {
        ok: payhook_verdict.ok && peer_verdict.as_ref().is_none_or(|p| p.ok),
        payhook: payhook_verdict,
        peer: peer_verdict,
    };
    // The suite's processes stop before the retention step, which runs its own.
    payhook.stop().await?;
    // A failed retention step still leaves the suite's report to print; its error ends the
    // run afterwards.
    let (retention, retention_error) = match retention::Plan::new(args) {
        Some(plan) => {
            let suite = retention::Suite {
                args,
                mix: main_mix,
                seed,
                unix,
                probe: &probe,
            };
            match retention::step(&suite, &plan).await {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            }
        }
        None => (None, None),
    };
    let machine = Machine::read(
        pg_version,
        args.rabbitmq_version.clone(),
        load_start,
        loadavg(),
        common::settings(),
    );
    let (targets, reach) = targets::evaluate(
        &main,
        &poisoned_drain,
        side.as_ref(),
        &verdict,
        machine.nproc,
    );
    let report = Report {
        mode: if quick { "quick" } else { "full" }.into(),
        seed,
        machine,
        connections: plan.connections,
        warmup_s: plan.warmup.as_secs_f64(),
        steady_s: plan.steady.as_secs_f64(),
        drain_events,
        duplicates: args.duplicates,
        reconcile_interval: args.reconcile_interval.clone(),
        main,
        poisoned_drain,
        side_by_side: side,
        verdict,
        targets,
        reach,
        retention,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        say(format!("JSON written to {}", path.display()));
    }
    let ok = report.verdict.ok;
    for db in std::iter::once(db_name).chain(peer_db) {
        if ok && !args.keep_db {
            common::drop_database(&args.pg_url, &db).await?;
        } else {
            say(format!("database {db} kept"));
        }
    }
    say(format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    if let Some(e) = retention_error {
        return Err(e.context("the retention step"));
    }
    Ok(ok && report.retention.as_ref().is_none_or(|r| r.ok))
}

/// payhook's verdict over everything its streams sent: the model joined, then the checks.
/// The poisoned drain's poison events must be dead; everything else processed.
async fn payhook_verdict(
    payhook: &Payhook,
    streams: &[Streams],
    poisoned: &Stream,
) -> anyhow::Result<PayhookVerdict> {
    let all: Vec<&Stream> = streams
        .iter()
        .flat_map(|s| [s.fill.as_ref(), s.e2e.as_ref()])
        .chain(std::iter::once(poisoned))
        .collect();
    let (model, acked) = stream::model(&all);
    let (checks, _) = verdict::run(&payhook.pool, &model, &acked).await?;
    let statuses: HashMap<(String, String), String> =
        sqlx::query_as::<_, (String, String, String)>(
            "SELECT provider, external_id, status FROM webhook_events",
        )
        .fetch_all(&payhook.pool)
        .await?
        .into_iter()
        .map(|(p, e, s)| ((p, e), s))
        .collect();
    let (mut dead, mut missing) = (0, 0);
    let mut accepted_events = 0;
    for s in &all {
        for (g, key, poison) in s.acked_event_keys() {
            accepted_events += 1;
            match (
                statuses
                    .get(&(g.name().to_owned(), key))
                    .map(String::as_str),
                poison,
            ) {
                (Some("processed" | "ignored"), false) | (Some("dead"), true) => {}
                (Some("dead"), false) => dead += 1,
                // A poison event that got through was applied: as wrong as a lost one.
                _ => missing += 1,
            }
        }
    }
    // Poison events (tx_ref poison-…) are dead by design: not counted here.
    let dead_by_type = sqlx::query_as::<_, (String, String, i64, i64, Option<String>)>(
        "SELECT provider, event_type, count(*) FILTER (WHERE status = 'dead'), count(*),
                min(last_error) FILTER (WHERE status = 'dead')
         FROM webhook_events
         WHERE NOT coalesce(payload->'data'->>'tx_ref' LIKE 'poison-%', false)
         GROUP BY 1, 2
         HAVING count(*) FILTER (WHERE status = 'dead') > 0 ORDER BY 3 DESC",
    )
    .fetch_all(&payhook.pool)
    .await?
    .into_iter()
    .map(|(provider, event_type, dead, of, e)| DeadByType {
        provider,
        event_type,
        dead,
        of,
        last_error: e.unwrap_or_default(),
    })
    .collect();
    let accepted_deliveries = acked.iter().filter(|a| **a).count() as u64;
    let load_errors = (acked.len() as u64).saturating_sub(accepted_deliveries);
    Ok(PayhookVerdict {
        accepted_deliveries,
        accepted_events,
        load_errors,
        first_error: None,
        dead,
        missing,
        dead_by_type,
        ok: dead == 0 && missing == 0 && load_errors == 0 && checks.iter().all(|c| c.ok),
        checks,
    })
}

/// The peer's verdict: its events, transactions and members against what was accepted.
fn peer_verdict(records: &peer::PeerRecords, s: &Streams) -> PeerVerdict {
    let (model, acked) = stream::model(&[s.fill.as_ref(), s.e2e.as_ref()]);
    let mut event_acked = vec![false; model.events.len()];
    for (d, ok) in model.deliveries.iter().zip(&acked) {
        if *ok {
            for &e in &d.events {
                event_acked[e] = true;
            }
        }
    }
    let processed: HashSet<&str> = records
        .events
        .iter()
        .filter(|(_, p)| *p)
        .map(|(id, _)| id.as_str())
        .collect();
    let transactions: HashSet<&str> = records.transactions.iter().map(String::as_str).collect();
    let members: HashSet<&str> = records.members.iter().map(String::as_str).collect();
    let mut v = PeerVerdict {
        accepted_events: 0,
        load_errors: (acked.len() - acked.iter().filter(|a| **a).count()) as u64,
        first_error: None,
        missing: 0,
        transactions_expected: 0,
        transactions_missing: 0,
        members_expected: 0,
        members_missing: 0,
        ok: false,
    };
    for (i, e) in model.events.iter().enumerate() {
        if !event_acked[i] || e.gateway != Gateway::GoCardless {
            continue;
        }
        v.accepted_events += 1;
        if !processed.contains(e.external_id.as_str()) {
            v.missing += 1;
        }
        match (e.target, e.effect) {
            (Target::Payment(p), Effect::Payment(_)) => {
                v.transactions_expected += 1;
                if !transactions.contains(model.payments[p].external_id.as_str()) {
                    v.transactions_missing += 1;
                }
            }
            (Target::Mandate(m), Effect::Member { .. }) => {
                v.members_expected += 1;
                if !members.contains(model.mandates[m].id.as_str()) {
                    v.members_missing += 1;
                }
            }
            _ => {}
        }
    }
    v.ok = v.missing == 0
        && v.load_errors == 0
        && v.transactions_missing == 0
        && v.members_missing == 0;
    say(format!(
        "peer verdict: {} events accepted, {} missing, {} transactions missing",
        human(v.accepted_events),
        v.missing,
        v.transactions_missing
    ));
    v
}
