//! Issue 7's results (`--workload friendly`): one markdown table on stdout, the same as JSON
//! with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use super::super::common::{Machine, Target};
use crate::human;
use crate::procs::CpuUse;

#[derive(Serialize)]
pub struct Report {
    pub mode: String,
    pub step_secs: f64,
    pub machine: Machine,
    pub floor: Vec<FloorRow>,
    pub ingest: Vec<IngestRow>,
    /// From a backlog that is alone in the queue, 1 then 2 workers.
    pub drain: Vec<DrainRow>,
    /// The ingest steps' backlog (mixed 1- and 10-event deliveries), 2 workers.
    pub load_drain: DrainRow,
    /// The cost-growth step's backlog, 2 workers, with the stored events in the table.
    pub growth_drain: DrainRow,
    pub growth: Growth,
    pub memory: Memory,
    pub correctness: Correctness,
    pub targets: Vec<Target>,
    pub elapsed_s: f64,
}

#[derive(Serialize)]
pub struct FloorRow {
    pub clients: usize,
    pub seconds: f64,
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub failed: u64,
    pub cpu: CpuUse,
}

#[derive(Serialize, Clone)]
pub struct IngestRow {
    pub connections: usize,
    pub events_per_body: usize,
    /// 204 answers.
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// Deliveries per group-commit batch (mean over the step, from ingest's /metrics).
    pub batch_mean: f64,
    /// Mean time of a batch's PostgreSQL transaction.
    pub commit_ms_mean: f64,
    /// Mean time of a batch's publish + confirm wait.
    pub confirm_ms_mean: f64,
    pub cpu: CpuUse,
}

#[derive(Serialize)]
pub struct DrainRow {
    pub label: String,
    pub workers: usize,
    /// Events in the queue when the workers were started.
    pub events: u64,
    /// From every worker ready to every event processed.
    pub seconds: f64,
    pub events_per_s: f64,
    /// From spawning the workers to all of them ready.
    pub startup_s: f64,
    pub cpu: CpuUse,
}

#[derive(Serialize)]
pub struct Growth {
    pub stored_events: u64,
    pub empty_rps: f64,
    pub stored_rps: f64,
    /// stored / empty.
    pub ratio: f64,
    pub empty_p99_ms: f64,
    pub stored_p99_ms: f64,
    /// The 32-connection 1-event step with the stored events.
    pub row: IngestRow,
    /// The same step just before they were stored (the "empty" side of the ratio).
    pub before: IngestRow,
}

#[derive(Serialize)]
pub struct Memory {
    /// VmHWM of payhook-ingest: its peak resident set over the whole run.
    pub ingest_peak_rss_mib: f64,
    /// VmRSS right after the 128-connection steps.
    pub ingest_rss_after_mib: f64,
}

#[derive(Serialize)]
pub struct Correctness {
    pub answers_2xx: u64,
    /// 2xx answers + the deliveries stored with SQL for the cost-growth step.
    pub deliveries_expected: u64,
    pub deliveries_stored: u64,
    pub events_expected: u64,
    pub events_stored: u64,
    pub events_not_processed: u64,
    /// Answers other than 204, broken connections.
    pub errors: u64,
    pub first_error: Option<String>,
    pub ingest_alive: bool,
    pub ok: bool,
}

fn pct(v: f64) -> String {
    format!("{v:.0}")
}

