//! Known-answer test against wireguard-go, an independent WireGuard implementation.
//!
//! `tests/data/wireguard_go_kat.txt` holds the bytes veil and wireguard-go exchanged over real
//! UDP (recorded by `examples/record_wireguard_go_kat.rs`, see `tests/data/README.md`). veil's
//! side is deterministic given its keys, seed, wall-clock anchor and the `now` of each call, so
//! this test rebuilds the same `Interface`, replays the same calls at the same virtual times, and
//! requires veil to produce exactly the bytes wireguard-go accepted, to accept exactly what
//! wireguard-go sent, and to refuse tampered copies of it. No root and no network needed.
//!
//! mac1, the message layouts, the inner IP/ICMP packets and their checksums are also checked
//! here by hand (BLAKE2s straight from the `blake2` crate), so the test does not only compare
//! veil with itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use veil::noise::{
    Config, Interface, Output, PeerId, PresharedKey, PublicKey, ReceiveError, Received, SendOutcome, StaticSecret,
    WallClock,
};

const DATA: &str = include_str!("data/wireguard_go_kat.txt");

/// The recorded `key = value` lines.
struct Kat(HashMap<String, String>);

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

impl Kat {
    fn load() -> Kat {
        let mut map = HashMap::new();
        for line in DATA.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not `key = value`: {line}"));
            assert!(map.insert(k.trim().to_string(), v.trim().to_string()).is_none(), "duplicate key {k}");
        }
        Kat(map)
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn str(&self, key: &str) -> &str {
        self.0.get(key).unwrap_or_else(|| panic!("{key} missing from the data file"))
    }

    fn bytes(&self, key: &str) -> Vec<u8> {
        unhex(self.str(key))
    }

    fn key(&self, key: &str) -> [u8; 32] {
        self.bytes(key).try_into().unwrap_or_else(|_| panic!("{key} is not 32 bytes"))
    }

    fn offset(&self, key: &str) -> Duration {
        Duration::from_nanos(self.str(key).parse().unwrap_or_else(|_| panic!("{key} is not a number")))
    }

    fn addr(&self, key: &str) -> SocketAddr {
        self.str(key).parse().unwrap_or_else(|_| panic!("{key} is not ip:port"))
    }
}

#[derive(Default)]
struct Capture {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    delivered: Vec<(PeerId, Vec<u8>)>,
}

impl Output for Capture {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        self.delivered.push((peer, packet.to_vec()));
    }
}

/// veil's side of one scenario, rebuilt exactly as the recorder built it.
struct Replay<'k> {
    kat: &'k Kat,
    prefix: &'static str,
    iface: Interface,
    peer: PeerId,
    t0: Instant,
    out: Capture,
}

impl<'k> Replay<'k> {
    fn new(kat: &'k Kat, prefix: &'static str) -> Replay<'k> {
        Self::with_psk(kat, prefix, kat.has(&format!("{prefix}.psk")))
    }

    /// `use_psk = false` leaves out a recorded psk (to show that it matters).
    fn with_psk(kat: &'k Kat, prefix: &'static str, use_psk: bool) -> Replay<'k> {
        let k = |name: &str| format!("{prefix}.{name}");
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + kat.offset(&k("anchor_unix_ns")));
        let secret = StaticSecret::from_bytes(kat.key(&k("veil_private")));
        let mut iface = Interface::new(secret, Config::default(), clock, kat.key(&k("seed")));
        let peer = iface.add_peer(PublicKey::from_bytes(kat.key(&k("wg_public")))).unwrap();
        if use_psk {
            iface.set_psk(peer, Some(PresharedKey::from_bytes(kat.key(&k("psk"))))).unwrap();
        }
        Replay { kat, prefix, iface, peer, t0, out: Capture::default() }
    }

    fn at(&self, name: &str) -> Instant {
        self.t0 + self.kat.offset(&format!("{}.{name}", self.prefix))
    }

    fn get(&self, name: &str) -> Vec<u8> {
        self.kat.bytes(&format!("{}.{name}", self.prefix))
    }

    /// Feeds a copy of `datagram` (veil decrypts in place) from `src` at time `t_name`.
    fn receive(&mut self, src: SocketAddr, datagram: &[u8], t_name: &str) -> Result<Received, ReceiveError> {
        let mut buf = datagram.to_vec();
        let now = self.at(t_name);
        self.iface.receive(src, &mut buf, now, false, &mut self.out)
    }

    fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.out.sent)
    }

    fn take_delivered(&mut self) -> Vec<(PeerId, Vec<u8>)> {
        std::mem::take(&mut self.out.delivered)
    }
}

