//! ChaCha20-Poly1305 (RFC 8439 section 2.8) for transport data, with empty additional data and
//! WireGuard's nonce (4 zero bytes, then the 64-bit counter little-endian; paper section 5.4.6),
//! on CPUs with AVX-512 (F, BW, VL) and AVX-512 IFMA.
//!
//! Why veil has its own: ring's (BoringSSL's) stitched AVX2 code was 38-43% of each daemon's
//! cycles at full speed. Here ChaCha20 runs 16 blocks per 512-bit pass (`chacha20`), Poly1305
//! eight blocks per step with IFMA multiplies (`poly1305`), and the Poly1305 steps run inside
//! the ChaCha20 round loop of the next blocks (`chacha20::Between`), on the ports the rounds
//! leave idle. A full-sized packet (1,424 bytes) seals 1.31x and opens 1.20x as fast as ring;
//! figures in docs/performance.md. Short messages stay with ring
//! ([`crate::noise::crypto::OWN_AEAD_FROM`]), as does everything where the CPU lacks these
//! features or `VEIL_AEAD=ring` is set.
//!
//! Opening checks the tag before it decrypts: on a bad tag the buffer is left as it came.

mod chacha20;
mod poly1305;

use std::sync::LazyLock;

/// Whether this CPU runs the AVX-512 code (and `VEIL_AEAD` does not ask for ring).
static FAST: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("VEIL_AEAD").is_none_or(|v| v != "ring") && avx512_ifma());

/// True when the CPU has what the Poly1305 vector code needs (AVX-512 F and IFMA).
pub fn avx512_ifma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// True when veil's own ChaCha20-Poly1305 serves transport data in this process.
pub fn available() -> bool {
    *FAST
}

/// The 32-byte key as the eight little-endian words ChaCha20 takes.
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().expect("4 bytes")))
}

fn nonce(counter: u64) -> [u32; 3] {
    [0, counter as u32, (counter >> 32) as u32]
}

