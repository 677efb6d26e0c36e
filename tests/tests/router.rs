//! `skein-router` on a temporary spool, no scheduler running: messages
//! submitted with `skein sendmail` (and a few written straight into the
//! spool) end up as control files in transport/ and message files in
//! queue/, routed to the right threads — local users with Maildirs,
//! aliases, a static route, plain SMTP — or failed with the right status;
//! crash leftovers are completed, corrupt files set aside, aliases
//! reloaded; SIGTERM stops the router with status 0.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use skein_integration_tests::{Daemon, TestEnv, bin};
use skein_spool::{
    Area, ControlFile, ControlRecipient, Envelope, OutcomeKind, QueueId, Recipient, Record, Spool,
    read_message,
};

/// A guard against hanging for ever, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_with_aliases(aliases: &str) -> TestEnv {
    let mut env = TestEnv::new("");
    let path = env.dir.path().join("aliases");
    std::fs::write(&path, aliases).expect("write aliases");
    let config = format!(
        "hostname = \"test.example\"\n\n[spool]\ndir = \"{spool}\"\n\n[local]\nmaildir_root = \"{mail}\"\n\n\
         [router]\nlocal_domains = [\"localhost\", \"example.org\"]\naliases = \"{aliases}\"\n\n\
         [[route]]\ndomain = \"static.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:2600\"\n",
        spool = env.spool().display(),
        mail = env.dir.path().join("mail").display(),
        aliases = path.display(),
    );
    env.config = env.dir.path().join("router.toml");
    std::fs::write(&env.config, config).expect("write config");
    env.make_users(&["ann".to_owned(), "bob".to_owned()]);
    env
}

fn aliases_path(env: &TestEnv) -> std::path::PathBuf {
    env.dir.path().join("aliases")
}

/// Submits with `skein sendmail -v` and returns the queue id it reports.
fn submit(env: &TestEnv, rcpts: &[&str], message: &str) -> String {
    let mut args = vec!["-v", "-i", "-f", "joe@example.net"];
    args.extend_from_slice(rcpts);
    let mut child = env
        .sendmail(&args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message.as_bytes())
        .expect("write message");
    let out = child.wait_with_output().expect("wait sendmail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sendmail {rcpts:?}: {err}");
    err.split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .unwrap_or_else(|| panic!("no queue id in {err:?}"))
        .to_owned()
}

/// Waits until `id` has left incoming/ for queue/ + transport/, and
/// returns its control file.
fn routed(env: &TestEnv, daemon: &Daemon, id: &str) -> ControlFile {
    let spool = env.spool();
    let done = env.wait_for(PATIENCE, || {
        !spool.join("incoming").join(id).exists()
            && spool.join("queue").join(id).exists()
            && spool.join("transport").join(id).exists()
    });
    assert!(
        done,
        "{id} was not routed; router log:\n{}",
        daemon.log_text()
    );
    let (control, torn) =
        ControlFile::read(&spool.join("transport").join(id)).expect("control file");
    assert!(!torn);
    let (info, _) = read_message(&spool.join("queue").join(id)).expect("queued message");
    assert_eq!(info.id.as_str(), id);
    assert_eq!(control.message, format!("queue/{id}"));
    assert_eq!((control.offset, control.size), (info.offset, info.size));
    assert_eq!(control.envelope.sender, info.envelope.sender);
    assert!(control.envelope.recipients.is_empty());
    control
}

/// (channel, host, address, nexthop, orcpt) of one recipient.
type Row = (String, String, String, Option<String>, Option<String>);

/// The [`Row`] of each recipient.
fn threads(control: &ControlFile) -> Vec<Row> {
    control
        .recipients
        .iter()
        .map(|r| {
            (
                r.channel.clone(),
                r.host.clone(),
                r.address.clone(),
                r.nexthop.clone(),
                r.orcpt.clone(),
            )
        })
        .collect()
}

