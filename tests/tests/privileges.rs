//! skein started as root: nothing that reads network input, message
//! content or another user's submission keeps root (issue 10).
//!
//! Shows, each with the real `skein start` (supervisor, smtpd, router,
//! scheduler, and the agents the scheduler starts), on a spool made only by
//! the documented install step (`dist/install.sh`, the same layout and
//! modes as the Debian package):
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

use skein_integration_tests::{bin, bin_dir, poll, workspace_root};

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

const DROP_GROUP: &str = "skeindrop";

/// The install step for the drop group (docs/operations.md).
fn ensure_drop_group() -> nix::unistd::Group {
    require_root();
    if let Some(group) = nix::unistd::Group::from_name(DROP_GROUP).expect("group database") {
        return group;
    }
    let status = Command::new("groupadd")
        .args(["--system", DROP_GROUP])
        .status()
        .expect("groupadd");
    let group = nix::unistd::Group::from_name(DROP_GROUP).expect("group database");
    assert!(
        status.success() || group.is_some(),
        "groupadd {DROP_GROUP} failed"
    );
    group.expect("the group exists")
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
        Installation::with(user_line, install, "", "")
    }

    /// [`Installation::new`] with `extra` appended to the configuration;
    /// when `install`, `dist/install.sh` installs skein under `<dir>/root`
    /// (the layout and modes of the Debian package: binaries in
    /// `usr/bin` and `usr/libexec/skein`, `skein-postdrop` setgid to the
    /// drop group, the spool in `var/spool/skein`, the Maildirs in
    /// `var/lib/skein/mail`), and one virtual user `ann` gets a Maildir.
    fn with(user_line: &str, install: bool, smtpd_keys: &str, extra: &str) -> Installation {
        let dir = world_enterable_tempdir();
        let port = free_port();
        let root = dir.path().join("root");
        let spool = root.join("var/spool/skein");
        let mail = root.join("var/lib/skein/mail");
        if install {
            let out = Command::new("sh")
                .arg(workspace_root().join("dist/install.sh"))
                .arg("--from")
                .arg(bin_dir())
                .arg("--destdir")
                .arg(&root)
                .args(["--unitdir", "/lib/systemd/system"])
                .output()
                .expect("sh dist/install.sh");
            assert!(
                out.status.success(),
                "dist/install.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            install_dir(&mail.join("ann"), "0700");
        }
        let config = dir.path().join("skein.toml");
        std::fs::write(
            &config,
            format!(
                "{user_line}\nhostname = \"test.example\"\n\n[spool]\ndir = \"{}\"\n\n\
                 [smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n{smtpd_keys}\n\n[router]\nlocal_domains = [\"test.example\"]\n\n\
                 [local]\nmaildir_root = \"{}\"\n\n{extra}",
                spool.display(),
                mail.display()
            ),
        )
        .expect("write config");
        Installation { dir, config, port }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn spool(&self) -> PathBuf {
        self.root().join("var/spool/skein")
    }

    fn mail(&self) -> PathBuf {
        self.root().join("var/lib/skein/mail")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("start.log")
    }

    /// A program as installed: `skein` in `usr/bin`, the rest in
    /// `usr/libexec/skein`.
    fn installed(&self, name: &str) -> PathBuf {
        if name == "skein" {
            self.root().join("usr/bin/skein")
        } else {
            self.root().join("usr/libexec/skein").join(name)
        }
    }

    /// The installed `skein` when there is one, else the built one.
    fn skein_program(&self) -> PathBuf {
        let installed = self.installed("skein");
        if installed.exists() {
            installed
        } else {
            bin("skein")
        }
    }

    fn skein(&self) -> Command {
        let mut command = Command::new(self.skein_program());
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

/// A line-oriented SMTP client for these tests: each command's whole
/// reply (every line of a multi-line one).
struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    /// Connected to the smtpd on `port`, its greeting (which must be 220)
    /// read.
    fn connect(port: u16) -> SmtpClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .expect("timeout");
        let mut client = SmtpClient {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        };
        let greeting = client.reply();
        assert!(greeting.starts_with("220"), "{greeting}");
        client
    }

    fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read reply");
            text.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return text;
            }
        }
    }

    /// Sends `command` (with its CRLF) and returns the reply.
    fn send(&mut self, command: &str) -> String {
        self.writer.write_all(command.as_bytes()).expect("write");
        self.reply()
    }
}

