//! The faults, in a scripted random order: the plan is shuffled from the seed, and fault k of
//! n fires when the load reaches delivery k/(n+1) of the workload (the load is held there
//! until it fires, so it always lands mid-load), then the runner waits for every process to be
//! ready again before the next. Each fault is printed with its time as it happens.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::driver::Progress;
use super::say;
use super::stack::Stack;
use crate::rng::Rng;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `kill -9` a worker (chosen at random), start it again a moment later.
    KillWorker,
    /// `scripts/services.sh restart-rabbit`: RabbitMQ stops and starts again.
    RestartRabbitmq,
    /// `scripts/services.sh restart-pg`: `pg_ctl restart -m fast`.
    RestartPostgres,
    /// `kill -9` ingest, start it again on the same address a moment later.
    KillIngest,
}

impl Fault {
    pub const ALL: [Fault; 4] = [
        Self::KillWorker,
        Self::RestartRabbitmq,
        Self::RestartPostgres,
        Self::KillIngest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::KillWorker => "kill-worker",
            Self::RestartRabbitmq => "restart-rabbitmq",
            Self::RestartPostgres => "restart-postgres",
            Self::KillIngest => "kill-ingest",
        }
    }
}

/// What one fault did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub fault: Fault,
    /// Seconds since the load started.
    pub at_s: f64,
    /// Wall clock (UTC).
    pub at: String,
    pub detail: String,
    /// From the fault to every process ready again, seconds.
    pub recovered_after_s: f64,
    /// Distinct events acknowledged when it fired.
    pub acked_events_before: u64,
}

/// `kinds` × `count`, shuffled.
pub fn plan(kinds: &[Fault], count: usize, rng: &mut Rng) -> Vec<Fault> {
    let mut plan: Vec<Fault> = kinds
        .iter()
        .flat_map(|k| std::iter::repeat_n(*k, count))
        .collect();
    rng.shuffle(&mut plan);
    plan
}

/// The delivery index at which fault `k` of `n` fires, for `deliveries` deliveries.
pub fn trigger(k: usize, n: usize, deliveries: usize) -> usize {
    (k + 1) * deliveries / (n + 1)
}

/// How far past a fault's trigger the load may run before the fault has fired.
pub fn slack(deliveries: usize, connections: usize) -> usize {
    (deliveries / 200).max(connections)
}

pub struct Runner<'a> {
    pub stack: &'a mut Stack,
    pub progress: Arc<Progress>,
    pub rng: Rng,
    pub started: Instant,
    pub deliveries: usize,
    pub connections: usize,
    /// Longest wait for the processes to be ready after a fault.
    pub recover_within: Duration,
    /// Faults in the plan, and fired so far (for the log lines).
    pub planned: usize,
    pub done: usize,
}

impl Runner<'_> {
    /// Runs the plan against the running load; every fault's record.
    pub async fn run(mut self, plan: &[Fault]) -> anyhow::Result<Vec<FaultRecord>> {
        let n = plan.len();
        let slack = slack(self.deliveries, self.connections);
        let deliveries = self.deliveries;
        let gate_for = |k: usize| {
            if k < n {
                (trigger(k, n, deliveries) + slack).min(deliveries)
            } else {
                deliveries
            }
        };
        let mut records = Vec::new();
        for (k, fault) in plan.iter().enumerate() {
            let at = trigger(k, n, self.deliveries);
            while self.progress.next.load(Ordering::Acquire) < at
                && !self.progress.done.load(Ordering::Acquire)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Let the load run on through the fault and its recovery, up to the next one.
            self.progress.gate.store(gate_for(k + 1), Ordering::Release);
            records.push(self.inject(*fault).await?);
        }
        self.progress.gate.store(self.deliveries, Ordering::Release);
        Ok(records)
    }

    async fn inject(&mut self, fault: Fault) -> anyhow::Result<FaultRecord> {
        let at = self.started.elapsed();
        let wall = chrono::Utc::now().format("%H:%M:%S%.3f").to_string();
        let acked = self.progress.acked_events.load(Ordering::Relaxed);
        say(format!(
            "FAULT {}/{}: {} at {:.1} s ({wall} UTC), {acked} events acknowledged so far",
            self.done + 1,
            self.planned,
            fault.name(),
            at.as_secs_f64()
        ));
        self.done += 1;
        let t0 = Instant::now();
        let detail = match fault {
            Fault::KillWorker => {
                let i = self.rng.range(0, self.stack.workers() as u64) as usize;
                let pid = self.stack.kill_worker(i).await?;
                let down = Duration::from_millis(self.rng.range(300, 2000));
                tokio::time::sleep(down).await;
                self.stack.restart_worker(i)?;
                format!(
                    "kill -9 worker #{} (pid {pid}), restarted after {:.1} s",
                    i + 1,
                    down.as_secs_f64()
                )
            }
            Fault::KillIngest => {
                let pid = self.stack.kill_ingest().await?;
                let down = Duration::from_millis(self.rng.range(200, 1500));
                tokio::time::sleep(down).await;
                self.stack.restart_ingest()?;
                format!(
                    "kill -9 ingest (pid {pid}), restarted after {:.1} s",
                    down.as_secs_f64()
                )
            }
            Fault::RestartRabbitmq => {
                self.stack.services("restart-rabbit").await?;
                format!(
                    "RabbitMQ stopped and started in {:.1} s",
                    t0.elapsed().as_secs_f64()
                )
            }
            Fault::RestartPostgres => {
                self.stack.services("restart-pg").await?;
                format!(
                    "pg_ctl restart -m fast took {:.1} s",
                    t0.elapsed().as_secs_f64()
                )
            }
        };
        self.stack.ready(self.recover_within).await?;
        let recovered = t0.elapsed();
        say(format!(
            "  {detail}; every process ready again {:.1} s after the fault",
            recovered.as_secs_f64()
        ));
        Ok(FaultRecord {
            fault,
            at_s: at.as_secs_f64(),
            at: wall,
            detail,
            recovered_after_s: recovered.as_secs_f64(),
            acked_events_before: acked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_holds_each_fault_count_times_in_a_seeded_order() {
        let a = plan(&Fault::ALL, 3, &mut Rng::new(5));
        assert_eq!(a.len(), 12);
        for f in Fault::ALL {
            assert_eq!(a.iter().filter(|x| **x == f).count(), 3);
        }
        assert_eq!(a, plan(&Fault::ALL, 3, &mut Rng::new(5)));
    }

    #[test]
    fn triggers_spread_over_the_load_and_leave_some_after_the_last() {
        let t: Vec<usize> = (0..4).map(|k| trigger(k, 4, 1000)).collect();
        assert_eq!(t, [200, 400, 600, 800]);
    }
}
