//! Packets waiting for a session (the kernel's `staged_packet_queue`): held while a handshake is
//! under way and sent, in order, as soon as a session can seal them. Bounded: when full, the
//! oldest packet is dropped first, as the kernel does.

use std::collections::VecDeque;

#[derive(Default)]
pub(crate) struct Staged {
    queue: VecDeque<Vec<u8>>,
}

impl Staged {
    /// Holds a copy of `packet`, dropping the oldest held packet if `max` are held already;
    /// returns how many were dropped.
    pub fn push(&mut self, packet: &[u8], max: usize) -> usize {
        let mut dropped = 0;
        while self.queue.len() >= max.max(1) {
            self.queue.pop_front();
            dropped += 1;
        }
        self.queue.push_back(packet.to_vec());
        dropped
    }

    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.queue.pop_front()
    }

    /// Puts back a packet that could not be sent after all, ahead of the others.
    pub fn unpop(&mut self, packet: Vec<u8>) {
        self.queue.push_front(packet);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_drops_the_oldest_when_full() {
        let mut s = Staged::default();
        let dropped: usize = (0..5u8).map(|i| s.push(&[i], 3)).sum();
        assert_eq!((s.len(), dropped), (3, 2));
        let first = s.pop().unwrap();
        assert_eq!(first, vec![2]);
        s.unpop(first);
        let all: Vec<u8> = std::iter::from_fn(|| s.pop()).map(|p| p[0]).collect();
        assert_eq!(all, vec![2, 3, 4]);
    }
}
