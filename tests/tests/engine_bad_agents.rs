//! An agent that crashes, one that hangs, and one that sends garbage:
//! their recipients are deferred and later delivered by a good agent;
//! nothing is bounced or lost.

use std::time::Duration;

use skein_integration_tests::TestEnv;

const MESSAGES: usize = 5;

fn misbehave_once(mode: &str) {
    let env = TestEnv::new(
        r#"[[route]]
domain = "*"
channel = "rec"

[scheduler]
retries = ["1s"]
agent_timeout = "2s"

[[scheduler.clause]]
match = "rec/*"
command = "skein-test-agent"
maxthr = 1
overfeed = 1

[[scheduler.clause]]
match = "local/*"
command = "skein-local"
"#,
    );
    let record = env.dir.path().join("record").display().to_string();
    let state = env.dir.path().join("state").display().to_string();
    let router = env.start("skein-router");
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record),
            ("SKEIN_TEST_AGENT_STATE", &state),
            ("SKEIN_TEST_AGENT_MODE", mode),
        ],
    );
    for n in 0..MESSAGES {
        env.submit(
            &["-i", &format!("r{n}@h.test")],
            format!("Subject: {n}\n\nx\n").as_bytes(),
        );
    }
    let done = env.wait_for(Duration::from_secs(180), || env.queue_empty());
    let log = scheduler.log_text();
    assert!(
        done,
        "{mode}: queue not empty:\n{log}\n{}",
        router.log_text()
    );

    let text = std::fs::read_to_string(&record).expect("record");
    let mut delivered: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("delivered "))
        .filter_map(|l| l.split(' ').nth(1))
        .collect();
    delivered.sort();
    let mut want: Vec<String> = (0..MESSAGES).map(|n| format!("r{n}@h.test")).collect();
    want.sort();
    assert_eq!(
        delivered, want,
        "{mode}: every recipient delivered exactly once"
    );
    assert!(
        log.contains("status=deferred") && log.contains("transport agent failed"),
        "{mode}: the misbehaving agent's recipient was deferred:\n{log}"
    );
    assert!(
        !log.contains("status=bounced"),
        "{mode}: nothing bounced:\n{log}"
    );
    assert!(
        env.maildir("root").is_empty(),
        "{mode}: no DSN to the sender"
    );
    assert!(env.files("corrupt").is_empty());
    assert!(scheduler.stop().success());
}

#[test]
fn a_crashing_agent_defers_and_a_good_one_delivers_later() {
    misbehave_once("crash-once");
}

#[test]
fn a_hanging_agent_is_killed_after_agent_timeout_and_its_jobs_deferred() {
    misbehave_once("hang-once");
}

#[test]
fn an_agent_sending_garbage_is_dropped_and_its_jobs_deferred() {
    misbehave_once("garbage-once");
}
