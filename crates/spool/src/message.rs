//! The message file: an envelope header followed by the RFC 5322 message.
//!
//! ```text
//! SKEIN-MESSAGE 1
//! id 0SV3K8Q7J1M000A4R000
//! arrival 1764377978123456
//! sender joe@example.org
//! envid QQ314159            (optional)
//! ret HDRS                  (optional)
//! body 8BITMIME
//! smtputf8 0
//! origin sendmail%20uid=1000%20user=joe
//! rcpt ann@example.net notify=SUCCESS,FAILURE orcpt=rfc822;ann@example.net
//! rcpt bob@example.net
//! quarantine virus%20found  (optional: a content filter asked to hold it)
//! filtered 1                (optional: the router's filters ran and changed it)
//! size 00000000000000004096
//! crc32 1c291ca3
//! eightbit 0
//! .
//! <size bytes of message, CRLF line endings>
//! ```
//!
//! Fields are escaped with [`crate::text::escape`]. `size`, `crc32` (of
//! the message bytes) and `eightbit` are fixed-width so that the writer can fill them in
//! after streaming the message; the file is only ever visible under its
//! final name once complete, so a reader that finds a size that does not
//! match the file, a bad checksum or an unknown keyword has found a corrupt
//! file, not one being written.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use skein_mail::{BodyType, Notify, Ret};

use crate::durable::{self, GroupSync, fsync_dir};
use crate::pool::{Kind, Pool};
use crate::text::{escape, unescape};
use crate::{QueueId, SpoolError};

const MAGIC: &str = "SKEIN-MESSAGE 1";
/// The envelope header may not exceed this many bytes (a few hundred
/// thousand recipients); a larger one is corrupt.
pub const MAX_HEADER: u64 = 64 * 1024 * 1024;

/// One envelope recipient with its DSN parameters (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// The address as given in RCPT TO (without angle brackets).
    pub address: String,
    /// NOTIFY=, when given. Written as `NEVER` or the conditions in the
    /// order SUCCESS,FAILURE,DELAY; read with
    /// [`Notify::parse_relaxed`], which also takes the user's order and
    /// repeats that older files hold for `sendmail -N`.
    pub notify: Option<Notify>,
    /// ORCPT= value (`addr-type;xtext`), when given.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// A recipient without DSN parameters.
    pub fn new(address: impl Into<String>) -> Self {
        Recipient {
            address: address.into(),
            notify: None,
            orcpt: None,
        }
    }

    /// The recipients a content filter left, `addresses` in its order:
    /// those of `original` still there keep their DSN parameters, the
    /// ones it added have none.
    pub fn after_filter(original: &[Recipient], addresses: &[String]) -> Vec<Recipient> {
        addresses
            .iter()
            .map(|a| {
                original
                    .iter()
                    .find(|r| r.address.eq_ignore_ascii_case(a))
                    .cloned()
                    .unwrap_or_else(|| Recipient::new(a.clone()))
            })
            .collect()
    }
}

/// Everything about a message except its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Reverse path; empty for the null sender (bounces).
    pub sender: String,
    /// Forward paths, in the order they were given.
    pub recipients: Vec<Recipient>,
    /// ENVID= (RFC 3461).
    pub envid: Option<String>,
    /// RET= (RFC 3461).
    pub ret: Option<Ret>,
    /// BODY= type.
    pub body: BodyType,
    /// SMTPUTF8 was given (RFC 6531).
    pub smtputf8: bool,
    /// Where the message came from, for logs and `queue show`
    /// (e.g. `sendmail uid=1000 user=joe`, `smtp [192.0.2.1] helo=x`).
    pub origin: String,
}

