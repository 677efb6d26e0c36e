//! The handshake over real Unix socket pairs, both sides at once.

use skein_proto::*;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

fn scheduler_hello() -> Hello {
    Hello::new(Role::Scheduler, "skein-scheduler 0.1.0")
}

fn agent_hello(channel: &str) -> Hello {
    Hello::new(
        Role::Agent {
            channel: channel.into(),
        },
        "skein-smtp 0.1.0",
    )
}

/// The scheduler's check for an agent it started for `channel`.
fn expect_agent(channel: &'static str) -> impl FnOnce(&Hello) -> Result<(), String> {
    move |peer| match &peer.role {
        Role::Agent { channel: c } if c == channel => Ok(()),
        other => Err(format!(
            "expected agent for channel {channel:?}, got {other}"
        )),
    }
}

fn pair() -> (Framed<UnixStream>, Framed<UnixStream>) {
    let (a, b) = UnixStream::pair().unwrap();
    (Framed::new(a), Framed::new(b))
}

#[tokio::test]
async fn success_then_conversation_over_split_halves() {
    let (mut sched, mut agent) = pair();
    let listener = tokio::spawn(async move {
        let peer = handshake_as_listener(&mut sched, &scheduler_hello(), expect_agent("smtp"))
            .await
            .unwrap();
        (peer, sched)
    });
    let peer = handshake_as_connector(&mut agent, &agent_hello("smtp"))
        .await
        .unwrap();
    assert_eq!(peer, scheduler_hello());
    let (seen, sched) = listener.await.unwrap();
    assert_eq!(seen, agent_hello("smtp"));

    // After the handshake, split the scheduler's side: one task reads, the
    // other writes.
    let (mut from_agent, mut to_agent) = sched.into_split();
    to_agent.send(&SchedulerToAgent::Shutdown).await.unwrap();
    assert_eq!(
        agent.recv::<SchedulerToAgent>().await.unwrap(),
        Some(SchedulerToAgent::Shutdown)
    );
    agent
        .send(&AgentToScheduler::Idle { connected_to: None })
        .await
        .unwrap();
    assert_eq!(
        from_agent.recv::<AgentToScheduler>().await.unwrap(),
        Some(AgentToScheduler::Idle { connected_to: None })
    );
    drop(agent);
    assert_eq!(from_agent.recv::<AgentToScheduler>().await.unwrap(), None);
}

#[tokio::test]
async fn bytes_sent_right_after_the_handshake_are_not_lost() {
    // A listener that writes `Accepted` and the first job in one burst:
    // the connector's handshake reads both, and the job must still be in
    // the framed buffer afterwards.
    let (mut fake_sched, mut agent) = pair();
    let listener = tokio::spawn(async move {
        fake_sched.send(&scheduler_hello()).await.unwrap();
        fake_sched.recv_payload().await.unwrap().unwrap();
        let mut burst = encode_frame(&HandshakeReply::Accepted, DEFAULT_MAX_FRAME).unwrap();
        burst.extend(
            encode_frame(
                &SchedulerToAgent::Cancel { job: JobId(3) },
                DEFAULT_MAX_FRAME,
            )
            .unwrap(),
        );
        let (mut stream, _) = fake_sched.into_parts();
        stream.write_all(&burst).await.unwrap();
        stream
    });
    handshake_as_connector(&mut agent, &agent_hello("local"))
        .await
        .unwrap();
    let _stream = listener.await.unwrap();
    assert_eq!(
        agent.recv::<SchedulerToAgent>().await.unwrap(),
        Some(SchedulerToAgent::Cancel { job: JobId(3) })
    );
}

/// A hand-crafted peer of protocol version 3 whose `Hello` has an extra
/// trailing field: both sides must name both versions.
fn future_hello_payload(role_tag: u8) -> Vec<u8> {
    let mut p = vec![0x05];
    p.extend_from_slice(b"skein");
    p.push(0x03); // version 3
    p.push(role_tag);
    p.extend_from_slice(&[0x04]);
    p.extend_from_slice(b"smtp"); // channel, if role is Agent
    p.push(0x03);
    p.extend_from_slice(b"new"); // program
    p.extend_from_slice(&[0xfb, 0x10, 0x27]); // an extra field added in v3
    p
}

