//! Crash safety: 20 random `kill -9`s of the router and the scheduler
//! while 500 messages flow; after the last restart every message is
//! delivered and none is lost. Delivery is at-least-once, so a kill
//! between a delivery and its record may repeat it: the test prints how
//! many were delivered twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skein_integration_tests::{Rng, TestEnv};

const MESSAGES: usize = 500;
const USERS: usize = 10;
const KILLS: usize = 20;

#[test]
fn random_kill9_of_router_and_scheduler_loses_nothing() {
    let seed = Rng::seed_from_clock();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let env = TestEnv::new("[scheduler]\nretries = [\"1s\"]\n");
    let users: Vec<String> = (0..USERS).map(|u| format!("u{u}")).collect();
    env.make_users(&users);
    let mut router = env.start("skein-router");
    let mut scheduler = env.start("skein-scheduler");
    let submitting = AtomicBool::new(true);

    let mut kills = (0, 0);
    std::thread::scope(|s| {
        let env = &env;
        let submitting = &submitting;
        s.spawn(move || {
            for n in 0..MESSAGES {
                let to = format!("u{}@localhost", n % USERS);
                env.submit(
                    &["-i", &to],
                    format!("Subject: {n}\nX-Seq: {n}\n\nbody {n}\n").as_bytes(),
                );
            }
            submitting.store(false, Ordering::SeqCst);
        });
        for k in 0..KILLS {
            std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
            if rng.below(2) == 0 {
                router.kill9();
                router = env.start("skein-router");
                kills.0 += 1;
            } else {
                scheduler.kill9();
                scheduler = env.start("skein-scheduler");
                kills.1 += 1;
            }
            if k + 1 == KILLS && submitting.load(Ordering::SeqCst) {
                println!("all {KILLS} kills landed while messages were still being submitted");
            }
        }
    });
    println!(
        "killed the router {} times and the scheduler {} times",
        kills.0, kills.1
    );

    let done = env.wait_for(Duration::from_secs(300), || {
        let n: usize = users.iter().map(|u| env.maildir(u).len()).sum();
        n >= MESSAGES && env.queue_empty()
    });
    assert!(
        done,
        "not everything delivered after the last restart.\nrouter:\n{}\nscheduler:\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    let mut count: HashMap<usize, usize> = HashMap::new();
    for u in &users {
        for m in env.maildir(u) {
            let text = String::from_utf8_lossy(&m).into_owned();
            let n = skein_integration_tests::x_seq(&text);
            assert_eq!(
                format!("u{}", n % USERS),
                *u,
                "message {n} in the right Maildir"
            );
            *count.entry(n).or_default() += 1;
        }
    }
    let missing: Vec<usize> = (0..MESSAGES).filter(|n| !count.contains_key(n)).collect();
    assert!(missing.is_empty(), "lost messages: {missing:?}");
    let twice = count.values().filter(|&&c| c > 1).count();
    println!(
        "{MESSAGES} messages delivered; {twice} delivered more than once (at-least-once after a kill)"
    );
    assert!(env.files("corrupt").is_empty(), "no file set aside");
    assert!(scheduler.stop().success());
    assert!(router.stop().success());
}
