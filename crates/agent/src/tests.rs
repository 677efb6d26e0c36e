//! The agent library against a fake scheduler over a socketpair.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::Duration;

use skein_proto::{
    AgentToScheduler, EnhancedCode, Framed, HandshakeReply, Hello, Job, JobId, ProtoError, Role,
    SchedulerToAgent, SmtpReply, Status, ThreadKey,
};
use tokio::net::UnixStream;
use tokio::sync::{Notify, Semaphore};

use crate::testing::{FakeScheduler, job, message_file};
use crate::{AgentConnection, AgentError, Delivery, Event, serve};

async fn connect(channel: &str) -> (AgentConnection, FakeScheduler) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (agent, scheduler) = tokio::join!(
        AgentConnection::from_stream(a, channel, "test-agent 1"),
        FakeScheduler::accept(b)
    );
    (
        agent.expect("agent handshake"),
        scheduler.expect("scheduler handshake"),
    )
}

/// One message file for every test job of this process (the library
/// verifies it before the handler runs); its directory lives as long as
/// the test process.
static MESSAGE: LazyLock<(tempfile::TempDir, String, u64, u64)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("message");
    let (offset, size) = message_file(&path, b"Subject: test\r\n\r\nbody\r\n");
    let path = path.display().to_string();
    (dir, path, offset, size)
});

fn test_job(id: u64, recipients: &[&str]) -> Job {
    let (_, path, offset, size) = &*MESSAGE;
    job(
        id,
        ThreadKey::new("test", "example.org"),
        path,
        *offset,
        *size,
        recipients,
    )
}

fn code(s: &str) -> EnhancedCode {
    s.parse().expect("valid code")
}

/// A stop request that never comes.
fn never() -> std::future::Pending<()> {
    std::future::pending()
}

fn ok_reply() -> SmtpReply {
    SmtpReply {
        code: 250,
        enhanced: Some(EnhancedCode::SUCCESS),
        text: "ok".into(),
    }
}

#[tokio::test]
async fn handshake_announces_the_channel() {
    let (agent, scheduler) = connect("fax").await;
    assert_eq!(agent.channel(), "fax");
    assert_eq!(agent.scheduler().program, "fake-scheduler");
    assert_eq!(scheduler.channel(), "fax");
    assert_eq!(scheduler.agent().program, "test-agent 1");
}

