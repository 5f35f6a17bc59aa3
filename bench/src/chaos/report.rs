//! The chaos run's summary: a markdown report on stdout (what ran, the faults with their
//! times, the drain, the checks) and the same as JSON with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use super::drain::Drain;
use super::faults::FaultRecord;
use super::refused;
use crate::human;
use crate::verdict::{Check, Stored};

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub tag: String,
    pub started_at: String,
    pub workload: WorkloadFigures,
    pub load: LoadFigures,
    /// The genuine unparseable and the forged deliveries sent among the load.
    pub refused: refused::Figures,
    pub faults: Vec<FaultRecord>,
    pub drain: Drain,
    pub stored: Stored,
    /// Calls the workers made to the fake GoCardless API.
    pub gateway_calls: GatewayCalls,
    /// Processes that exited without a fault killing them (each restarted).
    pub crashes: Vec<String>,
    /// The graceful stop at the end (SIGTERM), per process.
    pub shutdown: Vec<Shutdown>,
    pub checks: Vec<Check>,
    pub ok: bool,
    pub elapsed_s: f64,
}

#[derive(Debug, Serialize)]
pub struct WorkloadFigures {
    /// Distinct events meant to be processed.
    pub events: usize,
    /// Events per gateway.
    pub by_gateway: Vec<(String, usize)>,
    pub payments: usize,
    pub mandates: usize,
    /// Distinct deliveries (bodies), and verbatim re-sends of them.
    pub deliveries: usize,
    pub duplicates: usize,
    pub poison: usize,
    pub connections: usize,
    pub workers: usize,
    pub ingests: usize,
    /// The bank-data share of the events (GoCardless bank-account events).
    pub bank: crate::workload::bank::Figures,
}

#[derive(Debug, Serialize)]
pub struct LoadFigures {
    pub seconds: f64,
    pub requests: u64,
    pub acked_deliveries: u64,
    pub acked_events: u64,
    /// Deliveries that needed more than one attempt.
    pub deliveries_retried: u64,
    pub answers_503: u64,
    pub connection_errors: u64,
    pub timeouts: u64,
    /// Answers other than 2xx and 503 (never expected).
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

/// How one process took its SIGTERM at the end.
#[derive(Debug, Serialize)]
pub struct Shutdown {
    pub process: String,
    /// Seconds to exit; `None` when it had to be killed.
    pub seconds: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GatewayCalls {
    pub mandates: u64,
    pub customers: u64,
    pub unexpected: u64,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let w = &self.workload;
        let l = &self.load;
        let _ = writeln!(
            s,
            "## payhook chaos run: {}\n",
            if self.ok { "PASSED" } else { "FAILED" }
        );
        let _ = writeln!(
            s,
            "seed {} · started {} · {:.0} s in all\n",
            self.seed, self.started_at, self.elapsed_s
        );
        let _ = writeln!(
            s,
            "- workload: {} events ({}) in {} payments and {} mandates; {} deliveries + {} \
             verbatim duplicates{}; {} connections, {} ingest(s), {} workers",
            human(w.events as u64),
            w.by_gateway
                .iter()
                .map(|(g, n)| format!("{g} {}", human(*n as u64)))
                .collect::<Vec<_>>()
                .join(", "),
            human(w.payments as u64),
            human(w.mandates as u64),
            human(w.deliveries as u64),
            human(w.duplicates as u64),
            if w.poison > 0 {
                format!(" + {} poison", w.poison)
            } else {
                String::new()
            },
            w.connections,
            w.ingests,
            w.workers
        );
        if w.bank != Default::default() {
            let _ = writeln!(
                s,
                "- bank data (in the gocardless count): {}",
                w.bank.summary()
            );
        }
        let _ = writeln!(
            s,
            "- load: {:.1} s, {} requests for {} acknowledged deliveries ({} events); \
             {} deliveries retried; answers 503: {}, connection errors: {}, timeouts: {}, \
             other: {}",
            l.seconds,
            human(l.requests),
            human(l.acked_deliveries),
            human(l.acked_events),
            human(l.deliveries_retried),
            human(l.answers_503),
            human(l.connection_errors),
            human(l.timeouts),
            l.rejected
        );
        if let Some(r) = &l.first_rejection {
            let _ = writeln!(s, "  - first other answer: {r}");
        }
        let r = &self.refused;
        let _ = writeln!(
            s,
            "- refused on purpose: {} genuine unparseable bodies sent {} times (answered 400: \
             {}), {} forged sent {} times (answered 401/498: {}); {} requests with retries",
            r.genuine,
            r.genuine_sends,
            r.answered_400,
            r.forged,
            r.forged_sends,
            r.answered_bad_signature,
            r.requests
        );
        let _ = writeln!(
            s,
            "- drain: {} {:.1} s after the last acknowledgement{}",
            if self.drain.drained {
                "everything processed, queues empty, outbox published"
            } else {
                "NOT drained"
            },
            self.drain.seconds,
            if self.drain.drained {
                String::new()
            } else {
                format!(
                    " ({}; left: {:?})",
                    self.drain.gave_up.as_deref().unwrap_or("?"),
                    self.drain.left
                )
            }
        );
        let st = &self.stored;
        let _ = writeln!(
            s,
            "- stored: {} deliveries, {} events ({} retried by the worker, {} retries in all), \
             {} payments, {} ledger rows, {} members",
            human(st.deliveries as u64),
            human(st.events as u64),
            human(st.events_retried as u64),
            human(st.worker_retries as u64),
            human(st.payments as u64),
            human(st.ledger_rows as u64),
            human(st.members as u64)
        );
        let g = &self.gateway_calls;
        let _ = writeln!(
            s,
            "- gateway API calls (fake GoCardless): {} mandates, {} customers, {} unexpected",
            g.mandates, g.customers, g.unexpected
        );
        for c in &self.crashes {
            let _ = writeln!(s, "- CRASH: {c}");
        }
        let _ = writeln!(
            s,
            "- SIGTERM at the end: {}",
            self.shutdown
                .iter()
                .map(|d| match (d.seconds, &d.error) {
                    (Some(secs), _) => format!("{} exited in {secs:.1} s", d.process),
                    (None, e) => format!(
                        "**{} did not exit** ({})",
                        d.process,
                        e.as_deref().unwrap_or("?")
                    ),
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            s,
            "\n| fault | at | detail | ready again after | longest without a 2xx | longest without a processed event |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
        for f in &self.faults {
            let _ = writeln!(
                s,
                "| {} | {:.1} s ({} UTC, {} events acked) | {} | {:.1} s | {} | {} |",
                f.fault.name(),
                f.at_s,
                f.at,
                human(f.acked_events_before),
                f.detail,
                f.recovered_after_s,
                secs(f.ingest_gap_s),
                secs(f.drain_gap_s)
            );
        }
        if self.faults.is_empty() {
            let _ = writeln!(s, "| none | | | | | |");
        }
        let _ = writeln!(s, "\n| check | value | expected | |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.name,
                human(c.value),
                human(c.expected),
                if c.ok { "ok" } else { "**FAIL**" }
            );
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            for e in &c.examples {
                let _ = writeln!(s, "- {}: {e}", c.name);
            }
        }
        s
    }
}
