//! A spool that fails answers 451 4.3.0 — never 250 — whether it fails
//! when the message file is created or when it is committed; the session
//! and the server go on, and the next message is accepted once the spool
//! is back.

mod smtpd_support;

use smtpd_support::{Client, Smtpd};

fn send_one(c: &mut Client) -> String {
    c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\nSubject: t\r\n\r\nt\r\n.\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.reply().expect("a reply").text
}

#[test]
fn spool_failure_is_451_never_250() {
    let smtpd = Smtpd::start("", "");
    let spool = smtpd.env.spool();
    let mut c = smtpd.client();
    c.send(b"EHLO x.example\r\n");
    c.expect(250, "");

    // tmp/ is not a directory: the message file cannot be created.
    std::fs::remove_dir_all(spool.join("tmp")).expect("remove tmp");
    std::fs::write(spool.join("tmp"), "not a directory").expect("file");
    let reply = send_one(&mut c);
    assert!(reply.starts_with("451 4.3.0 "), "{reply}");
    // Same with BDAT.
    c.send(b"MAIL FROM:<a@x.example>\r\nRCPT TO:<joe@localhost>\r\nBDAT 4 LAST\r\nhi\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(451, "4.3.0");

    // incoming/ is not a directory: the file is written, the commit's
    // rename fails.
    std::fs::remove_file(spool.join("tmp")).expect("remove file");
    std::fs::create_dir(spool.join("tmp")).expect("tmp again");
    std::fs::remove_dir_all(spool.join("incoming")).expect("remove incoming");
    std::fs::write(spool.join("incoming"), "not a directory").expect("file");
    let reply = send_one(&mut c);
    assert!(reply.starts_with("451 4.3.0 "), "{reply}");
    assert!(
        smtpd.env.files("tmp").is_empty(),
        "{:?}",
        smtpd.env.files("tmp")
    );

    // Back to normal: accepted, in the same session.
    std::fs::remove_file(spool.join("incoming")).expect("remove file");
    std::fs::create_dir(spool.join("incoming")).expect("incoming again");
    let reply = send_one(&mut c);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    assert_eq!(smtpd.incoming().len(), 1);
    assert!(
        smtpd
            .daemon
            .log_text()
            .contains("cannot write to the spool"),
        "{}",
        smtpd.daemon.log_text()
    );
}
