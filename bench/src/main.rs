//! `payhook-bench`: the benchmark behind `scripts/bench` (issue 11's realistic suite by
//! default, issue 7's with `--workload friendly`; `--help` lists every option). The code is in
//! the library: `payhook_bench::benchmark`.

use std::process::ExitCode;

use clap::Parser;
use payhook_bench::benchmark::{self, Args};

#[tokio::main]
async fn main() -> ExitCode {
    benchmark::main(Args::parse()).await
}
