//! The human-readable output of the queue commands: `mailq` in Postfix's
//! layout, `mailq --threads` in the manner of ZMailer's `mailq -Q`,
//! `queue show` and the scheduler's status.
//!
//! Everything here is a pure function of a response and a [`Clock`], so
//! that the layout is tested from hand-built responses.

use std::fmt::Write as _;

use skein_proto::{
    BodyType, FeedState, GroupInfo, MessageDetail, MessageSummary, RecipientState,
    RecipientSummary, Ret, SchedulerStatus,
};

/// "Now" and the time zone, injected so that output is reproducible.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The current time, seconds since the epoch.
    pub now_unix: i64,
    /// Print times in UTC instead of the machine's time zone.
    pub utc: bool,
}

impl Clock {
    /// The system clock and the machine's time zone.
    pub fn system() -> Clock {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Clock {
            now_unix,
            utc: false,
        }
    }

    fn offset(&self, unix: i64) -> i32 {
        if self.utc {
            0
        } else {
            skein_mail::date::local_offset(unix)
        }
    }

    /// RFC 5322 form: `Mon, 30 Nov 2026 00:59:38 +0000`.
    pub fn rfc5322(&self, unix: i64) -> String {
        skein_mail::date::rfc5322(unix, self.offset(unix))
    }

    /// ctime-like form without the year, as Postfix's `mailq` prints
    /// arrival times: `Mon Nov 30 00:59:38`.
    pub fn short(&self, unix: i64) -> String {
        let full = self.rfc5322(unix);
        // "Mon, 30 Nov 2026 00:59:38 +0000": weekday, day, month, year,
        // time, zone — a fixed layout produced by skein-mail.
        let parts: Vec<&str> = full.split_whitespace().collect();
        match parts.as_slice() {
            [weekday, day, month, _year, time, _zone] => {
                format!("{} {month} {day:>2} {time}", weekday.trim_end_matches(','))
            }
            _ => full,
        }
    }
}

/// A duration as its two largest units: `45s`, `4m30s`, `2h13m`, `3d4h`.
pub fn span(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = UNITS.iter().position(|&(size, _)| secs >= size) else {
        return "0s".into();
    };
    let mut out = String::new();
    let mut rest = secs;
    for &(size, unit) in &UNITS[first..(first + 2).min(UNITS.len())] {
        let n = rest / size;
        rest %= size;
        if n > 0 || out.is_empty() {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// The name Postfix gives the null reverse-path in listings.
fn sender_name(sender: &str) -> &str {
    if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    }
}

fn state_name(state: RecipientState) -> &'static str {
    match state {
        RecipientState::Pending => "pending",
        RecipientState::InProgress => "in progress",
        RecipientState::Deferred => "deferred",
        RecipientState::Delivered => "delivered",
        RecipientState::Failed => "failed",
    }
}

/// Whether a recipient still waits for delivery (mailq lists only those).
pub fn is_pending(r: &RecipientSummary) -> bool {
    matches!(
        r.state,
        RecipientState::Pending | RecipientState::InProgress | RecipientState::Deferred
    )
}

/// Width of a queue id column (ids are 19 characters).
const ID_WIDTH: usize = 19;
/// Where the sender and recipient column starts: id, mark, size, date.
const ADDRESS_COLUMN: usize = ID_WIDTH + 1 + 1 + 8 + 1 + 20 + 1;

/// `mailq`: Postfix's listing. The character after the id is `!` for a
/// held message and `*` for one being delivered right now, as in Postfix.
pub fn mailq(queue: &[MessageSummary], clock: &Clock) -> String {
    if queue.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out = format!(
        "{:<w$} --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
        "-Queue ID-",
        w = ID_WIDTH + 1
    );
    let indent = " ".repeat(ADDRESS_COLUMN);
    let mut total: u64 = 0;
    for message in queue {
        total = total.saturating_add(message.size);
        let mark = if message.held {
            '!'
        } else if message
            .recipients
            .iter()
            .any(|r| r.state == RecipientState::InProgress)
        {
            '*'
        } else {
            ' '
        };
        let _ = writeln!(
            out,
            "{:<ID_WIDTH$}{mark} {:>8} {:<20} {}",
            message.queue_id,
            message.size,
            clock.short(message.arrival_unix),
            sender_name(&message.sender)
        );
        for r in message.recipients.iter().filter(|r| is_pending(r)) {
            let _ = writeln!(out, "{indent}{}", r.address);
            if let Some(diagnostic) = &r.last_diagnostic {
                let _ = writeln!(out, "{indent}  ({})", one_line(diagnostic));
            }
        }
        out.push('\n');
    }
    let requests = queue.len();
    let _ = writeln!(
        out,
        "-- {} Kbytes in {requests} Request{}.",
        total.div_ceil(1024),
        if requests == 1 { "" } else { "s" }
    );
    out
}

fn feed_name(feed: FeedState) -> &'static str {
    match feed {
        FeedState::Idle => "idle",
        FeedState::Queued => "queued",
        FeedState::Running => "running",
        FeedState::Retrying => "retrying",
        FeedState::Held => "held",
    }
}

