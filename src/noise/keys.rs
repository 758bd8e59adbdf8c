//! Long-term key material: static private keys, public keys and preshared keys.
//!
//! Secrets are zeroized on drop, never printed by `Debug`, and compared in constant time.
//! Public keys of small order (including all-zero) are refused wherever a peer key enters.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::crypto;

/// Length of every key in WireGuard.
pub const KEY_LEN: usize = 32;

/// Why a key could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not valid base64, or not 32 bytes once decoded.
    Encoding,
    /// A public key of small order (for example all zero): every shared secret with it is known.
    LowOrder,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Encoding => f.write_str("a key must be 32 bytes written as 44 base64 characters"),
            KeyError::LowOrder => f.write_str("public key has small order and would give a known shared secret"),
        }
    }
}

impl std::error::Error for KeyError {}

fn decode_b64(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError::Encoding);
    }
    let mut buf = Zeroizing::new([0u8; 33]);
    let n = B64.decode_slice(text, &mut buf[..]).map_err(|_| KeyError::Encoding)?;
    if n != KEY_LEN {
        return Err(KeyError::Encoding);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&buf[..KEY_LEN]);
    Ok(out)
}

/// An X25519 static private key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticSecret([u8; KEY_LEN]);

impl StaticSecret {
    /// Wraps raw bytes, clamped as X25519 and `wg genkey` do.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        clamp(&mut bytes);
        let key = StaticSecret(bytes);
        bytes.zeroize();
        key
    }

    /// A fresh key from a cryptographic random source.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(*decode_b64(text)?))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(crypto::x25519_base(&self.0))
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(<redacted>)")
    }
}

impl PartialEq for StaticSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Clamps an X25519 scalar (RFC 7748).
pub fn clamp(bytes: &mut [u8; KEY_LEN]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

/// An X25519 public key.
#[derive(Clone, Copy, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Any 32 bytes; use [`PublicKey::checked`] for keys that come from outside.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// Refuses keys of small order: the all-zero key and the other points whose shared secret
    /// with any clamped scalar is zero.
    pub fn checked(bytes: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        if crypto::is_low_order(&bytes) {
            return Err(KeyError::LowOrder);
        }
        Ok(PublicKey(bytes))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Self::checked(*decode_b64(text)?)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Constant-time equality, for comparisons where timing could leak which key matched.
    pub fn ct_eq(&self, other: &PublicKey) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A preshared key mixed into the handshake (all zero when a peer has none).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = PresharedKey(bytes);
        bytes.zeroize();
        key
    }

    /// The all-zero key WireGuard uses for a peer without a psk.
    pub fn none() -> Self {
        PresharedKey([0u8; KEY_LEN])
    }

    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(*decode_b64(text)?))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0))
    }

    pub fn is_none(&self) -> bool {
        self.0.ct_eq(&[0u8; KEY_LEN]).into()
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Lower-case hex, as the UAPI writes keys.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses exactly 64 hex digits (either case) into 32 bytes.
pub fn parse_hex_key(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let t = text.as_bytes();
    if t.len() != KEY_LEN * 2 {
        return Err(KeyError::Encoding);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (i, pair) in t.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or(KeyError::Encoding)?;
        let lo = (pair[1] as char).to_digit(16).ok_or(KeyError::Encoding)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_public_key_of_known_secret() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let sk = parse_hex_key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let secret = StaticSecret::from_bytes(*sk);
        assert_eq!(secret.public_key().to_hex(), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let again = StaticSecret::from_base64(&secret.to_base64()).unwrap();
        assert!(again == secret);
        let pk = PublicKey::from_base64(&secret.public_key().to_base64()).unwrap();
        assert_eq!(pk, secret.public_key());
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert_eq!(PublicKey::from_base64("abc").unwrap_err(), KeyError::Encoding);
        // 44 characters but decodes to 33 bytes is impossible; 43 chars + '=' of wrong value:
        assert_eq!(PublicKey::from_base64(&"!".repeat(44)).unwrap_err(), KeyError::Encoding);
        assert!(parse_hex_key("zz").is_err());
        assert!(parse_hex_key(&"g".repeat(64)).is_err());
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let zero = [0u8; 32];
        assert_eq!(PublicKey::checked(zero).unwrap_err(), KeyError::LowOrder);
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(PublicKey::checked(one).unwrap_err(), KeyError::LowOrder);
        // p - 1, p and p + 1 encodings.
        for low in [0xecu8, 0xed, 0xee] {
            let mut k = [0xffu8; 32];
            k[0] = low;
            k[31] = 0x7f;
            assert_eq!(PublicKey::checked(k).unwrap_err(), KeyError::LowOrder);
        }
        // A point of order 8 (from the list of Curve25519 points of small order).
        let order8 = parse_hex_key("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap();
        assert_eq!(PublicKey::checked(*order8).unwrap_err(), KeyError::LowOrder);
        let ok = StaticSecret::from_bytes([7u8; 32]).public_key();
        assert!(PublicKey::checked(*ok.as_bytes()).is_ok());
    }
}
