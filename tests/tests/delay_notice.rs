//! A delay notice's Diagnostic-Code (issue 12, part 5): when a deferral
//! came with the server's reply — a 4xx to RCPT, a 421 greeting — the
//! notice says `smtp; <that reply>` (RFC 3464 §2.3.6), not a private
//! `x-skein;` type; `x-skein;` is left for deferrals without any reply
//! (a connection refused).

use std::sync::Arc;
use std::time::Duration;

use skein_integration_tests::TestEnv;
use skein_integration_tests::smtp_server::{Response, ScriptedServer, ServerOptions, Step};

/// The Diagnostic-Code line of the delay notice for `rcpt` in `maildir`.
fn diagnostic_for(messages: &[Vec<u8>], rcpt: &str) -> Option<String> {
    messages.iter().find_map(|m| {
        // (The Maildir copy has LF line ends.)
        let text = String::from_utf8_lossy(m).replace("\r\n", "\n");
        if !text.contains("Action: delayed") {
            return None;
        }
        let block = text
            .split("\n\n")
            .find(|b| b.contains(&format!("Final-Recipient: rfc822;{rcpt}")))?;
        block
            .lines()
            .find(|l| l.starts_with("Diagnostic-Code:"))
            .map(str::to_owned)
    })
}

#[test]
fn a_delay_notice_quotes_the_smtp_reply_that_deferred_the_recipient() {
    let refusing = ScriptedServer::start(ServerOptions {
        script: Arc::new(|_, step: &Step<'_>| match step {
            Step::Rcpt(_) => Response::Reply("451 4.3.0 try again later, please".into()),
            _ => Response::Default,
        }),
        ..ServerOptions::default()
    });
    let busy = ScriptedServer::start(ServerOptions {
        script: Arc::new(|_, step: &Step<'_>| match step {
            Step::Greeting => Response::ReplyAndClose("421 4.7.0 too busy".into()),
            _ => Response::Default,
        }),
        ..ServerOptions::default()
    });
    // A port nothing listens on: a deferral with no reply at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let env = TestEnv::new(&format!(
        "[scheduler]\nretries = [\"1h\"]\ndelay_warning = \"1s\"\n\n\
         [[route]]\ndomain = \"rcpt.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n\n\
         [[route]]\ndomain = \"greet.test\"\nchannel = \"smtp\"\nnexthop = \"{}\"\n\n\
         [[route]]\ndomain = \"closed.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:{closed}\"\n",
        refusing.nexthop(),
        busy.nexthop()
    ));
    env.make_users(&["sender".to_owned()]);
    env.submit(
        &[
            "-f",
            "sender@test.example",
            "a@rcpt.test",
            "b@greet.test",
            "c@closed.test",
        ],
        b"Subject: slow\n\nbody\n",
    );
    let _router = env.route_all();
    let scheduler = env.start("skein-scheduler");
    let found = |rcpt: &str| diagnostic_for(&env.maildir("sender"), rcpt);
    assert!(
        env.wait_for(Duration::from_secs(120), || {
            ["a@rcpt.test", "b@greet.test", "c@closed.test"]
                .iter()
                .all(|r| found(r).is_some())
        }),
        "no delay notice for all three:\n{}\n{}",
        env.maildir("sender")
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect::<Vec<_>>()
            .join("\n----\n"),
        scheduler.log_text()
    );
    let a = found("a@rcpt.test").expect("a");
    assert!(
        a.starts_with("Diagnostic-Code: smtp; 451 4.3.0 try again later"),
        "{a}"
    );
    let b = found("b@greet.test").expect("b");
    assert!(
        b.starts_with("Diagnostic-Code: smtp; 421 4.7.0 too busy"),
        "{b}"
    );
    let c = found("c@closed.test").expect("c");
    assert!(c.starts_with("Diagnostic-Code: x-skein; "), "{c}");
}
