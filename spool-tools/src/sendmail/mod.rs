//! `skein sendmail` (also run as `sendmail`): local submission.
//!
//! Reads one message on standard input and writes it, with its envelope,
//! durably into the spool's `incoming/` state; exits 0 only once the file
//! and its directory entry are on stable storage (DESIGN.md invariant 1).
//! It then wakes the router (best effort: the router also scans).
//!
//! Exit codes follow sysexits(3): EX_USAGE for a bad command line,
//! EX_DATAERR for no recipients, an invalid address or a message over the
//! size limit, EX_NOINPUT when standard input cannot be read, EX_TEMPFAIL
//! when the spool cannot take the message, EX_CONFIG for a broken
//! configuration, EX_SOFTWARE for a bug.
//!
//! Privilege: runs as the invoking user. A user who may write the
//! spool's `tmp/` and `incoming/` (the skein account, its group, the
//! quick start's owner) writes there; anyone else's submission is built in
//! memory and piped to the setgid `skein-postdrop`, which puts it in
//! `maildrop/` for the router (docs/spool.md, "maildrop/"). Run by root, it
//! first becomes the spool's owner ([`become_spool_owner`]), so that what
//! it writes is readable by the daemons, which never run as root. Message headers
//! are read only to find recipients (`-t`) and are otherwise copied.
//!
//! `-bs` speaks SMTP on standard input and output instead ([`session`]):
//! each message of the session is submitted as above, as the invoking
//! user.

mod options;
mod reader;
mod session;

use std::io::{self, BufRead};
use std::path::Path;

use skein_config::Config;
use skein_mail::Mailbox;
use skein_spool::{BodyType, Envelope, MessageWriter, Recipient, Ret, Spool, SpoolError, Wakeable};

pub use options::{Options, UsageError, parse};
use reader::{Line, LineReader};

use crate::sysexits::*;

/// Largest header section accepted (the body has only the size limit).
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

pub use crate::sysexits::Failure;

/// Runs sendmail with `args` (without argv\[0\]); `config` is the `-c` of
/// `skein` when called as `skein -c FILE sendmail …`. Returns the exit
/// code, having printed any error on standard error.
pub fn main(args: &[String], config: Option<&Path>) -> u8 {
    match run(args, config, &mut io::stdin().lock()) {
        Ok(()) => EX_OK,
        Err(f) => {
            eprintln!("sendmail: {}", f.message);
            f.code
        }
    }
}

/// The whole submission, reading the message from `input`.
pub fn run(args: &[String], config: Option<&Path>, input: &mut dyn BufRead) -> Result<(), Failure> {
    let opts = parse(args).map_err(|e| {
        fail(
            EX_USAGE,
            format!("{e}\nusage: sendmail [-t] [-i] [-f sender] [-F name] [-N dsn] [-R ret] [-V envid] [-C config] [recipient ...]"),
        )
    })?;
    let explicit = opts.config.as_deref().or(config);
    let loaded = Config::load(explicit).map_err(|e| fail(EX_CONFIG, e.to_string()))?;
    let config = loaded.config;
    let source = loaded.source;
    if opts.verbose {
        for i in &opts.ignored {
            eprintln!("sendmail: ignoring option {i}");
        }
    }
    if opts.smtp_session {
        if !opts.recipients.is_empty() || opts.extract_recipients {
            return Err(fail(
                EX_USAGE,
                "-bs takes its recipients from RCPT TO, not from the command line or -t",
            ));
        }
        become_spool_owner(&config.spool.dir)?;
        let mut out = io::stdout().lock();
        return session::serve(&config, &source, &opts, input, &mut out)
            .map_err(|e| fail(EX_IOERR, format!("SMTP session: {e}")));
    }
    let submitter = Submitter::new(&config, &opts, source)?;
    become_spool_owner(&config.spool.dir)?;
    submitter.submit(input)
}

/// Run by root, sendmail writes the message as the spool's owner: the
/// daemons never run as root, and a root-owned file in `incoming/` would
/// be unreadable to the router. The submitter is still recorded as root
/// (uid 0, taken before the switch) in the Received line and the origin.
/// Not root, or a spool that is root's or not there yet: nothing changes.
fn become_spool_owner(spool: &Path) -> Result<(), Failure> {
    use nix::unistd::{Gid, Uid};
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(spool) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    let switch = nix::unistd::setgroups(&[gid])
        .and_then(|()| nix::unistd::setgid(gid))
        .and_then(|()| nix::unistd::setuid(uid));
    switch.map_err(|e| {
        fail(
            EX_SOFTWARE,
            format!(
                "cannot become the owner (uid {uid}) of the spool {}: {e}",
                spool.display()
            ),
        )
    })
}

