//! Argument dispatch for the `skein` binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::sysexits::*;

/// skein — a mail transfer agent.
#[derive(Debug, Parser)]
#[command(name = "skein", version, about)]
struct Cli {
    /// Configuration file (default: $SKEIN_CONFIG, else the embedded default).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Submit a message read from standard input (sendmail(1) options).
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail options and recipients, e.g. `-t -i -f sender`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration and print the effective settings.
    Check,
}

/// Runs the `skein` command line; returns the exit code.
pub fn main(args: Vec<OsString>) -> u8 {
    let argv0 = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("skein")
        .to_string();
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match argv0.as_str() {
        "sendmail" => return crate::sendmail::main(&rest, None),
        "mailq" => {
            eprintln!(
                "mailq: listing the queue needs the scheduler, which this build of skein does not include yet"
            );
            return EX_UNAVAILABLE;
        }
        _ => {}
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EX_USAGE } else { EX_OK };
        }
    };
    match cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => config_check(cli.config.as_deref()),
        Command::Sendmail { args } => crate::sendmail::main(&args, cli.config.as_deref()),
    }
}

fn config_check(path: Option<&Path>) -> u8 {
    match skein_config::Config::load(path) {
        Ok(loaded) => {
            match &loaded.source {
                skein_config::Source::File(p) => {
                    println!(
                        "# configuration {} is valid; effective settings:",
                        p.display()
                    )
                }
                skein_config::Source::Embedded => {
                    println!(
                        "# no configuration file given: the embedded default; effective settings:"
                    )
                }
            }
            print!("{}", loaded.config.to_toml());
            EX_OK
        }
        Err(e) => {
            eprintln!("skein: {e}");
            EX_CONFIG
        }
    }
}
