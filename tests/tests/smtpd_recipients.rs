//! Local recipients are checked at RCPT TO (`smtpd.verify_local_recipients`,
//! on by default) with the router's own routing: an unknown user, or an
//! alias the router would fail, is refused `550` with the router's status
//! and diagnostic — never accepted and bounced later (backscatter). The
//! aliases follow their file and SIGHUP.

mod smtpd_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use smtpd_support::{Client, GUARD, Smtpd};

/// The aliases file in `dir`, holding `text`.
fn aliases_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("aliases");
    std::fs::write(&path, text).expect("aliases file");
    path
}

/// `smtpd_keys` and a `[router]` section naming `aliases`.
fn start(smtpd_keys: &str, aliases: &Path) -> Smtpd {
    Smtpd::start(
        smtpd_keys,
        &format!("[router]\naliases = \"{}\"\n", aliases.display()),
    )
}

/// The envelope recipients of the one message in incoming/.
fn queued_recipients(smtpd: &Smtpd) -> Vec<String> {
    let files = smtpd.incoming();
    assert_eq!(files.len(), 1, "{files:?}");
    let (info, _) = skein_spool::read_message(&files[0]).expect("message file");
    info.envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect()
}

fn rcpt(c: &mut Client, address: &str) -> String {
    c.send(format!("RCPT TO:<{address}>\r\n").as_bytes());
    c.reply().expect("a reply to RCPT").text
}

const ALIASES: &str = "\
staff: joe, ann
part-crew: joe, nosuchuser
lost-crew: nosuchuser, gone
prog: \"|/bin/cat\"
";

#[test]
fn known_users_and_aliases_accepted_unknown_users_refused() {
    let files = skein_integration_tests::tempdir();
    let smtpd = start("", &aliases_file(files.path(), ALIASES));
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    let cases: &[(&str, &str)] = &[
        ("joe@localhost", "250 2.1.5 "),
        ("Ann+tag@LOCALHOST", "250 2.1.5 "),
        ("joe@test.example", "250 2.1.5 "), // the hostname is local too
        ("staff@localhost", "250 2.1.5 "),
        ("postmaster@localhost", "250 2.1.5 "), // root, a system account
        (
            "nosuchuser@localhost",
            "550 5.1.1 <nosuchuser@localhost>: no such local user: nosuchuser\r\n",
        ),
        (
            "nosuchuser@test.example",
            "550 5.1.1 <nosuchuser@test.example>: no such local user: nosuchuser\r\n",
        ),
        // One deliverable member is enough: the router bounces the rest.
        ("part-crew@localhost", "250 2.1.5 "),
        (
            "lost-crew@localhost",
            "550 5.1.1 <lost-crew@localhost>: no such local user: nosuchuser\r\n",
        ),
        ("prog@localhost", "550 5.7.1 <prog@localhost>: alias prog: "),
        // Not local: relayed (loopback may relay), nothing to look up.
        ("nosuchuser@elsewhere.example", "250 2.1.5 "),
    ];
    for (address, want) in cases {
        let got = rcpt(&mut c, address);
        assert!(
            got.starts_with(want),
            "{address}: want {want:?}, got {got:?}"
        );
    }
    c.send(b"DATA\r\nSubject: t\r\n\r\nt\r\n.\r\nQUIT\r\n");
    c.expect(354, "");
    c.expect(250, "2.0.0 Ok: queued as");
    c.expect(221, "");
    assert_eq!(
        queued_recipients(&smtpd),
        [
            "joe@localhost",
            "Ann+tag@LOCALHOST",
            "joe@test.example",
            "staff@localhost",
            "postmaster@localhost",
            "part-crew@localhost",
            "nosuchuser@elsewhere.example"
        ],
        "nothing queued for the refused recipients"
    );
    let log = smtpd.daemon.log_text();
    assert!(
        log.contains("recipient refused") && log.contains("rcpt=nosuchuser@localhost"),
        "{log}"
    );
}

