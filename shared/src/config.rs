//! Typed settings for both binaries. Plain values come from flags or env vars (clap `env`);
//! secrets come from env vars only, so they never show in `ps` or shell history.

use std::net::SocketAddr;
use std::time::Duration;

use crate::providers::Secrets;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/payhook";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The env vars that carry secrets, for `--help` (they are read from the environment only).
pub const SECRET_ENV_HELP: &str = "\
Secrets (environment only; comma-separated lists accept every listed secret, for rotation):
  GOCARDLESS_WEBHOOK_SECRET   GoCardless webhook endpoint secret; unset: /webhooks/gocardless is 404
  PAYSTACK_SECRET_KEY         Paystack secret key; unset: /webhooks/paystack is 404
  FLUTTERWAVE_SECRET_HASH     Flutterwave secret hash (verif-hash); unset: /webhooks/flutterwave is 404
  PAYQI_WEBHOOK_SECRET        PayQI webhook secret; unset: /webhooks/payqi is 404
  PAYHOOK_ADMIN_TOKEN         bearer token for /admin/*; unset: the admin API answers 404
  <PROVIDER>_API_TOKEN        bearer token for a gateway's API (GOCARDLESS_API_TOKEN, ...)
Logging:
  RUST_LOG                    tracing filter (default: info)
  LOG_FORMAT                  `json` for JSON log lines (default: text)";

/// Where PostgreSQL is.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; the database is created if it does not exist.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = parse_postgres_url)]
    pub database_url: String,

    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
}

/// Where RabbitMQ is and how payhook's exchanges and queues are named.
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerSettings {
    /// RabbitMQ URL; for a cluster, its nodes' URLs comma-separated: the first that answers
    /// is used, the next when it is lost.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, value_parser = parse_amqp_urls)]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name (`payhook` → `payhook.events`).
    #[arg(long, env = "PAYHOOK_AMQP_PREFIX", default_value = "payhook")]
    pub amqp_prefix: String,
}

/// Each gateway (the `provider` column value) with the variable holding its webhook secrets.
pub const WEBHOOK_SECRET_VARS: [(&str, &str); 4] = [
    ("gocardless", "GOCARDLESS_WEBHOOK_SECRET"),
    ("paystack", "PAYSTACK_SECRET_KEY"),
    ("flutterwave", "FLUTTERWAVE_SECRET_HASH"),
    ("payqi", "PAYQI_WEBHOOK_SECRET"),
];

/// The variable holding `provider`'s webhook secrets.
pub fn webhook_secret_var(provider: &str) -> Option<&'static str> {
    WEBHOOK_SECRET_VARS
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, v)| *v)
}

/// The webhook secrets of every gateway; a gateway without one is not mounted.
#[derive(Debug, Clone, Default)]
pub struct ProviderSecrets {
    pub gocardless: Option<Secrets>,
    pub paystack: Option<Secrets>,
    pub flutterwave: Option<Secrets>,
    pub payqi: Option<Secrets>,
    pub payqi_tolerance_secs: u64,
}

impl ProviderSecrets {
    /// Reads the secrets from the environment. An empty or malformed list is an error naming
    /// the variable, never the value.
    pub fn from_env(payqi_tolerance_secs: u64) -> Result<Self, String> {
        let var = |p| webhook_secret_var(p).expect("a known provider");
        Ok(Self {
            gocardless: secret_from_env(var("gocardless"))?,
            paystack: secret_from_env(var("paystack"))?,
            flutterwave: secret_from_env(var("flutterwave"))?,
            payqi: secret_from_env(var("payqi"))?,
            payqi_tolerance_secs,
        })
    }

    /// The secrets of `provider`, if configured.
    pub fn of(&self, provider: &str) -> Option<&Secrets> {
        match provider {
            "gocardless" => self.gocardless.as_ref(),
            "paystack" => self.paystack.as_ref(),
            "flutterwave" => self.flutterwave.as_ref(),
            "payqi" => self.payqi.as_ref(),
            _ => None,
        }
    }
}

/// An env var holding a comma-separated secret list; unset means `None`.
pub fn secret_from_env(var: &str) -> Result<Option<Secrets>, String> {
    match std::env::var(var) {
        Ok(v) => v.parse().map(Some).map_err(|e| format!("{var}: {e}")),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{var}: not valid UTF-8")),
    }
}

/// An env var holding one secret (a token); unset or empty means `None`.
pub fn token_from_env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// How webhook bodies are read: by ingest, and by `payhook-worker reparse` reading again what
/// ingest refused.
#[derive(clap::Args, Debug, Clone)]
pub struct ParseSettings {
    /// Longest event id, type or reference accepted, in bytes; a body with a longer one is
    /// refused (400) and kept in rejected_deliveries. Raise it if a gateway's ids grow, then
    /// `payhook-worker reparse --all`.
    #[arg(long, env = "PAYHOOK_MAX_ID_BYTES", default_value_t = crate::json::MAX_ID_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..=1_000_000))]
    pub max_id_bytes: usize,
}

impl ParseSettings {
    /// Puts the settings in force for this process.
    pub fn apply(&self) {
        crate::json::set_max_id_bytes(self.max_id_bytes);
    }
}

/// Settings of `payhook-ingest`.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestSettings {
    /// Public webhook listener.
    #[arg(long, env = "INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub ingest_addr: SocketAddr,

    /// Ops listener: /metrics, /healthz, /readyz, /admin/*. Plain HTTP: keep it internal.
    #[arg(long, env = "INGEST_OPS_ADDR", default_value = "127.0.0.1:8081")]
    pub ingest_ops_addr: SocketAddr,

    /// PEM certificate chain; with INGEST_TLS_KEY, the webhook listener serves HTTPS.
    #[arg(long, env = "INGEST_TLS_CERT", requires = "ingest_tls_key")]
    pub ingest_tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for INGEST_TLS_CERT.
    #[arg(long, env = "INGEST_TLS_KEY", requires = "ingest_tls_cert")]
    pub ingest_tls_key: Option<std::path::PathBuf>,

    /// PEM CA bundle; GoCardless deliveries without a client certificate from it get 403.
    /// Needs TLS.
    #[arg(long, env = "INGEST_CLIENT_CA", requires = "ingest_tls_cert")]
    pub ingest_client_ca: Option<std::path::PathBuf>,

    /// Seconds a PayQI timestamp may differ from our clock.
    #[arg(long, env = "PAYQI_TOLERANCE_SECS", default_value_t = 300)]
    pub payqi_tolerance_secs: u64,

    /// Answer 2xx once PostgreSQL committed, even when RabbitMQ is down (the relay publishes
    /// later).
    #[arg(long, env = "INGEST_ACCEPT_WITHOUT_BROKER", default_value_t = false, action = clap::ArgAction::Set)]
    pub ingest_accept_without_broker: bool,

    /// Most deliveries that share one PostgreSQL transaction and one confirm wait.
    #[arg(long, env = "INGEST_BATCH_MAX", default_value_t = 256)]
    pub ingest_batch_max: usize,

    /// How long a delivery may wait for PostgreSQL and RabbitMQ before it is answered 503.
    #[arg(long, env = "INGEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ingest_timeout: Duration,
}

/// Parses the command line and env; a configuration error is ONE line on stderr
/// (`payhook-ingest: invalid value ... for '--database-url <DATABASE_URL>' ...`) and exit 2.
pub fn parse_cli<T: clap::Parser>() -> T {
    use clap::error::ErrorKind;
    match T::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or_default();
            let bin = T::command().get_name().to_owned();
            eprintln!("{bin}: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
    }
}

/// Accepts `250ms`, `10s`, `15m`, `1h` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("not a duration like 10s or 15m: {e}"))
}

fn parse_postgres_url(s: &str) -> Result<String, String> {
    parse_url_with_port(s, &["postgres", "postgresql"])
}

fn parse_amqp_url(s: &str) -> Result<String, String> {
    parse_url_with_port(s, &["amqp", "amqps"])
}

fn parse_amqp_urls(s: &str) -> Result<String, String> {
    crate::amqp_nodes::parse_list(s, parse_amqp_url)
}

/// A URL of one of `schemes` with a host; the port may be left to the scheme's default.
fn parse_url_with_port(s: &str, schemes: &[&str]) -> Result<String, String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!("scheme must be one of {}", schemes.join(", ")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_host_or_with_the_wrong_scheme_is_refused() {
        assert!(parse_postgres_url("postgres://postgres@127.0.0.1:5432/payhook").is_ok());
        assert!(parse_postgres_url("mysql://127.0.0.1/x").is_err());
        assert!(parse_postgres_url("127.0.0.1:5432").is_err());
        assert!(parse_amqp_url("amqp://guest:guest@127.0.0.1:notaport/%2f").is_err());
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_duration("fifteen").is_err());
    }
}
