//! `--json` output: views of the control responses with stable,
//! script-friendly names (enum values as lower-case strings, threads as
//! `channel` and `host`). These are this tool's output format, kept apart
//! from the wire types in skein-proto so that either can change without
//! breaking the other.

use serde::Serialize;
use skein_proto::{
    BodyType, FeedState, GroupInfo, MessageDetail, MessageSummary, RecipientState,
    RecipientSummary, Ret, SchedulerStatus, ThreadInfo,
};

/// One row of `mailq --ages --json`: a domain (or `TOTAL`), its total,
/// and its counts per age bucket, youngest first: under 5, 10, 20, 40,
/// 80, 160, 320, 640, 1280 minutes, then 1280 and older
/// (`text::AGE_BUCKETS_MINUTES`).
#[derive(Debug, Serialize)]
pub struct AgeView<'a> {
    /// The recipient domain, or `TOTAL`.
    pub domain: &'a str,
    /// Messages in all buckets.
    pub total: u64,
    /// Per bucket, youngest first (ten of them).
    pub buckets: &'a [u64],
}

impl<'a> From<&'a super::text::AgeRow> for AgeView<'a> {
    fn from(row: &'a super::text::AgeRow) -> Self {
        AgeView {
            domain: &row.domain,
            total: row.total,
            buckets: &row.buckets,
        }
    }
}

/// One message (`mailq --json` prints an array of these).
#[derive(Debug, Serialize)]
pub struct MessageView<'a> {
    /// The queue id.
    pub queue_id: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Arrival, seconds since the epoch.
    pub arrival_unix: i64,
    /// The reverse-path; empty for the null sender.
    pub sender: &'a str,
    /// Held by an administrator.
    pub held: bool,
    /// Every recipient, final ones included.
    pub recipients: Vec<RecipientView<'a>>,
}

/// One recipient of a [`MessageView`].
#[derive(Debug, Serialize)]
pub struct RecipientView<'a> {
    /// Index in the control file.
    pub index: u32,
    /// The forward-path.
    pub address: &'a str,
    /// The thread's channel.
    pub channel: &'a str,
    /// The thread's host.
    pub host: &'a str,
    /// `pending`, `in_progress`, `deferred`, `delivered` or `failed`.
    pub state: &'static str,
    /// Attempts so far.
    pub attempts: u32,
    /// The last attempt's diagnostic.
    pub last_diagnostic: Option<&'a str>,
    /// When the next attempt is due, seconds since the epoch.
    pub next_attempt_unix: Option<i64>,
}

/// `queue show --json`.
#[derive(Debug, Serialize)]
pub struct DetailView<'a> {
    /// What `mailq` shows.
    #[serde(flatten)]
    pub message: MessageView<'a>,
    /// DSN `ENVID`.
    pub envid: Option<&'a str>,
    /// DSN `RET`: `full` or `headers`.
    pub ret: Option<&'static str>,
    /// `7bit`, `8bitmime` or `binarymime`.
    pub body: &'static str,
    /// Needs SMTPUTF8.
    pub smtputf8: bool,
    /// The message file.
    pub message_path: &'a str,
    /// The control file.
    pub control_path: &'a str,
}

/// One thread group (`mailq --threads --json` prints an array of these).
#[derive(Debug, Serialize)]
pub struct GroupView<'a> {
    /// The clause's glob.
    pub clause: &'a str,
    /// The group's agents.
    pub agents: &'a [u32],
    /// Its threads.
    pub threads: Vec<ThreadView<'a>>,
}

/// One thread of a [`GroupView`].
#[derive(Debug, Serialize)]
pub struct ThreadView<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The host.
    pub host: &'a str,
    /// Messages with pending recipients.
    pub messages: u64,
    /// Pending recipients.
    pub recipients: u64,
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// Agents fed from it.
    pub agent_pids: &'a [u32],
    /// Seconds to the next attempt (negative: overdue; null: being fed or
    /// held).
    pub next_attempt_in_secs: Option<i64>,
    /// `idle`, `queued`, `running`, `retrying` or `held`.
    pub feed: &'static str,
    /// Age of the oldest message, seconds.
    pub oldest_age_secs: u64,
    /// The last failed attempt's diagnostic.
    pub last_diagnostic: Option<&'a str>,
}

