//! Malformed and hostile messages: each is refused with a typed error and changes no state.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use common::{Capture, Pair, packet, secret};
use veil::noise::cookie::CookieError;
use veil::noise::handshake::HandshakeError;
use veil::noise::messages::ParseError;
use veil::noise::session::SessionError;
use veil::noise::{Config, Interface, ReceiveError, Received, Step, WallClock};

/// Everything observable about an interface's state towards its peer.
fn fingerprint(side: &common::Side) -> String {
    let peer = side.iface.peer(side.peer).unwrap();
    format!(
        "{:?} idx={} pending={} endpoint={:?} deadline={:?}",
        side.iface.stats(side.peer).unwrap(),
        side.iface.index_count(),
        peer.handshake_pending(),
        peer.endpoint(),
        side.iface.next_deadline()
    )
}

/// Delivers `datagram` to B from `src` and checks the error and that B's state is untouched.
fn refused_by_b(p: &mut Pair, src: SocketAddr, mut datagram: Vec<u8>, under_load: bool) -> ReceiveError {
    let before = fingerprint(&p.b);
    let err = p.b.iface.receive(src, &mut datagram, p.now, under_load, &mut p.b.out).unwrap_err();
    assert_eq!(fingerprint(&p.b), before, "B's state changed after {err:?}");
    assert!(p.b.out.delivered.is_empty());
    err
}

fn refused_by_a(p: &mut Pair, mut datagram: Vec<u8>) -> ReceiveError {
    let before = fingerprint(&p.a);
    let err = p.a.iface.receive(p.b.addr, &mut datagram, p.now, false, &mut p.a.out).unwrap_err();
    assert_eq!(fingerprint(&p.a), before, "A's state changed after {err:?}");
    err
}

/// A's next initiation, taken off the wire instead of delivered.
fn initiation_from_a(p: &mut Pair) -> Vec<u8> {
    p.a.iface.initiate(p.a.peer, p.now, &mut p.a.out).unwrap();
    let (_, d) = p.a.out.sent.pop().expect("an initiation");
    assert_eq!(d[0], 1);
    d
}

#[test]
fn wrong_sizes_types_and_reserved_bytes() {
    let mut p = Pair::default();
    let src = p.a.addr;
    assert_eq!(refused_by_b(&mut p, src, vec![], false), ReceiveError::Parse(ParseError::TooShort { len: 0 }));
    assert_eq!(refused_by_b(&mut p, src, vec![7, 0, 0, 0, 1], false), ReceiveError::Parse(ParseError::UnknownType(7)));
    let mut init = initiation_from_a(&mut p);
    init.push(0);
    assert_eq!(
        refused_by_b(&mut p, src, init.clone(), false),
        ReceiveError::Parse(ParseError::WrongLength { message: 1, len: 149 })
    );
    init.pop();
    init[3] = 1;
    assert_eq!(refused_by_b(&mut p, src, init, false), ReceiveError::Parse(ParseError::ReservedNotZero));
    assert_eq!(
        refused_by_b(&mut p, src, vec![4, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], false),
        ReceiveError::Parse(ParseError::WrongLength { message: 4, len: 16 })
    );
}

#[test]
fn bad_mac1_is_dropped_before_any_work() {
    let mut p = Pair::default();
    let src = p.a.addr;
    let mut init = initiation_from_a(&mut p);
    init[116] ^= 0x80;
    assert_eq!(refused_by_b(&mut p, src, init, false), ReceiveError::BadMac1);
    // An initiation for someone else's key has a mac1 that does not match ours either.
    let clock = WallClock::new(p.t0, UNIX_EPOCH);
    let mut c = Interface::new(secret(1), Config::default(), clock, [5; 32]);
    let other = c.add_peer(secret(9).public_key()).unwrap();
    c.set_endpoint(other, Some(p.b.addr)).unwrap();
    let mut out = Capture::default();
    c.initiate(other, p.now, &mut out).unwrap();
    assert_eq!(refused_by_b(&mut p, src, out.sent.pop().unwrap().1, false), ReceiveError::BadMac1);
}

