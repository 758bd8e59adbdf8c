//! Receive coalescing (`datapath::gro::Coalescer`), then the split the kernel does of what it
//! writes (tun-rs's `gso_split`, which follows the kernel's segmentation). The first byte says
//! whether TCP and UDP may be coalesced; the rest is packets (`[len: u16 LE][bytes]`). Checked:
//! every buffer is at most 64 KiB after its header; a buffer passed as it came is marked
//! checked and holds one input packet unchanged; a coalesced buffer splits cleanly; and, flow
//! by flow, the packets the kernel sees are the packets that came in, in their order, but for
//! the IPv4 ID and the checksums (rewritten by the split) and the TCP urgent pointer of
//! segments without URG (meaningless then; the kernel's GRO does not compare it either, and
//! the split repeats the first segment's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::datapath::gro::Coalescer;
use veil::sys::tun::{HEADROOM, VirtioNetHdr};

/// A flow, as the coalescer keys them: IP version and protocol, addresses, ports.
fn flow(p: &[u8]) -> Option<Vec<u8>> {
    let (iph, proto, addrs) = match p.first()? >> 4 {
        4 if p.len() >= 20 => (usize::from(p[0] & 0x0f) * 4, p[9], &p[12..20]),
        6 if p.len() >= 40 => (40, p[6], &p[8..40]),
        _ => return None,
    };
    if !(proto == 6 || proto == 17) {
        return None;
    }
    let ports = p.get(iph..iph + 4)?;
    Some([&[p[0] >> 4, proto][..], addrs, ports].concat())
}

/// The packet with what a split may rewrite cleared: IPv4 ID and header checksum, the
/// transport checksum, a TCP urgent pointer without URG.
fn masked(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let v4 = p[0] >> 4 == 4;
    let (iph, proto) = if v4 { (usize::from(p[0] & 0x0f) * 4, p[9]) } else { (40, p[6]) };
    if v4 {
        p[4..6].fill(0);
        p[10..12].fill(0);
    }
    let at = iph + if proto == 6 { 16 } else { 6 };
    if let Some(c) = p.get_mut(at..at + 2) {
        c.fill(0);
    }
    if proto == 6
        && p.get(iph + 13).is_some_and(|f| f & 0x20 == 0)
        && let Some(urgent) = p.get_mut(iph + 18..iph + 20)
    {
        urgent.fill(0);
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let packets: Vec<&[u8]> = veil_fuzz::records(rest).map(|(_, body)| body).take(200).collect();
    let mut c = Coalescer::new(flags & 1 != 0, flags & 2 != 0);
    c.clear();
    for p in &packets {
        c.push(p);
    }
    c.finish();

    let mut seen: Vec<(Vec<u8>, bool)> = Vec::new();
    for buf in c.packets() {
        assert!(buf.len() >= HEADROOM && buf.len() - HEADROOM <= 65535, "a write of {} bytes", buf.len());
        let hdr = VirtioNetHdr::read(buf).unwrap();
        let mut p = buf[HEADROOM..].to_vec();
        if hdr.gso_type == VirtioNetHdr::GSO_NONE {
            assert_eq!(hdr, VirtioNetHdr { flags: VirtioNetHdr::F_DATA_VALID, ..VirtioNetHdr::default() });
            seen.push((p, false));
            continue;
        }
        assert_eq!(hdr.flags, VirtioNetHdr::F_NEEDS_CSUM);
        let v6 = p[0] >> 4 == 6;
        let tun_hdr = tun_rs::VirtioNetHdr {
            flags: hdr.flags,
            gso_type: hdr.gso_type,
            hdr_len: hdr.hdr_len,
            gso_size: hdr.gso_size,
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
        };
        let (h, gso) = (usize::from(hdr.hdr_len), usize::from(hdr.gso_size));
        let count = (p.len() - h).div_ceil(gso);
        assert!(count >= 2, "a coalesced packet of one segment");
        let mut bufs = vec![vec![0u8; h + gso]; count];
        let mut sizes = vec![0usize; count];
        let n = tun_rs::gso_split(&mut p, tun_hdr, &mut bufs, &mut sizes, 0, v6)
            .unwrap_or_else(|e| panic!("the kernel would refuse a coalesced packet: {e} ({hdr:?})"));
        assert_eq!(n, count);
        for (b, &size) in bufs.iter().zip(&sizes) {
            seen.push((b[..size].to_vec(), true));
        }
    }
    assert_eq!(seen.len(), packets.len(), "as many packets out as in");
    // Flow by flow (and the packets of no flow among themselves), in order.
    let mut keys: Vec<Option<Vec<u8>>> = packets.iter().map(|p| flow(p)).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let ins: Vec<&[u8]> = packets.iter().copied().filter(|p| flow(p) == key).collect();
        let outs: Vec<&(Vec<u8>, bool)> = seen.iter().filter(|(p, _)| flow(p) == key).collect();
        assert_eq!(ins.len(), outs.len(), "flow {key:02x?}");
        for (a, (b, split)) in ins.iter().zip(outs) {
            if *split {
                assert_eq!(masked(a), masked(b), "flow {key:02x?}: a segment changed");
            } else {
                assert_eq!(a, b, "flow {key:02x?}: a packet passed as it came changed");
            }
        }
    }
});
