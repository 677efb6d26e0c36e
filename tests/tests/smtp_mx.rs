//! MX routing of `skein-smtp`, through real DNS over loopback: a small
//! DNS responder answers MX/A/AAAA from a table (`smtp.nameservers`), and
//! every MX host listens on the scripted server's port (`smtp.port`) on
//! its own loopback address. Preference order with fallback on a refused
//! connection or a 4xx greeting, implicit MX, null MX (5.1.10), a domain
//! that does not exist (5.1.2), and never relaying to ourselves (5.4.6).

use std::net::{Ipv4Addr, SocketAddr};

use skein_integration_tests::smtp_server::{
    DnsRecord, DnsResponder, Response, ScriptedServer, ServerOptions, SmtpTest, Step,
};
use skein_proto::{Outcome, Status};

fn a(ip: [u8; 4]) -> DnsRecord {
    DnsRecord::A(Ipv4Addr::from(ip))
}

fn mx(pref: u16, host: &str) -> DnsRecord {
    DnsRecord::Mx(pref, host.to_owned())
}

/// A test whose agent resolves through `dns` and connects to MX hosts on
/// the port of its scripted server (on 127.0.0.1).
fn mx_test(options: ServerOptions, dns: &DnsResponder) -> SmtpTest {
    // The port is only known once the server is up: start it first, then
    // rewrite the configuration around it.
    let test = SmtpTest::new(options, "", "");
    let keys = format!(
        "port = {}\nnameservers = [\"{}\"]\nconnect_timeout = \"10s\"",
        test.server.addr().port(),
        dns.addr()
    );
    let text = std::fs::read_to_string(&test.config)
        .expect("config")
        .replace("[smtp]\n", &format!("[smtp]\n{keys}\n"));
    std::fs::write(&test.config, text).expect("config");
    test
}

/// Delivers one message to `rcpt` by MX (no next hop) and returns its
/// outcome.
async fn deliver_by_mx(test: &SmtpTest, rcpt: &str) -> Outcome {
    test.deliver_by_mx(rcpt, b"Subject: mx\r\n\r\nby MX\r\n")
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_mx_is_tried_when_the_best_one_refuses_the_connection() {
    let dns = DnsResponder::start(vec![
        ("mx.test", mx(20, "up.mx.test")),
        ("mx.test", mx(10, "down.mx.test")),
        ("down.mx.test", a([127, 0, 0, 2])),
        ("up.mx.test", a([127, 0, 0, 1])),
    ]);
    let test = mx_test(ServerOptions::default(), &dns);
    let outcome = deliver_by_mx(&test, "rcpt@mx.test").await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert!(
        outcome
            .remote_mta
            .as_deref()
            .is_some_and(|m| m.starts_with("up.mx.test[127.0.0.1]")),
        "{outcome:?}"
    );
    let log = test.agent_log();
    assert!(log.contains("down.mx.test[127.0.0.2]"), "{log}");
    let asked: Vec<(String, u16)> = dns.queries();
    assert!(asked.contains(&("mx.test".into(), 15)), "{asked:?}");
    assert_eq!(test.server.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_4xx_greeting_moves_on_to_the_next_mx() {
    let dns = DnsResponder::start(vec![
        ("greylist.test", mx(10, "busy.greylist.test")),
        ("greylist.test", mx(20, "ok.greylist.test")),
        ("busy.greylist.test", a([127, 0, 0, 3])),
        ("ok.greylist.test", a([127, 0, 0, 1])),
    ]);
    let test = mx_test(ServerOptions::default(), &dns);
    let busy = ScriptedServer::start_on(
        SocketAddr::from(([127, 0, 0, 3], test.server.addr().port())),
        ServerOptions::default().with_script(|_, step| match step {
            Step::Greeting => Response::ReplyAndClose("421 4.3.2 too busy".into()),
            _ => Response::Default,
        }),
    );
    let outcome = deliver_by_mx(&test, "rcpt@greylist.test").await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert_eq!(busy.connections().len(), 1, "the best MX was tried first");
    assert_eq!(test.server.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_without_mx_is_its_own_mail_host() {
    let dns = DnsResponder::start(vec![("implicit.test", a([127, 0, 0, 1]))]);
    let test = mx_test(ServerOptions::default(), &dns);
    let outcome = deliver_by_mx(&test, "rcpt@implicit.test").await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert_eq!(test.server.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_null_mx_fails_at_once() {
    let dns = DnsResponder::start(vec![
        ("nullmx.test", mx(0, ".")),
        ("nullmx.test", a([127, 0, 0, 1])),
    ]);
    let test = mx_test(ServerOptions::default(), &dns);
    let outcome = deliver_by_mx(&test, "rcpt@nullmx.test").await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.enhanced.to_string(), "5.1.10");
    assert!(outcome.diagnostic.contains("null MX"), "{outcome:?}");
    assert!(
        test.server.connections().is_empty(),
        "no connection to a null-MX domain"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_that_does_not_exist_fails() {
    let dns = DnsResponder::start(vec![("other.test", a([127, 0, 0, 1]))]);
    let test = mx_test(ServerOptions::default(), &dns);
    let outcome = deliver_by_mx(&test, "rcpt@nowhere.test").await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.enhanced.to_string(), "5.1.2");
    assert!(test.server.connections().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn we_are_never_our_own_relay() {
    // Our host name (client.test) is the best MX: nothing to relay to.
    let dns = DnsResponder::start(vec![
        ("self.test", mx(10, "client.test")),
        ("self.test", mx(20, "backup.self.test")),
        ("client.test", a([127, 0, 0, 1])),
        ("backup.self.test", a([127, 0, 0, 1])),
        ("better.test", mx(5, "up.better.test")),
        ("better.test", mx(10, "client.test")),
        ("up.better.test", a([127, 0, 0, 1])),
    ]);
    let test = mx_test(ServerOptions::default(), &dns);
    let outcome = deliver_by_mx(&test, "rcpt@self.test").await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.enhanced.to_string(), "5.4.6");
    assert!(test.server.connections().is_empty());
    // A host preferred to us is fine.
    let outcome = deliver_by_mx(&test, "rcpt@better.test").await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert!(
        outcome
            .remote_mta
            .as_deref()
            .is_some_and(|m| m.starts_with("up.better.test")),
        "{outcome:?}"
    );
}
