//! Queue operations in bulk (issue 12, part 3): `mailq` with selectors
//! lists exactly what `skein queue delete` with the same selectors
//! deletes; ids on standard input (`-`); a bare `queue delete` refused;
//! each bulk operation logged with its selection and counts.

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use skein_integration_tests::TestEnv;

fn run(env: &TestEnv, args: &[&str], input: &str) -> Output {
    let mut child = env
        .skein()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skein");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

fn ids(env: &TestEnv, selectors: &[&str]) -> Vec<String> {
    let mut args = vec!["mailq", "--json"];
    args.extend_from_slice(selectors);
    let out = run(env, &args, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut ids: Vec<String> = v
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["queue_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn bulk_delete_by_domain_and_by_ids_on_standard_input() {
    // Neither channel has an agent: the messages wait in the queue.
    let env = TestEnv::new(
        "[[route]]\ndomain = \"drop.test\"\nchannel = \"hold\"\n\n\
         [[route]]\ndomain = \"keep.test\"\nchannel = \"hold\"\n",
    );
    for (n, to) in [
        "a@drop.test",
        "b@drop.test",
        "c@DROP.test",
        "d@keep.test",
        "e@keep.test",
    ]
    .iter()
    .enumerate()
    {
        env.submit(
            &["-f", "sender@test.example", to],
            format!("Subject: {n}\n\nx\n").as_bytes(),
        );
    }
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(Duration::from_secs(120), || env
            .files("incoming")
            .is_empty()
            && run(&env, &["mailq", "--json"], "").status.success()
            && ids(&env, &[]).len() == 5),
        "five queued:\n{}\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    let all = ids(&env, &[]);
    // qshape's view: every message young, by destination.
    let out = run(&env, &["mailq", "--ages", "--json"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let total = |domain: &str| {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["domain"] == domain)
            .map(|r| (r["total"].as_u64(), r["buckets"][0].as_u64()))
    };
    assert_eq!(total("TOTAL"), Some((Some(5), Some(5))), "{rows}");
    assert_eq!(total("drop.test"), Some((Some(3), Some(3))), "{rows}");
    assert_eq!(total("keep.test"), Some((Some(2), Some(2))), "{rows}");
    let doomed = ids(&env, &["--domain", "drop.test"]);
    assert_eq!(
        doomed.len(),
        3,
        "mailq --domain lists the three: {doomed:?}"
    );

    // Nothing given is refused, not taken for everything.
    let out = run(&env, &["queue", "delete"], "");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs queue ids"));
    assert_eq!(ids(&env, &[]), all);

    let out = run(&env, &["queue", "delete", "--domain", "drop.test"], "");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("3 message(s) selected (domain=drop.test), 3 done"),
        "{said}"
    );
    let left = ids(&env, &[]);
    assert_eq!(left.len(), 2);
    assert!(
        left.iter().all(|id| !doomed.contains(id)),
        "exactly what mailq listed went"
    );

    // Ids on standard input, one per line.
    let out = run(&env, &["queue", "delete", "-"], &format!("{}\n", left[0]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ids(&env, &[]), vec![left[1].clone()]);

    // Each bulk operation is one log line with what it selected.
    let log = scheduler.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("administrator acted on the queue")
                && l.contains("action=delete")
                && l.contains("selection=\"domain=drop.test\"")
                && l.contains("selected=3")
                && l.contains("done=3")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("administrator acted on the queue")
                && l.contains("selection=\"ids=1\"")
                && l.contains("selected=1")),
        "{log}"
    );
    drop(scheduler);
    drop(router);
}
