//! The userspace configuration protocol that `wg` speaks over `/var/run/wireguard/IFNAME.sock`.
//!
//! `get=1` is answered with `key=value` lines and `errno=0`; `set=1` takes lines up to an empty
//! line and is answered with `errno=N`. A set request is parsed and validated completely before
//! anything is applied, so a bad line leaves the device exactly as it was. Error numbers are
//! wireguard-go's (negative errno values).
//!
//! Everything here is pure (no system calls), so it can be tested and fuzzed alone: reading a
//! request's lines from a stream ([`read_request`]), parsing a set request ([`parse_set`]) and
//! writing a get answer. The one lookup a request can need, the index of an interface named as
//! a link-local endpoint's zone, is the caller's ([`SetRequest::resolve_zones`]).

use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use ipnet::IpNet;

use crate::noise::keys::parse_hex_key;
use crate::noise::{PresharedKey, PublicKey, StaticSecret};
use crate::status;

pub const EIO: i32 = -5;
pub const EINVAL: i32 = -22;
pub const EPROTO: i32 = -71;
pub const EADDRINUSE: i32 = -98;

/// The longest UAPI line accepted (the longest valid one is under 100 bytes).
pub const MAX_LINE: usize = 4096;

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
    pub endpoint: Option<Endpoint>,
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

/// An endpoint as a set request gives it. A link-local address may name its zone by interface
/// (`[fe80::1%eth0]:51820`): the name is kept in `zone` and `addr` has scope id 0 until
/// [`Endpoint::resolve`] looks the name up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub zone: Option<String>,
}

impl Endpoint {
    /// The address, with a named zone turned into its interface index by `index_of` (in the
    /// daemon [`crate::sys::udp::interface_index`], a system call).
    pub fn resolve(&self, index_of: impl FnOnce(&str) -> Option<u32>) -> Result<SocketAddr, UapiError> {
        let (SocketAddr::V6(addr), Some(zone)) = (self.addr, &self.zone) else { return Ok(self.addr) };
        let scope = index_of(zone)
            .ok_or_else(|| UapiError::invalid(format!("endpoint {}: no interface {zone:?} for the zone", self.addr)))?;
        Ok(SocketAddrV6::new(*addr.ip(), addr.port(), 0, scope).into())
    }
}

/// Parses an endpoint as `wg` writes it: `1.2.3.4:51820`, `[2001:db8::1]:51820`, or a
/// link-local address with its zone as a number or an interface name: `[fe80::1%eth0]:51820`
/// (the name is looked up later, see [`Endpoint`]).
pub fn parse_endpoint(value: &str) -> Result<Endpoint, UapiError> {
    let invalid = || UapiError::invalid(format!("endpoint: invalid address {value:?}"));
    if let Ok(addr) = value.parse() {
        return Ok(Endpoint { addr, zone: None });
    }
    let (host, port) = value.strip_prefix('[').and_then(|v| v.split_once("]:")).ok_or_else(invalid)?;
    let (addr, zone) = host.split_once('%').ok_or_else(invalid)?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| invalid())?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    if zone.is_empty() {
        return Err(invalid());
    }
    Ok(Endpoint { addr: SocketAddrV6::new(addr, port, 0, 0).into(), zone: Some(zone.to_string()) })
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

impl SetRequest {
    /// Turns every endpoint zone given by interface name into its index with `index_of`, before
    /// anything is applied: a name that is no interface refuses the whole request.
    pub fn resolve_zones(&mut self, index_of: impl Fn(&str) -> Option<u32>) -> Result<(), UapiError> {
        for endpoint in self.peers.iter_mut().filter_map(|p| p.endpoint.as_mut()) {
            *endpoint = Endpoint { addr: endpoint.resolve(&index_of)?, zone: None };
        }
        Ok(())
    }
}

/// One request as read from a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Every line arrived, as text: the first (`get=1`, `set=1`) and the body up to the empty
    /// line (without it).
    Complete { op: String, body: Vec<String> },
    /// Complete, but a line is not UTF-8 or longer than [`MAX_LINE`]: refused.
    Invalid,
    /// The stream ended (or failed, or timed out) before the request's empty line; `lines` were
    /// read. Nothing of it may be applied.
    CutShort { lines: usize },
}

