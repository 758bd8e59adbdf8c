//! The data path through real tunnels between network namespaces, checked by behaviour only (no
//! engine internals): bulk TCP transfers whose bytes arrive intact (SHA-256 compared) for every
//! inner/outer address family, veil to veil and against wireguard-go, boringtun and gotatun in
//! both directions; per-peer packet order with many peers sending at once; a device with 10,000
//! peers; inner MTUs from 1280 to 9000 over 1500 and 9100 byte underlays (fragmented outer
//! datagrams included); and a UDP flood that must leave the tunnel working.
mod netns;
use netns::*;

use std::collections::BTreeMap;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use veil::lab::topology::{LinkSpec, NodeSpec, Topology, TunnelSpec};

/// Tunnel addresses of the two sides of a pair.
const A_ADDRS: [&str; 2] = ["10.9.0.1/24", "fd09::1/64"];
const B_ADDRS: [&str; 2] = ["10.9.0.2/24", "fd09::2/64"];
const A_PORT: u16 = 51820;
const B_PORT: u16 = 51821;
/// The TCP port of the bulk transfers (inside each test's own namespaces).
const BULK_PORT: u16 = 5001;
/// Bytes per bulk transfer veil to veil, and against the other implementations.
const VEIL_BULK_BYTES: usize = 64 << 20;
const INTEROP_BULK_BYTES: usize = 32 << 20;
/// A hang guard for one step (handshake, one transfer); never a performance assertion.
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// How long the first ping may take to get through (it starts the handshake).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(20);

/// A counter of `ifname` in `ns` from /sys/class/net/IF/statistics (for a TUN, `tx_packets` are
/// the packets the kernel handed to the daemon, `rx_packets` those the daemon wrote).
fn link_stat(ns: &Netns, ifname: &str, stat: &str) -> u64 {
    ns.sh(&format!("cat /sys/class/net/{ifname}/statistics/{stat}")).trim().parse().unwrap()
}

/// The UDP receive-buffer overflows counted in `ns` (all sockets): datagrams dropped because a
/// socket's reader was too slow.
fn udp_rcvbuf_errors(ns: &Netns) -> u64 {
    let snmp = ns.sh("cat /proc/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap_or_default(), udp.next().unwrap_or_default());
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors").expect("RcvbufErrors in /proc/net/snmp");
    values.split_whitespace().nth(at).and_then(|v| v.parse().ok()).expect("a RcvbufErrors value")
}

/// Two lab nodes joined by veth, an endpoint in each, each knowing the other's underlay
/// endpoint, so either side can start the handshake (see [`lab_pair`]).
type Pair = LabPair;

/// `imp_a` in one namespace and `imp_b` in another, joined by veth with underlay addresses
/// `ua`/`ub` (CIDR) and link MTU `underlay_mtu`; tunnel addresses 10.9.0.1/2 and fd09::1/2 with
/// inner MTU `inner_mtu`.
fn pair(imp_a: Impl, imp_b: Impl, ua: &str, ub: &str, inner_mtu: u32, underlay_mtu: u32) -> Pair {
    // Debug logs (veil's LOG_LEVEL, the others' WG_LOG_LEVEL), shown only when a check fails.
    pair_with_env(imp_a, imp_b, ua, ub, inner_mtu, underlay_mtu, "LOG_LEVEL=debug WG_LOG_LEVEL=debug NO_COLOR=1")
}

/// [`pair`], both daemons started with the extra environment `env`.
fn pair_with_env(imp_a: Impl, imp_b: Impl, ua: &str, ub: &str, inner_mtu: u32, underlay_mtu: u32, env: &str) -> Pair {
    lab_pair(PairSpec {
        tag: "dp",
        imp: [imp_a, imp_b],
        underlay: [ua, ub],
        underlay_mtu: (underlay_mtu != 1500).then_some(underlay_mtu),
        tunnel: [&A_ADDRS, &B_ADDRS],
        ports: [A_PORT, B_PORT],
        inner_mtu,
        env,
        ..PairSpec::default()
    })
}

/// Waits for the handshake (a's first answered ping), then checks one ping each way per family.
fn tunnel_up(p: &Pair, what: &str) {
    assert!(
        p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT),
        "{what}: the tunnel never came up (a -> b ping){}",
        p.report()
    );
    assert!(p.na.ping("10.9.0.2", 2), "{what}: IPv4 ping a -> b{}", p.report());
    // The first b -> a ping was lost once in about five runs against gotatun (2026-11-30, not
    // yet understood; see the stop-13 note): retried for a few seconds, it must still pass. A
    // failure shows both sides' state and logs.
    assert!(p.nb.ping_until("10.9.0.1", Duration::from_secs(5)), "{what}: IPv4 ping b -> a{}", p.report());
    assert!(p.na.ping("fd09::2", 2), "{what}: IPv6 ping a -> b{}", p.report());
    assert!(p.nb.ping("fd09::1", 2), "{what}: IPv6 ping b -> a{}", p.report());
}

