//! `wan-driver --agent PATH --config FILE --nexthop HOST:PORT --scenario
//! rcpts|messages|big --count N --size BYTES --dir DIR`: plays the
//! scheduler for one `skein-smtp` (socket on fd 3, as the scheduler starts
//! it), hands it the scenario's jobs as fast as its credit allows, and
//! prints `seconds=S delivered=D peak_rss_kib=K` — from the first job to
//! the last outcome, and the agent's peak resident memory.
//!
//! Scenarios: `rcpts`: one message to `count` recipients of one domain;
//! `messages`: `count` messages of `size` bytes, one recipient each;
//! `big`: one message of `size` bytes.

use std::process::{Command, Stdio};
use std::time::Instant;

use skein_agent::testing::{FakeScheduler, job, message_file, spawn_with_fd3};
use skein_proto::{JobId, SchedulerToAgent, Status, ThreadKey};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut opt = std::collections::HashMap::new();
    while let Some(k) = args.next() {
        let v = args.next().unwrap_or_else(|| panic!("{k} needs a value"));
        opt.insert(k.trim_start_matches("--").to_owned(), v);
    }
    let get = |k: &str| {
        opt.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("--{k} is required"))
    };
    let count: usize = get("count").parse().expect("--count N");
    let size: usize = get("size").parse().expect("--size BYTES");
    let scenario = get("scenario");
    let nexthop = get("nexthop");
    let dir = std::path::PathBuf::from(get("dir"));

    // The message: headers, then lines of text up to `size` bytes.
    let path = dir.join("message");
    let header = b"From: bench@wan.test\r\nTo: rcpt@wan.test\r\nSubject: wan benchmark\r\n\r\n";
    let line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n";
    let mut message = header.to_vec();
    while message.len() < size {
        message.extend_from_slice(line);
    }
    // A real spool message file: the agent verifies it before sending.
    let (offset, total) = message_file(&path, &message);
    drop(message);

    let mut command = Command::new(get("agent"));
    command
        .env("SKEIN_CONFIG", get("config"))
        .env("SKEIN_CHANNEL", "smtp")
        .env(
            "SKEIN_LOG",
            opt.get("log").cloned().unwrap_or_else(|| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let (mut child, socket) = spawn_with_fd3(&mut command).expect("start the agent");
    socket.set_nonblocking(true).expect("non-blocking");
    let stream = tokio::net::UnixStream::from_std(socket).expect("socket");
    let mut scheduler = FakeScheduler::accept(stream).await.expect("handshake");

    let thread = ThreadKey::new("smtp", nexthop.clone());
    let message = path.display().to_string();
    let jobs: Vec<skein_proto::Job> = match scenario.as_str() {
        "rcpts" => {
            let rcpts: Vec<String> = (0..count).map(|i| format!("rcpt{i}@wan.test")).collect();
            let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            vec![job(1, thread.clone(), &message, offset, total, &refs)]
        }
        "messages" | "big" => {
            let n = if scenario == "big" { 1 } else { count };
            (0..n)
                .map(|i| {
                    job(
                        i as u64 + 1,
                        thread.clone(),
                        &message,
                        offset,
                        total,
                        &["rcpt@wan.test"],
                    )
                })
                .collect()
        }
        other => panic!("unknown scenario {other}"),
    };
    let jobs: Vec<skein_proto::Job> = jobs
        .into_iter()
        .map(|mut j| {
            j.nexthop = Some(nexthop.clone());
            j
        })
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let start = Instant::now();
    for j in jobs {
        scheduler.send_job(j).await.expect("send job");
    }
    for id in &ids {
        scheduler.wait_done(*id).await.expect("job done");
    }
    let seconds = start.elapsed().as_secs_f64();
    let delivered = scheduler
        .outcomes
        .iter()
        .filter(|o| o.status == Status::Delivered)
        .count();
    let peak = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into());
    let _ = scheduler.send(&SchedulerToAgent::Shutdown).await;
    let _ = scheduler.wait_closed().await;
    let _ = child.wait();
    if let Some(o) = scheduler
        .outcomes
        .iter()
        .find(|o| o.status != Status::Delivered)
    {
        eprintln!("wan-driver: not delivered: {o:?}");
    }
    println!("seconds={seconds:.3} delivered={delivered} size={total} peak_rss_kib={peak}");
}
