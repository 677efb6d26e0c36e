//! The control file (`transport/<id>`): a routed message's recipients and
//! the journal of what happened to each of them.
//!
//! ```text
//! SKEIN-CONTROL 1
//! id 0SV3K8Q7J1M000A4R000
//! arrival 1764377978123456
//! sender joe@example.org
//! body 7BIT
//! smtputf8 0
//! origin sendmail%20uid=0
//! message queue/0SV3K8Q7J1M000A4R000 offset 412 size 4096
//! rcpt 0 local ann ann@localhost
//! rcpt 1 smtp example.net bob@example.net nexthop=127.0.0.1:2600 notify=FAILURE
//! crc32 9a0c33e1
//! .
//! outcome 1 1764377990000000 deferred 1 4.4.1 retry=1764378050000000 diag=connection%20refused *5a1f03c2
//! outcome 0 1764377990100000 delivered 1 2.0.0 diag=delivered%20to%20maildir *0b4c9e11
//! ```
//!
//! The part up to `.` is written once, atomically, by the router; its last
//! line is the CRC-32 of every byte before that line (files written before
//! that line existed are read without it). After
//! it, the scheduler *appends* one record per event with a single
//! `write(2)` followed by `fdatasync(2)`; each record ends with its own
//! CRC-32, so a record torn by a crash (the last line, incomplete or with a
//! bad checksum) is recognised and ignored — that event is simply
//! considered not to have happened, which at worst repeats a delivery. A
//! bad record *before* the last line cannot come from a crash and makes
//! the file corrupt.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use skein_mail::{EnhancedCode, Notify};

use crate::message::{parse_common, render_common};
use crate::text::{escape, unescape};
use crate::{Envelope, QueueId, SpoolError};

const MAGIC: &str = "SKEIN-CONTROL 1";

/// One routed recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecipient {
    /// Position in the file; outcome records refer to it.
    pub index: u32,
    /// Channel (`local`, `smtp`, …): names the agent.
    pub channel: String,
    /// Host within the channel: the thread is `(channel, host)`.
    pub host: String,
    /// The address to deliver to.
    pub address: String,
    /// Static next hop `host:port` (no MX lookup), when routed so.
    pub nexthop: Option<String>,
    /// NOTIFY= (RFC 3461), written and read as in the message file (see
    /// [`crate::Recipient::notify`]).
    pub notify: Option<Notify>,
    /// ORCPT= (RFC 3461): the address as originally given.
    pub orcpt: Option<String>,
}

/// The three outcomes of a delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The recipient is done.
    Delivered,
    /// Try again later.
    Deferred,
    /// Permanently failed: a bounce is due.
    Failed,
}

impl OutcomeKind {
    fn keyword(self) -> &'static str {
        match self {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Deferred => "deferred",
            OutcomeKind::Failed => "failed",
        }
    }
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The result of one attempt for one recipient.
    Outcome {
        /// Recipient index.
        rcpt: u32,
        /// When, microseconds since the epoch.
        at: u64,
        /// Delivered, deferred or failed.
        kind: OutcomeKind,
        /// Attempt number (1 = first).
        attempt: u32,
        /// Enhanced status code, e.g. `5.1.1` (written as that text).
        status: EnhancedCode,
        /// Earliest next attempt (deferred only).
        retry_at: Option<u64>,
        /// The remote server's reply, verbatim, when there was one.
        reply: Option<String>,
        /// The remote MTA, when there was one.
        remote_mta: Option<String>,
        /// Human-readable diagnostic.
        diagnostic: String,
    },
    /// The delivery status notification for these recipients is durably
    /// queued as `dsn` (empty when none was due: null sender, NOTIFY=NEVER).
    Notified {
        /// Recipient indexes.
        rcpts: Vec<u32>,
        /// When.
        at: u64,
        /// Which DSN: `failure`, `delay` or `success`.
        what: String,
        /// Queue id of the DSN message (empty when none was sent).
        dsn: String,
    },
    /// An administrator held the message.
    Held {
        /// When.
        at: u64,
    },
    /// An administrator released the message.
    Released {
        /// When.
        at: u64,
    },
}

/// A parsed control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFile {
    /// Queue id (shared with the message file).
    pub id: QueueId,
    /// Arrival, microseconds since the epoch.
    pub arrival_micros: u64,
    /// Sender, DSN parameters, body type, origin (`recipients` unused).
    pub envelope: Envelope,
    /// The message file, relative to the spool root.
    pub message: String,
    /// Where the RFC 5322 message starts in it.
    pub offset: u64,
    /// Message size in bytes.
    pub size: u64,
    /// Routed recipients.
    pub recipients: Vec<ControlRecipient>,
    /// The journal, oldest first.
    pub records: Vec<Record>,
}

