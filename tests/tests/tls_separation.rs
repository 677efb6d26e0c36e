//! One route's TLS failure never defers another route's mail to the same
//! server (issue 14, first defect). Three domains are routed to one
//! scripted server with a self-signed certificate: `a.test` under the
//! default (opportunistic), `b.test` with `tls = "verify"` (which that
//! certificate fails), `c.test` with `tls = "require"`. Each is its own
//! thread, so the verify failure backs off `b.test` alone: `a.test` and
//! `c.test` are delivered at their first attempt, `b.test` is deferred
//! 4.7.5 every time and never sent in clear text. Its retries name the
//! server and port the agent really used.

use std::time::Duration;

use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions, tls_config};

#[test]
fn a_verify_failure_defers_only_its_own_route() {
    let server = ScriptedServer::start(ServerOptions {
        pipelining: true,
        tls: Some(tls_config(&["localhost", "127.0.0.1"])),
        ..ServerOptions::default()
    });
    let hop = server.nexthop();
    let env = TestEnv::new(&format!(
        "[scheduler]\nretries = [\"1s\"]\n\n\
         [[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\nnexthop = \"{hop}\"\n\n\
         [[route]]\ndomain = \"b.test\"\nchannel = \"smtp\"\nnexthop = \"{hop}\"\ntls = \"verify\"\n\n\
         [[route]]\ndomain = \"c.test\"\nchannel = \"smtp\"\nnexthop = \"{hop}\"\ntls = \"require\"\n"
    ));
    // One message for all three, then one each: jobs of every thread
    // queued together, as when the server comes back after an outage.
    env.submit(
        &["-f", "s@test.example", "x@a.test", "y@b.test", "z@c.test"],
        b"Subject: all three\n\nbody\n",
    );
    for rcpt in ["x2@a.test", "y2@b.test", "z2@c.test"] {
        env.submit(&["-f", "s@test.example", rcpt], b"Subject: one\n\nbody\n");
    }
    let router = env.route_all();
    let scheduler = env.start_with_env("skein-scheduler", &[("SKEIN_LOG_FORMAT", "logfmt")]);
    let deliveries = |log: &str, rcpt: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("msg=delivery") && l.contains(&format!("to={rcpt} ")))
            .map(str::to_owned)
            .collect()
    };
    // Settled: the four a/c recipients sent, each b recipient tried at
    // least twice (so that a retry's line is seen too).
    assert!(
        env.wait_for(Duration::from_secs(120), || {
            let log = scheduler.log_text();
            ["x@a.test", "x2@a.test", "z@c.test", "z2@c.test"]
                .iter()
                .all(|r| {
                    deliveries(&log, r)
                        .iter()
                        .any(|l| l.contains("status=sent"))
                })
                && ["y@b.test", "y2@b.test"]
                    .iter()
                    .all(|r| deliveries(&log, r).len() >= 2)
        }),
        "{}",
        scheduler.log_text()
    );
    let log = scheduler.log_text();
    let port = hop.rsplit(':').next().unwrap_or_default();
    let relay = format!("relay=127.0.0.1[127.0.0.1]:{port} ");
    for rcpt in ["x@a.test", "x2@a.test", "z@c.test", "z2@c.test"] {
        let lines = deliveries(&log, rcpt);
        assert_eq!(
            lines.len(),
            1,
            "{rcpt}: one attempt, never deferred by another route's failure:\n{log}"
        );
        assert!(lines[0].contains("status=sent"), "{}", lines[0]);
        assert!(lines[0].contains("attempt=1 "), "{}", lines[0]);
        assert!(lines[0].contains(&relay), "{relay} in {}", lines[0]);
    }
    for rcpt in ["y@b.test", "y2@b.test"] {
        for line in deliveries(&log, rcpt) {
            assert!(line.contains("status=deferred"), "{line}");
            assert!(line.contains("dsn=4.7.5"), "{line}");
            // Every attempt, the retries included, names the server and
            // port the agent connected to.
            assert!(line.contains(&relay), "{relay} in {line}");
        }
    }
    // Each policy is its own thread.
    let threads = env
        .skein()
        .args(["mailq", "--threads"])
        .output()
        .expect("mailq --threads");
    let threads = String::from_utf8_lossy(&threads.stdout).into_owned();
    assert!(
        threads.contains(&format!("smtp/{hop},tls=verify")),
        "{threads}"
    );
    // What the server got: the a and c mail, none of b's; the c mail over
    // TLS as `require` demands.
    let messages = server.messages();
    let to = |m: &skein_integration_tests::smtp_server::Received| m.rcpt_to.join(" ");
    assert!(
        messages.iter().all(|m| !to(m).contains("b.test")),
        "b.test mail was sent despite its verify failure: {messages:?}"
    );
    for m in &messages {
        if to(m).contains("c.test") {
            assert!(m.tls, "c.test mail in clear text: {m:?}");
        }
    }
    assert_eq!(
        messages.iter().map(|m| m.rcpt_to.len()).sum::<usize>(),
        4,
        "{messages:?}"
    );
    drop(scheduler);
    drop(router);
}
