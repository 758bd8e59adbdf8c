//! `veil show`: an interface as `wg show` prints it when its output is not a terminal — the
//! same lines in the same order, peers with the most recent handshake first, times as
//! "1 minute, 2 seconds ago" (units in the singular where there is one) and "Now", sizes in
//! B, KiB, MiB, GiB and TiB with two decimals.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Interface, Peer};

/// The interface's text. `now` is the time since the Unix epoch (the wall clock in use).
pub fn render(iface: &Interface, now: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "interface: {}", iface.name);
    if let Some(pk) = &iface.public_key {
        let _ = writeln!(s, "  public key: {}", pk.to_base64());
        s.push_str("  private key: (hidden)\n");
    }
    if iface.listen_port != 0 {
        let _ = writeln!(s, "  listening port: {}", iface.listen_port);
    }
    if let Some(mark) = iface.fwmark {
        let _ = writeln!(s, "  fwmark: {mark:#x}");
    }
    let mut peers: Vec<&Peer> = iface.peers.iter().collect();
    // As wg's sort_peers: the latest handshake first, peers without one last.
    peers.sort_by_key(|p| std::cmp::Reverse(p.latest_handshake));
    for p in peers {
        s.push('\n');
        let _ = writeln!(s, "peer: {}", p.public_key.to_base64());
        if p.has_preshared_key {
            s.push_str("  preshared key: (hidden)\n");
        }
        if let Some(e) = p.endpoint {
            let _ = writeln!(s, "  endpoint: {e}");
        }
        let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
        let ips = if ips.is_empty() { "(none)".to_string() } else { ips.join(", ") };
        let _ = writeln!(s, "  allowed ips: {ips}");
        if let Some(t) = p.latest_handshake.filter(|t| t.as_secs() != 0) {
            let _ = writeln!(s, "  latest handshake: {}", ago(t.as_secs(), now.as_secs()));
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            let _ = writeln!(s, "  transfer: {} received, {} sent", bytes(p.rx_bytes), bytes(p.tx_bytes));
        }
        if let Some(k) = p.persistent_keepalive.filter(|&k| k != 0) {
            let _ = writeln!(s, "  persistent keepalive: every {}", duration(u64::from(k)));
        }
    }
    s
}

/// "Now", "N ... ago", or wg's words for a clock that went backwards.
pub fn ago(then: u64, now: u64) -> String {
    match now.cmp(&then) {
        std::cmp::Ordering::Equal => "Now".to_string(),
        std::cmp::Ordering::Less => "(System clock wound backward; connection problems may ensue.)".to_string(),
        std::cmp::Ordering::Greater => format!("{} ago", duration(now - then)),
    }
}

/// A number of seconds in years, days, hours, minutes and seconds, zero parts left out:
/// "1 year, 2 days, 1 second" (as wg's `pretty_time`).
pub fn duration(secs: u64) -> String {
    const PARTS: [(u64, &str); 5] =
        [(365 * 24 * 3600, "year"), (24 * 3600, "day"), (3600, "hour"), (60, "minute"), (1, "second")];
    let mut left = secs;
    let mut words = Vec::new();
    for (size, unit) in PARTS {
        let n = left / size;
        left %= size;
        if n != 0 {
            words.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    words.join(", ")
}

/// A byte count as wg prints it.
pub fn bytes(n: u64) -> String {
    const K: u64 = 1024;
    let v = n as f64;
    match n {
        _ if n < K => format!("{n} B"),
        _ if n < K * K => format!("{:.2} KiB", v / K as f64),
        _ if n < K * K * K => format!("{:.2} MiB", v / (K * K) as f64),
        _ if n < K * K * K * K => format!("{:.2} GiB", v / (K * K * K) as f64),
        _ => format!("{:.2} TiB", v / (K * K * K * K) as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::PublicKey;
    use crate::status::Peer;

    #[test]
    fn plurals_and_now() {
        assert_eq!(ago(100, 100), "Now");
        assert_eq!(ago(99, 100), "1 second ago");
        assert_eq!(ago(98, 100), "2 seconds ago");
        assert_eq!(ago(0, 60), "1 minute ago");
        assert_eq!(ago(0, 62), "1 minute, 2 seconds ago");
        assert_eq!(ago(0, 121), "2 minutes, 1 second ago");
        assert_eq!(ago(0, 3600), "1 hour ago");
        assert_eq!(ago(0, 2 * 86400 + 3600 + 1), "2 days, 1 hour, 1 second ago");
        assert_eq!(ago(0, 365 * 86400 + 60), "1 year, 1 minute ago");
        assert!(ago(101, 100).contains("wound backward"));
        assert_eq!(duration(25), "25 seconds");
        assert_eq!(duration(1), "1 second");
    }

    #[test]
    fn sizes_as_wg() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 1024 * 1024 / 4), "5.25 MiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
        assert_eq!(bytes(2 << 40), "2.00 TiB");
    }

    #[test]
    fn layout_and_order() {
        let peer = |b: u8, hs: Option<u64>| Peer {
            public_key: PublicKey::from_bytes([b; 32]),
            has_preshared_key: b == 2,
            endpoint: Some("10.0.0.1:51820".parse().unwrap()),
            allowed_ips: vec!["10.1.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            latest_handshake: hs.map(Duration::from_secs),
            persistent_keepalive: Some(25),
            rx_bytes: 2048,
            tx_bytes: 100,
            counters: None,
        };
        let iface = Interface {
            name: "wg7".into(),
            public_key: Some(PublicKey::from_bytes([9; 32])),
            listen_port: 51820,
            fwmark: Some(0x1234),
            peers: vec![peer(1, None), peer(2, Some(1000)), peer(3, Some(1010))],
            counters: None,
        };
        let text = render(&iface, Duration::from_secs(1011));
        let k = |b: u8| PublicKey::from_bytes([b; 32]).to_base64();
        let expected = format!(
            "interface: wg7\n  public key: {}\n  private key: (hidden)\n  listening port: 51820\n  fwmark: 0x1234\n\
             \npeer: {}\n  endpoint: 10.0.0.1:51820\n  allowed ips: 10.1.0.0/24, fd00::/64\n  latest handshake: 1 second ago\n\
             \x20 transfer: 2.00 KiB received, 100 B sent\n  persistent keepalive: every 25 seconds\n\
             \npeer: {}\n  preshared key: (hidden)\n  endpoint: 10.0.0.1:51820\n  allowed ips: 10.1.0.0/24, fd00::/64\n\
             \x20 latest handshake: 11 seconds ago\n  transfer: 2.00 KiB received, 100 B sent\n  persistent keepalive: every 25 seconds\n\
             \npeer: {}\n  endpoint: 10.0.0.1:51820\n  allowed ips: 10.1.0.0/24, fd00::/64\n\
             \x20 transfer: 2.00 KiB received, 100 B sent\n  persistent keepalive: every 25 seconds\n",
            k(9),
            k(3),
            k(2),
            k(1)
        );
        assert_eq!(text, expected);
        let bare = Interface { name: "wg8".into(), ..Interface::default() };
        assert_eq!(render(&bare, Duration::ZERO), "interface: wg8\n");
    }
}
