//! `ivr users`: console accounts from the command line. Passwords are read from standard
//! input, never from arguments (which other users of the machine can see): typed twice
//! without echo on a terminal, or one line from a pipe.

use crate::config::Config;
use crate::console::accounts;
use crate::storage::console::Role;
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// Account subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add an account; its password is read from standard input.
    Add {
        /// Account name (a-z, 0-9 and . _ @ -).
        name: String,
        /// manager (everything) or agent (works tickets, no user admin).
        #[arg(long, default_value = "agent")]
        role: String,
    },
    /// Set an account's password (read from standard input); its sessions end.
    Passwd {
        /// Account name.
        name: String,
    },
    /// Disable an account; its sessions end at once.
    Disable {
        /// Account name.
        name: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Account name.
        name: String,
    },
    /// List the accounts.
    List,
}

/// Runs one account subcommand against the configured database.
pub async fn run(config: &Config, command: UsersCommand) -> anyhow::Result<ExitCode> {
    let backend = crate::storage::open_with(
        &config.database_url,
        config.sqlite_synchronous,
        config.postgres,
    )
    .await?;
    backend.calls.migrate().await?;
    let store = backend.console.as_ref();
    let actor = actor();
    let now = chrono::Utc::now();
    let done = match command {
        UsersCommand::Add { name, role } => {
            let role = Role::parse(&role).map_err(anyhow::Error::msg)?;
            let password = read_password()?;
            accounts::add_user(store, &name, role, &password, &actor, now)
                .await
                .map(|()| format!("added {name} ({})", role.as_str()))
        }
        UsersCommand::Passwd { name } => {
            let password = read_password()?;
            accounts::set_password(store, &name, &password, &actor, now)
                .await
                .map(|()| format!("password of {name} set; its sessions ended"))
        }
        UsersCommand::Disable { name } => accounts::set_disabled(store, &name, true, &actor, now)
            .await
            .map(|()| format!("disabled {name}; its sessions ended")),
        UsersCommand::Enable { name } => accounts::set_disabled(store, &name, false, &actor, now)
            .await
            .map(|()| format!("enabled {name}")),
        UsersCommand::List => {
            for u in store.list_users().await? {
                println!(
                    "{}\t{}\t{}",
                    u.name,
                    u.role.as_str(),
                    if u.disabled { "disabled" } else { "active" }
                );
            }
            Ok(String::new())
        }
    };
    backend.calls.close().await?;
    match done {
        Ok(message) => {
            if !message.is_empty() {
                println!("{message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Who made the change, for the audit log: the command line and the machine account.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// The new password: typed twice without echo on a terminal, else the first line of
/// standard input.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt_hidden("New password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(first)
}

/// Reads one line from the terminal with echo off, restoring the terminal after.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, OptionalActions::Flush, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(&stdin, OptionalActions::Flush, &saved)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
