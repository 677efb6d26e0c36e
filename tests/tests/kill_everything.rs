//! `kill -9` of every kind of skein process — skein-smtpd, skein-router,
//! skein-scheduler and both agents, skein-smtp and skein-local — at random
//! moments while SMTP clients keep submitting, under `skein start` (which
//! restarts the daemons; the scheduler restarts the agents). Half the
//! mail goes to a local Maildir, half through skein-smtp to an SMTP
//! server. After at least [`KILLS`] kills the load stops and the queue
//! drains: every message that got its `250` after the final `.` must have
//! been delivered (0 lost). Delivery is at-least-once: a kill between a
//! delivery and its record repeats it; the test counts and prints those.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use skein_integration_tests::smtp_server::{ScriptedServer, ServerOptions};
use skein_integration_tests::{Rng, TestEnv, bin, poll};

/// Kills wanted.
const KILLS: usize = 100;
/// SMTP clients submitting at once.
const CLIENTS: usize = 2;
/// Each client's pause after a message: load enough that every kill
/// lands on work in flight, little enough that the queue drains quickly
/// in a debug build (about 40 messages a second in all).
const PAUSE: Duration = Duration::from_millis(50);
/// The process kinds killed.
const KINDS: [&str; 5] = [
    "skein-smtpd",
    "skein-router",
    "skein-scheduler",
    "skein-smtp",
    "skein-local",
];

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The processes below `root` (not `root` itself): (pid, name).
fn descendants(root: i32) -> Vec<(i32, String)> {
    let mut parent = HashMap::new();
    let mut name = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the name may hold spaces.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().unwrap_or("");
        let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if state == "Z" {
            continue;
        }
        parent.insert(pid, ppid);
        name.insert(pid, head.split_once(" (").map_or("", |(_, n)| n).to_owned());
    }
    let below = |mut pid: i32| {
        for _ in 0..64 {
            match parent.get(&pid) {
                Some(&p) if p == root => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut out: Vec<(i32, String)> = parent
        .keys()
        .filter(|&&pid| below(pid))
        .map(|&pid| (pid, name[&pid].clone()))
        .collect();
    out.sort();
    out
}

/// Reads one reply; its code, or an error (EOF, garbage, timeout).
fn reply(r: &mut impl BufRead) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.len() < 4 {
            return Err(std::io::Error::other(format!("short reply {line:?}")));
        }
        if line.as_bytes()[3] == b' ' {
            return line[..3]
                .parse()
                .map_err(|_| std::io::Error::other(format!("bad reply {line:?}")));
        }
    }
}

fn expect(r: &mut impl BufRead, code: u16) -> std::io::Result<()> {
    match reply(r)? {
        c if c == code => Ok(()),
        c => Err(std::io::Error::other(format!(
            "{c} where {code} was expected"
        ))),
    }
}

/// One SMTP session of up to five messages; each message's number goes
/// into `acked` once its final `250` is read.
fn session(
    port: u16,
    next: &AtomicUsize,
    acked: &Mutex<Vec<usize>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    expect(&mut r, 220)?;
    w.write_all(b"EHLO load.example\r\n")?;
    expect(&mut r, 250)?;
    for _ in 0..5 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let seq = next.fetch_add(1, Ordering::SeqCst);
        let rcpt = if seq.is_multiple_of(2) {
            "joe@localhost".to_owned()
        } else {
            format!("r{seq}@sink.test")
        };
        w.write_all(
            format!("MAIL FROM:<load@example.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes(),
        )?;
        expect(&mut r, 250)?;
        expect(&mut r, 250)?;
        expect(&mut r, 354)?;
        w.write_all(
            format!("Subject: {seq}\r\nX-Seq: {seq}\r\n\r\nbody {seq}\r\n.\r\n").as_bytes(),
        )?;
        expect(&mut r, 250)?;
        acked.lock().expect("acked").push(seq);
        std::thread::sleep(PAUSE);
    }
    w.write_all(b"QUIT\r\n")?;
    Ok(())
}

