//! A system under test as the steps see it: where its webhook front listens, how to start and
//! stop its one worker, and how far it has got (counted in its own database). Two of them:
//! payhook here ([`Payhook`]: payhook-ingest and one payhook-worker as child processes, no
//! gateway API token), and the Flask + Celery peer ([`super::peer::Peer`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use sqlx::PgPool;

use crate::inflight;
use crate::load::{Gateway, Secrets};
use crate::procs::{self, CpuProbe, CpuSample, Service};

/// How far a system has got with the events it stored.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Progress {
    /// Finished with: processed (or, payhook, `ignored`: no handler).
    pub done: i64,
    /// payhook: `dead`. The peer has no such state (a task out of retries leaves its event
    /// unprocessed).
    pub dead: i64,
    /// Still to be looked at by the worker now: payhook `received` / `published`; the peer's
    /// events not processed.
    pub active: i64,
    /// payhook: `retrying` (waiting in a delay queue).
    pub retrying: i64,
}

/// What is waiting at one instant: unfinished events and messages ready in the work queue.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Backlog {
    pub events: i64,
    pub queue: u64,
}

pub trait System {
    /// "payhook" or "peer".
    fn name(&self) -> &'static str;
    /// The webhook listener.
    fn addr(&self) -> SocketAddr;
    fn secrets(&self) -> Secrets;
    /// Starts the one worker; returns once it consumes.
    async fn start_worker(&mut self) -> anyhow::Result<()>;
    async fn stop_worker(&mut self) -> anyhow::Result<()>;
    /// An error if the front or a running worker has exited.
    fn check_alive(&mut self) -> anyhow::Result<()>;
    /// Before a backlog is ingested with the worker stopped.
    async fn prepare_fill(&mut self) -> anyhow::Result<()>;
    async fn progress(&self) -> anyhow::Result<Progress>;
    /// Events finished (any outcome) by the running worker, from a counter cheaper than SQL,
    /// if the system has one: polled often during a drain, where SQL counts would take
    /// PostgreSQL time from the worker.
    async fn finished_fast(&self) -> Option<i64>;
    /// Messages ready in the work queue.
    async fn queue_depth(&self) -> u64;
    fn cpu(&self, probe: &CpuProbe) -> CpuSample;
    fn pool(&self) -> &PgPool;
}

/// The four gateways' webhook secrets payhook-ingest is started with (test values).
pub const SECRETS: [(Gateway, &str); 4] = [
    (Gateway::GoCardless, "bench-gocardless-secret-0123456789"),
    (Gateway::Paystack, "sk_test_bench_paystack_0123456789"),
    (Gateway::Flutterwave, "bench-flutterwave-hash"),
    (Gateway::PayQi, "bench-payqi-secret-0123456789"),
];

/// Gateway API settings that must not reach the payhook processes from our environment: the
/// realistic load is an installation with only its webhook secrets.
const NO_API: &[&str] = &[
    "GOCARDLESS_API_TOKEN",
    "PAYSTACK_API_TOKEN",
    "FLUTTERWAVE_API_TOKEN",
    "PAYQI_API_TOKEN",
    "GOCARDLESS_BANK_SECRET_ID",
    "GOCARDLESS_BANK_SECRET_KEY",
];

/// payhook: ingest (running throughout) and at most one worker.
pub struct Payhook {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub db_url: String,
    pub amqp_url: String,
    pub prefix: String,
    pub reconcile_interval: String,
    pub pool: PgPool,
    pub ingest: Service,
    pub ingest_addr: SocketAddr,
    pub worker: Option<Service>,
    pub workers_started: usize,
}

