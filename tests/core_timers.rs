//! Section 6 of the WireGuard paper, one rule per test, on a virtual clock.

mod common;

use std::time::Duration;

use common::{Pair, initiations, keepalives, packet};
use veil::noise::{Config, ReceiveError, Received, SendOutcome};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

#[test]
fn exactly_one_passive_keepalive_after_ten_seconds_of_receive_only_traffic() {
    let mut p = Pair::default();
    p.establish();
    p.advance(S);
    p.a_sends(&packet(1, 0));
    p.b.wire_log.clear();
    p.advance(60 * S);
    assert_eq!(keepalives(&p.b.wire_log), vec![11 * S]);
    assert_eq!(p.b.wire_log.len(), 1, "B sent nothing else");
    // A heard the keepalive, so it does not start a new handshake.
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO]);
}

#[test]
fn passive_keepalives_repeat_every_ten_seconds_while_only_receiving() {
    let mut p = Pair::default();
    p.establish();
    for i in 0..30 {
        p.advance(S);
        p.a_sends(&packet(i, 0));
    }
    p.advance(30 * S);
    assert_eq!(keepalives(&p.b.wire_log), vec![11 * S, 21 * S, 31 * S]);
}

#[test]
fn no_keepalives_while_traffic_flows_both_ways() {
    let mut p = Pair::default();
    p.establish();
    for i in 0..60 {
        p.advance(S);
        p.a_sends(&packet(i, 0));
        p.b_sends(&packet(i, 0));
    }
    assert_eq!(keepalives(&p.b.wire_log), Vec::<Duration>::new());
    assert_eq!(keepalives(&p.a.wire_log), vec![Duration::ZERO], "only the key confirmation");
}

#[test]
fn retries_every_rekey_timeout_plus_jitter_then_gives_up_at_ninety_seconds() {
    let mut p = Pair::default();
    p.a_to_b = false;
    assert_eq!(p.a_sends(&packet(1, 0)), SendOutcome::Queued);
    // Step in 10 ms so the moment of giving up is seen.
    let mut gave_up = None;
    while p.elapsed() < 120 * S {
        p.advance(10 * MS);
        let s = p.a.iface.stats(p.a.peer).unwrap();
        if gave_up.is_none() && s.queued_packets == 0 {
            gave_up = Some(p.elapsed());
            assert!(!p.a.iface.peer(p.a.peer).unwrap().handshake_pending());
        }
    }
    let sent = initiations(&p.a.wire_log);
    assert_eq!(sent.len(), 18, "REKEY_ATTEMPT_TIME / REKEY_TIMEOUT initiations: {sent:?}");
    let mut jitters = vec![];
    for w in sent.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= 5 * S && gap <= 5 * S + 334 * MS, "gap {gap:?}");
        jitters.push(gap - 5 * S);
    }
    // Jitter really varies (it is random, not a constant).
    jitters.sort();
    jitters.dedup_by(|x, y| x.abs_diff(*y) < 20 * MS);
    assert!(jitters.len() >= 4, "jitter looks constant: {jitters:?}");
    let gave_up = gave_up.expect("never gave up");
    assert!(gave_up >= 90 * S && gave_up <= 90 * S + 18 * 334 * MS, "gave up at {gave_up:?}");
}

#[test]
fn data_is_refused_under_a_session_older_than_reject_after_time() {
    let mut p = Pair::default();
    p.establish();
    // Two data messages sealed at t=0 are held back and delivered late.
    p.a_to_b = false;
    p.a_sends(&packet(1, 0));
    p.a_sends(&packet(2, 0));
    let held: Vec<Vec<u8>> = p.a.wire_log.iter().rev().take(2).rev().map(|(_, d)| d.clone()).collect();
    p.a_to_b = true;
    p.advance(180 * S - MS);
    let mut first = held[0].clone();
    assert!(matches!(p.b.iface.receive(p.a.addr, &mut first, p.now, false, &mut p.b.out), Ok(Received::Data { .. })));
    p.advance(MS);
    let mut second = held[1].clone();
    assert_eq!(p.b.iface.receive(p.a.addr, &mut second, p.now, false, &mut p.b.out), Err(ReceiveError::Expired));
}

