//! Tunnels over a bad network: the peers reach each other only through a user-space relay
//! (`netns/relay.rs`) that drops, duplicates, reorders and delays their datagrams. A TCP transfer
//! arrives intact under 5% loss, 2% duplication and 5% reordering, veil to veil and veil against
//! wireguard-go; no duplicated datagram is ever delivered twice to the TUN; handshakes complete
//! and rekeys keep happening under 30% loss with short timers. Every test also asserts that the
//! relay really did what it was asked (its counters), so a relay that quietly forwarded
//! everything would fail them.
mod netns;
use netns::relay::{Counts, Impairment, Relay, Side};
use netns::*;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Tunnel addresses of the two sides.
const A_ADDRS: [&str; 2] = ["10.9.0.1/24", "fd09::1/64"];
const B_ADDRS: [&str; 2] = ["10.9.0.2/24", "fd09::2/64"];
const A_PORT: u16 = 51820;
const B_PORT: u16 = 51821;
/// The relay's port on each of its two sides.
const RELAY_PORT: u16 = 40000;
const BULK_PORT: u16 = 5001;
/// A hang guard for one transfer; never a performance assertion.
const TRANSFER_LIMIT: Duration = Duration::from_secs(300);
/// How long the first ping may take to get through (it starts the handshake).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);
/// The relay's threads stop by themselves after this, whatever the test does.
const RELAY_LIFETIME: Duration = Duration::from_secs(900);

/// The issue's bad network: 5% loss, 2% duplication, 5% of datagrams held back 3 ms (later ones
/// overtake them), and 0.5 ms of delay for all.
const BAD: Impairment = Impairment {
    loss: 0.05,
    duplicate: 0.02,
    reorder: 0.05,
    delay: Duration::from_micros(500),
    reorder_delay: Duration::from_millis(3),
};

