//! The little of IPv4 and IPv6 headers the tunnel needs: version, true length (to strip the
//! padding of a decrypted packet) and addresses (for cryptokey routing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The length the IP header claims, if `packet` starts with a plausible IPv4 or IPv6 header
/// that fits inside it.
pub fn packet_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let len = match first >> 4 {
        4 if packet.len() >= 20 => u16::from_be_bytes([packet[2], packet[3]]) as usize,
        6 if packet.len() >= 40 => 40 + u16::from_be_bytes([packet[4], packet[5]]) as usize,
        _ => return None,
    };
    let min = if first >> 4 == 4 { 20 } else { 40 };
    (len >= min && len <= packet.len()).then_some(len)
}

/// Source address of an IP packet whose length was checked by [`packet_len`].
pub fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?))),
        6 if packet.len() >= 40 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?))),
        _ => None,
    }
}

/// Destination address of an IP packet.
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?))),
        6 if packet.len() >= 40 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?))),
        _ => None,
    }
}

/// A UDP datagram inside an IP packet (IPv4 with any header length; IPv6 with UDP as the first
/// next header, no extension headers).
pub struct Udp<'a> {
    pub source_port: u16,
    /// Destination address and port.
    pub destination: std::net::SocketAddr,
    pub payload: &'a [u8],
}

/// The UDP datagram `packet` carries, if it carries one (and it fits in the packet).
pub fn udp(packet: &[u8]) -> Option<Udp<'_>> {
    let (header, dst) = match packet.first()? >> 4 {
        4 if packet.len() >= 20 && packet[9] == 17 => (usize::from(packet[0] & 0x0f) * 4, destination(packet)?),
        6 if packet.len() >= 40 && packet[6] == 17 => (40, destination(packet)?),
        _ => return None,
    };
    let u = packet.get(header..header + 8)?;
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    let payload = packet.get(header + 8..header + len.max(8))?;
    Some(Udp {
        source_port: u16::from_be_bytes([u[0], u[1]]),
        destination: std::net::SocketAddr::new(dst, u16::from_be_bytes([u[2], u[3]])),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ipv4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
        let total = 20 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn lengths_and_addresses() {
        let mut p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 5);
        assert_eq!(packet_len(&p), Some(25));
        p.extend_from_slice(&[0; 7]); // padding after decryption
        assert_eq!(packet_len(&p), Some(25));
        assert_eq!(source(&p), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(destination(&p), Some("10.0.0.2".parse().unwrap()));
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[23] = 1;
        v6[39] = 2;
        assert_eq!(packet_len(&v6), Some(48));
        assert_eq!(source(&v6), Some("::1".parse().unwrap()));
        assert_eq!(destination(&v6), Some("::2".parse().unwrap()));
        assert_eq!(packet_len(&[0x45; 10]), None);
        assert_eq!(packet_len(&[0x10; 40]), None);
        let mut claims_more = ipv4([1, 1, 1, 1], [2, 2, 2, 2], 0);
        claims_more[3] = 200;
        assert_eq!(packet_len(&claims_more), None);
    }

    #[test]
    fn udp_inside_ipv4() {
        let mut p = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 8 + 3);
        p[9] = 17;
        p[20..22].copy_from_slice(&51820u16.to_be_bytes());
        p[22..24].copy_from_slice(&4000u16.to_be_bytes());
        p[24..26].copy_from_slice(&11u16.to_be_bytes());
        p[28..31].copy_from_slice(b"abc");
        let u = udp(&p).unwrap();
        assert_eq!((u.source_port, u.destination, u.payload), (51820, "10.0.0.2:4000".parse().unwrap(), &b"abc"[..]));
        p[24..26].copy_from_slice(&200u16.to_be_bytes());
        assert!(udp(&p).is_none(), "a UDP length beyond the packet");
        p[9] = 6;
        assert!(udp(&p).is_none(), "TCP is not UDP");
    }
}
