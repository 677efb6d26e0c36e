//! Argument dispatch for the `skein` binary (also reached as `sendmail`
//! and `mailq` through argv\[0\]).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use skein_proto::{BulkAction, FlushTarget, SelectState, Selection};
use skein_spool::QueueId;
use skein_spool::rendezvous;

use crate::queue::{self, QueueCommand, text::Clock};
use crate::sysexits::*;

/// skein — a mail transfer agent.
#[derive(Debug, Parser)]
#[command(name = "skein", version, about)]
struct Cli {
    /// Configuration file (default: $SKEIN_CONFIG, else the embedded default).
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Submit a message read from standard input (sendmail(1) options).
    #[command(
        disable_help_flag = true,
        long_about = "Submit a message read from standard input, as sendmail(1): \
            `skein sendmail [-t] [-i] [-f sender] [-F name] [-N dsn] [-R ret] [-V envid] \
            [-C config] [recipient ...]`; `-bp` lists the queue; `-bs` speaks SMTP on \
            standard input and output, each message submitted as the invoking user (74: the \
            session's stream failed). It exits 0 only once the \
            message is on stable storage. A user who may not write the spool hands the \
            submission to the setgid skein-postdrop. Exit codes (sysexits): 64 a bad \
            command line, 65 no recipient, a bad address or a message over \
            smtpd.max_message_size, 66 standard input unreadable, 69 skein-postdrop not \
            found, 73 skein-postdrop not installed setgid, 75 the spool cannot take the \
            message now, 78 a broken or untrusted configuration."
    )]
    Sendmail {
        /// sendmail options and recipients, e.g. `-t -i -f sender`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List the queue: each message with its pending recipients.
    Mailq(MailqArgs),
    /// Look at or act on queued messages.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// Run skein's services in the foreground, restarting any that crash.
    Start,
    /// Stop a running `skein start`.
    Stop,
    /// Check the configuration file, then have every running daemon
    /// re-read it and apply what changed without dropping a session or
    /// losing a message (SIGHUP to each). A file that fails the check
    /// signals nothing (exit 78); a daemon that refuses it keeps the
    /// configuration it has and logs why. spool.* and user need a restart.
    Reload,
    /// Say whether skein runs, with the scheduler's counters and every
    /// process with its user.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// DKIM signing keys.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Print the shell completion script for SHELL (bash, zsh or fish) on
    /// standard output; the package installs them where each shell looks.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (skein(8), one per subcommand, mailq(1))
    /// into DIR: for packaging.
    #[command(hide = true)]
    Manpages {
        /// Where to write them.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct MailqArgs {
    /// Show thread groups and threads instead of messages (ZMailer's `mailq -Q`).
    #[arg(short = 'Q', long)]
    threads: bool,
    /// Destinations by age instead (Postfix's qshape): messages per
    /// recipient domain in buckets of 5, 10, 20 … 1280+ minutes.
    #[arg(long, conflicts_with = "threads")]
    ages: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    select: SelectArgs,
}

/// Which messages: every selector given must hold (the same rule for
/// `mailq` and for the bulk operations).
#[derive(Debug, Clone, Default, Args)]
struct SelectArgs {
    /// The sender: an address, @domain, or <> for the null sender.
    #[arg(long, value_name = "ADDRESS")]
    from: Option<String>,
    /// A recipient still waiting: an address or @domain.
    #[arg(long, value_name = "ADDRESS")]
    to: Option<String>,
    /// A recipient still waiting in this domain.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Accepted at least this long ago, e.g. 2h or 5d.
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// deferred, held or active.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// A recipient still waiting in this thread, as channel/host.
    #[arg(long = "in-thread", value_name = "CHANNEL/HOST")]
    in_thread: Option<String>,
}

impl SelectArgs {
    fn is_empty(&self) -> bool {
        self.from.is_none()
            && self.to.is_none()
            && self.domain.is_none()
            && self.older_than.is_none()
            && self.state.is_none()
            && self.in_thread.is_none()
    }

    /// The selection, with `ids` (`None`: any id), each value checked.
    fn selection(&self, ids: Option<Vec<String>>) -> Result<Selection, String> {
        let older_than_secs = match &self.older_than {
            Some(text) => Some(
                skein_config::parse_duration(text)
                    .map_err(|e| format!("--older-than: {e}"))?
                    .as_secs(),
            ),
            None => None,
        };
        let state = match &self.state {
            Some(text) => Some(
                SelectState::parse(text)
                    .ok_or_else(|| format!("--state: {text:?} is not deferred, held or active"))?,
            ),
            None => None,
        };
        let thread = match &self.in_thread {
            Some(text) => Some(queue::parse_thread(text)?),
            None => None,
        };
        Ok(Selection {
            ids,
            from: self.from.clone(),
            to: self.to.clone(),
            domain: self.domain.clone(),
            older_than_secs,
            state,
            thread,
        })
    }
}

/// `mailq` when called by that name.
#[derive(Debug, Parser)]
#[command(name = "mailq", version, about = "List the skein mail queue.")]
struct MailqCli {
    /// Configuration file (default: $SKEIN_CONFIG, else the embedded default).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    #[command(flatten)]
    args: MailqArgs,
}

#[derive(Debug, Subcommand)]
enum QueueAction {
    /// Show a message and where each recipient stands.
    Show {
        /// The queue id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering messages until they are released.
    Hold {
        /// Queue ids; `ALL` for every message; `-` to read ids from
        /// standard input (one or more per line).
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Resume delivering held messages.
    Release {
        /// Queue ids; `ALL` for every message; `-` to read ids from
        /// standard input (one or more per line).
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Remove messages without delivering them and without a bounce
    /// (Postfix's `postsuper -d`).
    Delete {
        /// Queue ids; `ALL` for every message; `-` to read ids from
        /// standard input (one or more per line).
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Retry now, ignoring back-off: everything, one message, or one thread.
    Flush {
        /// Queue ids, `ALL` or `-` (default, with no selector: the whole
        /// queue).
        #[arg(conflicts_with = "thread")]
        ids: Vec<String>,
        /// One thread, as channel/host (e.g. smtp/example.org).
        #[arg(long, value_name = "CHANNEL/HOST")]
        thread: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Route messages again (after an alias or route change).
    Requeue {
        /// Queue ids; `ALL` for every message; `-` to read ids from
        /// standard input (one or more per line).
        ids: Vec<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DkimAction {
    /// Make a signing key for DOMAIN with SELECTOR: write it (mode 0600,
    /// never over an existing file; as root, owned by the services'
    /// account) and print the SELECTOR._domainkey.DOMAIN TXT record on
    /// standard output. Exit codes: 64 a bad domain or selector, 73 the
    /// file exists or cannot be written, 78 a broken configuration.
    Keygen {
        /// The signing domain (d=), e.g. example.org.
        domain: String,
        /// The selector (s=), e.g. s2026.
        selector: String,
        /// rsa-sha256 (2048 bits, what every verifier knows) or
        /// ed25519-sha256 (RFC 8463).
        #[arg(long, default_value = "rsa-sha256", value_parser = parse_algorithm)]
        algorithm: skein_config::DkimAlgorithm,
        /// Where to write the key (default: dkim/DOMAIN.SELECTOR.key
        /// beside the configuration file).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn parse_algorithm(text: &str) -> Result<skein_config::DkimAlgorithm, String> {
    text.parse()
        .map_err(|e: skein_config::ValueError| e.to_string())
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration (and every file a daemon reads at
    /// start) and print the effective settings.
    Check {
        /// Print only the settings that differ from the built-in defaults,
        /// one `key = value` per line (Postfix's `postconf -n`).
        #[arg(long)]
        non_default: bool,
    },
    /// Print settings by dotted key, `smtpd.max_errors` or a whole table
    /// (`smtpd`, `route[0]`), as `key = value` (Postfix's `postconf KEY`).
    Get {
        /// The keys or tables.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// Runs the `skein` command line; returns the exit code.
pub fn main(args: Vec<OsString>) -> u8 {
    let argv0 = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("skein")
        .to_string();
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match argv0.as_str() {
        "sendmail" => return sendmail(&rest, None),
        "mailq" => {
            return match MailqCli::try_parse_from(&args) {
                Ok(cli) => mailq(cli.config.as_deref(), "mailq", &cli.args),
                Err(e) => usage_error(e),
            };
        }
        _ => {}
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let config = cli.config.as_deref();
    match cli.command {
        Command::Config {
            action: ConfigAction::Check { non_default },
        } => config_check(config, non_default),
        Command::Config {
            action: ConfigAction::Get { keys },
        } => config_get(config, &keys),
        Command::Sendmail { args } => sendmail(&args, config),
        Command::Mailq(args) => mailq(config, "skein", &args),
        Command::Queue { action } => match queue_command(action) {
            Ok(command) => run_queue(config, "skein", &command),
            Err(message) => {
                eprintln!("skein: {message}");
                EX_USAGE
            }
        },
        Command::Start => crate::supervisor::start(config),
        Command::Stop => crate::supervisor::stop(config),
        Command::Reload => crate::supervisor::reload::reload(config),
        Command::Status { json } => status(config, json),
        Command::Manpages { dir } => manpages(&dir),
        Command::Dkim {
            action:
                DkimAction::Keygen {
                    domain,
                    selector,
                    algorithm,
                    out,
                },
        } => crate::dkim::keygen(
            config,
            &crate::dkim::Keygen {
                domain,
                selector,
                algorithm,
                out,
            },
        ),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "skein", &mut io::stdout());
            EX_OK
        }
    }
}

/// `skein manpages DIR`: `skein.8`, `skein-<subcommand>.8` for each
/// visible subcommand (and `skein-queue-<action>.8`), `mailq.1` and
/// `sendmail.8`,
/// rendered from the command-line definitions themselves, so that they
/// cannot drift from what the command accepts.
fn manpages(dir: &Path) -> u8 {
    use clap::CommandFactory;
    fn write(dir: &Path, file: &str, cmd: clap::Command, section: &str) -> io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .section(section)
            .manual("skein")
            .source(format!("skein {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        std::fs::write(dir.join(file), out)
    }
    fn pages(dir: &Path, prefix: &str, cmd: &clap::Command) -> io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            // clap names are &'static str without its `string` feature;
            // this one-shot command can afford to leak a few.
            let name: &'static str =
                Box::leak(format!("{prefix}-{}", sub.get_name()).into_boxed_str());
            // The synopsis shows the command as typed: `skein queue delete`.
            let typed = name.replace('-', " ");
            write(
                dir,
                &format!("{name}.8"),
                sub.clone().name(name).bin_name(typed),
                "8",
            )?;
            pages(dir, name, sub)?;
        }
        Ok(())
    }
    let skein = Cli::command();
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| write(dir, "skein.8", skein.clone(), "8"))
        .and_then(|()| pages(dir, "skein", &skein))
        .and_then(|()| write(dir, "mailq.1", MailqCli::command(), "1"))
        .and_then(|()| {
            // sendmail(8): what /usr/sbin/sendmail, a link to skein, is.
            let sendmail = skein
                .find_subcommand("sendmail")
                .cloned()
                .expect("skein has a sendmail subcommand");
            write(
                dir,
                "sendmail.8",
                sendmail.name("sendmail").bin_name("sendmail"),
                "8",
            )
        });
    match result {
        Ok(()) => EX_OK,
        Err(e) => {
            eprintln!(
                "skein: cannot write the manual pages into {}: {e}",
                dir.display()
            );
            EX_CANTCREAT
        }
    }
}

/// `sendmail -bp` is `mailq`, as with sendmail and Postfix; everything
/// else is a submission.
fn sendmail(args: &[String], config: Option<&Path>) -> u8 {
    match crate::sendmail::parse(args) {
        Ok(opts) if opts.list_queue => {
            let config = opts.config.as_deref().or(config);
            mailq(
                config,
                "sendmail",
                &MailqArgs {
                    threads: false,
                    ages: false,
                    json: false,
                    select: SelectArgs::default(),
                },
            )
        }
        _ => crate::sendmail::main(args, config),
    }
}

fn usage_error(e: clap::Error) -> u8 {
    let _ = e.print();
    if e.use_stderr() { EX_USAGE } else { EX_OK }
}

fn mailq(config: Option<&Path>, prog: &str, args: &MailqArgs) -> u8 {
    let selection = if args.select.is_empty() {
        None
    } else if args.threads {
        eprintln!(
            "{prog}: the selectors (--from, --domain, …) apply to the message listing, not to --threads"
        );
        return EX_USAGE;
    } else {
        match args.select.selection(None) {
            Ok(selection) => Some(selection),
            Err(message) => {
                eprintln!("{prog}: {message}");
                return EX_USAGE;
            }
        }
    };
    run_queue(
        config,
        prog,
        &QueueCommand::Mailq {
            threads: args.threads,
            json: args.json,
            selection,
            ages: args.ages,
        },
    )
}

/// The command with its ids and thread checked: a malformed one never
/// reaches the scheduler.
fn queue_command(action: QueueAction) -> Result<QueueCommand, String> {
    queue_command_with(action, &mut || {
        let mut text = String::new();
        io::Read::read_to_string(&mut io::stdin(), &mut text)
            .map_err(|e| format!("cannot read queue ids from standard input: {e}"))?;
        Ok(text)
    })
}

/// [`queue_command`], with standard input (for `-`) given.
fn queue_command_with(
    action: QueueAction,
    stdin: &mut dyn FnMut() -> Result<String, String>,
) -> Result<QueueCommand, String> {
    let id = |text: &str| queue::parse_queue_id(text);
    // One id and no selector: the one-message request (its refusal of an
    // unknown id is an error); anything else: a bulk request.
    let one_or_bulk = |action: BulkAction,
                       ids: Vec<String>,
                       select: SelectArgs,
                       stdin: &mut dyn FnMut() -> Result<String, String>,
                       single: fn(QueueId) -> QueueCommand|
     -> Result<QueueCommand, String> {
        if let [only] = ids.as_slice()
            && only != "ALL"
            && only != "-"
            && select.is_empty()
        {
            return Ok(single(id(only)?));
        }
        Ok(QueueCommand::Bulk(
            action,
            bulk_selection(action, ids, &select, stdin)?,
        ))
    };
    Ok(match action {
        QueueAction::Show { id: text, json } => QueueCommand::Show {
            id: id(&text)?,
            json,
        },
        QueueAction::Hold { ids, select } => {
            one_or_bulk(BulkAction::Hold, ids, select, stdin, QueueCommand::Hold)?
        }
        QueueAction::Release { ids, select } => one_or_bulk(
            BulkAction::Release,
            ids,
            select,
            stdin,
            QueueCommand::Release,
        )?,
        QueueAction::Delete { ids, select } => {
            one_or_bulk(BulkAction::Delete, ids, select, stdin, QueueCommand::Delete)?
        }
        QueueAction::Requeue { ids, select } => one_or_bulk(
            BulkAction::Requeue,
            ids,
            select,
            stdin,
            QueueCommand::Requeue,
        )?,
        QueueAction::Flush {
            ids,
            thread,
            select,
        } => match (ids.as_slice(), thread, select.is_empty()) {
            ([], None, true) => QueueCommand::Flush(FlushTarget::All),
            ([], Some(thread), true) => {
                QueueCommand::Flush(FlushTarget::Thread(queue::parse_thread(&thread)?))
            }
            ([only], None, true) if only != "ALL" && only != "-" => {
                QueueCommand::Flush(FlushTarget::Message(id(only)?.as_str().to_owned()))
            }
            (_, Some(_), _) => {
                return Err(
                    "flush takes --thread alone (use --in-thread with other selectors)".into(),
                );
            }
            (_, None, _) => {
                let ids = if ids.is_empty() {
                    vec!["ALL".to_owned()]
                } else {
                    ids
                };
                QueueCommand::Bulk(
                    BulkAction::Flush,
                    bulk_selection(BulkAction::Flush, ids, &select, stdin)?,
                )
            }
        },
    })
}

/// The selection of a bulk request: `ALL`, `-` (ids read from standard
/// input), ids, and the selectors, all of which must hold. Nothing at all
/// is refused rather than taken to mean everything.
fn bulk_selection(
    action: BulkAction,
    words: Vec<String>,
    select: &SelectArgs,
    stdin: &mut dyn FnMut() -> Result<String, String>,
) -> Result<Selection, String> {
    if words.is_empty() && select.is_empty() {
        return Err(format!(
            "{} needs queue ids, `-` (ids on standard input), `ALL`, or a selector (--from, --to, --domain, --older-than, --state, --in-thread)",
            action.as_str()
        ));
    }
    let mut all = false;
    let mut ids = Vec::new();
    for word in words {
        match word.as_str() {
            "ALL" => all = true,
            "-" => {
                for token in stdin()?.split_whitespace() {
                    ids.push(queue::parse_queue_id(token)?.as_str().to_owned());
                }
            }
            text => ids.push(queue::parse_queue_id(text)?.as_str().to_owned()),
        }
    }
    // `ALL` with ids is every message; ids alone (perhaps none, from an
    // empty standard input) are just those.
    let ids = if all || (ids.is_empty() && !select.is_empty()) {
        None
    } else {
        Some(ids)
    };
    select.selection(ids)
}

/// The control socket named by the configuration, or the exit status of
/// a configuration that does not load.
fn socket(config: Option<&Path>, prog: &str) -> Result<PathBuf, u8> {
    match skein_config::Config::load(config) {
        Ok(loaded) => Ok(rendezvous::scheduler_socket(&loaded.config.spool.dir)),
        Err(e) => {
            eprintln!("{prog}: {e}");
            Err(EX_CONFIG)
        }
    }
}

fn run_queue(config: Option<&Path>, prog: &str, command: &QueueCommand) -> u8 {
    let socket = match socket(config, prog) {
        Ok(socket) => socket,
        Err(code) => return code,
    };
    queue::run(
        command,
        &socket,
        prog,
        &Clock::system(),
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

fn status(config: Option<&Path>, json: bool) -> u8 {
    let loaded = match skein_config::Config::load(config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    };
    let spool = &loaded.config.spool.dir;
    crate::status::run(
        spool,
        &rendezvous::scheduler_socket(spool),
        json,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

/// `skein config check`: the configuration parses, and every file a
/// daemon reads at start loads as that daemon loads it
/// ([`skein_preflight::check`], the daemons' own check); warnings (a key
/// readable by every user) go to standard error and do not fail it.
fn config_check(path: Option<&Path>, non_default: bool) -> u8 {
    let loaded = skein_config::Config::load(path).and_then(|loaded| {
        skein_preflight::check(&loaded, skein_preflight::Reader::All)
            .map(|checked| (loaded, checked))
    });
    match loaded {
        Ok((loaded, checked)) => {
            for warning in &checked.warnings {
                eprintln!("skein: warning: {warning}");
            }
            let what = if non_default {
                "settings other than the built-in defaults"
            } else {
                "effective settings"
            };
            match &loaded.source {
                skein_config::Source::File(p) => {
                    println!("# configuration {} is valid; {what}:", p.display())
                }
                skein_config::Source::Embedded => {
                    println!("# no configuration file given: the embedded default; {what}:")
                }
            }
            if non_default {
                for (key, value) in non_default_settings(&loaded.config) {
                    println!("{key} = {value}");
                }
            } else {
                print!("{}", loaded.config.to_toml());
            }
            EX_OK
        }
        Err(e) => {
            eprintln!("skein: {e}");
            EX_CONFIG
        }
    }
}

/// The settings whose value is not the built-in default's (a `[[route]]`
/// or clause that the defaults do not have counts whole).
fn non_default_settings(config: &skein_config::Config) -> Vec<(String, String)> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let defaults = skein_config::Config::from_toml_str("", "(built-in defaults)", &cwd)
        .map(|c| c.settings())
        .unwrap_or_default();
    config
        .settings()
        .into_iter()
        .filter(|(key, value)| !defaults.iter().any(|(k, v)| k == key && v == value))
        .collect()
}

/// `skein config get KEY...`: each key's effective value, or every key of
/// a table; an unknown key is a usage error naming it.
fn config_get(path: Option<&Path>, keys: &[String]) -> u8 {
    let loaded = match skein_config::Config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("skein: {e}");
            return EX_CONFIG;
        }
    };
    let settings = loaded.config.settings();
    let mut code = EX_OK;
    for wanted in keys {
        let prefix = format!("{wanted}.");
        let found: Vec<&(String, String)> = settings
            .iter()
            .filter(|(key, _)| key == wanted || key.starts_with(&prefix))
            .collect();
        if found.is_empty() {
            eprintln!("skein: {wanted}: no such setting (`skein config check` lists them all)");
            code = EX_USAGE;
        }
        for (key, value) in found {
            println!("{key} = {value}");
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_the_subcommands() {
        use clap::CommandFactory;
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "skein", &mut out);
            let script = String::from_utf8(out).expect("utf-8");
            for word in ["queue", "mailq", "config", "requeue", "non-default"] {
                assert!(script.contains(word), "{shell}: {word}");
            }
        }
    }

    #[test]
    fn manual_pages_cover_every_visible_command_as_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(manpages(dir.path()), EX_OK);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        for expected in [
            "mailq.1",
            "sendmail.8",
            "skein.8",
            "skein-config-check.8",
            "skein-queue-delete.8",
            "skein-queue-show.8",
            "skein-start.8",
            "skein-status.8",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        // The hidden command that writes them has no page of its own.
        assert!(!names.iter().any(|n| n.contains("manpages")), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("skein-queue-delete.8")).expect("page");
        assert!(page.contains(".TH skein-queue-delete 8"), "{page}");
        assert!(page.contains("skein queue delete"), "{page}");
        let page = std::fs::read_to_string(dir.path().join("sendmail.8")).expect("page");
        assert!(page.contains(".TH sendmail 8"), "{page}");
        assert!(page.contains("stable storage"), "{page}");
        // A directory that cannot be made: EX_CANTCREAT, nothing panics.
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("file");
        assert_eq!(manpages(&file.join("sub")), EX_CANTCREAT);
    }

    fn parse(args: &[&str]) -> Result<QueueCommand, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Queue { action } => queue_command(action),
            Command::Mailq(a) => Ok(QueueCommand::Mailq {
                threads: a.threads,
                json: a.json,
                selection: None,
                ages: false,
            }),
            other => Err(format!("not a queue command: {other:?}")),
        }
    }

    #[test]
    fn bulk_queue_command_lines() {
        const A: &str = "0ABCDEFGHJK0000100A";
        const B: &str = "0ABCDEFGHJK0000200A";
        let parse_in = |args: &[&str], input: &str| -> Result<QueueCommand, String> {
            let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
            let Command::Queue { action } = cli.command else {
                return Err("not a queue command".into());
            };
            let input = input.to_owned();
            queue_command_with(action, &mut || Ok(input.clone()))
        };
        let bulk = |action, selection| Ok(QueueCommand::Bulk(action, selection));
        let ids = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let two_lines = format!("{A}\n  {}  \n", B.to_lowercase());
        let table: Vec<(&[&str], &str, Result<QueueCommand, String>)> = vec![
            // One id alone: the one-message request, as before.
            (
                &["skein", "queue", "delete", A],
                "",
                Ok(QueueCommand::Delete(A.parse().unwrap())),
            ),
            (
                &["skein", "queue", "delete", "ALL"],
                "",
                bulk(BulkAction::Delete, Selection::all()),
            ),
            (
                &["skein", "queue", "hold", A, B],
                "",
                bulk(
                    BulkAction::Hold,
                    Selection {
                        ids: ids(&[A, B]),
                        ..Selection::all()
                    },
                ),
            ),
            (
                &["skein", "queue", "delete", "-"],
                &two_lines,
                bulk(
                    BulkAction::Delete,
                    Selection {
                        ids: ids(&[A, B]),
                        ..Selection::all()
                    },
                ),
            ),
            (
                &[
                    "skein",
                    "queue",
                    "delete",
                    "--domain",
                    "x.test",
                    "--state",
                    "deferred",
                    "--older-than",
                    "2h",
                ],
                "",
                bulk(
                    BulkAction::Delete,
                    Selection {
                        domain: Some("x.test".into()),
                        state: Some(SelectState::Deferred),
                        older_than_secs: Some(7200),
                        ..Selection::all()
                    },
                ),
            ),
            (
                &["skein", "queue", "requeue", "--in-thread", "smtp/x.test"],
                "",
                bulk(
                    BulkAction::Requeue,
                    Selection {
                        thread: Some(skein_proto::ThreadKey::new("smtp", "x.test")),
                        ..Selection::all()
                    },
                ),
            ),
            (
                &["skein", "queue", "flush"],
                "",
                Ok(QueueCommand::Flush(FlushTarget::All)),
            ),
            (
                &["skein", "queue", "flush", "--from", "@spam.test"],
                "",
                bulk(
                    BulkAction::Flush,
                    Selection {
                        from: Some("@spam.test".into()),
                        ..Selection::all()
                    },
                ),
            ),
        ];
        for (args, input, want) in table {
            assert_eq!(parse_in(args, input), want, "{args:?}");
        }
        for (args, input, needle) in [
            (&["skein", "queue", "delete"][..], "", "needs queue ids"),
            (
                &["skein", "queue", "delete", "--older-than", "5"],
                "",
                "needs a unit",
            ),
            (
                &["skein", "queue", "delete", "--state", "bounced"],
                "",
                "not deferred, held or active",
            ),
            (
                &["skein", "queue", "delete", "-"],
                "not-an-id\n",
                "not-an-id",
            ),
            (
                &[
                    "skein", "queue", "flush", "--thread", "smtp/x", "--domain", "y",
                ],
                "",
                "--thread alone",
            ),
        ] {
            let err = parse_in(args, input).expect_err(needle);
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn queue_command_lines() {
        const ID: &str = "0ABCDEFGHJK0000100A";
        let id = || ID.parse().expect("id");
        let table: Vec<(Vec<&str>, Option<QueueCommand>)> = vec![
            (
                vec!["skein", "mailq"],
                Some(QueueCommand::Mailq {
                    threads: false,
                    json: false,
                    selection: None,
                    ages: false,
                }),
            ),
            (
                vec!["skein", "mailq", "-Q", "--json"],
                Some(QueueCommand::Mailq {
                    threads: true,
                    json: true,
                    selection: None,
                    ages: false,
                }),
            ),
            (
                vec!["skein", "-c", "x.toml", "mailq", "--threads"],
                Some(QueueCommand::Mailq {
                    threads: true,
                    json: false,
                    selection: None,
                    ages: false,
                }),
            ),
            (
                vec!["skein", "queue", "show", ID, "--json"],
                Some(QueueCommand::Show {
                    id: id(),
                    json: true,
                }),
            ),
            (
                vec!["skein", "queue", "hold", ID],
                Some(QueueCommand::Hold(id())),
            ),
            (
                vec!["skein", "queue", "release", ID],
                Some(QueueCommand::Release(id())),
            ),
            (
                vec!["skein", "queue", "delete", ID],
                Some(QueueCommand::Delete(id())),
            ),
            (
                vec!["skein", "queue", "requeue", ID],
                Some(QueueCommand::Requeue(id())),
            ),
            (
                vec!["skein", "queue", "flush"],
                Some(QueueCommand::Flush(FlushTarget::All)),
            ),
            (
                vec!["skein", "queue", "flush", ID],
                Some(QueueCommand::Flush(FlushTarget::Message(ID.into()))),
            ),
            (
                vec!["skein", "queue", "flush", "--thread", "smtp/example.org"],
                Some(QueueCommand::Flush(FlushTarget::Thread(
                    skein_proto::ThreadKey::new("smtp", "example.org"),
                ))),
            ),
            (
                vec!["skein", "queue", "flush", ID, "--thread", "smtp/x"],
                None,
            ),
            (
                vec!["skein", "queue", "flush", "--thread", "nochannel"],
                None,
            ),
            (vec!["skein", "queue", "hold", "not-an-id"], None),
            (vec!["skein", "queue", "hold"], None),
            (vec!["skein", "queue", "show"], None),
        ];
        for (args, want) in table {
            assert_eq!(parse(&args).ok(), want, "{args:?}");
        }
    }

    #[test]
    fn mailq_by_its_own_name() {
        let cli = MailqCli::try_parse_from(["mailq", "-Q", "-c", "f.toml"]).expect("parses");
        assert!(cli.args.threads && !cli.args.json);
        assert_eq!(cli.config.as_deref(), Some(Path::new("f.toml")));
        assert!(MailqCli::try_parse_from(["mailq", "--bogus"]).is_err());
    }
}
