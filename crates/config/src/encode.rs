//! From [`Config`] back to TOML: the effective configuration, every key
//! spelled out, in a form [`Config::from_toml_str`](crate::Config::from_toml_str)
//! reads back to an equal value.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::units::format_duration;

/// Renders `config` as TOML. Optional settings that are unset are written
/// as `""`, which reads back as unset.
pub(crate) fn encode(config: &Config) -> String {
    write(config).text
}

/// Every setting as `(dotted key, TOML value)`, in the order
/// [`encode`] writes them: `smtpd.max_errors`, `route[0].domain`,
/// `scheduler.clause[1].maxthr`.
pub(crate) fn settings(config: &Config) -> Vec<(String, String)> {
    write(config).settings
}

fn write(config: &Config) -> Writer {
    let mut out = Writer::default();
    out.comment("skein configuration: effective values, every default filled in");
    out.kv("hostname", &string(&config.hostname));
    out.kv("user", &string(config.user.as_deref().unwrap_or("")));

    out.section("[spool]");
    out.kv("dir", &path(Some(&config.spool.dir)));
    out.kv("drop_group", &string(&config.spool.drop_group));

    let smtpd = &config.smtpd;
    out.section("[smtpd]");
    out.kv("listen", &list(&smtpd.listen));
    out.kv("submission", &list(&smtpd.submission));
    out.kv("relay_networks", &list(&smtpd.relay_networks));
    out.kv("relay_domains", &list(&smtpd.relay_domains));
    out.kv(
        "max_message_size",
        &string(&smtpd.max_message_size.to_string()),
    );
    out.kv("max_line_length", &smtpd.max_line_length.to_string());
    out.kv("max_recipients", &smtpd.max_recipients.to_string());
    out.kv("max_errors", &smtpd.max_errors.to_string());
    out.kv("max_connections", &smtpd.max_connections.to_string());
    out.kv(
        "max_connections_per_client",
        &smtpd.max_connections_per_client.to_string(),
    );
    out.kv("command_timeout", &duration(smtpd.command_timeout));
    out.kv("data_timeout", &duration(smtpd.data_timeout));
    out.kv("password_file", &path(smtpd.password_file.as_deref()));
    out.kv(
        "verify_local_recipients",
        &smtpd.verify_local_recipients.to_string(),
    );
    out.kv(
        "reserved_connections_percent",
        &smtpd.reserved_connections_percent.to_string(),
    );
    out.kv(
        "max_connection_rate",
        &smtpd.max_connection_rate.to_string(),
    );
    out.kv(
        "connection_rate_interval",
        &duration(smtpd.connection_rate_interval),
    );
    out.kv("rate_limit_exceptions", &list(&smtpd.rate_limit_exceptions));
    out.kv(
        "stress_threshold_percent",
        &smtpd.stress_threshold_percent.to_string(),
    );
    out.kv(
        "stress_command_timeout",
        &duration(smtpd.stress_command_timeout),
    );
    out.kv("stress_max_errors", &smtpd.stress_max_errors.to_string());
    out.kv("min_data_rate", &smtpd.min_data_rate.to_string());
    out.kv("milters", &milters(&smtpd.milters));
    out.kv(
        "submission_milters",
        &smtpd
            .submission_milters
            .as_ref()
            .map_or_else(|| string(""), |l| milters(l)),
    );
    out.kv(
        "milter_default_action",
        &string(smtpd.milter_default_action.as_str()),
    );
    out.kv(
        "milter_connect_timeout",
        &duration(smtpd.milter_connect_timeout),
    );
    out.kv("milter_timeout", &duration(smtpd.milter_timeout));
    out.kv(
        "milter_content_timeout",
        &duration(smtpd.milter_content_timeout),
    );

    let router = &config.router;
    out.section("[router]");
    out.kv("local_domains", &list(&router.local_domains));
    out.kv("aliases", &path(router.aliases.as_deref()));
    out.kv("allow_pipe_targets", &router.allow_pipe_targets.to_string());
    out.kv("allow_file_targets", &router.allow_file_targets.to_string());
    out.kv("scan_interval", &duration(router.scan_interval));
    out.kv("milters", &milters(&router.milters));

    for route in &config.route {
        out.section("[[route]]");
        out.kv("domain", &string(&route.domain));
        out.kv("channel", &string(&route.channel));
        let nexthop = route.nexthop.as_ref().map(ToString::to_string);
        out.kv("nexthop", &string(nexthop.as_deref().unwrap_or("")));
        let tls = route.tls.map(|policy| policy.as_str()).unwrap_or("");
        out.kv("tls", &string(tls));
    }

    for dkim in &config.dkim {
        out.section("[[dkim]]");
        out.kv("domain", &string(&dkim.domain));
        out.kv("selector", &string(&dkim.selector));
        out.kv("signing_domain", &string(&dkim.signing_domain));
        out.kv("key", &path(Some(&dkim.key)));
        out.kv("algorithm", &string(dkim.algorithm.as_str()));
        out.kv("headers", &list(&dkim.headers));
        let (header, body) = dkim.canonicalization;
        out.kv(
            "canonicalization",
            &string(&format!("{}/{}", header.as_str(), body.as_str())),
        );
    }

    out.section("[local]");
    out.kv("maildir_root", &path(Some(&config.local.maildir_root)));
    out.kv("home_mailbox", &string(&config.local.home_mailbox));

    let scheduler = &config.scheduler;
    out.section("[scheduler]");
    let retries: Vec<String> = scheduler
        .retries
        .iter()
        .map(|d| format_duration(*d))
        .collect();
    out.kv("retries", &list(&retries));
    out.kv("expiry", &duration(scheduler.expiry));
    out.kv("maxta", &scheduler.maxta.to_string());
    let warning = scheduler.delay_warning.map(format_duration);
    out.kv("delay_warning", &string(warning.as_deref().unwrap_or("")));
    out.kv("agent_timeout", &duration(scheduler.agent_timeout));
    for clause in &scheduler.clause {
        out.section("[[scheduler.clause]]");
        out.kv("match", &string(&clause.pattern));
        out.kv("command", &string(&clause.command));
        out.kv("args", &list(&clause.args));
        out.kv("maxthr", &clause.maxthr.to_string());
        out.kv("maxring", &clause.maxring.to_string());
        out.kv("maxchannel", &clause.maxchannel.to_string());
        out.kv("overfeed", &clause.overfeed.to_string());
        out.kv("idlemax", &duration(clause.idlemax));
    }

    out.section("[tls]");
    out.kv("cert", &path(config.tls.cert.as_deref()));
    out.kv("key", &path(config.tls.key.as_deref()));

    let smtp = &config.smtp;
    out.section("[smtp]");
    out.kv("tls", &string(smtp.tls.as_str()));
    out.kv("connect_timeout", &duration(smtp.connect_timeout));
    out.kv("greeting_timeout", &duration(smtp.greeting_timeout));
    out.kv("ehlo_timeout", &duration(smtp.ehlo_timeout));
    out.kv("mail_timeout", &duration(smtp.mail_timeout));
    out.kv("rcpt_timeout", &duration(smtp.rcpt_timeout));
    out.kv("data_init_timeout", &duration(smtp.data_init_timeout));
    out.kv("data_block_timeout", &duration(smtp.data_block_timeout));
    out.kv("data_term_timeout", &duration(smtp.data_term_timeout));
    out.kv("idle_timeout", &duration(smtp.idle_timeout));
    out.kv(
        "max_recipients_per_transaction",
        &smtp.max_recipients_per_transaction.to_string(),
    );
    out.kv("window", &string(&smtp.window.to_string()));
    out.kv("port", &smtp.port.to_string());
    out.kv("nameservers", &list(&smtp.nameservers));
    out.kv("mta_sts", &smtp.mta_sts.to_string());
    out.kv("mta_sts_port", &smtp.mta_sts_port.to_string());
    out.kv("ca_file", &path(smtp.ca_file.as_deref()));

    let supervisor = &config.supervisor;
    out.section("[supervisor]");
    out.kv("restart_delay", &duration(supervisor.restart_delay));
    out.kv("restart_delay_max", &duration(supervisor.restart_delay_max));
    out.kv("healthy_after", &duration(supervisor.healthy_after));

    out.section("[metrics]");
    out.kv(
        "listen",
        &string(
            &config
                .metrics
                .listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
    );
    out
}

#[derive(Default)]
struct Writer {
    text: String,
    /// The dotted path of the current table (`smtpd`, `route[2]`).
    section: String,
    /// How many of each array of tables have been opened.
    arrays: Vec<(String, usize)>,
    settings: Vec<(String, String)>,
}

impl Writer {
    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.text, "# {text}");
    }

    fn section(&mut self, header: &str) {
        let _ = writeln!(self.text, "\n{header}");
        self.section = match header.strip_prefix("[[").and_then(|h| h.strip_suffix("]]")) {
            Some(name) => {
                let index = match self.arrays.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => {
                        *count += 1;
                        *count - 1
                    }
                    None => {
                        self.arrays.push((name.to_owned(), 1));
                        0
                    }
                };
                format!("{name}[{index}]")
            }
            None => header.trim_matches(|c| c == '[' || c == ']').to_owned(),
        };
    }

    fn kv(&mut self, key: &str, value: &str) {
        let _ = writeln!(self.text, "{key} = {value}");
        let path = if self.section.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.section)
        };
        self.settings.push((path, value.to_owned()));
    }
}