/// Encrypts `in_out` in place and returns the tag.
///
/// # Panics
/// When [`available`] is false, or `in_out` is longer than 2^32 - 1 blocks (never for a
/// datagram).
pub fn seal(key: &[u32; 8], counter: u64, in_out: &mut [u8]) -> [u8; 16] {
    assert!(available(), "AVX-512 ChaCha20-Poly1305 on a CPU without it");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available` checked every CPU feature `seal_avx512` is compiled for.
        unsafe { seal_avx512(key, counter, in_out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Checks the tag that ends `in_out` and, when it verifies, decrypts the rest in place and
/// returns its length; `None` (buffer untouched) when it does not or `in_out` is shorter
/// than a tag.
///
/// # Panics
/// When [`available`] is false.
pub fn open(key: &[u32; 8], counter: u64, in_out: &mut [u8]) -> Option<usize> {
    assert!(available(), "AVX-512 ChaCha20-Poly1305 on a CPU without it");
    let len = in_out.len().checked_sub(16)?;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `available` checked every CPU feature `open_avx512` is compiled for.
        unsafe { open_avx512(key, counter, in_out, len) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!()
}

/// Blocks needed for `len` bytes of data plus block 0 (the Poly1305 key).
fn blocks_for(len: usize) -> usize {
    1 + len.div_ceil(64)
}

/// Seals: each chunk of keystream is XORed in as it is made, and the Poly1305 of the
/// ciphertext made so far runs inside the rounds of the next chunk.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
fn seal_avx512(key: &[u32; 8], counter: u64, data: &mut [u8]) -> [u8; 16] {
    let state = zeroize::Zeroizing::new(chacha20::state(key, nonce(counter)));
    let total = blocks_for(data.len());
    let mut chunk = chacha20::Chunk::new();
    chunk.fill(&state, 0, total);
    let mut mac = poly1305::AeadMac::new(&chunk.first_32(), data.len());
    let mut done = chunk.xor_into(1, data);
    let mut next = chunk.count();
    while next < total {
        let counter32 = u32::try_from(next).expect("at most 2^32 - 1 blocks");
        let ready = &data[..done];
        chunk.fill_with(
            &state,
            counter32,
            total - next,
            &mut poly1305::Interleave { mac: &mut mac, ciphertext: ready },
        );
        done += chunk.xor_into(0, &mut data[done..]);
        next += chunk.count();
    }
    chunk.wipe();
    mac.finish(data)
}

/// Opens: the tag is computed (inside the rounds of the second chunk, when there is one) and
/// checked before anything is decrypted, keeping the first two chunks of keystream meanwhile.
/// For full-sized packets the first chunk is 8 blocks, so that the second (16) carries it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
fn open_avx512(key: &[u32; 8], counter: u64, in_out: &mut [u8], len: usize) -> Option<usize> {
    use subtle::ConstantTimeEq;
    let (data, tag) = in_out.split_at_mut(len);
    let state = zeroize::Zeroizing::new(chacha20::state(key, nonce(counter)));
    let total = blocks_for(len);
    // From 24 blocks on (a full-sized packet), a short first pass (8 blocks) gives the Poly1305
    // key and the second, 16 wide, carries the Poly1305 work in its rounds; shorter messages
    // measured faster with the widest pass first.
    let mut first = chacha20::Chunk::new();
    first.fill(&state, 0, if total >= 24 { 8 } else { total });
    let mut mac = poly1305::AeadMac::new(&first.first_32(), len);
    let mut second = chacha20::Chunk::new();
    let mut next = first.count();
    if next < total {
        let ciphertext = &*data;
        second.fill_with(&state, next as u32, total - next, &mut poly1305::Interleave { mac: &mut mac, ciphertext });
        next += second.count();
    }
    let good = bool::from(mac.finish(data).ct_eq(&*tag));
    if good {
        let mut done = first.xor_into(1, data);
        done += second.xor_into(0, &mut data[done..]);
        while next < total {
            let counter32 = u32::try_from(next).expect("at most 2^32 - 1 blocks");
            first.fill(&state, counter32, total - next);
            done += first.xor_into(0, &mut data[done..]);
            next += first.count();
        }
    }
    first.wipe();
    second.wipe();
    good.then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

    fn ring_seal(key: &[u8; 32], counter: u64, data: &mut Vec<u8>) {
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        k.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), data).unwrap();
    }

    fn skip_without_avx512() -> bool {
        if available() {
            return false;
        }
        eprintln!("SKIPPED: this CPU lacks AVX-512 F/BW/VL/IFMA; only ring serves data here");
        assert!(std::env::var("CI").as_deref() != Ok("true") || !avx512_ifma(), "CI=true with AVX-512 but FAST off");
        true
    }

    /// Every length from 0 to 2,100 bytes (every tail shape of every width, both Poly1305
    /// paths) and a few counters: the same ciphertext and tag as ring, and open inverts seal.
    #[test]
    fn matches_ring_at_every_length() {
        if skip_without_avx512() {
            return;
        }
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let words = key_words(&key);
        for len in 0..=2100usize {
            for counter in [0u64, 1, 0x1_0000_0001 + len as u64, u64::MAX - 1] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                let mut expected = plain.clone();
                ring_seal(&key, counter, &mut expected);
                let mut ours = plain.clone();
                let tag = seal(&words, counter, &mut ours);
                ours.extend_from_slice(&tag);
                assert_eq!(ours, expected, "seal, len {len}, counter {counter}");
                assert_eq!(open(&words, counter, &mut ours), Some(len), "open, len {len}");
                assert_eq!(&ours[..len], &plain[..], "round trip, len {len}");
            }
        }
    }

    /// Large messages too (a 64 KiB GSO-sized buffer is never sealed whole, but the code has
    /// no size limit below 2^32 blocks).
    #[test]
    fn matches_ring_for_large_buffers() {
        if skip_without_avx512() {
            return;
        }
        let key = [0x42u8; 32];
        for len in [4095, 4096, 4097, 65_535, 65_536 + 13] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut expected = plain.clone();
            ring_seal(&key, 9, &mut expected);
            let mut ours = plain;
            let tag = seal(&key_words(&key), 9, &mut ours);
            ours.extend_from_slice(&tag);
            assert!(ours == expected, "len {len}");
        }
    }

    /// A flipped bit anywhere (ciphertext or tag) fails to open and leaves the buffer unchanged.
    #[test]
    fn bad_tag_refused_and_buffer_untouched() {
        if skip_without_avx512() {
            return;
        }
        let key = key_words(&[7u8; 32]);
        let mut sealed = vec![0x5au8; 1424];
        let tag = seal(&key, 3, &mut sealed);
        sealed.extend_from_slice(&tag);
        for at in [0, 1, 700, 1423, 1424, 1439] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x10;
            let before = bad.clone();
            assert_eq!(open(&key, 3, &mut bad), None, "bit flipped at {at}");
            assert_eq!(bad, before, "buffer changed after a refused open ({at})");
        }
        let mut wrong_counter = sealed.clone();
        assert_eq!(open(&key, 4, &mut wrong_counter), None);
        assert_eq!(open(&key, 3, &mut [0u8; 15]), None, "shorter than a tag");
    }

    /// The ChaCha20 keystream against RFC 8439 section 2.4.2's vector (the AEAD vector of
    /// section 2.8.2 has additional data, which WireGuard's data messages never carry).
    #[test]
    fn chacha20_rfc8439_2_4_2_keystream() {
        if skip_without_avx512() {
            return;
        }
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce = [0u32, 0x4a00_0000, 0];
        let state = chacha20::state(&key_words(&key), nonce);
        let text = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut data = text.to_vec();
        // The RFC starts at block 1, as the AEAD does: skip block 0.
        // SAFETY: `available` (checked above) covers the features these functions need.
        unsafe {
            let mut chunk = chacha20::Chunk::new();
            chunk.fill(&state, 0, 4);
            chunk.xor_into(1, &mut data);
        }
        assert_eq!(
            crate::noise::keys::hex(&data[..16]),
            "6e2e359a2568f98041ba0728dd0d6981",
            "first 16 bytes of the RFC's ciphertext"
        );
        assert_eq!(crate::noise::keys::hex(&data[data.len() - 2..]), "874d");
    }
}
