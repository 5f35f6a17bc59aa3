//! `payhook-chaos` (issue 8): signed deliveries from all four gateways — duplicates and
//! out-of-order lifecycles mixed in, and a few that must be refused: genuine but unparseable
//! (issue 16) and forged — while a worker and ingest are `kill -9`ed and restarted and
//! RabbitMQ and PostgreSQL restart; then, once everything has drained, proof that no
//! acknowledged event was lost, no ledger row applied twice, every payment and member ended
//! where its events say, every genuine refused body was kept once and no forged one anywhere.
//! Exit status 1 if any check fails.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`gateway`] | a fake GoCardless API for the member lookups the worker cannot avoid |
//! | [`stack`] | ingest and the workers as child processes; `scripts/services.sh` restarts |
//! | [`driver`] | the load: closed loop, retries like a gateway, records every 2xx |
//! | [`faults`] | the fault plan and its injection while the load runs |
//! | [`refused`] | the genuine unparseable and the forged deliveries, and their checks |
//! | [`drain`] | waiting until nothing is left in flight |
//! | [`report`] | the summary on stdout and as JSON |
//!
//! The workload ([`crate::workload`], seeded by [`crate::rng`]) and the verdict
//! ([`crate::verdict`]) are the crate's, shared with the benchmark.

pub mod drain;
pub mod driver;
pub mod faults;
pub mod gateway;
pub mod refused;
pub mod report;
pub mod stack;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::human;
use crate::load::Gateway;
use crate::rng::Rng;
use crate::verdict::{self, Check};
use crate::workload::{Mix, Spec, Workload};
use driver::{Driver, Progress};
use faults::Fault;
use report::{GatewayCalls, LoadFigures, Report, Shutdown, WorkloadFigures};
use stack::{Stack, StackConfig};

