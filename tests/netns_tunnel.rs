//! veil to veil through network namespaces: the basic tunnel, both underlays, psk, bulk TCP, and
//! bulk TCP across many rekeys.
mod netns;

use netns::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tunnel addresses of the two sides.
const A_ADDRS: [&str; 2] = ["10.9.0.1/24", "fd09::1/64"];
const B_ADDRS: [&str; 2] = ["10.9.0.2/24", "fd09::2/64"];
/// Upper bound on one iperf3 run (start-up, transfer, results); never a performance assertion.
const IPERF_LIMIT_SECS: u32 = 60;

/// Two lab nodes joined by veth, a veil daemon in each (see [`lab_pair`]).
type Pair = LabPair;

/// Two namespaces joined by veth (underlay `ua`/`ub`), a veil daemon in each with `env`, tunnel
/// addresses 10.9.0.1/2 and fd09::1/2; `a` knows `b`'s endpoint. `psk_a`/`psk_b` are the
/// preshared keys each side uses for the other.
fn pair_with(ua: &str, ub: &str, psk_a: Option<&str>, psk_b: Option<&str>, env: &str) -> Pair {
    let p = lab_pair(PairSpec {
        tag: "vt",
        underlay: [ua, ub],
        tunnel: [&A_ADDRS, &B_ADDRS],
        env,
        dialer: Some("a"),
        ..PairSpec::default()
    });
    // A lab gives a tunnel one psk or none; these tests choose each side's, before any traffic.
    for (ns, me, other, psk) in [(&p.na, &p.a, &p.b, psk_a), (&p.nb, &p.b, &p.a, psk_b)] {
        if let Some(k) = psk {
            let f = TempFile::new(k);
            ns.sh(&format!("wg set {} peer {} preshared-key {}", me.ifname, other.keys.public, f.path()));
        }
    }
    p
}

/// Two namespaces joined by veth (underlay `ua`/`ub`), a veil daemon in each, tunnel addresses
/// 10.9.0.1/2 and fd09::1/2, the same psk (if any) on both sides.
fn pair(ua: &str, ub: &str, psk: Option<&str>) -> Pair {
    pair_with(ua, ub, psk, psk, "")
}

fn ping_both_ways(na: &Netns, nb: &Netns) {
    assert!(na.ping_until("10.9.0.2", Duration::from_secs(10)), "a -> b over IPv4 in the tunnel");
    assert!(na.ping("10.9.0.2", 3), "a -> b IPv4");
    assert!(nb.ping("10.9.0.1", 3), "b -> a IPv4");
    assert!(na.ping("fd09::2", 3), "a -> b IPv6");
    assert!(nb.ping("fd09::1", 3), "b -> a IPv6");
}

