//! What both suites of `payhook-bench` share: progress lines, the bench database's life, the
//! machine and settings a report records, and targets (met or not, with a margin).

use std::str::FromStr;

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Settings the payhook processes inherit from our environment, recorded in the report.
pub const TUNABLES: &[&str] = &[
    "DATABASE_MAX_CONNECTIONS",
    "INGEST_BATCH_MAX",
    "INGEST_TIMEOUT",
    "WORKER_CONCURRENCY",
    "WORKER_BATCH_MAX",
    "WORKER_PREFETCH",
    "RETAIN_DELIVERIES",
    "RETAIN_EVENTS",
    "PRUNE_BATCH",
    "PRUNE_PAUSE",
];

/// Progress lines go to stderr (the report goes to stdout).
pub fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `VAR=value` for every tunable set in our environment.
pub fn settings() -> Vec<String> {
    TUNABLES
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect()
}

/// A fresh database on the server of `admin_url` (a superuser URL): its URL and the server's
/// version.
pub async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<(String, String)> {
    let admin = PgConnectOptions::from_str(admin_url)?;
    let mut conn = PgConnection::connect_with(&admin).await.map_err(|e| {
        anyhow::anyhow!("connecting to PostgreSQL (is the bench stack up? use scripts/bench): {e}")
    })?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    let mut db = url::Url::parse(admin_url)?;
    db.set_path(name);
    Ok((db.to_string(), version))
}

pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(admin_url)?).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Before every step, so that one step's dirty pages are not the next one's checkpoint.
pub async fn checkpoint(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    pub postgresql: String,
    pub rabbitmq: Option<String>,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// Settings the payhook processes got from the environment; empty: their defaults.
    pub settings: Vec<String>,
}

impl Machine {
    pub fn read(
        postgresql: String,
        rabbitmq: Option<String>,
        loadavg_start: String,
        loadavg_end: String,
        settings: Vec<String>,
    ) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            memory_mib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kb| kb / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            postgresql,
            rabbitmq,
            loadavg_start,
            loadavg_end,
            settings,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Target {
    pub target: String,
    /// The measured value the target is about (a ratio, ms, events/s or MiB).
    pub value: f64,
    pub limit: f64,
    /// value / limit for "at least" targets, limit / value for "at most" ones: ≥ 1 is met.
    pub margin: f64,
    pub detail: String,
    pub met: bool,
    /// False when the run did not measure it (a ratio to the peer without `--peer`).
    pub measured: bool,
}

impl Target {
    /// Its row of a report's targets table (`| target | measured | margin | met |`), the
    /// margin with `decimals` digits.
    pub fn row(&self, decimals: usize) -> String {
        format!(
            "| {} | {} | {} | {} |",
            self.target,
            self.detail,
            if self.margin.is_nan() {
                "–".to_owned()
            } else {
                format!("{:.decimals$}", self.margin)
            },
            if !self.measured {
                "not measured"
            } else if self.met {
                "**met**"
            } else {
                "**not met**"
            }
        )
    }

    pub fn at_least(target: &str, value: f64, limit: f64, detail: String) -> Self {
        Self {
            target: target.into(),
            value,
            limit,
            margin: value / limit,
            detail,
            met: value >= limit,
            measured: true,
        }
    }

    pub fn at_most(target: &str, value: f64, limit: f64, detail: String) -> Self {
        Self {
            target: target.into(),
            value,
            limit,
            margin: limit / value,
            detail,
            met: value <= limit,
            measured: true,
        }
    }

    /// A target this run could not measure, and why.
    pub fn unmeasured(target: &str, detail: String) -> Self {
        Self {
            target: target.into(),
            value: f64::NAN,
            limit: f64::NAN,
            margin: f64::NAN,
            detail,
            met: false,
            measured: false,
        }
    }
}
