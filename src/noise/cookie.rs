//! mac1, mac2 and cookie replies: WireGuard's defence against handshake floods.
//!
//! Every handshake message carries mac1, keyed by the receiver's public key, so a receiver
//! drops traffic from anyone who does not know it before doing any DH. Under load, a responder
//! also demands mac2, keyed by a cookie that proves the sender can receive at its source
//! address; a sender without a fresh cookie gets a cookie reply (XChaCha20-Poly1305 encrypted)
//! instead of a handshake.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::crypto;
use super::keys::PublicKey;
use super::messages::{COOKIE_REPLY_LEN, CookieReply, TYPE_COOKIE_REPLY, mac1_offset, mac2_offset, write_header};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// The two keys derived from one public key: for mac1 and for encrypting cookies to it.
#[derive(Clone)]
pub struct MacKeys {
    mac1: [u8; 32],
    cookie: [u8; 32],
}

impl MacKeys {
    pub fn new(public: &PublicKey) -> Self {
        MacKeys {
            mac1: crypto::hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie: crypto::hash(&[LABEL_COOKIE, public.as_bytes()]),
        }
    }

    pub fn mac1(&self, msg: &[u8]) -> [u8; 16] {
        crypto::mac(&self.mac1, &[&msg[..mac1_offset(msg.len())]])
    }

    /// True when the message's mac1 is right for these keys (constant time).
    pub fn verify_mac1(&self, msg: &[u8]) -> bool {
        let at = mac1_offset(msg.len());
        self.mac1(msg).ct_eq(&msg[at..at + 16]).into()
    }
}

fn mac2(cookie: &[u8; 16], msg: &[u8]) -> [u8; 16] {
    crypto::mac(cookie, &[&msg[..mac2_offset(msg.len())]])
}

/// The bytes a cookie is bound to: source IP then port.
fn address_bytes(src: &SocketAddr, out: &mut [u8; 18]) -> usize {
    match src {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&a.port().to_be_bytes());
            6
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&a.port().to_be_bytes());
            18
        }
    }
}

/// What a responder checks of an incoming handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacCheck {
    /// mac1 is wrong: drop silently.
    BadMac1,
    /// mac1 is right, mac2 is missing or wrong (only an answer under load).
    BadMac2,
    /// Both fine, or mac1 fine and not under load.
    Ok,
}

/// The receiving side: our own mac keys and the rotating cookie secret.
pub struct CookieChecker {
    keys: MacKeys,
    secret: Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
    secret_lifetime: Duration,
}

impl CookieChecker {
    pub fn new(our_public: &PublicKey, secret_lifetime: Duration) -> Self {
        CookieChecker {
            keys: MacKeys::new(our_public),
            secret: Zeroizing::new([0u8; 32]),
            secret_born: None,
            secret_lifetime,
        }
    }

    /// The cookie for `src` at `now`, replacing the secret when it is older than its lifetime.
    fn cookie(&mut self, src: &SocketAddr, now: Instant, rng: &mut dyn RngCore) -> [u8; 16] {
        let stale = match self.secret_born {
            None => true,
            Some(born) => now.saturating_duration_since(born) >= self.secret_lifetime,
        };
        if stale {
            rng.fill_bytes(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        let mut addr = [0u8; 18];
        let n = address_bytes(src, &mut addr);
        crypto::mac(&self.secret[..], &[&addr[..n]])
    }

    /// Checks mac1 always, and mac2 when `under_load`.
    pub fn check(
        &mut self,
        msg: &[u8],
        src: &SocketAddr,
        now: Instant,
        under_load: bool,
        rng: &mut dyn RngCore,
    ) -> MacCheck {
        if !self.keys.verify_mac1(msg) {
            return MacCheck::BadMac1;
        }
        if !under_load {
            return MacCheck::Ok;
        }
        let cookie = self.cookie(src, now, rng);
        let at = mac2_offset(msg.len());
        if bool::from(mac2(&cookie, msg).ct_eq(&msg[at..at + 16])) { MacCheck::Ok } else { MacCheck::BadMac2 }
    }

    /// A cookie reply to handshake message `msg` whose sender index is `sender`.
    pub fn reply(
        &mut self,
        msg: &[u8],
        sender: u32,
        src: &SocketAddr,
        now: Instant,
        rng: &mut dyn RngCore,
    ) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = self.cookie(src, now, rng);
        let mut out = [0u8; COOKIE_REPLY_LEN];
        write_header(&mut out, TYPE_COOKIE_REPLY, sender);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        out[8..32].copy_from_slice(&nonce);
        let at = mac1_offset(msg.len());
        let sealed = crypto::xseal_cookie(&self.keys.cookie, &nonce, &cookie, &msg[at..at + 16]);
        out[32..64].copy_from_slice(&sealed);
        out
    }
}

/// Why a cookie reply was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// We sent no handshake message it could answer.
    Unexpected,
    /// It does not decrypt under the peer's cookie key and our last mac1.
    Decrypt,
}

/// The sending side, one per peer: its mac keys, our last mac1 to it, and its latest cookie.
#[derive(Clone)]
pub struct CookieState {
    keys: MacKeys,
    last_mac1: Option<[u8; 16]>,
    cookie: Option<([u8; 16], Instant)>,
    lifetime: Duration,
}

