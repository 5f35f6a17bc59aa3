//! The benchmark of issue 7 behind `payhook-bench` (see `src/main.rs` for what it measures):
//! its command line, its steps and its report. The child processes and the load generator it
//! drives are the crate's shared [`crate::procs`] and [`crate::load`].

mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::human;
use crate::load::{self, Stop};
use crate::procs::{self, CpuProbe, Service};
use report::{Correctness, DrainRow, FloorRow, Growth, IngestRow, Machine, Memory, Report, Target};

/// payhook's benchmark (issue 7): ingest and drain throughput beside the PostgreSQL floor.
#[derive(Parser, Debug)]
#[command(name = "payhook-bench")]
pub struct Args {
    /// CI smoke size: 2 s steps, 2,000-event drains, 100,000 stored events.
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A superuser URL of the PostgreSQL server to use (the bench creates its own database).
    #[arg(
        long,
        env = "BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:56432/postgres"
    )]
    pg_url: String,
    #[arg(
        long,
        env = "BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:56672/%2f"
    )]
    amqp_url: String,
    /// Where payhook-ingest and payhook-worker (release builds) are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin/pgbench")]
    pgbench: PathBuf,
    /// Seconds per load step (default: 10; --quick: 2).
    #[arg(long)]
    step_secs: Option<u64>,
    /// Events in each drain backlog (default: 20,000; --quick: 2,000).
    #[arg(long)]
    drain_events: Option<u64>,
    /// Events stored before the cost-growth step (default: 1,000,000; --quick: 100,000).
    #[arg(long)]
    stored_events: Option<u64>,
    /// The PostgreSQL data directory (its postmaster.pid gives the CPU breakdown).
    #[arg(long, env = "BENCH_PG_DATA")]
    pg_data: Option<PathBuf>,
    /// RabbitMQ's pid file (for the CPU breakdown).
    #[arg(long, env = "BENCH_RABBIT_PID_FILE")]
    rabbit_pid_file: Option<PathBuf>,
    #[arg(long, env = "BENCH_RABBITMQ_VERSION")]
    rabbitmq_version: Option<String>,
    /// Keep the benchmark database afterwards (it is always kept when the run fails).
    #[arg(long)]
    keep_db: bool,
    /// Logs of the child processes and the pgbench script.
    #[arg(long, default_value = "target/bench")]
    log_dir: PathBuf,
}

struct Plan {
    step: Duration,
    drain_events: u64,
    stored_events: u64,
}

const SECRET: &str = "bench-webhook-secret-0123456789";
/// Settings the children inherit from our environment, recorded in the report.
const TUNABLES: &[&str] = &[
    "DATABASE_MAX_CONNECTIONS",
    "INGEST_BATCH_MAX",
    "INGEST_TIMEOUT",
    "WORKER_CONCURRENCY",
    "WORKER_PREFETCH",
];

fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Runs the benchmark; the process's exit status.
pub async fn main(args: Args) -> ExitCode {
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            say("FAILED: see the correctness section above");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("payhook-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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

async fn run(args: Args) -> anyhow::Result<bool> {
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
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .context("connecting to PostgreSQL (is the bench stack up? use scripts/bench)")?;
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut conn)
        .await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    let mut db = url::Url::parse(&args.pg_url)?;
    db.set_path(&db_name);
    let db_url = db.to_string();
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
        TUNABLES
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
            .collect(),
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

    let Bench {
        ingest, pool, pg, ..
    } = b;
    ingest.stop().await?;
    pool.close().await;
    if ok && !args.keep_db {
        let mut conn = PgConnection::connect_with(&pg).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
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
        self.accepted_deliveries += r.ok;
        self.accepted_events += r.ok * r.events_per_body as u64;
        self.errors += r.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&r.first_error);
        }
    }

    async fn checkpoint(&self) -> anyhow::Result<()> {
        sqlx::query("CHECKPOINT").execute(&self.pool).await?;
        Ok(())
    }

    /// `events` fresh events in the queue (10-event bodies, 32 connections), workers stopped.
    async fn backlog(&mut self, events: u64) -> anyhow::Result<()> {
        let tag = self.next_tag();
        let bodies = events.div_ceil(10);
        say(format!("backlog: ingesting {} events", human(bodies * 10)));
        let r = load::run(
            self.ingest_addr,
            SECRET,
            &tag,
            32,
            10,
            Stop::requests(bodies),
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
        self.checkpoint().await?;
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

    async fn create_floor_table(&self) -> anyhow::Result<()> {
        // Same columns, defaults, CHECK, identity and indexes as webhook_events (not the
        // foreign key: LIKE never copies those).
        sqlx::query("CREATE TABLE bench_floor (LIKE webhook_events INCLUDING ALL)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// pgbench: one durable INSERT ... ON CONFLICT DO NOTHING per transaction, a random key,
    /// the payload of one of our events.
    async fn floor(&mut self, clients: usize) -> anyhow::Result<FloorRow> {
        let event = load::gocardless_event("@@", 0);
        assert!(!event.contains('\''));
        let payload = format!("'{}'", event.replace("@@", "' || :k::text || '"));
        let script = format!(
            "\\set k random(1, 1000000000000000)\n\
             INSERT INTO bench_floor (delivery_id, provider, external_id, event_type, resource_id, payload, occurred_at) \
             VALUES (:k::bigint, 'gocardless', 'EV' || :k::text, 'payments.created', 'PM' || :k::text, ({payload})::jsonb, now()) \
             ON CONFLICT (provider, external_id) DO NOTHING;\n"
        );
        let path = self.log_dir.join("floor.sql");
        std::fs::write(&path, script)?;
        self.checkpoint().await?;
        say(format!(
            "floor: pgbench, {clients} client(s), {} s",
            self.plan.step.as_secs()
        ));
        let host = self.pg.get_host().to_owned();
        let port = self.pg.get_port().to_string();
        let user = self.pg.get_username().to_owned();
        let mut cmd = tokio::process::Command::new(&self.pgbench);
        cmd.args([
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            &user,
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &self.plan.step.as_secs().to_string(),
            "-f",
        ])
        .arg(&path)
        .arg(&self.db_name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.pgbench.display()))?;
        let pid = child.id().unwrap_or(0);
        let cpu0 = self.probe.sample(Some(self.ingest.pid()), &[], &[pid]);
        let wait = tokio::spawn(child.wait_with_output());
        // Sample while pgbench lives: once it has exited its CPU time is gone from /proc.
        let mut cpu1 = cpu0.clone();
        while !wait.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                cpu1 = self.probe.sample(Some(self.ingest.pid()), &[], &[pid]);
            }
        }
        let out = wait.await??;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let field = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let tps = field("tps = ").context("pgbench printed no tps")?;
        let row = FloorRow {
            clients,
            seconds: self.plan.step.as_secs_f64(),
            tps,
            latency_avg_ms: field("latency average = ").unwrap_or(f64::NAN),
            failed: field("number of failed transactions: ").unwrap_or(0.0) as u64,
            cpu: cpu0.until(&cpu1),
        };
        say(format!(
            "  {:.0} tps, average latency {:.2} ms",
            row.tps, row.latency_avg_ms
        ));
        Ok(row)
    }

    async fn ingest_step(
        &mut self,
        conns: usize,
        events: usize,
        note: &str,
    ) -> anyhow::Result<IngestRow> {
        let tag = self.next_tag();
        self.checkpoint().await?;
        say(format!(
            "ingest: {conns} connection(s), {events}-event bodies{note}, {} s",
            self.plan.step.as_secs()
        ));
        let metrics0 = procs::get_body(self.ingest.ops, "/metrics")
            .await
            .unwrap_or_default();
        let cpu0 = self.probe.sample(Some(self.ingest.pid()), &[], &[]);
        let r = load::run(
            self.ingest_addr,
            SECRET,
            &tag,
            conns,
            events,
            Stop::At(Instant::now() + self.plan.step),
        )
        .await;
        let cpu = cpu0.until(&self.probe.sample(Some(self.ingest.pid()), &[], &[]));
        let metrics1 = procs::get_body(self.ingest.ops, "/metrics")
            .await
            .unwrap_or_default();
        // Mean of a histogram over the step, from the difference of its sum and count.
        let mean = |name: &str, scale: f64| {
            let (s0, c0) = procs::histogram_totals(&metrics0, name);
            let (s1, c1) = procs::histogram_totals(&metrics1, name);
            if c1 > c0 {
                (s1 - s0) / (c1 - c0) * scale
            } else {
                f64::NAN
            }
        };
        let batch_mean = mean("payhook_ingest_batch_size", 1.0);
        let commit_ms_mean = mean("payhook_ingest_commit_seconds", 1000.0);
        let confirm_ms_mean = mean("payhook_publish_confirm_seconds", 1000.0);
        self.record(&r);
        let row = IngestRow {
            connections: conns,
            events_per_body: events,
            requests: r.ok,
            seconds: r.elapsed.as_secs_f64(),
            rps: r.rps(),
            events_per_s: r.events_per_s(),
            p50_ms: r.ms(0.5),
            p99_ms: r.ms(0.99),
            p999_ms: r.ms(0.999),
            max_ms: r.hist.max() as f64 / 1000.0,
            errors: r.errors,
            batch_mean,
            commit_ms_mean,
            confirm_ms_mean,
            cpu,
        };
        say(format!(
            "  {:.0} req/s, {:.0} events/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; \
             mean batch {:.1} deliveries, commit {:.2} ms, confirm {:.2} ms{}",
            row.rps,
            row.events_per_s,
            row.p50_ms,
            row.p99_ms,
            row.p999_ms,
            row.batch_mean,
            row.commit_ms_mean,
            row.confirm_ms_mean,
            if r.errors > 0 {
                format!(
                    ", {} ERRORS: {}",
                    r.errors,
                    r.first_error.as_deref().unwrap_or_default()
                )
            } else {
                String::new()
            }
        ));
        Ok(row)
    }

    /// Stores `events` processed events (10 per delivery) with plain SQL, as months of history.
    async fn seed(&mut self, events: u64) -> anyhow::Result<()> {
        let deliveries = events.div_ceil(10);
        let chunk = 10_000u64;
        let event = load::gocardless_event("@@", 0);
        say(format!(
            "storing {} events with SQL",
            human(deliveries * 10)
        ));
        let t = Instant::now();
        let mut done = 0;
        while done < deliveries {
            let n = chunk.min(deliveries - done);
            sqlx::query(
                "WITH d AS (
                   INSERT INTO webhook_deliveries (provider, received_at, headers, body)
                   SELECT 'gocardless', now() - make_interval(secs => g),
                          '{\"content-type\": \"application/json\", \"user-agent\": \"gocardless-webhooks-service/1.1\"}'::jsonb,
                          convert_to('{\"events\":[' || repeat(replace($1, '@@', 'H' || $2::bigint + g) || ',', 9)
                                     || replace($1, '@@', 'H' || $2::bigint + g) || ']}', 'UTF8')
                   FROM generate_series(1, $3::bigint) g
                   RETURNING id, received_at)
                 INSERT INTO webhook_events (delivery_id, provider, external_id, event_type, resource_id,
                                             payload, status, attempts, occurred_at, received_at,
                                             published_at, processed_at)
                 SELECT d.id, 'gocardless', 'EVH' || d.id || '-' || i, 'payments.created',
                        'PMH' || d.id || '-' || i, replace($1, '@@', 'H' || d.id || '-' || i)::jsonb,
                        'processed', 1, d.received_at, d.received_at, d.received_at, d.received_at
                 FROM d CROSS JOIN generate_series(0, 9) i",
            )
            .bind(&event)
            .bind(done as i64)
            .bind(n as i64)
            .execute(&self.pool)
            .await?;
            done += n;
            say(format!(
                "  … {} events ({:.0} s)",
                human(done * 10),
                t.elapsed().as_secs_f64()
            ));
        }
        self.seeded_deliveries += deliveries;
        self.seeded_events += deliveries * 10;
        say("  VACUUM ANALYZE, CHECKPOINT");
        sqlx::query("VACUUM ANALYZE webhook_deliveries")
            .execute(&self.pool)
            .await?;
        sqlx::query("VACUUM ANALYZE webhook_events")
            .execute(&self.pool)
            .await?;
        self.checkpoint().await?;
        Ok(())
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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
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
