//! DKIM signing (issue 14, part 1) against an independent verifier:
//! dkimpy (Debian's python3-dkim, installed by bench/ci-deps-dkim.sh),
//! handed the TXT record `skein dkim keygen` printed in place of a DNS
//! lookup. Keys of both algorithms are made by the real `skein dkim
//! keygen`; messages go through sendmail, the router (which signs) and
//! the SMTP agent to a scripted server. Each delivered message verifies;
//! a tampered copy does not; a message deferred once is sent with the same
//! signature at its retry (signed once, when it was queued); an 8-bit
//! message reaches a server without 8BITMIME converted to 7 bits and still
//! verifies (converted before it was signed); a local delivery is not
//! signed. A key that does not load stops `config check`
//! and the router with file, line and key.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skein_integration_tests::smtp_server::{Ctx, Response, ScriptedServer, ServerOptions, Step};
use skein_integration_tests::{TestEnv, bin, dkim_keygen as keygen, dkimpy};

fn header_field<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let start = message
        .find(&format!("{name}:"))
        .filter(|&i| i == 0 || message[..i].ends_with('\n'))?;
    let rest = &message[start..];
    let mut end = 0;
    for line in rest.split_inclusive('\n') {
        if end > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        end += line.len();
    }
    Some(&rest[..end])
}

#[test]
fn signed_mail_verifies_with_dkimpy_for_both_algorithms() {
    // The first transaction's data is refused 451: that message is sent
    // again at its retry, which must carry the same signature.
    let refused_once = Arc::new(AtomicBool::new(false));
    // Without 8BITMIME: the 8-bit message must arrive 7-bit, and still
    // verify (the router converts it before it signs).
    let server = ScriptedServer::start(ServerOptions {
        pipelining: true,
        eightbitmime: false,
        script: Arc::new(move |_: &Ctx, step: &Step<'_>| match step {
            Step::DataEnd(_) if !refused_once.swap(true, Ordering::SeqCst) => {
                Response::Reply("451 4.3.0 try again".into())
            }
            _ => Response::Default,
        }),
        ..ServerOptions::default()
    });
    let env = TestEnv::new(&format!(
        "[scheduler]\nretries = [\"1s\"]\n\n\
         [router]\nlocal_domains = [\"test.example\"]\n\n\
         [[route]]\ndomain = \"remote.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n",
        server.nexthop()
    ));
    let (rsa_key, rsa_record) = keygen(&env, "rsa.example", "r2026", "rsa-sha256");
    let (ed_key, ed_record) = keygen(&env, "ed.example", "e2026", "ed25519-sha256");
    let dkim = format!(
        "\n[[dkim]]\ndomain = \"rsa.example\"\nselector = \"r2026\"\nkey = \"{rsa_key}\"\nalgorithm = \"rsa-sha256\"\n\n\
         [[dkim]]\ndomain = \"ed.example\"\nselector = \"e2026\"\nkey = \"{ed_key}\"\nalgorithm = \"ed25519-sha256\"\n"
    );
    let text = std::fs::read_to_string(&env.config).expect("config") + &dkim;
    std::fs::write(&env.config, text).expect("config");
    let check = env
        .skein()
        .args(["config", "check"])
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    env.make_users(&["ann".to_owned()]);
    let body = "Hello,\r\n\r\nsome   text  with  spaces \r\nand a line.\r\n";
    for (from, to) in [
        ("joe@rsa.example", "x@remote.test"),
        ("eve@ed.example", "y@remote.test"),
        ("eve@ed.example", "ann@test.example"),
    ] {
        env.submit(
            &["-f", from, to],
            format!(
                "From: Someone <{from}>\nTo: <{to}>\nSubject: signed by {from}\nDate: Fri, 04 Dec 2026 10:00:00 +0000\nMessage-ID: <{from}.{to}@test>\n\n{body}"
            )
            .replace("\r\n", "\n")
            .as_bytes(),
        );
    }
    let eight_bit = "From: Joe <joe@rsa.example>\nTo: <z@remote.test>\nSubject: eight bits\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus Köln, très bien.\n";
    env.submit(
        &["-f", "joe@rsa.example", "z@remote.test"],
        eight_bit.as_bytes(),
    );
    let router = env.route_all();
    assert!(
        router
            .log_text()
            .contains("8-bit message converted to 7 bits before signing"),
        "{}",
        router.log_text()
    );
    assert!(
        router
            .log_text()
            .contains("d=rsa.example s=r2026 a=rsa-sha256"),
        "{}",
        router.log_text()
    );
    let scheduler = env.start("skein-scheduler");
    assert!(
        server.wait_for(Duration::from_secs(120), |_, m| m.len() >= 3),
        "{}",
        scheduler.log_text()
    );
    assert!(
        env.wait_for(Duration::from_secs(60), || !env.maildir("ann").is_empty()),
        "{}",
        scheduler.log_text()
    );
    let records = [rsa_record, ed_record];
    let messages = server.messages();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for m in &messages {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        assert!(
            text.starts_with("DKIM-Signature: "),
            "signed at the top:\n{text}"
        );
        assert_eq!(dkimpy(&m.data, &records), "pass", "{text}");
        assert!(
            m.data.is_ascii(),
            "7-bit to a server without 8BITMIME: {text}"
        );
        let algorithm = if !m.rcpt_to.join(" ").contains("y@remote.test") {
            "a=rsa-sha256"
        } else {
            "a=ed25519-sha256"
        };
        let field = header_field(&text, "DKIM-Signature").expect("field");
        assert!(field.contains(algorithm), "{field}");
        // A tampered copy fails: one body byte changed, or a signed header.
        let body_end = text.rfind("\r\n").expect("a line end");
        let tampered = format!("{}!{}", &text[..body_end], &text[body_end..]);
        assert_eq!(dkimpy(tampered.as_bytes(), &records), "fail");
        let tampered = text.replacen("Subject: ", "Subject: Re: ", 1);
        assert_eq!(dkimpy(tampered.as_bytes(), &records), "fail");
        // Relaxed canonicalization: whitespace changed in transit passes.
        if text.contains("some   text") {
            let rewrapped = text.replace("some   text  with  spaces ", "some text with spaces");
            assert_eq!(dkimpy(rewrapped.as_bytes(), &records), "pass");
        }
    }
    // The converted one: quoted-printable, and the same text decoded.
    let converted = messages
        .iter()
        .find(|m| m.rcpt_to.join(" ").contains("z@remote.test"))
        .expect("the 8-bit message");
    let text = String::from_utf8_lossy(&converted.data).into_owned();
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable"),
        "{text}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&converted.data)
        .expect("parses");
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Grüße aus Köln, très bien.\r\n")
    );
    // The refused first attempt carried the signature the retry carried.
    let connections = server.connections();
    let first = String::from_utf8_lossy(&connections[0].bytes()).into_owned();
    let refused = header_field(&first, "DKIM-Signature").expect("signed in the first attempt");
    let delivered: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    assert!(
        delivered
            .iter()
            .any(|d| header_field(d, "DKIM-Signature") == Some(refused)),
        "the retry sent another signature than the first attempt:\n{refused}\n{delivered:?}"
    );
    // Local delivery only: not signed.
    let local = String::from_utf8_lossy(&env.maildir("ann")[0]).into_owned();
    assert!(!local.contains("DKIM-Signature"), "{local}");
    drop(scheduler);
    drop(router);
}

