//! Routing: from one message's envelope recipients to the routed
//! recipients of its control file, each a thread `(channel, host)` and an
//! address, or a failure with its enhanced status code.
//!
//! | recipient | routed to |
//! |---|---|
//! | a local domain (`router.local_domains` or `hostname`) | aliases first; then channel `local`, host = the user (local part in lower case, `+extension` removed) |
//! | a domain with a `[[route]]` | the route's channel; host = its `nexthop` (`host:port`, then `,tls=<policy>` when the route sets `tls`) if it has one, else the domain |
//! | anything else | channel `smtp`, host = the domain in lower case |
//!
//! | failure | status |
//! |---|---|
//! | address syntax | 5.1.3 |
//! | unknown local user | 5.1.1 |
//! | alias loop, aliases nested too deep, or more than 100 `Received` fields | 5.4.6 |
//! | an `:include:` file that does not exist | 5.2.4 |
//! | a `\|command` or `/file` target not allowed by the configuration | 5.7.1 |
//!
//! A failed recipient is written to the control file on channel
//! [`FAILED_CHANNEL`], host [`FAILED_HOST`], with an initial `failed`
//! outcome, so the scheduler bounces it without starting any agent.
//!
//! Expansion is pure: the alias table is in memory and the only question
//! asked of the system is whether a local user exists ([`Users`]).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;

use skein_config::Config;
use skein_mail::{EnhancedCode, Mailbox, Notify, xtext};
use skein_spool::{Envelope, Recipient};

use crate::aliases::{AliasTable, Include, Target};
use crate::users::{Users, is_safe_user_name};

/// Aliases (and include files) may nest this deep; deeper is treated as a
/// loop (5.4.6). sendmail stops at 10; lists of lists rarely go past 3.
pub const MAX_ALIAS_DEPTH: usize = 20;

/// The channel of recipients that failed at routing. No agent serves it:
/// their initial `failed` record makes them bounce.
pub const FAILED_CHANNEL: &str = "error";
/// The host of recipients that failed at routing.
pub const FAILED_HOST: &str = "router";
/// The channel of `|command` targets (when allowed).
pub const PIPE_CHANNEL: &str = "pipe";
/// The channel of `/file` targets (when allowed).
pub const FILE_CHANNEL: &str = "file";

/// Why a recipient cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Enhanced status code (RFC 3463).
    pub status: EnhancedCode,
    /// For the log and the DSN's Diagnostic-Code.
    pub diagnostic: String,
}

/// One routed recipient, ready to become a control-file `rcpt` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The channel (the agent that delivers).
    pub channel: String,
    /// The host within the channel: the thread is `(channel, host)`.
    pub host: String,
    /// The address to deliver to (or `|command`, `/file`).
    pub address: String,
    /// The static next hop `host:port`, when a route gave one.
    pub nexthop: Option<String>,
    /// NOTIFY= of the envelope recipient it came from.
    pub notify: Option<Notify>,
    /// ORCPT=: the envelope's, else `rfc822;<original>` when expansion
    /// changed the address.
    pub orcpt: Option<String>,
    /// Set when the recipient failed at routing.
    pub failure: Option<Failure>,
}

/// Routes recipients with one configuration and one alias table.
pub struct Router<'a> {
    config: &'a Config,
    aliases: &'a AliasTable,
    users: &'a dyn Users,
}

impl<'a> Router<'a> {
    /// A router over `config` (local domains, hostname, routes, target
    /// policy), `aliases` and `users`.
    pub fn new(config: &'a Config, aliases: &'a AliasTable, users: &'a dyn Users) -> Self {
        Router {
            config,
            aliases,
            users,
        }
    }

