//! MTA-STS (issue 14, part 3) with `smtp.mta_sts = true`: a loopback DNS
//! responder publishes `_mta-sts.sts.test` and the MX, a loopback HTTPS
//! server with a certificate from a test CA (rcgen, given to skein as
//! `smtp.ca_file`) serves the policy, and a scripted SMTP server stands
//! behind the MX.
//!
//! - enforce, the MX's certificate valid for its name: delivered, logged
//!   `msg=mta-sts … result=success`;
//! - enforce, an untrusted (self-signed) certificate: deferred 4.7.5,
//!   nothing sent, logged `result_type=certificate-not-trusted`;
//! - enforce, an MX the policy does not list: deferred 4.7.5 without
//!   connecting, logged `result_type=validation-failure`;
//! - testing, the untrusted certificate: delivered, the failure logged;
//! - the policy is cached in the spool: a new agent (a restart) uses it
//!   while the policy host answers 404, and the TXT id unchanged means no
//!   new fetch; a new id means a new fetch, and the new policy applies.

use std::net::Ipv4Addr;

use skein_integration_tests::smtp_server::{
    DnsRecord, DnsResponder, PolicyServer, ServerOptions, SmtpTest, TestCa, tls_config,
};
use skein_proto::{Outcome, Status};

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
}

struct Setup {
    test: SmtpTest,
    dns: DnsResponder,
    https: PolicyServer,
}

/// An SMTP server with `tls`, the DNS, and the policy `body`.
fn setup(ca: &TestCa, tls: std::sync::Arc<rustls::ServerConfig>, body: &str) -> Setup {
    let test = SmtpTest::new(
        ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        },
        "mta_sts = true\nmta_sts_port = @HTTPS@\nca_file = \"@CA@\"\nnameservers = [\"@DNS@\"]\nport = @PORT@",
        "",
    );
    let https = PolicyServer::start(ca.server_config(&["mta-sts.sts.test"]), 200, body);
    let dns = DnsResponder::start(vec![
        ("sts.test", DnsRecord::Mx(10, "mx.sts.test".into())),
        ("mx.sts.test", DnsRecord::A(Ipv4Addr::LOCALHOST)),
        ("mta-sts.sts.test", DnsRecord::A(Ipv4Addr::LOCALHOST)),
        (
            "_mta-sts.sts.test",
            DnsRecord::Txt("v=STSv1; id=20261204a;".into()),
        ),
    ]);
    let ca_file = test.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("ca");
    let text = std::fs::read_to_string(&test.config)
        .expect("config")
        .replace("@HTTPS@", &https.port().to_string())
        .replace("@CA@", &ca_file.display().to_string())
        .replace("@DNS@", &dns.addr().to_string())
        .replace("@PORT@", &test.server.addr().port().to_string());
    std::fs::write(&test.config, text).expect("config");
    Setup { test, dns, https }
}

async fn deliver(test: &SmtpTest) -> Outcome {
    test.deliver_by_mx("r@sts.test", b"Subject: sts\r\n\r\nbody\r\n")
        .await
}

