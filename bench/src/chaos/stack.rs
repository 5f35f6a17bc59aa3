//! The system under test as the chaos run drives it: one `payhook-ingest` and N
//! `payhook-worker` processes (children of ours, through [`crate::procs::Service`]), each
//! restartable on the same addresses after a `kill -9`, and the stack's PostgreSQL and
//! RabbitMQ, restarted through `scripts/services.sh` exactly as an operator would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::Gateway;
use crate::procs::{self, Service};

/// Everything needed to (re)start the processes.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub db_url: String,
    pub amqp_url: String,
    pub prefix: String,
    /// Each gateway's webhook secret (the same the load signs with).
    pub secrets: Vec<(Gateway, String)>,
    /// The fake gateway API the workers call.
    pub gateway_url: String,
    pub services: PathBuf,
    pub stack: String,
    pub rust_log: String,
    /// `RECONCILE_INTERVAL` and `RELAY_AFTER` of the workers.
    pub reconcile_interval: String,
    pub relay_after: String,
}

/// The running processes.
pub struct Stack {
    cfg: StackConfig,
    ingest: Option<Service>,
    pub ingest_addr: SocketAddr,
    ingest_ops: SocketAddr,
    workers: Vec<Option<Service>>,
    worker_ops: Vec<SocketAddr>,
    /// Processes found dead that no fault killed: (name, when, how), for the report.
    pub crashes: Vec<String>,
}

