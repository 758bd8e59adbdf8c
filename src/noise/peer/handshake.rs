//! The peer's side of the handshake: sending initiations (at most one per REKEY_TIMEOUT outside
//! of retries), answering the peer's initiations after the replay and flood checks, completing
//! ours with its response, and taking cookies (paper sections 5.1-5.4).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::super::handshake::{PendingInitiation, TransportKeys};
use super::super::handshake_work::InitiationWork;
use super::super::messages::{CookieReply, RESPONSE_LEN, Response};
use super::super::session::Session;
use super::super::tai64n::Timestamp;
use super::super::{Output, ReceiveError, Received, config::INITIATIONS_MIN_INTERVAL};
use super::{Context, Peer};

impl Peer {
    pub(super) fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8], out: &mut dyn Output) {
        self.stats.tx_bytes += bytes.len() as u64;
        out.send(to, bytes);
    }

    /// Starts a handshake. Outside of retries, at most one initiation per REKEY_TIMEOUT. The
    /// message itself is written in place, or, where the context collects work, by whoever
    /// takes the work ([`Peer::send_initiation`] then sends it).
    pub(crate) fn initiate(&mut self, ctx: &mut Context<'_>, now: Instant, retry: bool, out: &mut dyn Output) {
        if !retry {
            if let Some(t) = self.last_initiation_sent
                && now.saturating_duration_since(t) < ctx.config.rekey_timeout
            {
                return;
            }
            self.handshake_attempts = 0;
        }
        if self.endpoint.is_none() {
            return;
        }
        self.handshake_attempts += 1;
        self.start_initiation(ctx, now, out);
    }

    /// A fresh initiation (new index, ephemeral and timestamp, as every retry in the kernel's
    /// `wg_packet_send_handshake_initiation`), written in place or left as work.
    fn start_initiation(&mut self, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        let Some(endpoint) = self.endpoint else { return };
        if let Some(old) = self.pending.take() {
            ctx.indices.remove(old.sender_index);
        }
        if let Some(old) = self.initiating.take() {
            ctx.indices.remove(old);
        }
        let index = ctx.indices.allocate(self.id, ctx.rng);
        let seed = ctx.seed();
        let timestamp = ctx.clock.timestamp(now);
        self.initiating = Some(index);
        self.last_initiation_sent = Some(now);
        let jitter = ctx.jitter();
        self.timers.handshake_initiated(now, ctx.config, jitter);
        let _ = endpoint; // the endpoint when it is sent counts, not this one
        let work = InitiationWork {
            peer: self.id,
            secret: ctx.secret.clone(),
            remote: self.public,
            psk: self.psk.clone(),
            index,
            timestamp,
            seed,
            table: ctx.table.clone(),
            result: None,
        };
        match ctx.work.as_deref_mut() {
            Some(queue) => queue.push(work),
            None => {
                let mut work = work;
                work.run();
                self.send_initiation(work, ctx, now, out);
            }
        }
    }

    /// Sends an initiation whose message [`Peer::initiate`] left to be written and that was
    /// written since, unless a newer one replaced it meanwhile (then its index goes).
    pub(crate) fn send_initiation(
        &mut self,
        work: InitiationWork,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) {
        let InitiationWork { index, result, .. } = work;
        if self.initiating != Some(index) {
            ctx.indices.remove(index);
            return;
        }
        self.initiating = None;
        let (Some(Ok((pending, mut msg))), Some(endpoint)) = (result, self.endpoint) else {
            ctx.indices.remove(index);
            return;
        };
        self.pending = Some(pending);
        self.pending_had_mac2 = self.cookie.has_fresh_cookie(now);
        self.cookie.stamp(&mut msg, now);
        self.stats.handshakes_initiated += 1;
        self.send_datagram(endpoint, &msg, out);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_sent();
    }

    fn new_session(
        &self,
        local: u32,
        remote: u32,
        keys: &TransportKeys,
        now: Instant,
        we_initiated: bool,
        ctx: &Context<'_>,
    ) -> Arc<Session> {
        Arc::new(Session::new(
            local,
            remote,
            &keys.send,
            &keys.recv,
            now,
            we_initiated,
            ctx.config.reject_after_messages,
            ctx.config.reject_after_time,
        ))
    }

    fn install_session(&mut self, session: Arc<Session>, ctx: &mut Context<'_>, now: Instant) {
        self.keypairs.install(session, self.id, ctx.indices);
        self.timers.session_derived(now, ctx.config);
    }

    pub(super) fn handshake_done(&mut self, ctx: &mut Context<'_>, now: Instant) {
        self.timers.handshake_complete();
        self.handshake_attempts = 0;
        self.sent_last_minute_handshake = false;
        self.stats.last_handshake = Some(ctx.clock.unix(now));
        self.stats.handshakes_completed += 1;
    }

    /// The replay and flood checks for a decrypted initiation from this peer (paper section
    /// 5.1: the TAI64N timestamp must be newer than the last accepted one, and at most one
    /// initiation per 1/50 s). When it passes, its timestamp becomes the one to beat, so a
    /// copy of it is refused from now on, even while its response is still being computed.
    pub(crate) fn check_initiation(&mut self, timestamp: Timestamp, now: Instant) -> Result<(), ReceiveError> {
        if let Some(last) = self.last_received_timestamp
            && timestamp <= last
        {
            return Err(ReceiveError::StaleTimestamp);
        }
        if let Some(t) = self.last_initiation_received
            && now.saturating_duration_since(t) < INITIATIONS_MIN_INTERVAL
        {
            return Err(ReceiveError::InitiationFlood);
        }
        self.last_received_timestamp = Some(timestamp);
        self.last_initiation_received = Some(now);
        Ok(())
    }

    /// Sends the response `msg` (written for this peer's initiation from `src`, with our index
    /// `index` and the initiator's `remote_index`) and installs the session it made, which waits
    /// for key confirmation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer_initiation(
        &mut self,
        index: u32,
        remote_index: u32,
        keys: &TransportKeys,
        mut msg: [u8; RESPONSE_LEN],
        src: SocketAddr,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        self.learn_endpoint(src);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_received();
        let session = self.new_session(index, remote_index, keys, now, false, ctx);
        self.install_session(session, ctx, now);
        self.cookie.stamp(&mut msg, now);
        self.send_datagram(src, &msg, out);
        self.timers.any_authenticated_packet_traversal(now);
        self.timers.any_authenticated_packet_sent();
        Ok(Received::Initiation(self.id))
    }

    /// Takes our pending initiation out if `receiver` names it, to read its response without
    /// the interface's lock; give it back with [`Peer::restore_pending`] if that fails.
    pub(crate) fn take_pending(&mut self, receiver: u32) -> Option<PendingInitiation> {
        self.pending.take_if(|p| p.sender_index == receiver)
    }

    /// Puts back a pending initiation whose response did not decrypt (a forged response must
    /// not spoil the real one), unless a newer initiation replaced it meanwhile: then its index
    /// is released.
    pub(crate) fn restore_pending(&mut self, pending: PendingInitiation, ctx: &mut Context<'_>) {
        if self.pending.is_none() && self.initiating.is_none() {
            self.pending = Some(pending);
        } else {
            ctx.indices.remove(pending.sender_index);
        }
    }

    /// Completes our handshake with the keys read from the peer's response to `pending`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn complete(
        &mut self,
        pending: PendingInitiation,
        keys: &TransportKeys,
        msg: &Response<'_>,
        src: SocketAddr,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        if self.pending.is_some() || self.initiating.is_some() {
            // A newer initiation went out while this response was being read: it supersedes
            // this one, whose index goes.
            ctx.indices.remove(pending.sender_index);
            return Err(ReceiveError::UnknownIndex(msg.receiver()));
        }
        let session = self.new_session(pending.sender_index, msg.sender(), keys, now, true, ctx);
        self.install_session(session, ctx, now);
        self.learn_endpoint(src);
        self.stats.rx_bytes += msg.bytes().len() as u64;
        self.handshake_done(ctx, now);
        self.timers.any_authenticated_packet_received();
        self.timers.any_authenticated_packet_traversal(now);
        // Confirm the session to the responder: staged data if any, else a keepalive.
        if self.staged.is_empty() {
            self.seal_and_send(&[], ctx, now, out);
        } else {
            self.flush_staged(ctx, now, out);
        }
        Ok(Received::Response(self.id))
    }

    /// Takes the cookie of a reply to our last handshake message (paper section 5.4.7). When it
    /// answers our outstanding initiation and that initiation had no mac2 (we held no cookie),
    /// a fresh initiation with mac2 goes out at once instead of at the retry timer, REKEY_TIMEOUT
    /// later (no other implementation does this; why it is safe: docs/architecture.md,
    /// "Floods"). At most one per initiation sent without mac2, so at most one per cookie reply:
    /// the re-sent initiation carries mac2, and the reply no longer names it (new index) nor
    /// decrypts against its mac1. It does not count as a retry, so REKEY_ATTEMPT_TIME is
    /// unchanged.
    pub(crate) fn accept_cookie(
        &mut self,
        reply: &CookieReply<'_>,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Result<Received, ReceiveError> {
        self.cookie.consume(reply, now).map_err(ReceiveError::Cookie)?;
        self.stats.cookies_received += 1;
        let answers_our_initiation = self.pending.as_ref().is_some_and(|p| p.sender_index == reply.receiver());
        if answers_our_initiation && !self.pending_had_mac2 {
            self.start_initiation(ctx, now, out);
        }
        Ok(Received::CookieReply(self.id))
    }
}
