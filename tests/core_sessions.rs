//! Two in-memory peers on a virtual clock: handshakes, data both ways, many rekeys.

mod common;

use std::time::Duration;

use common::{Pair, packet, seq_of};
use veil::noise::{Config, Received, SendOutcome};

#[test]
fn handshake_then_data_both_ways_with_and_without_psk() {
    for psk in [None, Some([7u8; 32])] {
        let mut p = Pair::new(Config::default(), Config::default(), psk);
        // The first packet is queued, starts the handshake, and goes out once it completes.
        assert_eq!(p.a_sends(&packet(1, 10)), SendOutcome::Queued);
        assert_eq!(p.b.out.delivered.len(), 1);
        assert_eq!(p.b.out.delivered[0].1, packet(1, 10));
        assert!(matches!(p.b.log[0], Ok(Received::Initiation(_))));
        assert!(matches!(p.a.log[0], Ok(Received::Response(_))));
        // B learned A's endpoint from the handshake and can answer.
        assert_eq!(p.b_sends(&packet(2, 1000)), SendOutcome::Sent);
        assert_eq!(p.a.out.delivered.last().unwrap().1, packet(2, 1000));
        assert_eq!(p.a_sends(&packet(3, 0)), SendOutcome::Sent);
        assert_eq!(p.b.out.delivered.last().unwrap().1, packet(3, 0));
        let (sa, sb) = (p.a.iface.stats(p.a.peer).unwrap(), p.b.iface.stats(p.b.peer).unwrap());
        assert_eq!((sa.handshakes_completed, sb.handshakes_completed), (1, 1));
        assert_eq!(sa.tx_bytes, sb.rx_bytes + 148, "B counts all but the initiation it answered");
        assert!(p.a.log.iter().chain(p.b.log.iter()).all(|r| r.is_ok()), "{:?} {:?}", p.a.log, p.b.log);
    }
}

#[test]
fn padding_hides_lengths_to_a_multiple_of_16() {
    let mut p = Pair::default();
    p.establish();
    for extra in [0usize, 1, 5, 13, 100] {
        p.a.wire_log.clear();
        p.a_sends(&packet(extra as u64, extra));
        let (_, d) = p.a.wire_log.last().unwrap();
        assert_eq!((d.len() - 32) % 16, 0, "data message of {} bytes", d.len());
        assert_eq!(p.b.out.delivered.last().unwrap().1.len(), 36 + extra, "padding stripped on delivery");
    }
}

/// At least 1,000,000 messages and at least 200 rekeys, with nothing lost or duplicated.
#[test]
fn a_million_messages_across_hundreds_of_rekeys() {
    let config = Config { rekey_after_messages: 2_000, rekey_timeout: Duration::from_secs(1), ..Config::default() };
    let mut p = Pair::new(config.clone(), config, Some([3u8; 32]));
    p.establish();
    let total: u64 = 1_000_000;
    let (mut next_a, mut next_b) = (0u64, 0u64);
    for i in 0..total / 2 {
        p.a.iface.send(p.a.peer, &packet(i, 16), p.now, &mut p.a.out).unwrap();
        p.b.iface.send(p.b.peer, &packet(i, 16), p.now, &mut p.b.out).unwrap();
        p.pump();
        for (_, d) in p.b.out.delivered.drain(..) {
            assert_eq!(seq_of(&d), next_b, "B got a packet out of order, twice or lost one");
            next_b += 1;
        }
        for (_, d) in p.a.out.delivered.drain(..) {
            assert_eq!(seq_of(&d), next_a, "A got a packet out of order, twice or lost one");
            next_a += 1;
        }
        p.now += Duration::from_micros(1500);
        if i % 64 == 0 {
            p.a.iface.tick(p.now, &mut p.a.out);
            p.b.iface.tick(p.now, &mut p.b.out);
            p.pump();
        }
    }
    p.advance(Duration::from_millis(1));
    assert_eq!((next_a, next_b), (total / 2, total / 2));
    let (sa, sb) = (p.a.iface.stats(p.a.peer).unwrap(), p.b.iface.stats(p.b.peer).unwrap());
    let rekeys = sa.handshakes_completed.max(sb.handshakes_completed) - 1;
    eprintln!("{rekeys} rekeys (A completed {}, B completed {})", sa.handshakes_completed, sb.handshakes_completed);
    assert!(rekeys >= 200, "only {rekeys} rekeys");
    assert_eq!(sa.queued_packets + sb.queued_packets, 0);
    let errors: Vec<_> = p.a.log.iter().chain(p.b.log.iter()).filter(|r| r.is_err()).collect();
    assert!(errors.is_empty(), "{} errors, first {:?}", errors.len(), errors.first());
    // Old sessions are retired: at most current, previous and next per side.
    assert!(p.a.iface.index_count() <= 4 && p.b.iface.index_count() <= 4);
}

/// `wg syncconf` resends the private key in use: that must not cost the sessions, while a new
/// key must (sessions made with the old key are worthless).
#[test]
fn setting_the_same_private_key_keeps_sessions_and_a_new_one_drops_them() {
    let mut p = Pair::default();
    p.establish();
    let same = p.a.iface.private_key().clone();
    p.a.iface.set_private_key(same);
    p.a.wire_log.clear();
    assert_eq!(p.a_sends(&packet(1, 10)), SendOutcome::Sent, "the session survived the same key");
    assert_eq!(p.b.out.delivered.last().unwrap().1, packet(1, 10));
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().handshakes_completed, 1, "no new handshake");

    p.a.iface.set_private_key(common::secret(9));
    assert_eq!(p.a_sends(&packet(2, 10)), SendOutcome::Queued, "a new key needs a new handshake");
}
