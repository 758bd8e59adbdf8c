//! IP header parsing (`noise::ip`) as the data path uses it, and cryptokey routing on what it
//! returns. The first bytes of the input are up to four routes (a prefix length and an address),
//! the rest is the packet. Checked: lengths and addresses against the header fields; the UDP
//! datagram found lies inside the packet; `AllowedIps::lookup` of the packet's addresses is the
//! longest matching route (against a linear scan).
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use veil::device::allowed_ips::AllowedIps;
use veil::noise::ip;

fn routes(data: &[u8]) -> (Vec<(IpNet, u8)>, &[u8]) {
    let Some((&n, mut rest)) = data.split_first() else { return (Vec::new(), data) };
    let mut routes = Vec::new();
    for owner in 0..(n % 5) {
        let Some((&len, tail)) = rest.split_first() else { break };
        let net = if len & 0x80 == 0 {
            let Some(a) = tail.get(..4) else { break };
            rest = &tail[4..];
            IpNet::new(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).unwrap())), len % 33).unwrap()
        } else {
            let Some(a) = tail.get(..16) else { break };
            rest = &tail[16..];
            IpNet::new(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap())), (len & 0x7f) % 129).unwrap()
        };
        routes.push((net.trunc(), owner));
    }
    (routes, rest)
}

fn longest_match(routes: &[(IpNet, u8)], addr: IpAddr) -> Option<u8> {
    // Later inserts of the same prefix replace earlier ones, as in the table.
    let mut best: Option<(u8, u8)> = None;
    for &(net, owner) in routes {
        if net.contains(&addr) && best.is_none_or(|(len, _)| net.prefix_len() >= len) {
            best = Some((net.prefix_len(), owner));
        }
    }
    best.map(|(_, owner)| owner)
}

fuzz_target!(|data: &[u8]| {
    let (routes, p) = routes(data);
    let version = p.first().map(|b| b >> 4);
    let header = match version {
        Some(4) if p.len() >= 20 => Some(20),
        Some(6) if p.len() >= 40 => Some(40),
        _ => None,
    };
    if let Some(len) = ip::packet_len(p) {
        let claimed = if version == Some(4) {
            usize::from(u16::from_be_bytes([p[2], p[3]]))
        } else {
            40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
        };
        assert_eq!(Some(len), header.filter(|&h| claimed >= h && claimed <= p.len()).map(|_| claimed));
    } else {
        assert!(header.is_none_or(|h| {
            let claimed = if h == 20 {
                usize::from(u16::from_be_bytes([p[2], p[3]]))
            } else {
                40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
            };
            claimed < h || claimed > p.len()
        }));
    }
    let (src, dst) = (ip::source(p), ip::destination(p));
    assert_eq!(src.is_some(), header.is_some());
    assert_eq!(dst.is_some(), header.is_some());
    match (src, dst) {
        (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => {
            assert_eq!((&s.octets()[..], &d.octets()[..]), (&p[12..16], &p[16..20]))
        }
        (Some(IpAddr::V6(s)), Some(IpAddr::V6(d))) => {
            assert_eq!((&s.octets()[..], &d.octets()[..]), (&p[8..24], &p[24..40]))
        }
        (None, None) => {}
        other => panic!("source and destination disagree: {other:?}"),
    }
    if let Some(u) = ip::udp(p) {
        let range = p.as_ptr_range();
        let inner = u.payload.as_ptr_range();
        assert!(range.start <= inner.start && inner.end <= range.end, "UDP payload outside the packet");
        assert_eq!(Some(u.destination.ip()), dst);
        let proto = if version == Some(4) { p[9] } else { p[6] };
        assert_eq!(proto, 17);
    }
    let mut table = AllowedIps::new();
    for &(net, owner) in &routes {
        table.insert(net, owner);
    }
    for addr in [src, dst].into_iter().flatten() {
        assert_eq!(table.lookup(addr), longest_match(&routes, addr), "{addr} in {routes:?}");
    }
});
