//! From TOML text to [`Config`], keeping every key's position so that each
//! error can say `file:line: key:`.
//!
//! The document is parsed once into toml's spanned tree (`DeTable`) and
//! walked by hand rather than through `serde::Deserialize`: serde's derive
//! loses the line of a value as soon as validation goes beyond its type
//! (an invalid CIDR, `maxthr = 0`, `tls.cert` without `tls.key`), and its
//! `deny_unknown_fields` cannot say "did you mean". Walking the tree gives
//! every check the span of the exact key or value it is about.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::clause::Clause;
use crate::config::{
    Config, LocalConfig, MilterSpec, RouterConfig, SchedulerConfig, SmtpConfig, SmtpdConfig,
    SpoolConfig, SupervisorConfig, TlsConfig, resolve,
};
use crate::dkim::{
    Canonicalization, DEFAULT_SIGNED_HEADERS, DkimAlgorithm, DkimKey, is_valid_dns_name,
    parse_canonicalization,
};
use crate::domain::{is_plausible_domain, parse_pattern, system_hostname};
use crate::error::{ConfigError, ErrorKind, KeyLines};
use crate::route::{Route, is_valid_channel};
use crate::units::{ByteSize, ValueError, parse_duration, unitless_duration_error};

type Result<T> = std::result::Result<T, ConfigError>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Parses and validates a whole configuration file; with it, the line of
/// every key the file sets (for checks that come later: a file a key
/// names that cannot be read is reported at that key's line).
pub(crate) fn decode(text: &str, file: &str, cwd: &Path) -> Result<(Config, KeyLines)> {
    let doc = Doc {
        file,
        text,
        lines: RefCell::new(BTreeMap::new()),
    };
    let root = DeTable::parse(text).map_err(|err| doc.syntax_error(&err))?;
    let top = Table::new(&doc, String::new(), 0, root.get_ref(), TOP_KEYS)?;

    let hostname = match top.get("hostname") {
        Some(item) => decode_hostname(&item)?,
        None => system_hostname(),
    };
    let mut config = Config::builtin(cwd, hostname);
    if let Some(item) = top.get("user") {
        config.user = decode_user(&item)?;
    }
    if let Some(item) = top.get("spool") {
        decode_spool(&item, cwd, &mut config.spool)?;
    }
    if let Some(item) = top.get("smtpd") {
        decode_smtpd(&item, cwd, &mut config.smtpd)?;
    }
    if let Some(item) = top.get("router") {
        decode_router(&item, cwd, &mut config.router)?;
    }
    if let Some(item) = top.get("route") {
        config.route = item
            .tables("route", ROUTE_KEYS)?
            .iter()
            .map(decode_route)
            .collect::<Result<_>>()?;
    }
    if let Some(item) = top.get("dkim") {
        config.dkim = item
            .tables("dkim", DKIM_KEYS)?
            .iter()
            .map(|table| decode_dkim(table, cwd))
            .collect::<Result<_>>()?;
    }
    if let Some(item) = top.get("local") {
        decode_local(&item, cwd, &mut config.local)?;
    }
    if let Some(item) = top.get("scheduler") {
        decode_scheduler(&item, &mut config.scheduler)?;
    }
    if let Some(item) = top.get("tls") {
        decode_tls(&item, cwd, &mut config.tls)?;
    }
    if let Some(item) = top.get("smtp") {
        decode_smtp(&item, cwd, &mut config.smtp)?;
    }
    if let Some(item) = top.get("supervisor") {
        decode_supervisor(&item, &mut config.supervisor)?;
    }
    if let Some(item) = top.get("metrics") {
        let table = item.table(&["listen"])?;
        if let Some(v) = table.get("listen") {
            config.metrics.listen = if v.string()?.is_empty() {
                None
            } else {
                Some(v.socket_addr()?)
            };
        }
    }
    cross_section(&doc, &config)?;
    Ok((config, KeyLines(doc.lines.into_inner())))
}

/// The rules that span sections, each reported at the key that asks for
/// what is missing.
fn cross_section(doc: &Doc<'_>, config: &Config) -> Result<()> {
    if !config.smtpd.submission.is_empty() {
        let missing = if config.tls.cert.is_none() {
            Some("[tls] cert and key: AUTH is offered only after STARTTLS")
        } else if config.smtpd.password_file.is_none() {
            Some("smtpd.password_file: the users who may AUTH")
        } else {
            None
        };
        if let Some(missing) = missing {
            return Err(ConfigError {
                kind: ErrorKind::Invalid,
                file: doc.file.to_owned(),
                line: doc.lines.borrow().get("smtpd.submission").copied(),
                key: Some("smtpd.submission".to_owned()),
                message: format!("set, so it needs {missing}"),
            });
        }
    }
    Ok(())
}

