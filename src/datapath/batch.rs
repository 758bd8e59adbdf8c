//! Packet buffers, allocated once per thread: fixed-size slots in one arena.
//!
//! Every slot can hold the largest packet there is (a 64 KiB IP packet with room around it),
//! so an MTU raised at any time never drops a packet for want of space. The arena is one
//! allocation, which the allocator takes straight from the kernel as untouched zero pages: only
//! the pages packets are actually written to become resident, about one or two per slot at a
//! 1420-byte MTU.

/// Bytes per slot: a 64 KiB packet, a data message header in front, padding and tag behind,
/// rounded up to whole pages.
pub const SLOT: usize = (65535 + 16 + 32 + 4095) & !4095;
const _: () = assert!(SLOT >= 65535 + 48 && SLOT.is_multiple_of(4096));

pub struct Slots {
    arena: Vec<u8>,
    count: usize,
}

impl Slots {
    /// `count` slots of [`SLOT`] bytes.
    pub fn new(count: usize) -> Self {
        Slots { arena: vec![0u8; count * SLOT], count }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.arena[i * SLOT..(i + 1) * SLOT]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.arena[i * SLOT..(i + 1) * SLOT]
    }

    /// Slots `from..` as separate mutable slices (for a read that fills several).
    pub fn tail_mut(&mut self, from: usize) -> Vec<&mut [u8]> {
        self.arena[from * SLOT..].chunks_exact_mut(SLOT).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_and_hold_a_64k_packet_with_room() {
        let mut s = Slots::new(3);
        s.get_mut(1).fill(7);
        assert!(s.get(0).iter().all(|&b| b == 0) && s.get(2).iter().all(|&b| b == 0));
        assert_eq!(s.tail_mut(1).len(), 2);
        assert!(s.tail_mut(1)[0].iter().all(|&b| b == 7));
    }
}
