//! Where a job goes: a static next hop or a domain, with the TLS policy
//! that applies, and the addresses to try, in order.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use skein_config::{Config, HostPort, TlsPolicy};
use skein_proto::Job;
use tracing::debug;

use crate::error::SmtpError;

/// What a connection is for. Jobs with equal destinations share a
/// connection; a job with another one closes it and opens a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The next hop or the domain.
    pub target: Target,
    /// The STARTTLS policy: the matching route's `tls`, else `smtp.tls`.
    pub tls: TlsPolicy,
    /// Whether a static next hop's route asks for DANE itself: `dane` as
    /// the default (`smtp.tls`) applies to MX-routed mail only.
    pub nexthop_dane: bool,
}

/// The two ways of finding the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A static route's next hop: no MX lookup.
    Static(HostPort),
    /// A domain: MX lookup, else its addresses (implicit MX).
    Domain(String),
}

impl Destination {
    /// The destination of `job`: its `nexthop` when it has one (a route
    /// set it), else the thread's host as a domain.
    pub fn for_job(config: &Config, job: &Job) -> Result<Destination, SmtpError> {
        // The route that applies is the one of the recipients' domain:
        // for a static route the thread's host is the next hop, not a
        // domain, so it cannot be looked up by the thread. The router puts
        // recipients whose routes set different TLS policies in different
        // threads, so they agree; if a reload changed a route since they
        // were queued they may not, and the strictest policy among them
        // applies (never a weaker one than some recipient's route asks).
        let routes: Vec<Option<&skein_config::Route>> = job
            .recipients
            .iter()
            .map(|r| {
                let domain = r
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
                    .unwrap_or_else(|| job.thread.host.clone());
                config.route_for(&domain)
            })
            .collect();
        let tls = routes
            .iter()
            .map(|route| config.tls_policy(*route))
            .max()
            .unwrap_or_else(|| config.tls_policy(None));
        let target = match &job.nexthop {
            Some(hop) => Target::Static(hop.parse().map_err(|e| {
                SmtpError::Config(format!("next hop {hop:?} of {}: {e}", job.queue_id))
            })?),
            None => {
                let host = job.thread.host.trim_end_matches('.').to_ascii_lowercase();
                if host.is_empty() {
                    return Err(SmtpError::Config(format!(
                        "job {} for thread {} names no host",
                        job.id, job.thread
                    )));
                }
                Target::Domain(host)
            }
        };
        let nexthop_dane = matches!(target, Target::Static(_))
            && routes
                .iter()
                .any(|route| route.is_some_and(|r| r.tls == Some(TlsPolicy::Dane)));
        Ok(Destination {
            target,
            tls,
            nexthop_dane,
        })
    }
}

/// One server to try: its name (for logs, `Remote-MTA` and certificate
/// checks) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The host name (or IP address) as the route or the MX record gave it.
    pub name: String,
    /// Its addresses with the port, in the order to try them.
    pub addrs: Vec<SocketAddr>,
}

/// Finds the servers for a destination: MX records (RFC 5321 §5.1) with
/// hickory-resolver, addresses for static next hops.
pub struct Resolver {
    /// `None` when no resolver could be set up (no usable
    /// `/etc/resolv.conf`); lookups then fail with the reason, and mail is
    /// deferred.
    dns: Result<TokioResolver, String>,
    /// Whether `smtp.nameservers` named the servers (then static next-hop
    /// names are looked up there too, not through the system).
    explicit: bool,
    /// Our own name: an MX pointing at it is us.
    hostname: String,
    /// The addresses we accept mail on at `port` (from `smtpd.listen`).
    own: Vec<IpAddr>,
    /// `smtp.port`.
    port: u16,
    /// The validating resolver DANE trusts (policy `dane`).
    pub secure: crate::dane::SecureDns,
    /// The MTA-STS policy cache, with `smtp.mta_sts`.
    pub sts: Option<crate::sts::Sts>,
}

