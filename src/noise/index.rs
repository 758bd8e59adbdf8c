//! The receiver-index table: maps the random 32-bit indices we hand out to the peer and the
//! kind of state they name (a handshake in flight or a session).

use std::collections::HashMap;

use rand_core::RngCore;

use super::peer::PeerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Handshake,
    Session,
}

#[derive(Default)]
pub struct IndexTable {
    map: HashMap<u32, (PeerId, IndexKind)>,
}

impl IndexTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh random index not in use. Indices are random so they reveal nothing about how
    /// many peers or sessions exist.
    pub fn allocate(&mut self, peer: PeerId, kind: IndexKind, rng: &mut dyn RngCore) -> u32 {
        loop {
            let index = rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.map.entry(index) {
                e.insert((peer, kind));
                return index;
            }
        }
    }

    /// Re-labels an index (a handshake's index becomes its session's).
    pub fn insert(&mut self, index: u32, peer: PeerId, kind: IndexKind) {
        self.map.insert(index, (peer, kind));
    }

    pub fn remove(&mut self, index: u32) {
        self.map.remove(&index);
    }

    pub fn get(&self, index: u32) -> Option<(PeerId, IndexKind)> {
        self.map.get(&index).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn indices_are_unique_and_not_sequential() {
        let mut t = IndexTable::new();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let ids: Vec<u32> = (0..1000).map(|_| t.allocate(PeerId(1), IndexKind::Session, &mut rng)).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 1000);
        let sequential = ids.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
        assert!(sequential < 3, "{sequential} consecutive pairs");
        assert_eq!(t.get(ids[0]), Some((PeerId(1), IndexKind::Session)));
        t.remove(ids[0]);
        assert_eq!(t.get(ids[0]), None);
    }
}
