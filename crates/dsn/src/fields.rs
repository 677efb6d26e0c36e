//! The machine-readable part: `message/delivery-status` (RFC 3464 §2).
//!
//! ```text
//! delivery-status-content = per-message-fields 1*( CRLF per-recipient-fields )
//! ```
//!
//! Each group is a block of header-like fields; blocks are separated by an
//! empty line. Fields appear in the order of the RFC's grammar, extension
//! fields (`X-…`) last.

use skein_mail::EnhancedCode;

use crate::sanitize::{fold_field, one_line};
use crate::{Action, DsnRecipient, DsnRequest};

/// The rendered part and whether it needs the RFC 6533 `global` types.
pub(crate) struct StatusPart {
    /// The part's body: the blocks, CRLF line endings.
    pub body: String,
    /// True when a field holds non-ASCII text (a UTF-8 address or
    /// diagnostic): the part is then `message/global-delivery-status`.
    pub global: bool,
}

/// The diagnostic type given to untyped diagnostic text (RFC 3464 allows
/// `X-` types for non-SMTP diagnostics, as Postfix's `X-Postfix`).
pub(crate) const LOCAL_DIAGNOSTIC_TYPE: &str = "X-Skein";

pub(crate) fn render(request: &DsnRequest) -> StatusPart {
    let mut body = String::new();
    if let Some(envid) = request.envid.as_deref().map(one_line)
        && !envid.is_empty()
    {
        body.push_str(&fold_field("Original-Envelope-Id", &envid));
    }
    body.push_str(&fold_field(
        "Reporting-MTA",
        &typed(&request.reporting_mta, "dns"),
    ));
    body.push_str(&fold_field("Arrival-Date", &date(request.arrival_unix)));
    body.push_str(&fold_field(
        "X-Skein-Queue-ID",
        &one_line(&request.original_queue_id),
    ));
    for recipient in &request.recipients {
        body.push_str("\r\n");
        render_recipient(recipient, &mut body);
    }
    StatusPart {
        global: !body.is_ascii(),
        body,
    }
}

fn render_recipient(r: &DsnRecipient, body: &mut String) {
    if let Some(orcpt) = r.original_recipient.as_deref() {
        let orcpt = one_line(orcpt);
        if !orcpt.is_empty() {
            body.push_str(&fold_field("Original-Recipient", &address_field(&orcpt)));
        }
    }
    let final_recipient = one_line(&r.final_recipient);
    body.push_str(&fold_field(
        "Final-Recipient",
        &format!(
            "{};{}",
            address_type(&final_recipient),
            bare(&final_recipient)
        ),
    ));
    body.push_str(&fold_field("Action", r.action.keyword()));
    body.push_str(&fold_field("Status", &status(&r.status, r.action)));
    if let Some(mta) = r.remote_mta.as_deref().map(one_line)
        && !mta.is_empty()
    {
        body.push_str(&fold_field("Remote-MTA", &typed(&mta, "dns")));
    }
    if let Some(diagnostic) = r.diagnostic_code.as_deref().map(one_line)
        && !diagnostic.is_empty()
    {
        body.push_str(&fold_field(
            "Diagnostic-Code",
            &typed(&diagnostic, LOCAL_DIAGNOSTIC_TYPE),
        ));
    }
    if let Some(when) = r.last_attempt_unix {
        body.push_str(&fold_field("Last-Attempt-Date", &date(when)));
    }
    if let Some(when) = r.will_retry_until_unix {
        body.push_str(&fold_field("Will-Retry-Until", &date(when)));
    }
}

/// An RFC 5322 date in the machine's time zone, as Postfix writes them.
pub(crate) fn date(unix: i64) -> String {
    skein_mail::date::rfc5322(unix, skein_mail::date::local_offset(unix))
}