/// The scheduler's part of `skein status --json`.
#[derive(Debug, Serialize)]
pub struct SchedulerView<'a> {
    /// Its pid.
    pub pid: u32,
    /// Its version.
    pub version: &'a str,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// Messages queued.
    pub messages: u64,
    /// Recipients without a final outcome.
    pub recipients: u64,
    /// Threads with pending recipients.
    pub threads: u64,
    /// Running agents.
    pub agents: u64,
}

fn state(state: RecipientState) -> &'static str {
    match state {
        RecipientState::Pending => "pending",
        RecipientState::InProgress => "in_progress",
        RecipientState::Deferred => "deferred",
        RecipientState::Delivered => "delivered",
        RecipientState::Failed => "failed",
    }
}

fn feed(feed: FeedState) -> &'static str {
    match feed {
        FeedState::Idle => "idle",
        FeedState::Queued => "queued",
        FeedState::Running => "running",
        FeedState::Retrying => "retrying",
        FeedState::Held => "held",
    }
}

impl<'a> From<&'a RecipientSummary> for RecipientView<'a> {
    fn from(r: &'a RecipientSummary) -> Self {
        RecipientView {
            index: r.index,
            address: &r.address,
            channel: &r.thread.channel,
            host: &r.thread.host,
            state: state(r.state),
            attempts: r.attempts,
            last_diagnostic: r.last_diagnostic.as_deref(),
            next_attempt_unix: r.next_attempt_unix,
        }
    }
}

impl<'a> From<&'a MessageSummary> for MessageView<'a> {
    fn from(m: &'a MessageSummary) -> Self {
        MessageView {
            queue_id: &m.queue_id,
            size: m.size,
            arrival_unix: m.arrival_unix,
            sender: &m.sender,
            held: m.held,
            recipients: m.recipients.iter().map(RecipientView::from).collect(),
        }
    }
}

impl<'a> From<&'a MessageDetail> for DetailView<'a> {
    fn from(d: &'a MessageDetail) -> Self {
        DetailView {
            message: MessageView::from(&d.summary),
            envid: d.envid.as_deref(),
            ret: d.ret.map(|r| match r {
                Ret::Full => "full",
                Ret::Headers => "headers",
            }),
            body: match d.body {
                BodyType::SevenBit => "7bit",
                BodyType::EightBitMime => "8bitmime",
                BodyType::BinaryMime => "binarymime",
            },
            smtputf8: d.smtputf8,
            message_path: &d.message_path,
            control_path: &d.control_path,
        }
    }
}

impl<'a> From<&'a ThreadInfo> for ThreadView<'a> {
    fn from(t: &'a ThreadInfo) -> Self {
        ThreadView {
            channel: &t.key.channel,
            host: &t.key.host,
            messages: t.messages,
            recipients: t.recipients,
            attempts: t.attempts,
            agent_pids: &t.agent_pids,
            next_attempt_in_secs: t.next_attempt_in_secs,
            feed: feed(t.feed),
            oldest_age_secs: t.oldest_age_secs,
            last_diagnostic: t.last_diagnostic.as_deref(),
        }
    }
}

impl<'a> From<&'a GroupInfo> for GroupView<'a> {
    fn from(g: &'a GroupInfo) -> Self {
        GroupView {
            clause: &g.clause,
            agents: &g.agents,
            threads: g.threads.iter().map(ThreadView::from).collect(),
        }
    }
}

impl<'a> From<&'a SchedulerStatus> for SchedulerView<'a> {
    fn from(s: &'a SchedulerStatus) -> Self {
        SchedulerView {
            pid: s.pid,
            version: &s.version,
            uptime_secs: s.uptime_secs,
            messages: s.messages,
            recipients: s.recipients,
            threads: s.threads,
            agents: s.agents,
        }
    }
}

