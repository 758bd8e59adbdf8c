//! TAI64N timestamps carried in handshake initiations, and the wall-clock anchor the sans-I/O
//! core derives them from.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Length of an encoded TAI64N label.
pub const TIMESTAMP_LEN: usize = 12;

/// TAI64 label of the Unix epoch (2^62 + 10 leap seconds).
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;

/// Nanoseconds are rounded down to a multiple of 2^24 ns (about 16.8 ms) so that a timestamp
/// does not reveal the sender's clock finely.
const NANOS_MASK: u32 = !((1 << 24) - 1);

/// A TAI64N timestamp: big-endian seconds then big-endian nanoseconds. Byte order equals
/// time order, so timestamps compare as byte strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub [u8; TIMESTAMP_LEN]);

impl Timestamp {
    pub fn from_unix(since_epoch: Duration) -> Self {
        let mut out = [0u8; TIMESTAMP_LEN];
        out[..8].copy_from_slice(&(TAI64_EPOCH + since_epoch.as_secs()).to_be_bytes());
        out[8..].copy_from_slice(&(since_epoch.subsec_nanos() & NANOS_MASK).to_be_bytes());
        Timestamp(out)
    }
}

/// Maps the monotonic `now` the core is given onto wall-clock time, from one reading of both
/// clocks taken by the caller. Derived timestamps never go backwards, even if the system clock
/// is stepped back while the tunnel runs.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    mono: Instant,
    wall: Duration,
}

impl WallClock {
    pub fn new(mono: Instant, wall: SystemTime) -> Self {
        WallClock { mono, wall: wall.duration_since(UNIX_EPOCH).unwrap_or_default() }
    }

    /// Reads both clocks now (for the I/O layer; the core itself never calls this).
    pub fn system() -> Self {
        Self::new(Instant::now(), SystemTime::now())
    }

    /// Time since the Unix epoch at monotonic instant `now`.
    pub fn unix(&self, now: Instant) -> Duration {
        self.wall + now.saturating_duration_since(self.mono)
    }

    pub fn timestamp(&self, now: Instant) -> Timestamp {
        Timestamp::from_unix(self.unix(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_epoch_and_orders_bytewise() {
        let t0 = Timestamp::from_unix(Duration::ZERO);
        assert_eq!(t0.0, [0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0]);
        let a = Timestamp::from_unix(Duration::new(1_700_000_000, 100_000_000));
        let b = Timestamp::from_unix(Duration::new(1_700_000_000, 200_000_000));
        let c = Timestamp::from_unix(Duration::new(1_700_000_001, 0));
        assert!(a < b && b < c);
        // Nanoseconds are whitened to multiples of 2^24.
        let n = u32::from_be_bytes(a.0[8..].try_into().unwrap());
        assert_eq!(n % (1 << 24), 0);
        assert!(n <= 100_000_000 && 100_000_000 - n < (1 << 24));
    }

    #[test]
    fn wall_clock_follows_monotonic_time() {
        let base = Instant::now();
        let clock = WallClock::new(base, UNIX_EPOCH + Duration::from_secs(1000));
        assert_eq!(clock.unix(base + Duration::from_secs(5)), Duration::from_secs(1005));
        assert!(clock.timestamp(base) < clock.timestamp(base + Duration::from_millis(20)));
    }
}
