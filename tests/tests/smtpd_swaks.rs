//! swaks (Debian's `swaks`, see bench/ci-deps-smtpd.sh) against the real
//! server: a PIPELINING session, STARTTLS, and AUTH on the submission port
//! followed by a relayed message.

mod smtpd_support;

use std::process::Command;

/// Runs swaks with `args`; asserts that it succeeded and returns its
/// transcript.
fn swaks(args: &[&str]) -> String {
    let out = Command::new("swaks")
        .args(args)
        .output()
        .expect("swaks is not installed: run bench/ci-deps-smtpd.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "swaks {args:?} failed:\n{text}");
    text
}

#[test]
fn swaks_pipelining_starttls_auth() {
    let files = skein_integration_tests::tempdir();
    let (smtpd, submission, _) = smtpd_support::submission_server(files.path());
    let port = smtpd.port.to_string();
    let submission = submission.to_string();
    let common = [
        "--server",
        "127.0.0.1",
        "--from",
        "sender@swaks.example",
        "--helo",
        "swaks.example",
        "--timeout",
        "60",
    ];

    let pipelined = swaks(
        &[
            &common[..],
            &["--port", &port, "--to", "joe@localhost", "--pipeline"],
        ]
        .concat(),
    );
    assert!(pipelined.contains("250 2.0.0 Ok: queued as"), "{pipelined}");

    let tls = swaks(
        &[
            &common[..],
            &["--port", &port, "--to", "joe@localhost", "--tls"],
        ]
        .concat(),
    );
    assert!(tls.contains("TLS started"), "{tls}");
    assert!(tls.contains("250 2.0.0 Ok: queued as"), "{tls}");

    for mechanism in ["PLAIN", "LOGIN"] {
        let auth = swaks(
            &[
                &common[..],
                &[
                    "--port",
                    &submission,
                    "--to",
                    "far@elsewhere.example",
                    "--tls",
                    "--auth",
                    mechanism,
                    "--auth-user",
                    "alice",
                    "--auth-password",
                    "s3cret pass",
                ],
            ]
            .concat(),
        );
        assert!(auth.contains("235 2.7.0"), "{auth}");
        assert!(auth.contains("250 2.0.0 Ok: queued as"), "{auth}");
    }

    let mut protocols: Vec<String> = smtpd
        .incoming()
        .iter()
        .map(|f| {
            let (_, bytes) = skein_spool::read_message(f).expect("message");
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let with = text.find(" with ").expect("Received: … with") + 6;
            text[with..].split(' ').next().unwrap_or("").to_owned()
        })
        .collect();
    protocols.sort();
    assert_eq!(protocols, ["ESMTP", "ESMTPS", "ESMTPSA", "ESMTPSA"]);
}