struct Submitter<'a> {
    config: &'a Config,
    /// Where the configuration came from, passed on to `skein-postdrop`.
    source: skein_config::Source,
    opts: &'a Options,
    qualify_domain: String,
    uid: u32,
    login: String,
    sender: String,
}

impl<'a> Submitter<'a> {
    fn new(
        config: &'a Config,
        opts: &'a Options,
        source: skein_config::Source,
    ) -> Result<Self, Failure> {
        let qualify_domain = config
            .router
            .local_domains
            .first()
            .cloned()
            .unwrap_or_else(|| config.hostname.clone());
        let uid = nix::unistd::getuid();
        let login = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| format!("uid{uid}"));
        let mut s = Submitter {
            config,
            source,
            opts,
            qualify_domain,
            uid: uid.as_raw(),
            login: login.clone(),
            sender: String::new(),
        };
        s.sender = match opts.sender.as_deref().map(str::trim) {
            Some("") | Some("<>") => String::new(),
            Some(given) => s.check_address(given.trim_start_matches('<').trim_end_matches('>'))?,
            None => s.check_address(&login)?,
        };
        Ok(s)
    }

    /// Qualifies a bare local part and checks the syntax.
    fn check_address(&self, addr: &str) -> Result<String, Failure> {
        let addr = addr.trim();
        let full = if addr.contains('@') {
            addr.to_string()
        } else {
            format!("{addr}@{}", self.qualify_domain)
        };
        Mailbox::parse(&full, true)
            .map(|m| m.to_string())
            .map_err(|e| fail(EX_DATAERR, format!("invalid address {addr:?}: {e}")))
    }

    fn submit(&self, input: &mut dyn BufRead) -> Result<(), Failure> {
        let mut lines = LineReader::new(input, !self.opts.ignore_dots);
        let header = HeaderSection::read(&mut lines)?;

        let mut rcpts: Vec<String> = Vec::new();
        for arg in &self.opts.recipients {
            for a in split_list(arg) {
                rcpts.push(self.check_address(&a)?);
            }
        }
        if self.opts.extract_recipients {
            for a in header.recipients() {
                rcpts.push(self.check_address(&a)?);
            }
        }
        let mut seen = std::collections::HashSet::new();
        rcpts.retain(|r| seen.insert(r.to_ascii_lowercase()));
        if rcpts.is_empty() {
            return Err(fail(
                EX_DATAERR,
                if self.opts.extract_recipients {
                    "no recipients: none on the command line and none in To:, Cc: or Bcc:"
                } else {
                    "no recipients given (name them as arguments, or use -t)"
                },
            ));
        }

        let envelope = Envelope {
            smtputf8: !self.sender.is_ascii() || rcpts.iter().any(|r| !r.is_ascii()),
            sender: self.sender.clone(),
            recipients: rcpts
                .into_iter()
                .map(|address| Recipient {
                    address,
                    notify: self.opts.notify,
                    orcpt: None,
                })
                .collect(),
            envid: self.opts.envid.clone(),
            ret: self.opts.ret.as_deref().and_then(Ret::from_keyword),
            body: self
                .opts
                .body
                .as_deref()
                .and_then(BodyType::from_keyword)
                .unwrap_or_default(),
            origin: format!("sendmail uid={} user={}", self.uid, self.login),
        };

        if !may_write_spool(&self.config.spool.dir) {
            return self.submit_by_drop(envelope, &header, &mut lines);
        }
        let spool = Spool::open(&self.config.spool.dir).map_err(tempfail)?;
        // Leftovers of killed submissions; best effort (another user's
        // files may not be ours to remove).
        if let Err(e) = spool.clean_stale_tmp()
            && self.opts.verbose
        {
            eprintln!("sendmail: could not clean the spool's tmp/: {e}");
        }
        let mut writer = spool.create_incoming(&envelope).map_err(tempfail)?;
        let limit = self.config.smtpd.max_message_size.bytes();
        let mut out = Limited {
            writer: &mut writer,
            limit,
        };
        out.put(
            self.trace_and_headers(&header, out.writer.id().as_str(), true)
                .as_bytes(),
        )?;
        while let Line::Data(bytes) = lines.next_line().map_err(noinput)? {
            out.put(&bytes)?;
        }
        let id = writer.commit().map_err(tempfail)?;
        spool.wake(Wakeable::Router);
        if self.opts.verbose {
            eprintln!(
                "sendmail: queued as {id} for {} recipient(s)",
                envelope.recipients.len()
            );
        }
        Ok(())
    }

    /// Hands the submission to `skein-postdrop` (the spool is not ours to
    /// write): the whole message is built in memory, with the size limit
    /// checked as it grows, rendered as a message file and piped to the
    /// setgid program, whose exit status becomes ours. The router adds the
    /// Received line, with the uid the kernel says wrote the drop file.
    fn submit_by_drop(
        &self,
        envelope: Envelope,
        header: &HeaderSection,
        lines: &mut LineReader<'_>,
    ) -> Result<(), Failure> {
        use std::io::Write;
        let id = skein_spool::QueueId::generate();
        let limit = self.config.smtpd.max_message_size.bytes();
        let mut message = self
            .trace_and_headers(header, id.as_str(), false)
            .into_bytes();
        loop {
            check_limit(message.len() as u64, limit)?;
            match lines.next_line().map_err(noinput)? {
                Line::Data(bytes) => message.extend_from_slice(&bytes),
                _ => break,
            }
        }
        check_limit(message.len() as u64, limit)?;
        let bytes = skein_spool::render_file(&id, &envelope, &message).map_err(tempfail)?;
        let program = crate::supervisor::find_program(skein_spool::drop::POSTDROP)
            .map_err(|e| fail(EX_UNAVAILABLE, format!("cannot submit: {e}")))?;
        let mut command = std::process::Command::new(&program);
        if let skein_config::Source::File(path) = &self.source {
            command.arg("-c").arg(path);
        }
        let mut child = command
            .env_remove(skein_config::CONFIG_ENV)
            .stdin(std::process::Stdio::piped())
            // (Under `-bs` standard output is the SMTP session.)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                fail(
                    EX_UNAVAILABLE,
                    format!("cannot run {}: {e}", program.display()),
                )
            })?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(&bytes))
            .unwrap_or(Ok(()));
        let status = child
            .wait()
            .map_err(|e| fail(EX_TEMPFAIL, format!("cannot wait for skein-postdrop: {e}")))?;
        match status.code() {
            Some(0) if written.is_ok() => {
                if self.opts.verbose {
                    eprintln!(
                        "sendmail: handed to skein-postdrop for {} recipient(s)",
                        envelope.recipients.len()
                    );
                }
                Ok(())
            }
            Some(0) => Err(fail(
                EX_TEMPFAIL,
                "skein-postdrop did not take the whole message",
            )),
            Some(code) => Err(fail(
                u8::try_from(code).unwrap_or(EX_TEMPFAIL),
                format!("not queued: skein-postdrop exited {code}"),
            )),
            None => Err(fail(EX_TEMPFAIL, "not queued: skein-postdrop was killed")),
        }
    }

    fn trace_and_headers(&self, header: &HeaderSection, id: &str, received: bool) -> String {
        let host = &self.config.hostname;
        let date = skein_mail::date::now_local();
        let mut h = if received {
            format!(
                "Received: by {host} (skein sendmail, from userid {})\r\n\tid {id}; {date}\r\n",
                self.uid
            )
        } else {
            String::new()
        };
        for field in &header.fields {
            if !field.is_bcc() {
                h.push_str(&String::from_utf8_lossy(&field.raw));
            }
        }
        if !header.has("from") {
            let addr = if self.sender.is_empty() {
                format!("{}@{}", self.login, self.qualify_domain)
            } else {
                self.sender.clone()
            };
            match &self.opts.full_name {
                Some(name) => h.push_str(&format!("From: {} <{addr}>\r\n", quote_phrase(name))),
                None => h.push_str(&format!("From: {addr}\r\n")),
            }
        }
        if !header.has("date") {
            h.push_str(&format!("Date: {date}\r\n"));
        }
        if !header.has("message-id") {
            h.push_str(&format!("Message-ID: <{id}@{host}>\r\n"));
        }
        if !header.has("to") && !header.has("cc") {
            h.push_str("To: undisclosed-recipients:;\r\n");
        }
        h.push_str("\r\n");
        if let Some(first) = &header.first_body_line {
            h.push_str(&String::from_utf8_lossy(first));
        }
        h
    }
}