    /// Whether mail for `domain` is delivered here: one of
    /// `router.local_domains`, or the configured `hostname`.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.config.router.is_local_domain(domain)
            || domain.eq_ignore_ascii_case(&self.config.hostname)
    }

    /// Routes every recipient of `envelope`. `looping` makes every
    /// recipient fail with 5.4.6 (the header had too many `Received`
    /// fields; `received` says how many). Duplicates (same channel, host
    /// and address) are collapsed, keeping the first.
    ///
    /// An error means a local user could not be looked up: the caller
    /// should try the whole message again later rather than bounce it.
    pub fn route(
        &self,
        envelope: &Envelope,
        received: usize,
        looping: bool,
    ) -> io::Result<Vec<Routed>> {
        let mut out = Output::default();
        let mut done = HashSet::new();
        for original in &envelope.recipients {
            let mut expansion = Expansion {
                router: self,
                original,
                out: &mut out,
                done: &mut done,
                produced: 0,
            };
            if looping {
                expansion.fail(
                    &original.address,
                    EnhancedCode::ROUTING_LOOP,
                    format!(
                        "mail loop detected: the message has {received} Received header fields"
                    ),
                );
                continue;
            }
            expansion.top(envelope.smtputf8)?;
            if expansion.produced == 0 {
                // Only an empty :include: list gets here; the control file
                // needs a recipient, and the sender should hear of it.
                expansion.fail(
                    &original.address,
                    EnhancedCode::LIST_EXPANSION,
                    "alias expansion yielded no recipients (empty mailing list)".to_owned(),
                );
            }
        }
        Ok(out.routed)
    }
}

#[derive(Default)]
struct Output {
    routed: Vec<Routed>,
    seen: HashSet<(String, String, String)>,
}

/// A step of an expansion, for loop detection and messages. The domain is
/// part of it because bare names expand in the domain they were reached
/// from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Alias(String, String),
    Include(PathBuf, String),
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Alias(name, _) => f.write_str(name),
            Node::Include(path, _) => write!(f, ":include:{}", path.display()),
        }
    }
}

/// The expansion of one envelope recipient.
struct Expansion<'r, 'a> {
    router: &'r Router<'a>,
    original: &'r Recipient,
    out: &'r mut Output,
    /// Nodes already expanded for this message: reaching one again (from
    /// another recipient or another branch) can only produce duplicates,
    /// and skipping it keeps the work linear in the size of the table
    /// whatever the shape of the aliases.
    done: &'r mut HashSet<Node>,
    /// Recipients this expansion yielded, duplicates and nodes already done
    /// included: zero means it yielded nothing at all.
    produced: usize,
}

impl Expansion<'_, '_> {
    fn top(&mut self, smtputf8: bool) -> io::Result<()> {
        let given = &self.original.address;
        // RFC 5321 §4.5.1: the unqualified "Postmaster" must be accepted.
        let address = if given.eq_ignore_ascii_case("postmaster") {
            format!("postmaster@{}", self.router.config.hostname)
        } else {
            given.clone()
        };
        match Mailbox::parse(&address, smtputf8) {
            Ok(mailbox) => self.address(mailbox.local(), mailbox.domain(), &mut Vec::new(), None),
            Err(e) => {
                self.fail(
                    given,
                    EnhancedCode::BAD_MAILBOX_SYNTAX,
                    format!("bad recipient address syntax: {e}"),
                );
                Ok(())
            }
        }
    }

    /// An address reached during expansion (or given in the envelope).
    /// `parent` is the alias being expanded, if any: its own name among its
    /// targets means the user of that name (`ann: ann, archive`).
    fn address(
        &mut self,
        local: &str,
        domain: &str,
        chain: &mut Vec<Node>,
        parent: Option<&str>,
    ) -> io::Result<()> {
        if !self.router.is_local_domain(domain) {
            self.remote(local, domain);
            return Ok(());
        }
        let name = local.to_lowercase();
        if parent == Some(name.as_str()) {
            return self.user(&name, &format!("{local}@{domain}"));
        }
        let base = strip_extension(&name);
        let aliases = self.router.aliases;
        let alias = aliases
            .lookup(&name)
            .or_else(|| (base != name).then(|| aliases.lookup(base)).flatten());
        if let Some(alias) = alias {
            return self.expand(&alias.name, &alias.targets, domain, chain);
        }
        if base == "postmaster" {
            // Always deliverable: to root unless the aliases say otherwise.
            let implicit = [Target::Local("root".to_owned())];
            return self.expand("postmaster", &implicit, domain, chain);
        }
        self.user(&name, &format!("{local}@{domain}"))
    }

