//! ClamAV (Debian's clamd and clamav-milter) as a milter, for the smtpd
//! (`smtpd.milters`) and for local submissions (`router.milters`). Both
//! programs are started by the test with their own configuration, sockets
//! and directories.
//!
//! **The signature database, offline.** ClamAV's own database comes from
//! `freshclam`, over the network, which tests here do not have. clamd
//! loads any signature file in its `DatabaseDirectory`, so the test writes
//! one of its own: a body signature (`.ndb`, any file type, any offset)
//! for the EICAR test string, the string every scanner is meant to flag.
//! clamd names it `Skein.Test.EICAR.UNOFFICIAL` (unofficial: not signed by
//! the ClamAV project). What is tested is the path — the message, MIME
//! decoded by clamd, scanned, and the verdict acted on — not ClamAV's
//! database.
//!
//! Shown, on the messages as stored in the Maildirs: a clean message is
//! delivered with clamav-milter's `X-Virus-Status: Clean`; one with EICAR
//! in a base64 attachment is refused at the end of DATA with
//! clamav-milter's reply naming the signature; a sendmail submission with
//! EICAR is bounced to its sender with that reply, and a clean one is
//! delivered scanned.

mod smtpd_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use skein_integration_tests::{KillOnDrop, base64};
use smtpd_support::{Smtpd, free_port};

const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const GUARD: Duration = Duration::from_secs(120);

/// A message from joe's client to ann; the final reply.
fn send(smtpd: &Smtpd, text: &str) -> (u16, String) {
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<joe@client.example>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(format!("{text}.\r\n").as_bytes());
    let reply = c.reply().expect("a reply");
    c.send(b"QUIT\r\n");
    (reply.code, reply.text)
}

/// A message with `attachment` as a base64 attachment.
fn with_attachment(subject: &str, attachment: &str) -> String {
    let encoded = base64(attachment.as_bytes());
    format!(
        "From: Joe <joe@client.example>\r\nTo: ann@localhost\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"file.com\"\r\n\
         Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"file.com\"\r\n\r\n\
         {encoded}\r\n--b1--\r\n"
    )
}

/// clamd and clamav-milter in `dir`, the milter on `port`.
fn start_clamav(dir: &std::path::Path, port: u16) -> (KillOnDrop, KillOnDrop) {
    for sub in ["db", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).expect("dir");
    }
    let signature: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.join("db/skein-test.ndb"),
        format!("Skein.Test.EICAR:0:*:{signature}\n"),
    )
    .expect("signature");
    let d = dir.display();
    std::fs::write(
        dir.join("clamd.conf"),
        format!(
            "LocalSocket {d}/clamd.sock\nDatabaseDirectory {d}/db\nForeground yes\nLogFile {d}/clamd.log\n\
             TemporaryDirectory {d}/tmp\nPidFile {d}/clamd.pid\n"
        ),
    )
    .expect("clamd.conf");
    std::fs::write(
        dir.join("clamav-milter.conf"),
        format!(
            "MilterSocket inet:{port}@127.0.0.1\nClamdSocket unix:{d}/clamd.sock\nForeground yes\n\
             OnInfected Reject\nRejectMsg \"Virus found: %v\"\nOnClean Accept\nAddHeader Replace\n\
             LogFile {d}/clamav-milter.log\nLogVerbose yes\nPidFile {d}/clamav-milter.pid\nTemporaryDirectory {d}/tmp\n"
        ),
    )
    .expect("clamav-milter.conf");
    let clamd = KillOnDrop(
        Command::new("clamd")
            .arg("-c")
            .arg(dir.join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd (bench/ci-deps-milter.sh)"),
    );
    // clamav-milter checks clamd when it starts: clamd first.
    let socket = dir.join("clamd.sock");
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(
        skein_integration_tests::poll(|| socket.exists()),
        "clamd did not start:\n{}",
        log("clamd.log")
    );
    let milter = KillOnDrop(
        Command::new("clamav-milter")
            .arg("-c")
            .arg(dir.join("clamav-milter.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamav-milter (bench/ci-deps-milter.sh)"),
    );
    assert!(
        skein_integration_tests::poll(|| skein_integration_tests::listening(port)),
        "clamav-milter did not start:\n{}",
        log("clamav-milter.log")
    );
    (clamd, milter)
}

#[test]
fn clamav_refuses_eicar_and_passes_clean_mail_from_smtp_and_sendmail() {
    let port = free_port();
    let milter = format!("inet:127.0.0.1:{port}");
    let smtpd = Smtpd::start(
        &format!("milters = [\"{milter}\"]\nmilter_default_action = \"tempfail\""),
        &format!("[router]\nmilters = [\"{milter}\"]\n\n[scheduler]\nretries = [\"1s\"]\n"),
    );
    let dir = smtpd.env.dir.path().join("clamav");
    let _clamav = start_clamav(&dir, port);

    // SMTP: EICAR refused with clamav-milter's reply, clean accepted.
    let (code, text) = send(&smtpd, &with_attachment("infected", EICAR));
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("Virus found: Skein.Test.EICAR"),
        "clamav-milter's reply: {text}"
    );
    let (code, text) = send(&smtpd, &with_attachment("clean", "just a file"));
    assert_eq!(code, 250, "{text}");

    // sendmail: EICAR from joe bounces back to joe, clean reaches ann.
    let submit = |subject: &str, body: &str| {
        smtpd.env.submit(
            &["-i", "-f", "joe@localhost", "ann@localhost"],
            format!("From: joe@localhost\nTo: ann@localhost\nSubject: {subject}\n\n{body}\n")
                .as_bytes(),
        )
    };
    submit("local infected", EICAR);
    submit("local clean", "nothing to see");

    let router = smtpd.env.route_all();
    let scheduler = smtpd.env.start("skein-scheduler");
    let done = smtpd.env.wait_for(GUARD, || {
        smtpd.env.maildir("ann").len() == 2 && smtpd.env.maildir("joe").len() == 1
    });
    assert!(
        done,
        "router:\n{}\nscheduler:\n{}\nclamav-milter:\n{}",
        router.log_text(),
        scheduler.log_text(),
        std::fs::read_to_string(dir.join("clamav-milter.log")).unwrap_or_default()
    );
    let ann: Vec<String> = smtpd
        .env
        .maildir("ann")
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    for subject in ["Subject: clean", "Subject: local clean"] {
        let m = ann
            .iter()
            .find(|m| m.lines().any(|l| l.trim_end() == subject))
            .unwrap_or_else(|| panic!("{subject} not delivered: {ann:?}"));
        assert!(m.contains("X-Virus-Status: Clean"), "{m}");
        assert!(m.contains("X-Virus-Scanned: clamav-milter"), "{m}");
    }
    assert!(!ann.iter().any(|m| m.contains("infected")), "{ann:?}");
    let bounce = String::from_utf8_lossy(&smtpd.env.maildir("joe")[0]).into_owned();
    let bounce = bounce.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(bounce.contains("Status: 5.7.1"), "{bounce}");
    assert!(bounce.contains("Virus found: Skein.Test.EICAR"), "{bounce}");
}
