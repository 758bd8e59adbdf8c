//! Packet buffers, allocated once per thread: fixed-size slots in banks of [`BANK`] slots.
//!
//! Every slot can hold the largest packet there is (a 64 KiB IP packet with room around it),
//! so an MTU raised at any time never drops a packet for want of space. A bank is one
//! allocation, which the allocator takes straight from the kernel as untouched zero pages:
//! only the pages packets are actually written to become resident, about one or two per slot
//! at a 1420-byte MTU. A bank can be lent, whole, to a crypto worker on another core
//! ([`super::workers`]) and given back: the packets never move.

/// Bytes per slot: a 64 KiB packet, a data message header in front, padding and tag behind,
/// rounded up to whole pages.
pub const SLOT: usize = (65535 + 16 + 32 + 4095) & !4095;
const _: () = assert!(SLOT >= 65535 + 48 && SLOT.is_multiple_of(4096));
/// Slots per bank.
pub const BANK: usize = 32;

/// [`BANK`] slots in one allocation.
pub struct Bank(Vec<u8>);

impl Bank {
    fn new() -> Self {
        Bank(vec![0u8; BANK * SLOT])
    }

    /// Slot `i` of the bank.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.0[i * SLOT..(i + 1) * SLOT]
    }
}

pub struct Slots {
    /// `None` while a bank is lent out.
    banks: Vec<Option<Bank>>,
}

impl Slots {
    /// At least `count` slots (whole banks).
    pub fn new(count: usize) -> Self {
        Slots { banks: (0..count.div_ceil(BANK)).map(|_| Some(Bank::new())).collect() }
    }

    pub fn len(&self) -> usize {
        self.banks.len() * BANK
    }

    pub fn is_empty(&self) -> bool {
        self.banks.is_empty()
    }

    fn bank(&self, b: usize) -> &Bank {
        self.banks[b].as_ref().expect("bank lent out and not given back")
    }

    fn bank_mut(&mut self, b: usize) -> &mut Bank {
        self.banks[b].as_mut().expect("bank lent out and not given back")
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bank(i / BANK).0[(i % BANK) * SLOT..(i % BANK + 1) * SLOT]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        self.bank_mut(i / BANK).slot_mut(i % BANK)
    }

    /// Slots `from..` as separate mutable slices (for a read that fills several).
    pub fn tail_mut(&mut self, from: usize) -> Vec<&mut [u8]> {
        let mut out = Vec::with_capacity(self.len().saturating_sub(from));
        for (b, bank) in self.banks.iter_mut().enumerate() {
            let bank = bank.as_mut().expect("bank lent out and not given back");
            for (k, slot) in bank.0.chunks_exact_mut(SLOT).enumerate() {
                if b * BANK + k >= from {
                    out.push(slot);
                }
            }
        }
        out
    }

    /// Takes bank `b` out (to lend it to another thread).
    pub fn lend(&mut self, b: usize) -> Bank {
        self.banks[b].take().expect("bank lent twice")
    }

    /// Puts back a bank taken with [`Slots::lend`].
    pub fn give_back(&mut self, b: usize, bank: Bank) {
        debug_assert!(self.banks[b].is_none());
        self.banks[b] = Some(bank);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_across_banks_and_survive_lending() {
        let mut s = Slots::new(BANK + 1);
        assert_eq!(s.len(), 2 * BANK);
        s.get_mut(BANK - 1).fill(7);
        assert!(s.get(BANK - 2).iter().all(|&b| b == 0) && s.get(BANK).iter().all(|&b| b == 0));
        assert_eq!(s.tail_mut(BANK - 1).len(), BANK + 1);
        assert!(s.tail_mut(BANK - 1)[0].iter().all(|&b| b == 7));
        let mut bank = s.lend(0);
        bank.slot_mut(BANK - 1)[0] = 9;
        s.give_back(0, bank);
        assert_eq!(s.get(BANK - 1)[0], 9);
    }
}