/// The single peer's line of `wg show IF <what>`, split on whitespace (public key first).
fn wg_show_peer(ns: &Netns, ifname: &str, what: &str) -> Vec<u64> {
    let out = ns.sh(&format!("wg show {ifname} {what}"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{ifname}: expected exactly one peer in `wg show {what}`: {out:?}");
    lines[0]
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or_else(|e| panic!("{ifname}: bad field {f:?} in {out:?}: {e}")))
        .collect()
}

/// `wg show IF latest-handshakes`: Unix seconds of the last handshake, 0 meaning never.
fn latest_handshake(ns: &Netns, ifname: &str) -> u64 {
    wg_show_peer(ns, ifname, "latest-handshakes")[0]
}

/// `wg show IF transfer`: (received, sent) bytes for the single peer.
fn transfer(ns: &Netns, ifname: &str) -> (u64, u64) {
    let v = wg_show_peer(ns, ifname, "transfer");
    assert_eq!(v.len(), 2, "{ifname}: transfer needs two numbers: {v:?}");
    (v[0], v[1])
}

/// Runs `work` while sampling both interfaces' last handshake time (with nanoseconds) every
/// 100 ms, and returns its result with the number of new handshakes each side completed
/// meanwhile. Two handshakes within one sampling period count once, so this is a lower bound.
/// The sampler stops with `work`, or after a cap.
fn counting_handshakes<T>(if_a: &str, if_b: &str, work: impl FnOnce() -> T) -> (T, usize, usize) {
    let done = AtomicBool::new(false);
    let (first_a, first_b) = (uapi_last_handshake(if_a), uapi_last_handshake(if_b));
    let (result, seen_a, seen_b) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut seen_a, mut seen_b) = (BTreeSet::from([first_a]), BTreeSet::from([first_b]));
            let cap = Instant::now() + Duration::from_secs(u64::from(IPERF_LIMIT_SECS) + 10);
            while !done.load(Ordering::SeqCst) && Instant::now() < cap {
                seen_a.insert(uapi_last_handshake(if_a));
                seen_b.insert(uapi_last_handshake(if_b));
                std::thread::sleep(Duration::from_millis(100));
            }
            (seen_a, seen_b)
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        done.store(true, Ordering::SeqCst);
        let (a, b) = sampler.join().unwrap();
        (r, a, b)
    });
    let result = result.unwrap_or_else(|e| std::panic::resume_unwind(e));
    // The value from before `work` is not a new handshake.
    (result, seen_a.len() - 1, seen_b.len() - 1)
}

/// The number in `"key":` at or after `from` in iperf3's JSON.
fn json_number_after(json: &str, from: usize, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = json[from..].find(&pat)? + from + pat.len();
    let rest = json[at..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))?;
    rest[..end].parse().ok()
}

/// What an iperf3 run reported.
#[derive(Debug)]
struct IperfResult {
    sent: u64,
    received: u64,
}

/// Runs `iperf3 -s -1` in `server` and `iperf3 -c addr <args> -J` in `client`, and returns the
/// client's summary after checking that it reports no error.
fn iperf(server: &Netns, client: &Netns, addr: &str, args: &str) -> IperfResult {
    let port = 5201;
    let _srv = Proc::spawn(server, &format!("timeout {IPERF_LIMIT_SECS} iperf3 -s -1 -p {port}"), "iperf3 server");
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&server.sh_out(&format!("ss -Hltn sport = :{port}")).stdout).contains("LISTEN")
    });
    assert!(listening, "iperf3 server did not listen on {port}");
    let out = client
        .sh_out(&format!("timeout {IPERF_LIMIT_SECS} iperf3 -c {addr} -p {port} --connect-timeout 10000 -J {args}"));
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let ctx = || {
        format!("iperf3 -c {addr} {args}: status {:?}\n{json}\n{}", out.status, String::from_utf8_lossy(&out.stderr))
    };
    assert!(out.status.success(), "iperf3 failed: {}", ctx());
    assert!(!json.contains("\"error\""), "iperf3 reported an error: {}", ctx());
    let end = json.find("\"end\":").unwrap_or_else(|| panic!("no end summary: {}", ctx()));
    let sent_at = json[end..].find("\"sum_sent\":").unwrap_or_else(|| panic!("no sum_sent: {}", ctx())) + end;
    let recv_at = json[end..].find("\"sum_received\":").unwrap_or_else(|| panic!("no sum_received: {}", ctx())) + end;
    let sent = json_number_after(&json, sent_at, "bytes").unwrap_or_else(|| panic!("no sent bytes: {}", ctx()));
    let received = json_number_after(&json, recv_at, "bytes").unwrap_or_else(|| panic!("no received bytes: {}", ctx()));
    IperfResult { sent: sent as u64, received: received as u64 }
}

#[test]
fn ipv4_underlay_ping_both_families_both_ways() {
    if !require_root("ipv4_underlay_ping_both_families_both_ways") {
        return;
    }
    let p = pair("10.8.0.1/24", "10.8.0.2/24", None);
    ping_both_ways(&p.na, &p.nb);
}