const TOP_KEYS: &[&str] = &[
    "hostname",
    "user",
    "spool",
    "smtpd",
    "router",
    "route",
    "dkim",
    "local",
    "scheduler",
    "tls",
    "smtp",
    "supervisor",
    "metrics",
];

fn decode_hostname(item: &Item<'_, '_>) -> Result<String> {
    let name = item.string()?;
    if is_plausible_domain(name) {
        Ok(name.to_owned())
    } else {
        Err(item.invalid(format!(
            "invalid hostname {name:?} (expected a domain name such as \"mx.example.org\")"
        )))
    }
}

fn decode_user(item: &Item<'_, '_>) -> Result<Option<String>> {
    let Some(name) = item.optional_string()? else {
        return Ok(None);
    };
    // Characters that cannot occur in a passwd entry's name field; anything
    // else is left to getpwnam at privilege-drop time.
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
    {
        return Err(item.invalid(format!("invalid user name {name:?}")));
    }
    Ok(Some(name.to_owned()))
}

fn decode_spool(item: &Item<'_, '_>, cwd: &Path, out: &mut SpoolConfig) -> Result<()> {
    let table = item.table(&["dir", "drop_group"])?;
    if let Some(v) = table.get("dir") {
        out.dir = v.path(cwd)?;
    }
    if let Some(v) = table.get("drop_group") {
        let name = v.string()?;
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
        {
            return Err(v.invalid(format!("invalid group name {name:?}")));
        }
        out.drop_group = name.to_owned();
    }
    Ok(())
}

