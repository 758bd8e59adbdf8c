//! Section 6 of the WireGuard paper as deadlines: each timer is an `Option<Instant>`, set and
//! cleared by the events that the paper names, and fired by [`Timers::expired`] when `now`
//! reaches it. Nothing here sleeps or polls; what a firing timer does is decided by the peer.

use std::time::{Duration, Instant};

use super::config::Config;

/// A timer that reached its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// No response to our initiation within REKEY_TIMEOUT + jitter: retry or give up.
    RetransmitHandshake,
    /// Data arrived and nothing went back for KEEPALIVE_TIMEOUT: send a keepalive.
    SendKeepalive,
    /// Data went out and nothing came back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: new handshake.
    NewHandshake,
    /// No new session for 3 x REJECT_AFTER_TIME: erase all keys.
    ZeroKeyMaterial,
    /// The persistent keepalive interval passed without any authenticated packet.
    PersistentKeepalive,
}

/// All of one peer's timers.
#[derive(Debug, Default, Clone)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_key_material: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    need_another_keepalive: bool,
    persistent_interval: Option<Duration>,
}

impl Timers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets or clears the persistent keepalive interval (re-arming from `now` when set).
    pub fn set_persistent_keepalive(&mut self, interval: Option<Duration>, now: Instant) {
        self.persistent_interval = interval.filter(|d| !d.is_zero());
        self.persistent_keepalive = self.persistent_interval.map(|d| now + d);
    }

    pub fn persistent_interval(&self) -> Option<Duration> {
        self.persistent_interval
    }

    /// A data message with a payload was sent.
    pub fn data_sent(&mut self, now: Instant, config: &Config) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + config.new_handshake_after());
        }
    }

    /// A data message with a payload was received.
    pub fn data_received(&mut self, now: Instant, config: &Config) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + config.keepalive_timeout);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Any authenticated packet (data, keepalive, handshake) was sent: a keepalive is moot.
    pub fn any_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Any authenticated packet was received: the peer is alive, no new handshake needed.
    pub fn any_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    /// Any authenticated packet went either way: the persistent keepalive starts over.
    pub fn any_authenticated_packet_traversal(&mut self, now: Instant) {
        if let Some(d) = self.persistent_interval {
            self.persistent_keepalive = Some(now + d);
        }
    }

    /// An initiation was sent; `jitter` is drawn by the caller from `[0, rekey_jitter_max)`.
    pub fn handshake_initiated(&mut self, now: Instant, config: &Config, jitter: Duration) {
        self.retransmit_handshake = Some(now + config.rekey_timeout + jitter);
    }

    /// A handshake completed (response received, or first data under a responder's keypair).
    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
    }

    /// Stop retrying (given up, or the handshake state was erased).
    pub fn stop_retransmit(&mut self) {
        self.retransmit_handshake = None;
    }

    /// New session keys were derived: they are erased 3 x REJECT_AFTER_TIME from now unless
    /// another session replaces them.
    pub fn session_derived(&mut self, now: Instant, config: &Config) {
        self.zero_key_material = Some(now + config.zero_keys_after());
    }

    /// Arms key erasure unless already armed (used when a handshake is given up).
    pub fn ensure_zero_key_material(&mut self, now: Instant, config: &Config) {
        if self.zero_key_material.is_none() {
            self.zero_key_material = Some(now + config.zero_keys_after());
        }
    }

    /// Clears every timer except the persistent keepalive interval setting.
    pub fn clear_all(&mut self) {
        let interval = self.persistent_interval;
        *self = Timers::default();
        self.persistent_interval = interval;
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes one timer whose deadline is at or before `now`, earliest first, disarming it
    /// (a passive keepalive that should repeat is re-armed here, as the paper says).
    pub fn expired(&mut self, now: Instant, config: &Config) -> Option<TimerEvent> {
        let slots: [(Option<Instant>, TimerEvent); 5] = [
            (self.retransmit_handshake, TimerEvent::RetransmitHandshake),
            (self.send_keepalive, TimerEvent::SendKeepalive),
            (self.new_handshake, TimerEvent::NewHandshake),
            (self.zero_key_material, TimerEvent::ZeroKeyMaterial),
            (self.persistent_keepalive, TimerEvent::PersistentKeepalive),
        ];
        let (_, event) = slots
            .into_iter()
            .filter_map(|(at, ev)| at.filter(|t| *t <= now).map(|t| (t, ev)))
            .min_by_key(|(t, _)| *t)?;
        match event {
            TimerEvent::RetransmitHandshake => self.retransmit_handshake = None,
            TimerEvent::SendKeepalive => {
                self.send_keepalive = None;
                if self.need_another_keepalive {
                    self.need_another_keepalive = false;
                    self.send_keepalive = Some(now + config.keepalive_timeout);
                }
            }
            TimerEvent::NewHandshake => self.new_handshake = None,
            TimerEvent::ZeroKeyMaterial => self.zero_key_material = None,
            TimerEvent::PersistentKeepalive => self.persistent_keepalive = None,
        }
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_keepalive_fires_once_then_repeats_only_if_more_data_came() {
        let c = Config::default();
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.data_received(t0, &c);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(t.expired(t0 + Duration::from_secs(9), &c), None);
        assert_eq!(t.expired(t0 + Duration::from_secs(10), &c), Some(TimerEvent::SendKeepalive));
        assert_eq!(t.next_deadline(), None);
        t.data_received(t0 + Duration::from_secs(11), &c);
        t.data_received(t0 + Duration::from_secs(12), &c);
        assert_eq!(t.expired(t0 + Duration::from_secs(21), &c), Some(TimerEvent::SendKeepalive));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(31)));
    }

    #[test]
    fn sending_anything_cancels_the_passive_keepalive() {
        let c = Config::default();
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.data_received(t0, &c);
        t.any_authenticated_packet_sent();
        assert_eq!(t.expired(t0 + Duration::from_secs(60), &c), None);
    }

    #[test]
    fn new_handshake_after_data_sent_without_reply() {
        let c = Config::default();
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.data_sent(t0, &c);
        t.data_sent(t0 + Duration::from_secs(3), &c);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(15)));
        t.any_authenticated_packet_received();
        assert_eq!(t.next_deadline(), None);
        t.data_sent(t0 + Duration::from_secs(4), &c);
        assert_eq!(t.expired(t0 + Duration::from_secs(19), &c), Some(TimerEvent::NewHandshake));
    }

    #[test]
    fn earliest_timer_fires_first() {
        let c = Config::default();
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.session_derived(t0, &c);
        t.handshake_initiated(t0, &c, Duration::from_millis(100));
        t.set_persistent_keepalive(Some(Duration::from_secs(25)), t0);
        let late = t0 + Duration::from_secs(600);
        assert_eq!(t.expired(late, &c), Some(TimerEvent::RetransmitHandshake));
        assert_eq!(t.expired(late, &c), Some(TimerEvent::PersistentKeepalive));
        assert_eq!(t.expired(late, &c), Some(TimerEvent::ZeroKeyMaterial));
        assert_eq!(t.expired(late, &c), None);
    }
}
