//! Taking messages through a list of filters and applying what they
//! decide: the MTA's policy on top of [`crate::client::Connection`],
//! shared by the smtpd (`smtpd.milters`: a [`Session`] per SMTP session)
//! and the router (`router.milters`, for local submissions: [`run`]).
//!
//! Each filter in order gets the conversation over a connection of its
//! own, opened at the session's first MAIL and kept for its later
//! messages, as libmilter and Postfix do: connect and HELO once (HELO
//! again if the client's changes), then per message MAIL and each RCPT as
//! the client sends them — so a filter can refuse a transaction or a
//! single recipient at once — and, once the text is complete, DATA, the
//! header fields, end of header, the body and end of message, with the
//! macros Postfix sends. Its verdict and modifications are applied to the
//! [`Message`]. A transaction that ends otherwise is aborted for the
//! filters (SMFIC_ABORT); the connection stays.
//!
//! **Cost.** Per message and filter: one round trip per step the filter
//! did not negotiate away (MAIL, each RCPT, DATA, each header field, end
//! of header, each 64 KiB of body, end of message); per session, the
//! connection and its negotiation, connect and HELO once.
//!
//! A filter that cannot be reached, hangs past its timeout, closes, or
//! breaks the protocol gets its default action (its own, else
//! `milter_default_action`) for this message
//! only, logged with the filter's name; the next message opens a new
//! connection. A filter's own reply text is checked
//! ([`crate::checked_reply`]) before it becomes a [`Reply`].

use std::net::IpAddr;

use skein_config::{MilterAction, MilterSpec, SmtpdConfig};

use crate::client::{Address, Connection, MilterError, Timeouts, Verdict};
use crate::{Command, Family, Response, Stage, protocol};

/// One filter of a list, with its settings.
#[derive(Debug, Clone)]
struct Filter {
    /// As configured, for the log.
    name: String,
    address: Address,
    timeouts: Timeouts,
    default_action: MilterAction,
}

/// A list of filters, in order, each with its timeouts and what it means
/// when it fails.
#[derive(Debug, Clone, Default)]
pub struct Milters {
    filters: Vec<Filter>,
}

impl Milters {
    /// The filters in `list`, each with its own settings where it has
    /// them and the `smtpd.milter_*` ones otherwise (which the router's
    /// list shares, as Postfix's `milter_*` settings apply to both of its
    /// lists). One whose address does not parse is left out with a
    /// warning (the configuration has validated them already).
    pub fn configured(list: &[MilterSpec], smtpd: &SmtpdConfig) -> Milters {
        let filters = list
            .iter()
            .filter_map(|spec| match spec.address.parse::<Address>() {
                Ok(address) => Some(Filter {
                    name: spec.address.clone(),
                    address,
                    timeouts: Timeouts {
                        connect: spec.connect_timeout.unwrap_or(smtpd.milter_connect_timeout),
                        command: spec.timeout.unwrap_or(smtpd.milter_timeout),
                        content: spec.content_timeout.unwrap_or(smtpd.milter_content_timeout),
                    },
                    default_action: spec.default_action.unwrap_or(smtpd.milter_default_action),
                }),
                Err(e) => {
                    tracing::warn!(milter = %spec.address, error = %e, "milter ignored");
                    None
                }
            })
            .collect();
        Milters { filters }
    }

    /// Whether there are none (then nothing here runs).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.filters.len()
    }
}

/// Who sent the message, for the connect, HELO and MAIL steps' macros.
#[derive(Debug)]
pub struct Context<'a> {
    /// The client's address (a local submission: 127.0.0.1).
    pub peer: IpAddr,
    /// The client's name (`{client_name}`, the connect step's host name):
    /// `[address]` for an SMTP client, `localhost` for a local submission.
    pub client_name: &'a str,
    /// Its HELO/EHLO argument.
    pub helo: &'a str,
    /// Our host name (`j`).
    pub hostname: &'a str,
    /// The message's queue id (`i`).
    pub queue_id: &'a str,
    /// The AUTH identity, if any (`{auth_authen}`).
    pub auth: Option<&'a str>,
    /// The TLS session, if any (`{tls_version}`, `{cipher}`).
    pub tls: Option<&'a str>,
}

