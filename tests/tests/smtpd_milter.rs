//! Content filters in the smtpd (issue 15, the smtpd's milter client):
//! a scripted milter of our own on a loopback port answers each command
//! as a test says. Modifications at end of message (headers added,
//! inserted, changed, deleted; the body replaced; a recipient added and
//! one deleted; the sender changed) are what lands in `incoming/`; every
//! reply type reaches the client as it should (a reply text that tries to
//! inject a line is not passed on); a filter that hangs past its timeout
//! gets each default action; one that drops the connection mid-message
//! too; afterwards the smtpd still serves.

mod smtpd_support;

use std::sync::Arc;

use skein_integration_tests::scripted_milter::{Act, Script, cont, milter, packet};
use smtpd_support::Smtpd;

/// Sends one message from joe's client to joe and ann; returns the final
/// reply's code and text.
fn send(smtpd: &Smtpd) -> (u16, String) {
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<joe@localhost>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(b"From: sender@client.example\r\nSubject: original\r\nX-Delete-Me: yes\r\n\r\noriginal body\r\n.\r\n");
    let reply = c.reply().expect("a reply to the end of data");
    c.send(b"QUIT\r\n");
    (reply.code, reply.text)
}

fn start(port: u16, keys: &str) -> Smtpd {
    Smtpd::start(
        &format!(
            "milters = [\"inet:127.0.0.1:{port}\"]\nmilter_timeout = \"1s\"\nmilter_content_timeout = \"1s\"\n{keys}"
        ),
        "",
    )
}

#[test]
fn end_of_message_modifications_are_what_is_queued() {
    let port = milter(Arc::new(|code, _| match code {
        b'E' => Act::Send(
            [
                packet(b'h', b"X-Spam\0no\0"),
                packet(
                    b'i',
                    b"\0\0\0\0Authentication-Results\0test.example; none\0",
                ),
                packet(b'm', b"\0\0\0\x01Subject\0changed\0"),
                packet(b'm', b"\0\0\0\x01X-Delete-Me\0\0"),
                packet(b'b', b"replaced body\r\n"),
                packet(b'+', b"<postmaster@localhost>\0"),
                packet(b'-', b"<joe@localhost>\0"),
                packet(b'e', b"<changed@client.example>\0"),
                packet(b'a', b""),
            ]
            .concat(),
        ),
        _ => cont(),
    }));
    let smtpd = Smtpd::start_with_users(
        &format!("milters = [\"inet:127.0.0.1:{port}\"]"),
        "",
        &["joe", "ann", "postmaster"],
    );
    let (code, text) = send(&smtpd);
    assert_eq!(code, 250, "{text}");
    let files = smtpd.incoming();
    assert_eq!(files.len(), 1);
    let (info, bytes) = skein_spool::read_message(&files[0]).expect("the queued message verifies");
    assert_eq!(info.envelope.sender, "changed@client.example");
    let rcpts: Vec<&str> = info
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["ann@localhost", "postmaster@localhost"]);
    let stored = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        stored.starts_with("Authentication-Results: test.example; none\r\nReceived: from "),
        "{stored}"
    );
    assert!(stored.contains("\r\nSubject: changed\r\n"), "{stored}");
    assert!(!stored.contains("X-Delete-Me"), "{stored}");
    assert!(!stored.contains("original"), "{stored}");
    assert!(
        stored.ends_with("X-Spam: no\r\n\r\nreplaced body\r\n"),
        "{stored}"
    );
}

#[test]
fn every_reply_type_reaches_the_client_as_it_should() {
    // (Refusals at MAIL and RCPT: the next test.)
    let cases: Vec<(&str, Script, u16, &str)> = vec![
        (
            "custom reply at end of message",
            Arc::new(|code, _| {
                if code == b'E' {
                    Act::Send(packet(
                        b'y',
                        b"554 5.7.1 Spam detected by the scripted milter\0",
                    ))
                } else {
                    cont()
                }
            }),
            554,
            "554 5.7.1 Spam detected by the scripted milter",
        ),
        (
            "a reply that tries to inject a line",
            Arc::new(|code, _| {
                if code == b'E' {
                    Act::Send(packet(b'y', b"550 5.7.1 no\r\n250 2.0.0 injected\0"))
                } else {
                    cont()
                }
            }),
            550,
            "550 5.7.1 Message content rejected",
        ),
        (
            "accept at connect: nothing more asked",
            Arc::new(|code, _| {
                if code == b'C' {
                    Act::Send(packet(b'a', b""))
                } else {
                    Act::Hang
                }
            }),
            250,
            "250 2.0.0 Ok: queued as",
        ),
    ];
    for (what, script, code, text) in cases {
        let port = milter(script);
        let smtpd = start(port, "");
        let (got, reply) = send(&smtpd);
        assert_eq!(got, code, "{what}: {reply}");
        assert!(reply.starts_with(text), "{what}: {reply}");
        assert!(!reply.contains("injected"), "{what}: {reply}");
        let queued = smtpd.incoming().len();
        assert_eq!(queued, usize::from(code == 250), "{what}: queued {queued}");
        smtpd.assert_serving_after_filters();
    }
    // Discard: the client is told it went, nothing is queued.
    let port = milter(Arc::new(|code, _| {
        if code == b'E' {
            Act::Send(packet(b'd', b""))
        } else {
            cont()
        }
    }));
    let smtpd = start(port, "");
    let (code, reply) = send(&smtpd);
    assert_eq!(code, 250, "{reply}");
    assert!(smtpd.incoming().is_empty(), "discarded");
    assert!(
        smtpd
            .daemon
            .log_text()
            .contains("discarded by a content filter")
    );
}