#[test]
fn under_load_a_missing_or_wrong_mac2_gets_a_cookie_reply_and_the_cookie_then_works() {
    let mut p = Pair::default();
    let src = p.a.addr;
    let init = initiation_from_a(&mut p);
    assert_eq!(refused_by_b(&mut p, src, init, true), ReceiveError::CookieRequired);
    let (to, reply) = p.b.out.sent.pop().expect("a cookie reply");
    assert_eq!((to, reply.len(), reply[0]), (src, 64, 3));
    // A cookie reply that does not decrypt is refused and changes nothing.
    let mut forged = reply.clone();
    forged[40] ^= 1;
    assert_eq!(refused_by_a(&mut p, forged), ReceiveError::Cookie(CookieError::Decrypt));
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut reply.clone(), p.now, false, &mut p.a.out),
        Ok(Received::CookieReply(_))
    ));
    // The retry carries mac2 and is accepted under load.
    p.now += Duration::from_secs(5);
    let retry = initiation_from_a(&mut p);
    assert_ne!(&retry[132..148], &[0u8; 16], "mac2 is set");
    // ... but from another source address the cookie is wrong.
    let elsewhere: SocketAddr = "10.0.0.99:1000".parse().unwrap();
    assert_eq!(refused_by_b(&mut p, elsewhere, retry.clone(), true), ReceiveError::CookieRequired);
    p.b.out.sent.clear();
    let mut ok = retry;
    assert!(matches!(p.b.iface.receive(src, &mut ok, p.now, true, &mut p.b.out), Ok(Received::Initiation(_))));
}

/// B under load: A's initiation gets a cookie reply, and A's next initiation carries mac2.
fn initiation_with_mac2(p: &mut Pair) -> Vec<u8> {
    let src = p.a.addr;
    let init = initiation_from_a(p);
    assert_eq!(refused_by_b(p, src, init, true), ReceiveError::CookieRequired);
    let (_, mut reply) = p.b.out.sent.pop().expect("a cookie reply");
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut reply, p.now, false, &mut p.a.out),
        Ok(Received::CookieReply(_))
    ));
    p.now += Duration::from_secs(5);
    let init = initiation_from_a(p);
    assert_ne!(&init[132..148], &[0u8; 16], "mac2 is set");
    init
}

#[test]
fn under_load_a_source_with_a_valid_mac2_gets_a_burst_of_five_then_twenty_per_second() {
    let mut p = Pair::default();
    let src = p.a.addr;
    let init = initiation_with_mac2(&mut p);
    // The first is answered; copies of it cost the source a token each before the replay
    // check refuses them (the limiter runs before any public-key work).
    assert!(matches!(
        p.b.iface.receive(src, &mut init.clone(), p.now, true, &mut p.b.out),
        Ok(Received::Initiation(_))
    ));
    p.b.out.sent.clear();
    for _ in 0..4 {
        assert_eq!(refused_by_b(&mut p, src, init.clone(), true), ReceiveError::StaleTimestamp);
    }
    // The sixth within the burst is dropped unanswered, and changes nothing.
    assert_eq!(refused_by_b(&mut p, src, init.clone(), true), ReceiveError::RateLimited);
    assert!(p.b.out.sent.is_empty(), "no cookie reply to a rate-limited message");
    // Not under load, the limiter is not consulted.
    assert_eq!(refused_by_b(&mut p, src, init.clone(), false), ReceiveError::StaleTimestamp);
    // 50 ms later one token is back.
    p.now += Duration::from_millis(50);
    assert_eq!(refused_by_b(&mut p, src, init.clone(), true), ReceiveError::StaleTimestamp);
    assert_eq!(refused_by_b(&mut p, src, init, true), ReceiveError::RateLimited);
}

#[test]
fn under_load_a_source_gets_fifty_cookie_replies_at_once_then_its_messages_are_dropped_unanswered() {
    let mut p = Pair::default();
    let src = p.a.addr;
    let init = initiation_from_a(&mut p);
    for i in 0..50 {
        assert_eq!(refused_by_b(&mut p, src, init.clone(), true), ReceiveError::CookieRequired, "message {i}");
    }
    assert_eq!(p.b.out.sent.len(), 50, "a cookie reply each");
    p.b.out.sent.clear();
    // The 51st, and a copy with a wrong mac2, get nothing (and change nothing).
    assert_eq!(refused_by_b(&mut p, src, init.clone(), true), ReceiveError::RateLimited);
    let mut wrong_mac2 = init.clone();
    wrong_mac2[140] = 1;
    assert_eq!(refused_by_b(&mut p, src, wrong_mac2, true), ReceiveError::RateLimited);
    assert!(p.b.out.sent.is_empty(), "no cookie reply beyond the source's share");
    // Another source still gets its cookie reply.
    let other: SocketAddr = "10.0.0.99:1000".parse().unwrap();
    assert_eq!(refused_by_b(&mut p, other, init.clone(), true), ReceiveError::CookieRequired);
    assert_eq!(p.b.out.sent.pop().map(|(to, _)| to), Some(other));
    // A second later the source has replies again.
    p.now += Duration::from_secs(1);
    assert_eq!(refused_by_b(&mut p, src, init, true), ReceiveError::CookieRequired);
}

