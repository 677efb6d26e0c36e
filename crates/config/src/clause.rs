//! Scheduler clauses: `[[scheduler.clause]]` entries that say, for the
//! threads whose `channel/host` matches a glob, which agent program
//! delivers them and with what concurrency limits.

use std::time::Duration;

/// One `[[scheduler.clause]]` entry. The scheduler uses the first clause
/// whose `match` glob matches a thread's `channel/host`; all threads that
/// match one clause form one thread group (ring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// The TOML key `match` (a Rust keyword, hence the field name): a glob
    /// over `channel/host`: `*` matches any run of characters
    /// (including `/`), `?` exactly one; case-insensitive.
    pub pattern: String,
    /// The agent program: a bare name (looked up by whoever starts it, e.g.
    /// next to the scheduler binary or in `PATH`) or a path.
    pub command: String,
    /// Extra arguments for `command`.
    pub args: Vec<String>,
    /// At most this many agents work on one thread at once. At least 1.
    pub maxthr: u32,
    /// At most this many agents run for the whole group. At least 1.
    pub maxring: u32,
    /// At most this many agents run for the channel across all groups;
    /// 0 = no per-channel limit.
    pub maxchannel: u32,
    /// How many jobs the scheduler may hand one agent before the agent has
    /// reported on them, so that it can pipeline one message's envelope
    /// behind the previous one's data. At least 1 (1 = lock-step).
    pub overfeed: u32,
    /// How long an agent with nothing to do is kept before it is told to
    /// exit (a connected SMTP agent stays ready for its host meanwhile).
    pub idlemax: Duration,
}

impl Clause {
    /// Default for [`Clause::maxthr`]: one agent per thread, skein's point.
    pub const DEFAULT_MAXTHR: u32 = 1;
    /// Default for [`Clause::maxring`].
    pub const DEFAULT_MAXRING: u32 = 20;
    /// Default for [`Clause::maxchannel`] (no limit).
    pub const DEFAULT_MAXCHANNEL: u32 = 0;
    /// Default for [`Clause::overfeed`].
    pub const DEFAULT_OVERFEED: u32 = 150;
    /// Default for [`Clause::idlemax`]: four minutes.
    pub const DEFAULT_IDLEMAX: Duration = Duration::from_secs(4 * 60);

    /// A clause with every limit at its default.
    pub fn new(pattern: &str, command: &str) -> Self {
        Clause {
            pattern: pattern.to_owned(),
            command: command.to_owned(),
            args: Vec::new(),
            maxthr: Self::DEFAULT_MAXTHR,
            maxring: Self::DEFAULT_MAXRING,
            maxchannel: Self::DEFAULT_MAXCHANNEL,
            overfeed: Self::DEFAULT_OVERFEED,
            idlemax: Self::DEFAULT_IDLEMAX,
        }
    }

    /// The clauses used when the file has none: `local/*` delivered by
    /// `skein-local`, `smtp/*` by `skein-smtp`.
    pub fn defaults() -> Vec<Clause> {
        vec![
            Clause::new("local/*", "skein-local"),
            Clause::new("smtp/*", "skein-smtp"),
        ]
    }

    /// Whether this clause applies to the thread `channel/host`.
    pub fn matches(&self, channel: &str, host: &str) -> bool {
        let subject: Vec<char> = format!("{channel}/{host}").chars().collect();
        let pattern: Vec<char> = self.pattern.chars().collect();
        glob_matches(&pattern, &subject)
    }
}

/// Iterative glob match with single-star backtracking: linear in practice
/// and, unlike the recursive form, immune to exponential blow-up on
/// patterns like `*a*a*a*b`.
fn glob_matches(pattern: &[char], subject: &[char]) -> bool {
    let (mut p, mut s) = (0, 0);
    // Where to resume after the most recent `*`: (pattern index, subject index).
    let mut resume: Option<(usize, usize)> = None;
    while s < subject.len() {
        match pattern.get(p) {
            Some('*') => {
                resume = Some((p + 1, s));
                p += 1;
            }
            Some('?') => {
                p += 1;
                s += 1;
            }
            Some(c) if c.to_lowercase().eq(subject[s].to_lowercase()) => {
                p += 1;
                s += 1;
            }
            _ => match resume {
                // Let the last star swallow one more character and retry.
                Some((rp, rs)) => {
                    p = rp;
                    s = rs + 1;
                    resume = Some((rp, rs + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_channel_and_host() {
        let cases = [
            ("smtp/*", "smtp", "mx.example.org", true),
            ("smtp/*", "smtp", "", true),
            ("smtp/*", "local", "mx.example.org", false),
            ("smtp/*", "smtpx", "a", false),
            ("*/*", "local", "alice", true),
            ("*", "local", "alice", true),
            ("*", "", "", true),
            ("smtp/*.example.org", "smtp", "mx.example.org", true),
            ("smtp/*.example.org", "smtp", "example.org", false),
            ("smtp/*.EXAMPLE.org", "smtp", "mx.example.ORG", true),
            ("smtp/mx?.example.org", "smtp", "mx1.example.org", true),
            ("smtp/mx?.example.org", "smtp", "mx.example.org", false),
            ("smtp/mx?.example.org", "smtp", "mx12.example.org", false),
            ("smtp/mx.example.org", "smtp", "mx.example.org", true),
            ("smtp/mx.example.org", "smtp", "mx.example.org.uk", false),
            ("*/gmail.com", "smtp", "gmail.com", true),
            ("*/gmail.com", "smtp", "xgmail.com", false),
            ("*/*gmail.com", "smtp", "mx.gmail.com", true),
            ("local/a*b*c", "local", "aXbYc", true),
            ("local/a*b*c", "local", "aXbYd", false),
            (
                "*a*a*a*a*a*b",
                "x",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("smtp/**", "smtp", "h", true),
            ("??/*", "ab", "h", true),
            ("??/*", "abc", "h", false),
        ];
        for (pattern, channel, host, want) in cases {
            let clause = Clause::new(pattern, "agent");
            assert_eq!(
                clause.matches(channel, host),
                want,
                "{pattern} vs {channel}/{host}"
            );
        }
    }

    #[test]
    fn clause_defaults() {
        let clause = Clause::new("smtp/*", "skein-smtp");
        assert_eq!(
            (
                clause.maxthr,
                clause.maxring,
                clause.maxchannel,
                clause.overfeed
            ),
            (1, 20, 0, 150)
        );
        assert_eq!(clause.idlemax, Duration::from_secs(240));
        assert!(clause.args.is_empty());
        let defaults = Clause::defaults();
        let pairs: Vec<(&str, &str)> = defaults
            .iter()
            .map(|c| (c.pattern.as_str(), c.command.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("local/*", "skein-local"), ("smtp/*", "skein-smtp")]
        );
    }
}
