//! Shared helpers for skein's integration tests: they run the real
//! binaries (built once per test process with the same cargo and profile
//! that runs the tests) on a temporary spool and ephemeral loopback ports.
//!
//! Run as root (CI), a test process becomes the ordinary user
//! [`TEST_USER`] before it creates anything ([`as_ordinary_user`]), so
//! that skein runs as in the quick start; `tests/privileges.rs` is the one
//! that stays root, to show what skein does when root starts it.

pub mod scripted_milter;
pub mod smtp_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The directory holding the workspace's binaries (`target/<profile>`),
/// after building them once — or, when the tests run as root and an
/// unprivileged account could not reach `target/` (a checkout under
/// `/root`), a copy of them that it can ([`reachable_copy`]): the daemons
/// never run as root, and the scheduler starts its agents from the
/// directory of its own executable.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let built = build_bins();
        if nix::unistd::geteuid().is_root() && !reachable_by_anyone(&built) {
            reachable_copy(&built)
        } else {
            built
        }
    })
}

/// The account the integration tests become when started as root, before
/// they create anything ([`as_ordinary_user`]).
pub const TEST_USER: &str = "nobody";

/// Makes this test process an ordinary user, as the quick start runs
/// skein: started as root (CI), it becomes [`TEST_USER`] for good — every
/// thread, every child it starts — after building the binaries.
/// Everything a test creates is then that user's, and the daemons, which
/// never run as root, can use it. [`TestEnv::new`] and [`tempdir`] call
/// this; the tests that exercise root itself (`tests/privileges.rs`) do
/// not use them. Not root: nothing changes.
pub fn as_ordinary_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = bin_dir();
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let user = nix::unistd::User::from_name(TEST_USER)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the tests run as root and need the account {TEST_USER}"));
        // glibc applies each of these to every thread of the process.
        nix::unistd::setgroups(&[user.gid]).expect("setgroups");
        nix::unistd::setgid(user.gid).expect("setgid");
        nix::unistd::setuid(user.uid).expect("setuid");
        assert!(
            nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).is_err(),
            "root is gone"
        );
    });
}

/// A temporary directory created as an ordinary user ([`as_ordinary_user`]).
pub fn tempdir() -> tempfile::TempDir {
    as_ordinary_user();
    tempfile::tempdir().expect("tempdir")
}

