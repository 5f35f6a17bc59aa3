//! The realistic suite's results: the rows each step produces, the verdict, the targets, and
//! the markdown on stdout (the same as JSON with `--json`). Every payhook / peer ratio is
//! printed beside its two figures.

use std::fmt::Write as _;

use serde::Serialize;

use super::retention::Retention;
use super::steps::StepPlan;
use super::system::Backlog;
use crate::benchmark::common::{Machine, Target};
use crate::human;
use crate::load::LoadResult;
use crate::procs::{CpuPerEvent, CpuSeconds};
use crate::verdict::Check;
use crate::workload::Mix;

/// How a step's leftovers finished.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settled {
    pub seconds: f64,
    /// Events still unfinished when the wait gave up.
    pub left: u64,
    pub settled: bool,
}

/// Ingest (or the peer's web app) alone: the fill of the drain's backlog, worker stopped.
#[derive(Debug, Clone, Serialize)]
pub struct IngestRow {
    pub system: String,
    pub connections: usize,
    /// 2xx answers, and the distinct events they carried.
    pub requests: u64,
    pub events: u64,
    pub seconds: f64,
    pub rps: f64,
    pub events_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub reconnects: u64,
    pub cpu: CpuSeconds,
    /// Per accepted event (nothing is processed in this step).
    pub cpu_per_event: CpuPerEvent,
}

impl IngestRow {
    pub fn new(system: &str, connections: usize, r: &LoadResult, cpu: CpuSeconds) -> Self {
        Self {
            system: system.to_owned(),
            connections,
            requests: r.ok,
            events: r.events,
            seconds: r.elapsed.as_secs_f64(),
            rps: r.rps(),
            events_per_s: r.events_per_s(),
            p50_ms: r.ms(0.5),
            p99_ms: r.ms(0.99),
            p999_ms: r.ms(0.999),
            max_ms: r.hist.max() as f64 / 1000.0,
            errors: r.errors,
            first_error: r.first_error.clone(),
            reconnects: r.reconnects,
            cpu_per_event: cpu.per_event_ms(r.events),
            cpu,
        }
    }
}

/// The drain from a full queue with one worker.
#[derive(Debug, Clone, Serialize)]
pub struct DrainRow {
    pub system: String,
    /// Events waiting when the worker started consuming.
    pub events: u64,
    /// From consuming to nothing left for the worker (events retrying excluded).
    pub seconds: f64,
    /// From starting the worker to it consuming.
    pub startup_s: f64,
    /// Events the worker finished with (processed, dead, or parked for a retry) per second.
    pub finished_per_s: f64,
    /// Events processed per second: the figure compared (a dead event is no work done).
    pub processed_per_s: f64,
    pub processed: u64,
    pub dead: u64,
    pub retrying_at_end: u64,
    pub stalled: bool,
    pub cpu: CpuSeconds,
    /// Per processed event.
    pub cpu_per_event: CpuPerEvent,
    pub settled: Settled,
}

/// Front and one worker together, steady period only.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEndRow {
    pub system: String,
    pub connections: usize,
    pub warmup_s: f64,
    pub steady_s: f64,
    pub requests: u64,
    pub accepted_rps: f64,
    /// Distinct events accepted per second.
    pub accepted_events_per_s: f64,
    /// Events that reached `processed` in the steady period (any event, not only its own).
    pub processed: u64,
    pub processed_per_s: f64,
    pub dead: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub reconnects: u64,
    pub backlog_start: Backlog,
    pub backlog_end: Backlog,
    pub backlog_grew: bool,
    /// (end − start) / steady seconds, events.
    pub backlog_growth_per_s: f64,
    /// What the system keeps up with: the processed rate when the backlog grew, else the
    /// smaller of the accepted and processed rates.
    pub sustained_per_s: f64,
    pub cpu: CpuSeconds,
    /// Per processed event.
    pub cpu_per_event: CpuPerEvent,
    pub settled: Settled,
}

