//! The example agent of docs/writing-an-agent.md (`examples/archive.rs`),
//! built and started as the scheduler would start it, really works.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use skein_agent::proto::{SchedulerToAgent, Status, ThreadKey};
use skein_agent::testing::{FakeScheduler, job, message_file, spawn_with_fd3};

/// Builds the example with the cargo and profile running this test.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary is in target/<profile>/deps");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args([
        "build",
        "--quiet",
        "-p",
        "skein-agent",
        "--example",
        "archive",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the example failed");
    profile_dir.join("examples").join("archive")
}

#[tokio::test]
async fn the_archive_example_files_a_message_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_file = dir.path().join("message");
    // A real spool message file: the library verifies it before the
    // example's handler runs.
    let (offset, size) = message_file(&spool_file, b"Subject: a\r\n\r\nbody\r\n");
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).expect("mkdir");

    let mut command = Command::new(example_binary());
    command
        .arg(&archive)
        .stdin(Stdio::null())
        .env_remove("SKEIN_CHANNEL");
    let (mut child, socket) = spawn_with_fd3(&mut command).expect("spawn");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = tokio::net::UnixStream::from_std(socket).expect("tokio socket");
    let mut scheduler = FakeScheduler::accept(socket).await.expect("handshake");
    assert_eq!(scheduler.channel(), "archive");

    let path = spool_file.to_str().expect("utf-8 path");
    let thread = ThreadKey::new("archive", "example.org");
    let job = job(
        5,
        thread,
        path,
        offset,
        size,
        &["a@example.org", "b@example.org"],
    );
    let outcomes = scheduler.deliver(job).await.expect("job");
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        assert_eq!(outcome.status, Status::Delivered, "{outcome:?}");
    }
    scheduler
        .send(&SchedulerToAgent::Shutdown)
        .await
        .expect("shutdown");
    scheduler.wait_closed().await.expect("closed");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status}");

    let files: Vec<PathBuf> = std::fs::read_dir(&archive)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files, [archive.join("TESTQ5.5.eml")]);
    assert_eq!(
        std::fs::read(&files[0]).expect("read"),
        b"Subject: a\r\n\r\nbody\r\n"
    );
}
