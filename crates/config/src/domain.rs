//! Domain names: plausibility checks, the machine's own name, and the
//! domain patterns that `[[route]]` and `smtpd.relay_domains` use.

use crate::units::ValueError;

/// Whether `name` looks like a domain a mail system can use: dot-separated
/// labels of 1–63 letters, digits and hyphens, no label starting or ending
/// with a hyphen, at most 253 octets, no trailing dot, and a last label that
/// is not all digits (so that an IPv4 address is not taken for a name).
///
/// This is deliberately the RFC 1123 host-name syntax, not "anything DNS can
/// hold": every name checked here ends up in EHLO, a Received header or a
/// routing decision, where underscores and the like only cause trouble.
pub fn is_plausible_domain(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last_label_numeric = name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_label_numeric
}

/// The machine's host name, for the `hostname` key's default: what
/// `gethostname(2)` says, else `/proc/sys/kernel/hostname`, else
/// `"localhost"` — whichever first is a plausible domain. A mail system must
/// always have *some* name to put in EHLO, so this never fails.
pub fn system_hostname() -> String {
    let candidates = [
        gethostname(),
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|name| name.trim().to_owned())
        .find(|name| is_plausible_domain(name))
        .unwrap_or_else(|| "localhost".to_owned())
}

fn gethostname() -> Option<String> {
    // 256 bytes: HOST_NAME_MAX is 64 on Linux and 255 elsewhere, plus NUL.
    let mut buf = [0u8; 257];
    // SAFETY: the pointer and length describe `buf`, which outlives the call;
    // gethostname writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    // POSIX leaves termination unspecified on truncation; the spare last byte
    // of `buf` is always NUL, so a terminator is always found.
    let end = buf.iter().position(|&b| b == 0)?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

/// Checks a domain pattern and returns it in lower case: `"example.test"`
/// (exactly that domain), `".example.test"` (its subdomains only) and, when
/// `allow_any` is true, `"*"` (any domain).
pub(crate) fn parse_pattern(text: &str, allow_any: bool) -> Result<String, ValueError> {
    let pattern = text.to_ascii_lowercase();
    if pattern == "*" {
        return if allow_any {
            Ok(pattern)
        } else {
            Err(ValueError(
                "\"*\" is not allowed here: it would make an open relay".to_owned(),
            ))
        };
    }
    let name = pattern.strip_prefix('.').unwrap_or(&pattern);
    if is_plausible_domain(name) {
        Ok(pattern)
    } else {
        let any = if allow_any { " or \"*\"" } else { "" };
        Err(ValueError(format!(
            "invalid domain pattern {text:?} (expected \"example.org\", \".example.org\" for its subdomains{any})"
        )))
    }
}

/// Whether `domain` matches a pattern accepted by [`parse_pattern`].
/// Case-insensitive; one trailing dot on `domain` (the absolute form) is
/// ignored.
pub(crate) fn pattern_matches(pattern: &str, domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('.') {
        // The byte before the suffix must be a dot, so ".example.test" does
        // not match "badexample.test".
        Some(parent) => {
            domain.len() > parent.len() + 1
                && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
                && domain.as_bytes()[domain.len() - parent.len()..]
                    .eq_ignore_ascii_case(parent.as_bytes())
        }
        None => domain.eq_ignore_ascii_case(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_domains() {
        let cases = [
            ("localhost", true),
            ("mx.example.org", true),
            ("MX.Example.ORG", true),
            ("a-b.c0.example", true),
            ("xn--bcher-kva.example", true),
            ("", false),
            ("mx.example.org.", false),
            (".example.org", false),
            ("mx..example.org", false),
            ("-mx.example.org", false),
            ("mx-.example.org", false),
            ("mx_1.example.org", false),
            ("mx example.org", false),
            ("192.0.2.1", false),
            ("[192.0.2.1]", false),
            ("bücher.example", false),
        ];
        for (name, ok) in cases {
            assert_eq!(is_plausible_domain(name), ok, "{name:?}");
        }
        assert!(is_plausible_domain(&"a".repeat(63)));
        assert!(!is_plausible_domain(&"a".repeat(64)));
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert!(long.len() > 253);
        assert!(!is_plausible_domain(&long));
    }

    #[test]
    fn system_hostname_is_always_plausible() {
        assert!(is_plausible_domain(&system_hostname()));
    }

    #[test]
    fn patterns_parse() {
        let cases = [
            ("example.test", true, Ok("example.test")),
            ("Example.TEST", true, Ok("example.test")),
            (".example.test", true, Ok(".example.test")),
            ("*", true, Ok("*")),
            ("*", false, Err("open relay")),
            ("", true, Err("invalid domain pattern")),
            (".", true, Err("invalid domain pattern")),
            ("*.example.test", true, Err("invalid domain pattern")),
            ("..example.test", true, Err("invalid domain pattern")),
        ];
        for (text, allow_any, want) in cases {
            match (parse_pattern(text, allow_any), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.0.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn patterns_match() {
        let cases = [
            ("example.test", "example.test", true),
            ("example.test", "EXAMPLE.Test", true),
            ("example.test", "example.test.", true),
            ("example.test", "mx.example.test", false),
            ("example.test", "example.testing", false),
            (".example.test", "mx.example.test", true),
            (".example.test", "a.b.EXAMPLE.test", true),
            (".example.test", "example.test", false),
            (".example.test", "badexample.test", false),
            (".example.test", ".example.test", false),
            ("*", "anything.at.all", true),
            ("*", "", true),
            // Byte-wise comparison: a multi-byte character must not panic.
            (".example.test", "mx.exampleé.tést", false),
            (".ab", "x.é", false),
        ];
        for (pattern, domain, want) in cases {
            assert_eq!(
                pattern_matches(pattern, domain),
                want,
                "{pattern} vs {domain}"
            );
        }
    }
}