#[tokio::test]
async fn a_refusal_is_a_handshake_error() {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let refuse = async move {
        let mut framed = Framed::new(b);
        framed
            .send(&Hello::new(Role::Scheduler, "strict"))
            .await
            .expect("hello");
        let _ = framed.recv_payload().await.expect("their hello");
        framed
            .send(&HandshakeReply::Refused {
                reason: "no clause for channel \"fax\"".into(),
            })
            .await
            .expect("refusal");
    };
    let (agent, ()) = tokio::join!(AgentConnection::from_stream(a, "fax", "x"), refuse);
    match agent {
        Err(AgentError::Handshake(ProtoError::Refused(reason))) => {
            assert!(reason.contains("no clause"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn low_level_events_in_order_then_closed_forever() {
    let (mut agent, mut scheduler) = connect("test").await;
    agent.want(2).await.expect("want");
    let script = async {
        scheduler.recv().await.expect("recv").expect("want");
        scheduler
            .send(&SchedulerToAgent::Job(test_job(1, &["a@example.org"])))
            .await
            .expect("job");
        scheduler
            .send(&SchedulerToAgent::Cancel { job: JobId(1) })
            .await
            .expect("cancel");
        scheduler
            .send(&SchedulerToAgent::Shutdown)
            .await
            .expect("shutdown");
        drop(scheduler);
    };
    let events = async {
        let mut events = Vec::new();
        for _ in 0..5 {
            events.push(agent.next().await.expect("event"));
        }
        events
    };
    let ((), events) = tokio::join!(script, events);
    assert!(matches!(&events[0], Event::Job(j) if j.id == JobId(1)));
    assert_eq!(events[1], Event::Cancel(JobId(1)));
    assert_eq!(events[2], Event::Shutdown);
    assert_eq!(events[3], Event::Closed);
    assert_eq!(events[4], Event::Closed);
}

#[tokio::test]
async fn invalid_outcome_is_refused_and_the_connection_survives() {
    let (agent, mut scheduler) = connect("test").await;
    let mut outcome = Delivery::delivered(None, "").into_outcome(JobId(1), 0);
    outcome.enhanced = EnhancedCode {
        class: 3,
        subject: 0,
        detail: 0,
    };
    let err = agent.report(outcome).await.expect_err("invalid code");
    assert!(matches!(err, AgentError::InvalidOutcome(_)), "{err}");
    agent
        .idle(Some("mx.example.org".into()))
        .await
        .expect("idle");
    let message = scheduler.recv().await.expect("recv").expect("a message");
    assert_eq!(
        message,
        AgentToScheduler::Idle {
            connected_to: Some("mx.example.org".into())
        }
    );
}

#[tokio::test]
async fn serve_reports_each_recipient_and_keeps_credit_topped_up() {
    let (agent, mut scheduler) = connect("test").await;
    let handler = async |job: &Job| -> Vec<Delivery> {
        job.recipients
            .iter()
            .map(|r| {
                if r.address.starts_with("bad") {
                    Delivery::failed(code("5.1.1"), "no such user")
                } else if r.address.starts_with("later") {
                    Delivery::deferred(code("4.2.2"), "full", Some(Duration::from_secs(30)))
                } else {
                    Delivery::delivered(ok_reply(), "ok")
                }
            })
            .collect()
    };
    let script = async {
        scheduler.recv().await.expect("recv");
        assert_eq!(scheduler.credit(), 3, "initial Want is the ahead count");
        let first = scheduler
            .deliver(test_job(1, &["good@x", "bad@x", "later@x"]))
            .await
            .expect("job 1");
        let second = scheduler
            .deliver(test_job(2, &["good2@x"]))
            .await
            .expect("job 2");
        // After each JobDone a Want{1} and, the agent holding nothing
        // more, an Idle follow.
        while scheduler.idles < 2 {
            scheduler.recv().await.expect("recv").expect("message");
        }
        assert_eq!(
            scheduler.credit(),
            3,
            "each finished job gives its credit back"
        );
        scheduler
            .send(&SchedulerToAgent::Shutdown)
            .await
            .expect("shutdown");
        scheduler.wait_closed().await.expect("closed");
        (first, second)
    };
    let (served, (first, second)) = tokio::join!(serve(agent, 3, &handler, never()), script);
    served.expect("serve ends cleanly on Shutdown");
    let statuses: Vec<(u32, Status, String)> = first
        .iter()
        .map(|o| (o.recipient, o.status, o.enhanced.to_string()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (0, Status::Delivered, "2.0.0".into()),
            (1, Status::Failed, "5.1.1".into()),
            (
                2,
                Status::Deferred {
                    retry_after_secs: Some(30)
                },
                "4.2.2".into()
            ),
        ]
    );
    assert_eq!(first[0].reply, Some(ok_reply()));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].status, Status::Delivered);
}

#[tokio::test]
async fn panics_and_missing_results_become_deferred_and_the_agent_lives_on() {
    let (agent, mut scheduler) = connect("test").await;
    let handler = async |job: &Job| -> Vec<Delivery> {
        match job.id.0 {
            1 => panic!("handler bug"),
            // One result for three recipients.
            2 => vec![Delivery::delivered(None, "ok")],
            // Two results for one recipient.
            3 => vec![
                Delivery::failed(code("5.1.1"), "no"),
                Delivery::delivered(None, "extra"),
            ],
            _ => job
                .recipients
                .iter()
                .map(|_| Delivery::delivered(None, "ok"))
                .collect(),
        }
    };
    let script = async {
        let panicked = scheduler
            .deliver(test_job(1, &["a@x", "b@x"]))
            .await
            .expect("job 1");
        let short = scheduler
            .deliver(test_job(2, &["a@x", "b@x", "c@x"]))
            .await
            .expect("job 2");
        let long = scheduler
            .deliver(test_job(3, &["a@x"]))
            .await
            .expect("job 3");
        let fine = scheduler
            .deliver(test_job(4, &["a@x"]))
            .await
            .expect("job 4");
        drop(scheduler);
        (panicked, short, long, fine)
    };
    let (served, (panicked, short, long, fine)) =
        tokio::join!(serve(agent, 1, &handler, never()), script);
    served.expect("serve ends cleanly at end of stream");

    assert_eq!(panicked.len(), 2);
    for o in &panicked {
        assert!(matches!(o.status, Status::Deferred { .. }), "{o:?}");
        assert_eq!(o.enhanced.to_string(), "4.3.0");
        assert!(o.diagnostic.contains("handler bug"), "{}", o.diagnostic);
    }
    let short: Vec<_> = short.iter().map(|o| (o.recipient, o.status)).collect();
    let deferred = Status::Deferred {
        retry_after_secs: None,
    };
    assert_eq!(
        short,
        vec![(0, Status::Delivered), (1, deferred), (2, deferred)]
    );
    assert_eq!(long.len(), 1);
    assert_eq!(long[0].status, Status::Failed);
    assert_eq!(fine[0].status, Status::Delivered);
}

#[tokio::test]
async fn jobs_run_one_at_a_time_in_order() {
    let (agent, mut scheduler) = connect("test").await;
    let running = Cell::new(0u32);
    let most = Cell::new(0u32);
    let order = std::cell::RefCell::new(Vec::new());
    let handler = async |job: &Job| -> Vec<Delivery> {
        running.set(running.get() + 1);
        most.set(most.get().max(running.get()));
        order.borrow_mut().push(job.id.0);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        running.set(running.get() - 1);
        vec![Delivery::delivered(None, "ok")]
    };
    let script = async {
        // Send all five jobs as fast as credit allows, then collect.
        for id in 1..=5 {
            scheduler
                .send_job(test_job(id, &["a@x"]))
                .await
                .expect("job");
        }
        for id in 1..=5 {
            scheduler.wait_done(JobId(id)).await.expect("done");
        }
        drop(scheduler);
    };
    let (served, ()) = tokio::join!(serve(agent, 4, &handler, never()), script);
    served.expect("serve");
    assert_eq!(most.get(), 1, "never two deliveries at once");
    assert_eq!(*order.borrow(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn shutdown_finishes_the_current_job_and_gives_back_the_rest() {
    let (agent, mut scheduler) = connect("test").await;
    let started = Notify::new();
    let gate = Semaphore::new(0);
    let handler = async |job: &Job| -> Vec<Delivery> {
        started.notify_one();
        let permit = gate.acquire().await.expect("gate open");
        permit.forget();
        job.recipients
            .iter()
            .map(|_| Delivery::delivered(None, "ok"))
            .collect()
    };
    let script = async {
        scheduler
            .send_job(test_job(1, &["a@x"]))
            .await
            .expect("job 1");
        scheduler
            .send_job(test_job(2, &["b@x", "c@x"]))
            .await
            .expect("job 2");
        started.notified().await;
        scheduler
            .send(&SchedulerToAgent::Shutdown)
            .await
            .expect("shutdown");
        let given_back = scheduler.wait_done(JobId(2)).await.expect("job 2 back");
        assert!(
            !scheduler.done.contains(&JobId(1)),
            "job 1 is still being delivered"
        );
        gate.add_permits(1);
        let finished = scheduler.wait_done(JobId(1)).await.expect("job 1 done");
        let wants_before = scheduler.credit();
        scheduler.wait_closed().await.expect("closed");
        assert_eq!(scheduler.credit(), wants_before, "no Want after Shutdown");
        (given_back, finished)
    };
    let (served, (given_back, finished)) = tokio::join!(serve(agent, 2, &handler, never()), script);
    served.expect("clean stop");
    assert_eq!(given_back.len(), 2);
    for o in &given_back {
        assert!(matches!(o.status, Status::Deferred { .. }), "{o:?}");
        assert_eq!(o.enhanced.to_string(), "4.3.2");
    }
    assert_eq!(finished[0].status, Status::Delivered);
}

#[tokio::test]
async fn a_stop_request_acts_like_shutdown() {
    let (agent, mut scheduler) = connect("test").await;
    let stop = Notify::new();
    let started = Notify::new();
    let gate = Semaphore::new(0);
    let handler = async |_: &Job| -> Vec<Delivery> {
        started.notify_one();
        gate.acquire().await.expect("gate").forget();
        vec![Delivery::delivered(None, "ok")]
    };
    let script = async {
        scheduler
            .send_job(test_job(1, &["a@x"]))
            .await
            .expect("job 1");
        scheduler
            .send_job(test_job(2, &["b@x"]))
            .await
            .expect("job 2");
        started.notified().await;
        stop.notify_one();
        let back = scheduler.wait_done(JobId(2)).await.expect("job 2 back");
        gate.add_permits(1);
        let done = scheduler.wait_done(JobId(1)).await.expect("job 1");
        scheduler.wait_closed().await.expect("closed");
        (back, done)
    };
    let (served, (back, done)) = tokio::join!(serve(agent, 2, &handler, stop.notified()), script);
    served.expect("clean stop");
    assert!(matches!(back[0].status, Status::Deferred { .. }));
    assert_eq!(done[0].status, Status::Delivered);
}

#[tokio::test]
async fn cancel_drops_a_waiting_job_and_lets_the_running_one_finish() {
    let (agent, mut scheduler) = connect("test").await;
    let started = Notify::new();
    let gate = Semaphore::new(0);
    let handler = async |_: &Job| -> Vec<Delivery> {
        started.notify_one();
        gate.acquire().await.expect("gate").forget();
        vec![Delivery::delivered(None, "ok")]
    };
    let script = async {
        scheduler
            .send_job(test_job(1, &["a@x"]))
            .await
            .expect("job 1");
        scheduler
            .send_job(test_job(2, &["b@x"]))
            .await
            .expect("job 2");
        started.notified().await;
        let credit = scheduler.credit();
        for id in [2, 1, 99] {
            scheduler
                .send(&SchedulerToAgent::Cancel { job: JobId(id) })
                .await
                .expect("cancel");
        }
        let dropped = scheduler.wait_done(JobId(2)).await.expect("job 2");
        while scheduler.credit() == credit {
            scheduler.recv().await.expect("recv").expect("want");
        }
        gate.add_permits(1);
        let finished = scheduler.wait_done(JobId(1)).await.expect("job 1");
        drop(scheduler);
        (dropped, finished)
    };
    let (served, (dropped, finished)) = tokio::join!(serve(agent, 2, &handler, never()), script);
    served.expect("serve");
    assert!(matches!(dropped[0].status, Status::Deferred { .. }));
    assert_eq!(finished[0].status, Status::Delivered);
}

#[tokio::test]
async fn end_of_stream_abandons_the_job_being_delivered() {
    let (agent, mut scheduler) = connect("test").await;
    let started = Notify::new();
    let handler = async |_: &Job| -> Vec<Delivery> {
        started.notify_one();
        std::future::pending::<()>().await;
        Vec::new()
    };
    let script = async {
        scheduler
            .send_job(test_job(1, &["a@x"]))
            .await
            .expect("job");
        started.notified().await;
        drop(scheduler);
    };
    let (served, ()) = tokio::join!(serve(agent, 1, &handler, never()), script);
    served.expect("end of stream is a clean stop");
}

#[tokio::test]
async fn garbage_from_the_scheduler_is_a_protocol_error() {
    let (agent, scheduler) = connect("test").await;
    let handler = async |_: &Job| -> Vec<Delivery> { Vec::new() };
    let script = async {
        let mut scheduler = scheduler;
        // A frame with an unknown SchedulerToAgent variant.
        scheduler
            .framed()
            .send_payload(&[0x09, 0x01, 0x02])
            .await
            .expect("garbage");
        // Keep our end open until the agent gives up on its own.
        let _ = scheduler.wait_closed().await;
    };
    let (served, ()) = tokio::join!(serve(agent, 1, &handler, never()), script);
    let err = served.expect_err("garbage is an error");
    assert!(err.is_peer_fault(), "{err}");
}

/// A damaged message never reaches the handler: the job ends with
/// `Damaged`, the next one is delivered, and credit is given back.
#[tokio::test]
async fn serve_refuses_a_damaged_message_before_the_handler_sees_it() {
    let (agent, mut scheduler) = connect("test").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad");
    let (offset, size) = message_file(&bad, b"Subject: x\r\n\r\nbody\r\n");
    let mut bytes = std::fs::read(&bad).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&bad, &bytes).expect("damage");
    let calls = Cell::new(0);
    let handler = async |job: &Job| -> Vec<Delivery> {
        calls.set(calls.get() + 1);
        job.recipients
            .iter()
            .map(|_| Delivery::delivered(ok_reply(), "ok"))
            .collect()
    };
    let script = async {
        let mut damaged = job(
            1,
            ThreadKey::new("test", "example.org"),
            bad.to_str().expect("utf-8"),
            offset,
            size,
            &["a@x", "b@x"],
        );
        damaged.queue_id = "DAMAGED".into();
        let outcomes = scheduler.deliver(damaged).await.expect("job 1");
        let good = scheduler
            .deliver(test_job(2, &["c@x"]))
            .await
            .expect("job 2");
        while scheduler.credit() < 2 {
            scheduler.recv().await.expect("recv").expect("message");
        }
        scheduler
            .send(&SchedulerToAgent::Shutdown)
            .await
            .expect("shutdown");
        scheduler.wait_closed().await.expect("closed");
        (outcomes, good, scheduler.damaged.clone())
    };
    let (served, (outcomes, good, damaged)) =
        tokio::join!(serve(agent, 2, &handler, never()), script);
    served.expect("serve ends cleanly");
    assert!(
        outcomes.is_empty(),
        "no outcome for a damaged job: {outcomes:?}"
    );
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0].0, JobId(1));
    assert!(damaged[0].1.contains("crc32"), "{}", damaged[0].1);
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].status, Status::Delivered);
    assert_eq!(calls.get(), 1, "the handler saw only the good job");
}
