//! Every bad input to `skein sendmail` gets a clear message and its
//! sysexits code, and leaves nothing in the spool.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use skein_integration_tests::{TestEnv, bin};

fn run(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn check(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

fn assert_nothing_queued(env: &TestEnv) {
    assert!(env.files("incoming").is_empty(), "nothing in incoming/");
    assert!(env.files("tmp").is_empty(), "nothing in tmp/");
}

#[test]
fn no_recipients_is_ex_dataerr() {
    let env = TestEnv::new("");
    let out = run(env.sendmail(&[]), b"Subject: x\n\nbody\n");
    check(&out, 65, "no recipients");
    let out = run(env.sendmail(&["-t"]), b"Subject: x\n\nbody\n");
    check(&out, 65, "no recipients");
    assert_nothing_queued(&env);
}

#[test]
fn invalid_address_is_ex_dataerr() {
    let env = TestEnv::new("");
    for (args, input) in [
        (vec!["a..b@example.org"], &b"x\n"[..]),
        (vec!["-t"], b"To: bad@-example.org\n\nx\n"),
        (vec!["-f", "sender@@x", "ok@localhost"], b"x\n"),
        (vec!["user@exa mple.org"], b"x\n"),
    ] {
        let out = run(env.sendmail(&args), input);
        check(&out, 65, "invalid address");
    }
    assert_nothing_queued(&env);
}

#[test]
fn unreadable_input_is_ex_noinput() {
    let env = TestEnv::new("");
    // Standard input is a directory: read(2) fails with EISDIR.
    let dir = std::fs::File::open(env.dir.path()).unwrap();
    let out = env
        .sendmail(&["ann@localhost"])
        .stdin(Stdio::from(dir))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    check(&out, 66, "cannot read the message from standard input");
    assert_nothing_queued(&env);
}

#[test]
fn oversize_message_is_refused() {
    let env = TestEnv::new("[smtpd]\nmax_message_size = \"4k\"\n");
    let big = format!("Subject: big\n\n{}\n", "x".repeat(8000));
    let out = run(env.sendmail(&["ann@localhost"]), big.as_bytes());
    check(&out, 65, "larger than the size limit of 4096 bytes");
    assert_nothing_queued(&env);
    // Just under the limit still goes through.
    let out = run(env.sendmail(&["ann@localhost"]), b"Subject: small\n\nok\n");
    assert!(out.status.success());
    assert_eq!(env.files("incoming").len(), 1);
}

#[test]
fn spool_that_is_not_a_directory_is_ex_tempfail() {
    let env = TestEnv::new("");
    std::fs::create_dir_all(env.spool()).unwrap();
    std::fs::write(env.spool().join("incoming"), "a file, not a directory").unwrap();
    let out = run(env.sendmail(&["ann@localhost"]), b"Subject: x\n\nbody\n");
    check(&out, 75, "cannot queue the message");
}

/// A spool the submitter may not write is not an error by itself: the
/// submission goes to the setgid `skein-postdrop` (docs/operations.md,
/// "Every local user"). Here that program is the build's, not installed
/// setgid, and the configuration is the submitter's own, which a setgid
/// program must not trust: it refuses with EX_CONFIG, saying why, and
/// nothing is queued or dropped.
#[test]
fn unwritable_spool_goes_to_postdrop_which_refuses_an_untrusted_config() {
    let env = TestEnv::new("");
    // Create the spool, then make it unwritable for the submitter.
    let out = run(env.sendmail(&["ann@localhost"]), b"x\n");
    assert!(out.status.success());
    // (TestEnv makes the tests an ordinary user: permissions apply.)
    std::fs::set_permissions(
        env.spool().join("tmp"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let cmd = env.sendmail(&["ann@localhost"]);
    let out = run(cmd, b"Subject: x\n\nbody\n");
    check(&out, 78, "will not use");
    check(&out, 78, "not queued: skein-postdrop exited 78");
    assert_eq!(env.files("incoming").len(), 1, "only the first message");
    let dropped: Vec<_> = env
        .files("maildrop")
        .into_iter()
        .filter(|p| !p.ends_with(".wake"))
        .collect();
    assert!(dropped.is_empty(), "{dropped:?}");
}

#[test]
fn broken_config_file_names_file_line_and_key() {
    let env = TestEnv::new("[scheduler]\nexpiry = \"5x\"\n");
    let out = run(env.sendmail(&["ann@localhost"]), b"x\n");
    let config = env.config.display().to_string();
    check(&out, 78, &config);
    let err = String::from_utf8_lossy(&out.stderr);
    // hostname, blank, [spool], dir, blank, [local], maildir_root, blank, [scheduler], expiry
    assert!(
        err.contains(&format!("{config}:10")),
        "line number in {err:?}"
    );
    assert!(err.contains("scheduler.expiry"), "key in {err:?}");
    // `skein config check` says the same and exits EX_CONFIG.
    let out = env.skein().args(["config", "check"]).output().unwrap();
    check(&out, 78, "scheduler.expiry");
}

#[test]
fn bad_options_are_ex_usage() {
    let env = TestEnv::new("");
    for args in [
        &["-Z"][..],
        &["-f"],
        // (-bs is an SMTP session now: tests/tests/sendmail_bs.rs.)
        &["-bd"],
        &["-N", "maybe", "a@localhost"],
    ] {
        let out = run(env.sendmail(args), b"x\n");
        check(&out, 64, "usage: sendmail");
    }
    assert_nothing_queued(&env);
}

#[test]
fn reached_as_sendmail_through_argv0_with_t_and_bcc() {
    let env = TestEnv::new("");
    let link = env.dir.path().join("sendmail");
    std::os::unix::fs::symlink(bin("skein"), &link).unwrap();
    let mut cmd = Command::new(&link);
    cmd.env("SKEIN_CONFIG", &env.config).args([
        "-t",
        "-oi",
        "-f",
        "robot@example.org",
        "-F",
        "The Robot",
        "extra@localhost",
    ]);
    let msg = "To: Ann <ann@localhost>, bob@localhost\nCc: carol\nBcc: secret@localhost\nSubject: hi\n\nline one\n.\nstill body\n";
    let out = run(cmd, msg.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = env.files("incoming");
    assert_eq!(files.len(), 1);
    let (info, bytes) = skein_spool::read_message(&files[0]).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let rcpts: Vec<&str> = info
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(
        rcpts,
        [
            "extra@localhost",
            "ann@localhost",
            "bob@localhost",
            "carol@localhost",
            "secret@localhost"
        ]
    );
    assert_eq!(info.envelope.sender, "robot@example.org");
    assert!(!text.contains("Bcc"), "Bcc removed: {text}");
    assert!(!text.contains("secret"), "Bcc removed: {text}");
    for h in [
        "\r\nDate: ",
        "\r\nMessage-ID: <",
        "\r\nFrom: The Robot <robot@example.org>\r\n",
    ] {
        assert!(text.contains(h), "{h:?} added: {text}");
    }
    assert!(
        text.ends_with("\r\n\r\nline one\r\n.\r\nstill body\r\n"),
        "-oi keeps the dot line: {text:?}"
    );
}
