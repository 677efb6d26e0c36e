//! One agent per thread: with `maxthr = 1` no two jobs of one thread are
//! ever in progress at once, while threads of other hosts run in parallel
//! up to `maxring`; with `maxthr = 2` two jobs of one thread can be.
//! The recording test agent (`skein-test-agent`) writes when each job
//! starts and ends.

use std::collections::HashMap;
use std::time::Duration;

use skein_integration_tests::TestEnv;

const HOSTS: usize = 5;
const PER_HOST: usize = 6;

struct Interval {
    thread: String,
    start: u64,
    end: u64,
}

fn run(maxthr: u32, maxring: u32) -> Vec<Interval> {
    let env = TestEnv::new(&format!(
        r#"[[route]]
domain = "*"
channel = "rec"

[scheduler]
retries = ["1s"]

[[scheduler.clause]]
match = "rec/*"
command = "skein-test-agent"
maxthr = {maxthr}
maxring = {maxring}
overfeed = 1

[[scheduler.clause]]
match = "local/*"
command = "skein-local"
"#
    ));
    let record = env.dir.path().join("record");
    let record_s = record.display().to_string();
    // Everything is submitted before the scheduler starts, so that every
    // thread has all its work from the first moment.
    for n in 0..HOSTS * PER_HOST {
        let to = format!("r{n}@h{}.test", n % HOSTS);
        env.submit(&["-i", &to], format!("Subject: {n}\n\nx\n").as_bytes());
    }
    let router = env.start("skein-router");
    assert!(
        env.wait_for(Duration::from_secs(120), || env
            .files("incoming")
            .is_empty()),
        "router did not route: {}",
        router.log_text()
    );
    let scheduler = env.start_with_env(
        "skein-scheduler",
        &[
            ("SKEIN_TEST_AGENT_RECORD", &record_s),
            ("SKEIN_TEST_AGENT_DELAY_MS", "150"),
        ],
    );
    let done = env.wait_for(Duration::from_secs(300), || env.queue_empty());
    assert!(done, "queue not empty:\n{}", scheduler.log_text());
    assert!(scheduler.stop().success());
    drop(router);

    let text = std::fs::read_to_string(&record).expect("record file");
    let mut starts: HashMap<(String, String), (String, u64)> = HashMap::new();
    let mut out = Vec::new();
    let mut delivered = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["start", at, pid, thread, job, ..] => {
                starts.insert(
                    (pid.to_string(), job.to_string()),
                    (thread.to_string(), at.parse().unwrap()),
                );
            }
            ["end", at, pid, _thread, job, ..] => {
                let (thread, start) = starts
                    .remove(&(pid.to_string(), job.to_string()))
                    .expect("end without start");
                out.push(Interval {
                    thread,
                    start,
                    end: at.parse().unwrap(),
                });
            }
            ["delivered", ..] => delivered += 1,
            _ => panic!("unexpected record line {line:?}"),
        }
    }
    assert_eq!(
        delivered,
        HOSTS * PER_HOST,
        "every recipient delivered once"
    );
    assert_eq!(out.len(), HOSTS * PER_HOST, "one job per message");
    out
}

fn overlaps(a: &Interval, b: &Interval) -> bool {
    a.start < b.end && b.start < a.end
}

/// The largest number of intervals in progress at one instant.
fn max_parallel(iv: &[&Interval]) -> usize {
    let mut points: Vec<(u64, i32)> = iv
        .iter()
        .flat_map(|i| [(i.start, 1), (i.end, -1)])
        .collect();
    points.sort();
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[test]
fn maxthr_1_serialises_each_thread_and_maxring_bounds_parallelism() {
    let iv = run(1, 3);
    let all: Vec<&Interval> = iv.iter().collect();
    for a in &iv {
        for b in &iv {
            if !std::ptr::eq(a, b) && a.thread == b.thread {
                assert!(
                    !overlaps(a, b),
                    "two jobs of {} in progress at once",
                    a.thread
                );
            }
        }
    }
    let parallel = max_parallel(&all);
    println!("maxthr=1 maxring=3: at most {parallel} jobs in progress at once");
    assert!(parallel >= 2, "threads of different hosts run in parallel");
    assert!(parallel <= 3, "never more than maxring agents");
}

#[test]
fn maxthr_2_lets_two_jobs_of_one_thread_run_at_once() {
    let iv = run(2, 10);
    let mut by_thread: HashMap<&str, Vec<&Interval>> = HashMap::new();
    for i in &iv {
        by_thread.entry(i.thread.as_str()).or_default().push(i);
    }
    let best = by_thread
        .values()
        .map(|v| max_parallel(v))
        .max()
        .unwrap_or(0);
    println!("maxthr=2: at most {best} jobs of one thread in progress at once");
    assert_eq!(best, 2, "two agents work one thread, never more");
}