/// One message by SMTP, with the server's replies checked.
fn send_by_smtp(port: u16, rcpt: &str, subject: &str) {
    let mut client = SmtpClient::connect(port);
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
        let got = client.send(&command);
        assert!(got.starts_with(want), "{command:?} got {got:?}");
    }
}

fn smtpd_is_up(port: u16) -> bool {
    skein_integration_tests::listening(port)
}

/// The whole run for one configuration: start as root, check the
/// processes, deliver, check the spool's owners and modes.
fn root_start_drops_everything(user_line: &str) {
    let account = ensure_account();
    let drop_group = ensure_drop_group();
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
    let new = install.mail().join("ann/new");
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
    // Open to all for mailq; the scheduler checks who asks what.
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (account.uid.as_raw(), 0o666)
    );
    for (area, gid, mode) in [
        ("tmp", account.gid, 0o750),
        ("incoming", account.gid, 0o750),
        ("queue", account.gid, 0o750),
        ("transport", account.gid, 0o750),
        ("corrupt", account.gid, 0o750),
        ("run", account.gid, 0o751),
        ("free", account.gid, 0o750),
        ("maildrop", drop_group.gid, 0o3770),
    ] {
        let meta = std::fs::metadata(spool.join(area)).expect("area");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (account.uid.as_raw(), gid.as_raw(), mode),
            "{area}/"
        );
    }
    let meta = std::fs::symlink_metadata(spool.join("maildrop/.wake")).expect("pickup socket");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (account.uid.as_raw(), drop_group.gid.as_raw(), 0o660)
    );
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
            if path == sock {
                continue;
            }
            if path.extension().is_some_and(|e| e == "pid") {
                // Pid files are for everyone who may enter run/.
                assert_eq!(meta.mode() & 0o777, 0o644, "{}", path.display());
            } else if meta.is_dir() {
                // run/ may be passed through (to the control socket),
                // nothing listed or written by others.
                assert_eq!(
                    meta.mode() & 0o006,
                    0,
                    "{} is open to others",
                    path.display()
                );
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

/// A command run as the ordinary user `nobody` (not `skein`, not in its
/// group, not in the drop group), through `setpriv`.
fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    command
}

fn run_with_input(mut command: Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // A refusal may come before all is written: a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait")
}