/// `value` as pretty JSON and a newline.
pub fn render<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail (no maps with non-string
    // keys, no custom serializers); should it ever, say so in the output
    // rather than panic.
    match serde_json::to_string_pretty(value) {
        Ok(mut text) => {
            text.push('\n');
            text
        }
        Err(e) => format!("{{\"error\": \"cannot serialize: {e}\"}}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use skein_proto::ThreadKey;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("valid JSON")
    }

    #[test]
    fn message_and_detail() {
        let summary = MessageSummary {
            queue_id: "0ABCDEFGHJK0000100A".into(),
            size: 412,
            arrival_unix: 1_796_000_378,
            sender: String::new(),
            held: true,
            recipients: vec![RecipientSummary {
                index: 3,
                address: "u@remote.example".into(),
                thread: ThreadKey::new("smtp", "remote.example"),
                state: RecipientState::InProgress,
                attempts: 2,
                last_diagnostic: Some("451 later".into()),
                next_attempt_unix: None,
            }],
        };
        let message = json!({
            "queue_id": "0ABCDEFGHJK0000100A",
            "size": 412,
            "arrival_unix": 1_796_000_378,
            "sender": "",
            "held": true,
            "recipients": [{
                "index": 3,
                "address": "u@remote.example",
                "channel": "smtp",
                "host": "remote.example",
                "state": "in_progress",
                "attempts": 2,
                "last_diagnostic": "451 later",
                "next_attempt_unix": null,
            }],
        });
        assert_eq!(
            parse(&render(&vec![MessageView::from(&summary)])),
            json!([message.clone()])
        );

        let detail = MessageDetail {
            summary,
            envid: None,
            ret: Some(Ret::Full),
            body: BodyType::BinaryMime,
            smtputf8: true,
            message_path: "/q/X".into(),
            control_path: "/t/X".into(),
        };
        let mut want = message;
        let extra = json!({
            "envid": null,
            "ret": "full",
            "body": "binarymime",
            "smtputf8": true,
            "message_path": "/q/X",
            "control_path": "/t/X",
        });
        for (k, v) in extra.as_object().expect("object") {
            want[k] = v.clone();
        }
        assert_eq!(parse(&render(&DetailView::from(&detail))), want);
    }

    #[test]
    fn groups_and_status() {
        let group = GroupInfo {
            clause: "smtp/*".into(),
            agents: vec![7],
            threads: vec![ThreadInfo {
                key: ThreadKey::new("smtp", "example.org"),
                messages: 1,
                recipients: 2,
                attempts: 3,
                agent_pids: vec![7],
                next_attempt_in_secs: Some(-4),
                feed: FeedState::Retrying,
                oldest_age_secs: 99,
                last_diagnostic: None,
            }],
        };
        assert_eq!(
            parse(&render(&vec![GroupView::from(&group)])),
            json!([{
                "clause": "smtp/*",
                "agents": [7],
                "threads": [{
                    "channel": "smtp",
                    "host": "example.org",
                    "messages": 1,
                    "recipients": 2,
                    "attempts": 3,
                    "agent_pids": [7],
                    "next_attempt_in_secs": -4,
                    "feed": "retrying",
                    "oldest_age_secs": 99,
                    "last_diagnostic": null,
                }],
            }])
        );
        let status = SchedulerStatus {
            pid: 1,
            version: "0.1.0".into(),
            uptime_secs: 2,
            messages: 3,
            recipients: 4,
            threads: 5,
            agents: 6,
        };
        assert_eq!(
            parse(&render(&SchedulerView::from(&status))),
            json!({"pid": 1, "version": "0.1.0", "uptime_secs": 2, "messages": 3,
                   "recipients": 4, "threads": 5, "agents": 6})
        );
    }
}
