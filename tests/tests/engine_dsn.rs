//! Bounces: expiry produces an RFC 3464 DSN that is parsed and checked
//! field by field; a bounce of a bounce goes to the postmaster, once; and
//! a bounce to the postmaster that fails in turn is dropped, logged only.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use skein_integration_tests::{TestEnv, poll};

/// What the scheduler logs for each DSN it queues.
const DSN_QUEUED: &str = "sender non-delivery notification";
/// What the scheduler logs when a failed double bounce goes nowhere.
const DOUBLE_BOUNCE_DROPPED: &str =
    "undeliverable double bounce dropped (logged only, never looped)";

fn env_with(extra: &str) -> (TestEnv, String) {
    let env = TestEnv::new(&format!(
        r#"[[route]]
domain = "far.test"
channel = "rec"

[scheduler]
retries = ["1s"]
{extra}

[[scheduler.clause]]
match = "rec/*"
command = "skein-test-agent"

[[scheduler.clause]]
match = "local/*"
command = "skein-local"
"#
    ));
    let record = env.dir.path().join("record").display().to_string();
    (env, record)
}

/// The delivery-status part's fields as (name, value) pairs, in order.
fn status_fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn expiry_bounces_with_a_well_formed_dsn() {
    let (env, record) = env_with("expiry = \"3s\"");
    env.make_users(&["alice".to_string()]);
    let router = env.start("skein-router");
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record),
            ("SKEIN_TEST_AGENT_MODE", "defer"),
        ],
    );
    env.submit(
        &[
            "-i",
            "-f",
            "alice@localhost",
            "-V",
            "ENV-42",
            "bob@far.test",
        ],
        b"Subject: will expire\nMessage-ID: <orig@test>\n\nnobody will take this\n",
    );
    let arrived = env.wait_for(Duration::from_secs(120), || {
        env.maildir("alice").len() == 1 && env.queue_empty()
    });
    assert!(
        arrived,
        "no DSN for alice:\n{}\n{}",
        scheduler.log_text(),
        router.log_text()
    );
    let raw = &env.maildir("alice")[0];
    let msg = MessageParser::default().parse(raw).expect("DSN parses");
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.starts_with("Return-Path: <>\n"),
        "DSN has the null sender: {text}"
    );
    let ct = msg.content_type().expect("content type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert!(
        msg.subject().unwrap_or("").contains("Undelivered"),
        "subject"
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );

    let status = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let fields = status_fields(&String::from_utf8_lossy(status.contents()));
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} field in {fields:?}"))
    };
    assert_eq!(get("Reporting-MTA"), "dns; test.example");
    assert_eq!(get("Original-Envelope-Id"), "ENV-42");
    assert!(!get("Arrival-Date").is_empty());
    let final_rcpt = get("Final-Recipient").to_ascii_lowercase().replace(' ', "");
    assert_eq!(final_rcpt, "rfc822;bob@far.test");
    assert_eq!(get("Action"), "failed");
    assert_eq!(get("Status"), "4.4.7");
    let diag = get("Diagnostic-Code");
    assert!(diag.contains("expired"), "{diag}");
    assert!(!get("Last-Attempt-Date").is_empty());

    let original = msg
        .parts
        .iter()
        .find(|p| {
            p.content_type().is_some_and(|c| {
                (c.ctype() == "message" && c.subtype() == Some("rfc822"))
                    || (c.ctype() == "text" && c.subtype() == Some("rfc822-headers"))
            })
        })
        .expect("the original message is attached");
    let orig_text = String::from_utf8_lossy(original.contents());
    assert!(orig_text.contains("Subject: will expire"), "{orig_text}");
    assert!(orig_text.contains("<orig@test>"), "{orig_text}");

    let log = scheduler.log_text();
    assert!(
        log.contains("status=bounced") && log.contains("dsn=4.4.7"),
        "{log}"
    );
    assert!(scheduler.stop().success());
}

