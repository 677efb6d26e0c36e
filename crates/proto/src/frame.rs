//! Framing, without I/O: a 4-byte big-endian length, then that many bytes
//! of bincode payload.
//!
//! [`FrameDecoder`] takes bytes as they arrive and hands out whole frames;
//! "not enough bytes yet" is `Ok(None)`, never an error. [`encode_frame`]
//! is the inverse. [`decode_payload`] turns one payload into a message and
//! insists that it is consumed exactly.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProtoError, Result};

/// Default maximum payload length of a frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// The largest maximum a codec may be configured with: 64 MiB. Larger
/// settings are clamped to it, so that no configuration can let a peer make
/// us buffer gigabytes.
pub const MAX_FRAME_CEILING: u32 = 64 << 20;

/// Length of the frame header (the big-endian payload length).
pub const HEADER_LEN: usize = 4;

/// The bincode configuration of every payload: little endian, varint
/// integers. The decode side adds a byte limit, see [`decode_payload`].
fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `msg` as one complete frame (header and payload).
///
/// Fails with [`ProtoError::Oversized`] when the payload would exceed
/// `max_frame` (clamped to [`MAX_FRAME_CEILING`]): the caller, not the peer,
/// has something too big to send and may answer with something smaller. A
/// message that encodes to nothing (only possible for types that are not
/// protocol messages, such as `()`) is an [`ProtoError::Encode`] error,
/// because its frame would be malformed.
pub fn encode_frame<T: Serialize>(msg: &T, max_frame: u32) -> Result<Vec<u8>> {
    let max = clamp_max(max_frame);
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&[0; HEADER_LEN]);
    bincode::serde::encode_into_std_write(msg, &mut frame, config())
        .map_err(|e| ProtoError::Encode(e.to_string()))?;
    let len = frame.len() - HEADER_LEN;
    if len == 0 {
        return Err(ProtoError::Encode(
            "message encodes to zero bytes, which is not a valid frame".into(),
        ));
    }
    // `len <= max <= MAX_FRAME_CEILING < u32::MAX`, so the cast below is exact.
    if len > max as usize {
        return Err(ProtoError::Oversized {
            len: len as u64,
            max: u64::from(max),
        });
    }
    frame[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Wraps an already-encoded payload into a frame, checking its size.
pub fn frame_payload(payload: &[u8], max_frame: u32) -> Result<Vec<u8>> {
    let max = clamp_max(max_frame);
    if payload.is_empty() {
        return Err(ProtoError::Encode("empty payload".into()));
    }
    if payload.len() > max as usize {
        return Err(ProtoError::Oversized {
            len: payload.len() as u64,
            max: u64::from(max),
        });
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Decodes one payload as a `T`, requiring that every byte is used.
///
/// bincode allocates a string's buffer from the length written in front of
/// it *before* reading the bytes, so a garbage length could ask for
/// exabytes. The decoder therefore runs with a byte budget (bincode's
/// `with_limit`). bincode charges every integer at its in-memory width — a
/// `u64` that took one byte on the wire costs 8 — so a valid payload of `n`
/// bytes can cost up to `8 n`; the budget is 8 times the payload size,
/// rounded up to a tier (bincode's limit is a compile-time constant). A
/// valid payload therefore always fits, and a garbage length can make us
/// reserve at most 8 × (the tier of) the frame size, 512 MiB of lazily
/// zeroed memory at the very worst with the ceiling frame size, and 128 MiB
/// for the default.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let len = payload.len();
    if len > MAX_FRAME_CEILING as usize {
        return Err(ProtoError::Oversized {
            len: len as u64,
            max: u64::from(MAX_FRAME_CEILING),
        });
    }
    if len <= 4 * KIB {
        decode_limited::<T, { 8 * 4 * KIB }>(payload)
    } else if len <= 256 * KIB {
        decode_limited::<T, { 8 * 256 * KIB }>(payload)
    } else if len <= 16 * MIB {
        decode_limited::<T, { 8 * 16 * MIB }>(payload)
    } else {
        decode_limited::<T, { 8 * MAX_FRAME_CEILING as usize }>(payload)
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(payload: &[u8]) -> Result<T> {
    let cfg = config().with_limit::<LIMIT>();
    let (msg, used) = bincode::serde::decode_from_slice::<T, _>(payload, cfg)
        .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

/// Decodes a prefix of `payload` as a `T` and says how many bytes it used.
/// Only the handshake needs this: it reads `(protocol, version)` before it
/// knows how the rest of a peer's `Hello` is laid out.
pub(crate) fn decode_prefix<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize)> {
    // A prefix is never larger than the payload; the small tier's budget
    // is plenty for a protocol name and a version number.
    let cfg = config().with_limit::<{ 32 << 10 }>();
    bincode::serde::decode_from_slice::<T, _>(payload, cfg)
        .map_err(|e| ProtoError::Malformed(e.to_string()))
}

fn clamp_max(max_frame: u32) -> u32 {
    max_frame.clamp(1, MAX_FRAME_CEILING)
}

/// Splits a byte stream into frames, without doing any I/O.
///
/// Push bytes with [`push`](Self::push) as they arrive, then call
/// [`next_frame`](Self::next_frame) (or [`decode`](Self::decode)) until it
/// says `None`. A length prefix above the maximum or equal to zero is an
/// error as soon as the four header bytes are in, before any of the payload
/// is buffered; the stream cannot be resynchronised after that (the error
/// repeats) and the connection must be dropped. A payload that does not
/// decode is consumed, so the caller may decide to carry on, but the
/// scheduler treats garbage from an agent as fatal.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` before `start` belong to frames already handed out;
    /// they are dropped lazily so that many small frames cost no copying.
    start: usize,
    max_frame: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`DEFAULT_MAX_FRAME`].
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A decoder accepting payloads of at most `max_frame` bytes (clamped to
    /// `1..=`[`MAX_FRAME_CEILING`]).
    pub fn with_max_frame(max_frame: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame: clamp_max(max_frame),
        }
    }

    /// The maximum payload length this decoder accepts.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when part of a frame has been received: an end of stream now
    /// would cut a frame in two. False at a clean frame boundary.
    pub fn is_mid_frame(&self) -> bool {
        self.buffered() > 0
    }

    /// The error to report when the stream ends now, if it ends mid-frame.
    pub fn truncation(&self) -> Option<ProtoError> {
        if !self.is_mid_frame() {
            return None;
        }
        let got = self.buffered() as u64;
        let expected = match self.header() {
            Some(len) => HEADER_LEN as u64 + u64::from(len),
            None => HEADER_LEN as u64,
        };
        Some(ProtoError::Truncated { expected, got })
    }

    /// The next complete frame's payload, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.take_frame()?.map(|range| self.buf[range].to_vec()))
    }

    /// The next complete frame decoded as a `T`, `None` if more bytes are
    /// needed. The frame is consumed even when it does not decode.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.take_frame()? {
            Some(range) => decode_payload(&self.buf[range]).map(Some),
            None => Ok(None),
        }
    }

    /// How many more bytes the current frame needs (at least 1 when the
    /// buffer holds no complete frame). Used by the I/O adapter to size its
    /// reads; the header must already have been validated by `take_frame`.
    pub(crate) fn bytes_wanted(&self) -> usize {
        match self.header() {
            Some(len) => (HEADER_LEN + len as usize).saturating_sub(self.buffered()),
            None => HEADER_LEN - self.buffered(),
        }
    }

    /// The buffer the I/O adapter reads into, with room for `additional`
    /// more bytes. Only appending is allowed.
    pub(crate) fn read_buffer(&mut self, additional: usize) -> &mut Vec<u8> {
        self.compact();
        self.buf.reserve(additional);
        &mut self.buf
    }

    /// The payload length announced by the buffered header, if complete.
    fn header(&self) -> Option<u32> {
        let head = self.buf.get(self.start..self.start + HEADER_LEN)?;
        let bytes: [u8; HEADER_LEN] = head.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }

    /// Validates the header and, if the whole frame is buffered, consumes
    /// it and returns where its payload lies in `buf`.
    fn take_frame(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        let Some(len) = self.header() else {
            return Ok(None);
        };
        if len == 0 {
            return Err(ProtoError::EmptyFrame);
        }
        if len > self.max_frame {
            return Err(ProtoError::Oversized {
                len: u64::from(len),
                max: u64::from(self.max_frame),
            });
        }
        let payload_start = self.start + HEADER_LEN;
        let end = payload_start + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        self.start = end;
        Ok(Some(payload_start..end))
    }

    /// Drops consumed bytes once they are at least half the buffer, so
    /// that the copying is amortised over the frames handed out.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn splits_frames_at_every_split_point() {
        let msgs: Vec<String> = vec!["a".into(), String::new(), "ünïcödé".into(), "x".repeat(300)];
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend(encode_frame(m, DEFAULT_MAX_FRAME).unwrap());
        }
        for split in 0..=stream.len() {
            let mut dec = FrameDecoder::new();
            let mut got: Vec<String> = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                dec.push(chunk);
                while let Some(m) = dec.decode::<String>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "split at {split}");
            assert!(!dec.is_mid_frame());
        }
    }

    #[test]
    fn header_errors_come_before_the_payload() {
        // (bytes, max, expected error) — the payload is never pushed, so an
        // error here proves the check happens on the header alone.
        let table: &[(&[u8], u32, &str)] = &[
            (&[0, 0, 0, 0], 16, "malformed frame: zero length"),
            (
                &[0, 0, 0, 17],
                16,
                "frame of 17 bytes exceeds the maximum of 16 bytes",
            ),
            (
                &[0xff, 0xff, 0xff, 0xff],
                DEFAULT_MAX_FRAME,
                "frame of 4294967295 bytes exceeds the maximum of 16777216 bytes",
            ),
        ];
        for (bytes, max, want) in table {
            let mut dec = FrameDecoder::with_max_frame(*max);
            dec.push(bytes);
            let err = dec.next_frame().unwrap_err();
            assert_eq!(err.to_string(), *want);
            assert!(dec.buf.capacity() < 1024, "payload space was allocated");
            // The error is sticky: there is no way to resynchronise.
            assert!(dec.next_frame().is_err());
        }
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut dec = FrameDecoder::with_max_frame(3);
        dec.push(&frame(b"abc"));
        assert_eq!(dec.next_frame().unwrap().unwrap(), b"abc");
    }

    #[test]
    fn truncation_reports_sizes() {
        /// Bytes received, then `(expected, got)` if that is a truncation.
        type Case = (&'static [u8], Option<(u64, u64)>);
        let table: &[Case] = &[
            (&[], None),
            (&[0, 0], Some((4, 2))),
            (&[0, 0, 0, 5, 1, 2], Some((9, 6))),
        ];
        for (bytes, want) in table {
            let mut dec = FrameDecoder::new();
            dec.push(bytes);
            assert_eq!(dec.next_frame().unwrap(), None);
            let got = dec.truncation().map(|e| match e {
                ProtoError::Truncated { expected, got } => (expected, got),
                other => panic!("unexpected {other}"),
            });
            assert_eq!(got, *want);
            assert_eq!(dec.is_mid_frame(), want.is_some());
        }
    }

    #[test]
    fn payload_errors() {
        // (payload, what the error must mention)
        let table: &[(&[u8], &str)] = &[
            // "hi" followed by a stray byte
            (&[2, b'h', b'i', 0], "1 trailing bytes"),
            // length 3 but only 2 bytes
            (&[3, b'h', b'i'], "malformed"),
            // invalid UTF-8
            (&[2, 0xff, 0xfe], "malformed"),
        ];
        for (payload, want) in table {
            let err = decode_payload::<String>(payload).unwrap_err();
            assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn a_string_claiming_2_pow_60_bytes_is_refused_without_allocating() {
        // varint: 253 then u64 little endian.
        let mut payload = vec![253];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        payload.extend_from_slice(b"tiny");
        let err = decode_payload::<String>(&payload).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
    }

    #[test]
    fn dense_payloads_fit_the_decode_budget() {
        // One byte per u64 on the wire, eight bytes each in bincode's
        // accounting: a budget equal to the frame size would refuse this.
        for n in [100usize, 4000, 5000, 300_000] {
            let v: Vec<u64> = (0..n as u64).map(|i| i % 200).collect();
            let f = encode_frame(&v, DEFAULT_MAX_FRAME).unwrap();
            let back: Vec<u64> = decode_payload(&f[HEADER_LEN..]).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn encoding_checks_size() {
        assert!(matches!(
            encode_frame(&"x".repeat(100), 50),
            Err(ProtoError::Oversized { len: 101, max: 50 })
        ));
        assert!(matches!(
            encode_frame(&(), DEFAULT_MAX_FRAME),
            Err(ProtoError::Encode(_))
        ));
        assert!(matches!(
            frame_payload(&[], DEFAULT_MAX_FRAME),
            Err(ProtoError::Encode(_))
        ));
        assert_eq!(frame_payload(b"ab", 2).unwrap(), frame(b"ab"));
    }

    #[test]
    fn max_is_clamped() {
        let table = [
            (0, 1),
            (1, 1),
            (DEFAULT_MAX_FRAME, DEFAULT_MAX_FRAME),
            (u32::MAX, MAX_FRAME_CEILING),
        ];
        for (asked, got) in table {
            assert_eq!(FrameDecoder::with_max_frame(asked).max_frame(), got);
        }
    }

    #[test]
    fn many_small_frames_do_not_grow_the_buffer() {
        let f = encode_frame(&7u32, DEFAULT_MAX_FRAME).unwrap();
        let mut dec = FrameDecoder::new();
        for _ in 0..10_000 {
            dec.push(&f);
            dec.push(&f[..2]);
            assert_eq!(dec.decode::<u32>().unwrap(), Some(7));
            dec.push(&f[2..]);
            assert_eq!(dec.decode::<u32>().unwrap(), Some(7));
        }
        assert!(dec.buf.capacity() < 1024);
    }
}
