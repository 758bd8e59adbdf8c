//! The queue between the UDP readers and the handshake thread: bounded, and fair between
//! sources, so that one busy source cannot crowd out everybody else's handshakes.
//!
//! Messages are kept in [`LANES`] lanes chosen by a keyed hash of their source (the IPv4
//! address, or the /64 of an IPv6 address: the unit of WireGuard's rate limiter, kernel
//! ratelimiter.c) and taken out one lane at a time, in turn (deficit-free round robin, as
//! fq_codel serves its flows). When the queue is full, a new message takes the place of the
//! oldest message of the longest lane, unless its own lane is that longest one: a flood from one
//! source fills only its own lane, and a legitimate peer's initiation (or its re-send with mac2
//! after a cookie reply) waits behind at most one message of each other busy source, instead of
//! behind the whole queue. The hash key is random per process, so a sender cannot pick the lane
//! of another source. Spoofed sources spread over every lane; then the queue is no better than
//! one bounded FIFO, which is what the kernel's WireGuard has.
//!
//! Pure data structure, no locks or threads ([`super::handshake::Queue`] wraps it).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};

/// Messages the queue holds at most, over all lanes (the kernel's `MAX_QUEUED_INCOMING_HANDSHAKES`).
pub const CAPACITY: usize = 4096;
/// Lanes, each for the sources whose keyed hash falls on it.
pub const LANES: usize = 64;
/// The largest handshake message (an initiation, 148 bytes; paper section 5.4.2).
pub const MAX_MESSAGE: usize = crate::noise::messages::INITIATION_LEN;

/// A handshake message with its sender and the local address it was sent to, held inline (no
/// allocation per message).
#[derive(Clone)]
pub struct Job {
    pub src: SocketAddr,
    pub dst: Option<IpAddr>,
    len: u8,
    bytes: [u8; MAX_MESSAGE],
}

impl Job {
    /// The message `msg` from `src` to local address `dst`; `None` when it is longer than any
    /// handshake message.
    pub fn new(src: SocketAddr, dst: Option<IpAddr>, msg: &[u8]) -> Option<Job> {
        let mut bytes = [0u8; MAX_MESSAGE];
        bytes.get_mut(..msg.len())?.copy_from_slice(msg);
        Some(Job { src, dst, len: msg.len() as u8, bytes })
    }

    /// The message's bytes.
    pub fn message(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// What became of a message offered to the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Queued; nothing was dropped.
    Queued,
    /// Queued in place of the oldest message of the longest lane (that one was dropped).
    Evicted,
    /// Dropped: the queue is full and the message's own lane is the longest.
    Refused,
}

/// The lanes, the order in which the non-empty ones are served, and the key of the lane hash.
pub struct FairQueue {
    lanes: Vec<VecDeque<Job>>,
    /// Non-empty lanes in service order; each appears once.
    active: VecDeque<usize>,
    len: usize,
    key: RandomState,
}

impl Default for FairQueue {
    fn default() -> Self {
        FairQueue {
            lanes: (0..LANES).map(|_| VecDeque::new()).collect(),
            active: VecDeque::new(),
            len: 0,
            key: RandomState::new(),
        }
    }
}

impl FairQueue {
    /// Messages queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lane of a source: its IPv4 address, or its IPv6 /64, hashed with the queue's key.
    fn lane(&self, src: IpAddr) -> usize {
        let h = match src {
            IpAddr::V4(a) => self.key.hash_one((4u8, a.to_bits())),
            IpAddr::V6(a) => self.key.hash_one((6u8, (a.to_bits() >> 64) as u64)),
        };
        (h % LANES as u64) as usize
    }

    /// Offers `job`; see the module's text for who gives way when the queue is full.
    pub fn push(&mut self, job: Job) -> Admission {
        let own = self.lane(job.src.ip());
        let mut admission = Admission::Queued;
        if self.len >= CAPACITY {
            // The longest lane; ties go to the message's own, which is then refused.
            let mut longest = own;
            for (i, lane) in self.lanes.iter().enumerate() {
                if lane.len() > self.lanes[longest].len() {
                    longest = i;
                }
            }
            if longest == own {
                return Admission::Refused;
            }
            self.lanes[longest].pop_front();
            self.len -= 1;
            if self.lanes[longest].is_empty() {
                self.active.retain(|&l| l != longest);
            }
            admission = Admission::Evicted;
        }
        if self.lanes[own].is_empty() {
            self.active.push_back(own);
        }
        self.lanes[own].push_back(job);
        self.len += 1;
        admission
    }

