//! The configuration as the rest of skein sees it: plain typed structs with
//! every default filled in and every relative path already made absolute.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clause::Clause;
use crate::dkim::DkimKey;
use crate::domain::pattern_matches;
use crate::net::{IpNetwork, TlsPolicy};
use crate::route::Route;
use crate::units::ByteSize;

/// The account a daemon started as root switches to when `user` is not
/// set. Nothing that reads network input, message content or another
/// user's submission keeps root: with no account of this name such a
/// start is refused (see `skein_daemon::drop_privileges`).
pub const DEFAULT_USER: &str = "skein";

/// The whole skein configuration, one TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `hostname`: this MTA's name in EHLO, Received headers and DSN
    /// `Reporting-MTA`. Default: the machine's host name.
    pub hostname: String,
    /// `user`: the account the daemons switch to when started as root.
    /// `None` (the default, or `""`): [`DEFAULT_USER`]. A daemon started
    /// as an ordinary user stays who it is either way; see
    /// [`Config::run_as`].
    pub user: Option<String>,
    /// `[spool]`.
    pub spool: SpoolConfig,
    /// `[smtpd]`: the inbound SMTP server.
    pub smtpd: SmtpdConfig,
    /// `[router]`.
    pub router: RouterConfig,
    /// `[[route]]`: static routes, tried in order before MX routing.
    pub route: Vec<Route>,
    /// `[[dkim]]`: signing keys, first match on the `From:` domain wins.
    pub dkim: Vec<DkimKey>,
    /// `[local]`: the Maildir delivery agent.
    pub local: LocalConfig,
    /// `[scheduler]`.
    pub scheduler: SchedulerConfig,
    /// `[tls]`: the server certificate.
    pub tls: TlsConfig,
    /// `[smtp]`: the outbound SMTP agent.
    pub smtp: SmtpConfig,
    /// `[supervisor]`: `skein start`'s restarts.
    pub supervisor: SupervisorConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the scheduler's Prometheus text endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// `metrics.listen`: where `GET /metrics` is answered, e.g.
    /// `127.0.0.1:9465`. `None` (the default, or `""`): no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[spool]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// `spool.dir`: the spool directory tree. Default `var/spool` under the
    /// working directory.
    pub dir: PathBuf,
    /// `spool.drop_group`: the group the setgid `skein-postdrop` runs
    /// as, through which local users who may not write the spool submit
    /// into `maildrop/`. Default `skeindrop`. `skein start` as root gives
    /// `maildrop/` to it when it exists.
    pub drop_group: String,
}

