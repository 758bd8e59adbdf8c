//! The UAPI request parser: a connection's bytes are read into requests (`uapi::read_request`:
//! lines, CRLF, over-long and non-UTF-8 lines, a stream cut short) and set requests parsed
//! (`uapi::parse_set`). Checked: reading always ends and every byte belongs to at most one
//! request; a parsed set request, written out again in its canonical form, parses to the same
//! request (the canonical form is a fixed point); zone names resolve with a lookup given from
//! outside (no system call in the parser).
#![no_main]

use std::fmt::Write as _;
use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use veil::device::uapi::{self, Request, SetRequest};
use veil::noise::keys::hex;

fn canonical(req: &SetRequest) -> String {
    let mut out = String::new();
    match &req.private_key {
        Some(Some(k)) => writeln!(out, "private_key={}", hex(k.as_bytes())).unwrap(),
        Some(None) => writeln!(out, "private_key={}", "0".repeat(64)).unwrap(),
        None => {}
    }
    if let Some(port) = req.listen_port {
        writeln!(out, "listen_port={port}").unwrap();
    }
    if let Some(mark) = req.fwmark {
        writeln!(out, "fwmark={mark}").unwrap();
    }
    writeln!(out, "replace_peers={}", req.replace_peers).unwrap();
    for p in &req.peers {
        writeln!(out, "public_key={}", p.public_key.expect("every peer starts with its key").to_hex()).unwrap();
        writeln!(out, "remove={}\nupdate_only={}", p.remove, p.update_only).unwrap();
        match &p.preshared_key {
            Some(Some(k)) => writeln!(out, "preshared_key={}", hex(k.as_bytes())).unwrap(),
            Some(None) => writeln!(out, "preshared_key={}", "0".repeat(64)).unwrap(),
            None => {}
        }
        match &p.endpoint {
            Some(uapi::Endpoint { addr: std::net::SocketAddr::V6(a), zone: Some(zone) }) => {
                writeln!(out, "endpoint=[{}%{zone}]:{}", a.ip(), a.port()).unwrap()
            }
            Some(e) => writeln!(out, "endpoint={}", e.addr).unwrap(),
            None => {}
        }
        if let Some(k) = p.persistent_keepalive {
            writeln!(out, "persistent_keepalive_interval={k}").unwrap();
        }
        writeln!(out, "replace_allowed_ips={}", p.replace_allowed_ips).unwrap();
        for (add, net) in &p.allowed_ips {
            writeln!(out, "allowed_ip={}{net}", if *add { "" } else { "-" }).unwrap();
        }
        writeln!(out, "protocol_version=1").unwrap();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut reader = BufReader::with_capacity(64, data);
    let mut buf = Vec::new();
    let mut requests = 0;
    while let Some(request) = uapi::read_request(&mut reader, &mut buf) {
        requests += 1;
        assert!(requests <= data.len(), "more requests than bytes");
        let Request::Complete { op, body } = request else { continue };
        assert!(!op.contains('\n') && op.len() <= uapi::MAX_LINE);
        assert!(body.iter().all(|l| !l.is_empty() && !l.contains('\n') && l.len() <= uapi::MAX_LINE));
        if op != "set=1" {
            continue;
        }
        let Ok(mut req) = uapi::parse_set(body.iter().map(String::as_str)) else { continue };
        let text = canonical(&req);
        let again = uapi::parse_set(text.lines()).unwrap_or_else(|e| panic!("canonical form refused: {e}\n{text}"));
        assert_eq!(canonical(&again), text);
        let zones: Vec<Option<String>> =
            req.peers.iter().map(|p| p.endpoint.as_ref().and_then(|e| e.zone.clone())).collect();
        // A pretend lookup: names of up to 15 bytes (IFNAMSIZ - 1) exist, with their length as index.
        let index_of = |name: &str| (name.len() < 16).then_some(name.len() as u32);
        match req.resolve_zones(index_of) {
            Ok(()) => {
                for (p, zone) in req.peers.iter().zip(zones) {
                    let Some(e) = &p.endpoint else { continue };
                    assert_eq!(e.zone, None);
                    if let (Some(zone), std::net::SocketAddr::V6(a)) = (zone, e.addr) {
                        assert_eq!(a.scope_id(), zone.len() as u32);
                    }
                }
            }
            Err(e) => {
                assert_eq!(e.errno, uapi::EINVAL);
                assert!(zones.iter().flatten().any(|z| z.len() >= 16));
            }
        }
    }
});
