//! The reference Flask + gunicorn + Celery app (`--peer DIR`, e.g. `../shared/peers/flask_celery`)
//! as a [`System`]: started the way its `run.sh` starts it (same commands and defaults, from
//! its directory, its files untouched), but the web app and the Celery worker separately, so a
//! drain can fill the queue through the web app with Celery stopped and then start Celery
//! alone. Its own database on the bench PostgreSQL (`schema.sql` applied as run.sh does), its
//! Celery on the bench RabbitMQ (queue `celery`, purged before each fill; payhook's queues
//! have their own prefix). Its progress counter is its README's:
//! `SELECT count(*) FROM peer_events WHERE processed`.
//!
//! Each process runs in its own process group, so stopping it reaches gunicorn's and Celery's
//! forked workers too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::process::{Child, Command};

use super::system::{Progress, System};
use crate::inflight;
use crate::load::{Gateway, Secrets};
use crate::procs::{self, CpuProbe, CpuSample};

/// Celery's default queue, the one `process_event.delay()` publishes to.
const QUEUE: &str = "celery";

/// One of the peer's processes and its group.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(
        name: &'static str,
        dir: &Path,
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self { name, child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM to the group (gunicorn and Celery shut their workers down warm), SIGKILL to
    /// the group after `limit`.
    async fn stop(mut self, limit: Duration) -> anyhow::Result<()> {
        let group = format!("-{}", self.pid());
        if self.alive() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &group])
                .status()
                .await;
            if tokio::time::timeout(limit, self.child.wait())
                .await
                .is_err()
            {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &group])
                    .status()
                    .await;
                let _ = self.child.wait().await;
                bail!(
                    "peer {} did not stop within {} s of SIGTERM; its log: {}",
                    self.name,
                    limit.as_secs(),
                    self.log.display()
                );
            }
        }
        // Workers the main process left behind, if any.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status()
            .await;
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // An error path: never leave the group's forked workers running.
        if !self.alive() {
            return;
        }
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// How to run the peer.
pub struct PeerConfig {
    pub dir: PathBuf,
    pub venv: PathBuf,
    pub web_workers: usize,
    pub celery_concurrency: usize,
    pub log_dir: PathBuf,
    /// The bench's superuser URL (host, port and user for the peer's DSN).
    pub pg_url: String,
    pub db_name: String,
    /// The bench RabbitMQ, as lapin takes it (for queue depths).
    pub amqp_url: String,
}

pub struct Peer {
    cfg: PeerConfig,
    env: Vec<(&'static str, String)>,
    addr: SocketAddr,
    web: Option<Proc>,
    celery: Option<Proc>,
    pool: PgPool,
    pub pg_dsn: String,
}

/// The peer's GoCardless webhook secret: payhook's, so both get byte-identical signed
/// deliveries.
fn secret() -> &'static str {
    super::system::SECRETS
        .iter()
        .find(|(g, _)| *g == Gateway::GoCardless)
        .map(|(_, s)| *s)
        .expect("a GoCardless secret")
}

/// Celery's broker URL for the RabbitMQ at `amqp_url` (kombu spells the default vhost `//`).
fn celery_broker(amqp_url: &str) -> anyhow::Result<String> {
    let u = url::Url::parse(amqp_url)?;
    Ok(format!(
        "amqp://{}:{}@{}:{}//",
        u.username(),
        u.password().unwrap_or("guest"),
        u.host_str().unwrap_or("127.0.0.1"),
        u.port().unwrap_or(5672)
    ))
}

impl Peer {
    /// Checks the directory and the virtualenv, creates the peer's database with its
    /// schema, starts the web app (gunicorn) and waits until it answers.
    pub async fn start(mut cfg: PeerConfig) -> anyhow::Result<Self> {
        // Absolute: the processes run from the peer's directory.
        cfg.dir = std::fs::canonicalize(&cfg.dir)
            .with_context(|| format!("the peer's directory {}", cfg.dir.display()))?;
        cfg.venv = std::path::absolute(&cfg.venv)?;
        cfg.log_dir = std::path::absolute(&cfg.log_dir)?;
        for f in ["app.py", "tasks.py", "schema.sql", "run.sh"] {
            if !cfg.dir.join(f).is_file() {
                bail!(
                    "{} has no {f}: is it the peer's directory?",
                    cfg.dir.display()
                );
            }
        }
        for b in ["gunicorn", "celery"] {
            if !cfg.venv.join("bin").join(b).is_file() {
                bail!(
                    "{} has no bin/{b}; create it with: python3 -m venv {0} && {0}/bin/pip install \
                     flask gunicorn gocardless_pro psycopg2-binary celery (scripts/bench does)",
                    cfg.venv.display()
                );
            }
        }
        let (db_url, _) = crate::benchmark::common::create_database(&cfg.pg_url, &cfg.db_name)
            .await
            .context("creating the peer's database")?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(db_url.parse::<PgConnectOptions>()?)
            .await?;
        let schema = std::fs::read_to_string(cfg.dir.join("schema.sql"))?;
        sqlx::raw_sql(&schema).execute(&pool).await?;
        let admin: PgConnectOptions = cfg.pg_url.parse()?;
        let pg_dsn = format!(
            "host={} port={} user={} dbname={}",
            admin.get_host(),
            admin.get_port(),
            admin.get_username(),
            cfg.db_name
        );
        let addr = procs::free_addr()?;
        let env = vec![
            ("GOCARDLESS_WEBHOOK_SECRET", secret().to_owned()),
            ("PEER_DSN", pg_dsn.clone()),
            ("AMQP_URL", celery_broker(&cfg.amqp_url)?),
            ("PEER_ADDR", addr.to_string()),
        ];
        let mut peer = Self {
            cfg,
            env,
            addr,
            web: None,
            celery: None,
            pool,
            pg_dsn,
        };
        peer.start_web().await?;
        Ok(peer)
    }