fn row(
    channel: &str,
    host: &str,
    address: &str,
    nexthop: Option<&str>,
    orcpt: Option<&str>,
) -> Row {
    (
        channel.into(),
        host.into(),
        address.into(),
        nexthop.map(Into::into),
        orcpt.map(Into::into),
    )
}

/// The initial failed outcome of recipient `rcpt`: (status, diagnostic).
fn failure(control: &ControlFile, rcpt: u32) -> (String, String) {
    let found = control.records.iter().find_map(|record| match record {
        Record::Outcome {
            rcpt: r,
            kind: OutcomeKind::Failed,
            attempt: 0,
            status,
            diagnostic,
            ..
        } if *r == rcpt => Some((status.to_string(), diagnostic.clone())),
        _ => None,
    });
    found.unwrap_or_else(|| panic!("no failure record for {rcpt}: {control:?}"))
}

fn stop(daemon: Daemon, env: &TestEnv) -> String {
    let log = daemon.log.clone();
    let status = daemon.stop();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "router exit status; log:\n{text}");
    assert!(
        !skein_spool::rendezvous::wake_socket(&env.spool(), skein_spool::Wakeable::Router).exists(),
        "the wake-up socket is removed at exit"
    );
    text
}

const ALIASES: &str = "\
# aliases for the router test
staff: ann,
       bob, carol@remote.test
ann:   ann, archive@static.test
prog:  \"|/bin/cat > /dev/null\"
loopa: loopb
loopb: loopa
";

#[test]
fn routes_users_aliases_routes_and_failures() {
    let env = env_with_aliases(ALIASES);
    // Submitted before the router runs: found by its start-up scan.
    let early = submit(
        &env,
        &["bob@localhost"],
        "Subject: early\n\nbefore the router\n",
    );
    let router = env.start("skein-router");
    let c = routed(&env, &router, &early);
    assert_eq!(
        threads(&c),
        vec![row("local", "bob", "bob@localhost", None, None)]
    );
    assert!(c.records.is_empty());

    // Submitted while it runs: the wake-up datagram.
    let staff = submit(&env, &["staff@localhost"], "Subject: staff\n\nhello all\n");
    let c = routed(&env, &router, &staff);
    let o = Some("rfc822;staff@localhost");
    assert_eq!(
        threads(&c),
        vec![
            row("local", "ann", "ann@localhost", None, o),
            row(
                "smtp",
                "127.0.0.1:2600",
                "archive@static.test",
                Some("127.0.0.1:2600"),
                o
            ),
            row("local", "bob", "bob@localhost", None, o),
            row("smtp", "remote.test", "carol@remote.test", None, o),
        ]
    );
    assert!(c.records.is_empty(), "nothing failed: {:?}", c.records);

    let mixed = submit(
        &env,
        &[
            "nosuchuser-skein@localhost",
            "dave@static.test",
            "someone@Example.NET",
            "prog@localhost",
            "loopa@example.org",
            "Bob@LOCALHOST",
        ],
        "Subject: mixed\n\nsome fail\n",
    );
    let c = routed(&env, &router, &mixed);
    assert_eq!(
        threads(&c),
        vec![
            row("error", "router", "nosuchuser-skein@localhost", None, None),
            row(
                "smtp",
                "127.0.0.1:2600",
                "dave@static.test",
                Some("127.0.0.1:2600"),
                None
            ),
            row("smtp", "example.net", "someone@Example.NET", None, None),
            row("error", "router", "prog@localhost", None, None),
            row("error", "router", "loopa@example.org", None, None),
            row("local", "bob", "Bob@LOCALHOST", None, None),
        ]
    );
    assert_eq!(failure(&c, 0).0, "5.1.1");
    let (status, diagnostic) = failure(&c, 3);
    assert_eq!(status, "5.7.1");
    assert!(diagnostic.contains("allow_pipe_targets"), "{diagnostic}");
    let (status, diagnostic) = failure(&c, 4);
    assert_eq!(status, "5.4.6");
    assert_eq!(diagnostic, "alias loop: loopa -> loopb -> loopa");
    assert_eq!(c.records.len(), 3, "only the failures have records");

    // 100 Received fields plus the one sendmail adds: a mail loop.
    let mut looping = String::new();
    for hop in 0..100 {
        looping.push_str(&format!(
            "Received: from hop{hop} by relay{hop}.example; Mon, 1 Jan 2024 00:00:00 +0000\n"
        ));
    }
    looping.push_str("Subject: looping\n\nround and round\n");
    let id = submit(&env, &["bob@localhost", "x@example.net"], &looping);
    let c = routed(&env, &router, &id);
    assert_eq!(c.recipients.len(), 2);
    for rcpt in 0..2 {
        let (status, diagnostic) = failure(&c, rcpt);
        assert_eq!(status, "5.4.6");
        assert!(diagnostic.contains("101 Received"), "{diagnostic}");
    }

    assert!(env.files("incoming").is_empty());
    let log = stop(router, &env);
    assert!(
        log.contains(&format!("queue_id={mixed}")) && log.contains("failed=3"),
        "one line per routed message:\n{log}"
    );
    assert!(log.contains("recipients=4"), "{log}");
}