#[test]
fn ipv6_underlay_ping_both_families_both_ways() {
    if !require_root("ipv6_underlay_ping_both_families_both_ways") {
        return;
    }
    let p = pair("fd08::1/64", "fd08::2/64", None);
    ping_both_ways(&p.na, &p.nb);
}

#[test]
fn same_psk_pings_both_ways() {
    if !require_root("same_psk_pings_both_ways") {
        return;
    }
    let k = psk();
    let p = pair("10.8.0.1/24", "10.8.0.2/24", Some(&k));
    ping_both_ways(&p.na, &p.nb);
    assert_ne!(latest_handshake(&p.na, &p.a.ifname), 0, "a reports a handshake");
    assert_ne!(latest_handshake(&p.nb, &p.b.ifname), 0, "b reports a handshake");
}

#[test]
fn different_psks_complete_no_handshake_and_ping_fails() {
    if !require_root("different_psks_complete_no_handshake_and_ping_fails") {
        return;
    }
    let (ka, kb) = (psk(), psk());
    assert_ne!(ka, kb);
    let p = pair_with("10.8.0.1/24", "10.8.0.2/24", Some(&ka), Some(&kb), "");
    // Each ping sends traffic that starts (or retries) a handshake; bounded by count and -w.
    let out = p.na.sh_out("ping -c 3 -i 0.5 -W 1 -w 4 10.9.0.2");
    assert!(!out.status.success(), "ping through the tunnel must fail with different psks");
    // b saw a's initiation and answered it (so the handshake was really tried), yet a cannot
    // accept a response made with another psk: no side may report a handshake.
    let answered = wait_until(Duration::from_secs(5), || transfer(&p.nb, &p.b.ifname).1 > 0);
    assert!(answered, "b never sent a handshake response: the attempt did not reach b");
    assert!(transfer(&p.na, &p.a.ifname).1 > 0, "a sent initiations");
    assert_eq!(latest_handshake(&p.na, &p.a.ifname), 0, "a must not complete a handshake");
    assert_eq!(latest_handshake(&p.nb, &p.b.ifname), 0, "b must not complete a handshake");
    assert_eq!(transfer(&p.na, &p.a.ifname).0, 0, "a authenticated nothing from b");
    let out = p.nb.sh_out("ping -c 2 -i 0.5 -W 1 -w 3 10.9.0.1");
    assert!(!out.status.success(), "ping b -> a must fail too");
    assert_eq!(latest_handshake(&p.na, &p.a.ifname), 0, "a must not complete a handshake");
    assert_eq!(latest_handshake(&p.nb, &p.b.ifname), 0, "b must not complete a handshake");
}

#[test]
fn iperf3_tcp_both_directions_ipv4_and_ipv6_inner() {
    if !require_root("iperf3_tcp_both_directions_ipv4_and_ipv6_inner") {
        return;
    }
    let p = pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, "");
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(10)), "tunnel up");
    let before_a = transfer(&p.na, &p.a.ifname);
    let before_b = transfer(&p.nb, &p.b.ifname);

    // a -> b over inner IPv4.
    let fwd = iperf(&p.nb, &p.na, "10.9.0.2", "-t 3");
    assert!(fwd.sent > 0 && fwd.received > 0, "a -> b moved no data: {fwd:?}");
    let mid_a = transfer(&p.na, &p.a.ifname);
    let mid_b = transfer(&p.nb, &p.b.ifname);
    // Ciphertext carries every payload byte plus headers: the counters cover the payload.
    assert!(mid_a.1 - before_a.1 >= fwd.received, "a sent {} wire bytes for {fwd:?}", mid_a.1 - before_a.1);
    assert!(mid_b.0 - before_b.0 >= fwd.received, "b received {} wire bytes for {fwd:?}", mid_b.0 - before_b.0);

    // The reverse direction (-R: the server in b sends to the client in a) over inner IPv6.
    let rev = iperf(&p.nb, &p.na, "fd09::2", "-t 3 -R");
    assert!(rev.sent > 0 && rev.received > 0, "reverse over IPv6 moved no data: {rev:?}");
    let end_a = transfer(&p.na, &p.a.ifname);
    let end_b = transfer(&p.nb, &p.b.ifname);
    assert!(end_a.0 - mid_a.0 >= rev.received, "a received {} wire bytes for {rev:?}", end_a.0 - mid_a.0);
    assert!(end_b.1 - mid_b.1 >= rev.received, "b sent {} wire bytes for {rev:?}", end_b.1 - mid_b.1);
}

