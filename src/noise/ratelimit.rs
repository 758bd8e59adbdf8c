//! The per-source handshake rate limiter: under load, a handshake message whose mac2 proves
//! that its sender receives at its source address still costs public-key work, so each source
//! gets a token bucket of 20 messages per second with a burst of 5 (the kernel's
//! `ratelimiter.c`, which wireguard-go's `ratelimiter` ports). A source is an IPv4 address, or
//! an IPv6 /64 as in the kernel (an IPv6 host usually holds a whole /64; wireguard-go keys the
//! full address, which lets one such host take 2^64 buckets).
//!
//! The same token buckets, with other figures ([`RateLimiter::cookie_replies`]), bound the cookie
//! replies a source gets under load (see [`COOKIE_REPLIES_PER_SECOND`]).
//!
//! The table is bounded ([`MAX_ENTRIES`]): a new source that finds it full is refused, as the
//! kernel refuses it, until the collection frees room (the cookie-reply table lets it through
//! instead: see there). Collection is lazy, driven by the `now`
//! of the calls: at most once per [`GC_INTERVAL`], entries idle for longer than
//! [`ENTRY_TIMEOUT`] go. An entry idle that long holds a full bucket, so forgetting it changes
//! no decision: a new entry starts full too. No clock is read here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Messages per second each source may send in the long run (kernel `PACKETS_PER_SECOND`).
pub const PER_SECOND: u64 = 20;
/// Messages a source may send at once after a quiet spell (kernel `PACKETS_BURSTABLE`).
pub const BURST: u64 = 5;
/// Most sources tracked at once. The kernel allows 8 per hash bucket, 65,536 on a machine with
/// over 1 GiB; a quarter of that keeps a full table under 1 MiB (the daemon's RSS budget is
/// 20 MiB), and only sources that passed mac2, that is that receive at their address, get in.
pub const MAX_ENTRIES: usize = 16_384;
/// How often idle entries are collected (kernel: its gc work runs every second).
pub const GC_INTERVAL: Duration = Duration::from_secs(1);
/// An entry idle this long is collected (kernel `ELEMENT_TIMEOUT`: 1 s, by which time its
/// bucket is full again since 1 s buys 20 tokens and it holds at most 5).
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(1);

/// Cookie replies a source gets per second under load, and at once. A source without a cookie
/// needs one reply per 120 s (a cookie's lifetime) per peer behind its address, and no more
/// than [`PER_SECOND`] of its initiations with mac2 can pass anyway; so 50 leaves room for many
/// peers behind one NAT, while a flood from one address, which can never use its replies, stops
/// costing a reply (mac1, the cookie, an XChaCha20-Poly1305 and a datagram) per message: beyond
/// these, its messages are dropped before their mac1 is checked. Not in the kernel, which answers
/// every message it takes from its queue.
pub const COOKIE_REPLIES_PER_SECOND: u64 = 50;
/// Cookie replies a source may get at once (1 s earns them back, as [`ENTRY_TIMEOUT`] requires).
pub const COOKIE_REPLIES_BURST: u64 = 50;

/// Tokens are nanoseconds of sending time, as in the kernel: one message costs 1/rate s.
const NANOS: u64 = 1_000_000_000;

/// A source as the limiter sees it: an IPv4 address, or the upper 64 bits of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        // An IPv4-mapped IPv6 source (a dual-stack socket) is its IPv4 address.
        match ip.to_canonical() {
            IpAddr::V4(a) => Source::V4(u32::from(a)),
            IpAddr::V6(a) => Source::V6((u128::from(a) >> 64) as u64),
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    last: Instant,
    tokens: u64,
}

/// A table of token buckets, one per source.
pub struct RateLimiter {
    buckets: HashMap<Source, Bucket>,
    last_gc: Option<Instant>,
    max_entries: usize,
    /// Tokens one message costs (nanoseconds), and a full bucket's.
    cost: u64,
    max_tokens: u64,
    /// What a new source gets when the table is full.
    allow_when_full: bool,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_max_entries(MAX_ENTRIES)
    }
}