/// The message as the filters see and change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The envelope sender (`""`: the null sender).
    pub sender: String,
    /// The envelope recipients' addresses. A filter may add and delete
    /// them; the caller keeps the DSN parameters of those that remain.
    pub recipients: Vec<String>,
    /// The message text, CRLF line ends.
    pub text: Vec<u8>,
}

/// A refusal to give the client (or to put in a bounce): a reply code, its
/// enhanced status code and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 4xx or 5xx.
    pub code: u16,
    /// `x.y.z`, its class that of the code.
    pub enhanced: String,
    /// One line, checked: no control characters.
    pub text: String,
}

impl Reply {
    fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        Reply {
            code,
            enhanced: enhanced.to_owned(),
            text: text.to_owned(),
        }
    }
}

/// What the filters decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accept it; `changed` when a filter changed the message.
    Accept {
        /// Whether `Message` was modified.
        changed: bool,
        /// A filter asked for it to be held (quarantined), with this
        /// reason: it is queued held.
        quarantine: Option<String>,
    },
    /// Refuse it with this reply.
    Refuse(Reply),
    /// Report success and drop it.
    Discard,
}

/// One header field: its name and its value as received (after the colon,
/// folding kept, without the final CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
}

/// Splits a message into its header fields and its body.
fn split(text: &[u8]) -> (Vec<Field>, Vec<u8>) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(text.len(), |i| pos + i + 2);
        let line = &text[pos..end];
        if line == b"\r\n" {
            return (fields, text[end..].to_vec());
        }
        let content = line.strip_suffix(b"\r\n").unwrap_or(line);
        match (content.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => {
                last.value.push_str("\r\n");
                last.value.push_str(&String::from_utf8_lossy(content));
            }
            _ => {
                let text = String::from_utf8_lossy(content);
                let (name, value) = text.split_once(':').unwrap_or((&text, ""));
                fields.push(Field {
                    name: name.trim().to_owned(),
                    value: value.to_owned(),
                });
            }
        }
        pos = end;
    }
    (fields, Vec::new())
}

