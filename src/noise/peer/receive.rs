//! Receiving data from the peer. The data path opens datagrams outside the core's lock (the
//! session does the AEAD and the replay window) and then reports, once per batch, what arrived
//! authenticated; here that moves the endpoint (roaming, paper section 2.1), counts bytes,
//! confirms a responder's new session, and tells the timers (section 6).

use std::net::SocketAddr;
use std::time::Instant;

use super::super::Output;
use super::{Context, Peer};

/// What arrived from one peer under one session in one batch: authenticated datagrams only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedData {
    /// Our receiver index of the session they arrived under.
    pub index: u32,
    /// Source address of the last of them: the peer's endpoint from now on.
    pub src: SocketAddr,
    /// Their total length on the wire (whole UDP payloads, as wg counts `rx_bytes`).
    pub bytes: u64,
    /// How many carried a packet; the others were keepalives.
    pub packets: u64,
}

impl Peer {
    /// Bookkeeping for authenticated data (see [`ReceivedData`]).
    pub(crate) fn received(&mut self, r: &ReceivedData, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        self.learn_endpoint(r.src);
        self.stats.rx_bytes += r.bytes;
        self.stats.rx_packets += r.packets;
        if self.keypairs.confirm(r.index, ctx.indices) {
            // Key confirmation: the initiator used the keypair we made as responder.
            self.handshake_done(ctx, now);
            self.flush_staged(ctx, now, out);
        }
        self.timers.any_authenticated_packet_received();
        self.timers.any_authenticated_packet_traversal(now);
        // Keep the key fresh from the receiving side: an initiator whose session nears
        // REJECT_AFTER_TIME starts a handshake once.
        if let Some(cur) = self.keypairs.current_any()
            && cur.we_initiated
            && !self.sent_last_minute_handshake
            && now.saturating_duration_since(cur.created) >= ctx.config.rekey_on_receive_after()
        {
            self.sent_last_minute_handshake = true;
            self.initiate(ctx, now, false, out);
        }
        if r.packets > 0 {
            self.timers.data_received(now, ctx.config);
        }
    }
}