/// `[smtpd]`: the inbound SMTP server's sockets, relay policy and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpdConfig {
    /// `smtpd.listen`: addresses for plain SMTP (port 25 style).
    /// Default `["127.0.0.1:2525"]`.
    pub listen: Vec<SocketAddr>,
    /// `smtpd.submission`: addresses for message submission (port 587
    /// style: STARTTLS and AUTH). Default none.
    pub submission: Vec<SocketAddr>,
    /// `smtpd.relay_networks`: clients in these networks may relay to any
    /// domain. Default `["127.0.0.0/8", "::1/128"]`.
    pub relay_networks: Vec<IpNetwork>,
    /// `smtpd.relay_domains`: domain patterns (`"example.org"`,
    /// `".example.org"`) that anyone may send to, besides the local
    /// domains. `"*"` is refused: it would be an open relay. Default none.
    pub relay_domains: Vec<String>,
    /// `smtpd.max_message_size`: the largest message accepted (advertised
    /// in EHLO SIZE); 0 = no limit. Default 50M.
    pub max_message_size: ByteSize,
    /// `smtpd.max_line_length`: the longest line, in octets including CRLF,
    /// accepted in commands and in message text. Default 1000, the RFC 5321
    /// §4.5.3.1.6 text line limit; at least 512 (§4.5.3.1.4).
    pub max_line_length: u32,
    /// `smtpd.max_recipients`: RCPT TO commands accepted per message.
    /// Default 1000.
    pub max_recipients: u32,
    /// `smtpd.max_errors`: erroneous commands tolerated before the server
    /// hangs up. Default 20.
    pub max_errors: u32,
    /// `smtpd.max_connections`: simultaneous connections in total.
    /// Default 200.
    pub max_connections: u32,
    /// `smtpd.max_connections_per_client`: simultaneous connections from one
    /// IP address; 0 = no per-client limit. Default 20.
    pub max_connections_per_client: u32,
    /// `smtpd.command_timeout`: how long the server waits for the next
    /// command. Default 5m (RFC 5321 §4.5.3.2.7).
    pub command_timeout: Duration,
    /// `smtpd.data_timeout`: how long the server waits for more message
    /// text during DATA or BDAT. Default 10m.
    pub data_timeout: Duration,
    /// `smtpd.password_file`: the AUTH credentials for submission. `None`
    /// (the default, or `""`): no AUTH.
    pub password_file: Option<PathBuf>,
    /// `smtpd.verify_local_recipients`: whether `RCPT TO` for a local
    /// domain is refused (`550`) when the router would not deliver it (no
    /// such user, a broken alias), instead of accepting it and bouncing
    /// later. Default true; off where the server cannot see the user
    /// database.
    pub verify_local_recipients: bool,
    /// `smtpd.reserved_connections_percent`: the share of
    /// `max_connections` (0 to 50 %) kept for client addresses with no
    /// connection open; a client that already has one is refused once
    /// only the reserve is left. Default 10.
    pub reserved_connections_percent: u32,
    /// `smtpd.max_connection_rate`: connection attempts one client may
    /// make per `connection_rate_interval`; more are answered `421`.
    /// 0 = no limit. Default 60.
    pub max_connection_rate: u32,
    /// `smtpd.connection_rate_interval`: the window of
    /// `max_connection_rate`. Default 1m.
    pub connection_rate_interval: Duration,
    /// `smtpd.rate_limit_exceptions`: clients the rate limit does not
    /// apply to. Default loopback (`127.0.0.0/8`, `::1/128`).
    pub rate_limit_exceptions: Vec<IpNetwork>,
    /// `smtpd.stress_threshold_percent`: from this share of
    /// `max_connections` open (1 to 100 %), the server is under stress and
    /// uses the `stress_*` limits. Default 75.
    pub stress_threshold_percent: u32,
    /// `smtpd.stress_command_timeout`: under stress, the longest wait for
    /// a command, and for each piece of message text. Default 10s.
    pub stress_command_timeout: Duration,
    /// `smtpd.stress_max_errors`: under stress, erroneous commands
    /// tolerated per connection. Default 3.
    pub stress_max_errors: u32,
    /// `smtpd.min_data_rate`: bytes per second that message text must
    /// average, after a first `data_timeout`, for DATA and BDAT to go on.
    /// 0 = no minimum. Default 500.
    pub min_data_rate: u32,
    /// `smtpd.milters`: content filters (`unix:/path`, `inet:host:port`),
    /// in order. Default none.
    pub milters: Vec<MilterSpec>,
    /// `smtpd.submission_milters`: the filters for mail on the
    /// submission listener. `None` (the default, or `""`): the same as
    /// `smtpd.milters`; `[]`: none there.
    pub submission_milters: Option<Vec<MilterSpec>>,
    /// `smtpd.milter_default_action`: what a message gets when a filter
    /// fails or times out. Default tempfail.
    pub milter_default_action: MilterAction,
    /// `smtpd.milter_connect_timeout`: connecting and negotiating.
    /// Default 30s.
    pub milter_connect_timeout: Duration,
    /// `smtpd.milter_timeout`: each command before the content. Default 30s.
    pub milter_timeout: Duration,
    /// `smtpd.milter_content_timeout`: header, body and end of message.
    /// Default 5m.
    pub milter_content_timeout: Duration,
}

/// What a message gets when a content filter fails (Postfix's
/// `milter_default_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MilterAction {
    /// Go on without that filter.
    Accept,
    /// `451 4.7.1`: the client tries again later.
    #[default]
    Tempfail,
    /// `550 5.7.1`.
    Reject,
}

impl MilterAction {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MilterAction::Accept => "accept",
            MilterAction::Tempfail => "tempfail",
            MilterAction::Reject => "reject",
        }
    }
}

