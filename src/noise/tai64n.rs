//! TAI64N timestamps carried in handshake initiations, and the wall clock the sans-I/O core
//! reads them from.

use std::cell::Cell;
use std::sync::Arc;
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

    /// The next timestamp after this one (one whitening step, 2^24 ns, later).
    fn next(self) -> Self {
        let secs = u64::from_be_bytes(self.0[..8].try_into().expect("eight bytes"));
        let nanos = u32::from_be_bytes(self.0[8..].try_into().expect("four bytes")) + (1 << 24);
        let mut out = [0u8; TIMESTAMP_LEN];
        let (secs, nanos) = if nanos >= 1_000_000_000 { (secs + 1, 0) } else { (secs, nanos) };
        out[..8].copy_from_slice(&secs.to_be_bytes());
        out[8..].copy_from_slice(&nanos.to_be_bytes());
        Timestamp(out)
    }
}

/// Where the wall-clock time comes from.
#[derive(Clone)]
enum Source {
    /// One reading of both clocks, then monotonic time since (virtual time in tests).
    Anchored { mono: Instant, wall: Duration },
    /// The system's real-time clock, read every time (the daemon).
    System,
    /// The caller's clock (tests that step it).
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

/// The wall clock, for TAI64N timestamps and for when a handshake completed (as `wg` reports
/// it, since the Unix epoch). The daemon reads the system's real-time clock every time, as the
/// kernel's WireGuard does: a daemon started with a wrong clock (a router or a Raspberry Pi
/// before NTP) uses the corrected time as soon as NTP sets it; deriving timestamps from one
/// reading at start kept the wrong time for as long as the daemon ran, and a peer that had seen
/// a newer timestamp refused every initiation as a replay.
///
/// Timestamps never go backwards: when the clock is stepped back, the next one is one step
/// after the last one handed out, so a peer that saw the old time keeps accepting them.
#[derive(Clone)]
pub struct WallClock {
    source: Source,
    last: Cell<Timestamp>,
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

impl WallClock {
    /// Wall time derived from monotonic time: `wall` at `mono`, advancing with `now` (for
    /// virtual time, where the core's `now` is the only clock).
    pub fn new(mono: Instant, wall: SystemTime) -> Self {
        let wall = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::with(Source::Anchored { mono, wall })
    }

    /// The system's real-time clock, read at every use (for the daemon).
    pub fn system() -> Self {
        Self::with(Source::System)
    }

    /// A clock of the caller's (tests that step the wall clock).
    pub fn from_fn(read: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Self::with(Source::Custom(Arc::new(read)))
    }

    fn with(source: Source) -> Self {
        WallClock { source, last: Cell::new(Timestamp::default()) }
    }

    /// Time since the Unix epoch at monotonic instant `now` (anchored clocks use `now`; the
    /// others read their clock).
    pub fn unix(&self, now: Instant) -> Duration {
        let since = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
        match &self.source {
            Source::Anchored { mono, wall } => *wall + now.saturating_duration_since(*mono),
            Source::System => since(SystemTime::now()),
            Source::Custom(read) => since(read()),
        }
    }

    /// The TAI64N timestamp for an initiation sent at `now`: later than any handed out before.
    pub fn timestamp(&self, now: Instant) -> Timestamp {
        let mut t = Timestamp::from_unix(self.unix(now));
        if t <= self.last.get() {
            t = self.last.get().next();
        }
        self.last.set(t);
        t
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

    #[test]
    fn a_stepped_clock_is_followed_forwards_and_never_goes_backwards() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let secs = Arc::new(AtomicU64::new(1000));
        let s = secs.clone();
        let clock = WallClock::from_fn(move || UNIX_EPOCH + Duration::from_secs(s.load(Ordering::SeqCst)));
        let now = Instant::now();
        let t1 = clock.timestamp(now);
        assert_eq!(t1, Timestamp::from_unix(Duration::from_secs(1000)));
        // NTP steps the clock forward: the next timestamp is the real time, at once.
        secs.store(1_700_000_000, Ordering::SeqCst);
        assert_eq!(clock.unix(now), Duration::from_secs(1_700_000_000));
        let t2 = clock.timestamp(now);
        assert_eq!(t2, Timestamp::from_unix(Duration::from_secs(1_700_000_000)));
        // Stepped back: still after the last one.
        secs.store(1_600_000_000, Ordering::SeqCst);
        let t3 = clock.timestamp(now);
        assert!(t3 > t2);
        // The same time twice: strictly increasing anyway.
        assert!(clock.timestamp(now) > t3);
    }
}