/// Three lab nodes in a line, a - relay - b, with the relay's namespace not forwarding: a and b
/// reach each other only through the relay. a is 10.8.1.1 and the relay 10.8.1.2 on one veth, b
/// is 10.8.2.1 and the relay 10.8.2.2 on the other; each peer's endpoint for the other is the
/// relay's address on its own side.
struct Lossy {
    relay: Relay,
    a: LabTunnel,
    b: LabTunnel,
    na: Netns,
    nb: Netns,
    _nr: Netns,
    _lab: Lab,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `imp_a` in a, `imp_b` in b (both started with `env`), the relay between them impairing
/// a -> b with `a_to_b` and b -> a with `b_to_a`, its RNG seeded with `seed`.
fn lossy(imp_a: Impl, imp_b: Impl, env: &str, a_to_b: Impairment, b_to_a: Impairment, seed: u64) -> Lossy {
    let (to_b, to_a) = (format!("10.8.1.2:{RELAY_PORT}"), format!("10.8.2.2:{RELAY_PORT}"));
    let mut topology = pair_topology(PairSpec {
        tag: "ls",
        imp: [imp_a, imp_b],
        tunnel: [&A_ADDRS, &B_ADDRS],
        ports: [A_PORT, B_PORT],
        env,
        endpoints: Some([&to_b, &to_a]),
        ..PairSpec::default()
    });
    topology.nodes.push(plain_node("r"));
    topology.links =
        vec![lab_link("a", "r", ["10.8.1.1/24", "10.8.1.2/24"]), lab_link("b", "r", ["10.8.2.1/24", "10.8.2.2/24"])];
    let lab = lab_up(&topology);
    let (na, nr, nb) = (Netns::of(&lab, "a"), Netns::of(&lab, "r"), Netns::of(&lab, "b"));
    nr.sh("sysctl -qw net.ipv4.ip_forward=0");
    let relay = Relay::start(
        &nr,
        Side { listen: addr(&to_b), peer: addr(&format!("10.8.1.1:{A_PORT}")) },
        Side { listen: addr(&to_a), peer: addr(&format!("10.8.2.1:{B_PORT}")) },
        a_to_b,
        b_to_a,
        seed,
        RELAY_LIFETIME,
    );
    let (a, b) = (LabTunnel::of(&lab, "a"), LabTunnel::of(&lab, "b"));
    Lossy { relay, a, b, na, nb, _nr: nr, _lab: lab }
}

impl Lossy {
    fn report(&self) -> String {
        format!("relay a -> b {:?}; b -> a {:?}", self.relay.a_to_b(), self.relay.b_to_a())
    }
}

/// Asserts that the relay dropped, duplicated and reordered datagrams in direction `what`.
fn assert_impaired(c: Counts, what: &str) {
    assert!(c.dropped > 0, "{what}: the relay dropped nothing: {c:?}");
    assert!(c.duplicated > 0, "{what}: the relay duplicated nothing: {c:?}");
    assert!(c.reordered > 0, "{what}: the relay reordered nothing: {c:?}");
}

/// A counter of `ifname` in `ns` from /sys/class/net/IF/statistics.
fn link_stat(ns: &Netns, ifname: &str, stat: &str) -> u64 {
    ns.sh(&format!("cat /sys/class/net/{ifname}/statistics/{stat}")).trim().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Bulk TCP, veil to veil
// ---------------------------------------------------------------------------------------------

const VEIL_BULK_BYTES: usize = 64 << 20;

#[test]
fn bulk_tcp_over_loss_duplication_and_reordering_arrives_intact() {
    let test = "bulk_tcp_over_loss_duplication_and_reordering_arrives_intact";
    if !require_root(test) {
        return;
    }
    let p = lossy(Impl::Veil, Impl::Veil, "", BAD, BAD, 1);
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel never came up ({})", p.report());
    let started = Instant::now();
    let forward = payload_file(VEIL_BULK_BYTES, 100);
    tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &forward, TRANSFER_LIMIT, &format!("{test}: a -> b"));
    drop(forward);
    let backward = payload_file(VEIL_BULK_BYTES, 101);
    tcp_bulk(&p.nb, &p.na, "10.9.0.1", BULK_PORT, &backward, TRANSFER_LIMIT, &format!("{test}: b -> a"));
    eprintln!("{test}: 2 x {} MiB in {:?}; {}", VEIL_BULK_BYTES >> 20, started.elapsed(), p.report());
    assert_impaired(p.relay.a_to_b(), &format!("{test}: a -> b"));
    assert_impaired(p.relay.b_to_a(), &format!("{test}: b -> a"));
}

/// Rekeys by time (500 ms) and by messages (5,000) with a 100 ms REKEY_TIMEOUT (also the least
/// spacing of two initiations), so handshakes, whose messages the relay also drops, duplicates
/// and reorders, keep happening during the transfer (64 MiB is over 45,000 data messages).
const FAST_REKEYS: &str = "VEIL_REKEY_AFTER_TIME_MS=500 VEIL_REKEY_AFTER_MESSAGES=5000 VEIL_REKEY_TIMEOUT_MS=100";

/// The fewest rekeys the transfer must see (7 or 8 in the runs so far).
const MIN_TRANSFER_REKEYS: usize = 3;

#[test]
fn bulk_tcp_across_rekeys_over_a_bad_network_arrives_intact() {
    let test = "bulk_tcp_across_rekeys_over_a_bad_network_arrives_intact";
    if !require_root(test) {
        return;
    }
    let p = lossy(Impl::Veil, Impl::Veil, FAST_REKEYS, BAD, BAD, 5);
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel never came up ({})", p.report());
    let payload = payload_file(VEIL_BULK_BYTES, 500);
    let started = Instant::now();
    let mut times = HandshakeTimes::new(&p);
    std::thread::scope(|s| {
        let transfer = s.spawn(|| tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &payload, TRANSFER_LIMIT, test));
        while !transfer.is_finished() {
            times.sample(&p);
            std::thread::sleep(Duration::from_millis(50));
        }
        transfer.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
    let (new_a, new_b) = times.new_handshakes();
    let report = format!("new handshakes a {new_a}, b {new_b}; {}", p.report());
    eprintln!("{test}: {} MiB in {:?}; {report}", VEIL_BULK_BYTES >> 20, started.elapsed());
    assert!(new_a.max(new_b) >= MIN_TRANSFER_REKEYS, "{test}: too few rekeys during the transfer: {report}");
    assert_impaired(p.relay.a_to_b(), &format!("{test}: a -> b"));
    assert_impaired(p.relay.b_to_a(), &format!("{test}: b -> a"));
}

/// The distinct last-handshake times (with nanoseconds, from the UAPI) each side has reported:
/// each completed handshake gives a new one. Handshakes closer together than the sampling
/// period count once, so counts are lower bounds.
struct HandshakeTimes {
    a: BTreeSet<(u64, u32)>,
    b: BTreeSet<(u64, u32)>,
}

impl HandshakeTimes {
    fn new(p: &Lossy) -> HandshakeTimes {
        HandshakeTimes {
            a: BTreeSet::from([uapi_last_handshake(&p.a.ifname)]),
            b: BTreeSet::from([uapi_last_handshake(&p.b.ifname)]),
        }
    }

    fn sample(&mut self, p: &Lossy) {
        self.a.insert(uapi_last_handshake(&p.a.ifname));
        self.b.insert(uapi_last_handshake(&p.b.ifname));
    }

    /// Handshakes each side completed since `new` (the first value is not a new one).
    fn new_handshakes(&self) -> (usize, usize) {
        (self.a.len() - 1, self.b.len() - 1)
    }

    /// The fewer of the two sides' new handshakes.
    fn fewest(&self) -> usize {
        let (a, b) = self.new_handshakes();
        a.min(b)
    }
}

// ---------------------------------------------------------------------------------------------
// 2. No duplicate delivered to the TUN
// ---------------------------------------------------------------------------------------------

/// Datagrams sent through the tunnel, their size and pacing (a pause after each burst).
const DUP_COUNT: usize = 20_000;
const DUP_SIZE: usize = 200;
const DUP_BURST: usize = 20;
const DUP_PAUSE_SECS: f64 = 0.002;
const DUP_PORT: u16 = 6000;

/// Much duplication and reordering but no loss, so every copy the relay made reaches veil.
const DUPLICATING: Impairment = Impairment {
    loss: 0.0,
    duplicate: 0.05,
    reorder: 0.05,
    delay: Duration::from_micros(500),
    reorder_delay: Duration::from_millis(3),
};

/// Counts sequence-numbered datagrams (4 bytes, big-endian) until `expected` distinct ones
/// arrived, nothing came for `idle` seconds after the first, or `limit` seconds passed; then
/// writes "distinct total" and on a second line every number seen more than once.
const DUP_RECEIVER: &str = r#"
import os, socket, sys, time
addr, port, expected, idle, limit, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): no loss at this socket
s.bind((addr, port))
s.settimeout(0.1)
seen, total, start, last = {}, 0, time.monotonic(), None
while len(seen) < expected:
    now = time.monotonic()
    if now - start > limit or (last is not None and now - last > idle):
        break
    try:
        data = s.recv(65535)
    except socket.timeout:
        continue
    last = time.monotonic()
    n = int.from_bytes(data[:4], "big")
    seen[n] = seen.get(n, 0) + 1
    total += 1
# Duplicates that were still on their way when the last distinct one came.
s.settimeout(1.0)
try:
    while True:
        n = int.from_bytes(s.recv(65535)[:4], "big")
        seen[n] = seen.get(n, 0) + 1
        total += 1
except socket.timeout:
    pass
with open(out + ".tmp", "w") as f:
    f.write("%d %d\n" % (len(seen), total))
    f.write(" ".join(str(n) for n, c in sorted(seen.items()) if c > 1) + "\n")
os.rename(out + ".tmp", out)
"#;

/// Sends `count` datagrams of `size` bytes numbered 0.. to `dst`:`port`, pausing `pause`
/// seconds after every `burst`.
const DUP_SENDER: &str = r#"
import socket, sys, time
dst, port, count, size, burst, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
pad = bytes(size - 4)
for i in range(count):
    try:
        s.send(i.to_bytes(4, "big") + pad)
    except OSError:
        pass  # refused locally: a lost one, which the receiver's count shows
    if i % burst == burst - 1:
        time.sleep(pause)
"#;

#[test]
fn duplicated_datagrams_are_delivered_to_the_tun_at_most_once() {
    let test = "duplicated_datagrams_are_delivered_to_the_tun_at_most_once";
    if !require_root(test) {
        return;
    }
    let p = lossy(Impl::Veil, Impl::Veil, "", DUPLICATING, DUPLICATING, 2);
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel never came up ({})", p.report());

    let (receiver_py, sender_py) = (TempFile::new(DUP_RECEIVER), TempFile::new(DUP_SENDER));
    let out = TempFile::new("");
    let _ = std::fs::remove_file(out.path());
    let mut receiver = Proc::spawn(
        &p.nb,
        &format!("python3 {} 10.9.0.2 {DUP_PORT} {DUP_COUNT} 3 120 {}", receiver_py.path(), out.path()),
        "dup receiver",
    );
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&p.nb.sh_out(&format!("ss -Hlun sport = :{DUP_PORT}")).stdout).contains(':')
    });
    assert!(listening, "{test}: the receiver did not bind");

    let (tun_before, relay_before) = (link_stat(&p.nb, &p.b.ifname, "rx_packets"), p.relay.a_to_b());
    let send = p.na.sh_out(&format!(
        "timeout 120 python3 {} 10.9.0.2 {DUP_PORT} {DUP_COUNT} {DUP_SIZE} {DUP_BURST} {DUP_PAUSE_SECS}",
        sender_py.path()
    ));
    assert!(send.status.success(), "{test}: the sender failed: {}", String::from_utf8_lossy(&send.stderr));
    let received = wait_until(Duration::from_secs(130), || !receiver.running());
    assert!(received, "{test}: the receiver did not finish");
    let delivered = link_stat(&p.nb, &p.b.ifname, "rx_packets") - tun_before;
    let relay_after = p.relay.a_to_b();
    let text = std::fs::read_to_string(out.path()).unwrap_or_else(|e| panic!("{test}: no receiver output: {e}"));
    let _ = std::fs::remove_file(out.path());

    let mut lines = text.lines();
    let counts: Vec<u64> = lines.next().unwrap_or_default().split_whitespace().map(|n| n.parse().unwrap()).collect();
    let (distinct, total) = (counts[0], counts[1]);
    let twice: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let copies = relay_after.duplicated - relay_before.duplicated;
    let report = format!(
        "{distinct} distinct of {DUP_COUNT} sent, {total} received; b's TUN took {delivered} packets; the relay \
         forwarded {copies} extra copies a -> b meanwhile; {}",
        p.report()
    );
    eprintln!("{test}: {report}");
    assert!(copies > 0, "{test}: the relay duplicated nothing: {report}");
    assert!(
        relay_after.forwarded - relay_before.forwarded > relay_after.received - relay_before.received,
        "{test}: the copies did not all go on to b's veil: {report}"
    );
    assert!(
        twice.is_empty(),
        "{test}: {} datagrams delivered more than once, the first {:?} ({report})",
        twice.len(),
        &twice[..twice.len().min(20)]
    );
    assert_eq!(total, distinct, "{test}: {report}");
    assert!(delivered <= DUP_COUNT as u64, "{test}: b's veil wrote more packets to its TUN than were sent: {report}");
    // The relay lost nothing; losses elsewhere (a full queue) are tolerated, but most must arrive
    // for the check above to mean anything.
    assert!(distinct >= DUP_COUNT as u64 / 2, "{test}: too few datagrams arrived: {report}");
}