    async fn start_web(&mut self) -> anyhow::Result<()> {
        // run.sh: gunicorn -w ${PEER_WEB_WORKERS:-5} -b ${PEER_ADDR} --log-level warning app:app
        let workers = self.cfg.web_workers.to_string();
        let addr = self.addr.to_string();
        let mut web = Proc::spawn(
            "web (gunicorn)",
            &self.cfg.dir,
            &self.cfg.venv.join("bin/gunicorn"),
            &[
                "-w",
                &workers,
                "-b",
                &addr,
                "--log-level",
                "warning",
                "app:app",
            ],
            &self.env,
            self.cfg.log_dir.join("peer-web.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        // Any HTTP answer means a worker is serving (GET on the POST-only route: 405).
        while procs::get_status(self.addr, "/webhooks/gocardless")
            .await
            .is_err()
        {
            if !web.alive() || Instant::now() > deadline {
                bail!(
                    "the peer's web app did not start; its log: {}",
                    web.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.web = Some(web);
        Ok(())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_worker().await?;
        if let Some(w) = self.web.take() {
            w.stop(Duration::from_secs(30)).await?;
        }
        self.pool.close().await;
        Ok(())
    }

    /// The peer's records, for its verdict: (event id, processed), payment ids with a
    /// transaction, mandate ids with a member.
    pub async fn records(&self) -> anyhow::Result<PeerRecords> {
        Ok(PeerRecords {
            events: sqlx::query_as("SELECT event_id, processed FROM peer_events")
                .fetch_all(&self.pool)
                .await?,
            transactions: sqlx::query_scalar("SELECT payment_id FROM peer_transactions")
                .fetch_all(&self.pool)
                .await?,
            members: sqlx::query_scalar("SELECT mandate_id FROM peer_members")
                .fetch_all(&self.pool)
                .await?,
        })
    }
}

/// What the peer's tables hold at the end.
pub struct PeerRecords {
    pub events: Vec<(String, bool)>,
    pub transactions: Vec<String>,
    pub members: Vec<String>,
}

impl System for Peer {
    fn name(&self) -> &'static str {
        "peer"
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn secrets(&self) -> Secrets {
        Secrets(vec![(Gateway::GoCardless, secret().as_bytes().to_vec())])
    }

    async fn start_worker(&mut self) -> anyhow::Result<()> {
        if self.celery.is_some() {
            return Ok(());
        }
        // run.sh: celery -A tasks worker -c ${PEER_CELERY_CONCURRENCY:-2} --loglevel warning
        let concurrency = self.cfg.celery_concurrency.to_string();
        let mut celery = Proc::spawn(
            "worker (celery)",
            &self.cfg.dir,
            &self.cfg.venv.join("bin/celery"),
            &[
                "-A",
                "tasks",
                "worker",
                "-c",
                &concurrency,
                "--loglevel",
                "warning",
            ],
            &self.env,
            self.cfg.log_dir.join("peer-celery.log"),
        )?;
        // Ready = consuming: its queue has a consumer (Celery declares the queue itself).
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let consumers = inflight::queues(&self.cfg.amqp_url, &[QUEUE.to_owned()])
                .await
                .map_or(0, |q| q[0].1);
            if consumers > 0 {
                break;
            }
            if !celery.alive() || Instant::now() > deadline {
                bail!(
                    "the peer's Celery worker did not start consuming; its log: {}",
                    celery.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.celery = Some(celery);
        Ok(())
    }

    async fn stop_worker(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.celery.take() {
            // Warm shutdown: running tasks finish; prefetched messages go back to the queue.
            c.stop(Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in self.web.iter_mut().chain(self.celery.iter_mut()) {
            if !p.alive() {
                bail!("the peer's {} exited; its log: {}", p.name, p.log.display());
            }
        }
        Ok(())
    }

    async fn prepare_fill(&mut self) -> anyhow::Result<()> {
        // Nothing of an earlier step may wait in the queue (there should be nothing).
        inflight::purge(&self.cfg.amqp_url, QUEUE).await
    }

    async fn progress(&self) -> anyhow::Result<Progress> {
        let (done, active): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE processed), count(*) FILTER (WHERE NOT processed)
             FROM peer_events",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Progress {
            done,
            dead: 0,
            active,
            retrying: 0,
        })
    }

    async fn finished_fast(&self) -> Option<i64> {
        None
    }

    async fn queue_depth(&self) -> u64 {
        inflight::queues(&self.cfg.amqp_url, &[QUEUE.to_owned()])
            .await
            .map_or(0, |q| q[0].0)
    }

    fn cpu(&self, probe: &CpuProbe) -> CpuSample {
        let workers: Vec<u32> = self.celery.iter().map(Proc::pid).collect();
        probe.sample(self.web.as_ref().map(Proc::pid), &workers, &[])
    }

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
