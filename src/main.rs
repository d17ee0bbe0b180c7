//! The `ivr` binary: parse the CLI, start tracing, dispatch.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

/// Every webhook allocates its form, its TwiML and its records: mimalloc serves these
/// small, short-lived blocks with less work and less contention between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Dropped last, after the server has stopped: writes out the lines still queued.
    let _logs = match ivr::logging::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: starting the log thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    match ivr::cli::run(ivr::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
