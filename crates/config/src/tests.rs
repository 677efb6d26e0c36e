//! Whole-file tests: every key, every default, every kind of error with its
//! exact `file:line: key:`, the round trip through `to_toml`, loading, and
//! robustness against mangled input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const CWD: &str = "/srv/skein";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml", Path::new(CWD))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test socket address")
}

fn net(text: &str) -> IpNetwork {
    text.parse().expect("test network")
}

/// A file that sets every key to something other than its default.
const FULL: &str = r#"
hostname = "mx.example.org"
user = "skein"

[spool]
dir = "/var/spool/skein"
drop_group = "maildrop"

[smtpd]
listen = ["0.0.0.0:25", "[::]:25"]
submission = ["0.0.0.0:587"]
relay_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
relay_domains = ["example.net", ".example.com"]
max_message_size = "10M"
max_line_length = 4096
max_recipients = 500
max_errors = 5
max_connections = 50
max_connections_per_client = 0
command_timeout = "2m"
data_timeout = "5m"
password_file = "etc/passwd.skein"
verify_local_recipients = false
reserved_connections_percent = 25
max_connection_rate = 0
connection_rate_interval = "5m"
rate_limit_exceptions = ["192.0.2.0/24"]
stress_threshold_percent = 90
stress_command_timeout = "20s"
stress_max_errors = 1
min_data_rate = 0
milters = ["inet:127.0.0.1:11332", "unix:/run/opendkim/opendkim.sock"]
submission_milters = [{ address = "unix:/run/opendkim/opendkim.sock", default_action = "accept", timeout = "5s" }]
milter_default_action = "accept"
milter_connect_timeout = "5s"
milter_timeout = "10s"
milter_content_timeout = "1m"

[router]
local_domains = ["Example.ORG", "localhost"]
aliases = "etc/aliases"
allow_pipe_targets = true
allow_file_targets = true
milters = ["inet:[::1]:11332"]

[[route]]
domain = "example.test"
channel = "smtp"
nexthop = "127.0.0.1:2600"

[[route]]
domain = ".internal.example"
channel = "smtp"
nexthop = "[2001:db8::25]"
tls = "verify"

[[route]]
domain = "*"
channel = "hold"

[[dkim]]
domain = "Example.ORG"
selector = "s2026"
key = "dkim/example.org.key"
algorithm = "ed25519-sha256"

[[dkim]]
domain = "*"
selector = "rsa1"
signing_domain = "Signer.Example"
key = "/etc/skein/dkim/rsa.key"
headers = ["From", "Subject"]
canonicalization = "simple/relaxed"

[local]
maildir_root = "/home/mail"
home_mailbox = "Mail/inbox/"

[scheduler]
retries = ["30s", "1h30m"]
expiry = "3d"
maxta = 64
delay_warning = "4h"
agent_timeout = "90s"

[[scheduler.clause]]
match = "smtp/*.example.org"
command = "/usr/libexec/skein/skein-smtp"
args = ["--verbose", "-x"]
maxthr = 2
maxring = 5
maxchannel = 40
overfeed = 10
idlemax = "10m"

[[scheduler.clause]]
match = "*"
command = "my-agent"

[supervisor]
restart_delay = "2s"
restart_delay_max = "5m"
healthy_after = "30s"

[tls]
cert = "etc/cert.pem"
key = "/etc/skein/key.pem"

[smtp]
tls = "require"
connect_timeout = "10s"
greeting_timeout = "1m"
ehlo_timeout = "2m"
mail_timeout = "3m"
rcpt_timeout = "4m"
data_init_timeout = "1m30s"
data_block_timeout = "5m"
data_term_timeout = "15m"
idle_timeout = "1m"
max_recipients_per_transaction = 50
window = "256k"
port = 2525
nameservers = ["127.0.0.1:5353", "[::1]:53"]
mta_sts = true
mta_sts_port = 8443
ca_file = "etc/extra-ca.pem"

[metrics]
listen = "127.0.0.1:9465"
"#;

