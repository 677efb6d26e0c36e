//! The metrics endpoint (issue 12, part 6): `[metrics] listen` makes the
//! scheduler answer `GET /metrics`; the text is parsed by the Prometheus
//! project's own Python client (Debian's python3-prometheus-client, its
//! OpenMetrics parser), not by anything of ours, and its values must be
//! what happened: a message in by SMTP delivered, one in by sendmail with
//! a recipient refused, the SMTP server's own counters, the queue's
//! gauges. Off by default: without the key nothing listens.

mod smtpd_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;

use skein_integration_tests::smtp_server::{Response, ScriptedServer, ServerOptions, Step};
use skein_integration_tests::{TestEnv, listening, poll};
use smtpd_support::{Client, GUARD, free_port};

/// The parser: OpenMetrics text on stdin, one `name{labels} value` line
/// per sample on stdout (labels sorted), or an exception if the text is
/// not valid OpenMetrics.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

/// An HTTP request to the endpoint: status line and body.
fn http(port: u16, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or("").to_owned();
    // (HEAD: the length GET would have, and no body.)
    if let Some(length) = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .filter(|_| !request.starts_with("HEAD "))
    {
        assert_eq!(length.parse::<usize>().ok(), Some(body.len()), "{head}");
    }
    (status, body.to_owned())
}

/// Scrapes and parses: sample (`name{labels}`) → value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let mut python = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "/usr/bin/python3 (apt install python3-prometheus-client: bench/ci-deps-metrics.sh)",
        );
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = python.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "the parser refused the text:\n{}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} not in the scrape: {samples:#?}"))
}

#[test]
fn the_endpoint_counts_what_happened_and_parses_as_openmetrics() {
    let server = ScriptedServer::start(ServerOptions {
        // STARTTLS outbound too (opportunistic: the agent takes any
        // certificate), for the outbound TLS counter.
        tls: Some(skein_integration_tests::smtp_server::tls_config(&[
            "localhost",
        ])),
        script: Arc::new(|_, step: &Step<'_>| match step {
            Step::Rcpt(address) if address.starts_with("nobody") => {
                Response::Reply("550 5.1.1 no such user".into())
            }
            _ => Response::Default,
        }),
        ..ServerOptions::default()
    });
    let smtp_port = free_port();
    let metrics_port = free_port();
    let certs = skein_integration_tests::tempdir();
    let (tls, der) = smtpd_support::certificate(certs.path());
    let env = TestEnv::new(&format!(
        "{tls}\n[smtpd]\nlisten = [\"127.0.0.1:{smtp_port}\"]\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[route]]\ndomain = \"remote.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n",
        server.nexthop()
    ));
    let smtpd = env.start("skein-smtpd");
    let _router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(GUARD, || listening(smtp_port) && listening(metrics_port)),
        "smtpd:\n{}\nscheduler:\n{}",
        smtpd.log_text(),
        scheduler.log_text()
    );

    // Before any mail: the gauges are there, at zero; the smtpd runs.
    let before = scrape(metrics_port);
    assert_eq!(value(&before, "skein_queue_recipients{}"), 0.0);
    assert!(
        poll(|| value(&scrape(metrics_port), "skein_smtpd_up{}") == 1.0),
        "the smtpd's counters never came"
    );

    // One message by SMTP, delivered; one by sendmail, one recipient
    // delivered and one refused.
    // (Over TLS, which the smtpd counts too.)
    let mut client = Client::connect(smtp_port);
    client.expect(220, "");
    client.send(b"EHLO c.example\r\nSTARTTLS\r\n");
    client.expect(250, "");
    client.expect(220, "2.0.0");
    client.start_tls(der);
    client.send(b"EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<ann@remote.test>\r\nDATA\r\n");
    client.expect(250, "");
    client.expect(250, "2.1.0");
    client.expect(250, "2.1.5");
    client.expect(354, "");
    client.send(b"Subject: by smtp\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    client.expect(250, "2.0.0");
    client.expect(221, "");
    env.submit(
        &["-f", "<>", "bob@remote.test", "nobody@remote.test"],
        b"Subject: by sendmail\n\nbody\n",
    );
    let settled = |s: &BTreeMap<String, f64>| {
        s.get("skein_deliveries_total{channel=\"smtp\",status=\"delivered\"}") == Some(&2.0)
            && s.get("skein_deliveries_total{channel=\"smtp\",status=\"bounced\"}") == Some(&1.0)
    };
    assert!(
        env.wait_for(GUARD, || settled(&scrape(metrics_port))),
        "{:#?}\n{}",
        scrape(metrics_port),
        scheduler.log_text()
    );
    assert_eq!(server.messages().len(), 2);
    // The smtpd publishes its counters once a second.
    assert!(
        poll(|| scrape(metrics_port).get("skein_smtpd_messages_total{}") == Some(&1.0)),
        "{:#?}",
        scrape(metrics_port)
    );
    let s = scrape(metrics_port);
    assert_eq!(
        value(&s, "skein_messages_received_total{origin=\"smtp\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "skein_messages_received_total{origin=\"sendmail\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "skein_delivery_delay_seconds_count{channel=\"smtp\"}"),
        2.0
    );
    assert!(value(&s, "skein_delivery_delay_seconds_sum{channel=\"smtp\"}") > 0.0);
    // Two messages queued at least (a double bounce for the <> sender's
    // refused recipient may be a third).
    assert!(value(&s, "skein_message_size_bytes_count{}") >= 2.0);
    assert!(value(&s, "skein_message_size_bytes_bucket{le=\"+Inf\"}") >= 2.0);
    assert_eq!(value(&s, "skein_smtpd_messages_total{}"), 1.0);
    assert!(value(&s, "skein_smtpd_message_bytes_total{}") > 0.0);
    assert!(value(&s, "skein_smtpd_connections_total{}") >= 1.0);
    assert_eq!(
        value(&s, "skein_smtpd_tls_sessions_total{outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "skein_smtpd_tls_sessions_total{outcome=\"failed\"}"),
        0.0
    );
    // Both messages went to the scripted server over STARTTLS: at least
    // one session (the agent may have kept one connection), none failed.
    assert!(value(&s, "skein_outbound_tls_sessions_total{outcome=\"ok\"}") >= 1.0);
    assert!(server.messages().iter().all(|m| m.tls), "over TLS");
    for state in ["active", "deferred", "held", "waiting"] {
        assert!(
            s.contains_key(&format!("skein_queue_messages{{state=\"{state}\"}}")),
            "{state}: {s:#?}"
        );
    }

    // Anything but GET or HEAD of /metrics is turned away.
    let (status, _) = http(metrics_port, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(metrics_port, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, body) = http(metrics_port, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    let (status, _) = http(metrics_port, "garbage\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
}

#[test]
fn without_the_key_nothing_listens() {
    let env = TestEnv::new("");
    let scheduler = env.start("skein-scheduler");
    assert!(
        scheduler.wait_for_log("msg=ready", 1),
        "{}",
        scheduler.log_text()
    );
    assert!(!scheduler.log_text().contains("metrics at"));
}
