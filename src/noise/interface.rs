//! A WireGuard interface's protocol state: our static key, the peers, the receiver-index table
//! and the cookie checker. It dispatches incoming datagrams by message type and drives every
//! peer's timers. It does no I/O: datagrams to send and packets to deliver go to an
//! [`Output`], and [`Interface::next_deadline`] says when to call [`Interface::tick`] again.
//!
//! Besides the one-datagram entry points ([`Interface::send`], [`Interface::receive`]) it has
//! the two halves of a batched data path whose cryptography runs outside the caller's lock:
//! [`Interface::plan_send`] reserves counters for a peer's batch of packets, and
//! [`Interface::received`] takes the bookkeeping of a batch opened through
//! [`Interface::index_reader`]. Each is called once per peer per batch, never per packet.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::config::Config;
use super::gate::{Gate, GateHandle};
use super::handshake::HandshakeError;
use super::handshake_work::{HandshakeWork, InitiationWork, Work};
use super::index::{IndexKind, IndexReader, IndexTable};
use super::ip;
use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::messages::{self, INITIATION_LEN, Message, RESPONSE_LEN};
use super::peer::{Context, Peer, PeerId, PeerStats, ReceivedData, SealPlan, SendOutcome};
use super::resolver::StaticStaticTable;
use super::schedule::Schedule;
use super::tai64n::WallClock;
use super::{Output, ReceiveError, Received};

/// What became of a handshake message so far: finished, or work to do before
/// [`Interface::resume`] can go on.
pub enum Step {
    Done(Result<Received, ReceiveError>),
    /// Boxed: the work (snow's handshake state) is over a kilobyte.
    Work(Box<HandshakeWork>),
}

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
    gate: GateHandle,
    indices: IndexTable,
    schedule: Schedule,
    peers: BTreeMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    next_id: u32,
    buf: Vec<u8>,
    /// Initiations' public-key work is handed out (see [`Interface::set_defer_work`]).
    defer_work: bool,
    work: Vec<InitiationWork>,
}

