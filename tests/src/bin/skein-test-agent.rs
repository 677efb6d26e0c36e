//! `skein-test-agent`: a transport agent for the scheduler's tests. It
//! delivers nothing anywhere; it records what it was given, and behaves
//! well or badly on request.
//!
//! **Job.** Built on `skein_agent::run_simple`, started by the scheduler
//! like any agent (a clause's `command`, socket on fd 3). For each job it
//! appends a `start` line to the record file, waits
//! `SKEIN_TEST_AGENT_DELAY_MS`, answers every recipient as its mode says,
//! appends a `delivered` line per delivered recipient and an `end` line.
//!
//! **Environment** (read once at start):
//!
//! | variable | meaning |
//! |---|---|
//! | `SKEIN_TEST_AGENT_RECORD` | file to append lines to (none: record nothing) |
//! | `SKEIN_TEST_AGENT_DELAY_MS` | time spent on each job, in milliseconds (default 0) |
//! | `SKEIN_TEST_AGENT_MODE` | `deliver` (default: `250 2.0.0`), `fail` (`550 5.1.1`), `defer` (`4.4.1`), `crash` (exit 1 on receiving a job, nothing reported), `hang` (never answer), `garbage` (write bytes that are no frame on fd 3, then keep reading until the scheduler hangs up), or `crash-once`, `hang-once`, `garbage-once` |
//! | `SKEIN_TEST_AGENT_STATE` | marker file for the `-once` modes, shared by every agent process of a test: the job that creates it (`O_EXCL`) is the first one any agent saw and gets the misbehaviour; every other job is delivered normally |
//! | `SKEIN_TEST_AGENT_AHEAD` | jobs asked for ahead (default 2); they are still worked on one at a time |
//! | `SKEIN_CHANNEL` | the channel announced (default `test`) |
//!
//! **Record lines**, one `write(2)` each on an `O_APPEND` file so that
//! concurrent agents never interleave within a line:
//!
//! ```text
//! start <unix_micros> <pid> <channel/host> <job_id> <queue_id> <number of recipients>
//! delivered <queue_id> <address>
//! end <unix_micros> <pid> <channel/host> <job_id>
//! ```
//!
//! `end` is written before the job's outcomes are sent, so a job's
//! `start`–`end` interval lies inside the time the scheduler considers
//! it in progress. `crash`, `hang` and `garbage` write `start` only.
//!
//! **Trusts** the scheduler; writes only the record and state files.
//! **On failure** of its own set-up (an unknown mode, a `-once` mode
//! without a state file, an unwritable record file) it exits 2 before
//! connecting.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skein_agent::{Deliver, Delivery, run_simple};
use skein_proto::{AGENT_SOCKET_FD, EnhancedCode, Job, SmtpReply};

const PROGRAM: &str = "skein-test-agent";
const DEFAULT_CHANNEL: &str = "test";
const DEFAULT_AHEAD: u32 = 2;
/// Exit status for a test set-up mistake.
const EXIT_SETUP: u8 = 2;