/// One content filter in a list: its address and, where it sets them,
/// its own timeouts and default action (Postfix 3's `{ inet:…,
/// connect_timeout=…, default_action=… }`). Written as the address alone,
/// or as a table: `{ address = "inet:127.0.0.1:3310", default_action =
/// "accept", timeout = "10s" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    /// `unix:/path` or `inet:ADDRESS:PORT` (sendmail's `inet:PORT@ADDRESS`
    /// too), the address an IP address.
    pub address: String,
    /// Instead of `smtpd.milter_connect_timeout`.
    pub connect_timeout: Option<Duration>,
    /// Instead of `smtpd.milter_timeout`.
    pub timeout: Option<Duration>,
    /// Instead of `smtpd.milter_content_timeout`.
    pub content_timeout: Option<Duration>,
    /// Instead of `smtpd.milter_default_action`.
    pub default_action: Option<MilterAction>,
}

impl MilterSpec {
    /// A filter at `address` with the list's settings.
    pub fn new(address: impl Into<String>) -> MilterSpec {
        MilterSpec {
            address: address.into(),
            connect_timeout: None,
            timeout: None,
            content_timeout: None,
            default_action: None,
        }
    }

    /// Whether it sets nothing of its own (then it is written as its
    /// address alone).
    pub fn is_plain(&self) -> bool {
        self.connect_timeout.is_none()
            && self.timeout.is_none()
            && self.content_timeout.is_none()
            && self.default_action.is_none()
    }
}

impl From<&str> for MilterSpec {
    fn from(address: &str) -> MilterSpec {
        MilterSpec::new(address)
    }
}

impl std::str::FromStr for MilterAction {
    type Err = crate::ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "accept" => Ok(MilterAction::Accept),
            "tempfail" => Ok(MilterAction::Tempfail),
            "reject" => Ok(MilterAction::Reject),
            _ => Err(crate::ValueError(format!(
                "invalid milter action {text:?} (expected \"accept\", \"tempfail\" or \"reject\")"
            ))),
        }
    }
}

impl SmtpdConfig {
    /// Whether a client at `ip` may relay: it lies in `relay_networks`.
    pub fn is_relay_client(&self, ip: IpAddr) -> bool {
        self.relay_networks.iter().any(|net| net.contains(ip))
    }

    /// Whether mail to `domain` is accepted from anyone because a
    /// `relay_domains` pattern matches it. Local domains are the router's
    /// list; check [`RouterConfig::is_local_domain`] as well.
    pub fn is_relay_domain(&self, domain: &str) -> bool {
        self.relay_domains
            .iter()
            .any(|pattern| pattern_matches(pattern, domain))
    }
}

/// `[supervisor]`: how `skein start` restarts a service that exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// `supervisor.restart_delay`: the first wait of a crash loop, doubling
    /// with each further quick exit. Default 1s.
    pub restart_delay: Duration,
    /// `supervisor.restart_delay_max`: the longest wait. Default 1m.
    pub restart_delay_max: Duration,
    /// `supervisor.healthy_after`: a service that ran this long before it
    /// exited is restarted at once, and the back-off starts again; one
    /// that exits sooner is in a crash loop. Default 10s.
    pub healthy_after: Duration,
}

/// `[router]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// `router.local_domains`: domains delivered here, to Maildirs (stored
    /// in lower case). Default `["localhost"]`.
    pub local_domains: Vec<String>,
    /// `router.aliases`: an `/etc/aliases`-style file. `None` (the default,
    /// or `""`): no aliases.
    pub aliases: Option<PathBuf>,
    /// `router.allow_pipe_targets`: whether aliases may deliver to
    /// `|command`. Default false: a pipe runs a program with the router's
    /// privileges, which the operator should opt into.
    pub allow_pipe_targets: bool,
    /// `router.allow_file_targets`: whether aliases may deliver to
    /// `/path/file`. Default false, for the same reason.
    pub allow_file_targets: bool,
    /// `router.scan_interval`: how often the router rescans `incoming/`
    /// in case a wake-up was lost. Default 30s.
    pub scan_interval: Duration,
    /// `router.milters`: content filters for local submissions
    /// (`sendmail`, and through `maildrop/`), Postfix's
    /// `non_smtpd_milters`; the `smtpd.milter_*` timeouts and default
    /// action apply unless a filter sets its own. Default none.
    pub milters: Vec<MilterSpec>,
}

impl RouterConfig {
    /// Whether `domain` is one of `local_domains` (case-insensitive; one
    /// trailing dot ignored).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.local_domains
            .iter()
            .any(|local| pattern_matches(local, domain))
    }
}

