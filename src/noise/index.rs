//! The receiver-index table: maps the random 32-bit indices we hand out to the peer and the
//! state they name (a handshake in flight, or a session with its keys).
//!
//! The table is shared: the core changes it under its own lock when handshakes start and
//! sessions come and go, while the data path reads it (one read lock per batch, see
//! [`IndexReader`]) to find the session of each incoming data message without the core's lock.
//! This is the kernel's `index_hashtable` (peerlookup.c), read under RCU there.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rand_core::RngCore;

use super::peer::PeerId;
use super::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Handshake,
    Session,
}

/// What an index names.
#[derive(Clone)]
enum Entry {
    Handshake(PeerId),
    Session(PeerId, Arc<Session>),
}

impl Entry {
    fn peer(&self) -> PeerId {
        match self {
            Entry::Handshake(p) | Entry::Session(p, _) => *p,
        }
    }
}

#[derive(Default)]
struct Map {
    map: HashMap<u32, Entry>,
}

/// The core's handle on the table: every change takes the write lock briefly.
#[derive(Default)]
pub struct IndexTable {
    shared: Arc<RwLock<Map>>,
}

impl IndexTable {
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.shared.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh random index not in use, reserved for a handshake of `peer`. Indices are random
    /// so they reveal nothing about how many peers or sessions exist.
    pub fn allocate(&self, peer: PeerId, rng: &mut dyn RngCore) -> u32 {
        let mut map = self.write();
        loop {
            let index = rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = map.map.entry(index) {
                e.insert(Entry::Handshake(peer));
                return index;
            }
        }
    }

    /// Makes `index` name a session (a handshake's index becomes its session's).
    pub fn insert_session(&self, index: u32, peer: PeerId, session: Arc<Session>) {
        self.write().map.insert(index, Entry::Session(peer, session));
    }

    pub fn remove(&self, index: u32) {
        self.write().map.remove(&index);
    }

    pub fn get(&self, index: u32) -> Option<(PeerId, IndexKind)> {
        self.read().map.get(&index).map(|e| match e {
            Entry::Handshake(p) => (*p, IndexKind::Handshake),
            Entry::Session(p, _) => (*p, IndexKind::Session),
        })
    }

    /// The peer an index belongs to, whatever it names.
    pub fn peer(&self, index: u32) -> Option<PeerId> {
        self.read().map.get(&index).map(Entry::peer)
    }

    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle for the data path that reads sessions without the core's lock.
    pub fn reader(&self) -> IndexReader {
        IndexReader { shared: self.shared.clone() }
    }
}

/// Read access to the session indices, for the data path (cheap to clone, `Send + Sync`).
#[derive(Clone)]
pub struct IndexReader {
    shared: Arc<RwLock<Map>>,
}

impl IndexReader {
    /// Takes the read lock for a batch of lookups; hold it only for the lookups, never across
    /// decryption or I/O (the core waits for it to change sessions).
    pub fn lock(&self) -> Sessions<'_> {
        Sessions(self.shared.read().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The session indices, read-locked (see [`IndexReader::lock`]).
pub struct Sessions<'a>(RwLockReadGuard<'a, Map>);

impl Sessions<'_> {
    /// The session a data message with receiver index `index` belongs to, and its peer.
    pub fn get(&self, index: u32) -> Option<(PeerId, &Arc<Session>)> {
        match self.0.map.get(&index)? {
            Entry::Session(peer, session) => Some((*peer, session)),
            Entry::Handshake(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::time::{Duration, Instant};

    #[test]
    fn indices_are_unique_and_not_sequential() {
        let t = IndexTable::new();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let ids: Vec<u32> = (0..1000).map(|_| t.allocate(PeerId(1), &mut rng)).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 1000);
        let sequential = ids.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
        assert!(sequential < 3, "{sequential} consecutive pairs");
        assert_eq!(t.get(ids[0]), Some((PeerId(1), IndexKind::Handshake)));
        t.remove(ids[0]);
        assert_eq!(t.get(ids[0]), None);
    }

    #[test]
    fn the_reader_sees_sessions_only_while_they_are_installed() {
        let t = IndexTable::new();
        let reader = t.reader();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let index = t.allocate(PeerId(7), &mut rng);
        assert!(reader.lock().get(index).is_none(), "a handshake index is not a session");
        let session =
            Arc::new(Session::new(index, 99, &[1; 32], &[2; 32], Instant::now(), true, 1 << 60, Duration::MAX));
        t.insert_session(index, PeerId(7), session);
        assert_eq!(reader.lock().get(index).map(|(p, s)| (p, s.remote_index)), Some((PeerId(7), 99)));
        assert_eq!(t.get(index), Some((PeerId(7), IndexKind::Session)));
        t.remove(index);
        assert!(reader.lock().get(index).is_none());
    }
}
