//! The retention step's results: its rows, and its markdown section (in the suite's report, or
//! alone with `--prune-only`).

use std::fmt::Write as _;

use serde::Serialize;

use super::super::report::mix_label;
use crate::benchmark::common::{Machine, Target};
use crate::benchmark::history::Stored;
use crate::human;
use crate::procs::CpuUse;
use crate::workload::Mix;

/// Ingest over one counted period.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    pub seconds: f64,
    /// 2xx answers started in the period, and the distinct events they carried.
    pub requests: u64,
    pub events: u64,
    pub rps: f64,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Refused deliveries or broken connections, warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Deliveries per group commit, and the mean PostgreSQL transaction of one (ingest's
    /// /metrics).
    pub batch_mean: f64,
    pub commit_ms_mean: f64,
    /// % of one core.
    pub cpu: CpuUse,
    /// What the rest of the machine used meanwhile (busy minus ingest, PostgreSQL, RabbitMQ
    /// and the load generator; the prune's own client included), % of one core: on a shared
    /// machine, the figure that says whether two periods are comparable.
    pub cpu_others: f64,
}

/// The `payhook-worker prune` process.
#[derive(Debug, Clone, Serialize)]
pub struct PruneRun {
    /// RETAIN_* and PRUNE_* as it got them.
    pub settings: Vec<String>,
    /// From its start to its exit.
    pub seconds: f64,
    pub exit: String,
    /// Its stdout (the `prune: removed …` line).
    pub output: String,
    /// Its stderr (the running counts).
    pub log: String,
    /// Exited 0 and said what it removed.
    pub ok: bool,
    /// Still running when the period reached its limit, and stopped.
    pub stopped_at_limit: bool,
    pub removed_deliveries: u64,
    pub removed_events: u64,
    pub removed_outbox: u64,
    pub removed_total: u64,
    pub rows_per_s: f64,
    /// The share of the counted period the prune was running (1 when it outlasted the least
    /// period, which then stretched to its end).
    pub period_share: f64,
    /// It exited before the least period was over.
    pub finished_early: bool,
    /// Stored old rows still there afterwards.
    pub old_left_deliveries: i64,
    pub old_left_events: i64,
    /// Ingest's rate while the prune walked each table, in order.
    pub stretches: Vec<Stretch>,
}

/// A stretch of the period while pruning: the table the prune walked, and ingest meanwhile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stretch {
    /// `webhook_deliveries`, `webhook_events`, `domain_outbox`, "starting" (before its first
    /// batch) or "after the prune".
    pub walking: String,
    pub seconds: f64,
    /// 2xx answers (deliveries, re-sends included).
    pub accepted: u64,
    pub rps: f64,
    /// % of one core: PostgreSQL (the prune's backend included), and the rest of the machine
    /// as in [`Period::cpu_others`].
    pub cpu_postgres: f64,
    pub cpu_others: f64,
}

/// What the load left: every accepted event stored, with its raw delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub accepted_deliveries: u64,
    pub accepted_events: u64,
    /// Deliveries refused or lost with their connection, both periods.
    pub refused: u64,
    pub first_error: Option<String>,
    /// Accepted events without a row.
    pub missing: u64,
    /// Accepted events whose raw delivery is gone.
    pub without_delivery: u64,
    pub examples: Vec<String>,
    pub ok: bool,
}

/// The retention step (issue 15).
#[derive(Debug, Serialize)]
pub struct Retention {
    pub database: String,
    pub postgresql: String,
    pub mix: Mix,
    pub connections: usize,
    pub warmup_s: f64,
    pub steady_s: f64,
    /// Old rows stored: deliveries + events.
    pub rows: u64,
    /// The mix's mean per delivery, which the stored rows imitate.
    pub mix_events_per_delivery: f64,
    pub mix_body_bytes: f64,
    pub stored: Stored,
    pub without: Period,
    pub pruning: Period,
    pub prune: PruneRun,
    /// pruning / without.
    pub rps_ratio: f64,
    pub p99_ratio: f64,
    /// Set when the rest of the machine's CPU use differed between the periods by more than
    /// a fifth of a core: then the ratios mix that load with the prune's.
    pub interference: Option<String>,
    pub targets: Vec<Target>,
    pub correctness: Kept,
    /// Nothing lost, nothing refused, the prune ran.
    pub ok: bool,
    pub elapsed_s: f64,
}