// ---- Independent checks (not using veil's code) ----

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// WireGuard's mac1: BLAKE2s-128 keyed with BLAKE2s-256("mac1----" || receiver's public key),
/// over the message up to mac1.
fn mac1(receiver: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    let key = Blake2s256::new().chain_update(b"mac1----").chain_update(receiver).finalize();
    let mut mac = <Blake2sMac<U16> as KeyInit>::new_from_slice(&key).unwrap();
    Mac::update(&mut mac, &msg[..msg.len() - 32]);
    mac.finalize().into_bytes().into()
}

/// A copy of `msg` with byte `at` flipped and mac1 made valid again, so the change gets past
/// the mac1 check and must be caught by the AEAD.
fn tamper_keep_mac1(receiver: &[u8; 32], msg: &[u8], at: usize) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[at] ^= 0x01;
    let mac = mac1(receiver, &m);
    let n = m.len();
    m[n - 32..n - 16].copy_from_slice(&mac);
    m
}

fn flipped(msg: &[u8], at: usize) -> Vec<u8> {
    let mut m = msg.to_vec();
    m[at] ^= 0x80;
    m
}

/// Checks the framing of a handshake message by hand: type, reserved bytes, length, mac1 for
/// `receiver`, and an empty mac2 (nobody was under load).
fn check_handshake_framing(msg: &[u8], kind: u8, len: usize, receiver: &[u8; 32]) {
    assert_eq!(msg.len(), len, "message type {kind} length");
    assert_eq!(&msg[..4], &[kind, 0, 0, 0]);
    assert_eq!(&msg[len - 32..len - 16], &mac1(receiver, msg), "mac1 of a type {kind} message");
    assert_eq!(&msg[len - 16..], &[0u8; 16], "mac2 of a type {kind} message");
}

/// Checks a data message by hand: header, receiver index, counter, and that the ciphertext is
/// the plaintext padded to a multiple of 16 plus a 16-byte tag.
fn check_data_framing(msg: &[u8], receiver: u32, counter: u64, plain_len: usize) {
    assert_eq!(&msg[..4], &[4, 0, 0, 0]);
    assert_eq!(u32_le(msg, 4), receiver, "data message receiver index");
    assert_eq!(u64::from_le_bytes(msg[8..16].try_into().unwrap()), counter, "data message counter");
    assert_eq!(msg.len(), 16 + plain_len.next_multiple_of(16) + 16, "data message padding");
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo packet, parsed and checked by hand.
struct Echo {
    kind: u8,
    id: u16,
    seq: u16,
    payload: Vec<u8>,
}

fn parse_echo(p: &[u8], src: [u8; 4], dst: [u8; 4]) -> Echo {
    assert!(p.len() >= 28);
    assert_eq!(p[0], 0x45, "IPv4 without options");
    assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len(), "IPv4 total length");
    assert_eq!(p[9], 1, "protocol ICMP");
    assert_eq!(&p[12..16], &src, "source address");
    assert_eq!(&p[16..20], &dst, "destination address");
    assert_eq!(internet_checksum(&p[..20]), 0, "IPv4 header checksum");
    let icmp = &p[20..];
    assert_eq!(internet_checksum(icmp), 0, "ICMP checksum");
    assert_eq!(icmp[1], 0, "ICMP code");
    Echo {
        kind: icmp[0],
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: icmp[8..].to_vec(),
    }
}

// ---- The tests ----

