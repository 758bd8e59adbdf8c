//! What each of the peer's timers does when it expires (paper section 6; the kernel's timers.c
//! `wg_expired_*`). When they fire is `noise::timers`' business.

use std::time::Instant;

use super::super::Output;
use super::super::timers::TimerEvent;
use super::{Context, Peer};

impl Peer {
    /// Acts on every timer that expired by `now`.
    pub(crate) fn on_timers(&mut self, ctx: &mut Context<'_>, now: Instant, out: &mut dyn Output) {
        while let Some(event) = self.timers.expired(now, ctx.config) {
            match event {
                TimerEvent::RetransmitHandshake => {
                    self.stats.handshakes_failed += 1;
                    if self.handshake_attempts >= ctx.config.max_handshake_attempts() {
                        // Give up: drop what waited for this handshake, erase keys later.
                        self.stats.dropped_no_session += self.staged.len() as u64;
                        self.staged.clear();
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
                    self.stats.dropped_no_session += self.staged.len() as u64;
                    self.staged.clear();
                    self.timers.stop_retransmit();
                }
            }
        }
    }
}
