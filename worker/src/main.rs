//! `payhook-worker`: consumes payhook's events and turns them into members, payments and
//! ledger rows; `replay` puts events back in line.

use clap::Subcommand;
use payhook_shared::amqp::Broker;
use payhook_shared::config::{BrokerSettings, DatabaseSettings};
use payhook_worker::settings::WORKER_SECRET_ENV_HELP;
use payhook_worker::{replay, Worker, WorkerConfig, WorkerSettings};

/// Consumes payhook's events from RabbitMQ and applies them to PostgreSQL — members,
/// payments, the ledger — exactly once in effect, with retries and dead letters.
#[derive(clap::Parser, Debug)]
#[command(name = "payhook-worker", version, after_help = WORKER_SECRET_ENV_HELP, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume events until SIGTERM (the default).
    #[command(after_help = WORKER_SECRET_ENV_HELP)]
    Run(RunArgs),
    /// Publish events again; they end processed once the cause of their failure is fixed.
    Replay(ReplayArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    worker: WorkerSettings,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
}

#[derive(clap::Args, Debug)]
struct ReplayArgs {
    /// payhook event ids (webhook_events.id) or gateway event ids.
    #[arg(required_unless_present = "dead", conflicts_with = "dead")]
    event_ids: Vec<String>,
    /// Replay every dead event (the dead-letter queue and the rows marked dead).
    #[arg(long)]
    dead: bool,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A configuration error is one line on stderr and exit 2, as for payhook-ingest.
    let cli: Cli = payhook_shared::config::parse_cli();
    payhook_shared::telemetry::init_logging();
    let result = match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Replay(args)) => replay(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace: what an operator needs to fix it.
            eprintln!("payhook-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = payhook_shared::shutdown::on_signal();
    let worker = Worker::build(WorkerConfig {
        worker: args.worker,
        database: args.database,
        broker: args.broker,
    })
    .await?;
    worker.run_until_stopped(shutdown).await
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    let broker = Broker::new(&args.broker);
    let report = if args.dead {
        replay::replay_dead(&pool, &broker, true).await?
    } else {
        replay::replay_named(&pool, &broker, &args.event_ids, true).await?
    };
    broker.close().await;
    println!("replayed {} event(s)", report.replayed);
    if !report.unknown.is_empty() {
        anyhow::bail!("no event matches: {}", report.unknown.join(", "));
    }
    Ok(())
}