#[test]
fn sending_stops_under_a_session_older_than_reject_after_time() {
    let mut p = Pair::default();
    p.establish();
    p.advance(100 * S);
    p.a_to_b = false; // nothing A sends arrives, so no new session can form
    p.advance(79 * S);
    assert_eq!(p.a_sends(&packet(1, 0)), SendOutcome::Sent, "at 179 s the session still works");
    p.advance(S);
    assert_eq!(p.a_sends(&packet(2, 0)), SendOutcome::Queued, "at 180 s it must not be used");
}

#[test]
fn initiator_rekeys_after_120_seconds_and_responder_does_not() {
    let mut p = Pair::default();
    p.establish();
    p.advance(119 * S);
    p.a_sends(&packet(1, 0));
    p.b_sends(&packet(2, 0));
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO]);
    p.advance(S);
    p.b_sends(&packet(3, 0));
    assert!(initiations(&p.b.wire_log).is_empty(), "the responder never rekeys on time");
    p.a_sends(&packet(4, 0));
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO, 120 * S]);
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().handshakes_completed, 2);
}

#[test]
fn receiving_initiator_rekeys_once_after_reject_minus_keepalive_minus_rekey_timeout() {
    let mut p = Pair::default();
    p.establish();
    p.advance(164 * S);
    p.b_sends(&packet(1, 0));
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO]);
    p.advance(S);
    p.a_to_b = false; // the new handshake does not complete
    p.b_sends(&packet(2, 0));
    p.b_sends(&packet(3, 0));
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO, 165 * S], "one initiation, not one per packet");
}

#[test]
fn new_handshake_when_data_sent_and_nothing_received_for_fifteen_seconds() {
    let mut p = Pair::default();
    p.establish();
    p.advance(S);
    p.b_to_a = false;
    p.a_sends(&packet(1, 0));
    p.advance(16 * S);
    assert_eq!(initiations(&p.a.wire_log), vec![Duration::ZERO, 16 * S]);
}

#[test]
fn all_keys_are_erased_after_540_seconds_without_a_new_session() {
    let mut p = Pair::default();
    p.establish();
    p.advance(540 * S - MS);
    assert!(p.a.iface.stats(p.a.peer).unwrap().sessions >= 1);
    assert!(p.b.iface.stats(p.b.peer).unwrap().sessions >= 1);
    p.advance(MS);
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().sessions, 0);
    assert_eq!(p.b.iface.stats(p.b.peer).unwrap().sessions, 0);
    assert_eq!((p.a.iface.index_count(), p.b.iface.index_count()), (0, 0));
}

#[test]
fn persistent_keepalive_every_interval_when_idle() {
    let mut p = Pair::default();
    p.establish();
    p.advance(S);
    p.a.iface.set_persistent_keepalive(p.a.peer, Some(25 * S), p.now, &mut p.a.out).unwrap();
    p.pump();
    p.advance(100 * S);
    assert_eq!(keepalives(&p.a.wire_log), vec![Duration::ZERO, S, 26 * S, 51 * S, 76 * S, 101 * S]);
}

#[test]
fn persistent_keepalive_opens_a_session_when_there_is_none() {
    let mut p = Pair::default();
    p.a.iface.set_persistent_keepalive(p.a.peer, Some(25 * S), p.now, &mut p.a.out).unwrap();
    p.pump();
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().handshakes_completed, 1);
    assert_eq!(keepalives(&p.a.wire_log), vec![Duration::ZERO]);
}

#[test]
fn constants_can_be_overridden_per_tunnel() {
    let fast = Config {
        rekey_after_time: S,
        reject_after_time: 3 * S,
        rekey_timeout: S / 2,
        keepalive_timeout: S,
        ..Config::default()
    };
    let mut p = Pair::new(fast.clone(), fast, None);
    p.establish();
    for i in 0..10u64 {
        p.advance(S);
        p.a_sends(&packet(i, 0));
    }
    // One handshake per second of traffic instead of one per two minutes.
    let done = p.a.iface.stats(p.a.peer).unwrap().handshakes_completed;
    assert!(done >= 9, "{done} handshakes in 10 s");
    assert_eq!(p.b.out.delivered.len(), 10);
}