/// Daemon settings for a rekey every second or faster: by time (the initiator, after 1 s), by
/// messages (either side, after 20000), and a 500 ms REKEY_TIMEOUT, which is also the least
/// spacing of two initiations (with the default 5 s there could be no more than two rekeys in the
/// transfer). Reject-after-time stays at its default 180 s, far above the rekey, so no packet
/// meets an expired key, and the keepalive timeout keeps its default 10 s.
const FAST_REKEY_ENV: &str = "VEIL_REKEY_AFTER_TIME_MS=1000 VEIL_REKEY_AFTER_MESSAGES=20000 VEIL_REKEY_TIMEOUT_MS=500";
/// The transfer length of the rekey test, and the fewest handshakes it must see in that time.
const REKEY_TRANSFER_SECS: u32 = 8;
const MIN_REKEYS: usize = 5;

#[test]
fn bulk_tcp_survives_many_rekeys() {
    if !require_root("bulk_tcp_survives_many_rekeys") {
        return;
    }
    let p = pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, FAST_REKEY_ENV);
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(10)), "tunnel up");

    // Handshake responses (message type 2) on the underlay, both directions, into a file; -c
    // bounds the capture, and the Proc is stopped at the end.
    let mut dump = Capture::start(&p.na, &p.veth_a, "udp and udp[8] = 2");

    let before_a = transfer(&p.na, &p.a.ifname);
    let before_b = transfer(&p.nb, &p.b.ifname);
    let (result, new_a, new_b) = counting_handshakes(&p.a.ifname, &p.b.ifname, || {
        iperf(&p.nb, &p.na, "10.9.0.2", &format!("-t {REKEY_TRANSFER_SECS}"))
    });
    assert!(result.sent > 0 && result.received > 0, "no data moved: {result:?}");

    dump.stop();
    let responses = dump.lines("").len();

    let handshakes = new_a.max(new_b);
    eprintln!(
        "rekey: {result:?}; handshake responses on the wire {responses}; new handshake times a {new_a}, b {new_b}"
    );
    assert!(
        handshakes >= MIN_REKEYS,
        "only {handshakes} handshakes completed in a {REKEY_TRANSFER_SECS} s transfer (a {new_a}, b {new_b})"
    );
    assert!(responses >= MIN_REKEYS, "only {responses} handshake responses on the wire");

    // The peers' counters agree with the transfer: a sent at least the payload b's iperf3
    // received, b authenticated at least that much, never more than a sent, and the ciphertext
    // is not wildly larger than the payload (per-packet headers, handshakes, retransmits); the
    // ACKs went the other way.
    let (after_a, after_b) = (transfer(&p.na, &p.a.ifname), transfer(&p.nb, &p.b.ifname));
    let a_sent = after_a.1 - before_a.1;
    let b_recv = after_b.0 - before_b.0;
    assert!(a_sent >= result.received, "a sent {a_sent} wire bytes, iperf3 delivered {}", result.received);
    assert!(b_recv >= result.received, "b received {b_recv} wire bytes, iperf3 delivered {}", result.received);
    assert!(b_recv <= a_sent, "b received {b_recv} bytes but a sent only {a_sent}");
    assert!(a_sent <= result.sent * 2 + (1 << 20), "a sent {a_sent} wire bytes for {result:?}");
    assert!(after_b.1 > before_b.1 && after_a.0 > before_a.0, "ACKs went back b -> a");
}

