//! What the scheduler's engine reacts to.
//!
//! Everything that happens outside the engine's task — an agent's frame,
//! an agent's end, a request on the control socket, the clock — reaches it
//! as one [`Event`] on one channel, so the engine owns its state without
//! locks. This module sits at the bottom of the scheduler's modules: the
//! agent process tasks and the control socket produce events, the engine
//! consumes them, and neither needs the other.

use std::fmt;

use skein_proto::{AgentToScheduler, ControlRequest, ControlResponse};
use tokio::sync::oneshot;

/// Identifies an agent for the life of the scheduler (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub u64);

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent#{}", self.0)
    }
}

/// What the engine reacts to.
#[derive(Debug)]
pub enum Event {
    /// An agent finished its handshake.
    AgentUp {
        /// Which.
        agent: AgentId,
    },
    /// An agent sent a frame.
    AgentMsg {
        /// Which.
        agent: AgentId,
        /// What.
        msg: AgentToScheduler,
    },
    /// An agent's connection ended (exit, crash, garbage, kill).
    AgentGone {
        /// Which.
        agent: AgentId,
        /// Why, for the logs and the deferral diagnostic.
        reason: String,
    },
    /// A request on the control socket.
    Control {
        /// The request.
        req: ControlRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlResponse>,
    },
    /// Once a second: retries, expiry, timeouts.
    Tick,
    /// A scrape of the metrics endpoint wants the text.
    Metrics {
        /// Where the text goes.
        reply: oneshot::Sender<String>,
    },
}
