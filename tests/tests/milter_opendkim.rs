//! The smtpd with a real filter nobody here wrote: Debian's OpenDKIM as a
//! milter (`smtpd.milters`). Second test: verifying inbound mail. First:
//! signing for `example.org` with a key from
//! `skein dkim keygen` (its KeyTable and SigningTable are files), started
//! by the test on a loopback port with its own configuration. A message
//! from `joe@example.org` goes through the smtpd, the router and the local
//! agent into ann's Maildir; as stored there it carries OpenDKIM's
//! `DKIM-Signature` (inserted before the smtpd's Received field), which
//! dkimpy (an independent verifier, handed the TXT record keygen printed)
//! verifies; a changed copy fails. (`RequireSafeKeys false`: the test's
//! temporary directory is not one OpenDKIM calls safe.)

mod smtpd_support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use smtpd_support::{Smtpd, free_port};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dkimpy(message: &[u8], name: &str, txt: &str) -> String {
    let script = r#"
import sys, dkim
name, text = sys.argv[1], sys.argv[2].encode()
def dns(qname, timeout=5):
    return text if qname.decode().rstrip(".").lower() == name.rstrip(".").lower() else None
print("pass" if dkim.verify(sys.stdin.buffer.read(), dnsfunc=dns) else "fail")
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script, name, txt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3-dkim (bench/ci-deps-dkim.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("write");
    let out = child.wait_with_output().expect("python");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn opendkim_signs_through_the_smtpd_and_dkimpy_verifies_the_stored_message() {
    let port = free_port();
    let smtpd = Smtpd::start(&format!("milters = [\"inet:127.0.0.1:{port}\"]"), "");
    let dir = smtpd.env.dir.path();
    // The key, as skein makes them; OpenDKIM reads PEM.
    let key = dir.join("example.org.sel.key");
    let out = smtpd
        .env
        .skein()
        .args(["dkim", "keygen", "example.org", "sel", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    let txt: String = record
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    std::fs::write(
        dir.join("keytable"),
        format!(
            "sel._domainkey.example.org example.org:sel:{}\n",
            key.display()
        ),
    )
    .expect("keytable");
    std::fs::write(
        dir.join("signingtable"),
        "*@example.org sel._domainkey.example.org\n",
    )
    .expect("signingtable");
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nMode sv\nSocket inet:{port}@127.0.0.1\nBackground no\nPidFile {d}/opendkim.pid\n\
             KeyTable file:{d}/keytable\nSigningTable refile:{d}/signingtable\nInternalHosts 127.0.0.1\n\
             AlwaysAddARHeader yes\nAuthservID test.example\nCanonicalization relaxed/relaxed\nRequireSafeKeys false\n",
            d = dir.display()
        ),
    )
    .expect("conf");
    let _opendkim = Daemon(
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
        smtpd
            .env
            .wait_for(Duration::from_secs(60), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
        "opendkim does not listen"
    );
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<joe@example.org>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(b"From: Joe <joe@example.org>\r\nTo: ann@localhost\r\nSubject: signed by opendkim\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <od1@example.org>\r\n\r\nHello from the milter test.\r\n.\r\n");
    c.expect(250, "2.0.0");
    c.send(b"QUIT\r\n");
    let router = smtpd.env.route_all();
    let scheduler = smtpd.env.start("skein-scheduler");
    assert!(
        smtpd.env.wait_for(Duration::from_secs(120), || !smtpd
            .env
            .maildir("ann")
            .is_empty()),
        "{}\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    let stored = smtpd.env.maildir("ann").remove(0);
    let text = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        text.contains("DKIM-Signature:") && text.contains("d=example.org"),
        "{text}"
    );
    // Inserted first, before the smtpd's own Received field, where
    // OpenDKIM asked (SMFIR_INSHEADER at index 0).
    let delivered = text
        .split_once("\r\nDKIM-Signature:")
        .map(|(before, _)| before)
        .unwrap_or("");
    assert!(!delivered.contains("Received:"), "{text}");
    assert_eq!(
        dkimpy(&stored, "sel._domainkey.example.org", &txt),
        "pass",
        "{text}"
    );
    // A changed copy fails.
    let tampered = text.replace("Hello from", "Hullo from");
    assert_eq!(
        dkimpy(tampered.as_bytes(), "sel._domainkey.example.org", &txt),
        "fail"
    );
}

/// OpenDKIM verifying: a message signed by skein's own signer (the key
/// from `skein dkim keygen`; OpenDKIM finds the public key in its
/// `TestDNSData` set, its documented testing hook, instead of the DNS)
/// arrives through the smtpd and is stored with `dkim=pass`; a copy whose
/// body changed after signing with `dkim=fail`.
#[test]
fn opendkim_verifies_inbound_mail_pass_and_fail() {
    let port = free_port();
    let smtpd = Smtpd::start(&format!("milters = [\"inet:127.0.0.1:{port}\"]"), "");
    let dir = smtpd.env.dir.path();
    let key = dir.join("example.org.sel.key");
    let out = smtpd
        .env
        .skein()
        .args(["dkim", "keygen", "example.org", "sel", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = String::from_utf8_lossy(&out.stdout).into_owned();
    let txt: String = record
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    std::fs::write(
        dir.join("dnsdata"),
        format!("sel._domainkey.example.org {txt}\n"),
    )
    .expect("dns data");
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nMode v\nSocket inet:{port}@127.0.0.1\nBackground no\nPidFile {d}/opendkim.pid\n\
             TestDNSData file:{d}/dnsdata\nAlwaysAddARHeader yes\nAuthservID test.example\n\
             InternalHosts -\n",
            d = dir.display()
        ),
    )
    .expect("conf");
    let _opendkim = Daemon(
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
        smtpd
            .env
            .wait_for(Duration::from_secs(60), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
        "opendkim does not listen"
    );
    // Signed with skein's signer, exactly as the router signs.
    let signer = skein_dkim::Signer::load(&[skein_config::DkimKey {
        domain: "example.org".into(),
        selector: "sel".into(),
        signing_domain: String::new(),
        key: key.clone(),
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
    for body in [&good, &bad] {
        let mut c = smtpd.client();
        c.send(b"EHLO client.example\r\n");
        c.expect(250, "");
        c.send(b"MAIL FROM:<joe@example.org>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
        c.expect(250, "2.1.0");
        c.expect(250, "2.1.5");
        c.expect(354, "");
        c.send(body);
        c.send(b".\r\n");
        c.expect(250, "2.0.0");
        c.send(b"QUIT\r\n");
    }
    let router = smtpd.env.route_all();
    let scheduler = smtpd.env.start("skein-scheduler");
    assert!(
        smtpd
            .env
            .wait_for(Duration::from_secs(120), || smtpd.env.maildir("ann").len()
                == 2),
        "{}\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    let stored: Vec<String> = smtpd
        .env
        .maildir("ann")
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
