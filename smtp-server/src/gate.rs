//! The connection limits: `smtpd.max_connections` in total and
//! `smtpd.max_connections_per_client` from one address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Counts open sessions; a [`Ticket`] is one of them.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    /// 0: no per-client limit.
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `smtpd.max_connections` reached.
    Total,
    /// `smtpd.max_connections_per_client` reached for this address.
    Client,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total: max_total.max(1),
            max_per_client,
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counters stay consistent whatever panicked while holding
        // the lock (each update is one statement), so a poisoned lock is
        // still usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `client`, or says which limit it hit.
    pub fn enter(self: &Arc<Gate>, client: IpAddr) -> Result<Ticket, Full> {
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Full::Total);
        }
        let mine = open.per_client.get(&client).copied().unwrap_or(0);
        if self.max_per_client > 0 && mine >= self.max_per_client {
            return Err(Full::Client);
        }
        open.total += 1;
        open.per_client.insert(client, mine + 1);
        Ok(Ticket {
            gate: Arc::clone(self),
            client,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_release() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let t1 = gate.enter(a).expect("first");
        let _t2 = gate.enter(a).expect("second");
        assert_eq!(gate.enter(a).err(), Some(Full::Client));
        let _t3 = gate.enter(b).expect("other client");
        assert_eq!(gate.enter(b).err(), Some(Full::Total));
        drop(t1);
        assert_eq!(gate.open(), 2);
        let _t4 = gate.enter(a).expect("freed");
        let unlimited = Gate::new(10, 0);
        let _many: Vec<Ticket> = (0..10)
            .map(|_| unlimited.enter(a).expect("no per-client limit"))
            .collect();
    }
}
