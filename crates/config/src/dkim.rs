//! `[[dkim]]`: the DKIM signing keys (RFC 6376, RFC 8463). The router signs
//! a message for remote delivery with the first entry whose `domain`
//! matches the domain of its `From:` address; `skein-dkim` does the
//! signing, this module only says what the file asks for.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::domain::pattern_matches;
use crate::units::ValueError;

/// The signature algorithm (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DkimAlgorithm {
    /// `rsa-sha256` (RFC 6376): what every verifier knows. A 2048-bit key
    /// is the usual size.
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463): short keys and signatures; not every
    /// verifier knows it yet, so domains that use it often sign twice.
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The configuration (and `a=`) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

impl FromStr for DkimAlgorithm {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rsa-sha256" => Ok(DkimAlgorithm::RsaSha256),
            "ed25519-sha256" => Ok(DkimAlgorithm::Ed25519Sha256),
            _ => Err(ValueError(format!(
                "invalid DKIM algorithm {text:?} (expected \"rsa-sha256\" or \"ed25519-sha256\")"
            ))),
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A canonicalization algorithm, for the header or the body (`c=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Canonicalization {
    /// `simple`: the bytes as they are; any change in transit breaks it.
    Simple,
    /// `relaxed`: whitespace and header case normalised; survives the
    /// rewrapping that relays do.
    Relaxed,
}

impl Canonicalization {
    /// The spelling in `c=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Canonicalization::Simple => "simple",
            Canonicalization::Relaxed => "relaxed",
        }
    }
}

/// `canonicalization = "relaxed/relaxed"`: header, then body.
pub fn parse_canonicalization(
    text: &str,
) -> Result<(Canonicalization, Canonicalization), ValueError> {
    let one = |s: &str| match s {
        "simple" => Some(Canonicalization::Simple),
        "relaxed" => Some(Canonicalization::Relaxed),
        _ => None,
    };
    let (header, body) = text.split_once('/').unwrap_or((text, "simple"));
    match (one(header), one(body)) {
        (Some(h), Some(b)) => Ok((h, b)),
        _ => Err(ValueError(format!(
            "invalid canonicalization {text:?} (expected header/body, each \"relaxed\" or \"simple\", e.g. \"relaxed/relaxed\")"
        ))),
    }
}

/// The header fields signed by default: those RFC 6376 §5.4.1 recommends
/// and that a relay does not add or change. `From` is always signed.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// One `[[dkim]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    /// The `From:` domain pattern it signs for, as a route's `domain`:
    /// `"example.org"`, `".example.org"` (subdomains) or `"*"`; lower case.
    pub domain: String,
    /// The selector (`s=`): the key's DNS name is
    /// `<selector>._domainkey.<d>`.
    pub selector: String,
    /// The signing domain (`d=`); `""`: the `From:` domain itself (the
    /// entry's domain when it is not a pattern).
    pub signing_domain: String,
    /// The private key, PEM (PKCS#8, or PKCS#1 for RSA).
    pub key: PathBuf,
    /// The algorithm; the key must be of its kind.
    pub algorithm: DkimAlgorithm,
    /// The header fields to sign (`h=`), each once for every instance
    /// present; `From` is added when missing.
    pub headers: Vec<String>,
    /// Header and body canonicalization (`c=`).
    pub canonicalization: (Canonicalization, Canonicalization),
}

impl DkimKey {
    /// Whether this entry signs for `domain` (a `From:` address's domain).
    pub fn matches(&self, domain: &str) -> bool {
        pattern_matches(&self.domain, domain)
    }

    /// The `d=` for a message from `from_domain`.
    pub fn d_for(&self, from_domain: &str) -> String {
        if self.signing_domain.is_empty() {
            from_domain.trim_end_matches('.').to_ascii_lowercase()
        } else {
            self.signing_domain.clone()
        }
    }
}

/// Whether `name` can be a selector or a signing domain label sequence:
/// DNS labels of letters, digits, `-` and `_`, separated by dots.
pub(crate) fn is_valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizations() {
        use Canonicalization::*;
        let cases = [
            ("relaxed/relaxed", Some((Relaxed, Relaxed))),
            ("simple/simple", Some((Simple, Simple))),
            ("relaxed/simple", Some((Relaxed, Simple))),
            ("relaxed", Some((Relaxed, Simple))), // RFC 6376 §3.5: body defaults to simple
            ("loose/relaxed", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_canonicalization(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn dns_names() {
        for (name, ok) in [
            ("s2026", true),
            ("mail._x", true),
            ("a.b-c", true),
            ("", false),
            ("a..b", false),
            ("a b", false),
            ("a;b", false),
        ] {
            assert_eq!(is_valid_dns_name(name), ok, "{name}");
        }
    }
}