/// Whether every directory above `dir`, and `dir` itself, may be entered
/// by anyone (mode `o+x`).
fn reachable_by_anyone(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Copies the executables of `built` into a directory under the system's
/// temporary directory that anyone may enter, refreshing those that
/// changed since an earlier test process copied them.
fn reachable_copy(built: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    built.hash(&mut hasher);
    let copy = std::env::temp_dir().join(format!("skein-tests-bin-{:016x}", hasher.finish()));
    std::fs::create_dir_all(&copy).expect("create the binaries' copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for entry in std::fs::read_dir(built).expect("list target/") {
        let entry = entry.expect("entry");
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let target = copy.join(entry.file_name());
        let fresh = std::fs::metadata(&target)
            .is_ok_and(|t| t.len() == meta.len() && t.mtime() >= meta.mtime());
        if !fresh {
            let partial = copy.join(format!(".{}.partial", entry.file_name().to_string_lossy()));
            std::fs::copy(entry.path(), &partial).expect("copy a binary");
            std::fs::rename(&partial, &target).expect("install the copy");
        }
    }
    copy
}

fn build_bins() -> PathBuf {
    {
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary is in target/<profile>/deps")
            .to_path_buf();
        // SKEIN_TESTS_PREBUILT=1: the binaries are already built (by hand,
        // e.g. a subset with `cargo build -p …`); do not rebuild.
        if std::env::var_os("SKEIN_TESTS_PREBUILT").is_some() {
            return dir;
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bins", "--quiet"]);
        if release {
            cmd.arg("--release");
        }
        cmd.current_dir(workspace_root());
        let status = cmd
            .stdin(Stdio::null())
            .status()
            .expect("running cargo build for the integration tests");
        assert!(status.success(), "cargo build --workspace --bins failed");
        dir
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// Path of one of skein's binaries, built if needed.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// A temporary directory with a configuration file pointing skein's spool
/// and Maildirs into it.
pub struct TestEnv {
    /// The temporary directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
}

impl TestEnv {
    /// A fresh environment; `extra` is appended to the configuration.
    pub fn new(extra: &str) -> TestEnv {
        let dir = tempdir();
        let config = dir.path().join("skein.toml");
        let text = format!(
            "hostname = \"test.example\"\n\n[spool]\ndir = \"{}\"\n\n[local]\nmaildir_root = \"{}\"\n\n{extra}",
            dir.path().join("spool").display(),
            dir.path().join("mail").display(),
        );
        std::fs::write(&config, text).expect("write config");
        TestEnv { dir, config }
    }

    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// A `skein` command with this environment's configuration.
    pub fn skein(&self) -> Command {
        let mut c = Command::new(bin("skein"));
        c.env("SKEIN_CONFIG", &self.config)
            .current_dir(self.dir.path());
        c
    }

    /// A `skein sendmail` command with `args`.
    pub fn sendmail(&self, args: &[&str]) -> Command {
        let mut c = self.skein();
        c.arg("sendmail").args(args);
        c
    }

    /// The files in a spool area.
    pub fn files(&self, area: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(self.spool().join(area)) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

/// Rewrites a file in place (same inode) and gives it the modification
/// time `mtime`: a change a watcher of the file must notice even within
/// the file system's timestamp granularity.
pub fn rewrite(path: &Path, text: &str, mtime: std::time::SystemTime) {
    std::fs::write(path, text).expect("rewrite");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
}

/// The number in a message's `X-Seq:` header field, which the tests put
/// in every message they send to tell them apart. Panics without one.
pub fn x_seq(text: &str) -> usize {
    x_seq_text(text)
        .parse()
        .unwrap_or_else(|e| panic!("X-Seq is not a number ({e}): {text}"))
}

/// The raw `X-Seq:` value of a message (trimmed). Panics without one.
pub fn x_seq_text(text: &str) -> &str {
    text.lines()
        .find_map(|l| l.strip_prefix("X-Seq: "))
        .unwrap_or_else(|| panic!("no X-Seq header field in: {text}"))
        .trim()
}

/// A small deterministic pseudo-random generator (xorshift64*), so that a
/// failing randomized test can be replayed from its printed seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, for tests that print it.
    pub fn seed_from_clock() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How many times [`poll`] looks before it gives up, 50 ms apart: a guard
/// against hanging for ever, not a timing claim (on a slow machine a test
/// may use all of them).
pub const POLLS: u32 = 2400;

/// Asks `cond` until it holds, at most [`POLLS`] times, 50 ms apart;
/// returns whether it held. For waiting on something that must happen;
/// never for showing that something does not.
pub fn poll(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..POLLS {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Whether something listens on `127.0.0.1:port`. A bare `connect` is
/// not proof: probing a port in the ephemeral range while nothing listens
/// there can connect the socket to itself (TCP simultaneous open, source
/// port = destination port), which also holds the port so that the
/// program about to listen on it fails. Such a connection is refused
/// here and dropped at once.
pub fn listening(port: u16) -> bool {
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(stream) => match (stream.local_addr(), stream.peer_addr()) {
            (Ok(local), Ok(peer)) => local != peer,
            _ => false,
        },
        Err(_) => false,
    }
}

/// A daemon started for a test, killed (SIGKILL) when dropped. Its
/// standard error goes to `<dir>/<name>.log`.
pub struct Daemon {
    /// The process.
    pub child: std::process::Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait for daemon")
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times `needle` is in its log so far.
    pub fn logged(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    /// Whether its log comes to hold `needle` at least `times` times,
    /// looked at with [`poll`]. (The daemons log to standard error,
    /// unbuffered: a line is in the file once it is logged.)
    pub fn wait_for_log(&self, needle: &str, times: usize) -> bool {
        poll(|| self.logged(needle) >= times)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestEnv {
    /// Starts one of skein's daemons (`skein-router`, `skein-scheduler`)
    /// on this environment's configuration.
    pub fn start(&self, name: &str) -> Daemon {
        self.start_with_env(name, &[])
    }

    /// [`start`](Self::start) with extra environment variables (which the
    /// scheduler passes on to the agents it starts).
    pub fn start_with_env(&self, name: &str, vars: &[(&str, &str)]) -> Daemon {
        use std::os::unix::fs::OpenOptionsExt;
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&log)
            .expect("log file");
        let child = Command::new(bin(name))
            .envs(vars.iter().copied())
            .env("SKEIN_CONFIG", &self.config)
            .env("SKEIN_LOG_FORMAT", "logfmt")
            .env_remove("NOTIFY_SOCKET")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Daemon { child, log }
    }

    /// Submits one message with `skein sendmail -i ARGS`; panics on failure.
    pub fn submit(&self, args: &[&str], message: &[u8]) {
        self.submit_with(self.sendmail(args), message);
    }

    /// Submits one message on the standard input of `command` (a
    /// [`sendmail`](Self::sendmail) command, changed as a test needs);
    /// panics on failure.
    pub fn submit_with(&self, mut command: Command, message: &[u8]) {
        use std::io::Write;
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        let mut child = command
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn sendmail");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(message)
            .expect("write message");
        let status = child.wait().expect("wait sendmail");
        assert!(status.success(), "sendmail {args:?} exited {status}");
    }

    /// True when no message is left anywhere in the spool.
    pub fn queue_empty(&self) -> bool {
        ["incoming", "queue", "transport"]
            .iter()
            .all(|a| self.files(a).is_empty())
    }

    /// Starts the router and waits until it has routed everything
    /// submitted so far (`incoming/` empty); returns it, still running.
    /// Panics with its log if it did not.
    pub fn route_all(&self) -> Daemon {
        let router = self.start("skein-router");
        assert!(
            self.wait_for(std::time::Duration::from_secs(120), || self
                .files("incoming")
                .is_empty()),
            "the router did not route everything:\n{}",
            router.log_text()
        );
        router
    }

    /// Polls `cond` every 50 ms for up to `limit`; returns whether it held.
    /// (A guard against hanging for ever, not a timing assertion.)
    pub fn wait_for(&self, limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = std::time::Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The messages delivered into `user`'s Maildir (`new/`), as bytes.
    pub fn maildir(&self, user: &str) -> Vec<Vec<u8>> {
        let dir = self.dir.path().join("mail").join(user).join("new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read(p).expect("read maildir file"))
            .collect()
    }

    /// Creates Maildir directories for `users` so that they exist as
    /// local users.
    pub fn make_users(&self, users: &[String]) {
        for u in users {
            for sub in ["tmp", "new", "cur"] {
                std::fs::create_dir_all(self.dir.path().join("mail").join(u).join(sub))
                    .expect("create maildir");
            }
        }
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) and reaped when dropped: the filters,
/// resolvers and servers a test starts.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    /// SIGTERM first, so that a program with workers of its own (rspamd,
    /// clamd) stops them rather than leaving them behind, orphaned; then,
    /// if it has not exited within 5 s, SIGKILL.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bytes` in base64 (RFC 4648, with padding): AUTH PLAIN credentials,
/// attachments.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// dkimpy's verdict on `message` with `records` (TXT name → text) as
/// the DNS: "pass" or "fail".
pub fn dkimpy(message: &[u8], records: &[(String, String)]) -> String {
    use std::io::Write;
    const SCRIPT: &str = r#"
import sys, dkim
records = {}
for arg in sys.argv[1:]:
    name, text = arg.split("=", 1)
    records[name.lower().rstrip(".")] = text.encode()
def dns(name, timeout=5):
    return records.get(name.decode().lower().rstrip("."))
message = sys.stdin.buffer.read()
print("pass" if dkim.verify(message, dnsfunc=dns) else "fail")
"#;
    let mut python = std::process::Command::new("/usr/bin/python3");
    python.arg("-c").arg(SCRIPT);
    for (name, text) in records {
        python.arg(format!("{name}={text}"));
    }
    let mut child = python
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 (apt install python3-dkim: bench/ci-deps-dkim.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(
        out.status.success(),
        "dkimpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `skein dkim keygen` in `env` (`--out <dir>/<domain>.<selector>.key`):
/// the key file and the (name, TXT text) it printed; checks that the key
/// is the owner's alone and the record is one.
pub fn dkim_keygen(
    env: &TestEnv,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> (String, (String, String)) {
    let key = env.dir.path().join(format!("{domain}.{selector}.key"));
    let out = env
        .skein()
        .args([
            "dkim",
            "keygen",
            domain,
            selector,
            "--algorithm",
            algorithm,
            "--out",
        ])
        .arg(&key)
        .output()
        .expect("skein dkim keygen");
    assert!(
        out.status.success(),
        "keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    // `s._domainkey.d. IN TXT ( "part" "part" )`: the name and the joined
    // strings.
    let name = record.split_whitespace().next().expect("name").to_owned();
    assert_eq!(name, format!("{selector}._domainkey.{domain}."));
    let text: String = record
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    assert!(text.starts_with("v=DKIM1; k="), "{record}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key written").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is the owner's alone");
    (key.display().to_string(), (name, text))
}
