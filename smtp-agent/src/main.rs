//! `skein-smtp [-c FILE]`: the SMTP transport agent. Started by
//! `skein-scheduler`, never by hand; see the library's documentation.

use std::path::PathBuf;
use std::process::ExitCode;

use skein_daemon::{EXIT_FAILURE, LogFormat, init_logging};

/// `EX_USAGE` from sysexits.h.
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let config_path = match parse_args(std::env::args().skip(1)) {
        Ok(Action::Run { config }) => config,
        Ok(Action::Answered) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!(
                "{}: {message}\nusage: {} [-c FILE]",
                skein_smtp::PROGRAM,
                skein_smtp::PROGRAM
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    init_logging(skein_smtp::PROGRAM, LogFormat::from_env());
    let loaded = match skein_config::Config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the configuration");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    skein_smtp::run(loaded.config)
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Run with this configuration file (else `SKEIN_CONFIG`, else the
    /// embedded default).
    Run { config: Option<PathBuf> },
    /// `--help` or `--version` has been answered.
    Answered,
}

/// Parses the arguments; `Err` is a usage error.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Action, String> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => {
                let path = args.next().ok_or(format!("{arg} needs a file name"))?;
                config = Some(PathBuf::from(path));
            }
            "-h" | "--help" => {
                println!(
                    "usage: {} [-c FILE]\n\nThe skein SMTP transport agent. It is started by \
                     skein-scheduler with its socket on file descriptor 3; see \
                     docs/smtp-agent.md.",
                    skein_smtp::PROGRAM
                );
                return Ok(Action::Answered);
            }
            "-V" | "--version" => {
                println!("{} {}", skein_smtp::PROGRAM, env!("CARGO_PKG_VERSION"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]), Ok(Action::Run { config: None }));
        assert_eq!(
            parse(&["-c", "/etc/skein.toml"]),
            Ok(Action::Run {
                config: Some("/etc/skein.toml".into())
            })
        );
        assert_eq!(
            parse(&["--config=x.toml"]),
            Ok(Action::Run {
                config: Some("x.toml".into())
            })
        );
        assert!(parse(&["-c"]).is_err());
        assert!(parse(&["extra"]).is_err());
    }
}