impl EndToEndRow {
    pub fn new(system: &str, plan: &StepPlan, r: &LoadResult, processed: u64, dead: u64) -> Self {
        let steady = plan.steady.as_secs_f64();
        Self {
            system: system.to_owned(),
            connections: plan.connections,
            warmup_s: plan.warmup.as_secs_f64(),
            steady_s: steady,
            requests: r.ok,
            accepted_rps: r.rps(),
            accepted_events_per_s: r.events_per_s(),
            processed,
            processed_per_s: processed as f64 / steady,
            dead,
            p50_ms: r.ms(0.5),
            p99_ms: r.ms(0.99),
            p999_ms: r.ms(0.999),
            max_ms: r.hist.max() as f64 / 1000.0,
            errors: r.errors,
            first_error: r.first_error.clone(),
            reconnects: r.reconnects,
            backlog_start: Backlog::default(),
            backlog_end: Backlog::default(),
            backlog_grew: false,
            backlog_growth_per_s: 0.0,
            sustained_per_s: 0.0,
            cpu: CpuSeconds::default(),
            cpu_per_event: CpuPerEvent::default(),
            settled: Settled::default(),
        }
    }
}

/// One system's three steps on one mix.
#[derive(Debug, Clone, Serialize)]
pub struct StepSet {
    pub system: String,
    pub mix: Mix,
    pub ingest: IngestRow,
    pub drain: DrainRow,
    pub e2e: EndToEndRow,
}

impl StepSet {
    /// The first refused or lost delivery of its steps, if any.
    pub fn first_error(&self) -> Option<String> {
        self.ingest
            .first_error
            .clone()
            .or_else(|| self.e2e.first_error.clone())
    }
}

/// payhook's verdict after everything settled.
#[derive(Debug, Clone, Serialize)]
pub struct PayhookVerdict {
    pub accepted_deliveries: u64,
    pub accepted_events: u64,
    /// Deliveries answered anything but 2xx, or lost with their connection.
    pub load_errors: u64,
    pub first_error: Option<String>,
    /// Accepted events that ended `dead`.
    pub dead: u64,
    /// Accepted events without a `processed` (or `ignored`) row, dead ones excluded.
    pub missing: u64,
    /// Dead events by gateway and type: how many, of how many stored of that type, and one
    /// `last_error`.
    pub dead_by_type: Vec<DeadByType>,
    /// The chaos run's checks on the same model (ledger, statuses, members, ...).
    pub checks: Vec<Check>,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadByType {
    pub provider: String,
    pub event_type: String,
    pub dead: i64,
    pub of: i64,
    pub last_error: String,
}

/// The peer's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct PeerVerdict {
    pub accepted_events: u64,
    pub load_errors: u64,
    pub first_error: Option<String>,
    /// Accepted events not processed.
    pub missing: u64,
    pub transactions_expected: u64,
    pub transactions_missing: u64,
    pub members_expected: u64,
    pub members_missing: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub payhook: PayhookVerdict,
    pub peer: Option<PeerVerdict>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub seed: u64,
    pub machine: Machine,
    pub connections: usize,
    pub warmup_s: f64,
    pub steady_s: f64,
    pub drain_events: u64,
    pub duplicates: f64,
    pub reconcile_interval: String,
    /// payhook on the chosen workload.
    pub main: StepSet,
    /// payhook draining a backlog of the same mix with one event in ten poison.
    pub poisoned_drain: DrainRow,
    /// With `--peer`: payhook and the peer on the GoCardless mix.
    pub side_by_side: Option<(StepSet, StepSet)>,
    pub verdict: Verdict,
    pub targets: Vec<Target>,
    /// Where a target is out of reach: what the CPU per event allows on this machine.
    pub reach: Vec<String>,
    /// Issue 15's step, unless `--prune-rows 0`.
    pub retention: Option<Retention>,
    pub elapsed_s: f64,
}

pub fn mix_label(mix: Mix) -> &'static str {
    match mix {
        Mix::Realistic => "realistic mix, all four gateways",
        Mix::GoCardless => "GoCardless realistic mix",
        Mix::Chaos => "chaos mix",
    }
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

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || a.is_nan() || b.is_nan() {
        "–".into()
    } else {
        format!("{:.2} ×", a / b)
    }
}

