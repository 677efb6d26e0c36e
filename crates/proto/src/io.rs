//! The thin tokio adapter over [`FrameDecoder`] and [`encode_frame`].
//!
//! Receiving is cancel-safe: a `recv` dropped in a `select!` loses no bytes,
//! because bytes go straight from the socket into the decoder's buffer and
//! decoding has no await point. Sending is not: a dropped `send` may leave
//! half a frame on the wire, after which the connection must be dropped.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::Result;
use crate::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode_frame, frame_payload};

/// Smallest read we ask the kernel for: frames are usually small and come
/// in bursts (overfeed), so one read should catch several.
const MIN_READ: usize = 8 << 10;

/// Reads frames from a byte stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader accepting frames up to [`DEFAULT_MAX_FRAME`].
    pub fn new(io: R) -> Self {
        Self::with_max_frame(io, DEFAULT_MAX_FRAME)
    }

    /// A reader accepting payloads up to `max_frame` bytes (clamped as
    /// [`FrameDecoder::with_max_frame`] does).
    pub fn with_max_frame(io: R, max_frame: u32) -> Self {
        FrameReader {
            io,
            decoder: FrameDecoder::with_max_frame(max_frame),
        }
    }

    /// The next message. `Ok(None)` when the peer closed the stream at a
    /// frame boundary; [`ProtoError::Truncated`](crate::ProtoError::Truncated)
    /// when it closed in the middle of one.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(msg) = self.decoder.decode::<T>()? {
                return Ok(Some(msg));
            }
            if !fill(&mut self.io, &mut self.decoder).await? {
                return end_of_stream(&self.decoder);
            }
        }
    }

    /// The next frame's payload, undecoded; end of stream as for
    /// [`recv`](Self::recv).
    pub async fn recv_payload(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(Some(payload));
            }
            if !fill(&mut self.io, &mut self.decoder).await? {
                return end_of_stream(&self.decoder);
            }
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.io
    }

    /// The stream and the decoder holding any bytes read past the last
    /// frame returned.
    pub fn into_parts(self) -> (R, FrameDecoder) {
        (self.io, self.decoder)
    }
}

/// Writes frames to a byte stream.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    max_frame: u32,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer refusing to send payloads above [`DEFAULT_MAX_FRAME`].
    pub fn new(io: W) -> Self {
        Self::with_max_frame(io, DEFAULT_MAX_FRAME)
    }

    /// A writer refusing to send payloads above `max_frame` bytes.
    pub fn with_max_frame(io: W, max_frame: u32) -> Self {
        FrameWriter { io, max_frame }
    }

    /// Encodes `msg`, writes its frame and flushes. A message too large for
    /// the frame maximum is refused before anything is written, so the
    /// connection stays usable.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        let frame = encode_frame(msg, self.max_frame)?;
        write_frame(&mut self.io, &frame).await
    }

    /// Writes an already-encoded payload as one frame and flushes.
    pub async fn send_payload(&mut self, payload: &[u8]) -> Result<()> {
        let frame = frame_payload(payload, self.max_frame)?;
        write_frame(&mut self.io, &frame).await
    }

    /// Shuts the write direction down: the peer reads a clean end of stream.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.io.shutdown().await?;
        Ok(())
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &W {
        &self.io
    }

    /// The underlying stream.
    pub fn into_inner(self) -> W {
        self.io
    }
}

/// Reads and writes frames on one bidirectional stream.
#[derive(Debug)]
pub struct Framed<S> {
    io: S,
    decoder: FrameDecoder,
    max_frame: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Frames of at most [`DEFAULT_MAX_FRAME`] in both directions.
    pub fn new(io: S) -> Self {
        Self::with_max_frame(io, DEFAULT_MAX_FRAME)
    }

    /// Frames of at most `max_frame` bytes in both directions.
    pub fn with_max_frame(io: S, max_frame: u32) -> Self {
        let decoder = FrameDecoder::with_max_frame(max_frame);
        let max_frame = decoder.max_frame();
        Framed {
            io,
            decoder,
            max_frame,
        }
    }

    /// The next message; see [`FrameReader::recv`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(msg) = self.decoder.decode::<T>()? {
                return Ok(Some(msg));
            }
            if !fill(&mut self.io, &mut self.decoder).await? {
                return end_of_stream(&self.decoder);
            }
        }
    }

    /// The next frame's payload, undecoded; see [`FrameReader::recv`].
    pub async fn recv_payload(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(payload) = self.decoder.next_frame()? {
                return Ok(Some(payload));
            }
            if !fill(&mut self.io, &mut self.decoder).await? {
                return end_of_stream(&self.decoder);
            }
        }
    }

    /// Encodes and sends `msg`; see [`FrameWriter::send`].
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        let frame = encode_frame(msg, self.max_frame)?;
        write_frame(&mut self.io, &frame).await
    }

    /// Sends an already-encoded payload; see [`FrameWriter::send_payload`].
    pub async fn send_payload(&mut self, payload: &[u8]) -> Result<()> {
        let frame = frame_payload(payload, self.max_frame)?;
        write_frame(&mut self.io, &frame).await
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream and the decoder holding any bytes read past the last
    /// frame returned (after the handshake there may already be a job in
    /// it).
    pub fn into_parts(self) -> (S, FrameDecoder) {
        (self.io, self.decoder)
    }
}

impl Framed<UnixStream> {
    /// Splits the connection so that one task can read while another
    /// writes (the scheduler reads an agent's outcomes and feeds it jobs
    /// independently). Bytes already buffered stay with the reader.
    pub fn into_split(self) -> (FrameReader<OwnedReadHalf>, FrameWriter<OwnedWriteHalf>) {
        let (read, write) = self.io.into_split();
        (
            FrameReader {
                io: read,
                decoder: self.decoder,
            },
            FrameWriter {
                io: write,
                max_frame: self.max_frame,
            },
        )
    }
}

/// Reads once into the decoder; false at end of stream.
async fn fill<R: AsyncRead + Unpin>(io: &mut R, decoder: &mut FrameDecoder) -> Result<bool> {
    // The decoder has validated any complete header it holds, so
    // `bytes_wanted` is bounded by the frame maximum: reserving it whole
    // spares a large frame a series of reallocations.
    let want = decoder.bytes_wanted().max(MIN_READ);
    let n = io.read_buf(decoder.read_buffer(want)).await?;
    Ok(n > 0)
}

fn end_of_stream<T>(decoder: &FrameDecoder) -> Result<Option<T>> {
    match decoder.truncation() {
        Some(err) => Err(err),
        None => Ok(None),
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, frame: &[u8]) -> Result<()> {
    io.write_all(frame).await?;
    io.flush().await?;
    Ok(())
}
