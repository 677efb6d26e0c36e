//! The real `skein-local` binary, started the way the scheduler starts it
//! (socket on fd 3, `SKEIN_CONFIG`, `SKEIN_CHANNEL`), delivering a message
//! written into a real spool, against a fake scheduler.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use skein_agent::testing::{FakeScheduler, job, spawn_with_fd3};
use skein_proto::{SchedulerToAgent, Status, ThreadKey};
use skein_spool::{Area, Envelope, Recipient, Spool, read_header};

const BIN: &str = env!("CARGO_BIN_EXE_skein-local");

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("skein.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"test.example\"\n[spool]\ndir = \"{}\"\n[local]\nmaildir_root = \"{}\"\n",
            dir.path().join("spool").display(),
            dir.path().join("mail").display()
        ),
    )
    .expect("config");
    Env { dir, config }
}

impl Env {
    fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    fn new_files(&self, user: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.mail().join(user).join("new"))
            .map(|rd| rd.map(|e| e.expect("entry").path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Writes a message into `incoming/` the way `skein sendmail` does;
/// returns its queue id, path, message offset and size.
fn spool_message(spool_dir: &Path, body: &[u8]) -> (String, PathBuf, u64, u64) {
    let spool = Spool::open(spool_dir).expect("spool");
    let envelope = Envelope {
        sender: "joe@example.org".into(),
        recipients: vec![Recipient::new("alice@localhost")],
        ..Envelope::default()
    };
    let mut writer = spool.create_incoming(&envelope).expect("create");
    writer.write_message(body).expect("write");
    let id = writer.commit().expect("commit");
    let path = spool.path(Area::Incoming, &id);
    let (info, _) = read_header(&path).expect("header");
    (id.as_str().to_owned(), path, info.offset, info.size)
}

#[tokio::test]
async fn delivers_a_spooled_message_over_fd3_and_stops_on_shutdown() {
    let env = env();
    std::fs::create_dir_all(env.mail().join("alice")).expect("alice's maildir");
    let body = b"From: joe@example.org\r\nSubject: over fd 3\r\n\r\nhello\r\n.dot line\r\n";
    let (queue_id, path, offset, size) = spool_message(&env.dir.path().join("spool"), body);

    let mut command = Command::new(BIN);
    command
        .env("SKEIN_CONFIG", &env.config)
        .env("SKEIN_CHANNEL", "local")
        .env("SKEIN_LOG", "debug")
        .stdin(Stdio::null());
    let (mut child, socket) = spawn_with_fd3(&mut command).expect("spawn skein-local");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = tokio::net::UnixStream::from_std(socket).expect("tokio socket");
    let mut scheduler = FakeScheduler::accept(socket).await.expect("handshake");
    assert_eq!(scheduler.channel(), "local");
    assert_eq!(scheduler.agent().program, "skein-local");

    let path = path.to_str().expect("utf-8 path");
    let mut alice = job(
        1,
        ThreadKey::new("local", "alice"),
        path,
        offset,
        size,
        &["alice@localhost", "alice+news@localhost"],
    );
    alice.queue_id = queue_id.clone();
    alice.sender = "joe@example.org".into();
    let mut nobody = job(
        2,
        ThreadKey::new("local", "no-such-user-skein"),
        path,
        offset,
        size,
        &["no-such-user-skein@localhost"],
    );
    nobody.queue_id = queue_id;
    let delivered = scheduler.deliver(alice).await.expect("job 1");
    let failed = scheduler.deliver(nobody).await.expect("job 2");
    scheduler
        .send(&SchedulerToAgent::Shutdown)
        .await
        .expect("shutdown");
    scheduler.wait_closed().await.expect("agent closes");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "skein-local exited with {status}");

    assert_eq!(delivered.len(), 2);
    for outcome in &delivered {
        assert_eq!(outcome.status, Status::Delivered, "{outcome:?}");
        assert_eq!(outcome.enhanced.to_string(), "2.0.0");
    }
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status, Status::Failed);
    assert_eq!(failed[0].enhanced.to_string(), "5.1.1");
    assert!(failed[0].diagnostic.contains("no such user"), "{failed:?}");

    let files = env.new_files("alice");
    assert_eq!(files.len(), 2);
    let mut contents: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("read"))
        .collect();
    contents.sort();
    let expected = |to: &str| {
        format!(
            "Return-Path: <joe@example.org>\nDelivered-To: {to}\n\
             From: joe@example.org\nSubject: over fd 3\n\nhello\n.dot line\n"
        )
    };
    assert_eq!(
        contents,
        [
            expected("alice+news@localhost"),
            expected("alice@localhost")
        ]
    );
    assert!(!env.mail().join("no-such-user-skein").exists());
}

#[tokio::test]
async fn the_end_of_the_connection_stops_the_agent() {
    let env = env();
    let mut command = Command::new(BIN);
    command
        .arg("-c")
        .arg(&env.config)
        .stdin(Stdio::null())
        .env_remove("SKEIN_CHANNEL");
    let (mut child, socket) = spawn_with_fd3(&mut command).expect("spawn");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = tokio::net::UnixStream::from_std(socket).expect("tokio socket");
    let scheduler = FakeScheduler::accept(socket).await.expect("handshake");
    assert_eq!(scheduler.channel(), "local", "the default channel");
    drop(scheduler);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn run_by_hand_it_says_it_needs_the_scheduler() {
    let env = env();
    let output = Command::new(BIN)
        .arg("-c")
        .arg(&env.config)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("file descriptor 3"), "{stderr}");
}

#[test]
fn bad_arguments_are_a_usage_error() {
    let output = Command::new(BIN)
        .arg("--frobnicate")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    let output = Command::new(BIN).arg("--version").output().expect("run");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("skein-local "));
}
