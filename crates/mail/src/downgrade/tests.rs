//! Table tests of the downgrade; decoded back with mail-parser (an
//! independent MIME parser) to show nothing changed but the encoding.

use super::*;
use mail_parser::MessageParser;

fn convert(message: &str) -> String {
    let out = to_seven_bit(message.as_bytes()).expect("converts");
    assert!(out.is_ascii(), "7-bit: {:?}", String::from_utf8_lossy(&out));
    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= 78, "line of {} bytes", line.len());
    }
    String::from_utf8(out.into_owned()).expect("ascii")
}

/// The text of every leaf part, decoded, in order.
fn texts(message: &[u8]) -> Vec<String> {
    let parsed = MessageParser::default().parse(message).expect("parses");
    parsed
        .parts
        .iter()
        .filter_map(|part| match &part.body {
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => Some(t.to_string()),
            mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b) => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn seven_bit_messages_are_left_alone() {
    let message = b"Subject: hi\r\n\r\nplain ascii\r\n";
    assert!(matches!(to_seven_bit(message), Ok(Cow::Borrowed(m)) if m == message));
}

#[test]
fn an_eight_bit_text_body_becomes_quoted_printable() {
    let message = "From: a@b.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, François\r\n= sign and trailing space \r\n";
    let out = convert(message);
    assert!(out.starts_with("From: a@b.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"), "{out}");
    assert!(out.contains("Gr=C3=BC=C3=9Fe, Fran=C3=A7ois\r\n"), "{out}");
    assert!(out.contains("=3D sign and trailing space=20\r\n"), "{out}");
    assert_eq!(out.matches("Content-Transfer-Encoding").count(), 1);
    assert_eq!(texts(out.as_bytes()), texts(message.as_bytes()));
}

#[test]
fn a_message_without_mime_headers_is_text_plain() {
    let message = "Subject: x\r\n\r\nnaïve\r\n";
    let out = convert(message);
    assert!(
        out.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n"),
        "{out}"
    );
}

#[test]
fn long_lines_get_soft_breaks() {
    let line = "é".repeat(60) + &"x".repeat(100);
    let message = format!("Subject: x\r\n\r\n{line}\r\nshort\r\n");
    let out = convert(&message);
    assert!(out.contains("=\r\n"), "{out}");
    assert!(out.ends_with("\r\nshort\r\n"), "{out}");
    assert_eq!(texts(out.as_bytes()), texts(message.as_bytes()));
}

#[test]
fn multiparts_convert_only_their_eight_bit_parts() {
    let message = "From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\npreamble\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\nseven bit part\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nhuit bits: été\r\n--XYZ\r\nContent-Type: application/octet-stream\r\n\r\n\u{00ff}\u{00fe}binary-ish\r\n--XYZ--\r\nepilogue\r\n";
    let out = convert(message);
    assert!(
        out.contains(
            "Content-Type: multipart/mixed; boundary=\"XYZ\"\r\nContent-Transfer-Encoding: 7bit\r\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("--XYZ\r\nContent-Type: text/plain\r\n\r\nseven bit part\r\n--XYZ\r\n"),
        "the 7-bit part as it was: {out}"
    );
    assert!(
        out.contains(
            "Content-Transfer-Encoding: quoted-printable\r\n\r\nhuit bits: =C3=A9t=C3=A9\r\n--XYZ"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ),
        "{out}"
    );
    assert!(out.ends_with("--XYZ--\r\nepilogue\r\n"), "{out}");
    assert_eq!(texts(out.as_bytes()), texts(message.as_bytes()));
}

#[test]
fn nested_messages_are_walked() {
    let message = "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nintérieur\r\n--b1--\r\n";
    let out = convert(message);
    assert!(out.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\n"), "{out}");
    assert!(out.contains("int=C3=A9rieur"), "{out}");
}

#[test]
fn what_cannot_be_made_seven_bit_is_refused() {
    let deep = {
        let mut m = String::from("Content-Type: text/plain\r\n\r\né\r\n");
        for _ in 0..=MAX_DEPTH {
            m = format!("Content-Type: message/rfc822\r\n\r\n{m}");
        }
        m
    };
    let cases = [
        ("Subject: é\r\n\r\nbody é\r\n".to_owned(), DowngradeError::EightBitHeader("Subject".into())),
        (
            "Content-Transfer-Encoding: quoted-printable\r\n\r\né\r\n".to_owned(),
            DowngradeError::EightBitInEncodedPart("quoted-printable".into()),
        ),
        (
            "Content-Type: multipart/mixed; boundary=b\r\n\r\npréambule\r\n--b\r\n\r\nx\r\n--b--\r\n".to_owned(),
            DowngradeError::EightBitOutsideParts,
        ),
        (
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\népilogue\r\n".to_owned(),
            DowngradeError::EightBitOutsideParts,
        ),
        (deep, DowngradeError::TooDeep),
    ];
    for (message, want) in cases {
        assert_eq!(
            to_seven_bit(message.as_bytes()).map(|_| ()),
            Err(want),
            "{message}"
        );
    }
}

#[test]
fn quoted_printable_rules() {
    let cases: [(&[u8], &str); 6] = [
        (b"a=b\r\n", "a=3Db\r\n"),
        (b"tab\t\r\n", "tab=09\r\n"),
        (b"mid space\r\n", "mid space\r\n"),
        (b"bare\nlf\r\n", "bare=0Alf\r\n"),
        (b"no final line end", "no final line end"),
        (b"\xff", "=FF"),
    ];
    for (input, want) in cases {
        let mut out = Vec::new();
        quoted_printable(input, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?}");
    }
    // Exactly 76 characters fit on a line; one more needs a soft break.
    let mut out = Vec::new();
    quoted_printable(&[b'x'; 76], &mut out);
    assert!(!out.contains(&b'='));
    let mut out = Vec::new();
    quoted_printable(&[b'x'; 77], &mut out);
    assert_eq!(out.iter().filter(|&&b| b == b'=').count(), 1);
}
