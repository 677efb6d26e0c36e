//! One message on its way into `incoming/`: streamed to the spool as it
//! is read, checked as it goes, committed durably before the 250.

use skein_smtp_codec::server::{ContentCheck, ContentViolation};
use skein_spool::{Envelope, MessageWriter, Spool, SpoolError};

use crate::policy::Refusal;

/// Why a message will not be accepted. Decided as early as possible;
/// the rest of the text is then read and thrown away, so that the
/// session stays in step with the client.
#[derive(Debug)]
enum Failure {
    /// The client's fault: more than `smtpd.max_message_size`.
    TooBig,
    /// The client's fault: bytes the server does not take.
    Content(ContentViolation),
    /// Ours: the spool failed. The client should retry.
    Spool(SpoolError),
}

/// A message being received.
#[derive(Debug)]
pub struct MessageSink {
    /// `None` once a failure is known: the temporary file is removed (by
    /// the writer's drop) as soon as nothing good can come of it.
    writer: Option<MessageWriter>,
    check: ContentCheck,
    size: u64,
    limit: u64,
    failure: Option<Failure>,
    /// The text so far (the Received field included), kept for content
    /// filters when there are any.
    text: Option<Vec<u8>>,
    /// The queue id.
    id: String,
}

/// What became of a message.
#[derive(Debug)]
pub enum Accepted {
    /// Durably in `incoming/` under this id.
    Queued(String),
    /// Refused with this reply; nothing was queued.
    Refused(Refusal),
}

impl MessageSink {
    /// Starts a message: creates its file in the spool and writes
    /// `prefix` (the Received field) ahead of the text. `prefix` gets the
    /// queue id, which is known only once the file exists.
    pub fn open(
        spool: &Spool,
        envelope: &Envelope,
        max_line: usize,
        limit: u64,
        keep_text: bool,
        prefix: impl FnOnce(&str) -> String,
    ) -> MessageSink {
        let mut sink = MessageSink {
            writer: None,
            check: ContentCheck::new(max_line),
            size: 0,
            limit,
            failure: None,
            text: keep_text.then(Vec::new),
            id: String::new(),
        };
        let opened = spool.create_incoming(envelope).and_then(|mut writer| {
            let field = prefix(writer.id().as_str());
            writer.write_message(field.as_bytes())?;
            Ok((writer, field))
        });
        let opened = opened.map(|(writer, field)| {
            if let Some(text) = &mut sink.text {
                text.extend_from_slice(field.as_bytes());
            }
            sink.id = writer.id().as_str().to_owned();
            writer
        });
        match opened {
            Ok(writer) => sink.writer = Some(writer),
            Err(e) => sink.fail(Failure::Spool(e)),
        }
        sink
    }

    fn fail(&mut self, failure: Failure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
        self.writer = None;
    }

    /// The message's bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The message text so far plus `more` would pass the size limit.
    /// (BDAT announces its size: refuse before reading it.)
    pub fn would_exceed(&self, more: u64) -> bool {
        self.size.saturating_add(more) > self.limit
    }

    /// Marks the message too big without more text (BDAT told us).
    pub fn refuse_size(&mut self) {
        self.fail(Failure::TooBig);
    }

    /// Appends message text. The writes go to the page cache through a
    /// 64 KiB buffer, so they are done in place; only the commit's fsync
    /// is taken off the async threads.
    pub fn write(&mut self, text: &[u8]) {
        self.size = self.size.saturating_add(text.len() as u64);
        if self.failure.is_some() {
            return;
        }
        if self.size > self.limit {
            return self.fail(Failure::TooBig);
        }
        self.check.feed(text);
        if let Some(v) = self.check.violation() {
            return self.fail(Failure::Content(v));
        }
        if let Some(kept) = &mut self.text {
            kept.extend_from_slice(text);
        }
        if let Some(writer) = &mut self.writer
            && let Err(e) = writer.write_message(text)
        {
            self.fail(Failure::Spool(e));
        }
    }

    /// The queue id ("" when the spool could not be written).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole text, kept for the content filters (when asked to, and
    /// only while nothing has failed).
    pub fn take_text(&mut self) -> Option<Vec<u8>> {
        if self.failure.is_some() {
            return None;
        }
        self.text.take()
    }

    /// Replaces the message by what the filters made of it (`quarantine`:
    /// held when routed, for this reason).
    pub fn replace(&mut self, envelope: &Envelope, text: &[u8], quarantine: Option<&str>) {
        if let Some(writer) = &mut self.writer
            && let Err(e) = writer.rewrite(envelope, text, quarantine)
        {
            self.fail(Failure::Spool(e));
        }
    }

    /// The refusal decided so far, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.failure.as_ref().map(|f| match f {
            Failure::TooBig => Refusal::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum message size ({} bytes)",
                    self.limit
                ),
            ),
            Failure::Content(v @ ContentViolation::LineTooLong { .. }) => {
                Refusal::new(500, "5.5.6", format!("Message refused: {v}"))
            }
            Failure::Content(v) => Refusal::new(554, "5.6.0", format!("Message refused: {v}")),
            Failure::Spool(e) => {
                tracing::error!(error = %e, "cannot write to the spool");
                Refusal::new(451, "4.3.0", "Local error in processing; try again later")
            }
        })
    }

    /// Ends the message: a refusal, or the commit (write, fsync file,
    /// rename, fsync directory) and the queue id. Only an `Ok` commit
    /// becomes `Queued`: a 250 is never sent for a message that is not on
    /// stable storage.
    pub async fn finish(mut self) -> Accepted {
        if let Some(v) = self.check.finish()
            && self.failure.is_none()
        {
            self.fail(Failure::Content(v));
        }
        if let Some(refusal) = self.refusal() {
            return Accepted::Refused(refusal);
        }
        let Some(writer) = self.writer.take() else {
            // Unreachable by construction (no writer means a failure was
            // recorded), but a 451 is the safe answer if it ever happens.
            return Accepted::Refused(Refusal::new(451, "4.3.0", "Local error in processing"));
        };
        let committed = tokio::task::spawn_blocking(move || writer.commit()).await;
        match committed {
            Ok(Ok(id)) => Accepted::Queued(id.as_str().to_owned()),
            Ok(Err(e)) => {
                self.fail(Failure::Spool(e));
                match self.refusal() {
                    Some(r) => Accepted::Refused(r),
                    None => Accepted::Refused(Refusal::new(451, "4.3.0", "Local error")),
                }
            }
            Err(join) => {
                tracing::error!(error = %join, "spool commit task failed");
                Accepted::Refused(Refusal::new(451, "4.3.0", "Local error in processing"))
            }
        }
    }
}