fn decode_smtpd(item: &Item<'_, '_>, cwd: &Path, out: &mut SmtpdConfig) -> Result<()> {
    let table = item.table(&[
        "listen",
        "submission",
        "relay_networks",
        "relay_domains",
        "max_message_size",
        "max_line_length",
        "max_recipients",
        "max_errors",
        "max_connections",
        "max_connections_per_client",
        "command_timeout",
        "data_timeout",
        "password_file",
        "verify_local_recipients",
        "reserved_connections_percent",
        "max_connection_rate",
        "connection_rate_interval",
        "rate_limit_exceptions",
        "stress_threshold_percent",
        "stress_command_timeout",
        "stress_max_errors",
        "min_data_rate",
        "milters",
        "submission_milters",
        "milter_default_action",
        "milter_connect_timeout",
        "milter_timeout",
        "milter_content_timeout",
    ])?;
    if let Some(v) = table.get("listen") {
        out.listen = v.list(Item::socket_addr)?;
    }
    if let Some(v) = table.get("submission") {
        let elements = v.array()?;
        let mut submission = Vec::with_capacity(elements.len());
        for element in &elements {
            let addr = element.socket_addr()?;
            // Both services would try to bind the same socket.
            if out.listen.contains(&addr) {
                return Err(element.invalid(format!("{addr} is also in smtpd.listen")));
            }
            submission.push(addr);
        }
        out.submission = submission;
    }
    if let Some(v) = table.get("relay_networks") {
        out.relay_networks = v.list(Item::parsed)?;
    }
    if let Some(v) = table.get("relay_domains") {
        out.relay_domains = v.list(|e| e.domain_pattern(false))?;
    }
    if let Some(v) = table.get("max_message_size") {
        out.max_message_size = v.size()?;
    }
    if let Some(v) = table.get("max_line_length") {
        out.max_line_length = v.count(512)?;
    }
    if let Some(v) = table.get("max_recipients") {
        out.max_recipients = v.count(1)?;
    }
    if let Some(v) = table.get("max_errors") {
        out.max_errors = v.count(1)?;
    }
    if let Some(v) = table.get("max_connections") {
        out.max_connections = v.count(1)?;
    }
    if let Some(v) = table.get("max_connections_per_client") {
        out.max_connections_per_client = v.count(0)?;
    }
    if let Some(v) = table.get("command_timeout") {
        out.command_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("data_timeout") {
        out.data_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("password_file") {
        out.password_file = v.optional_path(cwd)?;
    }
    if let Some(v) = table.get("verify_local_recipients") {
        out.verify_local_recipients = v.boolean()?;
    }
    if let Some(v) = table.get("reserved_connections_percent") {
        out.reserved_connections_percent = v.count_up_to(0, 50)?;
    }
    if let Some(v) = table.get("max_connection_rate") {
        out.max_connection_rate = v.count(0)?;
    }
    if let Some(v) = table.get("connection_rate_interval") {
        out.connection_rate_interval = v.timeout()?;
    }
    if let Some(v) = table.get("rate_limit_exceptions") {
        out.rate_limit_exceptions = v.list(Item::parsed)?;
    }
    if let Some(v) = table.get("stress_threshold_percent") {
        out.stress_threshold_percent = v.count_up_to(1, 100)?;
    }
    if let Some(v) = table.get("stress_command_timeout") {
        out.stress_command_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("stress_max_errors") {
        out.stress_max_errors = v.count(1)?;
    }
    if let Some(v) = table.get("min_data_rate") {
        out.min_data_rate = v.count(0)?;
    }
    if let Some(v) = table.get("milters") {
        out.milters = milter_list(&v)?;
    }
    if let Some(v) = table.get("submission_milters") {
        out.submission_milters = match v.value.get_ref() {
            DeValue::String(_) => v.optional_string()?.map_or(Ok(None), |_| {
                Err(v.wrong_type("an array of milters (or \"\" for the smtpd.milters)"))
            })?,
            _ => Some(milter_list(&v)?),
        };
    }
    if let Some(v) = table.get("milter_default_action") {
        out.milter_default_action = v.parsed()?;
    }
    if let Some(v) = table.get("milter_connect_timeout") {
        out.milter_connect_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("milter_timeout") {
        out.milter_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("milter_content_timeout") {
        out.milter_content_timeout = v.timeout()?;
    }
    Ok(())
}

fn decode_supervisor(item: &Item<'_, '_>, out: &mut SupervisorConfig) -> Result<()> {
    let table = item.table(&["restart_delay", "restart_delay_max", "healthy_after"])?;
    if let Some(v) = table.get("restart_delay") {
        out.restart_delay = v.timeout()?;
    }
    if let Some(v) = table.get("restart_delay_max") {
        out.restart_delay_max = v.timeout()?;
    }
    if let Some(v) = table.get("healthy_after") {
        out.healthy_after = v.timeout()?;
    }
    if out.restart_delay_max < out.restart_delay {
        let v = table
            .get("restart_delay_max")
            .or_else(|| table.get("restart_delay"))
            .expect("one of the two was set: the defaults are in order");
        return Err(v.invalid(format!(
            "supervisor.restart_delay_max ({}) is shorter than supervisor.restart_delay ({})",
            crate::units::format_duration(out.restart_delay_max),
            crate::units::format_duration(out.restart_delay)
        )));
    }
    Ok(())
}

fn decode_router(item: &Item<'_, '_>, cwd: &Path, out: &mut RouterConfig) -> Result<()> {
    let table = item.table(&[
        "local_domains",
        "aliases",
        "allow_pipe_targets",
        "allow_file_targets",
        "scan_interval",
        "milters",
    ])?;
    if let Some(v) = table.get("local_domains") {
        out.local_domains = v.list(Item::domain)?;
    }
    if let Some(v) = table.get("aliases") {
        out.aliases = v.optional_path(cwd)?;
    }
    if let Some(v) = table.get("allow_pipe_targets") {
        out.allow_pipe_targets = v.boolean()?;
    }
    if let Some(v) = table.get("allow_file_targets") {
        out.allow_file_targets = v.boolean()?;
    }
    if let Some(v) = table.get("scan_interval") {
        out.scan_interval = v.timeout()?;
    }
    if let Some(v) = table.get("milters") {
        out.milters = milter_list(&v)?;
    }
    Ok(())
}

/// A list of content filters, each its address (`unix:/path` or
/// `inet:ADDRESS:PORT`, sendmail's `inet:PORT@ADDRESS` too, the address an
/// IP address) or a table with the address and its own settings.
fn milter_list(v: &Item<'_, '_>) -> Result<Vec<MilterSpec>> {
    v.list(|item| {
        let (address_item, mut spec) = match item.value.get_ref() {
            DeValue::Table(_) => {
                let table = item.table(&[
                    "address",
                    "connect_timeout",
                    "timeout",
                    "content_timeout",
                    "default_action",
                ])?;
                let address = table.require("address", "every milter needs its address")?;
                let mut spec = MilterSpec::new(address.string()?);
                if let Some(v) = table.get("connect_timeout") {
                    spec.connect_timeout = Some(v.timeout()?);
                }
                if let Some(v) = table.get("timeout") {
                    spec.timeout = Some(v.timeout()?);
                }
                if let Some(v) = table.get("content_timeout") {
                    spec.content_timeout = Some(v.timeout()?);
                }
                if let Some(v) = table.get("default_action") {
                    spec.default_action = Some(v.parsed()?);
                }
                (address, spec)
            }
            _ => {
                let spec = MilterSpec::new(item.string()?);
                (
                    Item {
                        doc: item.doc,
                        path: item.path.clone(),
                        value: item.value,
                    },
                    spec,
                )
            }
        };
        let text = std::mem::take(&mut spec.address);
        let ok = match (text.strip_prefix("unix:"), text.strip_prefix("inet:")) {
            (Some(path), _) => path.starts_with('/'),
            (_, Some(addr)) => {
                addr.parse::<std::net::SocketAddr>().is_ok()
                    || addr.split_once('@').is_some_and(|(port, host)| {
                        port.parse::<u16>().is_ok() && host.parse::<std::net::IpAddr>().is_ok()
                    })
            }
            _ => false,
        };
        if !ok {
            return Err(address_item.invalid(format!(
                "invalid milter {text:?} (expected \"unix:/path\" or \"inet:ADDRESS:PORT\" with an IP address)"
            )));
        }
        spec.address = text;
        Ok(spec)
    })
}

fn decode_route(table: &Table<'_, '_>) -> Result<Route> {
    let domain = table
        .require("domain", "every [[route]] needs a domain pattern")?
        .domain_pattern(true)?;
    let channel_item = table.require("channel", "every [[route]] needs a channel")?;
    let channel = channel_item.channel()?;
    let nexthop = match table.get("nexthop") {
        Some(v) => match v.optional_string()? {
            Some(_) => Some(v.parsed()?),
            None => None,
        },
        None => None,
    };
    let tls = match table.get("tls") {
        Some(v) => match v.optional_string()? {
            Some(_) => Some(v.parsed()?),
            None => None,
        },
        None => None,
    };
    Ok(Route {
        domain,
        channel,
        nexthop,
        tls,
    })
}

const ROUTE_KEYS: &[&str] = &["domain", "channel", "nexthop", "tls"];

fn decode_dkim(table: &Table<'_, '_>, cwd: &Path) -> Result<DkimKey> {
    let domain = table
        .require(
            "domain",
            "every [[dkim]] needs the From: domain it signs for (or \"*\")",
        )?
        .domain_pattern(true)?;
    let selector_item = table.require("selector", "every [[dkim]] needs a selector")?;
    let selector = selector_item.string()?.to_owned();
    if !is_valid_dns_name(&selector) {
        return Err(selector_item.invalid(format!(
            "invalid selector {selector:?} (DNS labels: letters, digits, \"-\" and \"_\")"
        )));
    }
    let key = table
        .require("key", "every [[dkim]] needs its private key file")?
        .path(cwd)?;
    let algorithm = match table.get("algorithm") {
        Some(v) => v.parsed()?,
        None => DkimAlgorithm::RsaSha256,
    };
    let mut signing_domain = String::new();
    if let Some(v) = table.get("signing_domain") {
        let d = v.string()?.trim_end_matches('.').to_ascii_lowercase();
        if !d.is_empty() && !is_valid_dns_name(&d) {
            return Err(v.invalid(format!("invalid signing domain {d:?}")));
        }
        signing_domain = d;
    }
    let headers = match table.get("headers") {
        Some(v) => {
            let names = v.list(|item| {
                let name = item.string()?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(item.invalid(format!("invalid header field name {name:?}")));
                }
                Ok(name.to_owned())
            })?;
            if names.is_empty() {
                return Err(v.invalid("at least From must be signed (RFC 6376 §5.4)"));
            }
            names
        }
        None => DEFAULT_SIGNED_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect(),
    };
    let canonicalization = match table.get("canonicalization") {
        Some(v) => parse_canonicalization(v.string()?).map_err(|e| v.invalid(e.0))?,
        None => (Canonicalization::Relaxed, Canonicalization::Relaxed),
    };
    Ok(DkimKey {
        domain,
        selector,
        signing_domain,
        key,
        algorithm,
        headers,
        canonicalization,
    })
}

const DKIM_KEYS: &[&str] = &[
    "domain",
    "selector",
    "signing_domain",
    "key",
    "algorithm",
    "headers",
    "canonicalization",
];

fn decode_local(item: &Item<'_, '_>, cwd: &Path, out: &mut LocalConfig) -> Result<()> {
    let table = item.table(&["maildir_root", "home_mailbox"])?;
    if let Some(v) = table.get("maildir_root") {
        out.maildir_root = v.path(cwd)?;
    }
    if let Some(v) = table.get("home_mailbox") {
        let text = v.string()?;
        let path = Path::new(text);
        let plain = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !text.is_empty() && (!text.ends_with('/') || !plain || text.contains("//")) {
            return Err(v.invalid(format!(
                "{text:?}: expected a Maildir path relative to the home directory, ending in / (e.g. \"Maildir/\"), without .. or a leading /"
            )));
        }
        out.home_mailbox = text.to_owned();
    }
    Ok(())
}

fn decode_scheduler(item: &Item<'_, '_>, out: &mut SchedulerConfig) -> Result<()> {
    let table = item.table(&[
        "retries",
        "expiry",
        "maxta",
        "delay_warning",
        "agent_timeout",
        "clause",
    ])?;
    if let Some(v) = table.get("retries") {
        let retries = v.list(Item::timeout)?;
        if retries.is_empty() {
            return Err(v.invalid("at least one retry interval is needed, e.g. [\"5m\"]"));
        }
        out.retries = retries;
    }
    if let Some(v) = table.get("expiry") {
        out.expiry = v.timeout()?;
    }
    if let Some(v) = table.get("maxta") {
        out.maxta = v.count(0)?;
    }
    if let Some(v) = table.get("agent_timeout") {
        out.agent_timeout = v.timeout()?;
    }
    if let Some(v) = table.get("delay_warning") {
        out.delay_warning = match v.optional_string() {
            Ok(None) => None,
            // Not an empty string: a duration, as a string or as seconds.
            _ => Some(v.timeout()?),
        };
        if let Some(warning) = out.delay_warning
            && warning >= out.expiry
        {
            return Err(v.invalid("must be shorter than scheduler.expiry"));
        }
    }
    if let Some(v) = table.get("clause") {
        // An explicit `clause = []` would leave every thread without an
        // agent; only a file that says nothing about clauses gets the
        // defaults.
        if matches!(v.value.get_ref(), DeValue::Array(a) if a.is_empty()) {
            return Err(v.invalid(
                "at least one clause is needed (leave scheduler.clause out for the defaults)",
            ));
        }
        out.clause = v
            .tables("scheduler.clause", CLAUSE_KEYS)?
            .iter()
            .map(decode_clause)
            .collect::<Result<_>>()?;
    }
    Ok(())
}

fn decode_clause(table: &Table<'_, '_>) -> Result<Clause> {
    let pattern_item = table.require("match", "every clause needs a \"channel/host\" glob")?;
    let pattern = pattern_item.non_empty_string()?;
    let command = table
        .require("command", "every clause needs the agent program to run")?
        .non_empty_string()?;
    let mut clause = Clause::new(pattern, command);
    if let Some(v) = table.get("args") {
        clause.args = v.list(|e| e.string().map(str::to_owned))?;
    }
    if let Some(v) = table.get("maxthr") {
        clause.maxthr = v.count(1)?;
    }
    if let Some(v) = table.get("maxring") {
        clause.maxring = v.count(1)?;
    }
    if let Some(v) = table.get("maxchannel") {
        clause.maxchannel = v.count(0)?;
    }
    if let Some(v) = table.get("overfeed") {
        clause.overfeed = v.count(1)?;
    }
    if let Some(v) = table.get("idlemax") {
        clause.idlemax = v.duration()?;
    }
    Ok(clause)
}

const CLAUSE_KEYS: &[&str] = &[
    "match",
    "command",
    "args",
    "maxthr",
    "maxring",
    "maxchannel",
    "overfeed",
    "idlemax",
];

fn decode_tls(item: &Item<'_, '_>, cwd: &Path, out: &mut TlsConfig) -> Result<()> {
    let table = item.table(&["cert", "key"])?;
    let cert = table.get("cert");
    let key = table.get("key");
    out.cert = cert
        .as_ref()
        .map(|v| v.optional_path(cwd))
        .transpose()?
        .flatten();
    out.key = key
        .as_ref()
        .map(|v| v.optional_path(cwd))
        .transpose()?
        .flatten();
    match (&out.cert, &out.key, &cert, &key) {
        (Some(_), None, Some(item), _) => {
            Err(item.invalid("set, but tls.key is not: set both or neither"))
        }
        (None, Some(_), _, Some(item)) => {
            Err(item.invalid("set, but tls.cert is not: set both or neither"))
        }
        _ => Ok(()),
    }
}

fn decode_smtp(item: &Item<'_, '_>, cwd: &Path, out: &mut SmtpConfig) -> Result<()> {
    let table = item.table(&[
        "tls",
        "connect_timeout",
        "greeting_timeout",
        "ehlo_timeout",
        "mail_timeout",
        "rcpt_timeout",
        "data_init_timeout",
        "data_block_timeout",
        "data_term_timeout",
        "idle_timeout",
        "max_recipients_per_transaction",
        "window",
        "port",
        "nameservers",
        "mta_sts",
        "mta_sts_port",
        "ca_file",
    ])?;
    if let Some(v) = table.get("tls") {
        out.tls = v.parsed()?;
    }
    let timeouts: [(&str, &mut Duration); 9] = [
        ("connect_timeout", &mut out.connect_timeout),
        ("greeting_timeout", &mut out.greeting_timeout),
        ("ehlo_timeout", &mut out.ehlo_timeout),
        ("mail_timeout", &mut out.mail_timeout),
        ("rcpt_timeout", &mut out.rcpt_timeout),
        ("data_init_timeout", &mut out.data_init_timeout),
        ("data_block_timeout", &mut out.data_block_timeout),
        ("data_term_timeout", &mut out.data_term_timeout),
        ("idle_timeout", &mut out.idle_timeout),
    ];
    for (key, slot) in timeouts {
        if let Some(v) = table.get(key) {
            *slot = v.timeout()?;
        }
    }
    if let Some(v) = table.get("max_recipients_per_transaction") {
        out.max_recipients_per_transaction = v.count(1)?;
    }
    if let Some(v) = table.get("window") {
        let window = v.size()?;
        if window.bytes() == 0 {
            return Err(v.invalid("must be larger than 0"));
        }
        out.window = window;
    }
    if let Some(v) = table.get("port") {
        let port = v.count(1)?;
        out.port = u16::try_from(port)
            .map_err(|_| v.invalid(format!("must be a TCP port (1 to 65535), not {port}")))?;
    }
    if let Some(v) = table.get("nameservers") {
        out.nameservers = v.list(Item::socket_addr)?;
    }
    if let Some(v) = table.get("mta_sts") {
        out.mta_sts = v.boolean()?;
    }
    if let Some(v) = table.get("mta_sts_port") {
        let port = v.count(1)?;
        out.mta_sts_port = u16::try_from(port)
            .map_err(|_| v.invalid(format!("must be a TCP port (1 to 65535), not {port}")))?;
    }
    if let Some(v) = table.get("ca_file") {
        out.ca_file = v.optional_path(cwd)?;
    }
    Ok(())
}

/// The text being decoded, the name to report it under, and the line of
/// every key looked at so far.
struct Doc<'t> {
    file: &'t str,
    text: &'t str,
    lines: RefCell<BTreeMap<String, usize>>,
}

impl Doc<'_> {
    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&self, kind: ErrorKind, offset: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            kind,
            file: self.file.to_owned(),
            line: Some(self.line(offset)),
            key: (!key.is_empty()).then(|| key.to_owned()),
            message,
        }
    }

    fn syntax_error(&self, err: &toml::de::Error) -> ConfigError {
        // toml's messages are one line today; keep ours one line regardless.
        let message = err.message().trim().replace('\n', "; ");
        match err.span() {
            Some(span) => ConfigError {
                key: guess_key(self.text, span.start),
                ..self.error(ErrorKind::Syntax, span.start, "", message)
            },
            None => ConfigError {
                kind: ErrorKind::Syntax,
                file: self.file.to_owned(),
                line: None,
                key: None,
                message,
            },
        }
    }
}