/// payhook's chaos run (issue 8): signed webhooks from all four gateways while workers and
/// ingest are killed and RabbitMQ and PostgreSQL restart; then checks that nothing was lost
/// or applied twice. Run it through scripts/chaos, which builds the binaries and starts the
/// private `chaos` stack (PostgreSQL 127.0.0.1:57432, RabbitMQ 127.0.0.1:57672).
#[derive(Parser, Debug)]
#[command(name = "payhook-chaos", args_override_self = true)]
pub struct Args {
    /// Distinct events to send (at least; a payment's lifecycle is never cut). Duplicate
    /// deliveries and poison events come on top.
    #[arg(long, default_value_t = 3000)]
    events: usize,
    /// Seed of the workload and of the fault order (default: from the clock). Printed at the
    /// start: the same seed and --events replay the same deliveries and fault order.
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject: `all`, `none`, or a comma-separated list of kill-worker,
    /// restart-rabbitmq, restart-postgres, kill-ingest, and with --cluster kill-rabbit-leader,
    /// failover-postgres. `all` is the first four on one machine; with --cluster, kill-worker,
    /// kill-ingest, kill-rabbit-leader and failover-postgres.
    #[arg(long, default_value = "all", value_parser = parse_faults)]
    faults: FaultList,
    /// Run against a cluster (scripts/chaos --cluster brings it up): a three-node RabbitMQ
    /// cluster and a PostgreSQL primary with a standby behind one read-write address;
    /// --amqp-url lists the nodes and --pg-url is the read-write address. Two ingests unless
    /// --ingests says otherwise.
    #[arg(long)]
    cluster: bool,
    /// payhook-ingest processes (the load spreads its connections over them; default 1, 2
    /// with --cluster).
    #[arg(long)]
    ingests: Option<usize>,
    /// How many times each chosen fault is injected (default: 1 up to 10,000 events, 2
    /// above).
    #[arg(long)]
    fault_count: Option<usize>,
    /// Concurrent connections to ingest (each one closed-loop).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// payhook-worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Share of deliveries sent a second time, verbatim, a little later.
    #[arg(long, default_value_t = 0.05)]
    duplicates: f64,
    /// Poison events to inject (a Flutterwave amount that cannot be converted exactly);
    /// they must end `dead`, and the dead-events check then expects exactly them.
    #[arg(long, default_value_t = 0)]
    poison: usize,
    /// Genuinely signed bodies payhook cannot parse, sent (some several times, as a gateway
    /// resends a refused delivery) over the load: each must be answered 400 and kept once in
    /// rejected_deliveries, never stored as a delivery.
    #[arg(long, default_value_t = 5)]
    unparseable: usize,
    /// Forged (wrongly signed) bodies sent over the load: each must be refused and stored
    /// nowhere.
    #[arg(long, default_value_t = 2)]
    forged: usize,
    /// Seconds the load may take in all; a delivery still unacknowledged then fails the run.
    #[arg(long, default_value_t = 1800)]
    load_timeout: u64,
    /// Seconds every process may take to be ready again after a fault.
    #[arg(long, default_value_t = 180)]
    recover_timeout: u64,
    /// Seconds the end may take to drain (events processed, queues empty, outbox
    /// published) before the run fails (default: 600 plus 1 per 100 events).
    #[arg(long)]
    drain_timeout: Option<u64>,
    /// Seconds each process may take to exit after the SIGTERM at the end before it is
    /// killed (reported, not a check: a kill loses nothing).
    #[arg(long, default_value_t = 90)]
    stop_timeout: u64,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A superuser URL of the stack's PostgreSQL (the run creates its own database).
    #[arg(
        long,
        env = "CHAOS_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:57432/postgres"
    )]
    pg_url: String,
    /// The stack's RabbitMQ (the run uses its own AMQP prefix).
    #[arg(
        long,
        env = "CHAOS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:57672/%2f"
    )]
    amqp_url: String,
    /// The script that restarts PostgreSQL (`restart-pg`) and RabbitMQ (`restart-rabbit`).
    #[arg(long, default_value = "scripts/services.sh")]
    services: PathBuf,
    /// The stack those restarts act on: the one --pg-url and --amqp-url point at.
    #[arg(long, default_value = "chaos")]
    stack: String,
    /// Where payhook-ingest and payhook-worker (release builds) are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Logs of the child processes and of the restarts, and the record of every
    /// acknowledged delivery (acked.tsv), in a sub-folder per run.
    #[arg(long, default_value = "target/chaos")]
    log_dir: PathBuf,
    /// Keep the run's database afterwards (it is always kept when the run fails).
    #[arg(long)]
    keep_db: bool,
    /// RUST_LOG of the payhook processes.
    #[arg(long, env = "CHAOS_RUST_LOG", default_value = "warn")]
    rust_log: String,
    /// RECONCILE_INTERVAL of the workers: how often the relays publish what a fault left
    /// unpublished.
    #[arg(long, default_value = "2s")]
    reconcile_interval: String,
    /// RELAY_AFTER of the workers: age after which a stored, unpublished event is relayed.
    #[arg(long, default_value = "3s")]
    relay_after: String,
}

/// The faults chosen on the command line; `None`: all of the setup's.
#[derive(Debug, Clone)]
pub struct FaultList(Option<Vec<Fault>>);

fn parse_faults(s: &str) -> Result<FaultList, String> {
    use clap::ValueEnum as _;
    match s {
        "all" => Ok(FaultList(None)),
        "none" => Ok(FaultList(Some(Vec::new()))),
        list => list
            .split(',')
            .map(|f| Fault::from_str(f.trim(), false))
            .collect::<Result<Vec<_>, _>>()
            .map(|f| FaultList(Some(f))),
    }
}

