//! Logging: one line per event on stderr, for humans or for machines.
//!
//! Every skein process logs to stderr and nowhere else; a supervisor,
//! systemd's journal or a shell redirect decides where the lines end up.
//! Two formats exist:
//!
//! - **logfmt**, for machines and the journal: `ts=… level=info
//!   prog=skein-router target=skein_router msg="picked up message"
//!   queue_id=…`, one event per line whatever the values contain;
//! - **human**, for a terminal: the same information, shorter, with the
//!   level coloured.
//!
//! `SKEIN_LOG_FORMAT` (`human`, `logfmt` or `auto`) chooses; `auto` picks
//! human on a terminal and logfmt otherwise, and always logfmt when stderr is
//! the journal's stream. `SKEIN_LOG` filters, in `tracing`'s `EnvFilter`
//! syntax (`info`, `skein_router=debug,info`, …); the default is `info`.

mod escape;
mod format;
mod timestamp;

use std::env;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::time::SystemTime;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use format::{LineFormat, LogfmtFields, Style};

/// The environment variable that selects the log format.
pub const LOG_FORMAT_ENV: &str = "SKEIN_LOG_FORMAT";
/// The environment variable that holds the log filter.
pub const LOG_FILTER_ENV: &str = "SKEIN_LOG";

/// Which line format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human on a terminal, logfmt otherwise and always under journald.
    #[default]
    Auto,
    /// Compact lines for a person at a terminal.
    Human,
    /// `key=value` lines for log collectors and `grep`.
    Logfmt,
}

impl LogFormat {
    /// Reads `SKEIN_LOG_FORMAT`; unset or unknown means [`LogFormat::Auto`]
    /// (an unknown value is reported once logging is up).
    pub fn from_env() -> LogFormat {
        LogFormat::parse(env::var(LOG_FORMAT_ENV).ok().as_deref().unwrap_or("auto"))
            .unwrap_or(LogFormat::Auto)
    }

    /// Parses a format name: `auto`, `human` or `logfmt`, in any case.
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(LogFormat::Auto),
            "human" => Some(LogFormat::Human),
            "logfmt" => Some(LogFormat::Logfmt),
            _ => None,
        }
    }

    /// Decides what `Auto` means for this process: never returns `Auto`.
    ///
    /// The journal stores lines for machines to read back, so it gets
    /// logfmt even when someone asked for `Auto` from a terminal session
    /// whose stderr systemd redirected.
    pub fn resolve(self, stderr_is_terminal: bool, stderr_is_journal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stderr_is_journal => LogFormat::Logfmt,
            LogFormat::Auto if stderr_is_terminal => LogFormat::Human,
            LogFormat::Auto => LogFormat::Logfmt,
            concrete => concrete,
        }
    }
}

/// Installs the process-wide logger writing to stderr.
///
/// Call once, first thing in `main` (the [`crate::run`] skeleton does).
/// If a global subscriber is already installed — a test harness, or an
/// embedding program that set up its own — that one is kept: logging is
/// never a reason to fail start-up.
pub fn init_logging(program: &'static str, format: LogFormat) {
    let stderr_is_terminal = io::stderr().is_terminal();
    let format = format.resolve(stderr_is_terminal, stderr_is_journal());
    let style = match format {
        LogFormat::Human => Style::Human,
        LogFormat::Logfmt | LogFormat::Auto => Style::Logfmt,
    };
    let filter_spec = env::var(LOG_FILTER_ENV).ok();
    let (filter, filter_problem) = filter_from(filter_spec.as_deref());
    let subscriber = build_subscriber(
        program,
        style,
        style == Style::Human && stderr_is_terminal,
        filter,
        io::stderr,
        SystemTime::now,
    );
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        tracing::debug!("a logger was already installed; keeping it");
        return;
    }
    if let Some(problem) = filter_problem {
        tracing::warn!(
            variable = LOG_FILTER_ENV,
            error = problem.as_str(),
            "ignoring invalid log filter, logging at info"
        );
    }
    if let Ok(value) = env::var(LOG_FORMAT_ENV)
        && LogFormat::parse(&value).is_none()
    {
        tracing::warn!(
            variable = LOG_FORMAT_ENV,
            value = value.as_str(),
            "unknown log format (expected human, logfmt or auto), using auto"
        );
    }
}

