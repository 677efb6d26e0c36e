//! 1000 messages to 50 local users, submitted with `skein sendmail`, all
//! land in the right Maildirs exactly once (counted and hashed), and the
//! queue is empty afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use skein_integration_tests::TestEnv;

const MESSAGES: usize = 1000;
const USERS: usize = 50;

fn body(n: usize) -> String {
    format!(
        "Subject: message {n}\nX-Seq: {n}\n\nbody of message {n}\n{}\n",
        "payload ".repeat(n % 97)
    )
}

/// The name of the user running the test, or `uid<N>` without one: the
/// local part `skein sendmail` gives a submission without `-f`.
fn login() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid{uid}"))
}

#[test]
fn thousand_messages_to_fifty_users_arrive_exactly_once() {
    let env = TestEnv::new("[scheduler]\nretries = [\"1s\"]\n");
    let users: Vec<String> = (0..USERS).map(|u| format!("user{u}")).collect();
    env.make_users(&users);
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");

    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4 {
            let env = &env;
            s.spawn(move || {
                for n in (w..MESSAGES).step_by(4) {
                    let to = format!("user{}@localhost", n % USERS);
                    env.submit(&["-i", &to], body(n).as_bytes());
                }
            });
        }
    });
    let submitted = started.elapsed();
    let done = env.wait_for(Duration::from_secs(300), || {
        let delivered: usize = users.iter().map(|u| env.maildir(u).len()).sum();
        delivered >= MESSAGES && env.queue_empty()
    });
    let elapsed = started.elapsed();
    assert!(
        done,
        "not all delivered.\nrouter log:\n{}\nscheduler log:\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    println!("{MESSAGES} messages submitted in {submitted:.2?}, all delivered after {elapsed:.2?}");

    // Submitted without -f: the sender is the submitting user, qualified
    // with the first local domain, as `skein sendmail` makes it.
    let return_path = format!("Return-Path: <{}@localhost>\n", login());
    let mut seen: HashMap<usize, u64> = HashMap::new();
    for (u, user) in users.iter().enumerate() {
        let msgs = env.maildir(user);
        assert_eq!(
            msgs.len(),
            MESSAGES / USERS,
            "{user} got {} messages",
            msgs.len()
        );
        for m in msgs {
            let text = String::from_utf8(m).expect("utf-8");
            assert!(!text.contains('\r'), "Maildir files use LF line endings");
            assert!(text.starts_with(&return_path), "{text}");
            assert!(
                text.contains(&format!("Delivered-To: {user}@localhost\n")),
                "{text}"
            );
            let n = skein_integration_tests::x_seq(&text);
            assert_eq!(n % USERS, u, "message {n} in the wrong Maildir ({user})");
            let want = body(n);
            let (_, want_body) = want.split_once("\n\n").unwrap();
            assert!(
                text.ends_with(&format!("\n\n{want_body}")),
                "message {n} intact"
            );
            // FNV-1a of the body, so that a mixed-up body could not pass.
            let h = want_body.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            });
            assert!(seen.insert(n, h).is_none(), "message {n} delivered twice");
        }
    }
    assert_eq!(seen.len(), MESSAGES);
    assert!(env.queue_empty());
    assert!(env.files("corrupt").is_empty(), "nothing set aside");
    assert!(
        scheduler.stop().success(),
        "scheduler stops cleanly on SIGTERM"
    );
    assert!(router.stop().success(), "router stops cleanly on SIGTERM");
}