    fn expand(
        &mut self,
        name: &str,
        targets: &[Target],
        domain: &str,
        chain: &mut Vec<Node>,
    ) -> io::Result<()> {
        let node = Node::Alias(name.to_owned(), domain.to_lowercase());
        if !self.enter(&node, &format!("{name}@{domain}"), chain) {
            return Ok(());
        }
        for target in targets {
            self.target(target, name, domain, chain)?;
        }
        chain.pop();
        Ok(())
    }

    /// Checks `node` against the chain (loop), the depth limit and the
    /// nodes already done; pushes it and returns true when it is to be
    /// expanded now.
    fn enter(&mut self, node: &Node, address: &str, chain: &mut Vec<Node>) -> bool {
        if chain.contains(node) {
            let path: Vec<String> = chain
                .iter()
                .chain(std::iter::once(node))
                .map(Node::to_string)
                .collect();
            self.fail(
                address,
                EnhancedCode::ROUTING_LOOP,
                format!("alias loop: {}", path.join(" -> ")),
            );
            return false;
        }
        if chain.len() >= MAX_ALIAS_DEPTH {
            self.fail(
                address,
                EnhancedCode::ROUTING_LOOP,
                format!("aliases nested more than {MAX_ALIAS_DEPTH} levels deep"),
            );
            return false;
        }
        if !self.done.insert(node.clone()) {
            self.produced += 1;
            return false;
        }
        chain.push(node.clone());
        true
    }

    fn target(
        &mut self,
        target: &Target,
        parent: &str,
        domain: &str,
        chain: &mut Vec<Node>,
    ) -> io::Result<()> {
        let policy = &self.router.config.router;
        match target {
            Target::Local(name) => self.address(name, domain, chain, Some(parent)),
            Target::User(name) => self.user(name, &format!("{name}@{domain}")),
            Target::Address(address) => match Mailbox::parse(address, true) {
                Ok(m) => self.address(m.local(), m.domain(), chain, Some(parent)),
                // The parser checked it; kept for tables built by hand.
                Err(e) => {
                    self.fail(
                        address,
                        EnhancedCode::BAD_MAILBOX_SYNTAX,
                        format!("alias {parent}: bad address: {e}"),
                    );
                    Ok(())
                }
            },
            Target::Pipe(command) => {
                if policy.allow_pipe_targets {
                    self.leaf(PIPE_CHANNEL, parent, format!("|{command}"), None);
                } else {
                    self.fail(
                        &format!("{parent}@{domain}"),
                        EnhancedCode::NOT_AUTHORIZED,
                        format!(
                            "alias {parent}: delivery to a command (|{command}) is not allowed (router.allow_pipe_targets is off)"
                        ),
                    );
                }
                Ok(())
            }
            Target::File(path) => {
                if policy.allow_file_targets {
                    self.leaf(FILE_CHANNEL, parent, path.clone(), None);
                } else {
                    self.fail(
                        &format!("{parent}@{domain}"),
                        EnhancedCode::NOT_AUTHORIZED,
                        format!(
                            "alias {parent}: delivery to a file ({path}) is not allowed (router.allow_file_targets is off)"
                        ),
                    );
                }
                Ok(())
            }
            Target::Include(path) => {
                let here = format!("{parent}@{domain}");
                let targets = match self.router.aliases.include(path) {
                    Some(Include::Targets(targets)) => targets,
                    Some(Include::Missing) | None => {
                        self.fail(
                            &here,
                            EnhancedCode::LIST_EXPANSION,
                            format!(
                                "alias {parent}: include file {} does not exist",
                                path.display()
                            ),
                        );
                        return Ok(());
                    }
                };
                let node = Node::Include(path.clone(), domain.to_lowercase());
                if !self.enter(&node, &here, chain) {
                    return Ok(());
                }
                // Members of a list belong to the alias that includes it:
                // `ann: :include:x` with "ann" in x is the user ann.
                for target in targets {
                    self.target(target, parent, domain, chain)?;
                }
                chain.pop();
                Ok(())
            }
        }
    }

    /// The local user `name` (lower case, extension allowed), at `address`.
    fn user(&mut self, name: &str, address: &str) -> io::Result<()> {
        let user = strip_extension(name);
        if is_safe_user_name(user) && self.router.users.exists(user)? {
            self.leaf("local", user, address.to_owned(), None);
        } else {
            self.fail(
                address,
                EnhancedCode::BAD_MAILBOX,
                format!("no such local user: {user}"),
            );
        }
        Ok(())
    }

