//! `skein-smtp` against the scripted server: one outcome per recipient,
//! decided by the reply that concerns it — mixed RCPT replies, 452 "too
//! many recipients", a 421 in the middle of a transaction, a connection
//! dropped after the end of data, a slow server, SIZE refusal, HELO
//! fallback, a server that is not there.

use std::time::Duration;

use skein_integration_tests::smtp_server::{Response, ServerOptions, SmtpTest, Step, shutdown};
use skein_proto::{JobId, Outcome, Status};

const LIMIT: Duration = Duration::from_secs(60);

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nHello.\r\n";

fn status_of(outcomes: &[Outcome], index: u32) -> (Status, String, Option<u16>) {
    let o = outcomes
        .iter()
        .find(|o| o.recipient == index)
        .unwrap_or_else(|| panic!("no outcome for recipient {index}: {outcomes:?}"));
    (
        o.status,
        o.enhanced.to_string(),
        o.reply.as_ref().map(|r| r.code),
    )
}

fn deferred() -> Status {
    Status::Deferred {
        retry_after_secs: None,
    }
}

/// Sends jobs `(id, recipients)` and returns each job's outcomes.
async fn deliver(test: &SmtpTest, jobs: &[(u64, &[&str])]) -> Vec<Vec<Outcome>> {
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", MESSAGE);
    for (id, rcpts) in jobs {
        scheduler
            .send_job(test.job(*id, &file, rcpts))
            .await
            .expect("send job");
    }
    let mut all = Vec::new();
    for (id, _) in jobs {
        let outcomes = tokio::time::timeout(LIMIT, scheduler.wait_done(JobId(*id)))
            .await
            .unwrap_or_else(|_| panic!("job {id} not done:\n{}", test.agent_log()))
            .expect("job done");
        all.push(outcomes);
    }
    assert!(
        shutdown(&mut child, &mut scheduler, LIMIT).await,
        "agent did not stop cleanly:\n{}",
        test.agent_log()
    );
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_rcpt_replies_decide_each_recipient() {
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|_, step| match step {
        Step::Rcpt(a) if a.starts_with("nouser") => {
            Response::Reply("550 5.1.1 no such user".into())
        }
        Step::Rcpt(a) if a.starts_with("full") => {
            Response::Reply("452-4.2.2 mailbox full\n452 4.2.2 try later".into())
        }
        Step::Rcpt(a) if a.starts_with("grey") => Response::Reply("451 4.7.1 greylisted".into()),
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "", "");
    let rcpts: &[&str] = &["ok1@x.test", "nouser@x.test", "grey@x.test", "ok2@x.test"];
    let outcomes = deliver(&test, &[(1, rcpts)]).await.remove(0);
    assert_eq!(
        status_of(&outcomes, 0),
        (Status::Delivered, "2.0.0".into(), Some(250))
    );
    assert_eq!(
        status_of(&outcomes, 1),
        (Status::Failed, "5.1.1".into(), Some(550))
    );
    assert_eq!(
        status_of(&outcomes, 2),
        (deferred(), "4.7.1".into(), Some(451))
    );
    assert_eq!(
        status_of(&outcomes, 3),
        (Status::Delivered, "2.0.0".into(), Some(250))
    );
    let messages = test.server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["ok1@x.test", "ok2@x.test"]);
    assert_eq!(messages[0].data, MESSAGE);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_recipients_go_in_the_next_transaction() {
    // Two recipients per transaction, then 452 (a full mailbox is a 452
    // too, but with 4.2.2: only "too many" moves a recipient on).
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|ctx, step| match step {
        Step::Rcpt(_) if ctx.rcpts >= 2 => Response::Reply("452 4.5.3 too many recipients".into()),
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "", "");
    let rcpts: &[&str] = &["a@x.test", "b@x.test", "c@x.test", "d@x.test", "e@x.test"];
    let outcomes = deliver(&test, &[(1, rcpts)]).await.remove(0);
    assert_eq!(outcomes.len(), 5);
    assert!(
        outcomes.iter().all(|o| o.status == Status::Delivered),
        "{outcomes:?}"
    );
    let groups: Vec<Vec<String>> = test
        .server
        .messages()
        .into_iter()
        .map(|m| m.rcpt_to)
        .collect();
    assert_eq!(
        groups,
        [
            vec!["a@x.test", "b@x.test"],
            vec!["c@x.test", "d@x.test"],
            vec!["e@x.test"]
        ]
    );
    assert_eq!(test.server.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_recipient_limit_splits_transactions() {
    let options = ServerOptions {
        pipelining: true,
        chunking: true,
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "max_recipients_per_transaction = 2", "");
    let rcpts: &[&str] = &["a@x.test", "b@x.test", "c@x.test"];
    let outcomes = deliver(&test, &[(1, rcpts)]).await.remove(0);
    assert!(
        outcomes.iter().all(|o| o.status == Status::Delivered),
        "{outcomes:?}"
    );
    let groups: Vec<Vec<String>> = test
        .server
        .messages()
        .into_iter()
        .map(|m| m.rcpt_to)
        .collect();
    assert_eq!(groups, [vec!["a@x.test", "b@x.test"], vec!["c@x.test"]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_421_mid_transaction_defers_what_is_unanswered() {
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|_, step| match step {
        Step::Rcpt(a) if a.starts_with('b') => {
            Response::ReplyAndClose("421 4.3.2 shutting down".into())
        }
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "", "");
    let all = deliver(
        &test,
        &[
            (1, &["a@x.test", "b@x.test", "c@x.test"]),
            (2, &["d@x.test"]),
        ],
    )
    .await;
    for outcomes in &all {
        for o in outcomes {
            assert!(matches!(o.status, Status::Deferred { .. }), "{o:?}");
            assert_eq!(o.enhanced.class, 4, "{o:?}");
        }
    }
    // The accepted recipient and the one refused with 421 both carry it.
    assert_eq!(status_of(&all[0], 0).2, Some(421));
    assert_eq!(status_of(&all[0], 1).2, Some(421));
    assert!(test.server.messages().is_empty());
    // Nothing was delivered on that connection, so the agent did not try
    // a second one for the next job.
    assert_eq!(test.server.connections().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drop_after_the_end_of_data_defers_and_warns_of_a_duplicate() {
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|_, step| match step {
        Step::DataEnd(_) => Response::Drop,
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "", "");
    let outcomes = deliver(&test, &[(1, &["a@x.test", "b@x.test"])])
        .await
        .remove(0);
    for o in &outcomes {
        assert_eq!(o.status, deferred(), "{o:?}");
        assert_eq!(o.enhanced.to_string(), "4.4.2", "{o:?}");
        assert!(o.diagnostic.contains("may have been delivered"), "{o:?}");
    }
    assert!(
        test.agent_log().contains("may be delivered twice"),
        "{}",
        test.agent_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_pipelining_server_gets_everything_right() {
    let options = ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    }
    .with_script(|_, step| {
        let reply = match step {
            Step::Rcpt(a) if a.starts_with("bad") => {
                Response::Reply("550 5.1.1 no such user".into())
            }
            _ => Response::Default,
        };
        Response::Delayed(Duration::from_millis(50), Box::new(reply))
    });
    let test = SmtpTest::new(options, "", "");
    let all = deliver(
        &test,
        &[
            (1, &["a@x.test", "bad@x.test"]),
            (2, &["b@x.test"]),
            (3, &["bad2@x.test", "c@x.test"]),
        ],
    )
    .await;
    assert_eq!(status_of(&all[0], 0).0, Status::Delivered);
    assert_eq!(status_of(&all[0], 1).0, Status::Failed);
    assert_eq!(status_of(&all[1], 0).0, Status::Delivered);
    assert_eq!(status_of(&all[2], 0).0, Status::Failed);
    assert_eq!(status_of(&all[2], 1).0, Status::Delivered);
    let connections = test.server.connections();
    assert_eq!(connections.len(), 1);
    // Pipelined all the same: every envelope arrived in one read.
    let reads: Vec<String> = connections[0]
        .reads
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    for read in reads.iter().filter(|r| r.contains("MAIL FROM")) {
        let from_mail = &read[read.find("MAIL FROM").expect("found")..];
        assert!(
            from_mail.ends_with("DATA\r\n"),
            "envelope split: {reads:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_above_the_servers_size_fails_at_once() {
    let options = ServerOptions {
        pipelining: true,
        size: Some(40),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "", "");
    let (mut child, mut scheduler) = test.agent().await;
    let big = test.message(
        "big",
        &[b"Subject: big\r\n\r\n".as_slice(), &[b'x'; 100], b"\r\n"].concat(),
    );
    let small = test.message("small", b"Subject: s\r\n\r\nsmall\r\n");
    scheduler
        .send_job(test.job(1, &big, &["a@x.test"]))
        .await
        .expect("send");
    scheduler
        .send_job(test.job(2, &small, &["b@x.test"]))
        .await
        .expect("send");
    let first = scheduler.wait_done(JobId(1)).await.expect("done");
    let second = scheduler.wait_done(JobId(2)).await.expect("done");
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
    assert_eq!(
        status_of(&first, 0),
        (Status::Failed, "5.3.4".into(), None),
        "{}",
        test.agent_log()
    );
    assert_eq!(status_of(&second, 0).0, Status::Delivered);
    let connections = test.server.connections();
    let mails: Vec<&String> = connections[0]
        .commands
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    let want = format!("MAIL FROM:<sender@client.test> SIZE={}", small.size);
    assert_eq!(mails, [&want]);
}

#[tokio::test(flavor = "multi_thread")]
async fn helo_when_the_server_knows_no_ehlo() {
    let options = ServerOptions {
        ehlo: false,
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "", "");
    let outcomes = deliver(&test, &[(1, &["a@x.test"])]).await.remove(0);
    assert_eq!(status_of(&outcomes, 0).0, Status::Delivered);
    let commands = &test.server.connections()[0].commands;
    assert_eq!(commands[..2], ["EHLO client.test", "HELO client.test"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_not_there_defers() {
    let test = SmtpTest::new(ServerOptions::default(), "connect_timeout = \"5s\"", "");
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", MESSAGE);
    let mut job = test.job(1, &file, &["a@x.test"]);
    job.nexthop = Some(format!("127.0.0.1:{port}"));
    let outcomes = scheduler.deliver(job).await.expect("done");
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
    assert_eq!(status_of(&outcomes, 0), (deferred(), "4.4.1".into(), None));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusing_greeting_decides_by_its_class() {
    let options = ServerOptions::default().with_script(|_, step| match step {
        Step::Greeting => Response::ReplyAndClose("554 5.7.1 no service for you".into()),
        _ => Response::Default,
    });
    let test = SmtpTest::new(options, "", "");
    let outcomes = deliver(&test, &[(1, &["a@x.test"])]).await.remove(0);
    assert_eq!(
        status_of(&outcomes, 0),
        (Status::Failed, "5.7.1".into(), Some(554))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dsn_and_body_parameters_follow_the_servers_extensions() {
    let options = ServerOptions {
        pipelining: true,
        dsn: true,
        size: Some(0),
        ..ServerOptions::default()
    };
    let test = SmtpTest::new(options, "", "");
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", "Subject: 8bit\r\n\r\nK\u{f6}ln\r\n".as_bytes());
    let mut job = test.job(1, &file, &["a@x.test", "b@x.test"]);
    job.envid = Some("Q1 env".into());
    job.ret = Some(skein_proto::Ret::Headers);
    job.body = skein_proto::BodyType::EightBitMime;
    job.recipients[0].notify = skein_proto::Notify {
        never: false,
        success: true,
        failure: true,
        delay: false,
    };
    job.recipients[0].orcpt = Some("rfc822;list+2Bx@x.test".into());
    let mut utf8 = test.job(2, &file, &["c@x.test"]);
    utf8.smtputf8 = true;
    let first = scheduler.deliver(job).await.expect("done");
    let second = scheduler.deliver(utf8).await.expect("done");
    assert!(shutdown(&mut child, &mut scheduler, LIMIT).await);
    assert!(
        first.iter().all(|o| o.status == Status::Delivered),
        "{first:?}"
    );
    // The server has no SMTPUTF8: that message fails at once.
    assert_eq!(
        status_of(&second, 0),
        (Status::Failed, "5.6.7".into(), None)
    );
    let commands = &test.server.connections()[0].commands;
    let envelope: Vec<&str> = commands
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("MAIL") || c.starts_with("RCPT"))
        .collect();
    assert_eq!(
        envelope,
        [
            format!(
                "MAIL FROM:<sender@client.test> SIZE={} BODY=8BITMIME RET=HDRS ENVID=Q1+20env",
                file.size
            )
            .as_str(),
            "RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;list+2Bx@x.test",
            "RCPT TO:<b@x.test>",
        ]
    );
}
