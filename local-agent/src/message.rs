//! Reading a message out of the spool and turning its CRLF line endings
//! into the LF that Maildir readers expect, in bounded chunks: a message
//! is never held whole in memory.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::LocalError;

/// Bytes read from the spool at a time.
const CHUNK: usize = 64 * 1024;

/// The `size` bytes at `offset` of a spool file: one job's message.
#[derive(Debug)]
pub struct MessageSource {
    file: File,
    path: PathBuf,
    offset: u64,
    size: u64,
}

/// Why a copy stopped: the spool side or the mailbox side.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the spool file failed or it ended early.
    Read(LocalError),
    /// Writing the destination failed.
    Write(io::Error),
}

impl MessageSource {
    /// Opens the spool file and checks that it holds the whole message.
    pub fn open(path: &Path, offset: u64, size: u64) -> Result<MessageSource, LocalError> {
        let problem = |problem: String| LocalError::Message {
            path: path.to_path_buf(),
            problem,
        };
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => problem("the spool file does not exist".into()),
            _ => problem(format!("open: {e}")),
        })?;
        let len = file
            .metadata()
            .map_err(|e| problem(format!("stat: {e}")))?
            .len();
        let end = offset.checked_add(size);
        if end.is_none_or(|end| end > len) {
            return Err(problem(format!(
                "the spool file is {len} bytes long, but the job says the message is \
                 {size} bytes at offset {offset}"
            )));
        }
        Ok(MessageSource {
            file,
            path: path.to_path_buf(),
            offset,
            size,
        })
    }

    /// Writes the message to `out` with CRLF turned into LF; returns the
    /// number of bytes written.
    pub fn copy_as_lf(&self, out: &mut impl Write) -> Result<u64, CopyError> {
        self.copy_with_chunk(out, CHUNK)
    }

    fn copy_with_chunk(&self, out: &mut impl Write, chunk: usize) -> Result<u64, CopyError> {
        let mut buffer = vec![0u8; chunk.max(1)];
        let mut converter = CrlfToLf::default();
        let mut converted = Vec::with_capacity(buffer.len() + 1);
        let mut done = 0u64;
        let mut written = 0u64;
        while done < self.size {
            let want = usize::try_from(self.size - done)
                .map_or(buffer.len(), |left| left.min(buffer.len()));
            let n = match self.file.read_at(&mut buffer[..want], self.offset + done) {
                Ok(0) => {
                    return Err(CopyError::Read(LocalError::Message {
                        path: self.path.clone(),
                        problem: format!(
                            "the spool file ended after {done} of the message's {} bytes",
                            self.size
                        ),
                    }));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(CopyError::Read(LocalError::Message {
                        path: self.path.clone(),
                        problem: format!("read: {e}"),
                    }));
                }
            };
            done += n as u64;
            converted.clear();
            converter.push(&buffer[..n], &mut converted);
            out.write_all(&converted).map_err(CopyError::Write)?;
            written += converted.len() as u64;
        }
        converted.clear();
        converter.finish(&mut converted);
        out.write_all(&converted).map_err(CopyError::Write)?;
        written += converted.len() as u64;
        Ok(written)
    }
}

/// Streaming CRLF → LF. A CR not followed by LF is kept as it is: only
/// line endings change, never content.
#[derive(Debug, Default)]
struct CrlfToLf {
    /// The previous chunk ended in a CR whose fate depends on the next
    /// byte.
    pending_cr: bool,
}

impl CrlfToLf {
    fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            if input.first() != Some(&b'\n') {
                out.push(b'\r');
            }
        }
        while let Some(at) = input.iter().position(|&b| b == b'\r') {
            out.extend_from_slice(&input[..at]);
            match input.get(at + 1) {
                Some(b'\n') => input = &input[at + 1..],
                Some(_) => {
                    out.push(b'\r');
                    input = &input[at + 1..];
                }
                None => {
                    self.pending_cr = true;
                    return;
                }
            }
        }
        out.extend_from_slice(input);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = CrlfToLf::default();
        let mut out = Vec::new();
        for chunk in chunks {
            c.push(chunk, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn crlf_becomes_lf_across_any_chunking() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a\r\nb\r\n", b"a\nb\n"),
            (b"\r\n\r\n", b"\n\n"),
            (b"bare\rcr\r\n", b"bare\rcr\n"),
            (b"ends in cr\r", b"ends in cr\r"),
            (b"\r\r\n", b"\r\n"),
            (b"lf only\n", b"lf only\n"),
            (b"\r", b"\r"),
            (b"x\r\r\r\ny", b"x\r\r\ny"),
        ];
        for (input, want) in table {
            assert_eq!(convert(&[input]), *want, "{input:?} whole");
            // Every split point, so that a CRLF cut in two is seen.
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(convert(&[a, b]), *want, "{input:?} cut at {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(convert(&bytes), *want, "{input:?} byte by byte");
        }
    }

    fn spool_file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("msg");
        std::fs::write(&path, content).expect("write");
        (dir, path)
    }

    #[test]
    fn copies_only_the_message_region() {
        let (_dir, path) = spool_file(b"HEADER\nSubject: x\r\n\r\nbody\r\nTRAILER");
        let source = MessageSource::open(&path, 7, 20).expect("open");
        for chunk in [1, 2, 3, 5, 64 * 1024] {
            let mut out = Vec::new();
            let n = source.copy_with_chunk(&mut out, chunk).expect("copy");
            assert_eq!(out, b"Subject: x\n\nbody\n", "chunk {chunk}");
            assert_eq!(n, out.len() as u64);
        }
    }

    #[test]
    fn missing_and_short_files_are_message_errors() {
        let (dir, path) = spool_file(b"0123456789");
        let err = MessageSource::open(&dir.path().join("gone"), 0, 1).expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = MessageSource::open(&path, 5, 6).expect_err("short");
        assert!(err.to_string().contains("10 bytes long"), "{err}");
        let err = MessageSource::open(&path, u64::MAX, 2).expect_err("overflow");
        assert!(matches!(err, LocalError::Message { .. }));
        // Truncated after the check: the copy notices.
        let source = MessageSource::open(&path, 0, 10).expect("whole file");
        std::fs::write(&path, b"01234").expect("truncate");
        match source.copy_as_lf(&mut Vec::new()) {
            Err(CopyError::Read(err)) => {
                assert!(err.to_string().contains("ended after 5"), "{err}");
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }
}