#[test]
fn a_filter_that_hangs_or_drops_gets_the_default_action_and_the_smtpd_goes_on() {
    for (action, code) in [("tempfail", 451), ("reject", 550), ("accept", 250)] {
        let port = milter(Arc::new(
            |code, _| if code == b'E' { Act::Hang } else { cont() },
        ));
        let smtpd = start(port, &format!("milter_default_action = \"{action}\""));
        let (got, reply) = send(&smtpd);
        assert_eq!(got, code, "{action}: {reply}");
        assert_eq!(smtpd.incoming().len(), usize::from(code == 250), "{action}");
        let log = smtpd.daemon.log_text();
        assert!(
            log.contains("milter failed") && log.contains(&format!("inet:127.0.0.1:{port}")),
            "the log names the filter: {log}"
        );
        smtpd.assert_serving_after_filters();
    }
    // Dropped mid-message (at the body): the default, tempfail.
    let port = milter(Arc::new(
        |code, _| if code == b'B' { Act::Close } else { cont() },
    ));
    let smtpd = start(port, "");
    let (got, reply) = send(&smtpd);
    assert_eq!(got, 451, "{reply}");
    assert!(smtpd.incoming().is_empty());
}

trait Serving {
    fn assert_serving_after_filters(&self);
}

impl Serving for Smtpd {
    /// The smtpd still answers a new client (whatever the filter makes of
    /// its message).
    fn assert_serving_after_filters(&self) {
        let mut c = self.client();
        c.send(b"EHLO check.example\r\nQUIT\r\n");
        c.expect(250, "");
        c.expect(221, "");
    }
}

#[test]
fn quarantine_queues_the_message_held() {
    let port = milter(Arc::new(|code, _| match code {
        b'E' => Act::Send([packet(b'q', b"virus\r\nfound\0"), packet(b'a', b"")].concat()),
        _ => cont(),
    }));
    let smtpd = start(port, "");
    let (code, reply) = send(&smtpd);
    assert_eq!(code, 250, "{reply}");
    let files = smtpd.incoming();
    assert_eq!(files.len(), 1);
    let (info, _) = skein_spool::read_message(&files[0]).expect("verifies");
    let reason = info.quarantine.expect("marked for quarantine");
    assert!(
        reason.contains("virus  found"),
        "control characters blanked: {reason:?}"
    );
    // Routed, it is held: the control file says so, and mailq shows it.
    let router = smtpd.env.route_all();
    assert!(
        router
            .log_text()
            .contains("held: quarantined by a content filter"),
        "{}",
        router.log_text()
    );
    let controls = smtpd.env.files("transport");
    assert_eq!(controls.len(), 1);
    let control = std::fs::read_to_string(&controls[0]).expect("control file");
    assert!(control.lines().any(|l| l.starts_with("held ")), "{control}");
}

/// Each listener has its filters: `smtpd.milters` on the SMTP port and
/// `smtpd.submission_milters` on submission (here none, so a filter that
/// rejects everything on port 25 does not see authenticated submissions).
#[test]
fn each_listener_runs_its_own_filters() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let port = milter(Arc::new({
        let seen = Arc::clone(&seen);
        move |code, _| match code {
            b'E' => {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Act::Send(packet(b'r', b""))
            }
            _ => cont(),
        }
    }));
    let files = skein_integration_tests::tempdir();
    let (smtpd, submission, der) = smtpd_support::submission_server_with(
        files.path(),
        &format!("milters = [\"inet:127.0.0.1:{port}\"]\nsubmission_milters = []"),
    );
    let (code, reply) = send(&smtpd);
    assert_eq!(code, 550, "port 25 goes through the filter: {reply}");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);

    let mut c = smtpd_support::Client::connect(submission);
    c.expect(220, "");
    c.send(b"EHLO client.example\r\nSTARTTLS\r\n");
    c.expect(250, "");
    c.expect(220, "2.0.0");
    c.start_tls(der);
    // AUTH PLAIN of alice's password in the support module's file.
    c.send(b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlAHMzY3JldCBwYXNz\r\n");
    c.expect(250, "");
    c.expect(235, "2.7.0");
    c.send(b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(b"Subject: submitted\r\n\r\nbody\r\n.\r\n");
    c.expect(250, "2.0.0");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the submission listener has no filters"
    );
    assert_eq!(smtpd.incoming().len(), 1);
}

