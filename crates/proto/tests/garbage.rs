//! What a misbehaving peer can send, and what it gets: an error, never a
//! panic, never a large allocation.

use skein_proto::*;
use tokio::io::AsyncWriteExt;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A small deterministic generator, so that the test is reproducible
/// without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn decode_all_kinds(payload: &[u8]) -> [bool; 6] {
    [
        decode_hello(payload).is_ok(),
        decode_payload::<HandshakeReply>(payload).is_ok(),
        decode_payload::<SchedulerToAgent>(payload).is_ok(),
        decode_payload::<AgentToScheduler>(payload).is_ok(),
        decode_payload::<ControlRequest>(payload).is_ok(),
        decode_payload::<ControlResponse>(payload).is_ok(),
    ]
}

#[test]
fn random_payloads_are_errors_not_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let len = (rng.next() % 64) as usize + 1;
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        decoded += decode_all_kinds(&payload).iter().filter(|ok| **ok).count();
    }
    // Short random payloads do sometimes decode (`[0x01]` is
    // `SchedulerToAgent::Shutdown`); what matters is that nothing panicked.
    assert!(decoded < 20_000 * 6);
}

#[test]
fn invalid_enum_tag() {
    let table: &[(&[u8], &str)] = &[
        // SchedulerToAgent has 3 variants.
        (&[0x03], "SchedulerToAgent"),
        // A tag beyond u32 (varint u64 marker).
        (&[0xfd, 0, 0, 0, 0, 1, 0, 0, 0], "SchedulerToAgent"),
    ];
    for (payload, what) in table {
        let err = decode_payload::<SchedulerToAgent>(payload).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)), "{what}: {err}");
    }
    // AgentToScheduler has 4, ControlRequest 10, ControlResponse 6.
    assert!(decode_payload::<AgentToScheduler>(&[0x04]).is_err());
    assert!(decode_payload::<ControlRequest>(&[0x0a]).is_err());
    assert!(decode_payload::<ControlResponse>(&[0x06]).is_err());
    // A bool that is neither 0 nor 1 (Notify.never).
    assert!(decode_payload::<Notify>(&[2, 0, 1, 1]).is_err());
}

#[test]
fn trailing_bytes_after_a_valid_message() {
    let mut payload = encode_frame(&SchedulerToAgent::Shutdown, DEFAULT_MAX_FRAME).unwrap()
        [HEADER_LEN..]
        .to_vec();
    assert_eq!(payload, [0x01]);
    payload.push(0x00);
    let err = decode_payload::<SchedulerToAgent>(&payload).unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed message: 1 trailing bytes after the message"
    );
}

#[test]
fn string_length_of_2_pow_60() {
    // ControlRequest::Show { queue_id } with a queue id claiming 2^60
    // bytes: varint 253 then u64 LE. Without the decode budget bincode
    // would try to allocate that much before noticing the payload is short.
    let mut payload = vec![0x04, 253];
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    payload.extend_from_slice(b"abc");
    let mut dec = FrameDecoder::new();
    dec.push(&frame(&payload));
    let err = dec.decode::<ControlRequest>().unwrap_err();
    assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
    // The bad frame was consumed; the stream is at a boundary.
    assert!(!dec.is_mid_frame());
}

#[test]
fn vec_length_of_2_pow_60() {
    // ControlResponse::Queue with 2^60 summaries announced.
    let mut payload = vec![0x02, 253];
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let err = decode_payload::<ControlResponse>(&payload).unwrap_err();
    assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_on_the_header() {
    let (mut peer, ours) = tokio::io::duplex(64);
    let mut reader = FrameReader::with_max_frame(ours, 1024);
    // Announce 1 GiB, send nothing more and keep the stream open: if the
    // reader waited for the payload this would hang.
    peer.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let err = reader.recv::<ControlRequest>().await.unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::Oversized {
                len: 1_073_741_824,
                max: 1024
            }
        ),
        "{err}"
    );
    drop(peer);
}

