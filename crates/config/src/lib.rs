//! skein-config: the one TOML file that configures every skein process.
//!
//! Every binary calls [`Config::load`] with the `-c FILE` it was given (if
//! any) and gets a fully validated [`Config`]: defaults filled in, relative
//! paths made absolute against the working directory (so that child
//! processes, which may run elsewhere, see the same files), domains in lower
//! case.
//!
//! - **Finds** the file: the explicit path, else the `SKEIN_CONFIG`
//!   environment variable, else the embedded default ([`DEFAULT_CONFIG`]),
//!   which runs skein out of the current directory.
//! - **Reads** only that file, the environment variable and the machine's
//!   host name; it writes nothing and needs no privilege.
//! - **Trusts** nothing in the file: unknown keys, wrong types and unusable
//!   values are all errors ([`ConfigError`]), each naming file, line and
//!   key, e.g. `/etc/skein.toml:12: scheduler.expiry: invalid duration "5x"
//!   (…)`. A typo is never silently ignored, and a process never starts on
//!   a configuration it half understood.
//! - **Keys** honoured: all of them, documented field by field on the
//!   structs below and for operators in `docs/configuration.md`.
//!
//! [`Config::to_toml`] renders the effective configuration (what `skein
//! config check` prints); it parses back to an equal `Config`.

#![warn(missing_docs)]

mod clause;
mod config;
mod decode;
mod dkim;
mod domain;
mod encode;
mod error;
mod net;
mod route;
mod units;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

pub use clause::Clause;
pub use config::{
    Config, DEFAULT_USER, LocalConfig, MetricsConfig, MilterAction, MilterSpec, RouterConfig,
    SchedulerConfig, SmtpConfig, SmtpdConfig, SpoolConfig, SupervisorConfig, TlsConfig,
};
pub use dkim::{
    Canonicalization, DEFAULT_SIGNED_HEADERS, DkimAlgorithm, DkimKey, parse_canonicalization,
};
pub use domain::{is_plausible_domain, system_hostname};
pub use error::{ConfigError, ErrorKind, KeyLines};
pub use net::{HostPort, IpNetwork, TlsPolicy};
pub use route::Route;
pub use units::{ByteSize, ValueError, format_duration, parse_duration};

/// The embedded default configuration, used when no file is named. It
/// spells out every built-in default (and so doubles as an annotated
/// example); a test keeps the two identical.
pub const DEFAULT_CONFIG: &str = include_str!("../default.toml");

/// The environment variable that names the configuration file when no
/// explicit path is given.
pub const CONFIG_ENV: &str = "SKEIN_CONFIG";

/// The name errors in [`DEFAULT_CONFIG`] are reported under.
pub const EMBEDDED_NAME: &str = "(embedded default)";

/// Where a loaded configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file, by absolute path, so that child processes can be handed the
    /// same `-c` whatever their working directory.
    File(PathBuf),
    /// [`DEFAULT_CONFIG`].
    Embedded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Embedded => f.write_str(EMBEDDED_NAME),
        }
    }
}

/// A configuration and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Its origin, for logs and for passing on to child processes.
    pub source: Source,
    /// The name errors report the file under (as the operator wrote it).
    pub shown: String,
    /// The line of each key the file sets.
    pub lines: KeyLines,
}

/// The keys a running daemon cannot take over on a reload: where the
/// spool is and which account owns it (every open file, socket and lock
/// is there, as that account), `skein start`'s own restart rules, and
/// the metrics endpoint (bound once, at the scheduler's start).
/// A reload that changes one of them keeps the old value and logs that a
/// restart is needed; everything else is applied. Prefixes end in `.`.
pub const RESTART_ONLY: &[&str] = &["user", "spool.", "supervisor.", "metrics."];

/// Whether `key` (a dotted setting name from [`Config::settings`]) is one
/// of [`RESTART_ONLY`].
pub fn needs_restart(key: &str) -> bool {
    RESTART_ONLY.iter().any(|k| match k.strip_suffix('.') {
        Some(section) => key
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('.')),
        None => key == *k,
    })
}

/// What changed between two configurations: every dotted key (as in
/// [`Config::settings`]) whose effective value differs, is new or is
/// gone, in file order. Array entries count by index (`route[3].domain`),
/// so that inserting a route names every route after it.
pub fn changed_settings(old: &Config, new: &Config) -> Vec<String> {
    let before = old.settings();
    let after = new.settings();
    let old_map: std::collections::HashMap<&str, &str> = before
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let new_keys: std::collections::HashSet<&str> = after.iter().map(|(k, _)| k.as_str()).collect();
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(k, v)| old_map.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(
        before
            .iter()
            .filter(|(k, _)| !new_keys.contains(k.as_str()))
            .map(|(k, _)| k.clone()),
    );
    changed
}

/// A configuration read again for a reload ([`Loaded::reload`]).
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration read again, with the [`RESTART_ONLY`] keys kept
    /// at their old values.
    pub loaded: Loaded,
    /// The keys whose value changed and that a running daemon applies.
    pub applied: Vec<String>,
    /// The keys that changed but need a restart: their old values stay.
    pub need_restart: Vec<String>,
}