/// Whether this process writes the spool at `dir` itself: unless its
/// `tmp/` or `incoming/` is a directory that permissions keep us out of
/// (the spool belongs to the skein account), in which case the submission
/// goes through `skein-postdrop`. A spool not there yet (the quick start
/// creates it) or broken otherwise (not a directory, a read-only file
/// system) is written directly, so that its error is the one reported.
fn may_write_spool(dir: &Path) -> bool {
    use nix::unistd::{AccessFlags, access};
    let flags = AccessFlags::W_OK | AccessFlags::X_OK;
    ![skein_spool::Area::Tmp, skein_spool::Area::Incoming]
        .iter()
        .any(|area| {
            let path = dir.join(area.dir_name());
            path.is_dir() && access(&path, flags) == Err(nix::errno::Errno::EACCES)
        })
}

fn check_limit(size: u64, limit: u64) -> Result<(), Failure> {
    if limit > 0 && size > limit {
        return Err(fail(
            EX_DATAERR,
            format!(
                "message refused: larger than the size limit of {limit} bytes (smtpd.max_message_size)"
            ),
        ));
    }
    Ok(())
}

/// Writes through to the spool, refusing to go past the size limit.
struct Limited<'w> {
    writer: &'w mut MessageWriter,
    limit: u64,
}