#[test]
fn a_bounce_of_a_bounce_goes_to_the_postmaster_once() {
    let (env, record) = env_with("");
    env.make_users(&["root".to_string()]);
    let router = env.start("skein-router");
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record),
            ("SKEIN_TEST_AGENT_MODE", "fail"),
        ],
    );
    // A message with the null sender (itself a bounce) that fails.
    env.submit(
        &["-i", "-f", "<>", "carol@far.test"],
        b"Subject: a bounce\n\nundeliverable\n",
    );
    let arrived = env.wait_for(Duration::from_secs(120), || {
        !env.maildir("root").is_empty() && env.queue_empty()
    });
    assert!(
        arrived,
        "no DSN for the postmaster:\n{}\n{}",
        scheduler.log_text(),
        router.log_text()
    );
    // No waiting is needed before counting: a message leaves the spool
    // only once every recipient is final and its bounce is queued, so with
    // the spool empty nothing is left that could bounce again, and the
    // scheduler has logged all it will about these two messages.
    assert!(env.queue_empty());
    let mail = env.maildir("root");
    assert_eq!(mail.len(), 1, "exactly one DSN reaches the postmaster");
    let log = scheduler.log_text();
    assert_eq!(
        log.matches(DSN_QUEUED).count(),
        1,
        "one DSN queued in all, none about the DSN:\n{log}"
    );
    assert!(!log.contains(DOUBLE_BOUNCE_DROPPED), "{log}");
    let text = String::from_utf8_lossy(&mail[0]);
    assert!(
        text.contains("Delivered-To: postmaster@localhost") || text.contains("Delivered-To: root@"),
        "{text}"
    );
    assert!(text.contains("carol@far.test"), "{text}");
    assert!(text.contains("5.1.1"), "{text}");
    assert!(scheduler.stop().success());
}

#[test]
fn a_failing_double_bounce_is_dropped_and_only_logged() {
    // The postmaster's mail goes to the failing agent too, so the bounce
    // of the bounce fails in turn.
    let (env, record) = env_with("\n[router]\naliases = \"aliases\"\n");
    std::fs::write(env.dir.path().join("aliases"), "postmaster: pm@far.test\n")
        .expect("write aliases");
    let router = env.start("skein-router");
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record),
            ("SKEIN_TEST_AGENT_MODE", "fail"),
        ],
    );
    env.submit(
        &["-i", "-f", "<>", "carol@far.test"],
        b"Subject: a bounce\n\nundeliverable\n",
    );
    assert!(
        scheduler.wait_for_log(DOUBLE_BOUNCE_DROPPED, 1),
        "the failed double bounce is not reported:\n{}\n{}",
        scheduler.log_text(),
        router.log_text()
    );
    // Logged before its message is removed: wait for that.
    assert!(
        poll(|| env.queue_empty()),
        "the double bounce stays queued:\n{}",
        scheduler.log_text()
    );
    // With the spool empty the counts are final (see above): the bounce to
    // the postmaster was the only DSN, and its failure made none.
    let log = scheduler.log_text();
    assert_eq!(log.matches(DSN_QUEUED).count(), 1, "{log}");
    assert_eq!(log.matches(DOUBLE_BOUNCE_DROPPED).count(), 1, "{log}");
    let record = std::fs::read_to_string(&record).expect("agent record");
    let jobs: Vec<&str> = record.lines().filter(|l| l.starts_with("start ")).collect();
    assert_eq!(
        jobs.len(),
        2,
        "carol's message, then the bounce to pm@far.test: {record}"
    );
    let queue_id = |line: &str| line.split(' ').nth(5).map(str::to_owned);
    assert_ne!(
        queue_id(jobs[0]),
        queue_id(jobs[1]),
        "two messages: {record}"
    );
    assert!(
        !record.lines().any(|l| l.starts_with("delivered ")),
        "{record}"
    );
    assert!(env.maildir("root").is_empty() && env.maildir("postmaster").is_empty());
    assert!(env.files("corrupt").is_empty(), "nothing set aside");
    assert!(scheduler.stop().success());
}
