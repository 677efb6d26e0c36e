//! Message intake: DATA and BDAT text received into the spool as it
//! comes ([`MessageSink`], which applies `smtpd.max_message_size` and
//! `smtpd.max_line_length` to the text and commits it durably), and the
//! end of data — the reply that says whether the message is queued.
//!
//! The text is always read to its end, even when the message is already
//! refused, so that the session stays in step with the client.

use skein_smtp_codec::DataDecoder;
use skein_spool::{Envelope, Wakeable};

use super::{Client, Flow, Phase, READ_CHUNK, Session, Transaction, Wait};
use crate::error::SessionEnd;
use crate::policy::Refusal;
use crate::received::Trace;
use crate::sink::{Accepted, MessageSink};
use crate::stats::MilterVerdict;

impl Session {
    /// Why a transaction cannot take message text now, if it cannot.
    fn not_ready_for_text(phase: &Phase) -> Option<Refusal> {
        match phase {
            Phase::Fresh => Some(Refusal::new(503, "5.5.1", "Send EHLO or HELO first")),
            Phase::Ready(_) => Some(Refusal::new(503, "5.5.1", "Need MAIL command")),
            Phase::Mail(_, tx) if tx.recipients.is_empty() && tx.rcpt_attempts > 0 => {
                Some(Refusal::new(554, "5.5.1", "No valid recipients"))
            }
            Phase::Mail(_, tx) if tx.recipients.is_empty() => {
                Some(Refusal::new(503, "5.5.1", "Need RCPT command"))
            }
            Phase::Mail(..) => None,
        }
    }

    /// DATA: `354`, then the text up to the lone dot, un-stuffed into
    /// the sink as it comes.
    pub(super) async fn data(&mut self, phase: Phase) -> (Phase, Flow) {
        let refusal = match &phase {
            Phase::Mail(_, tx) if tx.chunks.is_some() => {
                Some(Refusal::new(503, "5.5.1", "DATA after BDAT"))
            }
            other => Self::not_ready_for_text(other),
        };
        if let Some(r) = refusal {
            return (phase, self.refuse(r));
        }
        let Phase::Mail(client, tx) = phase else {
            return (phase, Flow::Continue);
        };
        self.push(354, None, "End data with <CR><LF>.<CR><LF>");
        let mut sink = self.open_sink(&client, &tx);
        let mut decoder = DataDecoder::new();
        let mut text = Vec::with_capacity(READ_CHUNK);
        loop {
            text.clear();
            let available = &self.input[self.pos..];
            let end = decoder.decode(available, &mut text);
            self.pos += end.unwrap_or(available.len());
            sink.write(&text);
            if end.is_some() {
                break;
            }
            if let Err(end) = self.need_more(Wait::Text).await {
                // The sink is dropped here: its temporary file goes.
                return (Phase::Ready(client), Flow::Close(end));
            }
        }
        let flow = self.finish_message(sink, &tx, &client).await;
        (Phase::Ready(client), flow)
    }

    /// BDAT: a chunk of `size` bytes, appended to the transaction's
    /// message; with LAST, the message ends.
    pub(super) async fn bdat(&mut self, phase: Phase, size: u64, last: bool) -> (Phase, Flow) {
        // The chunk follows the command whatever the answer: it is always
        // read, so that the session stays in step with the client.
        if let Some(r) = Self::not_ready_for_text(&phase) {
            if let Err(end) = self.take_chunk(size, None).await {
                return (phase, Flow::Close(end));
            }
            return (phase, self.refuse(r));
        }
        let Phase::Mail(client, mut tx) = phase else {
            return (phase, Flow::Continue);
        };
        let mut sink = match tx.chunks.take() {
            Some(sink) => sink,
            None => self.open_sink(&client, &tx),
        };
        if sink.would_exceed(size) {
            sink.refuse_size();
        }
        if let Err(end) = self.take_chunk(size, Some(&mut sink)).await {
            return (Phase::Ready(client), Flow::Close(end));
        }
        if let Some(r) = sink.refusal() {
            // RFC 3030 §2: after an error the client sends no more chunks
            // of this message; any it pipelined get 503 (no transaction).
            return (Phase::Ready(client), self.refuse(r));
        }
        if last {
            let flow = self.finish_message(sink, &tx, &client).await;
            return (Phase::Ready(client), flow);
        }
        self.push(250, Some("2.0.0"), &format!("{size} octets received"));
        tx.chunks = Some(sink);
        (Phase::Mail(client, tx), Flow::Continue)
    }

    /// Reads `size` bytes of a BDAT chunk into `sink` (or nowhere).
    async fn take_chunk(
        &mut self,
        size: u64,
        mut sink: Option<&mut MessageSink>,
    ) -> Result<(), SessionEnd> {
        let mut remaining = size;
        loop {
            let available = &self.input[self.pos..];
            let n = usize::try_from(remaining).map_or(available.len(), |r| r.min(available.len()));
            if let Some(sink) = sink.as_deref_mut() {
                sink.write(&available[..n]);
            }
            self.pos += n;
            remaining -= n as u64;
            if remaining == 0 {
                return Ok(());
            }
            self.need_more(Wait::Text).await?;
        }
    }