impl Payhook {
    /// Starts payhook-ingest (which migrates the fresh database) and waits until it is ready.
    pub async fn start(
        bin_dir: PathBuf,
        log_dir: PathBuf,
        db_url: String,
        amqp_url: String,
        prefix: String,
        reconcile_interval: String,
    ) -> anyhow::Result<Self> {
        let ingest_addr = procs::free_addr()?;
        let ops = procs::free_addr()?;
        let mut env = vec![
            ("DATABASE_URL", db_url.clone()),
            ("AMQP_URL", amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", prefix.clone()),
            ("INGEST_ADDR", ingest_addr.to_string()),
            ("INGEST_OPS_ADDR", ops.to_string()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        for (g, secret) in SECRETS {
            env.push((g.secret_env(), secret.to_owned()));
        }
        let mut ingest = Service::spawn_without(
            &bin_dir.join("payhook-ingest"),
            "payhook-ingest",
            ops,
            &env,
            NO_API,
            &log_dir.join("ingest.log"),
        )?;
        ingest.ready(Duration::from_secs(120)).await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&db_url)
            .await?;
        Ok(Self {
            bin_dir,
            log_dir,
            db_url,
            amqp_url,
            prefix,
            reconcile_interval,
            pool,
            ingest,
            ingest_addr,
            worker: None,
            workers_started: 0,
        })
    }

    fn worker_env(&self, ops: SocketAddr) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DATABASE_URL", self.db_url.clone()),
            ("AMQP_URL", self.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", self.prefix.clone()),
            ("WORKER_OPS_ADDR", ops.to_string()),
            ("RECONCILE_INTERVAL", self.reconcile_interval.clone()),
            // Never ask gateways about pending payments: nothing here may call one.
            ("PENDING_AFTER", "30d".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        // No token is set, so no API call is attempted; should one be, it meets a closed
        // port on loopback, never the real gateway.
        for var in [
            "GOCARDLESS_API_URL",
            "PAYSTACK_API_URL",
            "FLUTTERWAVE_API_URL",
            "PAYQI_API_URL",
            "GOCARDLESS_BANK_API_URL",
        ] {
            env.push((var, "http://127.0.0.1:9".to_owned()));
        }
        env
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_worker().await?;
        self.ingest.stop().await?;
        self.pool.close().await;
        Ok(())
    }
}

impl System for Payhook {
    fn name(&self) -> &'static str {
        "payhook"
    }

    fn addr(&self) -> SocketAddr {
        self.ingest_addr
    }

    fn secrets(&self) -> Secrets {
        Secrets(
            SECRETS
                .iter()
                .map(|(g, s)| (*g, s.as_bytes().to_vec()))
                .collect(),
        )
    }

    async fn start_worker(&mut self) -> anyhow::Result<()> {
        if self.worker.is_some() {
            return Ok(());
        }
        self.workers_started += 1;
        let ops = procs::free_addr()?;
        let mut w = Service::spawn_without(
            &self.bin_dir.join("payhook-worker"),
            "payhook-worker",
            ops,
            &self.worker_env(ops),
            NO_API,
            &self
                .log_dir
                .join(format!("worker{}.log", self.workers_started)),
        )?;
        w.ready(Duration::from_secs(120)).await?;
        self.worker = Some(w);
        Ok(())
    }

    async fn stop_worker(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.worker.take() {
            w.stop().await?;
        }
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if !self.ingest.alive() {
            bail!("payhook-ingest exited; see {}", self.log_dir.display());
        }
        if let Some(w) = self.worker.as_mut() {
            if !w.alive() {
                bail!("payhook-worker exited; see {}", self.log_dir.display());
            }
        }
        Ok(())
    }

    async fn prepare_fill(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn progress(&self) -> anyhow::Result<Progress> {
        let (done, dead, active, retrying): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('processed', 'ignored')),
                    count(*) FILTER (WHERE status = 'dead'),
                    count(*) FILTER (WHERE status IN ('received', 'published')),
                    count(*) FILTER (WHERE status = 'retrying')
             FROM webhook_events",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Progress {
            done,
            dead,
            active,
            retrying,
        })
    }

    async fn finished_fast(&self) -> Option<i64> {
        let w = self.worker.as_ref()?;
        let text = procs::get_body(w.ops, "/metrics").await.ok()?;
        let mut finished = 0.0;
        for line in text.lines() {
            let Some(series) = line.strip_prefix("payhook_events_processed_total{") else {
                continue;
            };
            let Some((labels, value)) = series.rsplit_once(' ') else {
                continue;
            };
            // A retry leaves the event for later, but the worker is done with it for now.
            if ["processed", "ignored", "dead", "retry"]
                .iter()
                .any(|o| labels.contains(&format!(r#"outcome="{o}""#)))
            {
                finished += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        Some(finished as i64)
    }

    async fn queue_depth(&self) -> u64 {
        inflight::queues(&self.amqp_url, &[format!("{}.events", self.prefix)])
            .await
            .map_or(0, |q| q[0].0)
    }

    fn cpu(&self, probe: &CpuProbe) -> CpuSample {
        let workers: Vec<u32> = self.worker.iter().map(Service::pid).collect();
        probe.sample(Some(self.ingest.pid()), &workers, &[])
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
