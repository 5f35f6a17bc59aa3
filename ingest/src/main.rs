//! `payhook-ingest`: receives gateway webhooks, stores and publishes them, then answers.

use payhook_ingest::{Application, IngestConfig};
use payhook_shared::config::{
    BrokerSettings, DatabaseSettings, IngestSettings, ParseSettings, ProviderSecrets,
    SECRET_ENV_HELP,
};

/// Receives payment-gateway webhooks (GoCardless, Paystack, Flutterwave, PayQI), verifies
/// them on the raw bytes, stores them in PostgreSQL, publishes them to RabbitMQ with
/// confirms, and only then answers 2xx.
#[derive(clap::Parser, Debug)]
#[command(name = "payhook-ingest", version, after_help = SECRET_ENV_HELP)]
struct Cli {
    #[command(flatten)]
    ingest: IngestSettings,
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    parse: ParseSettings,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli: Cli = payhook_shared::config::parse_cli();
    payhook_shared::telemetry::init_logging();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain, no backtrace: what an operator needs to fix it.
            eprintln!("payhook-ingest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let secrets =
        ProviderSecrets::from_env(cli.ingest.payqi_tolerance_secs).map_err(anyhow::Error::msg)?;
    cli.parse.apply();
    let shutdown = payhook_shared::shutdown::on_signal();
    let app = Application::build(IngestConfig {
        ingest: cli.ingest,
        database: cli.database,
        broker: cli.broker,
        secrets,
        admin_token: payhook_shared::config::token_from_env("PAYHOOK_ADMIN_TOKEN"),
    })
    .await?;
    app.run_until_stopped(shutdown).await
}
