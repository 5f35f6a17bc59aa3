//! The worker's settings. Plain values come from flags or env vars; gateway API tokens come
//! from the environment only (see `SECRET_ENV_HELP`).

use std::net::SocketAddr;
use std::time::Duration;

use payhook_shared::config::{parse_duration, BrokerSettings, DatabaseSettings};
use payhook_shared::gateway::GatewaySettings;

/// Settings of `payhook-worker run`.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerSettings {
    /// Ops listener: /metrics, /healthz, /readyz. Plain HTTP: keep it internal.
    #[arg(long, env = "WORKER_OPS_ADDR", default_value = "127.0.0.1:8082")]
    pub worker_ops_addr: SocketAddr,

    /// Events processed at the same time by this process (each holds one PostgreSQL
    /// connection while it runs).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,

    /// Messages RabbitMQ hands this process before it acks any (at least the concurrency).
    #[arg(long, env = "WORKER_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_prefetch: u16,

    /// How often the queue-depth gauge is refreshed.
    #[arg(long, env = "WORKER_QUEUE_POLL", default_value = "5s", value_parser = parse_duration)]
    pub worker_queue_poll: Duration,

    /// Retry, once, a GoCardless payment that failed for insufficient_funds
    /// (POST /payments/{id}/actions/retry).
    #[arg(long, env = "GOCARDLESS_RETRY_FAILED_PAYMENTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub gocardless_retry_failed_payments: bool,

    #[command(flatten)]
    pub gateways: GatewaySettings,
}

/// Everything the worker is configured with.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker: WorkerSettings,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
}

/// The env vars that carry the worker's secrets, for `--help`.
pub const WORKER_SECRET_ENV_HELP: &str = "\
Secrets (environment only):
  GOCARDLESS_API_TOKEN        bearer token for the GoCardless API (enrichment, reconciliation)
  PAYSTACK_API_TOKEN          Paystack secret key, for its API (reconciliation)
  FLUTTERWAVE_API_TOKEN       Flutterwave secret key, for its API (reconciliation)
  PAYQI_API_TOKEN             bearer token for the PayQI API (reconciliation)
Logging:
  RUST_LOG                    tracing filter (default: info)
  LOG_FORMAT                  `json` for JSON log lines (default: text)";
