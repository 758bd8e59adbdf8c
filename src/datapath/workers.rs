//! Sealing a peer's planned batch. Each packet has its own counter from the plan, so packets
//! can be sealed in any order and on any core; the batch is sent, in order, only once all of
//! it is sealed.

use crate::noise::SealPlan;

use super::batch::Slots;
use super::tx::OFFSET;

pub(crate) struct Workers;

impl Workers {
    pub fn new() -> Self {
        Workers
    }

    /// Seals `packets` (positions in `bufs`/`sizes`, in plan order) with `plan`. Each size
    /// becomes the length of the sealed datagram, or 0 when it could not be sealed.
    pub fn seal(&mut self, plan: &SealPlan, packets: &[usize], bufs: &mut Slots, sizes: &mut [usize]) {
        debug_assert_eq!(OFFSET, crate::noise::messages::DATA_HEADER_LEN);
        for (k, &i) in packets.iter().enumerate() {
            let counter = plan.first_counter + k as u64;
            sizes[i] = plan.session.seal_at(counter, bufs.get_mut(i), sizes[i], plan.mtu).unwrap_or(0);
        }
    }
}