/// The secrets ingest is started with and the load signs with (test values, never real).
const SECRETS: [(Gateway, &str); 4] = [
    (Gateway::GoCardless, "chaos-gocardless-secret-0123456789"),
    (Gateway::Paystack, "sk_test_chaos_paystack_0123456789"),
    (Gateway::Flutterwave, "chaos-flutterwave-hash"),
    (Gateway::PayQi, "chaos-payqi-secret-0123456789"),
];

/// Progress lines go to stderr.
pub(crate) fn say(msg: impl AsRef<str>) {
    eprintln!("[chaos] {}", msg.as_ref());
}

/// Runs the chaos run; the process's exit status.
pub async fn main(args: Args) -> ExitCode {
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            say("FAILED: see the checks above");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("payhook-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let unix = now.as_secs();
    let seed = args.seed.unwrap_or(now.as_nanos() as u64 % 1_000_000_007);
    let fault_count = args
        .fault_count
        .unwrap_or(if args.events <= 10_000 { 1 } else { 2 });
    let ingests = args.ingests.unwrap_or(if args.cluster { 2 } else { 1 });
    if args.connections == 0 || args.workers == 0 || ingests == 0 {
        bail!("--connections, --workers and --ingests must be at least 1");
    }
    let kinds = match &args.faults.0 {
        Some(list) => list.clone(),
        None if args.cluster => Fault::CLUSTER.to_vec(),
        None => Fault::ALL.to_vec(),
    };
    if !args.cluster
        && kinds
            .iter()
            .any(|f| matches!(f, Fault::KillRabbitLeader | Fault::FailoverPostgres))
    {
        bail!("kill-rabbit-leader and failover-postgres need --cluster");
    }
    for bin in ["payhook-ingest", "payhook-worker"] {
        if !args.bin_dir.join(bin).is_file() {
            bail!(
                "{} not found; build it first (cargo build --release -p {bin})",
                args.bin_dir.join(bin).display()
            );
        }
    }
    let root = Rng::new(seed);
    let tag = format!("{unix:x}");
    let workload = Arc::new(Workload::generate(
        &Spec {
            tag: tag.clone(),
            events: args.events,
            duplicates: args.duplicates,
            poison: args.poison,
            id_base: 0,
            mix: Mix::Chaos,
        },
        &mut root.fork(1),
    ));
    let plan = faults::plan(&kinds, fault_count, &mut root.fork(2));
    let refusals = refused::plan(
        &tag,
        args.unparseable,
        args.forged,
        workload.deliveries.len(),
        &mut root.fork(4),
    );
    let duplicates = workload
        .deliveries
        .iter()
        .filter(|d| d.copy_of.is_some())
        .count();
    say(format!(
        "seed {seed} (replay with --seed {seed} --events {}); {} events, {} deliveries + {} \
         duplicates; faults in order: {}",
        args.events,
        human(workload.real_events() as u64),
        human((workload.deliveries.len() - duplicates) as u64),
        human(duplicates as u64),
        if plan.is_empty() {
            "none".to_owned()
        } else {
            plan.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        }
    ));

    let log_dir = args.log_dir.join(format!("run-{unix}"));
    std::fs::create_dir_all(&log_dir)?;
    let db_name = format!("payhook_chaos_{unix}");
    let prefix = format!("chaos{unix}");
    let admin = PgConnectOptions::from_str(&args.pg_url)?;
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .context("connecting to PostgreSQL (is the chaos stack up? use scripts/chaos)")?;
    sqlx::query(&format!("CREATE DATABASE {db_name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut db = url::Url::parse(&args.pg_url)?;
    db.set_path(&db_name);
    let db_url = db.to_string();
    say(format!(
        "database {db_name}, AMQP prefix {prefix}, logs in {}",
        log_dir.display()
    ));

    let gateway = gateway::FakeGateway::start(&workload.mandates).await?;
    let mut stack = Stack::start(
        StackConfig {
            bin_dir: args.bin_dir.clone(),
            log_dir: log_dir.clone(),
            db_url: db_url.clone(),
            amqp_url: args.amqp_url.clone(),
            prefix: prefix.clone(),
            secrets: SECRETS.iter().map(|(g, s)| (*g, (*s).to_owned())).collect(),
            gateway_url: gateway.url(),
            services: args.services.clone(),
            stack: args.stack.clone(),
            rust_log: args.rust_log.clone(),
            reconcile_interval: args.reconcile_interval.clone(),
            relay_after: args.relay_after.clone(),
        },
        ingests,
        args.workers,
    )
    .await?;
    say(format!(
        "payhook-ingest on {} and {} worker(s) ready after {:.1} s",
        stack
            .ingest_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        args.workers,
        started.elapsed().as_secs_f64()
    ));
    // The run's own pool: small, and patient through PostgreSQL restarts.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(PgConnectOptions::from_str(&db_url)?)
        .await?;
    // Bank data: the expected payments (provider `bank`) its credits pay, before the load.
    let invoices = crate::workload::bank::seed(&pool, &workload.bank).await?;
    say(format!(
        "{invoices} expected bank payments registered; {}",
        workload.bank_figures().summary()
    ));

    // The load and the faults, side by side.
    let n = workload.deliveries.len();
    let progress = Arc::new(Progress::default());
    progress.gate.store(
        if plan.is_empty() {
            n
        } else {
            (faults::trigger(0, plan.len(), n) + faults::slack(n, args.connections)).min(n)
        },
        Ordering::Release,
    );
    let load_started = Instant::now();
    let printer = tokio::spawn(print_progress(progress.clone(), workload.clone()));
    let driver = Driver {
        addrs: stack.ingest_addrs.clone(),
        connections: args.connections,
        secrets: SECRETS.iter().map(|(g, s)| (*g, (*s).to_owned())).collect(),
        deadline: load_started + Duration::from_secs(args.load_timeout),
        seed,
    };
    let runner = faults::Runner {
        stack: &mut stack,
        progress: progress.clone(),
        rng: root.fork(3),
        started: load_started,
        deliveries: n,
        connections: args.connections,
        recover_within: Duration::from_secs(args.recover_timeout),
        planned: plan.len(),
        done: 0,
        events_queue: format!("{prefix}.events"),
    };
    let faults_run = async {
        let r = runner.run(&plan).await;
        // Whatever happened, never leave the load waiting at a gate.
        progress.gate.store(n, Ordering::Release);
        r
    };
    let refusals_run = refused::send(
        &refusals,
        driver.addrs[0],
        &driver.secrets,
        progress.clone(),
        driver.deadline,
        root.fork(5),
    );
    let (load, fault_result, refusals_sent) = tokio::join!(
        driver.run(workload.clone(), progress.clone()),
        faults_run,
        refusals_run
    );
    printer.abort();
    let (mut fault_records, fault_error) = match fault_result {
        Ok(r) => (r, None),
        Err(e) => {
            say(format!("a fault did not go as planned: {e:#}"));
            (Vec::new(), Some(format!("{e:#}")))
        }
    };
    say(format!(
        "load done in {:.1} s: {} of {} deliveries acknowledged",
        load.elapsed.as_secs_f64(),
        human(progress.acked_deliveries.load(Ordering::Relaxed)),
        human(n as u64)
    ));
    write_acks(&log_dir.join("acked.tsv"), &workload, &load)?;

    let drain = drain::wait(
        &pool,
        &args.amqp_url,
        &prefix,
        &mut stack,
        Duration::from_secs(args.drain_timeout.unwrap_or(600 + args.events as u64 / 100)),
    )
    .await?;
    say(format!(
        "{} {:.1} s after the load{}",
        if drain.drained {
            "drained"
        } else {
            "NOT drained"
        },
        drain.seconds,
        drain
            .gave_up
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ));

    gaps(&pool, &mut fault_records, &load).await;

    let acked: Vec<bool> = load
        .slots
        .iter()
        .map(|s| s.acked.load(Ordering::Acquire))
        .collect();
    let (mut checks, stored) = verdict::run(&pool, &workload, &acked).await?;
    checks.extend(refused::checks(&pool, &refusals, &refusals_sent).await?);
    checks.push(Check::new(
        "faults injected and recovered",
        fault_records.len() as u64,
        plan.len() as u64,
        fault_error.into_iter().collect(),
    ));
    checks.push(Check::new(
        "in flight at the end (not drained)",
        u64::from(!drain.drained),
        0,
        if drain.drained {
            Vec::new()
        } else {
            vec![format!(
                "{}; left: {:?}",
                drain.gave_up.as_deref().unwrap_or("?"),
                drain.left
            )]
        },
    ));
    checks.push(Check::new(
        "processes that exited on their own",
        stack.crashes.len() as u64,
        0,
        stack.crashes.clone(),
    ));
    let ok = checks.iter().all(|c| c.ok);
    let crashes = stack.crashes.clone();
    // A graceful stop is part of what is observed (not a check: nothing is lost by a kill).
    say("stopping the processes (SIGTERM)");
    let shutdown = stack
        .stop(Duration::from_secs(args.stop_timeout))
        .await
        .into_iter()
        .map(|(process, r)| match r {
            Ok(seconds) => Shutdown {
                process,
                seconds: Some(seconds),
                error: None,
            },
            Err(e) => Shutdown {
                process,
                seconds: None,
                error: Some(e),
            },
        })
        .collect();
    let p = &progress;
    let report = Report {
        seed,
        tag,
        started_at: chrono::DateTime::from_timestamp(unix as i64, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default(),
        workload: WorkloadFigures {
            events: workload.real_events(),
            by_gateway: Gateway::ALL
                .iter()
                .map(|g| {
                    (
                        g.name().to_owned(),
                        workload.events.iter().filter(|e| e.gateway == *g).count(),
                    )
                })
                .collect(),
            payments: workload.payments.len(),
            mandates: workload.mandates.len(),
            deliveries: n - duplicates,
            duplicates,
            poison: args.poison,
            connections: args.connections,
            workers: args.workers,
            ingests,
            bank: workload.bank_figures(),
        },
        load: LoadFigures {
            seconds: load.elapsed.as_secs_f64(),
            requests: p.requests.load(Ordering::Relaxed),
            acked_deliveries: p.acked_deliveries.load(Ordering::Relaxed),
            acked_events: p.acked_events.load(Ordering::Relaxed),
            deliveries_retried: load
                .slots
                .iter()
                .filter(|s| s.attempts.load(Ordering::Relaxed) > 1)
                .count() as u64,
            answers_503: p.answers_503.load(Ordering::Relaxed),
            connection_errors: p.connection_errors.load(Ordering::Relaxed),
            timeouts: p.timeouts.load(Ordering::Relaxed),
            rejected: p.answers_other.load(Ordering::Relaxed),
            first_rejection: load.first_rejection.clone(),
        },
        refused: refused::figures(&refusals, &refusals_sent),
        faults: fault_records,
        drain,
        stored,
        gateway_calls: GatewayCalls {
            mandates: gateway.calls.mandates.load(Ordering::Relaxed),
            customers: gateway.calls.customers.load(Ordering::Relaxed),
            unexpected: gateway.calls.unexpected.load(Ordering::Relaxed),
        },
        crashes,
        shutdown,
        checks,
        ok,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        say(format!("JSON written to {}", path.display()));
    }

    pool.close().await;
    if ok && !args.keep_db {
        let mut conn = PgConnection::connect_with(&admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
    } else {
        say(format!("database {db_name} kept"));
    }
    say(format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(ok)
}

/// How long, from each fault on, ingest gave no 2xx and no event was processed: within the
/// fault's recovery plus 20 s, and never past the next fault (for ingest, nor past the end of
/// the load, where 2xx stop because nothing is left to send).
async fn gaps(
    pool: &sqlx::PgPool,
    records: &mut [faults::FaultRecord],
    load: &driver::LoadOutcome,
) {
    const AFTER: f64 = 20.0;
    let acks: Vec<f64> = load
        .slots
        .iter()
        .filter(|s| s.acked.load(Ordering::Acquire))
        .map(|s| s.acked_ms.load(Ordering::Relaxed) as f64 / 1000.0)
        .collect();
    let load_end = load.elapsed.as_secs_f64();
    // Once everything is processed nothing more can be: the drain's windows end there.
    let last_processed: Option<f64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM max(processed_at)) * 1000)::float8 FROM webhook_events",
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten();
    // A window also ends where the next fault begins: what follows is that fault's.
    let starts: Vec<f64> = records.iter().map(|r| r.at_s).collect();
    for (k, r) in records.iter_mut().enumerate() {
        let next = starts.get(k + 1).copied().unwrap_or(f64::INFINITY);
        let end = (r.at_s + r.recovered_after_s + AFTER)
            .min(load_end)
            .min(next);
        if end > r.at_s {
            r.ingest_gap_s = Some(faults::longest_gap(&acks, r.at_s, end));
        }
        let mut window = (r.recovered_after_s + AFTER).min(next - r.at_s);
        if let Some(last) = last_processed {
            window = window.min((last - r.at_unix_ms as f64) / 1000.0).max(0.0);
        }
        let processed: Result<Vec<f64>, _> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM processed_at) * 1000 - $1)::float8 / 1000
             FROM webhook_events
             WHERE processed_at >= to_timestamp($1 / 1000.0)
               AND processed_at <= to_timestamp($1 / 1000.0) + make_interval(secs => $2)",
        )
        .bind(r.at_unix_ms as f64)
        .bind(window)
        .fetch_all(pool)
        .await;
        if let Ok(times) = processed {
            r.drain_gap_s = Some(faults::longest_gap(&times, 0.0, window));
        }
    }
}

/// A line every 5 s while the load runs.
async fn print_progress(p: Arc<Progress>, w: Arc<Workload>) {
    let started = Instant::now();
    let events = w.events.len();
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        say(format!(
            "load {:>5.0} s: {}/{} deliveries acked, {}/{} events; {} requests, {} × 503, {} \
             connection errors",
            started.elapsed().as_secs_f64(),
            human(p.acked_deliveries.load(Ordering::Relaxed)),
            human(w.deliveries.len() as u64),
            human(p.acked_events.load(Ordering::Relaxed)),
            human(events as u64),
            human(p.requests.load(Ordering::Relaxed)),
            human(p.answers_503.load(Ordering::Relaxed)),
            human(p.connection_errors.load(Ordering::Relaxed)),
        ));
    }
}

/// The record of every acknowledged delivery: when, which status, after how many attempts,
/// and the events it carried (tab-separated; `copy_of` is the original of a re-send).
fn write_acks(
    path: &std::path::Path,
    w: &Workload,
    load: &driver::LoadOutcome,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "delivery\tgateway\tcopy_of\tacked_ms\tstatus\tattempts\tevents"
    )?;
    for (i, (d, s)) in w.deliveries.iter().zip(&load.slots).enumerate() {
        if !s.acked.load(Ordering::Acquire) {
            continue;
        }
        let events: Vec<&str> = d
            .events
            .iter()
            .map(|e| w.events[*e].external_id.as_str())
            .collect();
        writeln!(
            out,
            "{i}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.gateway.name(),
            d.copy_of.map(|c| c.to_string()).unwrap_or_default(),
            s.acked_ms.load(Ordering::Relaxed),
            s.status.load(Ordering::Relaxed),
            s.attempts.load(Ordering::Relaxed),
            events.join(",")
        )?;
    }
    out.flush()?;
    Ok(())
}