/// Builds the subscriber; separate from [`init_logging`] so that tests can
/// capture lines in a buffer with a fixed clock.
pub(crate) fn build_subscriber<W>(
    program: &'static str,
    style: Style,
    ansi: bool,
    filter: EnvFilter,
    writer: W,
    clock: fn() -> SystemTime,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .fmt_fields(LogfmtFields)
        .event_format(LineFormat::new(program, style, clock))
        .finish()
}

/// Parses a `SKEIN_LOG` value. An invalid one falls back to `info` rather
/// than stopping the daemon, and the problem is returned for reporting.
fn filter_from(spec: Option<&str>) -> (EnvFilter, Option<String>) {
    let default = || EnvFilter::new("info");
    match spec.map(str::trim) {
        None | Some("") => (default(), None),
        Some(spec) => match EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse(spec)
        {
            Ok(filter) => (filter, None),
            Err(error) => (default(), Some(format!("{spec:?}: {error}"))),
        },
    }
}

/// True when stderr is the stream systemd connected to the journal.
///
/// `JOURNAL_STREAM` alone is not enough: it is inherited by everything a
/// systemd-started session runs, including terminals. systemd sets it to
/// the `device:inode` of the stream it connected, so compare with stderr.
fn stderr_is_journal() -> bool {
    let Some(value) = env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    match nix::sys::stat::fstat(io::stderr().as_fd()) {
        Ok(stat) => journal_stream_matches(value, stat.st_dev, stat.st_ino),
        Err(_) => false,
    }
}

fn journal_stream_matches(value: &str, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = value.trim().split_once(':') else {
        return false;
    };
    dev.parse() == Ok(device) && ino.parse() == Ok(inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        let cases = [
            ("auto", Some(LogFormat::Auto)),
            ("", Some(LogFormat::Auto)),
            ("human", Some(LogFormat::Human)),
            ("Human", Some(LogFormat::Human)),
            (" logfmt\n", Some(LogFormat::Logfmt)),
            ("LOGFMT", Some(LogFormat::Logfmt)),
            ("json", None),
            ("humane", None),
        ];
        for (name, expected) in cases {
            assert_eq!(LogFormat::parse(name), expected, "for {name:?}");
        }
    }

    #[test]
    fn auto_resolution() {
        use LogFormat::*;
        // (asked, stderr is a terminal, stderr is the journal, result)
        let cases = [
            (Auto, true, false, Human),
            (Auto, false, false, Logfmt),
            (Auto, false, true, Logfmt),
            (Auto, true, true, Logfmt),
            (Human, false, true, Human),
            (Human, false, false, Human),
            (Logfmt, true, false, Logfmt),
        ];
        for (asked, terminal, journal, expected) in cases {
            assert_eq!(
                asked.resolve(terminal, journal),
                expected,
                "{asked:?} terminal={terminal} journal={journal}"
            );
        }
    }

    #[test]
    fn journal_stream_values() {
        let cases = [
            ("8:12345", 8, 12345, true),
            ("8:12345\n", 8, 12345, true),
            ("8:12346", 8, 12345, false),
            ("9:12345", 8, 12345, false),
            ("8", 8, 12345, false),
            ("", 8, 12345, false),
            ("x:y", 8, 12345, false),
        ];
        for (value, dev, ino, expected) in cases {
            assert_eq!(
                journal_stream_matches(value, dev, ino),
                expected,
                "for {value:?}"
            );
        }
    }

    #[test]
    fn filter_specs() {
        let cases = [
            (None, false, "info"),
            (Some(""), false, "info"),
            (Some("debug"), false, "debug"),
            (Some("skein_router=trace"), false, "skein_router=trace"),
            (Some("skein=loud"), true, "info"),
        ];
        for (spec, problem, expected) in cases {
            let (filter, reported) = filter_from(spec);
            assert_eq!(reported.is_some(), problem, "for {spec:?}: {reported:?}");
            assert!(
                filter.to_string().contains(expected),
                "for {spec:?}: {filter}"
            );
        }
    }
}