/// A message file's header, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The queue id (also the file name).
    pub id: QueueId,
    /// When the message was accepted, microseconds since the Unix epoch.
    pub arrival_micros: u64,
    /// The envelope.
    pub envelope: Envelope,
    /// Offset of the first message byte in the file.
    pub offset: u64,
    /// Number of message bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the message bytes.
    pub crc32: u32,
    /// The message holds bytes above 127 (it needs 8BITMIME or SMTPUTF8
    /// whatever its declared body type).
    pub eightbit: bool,
    /// A content filter asked for it to be held (quarantined), with this
    /// reason: the router queues it held.
    pub quarantine: Option<String>,
    /// The router's content filters (`router.milters`) have run on it and
    /// this is what they made of it: a router that crashed before routing
    /// it does not filter it again.
    pub filtered: bool,
}

fn check_field(what: &str, value: &str) -> Result<(), SpoolError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(SpoolError::Invalid(format!(
            "{what} contains a line break or NUL: {value:?}"
        )));
    }
    Ok(())
}

/// Writes the envelope lines shared by message and control files.
pub(crate) fn render_common(env: &Envelope, h: &mut String) {
    h.push_str(&format!("sender {}\n", escape(&env.sender)));
    if let Some(envid) = &env.envid {
        h.push_str(&format!("envid {}\n", escape(envid)));
    }
    if let Some(ret) = env.ret {
        h.push_str(&format!("ret {}\n", ret.keyword()));
    }
    h.push_str(&format!(
        "body {}\nsmtputf8 {}\norigin {}\n",
        env.body.keyword(),
        u8::from(env.smtputf8),
        escape(&env.origin)
    ));
}

