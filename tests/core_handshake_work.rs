//! Handshake messages handled in steps, with the public-key work done between two calls into
//! the interface (as the engine does it, without the interface's lock), and with the interface
//! changing in between: a replayed initiation, a removed peer, a newer initiation, a forged
//! response.

mod common;

use std::time::Duration;

use common::{Pair, packet, seq_of};
use veil::noise::{HandshakeWork, ReceiveError, Received, SendOutcome, Step};

/// The first step for a datagram B receives from A; panics unless it is work.
fn b_starts(p: &mut Pair, datagram: &[u8]) -> Box<HandshakeWork> {
    match p.b.iface.receive_handshake(p.a.addr, datagram, p.now, false, &mut p.b.out) {
        Step::Work(w) => w,
        Step::Done(r) => panic!("no work: {r:?}"),
    }
}

fn b_resumes(p: &mut Pair, mut work: Box<HandshakeWork>) -> Step {
    work.run();
    p.b.iface.resume(work, p.now, &mut p.b.out)
}

/// A's first initiation to B (A stages a packet, which starts it).
fn initiation(p: &mut Pair) -> Vec<u8> {
    assert_eq!(p.a.iface.send(p.a.peer, &packet(1, 10), p.now, &mut p.a.out).unwrap(), SendOutcome::Queued);
    let (_, m) = p.a.out.sent.pop().expect("an initiation");
    assert_eq!(m[0], 1);
    m
}

#[test]
fn steps_one_by_one_complete_the_handshake_like_receive() {
    let mut p = Pair::default();
    let init = initiation(&mut p);
    let w = b_starts(&mut p, &init);
    let Step::Work(w) = b_resumes(&mut p, w) else { panic!("an initiation takes a second piece of work") };
    let Step::Done(Ok(Received::Initiation(_))) = b_resumes(&mut p, w) else { panic!("answered") };
    // The response, read by A in steps as well.
    let (_, resp) = p.b.out.sent.pop().expect("a response");
    let w = match p.a.iface.receive_handshake(p.b.addr, &resp, p.now, false, &mut p.a.out) {
        Step::Work(w) => w,
        Step::Done(r) => panic!("no work: {r:?}"),
    };
    let mut w = w;
    w.run();
    assert!(matches!(p.a.iface.resume(w, p.now, &mut p.a.out), Step::Done(Ok(Received::Response(_)))));
    p.pump();
    assert_eq!(seq_of(&p.b.out.delivered[0].1), 1, "the staged packet followed the handshake");
}

#[test]
fn a_replayed_initiation_is_refused_while_the_first_is_still_being_answered() {
    let mut p = Pair::default();
    let init = initiation(&mut p);
    let first = b_starts(&mut p, &init);
    let Step::Work(answering) = b_resumes(&mut p, first) else { panic!() };
    // The same initiation again (a replay) before the response to the first is written.
    p.now += Duration::from_millis(50);
    let replay = b_starts(&mut p, &init);
    assert!(matches!(b_resumes(&mut p, replay), Step::Done(Err(ReceiveError::StaleTimestamp))));
    // The first goes on unharmed.
    assert!(matches!(b_resumes(&mut p, answering), Step::Done(Ok(Received::Initiation(_)))));
    p.pump();
    assert_eq!(p.b.out.delivered.len(), 1);
}

#[test]
fn a_peer_removed_while_its_response_is_written_leaves_no_index_behind() {
    let mut p = Pair::default();
    let init = initiation(&mut p);
    let w = b_starts(&mut p, &init);
    let Step::Work(answering) = b_resumes(&mut p, w) else { panic!() };
    assert_eq!(p.b.iface.index_count(), 1, "the response's index is reserved");
    p.b.iface.remove_peer(p.b.peer).unwrap();
    assert!(matches!(b_resumes(&mut p, answering), Step::Done(Err(ReceiveError::UnknownPeer))));
    assert_eq!(p.b.iface.index_count(), 0);
    assert!(p.b.out.sent.is_empty(), "no response for a removed peer");
}

#[test]
fn a_response_read_while_a_newer_initiation_went_out_is_dropped_and_the_newer_one_stands() {
    let mut p = Pair::default();
    let init = initiation(&mut p);
    let mut b_in = init.clone();
    p.b.iface.receive(p.a.addr, &mut b_in, p.now, false, &mut p.b.out).unwrap();
    let (_, resp) = p.b.out.sent.pop().unwrap();
    let mut w = match p.a.iface.receive_handshake(p.b.addr, &resp, p.now, false, &mut p.a.out) {
        Step::Work(w) => w,
        Step::Done(r) => panic!("{r:?}"),
    };
    // While A reads the response, its retry timer sends a new initiation.
    p.now += Duration::from_secs(6);
    p.a.iface.tick(p.now, &mut p.a.out);
    assert_eq!(p.a.out.sent.iter().filter(|(_, d)| d[0] == 1).count(), 1, "a new initiation went out");
    w.run();
    assert!(matches!(p.a.iface.resume(w, p.now, &mut p.a.out), Step::Done(Err(ReceiveError::UnknownIndex(_)))));
    assert_eq!(p.a.iface.index_count(), 1, "only the newer initiation's index is left");
    assert!(p.a.iface.peer(p.a.peer).unwrap().handshake_pending());
    // The newer initiation completes normally.
    p.pump();
    assert_eq!(p.a.iface.stats(p.a.peer).unwrap().handshakes_completed, 1);
}

