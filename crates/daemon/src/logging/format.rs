//! The two line formats: logfmt for machines, a compact one for terminals.
//!
//! Both are written by hand rather than with `tracing_subscriber`'s own
//! formatters because those print a message's text raw (`info!("{}", x)`
//! with a hostile `x` would forge lines) and cannot produce logfmt. Both
//! go through [`super::escape`], so neither can be made to emit two lines for
//! one event.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::escape::{push_key, push_text, push_value};
use super::timestamp::{Precision, write_rfc3339};

/// Which of the two line shapes to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// `ts=… level=info prog=… target=… msg="…" key=value …`
    Logfmt,
    /// `2026-11-29T00:00:00.123Z  INFO skein-router: message key=value`,
    /// with the level coloured when the writer is a terminal.
    Human,
}

/// The event formatter installed by [`super::init_logging`].
pub(crate) struct LineFormat {
    program: &'static str,
    style: Style,
    /// The clock is a parameter so that tests can assert whole lines.
    clock: fn() -> SystemTime,
}

impl LineFormat {
    pub(crate) fn new(program: &'static str, style: Style, clock: fn() -> SystemTime) -> Self {
        LineFormat {
            program,
            style,
            clock,
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = FieldCollector::new(true);
        event.record(&mut fields);

        // Build the whole line first and hand it to the writer in one call,
        // so that lines from concurrent threads do not interleave.
        let mut line = String::with_capacity(160);
        match self.style {
            Style::Logfmt => {
                line.push_str("ts=");
                write_rfc3339(&mut line, (self.clock)(), Precision::Micros);
                line.push_str(" level=");
                line.push_str(level_lowercase(metadata.level()));
                line.push_str(" prog=");
                push_value(&mut line, self.program);
                line.push_str(" target=");
                push_value(&mut line, metadata.target());
                if let Some(message) = &fields.message {
                    line.push_str(" msg=");
                    push_value(&mut line, message);
                }
            }
            Style::Human => {
                write_rfc3339(&mut line, (self.clock)(), Precision::Millis);
                line.push(' ');
                push_level_human(&mut line, metadata.level(), writer.has_ansi_escapes());
                line.push(' ');
                push_text(&mut line, self.program);
                line.push_str(": ");
                if let Some(message) = &fields.message {
                    push_text(&mut line, message);
                }
            }
        }
        if !fields.rendered.is_empty() {
            line.push(' ');
            line.push_str(&fields.rendered);
        }
        // Fields of the enclosing spans (say, a session's peer address),
        // outermost first. They were rendered by `LogfmtFields`, so they are
        // already escaped.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(span_fields) = extensions.get::<FormattedFields<N>>()
                    && !span_fields.is_empty()
                {
                    line.push(' ');
                    line.push_str(span_fields);
                }
            }
        }
        if self.style == Style::Human && metadata.target() != self.program {
            // Humans grep by program; the module path is for developers and
            // goes last so it does not push the message off the screen.
            line.push_str(" target=");
            push_value(&mut line, metadata.target());
        }
        line.push('\n');
        writer.write_str(&line)
    }
}

/// Renders span fields as escaped `key=value` pairs.
pub(crate) struct LogfmtFields;

impl<'writer> FormatFields<'writer> for LogfmtFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // A span has no message; a field named `message` is kept as is.
        let mut collector = FieldCollector::new(false);
        fields.record(&mut collector);
        writer.write_str(&collector.rendered)
    }
}

/// Collects an event's fields: the message apart, the rest as escaped
/// `key=value` pairs in the order they were given.
struct FieldCollector {
    separate_message: bool,
    message: Option<String>,
    rendered: String,
}

impl FieldCollector {
    fn new(separate_message: bool) -> Self {
        FieldCollector {
            separate_message,
            message: None,
            rendered: String::new(),
        }
    }

    fn record_value(&mut self, field: &Field, value: &str) {
        if self.separate_message && field.name() == "message" {
            self.message = Some(value.to_owned());
            return;
        }
        if !self.rendered.is_empty() {
            self.rendered.push(' ');
        }
        push_key(&mut self.rendered, field.name());
        self.rendered.push('=');
        push_value(&mut self.rendered, value);
    }
}