impl Resolver {
    /// The resolver `config` asks for: `smtp.nameservers`, else the
    /// system's configuration. Must be called inside the runtime.
    pub fn new(config: &Config) -> Resolver {
        let smtp = &config.smtp;
        let explicit = !smtp.nameservers.is_empty();
        let dns = if explicit {
            let servers = smtp
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .build()
            .map_err(|e| e.to_string())
        } else {
            TokioResolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| format!("no usable resolver configuration: {e}"))
        };
        let own = config
            .smtpd
            .listen
            .iter()
            .filter(|a| a.port() == smtp.port && !a.ip().is_unspecified())
            .map(|a| a.ip())
            .collect();
        let uses_dane = config.smtp.tls == TlsPolicy::Dane
            || config.route.iter().any(|r| r.tls == Some(TlsPolicy::Dane));
        let secure = if uses_dane {
            crate::dane::SecureDns::new(&smtp.nameservers)
        } else {
            crate::dane::SecureDns::disabled()
        };
        let sts = smtp.mta_sts.then(|| {
            crate::sts::Sts::new(
                &config.spool.dir,
                smtp.mta_sts_port,
                smtp.ca_file.as_deref(),
            )
        });
        Resolver {
            sts,
            secure,
            dns,
            explicit,
            hostname: config.hostname.trim_end_matches('.').to_ascii_lowercase(),
            own,
            port: smtp.port,
        }
    }

    /// The servers to try for `target`, best first.
    ///
    /// A static next hop is one candidate (its literal address, or its
    /// name's addresses). A domain's MX records are taken in preference
    /// order, equal preferences in random order, each with its addresses;
    /// without MX records the domain's own addresses stand in (implicit
    /// MX). A null MX fails the mail (5.1.10), a domain that does not
    /// exist too (5.1.2); an MX that is this host, and every MX not
    /// preferred to it, is dropped (5.4.6 if nothing is left).
    pub async fn candidates(&self, target: &Target) -> Result<Vec<Candidate>, SmtpError> {
        match target {
            Target::Static(hop) => {
                let addrs = self.static_addresses(&hop.host, hop.port).await?;
                Ok(vec![Candidate {
                    name: hop.host.clone(),
                    addrs,
                }])
            }
            Target::Domain(domain) => self.mx_candidates(domain).await,
        }
    }

    fn dns(&self) -> Result<&TokioResolver, SmtpError> {
        self.dns.as_ref().map_err(|detail| SmtpError::Resolve {
            host: "(resolver)".into(),
            detail: detail.clone(),
        })
    }

    async fn static_addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SmtpError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let resolve = |detail: String| SmtpError::Resolve {
            host: host.to_owned(),
            detail,
        };
        let addrs: Vec<SocketAddr> = if self.explicit {
            self.addresses(host)
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()
        } else {
            // The system's resolver, /etc/hosts included: a static route
            // may well name a host only the local files know.
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| resolve(e.to_string()))?
                .collect()
        };
        if addrs.is_empty() {
            return Err(resolve("no address".into()));
        }
        Ok(addrs)
    }

    /// The A and AAAA records of `host`; empty when it has none.
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, SmtpError> {
        match self.dns()?.lookup_ip(fqdn(host)).await {
            Ok(found) => Ok(found.iter().collect()),
            Err(e) if e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(SmtpError::Resolve {
                host: host.to_owned(),
                detail: e.to_string(),
            }),
        }
    }

    /// The addresses of `host` (for the MTA-STS policy host).
    pub async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        self.addresses(host).await.map_err(|e| e.to_string())
    }

    /// The TXT records of `name`, each its strings joined; none when it
    /// has none.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        let dns = self.dns().map_err(|e| e.to_string())?;
        match dns.txt_lookup(fqdn(name)).await {
            Ok(found) => Ok(found
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn mx_candidates(&self, domain: &str) -> Result<Vec<Candidate>, SmtpError> {
        let hosts = match self.dns()?.mx_lookup(fqdn(domain)).await {
            Ok(lookup) => {
                let records: Vec<(u16, Name)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                        _ => None,
                    })
                    .collect();
                let (null, real): (Vec<_>, Vec<_>) =
                    records.into_iter().partition(|(_, name)| name.is_root());
                if real.is_empty() && !null.is_empty() {
                    return Err(SmtpError::NullMx {
                        domain: domain.to_owned(),
                    });
                }
                real.into_iter()
                    .map(|(pref, name)| {
                        (
                            pref,
                            name.to_ascii().trim_end_matches('.').to_ascii_lowercase(),
                        )
                    })
                    .collect::<Vec<_>>()
            }
            Err(e) if e.is_nx_domain() => {
                return Err(SmtpError::NoSuchDomain {
                    domain: domain.to_owned(),
                    detail: "the domain does not exist".into(),
                });
            }
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => {
                return Err(SmtpError::Resolve {
                    host: domain.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        if hosts.is_empty() {
            // Implicit MX (RFC 5321 §5.1): the domain itself.
            let addrs = self.addresses(domain).await?;
            if addrs.is_empty() {
                return Err(SmtpError::NoSuchDomain {
                    domain: domain.to_owned(),
                    detail: "no MX and no address records".into(),
                });
            }
            self.check_not_ourselves(domain, domain, &addrs)?;
            return Ok(vec![Candidate {
                name: domain.to_owned(),
                addrs: addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port))
                    .collect(),
            }]);
        }
        let hosts = order_by_preference(hosts);
        let mut out = Vec::new();
        let mut last_error = None;
        for (pref, name) in &hosts {
            let addrs = match self.addresses(name).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    debug!(mx = %name, error = %e, "MX host not resolved");
                    last_error = Some(e);
                    continue;
                }
            };
            if self.is_ourselves(name, &addrs) {
                // RFC 5321 §5.1: we are an MX of the domain; only hosts
                // preferred to us may take the mail.
                let better: Vec<Candidate> = out
                    .into_iter()
                    .filter(|c: &Candidate| hosts.iter().any(|(p, n)| n == &c.name && p < pref))
                    .collect();
                if better.is_empty() {
                    return Err(SmtpError::Loop {
                        domain: domain.to_owned(),
                    });
                }
                return Ok(better);
            }
            if addrs.is_empty() {
                debug!(mx = %name, "MX host has no address");
                continue;
            }
            out.push(Candidate {
                name: name.clone(),
                addrs: addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, self.port))
                    .collect(),
            });
        }
        if out.is_empty() {
            return Err(last_error.unwrap_or_else(|| SmtpError::Resolve {
                host: domain.to_owned(),
                detail: "no MX host has an address".into(),
            }));
        }
        Ok(out)
    }

    fn is_ourselves(&self, name: &str, addrs: &[IpAddr]) -> bool {
        name == self.hostname || (!addrs.is_empty() && addrs.iter().all(|a| self.own.contains(a)))
    }

    fn check_not_ourselves(
        &self,
        domain: &str,
        name: &str,
        addrs: &[IpAddr],
    ) -> Result<(), SmtpError> {
        if self.is_ourselves(name, addrs) {
            return Err(SmtpError::Loop {
                domain: domain.to_owned(),
            });
        }
        Ok(())
    }
}