/// A bulk transfer a -> b and then b -> a over the inner family of `inner_v6`, each a fresh
/// payload of `bytes` (seeded with `seed` and `seed + 1`), checked byte for byte.
fn bulk_both_ways(p: &Pair, inner_v6: bool, bytes: usize, seed: u64, what: &str) {
    let (addr_a, addr_b) = if inner_v6 { ("fd09::1", "fd09::2") } else { ("10.9.0.1", "10.9.0.2") };
    let forward = payload_file(bytes, seed);
    tcp_bulk(&p.na, &p.nb, addr_b, BULK_PORT, &forward, STEP_LIMIT, &format!("{what}: a -> b"));
    drop(forward);
    let backward = payload_file(bytes, seed + 1);
    tcp_bulk(&p.nb, &p.na, addr_a, BULK_PORT, &backward, STEP_LIMIT, &format!("{what}: b -> a"));
}

// ---------------------------------------------------------------------------------------------
// 1. Bulk TCP veil to veil, every inner/outer family combination, both directions
// ---------------------------------------------------------------------------------------------

/// veil to veil over underlay `ua`/`ub` (MTU 1420 inside, 1500 outside): 64 MiB each way over
/// the inner family `inner_v6`, bytes intact.
fn veil_bulk(test: &str, ua: &str, ub: &str, inner_v6: bool, seed: u64) {
    if !require_root(test) {
        return;
    }
    let p = pair(Impl::Veil, Impl::Veil, ua, ub, 1420, 1500);
    tunnel_up(&p, test);
    bulk_both_ways(&p, inner_v6, VEIL_BULK_BYTES, seed, test);
}

/// The same with two crypto helper threads per daemon (on this 2-core machine the default is
/// none): batches are sealed and opened on several threads and must still arrive intact.
#[test]
fn bulk_tcp_with_crypto_helpers_both_directions_intact() {
    let test = "bulk_tcp_with_crypto_helpers_both_directions_intact";
    if !require_root(test) {
        return;
    }
    let p = pair_with_env(Impl::Veil, Impl::Veil, "10.8.4.1/24", "10.8.4.2/24", 1420, 1500, "VEIL_CRYPTO_HELPERS=2");
    tunnel_up(&p, test);
    bulk_both_ways(&p, false, VEIL_BULK_BYTES, 50, test);
}

#[test]
fn bulk_tcp_inner_ipv4_over_outer_ipv4_both_directions_intact() {
    veil_bulk("bulk_tcp_inner_ipv4_over_outer_ipv4_both_directions_intact", "10.8.0.1/24", "10.8.0.2/24", false, 10);
}

#[test]
fn bulk_tcp_inner_ipv6_over_outer_ipv6_both_directions_intact() {
    veil_bulk("bulk_tcp_inner_ipv6_over_outer_ipv6_both_directions_intact", "fd08::1/64", "fd08::2/64", true, 20);
}

#[test]
fn bulk_tcp_inner_ipv6_over_outer_ipv4_both_directions_intact() {
    veil_bulk("bulk_tcp_inner_ipv6_over_outer_ipv4_both_directions_intact", "10.8.0.1/24", "10.8.0.2/24", true, 30);
}

#[test]
fn bulk_tcp_inner_ipv4_over_outer_ipv6_both_directions_intact() {
    veil_bulk("bulk_tcp_inner_ipv4_over_outer_ipv6_both_directions_intact", "fd08::1/64", "fd08::2/64", false, 40);
}

// ---------------------------------------------------------------------------------------------
// 2. Bulk TCP against the other implementations, veil sending and veil receiving
// ---------------------------------------------------------------------------------------------

