//! The stop request, shared by every task of a service.
//!
//! One SIGTERM must reach every accept loop, session and timer in the
//! process. A `watch` channel does that: any number of cheap clones, each
//! able to wait for the flag or to look at it, and a flag that, once set,
//! stays set — a task that starts waiting after the signal still sees it.

use tokio::sync::watch;

/// A cloneable view of the daemon's stop request.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stopping: watch::Receiver<bool>,
}

/// The side that requests the stop. Held by the skeleton, or by a test
/// driving a service through [`crate::Context::standalone`].
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    stopping: watch::Sender<bool>,
}

impl Shutdown {
    /// A connected trigger and handle, not yet triggered.
    pub(crate) fn channel() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (
            ShutdownTrigger { stopping: sender },
            Shutdown { stopping: receiver },
        )
    }

    /// Resolves once a stop has been requested (at once if it already has).
    ///
    /// Also resolves if the trigger is gone, which only happens when the
    /// skeleton itself is being torn down: stopping is then the only safe
    /// thing to do.
    pub async fn wait(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|&stopping| stopping).await;
    }

    /// Whether a stop has been requested.
    pub fn is_triggered(&self) -> bool {
        *self.stopping.borrow()
    }
}

impl ShutdownTrigger {
    /// Requests the stop. Idempotent.
    pub(crate) fn trigger(&self) {
        self.stopping.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger_even_late_ones() {
        let (trigger, shutdown) = Shutdown::channel();
        let early = shutdown.clone();
        let waiter = tokio::spawn(async move { early.wait().await });
        assert!(!shutdown.is_triggered());
        trigger.trigger();
        waiter.await.expect("waiter finished");
        let late = shutdown.clone();
        assert!(late.is_triggered());
        late.wait().await;
        trigger.trigger();
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn dropped_trigger_releases_waiters() {
        let (trigger, shutdown) = Shutdown::channel();
        drop(trigger);
        shutdown.wait().await;
        assert!(!shutdown.is_triggered());
    }
}
