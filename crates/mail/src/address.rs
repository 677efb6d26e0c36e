//! RFC 5321 mailboxes (`local-part@domain`), with the RFC 6531 (SMTPUTF8)
//! extension when the caller allows it.
//!
//! This is the envelope syntax, stricter than RFC 5322 header syntax: no
//! comments, no display names, no obsolete forms. Header addresses are
//! extracted with mail-parser first and then checked here.

use std::fmt;

/// Longest local part in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Longest domain in octets (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;

/// A syntactically valid mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    local: String,
    domain: String,
}

/// Why a string is not a mailbox (each maps to enhanced status 5.1.3 /
/// 5.1.7 in SMTP, EX_DATAERR in `sendmail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    /// The empty string.
    Empty,
    /// No `@domain` part.
    MissingDomain,
    /// The local part is not a dot-string or quoted-string.
    BadLocalPart,
    /// The domain is not a host name or address literal.
    BadDomain,
    /// Local part or domain too long.
    TooLong,
    /// Non-ASCII characters without SMTPUTF8.
    NeedsUtf8,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Empty => "empty address",
            AddressError::MissingDomain => "address has no @domain part",
            AddressError::BadLocalPart => "invalid local part",
            AddressError::BadDomain => "invalid domain",
            AddressError::TooLong => "local part or domain too long",
            AddressError::NeedsUtf8 => "non-ASCII address without SMTPUTF8",
        })
    }
}

impl std::error::Error for AddressError {}

/// A non-ASCII character allowed with SMTPUTF8. RFC 6531 admits any
/// UTF-8 beyond ASCII; the C1 controls (U+0080–U+009F) are refused all the
/// same: they have no place in an address and would reach logs and headers.
fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control()
}

fn is_atext(c: char, utf8: bool) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (utf8 && is_utf8_non_ascii(c))
}

fn valid_dot_string(s: &str, utf8: bool) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(|c| is_atext(c, utf8)))
}

fn valid_quoted_string(s: &str, utf8: bool) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return false;
    };
    if s.len() < 2 {
        return false;
    }
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(q) if (' '..='~').contains(&q) => {}
                _ => return false,
            },
            '"' => return false,
            ' '..='~' => {}
            c if utf8 && is_utf8_non_ascii(c) => {}
            _ => return false,
        }
    }
    true
}

/// Checks a domain: dot-separated labels of letters, digits and hyphens
/// (not at either end), or an address literal `[…]`. With `utf8`, labels
/// may also hold non-ASCII characters (U-labels).
pub fn valid_domain(d: &str, utf8: bool) -> bool {
    if d.is_empty() || d.len() > MAX_DOMAIN {
        return false;
    }
    if let Some(lit) = d.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return valid_address_literal(lit);
    }
    d.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || (utf8 && is_utf8_non_ascii(c)))
    })
}

fn valid_address_literal(lit: &str) -> bool {
    if let Some(v6) = lit
        .strip_prefix("IPv6:")
        .or_else(|| lit.strip_prefix("ipv6:"))
    {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if lit.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    // General-address-literal: Standardized-tag ":" 1*dcontent
    match lit.split_once(':') {
        Some((tag, content)) => {
            valid_domain(tag, false)
                && !content.is_empty()
                && content
                    .bytes()
                    .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b))
        }
        None => false,
    }
}

impl Mailbox {
    /// Parses `local@domain`. With `utf8`, non-ASCII characters are
    /// allowed (RFC 6531); without, they are [`AddressError::NeedsUtf8`].
    pub fn parse(s: &str, utf8: bool) -> Result<Mailbox, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if !utf8 && !s.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        // The domain never contains '@'; a quoted local part may.
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::MissingDomain)?;
        if local.len() > MAX_LOCAL_PART || domain.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        if !(valid_dot_string(local, utf8) || valid_quoted_string(local, utf8)) {
            return Err(AddressError::BadLocalPart);
        }
        if !valid_domain(domain, utf8) {
            return Err(AddressError::BadDomain);
        }
        Ok(Mailbox {
            local: local.to_string(),
            domain: domain.to_string(),
        })
    }

    /// The local part, as written (quotes kept).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain, as written.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True when the whole address is ASCII (no SMTPUTF8 needed).
    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        for (s, utf8) in [
            ("a@b", false),
            ("joe.user+tag@example.org", false),
            ("\"john doe\"@example.org", false),
            ("\"a\\\"b\"@example.org", false),
            ("\"a@b\"@example.org", false),
            ("x@[127.0.0.1]", false),
            ("x@[IPv6:::1]", false),
            ("!#$%&'*+-/=?^_`{|}~@x-y.example", false),
            ("üser@bücher.example", true),
            ("a@localhost", false),
        ] {
            let m = Mailbox::parse(s, utf8).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(m.to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        for (s, utf8, want) in [
            ("", false, AddressError::Empty),
            ("joe", false, AddressError::MissingDomain),
            ("@example.org", false, AddressError::BadLocalPart),
            ("a..b@example.org", false, AddressError::BadLocalPart),
            (".a@example.org", false, AddressError::BadLocalPart),
            ("a b@example.org", false, AddressError::BadLocalPart),
            ("a@", false, AddressError::BadDomain),
            ("a@-x.org", false, AddressError::BadDomain),
            ("a@x..org", false, AddressError::BadDomain),
            ("a@x_y.org", false, AddressError::BadDomain),
            ("a@[999.1.1.1]", false, AddressError::BadDomain),
            ("a@b\r\nRCPT", false, AddressError::BadDomain),
            ("<a@b>", false, AddressError::BadLocalPart),
            ("üser@bücher.example", false, AddressError::NeedsUtf8),
            ("\"unterminated@x", false, AddressError::BadLocalPart),
            // C1 controls, even with SMTPUTF8 (found by the fuzz target).
            ("\"\u{8a}z\"@x", true, AddressError::BadLocalPart),
            ("a\u{85}b@x", true, AddressError::BadLocalPart),
            ("a@b\u{9b}c.example", true, AddressError::BadDomain),
        ] {
            assert_eq!(Mailbox::parse(s, utf8), Err(want.clone()), "{s:?}");
        }
        let long_local = format!("{}@x", "a".repeat(65));
        assert_eq!(
            Mailbox::parse(&long_local, false),
            Err(AddressError::TooLong)
        );
        let long_label = format!("a@{}.org", "b".repeat(64));
        assert_eq!(
            Mailbox::parse(&long_label, false),
            Err(AddressError::BadDomain)
        );
    }
}
