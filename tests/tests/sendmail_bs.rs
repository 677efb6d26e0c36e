//! `sendmail -bs` (issue 12, part 7): SMTP on standard input and output.
//! A pipelined session with two messages, a dot-stuffed line, a null
//! sender, a command out of order and an unknown one gets the right reply
//! to each, in order; both messages land in `incoming/` as the invoking
//! user's submissions, unstuffed, and are delivered.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use skein_integration_tests::TestEnv;

#[test]
fn an_smtp_session_on_stdio_submits_each_message() {
    let env = TestEnv::new("[router]\nlocal_domains = [\"test.example\"]\n");
    env.make_users(&["ann".to_owned()]);
    let session = "EHLO client.example\r\n\
                   RCPT TO:<ann@test.example>\r\n\
                   MAIL FROM:<joe@test.example>\r\n\
                   RCPT TO:<ann@test.example>\r\n\
                   DATA\r\n\
                   Subject: first\r\n\r\n..stuffed\r\nplain\r\n.\r\n\
                   FROB\r\n\
                   MAIL FROM:<>\r\n\
                   RCPT TO:<ann@test.example>\r\n\
                   DATA\r\n\
                   Subject: second\r\n\r\nbody\r\n.\r\n\
                   QUIT\r\n";
    let mut child = env
        .skein()
        .args(["sendmail", "-bs"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skein sendmail -bs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(session.as_bytes())
        .expect("write the session");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every reply's code (the last line of a multi-line one), in order.
    let codes: Vec<&str> = stdout
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        codes,
        [
            "220", "250", "503", "250", "250", "354", "250", "500", "250", "250", "354", "250",
            "221"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("250-PIPELINING\r\n"), "{stdout}");
    assert!(stdout.contains("250-SIZE "), "{stdout}");
    assert!(!stdout.contains("STARTTLS"), "{stdout}");

    let files = env.files("incoming");
    assert_eq!(files.len(), 2, "{files:?}");
    let texts: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(&std::fs::read(f).expect("read")).into_owned())
        .collect();
    let first = texts
        .iter()
        .find(|t| t.contains("Subject: first"))
        .expect("the first message");
    assert!(
        first.contains("\r\n.stuffed\r\nplain\r\n"),
        "unstuffed:\n{first}"
    );
    assert!(first.contains("joe@test.example"), "{first}");
    let uid = nix::unistd::getuid();
    assert!(
        texts.iter().all(|t| t.contains(&format!("uid={uid}"))),
        "recorded as the invoking user: {texts:?}"
    );

    // And they are delivered like any other submission.
    let _router = env.route_all();
    let _scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(Duration::from_secs(120), || env.maildir("ann").len() == 2),
        "not delivered"
    );
}

#[test]
fn recipients_on_the_command_line_are_refused_with_bs() {
    let env = TestEnv::new("");
    let out = env
        .skein()
        .args(["sendmail", "-bs", "ann@test.example"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-bs takes its recipients"));
}
