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
}