impl Stack {
    /// Starts ingest (which migrates the fresh database) and then `workers` workers, and
    /// waits until all of them are ready.
    pub async fn start(cfg: StackConfig, workers: usize) -> anyhow::Result<Self> {
        let mut stack = Stack {
            ingest: None,
            ingest_addr: procs::free_addr()?,
            ingest_ops: procs::free_addr()?,
            worker_ops: (0..workers)
                .map(|_| procs::free_addr())
                .collect::<anyhow::Result<_>>()?,
            workers: (0..workers).map(|_| None).collect(),
            crashes: Vec::new(),
            cfg,
        };
        stack.start_ingest()?;
        stack.ingest_mut().ready(Duration::from_secs(120)).await?;
        for i in 0..workers {
            stack.start_worker(i)?;
        }
        stack.ready(Duration::from_secs(120)).await?;
        Ok(stack)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    fn ingest_mut(&mut self) -> &mut Service {
        self.ingest.as_mut().expect("ingest is running")
    }

    fn start_ingest(&mut self) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.cfg.db_url.clone()),
            ("AMQP_URL", self.cfg.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", self.cfg.prefix.clone()),
            ("INGEST_ADDR", self.ingest_addr.to_string()),
            ("INGEST_OPS_ADDR", self.ingest_ops.to_string()),
            ("RUST_LOG", self.cfg.rust_log.clone()),
        ];
        for (gateway, secret) in &self.cfg.secrets {
            env.push((gateway.secret_env(), secret.clone()));
        }
        self.ingest = Some(Service::spawn(
            &self.cfg.bin_dir.join("payhook-ingest"),
            "payhook-ingest",
            self.ingest_ops,
            &env,
            &self.cfg.log_dir.join("ingest.log"),
        )?);
        Ok(())
    }

    fn start_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let ops = self.worker_ops[i];
        let mut env = vec![
            ("DATABASE_URL", self.cfg.db_url.clone()),
            ("AMQP_URL", self.cfg.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", self.cfg.prefix.clone()),
            ("WORKER_OPS_ADDR", ops.to_string()),
            ("RUST_LOG", self.cfg.rust_log.clone()),
            // The relays run in every reconciler pass: short, so that what a fault left
            // unpublished is published soon and the end of the run drains quickly.
            ("RECONCILE_INTERVAL", self.cfg.reconcile_interval.clone()),
            ("RELAY_AFTER", self.cfg.relay_after.clone()),
            // Never ask gateways about pending payments during the run: the answers would be
            // a second source of truth the checks would have to model.
            ("PENDING_AFTER", "30d".to_owned()),
        ];
        for var in [
            "GOCARDLESS_API_URL",
            "PAYSTACK_API_URL",
            "FLUTTERWAVE_API_URL",
            "PAYQI_API_URL",
        ] {
            env.push((var, self.cfg.gateway_url.clone()));
        }
        for var in [
            "GOCARDLESS_API_TOKEN",
            "PAYSTACK_API_TOKEN",
            "FLUTTERWAVE_API_TOKEN",
            "PAYQI_API_TOKEN",
        ] {
            env.push((var, "chaos-api-token".to_owned()));
        }
        self.workers[i] = Some(Service::spawn(
            &self.cfg.bin_dir.join("payhook-worker"),
            &format!("payhook-worker #{}", i + 1),
            ops,
            &env,
            &self.cfg.log_dir.join(format!("worker{}.log", i + 1)),
        )?);
        Ok(())
    }

    /// `kill -9` worker `i`; its pid.
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let w = self.workers[i].take().context("worker not running")?;
        let pid = w.pid();
        w.kill().await?;
        Ok(pid)
    }

    pub fn restart_worker(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_worker(i)
    }

    /// `kill -9` ingest; its pid.
    pub async fn kill_ingest(&mut self) -> anyhow::Result<u32> {
        let s = self.ingest.take().context("ingest not running")?;
        let pid = s.pid();
        s.kill().await?;
        Ok(pid)
    }

    /// Starts ingest again on the same addresses (gateways keep the URL they know).
    pub fn restart_ingest(&mut self) -> anyhow::Result<()> {
        self.start_ingest()
    }

    /// `scripts/services.sh <command> --stack <stack>`, output appended to services.log.
    pub async fn services(&self, command: &str) -> anyhow::Result<()> {
        let log = self.cfg.log_dir.join("services.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let status = tokio::process::Command::new(&self.cfg.services)
            .args([command, "--stack", &self.cfg.stack])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .await
            .with_context(|| format!("running {}", self.cfg.services.display()))?;
        if !status.success() {
            bail!(
                "{} {command} --stack {} failed ({status}); see {}",
                self.cfg.services.display(),
                self.cfg.stack,
                log.display()
            );
        }
        Ok(())
    }

    /// Waits until ingest and every worker answer /readyz with 200. A process that exited
    /// on its own is a finding: it is recorded in `crashes` and started again.
    pub async fn ready(&mut self, within: Duration) -> anyhow::Result<()> {
        self.restart_crashed()?;
        let deadline = Instant::now() + within;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut services: Vec<&mut Service> = self
            .ingest
            .iter_mut()
            .chain(self.workers.iter_mut().flatten())
            .collect();
        for s in services.iter_mut() {
            s.ready(left()).await?;
        }
        Ok(())
    }

    /// Records and restarts any process that died without a fault killing it.
    pub fn restart_crashed(&mut self) -> anyhow::Result<()> {
        if self.ingest.as_mut().is_some_and(|s| !s.alive()) {
            self.crashes.push("payhook-ingest exited on its own".into());
            self.start_ingest()?;
        }
        for i in 0..self.workers.len() {
            if self.workers[i].as_mut().is_some_and(|s| !s.alive()) {
                self.crashes
                    .push(format!("payhook-worker #{} exited on its own", i + 1));
                self.start_worker(i)?;
            }
        }
        Ok(())
    }

    /// SIGTERM to everything (graceful), waiting up to `limit` for each to exit (then
    /// SIGKILL). For each process, how long it took, or why it had to be killed.
    pub async fn stop(self, limit: Duration) -> Vec<(String, Result<f64, String>)> {
        let mut stops = Vec::new();
        for s in self.workers.into_iter().flatten().chain(self.ingest) {
            let name = s.name.clone();
            let r = s
                .stop_within(limit)
                .await
                .map(|d| d.as_secs_f64())
                .map_err(|e| format!("{e:#}"));
            stops.push((name, r));
        }
        stops
    }
}