macro_rules! context {
    ($self:ident) => {
        Context {
            config: &$self.config,
            secret: &$self.secret,
            table: &$self.table,
            rng: &mut $self.rng,
            clock: &$self.clock,
            indices: &$self.indices,
            buf: &mut $self.buf,
            work: if $self.defer_work { Some(&mut $self.work) } else { None },
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
            gate: GateHandle(std::sync::Arc::new(std::sync::Mutex::new(Gate::new(
                &public,
                config.cookie_secret_lifetime,
                super::crypto::hash(&[&b"veil gate"[..], &seed[..]]),
            )))),
            secret,
            public,
            config,
            clock,
            rng: ChaCha20Rng::from_seed(seed),
            indices: IndexTable::new(),
            schedule: Schedule::default(),
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            buf: vec![0u8; 2048],
            defer_work: false,
            work: Vec::new(),
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Cookie replies sent since the interface was made.
    pub fn cookies_sent(&self) -> u64 {
        self.gate.lock().cookies_sent()
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
        let table = StaticStaticTable::new(secret.as_bytes());
        for key in self.by_key.keys() {
            table.insert(key.as_bytes());
        }
        self.table = Arc::new(table);
        self.gate.lock().set_public(&public, self.config.cookie_secret_lifetime);
        self.secret = secret;
        self.public = public;
        for peer in self.peers.values_mut() {
            peer.reset_sessions(&self.indices);
            peer.scheduled = None;
        }
        self.schedule.clear();
        for id in self.peer_ids() {
            self.arm(id);
        }
    }

    /// Puts peer `id` in the schedule for its next deadline (after anything that may have
    /// moved it earlier).
    fn arm(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.get_mut(&id) {
            self.schedule.arm(id, peer.next_deadline(), &mut peer.scheduled);
        }
    }

    pub fn add_peer(&mut self, public: PublicKey) -> Result<PeerId, PeerError> {
        if let Some(id) = self.by_key.get(&public) {
            return Err(PeerError::Duplicate(*id));
        }
        if public.ct_eq(&self.public) {
            return Err(PeerError::OwnKey);
        }
        if !self.table.insert(public.as_bytes()) {
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
        peer.release_indices(&self.indices);
        self.by_key.remove(&peer.public);
        self.table.remove(peer.public.as_bytes());
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
        self.arm(id);
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
        let outcome = peer.send(packet, &mut ctx, now, out);
        self.arm(id);
        Ok(outcome)
    }

    /// Plans sending a batch of packets with the given lengths (in bytes, IP packets; 0 for a
    /// keepalive) to peer `id`: reserves one send counter per packet in the current session and
    /// does, once, the bookkeeping of sending them (counters, timers, rekey rules). The caller
    /// seals packet `i` with `plan.first_counter + i` ([`crate::noise::session::Session::seal_at`])
    /// outside its lock and sends the datagrams to `plan.endpoint`.
    ///
    /// `Ok(None)` when the batch cannot go now (no usable session, no endpoint, or packets staged
    /// before it still waiting): hand each packet to [`Interface::send`] instead, which stages it
    /// and starts a handshake. Datagrams the core sends meanwhile (a rekey initiation, packets
    /// staged earlier) go to `out` before the call returns.
    pub fn plan_send(
        &mut self,
        id: PeerId,
        packet_lens: impl IntoIterator<Item = usize>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Option<SealPlan>, PeerError> {
        let peer = self.peers.get_mut(&id).ok_or(PeerError::Unknown)?;
        let mut ctx = context!(self);
        let plan = peer.plan_send(packet_lens, &mut ctx, now, out);
        self.arm(id);
        Ok(plan)
    }

    /// A handle through which the data path finds the session of each incoming data message
    /// without this interface's lock (see [`IndexReader`]). Datagrams opened with it are
    /// reported back through [`Interface::received`].
    pub fn index_reader(&self) -> IndexReader {
        self.indices.reader()
    }

    /// Takes the bookkeeping for data messages from peer `id` that the data path opened
    /// (authenticated, replay-checked) under one session: endpoint, byte counters, key
    /// confirmation of a responder's session, timers and the rekey-on-receive rule. Packets
    /// staged for the peer may be sent to `out` (when this confirms a session).
    pub fn received(&mut self, id: PeerId, data: &ReceivedData, now: Instant, out: &mut dyn Output) {
        let Some(peer) = self.peers.get_mut(&id) else { return };
        let mut ctx = context!(self);
        peer.received(data, &mut ctx, now, out);
        self.arm(id);
    }

    /// Starts a handshake with a peer now (subject to the one-per-REKEY_TIMEOUT rule).
    pub fn initiate(&mut self, id: PeerId, now: Instant, out: &mut dyn Output) -> Result<(), PeerError> {
        let peer = self.peers.get_mut(&id).ok_or(PeerError::Unknown)?;
        let mut ctx = context!(self);
        peer.initiate(&mut ctx, now, false, out);
        self.arm(id);
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
        let (index, counter) = match messages::parse(datagram).map_err(ReceiveError::Parse)? {
            Message::Data(d) => (d.receiver(), d.counter()),
            _ => {
                // A handshake message: its steps one after the other, on this thread.
                let mut step = self.receive_handshake(src, datagram, now, under_load, out);
                loop {
                    match step {
                        Step::Done(result) => return result,
                        Step::Work(mut work) => {
                            work.run();
                            step = self.resume(work, now, out);
                        }
                    }
                }
            }
        };
        let (id, session) = {
            let sessions = self.indices.reader();
            let sessions = sessions.lock();
            let (id, session) = sessions.get(index).ok_or(ReceiveError::UnknownIndex(index))?;
            (id, session.clone())
        };
        if session.expired(now) {
            return Err(ReceiveError::Expired);
        }
        let wire_len = datagram.len();
        let plain = session.open(counter, &mut datagram[messages::DATA_HEADER_LEN..]).map_err(ReceiveError::Session)?;
        // Authenticated from here on.
        let len = if plain.is_empty() { None } else { Some(ip::packet_len(plain)) };
        let data = ReceivedData { index, src, bytes: wire_len as u64, packets: u64::from(len.is_some()) };
        self.received(id, &data, now, out);
        match len {
            None => Ok(Received::Keepalive(id)),
            Some(None) => Err(ReceiveError::InvalidPacket),
            Some(Some(len)) => {
                out.deliver(id, &datagram[messages::DATA_HEADER_LEN..messages::DATA_HEADER_LEN + len]);
                Ok(Received::Data { peer: id, len })
            }
        }
    }

    /// The gate's checks, unless `under_load` is `None` (the caller ran them already).
    fn check_macs(
        &mut self,
        msg: &[u8],
        sender: u32,
        src: SocketAddr,
        now: Instant,
        under_load: Option<bool>,
        out: &mut dyn Output,
    ) -> Result<(), ReceiveError> {
        match under_load {
            Some(load) => self.gate.lock().check_macs(msg, sender, src, now, load, out),
            None => Ok(()),
        }
    }

    /// The checks every handshake message passes first ([`Gate`]), under a lock of their own:
    /// an engine runs [`Gate::check`] for each message without this interface's lock and hands
    /// only those that pass to [`Interface::receive_checked_handshake`].
    pub fn gate(&self) -> GateHandle {
        self.gate.clone()
    }

    /// [`Interface::receive_handshake`] for a datagram that passed [`Gate::check`] already (with
    /// the same `under_load`): the same steps without the gate's checks.
    pub fn receive_checked_handshake(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        out: &mut dyn Output,
    ) -> Step {
        self.handshake_step(src, datagram, now, None, out)
    }

    /// First step of handling a handshake message (types 1-3) from `src`: parses it, checks
    /// mac1 (and, `under_load`, mac2: without a valid one a cookie reply goes to `out`; with
    /// one, the source's rate limit, see [`super::ratelimit`]), and
    /// takes a cookie reply in. What needs public-key operations comes back as
    /// [`Step::Work`]: [run](HandshakeWork::run) it, without this interface's lock if there is
    /// one, and give it back to [`Interface::resume`]. [`Interface::receive`] does all of this
    /// in one call.
    pub fn receive_handshake(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Step {
        self.handshake_step(src, datagram, now, Some(under_load), out)
    }

    fn handshake_step(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        under_load: Option<bool>,
        out: &mut dyn Output,
    ) -> Step {
        let done = |r| Step::Done(Err(r));
        match messages::parse(datagram) {
            Err(e) => done(ReceiveError::Parse(e)),
            Ok(Message::Data(d)) => done(ReceiveError::UnknownIndex(d.receiver())),
            Ok(Message::CookieReply(reply)) => {
                let Some(id) = self.indices.peer(reply.receiver()) else {
                    return done(ReceiveError::UnknownIndex(reply.receiver()));
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    return done(ReceiveError::UnknownIndex(reply.receiver()));
                };
                let mut ctx = context!(self);
                let r = peer.accept_cookie(&reply, &mut ctx, now, out);
                self.arm(id);
                Step::Done(r)
            }
            Ok(Message::Initiation(init)) => {
                if let Err(e) = self.check_macs(init.bytes(), init.sender(), src, now, under_load, out) {
                    return done(e);
                }
                let mut seed = zeroize::Zeroizing::new([0u8; 32]);
                self.rng.fill_bytes(&mut seed[..]);
                let mut msg = [0u8; INITIATION_LEN];
                msg.copy_from_slice(init.bytes());
                Step::Work(Box::new(HandshakeWork {
                    src,
                    state: Work::ReadInitiation {
                        msg,
                        secret: self.secret.clone(),
                        table: self.table.clone(),
                        seed,
                        result: None,
                    },
                }))
            }
            Ok(Message::Response(resp)) => {
                let receiver = resp.receiver();
                let Some((id, IndexKind::Handshake)) = self.indices.get(receiver) else {
                    return done(ReceiveError::UnknownIndex(receiver));
                };
                if let Err(e) = self.check_macs(resp.bytes(), resp.sender(), src, now, under_load, out) {
                    return done(e);
                }
                let Some(pending) = self.peers.get_mut(&id).and_then(|p| p.take_pending(receiver)) else {
                    return done(ReceiveError::UnknownIndex(receiver));
                };
                let mut msg = [0u8; RESPONSE_LEN];
                msg.copy_from_slice(resp.bytes());
                Step::Work(Box::new(HandshakeWork {
                    src,
                    state: Work::ReadResponse { peer: id, msg, pending, result: None },
                }))
            }
        }
    }

    /// Takes back [`HandshakeWork`] that was [run](HandshakeWork::run): checks its result
    /// against the interface as it is now and finishes the message (the response sent, the
    /// session installed) or hands out the next piece of work.
    pub fn resume(&mut self, work: Box<HandshakeWork>, now: Instant, out: &mut dyn Output) -> Step {
        let src = work.src;
        match work.state {
            Work::ReadInitiation { result, .. } => {
                let received = match result {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => return Step::Done(Err(ReceiveError::Handshake(e))),
                    None => return Step::Done(Err(ReceiveError::Handshake(HandshakeError::Internal))),
                };
                let Some(id) = self.by_key.get(&received.peer).copied() else {
                    return Step::Done(Err(ReceiveError::UnknownPeer));
                };
                let Some(peer) = self.peers.get_mut(&id) else { return Step::Done(Err(ReceiveError::UnknownPeer)) };
                if let Err(e) = peer.check_initiation(received.timestamp, now) {
                    return Step::Done(Err(e));
                }
                let psk = peer.psk().clone();
                let remote_index = received.sender_index;
                let index = self.indices.allocate(id, &mut self.rng);
                Step::Work(Box::new(HandshakeWork {
                    src,
                    state: Work::WriteResponse {
                        peer: id,
                        received: Some(received),
                        remote_index,
                        psk,
                        index,
                        result: None,
                    },
                }))
            }
            Work::WriteResponse { peer: id, remote_index, index, result, .. } => {
                let Some(Ok((msg, keys))) = result else {
                    self.indices.remove(index);
                    let e = match result {
                        Some(Err(e)) => e,
                        _ => HandshakeError::Internal,
                    };
                    return Step::Done(Err(ReceiveError::Handshake(e)));
                };
                // The peer may have gone meanwhile, taking its indices but not this one.
                if self.indices.peer(index) != Some(id) || !self.peers.contains_key(&id) {
                    self.indices.remove(index);
                    return Step::Done(Err(ReceiveError::UnknownPeer));
                }
                let peer = self.peers.get_mut(&id).expect("checked above");
                let mut ctx = context!(self);
                let r = peer.answer_initiation(index, remote_index, &keys, msg, src, &mut ctx, now, out);
                self.arm(id);
                Step::Done(r)
            }
            Work::ReadResponse { peer: id, msg, pending, result } => {
                let Ok(Message::Response(resp)) = messages::parse(&msg[..]) else {
                    return Step::Done(Err(ReceiveError::Handshake(HandshakeError::Internal)));
                };
                let Some(peer) = self.peers.get_mut(&id) else {
                    // Removed meanwhile (with its indices, but not this one, which was out).
                    self.indices.remove(pending.sender_index);
                    return Step::Done(Err(ReceiveError::UnknownIndex(resp.receiver())));
                };
                let mut ctx = context!(self);
                let r = match result {
                    Some(Ok(keys)) => peer.complete(pending, &keys, &resp, src, &mut ctx, now, out),
                    other => {
                        peer.restore_pending(pending, &mut ctx);
                        Err(ReceiveError::Handshake(match other {
                            Some(Err(e)) => e,
                            _ => HandshakeError::Internal,
                        }))
                    }
                };
                self.arm(id);
                Step::Done(r)
            }
        }
    }

    /// Acts on every timer that is due at `now`. Costs O(log n) per peer that is due (or whose
    /// deadline moved), not a pass over all peers.
    pub fn tick(&mut self, now: Instant, out: &mut dyn Output) {
        while let Some((at, id)) = self.schedule.pop_due(now) {
            let Some(peer) = self.peers.get_mut(&id) else { continue };
            if peer.scheduled != Some(at) {
                continue; // an entry superseded by an earlier one
            }
            peer.scheduled = None;
            if peer.next_deadline().is_some_and(|t| t <= now) {
                let mut ctx = context!(self);
                peer.on_timers(&mut ctx, now, out);
            }
            self.arm(id);
        }
    }

    /// When [`Interface::tick`] has something to do next (at the latest; it may find nothing
    /// due then, when a deadline moved later since). O(1).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.schedule.next()
    }

    /// With `on`, an initiation this interface starts (a first packet, a rekey, a retry, a
    /// keepalive) does not write its message in place: its public-key work (about 60 us of
    /// X25519) waits in [`Interface::take_work`] for the caller to run without its lock and
    /// give back to [`Interface::send_initiation`]. Off by default: everything happens within
    /// the call that started it.
    pub fn set_defer_work(&mut self, on: bool) {
        self.defer_work = on;
    }

    /// The initiations whose messages wait to be written (see [`Interface::set_defer_work`]).
    pub fn take_work(&mut self) -> Vec<InitiationWork> {
        std::mem::take(&mut self.work)
    }

    /// Sends an initiation from [`Interface::take_work`] once its work was
    /// [run](InitiationWork::run), unless the peer is gone or a newer initiation replaced it
    /// meanwhile (its index is then released).
    pub fn send_initiation(&mut self, work: InitiationWork, now: Instant, out: &mut dyn Output) {
        let id = work.peer;
        let Some(peer) = self.peers.get_mut(&id) else {
            self.indices.remove(work.index);
            return;
        };
        let mut ctx = context!(self);
        peer.send_initiation(work, &mut ctx, now, out);
        self.arm(id);
    }

    /// Number of receiver indices in use (handshakes in flight plus sessions).
    pub fn index_count(&self) -> usize {
        self.indices.len()
    }
}