fn pids(pids: &[u32]) -> String {
    if pids.is_empty() {
        "-".into()
    } else {
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn next_attempt(next: Option<i64>) -> String {
    match next {
        None => "-".into(),
        Some(secs) if secs <= 0 => "now".into(),
        Some(secs) => span(secs as u64),
    }
}

/// `mailq --threads`: per thread group (scheduler clause) its agents, and
/// per thread its messages, recipients, attempts, feed state, time to the
/// next attempt, oldest message's age, agents and last diagnostic.
pub fn threads(groups: &[GroupInfo]) -> String {
    let width = groups
        .iter()
        .flat_map(|g| &g.threads)
        .map(|t| t.key.to_string().chars().count())
        .max()
        .unwrap_or(0)
        .max("THREAD".len());
    let mut out = String::new();
    let (mut thread_count, mut recipient_count) = (0usize, 0u64);
    for group in groups {
        let _ = writeln!(
            out,
            "{}: {} thread{}, agents {}",
            group.clause,
            group.threads.len(),
            if group.threads.len() == 1 { "" } else { "s" },
            pids(&group.agents)
        );
        if group.threads.is_empty() {
            out.push('\n');
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<width$} {:>5} {:>6} {:>4} {:<8} {:>7} {:>7} AGENTS",
            "THREAD", "MSGS", "RCPTS", "ATT", "FEED", "NEXT", "OLDEST"
        );
        for t in &group.threads {
            thread_count += 1;
            recipient_count = recipient_count.saturating_add(t.recipients);
            let _ = writeln!(
                out,
                "  {:<width$} {:>5} {:>6} {:>4} {:<8} {:>7} {:>7} {}",
                t.key.to_string(),
                t.messages,
                t.recipients,
                t.attempts,
                feed_name(t.feed),
                next_attempt(t.next_attempt_in_secs),
                span(t.oldest_age_secs),
                pids(&t.agent_pids)
            );
            if let Some(diagnostic) = &t.last_diagnostic {
                let _ = writeln!(out, "    ({})", one_line(diagnostic));
            }
        }
        out.push('\n');
    }
    if thread_count == 0 {
        out.push_str("No threads: nothing is waiting for delivery\n");
    } else {
        let _ = writeln!(
            out,
            "-- {thread_count} thread{} with {recipient_count} recipient{} in {} group{}.",
            if thread_count == 1 { "" } else { "s" },
            if recipient_count == 1 { "" } else { "s" },
            groups.len(),
            if groups.len() == 1 { "" } else { "s" },
        );
    }
    out
}

fn ret_name(ret: Ret) -> &'static str {
    match ret {
        Ret::Full => "full",
        Ret::Headers => "headers",
    }
}

fn body_name(body: BodyType) -> &'static str {
    match body {
        BodyType::SevenBit => "7bit",
        BodyType::EightBitMime => "8bitmime",
        BodyType::BinaryMime => "binarymime",
    }
}

