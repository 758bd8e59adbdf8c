//! The core's batch entry points, as the packet engine uses them, on a virtual clock:
//! `plan_send` (counters reserved, sealed outside the core with `Session::seal_at`) and the
//! shared index table plus `received` (opened outside the core, bookkeeping once per batch).

mod common;

use std::time::Duration;

use common::{Pair, Side, packet, seq_of};
use veil::noise::messages::{DATA_HEADER_LEN, Message, parse};
use veil::noise::session::sealed_len;
use veil::noise::{Config, ReceivedData, SendOutcome, ip};

/// Plans and seals `packets` from `from` the way the TUN thread does; returns the datagrams.
fn seal_batch(from: &mut Side, packets: &[Vec<u8>], now: std::time::Instant) -> Option<Vec<Vec<u8>>> {
    let plan = from.iface.plan_send(from.peer, packets.iter().map(Vec::len), now, &mut from.out).unwrap()?;
    let mut out = Vec::new();
    for (k, p) in packets.iter().enumerate() {
        let mut buf = vec![0u8; sealed_len(p.len(), plan.mtu)];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + p.len()].copy_from_slice(p);
        let n = plan.session.seal_at(plan.first_counter + k as u64, &mut buf, p.len(), plan.mtu).unwrap();
        buf.truncate(n);
        out.push(buf);
    }
    Some(out)
}

/// Opens `datagrams` at `to` the way a UDP reader does and reports them in one call per
/// session; returns the packets (padding stripped) in order.
fn open_batch(
    to: &mut Side,
    src: std::net::SocketAddr,
    datagrams: &mut [Vec<u8>],
    now: std::time::Instant,
) -> Vec<Vec<u8>> {
    let reader = to.iface.index_reader();
    let mut delivered = Vec::new();
    let mut reports: Vec<(veil::noise::PeerId, ReceivedData)> = Vec::new();
    for d in datagrams.iter_mut() {
        let Ok(Message::Data(m)) = parse(d) else { panic!("not a data message") };
        let (index, counter) = (m.receiver(), m.counter());
        let (peer, session) = {
            let table = reader.lock();
            let (peer, s) = table.get(index).expect("a session for the index");
            (peer, s.clone())
        };
        let wire = d.len() as u64;
        let plain = session.open(counter, &mut d[DATA_HEADER_LEN..]).expect("opens");
        let packets = u64::from(!plain.is_empty());
        if !plain.is_empty() {
            delivered.push(plain[..ip::packet_len(plain).unwrap()].to_vec());
        }
        match reports.iter_mut().find(|(p, r)| *p == peer && r.index == index) {
            Some((_, r)) => {
                r.bytes += wire;
                r.packets += packets;
            }
            None => reports.push((peer, ReceivedData { index, src, bytes: wire, packets })),
        }
    }
    for (peer, r) in reports {
        to.iface.received(peer, &r, now, &mut to.out);
    }
    delivered
}

#[test]
fn a_planned_batch_opens_in_order_with_consecutive_counters_and_the_same_accounting() {
    let mut p = Pair::default();
    p.establish();
    let packets: Vec<Vec<u8>> = (0..40).map(|i| packet(i, (i as usize * 37) % 1300)).collect();
    let before = (p.a.iface.stats(p.a.peer).unwrap().tx_bytes, p.b.iface.stats(p.b.peer).unwrap().rx_bytes);
    let now = p.now;
    let mut datagrams = seal_batch(&mut p.a, &packets, now).expect("a session exists");
    let counters: Vec<u64> = datagrams
        .iter()
        .map(|d| match parse(d) {
            Ok(Message::Data(m)) => m.counter(),
            _ => unreachable!(),
        })
        .collect();
    assert!(counters.windows(2).all(|w| w[1] == w[0] + 1), "consecutive counters: {counters:?}");
    let wire: u64 = datagrams.iter().map(|d| d.len() as u64).sum();
    let addr_a = p.a.addr;
    let got = open_batch(&mut p.b, addr_a, &mut datagrams, now);
    assert_eq!(got, packets, "every packet, in order, padding stripped");
    let after = (p.a.iface.stats(p.a.peer).unwrap().tx_bytes, p.b.iface.stats(p.b.peer).unwrap().rx_bytes);
    assert_eq!(after.0 - before.0, wire, "A counts the batch's datagrams");
    assert_eq!(after.1 - before.1, wire, "B counts the same bytes");
    // A packet sent one at a time after the batch continues the counters.
    assert_eq!(p.a_sends(&packet(99, 5)), SendOutcome::Sent);
    assert_eq!(seq_of(&p.b.out.delivered.last().unwrap().1), 99);
}

#[test]
fn without_a_session_there_is_no_plan_and_sent_packets_wait_for_the_handshake() {
    let mut p = Pair::default();
    let now = p.now;
    assert!(seal_batch(&mut p.a, &[packet(1, 10)], now).is_none());
    assert!(p.a.out.sent.is_empty(), "planning alone starts no handshake");
    // What the TUN thread does then: each packet to send(), which stages it and initiates.
    for i in 0..3 {
        assert_eq!(p.a.iface.send(p.a.peer, &packet(i, 10), now, &mut p.a.out).unwrap(), SendOutcome::Queued);
    }
    p.pump();
    let seqs: Vec<u64> = p.b.out.delivered.iter().map(|(_, d)| seq_of(d)).collect();
    assert_eq!(seqs, vec![0, 1, 2], "staged packets follow the handshake in order");
    // Now a batch can be planned.
    assert!(seal_batch(&mut p.a, &[packet(3, 10)], p.now).is_some());
}

