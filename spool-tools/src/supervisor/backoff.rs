//! When to restart a service that exited.
//!
//! Two cases, told apart by how long the child ran:
//!
//! - it ran at least `healthy_after` (10 s by default): it was serving, and
//!   whatever killed it (a `kill -9`, an OOM kill, one bad input) is not a
//!   reason to keep it down. It is restarted at once, and the back-off
//!   starts again from the beginning. A daemon killed every few minutes
//!   under load is down only for its own start-up time.
//! - it exited sooner: a crash loop (a broken configuration, a port held
//!   by someone else, a crash on start-up). It waits, 1 s doubling to 60 s,
//!   so that it does not spin and fill the log, and is retried for ever so
//!   that a transient cause heals by itself.
//!
//! Each decision carries its reason ([`Why`]), which the supervisor logs
//! with the delay: an admin reading `restarting after back-off` sees
//! whether it is a crash loop and how many exits it has counted.

use std::fmt;
use std::time::Duration;

/// The supervisor's timing, injectable so that tests run in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first delay of a crash loop (`supervisor.restart_delay`).
    pub initial_backoff: Duration,
    /// The delay never grows past this (`supervisor.restart_delay_max`).
    pub max_backoff: Duration,
    /// A child that ran at least this long before exiting is restarted at
    /// once, and the back-off starts again (`supervisor.healthy_after`).
    pub healthy_after: Duration,
    /// How long a stopping child gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Policy {
    /// 1 s doubling to 60 s for a crash loop, at once after 10 s of
    /// running, 30 s to stop.
    fn default() -> Self {
        Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            healthy_after: Duration::from_secs(10),
            stop_grace: Duration::from_secs(30),
        }
    }
}

/// Why a restart waits as long as it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The child ran `ran`, at least `healthy_after`: restart at once.
    RanWell {
        /// How long it ran.
        ran: Duration,
        /// The policy's `healthy_after`.
        healthy_after: Duration,
    },
    /// The child exited `in_a_row` times in a row, each time within
    /// `healthy_after` of its start.
    CrashLoop {
        /// Quick exits in a row, this one included.
        in_a_row: u32,
        /// How long this one ran.
        ran: Duration,
        /// The policy's `healthy_after`.
        healthy_after: Duration,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Why::RanWell { ran, healthy_after } => write!(
                f,
                "it ran {}s, at least supervisor.healthy_after ({}s): restarting at once",
                ran.as_secs(),
                healthy_after.as_secs()
            ),
            Why::CrashLoop {
                in_a_row,
                ran,
                healthy_after,
            } => write!(
                f,
                "crash loop: exit {in_a_row} in a row within supervisor.healthy_after ({}s) \
                 of starting (this one after {}s)",
                healthy_after.as_secs(),
                ran.as_secs()
            ),
        }
    }
}

/// One restart decision: how long to wait, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// The wait before the next start.
    pub delay: Duration,
    /// Its reason, for the log.
    pub why: Why,
}

/// One service's back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    next: Duration,
    in_a_row: u32,
}

impl Backoff {
    /// Fresh state: a first quick exit waits the initial delay.
    pub fn new(policy: Policy) -> Backoff {
        Backoff {
            next: policy.initial_backoff,
            in_a_row: 0,
            policy,
        }
    }

    /// The child exited after running for `ran`: how long to wait before
    /// starting it again, and why.
    pub fn after_exit(&mut self, ran: Duration) -> Restart {
        let healthy_after = self.policy.healthy_after;
        if ran >= healthy_after {
            self.next = self.policy.initial_backoff;
            self.in_a_row = 0;
            return Restart {
                delay: Duration::ZERO,
                why: Why::RanWell { ran, healthy_after },
            };
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        let delay = self.next.min(self.policy.max_backoff);
        self.next = delay.saturating_mul(2).min(self.policy.max_backoff);
        Restart {
            delay,
            why: Why::CrashLoop {
                in_a_row: self.in_a_row,
                ran,
                healthy_after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loops_back_off_and_a_good_run_restarts_at_once() {
        let s = Duration::from_secs;
        let quick = s(2);
        // (how long the child ran, expected delay, quick exits in a row
        // or 0 for "ran well")
        let table = [
            (quick, s(1), 1),
            (quick, s(2), 2),
            (Duration::ZERO, s(4), 3),
            (quick, s(8), 4),
            (quick, s(16), 5),
            (quick, s(32), 6),
            (quick, s(60), 7),
            (quick, s(60), 8),
            // Ten seconds of service: at once, and the loop starts over.
            (s(10), s(0), 0),
            (quick, s(1), 1),
            (s(9), s(2), 2),
            (s(3600), s(0), 0),
            (s(45), s(0), 0),
            (quick, s(1), 1),
        ];
        let mut backoff = Backoff::new(Policy::default());
        for (i, (ran, delay, in_a_row)) in table.into_iter().enumerate() {
            let restart = backoff.after_exit(ran);
            assert_eq!(restart.delay, delay, "step {i}");
            let healthy_after = s(10);
            let why = if in_a_row == 0 {
                Why::RanWell { ran, healthy_after }
            } else {
                Why::CrashLoop {
                    in_a_row,
                    ran,
                    healthy_after,
                }
            };
            assert_eq!(restart.why, why, "step {i}");
        }
    }

    #[test]
    fn the_reason_reads_well() {
        let s = Duration::from_secs;
        let mut backoff = Backoff::new(Policy::default());
        let first = backoff.after_exit(Duration::from_millis(300));
        assert_eq!(
            first.why.to_string(),
            "crash loop: exit 1 in a row within supervisor.healthy_after (10s) \
             of starting (this one after 0s)"
        );
        assert_eq!(
            backoff.after_exit(s(125)).why.to_string(),
            "it ran 125s, at least supervisor.healthy_after (10s): restarting at once"
        );
    }

    #[test]
    fn injected_policy() {
        let ms = Duration::from_millis;
        let policy = Policy {
            initial_backoff: ms(10),
            max_backoff: ms(25),
            healthy_after: Duration::ZERO,
            stop_grace: ms(100),
        };
        let mut backoff = Backoff::new(policy);
        // healthy_after zero: every exit counts as after a good run.
        for _ in 0..3 {
            assert_eq!(backoff.after_exit(ms(0)).delay, ms(0));
        }
        let mut growing = Backoff::new(Policy {
            healthy_after: Duration::MAX,
            ..policy
        });
        let delays: Vec<_> = (0..4).map(|_| growing.after_exit(ms(0)).delay).collect();
        assert_eq!(delays, vec![ms(10), ms(20), ms(25), ms(25)]);
    }
}