#[test]
fn a_forged_response_read_in_steps_does_not_spoil_the_real_one() {
    let mut p = Pair::default();
    let init = initiation(&mut p);
    let mut b_in = init.clone();
    p.b.iface.receive(p.a.addr, &mut b_in, p.now, false, &mut p.b.out).unwrap();
    let (_, resp) = p.b.out.sent.pop().unwrap();
    // Someone who knows A's public key (so mac1 is valid) sends a response whose encrypted
    // part was changed: it fails to decrypt.
    let tampered = tamper_response(&resp, &p.a.iface.public_key().clone());
    let mut w = match p.a.iface.receive_handshake(p.b.addr, &tampered, p.now, false, &mut p.a.out) {
        Step::Work(w) => w,
        Step::Done(r) => panic!("{r:?}"),
    };
    w.run();
    assert!(matches!(p.a.iface.resume(w, p.now, &mut p.a.out), Step::Done(Err(ReceiveError::Handshake(_)))));
    assert!(p.a.iface.peer(p.a.peer).unwrap().handshake_pending(), "the pending initiation was put back");
    let mut real = resp.clone();
    assert!(matches!(p.a.iface.receive(p.b.addr, &mut real, p.now, false, &mut p.a.out), Ok(Received::Response(_))));
}

/// The response with one byte of its encrypted part changed and mac1 recomputed for `to`.
fn tamper_response(resp: &[u8], to: &veil::noise::PublicKey) -> Vec<u8> {
    let mut m = resp.to_vec();
    m[50] ^= 1; // the encrypted empty payload (its tag) is bytes 44..60, mac1 60..76
    let key = veil::noise::crypto::hash(&[b"mac1----", to.as_bytes()]);
    let mac = veil::noise::crypto::mac(&key, &[&m[..60]]);
    m[60..76].copy_from_slice(&mac);
    m
}

#[test]
fn a_deferred_initiation_goes_out_only_when_its_work_is_given_back() {
    let mut p = Pair::default();
    p.a.iface.set_defer_work(true);
    assert_eq!(p.a.iface.send(p.a.peer, &packet(1, 10), p.now, &mut p.a.out).unwrap(), SendOutcome::Queued);
    assert!(p.a.out.sent.is_empty(), "nothing is sent before the work is done");
    assert!(p.a.iface.peer(p.a.peer).unwrap().handshake_pending());
    let mut work = p.a.iface.take_work();
    assert_eq!(work.len(), 1);
    assert!(p.a.iface.take_work().is_empty(), "taken once");
    for w in &mut work {
        w.run();
    }
    for w in work {
        p.a.iface.send_initiation(w, p.now, &mut p.a.out);
    }
    assert_eq!(p.a.out.sent.len(), 1);
    p.pump();
    assert_eq!(seq_of(&p.b.out.delivered[0].1), 1, "the handshake completed and the packet followed");
}

#[test]
fn a_deferred_initiation_replaced_or_orphaned_meanwhile_is_dropped_with_its_index() {
    let mut p = Pair::default();
    p.a.iface.set_defer_work(true);
    p.a.iface.send(p.a.peer, &packet(1, 10), p.now, &mut p.a.out).unwrap();
    let mut first = p.a.iface.take_work();
    // The retry timer fires before the first was written: a second initiation replaces it.
    p.now += Duration::from_secs(6);
    p.a.iface.tick(p.now, &mut p.a.out);
    let mut second = p.a.iface.take_work();
    assert_eq!((first.len(), second.len()), (1, 1));
    first[0].run();
    p.a.iface.send_initiation(first.pop().unwrap(), p.now, &mut p.a.out);
    assert!(p.a.out.sent.is_empty(), "the replaced initiation is not sent");
    assert_eq!(p.a.iface.index_count(), 1, "only the newer initiation's index is left");
    second[0].run();
    p.a.iface.send_initiation(second.pop().unwrap(), p.now, &mut p.a.out);
    assert_eq!(p.a.out.sent.len(), 1);
    // And one whose peer goes before it is sent leaves nothing behind.
    let mut q = Pair::default();
    q.a.iface.set_defer_work(true);
    q.a.iface.send(q.a.peer, &packet(1, 10), q.now, &mut q.a.out).unwrap();
    let mut work = q.a.iface.take_work();
    q.a.iface.remove_peer(q.a.peer).unwrap();
    work[0].run();
    q.a.iface.send_initiation(work.pop().unwrap(), q.now, &mut q.a.out);
    assert!(q.a.out.sent.is_empty());
    assert_eq!(q.a.iface.index_count(), 0);
}