/// `[local]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    /// `local.maildir_root`: user `u`'s Maildir is `<maildir_root>/u/`
    /// with `tmp/`, `new/` and `cur/`. Default `var/mail` under the working
    /// directory.
    pub maildir_root: PathBuf,
    /// `local.home_mailbox`: when set (a relative path ending in `/`,
    /// e.g. `Maildir/`, as Postfix's `home_mailbox`), mail for a system
    /// account other than root goes to that Maildir under the account's
    /// home directory, written as the account. Default empty: every local
    /// user's Maildir is under `maildir_root`, owned by the skein account.
    pub home_mailbox: String,
}

impl LocalConfig {
    /// The Maildir of `user`. The caller has checked that `user` is a
    /// single, safe path component.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.maildir_root.join(user)
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// `scheduler.retries`: the delays between successive attempts of a
    /// thread; after the last one, the last delay repeats. Default
    /// `["1m", "5m", "15m", "30m", "1h", "2h", "4h"]`.
    pub retries: Vec<Duration>,
    /// `scheduler.expiry`: how long a message may stay undelivered before
    /// its remaining recipients fail and bounce. Default 5d.
    pub expiry: Duration,
    /// `scheduler.maxta`: the most agents running at once in total;
    /// 0 (the default) = automatic, chosen by the scheduler.
    pub maxta: u32,
    /// `scheduler.delay_warning`: send a "still trying" DSN once a message
    /// has waited this long. `None` (the default, or `""`): never.
    pub delay_warning: Option<Duration>,
    /// `scheduler.agent_timeout`: an agent that holds jobs and says nothing
    /// for this long is considered hung: it is killed and its unreported
    /// recipients are deferred. Default 10m.
    pub agent_timeout: Duration,
    /// `[[scheduler.clause]]`: first match on `channel/host` wins. Default
    /// (when the file has none): [`Clause::defaults`].
    pub clause: Vec<Clause>,
}

impl SchedulerConfig {
    /// The delay before the next attempt after `failures` failed attempts
    /// (1 = after the first failure); the last entry of `retries` repeats.
    pub fn retry_delay(&self, failures: usize) -> Duration {
        let index = failures
            .saturating_sub(1)
            .min(self.retries.len().saturating_sub(1));
        self.retries
            .get(index)
            .copied()
            .unwrap_or(DEFAULT_RETRY_FALLBACK)
    }
}

/// Only reachable if a caller built a `SchedulerConfig` with no retries by
/// hand (a parsed one always has some).
const DEFAULT_RETRY_FALLBACK: Duration = Duration::from_secs(60);

/// `[tls]`: the certificate the inbound server presents for STARTTLS.
/// Both or neither.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `tls.cert`: PEM certificate chain. `None` (default, or `""`): the
    /// server offers no STARTTLS.
    pub cert: Option<PathBuf>,
    /// `tls.key`: PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

