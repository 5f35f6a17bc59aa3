//! The payhook binaries as child processes (start, readiness, SIGTERM, `kill -9`), and what
//! /proc says about them and about PostgreSQL and RabbitMQ (memory, CPU time). CPU time is
//! read per process tree (a process, everything under it, and what its reaped children
//! used), so a forking server (the postmaster, gunicorn, Celery's prefork pool) is counted
//! whole.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A loopback address with a port free right now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `payhook-ingest` or `payhook-worker`.
pub struct Service {
    pub name: String,
    pub ops: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `bin` with `env` (on top of ours), stdout and stderr appended to `log`.
    pub fn spawn(
        bin: &Path,
        name: &str,
        ops: SocketAddr,
        env: &[(&str, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn_without(bin, name, ops, env, &[], log)
    }

    /// [`Service::spawn`], with the variables in `unset` removed from what it inherits (a
    /// token in our environment must not reach a process meant to run without it).
    pub fn spawn_without(
        bin: &Path,
        name: &str,
        ops: SocketAddr,
        env: &[(&str, String)],
        unset: &[&str],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(bin);
        for var in unset {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            name: name.to_owned(),
            ops,
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Waits until `GET /readyz` on the ops listener answers 200.
    pub async fn ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log: {}",
                    self.name,
                    self.log.display()
                );
            }
            if get_status(self.ops, "/readyz").await.ok() == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {within:?}; its log: {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (`kill -9`): no chance to finish anything; returns once the process is gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        if self.alive() {
            self.child.start_kill()?;
        }
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM (graceful: in-flight work finishes), then SIGKILL after 30 s.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_within(Duration::from_secs(30)).await.map(drop)
    }

    /// SIGTERM, then SIGKILL (and an error) if the process is still there after `limit`;
    /// how long it took to exit.
    pub async fn stop_within(mut self, limit: Duration) -> anyhow::Result<Duration> {
        if !self.alive() {
            return Ok(Duration::ZERO);
        }
        let asked = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .await;
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(_) => Ok(asked.elapsed()),
            Err(_) => {
                self.child.start_kill()?;
                self.child.wait().await?;
                bail!(
                    "{} did not stop within {} s of SIGTERM; its log: {}",
                    self.name,
                    limit.as_secs(),
                    self.log.display()
                )
            }
        }
    }
}

/// The status of a plain `GET` on a fresh connection.
pub async fn get_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req)).await??;
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    Ok(status)
}

/// The body of a plain `GET` on a fresh connection (for /metrics).
pub async fn get_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let res = tokio::time::timeout(Duration::from_secs(2), sender.send_request(req)).await??;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `<name>_sum` and `<name>_count` of a Prometheus histogram, summed over its label sets.
pub fn histogram_totals(metrics: &str, name: &str) -> (f64, f64) {
    let total = |suffix: &str| {
        let key = format!("{name}{suffix}");
        metrics
            .lines()
            .filter(|l| {
                l.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (total("_sum"), total("_count"))
}

/// `VmHWM` and `VmRSS` of a process, MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Clock ticks per second for /proc times (USER_HZ; 100 on every Linux we run on).
const TICKS: f64 = 100.0;

/// utime + stime (+ cutime + cstime with `children`) of a process, in ticks.
fn cpu_ticks(pid: u32, children: bool) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state): utime is field 14 → index 11.
    let own = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    if children {
        own + f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0)
    } else {
        own
    }
}

/// The parent pid of every live process.
fn processes() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// CPU ticks of the tree under `root`: every live process in it, each with what its reaped
/// children used. A process that exits between two samples moves from its own count into its
/// parent's `cutime`, so the sum stays continuous (a backend that ends, a pool worker
/// replaced).
fn tree_ticks(root: u32, procs: &[(u32, u32)]) -> u64 {
    let mut total = 0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        total += cpu_ticks(pid, true);
        todo.extend(
            procs
                .iter()
                .filter(|(_, ppid)| *ppid == pid)
                .map(|(child, _)| *child),
        );
    }
    total
}

/// Where CPU time goes during a step: the application's front (payhook-ingest, or the peer's
/// gunicorn) and its workers (payhook-worker, or the peer's Celery) by pid, PostgreSQL as its
/// postmaster's tree, RabbitMQ as its VM's, the load generator (this process), and the whole
/// machine from /proc/stat.
#[derive(Clone, Default)]
pub struct CpuProbe {
    pub postmaster: Option<u32>,
    pub rabbit: Option<u32>,
}

/// CPU ticks per component at one instant.
#[derive(Clone, Default)]
pub struct CpuSample {
    at: Option<Instant>,
    ingest: u64,
    workers: u64,
    postgres: u64,
    rabbit: u64,
    bench: u64,
    other_tools: u64,
    machine_busy: u64,
    machine_iowait: u64,
}

