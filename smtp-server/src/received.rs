//! The `Received:` trace field the server prepends (RFC 5321 §4.4).

use std::net::IpAddr;

/// What a `Received:` field says about one message.
#[derive(Debug, Clone)]
pub struct Trace<'a> {
    /// The name the client gave in EHLO/HELO (hostile: sanitised here).
    pub helo: &'a str,
    /// The client's address.
    pub client: IpAddr,
    /// This server's name.
    pub hostname: &'a str,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPSA`, `UTF8SMTP`… (RFC 3848, RFC 6531).
    pub protocol: &'a str,
    /// TLS version and cipher when the session is encrypted.
    pub tls: Option<&'a str>,
    /// The queue id.
    pub id: &'a str,
    /// The recipient, named only when there is exactly one (naming all of
    /// them would disclose Bcc recipients to each other).
    pub single_recipient: Option<&'a str>,
    /// The date, RFC 5322 format.
    pub date: &'a str,
}

/// The longest HELO name kept in the field; the rest is cut.
const MAX_HELO_SHOWN: usize = 255;

impl Trace<'_> {
    /// The whole field, folded, ending in CRLF.
    pub fn render(&self) -> String {
        let ip = match self.client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut field = format!(
            "Received: from {} ([{ip}])\r\n\tby {} (skein) with {} id {}",
            sanitise(self.helo),
            sanitise(self.hostname),
            self.protocol,
            self.id,
        );
        if let Some(tls) = self.tls {
            field.push_str(&format!("\r\n\t({})", sanitise(tls)));
        }
        if let Some(rcpt) = self.single_recipient {
            field.push_str(&format!("\r\n\tfor <{}>", rcpt.replace(['\r', '\n'], "")));
        }
        field.push_str(&format!(";\r\n\t{}\r\n", self.date));
        field
    }
}

/// Printable ASCII except the comment delimiters, so that a HELO name
/// cannot end the comment, fold the field or forge another one.
fn sanitise(text: &str) -> String {
    text.chars()
        .take(MAX_HELO_SHOWN)
        .map(|c| match c {
            '(' | ')' | '\\' => '?',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_sanitises() {
        let t = Trace {
            helo: "evil)\r\nX-Forged: yes (",
            client: "192.0.2.1".parse().expect("ip"),
            hostname: "mx.example.org",
            protocol: "ESMTP",
            tls: None,
            id: "ABC",
            single_recipient: Some("joe@example.org"),
            date: "Sun, 29 Nov 2026 01:00:00 +0000",
        };
        assert_eq!(
            t.render(),
            "Received: from evil???X-Forged: yes ? ([192.0.2.1])\r\n\tby mx.example.org (skein) with ESMTP id ABC\r\n\tfor <joe@example.org>;\r\n\tSun, 29 Nov 2026 01:00:00 +0000\r\n"
        );
        let v6 = Trace {
            client: "::1".parse().expect("ip"),
            single_recipient: None,
            tls: Some("TLSv1.3 TLS13_AES_128_GCM_SHA256"),
            ..t
        };
        let text = v6.render();
        assert!(text.contains("([IPv6:::1])"), "{text}");
        assert!(
            text.contains("\r\n\t(TLSv1.3 TLS13_AES_128_GCM_SHA256)"),
            "{text}"
        );
        assert!(!text.contains("for <"), "{text}");
    }
}