fn main() -> ExitCode {
    let settings = match Settings::from_env(|name| std::env::var(name).ok()) {
        Ok(settings) => settings,
        Err(problem) => {
            eprintln!("{PROGRAM}: {problem}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let ahead = settings.ahead;
    run_simple(DEFAULT_CHANNEL, PROGRAM, ahead, TestAgent::new(settings))
}

/// What the agent was asked to do with jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    Fail,
    Defer,
    Crash,
    Hang,
    Garbage,
}

impl Mode {
    /// The mode and whether it applies only to the first job ever seen.
    fn parse(s: &str) -> Option<(Mode, bool)> {
        let (name, once) = match s.strip_suffix("-once") {
            Some(name) => (name, true),
            None => (s, false),
        };
        let mode = match name {
            "deliver" if !once => Mode::Deliver,
            "fail" if !once => Mode::Fail,
            "defer" if !once => Mode::Defer,
            "crash" => Mode::Crash,
            "hang" => Mode::Hang,
            "garbage" => Mode::Garbage,
            _ => return None,
        };
        Some((mode, once))
    }
}

#[derive(Debug)]
struct Settings {
    record: Option<File>,
    delay: Duration,
    mode: Mode,
    once: bool,
    state: Option<PathBuf>,
    ahead: u32,
    /// Where garbage goes: the scheduler's socket.
    socket_fd: RawFd,
}

impl Settings {
    fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());
        let record = match get("SKEIN_TEST_AGENT_RECORD") {
            Some(path) => Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .map_err(|e| format!("cannot open the record file {path}: {e}"))?,
            ),
            None => None,
        };
        let delay = match get("SKEIN_TEST_AGENT_DELAY_MS") {
            Some(ms) => Duration::from_millis(
                ms.parse()
                    .map_err(|_| format!("SKEIN_TEST_AGENT_DELAY_MS: not a number: {ms:?}"))?,
            ),
            None => Duration::ZERO,
        };
        let (mode, once) = match get("SKEIN_TEST_AGENT_MODE") {
            Some(mode) => Mode::parse(&mode)
                .ok_or_else(|| format!("SKEIN_TEST_AGENT_MODE: unknown mode {mode:?}"))?,
            None => (Mode::Deliver, false),
        };
        let state = get("SKEIN_TEST_AGENT_STATE").map(PathBuf::from);
        if once && state.is_none() {
            return Err("a -once mode needs SKEIN_TEST_AGENT_STATE".into());
        }
        let ahead =
            match get("SKEIN_TEST_AGENT_AHEAD") {
                Some(n) => n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("SKEIN_TEST_AGENT_AHEAD: not a positive number: {n:?}")
                })?,
                None => DEFAULT_AHEAD,
            };
        Ok(Settings {
            record,
            delay,
            mode,
            once,
            state,
            ahead,
            socket_fd: AGENT_SOCKET_FD,
        })
    }
}

/// What to do with one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Answer(Mode),
    Crash,
    Hang,
    Garbage,
}

struct TestAgent {
    settings: Settings,
}

impl TestAgent {
    fn new(settings: Settings) -> TestAgent {
        TestAgent { settings }
    }