/// `queue show`: one message, every recipient with where it stands.
pub fn show(detail: &MessageDetail, clock: &Clock) -> String {
    let m = &detail.summary;
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{:<14}{value}", format!("{name}:"));
    };
    field(
        &mut out,
        "queue id",
        &format!("{}{}", m.queue_id, if m.held { " (held)" } else { "" }),
    );
    let age = clock.now_unix.saturating_sub(m.arrival_unix).max(0) as u64;
    field(
        &mut out,
        "arrival",
        &format!("{} ({} ago)", clock.rfc5322(m.arrival_unix), span(age)),
    );
    field(&mut out, "size", &format!("{} bytes", m.size));
    field(&mut out, "sender", &format!("<{}>", m.sender));
    if let Some(envid) = &detail.envid {
        field(&mut out, "envid", &one_line(envid));
    }
    if let Some(ret) = detail.ret {
        field(&mut out, "ret", ret_name(ret));
    }
    field(&mut out, "body", body_name(detail.body));
    field(
        &mut out,
        "smtputf8",
        if detail.smtputf8 { "yes" } else { "no" },
    );
    field(&mut out, "message file", &detail.message_path);
    field(&mut out, "control file", &detail.control_path);
    let pending = m.recipients.iter().filter(|r| is_pending(r)).count();
    field(
        &mut out,
        "recipients",
        &format!("{} ({pending} pending)", m.recipients.len()),
    );
    for r in &m.recipients {
        let _ = writeln!(out, "  [{}] {}", r.index, r.address);
        let mut line = format!(
            "thread {}, {}, {} attempt{}",
            r.thread,
            state_name(r.state),
            r.attempts,
            if r.attempts == 1 { "" } else { "s" }
        );
        if let Some(next) = r.next_attempt_unix {
            let wait = next.saturating_sub(clock.now_unix);
            let when = if wait <= 0 {
                "now".to_owned()
            } else {
                format!("in {}", span(wait as u64))
            };
            let _ = write!(line, ", next attempt {when} ({})", clock.rfc5322(next));
        }
        let _ = writeln!(out, "      {line}");
        if let Some(diagnostic) = &r.last_diagnostic {
            let _ = writeln!(out, "      last: {}", one_line(diagnostic));
        }
    }
    out
}

/// The scheduler's lines of `skein status`.
pub fn scheduler_status(status: &SchedulerStatus) -> String {
    format!(
        "scheduler: running (pid {}, version {}, up {})\n  messages {}, recipients {}, threads {}, agents {}\n",
        status.pid,
        one_line(&status.version),
        span(status.uptime_secs),
        status.messages,
        status.recipients,
        status.threads,
        status.agents
    )
}

/// The age buckets of [`ages`], in minutes: Postfix's `qshape` defaults
/// (each bucket holds the messages younger than its bound and at least as
/// old as the previous one; the last column, `1280+`, everything older).
pub const AGE_BUCKETS_MINUTES: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// One row of [`ages`]: a destination domain, its total, and its count
/// per bucket (the last one is `1280+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeRow {
    /// The recipient domain (`TOTAL` for the sum).
    pub domain: String,
    /// Messages with a recipient still waiting in the domain.
    pub total: u64,
    /// Per bucket, youngest first; `AGE_BUCKETS_MINUTES.len() + 1` of them.
    pub buckets: Vec<u64>,
}

/// `mailq --ages`, Postfix's `qshape`: messages by the domain of their
/// waiting recipients (a message counts once per domain) and by age; the
/// `TOTAL` row (each message once) first, then the domains by count, most
/// first.
pub fn age_rows(queue: &[MessageSummary], now_unix: i64) -> Vec<AgeRow> {
    use std::collections::{BTreeMap, BTreeSet};
    let width = AGE_BUCKETS_MINUTES.len() + 1;
    let mut by_domain: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut total = vec![0u64; width];
    for m in queue {
        let age_min = (now_unix.saturating_sub(m.arrival_unix).max(0) as u64) / 60;
        let bucket = AGE_BUCKETS_MINUTES
            .iter()
            .position(|&bound| age_min < bound)
            .unwrap_or(width - 1);
        let domains: BTreeSet<String> = m
            .recipients
            .iter()
            .filter(|r| is_pending(r))
            .map(|r| {
                r.address
                    .rsplit_once('@')
                    .map_or("(no domain)".to_owned(), |(_, d)| d.to_ascii_lowercase())
            })
            .collect();
        if domains.is_empty() {
            continue;
        }
        total[bucket] += 1;
        for d in domains {
            by_domain.entry(d).or_insert_with(|| vec![0; width])[bucket] += 1;
        }
    }
    let mut rows: Vec<AgeRow> = by_domain
        .into_iter()
        .map(|(domain, buckets)| AgeRow {
            domain,
            total: buckets.iter().sum(),
            buckets,
        })
        .collect();
    rows.sort_by(|a, b| b.total.cmp(&a.total).then(a.domain.cmp(&b.domain)));
    rows.insert(
        0,
        AgeRow {
            domain: "TOTAL".into(),
            total: total.iter().sum(),
            buckets: total,
        },
    );
    rows
}

