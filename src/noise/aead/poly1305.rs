//! Poly1305 (RFC 8439 section 2.5) in radix 2^44: three limbs of 44, 44 and 42 bits.
//!
//! The same limbs serve the scalar code (64x64 -> 128-bit products) and the AVX-512 IFMA code,
//! whose `vpmadd52luq`/`vpmadd52huq` multiply 52-bit inputs: a limb of at most 46 bits (a
//! 44-bit limb plus a message limb, not yet carried) times at most 49 bits (a 44-bit `r` limb
//! times 20) fits. The vector code evaluates eight interleaved Horner sequences, lane k taking
//! blocks k, k+8, k+16... of a run of whole 8-block groups, each step multiplying by r^8 and the
//! last by r^(8-k); what remains of the message is finished one block at a time.
//!
//! Reduction modulo p = 2^130 - 5: a product term at 2^132 (limb 1 times limb 2) is 4 * 2^130,
//! that is 20 modulo p, which is why the "s" limbs are r times 20; a carry out of bit 130 comes
//! back into limb 0 times 5.

pub(super) const MASK44: u64 = (1 << 44) - 1;
pub(super) const MASK42: u64 = (1 << 42) - 1;
/// Bit 128 of a block (the "append a 1 byte" of the RFC), as it falls in limb 2.
pub(super) const HIBIT: u64 = 1 << 40;

/// An element modulo 2^130 - 5 in radix 2^44, limbs not necessarily fully reduced.
#[derive(Clone, Copy, Default)]
struct Limbs([u64; 3]);

impl Limbs {
    /// A 16-byte block with the 2^128 bit set.
    fn block(b: &[u8; 16]) -> Limbs {
        let t0 = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let t1 = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        Limbs([t0 & MASK44, ((t0 >> 44) | (t1 << 20)) & MASK44, (t1 >> 24) | HIBIT])
    }

    fn add(&mut self, m: &Limbs) {
        for i in 0..3 {
            self.0[i] += m.0[i];
        }
    }

    /// `self * r mod p`, limbs carried (limb 0 and 2 exact, limb 1 at most 2^44 + a little).
    #[inline(always)]
    fn mul(&self, r: &Limbs) -> Limbs {
        // 64 x 64 -> 128-bit products only: one `mul` instruction each.
        let m = |a: u64, b: u64| u128::from(a) * u128::from(b);
        let [h0, h1, h2] = self.0;
        let [r0, r1, r2] = r.0;
        let (s1, s2) = (r1 * 20, r2 * 20);
        let d0 = m(h0, r0) + m(h1, s2) + m(h2, s1);
        let d1 = m(h0, r1) + m(h1, r0) + m(h2, s2) + (d0 >> 44);
        let d2 = m(h0, r2) + m(h1, r1) + m(h2, r0) + (d1 >> 44);
        let l0 = (d0 as u64) & MASK44;
        let l1 = (d1 as u64) & MASK44;
        let l2 = (d2 as u64) & MASK42;
        let l0 = l0 + ((d2 >> 42) as u64) * 5;
        Limbs([l0 & MASK44, l1 + (l0 >> 44), l2])
    }

    /// Fully carries the limbs (each below its radix; the value may still be in [p, 2^130)).
    fn carry(&mut self) {
        let [mut h0, mut h1, mut h2] = self.0;
        for _ in 0..2 {
            h1 += h0 >> 44;
            h0 &= MASK44;
            h2 += h1 >> 44;
            h1 &= MASK44;
            h0 += (h2 >> 42) * 5;
            h2 &= MASK42;
        }
        h1 += h0 >> 44;
        h0 &= MASK44;
        self.0 = [h0, h1, h2];
    }

    /// `(self mod p + s) mod 2^128`, little-endian: the tag.
    fn finish(mut self, s: &[u8; 16]) -> [u8; 16] {
        self.carry();
        let [h0, h1, h2] = self.0;
        // g = h + 5 - 2^130; if that does not borrow, h >= p and g is the reduced value.
        let g0 = h0 + 5;
        let g1 = h1 + (g0 >> 44);
        let g2 = h2 + (g1 >> 44);
        let (g0, g1) = (g0 & MASK44, g1 & MASK44);
        let use_g = (g2 >> 42) & 1; // 1 when h + 5 reached 2^130
        let mask = use_g.wrapping_neg();
        let g2 = g2 & MASK42;
        let (h0, h1, h2) = ((h0 & !mask) | (g0 & mask), (h1 & !mask) | (g1 & mask), (h2 & !mask) | (g2 & mask));
        // Added, not or-ed: limb 1 may be exactly 2^44 after the last carry.
        let h = u128::from(h0).wrapping_add(u128::from(h1) << 44).wrapping_add(u128::from(h2) << 88);
        h.wrapping_add(u128::from_le_bytes(*s)).to_le_bytes()
    }
}