#[test]
fn under_load_the_initiator_resends_at_once_with_mac2_instead_of_after_rekey_timeout() {
    let mut p = Pair::default();
    p.b_under_load = true;
    p.a.iface.initiate(p.a.peer, p.now, &mut p.a.out).unwrap();
    p.pump();
    // A: initiation without mac2; B: cookie reply; A: a fresh initiation with mac2 at once;
    // B: response; A: keepalive. All at the same virtual instant (a zero-latency wire), that
    // is one round trip after the cookie reply, not REKEY_TIMEOUT (5 s) later.
    let kinds = |log: &[(Duration, Vec<u8>)]| log.iter().map(|(at, d)| (*at, d[0])).collect::<Vec<_>>();
    let zero = Duration::ZERO;
    assert_eq!(kinds(&p.a.wire_log), [(zero, 1), (zero, 1), (zero, 4)]);
    assert_eq!(kinds(&p.b.wire_log), [(zero, 3), (zero, 2)]);
    let (first, second) = (&p.a.wire_log[0].1, &p.a.wire_log[1].1);
    assert_eq!(&first[132..148], &[0u8; 16], "no cookie yet: no mac2");
    assert_ne!(&second[132..148], &[0u8; 16], "mac2 from the cookie");
    assert_ne!(&first[4..8], &second[4..8], "a fresh initiation: new sender index");
    assert_ne!(&first[8..40], &second[8..40], "a fresh initiation: new ephemeral");
    assert_ne!(&first[76..104], &second[76..104], "a fresh initiation: new encrypted timestamp");
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().handshakes_completed, 1);
    assert_eq!(p.b.iface.stats(p.b.peer).unwrap().handshakes_completed, 1);
    assert!(p.a.log.contains(&Ok(Received::CookieReply(p.a.peer))));
}

#[test]
fn no_second_resend_for_a_replayed_cookie_reply_or_one_that_answers_an_initiation_with_mac2() {
    let mut p = Pair::default();
    let init = initiation_from_a(&mut p);
    // B sees A at another address (say a NAT rebinding), so the cookie is for that address.
    let elsewhere: SocketAddr = "10.0.0.99:1000".parse().unwrap();
    assert_eq!(refused_by_b(&mut p, elsewhere, init, true), ReceiveError::CookieRequired);
    let (_, reply) = p.b.out.sent.pop().unwrap();
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut reply.clone(), p.now, false, &mut p.a.out),
        Ok(Received::CookieReply(_))
    ));
    let (to, resent) = p.a.out.sent.pop().expect("re-sent at once");
    assert!(p.a.out.sent.is_empty(), "exactly one re-send");
    assert_eq!(to, p.b.addr, "to the peer's endpoint, never to where the cookie came from");
    assert_ne!(&resent[132..148], &[0u8; 16]);
    // The same cookie reply again names an initiation that is gone: refused, nothing sent.
    let receiver = u32::from_le_bytes(reply[4..8].try_into().unwrap());
    assert_eq!(refused_by_a(&mut p, reply), ReceiveError::UnknownIndex(receiver));
    assert!(p.a.out.sent.is_empty());
    // B answers the re-send (mac2 for the wrong address) with a cookie again: A takes the
    // cookie but sends nothing until its retry timer, REKEY_TIMEOUT (plus jitter) later.
    let src = p.a.addr;
    assert_eq!(refused_by_b(&mut p, src, resent, true), ReceiveError::CookieRequired);
    let (_, mut reply) = p.b.out.sent.pop().unwrap();
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut reply, p.now, false, &mut p.a.out),
        Ok(Received::CookieReply(_))
    ));
    assert!(p.a.out.sent.is_empty(), "no re-send for an initiation that carried mac2");
    let next = p.a.iface.next_deadline().expect("the retry timer");
    assert!(next - p.now >= veil::noise::config::REKEY_TIMEOUT);
}

