//! A peer's three session slots and how sessions move between them (paper section 5.4.6 and the
//! kernel's noise.c `add_new_keypair` / `received_with_keypair`):
//!
//! - `current` seals outgoing data;
//! - `previous` still opens data the peer sealed before it switched;
//! - `next` holds a session we made as responder until the initiator proves it has the keys by
//!   sending data with it (key confirmation); only then does it become `current`.

use std::sync::Arc;
use std::time::Instant;

use super::super::config::Config;
use super::super::index::IndexTable;
use super::super::session::Session;
use super::PeerId;

#[derive(Default)]
pub(crate) struct Keypairs {
    current: Option<Arc<Session>>,
    previous: Option<Arc<Session>>,
    next: Option<Arc<Session>>,
}

fn drop_slot(slot: Option<Arc<Session>>, indices: &IndexTable) {
    if let Some(s) = slot {
        indices.remove(s.local_index);
    }
}

impl Keypairs {
    /// The session data is sealed with, if it may still be used at `now`.
    pub fn current(&self, now: Instant, config: &Config) -> Option<&Arc<Session>> {
        self.current.as_ref().filter(|s| !s.expired(now) && s.sent_messages() < config.reject_after_messages)
    }

    /// The current session whatever its age (for the rekey rules, which look at its age).
    pub fn current_any(&self) -> Option<&Arc<Session>> {
        self.current.as_ref()
    }

    /// How many slots are filled.
    pub fn count(&self) -> usize {
        [&self.current, &self.previous, &self.next].iter().filter(|s| s.is_some()).count()
    }

    /// Installs a session we made; its index starts naming it in `indices`.
    ///
    /// As initiator (the response arrived, so the peer has the keys): it becomes current at
    /// once. An unconfirmed `next` (from a handshake the peer started at the same time) then
    /// becomes previous, since the peer may already use it, and current is dropped; otherwise
    /// current becomes previous. As responder: it waits in `next` for key confirmation.
    pub fn install(&mut self, session: Arc<Session>, peer: PeerId, indices: &IndexTable) {
        indices.insert_session(session.local_index, peer, session.clone());
        if session.we_initiated {
            let demoted = match self.next.take() {
                Some(next) => {
                    drop_slot(self.current.take(), indices);
                    Some(next)
                }
                None => self.current.take(),
            };
            drop_slot(std::mem::replace(&mut self.previous, demoted), indices);
            self.current = Some(session);
        } else {
            drop_slot(self.next.replace(session), indices);
        }
    }

    /// Data arrived under the session with local index `index`: if it is the one waiting in
    /// `next`, the initiator has confirmed it and it becomes current. Returns whether it did.
    pub fn confirm(&mut self, index: u32, indices: &IndexTable) -> bool {
        if self.next.as_ref().is_none_or(|s| s.local_index != index) {
            return false;
        }
        let confirmed = self.next.take();
        drop_slot(std::mem::replace(&mut self.previous, self.current.take()), indices);
        self.current = confirmed;
        true
    }

    /// Erases every session and frees its index.
    pub fn clear(&mut self, indices: &IndexTable) {
        for slot in [self.current.take(), self.previous.take(), self.next.take()] {
            drop_slot(slot, indices);
        }
    }
}
