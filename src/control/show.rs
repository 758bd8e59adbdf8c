//! `veil show [IFNAME] [--json]`: what `wg show` prints, read over the UAPI socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::noise::PublicKey;
use crate::noise::keys::parse_hex_key;

use super::daemon::{SOCKET_DIR, socket_path};

/// One peer as reported by `get=1`.
#[derive(Debug, Default, Clone)]
pub struct PeerInfo {
    pub public_key: String,
    pub has_psk: bool,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub last_handshake_sec: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u64,
}

/// An interface as reported by `get=1`.
#[derive(Debug, Default, Clone)]
pub struct InterfaceInfo {
    pub name: String,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerInfo>,
}

fn b64_of_hex(hex: &str) -> Option<String> {
    parse_hex_key(hex).ok().map(|k| PublicKey::from_bytes(*k).to_base64())
}

/// Sends `get=1` to the interface's socket and parses the answer.
pub fn query(ifname: &str) -> Result<InterfaceInfo, String> {
    let path = socket_path(ifname);
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    conn.write_all(b"get=1\n\n").map_err(|e| e.to_string())?;
    let mut info = InterfaceInfo { name: ifname.to_string(), ..Default::default() };
    let mut errno = None;
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let num = || v.parse::<u64>().unwrap_or(0);
        match k {
            "private_key" => {
                info.public_key =
                    parse_hex_key(v).ok().map(|s| crate::noise::StaticSecret::from_bytes(*s).public_key().to_base64())
            }
            "listen_port" => info.listen_port = num() as u16,
            "fwmark" => info.fwmark = num() as u32,
            "public_key" => {
                info.peers.push(PeerInfo { public_key: b64_of_hex(v).unwrap_or_default(), ..Default::default() })
            }
            "errno" => errno = Some(v.to_string()),
            _ => {
                if let Some(p) = info.peers.last_mut() {
                    match k {
                        "preshared_key" => p.has_psk = v.bytes().any(|b| b != b'0'),
                        "endpoint" => p.endpoint = Some(v.to_string()),
                        "allowed_ip" => p.allowed_ips.push(v.to_string()),
                        "last_handshake_time_sec" => p.last_handshake_sec = num(),
                        "rx_bytes" => p.rx_bytes = num(),
                        "tx_bytes" => p.tx_bytes = num(),
                        "persistent_keepalive_interval" => p.persistent_keepalive = num(),
                        _ => {}
                    }
                }
            }
        }
    }
    match errno.as_deref() {
        Some("0") => Ok(info),
        Some(e) => Err(format!("{ifname}: get failed with errno {e}")),
        None => Err(format!("{ifname}: incomplete answer")),
    }
}

/// Names of the interfaces with a socket in /var/run/wireguard.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(SOCKET_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".sock")).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn ago(sec: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let d = now.saturating_sub(sec);
    match d {
        0..=59 => format!("{d} seconds ago"),
        60..=3599 => format!("{} minutes, {} seconds ago", d / 60, d % 60),
        _ => format!("{} hours, {} minutes ago", d / 3600, (d % 3600) / 60),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// The human-readable form, close to `wg show`.
pub fn render_text(info: &InterfaceInfo) -> String {
    let mut s = format!("interface: {}\n", info.name);
    if let Some(pk) = &info.public_key {
        s += &format!("  public key: {pk}\n  private key: (hidden)\n");
    }
    s += &format!("  listening port: {}\n", info.listen_port);
    if info.fwmark != 0 {
        s += &format!("  fwmark: {:#x}\n", info.fwmark);
    }
    for p in &info.peers {
        s += &format!("\npeer: {}\n", p.public_key);
        if p.has_psk {
            s += "  preshared key: (hidden)\n";
        }
        if let Some(e) = &p.endpoint {
            s += &format!("  endpoint: {e}\n");
        }
        let ips = if p.allowed_ips.is_empty() { "(none)".to_string() } else { p.allowed_ips.join(", ") };
        s += &format!("  allowed ips: {ips}\n");
        if p.last_handshake_sec != 0 {
            s += &format!("  latest handshake: {}\n", ago(p.last_handshake_sec));
        }
        if p.rx_bytes != 0 || p.tx_bytes != 0 {
            s += &format!("  transfer: {} received, {} sent\n", bytes(p.rx_bytes), bytes(p.tx_bytes));
        }
        if p.persistent_keepalive != 0 {
            s += &format!("  persistent keepalive: every {} seconds\n", p.persistent_keepalive);
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

/// A JSON object per interface (no private keys).
pub fn render_json(info: &InterfaceInfo) -> String {
    let peers: Vec<String> = info
        .peers
        .iter()
        .map(|p| {
            format!(
                "{{\"public_key\":{},\"preshared_key\":{},\"endpoint\":{},\"allowed_ips\":[{}],\"latest_handshake\":{},\"rx_bytes\":{},\"tx_bytes\":{},\"persistent_keepalive\":{}}}",
                json_str(&p.public_key),
                p.has_psk,
                p.endpoint.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
                p.allowed_ips.iter().map(|a| json_str(a)).collect::<Vec<_>>().join(","),
                p.last_handshake_sec,
                p.rx_bytes,
                p.tx_bytes,
                p.persistent_keepalive
            )
        })
        .collect();
    format!(
        "{{\"interface\":{},\"public_key\":{},\"listen_port\":{},\"fwmark\":{},\"peers\":[{}]}}",
        json_str(&info.name),
        info.public_key.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
        info.listen_port,
        info.fwmark,
        peers.join(",")
    )
}

/// Sends one UAPI request and returns the errno it was answered with.
pub fn uapi_request(ifname: &str, request: &str) -> Result<i32, String> {
    let path = socket_path(ifname);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    conn.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    for line in BufReader::new(conn).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(v) = line.strip_prefix("errno=") {
            return v.parse().map_err(|_| format!("bad errno line {line:?}"));
        }
    }
    Err("no answer from the interface".into())
}