/// A TOML table being decoded, with its dotted path and the offset of its
/// header (where "missing key" errors point).
struct Table<'a, 'i> {
    doc: &'a Doc<'a>,
    path: String,
    offset: usize,
    entries: &'a DeTable<'i>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// Wraps `entries`, rejecting any key not in `known` (the first one in
    /// file order, so the report is stable whatever the map's order).
    fn new(
        doc: &'a Doc<'a>,
        path: String,
        offset: usize,
        entries: &'a DeTable<'i>,
        known: &[&str],
    ) -> Result<Self> {
        let unknown = entries
            .iter()
            .map(|(key, _)| key)
            .filter(|key| !known.contains(&key.get_ref().as_ref()))
            .min_by_key(|key| key.span().start);
        if let Some(key) = unknown {
            let name: &str = key.get_ref();
            let message = match closest(name, known) {
                Some(near) => format!("unknown key; did you mean \"{near}\"?"),
                None => format!("unknown key (expected one of: {})", known.join(", ")),
            };
            return Err(doc.error(
                ErrorKind::UnknownKey,
                key.span().start,
                &join(&path, name),
                message,
            ));
        }
        Ok(Table {
            doc,
            path,
            offset,
            entries,
        })
    }

    fn get(&self, key: &str) -> Option<Item<'a, 'i>> {
        let (name, value) = self.entries.iter().find(|(k, _)| k.get_ref() == key)?;
        let path = join(&self.path, key);
        let line = self.doc.line(name.span().start);
        self.doc.lines.borrow_mut().insert(path.clone(), line);
        Some(Item {
            doc: self.doc,
            path,
            value,
        })
    }

