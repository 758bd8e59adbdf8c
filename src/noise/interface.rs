//! A WireGuard interface's protocol state: our static key, the peers, the receiver-index table
//! and the cookie checker. It dispatches incoming datagrams by message type and drives every
//! peer's timers. It does no I/O: datagrams to send and packets to deliver go to an
//! [`Output`], and [`Interface::next_deadline`] says when to call [`Interface::tick`] again.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::config::Config;
use super::cookie::{CookieChecker, MacCheck};
use super::handshake;
use super::index::{IndexKind, IndexTable};
use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::messages::{self, Message};
use super::peer::{Context, Peer, PeerId, PeerStats, SendOutcome};
use super::resolver::StaticStaticTable;
use super::tai64n::WallClock;
use super::{Output, ReceiveError, Received};

/// Why a peer could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerError {
    /// A peer with this public key exists already.
    Duplicate(PeerId),
    /// The key is our own public key.
    OwnKey,
    /// The key has small order.
    LowOrder,
    /// No peer with this id.
    Unknown,
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Duplicate(_) => f.write_str("a peer with this public key exists"),
            PeerError::OwnKey => f.write_str("a peer cannot have the interface's own public key"),
            PeerError::LowOrder => f.write_str("public key has small order"),
            PeerError::Unknown => f.write_str("no such peer"),
        }
    }
}

impl std::error::Error for PeerError {}

pub struct Interface {
    secret: StaticSecret,
    public: PublicKey,
    config: Config,
    clock: WallClock,
    rng: ChaCha20Rng,
    table: Arc<StaticStaticTable>,
    checker: CookieChecker,
    indices: IndexTable,
    peers: BTreeMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    next_id: u32,
    buf: Vec<u8>,
}

macro_rules! context {
    ($self:ident) => {
        Context {
            config: &$self.config,
            secret: &$self.secret,
            table: &$self.table,
            rng: &mut $self.rng,
            clock: &$self.clock,
            indices: &mut $self.indices,
            buf: &mut $self.buf,
        }
    };
}

impl Interface {
    /// A new interface. `seed` feeds every random choice (indices, ephemerals, jitter, cookie
    /// secrets); pass 32 bytes from the OS RNG in production and a fixed seed in tests.
    pub fn new(secret: StaticSecret, config: Config, clock: WallClock, seed: [u8; 32]) -> Self {
        let public = secret.public_key();
        Interface {
            table: Arc::new(StaticStaticTable::new(secret.as_bytes())),
            checker: CookieChecker::new(&public, config.cookie_secret_lifetime),
            secret,
            public,
            config,
            clock,
            rng: ChaCha20Rng::from_seed(seed),
            indices: IndexTable::new(),
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            buf: vec![0u8; 2048],
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub fn private_key(&self) -> &StaticSecret {
        &self.secret
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the protocol parameters (they apply to sessions made from now on).
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
    }

    /// Replaces our static key. Every session and handshake is dropped (they were made with the
    /// old key); peers, their settings and queued packets stay. A peer whose public key is the
    /// new key's own public key is removed, since an interface cannot be its own peer.
    /// Setting the key already in use changes nothing (`wg syncconf` resends it every time).
    pub fn set_private_key(&mut self, secret: StaticSecret) {
        if secret == self.secret {
            return;
        }
        let public = secret.public_key();
        if let Some(own) = self.by_key.get(&public).copied() {
            let _ = self.remove_peer(own);
        }
        let mut table = StaticStaticTable::new(secret.as_bytes());
        for key in self.by_key.keys() {
            table.insert(key.as_bytes());
        }
        self.table = Arc::new(table);
        self.checker = CookieChecker::new(&public, self.config.cookie_secret_lifetime);
        self.secret = secret;
        self.public = public;
        for peer in self.peers.values_mut() {
            peer.reset_sessions(&mut self.indices);
        }
    }

    pub fn add_peer(&mut self, public: PublicKey) -> Result<PeerId, PeerError> {
        if let Some(id) = self.by_key.get(&public) {
            return Err(PeerError::Duplicate(*id));
        }
        if public.ct_eq(&self.public) {
            return Err(PeerError::OwnKey);
        }
        if !Arc::make_mut(&mut self.table).insert(public.as_bytes()) {
            return Err(PeerError::LowOrder);
        }
        let id = PeerId(self.next_id);
        self.next_id += 1;
        self.peers.insert(id, Peer::new(id, public, &self.config));
        self.by_key.insert(public, id);
        Ok(id)
    }

    /// Removes a peer and erases its keys and queued packets.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<(), PeerError> {
        let mut peer = self.peers.remove(&id).ok_or(PeerError::Unknown)?;
        peer.release_indices(&mut self.indices);
        self.by_key.remove(&peer.public);
        Arc::make_mut(&mut self.table).remove(peer.public.as_bytes());
        Ok(())
    }

    pub fn peer_by_key(&self, public: &PublicKey) -> Option<PeerId> {
        self.by_key.get(public).copied()
    }

    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }

    pub fn stats(&self, id: PeerId) -> Option<PeerStats> {
        self.peers.get(&id).map(|p| p.stats())
    }

    fn peer_mut(&mut self, id: PeerId) -> Result<&mut Peer, PeerError> {
        self.peers.get_mut(&id).ok_or(PeerError::Unknown)
    }