fn backlog(b: &Backlog) -> String {
    format!(
        "{} ev / {} msg",
        human(b.events.max(0) as u64),
        human(b.queue)
    )
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        let _ = writeln!(
            t,
            "## payhook benchmark: realistic suite ({} mode, {:.0} s in all, seed {})\n",
            self.mode, self.elapsed_s, self.seed
        );
        let _ = writeln!(
            t,
            "Machine: {} CPUs ({}), {} MiB RAM, Linux {}, PostgreSQL {}, RabbitMQ {}. Load \
             average at start {}, at end {}. payhook settings: {}; RECONCILE_INTERVAL={} (the \
             outbox relay runs during the steps). No gateway API token anywhere.\n",
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
            },
            self.reconcile_interval
        );
        let _ = writeln!(
            t,
            "Load: {} keep-alive connections, closed loop; lifecycles interleaved and out of \
             order, payments before their mandate, {:.0} % verbatim re-sends. Drain backlog \
             {} events; end to end {:.0} s warm-up then {:.0} s steady (counted).\n",
            self.connections,
            self.duplicates * 100.0,
            human(self.drain_events),
            self.warmup_s,
            self.steady_s
        );
        self.step_set(&mut t, &self.main);
        let (pd, cd) = (&self.poisoned_drain, &self.main.drain);
        let _ = writeln!(
            t,
            "Drain with one event in ten failing permanently (a fresh backlog of the same mix, \
             {} events, {} dead): **{} events/s finished** against the clean drain's {} \
             ({:.2} ×), {} processed/s; CPU {:.2} ms per processed event in all.\n",
            human(pd.events),
            pd.dead,
            rate(pd.finished_per_s),
            rate(cd.finished_per_s),
            pd.finished_per_s / cd.finished_per_s,
            rate(pd.processed_per_s),
            pd.cpu_per_event.total
        );
        if let Some((p, q)) = &self.side_by_side {
            if self.main.mix != Mix::GoCardless {
                self.step_set(&mut t, p);
            }
            self.step_set(&mut t, q);
            side_by_side(&mut t, p, q, m.nproc);
        }
        let _ = writeln!(t, "### Targets (issue 11)\n");
        let _ = writeln!(t, "| target | measured | margin | met |");
        let _ = writeln!(t, "|---|---|---:|---|");
        for g in &self.targets {
            let _ = writeln!(t, "{}", g.row(2));
        }
        let _ = writeln!(
            t,
            "\nmargin: measured / target for \"≥\" targets, target / measured for \"≤\" ones; \
             ≥ 1.00 is met.\n"
        );
        if !self.reach.is_empty() {
            let _ = writeln!(t, "### Within reach on this machine?\n");
            for line in &self.reach {
                let _ = writeln!(t, "- {line}");
            }
            let _ = writeln!(t);
        }
        self.verdict_section(&mut t);
        if let Some(r) = &self.retention {
            let _ = writeln!(t);
            r.markdown(&mut t, m.nproc);
        }
        t
    }

    fn step_set(&self, t: &mut String, s: &StepSet) {
        let _ = writeln!(t, "### {} — {}\n", s.system, mix_label(s.mix));
        let _ = writeln!(
            t,
            "| step | req/s | events/s accepted | events/s processed | p50 ms | p99 ms | p99.9 ms | max ms | backlog start → end | dead | errors |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
        let i = &s.ingest;
        let _ = writeln!(
            t,
            "| ingest alone (worker stopped, {} conns) | {} | {} | – | {} | {} | {} | {} | – | – | {} |",
            i.connections,
            rate(i.rps),
            rate(i.events_per_s),
            ms(i.p50_ms),
            ms(i.p99_ms),
            ms(i.p999_ms),
            ms(i.max_ms),
            i.errors
        );
        let d = &s.drain;
        let _ = writeln!(
            t,
            "| drain, 1 worker, {} events{} | – | – | {} | – | – | – | – | {} → {} ev | {} | – |",
            human(d.events),
            if d.stalled { " (STALLED)" } else { "" },
            rate(d.processed_per_s),
            human(d.events),
            d.retrying_at_end,
            d.dead
        );
        let e = &s.e2e;
        let _ = writeln!(
            t,
            "| end to end, front + 1 worker, {} conns, {:.0} s steady | {} | {} | {} | {} | {} | {} | {} | {} → {}{} | {} | {} |",
            e.connections,
            e.steady_s,
            rate(e.accepted_rps),
            rate(e.accepted_events_per_s),
            rate(e.processed_per_s),
            ms(e.p50_ms),
            ms(e.p99_ms),
            ms(e.p999_ms),
            ms(e.max_ms),
            backlog(&e.backlog_start),
            backlog(&e.backlog_end),
            if e.backlog_grew { " **growing**" } else { "" },
            e.dead,
            e.errors
        );
        let _ = writeln!(
            t,
            "\nEnd to end sustained: **{} events/s**{}. Drain: {} events/s finished (processed, \
             dead or parked for retry), {:.2} s worker start.\n",
            rate(e.sustained_per_s),
            if e.backlog_grew {
                format!(
                    " (the backlog grew by {:.0} events/s: the processed rate is what it sustains)",
                    e.backlog_growth_per_s
                )
            } else {
                String::new()
            },
            rate(d.finished_per_s),
            d.startup_s
        );
        let front = if s.system == "peer" { "web" } else { "ingest" };
        let _ = writeln!(
            t,
            "CPU ms per processed event (ingest alone: per accepted event); % = of all {} cores over the step:\n",
            self.machine.nproc
        );
        let _ = writeln!(
            t,
            "| step | {front} | worker | PostgreSQL | RabbitMQ | **total** | load generator | machine busy | busy % |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (label, c, cpu) in [
            ("ingest alone", &i.cpu_per_event, &i.cpu),
            ("drain", &d.cpu_per_event, &d.cpu),
            ("end to end", &e.cpu_per_event, &e.cpu),
        ] {
            let _ = writeln!(
                t,
                "| {label} | {} | {} | {} | {} | **{}** | {} | {} | {:.0} |",
                ms(c.ingest),
                ms(c.workers),
                ms(c.postgres),
                ms(c.rabbitmq),
                ms(c.total),
                ms(c.load_generator),
                ms(c.machine_busy),
                cpu.machine_busy / cpu.wall.max(1e-9) / self.machine.nproc.max(1) as f64 * 100.0
            );
        }
        let c = parts_sum(s);
        let _ = writeln!(
            t,
            "| ingest alone + drain | {} | {} | {} | {} | **{}** | {} | {} | – |",
            ms(c.ingest),
            ms(c.workers),
            ms(c.postgres),
            ms(c.rabbitmq),
            ms(c.total),
            ms(c.load_generator),
            ms(c.machine_busy)
        );
        let _ = writeln!(
            t,
            "\nEnd to end divides everything the step spent by the events it processed, so \
             while the backlog grows, ingest's work for events still waiting is charged to the \
             ones processed; \"ingest alone + drain\" is one event's cost through each part \
             with nothing waiting.\n"
        );
    }

    fn verdict_section(&self, t: &mut String) {
        let v = &self.verdict.payhook;
        let _ = writeln!(t, "### Correctness (after every step settled)\n");
        let _ = writeln!(
            t,
            "- payhook: {} deliveries accepted ({} distinct events); refused or lost deliveries: {}{}",
            human(v.accepted_deliveries),
            human(v.accepted_events),
            v.load_errors,
            v.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            t,
            "- payhook: **{} accepted events dead, {} missing** (2xx answered, no processed row)",
            v.dead, v.missing
        );
        if !v.dead_by_type.is_empty() {
            let _ = writeln!(
                t,
                "\n| dead events: gateway | type | dead | of stored | share | one last_error |"
            );
            let _ = writeln!(t, "|---|---|---:|---:|---:|---|");
            for d in &v.dead_by_type {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {:.1} % | {} |",
                    d.provider,
                    d.event_type,
                    human(d.dead.max(0) as u64),
                    human(d.of.max(0) as u64),
                    d.dead as f64 / d.of.max(1) as f64 * 100.0,
                    d.last_error.replace('|', "\\|")
                );
            }
        }
        let _ = writeln!(t, "\n| payhook check | value | expected | ok | examples |");
        let _ = writeln!(t, "|---|---:|---:|---|---|");
        for c in &v.checks {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} |",
                c.name,
                human(c.value),
                human(c.expected),
                if c.ok { "ok" } else { "**FAIL**" },
                c.examples.join("; ").replace('|', "\\|")
            );
        }
        if let Some(p) = &self.verdict.peer {
            let _ = writeln!(
                t,
                "\n- peer: {} distinct events accepted; refused or lost deliveries: {}{}; **{} \
                 missing** (not processed); transactions {} of {} recorded, members {} of {}",
                human(p.accepted_events),
                p.load_errors,
                p.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                p.missing,
                human(p.transactions_expected - p.transactions_missing),
                human(p.transactions_expected),
                human(p.members_expected - p.members_missing),
                human(p.members_expected)
            );
        }
        let _ = writeln!(
            t,
            "\n**correctness: {}**",
            if self.verdict.ok { "PASS" } else { "FAIL" }
        );
    }
}