/// Runs the submitting `command` with `message` on its standard input,
/// which must succeed, waits for the one message in ann's Maildir and
/// returns it.
fn submit_and_read_the_delivery(
    install: &Installation,
    command: Command,
    message: &[u8],
) -> String {
    let out = run_with_input(command, message);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = install.mail().join("ann/new");
    assert!(
        poll(|| names_in(&new).len() == 1),
        "not delivered:\n{}",
        install.log_text()
    );
    std::fs::read_to_string(new.join(&names_in(&new)[0])).expect("read")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The service set started as root; `nobody`, an ordinary user, submits
/// through the setgid `skein-postdrop`, sees delivery, lists the queue,
/// is refused changing it, and gets the documented codes for a bad
/// submission — with nothing lost: what the router refuses is in
/// `corrupt/`, with its reason.
#[test]
fn an_ordinary_user_submits_through_postdrop_and_only_lists_the_queue() {
    let account = ensure_account();
    let drop_group = ensure_drop_group();
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user database")
        .expect("nobody");
    let install = Installation::with(
        "user = \"skein\"",
        true,
        "max_message_size = \"20k\"",
        "[[route]]\ndomain = \"held.example\"\nchannel = \"hold\"\n",
    );
    let running = install.start();
    let spool = install.spool();
    let maildrop = spool.join("maildrop");
    assert!(
        poll(|| smtpd_is_up(install.port) && maildrop.join(".wake").exists()),
        "not started:\n{}",
        install.log_text()
    );
    let meta = std::fs::metadata(&maildrop).expect("maildrop/");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (account.uid.as_raw(), drop_group.gid.as_raw(), 0o3770)
    );
    let skein = install.skein_program();
    let config = install.config.clone();
    let skein_as_nobody = |args: &[&str]| {
        let mut command = as_nobody(&skein);
        command
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("SKEIN_CONFIG");
        command
    };

    // 1. Submission and delivery.
    let delivered = submit_and_read_the_delivery(
        &install,
        skein_as_nobody(&["sendmail", "-i", "ann@test.example"]),
        b"Subject: from nobody\n\nhello from an ordinary user\n",
    );
    assert!(delivered.contains("Subject: from nobody"), "{delivered}");
    assert!(
        delivered.contains(&format!("(skein pickup, from userid {})", nobody.uid)),
        "{delivered}"
    );
    let log = install.log_text();
    assert!(
        log.lines().any(|l| l.contains("msg=\"picked up\"")
            && l.contains(&format!("uid={}", nobody.uid))
            && l.contains("user=nobody")),
        "{log}"
    );

    // 1b. The same by SMTP on standard input and output (sendmail -bs):
    // through skein-postdrop too, whose output must not enter the session.
    let out = run_with_input(
        skein_as_nobody(&["sendmail", "-bs"]),
        b"EHLO me\r\nMAIL FROM:<nobody@test.example>\r\nRCPT TO:<ann@test.example>\r\n\
          DATA\r\nSubject: by -bs\r\n\r\nhello\r\n.\r\nQUIT\r\n",
    );
    let session = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && session.contains("\r\n250 2.0.0 Ok: queued\r\n221 "),
        "{session}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = install.mail().join("ann/new");
    assert!(
        poll(|| names_in(&new).len() == 2),
        "the -bs message was not delivered:\n{}",
        install.log_text()
    );

    // 2. The queue: listed by nobody, not changed by nobody.
    let out = run_with_input(
        skein_as_nobody(&["sendmail", "-i", "someone@held.example"]),
        b"Subject: held\n\nstays in the queue\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listing = serde_json::Value::Null;
    assert!(
        poll(|| {
            let out = skein_as_nobody(&["mailq", "--json"])
                .output()
                .expect("mailq");
            listing = serde_json::from_slice(&out.stdout).unwrap_or_default();
            out.status.success()
                && listing.as_array().is_some_and(|messages| {
                    messages
                        .iter()
                        .any(|m| m["recipients"][0]["address"] == "someone@held.example")
                })
        }),
        "nobody's mailq never listed the held message: {listing}\n{}",
        install.log_text()
    );
    let id = listing[0]["queue_id"]
        .as_str()
        .expect("queue id")
        .to_owned();
    let out = skein_as_nobody(&["mailq"]).output().expect("mailq");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = skein_as_nobody(&["queue", "delete", &id])
        .output()
        .expect("delete");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(
        err.contains("only root, the skein account and its group may change the queue"),
        "{err}"
    );
    let out = install
        .skein()
        .args(["mailq", "--json"])
        .output()
        .expect("mailq as root");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&id),
        "still queued"
    );

    // 3. A bad submission through sendmail: refused with 65, nothing
    //    handed over.
    let big = format!("Subject: big\n\n{}\n", "x".repeat(30 * 1024));
    let out = run_with_input(
        skein_as_nobody(&["sendmail", "-i", "ann@test.example"]),
        big.as_bytes(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("larger than the size limit of 20480 bytes"),
        "{err}"
    );
    let out = run_with_input(
        skein_as_nobody(&["sendmail", "-i", "bad@@test.example"]),
        b"Subject: bad\n\nx\n",
    );
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names_in(&maildrop), [".wake"], "nothing was handed over");

    // 4. Bypassing sendmail: skein-postdrop takes what it is given (it
    //    checks only the size) and the router refuses, keeping the bytes.
    let postdrop = install.installed("skein-postdrop");
    let mut command = as_nobody(&postdrop);
    command.arg("-c").arg(&config);
    let garbage = b"this is not a message file\n".to_vec();
    let out = run_with_input(command, &garbage);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envelope = skein_spool::Envelope {
        sender: "nobody@test.example".into(),
        recipients: vec![skein_spool::Recipient::new("ann@test.example")],
        origin: "a lie".into(),
        ..skein_spool::Envelope::default()
    };
    let over =
        skein_spool::drop::render(&envelope, "y".repeat(25 * 1024).as_bytes()).expect("render");
    let mut command = as_nobody(&postdrop);
    command.arg("-c").arg(&config);
    let out = run_with_input(command, &over);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let corrupt = spool.join("corrupt");
    assert!(
        poll(|| names_in(&corrupt)
            .iter()
            .filter(|n| n.ends_with(".why"))
            .count()
            == 2),
        "{:?}\n{}",
        names_in(&corrupt),
        install.log_text()
    );
    let mut kept = Vec::new();
    for why in names_in(&corrupt).iter().filter(|n| n.ends_with(".why")) {
        let text = std::fs::read_to_string(corrupt.join(why)).expect("why");
        assert!(
            text.contains(&format!("drop file of uid {} (nobody) refused", nobody.uid)),
            "{text}"
        );
        kept.push((
            text,
            std::fs::read(corrupt.join(why.trim_end_matches(".why"))).expect("kept"),
        ));
    }
    assert!(
        kept.iter()
            .any(|(why, bytes)| why.contains("malformed") && *bytes == garbage),
        "{kept:?}"
    );
    assert!(
        kept.iter()
            .any(|(why, bytes)| why.contains("too large") && *bytes == over),
        "too large, kept whole"
    );
    // Far over the limit: skein-postdrop itself refuses, with 65.
    let huge = vec![b'z'; 20 * 1024 + 1024 * 1024 + 1];
    let mut command = as_nobody(&postdrop);
    command.arg("-c").arg(&config);
    let out = run_with_input(command, &huge);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names_in(&maildrop), [".wake"]);

    // 5. nobody cannot look into maildrop/ nor the spool's areas.
    for dir in [&maildrop, &spool.join("incoming"), &spool.join("queue")] {
        let out = as_nobody(Path::new("/bin/ls"))
            .arg(dir)
            .output()
            .expect("ls");
        assert!(!out.status.success(), "nobody listed {}", dir.display());
    }
    // And a configuration that is not root's is not used by the setgid
    // program.
    let own = tempfile::Builder::new()
        .prefix("skein-nobody-config")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::set_permissions(own.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let fake = own.path().join("skein.toml");
    std::fs::copy(&config, &fake).expect("copy config");
    nix::unistd::chown(&fake, Some(nobody.uid), None).expect("chown");
    let mut command = as_nobody(&postdrop);
    command.arg("-c").arg(&fake);
    let out = run_with_input(command, b"x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("will not use"), "{err}");
    drop(running);
}

/// The capability sets of `pid` (`CapPrm`, `CapEff`), from `/proc`.
fn capabilities(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some((hex("CapPrm:")?, hex("CapEff:")?))
}

const HOME_USER: &str = "skeinhome";
const HOME_DIR: &str = "/var/tmp/skeinhome-test";

/// A system account with a home directory, fresh for each run.
fn ensure_home_user() -> nix::unistd::User {
    require_root();
    if nix::unistd::User::from_name(HOME_USER)
        .expect("user database")
        .is_none()
    {
        let status = Command::new("useradd")
            .args([
                "--home-dir",
                HOME_DIR,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                HOME_USER,
            ])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {HOME_USER}");
    }
    let user = nix::unistd::User::from_name(HOME_USER)
        .expect("user database")
        .expect("the account exists");
    let _ = std::fs::remove_dir_all(&user.dir);
    let status = Command::new("install")
        .args(["-d", "-o", HOME_USER, "-g", HOME_USER, "-m", "0750"])
        .arg(&user.dir)
        .status()
        .expect("install -d");
    assert!(status.success());
    user
}

/// `local.home_mailbox = "Maildir/"`: mail for a system account goes to
/// its `~/Maildir`, written as the account — directories 0700 and the
/// file 0600, the account's, created on first delivery — by a
/// skein-local that runs as `skein` and holds CAP_SETUID and CAP_SETGID
/// only (file capabilities), while no other process holds any.
#[test]
fn mail_for_a_system_account_is_written_as_it_into_its_home_maildir() {
    let account = ensure_account();
    ensure_drop_group();
    let home_user = ensure_home_user();
    let install = Installation::with(
        "user = \"skein\"",
        true,
        "",
        "home_mailbox = \"Maildir/\"\n",
    );
    let local = install.installed("skein-local");
    // The install step: only the skein account may run it (file
    // capabilities on a binary anyone may run would give them away), then
    // the capabilities (chgrp/chmod after setcap would clear them).
    for step in [
        vec!["chgrp".to_owned(), ACCOUNT.to_owned()],
        vec!["chmod".to_owned(), "0750".to_owned()],
        vec!["setcap".to_owned(), "cap_setuid,cap_setgid+ep".to_owned()],
    ] {
        let status = Command::new(&step[0])
            .args(&step[1..])
            .arg(&local)
            .status()
            .unwrap_or_else(|e| panic!("{}: {e} (apt: libcap2-bin)", step[0]));
        assert!(status.success(), "{step:?}");
    }
    let running = install.start();
    let supervisor = running.child.id();
    assert!(
        poll(|| smtpd_is_up(install.port)),
        "not started:\n{}",
        install.log_text()
    );
    send_by_smtp(
        install.port,
        &format!("{HOME_USER}@test.example"),
        "to a home",
    );
    let maildir = home_user.dir.join("Maildir");
    assert!(
        poll(|| names_in(&maildir.join("new")).len() == 1),
        "not delivered:\n{}",
        install.log_text()
    );
    let file = maildir.join("new").join(&names_in(&maildir.join("new"))[0]);
    let meta = std::fs::metadata(&file).expect("message");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (home_user.uid.as_raw(), home_user.gid.as_raw(), 0o600),
        "{}",
        file.display()
    );
    for dir in ["", "tmp", "new", "cur"] {
        let meta = std::fs::metadata(maildir.join(dir)).expect("dir");
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (home_user.uid.as_raw(), 0o700),
            "Maildir/{dir}"
        );
    }
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(
        text.contains(&format!("Delivered-To: {HOME_USER}@test.example")),
        "{text}"
    );
    assert!(text.contains("Subject: to a home"), "{text}");
    // Nothing under the Maildir root for this user: it went home.
    assert!(!install.mail().join(HOME_USER).exists());

    // Who holds what: skein-local, as skein, CAP_SETUID and CAP_SETGID
    // only (bits 6 and 7); every other process below the supervisor none.
    let mut seen_local = None;
    assert!(
        poll(|| {
            seen_local = descendants(supervisor)
                .into_iter()
                .find(|p| p.name == "skein-local");
            seen_local.is_some()
        }),
        "no skein-local running"
    );
    let local_proc = seen_local.expect("skein-local");
    assert_eq!(local_proc.uids[0], account.uid.as_raw());
    assert_eq!(
        capabilities(local_proc.pid),
        Some((0xc0, 0xc0)),
        "skein-local's capabilities"
    );
    for p in descendants(supervisor) {
        if p.name != "skein-local" {
            assert_eq!(capabilities(p.pid).map(|c| c.0), Some(0), "{}", p.name);
        }
    }
    drop(running);
}

