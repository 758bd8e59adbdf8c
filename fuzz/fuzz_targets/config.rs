//! The wg-quick config parser (`control::config::parse`). What it accepts writes back out
//! (`to_text`) and reads back equal, and its UAPI form (`to_uapi_set`) is accepted by the UAPI
//! parser with the same peers and networks (unless a public key is one the UAPI refuses: a
//! low-order point).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::control::config;
use veil::device::uapi;
use veil::noise::PublicKey;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = config::parse(text, "fuzz.conf") else { return };
    let written = cfg.to_text().expect("a parsed configuration writes out");
    let reread = config::parse(&written, "written.conf").expect("what was written reads back");
    assert_eq!(reread, cfg, "{written}");

    let endpoint = "192.0.2.1:51820".parse().unwrap();
    let set = cfg.to_uapi_set(&|_| Ok(endpoint)).expect("resolving cannot fail here");
    let uapi_keys_ok = cfg.peers.iter().all(|p| PublicKey::checked(*p.public_key.as_bytes()).is_ok());
    match uapi::parse_set(set.lines()) {
        Ok(req) => {
            assert!(uapi_keys_ok);
            assert_eq!(req.peers.len(), cfg.peers.len());
            assert!(req.replace_peers);
            assert_eq!(req.listen_port, cfg.interface.listen_port);
            assert_eq!(req.fwmark, cfg.interface.fwmark);
            assert_eq!(req.private_key.is_some(), cfg.interface.private_key.is_some());
            for (p, q) in cfg.peers.iter().zip(&req.peers) {
                assert_eq!(q.public_key.unwrap().as_bytes(), p.public_key.as_bytes());
                let nets: Vec<_> = q.allowed_ips.iter().map(|&(add, net)| (assert!(add), net).1).collect();
                assert_eq!(nets, p.allowed_ips);
                assert_eq!(q.endpoint.as_ref().map(|e| e.addr), p.endpoint.as_ref().map(|_| endpoint));
                assert_eq!(q.persistent_keepalive, p.persistent_keepalive);
                assert_eq!(q.preshared_key.is_some(), p.preshared_key.is_some());
            }
        }
        Err(e) => assert!(!uapi_keys_ok, "UAPI refused what a config file gave: {e}\n{set}"),
    }
});