/// The comparison table: every figure of both, and the ratio beside it.
fn side_by_side(t: &mut String, p: &StepSet, q: &StepSet, nproc: usize) {
    let _ = writeln!(
        t,
        "### Side by side: payhook vs the peer (Flask + gunicorn + Celery), {} for both\n",
        mix_label(Mix::GoCardless)
    );
    let _ = writeln!(t, "| measure | payhook | peer | payhook / peer |");
    let _ = writeln!(t, "|---|---:|---:|---:|");
    let mut row = |label: &str, a: f64, b: f64, fmt: fn(f64) -> String| {
        let _ = writeln!(t, "| {label} | {} | {} | {} |", fmt(a), fmt(b), ratio(a, b));
    };
    let (e, f) = (&p.e2e, &q.e2e);
    row(
        "end to end: sustained events/s",
        e.sustained_per_s,
        f.sustained_per_s,
        rate,
    );
    row(
        "end to end: accepted req/s",
        e.accepted_rps,
        f.accepted_rps,
        rate,
    );
    row(
        "end to end: accepted events/s",
        e.accepted_events_per_s,
        f.accepted_events_per_s,
        rate,
    );
    row(
        "end to end: processed events/s",
        e.processed_per_s,
        f.processed_per_s,
        rate,
    );
    row("end to end: p50 ms", e.p50_ms, f.p50_ms, ms);
    row("end to end: p99 ms", e.p99_ms, f.p99_ms, ms);
    row(
        "end to end: backlog growth, events/s",
        e.backlog_growth_per_s,
        f.backlog_growth_per_s,
        |v| format!("{v:.0}"),
    );
    for (label, a, b) in cpu_rows(&e.cpu_per_event, &f.cpu_per_event) {
        row(&format!("end to end: CPU ms/event, {label}"), a, b, ms);
    }
    let (d, g) = (&p.drain, &q.drain);
    row(
        "drain, 1 worker: processed events/s",
        d.processed_per_s,
        g.processed_per_s,
        rate,
    );
    for (label, a, b) in cpu_rows(&d.cpu_per_event, &g.cpu_per_event) {
        row(&format!("drain: CPU ms/event, {label}"), a, b, ms);
    }
    for (label, a, b) in cpu_rows(&parts_sum(p), &parts_sum(q)) {
        row(
            &format!("ingest alone + drain: CPU ms/event, {label}"),
            a,
            b,
            ms,
        );
    }
    let (i, j) = (&p.ingest, &q.ingest);
    row("ingest alone: req/s", i.rps, j.rps, rate);
    row("ingest alone: p50 ms", i.p50_ms, j.p50_ms, ms);
    row("ingest alone: p99 ms", i.p99_ms, j.p99_ms, ms);
    row(
        "ingest alone: CPU ms per accepted event, total",
        i.cpu_per_event.total,
        j.cpu_per_event.total,
        ms,
    );
    let _ = writeln!(
        t,
        "\nfront = payhook-ingest / the peer's gunicorn (master + workers); worker = one \
         payhook-worker / the peer's Celery (main + prefork pool); PostgreSQL = the postmaster \
         and all its backends; RabbitMQ = the Erlang VM. Total = those four (the load \
         generator is apart). {nproc} cores = {} ms of CPU per second in all.\n",
        nproc * 1000
    );
}

/// One event's CPU through ingest alone (per accepted event) and the drain (per processed
/// event), component by component.
pub fn parts_sum(s: &StepSet) -> CpuPerEvent {
    let (a, b) = (&s.ingest.cpu_per_event, &s.drain.cpu_per_event);
    CpuPerEvent {
        events: b.events,
        ingest: a.ingest + b.ingest,
        workers: a.workers + b.workers,
        postgres: a.postgres + b.postgres,
        rabbitmq: a.rabbitmq + b.rabbitmq,
        total: a.total + b.total,
        load_generator: a.load_generator + b.load_generator,
        machine_busy: a.machine_busy + b.machine_busy,
    }
}

fn cpu_rows(a: &CpuPerEvent, b: &CpuPerEvent) -> [(&'static str, f64, f64); 5] {
    [
        ("front", a.ingest, b.ingest),
        ("worker", a.workers, b.workers),
        ("PostgreSQL", a.postgres, b.postgres),
        ("RabbitMQ", a.rabbitmq, b.rabbitmq),
        ("**total**", a.total, b.total),
    ]
}
