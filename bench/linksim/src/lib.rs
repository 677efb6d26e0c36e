//! linksim: a TCP proxy that makes loopback behave like a long, thin link,
//! for skein's benchmarks (`bench/wan`).
//!
//! **Job.** Accepts connections on one address and relays each to another
//! address, delaying every byte in each direction by a one-way delay, and
//! optionally pacing each direction to a bandwidth and bounding the bytes
//! in flight (read from one side, not yet delivered to the other) to a
//! window, as a receiver window or a bottleneck buffer would.
//!
//! **Model.** Each direction is a [`Link`], shared by every relayed
//! connection (one bottleneck, as on a real line), while the window is
//! per connection (each flow has its own TCP window): bytes are cut into packets of
//! at most [`PACKET`] bytes as they are read; a packet starts being sent
//! when the link is free, takes `len × 8 / bandwidth` to serialise, and
//! arrives `delay` later. The schedule is computed exactly
//! ([`Link::schedule`]); the proxy then sleeps until each arrival time, so
//! the only error is the timer's and the scheduler's lateness, never
//! earliness: a packet is never delivered before its time.
//!
//! **Reads and writes.** The two TCP connections of each relayed session;
//! nothing else. **Trusts.** Whoever connects (it is a test tool: bind it
//! to loopback). **On failure.** An error on either side closes both.
//! **Configuration.** Command-line only (`linksim --help`).

#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// The largest packet the model schedules (an Ethernet MSS).
pub const PACKET: usize = 1460;

/// What the simulated link does, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Bits per second; `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Most bytes in flight (read, not yet delivered); `None`: unlimited.
    pub window: Option<usize>,
}

/// One direction of the link: when each packet arrives.
#[derive(Debug, Clone)]
pub struct Link {
    params: LinkParams,
    free_at: Option<Instant>,
}

impl Link {
    /// An idle link.
    pub fn new(params: LinkParams) -> Link {
        Link {
            params,
            free_at: None,
        }
    }

    /// How long `len` bytes take to serialise at the link's bandwidth.
    pub fn serialisation(&self, len: usize) -> Duration {
        match self.params.bandwidth {
            Some(bps) if bps > 0 => {
                Duration::from_nanos(((len as u128 * 8 * 1_000_000_000) / u128::from(bps)) as u64)
            }
            _ => Duration::ZERO,
        }
    }

    /// The arrival time of a packet of `len` bytes handed to the link at
    /// `now`: it waits for the link to be free, is serialised, then
    /// travels for the delay.
    pub fn schedule(&mut self, now: Instant, len: usize) -> Instant {
        let start = match self.free_at {
            Some(free) if free > now => free,
            _ => now,
        };
        let sent = start + self.serialisation(len);
        self.free_at = Some(sent);
        sent + self.params.delay
    }
}

/// Accepts connections on `listener` and relays each to `upstream`
/// through the simulated link, until the listener fails.
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    params: LinkParams,
) -> io::Result<()> {
    let up_link = Arc::new(Mutex::new(Link::new(params)));
    let down_link = Arc::new(Mutex::new(Link::new(params)));
    loop {
        let (client, _) = listener.accept().await?;
        let (up_link, down_link) = (Arc::clone(&up_link), Arc::clone(&down_link));
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let up = tokio::spawn(relay(cr, sw, params, up_link));
            let down = tokio::spawn(relay(sr, cw, params, down_link));
            let _ = tokio::join!(up, down);
        });
    }
}

/// One direction of one connection over `link` (shared with the other
/// connections' same direction): read, schedule, deliver on time, pass end
/// of stream on once everything before it is delivered.
pub async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    params: LinkParams,
    link: Arc<Mutex<Link>>,
) {
    let window = params.window.unwrap_or(usize::MAX >> 4).max(PACKET);
    let credit = Arc::new(Semaphore::new(window.min(Semaphore::MAX_PERMITS)));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer_credit = Arc::clone(&credit);
    let writer = tokio::spawn(async move {
        while let Some((at, packet)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&packet).await.is_err() {
                return;
            }
            writer_credit.add_permits(packet.len());
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Read no more than the window has room for.
        let Ok(first) = credit.acquire().await else {
            break;
        };
        first.forget();
        let room = (credit.available_permits() + 1).min(buf.len());
        let n = match from.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => {
                credit.add_permits(1);
                break;
            }
            Ok(n) => n,
        };
        if n > 1 {
            match credit.try_acquire_many((n - 1) as u32) {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut scheduled = Vec::new();
        {
            let mut link = link.lock().unwrap_or_else(|e| e.into_inner());
            for packet in buf[..n].chunks(PACKET) {
                scheduled.push((link.schedule(now, packet.len()), packet.to_vec()));
            }
        }
        for item in scheduled {
            if tx.send(item).is_err() {
                return;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Parses a duration: `65ms`, `1.5s`, `250us`, or a bare number of
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {text:?} (e.g. \"65ms\", \"1.5s\")"))?;
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parses a bandwidth in bits per second: `64kbit`, `10mbit`, `1gbit`,
/// or a bare number.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = t.strip_suffix("kbit") {
        (n.to_owned(), 1e3)
    } else if let Some(n) = t.strip_suffix("mbit") {
        (n.to_owned(), 1e6)
    } else if let Some(n) = t.strip_suffix("gbit") {
        (n.to_owned(), 1e9)
    } else if let Some(n) = t.strip_suffix("bit") {
        (n.to_owned(), 1.0)
    } else {
        (t.clone(), 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid bandwidth {text:?} (e.g. \"64kbit\", \"10mbit\")"))?;
    let bps = value * scale;
    if !(bps.is_finite() && bps >= 1.0) {
        return Err(format!("invalid bandwidth {text:?}"));
    }
    Ok(bps as u64)
}

/// Parses a size in bytes: `64k`, `1M`, or a bare number.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let value: usize = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {text:?} (e.g. \"64k\")"))?;
    value
        .checked_mul(scale)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("invalid size {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(delay_ms: u64, bandwidth: Option<u64>) -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(delay_ms),
            bandwidth,
            window: None,
        }
    }

    #[test]
    fn delay_only() {
        let mut link = Link::new(params(65, None));
        let t0 = Instant::now();
        assert_eq!(link.schedule(t0, 1460), t0 + Duration::from_millis(65));
        assert_eq!(link.schedule(t0, 1460), t0 + Duration::from_millis(65));
    }

    #[test]
    fn bandwidth_queues_packets_behind_each_other() {
        // 8 kbit/s: 1000 bytes take exactly one second.
        let mut link = Link::new(params(100, Some(8_000)));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(link.schedule(t0, 1000), t0 + ms(1100));
        assert_eq!(link.schedule(t0, 1000), t0 + ms(2100));
        // Handed over after the link went idle: no queueing.
        let later = t0 + ms(5000);
        assert_eq!(link.schedule(later, 500), later + ms(600));
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_duration("65ms"), Ok(Duration::from_millis(65)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("65"), Ok(Duration::from_millis(65)));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_bandwidth("64kbit"), Ok(64_000));
        assert_eq!(parse_bandwidth("10mbit"), Ok(10_000_000));
        assert!(parse_bandwidth("0").is_err());
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert!(parse_size("0").is_err());
    }
}