/// veil (a) and `imp` (b) over an IPv4 underlay: 32 MiB veil -> `imp` over inner IPv4, then
/// 32 MiB `imp` -> veil over inner IPv6, bytes intact both times.
fn interop_bulk(test: &str, imp: Impl, seed: u64) {
    if !require_root(test) || !require_impl(test, imp) {
        return;
    }
    let p = pair(Impl::Veil, imp, "10.8.0.1/24", "10.8.0.2/24", 1420, 1500);
    tunnel_up(&p, test);
    let to_peer = payload_file(INTEROP_BULK_BYTES, seed);
    tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &to_peer, STEP_LIMIT, &format!("{test}: veil sends (IPv4)"));
    drop(to_peer);
    let to_veil = payload_file(INTEROP_BULK_BYTES, seed + 1);
    tcp_bulk(&p.nb, &p.na, "fd09::1", BULK_PORT, &to_veil, STEP_LIMIT, &format!("{test}: veil receives (IPv6)"));
}

#[test]
fn bulk_tcp_with_wireguard_go_both_directions_intact() {
    interop_bulk("bulk_tcp_with_wireguard_go_both_directions_intact", Impl::WireguardGo, 50);
}

#[test]
fn bulk_tcp_with_boringtun_both_directions_intact() {
    interop_bulk("bulk_tcp_with_boringtun_both_directions_intact", Impl::Boringtun, 60);
}

#[test]
fn bulk_tcp_with_gotatun_both_directions_intact() {
    interop_bulk("bulk_tcp_with_gotatun_both_directions_intact", Impl::Gotatun, 70);
}

// ---------------------------------------------------------------------------------------------
// 3. Per-peer order with many peers sending at once
// ---------------------------------------------------------------------------------------------

/// Spokes (each a veil in its own namespace, each a peer of the hub's veil).
const ORDER_SPOKES: usize = 8;
/// Datagrams each spoke sends, their size, and the pacing: a pause after each burst.
const ORDER_COUNT: usize = 4000;
const ORDER_SIZE: usize = 1000;
const ORDER_BURST: usize = 32;
const ORDER_PAUSE_SECS: f64 = 0.01;
/// The least share of each spoke's datagrams that must arrive (loss is tolerated, reported):
/// enough for the order check to mean something, low enough that a hub slowed by the other
/// tests running beside it (8 spokes into one socket on 2 cores) does not fail it.
const ORDER_MIN_DELIVERED: f64 = 0.5;
const ORDER_PORT: u16 = 6000;

/// Receives sequence-numbered datagrams until every sender's count arrived, nothing came for
/// `idle` seconds after the first, or `limit` seconds passed; then writes one line per source
/// address: the address and the sequence numbers in arrival order.
const ORDER_RECEIVER: &str = r#"
import os, socket, sys, time
addr, port, expected, idle, limit, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE (root): past rmem_max
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
s.bind((addr, port))
s.settimeout(0.1)
seqs, total, start, last = {}, 0, time.monotonic(), None
while total < expected:
    now = time.monotonic()
    if now - start > limit or (last is not None and now - last > idle):
        break
    try:
        data, src = s.recvfrom(65535)
    except socket.timeout:
        continue
    last = time.monotonic()
    seqs.setdefault(src[0], []).append(int.from_bytes(data[:4], "big"))
    total += 1
with open(out + ".tmp", "w") as f:
    for src, l in sorted(seqs.items()):
        f.write(src + " " + " ".join(map(str, l)) + "\n")
os.rename(out + ".tmp", out)
"#;

/// Sends `count` datagrams of `size` bytes numbered 0.. (4 bytes, big-endian) to `dst`:`port`,
/// starting at Unix time `start_at`, pausing `pause` seconds after every `burst`.
const ORDER_SENDER: &str = r#"
import socket, sys, time
dst, port, count, size, burst, pause, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
pad = bytes(size - 4)
while time.time() < start_at:
    time.sleep(0.002)
for i in range(count):
    try:
        s.send(i.to_bytes(4, "big") + pad)
    except OSError:
        pass  # a datagram refused locally is a lost one; the receiver's count shows it
    if i % burst == burst - 1:
        time.sleep(pause)
"#;