impl CookieState {
    pub fn new(peer_public: &PublicKey, lifetime: Duration) -> Self {
        CookieState { keys: MacKeys::new(peer_public), last_mac1: None, cookie: None, lifetime }
    }

    /// Writes mac1, and mac2 if a cookie younger than its lifetime is held (else zeros).
    pub fn stamp(&mut self, msg: &mut [u8], now: Instant) {
        let len = msg.len();
        let m1 = self.keys.mac1(msg);
        msg[mac1_offset(len)..mac1_offset(len) + 16].copy_from_slice(&m1);
        self.last_mac1 = Some(m1);
        let m2 = match &self.cookie {
            Some((cookie, at)) if now.saturating_duration_since(*at) < self.lifetime => mac2(cookie, msg),
            _ => [0u8; 16],
        };
        msg[mac2_offset(len)..].copy_from_slice(&m2);
    }

    /// Takes the cookie from a reply to our last handshake message.
    pub fn consume(&mut self, reply: &CookieReply<'_>, now: Instant) -> Result<(), CookieError> {
        let aad = self.last_mac1.ok_or(CookieError::Unexpected)?;
        let cookie = crypto::xopen_cookie(&self.keys.cookie, reply.nonce(), reply.encrypted_cookie(), &aad)
            .ok_or(CookieError::Decrypt)?;
        self.cookie = Some((cookie, now));
        Ok(())
    }

    pub fn has_fresh_cookie(&self, now: Instant) -> bool {
        matches!(&self.cookie, Some((_, at)) if now.saturating_duration_since(*at) < self.lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::keys::StaticSecret;
    use crate::noise::messages::{self, Message};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn setup() -> (CookieChecker, CookieState, ChaCha20Rng) {
        let responder = StaticSecret::from_bytes([3u8; 32]).public_key();
        let life = Duration::from_secs(120);
        (CookieChecker::new(&responder, life), CookieState::new(&responder, life), ChaCha20Rng::seed_from_u64(1))
    }

    fn initiation() -> Vec<u8> {
        let mut m = vec![0u8; messages::INITIATION_LEN];
        m[0] = messages::TYPE_INITIATION;
        m[4..8].copy_from_slice(&77u32.to_le_bytes());
        m
    }

    #[test]
    fn mac1_is_checked_and_mac2_only_under_load() {
        let (mut checker, mut state, mut rng) = setup();
        let src: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let t = Instant::now();
        let mut msg = initiation();
        state.stamp(&mut msg, t);
        assert_eq!(checker.check(&msg, &src, t, false, &mut rng), MacCheck::Ok);
        assert_eq!(checker.check(&msg, &src, t, true, &mut rng), MacCheck::BadMac2);
        let mut tampered = msg.clone();
        tampered[20] ^= 1;
        assert_eq!(checker.check(&tampered, &src, t, false, &mut rng), MacCheck::BadMac1);
    }

    #[test]
    fn cookie_reply_round_trip_gives_a_valid_mac2_for_that_source_only() {
        let (mut checker, mut state, mut rng) = setup();
        let src: SocketAddr = "[2001:db8::1]:51820".parse().unwrap();
        let t = Instant::now();
        let mut msg = initiation();
        state.stamp(&mut msg, t);
        let reply = checker.reply(&msg, 77, &src, t, &mut rng);
        let Message::CookieReply(r) = messages::parse(&reply).unwrap() else { panic!("not a cookie reply") };
        assert_eq!(r.receiver(), 77);
        state.consume(&r, t).unwrap();
        let mut again = initiation();
        state.stamp(&mut again, t + Duration::from_secs(1));
        assert_eq!(checker.check(&again, &src, t + Duration::from_secs(1), true, &mut rng), MacCheck::Ok);
        let other: SocketAddr = "[2001:db8::1]:51821".parse().unwrap();
        assert_eq!(checker.check(&again, &other, t + Duration::from_secs(1), true, &mut rng), MacCheck::BadMac2);
        // A reply to a different mac1 does not decrypt, and leaves the cookie held as it was.
        let mut state2 = CookieState::new(&StaticSecret::from_bytes([3u8; 32]).public_key(), Duration::from_secs(120));
        assert_eq!(state2.consume(&r, t).unwrap_err(), CookieError::Unexpected);
        let mut m3 = initiation();
        m3[10] = 1;
        state2.stamp(&mut m3, t);
        assert_eq!(state2.consume(&r, t).unwrap_err(), CookieError::Decrypt);
        assert!(!state2.has_fresh_cookie(t));
    }

    #[test]
    fn cookie_secret_rotates_after_its_lifetime() {
        let (mut checker, mut state, mut rng) = setup();
        let src: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let t = Instant::now();
        let mut msg = initiation();
        state.stamp(&mut msg, t);
        let reply = checker.reply(&msg, 77, &src, t, &mut rng);
        let Message::CookieReply(r) = messages::parse(&reply).unwrap() else { panic!() };
        state.consume(&r, t).unwrap();
        let later = t + Duration::from_secs(119);
        let mut m = initiation();
        state.stamp(&mut m, later);
        assert_eq!(checker.check(&m, &src, later, true, &mut rng), MacCheck::Ok);
        // After 120 s the responder has a new secret: the old cookie no longer works.
        let rotated = t + Duration::from_secs(121);
        assert_eq!(checker.check(&m, &src, rotated, true, &mut rng), MacCheck::BadMac2);
    }
}
