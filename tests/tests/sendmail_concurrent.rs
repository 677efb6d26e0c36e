//! Eight `skein sendmail` processes at once submit 1000 messages in all;
//! afterwards the spool's incoming state holds exactly 1000 distinct,
//! intact messages, each the one that was sent.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;

use skein_integration_tests::TestEnv;

const WORKERS: usize = 8;
const TOTAL: usize = 1000;

fn message(worker: usize, n: usize) -> String {
    // Varying sizes, a dot line, and a line starting with "From ".
    let filler = "lorem ipsum dolor sit amet ".repeat((worker * 37 + n * 13) % 200);
    format!(
        "Subject: test {worker}-{n}\nX-Seq: {worker}-{n}\n\nhello {worker}-{n}\n..dotted\nFrom here\n{filler}\n"
    )
}

fn stored_form(msg: &str) -> String {
    // What sendmail stores after the headers it adds: CRLF lines.
    msg.replace('\n', "\r\n")
}

#[test]
fn eight_concurrent_submitters_store_1000_intact_messages() {
    let env = TestEnv::new("");
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let env = &env;
            s.spawn(move || {
                for n in 0..TOTAL / WORKERS {
                    let mut child = env
                        .sendmail(&["-i", &format!("user{}@localhost", n % 50)])
                        .stdin(Stdio::piped())
                        .spawn()
                        .expect("spawn sendmail");
                    child
                        .stdin
                        .take()
                        .expect("stdin")
                        .write_all(message(w, n).as_bytes())
                        .expect("write message");
                    let status = child.wait().expect("wait");
                    assert!(status.success(), "sendmail {w}-{n} exited {status}");
                }
            });
        }
    });
    let elapsed = started.elapsed();
    println!(
        "submitted {TOTAL} messages with {WORKERS} concurrent sendmail streams in {:.2?} ({:.0} msg/s)",
        elapsed,
        TOTAL as f64 / elapsed.as_secs_f64()
    );

    let files = env.files("incoming");
    assert_eq!(files.len(), TOTAL, "messages in incoming/");
    let mut seen: HashMap<String, String> = HashMap::new();
    for path in &files {
        let (info, bytes) = skein_spool::read_message(path)
            .unwrap_or_else(|e| panic!("{} is not intact: {e}", path.display()));
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(info.id.as_str()),
            "file name is the queue id"
        );
        let text = String::from_utf8(bytes).expect("utf-8");
        let seq = skein_integration_tests::x_seq_text(&text).to_string();
        let (w, n) = seq.split_once('-').expect("w-n");
        let (w, n): (usize, usize) = (w.parse().unwrap(), n.parse().unwrap());
        let original = stored_form(&message(w, n));
        // The stored message is: added Received, the original header
        // fields, added From/Date/Message-ID/To, blank line, body.
        let (orig_head, orig_body) = original.split_once("\r\n\r\n").unwrap();
        assert!(text.starts_with("Received: by test.example (skein sendmail"));
        assert!(
            text.contains(&format!("{orig_head}\r\n")),
            "headers of {seq}"
        );
        assert!(
            text.ends_with(&format!("\r\n\r\n{orig_body}")),
            "body of {seq}"
        );
        assert_eq!(info.envelope.recipients.len(), 1);
        assert_eq!(
            info.envelope.recipients[0].address,
            format!("user{}@localhost", n % 50)
        );
        if let Some(prev) = seen.insert(seq.clone(), info.id.to_string()) {
            panic!("message {seq} stored twice: {prev} and {}", info.id);
        }
    }
    assert_eq!(seen.len(), TOTAL, "distinct messages");
    assert!(
        env.files("tmp").is_empty(),
        "no temporary files left behind"
    );
}