    /// Starts the message of `tx` in the spool, behind its Received field.
    fn open_sink(&self, client: &Client, tx: &Transaction) -> MessageSink {
        let envelope = Envelope {
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            envid: tx.params.envid.clone(),
            ret: tx.params.ret,
            body: tx.params.body.unwrap_or_default(),
            smtputf8: tx.params.smtputf8,
            origin: format!("smtp [{}] helo={}", self.peer, client.helo),
        };
        // RFC 3848 and RFC 6531 names.
        let base = match (tx.params.smtputf8, client.esmtp) {
            (true, _) => "UTF8SMTP",
            (false, true) => "ESMTP",
            (false, false) => "SMTP",
        };
        let protocol = format!(
            "{base}{}{}",
            if self.tls.is_some() { "S" } else { "" },
            if self.authenticated.is_some() {
                "A"
            } else {
                ""
            }
        );
        let single = match tx.recipients.as_slice() {
            [only] => Some(only.address.as_str()),
            _ => None,
        };
        let date = skein_mail::date::now_local();
        let server = &self.server;
        MessageSink::open(
            &server.spool,
            &envelope,
            server.limits.max_line,
            server.limits.max_message_size,
            !server.milters.on(self.port).is_empty(),
            |id| {
                Trace {
                    helo: &client.helo,
                    client: self.peer,
                    hostname: &server.hostname,
                    protocol: &protocol,
                    tls: self.tls.as_deref(),
                    id,
                    single_recipient: single,
                    date: &date,
                }
                .render()
            },
        )
    }

    /// The end of data: the commit, then `250` with the queue id (only
    /// once the message is on stable storage) or the refusal.
    async fn finish_message(
        &mut self,
        mut sink: MessageSink,
        tx: &Transaction,
        client: &Client,
    ) -> Flow {
        // The content filters, on the whole text, before the commit: the
        // message they produce is the one made durable.
        if let Some(text) = sink.take_text() {
            use skein_milter::filter::{self, Outcome};
            let mut message = filter::Message {
                sender: tx.sender.clone(),
                recipients: tx.recipients.iter().map(|r| r.address.clone()).collect(),
                text,
            };
            let queue_id = sink.id().to_owned();
            let mut filters = self
                .filters
                .take()
                .unwrap_or_else(|| filter::Session::new(self.server.milters.on(self.port)));
            let client_name = self.client_name();
            let ctx = self.filter_context(&client_name, &client.helo, &queue_id);
            let outcome = filters.end(&ctx, &mut message).await;
            let stats = &self.server.stats;
            stats.milter_failures(filters.take_failures());
            match &outcome {
                Outcome::Refuse(_) => stats.milter(MilterVerdict::Refused),
                Outcome::Discard => stats.milter(MilterVerdict::Discarded),
                Outcome::Accept {
                    quarantine: Some(_),
                    ..
                } => stats.milter(MilterVerdict::Quarantined),
                Outcome::Accept { .. } => {}
            }
            self.filters = Some(filters);
            match outcome {
                Outcome::Accept {
                    changed: false,
                    quarantine: None,
                } => {}
                Outcome::Accept { quarantine, .. } => {
                    let envelope = Envelope {
                        sender: message.sender.clone(),
                        recipients: skein_spool::Recipient::after_filter(
                            &tx.recipients,
                            &message.recipients,
                        ),
                        envid: tx.params.envid.clone(),
                        ret: tx.params.ret,
                        body: tx.params.body.unwrap_or_default(),
                        smtputf8: tx.params.smtputf8,
                        origin: format!("smtp [{}] helo={}", self.peer, client.helo),
                    };
                    sink.replace(&envelope, &message.text, quarantine.as_deref());
                }
                Outcome::Discard => {
                    // Dropping the sink removes its temporary file.
                    drop(sink);
                    tracing::info!(id = queue_id.as_str(), client = %self.peer, "discarded by a content filter");
                    self.push(250, Some("2.0.0"), &format!("Ok: queued as {queue_id}"));
                    return Flow::Continue;
                }
                Outcome::Refuse(reply) => {
                    drop(sink);
                    let r = crate::milter::refusal(reply);
                    tracing::info!(id = queue_id.as_str(), client = %self.peer, code = r.code, text = r.text.as_str(), "refused by a content filter");
                    return self.refuse(r);
                }
            }
        }
        let size = sink.size();
        match sink.finish().await {
            Accepted::Queued(id) => {
                self.messages += 1;
                self.server.stats.message(size);
                tracing::info!(
                    id = id.as_str(),
                    client = %self.peer,
                    from = tx.sender.as_str(),
                    nrcpt = tx.recipients.len(),
                    "accepted"
                );
                self.server.spool.wake(Wakeable::Router);
                self.push(250, Some("2.0.0"), &format!("Ok: queued as {id}"));
                Flow::Continue
            }
            Accepted::Refused(r) => self.refuse(r),
        }
    }
}
