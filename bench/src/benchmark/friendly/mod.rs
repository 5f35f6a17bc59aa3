//! Issue 7's suite (`--workload friendly`), kept as an option: only `payments.created` events
//! (no gateway API call, nothing that can go dead), ingest timed with the workers stopped and
//! the workers draining with no ingest load, beside the PostgreSQL floor (pgbench):
//!
//! 1. drain: a backlog ingested with the workers stopped, then 1 (and then 2) workers started,
//!    timed from ready to every event processed;
//! 2. the floor: pgbench doing the equivalent durable insert at 1 and 16 clients;
//! 3. ingest: closed-loop load at 1, 32, 128 connections, 1-event and 10-event bodies
//!    (workers stopped), and ingest's peak RSS;
//! 4. cost growth: stored events inserted with SQL, then ingest at 32 connections again;
//! 5. correctness: rows stored == 2xx answers, every event processed.
//!
//! It flatters: see [`super::realistic`] for the default.

mod report;
mod steps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::common::{self, checkpoint, loadavg, say, Machine, Target};
use super::Args;
use crate::human;
use crate::load::{self, Fresh, Load, Secrets, Stop};
use crate::procs::{self, CpuProbe, Service};
use report::{Correctness, DrainRow, Growth, Memory, Report};

struct Plan {
    step: Duration,
    drain_events: u64,
    stored_events: u64,
}

const SECRET: &str = "bench-webhook-secret-0123456789";

struct Bench {
    plan: Plan,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    pgbench: PathBuf,
    pg: PgConnectOptions,
    db_name: String,
    db_url: String,
    amqp_url: String,
    prefix: String,
    pool: PgPool,
    ingest: Service,
    ingest_addr: SocketAddr,
    probe: CpuProbe,
    tag: String,
    steps: u32,
    /// 204 answers so far, and the events they carried.
    accepted_deliveries: u64,
    accepted_events: u64,
    errors: u64,
    first_error: Option<String>,
    seeded_deliveries: u64,
    seeded_events: u64,
}