/// `find -printf '%M %u/%g %p %l'` under `dir`, as `dist/debian/check.sh`
/// lists the package's scratch root: `MODE OWNER/GROUP ./PATH [-> LINK]`.
fn listing(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .args([".", "-mindepth", "1", "-printf", "%M %u/%g %p %l\\n"])
        .current_dir(dir)
        .output()
        .expect("find");
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let (mode, owner, path) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            match parts.next().unwrap_or_default() {
                "" => format!("{mode} {owner} {path}"),
                link => format!("{mode} {owner} {path} -> {link}"),
            }
        })
        .collect();
    lines.sort();
    lines
}

/// `dist/install.sh` (the install for systems without dpkg) lays out
/// every path with the owner and mode the Debian package's scratch
/// install has (`dist/debian/installed`, which `dist/debian/check.sh`
/// holds the package to), and the installed layout works: `skein start`
/// finds its services in `usr/libexec/skein`, and an ordinary user
/// submits through the `sendmail` link (which finds the setgid
/// `skein-postdrop` there) and lists the queue through the `mailq` link.
#[test]
fn the_install_script_lays_out_what_the_package_does_and_its_links_work() {
    ensure_account();
    ensure_drop_group();
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("user database")
        .expect("nobody");
    let install = Installation::new("user = \"skein\"", true);

    // Every path, owner and mode, against the package's list (minus what
    // only a package has: its copyright file, changelog and lintian
    // overrides; minus this test's Maildir for ann).
    let package_only = [
        "./usr/share/doc/skein/copyright",
        "./usr/share/doc/skein/changelog.Debian.gz",
        "./usr/share/lintian",
    ];
    let expected: Vec<String> =
        std::fs::read_to_string(workspace_root().join("dist/debian/installed"))
            .expect("dist/debian/installed")
            .lines()
            .filter(|l| {
                let path = l.split(' ').nth(2).unwrap_or_default();
                !package_only.iter().any(|p| path.starts_with(p))
            })
            .map(str::to_owned)
            .collect();
    let actual: Vec<String> = listing(&install.root())
        .into_iter()
        .filter(|l| !l.contains("./var/lib/skein/mail/ann"))
        .collect();
    let missing: Vec<&String> = expected.iter().filter(|l| !actual.contains(l)).collect();
    let extra: Vec<&String> = actual.iter().filter(|l| !expected.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "dist/install.sh differs from the package (dist/debian/installed):\n\
         missing or different: {missing:#?}\nextra or different: {extra:#?}"
    );

    // The installed layout at work.
    let running = install.start();
    assert!(
        poll(|| smtpd_is_up(install.port) && install.spool().join("maildrop/.wake").exists()),
        "not started:\n{}",
        install.log_text()
    );
    let libexec = install.root().join("usr/libexec/skein");
    let services: Vec<(String, PathBuf)> = descendants(running.child.id())
        .iter()
        .filter_map(|p| {
            Some((
                p.name.clone(),
                std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok()?,
            ))
        })
        .collect();
    for name in ["skein-smtpd", "skein-router", "skein-scheduler"] {
        assert!(
            services
                .iter()
                .any(|(n, exe)| name.starts_with(n.as_str()) && exe.starts_with(&libexec)),
            "{name} not started from {}: {services:?}",
            libexec.display()
        );
    }
    let sendmail = install.root().join("usr/sbin/sendmail");
    let mut command = as_nobody(&sendmail);
    command
        .arg("-C")
        .arg(&install.config)
        .args(["-i", "ann@test.example"])
        .env_remove("SKEIN_CONFIG");
    let delivered = submit_and_read_the_delivery(
        &install,
        command,
        b"Subject: by the sendmail link\n\nhello\n",
    );
    assert!(
        delivered.contains("Subject: by the sendmail link"),
        "{delivered}"
    );
    assert!(
        delivered.contains(&format!("(skein pickup, from userid {})", nobody.uid)),
        "{delivered}"
    );
    let mut command = as_nobody(&install.root().join("usr/bin/mailq"));
    command
        .arg("-c")
        .arg(&install.config)
        .env_remove("SKEIN_CONFIG");
    let out = run_with_input(command, b"");
    assert!(
        out.status.success(),
        "mailq as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(running);
}

/// The EHLO reply of the smtpd on `port`, and the codes of `rcpts` on one
/// transaction.
fn ehlo_and_rcpts(port: u16, rcpts: &[&str]) -> (String, Vec<String>) {
    let mut client = SmtpClient::connect(port);
    let ehlo = client.send("EHLO client.example\r\n");
    let mail = client.send("MAIL FROM:<sender@client.example>\r\n");
    assert!(mail.starts_with("250"), "{mail}");
    let codes = rcpts
        .iter()
        .map(|r| client.send(&format!("RCPT TO:<{r}>\r\n"))[..3].to_owned())
        .collect();
    (ehlo, codes)
}

#[test]
fn as_root_a_reload_keeps_a_key_only_root_may_read_and_applies_the_rest() {
    require_root();
    ensure_account();
    ensure_drop_group();
    let keys = world_enterable_tempdir();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert = keys.path().join("cert.pem");
    let key = keys.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let tls = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let install = Installation::with("user = \"skein\"", true, "max_recipients = 5", &tls);
    let running = install.start();
    assert!(
        poll(|| smtpd_is_up(install.port)),
        "the smtpd never listened:\n{}",
        install.log_text()
    );
    let (ehlo, codes) = ehlo_and_rcpts(install.port, &["ann@test.example", "ann@test.example"]);
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    assert_eq!(codes, ["250", "250"]);

    let text = std::fs::read_to_string(&install.config).expect("config");
    std::fs::write(
        &install.config,
        text.replace("max_recipients = 5", "max_recipients = 1"),
    )
    .expect("write config");
    let out = install
        .skein()
        .arg("reload")
        .output()
        .expect("skein reload");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The smtpd (as skein, which cannot read the key) applies the limit
    // and keeps the certificate it read as root at start.
    assert!(
        poll(|| install
            .log_text()
            .lines()
            .any(|l| l.contains("prog=skein-smtpd") && l.contains("msg=reloaded"))),
        "{}",
        install.log_text()
    );
    let log = install.log_text();
    assert!(
        log.contains("cannot be read again") && log.contains("tls.key"),
        "{log}"
    );
    let (ehlo, codes) = ehlo_and_rcpts(install.port, &["ann@test.example", "ann@test.example"]);
    assert!(ehlo.contains("STARTTLS"), "the certificate stays: {ehlo}");
    assert_eq!(codes, ["250", "452"], "the new limit applies");
    // A SIGHUP to `skein start` reaches every service it runs.
    let smtpd_reloads = |log: &str| {
        log.lines()
            .filter(|l| l.contains("prog=skein-smtpd") && l.contains("msg=reloaded"))
            .count()
    };
    let pid = nix::unistd::Pid::from_raw(running.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        poll(|| smtpd_reloads(&install.log_text()) == 2),
        "{}",
        install.log_text()
    );
    drop(running);
}
