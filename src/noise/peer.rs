//! One peer's protocol state: its keys, the handshake in flight, the three session slots
//! (current, previous, next), the queue of packets waiting for a session, and its timers.
//!
//! The interface owns the peers and hands each call a [`Context`] with what is shared (our
//! static key, the index table, the RNG, scratch space).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use super::Output;
use super::config::Config;
use super::cookie::CookieState;
use super::handshake::{self, PendingInitiation, ReceivedInitiation, TransportKeys};
use super::index::{IndexKind, IndexTable};
use super::ip;
use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::messages::{INITIATION_LEN, RESPONSE_LEN, Response};
use super::resolver::StaticStaticTable;
use super::session::{Session, SessionError, sealed_len};
use super::tai64n::{Timestamp, WallClock};
use super::timers::{TimerEvent, Timers};
use super::{ReceiveError, Received};

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

/// Counters and times reported for a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Time since the Unix epoch of the last completed handshake.
    pub last_handshake: Option<Duration>,
    pub queued_packets: usize,
    /// Sessions held (current, previous and next slots that are filled).
    pub sessions: usize,
    pub handshakes_completed: u64,
}

/// What every peer operation needs from the interface.
pub(crate) struct Context<'a> {
    pub config: &'a Config,
    pub secret: &'a StaticSecret,
    pub table: &'a Arc<StaticStaticTable>,
    pub rng: &'a mut ChaCha20Rng,
    pub clock: &'a WallClock,
    pub indices: &'a mut IndexTable,
    pub buf: &'a mut Vec<u8>,
}

