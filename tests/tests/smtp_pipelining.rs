//! `skein-smtp` against the scripted server: the exact bytes it writes and
//! how they are grouped, without PIPELINING (lock-step), with PIPELINING
//! (envelope in one write, the next envelope behind the end of data) and
//! with PIPELINING and CHUNKING (whole BDAT transactions in flight, up to
//! the window).
//!
//! Every scenario queues all its jobs while the server holds back its
//! greeting, so that the agent has them all when it starts writing: the
//! grouping is then the agent's choice, not an accident of timing.

use std::time::Duration;

use skein_integration_tests::smtp_server::{Response, ServerOptions, SmtpTest, Step, shutdown};
use skein_proto::{JobId, Status};

const LIMIT: Duration = Duration::from_secs(60);

/// A message whose body needs dot-stuffing.
fn message(n: u32) -> Vec<u8> {
    format!("Subject: message {n}\r\n\r\n.leading dot\r\nline {n}\r\n..\r\n").into_bytes()
}

/// `message(n)` as it goes on the wire in DATA.
fn stuffed(n: u32) -> String {
    format!("Subject: message {n}\r\n\r\n..leading dot\r\nline {n}\r\n...\r\n.\r\n")
}

/// Holds the first greeting back long enough for every job to reach the
/// agent before it starts writing.
fn slow_greeting(options: ServerOptions) -> ServerOptions {
    options.with_script(|ctx, step| match step {
        Step::Greeting if ctx.connection == 0 => {
            Response::Delayed(Duration::from_millis(500), Box::new(Response::Default))
        }
        _ => Response::Default,
    })
}

/// Runs `jobs` (each a list of recipients, message `n` for job `n`) and
/// returns the server's reads on its one connection, as text.
async fn run(test: &SmtpTest, jobs: &[&[&str]]) -> Vec<String> {
    let (mut child, mut scheduler) = test.agent().await;
    for (n, rcpts) in jobs.iter().enumerate() {
        let n = n as u32 + 1;
        let file = test.message(&format!("m{n}"), &message(n));
        scheduler
            .send_job(test.job(u64::from(n), &file, rcpts))
            .await
            .expect("send job");
    }
    for n in 1..=jobs.len() as u64 {
        let outcomes = tokio::time::timeout(LIMIT, scheduler.wait_done(JobId(n)))
            .await
            .unwrap_or_else(|_| panic!("job {n} not done:\n{}", test.agent_log()))
            .expect("job done");
        for o in &outcomes {
            assert_eq!(o.status, Status::Delivered, "{o:?}\n{}", test.agent_log());
            assert!(
                o.remote_mta
                    .as_deref()
                    .is_some_and(|m| m.contains("127.0.0.1")),
                "{o:?}"
            );
        }
    }
    assert!(
        shutdown(&mut child, &mut scheduler, LIMIT).await,
        "agent did not stop cleanly:\n{}",
        test.agent_log()
    );
    assert!(
        test.server
            .wait_for(LIMIT, |c, _| c.first().is_some_and(|c| c.closed))
    );
    let connections = test.server.connections();
    assert_eq!(connections.len(), 1, "one connection for everything");
    let messages = test.server.messages();
    assert_eq!(messages.len(), jobs.len());
    for (n, m) in messages.iter().enumerate() {
        assert_eq!(m.data, message(n as u32 + 1), "message {} intact", n + 1);
    }
    connections[0]
        .reads
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_step_without_pipelining() {
    let test = SmtpTest::new(slow_greeting(ServerOptions::default()), "", "");
    let reads = run(&test, &[&["a@x.test", "b@x.test"], &["c@x.test"]]).await;
    let want = [
        "EHLO client.test\r\n".to_owned(),
        "MAIL FROM:<sender@client.test>\r\n".to_owned(),
        "RCPT TO:<a@x.test>\r\n".to_owned(),
        "RCPT TO:<b@x.test>\r\n".to_owned(),
        "DATA\r\n".to_owned(),
        stuffed(1),
        "MAIL FROM:<sender@client.test>\r\n".to_owned(),
        "RCPT TO:<c@x.test>\r\n".to_owned(),
        "DATA\r\n".to_owned(),
        stuffed(2),
        "QUIT\r\n".to_owned(),
    ];
    assert_eq!(reads, want, "{}", test.agent_log());
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelining_puts_the_next_envelope_behind_the_end_of_data() {
    let options = ServerOptions {
        pipelining: true,
        size: Some(0),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(slow_greeting(options), "", "");
    let reads = run(
        &test,
        &[&["a@x.test", "b@x.test"], &["c@x.test"], &["d@x.test"]],
    )
    .await;
    let envelope = |size: usize, rcpts: &[&str]| {
        let mut s = format!("MAIL FROM:<sender@client.test> SIZE={size}\r\n");
        for r in rcpts {
            s.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        s.push_str("DATA\r\n");
        s
    };
    let size = message(1).len();
    let want = [
        "EHLO client.test\r\n".to_owned(),
        envelope(size, &["a@x.test", "b@x.test"]),
        stuffed(1) + &envelope(size, &["c@x.test"]),
        stuffed(2) + &envelope(size, &["d@x.test"]),
        stuffed(3),
        "QUIT\r\n".to_owned(),
    ];
    assert_eq!(reads, want, "{}", test.agent_log());
}

#[tokio::test(flavor = "multi_thread")]
async fn chunking_keeps_whole_transactions_in_flight() {
    let options = ServerOptions {
        pipelining: true,
        chunking: true,
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(slow_greeting(options), "", "");
    let reads = run(
        &test,
        &[&["a@x.test", "b@x.test"], &["c@x.test"], &["d@x.test"]],
    )
    .await;
    let txn = |n: u32, rset: bool, rcpts: &[&str]| {
        let mut s = String::new();
        if rset {
            s.push_str("RSET\r\n");
        }
        s.push_str("MAIL FROM:<sender@client.test>\r\n");
        for r in rcpts {
            s.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        let body = String::from_utf8(message(n)).expect("ascii");
        s.push_str(&format!("BDAT {} LAST\r\n{body}", body.len()));
        s
    };
    let want = [
        "EHLO client.test\r\n".to_owned(),
        txn(1, false, &["a@x.test", "b@x.test"])
            + &txn(2, true, &["c@x.test"])
            + &txn(3, true, &["d@x.test"]),
        "QUIT\r\n".to_owned(),
    ];
    assert_eq!(reads, want, "{}", test.agent_log());
    assert!(test.server.messages().iter().all(|m| m.chunked));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_bounds_what_is_in_flight() {
    let options = ServerOptions {
        pipelining: true,
        chunking: true,
        ..ServerOptions::default()
    };
    // A window smaller than one message: one transaction at a time, each
    // still in one write.
    let test = SmtpTest::new(slow_greeting(options), "window = 10", "");
    let reads = run(&test, &[&["a@x.test"], &["b@x.test"]]).await;
    assert_eq!(reads.len(), 4, "{reads:#?}");
    assert!(reads[1].starts_with("MAIL FROM:") && reads[1].ends_with("..\r\n"));
    assert!(reads[2].starts_with("RSET\r\nMAIL FROM:") && reads[2].contains("RCPT TO:<b@x.test>"));
    assert_eq!(reads[3], "QUIT\r\n");
}