/// Parses one of the envelope lines shared by message and control files
/// into `env`. `Ok(false)` when `key` is not one of them.
pub(crate) fn parse_common(
    key: &str,
    value: impl FnOnce() -> Result<String, SpoolError>,
    env: &mut Envelope,
    seen_sender: &mut bool,
    seen_body: &mut bool,
    bad: &dyn Fn(String) -> SpoolError,
) -> Result<bool, SpoolError> {
    match key {
        "sender" => {
            env.sender = value()?;
            *seen_sender = true;
        }
        "envid" => env.envid = Some(value()?),
        "ret" => {
            let v = value()?;
            env.ret = Some(Ret::from_keyword(&v).ok_or_else(|| bad(format!("bad ret {v:?}")))?);
        }
        "body" => {
            let v = value()?;
            env.body = BodyType::from_keyword(&v).ok_or_else(|| bad(format!("bad body {v:?}")))?;
            *seen_body = true;
        }
        "smtputf8" => {
            env.smtputf8 = match value()?.as_str() {
                "0" => false,
                "1" => true,
                v => return Err(bad(format!("bad smtputf8 {v:?}"))),
            }
        }
        "origin" => env.origin = value()?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn render_header(
    id: &QueueId,
    arrival: u64,
    env: &Envelope,
    quarantine: Option<&str>,
    filtered: bool,
) -> Result<(String, usize), SpoolError> {
    check_field("sender", &env.sender)?;
    let mut h = String::with_capacity(256 + 64 * env.recipients.len());
    h.push_str(MAGIC);
    h.push('\n');
    h.push_str(&format!("id {id}\narrival {arrival}\n"));
    render_common(env, &mut h);
    for r in &env.recipients {
        check_field("recipient", &r.address)?;
        h.push_str("rcpt ");
        h.push_str(&escape(&r.address));
        if let Some(n) = r.notify {
            h.push_str(" notify=");
            h.push_str(&escape(&n.to_string()));
        }
        if let Some(o) = &r.orcpt {
            h.push_str(" orcpt=");
            h.push_str(&escape(o));
        }
        h.push('\n');
    }
    if let Some(reason) = quarantine {
        check_field("quarantine", reason)?;
        h.push_str(&format!("quarantine {}\n", escape(reason)));
    }
    if filtered {
        h.push_str("filtered 1\n");
    }
    let size_at = h.len() + "size ".len();
    h.push_str("size 00000000000000000000\ncrc32 00000000\neightbit 0\n.\n");
    Ok((h, size_at))
}

/// Streams one message into `tmp/` and, on [`commit`](Self::commit), makes
/// it durable under its final name. Dropping it without committing removes
/// the temporary file.
#[derive(Debug)]
pub struct MessageWriter {
    file: io::BufWriter<File>,
    tmp_path: PathBuf,
    dest_dir: PathBuf,
    id: QueueId,
    size_at: u64,
    written: u64,
    eightbit: bool,
    hasher: crc32fast::Hasher,
    committed: bool,
    /// When the message arrived (kept by [`rewrite`](Self::rewrite)).
    arrival: u64,
    /// Rewritten shorter than before: truncate at the commit.
    truncate: bool,
    /// The file was taken from this pool: it is synced before the commit.
    recycled_from: Option<Arc<Pool>>,
    /// Group commit for `dest_dir`, shared with the process's other
    /// writers; without one, `dest_dir` is fsynced on its own.
    dest_sync: Option<Arc<GroupSync>>,
}

impl MessageWriter {
    /// Starts a message in `tmp_dir`, in a file taken from `pool` if it
    /// has one, else a new one; `commit` moves it into `dest_dir`.
    pub(crate) fn create(
        tmp_dir: &Path,
        dest_dir: &Path,
        env: &Envelope,
        pool: Option<&Arc<Pool>>,
        dest_sync: Option<&Arc<GroupSync>>,
    ) -> Result<MessageWriter, SpoolError> {
        let id = QueueId::generate();
        let tmp_path = tmp_dir.join(format!("{}.{id}", std::process::id()));
        let taken = pool.and_then(|pool| {
            pool.take(Kind::Message, &tmp_path)
                .map(|file| (file, Arc::clone(pool)))
        });
        let (file, recycled_from) = match taken {
            Some((file, pool)) => (file, Some(pool)),
            None => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(crate::FILE_MODE)
                    .open(&tmp_path)
                    .map_err(|e| SpoolError::io("create", &tmp_path, e))?;
                (file, None)
            }
        };
        let arrival = now_micros();
        let (header, size_at) = render_header(&id, arrival, env, None, false)?;
        let mut w = MessageWriter {
            file: io::BufWriter::with_capacity(64 * 1024, file),
            tmp_path,
            dest_dir: dest_dir.to_path_buf(),
            id,
            size_at: size_at as u64,
            written: 0,
            eightbit: false,
            hasher: crc32fast::Hasher::new(),
            committed: false,
            arrival,
            truncate: false,
            recycled_from,
            dest_sync: dest_sync.cloned(),
        };
        w.file
            .write_all(header.as_bytes())
            .map_err(|e| SpoolError::io("write", &w.tmp_path, e))?;
        Ok(w)
    }

    /// The id this message will have (it may change on commit in the rare
    /// case of a name collision).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Message bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends message bytes.
    pub fn write_message(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        self.hasher.update(bytes);
        self.eightbit = self.eightbit || !bytes.is_ascii();
        self.written += bytes.len() as u64;
        self.file
            .write_all(bytes)
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))
    }

    /// Replaces everything written so far by `message` under `env` (the
    /// same id and arrival): what the content filters made of the message.
    /// Nothing is durable before [`commit`](Self::commit).
    ///
    /// `quarantine`: the message is to be held when it is routed, with
    /// this reason (a filter asked for it).
    pub fn rewrite(
        &mut self,
        env: &Envelope,
        message: &[u8],
        quarantine: Option<&str>,
    ) -> Result<(), SpoolError> {
        use std::io::Seek;
        let (header, size_at) = render_header(&self.id, self.arrival, env, quarantine, false)?;
        self.file
            .flush()
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        self.file
            .get_mut()
            .seek(SeekFrom::Start(0))
            .map_err(|e| SpoolError::io("seek", &self.tmp_path, e))?;
        self.size_at = size_at as u64;
        self.written = 0;
        self.eightbit = false;
        self.hasher = crc32fast::Hasher::new();
        self.truncate = true;
        self.file
            .write_all(header.as_bytes())
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        self.write_message(message)
    }

    /// Fills in size and checksum, fsyncs the file, renames it into the
    /// destination directory without replacing anything, and fsyncs that
    /// directory. Only when this returns `Ok` may the message be
    /// acknowledged.
    pub fn commit(mut self) -> Result<QueueId, SpoolError> {
        self.file
            .flush()
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        let crc = self.hasher.clone().finalize();
        let patch = format!(
            "{:020}\ncrc32 {crc:08x}\neightbit {}",
            self.written,
            u8::from(self.eightbit)
        );
        let file = self.file.get_ref();
        file.write_all_at(patch.as_bytes(), self.size_at)
            .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        if self.recycled_from.is_some() || self.truncate {
            // A recycled or rewritten file still has old content past ours.
            let end = self
                .file
                .get_ref()
                .stream_position()
                .map_err(|e| SpoolError::io("seek", &self.tmp_path, e))?;
            file.set_len(end)
                .map_err(|e| SpoolError::io("truncate", &self.tmp_path, e))?;
        }
        file.sync_all()
            .map_err(|e| SpoolError::io("fsync", &self.tmp_path, e))?;
        if let Some(pool) = &self.recycled_from {
            // Its old name in free/ must be gone for good before the
            // message's name appears.
            pool.sync()?;
        }
        loop {
            let dest = self.dest_dir.join(self.id.as_str());
            if durable::rename_noreplace(&self.tmp_path, &dest)? {
                break;
            }
            // A name collision (only possible with a clock set back while an
            // old message of the same pid remains): draw a new id and patch
            // it into the header, which stores it at a fixed place.
            self.id = QueueId::generate();
            let id_at = (MAGIC.len() + 1 + "id ".len()) as u64;
            let file = self.file.get_ref();
            file.write_all_at(self.id.as_str().as_bytes(), id_at)
                .and_then(|()| file.sync_all())
                .map_err(|e| SpoolError::io("write", &self.tmp_path, e))?;
        }
        self.committed = true;
        match &self.dest_sync {
            Some(group) => group.sync()?,
            None => fsync_dir(&self.dest_dir)?,
        }
        Ok(self.id.clone())
    }
}

