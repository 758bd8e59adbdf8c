//! One peer's protocol state: its settings and counters here; each concept in a file of its
//! own, as the kernel divides them:
//!
//! - [`keypairs`]: the current, previous and next sessions and how they rotate;
//! - [`staged`]: packets waiting for a session;
//! - [`handshake`]: starting handshakes and answering them (the peer's side of noise.c);
//! - [`send`] and [`receive`]: data, one packet or a batch at a time;
//! - [`timers`]: what each expiring timer of section 6 does.
//!
//! The interface owns the peers and hands each call a [`Context`] with what is shared (our
//! static key, the index table, the RNG, scratch space).

mod handshake;
mod keypairs;
mod receive;
mod send;
mod staged;
mod timers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use super::config::Config;
use super::cookie::CookieState;
use super::handshake::PendingInitiation;
use super::index::IndexTable;
use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::resolver::StaticStaticTable;
use super::tai64n::{Timestamp, WallClock};
use super::timers::Timers;
use keypairs::Keypairs;
use staged::Staged;

pub use receive::ReceivedData;
pub use send::SealPlan;

/// Identifies a peer within its interface.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u32);

/// What became of a packet handed to [`super::Interface::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Encrypted and passed to the output.
    Sent,
    /// Held until a session exists (a handshake was started if one was allowed).
    Queued,
}

/// Counters and times reported for a peer. Kept under the interface's lock, where the
/// bookkeeping they count happens anyway (the data path takes it once per batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of authenticated datagrams received (whole UDP payloads, as wg reports them).
    pub rx_bytes: u64,
    /// Bytes of datagrams sent (whole UDP payloads).
    pub tx_bytes: u64,
    /// Data messages received that carried a packet (keepalives not counted).
    pub rx_packets: u64,
    /// Data messages sent that carried a packet (keepalives not counted).
    pub tx_packets: u64,
    /// Time since the Unix epoch of the last completed handshake.
    pub last_handshake: Option<Duration>,
    pub queued_packets: usize,
    /// Sessions held (current, previous and next slots that are filled).
    pub sessions: usize,
    /// When the newest session was made (`None`: no session).
    pub session_created: Option<Instant>,
    /// Initiations sent (retries included).
    pub handshakes_initiated: u64,
    pub handshakes_completed: u64,
    /// Initiations that got no response within REKEY_TIMEOUT.
    pub handshakes_failed: u64,
    /// Cookie replies from the peer that were taken.
    pub cookies_received: u64,
    /// Times an authenticated message came from another address than the endpoint in use.
    pub endpoint_changes: u64,
    /// Packets waiting for a session that were dropped (the queue full, or the handshake
    /// given up).
    pub dropped_no_session: u64,
}

/// What every peer operation needs from the interface.
pub(crate) struct Context<'a> {
    pub config: &'a Config,
    pub secret: &'a StaticSecret,
    pub table: &'a Arc<StaticStaticTable>,
    pub rng: &'a mut ChaCha20Rng,
    pub clock: &'a WallClock,
    pub indices: &'a IndexTable,
    pub buf: &'a mut Vec<u8>,
    /// Where initiations' work goes when it is to be done outside (`None`: done in place).
    pub work: Option<&'a mut Vec<super::handshake_work::InitiationWork>>,
}

impl Context<'_> {
    fn seed(&mut self) -> zeroize::Zeroizing<[u8; 32]> {
        let mut s = zeroize::Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut s[..]);
        s
    }

    fn jitter(&mut self) -> Duration {
        let max = self.config.rekey_jitter_max.as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next_u64() % max)
    }
}

pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) public: PublicKey,
    psk: PresharedKey,
    endpoint: Option<SocketAddr>,
    cookie: CookieState,
    pending: Option<PendingInitiation>,
    /// Whether the initiation in `pending` carried a mac2 (we held a fresh cookie).
    pending_had_mac2: bool,
    /// The index of an initiation of ours whose message is being written elsewhere.
    initiating: Option<u32>,
    last_initiation_sent: Option<Instant>,
    handshake_attempts: u32,
    last_received_timestamp: Option<Timestamp>,
    last_initiation_received: Option<Instant>,
    keypairs: Keypairs,
    staged: Staged,
    timers: Timers,
    sent_last_minute_handshake: bool,
    stats: PeerStats,
    /// The earliest time this peer is in the interface's schedule for (see `schedule.rs`).
    pub(crate) scheduled: Option<Instant>,
}

impl Peer {
    pub(crate) fn new(id: PeerId, public: PublicKey, config: &Config) -> Self {
        Peer {
            id,
            public,
            psk: PresharedKey::none(),
            endpoint: None,
            cookie: CookieState::new(&public, config.cookie_secret_lifetime),
            pending: None,
            pending_had_mac2: false,
            initiating: None,
            last_initiation_sent: None,
            handshake_attempts: 0,
            last_received_timestamp: None,
            last_initiation_received: None,
            keypairs: Keypairs::default(),
            staged: Staged::default(),
            timers: Timers::new(),
            sent_last_minute_handshake: false,
            stats: PeerStats::default(),
            scheduled: None,
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    pub(crate) fn set_endpoint(&mut self, endpoint: Option<SocketAddr>) {
        self.endpoint = endpoint;
    }

    /// The endpoint an authenticated message came from (roaming), counted when it changes.
    fn learn_endpoint(&mut self, src: SocketAddr) {
        if self.endpoint.is_some_and(|e| e != src) {
            self.stats.endpoint_changes += 1;
        }
        self.endpoint = Some(src);
    }

    /// Changes the psk; sessions in use keep working, the next handshake uses the new key.
    pub(crate) fn set_psk(&mut self, psk: PresharedKey) {
        self.psk = psk;
    }

    pub fn has_psk(&self) -> bool {
        !self.psk.is_none()
    }

    pub fn psk(&self) -> &PresharedKey {
        &self.psk
    }

    pub fn persistent_keepalive(&self) -> Option<Duration> {
        self.timers.persistent_interval()
    }

    pub fn stats(&self) -> PeerStats {
        let mut s = self.stats.clone();
        s.queued_packets = self.staged.len();
        s.sessions = self.keypairs.count();
        s.session_created = self.keypairs.current_any().map(|k| k.created);
        s
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Removes every index this peer holds (used when the peer is removed).
    pub(crate) fn release_indices(&mut self, indices: &IndexTable) {
        if let Some(p) = self.pending.take() {
            indices.remove(p.sender_index);
        }
        if let Some(i) = self.initiating.take() {
            indices.remove(i);
        }
        self.keypairs.clear(indices);
    }

    /// Drops sessions and the handshake in flight (after a change of our static key).
    pub(crate) fn reset_sessions(&mut self, indices: &IndexTable) {
        self.release_indices(indices);
        self.timers.clear_all();
        self.handshake_attempts = 0;
        self.last_initiation_sent = None;
    }

    /// Sets the persistent keepalive interval (paper section 6.5).
    pub(crate) fn set_persistent_keepalive(
        &mut self,
        interval: Option<Duration>,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn super::Output,
    ) {
        self.timers.set_persistent_keepalive(interval, now);
        if self.timers.persistent_interval().is_some() {
            // As WireGuard does: turning it on sends one keepalive at once, which opens a
            // session if there is none.
            self.send(&[], ctx, now, out);
        }
    }

    /// Number of initiations sent in the current series (reset by a completed handshake).
    pub fn handshake_attempts(&self) -> u32 {
        self.handshake_attempts
    }

    /// True while an initiation of ours awaits its response (or is being written).
    pub fn handshake_pending(&self) -> bool {
        self.pending.is_some() || self.initiating.is_some()
    }
}