/// `r` from the first half of a one-time key, clamped (RFC 8439 section 2.5.1).
fn clamp(key: &[u8; 32]) -> Limbs {
    let t0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let t1 = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes"));
    Limbs([t0 & 0x0ffc_0fff_ffff, ((t0 >> 44) | (t1 << 20)) & 0x0fff_ffc0_ffff, (t1 >> 24) & 0x000f_ffff_fc0f])
}

/// Poly1305 over a ChaCha20-Poly1305 ciphertext with empty additional data (RFC 8439 section
/// 2.8: the ciphertext zero-padded to 16 bytes, then the two lengths), fed as the ciphertext
/// becomes available: whole 128-byte groups from the start ([`Interleave`], eight
/// lanes of IFMA when the CPU has it), then the rest at [`AeadMac::finish`].
///
/// Feeding one group at a time lets the caller interleave it with the ChaCha20 rounds of the
/// next blocks (see `super::seal_avx512`): the Poly1305 multiplies wait on one port while the
/// rounds use the others.
pub struct AeadMac {
    r: Limbs,
    s: [u8; 16],
    /// Whole groups absorbed so far.
    groups: usize,
    /// Whether the eight-lane code serves this message (long enough, and the CPU has it).
    vector: bool,
    /// The lanes, built on first use (inside the ChaCha20 rounds when interleaved).
    #[cfg(target_arch = "x86_64")]
    lanes: Option<ifma::Lanes>,
}

impl AeadMac {
    /// A MAC for a ciphertext of `len` bytes; `key` is the one-time key (the first 32 bytes of
    /// ChaCha20 block 0).
    pub fn new(key: &[u8; 32], len: usize) -> AeadMac {
        AeadMac {
            r: clamp(key),
            s: key[16..].try_into().expect("16 bytes"),
            groups: 0,
            vector: len >= 128 && super::avx512_ifma(),
            #[cfg(target_arch = "x86_64")]
            lanes: None,
        }
    }

    /// The tag of the whole `ciphertext` (of which the groups absorbed so far were the start).
    pub fn finish(mut self, ciphertext: &[u8]) -> [u8; 16] {
        #[cfg(target_arch = "x86_64")]
        let mut h = match self.vector {
            true => {
                let mut lanes = match self.lanes.take() {
                    Some(lanes) => lanes,
                    // SAFETY: `vector` is set only where the CPU has what `Lanes::new` needs.
                    None => unsafe { ifma::Lanes::new(&self.r) },
                };
                while let Some(group) = ciphertext.get(self.groups * 128..(self.groups + 1) * 128) {
                    // SAFETY: `lanes` exists only where `new` found the features it needs.
                    unsafe { lanes.absorb(group.try_into().expect("128 bytes")) };
                    self.groups += 1;
                }
                // SAFETY: as in `absorb_next`.
                unsafe { lanes.sum() }
            }
            false => Limbs::default(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let mut h = Limbs::default();
        let r = self.r;
        let mut chunks = ciphertext[self.groups * 128..].chunks_exact(16);
        for b in &mut chunks {
            h.add(&Limbs::block(b.try_into().expect("16 bytes")));
            h = h.mul(&r);
        }
        if !chunks.remainder().is_empty() {
            let mut last = [0u8; 16];
            last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            h.add(&Limbs::block(&last));
            h = h.mul(&r);
        }
        let mut lengths = [0u8; 16];
        lengths[8..].copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
        h.add(&Limbs::block(&lengths));
        h = h.mul(&r);
        h.finish(&self.s)
    }
}

/// A [`super::chacha20::Between`] that absorbs the next whole 128-byte group of `ciphertext`
/// (the part of the ciphertext that exists so far, from its first byte) into `mac` after each
/// double round, while there is one and the vector code is in use.
pub struct Interleave<'a> {
    pub mac: &'a mut AeadMac,
    pub ciphertext: &'a [u8],
}

impl super::chacha20::Between for Interleave<'_> {
    #[inline(always)]
    unsafe fn between(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.mac.vector {
            // SAFETY (both blocks): `between` runs only inside ChaCha20's AVX-512 code (the
            // trait's contract), and `vector` is set only where the CPU also has IFMA.
            match &mut self.mac.lanes {
                // The first step builds the powers of r.
                None => self.mac.lanes = Some(unsafe { ifma::Lanes::new_inline(&self.mac.r) }),
                Some(lanes) => {
                    if let Some(group) = self.ciphertext.get(self.mac.groups * 128..(self.mac.groups + 1) * 128) {
                        unsafe { lanes.absorb_inline(group.try_into().expect("128 bytes")) };
                        self.mac.groups += 1;
                    }
                }
            }
        }
    }
}