#[test]
fn the_gate_answers_a_flood_alone_and_what_passes_it_completes_without_a_second_check() {
    // The engine's order: Gate::check without the interface's lock, then
    // receive_checked_handshake for what passed.
    let mut p = Pair::default();
    let src = p.a.addr;
    let gate = p.b.iface.gate();
    let init = initiation_from_a(&mut p);
    let before = fingerprint(&p.b);
    assert_eq!(gate.lock().check(&init, src, p.now, true, &mut p.b.out), Err(ReceiveError::CookieRequired));
    assert_eq!(fingerprint(&p.b), before, "the gate touches no interface state");
    let (_, mut reply) = p.b.out.sent.pop().expect("a cookie reply");
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut reply, p.now, false, &mut p.a.out),
        Ok(Received::CookieReply(_))
    ));
    let (_, resent) = p.a.out.sent.pop().expect("re-sent at once");
    assert_eq!(gate.lock().check(&resent, src, p.now, true, &mut p.b.out), Ok(()));
    let mut step = p.b.iface.receive_checked_handshake(src, &resent, p.now, &mut p.b.out);
    let result = loop {
        match step {
            Step::Done(r) => break r,
            Step::Work(mut w) => {
                w.run();
                step = p.b.iface.resume(w, p.now, &mut p.b.out);
            }
        }
    };
    assert!(matches!(result, Ok(Received::Initiation(_))));
}

#[test]
fn wrong_psk_fails_the_response_and_keeps_the_initiators_handshake() {
    let mut p = Pair::new(Config::default(), Config::default(), Some([1; 32]));
    p.b.iface.set_psk(p.b.peer, Some(veil::noise::PresharedKey::from_bytes([2; 32]))).unwrap();
    let mut init = initiation_from_a(&mut p);
    assert!(matches!(p.b.iface.receive(p.a.addr, &mut init, p.now, false, &mut p.b.out), Ok(Received::Initiation(_))));
    let (_, response) = p.b.out.sent.pop().unwrap();
    assert_eq!(refused_by_a(&mut p, response), ReceiveError::Handshake(HandshakeError::Decrypt));
    assert!(p.a.iface.peer(p.a.peer).unwrap().handshake_pending());
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().sessions, 0);
}

#[test]
fn replayed_initiation_and_stale_timestamp_are_refused() {
    let mut p = Pair::default();
    p.now += Duration::from_secs(10);
    let init = initiation_from_a(&mut p);
    assert!(matches!(
        p.b.iface.receive(p.a.addr, &mut init.clone(), p.now, false, &mut p.b.out),
        Ok(Received::Initiation(_))
    ));
    p.b.out.sent.clear();
    p.now += Duration::from_secs(1);
    let src = p.a.addr;
    assert_eq!(refused_by_b(&mut p, src, init, false), ReceiveError::StaleTimestamp);
    // A genuine initiation from A's key, but with a clock an hour behind.
    let clock = WallClock::new(p.t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 3600));
    let mut old = Interface::new(secret(1), Config::default(), clock, [77; 32]);
    let pb = old.add_peer(secret(2).public_key()).unwrap();
    old.set_endpoint(pb, Some(p.b.addr)).unwrap();
    let mut out = Capture::default();
    old.initiate(pb, p.now, &mut out).unwrap();
    assert_eq!(refused_by_b(&mut p, src, out.sent.pop().unwrap().1, false), ReceiveError::StaleTimestamp);
}

#[test]
fn more_than_fifty_initiations_per_second_from_one_peer_are_refused() {
    let mut p = Pair::default();
    let src = p.a.addr;
    let make = |p: &Pair, skew: u64, seed: u8| {
        let clock = WallClock::new(p.t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000 + skew));
        let mut a = Interface::new(secret(1), Config::default(), clock, [seed; 32]);
        let pb = a.add_peer(secret(2).public_key()).unwrap();
        a.set_endpoint(pb, Some(p.b.addr)).unwrap();
        let mut out = Capture::default();
        a.initiate(pb, p.now, &mut out).unwrap();
        out.sent.pop().unwrap().1
    };
    let (first, second, third) = (make(&p, 1, 1), make(&p, 2, 2), make(&p, 3, 3));
    assert!(matches!(
        p.b.iface.receive(src, &mut first.clone(), p.now, false, &mut p.b.out),
        Ok(Received::Initiation(_))
    ));
    p.now += Duration::from_millis(19);
    assert_eq!(refused_by_b(&mut p, src, second, false), ReceiveError::InitiationFlood);
    p.now += Duration::from_millis(1);
    assert!(matches!(
        p.b.iface.receive(src, &mut third.clone(), p.now, false, &mut p.b.out),
        Ok(Received::Initiation(_))
    ));
}

