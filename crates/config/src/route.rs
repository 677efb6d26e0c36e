//! Static routes: `[[route]]` entries that send a domain to a channel and,
//! optionally, a fixed next hop, before any MX lookup happens.

use crate::domain::pattern_matches;
use crate::net::{HostPort, TlsPolicy};

/// One `[[route]]` entry. The router tries routes in file order and uses
/// the first whose `domain` matches the recipient's domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `"example.test"` (exactly that domain), `".example.test"` (its
    /// subdomains, not the domain itself) or `"*"` (any domain); stored in
    /// lower case.
    pub domain: String,
    /// The channel, i.e. the transport agent, that delivers for this route,
    /// e.g. `smtp`, `local`, `error`, `hold`.
    pub channel: String,
    /// A fixed next hop: the agent connects there and does no MX lookup.
    /// `None`: the host is found the usual way (MX, then A/AAAA).
    pub nexthop: Option<HostPort>,
    /// Overrides `smtp.tls` for mail taking this route. `None`: inherit.
    pub tls: Option<TlsPolicy>,
}

impl Route {
    /// Whether this route applies to `domain` (case-insensitive; a trailing
    /// dot on `domain` is ignored).
    pub fn matches(&self, domain: &str) -> bool {
        pattern_matches(&self.domain, domain)
    }
}

/// Whether `name` can be a channel name: it becomes the first half of the
/// scheduler's `channel/host` thread key and appears in logs and the
/// agent handshake, so it is kept to letters, digits, `-` and `_`.
pub(crate) fn is_valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(domain: &str) -> Route {
        Route {
            domain: domain.to_owned(),
            channel: "smtp".to_owned(),
            nexthop: None,
            tls: None,
        }
    }

    #[test]
    fn routes_match_by_pattern() {
        let cases = [
            ("example.test", "example.test", true),
            ("example.test", "Example.Test", true),
            ("example.test", "example.test.", true),
            ("example.test", "sub.example.test", false),
            (".example.test", "sub.example.test", true),
            (".example.test", "SUB.EXAMPLE.TEST", true),
            (".example.test", "example.test", false),
            (".example.test", "notexample.test", false),
            ("*", "example.org", true),
            ("*", "localhost", true),
        ];
        for (pattern, domain, want) in cases {
            assert_eq!(
                route(pattern).matches(domain),
                want,
                "{pattern} vs {domain}"
            );
        }
    }

    #[test]
    fn channel_names() {
        let cases = [
            ("smtp", true),
            ("local", true),
            ("my-agent_2", true),
            ("", false),
            ("smtp/x", false),
            ("sm tp", false),
            ("smtp*", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_valid_channel(name), want, "{name:?}");
        }
    }
}