#[test]
fn time_rekeys_under_pings_lose_no_ping() {
    if !require_root("time_rekeys_under_pings_lose_no_ping") {
        return;
    }
    // Rekey by time only (the initiator's key is 1 s old), with a 500 ms REKEY_TIMEOUT.
    let p =
        pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, "VEIL_REKEY_AFTER_TIME_MS=1000 VEIL_REKEY_TIMEOUT_MS=500");
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(10)), "tunnel up");
    // 50 pings 0.2 s apart: 10 s, bounded by -w.
    let (out, new_a, new_b) =
        counting_handshakes(&p.a.ifname, &p.b.ifname, || p.na.sh_out("ping -c 50 -i 0.2 -W 2 -w 30 10.9.0.2"));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("time rekey: new handshake times a {new_a}, b {new_b}; {}", text.lines().rev().nth(1).unwrap_or(""));
    assert!(out.status.success() && text.contains(" 0% packet loss"), "pings were lost across rekeys:\n{text}");
    let handshakes = new_a.max(new_b);
    assert!(handshakes >= MIN_REKEYS, "only {handshakes} handshakes in 10 s of pings (a {new_a}, b {new_b})");
}

#[test]
fn no_cookie_replies_without_load() {
    if !require_root("no_cookie_replies_without_load") {
        return;
    }
    // Many handshakes with nothing else queued: every initiation must get a response, never a
    // cookie reply (a cookie reply means the responder wrongly thought it was under load).
    let p =
        pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, "VEIL_REKEY_AFTER_TIME_MS=500 VEIL_REKEY_TIMEOUT_MS=250");
    let mut dump = Capture::start(&p.na, &p.veth_a, "udp and udp[8] >= 1 and udp[8] <= 3");
    // 40 pings 0.2 s apart (8 s, bounded by -w): about one handshake every half second.
    let out = p.na.sh_out("ping -c 40 -i 0.2 -W 2 -w 30 10.9.0.2");
    assert!(out.status.success(), "pings: {}", String::from_utf8_lossy(&out.stdout));
    dump.stop();
    let count = |kind: u8| dump.lines(&format!("udp[8] = {kind}")).len();
    let (initiations, responses, cookies) = (count(1), count(2), count(3));
    eprintln!("no-load handshakes: {initiations} initiations, {responses} responses, {cookies} cookie replies");
    assert!(responses >= MIN_REKEYS, "only {responses} handshake responses");
    assert_eq!(cookies, 0, "cookie replies without any load ({initiations} initiations, {responses} responses)");
}

#[test]
fn a_packet_whose_source_is_not_the_peers_allowed_ip_is_dropped() {
    if !require_root("a_packet_whose_source_is_not_the_peers_allowed_ip_is_dropped") {
        return;
    }
    // b accepts only 10.9.0.1 from a. a gets a second address, 10.9.0.99, and sends from it:
    // the packet is authentic (a's session) but its source does not route back to a at b.
    let p = pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, "");
    p.na.sh(&format!("ip addr add 10.9.0.99/32 dev {}", p.a.ifname));
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(10)), "tunnel up from the allowed source");
    let rx_packets = |ns: &Netns, ifname: &str| -> u64 {
        ns.sh(&format!("cat /sys/class/net/{ifname}/statistics/rx_packets")).trim().parse().unwrap()
    };
    let before = rx_packets(&p.nb, &p.b.ifname);
    let (peer_rx_before, _) = transfer(&p.nb, &p.b.ifname);
    let spoofed = p.na.sh_out("ping -c 3 -i 0.2 -W 1 -I 10.9.0.99 10.9.0.2");
    assert!(!spoofed.status.success(), "no reply may come back to a source b does not route to a");
    let (peer_rx_after, _) = transfer(&p.nb, &p.b.ifname);
    assert!(peer_rx_after > peer_rx_before, "the spoofed packets did reach b's veil (authenticated)");
    assert_eq!(rx_packets(&p.nb, &p.b.ifname), before, "but none was written to b's TUN");
    // Once b lets a claim the address, the same pings get through.
    p.nb.sh(&format!("wg set {} peer {} allowed-ips 10.9.0.1/32,10.9.0.99/32", p.b.ifname, p.a.keys.public));
    assert!(p.na.ping("10.9.0.2 -I 10.9.0.99", 3), "allowed now");
}

