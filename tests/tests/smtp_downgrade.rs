//! 8BITMIME downgrade (issue 14, part 4) in `skein-smtp`: an 8-bit message
//! to a server without 8BITMIME is sent converted to 7 bits (the 8-bit
//! text part quoted-printable, the rest as it was) rather than failed; one
//! that cannot be converted (8 bits in a header field) fails 5.6.3 with
//! the reason; one that needs SMTPUTF8 fails 5.6.7; a server with
//! 8BITMIME gets the bytes unchanged. The delivered text is decoded with
//! mail-parser, an independent MIME parser.

use std::time::Duration;

use mail_parser::MessageParser;
use skein_integration_tests::smtp_server::{ServerOptions, SmtpTest, shutdown};
use skein_proto::{BodyType, Outcome, Status};

const LIMIT: Duration = Duration::from_secs(60);

const MESSAGE: &str = "From: a@client.test\r\nSubject: plain ascii subject\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, très bien.\r\n--b\r\nContent-Type: text/plain\r\n\r\nseven-bit part\r\n--b--\r\n";

async fn deliver(test: &SmtpTest, message: &[u8], smtputf8: bool) -> Outcome {
    let (mut child, mut scheduler) = test.agent().await;
    let file = test.message("m", message);
    let mut job = test.job(1, &file, &["r@x.test"]);
    job.body = BodyType::EightBitMime;
    job.smtputf8 = smtputf8;
    let mut outcomes = tokio::time::timeout(LIMIT, scheduler.deliver(job))
        .await
        .unwrap_or_else(|_| panic!("no outcome:\n{}", test.agent_log()))
        .expect("job done");
    assert!(
        shutdown(&mut child, &mut scheduler, LIMIT).await,
        "{}",
        test.agent_log()
    );
    outcomes.remove(0)
}

fn texts(message: &[u8]) -> Vec<String> {
    let parsed = MessageParser::default().parse(message).expect("parses");
    (0..parsed.text_body_count())
        .filter_map(|i| parsed.body_text(i).map(|t| t.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_eight_bit_message_is_converted_for_a_server_without_8bitmime() {
    let test = SmtpTest::new(
        ServerOptions {
            eightbitmime: false,
            pipelining: true,
            ..ServerOptions::default()
        },
        "",
        "",
    );
    let outcome = deliver(&test, MESSAGE.as_bytes(), false).await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    let messages = test.server.messages();
    assert_eq!(messages.len(), 1);
    let data = &messages[0].data;
    assert!(data.is_ascii(), "{}", String::from_utf8_lossy(data));
    let text = String::from_utf8_lossy(data);
    assert!(text.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln, tr=C3=A8s bien.\r\n"), "{text}");
    assert!(
        text.contains("--b\r\nContent-Type: text/plain\r\n\r\nseven-bit part\r\n--b--\r\n"),
        "{text}"
    );
    assert_eq!(
        texts(data),
        texts(MESSAGE.as_bytes()),
        "the same text, decoded"
    );
    assert!(
        !messages[0].mail_from.contains("BODY="),
        "no BODY= to a server without 8BITMIME: {}",
        messages[0].mail_from
    );
    assert!(
        test.agent_log()
            .contains("8-bit message converted to 7 bits"),
        "{}",
        test.agent_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_8bitmime_gets_the_bytes_as_they_are() {
    let test = SmtpTest::new(ServerOptions::default(), "", "");
    let outcome = deliver(&test, MESSAGE.as_bytes(), false).await;
    assert_eq!(outcome.status, Status::Delivered, "{}", test.agent_log());
    let messages = test.server.messages();
    assert_eq!(messages[0].data, MESSAGE.as_bytes());
    assert!(
        messages[0].mail_from.contains("BODY=8BITMIME"),
        "{}",
        messages[0].mail_from
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_be_converted_fails_with_the_reason() {
    let cases = [
        (
            "Subject: Grüße\r\n\r\nbody ü\r\n",
            false,
            "5.6.3",
            "8-bit bytes in the Subject header field",
        ),
        ("Subject: x\r\n\r\nbody ü\r\n", true, "5.6.7", "SMTPUTF8"),
    ];
    for (message, smtputf8, code, why) in cases {
        let test = SmtpTest::new(
            ServerOptions {
                eightbitmime: false,
                ..ServerOptions::default()
            },
            "",
            "",
        );
        let outcome = deliver(&test, message.as_bytes(), smtputf8).await;
        assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
        assert_eq!(outcome.enhanced.to_string(), code, "{outcome:?}");
        assert!(outcome.diagnostic.contains(why), "{why} in {outcome:?}");
        assert!(test.server.messages().is_empty());
        let commands = &test.server.connections()[0].commands;
        assert!(
            !commands.iter().any(|c| c.starts_with("MAIL")),
            "nothing sent: {commands:?}"
        );
    }
}
