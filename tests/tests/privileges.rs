//! skein started as root: nothing that reads network input, message
//! content or another user's submission keeps root (issue 10).
//!
//! Shows, each with the real `skein start` (supervisor, smtpd, router,
//! scheduler, and the agents the scheduler starts), on a spool made only by
//! the documented install step (`install -d -o skein -g skein -m 0750`):
//!
//! - with `user = "skein"` and with `user` unset (the default account),
//!   every process below the supervisor runs as `skein`, read from
//!   `/proc`; `skein status` says so; the spool's areas, its sockets and
//!   its files belong to `skein` with their documented modes; and a
//!   message sent by SMTP is delivered with the router's notice reaching
//!   the scheduler at once (no wait for the scheduler's rescan);
//! - with the account missing, the start is refused with one line that
//!   says how to create it, and nothing is created.
//!
//! These tests run only as root (they are what root does): run as an
//! ordinary user they fail saying so. They create the `skein` account if
//! it is missing, as the install step does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use skein_integration_tests::{bin, poll};

const ACCOUNT: &str = "skein";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/privileges.rs tests what skein does when started as root: run it as root"
    );
}

/// The documented install step for the account (docs/operations.md).
fn ensure_account() -> nix::unistd::User {
    require_root();
    if let Some(user) = nix::unistd::User::from_name(ACCOUNT).expect("user database") {
        return user;
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--home-dir",
            "/var/spool/skein",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            ACCOUNT,
        ])
        .status()
        .expect("useradd");
    // Another test of this file may have created it meanwhile.
    let user = nix::unistd::User::from_name(ACCOUNT).expect("user database");
    assert!(
        status.success() || user.is_some(),
        "useradd {ACCOUNT} failed"
    );
    user.expect("the account exists")
}

fn install_dir(path: &Path, mode: &str) {
    let status = Command::new("install")
        .args(["-d", "-o", ACCOUNT, "-g", ACCOUNT, "-m", mode])
        .arg(path)
        .status()
        .expect("install -d");
    assert!(status.success(), "install -d {}", path.display());
}

/// A temporary directory every account may enter (the spool and the
/// Maildirs inside it are the account's; the rest stays root's).
fn world_enterable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Installation {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
}

impl Installation {
    /// A configuration (with `user_line` at the top), and — when
    /// `install` — the spool and Maildir root made as the install step
    /// makes them, with one virtual user `ann`.
    fn new(user_line: &str, install: bool) -> Installation {
        let dir = world_enterable_tempdir();
        let port = free_port();
        let spool = dir.path().join("spool");
        let mail = dir.path().join("mail");
        if install {
            install_dir(&spool, "0750");
            install_dir(&mail, "0750");
            install_dir(&mail.join("ann"), "0700");
        }
        let config = dir.path().join("skein.toml");
        std::fs::write(
            &config,
            format!(
                "{user_line}\nhostname = \"test.example\"\n\n[spool]\ndir = \"{}\"\n\n\
                 [smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n\n[router]\nlocal_domains = [\"test.example\"]\n\n\
                 [local]\nmaildir_root = \"{}\"\n",
                spool.display(),
                mail.display()
            ),
        )
        .expect("write config");
        Installation { dir, config, port }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("start.log")
    }