#[tokio::test]
async fn zero_length_frame() {
    let (mut peer, ours) = tokio::io::duplex(64);
    let mut reader = FrameReader::new(ours);
    peer.write_all(&[0, 0, 0, 0]).await.unwrap();
    let err = reader.recv::<ControlRequest>().await.unwrap_err();
    assert!(matches!(err, ProtoError::EmptyFrame), "{err}");
}

#[tokio::test]
async fn truncated_frame_is_an_error_and_clean_eof_is_not() {
    let msg = AgentToScheduler::JobDone { job: JobId(9) };
    let whole = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
    // Cut inside the header, right after it, and inside the payload.
    for cut in [1, HEADER_LEN, whole.len() - 1] {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(ours);
        peer.write_all(&whole).await.unwrap();
        peer.write_all(&whole[..cut]).await.unwrap();
        drop(peer);
        assert_eq!(
            reader.recv::<AgentToScheduler>().await.unwrap(),
            Some(msg.clone())
        );
        let err = reader.recv::<AgentToScheduler>().await.unwrap_err();
        let expected = if cut < HEADER_LEN {
            HEADER_LEN
        } else {
            whole.len()
        } as u64;
        assert!(
            matches!(err, ProtoError::Truncated { expected: e, got } if e == expected && got == cut as u64),
            "cut {cut}: {err}"
        );
    }

    let (mut peer, ours) = tokio::io::duplex(64);
    let mut reader = FrameReader::new(ours);
    peer.write_all(&whole).await.unwrap();
    drop(peer);
    assert_eq!(reader.recv::<AgentToScheduler>().await.unwrap(), Some(msg));
    assert_eq!(reader.recv::<AgentToScheduler>().await.unwrap(), None);
}

#[tokio::test]
async fn garbage_payload_then_the_stream_goes_on() {
    // The decoder consumes a frame that fails to decode: the caller decides
    // whether to carry on. Here it does, and the next frame is intact.
    let (mut peer, ours) = tokio::io::duplex(256);
    let mut reader = FrameReader::new(ours);
    peer.write_all(&frame(&[0x63, 0x63])).await.unwrap();
    peer.write_all(&encode_frame(&ControlRequest::Status, DEFAULT_MAX_FRAME).unwrap())
        .await
        .unwrap();
    drop(peer);
    assert!(matches!(
        reader.recv::<ControlRequest>().await,
        Err(ProtoError::Malformed(_))
    ));
    assert_eq!(
        reader.recv::<ControlRequest>().await.unwrap(),
        Some(ControlRequest::Status)
    );
}

#[tokio::test]
async fn a_large_frame_through_a_small_pipe() {
    // A frame much larger than the pipe and than one read, written by
    // another task: the reader must reassemble it across many reads.
    let (peer, ours) = tokio::io::duplex(1000);
    let big = ControlResponse::Ok {
        message: "ü".repeat(300_000),
    };
    let sent = big.clone();
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(peer);
        w.send(&sent).await.unwrap();
        w.send(&ControlResponse::Queue(vec![])).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut reader = FrameReader::new(ours);
    assert_eq!(reader.recv::<ControlResponse>().await.unwrap(), Some(big));
    assert_eq!(
        reader.recv::<ControlResponse>().await.unwrap(),
        Some(ControlResponse::Queue(vec![]))
    );
    assert_eq!(reader.recv::<ControlResponse>().await.unwrap(), None);
    writer.await.unwrap();
}

#[tokio::test]
async fn sending_too_large_a_message_leaves_the_connection_usable() {
    let (peer, ours) = tokio::io::duplex(256);
    let mut w = FrameWriter::with_max_frame(ours, 16);
    let err = w
        .send(&ControlResponse::Ok {
            message: "x".repeat(100),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProtoError::Oversized { max: 16, .. }),
        "{err}"
    );
    w.send(&ControlRequest::ListQueue).await.unwrap();
    drop(w);
    let mut r = FrameReader::new(peer);
    assert_eq!(
        r.recv::<ControlRequest>().await.unwrap(),
        Some(ControlRequest::ListQueue)
    );
}
