//! payhook's harnesses around the real binaries, shared by two programs:
//! `payhook-bench` (issue 7: throughput beside the PostgreSQL floor, `scripts/bench`) and
//! `payhook-chaos` (issue 8: faults under load, then proof nothing was lost or applied twice,
//! `scripts/chaos`).
//!
//! | module | what it is for |
//! | --- | --- |
//! | [`procs`] | payhook-ingest / payhook-worker as child processes, readiness, /proc readings |
//! | [`load`] | signing deliveries as each gateway does, HTTP/1.1 client pieces, the bench's closed loop |
//! | [`benchmark`] | payhook-bench's command line, steps and report |
//! | [`chaos`] | payhook-chaos's command line, workload, faults, drain and checks |

pub mod benchmark;
pub mod chaos;
pub mod load;
pub mod procs;

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