impl Context<'_> {
    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
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
    last_initiation_sent: Option<Instant>,
    handshake_attempts: u32,
    last_received_timestamp: Option<Timestamp>,
    last_initiation_received: Option<Instant>,
    current: Option<Arc<Session>>,
    previous: Option<Arc<Session>>,
    next: Option<Arc<Session>>,
    queue: VecDeque<Vec<u8>>,
    timers: Timers,
    sent_last_minute_handshake: bool,
    stats: PeerStats,
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
            last_initiation_sent: None,
            handshake_attempts: 0,
            last_received_timestamp: None,
            last_initiation_received: None,
            current: None,
            previous: None,
            next: None,
            queue: VecDeque::new(),
            timers: Timers::new(),
            sent_last_minute_handshake: false,
            stats: PeerStats::default(),
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
        s.queued_packets = self.queue.len();
        s.sessions = [&self.current, &self.previous, &self.next].iter().filter(|x| x.is_some()).count();
        s
    }

    /// The session data is sent with, if it may still be used at `now`.
    pub fn current_session(&self, now: Instant, config: &Config) -> Option<&Arc<Session>> {
        self.current.as_ref().filter(|s| {
            now.saturating_duration_since(s.created) < config.reject_after_time
                && s.sent_messages() < config.reject_after_messages
        })
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Removes every index this peer holds (used when the peer is removed).
    pub(crate) fn release_indices(&mut self, indices: &mut IndexTable) {
        if let Some(p) = self.pending.take() {
            indices.remove(p.sender_index);
        }
        for s in [self.current.take(), self.previous.take(), self.next.take()].into_iter().flatten() {
            indices.remove(s.local_index);
        }
    }

    /// Drops sessions and the handshake in flight (after a change of our static key).
    pub(crate) fn reset_sessions(&mut self, indices: &mut IndexTable) {
        self.release_indices(indices);
        let interval = self.timers.persistent_interval();
        self.timers.clear_all();
        debug_assert_eq!(self.timers.persistent_interval(), interval);
        self.handshake_attempts = 0;
        self.last_initiation_sent = None;
    }

    pub(crate) fn set_persistent_keepalive(
        &mut self,
        interval: Option<Duration>,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) {
        self.timers.set_persistent_keepalive(interval, now);
        if self.timers.persistent_interval().is_some() {
            // As WireGuard does: turning it on sends one keepalive at once, which opens a
            // session if there is none.
            self.send(&[], ctx, now, out);
        }
    }

    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8], out: &mut dyn Output) {
        self.stats.tx_bytes += bytes.len() as u64;
        out.send(to, bytes);
    }

    /// Starts a handshake. Outside of retries, at most one initiation per REKEY_TIMEOUT.
    pub(crate) fn initiate(&mut self, ctx: &mut Context<'_>, now: Instant, retry: bool, out: &mut dyn Output) {
        if !retry {
            if let Some(t) = self.last_initiation_sent
                && now.saturating_duration_since(t) < ctx.config.rekey_timeout
            {
                return;
            }
            self.handshake_attempts = 0;
        }
        let Some(endpoint) = self.endpoint else { return };
        if let Some(old) = self.pending.take() {
            ctx.indices.remove(old.sender_index);
        }
        let index = ctx.indices.allocate(self.id, IndexKind::Handshake, ctx.rng);
        let seed = ctx.seed();
        let mut msg = [0u8; INITIATION_LEN];
        let ts = ctx.clock.timestamp(now);
        match handshake::write_initiation(
            ctx.secret,
            &self.public,
            &self.psk,
            index,
            ts,
            seed,
            ctx.table.clone(),
            &mut msg,
        ) {
            Ok(pending) => self.pending = Some(pending),
            Err(_) => {
                ctx.indices.remove(index);
                return;
            }
        }
        self.cookie.stamp(&mut msg, now);
        self.send_datagram(endpoint, &msg, out);
        self.handshake_attempts += 1;
        self.last_initiation_sent = Some(now);
        let jitter = ctx.jitter();
        self.timers.handshake_initiated(now, ctx.config, jitter);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_sent();
    }

    /// Encrypts and sends `packet` (empty = keepalive), or queues it and starts a handshake.
    pub(crate) fn send(
        &mut self,
        packet: &[u8],
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> SendOutcome {
        if self.queue.is_empty() && self.seal_and_send(packet, ctx, now, out) {
            return SendOutcome::Sent;
        }
        if self.queue.len() >= ctx.config.max_queued_packets {
            self.queue.pop_front();
        }
        self.queue.push_back(packet.to_vec());
        if self.current_session(now, ctx.config).is_some() {
            self.flush_queue(ctx, now, out);
            if self.queue.is_empty() {
                return SendOutcome::Sent;
            }
        }
        self.initiate(ctx, now, false, out);
        SendOutcome::Queued
    }

    /// Sends with the current session if it is usable; false if there is none (or no endpoint).
    fn seal_and_send(&mut self, packet: &[u8], ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) -> bool {
        let Some(endpoint) = self.endpoint else { return false };
        let Some(session) = self.current_session(now, ctx.config).cloned() else { return false };
        let need = sealed_len(packet.len(), ctx.config.mtu);
        if ctx.buf.len() < need {
            ctx.buf.resize(need, 0);
        }
        let n = match session.seal(packet, ctx.buf, ctx.config.mtu) {
            Ok((n, _)) => n,
            Err(SessionError::Exhausted) | Err(_) => return false,
        };
        self.stats.tx_bytes += n as u64;
        out.send(endpoint, &ctx.buf[..n]);
        if !packet.is_empty() {
            self.timers.data_sent(now, ctx.config);
        }
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_sent();
        // Keep the key fresh: rekey after enough messages, or (initiator only) after time.
        let age = now.saturating_duration_since(session.created);
        if session.sent_messages() >= ctx.config.rekey_after_messages
            || (session.we_initiated && age >= ctx.config.rekey_after_time)
        {
            self.initiate(ctx, now, false, out);
        }
        true
    }

    fn flush_queue(&mut self, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        while let Some(packet) = self.queue.pop_front() {
            if !self.seal_and_send(&packet, ctx, now, out) {
                self.queue.push_front(packet);
                break;
            }
        }
    }

    fn install_session(&mut self, session: Session, ctx: &mut Context<'_>, now: Instant) {
        let session = Arc::new(session);
        ctx.indices.insert(session.local_index, self.id, IndexKind::Session);
        if session.we_initiated {
            let demoted = match self.next.take() {
                Some(next) => {
                    if let Some(cur) = self.current.take() {
                        ctx.indices.remove(cur.local_index);
                    }
                    Some(next)
                }
                None => self.current.take(),
            };
            if let Some(old) = std::mem::replace(&mut self.previous, demoted) {
                ctx.indices.remove(old.local_index);
            }
            self.current = Some(session);
        } else if let Some(old) = self.next.replace(session) {
            ctx.indices.remove(old.local_index);
        }
        self.timers.session_derived(now, ctx.config);
    }

    fn handshake_done(&mut self, ctx: &mut Context<'_>, now: Instant) {
        self.timers.handshake_complete();
        self.handshake_attempts = 0;
        self.sent_last_minute_handshake = false;
        self.stats.last_handshake = Some(ctx.clock.unix(now));
        self.stats.handshakes_completed += 1;
    }

    /// Answers a decrypted initiation from this peer, after the replay and flood checks.
    pub(crate) fn accept_initiation(
        &mut self,
        received: ReceivedInitiation,
        src: SocketAddr,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        if let Some(last) = self.last_received_timestamp
            && received.timestamp <= last
        {
            return Err(ReceiveError::StaleTimestamp);
        }
        if let Some(t) = self.last_initiation_received
            && now.saturating_duration_since(t) < super::config::INITIATIONS_MIN_INTERVAL
        {
            return Err(ReceiveError::InitiationFlood);
        }
        let timestamp = received.timestamp;
        let remote_index = received.sender_index;
        let index = ctx.indices.allocate(self.id, IndexKind::Session, ctx.rng);
        let mut msg = [0u8; RESPONSE_LEN];
        let keys = match handshake::write_response(received, &self.psk, index, &mut msg) {
            Ok(k) => k,
            Err(e) => {
                ctx.indices.remove(index);
                return Err(ReceiveError::Handshake(e));
            }
        };
        self.last_received_timestamp = Some(timestamp);
        self.last_initiation_received = Some(now);
        self.endpoint = Some(src);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_received();
        self.install_session(self.new_session(index, remote_index, &keys, now, false, ctx), ctx, now);
        self.cookie.stamp(&mut msg, now);
        self.send_datagram(src, &msg, out);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_sent();
        Ok(Received::Initiation(self.id))
    }

    fn new_session(
        &self,
        local: u32,
        remote: u32,
        keys: &TransportKeys,
        now: Instant,
        we_initiated: bool,
        ctx: &Context<'_>,
    ) -> Session {
        Session::new(local, remote, &keys.send, &keys.recv, now, we_initiated, ctx.config.reject_after_messages)
    }

    /// Completes our handshake with the peer's response.
    pub(crate) fn accept_response(
        &mut self,
        msg: &Response<'_>,
        src: SocketAddr,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        let pending = match self.pending.as_mut() {
            Some(p) if p.sender_index == msg.receiver() => p,
            _ => return Err(ReceiveError::UnknownIndex(msg.receiver())),
        };
        let keys = handshake::read_response(pending, msg).map_err(ReceiveError::Handshake)?;
        let pending = self.pending.take().expect("pending handshake checked above");
        let session = self.new_session(pending.sender_index, msg.sender(), &keys, now, true, ctx);
        self.install_session(session, ctx, now);
        self.endpoint = Some(src);
        self.stats.rx_bytes += msg.bytes().len() as u64;
        self.handshake_done(ctx, now);
        self.timers.any_authenticated_packet_received();
        self.timers.any_authenticated_packet_traversal(now);
        // Confirm the session to the responder: queued data if any, else a keepalive.
        if self.queue.is_empty() {
            self.seal_and_send(&[], ctx, now, out);
        } else {
            self.flush_queue(ctx, now, out);
        }
        Ok(Received::Response(self.id))
    }

    pub(crate) fn accept_cookie(
        &mut self,
        reply: &super::messages::CookieReply<'_>,
        now: Instant,
    ) -> Result<Received, ReceiveError> {
        self.cookie.consume(reply, now).map_err(ReceiveError::Cookie)?;
        Ok(Received::CookieReply(self.id))
    }

    fn session_by_index(&self, index: u32) -> Option<(Arc<Session>, bool)> {
        if let Some(s) = self.current.as_ref().filter(|s| s.local_index == index) {
            return Some((s.clone(), false));
        }
        if let Some(s) = self.next.as_ref().filter(|s| s.local_index == index) {
            return Some((s.clone(), true));
        }
        self.previous.as_ref().filter(|s| s.local_index == index).map(|s| (s.clone(), false))
    }

    /// Decrypts a data message addressed to one of this peer's sessions.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive_data(
        &mut self,
        index: u32,
        counter: u64,
        datagram: &mut [u8],
        src: SocketAddr,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        let (session, is_next) = self.session_by_index(index).ok_or(ReceiveError::UnknownIndex(index))?;
        if now.saturating_duration_since(session.created) >= ctx.config.reject_after_time {
            return Err(ReceiveError::Expired);
        }
        let wire_len = datagram.len();
        let plain =
            session.open(counter, &mut datagram[super::messages::DATA_HEADER_LEN..]).map_err(ReceiveError::Session)?;
        // Authenticated from here on.
        self.endpoint = Some(src);
        self.stats.rx_bytes += wire_len as u64;
        if is_next {
            // Key confirmation: the initiator used the keypair we made as responder.
            let confirmed = self.next.take();
            if let Some(old) = std::mem::replace(&mut self.previous, self.current.take()) {
                ctx.indices.remove(old.local_index);
            }
            self.current = confirmed;
            self.handshake_done(ctx, now);
            self.flush_queue(ctx, now, out);
        }
        self.timers.any_authenticated_packet_received();
        self.timers.any_authenticated_packet_traversal(now);
        // Keep the key fresh from the receiving side: an initiator whose session nears
        // REJECT_AFTER_TIME starts a handshake once.
        if let Some(cur) = self.current.as_ref()
            && cur.we_initiated
            && !self.sent_last_minute_handshake
            && now.saturating_duration_since(cur.created) >= ctx.config.rekey_on_receive_after()
        {
            self.sent_last_minute_handshake = true;
            self.initiate(ctx, now, false, out);
        }
        if plain.is_empty() {
            return Ok(Received::Keepalive(self.id));
        }
        self.timers.data_received(now, ctx.config);
        let len = ip::packet_len(plain).ok_or(ReceiveError::InvalidPacket)?;
        out.deliver(self.id, &plain[..len]);
        Ok(Received::Data { peer: self.id, len })
    }

    /// Acts on every timer that expired by `now`.
    pub(crate) fn on_timers(&mut self, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        while let Some(event) = self.timers.expired(now, ctx.config) {
            match event {
                TimerEvent::RetransmitHandshake => {
                    if self.handshake_attempts >= ctx.config.max_handshake_attempts() {
                        // Give up: drop what waited for this handshake, erase keys later.
                        self.queue.clear();
                        if let Some(p) = self.pending.take() {
                            ctx.indices.remove(p.sender_index);
                        }
                        self.timers.ensure_zero_key_material(now, ctx.config);
                    } else {
                        self.initiate(ctx, now, true, out);
                    }
                }
                TimerEvent::SendKeepalive | TimerEvent::PersistentKeepalive => {
                    self.send(&[], ctx, now, out);
                }
                TimerEvent::NewHandshake => self.initiate(ctx, now, false, out),
                TimerEvent::ZeroKeyMaterial => {
                    self.release_indices(ctx.indices);
                    self.queue.clear();
                    self.timers.stop_retransmit();
                }
            }
        }
    }

    /// Number of initiations sent in the current series (reset by a completed handshake).
    pub fn handshake_attempts(&self) -> u32 {
        self.handshake_attempts
    }

    /// True while an initiation of ours awaits its response.
    pub fn handshake_pending(&self) -> bool {
        self.pending.is_some()
    }
}
