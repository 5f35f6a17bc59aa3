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
    /// `kill -9` ingest (one of them, at random), start it again on the same address a
    /// moment later.
    KillIngest,
    /// Cluster: `kill -9` the RabbitMQ node that leads the events queue, later restart it
    /// (it rejoins the cluster).
    KillRabbitLeader,
    /// Cluster: `kill -9` the PostgreSQL primary, promote the standby, move the read-write
    /// address to it, then bring the old primary back as the new standby.
    FailoverPostgres,
}

impl Fault {
    /// The faults of one machine (one PostgreSQL, one RabbitMQ node).
    pub const ALL: [Fault; 4] = [
        Self::KillWorker,
        Self::RestartRabbitmq,
        Self::RestartPostgres,
        Self::KillIngest,
    ];

    /// The faults of a cluster: the processes' as on one machine, and the loss of a node of
    /// each engine.
    pub const CLUSTER: [Fault; 4] = [
        Self::KillWorker,
        Self::KillIngest,
        Self::KillRabbitLeader,
        Self::FailoverPostgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::KillWorker => "kill-worker",
            Self::RestartRabbitmq => "restart-rabbitmq",
            Self::RestartPostgres => "restart-postgres",
            Self::KillIngest => "kill-ingest",
            Self::KillRabbitLeader => "kill-rabbit-leader",
            Self::FailoverPostgres => "failover-postgres",
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
    /// Unix milliseconds when it fired (to find what the database recorded around it).
    pub at_unix_ms: i64,
    /// The longest time without any 2xx from ingest from the fault on (503s, refused
    /// connections, stalls), seconds; filled in after the load.
    pub ingest_gap_s: Option<f64>,
    /// The longest time no event was processed from the fault on, seconds; filled in after
    /// the drain.
    pub drain_gap_s: Option<f64>,
}

impl FaultRecord {
    /// A fault as it happened; the gaps are filled in after the load.
    fn new(
        fault: Fault,
        at: Duration,
        wall: String,
        detail: String,
        recovered_after_s: f64,
        acked_events_before: u64,
        at_unix_ms: i64,
    ) -> Self {
        Self {
            fault,
            at_s: at.as_secs_f64(),
            at: wall,
            detail,
            recovered_after_s,
            acked_events_before,
            at_unix_ms,
            ingest_gap_s: None,
            drain_gap_s: None,
        }
    }
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
    /// The events queue, whose leader `kill-rabbit-leader` kills.
    pub events_queue: String,
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
        let at_unix_ms = chrono::Utc::now().timestamp_millis();
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
                let i = self.rng.range(0, self.stack.ingests() as u64) as usize;
                let pid = self.stack.kill_ingest(i).await?;
                let down = Duration::from_millis(self.rng.range(200, 1500));
                tokio::time::sleep(down).await;
                self.stack.restart_ingest(i)?;
                let which = if self.stack.ingests() > 1 {
                    format!(" #{}", i + 1)
                } else {
                    String::new()
                };
                format!(
                    "kill -9 ingest{which} (pid {pid}), restarted after {:.1} s",
                    down.as_secs_f64()
                )
            }
            Fault::RestartRabbitmq => {
                self.stack.services(&["restart-rabbit"]).await?;
                format!(
                    "RabbitMQ stopped and started in {:.1} s",
                    t0.elapsed().as_secs_f64()
                )
            }
            Fault::RestartPostgres => {
                self.stack.services(&["restart-pg"]).await?;
                format!(
                    "pg_ctl restart -m fast took {:.1} s",
                    t0.elapsed().as_secs_f64()
                )
            }
            Fault::KillRabbitLeader => {
                return self.kill_rabbit_leader(at, wall, acked, at_unix_ms).await
            }
            Fault::FailoverPostgres => {
                return self.failover_postgres(at, wall, acked, at_unix_ms).await
            }
        };
        self.stack.ready(self.recover_within).await?;
        let recovered = t0.elapsed();
        say(format!(
            "  {detail}; every process ready again {:.1} s after the fault",
            recovered.as_secs_f64()
        ));
        Ok(FaultRecord::new(
            fault,
            at,
            wall,
            detail,
            recovered.as_secs_f64(),
            acked,
            at_unix_ms,
        ))
    }

    /// The node leading the events queue is killed while the load runs on the others; it is
    /// restarted (and rejoins) a few seconds later. Recovered: every process ready again,
    /// with the node back.
    async fn kill_rabbit_leader(
        &mut self,
        at: Duration,
        wall: String,
        acked: u64,
        at_unix_ms: i64,
    ) -> anyhow::Result<FaultRecord> {
        let t0 = Instant::now();
        let leader = self
            .stack
            .services(&["rabbit-leader", &self.events_queue])
            .await?
            .trim()
            .to_owned();
        anyhow::ensure!(
            !leader.is_empty(),
            "no leader found for {}",
            self.events_queue
        );
        self.stack.services(&["rabbit-kill", &leader]).await?;
        let down = Duration::from_millis(self.rng.range(2000, 6000));
        tokio::time::sleep(down).await;
        // Before the node is back: payhook must be serving from the other two.
        self.stack.ready(self.recover_within).await?;
        let serving = t0.elapsed();
        self.stack.services(&["rabbit-restart", &leader]).await?;
        let rejoined = t0.elapsed();
        self.stack.ready(self.recover_within).await?;
        let detail = format!(
            "kill -9 RabbitMQ node {leader} (leader of {}); payhook ready on the others {:.1} s \
             after; node restarted and back in the cluster {:.1} s after",
            self.events_queue,
            serving.as_secs_f64(),
            rejoined.as_secs_f64()
        );
        self.record(FaultRecord::new(
            Fault::KillRabbitLeader,
            at,
            wall,
            detail,
            serving.as_secs_f64(),
            acked,
            at_unix_ms,
        ))
    }

    /// The primary is killed; after a detection delay the standby is promoted and the
    /// read-write address moved to it (what an operator such as CloudNativePG does);
    /// recovered: every process ready again; then the old primary rejoins as the standby.
    async fn failover_postgres(
        &mut self,
        at: Duration,
        wall: String,
        acked: u64,
        at_unix_ms: i64,
    ) -> anyhow::Result<FaultRecord> {
        let t0 = Instant::now();
        self.stack.services(&["pg-kill-primary"]).await?;
        let detect = Duration::from_millis(self.rng.range(1000, 3000));
        tokio::time::sleep(detect).await;
        self.stack.services(&["pg-promote"]).await?;
        let promoted = t0.elapsed();
        self.stack.ready(self.recover_within).await?;
        let serving = t0.elapsed();
        self.stack.services(&["pg-rejoin-old-primary"]).await?;
        let rejoined = t0.elapsed();
        let detail = format!(
            "kill -9 PostgreSQL primary; standby promoted and read-write address moved {:.1} s \
             after; payhook ready {:.1} s after; old primary back as the standby {:.1} s after",
            promoted.as_secs_f64(),
            serving.as_secs_f64(),
            rejoined.as_secs_f64()
        );
        self.record(FaultRecord::new(
            Fault::FailoverPostgres,
            at,
            wall,
            detail,
            serving.as_secs_f64(),
            acked,
            at_unix_ms,
        ))
    }

    fn record(&self, r: FaultRecord) -> anyhow::Result<FaultRecord> {
        say(format!(
            "  {}; every process ready again {:.1} s after the fault",
            r.detail, r.recovered_after_s
        ));
        Ok(r)
    }
}

/// The longest stretch without a point of `times` (seconds, any order) in `[from, to]`,
/// counting from `from` and up to `to`.
pub fn longest_gap(times: &[f64], from: f64, to: f64) -> f64 {
    let mut inside: Vec<f64> = times
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort_by(f64::total_cmp);
    let mut last = from;
    let mut gap: f64 = 0.0;
    for t in inside {
        gap = gap.max(t - last);
        last = t;
    }
    gap.max(to - last)
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
    fn the_longest_gap_counts_from_the_fault_to_the_end_of_the_window() {
        assert_eq!(longest_gap(&[1.0, 2.0, 6.0, 7.0], 0.5, 8.0), 4.0);
        assert_eq!(longest_gap(&[], 1.0, 3.0), 2.0);
        assert_eq!(longest_gap(&[0.2, 9.0], 1.0, 3.0), 2.0);
    }

    #[test]
    fn triggers_spread_over_the_load_and_leave_some_after_the_last() {
        let t: Vec<usize> = (0..4).map(|k| trigger(k, 4, 1000)).collect();
        assert_eq!(t, [200, 400, 600, 800]);
    }
}