impl RateLimiter {
    /// The handshake limiter (20/s, burst 5) tracking at most `max` sources; a new source is
    /// refused while the table is full (only sources that passed mac2 get in).
    pub fn with_max_entries(max: usize) -> Self {
        Self::new(PER_SECOND, BURST, max, false)
    }

    /// The cookie-reply limiter ([`COOKIE_REPLIES_PER_SECOND`], [`COOKIE_REPLIES_BURST`]) over at
    /// most [`MAX_ENTRIES`] sources. Sources here need not receive at their address, so a
    /// spoofed flood can fill the table; a new source then gets its reply anyway (as without
    /// this limiter), so that such a flood cannot keep a legitimate peer from its cookie.
    pub fn cookie_replies() -> Self {
        Self::new(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLIES_BURST, MAX_ENTRIES, true)
    }

    /// `per_second` messages a second with a burst of `burst` (at most `per_second`, so that an
    /// entry idle for [`ENTRY_TIMEOUT`] is full again), over at most `max` sources.
    fn new(per_second: u64, burst: u64, max: usize, allow_when_full: bool) -> Self {
        assert!(burst >= 1 && burst <= per_second, "burst {burst} of {per_second}/s");
        let cost = NANOS / per_second;
        RateLimiter {
            buckets: HashMap::new(),
            last_gc: None,
            max_entries: max,
            cost,
            max_tokens: cost * burst,
            allow_when_full,
        }
    }