fn opt_field(out: &mut String, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        out.push(' ');
        out.push_str(key);
        out.push('=');
        out.push_str(&escape(v));
    }
}

fn join_u32(v: &[u32]) -> String {
    if v.is_empty() {
        return "%".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Record {
    /// Renders the record as one line, checksum and newline included.
    pub fn render(&self) -> String {
        let mut s = match self {
            Record::Outcome {
                rcpt,
                at,
                kind,
                attempt,
                status,
                retry_at,
                reply,
                remote_mta,
                diagnostic,
            } => {
                let mut s = format!(
                    "outcome {rcpt} {at} {} {attempt} {}",
                    kind.keyword(),
                    escape(&status.to_string())
                );
                opt_field(&mut s, "retry", &retry_at.map(|r| r.to_string()));
                opt_field(&mut s, "reply", reply);
                opt_field(&mut s, "mta", remote_mta);
                opt_field(&mut s, "diag", &Some(diagnostic.clone()));
                s
            }
            Record::Notified {
                rcpts,
                at,
                what,
                dsn,
            } => format!(
                "notified {} {at} {} {}",
                join_u32(rcpts),
                escape(what),
                escape(dsn)
            ),
            Record::Held { at } => format!("held {at}"),
            Record::Released { at } => format!("released {at}"),
        };
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!(" *{crc:08x}\n"));
        s
    }

    fn parse(line: &str) -> Option<Record> {
        let (body, crc) = line.rsplit_once(" *")?;
        if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes())
        {
            return None;
        }
        let f: Vec<&str> = body.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().ok();
        match f.as_slice() {
            ["outcome", rcpt, at, kind, attempt, status, rest @ ..] => {
                let kind = match *kind {
                    "delivered" => OutcomeKind::Delivered,
                    "deferred" => OutcomeKind::Deferred,
                    "failed" => OutcomeKind::Failed,
                    _ => return None,
                };
                let mut rec = Record::Outcome {
                    rcpt: rcpt.parse().ok()?,
                    at: num(at)?,
                    kind,
                    attempt: attempt.parse().ok()?,
                    status: unescape(status)?.parse().ok()?,
                    retry_at: None,
                    reply: None,
                    remote_mta: None,
                    diagnostic: String::new(),
                };
                if let Record::Outcome {
                    retry_at,
                    reply,
                    remote_mta,
                    diagnostic,
                    ..
                } = &mut rec
                {
                    for kv in rest {
                        let (k, v) = kv.split_once('=')?;
                        let v = unescape(v)?;
                        match k {
                            "retry" => *retry_at = Some(v.parse().ok()?),
                            "reply" => *reply = Some(v),
                            "mta" => *remote_mta = Some(v),
                            "diag" => *diagnostic = v,
                            _ => return None,
                        }
                    }
                }
                Some(rec)
            }
            ["notified", rcpts, at, what, dsn] => Some(Record::Notified {
                rcpts: if *rcpts == "%" {
                    Vec::new()
                } else {
                    rcpts
                        .split(',')
                        .map(|r| r.parse().ok())
                        .collect::<Option<Vec<u32>>>()?
                },
                at: num(at)?,
                what: unescape(what)?,
                dsn: unescape(dsn)?,
            }),
            ["held", at] => Some(Record::Held { at: num(at)? }),
            ["released", at] => Some(Record::Released { at: num(at)? }),
            _ => None,
        }
    }
}

impl ControlFile {
    /// Renders the whole file (header and journal).
    pub fn render(&self) -> Result<String, SpoolError> {
        let mut h = String::with_capacity(512 + 96 * self.recipients.len());
        h.push_str(MAGIC);
        h.push('\n');
        h.push_str(&format!(
            "id {}\narrival {}\n",
            self.id, self.arrival_micros
        ));
        render_common(&self.envelope, &mut h);
        h.push_str(&format!(
            "message {} offset {} size {}\n",
            escape(&self.message),
            self.offset,
            self.size
        ));
        for (i, r) in self.recipients.iter().enumerate() {
            if r.index as usize != i {
                return Err(SpoolError::Invalid(format!(
                    "recipient {} has index {}",
                    i, r.index
                )));
            }
            h.push_str(&format!(
                "rcpt {} {} {} {}",
                r.index,
                escape(&r.channel),
                escape(&r.host),
                escape(&r.address)
            ));
            opt_field(&mut h, "nexthop", &r.nexthop);
            opt_field(&mut h, "notify", &r.notify.map(|n| n.to_string()));
            opt_field(&mut h, "orcpt", &r.orcpt);
            h.push('\n');
        }
        // The header's own checksum (the records carry theirs): a changed
        // byte in an address or a path must not go unnoticed.
        let crc = crc32fast::hash(h.as_bytes());
        h.push_str(&format!("crc32 {crc:08x}\n.\n"));
        for rec in &self.records {
            h.push_str(&rec.render());
        }
        Ok(h)
    }