impl Limited<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        check_limit(self.writer.written() + bytes.len() as u64, self.limit)?;
        self.writer.write_message(bytes).map_err(tempfail)
    }
}

fn tempfail(e: SpoolError) -> Failure {
    let code = match e {
        SpoolError::Invalid(_) => EX_DATAERR,
        _ => EX_TEMPFAIL,
    };
    fail(code, format!("cannot queue the message: {e}"))
}

fn noinput(e: io::Error) -> Failure {
    fail(
        EX_NOINPUT,
        format!("cannot read the message from standard input: {e}"),
    )
}

fn quote_phrase(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c))
    {
        name.to_string()
    } else {
        let escaped: String = name
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                _ => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// Splits a command-line recipient list on commas outside quotes.
fn split_list(arg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in arg.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One header field, with its continuation lines, as read (CRLF endings).
struct Field {
    name: String,
    raw: Vec<u8>,
}

impl Field {
    fn is_bcc(&self) -> bool {
        self.name.eq_ignore_ascii_case("bcc") || self.name.eq_ignore_ascii_case("resent-bcc")
    }
}

/// The message's header section, split into fields.
struct HeaderSection {
    fields: Vec<Field>,
    /// A line that ended the header section without a blank line (the
    /// message had no header/body separator); it starts the body.
    first_body_line: Option<Vec<u8>>,
}

fn field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b)))
        .then(|| String::from_utf8_lossy(name).into_owned())
}

impl HeaderSection {
    fn read(lines: &mut LineReader<'_>) -> Result<HeaderSection, Failure> {
        let mut fields: Vec<Field> = Vec::new();
        let mut total = 0usize;
        let mut first = true;
        loop {
            let line = match lines.next_line().map_err(noinput)? {
                Line::End => {
                    return Ok(HeaderSection {
                        fields,
                        first_body_line: None,
                    });
                }
                Line::Data(l) => l,
            };
            total += line.len();
            if total > MAX_HEADER_SECTION {
                return Err(fail(
                    EX_DATAERR,
                    format!(
                        "message refused: header section larger than {MAX_HEADER_SECTION} bytes"
                    ),
                ));
            }
            if first && line.starts_with(b"From ") {
                first = false;
                continue; // an mbox separator, not a header
            }
            first = false;
            if line == b"\r\n" {
                return Ok(HeaderSection {
                    fields,
                    first_body_line: None,
                });
            }
            let continuation = matches!(line.first(), Some(b' ') | Some(b'\t'));
            match (continuation, fields.last_mut()) {
                (true, Some(last)) => last.raw.extend_from_slice(&line),
                _ => match field_name(&line) {
                    Some(name) => fields.push(Field { name, raw: line }),
                    None => {
                        return Ok(HeaderSection {
                            fields,
                            first_body_line: Some(line),
                        });
                    }
                },
            }
        }
    }

    fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The addresses `-t` takes: Resent-To/Cc/Bcc when the message has
    /// any, else To/Cc/Bcc.
    fn recipients(&self) -> Vec<String> {
        let resent = self.fields.iter().any(|f| {
            ["resent-to", "resent-cc", "resent-bcc"]
                .iter()
                .any(|n| f.name.eq_ignore_ascii_case(n))
        });
        let wanted: &[&str] = if resent {
            &["resent-to", "resent-cc", "resent-bcc"]
        } else {
            &["to", "cc", "bcc"]
        };
        let mut raw = Vec::new();
        for f in &self.fields {
            if wanted.iter().any(|n| f.name.eq_ignore_ascii_case(n)) {
                // Parse each field alone under a neutral name, so that
                // mail-parser treats it as an address list.
                raw.extend_from_slice(b"To");
                raw.extend_from_slice(&f.raw[f.name.len()..]);
            }
        }
        raw.extend_from_slice(b"\r\n");
        let mut out = Vec::new();
        if let Some(msg) = mail_parser::MessageParser::default().parse_headers(&raw) {
            for value in msg.header_values(mail_parser::HeaderName::To) {
                if let Some(list) = value.as_address() {
                    out.extend(list.iter().filter_map(|a| match (a.address(), a.name()) {
                        (Some(addr), _) => Some(addr.to_string()),
                        // A bare user name ("Cc: carol"), which sendmail
                        // has always qualified with the local domain.
                        (None, Some(name)) if !name.trim().contains(char::is_whitespace) => {
                            Some(name.trim().to_string())
                        }
                        _ => None,
                    }));
                }
            }
        }
        out
    }
}