#[test]
fn a_key_that_does_not_load_stops_config_check_and_the_router() {
    let env = TestEnv::new("");
    let bad = env.dir.path().join("bad.key");
    std::fs::write(&bad, "this is not a key\n").expect("write");
    let (ed_key, _) = keygen(&env, "ed.example", "e1", "ed25519-sha256");
    let cases = [
        (
            bad.display().to_string(),
            "rsa-sha256",
            "not a PEM private key",
        ),
        (ed_key, "rsa-sha256", "not a usable RSA key"),
        (
            env.dir.path().join("missing.key").display().to_string(),
            "rsa-sha256",
            "cannot read",
        ),
    ];
    let base = std::fs::read_to_string(&env.config).expect("config");
    for (key, algorithm, want) in cases {
        let text = format!(
            "{base}\n[[dkim]]\ndomain = \"ed.example\"\nselector = \"e1\"\nkey = \"{key}\"\nalgorithm = \"{algorithm}\"\n"
        );
        std::fs::write(&env.config, &text).expect("config");
        let line = text
            .lines()
            .position(|l| l.starts_with("key = "))
            .expect("key line")
            + 1;
        let prefix = format!("{}:{line}: dkim[0].key: {key}", env.config.display());
        let check = env
            .skein()
            .args(["config", "check"])
            .output()
            .expect("check");
        assert_eq!(check.status.code(), Some(78), "{want}");
        let err = String::from_utf8_lossy(&check.stderr).into_owned();
        assert!(err.contains(&prefix), "{prefix} in {err}");
        assert!(err.contains(want), "{want} in {err}");
        let router = Command::new(bin("skein-router"))
            .env("SKEIN_CONFIG", &env.config)
            .output()
            .expect("skein-router");
        assert_eq!(router.status.code(), Some(78), "{want}");
        let err = String::from_utf8_lossy(&router.stderr).into_owned();
        assert!(err.contains(&prefix), "{prefix} in {err}");
    }
}
