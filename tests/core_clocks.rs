//! Clocks that jump: the wall clock corrected while the daemon runs, and a machine that slept
//! (the core's `now` jumps forward without any timer having fired in between).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use common::{Capture, Pair, packet, secret};
use veil::noise::{Config, Interface, ReceiveError, Received, SendOutcome, WallClock};

/// B saw A's initiations at the right time. A restarts with a clock years behind (a router
/// before NTP): B refuses its initiations as replays, as it must. Once NTP corrects A's clock,
/// A's next initiation carries the real time and B accepts it, without restarting A.
#[test]
fn a_wall_clock_corrected_while_running_is_used_at_once() {
    let mut p = Pair::default();
    p.establish();
    let t = p.now;
    // A again, as after a reboot: same key, fresh state, a clock at 1970 + 1000 s.
    let secs = Arc::new(AtomicU64::new(1000));
    let s = secs.clone();
    let clock = WallClock::from_fn(move || UNIX_EPOCH + Duration::from_secs(s.load(Ordering::SeqCst)));
    let mut a = Interface::new(secret(1), Config::default(), clock, [33; 32]);
    let b_key = secret(2).public_key();
    let pb = a.add_peer(b_key).unwrap();
    a.set_endpoint(pb, Some(p.b.addr)).unwrap();
    let mut out = Capture::default();
    assert_eq!(a.send(pb, &packet(1, 10), t, &mut out).unwrap(), SendOutcome::Queued);
    let (_, mut init) = out.sent.pop().expect("an initiation");
    let r = p.b.iface.receive(p.a.addr, &mut init, t, false, &mut p.b.out);
    assert_eq!(r, Err(ReceiveError::StaleTimestamp), "an initiation from 1970 is older than what B saw");
    // NTP sets the clock; the retry after REKEY_TIMEOUT carries the real time.
    secs.store(1_700_000_100, Ordering::SeqCst);
    let later = t + Duration::from_secs(6);
    a.tick(later, &mut out);
    let (_, mut init) = out.sent.pop().expect("a retried initiation");
    let r = p.b.iface.receive(p.a.addr, &mut init, later, false, &mut p.b.out);
    assert!(matches!(r, Ok(Received::Initiation(_))), "{r:?}");
}

/// A laptop sleeps for an hour: its clock for the core (the daemon uses CLOCK_BOOTTIME, which
/// counts the sleep) jumps past REJECT_AFTER_TIME with no timer run in between. The old session
/// must not seal another packet: the packet waits for a new handshake.
#[test]
fn after_a_sleep_longer_than_reject_after_time_the_old_session_is_not_used() {
    let mut p = Pair::default();
    p.establish();
    assert_eq!(p.a_sends(&packet(1, 10)), SendOutcome::Sent);
    p.a.wire_log.clear();
    let woke = p.now + Duration::from_secs(3600);
    let r = p.a.iface.send(p.a.peer, &packet(2, 10), woke, &mut p.a.out).unwrap();
    assert_eq!(r, SendOutcome::Queued, "a session an hour old sealed a packet");
    assert!(p.a.out.sent.iter().all(|(_, d)| d[0] == 1), "only an initiation went out");
}