fn duration(d: Duration) -> String {
    string(&format_duration(d))
}

/// Paths that are not UTF-8 are written lossily: TOML strings are Unicode.
/// Only a working directory with such a name can produce one, since every
/// path read from the file is UTF-8.
fn path(p: Option<&Path>) -> String {
    string(
        &p.map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

/// A filter list: each filter its address, or an inline table with the
/// settings it has of its own.
fn milters(specs: &[crate::MilterSpec]) -> String {
    let items: Vec<String> = specs
        .iter()
        .map(|m| {
            if m.is_plain() {
                return string(&m.address);
            }
            let mut fields = vec![format!("address = {}", string(&m.address))];
            if let Some(d) = m.connect_timeout {
                fields.push(format!("connect_timeout = {}", duration(d)));
            }
            if let Some(d) = m.timeout {
                fields.push(format!("timeout = {}", duration(d)));
            }
            if let Some(d) = m.content_timeout {
                fields.push(format!("content_timeout = {}", duration(d)));
            }
            if let Some(a) = m.default_action {
                fields.push(format!("default_action = {}", string(a.as_str())));
            }
            format!("{{ {} }}", fields.join(", "))
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|item| string(&item.to_string())).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML basic string, escaping what TOML requires escaped.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_named_by_dotted_paths_with_array_indexes() {
        let text = "[[route]]\ndomain = \"a.test\"\nchannel = \"smtp\"\n\
                    [[route]]\ndomain = \"b.test\"\nchannel = \"local\"\n";
        let config = Config::from_toml_str(text, "t", Path::new("/")).expect("parses");
        let settings = settings(&config);
        let get = |key: &str| {
            settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("route[0].domain"), Some("\"a.test\""));
        assert_eq!(get("route[1].channel"), Some("\"local\""));
        assert_eq!(get("smtpd.max_errors"), Some("20"));
        assert_eq!(get("user"), Some("\"\""));
        assert!(get("scheduler.clause[0].maxthr").is_some(), "{settings:?}");
        assert_eq!(get("route[2].domain"), None);
        // One entry per line of the encoding that sets a key.
        let lines = encode(&config)
            .lines()
            .filter(|l| l.contains(" = "))
            .count();
        assert_eq!(settings.len(), lines);
    }

    #[test]
    fn strings_are_escaped_and_parse_back() {
        let cases = [
            ("plain", "\"plain\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("tab\there", "\"tab\\there\""),
            ("nl\ncr\r", "\"nl\\ncr\\r\""),
            ("bell\u{7}del\u{7f}", "\"bell\\u0007del\\u007F\""),
            ("ünïcödé", "\"ünïcödé\""),
        ];
        for (raw, quoted) in cases {
            assert_eq!(string(raw), quoted);
            let doc = format!("v = {quoted}\n");
            let table: toml::Table = toml::from_str(&doc).expect("escaped string parses");
            assert_eq!(table.get("v").and_then(|v| v.as_str()), Some(raw));
        }
    }
}