#[test]
fn random_kill9_of_every_process_kind_under_smtp_load_loses_nothing_acknowledged() {
    let seed = Rng::seed_from_clock();
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let sink = ScriptedServer::start(ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    });
    let port = free_port();
    let env = TestEnv::new(&format!(
        "[smtpd]\nlisten = [\"127.0.0.1:{port}\"]\n\n\
         [scheduler]\nretries = [\"1s\"]\n\n\
         [[route]]\ndomain = \"sink.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n\n\
         [supervisor]\nrestart_delay = \"1s\"\nrestart_delay_max = \"2s\"\nhealthy_after = \"1s\"\n",
        sink.nexthop()
    ));
    env.make_users(&["joe".to_owned()]);
    let log = env.dir.path().join("start.log");
    let mut start = Command::new(bin("skein"))
        .arg("-c")
        .arg(&env.config)
        .arg("start")
        .env("SKEIN_LOG_FORMAT", "logfmt")
        .env_remove("SKEIN_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("skein start");
    let supervisor = start.id() as i32;
    assert!(
        poll(|| skein_integration_tests::listening(port)),
        "skein-smtpd never listened: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let next = AtomicUsize::new(1);
    let acked = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut kills: BTreeMap<&str, usize> = KINDS.iter().map(|k| (*k, 0)).collect();
    let mut failed_sessions = 0usize;
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                s.spawn(|| {
                    let mut failures = 0;
                    while !stop.load(Ordering::SeqCst) {
                        if session(port, &next, &acked, &stop).is_err() {
                            // The smtpd was killed, or is restarting.
                            failures += 1;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    failures
                })
            })
            .collect();
        let mut looked = 0;
        while kills.values().sum::<usize>() < KILLS && looked < 20 * KILLS {
            looked += 1;
            std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
            let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
            let victims: Vec<i32> = descendants(supervisor)
                .into_iter()
                .filter(|(_, name)| name == kind)
                .map(|(pid, _)| pid)
                .collect();
            // An agent may be idle and gone, a daemon in its restart delay:
            // pick again.
            let Some(&pid) = victims.get(rng.below(victims.len().max(1) as u64) as usize) else {
                continue;
            };
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                *kills.get_mut(kind).expect("kind") += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        failed_sessions = clients.into_iter().map(|c| c.join().expect("client")).sum();
    });
    let acked = acked.into_inner().expect("acked");
    println!("kills: {kills:?}");
    println!(
        "{} messages acknowledged, {} numbers handed out, {failed_sessions} sessions cut",
        acked.len(),
        next.load(Ordering::SeqCst) - 1
    );
    assert!(kills.values().sum::<usize>() >= KILLS, "{kills:?}");
    for (kind, n) in &kills {
        assert!(*n > 0, "{kind} was never killed: {kills:?}");
    }
    assert!(!acked.is_empty(), "the load got through between kills");

    // Everything acknowledged arrives, wherever it was when its process
    // died.
    let delivered = || {
        let mut count: HashMap<usize, usize> = HashMap::new();
        for m in sink.messages() {
            let text = String::from_utf8_lossy(&m.data).into_owned();
            *count
                .entry(skein_integration_tests::x_seq(&text))
                .or_default() += 1;
        }
        for m in env.maildir("joe") {
            let text = String::from_utf8_lossy(&m).into_owned();
            *count
                .entry(skein_integration_tests::x_seq(&text))
                .or_default() += 1;
        }
        count
    };
    let drained = poll(|| {
        let count = delivered();
        env.queue_empty() && acked.iter().all(|seq| count.contains_key(seq))
    });
    let count = delivered();
    let lost: Vec<usize> = acked
        .iter()
        .copied()
        .filter(|seq| !count.contains_key(seq))
        .collect();
    let twice = count.values().filter(|&&c| c > 1).count();
    let unacked_delivered = count.keys().filter(|seq| !acked.contains(seq)).count();
    println!(
        "{} acknowledged messages lost, {twice} delivered more than once, \
         {unacked_delivered} delivered without their 250 reaching the client",
        lost.len()
    );
    assert!(
        drained && lost.is_empty(),
        "lost {lost:?} (queue empty: {})\n{}",
        env.queue_empty(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        env.files("corrupt").is_empty(),
        "files set aside: {:?}",
        env.files("corrupt")
    );

    let stopped = Command::new(bin("skein"))
        .arg("-c")
        .arg(&env.config)
        .arg("stop")
        .env_remove("SKEIN_CONFIG")
        .output()
        .expect("skein stop");
    assert_eq!(stopped.status.code(), Some(0), "{stopped:?}");
    assert_eq!(start.wait().expect("wait").code(), Some(0));
}