#[test]
fn public_keys_are_the_recorded_ones() {
    let kat = Kat::load();
    for p in ["a", "b"] {
        for who in ["veil", "wg"] {
            let secret = StaticSecret::from_bytes(kat.key(&format!("{p}.{who}_private")));
            assert_eq!(secret.as_bytes(), &kat.key(&format!("{p}.{who}_private")), "stored keys are clamped");
            assert_eq!(secret.public_key().as_bytes(), &kat.key(&format!("{p}.{who}_public")), "{p}.{who}_public");
        }
    }
}

/// Scenario A, checked without veil: layouts, indices linking the messages, mac1, padding, and
/// the ICMP packets.
#[test]
fn a_recorded_messages_are_well_formed() {
    let kat = Kat::load();
    let (veil_pub, wg_pub) = (kat.key("a.veil_public"), kat.key("a.wg_public"));
    let init = kat.bytes("a.veil_initiation");
    let resp = kat.bytes("a.wg_response");
    let veil_data = kat.bytes("a.veil_data");
    let wg_data = kat.bytes("a.wg_data");
    let ping = kat.bytes("a.ping");
    let reply = kat.bytes("a.delivered");

    check_handshake_framing(&init, 1, 148, &wg_pub);
    check_handshake_framing(&resp, 2, 92, &veil_pub);
    let (veil_index, wg_index) = (u32_le(&init, 4), u32_le(&resp, 4));
    assert_eq!(u32_le(&resp, 8), veil_index, "the response names our initiation");
    check_data_framing(&veil_data, wg_index, 0, ping.len());
    check_data_framing(&wg_data, veil_index, 0, reply.len());

    let request = parse_echo(&ping, [10, 77, 0, 2], [10, 77, 0, 1]);
    assert_eq!(request.kind, 8);
    let answer = parse_echo(&reply, [10, 77, 0, 1], [10, 77, 0, 2]);
    assert_eq!(answer.kind, 0, "echo reply");
    assert_eq!((answer.id, answer.seq, &answer.payload), (request.id, request.seq, &request.payload));
}

/// Scenario B, checked without veil.
#[test]
fn b_recorded_messages_are_well_formed() {
    let kat = Kat::load();
    let (veil_pub, wg_pub) = (kat.key("b.veil_public"), kat.key("b.wg_public"));
    let init = kat.bytes("b.wg_initiation");
    let resp = kat.bytes("b.veil_response");
    let wg_data = kat.bytes("b.wg_data");
    let ping = kat.bytes("b.delivered");

    check_handshake_framing(&init, 1, 148, &veil_pub);
    check_handshake_framing(&resp, 2, 92, &wg_pub);
    let (wg_index, veil_index) = (u32_le(&init, 4), u32_le(&resp, 4));
    assert_eq!(u32_le(&resp, 8), wg_index, "our response names their initiation");
    check_data_framing(&wg_data, veil_index, 0, ping.len());

    // `ping -s 40 -p 5665696c`: 16 bytes of timestamp, then the pattern ("Veil") repeated.
    let request = parse_echo(&ping, [10, 77, 1, 1], [10, 77, 1, 2]);
    assert_eq!(request.kind, 8, "echo request");
    assert_eq!(request.seq, 1);
    assert_eq!(request.payload.len(), 40);
    assert_eq!(&request.payload[16..], b"Veil".repeat(6).as_slice());
}