    fn skein(&self) -> Command {
        let mut command = Command::new(bin("skein"));
        command
            .arg("-c")
            .arg(&self.config)
            .env("SKEIN_LOG_FORMAT", "logfmt")
            // The router's "scheduler notified" is a debug line.
            .env("SKEIN_LOG", "info,skein_router=debug")
            .env_remove("SKEIN_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        command
    }

    fn start(&self) -> Running {
        let log = std::fs::File::create(self.log()).expect("log");
        let child = self
            .skein()
            .arg("start")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skein start");
        Running { child }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

/// `skein start`, stopped with SIGTERM (and waited for) when dropped.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A process below the supervisor, as `/proc` shows it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    name: String,
    uids: Vec<u32>,
    gids: Vec<u32>,
}

fn read_proc(pid: u32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    };
    let numbers =
        |name: &str| -> Option<Vec<u32>> { field(name)?.iter().map(|n| n.parse().ok()).collect() };
    Some(Proc {
        pid,
        name: field("Name:")?.join(" "),
        uids: numbers("Uid:")?,
        gids: numbers("Gid:")?,
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root`.
fn descendants(root: u32) -> Vec<Proc> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &pid in &pids {
            if parent_of(pid) == Some(parent) {
                frontier.push(pid);
                if let Some(p) = read_proc(pid) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// One message by SMTP, with the server's replies checked.
fn send_by_smtp(port: u16, rcpt: &str, subject: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = || {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read reply");
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return text;
            }
        }
    };
    assert!(reply().starts_with("220"));
    for (command, want) in [
        ("EHLO client.example\r\n".to_owned(), "250"),
        ("MAIL FROM:<sender@client.example>\r\n".to_owned(), "250"),
        (format!("RCPT TO:<{rcpt}>\r\n"), "250"),
        ("DATA\r\n".to_owned(), "354"),
        (
            format!("From: sender@client.example\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n"),
            "250",
        ),
        ("QUIT\r\n".to_owned(), "221"),
    ] {
        writer.write_all(command.as_bytes()).expect("write");
        let got = reply();
        assert!(got.starts_with(want), "{command:?} got {got:?}");
    }
}

fn smtpd_is_up(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The whole run for one configuration: start as root, check the
/// processes, deliver, check the spool's owners and modes.
fn root_start_drops_everything(user_line: &str) {
    let account = ensure_account();
    let install = Installation::new(user_line, true);
    let running = install.start();
    let supervisor = running.child.id();
    assert!(
        poll(|| smtpd_is_up(install.port)),
        "the smtpd never listened:\n{}",
        install.log_text()
    );
    send_by_smtp(install.port, "ann@test.example", "as root");
    // And root's own sendmail: it writes as the spool's owner, so the
    // router (not root) can read what it wrote.
    let mut sendmail = install
        .skein()
        .args(["sendmail", "-i", "ann@test.example"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sendmail");
    sendmail
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Subject: from root's sendmail\n\nhello\n")
        .expect("write");
    let out = sendmail.wait_with_output().expect("sendmail");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = install.dir.path().join("mail/ann/new");
    assert!(
        poll(|| std::fs::read_dir(&new).is_ok_and(|d| d.count() == 2)),
        "not delivered:\n{}",
        install.log_text()
    );

    // While it runs (the local agent is still connected to the
    // scheduler, or has just gone): nothing below the supervisor is root.
    let procs = descendants(supervisor);
    let names: Vec<&str> = procs.iter().map(|p| p.name.as_str()).collect();
    for want in ["skein-router", "skein-scheduler", "skein-smtpd"] {
        assert!(names.contains(&want), "{want} not running: {procs:?}");
    }
    for p in &procs {
        assert!(
            p.uids.iter().all(|&u| u == account.uid.as_raw())
                && p.gids.iter().all(|&g| g == account.gid.as_raw()),
            "{} (pid {}) runs with uids {:?} gids {:?}, not {ACCOUNT}'s",
            p.name,
            p.pid,
            p.uids,
            p.gids
        );
    }
    let me = read_proc(supervisor).expect("supervisor");
    assert_eq!(me.uids[0], 0, "the supervisor keeps root (it starts smtpd)");

    // skein status shows each process's user.
    let status = install.skein().arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    for name in ["skein-router", "skein-scheduler", "skein-smtpd"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from skein status:\n{text}"));
        assert!(
            line.contains(&format!("user {ACCOUNT} (uid {})", account.uid)),
            "{line}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("skein ") && l.contains("user root (uid 0)")),
        "{text}"
    );

    // The router's notice reached the scheduler: delivery did not wait
    // for the scheduler's rescan of the spool.
    let log = install.log_text();
    assert!(log.contains("msg=\"scheduler notified\""), "{log}");
    assert!(!log.contains("cannot notify the scheduler"), "{log}");
    assert!(!log.contains("Permission denied"), "{log}");

    // Owners and modes in the spool.
    let spool = install.spool();
    let sock = spool.join("run/scheduler.sock");
    let meta = std::fs::symlink_metadata(&sock).expect("scheduler socket");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (account.uid.as_raw(), 0o660)
    );
    for area in [
        "tmp",
        "incoming",
        "queue",
        "transport",
        "corrupt",
        "run",
        "free",
    ] {
        let meta = std::fs::metadata(spool.join(area)).expect("area");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (account.uid.as_raw(), account.gid.as_raw(), 0o750),
            "{area}/"
        );
    }
    let mut todo = vec![spool.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if path == spool.join("run/skein.pid") {
                assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
                continue;
            }
            assert_eq!(meta.uid(), account.uid.as_raw(), "{}", path.display());
            if path.extension().is_some_and(|e| e == "pid") {
                // Pid files are for everyone who may enter run/ (0750).
                assert_eq!(meta.mode() & 0o777, 0o644, "{}", path.display());
            } else {
                assert_eq!(
                    meta.mode() & 0o007,
                    0,
                    "{} is open to others",
                    path.display()
                );
            }
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    // The delivered messages: the account's, not readable by others; the
    // one from root's sendmail says who submitted it.
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(&new).expect("new/") {
        let path = entry.expect("entry").path();
        let meta = std::fs::metadata(&path).expect("message");
        assert_eq!(meta.uid(), account.uid.as_raw());
        assert_eq!(meta.mode() & 0o077, 0, "{:o}", meta.mode());
        texts.push(std::fs::read_to_string(&path).expect("read"));
    }
    assert!(
        texts.iter().any(|t| t.contains("Subject: as root")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Subject: from root's sendmail")
                && t.contains("(skein sendmail, from userid 0)")),
        "{texts:?}"
    );
    drop(running);
}

#[test]
fn as_root_with_user_skein_nothing_runs_as_root() {
    root_start_drops_everything("user = \"skein\"");
}

#[test]
fn as_root_without_user_the_default_account_is_used() {
    root_start_drops_everything("");
}

/// The account is missing: a configured one, and the default one (in a
/// mount namespace whose `/etc/passwd` lacks it).
#[test]
fn as_root_a_missing_account_is_refused_with_how_to_create_it() {
    require_root();
    // A configured account that does not exist.
    let install = Installation::new("user = \"skein-no-such-account\"", false);
    let out = install.skein().arg("start").output().expect("skein start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(67), "{err}");
    assert!(
        err.contains("the account \"skein-no-such-account\" to run as does not exist")
            && err.contains("useradd --system"),
        "{err}"
    );
    assert!(!install.spool().exists(), "nothing is created");

    // The default account, absent from the user database this process
    // sees: the same refusal, naming `skein`.
    let install = Installation::new("", false);
    let passwd = install.dir.path().join("passwd");
    let without: String = std::fs::read_to_string("/etc/passwd")
        .expect("/etc/passwd")
        .lines()
        .filter(|l| !l.starts_with("skein:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&passwd, without).expect("write passwd");
    let skein = install.skein();
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/passwd && shift && exec \"$@\"")
        .arg("sh")
        .arg(&passwd)
        .arg(skein.get_program())
        .args(skein.get_args())
        .arg("start")
        .env_remove("SKEIN_CONFIG")
        .stdin(Stdio::null());
    let out = command.output().expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(67), "{err}");
    assert!(
        err.contains("the account \"skein\" to run as does not exist")
            && err.contains("useradd --system --home-dir /var/spool/skein"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!install.spool().exists(), "nothing is created");
}
