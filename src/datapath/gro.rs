//! Receive-side coalescing (GRO in user space): consecutive TCP segments of one flow, and UDP
//! datagrams of one flow where the kernel takes them (USO), are joined into one large packet
//! before the TUN write, with a virtio-net header that tells the kernel how they were cut. The
//! kernel's TCP stack then handles one packet where it would have handled dozens.
//!
//! The rules follow the kernel's own GRO (net/ipv4/tcp_offload.c `tcp_gro_receive`, udp
//! likewise): a segment joins its flow's packet only if it continues it exactly (next sequence
//! number, same ACK, flags ACK or ACK|PSH, same window and TCP options, same IP TOS/TTL/flags),
//! carries as many bytes as the first (a shorter one, or one with PSH, ends the packet) and
//! keeps the packet under 64 KiB. IPv4 with options, fragments, IPv6 extension headers and
//! anything else go through unchanged.
//!
//! Checksums are not verified here, and every packet goes to the kernel marked as checked
//! (`VIRTIO_NET_HDR_F_DATA_VALID`; a coalesced one carries the partial checksum the kernel
//! completes if it forwards it): each packet arrived inside a data message whose Poly1305 tag
//! authenticated every byte, so nothing changed it on the way. This is what the kernel's own
//! WireGuard does (drivers/net/wireguard/receive.c marks decrypted packets
//! CHECKSUM_UNNECESSARY at every level, for the same reason).
//!
//! Each packet is copied once, into its output buffer. Pure code: no system calls.

use super::checksum;
use crate::sys::tun::{HEADROOM, VirtioNetHdr};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Most packets built by coalescing in one batch; further candidates pass through unchanged.
const MAX_GROUPS: usize = 256;
/// Largest IP packet (the IPv4 total length and IPv6 payload length are 16 bits).
const MAX_IP: usize = 65535;
/// The header of a packet written as it came: no segmentation, checksums known good.
const AS_IS: VirtioNetHdr = VirtioNetHdr {
    flags: VirtioNetHdr::F_DATA_VALID,
    gso_type: VirtioNetHdr::GSO_NONE,
    hdr_len: 0,
    gso_size: 0,
    csum_start: 0,
    csum_offset: 0,
};

/// What identifies a flow: protocol, addresses and ports.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    proto: u8,
    v6: bool,
    /// Source then destination address (IPv4 in the first 8 bytes).
    addrs: [u8; 32],
    /// Source and destination port.
    ports: [u8; 4],
}

impl Key {
    /// The flow of any IPv4/IPv6 packet with a TCP or UDP header in place (`None` otherwise),
    /// and its IP header length.
    fn of(p: &[u8]) -> Option<(Key, usize)> {
        let mut key = Key { proto: 0, v6: false, addrs: [0; 32], ports: [0; 4] };
        let iph = match p.first()? >> 4 {
            4 if p.len() >= 20 => {
                key.proto = p[9];
                key.addrs[..8].copy_from_slice(&p[12..20]);
                usize::from(p[0] & 0x0f) * 4
            }
            6 if p.len() >= 40 => {
                key.v6 = true;
                key.proto = p[6];
                key.addrs.copy_from_slice(&p[8..40]);
                40
            }
            _ => return None,
        };
        if !matches!(key.proto, PROTO_TCP | PROTO_UDP) || p.len() < iph + 4 {
            return None;
        }
        key.ports.copy_from_slice(&p[iph..iph + 4]);
        Some((key, iph))
    }
}

/// A TCP segment or UDP datagram that may be coalesced.
struct Segment {
    key: Key,
    /// IP and TCP/UDP header lengths.
    iph: usize,
    l4h: usize,
    seq: u32,
    /// TCP: the acknowledgement number (segments of one packet must share it).
    ack: u32,
    psh: bool,
}

fn u16_at(b: &[u8], i: usize) -> usize {
    usize::from(u16::from_be_bytes([b[i], b[i + 1]]))
}