/// A: veil initiates without a psk. Its initiation and data must be the recorded bytes, which
/// wireguard-go accepted; wireguard-go's response and echo reply must be accepted, and tampered
/// copies of them refused without disturbing anything.
#[test]
fn a_veil_initiates_without_psk() {
    let kat = Kat::load();
    let mut r = Replay::new(&kat, "a");
    let wg_addr = kat.addr("a.wg_addr");
    let wg_src = kat.addr("a.wg_src");
    let veil_pub = kat.key("a.veil_public");
    r.iface.set_endpoint(r.peer, Some(wg_addr)).unwrap();

    // 1. The ping is queued and the initiation goes out.
    let now = r.at("t_send_ns");
    assert_eq!(r.iface.send(r.peer, &kat.bytes("a.ping"), now, &mut r.out), Ok(SendOutcome::Queued));
    assert_eq!(r.take_sent(), vec![(wg_addr, r.get("veil_initiation"))], "veil's initiation");

    // 2. wireguard-go's response. Tampered copies first: each is refused and changes nothing.
    let resp = r.get("wg_response");
    assert_eq!(r.receive(wg_src, &flipped(&resp, 70), "t_response_ns"), Err(ReceiveError::BadMac1));
    for at in [12, 43, 44, 59] {
        // ephemeral, ephemeral, empty-payload tag, tag.
        let bad = tamper_keep_mac1(&veil_pub, &resp, at);
        assert!(
            matches!(r.receive(wg_src, &bad, "t_response_ns"), Err(ReceiveError::Handshake(_))),
            "response with byte {at} flipped"
        );
    }
    let bad_receiver = tamper_keep_mac1(&veil_pub, &resp, 8);
    assert!(matches!(r.receive(wg_src, &bad_receiver, "t_response_ns"), Err(ReceiveError::UnknownIndex(_))));
    assert!(r.take_sent().is_empty() && r.take_delivered().is_empty());

    assert_eq!(r.receive(wg_src, &resp, "t_response_ns"), Ok(Received::Response(r.peer)));
    assert_eq!(r.take_sent(), vec![(wg_src, r.get("veil_data"))], "veil's data message (the queued ping)");

    // 3. wireguard-go's data: the kernel's echo reply.
    let data = r.get("wg_data");
    let n = data.len();
    for (bad, what) in [
        (flipped(&data, 16), "first ciphertext byte"),
        (flipped(&data, n - 1), "last tag byte"),
        (flipped(&data, 8), "counter"),
        (data[..n - 16].to_vec(), "one block short"),
    ] {
        assert!(
            matches!(r.receive(wg_src, &bad, "t_data_ns"), Err(ReceiveError::Session(_))),
            "data message with a changed {what}"
        );
    }
    assert!(matches!(r.receive(wg_src, &flipped(&data, 4), "t_data_ns"), Err(ReceiveError::UnknownIndex(_))));
    assert!(r.take_sent().is_empty() && r.take_delivered().is_empty());

    let reply = r.get("delivered");
    assert_eq!(r.receive(wg_src, &data, "t_data_ns"), Ok(Received::Data { peer: r.peer, len: reply.len() }));
    assert_eq!(r.take_delivered(), vec![(r.peer, reply.clone())], "the decrypted echo reply");
    assert!(r.take_sent().is_empty());
    // Replayed, the same message is refused.
    assert!(matches!(r.receive(wg_src, &data, "t_data_ns"), Err(ReceiveError::Session(_))));
    assert!(r.take_delivered().is_empty());

    // And by hand: an echo reply from wireguard-go's side to ours, answering our request.
    let answer = parse_echo(&reply, [10, 77, 0, 1], [10, 77, 0, 2]);
    let request = parse_echo(&kat.bytes("a.ping"), [10, 77, 0, 2], [10, 77, 0, 1]);
    assert_eq!((answer.kind, answer.id, answer.seq), (0, request.id, request.seq));
    assert_eq!(answer.payload, request.payload);
}