#[test]
fn many_peers_sending_at_once_each_peers_packets_arrive_in_order() {
    let test = "many_peers_sending_at_once_each_peers_packets_arrive_in_order";
    if !require_root(test) {
        return;
    }
    // A hub and ORDER_SPOKES spokes, a link and a tunnel from each spoke to the hub. Crypto
    // helper threads on (the default on 2 cores is none), so the hub opens the spokes' batches
    // on several threads and must still deliver each spoke's packets in order.
    let net = |s: String| s.parse().unwrap();
    let node = |name: String, addr: String, port| NodeSpec {
        name,
        ifname: Some(unique("wg")),
        address: vec![net(addr)],
        listen_port: Some(port),
        env: [("VEIL_CRYPTO_HELPERS".to_string(), "2".to_string())].into(),
        ..NodeSpec::default()
    };
    let mut topology = Topology { name: Some(unique("ord")), ..Topology::default() };
    topology.nodes.push(node("hub".into(), "10.9.0.1/24".into(), A_PORT));
    for i in 0..ORDER_SPOKES {
        let spoke = format!("spk{i}");
        topology.nodes.push(node(spoke.clone(), format!("10.9.0.{}/24", 10 + i), B_PORT));
        topology.links.push(LinkSpec {
            nodes: ["hub".into(), spoke.clone()],
            addresses: Some([net(format!("10.70.{i}.1/24")), net(format!("10.70.{i}.2/24"))]),
            mtu: None,
        });
        topology.tunnels.push(TunnelSpec { nodes: ["hub".into(), spoke], ..TunnelSpec::default() });
    }
    let lab = Lab::up(&topology, &veil::lab::Options::new(veil_bin())).expect("lab up");
    let (hub_ns, hub) = (Netns::of(&lab, "hub"), LabTunnel::of(&lab, "hub"));
    let spokes: Vec<(Netns, String)> =
        (0..ORDER_SPOKES).map(|i| (Netns::of(&lab, &format!("spk{i}")), format!("10.9.0.{}", 10 + i))).collect();
    for (ns, addr) in &spokes {
        assert!(ns.ping_until("10.9.0.1", HANDSHAKE_LIMIT), "{test}: spoke {addr} never reached the hub");
    }

    let (receiver_py, sender_py) = (TempFile::new(ORDER_RECEIVER), TempFile::new(ORDER_SENDER));
    let out = TempFile::new("");
    let _ = std::fs::remove_file(out.path());
    let expected = ORDER_SPOKES * ORDER_COUNT;
    let mut receiver = Proc::spawn(
        &hub_ns,
        &format!("python3 {} 10.9.0.1 {ORDER_PORT} {expected} 3 90 {}", receiver_py.path(), out.path()),
        "order receiver",
    );
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&hub_ns.sh_out(&format!("ss -Hlun sport = :{ORDER_PORT}")).stdout).contains(':')
    });
    assert!(listening, "{test}: the receiver did not bind");

    let (tun_before, overflows_before) = (link_stat(&hub_ns, &hub.ifname, "rx_packets"), udp_rcvbuf_errors(&hub_ns));
    // Everyone starts at the same wall-clock moment (the namespaces share the clock).
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 2.0;
    let mut senders: Vec<Proc> = spokes
        .iter()
        .map(|(ns, addr)| {
            Proc::spawn(
                ns,
                &format!(
                    "timeout 60 python3 {} 10.9.0.1 {ORDER_PORT} {ORDER_COUNT} {ORDER_SIZE} {ORDER_BURST} \
                     {ORDER_PAUSE_SECS} {start_at}",
                    sender_py.path()
                ),
                &format!("order sender {addr}"),
            )
        })
        .collect();
    let sent = wait_until(Duration::from_secs(70), || senders.iter_mut().all(|s| !s.running()));
    assert!(sent, "{test}: the senders did not finish within 70 s");
    for s in &mut senders {
        let status = s.child.wait().unwrap();
        assert!(status.success(), "{test}: {} failed: {status:?}", s.what);
    }
    let received = wait_until(Duration::from_secs(100), || !receiver.running());
    assert!(received, "{test}: the receiver did not finish");
    // Where any loss happened: packets the hub's veil wrote to its TUN, and datagrams the hub's
    // sockets (veil's outer one, the receiver's) dropped for a slow reader.
    let delivered = link_stat(&hub_ns, &hub.ifname, "rx_packets") - tun_before;
    let overflows = udp_rcvbuf_errors(&hub_ns) - overflows_before;
    let text = std::fs::read_to_string(out.path()).unwrap_or_else(|e| panic!("{test}: no receiver output: {e}"));
    let _ = std::fs::remove_file(out.path());

    let per_source: BTreeMap<String, Vec<u64>> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let src = w.next()?.to_string();
            Some((src, w.map(|n| n.parse().unwrap()).collect()))
        })
        .collect();
    let mut report = Vec::new();
    for (_, addr) in &spokes {
        let seqs = per_source.get(addr).map(Vec::as_slice).unwrap_or_default();
        report.push(format!("{addr}: {} of {ORDER_COUNT}", seqs.len()));
    }
    let report = format!(
        "received per spoke: {}; the hub's veil wrote {delivered} packets to its TUN (of {expected} sent); \
         UDP receive-buffer overflows in the hub's namespace: {overflows}",
        report.join(", ")
    );
    eprintln!("{test}: {report}");
    for src in per_source.keys() {
        assert!(spokes.iter().any(|(_, a)| a == src), "{test}: datagrams from an unknown source {src}");
    }
    for (_, addr) in &spokes {
        let seqs = per_source.get(addr).map(Vec::as_slice).unwrap_or_default();
        if let Some(i) = seqs.windows(2).position(|w| w[1] <= w[0]) {
            panic!(
                "{test}: {addr}'s datagrams arrived out of order (or duplicated): #{} was {} after {} ({report})",
                i + 1,
                seqs[i + 1],
                seqs[i],
            );
        }
        assert!(seqs.iter().all(|&s| s < ORDER_COUNT as u64), "{test}: {addr}: a sequence number never sent");
        let min = (ORDER_COUNT as f64 * ORDER_MIN_DELIVERED) as usize;
        assert!(
            seqs.len() >= min,
            "{test}: only {} of {ORDER_COUNT} datagrams from {addr} arrived ({report})",
            seqs.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Ten thousand peers
// ---------------------------------------------------------------------------------------------

const MANY_PEERS: usize = 10_000;
/// A hang guard for `wg setconf` of all of them.
const SETCONF_LIMIT_SECS: u32 = 60;

/// Prints a `wg setconf` file: the interface (private key, listen port) and `count` peers with
/// random keys, each with its own /32 in 10.200.0.0/16 or 10.201.0.0/16 and its own endpoint in
/// 10.254.0.0/16 (black-holed), with the real peer (key, allowed IPs, endpoint) in the middle.
const MANY_PEERS_CONFIG: &str = r#"
import base64, os, sys
private, port, real_key, real_allowed, real_endpoint, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
out = ["[Interface]", "PrivateKey = " + private, "ListenPort = " + port, ""]
for i in range(count):
    if i == count // 2:
        out += ["[Peer]", "PublicKey = " + real_key, "AllowedIPs = " + real_allowed, "Endpoint = " + real_endpoint, ""]
    j = i % (count // 2)
    out += [
        "[Peer]",
        "PublicKey = " + base64.b64encode(os.urandom(32)).decode(),
        "AllowedIPs = 10.%d.%d.%d/32" % (200 + i // (count // 2), j // 256, j % 256),
        "Endpoint = 10.254.%d.%d:%d" % (i // 256, i % 256, 1024 + i),
        "",
    ]
print("\n".join(out))
"#;

#[test]
fn ten_thousand_peers_configure_and_the_real_one_carries_traffic() {
    let test = "ten_thousand_peers_configure_and_the_real_one_carries_traffic";
    if !require_root(test) {
        return;
    }
    let p = pair(Impl::Veil, Impl::Veil, "10.8.0.1/24", "10.8.0.2/24", 1420, 1500);
    // Nothing may leave towards the made-up peers' endpoints.
    p.na.sh("ip route add blackhole 10.254.0.0/16");
    let script = TempFile::new(MANY_PEERS_CONFIG);
    let conf = TempFile::new("");
    sh(&format!(
        "python3 {} {} {A_PORT} {} 10.9.0.2/32,fd09::2/128 10.8.0.2:{B_PORT} {MANY_PEERS} > {}",
        script.path(),
        p.a.keys.private,
        p.b.keys.public,
        conf.path()
    ));
    let started = std::time::Instant::now();
    let set = p.na.sh_out(&format!("timeout {SETCONF_LIMIT_SECS} wg setconf {} {}", p.a.ifname, conf.path()));
    eprintln!("{test}: wg setconf of {} peers took {:?}", MANY_PEERS + 1, started.elapsed());
    assert!(
        set.status.success(),
        "{test}: wg setconf with {} peers failed or took over {SETCONF_LIMIT_SECS} s (status {:?}): {}",
        MANY_PEERS + 1,
        set.status,
        String::from_utf8_lossy(&set.stderr)
    );
    let peers = p.na.sh(&format!("timeout {SETCONF_LIMIT_SECS} wg show {} peers", p.a.ifname));
    assert_eq!(peers.lines().count(), MANY_PEERS + 1, "{test}: `wg show peers` line count");
    assert!(peers.lines().any(|l| l.trim() == p.b.keys.public), "{test}: the real peer is not listed");

    tunnel_up(&p, test);
    let forward = payload_file(4 << 20, 80);
    tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &forward, STEP_LIMIT, &format!("{test}: to the real peer"));
    let backward = payload_file(4 << 20, 81);
    tcp_bulk(&p.nb, &p.na, "fd09::1", BULK_PORT, &backward, STEP_LIMIT, &format!("{test}: from the real peer"));
}

// ---------------------------------------------------------------------------------------------
// 5. Inner MTUs from 1280 to 9000, underlays of 1500 and 9100
// ---------------------------------------------------------------------------------------------

/// Bytes per direction in the MTU tests.
const MTU_BULK_BYTES: usize = 16 << 20;

/// A veil pair with inner MTU `inner` over a veth of MTU `underlay`: the largest pings that fit
/// the inner MTU (don't-fragment) pass both ways for both inner families, and a bulk transfer
/// each way (inner family = underlay family) arrives intact. `fragments_filter`, when given, is a pcap filter for outer fragments
/// that must be seen on the underlay during the large pings (the outer datagrams exceed the
/// underlay MTU, so the kernel must fragment them and they must still arrive).
fn mtu_case(test: &str, ua: &str, ub: &str, inner: u32, underlay: u32, fragments_filter: Option<&str>, seed: u64) {
    if !require_root(test) {
        return;
    }
    let p = pair(Impl::Veil, Impl::Veil, ua, ub, inner, underlay);
    tunnel_up(&p, test);
    let mut capture = fragments_filter.map(|f| Capture::start(&p.na, &p.veth_a, f));
    let (v4_payload, v6_payload) = (inner - 28, inner - 48);
    for (ns, peer4, peer6, dir) in [(&p.na, "10.9.0.2", "fd09::2", "a -> b"), (&p.nb, "10.9.0.1", "fd09::1", "b -> a")]
    {
        for (addr, size) in [(peer4, v4_payload), (peer6, v6_payload)] {
            let out = ns.sh_out(&format!("ping -M do -s {size} -c 3 -i 0.2 -W 3 {addr}"));
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(" 3 received"),
                "{test}: {dir}: pings of {size} bytes (a {inner}-byte packet) to {addr} did not all come back:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if let Some(c) = capture.as_mut() {
        c.stop();
        let fragments = c.lines("").len();
        assert!(fragments > 0, "{test}: no fragmented outer datagram seen on the underlay: the case tests nothing");
        eprintln!("{test}: {fragments} outer fragments captured during the large pings");
    }
    // The bulk transfer's inner family follows the underlay's, so both inner families run at
    // both ends of the MTU range.
    let inner_v6 = ua.contains(':');
    bulk_both_ways(&p, inner_v6, MTU_BULK_BYTES, seed, &format!("{test}: inner IPv{}", if inner_v6 { 6 } else { 4 }));
}

#[test]
fn mtu_1280_over_1500_ipv6_underlay_full_size_pings_and_bulk_intact() {
    mtu_case(
        "mtu_1280_over_1500_ipv6_underlay_full_size_pings_and_bulk_intact",
        "fd08::1/64",
        "fd08::2/64",
        1280,
        1500,
        None,
        90,
    );
}

#[test]
fn mtu_9000_over_9100_ipv4_underlay_full_size_pings_and_bulk_intact() {
    mtu_case(
        "mtu_9000_over_9100_ipv4_underlay_full_size_pings_and_bulk_intact",
        "10.8.0.1/24",
        "10.8.0.2/24",
        9000,
        9100,
        None,
        100,
    );
}

#[test]
fn mtu_9000_over_1500_ipv4_underlay_fragmented_outer_pings_and_bulk_intact() {
    mtu_case(
        "mtu_9000_over_1500_ipv4_underlay_fragmented_outer_pings_and_bulk_intact",
        "10.8.0.1/24",
        "10.8.0.2/24",
        9000,
        1500,
        // Non-first IPv4 fragments.
        Some("ip and (ip[6:2] & 0x1fff) != 0"),
        110,
    );
}

#[test]
fn mtu_9000_over_1500_ipv6_underlay_fragmented_outer_pings_and_bulk_intact() {
    mtu_case(
        "mtu_9000_over_1500_ipv6_underlay_fragmented_outer_pings_and_bulk_intact",
        "fd08::1/64",
        "fd08::2/64",
        9000,
        1500,
        // IPv6 packets whose next header is a fragment header.
        Some("ip6 and ip6[6] = 44"),
        120,
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A UDP flood inside the tunnel
// ---------------------------------------------------------------------------------------------

/// The fewest packets the flood must have pushed into a's TUN for the test to mean anything.
const FLOOD_MIN_PACKETS: u64 = 10_000;

#[test]
fn a_udp_flood_through_the_tunnel_leaves_it_working() {
    let test = "a_udp_flood_through_the_tunnel_leaves_it_working";
    if !require_root(test) {
        return;
    }
    let p = pair(Impl::Veil, Impl::Veil, "10.8.0.1/24", "10.8.0.2/24", 1420, 1500);
    tunnel_up(&p, test);
    let port = 5201;
    let _server = Proc::spawn(&p.nb, &format!("timeout 30 iperf3 -s -1 -p {port}"), "iperf3 server");
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&p.nb.sh_out(&format!("ss -Hltn sport = :{port}")).stdout).contains("LISTEN")
    });
    assert!(listening, "{test}: iperf3 server did not listen");
    let before = link_stat(&p.na, &p.a.ifname, "tx_packets");
    // Unlimited rate (-b 0), datagrams that fill the inner MTU, for 2 s; its result does not
    // matter (the flood may well starve its own control connection), only what it leaves behind.
    let flood =
        p.na.sh_out(&format!("timeout 30 iperf3 -c 10.9.0.2 -p {port} --connect-timeout 10000 -u -b 0 -l 1392 -t 2"));
    let pushed = link_stat(&p.na, &p.a.ifname, "tx_packets") - before;
    eprintln!("{test}: the flood pushed {pushed} packets into a's TUN (iperf3 status {:?})", flood.status);
    assert!(
        pushed >= FLOOD_MIN_PACKETS,
        "{test}: the flood pushed only {pushed} packets into the tunnel: it was no flood\n{}{}",
        String::from_utf8_lossy(&flood.stdout),
        String::from_utf8_lossy(&flood.stderr)
    );
    assert!(p.a.running() && p.b.running(), "{test}: a daemon died in the flood");
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: no ping a -> b got through after the flood");
    assert!(p.na.ping("10.9.0.2", 3), "{test}: pings a -> b after the flood");
    assert!(p.nb.ping("10.9.0.1", 3), "{test}: pings b -> a after the flood");
    assert!(p.na.ping("fd09::2", 3), "{test}: IPv6 pings a -> b after the flood");
}

// ---------------------------------------------------------------------------------------------
// 7. Live changes under traffic: the port rebinds, psks rotate, sessions rekey
// ---------------------------------------------------------------------------------------------

/// Bytes of the transfer that runs while everything changes under it.
const CHURN_BYTES: usize = 256 << 20;

/// A bulk transfer a -> b keeps going, bytes intact, while a's listen port changes every
/// 300 ms, both psks rotate together every 150 ms, and sessions rekey every 500 ms (short
/// thresholds): what users of `wg syncconf` and psk rotation tools do to a live tunnel.
#[test]
fn bulk_tcp_intact_while_the_port_rebinds_psks_rotate_and_sessions_rekey() {
    let test = "bulk_tcp_intact_while_the_port_rebinds_psks_rotate_and_sessions_rekey";
    if !require_root(test) {
        return;
    }
    let env = "VEIL_REKEY_AFTER_TIME_MS=500 VEIL_REKEY_TIMEOUT_MS=200";
    let p = pair_with_env(Impl::Veil, Impl::Veil, "10.8.7.1/24", "10.8.7.2/24", 1420, 1500, env);
    tunnel_up(&p, test);
    let payload = payload_file(CHURN_BYTES, 70);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (mut rotations, mut rebinds) = (0u32, 0u32);
    std::thread::scope(|s| {
        let transfer = s.spawn(|| {
            tcp_bulk(&p.na, &p.nb, "10.9.0.2", BULK_PORT, &payload, STEP_LIMIT, &format!("{test}: a -> b"));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // Let the transfer start, then change things until it ends (bounded by its own limit).
        std::thread::sleep(Duration::from_millis(100));
        let start = std::time::Instant::now();
        while !done.load(std::sync::atomic::Ordering::SeqCst) && start.elapsed() < STEP_LIMIT {
            let pf = TempFile::new(&psk());
            p.na.sh(&format!("wg set {} peer {} preshared-key {}", p.a.ifname, p.b.keys.public, pf.path()));
            p.nb.sh(&format!("wg set {} peer {} preshared-key {}", p.b.ifname, p.a.keys.public, pf.path()));
            rotations += 1;
            if rotations % 2 == 0 {
                rebinds += 1;
                p.a.listen(&p.na, A_PORT + 100 + rebinds as u16);
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        transfer.join().expect("the transfer thread");
    });
    eprintln!("{test}: {rotations} psk rotations, {rebinds} port changes during the transfer");
    assert!(rotations >= 2, "{test}: the transfer ended before anything changed ({rotations} rotations)");
    // Still a working tunnel afterwards, both ways, on the last port and psk.
    assert!(p.na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: a -> b after the churn");
    assert!(p.nb.ping("10.9.0.1", 2), "{test}: b -> a after the churn");
}

// ---------------------------------------------------------------------------------------------
// 8. A routing loop is cut at once
// ---------------------------------------------------------------------------------------------

/// The route to the peer's endpoint points into the tunnel itself and an allowed IP covers the
/// endpoint: every datagram veil sends comes back through its TUN. veil must drop its own
/// datagrams instead of sealing them again (which looped at over a million packets a second
/// before), and say so once.
#[test]
fn a_routing_loop_through_the_tunnel_is_cut_and_logged_once() {
    let test = "a_routing_loop_through_the_tunnel_is_cut_and_logged_once";
    if !require_root(test) {
        return;
    }
    let p = lab_pair(PairSpec {
        tag: "rl",
        underlay: ["10.8.9.1/24", "10.8.9.2/24"],
        tunnel: [&["10.9.0.1/24"], &["10.9.0.2/24"]],
        ports: [A_PORT, B_PORT],
        dialer: Some("a"),
        ..PairSpec::default()
    });
    let (na, a, b) = (&p.na, &p.a, &p.b);
    // B's endpoint is inside the allowed IPs (the route into the tunnel comes below).
    na.sh(&format!("wg set {} peer {} allowed-ips 10.9.0.2/32,10.8.9.2/32", a.ifname, b.keys.public));
    // A session first (over the veth), then the route that sends the tunnel into itself: from
    // now on every data message A seals comes back through its TUN.
    assert!(na.ping_until("10.9.0.2", HANDSHAKE_LIMIT), "{test}: the tunnel never came up");
    na.sh(&format!("ip route add 10.8.9.2/32 dev {}", a.ifname));
    let into_tun = || link_stat(na, &a.ifname, "tx_packets");
    let before = into_tun();
    let _ = na.sh_out("ping -c 3 -i 0.2 -W 1 10.9.0.2");
    std::thread::sleep(Duration::from_secs(1));
    let looped = into_tun() - before;
    assert!(
        looped < 200,
        "{test}: {looped} packets went into the TUN in about 2 s: the loop was not cut (3 pings are a handful; \
         the engine before issue 11's fix looped 1.4 million)"
    );
    assert!(a.terminate(Duration::from_secs(10)), "{test}: veil stops on SIGTERM");
    let err = a.log_text();
    assert_eq!(err.matches("routing loop").count(), 1, "{test}: the loop is logged exactly once:\n{err}");
}
