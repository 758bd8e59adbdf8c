//! veil against other WireGuard implementations (wireguard-go, boringtun, gotatun) through network
//! namespaces: each side initiating, with and without a preshared key. Each test checks the
//! handshake, IPv4 pings both ways, an IPv6 ping, a checksummed bulk transfer from the initiator
//! to the responder, and that both sides report a handshake in `wg show`.
mod netns;
use netns::*;

use std::time::Duration;

/// Tunnel addresses: veil is .1 / ::1, the other implementation .2 / ::2.
const VEIL_ADDRS: [&str; 2] = ["10.9.0.1/24", "fd09::1/64"];
const PEER_ADDRS: [&str; 2] = ["10.9.0.2/24", "fd09::2/64"];
const VEIL_PORT: u16 = 51820;
const PEER_PORT: u16 = 51821;
/// Bulk transfer size (20 MiB).
const BULK_BYTES: u64 = 20 << 20;
/// Upper bound on any one step (handshake, transfer); never a performance assertion.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// True when `p` can run here. Missing under CI=true is a failure: `.ci/run` installs all of them.
fn require_impl(test: &str, p: Impl) -> bool {
    if p.available() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {p:?} is not installed, and CI=true: .ci/run should have installed it");
    }
    // Straight to the stderr handle rather than eprintln!, which the test harness captures.
    let msg = format!("\n!!!!! SKIPPED {test}: {p:?} is not installed (see .ci/run for how to install it) !!!!!\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
    false
}

