//! Fuzz target: arbitrary bytes, cut at arbitrary points, fed to a
//! `FrameDecoder`; every frame that comes out is decoded as every message
//! type of the protocol. Nothing may panic, and whatever decodes must
//! survive a round trip: re-encoding gives a payload no longer than the
//! input (decoders accept non-minimal varints, encoders write minimal
//! ones) that decodes to the same message.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use skein_proto::{
    AgentToScheduler, ControlRequest, ControlResponse, DEFAULT_MAX_FRAME, FrameDecoder, HEADER_LEN,
    HandshakeReply, MAX_FRAME_CEILING, SchedulerToAgent, decode_hello, decode_payload,
    encode_frame,
};

fuzz_target!(|data: &[u8]| {
    // The first four bytes steer the run: the frame maximum and the seed of
    // the split points. The rest is the stream.
    let Some((control, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let seed = u32::from_le_bytes(*control);
    // A small maximum makes oversized headers easy to reach.
    let max = if seed & 1 == 0 { DEFAULT_MAX_FRAME } else { 64 };
    let mut decoder = FrameDecoder::with_max_frame(max);
    let mut splits = XorShift(u64::from(seed) | 1);
    let mut rest = stream;
    while !rest.is_empty() {
        let n = ((splits.next() % 33) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    assert!(!payload.is_empty() && payload.len() <= max as usize);
                    decode_as_everything(&payload);
                }
                Ok(None) => break,
                // A bad header is final: the stream cannot be resynchronised.
                Err(_) => {
                    assert!(decoder.next_frame().is_err(), "header errors must stick");
                    return;
                }
            }
        }
    }
    // The end of the stream: truncated exactly when bytes are left over.
    assert_eq!(decoder.truncation().is_some(), decoder.is_mid_frame());
});

fn decode_as_everything(payload: &[u8]) {
    round_trip::<SchedulerToAgent>(payload);
    round_trip::<AgentToScheduler>(payload);
    round_trip::<ControlRequest>(payload);
    round_trip::<ControlResponse>(payload);
    round_trip::<HandshakeReply>(payload);
    if let Ok(hello) = decode_hello(payload) {
        check_re_encoding(payload, &hello, decode_hello);
    }
    // Feeding the payload through a decoder of its own must agree.
    let mut inner = FrameDecoder::new();
    let frame = [&(payload.len() as u32).to_be_bytes()[..], payload].concat();
    inner.push(&frame);
    let direct = decode_payload::<SchedulerToAgent>(payload).ok();
    assert_eq!(inner.decode::<SchedulerToAgent>().ok().flatten(), direct);
}

fn round_trip<T>(payload: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(msg) = decode_payload::<T>(payload) {
        check_re_encoding(payload, &msg, decode_payload::<T>);
    }
}

fn check_re_encoding<T, F>(payload: &[u8], msg: &T, decode: F)
where
    T: Serialize + PartialEq + Debug,
    F: Fn(&[u8]) -> skein_proto::Result<T>,
{
    let frame = encode_frame(msg, MAX_FRAME_CEILING).expect("a decoded message re-encodes");
    let again = &frame[HEADER_LEN..];
    assert!(again.len() <= payload.len(), "re-encoding grew: {msg:?}");
    assert_eq!(&decode(again).expect("a re-encoded message decodes"), msg);
}

/// The split points: cheap, deterministic for a given input.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
