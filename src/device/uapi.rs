//! The userspace configuration protocol that `wg` speaks over `/var/run/wireguard/IFNAME.sock`.
//!
//! `get=1` is answered with `key=value` lines and `errno=0`; `set=1` takes lines up to an empty
//! line and is answered with `errno=N`. A set request is parsed and validated completely before
//! anything is applied, so a bad line leaves the device exactly as it was. Error numbers are
//! wireguard-go's (negative errno values).

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use ipnet::IpNet;

use crate::noise::keys::parse_hex_key;
use crate::noise::{PresharedKey, PublicKey, StaticSecret};

pub const EIO: i32 = -5;
pub const EINVAL: i32 = -22;
pub const EPROTO: i32 = -71;
pub const EADDRINUSE: i32 = -98;

/// A refused request: the errno to answer with and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UapiError {
    pub errno: i32,
    pub message: String,
}

impl UapiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        UapiError { errno: EINVAL, message: message.into() }
    }
}

impl std::fmt::Display for UapiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

/// One peer's part of a set request.
#[derive(Debug, Default)]
pub struct PeerChange {
    pub public_key: Option<PublicKey>,
    pub remove: bool,
    pub update_only: bool,
    /// `Some(None)` clears the psk.
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 turns it off.
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    /// In order: `true` adds the prefix, `false` removes it (`allowed_ip=-PREFIX`).
    pub allowed_ips: Vec<(bool, IpNet)>,
}

/// A parsed `set=1` request.
#[derive(Debug, Default)]
pub struct SetRequest {
    /// `Some(None)` removes the private key (all-zero key).
    pub private_key: Option<Option<StaticSecret>>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, UapiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(UapiError::invalid(format!("{key}: expected true or false, got {value:?}"))),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    value.parse().map_err(|_| UapiError::invalid(format!("{key}: invalid number {value:?}")))
}

/// Parses an endpoint as `wg` writes it: `1.2.3.4:51820`, `[2001:db8::1]:51820`, or a
/// link-local address with its zone as a number or an interface name: `[fe80::1%eth0]:51820`.
pub fn parse_endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    let invalid = || UapiError::invalid(format!("endpoint: invalid address {value:?}"));
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let (host, port) = value.strip_prefix('[').and_then(|v| v.split_once("]:")).ok_or_else(invalid)?;
    let (addr, zone) = host.split_once('%').ok_or_else(invalid)?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| invalid())?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let scope = crate::sys::udp::interface_index(zone)
        .ok_or_else(|| UapiError::invalid(format!("endpoint {value:?}: no interface {zone:?} for the zone")))?;
    Ok(SocketAddrV6::new(addr, port, 0, scope).into())
}

/// Parses a prefix; a bare address means a host prefix. Host bits must be zero, as wg sends.
pub fn parse_prefix(value: &str) -> Result<IpNet, UapiError> {
    let net: IpNet = match value.parse() {
        Ok(n) => n,
        Err(_) => match value.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => return Err(UapiError::invalid(format!("allowed_ip: invalid prefix {value:?}"))),
        },
    };
    Ok(net.trunc())
}

/// Parses the lines of a set request (without the `set=1` line and the final empty line).
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for line in lines {
        let (key, value) =
            line.split_once('=').ok_or_else(|| UapiError::invalid(format!("line without '=': {line:?}")))?;
        let in_peer = !req.peers.is_empty();
        if key == "public_key" {
            let bytes = parse_hex_key(value).map_err(|_| UapiError::invalid("public_key: expected 64 hex digits"))?;
            let pk = PublicKey::checked(*bytes).map_err(|e| UapiError::invalid(format!("public_key: {e}")))?;
            req.peers.push(PeerChange { public_key: Some(pk), ..PeerChange::default() });
            continue;
        }
        if !in_peer {
            match key {
                "private_key" => {
                    let bytes =
                        parse_hex_key(value).map_err(|_| UapiError::invalid("private_key: expected 64 hex digits"))?;
                    req.private_key =
                        Some(if bytes.iter().all(|&b| b == 0) { None } else { Some(StaticSecret::from_bytes(*bytes)) });
                }
                "listen_port" => req.listen_port = Some(parse_num(key, value)?),
                "fwmark" => req.fwmark = Some(parse_num(key, value)?),
                "replace_peers" => req.replace_peers = parse_bool(key, value)?,
                _ => return Err(UapiError::invalid(format!("unknown interface key {key:?}"))),
            }
            continue;
        }
        let peer = req.peers.last_mut().expect("in a peer section");
        match key {
            "remove" => peer.remove = parse_bool(key, value)?,
            "update_only" => peer.update_only = parse_bool(key, value)?,
            "preshared_key" => {
                let bytes =
                    parse_hex_key(value).map_err(|_| UapiError::invalid("preshared_key: expected 64 hex digits"))?;
                peer.preshared_key =
                    Some(if bytes.iter().all(|&b| b == 0) { None } else { Some(PresharedKey::from_bytes(*bytes)) });
            }
            "endpoint" => peer.endpoint = Some(parse_endpoint(value)?),
            "persistent_keepalive_interval" => peer.persistent_keepalive = Some(parse_num(key, value)?),
            "replace_allowed_ips" => peer.replace_allowed_ips = parse_bool(key, value)?,
            "allowed_ip" => match value.strip_prefix('-') {
                Some(rest) => peer.allowed_ips.push((false, parse_prefix(rest)?)),
                None => peer.allowed_ips.push((true, parse_prefix(value)?)),
            },
            "protocol_version" => {
                if value != "1" {
                    return Err(UapiError::invalid(format!("protocol_version {value:?} is not supported")));
                }
            }
            _ => return Err(UapiError::invalid(format!("unknown peer key {key:?}"))),
        }
    }
    Ok(req)
}

