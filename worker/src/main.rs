//! `payhook-worker`: consumes payhook's events and turns them into members, payments and
//! ledger rows; `replay` puts events back in line.

use clap::Subcommand;
use payhook_shared::amqp::Broker;
use payhook_shared::config::{BrokerSettings, DatabaseSettings};
use payhook_shared::gateway::{GatewaySettings, Gateways};
use payhook_worker::reconciler::Reconciler;
use payhook_worker::settings::{ReconcileSettings, WORKER_SECRET_ENV_HELP};
use payhook_worker::{replay, Worker, WorkerConfig, WorkerSettings};

mod reparse;
mod send_test;
mod show;
mod verify_delivery;

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
    /// Run one reconciler pass now: relay unpublished events and domain events, check
    /// pending payments with their gateways; prints what it did.
    #[command(after_help = WORKER_SECRET_ENV_HELP)]
    Reconcile(ReconcileArgs),
    /// Where is a payment and why did it fail: the payment or member a reference, gateway
    /// payment id, mandate id, email or event id names, with its events in time order
    /// (status, attempts, last error).
    Show(ShowArgs),
    /// Sign a sample webhook with the gateway's configured secret (first of the list), post it
    /// to ingest and say what came back, like a gateway dashboard's "send test webhook".
    #[command(after_help = SEND_TEST_ENV_HELP)]
    SendTest(SendTestArgs),
    /// Re-check a stored delivery's signature (its raw body and signature headers, as kept in
    /// webhook_deliveries) against the gateway's configured secrets; says which one, by its
    /// position in the list, signed it. Exit 1 when none did.
    #[command(after_help = VERIFY_DELIVERY_ENV_HELP)]
    VerifyDelivery(VerifyDeliveryArgs),
    /// Read rejected deliveries (genuine bodies refused for their content, kept in
    /// rejected_deliveries) again with this version; those that now parse are ingested as
    /// the gateway's delivery would be, and processed. Exit 1 when any is still refused.
    Reparse(reparse::ReparseArgs),
    /// Run one retention pass now (RETAIN_DELIVERIES, RETAIN_EVENTS): delete old raw
    /// deliveries, processed and ignored events and published domain events in small
    /// batches; prints what it removed per table. The reconciler does the same every pass.
    Prune(PruneArgs),
    /// Erase a member's personal data (right to be forgotten): name, email and address
    /// cleared, the raw deliveries of the member's events deleted, the personal fields of
    /// their stored payloads cleared; amounts, dates, statuses and the ledger stay.
    /// Idempotent; prints what it erased.
    Forget(ForgetArgs),
}

#[derive(clap::Args, Debug)]
struct ForgetArgs {
    /// The member's mandate id, or email (every member with that email).
    target: String,
    #[command(flatten)]
    database: DatabaseSettings,
}

#[derive(clap::Args, Debug)]
struct PruneArgs {
    /// Count what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    reconcile: ReconcileSettings,
    #[command(flatten)]
    database: DatabaseSettings,
}

#[derive(clap::Args, Debug)]
struct VerifyDeliveryArgs {
    /// payhook's delivery id (webhook_deliveries.id; `show` prints an event's delivery).
    id: i64,
    /// Seconds a PayQI timestamp may differ from the time the delivery was received.
    #[arg(long, env = "PAYQI_TOLERANCE_SECS", default_value_t = 300)]
    payqi_tolerance_secs: u64,
    #[command(flatten)]
    database: DatabaseSettings,
}

const VERIFY_DELIVERY_ENV_HELP: &str = "\
Secrets (environment only; each secret of the list is tried, first to last):
  GOCARDLESS_WEBHOOK_SECRET, PAYSTACK_SECRET_KEY, PAYQI_WEBHOOK_SECRET
  (Flutterwave deliveries cannot be re-verified: their verif-hash is the secret itself and is
  never stored.)";

#[derive(clap::Args, Debug)]
struct ShowArgs {
    /// A payment reference or gateway payment id, a mandate id, a member's email, payhook's
    /// event id or the gateway's event id.
    query: String,
    #[command(flatten)]
    database: DatabaseSettings,
}

#[derive(clap::Args, Debug)]
struct SendTestArgs {
    /// The gateway to imitate.
    #[arg(value_parser = ["gocardless", "paystack", "flutterwave", "payqi"])]
    provider: String,
    #[command(flatten)]
    target: send_test::Target,
}

const SEND_TEST_ENV_HELP: &str = "\
Secrets (environment only; the first secret of the list signs the test webhook):
  GOCARDLESS_WEBHOOK_SECRET, PAYSTACK_SECRET_KEY, FLUTTERWAVE_SECRET_HASH, PAYQI_WEBHOOK_SECRET";

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
    /// Read the gateway event ids as this gateway's (needed when two gateways use the same id).
    #[arg(long, value_parser = payhook_shared::lookup::PROVIDERS, conflicts_with = "dead")]
    provider: Option<String>,
    /// Replay every dead event (the dead-letter queue and the rows marked dead).
    #[arg(long)]
    dead: bool,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
}

