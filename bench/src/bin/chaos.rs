//! `payhook-chaos`: issue 8's chaos run. Run it through `scripts/chaos`, which builds the
//! release binaries and starts the private `chaos` stack; this program then runs ingest and
//! two workers against a fresh database, drives signed deliveries from all four gateways while
//! it kills and restarts the processes, RabbitMQ and PostgreSQL, waits for everything to
//! drain, and checks that nothing was lost or applied twice. The code is in the library:
//! `payhook_bench::chaos`.

use std::process::ExitCode;

use clap::Parser;
use payhook_bench::chaos::{self, Args};

#[tokio::main]
async fn main() -> ExitCode {
    chaos::main(Args::parse()).await
}
