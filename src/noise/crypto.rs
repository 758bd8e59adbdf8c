//! The primitives WireGuard is built from, each behind one small function: X25519,
//! BLAKE2s (hash, keyed MAC), ChaCha20-Poly1305 for data and XChaCha20-Poly1305 for cookies.
//!
//! X25519 (aws-lc's raw function, through aws-lc-sys) is assembly-backed; the data-path
//! ChaCha20-Poly1305 is veil's own AVX-512 code ([`super::aead`]) where the CPU has it, ring's
//! assembly elsewhere; the figures that decided it are in docs/performance.md.
//! The two `unsafe` calls below are the only FFI in the protocol core.

use blake2::digest::{FixedOutput, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest, digest::consts::U16};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use std::mem::MaybeUninit;

use zeroize::Zeroizing;

/// Length of a Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// The shared secret was all zero: the public key has small order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhError;

/// X25519 of a private scalar and a peer's public key. Refuses an all-zero result.
pub fn x25519(private: &[u8; 32], public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, DhError> {
    let mut out = Zeroizing::new([0u8; 32]);
    // SAFETY: `X25519` reads exactly 32 bytes from each input and writes exactly 32 bytes to
    // `out`; all three are live, non-overlapping 32-byte arrays for the whole call.
    let ok = unsafe { aws_lc_sys::X25519(out.as_mut_ptr(), private.as_ptr(), public.as_ptr()) };
    // aws-lc returns 0 when the result is all zero (a small-order public key).
    if ok == 1 { Ok(out) } else { Err(DhError) }
}

/// The public key of a private scalar.
pub fn x25519_base(private: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // SAFETY: reads 32 bytes from `private`, writes 32 bytes to `out`; both live 32-byte arrays.
    unsafe { aws_lc_sys::X25519_public_from_private(out.as_mut_ptr(), private.as_ptr()) };
    out
}

/// True when `public` has small order: its product with any clamped scalar is the identity,
/// so the shared secret would be zero. Checked with one fixed scalar, which is enough because
/// clamping makes every scalar a multiple of the cofactor.
pub fn is_low_order(public: &[u8; 32]) -> bool {
    let mut scalar = [0x5au8; 32];
    super::keys::clamp(&mut scalar);
    x25519(&scalar, public).is_err()
}

/// BLAKE2s-256 of the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// Keyed BLAKE2s with a 16-byte output (WireGuard's MAC for mac1, mac2 and cookies).
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Blake2sMac<U16> as Mac>::new_from_slice(key).expect("BLAKE2s key of at most 32 bytes");
    for p in parts {
        Update::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// A ChaCha20-Poly1305 key for transport data, nonce = 4 zero bytes || counter (LE).
///
/// Messages of [`OWN_AEAD_FROM`] bytes and more are served by veil's AVX-512 code
/// ([`super::aead`]) where the CPU has it, shorter ones (where ring's code for one or two
/// blocks is faster) and every message on other CPUs (or with `VEIL_AEAD=ring`) by ring. ring does not erase its key objects, so every key lives in a
/// heap slot that this type wipes when it is dropped (the slot is `MaybeUninit`, so writing
/// zeros over it is always sound).
pub struct DataKey(Box<MaybeUninit<Backend>>);

enum Backend {
    /// The key as ChaCha20's eight little-endian words, and ring's for short messages.
    Own([u32; 8], LessSafeKey),
    Ring(LessSafeKey),
}

/// The shortest message (plaintext bytes) that veil's own ChaCha20-Poly1305 seals or opens.
/// Measured with `cargo run --release --example aead_min` (2026-11-30, fastest of 300 runs of
/// 200, against ring, seal/open): 0.84x/0.78x at 64 bytes and 0.93x/1.05x at 512 (so ring
/// keeps those), 1.14x/1.20x at 768, 1.31x/1.20x at 1,424, 1.53x/1.36x at 8,192.
pub const OWN_AEAD_FROM: usize = 640;

impl DataKey {
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&aead::CHACHA20_POLY1305, key).expect("32-byte key");
        let ring = LessSafeKey::new(unbound);
        let backend = match super::aead::available() {
            true => Backend::Own(super::aead::key_words(key), ring),
            false => Backend::Ring(ring),
        };
        DataKey(Box::new(MaybeUninit::new(backend)))
    }

    fn backend(&self) -> &Backend {
        // SAFETY: the slot is initialised in `new` and only wiped in `drop`, after which
        // `self` is never used again.
        unsafe { self.0.assume_init_ref() }
    }

    fn nonce(counter: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal(&self, counter: u64, in_out: &mut [u8]) -> [u8; TAG_LEN] {
        match self.backend() {
            Backend::Own(words, _) if in_out.len() >= OWN_AEAD_FROM => super::aead::seal(words, counter, in_out),
            Backend::Own(_, key) | Backend::Ring(key) => {
                let tag = key
                    .seal_in_place_separate_tag(Self::nonce(counter), Aad::empty(), in_out)
                    .expect("ChaCha20-Poly1305 seal of a bounded buffer");
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
        }
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place; returns the plaintext length.
    pub fn open(&self, counter: u64, in_out: &mut [u8]) -> Option<usize> {
        match self.backend() {
            Backend::Own(words, _) if in_out.len() >= OWN_AEAD_FROM + TAG_LEN => {
                super::aead::open(words, counter, in_out)
            }
            Backend::Own(_, key) | Backend::Ring(key) => {
                key.open_in_place(Self::nonce(counter), Aad::empty(), in_out).ok().map(|p| p.len())
            }
        }
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        let slot = self.0.as_mut_ptr();
        // SAFETY: the slot holds an initialised key (see `backend`); it is dropped exactly once
        // here and never read again.
        unsafe { std::ptr::drop_in_place(slot) };
        // SAFETY: the pointer covers exactly one `Backend` of owned heap memory, viewed as
        // possibly-uninitialised bytes, for which any bit pattern is valid.
        let bytes = unsafe { std::slice::from_raw_parts_mut(slot.cast::<MaybeUninit<u8>>(), size_of::<Backend>()) };
        for b in bytes.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference; volatile keeps the wipe.
            unsafe { std::ptr::write_volatile(b, MaybeUninit::new(0)) };
        }
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// XChaCha20-Poly1305 encryption of a 16-byte cookie, `aad` = the mac1 it answers.
pub fn xseal_cookie(key: &[u8; 32], nonce: &[u8; 24], cookie: &[u8; 16], aad: &[u8]) -> [u8; 32] {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(cookie);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf[..16])
        .expect("XChaCha20-Poly1305 of 16 bytes");
    buf[16..].copy_from_slice(&tag);
    buf
}

/// Opens an encrypted cookie; `None` when the tag does not verify.
pub fn xopen_cookie(key: &[u8; 32], nonce: &[u8; 24], sealed: &[u8; 32], aad: &[u8]) -> Option<[u8; 16]> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut buf = [0u8; 16];
    buf.copy_from_slice(&sealed[..16]);
    cipher.decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut buf, sealed[16..].into()).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_rfc7748_vector() {
        let a = super::super::keys::parse_hex_key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let b_pub =
            super::super::keys::parse_hex_key("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
                .unwrap();
        let shared = x25519(&a, &b_pub).unwrap();
        assert_eq!(
            super::super::keys::hex(&shared[..]),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
    }
}