    fn require(&self, key: &str, why: &str) -> Result<Item<'a, 'i>> {
        self.get(key).ok_or_else(|| {
            self.doc.error(
                ErrorKind::Missing,
                self.offset,
                &join(&self.path, key),
                format!("missing ({why})"),
            )
        })
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// One value in the document, with its dotted path (`smtpd.listen[1]`).
struct Item<'a, 'i> {
    doc: &'a Doc<'a>,
    path: String,
    value: &'a Value<'i>,
}

impl<'a, 'i> Item<'a, 'i> {
    fn error(&self, kind: ErrorKind, message: String) -> ConfigError {
        self.doc
            .error(kind, self.value.span().start, &self.path, message)
    }

    fn invalid(&self, message: impl Into<String>) -> ConfigError {
        self.error(ErrorKind::Invalid, message.into())
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        let found = match self.value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.error(
            ErrorKind::WrongType,
            format!("expected {expected}, found {found}"),
        )
    }

    fn string(&self) -> Result<&'a str> {
        match self.value.get_ref() {
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.wrong_type("a string")),
        }
    }

    /// `""` means "unset" for every optional key: TOML has no null.
    fn optional_string(&self) -> Result<Option<&'a str>> {
        self.string().map(|s| (!s.is_empty()).then_some(s))
    }

    fn non_empty_string(&self) -> Result<&'a str> {
        match self.string()? {
            "" => Err(self.invalid("must not be empty")),
            s => Ok(s),
        }
    }

    fn boolean(&self) -> Result<bool> {
        match self.value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.wrong_type("true or false")),
        }
    }

    fn integer(&self, expected: &str) -> Result<i128> {
        match self.value.get_ref() {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| self.invalid("integer out of range")),
            _ => Err(self.wrong_type(expected)),
        }
    }

    /// A whole number from `min` to `u32::MAX`.
    fn count(&self, min: u32) -> Result<u32> {
        let n = self.integer("an integer")?;
        if n < i128::from(min) {
            return Err(self.invalid(format!("must be at least {min}, not {n}")));
        }
        u32::try_from(n).map_err(|_| self.invalid(format!("must be at most {}, not {n}", u32::MAX)))
    }

    /// A whole number from `min` to `max`.
    fn count_up_to(&self, min: u32, max: u32) -> Result<u32> {
        let n = self.count(min)?;
        if n > max {
            return Err(self.invalid(format!("must be at most {max}, not {n}")));
        }
        Ok(n)
    }

    /// A duration string with its unit (`"30s"`, `"5d"`). An integer is
    /// refused unless it is 0: `expiry = 5` meant seconds to the parser
    /// and days to the operator who wrote it.
    fn duration(&self) -> Result<Duration> {
        match self.value.get_ref() {
            DeValue::String(s) => parse_duration(s).map_err(|e| self.invalid(e.to_string())),
            DeValue::Integer(_) => match self.integer("")? {
                0 => Ok(Duration::ZERO),
                n => Err(self.invalid(unitless_duration_error(&n.to_string()).to_string())),
            },
            _ => Err(self.wrong_type("a duration such as \"5m\"")),
        }
    }

    /// A duration that must not be zero: a zero timeout or retry interval
    /// would spin or give up at once.
    fn timeout(&self) -> Result<Duration> {
        let duration = self.duration()?;
        if duration.is_zero() {
            return Err(self.invalid("must be longer than 0s"));
        }
        Ok(duration)
    }

    /// A size string, or an integer number of bytes.
    fn size(&self) -> Result<ByteSize> {
        match self.value.get_ref() {
            DeValue::String(s) => s
                .parse()
                .map_err(|e: ValueError| self.invalid(e.to_string())),
            DeValue::Integer(_) => {
                let bytes = self.integer("")?;
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| self.invalid(format!("must not be negative, not {bytes}")))
            }
            _ => Err(self.wrong_type("a size such as \"50M\"")),
        }
    }

    /// A string parsed by one of this crate's value types.
    fn parsed<T: FromStr<Err = ValueError>>(&self) -> Result<T> {
        self.string()?
            .parse()
            .map_err(|e: ValueError| self.invalid(e.to_string()))
    }

    fn socket_addr(&self) -> Result<SocketAddr> {
        let text = self.string()?;
        text.parse().map_err(|_| {
            self.invalid(format!(
                "invalid address {text:?} (expected ip:port, e.g. \"127.0.0.1:2525\" or \"[::]:25\")"
            ))
        })
    }

    /// A plain domain name, stored in lower case.
    fn domain(&self) -> Result<String> {
        let name = self.string()?;
        if is_plausible_domain(name) {
            Ok(name.to_ascii_lowercase())
        } else {
            Err(self.invalid(format!(
                "invalid domain {name:?} (expected a domain name such as \"example.org\")"
            )))
        }
    }

    fn domain_pattern(&self, allow_any: bool) -> Result<String> {
        parse_pattern(self.string()?, allow_any).map_err(|e| self.invalid(e.to_string()))
    }

    fn channel(&self) -> Result<String> {
        let name = self.string()?;
        if name.is_empty() {
            return Err(self.invalid("must not be empty"));
        }
        if !is_valid_channel(name) {
            return Err(self.invalid(format!(
                "invalid channel {name:?} (letters, digits, \"-\" and \"_\" only)"
            )));
        }
        Ok(name.to_owned())
    }

    /// A path, made absolute against `cwd`.
    fn path(&self, cwd: &Path) -> Result<PathBuf> {
        match self.optional_path(cwd)? {
            Some(path) => Ok(path),
            None => Err(self.invalid("must not be empty")),
        }
    }

    fn optional_path(&self, cwd: &Path) -> Result<Option<PathBuf>> {
        match self.optional_string()? {
            None => Ok(None),
            // No file name can contain NUL; the kernel would refuse it later
            // with a less helpful message.
            Some(s) if s.contains('\0') => Err(self.invalid("a path cannot contain NUL")),
            Some(s) => Ok(Some(resolve(cwd, Path::new(s)))),
        }
    }

    fn array(&self) -> Result<Vec<Item<'a, 'i>>> {
        match self.value.get_ref() {
            DeValue::Array(elements) => Ok(elements
                .iter()
                .enumerate()
                .map(|(i, value)| Item {
                    doc: self.doc,
                    path: format!("{}[{i}]", self.path),
                    value,
                })
                .collect()),
            _ => Err(self.wrong_type("an array")),
        }
    }

    fn list<T>(&self, each: impl Fn(&Item<'a, 'i>) -> Result<T>) -> Result<Vec<T>> {
        self.array()?.iter().map(each).collect()
    }

    fn table(&self, known: &[&str]) -> Result<Table<'a, 'i>> {
        match self.value.get_ref() {
            DeValue::Table(entries) => Table::new(
                self.doc,
                self.path.clone(),
                self.value.span().start,
                entries,
                known,
            ),
            _ => Err(self.wrong_type("a table")),
        }
    }

    /// An array of tables (`[[name]]`), each checked against `known`.
    fn tables(&self, name: &str, known: &[&str]) -> Result<Vec<Table<'a, 'i>>> {
        let expected = format!("an array of tables (write [[{name}]])");
        match self.value.get_ref() {
            DeValue::Array(_) => self
                .array()?
                .iter()
                .map(|element| match element.value.get_ref() {
                    DeValue::Table(_) => element.table(known),
                    _ => Err(element.wrong_type("a table")),
                })
                .collect(),
            _ => Err(self.wrong_type(&expected)),
        }
    }
}