/// Average CPU use over an interval, in percent of one core (200 % = both cores of a 2-core
/// machine).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuUse {
    pub ingest: f64,
    pub workers: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
    pub load_generator: f64,
    /// pgbench, when it ran.
    pub pgbench: f64,
    pub machine_busy: f64,
    pub machine_iowait: f64,
}

/// CPU seconds used over an interval, per component ("ingest" and "workers" are the peer's
/// web and Celery processes in a peer step).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuSeconds {
    pub wall: f64,
    pub ingest: f64,
    pub workers: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
    pub load_generator: f64,
    pub machine_busy: f64,
    pub machine_iowait: f64,
}

impl CpuSeconds {
    /// The system under test: front, workers, PostgreSQL and RabbitMQ (not the load
    /// generator).
    pub fn total(&self) -> f64 {
        self.ingest + self.workers + self.postgres + self.rabbitmq
    }

    /// Per event, in milliseconds of CPU, for each component and the total.
    pub fn per_event_ms(&self, events: u64) -> CpuPerEvent {
        let per = |s: f64| {
            if events == 0 {
                f64::NAN
            } else {
                s * 1000.0 / events as f64
            }
        };
        CpuPerEvent {
            events,
            ingest: per(self.ingest),
            workers: per(self.workers),
            postgres: per(self.postgres),
            rabbitmq: per(self.rabbitmq),
            total: per(self.total()),
            load_generator: per(self.load_generator),
            machine_busy: per(self.machine_busy),
        }
    }
}

/// CPU milliseconds per event (see [`CpuSeconds::per_event_ms`]).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CpuPerEvent {
    /// The events divided by.
    pub events: u64,
    pub ingest: f64,
    pub workers: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
    /// ingest + workers + PostgreSQL + RabbitMQ.
    pub total: f64,
    pub load_generator: f64,
    /// All CPU the machine spent (others' work included).
    pub machine_busy: f64,
}

impl CpuProbe {
    /// `ingest` and `workers` are read as process trees; `tools` (pgbench) alone.
    pub fn sample(&self, ingest: Option<u32>, workers: &[u32], tools: &[u32]) -> CpuSample {
        let procs = processes();
        let (busy, iowait) = machine_ticks();
        CpuSample {
            at: Some(Instant::now()),
            ingest: ingest.map_or(0, |p| tree_ticks(p, &procs)),
            workers: workers.iter().map(|p| tree_ticks(*p, &procs)).sum(),
            postgres: self.postmaster.map_or(0, |pm| tree_ticks(pm, &procs)),
            rabbit: self.rabbit.map_or(0, |p| tree_ticks(p, &procs)),
            // Our own threads only: our children are the system under test.
            bench: cpu_ticks(std::process::id(), false),
            other_tools: tools.iter().map(|p| cpu_ticks(*p, false)).sum(),
            machine_busy: busy,
            machine_iowait: iowait,
        }
    }
}

impl CpuSample {
    /// Use between `self` (earlier) and `later`.
    pub fn until(&self, later: &CpuSample) -> CpuUse {
        let secs = match (self.at, later.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-3),
            _ => return CpuUse::default(),
        };
        let pct = |a: u64, b: u64| (b.saturating_sub(a) as f64 / TICKS) / secs * 100.0;
        CpuUse {
            ingest: pct(self.ingest, later.ingest),
            workers: pct(self.workers, later.workers),
            postgres: pct(self.postgres, later.postgres),
            rabbitmq: pct(self.rabbit, later.rabbit),
            load_generator: pct(self.bench, later.bench),
            pgbench: pct(self.other_tools, later.other_tools),
            machine_busy: pct(self.machine_busy, later.machine_busy),
            machine_iowait: pct(self.machine_iowait, later.machine_iowait),
        }
    }

    /// CPU seconds between `self` (earlier) and `later`.
    pub fn seconds_until(&self, later: &CpuSample) -> CpuSeconds {
        let s = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS;
        CpuSeconds {
            wall: match (self.at, later.at) {
                (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
                _ => 0.0,
            },
            ingest: s(self.ingest, later.ingest),
            workers: s(self.workers, later.workers),
            postgres: s(self.postgres, later.postgres),
            rabbitmq: s(self.rabbit, later.rabbit),
            load_generator: s(self.bench, later.bench),
            machine_busy: s(self.machine_busy, later.machine_busy),
            machine_iowait: s(self.machine_iowait, later.machine_iowait),
        }
    }
}

/// (busy, iowait) ticks of all CPUs together, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, get(4))
}

/// The first line of a pid file (PostgreSQL's postmaster.pid, RabbitMQ's pid file).
pub fn pid_from_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}