fn join(fields: &[Field], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64 * fields.len());
    for f in fields {
        out.extend_from_slice(f.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(f.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A value from a filter: with `HEADER_LEADING_SPACE` negotiated it is
/// written as given, else after one space.
fn value_from_filter(value: &str, leading_space: bool) -> String {
    let value = value.replace("\r\n", "\n").replace('\n', "\r\n");
    if leading_space || value.starts_with([' ', '\t']) {
        value
    } else {
        format!(" {value}")
    }
}

fn bare(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

/// A filter's reply as a refusal: its code, enhanced code and text (the
/// lines of a multi-line reply joined).
fn refusal(reply: Option<String>, tempfail: bool) -> Reply {
    let Some(reply) = reply else {
        return if tempfail {
            Reply::new(451, "4.7.1", "Service unavailable - try again later")
        } else {
            Reply::new(550, "5.7.1", "Message content rejected")
        };
    };
    let code: u16 = reply
        .get(..3)
        .and_then(|c| c.parse().ok())
        .unwrap_or(if tempfail { 451 } else { 550 });
    let mut enhanced = None;
    let mut texts = Vec::new();
    for line in reply.split("\r\n") {
        let rest = line.get(4..).unwrap_or("");
        let (first, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        let is_enhanced = first.split('.').count() == 3
            && first
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && first.starts_with(char::from(b'0' + (code / 100) as u8));
        if is_enhanced {
            enhanced.get_or_insert_with(|| first.to_owned());
            texts.push(tail.to_owned());
        } else {
            texts.push(rest.to_owned());
        }
    }
    let enhanced =
        enhanced.unwrap_or_else(|| if code / 100 == 4 { "4.7.1" } else { "5.7.1" }.to_owned());
    Reply {
        code,
        enhanced,
        text: texts.join(" ").trim().to_owned(),
    }
}

/// What a step before the message content came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Go on.
    Go,
    /// Refuse this command: at MAIL the transaction, at RCPT this
    /// recipient (the others stay).
    Refuse(Reply),
}

/// A verdict a filter gave at connect or HELO: it holds for the whole
/// session.
#[derive(Debug, Clone)]
enum Sticky {
    /// No more steps for this filter in this session.
    Accept,
    /// Every message of the session is refused.
    Refuse(Reply),
}

/// One filter's part in a [`Session`].
struct Slot {
    filter: Filter,
    conn: Option<Connection>,
    /// The HELO argument sent on `conn` (sent again when the client's
    /// changes, after STARTTLS say).
    helo: Option<String>,
    sticky: Option<Sticky>,
    /// Done with the current message: it accepted it, discarded it, or
    /// failed under `milter_default_action = "accept"`.
    done: bool,
    /// MAIL was sent on `conn`, and neither end of message nor abort since.
    in_message: bool,
}

/// A conversation with every filter of a list over one SMTP session (or
/// one local submission): each filter's connection is opened at the first
/// MAIL, given connect and HELO once, and kept from message to message,
/// as libmilter and Postfix do; MAIL and each RCPT are sent when the
/// client sends them, so that a filter can refuse a single recipient at
/// once; the content at the end of the text ([`Session::end`]).
pub struct Session {
    slots: Vec<Slot>,
    /// A filter discarded the current message.
    discard: bool,
    /// A filter failed under `tempfail` or `reject`: the current message
    /// gets this.
    doomed: Option<Reply>,
    /// Filter failures since [`Session::take_failures`] last looked.
    failures: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("filters", &self.slots.len())
            .field("discard", &self.discard)
            .finish_non_exhaustive()
    }
}

/// A verdict as the session acts on it.
enum Judged {
    Continue,
    Accept,
    Discard,
    Refuse(Reply),
}

fn judge(verdict: Verdict) -> Judged {
    match verdict {
        Verdict::Continue | Verdict::Skip => Judged::Continue,
        Verdict::Accept => Judged::Accept,
        Verdict::Discard => Judged::Discard,
        Verdict::Reject(reply) => Judged::Refuse(refusal(reply, false)),
        Verdict::Tempfail(reply) => Judged::Refuse(refusal(reply, true)),
    }
}

/// The value of macro `name` for a message from `sender` (and at RCPT,
/// to `rcpt`).
fn macro_of(ctx: &Context<'_>, sender: &str, rcpt: Option<&str>, name: &str) -> Option<String> {
    let tls = ctx.tls;
    Some(match name {
        "j" => ctx.hostname.to_owned(),
        "{daemon_name}" => "skein".to_owned(),
        "v" => format!("skein {}", env!("CARGO_PKG_VERSION")),
        "_" => format!("{} [{}]", ctx.client_name, ctx.peer),
        "{client_addr}" => ctx.peer.to_string(),
        "{client_name}" | "{client_ptr}" => ctx.client_name.to_owned(),
        "i" if !ctx.queue_id.is_empty() => ctx.queue_id.to_owned(),
        "{mail_addr}" => sender.to_owned(),
        "{rcpt_addr}" => rcpt?.to_owned(),
        "{auth_authen}" => ctx.auth?.to_owned(),
        "{auth_type}" => ctx.auth.map(|_| "PLAIN".to_owned())?,
        "{tls_version}" => tls?.split_whitespace().next()?.to_owned(),
        "{cipher}" => tls?.split_whitespace().nth(1)?.to_owned(),
        _ => return None,
    })
}

impl Session {
    /// A session with the filters of `milters`; nothing is connected yet.
    pub fn new(milters: &Milters) -> Session {
        Session {
            slots: milters
                .filters
                .iter()
                .map(|filter| Slot {
                    filter: filter.clone(),
                    conn: None,
                    helo: None,
                    sticky: None,
                    done: false,
                    in_message: false,
                })
                .collect(),
            discard: false,
            doomed: None,
            failures: 0,
        }
    }

    /// How many times a filter failed (and its default action applied)
    /// since the last call: for the MTA's counters.
    pub fn take_failures(&mut self) -> u64 {
        std::mem::take(&mut self.failures)
    }

    /// A filter failed: logged, its connection dropped (the next message
    /// connects again); returns what the message gets under the default
    /// action (`None`: go on without it).
    fn fail(&mut self, i: usize, queue_id: &str, e: &MilterError) -> Option<Reply> {
        self.failures += 1;
        let slot = &mut self.slots[i];
        tracing::warn!(
            milter = %slot.filter.name,
            queue_id,
            error = %e,
            default_action = slot.filter.default_action.as_str(),
            "milter failed: its default action applies to this message"
        );
        slot.conn = None;
        slot.helo = None;
        slot.in_message = false;
        slot.done = true;
        match slot.filter.default_action {
            MilterAction::Accept => None,
            MilterAction::Tempfail => Some(Reply::new(
                451,
                "4.7.1",
                "Content filter unavailable - try again later",
            )),
            MilterAction::Reject => Some(Reply::new(
                550,
                "5.7.1",
                "Content filter unavailable - message rejected",
            )),
        }
    }

    /// MAIL FROM `sender`: each filter is connected (and given connect and
    /// HELO) if it is not yet, then given MAIL. A refusal ends the
    /// transaction for every filter.
    pub async fn mail(&mut self, ctx: &Context<'_>, sender: &str) -> Step {
        // A transaction that ended without its text or an RSET (the MTA
        // refused its DATA, say) ends for the filters now.
        if self.slots.iter().any(|slot| slot.in_message) {
            self.abort().await;
        }
        self.discard = false;
        self.doomed = None;
        for i in 0..self.slots.len() {
            self.slots[i].done = false;
            match &self.slots[i].sticky {
                Some(Sticky::Accept) => {
                    self.slots[i].done = true;
                    continue;
                }
                Some(Sticky::Refuse(reply)) => {
                    let reply = reply.clone();
                    self.abort().await;
                    return Step::Refuse(reply);
                }
                None => {}
            }
            let reused = self.slots[i].conn.is_some();
            let mut judged = mail_one(&mut self.slots[i], ctx, sender).await;
            if reused && judged.is_err() {
                // A kept connection the filter closed while it was idle
                // (between messages): once more on a new one.
                let slot = &mut self.slots[i];
                slot.conn = None;
                slot.helo = None;
                slot.in_message = false;
                judged = mail_one(slot, ctx, sender).await;
            }
            match judged {
                Ok(Judged::Continue) => {}
                Ok(Judged::Accept) => self.slots[i].done = true,
                Ok(Judged::Discard) => {
                    self.discard = true;
                    self.slots[i].done = true;
                }
                Ok(Judged::Refuse(reply)) => {
                    tracing::info!(milter = %self.slots[i].filter.name, code = reply.code, text = reply.text.as_str(), "milter refused MAIL");
                    self.abort().await;
                    return Step::Refuse(reply);
                }
                Err(e) => {
                    if let Some(reply) = self.fail(i, ctx.queue_id, &e) {
                        self.abort().await;
                        return Step::Refuse(reply);
                    }
                }
            }
        }
        Step::Go
    }

    /// RCPT TO `rcpt` (after the MTA's own checks accepted it): a refusal
    /// refuses this recipient only.
    pub async fn rcpt(&mut self, ctx: &Context<'_>, sender: &str, rcpt: &str) -> Step {
        if let Some(reply) = &self.doomed {
            return Step::Refuse(reply.clone());
        }
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(c) = slot.conn.as_mut().filter(|_| !slot.done && slot.in_message) else {
                continue;
            };
            let v = |m: &str| macro_of(ctx, sender, Some(rcpt), m);
            let macros = c.macros_for(Stage::Rcpt, &["{rcpt_addr}"], &v);
            let command = Command::Rcpt(vec![format!("<{rcpt}>")]);
            let verdict = c
                .step(
                    Some(Stage::Rcpt),
                    macros,
                    command,
                    protocol::NO_RCPT,
                    protocol::NR_RCPT,
                    false,
                )
                .await;
            match verdict.map(judge) {
                Ok(Judged::Continue) => {}
                Ok(Judged::Accept) => slot.done = true,
                Ok(Judged::Discard) => {
                    self.discard = true;
                    slot.done = true;
                }
                Ok(Judged::Refuse(reply)) => {
                    tracing::info!(milter = %slot.filter.name, rcpt, code = reply.code, text = reply.text.as_str(), "milter refused a recipient");
                    return Step::Refuse(reply);
                }
                Err(e) => {
                    if let Some(reply) = self.fail(i, ctx.queue_id, &e) {
                        self.doomed = Some(reply.clone());
                        return Step::Refuse(reply);
                    }
                }
            }
        }
        Step::Go
    }

    /// The message text is complete: DATA, the header fields, end of
    /// header, the body and end of message for every filter still in the
    /// message, their modifications applied to `message` in order.
    pub async fn end(&mut self, ctx: &Context<'_>, message: &mut Message) -> Outcome {
        if let Some(reply) = self.doomed.take() {
            self.abort().await;
            return Outcome::Refuse(reply);
        }
        let mut changed = false;
        let mut quarantine = None;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(c) = slot.conn.as_mut().filter(|_| !slot.done && slot.in_message) else {
                continue;
            };
            let result = content(c, &mut slot.in_message, &slot.filter.name, ctx, message).await;
            match result {
                Ok(FilterResult::Go(c, q)) => {
                    changed |= c;
                    if q.is_some() {
                        quarantine = q;
                    }
                }
                Ok(FilterResult::Stop(outcome)) => {
                    tracing::info!(milter = %slot.filter.name, queue_id = ctx.queue_id, outcome = ?outcome, "milter verdict");
                    self.abort().await;
                    return outcome;
                }
                Err(e) => {
                    if let Some(reply) = self.fail(i, ctx.queue_id, &e) {
                        self.abort().await;
                        return Outcome::Refuse(reply);
                    }
                }
            }
        }
        self.abort().await;
        if std::mem::take(&mut self.discard) {
            return Outcome::Discard;
        }
        Outcome::Accept {
            changed,
            quarantine,
        }
    }

    /// Ends the current transaction for every filter still in it (RSET,
    /// or a transaction that ends without its text). The connections stay.
    pub async fn abort(&mut self) {
        for slot in &mut self.slots {
            if slot.in_message
                && let Some(c) = slot.conn.as_mut()
                && c.abort().await.is_err()
            {
                slot.conn = None;
                slot.helo = None;
            }
            slot.in_message = false;
        }
        self.doomed = None;
    }

    /// Says goodbye to every filter.
    pub async fn close(mut self) {
        for slot in &mut self.slots {
            if let Some(c) = slot.conn.take() {
                c.quit().await;
            }
        }
    }
}

/// One filter's MAIL, connecting it first (connect and HELO) if need be.
async fn mail_one(slot: &mut Slot, ctx: &Context<'_>, sender: &str) -> Result<Judged, MilterError> {
    let v = |m: &str| macro_of(ctx, sender, None, m);
    if slot.conn.is_none() {
        let mut c = Connection::open(&slot.filter.address, slot.filter.timeouts).await?;
        let family = match ctx.peer {
            IpAddr::V4(ip) => Family::Inet(ip, 0),
            IpAddr::V6(ip) => Family::Inet6(ip, 0),
        };
        let macros = c.macros_for(
            Stage::Connect,
            &[
                "j",
                "{daemon_name}",
                "v",
                "_",
                "{client_addr}",
                "{client_name}",
            ],
            &v,
        );
        let command = Command::Connect {
            hostname: ctx.client_name.to_owned(),
            family,
        };
        let verdict = c
            .step(
                Some(Stage::Connect),
                macros,
                command,
                protocol::NO_CONNECT,
                protocol::NR_CONNECT,
                false,
            )
            .await?;
        slot.conn = Some(c);
        if let Some(judged) = session_verdict(&mut slot.sticky, judge(verdict)) {
            return Ok(judged);
        }
    }
    let Some(c) = slot.conn.as_mut() else {
        return Ok(Judged::Continue);
    };
    if slot.helo.as_deref() != Some(ctx.helo) {
        let macros = c.macros_for(Stage::Helo, &["{tls_version}", "{cipher}"], &v);
        let verdict = c
            .step(
                Some(Stage::Helo),
                macros,
                Command::Helo(ctx.helo.to_owned()),
                protocol::NO_HELO,
                protocol::NR_HELO,
                false,
            )
            .await?;
        slot.helo = Some(ctx.helo.to_owned());
        if let Some(judged) = session_verdict(&mut slot.sticky, judge(verdict)) {
            return Ok(judged);
        }
    }
    let macros = c.macros_for(
        Stage::Mail,
        &["i", "{mail_addr}", "{auth_authen}", "{auth_type}"],
        &v,
    );
    slot.in_message = true;
    let verdict = c
        .step(
            Some(Stage::Mail),
            macros,
            Command::Mail(vec![format!("<{sender}>")]),
            protocol::NO_MAIL,
            protocol::NR_MAIL,
            false,
        )
        .await?;
    Ok(judge(verdict))
}

/// A verdict at connect or HELO holds for the session: remembered, and
/// returned as this message's; `None` to go on.
fn session_verdict(sticky: &mut Option<Sticky>, judged: Judged) -> Option<Judged> {
    match judged {
        Judged::Continue => None,
        Judged::Accept => {
            *sticky = Some(Sticky::Accept);
            Some(Judged::Accept)
        }
        // A discard at connect or HELO discards this message; the next
        // one is asked again at MAIL.
        Judged::Discard => Some(Judged::Discard),
        Judged::Refuse(reply) => {
            *sticky = Some(Sticky::Refuse(reply.clone()));
            Some(Judged::Refuse(reply))
        }
    }
}

/// Runs every filter on a whole message at once (a local submission):
/// MAIL, each RCPT, the content. A recipient a filter refuses is taken
/// out of `message` and returned with the reply; a message left without
/// recipients is refused with the last such reply.
pub async fn run(
    milters: &Milters,
    ctx: &Context<'_>,
    message: &mut Message,
) -> (Outcome, Vec<(String, Reply)>) {
    let mut session = Session::new(milters);
    let mut refused = Vec::new();
    let outcome = match session.mail(ctx, &message.sender).await {
        Step::Refuse(reply) => Outcome::Refuse(reply),
        Step::Go => {
            let mut kept = Vec::new();
            for rcpt in std::mem::take(&mut message.recipients) {
                match session.rcpt(ctx, &message.sender, &rcpt).await {
                    Step::Go => kept.push(rcpt),
                    Step::Refuse(reply) => refused.push((rcpt, reply)),
                }
            }
            message.recipients = kept;
            if message.recipients.is_empty() {
                let reply = refused
                    .last()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Reply::new(550, "5.7.1", "Message content rejected"));
                session.abort().await;
                Outcome::Refuse(reply)
            } else {
                session.end(ctx, message).await
            }
        }
    };
    session.close().await;
    (outcome, refused)
}

