//! Network value types of the configuration: CIDR networks for relay
//! permission, `host:port` next hops, and the SMTP client's TLS policy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::domain::is_plausible_domain;
use crate::units::ValueError;

/// An IPv4 or IPv6 network in CIDR notation, e.g. `127.0.0.0/8`, `::1/128`.
///
/// Host bits must be zero: `127.0.0.1/8` is refused rather than silently
/// widened, since a relay network that is not what the operator meant is a
/// security problem. A bare address is a single-host network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix_len: u8,
}

impl IpNetwork {
    /// The network `addr/prefix_len`; fails if the prefix is longer than the
    /// address or host bits are set.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, ValueError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if prefix_len > max {
            return Err(ValueError(format!(
                "invalid network \"{addr}/{prefix_len}\": the prefix length is at most {max}"
            )));
        }
        let network = IpNetwork { addr, prefix_len };
        let base = network.network_address();
        if base != addr {
            return Err(ValueError(format!(
                "invalid network \"{addr}/{prefix_len}\": host bits are set (did you mean \"{base}/{prefix_len}\"?)"
            )));
        }
        Ok(network)
    }

    /// For built-in constants known to be valid (no fallible parse, hence
    /// no unwrap, at startup).
    pub(crate) const fn constant(addr: IpAddr, prefix_len: u8) -> Self {
        IpNetwork { addr, prefix_len }
    }

    /// The network's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The number of leading bits that every address of the network shares.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this network. Addresses of the other family are
    /// never contained, except that an IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4
    /// client) is matched against IPv4 networks as the IPv4 address it is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self.addr {
            IpAddr::V4(net) => {
                let ip = match ip {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                        Some(ip) => ip,
                        None => return false,
                    },
                };
                (u32::from(net) ^ u32::from(ip)) & mask32(self.prefix_len) == 0
            }
            IpAddr::V6(net) => match ip {
                IpAddr::V6(ip) => {
                    (u128::from(net) ^ u128::from(ip)) & mask128(self.prefix_len) == 0
                }
                IpAddr::V4(_) => false,
            },
        }
    }

    fn network_address(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix_len))),
        }
    }
}

// Shifting by the full width overflows, hence the explicit /0 case.
fn mask32(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

fn mask128(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n.min(128))),
    }
}

impl FromStr for IpNetwork {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || {
            ValueError(format!(
                "invalid network {text:?} (expected an address with an optional prefix length, e.g. \"192.0.2.0/24\" or \"2001:db8::/32\")"
            ))
        };
        let (addr, prefix_len) = match text.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| syntax())?;
                // u8::from_str accepts a leading '+'; a prefix length never has one.
                if !len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                (addr, len.parse::<u8>().map_err(|_| syntax())?)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|_| syntax())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        IpNetwork::new(addr, prefix_len)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// A next hop: a host name or IP address and a port, written
/// `"mx.example.net:25"`, `"192.0.2.7:2525"`, `"[2001:db8::7]:25"`, or
/// without a port for 25.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// A domain name, or an IP address without brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is one (no DNS needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for HostPort {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || {
            ValueError(format!(
                "invalid next hop {text:?} (expected host:port, e.g. \"mx.example.net:25\", \"192.0.2.7:2525\" or \"[2001:db8::7]:25\")"
            ))
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(syntax)?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(syntax());
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(syntax)?)),
            }
        } else {
            match text.matches(':').count() {
                0 => (text, None),
                1 => text
                    .split_once(':')
                    .map(|(h, p)| (h, Some(p)))
                    .ok_or_else(syntax)?,
                _ => {
                    return Err(ValueError(format!(
                        "invalid next hop {text:?}: write an IPv6 address in brackets, e.g. \"[2001:db8::7]:25\""
                    )));
                }
            }
        };
        let host_ok = host.parse::<IpAddr>().is_ok() || is_plausible_domain(host);
        if !host_ok {
            return Err(syntax());
        }
        let port = match port {
            None => 25,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u16>() {
                    Ok(port) if port != 0 => port,
                    _ => return Err(syntax()),
                }
            }
            Some(_) => return Err(syntax()),
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the SMTP agent uses STARTTLS. Ordered from the weakest to the
/// strictest: where recipients of one job disagree (a reload changed a
/// route after they were queued), the agent applies the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum TlsPolicy {
    /// Never STARTTLS: clear text even where the server offers TLS (for a
    /// peer whose TLS is known broken; rarely right).
    None,
    /// Use STARTTLS when the server offers it, without checking the
    /// certificate; deliver in clear text otherwise. What most of the
    /// Internet does, since MX certificates are rarely verifiable.
    #[default]
    Opportunistic,
    /// Opportunistic DANE (RFC 7672): where the destination publishes
    /// TLSA records that a validating resolver on loopback vouches for
    /// (the AD bit), STARTTLS is required and the certificate must match
    /// them; elsewhere, `opportunistic`.
    Dane,
    /// Insist on STARTTLS (defer if it is missing or fails), without
    /// checking the certificate.
    Require,
    /// Insist on STARTTLS and a certificate that verifies against the
    /// system roots for the next-hop name.
    Verify,
}

impl TlsPolicy {
    /// The configuration spelling: `none`, `opportunistic`, `dane`,
    /// `require` or `verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::None => "none",
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Dane => "dane",
            TlsPolicy::Require => "require",
            TlsPolicy::Verify => "verify",
        }
    }
}