// ---------------------------------------------------------------------------------------------
// 3. Handshakes and rekeys under 30% loss
// ---------------------------------------------------------------------------------------------

/// 30% of datagrams lost each way (handshake messages included), nothing else.
const LOSSY_30: Impairment = Impairment { loss: 0.3, ..Impairment::NONE };
/// A rekey after 1 s of a session's life and a 300 ms REKEY_TIMEOUT (the retry interval of a
/// handshake whose messages were lost).
const SHORT_TIMERS: &str = "VEIL_REKEY_AFTER_TIME_MS=1000 VEIL_REKEY_TIMEOUT_MS=300";
/// New handshakes each side must complete while pings flow, and the most time it may take
/// (a hang guard: with these timers it should take about 10 s).
const MIN_REKEYS: usize = 8;
const REKEY_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn handshakes_and_rekeys_complete_under_30_percent_loss() {
    let test = "handshakes_and_rekeys_complete_under_30_percent_loss";
    if !require_root(test) {
        return;
    }
    let p = lossy(Impl::Veil, Impl::Veil, SHORT_TIMERS, LOSSY_30, LOSSY_30, 3);
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: no first handshake ({})", p.report());

    // Pings every 50 ms (bounded by -w) while both sides' handshake times are sampled.
    let mut ping = Proc::spawn(&p.na, "ping -i 0.05 -W 1 -w 150 -q 10.9.0.2", "ping");
    let mut times = HandshakeTimes::new(&p);
    let end = Instant::now() + REKEY_LIMIT;
    // Until both sides have rekeyed enough and the loss has hit a handshake message each way
    // (with about one handshake a second, a few seconds more at most; 0.7^8 of runs would
    // otherwise see no handshake message lost in one direction within eight rekeys).
    let lost_both_ways = |p: &Lossy| p.relay.a_to_b().dropped_handshakes > 0 && p.relay.b_to_a().dropped_handshakes > 0;
    while (times.fewest() < MIN_REKEYS || !lost_both_ways(&p)) && Instant::now() < end && ping.running() {
        times.sample(&p);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (new_a, new_b) = times.new_handshakes();
    let (before, _) = transfer(&p.nb, &p.b.ifname);
    ping.terminate(Duration::from_secs(3));
    let report = format!("new handshakes a {new_a}, b {new_b}; {}", p.report());
    eprintln!("{test}: {report}");
    assert!(new_a >= MIN_REKEYS && new_b >= MIN_REKEYS, "{test}: too few rekeys: {report}");
    // The loss really hit the handshakes both ways.
    assert!(p.relay.a_to_b().dropped_handshakes > 0, "{test}: no handshake message a -> b was lost: {report}");
    assert!(p.relay.b_to_a().dropped_handshakes > 0, "{test}: no handshake message b -> a was lost: {report}");
    // And the last session still carries traffic.
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel stopped after the rekeys: {report}");
    assert!(transfer(&p.nb, &p.b.ifname).0 > before, "{test}: b authenticated nothing after the rekeys: {report}");
}

/// `wg show IF transfer`: (received, sent) bytes for the single peer.
fn transfer(ns: &Netns, ifname: &str) -> (u64, u64) {
    let out = ns.sh(&format!("wg show {ifname} transfer"));
    let v: Vec<u64> = out.split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    assert_eq!(v.len(), 2, "{ifname}: `wg show transfer` for one peer: {out:?}");
    (v[0], v[1])
}

// ---------------------------------------------------------------------------------------------
// 4. veil against wireguard-go
// ---------------------------------------------------------------------------------------------

const INTEROP_BULK_BYTES: usize = 32 << 20;

#[test]
fn bulk_tcp_with_wireguard_go_over_a_bad_network_both_directions_intact() {
    let test = "bulk_tcp_with_wireguard_go_over_a_bad_network_both_directions_intact";
    if !require_root(test) || !require_impl(test, Impl::WireguardGo) {
        return;
    }
    let p = lossy(Impl::Veil, Impl::WireguardGo, "", BAD, BAD, 4);
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel never came up ({})", p.report());
    let started = Instant::now();
    let to_peer = payload_file(INTEROP_BULK_BYTES, 400);
    tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &to_peer, TRANSFER_LIMIT, &format!("{test}: veil sends"));
    drop(to_peer);
    let to_veil = payload_file(INTEROP_BULK_BYTES, 401);
    tcp_bulk(&p.nb, &p.na, "10.9.0.1", BULK_PORT, &to_veil, TRANSFER_LIMIT, &format!("{test}: veil receives"));
    eprintln!("{test}: 2 x {} MiB in {:?}; {}", INTEROP_BULK_BYTES >> 20, started.elapsed(), p.report());
    assert_impaired(p.relay.a_to_b(), &format!("{test}: veil -> wireguard-go"));
    assert_impaired(p.relay.b_to_a(), &format!("{test}: wireguard-go -> veil"));
}