fn write_incoming(spool: &Spool, rcpts: &[&str]) -> QueueId {
    let envelope = Envelope {
        sender: "joe@example.net".into(),
        recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
        origin: "router test".into(),
        ..Default::default()
    };
    let mut writer = spool.create_incoming(&envelope).expect("create incoming");
    writer
        .write_message(b"Subject: direct\r\n\r\nwritten into the spool\r\n")
        .expect("write");
    writer.commit().expect("commit")
}

#[test]
fn leftovers_of_a_crash_are_completed_and_corrupt_files_set_aside() {
    let env = env_with_aliases("");
    let spool = Spool::open(env.spool()).expect("spool");

    // S1': a router died after writing the control file, before the move.
    let interrupted = write_incoming(&spool, &["ann@localhost"]);
    let (info, _) =
        skein_spool::read_header(&spool.path(Area::Incoming, &interrupted)).expect("header");
    let earlier = ControlFile {
        id: interrupted.clone(),
        arrival_micros: info.arrival_micros,
        envelope: Envelope {
            recipients: Vec::new(),
            ..info.envelope.clone()
        },
        message: format!("queue/{interrupted}"),
        offset: info.offset,
        size: info.size,
        recipients: vec![ControlRecipient {
            index: 0,
            channel: "local".into(),
            host: "marker".into(),
            address: "marker@localhost".into(),
            nexthop: None,
            notify: None,
            orcpt: None,
        }],
        records: Vec::new(),
    };
    assert!(spool.create_control(&earlier).expect("control"));

    // Bad recipient syntax (sendmail would refuse it; another writer may not).
    let bad_syntax = write_incoming(&spool, &["a..b@example.org", "ann@example.org"]);

    // A message whose bytes no longer match its checksum.
    let corrupt = write_incoming(&spool, &["ann@localhost"]);
    let corrupt_path = spool.path(Area::Incoming, &corrupt);
    let mut bytes = std::fs::read(&corrupt_path).expect("read");
    let last = bytes.len() - 4;
    bytes[last] ^= 0x01;
    std::fs::write(&corrupt_path, bytes).expect("damage");

    // A temporary file of a writer that died.
    let stale = spool.dir(Area::Tmp).join("2147483646.STALE");
    std::fs::write(&stale, "partial").expect("stale");

    let router = env.start("skein-router");
    let c = routed(&env, &router, interrupted.as_str());
    assert_eq!(c, earlier, "the existing control file is never rewritten");

    let c = routed(&env, &router, bad_syntax.as_str());
    assert_eq!(
        threads(&c),
        vec![
            row("error", "router", "a..b@example.org", None, None),
            row("local", "ann", "ann@example.org", None, None),
        ]
    );
    assert_eq!(failure(&c, 0).0, "5.1.3");

    let corrupt_dir = env.spool().join("corrupt");
    let set_aside = env.wait_for(PATIENCE, || {
        corrupt_dir.join(format!("incoming.{corrupt}")).exists()
    });
    assert!(
        set_aside,
        "corrupt message set aside; log:\n{}",
        router.log_text()
    );
    assert!(corrupt_dir.join(format!("incoming.{corrupt}.why")).exists());
    assert!(!spool.path(Area::Transport, &corrupt).exists());
    assert!(!spool.path(Area::Queue, &corrupt).exists());
    assert!(!stale.exists(), "stale temporary file removed at start");
    assert!(env.files("incoming").is_empty());
    stop(router, &env);
}

