//! What a TUN read with offloads goes through: the virtio-net header (`sys::tun::VirtioNetHdr`,
//! read and written back byte for byte) and the split of a super-segment into packets. veil's
//! reads split through tun-rs (`recv_multiple`, whose preparation of the header is private to
//! tun-rs), so this target prepares the header the same way (the transport header length taken
//! from the packet, not from the header) and calls the splitter, `tun_rs::gso_split`, with at
//! most the 128 buffers veil gives it. Checked on every split: the
//! payloads, in order, are the super-segment's payload; each segment is at most `gso_size`
//! bytes of it; each segment's IP length is its length; its checksums verify with veil's own
//! checksum code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::datapath::checksum;
use veil::sys::tun::{HEADROOM, MAX_SEGMENTS, VirtioNetHdr};

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VirtioNetHdr::read(data) else {
        assert!(data.len() < HEADROOM);
        return;
    };
    let mut back = [0u8; HEADROOM];
    hdr.write(&mut back);
    assert_eq!(back, data[..HEADROOM]);

    let mut packet = data[HEADROOM..].to_vec();
    if hdr.gso_type == VirtioNetHdr::GSO_NONE || hdr.gso_size == 0 {
        return;
    }
    let v6 = match packet.first().map(|b| b >> 4) {
        Some(4) => false,
        Some(6) => true,
        _ => return,
    };
    let tcp = hdr.gso_type & 0x7f != VirtioNetHdr::GSO_UDP_L4;
    let start = usize::from(hdr.csum_start);
    let l4h = if tcp {
        let Some(&offset) = packet.get(start + 12) else { return };
        usize::from(offset >> 4) * 4
    } else {
        8
    };
    if tcp && !(20..=60).contains(&l4h) {
        return;
    }
    let Ok(hdr_len) = u16::try_from(start + l4h) else { return };
    let tun_hdr = tun_rs::VirtioNetHdr {
        flags: hdr.flags,
        gso_type: hdr.gso_type,
        hdr_len,
        gso_size: hdr.gso_size,
        csum_start: hdr.csum_start,
        csum_offset: hdr.csum_offset,
    };
    let hdr_len = usize::from(hdr_len);
    let gso = usize::from(hdr.gso_size);
    let payload = packet.get(hdr_len..).unwrap_or_default().to_vec();
    let count = payload.len().div_ceil(gso).min(MAX_SEGMENTS);
    let mut bufs = vec![vec![0u8; (hdr_len + gso).min(70_000)]; count.max(1)];
    let mut sizes = vec![0usize; bufs.len()];
    let Ok(n) = tun_rs::gso_split(&mut packet, tun_hdr, &mut bufs, &mut sizes, 0, v6) else { return };

    let mut joined = Vec::new();
    for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
        let s = &buf[..size];
        assert!(size > hdr_len && size - hdr_len <= gso, "segment of {size} bytes");
        joined.extend_from_slice(&s[hdr_len..]);
        if v6 {
            assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])) + 40, size);
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), size);
            assert_eq!(checksum::fold(checksum::add(0, &s[..start])), 0xffff, "IPv4 header checksum");
        }
        let (src, dst) = if v6 { (&s[8..24], &s[24..40]) } else { (&s[12..16], &s[16..20]) };
        let proto = if tcp { 6 } else { 17 };
        let sum = checksum::add(checksum::pseudo_header(src, dst, proto, size - start), &s[start..]);
        assert_eq!(checksum::fold(sum), 0xffff, "transport checksum of segment");
    }
    assert_eq!(joined, payload, "the segments' payloads are the super-segment's");
});