impl FromStr for TlsPolicy {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(TlsPolicy::None),
            "opportunistic" => Ok(TlsPolicy::Opportunistic),
            "dane" => Ok(TlsPolicy::Dane),
            "require" => Ok(TlsPolicy::Require),
            "verify" => Ok(TlsPolicy::Verify),
            _ => Err(ValueError(format!(
                "invalid TLS policy {text:?} (expected \"none\", \"opportunistic\", \"dane\", \"require\" or \"verify\")"
            ))),
        }
    }
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn net(text: &str) -> IpNetwork {
        text.parse().expect("test network")
    }

    #[test]
    fn networks_contain() {
        let cases = [
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "127.255.255.255", true),
            ("127.0.0.0/8", "128.0.0.0", false),
            ("192.0.2.0/24", "192.0.2.200", true),
            ("192.0.2.0/24", "192.0.3.1", false),
            ("192.0.2.7/32", "192.0.2.7", true),
            ("192.0.2.7/32", "192.0.2.8", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "192.0.2.1", false),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1", "::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            // Mismatched families never match...
            ("127.0.0.0/8", "::1", false),
            ("::1/128", "127.0.0.1", false),
            ("::/0", "0.0.0.0", false),
            // ...except IPv4-mapped IPv6 addresses against IPv4 networks.
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::ffff:10.0.0.1", false),
            ("::ffff:0:0/96", "::ffff:127.0.0.1", true),
            ("::ffff:0:0/96", "127.0.0.1", false),
        ];
        for (network, addr, want) in cases {
            assert_eq!(net(network).contains(ip(addr)), want, "{network} ∋ {addr}");
        }
    }

    #[test]
    fn networks_parse_and_display() {
        let cases = [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("::1", "::1/128"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:DB8::/32", "2001:db8::/32"),
        ];
        for (text, shown) in cases {
            let parsed = net(text);
            assert_eq!(parsed.to_string(), shown);
            assert_eq!(net(shown), parsed);
        }
        let errors = [
            (
                "127.0.0.1/8",
                "host bits are set (did you mean \"127.0.0.0/8\"?)",
            ),
            ("::1/64", "did you mean \"::/64\""),
            ("10.0.0.0/33", "at most 32"),
            ("::/129", "at most 128"),
            ("10.0.0.0/", "invalid network"),
            ("10.0.0.0/+8", "invalid network"),
            ("10.0.0/8", "invalid network"),
            ("example.org/8", "invalid network"),
            ("", "invalid network"),
            ("10.0.0.0/8/8", "invalid network"),
            ("10.0.0.0/300", "invalid network"),
        ];
        for (text, want) in errors {
            let err = text.parse::<IpNetwork>().expect_err(text);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
        assert_eq!(net("10.0.0.0/8").addr(), ip("10.0.0.0"));
        assert_eq!(net("10.0.0.0/8").prefix_len(), 8);
    }

    #[test]
    fn next_hops_parse_and_display() {
        let cases = [
            ("127.0.0.1:2600", "127.0.0.1", 2600, "127.0.0.1:2600"),
            (
                "mx.example.net:25",
                "mx.example.net",
                25,
                "mx.example.net:25",
            ),
            ("mx.example.net", "mx.example.net", 25, "mx.example.net:25"),
            (
                "[2001:db8::7]:2525",
                "2001:db8::7",
                2525,
                "[2001:db8::7]:2525",
            ),
            ("[::1]", "::1", 25, "[::1]:25"),
        ];
        for (text, host, port, shown) in cases {
            let hop: HostPort = text.parse().expect(text);
            assert_eq!((hop.host.as_str(), hop.port), (host, port), "{text}");
            assert_eq!(hop.to_string(), shown);
            assert_eq!(shown.parse::<HostPort>().as_ref(), Ok(&hop));
        }
        assert_eq!(
            "[::1]:25".parse::<HostPort>().map(|h| h.ip()),
            Ok(Some(ip("::1")))
        );
        assert_eq!(
            "mx.example.net:25".parse::<HostPort>().map(|h| h.ip()),
            Ok(None)
        );
        let errors = [
            ("::1:25", "in brackets"),
            ("2001:db8::7", "in brackets"),
            ("host:", "invalid next hop"),
            ("host:0", "invalid next hop"),
            ("host:65536", "invalid next hop"),
            ("host:+25", "invalid next hop"),
            ("host:x", "invalid next hop"),
            (":25", "invalid next hop"),
            ("", "invalid next hop"),
            ("bad_host:25", "invalid next hop"),
            ("[mx.example.net]:25", "invalid next hop"),
            ("[::1]25", "invalid next hop"),
            ("[::1", "invalid next hop"),
        ];
        for (text, want) in errors {
            let err = text.parse::<HostPort>().expect_err(text);
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn tls_policies_parse_and_display() {
        for policy in [
            TlsPolicy::None,
            TlsPolicy::Opportunistic,
            TlsPolicy::Dane,
            TlsPolicy::Require,
            TlsPolicy::Verify,
        ] {
            assert_eq!(policy.as_str().parse(), Ok(policy));
            assert_eq!(policy.to_string(), policy.as_str());
        }
        // Weakest to strictest: a job's recipients get the maximum.
        assert!(TlsPolicy::None < TlsPolicy::Opportunistic);
        assert!(TlsPolicy::Dane < TlsPolicy::Require && TlsPolicy::Require < TlsPolicy::Verify);
        for text in ["", "Require", "off", "yes"] {
            let err = text.parse::<TlsPolicy>().expect_err(text);
            assert!(err.to_string().contains("invalid TLS policy"), "{err}");
        }
        assert_eq!(TlsPolicy::default(), TlsPolicy::Opportunistic);
    }
}