impl Visit for FieldCollector {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Strings are printed as their text, not their Debug form: the
        // escaping above is what keeps them safe, and `"…"` twice is noise.
        self.record_value(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain on one line: "outer: inner: root cause".
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.record_value(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Also reached for `%display` values and for the message, whose
        // `fmt::Arguments` Debug form is the formatted text itself.
        self.record_value(field, &format!("{value:?}"));
    }
}

fn level_lowercase(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

fn push_level_human(line: &mut String, level: &Level, ansi: bool) {
    let (text, colour) = match *level {
        Level::TRACE => ("TRACE", "35"),
        Level::DEBUG => ("DEBUG", "34"),
        Level::INFO => (" INFO", "32"),
        Level::WARN => (" WARN", "33"),
        Level::ERROR => ("ERROR", "31"),
    };
    if ansi {
        let _ = write!(line, "\x1b[{colour}m{text}\x1b[0m");
    } else {
        line.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::super::build_subscriber;
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};
    use tracing::{debug, error, info, info_span, warn};
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::MakeWriter;

    /// A `MakeWriter` that appends everything to a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8(bytes).expect("log output is UTF-8")
        }
    }

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_795_910_400, 123_456_789)
    }

    /// Runs `emit` under a subscriber of `style` and returns what it wrote.
    fn capture(style: Style, ansi: bool, filter: &str, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = build_subscriber(
            "skein-router",
            style,
            ansi,
            EnvFilter::new(filter),
            buffer.clone(),
            fixed_clock,
        );
        tracing::subscriber::with_default(subscriber, emit);
        buffer.text()
    }

    const TS: &str = "ts=2026-11-29T00:00:00.123456Z";

    #[test]
    fn logfmt_lines() {
        let target = module_path!();
        let cases: Vec<(Box<dyn FnOnce()>, String)> = vec![
            (
                Box::new(|| info!(queue_id = "4XyZ12", "picked up message")),
                format!(
                    "{TS} level=info prog=skein-router target={target} msg=\"picked up message\" queue_id=4XyZ12\n"
                ),
            ),
            (
                Box::new(|| warn!(attempts = 3_u64, ok = false, ratio = 0.5, "retry")),
                format!(
                    "{TS} level=warn prog=skein-router target={target} msg=retry attempts=3 ok=false ratio=0.5\n"
                ),
            ),
            (
                Box::new(|| error!(peer = %"10.0.0.1:25", reply = ?"550 no", "x")),
                format!(
                    "{TS} level=error prog=skein-router target={target} msg=x peer=10.0.0.1:25 reply=\"\\\"550 no\\\"\"\n"
                ),
            ),
            (
                Box::new(|| info!(queue_id = "A")),
                format!("{TS} level=info prog=skein-router target={target} queue_id=A\n"),
            ),
            (
                Box::new(|| info!(target: "custom target", "t")),
                format!("{TS} level=info prog=skein-router target=\"custom target\" msg=t\n"),
            ),
        ];
        for (emit, expected) in cases {
            assert_eq!(capture(Style::Logfmt, false, "trace", emit), expected);
        }
    }

    #[test]
    fn logfmt_escapes_hostile_values_onto_one_line() {
        let hostile = "MAIL FROM:<a@b>\r\nts=0 level=error msg=\"forged\"\x1b[2J";
        let out = capture(Style::Logfmt, false, "info", || {
            info!(command = hostile, "got {}", hostile);
        });
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'));
        let expected_value =
            "\"MAIL FROM:<a@b>\\r\\nts=0 level=error msg=\\\"forged\\\"\\u001b[2J\"";
        assert!(
            out.contains(&format!(" msg=\"got {}", &expected_value[1..])),
            "{out}"
        );
        assert!(out.contains(&format!(" command={expected_value}")), "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\r'));
    }

    #[test]
    fn error_values_print_their_cause_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cannot write queue file")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let failure = Outer(io::Error::other("disk full"));
        let out = capture(Style::Logfmt, false, "info", || {
            let failure: &(dyn std::error::Error + 'static) = &failure;
            error!(error = failure, "deferred");
        });
        assert!(
            out.ends_with(" msg=deferred error=\"cannot write queue file: disk full\"\n"),
            "{out}"
        );
    }

    #[test]
    fn span_fields_follow_event_fields_outermost_first() {
        let out = capture(Style::Logfmt, false, "info", || {
            let session = info_span!("session", peer = "192.0.2.1", helo = "evil\nhost");
            let _s = session.enter();
            let transaction = info_span!("transaction", queue_id = "Q1");
            let _t = transaction.enter();
            info!(rcpt = "a@example.org", "accepted");
        });
        assert!(
            out.ends_with(
                " msg=accepted rcpt=a@example.org peer=192.0.2.1 helo=\"evil\\nhost\" queue_id=Q1\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn filter_drops_events_below_the_level() {
        let out = capture(Style::Logfmt, false, "info", || {
            debug!("hidden");
            info!("shown");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.contains("msg=shown"));
    }

    #[test]
    fn human_lines() {
        let target = module_path!();
        let out = capture(Style::Human, false, "info", || {
            info!(queue_id = "Q1", "picked up message");
        });
        assert_eq!(
            out,
            format!(
                "2026-11-29T00:00:00.123Z  INFO skein-router: picked up message queue_id=Q1 target={target}\n"
            )
        );
        let out = capture(Style::Human, false, "info", || {
            warn!(target: "skein-router", "line\nbreak \x1b[31m");
        });
        assert_eq!(
            out,
            "2026-11-29T00:00:00.123Z  WARN skein-router: line\\nbreak \\u001b[31m\n"
        );
    }

    #[test]
    fn human_colours_only_the_level_when_ansi_is_on() {
        let out = capture(Style::Human, true, "info", || {
            error!(target: "skein-router", "boom");
        });
        assert_eq!(
            out,
            "2026-11-29T00:00:00.123Z \x1b[31mERROR\x1b[0m skein-router: boom\n"
        );
    }
}
