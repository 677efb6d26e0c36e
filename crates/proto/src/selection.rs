//! Which queued messages a bulk operation (`skein queue delete --domain
//! example.org`, `ALL`, ids on standard input) or a filtered `mailq`
//! applies to. One definition, [`Selection::matches`], used by the
//! scheduler for the operations and by the tools for the listings, so that
//! `mailq --domain X` lists exactly what `queue delete --domain X` deletes.

use serde::{Deserialize, Serialize};

use crate::control::{MessageSummary, RecipientState};
use crate::envelope::ThreadKey;

/// The messages to act on: every criterion that is set must hold; none set
/// (and no ids) is every message (`ALL`).
///
/// Layout: the fields in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Only these queue ids (`None`: any).
    pub ids: Option<Vec<String>>,
    /// The sender: an address, `@domain` for any sender of the domain, or
    /// `<>` for the null sender. Case-insensitive.
    pub from: Option<String>,
    /// A recipient still waiting (not delivered, not failed): an address
    /// or `@domain`.
    pub to: Option<String>,
    /// A recipient still waiting in this domain (exactly).
    pub domain: Option<String>,
    /// Accepted at least this many seconds ago.
    pub older_than_secs: Option<u64>,
    /// What state the message is in.
    pub state: Option<SelectState>,
    /// A recipient still waiting in this thread.
    pub thread: Option<ThreadKey>,
}

/// A message's state, for [`Selection::state`].
///
/// Layout: variant index in declaration order (`Deferred` = 0 … `Active` = 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectState {
    /// A recipient was tried and waits for its retry (Postfix's deferred).
    Deferred,
    /// An administrator holds it.
    Held,
    /// A recipient is being delivered right now.
    Active,
}

impl SelectState {
    /// `deferred`, `held`, `active`.
    pub fn parse(text: &str) -> Option<SelectState> {
        match text.to_ascii_lowercase().as_str() {
            "deferred" => Some(SelectState::Deferred),
            "held" | "hold" => Some(SelectState::Held),
            "active" => Some(SelectState::Active),
            _ => None,
        }
    }

    /// The name [`SelectState::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectState::Deferred => "deferred",
            SelectState::Held => "held",
            SelectState::Active => "active",
        }
    }
}

/// What a bulk request does to each selected message.
///
/// Layout: variant index in declaration order (`Hold` = 0 … `Requeue` = 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkAction {
    /// Stop delivering it.
    Hold,
    /// Undo hold.
    Release,
    /// Remove it without delivery or bounce.
    Delete,
    /// Retry now.
    Flush,
    /// Route it again.
    Requeue,
}

impl BulkAction {
    /// `hold`, `release`, `delete`, `flush`, `requeue`.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Hold => "hold",
            BulkAction::Release => "release",
            BulkAction::Delete => "delete",
            BulkAction::Flush => "flush",
            BulkAction::Requeue => "requeue",
        }
    }
}

fn waiting(state: RecipientState) -> bool {
    matches!(
        state,
        RecipientState::Pending | RecipientState::InProgress | RecipientState::Deferred
    )
}

/// `pattern` against an address: `@domain` matches any address of the
/// domain, `<>` the null address, anything else the address itself; case
/// does not matter.
fn address_matches(pattern: &str, address: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let address = address.to_ascii_lowercase();
    if pattern == "<>" {
        return address.is_empty();
    }
    match pattern.strip_prefix('@') {
        Some(domain) => address.rsplit_once('@').is_some_and(|(_, d)| d == domain),
        None => address == pattern.trim_start_matches('<').trim_end_matches('>'),
    }
}

impl Selection {
    /// Every message.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// Whether no criterion is set: every message.
    pub fn is_everything(&self) -> bool {
        *self == Selection::default()
    }

    /// Whether `m` is selected, `now_unix` being the time to measure its
    /// age against.
    pub fn matches(&self, m: &MessageSummary, now_unix: i64) -> bool {
        if let Some(ids) = &self.ids
            && !ids.contains(&m.queue_id)
        {
            return false;
        }
        if let Some(from) = &self.from
            && !address_matches(from, &m.sender)
        {
            return false;
        }
        let mut open = m.recipients.iter().filter(|r| waiting(r.state));
        if let Some(to) = &self.to
            && !open.clone().any(|r| address_matches(to, &r.address))
        {
            return false;
        }
        if let Some(domain) = &self.domain {
            let domain = format!("@{}", domain.trim_start_matches('@'));
            if !open.clone().any(|r| address_matches(&domain, &r.address)) {
                return false;
            }
        }
        if let Some(thread) = &self.thread
            && !open.any(|r| r.thread == *thread)
        {
            return false;
        }
        if let Some(age) = self.older_than_secs
            && now_unix.saturating_sub(m.arrival_unix) < age as i64
        {
            return false;
        }
        match self.state {
            None => true,
            Some(SelectState::Held) => m.held,
            Some(SelectState::Deferred) => m
                .recipients
                .iter()
                .any(|r| r.state == RecipientState::Deferred),
            Some(SelectState::Active) => m
                .recipients
                .iter()
                .any(|r| r.state == RecipientState::InProgress),
        }
    }

