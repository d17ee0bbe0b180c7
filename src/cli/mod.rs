//! Subcommands; each calls into the library.

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod users;

/// Guest Care IVR: answers Twilio voice webhooks from flows in ivr_flows/ and records every call.
#[derive(Debug, Parser)]
#[command(name = "ivr", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer calls (reads ivr.toml / IVR_CONFIG and the IVR_* environment).
    Serve,
    /// Create the database if needed and apply pending migrations.
    Migrate,
    /// Add synthetic calls (with steps, webhooks and tickets) to the database, to measure
    /// the manager API at scale; refused on a database that holds real calls.
    Seed {
        /// How many calls.
        #[arg(long, default_value_t = 1_000)]
        calls: u64,
        /// Spread over this many days before now.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Copy a SQLite database into PostgreSQL: calls, steps, tickets and their trails,
    /// e-mails, users, the audit log and the insights. Stop the servers on the SQLite file
    /// first. Resumes an interrupted copy; refuses a target that holds other calls.
    MigrateData {
        /// The SQLite database, `sqlite://PATH`.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database, `postgres://USER@HOST/DATABASE`.
        #[arg(long)]
        to: String,
        /// Check and count, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Console accounts: add, set a password, disable, enable, list.
    Users {
        /// Account tool.
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Flow tools.
    Flows {
        /// Flow tool.
        #[command(subcommand)]
        command: FlowsCommand,
    },
}

/// Flow subcommands.
#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Validate flows; exits non-zero listing every problem.
    Check {
        /// Directory of flow files (default: the configured one, ivr_flows/).
        dir: Option<PathBuf>,
    },
    /// Print the flows as a Graphviz DOT picture (menu options with their labels), for
    /// `dot -Tsvg`.
    Draw {
        /// Directory of flow files (default: the configured one, ivr_flows/).
        dir: Option<PathBuf>,
    },
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    match cli.command {
        Command::Serve => {
            crate::app::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = crate::storage::open_with(
                &config.database_url,
                config.sqlite_synchronous,
                config.postgres,
            )
            .await?
            .calls;
            store.migrate().await?;
            // A migration that rebuilds tables leaves them in the WAL: copied in here, not
            // by the first start of the server.
            store.close().await?;
            println!(
                "migrations applied to {}",
                crate::storage::shown_url(&config.database_url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Seed { calls, days } => {
            let store = crate::storage::open_with(
                &config.database_url,
                config.sqlite_synchronous,
                config.postgres,
            )
            .await?
            .calls;
            store.migrate().await?;
            drop(store);
            let started = std::time::Instant::now();
            let s =
                crate::storage::seed(&config.database_url, calls, days, chrono::Utc::now()).await?;
            println!(
                "seeded {} calls, {} steps, {} tickets into {} in {:.1} s",
                s.calls,
                s.steps,
                s.tickets,
                crate::storage::shown_url(&config.database_url),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::MigrateData { from, to, dry_run } => migrate_data(&from, &to, dry_run).await,
        Command::Users { command } => users::run(&config, command).await,
        Command::Flows {
            command: FlowsCommand::Draw { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.flows_dir.clone());
            match crate::flow::load_dir(&dir, &config) {
                Ok(set) => {
                    print!("{}", crate::flow::picture::dot(&set));
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Flows {
            command: FlowsCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or_else(|| config.flows_dir.clone());
            match crate::flow::load_dir(&dir, &config) {
                Ok(set) => {
                    let nodes: usize = set.flows.values().map(|f| f.nodes.len()).sum();
                    println!(
                        "{}: {} flows, {nodes} nodes, version {}: ok",
                        dir.display(),
                        set.flows.len(),
                        set.version
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `ivr migrate-data`: the copy, then each table's rows in the source and the target.
async fn migrate_data(from: &str, to: &str, dry_run: bool) -> anyhow::Result<ExitCode> {
    use crate::storage::shown_url;
    let copied = crate::storage::migrate_data(from, to, dry_run).await?;
    let verb = if dry_run { "would copy" } else { "copied" };
    println!(
        "{verb} {} -> {}{}",
        shown_url(from),
        shown_url(to),
        if copied.resumed {
            " (resuming an earlier copy)"
        } else {
            ""
        }
    );
    println!("{:<16} {:>12} {:>12}", "table", "source", "target");
    for (table, n_from, n_to) in &copied.tables {
        println!("{table:<16} {n_from:>12} {n_to:>12}");
    }
    if dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    if copied.complete() {
        println!("every table holds as many rows in the target as in the source");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("the counts differ: the target is not a whole copy (run again to resume)");
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