/// `--prune-only`'s whole report.
#[derive(Debug, Serialize)]
pub struct Alone {
    pub mode: String,
    pub seed: u64,
    pub machine: Machine,
    pub retention: Retention,
    pub elapsed_s: f64,
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn rate(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        human(v.round().max(0.0) as u64)
    }
}

fn pct(v: f64) -> String {
    format!("{v:.0}")
}

impl Alone {
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let _ = writeln!(
            t,
            "## payhook benchmark: retention step alone ({} mode, {:.0} s in all, seed {})\n",
            self.mode, self.elapsed_s, self.seed
        );
        let _ = writeln!(
            t,
            "Machine: {} CPUs ({}), {} MiB RAM, Linux {}, PostgreSQL {}, RabbitMQ {}. Load \
             average at start {}, at end {}. payhook settings: {}.\n",
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
        self.retention.markdown(&mut t, m.nproc);
        t
    }
}

impl Retention {
    /// The section, appended to `t`; `nproc` for the CPU columns' scale.
    pub fn markdown(&self, t: &mut String, nproc: usize) {
        let s = &self.stored;
        let p = &self.prune;
        let _ = writeln!(
            t,
            "### Retention under load (issue 15): pruning {} old rows while ingest runs\n",
            human(self.rows)
        );
        let _ = writeln!(
            t,
            "A database of its own ({}): {} raw deliveries and {} `processed` events stored \
             with SQL ({} rows; GoCardless bodies of {} event(s), {} bytes, close to the mix's \
             {:.2} events and {:.0} bytes per delivery), received {:.1} to {:.1} days ago \
             (stored in {:.0} s), then VACUUM ANALYZE and CHECKPOINT ({:.0} s). payhook-ingest \
             alone (no worker), {}, {} connections, closed loop; each period starts from an \
             empty queue after a CHECKPOINT and a {:.0} s warm-up. While pruning, \
             `payhook-worker prune` (release build; {}) starts when the warm-up ends, and the \
             period counted runs from then until it has exited and at least {:.0} s have \
             passed.\n",
            self.database,
            human(s.deliveries),
            human(s.events),
            human(self.rows),
            s.events.checked_div(s.deliveries).unwrap_or(0),
            s.body_bytes,
            self.mix_events_per_delivery,
            self.mix_body_bytes,
            s.newest_days,
            s.oldest_days,
            s.insert_s,
            s.vacuum_s,
            mix_label(self.mix),
            self.connections,
            self.warmup_s,
            p.settings.join(", "),
            self.steady_s
        );
        let _ = writeln!(
            t,
            "| period | seconds | req/s | events/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | batch | commit ms | CPU ingest | CPU pg | CPU rabbit | CPU loadgen | CPU others | CPU busy | iowait |"
        );
        let _ = writeln!(
            t,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (label, r) in [
            ("without pruning", &self.without),
            ("while pruning", &self.pruning),
        ] {
            let _ = writeln!(
                t,
                "| {label} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.seconds,
                rate(r.rps),
                rate(r.events_per_s),
                ms(r.p50_ms),
                ms(r.p99_ms),
                ms(r.p999_ms),
                ms(r.max_ms),
                r.errors,
                r.batch_mean,
                ms(r.commit_ms_mean),
                pct(r.cpu.ingest),
                pct(r.cpu.postgres),
                pct(r.cpu.rabbitmq),
                pct(r.cpu.load_generator),
                pct(r.cpu_others),
                pct(r.cpu.machine_busy),
                pct(r.cpu.machine_iowait)
            );
        }
        let (a, b) = (&self.without, &self.pruning);
        let _ = writeln!(
            t,
            "| **while / without** | | **{:.3} ×** | {:.2} × | {:.2} × | **{:.3} ×** | {:.2} × | {:.2} × | | | {:.2} × | | | | | | | |",
            self.rps_ratio,
            b.events_per_s / a.events_per_s,
            b.p50_ms / a.p50_ms,
            self.p99_ratio,
            b.p999_ms / a.p999_ms,
            b.max_ms / a.max_ms,
            b.commit_ms_mean / a.commit_ms_mean
        );
        let _ = writeln!(
            t,
            "\nCPU columns: % of one core over the period ({nproc} cores: {} % is all of it); \
             PostgreSQL's includes the prune's backend; others: the rest of the machine (busy \
             minus the columns before it). batch / commit ms: mean deliveries per group commit \
             and mean PostgreSQL transaction of one, from ingest's /metrics.\n",
            nproc * 100
        );
        if let Some(note) = &self.interference {
            let _ = writeln!(t, "**Read with care:** {note}.\n");
        }
        let prune_line = if p.ok {
            format!(
                "**removed {} rows** (webhook_deliveries {}, webhook_events {}, domain_outbox {}) \
                 in **{:.1} s** ({} rows/s)",
                human(p.removed_total),
                human(p.removed_deliveries),
                human(p.removed_events),
                human(p.removed_outbox),
                p.seconds,
                rate(p.rows_per_s)
            )
        } else {
            format!(
                "**FAILED** ({}) after {:.1} s: {}; its log: {}",
                p.exit, p.seconds, p.output, p.log
            )
        };
        let overlap = if p.finished_early {
            format!(
                "it **finished before the least period ended**: it ran through {:.0} % of the \
                 {:.1} s counted, the rest was measured without it",
                p.period_share * 100.0,
                self.pruning.seconds
            )
        } else if p.stopped_at_limit {
            format!(
                "it was **still running at the period's limit** and was stopped there ({:.1} s \
                 counted, all of them while it ran)",
                self.pruning.seconds
            )
        } else {
            format!(
                "it ran through the whole {:.1} s counted (the period ended when it exited)",
                self.pruning.seconds
            )
        };
        let _ = writeln!(
            t,
            "The prune: {prune_line}; {overlap}. Stored old rows left afterwards: {} deliveries, \
             {} events.\n",
            human(p.old_left_deliveries.max(0) as u64),
            human(p.old_left_events.max(0) as u64)
        );
        if !p.stretches.is_empty() {
            let _ = writeln!(
                t,
                "| while the prune walks | seconds | ingest req/s | × without pruning | CPU pg | CPU others |"
            );
            let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
            for s in &p.stretches {
                let _ = writeln!(
                    t,
                    "| {} | {:.1} | {} | {:.2} × | {} | {} |",
                    s.walking,
                    s.seconds,
                    rate(s.rps),
                    s.rps / self.without.rps,
                    pct(s.cpu_postgres),
                    pct(s.cpu_others)
                );
            }
            let _ = writeln!(
                t,
                "\nPer stretch: from the accepted count, sampled every second (latency is \
                 measured over the whole period only, in the table above).\n"
            );
        }
        let _ = writeln!(t, "| target (issue 15) | measured | margin | met |");
        let _ = writeln!(t, "|---|---|---:|---|");
        for g in &self.targets {
            let _ = writeln!(t, "{}", g.row(3));
        }
        let c = &self.correctness;
        let _ = writeln!(
            t,
            "\nCorrectness: {} deliveries accepted ({} distinct events) across both periods; \
             refused or lost deliveries: {}{}; **{} accepted events missing, {} without their raw \
             delivery**{} → **{}**{}\n",
            human(c.accepted_deliveries),
            human(c.accepted_events),
            c.refused,
            c.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            c.missing,
            c.without_delivery,
            if c.examples.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {})", c.examples.join("; "))
            },
            if self.ok { "PASS" } else { "FAIL" },
            if p.ok { "" } else { " (the prune failed)" }
        );
    }
}