fn sts_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("msg=mta-sts")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_with_a_valid_certificate_delivers_and_the_cache_survives_a_restart() {
    let ca = TestCa::new();
    let s = setup(
        &ca,
        ca.server_config(&["mx.sts.test"]),
        &policy("enforce", "*.sts.test"),
    );
    let outcome = deliver(&s.test).await;
    assert_eq!(
        outcome.status,
        Status::Delivered,
        "{outcome:?}\n{}",
        s.test.agent_log()
    );
    assert!(
        outcome.diagnostic.contains("mta-sts-enforce"),
        "{outcome:?}"
    );
    let log = s.test.agent_log();
    assert!(
        sts_lines(&log)
            .iter()
            .any(|l| l.contains("result=success") && l.contains("policy_id=20261204a")),
        "{log}"
    );
    assert!(log.contains("mta-sts: policy fetched"), "{log}");
    assert_eq!(s.https.requests().len(), 1, "one fetch");
    assert_eq!(
        s.https.requests()[0],
        "GET /.well-known/mta-sts.txt HTTP/1.1"
    );
    assert!(s.test.dir.path().join("spool/sts/sts.test").is_file());
    // A restart (a new agent) with the policy host answering 404: the
    // cached policy, same id, is used without a fetch, and still enforced.
    s.https.answer(404, "gone");
    let outcome = deliver(&s.test).await;
    assert_eq!(outcome.status, Status::Delivered, "{outcome:?}");
    assert!(
        outcome.diagnostic.contains("mta-sts-enforce"),
        "{outcome:?}"
    );
    assert_eq!(
        s.https.requests().len(),
        1,
        "no new fetch while the id is unchanged"
    );
    assert_eq!(s.test.server.messages().len(), 2);
    // A new TXT id: the policy is fetched again, and the new one (which
    // no longer lists the MX) is in force.
    s.https.answer(200, &policy("enforce", "other.sts.test"));
    let dns = DnsResponder::start(vec![
        ("sts.test", DnsRecord::Mx(10, "mx.sts.test".into())),
        ("mx.sts.test", DnsRecord::A(Ipv4Addr::LOCALHOST)),
        ("mta-sts.sts.test", DnsRecord::A(Ipv4Addr::LOCALHOST)),
        (
            "_mta-sts.sts.test",
            DnsRecord::Txt("v=STSv1; id=20261204b;".into()),
        ),
    ]);
    let text = std::fs::read_to_string(&s.test.config)
        .expect("config")
        .replace(&s.dns.addr().to_string(), &dns.addr().to_string());
    std::fs::write(&s.test.config, text).expect("config");
    let outcome = deliver(&s.test).await;
    assert_eq!(s.https.requests().len(), 2, "fetched again for the new id");
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert!(
        outcome.diagnostic.contains("does not list the MX"),
        "{outcome:?}"
    );
    assert_eq!(s.test.server.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn enforce_refuses_an_untrusted_certificate_and_an_mx_outside_the_policy() {
    let ca = TestCa::new();
    // A self-signed certificate the CA did not sign.
    let s = setup(
        &ca,
        tls_config(&["mx.sts.test"]),
        &policy("enforce", "mx.sts.test"),
    );
    let outcome = deliver(&s.test).await;
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.enhanced.to_string(), "4.7.5", "{outcome:?}");
    assert!(outcome.diagnostic.contains("MTA-STS"), "{outcome:?}");
    assert!(s.test.server.messages().is_empty());
    let log = s.test.agent_log();
    assert!(
        sts_lines(&log).iter().any(|l| l.contains("result=failure")
            && l.contains("result_type=certificate-not-trusted")
            && l.contains("mode=enforce")),
        "{log}"
    );
    assert_eq!(s.test.server.connections().len(), 1, "no clear-text retry");

    let s = setup(
        &ca,
        ca.server_config(&["mx.sts.test"]),
        &policy("enforce", "other.sts.test"),
    );
    let outcome = deliver(&s.test).await;
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.enhanced.to_string(), "4.7.5", "{outcome:?}");
    assert!(
        outcome
            .diagnostic
            .contains("does not list the MX mx.sts.test"),
        "{outcome:?}"
    );
    assert!(
        s.test.server.connections().is_empty(),
        "the MX is not contacted"
    );
    let log = s.test.agent_log();
    assert!(
        sts_lines(&log)
            .iter()
            .any(|l| l.contains("result_type=validation-failure")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn testing_delivers_and_logs_what_would_have_failed() {
    let ca = TestCa::new();
    let s = setup(
        &ca,
        tls_config(&["mx.sts.test"]),
        &policy("testing", "mx.sts.test"),
    );
    let outcome = deliver(&s.test).await;
    assert_eq!(
        outcome.status,
        Status::Delivered,
        "{outcome:?}\n{}",
        s.test.agent_log()
    );
    let log = s.test.agent_log();
    assert!(
        sts_lines(&log).iter().any(|l| l.contains("mode=testing")
            && l.contains("result=failure")
            && l.contains("result_type=certificate-not-trusted")),
        "{log}"
    );
    assert_eq!(s.test.server.messages().len(), 1);
}