/// `name.`, so that no search domain is tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// MX hosts by preference, lowest first; hosts of equal preference in a
/// random order (RFC 5321 §5.1), so that load spreads across them.
fn order_by_preference(hosts: Vec<(u16, String)>) -> Vec<(u16, String)> {
    let random = RandomState::new();
    let mut keyed: Vec<(u16, u64, (u16, String))> = hosts
        .into_iter()
        .map(|(pref, name)| (pref, random.hash_one(&name), (pref, name)))
        .collect();
    keyed.sort_by_key(|(pref, key, _)| (*pref, *key));
    keyed.into_iter().map(|(_, _, host)| host).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::{BodyType, JobId, JobRecipient, Notify, ThreadKey};
    use std::path::Path;

    fn job(host: &str, nexthop: Option<&str>, rcpt: &str) -> Job {
        Job {
            id: JobId(1),
            queue_id: "Q".into(),
            thread: ThreadKey::new("smtp", host),
            nexthop: nexthop.map(str::to_owned),
            sender: String::new(),
            envid: None,
            ret: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            message_path: "/x".into(),
            message_offset: 0,
            size: 1,
            attempt: 0,
            recipients: vec![JobRecipient {
                index: 0,
                address: rcpt.into(),
                orcpt: None,
                notify: Notify::default(),
            }],
        }
    }

    #[test]
    fn destinations() {
        let config = Config::from_toml_str(
            "[smtp]\ntls = \"opportunistic\"\n\n[[route]]\ndomain = \"secure.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:2600\"\ntls = \"verify\"\n",
            "test",
            Path::new("/"),
        )
        .expect("config");
        let d = Destination::for_job(
            &config,
            &job("127.0.0.1:2600", Some("127.0.0.1:2600"), "a@secure.test"),
        )
        .expect("ok");
        assert_eq!(d.tls, TlsPolicy::Verify);
        assert_eq!(
            d.target,
            Target::Static("127.0.0.1:2600".parse().expect("hop"))
        );
        let d =
            Destination::for_job(&config, &job("Example.ORG.", None, "a@example.org")).expect("ok");
        assert_eq!(d.tls, TlsPolicy::Opportunistic);
        assert_eq!(d.target, Target::Domain("example.org".into()));
        assert!(Destination::for_job(&config, &job("x", Some("a:b:c"), "a@x")).is_err());
        // Recipients whose routes disagree (a reload since they were
        // queued): the strictest policy, whichever recipient comes first.
        let mut mixed = job("127.0.0.1:2600", Some("127.0.0.1:2600"), "a@plain.test");
        let mut strict = mixed.recipients[0].clone();
        strict.address = "b@Secure.Test".into();
        mixed.recipients.push(strict);
        let d = Destination::for_job(&config, &mixed).expect("ok");
        assert_eq!(d.tls, TlsPolicy::Verify);
    }

    #[tokio::test]
    async fn literal_addresses_need_no_dns() {
        let config = Config::from_toml_str(
            "[smtp]\nnameservers = [\"127.0.0.1:9\"]\n",
            "t",
            Path::new("/"),
        )
        .expect("config");
        let resolver = Resolver::new(&config);
        let c = resolver
            .candidates(&Target::Static("127.0.0.1:2525".parse().expect("hop")))
            .await
            .expect("literal");
        assert_eq!(c[0].addrs, vec!["127.0.0.1:2525".parse().expect("addr")]);
    }

    #[test]
    fn preference_order_shuffles_only_ties() {
        let hosts = vec![
            (20, "c".to_owned()),
            (10, "a".to_owned()),
            (10, "b".to_owned()),
            (5, "z".to_owned()),
        ];
        let mut seen_b_first = false;
        let mut seen_a_first = false;
        for _ in 0..200 {
            let order = order_by_preference(hosts.clone());
            let prefs: Vec<u16> = order.iter().map(|(p, _)| *p).collect();
            assert_eq!(prefs, [5, 10, 10, 20]);
            assert_eq!(order[0].1, "z");
            assert_eq!(order[3].1, "c");
            match order[1].1.as_str() {
                "a" => seen_a_first = true,
                _ => seen_b_first = true,
            }
        }
        assert!(
            seen_a_first && seen_b_first,
            "equal preferences are shuffled"
        );
    }
}