#[test]
fn a_responders_session_is_confirmed_by_a_batch_and_staged_packets_follow() {
    let mut p = Pair::default();
    // B stages a packet for A before any session exists (B knows no endpoint yet: it only
    // learns it from A's initiation), then A initiates.
    assert_eq!(p.b.iface.send(p.b.peer, &packet(7, 3), p.now, &mut p.b.out).unwrap(), SendOutcome::Queued);
    p.a.iface.initiate(p.a.peer, p.now, &mut p.a.out).unwrap();
    // Carry the initiation and the response, but hold A's confirming keepalive.
    let init = std::mem::take(&mut p.a.out.sent);
    for (_, mut d) in init {
        let r = p.b.iface.receive(p.a.addr, &mut d, p.now, false, &mut p.b.out);
        assert!(r.is_ok());
    }
    let resp = std::mem::take(&mut p.b.out.sent);
    for (_, mut d) in resp {
        let r = p.a.iface.receive(p.b.addr, &mut d, p.now, false, &mut p.a.out);
        assert!(r.is_ok());
    }
    p.a.out.sent.clear(); // the keepalive that would have confirmed B's session
    assert_eq!(p.b.iface.stats(p.b.peer).unwrap().handshakes_completed, 0, "B waits for confirmation");
    let now = p.now;
    let mut batch = seal_batch(&mut p.a, &[packet(1, 10), packet(2, 10)], now).unwrap();
    let addr_a = p.a.addr;
    let got = open_batch(&mut p.b, addr_a, &mut batch, now);
    assert_eq!(got.len(), 2);
    assert_eq!(p.b.iface.stats(p.b.peer).unwrap().handshakes_completed, 1, "the batch confirmed B's session");
    // B's staged packet went out at once, sealed with the confirmed session.
    assert_eq!(p.b.out.sent.len(), 1);
    p.pump();
    assert_eq!(seq_of(&p.a.out.delivered.last().unwrap().1), 7);
}

#[test]
fn timers_hear_of_a_batch_once_and_act_as_for_single_packets() {
    let config = Config::default();
    let mut p = Pair::new(config.clone(), config.clone(), None);
    p.establish();
    p.advance(Duration::from_secs(1));
    p.a.wire_log.clear();
    p.b.wire_log.clear();
    // A sends a batch that B receives; B says nothing back: after KEEPALIVE_TIMEOUT B sends a
    // keepalive (data received), and nothing else happens.
    let now = p.now;
    let mut batch = seal_batch(&mut p.a, &(0..10).map(|i| packet(i, 100)).collect::<Vec<_>>(), now).unwrap();
    let addr_a = p.a.addr;
    open_batch(&mut p.b, addr_a, &mut batch, now);
    p.advance(config.keepalive_timeout + Duration::from_millis(1));
    assert_eq!(common::keepalives(&p.b.wire_log).len(), 1, "one keepalive from B for the whole batch");
    // A batch that B never answers (the wire to A is cut): A starts a new handshake after
    // KEEPALIVE_TIMEOUT + REKEY_TIMEOUT.
    p.b_to_a = false;
    p.a.wire_log.clear();
    let now = p.now;
    let mut batch = seal_batch(&mut p.a, &[packet(50, 10)], now).unwrap();
    open_batch(&mut p.b, addr_a, &mut batch, now);
    p.advance(config.new_handshake_after() - Duration::from_millis(10));
    assert!(common::initiations(&p.a.wire_log).is_empty());
    p.advance(Duration::from_millis(20));
    assert_eq!(common::initiations(&p.a.wire_log).len(), 1, "new handshake after 15 s without a reply");
}

#[test]
fn ten_thousand_peers_timers_fire_at_their_own_deadlines() {
    use veil::noise::{Interface, StaticSecret, WallClock};
    let t0 = std::time::Instant::now();
    let clock = WallClock::new(t0, std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let mut iface = Interface::new(StaticSecret::from_bytes([1; 32]), Config::default(), clock, [5; 32]);
    let mut out = common::Capture::default();
    let n = 10_000u32;
    for i in 0..n {
        let mut key = [0u8; 32];
        // Clamping clears the low bits of byte 0: keep the peer's number out of it.
        key[1..5].copy_from_slice(&i.to_le_bytes());
        key[5] = 0x55;
        let public = StaticSecret::from_bytes(key).public_key();
        let id = iface.add_peer(public).unwrap();
        let port = 1000 + (i % 60000) as u16;
        iface.set_endpoint(id, Some(std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], port)))).unwrap();
        // Keepalive intervals of 1..=25 s: each turned on sends one initiation at once.
        let secs = 1 + u64::from(i % 25);
        iface.set_persistent_keepalive(id, Some(Duration::from_secs(secs)), t0, &mut out).unwrap();
    }
    assert_eq!(out.sent.len(), n as usize, "one initiation per peer (the keepalive opens a session)");
    out.sent.clear();
    // The earliest deadline is a retransmission or a 1 s keepalive, never later than 1 s out.
    let first = iface.next_deadline().unwrap();
    assert!(first <= t0 + Duration::from_secs(1) + Duration::from_millis(1));
    // Nothing is due before it.
    iface.tick(first - Duration::from_millis(1), &mut out);
    assert!(out.sent.is_empty());
    // At 1 s exactly the 1 s keepalive peers (400 of them) fire: they have no session, so each
    // keepalive is staged, and the initiation rule (one per REKEY_TIMEOUT) sends nothing new.
    iface.tick(t0 + Duration::from_secs(1), &mut out);
    assert!(out.sent.is_empty(), "no second initiation within REKEY_TIMEOUT");
    let staged: usize = iface.peers().map(|p| p.stats().queued_packets).sum();
    assert_eq!(staged, (n + n / 25) as usize, "every peer staged its first keepalive, the 1 s peers a second");
}