/// The known key nearest to a misspelt one, if it is near enough to be a
/// plausible typo (edit distance at most 2, and less than half its length).
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2 && *distance * 2 < candidate.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Best-effort dotted key for a syntax error at `offset`, since the parser
/// stops before it knows one: the innermost `[table]` or `[[array]]` header
/// above the error, plus the key on the error's line if that line starts
/// with `key =`. Headers inside multi-line strings can fool it; it is only
/// a hint beside the line number, which is always exact.
fn guess_key(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text.as_bytes()[..offset]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut section = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for line in text.as_bytes()[..line_start].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("[[")
            .and_then(|rest| rest.split_once("]]"))
            .map(|(name, _)| name.trim().to_owned())
        {
            let index = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            section = format!("{name}[{index}]");
        } else if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map(|(name, _)| name.trim().to_owned())
        {
            section = name;
        }
    }
    let error_line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let error_line = String::from_utf8_lossy(&text.as_bytes()[line_start..error_line_end]);
    // A broken header (`[smtpd` with no `]`) is about the table it names,
    // not about the table above it.
    if let Some(header) = error_line.trim().strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default()
            .trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    let key = error_line
        .split_once('=')
        .map(|(key, _)| key.trim())
        .filter(|key| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
        .map(|key| join(&section, key));
    key.or_else(|| (!section.is_empty()).then_some(section))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_suggestions() {
        let known = ["listen", "submission", "max_errors", "max_recipients"];
        let cases = [
            ("lisen", Some("listen")),
            ("listen_", Some("listen")),
            ("max_error", Some("max_errors")),
            ("submision", Some("submission")),
            ("xyz", None),
            ("max", None),
        ];
        for (name, want) in cases {
            assert_eq!(closest(name, &known), want, "{name}");
        }
    }

    #[test]
    fn edit_distances() {
        let cases = [
            ("", "", 0),
            ("a", "", 1),
            ("", "ab", 2),
            ("kitten", "sitting", 3),
            ("lisen", "listen", 1),
            ("same", "same", 0),
        ];
        for (a, b, want) in cases {
            assert_eq!(edit_distance(a, b), want, "{a} / {b}");
        }
    }

    #[test]
    fn syntax_error_key_guesses() {
        let text = "hostname = \"x\"\n[smtpd]\nlisten = [\n[[route]]\ndomain = x\n[[route]]\nchannel = ?\n[scheduler]\n???\n";
        let offset_of = |needle: &str| text.find(needle).expect("needle in text");
        let cases = [
            (0, Some("hostname")),
            (offset_of("listen"), Some("smtpd.listen")),
            (offset_of("domain"), Some("route[0].domain")),
            (offset_of("channel"), Some("route[1].channel")),
            (offset_of("???"), Some("scheduler")),
            (text.len() + 10, Some("scheduler")),
        ];
        for (offset, want) in cases {
            assert_eq!(guess_key(text, offset).as_deref(), want, "offset {offset}");
        }
        // A header that does not close names its own table.
        let text = "[spool]\ndir = \"x\"\n[smtpd\nlisten = []\n";
        assert_eq!(
            guess_key(text, text.find("[smtpd").expect("header")).as_deref(),
            Some("smtpd")
        );
        let text = "[spool]\n[[route\n";
        assert_eq!(
            guess_key(text, text.find("[[route").expect("header") + 2).as_deref(),
            Some("route")
        );
        assert_eq!(guess_key("= 1\n", 0), None);
        assert_eq!(guess_key("", 0), None);
    }
}
