//! Damaged spool files under the real binaries: files in `queue/` cut
//! short, emptied, with a flipped body byte or another format version; a
//! control file in `transport/` with a flipped byte; a message in
//! `incoming/` with a flipped byte. Each is set aside in `corrupt/` with a
//! `.why`, reported once, never sent; the senders of the `queue/` ones get
//! a failure report (5.3.0) without the damaged bytes; the intact message
//! is delivered; the queue ends empty, and no agent is restarted over it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_parser::MessageParser;
use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions};

/// What the scheduler logs, once per damaged message, when it confirms an
/// agent's finding.
const CONFIRMED: &str = "message file damaged in the spool: not sent";

fn subject_of(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read");
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_else(|| panic!("no subject in {}", path.display()))
        .to_string()
}

fn id_of(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

fn flip_last_body_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() - 4;
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn damaged_files_are_set_aside_reported_once_and_never_sent() {
    let server = ScriptedServer::start(ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    });
    let env = TestEnv::new(&format!(
        r#"[[route]]
domain = "remote.test"
channel = "smtp"
nexthop = "{}"

[[scheduler.clause]]
match = "smtp/*"
command = "skein-smtp"

[[scheduler.clause]]
match = "local/*"
command = "skein-local"
"#,
        server.nexthop()
    ));
    env.make_users(&["alice".to_string()]);
    let kinds = [
        "cut to 200 bytes",
        "emptied",
        "body byte flipped",
        "other format version",
        "control file flipped",
        "intact",
    ];
    for kind in kinds {
        let body = format!("Subject: {kind}\n\nThe body of the message that is {kind}.\n");
        env.submit(
            &["-i", "-f", "alice@localhost", "bob@remote.test"],
            body.as_bytes(),
        );
    }
    let router = env.start("skein-router");
    assert!(
        env.wait_for(Duration::from_secs(60), || env.files("incoming").is_empty()
            && env.files("queue").len() == kinds.len()),
        "not routed:\n{}",
        router.log_text()
    );
    drop(router);

    // One more, damaged while it waits in incoming/ (the router's check).
    env.submit(
        &["-i", "-f", "alice@localhost", "bob@remote.test"],
        b"Subject: incoming flipped\n\nThe body.\n",
    );
    let incoming = env.files("incoming");
    assert_eq!(incoming.len(), 1);
    let incoming_id = id_of(&incoming[0]);
    flip_last_body_byte(&incoming[0]);

    // The queue/ and transport/ damage, before the scheduler reads them.
    let mut ids: Vec<(String, String)> = Vec::new(); // (kind, queue id)
    for path in env.files("queue") {
        let kind = subject_of(&path);
        let id = id_of(&path);
        match kind.as_str() {
            "cut to 200 bytes" => {
                let bytes = std::fs::read(&path).unwrap();
                std::fs::write(&path, &bytes[..200]).unwrap();
            }
            "emptied" => std::fs::write(&path, b"").unwrap(),
            "body byte flipped" => flip_last_body_byte(&path),
            "other format version" => {
                let text = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&text)
                    .replacen("SKEIN-MESSAGE 1\n", "SKEIN-MESSAGE 2\n", 1)
                    .into_bytes();
                std::fs::write(&path, text).unwrap();
            }
            "control file flipped" => {
                // One bit of the recipient's address: still a well-formed
                // file, caught by the header's checksum.
                let control = env.spool().join("transport").join(&id);
                let text = std::fs::read_to_string(&control).unwrap();
                assert!(text.contains("bob@remote.test"), "{text}");
                std::fs::write(
                    &control,
                    text.replacen("bob@remote.test", "bob@remote.tesu", 1),
                )
                .unwrap();
            }
            "intact" => {}
            other => panic!("unexpected message {other}"),
        }
        ids.push((kind, id));
    }
    ids.sort();
    let id = |kind: &str| ids.iter().find(|(k, _)| k == kind).unwrap().1.clone();

    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    // Four failure reports to alice (one per damaged queue/ file), and the
    // intact message at the server.
    let settled = env.wait_for(Duration::from_secs(120), || {
        env.maildir("alice").len() >= 4 && env.queue_empty() && !server.messages().is_empty()
    });
    assert!(
        settled,
        "alice has {} reports, queue empty {}:\n{}\n{}",
        env.maildir("alice").len(),
        env.queue_empty(),
        scheduler.log_text(),
        router.log_text()
    );
    let scheduler_log = scheduler.log_text();
    drop(scheduler);
    drop(router);

    // Never sent: only the intact message reached the server.
    let sent: Vec<String> = server
        .messages()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.data)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(sent, ["intact"], "what the server got");

    // Set aside, each with its reason.
    let corrupt = env.spool().join("corrupt");
    let why = |name: String| -> String {
        let path: PathBuf = corrupt.join(format!("{name}.why"));
        assert!(corrupt.join(&name).exists(), "{name} not in corrupt/");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for (kind, words) in [
        ("cut to 200 bytes", "header ends before"),
        ("emptied", "not a skein message file"),
        ("body byte flipped", "crc32"),
        ("other format version", "format version \"2\""),
    ] {
        let q = id(kind);
        let reason = why(format!("queue.{q}"));
        assert!(reason.contains(words), "{kind}: {reason}");
        let reason = why(format!("transport.{q}"));
        assert!(
            reason.contains("its message file was damaged"),
            "{kind}: {reason}"
        );
        assert_eq!(
            scheduler_log
                .lines()
                .filter(|l| l.contains(CONFIRMED) && l.contains(&q))
                .count(),
            1,
            "{kind}: reported once:\n{scheduler_log}"
        );
    }
    let q = id("control file flipped");
    assert!(why(format!("transport.{q}")).contains("header checksum"));
    assert!(why(format!("queue.{q}")).contains("its control file"));
    assert!(why(format!("incoming.{incoming_id}")).contains("crc32"));
    assert!(
        !scheduler_log.contains("agent broke the protocol")
            && !scheduler_log.contains("agent gone"),
        "no agent died over it:\n{scheduler_log}"
    );

    // The senders' notices: 5.3.0, nothing of the damaged bytes.
    let reports = env.maildir("alice");
    assert_eq!(reports.len(), 4, "one report per damaged queue/ file");
    for raw in &reports {
        let text = String::from_utf8_lossy(raw);
        let msg = MessageParser::default().parse(raw).expect("report parses");
        assert!(
            msg.subject().unwrap_or("").contains("Undelivered"),
            "{text}"
        );
        assert!(text.contains("Status: 5.3.0"), "{text}");
        assert!(text.contains("The message is not attached"), "{text}");
        assert!(!text.contains("The body of the message"), "{text}");
    }
}