/// `[smtp]`: the outbound SMTP agent. Timeouts default to RFC 5321
/// §4.5.3.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// `smtp.tls`: STARTTLS policy; a route's `tls` overrides it.
    /// Default opportunistic.
    pub tls: TlsPolicy,
    /// `smtp.connect_timeout`: TCP connect, per address. Default 30s.
    pub connect_timeout: Duration,
    /// `smtp.greeting_timeout`: the 220 greeting. Default 5m.
    pub greeting_timeout: Duration,
    /// `smtp.ehlo_timeout`: the EHLO/HELO reply. Default 5m.
    pub ehlo_timeout: Duration,
    /// `smtp.mail_timeout`: the MAIL FROM reply. Default 5m.
    pub mail_timeout: Duration,
    /// `smtp.rcpt_timeout`: each RCPT TO reply. Default 5m.
    pub rcpt_timeout: Duration,
    /// `smtp.data_init_timeout`: the 354 after DATA. Default 2m.
    pub data_init_timeout: Duration,
    /// `smtp.data_block_timeout`: each write of message text (or BDAT
    /// chunk) to make progress. Default 3m.
    pub data_block_timeout: Duration,
    /// `smtp.data_term_timeout`: the reply after the final dot or last
    /// BDAT. Default 10m.
    pub data_term_timeout: Duration,
    /// `smtp.idle_timeout`: how long a connection with no job is kept open
    /// for the next message to the same host. Default 30s.
    pub idle_timeout: Duration,
    /// `smtp.max_recipients_per_transaction`: RCPT TOs per MAIL; more
    /// recipients are split over several transactions. Default 100 (RFC
    /// 5321 §4.5.3.1.8 minimum every server must accept).
    pub max_recipients_per_transaction: u32,
    /// `smtp.window`: the most bytes sent but not yet acknowledged by a
    /// reply, bounding how far pipelining runs ahead. Default 1M.
    pub window: ByteSize,
    /// `smtp.port`: the TCP port of MX hosts (and of a domain's own
    /// addresses when it has no MX). Default 25. A route's `nexthop`
    /// carries its own port.
    pub port: u16,
    /// `smtp.nameservers`: DNS servers (`ip:port`, UDP then TCP) for MX and
    /// address lookups. Empty (default): the system's resolver
    /// configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// `smtp.mta_sts`: honour MTA-STS policies (RFC 8461) for MX-routed
    /// mail. Default false.
    pub mta_sts: bool,
    /// `smtp.mta_sts_port`: the HTTPS port policies are fetched from.
    /// Default 443 (RFC 8461 §3.3); another port is for tests.
    pub mta_sts_port: u16,
    /// `smtp.ca_file`: extra trust anchors (PEM) beside the system's, for
    /// MTA-STS: policy fetches and the sessions a policy covers.
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// The account a daemon started as root becomes: `user`, else
    /// [`DEFAULT_USER`].
    pub fn run_as(&self) -> &str {
        self.user.as_deref().unwrap_or(DEFAULT_USER)
    }

    /// The first `[[route]]` whose domain pattern matches `domain`.
    pub fn route_for(&self, domain: &str) -> Option<&Route> {
        self.route.iter().find(|route| route.matches(domain))
    }

    /// The first `[[scheduler.clause]]` whose glob matches `channel/host`.
    pub fn clause_for(&self, channel: &str, host: &str) -> Option<&Clause> {
        self.scheduler
            .clause
            .iter()
            .find(|clause| clause.matches(channel, host))
    }

    /// The SMTP agent's TLS policy for mail taking `route` (or no route):
    /// the route's override, else `smtp.tls`.
    pub fn tls_policy(&self, route: Option<&Route>) -> TlsPolicy {
        route.and_then(|r| r.tls).unwrap_or(self.smtp.tls)
    }

    /// Every setting at its built-in default, relative paths resolved
    /// against `cwd`.
    pub(crate) fn builtin(cwd: &Path, hostname: String) -> Config {
        Config {
            hostname,
            user: None,
            spool: SpoolConfig {
                dir: resolve(cwd, Path::new("var/spool")),
                drop_group: "skeindrop".to_owned(),
            },
            smtpd: SmtpdConfig {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
                submission: Vec::new(),
                relay_networks: loopback(),
                relay_domains: Vec::new(),
                max_message_size: ByteSize(50 << 20),
                max_line_length: 1000,
                max_recipients: 1000,
                max_errors: 20,
                max_connections: 200,
                max_connections_per_client: 20,
                command_timeout: minutes(5),
                data_timeout: minutes(10),
                password_file: None,
                verify_local_recipients: true,
                reserved_connections_percent: 10,
                max_connection_rate: 60,
                connection_rate_interval: Duration::from_secs(60),
                rate_limit_exceptions: loopback(),
                stress_threshold_percent: 75,
                stress_command_timeout: Duration::from_secs(10),
                stress_max_errors: 3,
                min_data_rate: 500,
                milters: Vec::new(),
                submission_milters: None,
                milter_default_action: MilterAction::Tempfail,
                milter_connect_timeout: Duration::from_secs(30),
                milter_timeout: Duration::from_secs(30),
                milter_content_timeout: Duration::from_secs(300),
            },
            router: RouterConfig {
                local_domains: vec!["localhost".to_owned()],
                aliases: None,
                allow_pipe_targets: false,
                allow_file_targets: false,
                scan_interval: Duration::from_secs(30),
                milters: Vec::new(),
            },
            route: Vec::new(),
            dkim: Vec::new(),
            local: LocalConfig {
                maildir_root: resolve(cwd, Path::new("var/mail")),
                home_mailbox: String::new(),
            },
            scheduler: SchedulerConfig {
                retries: [1, 5, 15, 30, 60, 120, 240].map(minutes).to_vec(),
                expiry: Duration::from_secs(5 * 86400),
                maxta: 0,
                delay_warning: None,
                agent_timeout: Duration::from_secs(600),
                clause: Clause::defaults(),
            },
            tls: TlsConfig::default(),
            smtp: SmtpConfig {
                tls: TlsPolicy::Dane,
                connect_timeout: Duration::from_secs(30),
                greeting_timeout: minutes(5),
                ehlo_timeout: minutes(5),
                mail_timeout: minutes(5),
                rcpt_timeout: minutes(5),
                data_init_timeout: minutes(2),
                data_block_timeout: minutes(3),
                data_term_timeout: minutes(10),
                idle_timeout: Duration::from_secs(30),
                max_recipients_per_transaction: 100,
                window: ByteSize(1 << 20),
                port: 25,
                nameservers: Vec::new(),
                mta_sts: false,
                mta_sts_port: 443,
                ca_file: None,
            },
            supervisor: SupervisorConfig {
                restart_delay: Duration::from_secs(1),
                restart_delay_max: Duration::from_secs(60),
                healthy_after: Duration::from_secs(10),
            },
            metrics: MetricsConfig::default(),
        }
    }
}

