//! The command line every agent shares: `[-c FILE]`, `--help`,
//! `--version`. An agent is started by the scheduler, never by hand, so
//! this is all it takes; [`load_config`] turns it into the configuration,
//! with logging started, or the exit code to leave with.

use std::path::PathBuf;
use std::process::ExitCode;

use skein_config::Config;
use skein_daemon::{EXIT_FAILURE, LogFormat, init_logging};

/// `EX_USAGE` from sysexits.h.
pub const EX_USAGE: u8 = 64;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the agent with this configuration file (else `SKEIN_CONFIG`,
    /// else the embedded default).
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

/// Parses the process's arguments, starts logging and loads the
/// configuration: `Ok` to run, `Err` with the exit code otherwise (after
/// `--help`/`--version`, a usage error, or a configuration that does not
/// load — logged, since an agent's standard error is the scheduler's log).
pub fn load_config(program: &'static str, about: &str) -> Result<Config, ExitCode> {
    let config_path = match parse_args(program, about, std::env::args().skip(1)) {
        Ok(Action::Run { config }) => config,
        Ok(Action::Answered) => return Err(ExitCode::SUCCESS),
        Err(message) => {
            eprintln!("{program}: {message}\nusage: {program} [-c FILE]");
            return Err(ExitCode::from(EX_USAGE));
        }
    };
    init_logging(program, LogFormat::from_env());
    match Config::load(config_path.as_deref()) {
        Ok(loaded) => Ok(loaded.config),
        Err(e) => {
            tracing::error!(error = %e, "cannot load the configuration");
            Err(ExitCode::from(EXIT_FAILURE))
        }
    }
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
