//! When each peer's timers are next due, in a min-heap, so that finding the next deadline and
//! the peers due at `now` costs O(log n) in the number of peers, never a scan of all of them.
//!
//! The heap may hold an entry *earlier* than a peer's real deadline (a deadline that moved later
//! is not searched for and removed; the old entry stays). Such an entry fires early: the caller
//! finds nothing due for that peer and schedules it again at its real deadline. A deadline that
//! moves earlier gets a new entry. Entries that no longer match the peer's scheduled time are
//! skipped when popped. So each peer costs at most one push per moved-earlier deadline and one
//! per firing, whatever the packet rate: data traffic, which keeps pushing deadlines later,
//! pushes almost nothing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::peer::PeerId;

#[derive(Default)]
pub(crate) struct Schedule {
    heap: BinaryHeap<Reverse<(Instant, PeerId)>>,
}

impl Schedule {
    /// Makes sure `peer` is woken no later than `deadline`. `scheduled` is the peer's record of
    /// its earliest live entry, updated here.
    pub fn arm(&mut self, peer: PeerId, deadline: Option<Instant>, scheduled: &mut Option<Instant>) {
        let Some(at) = deadline else { return };
        if scheduled.is_some_and(|s| s <= at) {
            return;
        }
        *scheduled = Some(at);
        self.heap.push(Reverse((at, peer)));
    }

    /// The earliest entry's time: no peer is due before it (it may be early, see above).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops the next entry due at or before `now`, if any. The caller checks that it is live
    /// (equal to the peer's scheduled time) and re-arms the peer after acting.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, PeerId)> {
        match self.heap.peek() {
            Some(Reverse((t, _))) if *t <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry (the peers' `scheduled` records must be cleared with it).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_deadlines_push_nothing_and_earlier_ones_do() {
        let t0 = Instant::now();
        let s = |secs| Some(t0 + Duration::from_secs(secs));
        let mut q = Schedule::default();
        let mut scheduled = None;
        q.arm(PeerId(1), s(10), &mut scheduled);
        q.arm(PeerId(1), s(20), &mut scheduled);
        q.arm(PeerId(1), s(15), &mut scheduled);
        assert_eq!(q.len(), 1, "deadlines that moved later keep the early entry");
        q.arm(PeerId(1), s(5), &mut scheduled);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next(), s(5));
        assert_eq!(scheduled, s(5));
        q.arm(PeerId(2), None, &mut None);
        assert_eq!(q.len(), 2, "no deadline, no entry");
    }

    #[test]
    fn pops_only_what_is_due_in_time_order() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut q = Schedule::default();
        for (peer, secs) in [(1, 30), (2, 10), (3, 20)] {
            q.arm(PeerId(peer), Some(at(secs)), &mut None);
        }
        assert_eq!(q.pop_due(at(5)), None);
        assert_eq!(q.pop_due(at(25)), Some((at(10), PeerId(2))));
        assert_eq!(q.pop_due(at(25)), Some((at(20), PeerId(3))));
        assert_eq!(q.pop_due(at(25)), None);
        assert_eq!(q.next(), Some(at(30)));
    }
}