/// `127.0.0.0/8` and `::1/128`.
fn loopback() -> Vec<IpNetwork> {
    vec![
        IpNetwork::constant(IpAddr::from([127, 0, 0, 0]), 8),
        IpNetwork::constant(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 128),
    ]
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// Makes `path` absolute against `cwd` and drops `.` components, so that
/// `./var/spool` and `var/spool` give the same, readable path. `..` is kept:
/// removing it lexically would be wrong across symbolic links.
pub(crate) fn resolve(cwd: &Path, path: &Path) -> PathBuf {
    cwd.join(path).components().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_cwd() {
        let cwd = Path::new("/srv/skein");
        let cases = [
            ("var/spool", "/srv/skein/var/spool"),
            ("./var/spool", "/srv/skein/var/spool"),
            ("var/./spool/", "/srv/skein/var/spool"),
            ("../spool", "/srv/skein/../spool"),
            ("/var/spool/skein", "/var/spool/skein"),
        ];
        for (given, want) in cases {
            assert_eq!(
                resolve(cwd, Path::new(given)),
                PathBuf::from(want),
                "{given}"
            );
        }
    }

    #[test]
    fn retry_delay_repeats_the_last_entry() {
        let config = Config::builtin(Path::new("/"), "localhost".into());
        let cases = [
            (0, 1),
            (1, 1),
            (2, 5),
            (3, 15),
            (7, 240),
            (8, 240),
            (1000, 240),
        ];
        for (failures, mins) in cases {
            assert_eq!(
                config.scheduler.retry_delay(failures),
                minutes(mins),
                "{failures}"
            );
        }
        let mut empty = config.scheduler.clone();
        empty.retries.clear();
        assert_eq!(empty.retry_delay(3), DEFAULT_RETRY_FALLBACK);
    }

    #[test]
    fn relay_and_local_domain_checks() {
        let mut config = Config::builtin(Path::new("/"), "localhost".into());
        config.smtpd.relay_domains = vec!["example.org".into(), ".example.net".into()];
        config.router.local_domains = vec!["localhost".into(), "mx.example.com".into()];
        let relay = [
            ("example.org", true),
            ("EXAMPLE.org.", true),
            ("sub.example.org", false),
            ("a.example.net", true),
            ("example.net", false),
        ];
        for (domain, want) in relay {
            assert_eq!(config.smtpd.is_relay_domain(domain), want, "{domain}");
        }
        let local = [
            ("localhost", true),
            ("LOCALHOST", true),
            ("mx.example.com", true),
            ("example.com", false),
        ];
        for (domain, want) in local {
            assert_eq!(config.router.is_local_domain(domain), want, "{domain}");
        }
        let clients = [
            ("127.0.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.2", true),
            ("192.0.2.1", false),
            ("::2", false),
        ];
        for (ip, want) in clients {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(config.smtpd.is_relay_client(ip), want, "{ip}");
        }
    }

    #[test]
    fn maildir_is_under_the_root() {
        let config = Config::builtin(Path::new("/srv"), "localhost".into());
        assert_eq!(
            config.local.maildir("alice"),
            PathBuf::from("/srv/var/mail/alice")
        );
    }
}