impl Segment {
    /// Parses `p` (a whole IP packet) as a candidate, checking its lengths.
    fn parse(p: &[u8]) -> Option<Segment> {
        let (key, iph) = Key::of(p)?;
        let whole = if key.v6 {
            u16_at(p, 4) + 40 == p.len()
        } else {
            // No IP options, the whole packet, not a fragment (DF may be set).
            iph == 20 && u16_at(p, 2) == p.len() && u16_at(p, 6) & 0x3fff == 0
        };
        if !whole {
            return None;
        }
        let (l4h, seq, ack, psh) = match key.proto {
            PROTO_TCP => {
                if p.len() < iph + 20 {
                    return None;
                }
                let l4h = usize::from(p[iph + 12] >> 4) * 4;
                let flags = p[iph + 13];
                if l4h < 20 || p.len() <= iph + l4h || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
                    return None;
                }
                let seq = u32::from_be_bytes(p[iph + 4..iph + 8].try_into().ok()?);
                let ack = u32::from_be_bytes(p[iph + 8..iph + 12].try_into().ok()?);
                (l4h, seq, ack, flags & TCP_PSH != 0)
            }
            _ => {
                // A UDP checksum of zero (IPv4: none) cannot be partially offloaded.
                if p.len() <= iph + 8 || u16_at(p, iph + 4) != p.len() - iph || u16_at(p, iph + 6) == 0 {
                    return None;
                }
                (8, 0, 0, false)
            }
        };
        Some(Segment { key, iph, l4h, seq, ack, psh })
    }
}

/// A flow's packet being built in an output buffer.
struct Group {
    key: Key,
    /// Index of the output buffer.
    out: usize,
    iph: usize,
    l4h: usize,
    /// Payload bytes of the first segment: every segment but the last carries as many.
    gso: usize,
    segments: usize,
    next_seq: u32,
    ack: u32,
    /// No more segments may join (a short one or PSH came, or another packet of the flow).
    closed: bool,
}

/// Coalesces a batch of received packets into the buffers to write to the TUN.
pub struct Coalescer {
    tcp: bool,
    udp: bool,
    out: Vec<Vec<u8>>,
    count: usize,
    groups: Vec<Group>,
}

impl Coalescer {
    /// `tcp`/`udp`: whether the TUN takes coalesced TCP (TSO) and UDP (USO) packets.
    pub fn new(tcp: bool, udp: bool) -> Self {
        Coalescer { tcp, udp, out: Vec::new(), count: 0, groups: Vec::new() }
    }

    /// Starts a new batch (the buffers are kept for reuse).
    pub fn clear(&mut self) {
        self.count = 0;
        self.groups.clear();
    }

    /// A fresh output buffer holding the virtio-net header of a packet written as it came
    /// (checked, see the module doc) and then `packet`.
    fn start(&mut self, packet: &[u8]) -> usize {
        if self.count == self.out.len() {
            self.out.push(Vec::with_capacity(HEADROOM + 2048));
        }
        let b = &mut self.out[self.count];
        b.clear();
        b.resize(HEADROOM, 0);
        AS_IS.write(b);
        b.extend_from_slice(packet);
        self.count += 1;
        self.count - 1
    }

    /// Adds one IP packet (in arrival order).
    pub fn push(&mut self, packet: &[u8]) {
        let enabled = |c: &Coalescer, proto| if proto == PROTO_TCP { c.tcp } else { c.udp };
        let candidate = (self.tcp || self.udp).then(|| Segment::parse(packet)).flatten();
        let Some(seg) = candidate.filter(|s| enabled(self, s.key.proto)) else {
            // Whatever follows must not be joined to a packet written before this one: close
            // its flow (or, for a packet whose flow is unknown, every flow).
            let key = Key::of(packet).map(|(k, _)| k);
            for g in self.groups.iter_mut().filter(|g| key.is_none_or(|k| k == g.key)) {
                g.closed = true;
            }
            self.start(packet);
            return;
        };
        if let Some(g) = self.groups.iter().rposition(|g| !g.closed && g.key == seg.key) {
            if self.fits(g, &seg, packet) {
                let payload = &packet[seg.iph + seg.l4h..];
                let group = &mut self.groups[g];
                let out = &mut self.out[group.out];
                out.extend_from_slice(payload);
                if seg.psh {
                    // The packet ends with a push, as the kernel's GRO marks it.
                    out[HEADROOM + group.iph + 13] |= TCP_PSH;
                }
                group.segments += 1;
                group.next_seq = group.next_seq.wrapping_add(payload.len() as u32);
                group.closed = payload.len() < group.gso || seg.psh;
                return;
            }
            // The flow goes on in a packet of its own; the old one takes no more.
            self.groups[g].closed = true;
        }
        let out = self.start(packet);
        if self.groups.len() < MAX_GROUPS {
            let gso = packet.len() - seg.iph - seg.l4h;
            self.groups.push(Group {
                key: seg.key,
                out,
                iph: seg.iph,
                l4h: seg.l4h,
                gso,
                segments: 1,
                next_seq: seg.seq.wrapping_add(gso as u32),
                ack: seg.ack,
                closed: seg.psh,
            });
        }
    }

