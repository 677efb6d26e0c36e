//! The first part of a report: the explanation people read.

use crate::fields::date;
use crate::sanitize::one_line;
use crate::{Action, DsnKind, DsnRecipient, DsnRequest};

/// The explanation, CRLF line endings. `host` is the sanitized reporting
/// MTA; `truncated` says that only the original's headers are attached
/// although the whole message was asked for.
pub(crate) fn render(request: &DsnRequest, host: &str, truncated: bool) -> String {
    let mut lines: Vec<String> = vec![
        format!("This is the mail system at host {host}."),
        String::new(),
    ];
    match request.kind {
        DsnKind::Failure => {
            lines.push("I'm sorry to have to inform you that your message could not".into());
            lines.push("be delivered to one or more recipients.".into());
        }
        DsnKind::Delay => {
            lines.push("Your message could not be delivered yet to one or more".into());
            lines.push("recipients. The mail system will keep trying; you do not need".into());
            lines.push("to send it again.".into());
            if let Some(until) = request
                .recipients
                .iter()
                .filter_map(|r| r.will_retry_until_unix)
                .max()
            {
                lines.push(format!("It will give up on {}.", date(until)));
            }
        }
        DsnKind::Success => {
            lines.push("Your message was successfully delivered to the destinations".into());
            lines.push("listed below.".into());
        }
    }
    lines.push(String::new());
    if let crate::OriginalPart::Withheld(why) = &request.original {
        lines.push("The message is not attached: ".to_owned() + &one_line(why));
    } else if truncated {
        lines.push("The message was too large (or not plain text) to be returned".into());
        lines.push("whole; its headers are attached below.".into());
    } else {
        lines.push("The message, or its headers, is attached below.".into());
    }
    if request.kind == DsnKind::Failure {
        lines.push(String::new());
        lines.push("For further assistance, please send mail to postmaster.".into());
    }
    lines.push(String::new());
    lines.push(format!(
        "                   The mail system (queue id {})",
        one_line(&request.original_queue_id)
    ));
    lines.push(String::new());
    for recipient in &request.recipients {
        wrap(&recipient_line(recipient), &mut lines);
    }
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

/// `<user@example.org>: host mx.example.org said: 550 5.1.1 no such user`,
/// in the manner of Postfix's bounces.
fn recipient_line(r: &DsnRecipient) -> String {
    let mut who = format!("<{}>", one_line(&r.final_recipient));
    if let Some(orcpt) = r.original_recipient.as_deref().map(one_line) {
        let original = orcpt
            .split_once(';')
            .map_or(orcpt.as_str(), |(_, a)| a.trim());
        let original = original.trim_start_matches('<').trim_end_matches('>');
        if !original.is_empty() && !original.eq_ignore_ascii_case(r.final_recipient.trim()) {
            who.push_str(&format!(" (originally <{original}>)"));
        }
    }
    let diagnostic = r.diagnostic_code.as_deref().map(one_line).map(|d| {
        // The type (`smtp;`) is for machines.
        match d.split_once(';') {
            Some((kind, text)) if !kind.contains(' ') && !kind.is_empty() => text.trim().to_owned(),
            _ => d,
        }
    });
    let remote = r.remote_mta.as_deref().map(one_line).map(|m| {
        m.split_once(';')
            .map_or(m.clone(), |(_, host)| host.trim().to_owned())
    });
    let reason = match (remote, diagnostic) {
        (Some(host), Some(text)) => format!("host {host} said: {text}"),
        (None, Some(text)) => text,
        (Some(host), None) => format!(
            "{} at host {host} (status {})",
            verb(r.action),
            one_line(&r.status)
        ),
        (None, None) => format!("{} (status {})", verb(r.action), one_line(&r.status)),
    };
    format!("{who}: {reason}")
}

/// Lines of text wrap at this column, so that the part stays readable
/// as plain 7bit text instead of being quoted-printable-encoded.
const WRAP_AT: usize = 76;

/// Pushes `line` wrapped at [`WRAP_AT`] at spaces, continuation lines
/// indented by four spaces as Postfix does. A word longer than a line is
/// left whole.
fn wrap(line: &str, out: &mut Vec<String>) {
    let mut current = String::new();
    let mut has_word = false;
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        if has_word && current.chars().count() + 1 + word.chars().count() > WRAP_AT {
            out.push(std::mem::replace(&mut current, "    ".to_owned()));
            has_word = false;
        }
        if has_word {
            current.push(' ');
        }
        current.push_str(word);
        has_word = true;
    }
    out.push(current);
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Failed => "delivery failed",
        Action::Delayed => "delivery delayed",
        Action::Delivered => "delivered",
        Action::Relayed => "relayed",
        Action::Expanded => "delivered and forwarded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpt(action: Action, remote: Option<&str>, diagnostic: Option<&str>) -> DsnRecipient {
        DsnRecipient {
            final_recipient: "u@example.org".into(),
            original_recipient: None,
            action,
            status: "5.1.1".into(),
            remote_mta: remote.map(Into::into),
            diagnostic_code: diagnostic.map(Into::into),
            last_attempt_unix: None,
            will_retry_until_unix: None,
        }
    }

    #[test]
    fn wrap_table() {
        let long = "word ".repeat(30);
        let table: Vec<(&str, Vec<String>)> = vec![
            ("short line", vec!["short line".into()]),
            ("", vec![String::new()]),
            (
                long.trim_end(),
                vec![
                    "word ".repeat(15).trim_end().to_owned(),
                    format!("    {}", "word ".repeat(14).trim_end()),
                    "    word".into(),
                ],
            ),
        ];
        for (line, want) in table {
            let mut got = Vec::new();
            wrap(line, &mut got);
            assert_eq!(got, want, "{line:?}");
            assert!(got.iter().all(|l| l.len() <= WRAP_AT));
        }
        let mut got = Vec::new();
        let unbreakable = "x".repeat(100);
        wrap(&format!("a {unbreakable} b"), &mut got);
        assert_eq!(
            got,
            vec!["a".to_owned(), format!("    {unbreakable}"), "    b".into()]
        );
    }

    #[test]
    fn recipient_lines() {
        let table = [
            (
                rcpt(
                    Action::Failed,
                    Some("mx.example.org"),
                    Some("smtp; 550 5.1.1 no such user"),
                ),
                "<u@example.org>: host mx.example.org said: 550 5.1.1 no such user",
            ),
            (
                rcpt(Action::Failed, None, Some("X-Skein; unknown user")),
                "<u@example.org>: unknown user",
            ),
            (
                rcpt(Action::Failed, None, Some("mailbox full; try later")),
                "<u@example.org>: mailbox full; try later",
            ),
            (
                rcpt(Action::Failed, Some("dns; mx.example.org"), None),
                "<u@example.org>: delivery failed at host mx.example.org (status 5.1.1)",
            ),
            (
                rcpt(Action::Delivered, None, None),
                "<u@example.org>: delivered (status 5.1.1)",
            ),
            (
                rcpt(Action::Failed, None, Some("smtp; 550 no\r\nBcc: x@y")),
                "<u@example.org>: 550 no Bcc: x@y",
            ),
        ];
        for (r, want) in table {
            assert_eq!(recipient_line(&r), want);
        }
        let mut expanded = rcpt(Action::Failed, None, Some("x"));
        expanded.original_recipient = Some("rfc822;list@example.org".into());
        assert_eq!(
            recipient_line(&expanded),
            "<u@example.org> (originally <list@example.org>): x"
        );
        expanded.original_recipient = Some("rfc822;U@example.org".into());
        assert_eq!(recipient_line(&expanded), "<u@example.org>: x");
    }
}