impl Report {
    /// The whole report as markdown.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "## payhook benchmark ({} mode, {} s steps, {:.0} s in all)\n",
            self.mode, self.step_secs, self.elapsed_s
        );
        let _ = writeln!(
            t,
            "Machine: {} CPUs ({}), {} MiB RAM, Linux {}, PostgreSQL {}, RabbitMQ {}. \
             Load average at start {}, at end {}. payhook settings: {}.\n",
            m.nproc,
            m.cpu_model,
            m.memory_mib,
            m.kernel,
            m.postgresql,
            m.rabbitmq.as_deref().unwrap_or("?"),
            m.loadavg_start,
            m.loadavg_end,
            if m.settings.is_empty() {
                "defaults".to_owned()
            } else {
                m.settings.join(" ")
            }
        );
        let _ = writeln!(
            t,
            "CPU columns: % of one core averaged over the step (the machine has {} cores, so {} % is all of it).\n",
            m.nproc,
            m.nproc * 100
        );

        let _ = writeln!(
            t,
            "### Floor: pgbench, one `INSERT … ON CONFLICT DO NOTHING` per transaction (random key, synchronous_commit on)\n"
        );
        let _ = writeln!(
            t,
            "| clients | tps | avg latency ms | CPU pg | CPU pgbench | CPU busy | iowait |"
        );
        let _ = writeln!(t, "|---:|---:|---:|---:|---:|---:|---:|");
        for f in &self.floor {
            let _ = writeln!(
                t,
                "| {} | {:.0} | {:.2} | {} | {} | {} | {} |",
                f.clients,
                f.tps,
                f.latency_avg_ms,
                pct(f.cpu.postgres),
                pct(f.cpu.pgbench),
                pct(f.cpu.machine_busy),
                pct(f.cpu.machine_iowait)
            );
        }

        let _ = writeln!(
            t,
            "\n### Ingest: closed loop, every request a fresh signed GoCardless delivery (workers stopped)\n"
        );
        let _ = writeln!(
            t,
            "| conns | events/body | req/s | events/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | batch | commit ms | confirm ms | CPU ingest | CPU pg | CPU rabbit | CPU loadgen | CPU busy | iowait |"
        );
        let _ = writeln!(
            t,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let mut rows: Vec<(&IngestRow, &str)> = self.ingest.iter().map(|r| (r, "")).collect();
        rows.push((&self.growth.before, " (before storing)"));
        rows.push((&self.growth.row, " (stored)"));
        for (r, note) in rows {
            let _ = writeln!(
                t,
                "| {}{} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                r.connections,
                note,
                r.events_per_body,
                r.rps,
                r.events_per_s,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_ms,
                r.errors,
                r.batch_mean,
                r.commit_ms_mean,
                r.confirm_ms_mean,
                pct(r.cpu.ingest),
                pct(r.cpu.postgres),
                pct(r.cpu.rabbitmq),
                pct(r.cpu.load_generator),
                pct(r.cpu.machine_busy),
                pct(r.cpu.machine_iowait)
            );
        }
        let _ = writeln!(
            t,
            "\n\"(before storing)\" and \"(stored)\": the 32-connection 1-event step again, with an empty \
             queue, just before and just after {} events were stored with SQL (the cost-growth ratio). \
             batch / commit / confirm: mean deliveries per group commit, mean PostgreSQL transaction \
             and mean publish-and-confirm time per batch, from ingest's /metrics.",
            human(self.growth.stored_events)
        );

        let _ = writeln!(
            t,
            "\n### Drain: `payments.created` events (no gateway API call), queue full → every event processed\n"
        );
        let _ = writeln!(
            t,
            "| run | backlog | events/s | seconds | worker start s | CPU workers | CPU pg | CPU rabbit | CPU busy | iowait |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for d in self
            .drain
            .iter()
            .chain([&self.load_drain, &self.growth_drain])
        {
            let _ = writeln!(
                t,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                d.label,
                human(d.events),
                d.events_per_s,
                d.seconds,
                d.startup_s,
                pct(d.cpu.workers),
                pct(d.cpu.postgres),
                pct(d.cpu.rabbitmq),
                pct(d.cpu.machine_busy),
                pct(d.cpu.machine_iowait)
            );
        }

        let c = &self.correctness;
        let _ = writeln!(t, "\n### Memory and correctness\n");
        let _ = writeln!(
            t,
            "- ingest peak RSS (VmHWM): {:.1} MiB; RSS right after the 128-connection steps: {:.1} MiB",
            self.memory.ingest_peak_rss_mib, self.memory.ingest_rss_after_mib
        );
        let _ = writeln!(
            t,
            "- 204 answers: {}; other answers or broken connections: {}{}",
            human(c.answers_2xx),
            c.errors,
            c.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            t,
            "- deliveries stored {} / expected {}; events stored {} / expected {}; not processed: {}",
            human(c.deliveries_stored),
            human(c.deliveries_expected),
            human(c.events_stored),
            human(c.events_expected),
            c.events_not_processed
        );
        let _ = writeln!(
            t,
            "- **correctness: {}**",
            if c.ok { "PASS" } else { "FAIL" }
        );

        let _ = writeln!(t, "\n### Targets (issue 7)\n");
        let _ = writeln!(t, "| target | measured | margin | met |");
        let _ = writeln!(t, "|---|---|---:|---|");
        for g in &self.targets {
            let _ = writeln!(
                t,
                "| {} | {} | {:.2} | {} |",
                g.target,
                g.detail,
                g.margin,
                if g.met { "**met**" } else { "**not met**" }
            );
        }
        let _ = writeln!(
            t,
            "\nmargin: measured / target for \"≥\" targets, target / measured for \"≤\" ones; ≥ 1.00 is met."
        );
        t
    }
}