impl Drop for AeadMac {
    /// Erases `r` and `s` (the powers of `r` in the vector lanes go with the registers and
    /// the stack, as ring's do).
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.r.0.zeroize();
        self.s.zeroize();
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    use super::{HIBIT, Limbs, MASK42, MASK44};
    use std::arch::x86_64::*;

    /// One multiply of eight lanes by eight multipliers (`r` limbs and their `s = 20 r`),
    /// carried back to 44/44/42-bit limbs (limb 1 may exceed 44 bits by a small carry).
    /// Always inlined, without target features of its own, so that it can run inside the
    /// ChaCha20 round loop (a call there would spill every vector register).
    ///
    /// # Safety
    /// Only from code compiled with AVX-512F and IFMA enabled.
    #[inline(always)]
    unsafe fn mul(h: [__m512i; 3], r: &[__m512i; 3], s: &[__m512i; 2]) -> [__m512i; 3] {
        // SAFETY: the caller runs with AVX-512F and IFMA (this function's contract).
        unsafe {
            let z = _mm512_setzero_si512();
            let [h0, h1, h2] = h;
            // No closures here: a closure is a function of its own, without this caller's
            // target features, and the intrinsics in it would become calls.
            use _mm512_madd52hi_epu64 as hi;
            use _mm512_madd52lo_epu64 as lo;
            // d_i = lo_i + hi_i * 2^52. Chains, not trees: the loop is bound by IFMA
            // throughput (one port), and a tree's extra adds measured 20% slower.
            let lo0 = lo(lo(lo(z, h0, r[0]), h1, s[1]), h2, s[0]);
            let hi0 = hi(hi(hi(z, h0, r[0]), h1, s[1]), h2, s[0]);
            let lo1 = lo(lo(lo(z, h0, r[1]), h1, r[0]), h2, s[1]);
            let hi1 = hi(hi(hi(z, h0, r[1]), h1, r[0]), h2, s[1]);
            let lo2 = lo(lo(lo(z, h0, r[2]), h1, r[1]), h2, r[0]);
            let hi2 = hi(hi(hi(z, h0, r[2]), h1, r[1]), h2, r[0]);
            let m44 = _mm512_set1_epi64(MASK44 as i64);
            let m42 = _mm512_set1_epi64(MASK42 as i64);
            // 2^52 is 2^44 * 2^8 (and 2^42 * 2^10 for the top limb).
            let c0 = _mm512_add_epi64(_mm512_srli_epi64::<44>(lo0), _mm512_slli_epi64::<8>(hi0));
            let l0 = _mm512_and_si512(lo0, m44);
            let t1 = _mm512_add_epi64(lo1, c0);
            let c1 = _mm512_add_epi64(_mm512_srli_epi64::<44>(t1), _mm512_slli_epi64::<8>(hi1));
            let l1 = _mm512_and_si512(t1, m44);
            let t2 = _mm512_add_epi64(lo2, c1);
            let c2 = _mm512_add_epi64(_mm512_srli_epi64::<42>(t2), _mm512_slli_epi64::<10>(hi2));
            let l2 = _mm512_and_si512(t2, m42);
            let l0 = _mm512_add_epi64(l0, _mm512_add_epi64(c2, _mm512_slli_epi64::<2>(c2)));
            let l1 = _mm512_add_epi64(l1, _mm512_srli_epi64::<44>(l0));
            [_mm512_and_si512(l0, m44), l1, l2]
        }
    }

    /// Eight interleaved Horner sums. With groups G_1..G_q absorbed (lane k of a group being
    /// its block k), lane k holds sum_i m_{i,k} r^(8(q-i)); [`Lanes::sum`] multiplies lane k
    /// by r^(8-k) and adds the lanes, which gives sum_j m_j r^(n-j+1) over the n = 8q blocks,
    /// the value Horner's rule would have reached.
    pub(super) struct Lanes {
        pub(super) h: [__m512i; 3],
        pub(super) started: bool,
        pub(super) r8: [__m512i; 3],
        pub(super) s8: [__m512i; 2],
        last_r: [__m512i; 3],
        last_s: [__m512i; 2],
        pub(super) even: __m512i,
        pub(super) odd: __m512i,
    }

