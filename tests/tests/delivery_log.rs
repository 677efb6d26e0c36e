//! One log line per recipient per attempt (issue 12, part 5, first
//! steps): the scheduler's `delivery` line is the only one at info level
//! (the agent's own is debug), it carries `from=`, `size=` and `nrcpt=`;
//! a `sendmail` submission gets a `picked up` line with its uid; a
//! message whose recipients all failed is `removed … why=bounced`.

use std::sync::Arc;
use std::time::Duration;

use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{Response, ScriptedServer, ServerOptions, Step};

#[test]
fn one_delivery_line_per_recipient_per_attempt_with_its_fields() {
    let server = ScriptedServer::start(ServerOptions {
        pipelining: true,
        script: Arc::new(|_, step: &Step<'_>| match step {
            Step::Rcpt(address) if address.starts_with("nobody") => {
                Response::Reply("550 5.1.1 no such user".into())
            }
            _ => Response::Default,
        }),
        ..ServerOptions::default()
    });
    let env = TestEnv::new(&format!(
        "[[route]]\ndomain = \"remote.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n",
        server.nexthop()
    ));
    // The sender is a local user, so that its bounce is kept to read.
    env.make_users(&["sender".to_owned()]);
    // One message with a good and a refused recipient, one with only a
    // refused one (so that it leaves the queue bounced).
    env.submit(
        &[
            "-f",
            "sender@test.example",
            "ann@remote.test",
            "nobody1@remote.test",
        ],
        b"Subject: two\n\nbody\n",
    );
    env.submit(
        &["-f", "<>", "nobody2@remote.test"],
        b"Subject: one\n\nbody\n",
    );
    let router = env.route_all();
    let scheduler = env.start_with_env("skein-scheduler", &[("SKEIN_LOG_FORMAT", "logfmt")]);
    // The two original messages settle; their bounces (for a local
    // sender and for <>: a double bounce to the postmaster) may follow.
    assert!(
        env.wait_for(Duration::from_secs(120), || {
            let log = scheduler.log_text();
            ["ann@remote.test", "nobody2@remote.test"]
                .iter()
                .all(|rcpt| removed(&log, rcpt))
        }),
        "{}",
        scheduler.log_text()
    );
    let log = scheduler.log_text();
    let deliveries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=delivery") && l.contains("remote.test"))
        .collect();
    for rcpt in [
        "ann@remote.test",
        "nobody1@remote.test",
        "nobody2@remote.test",
    ] {
        let lines: Vec<&&str> = deliveries
            .iter()
            .filter(|l| l.contains(&format!("to={rcpt}")))
            .collect();
        assert_eq!(lines.len(), 1, "one line for {rcpt}:\n{log}");
        let line = lines[0];
        for field in [
            "from=", "size=", "nrcpt=", "relay=", "delay=", "delays=", "dsn=", "status=",
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
        // delays=a/b/c/d: four figures that add up to delay= (each is
        // rounded to 10 ms, so within 20 ms).
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in {line}"))
                .to_owned()
        };
        let delay: f64 = field("delay").parse().expect("delay is a number");
        let parts: Vec<f64> = field("delays")
            .split('/')
            .map(|p| p.parse().expect("a number"))
            .collect();
        assert_eq!(parts.len(), 4, "{line}");
        assert!(parts.iter().all(|p| *p >= 0.0), "{line}");
        let sum: f64 = parts.iter().sum();
        assert!((sum - delay).abs() <= 0.021, "{sum} vs {delay}: {line}");
    }
    assert!(deliveries.iter().any(|l| l.contains("to=ann@remote.test")
        && l.contains("status=sent")
        && l.contains("nrcpt=2")));
    assert!(
        deliveries
            .iter()
            .any(|l| l.contains("to=nobody2@remote.test")
                && l.contains("status=bounced")
                && l.contains("from=<>"))
    );
    // One relay format, Postfix's: name[address]:port.
    let port = server
        .nexthop()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{port} ");
    assert!(
        deliveries.iter().all(|l| l.contains(&relay)),
        "{relay} in every line:\n{log}"
    );
    // The bounce names the server by its host name alone (RFC 3464
    // §2.3.5), not with its address and port.
    assert!(
        env.wait_for(Duration::from_secs(60), || !env
            .maildir("sender")
            .is_empty()),
        "no bounce for sender@test.example:\n{log}"
    );
    let bounce = String::from_utf8_lossy(&env.maildir("sender")[0]).into_owned();
    assert!(
        bounce
            .lines()
            .any(|l| l.trim_end() == "Remote-MTA: dns; 127.0.0.1"),
        "{bounce}"
    );
    assert!(
        bounce
            .lines()
            .any(|l| l.trim_end() == "Diagnostic-Code: smtp; 550 5.1.1 no such user"),
        "{bounce}"
    );
    // The bounce's own delivery into the sender's Maildir: relay=local.
    assert!(
        env.wait_for(Duration::from_secs(60), || scheduler
            .log_text()
            .lines()
            .any(|l| l.contains("msg=delivery")
                && l.contains("to=sender@test.example")
                && l.contains("channel=local relay=local "))),
        "{}",
        scheduler.log_text()
    );
    // Nobody else logs outcomes at info level: `grep status=` counts each once.
    // (The bounces' own local deliveries have their delivery lines too.)
    assert!(
        log.lines()
            .filter(|l| l.contains("status="))
            .all(|l| l.contains("msg=delivery")),
        "{log}"
    );
    assert_eq!(
        deliveries
            .iter()
            .filter(|l| l.contains("status=sent"))
            .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("msg=outcome"), "{log}");
    // The bounced-only message leaves as bounced, the other as both.
    assert!(
        log.lines()
            .any(|l| l.contains("msg=removed") && l.contains("why=bounced")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("msg=removed") && l.contains("1 delivered, 1 bounced")),
        "{log}"
    );
    // The router says who submitted with sendmail.
    let routed = router.log_text();
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(
        routed
            .lines()
            .filter(|l| l.contains("picked up") && l.contains(&format!("uid={uid}")))
            .count(),
        2,
        "{routed}"
    );
    drop(scheduler);
    drop(router);
}

/// Whether the message that carried `rcpt` has left the queue: its
/// delivery line names the queue id, and a `removed` line that id.
fn removed(log: &str, rcpt: &str) -> bool {
    let to = format!("to={rcpt} ");
    let Some(id) = log
        .lines()
        .find(|l| l.contains("msg=delivery") && l.contains(&to))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("queue_id="))
        })
    else {
        return false;
    };
    let id = format!("queue_id={id} ");
    log.lines()
        .any(|l| l.contains("msg=removed") && l.contains(&id))
}