#[test]
fn an_mtu_lowered_after_start_caps_the_padding() {
    if !require_root("an_mtu_lowered_after_start_caps_the_padding") {
        return;
    }
    // At debug level the daemon logs each MTU it takes from the link.
    let p = pair_with("10.8.0.1/24", "10.8.0.2/24", None, None, "LOG_LEVEL=debug");
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(10)), "tunnel up");
    p.na.sh(&format!("ip link set dev {} mtu 1380", p.a.ifname));
    // veil follows the link's changes as they happen (it used to read the MTU again at most
    // once a second): once its netlink thread has seen the change, the very next packets are
    // capped.
    let seen = wait_until(Duration::from_secs(10), || p.a.log_text().contains("the tunnel's MTU is now 1380"));
    assert!(seen, "a's daemon never took the new MTU:\n{}", p.a.log_text());
    let mut dump = Capture::start(&p.na, &p.veth_a, "udp and src host 10.8.0.1 and udp[8] = 4 and greater 1300");
    // 1352 bytes of ICMP payload make 1380-byte IP packets: exactly the new MTU. Padding to a
    // multiple of 16 would make 1392, but never past the MTU: 16 + 1380 + 16 bytes of UDP payload.
    assert!(p.na.ping("-s 1352 -M do 10.9.0.2", 3), "full-size pings at the new MTU");
    dump.stop();
    let lengths: Vec<String> =
        dump.lines("").iter().filter_map(|l| l.split("length ").nth(1).map(str::to_string)).collect();
    assert!(!lengths.is_empty(), "no full-size data messages captured: {:?}", dump.lines(""));
    assert!(lengths.iter().all(|l| l == "1412"), "UDP payload lengths {lengths:?}, want 1412 (MTU 1380)");
}

#[test]
fn link_local_ipv6_underlay_with_the_zone_as_an_interface_name() {
    if !require_root("link_local_ipv6_underlay_with_the_zone_as_an_interface_name") {
        return;
    }
    // The veth end in a toward b is called b: wg passes the zone on as the interface name,
    // endpoint=[fe80::b%b]:51821, and so does the lab.
    let p = lab_pair(PairSpec {
        tag: "vl",
        underlay: ["fe80::a/64", "fe80::b/64"],
        tunnel: [&A_ADDRS, &B_ADDRS],
        endpoints: Some(["[fe80::b%b]:51821", ""]),
        ..PairSpec::default()
    });
    let (na, nb, a, b, veth_a, veth_b) = (&p.na, &p.nb, &p.a, &p.b, &p.veth_a, &p.veth_b);
    assert_eq!(veth_a, "b", "the zone in the endpoint above");
    ping_both_ways(na, nb);
    // Each side's endpoint follows the other's source address (either of its two link-local
    // addresses: fe80::a or b and the one the kernel made), and keeps the zone.
    let at_a = na.sh(&format!("wg show {} endpoints", a.ifname));
    assert!(at_a.contains("[fe80::") && at_a.contains(&format!("%{veth_a}]:51821")), "a's endpoint for b: {at_a}");
    let at_b = nb.sh(&format!("wg show {} endpoints", b.ifname));
    assert!(at_b.contains("[fe80::") && at_b.contains(&format!("%{veth_b}]:51820")), "b's endpoint for a: {at_b}");
}