/// `wg show IF latest-handshakes` for the single peer: the Unix time, 0 meaning never.
fn latest_handshake(ns: &Netns, ifname: &str) -> u64 {
    let out = ns.sh(&format!("wg show {ifname} latest-handshakes"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{ifname}: expected exactly one peer in `wg show latest-handshakes`: {out:?}");
    let field = lines[0].split_whitespace().nth(1).unwrap_or_else(|| panic!("{ifname}: bad line {out:?}"));
    field.parse().unwrap_or_else(|e| panic!("{ifname}: bad handshake time {field:?}: {e}"))
}

/// Sends `BULK_BYTES` of random data over TCP inside the tunnel from `from` to `to_addr` (an address
/// in `to`), and asserts the receiver got exactly the same bytes (SHA-256 compared).
fn bulk(from: &Netns, to: &Netns, to_addr: &str, what: &str) {
    let data = TempFile::new("");
    sh(&format!("head -c {BULK_BYTES} /dev/urandom > {}", data.path()));
    let sent = sh(&format!("sha256sum < {}", data.path()));

    let port = 5001;
    let limit = STEP_LIMIT.as_secs();
    let recv_cmd =
        format!("ip netns exec {} timeout {limit} sh -c 'ncat -l --recv-only {to_addr} {port} | sha256sum'", to.name);
    let receiver = std::thread::spawn(move || sh_out(&recv_cmd));
    let listening = wait_until(Duration::from_secs(10), || {
        to.sh_out(&format!("ss -Hltn src {to_addr} sport = :{port}")).stdout.len() > 1
    });
    assert!(listening, "{what}: ncat did not start listening on {to_addr}:{port}");

    let send = from.sh_out(&format!("timeout {limit} ncat --send-only {to_addr} {port} < {}", data.path()));
    assert!(
        send.status.success(),
        "{what}: sending {BULK_BYTES} bytes failed: {}",
        String::from_utf8_lossy(&send.stderr)
    );
    let recv = receiver.join().expect("receiver thread");
    assert!(recv.status.success(), "{what}: receiving failed: {}", String::from_utf8_lossy(&recv.stderr));
    let received = String::from_utf8_lossy(&recv.stdout);
    assert_eq!(received.trim(), sent.trim(), "{what}: received data differs from sent data (sha256)");
}

/// veil in one lab node, `p` in another, joined by veth. Only the initiator knows the other's
/// underlay endpoint, and the initiator's side sends the first packet.
fn interop(p: Impl, veil_initiates: bool, psk: bool) {
    let test = format!(
        "interop {p:?}: {} initiates, {}",
        if veil_initiates { "veil" } else { "peer" },
        if psk { "psk" } else { "no psk" }
    );
    if !require_root(&test) || !require_impl(&test, p) {
        return;
    }
    // Only the initiator knows where the other side is.
    let pair = lab_pair(PairSpec {
        tag: "io",
        imp: [Impl::Veil, p],
        tunnel: [&VEIL_ADDRS, &PEER_ADDRS],
        ports: [VEIL_PORT, PEER_PORT],
        psk,
        dialer: Some(if veil_initiates { "a" } else { "b" }),
        // Debug logs (veil's LOG_LEVEL, the others' WG_LOG_LEVEL), shown only when a check fails.
        env: "LOG_LEVEL=debug WG_LOG_LEVEL=debug NO_COLOR=1",
        ..PairSpec::default()
    });
    let (nv, np, v, q) = (&pair.na, &pair.nb, &pair.a, &pair.b);

    let key = pair.lab.psk("a", "b");
    let key = key.as_deref();
    assert_eq!(key.is_some(), psk, "{test}: the lab's psk");
    // (namespace, tunnel IPv4, tunnel IPv6, interface, underlay endpoint) of each side.
    let veil_side = (nv, "10.9.0.1", "fd09::1", &v.ifname, format!("10.8.0.1:{VEIL_PORT}"));
    let peer_side = (np, "10.9.0.2", "fd09::2", &q.ifname, format!("10.8.0.2:{PEER_PORT}"));
    let (ini, resp) = if veil_initiates { (veil_side, peer_side) } else { (peer_side, veil_side) };
    // Both daemons took the preshared key (or have none).
    let want_psk = key.unwrap_or("(none)");
    for (ns, ifname, who) in [(nv, &v.ifname, "veil".to_string()), (np, &q.ifname, format!("{p:?}"))] {
        let out = ns.sh(&format!("wg show {ifname} preshared-keys"));
        assert_eq!(out.split_whitespace().nth(1), Some(want_psk), "{test}: {who}'s preshared key: {out:?}");
    }

    // Nobody has sent anything yet: no handshake on either side.
    assert_eq!(latest_handshake(nv, &v.ifname), 0, "{test}: veil handshake before any traffic");
    assert_eq!(latest_handshake(np, &q.ifname), 0, "{test}: {p:?} handshake before any traffic");

    // The datagrams between the two daemons until the pings are done, for a failure's report.
    let mut wire = Capture::start(nv, &pair.veth_a, "udp");
    let why = || format!("{}{}", pair.report(), wire.wire(80));
    // The initiator's first ping starts the handshake.
    assert!(
        ini.0.ping_until(resp.1, STEP_LIMIT),
        "{test}: initiator's first IPv4 ping (handshake) never answered{}",
        why()
    );
    assert!(ini.0.ping(resp.1, 3), "{test}: IPv4 ping initiator -> responder{}", why());
    // The responder's first ping back is retried for a few seconds, as in netns_datapath's
    // tunnel_up (once lost there against gotatun under CI's load, not reproduced alone: 0 of 25
    // labs and 0 of 32 of these tests on a quiet machine, 2026-11-30; and once lost for all 5 s
    // at 3765223 against gotatun initiating, not reproduced in 245 runs of this binary nor in
    // 738 loops of its gotatun tests since).
    assert!(resp.0.ping_until(ini.1, Duration::from_secs(5)), "{test}: IPv4 ping responder -> initiator{}", why());
    assert!(resp.0.ping(ini.1, 3), "{test}: IPv4 pings responder -> initiator{}", why());
    assert!(ini.0.ping(resp.2, 3), "{test}: IPv6 ping initiator -> responder{}", why());
    wire.stop();

    bulk(ini.0, resp.0, resp.1, &test);

    assert_ne!(latest_handshake(nv, &v.ifname), 0, "{test}: veil reports no handshake after traffic");
    assert_ne!(latest_handshake(np, &q.ifname), 0, "{test}: {p:?} reports no handshake after traffic");
    // The responder, configured without an endpoint, learned the initiator's from its packets.
    let out = resp.0.sh(&format!("wg show {} endpoints", resp.3));
    assert_eq!(out.split_whitespace().nth(1), Some(ini.4.as_str()), "{test}: responder's learned endpoint");
}

macro_rules! interop_tests {
    ($($name:ident: $imp:expr, $veil_initiates:expr, $psk:expr;)*) => {
        $(
            #[test]
            fn $name() {
                interop($imp, $veil_initiates, $psk);
            }
        )*
    };
}

interop_tests! {
    wireguard_go_veil_initiates: Impl::WireguardGo, true, false;
    wireguard_go_veil_initiates_psk: Impl::WireguardGo, true, true;
    wireguard_go_peer_initiates: Impl::WireguardGo, false, false;
    wireguard_go_peer_initiates_psk: Impl::WireguardGo, false, true;
    boringtun_veil_initiates: Impl::Boringtun, true, false;
    boringtun_veil_initiates_psk: Impl::Boringtun, true, true;
    boringtun_peer_initiates: Impl::Boringtun, false, false;
    boringtun_peer_initiates_psk: Impl::Boringtun, false, true;
    gotatun_veil_initiates: Impl::Gotatun, true, false;
    gotatun_veil_initiates_psk: Impl::Gotatun, true, true;
    gotatun_peer_initiates: Impl::Gotatun, false, false;
    gotatun_peer_initiates_psk: Impl::Gotatun, false, true;
}
