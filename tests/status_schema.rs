//! The status model's outputs as others depend on them: the JSON of `veil show --json` keeps
//! its schema (every field's path and JSON type, compared with the committed list in
//! tests/data/status_schema.txt: a change there is a change for every script that reads it),
//! and no secret reaches any rendering, whatever the UAPI answer held.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use veil::device::uapi::{parse_get, write_get};
use veil::noise::keys::hex;
use veil::noise::{PresharedKey, StaticSecret};
use veil::status::{self, Interface};

/// A `get` answer with every field set (`full`; the second peer without a session) or none of
/// the optional ones (and without veil's counters), read back.
fn sample(full: bool) -> (Interface, StaticSecret, PresharedKey) {
    let secret = StaticSecret::from_bytes([0x5a; 32]);
    let psk = PresharedKey::from_bytes([0xc3; 32]);
    let peer = |n: u8| status::Peer {
        public_key: StaticSecret::from_bytes([n; 32]).public_key(),
        has_preshared_key: full,
        endpoint: full.then(|| "192.0.2.1:51820".parse().unwrap()),
        allowed_ips: vec!["10.9.0.0/24".parse().unwrap(), "fd09::/64".parse().unwrap()],
        latest_handshake: full.then(|| Duration::new(1_800_000_000, 7)),
        persistent_keepalive: full.then_some(25),
        rx_bytes: 1,
        tx_bytes: 2,
        counters: Some(status::PeerCounters {
            // The second peer has counters but no session: its age is null.
            session_age_ms: (full && n == 1).then_some(1500),
            ..status::PeerCounters::default()
        }),
    };
    let iface = Interface {
        name: String::new(),
        public_key: Some(secret.public_key()),
        listen_port: 51820,
        fwmark: full.then_some(0x51),
        peers: vec![peer(1), peer(2)],
        counters: Some(status::InterfaceCounters::default()),
    };
    let mut answer = String::new();
    let psks = vec![full.then(|| psk.clone()), None];
    // Without veil=1 the answer is another implementation's: no veil counters.
    write_get(&mut answer, full.then_some(&secret), &iface, &psks, full);
    answer.push_str("errno=0\n\n");
    let mut read = parse_get(&answer).expect("a valid answer");
    read.name = "wg0".into();
    (read, secret, psk)
}

/// Every leaf's path and JSON type, e.g. `[].peers[].endpoint: string`.
fn walk(v: &Value, path: String, out: &mut BTreeMap<String, Vec<&'static str>>) {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_u64() => "unsigned",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(a) => {
            for x in a {
                walk(x, format!("{path}[]"), out);
            }
            "array"
        }
        Value::Object(o) => {
            for (k, x) in o {
                walk(x, format!("{path}.{k}"), out);
            }
            "object"
        }
    };
    let kinds = out.entry(path).or_default();
    if !kinds.contains(&kind) {
        kinds.push(kind);
        kinds.sort();
    }
}

#[test]
fn json_schema_is_stable() {
    let mut fields = BTreeMap::new();
    for full in [true, false] {
        let json = status::json::render(&[sample(full).0]);
        walk(&serde_json::from_str(&json).unwrap(), String::new(), &mut fields);
    }
    let got: String = fields.iter().map(|(path, kinds)| format!("{path}: {}\n", kinds.join("|"))).collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/status_schema.txt");
    if std::env::var("VEIL_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).expect("tests/data/status_schema.txt");
    assert_eq!(
        got, want,
        "the JSON schema of `veil show --json` changed: update docs/status.md, then the list with VEIL_BLESS=1"
    );
}

#[test]
fn no_secret_in_any_rendering() {
    let (iface, secret, psk) = sample(true);
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let forms = [
        ("json", status::json::render(std::slice::from_ref(&iface))),
        ("metrics", status::metrics::render(std::slice::from_ref(&iface))),
        ("text", status::text::render(&iface, Duration::from_secs(1_800_000_100))),
    ];
    for (what, text) in forms {
        for (name, key) in [("private key", secret.as_bytes()), ("preshared key", psk.as_bytes())] {
            assert!(!text.contains(&hex(key)), "{what} holds the {name} in hex:\n{text}");
            assert!(!text.contains(&b64(key)), "{what} holds the {name} in base64:\n{text}");
        }
        assert!(text.contains(&secret.public_key().to_base64()) || what == "metrics", "{what} names our key");
    }
    // What wg shows of them instead.
    let text = status::text::render(&iface, Duration::from_secs(1_800_000_001));
    assert!(text.contains("  private key: (hidden)\n") && text.contains("  preshared key: (hidden)\n"), "{text}");
    assert!(text.contains("  latest handshake: 1 second ago\n"), "{text}");
}
