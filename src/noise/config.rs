//! Protocol constants and the per-tunnel overrides of the timer and message thresholds.
//!
//! Every constant of section 6 of the WireGuard paper is defined exactly once here. A tunnel
//! runs with [`Config::default()`] (WireGuard's values) unless a user overrides single values,
//! which integration tests and netns users do to see a rekey every second instead of every two
//! minutes.

use std::time::Duration;

/// Start a new handshake once a keypair has sent this many messages.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Refuse to use a keypair for more than this many messages.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// Start a new handshake once the initiator's keypair is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// Refuse to use a keypair older than this.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Stop retrying a handshake after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retry an unanswered handshake initiation after this long (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound (exclusive) of the random jitter added to every retry.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(334);
/// Send a keepalive when data arrived and nothing was sent back for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The cookie secret is replaced this often.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);
/// A received cookie is used for mac2 for this long.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);
/// Minimum spacing of two initiations accepted from one peer (at most 50 per second).
pub const INITIATIONS_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Packets held per peer while no session exists.
pub const MAX_QUEUED_PACKETS: usize = 1024;
/// WireGuard's default tunnel MTU (1500 minus the largest outer overhead, IPv6 + UDP + 32).
pub const DEFAULT_MTU: usize = 1420;
/// Width of the replay window ring in bits (RFC 6479 style).
pub const REPLAY_WINDOW_BITS: u64 = 8192;

/// Per-tunnel protocol parameters. The defaults are WireGuard's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub rekey_after_messages: u64,
    pub reject_after_messages: u64,
    pub rekey_after_time: Duration,
    pub reject_after_time: Duration,
    pub rekey_attempt_time: Duration,
    pub rekey_timeout: Duration,
    /// Jitter added to each handshake retry is drawn uniformly from `[0, rekey_jitter_max)`.
    pub rekey_jitter_max: Duration,
    pub keepalive_timeout: Duration,
    pub cookie_secret_lifetime: Duration,
    /// Most packets queued per peer while waiting for a session; the oldest are dropped first.
    pub max_queued_packets: usize,
    /// Packets are zero-padded to a multiple of 16 bytes but never beyond this length.
    pub mtu: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rekey_after_messages: REKEY_AFTER_MESSAGES,
            reject_after_messages: REJECT_AFTER_MESSAGES,
            rekey_after_time: REKEY_AFTER_TIME,
            reject_after_time: REJECT_AFTER_TIME,
            rekey_attempt_time: REKEY_ATTEMPT_TIME,
            rekey_timeout: REKEY_TIMEOUT,
            rekey_jitter_max: REKEY_TIMEOUT_JITTER_MAX,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            cookie_secret_lifetime: COOKIE_SECRET_LIFETIME,
            max_queued_packets: MAX_QUEUED_PACKETS,
            mtu: DEFAULT_MTU,
        }
    }
}

impl Config {
    /// Keys are erased when no new session was made for this long (3 x REJECT_AFTER_TIME).
    pub fn zero_keys_after(&self) -> Duration {
        self.reject_after_time * 3
    }

    /// The number of handshake initiations sent before giving up
    /// (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT, 18 with the defaults).
    pub fn max_handshake_attempts(&self) -> u32 {
        let per = self.rekey_timeout.as_nanos().max(1);
        (self.rekey_attempt_time.as_nanos() / per).max(1) as u32
    }

    /// A receiver that initiated the current session starts a new handshake once the keypair is
    /// this old, so that the session is replaced before it is rejected.
    pub fn rekey_on_receive_after(&self) -> Duration {
        self.reject_after_time.saturating_sub(self.keepalive_timeout).saturating_sub(self.rekey_timeout)
    }

    /// Sending data with nothing heard back for this long starts a new handshake.
    pub fn new_handshake_after(&self) -> Duration {
        self.keepalive_timeout + self.rekey_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_wireguards() {
        let c = Config::default();
        assert_eq!(c.rekey_after_messages, 1u64 << 60);
        assert_eq!(c.reject_after_messages, u64::MAX - 8192);
        assert_eq!(c.zero_keys_after(), Duration::from_secs(540));
        assert_eq!(c.max_handshake_attempts(), 18);
        assert_eq!(c.rekey_on_receive_after(), Duration::from_secs(165));
        assert_eq!(c.new_handshake_after(), Duration::from_secs(15));
    }
}
