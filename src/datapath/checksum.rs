//! The Internet checksum (RFC 1071): a ones' complement sum of 16-bit big-endian words, and the
//! TCP/UDP pseudo-header (RFC 793, RFC 768; RFC 8200 section 8.1 for IPv6).
//!
//! Sums are kept unfolded in a `u64` so that eight bytes are added per step; [`fold`] turns one
//! into the 16-bit value. Adding 16-bit words in any order and grouping gives the same folded
//! result, which is what lets eight-byte words stand in for four 16-bit ones.

/// Adds `bytes` to the unfolded sum `acc`. An odd trailing byte counts as the high half of a
/// word, as RFC 1071 says.
///
/// The words are summed in the machine's (little-endian) order, four independent 64-bit
/// accumulators of 32-bit halves at a time, and the folded result is byte-swapped at the end:
/// RFC 1071 section 2 (B), the sum is independent of byte order up to that swap. That leaves
/// no byte swap per word and lets the loop run at several words per cycle.
pub fn add(acc: u64, bytes: &[u8]) -> u64 {
    let mut lanes = [0u64; 4];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let v = u64::from_le_bytes(w.try_into().expect("eight bytes"));
            // Two 32-bit halves: no carry is lost for inputs below 2^32 blocks.
            *lane += (v & 0xffff_ffff) + (v >> 32);
        }
    }
    let mut sum = lanes.iter().sum::<u64>();
    let rest = blocks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_le_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        // The high half of a big-endian word is the low half of a little-endian one.
        sum += u64::from(*last);
    }
    acc + u64::from(fold(sum).swap_bytes())
}

/// Folds an unfolded sum into 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The unfolded sum of the TCP/UDP pseudo-header: source and destination addresses (4 or 16
/// bytes each), the protocol number and the transport length.
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: usize) -> u64 {
    let acc = add(add(0, src), dst);
    acc + u64::from(protocol) + len as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 written the obvious way: 16-bit words, end-around carry at every step.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for c in bytes.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // The example of RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }

    #[test]
    fn an_ipv4_header_with_its_checksum_sums_to_all_ones() {
        // The usual textbook header, its checksum b861 in bytes 10-11.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(fold(add(0, &h)), 0xffff);
    }

    proptest! {
        #[test]
        fn equals_the_reference_for_any_bytes_and_split(bytes in proptest::collection::vec(any::<u8>(), 0..3000), cut in 0usize..3000) {
            prop_assert_eq!(fold(add(0, &bytes)), reference(&bytes));
            // Sums of pieces add up when the cut falls on an even offset.
            let cut = (cut.min(bytes.len())) & !1;
            prop_assert_eq!(fold(add(add(0, &bytes[..cut]), &bytes[cut..])), reference(&bytes));
        }
    }
}