    fn remote(&mut self, local: &str, domain: &str) {
        let address = format!("{local}@{domain}");
        let domain = domain.strip_suffix('.').unwrap_or(domain).to_lowercase();
        match self.router.config.route_for(&domain) {
            Some(route) => match &route.nexthop {
                Some(hop) => {
                    let hop = hop.to_string();
                    let host = thread_host(&hop, route.tls);
                    self.leaf(&route.channel, &host, address, Some(hop));
                }
                None => self.leaf(&route.channel, &domain, address, None),
            },
            None => self.leaf("smtp", &domain, address, None),
        }
    }

    fn leaf(&mut self, channel: &str, host: &str, address: String, nexthop: Option<String>) {
        self.push(channel, host, address, nexthop, None);
    }

    fn fail(&mut self, address: &str, status: EnhancedCode, diagnostic: String) {
        self.push(
            FAILED_CHANNEL,
            FAILED_HOST,
            address.to_owned(),
            None,
            Some(Failure { status, diagnostic }),
        );
    }

    fn push(
        &mut self,
        channel: &str,
        host: &str,
        address: String,
        nexthop: Option<String>,
        failure: Option<Failure>,
    ) {
        self.produced += 1;
        let key = (
            channel.to_owned(),
            host.to_owned(),
            address_key(channel, &address),
        );
        if !self.out.seen.insert(key) {
            return;
        }
        let orcpt = self.original.orcpt.clone().or_else(|| {
            (address != self.original.address)
                .then(|| format!("rfc822;{}", xtext::encode(self.original.address.as_bytes())))
        });
        self.out.routed.push(Routed {
            channel: channel.to_owned(),
            host: host.to_owned(),
            address,
            nexthop,
            notify: self.original.notify,
            orcpt,
            failure,
        });
    }
}

/// The thread host of a static route: its next hop, followed by
/// `,tls=<policy>` when the route sets its own TLS policy. Routes that
/// share a next hop but not a policy are different threads, so that one
/// policy's failure (a certificate `verify` rejects) defers only its own
/// mail, never that of a route with a policy the server satisfies: the
/// thread is the unit of backoff and of connection reuse.
pub fn thread_host(nexthop: &str, tls: Option<skein_config::TlsPolicy>) -> String {
    match tls {
        Some(policy) => format!("{nexthop},tls={}", policy.as_str()),
        None => nexthop.to_owned(),
    }
}

/// `user+extension` → `user`.
fn strip_extension(name: &str) -> &str {
    match name.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => name,
    }
}