    /// The criteria in words, for logs and answers: `all`, or
    /// `domain=example.org state=deferred ids=3`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ids) = &self.ids {
            parts.push(format!("ids={}", ids.len()));
        }
        if let Some(v) = &self.from {
            parts.push(format!("from={v}"));
        }
        if let Some(v) = &self.to {
            parts.push(format!("to={v}"));
        }
        if let Some(v) = &self.domain {
            parts.push(format!("domain={v}"));
        }
        if let Some(v) = self.older_than_secs {
            parts.push(format!("older_than={v}s"));
        }
        if let Some(v) = self.state {
            parts.push(format!("state={}", v.as_str()));
        }
        if let Some(v) = &self.thread {
            parts.push(format!("thread={v}"));
        }
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::RecipientSummary;

    fn message(
        id: &str,
        sender: &str,
        arrival: i64,
        held: bool,
        rcpts: &[(&str, RecipientState)],
    ) -> MessageSummary {
        MessageSummary {
            queue_id: id.into(),
            size: 100,
            arrival_unix: arrival,
            sender: sender.into(),
            held,
            recipients: rcpts
                .iter()
                .enumerate()
                .map(|(i, (address, state))| RecipientSummary {
                    index: i as u32,
                    address: (*address).into(),
                    thread: ThreadKey::new("smtp", address.rsplit_once('@').map_or("", |(_, d)| d)),
                    state: *state,
                    attempts: 0,
                    last_diagnostic: None,
                    next_attempt_unix: None,
                })
                .collect(),
        }
    }

    #[test]
    fn each_criterion_and_their_conjunction() {
        use RecipientState::*;
        let a = message(
            "A",
            "alice@Example.org",
            1000,
            false,
            &[("bob@dest.test", Deferred)],
        );
        let b = message(
            "B",
            "",
            1900,
            true,
            &[("carol@other.test", Pending), ("dan@dest.test", Delivered)],
        );
        let c = message(
            "C",
            "eve@example.net",
            1990,
            false,
            &[("fay@dest.test", InProgress)],
        );
        let now = 2000;
        let sel = |s: Selection| -> Vec<&str> {
            [&a, &b, &c]
                .iter()
                .filter(|m| s.matches(m, now))
                .map(|m| m.queue_id.as_str())
                .collect()
        };
        let table: Vec<(Selection, Vec<&str>)> = vec![
            (Selection::all(), vec!["A", "B", "C"]),
            (
                Selection {
                    ids: Some(vec!["B".into(), "Z".into()]),
                    ..Selection::all()
                },
                vec!["B"],
            ),
            (
                Selection {
                    from: Some("ALICE@example.ORG".into()),
                    ..Selection::all()
                },
                vec!["A"],
            ),
            (
                Selection {
                    from: Some("@example.net".into()),
                    ..Selection::all()
                },
                vec!["C"],
            ),
            (
                Selection {
                    from: Some("<>".into()),
                    ..Selection::all()
                },
                vec!["B"],
            ),
            // A delivered recipient no longer counts.
            (
                Selection {
                    domain: Some("dest.test".into()),
                    ..Selection::all()
                },
                vec!["A", "C"],
            ),
            (
                Selection {
                    to: Some("@other.test".into()),
                    ..Selection::all()
                },
                vec!["B"],
            ),
            (
                Selection {
                    to: Some("<bob@dest.test>".into()),
                    ..Selection::all()
                },
                vec!["A"],
            ),
            (
                Selection {
                    older_than_secs: Some(100),
                    ..Selection::all()
                },
                vec!["A", "B"],
            ),
            (
                Selection {
                    state: Some(SelectState::Deferred),
                    ..Selection::all()
                },
                vec!["A"],
            ),
            (
                Selection {
                    state: Some(SelectState::Held),
                    ..Selection::all()
                },
                vec!["B"],
            ),
            (
                Selection {
                    state: Some(SelectState::Active),
                    ..Selection::all()
                },
                vec!["C"],
            ),
            (
                Selection {
                    thread: Some(ThreadKey::new("smtp", "dest.test")),
                    ..Selection::all()
                },
                vec!["A", "C"],
            ),
            (
                Selection {
                    domain: Some("dest.test".into()),
                    older_than_secs: Some(100),
                    ..Selection::all()
                },
                vec!["A"],
            ),
        ];
        for (s, want) in table {
            assert_eq!(sel(s.clone()), want, "{}", s.describe());
        }
        assert!(Selection::all().is_everything());
        assert_eq!(Selection::all().describe(), "all");
        let s = Selection {
            domain: Some("x.test".into()),
            state: Some(SelectState::Deferred),
            ..Selection::all()
        };
        assert_eq!(s.describe(), "domain=x.test state=deferred");
        assert_eq!(SelectState::parse("Deferred"), Some(SelectState::Deferred));
        assert_eq!(SelectState::parse("bounced"), None);
    }
}