/// B: wireguard-go initiates with a psk. veil must accept the initiation, answer with exactly
/// the recorded response (which wireguard-go accepted) and decrypt the ping that followed.
#[test]
fn b_wireguard_go_initiates_with_psk() {
    let kat = Kat::load();
    let mut r = Replay::new(&kat, "b");
    let wg_src = kat.addr("b.wg_src");
    let init = r.get("wg_initiation");

    assert_eq!(r.receive(wg_src, &init, "t_initiation_ns"), Ok(Received::Initiation(r.peer)));
    assert_eq!(r.take_sent(), vec![(wg_src, r.get("veil_response"))], "veil's response");
    assert_eq!(r.iface.peer(r.peer).unwrap().endpoint(), Some(wg_src), "endpoint learnt from the initiation");

    // Tampered data first: refused, and the new session stays unconfirmed.
    let data = r.get("wg_data");
    let n = data.len();
    for bad in [flipped(&data, 20), flipped(&data, n - 1), flipped(&data, 9), data[..n - 16].to_vec()] {
        assert!(matches!(r.receive(wg_src, &bad, "t_data_ns"), Err(ReceiveError::Session(_))));
    }
    assert!(matches!(r.receive(wg_src, &flipped(&data, 7), "t_data_ns"), Err(ReceiveError::UnknownIndex(_))));
    assert!(r.take_sent().is_empty() && r.take_delivered().is_empty());
    assert_eq!(r.iface.stats(r.peer).unwrap().handshakes_completed, 0, "not confirmed by a forgery");

    let ping = r.get("delivered");
    assert_eq!(r.receive(wg_src, &data, "t_data_ns"), Ok(Received::Data { peer: r.peer, len: ping.len() }));
    assert_eq!(r.take_delivered(), vec![(r.peer, ping.clone())], "the decrypted ping");
    assert!(r.take_sent().is_empty());
    assert_eq!(r.iface.stats(r.peer).unwrap().handshakes_completed, 1);
    let request = parse_echo(&ping, [10, 77, 1, 1], [10, 77, 1, 2]);
    assert_eq!(request.kind, 8);

    // The same initiation again is a replay (its timestamp is not newer).
    assert_eq!(r.receive(wg_src, &init, "t_data_ns"), Err(ReceiveError::StaleTimestamp));
    assert!(matches!(r.receive(wg_src, &data, "t_data_ns"), Err(ReceiveError::Session(_))));
    assert!(r.take_sent().is_empty() && r.take_delivered().is_empty());
}

/// B: tampered copies of wireguard-go's initiation are refused.
#[test]
fn b_tampered_initiations_are_refused() {
    let kat = Kat::load();
    let wg_src = kat.addr("b.wg_src");
    let veil_pub = kat.key("b.veil_public");

    // A wrong mac1 is refused before any work, so the recorded response still follows exactly.
    let mut r = Replay::new(&kat, "b");
    let init = r.get("wg_initiation");
    assert_eq!(r.receive(wg_src, &flipped(&init, 120), "t_initiation_ns"), Err(ReceiveError::BadMac1));
    assert_eq!(r.receive(wg_src, &init, "t_initiation_ns"), Ok(Received::Initiation(r.peer)));
    assert_eq!(r.take_sent(), vec![(wg_src, r.get("veil_response"))]);

    // Past mac1, a change to the ephemeral, the encrypted static key or the encrypted
    // timestamp fails the AEAD; the sender index is not authenticated by Noise but by mac1.
    let mut r = Replay::new(&kat, "b");
    for at in [8, 39, 40, 71, 87, 88, 115] {
        let bad = tamper_keep_mac1(&veil_pub, &init, at);
        assert!(
            matches!(r.receive(wg_src, &bad, "t_initiation_ns"), Err(ReceiveError::Handshake(_))),
            "initiation with byte {at} flipped"
        );
    }
    assert!(r.take_sent().is_empty());
    assert_eq!(r.iface.stats(r.peer).unwrap().sessions, 0);
    assert_eq!(r.receive(wg_src, &init, "t_initiation_ns"), Ok(Received::Initiation(r.peer)));
    // (The response is valid but not the recorded one: each initiation that gets past mac1
    // draws the responder's ephemeral from the RNG before it is decrypted.)
    assert_eq!(r.take_sent().len(), 1);
}

/// The psk is really mixed in: without it veil's response differs from the one wireguard-go
/// accepted.
#[test]
fn b_response_depends_on_the_psk() {
    let kat = Kat::load();
    let wg_src = kat.addr("b.wg_src");
    let mut r = Replay::with_psk(&kat, "b", false);
    let init = r.get("wg_initiation");
    assert_eq!(r.receive(wg_src, &init, "t_initiation_ns"), Ok(Received::Initiation(r.peer)));
    let sent = r.take_sent();
    assert_eq!(sent.len(), 1);
    let recorded = r.get("veil_response");
    assert_eq!(sent[0].1[..12], recorded[..12], "same indices");
    assert_eq!(sent[0].1[12..44], recorded[12..44], "same ephemeral (same seed)");
    assert_ne!(sent[0].1[44..60], recorded[44..60], "different confirmation tag without the psk");
}
