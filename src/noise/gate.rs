//! The checks a handshake message passes before it costs public-key work or touches the
//! interface's state (paper section 5.3; the kernel's `wg_cookie_validate_packet` then
//! `wg_ratelimiter_allow`): mac1 always; under load, mac2 against the cookie for its source
//! (without a valid one: a cookie reply, nothing else, and at most
//! [`super::ratelimit::COOKIE_REPLIES_PER_SECOND`] of those per source) and then the source's
//! rate limit.
//!
//! It has a lock of its own, apart from the interface's, so that an engine can run these checks
//! for a flood of messages without taking the lock its data path needs
//! ([`super::Interface::gate`], then [`super::Interface::receive_checked_handshake`]).
//! [`super::Interface::receive_handshake`] runs them itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::cookie::{CookieChecker, MacCheck};
use super::keys::PublicKey;
use super::messages::{self, Message};
use super::ratelimit::RateLimiter;
use super::{Output, ReceiveError};

/// The cookie checker (our mac keys, the rotating cookie secret) and the rate limiter.
pub struct Gate {
    checker: CookieChecker,
    limiter: RateLimiter,
    /// Cookie replies per source, under load.
    replies: RateLimiter,
    rng: ChaCha20Rng,
    /// Cookie replies sent (handshake messages refused under load for want of a valid mac2).
    cookies_sent: u64,
}

impl Gate {
    pub(crate) fn new(our_public: &PublicKey, secret_lifetime: Duration, seed: [u8; 32]) -> Self {
        Gate {
            checker: CookieChecker::new(our_public, secret_lifetime),
            limiter: RateLimiter::default(),
            replies: RateLimiter::cookie_replies(),
            rng: ChaCha20Rng::from_seed(seed),
            cookies_sent: 0,
        }
    }

    pub(crate) fn set_public(&mut self, our_public: &PublicKey, secret_lifetime: Duration) {
        self.checker = CookieChecker::new(our_public, secret_lifetime);
    }

    /// Cookie replies sent since the interface was made.
    pub fn cookies_sent(&self) -> u64 {
        self.cookies_sent
    }

    /// Checks handshake message `msg` (sender index `sender`) from `src`; under load without a
    /// valid mac2 its cookie reply goes to `out`.
    pub(crate) fn check_macs(
        &mut self,
        msg: &[u8],
        sender: u32,
        src: SocketAddr,
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<(), ReceiveError> {
        // Under load, a message without mac2 can earn nothing but a cookie reply: once its
        // source has had its share of those, it is dropped before its mac1 costs a BLAKE2s.
        let mac2_absent = msg[msg.len() - 16..].iter().all(|&b| b == 0);
        if under_load && mac2_absent && !self.replies.allow(src.ip(), now) {
            return Err(ReceiveError::RateLimited);
        }
        match self.checker.check(msg, &src, now, under_load, &mut self.rng) {
            // Under load, a valid mac2 proves the source address but not good faith: each
            // source gets 20 messages a second before any public-key work (kernel cookie.c
            // `wg_cookie_validate_packet` then ratelimiter.c).
            MacCheck::Ok if under_load && !self.limiter.allow(src.ip(), now) => Err(ReceiveError::RateLimited),
            MacCheck::Ok => Ok(()),
            MacCheck::BadMac1 => Err(ReceiveError::BadMac1),
            // A wrong mac2 (a stale cookie, another source's) is charged like a missing one.
            MacCheck::BadMac2 if !mac2_absent && !self.replies.allow(src.ip(), now) => Err(ReceiveError::RateLimited),
            MacCheck::BadMac2 => {
                let reply = self.checker.reply(msg, sender, &src, now, &mut self.rng);
                out.send(src, &reply);
                self.cookies_sent += 1;
                Err(ReceiveError::CookieRequired)
            }
        }
    }

    /// Checks a whole datagram that should be a handshake message: its size and type, then
    /// (for an initiation or a response) as [`Gate::check_macs`]. A cookie reply (type 3) passes
    /// unchecked: it is authenticated by its own decryption, later, in the interface.
    pub fn check(
        &mut self,
        datagram: &[u8],
        src: SocketAddr,
        now: Instant,
        under_load: bool,
        out: &mut dyn Output,
    ) -> Result<(), ReceiveError> {
        match messages::parse(datagram).map_err(ReceiveError::Parse)? {
            Message::Initiation(m) => self.check_macs(m.bytes(), m.sender(), src, now, under_load, out),
            Message::Response(m) => self.check_macs(m.bytes(), m.sender(), src, now, under_load, out),
            Message::CookieReply(_) => Ok(()),
            Message::Data(d) => Err(ReceiveError::UnknownIndex(d.receiver())),
        }
    }
}

/// A shared handle on an interface's [`Gate`] (it stays valid when the private key changes).
#[derive(Clone)]
pub struct GateHandle(pub(crate) Arc<Mutex<Gate>>);

impl GateHandle {
    pub fn lock(&self) -> MutexGuard<'_, Gate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
