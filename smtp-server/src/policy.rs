//! Who may send mail to whom: the relay decision and the envelope address
//! checks, without I/O, so that they can be tested by table.

use std::borrow::Cow;
use std::net::IpAddr;

use skein_config::Config;
use skein_mail::{AddressError, Mailbox};

/// The relay policy, taken from the configuration once at start.
#[derive(Debug, Clone)]
pub struct Policy {
    hostname: String,
    config: Config,
}

/// What the server answers to an envelope address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, storing this address (possibly completed, as a bare
    /// `postmaster` is).
    Accept(String),
    /// Refuse with this reply.
    Refuse(Refusal),
}

/// A refusal: code, enhanced code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reply code.
    pub code: u16,
    /// The enhanced status code, `x.y.z`: a literal of this crate, or the
    /// router's code for a recipient it would fail.
    pub enhanced: Cow<'static, str>,
    /// The text.
    pub text: String,
}

impl Refusal {
    pub(crate) fn new(
        code: u16,
        enhanced: impl Into<Cow<'static, str>>,
        text: impl Into<String>,
    ) -> Refusal {
        Refusal {
            code,
            enhanced: enhanced.into(),
            text: text.into(),
        }
    }
}

impl Policy {
    /// The policy of `config`.
    pub fn new(config: &Config) -> Policy {
        Policy {
            hostname: config.hostname.to_ascii_lowercase(),
            config: config.clone(),
        }
    }

    /// Whether mail for `domain` is delivered here (`router.local_domains`
    /// or `hostname` itself).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.config.router.is_local_domain(domain) || domain.eq_ignore_ascii_case(&self.hostname)
    }

    /// Checks a reverse-path (`MAIL FROM`). The null path `<>` is always
    /// acceptable: it is how bounces arrive.
    pub fn check_sender(&self, path: &str, smtputf8: bool) -> Verdict {
        if path.is_empty() {
            return Verdict::Accept(String::new());
        }
        match Mailbox::parse(path, smtputf8) {
            Ok(_) => Verdict::Accept(path.to_owned()),
            Err(AddressError::NeedsUtf8) => Verdict::Refuse(Refusal::new(
                553,
                "5.6.7",
                "Non-ASCII sender address needs SMTPUTF8",
            )),
            Err(e) => Verdict::Refuse(Refusal::new(
                553,
                "5.1.7",
                format!("Bad sender address: {e}"),
            )),
        }
    }

    /// Checks a forward-path (`RCPT TO`) from a client at `client` that
    /// `authenticated` or not: syntax, then relay. Mail for a local or
    /// relay domain is taken from anyone; other domains only from
    /// `smtpd.relay_networks` (or an authenticated client) — so the
    /// default is never an open relay.
    pub fn check_recipient(
        &self,
        path: &str,
        smtputf8: bool,
        client: IpAddr,
        authenticated: bool,
    ) -> Verdict {
        // RFC 5321 §4.5.1: a bare "postmaster" must be accepted.
        if path.eq_ignore_ascii_case("postmaster") {
            return Verdict::Accept(format!("postmaster@{}", self.hostname));
        }
        let mailbox = match Mailbox::parse(path, smtputf8) {
            Ok(m) => m,
            Err(AddressError::NeedsUtf8) => {
                return Verdict::Refuse(Refusal::new(
                    553,
                    "5.6.7",
                    "Non-ASCII recipient address needs SMTPUTF8",
                ));
            }
            Err(e) => {
                return Verdict::Refuse(Refusal::new(
                    501,
                    "5.1.3",
                    format!("Bad recipient address: {e}"),
                ));
            }
        };
        let domain = mailbox.domain();
        let ours = self.is_local_domain(domain) || self.config.smtpd.is_relay_domain(domain);
        if ours || authenticated || self.config.smtpd.is_relay_client(client) {
            Verdict::Accept(path.to_owned())
        } else {
            Verdict::Refuse(Refusal::new(
                554,
                "5.7.1",
                format!("<{path}>: Relay access denied"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let text = r#"
hostname = "mx.example.org"
[smtpd]
relay_networks = ["192.0.2.0/24"]
relay_domains = ["relay.example", ".sub.example"]
[router]
local_domains = ["localhost", "example.org"]
"#;
        let config =
            Config::from_toml_str(text, "test", std::path::Path::new("/")).expect("config");
        Policy::new(&config)
    }

    fn accepted(v: &Verdict) -> bool {
        matches!(v, Verdict::Accept(_))
    }

    #[test]
    fn relay_table() {
        let p = policy();
        let inside: IpAddr = "192.0.2.7".parse().expect("ip");
        let outside: IpAddr = "198.51.100.1".parse().expect("ip");
        // (recipient, from inside, from outside, authenticated outside)
        let table = [
            ("joe@example.org", true, true, true),
            ("joe@EXAMPLE.ORG", true, true, true),
            ("joe@mx.example.org", true, true, true),
            ("joe@localhost", true, true, true),
            ("joe@relay.example", true, true, true),
            ("joe@a.sub.example", true, true, true),
            ("joe@sub.example", true, false, true),
            ("joe@elsewhere.example", true, false, true),
            ("joe@example.org.evil.example", true, false, true),
            ("joe@[192.0.2.1]", true, false, true),
        ];
        for (rcpt, want_in, want_out, want_auth) in table {
            assert_eq!(
                accepted(&p.check_recipient(rcpt, false, inside, false)),
                want_in,
                "{rcpt} inside"
            );
            assert_eq!(
                accepted(&p.check_recipient(rcpt, false, outside, false)),
                want_out,
                "{rcpt} outside"
            );
            assert_eq!(
                accepted(&p.check_recipient(rcpt, false, outside, true)),
                want_auth,
                "{rcpt} auth"
            );
        }
        match p.check_recipient("joe@elsewhere.example", false, outside, false) {
            Verdict::Refuse(r) => assert_eq!((r.code, r.enhanced.as_ref()), (554, "5.7.1")),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn address_table() {
        let p = policy();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        // The policy's codes are its own literals.
        let refused = |v: Verdict| match v {
            Verdict::Refuse(Refusal {
                code,
                enhanced: Cow::Borrowed(enhanced),
                ..
            }) => Some((code, enhanced)),
            Verdict::Refuse(r) => panic!("not a literal code: {r:?}"),
            Verdict::Accept(_) => None,
        };
        assert_eq!(
            p.check_recipient("Postmaster", false, ip, false),
            Verdict::Accept("postmaster@mx.example.org".into())
        );
        assert_eq!(
            refused(p.check_recipient("joe", false, ip, false)),
            Some((501, "5.1.3"))
        );
        assert_eq!(
            refused(p.check_recipient("jö@example.org", false, ip, false)),
            Some((553, "5.6.7"))
        );
        assert_eq!(
            refused(p.check_recipient("jö@example.org", true, ip, false)),
            None
        );
        assert_eq!(
            refused(p.check_recipient("a b@example.org", false, ip, false)),
            Some((501, "5.1.3"))
        );
        assert_eq!(refused(p.check_sender("", false)), None);
        assert_eq!(refused(p.check_sender("a@b.example", false)), None);
        assert_eq!(
            refused(p.check_sender("nodomain", false)),
            Some((553, "5.1.7"))
        );
        assert_eq!(
            refused(p.check_sender("ü@b.example", false)),
            Some((553, "5.6.7"))
        );
    }
}