    /// Parses a control file. Returns the file and whether its last record
    /// was torn (and ignored).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<(ControlFile, bool), SpoolError> {
        let bad = |why: String| SpoolError::corrupt(path, why);
        let text = std::str::from_utf8(bytes).map_err(|e| {
            // A torn append can leave a partial UTF-8 sequence at the very
            // end; anything else is damage.
            bad(format!("not UTF-8 at byte {}", e.valid_up_to()))
        });
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                let valid = std::str::from_utf8(
                    &bytes[..bytes.len().min(
                        bytes
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map(|p| p + 1)
                            .unwrap_or(0),
                    )],
                );
                match valid {
                    Ok(t) => t,
                    Err(_) => return Err(e),
                }
            }
        };
        let mut lines = text.split_inclusive('\n');
        if lines.next() != Some("SKEIN-CONTROL 1\n") {
            return Err(bad("not a skein control file".into()));
        }
        let mut id = None;
        let mut arrival = None;
        let mut env = Envelope::default();
        let (mut seen_sender, mut seen_body) = (false, false);
        let mut message = None;
        let mut recipients = Vec::new();
        let mut header_done = false;
        // Bytes of the header before the current line, for its checksum.
        let mut consumed = MAGIC.len() + 1;
        let mut checked = false;
        for raw in lines.by_ref() {
            let at = consumed;
            consumed += raw.len();
            let Some(line) = raw.strip_suffix('\n') else {
                break;
            };
            if line == "." {
                header_done = true;
                break;
            }
            if checked {
                return Err(bad(format!("header line after its checksum: {line:?}")));
            }
            if let Some(v) = line.strip_prefix("crc32 ") {
                let want = u32::from_str_radix(v, 16)
                    .ok()
                    .filter(|_| v.len() == 8)
                    .ok_or_else(|| bad(format!("bad {line:?}")))?;
                let got = crc32fast::hash(&bytes[..at]);
                if got != want {
                    return Err(bad(format!(
                        "header checksum mismatch (crc32 {got:08x} vs {want:08x})"
                    )));
                }
                checked = true;
                continue;
            }
            let f: Vec<&str> = line.split(' ').collect();
            let key = f[0];
            let one = || -> Result<String, SpoolError> {
                match &f[1..] {
                    [v] => unescape(v).ok_or_else(|| bad(format!("bad value in {line:?}"))),
                    _ => Err(bad(format!("{key}: expected one value in {line:?}"))),
                }
            };
            if parse_common(key, one, &mut env, &mut seen_sender, &mut seen_body, &bad)? {
                continue;
            }
            match f.as_slice() {
                ["id", v] => id = Some(v.parse::<QueueId>().map_err(|e| bad(e.to_string()))?),
                ["arrival", v] => {
                    arrival = Some(v.parse::<u64>().map_err(|_| bad(format!("bad {line:?}")))?)
                }
                ["message", m, "offset", o, "size", s] => {
                    message = Some((
                        unescape(m).ok_or_else(|| bad(format!("bad {line:?}")))?,
                        o.parse::<u64>().map_err(|_| bad(format!("bad {line:?}")))?,
                        s.parse::<u64>().map_err(|_| bad(format!("bad {line:?}")))?,
                    ))
                }
                ["rcpt", idx, channel, host, address, rest @ ..] => {
                    let e = || bad(format!("bad recipient line {line:?}"));
                    let index: u32 = idx.parse().map_err(|_| e())?;
                    if index as usize != recipients.len() {
                        return Err(bad(format!("recipient index {index} out of order")));
                    }
                    let mut r = ControlRecipient {
                        index,
                        channel: unescape(channel).ok_or_else(e)?,
                        host: unescape(host).ok_or_else(e)?,
                        address: unescape(address).ok_or_else(e)?,
                        nexthop: None,
                        notify: None,
                        orcpt: None,
                    };
                    for kv in rest {
                        let (k, v) = kv.split_once('=').ok_or_else(e)?;
                        let v = unescape(v).ok_or_else(e)?;
                        match k {
                            "nexthop" => r.nexthop = Some(v),
                            "notify" => {
                                r.notify = Some(Notify::parse_relaxed(&v).map_err(|_| e())?)
                            }
                            "orcpt" => r.orcpt = Some(v),
                            _ => return Err(e()),
                        }
                    }
                    recipients.push(r);
                }
                _ => return Err(bad(format!("unknown header line {line:?}"))),
            }
        }
        if !header_done {
            return Err(bad("header ends before its terminating '.' line".into()));
        }
        let missing = |what: &str| bad(format!("header lacks {what}"));
        if !seen_sender {
            return Err(missing("sender"));
        }
        if !seen_body {
            return Err(missing("body"));
        }
        let (message, offset, size) = message.ok_or_else(|| missing("message"))?;
        if recipients.is_empty() {
            return Err(missing("recipients"));
        }
        let mut records = Vec::new();
        let mut torn = false;
        let rest: Vec<&str> = lines.collect();
        for (i, line) in rest.iter().enumerate() {
            let last = i + 1 == rest.len();
            let parsed = line.strip_suffix('\n').and_then(Record::parse);
            match parsed {
                Some(rec) => {
                    if let Record::Outcome { rcpt, .. } = &rec
                        && *rcpt as usize >= recipients.len()
                    {
                        return Err(bad(format!("record for unknown recipient {rcpt}")));
                    }
                    records.push(rec)
                }
                None if last => torn = true,
                None => return Err(bad(format!("damaged journal record {line:?}"))),
            }
        }
        // Bytes after the last newline that were not valid UTF-8 are a torn
        // record too.
        if text.len() < bytes.len() {
            torn = true;
        }
        Ok((
            ControlFile {
                id: id.ok_or_else(|| missing("id"))?,
                arrival_micros: arrival.ok_or_else(|| missing("arrival"))?,
                envelope: env,
                message,
                offset,
                size,
                recipients,
                records,
            },
            torn,
        ))
    }

    /// Reads and parses a control file from disk.
    pub fn read(path: &Path) -> Result<(ControlFile, bool), SpoolError> {
        let bytes = std::fs::read(path).map_err(|e| SpoolError::io("read", path, e))?;
        Self::parse(&bytes, path)
    }
}

