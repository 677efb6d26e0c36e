//! Who may connect, and how hard the server is pressed.
//!
//! Four limits, checked in this order for each new connection:
//!
//! 1. **Rate** (`smtpd.max_connection_rate` per
//!    `smtpd.connection_rate_interval`): connection attempts one client may
//!    make in a window, as Postfix's anvil counts them. Every attempt
//!    counts, refused ones too, so that a client hammering a full server
//!    stays refused. Clients in `smtpd.rate_limit_exceptions` (loopback by
//!    default) are not counted.
//! 2. **Total** (`smtpd.max_connections`).
//! 3. **Per client** (`smtpd.max_connections_per_client`).
//! 4. **Reserve** (`smtpd.reserved_connections_percent`): the last slots
//!    go only to clients that have no connection open, so that one busy
//!    source (or a few) cannot take every slot and lock out the rest.
//!
//! A "client" is an IPv4 address, or an IPv6 /64 — one host commonly has
//! a whole /64, and counting its addresses one by one would make every
//! per-client limit a per-address one it can step around.
//!
//! **Stress.** From `smtpd.stress_threshold_percent` of `max_connections`
//! open, the server is under stress, as Postfix's smtpd is when its
//! process limit is reached: sessions use `smtpd.stress_command_timeout`
//! and `smtpd.stress_max_errors`, so idle and erring clients give their
//! slots back quickly. Sessions learn of it through [`Gate::subscribe`]
//! while they wait, not only at their next read: a slow client that was
//! given 5 minutes before the flood began is held to the stress timeout
//! from the moment stress begins. A wait during which stress began keeps
//! the stress limits until it ends, even if the load has fallen by the
//! time the session runs: the sessions that stress drops are what make it
//! fall, and every one of them was over the stress limit when it began.
//! The watch therefore carries a count of onsets ([`Stress::onsets`]) as
//! well as the state, so that a session cannot miss a stress that began
//! and ended between two of its polls.
//!
//! **Cost.** One mutex per connect and per disconnect, and a map entry per
//! client with a connection open and per client seen in the current rate
//! window; the rate map is swept once per window, so it holds at most the
//! clients of about two windows.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use skein_config::{IpNetwork, SmtpdConfig};
use tokio::sync::watch;
use tokio::time::Instant;

/// The gate's limits, from `[smtpd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateLimits {
    /// `max_connections` (at least 1).
    pub max_total: usize,
    /// `max_connections_per_client`; 0 = none.
    pub max_per_client: usize,
    /// Slots kept for clients with no connection open.
    pub reserved: usize,
    /// `max_connection_rate`; 0 = none.
    pub max_rate: u32,
    /// `connection_rate_interval`.
    pub rate_interval: Duration,
    /// `rate_limit_exceptions`.
    pub rate_exceptions: Vec<IpNetwork>,
    /// Open connections from which the server is under stress.
    pub stress_at: usize,
}

impl GateLimits {
    /// The limits `smtpd` asks for. The reserve is rounded down and is at
    /// most half the slots; stress begins at the threshold rounded up, and
    /// at one connection at least.
    pub fn from_config(smtpd: &SmtpdConfig) -> GateLimits {
        let max_total = (smtpd.max_connections as usize).max(1);
        let reserved = max_total * smtpd.reserved_connections_percent.min(50) as usize / 100;
        let stress_at = (max_total * smtpd.stress_threshold_percent.clamp(1, 100) as usize)
            .div_ceil(100)
            .max(1);
        GateLimits {
            max_total,
            max_per_client: smtpd.max_connections_per_client as usize,
            reserved,
            max_rate: smtpd.max_connection_rate,
            rate_interval: smtpd.connection_rate_interval.max(Duration::from_secs(1)),
            rate_exceptions: smtpd.rate_limit_exceptions.clone(),
            stress_at,
        }
    }

    /// Plain limits: `max_total` and `max_per_client`, no reserve, no
    /// rate limit, stress only when full.
    pub fn simple(max_total: usize, max_per_client: usize) -> GateLimits {
        GateLimits {
            max_total: max_total.max(1),
            max_per_client,
            reserved: 0,
            max_rate: 0,
            rate_interval: Duration::from_secs(60),
            rate_exceptions: Vec::new(),
            stress_at: max_total.max(1),
        }
    }
}