    /// Whether `seg` (the packet `p`) may join group `g`.
    fn fits(&self, g: usize, seg: &Segment, p: &[u8]) -> bool {
        let g = &self.groups[g];
        let first = &self.out[g.out][HEADROOM..];
        let payload = p.len() - seg.iph - seg.l4h;
        if seg.iph != g.iph || seg.l4h != g.l4h || payload > g.gso || first.len() + payload > MAX_IP {
            return false;
        }
        // IP fields that must agree: IPv4 TOS, flags and TTL; IPv6 class, flow label and hop limit.
        let ip_same = if seg.key.v6 {
            p[..4] == first[..4] && p[7] == first[7]
        } else {
            p[1] == first[1] && p[6] & 0xe0 == first[6] & 0xe0 && p[8] == first[8]
        };
        if !ip_same {
            return false;
        }
        if seg.key.proto == PROTO_UDP {
            return true;
        }
        let (t, f) = (&p[seg.iph..], &first[g.iph..]);
        // Data offset, flags (but PSH), window and options as the first segment's.
        seg.seq == g.next_seq
            && seg.ack == g.ack
            && t[12] == f[12]
            && t[13] & !TCP_PSH == f[13] & !TCP_PSH
            && t[14..16] == f[14..16]
            && t[20..seg.l4h] == f[20..g.l4h]
    }

    /// Finishes the batch: fixes the headers of every coalesced packet and writes every
    /// buffer's virtio-net header. Then [`Coalescer::packets`] gives what to write.
    pub fn finish(&mut self) {
        for g in &self.groups {
            let buf = &mut self.out[g.out];
            let hdr = if g.segments > 1 { coalesced(&mut buf[HEADROOM..], g) } else { AS_IS };
            hdr.write(&mut buf[..HEADROOM]);
        }
    }

    /// The buffers to write, in order: each a virtio-net header and a packet.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.out[..self.count].iter().map(Vec::as_slice)
    }
}