/// Appends journal records durably to an existing control file.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens `path` for appending. If the file ends in a torn record (see
    /// [`ControlFile::parse`]) the caller should first rewrite it with
    /// [`crate::Spool::rewrite_control`]; appending after a torn line would
    /// make it look like damage in the middle.
    pub fn open(path: &Path) -> Result<Journal, SpoolError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| SpoolError::io("open", path, e))?;
        Ok(Journal {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends the records with one `write` and makes them durable
    /// (`fdatasync`) before returning.
    pub fn append(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        self.write(records)?;
        self.sync()
    }

    /// Appends the records with one `write`, without waiting for the disk:
    /// they survive the death of the process at once, a power loss only
    /// after a later [`Journal::sync`] (or an `append`) on the file.
    pub fn write(&mut self, records: &[Record]) -> Result<(), SpoolError> {
        let text: String = records.iter().map(Record::render).collect();
        self.file
            .write_all(text.as_bytes())
            .map_err(|e| SpoolError::io("append", &self.path, e))
    }

    /// Makes everything written to the file so far durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.file
            .sync_data()
            .map_err(|e| SpoolError::io("fdatasync", &self.path, e))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::BodyType;

    pub(crate) fn sample() -> ControlFile {
        ControlFile {
            id: QueueId::from_parts(1_764_377_978_123_456, 42, 1),
            arrival_micros: 1_764_377_978_123_456,
            envelope: Envelope {
                sender: String::new(),
                envid: Some("x y".into()),
                body: BodyType::EightBitMime,
                origin: "smtp [127.0.0.1]".into(),
                ..Default::default()
            },
            message: "queue/X".into(),
            offset: 300,
            size: 4096,
            recipients: vec![
                ControlRecipient {
                    index: 0,
                    channel: "local".into(),
                    host: "ann".into(),
                    address: "ann@localhost".into(),
                    nexthop: None,
                    notify: None,
                    orcpt: None,
                },
                ControlRecipient {
                    index: 1,
                    channel: "smtp".into(),
                    host: "example.net".into(),
                    address: "\"b b\"@example.net".into(),
                    nexthop: Some("127.0.0.1:2600".into()),
                    notify: Some("FAILURE,DELAY".parse().unwrap()),
                    orcpt: Some("rfc822;b@example.net".into()),
                },
            ],
            records: vec![
                Record::Outcome {
                    rcpt: 1,
                    at: 5,
                    kind: OutcomeKind::Deferred,
                    attempt: 1,
                    status: "4.4.1".parse().unwrap(),
                    retry_at: Some(65),
                    reply: None,
                    remote_mta: None,
                    diagnostic: "connection refused".into(),
                },
                Record::Outcome {
                    rcpt: 0,
                    at: 6,
                    kind: OutcomeKind::Failed,
                    attempt: 2,
                    status: "5.1.1".parse().unwrap(),
                    retry_at: None,
                    reply: Some("550 5.1.1 no such user\r\n".into()),
                    remote_mta: Some("mx.example.net".into()),
                    diagnostic: String::new(),
                },
                Record::Notified {
                    rcpts: vec![0],
                    at: 7,
                    what: "failure".into(),
                    dsn: String::new(),
                },
                Record::Held { at: 8 },
                Record::Released { at: 9 },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        let text = c.render().unwrap();
        let (back, torn) = ControlFile::parse(text.as_bytes(), Path::new("t")).unwrap();
        assert!(!torn);
        assert_eq!(back, c);
    }

    #[test]
    fn a_changed_header_byte_is_caught_by_the_header_checksum() {
        let c = sample();
        let text = c.render().unwrap();
        assert!(ControlFile::parse(text.as_bytes(), Path::new("x")).is_ok());
        // One letter of an address: still a well-formed file.
        let changed = text.replacen("@example", "@exbmple", 1);
        assert_ne!(changed, text);
        match ControlFile::parse(changed.as_bytes(), Path::new("x")) {
            Err(SpoolError::Corrupt { reason, .. }) => {
                assert!(reason.contains("header checksum"), "{reason}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // A file without the line (written before it existed) still reads.
        let old: String = text
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("crc32 "))
            .collect();
        assert_eq!(
            ControlFile::parse(old.as_bytes(), Path::new("x"))
                .unwrap()
                .0,
            c
        );
    }

    #[test]
    fn torn_last_record_is_ignored_but_damage_in_the_middle_is_corrupt() {
        let c = sample();
        let text = c.render().unwrap();
        let full = text.len();
        // Every truncation inside the last record: torn, earlier records kept.
        let last_start = text[..full - 1].rfind('\n').unwrap() + 1;
        for cut in last_start..full {
            let (back, torn) = ControlFile::parse(&text.as_bytes()[..cut], Path::new("t")).unwrap();
            assert_eq!(torn, cut != last_start, "cut at {cut}");
            assert_eq!(back.records.len(), c.records.len() - 1);
        }
        // A flipped byte in the first record: corrupt.
        let first = text.find("outcome").unwrap();
        let mut damaged = text.clone().into_bytes();
        damaged[first + 9] ^= 1;
        assert!(matches!(
            ControlFile::parse(&damaged, Path::new("t")),
            Err(SpoolError::Corrupt { .. })
        ));
        // Garbage bytes (not UTF-8) appended: torn.
        let mut junk = text.into_bytes();
        junk.extend_from_slice(&[0xff, 0xfe, b'x']);
        let (_, torn) = ControlFile::parse(&junk, Path::new("t")).unwrap();
        assert!(torn);
    }

    #[test]
    fn journal_appends_durably() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        let mut c = sample();
        let extra = c.records.pop().unwrap();
        std::fs::write(&p, c.render().unwrap()).unwrap();
        Journal::open(&p)
            .unwrap()
            .append(std::slice::from_ref(&extra))
            .unwrap();
        let (back, torn) = ControlFile::read(&p).unwrap();
        assert!(!torn);
        assert_eq!(back.records.last(), Some(&extra));
    }

    #[test]
    fn rejects_bad_headers() {
        let good = sample().render().unwrap();
        for (what, text) in [
            (
                "no magic",
                good.replacen("SKEIN-CONTROL 1", "SKEIN-CONTROL 2", 1),
            ),
            (
                "no end",
                good[..good.find("\n.\n").unwrap() + 1].to_string(),
            ),
            ("bad index", good.replacen("rcpt 1 ", "rcpt 3 ", 1)),
            ("unknown key", good.replacen("origin", "origen", 1)),
            ("record for unknown rcpt", {
                let mut c = sample();
                c.records.push(Record::Outcome {
                    rcpt: 9,
                    at: 1,
                    kind: OutcomeKind::Delivered,
                    attempt: 1,
                    status: "2.0.0".parse().unwrap(),
                    retry_at: None,
                    reply: None,
                    remote_mta: None,
                    diagnostic: String::new(),
                });
                c.records.push(Record::Held { at: 2 });
                c.render().unwrap()
            }),
        ] {
            assert!(
                matches!(
                    ControlFile::parse(text.as_bytes(), Path::new("t")),
                    Err(SpoolError::Corrupt { .. })
                ),
                "{what}"
            );
        }
    }
}
