//! The command line every skein daemon and agent shares: `[-c FILE]`,
//! `--help`, `--version`. [`load_config`] turns it into the configuration
//! or into the exit code to leave with.

use std::path::PathBuf;
use std::process::ExitCode;

use skein_config::{Config, Loaded};

/// `EX_USAGE` from sysexits.h: the command line is wrong.
pub const EX_USAGE: u8 = 64;
/// `EX_CONFIG` from sysexits.h: the configuration cannot be used.
pub const EX_CONFIG: u8 = 78;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Run with this configuration file (else `SKEIN_CONFIG`, else the
    /// embedded default).
    Run {
        /// `-c FILE`.
        config: Option<PathBuf>,
    },
    /// `--help` or `--version` has been answered.
    Answered,
}

/// Parses the arguments (without argv\[0\]); `Err` is a usage error.
/// `about` is the one-paragraph description `--help` prints.
pub fn parse_args(
    program: &str,
    about: &str,
    mut args: impl Iterator<Item = String>,
) -> Result<Action, String> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                let path = args.next().ok_or(format!("{arg} needs a file name"))?;
                config = Some(PathBuf::from(path));
            }
            "-h" | "--help" => {
                println!("usage: {program} [-c FILE]\n\n{about}");
                return Ok(Action::Answered);
            }
            "-V" | "--version" => {
                println!("{program} {}", env!("CARGO_PKG_VERSION"));
                return Ok(Action::Answered);
            }
            other => match other.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    Ok(Action::Run { config })
}

/// The configuration file the process's arguments name: `Ok` to run,
/// `Err` with the exit code after `--help`/`--version` or a usage error
/// (reported on standard error).
pub fn config_path(program: &str, about: &str) -> Result<Option<PathBuf>, ExitCode> {
    match parse_args(program, about, std::env::args().skip(1)) {
        Ok(Action::Run { config }) => Ok(config),
        Ok(Action::Answered) => Err(ExitCode::SUCCESS),
        Err(message) => {
            eprintln!("{program}: {message}\nusage: {program} [-c FILE]");
            Err(ExitCode::from(EX_USAGE))
        }
    }
}

/// For a daemon's `main`: parses the arguments and loads the
/// configuration, or returns the exit code to leave with — `EX_CONFIG`
/// for a configuration that does not load, reported on standard error
/// (logging is not started yet: [`crate::run`] starts it).
pub fn load_config(program: &str, about: &str) -> Result<Loaded, ExitCode> {
    let path = config_path(program, about)?;
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("{program}: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let parse = |args: &[&str]| parse_args("a", "b", args.iter().map(|s| s.to_string()));
        let run = |config: Option<&str>| {
            Ok(Action::Run {
                config: config.map(PathBuf::from),
            })
        };
        let table: &[(&[&str], Result<Action, ()>)] = &[
            (&[], run(None)),
            (&["-c", "a.toml"], run(Some("a.toml"))),
            (&["--config", "b.toml"], run(Some("b.toml"))),
            (&["--config=c.toml"], run(Some("c.toml"))),
            (&["--help"], Ok(Action::Answered)),
            (&["-V"], Ok(Action::Answered)),
            (&["-c"], Err(())),
            (&["extra"], Err(())),
        ];
        for (args, want) in table {
            assert_eq!(parse(args).map_err(drop), *want, "{args:?}");
        }
    }
}