#[test]
fn pipelined_mix_is_answered_in_order_and_queues_only_the_good() {
    let files = skein_integration_tests::tempdir();
    let smtpd = start("", &aliases_file(files.path(), ALIASES));
    let mut c = smtpd.client();
    c.send(
        b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\n\
          RCPT TO:<nosuchuser@localhost>\r\nRCPT TO:<joe@localhost>\r\n\
          RCPT TO:<ghost@test.example>\r\nRCPT TO:<staff@localhost>\r\n\
          RCPT TO:<prog@localhost>\r\nRCPT TO:<ann@localhost> NOTIFY=NEVER\r\n\
          DATA\r\nSubject: mixed\r\n\r\nmixed\r\n.\r\n\
          MAIL FROM:<sender@client.example>\r\nRCPT TO:<nosuchuser@localhost>\r\nDATA\r\n\
          QUIT\r\n",
    );
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(550, "5.1.1 <nosuchuser@localhost>");
    c.expect(250, "2.1.5");
    c.expect(550, "5.1.1 <ghost@test.example>");
    c.expect(250, "2.1.5");
    c.expect(550, "5.7.1 <prog@localhost>");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.expect(250, "2.0.0 Ok: queued as");
    // A transaction whose every recipient was refused takes no message.
    c.expect(250, "2.1.0");
    c.expect(550, "5.1.1");
    c.expect(554, "5.5.1");
    c.expect(221, "");
    assert_eq!(
        queued_recipients(&smtpd),
        ["joe@localhost", "staff@localhost", "ann@localhost"]
    );
}

#[test]
fn verification_off_accepts_unknown_local_users() {
    let smtpd = Smtpd::start("verify_local_recipients = false", "");
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\nRCPT TO:<nosuchuser@localhost>\r\nDATA\r\nSubject: t\r\n\r\nt\r\n.\r\nQUIT\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.expect(250, "2.0.0 Ok: queued as");
    c.expect(221, "");
    assert_eq!(queued_recipients(&smtpd), ["nosuchuser@localhost"]);
}

#[test]
fn refused_recipients_count_as_errors() {
    let smtpd = Smtpd::start("max_errors = 3", "");
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\nMAIL FROM:<sender@client.example>\r\nRCPT TO:<joe@localhost>\r\nRCPT TO:<x1@localhost>\r\nRCPT TO:<x2@localhost>\r\nRCPT TO:<x3@localhost>\r\nRCPT TO:<ann@localhost>\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(550, "5.1.1");
    c.expect(550, "5.1.1");
    c.expect(550, "5.1.1");
    c.expect(421, "4.7.0");
    c.expect_closed();
    assert!(smtpd.incoming().is_empty());
}

/// A fresh transaction on `c` and the reply to one RCPT in it.
fn try_rcpt(c: &mut Client, address: &str) -> String {
    c.send(b"RSET\r\nMAIL FROM:<sender@client.example>\r\n");
    c.expect(250, "2.0.0");
    c.expect(250, "2.1.0");
    rcpt(c, address)
}

/// What the server logs when it has read the aliases again
/// (`WatchedAliases::refresh`), and when a changed file did not load.
const RELOADED: &str = "msg=\"aliases loaded\"";
const NOT_RELOADED: &str = "aliases not reloaded";

/// How many times [`poll`] looks, [`PAUSE`] apart: two minutes' worth, a
/// bound against hanging for ever, not a timing assertion.
const POLLS: u32 = 2400;
const PAUSE: Duration = Duration::from_millis(50);

/// Whether `event` becomes true within [`POLLS`] looks.
fn poll(mut event: impl FnMut() -> bool) -> bool {
    for _ in 0..POLLS {
        if event() {
            return true;
        }
        std::thread::sleep(PAUSE);
    }
    false
}

/// Whether the server's log comes to hold `needle` at least `times`
/// times, while `c` keeps asking it about a known user: the server looks
/// at the aliases' files only when it looks a recipient up (and then at
/// most once a second), so each look is a lookup.
fn logged_while_looking_up(smtpd: &Smtpd, c: &mut Client, needle: &str, times: usize) -> bool {
    poll(|| {
        if smtpd.daemon.log_text().matches(needle).count() >= times {
            return true;
        }
        let reply = try_rcpt(c, "joe@localhost");
        assert!(reply.starts_with("250 "), "{reply}");
        false
    })
}