impl Write for MessageWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_message(buf)
            .map(|()| buf.len())
            .map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Reads and checks a message file's header. The message bytes are not
/// read: call [`verify_body`] (or stream them yourself from
/// `info.offset`) to check the checksum.
pub fn read_header(path: &Path) -> Result<(MessageInfo, File), SpoolError> {
    let file = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let mut reader = BufReader::new(file.take(MAX_HEADER));
    let info = parse_header(&mut reader, path, len)?;
    let file = reader.into_inner().into_inner();
    Ok((info, file))
}

/// Parses a header from `reader`; `file_len` is the whole file's length.
pub fn parse_header(
    reader: &mut impl BufRead,
    path: &Path,
    file_len: u64,
) -> Result<MessageInfo, SpoolError> {
    let bad = |why: String| SpoolError::corrupt(path, why);
    let mut consumed = 0u64;
    let mut line = String::new();
    let mut next = |line: &mut String| -> Result<bool, SpoolError> {
        line.clear();
        let mut raw = Vec::new();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(|e| SpoolError::io("read", path, e))?;
        consumed += n as u64;
        if n == 0 || raw.last() != Some(&b'\n') {
            return Ok(false);
        }
        raw.pop();
        *line = String::from_utf8(raw).map_err(|_| bad("header is not UTF-8".into()))?;
        Ok(true)
    };
    if !next(&mut line)? || line != MAGIC {
        return Err(bad(match line.strip_prefix("SKEIN-MESSAGE ") {
            Some(version) => {
                format!("message file format version {version:?}: this skein reads {MAGIC:?}")
            }
            None => format!("not a skein message file (first line {line:?})"),
        }));
    }
    let mut id = None;
    let mut arrival = None;
    let mut seen_sender = false;
    let mut seen_body = false;
    let mut env = Envelope::default();
    let mut size = None;
    let mut crc = None;
    let mut eightbit = None;
    let mut quarantine = None;
    let mut filtered = false;
    loop {
        if !next(&mut line)? {
            return Err(bad("header ends before its terminating '.' line".into()));
        }
        if line == "." {
            break;
        }
        let mut fields = line.split(' ');
        let key = fields.next().unwrap_or("");
        let rest: Vec<&str> = fields.collect();
        let one = || -> Result<String, SpoolError> {
            match rest.as_slice() {
                [v] => unescape(v).ok_or_else(|| bad(format!("bad value in {line:?}"))),
                _ => Err(bad(format!("{key}: expected one value in {line:?}"))),
            }
        };
        if parse_common(key, one, &mut env, &mut seen_sender, &mut seen_body, &bad)? {
            continue;
        }
        match key {
            "id" => id = Some(one()?.parse::<QueueId>().map_err(|e| bad(e.to_string()))?),
            "arrival" => {
                arrival = Some(
                    one()?
                        .parse::<u64>()
                        .map_err(|_| bad(format!("bad arrival in {line:?}")))?,
                )
            }
            "rcpt" => {
                let mut parts = rest.iter();
                let address = parts
                    .next()
                    .and_then(|a| unescape(a))
                    .ok_or_else(|| bad(format!("bad rcpt {line:?}")))?;
                let mut r = Recipient::new(address);
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| bad(format!("bad rcpt parameter {p:?}")))?;
                    let v = unescape(v).ok_or_else(|| bad(format!("bad rcpt parameter {p:?}")))?;
                    match k {
                        "notify" => {
                            let n = Notify::parse_relaxed(&v)
                                .map_err(|e| bad(format!("bad rcpt parameter {p:?}: {e}")))?;
                            r.notify = Some(n);
                        }
                        "orcpt" => r.orcpt = Some(v),
                        _ => return Err(bad(format!("unknown rcpt parameter {p:?}"))),
                    }
                }
                env.recipients.push(r);
            }
            "size" => {
                size = Some(
                    one()?
                        .parse::<u64>()
                        .map_err(|_| bad(format!("bad size {line:?}")))?,
                )
            }
            "crc32" => {
                crc = Some(
                    u32::from_str_radix(&one()?, 16)
                        .map_err(|_| bad(format!("bad crc32 {line:?}")))?,
                )
            }
            "quarantine" => quarantine = Some(one()?),
            "filtered" => {
                filtered = match one()?.as_str() {
                    "1" => true,
                    _ => return Err(bad(format!("bad filtered {line:?}"))),
                }
            }
            "eightbit" => {
                eightbit = Some(match one()?.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad(format!("bad eightbit {line:?}"))),
                })
            }
            _ => return Err(bad(format!("unknown header line {line:?}"))),
        }
    }
    let missing = |what: &str| bad(format!("header lacks {what}"));
    let id = id.ok_or_else(|| missing("id"))?;
    if !seen_sender {
        return Err(missing("sender"));
    }
    if !seen_body {
        return Err(missing("body"));
    }
    let size = size.ok_or_else(|| missing("size"))?;
    let crc32 = crc.ok_or_else(|| missing("crc32"))?;
    if env.recipients.is_empty() {
        return Err(missing("recipients"));
    }
    if consumed.checked_add(size) != Some(file_len) {
        return Err(bad(format!(
            "size mismatch: header says {size} message bytes after {consumed} header bytes, file has {file_len} bytes"
        )));
    }
    Ok(MessageInfo {
        id,
        arrival_micros: arrival.ok_or_else(|| missing("arrival"))?,
        envelope: env,
        offset: consumed,
        size,
        crc32,
        eightbit: eightbit.ok_or_else(|| missing("eightbit"))?,
        quarantine,
        filtered,
    })
}

