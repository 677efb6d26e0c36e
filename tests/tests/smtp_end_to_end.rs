//! End to end under the real scheduler: messages submitted with `skein
//! sendmail` to a statically routed domain are routed to the `smtp`
//! channel, handed by `skein-scheduler` to `skein-smtp`, and arrive at the
//! scripted server over one connection, pipelined.

use std::time::Duration;

use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions};

const MESSAGES: usize = 20;

#[test]
fn sendmail_to_a_static_route_arrives_over_one_connection() {
    let server = ScriptedServer::start(ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    });
    let env = TestEnv::new(&format!(
        "[[route]]\ndomain = \"remote.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n",
        server.nexthop()
    ));
    // Everything is queued before the scheduler starts, so that the thread
    // has all its work at once and one agent takes it over one connection.
    for n in 0..MESSAGES {
        let to = format!("user{}@remote.test", n % 3);
        let body = format!("Subject: e2e {n}\n\n.dot line {n}\nbody {n}\n");
        env.submit(&["-i", "-f", "sender@test.example", &to], body.as_bytes());
    }
    let router = env.start("skein-router");
    assert!(
        env.wait_for(Duration::from_secs(120), || env
            .files("incoming")
            .is_empty()),
        "router did not route:\n{}",
        router.log_text()
    );
    let scheduler = env.start("skein-scheduler");
    let arrived = server.wait_for(Duration::from_secs(120), |_, m| m.len() >= MESSAGES);
    assert!(
        arrived,
        "{} of {MESSAGES} arrived:\n{}",
        server.messages().len(),
        scheduler.log_text()
    );
    assert!(
        env.wait_for(Duration::from_secs(60), || env.queue_empty()),
        "queue not empty:\n{}",
        scheduler.log_text()
    );
    assert!(scheduler.stop().success());
    drop(router);

    let messages = server.messages();
    assert_eq!(messages.len(), MESSAGES, "each message exactly once");
    let connections: std::collections::BTreeSet<usize> =
        messages.iter().map(|m| m.connection).collect();
    assert_eq!(connections.len(), 1, "one connection: {connections:?}");
    for n in 0..MESSAGES {
        let subject = format!("Subject: e2e {n}\r\n");
        let m = messages
            .iter()
            .find(|m| {
                m.data
                    .windows(subject.len())
                    .any(|w| w == subject.as_bytes())
            })
            .unwrap_or_else(|| panic!("message {n} missing"));
        let tail = format!("\r\n\r\n.dot line {n}\r\nbody {n}\r\n");
        assert!(
            m.data.ends_with(tail.as_bytes()),
            "message {n} body: {:?}",
            String::from_utf8_lossy(&m.data)
        );
        assert_eq!(m.rcpt_to, [format!("user{}@remote.test", n % 3)]);
        assert!(
            m.mail_from.contains("<sender@test.example>"),
            "{}",
            m.mail_from
        );
    }
}
