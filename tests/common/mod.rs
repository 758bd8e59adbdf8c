//! Two in-memory veil interfaces joined by a scripted wire, on a virtual clock.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use veil::noise::{Config, Interface, Output, PeerId, PresharedKey, ReceiveError, Received, StaticSecret, WallClock};

/// Collects what one interface sends and delivers.
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

/// One side of the pair.
pub struct Side {
    pub iface: Interface,
    pub addr: SocketAddr,
    /// The other side, as a peer of this one.
    pub peer: PeerId,
    pub out: Capture,
    /// Every receive result, in order.
    pub log: Vec<Result<Received, ReceiveError>>,
    /// Datagrams this side sent, with the virtual time they left.
    pub wire_log: Vec<(Duration, Vec<u8>)>,
}

pub struct Pair {
    pub a: Side,
    pub b: Side,
    pub t0: Instant,
    pub now: Instant,
    /// When false, datagrams from that side are dropped on the wire.
    pub a_to_b: bool,
    pub b_to_a: bool,
    /// B handles handshake messages as a responder under load (cookies, rate limit).
    pub b_under_load: bool,
}

pub fn secret(byte: u8) -> StaticSecret {
    StaticSecret::from_bytes([byte; 32])
}

impl Pair {
    /// A and B know each other; only A knows B's endpoint (B learns A's from the handshake).
    pub fn new(config_a: Config, config_b: Config, psk: Option<[u8; 32]>) -> Pair {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let (ka, kb) = (secret(1), secret(2));
        let mut a = Interface::new(ka.clone(), config_a, clock.clone(), [11; 32]);
        let mut b = Interface::new(kb.clone(), config_b, clock, [22; 32]);
        let pb = a.add_peer(kb.public_key()).unwrap();
        let pa = b.add_peer(ka.public_key()).unwrap();
        let (addr_a, addr_b): (SocketAddr, SocketAddr) =
            ("10.0.0.1:1000".parse().unwrap(), "10.0.0.2:2000".parse().unwrap());
        a.set_endpoint(pb, Some(addr_b)).unwrap();
        if let Some(k) = psk {
            a.set_psk(pb, Some(PresharedKey::from_bytes(k))).unwrap();
            b.set_psk(pa, Some(PresharedKey::from_bytes(k))).unwrap();
        }
        let side =
            |iface, addr, peer| Side { iface, addr, peer, out: Capture::default(), log: vec![], wire_log: vec![] };
        Pair {
            a: side(a, addr_a, pb),
            b: side(b, addr_b, pa),
            t0,
            now: t0,
            a_to_b: true,
            b_to_a: true,
            b_under_load: false,
        }
    }

    pub fn default() -> Pair {
        Pair::new(Config::default(), Config::default(), None)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Moves datagrams across until both sides are quiet. Returns how many were carried.
    pub fn pump(&mut self) -> usize {
        let mut carried = 0;
        loop {
            let from_a = std::mem::take(&mut self.a.out.sent);
            let from_b = std::mem::take(&mut self.b.out.sent);
            if from_a.is_empty() && from_b.is_empty() {
                return carried;
            }
            let at = self.elapsed();
            for (to, mut d) in from_a {
                self.a.wire_log.push((at, d.clone()));
                if !self.a_to_b {
                    continue;
                }
                assert_eq!(to, self.b.addr, "A sent to an address that is not B's");
                carried += 1;
                let r = self.b.iface.receive(self.a.addr, &mut d, self.now, self.b_under_load, &mut self.b.out);
                self.b.log.push(r);
            }
            for (to, mut d) in from_b {
                self.b.wire_log.push((at, d.clone()));
                if !self.b_to_a {
                    continue;
                }
                assert_eq!(to, self.a.addr, "B sent to an address that is not A's");
                carried += 1;
                let r = self.a.iface.receive(self.b.addr, &mut d, self.now, false, &mut self.a.out);
                self.a.log.push(r);
            }
        }
    }

    /// Advances the clock by `d`, firing every timer at its own deadline on the way (so that
    /// timers fire at the virtual instant they are due, not late), pumping after each.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.a.iface.next_deadline(), self.b.iface.next_deadline()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.iface.tick(self.now, &mut self.a.out);
                    self.b.iface.tick(self.now, &mut self.b.out);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.a.iface.tick(self.now, &mut self.a.out);
        self.b.iface.tick(self.now, &mut self.b.out);
        self.pump();
    }

    pub fn a_sends(&mut self, packet: &[u8]) -> veil::noise::SendOutcome {
        let r = self.a.iface.send(self.a.peer, packet, self.now, &mut self.a.out).unwrap();
        self.pump();
        r
    }

    pub fn b_sends(&mut self, packet: &[u8]) -> veil::noise::SendOutcome {
        let r = self.b.iface.send(self.b.peer, packet, self.now, &mut self.b.out).unwrap();
        self.pump();
        r
    }

    /// Handshake started by A and confirmed by A's first data (a keepalive).
    pub fn establish(&mut self) {
        self.a.iface.initiate(self.a.peer, self.now, &mut self.a.out).unwrap();
        self.pump();
        assert_eq!(self.a.iface.stats(self.a.peer).unwrap().handshakes_completed, 1);
        assert_eq!(self.b.iface.stats(self.b.peer).unwrap().handshakes_completed, 1);
    }
}

/// An IPv4/UDP packet whose payload carries `seq`, so deliveries can be checked one by one.
pub fn packet(seq: u64, extra: usize) -> Vec<u8> {
    let total = 28 + 8 + extra;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 9, 0, 1]);
    p[16..20].copy_from_slice(&[10, 9, 0, 2]);
    p[28..36].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in p[36..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    p
}

pub fn seq_of(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[28..36].try_into().unwrap())
}

/// Handshake initiations (type 1) among logged datagrams.
pub fn initiations(log: &[(Duration, Vec<u8>)]) -> Vec<Duration> {
    log.iter().filter(|(_, d)| d[0] == 1).map(|(t, _)| *t).collect()
}

/// Keepalives (data messages of the minimum size) among logged datagrams.
pub fn keepalives(log: &[(Duration, Vec<u8>)]) -> Vec<Duration> {
    log.iter().filter(|(_, d)| d[0] == 4 && d.len() == 32).map(|(t, _)| *t).collect()
}
