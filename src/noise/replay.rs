//! The receive-side replay window: a ring of 8192 bits in the style of RFC 6479.
//!
//! The ring holds 128 words of 64 bits. Advancing past the newest counter clears whole words,
//! never single bits, so an update costs O(words skipped). One word is always being reused,
//! which is why only 8192 - 64 = 8128 counters behind the newest are tracked.

use super::config::REPLAY_WINDOW_BITS;

const WORD_BITS: u64 = 64;
const WORDS: usize = (REPLAY_WINDOW_BITS / WORD_BITS) as usize;
/// How far behind the newest accepted counter a counter may be and still be accepted.
pub const WINDOW: u64 = REPLAY_WINDOW_BITS - WORD_BITS;

/// Tracks which counters have been received.
#[derive(Clone)]
pub struct ReplayWindow {
    newest: u64,
    ring: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { newest: 0, ring: [0; WORDS] }
    }
}

impl ReplayWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `counter` is certainly a replay or too old, without changing anything. Used
    /// to skip decryption of hopeless packets; the authoritative check is [`Self::accept`].
    pub fn is_stale(&self, counter: u64) -> bool {
        counter <= self.newest && self.newest - counter >= WINDOW
    }

    /// Records `counter` if it was not seen before and is inside the window; returns whether
    /// it was accepted. `limit` is REJECT_AFTER_MESSAGES: counters at or above it are refused.
    /// Call only after the packet has been authenticated.
    pub fn accept(&mut self, counter: u64, limit: u64) -> bool {
        if counter >= limit {
            return false;
        }
        let word = counter / WORD_BITS;
        if counter > self.newest {
            let current = self.newest / WORD_BITS;
            let advance = (word - current).min(WORDS as u64);
            for i in 1..=advance {
                self.ring[((current + i) % WORDS as u64) as usize] = 0;
            }
            self.newest = counter;
        } else if self.newest - counter >= WINDOW {
            return false;
        }
        let slot = &mut self.ring[(word % WORDS as u64) as usize];
        let bit = 1u64 << (counter % WORD_BITS);
        if *slot & bit != 0 {
            return false;
        }
        *slot |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const LIMIT: u64 = u64::MAX - 8192;

    /// The specification, written the obvious way.
    struct Model {
        seen: HashSet<u64>,
        newest: u64,
        limit: u64,
    }

    impl Model {
        fn accept(&mut self, c: u64) -> bool {
            if c >= self.limit || self.seen.contains(&c) {
                return false;
            }
            if c <= self.newest && self.newest - c >= WINDOW {
                return false;
            }
            self.seen.insert(c);
            self.newest = self.newest.max(c);
            true
        }
    }

    #[test]
    fn in_order_duplicates_and_edges() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0, LIMIT));
        assert!(!w.accept(0, LIMIT));
        for c in 1..20_000 {
            assert!(w.accept(c, LIMIT));
        }
        let newest = 19_999;
        // Exactly at the window edge: newest - WINDOW + 1 is inside, newest - WINDOW is not.
        let mut w2 = ReplayWindow::new();
        assert!(w2.accept(newest, LIMIT));
        assert!(w2.accept(newest - (WINDOW - 1), LIMIT));
        assert!(!w2.accept(newest - WINDOW, LIMIT));
        assert!(w2.is_stale(newest - WINDOW));
        assert!(!w2.is_stale(newest - (WINDOW - 1)));
        assert!(!w2.accept(newest - (WINDOW - 1), LIMIT));
    }

    #[test]
    fn reject_after_messages_is_enforced() {
        let mut w = ReplayWindow::new();
        assert!(!w.accept(LIMIT, LIMIT));
        assert!(!w.accept(u64::MAX, LIMIT));
        assert!(w.accept(LIMIT - 1, LIMIT));
        assert!(!w.accept(LIMIT - 1, LIMIT));
    }

    #[test]
    fn big_jump_clears_the_whole_ring() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            assert!(w.accept(c, LIMIT));
        }
        assert!(w.accept(1_000_000, LIMIT));
        // Counters in words reused after the jump must not look seen.
        for c in (1_000_000 - WINDOW + 1)..1_000_000 {
            assert!(w.accept(c, LIMIT), "{c}");
        }
    }

    fn counters() -> impl Strategy<Value = Vec<u64>> {
        // Mostly local reordering around a rising base, with duplicates, occasional large jumps
        // and counters exactly at the window edge.
        prop::collection::vec((0u8..10, 0u64..20_000, any::<bool>()), 1..600).prop_map(|steps| {
            let mut base = 0u64;
            let mut out = Vec::new();
            for (kind, x, dup) in steps {
                let c = match kind {
                    0 => {
                        base += x * 3;
                        base
                    }
                    1 => base.saturating_sub(WINDOW),
                    2 => base.saturating_sub(WINDOW - 1),
                    3 => base.saturating_sub(WINDOW + 1),
                    _ => base.saturating_sub(x % 9000) + (x % 7),
                };
                out.push(c);
                if dup {
                    out.push(c);
                }
                base = base.max(c);
            }
            out
        })
    }

    proptest! {
        #[test]
        fn matches_the_reference_model(seq in counters()) {
            let mut w = ReplayWindow::new();
            let mut m = Model { seen: HashSet::new(), newest: 0, limit: LIMIT };
            for c in seq {
                prop_assert_eq!(w.accept(c, LIMIT), m.accept(c), "counter {}", c);
            }
        }

        #[test]
        fn matches_the_model_near_the_message_limit(offsets in prop::collection::vec(0u64..20_000, 1..300)) {
            let limit = 1u64 << 20;
            let mut w = ReplayWindow::new();
            let mut m = Model { seen: HashSet::new(), newest: 0, limit };
            for o in offsets {
                let c = limit + 10_000 - o;
                prop_assert_eq!(w.accept(c, limit), m.accept(c));
            }
        }
    }
}
