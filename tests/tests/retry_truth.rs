//! The retry schedule and what the tools say about it (issue 12, part 4):
//! two messages deferred in one round of a thread step the schedule once
//! (its first entry is honoured, not skipped), and `mailq --json`,
//! `skein queue show --json` and `mailq --threads --json` give the same,
//! real next attempt.

use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use skein_integration_tests::TestEnv;

fn json(env: &TestEnv, args: &[&str]) -> Value {
    let out: Output = env.skein().args(args).output().expect("run skein");
    assert!(
        out.status.success(),
        "skein {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Every recipient's next attempt in `mailq --json`.
fn next_attempts(env: &TestEnv) -> Vec<i64> {
    json(env, &["mailq", "--json"])
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["recipients"].as_array().expect("recipients").clone())
        .filter_map(|r| r["next_attempt_unix"].as_i64())
        .collect()
}

fn thread_next_in(env: &TestEnv) -> Option<i64> {
    json(env, &["mailq", "--threads", "--json"])
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["threads"].as_array().expect("threads").clone())
        .find(|t| t["channel"].as_str() == Some("smtp"))
        .and_then(|t| t["next_attempt_in_secs"].as_i64())
}

#[test]
fn one_round_of_deferrals_honours_the_first_retry_and_every_view_agrees() {
    // A destination that refuses connections: every attempt defers.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let env = TestEnv::new(&format!(
        "[scheduler]\nretries = [\"10m\", \"2h\"]\n\n\
         [[route]]\ndomain = \"down.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:{port}\"\n"
    ));
    for n in 0..2 {
        env.submit(
            &["-f", "sender@test.example", &format!("user{n}@down.test")],
            format!("Subject: {n}\n\nbody\n").as_bytes(),
        );
    }
    let router = env.route_all();
    let scheduler = env.start("skein-scheduler");
    let socket = env.spool().join("run/scheduler.sock");
    assert!(
        env.wait_for(Duration::from_secs(120), || socket.exists()
            && env
                .skein()
                .args(["mailq"])
                .output()
                .is_ok_and(|o| o.status.success())),
        "the scheduler answers:\n{}",
        scheduler.log_text()
    );
    assert!(
        env.wait_for(Duration::from_secs(120), || next_attempts(&env).len() == 2),
        "both deferred:\n{}",
        scheduler.log_text()
    );
    let now = now_unix();
    let next = next_attempts(&env);
    for &at in &next {
        // The first entry, 10 minutes: not the second (2 hours).
        assert!(
            (now + 9 * 60..=now + 10 * 60 + 5).contains(&at),
            "next attempt in {}s, not about 600s: {next:?}\n{}",
            at - now,
            scheduler.log_text()
        );
    }
    // `mailq --threads` says the same instant for the thread...
    let thread_in = thread_next_in(&env).unwrap_or_else(|| {
        panic!(
            "the thread is backing off: {}",
            json(&env, &["mailq", "--threads", "--json"])
        )
    });
    let earliest = *next.iter().min().expect("two");
    assert!(
        (thread_in - (earliest - now_unix())).abs() <= 2,
        "mailq --threads says {thread_in}s, mailq {}s",
        earliest - now_unix()
    );
    // ... and so does `queue show` for each message.
    let ids: Vec<String> = json(&env, &["mailq", "--json"])
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["queue_id"].as_str().expect("id").to_owned())
        .collect();
    for id in &ids {
        let shown = json(&env, &["queue", "show", id, "--json"]);
        let at = shown["recipients"][0]["next_attempt_unix"]
            .as_i64()
            .expect("next attempt");
        assert!(next.contains(&at), "queue show {at} vs mailq {next:?}");
    }

    // A flush retries now; that second failed round takes the second entry.
    let out = env
        .skein()
        .args(["queue", "flush"])
        .output()
        .expect("flush");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        env.wait_for(Duration::from_secs(120), || next_attempts(&env)
            .iter()
            .all(|&at| at > now_unix() + 3600)),
        "after the second failure the next attempt is about 2h away: {:?}\n{}",
        next_attempts(&env)
            .iter()
            .map(|at| at - now_unix())
            .collect::<Vec<_>>(),
        scheduler.log_text()
    );
    let thread_in = thread_next_in(&env).expect("backing off");
    assert!(
        (7100..=7200).contains(&thread_in),
        "mailq --threads: {thread_in}s"
    );
    // The flush is in the log, with what it selected.
    assert!(
        scheduler
            .log_text()
            .contains("administrator flushed the queue"),
        "{}",
        scheduler.log_text()
    );
    drop(scheduler);
    drop(router);
}
