//! The command line every agent shares: `[-c FILE]`, `--help`,
//! `--version` (the daemons' own, [`skein_daemon::cli`]). An agent is
//! started by the scheduler, never by hand, so this is all it takes;
//! [`load_config`] turns it into the configuration, with logging started,
//! or the exit code to leave with.

use std::process::ExitCode;

use skein_config::Config;
use skein_daemon::{EXIT_FAILURE, LogFormat, init_logging};

/// Parses the process's arguments, starts logging and loads the
/// configuration: `Ok` to run, `Err` with the exit code otherwise (after
/// `--help`/`--version`, a usage error, or a configuration that does not
/// load — logged, since an agent's standard error is the scheduler's log).
pub fn load_config(program: &'static str, about: &str) -> Result<Config, ExitCode> {
    let config_path = skein_daemon::cli::config_path(program, about)?;
    init_logging(program, LogFormat::from_env());
    match Config::load(config_path.as_deref()) {
        Ok(loaded) => Ok(loaded.config),
        Err(e) => {
            tracing::error!(error = %e, "cannot load the configuration");
            Err(ExitCode::from(EXIT_FAILURE))
        }
    }
}