/// One line of a request, without its newline.
enum Line {
    Text(String),
    /// Not UTF-8, or longer than MAX_LINE.
    Invalid,
    /// End of the stream (also in the middle of a line), a read error or a timeout.
    End,
}

fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> Line {
    buf.clear();
    match reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', buf) {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if buf.last() != Some(&b'\n') => {
            if buf.len() > MAX_LINE {
                Line::Invalid
            } else {
                Line::End
            }
        }
        Ok(_) => {
            // "\n" or "\r\n": a client that ends lines as in HTTP is understood too.
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            match std::str::from_utf8(buf) {
                Ok(text) => Line::Text(text.to_string()),
                Err(_) => Line::Invalid,
            }
        }
    }
}

/// Reads the next request from `reader` (`buf` is scratch space kept between calls); `None`
/// when the stream ends between requests. An empty first line is a (refused) request of its
/// own, with no body to wait for.
pub fn read_request(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> Option<Request> {
    let op = match next_line(reader, buf) {
        Line::End => return None,
        Line::Invalid => None,
        Line::Text(op) if op.is_empty() => return Some(Request::Complete { op, body: Vec::new() }),
        Line::Text(op) => Some(op),
    };
    let mut valid = op.is_some();
    let mut body = Vec::new();
    loop {
        match next_line(reader, buf) {
            Line::End => return Some(Request::CutShort { lines: body.len() + 1 }),
            Line::Invalid => valid = false,
            Line::Text(line) if line.is_empty() => break,
            Line::Text(line) => body.push(line),
        }
    }
    Some(match op {
        Some(op) if valid => Request::Complete { op, body },
        _ => Request::Invalid,
    })
}

/// Writes the body of a `get=1` answer (without the final `errno=0`): `iface` with our private
/// key and each peer's psk (`psks[i]` for `iface.peers[i]`), which the status model never
/// holds. `veil`: the request asked for veil's counters too (`veil_*` keys, see [`parse_get`]).
pub fn write_get(
    out: &mut String,
    private_key: Option<&StaticSecret>,
    iface: &status::Interface,
    psks: &[Option<PresharedKey>],
    veil: bool,
) {
    if let Some(k) = private_key {
        let _ = writeln!(out, "private_key={}", crate::noise::keys::hex(k.as_bytes()));
    }
    let _ = writeln!(out, "listen_port={}", iface.listen_port);
    if let Some(mark) = iface.fwmark.filter(|&m| m != 0) {
        let _ = writeln!(out, "fwmark={mark}");
    }
    if let Some(c) = iface.counters.filter(|_| veil) {
        let d = c.dropped;
        let _ = writeln!(out, "veil_under_load={}", c.under_load);
        for (key, n) in [
            ("cookies_sent", c.cookies_sent),
            ("dropped_not_allowed", d.not_allowed),
            ("dropped_replayed", d.replayed),
            ("dropped_bad_authentication", d.bad_authentication),
            ("dropped_unknown_index", d.unknown_index),
            ("dropped_no_session", d.no_session),
            ("dropped_queue_full", d.queue_full),
            ("dropped_routing_loop", d.routing_loop),
        ] {
            let _ = writeln!(out, "veil_{key}={n}");
        }
    }
    for (i, p) in iface.peers.iter().enumerate() {
        let _ = writeln!(out, "public_key={}", p.public_key.to_hex());
        let psk = psks.get(i).and_then(Option::as_ref).map(|k| crate::noise::keys::hex(k.as_bytes()));
        let _ = writeln!(out, "preshared_key={}", psk.as_deref().unwrap_or(&"0".repeat(64)));
        let _ = writeln!(out, "protocol_version=1");
        if let Some(e) = p.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let (sec, nsec) = p.latest_handshake.map(|d| (d.as_secs(), d.subsec_nanos())).unwrap_or((0, 0));
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(out, "persistent_keepalive_interval={}", p.persistent_keepalive.unwrap_or(0));
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
        if let Some(c) = p.counters.filter(|_| veil) {
            for (key, n) in [
                ("rx_packets", c.rx_packets),
                ("tx_packets", c.tx_packets),
                ("handshakes_initiated", c.handshakes_initiated),
                ("handshakes_completed", c.handshakes_completed),
                ("handshakes_failed", c.handshakes_failed),
                ("cookies_received", c.cookies_received),
                ("endpoint_changes", c.endpoint_changes),
                ("dropped_no_session", c.dropped_no_session),
            ] {
                let _ = writeln!(out, "veil_{key}={n}");
            }
            if let Some(ms) = c.session_age_ms {
                let _ = writeln!(out, "veil_session_age_ms={ms}");
            }
        }
    }
}

/// Reads a `get` answer (up to its `errno` line) into the status model, without keeping any
/// secret: the private key becomes our public key, a psk becomes "set or not". Keys this
/// parser does not know are skipped, as `wg` skips them; `veil_*` keys fill the counters.
/// The interface's name is left empty (the caller knows it). Errors: the errno of a refused
/// request, a malformed value, or an answer without an errno line.
pub fn parse_get(answer: &str) -> Result<status::Interface, String> {
    let mut iface = status::Interface::default();
    for line in answer.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let bad = || format!("bad value in get answer: {key}={}", if key.contains("key") { "..." } else { value });
        let num = || value.parse::<u64>().map_err(|_| bad());
        if key == "errno" {
            return match value {
                "0" => Ok(iface),
                e => Err(format!("get failed with errno {e}")),
            };
        }
        if key == "public_key" {
            let bytes = parse_hex_key(value).map_err(|_| bad())?;
            iface.peers.push(status::Peer {
                public_key: PublicKey::from_bytes(*bytes),
                has_preshared_key: false,
                endpoint: None,
                allowed_ips: Vec::new(),
                latest_handshake: None,
                persistent_keepalive: None,
                rx_bytes: 0,
                tx_bytes: 0,
                counters: None,
            });
            continue;
        }
        let Some(p) = iface.peers.last_mut() else {
            match key {
                "private_key" => {
                    let bytes = parse_hex_key(value).map_err(|_| bad())?;
                    iface.public_key =
                        bytes.iter().any(|&b| b != 0).then(|| StaticSecret::from_bytes(*bytes).public_key());
                }
                "listen_port" => iface.listen_port = value.parse().map_err(|_| bad())?,
                "fwmark" => iface.fwmark = Some(value.parse().map_err(|_| bad())?).filter(|&m| m != 0),
                _ if key.starts_with("veil_") => {
                    let c = iface.counters.get_or_insert_with(Default::default);
                    let d = &mut c.dropped;
                    match key {
                        "veil_under_load" => c.under_load = value == "true",
                        "veil_cookies_sent" => c.cookies_sent = num()?,
                        "veil_dropped_not_allowed" => d.not_allowed = num()?,
                        "veil_dropped_replayed" => d.replayed = num()?,
                        "veil_dropped_bad_authentication" => d.bad_authentication = num()?,
                        "veil_dropped_unknown_index" => d.unknown_index = num()?,
                        "veil_dropped_no_session" => d.no_session = num()?,
                        "veil_dropped_queue_full" => d.queue_full = num()?,
                        "veil_dropped_routing_loop" => d.routing_loop = num()?,
                        _ => {}
                    }
                }
                _ => {}
            }
            continue;
        };
        match key {
            "preshared_key" => p.has_preshared_key = value.bytes().any(|b| b != b'0'),
            "endpoint" => {
                // A get answer gives a link-local zone as its index (`%7`).
                let endpoint = parse_endpoint(value).map_err(|_| bad())?;
                p.endpoint = Some(endpoint.resolve(|zone| zone.parse().ok()).map_err(|_| bad())?);
            }
            "allowed_ip" => p.allowed_ips.push(parse_prefix(value).map_err(|_| bad())?),
            "last_handshake_time_sec" => {
                let nsec = p.latest_handshake.map(|d| d.subsec_nanos()).unwrap_or(0);
                p.latest_handshake = Some(Duration::new(num()?, nsec)).filter(|d| !d.is_zero());
            }
            "last_handshake_time_nsec" => {
                if let Some(d) = p.latest_handshake {
                    p.latest_handshake = Some(Duration::new(d.as_secs(), value.parse().map_err(|_| bad())?));
                }
            }
            "rx_bytes" => p.rx_bytes = num()?,
            "tx_bytes" => p.tx_bytes = num()?,
            "persistent_keepalive_interval" => {
                p.persistent_keepalive = Some(value.parse().map_err(|_| bad())?).filter(|&k| k != 0)
            }
            _ if key.starts_with("veil_") => {
                let c = p.counters.get_or_insert_with(Default::default);
                match key {
                    "veil_rx_packets" => c.rx_packets = num()?,
                    "veil_tx_packets" => c.tx_packets = num()?,
                    "veil_handshakes_initiated" => c.handshakes_initiated = num()?,
                    "veil_handshakes_completed" => c.handshakes_completed = num()?,
                    "veil_handshakes_failed" => c.handshakes_failed = num()?,
                    "veil_cookies_received" => c.cookies_received = num()?,
                    "veil_endpoint_changes" => c.endpoint_changes = num()?,
                    "veil_dropped_no_session" => c.dropped_no_session = num()?,
                    "veil_session_age_ms" => c.session_age_ms = Some(num()?),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Err("incomplete answer to get (no errno line)".into())
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
        assert_eq!(p.endpoint, Some(Endpoint { addr: "[2001:db8::1]:51820".parse().unwrap(), zone: None }));
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
        assert!(matches!(numeric.addr, SocketAddr::V6(a) if a.scope_id() == 7 && a.port() == 51820));
        assert_eq!(numeric.zone, None);
        for bad in ["[fe80::1%lo]:x", "[fe80::1%lo]", "fe80::1%lo:1", "[nope%lo]:1", "[fe80::1%]:1"] {
            assert_eq!(parse_endpoint(bad).unwrap_err().errno, EINVAL, "{bad}");
        }
    }

    #[test]
    fn zone_names_are_looked_up_after_parsing_not_during_it() {
        // Parsing is pure: a name that is no interface here parses, and only resolving it fails.
        let text = format!(
            "public_key={PK}\nendpoint=[fe80::2%no-such-if0]:1\npublic_key={}\nendpoint=[fe80::3%lo]:2",
            "ab".repeat(32)
        );
        let mut req = parse_set(text.lines()).unwrap();
        let ep = req.peers[0].endpoint.clone().unwrap();
        assert_eq!((ep.addr, ep.zone.as_deref()), ("[fe80::2]:1".parse().unwrap(), Some("no-such-if0")));
        let lookups = std::cell::RefCell::new(Vec::new());
        let index_of = |name: &str| {
            lookups.borrow_mut().push(name.to_string());
            (name == "lo").then_some(1)
        };
        assert_eq!(req.resolve_zones(index_of).unwrap_err().errno, EINVAL);
        assert_eq!(*lookups.borrow(), ["no-such-if0"], "the first unknown name stops the resolution");
        req.peers.remove(0);
        req.resolve_zones(index_of).unwrap();
        let resolved = req.peers[0].endpoint.clone().unwrap();
        assert_eq!(
            resolved,
            Endpoint { addr: SocketAddrV6::new("fe80::3".parse().unwrap(), 2, 0, 1).into(), zone: None }
        );
        // In the daemon the lookup is if_nametoindex; every network namespace has "lo" (index 1).
        let mut req =
            parse_set(["public_key=".to_string() + PK, "endpoint=[fe80::2%lo]:1".into()].iter().map(String::as_str))
                .unwrap();
        req.resolve_zones(crate::sys::udp::interface_index).unwrap();
        assert_eq!(req.peers[0].endpoint.as_ref().unwrap().addr, "[fe80::2%1]:1".parse().unwrap());
    }

    #[test]
    fn requests_are_read_whole_or_refused() {
        let read_all = |bytes: &[u8]| {
            let mut reader = std::io::BufReader::new(bytes);
            let mut buf = Vec::new();
            std::iter::from_fn(|| read_request(&mut reader, &mut buf)).collect::<Vec<_>>()
        };
        let complete = |op: &str, body: &[&str]| Request::Complete {
            op: op.into(),
            body: body.iter().map(|l| l.to_string()).collect(),
        };
        assert_eq!(
            read_all(b"get=1\n\nset=1\r\nlisten_port=1\r\n\r\n\n"),
            [complete("get=1", &[]), complete("set=1", &["listen_port=1"]), complete("", &[])]
        );
        assert_eq!(read_all(b"set=1\nlisten_port=1\n"), [Request::CutShort { lines: 2 }]);
        assert_eq!(read_all(b"set=1\nlisten_port=1"), [Request::CutShort { lines: 1 }]);
        assert_eq!(read_all(b"set=1\n\xff\n\nget=1\n\n"), [Request::Invalid, complete("get=1", &[])]);
        let long = format!("set=1\n{}\n\n", "x".repeat(MAX_LINE + 1));
        assert_eq!(read_all(long.as_bytes())[0], Request::Invalid);
        assert_eq!(read_all(b""), []);
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

    fn sample() -> (status::Interface, Vec<Option<PresharedKey>>) {
        let peer = status::Peer {
            public_key: PublicKey::from_bytes([1; 32]),
            has_preshared_key: true,
            endpoint: Some("1.2.3.4:5".parse().unwrap()),
            latest_handshake: Some(Duration::new(1_700_000_000, 5)),
            tx_bytes: 10,
            rx_bytes: 20,
            persistent_keepalive: Some(25),
            allowed_ips: vec!["10.0.0.0/24".parse().unwrap()],
            counters: Some(status::PeerCounters {
                rx_packets: 1,
                tx_packets: 2,
                handshakes_initiated: 3,
                handshakes_completed: 4,
                handshakes_failed: 5,
                cookies_received: 6,
                endpoint_changes: 7,
                dropped_no_session: 8,
                session_age_ms: Some(9),
            }),
        };
        let counters = status::InterfaceCounters {
            under_load: true,
            cookies_sent: 11,
            dropped: status::Dropped {
                not_allowed: 12,
                replayed: 13,
                bad_authentication: 14,
                unknown_index: 15,
                no_session: 16,
                queue_full: 17,
                routing_loop: 18,
            },
        };
        let iface = status::Interface {
            name: String::new(),
            public_key: Some(StaticSecret::from_bytes([9; 32]).public_key()),
            listen_port: 51820,
            fwmark: Some(7),
            peers: vec![peer],
            counters: Some(counters),
        };
        (iface, vec![Some(PresharedKey::from_bytes([3; 32]))])
    }

    #[test]
    fn get_reports_epoch_time_and_all_keys() {
        let mut out = String::new();
        let sk = StaticSecret::from_bytes([9; 32]);
        let (iface, psks) = sample();
        write_get(&mut out, Some(&sk), &iface, &psks, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("private_key={}", crate::noise::keys::hex(sk.as_bytes())));
        assert!(lines.contains(&"listen_port=51820"));
        assert!(lines.contains(&"fwmark=7"));
        assert!(lines.contains(&format!("preshared_key={}", "03".repeat(32)).as_str()));
        assert!(lines.contains(&"endpoint=1.2.3.4:5"));
        assert!(lines.contains(&"last_handshake_time_sec=1700000000"));
        assert!(lines.contains(&"last_handshake_time_nsec=5"));
        assert!(lines.contains(&"allowed_ip=10.0.0.0/24"));
        assert!(lines.contains(&"persistent_keepalive_interval=25"));
        assert!(!out.contains("veil_"), "a plain get carries nothing wireguard-go does not send: {out}");
    }

    #[test]
    fn get_answers_read_back_into_the_same_status_without_secrets() {
        let (iface, psks) = sample();
        let sk = StaticSecret::from_bytes([9; 32]);
        let mut out = String::new();
        write_get(&mut out, Some(&sk), &iface, &psks, true);
        assert!(out.contains("veil_dropped_replayed=13\n") && out.contains("veil_session_age_ms=9\n"), "{out}");
        out.push_str("errno=0\n\n");
        assert_eq!(parse_get(&out).unwrap(), iface);
        // Without veil=1, the same state less veil's counters (as from another implementation).
        let mut plain = String::new();
        write_get(&mut plain, Some(&sk), &iface, &psks, false);
        plain.push_str("unknown_future_key=1\nerrno=0\n");
        let mut expected = iface.clone();
        expected.counters = None;
        expected.peers[0].counters = None;
        assert_eq!(parse_get(&plain).unwrap(), expected);
        assert_eq!(parse_get("errno=-22\n").unwrap_err(), "get failed with errno -22");
        assert!(parse_get("listen_port=1\n").is_err(), "no errno line");
    }
}