/// Rewrites the headers of a packet made of `g.segments` segments: lengths, the IPv4 header
/// checksum, and the TCP/UDP checksum field set to the pseudo-header sum for the kernel to
/// complete (CHECKSUM_PARTIAL); returns the virtio-net header that describes it.
fn coalesced(p: &mut [u8], g: &Group) -> VirtioNetHdr {
    let len = p.len();
    let l4len = len - g.iph;
    if g.key.v6 {
        p[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
    } else {
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[10..12].fill(0);
        let c = !checksum::fold(checksum::add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let (src, dst) = if g.key.v6 { (&p[8..24], &p[24..40]) } else { (&p[12..16], &p[16..20]) };
    let pseudo = checksum::fold(checksum::pseudo_header(src, dst, g.key.proto, l4len));
    let (gso_type, csum_offset) = match (g.key.proto, g.key.v6) {
        (PROTO_UDP, _) => {
            p[g.iph + 4..g.iph + 6].copy_from_slice(&(l4len as u16).to_be_bytes());
            (VirtioNetHdr::GSO_UDP_L4, 6)
        }
        (_, false) => (VirtioNetHdr::GSO_TCPV4, 16),
        (_, true) => (VirtioNetHdr::GSO_TCPV6, 16),
    };
    p[g.iph + csum_offset..g.iph + csum_offset + 2].copy_from_slice(&pseudo.to_be_bytes());
    VirtioNetHdr {
        flags: VirtioNetHdr::F_NEEDS_CSUM,
        gso_type,
        hdr_len: (g.iph + g.l4h) as u16,
        gso_size: g.gso as u16,
        csum_start: g.iph as u16,
        csum_offset: csum_offset as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TCP/IPv4 or TCP/IPv6 segment with a correct checksum.
    pub(crate) fn tcp(v6: bool, seq: u32, flags: u8, payload: &[u8], ports: (u16, u16)) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; iph + 32 + payload.len()];
        if v6 {
            p[0] = 0x60;
            let len = p.len();
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = PROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            let len = p.len();
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
            let c = !checksum::fold(checksum::add(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let t = &mut p[iph..];
        t[0..2].copy_from_slice(&ports.0.to_be_bytes());
        t[2..4].copy_from_slice(&ports.1.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7u32.to_be_bytes());
        t[12] = 8 << 4; // 32 bytes: 12 of options (NOP NOP timestamp)
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        t[32..].copy_from_slice(payload);
        fix_l4_checksum(&mut p, iph, 16);
        p
    }

    pub(crate) fn udp(payload: &[u8], port: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28 + payload.len()];
        p[0] = 0x45;
        let len = p.len();
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = PROTO_UDP;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !checksum::fold(checksum::add(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&port.to_be_bytes());
        p[22..24].copy_from_slice(&9u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        fix_l4_checksum(&mut p, 20, 6);
        p
    }

    fn addrs(p: &[u8]) -> (&[u8], &[u8]) {
        if p[0] >> 4 == 6 { (&p[8..24], &p[24..40]) } else { (&p[12..16], &p[16..20]) }
    }

    fn fix_l4_checksum(p: &mut [u8], iph: usize, at: usize) {
        p[iph + at..iph + at + 2].fill(0);
        let (s, d) = addrs(p);
        let proto = if p[0] >> 4 == 6 { p[6] } else { p[9] };
        let sum = checksum::add(checksum::pseudo_header(s, d, proto, p.len() - iph), &p[iph..]);
        let mut c = !checksum::fold(sum);
        if c == 0 && proto == PROTO_UDP {
            c = 0xffff;
        }
        p[iph + at..iph + at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// What the kernel does with a written buffer: completes the checksum (NEEDS_CSUM) and
    /// cuts a GSO packet into segments, each with its own headers and checksums. Returns the
    /// packets it would hand to its stack, after checking every checksum independently.
    fn kernel_receives(buf: &[u8]) -> Vec<Vec<u8>> {
        let hdr = VirtioNetHdr::read(buf).unwrap();
        let mut p = buf[HEADROOM..].to_vec();
        // Passed as it came (marked checked), or built here: then its headers must be right.
        assert_eq!(hdr.flags & VirtioNetHdr::F_DATA_VALID != 0, hdr.gso_type == VirtioNetHdr::GSO_NONE);
        if hdr.flags & VirtioNetHdr::F_NEEDS_CSUM != 0 {
            let (start, off) = (hdr.csum_start as usize, hdr.csum_offset as usize);
            let c = !checksum::fold(checksum::add(0, &p[start..]));
            p[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
            // The completed checksum verifies over the whole packet, pseudo-header included,
            // computed independently of the partial sum the coalescer wrote.
            let (s, d) = addrs(&p);
            let proto = if p[0] >> 4 == 6 { p[6] } else { p[9] };
            let sum = checksum::add(checksum::pseudo_header(s, d, proto, p.len() - start), &p[start..]);
            assert_eq!(checksum::fold(sum), 0xffff, "TCP/UDP checksum of the coalesced packet");
            if p[0] >> 4 == 4 {
                assert_eq!(checksum::fold(checksum::add(0, &p[..20])), 0xffff, "IPv4 header checksum");
                assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len(), "IPv4 total length");
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len(), "IPv6 payload length");
            }
        }
        if hdr.gso_type == VirtioNetHdr::GSO_NONE {
            vec![p]
        } else {
            let (h, size) = (hdr.hdr_len as usize, hdr.gso_size as usize);
            let iph = hdr.csum_start as usize;
            let mut out = Vec::new();
            let mut seq = u32::from_be_bytes(p[iph + 4..iph + 8].try_into().unwrap());
            let chunks: Vec<&[u8]> = p[h..].chunks(size).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let mut s = p[..h].to_vec();
                s.extend_from_slice(chunk);
                let len = s.len();
                if s[0] >> 4 == 6 {
                    s[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                } else {
                    s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    s[10..12].fill(0);
                    let c = !checksum::fold(checksum::add(0, &s[..20]));
                    s[10..12].copy_from_slice(&c.to_be_bytes());
                }
                if hdr.gso_type == VirtioNetHdr::GSO_UDP_L4 {
                    s[iph + 4..iph + 6].copy_from_slice(&((len - iph) as u16).to_be_bytes());
                    fix_l4_checksum(&mut s, iph, 6);
                } else {
                    s[iph + 4..iph + 8].copy_from_slice(&seq.to_be_bytes());
                    seq = seq.wrapping_add(chunk.len() as u32);
                    // PSH only on the last segment, as the kernel's segmentation does.
                    if i + 1 < chunks.len() {
                        s[iph + 13] &= !TCP_PSH;
                    }
                    fix_l4_checksum(&mut s, iph, 16);
                }
                out.push(s);
            }
            out
        }
    }

    fn run(c: &mut Coalescer, packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
        c.clear();
        for p in packets {
            c.push(p);
        }
        c.finish();
        let written: Vec<&[u8]> = c.packets().collect();
        let n = written.len();
        (written.iter().flat_map(|b| kernel_receives(b)).collect(), n)
    }

    /// Segments of one TCP stream of `data`, cut at `mss`, the last with PSH.
    fn stream(v6: bool, data: &[u8], mss: usize, seq0: u32) -> Vec<Vec<u8>> {
        let chunks: Vec<&[u8]> = data.chunks(mss).collect();
        let mut seq = seq0;
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let flags = if i + 1 == chunks.len() { TCP_ACK | TCP_PSH } else { TCP_ACK };
            out.push(tcp(v6, seq, flags, c, (1000, 2000)));
            seq = seq.wrapping_add(c.len() as u32);
        }
        out
    }

    #[test]
    fn a_stream_becomes_one_packet_that_the_kernel_cuts_back_into_the_same_segments() {
        for v6 in [false, true] {
            let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
            let segs = stream(v6, &data, 1380, 0xffff_f000);
            let mut c = Coalescer::new(true, true);
            let (got, written) = run(&mut c, &segs);
            assert_eq!(written, 1, "one write for the whole stream");
            assert_eq!(got, segs, "the kernel sees exactly the segments that were sent");
        }
    }

    #[test]
    fn segments_that_do_not_continue_the_flow_are_not_joined() {
        let d = [5u8; 100];
        let a = tcp(false, 0, TCP_ACK, &d, (1, 2));
        let gap = tcp(false, 200, TCP_ACK, &d, (1, 2)); // seq should be 100
        let other_flow = tcp(false, 100, TCP_ACK, &d, (1, 3));
        let syn = tcp(false, 100, 0x02, &d, (1, 2));
        let mut other_ttl = tcp(false, 100, TCP_ACK, &d, (1, 2));
        other_ttl[8] = 1;
        for second in [gap, other_flow, syn, other_ttl] {
            let mut c = Coalescer::new(true, true);
            let (got, written) = run(&mut c, &[a.clone(), second.clone()]);
            assert_eq!(written, 2);
            assert_eq!(got, vec![a.clone(), second]);
        }
    }

    #[test]
    fn psh_or_a_short_segment_ends_the_packet() {
        let d = [1u8; 100];
        let mut c = Coalescer::new(true, true);
        let segs = vec![
            tcp(false, 0, TCP_ACK, &d, (1, 2)),
            tcp(false, 100, TCP_ACK, &d[..50], (1, 2)),
            tcp(false, 150, TCP_ACK, &d, (1, 2)),
            tcp(false, 250, TCP_ACK | TCP_PSH, &d, (1, 2)),
            tcp(false, 350, TCP_ACK, &d, (1, 2)),
        ];
        let (got, written) = run(&mut c, &segs);
        assert_eq!(written, 3, "[0,1] [2,3] [4]");
        assert_eq!(got, segs);
    }

    #[test]
    fn an_urgent_pointer_without_urg_does_not_keep_segments_apart() {
        // Found by fuzz/fuzz_targets/gro.rs. Without URG the urgent pointer means nothing
        // (RFC 9293 3.1), and the kernel's GRO does not compare it either (tcp_gro_receive:
        // flags and window, ack, options); its split repeats the first segment's.
        let d = [5u8; 100];
        let a = tcp(false, 0, TCP_ACK, &d, (1, 2));
        let mut b = tcp(false, 100, TCP_ACK, &d, (1, 2));
        b[20 + 18..20 + 20].copy_from_slice(&[0xfd, 0xff]);
        fix_l4_checksum(&mut b, 20, 16);
        let (got, written) = run(&mut Coalescer::new(true, true), &[a.clone(), b.clone()]);
        assert_eq!(written, 1);
        b[20 + 18..20 + 20].fill(0);
        fix_l4_checksum(&mut b, 20, 16);
        assert_eq!(got, vec![a, b]);
    }

    #[test]
    fn udp_is_coalesced_only_where_the_kernel_takes_it() {
        let segs: Vec<Vec<u8>> = (0..10u8).map(|i| udp(&[i; 1200], 53)).collect();
        let (got, written) = run(&mut Coalescer::new(true, true), &segs);
        assert_eq!((written, &got), (1, &segs));
        let (got, written) = run(&mut Coalescer::new(true, false), &segs);
        assert_eq!((written, &got), (10, &segs));
    }

    #[test]
    fn nothing_is_joined_without_offloads() {
        let segs = stream(false, &[3u8; 5000], 1000, 1);
        let (got, written) = run(&mut Coalescer::new(false, false), &segs);
        assert_eq!((written, got), (segs.len(), segs));
    }

    proptest! {
        /// Interleaved flows, random sizes and cut points: every flow's byte stream arrives
        /// intact and in order, every produced packet's checksums are right (checked in
        /// kernel_receives), and no write exceeds 64 KiB.
        #[test]
        fn interleaved_flows_arrive_intact(
            lens in proptest::collection::vec(1usize..6000, 1..4),
            mss in 500usize..1500,
            v6 in any::<bool>(),
            order in proptest::collection::vec(0usize..4, 0..200),
        ) {
            let flows: Vec<Vec<Vec<u8>>> = lens.iter().enumerate().map(|(f, &len)| {
                let data: Vec<u8> = (0..len).map(|i| (i * 13 + f) as u8).collect();
                let mut segs = stream(v6, &data, mss, (f as u32) << 20);
                for s in &mut segs {
                    let iph = if v6 { 40 } else { 20 };
                    s[iph..iph + 2].copy_from_slice(&(f as u16).to_be_bytes());
                    fix_l4_checksum(s, iph, 16);
                }
                segs
            }).collect();
            // Merge the flows in a random order that keeps each flow's own order.
            let mut next = vec![0usize; flows.len()];
            let mut input = Vec::new();
            for k in &order {
                let f = k % flows.len();
                if next[f] < flows[f].len() { input.push(flows[f][next[f]].clone()); next[f] += 1; }
            }
            for (f, segs) in flows.iter().enumerate() {
                input.extend(segs[next[f]..].iter().cloned());
            }
            let mut c = Coalescer::new(true, true);
            c.clear();
            for p in &input { c.push(p); }
            c.finish();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for b in c.packets() {
                prop_assert!(b.len() - HEADROOM <= MAX_IP);
                got.extend(kernel_receives(b));
            }
            for (f, segs) in flows.iter().enumerate() {
                let iph = if v6 { 40 } else { 20 };
                let mine: Vec<&Vec<u8>> = got.iter().filter(|p| u16::from_be_bytes([p[iph], p[iph + 1]]) as usize == f).collect();
                prop_assert_eq!(mine.len(), segs.len());
                for (a, b) in mine.iter().zip(segs) { prop_assert_eq!(*a, b); }
            }
        }

        /// Arbitrary bytes never panic, and what is not a candidate passes through unchanged.
        #[test]
        fn any_bytes_pass_without_panic(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20)) {
            let mut c = Coalescer::new(true, true);
            for p in &packets { c.push(p); }
            c.finish();
            let total_in: usize = packets.iter().map(Vec::len).sum();
            let total_out: usize = c.packets().map(|b| b.len() - HEADROOM).sum();
            prop_assert!(total_out <= total_in);
        }
    }
}
