//! Content filters for local submissions (`router.milters`, Postfix's
//! `non_smtpd_milters`): mail from `skein sendmail` goes through a
//! scripted milter of the tests' own before the router routes it, and is
//! delivered (by the real scheduler and local agent, into Maildirs) as the
//! filter left it. A reject bounces to the sender with the filter's reply,
//! a tempfail leaves the message in `incoming/`, a discard drops it, and a
//! message the router's filters already changed (marked `filtered`, as a
//! router that crashed before routing it leaves it) is not filtered twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skein_integration_tests::TestEnv;
use skein_integration_tests::scripted_milter::{Act, cont, milter, packet};

const GUARD: Duration = Duration::from_secs(120);

/// What the scripted filter saw.
#[derive(Default)]
struct Seen {
    /// Connections (one per message).
    connections: AtomicUsize,
    /// The host names of the connect steps.
    connect_names: Mutex<Vec<String>>,
}

/// A filter that decides by the Subject: `reject` (a custom 550 reply),
/// `later` (tempfail), `discard`; anything else is accepted at end of
/// message with a header added and the Subject changed.
fn filter(seen: &Arc<Seen>) -> u16 {
    let seen = Arc::clone(seen);
    milter(Arc::new(move |code, data| match code {
        b'C' => {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let name = data.split(|&b| b == 0).next().unwrap_or_default();
            seen.connect_names
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(name).into_owned());
            cont()
        }
        b'R' if data.starts_with(b"<ann@localhost>") => Act::Send(packet(
            b'y',
            b"550 5.7.1 ann takes no mail from filters today\0",
        )),
        b'L' => match data {
            b"Subject\0reject\0" => {
                Act::Send(packet(b'y', b"550 5.7.1 Infected: Eicar-Test-Signature\0"))
            }
            b"Subject\0later\0" => Act::Send(packet(b't', b"")),
            b"Subject\0discard\0" => Act::Send(packet(b'd', b"")),
            _ => cont(),
        },
        b'E' => {
            let mut change = 1u32.to_be_bytes().to_vec();
            change.extend_from_slice(b"Subject\0filtered by the router's milter\0");
            Act::Send(
                [
                    packet(b'h', b"X-Local-Filter\0seen\0"),
                    packet(b'm', &change),
                    packet(b'a', b""),
                ]
                .concat(),
            )
        }
        _ => cont(),
    }))
}

fn env(port: u16) -> TestEnv {
    let env = TestEnv::new(&format!(
        "[smtpd]\nmilter_timeout = \"5s\"\nmilter_content_timeout = \"5s\"\n\n[router]\nmilters = [\"inet:127.0.0.1:{port}\"]\n\n[scheduler]\nretries = [\"1s\"]\n"
    ));
    env.make_users(&["ann".to_owned(), "joe".to_owned()]);
    env
}

fn submit(env: &TestEnv, subject: &str) {
    submit_to(env, subject, &["joe@localhost"]);
}

fn submit_to(env: &TestEnv, subject: &str, to: &[&str]) {
    let mut args = vec!["-i", "-f", "ann@localhost"];
    args.extend_from_slice(to);
    env.submit(
        &args,
        format!(
            "From: ann@localhost\nTo: joe@localhost\nSubject: {subject}\n\nbody of {subject}\n"
        )
        .as_bytes(),
    );
}

#[test]
fn submissions_are_filtered_and_delivered_as_the_filter_left_them() {
    let seen = Arc::new(Seen::default());
    let env = env(filter(&seen));
    submit(&env, "hello");
    submit(&env, "reject");
    submit(&env, "later");
    submit(&env, "discard");
    // Refused for one recipient (at RCPT): delivered to the other.
    submit_to(&env, "split", &["joe@localhost", "ann@localhost"]);
    let router = env.start("skein-router");
    let scheduler = env.start("skein-scheduler");
    let done = env.wait_for(GUARD, || {
        env.maildir("joe").len() == 2
            && env.maildir("ann").len() == 2
            && router.logged("discarded by a content filter") == 1
            && router.logged("deferred by a content filter") == 1
            && env.files("queue").is_empty()
    });
    assert!(
        done,
        "router:\n{}\nscheduler:\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    // Accepted: delivered as changed (both to joe; split to joe only).
    let joe_all: Vec<String> = env
        .maildir("joe")
        .into_iter()
        .map(|m| String::from_utf8(m).expect("utf-8"))
        .collect();
    assert!(
        joe_all.iter().any(|m| m.contains("body of split")),
        "{joe_all:?}"
    );
    let joe = joe_all
        .into_iter()
        .find(|m| m.contains("body of hello"))
        .expect("hello delivered");
    let has = |line: &str| joe.lines().any(|l| l.trim_end() == line);
    assert!(has("X-Local-Filter: seen"), "{joe}");
    assert!(
        has("Subject: filtered by the router's milter") && !joe.contains("Subject: hello"),
        "{joe}"
    );
    assert!(joe.contains("body of hello"), "{joe}");
    // Rejected, and refused for ann: the sender's bounces carry the
    // filter's replies. (Lines of a notice are wrapped: compared with the
    // wrapping undone.)
    let bounces: Vec<String> = env
        .maildir("ann")
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        bounces.iter().all(|b| b.contains("Status: 5.7.1")),
        "{bounces:?}"
    );
    assert!(
        bounces
            .iter()
            .any(|b| b.contains("Infected: Eicar-Test-Signature")),
        "{bounces:?}"
    );
    let split = bounces
        .iter()
        .find(|b| b.contains("ann takes no mail from filters today"))
        .unwrap_or_else(|| panic!("no bounce for the refused recipient: {bounces:?}"));
    assert!(
        split.contains("Final-Recipient: rfc822;ann@localhost"),
        "{split}"
    );
    assert!(
        !split.contains("Final-Recipient: rfc822;joe@localhost"),
        "{split}"
    );
    // Deferred: still in incoming/, the only message there.
    let incoming = env.files("incoming");
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    let (_, text) = skein_spool::read_message(&incoming[0]).expect("readable");
    assert!(String::from_utf8_lossy(&text).contains("Subject: later"));
    // Local submissions show up as a connection from localhost.
    let names = seen.connect_names.lock().unwrap().clone();
    assert_eq!(names.len(), 5, "one connection per message: {names:?}");
    assert!(names.iter().all(|n| n == "localhost"), "{names:?}");
}

#[test]
fn a_message_the_filters_already_changed_is_not_filtered_again() {
    let seen = Arc::new(Seen::default());
    let env = env(filter(&seen));
    // A message the filters would reject, marked as the router marks what
    // they changed: this is the file a router that crashed after writing
    // it, before routing it, leaves behind.
    submit(&env, "reject");
    let incoming = env.files("incoming");
    assert_eq!(incoming.len(), 1);
    let (info, text) = skein_spool::read_message(&incoming[0]).expect("readable");
    assert!(!info.filtered, "a fresh submission is not marked");
    let marked = skein_spool::render_file_at(
        &info.id,
        info.arrival_micros,
        &info.envelope,
        &text,
        None,
        true,
    )
    .expect("render");
    std::fs::write(&incoming[0], marked).expect("rewrite");
    let router = env.route_all();
    let scheduler = env.start("skein-scheduler");
    assert!(
        env.wait_for(GUARD, || env.maildir("joe").len() == 1),
        "router:\n{}\nscheduler:\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 0, "not filtered");
    assert!(env.maildir("ann").is_empty(), "no bounce");
}
