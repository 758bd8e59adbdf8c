//! ChaCha20 (RFC 8439 section 2.3) for AVX-512: 16, 8 or 4 blocks at once, one vector per state
//! word (lane i holding block i), so a round is plain adds, xors and `vprold` rotations with no
//! shuffles; the 16 word-vectors are transposed into blocks once, after the 20 rounds.
//!
//! Width by what is left: more than 8 blocks take the 512-bit registers (16 blocks), more than
//! 4 the 256-bit ones (8), the rest the 128-bit ones (4). A full WireGuard packet of 1,420 bytes
//! (1,424 padded) needs block 0 (the Poly1305 key) and 23 more: one pass of 16 and one of 8.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The 16-word ChaCha20 input: constants, key, block counter (word 12) and nonce.
pub type State = [u32; 16];

/// The input block for `key` and a 96-bit `nonce` (as three little-endian words) at block 0.
pub fn state(key: &[u32; 8], nonce: [u32; 3]) -> State {
    let mut s = [0u32; 16];
    s[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    s[4..12].copy_from_slice(key);
    s[13..].copy_from_slice(&nonce);
    s
}

/// Work to run between ChaCha20's double rounds (ten times per chunk), independent of them.
pub trait Between {
    /// One step of that work.
    ///
    /// # Safety
    /// Called only from code compiled with AVX-512F, BW, VL and IFMA (implementations may use
    /// them; they should be `#[inline(always)]` so that no call spills the round state).
    unsafe fn between(&mut self);
}

/// Nothing between the rounds.
pub struct Nothing;

impl Between for Nothing {
    #[inline(always)]
    unsafe fn between(&mut self) {}
}

/// Up to 16 blocks of keystream, each as one 512-bit vector in byte order; `len` are valid.
pub struct Chunk {
    blocks: [__m512i; 16],
    len: usize,
}

macro_rules! quarter_round {
    ($x:ident, $add:ident, $xor:ident, $rol:ident, $a:expr, $b:expr, $c:expr, $d:expr) => {
        $x[$a] = $add($x[$a], $x[$b]);
        $x[$d] = $rol::<16>($xor($x[$d], $x[$a]));
        $x[$c] = $add($x[$c], $x[$d]);
        $x[$b] = $rol::<12>($xor($x[$b], $x[$c]));
        $x[$a] = $add($x[$a], $x[$b]);
        $x[$d] = $rol::<8>($xor($x[$d], $x[$a]));
        $x[$c] = $add($x[$c], $x[$d]);
        $x[$b] = $rol::<7>($xor($x[$b], $x[$c]));
    };
}

/// The 20 rounds and the final addition on word-vectors `x`, calling `$between` after each
/// double round (other work to interleave: see `Chunk::fill_with`).
macro_rules! rounds {
    ($x:ident, $add:ident, $xor:ident, $rol:ident, $between:expr) => {{
        let init = $x;
        for _ in 0..10 {
            quarter_round!($x, $add, $xor, $rol, 0, 4, 8, 12);
            quarter_round!($x, $add, $xor, $rol, 1, 5, 9, 13);
            quarter_round!($x, $add, $xor, $rol, 2, 6, 10, 14);
            quarter_round!($x, $add, $xor, $rol, 3, 7, 11, 15);
            quarter_round!($x, $add, $xor, $rol, 0, 5, 10, 15);
            quarter_round!($x, $add, $xor, $rol, 1, 6, 11, 12);
            quarter_round!($x, $add, $xor, $rol, 2, 7, 8, 13);
            quarter_round!($x, $add, $xor, $rol, 3, 4, 9, 14);
            $between;
        }
        for i in 0..16 {
            $x[i] = $add($x[i], init[i]);
        }
    }};
}

/// Within each 128-bit lane, turns word-vectors `x[4g..4g+4]` into `y[j]`, whose lane L holds
/// words 4g..4g+3 of block 4L + j.
macro_rules! transpose_4x4 {
    ($x:ident, $g:expr, $lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident) => {{
        let t0 = $lo32($x[4 * $g], $x[4 * $g + 1]);
        let t1 = $hi32($x[4 * $g], $x[4 * $g + 1]);
        let t2 = $lo32($x[4 * $g + 2], $x[4 * $g + 3]);
        let t3 = $hi32($x[4 * $g + 2], $x[4 * $g + 3]);
        [$lo64(t0, t2), $hi64(t0, t2), $lo64(t1, t3), $hi64(t1, t3)]
    }};
}

/// `transpose_4x4!` of all four groups of word-vectors: `y[g][j]`.
macro_rules! transpose_groups {
    ($x:ident, $lo32:ident, $hi32:ident, $lo64:ident, $hi64:ident) => {
        [
            transpose_4x4!($x, 0, $lo32, $hi32, $lo64, $hi64),
            transpose_4x4!($x, 1, $lo32, $hi32, $lo64, $hi64),
            transpose_4x4!($x, 2, $lo32, $hi32, $lo64, $hi64),
            transpose_4x4!($x, 3, $lo32, $hi32, $lo64, $hi64),
        ]
    };
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
#[inline]
fn blocks16(state: &State, counter: u32, between: &mut impl Between) -> [__m512i; 16] {
    let mut x = [_mm512_setzero_si512(); 16];
    for i in 0..16 {
        x[i] = _mm512_set1_epi32(state[i] as i32);
    }
    let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    x[12] = _mm512_add_epi32(_mm512_set1_epi32(counter as i32), lanes);
    // SAFETY: compiled with every feature `Between` may use.
    rounds!(x, _mm512_add_epi32, _mm512_xor_si512, _mm512_rol_epi32, unsafe { between.between() });
    let y: [[__m512i; 4]; 4] = transpose_groups!(
        x,
        _mm512_unpacklo_epi32,
        _mm512_unpackhi_epi32,
        _mm512_unpacklo_epi64,
        _mm512_unpackhi_epi64
    );
    let mut out = [_mm512_setzero_si512(); 16];
    for j in 0..4 {
        // Block 4L + j is lane L of y[0][j], y[1][j], y[2][j], y[3][j]: a 4x4 transpose of lanes.
        let a = _mm512_shuffle_i32x4::<0x44>(y[0][j], y[1][j]);
        let b = _mm512_shuffle_i32x4::<0xee>(y[0][j], y[1][j]);
        let c = _mm512_shuffle_i32x4::<0x44>(y[2][j], y[3][j]);
        let d = _mm512_shuffle_i32x4::<0xee>(y[2][j], y[3][j]);
        out[j] = _mm512_shuffle_i32x4::<0x88>(a, c);
        out[4 + j] = _mm512_shuffle_i32x4::<0xdd>(a, c);
        out[8 + j] = _mm512_shuffle_i32x4::<0x88>(b, d);
        out[12 + j] = _mm512_shuffle_i32x4::<0xdd>(b, d);
    }
    out
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
#[inline]
fn blocks8(state: &State, counter: u32, between: &mut impl Between) -> [__m512i; 8] {
    let mut x = [_mm256_setzero_si256(); 16];
    for i in 0..16 {
        x[i] = _mm256_set1_epi32(state[i] as i32);
    }
    let lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    x[12] = _mm256_add_epi32(_mm256_set1_epi32(counter as i32), lanes);
    // SAFETY: compiled with every feature `Between` may use.
    rounds!(x, _mm256_add_epi32, _mm256_xor_si256, _mm256_rol_epi32, unsafe { between.between() });
    let y: [[__m256i; 4]; 4] = transpose_groups!(
        x,
        _mm256_unpacklo_epi32,
        _mm256_unpackhi_epi32,
        _mm256_unpacklo_epi64,
        _mm256_unpackhi_epi64
    );
    let mut out = [_mm512_setzero_si512(); 8];
    for j in 0..4 {
        // Block j is the low lanes of y[0..4][j], block 4 + j their high lanes.
        let join = |lo: __m256i, hi: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        out[j] = join(
            _mm256_permute2x128_si256::<0x20>(y[0][j], y[1][j]),
            _mm256_permute2x128_si256::<0x20>(y[2][j], y[3][j]),
        );
        out[4 + j] = join(
            _mm256_permute2x128_si256::<0x31>(y[0][j], y[1][j]),
            _mm256_permute2x128_si256::<0x31>(y[2][j], y[3][j]),
        );
    }
    out
}

/// Four blocks "row-wise": each 512-bit register holds one row of the 4x4 state for four
/// blocks (one per 128-bit lane), so a quarter round on the columns is 12 operations for all
/// four blocks and the diagonals are reached by rotating rows 1-3 within their lanes. A third
/// of the work of four blocks column-wise in 128-bit registers, though with a longer
/// dependency chain: it serves the last few blocks of a message.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
#[inline]
fn blocks4(state: &State, counter: u32, between: &mut impl Between) -> [__m512i; 4] {
    let row = |i: usize| {
        let r = _mm_set_epi32(
            state[4 * i + 3] as i32,
            state[4 * i + 2] as i32,
            state[4 * i + 1] as i32,
            state[4 * i] as i32,
        );
        _mm512_broadcast_i32x4(r)
    };
    let (mut a, mut b, mut c) = (row(0), row(1), row(2));
    // Lane L's block counter is counter + L.
    let mut d = _mm512_add_epi32(row(3), _mm512_set_epi32(0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0));
    d = _mm512_add_epi32(d, _mm512_maskz_set1_epi32(0x1111, counter as i32));
    let init = [a, b, c, d];
    macro_rules! rows_round {
        () => {
            a = _mm512_add_epi32(a, b);
            d = _mm512_rol_epi32::<16>(_mm512_xor_si512(d, a));
            c = _mm512_add_epi32(c, d);
            b = _mm512_rol_epi32::<12>(_mm512_xor_si512(b, c));
            a = _mm512_add_epi32(a, b);
            d = _mm512_rol_epi32::<8>(_mm512_xor_si512(d, a));
            c = _mm512_add_epi32(c, d);
            b = _mm512_rol_epi32::<7>(_mm512_xor_si512(b, c));
        };
    }
    for _ in 0..10 {
        rows_round!();
        // Diagonals: row 1 rotated left by one word, row 2 by two, row 3 by three.
        b = _mm512_shuffle_epi32::<0x39>(b);
        c = _mm512_shuffle_epi32::<0x4e>(c);
        d = _mm512_shuffle_epi32::<0x93>(d);
        rows_round!();
        b = _mm512_shuffle_epi32::<0x93>(b);
        c = _mm512_shuffle_epi32::<0x4e>(c);
        d = _mm512_shuffle_epi32::<0x39>(d);
        // SAFETY: compiled with every feature `Between` may use.
        unsafe { between.between() };
    }
    let [a, b, c, d] = [
        _mm512_add_epi32(a, init[0]),
        _mm512_add_epi32(b, init[1]),
        _mm512_add_epi32(c, init[2]),
        _mm512_add_epi32(d, init[3]),
    ];
    // Block L is lane L of a, b, c and d: a 4x4 transpose of 128-bit lanes.
    let ab_lo = _mm512_shuffle_i32x4::<0x44>(a, b);
    let ab_hi = _mm512_shuffle_i32x4::<0xee>(a, b);
    let cd_lo = _mm512_shuffle_i32x4::<0x44>(c, d);
    let cd_hi = _mm512_shuffle_i32x4::<0xee>(c, d);
    [
        _mm512_shuffle_i32x4::<0x88>(ab_lo, cd_lo),
        _mm512_shuffle_i32x4::<0xdd>(ab_lo, cd_lo),
        _mm512_shuffle_i32x4::<0x88>(ab_hi, cd_hi),
        _mm512_shuffle_i32x4::<0xdd>(ab_hi, cd_hi),
    ]
}

impl Chunk {
    /// An empty chunk, to be filled.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn new() -> Chunk {
        Chunk { blocks: [_mm512_setzero_si512(); 16], len: 0 }
    }

    /// Fills the chunk with keystream blocks from `counter` on, as many as one pass of the
    /// width that suits `left` (the blocks still needed) gives: 16, 8 or 4.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn fill(&mut self, state: &State, counter: u32, left: usize) {
        self.fill_with(state, counter, left, &mut Nothing);
    }

    /// As [`Chunk::fill`], running `between` after each of the ten double rounds: work that
    /// does not depend on this keystream (Poly1305 of earlier ciphertext) then runs on the
    /// execution ports the rounds leave idle.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn fill_with(&mut self, state: &State, counter: u32, left: usize, between: &mut impl Between) {
        self.len = if left > 8 {
            self.blocks = blocks16(state, counter, between);
            16
        } else if left > 4 {
            self.blocks[..8].copy_from_slice(&blocks8(state, counter, between));
            8
        } else {
            self.blocks[..4].copy_from_slice(&blocks4(state, counter, between));
            4
        };
    }

    /// Overwrites the keystream with zeros (volatile, so the stores are kept): it is as secret
    /// as the key for the rest of this message.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn wipe(&mut self) {
        for block in self.blocks.iter_mut() {
            // SAFETY: `block` is a valid, aligned, exclusive reference to a vector.
            unsafe { std::ptr::write_volatile(block, _mm512_setzero_si512()) };
        }
    }

    /// How many blocks the chunk holds.
    pub fn count(&self) -> usize {
        self.len
    }

    /// The first 32 bytes of block 0 (with counter 0 this is the Poly1305 one-time key).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn first_32(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // SAFETY: `out` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm512_castsi512_si256(self.blocks[0])) };
        out
    }

    /// XORs blocks `skip..` into `data` from its start on (block `skip` over bytes 0..64, and
    /// so on); returns how many bytes of `data` it covered (at most its length).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512ifma")]
    #[inline]
    pub fn xor_into(&self, skip: usize, data: &mut [u8]) -> usize {
        let mut done = 0;
        for block in &self.blocks[skip..self.len] {
            let left = data.len() - done;
            if left == 0 {
                break;
            }
            let p = data[done..].as_mut_ptr();
            if left >= 64 {
                // SAFETY: at least 64 bytes from `p` lie in `data`; unaligned load and store.
                unsafe {
                    let v = _mm512_loadu_si512(p.cast());
                    _mm512_storeu_si512(p.cast(), _mm512_xor_si512(v, *block));
                }
                done += 64;
            } else {
                let mask: __mmask64 = (1u64 << left) - 1;
                // SAFETY: the mask selects only the `left` bytes from `p` that lie in `data`;
                // masked-off bytes are neither read (no fault) nor written.
                unsafe {
                    let v = _mm512_maskz_loadu_epi8(mask, p.cast());
                    _mm512_mask_storeu_epi8(p.cast(), mask, _mm512_xor_si512(v, *block));
                }
                done += left;
            }
        }
        done
    }
}