#[test]
fn unknown_peer_and_unknown_indices() {
    let mut p = Pair::default();
    let src = p.a.addr;
    // C knows B, B does not know C.
    let clock = WallClock::new(p.t0, UNIX_EPOCH);
    let mut c = Interface::new(secret(3), Config::default(), clock, [3; 32]);
    let pb = c.add_peer(secret(2).public_key()).unwrap();
    c.set_endpoint(pb, Some(p.b.addr)).unwrap();
    let mut out = Capture::default();
    c.initiate(pb, p.now, &mut out).unwrap();
    assert_eq!(refused_by_b(&mut p, src, out.sent.pop().unwrap().1, false), ReceiveError::UnknownPeer);

    p.establish();
    p.a_to_b = false;
    p.a_sends(&packet(1, 0));
    let mut data = p.a.wire_log.last().unwrap().1.clone();
    data[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    assert_eq!(refused_by_b(&mut p, src, data, false), ReceiveError::UnknownIndex(0xdead_beef));
    let mut response = vec![0u8; 92];
    response[0] = 2;
    response[8..12].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    assert_eq!(refused_by_a(&mut p, response), ReceiveError::UnknownIndex(0x1234_5678));
    let mut cookie = vec![0u8; 64];
    cookie[0] = 3;
    cookie[4..8].copy_from_slice(&0x0bad_f00du32.to_le_bytes());
    assert_eq!(refused_by_a(&mut p, cookie), ReceiveError::UnknownIndex(0x0bad_f00d));
}

#[test]
fn tampered_and_replayed_data_are_refused() {
    let mut p = Pair::default();
    p.establish();
    let src = p.a.addr;
    p.a_sends(&packet(1, 30));
    let data = p.a.wire_log.last().unwrap().1.clone();
    p.b.out.delivered.clear();
    assert_eq!(refused_by_b(&mut p, src, data.clone(), false), ReceiveError::Session(SessionError::Replay));
    let mut tampered = data.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(refused_by_b(&mut p, src, tampered, false), ReceiveError::Session(SessionError::Decrypt));
    // A forged counter (header is not covered by encryption, but is by the nonce).
    let mut recounted = data;
    recounted[8] = 50;
    assert_eq!(refused_by_b(&mut p, src, recounted, false), ReceiveError::Session(SessionError::Decrypt));
}

#[test]
fn a_response_with_the_wrong_sender_key_fails_and_the_real_one_still_works() {
    let mut p = Pair::default();
    let mut init = initiation_from_a(&mut p);
    assert!(p.b.iface.receive(p.a.addr, &mut init, p.now, false, &mut p.b.out).is_ok());
    let (_, response) = p.b.out.sent.pop().unwrap();
    let mut forged = response.clone();
    forged[20] ^= 1; // the ephemeral key
    // mac1 no longer matches, so it is dropped even before decryption.
    assert_eq!(refused_by_a(&mut p, forged), ReceiveError::BadMac1);
    assert!(matches!(
        p.a.iface.receive(p.b.addr, &mut response.clone(), p.now, false, &mut p.a.out),
        Ok(Received::Response(_))
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
    /// Any bytes, with any of the four type headers: refused, no panic, no state change.
    #[test]
    fn arbitrary_datagrams_never_panic_or_change_state(kind in 0u8..6, body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let mut p = Pair::default();
        p.establish();
        let mut d = vec![kind, 0, 0, 0];
        d.extend_from_slice(&body);
        let src = p.a.addr;
        let before = fingerprint(&p.b);
        let r = p.b.iface.receive(src, &mut d, p.now, false, &mut p.b.out);
        proptest::prop_assert!(r.is_err());
        proptest::prop_assert_eq!(fingerprint(&p.b), before);
    }
}