    pub fn set_psk(&mut self, id: PeerId, psk: Option<PresharedKey>) -> Result<(), PeerError> {
        self.peer_mut(id)?.set_psk(psk.unwrap_or_else(PresharedKey::none));
        Ok(())
    }

    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) -> Result<(), PeerError> {
        self.peer_mut(id)?.set_endpoint(endpoint);
        Ok(())
    }

    /// Sets the persistent keepalive interval (`None` or zero turns it off). Turning it on
    /// sends a keepalive at once.
    pub fn set_persistent_keepalive(
        &mut self,
        id: PeerId,
        interval: Option<Duration>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<(), PeerError> {
        let peer = self.peers.get_mut(&id).ok_or(PeerError::Unknown)?;
        let mut ctx = context!(self);
        peer.set_persistent_keepalive(interval, &mut ctx, now, out);
        Ok(())
    }

    /// Sends an IP packet to a peer (an empty packet is a keepalive). Without a usable session
    /// the packet is queued and a handshake started.
    pub fn send(
        &mut self,
        id: PeerId,
        packet: &[u8],
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<SendOutcome, PeerError> {
        let peer = self.peers.get_mut(&id).ok_or(PeerError::Unknown)?;
        let mut ctx = context!(self);
        Ok(peer.send(packet, &mut ctx, now, out))
    }

    /// Starts a handshake with a peer now (subject to the one-per-REKEY_TIMEOUT rule).
    pub fn initiate(&mut self, id: PeerId, now: Instant, out: &mut dyn Output) -> Result<(), PeerError> {
        let peer = self.peers.get_mut(&id).ok_or(PeerError::Unknown)?;
        let mut ctx = context!(self);
        peer.initiate(&mut ctx, now, false, out);
        Ok(())
    }

    /// Handles one datagram from `src`. Data messages are decrypted in place in `datagram`.
    /// `under_load` makes handshake messages without a valid mac2 get a cookie reply (passed
    /// to `out`) instead of an answer.
    pub fn receive(
        &mut self,
        src: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        let (kind, index, counter) = match messages::parse(datagram).map_err(ReceiveError::Parse)? {
            Message::Data(d) => (messages::TYPE_DATA, d.receiver(), d.counter()),
            Message::Initiation(init) => return self.receive_initiation(src, &init, now, under_load, out),
            Message::Response(resp) => return self.receive_response(src, &resp, now, under_load, out),
            Message::CookieReply(reply) => {
                let (id, _) = self.indices.get(reply.receiver()).ok_or(ReceiveError::UnknownIndex(reply.receiver()))?;
                let peer = self.peers.get_mut(&id).ok_or(ReceiveError::UnknownIndex(reply.receiver()))?;
                return peer.accept_cookie(&reply, now);
            }
        };
        debug_assert_eq!(kind, messages::TYPE_DATA);
        let (id, ikind) = self.indices.get(index).ok_or(ReceiveError::UnknownIndex(index))?;
        if ikind != IndexKind::Session {
            return Err(ReceiveError::UnknownIndex(index));
        }
        let peer = self.peers.get_mut(&id).ok_or(ReceiveError::UnknownIndex(index))?;
        let mut ctx = context!(self);
        peer.receive_data(index, counter, datagram, src, &mut ctx, now, out)
    }

    fn check_macs(
        &mut self,
        msg: &[u8],
        sender: u32,
        src: SocketAddr,
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<(), ReceiveError> {
        match self.checker.check(msg, &src, now, under_load, &mut self.rng) {
            MacCheck::Ok => Ok(()),
            MacCheck::BadMac1 => Err(ReceiveError::BadMac1),
            MacCheck::BadMac2 => {
                let reply = self.checker.reply(msg, sender, &src, now, &mut self.rng);
                out.send(src, &reply);
                Err(ReceiveError::CookieRequired)
            }
        }
    }

    fn receive_initiation(
        &mut self,
        src: SocketAddr,
        init: &messages::Initiation<'_>,
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        self.check_macs(init.bytes(), init.sender(), src, now, under_load, out)?;
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let received = handshake::read_initiation(&self.secret, init, seed, self.table.clone())
            .map_err(ReceiveError::Handshake)?;
        let id = self.by_key.get(&received.peer).copied().ok_or(ReceiveError::UnknownPeer)?;
        let peer = self.peers.get_mut(&id).ok_or(ReceiveError::UnknownPeer)?;
        let mut ctx = context!(self);
        peer.accept_initiation(received, src, &mut ctx, now, out)
    }

    fn receive_response(
        &mut self,
        src: SocketAddr,
        resp: &messages::Response<'_>,
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        let (id, kind) = self.indices.get(resp.receiver()).ok_or(ReceiveError::UnknownIndex(resp.receiver()))?;
        if kind != IndexKind::Handshake {
            return Err(ReceiveError::UnknownIndex(resp.receiver()));
        }
        self.check_macs(resp.bytes(), resp.sender(), src, now, under_load, out)?;
        let peer = self.peers.get_mut(&id).ok_or(ReceiveError::UnknownIndex(resp.receiver()))?;
        let mut ctx = context!(self);
        peer.accept_response(resp, src, &mut ctx, now, out)
    }

    /// Acts on every timer that is due at `now`, for every peer.
    pub fn tick(&mut self, now: Instant, out: &mut dyn Output) {
        let mut ctx = context!(self);
        for peer in self.peers.values_mut() {
            if peer.next_deadline().is_some_and(|t| t <= now) {
                peer.on_timers(&mut ctx, now, out);
            }
        }
    }

    /// When [`Interface::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.next_deadline()).min()
    }

    /// Number of receiver indices in use (handshakes in flight plus sessions).
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }
}
