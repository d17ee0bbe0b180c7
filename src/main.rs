//! The `ivr` binary: parse the CLI, start tracing, dispatch.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Every webhook allocates its form, its TwiML and its records: mimalloc serves these
/// small, short-lived blocks with less work and less contention between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match ivr::cli::run(ivr::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
