//! `skein-smtp`'s connections: reused for the next job to the same host,
//! closed with QUIT after `smtp.idle_timeout`, closed and replaced when a
//! job for another host comes, and given up (deferring) when the server
//! stops answering within the RFC 5321 timeouts.

use std::time::Duration;

use skein_integration_tests::smtp_server::{
    Response, ScriptedServer, ServerOptions, SmtpTest, Step, shutdown,
};
use skein_proto::{JobId, Status};

const LIMIT: Duration = Duration::from_secs(60);
const MESSAGE: &[u8] = b"Subject: c\r\n\r\nconnections\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_is_reused_then_closed_with_quit() {
    let test = SmtpTest::new(ServerOptions::default(), "idle_timeout = \"2s\"", "");
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", MESSAGE);
    // One job, then another once the first is done: the connection is
    // still open, so the second goes down it.
    let first = scheduler
        .deliver(test.job(1, &file, &["a@x.test"]))
        .await
        .expect("done");
    let second = scheduler
        .deliver(test.job(2, &file, &["b@x.test"]))
        .await
        .expect("done");
    assert_eq!(first[0].status, Status::Delivered);
    assert_eq!(second[0].status, Status::Delivered);
    assert_eq!(test.server.connections().len(), 1, "reused");
    // The connection's set-up is the first job's alone (delays= c).
    assert!(first[0].connect_micros > 0, "{:?}", first[0]);
    assert_eq!(second[0].connect_micros, 0, "a reused connection");
    // Then nothing: after the idle time the agent says QUIT by itself.
    let quit = test.server.wait_for(LIMIT, |c, _| {
        c.first()
            .is_some_and(|c| c.closed && c.commands.last().is_some_and(|l| l == "QUIT"))
    });
    assert!(quit, "no QUIT after the idle time:\n{}", test.agent_log());
    // A job after that opens a new connection.
    let third = scheduler
        .deliver(test.job(3, &file, &["c@x.test"]))
        .await
        .expect("done");
    assert_eq!(third[0].status, Status::Delivered);
    assert_eq!(test.server.connections().len(), 2);
    assert!(
        third[0].connect_micros > 0,
        "a new connection: {:?}",
        third[0]
    );
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
    assert!(
        scheduler.idles >= 1,
        "the agent said Idle while it held nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_for_another_host_closes_and_reconnects() {
    let test = SmtpTest::new(ServerOptions::default(), "", "");
    let other = ScriptedServer::start(ServerOptions::default());
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", MESSAGE);
    let first = scheduler
        .deliver(test.job(1, &file, &["a@x.test"]))
        .await
        .expect("done");
    let mut elsewhere = test.job(2, &file, &["b@y.test"]);
    elsewhere.nexthop = Some(other.nexthop());
    elsewhere.thread = skein_proto::ThreadKey::new("smtp", other.nexthop());
    let second = scheduler.deliver(elsewhere).await.expect("done");
    assert_eq!(first[0].status, Status::Delivered);
    assert_eq!(second[0].status, Status::Delivered, "{}", test.agent_log());
    let commands = &test.server.connections()[0].commands;
    assert_eq!(
        commands.last().map(String::as_str),
        Some("QUIT"),
        "{commands:?}"
    );
    assert_eq!(other.messages().len(), 1);
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_times_out_and_defers() {
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|_, step| match step {
        Step::Mail(_) => Response::Delayed(Duration::from_secs(4), Box::new(Response::Default)),
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "mail_timeout = \"1s\"", "");
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", MESSAGE);
    scheduler
        .send_job(test.job(1, &file, &["a@x.test", "b@x.test"]))
        .await
        .expect("send");
    let outcomes = tokio::time::timeout(LIMIT, scheduler.wait_done(JobId(1)))
        .await
        .expect("no hang")
        .expect("done");
    for o in &outcomes {
        assert!(matches!(o.status, Status::Deferred { .. }), "{o:?}");
        assert_eq!(o.enhanced.to_string(), "4.4.2", "{o:?}");
        assert!(o.diagnostic.contains("MAIL FROM reply"), "{o:?}");
    }
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
    assert!(test.server.messages().is_empty());
}