/// Reads the message bytes and checks them against the header's checksum.
pub fn verify_body(info: &MessageInfo, file: &mut File, path: &Path) -> Result<(), SpoolError> {
    file.seek(SeekFrom::Start(info.offset))
        .map_err(|e| SpoolError::io("seek", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| SpoolError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    let crc = hasher.finalize();
    if total != info.size || crc != info.crc32 {
        return Err(SpoolError::corrupt(
            path,
            format!(
                "message bytes do not match the header (size {total} vs {}, crc32 {crc:08x} vs {:08x})",
                info.size, info.crc32
            ),
        ));
    }
    Ok(())
}

/// Opens the message file at `path` for delivery and checks it against
/// what its control file says the message is (`offset`, `size`): the
/// header must parse in this format version, place the message at that
/// offset with that size, and the CRC-32 of the message bytes must match
/// the header's. Returns the file positioned at the message's first byte.
///
/// A mismatch of any kind is [`SpoolError::Corrupt`] (and a missing file
/// is a not-found [`SpoolError::Io`]): the message must not be sent.
/// Costs one sequential read of the file, normally from the page cache
/// (the checksum runs at several GB/s), before the agent reads it again
/// to send it; docs/spool.md "What is checked where" has the figures.
pub fn open_verified(path: &Path, offset: u64, size: u64) -> Result<File, SpoolError> {
    let (info, mut file) = read_header(path)?;
    if info.offset != offset || info.size != size {
        return Err(SpoolError::corrupt(
            path,
            format!(
                "the control file puts the message at offset {offset} with {size} bytes, \
                 the message file at offset {} with {} bytes",
                info.offset, info.size
            ),
        ));
    }
    verify_body(&info, &mut file, path)?;
    file.seek(SeekFrom::Start(info.offset))
        .map_err(|e| SpoolError::io("seek", path, e))?;
    Ok(file)
}

/// Writes a complete message file at `path`, outside any spool directory
/// and without fsync: for tests, tools and benchmarks that hand an agent
/// a job. Returns the header as [`read_header`] would read it back.
pub fn write_file(path: &Path, env: &Envelope, message: &[u8]) -> Result<MessageInfo, SpoolError> {
    let bytes = render_file(&QueueId::generate(), env, message)?;
    std::fs::write(path, &bytes).map_err(|e| SpoolError::io("write", path, e))?;
    Ok(read_header(path)?.0)
}

/// A complete message file with queue id `id`, in memory: what
/// [`write_file`] writes, and what `skein sendmail` hands `skein-postdrop`
/// ([`crate::drop`]).
pub fn render_file(id: &QueueId, env: &Envelope, message: &[u8]) -> Result<Vec<u8>, SpoolError> {
    render_file_at(id, now_micros(), env, message, None, false)
}

/// A complete message file with queue id `id` and arrival time `arrival`
/// (microseconds since the epoch), in memory: for a message rewritten in
/// place (the router's DKIM signature), which keeps both.
pub fn render_file_at(
    id: &QueueId,
    arrival: u64,
    env: &Envelope,
    message: &[u8],
    quarantine: Option<&str>,
    filtered: bool,
) -> Result<Vec<u8>, SpoolError> {
    let (header, size_at) = render_header(id, arrival, env, quarantine, filtered)?;
    let mut bytes = header.into_bytes();
    let patch = format!(
        "{:020}\ncrc32 {:08x}\neightbit {}",
        message.len(),
        crc32fast::hash(message),
        u8::from(!message.is_ascii())
    );
    bytes[size_at..size_at + patch.len()].copy_from_slice(patch.as_bytes());
    bytes.extend_from_slice(message);
    Ok(bytes)
}

/// Reads a whole message file, checks it, and returns the header and the
/// message bytes. For tests and tools; daemons stream instead.
pub fn read_message(path: &Path) -> Result<(MessageInfo, Vec<u8>), SpoolError> {
    let (info, mut file) = read_header(path)?;
    verify_body(&info, &mut file, path)?;
    file.seek(SeekFrom::Start(info.offset))
        .map_err(|e| SpoolError::io("seek", path, e))?;
    let mut bytes = Vec::with_capacity(info.size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| SpoolError::io("read", path, e))?;
    Ok((info, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            sender: "joe@example.org".into(),
            recipients: vec![
                Recipient {
                    address: "\"ann smith\"@example.net".into(),
                    notify: Some("SUCCESS,FAILURE".parse().unwrap()),
                    orcpt: Some("rfc822;ann@example.net".into()),
                },
                Recipient::new("bob@bücher.example"),
            ],
            envid: Some("QQ 314".into()),
            ret: Some(Ret::Headers),
            body: BodyType::EightBitMime,
            smtputf8: true,
            origin: "sendmail uid=0 user=root".into(),
        }
    }

    fn write(dir: &Path, env: &Envelope, body: &[u8]) -> (QueueId, PathBuf) {
        let tmp = dir.join("tmp");
        let inc = dir.join("incoming");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&inc).unwrap();
        let mut w = MessageWriter::create(&tmp, &inc, env, None, None).unwrap();
        for chunk in body.chunks(7) {
            w.write_message(chunk).unwrap();
        }
        let id = w.commit().unwrap();
        let path = inc.join(id.as_str());
        (id, path)
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let body = b"Subject: hi\r\n\r\nhello\r\n.\r\n".to_vec();
        let (id, path) = write(d.path(), &sample(), &body);
        let (info, bytes) = read_message(&path).unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.envelope, sample());
        assert_eq!(bytes, body);
        assert_eq!(info.size, body.len() as u64);
        assert!(!info.eightbit);
        let (_, path) = write(d.path(), &sample(), "Subject: ü\r\n\r\n".as_bytes());
        assert!(read_message(&path).unwrap().0.eightbit);
        assert!(
            std::fs::read_dir(d.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn empty_optional_fields_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let env = Envelope {
            recipients: vec![Recipient::new("a@b")],
            ..Default::default()
        };
        let (_, path) = write(d.path(), &env, b"");
        assert_eq!(read_message(&path).unwrap().0.envelope, env);
    }

    #[test]
    fn a_rewritten_message_is_what_is_committed() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        let inc = d.path().join("incoming");
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&inc).unwrap();
        let mut w = MessageWriter::create(&tmp, &inc, &sample(), None, None).unwrap();
        let id = w.id().clone();
        w.write_message(&vec![b'x'; 10_000]).unwrap();
        // Shorter, with another envelope: nothing of the first is left.
        let mut env = sample();
        env.sender = "changed@example.org".into();
        env.recipients.truncate(1);
        w.rewrite(
            &env,
            b"X-Filtered: yes\r\n\r\nshort\r\n",
            Some("virus: EICAR"),
        )
        .unwrap();
        let committed = w.commit().unwrap();
        assert_eq!(committed, id, "the id is kept");
        let (info, bytes) = read_message(&inc.join(id.as_str())).unwrap();
        assert_eq!(bytes, b"X-Filtered: yes\r\n\r\nshort\r\n");
        assert_eq!(info.envelope, env);
        assert_eq!(info.quarantine.as_deref(), Some("virus: EICAR"));
        assert!(!info.filtered);
        // The router's mark reads back; a bad value is corruption.
        let file = render_file_at(&id, 1, &env, b"x\r\n", None, true).unwrap();
        let marked = inc.join("marked");
        std::fs::write(&marked, &file).unwrap();
        assert!(read_message(&marked).unwrap().0.filtered);
        let text = String::from_utf8(file)
            .unwrap()
            .replace("filtered 1", "filtered 2");
        std::fs::write(&marked, text).unwrap();
        let err = read_message(&marked).unwrap_err().to_string();
        assert!(err.contains("bad filtered"), "{err}");
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut w = MessageWriter::create(&tmp, d.path(), &sample(), None, None).unwrap();
        w.write_message(b"partial").unwrap();
        drop(w);
        assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
    }

    #[test]
    fn refuses_line_breaks_in_fields() {
        let d = tempfile::tempdir().unwrap();
        let mut env = sample();
        env.recipients[0].address = "a@b\nrcpt evil@x".into();
        let err = MessageWriter::create(d.path(), d.path(), &env, None, None).unwrap_err();
        assert!(matches!(err, SpoolError::Invalid(_)), "{err}");
    }

    #[test]
    fn detects_damage() {
        let d = tempfile::tempdir().unwrap();
        let body = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let (_, path) = write(d.path(), &sample(), &body);
        let good = std::fs::read(&path).unwrap();
        let header_len = good.len() - body.len();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("truncated body", good[..good.len() - 1].to_vec()),
            ("truncated header", good[..header_len - 3].to_vec()),
            ("extra byte", [good.clone(), b"x".to_vec()].concat()),
            ("flipped body byte", {
                let mut g = good.clone();
                let last = g.len() - 3;
                g[last] ^= 1;
                g
            }),
            ("bad magic", {
                let mut g = good.clone();
                g[0] = b'X';
                g
            }),
            ("unknown key", {
                let s = String::from_utf8_lossy(&good).replacen("smtputf8", "smtputf9", 1);
                s.into_bytes()
            }),
            ("empty", Vec::new()),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match read_message(&path) {
                Err(SpoolError::Corrupt { .. }) => {}
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod verified {
    use super::*;

    fn good(dir: &Path) -> (PathBuf, MessageInfo, Vec<u8>) {
        let path = dir.join("m");
        let env = Envelope {
            sender: "joe@example.org".into(),
            recipients: vec![Recipient::new("ann@example.net")],
            ..Default::default()
        };
        let body = b"Subject: hi\r\n\r\nhello, world\r\n".to_vec();
        let info = write_file(&path, &env, &body).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, info, bytes)
    }

    /// Every kind of damage that an agent must refuse to send, each with
    /// the words its reason must contain.
    #[test]
    fn open_verified_refuses_each_kind_of_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (path, info, good_bytes) = good(dir.path());
        let (offset, size) = (info.offset, info.size);
        let mut file = open_verified(&path, offset, size).unwrap();
        let mut read = Vec::new();
        file.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"Subject: hi\r\n\r\nhello, world\r\n");

        let flip = |at: usize| {
            let mut g = good_bytes.clone();
            g[at] ^= 0x20;
            g
        };
        let version = String::from_utf8_lossy(&good_bytes)
            .replacen("SKEIN-MESSAGE 1", "SKEIN-MESSAGE 2", 1)
            .into_bytes();
        /// What is done, the file's bytes, the job's (offset, size), and
        /// words the reason must contain.
        type Case<'a> = (&'a str, Vec<u8>, (u64, u64), &'a str);
        let cases: Vec<Case> = vec![
            (
                "cut to 200 bytes",
                good_bytes[..200.min(good_bytes.len() - 1)].to_vec(),
                (offset, size),
                "size mismatch",
            ),
            (
                "emptied",
                Vec::new(),
                (offset, size),
                "not a skein message file",
            ),
            (
                "a body byte flipped",
                flip(good_bytes.len() - 4),
                (offset, size),
                "crc32",
            ),
            (
                "another format version",
                version,
                (offset, size),
                "format version \"2\"",
            ),
            (
                "the job's size disagrees",
                good_bytes.clone(),
                (offset, size - 1),
                "the control file puts",
            ),
            (
                "the job's offset disagrees",
                good_bytes.clone(),
                (offset + 1, size),
                "the control file puts",
            ),
        ];
        for (what, bytes, (offset, size), words) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match open_verified(&path, offset, size) {
                Err(SpoolError::Corrupt { reason, .. }) => {
                    assert!(reason.contains(words), "{what}: {reason}")
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
        std::fs::remove_file(&path).unwrap();
        match open_verified(&path, offset, size) {
            Err(e) => assert!(e.is_not_found(), "{e}"),
            Ok(_) => panic!("a missing file opened"),
        }
    }
}
