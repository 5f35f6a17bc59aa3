//! payhook's harnesses around the real binaries, shared by two programs:
//! `payhook-bench` (issues 7 and 11: throughput, latency and CPU per event under a realistic
//! load, beside the Flask + Celery peer, `scripts/bench`) and `payhook-chaos` (issue 8:
//! faults under load, then proof nothing was lost or applied twice, `scripts/chaos`).
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`procs`] | payhook-ingest / payhook-worker as child processes, readiness, /proc readings (CPU per process tree) |
//! | [`load`] | signing deliveries as each gateway does, HTTP/1.1 client pieces, the closed-loop load |
//! | [`workload`] | the payments, their events and bodies, their order (the realistic mix, the chaos mix); the model the verdict uses |
//! | [`rng`] | the seeded generator every random choice of a workload comes from |
//! | [`verdict`] | after the drain: the database against the workload's model (lost, dead, applied twice, wrong status) |
//! | [`inflight`] | what is still in flight: unfinished events, queue depths, unpublished outbox |
//! | [`benchmark`] | payhook-bench's command line, steps and report |
//! | [`chaos`] | payhook-chaos's command line, faults, drain and report |

pub mod benchmark;
pub mod chaos;
pub mod inflight;
pub mod load;
pub mod procs;
pub mod rng;
pub mod verdict;
pub mod workload;

/// 1234567 → "1,234,567".
pub fn human(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