fn full_expected() -> Config {
    let mut special = Clause::new("smtp/*.example.org", "/usr/libexec/skein/skein-smtp");
    special.args = vec!["--verbose".into(), "-x".into()];
    special.maxthr = 2;
    special.maxring = 5;
    special.maxchannel = 40;
    special.overfeed = 10;
    special.idlemax = secs(600);
    Config {
        hostname: "mx.example.org".into(),
        user: Some("skein".into()),
        spool: SpoolConfig {
            dir: "/var/spool/skein".into(),
            drop_group: "maildrop".into(),
        },
        smtpd: SmtpdConfig {
            listen: vec![addr("0.0.0.0:25"), addr("[::]:25")],
            submission: vec![addr("0.0.0.0:587")],
            relay_networks: vec![net("10.0.0.0/8"), net("2001:db8::/32"), net("192.0.2.7/32")],
            relay_domains: vec!["example.net".into(), ".example.com".into()],
            max_message_size: ByteSize(10 << 20),
            max_line_length: 4096,
            max_recipients: 500,
            max_errors: 5,
            max_connections: 50,
            max_connections_per_client: 0,
            command_timeout: secs(120),
            data_timeout: secs(300),
            password_file: Some("/srv/skein/etc/passwd.skein".into()),
            verify_local_recipients: false,
            reserved_connections_percent: 25,
            max_connection_rate: 0,
            connection_rate_interval: secs(300),
            rate_limit_exceptions: vec![net("192.0.2.0/24")],
            stress_threshold_percent: 90,
            stress_command_timeout: secs(20),
            stress_max_errors: 1,
            min_data_rate: 0,
            milters: vec![
                "inet:127.0.0.1:11332".into(),
                "unix:/run/opendkim/opendkim.sock".into(),
            ],
            submission_milters: Some(vec![MilterSpec {
                default_action: Some(MilterAction::Accept),
                timeout: Some(secs(5)),
                ..MilterSpec::new("unix:/run/opendkim/opendkim.sock")
            }]),
            milter_default_action: MilterAction::Accept,
            milter_connect_timeout: secs(5),
            milter_timeout: secs(10),
            milter_content_timeout: secs(60),
        },
        router: RouterConfig {
            local_domains: vec!["example.org".into(), "localhost".into()],
            aliases: Some("/srv/skein/etc/aliases".into()),
            allow_pipe_targets: true,
            allow_file_targets: true,
            scan_interval: secs(30),
            milters: vec!["inet:[::1]:11332".into()],
        },
        route: vec![
            Route {
                domain: "example.test".into(),
                channel: "smtp".into(),
                nexthop: Some(HostPort {
                    host: "127.0.0.1".into(),
                    port: 2600,
                }),
                tls: None,
            },
            Route {
                domain: ".internal.example".into(),
                channel: "smtp".into(),
                nexthop: Some(HostPort {
                    host: "2001:db8::25".into(),
                    port: 25,
                }),
                tls: Some(TlsPolicy::Verify),
            },
            Route {
                domain: "*".into(),
                channel: "hold".into(),
                nexthop: None,
                tls: None,
            },
        ],
        dkim: vec![
            DkimKey {
                domain: "example.org".into(),
                selector: "s2026".into(),
                signing_domain: String::new(),
                key: PathBuf::from(CWD).join("dkim/example.org.key"),
                algorithm: DkimAlgorithm::Ed25519Sha256,
                headers: DEFAULT_SIGNED_HEADERS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
                canonicalization: (Canonicalization::Relaxed, Canonicalization::Relaxed),
            },
            DkimKey {
                domain: "*".into(),
                selector: "rsa1".into(),
                signing_domain: "signer.example".into(),
                key: "/etc/skein/dkim/rsa.key".into(),
                algorithm: DkimAlgorithm::RsaSha256,
                headers: vec!["From".into(), "Subject".into()],
                canonicalization: (Canonicalization::Simple, Canonicalization::Relaxed),
            },
        ],
        local: LocalConfig {
            maildir_root: "/home/mail".into(),
            home_mailbox: "Mail/inbox/".into(),
        },
        scheduler: SchedulerConfig {
            retries: vec![secs(30), secs(5400)],
            expiry: secs(3 * 86400),
            maxta: 64,
            delay_warning: Some(secs(4 * 3600)),
            agent_timeout: secs(90),
            clause: vec![special, Clause::new("*", "my-agent")],
        },
        tls: TlsConfig {
            cert: Some("/srv/skein/etc/cert.pem".into()),
            key: Some("/etc/skein/key.pem".into()),
        },
        smtp: SmtpConfig {
            tls: TlsPolicy::Require,
            connect_timeout: secs(10),
            greeting_timeout: secs(60),
            ehlo_timeout: secs(120),
            mail_timeout: secs(180),
            rcpt_timeout: secs(240),
            data_init_timeout: secs(90),
            data_block_timeout: secs(300),
            data_term_timeout: secs(900),
            idle_timeout: secs(60),
            max_recipients_per_transaction: 50,
            window: ByteSize(256 << 10),
            port: 2525,
            nameservers: vec![addr("127.0.0.1:5353"), addr("[::1]:53")],
            mta_sts: true,
            mta_sts_port: 8443,
            ca_file: Some(PathBuf::from(CWD).join("etc/extra-ca.pem")),
        },
        supervisor: SupervisorConfig {
            restart_delay: secs(2),
            restart_delay_max: secs(300),
            healthy_after: secs(30),
        },
        metrics: MetricsConfig {
            listen: Some(addr("127.0.0.1:9465")),
        },
    }
}

#[test]
fn every_key_is_parsed() {
    let config = parse(FULL).expect("FULL parses");
    let expected = full_expected();
    // Section by section first, for a readable failure...
    assert_eq!(config.hostname, expected.hostname);
    assert_eq!(config.user, expected.user);
    assert_eq!(config.spool, expected.spool);
    assert_eq!(config.smtpd, expected.smtpd);
    assert_eq!(config.router, expected.router);
    assert_eq!(config.route, expected.route);
    assert_eq!(config.local, expected.local);
    assert_eq!(config.scheduler, expected.scheduler);
    assert_eq!(config.tls, expected.tls);
    assert_eq!(config.smtp, expected.smtp);
    assert_eq!(config.supervisor, expected.supervisor);
    // ...then the whole, so that a field added later cannot be forgotten.
    assert_eq!(config, expected);
}

