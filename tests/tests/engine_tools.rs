//! Every `skein mailq` / `skein queue` / `skein status` command against a
//! live scheduler. (The same commands with no scheduler running are in
//! tools_without_scheduler.rs.)

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use skein_integration_tests::TestEnv;

fn skein(env: &TestEnv, args: &[&str]) -> Output {
    env.skein().args(args).output().expect("run skein")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(env: &TestEnv, args: &[&str]) -> Value {
    serde_json::from_str(&ok(&skein(env, args))).expect("valid JSON")
}

fn ids(env: &TestEnv) -> Vec<String> {
    let v = json(env, &["mailq", "--json"]);
    v.as_array()
        .expect("array of messages")
        .iter()
        .map(|m| m["queue_id"].as_str().unwrap().to_string())
        .collect()
}

fn starts(record: &std::path::Path) -> usize {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start "))
        .count()
}

#[test]
fn queue_commands_against_a_live_scheduler() {
    let env = TestEnv::new(
        r#"[[route]]
domain = "h.test"
channel = "rec"

[scheduler]
retries = ["1h"]

[[scheduler.clause]]
match = "rec/*"
command = "skein-test-agent"

[[scheduler.clause]]
match = "local/*"
command = "skein-local"
"#,
    );
    let record = env.dir.path().join("record");
    let record_s = record.display().to_string();
    let router = env.start("skein-router");
    env.submit(
        &["-i", "-f", "a@localhost", "x@h.test"],
        b"Subject: one\n\n1\n",
    );
    env.submit(
        &["-i", "-f", "b@localhost", "y@h.test", "z@h.test"],
        b"Subject: two\n\n2\n",
    );
    // Both routed before the scheduler starts: retry timing is per thread,
    // so a message arriving after the thread's first deferral would wait
    // for the thread's next attempt (an hour here).
    assert!(
        env.wait_for(Duration::from_secs(120), || env.files("transport").len()
            == 2),
        "not routed:\n{}",
        router.log_text()
    );
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record_s),
            ("SKEIN_TEST_AGENT_MODE", "defer"),
        ],
    );
    // Both tried once and deferred (retry in an hour).
    assert!(
        env.wait_for(Duration::from_secs(120), || {
            let Ok(out) = env.skein().args(["mailq", "--json"]).output() else {
                return false;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                return false;
            };
            v.as_array().is_some_and(|a| {
                a.len() == 2
                    && a.iter().all(|m| {
                        m["recipients"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|r| r["state"] == "deferred")
                    })
            })
        }),
        "messages not deferred:\n{}\n{}",
        scheduler.log_text(),
        router.log_text()
    );
    let first = ids(&env);
    let (one, two) = (first[0].clone(), first[1].clone());

    // mailq, Postfix-like.
    let text = ok(&skein(&env, &["mailq"]));
    assert!(text.contains(&one) && text.contains(&two), "{text}");
    assert!(
        text.contains("a@localhost") && text.contains("y@h.test"),
        "{text}"
    );
    assert!(
        text.contains("(test agent: deferred on request)"),
        "last diagnostic shown: {text}"
    );
    assert!(text.contains("Requests"), "summary line: {text}");

    // mailq --threads
    let text = ok(&skein(&env, &["mailq", "--threads"]));
    assert!(text.contains("rec/*") && text.contains("h.test"), "{text}");
    let groups = json(&env, &["mailq", "--threads", "--json"]);
    let thread = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["threads"].as_array().unwrap().clone())
        .find(|t| t["host"] == "h.test")
        .expect("thread rec/h.test");
    assert_eq!(thread["recipients"], 3);
    assert_eq!(thread["messages"], 2);
    assert_eq!(thread["feed"], "retrying");

    // queue show
    let text = ok(&skein(&env, &["queue", "show", &two]));
    assert!(
        text.contains("z@h.test") && text.contains("b@localhost"),
        "{text}"
    );
    let detail = json(&env, &["queue", "show", &two, "--json"]);
    assert_eq!(detail["sender"], "b@localhost");

    // hold / release
    ok(&skein(&env, &["queue", "hold", &one]));
    let text = ok(&skein(&env, &["mailq"]));
    assert!(text.contains(&format!("{one}!")), "held marker: {text}");
    assert_eq!(json(&env, &["queue", "show", &one, "--json"])["held"], true);
    ok(&skein(&env, &["queue", "release", &one]));
    assert_eq!(
        json(&env, &["queue", "show", &one, "--json"])["held"],
        false
    );

    // flush one message: it is tried again at once.
    let before = starts(&record);
    ok(&skein(&env, &["queue", "flush", &one]));
    assert!(
        env.wait_for(Duration::from_secs(60), || starts(&record) > before),
        "flush retried"
    );
    // flush a thread, and everything.
    let before = starts(&record);
    ok(&skein(&env, &["queue", "flush", "--thread", "rec/h.test"]));
    assert!(
        env.wait_for(Duration::from_secs(60), || starts(&record) > before),
        "thread flush retried"
    );
    ok(&skein(&env, &["queue", "flush"]));

    // requeue: back through the router under a new id.
    ok(&skein(&env, &["queue", "requeue", &two]));
    assert!(
        env.wait_for(Duration::from_secs(60), || {
            let now = ids(&env);
            now.len() == 2 && !now.contains(&two)
        }),
        "requeued under a new id"
    );
    let new_two = ids(&env).into_iter().find(|i| *i != one).unwrap();
    let detail = json(&env, &["queue", "show", &new_two, "--json"]);
    assert_eq!(detail["recipients"].as_array().unwrap().len(), 2);

    // delete
    ok(&skein(&env, &["queue", "delete", &one]));
    assert_eq!(ids(&env), vec![new_two.clone()]);

    // unknown id
    let out = skein(&env, &["queue", "show", &one]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&one));

    // status
    let text = ok(&skein(&env, &["status"]));
    assert!(
        text.contains(&scheduler.child.id().to_string()),
        "scheduler pid in status: {text}"
    );
    let st = json(&env, &["status", "--json"]);
    assert!(st.to_string().contains("\"messages\":1"), "{st}");

    assert!(scheduler.stop().success());
    drop(router);
}