/// What `get=1` reports of one peer.
pub struct PeerReport {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Unix time of the last handshake.
    pub last_handshake: Option<Duration>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

/// Writes the body of a `get=1` answer (without the final `errno=0`).
pub fn write_get(
    out: &mut String,
    private_key: Option<&StaticSecret>,
    listen_port: u16,
    fwmark: u32,
    peers: impl IntoIterator<Item = PeerReport>,
) {
    if let Some(k) = private_key {
        let _ = writeln!(out, "private_key={}", crate::noise::keys::hex(k.as_bytes()));
    }
    let _ = writeln!(out, "listen_port={listen_port}");
    if fwmark != 0 {
        let _ = writeln!(out, "fwmark={fwmark}");
    }
    for p in peers {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        let psk = p.preshared_key.as_ref().map(|k| crate::noise::keys::hex(k.as_bytes()));
        let _ = writeln!(out, "preshared_key={}", psk.as_deref().unwrap_or(&"0".repeat(64)));
        let _ = writeln!(out, "protocol_version=1");
        if let Some(e) = p.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let (sec, nsec) = p.last_handshake.map(|d| (d.as_secs(), d.subsec_nanos())).unwrap_or((0, 0));
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", p.persistent_keepalive);
        for net in p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";

    #[test]
    fn parses_a_full_request() {
        let text = format!(
            "private_key={}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\npublic_key={PK}\npreshared_key={}\n\
             endpoint=[2001:db8::1]:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.0.0.7/24\nallowed_ip=-192.168.0.0/16\nallowed_ip=fd00::1\nprotocol_version=1",
            "a8".repeat(32),
            "11".repeat(32)
        );
        let req = parse_set(text.lines()).unwrap();
        assert!(matches!(req.private_key, Some(Some(_))));
        assert_eq!((req.listen_port, req.fwmark, req.replace_peers), (Some(51820), Some(0), true));
        let p = &req.peers[0];
        assert_eq!(p.public_key.unwrap().to_hex(), PK);
        assert!(matches!(p.preshared_key, Some(Some(_))));
        assert_eq!(p.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips);
        assert_eq!(
            p.allowed_ips,
            vec![
                (true, "10.0.0.0/24".parse().unwrap()),
                (false, "192.168.0.0/16".parse().unwrap()),
                (true, "fd00::1/128".parse().unwrap())
            ]
        );
    }

    #[test]
    fn link_local_endpoints_carry_their_zone() {
        let numeric = parse_endpoint("[fe80::1%7]:51820").unwrap();
        assert!(matches!(numeric, SocketAddr::V6(a) if a.scope_id() == 7 && a.port() == 51820));
        // Every Linux network namespace has "lo", index 1.
        let named = parse_endpoint("[fe80::2%lo]:1").unwrap();
        assert_eq!(named, SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 1, 0, 1)));
        for bad in ["[fe80::1%no-such-if0]:1", "[fe80::1%lo]:x", "[fe80::1%lo]", "fe80::1%lo:1", "[nope%lo]:1"] {
            assert_eq!(parse_endpoint(bad).unwrap_err().errno, EINVAL, "{bad}");
        }
    }

    #[test]
    fn zero_keys_mean_removal() {
        let text = format!("private_key={}\npublic_key={PK}\npreshared_key={}", "0".repeat(64), "0".repeat(64));
        let req = parse_set(text.lines()).unwrap();
        assert!(matches!(req.private_key, Some(None)));
        assert!(matches!(req.peers[0].preshared_key, Some(None)));
    }

    #[test]
    fn every_bad_line_is_einval() {
        let bad = [
            "listen_port=70000".to_string(),
            "listen_port=x".to_string(),
            "private_key=abc".to_string(),
            "nonsense".to_string(),
            "frobnicate=1".to_string(),
            "replace_peers=yes".to_string(),
            format!("public_key={}", "0".repeat(64)),
            format!("public_key={PK}\nendpoint=nowhere"),
            format!("public_key={PK}\nallowed_ip=10.0.0.0/33"),
            format!("public_key={PK}\nprotocol_version=2"),
            format!("public_key={PK}\nlisten_port=1"),
            format!("public_key={PK}\npersistent_keepalive_interval=-1"),
        ];
        for text in bad {
            let err = parse_set(text.lines()).unwrap_err();
            assert_eq!(err.errno, EINVAL, "{text}");
        }
    }

    #[test]
    fn get_reports_epoch_time_and_all_keys() {
        let mut out = String::new();
        let sk = StaticSecret::from_bytes([9; 32]);
        write_get(
            &mut out,
            Some(&sk),
            51820,
            7,
            [PeerReport {
                public_key: PublicKey::from_bytes([1; 32]),
                preshared_key: None,
                endpoint: Some("1.2.3.4:5".parse().unwrap()),
                last_handshake: Some(Duration::new(1_700_000_000, 5)),
                tx_bytes: 10,
                rx_bytes: 20,
                persistent_keepalive: 25,
                allowed_ips: vec!["10.0.0.0/24".parse().unwrap()],
            }],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("private_key={}", crate::noise::keys::hex(sk.as_bytes())));
        assert!(lines.contains(&"listen_port=51820"));
        assert!(lines.contains(&"fwmark=7"));
        assert!(lines.contains(&"endpoint=1.2.3.4:5"));
        assert!(lines.contains(&"last_handshake_time_sec=1700000000"));
        assert!(lines.contains(&"last_handshake_time_nsec=5"));
        assert!(lines.contains(&"allowed_ip=10.0.0.0/24"));
        assert!(lines.contains(&"persistent_keepalive_interval=25"));
    }
}
