//! What the fuzz targets share with the seed generator (`examples/seeds.rs`): the input formats
//! and the interface that `interface_receive` drives. Seeds replay exactly only if both build
//! that interface the same way, hence one definition here.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

use veil::noise::cookie::MacKeys;
use veil::noise::messages::{self, INITIATION_LEN, RESPONSE_LEN, TYPE_INITIATION, TYPE_RESPONSE};
use veil::noise::{Config, Interface, Output, PeerId, PresharedKey, PublicKey, StaticSecret, WallClock};

/// Splits `data` into records `[op][len: u16 LE][len bytes]`; a last record cut short takes what
/// is left.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let len = match rest {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        let rest = rest.get(2..).unwrap_or_default();
        let (body, tail) = rest.split_at(len.min(rest.len()));
        data = tail;
        Some((op, body))
    })
}

/// One record in the format [`records`] reads.
pub fn record(op: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![op];
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The records of `interface_receive`: the low two bits of the op byte.
pub const OP_DATAGRAM: u8 = 0;
pub const OP_ADVANCE: u8 = 1;
pub const OP_INITIATE: u8 = 2;
pub const OP_SEND: u8 = 3;
/// Datagram flags: handled under load; mac1 recomputed for the interface's key (so that a
/// mutated handshake message gets past the mac check to the Noise part); from an address that
/// is not the peer's.
pub const F_UNDER_LOAD: u8 = 4;
pub const F_FIX_MAC1: u8 = 8;
pub const F_STRANGER: u8 = 16;

pub const RESPONDER_SECRET: [u8; 32] = [2; 32];
pub const INITIATOR_SECRET: [u8; 32] = [1; 32];
pub const PSK: [u8; 32] = [7; 32];
pub const RESPONDER_SEED: [u8; 32] = [22; 32];

pub fn initiator_addr() -> SocketAddr {
    "10.0.0.1:1000".parse().unwrap()
}

pub fn responder_addr() -> SocketAddr {
    "10.0.0.2:2000".parse().unwrap()
}

pub fn stranger_addr() -> SocketAddr {
    "[2001:db8::9]:7".parse().unwrap()
}

/// The wall clock both sides use: fixed at `t0`, so timestamps depend only on elapsed time.
pub fn clock(t0: Instant) -> WallClock {
    WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
}

/// Collects what an interface sends and delivers.
#[derive(Default)]
pub struct Capture {
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    pub delivered: Vec<(PeerId, Vec<u8>)>,
}

impl Output for Capture {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        self.delivered.push((peer, packet.to_vec()));
    }
}

/// The interface under test (the "responder", though it initiates too) with one peer, the
/// "initiator", on a virtual clock; deterministic from construction on.
pub struct Harness {
    pub iface: Interface,
    pub peer: PeerId,
    pub t0: Instant,
    pub now: Instant,
    pub out: Capture,
    mac: MacKeys,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let t0 = Instant::now();
        // The two public keys, derived once per process rather than for every input (each a
        // scalar multiplication, a tenth of the time of a short input).
        static DERIVED: OnceLock<(MacKeys, PublicKey)> = OnceLock::new();
        let (mac, initiator) = DERIVED.get_or_init(|| {
            let responder = StaticSecret::from_bytes(RESPONDER_SECRET).public_key();
            (MacKeys::new(&responder), StaticSecret::from_bytes(INITIATOR_SECRET).public_key())
        });
        let secret = StaticSecret::from_bytes(RESPONDER_SECRET);
        let mut iface = Interface::new(secret, Config::default(), clock(t0), RESPONDER_SEED);
        let peer = iface.add_peer(*initiator).unwrap();
        iface.set_endpoint(peer, Some(initiator_addr())).unwrap();
        iface.set_psk(peer, Some(PresharedKey::from_bytes(PSK))).unwrap();
        Harness { iface, peer, t0, now: t0, out: Capture::default(), mac: mac.clone() }
    }

    pub fn public_key(&self) -> PublicKey {
        *self.iface.public_key()
    }

    /// Carries out one record, checking what must hold whatever the bytes.
    pub fn step(&mut self, op: u8, body: &[u8]) {
        let sent_before = self.out.sent.len();
        match op & 3 {
            OP_DATAGRAM => self.datagram(op, body),
            OP_ADVANCE => {
                let ms = body.iter().take(3).rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
                self.now += Duration::from_millis(ms);
                self.iface.tick(self.now, &mut self.out);
            }
            OP_INITIATE => self.iface.initiate(self.peer, self.now, &mut self.out).unwrap(),
            _ => {
                self.iface.send(self.peer, body, self.now, &mut self.out).unwrap();
            }
        }
        for (to, datagram) in &self.out.sent[sent_before..] {
            assert!(messages::parse(datagram).is_ok(), "sent a datagram that is no message: {datagram:02x?}");
            assert!([initiator_addr(), stranger_addr()].contains(to), "sent to {to}, an address nothing came from");
        }
        assert!(self.iface.index_count() <= 8, "indices leak: {}", self.iface.index_count());
    }

    fn datagram(&mut self, flags: u8, body: &[u8]) {
        let mut datagram = body.to_vec();
        let len = datagram.len();
        if flags & F_FIX_MAC1 != 0
            && ((len == INITIATION_LEN && datagram[0] == TYPE_INITIATION)
                || (len == RESPONSE_LEN && datagram[0] == TYPE_RESPONSE))
        {
            let mac1 = self.mac.mac1(&datagram);
            let at = messages::mac1_offset(len);
            datagram[at..at + 16].copy_from_slice(&mac1);
        }
        let src = if flags & F_STRANGER != 0 { stranger_addr() } else { initiator_addr() };
        let peer = self.iface.peer(self.peer).unwrap();
        let before = (self.iface.stats(self.peer), peer.endpoint(), self.iface.index_count());
        let delivered_before = self.out.delivered.len();
        let result = self.iface.receive(src, &mut datagram, self.now, flags & F_UNDER_LOAD != 0, &mut self.out);
        let peer = self.iface.peer(self.peer).unwrap();
        let after = (self.iface.stats(self.peer), peer.endpoint(), self.iface.index_count());
        let delivered = &self.out.delivered[delivered_before..];
        match result {
            // Authenticated, so it counts, but it is not a packet.
            Err(veil::noise::ReceiveError::InvalidPacket) => assert!(delivered.is_empty()),
            Err(e) => {
                assert_eq!(before, after, "a refused datagram ({e}) changed the peer's state");
                assert!(delivered.is_empty());
            }
            Ok(veil::noise::Received::Data { peer, len }) => {
                assert_eq!(peer, self.peer);
                assert_eq!(delivered.len(), 1);
                assert_eq!(delivered[0].1.len(), len);
                assert_eq!(veil::noise::ip::packet_len(&delivered[0].1), Some(len));
            }
            Ok(_) => assert!(delivered.is_empty()),
        }
    }
}

/// A minimal IPv4 packet from 10.9.0.1 to 10.9.0.2 carrying `payload` (UDP, checksum off).
pub fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 9, 0, 1]);
    p[16..20].copy_from_slice(&[10, 9, 0, 2]);
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}