#[derive(clap::Args, Debug)]
struct ReconcileArgs {
    /// One pass, then exit (the only mode: the periodic passes run inside `payhook-worker run`).
    #[arg(long, required = true)]
    once: bool,
    /// How long to wait for a pass already running on a worker to end before giving up
    /// (exit 1).
    #[arg(long, default_value = "5m", value_parser = payhook_shared::config::parse_duration)]
    wait: std::time::Duration,
    #[command(flatten)]
    reconcile: ReconcileSettings,
    #[command(flatten)]
    gateways: GatewaySettings,
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
        Some(Command::Reconcile(args)) => reconcile(args).await,
        Some(Command::Show(args)) => show(args).await,
        Some(Command::SendTest(args)) => send_test::send_test(&args.provider, &args.target).await,
        Some(Command::VerifyDelivery(args)) => verify(args).await,
        Some(Command::Reparse(args)) => reparse::reparse(args).await,
        Some(Command::Prune(args)) => prune(args).await,
        Some(Command::Forget(args)) => forget(args).await,
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
    let mut unknown = Vec::new();
    let names = match &args.provider {
        // Resolved here, within the provider, to payhook ids: those name one event each.
        Some(provider) => {
            let mut ids = Vec::new();
            for name in &args.event_ids {
                use payhook_shared::lookup::{resolve_event, EventRef};
                match resolve_event(&pool, name, Some(provider)).await? {
                    EventRef::One(id) => ids.push(id.to_string()),
                    _ => unknown.push(format!("{name} ({provider})")),
                }
            }
            ids
        }
        None => args.event_ids.clone(),
    };
    let report = if args.dead {
        replay::replay_dead(&pool, &broker, true).await?
    } else {
        replay::replay_named(&pool, &broker, &names, true).await?
    };
    broker.close().await;
    println!("replayed {} event(s)", report.replayed);
    unknown.extend(report.unknown);
    let mut problems = report.ambiguous;
    if !unknown.is_empty() {
        problems.push(format!("no event matches: {}", unknown.join(", ")));
    }
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("; "));
    }
    Ok(())
}

async fn verify(args: VerifyDeliveryArgs) -> anyhow::Result<()> {
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    let report =
        verify_delivery::verify_delivery(&pool, args.id, args.payqi_tolerance_secs).await?;
    println!("{report}");
    match report.verdict {
        verify_delivery::Verdict::Signed { .. } => Ok(()),
        verify_delivery::Verdict::Refused(_) => {
            anyhow::bail!("delivery {} is not verified", args.id)
        }
    }
}

/// `forget MANDATE_ID|EMAIL`: one line per member erased; exit 1 when none matches.
async fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    let erased = payhook_shared::erasure::forget(&pool, &args.target).await?;
    if erased.is_empty() {
        anyhow::bail!("no member has that mandate id or email");
    }
    for e in erased {
        println!("forget: {e}");
    }
    Ok(())
}

/// `prune [--dry-run]`: one retention pass, with its running count per table on stderr.
async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    let shutdown = payhook_shared::shutdown::on_signal();
    let mut shown = false;
    let pruned = payhook_worker::reconciler::prune::run(
        &pool,
        &args.reconcile,
        args.dry_run,
        &shutdown,
        &mut |table, n| {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{table}: {n} row(s)   ");
            let _ = err.flush();
            shown = true;
        },
    )
    .await?;
    if shown {
        eprintln!();
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "prune: {verb} webhook_deliveries {}, webhook_events {}, domain_outbox {}",
        pruned.deliveries, pruned.events, pruned.outbox
    );
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    print!("{}", show::show(&pool, &args.query).await?);
    Ok(())
}

/// `reconcile --once`: waits for a pass running on a worker to end (they never overlap), runs
/// one, prints its summary. Exit 1 when a step failed on our side or the wait ran out.
async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let pool = payhook_shared::db::connect_and_migrate(&args.database).await?;
    let gateways = Gateways::from_settings(&args.gateways).map_err(anyhow::Error::msg)?;
    let broker = std::sync::Arc::new(Broker::new(&args.broker));
    let reconciler = Reconciler {
        pool,
        broker: broker.clone(),
        gateways,
        settings: args.reconcile,
        shutdown: payhook_shared::shutdown::on_signal(),
    };
    let summary = reconciler.once(args.wait).await;
    broker.close().await;
    let Some(summary) = summary? else {
        anyhow::bail!(
            "a reconcile pass was still running on a worker after {}; try again later",
            humantime_secs(args.wait)
        );
    };
    println!("reconcile: {summary}");
    if summary.failed_steps > 0 {
        anyhow::bail!(
            "{} step(s) failed; see the log lines above",
            summary.failed_steps
        );
    }
    Ok(())
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}