#[test]
fn aliases_follow_their_file_and_sighup() {
    let files = skein_integration_tests::tempdir();
    let path = aliases_file(files.path(), "crew: joe\n");
    let first_mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let smtpd = start("", &path);
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    assert!(try_rcpt(&mut c, "crew@localhost").starts_with("250 "));
    assert!(try_rcpt(&mut c, "team@localhost").starts_with("550 5.1.1 "));

    // A change on disk is noticed without a signal (looked for at most
    // once a second, at a lookup): wait for the reload to be logged.
    let later = first_mtime + Duration::from_secs(10);
    skein_integration_tests::rewrite(&path, "team: ann\n", later);
    let reloaded = logged_while_looking_up(&smtpd, &mut c, RELOADED, 1);
    assert!(reloaded, "change not seen:\n{}", smtpd.daemon.log_text());
    assert!(try_rcpt(&mut c, "team@localhost").starts_with("250 "));
    assert!(try_rcpt(&mut c, "crew@localhost").starts_with("550 5.1.1 "));

    // Same size, same inode, same time: invisible to the change check,
    // so the old table stays until SIGHUP. (Nothing shows that a check
    // ran in between; tests/tests/router.rs, whose router checks before
    // each message, covers that the check misses such a rewrite. Here:
    // SIGHUP reads the file whatever the check says.)
    skein_integration_tests::rewrite(&path, "crew: ann\n", later);
    assert!(try_rcpt(&mut c, "crew@localhost").starts_with("550 5.1.1 "));
    let pid = nix::unistd::Pid::from_raw(smtpd.daemon.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let asked = poll(|| {
        smtpd
            .daemon
            .log_text()
            .contains("the aliases are read again before the next lookup")
    });
    assert!(asked, "SIGHUP not seen:\n{}", smtpd.daemon.log_text());
    assert!(try_rcpt(&mut c, "crew@localhost").starts_with("250 "));
    assert!(try_rcpt(&mut c, "team@localhost").starts_with("550 5.1.1 "));
    let log = smtpd.daemon.log_text();
    assert_eq!(log.matches(RELOADED).count(), 2, "read again:\n{log}");

    // A broken file: logged, the previous aliases stay in force.
    skein_integration_tests::rewrite(
        &path,
        "crew: ann\nthis line is broken\n",
        later + Duration::from_secs(10),
    );
    let noticed = logged_while_looking_up(&smtpd, &mut c, NOT_RELOADED, 1);
    assert!(
        noticed,
        "broken file not seen:\n{}",
        smtpd.daemon.log_text()
    );
    assert!(try_rcpt(&mut c, "crew@localhost").starts_with("250 "));
    c.send(b"QUIT\r\n");
    c.expect(221, "");
    let log = smtpd.daemon.log_text();
    assert!(
        log.contains(&format!("{}:2: ", path.display())) && log.contains("level=error"),
        "the broken line is named:\n{log}"
    );
}

#[test]
fn a_broken_aliases_file_stops_the_start() {
    let files = skein_integration_tests::tempdir();
    let path = aliases_file(files.path(), "ok: joe\nbroken\n");
    let port = smtpd_support::free_port();
    let env = skein_integration_tests::TestEnv::new(&format!(
        "[smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n\n[router]\naliases = \"{}\"\n",
        path.display()
    ));
    let mut daemon = env.start("skein-smtpd");
    let mut status = None;
    let exited = env.wait_for(GUARD, || {
        status = daemon.child.try_wait().expect("try_wait");
        status.is_some()
    });
    let log = daemon.log_text();
    assert!(exited, "skein-smtpd should refuse to start:\n{log}");
    assert!(!status.expect("exited").success(), "{log}");
    let needle = format!("{}:2: ", path.display());
    assert!(log.contains(&needle), "expected {needle:?} in:\n{log}");
}