/// Counts open sessions; a [`Ticket`] is one of them.
/// The stress state the gate broadcasts to the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stress {
    /// Whether the server is under stress now.
    pub on: bool,
    /// How many times stress has begun since the server started.
    pub onsets: u64,
}

impl Stress {
    /// Whether a wait that began when the count was `onsets_then` is held
    /// to the stress limits: stress is on, or began during the wait.
    pub fn applies_since(self, onsets_then: u64) -> bool {
        self.on || self.onsets != onsets_then
    }
}

#[derive(Debug)]
pub struct Gate {
    /// The counters and the limits they are held to, under one lock: a
    /// reload ([`Gate::set_limits`]) changes the limits, never the counts.
    open: Mutex<Open>,
    stress: watch::Sender<Stress>,
    /// Whether a task is waiting to give free memory back.
    trim_scheduled: std::sync::atomic::AtomicBool,
}

/// How long after its last session ended the server gives its free memory
/// back to the kernel, if no session has begun since (each trim walks the
/// allocator's arenas: well under a millisecond for the few megabytes an
/// smtpd holds, and at most one per this interval).
pub const TRIM_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Open {
    limits: GateLimits,
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    rate: HashMap<IpAddr, Window>,
    next_sweep: Option<Instant>,
}

/// One client's attempts in the current rate window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `smtpd.max_connections` reached.
    Total,
    /// `smtpd.max_connections_per_client` reached for this client.
    Client,
    /// Only the reserve is left, and this client already has a connection.
    Reserved,
    /// More than `smtpd.max_connection_rate` attempts in the window.
    Rate,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Ticket {
    gate: Arc<Gate>,
    client: IpAddr,
}

/// The key the per-client limits count under: the IPv4 address (also
/// when it comes IPv4-mapped), or the IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