/// Runs the suite; whether correctness passed.
pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let plan = Plan {
        step: Duration::from_secs(args.step_secs.unwrap_or(if args.quick { 2 } else { 10 })),
        drain_events: args
            .drain_events
            .unwrap_or(if args.quick { 2_000 } else { 20_000 }),
        stored_events: args
            .stored_events
            .unwrap_or(if args.quick { 100_000 } else { 1_000_000 }),
    };
    std::fs::create_dir_all(&args.log_dir)?;
    for bin in ["payhook-ingest", "payhook-worker"] {
        if !args.bin_dir.join(bin).is_file() {
            bail!(
                "{} not found; build it first (cargo build --release -p {bin})",
                args.bin_dir.join(bin).display()
            );
        }
    }
    let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let db_name = format!("payhook_bench_{unix}");
    let prefix = format!("bench{unix}");
    let admin = PgConnectOptions::from_str(&args.pg_url)?;
    let (db_url, pg_version) = common::create_database(&args.pg_url, &db_name).await?;
    say(format!(
        "database {db_name}, AMQP prefix {prefix}, logs in {}",
        args.log_dir.display()
    ));

    let ingest_addr = procs::free_addr()?;
    let ingest_ops = procs::free_addr()?;
    let mut ingest = Service::spawn(
        &args.bin_dir.join("payhook-ingest"),
        "payhook-ingest",
        ingest_ops,
        &[
            ("DATABASE_URL", db_url.clone()),
            ("AMQP_URL", args.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", prefix.clone()),
            ("INGEST_ADDR", ingest_addr.to_string()),
            ("INGEST_OPS_ADDR", ingest_ops.to_string()),
            ("GOCARDLESS_WEBHOOK_SECRET", SECRET.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ],
        &args.log_dir.join("ingest.log"),
    )?;
    ingest.ready(Duration::from_secs(60)).await?;
    say(format!("payhook-ingest ready on {ingest_addr}"));
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(PgConnectOptions::from_str(&db_url)?)
        .await?;

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
    let mut b = Bench {
        plan,
        bin_dir: args.bin_dir.clone(),
        log_dir: args.log_dir.clone(),
        pgbench: args.pgbench.clone(),
        pg: admin,
        db_name: db_name.clone(),
        db_url,
        amqp_url: args.amqp_url.clone(),
        prefix,
        pool,
        ingest,
        ingest_addr,
        probe,
        tag: format!("{unix:x}"),
        steps: 0,
        accepted_deliveries: 0,
        accepted_events: 0,
        errors: 0,
        first_error: None,
        seeded_deliveries: 0,
        seeded_events: 0,
    };
    let load_start = loadavg();

    // 1. Drain, from a backlog that is the only thing in the queue.
    let mut drain = Vec::new();
    for workers in [1, 2] {
        b.backlog(b.plan.drain_events).await?;
        drain.push(b.drain(workers, &format!("{workers} worker(s)")).await?);
    }

    // 2. The floor.
    let mut floor = Vec::new();
    b.create_floor_table().await?;
    for clients in [1, 16] {
        floor.push(b.floor(clients).await?);
    }

    // 3. Ingest, workers stopped.
    let mut ingest_rows = Vec::new();
    for events in [1, 10] {
        for conns in [1, 32, 128] {
            let row = b.ingest_step(conns, events, "").await?;
            ingest_rows.push(row);
        }
    }
    let (hwm, rss) = procs::memory_mib(b.ingest.pid()).unwrap_or_default();
    let memory = Memory {
        ingest_peak_rss_mib: hwm,
        ingest_rss_after_mib: rss,
    };
    say(format!(
        "ingest memory: peak (VmHWM) {hwm:.1} MiB, now {rss:.1} MiB"
    ));
    // The load steps' backlog, drained by 2 workers (also checks every one gets processed).
    let load_drain = b.drain(2, "2 workers, ingest steps' backlog").await?;

    // 4. Cost growth: the 32-connection step again just before and just after storing the
    // events, both with an empty queue and a warm cache, so only the stored rows differ.
    let before = b.ingest_step(32, 1, " (before storing)").await?;
    b.seed(b.plan.stored_events).await?;
    let grown = b.ingest_step(32, 1, " (stored)").await?;
    let growth_drain = b
        .drain(
            2,
            &format!("2 workers, with {} stored", human(b.seeded_events)),
        )
        .await?;
    let empty = &before;
    let growth = Growth {
        stored_events: b.seeded_events,
        empty_rps: empty.rps,
        stored_rps: grown.rps,
        ratio: grown.rps / empty.rps,
        empty_p99_ms: empty.p99_ms,
        stored_p99_ms: grown.p99_ms,
        row: grown,
        before,
    };

    // 5. Correctness.
    let correctness = b.check().await?;
    let (hwm_end, _) = procs::memory_mib(b.ingest.pid()).unwrap_or_default();

    let floor16 = floor.iter().find(|f| f.clients == 16).expect("ran").tps;
    let at32 = |events: usize| {
        ingest_rows
            .iter()
            .find(|r| r.connections == 32 && r.events_per_body == events)
            .expect("ran")
    };
    let best_drain = drain.iter().map(|d| d.events_per_s).fold(0.0_f64, f64::max);
    let targets = vec![
        Target::at_least(
            "ingest @32 conns (1-event) ≥ 0.6 × pgbench floor @16 clients",
            at32(1).rps / floor16,
            0.6,
            format!(
                "{:.2} × ({:.0} req/s vs {:.0} tps)",
                at32(1).rps / floor16,
                at32(1).rps,
                floor16
            ),
        ),
        Target::at_most(
            "p99 @32 conns (1-event) ≤ 10 ms",
            at32(1).p99_ms,
            10.0,
            format!(
                "{:.2} ms (10-event bodies: {:.2} ms)",
                at32(1).p99_ms,
                at32(10).p99_ms
            ),
        ),
        Target::at_least(
            "drain ≥ 8,000 events/s (10 × Celery's ~800/s)",
            best_drain,
            8000.0,
            format!(
                "{:.0} events/s = {:.1} × Celery, {:.2} × floor@16",
                best_drain,
                best_drain / 800.0,
                best_drain / floor16
            ),
        ),
        Target::at_least(
            "with stored events, ingest @32 ≥ 0.8 × empty run",
            growth.ratio,
            0.8,
            format!(
                "{:.2} × ({:.0} vs {:.0} req/s with {} events stored)",
                growth.ratio,
                growth.stored_rps,
                growth.empty_rps,
                human(growth.stored_events)
            ),
        ),
        Target::at_most(
            "ingest RSS ≤ 100 MiB at 128 conns",
            memory.ingest_peak_rss_mib,
            100.0,
            format!("peak {:.1} MiB", memory.ingest_peak_rss_mib),
        ),
    ];

    let machine = Machine::read(
        pg_version,
        args.rabbitmq_version.clone(),
        load_start,
        loadavg(),
        common::settings(),
    );
    let ok = correctness.ok;
    let report = Report {
        mode: if args.quick { "quick" } else { "full" }.into(),
        step_secs: b.plan.step.as_secs_f64(),
        machine,
        floor,
        ingest: ingest_rows,
        drain,
        load_drain,
        growth_drain,
        growth,
        memory: Memory {
            ingest_peak_rss_mib: memory.ingest_peak_rss_mib.max(hwm_end),
            ..memory
        },
        correctness,
        targets,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        say(format!("JSON written to {}", path.display()));
    }

    let Bench { ingest, pool, .. } = b;
    ingest.stop().await?;
    pool.close().await;
    if ok && !args.keep_db {
        common::drop_database(&args.pg_url, &db_name).await?;
    } else {
        say(format!("database {db_name} kept"));
    }
    say(format!("done in {:.0} s", report.elapsed_s));
    Ok(ok)
}

impl Bench {
    fn next_tag(&mut self) -> String {
        self.steps += 1;
        format!("{}s{}", self.tag, self.steps)
    }

    fn record(&mut self, r: &load::LoadResult) {
        self.accepted_deliveries += r.accepted_all;
        self.accepted_events += r.events_all;
        self.errors += r.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&r.first_error);
        }
    }

    /// `events` fresh events in the queue (10-event bodies, 32 connections), workers stopped.
    async fn backlog(&mut self, events: u64) -> anyhow::Result<()> {
        let tag = self.next_tag();
        let bodies = events.div_ceil(10);
        say(format!("backlog: ingesting {} events", human(bodies * 10)));
        let r = load::run(
            Load {
                addr: self.ingest_addr,
                connections: 32,
                secrets: Secrets(vec![(load::Gateway::GoCardless, SECRET.into())]),
                stop: Stop::requests(bodies),
                window: None,
            },
            Fresh::new(&tag, 10),
        )
        .await;
        self.record(&r);
        if r.errors > 0 {
            bail!(
                "backlog: {} requests failed: {}",
                r.errors,
                r.first_error.unwrap_or_default()
            );
        }
        Ok(())
    }

    fn worker_env(&self, ops: SocketAddr) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.db_url.clone()),
            ("AMQP_URL", self.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", self.prefix.clone()),
            ("WORKER_OPS_ADDR", ops.to_string()),
            // Nothing here may call a gateway: an API call would fail (nothing listens on
            // port 9), leave its event retrying, and fail the run.
            ("GOCARDLESS_API_URL", "http://127.0.0.1:9".to_owned()),
            ("RECONCILE_INTERVAL", "1h".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
    }

    /// (events still to process, events dead or ignored), counted in PostgreSQL.
    async fn remaining(&self) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('received', 'published', 'retrying')),
                    count(*) FILTER (WHERE status IN ('dead', 'ignored'))
             FROM webhook_events
             WHERE status IN ('received', 'published', 'retrying', 'dead', 'ignored')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Starts `n` workers on the current backlog, times it from ready to empty, stops them.
    async fn drain(&mut self, n: usize, label: &str) -> anyhow::Result<DrainRow> {
        let (backlog, _) = self.remaining().await?;
        say(format!("drain, {label}: {} events", human(backlog as u64)));
        checkpoint(&self.pool).await?;
        let spawned = Instant::now();
        let mut workers = Vec::new();
        for i in 0..n {
            let ops = procs::free_addr()?;
            workers.push(Service::spawn(
                &self.bin_dir.join("payhook-worker"),
                &format!("payhook-worker #{}", i + 1),
                ops,
                &self.worker_env(ops),
                &self.log_dir.join(format!("worker{}.log", i + 1)),
            )?);
        }
        for w in &mut workers {
            w.ready(Duration::from_secs(60)).await?;
        }
        let ready = Instant::now();
        let pids: Vec<u32> = workers.iter().map(Service::pid).collect();
        let cpu0 = self.probe.sample(Some(self.ingest.pid()), &pids, &[]);
        let (at_ready, _) = self.remaining().await?;
        let ops: Vec<SocketAddr> = workers.iter().map(|w| w.ops).collect();
        let mut last = (at_ready, Instant::now());
        let mut shown = Instant::now();
        let done = loop {
            // Progress comes from the workers' own counters: counting rows in PostgreSQL
            // would take CPU the workers need. One SQL count confirms the end.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (processed, bad) = worker_counts(&ops).await?;
            if bad > 0 {
                bail!(
                    "{bad} events went dead or ignored; see the worker logs in {}",
                    self.log_dir.display()
                );
            }
            let mut left = (at_ready - processed).max(0);
            if left == 0 {
                let (sql_left, _) = self.remaining().await?;
                if sql_left == 0 {
                    break Instant::now();
                }
                left = sql_left;
            }
            if left < last.0 {
                last = (left, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(60) {
                bail!("drain stalled at {left} events for 60 s; see the worker logs");
            }
            if shown.elapsed() >= Duration::from_secs(2) {
                shown = Instant::now();
                say(format!(
                    "  … {} left, {:.0} events/s so far",
                    human(left as u64),
                    (at_ready - left) as f64 / ready.elapsed().as_secs_f64()
                ));
            }
            for w in &mut workers {
                if !w.alive() {
                    bail!("{} exited during the drain", w.name);
                }
            }
        };
        let cpu = cpu0.until(&self.probe.sample(Some(self.ingest.pid()), &pids, &[]));
        for w in workers {
            w.stop().await?;
        }
        let secs = done.duration_since(ready).as_secs_f64();
        let row = DrainRow {
            label: label.to_owned(),
            workers: n,
            events: backlog as u64,
            seconds: secs,
            events_per_s: at_ready as f64 / secs,
            startup_s: ready.duration_since(spawned).as_secs_f64(),
            cpu,
        };
        say(format!(
            "  {:.0} events/s ({} events in {:.2} s after a {:.2} s start)",
            row.events_per_s,
            human(at_ready as u64),
            secs,
            row.startup_s
        ));
        Ok(row)
    }

    async fn check(&mut self) -> anyhow::Result<Correctness> {
        let (deliveries, events, not_processed): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_deliveries),
                    (SELECT count(*) FROM webhook_events),
                    (SELECT count(*) FROM webhook_events WHERE status <> 'processed')",
        )
        .fetch_one(&self.pool)
        .await?;
        let ingest_alive = self.ingest.alive();
        let c = Correctness {
            answers_2xx: self.accepted_deliveries,
            deliveries_expected: self.accepted_deliveries + self.seeded_deliveries,
            deliveries_stored: deliveries as u64,
            events_expected: self.accepted_events + self.seeded_events,
            events_stored: events as u64,
            events_not_processed: not_processed as u64,
            errors: self.errors,
            first_error: self.first_error.clone(),
            ingest_alive,
            ok: deliveries as u64 == self.accepted_deliveries + self.seeded_deliveries
                && events as u64 == self.accepted_events + self.seeded_events
                && not_processed == 0
                && self.errors == 0
                && ingest_alive,
        };
        Ok(c)
    }
}

/// Events the workers at `ops` report processed, and dead, ignored or missing, from their
/// `payhook_events_processed_total` counters.
async fn worker_counts(ops: &[SocketAddr]) -> anyhow::Result<(i64, i64)> {
    let (mut processed, mut bad) = (0.0, 0.0);
    for addr in ops {
        let text = procs::get_body(*addr, "/metrics").await?;
        for line in text.lines() {
            let Some(series) = line.strip_prefix("payhook_events_processed_total{") else {
                continue;
            };
            let Some((labels, value)) = series.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if labels.contains(r#"outcome="processed""#) {
                processed += value;
            } else if ["dead", "ignored", "missing"]
                .iter()
                .any(|o| labels.contains(&format!(r#"outcome="{o}""#)))
            {
                bad += value;
            }
        }
    }
    Ok((processed as i64, bad as i64))
}
