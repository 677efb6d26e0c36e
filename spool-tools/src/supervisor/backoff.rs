//! When to restart a service that exited: exponential back-off, so that a
//! service that cannot start (a broken configuration, a port in use) does
//! not spin, and a reset after a long run, so that one crash after a week
//! of service is retried at once.

use std::time::Duration;

/// The supervisor's timing, injectable so that tests run in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first restart delay.
    pub initial_backoff: Duration,
    /// The delay never grows past this.
    pub max_backoff: Duration,
    /// A child that ran at least this long before exiting is restarted
    /// after `initial_backoff` again.
    pub reset_after: Duration,
    /// How long a stopping child gets after SIGTERM before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Policy {
    /// 1 s doubling to 60 s, reset after 60 s of running, 30 s to stop.
    fn default() -> Self {
        Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(30),
        }
    }
}

/// One service's back-off state.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    next: Duration,
}

impl Backoff {
    /// Fresh state: the next delay is the initial one.
    pub fn new(policy: Policy) -> Backoff {
        Backoff {
            next: policy.initial_backoff,
            policy,
        }
    }

    /// The child exited after running for `ran`: how long to wait before
    /// starting it again.
    pub fn after_exit(&mut self, ran: Duration) -> Duration {
        if ran >= self.policy.reset_after {
            self.next = self.policy.initial_backoff;
        }
        let delay = self.next.min(self.policy.max_backoff);
        self.next = delay.saturating_mul(2).min(self.policy.max_backoff);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_capped_and_reset() {
        let s = Duration::from_secs;
        let quick = s(2);
        let long = s(60);
        // (how long the child ran, expected delay)
        let table = [
            (quick, s(1)),
            (quick, s(2)),
            (quick, s(4)),
            (quick, s(8)),
            (quick, s(16)),
            (quick, s(32)),
            (quick, s(60)),
            (quick, s(60)),
            (long, s(1)),
            (quick, s(2)),
            (s(59), s(4)),
            (s(3600), s(1)),
        ];
        let mut backoff = Backoff::new(Policy::default());
        for (i, (ran, want)) in table.into_iter().enumerate() {
            assert_eq!(backoff.after_exit(ran), want, "step {i}");
        }
    }

    #[test]
    fn injected_policy() {
        let ms = Duration::from_millis;
        let policy = Policy {
            initial_backoff: ms(10),
            max_backoff: ms(25),
            reset_after: Duration::ZERO,
            stop_grace: ms(100),
        };
        let mut backoff = Backoff::new(policy);
        // reset_after zero: every exit counts as after a long run.
        for _ in 0..3 {
            assert_eq!(backoff.after_exit(ms(0)), ms(10));
        }
        let mut growing = Backoff::new(Policy {
            reset_after: Duration::MAX,
            ..policy
        });
        let delays: Vec<_> = (0..4).map(|_| growing.after_exit(ms(0))).collect();
        assert_eq!(delays, vec![ms(10), ms(20), ms(25), ms(25)]);
    }
}
