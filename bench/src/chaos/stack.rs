//! The system under test as the chaos run drives it: M `payhook-ingest` and N
//! `payhook-worker` processes (children of ours, through [`crate::procs::Service`]), each
//! restartable on the same addresses after a `kill -9`, and the stack's PostgreSQL and
//! RabbitMQ, restarted (or, for a cluster, a node killed and a standby promoted) through
//! `scripts/services.sh` exactly as an operator would.

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
    ingests: Vec<Option<Service>>,
    /// Where each ingest takes webhooks (the load spreads its connections over them).
    pub ingest_addrs: Vec<SocketAddr>,
    ingest_ops: Vec<SocketAddr>,
    workers: Vec<Option<Service>>,
    worker_ops: Vec<SocketAddr>,
    /// Processes found dead that no fault killed: (name, when, how), for the report.
    pub crashes: Vec<String>,
}

impl Stack {
    /// Starts the first ingest (which migrates the fresh database), then the other ingests
    /// and `workers` workers, and waits until all of them are ready.
    pub async fn start(cfg: StackConfig, ingests: usize, workers: usize) -> anyhow::Result<Self> {
        let addrs = |n: usize| {
            (0..n)
                .map(|_| procs::free_addr())
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let mut stack = Stack {
            ingests: (0..ingests).map(|_| None).collect(),
            ingest_addrs: addrs(ingests)?,
            ingest_ops: addrs(ingests)?,
            worker_ops: (0..workers)
                .map(|_| procs::free_addr())
                .collect::<anyhow::Result<_>>()?,
            workers: (0..workers).map(|_| None).collect(),
            crashes: Vec::new(),
            cfg,
        };
        stack.start_ingest(0)?;
        if let Some(first) = stack.ingests[0].as_mut() {
            first.ready(Duration::from_secs(120)).await?;
        }
        for i in 1..ingests {
            stack.start_ingest(i)?;
        }
        for i in 0..workers {
            stack.start_worker(i)?;
        }
        stack.ready(Duration::from_secs(120)).await?;
        Ok(stack)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    pub fn ingests(&self) -> usize {
        self.ingests.len()
    }

    fn start_ingest(&mut self, i: usize) -> anyhow::Result<()> {
        let mut env = vec![
            ("DATABASE_URL", self.cfg.db_url.clone()),
            ("AMQP_URL", self.cfg.amqp_url.clone()),
            ("PAYHOOK_AMQP_PREFIX", self.cfg.prefix.clone()),
            ("INGEST_ADDR", self.ingest_addrs[i].to_string()),
            ("INGEST_OPS_ADDR", self.ingest_ops[i].to_string()),
            ("RUST_LOG", self.cfg.rust_log.clone()),
        ];
        for (gateway, secret) in &self.cfg.secrets {
            env.push((gateway.secret_env(), secret.clone()));
        }
        let (name, log) = if self.ingests.len() == 1 {
            ("payhook-ingest".to_owned(), "ingest.log".to_owned())
        } else {
            (
                format!("payhook-ingest #{}", i + 1),
                format!("ingest{}.log", i + 1),
            )
        };
        self.ingests[i] = Some(Service::spawn(
            &self.cfg.bin_dir.join("payhook-ingest"),
            &name,
            self.ingest_ops[i],
            &env,
            &self.cfg.log_dir.join(log),
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

    /// `kill -9` ingest `i`; its pid.
    pub async fn kill_ingest(&mut self, i: usize) -> anyhow::Result<u32> {
        let s = self.ingests[i].take().context("ingest not running")?;
        let pid = s.pid();
        s.kill().await?;
        Ok(pid)
    }

    /// Starts ingest `i` again on the same addresses (gateways keep the URL they know).
    pub fn restart_ingest(&mut self, i: usize) -> anyhow::Result<()> {
        self.start_ingest(i)
    }

    /// `scripts/services.sh <args> --stack <stack>`; its stdout (stderr is appended to
    /// services.log, with the stdout).
    pub async fn services(&self, args: &[&str]) -> anyhow::Result<String> {
        let log = self.cfg.log_dir.join("services.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let out = tokio::process::Command::new(&self.cfg.services)
            .args(args)
            .args(["--stack", &self.cfg.stack])
            .stdin(std::process::Stdio::null())
            .stderr(err)
            .output()
            .await
            .with_context(|| format!("running {}", self.cfg.services.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        {
            use std::io::Write as _;
            let mut log_file = std::fs::OpenOptions::new().append(true).open(&log)?;
            let _ = log_file.write_all(stdout.as_bytes());
        }
        if !out.status.success() {
            bail!(
                "{} {} --stack {} failed ({}); see {}",
                self.cfg.services.display(),
                args.join(" "),
                self.cfg.stack,
                out.status,
                log.display()
            );
        }
        Ok(stdout)
    }

    /// Waits until ingest and every worker answer /readyz with 200. A process that exited
    /// on its own is a finding: it is recorded in `crashes` and started again.
    pub async fn ready(&mut self, within: Duration) -> anyhow::Result<()> {
        self.restart_crashed()?;
        let deadline = Instant::now() + within;
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut services: Vec<&mut Service> = self
            .ingests
            .iter_mut()
            .flatten()
            .chain(self.workers.iter_mut().flatten())
            .collect();
        for s in services.iter_mut() {
            s.ready(left()).await?;
        }
        Ok(())
    }

    /// Records and restarts any process that died without a fault killing it.
    pub fn restart_crashed(&mut self) -> anyhow::Result<()> {
        for i in 0..self.ingests.len() {
            if self.ingests[i].as_mut().is_some_and(|s| !s.alive()) {
                let name = self.ingests[i].as_ref().map(|s| s.name.clone());
                self.crashes
                    .push(format!("{} exited on its own", name.unwrap_or_default()));
                self.start_ingest(i)?;
            }
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
        for s in self
            .workers
            .into_iter()
            .flatten()
            .chain(self.ingests.into_iter().flatten())
        {
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
