//! One agent per thread, with real processes: every message is queued
//! before the scheduler starts, so its first dispatch sees every thread's
//! work at once, and what it decides there does not depend on timing.
//! The test asserts on what was recorded, never on elapsed time:
//!
//! - the agents started: the scheduler's `agent assigned to thread` and
//!   `agent left thread` log lines (debug level), in the order it wrote
//!   them, say which agent (by pid) worked which thread when;
//! - the jobs: the recording test agent (`skein-test-agent`) appends a
//!   `start` and an `end` line per job to one file, in the order they
//!   happened (one `write(2)` each, `O_APPEND`).
//!
//! The decisions themselves (maxta → maxchannel → maxring → maxthr, which
//! agent gets which thread) are table-tested without processes in
//! `scheduler/src/policy.rs` and `scheduler/src/engine/tests.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use skein_integration_tests::TestEnv;

const HOSTS: usize = 5;
const PER_HOST: usize = 6;

/// What one run recorded.
struct Run {
    /// Per thread, the distinct agent pids ever assigned to it.
    assigned: BTreeMap<String, BTreeSet<u32>>,
    /// Per thread, the most agents assigned to it at once.
    most_assigned: BTreeMap<String, usize>,
    /// Every agent pid the scheduler assigned a thread.
    agents: BTreeSet<u32>,
    /// Per thread, the most jobs in progress at once (from the record
    /// file's order of `start` and `end` lines).
    most_jobs: BTreeMap<String, usize>,
    /// The most jobs in progress at once, all threads together.
    most_jobs_overall: usize,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
}

fn run(maxthr: u32, maxring: u32) -> Run {
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
            ("SKEIN_LOG", "skein_scheduler=debug,info"),
        ],
    );
    let done = env.wait_for(Duration::from_secs(300), || env.queue_empty());
    assert!(done, "queue not empty:\n{}", scheduler.log_text());
    assert!(scheduler.stop().success());
    drop(router);
    let log = std::fs::read_to_string(env.dir.path().join("skein-scheduler.log")).unwrap();

    // The scheduler's own account of which agent worked which thread.
    let mut assigned: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut now: HashMap<String, BTreeSet<u32>> = HashMap::new();
    let mut most_assigned: BTreeMap<String, usize> = BTreeMap::new();
    let mut agents = BTreeSet::new();
    for line in log.lines() {
        let joined = line.contains("msg=\"agent assigned to thread\"");
        let left = line.contains("msg=\"agent left thread\"");
        if !joined && !left {
            continue;
        }
        let pid: u32 = field(line, "agent_pid").unwrap().parse().unwrap();
        let thread = field(line, "thread").unwrap().to_string();
        let on = now.entry(thread.clone()).or_default();
        if joined {
            assert!(on.insert(pid), "agent {pid} assigned twice to {thread}");
            assigned.entry(thread.clone()).or_default().insert(pid);
            agents.insert(pid);
            let most = most_assigned.entry(thread).or_default();
            *most = (*most).max(on.len());
        } else {
            assert!(on.remove(&pid), "agent {pid} left {thread} it was not on");
        }
    }

    // The agents' account of the jobs, in the order they happened.
    let text = std::fs::read_to_string(&record).expect("record file");
    let mut open: HashMap<(String, String), String> = HashMap::new();
    let mut in_progress: HashMap<String, usize> = HashMap::new();
    let mut most_jobs: BTreeMap<String, usize> = BTreeMap::new();
    let (mut overall, mut most_jobs_overall) = (0usize, 0usize);
    let (mut delivered, mut jobs) = (0, 0);
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["start", _at, pid, thread, job, ..] => {
                open.insert((pid.to_string(), job.to_string()), thread.to_string());
                let n = in_progress.entry(thread.to_string()).or_default();
                *n += 1;
                let most = most_jobs.entry(thread.to_string()).or_default();
                *most = (*most).max(*n);
                overall += 1;
                most_jobs_overall = most_jobs_overall.max(overall);
                let pid: u32 = pid.parse().unwrap();
                assert!(
                    assigned.get(*thread).is_some_and(|p| p.contains(&pid)),
                    "agent {pid} worked {thread} without being assigned it"
                );
            }
            ["end", _at, pid, _thread, job, ..] => {
                let thread = open
                    .remove(&(pid.to_string(), job.to_string()))
                    .expect("end without start");
                *in_progress.get_mut(&thread).unwrap() -= 1;
                overall -= 1;
                jobs += 1;
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
    assert_eq!(jobs, HOSTS * PER_HOST, "one job per message");
    assert!(open.is_empty(), "every job ended");
    Run {
        assigned,
        most_assigned,
        agents,
        most_jobs,
        most_jobs_overall,
    }
}

#[test]
fn maxthr_1_serialises_each_thread_and_maxring_bounds_the_agents() {
    let r = run(1, 3);
    assert_eq!(r.assigned.len(), HOSTS, "every thread was worked");
    // The first dispatch starts maxring agents for the first three
    // threads; the other two wait for one of them to be free. No agent
    // exits before the queue is empty, so no fourth is ever started.
    assert_eq!(
        r.agents.len(),
        3,
        "exactly maxring agents were started: {:?}",
        r.assigned
    );
    for (thread, most) in &r.most_assigned {
        assert_eq!(*most, 1, "{thread} had {most} agents at once");
    }
    for (thread, most) in &r.most_jobs {
        assert_eq!(*most, 1, "two jobs of {thread} in progress at once");
    }
    assert!(
        r.most_jobs_overall <= 3,
        "never more than maxring jobs at once"
    );
}

#[test]
fn maxthr_2_gives_every_thread_two_agents_never_three() {
    let r = run(2, 10);
    // Six messages wait in each of five threads: the first dispatch gives
    // each thread two agents (maxthr), ten in all (maxring).
    assert_eq!(r.agents.len(), 2 * HOSTS, "{:?}", r.assigned);
    for (thread, pids) in &r.assigned {
        assert_eq!(pids.len(), 2, "{thread}: {pids:?}");
    }
    for (thread, most) in &r.most_assigned {
        assert_eq!(*most, 2, "{thread} had {most} agents at once");
    }
    for (thread, most) in &r.most_jobs {
        assert!(*most <= 2, "{most} jobs of {thread} in progress at once");
    }
}