/// [`age_rows`] as qshape prints them: a header of bucket bounds in
/// minutes, then one right-aligned row per domain.
pub fn ages(queue: &[MessageSummary], clock: &Clock) -> String {
    let rows = age_rows(queue, clock.now_unix);
    let name_width = rows
        .iter()
        .map(|r| r.domain.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = String::new();
    let _ = write!(out, "{:>name_width$} {:>6}", "", "T");
    for bound in AGE_BUCKETS_MINUTES {
        let _ = write!(out, " {bound:>5}");
    }
    let last = format!("{}+", AGE_BUCKETS_MINUTES[AGE_BUCKETS_MINUTES.len() - 1]);
    let _ = writeln!(out, " {last:>5}");
    for row in rows {
        let _ = write!(out, "{:>name_width$} {:>6}", row.domain, row.total);
        for n in &row.buckets {
            let _ = write!(out, " {n:>5}");
        }
        out.push('\n');
    }
    out
}

/// Text from the scheduler (diagnostics come from remote servers) on one
/// line, without control characters that could rewrite the terminal.
pub fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::{ThreadInfo, ThreadKey};

    const NOW: i64 = 1_796_000_378; // Mon, 30 Nov 2026 00:59:38 UTC
    const CLOCK: Clock = Clock {
        now_unix: NOW,
        utc: true,
    };

    fn rcpt(index: u32, address: &str, state: RecipientState) -> RecipientSummary {
        RecipientSummary {
            index,
            address: address.into(),
            thread: ThreadKey::new("smtp", address.rsplit('@').next().unwrap_or("")),
            state,
            attempts: 0,
            last_diagnostic: None,
            next_attempt_unix: None,
        }
    }

    fn message(id: &str, size: u64, sender: &str, held: bool) -> MessageSummary {
        MessageSummary {
            queue_id: id.into(),
            size,
            arrival_unix: NOW - 3600,
            sender: sender.into(),
            held,
            recipients: vec![],
        }
    }

    #[test]
    fn ages_count_messages_per_domain_and_bucket_like_qshape() {
        use RecipientState::*;
        let aged = |id: &str, minutes: i64, rcpts: Vec<RecipientSummary>| MessageSummary {
            arrival_unix: NOW - minutes * 60,
            recipients: rcpts,
            ..message(id, 1, "s@x.test", false)
        };
        let queue = vec![
            // Two recipients in one domain: the message counts once there.
            aged(
                "A",
                2,
                vec![rcpt(0, "a@b.test", Deferred), rcpt(1, "c@B.TEST", Pending)],
            ),
            aged(
                "B",
                7,
                vec![rcpt(0, "a@b.test", Deferred), rcpt(1, "z@c.test", Deferred)],
            ),
            aged("C", 2000, vec![rcpt(0, "q@c.test", InProgress)]),
            // Nothing waiting: not counted.
            aged("D", 1, vec![rcpt(0, "d@d.test", Delivered)]),
        ];
        let rows = age_rows(&queue, NOW);
        let row = |d: &str| rows.iter().find(|r| r.domain == d).expect(d).clone();
        assert_eq!(rows[0].domain, "TOTAL");
        assert_eq!(row("TOTAL").total, 3);
        assert_eq!(row("TOTAL").buckets, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(row("b.test").buckets, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(row("c.test").buckets, vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(rows.iter().all(|r| r.domain != "d.test"));
        let text = ages(&queue, &CLOCK);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("T     5    10"), "{text}");
        assert!(lines[0].ends_with("1280 1280+"), "{text}");
        assert!(
            lines[1]
                .trim_start()
                .starts_with("TOTAL      3     1     1"),
            "{text}"
        );
        assert_eq!(lines.len(), 4, "{text}");
    }

    #[test]
    fn spans() {
        let table = [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (270, "4m30s"),
            (3600, "1h"),
            (7980, "2h13m"),
            (7985, "2h13m"),
            (86_400, "1d"),
            (273_600, "3d4h"),
            (86_401, "1d"),
        ];
        for (secs, want) in table {
            assert_eq!(span(secs), want, "{secs}");
        }
    }

    #[test]
    fn short_dates() {
        assert_eq!(CLOCK.short(NOW), "Mon Nov 30 00:59:38");
        assert_eq!(CLOCK.short(0), "Thu Jan  1 00:00:00");
    }

    #[test]
    fn mailq_table() {
        let mut deferred = rcpt(0, "u@remote.example", RecipientState::Deferred);
        deferred.last_diagnostic = Some("451 4.7.1 try\r\nlater".into());
        let mut m1 = message("0ABCDEFGHJK0000100A", 1500, "sender@example.org", false);
        m1.recipients = vec![
            deferred,
            rcpt(1, "done@remote.example", RecipientState::Delivered),
            rcpt(2, "bad@remote.example", RecipientState::Failed),
            rcpt(3, "new@other.example", RecipientState::Pending),
        ];
        let mut m2 = message("0ABCDEFGHJK0000200B", 600, "", true);
        m2.recipients = vec![rcpt(0, "postmaster@localhost", RecipientState::Pending)];
        let mut m3 = message("0ABCDEFGHJK0000300C", 10, "a@b", false);
        m3.recipients = vec![rcpt(0, "x@y", RecipientState::InProgress)];

        let table: Vec<(Vec<MessageSummary>, &str)> = vec![
            (vec![], "Mail queue is empty\n"),
            (
                vec![m1.clone()],
                concat!(
                    "-Queue ID-           --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
                    "0ABCDEFGHJK0000100A      1500 Sun Nov 29 23:59:38  sender@example.org\n",
                    "                                                   u@remote.example\n",
                    "                                                     (451 4.7.1 try later)\n",
                    "                                                   new@other.example\n",
                    "\n",
                    "-- 2 Kbytes in 1 Request.\n",
                ),
            ),
            (
                vec![m1, m2, m3],
                concat!(
                    "-Queue ID-           --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
                    "0ABCDEFGHJK0000100A      1500 Sun Nov 29 23:59:38  sender@example.org\n",
                    "                                                   u@remote.example\n",
                    "                                                     (451 4.7.1 try later)\n",
                    "                                                   new@other.example\n",
                    "\n",
                    "0ABCDEFGHJK0000200B!      600 Sun Nov 29 23:59:38  MAILER-DAEMON\n",
                    "                                                   postmaster@localhost\n",
                    "\n",
                    "0ABCDEFGHJK0000300C*       10 Sun Nov 29 23:59:38  a@b\n",
                    "                                                   x@y\n",
                    "\n",
                    "-- 3 Kbytes in 3 Requests.\n",
                ),
            ),
        ];
        for (queue, want) in table {
            assert_eq!(mailq(&queue, &CLOCK), want);
        }
    }

    fn thread(host: &str, feed: FeedState) -> ThreadInfo {
        ThreadInfo {
            key: ThreadKey::new("smtp", host),
            messages: 3,
            recipients: 5,
            attempts: 2,
            agent_pids: vec![],
            next_attempt_in_secs: Some(270),
            feed,
            oldest_age_secs: 7980,
            last_diagnostic: None,
        }
    }

    #[test]
    fn threads_table() {
        let mut retrying = thread("example.org", FeedState::Retrying);
        retrying.last_diagnostic = Some("451 4.7.1 later".into());
        let mut running = thread("a-much-longer-host.example", FeedState::Running);
        running.agent_pids = vec![1234];
        running.next_attempt_in_secs = None;
        running.messages = 1;
        running.recipients = 1;
        running.attempts = 0;
        running.oldest_age_secs = 12;
        let mut overdue = thread("late.example", FeedState::Queued);
        overdue.next_attempt_in_secs = Some(-5);
        let smtp = GroupInfo {
            clause: "smtp/*".into(),
            agents: vec![1234, 1240],
            threads: vec![retrying, running, overdue],
        };
        let local = GroupInfo {
            clause: "local/*".into(),
            agents: vec![],
            threads: vec![],
        };
        let table: Vec<(Vec<GroupInfo>, &str)> = vec![
            (vec![], "No threads: nothing is waiting for delivery\n"),
            (
                vec![local.clone()],
                "local/*: 0 threads, agents -\n\nNo threads: nothing is waiting for delivery\n",
            ),
            (
                vec![smtp, local],
                concat!(
                    "smtp/*: 3 threads, agents 1234,1240\n",
                    "  THREAD                           MSGS  RCPTS  ATT FEED        NEXT  OLDEST AGENTS\n",
                    "  smtp/example.org                    3      5    2 retrying   4m30s   2h13m -\n",
                    "    (451 4.7.1 later)\n",
                    "  smtp/a-much-longer-host.example     1      1    0 running        -     12s 1234\n",
                    "  smtp/late.example                   3      5    2 queued       now   2h13m -\n",
                    "\n",
                    "local/*: 0 threads, agents -\n",
                    "\n",
                    "-- 3 threads with 11 recipients in 2 groups.\n",
                ),
            ),
        ];
        for (groups, want) in table {
            assert_eq!(threads(&groups), want);
        }
    }

    #[test]
    fn show_message() {
        let mut deferred = rcpt(0, "u@remote.example", RecipientState::Deferred);
        deferred.attempts = 2;
        deferred.last_diagnostic = Some("451 4.7.1 try later".into());
        deferred.next_attempt_unix = Some(NOW + 270);
        let mut delivered = rcpt(1, "v@remote.example", RecipientState::Delivered);
        delivered.attempts = 1;
        let mut summary = message("0ABCDEFGHJK0000100A", 412, "sender@example.org", true);
        summary.recipients = vec![deferred, delivered];
        let detail = MessageDetail {
            summary,
            envid: Some("ENV-42".into()),
            ret: Some(Ret::Headers),
            body: BodyType::EightBitMime,
            smtputf8: false,
            message_path: "/spool/queue/0ABCDEFGHJK0000100A".into(),
            control_path: "/spool/transport/0ABCDEFGHJK0000100A".into(),
        };
        let want = concat!(
            "queue id:     0ABCDEFGHJK0000100A (held)\n",
            "arrival:      Sun, 29 Nov 2026 23:59:38 +0000 (1h ago)\n",
            "size:         412 bytes\n",
            "sender:       <sender@example.org>\n",
            "envid:        ENV-42\n",
            "ret:          headers\n",
            "body:         8bitmime\n",
            "smtputf8:     no\n",
            "message file: /spool/queue/0ABCDEFGHJK0000100A\n",
            "control file: /spool/transport/0ABCDEFGHJK0000100A\n",
            "recipients:   2 (1 pending)\n",
            "  [0] u@remote.example\n",
            "      thread smtp/remote.example, deferred, 2 attempts, next attempt in 4m30s (Mon, 30 Nov 2026 01:04:08 +0000)\n",
            "      last: 451 4.7.1 try later\n",
            "  [1] v@remote.example\n",
            "      thread smtp/remote.example, delivered, 1 attempt\n",
        );
        assert_eq!(show(&detail, &CLOCK), want);
    }

    #[test]
    fn status_lines() {
        let status = SchedulerStatus {
            pid: 1240,
            version: "0.1.0".into(),
            uptime_secs: 7980,
            messages: 12,
            recipients: 30,
            threads: 4,
            agents: 2,
        };
        assert_eq!(
            scheduler_status(&status),
            "scheduler: running (pid 1240, version 0.1.0, up 2h13m)\n  messages 12, recipients 30, threads 4, agents 2\n"
        );
    }
}
