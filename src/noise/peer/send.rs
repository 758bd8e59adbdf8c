//! Sending data to the peer: one packet at a time (sealed here, under the caller's lock), or a
//! batch planned here and sealed by the caller outside the lock with counters reserved for it
//! (the kernel's send.c splits the same way: counters are taken in order, encryption runs on
//! any core). Either way the timers hear of it once and the rekey rules of section 6.2 apply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::super::Output;
use super::super::session::{Session, sealed_len};
use super::{Context, Peer, PeerId, SendOutcome};

/// A batch of packets for one peer, to be sealed outside the core's lock: packet `i` of the
/// batch (in the order its lengths were given to [`crate::noise::Interface::plan_send`]) is
/// sealed with counter `first_counter + i` by [`Session::seal_at`] and sent to `endpoint`.
pub struct SealPlan {
    pub peer: PeerId,
    pub endpoint: SocketAddr,
    pub session: Arc<Session>,
    pub first_counter: u64,
    /// Padding is capped at this length (the tunnel MTU).
    pub mtu: usize,
}

impl Peer {
    /// Encrypts and sends `packet` (empty = keepalive), or stages it and starts a handshake.
    pub(crate) fn send(
        &mut self,
        packet: &[u8],
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> SendOutcome {
        if self.staged.is_empty() && self.seal_and_send(packet, ctx, now, out) {
            return SendOutcome::Sent;
        }
        self.stats.dropped_no_session += self.staged.push(packet, ctx.config.max_queued_packets) as u64;
        if self.keypairs.current(now, ctx.config).is_some() {
            self.flush_staged(ctx, now, out);
            if self.staged.is_empty() {
                return SendOutcome::Sent;
            }
        }
        self.initiate(ctx, now, false, out);
        SendOutcome::Queued
    }

    /// Sends with the current session if it is usable; false if there is none (or no endpoint).
    pub(super) fn seal_and_send(
        &mut self,
        packet: &[u8],
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> bool {
        let Some(endpoint) = self.endpoint else { return false };
        let Some(session) = self.keypairs.current(now, ctx.config).cloned() else { return false };
        let need = sealed_len(packet.len(), ctx.config.mtu);
        if ctx.buf.len() < need {
            ctx.buf.resize(need, 0);
        }
        let Ok((n, _)) = session.seal(packet, ctx.buf, ctx.config.mtu) else { return false };
        out.send(endpoint, &ctx.buf[..n]);
        self.stats.tx_packets += u64::from(!packet.is_empty());
        self.sent_with(&session, !packet.is_empty(), n as u64, ctx, now, out);
        true
    }

    /// Sends what was staged, in order, for as long as a session can seal it.
    pub(super) fn flush_staged(&mut self, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        while let Some(packet) = self.staged.pop() {
            if !self.seal_and_send(&packet, ctx, now, out) {
                self.staged.unpop(packet);
                break;
            }
        }
    }

    /// Plans a batch of packets of the given lengths: reserves their counters in the current
    /// session and does the bookkeeping of sending them. `None` when they cannot go now (no
    /// usable session or endpoint, or packets staged before them still waiting): the caller
    /// then hands each packet to [`Peer::send`], which stages it and starts a handshake.
    pub(crate) fn plan_send(
        &mut self,
        lens: impl IntoIterator<Item = usize>,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) -> Option<SealPlan> {
        if !self.staged.is_empty() {
            // Staged packets go first, and under this lock, so order is kept.
            self.flush_staged(ctx, now, out);
            if !self.staged.is_empty() {
                return None;
            }
        }
        let endpoint = self.endpoint?;
        let session = self.keypairs.current(now, ctx.config)?.clone();
        let (mut count, mut bytes, mut packets) = (0u64, 0u64, 0u64);
        for len in lens {
            count += 1;
            bytes += sealed_len(len, ctx.config.mtu) as u64;
            packets += u64::from(len > 0);
        }
        if count == 0 {
            return None;
        }
        let first_counter = session.reserve(count)?;
        self.stats.tx_packets += packets;
        let data = packets > 0;
        self.sent_with(&session, data, bytes, ctx, now, out);
        Some(SealPlan { peer: self.id, endpoint, session, first_counter, mtu: ctx.config.mtu })
    }

    /// Bookkeeping after sealing `bytes` of datagrams with `session` (`data`: at least one
    /// carried a packet, not only keepalives): counters, timers, and the rekey rules.
    fn sent_with(
        &mut self,
        session: &Session,
        data: bool,
        bytes: u64,
        ctx: &mut Context<'_>,
        now: Instant,
        out: &mut dyn Output,
    ) {
        self.stats.tx_bytes += bytes;
        if data {
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
    }
}
