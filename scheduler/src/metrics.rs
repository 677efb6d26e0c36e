//! The metrics endpoint (`[metrics] listen`): `GET /metrics` answered in
//! the OpenMetrics text format that Prometheus scrapes, from
//! `prometheus-client`'s registry.
//!
//! **What is counted.** The engine counts as things happen — messages
//! queued (by origin), recipient outcomes (by channel and status),
//! delivery latency and message size, outbound TLS sessions as the agents
//! report them (`Outcome::tls`) — and sets the gauges (queue by
//! state, recipients, threads, agents, outbound connections) when a
//! scrape asks ([`Metrics::render`]). The SMTP server's counters
//! (connections, messages accepted, STARTTLS sessions by outcome) come
//! from `run/smtpd.stats` (`skein_proto::SmtpdStats`), read at the scrape
//! while `skein-smtpd` holds its pid file; they are added to counters of
//! their own, so that an smtpd restart does not make them go backwards.
//!
//! **HTTP.** [`serve`] answers HTTP/1.0 and 1.1 `GET` and `HEAD` of
//! `/metrics` (any query ignored); anything else gets 404, 405 or 400.
//! Each request is one connection (`Connection: close`). The request head
//! is read up to 8 KiB and for at most 10 s; at most 8 scrapes are served
//! at once, more are answered 503. The endpoint is meant for a loopback
//! or management address: it has no authentication (as Postfix's and
//! Prometheus's own exporters), and shows no addresses, only counts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use skein_proto::SmtpdStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::event::Event;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const IO_LIMIT: Duration = Duration::from_secs(10);
/// Scrapes served at once.
const MAX_CONCURRENT: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Origin {
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    channel: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Channel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsOutcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MilterVerdictLabel {
    verdict: String,
}

fn delay_histogram() -> Histogram {
    // 10 ms to about 11.6 h, ×4 each.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

/// What a scrape shows of the queue, computed by the engine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueGauges {
    /// Messages by state: `active` (a recipient in an agent's hands),
    /// `deferred` (tried, waiting for its retry), `held`, `waiting`
    /// (never tried yet).
    pub messages: [(&'static str, u64); 4],
    /// Recipients without a final outcome.
    pub recipients: u64,
    /// Threads.
    pub threads: u64,
    /// Agents running, by channel.
    pub agents: Vec<(String, u64)>,
    /// Agents of remote channels working a thread, or idle and still
    /// connected to a server.
    pub connections: u64,
}

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    received: Family<Origin, Counter>,
    outcomes: Family<Outcome, Counter>,
    delay: Family<Channel, Histogram, fn() -> Histogram>,
    size: Histogram,
    queue_messages: Family<State, Gauge>,
    queue_recipients: Gauge,
    threads: Gauge,
    agents: Family<Channel, Gauge>,
    connections: Gauge,
    smtpd_up: Gauge,
    smtpd_open: Gauge,
    smtpd_connections: Counter,
    smtpd_refused: Counter,
    smtpd_messages: Counter,
    smtpd_bytes: Counter,
    smtpd_tls: Family<TlsOutcome, Counter>,
    smtpd_milter_verdicts: Family<MilterVerdictLabel, Counter>,
    smtpd_milter_failures: Counter,
    outbound_tls: Family<TlsOutcome, Counter>,
    /// The smtpd's counters at the last scrape, to add only what grew.
    smtpd_last: SmtpdStats,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("skein");
        let received = Family::<Origin, Counter>::default();
        registry.register(
            "messages_received",
            "Messages queued, by origin (smtp, sendmail, dsn, other)",
            received.clone(),
        );
        let outcomes = Family::<Outcome, Counter>::default();
        registry.register(
            "deliveries",
            "Recipient delivery attempts by channel and status (delivered, deferred, bounced)",
            outcomes.clone(),
        );
        let delay: Family<Channel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(delay_histogram);
        registry.register(
            "delivery_delay_seconds",
            "Time from arrival to delivery, per delivered recipient, by channel",
            delay.clone(),
        );
        let size = Histogram::new(exponential_buckets(1024.0, 4.0, 10));
        registry.register(
            "message_size_bytes",
            "Size of the messages queued",
            size.clone(),
        );
        let queue_messages = Family::<State, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages in the queue by state (active, deferred, held, waiting)",
            queue_messages.clone(),
        );
        let queue_recipients = Gauge::default();
        registry.register(
            "queue_recipients",
            "Recipients without a final outcome",
            queue_recipients.clone(),
        );
        let threads = Gauge::default();
        registry.register(
            "threads",
            "Delivery threads (channel, host)",
            threads.clone(),
        );
        let agents = Family::<Channel, Gauge>::default();
        registry.register(
            "agents",
            "Transport agents running, by channel",
            agents.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "outbound_connections",
            "Agents of remote channels working a thread, or idle and still connected",
            connections.clone(),
        );
        let smtpd_up = Gauge::default();
        registry.register(
            "smtpd_up",
            "1 when skein-smtpd runs and publishes its counters",
            smtpd_up.clone(),
        );
        let smtpd_open = Gauge::default();
        registry.register(
            "smtpd_connections_open",
            "SMTP sessions open now",
            smtpd_open.clone(),
        );
        let smtpd_connections = Counter::default();
        registry.register(
            "smtpd_connections",
            "SMTP connections admitted",
            smtpd_connections.clone(),
        );
        let smtpd_refused = Counter::default();
        registry.register(
            "smtpd_connections_refused",
            "SMTP connections refused at the door (limits, rate, stress)",
            smtpd_refused.clone(),
        );
        let smtpd_messages = Counter::default();
        registry.register(
            "smtpd_messages",
            "Messages accepted by SMTP",
            smtpd_messages.clone(),
        );
        let smtpd_bytes = Counter::default();
        registry.register(
            "smtpd_message_bytes",
            "Bytes of the messages accepted by SMTP",
            smtpd_bytes.clone(),
        );
        let smtpd_tls = Family::<TlsOutcome, Counter>::default();
        registry.register(
            "smtpd_tls_sessions",
            "Inbound STARTTLS handshakes by outcome (ok, failed)",
            smtpd_tls.clone(),
        );
        let smtpd_milter_verdicts = Family::<MilterVerdictLabel, Counter>::default();
        registry.register(
            "smtpd_milter_verdicts",
            "Content filters' verdicts in the smtpd (refused, rcpt_refused, discarded, quarantined)",
            smtpd_milter_verdicts.clone(),
        );
        let smtpd_milter_failures = Counter::default();
        registry.register(
            "smtpd_milter_failures",
            "Content filters that failed in the smtpd (their default action applied)",
            smtpd_milter_failures.clone(),
        );
        let outbound_tls = Family::<TlsOutcome, Counter>::default();
        registry.register(
            "outbound_tls_sessions",
            "Outbound STARTTLS sessions by outcome (ok, failed), as the agents report them",
            outbound_tls.clone(),
        );
        Metrics {
            outbound_tls,
            registry,
            received,
            outcomes,
            delay,
            size,
            queue_messages,
            queue_recipients,
            threads,
            agents,
            connections,
            smtpd_up,
            smtpd_open,
            smtpd_connections,
            smtpd_refused,
            smtpd_messages,
            smtpd_bytes,
            smtpd_tls,
            smtpd_milter_verdicts,
            smtpd_milter_failures,
            smtpd_last: SmtpdStats::default(),
        }
    }

    /// A message entered the queue: its origin (the first word of the
    /// envelope's `origin`) and size.
    pub fn received(&self, origin: &str, size: u64) {
        let kind = match origin.split_whitespace().next().unwrap_or("") {
            word @ ("smtp" | "sendmail" | "dsn") => word,
            _ => "other",
        };
        self.received
            .get_or_create(&Origin {
                origin: kind.to_owned(),
            })
            .inc();
        self.size.observe(size as f64);
    }

    /// A recipient's attempt ended: `status` is `delivered`, `deferred` or
    /// `bounced`; `delay` (seconds since arrival) is observed for
    /// deliveries.
    pub fn outcome(&self, channel: &str, status: &'static str, delay: f64) {
        self.outcomes
            .get_or_create(&Outcome {
                channel: channel.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        if status == "delivered" {
            self.delay
                .get_or_create(&Channel {
                    channel: channel.to_owned(),
                })
                .observe(delay);
        }
    }

    /// An agent's outbound TLS session: established or failed.
    pub fn outbound_tls(&self, established: bool) {
        self.outbound_tls
            .get_or_create(&TlsOutcome {
                outcome: if established { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// The text of a scrape: `queue` as the engine sees it now, `smtpd`
    /// the SMTP server's counters if it runs.
    pub fn render(&mut self, queue: &QueueGauges, smtpd: Option<SmtpdStats>) -> String {
        for (state, n) in queue.messages {
            self.queue_messages
                .get_or_create(&State {
                    state: state.to_owned(),
                })
                .set(n as i64);
        }
        self.queue_recipients.set(queue.recipients as i64);
        self.threads.set(queue.threads as i64);
        self.agents.clear();
        for (channel, n) in &queue.agents {
            self.agents
                .get_or_create(&Channel {
                    channel: channel.clone(),
                })
                .set(*n as i64);
        }
        self.connections.set(queue.connections as i64);
        self.smtpd_up.set(i64::from(smtpd.is_some()));
        let now = smtpd.unwrap_or_default();
        self.smtpd_open.set(now.connections_open as i64);
        if let Some(now) = smtpd {
            let last = self.smtpd_last;
            // A counter that went down means the smtpd restarted: all of
            // it is new.
            let grown = |now: u64, then: u64| if now >= then { now - then } else { now };
            self.smtpd_connections
                .inc_by(grown(now.connections_total, last.connections_total));
            self.smtpd_refused.inc_by(grown(
                now.connections_refused_total,
                last.connections_refused_total,
            ));
            self.smtpd_messages
                .inc_by(grown(now.messages_total, last.messages_total));
            self.smtpd_bytes
                .inc_by(grown(now.message_bytes_total, last.message_bytes_total));
            for (outcome, now, then) in [
                ("ok", now.tls_ok_total, last.tls_ok_total),
                ("failed", now.tls_failed_total, last.tls_failed_total),
            ] {
                self.smtpd_tls
                    .get_or_create(&TlsOutcome {
                        outcome: outcome.to_owned(),
                    })
                    .inc_by(grown(now, then));
            }
            for (verdict, now, then) in [
                (
                    "refused",
                    now.milter_refused_total,
                    last.milter_refused_total,
                ),
                (
                    "rcpt_refused",
                    now.milter_rcpt_refused_total,
                    last.milter_rcpt_refused_total,
                ),
                (
                    "discarded",
                    now.milter_discarded_total,
                    last.milter_discarded_total,
                ),
                (
                    "quarantined",
                    now.milter_quarantined_total,
                    last.milter_quarantined_total,
                ),
            ] {
                self.smtpd_milter_verdicts
                    .get_or_create(&MilterVerdictLabel {
                        verdict: verdict.to_owned(),
                    })
                    .inc_by(grown(now, then));
            }
            self.smtpd_milter_failures
                .inc_by(grown(now.milter_failures_total, last.milter_failures_total));
            self.smtpd_last = now;
        } else {
            // Not running: when it comes back, its counters start at 0.
            self.smtpd_last = SmtpdStats::default();
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            // Writing into a String cannot fail; keep the answer valid.
            text.clear();
            let _ = writeln!(text, "# EOF");
        }
        text
    }
}

/// The SMTP server's counters from `path`, if `skein-smtpd` runs (holds
/// `pid_file`) and the file reads.
pub fn read_smtpd(path: &std::path::Path, pid_file: &std::path::Path) -> Option<SmtpdStats> {
    skein_daemon::PidFile::read_running(pid_file)?;
    SmtpdStats::parse(&std::fs::read_to_string(path).ok()?)
}

/// Where the smtpd's counters are.
#[derive(Debug, Clone)]
pub struct SmtpdFiles {
    /// `run/smtpd.stats`.
    pub stats: PathBuf,
    /// `run/smtpd.pid`.
    pub pid: PathBuf,
}

/// Answers scrapes on `listener` until the engine is gone, asking it for
/// the text through `events`.
pub async fn serve(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        let events = events.clone();
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tokio::time::timeout(IO_LIMIT, answer(stream, events)).await;
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        IO_LIMIT,
                        respond(
                            stream,
                            "503 Service Unavailable",
                            "text/plain",
                            b"busy\n",
                            false,
                        ),
                    )
                    .await;
                });
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (`head`: HEAD, no body).
    Metrics {
        /// HEAD rather than GET.
        head: bool,
    },
    /// Another path.
    NotFound,
    /// Another method.
    NotAllowed,
    /// Not an HTTP request line.
    Bad,
}

/// Reads the request line of `head` (the bytes up to the blank line).
pub fn parse_request(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::NotAllowed,
    };
    if path == "/metrics" {
        Request::Metrics { head }
    } else {
        Request::NotFound
    }
}

async fn answer(mut stream: TcpStream, events: mpsc::UnboundedSender<Event>) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if head.len() >= MAX_HEAD {
            let _ = respond(
                stream,
                "400 Bad Request",
                "text/plain",
                b"request too long\n",
                false,
            )
            .await;
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    match parse_request(&head) {
        Request::Metrics { head } => {
            let (reply, text) = oneshot::channel();
            if events.send(Event::Metrics { reply }).is_err() {
                return;
            }
            let Ok(text) = text.await else {
                return;
            };
            let _ = respond(stream, "200 OK", CONTENT_TYPE, text.as_bytes(), head).await;
        }
        Request::NotFound => {
            let _ = respond(
                stream,
                "404 Not Found",
                "text/plain",
                b"see /metrics\n",
                false,
            )
            .await;
        }
        Request::NotAllowed => {
            let _ = respond(
                stream,
                "405 Method Not Allowed\r\nAllow: GET, HEAD",
                "text/plain",
                b"GET /metrics\n",
                false,
            )
            .await;
        }
        Request::Bad => {
            let _ = respond(
                stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                false,
            )
            .await;
        }
    }
}

async fn respond(
    mut stream: TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let table: &[(&str, Request)] = &[
            (
                "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Request::Metrics { head: false },
            ),
            (
                "GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                Request::Metrics { head: false },
            ),
            (
                "HEAD /metrics HTTP/1.1\r\n\r\n",
                Request::Metrics { head: true },
            ),
            ("GET / HTTP/1.1\r\n\r\n", Request::NotFound),
            ("GET /metricsx HTTP/1.1\r\n\r\n", Request::NotFound),
            ("POST /metrics HTTP/1.1\r\n\r\n", Request::NotAllowed),
            ("GET /metrics\r\n\r\n", Request::Bad),
            ("GET /metrics HTTP/2\r\n\r\n", Request::Bad),
            ("GET metrics HTTP/1.1\r\n\r\n", Request::Bad),
            ("GET  /metrics HTTP/1.1\r\n\r\n", Request::Bad),
            ("\r\n\r\n", Request::Bad),
        ];
        for (head, want) in table {
            assert_eq!(parse_request(head.as_bytes()), *want, "{head:?}");
        }
        assert_eq!(parse_request(b"GET /\xff HTTP/1.1\r\n\r\n"), Request::Bad);
    }

    #[test]
    fn counts_and_gauges_reach_the_text_and_smtpd_counters_never_go_back() {
        let mut m = Metrics::new();
        m.received("smtp [192.0.2.1] helo=x", 3000);
        m.received("sendmail uid=0 user=root", 100);
        m.received("dsn failure for 1ABC", 100);
        m.received("requeued", 100);
        m.outcome("smtp", "delivered", 0.5);
        m.outcome("smtp", "deferred", 0.0);
        m.outcome("local", "bounced", 0.0);
        m.outbound_tls(true);
        m.outbound_tls(true);
        m.outbound_tls(false);
        let queue = QueueGauges {
            messages: [("active", 1), ("deferred", 2), ("held", 0), ("waiting", 3)],
            recipients: 9,
            threads: 4,
            agents: vec![("smtp".into(), 2)],
            connections: 1,
        };
        let smtpd = SmtpdStats {
            connections_open: 2,
            connections_total: 10,
            tls_ok_total: 3,
            milter_rcpt_refused_total: 4,
            milter_failures_total: 2,
            ..SmtpdStats::default()
        };
        let text = m.render(&queue, Some(smtpd));
        for line in [
            "skein_messages_received_total{origin=\"smtp\"} 1",
            "skein_messages_received_total{origin=\"sendmail\"} 1",
            "skein_deliveries_total{channel=\"smtp\",status=\"delivered\"} 1",
            "skein_deliveries_total{channel=\"local\",status=\"bounced\"} 1",
            "skein_delivery_delay_seconds_count{channel=\"smtp\"} 1",
            "skein_messages_received_total{origin=\"dsn\"} 1",
            "skein_messages_received_total{origin=\"other\"} 1",
            "skein_message_size_bytes_count 4",
            "skein_queue_messages{state=\"waiting\"} 3",
            "skein_queue_recipients 9",
            "skein_agents{channel=\"smtp\"} 2",
            "skein_smtpd_up 1",
            "skein_outbound_tls_sessions_total{outcome=\"ok\"} 2",
            "skein_outbound_tls_sessions_total{outcome=\"failed\"} 1",
            "skein_smtpd_connections_open 2",
            "skein_smtpd_connections_total 10",
            "skein_smtpd_tls_sessions_total{outcome=\"ok\"} 3",
            "skein_smtpd_milter_verdicts_total{verdict=\"rcpt_refused\"} 4",
            "skein_smtpd_milter_verdicts_total{verdict=\"refused\"} 0",
            "skein_smtpd_milter_failures_total 2",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The smtpd restarted: its counters start again at 4; ours go on.
        let restarted = SmtpdStats {
            connections_total: 4,
            ..SmtpdStats::default()
        };
        let text = m.render(&queue, Some(restarted));
        assert!(text.contains("skein_smtpd_connections_total 14"), "{text}");
        let text = m.render(&queue, None);
        assert!(text.contains("skein_smtpd_up 0"), "{text}");
        assert!(text.contains("skein_smtpd_connections_total 14"), "{text}");
    }
}