    impl Lanes {
        /// # Safety
        /// The CPU must support AVX-512F and AVX-512 IFMA.
        #[target_feature(enable = "avx512f,avx512ifma")]
        pub(super) unsafe fn new(r: &Limbs) -> Lanes {
            // SAFETY: compiled with the features `new_inline` needs.
            unsafe { Self::new_inline(r) }
        }

        /// The powers r^1..r^8 in the lanes by doubling: every lane starts at r, then lanes
        /// 1, 3, 5, 7 are multiplied by r, lanes 2, 3, 6, 7 by r^2 and lanes 4-7 by r^4 (the
        /// other lanes by 1), which leaves r^(k+1) in lane k: three vector multiplies instead
        /// of seven scalar ones and eight-lane gathers. Always inlined, without target features
        /// of its own, so that it can run between ChaCha20 rounds.
        ///
        /// # Safety
        /// Only from code compiled with AVX-512F and IFMA enabled.
        #[inline(always)]
        pub(super) unsafe fn new_inline(r: &Limbs) -> Lanes {
            // SAFETY: the caller runs with AVX-512F and IFMA (this function's contract).
            unsafe {
                // Macros, not closures: see `mul`.
                macro_rules! times20 {
                    ($x:expr) => {{
                        let x = $x;
                        _mm512_add_epi64(_mm512_slli_epi64::<4>(x), _mm512_slli_epi64::<2>(x))
                    }};
                }
                macro_rules! lane {
                    ($v:expr, $k:expr) => {{
                        let (v, idx) = ($v, _mm512_set1_epi64($k));
                        [
                            _mm512_permutexvar_epi64(idx, v[0]),
                            _mm512_permutexvar_epi64(idx, v[1]),
                            _mm512_permutexvar_epi64(idx, v[2]),
                        ]
                    }};
                }
                // Multiplies lanes of `p` by `x` where `mask` has a bit, by 1 elsewhere.
                macro_rules! step {
                    ($p:expr, $x:expr, $mask:expr) => {{
                        let (x, mask): ([__m512i; 3], __mmask8) = ($x, $mask);
                        let m = [
                            _mm512_mask_blend_epi64(mask, _mm512_set1_epi64(1), x[0]),
                            _mm512_maskz_mov_epi64(mask, x[1]),
                            _mm512_maskz_mov_epi64(mask, x[2]),
                        ];
                        mul($p, &m, &[times20!(m[1]), times20!(m[2])])
                    }};
                }
                let r1 = [
                    _mm512_set1_epi64(r.0[0] as i64),
                    _mm512_set1_epi64(r.0[1] as i64),
                    _mm512_set1_epi64(r.0[2] as i64),
                ];
                let p = step!(r1, r1, 0b1010_1010);
                let p = step!(p, lane!(&p, 1), 0b1100_1100);
                let p = step!(p, lane!(&p, 3), 0b1111_0000);
                let r8 = lane!(&p, 7);
                // Lane k of the last step takes r^(8-k): p reversed.
                let reverse = _mm512_set_epi64(0, 1, 2, 3, 4, 5, 6, 7);
                let last_r = [
                    _mm512_permutexvar_epi64(reverse, p[0]),
                    _mm512_permutexvar_epi64(reverse, p[1]),
                    _mm512_permutexvar_epi64(reverse, p[2]),
                ];
                Lanes {
                    h: [_mm512_setzero_si512(); 3],
                    started: false,
                    s8: [times20!(r8[1]), times20!(r8[2])],
                    r8,
                    last_s: [times20!(last_r[1]), times20!(last_r[2])],
                    last_r,
                    even: _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0),
                    odd: _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1),
                }
            }
        }

        /// H = H * r^8 + M, M being `group`'s eight blocks.
        ///
        /// # Safety
        /// As for [`Lanes::new`].
        #[target_feature(enable = "avx512f,avx512ifma")]
        pub(super) unsafe fn absorb(&mut self, group: &[u8; 128]) {
            // SAFETY: this function is compiled with the features `absorb_inline` needs.
            unsafe { self.absorb_inline(group) }
        }

        /// [`Lanes::absorb`], always inlined and without target features of its own.
        ///
        /// # Safety
        /// Only from code compiled with AVX-512F and IFMA enabled.
        #[inline(always)]
        pub(super) unsafe fn absorb_inline(&mut self, group: &[u8; 128]) {
            // SAFETY: the caller runs with AVX-512F and IFMA; `group` is 128 readable bytes
            // (unaligned loads of 64 bytes at 0 and 64).
            unsafe {
                let a = _mm512_loadu_si512(group.as_ptr().cast());
                let b = _mm512_loadu_si512(group.as_ptr().add(64).cast());
                // Lane k: the low and high 64 bits of block k.
                let lo = _mm512_permutex2var_epi64(a, self.even, b);
                let hi = _mm512_permutex2var_epi64(a, self.odd, b);
                let m44 = _mm512_set1_epi64(MASK44 as i64);
                let m0 = _mm512_and_si512(lo, m44);
                let m1 =
                    _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64::<44>(lo), _mm512_slli_epi64::<20>(hi)), m44);
                let m2 = _mm512_or_si512(_mm512_srli_epi64::<24>(hi), _mm512_set1_epi64(HIBIT as i64));
                let h = if self.started { mul(self.h, &self.r8, &self.s8) } else { [_mm512_setzero_si512(); 3] };
                self.started = true;
                self.h = [_mm512_add_epi64(h[0], m0), _mm512_add_epi64(h[1], m1), _mm512_add_epi64(h[2], m2)];
            }
        }

        /// The lanes' total, carried; zero when nothing was absorbed.
        ///
        /// # Safety
        /// As for [`Lanes::new`].
        #[target_feature(enable = "avx512f,avx512ifma")]
        #[inline]
        pub(super) unsafe fn sum(self) -> Limbs {
            if !self.started {
                return Limbs::default();
            }
            // SAFETY: compiled with the features `mul` needs.
            let h = unsafe { mul(self.h, &self.last_r, &self.last_s) };
            let mut out = Limbs([
                _mm512_reduce_add_epi64(h[0]) as u64,
                _mm512_reduce_add_epi64(h[1]) as u64,
                _mm512_reduce_add_epi64(h[2]) as u64,
            ]);
            out.carry();
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain Poly1305 of a message (no AEAD padding), scalar only: for the RFC's vector.
    fn poly1305(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
        let r = clamp(key);
        let mut h = Limbs::default();
        for chunk in msg.chunks(16) {
            let mut b = [0u8; 17];
            b[..chunk.len()].copy_from_slice(chunk);
            b[chunk.len()] = 1;
            let t0 = u64::from_le_bytes(b[..8].try_into().unwrap());
            let t1 = u64::from_le_bytes(b[8..16].try_into().unwrap());
            let m = Limbs([t0 & MASK44, ((t0 >> 44) | (t1 << 20)) & MASK44, (t1 >> 24) | (u64::from(b[16]) << 40)]);
            h.add(&m);
            h = h.mul(&r);
        }
        h.finish(key[16..].try_into().unwrap())
    }

    #[test]
    fn rfc8439_2_5_2_vector() {
        let key: [u8; 32] =
            *crate::noise::keys::parse_hex_key("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
                .unwrap();
        let tag = poly1305(&key, b"Cryptographic Forum Research Group");
        assert_eq!(crate::noise::keys::hex(&tag), "a8061dc1305136c6c22b8baf0c0127a9");
    }

    /// The eight-lane code (where the CPU has it) gives what the one-block-at-a-time code gives,
    /// for every length up to 1,100 bytes and every split of groups fed before `finish`.
    #[test]
    fn lanes_agree_with_horner() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(91).wrapping_add(5));
        for len in 0..1100usize {
            let ct: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
            let mut padded = ct.clone();
            padded.resize(len.div_ceil(16) * 16, 0);
            padded.extend_from_slice(&0u64.to_le_bytes());
            padded.extend_from_slice(&(len as u64).to_le_bytes());
            let expected = poly1305(&key, &padded);
            assert_eq!(AeadMac::new(&key, len).finish(&ct), expected, "all at finish, len {len}");
            let mut mac = AeadMac::new(&key, len);
            #[cfg(target_arch = "x86_64")]
            if mac.vector {
                // SAFETY: `vector` is set only where the CPU has the features these need.
                let mut lanes = unsafe { ifma::Lanes::new(&mac.r) };
                for g in 0..3.min(len / 128) {
                    // SAFETY: as above.
                    unsafe { lanes.absorb(ct[g * 128..(g + 1) * 128].try_into().unwrap()) };
                    mac.groups += 1;
                }
                mac.lanes = Some(lanes);
            }
            assert_eq!(mac.finish(&ct), expected, "three groups first, len {len}");
        }
    }

    #[test]
    fn values_at_and_above_p_reduce() {
        // h = p exactly must give tag = s; h = p + 1 gives s + 1.
        let p = Limbs([MASK44 - 4, MASK44, MASK42]);
        assert_eq!(p.finish(&[0; 16]), [0; 16]);
        let p1 = Limbs([MASK44 - 3, MASK44, MASK42]);
        let mut one = [0u8; 16];
        one[0] = 1;
        assert_eq!(p1.finish(&[0; 16]), one);
    }
}