impl Gate {
    /// A gate with these limits.
    pub fn new(limits: GateLimits) -> Arc<Gate> {
        Arc::new(Gate {
            open: Mutex::new(Open {
                limits,
                total: 0,
                per_client: HashMap::new(),
                rate: HashMap::new(),
                next_sweep: None,
            }),
            stress: watch::Sender::new(Stress::default()),
            trim_scheduled: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counters stay consistent whatever panicked while holding
        // the lock (each update is one statement), so a poisoned lock is
        // still usable.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `client` at `now`, or says which limit it
    /// hit.
    pub fn enter(self: &Arc<Gate>, client: IpAddr, now: Instant) -> Result<Ticket, Full> {
        let key = client_key(client);
        let mut open = self.lock();
        let limited = open.limits.max_rate > 0
            && !open
                .limits
                .rate_exceptions
                .iter()
                .any(|n| n.contains(client));
        let GateLimits {
            max_total,
            max_per_client,
            reserved,
            max_rate,
            rate_interval,
            stress_at,
            ..
        } = open.limits;
        if limited {
            open.sweep(now, rate_interval);
            let window = open.rate.entry(key).or_insert(Window {
                started: now,
                attempts: 0,
            });
            if now.duration_since(window.started) >= rate_interval {
                *window = Window {
                    started: now,
                    attempts: 0,
                };
            }
            window.attempts = window.attempts.saturating_add(1);
            if window.attempts > max_rate {
                return Err(Full::Rate);
            }
        }
        if open.total >= max_total {
            return Err(Full::Total);
        }
        let mine = open.per_client.get(&key).copied().unwrap_or(0);
        if max_per_client > 0 && mine >= max_per_client {
            return Err(Full::Client);
        }
        if mine > 0 && open.total >= max_total.saturating_sub(reserved) {
            return Err(Full::Reserved);
        }
        open.total += 1;
        open.per_client.insert(key, mine + 1);
        // Under the lock, so that a concurrent exit cannot publish an
        // older count after this one.
        self.note_load(open.total, stress_at);
        drop(open);
        Ok(Ticket {
            gate: Arc::clone(self),
            client: key,
        })
    }

    /// Tells the sessions when stress begins or ends. Called with the
    /// counters locked.
    fn note_load(&self, total: usize, stress_at: usize) {
        let stressed = total >= stress_at;
        let changed = self.stress.send_if_modified(|now| {
            let changed = now.on != stressed;
            if changed && stressed {
                now.onsets += 1;
            }
            now.on = stressed;
            changed
        });
        if changed && stressed {
            tracing::warn!(
                connections = total,
                threshold = stress_at,
                "under stress: shorter timeouts and error limits until the load falls"
            );
        } else if changed {
            tracing::info!(connections = total, "stress over: normal limits again");
        }
    }

    /// The last session has ended: [`TRIM_AFTER`] later, if the server is
    /// still idle, the memory the burst used goes back to the kernel, so
    /// that the smtpd's resident set follows its load rather than its
    /// busiest moment so far. Outside a runtime (unit tests) nothing is
    /// scheduled. Returns whether a trim was scheduled.
    fn idle(self: &Arc<Gate>) -> bool {
        use std::sync::atomic::Ordering;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.trim_scheduled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let gate = Arc::clone(self);
        runtime.spawn(async move {
            tokio::time::sleep(TRIM_AFTER).await;
            gate.trim_scheduled.store(false, Ordering::Release);
            if gate.open() == 0 {
                skein_daemon::give_back_free_memory();
            }
        });
        true
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Whether the server is under stress now.
    pub fn stressed(&self) -> bool {
        self.stress.borrow().on
    }

    /// A watch on the stress state, for sessions that wait.
    pub fn subscribe(&self) -> watch::Receiver<Stress> {
        self.stress.subscribe()
    }

    /// The limits in force.
    pub fn limits(&self) -> GateLimits {
        self.lock().limits.clone()
    }

    /// Puts new limits in force (a reload). Open connections stay open and
    /// are counted against them; one over a lowered limit is not closed,
    /// but no new one is let in until the count is below it again.
    pub fn set_limits(&self, limits: GateLimits) {
        let mut open = self.lock();
        open.limits = limits;
        let (total, stress_at) = (open.total, open.limits.stress_at);
        self.note_load(total, stress_at);
    }

    /// Clients with an entry in the rate map (for tests of its bound).
    pub fn rate_entries(&self) -> usize {
        self.lock().rate.len()
    }
}

impl Open {
    /// Once per window, forgets the clients whose window has ended.
    fn sweep(&mut self, now: Instant, interval: Duration) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.rate
            .retain(|_, w| now.duration_since(w.started) < interval);
        self.next_sweep = Some(now + interval);
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
        let (total, stress_at) = (open.total, open.limits.stress_at);
        self.gate.note_load(total, stress_at);
        drop(open);
        if total == 0 {
            self.gate.idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn limits_and_release() {
        let now = Instant::now();
        let gate = Gate::new(GateLimits::simple(3, 2));
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let t1 = gate.enter(a, now).expect("first");
        let _t2 = gate.enter(a, now).expect("second");
        assert_eq!(gate.enter(a, now).err(), Some(Full::Client));
        let _t3 = gate.enter(b, now).expect("other client");
        assert_eq!(gate.enter(b, now).err(), Some(Full::Total));
        drop(t1);
        assert_eq!(gate.open(), 2);
        let _t4 = gate.enter(a, now).expect("freed");
        let unlimited = Gate::new(GateLimits::simple(10, 0));
        let _many: Vec<Ticket> = (0..10)
            .map(|_| unlimited.enter(a, now).expect("no per-client limit"))
            .collect();
    }

    fn limits(max_total: usize, per_client: usize, reserved: usize) -> GateLimits {
        GateLimits {
            reserved,
            ..GateLimits::simple(max_total, per_client)
        }
    }

    /// (client, expected): one step of a table.
    fn run(gate: &Arc<Gate>, steps: &[(&str, Result<(), Full>)]) -> Vec<Ticket> {
        let now = Instant::now();
        let mut held = Vec::new();
        for (i, (client, want)) in steps.iter().enumerate() {
            let got = gate.enter(ip(client), now);
            assert_eq!(
                got.as_ref().map(|_| ()).map_err(|e| *e),
                *want,
                "step {i}: {client}"
            );
            held.extend(got.ok());
        }
        held
    }

    #[test]
    fn the_reserve_goes_to_clients_with_nothing_open() {
        use Full::*;
        // 10 slots, 3 reserved: a busy client stops at 7 in all (here its
        // own limit is 6), newcomers get one each until the total is full.
        let gate = Gate::new(limits(10, 6, 3));
        let busy = "192.0.2.1";
        let other = "192.0.2.2";
        let mut steps = vec![(busy, Ok(())); 6];
        steps.push((busy, Err(Client)));
        steps.push((other, Ok(()))); // 7 open: the reserve starts here
        steps.push((other, Err(Reserved)));
        steps.push((busy, Err(Client)));
        steps.push(("192.0.2.3", Ok(())));
        steps.push(("192.0.2.4", Ok(())));
        steps.push(("192.0.2.5", Ok(())));
        steps.push(("192.0.2.6", Err(Total)));
        let held = run(&gate, &steps);
        assert_eq!(held.len(), 10);
        assert_eq!(gate.open(), 10);
    }

    #[test]
    fn one_busy_source_cannot_take_every_slot() {
        // The case: 10 addresses × 20 connections against 200
        // slots with the defaults (10 % reserved) leave 19 slots for
        // anyone else.
        let config = skein_config::Config::embedded_default(std::path::Path::new("/"));
        let gate = Gate::new(GateLimits {
            max_rate: 0,
            ..GateLimits::from_config(&config.smtpd)
        });
        let now = Instant::now();
        let mut held = Vec::new();
        for host in 1..=10 {
            for _ in 0..20 {
                held.extend(gate.enter(ip(&format!("198.51.100.{host}")), now).ok());
            }
        }
        assert_eq!(held.len(), 181, "9 × 20 before the reserve, then one more");
        let newcomers: Vec<_> = (1..=25)
            .filter_map(|host| gate.enter(ip(&format!("203.0.113.{host}")), now).ok())
            .collect();
        assert_eq!(newcomers.len(), 19);
    }

    #[test]
    fn the_rate_counts_every_attempt_per_window_and_spares_exceptions() {
        let start = Instant::now();
        let gate = Gate::new(GateLimits {
            max_rate: 3,
            rate_interval: Duration::from_secs(60),
            rate_exceptions: vec!["127.0.0.0/8".parse().expect("net")],
            ..GateLimits::simple(100, 0)
        });
        let a = ip("192.0.2.1");
        for i in 0..3 {
            drop(
                gate.enter(a, start)
                    .unwrap_or_else(|e| panic!("attempt {i}: {e:?}")),
            );
        }
        assert_eq!(gate.enter(a, start).err(), Some(Full::Rate));
        // Refused attempts count too: still refused later in the window.
        let later = start + Duration::from_secs(59);
        assert_eq!(gate.enter(a, later).err(), Some(Full::Rate));
        // Another client has its own count; loopback is not counted.
        assert!(gate.enter(ip("192.0.2.2"), later).is_ok());
        for _ in 0..10 {
            assert!(gate.enter(ip("127.0.0.5"), later).is_ok());
        }
        // A new window.
        assert!(gate.enter(a, start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn the_rate_map_forgets_old_windows() {
        let start = Instant::now();
        let gate = Gate::new(GateLimits {
            max_rate: 5,
            ..GateLimits::simple(100_000, 0)
        });
        for host in 0..1000u32 {
            let a = IpAddr::from((0xC000_0000u32 + host).to_be_bytes());
            drop(gate.enter(a, start));
        }
        assert_eq!(gate.rate_entries(), 1000);
        // Two windows on, one connection sweeps the old ones away.
        drop(gate.enter(ip("198.51.100.1"), start + Duration::from_secs(121)));
        assert_eq!(gate.rate_entries(), 1);
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let now = Instant::now();
        let gate = Gate::new(GateLimits::simple(10, 2));
        let _a = gate.enter(ip("2001:db8:1:2::1"), now).expect("first");
        let _b = gate.enter(ip("2001:db8:1:2:ffff::9"), now).expect("second");
        assert_eq!(
            gate.enter(ip("2001:db8:1:2::77"), now).err(),
            Some(Full::Client)
        );
        assert!(gate.enter(ip("2001:db8:1:3::1"), now).is_ok());
        assert_eq!(client_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn stress_begins_at_the_threshold_and_ends_below_it() {
        let now = Instant::now();
        let gate = Gate::new(GateLimits {
            stress_at: 3,
            ..GateLimits::simple(10, 0)
        });
        let mut watch = gate.subscribe();
        let a = ip("192.0.2.1");
        let t1 = gate.enter(a, now).expect("1");
        let _t2 = gate.enter(a, now).expect("2");
        assert!(!gate.stressed());
        let t3 = gate.enter(a, now).expect("3");
        assert!(gate.stressed());
        assert!(watch.has_changed().expect("sender alive"));
        let first = *watch.borrow_and_update();
        assert_eq!(
            first,
            Stress {
                on: true,
                onsets: 1
            }
        );
        drop(t3);
        drop(t1);
        assert!(!gate.stressed());
        let over = *watch.borrow_and_update();
        assert_eq!(
            over,
            Stress {
                on: false,
                onsets: 1
            }
        );
        // A wait that began before the onset is still held to the stress
        // limits after the load fell; one that began after is not.
        assert!(over.applies_since(0));
        assert!(!over.applies_since(1));
        // Stress that begins and ends between two looks is still seen.
        let t1 = gate.enter(a, now).expect("1 again");
        let t3 = gate.enter(a, now).expect("3 again");
        drop((t1, t3));
        let missed = *watch.borrow_and_update();
        assert!(!missed.on);
        assert!(missed.applies_since(1), "{missed:?}");
    }

    #[tokio::test]
    async fn going_idle_schedules_one_trim_at_a_time() {
        let gate = Gate::new(GateLimits::simple(10, 0));
        assert!(gate.idle());
        assert!(!gate.idle(), "one is already waiting");
        tokio::time::sleep(TRIM_AFTER * 2).await;
        assert!(gate.idle(), "the first has run");
    }

    #[test]
    fn new_limits_keep_the_counts_and_bind_new_connections() {
        let now = Instant::now();
        let gate = Gate::new(GateLimits::simple(3, 0));
        let held: Vec<Ticket> = (1..=3)
            .map(|n| gate.enter(ip(&format!("192.0.2.{n}")), now).expect("room"))
            .collect();
        // Lowered below what is open: nobody is thrown out, nobody enters.
        gate.set_limits(GateLimits::simple(2, 0));
        assert_eq!(gate.open(), 3);
        assert_eq!(gate.limits().max_total, 2);
        assert_eq!(gate.enter(ip("192.0.2.9"), now).err(), Some(Full::Total));
        drop(held);
        assert_eq!(gate.open(), 0, "the old tickets counted out");
        let _a = gate.enter(ip("192.0.2.1"), now).expect("first");
        let _b = gate.enter(ip("192.0.2.2"), now).expect("second");
        assert_eq!(gate.enter(ip("192.0.2.3"), now).err(), Some(Full::Total));
        // Raised: room again at once.
        gate.set_limits(GateLimits::simple(10, 0));
        assert!(gate.enter(ip("192.0.2.3"), now).is_ok());
    }

    #[test]
    fn limits_from_the_configuration() {
        let config = skein_config::Config::embedded_default(std::path::Path::new("/"));
        let limits = GateLimits::from_config(&config.smtpd);
        assert_eq!(limits.max_total, 200);
        assert_eq!(limits.reserved, 20);
        assert_eq!(limits.stress_at, 150);
        assert_eq!(limits.max_rate, 60);
        let mut smtpd = config.smtpd.clone();
        smtpd.max_connections = 3;
        smtpd.reserved_connections_percent = 50;
        smtpd.stress_threshold_percent = 1;
        let small = GateLimits::from_config(&smtpd);
        assert_eq!((small.reserved, small.stress_at), (1, 1));
    }
}