impl Loaded {
    /// Reads the configuration again from where it came from (a reload):
    /// the same file, errors under the same name; relative paths in it are
    /// taken against today's working directory, as at start (no daemon
    /// changes it). The embedded default cannot change: it is returned as
    /// it is.
    pub fn reread(&self) -> Result<Loaded, ConfigError> {
        let Source::File(path) = &self.source else {
            return Ok(self.clone());
        };
        let cwd = std::env::current_dir().map_err(|err| {
            ConfigError::read(
                "(working directory)",
                format!("cannot determine the working directory: {err}"),
            )
        })?;
        let mut loaded = Config::load_with(Some(path), None, &cwd)?;
        loaded.shown = self.shown.clone();
        Ok(loaded)
    }

    /// A daemon's reload: [`Loaded::reread`], then what changed, split
    /// into what a running daemon applies and what needs a restart; the
    /// latter keep their old values in the result, so that what the
    /// daemon puts in force is what it can.
    pub fn reload(&self) -> Result<Reload, ConfigError> {
        let mut loaded = self.reread()?;
        let (need_restart, applied): (Vec<String>, Vec<String>) =
            changed_settings(&self.config, &loaded.config)
                .into_iter()
                .partition(|key| needs_restart(key));
        let old = &self.config;
        loaded.config.user.clone_from(&old.user);
        loaded.config.spool = old.spool.clone();
        loaded.config.supervisor = old.supervisor.clone();
        loaded.config.metrics = old.metrics.clone();
        Ok(Reload {
            loaded,
            applied,
            need_restart,
        })
    }
}

impl Config {
    /// Loads the configuration for this process: `explicit` (from `-c`),
    /// else the file named by `SKEIN_CONFIG`, else the embedded default.
    /// Relative paths, including `explicit` itself, are taken against the
    /// current working directory.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        let cwd = std::env::current_dir().map_err(|err| {
            ConfigError::read(
                "(working directory)",
                format!("cannot determine the working directory: {err}"),
            )
        })?;
        Config::load_with(explicit, std::env::var_os(CONFIG_ENV), &cwd)
    }

    /// [`Config::load`] with its inputs made explicit: `env_value` stands
    /// for `SKEIN_CONFIG` (an empty value counts as unset) and `cwd`, which
    /// should be absolute, for the working directory.
    pub fn load_with(
        explicit: Option<&Path>,
        env_value: Option<OsString>,
        cwd: &Path,
    ) -> Result<Loaded, ConfigError> {
        let named = explicit
            .map(Path::to_path_buf)
            .or_else(|| env_value.filter(|v| !v.is_empty()).map(PathBuf::from));
        let Some(named) = named else {
            return Ok(Loaded {
                config: Config::embedded_default(cwd),
                source: Source::Embedded,
                shown: EMBEDDED_NAME.to_owned(),
                lines: KeyLines::default(),
            });
        };
        // Errors name the file as the operator wrote it; the source is
        // absolute.
        let shown = named.display().to_string();
        let absolute = config::resolve(cwd, &named);
        let bytes = std::fs::read(&absolute)
            .map_err(|err| ConfigError::read(&shown, format!("cannot read: {err}")))?;
        let text = String::from_utf8(bytes).map_err(|err| {
            ConfigError::read(
                &shown,
                format!(
                    "not UTF-8 (invalid byte at offset {})",
                    err.utf8_error().valid_up_to()
                ),
            )
        })?;
        let (config, lines) = decode::decode(&text, &shown, cwd)?;
        Ok(Loaded {
            config,
            source: Source::File(absolute),
            shown,
            lines,
        })
    }

    /// Parses and validates configuration text. `origin` is the name errors
    /// report (usually the file's path); relative paths in the text are
    /// resolved against `cwd`.
    pub fn from_toml_str(text: &str, origin: &str, cwd: &Path) -> Result<Config, ConfigError> {
        decode::decode(text, origin, cwd).map(|(config, _)| config)
    }

    /// The embedded default configuration, its paths under `cwd`.
    pub fn embedded_default(cwd: &Path) -> Config {
        // DEFAULT_CONFIG is part of the binary and a test proves it parses to
        // exactly the built-in defaults, so the fallback is that same value
        // rather than a panic.
        Config::from_toml_str(DEFAULT_CONFIG, EMBEDDED_NAME, cwd)
            .unwrap_or_else(|_| Config::builtin(cwd, system_hostname()))
    }

    /// The effective configuration as TOML: every key with its value,
    /// defaults included, unset optional keys as `""`. Parsing it back gives
    /// an equal `Config`.
    pub fn to_toml(&self) -> String {
        encode::encode(self)
    }

    /// Every effective setting as `(dotted key, TOML value)` in file
    /// order: `smtpd.max_errors = 20`, `route[0].domain = "a.test"`
    /// (`skein config get`, `config check --non-default`).
    pub fn settings(&self) -> Vec<(String, String)> {
        encode::settings(self)
    }
}

#[cfg(test)]
mod tests;
