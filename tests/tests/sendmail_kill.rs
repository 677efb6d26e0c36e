//! `skein sendmail` killed with SIGKILL at random points while it writes:
//! every message in incoming/ is whole (and is the one sent), every
//! submission that exited 0 is there, and the next start removes the stale
//! temporary files the killed ones left.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use skein_integration_tests::{Rng, TestEnv};

/// Kills wanted, and the most submissions tried to get them.
const KILLS: usize = 50;
const MAX_RUNS: usize = 200;
/// X-Seq of the last, deliberately half-written message.
const RUNS_MARK: usize = 999_999;

fn body(seq: usize, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: kill {seq}\r\nX-Seq: {seq}\r\n\r\n").into_bytes();
    let line = format!("{seq:06} the quick brown fox jumps over the lazy dog\r\n");
    while m.len() < size {
        m.extend_from_slice(line.as_bytes());
    }
    m
}

#[test]
fn sigkill_at_random_points_never_leaves_a_partial_message() {
    let seed = Rng::seed_from_clock();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let env = TestEnv::new("");

    // Calibrate: how long does one 2 MB submission take here?
    let t = Instant::now();
    let mut c = env
        .sendmail(&["-i", "cal@localhost"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&body(0, 2 << 20))
        .unwrap();
    assert!(c.wait().unwrap().success());
    let typical = t.elapsed();
    println!("one 2 MB submission takes {typical:?}");

    let mut sent: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut completed = Vec::new();
    let mut killed = 0;
    let mut stale_seen = 0;
    let mut runs = 0;
    for seq in 1..=MAX_RUNS {
        if killed >= KILLS {
            break;
        }
        runs += 1;
        let size = 1024 + rng.below(4 << 20) as usize;
        let msg = body(seq, size);
        let mut child = env
            .sendmail(&["-i", &format!("k{seq}@localhost")])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let status = if rng.below(8) == 0 {
            // The whole message, then a kill somewhere around the end of
            // the time this size takes, so that the fsync and rename are
            // hit too (this one may also complete).
            let feed = msg.clone();
            let writer = std::thread::spawn(move || {
                // Broken pipe once the child is killed: expected.
                let _ = stdin.write_all(&feed);
            });
            let expected = typical.as_micros() as u64 * size as u64 / (2 << 20) + 1000;
            std::thread::sleep(Duration::from_micros(
                expected * 8 / 10 + rng.below(expected * 6 / 10),
            ));
            kill(&child);
            let status = child.wait().unwrap();
            writer.join().unwrap();
            status
        } else {
            // A random part of the message, with the rest still to come:
            // sendmail cannot have finished, so the kill lands mid-write
            // whatever the speed of this machine. A short pause lets it
            // write out what it has read.
            let part = rng.below(msg.len() as u64) as usize;
            let _ = stdin.write_all(&msg[..part]);
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            kill(&child);
            let status = child.wait().unwrap();
            drop(stdin);
            status
        };
        sent.insert(seq, msg);
        // Temporary files a killed writer left behind (the next run that
        // gets far enough removes them; the end of the test checks that).
        stale_seen += env.files("tmp").len();
        if status.success() {
            completed.push(seq);
        } else {
            killed += 1;
        }
    }
    println!(
        "{killed} of {runs} submissions killed, {} completed",
        completed.len()
    );
    println!("{stale_seen} stale temporary files left by killed writers");
    assert!(killed >= KILLS, "the kills must land while sendmail runs");
    assert!(stale_seen > 0, "some kills must land mid-write");

    // Every file in incoming/ is whole and is exactly one sent message.
    let mut found = HashMap::new();
    for path in env.files("incoming") {
        let (_, bytes) = skein_spool::read_message(&path)
            .unwrap_or_else(|e| panic!("partial or damaged message {}: {e}", path.display()));
        let text = String::from_utf8_lossy(&bytes);
        let seq = skein_integration_tests::x_seq(&text);
        if seq == 0 {
            continue;
        }
        assert!(
            bytes.ends_with(&sent[&seq][sent[&seq].len() - 200..]),
            "message {seq} is not the whole message sent"
        );
        let stored_body = &bytes[bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap()..];
        let sent_body = &sent[&seq][sent[&seq]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()..];
        assert_eq!(stored_body, sent_body, "message {seq} body");
        assert!(found.insert(seq, path).is_none(), "message {seq} twice");
    }
    for seq in &completed {
        assert!(
            found.contains_key(seq),
            "message {seq} exited 0 but is not in the spool"
        );
    }
    println!("{} whole messages in incoming/", found.len());

    // One more writer killed for certain in the middle of its message
    // (it has written half and waits for the rest), then the next start
    // must remove what it left.
    let mut child = env
        .sendmail(&["-i", "last@localhost"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body(RUNS_MARK, 1 << 20)).unwrap();
    stdin.flush().unwrap();
    assert!(
        env.wait_for(Duration::from_secs(60), || !env.files("tmp").is_empty()),
        "the writer has its temporary file"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let stale = env.files("tmp");
    assert!(
        !stale.is_empty(),
        "a killed writer leaves a stale temporary file"
    );
    let mut next = env
        .sendmail(&["next@localhost"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    next.stdin
        .take()
        .unwrap()
        .write_all(b"Subject: next\n\nx\n")
        .unwrap();
    assert!(next.wait().unwrap().success());
    for p in &stale {
        assert!(!p.exists(), "{} survived the next start", p.display());
    }
    assert!(env.files("tmp").is_empty(), "stale temporary files removed");
}

fn kill(child: &std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}
