//! The `ivr` binary: parse the CLI, start tracing, dispatch.
#![forbid(unsafe_code)]

use clap::Parser;
use std::process::ExitCode;

/// Every webhook allocates its form, its TwiML and its records: mimalloc serves these
/// small, short-lived blocks with less work and less contention between threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Dropped last, after the runtime and everything on it has stopped: writes out the
    // lines still buffered, those logged while the runtime shut down included.
    let _logs = match ivr::logging::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: starting the log thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match ivr::cli::run(ivr::cli::Cli::parse()).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    });
    drop(runtime);
    code
}
