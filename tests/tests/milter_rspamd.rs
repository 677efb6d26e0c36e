//! The smtpd with rspamd (Debian's) as a milter, in its proxy worker's
//! milter mode, started by the test as an ordinary user with its own
//! ports, directories and overrides of the packaged configuration (no
//! network: its DNS points at a closed loopback port). GTUBE is rejected
//! with rspamd's reply; a clean message is accepted and lands in ann's
//! Maildir with the `X-Spamd-Result` field rspamd adds (its
//! `milter_headers` module, switched on by the test).

mod smtpd_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use skein_integration_tests::KillOnDrop;
use smtpd_support::{Smtpd, free_port};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn send(smtpd: &Smtpd, subject: &str, body: &str) -> (u16, String) {
    let mut c = smtpd.client();
    c.send(b"EHLO client.example\r\n");
    c.expect(250, "");
    c.send(b"MAIL FROM:<joe@client.example>\r\nRCPT TO:<ann@localhost>\r\nDATA\r\n");
    c.expect(250, "2.1.0");
    c.expect(250, "2.1.5");
    c.expect(354, "");
    c.send(
        format!(
            "From: Joe <joe@client.example>\r\nTo: ann@localhost\r\nSubject: {subject}\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@client.example>\r\n\r\n{body}\r\n.\r\n"
        )
        .as_bytes(),
    );
    let reply = c.reply().expect("a reply");
    c.send(b"QUIT\r\n");
    (reply.code, reply.text)
}

#[test]
fn rspamd_rejects_gtube_and_tags_a_clean_message() {
    let proxy = free_port();
    let smtpd = Smtpd::start(
        &format!("milters = [\"inet:127.0.0.1:{proxy}\"]\nmilter_default_action = \"tempfail\""),
        "",
    );
    let dir = smtpd.env.dir.path().join("rspamd");
    std::fs::create_dir_all(dir.join("override.d")).expect("dir");
    let write = |name: &str, text: String| {
        std::fs::write(dir.join("override.d").join(name), text).expect("override")
    };
    write(
        "worker-proxy.inc",
        format!(
            "bind_socket = \"127.0.0.1:{proxy}\";\nmilter = yes;\ntimeout = 120s;\nupstream \"local\" {{\n  default = yes;\n  self_scan = yes;\n}}\ncount = 1;\n"
        ),
    );
    write(
        "worker-normal.inc",
        format!("bind_socket = \"127.0.0.1:{}\";\ncount = 1;\n", free_port()),
    );
    write(
        "worker-controller.inc",
        format!("bind_socket = \"127.0.0.1:{}\";\ncount = 1;\n", free_port()),
    );
    write(
        "logging.inc",
        format!(
            "type = \"file\";\nfilename = \"{}/rspamd.log\";\nlevel = \"info\";\n",
            dir.display()
        ),
    );
    write(
        "options.inc",
        "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 1s; retransmits = 1; }\n".into(),
    );
    write(
        "milter_headers.conf",
        "use = [\"x-spamd-result\"];\nskip_local = false;\nskip_authenticated = false;\n".into(),
    );
    let var = |name: &str| format!("--var={name}={}", dir.display());
    let _rspamd = KillOnDrop(
        Command::new("rspamd")
            .args(["-f", "-c", "/etc/rspamd/rspamd.conf"])
            .args([
                var("LOCAL_CONFDIR"),
                var("RUNDIR"),
                var("DBDIR"),
                var("LOGDIR"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rspamd (bench/ci-deps-milter.sh)"),
    );
    // rspamd compiles its regular expressions before it scans: until then
    // the proxy refuses or times out, and the smtpd tempfails. A clean
    // message is sent until one is accepted (bounded in count, a guard
    // against hanging, not a timing assertion).
    let mut accepted = None;
    for attempt in 0..120 {
        if std::net::TcpStream::connect(("127.0.0.1", proxy)).is_err() {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let (code, text) = send(
            &smtpd,
            &format!("clean{attempt}"),
            "Hello Ann, lunch at noon?",
        );
        if code == 250 {
            accepted = Some(attempt);
            break;
        }
        assert_eq!(code, 451, "{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let attempt = accepted.unwrap_or_else(|| {
        panic!(
            "rspamd never accepted a clean message:\n{}",
            std::fs::read_to_string(dir.join("rspamd.log")).unwrap_or_default()
        )
    });
    let (code, text) = send(&smtpd, "gtube", GTUBE);
    assert_eq!(code, 554, "{text}");
    assert!(
        text.starts_with("554 5.7.1 Gtube pattern"),
        "rspamd's own reply: {text}"
    );
    // Only the clean one is queued, and delivered with rspamd's field.
    let router = smtpd.env.route_all();
    let scheduler = smtpd.env.start("skein-scheduler");
    assert!(
        smtpd.env.wait_for(Duration::from_secs(120), || !smtpd
            .env
            .maildir("ann")
            .is_empty()),
        "{}\n{}",
        router.log_text(),
        scheduler.log_text()
    );
    let stored = smtpd.env.maildir("ann");
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]).into_owned();
    assert!(text.contains(&format!("Subject: clean{attempt}")), "{text}");
    assert!(text.contains("X-Spamd-Result: default: False"), "{text}");
}
