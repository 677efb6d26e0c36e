//! The files of finished messages are retired into `free/` and reused for
//! new messages (docs/spool.md, "Recycled files"): a second wave of
//! messages, shorter than the first, is written into the very files (the
//! same inodes) the first wave left, and every message of both waves is
//! delivered intact — nothing of an old message survives in a new one.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use skein_integration_tests::TestEnv;

const WAVE: usize = 40;

fn body(n: usize) -> String {
    // The first wave is long (about 12 KB), the second short, so that a
    // reused file that was not cut to its new length would show.
    let filler = if n < WAVE {
        format!("old message {n} filler line\n").repeat(400)
    } else {
        String::new()
    };
    format!("Subject: message {n}\nX-Seq: {n}\n\nbody of message {n}\n{filler}")
}

/// Published files in `free/` (names without a leading dot) and their
/// inode numbers.
fn published(env: &TestEnv) -> BTreeSet<u64> {
    env.files("free")
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| std::fs::metadata(p).expect("stat").ino())
        .collect()
}

fn delivered(env: &TestEnv) -> Vec<String> {
    env.maildir("ann")
        .into_iter()
        .map(|m| String::from_utf8(m).expect("utf-8"))
        .collect()
}

#[test]
fn files_of_finished_messages_are_reused_and_cut_to_their_new_content() {
    let env = TestEnv::new("");
    env.make_users(&["ann".to_owned()]);
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    let logs = || {
        format!(
            "router log:\n{}\nscheduler log:\n{}",
            router.log_text(),
            scheduler.log_text()
        )
    };

    for n in 0..WAVE {
        env.submit(&["-i", "ann@localhost"], body(n).as_bytes());
    }
    // Delivered, and the files of every message retired and published
    // (nothing left staged). Files are already reused within this wave, as
    // soon as its first messages are done.
    let settled = |count: usize| {
        delivered(&env).len() == count
            && env.queue_empty()
            && !env.files("free").is_empty()
            && published(&env).len() == env.files("free").len()
    };
    let first = env.wait_for(Duration::from_secs(120), || settled(WAVE));
    assert!(
        first,
        "first wave not delivered and retired: {} delivered, free/ holds {:?}\n{}",
        delivered(&env).len(),
        env.files("free"),
        logs()
    );
    let pool = published(&env);
    assert!(pool.len() <= 2 * WAVE);

    // One message at a time, each waited for: each finds a message file
    // and a control file in the pool, so none is made anew.
    for n in WAVE..2 * WAVE {
        env.submit(&["-i", "ann@localhost"], body(n).as_bytes());
        let done = env.wait_for(Duration::from_secs(60), || settled(n + 1));
        assert!(
            done,
            "message {n} not delivered and retired; free/ holds {:?}\n{}",
            env.files("free"),
            logs()
        );
    }
    // Every message and control file of the second wave was one of the
    // pool's: no new file was made, none lost.
    assert_eq!(published(&env), pool, "the same files, reused");

    let mut seen = BTreeSet::new();
    for text in delivered(&env) {
        let n = skein_integration_tests::x_seq(&text);
        let want = body(n);
        let (_, want_body) = want.split_once("\n\n").unwrap();
        assert!(
            text.ends_with(&format!("\n\n{want_body}")),
            "message {n} not intact:\n{text}"
        );
        assert!(seen.insert(n), "message {n} delivered twice");
    }
    assert_eq!(seen.len(), 2 * WAVE);
    assert!(env.files("corrupt").is_empty(), "nothing set aside");
    assert!(scheduler.stop().success());
    assert!(router.stop().success());
}