    /// The mode, unless it is a `-once` one and another job was first.
    fn decide(&self) -> io::Result<Behaviour> {
        let s = &self.settings;
        if s.once {
            let Some(state) = &s.state else {
                return Ok(Behaviour::Answer(Mode::Deliver));
            };
            match OpenOptions::new().write(true).create_new(true).open(state) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Ok(Behaviour::Answer(Mode::Deliver));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(match s.mode {
            Mode::Crash => Behaviour::Crash,
            Mode::Hang => Behaviour::Hang,
            Mode::Garbage => Behaviour::Garbage,
            answer => Behaviour::Answer(answer),
        })
    }

    /// Appends one line with a single `write(2)`.
    fn record(&self, line: &str) {
        if let Some(file) = &self.settings.record {
            let mut file: &File = file;
            // A failed record write would make the test's count wrong, and
            // the test must notice: exit rather than carry on silently.
            if let Err(e) = file.write_all(line.as_bytes()) {
                eprintln!("{PROGRAM}: cannot write the record file: {e}");
                std::process::exit(EXIT_SETUP.into());
            }
        }
    }

    /// Bytes that cannot be mistaken for a frame: the first length byte
    /// 0xff announces over 4 GiB, above any frame maximum, so the
    /// scheduler refuses them at once instead of waiting for a payload.
    fn write_garbage(&self) {
        let mut bytes = [0u8; 64];
        let mut x = micros() | 1;
        for b in &mut bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        bytes[0] = 0xff;
        // SAFETY: writes from a live buffer of the given length to a
        // descriptor number; a bad descriptor is only an error return.
        let n = unsafe { libc::write(self.settings.socket_fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            eprintln!(
                "{PROGRAM}: writing garbage failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Deliver for TestAgent {
    async fn deliver(&self, job: &Job) -> Vec<Delivery> {
        let pid = std::process::id();
        self.record(&format!(
            "start {} {pid} {} {} {} {}\n",
            micros(),
            job.thread,
            job.id.0,
            job.queue_id,
            job.recipients.len()
        ));
        let behaviour = match self.decide() {
            Ok(behaviour) => behaviour,
            Err(e) => {
                eprintln!("{PROGRAM}: cannot create the state file: {e}");
                std::process::exit(EXIT_SETUP.into());
            }
        };
        let mode = match behaviour {
            Behaviour::Crash => std::process::exit(1),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Garbage => {
                self.write_garbage();
                // Keep the connection open and keep reading (the job loop
                // does) until the scheduler hangs up on us.
                std::future::pending().await
            }
            Behaviour::Answer(mode) => mode,
        };
        if !self.settings.delay.is_zero() {
            tokio::time::sleep(self.settings.delay).await;
        }
        let mut deliveries = Vec::with_capacity(job.recipients.len());
        for recipient in &job.recipients {
            let delivery = answer(mode);
            if delivery.is_delivered() {
                self.record(&format!(
                    "delivered {} {}\n",
                    job.queue_id, recipient.address
                ));
            }
            deliveries.push(delivery);
        }
        self.record(&format!(
            "end {} {pid} {} {}\n",
            micros(),
            job.thread,
            job.id.0
        ));
        deliveries
    }
}

fn answer(mode: Mode) -> Delivery {
    let code = |s: &str| s.parse::<EnhancedCode>().unwrap_or(EnhancedCode::TRANSIENT);
    match mode {
        Mode::Fail => {
            let reply = SmtpReply {
                code: 550,
                enhanced: Some(EnhancedCode::BAD_MAILBOX),
                text: "test agent: no such user".into(),
            };
            Delivery::from_reply(reply)
        }
        Mode::Defer => Delivery::deferred(code("4.4.1"), "test agent: deferred on request", None),
        _ => Delivery::delivered(
            SmtpReply {
                code: 250,
                enhanced: Some(EnhancedCode::SUCCESS),
                text: "test agent: ok".into(),
            },
            "test agent: delivered",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::fd::AsRawFd;

    use skein_agent::testing::{FakeScheduler, job};
    use skein_agent::{AgentConnection, serve};
    use skein_proto::{ProtoError, SchedulerToAgent, Status, ThreadKey};
    use tokio::net::UnixStream;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn modes_parse() {
        let table = [
            ("deliver", Some((Mode::Deliver, false))),
            ("fail", Some((Mode::Fail, false))),
            ("defer", Some((Mode::Defer, false))),
            ("crash", Some((Mode::Crash, false))),
            ("hang", Some((Mode::Hang, false))),
            ("garbage", Some((Mode::Garbage, false))),
            ("crash-once", Some((Mode::Crash, true))),
            ("hang-once", Some((Mode::Hang, true))),
            ("garbage-once", Some((Mode::Garbage, true))),
            ("deliver-once", None),
            ("explode", None),
            ("", None),
        ];
        for (s, want) in table {
            assert_eq!(Mode::parse(s), want, "{s:?}");
        }
    }

    #[test]
    fn settings_from_the_environment() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.mode, Mode::Deliver);
        assert_eq!(s.delay, Duration::ZERO);
        assert_eq!(s.ahead, DEFAULT_AHEAD);
        assert!(s.record.is_none());
        let s = settings(&[
            ("SKEIN_TEST_AGENT_DELAY_MS", "25"),
            ("SKEIN_TEST_AGENT_MODE", "defer"),
            ("SKEIN_TEST_AGENT_AHEAD", "5"),
        ])
        .expect("set");
        assert_eq!(
            (s.delay, s.mode, s.ahead),
            (Duration::from_millis(25), Mode::Defer, 5)
        );
        for bad in [
            &[("SKEIN_TEST_AGENT_MODE", "nope")][..],
            &[("SKEIN_TEST_AGENT_MODE", "crash-once")],
            &[("SKEIN_TEST_AGENT_DELAY_MS", "soon")],
            &[("SKEIN_TEST_AGENT_AHEAD", "0")],
            &[("SKEIN_TEST_AGENT_RECORD", "/nonexistent/dir/record")],
        ] {
            assert!(settings(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn once_modes_misbehave_for_the_first_job_of_all_processes_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let vars = [
            ("SKEIN_TEST_AGENT_MODE", "crash-once"),
            ("SKEIN_TEST_AGENT_STATE", state.to_str().expect("utf-8")),
        ];
        let first = TestAgent::new(settings(&vars).expect("settings"));
        // Another agent process of the same test shares the state file.
        let second = TestAgent::new(settings(&vars).expect("settings"));
        assert_eq!(first.decide().expect("decide"), Behaviour::Crash);
        assert_eq!(
            second.decide().expect("decide"),
            Behaviour::Answer(Mode::Deliver)
        );
        assert_eq!(
            first.decide().expect("decide"),
            Behaviour::Answer(Mode::Deliver)
        );
        let always = TestAgent::new(settings(&[("SKEIN_TEST_AGENT_MODE", "hang")]).expect("s"));
        assert_eq!(always.decide().expect("decide"), Behaviour::Hang);
        assert_eq!(always.decide().expect("decide"), Behaviour::Hang);
    }

    /// Runs a test agent with `vars` against a fake scheduler that sends
    /// `jobs`; returns the outcomes per job and the record file.
    async fn run_jobs(vars: &[(&str, &str)], jobs: Vec<Job>) -> (Vec<Vec<Status>>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = dir.path().join("record");
        let mut vars = vars.to_vec();
        let record_path = record.to_str().expect("utf-8");
        vars.push(("SKEIN_TEST_AGENT_RECORD", record_path));
        let agent = TestAgent::new(settings(&vars).expect("settings"));
        let (a, b) = UnixStream::pair().expect("socketpair");
        let (connection, scheduler) = tokio::join!(
            AgentConnection::from_stream(a, "test", PROGRAM),
            FakeScheduler::accept(b)
        );
        let (connection, mut scheduler) = (
            connection.expect("agent handshake"),
            scheduler.expect("scheduler handshake"),
        );
        let script = async {
            let mut all = Vec::new();
            for job in jobs {
                let outcomes = scheduler.deliver(job).await.expect("job");
                all.push(outcomes.iter().map(|o| o.status).collect());
            }
            scheduler
                .send(&SchedulerToAgent::Shutdown)
                .await
                .expect("shutdown");
            scheduler.wait_closed().await.expect("closed");
            all
        };
        let never = std::future::pending::<()>();
        let (served, outcomes) = tokio::join!(serve(connection, 2, &agent, never), script);
        served.expect("serve");
        let record = std::fs::read_to_string(&record).expect("record");
        (outcomes, record)
    }

    /// The message file of every test job (the library verifies it before
    /// the agent's handler runs); its directory lives as long as the test
    /// process.
    static MESSAGE: std::sync::LazyLock<(tempfile::TempDir, String, u64, u64)> =
        std::sync::LazyLock::new(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("m");
            let (offset, size) =
                skein_agent::testing::message_file(&path, b"Subject: t\r\n\r\nbody\r\n");
            let path = path.display().to_string();
            (dir, path, offset, size)
        });

    fn two_jobs() -> Vec<Job> {
        let (_, path, offset, size) = &*MESSAGE;
        let mut a = job(
            7,
            ThreadKey::new("test", "a.example"),
            path,
            *offset,
            *size,
            &["x@a.example", "y@a.example"],
        );
        a.queue_id = "Q1".into();
        let mut b = job(
            8,
            ThreadKey::new("test", "b.example"),
            path,
            *offset,
            *size,
            &["z@b.example"],
        );
        b.queue_id = "Q2".into();
        vec![a, b]
    }

    #[tokio::test]
    async fn deliver_mode_records_every_job_and_recipient() {
        let (outcomes, record) = run_jobs(&[], two_jobs()).await;
        assert_eq!(
            outcomes,
            [
                vec![Status::Delivered, Status::Delivered],
                vec![Status::Delivered]
            ]
        );
        let pid = std::process::id().to_string();
        let lines: Vec<Vec<&str>> = record.lines().map(|l| l.split(' ').collect()).collect();
        let shapes: Vec<String> = lines
            .iter()
            .map(|f| match f[0] {
                "start" => {
                    assert_eq!(f[2], pid);
                    assert!(f[1].parse::<u64>().is_ok(), "{f:?}");
                    format!("start {} {} {} {}", f[3], f[4], f[5], f[6])
                }
                "end" => {
                    assert_eq!(f[2], pid);
                    format!("end {} {}", f[3], f[4])
                }
                _ => f.join(" "),
            })
            .collect();
        assert_eq!(
            shapes,
            [
                "start test/a.example 7 Q1 2",
                "delivered Q1 x@a.example",
                "delivered Q1 y@a.example",
                "end test/a.example 7",
                "start test/b.example 8 Q2 1",
                "delivered Q2 z@b.example",
                "end test/b.example 8",
            ]
        );
        let start: u64 = lines[0][1].parse().expect("micros");
        let end: u64 = lines[3][1].parse().expect("micros");
        assert!(start <= end);
    }

    #[tokio::test]
    async fn fail_and_defer_modes() {
        let (outcomes, record) = run_jobs(&[("SKEIN_TEST_AGENT_MODE", "fail")], two_jobs()).await;
        assert_eq!(outcomes[0], [Status::Failed, Status::Failed]);
        assert!(!record.contains("delivered"), "{record}");
        let (outcomes, _) = run_jobs(&[("SKEIN_TEST_AGENT_MODE", "defer")], two_jobs()).await;
        let deferred = Status::Deferred {
            retry_after_secs: None,
        };
        assert_eq!(outcomes[1], [deferred]);
    }

    #[test]
    fn answers_carry_the_promised_codes() {
        let table = [
            (Mode::Deliver, "2.0.0"),
            (Mode::Fail, "5.1.1"),
            (Mode::Defer, "4.4.1"),
        ];
        for (mode, code) in table {
            assert_eq!(answer(mode).enhanced.to_string(), code, "{mode:?}");
        }
    }

    #[tokio::test]
    async fn garbage_mode_breaks_the_framing() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let mut s = settings(&[("SKEIN_TEST_AGENT_MODE", "garbage")]).expect("settings");
        s.socket_fd = a.as_raw_fd();
        let agent = TestAgent::new(s);
        let (connection, scheduler) = tokio::join!(
            AgentConnection::from_stream(a, "test", PROGRAM),
            FakeScheduler::accept(b)
        );
        let (connection, mut scheduler) = (
            connection.expect("agent handshake"),
            scheduler.expect("scheduler handshake"),
        );
        let script = async {
            scheduler.send_job(two_jobs().remove(0)).await.expect("job");
            let err = loop {
                match scheduler.recv().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("clean end of stream instead of garbage"),
                    Err(e) => break e,
                }
            };
            // The scheduler hangs up on garbage; the agent must then stop.
            drop(scheduler);
            err
        };
        let never = std::future::pending::<()>();
        let (served, err) = tokio::join!(serve(connection, 1, &agent, never), script);
        assert!(matches!(err, ProtoError::Oversized { .. }), "{err}");
        served.expect("the agent stops when the scheduler hangs up");
    }
}
