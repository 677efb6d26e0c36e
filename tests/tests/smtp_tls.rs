//! STARTTLS policies of `skein-smtp` against the scripted server with an
//! rcgen certificate: opportunistic delivery goes over TLS (and says so in
//! the outcome), `verify` refuses a self-signed certificate with a
//! deferral (4.7.x), `require` refuses a server without STARTTLS (and
//! says QUIT), a server whose handshake always fails gets its mail in clear
//! text under `opportunistic` only (RFC 7435).

use std::time::Duration;

use skein_integration_tests::smtp_server::{
    ServerOptions, SmtpTest, broken_tls_config, shutdown, tls_config,
};
use skein_proto::{Outcome, Status};

const LIMIT: Duration = Duration::from_secs(60);

async fn deliver_one(test: &SmtpTest) -> Outcome {
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", b"Subject: tls\r\n\r\nsecret\r\n");
    let mut outcomes =
        tokio::time::timeout(LIMIT, scheduler.deliver(test.job(1, &file, &["a@x.test"])))
            .await
            .unwrap_or_else(|_| panic!("no outcome:\n{}", test.agent_log()))
            .expect("job done");
    assert!(
        shutdown(&mut child, &mut scheduler, LIMIT).await,
        "agent did not stop cleanly:\n{}",
        test.agent_log()
    );
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn opportunistic_delivery_goes_over_tls() {
    let options = ServerOptions {
        pipelining: true,
        tls: Some(tls_config(&["localhost"])),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "", "");
    let outcome = deliver_one(&test).await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert!(outcome.diagnostic.contains("TLSv1."), "{outcome:?}");
    assert_eq!(
        outcome.tls,
        Some(true),
        "the session is told to the scheduler"
    );
    let messages = test.server.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls, "delivered in clear text");
    assert_eq!(messages[0].data, b"Subject: tls\r\n\r\nsecret\r\n");
    let commands = &test.server.connections()[0].commands;
    assert_eq!(
        commands[..3],
        ["EHLO client.test", "STARTTLS", "EHLO client.test"],
        "EHLO again after STARTTLS"
    );
    assert!(test.agent_log().contains("TLS established"));
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_refuses_a_self_signed_certificate() {
    let options = ServerOptions {
        tls: Some(tls_config(&["localhost", "127.0.0.1"])),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "tls = \"verify\"", "");
    let outcome = deliver_one(&test).await;
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert_eq!((outcome.enhanced.class, outcome.enhanced.subject), (4, 7));
    assert_eq!(
        outcome.tls,
        Some(false),
        "a failed TLS session: {outcome:?}"
    );
    assert!(test.server.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn require_refuses_a_server_without_starttls() {
    let test = SmtpTest::new(ServerOptions::default(), "tls = \"require\"", "");
    let outcome = deliver_one(&test).await;
    assert_eq!(outcome.tls, None, "no TLS was tried: {outcome:?}");
    assert!(
        matches!(outcome.status, Status::Deferred { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.enhanced.to_string(), "4.7.4");
    assert!(test.server.messages().is_empty());
    let connections = test.server.connections();
    assert_eq!(connections.len(), 1, "no clear-text retry under require");
    let commands = &connections[0].commands;
    assert!(
        !commands.iter().any(|c| c.starts_with("MAIL")),
        "{commands:?}"
    );
    assert_eq!(
        commands.last().map(String::as_str),
        Some("QUIT"),
        "the agent says QUIT before it hangs up: {commands:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn opportunistic_delivers_in_clear_text_after_a_failed_handshake() {
    let options = ServerOptions {
        tls: Some(broken_tls_config()),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "tls = \"opportunistic\"", "");
    let outcome = deliver_one(&test).await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert_eq!(
        outcome.tls,
        Some(false),
        "the failed handshake is counted as a failed TLS session: {outcome:?}"
    );
    let connections = test.server.connections();
    assert_eq!(
        connections.len(),
        2,
        "one failed handshake, one clear-text session"
    );
    assert_eq!(connections[0].commands, ["EHLO client.test", "STARTTLS"]);
    assert!(!connections[0].tls);
    assert!(
        !connections[1].commands.iter().any(|c| c == "STARTTLS"),
        "the retry does not try STARTTLS again: {:?}",
        connections[1].commands
    );
    let messages = test.server.messages();
    assert_eq!(messages.len(), 1);
    assert!(!messages[0].tls);
    assert_eq!(messages[0].connection, 1);
    let log = test.agent_log();
    assert!(
        log.contains("TLS handshake failed: reconnecting to deliver in clear text"),
        "{log}"
    );
    assert!(log.contains("clear text after a failed handshake"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn require_and_verify_never_fall_back_to_clear_text() {
    for policy in ["require", "verify"] {
        let options = ServerOptions {
            tls: Some(broken_tls_config()),
            ..ServerOptions::default()
        };
        let test = SmtpTest::new(options, &format!("tls = \"{policy}\""), "");
        let outcome = deliver_one(&test).await;
        assert!(
            matches!(outcome.status, Status::Deferred { .. }),
            "{policy}: {outcome:?}"
        );
        assert_eq!(
            outcome.enhanced.to_string(),
            "4.7.5",
            "{policy}: {outcome:?}"
        );
        assert_eq!(outcome.tls, Some(false), "{policy}");
        assert_eq!(test.server.connections().len(), 1, "{policy}: no retry");
        assert!(test.server.messages().is_empty(), "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_can_require_tls_where_the_default_does_not() {
    let options = ServerOptions::default();
    let test = SmtpTest::new(options, "tls = \"opportunistic\"", "");
    // The route for x.test insists; the global policy does not.
    let route = format!(
        "[[route]]\ndomain = \"x.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\ntls = \"require\"\n",
        test.server.nexthop()
    );
    let text = std::fs::read_to_string(&test.config).expect("config") + &route;
    std::fs::write(&test.config, text).expect("config");
    let outcome = deliver_one(&test).await;
    assert_eq!(outcome.enhanced.to_string(), "4.7.4", "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn none_never_starts_tls() {
    let options = ServerOptions {
        tls: Some(tls_config(&["localhost"])),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "tls = \"none\"", "");
    let outcome = deliver_one(&test).await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    assert_eq!(outcome.tls, None, "{outcome:?}");
    let connections = test.server.connections();
    assert!(
        !connections[0].commands.iter().any(|c| c == "STARTTLS"),
        "{:?}",
        connections[0].commands
    );
    assert!(!test.server.messages()[0].tls);
}
