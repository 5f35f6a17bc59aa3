//! `payhook-bench`: issue 7's benchmark. Run it through `scripts/bench`, which builds the
//! release binaries and starts a private PostgreSQL + RabbitMQ; this program then creates a
//! fresh database, runs `payhook-ingest` and `payhook-worker` as child processes and measures:
//!
//! 1. drain: a backlog ingested with the workers stopped, then 1 (and then 2) workers started,
//!    timed from ready to every event processed;
//! 2. the floor: pgbench doing the equivalent durable insert at 1 and 16 clients;
//! 3. ingest: closed-loop load at 1, 32, 128 connections, 1-event and 10-event bodies
//!    (workers stopped), and ingest's peak RSS;
//! 4. cost growth: stored events inserted with SQL, then ingest at 32 connections again;
//! 5. correctness: rows stored == 2xx answers, every event processed.
//!
//! Progress goes to stderr, the table to stdout, `--json PATH` writes everything. The code is
//! in the library: `payhook_bench::benchmark`.

use std::process::ExitCode;

use clap::Parser;
use payhook_bench::benchmark::{self, Args};

#[tokio::main]
async fn main() -> ExitCode {
    benchmark::main(Args::parse()).await
}
