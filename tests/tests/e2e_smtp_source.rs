//! End to end through every process: Postfix's `smtp-source` injects 1000
//! messages over 20 concurrent sessions into `skein-smtpd`; the router and
//! the scheduler hand them to `skein-smtp`, which delivers them to a sink
//! (the scripted SMTP server, with PIPELINING and CHUNKING). Every message
//! arrives, none twice: each carries the queue id skein's Received field
//! gave it, and the sink must see 1000 distinct ones.
//!
//! Needs `/usr/sbin/smtp-source` (Debian package `postfix`, installed by
//! `bench/ci-deps.sh`); the test fails with a clear message without it.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions};

const MESSAGES: usize = 1000;
const SESSIONS: usize = 20;
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The queue id in skein's own Received field.
fn skein_id(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let at = text.find("(skein) with ")?;
    let rest = &text[at..];
    let id = rest.split_whitespace().skip_while(|w| *w != "id").nth(1)?;
    Some(id.trim_end_matches(';').to_string())
}

#[test]
fn smtp_source_to_a_sink_through_skein_loses_and_duplicates_nothing() {
    assert!(
        std::path::Path::new(SMTP_SOURCE).exists(),
        "{SMTP_SOURCE} is missing: install Debian's postfix package (bench/ci-deps.sh)"
    );
    let sink = ScriptedServer::start(ServerOptions {
        pipelining: true,
        chunking: true,
        ..Default::default()
    });
    let port = free_port();
    let env = TestEnv::new(&format!(
        r#"[smtpd]
listen = ["127.0.0.1:{port}"]
max_connections_per_client = 100

[[route]]
domain = "sink.test"
channel = "smtp"
nexthop = "{}"

[scheduler]
retries = ["1s"]
"#,
        sink.nexthop()
    ));
    let smtpd = env.start("skein-smtpd");
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(Duration::from_secs(60), || {
            skein_integration_tests::listening(port)
        }),
        "smtpd not listening:\n{}",
        smtpd.log_text()
    );

    let started = Instant::now();
    let out = Command::new(SMTP_SOURCE)
        .args([
            "-s",
            &SESSIONS.to_string(),
            "-m",
            &MESSAGES.to_string(),
            "-l",
            "4096",
            "-f",
            "sender@source.test",
            "-t",
            "rcpt@sink.test",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("run smtp-source");
    assert!(
        out.status.success(),
        "smtp-source failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        smtpd.log_text()
    );
    let injected = started.elapsed();
    let arrived = sink.wait_for(Duration::from_secs(300), |_, msgs| msgs.len() >= MESSAGES)
        && env.wait_for(Duration::from_secs(60), || env.queue_empty());
    assert!(
        arrived,
        "{} of {MESSAGES} arrived.\nscheduler:\n{}\nrouter:\n{}",
        sink.messages().len(),
        scheduler.log_text(),
        router.log_text()
    );
    let elapsed = started.elapsed();
    let messages = sink.messages();
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| skein_id(&m.data).expect("skein's Received field with its queue id"))
        .collect();
    println!(
        "{MESSAGES} messages from smtp-source ({SESSIONS} sessions) injected in {injected:.2?}, all at the sink after {elapsed:.2?}, over {} connection(s) from skein",
        sink.connections().len()
    );
    assert_eq!(messages.len(), MESSAGES, "none duplicated at the sink");
    assert_eq!(ids.len(), MESSAGES, "1000 distinct messages");
    for m in &messages {
        assert_eq!(m.rcpt_to.len(), 1);
        assert!(m.rcpt_to[0].contains("rcpt@sink.test"), "{:?}", m.rcpt_to);
        assert!(
            m.mail_from.contains("sender@source.test"),
            "{}",
            m.mail_from
        );
    }
    assert!(scheduler.stop().success());
    assert!(smtpd.stop().success());
    assert!(router.stop().success());
}