#[tokio::test]
async fn version_mismatch_with_a_future_scheduler() {
    let (mut fake_sched, mut agent) = pair();
    let fake = tokio::spawn(async move {
        fake_sched
            .send_payload(&future_hello_payload(0))
            .await
            .unwrap();
        // The v1 agent still introduces itself, so that a v2 scheduler can
        // log who it is and what it speaks.
        let payload = fake_sched.recv_payload().await.unwrap().unwrap();
        decode_hello(&payload).unwrap()
    });
    let err = handshake_as_connector(&mut agent, &agent_hello("smtp"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::VersionMismatch { ours: 2, theirs: 3 }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "protocol version mismatch: we speak skein/2, peer speaks skein/3"
    );
    let agent_said = fake.await.unwrap();
    assert_eq!(agent_said.version, 2);
}

#[tokio::test]
async fn version_mismatch_with_a_future_agent() {
    let (mut sched, mut fake_agent) = pair();
    let listener = tokio::spawn(async move {
        handshake_as_listener(&mut sched, &scheduler_hello(), expect_agent("smtp")).await
    });
    // The fake v2 agent reads the scheduler's Hello, answers with its own,
    // and reads the frozen HandshakeReply.
    let payload = fake_agent.recv_payload().await.unwrap().unwrap();
    assert_eq!(decode_hello(&payload).unwrap().version, 2);
    fake_agent
        .send_payload(&future_hello_payload(1))
        .await
        .unwrap();
    let reply = fake_agent.recv::<HandshakeReply>().await.unwrap().unwrap();

    let sched_err = listener.await.unwrap().unwrap_err();
    assert_eq!(
        sched_err.to_string(),
        "protocol version mismatch: we speak skein/2, peer speaks skein/3"
    );
    let agent_err = reply.into_result().unwrap_err();
    assert_eq!(
        agent_err.to_string(),
        "handshake refused by peer: protocol version mismatch: we speak skein/2, you speak skein/3"
    );
}

#[tokio::test]
async fn wrong_protocol_name() {
    let (mut fake_sched, mut agent) = pair();
    let fake = tokio::spawn(async move {
        let mut p = vec![0x04];
        p.extend_from_slice(b"lmtp");
        p.extend_from_slice(&[0x01, 0x00, 0x00]);
        fake_sched.send_payload(&p).await.unwrap();
        fake_sched.recv_payload().await.unwrap()
    });
    let err = handshake_as_connector(&mut agent, &agent_hello("smtp"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "wrong protocol: we speak \"skein\", peer speaks \"lmtp\""
    );
    assert!(fake.await.unwrap().is_some());

    // And the listener's side of it.
    let (mut sched, mut fake_agent) = pair();
    let listener = tokio::spawn(async move {
        handshake_as_listener(&mut sched, &scheduler_hello(), |_| Ok(())).await
    });
    fake_agent.recv_payload().await.unwrap();
    let mut p = vec![0x04];
    p.extend_from_slice(b"lmtp");
    p.extend_from_slice(&[0x01, 0x03, 0x00]);
    fake_agent.send_payload(&p).await.unwrap();
    let reply = fake_agent.recv::<HandshakeReply>().await.unwrap().unwrap();
    assert!(matches!(reply, HandshakeReply::Refused { .. }));
    assert!(matches!(
        listener.await.unwrap(),
        Err(ProtoError::WrongProtocol { .. })
    ));
}

#[tokio::test]
async fn refused_channel() {
    let (mut sched, mut agent) = pair();
    let listener = tokio::spawn(async move {
        handshake_as_listener(&mut sched, &scheduler_hello(), expect_agent("smtp")).await
    });
    let err = handshake_as_connector(&mut agent, &agent_hello("local"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "handshake refused by peer: expected agent for channel \"smtp\", got agent for channel \"local\""
    );
    let sched_err = listener.await.unwrap().unwrap_err();
    assert!(
        matches!(sched_err, ProtoError::UnexpectedRole(_)),
        "{sched_err}"
    );
}

#[tokio::test]
async fn a_connector_refuses_a_listener_that_is_not_the_scheduler() {
    let (mut fake, mut agent) = pair();
    tokio::spawn(async move {
        fake.send(&Hello::new(Role::Tool, "impostor"))
            .await
            .unwrap();
        // Keep the connection open until the agent gives up.
        let _ = fake.recv_payload().await;
    });
    let err = handshake_as_connector(&mut agent, &agent_hello("smtp"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtoError::UnexpectedRole(_)), "{err}");
}

#[tokio::test]
async fn peer_closing_during_the_handshake() {
    let (sched, mut agent) = pair();
    drop(sched);
    let err = handshake_as_connector(&mut agent, &agent_hello("smtp"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("during the handshake"), "{err}");

    let (mut sched, agent) = pair();
    let listener = tokio::spawn(async move {
        handshake_as_listener(&mut sched, &scheduler_hello(), |_| Ok(())).await
    });
    // Read nothing, say nothing: just go.
    drop(agent);
    let err = listener.await.unwrap().unwrap_err();
    // Either our Hello could not be written or the EOF was seen first.
    assert!(matches!(err, ProtoError::Io(_)), "{err}");
}
