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

    /// Batches of events processed at the same time by this process (each holds one
    /// PostgreSQL connection while it runs).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,

    /// Most events applied in one PostgreSQL transaction. A batch is whatever RabbitMQ has
    /// already handed over, up to this many (no waiting for more); 1 = one transaction per
    /// event.
    #[arg(long, env = "WORKER_BATCH_MAX", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_batch_max: u16,

    /// Messages RabbitMQ hands this process before it acks any (at least the concurrency).
    #[arg(long, env = "WORKER_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
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

    #[command(flatten)]
    pub reconcile: ReconcileSettings,
}

/// Settings of the reconciler (`run` and `reconcile --once`).
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileSettings {
    /// How often one of the workers runs a reconciler pass (relays, pending payments).
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// Age after which an event still `received` is published by the relay (younger ones are
    /// most likely still on their way through ingest).
    #[arg(long, env = "RELAY_AFTER", default_value = "5s", value_parser = parse_duration)]
    pub relay_after: Duration,

    /// Age (since its last change) after which a pending or submitted payment is checked
    /// with its gateway's API; also the least time between two checks of one payment.
    #[arg(long, env = "PENDING_AFTER", default_value = "15m", value_parser = parse_duration)]
    pub pending_after: Duration,

    /// Events or domain events published per confirm wait by the relays.
    #[arg(long, env = "RELAY_BATCH", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub relay_batch: u32,

    /// Most payments checked per gateway in one pass (the oldest checks first).
    #[arg(long, env = "RECONCILE_CHECKS_PER_PASS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub reconcile_checks_per_pass: u32,

    /// Least time between two calls to one gateway's API (its rate limit); gateways are
    /// called side by side.
    #[arg(long, env = "RECONCILE_GATEWAY_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub reconcile_gateway_interval: Duration,

    /// Age after which a raw delivery (webhook_deliveries) is deleted by the reconciler's
    /// pruning pass; 0 keeps them for ever.
    #[arg(long, env = "RETAIN_DELIVERIES", default_value = "30d", value_parser = parse_retention)]
    pub retain_deliveries: Retention,

    /// Age after which processed and ignored events, and published domain events, are
    /// deleted; 0 keeps them for ever. Dead, retrying and unpublished ones are never pruned.
    #[arg(long, env = "RETAIN_EVENTS", default_value = "90d", value_parser = parse_retention)]
    pub retain_events: Retention,

    /// Most rows one pruning statement deletes (each is a short transaction).
    #[arg(long, env = "PRUNE_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub prune_batch: u32,

    /// Pause between two pruning statements, leaving the database to ingest.
    #[arg(long, env = "PRUNE_PAUSE", default_value = "200ms", value_parser = parse_duration)]
    pub prune_pause: Duration,
}

/// How long rows are kept; `None` (written `0`): for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// `0` (for ever) or a duration like `30d`, `12h`.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    if s.trim() == "0" {
        return Ok(Retention(None));
    }
    match parse_duration(s)? {
        d if d.is_zero() => Ok(Retention(None)),
        d => Ok(Retention(Some(d))),
    }
}

impl Default for ReconcileSettings {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            reconcile_interval: Duration::from_secs(60),
            relay_after: Duration::from_secs(5),
            pending_after: Duration::from_secs(15 * 60),
            relay_batch: 500,
            reconcile_checks_per_pass: 100,
            reconcile_gateway_interval: Duration::from_millis(250),
            retain_deliveries: Retention(Some(Duration::from_secs(30 * 86400))),
            retain_events: Retention(Some(Duration::from_secs(90 * 86400))),
            prune_batch: 1000,
            prune_pause: Duration::from_millis(200),
        }
    }
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
  GOCARDLESS_BANK_SECRET_ID   secret id for GoCardless's Bank Account Data API (bank
  GOCARDLESS_BANK_SECRET_KEY  transactions that arrive as ids only); its key
Logging:
  RUST_LOG                    tracing filter (default: info)
  LOG_FORMAT                  `json` for JSON log lines (default: text)";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        reconcile: ReconcileSettings,
    }

    #[test]
    fn retention_is_a_duration_or_0_for_ever() {
        assert_eq!(parse_retention("0"), Ok(Retention(None)));
        assert_eq!(parse_retention("0s"), Ok(Retention(None)));
        assert_eq!(
            parse_retention("30d"),
            Ok(Retention(Some(Duration::from_secs(30 * 86400))))
        );
        assert!(parse_retention("forever").is_err());
    }

    #[test]
    fn the_default_reconcile_settings_are_the_flags_defaults() {
        let cli = Cli::try_parse_from(["payhook-worker"]).unwrap();
        assert_eq!(
            format!("{:?}", cli.reconcile),
            format!("{:?}", ReconcileSettings::default())
        );
    }
}
