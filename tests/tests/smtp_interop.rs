//! Interop: `skein-smtp` against two SMTP servers nobody here wrote —
//! Postfix's `smtp-sink` (PIPELINING; it has no CHUNKING) and Python's
//! aiosmtpd (lock-step). Messages must arrive intact after dot-unstuffing:
//! byte for byte with aiosmtpd, which keeps CRLF; with smtp-sink, which
//! writes its dumps with LF line ends, byte for byte after that one
//! conversion.
//!
//! The peers come from Debian's archive (`bench/ci-deps.sh` installs
//! them); a missing peer fails the test with that instruction rather than
//! passing it silently.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skein_integration_tests::smtp_server::{ServerOptions, SmtpTest, shutdown};
use skein_proto::{JobId, Status};

const LIMIT: Duration = Duration::from_secs(120);

/// The messages sent to each peer: dot lines, an empty body, 8-bit text,
/// a long line, and a large body.
fn messages() -> Vec<Vec<u8>> {
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..6000 {
        big.extend_from_slice(
            format!("{i:05} .. the quick brown fox {}\r\n", ".".repeat(i % 7)).as_bytes(),
        );
    }
    vec![
        b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n".to_vec(),
        b"Subject: empty body\r\n\r\n".to_vec(),
        "Subject: 8bit\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln\r\n"
            .as_bytes()
            .to_vec(),
        [b"Subject: long\r\n\r\n".as_slice(), &[b'y'; 990], b"\r\n"].concat(),
        big,
    ]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_listening(port: u16, child: &mut Child) {
    let end = Instant::now() + LIMIT;
    while !skein_integration_tests::listening(port) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the peer exited before listening: {status}");
        }
        assert!(Instant::now() < end, "the peer never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn require(program: &str) -> PathBuf {
    let path = PathBuf::from(program);
    assert!(
        path.exists(),
        "{program} is missing: install the interop peers with `sh bench/ci-deps.sh` (as root)"
    );
    path
}

/// Sends every message (job n = message n) through the agent to the
/// server at `port` and checks each was delivered.
async fn send_all(test: &SmtpTest, port: u16) {
    let (mut child, mut scheduler) = test.agent().await;
    let hop = format!("127.0.0.1:{port}");
    let all = messages();
    for (n, m) in all.iter().enumerate() {
        let file = test.message(&format!("m{n}"), m);
        let mut job = test.job(n as u64 + 1, &file, &[&format!("rcpt{n}@interop.test")]);
        job.nexthop = Some(hop.clone());
        job.thread = skein_proto::ThreadKey::new("smtp", hop.clone());
        if n == 2 {
            job.body = skein_proto::BodyType::EightBitMime;
        }
        scheduler.send_job(job).await.expect("send job");
    }
    for n in 1..=all.len() as u64 {
        let outcomes = tokio::time::timeout(LIMIT, scheduler.wait_done(JobId(n)))
            .await
            .unwrap_or_else(|_| panic!("job {n} not done:\n{}", test.agent_log()))
            .expect("job done");
        for o in outcomes {
            assert_eq!(o.status, Status::Delivered, "{o:?}\n{}", test.agent_log());
        }
    }
    assert!(
        shutdown(&mut child, &mut scheduler, LIMIT).await,
        "{}",
        test.agent_log()
    );
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml") || p.is_file())
        .map(|p| std::fs::read(p).expect("read a captured message"))
        .collect()
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_smtp_sink_with_pipelining() {
    let sink = require("/usr/sbin/smtp-sink");
    let test = SmtpTest::new(ServerOptions::default(), "", "");
    let dumps = test.dir.path().join("dumps");
    std::fs::create_dir(&dumps).expect("dump directory");
    let port = free_port();
    let mut command = Command::new(sink);
    // As root it must be told whom to become; the dumps are then written
    // as that user.
    if nix::unistd::Uid::effective().is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dumps, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        command.args(["-u", "nobody"]);
    }
    command
        .arg("-d")
        .arg(format!("{}/%H%M%S.", dumps.display()))
        .args(["-h", "sink.test", &format!("127.0.0.1:{port}"), "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut peer = Peer(command.spawn().expect("start smtp-sink"));
    wait_listening(port, &mut peer.0);

    send_all(&test, port).await;
    assert!(
        test.agent_log().contains("pipelining=true"),
        "{}",
        test.agent_log()
    );

    let captured = files_in(&dumps);
    assert_eq!(captured.len(), messages().len(), "one dump per message");
    for m in messages() {
        // smtp-sink's dump: its X-* records and a three-line Received
        // header, then the message with LF line ends, then an empty line.
        let want: Vec<u8> = String::from_utf8_lossy(&m)
            .replace("\r\n", "\n")
            .into_bytes();
        let found = captured.iter().any(|dump| {
            let text = String::from_utf8_lossy(dump);
            let Some(by) = text.find("\tby sink.test (smtp-sink)") else {
                return false;
            };
            let after_by = &dump[by..];
            let Some(stamp_end) = after_by
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .nth(1)
                .map(|(i, _)| i + 1)
            else {
                return false;
            };
            let body = &after_by[stamp_end..];
            body == [want.as_slice(), b"\n"].concat().as_slice() || body == want.as_slice()
        });
        assert!(
            found,
            "message not intact: {:?}",
            String::from_utf8_lossy(&m[..m.len().min(60)])
        );
    }
}

/// An aiosmtpd server that saves each message's content exactly as
/// received (after dot-unstuffing) into a directory.
const AIOSMTPD_SERVER: &str = r#"
import os, sys, time
from aiosmtpd.controller import Controller

port, out = int(sys.argv[1]), sys.argv[2]

class Save:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        with open(os.path.join(out, "%05d.tmp" % n), "wb") as f:
            f.write(envelope.original_content)
        os.rename(os.path.join(out, "%05d.tmp" % n), os.path.join(out, "%05d.eml" % n))
        return "250 2.0.0 saved"

controller = Controller(Save(), hostname="127.0.0.1", port=port, decode_data=False)
controller.start()
while True:
    time.sleep(3600)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_aiosmtpd_in_lock_step() {
    let python = require("/usr/bin/python3");
    let test = SmtpTest::new(ServerOptions::default(), "", "");
    let script = test.dir.path().join("aiosmtpd_server.py");
    std::fs::write(&script, AIOSMTPD_SERVER).expect("write the server script");
    let out = test.dir.path().join("received");
    std::fs::create_dir(&out).expect("output directory");
    let port = free_port();
    let mut peer = Peer(
        Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd"),
    );
    if let Ok(Some(status)) = peer.0.try_wait() {
        panic!(
            "aiosmtpd exited at once ({status}): is python3-aiosmtpd installed? see bench/ci-deps.sh"
        );
    }
    wait_listening(port, &mut peer.0);

    send_all(&test, port).await;

    let captured = files_in(&out);
    let want = messages();
    assert_eq!(captured.len(), want.len(), "one file per message");
    for m in &want {
        assert!(
            captured.contains(m),
            "message not intact: {:?}",
            String::from_utf8_lossy(&m[..m.len().min(60)])
        );
    }
}