/// MAIL and RCPT go to the filter when the client sends them, and its
/// answer is the command's: a tempfail at MAIL refuses that transaction
/// only, a reject at RCPT that recipient only. The filter's connection is
/// opened once for the session and kept over its transactions.
#[test]
fn mail_and_rcpt_are_answered_as_they_come_and_one_recipient_can_be_refused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let connects = Arc::new(AtomicUsize::new(0));
    let port = milter(Arc::new({
        let connects = Arc::clone(&connects);
        move |code, data| {
            let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
            match code {
                b'C' => {
                    connects.fetch_add(1, Ordering::SeqCst);
                    cont()
                }
                b'M' if has(b"tempfail@") => Act::Send(packet(b't', b"")),
                b'R' if has(b"<ann@localhost>") => {
                    Act::Send(packet(b'y', b"550 5.7.1 ann takes no mail today\0"))
                }
                b'E' => Act::Send(packet(b'a', b"")),
                _ => cont(),
            }
        }
    }));
    let smtpd = start(port, "");
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<tempfail@client.example>\r\n");
    c.expect(451, "4.7.1");
    for n in 0..2 {
        c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<joe@localhost>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        let refused = c.expect(550, "5.7.1");
        assert!(refused.contains("ann takes no mail today"), "{refused}");
        c.expect(354, "");
        c.send(format!("Subject: message {n}\r\n\r\nbody\r\n.\r\n").as_bytes());
        c.expect(250, "2.0.0");
    }
    c.send(b"QUIT\r\n");
    c.expect(221, "");
    let files = smtpd.incoming();
    assert_eq!(files.len(), 2);
    for file in files {
        let (info, _) = skein_spool::read_message(&file).expect("verifies");
        let rcpts: Vec<&str> = info
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(rcpts, ["joe@localhost"]);
    }
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "one filter connection for the session's three transactions"
    );
    // Counted for the metrics: one transaction and two recipients refused.
    let stats = smtpd.env.spool().join("run/smtpd.stats");
    let counted = skein_integration_tests::poll(|| {
        std::fs::read_to_string(&stats).is_ok_and(|t| {
            t.contains("milter_refused_total 1\n") && t.contains("milter_rcpt_refused_total 2\n")
        })
    });
    assert!(
        counted,
        "{}",
        std::fs::read_to_string(&stats).unwrap_or_default()
    );
}

/// A filter that closes its connection between messages (when it is idle)
/// costs no message a tempfail: the next MAIL connects again.
#[test]
fn a_kept_connection_the_filter_closed_is_opened_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let connects = Arc::new(AtomicUsize::new(0));
    let port = milter(Arc::new({
        let connects = Arc::clone(&connects);
        move |code, _| match code {
            b'C' => {
                connects.fetch_add(1, Ordering::SeqCst);
                cont()
            }
            b'E' => Act::SendThenClose(packet(b'a', b"")),
            _ => cont(),
        }
    }));
    let smtpd = start(port, "");
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    for n in 0..3 {
        c.send(b"MAIL FROM:<sender@client.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\n");
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        c.send(format!("Subject: message {n}\r\n\r\nbody\r\n.\r\n").as_bytes());
        c.expect(250, "2.0.0");
    }
    assert_eq!(smtpd.incoming().len(), 3);
    assert_eq!(connects.load(Ordering::SeqCst), 3);
}

/// Each filter may have its own timeouts and default action: here one
/// that hangs at end of message is given up on after its own 1 s and
/// passed over (its `default_action = "accept"`), although the list's
/// default is to reject and its content timeout a minute; the other
/// filter, plain, still sees the message and adds its field.
#[test]
fn a_filter_with_its_own_settings_keeps_them() {
    let hangs = milter(Arc::new(
        |code, _| if code == b'E' { Act::Hang } else { cont() },
    ));
    let tags = milter(Arc::new(|code, _| match code {
        b'E' => Act::Send([packet(b'h', b"X-Second\0seen\0"), packet(b'a', b"")].concat()),
        _ => cont(),
    }));
    let smtpd = Smtpd::start(
        &format!(
            "milters = [{{ address = \"inet:127.0.0.1:{hangs}\", default_action = \"accept\", content_timeout = \"1s\" }}, \"inet:127.0.0.1:{tags}\"]\n\
             milter_default_action = \"reject\"\nmilter_content_timeout = \"1m\""
        ),
        "",
    );
    let (code, reply) = send(&smtpd);
    assert_eq!(code, 250, "{reply}");
    let files = smtpd.incoming();
    assert_eq!(files.len(), 1);
    let (_, text) = skein_spool::read_message(&files[0]).expect("verifies");
    assert!(
        String::from_utf8_lossy(&text).contains("X-Second: seen\r\n"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let log = smtpd.daemon.log_text();
    assert!(
        log.contains("milter failed") && log.contains("default_action=accept"),
        "{log}"
    );
}