/// `rfc822` for an ASCII address, `utf-8` for an internationalised one
/// (RFC 6533 §3).
fn address_type(address: &str) -> &'static str {
    if address.is_ascii() {
        "rfc822"
    } else {
        "utf-8"
    }
}

/// An address without the angle brackets some callers leave on.
fn bare(address: &str) -> &str {
    address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address)
}

/// An `address-type;address` value: kept when it has a type, given one
/// otherwise.
fn address_field(value: &str) -> String {
    match split_type(value) {
        Some((kind, rest)) => format!("{kind};{}", bare(rest)),
        None => format!("{};{}", address_type(value), bare(value)),
    }
}

/// `type; text`: the value's own type when it starts with one (`smtp;
/// 550 …`, `dns; mx.example.org`), else `default_type`.
fn typed(value: &str, default_type: &str) -> String {
    let value = one_line(value);
    match split_type(&value) {
        Some((kind, rest)) => format!("{kind}; {rest}"),
        None => format!("{default_type}; {value}"),
    }
}

/// Splits `atom;rest` where the atom is a plausible type name (letters,
/// digits, `-`): a diagnostic such as `550 5.1.1 user unknown; try later`
/// has no type even though it holds a `;`.
fn split_type(value: &str) -> Option<(&str, &str)> {
    let (kind, rest) = value.split_once(';')?;
    let kind = kind.trim();
    let plausible = !kind.is_empty()
        && kind.len() <= 32
        && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && kind.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    plausible.then_some((kind, rest.trim()))
}

/// The status code if it is a valid `class.subject.detail` (RFC 3463,
/// white space around it ignored), else the action's generic code.
fn status(code: &str, action: Action) -> String {
    code.trim()
        .parse::<EnhancedCode>()
        .unwrap_or(action.generic_status())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table: &[(&str, Action, &str)] = &[
            ("5.1.1", Action::Failed, "5.1.1"),
            (" 4.4.7 ", Action::Delayed, "4.4.7"),
            ("2.0.0", Action::Delivered, "2.0.0"),
            ("5.123.456", Action::Failed, "5.123.456"),
            ("5.1234.1", Action::Failed, "5.0.0"),
            ("3.1.1", Action::Failed, "5.0.0"),
            ("5.1", Action::Failed, "5.0.0"),
            ("5.1.1.1", Action::Failed, "5.0.0"),
            ("", Action::Delayed, "4.0.0"),
            ("x.y.z", Action::Relayed, "2.0.0"),
            ("5.1.1\r\nX: y", Action::Failed, "5.0.0"),
        ];
        for (code, action, want) in table {
            assert_eq!(status(code, *action), *want, "{code:?}");
        }
    }

    #[test]
    fn typed_table() {
        let table: &[(&str, &str, &str)] = &[
            ("smtp; 550 5.1.1 no", "X-Skein", "smtp; 550 5.1.1 no"),
            ("smtp;550 no", "X-Skein", "smtp; 550 no"),
            ("mailbox full", "X-Skein", "X-Skein; mailbox full"),
            (
                "550 5.1.1 unknown; try",
                "X-Skein",
                "X-Skein; 550 5.1.1 unknown; try",
            ),
            ("mx.example.org", "dns", "dns; mx.example.org"),
            ("dns; mx.example.org", "dns", "dns; mx.example.org"),
            ("x-local; disk\r\nfull", "X-Skein", "x-local; disk full"),
        ];
        for (value, default, want) in table {
            assert_eq!(typed(value, default), *want, "{value:?}");
        }
    }

    #[test]
    fn address_field_table() {
        let table: &[(&str, &str)] = &[
            ("rfc822;user@example.org", "rfc822;user@example.org"),
            ("rfc822; <user@example.org>", "rfc822;user@example.org"),
            ("user@example.org", "rfc822;user@example.org"),
            ("usér@example.org", "utf-8;usér@example.org"),
        ];
        for (value, want) in table {
            assert_eq!(address_field(value), *want, "{value:?}");
        }
    }
}