/// What makes two addresses the same recipient: a local mailbox ignores
/// case entirely; elsewhere only the domain is case-insensitive (RFC 5321
/// §2.4 leaves the local part to the destination).
fn address_key(channel: &str, address: &str) -> String {
    if channel == "local" {
        return address.to_lowercase();
    }
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::ListedUsers;
    use std::path::Path;

    const USERS: ListedUsers = ListedUsers(&["ann", "bob", "root", "self2", "dave"]);

    fn config(extra: &str) -> Config {
        let text = format!(
            "hostname = \"mx.test\"\n{extra}\n[router]\nlocal_domains = [\"localhost\", \"example.org\"]\n\
             [[route]]\ndomain = \"static.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:2600\"\n\
             [[route]]\ndomain = \"other-static.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:2600\"\n\
             [[route]]\ndomain = \"verified.test\"\nchannel = \"smtp\"\nnexthop = \"127.0.0.1:2600\"\ntls = \"verify\"\n\
             [[route]]\ndomain = \".sub.test\"\nchannel = \"uucp\"\n"
        );
        Config::from_toml_str(&text, "test", Path::new("/")).expect("test config")
    }

    const ALIASES: &str = "\
staff: ann, bob, carol@remote.test
ann: ann, archive@static.test
loopa: loopb
loopb: loopa@localhost
prog: \"|/bin/cat\"
tofile: /tmp/mbox
lst: :include:/lists/l
missing: :include:/lists/none
self2: \\bob, self2
both: staff, staff, ann
ghost: nobody
bad: \\brokendb
cyclic: :include:/lists/cycle
empty: :include:/lists/empty
";

    fn table() -> AliasTable {
        let mut table = AliasTable::from_text(ALIASES, Path::new("/etc")).unwrap();
        table = table
            .with_include(
                "/lists/l",
                vec![Target::Local("bob".into()), Target::Local("lst".into())],
            )
            .with_include("/lists/empty", vec![])
            .with_include(
                "/lists/cycle",
                vec![
                    Target::Local("bob".into()),
                    Target::Include("/lists/cycle".into()),
                ],
            );
        table
    }

    /// (channel, host, address, orcpt, status)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn route_with(config: &Config, table: &AliasTable, rcpts: &[&str]) -> Vec<Routed> {
        let envelope = Envelope {
            sender: "s@example.net".into(),
            recipients: rcpts.iter().map(|r| Recipient::new(*r)).collect(),
            ..Default::default()
        };
        Router::new(config, table, &USERS)
            .route(&envelope, 0, false)
            .unwrap()
    }

    /// A [`Row`] with owned strings.
    type OwnedRow = (String, String, String, Option<String>, Option<String>);

    fn rows(routed: &[Routed]) -> Vec<OwnedRow> {
        routed
            .iter()
            .map(|r| {
                (
                    r.channel.clone(),
                    r.host.clone(),
                    r.address.clone(),
                    r.orcpt.clone(),
                    r.failure.as_ref().map(|f| f.status.to_string()),
                )
            })
            .collect()
    }

    fn check(rcpts: &[&str], want: &[Row]) {
        check_with(&config(""), rcpts, want);
    }

    fn check_with(config: &Config, rcpts: &[&str], want: &[Row]) {
        let got = rows(&route_with(config, &table(), rcpts));
        let want: Vec<_> = want
            .iter()
            .map(|(c, h, a, o, s)| {
                (
                    c.to_string(),
                    h.to_string(),
                    a.to_string(),
                    o.map(str::to_owned),
                    s.map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(got, want, "routing {rcpts:?}");
    }

    #[test]
    fn plain_routing() {
        let cases: &[(&[&str], &[Row])] = &[
            (
                &["bob@localhost"],
                &[("local", "bob", "bob@localhost", None, None)],
            ),
            (
                &["Bob@LocalHost"],
                &[("local", "bob", "Bob@LocalHost", None, None)],
            ),
            (
                &["bob+news@example.org"],
                &[("local", "bob", "bob+news@example.org", None, None)],
            ),
            (
                &["bob@mx.test"],
                &[("local", "bob", "bob@mx.test", None, None)],
            ),
            (
                &["bob@MX.TEST"],
                &[("local", "bob", "bob@MX.TEST", None, None)],
            ),
            (
                &["x@Example.NET"],
                &[("smtp", "example.net", "x@Example.NET", None, None)],
            ),
            (
                &["x@static.test"],
                &[("smtp", "127.0.0.1:2600", "x@static.test", None, None)],
            ),
            (
                // Same next hop, its own TLS policy: its own thread.
                &["x@verified.test", "y@static.test"],
                &[
                    (
                        "smtp",
                        "127.0.0.1:2600,tls=verify",
                        "x@verified.test",
                        None,
                        None,
                    ),
                    ("smtp", "127.0.0.1:2600", "y@static.test", None, None),
                ],
            ),
            (
                &["x@a.sub.test"],
                &[("uucp", "a.sub.test", "x@a.sub.test", None, None)],
            ),
            (
                &["x@[192.0.2.1]"],
                &[("smtp", "[192.0.2.1]", "x@[192.0.2.1]", None, None)],
            ),
            (
                &["nobody@localhost"],
                &[("error", "router", "nobody@localhost", None, Some("5.1.1"))],
            ),
            (
                &["\"a b\"@localhost"],
                &[("error", "router", "\"a b\"@localhost", None, Some("5.1.1"))],
            ),
            (
                &[".x@localhost"],
                &[("error", "router", ".x@localhost", None, Some("5.1.3"))],
            ),
            (
                &["no-domain"],
                &[("error", "router", "no-domain", None, Some("5.1.3"))],
            ),
            (
                &["üser@example.net"],
                &[("error", "router", "üser@example.net", None, Some("5.1.3"))],
            ),
            // Unqualified Postmaster, and postmaster without an alias: root.
            (
                &["Postmaster"],
                &[(
                    "local",
                    "root",
                    "root@mx.test",
                    Some("rfc822;Postmaster"),
                    None,
                )],
            ),
            (
                &["postmaster@localhost"],
                &[(
                    "local",
                    "root",
                    "root@localhost",
                    Some("rfc822;postmaster@localhost"),
                    None,
                )],
            ),
        ];
        for (rcpts, want) in cases {
            check(rcpts, want);
        }
    }

    #[test]
    fn alias_expansion() {
        let staff: &[Row] = &[
            (
                "local",
                "ann",
                "ann@localhost",
                Some("rfc822;staff@localhost"),
                None,
            ),
            (
                "smtp",
                "127.0.0.1:2600",
                "archive@static.test",
                Some("rfc822;staff@localhost"),
                None,
            ),
            (
                "local",
                "bob",
                "bob@localhost",
                Some("rfc822;staff@localhost"),
                None,
            ),
            (
                "smtp",
                "remote.test",
                "carol@remote.test",
                Some("rfc822;staff@localhost"),
                None,
            ),
        ];
        let cases: &[(&[&str], &[Row])] = &[
            (&["staff@localhost"], staff),
            (
                &["STAFF@LOCALHOST"],
                &[
                    (
                        "local",
                        "ann",
                        "ann@LOCALHOST",
                        Some("rfc822;STAFF@LOCALHOST"),
                        None,
                    ),
                    (
                        "smtp",
                        "127.0.0.1:2600",
                        "archive@static.test",
                        Some("rfc822;STAFF@LOCALHOST"),
                        None,
                    ),
                    (
                        "local",
                        "bob",
                        "bob@LOCALHOST",
                        Some("rfc822;STAFF@LOCALHOST"),
                        None,
                    ),
                    (
                        "smtp",
                        "remote.test",
                        "carol@remote.test",
                        Some("rfc822;STAFF@LOCALHOST"),
                        None,
                    ),
                ],
            ),
            // Self-reference: ann is delivered to the user ann, plus archive.
            (
                &["ann@localhost"],
                &[
                    ("local", "ann", "ann@localhost", None, None),
                    (
                        "smtp",
                        "127.0.0.1:2600",
                        "archive@static.test",
                        Some("rfc822;ann@localhost"),
                        None,
                    ),
                ],
            ),
            // An extension falls back to the alias of the base name.
            (
                &["staff+x@localhost"],
                &[
                    (
                        "local",
                        "ann",
                        "ann@localhost",
                        Some("rfc822;staff+2Bx@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "127.0.0.1:2600",
                        "archive@static.test",
                        Some("rfc822;staff+2Bx@localhost"),
                        None,
                    ),
                    (
                        "local",
                        "bob",
                        "bob@localhost",
                        Some("rfc822;staff+2Bx@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "remote.test",
                        "carol@remote.test",
                        Some("rfc822;staff+2Bx@localhost"),
                        None,
                    ),
                ],
            ),
            // Duplicates collapse, across branches and across recipients.
            (
                &["both@localhost"],
                &[
                    (
                        "local",
                        "ann",
                        "ann@localhost",
                        Some("rfc822;both@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "127.0.0.1:2600",
                        "archive@static.test",
                        Some("rfc822;both@localhost"),
                        None,
                    ),
                    (
                        "local",
                        "bob",
                        "bob@localhost",
                        Some("rfc822;both@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "remote.test",
                        "carol@remote.test",
                        Some("rfc822;both@localhost"),
                        None,
                    ),
                ],
            ),
            (
                &["bob@localhost", "staff@localhost", "BOB@localhost"],
                &[
                    ("local", "bob", "bob@localhost", None, None),
                    (
                        "local",
                        "ann",
                        "ann@localhost",
                        Some("rfc822;staff@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "127.0.0.1:2600",
                        "archive@static.test",
                        Some("rfc822;staff@localhost"),
                        None,
                    ),
                    (
                        "smtp",
                        "remote.test",
                        "carol@remote.test",
                        Some("rfc822;staff@localhost"),
                        None,
                    ),
                ],
            ),
            (
                &["loopa@localhost"],
                &[("error", "router", "loopa@localhost", None, Some("5.4.6"))],
            ),
            // \bob is the user; self2 in its own list the user self2.
            (
                &["self2@example.org"],
                &[
                    (
                        "local",
                        "bob",
                        "bob@example.org",
                        Some("rfc822;self2@example.org"),
                        None,
                    ),
                    ("local", "self2", "self2@example.org", None, None),
                ],
            ),
            (
                &["ghost@localhost"],
                &[(
                    "error",
                    "router",
                    "nobody@localhost",
                    Some("rfc822;ghost@localhost"),
                    Some("5.1.1"),
                )],
            ),
            (
                &["prog@localhost"],
                &[("error", "router", "prog@localhost", None, Some("5.7.1"))],
            ),
            (
                &["tofile@localhost"],
                &[("error", "router", "tofile@localhost", None, Some("5.7.1"))],
            ),
            // A list naming the alias that includes it means the user of
            // that name, as in the alias itself (here: no such user).
            (
                &["lst@localhost"],
                &[
                    (
                        "local",
                        "bob",
                        "bob@localhost",
                        Some("rfc822;lst@localhost"),
                        None,
                    ),
                    ("error", "router", "lst@localhost", None, Some("5.1.1")),
                ],
            ),
            (
                &["empty@localhost"],
                &[("error", "router", "empty@localhost", None, Some("5.2.4"))],
            ),
            (
                &["missing@localhost"],
                &[("error", "router", "missing@localhost", None, Some("5.2.4"))],
            ),
            // A list that includes itself is a loop.
            (
                &["cyclic@localhost"],
                &[
                    (
                        "local",
                        "bob",
                        "bob@localhost",
                        Some("rfc822;cyclic@localhost"),
                        None,
                    ),
                    ("error", "router", "cyclic@localhost", None, Some("5.4.6")),
                ],
            ),
        ];
        for (rcpts, want) in cases {
            check(rcpts, want);
        }
    }

    #[test]
    fn loop_diagnostic_names_the_chain() {
        let routed = route_with(&config(""), &table(), &["loopa@localhost"]);
        assert_eq!(
            routed[0].failure.as_ref().map(|f| f.diagnostic.as_str()),
            Some("alias loop: loopa -> loopb -> loopa")
        );
        let routed = route_with(&config(""), &table(), &["prog@localhost"]);
        let diag = &routed[0].failure.as_ref().unwrap().diagnostic;
        assert!(
            diag.contains("|/bin/cat") && diag.contains("allow_pipe_targets"),
            "{diag}"
        );
    }

    #[test]
    fn allowed_pipe_and_file_targets_get_their_channels() {
        let config = config("");
        let mut allowed = config.clone();
        allowed.router.allow_pipe_targets = true;
        allowed.router.allow_file_targets = true;
        check_with(
            &allowed,
            &["prog@localhost", "tofile@localhost"],
            &[
                (
                    "pipe",
                    "prog",
                    "|/bin/cat",
                    Some("rfc822;prog@localhost"),
                    None,
                ),
                (
                    "file",
                    "tofile",
                    "/tmp/mbox",
                    Some("rfc822;tofile@localhost"),
                    None,
                ),
            ],
        );
    }

    #[test]
    fn depth_limit() {
        let mut text = String::new();
        for i in 0..MAX_ALIAS_DEPTH + 5 {
            text.push_str(&format!("d{i}: d{}\n", i + 1));
        }
        let table = AliasTable::from_text(&text, Path::new("/")).unwrap();
        let routed = route_with(&config(""), &table, &["d0@localhost"]);
        assert_eq!(routed.len(), 1);
        let failure = routed[0].failure.as_ref().unwrap();
        assert_eq!(failure.status.to_string(), "5.4.6");
        assert!(failure.diagnostic.contains("nested"), "{failure:?}");
        // Just under the limit is fine.
        let mut text = String::new();
        for i in 0..MAX_ALIAS_DEPTH - 1 {
            text.push_str(&format!("e{i}: e{}\n", i + 1));
        }
        text.push_str(&format!("e{}: bob\n", MAX_ALIAS_DEPTH - 1));
        let table = AliasTable::from_text(&text, Path::new("/")).unwrap();
        let routed = route_with(&config(""), &table, &["e0@localhost"]);
        assert_eq!(rows(&routed)[0].0, "local");
    }

    #[test]
    fn exponential_aliases_stay_linear() {
        // Each level names the next twice: 2^40 paths, 41 distinct nodes.
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("w{i}: w{0}, w{0}, \\bob\n", i + 1));
        }
        text.push_str("w40: ann\n");
        let table = AliasTable::from_text(&text, Path::new("/")).unwrap();
        // w19 is reached at depth 20: deeper levels are cut by the limit.
        let routed = route_with(&config(""), &table, &["w0@localhost"]);
        assert!(routed.len() <= 3, "{routed:?}");
    }

    #[test]
    fn dsn_parameters_are_kept() {
        let envelope = Envelope {
            sender: String::new(),
            recipients: vec![
                Recipient {
                    address: "staff@localhost".into(),
                    notify: Some("SUCCESS,FAILURE".parse().unwrap()),
                    orcpt: Some("rfc822;list@elsewhere.example".into()),
                },
                Recipient {
                    address: "bob@localhost".into(),
                    notify: Some("NEVER".parse().unwrap()),
                    orcpt: None,
                },
            ],
            ..Default::default()
        };
        let config = config("");
        let table = table();
        let routed = Router::new(&config, &table, &USERS)
            .route(&envelope, 0, false)
            .unwrap();
        assert_eq!(routed.len(), 4, "bob collapses into the first copy");
        for r in &routed {
            assert_eq!(
                r.notify.map(|n| n.to_string()).as_deref(),
                Some("SUCCESS,FAILURE")
            );
            assert_eq!(r.orcpt.as_deref(), Some("rfc822;list@elsewhere.example"));
        }
    }

    #[test]
    fn a_loop_fails_everyone() {
        let envelope = Envelope {
            sender: "s@x".into(),
            recipients: vec![
                Recipient::new("bob@localhost"),
                Recipient::new("x@example.net"),
            ],
            ..Default::default()
        };
        let config = config("");
        let table = table();
        let routed = Router::new(&config, &table, &USERS)
            .route(&envelope, 101, true)
            .unwrap();
        assert_eq!(routed.len(), 2);
        for r in &routed {
            let f = r.failure.as_ref().unwrap();
            assert_eq!(f.status.to_string(), "5.4.6");
            assert!(f.diagnostic.contains("101 Received"), "{f:?}");
        }
    }

    #[test]
    fn user_database_failure_is_an_error_not_a_bounce() {
        let envelope = Envelope {
            recipients: vec![Recipient::new("bad@localhost")],
            ..Default::default()
        };
        let config = config("");
        let table = table();
        assert!(
            Router::new(&config, &table, &USERS)
                .route(&envelope, 0, false)
                .is_err()
        );
    }

    /// With the machine's lookup, `postmaster` is a user even without an
    /// account or a Maildir (RFC 5321 §4.5.1), as the local agent has it:
    /// an alias that names it as a user delivers to its Maildir.
    #[test]
    fn postmaster_is_always_a_user() {
        let d = tempfile::tempdir().unwrap();
        let users = crate::users::SystemUsers::new(d.path().to_path_buf());
        let config = config("");
        let table = AliasTable::from_text(
            "postmaster: \\postmaster, no-such-user-skein-test\n",
            Path::new("/"),
        )
        .unwrap();
        let envelope = Envelope {
            recipients: vec![Recipient::new("postmaster@localhost")],
            ..Default::default()
        };
        let routed = Router::new(&config, &table, &users)
            .route(&envelope, 0, false)
            .unwrap();
        assert_eq!(
            rows(&routed),
            [
                (
                    "local".into(),
                    "postmaster".into(),
                    "postmaster@localhost".into(),
                    None,
                    None
                ),
                (
                    "error".into(),
                    "router".into(),
                    "no-such-user-skein-test@localhost".into(),
                    Some("rfc822;postmaster@localhost".into()),
                    Some("5.1.1".into())
                ),
            ]
        );
    }

    #[test]
    fn xtext_encoding() {
        for (plain, encoded) in [
            ("a@b", "a@b"),
            ("a+b=c@d", "a+2Bb+3Dc@d"),
            ("\"a b\"@c", "\"a+20b\"@c"),
            ("ü@x", "+C3+BC@x"),
        ] {
            assert_eq!(xtext::encode(plain.as_bytes()), encoded);
        }
    }
}