fn hosts(control: &ControlFile) -> Vec<String> {
    control.recipients.iter().map(|r| r.host.clone()).collect()
}

#[test]
fn aliases_are_reloaded_on_change_and_on_sighup_and_a_broken_file_is_survived() {
    let env = env_with_aliases("list: ann\n");
    let path = aliases_path(&env);
    let first_mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let router = env.start("skein-router");
    let id = submit(&env, &["list@localhost"], "Subject: 1\n\n1\n");
    assert_eq!(hosts(&routed(&env, &router, &id)), vec!["ann"]);

    // Same size, same inode, same time: invisible to the change check, so
    // the old table stays until SIGHUP.
    skein_integration_tests::rewrite(&path, "list: bob\n", first_mtime);
    let id = submit(&env, &["list@localhost"], "Subject: 2\n\n2\n");
    assert_eq!(hosts(&routed(&env, &router, &id)), vec!["ann"]);
    let pid = nix::unistd::Pid::from_raw(router.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let reloaded = env.wait_for(PATIENCE, || router.log_text().contains("aliases loaded"));
    assert!(reloaded, "SIGHUP reloads; log:\n{}", router.log_text());
    let id = submit(&env, &["list@localhost"], "Subject: 3\n\n3\n");
    assert_eq!(hosts(&routed(&env, &router, &id)), vec!["bob"]);

    // A change is noticed without a signal.
    let later = first_mtime + Duration::from_secs(10);
    skein_integration_tests::rewrite(&path, "list: ann, bob\n", later);
    let id = submit(&env, &["list@localhost"], "Subject: 4\n\n4\n");
    assert_eq!(hosts(&routed(&env, &router, &id)), vec!["ann", "bob"]);

    // A broken file: logged with file and line, the previous table kept.
    skein_integration_tests::rewrite(
        &path,
        "list: ann\nthis line is broken\n",
        later + Duration::from_secs(10),
    );
    let id = submit(&env, &["list@localhost"], "Subject: 5\n\n5\n");
    assert_eq!(hosts(&routed(&env, &router, &id)), vec!["ann", "bob"]);
    let log = stop(router, &env);
    assert!(
        log.contains(&format!("{}:2: ", path.display())) && log.contains("level=error"),
        "the broken line is named:\n{log}"
    );
}

#[test]
fn a_broken_aliases_file_refuses_the_start() {
    let env = env_with_aliases("ok: ann\nbroken: \"|unterminated\n");
    // Named with -c this time rather than SKEIN_CONFIG.
    let mut child = Command::new(bin("skein-router"))
        .arg("-c")
        .arg(&env.config)
        .env_remove("SKEIN_CONFIG")
        .env("SKEIN_LOG_FORMAT", "logfmt")
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start skein-router");
    let mut status = None;
    let exited = env.wait_for(PATIENCE, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "the router should refuse to start:\n{err}");
    // EX_CONFIG, which neither `skein start` nor the units restart, with
    // the key that names the file and the file's own line.
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains(": router.aliases: "), "{err}");
    let needle = format!("{}:2: unterminated quote", aliases_path(&env).display());
    assert!(err.contains(&needle), "expected {needle:?} in:\n{err}");
}