enum FilterResult {
    /// Go on to the next filter (whether this one changed the message,
    /// and the quarantine reason it gave).
    Go(bool, Option<String>),
    /// A verdict that ends the filtering.
    Stop(Outcome),
}

/// What a content step's verdict means here: `None` to go on with this
/// filter.
fn stop(verdict: Verdict) -> Option<FilterResult> {
    match verdict {
        Verdict::Continue | Verdict::Skip => None,
        Verdict::Accept => Some(FilterResult::Go(false, None)),
        Verdict::Discard => Some(FilterResult::Stop(Outcome::Discard)),
        Verdict::Reject(reply) => Some(FilterResult::Stop(Outcome::Refuse(refusal(reply, false)))),
        Verdict::Tempfail(reply) => Some(FilterResult::Stop(Outcome::Refuse(refusal(reply, true)))),
    }
}

/// One filter's part of the content: DATA, the header, the body, end of
/// message and the modifications. `in_message` is cleared once end of
/// message has been answered.
async fn content(
    c: &mut Connection,
    in_message: &mut bool,
    name: &str,
    ctx: &Context<'_>,
    message: &mut Message,
) -> Result<FilterResult, MilterError> {
    let sender = message.sender.clone();
    let v = |m: &str| macro_of(ctx, &sender, None, m);
    let verdict = c
        .step(
            Some(Stage::Data),
            vec![],
            Command::Data,
            protocol::NO_DATA,
            protocol::NR_DATA,
            false,
        )
        .await?;
    if let Some(r) = stop(verdict) {
        return Ok(r);
    }
    let (mut fields, mut body) = split(&message.text);
    let leading_space = c.protocol & protocol::HEADER_LEADING_SPACE != 0;
    for f in &fields {
        let value = if leading_space {
            f.value.clone()
        } else {
            f.value.strip_prefix(' ').unwrap_or(&f.value).to_owned()
        };
        let verdict = c
            .step(
                None,
                vec![],
                Command::Header(f.name.clone(), value),
                protocol::NO_HEADERS,
                protocol::NR_HEADER,
                true,
            )
            .await?;
        if let Some(r) = stop(verdict) {
            return Ok(r);
        }
    }
    let verdict = c
        .step(
            Some(Stage::EndOfHeader),
            vec![],
            Command::EndOfHeader,
            protocol::NO_EOH,
            protocol::NR_EOH,
            true,
        )
        .await?;
    if let Some(r) = stop(verdict) {
        return Ok(r);
    }
    for chunk in body.chunks(crate::CHUNK) {
        let verdict = c
            .step(
                None,
                vec![],
                Command::Body(chunk.to_vec()),
                protocol::NO_BODY,
                protocol::NR_BODY,
                true,
            )
            .await?;
        if verdict == Verdict::Skip {
            break;
        }
        if let Some(r) = stop(verdict) {
            return Ok(r);
        }
    }
    let macros = c.macros_for(Stage::EndOfMessage, &["i"], &v);
    let end = c.end_of_message(macros).await?;
    *in_message = false;
    match &end.verdict {
        Verdict::Discard | Verdict::Reject(_) | Verdict::Tempfail(_) => {
            return Ok(stop(end.verdict).unwrap_or(FilterResult::Go(false, None)));
        }
        Verdict::Accept | Verdict::Continue | Verdict::Skip => {}
    }
    // The modifications, in the order the filter sent them.
    let mut changed = false;
    let mut quarantine = None;
    let mut new_body: Option<Vec<u8>> = None;
    for m in end.modifications {
        changed = true;
        match m {
            Response::AddHeader(n, value) => fields.push(Field {
                name: n,
                value: value_from_filter(&value, leading_space),
            }),
            Response::InsertHeader(index, n, value) => {
                let at = (index as usize).min(fields.len());
                fields.insert(
                    at,
                    Field {
                        name: n,
                        value: value_from_filter(&value, leading_space),
                    },
                );
            }
            Response::ChangeHeader(index, n, value) => {
                // The index-th (1-based; 0 counts as 1) field of that name.
                let nth = (index as usize).max(1);
                let position = fields
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name.eq_ignore_ascii_case(&n))
                    .nth(nth - 1)
                    .map(|(i, _)| i);
                match (position, value.is_empty()) {
                    (Some(i), true) => {
                        fields.remove(i);
                    }
                    (Some(i), false) => fields[i].value = value_from_filter(&value, leading_space),
                    (None, false) => fields.push(Field {
                        name: n,
                        value: value_from_filter(&value, leading_space),
                    }),
                    (None, true) => {}
                }
            }
            Response::ReplaceBody(chunk) => new_body
                .get_or_insert_with(Vec::new)
                .extend_from_slice(&chunk),
            Response::AddRcpt(r) | Response::AddRcptPar(r, _) => {
                let address = bare(&r);
                if !message
                    .recipients
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(&address))
                {
                    message.recipients.push(address);
                }
            }
            Response::DeleteRcpt(r) => {
                let address = bare(&r);
                message
                    .recipients
                    .retain(|x| !x.eq_ignore_ascii_case(&address));
            }
            Response::ChangeFrom(from, _) => message.sender = bare(&from),
            Response::Quarantine(reason) => {
                tracing::info!(milter = %name, queue_id = ctx.queue_id, reason = %reason, "quarantined by a content filter: queued held");
                let reason: String = reason
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                quarantine = Some(format!("{name}: {reason}"));
            }
            other => {
                tracing::warn!(milter = %name, response = ?other, "unexpected milter response at end of message: ignored");
                changed = false;
            }
        }
    }
    if let Some(b) = new_body {
        // A replacement body gets CRLF line ends, as the spool keeps them.
        let text = String::from_utf8_lossy(&b)
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        body = if b.is_ascii() { text.into_bytes() } else { b };
    }
    if changed {
        message.text = join(&fields, &body);
        if message.recipients.is_empty() {
            return Ok(FilterResult::Stop(Outcome::Discard));
        }
    }
    tracing::info!(milter = %name, queue_id = ctx.queue_id, changed, "milter accepted");
    Ok(FilterResult::Go(changed, quarantine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_and_join_back_unchanged() {
        let text =
            b"Received: from x\r\n\tby y\r\nSubject: hi\r\nX-Empty:\r\n\r\nbody\r\n\r\nmore\r\n";
        let (fields, body) = split(text);
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[0].name, "Received");
        assert_eq!(fields[0].value, " from x\r\n\tby y");
        assert_eq!(fields[2].value, "");
        assert_eq!(body, b"body\r\n\r\nmore\r\n");
        assert_eq!(join(&fields, &body), text);
    }

    #[test]
    fn filter_replies_become_refusals() {
        let cases = [
            (
                Some("550 5.7.1 Spam detected".to_owned()),
                false,
                (550, "5.7.1", "Spam detected"),
            ),
            (
                Some("451 4.7.1 Greylisted".to_owned()),
                true,
                (451, "4.7.1", "Greylisted"),
            ),
            (
                Some("554 no enhanced code".to_owned()),
                false,
                (554, "5.7.1", "no enhanced code"),
            ),
            (
                Some("550-5.7.1 line one\r\n550 5.7.1 line two".to_owned()),
                false,
                (550, "5.7.1", "line one line two"),
            ),
            (None, false, (550, "5.7.1", "Message content rejected")),
            (
                None,
                true,
                (451, "4.7.1", "Service unavailable - try again later"),
            ),
        ];
        for (reply, tempfail, (code, enhanced, text)) in cases {
            let r = refusal(reply.clone(), tempfail);
            assert_eq!(
                (r.code, &*r.enhanced, r.text.as_str()),
                (code, enhanced, text),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn values_from_filters_get_their_space_and_crlf() {
        assert_eq!(value_from_filter("yes", false), " yes");
        assert_eq!(value_from_filter(" yes", false), " yes");
        assert_eq!(value_from_filter("yes", true), "yes");
        assert_eq!(value_from_filter("a\n\tb", false), " a\r\n\tb");
    }
}