    /// The next message: the oldest of the lane whose turn it is.
    pub fn pop(&mut self) -> Option<Job> {
        let lane = self.active.pop_front()?;
        let job = self.lanes[lane].pop_front();
        if self.lanes[lane].is_empty() {
            // After a flood, give back a lane's room (up to CAPACITY messages of 180 bytes).
            if self.lanes[lane].capacity() > 64 {
                self.lanes[lane] = VecDeque::new();
            }
        } else {
            self.active.push_back(lane);
        }
        self.len -= usize::from(job.is_some());
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ip: &str, port: u16, tag: u8) -> Job {
        Job::new(SocketAddr::new(ip.parse().unwrap(), port), None, &[tag; 148]).unwrap()
    }

    /// A source whose lane differs from `other`'s in `q`.
    fn other_source(q: &FairQueue, other: &str) -> String {
        let lane = q.lane(other.parse().unwrap());
        (1..=250).map(|i| format!("10.1.2.{i}")).find(|ip| q.lane(ip.parse().unwrap()) != lane).unwrap()
    }

    #[test]
    fn a_message_is_held_whole_and_longer_ones_are_refused() {
        let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let j = Job::new(src, Some("10.0.0.1".parse().unwrap()), &[7u8; 92]).unwrap();
        assert_eq!(j.message(), &[7u8; 92][..]);
        assert_eq!(j.src, src);
        assert!(Job::new(src, None, &[0u8; MAX_MESSAGE + 1]).is_none());
    }

    #[test]
    fn one_source_comes_out_in_order() {
        let mut q = FairQueue::default();
        for t in 0..10 {
            assert_eq!(q.push(job("192.0.2.1", 1000 + t as u16, t)), Admission::Queued);
        }
        assert_eq!(q.len(), 10);
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|j| j.message()[0]).collect();
        assert_eq!(order, (0..10).collect::<Vec<u8>>());
        assert!(q.is_empty());
    }

    #[test]
    fn sources_take_turns() {
        let mut q = FairQueue::default();
        let quiet = other_source(&q, "192.0.2.1");
        for t in 0..100 {
            q.push(job("192.0.2.1", t, 0));
        }
        q.push(job(&quiet, 51820, 1));
        // The quiet source's one message comes out second, not 101st.
        let first_two: Vec<u8> = (0..2).map(|_| q.pop().unwrap().message()[0]).collect();
        assert_eq!(first_two, [0, 1]);
        assert_eq!(q.len(), 99);
    }

    #[test]
    fn a_full_queue_makes_the_busiest_source_give_way() {
        let mut q = FairQueue::default();
        let quiet = other_source(&q, "192.0.2.1");
        for t in 0..CAPACITY {
            assert_eq!(q.push(job("192.0.2.1", t as u16, (t % 200) as u8)), Admission::Queued);
        }
        // The flooder's next message is refused; another source still gets in, in place of
        // the flooder's oldest.
        assert_eq!(q.push(job("192.0.2.1", 9, 0)), Admission::Refused);
        assert_eq!(q.push(job(&quiet, 51820, 255)), Admission::Evicted);
        assert_eq!(q.len(), CAPACITY);
        let first = q.pop().unwrap();
        let second = q.pop().unwrap();
        assert_eq!(first.message()[0], 1, "the flooder's oldest (tag 0) was dropped");
        assert_eq!(second.message()[0], 255);
    }

    #[test]
    fn ipv6_sources_share_a_lane_per_64() {
        let q = FairQueue::default();
        let a = q.lane("2001:db8:1:2::1".parse().unwrap());
        let b = q.lane("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn an_emptied_queue_gives_back_its_room() {
        let mut q = FairQueue::default();
        for t in 0..1000 {
            q.push(job("192.0.2.1", t, 0));
        }
        while q.pop().is_some() {}
        assert!(q.lanes.iter().all(|l| l.capacity() <= 64));
        assert!(q.active.is_empty());
    }
}