    /// Whether a message from `ip` may be handled at `now`; takes a token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.collect(now);
        let source = Source::of(ip);
        if let Some(b) = self.buckets.get_mut(&source) {
            let earned = now.saturating_duration_since(b.last).as_nanos().min(u128::from(self.max_tokens)) as u64;
            let tokens = (b.tokens + earned).min(self.max_tokens);
            // `now` earlier than the last call (callers on several threads) earns nothing and
            // does not move the bucket's time back.
            b.last = b.last.max(now);
            let allowed = tokens >= self.cost;
            b.tokens = if allowed { tokens - self.cost } else { tokens };
            return allowed;
        }
        if self.buckets.len() >= self.max_entries {
            return self.allow_when_full;
        }
        self.buckets.insert(source, Bucket { last: now, tokens: self.max_tokens - self.cost });
        true
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn collect(&mut self, now: Instant) {
        if self.last_gc.is_some_and(|t| now.saturating_duration_since(t) < GC_INTERVAL) {
            return;
        }
        self.last_gc = Some(now);
        self.buckets.retain(|_, b| now.saturating_duration_since(b.last) <= ENTRY_TIMEOUT);
        // Give back the memory of a flood once it is over (a HashMap never shrinks by itself).
        if self.buckets.capacity() > 4 * self.buckets.len().max(64) {
            self.buckets.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// How many of `n` messages sent `every` apart from `from`, starting at `t`, pass.
    fn passed(r: &mut RateLimiter, from: IpAddr, t: Instant, n: u32, every: Duration) -> u32 {
        (0..n).filter(|&i| r.allow(from, t + every * i)).count() as u32
    }

    #[test]
    fn a_burst_of_five_then_twenty_per_second() {
        let mut r = RateLimiter::default();
        let t = Instant::now();
        let a = ip("192.0.2.1");
        // At once: the burst, then nothing.
        assert_eq!(passed(&mut r, a, t, 50, Duration::ZERO), 5);
        // One token comes back every 50 ms.
        assert!(!r.allow(a, t + Duration::from_millis(49)));
        assert!(r.allow(a, t + Duration::from_millis(50)));
        assert!(!r.allow(a, t + Duration::from_millis(51)));
        // A steady 1000/s flood for 10 s from there gets 20/s through (one per 50 ms).
        let start = t + Duration::from_millis(100);
        let got = passed(&mut r, a, start, 10_000, Duration::from_millis(1));
        assert!((200..=201).contains(&got), "{got} of 10,000 in 10 s");
        // Sending exactly at the rate always passes.
        let later = t + Duration::from_secs(30);
        assert_eq!(passed(&mut r, a, later, 100, Duration::from_millis(50)), 100);
    }

    #[test]
    fn sources_are_independent() {
        let mut r = RateLimiter::default();
        let t = Instant::now();
        assert_eq!(passed(&mut r, ip("192.0.2.1"), t, 100, Duration::ZERO), 5);
        assert_eq!(passed(&mut r, ip("192.0.2.2"), t, 100, Duration::ZERO), 5);
        assert_eq!(passed(&mut r, ip("2001:db8:0:1::1"), t, 100, Duration::ZERO), 5);
        assert_eq!(passed(&mut r, ip("2001:db8:0:2::1"), t, 100, Duration::ZERO), 5);
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn ipv6_sources_in_one_slash64_share_a_bucket_and_mapped_ipv4_is_ipv4() {
        let mut r = RateLimiter::default();
        let t = Instant::now();
        assert_eq!(passed(&mut r, ip("2001:db8:1:2::1"), t, 3, Duration::ZERO), 3);
        assert!(r.allow(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t));
        assert!(r.allow(ip("2001:db8:1:2:1234::9"), t));
        assert!(!r.allow(ip("2001:db8:1:2::77"), t), "the /64's burst of 5 is spent");
        assert!(r.allow(ip("2001:db8:1:3::1"), t), "the next /64 is another source");
        assert_eq!(passed(&mut r, ip("198.51.100.7"), t, 5, Duration::ZERO), 5);
        assert!(!r.allow(ip("::ffff:198.51.100.7"), t));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_sources_and_empties_afterwards() {
        let mut r = RateLimiter::with_max_entries(1000);
        let t = Instant::now();
        // 100,000 distinct sources in 1/10 s: the first 1000 get in, the rest are refused.
        let mut allowed = 0;
        for i in 0..100_000u32 {
            let at = t + Duration::from_micros(u64::from(i));
            if r.allow(IpAddr::V4((0x0a00_0000 + i).into()), at) {
                allowed += 1;
            }
            assert!(r.len() <= 1000);
        }
        assert_eq!(allowed, 1000);
        // A source already in the table keeps its bucket meanwhile.
        assert!(r.allow(ip("10.0.0.1"), t + Duration::from_millis(200)));
        // Once they are idle for over a second they are collected, and new sources get in.
        let later = t + Duration::from_millis(1150);
        assert!(r.allow(ip("203.0.113.1"), later));
        assert_eq!(r.len(), 2, "only 10.0.0.1 (idle for 0.95 s) and the new source remain");
        // Collected entries held full buckets: nothing changed for their sources.
        assert_eq!(passed(&mut r, ip("10.0.0.2"), later, 10, Duration::ZERO), 5);
    }

    #[test]
    fn cookie_replies_come_fifty_at_once_then_fifty_a_second_and_a_full_table_lets_new_sources_through() {
        let mut r = RateLimiter::cookie_replies();
        let t = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(passed(&mut r, a, t, 1000, Duration::ZERO), 50);
        // A 100,000/s flood for a second from there: 50 more.
        let got = passed(&mut r, a, t + Duration::from_millis(10), 100_000, Duration::from_micros(10));
        assert!((49..=51).contains(&got), "{got} replies in a second of flood");
        assert_eq!(passed(&mut r, ip("192.0.2.2"), t, 60, Duration::ZERO), 50, "another source has its own");
        // Spoofed sources fill the table; past it, a new source is not refused.
        let mut full = RateLimiter::new(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLIES_BURST, 100, true);
        for i in 0..100u32 {
            full.allow(IpAddr::V4((0x0a00_0000 + i).into()), t);
        }
        assert_eq!(full.len(), 100);
        assert!(full.allow(ip("203.0.113.9"), t));
        assert!(full.allow(ip("203.0.113.9"), t), "not tracked: every message gets through");
        assert_eq!(full.len(), 100);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let mut r = RateLimiter::default();
        let t = Instant::now() + Duration::from_secs(10);
        let a = ip("192.0.2.1");
        assert_eq!(passed(&mut r, a, t, 5, Duration::ZERO), 5);
        assert!(!r.allow(a, t - Duration::from_secs(5)));
        assert!(!r.allow(a, t));
    }
}
