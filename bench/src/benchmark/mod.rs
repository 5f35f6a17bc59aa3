//! `payhook-bench`'s command line and its two suites.
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`realistic`] | the default (issue 11): the realistic mix, drain, ingest alone, end to end with CPU per event; `--peer` side by side with the Flask + Celery app; then retention under load (issue 15) |
//! | [`friendly`] | issue 7's suite (`--workload friendly`): `payments.created` only, the pgbench floor, cost growth |
//! | [`common`] | what both share: database life, machine, settings, targets |
//! | [`history`] | old rows stored with SQL: the cost-growth step's, the retention step's |

pub mod common;
mod friendly;
pub mod history;
mod realistic;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use common::say;

/// payhook's benchmark. Default: issue 11's realistic mix from all four gateways (lifecycles
/// interleaved and out of order, payments before their mandate, 5 % verbatim re-sends, no
/// gateway API token), measured as ingest alone, a drain from a full queue with 1 worker, and
/// ingest + 1 worker end to end at 32 connections, with CPU seconds per processed event for
/// each component; then retention under load: old rows pruned by `payhook-worker prune` while
/// ingest is measured again (`--prune-rows`). Exits 1 if any accepted event is missing or dead
/// at the end, or any delivery was refused. Run it through scripts/bench, which builds the release binaries and
/// starts the private bench stack (PostgreSQL 127.0.0.1:56432, RabbitMQ 127.0.0.1:56672).
#[derive(Parser, Debug)]
#[command(name = "payhook-bench", args_override_self = true)]
pub struct Args {
    /// CI smoke size, a few seconds per step (realistic: 3,000-event drain, 1 s warm-up and
    /// 5 s steady end to end and in each retention period, 100,000 rows pruned; friendly: 2 s steps, 2,000-event drains, 100,000 stored events).
    /// Its figures are not comparable with a full run's.
    #[arg(long)]
    pub quick: bool,
    /// What the load is. realistic: all four gateways, GoCardless as accounts (each
    /// mandate's mandates.created, then four payments.confirmed with metadata.amount and
    /// metadata.currency). gocardless: those GoCardless accounts alone. friendly: issue 7's
    /// suite (payments.created only, workers stopped during ingest, pgbench floor, cost
    /// growth).
    #[arg(long, value_enum, default_value_t = WorkloadArg::Realistic)]
    pub workload: WorkloadArg,
    /// Also run the reference Flask + gunicorn + Celery app in this directory (e.g.
    /// ../shared/peers/flask_celery) in the same run, on the same PostgreSQL (its own database)
    /// and RabbitMQ, with the same load, and print every ratio beside it. It only does
    /// GoCardless, so the side-by-side steps use the GoCardless realistic mix for both.
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// The peer's virtualenv (flask gunicorn gocardless_pro psycopg2-binary celery);
    /// scripts/bench creates it on first use.
    #[arg(long, default_value = "target/peer-venv")]
    pub peer_venv: PathBuf,
    /// gunicorn workers of the peer (its run.sh default).
    #[arg(long, default_value_t = 5)]
    pub peer_web_workers: usize,
    /// Celery concurrency of the peer (its run.sh default).
    #[arg(long, default_value_t = 2)]
    pub peer_celery_concurrency: usize,
    /// Concurrent keep-alive connections of the load.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds of the end-to-end steady period, and the least of each retention period
    /// (default 30; --quick 5).
    #[arg(long)]
    pub steady_secs: Option<u64>,
    /// Seconds of load before a steady period starts counting, or before the prune starts
    /// (default 5; --quick 1).
    #[arg(long)]
    pub warmup_secs: Option<u64>,
    /// Events in each drain backlog (realistic default 30,000, --quick 3,000; friendly
    /// 20,000, --quick 2,000).
    #[arg(long)]
    pub drain_events: Option<u64>,
    /// After each step the worker finishes what is left (a growing end-to-end backlog may
    /// take minutes); the wait gives up after this many seconds in which no event finished
    /// (events parked for a long retry). What is unfinished at the end counts as missing.
    #[arg(long, default_value_t = 120)]
    pub settle_secs: u64,
    /// Seed of the workload (default: from the clock; printed at the start).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of deliveries sent a second time, verbatim, a little later.
    #[arg(long, default_value_t = 0.05)]
    pub duplicates: f64,
    /// RECONCILE_INTERVAL of the worker: the reconciler relays the domain outbox every pass,
    /// so its cost is part of what is measured (a real installation runs it every 60 s).
    #[arg(long, default_value = "5s")]
    pub reconcile_interval: String,
    /// friendly: seconds per load step (default 10; --quick 2).
    #[arg(long)]
    pub step_secs: Option<u64>,
    /// friendly: events stored before the cost-growth step (default 1,000,000; --quick
    /// 100,000).
    #[arg(long)]
    pub stored_events: Option<u64>,
    /// Old rows the retention step stores before it measures ingest without, then while,
    /// `payhook-worker prune` deletes them: raw deliveries and their processed events (about
    /// 100 days old, bodies the size of the mix's), counted together (default 1,000,000;
    /// --quick 100,000; 0 skips the step). The realistic workloads only.
    #[arg(long)]
    pub prune_rows: Option<u64>,
    /// Run the retention step alone (a fresh database, the chosen realistic mix), without the
    /// suite's other steps.
    #[arg(long)]
    pub prune_only: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A superuser URL of the PostgreSQL server to use (the bench creates its own databases).
    #[arg(
        long,
        env = "BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:56432/postgres"
    )]
    pub pg_url: String,
    /// The RabbitMQ to use (payhook gets its own AMQP prefix; the peer's Celery queue is
    /// purged before each of its steps).
    #[arg(
        long,
        env = "BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:56672/%2f"
    )]
    pub amqp_url: String,
    /// Where payhook-ingest and payhook-worker (release builds) are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// friendly: pgbench, for the floor.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin/pgbench")]
    pub pgbench: PathBuf,
    /// The PostgreSQL data directory (its postmaster.pid gives the CPU breakdown).
    #[arg(long, env = "BENCH_PG_DATA")]
    pub pg_data: Option<PathBuf>,
    /// RabbitMQ's pid file (for the CPU breakdown).
    #[arg(long, env = "BENCH_RABBIT_PID_FILE")]
    pub rabbit_pid_file: Option<PathBuf>,
    #[arg(long, env = "BENCH_RABBITMQ_VERSION")]
    pub rabbitmq_version: Option<String>,
    /// Keep the databases afterwards (they are always kept when the run fails).
    #[arg(long)]
    pub keep_db: bool,
    /// Logs of the child processes (and friendly's pgbench script).
    #[arg(long, default_value = "target/bench")]
    pub log_dir: PathBuf,
}

/// `--workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadArg {
    Realistic,
    #[value(name = "gocardless")]
    GoCardless,
    Friendly,
}

/// Runs the benchmark; the process's exit status.
pub async fn main(args: Args) -> ExitCode {
    let result = match args.workload {
        WorkloadArg::Friendly if args.peer.is_some() => Err(anyhow::anyhow!(
            "--peer runs with the realistic workloads only (the peer does not do issue 7's steps)"
        )),
        WorkloadArg::Friendly if args.prune_only => Err(anyhow::anyhow!(
            "--prune-only runs with the realistic workloads only"
        )),
        WorkloadArg::Friendly => friendly::run(&args).await,
        _ => realistic::run(&args).await,
    };
    match result {
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
