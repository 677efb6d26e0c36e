//! End to end: SMTP in → router → scheduler → local Maildir.

mod smtpd_support;

use smtpd_support::{Client, GUARD, free_port};

use skein_integration_tests::TestEnv;

#[test]
fn smtp_to_maildir() {
    let port = free_port();
    let env = TestEnv::new(&format!(
        "[smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n\n[scheduler]\nretries = [\"1s\"]\n"
    ));
    env.make_users(&["alice".to_owned(), "bob".to_owned()]);
    let smtpd = env.start("skein-smtpd");
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(GUARD, || skein_integration_tests::listening(port)),
        "skein-smtpd did not start:\n{}",
        smtpd.log_text()
    );

    let mut c = Client::connect(port);
    c.expect(220, "");
    c.send(b"EHLO sender.example\r\nMAIL FROM:<carol@sender.example>\r\nRCPT TO:<alice@localhost>\r\nRCPT TO:<Bob+list@LOCALHOST>\r\nDATA\r\n");
    c.expect(250, "");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(
        b"From: carol@sender.example\r\nSubject: over SMTP\r\n\r\nHello Alice and Bob.\r\n.\r\n",
    );
    c.expect(250, "2.0.0 Ok: queued as");
    c.send(b"MAIL FROM:<carol@sender.example>\r\nRCPT TO:<alice@localhost>\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    let second = b"Subject: chunked\r\n\r\nSecond, by BDAT.\r\n";
    c.send(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    c.send(second);
    c.expect(250, "2.0.0 Ok: queued as");
    c.send(b"QUIT\r\n");
    c.expect(221, "");

    let delivered = env.wait_for(GUARD, || {
        env.maildir("alice").len() == 2 && env.maildir("bob").len() == 1 && env.queue_empty()
    });
    assert!(
        delivered,
        "not delivered.\nsmtpd:\n{}\nrouter:\n{}\nscheduler:\n{}",
        smtpd.log_text(),
        router.log_text(),
        scheduler.log_text()
    );
    let alice: Vec<String> = env
        .maildir("alice")
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let first = alice
        .iter()
        .find(|m| m.contains("Subject: over SMTP"))
        .expect("the DATA message");
    assert!(
        first.contains("Received: from sender.example ([127.0.0.1])"),
        "{first}"
    );
    assert!(
        first.contains("Hello Alice and Bob.\r\n") || first.contains("Hello Alice and Bob.\n"),
        "{first}"
    );
    assert!(
        alice.iter().any(|m| m.contains("Second, by BDAT.")),
        "{alice:?}"
    );
    let bob = String::from_utf8_lossy(&env.maildir("bob")[0]).into_owned();
    assert!(bob.contains("Subject: over SMTP"), "{bob}");
}
