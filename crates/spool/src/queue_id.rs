//! Queue ids: unique across processes and restarts, sortable by arrival
//! time, and safe as file names.
//!
//! Layout (19 characters of Crockford base32, upper case):
//!
//! ```text
//!   TTTTTTTTTTT  PPPPP  CCC
//!   |            |      `-- per-process counter (15 bits)
//!   |            `--------- process id (25 bits; Linux pid_max is 2^22)
//!   `---------------------- microseconds since the Unix epoch (55 bits)
//! ```
//!
//! Why unique: two live processes never share a pid, and one process never
//! hands out the same (microsecond, counter) pair twice (the clock is made
//! monotonic inside the process, and the counter carries into the clock).
//! A pid reused by a later process cannot reuse an earlier microsecond. The
//! spool still refuses to overwrite an existing entry on rename
//! (`RENAME_NOREPLACE`), so even a stepped-back system clock cannot make two
//! messages share a name: the writer just draws a new id.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const TIME_CHARS: usize = 11;
const PID_CHARS: usize = 5;
const COUNTER_CHARS: usize = 3;
/// Length of every queue id in characters.
pub const QUEUE_ID_LEN: usize = TIME_CHARS + PID_CHARS + COUNTER_CHARS;
const COUNTER_MAX: u64 = 1 << (5 * COUNTER_CHARS);

/// A queue id. Ordering is arrival order (to the microsecond, then by pid
/// and counter, which only break ties).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(String);

/// A string that is not a well-formed queue id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidQueueId(pub String);

impl fmt::Display for InvalidQueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid queue id {:?}: expected {QUEUE_ID_LEN} characters of 0-9 and A-Z (no I, L, O, U)",
            self.0
        )
    }
}

impl std::error::Error for InvalidQueueId {}

struct Generator {
    last_micros: u64,
    counter: u64,
}

static GENERATOR: Mutex<Generator> = Mutex::new(Generator {
    last_micros: 0,
    counter: 0,
});

fn encode(mut value: u64, width: usize, out: &mut String) {
    let mut buf = [b'0'; 16];
    for slot in buf[..width].iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    // The alphabet is ASCII, so this cannot fail.
    out.push_str(std::str::from_utf8(&buf[..width]).unwrap_or("0"));
}

fn decode_char(c: u8) -> Option<u64> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u64)
}

fn decode(s: &[u8]) -> Option<u64> {
    s.iter()
        .try_fold(0u64, |acc, &c| Some((acc << 5) | decode_char(c)?))
}

impl QueueId {
    /// Draws a new id for this process.
    pub fn generate() -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let (micros, counter) = {
            // A poisoned lock only means another thread panicked while
            // holding two integers: the integers are still fine.
            let mut g = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
            if now > g.last_micros {
                g.last_micros = now;
                g.counter = 0;
            } else {
                g.counter += 1;
                if g.counter >= COUNTER_MAX {
                    g.last_micros += 1;
                    g.counter = 0;
                }
            }
            (g.last_micros, g.counter)
        };
        Self::from_parts(micros, std::process::id(), counter)
    }

    /// Builds an id from its parts (tests and tools).
    pub fn from_parts(micros: u64, pid: u32, counter: u64) -> QueueId {
        let mut s = String::with_capacity(QUEUE_ID_LEN);
        encode(micros, TIME_CHARS, &mut s);
        encode(u64::from(pid), PID_CHARS, &mut s);
        encode(counter % COUNTER_MAX, COUNTER_CHARS, &mut s);
        QueueId(s)
    }

    /// The id as text (also its file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Arrival time in microseconds since the Unix epoch.
    pub fn micros(&self) -> u64 {
        decode(&self.0.as_bytes()[..TIME_CHARS]).unwrap_or(0)
    }

    /// The pid of the process that drew the id.
    pub fn pid(&self) -> u32 {
        decode(&self.0.as_bytes()[TIME_CHARS..TIME_CHARS + PID_CHARS]).unwrap_or(0) as u32
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for QueueId {
    type Err = InvalidQueueId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == QUEUE_ID_LEN && s.bytes().all(|c| decode_char(c).is_some()) {
            Ok(QueueId(s.to_string()))
        } else {
            Err(InvalidQueueId(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parts_round_trip() {
        let id = QueueId::from_parts(1_764_377_978_123_456, 4_194_303, 77);
        assert_eq!(id.as_str().len(), QUEUE_ID_LEN);
        assert_eq!(id.micros(), 1_764_377_978_123_456);
        assert_eq!(id.pid(), 4_194_303);
        assert_eq!(id.as_str().parse::<QueueId>(), Ok(id.clone()));
    }

    #[test]
    fn sorts_by_time_first() {
        let a = QueueId::from_parts(1_000, 99_999, 30_000);
        let b = QueueId::from_parts(1_001, 1, 0);
        assert!(a < b);
        assert!(a.as_str() < b.as_str(), "string order is arrival order");
    }

    #[test]
    fn generated_ids_are_unique_and_increasing() {
        let mut seen = HashSet::new();
        let mut last: Option<QueueId> = None;
        for _ in 0..100_000 {
            let id = QueueId::generate();
            if let Some(prev) = &last {
                assert!(prev < &id, "{prev} then {id}");
            }
            assert!(seen.insert(id.clone()));
            last = Some(id);
        }
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "short",
            "0000000000000000000A",
            "000000000000000000I",
            "00000000000000000/0",
            "0000000000000000000\n",
            "000000000000000000a",
        ] {
            assert!(bad.parse::<QueueId>().is_err(), "{bad:?} accepted");
        }
    }
}