#[test]
fn every_default() {
    let c = parse("").expect("empty file parses");
    let cwd = Path::new(CWD);
    assert_eq!(c.hostname, system_hostname());
    assert_eq!(c.user, None);
    assert_eq!(c.spool.dir, cwd.join("var/spool"));

    assert_eq!(c.smtpd.listen, [addr("127.0.0.1:2525")]);
    assert!(c.smtpd.submission.is_empty());
    assert_eq!(c.smtpd.relay_networks, [net("127.0.0.0/8"), net("::1/128")]);
    assert!(c.smtpd.relay_domains.is_empty());
    assert_eq!(c.smtpd.max_message_size, ByteSize(50 * 1024 * 1024));
    assert_eq!(c.smtpd.max_line_length, 1000);
    assert_eq!(c.smtpd.max_recipients, 1000);
    assert_eq!(c.smtpd.max_errors, 20);
    assert_eq!(c.smtpd.max_connections, 200);
    assert_eq!(c.smtpd.max_connections_per_client, 20);
    assert_eq!(c.smtpd.command_timeout, secs(300));
    assert_eq!(c.smtpd.data_timeout, secs(600));
    assert_eq!(c.smtpd.password_file, None);
    assert!(c.smtpd.verify_local_recipients);
    assert_eq!(c.smtpd.reserved_connections_percent, 10);
    assert_eq!(c.smtpd.max_connection_rate, 60);
    assert_eq!(c.smtpd.connection_rate_interval, secs(60));
    assert_eq!(
        c.smtpd.rate_limit_exceptions,
        [net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(c.smtpd.stress_threshold_percent, 75);
    assert_eq!(c.smtpd.stress_command_timeout, secs(10));
    assert_eq!(c.smtpd.stress_max_errors, 3);
    assert_eq!(c.smtpd.min_data_rate, 500);
    assert_eq!(c.supervisor.restart_delay, secs(1));
    assert_eq!(c.supervisor.restart_delay_max, secs(60));
    assert_eq!(c.supervisor.healthy_after, secs(10));

    assert_eq!(c.router.local_domains, ["localhost"]);
    assert_eq!(c.router.aliases, None);
    assert!(!c.router.allow_pipe_targets);
    assert!(!c.router.allow_file_targets);
    assert!(c.route.is_empty());
    assert_eq!(c.local.maildir_root, cwd.join("var/mail"));

    let minutes = [1, 5, 15, 30, 60, 120, 240].map(|m| secs(m * 60));
    assert_eq!(c.scheduler.retries, minutes);
    assert_eq!(c.scheduler.expiry, secs(5 * 86400));
    assert_eq!(c.scheduler.maxta, 0);
    assert_eq!(c.scheduler.delay_warning, None);
    assert_eq!(c.scheduler.agent_timeout, secs(600));
    assert_eq!(c.scheduler.clause.len(), 2);
    for (clause, (pattern, command)) in c
        .scheduler
        .clause
        .iter()
        .zip([("local/*", "skein-local"), ("smtp/*", "skein-smtp")])
    {
        assert_eq!(
            (clause.pattern.as_str(), clause.command.as_str()),
            (pattern, command)
        );
        assert!(clause.args.is_empty());
        assert_eq!(
            (
                clause.maxthr,
                clause.maxring,
                clause.maxchannel,
                clause.overfeed
            ),
            (1, 20, 0, 150)
        );
        assert_eq!(clause.idlemax, secs(240));
    }

    assert_eq!(
        c.tls,
        TlsConfig {
            cert: None,
            key: None
        }
    );
    assert_eq!(c.smtp.tls, TlsPolicy::Dane);
    let timeouts = [
        (c.smtp.connect_timeout, 30),
        (c.smtp.greeting_timeout, 300),
        (c.smtp.ehlo_timeout, 300),
        (c.smtp.mail_timeout, 300),
        (c.smtp.rcpt_timeout, 300),
        (c.smtp.data_init_timeout, 120),
        (c.smtp.data_block_timeout, 180),
        (c.smtp.data_term_timeout, 600),
        (c.smtp.idle_timeout, 30),
    ];
    for (i, (got, want)) in timeouts.into_iter().enumerate() {
        assert_eq!(got, secs(want), "smtp timeout #{i}");
    }
    assert_eq!(c.smtp.max_recipients_per_transaction, 100);
    assert_eq!(c.smtp.window, ByteSize(1024 * 1024));
    assert_eq!(c.smtp.port, 25);
    assert!(c.smtp.nameservers.is_empty());
}

#[test]
fn smtp_port_and_nameservers_are_checked() {
    let bad = [
        ("[smtp]\nport = 0\n", "smtp.port"),
        ("[smtp]\nport = 65536\n", "smtp.port"),
        (
            "[smtp]\nnameservers = [\"127.0.0.1\"]\n",
            "smtp.nameservers[0]",
        ),
        (
            "[smtp]\nnameservers = \"127.0.0.1:53\"\n",
            "smtp.nameservers",
        ),
    ];
    for (text, key) in bad {
        let err = parse(text).expect_err(text);
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
}

#[test]
fn clause_fields_left_out_take_their_defaults() {
    let text = "[[scheduler.clause]]\nmatch = \"smtp/*\"\ncommand = \"skein-smtp\"\nmaxthr = 3\n";
    let config = parse(text).expect("parses");
    let mut want = Clause::new("smtp/*", "skein-smtp");
    want.maxthr = 3;
    // Only the file's clause: the defaults apply only to a file with none.
    assert_eq!(config.scheduler.clause, [want]);
}

/// The configuration the Debian package and dist/install.sh install as
/// /etc/skein/skein.toml parses, and says what docs/operations.md's
/// "Install" table says.
#[test]
fn the_installed_configuration_parses_and_matches_the_install_layout() {
    let text = include_str!("../../../dist/skein.toml");
    let config = Config::from_toml_str(text, "dist/skein.toml", Path::new("/"))
        .expect("dist/skein.toml parses");
    assert_eq!(config.run_as(), "skein");
    assert_eq!(config.spool.dir, PathBuf::from("/var/spool/skein"));
    assert_eq!(config.spool.drop_group, "skeindrop");
    assert_eq!(
        config.local.maildir("bob"),
        PathBuf::from("/var/lib/skein/mail/bob")
    );
    assert_eq!(config.smtpd.listen, [addr("127.0.0.1:25")]);
}

#[test]
fn embedded_default_is_the_builtin_default() {
    let cwd = Path::new("/home/alice/mta");
    let embedded = Config::embedded_default(cwd);
    let builtin = Config::from_toml_str("", "empty", cwd).expect("empty parses");
    assert_eq!(embedded, builtin);
    // The contract's documented values.
    assert_eq!(
        embedded.spool.dir,
        PathBuf::from("/home/alice/mta/var/spool")
    );
    assert_eq!(
        embedded.local.maildir("bob"),
        PathBuf::from("/home/alice/mta/var/mail/bob")
    );
    assert_eq!(embedded.smtpd.listen, [addr("127.0.0.1:2525")]);
    assert_eq!(embedded.router.local_domains, ["localhost"]);
    assert!(embedded.route.is_empty(), "everything else goes by MX");
    assert_eq!(
        embedded
            .clause_for("smtp", "mx.example.org")
            .map(|c| c.command.as_str()),
        Some("skein-smtp")
    );
    assert_eq!(
        embedded
            .clause_for("local", "alice")
            .map(|c| c.command.as_str()),
        Some("skein-local")
    );
    assert_eq!(embedded.clause_for("error", "x"), None);
}

#[test]
fn to_toml_round_trips() {
    let mut odd = full_expected();
    // Characters that need escaping must survive too.
    odd.spool.dir = PathBuf::from("/var/spool/we\"ird\\dir\ttab");
    odd.scheduler.clause[1].args = vec!["a b".into(), "\u{1}".into(), String::new()];
    let configs = [
        ("default", Config::embedded_default(Path::new(CWD))),
        ("full", full_expected()),
        ("odd", odd),
    ];
    for (name, config) in configs {
        let text = config.to_toml();
        // A different cwd proves every path was written absolute.
        let back = Config::from_toml_str(&text, name, Path::new("/elsewhere"))
            .unwrap_or_else(|err| panic!("{name}: {err}\n{text}"));
        assert_eq!(back, config, "{name}:\n{text}");
        assert_eq!(back.to_toml(), text, "{name}: rendering is stable");
    }
}

#[test]
fn to_toml_spells_out_every_key() {
    let text = Config::embedded_default(Path::new(CWD)).to_toml();
    let table: toml::Table = toml::from_str(&text).expect("valid TOML");
    let keys = |section: &str| -> Vec<String> {
        table
            .get(section)
            .and_then(|v| v.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert!(table.contains_key("hostname") && table.contains_key("user"));
    assert_eq!(keys("spool"), ["dir", "drop_group"]);
    assert_eq!(keys("smtpd").len(), 28);
    assert_eq!(
        keys("supervisor"),
        ["healthy_after", "restart_delay", "restart_delay_max"]
    );
    assert_eq!(keys("router").len(), 6);
    assert_eq!(keys("local"), ["home_mailbox", "maildir_root"]);
    assert_eq!(keys("scheduler").len(), 6, "5 keys and the clause array");
    assert_eq!(keys("tls").len(), 2);
    assert_eq!(keys("smtp").len(), 17);
    assert!(text.contains("dir = \"/srv/skein/var/spool\""), "{text}");
}

#[test]
fn relative_paths_resolve_against_cwd() {
    let text = r#"
[spool]
dir = "./spool"
[smtpd]
password_file = "../secrets/passwd"
[router]
aliases = "etc/aliases"
[local]
maildir_root = "mail"
[tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"
"#;
    let config = Config::from_toml_str(text, "t", Path::new("/opt/skein")).expect("parses");
    assert_eq!(config.spool.dir, PathBuf::from("/opt/skein/spool"));
    assert_eq!(
        config.smtpd.password_file,
        Some(PathBuf::from("/opt/skein/../secrets/passwd"))
    );
    assert_eq!(
        config.router.aliases,
        Some(PathBuf::from("/opt/skein/etc/aliases"))
    );
    assert_eq!(config.local.maildir_root, PathBuf::from("/opt/skein/mail"));
    assert_eq!(
        config.tls.cert,
        Some(PathBuf::from("/opt/skein/tls/cert.pem"))
    );
    assert_eq!(config.tls.key, Some(PathBuf::from("/abs/key.pem")));
}

#[test]
fn empty_strings_mean_unset() {
    let text = r#"
user = ""
[smtpd]
password_file = ""
[router]
aliases = ""
[[route]]
domain = "*"
channel = "smtp"
nexthop = ""
tls = ""
[scheduler]
delay_warning = ""
[tls]
cert = ""
key = ""
"#;
    let config = parse(text).expect("parses");
    assert_eq!(config.user, None);
    assert_eq!(config.smtpd.password_file, None);
    assert_eq!(config.router.aliases, None);
    assert_eq!(
        (&config.route[0].nexthop, config.route[0].tls),
        (&None, None)
    );
    assert_eq!(config.scheduler.delay_warning, None);
    assert_eq!(config.tls, TlsConfig::default());
}

#[test]
fn sizes_accept_integers_durations_need_a_unit() {
    let text = "[scheduler]\nexpiry = \"1d\"\nretries = [\"60s\", \"2m\"]\n[smtpd]\nmax_message_size = 1000\n";
    let config = parse(text).expect("parses");
    assert_eq!(config.scheduler.expiry, secs(86400));
    assert_eq!(config.scheduler.retries, [secs(60), secs(120)]);
    assert_eq!(config.smtpd.max_message_size, ByteSize(1000));
    // A number without a unit is refused, as an integer or a string,
    // with the line and the key; zero is zero in any unit.
    for (text, line, key) in [
        ("[scheduler]\nexpiry = 5\n", 2, "scheduler.expiry"),
        ("[scheduler]\nexpiry = \"5\"\n", 2, "scheduler.expiry"),
        (
            "[scheduler]\n\nretries = [\"1m\", 600]\n",
            3,
            "scheduler.retries[1]",
        ),
        (
            "[smtpd]\ncommand_timeout = 300\n",
            2,
            "smtpd.command_timeout",
        ),
    ] {
        let err = parse(text).expect_err(text);
        assert_eq!(err.kind, ErrorKind::Invalid, "{text}: {err}");
        assert_eq!(err.line, Some(line), "{text}: {err}");
        assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        assert!(err.message.contains("a duration needs a unit"), "{err}");
    }
    let config = parse("[[scheduler.clause]]\nmatch = \"*/*\"\ncommand = \"x\"\nidlemax = 0\n")
        .expect("zero parses");
    assert_eq!(config.scheduler.clause[0].idlemax, Duration::ZERO);
}

#[test]
fn routes_first_match_wins() {
    let config = parse(FULL).expect("FULL parses");
    let cases = [
        ("example.test", Some((0, "smtp"))),
        ("EXAMPLE.TEST.", Some((0, "smtp"))),
        ("a.internal.example", Some((1, "smtp"))),
        ("internal.example", Some((2, "hold"))),
        ("anything.else", Some((2, "hold"))),
    ];
    for (domain, want) in cases {
        let got = config.route_for(domain).map(|route| {
            let index = config
                .route
                .iter()
                .position(|r| std::ptr::eq(r, route))
                .unwrap_or(usize::MAX);
            (index, route.channel.as_str())
        });
        assert_eq!(got, want, "{domain}");
    }
    assert_eq!(parse("").expect("parses").route_for("example.org"), None);
    assert_eq!(
        config.tls_policy(config.route_for("x.internal.example")),
        TlsPolicy::Verify
    );
    assert_eq!(
        config.tls_policy(config.route_for("example.test")),
        TlsPolicy::Require
    );
    assert_eq!(config.tls_policy(None), TlsPolicy::Require);
}

#[test]
fn clauses_first_match_wins() {
    let config = parse(FULL).expect("FULL parses");
    let cases = [
        ("smtp", "mx.example.org", "/usr/libexec/skein/skein-smtp"),
        ("smtp", "MX.EXAMPLE.ORG", "/usr/libexec/skein/skein-smtp"),
        ("smtp", "example.org", "my-agent"),
        ("local", "alice", "my-agent"),
    ];
    for (channel, host, command) in cases {
        let got = config.clause_for(channel, host).map(|c| c.command.as_str());
        assert_eq!(got, Some(command), "{channel}/{host}");
    }
}

/// One error case: the file text, and what the error must say.
struct Case {
    text: &'static str,
    kind: ErrorKind,
    line: usize,
    key: &'static str,
    message: &'static str,
}

const fn case(
    text: &'static str,
    kind: ErrorKind,
    line: usize,
    key: &'static str,
    message: &'static str,
) -> Case {
    Case {
        text,
        kind,
        line,
        key,
        message,
    }
}

use ErrorKind::{Invalid, Missing, Syntax, UnknownKey, WrongType};

#[rustfmt::skip]
const ERROR_CASES: &[Case] = &[
    // Syntax errors: the line of the error, the key as best guessed.
    case("[scheduler]\nexpiry = 5d\n", Syntax, 2, "scheduler.expiry", "quoted"),
    case("hostname = \"a\"\nhostname = \"b\"\n", Syntax, 2, "hostname", "duplicate key"),
    case("[smtpd]\nlisten = [\"a\",\n", Syntax, 2, "smtpd.listen", ""),
    case("[smtpd\nlisten = []\n", Syntax, 1, "smtpd", "unclosed table"),
    case("[[route]]\ndomain = \"x\"\n[[route]]\nchannel = \"smtp\n", Syntax, 4, "route[1].channel", ""),
    // Unknown keys, with the unknown key's own line.
    case("\n\nhostnme = \"x\"\n", UnknownKey, 3, "hostnme", "did you mean \"hostname\"?"),
    case("[smtpd]\nlisten = []\nlisen = []\n", UnknownKey, 3, "smtpd.lisen", "did you mean \"listen\"?"),
    case("[smtpd]\nfrobnicate = 1\n", UnknownKey, 2, "smtpd.frobnicate", "expected one of: listen, submission"),
    case("[smtpd]\nverify_local_recipient = false\n", UnknownKey, 2, "smtpd.verify_local_recipient", "did you mean \"verify_local_recipients\"?"),
    case("[bogus]\n", UnknownKey, 1, "bogus", "unknown key"),
    case("[[route]]\ndomain = \"*\"\nchannel = \"smtp\"\n[[route]]\ndomain = \"*\"\nchanel = \"smtp\"\n", UnknownKey, 6, "route[1].chanel", "did you mean \"channel\"?"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\nmaxthreads = 2\n", UnknownKey, 4, "scheduler.clause[0].maxthreads", "unknown key"),
    case("[smtpd.extra]\n", UnknownKey, 1, "smtpd.extra", "unknown key"),
    case("smtpd.listen = []\nsmtpd.typo = 1\n", UnknownKey, 2, "smtpd.typo", "unknown key"),
    // Wrong types.
    case("hostname = 42\n", WrongType, 1, "hostname", "expected a string, found an integer"),
    case("smtpd = 5\n", WrongType, 1, "smtpd", "expected a table, found an integer"),
    case("[smtpd]\nlisten = \"127.0.0.1:25\"\n", WrongType, 2, "smtpd.listen", "expected an array, found a string"),
    case("[smtpd]\nverify_local_recipients = \"no\"\n", WrongType, 2, "smtpd.verify_local_recipients", "expected true or false, found a string"),
    case("[smtpd]\nrelay_networks = [\"10.0.0.0/8\", 1]\n", WrongType, 2, "smtpd.relay_networks[1]", "expected a string"),
    case("[smtpd]\nmax_message_size = true\n", WrongType, 2, "smtpd.max_message_size", "expected a size such as \"50M\", found a boolean"),
    case("[router]\nallow_pipe_targets = \"yes\"\n", WrongType, 2, "router.allow_pipe_targets", "expected true or false, found a string"),
    case("[route]\ndomain = \"*\"\n", WrongType, 1, "route", "expected an array of tables (write [[route]])"),
    case("route = [1]\n", WrongType, 1, "route[0]", "expected a table, found an integer"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\nmaxthr = \"1\"\n", WrongType, 4, "scheduler.clause[0].maxthr", "expected an integer, found a string"),
    case("[scheduler]\nexpiry = 1.5\n", WrongType, 2, "scheduler.expiry", "expected a duration such as \"5m\", found a float"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\nargs = \"-v\"\n", WrongType, 4, "scheduler.clause[0].args", "expected an array"),
    // Missing required keys point at the table's header.
    case("\n[[route]]\ndomain = \"x.test\"\n", Missing, 2, "route[0].channel", "every [[route]] needs a channel"),
    case("[[route]]\nchannel = \"smtp\"\n", Missing, 1, "route[0].domain", "missing"),
    case("[[scheduler.clause]]\nmatch = \"*\"\n", Missing, 1, "scheduler.clause[0].command", "missing"),
    case("[[scheduler.clause]]\ncommand = \"x\"\n", Missing, 1, "scheduler.clause[0].match", "missing"),
    // Values of the right type that are still unusable.
    case("hostname = \"mx_1.example.org\"\n", Invalid, 1, "hostname", "invalid hostname \"mx_1.example.org\""),
    case("user = \"sk ein\"\n", Invalid, 1, "user", "invalid user name"),
    case("[spool]\ndir = \"\"\n", Invalid, 2, "spool.dir", "must not be empty"),
    case("[smtpd]\nlisten = [\"127.0.0.1\"]\n", Invalid, 2, "smtpd.listen[0]", "invalid address \"127.0.0.1\""),
    case("[smtpd]\nlisten = [\"127.0.0.1:25\"]\nsubmission = [\"127.0.0.1:25\"]\n", Invalid, 3, "smtpd.submission[0]", "also in smtpd.listen"),
    case("[smtpd]\nrelay_networks = [\n  \"127.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n", Invalid, 4, "smtpd.relay_networks[1]", "at most 32"),
    case("[smtpd]\nrelay_networks = [\"127.0.0.0/8\", \"10.1.2.3/8\"]\n", Invalid, 2, "smtpd.relay_networks[1]", "host bits are set (did you mean \"10.0.0.0/8\"?)"),
    case("[smtpd]\nrelay_domains = [\"*\"]\n", Invalid, 2, "smtpd.relay_domains[0]", "open relay"),
    case("[smtpd]\nmax_message_size = \"50X\"\n", Invalid, 2, "smtpd.max_message_size", "invalid size \"50X\""),
    case("[smtpd]\nmax_message_size = -1\n", Invalid, 2, "smtpd.max_message_size", "must not be negative"),
    case("[smtpd]\nmax_line_length = 100\n", Invalid, 2, "smtpd.max_line_length", "must be at least 512, not 100"),
    case("[smtpd]\nmax_connections = 0\n", Invalid, 2, "smtpd.max_connections", "at least 1"),
    case("[smtpd]\nmax_errors = 4294967296\n", Invalid, 2, "smtpd.max_errors", "must be at most 4294967295"),
    case("[smtpd]\ncommand_timeout = \"0s\"\n", Invalid, 2, "smtpd.command_timeout", "must be longer than 0s"),
    case("[smtpd]\nreserved_connections_percent = 60\n", Invalid, 2, "smtpd.reserved_connections_percent", "must be at most 50, not 60"),
    case("[smtpd]\nstress_threshold_percent = 0\n", Invalid, 2, "smtpd.stress_threshold_percent", "must be at least 1, not 0"),
    case("[smtpd]\nstress_threshold_percent = 101\n", Invalid, 2, "smtpd.stress_threshold_percent", "must be at most 100, not 101"),
    case("[smtpd]\nrate_limit_exceptions = [\"10.0.0.1/8\"]\n", Invalid, 2, "smtpd.rate_limit_exceptions[0]", "host bits are set"),
    case("[smtpd]\nstress_max_errors = 0\n", Invalid, 2, "smtpd.stress_max_errors", "must be at least 1, not 0"),
    case("[supervisor]\nrestart_delay = \"2m\"\n", Invalid, 2, "supervisor.restart_delay", "supervisor.restart_delay_max (1m) is shorter than supervisor.restart_delay (2m)"),
    case("[supervisor]\nhealthy_after = \"0s\"\n", Invalid, 2, "supervisor.healthy_after", "must be longer than 0s"),
    case("[router]\nlocal_domains = [\"localhost\", \"exa mple.org\"]\n", Invalid, 2, "router.local_domains[1]", "invalid domain"),
    case("[[route]]\ndomain = \"x.test\"\nchannel = \"\"\n", Invalid, 3, "route[0].channel", "must not be empty"),
    case("[[route]]\ndomain = \"x.test\"\nchannel = \"smtp/relay\"\n", Invalid, 3, "route[0].channel", "invalid channel"),
    case("[[route]]\ndomain = \"*.x.test\"\nchannel = \"smtp\"\n", Invalid, 2, "route[0].domain", "invalid domain pattern"),
    case("[[route]]\ndomain = \"x.test\"\nchannel = \"smtp\"\nnexthop = \"::1:25\"\n", Invalid, 4, "route[0].nexthop", "in brackets"),
    case("[[route]]\ndomain = \"x.test\"\nchannel = \"smtp\"\ntls = \"always\"\n", Invalid, 4, "route[0].tls", "invalid TLS policy"),
    case("[smtpd]\nmilters = [\"inet:rspamd:11332\"]\n", Invalid, 2, "smtpd.milters[0]", "invalid milter \"inet:rspamd:11332\""),
    case("[smtpd]\nmilters = [\"unix:relative.sock\"]\n", Invalid, 2, "smtpd.milters[0]", "invalid milter"),
    case("[smtpd]\nsubmission_milters = [\"tcp:1\"]\n", Invalid, 2, "smtpd.submission_milters[0]", "invalid milter"),
    case("[smtpd]\nsubmission_milters = \"inet:127.0.0.1:1\"\n", WrongType, 2, "smtpd.submission_milters", "expected an array of milters"),
    case("[router]\nmilters = [\"inet:localhost:11332\"]\n", Invalid, 2, "router.milters[0]", "invalid milter"),
    case("[router]\nmilters = [{ address = \"inet:localhost:1\" }]\n", Invalid, 2, "router.milters[0].address", "invalid milter"),
    case("[smtpd]\nmilters = [{ timeout = \"5s\" }]\n", Missing, 2, "smtpd.milters[0].address", "every milter needs its address"),
    case("[smtpd]\nmilters = [{ address = \"inet:127.0.0.1:1\", default_action = \"drop\" }]\n", Invalid, 2, "smtpd.milters[0].default_action", "invalid milter action"),
    case("[smtpd]\nmilters = [{ address = \"inet:127.0.0.1:1\", timout = \"5s\" }]\n", UnknownKey, 2, "smtpd.milters[0].timout", "did you mean \"timeout\"?"),
    case("[smtpd]\nmilter_default_action = \"ignore\"\n", Invalid, 2, "smtpd.milter_default_action", "invalid milter action"),
    case("[[dkim]]\ndomain = \"x.test\"\nkey = \"k\"\n", Missing, 1, "dkim[0].selector", "needs a selector"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\n", Missing, 1, "dkim[0].key", "private key file"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s 1\"\nkey = \"k\"\n", Invalid, 3, "dkim[0].selector", "invalid selector"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\nkey = \"k\"\nalgorithm = \"rsa-sha1\"\n", Invalid, 5, "dkim[0].algorithm", "invalid DKIM algorithm \"rsa-sha1\""),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\nkey = \"k\"\nheaders = []\n", Invalid, 5, "dkim[0].headers", "at least From"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\nkey = \"k\"\nheaders = [\"Sub ject\"]\n", Invalid, 5, "dkim[0].headers[0]", "invalid header field name"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\nkey = \"k\"\ncanonicalization = \"relaxed/loose\"\n", Invalid, 5, "dkim[0].canonicalization", "invalid canonicalization"),
    case("[[dkim]]\ndomain = \"x.test\"\nselector = \"s\"\nkey = \"k\"\nkeyfile = \"k\"\n", UnknownKey, 5, "dkim[0].keyfile", "unknown key"),
    case("[scheduler]\nexpiry = \"5x\"\n", Invalid, 2, "scheduler.expiry", "invalid duration \"5x\""),
    case("[scheduler]\nretries = []\n", Invalid, 2, "scheduler.retries", "at least one retry interval"),
    case("[scheduler]\nretries = [\"1m\", \"0s\"]\n", Invalid, 2, "scheduler.retries[1]", "longer than 0s"),
    case("[scheduler]\nexpiry = \"1d\"\ndelay_warning = \"2d\"\n", Invalid, 3, "scheduler.delay_warning", "shorter than scheduler.expiry"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\n\n[[scheduler.clause]]\nmatch = \"smtp/*\"\ncommand = \"y\"\nmaxthr = 0\n", Invalid, 8, "scheduler.clause[1].maxthr", "must be at least 1, not 0"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\nmaxring = -3\n", Invalid, 4, "scheduler.clause[0].maxring", "must be at least 1, not -3"),
    case("[scheduler]\nclause = []\n", Invalid, 2, "scheduler.clause", "at least one clause"),
    case("[[scheduler.clause]]\nmatch = \"\"\ncommand = \"x\"\n", Invalid, 2, "scheduler.clause[0].match", "must not be empty"),
    case("[[scheduler.clause]]\nmatch = \"*\"\ncommand = \"x\"\nidlemax = \"soon\"\n", Invalid, 4, "scheduler.clause[0].idlemax", "invalid duration"),
    case("[tls]\ncert = \"cert.pem\"\n", Invalid, 2, "tls.cert", "set, but tls.key is not"),
    case("[tls]\ncert = \"\"\nkey = \"key.pem\"\n", Invalid, 3, "tls.key", "set, but tls.cert is not"),
    case("[smtp]\ntls = \"Verify\"\n", Invalid, 2, "smtp.tls", "invalid TLS policy \"Verify\""),
    case("[smtp]\nrcpt_timeout = \"5 minutes\"\n", Invalid, 2, "smtp.rcpt_timeout", "invalid duration"),
    case("[smtp]\nwindow = 0\n", Invalid, 2, "smtp.window", "larger than 0"),
    case("[smtp]\nmax_recipients_per_transaction = 0\n", Invalid, 2, "smtp.max_recipients_per_transaction", "at least 1"),
];

#[test]
fn errors_name_file_line_and_key() {
    for (i, case) in ERROR_CASES.iter().enumerate() {
        let err = match parse(case.text) {
            Ok(_) => panic!("case {i} parsed but should fail:\n{}", case.text),
            Err(err) => err,
        };
        let context = format!("case {i}: {err}\n{}", case.text);
        assert_eq!(err.kind, case.kind, "{context}");
        assert_eq!(err.file, "test.toml", "{context}");
        assert_eq!(err.line, Some(case.line), "{context}");
        let key = (!case.key.is_empty()).then(|| case.key.to_owned());
        assert_eq!(err.key, key, "{context}");
        assert!(err.message.contains(case.message), "{context}");
        let prefix = match &err.key {
            Some(key) => format!("test.toml:{}: {key}: ", case.line),
            None => format!("test.toml:{}: ", case.line),
        };
        assert!(err.to_string().starts_with(&prefix), "{context}");
    }
}

#[test]
fn error_display_matches_the_documented_format() {
    let text = "hostname = \"mx.example.org\"\n\n[scheduler]\nexpiry = \"5x\"\n";
    let err = Config::from_toml_str(text, "/etc/skein.toml", Path::new("/")).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "/etc/skein.toml:4: scheduler.expiry: invalid duration \"5x\" (expected a number with s, m, h, d or w, e.g. \"30s\" or \"5d\")"
    );
}

/// Explicit path, `SKEIN_CONFIG` value, expected hostname (`None`: the
/// embedded default) and expected source.
type LoadCase<'a> = (Option<&'a Path>, Option<OsString>, Option<&'a str>, Source);

#[test]
fn load_finds_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(
        cwd.join("explicit.toml"),
        "hostname = \"explicit.example\"\n",
    )
    .expect("write");
    std::fs::write(cwd.join("env.toml"), "hostname = \"env.example\"\n").expect("write");
    let explicit = Path::new("explicit.toml");
    let env = || Some(OsString::from("env.toml"));

    let cases: [LoadCase<'_>; 5] = [
        (
            Some(explicit),
            env(),
            Some("explicit.example"),
            Source::File(cwd.join("explicit.toml")),
        ),
        (
            Some(explicit),
            None,
            Some("explicit.example"),
            Source::File(cwd.join("explicit.toml")),
        ),
        (
            None,
            env(),
            Some("env.example"),
            Source::File(cwd.join("env.toml")),
        ),
        (None, Some(OsString::new()), None, Source::Embedded),
        (None, None, None, Source::Embedded),
    ];
    for (i, (explicit, env, hostname, source)) in cases.into_iter().enumerate() {
        let loaded = Config::load_with(explicit, env, cwd).unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(loaded.source, source, "case {i}");
        match hostname {
            Some(name) => assert_eq!(loaded.config.hostname, name, "case {i}"),
            None => assert_eq!(loaded.config, Config::embedded_default(cwd), "case {i}"),
        }
        // Relative paths in the file are relative to cwd.
        assert_eq!(loaded.config.spool.dir, cwd.join("var/spool"), "case {i}");
    }

    let absolute = cwd.join("env.toml");
    let loaded = Config::load_with(Some(&absolute), None, Path::new("/")).expect("absolute path");
    assert_eq!(loaded.source, Source::File(absolute.clone()));
    assert_eq!(loaded.source.to_string(), absolute.display().to_string());
    assert_eq!(Source::Embedded.to_string(), EMBEDDED_NAME);
}

#[test]
fn load_reports_unreadable_and_invalid_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path();
    std::fs::write(cwd.join("latin1.toml"), b"hostname = \"caf\xe9\"\n").expect("write");
    std::fs::write(cwd.join("bad.toml"), "\n[smtpd]\nmax_errors = 0\n").expect("write");

    let missing = Config::load_with(Some(Path::new("nope.toml")), None, cwd).expect_err("missing");
    assert_eq!(
        (missing.kind, missing.file.as_str(), missing.line),
        (ErrorKind::Read, "nope.toml", None)
    );
    assert!(
        missing.to_string().starts_with("nope.toml: cannot read: "),
        "{missing}"
    );

    let env_missing = Config::load_with(None, Some("gone.toml".into()), cwd).expect_err("missing");
    assert_eq!(
        (env_missing.kind, env_missing.file.as_str()),
        (ErrorKind::Read, "gone.toml")
    );

    let latin1 = Config::load_with(Some(Path::new("latin1.toml")), None, cwd).expect_err("latin1");
    assert_eq!(latin1.kind, ErrorKind::Read);
    assert!(latin1.message.contains("not UTF-8"), "{latin1}");

    let directory = Config::load_with(Some(cwd), None, cwd).expect_err("a directory");
    assert_eq!(directory.kind, ErrorKind::Read);

    let bad = Config::load_with(Some(Path::new("bad.toml")), None, cwd).expect_err("bad");
    assert_eq!(
        bad.to_string(),
        "bad.toml:3: smtpd.max_errors: must be at least 1, not 0"
    );
}

/// Deterministic xorshift, so a failure reproduces without a seed crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mangled_configs_never_panic() {
    // Bytes that matter to TOML and to our own value parsers.
    const INTERESTING: &[u8] = b"[]{}=\"'#.,:/*?\n\\ 0123456789smhdwkMG-+_x\x00\xff";
    let mut rng = XorShift(0x5EED_CAFE_F00D_D00D);
    let original = DEFAULT_CONFIG.as_bytes();
    let cwd = Path::new(CWD);
    let mut failures = 0;
    for round in 0..400 {
        let mut bytes = original.to_vec();
        let edits = 1 + rng.below(8);
        for _ in 0..edits {
            let at = rng.below(bytes.len());
            let byte = INTERESTING[rng.below(INTERESTING.len())];
            match rng.below(4) {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 => {
                    bytes.remove(at);
                }
                _ => {
                    // Duplicate a slice: repeated keys and tables.
                    let end = (at + rng.below(64)).min(bytes.len());
                    let slice = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, slice);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let lines = text.lines().count() + 1;
        match Config::from_toml_str(&text, "fuzz.toml", cwd) {
            Ok(config) => {
                // Whatever was accepted must render and read back equal.
                let back = Config::from_toml_str(&config.to_toml(), "again", cwd);
                assert_eq!(back.as_ref(), Ok(&config), "round {round}:\n{text}");
            }
            Err(err) => {
                failures += 1;
                assert_eq!(err.file, "fuzz.toml");
                if let Some(line) = err.line {
                    assert!(
                        (1..=lines).contains(&line),
                        "round {round}: line {line}: {err}"
                    );
                }
                assert!(!err.message.is_empty(), "round {round}");
            }
        }
    }
    // The mutations must actually exercise the error paths.
    assert!(failures > 100, "only {failures} of 400 mutations failed");
}

#[test]
fn submission_needs_tls_and_passwords_reported_at_its_line() {
    let cases = [
        (
            "[smtpd]\nlisten = []\nsubmission = [\"127.0.0.1:587\"]\n",
            "[tls] cert and key",
        ),
        (
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[smtpd]\nlisten = []\nsubmission = [\"127.0.0.1:587\"]\n",
            "smtpd.password_file",
        ),
    ];
    for (text, needs) in cases {
        let err = parse(text).expect_err(text);
        let line = text
            .lines()
            .position(|l| l.starts_with("submission"))
            .expect("line")
            + 1;
        assert_eq!(err.kind, ErrorKind::Invalid, "{err}");
        assert_eq!(err.line, Some(line), "{err}");
        assert_eq!(err.key.as_deref(), Some("smtpd.submission"), "{err}");
        assert!(err.message.contains(needs), "{err}");
    }
    let complete = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[smtpd]\nlisten = []\n\
                    submission = [\"127.0.0.1:587\"]\npassword_file = \"p\"\n";
    parse(complete).expect("complete submission parses");
}

#[test]
fn changed_settings_names_what_a_reload_changes() {
    let old = parse(
        "[smtpd]\nmax_recipients = 100\n[[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\n",
    )
    .expect("old");
    let table: &[(&str, &[&str])] = &[
        // Same text: nothing changed.
        (
            "[smtpd]\nmax_recipients = 100\n[[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\n",
            &[],
        ),
        // A default spelled out is no change.
        (
            "[smtpd]\nmax_recipients = 100\nmax_errors = 20\n[[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\n",
            &[],
        ),
        (
            "[smtpd]\nmax_recipients = 5\n[[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\n",
            &["smtpd.max_recipients"],
        ),
        // A route removed: its keys are gone.
        (
            "[smtpd]\nmax_recipients = 100\n",
            &["route[0].domain", "route[0].channel"],
        ),
    ];
    for (text, want) in table {
        let new = parse(text).expect("new");
        let mut got = changed_settings(&old, &new);
        got.retain(|k| !k.starts_with("route[0].") || want.iter().any(|w| w == k));
        assert_eq!(got, *want, "for {text:?}");
    }
}

#[test]
fn restart_only_keys_are_the_spool_the_account_and_the_supervisor() {
    let table = [
        ("user", true),
        ("spool.dir", true),
        ("spool.drop_group", true),
        ("supervisor.restart_delay", true),
        ("spoolish.dir", false),
        ("username", false),
        ("smtpd.listen", false),
        ("scheduler.expiry", false),
        ("route[0].domain", false),
    ];
    for (key, want) in table {
        assert_eq!(needs_restart(key), want, "{key}");
    }
}

#[test]
fn reread_reads_the_same_file_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("skein.toml");
    std::fs::write(&file, "[smtpd]\nmax_recipients = 7\n").expect("write");
    let first = Config::load_with(Some(&file), None, dir.path()).expect("loads");
    std::fs::write(&file, "[smtpd]\nmax_recipients = 8\n").expect("write");
    let second = first.reread().expect("rereads");
    assert_eq!(second.config.smtpd.max_recipients, 8);
    assert_eq!(second.shown, first.shown);
    std::fs::write(&file, "[smtpd\nmax_recipients = 9\n").expect("write");
    let err = first.reread().expect_err("broken file refused");
    assert!(err.to_string().contains("skein.toml:1"), "{err}");
    let embedded = Config::load_with(None, None, dir.path()).expect("embedded");
    assert_eq!(embedded.reread().expect("embedded again"), embedded);
}
