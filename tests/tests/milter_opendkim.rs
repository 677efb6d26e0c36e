//! The smtpd with a real filter nobody here wrote: Debian's OpenDKIM as a
//! milter (`smtpd.milters`), started by each test on a loopback port with
//! its own configuration, with a key from `skein dkim keygen`.
//!
//! - Signing for `example.org` (its KeyTable and SigningTable are files):
//!   a message from `joe@example.org` goes through the smtpd, the router
//!   and the local agent into ann's Maildir; as stored there it carries
//!   OpenDKIM's `DKIM-Signature` (inserted before the smtpd's Received
//!   field), which dkimpy (an independent verifier, handed the TXT record
//!   keygen printed) verifies; a changed copy fails. (`RequireSafeKeys
//!   false`: the test's temporary directory is not one OpenDKIM calls
//!   safe.)
//! - Verifying: a message signed by skein's own signer is stored with
//!   `dkim=pass`; a copy whose body changed after signing with
//!   `dkim=fail` (OpenDKIM finds the public key in its `TestDNSData` set,
//!   its documented testing hook, instead of the DNS).

mod smtpd_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use skein_integration_tests::{KillOnDrop, dkim_keygen, dkimpy};
use smtpd_support::{Smtpd, free_port};

/// An smtpd whose one milter is an OpenDKIM on a free port, configured
/// with `settings` (lines of opendkim.conf; `{d}` is the test directory)
/// beside the socket. A key for `sel._domainkey.example.org` is made
/// first, and the files the settings may name are written: `keytable`
/// and `signingtable` (signing with it), `dnsdata` (its TXT record, for
/// verifying). Returns the smtpd, OpenDKIM, the key file and the record.
fn with_opendkim(settings: &str) -> (Smtpd, KillOnDrop, String, (String, String)) {
    let port = free_port();
    let smtpd = Smtpd::start(&format!("milters = [\"inet:127.0.0.1:{port}\"]"), "");
    let (key, record) = dkim_keygen(&smtpd.env, "example.org", "sel", "rsa-sha256");
    let path = smtpd.env.dir.path();
    let (name, txt) = &record;
    let owner = name.trim_end_matches('.');
    for (file, text) in [
        ("keytable", format!("{owner} example.org:sel:{key}\n")),
        ("signingtable", format!("*@example.org {owner}\n")),
        ("dnsdata", format!("{owner} {txt}\n")),
    ] {
        std::fs::write(path.join(file), text).expect("an opendkim table");
    }
    let dir = path.display().to_string();
    let conf = path.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nSocket inet:{port}@127.0.0.1\nBackground no\nPidFile {dir}/opendkim.pid\n{}",
            settings.replace("{d}", &dir)
        ),
    )
    .expect("conf");
    let opendkim = KillOnDrop(
        Command::new("opendkim")
            .arg("-f")
            .arg("-x")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("opendkim (bench/ci-deps-milter.sh)"),
    );
    assert!(
        smtpd.env.wait_for(Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "opendkim does not listen"
    );
    (smtpd, opendkim, key, record)
}

/// Sends `message` (with its final CRLF) from joe@example.org to ann.
fn send(smtpd: &Smtpd, message: &[u8]) {
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<joe@example.org>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(message);
    c.send(b".\r\n");
    c.expect(250, "2.0.0");
    c.send(b"QUIT\r\n");
}

/// Routes and delivers what was accepted; ann's Maildir once it holds
/// `count` messages.
fn delivered(smtpd: &Smtpd, count: usize) -> Vec<Vec<u8>> {
    let router = smtpd.env.route_all();
    let scheduler = smtpd.env.start("skein-scheduler");
    assert!(
        smtpd.env.wait_for(Duration::from_secs(120), || {
            smtpd.env.maildir("ann").len() == count
        }),
        "{}\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    smtpd.env.maildir("ann")
}

#[test]
fn opendkim_signs_through_the_smtpd_and_dkimpy_verifies_the_stored_message() {
    let (smtpd, _opendkim, _, record) = with_opendkim(
        "Mode sv\nKeyTable file:{d}/keytable\nSigningTable refile:{d}/signingtable\nInternalHosts 127.0.0.1\n\
         AlwaysAddARHeader yes\nAuthservID test.example\nCanonicalization relaxed/relaxed\nRequireSafeKeys false\n",
    );
    // The key, as skein makes them: OpenDKIM reads the PEM.
    send(
        &smtpd,
        b"From: Joe <joe@example.org>\r\nTo: ann@localhost\r\nSubject: signed by opendkim\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <od1@example.org>\r\n\r\nHello from the milter test.\r\n",
    );
    let stored = delivered(&smtpd, 1).remove(0);
    let text = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        text.contains("DKIM-Signature:") && text.contains("d=example.org"),
        "{text}"
    );
    // Inserted first, before the smtpd's own Received field, where
    // OpenDKIM asked (SMFIR_INSHEADER at index 0).
    let before = text
        .split_once("\r\nDKIM-Signature:")
        .map(|(before, _)| before)
        .unwrap_or("");
    assert!(!before.contains("Received:"), "{text}");
    let records = [record];
    assert_eq!(dkimpy(&stored, &records), "pass", "{text}");
    // A changed copy fails.
    let tampered = text.replace("Hello from", "Hullo from");
    assert_eq!(dkimpy(tampered.as_bytes(), &records), "fail");
}

#[test]
fn opendkim_verifies_inbound_mail_pass_and_fail() {
    let (smtpd, _opendkim, key, _) = with_opendkim(
        "Mode v\nTestDNSData file:{d}/dnsdata\nAlwaysAddARHeader yes\nAuthservID test.example\nInternalHosts -\n",
    );
    // Signed with skein's signer, exactly as the router signs.
    let signer = skein_dkim::Signer::load(&[skein_config::DkimKey {
        domain: "example.org".into(),
        selector: "sel".into(),
        signing_domain: String::new(),
        key: key.into(),
        algorithm: skein_config::DkimAlgorithm::RsaSha256,
        headers: vec!["From".into(), "To".into(), "Subject".into(), "Date".into()],
        canonicalization: (
            skein_config::Canonicalization::Relaxed,
            skein_config::Canonicalization::Relaxed,
        ),
    }])
    .expect("the key loads");
    let message = b"From: Joe <joe@example.org>\r\nTo: ann@localhost\r\nSubject: inbound\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nSigned before it was sent.\r\n";
    let signed = signer.sign(message).expect("no error").expect("signed");
    let good = [signed.field.as_bytes(), message].concat();
    let bad = String::from_utf8_lossy(&good)
        .replace("Signed before", "Changed after")
        .into_bytes();
    send(&smtpd, &good);
    send(&smtpd, &bad);
    let stored: Vec<String> = delivered(&smtpd, 2)
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let verdict = |text: &str| -> String {
        text.lines()
            .skip_while(|l| !l.starts_with("Authentication-Results: test.example"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let good_copy = stored
        .iter()
        .find(|m| m.contains("Signed before"))
        .expect("the good copy");
    let bad_copy = stored
        .iter()
        .find(|m| m.contains("Changed after"))
        .expect("the changed copy");
    assert!(verdict(good_copy).contains("dkim=pass"), "{good_copy}");
    assert!(verdict(bad_copy).contains("dkim=fail"), "{bad_copy}");
}
