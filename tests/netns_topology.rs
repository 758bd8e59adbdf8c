//! Topologies and lifecycles beyond a plain pair: a hub forwarding between two spokes, a peer
//! roaming to a new address and port mid-traffic, a TUN device moved into another namespace
//! after start, and how the daemon ends (interface deleted, SIGTERM, socket removed, a second
//! daemon for a served name).
mod netns;
use netns::*;

use std::collections::HashMap;

use std::path::Path;
use std::time::Duration;
use veil::lab::{Options, Topology};

/// The UAPI socket of `ifname`.
fn sock(ifname: &str) -> String {
    format!("/var/run/wireguard/{ifname}.sock")
}

/// Whether `ifname` exists in `ns`.
fn has_link(ns: &Netns, ifname: &str) -> bool {
    sh_out(&format!("ip -n {} link show dev {ifname}", ns.name)).status.success()
}

/// `wg show IF transfer` (run from the host: the UAPI socket path is global), as
/// public key -> (rx bytes, tx bytes).
fn transfer(ifname: &str) -> HashMap<String, (u64, u64)> {
    sh(&format!("wg show {ifname} transfer"))
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let key = w.next()?.to_string();
            let rx = w.next()?.parse().ok()?;
            let tx = w.next()?.parse().ok()?;
            Some((key, (rx, tx)))
        })
        .collect()
}

/// `wg show IF endpoints`, as public key -> endpoint text ("(none)" when unknown).
fn endpoints(ifname: &str) -> HashMap<String, String> {
    sh(&format!("wg show {ifname} endpoints"))
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Pings `count` times with `size`-byte payloads; true only if every reply came back.
fn ping_all(ns: &Netns, addr: &str, count: u32, size: u32) -> bool {
    let out = ns.sh_out(&format!("ping -c {count} -s {size} -i 0.2 -W 2 {addr}"));
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains(&format!(" {count} received"))
}

// ---------------------------------------------------------------------------------------------
// 1. Hub and spoke
// ---------------------------------------------------------------------------------------------

#[test]
fn hub_and_spoke_spoke_to_spoke_traffic_goes_through_the_hub() {
    if !require_root("hub_and_spoke_spoke_to_spoke_traffic_goes_through_the_hub") {
        return;
    }
    // Two separate underlay links; the spokes share no link and have no routes to each other.
    // The subnets behind the spokes: 192.168.1.0/24 behind s1, 192.168.2.0/24 behind s2, each
    // a LAN host whose default route is its spoke. Only the spokes know the hub's endpoint; each
    // routes the tunnel network and the other spoke's subnet to the hub.
    let topology = format!(
        r#"
        name = "{name}"
        [[nodes]]
        name = "hub"
        ifname = "{if_h}"
        address = ["10.77.0.1/24"]
        forward = true
        [[nodes]]
        name = "s1"
        ifname = "{if_a}"
        address = ["10.77.0.2/24"]
        listen_port = 51821
        forward = true
        [[nodes]]
        name = "s2"
        ifname = "{if_b}"
        address = ["10.77.0.3/24"]
        listen_port = 51822
        forward = true
        [[nodes]]
        name = "lan1"
        gateway = "192.168.1.254"
        [[nodes]]
        name = "lan2"
        gateway = "192.168.2.254"
        [[links]]
        nodes = ["hub", "s1"]
        addresses = ["10.81.1.1/24", "10.81.1.2/24"]
        [[links]]
        nodes = ["hub", "s2"]
        addresses = ["10.81.2.1/24", "10.81.2.2/24"]
        [[links]]
        nodes = ["s1", "lan1"]
        addresses = ["192.168.1.254/24", "192.168.1.1/24"]
        [[links]]
        nodes = ["s2", "lan2"]
        addresses = ["192.168.2.254/24", "192.168.2.1/24"]
        [[tunnels]]
        nodes = ["hub", "s1"]
        dialer = "s1"
        allowed_ips = [["192.168.1.0/24"], ["10.77.0.0/24", "192.168.2.0/24"]]
        [[tunnels]]
        nodes = ["hub", "s2"]
        dialer = "s2"
        allowed_ips = [["192.168.2.0/24"], ["10.77.0.0/24", "192.168.1.0/24"]]
        "#,
        name = unique("hs"),
        if_h = unique("wg"),
        if_a = unique("wg"),
        if_b = unique("wg"),
    );
    let lab = Lab::up(&Topology::from_toml(&topology).unwrap(), &Options::new(veil_bin())).expect("lab up");
    let [s1, s2, lan1, lan2] = ["s1", "s2", "lan1", "lan2"].map(|n| Netns::of(&lab, n));
    let tunnel = |n: &str| LabTunnel::of(&lab, n);
    let (h, a, b) = (tunnel("hub"), tunnel("s1"), tunnel("s2"));

    // No direct path between the spokes: no underlay route, and each spoke knows only the hub.
    assert!(!s1.sh_out("ip route get 10.81.2.2").status.success(), "s1 has an underlay route to s2");
    assert!(!s2.sh_out("ip route get 10.81.1.2").status.success(), "s2 has an underlay route to s1");
    assert_eq!(sh(&format!("wg show {} peers", a.ifname)).trim(), h.keys.public, "s1's only peer is the hub");
    assert_eq!(sh(&format!("wg show {} peers", b.ifname)).trim(), h.keys.public, "s2's only peer is the hub");

    // Each spoke reaches the hub first, so the hub learns both endpoints.
    assert!(s1.ping_until("10.77.0.1", Duration::from_secs(10)), "s1 -> hub");
    assert!(s2.ping_until("10.77.0.1", Duration::from_secs(10)), "s2 -> hub");

    let (count, size) = (5u32, 1000u32);
    let least = u64::from(count * size);
    for (from, to, what) in [
        (&s1, "10.77.0.3", "s1 -> s2 tunnel address"),
        (&s1, "192.168.2.1", "s1 -> host on the subnet behind s2"),
        (&s2, "192.168.1.1", "s2 -> host on the subnet behind s1"),
        (&lan1, "192.168.2.1", "host behind s1 -> host behind s2"),
        (&lan2, "10.77.0.2", "host behind s2 -> s1 tunnel address"),
    ] {
        let before = transfer(&h.ifname);
        assert!(ping_all(from, to, count, size), "{what}: not every ping came back");
        let after = transfer(&h.ifname);
        let grew = |key: &str| {
            let (b, a) = (before[key], after[key]);
            (a.0 - b.0, a.1 - b.1)
        };
        let (rx1, tx1) = grew(&a.keys.public);
        let (rx2, tx2) = grew(&b.keys.public);
        // Requests and replies both crossed the hub: received from one spoke and sent to the
        // other, each way, at least the ICMP payload bytes.
        for (n, dir) in [(rx1, "hub rx from s1"), (tx1, "hub tx to s1"), (rx2, "hub rx from s2"), (tx2, "hub tx to s2")]
        {
            assert!(n >= least, "{what}: {dir} grew by {n} bytes, expected at least {least}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Roaming
// ---------------------------------------------------------------------------------------------

#[test]
fn roaming_peer_changes_address_and_port_mid_traffic_and_the_other_side_follows() {
    if !require_root("roaming_peer_changes_address_and_port_mid_traffic_and_the_other_side_follows") {
        return;
    }
    // A has no endpoint for B: it learns it from B's packets.
    let p = lab_pair(PairSpec {
        tag: "rm",
        underlay: ["10.82.0.1/24", "10.82.0.2/24"],
        tunnel: [&["10.77.0.1/24"], &["10.77.0.2/24"]],
        dialer: Some("b"),
        ..PairSpec::default()
    });
    let (na, nb, a, b, vb) = (&p.na, &p.nb, &p.a, &p.b, &p.veth_b);

    assert!(nb.ping_until("10.77.0.1", Duration::from_secs(10)), "b -> a before roaming");
    let learned = wait_until(Duration::from_secs(5), || {
        endpoints(&a.ifname).get(&b.keys.public).map(String::as_str) == Some("10.82.0.2:51821")
    });
    assert!(learned, "a did not learn b's endpoint: {:?}", endpoints(&a.ifname));

    // Traffic running: a bounded ping stream from B (at most 300 pings, 30 s), its replies
    // counted from its line-buffered output.
    let log = TempFile::new("");
    let cmd = format!("stdbuf -oL ping -c 300 -i 0.1 -W 1 10.77.0.1 >{}", log.path());
    let mut stream = Proc::spawn(nb, &cmd, "ping stream");
    let replies = || std::fs::read_to_string(log.path()).unwrap_or_default().matches("bytes from").count();
    assert!(wait_until(Duration::from_secs(10), || replies() >= 3), "the ping stream got no replies before roaming");

    // B roams: new underlay address, new listen port.
    nb.sh(&format!("ip addr del 10.82.0.2/24 dev {vb}"));
    nb.sh(&format!("ip addr add 10.82.0.3/24 dev {vb}"));
    b.listen(nb, 51831);
    assert!(stream.running(), "the ping stream ended before the roam was complete");
    let at_roam = replies();

    // The same stream gets replies again, and A's endpoint for B follows.
    let resumed = wait_until(Duration::from_secs(10), || replies() >= at_roam + 5);
    assert!(resumed, "the running ping stream got no replies after roaming ({} then {})", at_roam, replies());
    assert!(stream.running(), "the ping stream ended before the check");
    let followed = wait_until(Duration::from_secs(10), || {
        endpoints(&a.ifname).get(&b.keys.public).map(String::as_str) == Some("10.82.0.3:51831")
    });
    assert!(followed, "a's endpoint for b did not follow to 10.82.0.3:51831: {:?}", endpoints(&a.ifname));
    assert!(ping_all(nb, "10.77.0.1", 3, 56), "b -> a after roaming");
    assert!(ping_all(na, "10.77.0.2", 3, 56), "a -> b after roaming");
    assert!(stream.terminate(Duration::from_secs(5)), "the ping stream did not stop");
}

/// A's underlay has two addresses; B reaches A at the secondary one. A's answers must leave
/// from that address (not the primary the kernel would pick), so B's endpoint for A stays put;
/// once the address is removed, A's datagrams leave from the one left and B follows there.
#[test]
fn replies_leave_from_the_address_the_peer_reached_and_fall_over_when_it_goes() {
    if !require_root("replies_leave_from_the_address_the_peer_reached_and_fall_over_when_it_goes") {
        return;
    }
    // A learns B's endpoint from B's packets; B reaches A at A's secondary address.
    let p = lab_pair(PairSpec {
        tag: "ss",
        underlay: ["10.84.0.1/24", "10.84.0.2/24"],
        tunnel: [&["10.78.0.1/24"], &["10.78.0.2/24"]],
        endpoints: Some(["", "10.84.0.5:51820"]),
        ..PairSpec::default()
    });
    let (na, nb, a, b, va, vb) = (&p.na, &p.nb, &p.a, &p.b, &p.veth_a, &p.veth_b);
    na.sh(&format!("ip addr add 10.84.0.5/24 dev {va}"));

    let mut cap = Capture::start(nb, vb, "udp and src port 51820");
    assert!(ping_all(nb, "10.78.0.1", 5, 56), "b -> a through the secondary address");
    assert!(ping_all(na, "10.78.0.2", 5, 56), "a -> b once a knows b's endpoint");
    cap.stop();
    let from_a = cap.lines("udp and src port 51820");
    assert!(from_a.len() >= 10, "too few datagrams from a captured: {from_a:?}");
    let stray: Vec<_> = from_a.iter().filter(|l| !l.contains("10.84.0.5.51820 >")).collect();
    assert!(stray.is_empty(), "a answered from another address than the one b reached: {stray:?}");
    assert_eq!(
        endpoints(&b.ifname).get(&a.keys.public).map(String::as_str),
        Some("10.84.0.5:51820"),
        "b's endpoint for a moved"
    );

    // The address goes: A's next datagrams leave from the one left, and B follows before it
    // answers (its first reply must not go to the address that is gone: every ping counts).
    na.sh(&format!("ip addr del 10.84.0.5/24 dev {va}"));
    assert!(ping_all(na, "10.78.0.2", 3, 56), "a -> b after its address was removed");
    let followed = wait_until(Duration::from_secs(5), || {
        endpoints(&b.ifname).get(&a.keys.public).map(String::as_str) == Some("10.84.0.1:51820")
    });
    assert!(followed, "b's endpoint for a did not move to 10.84.0.1: {:?}", endpoints(&b.ifname));
    assert!(ping_all(nb, "10.78.0.1", 3, 56), "b -> a after the fall-over");
}

// ---------------------------------------------------------------------------------------------
// 3. TUN moved into another namespace
// ---------------------------------------------------------------------------------------------

#[test]
fn tun_moved_to_another_namespace_after_start_still_carries_traffic() {
    if !require_root("tun_moved_to_another_namespace_after_start_still_carries_traffic") {
        return;
    }
    // The underlay joins X and the peer; Y has nothing but the moved TUN. The daemons are
    // started here, not by the lab: the test configures one only after its TUN has moved.
    let l = lab_nodes("mv", ["10.83.0.1/24", "10.83.0.2/24"]);
    let (nx, ny, np, veth) = (&l.na, Netns::new("mvy"), &l.nb, &l.veth_a);
    let m = endpoint(nx, Impl::Veil, &[], "");
    let p = endpoint(np, Impl::Veil, &["10.77.0.2/24"], "");
    p.listen(np, 51821);
    p.add_peer(np, &m, "10.77.0.1/32", None, None);

    nx.sh(&format!("ip link set {} netns {}", m.ifname, ny.name));
    assert!(!has_link(nx, &m.ifname), "the TUN is still in X");
    assert!(has_link(&ny, &m.ifname), "the TUN did not arrive in Y");
    let links = ny.sh("ip -o link show");
    assert_eq!(links.lines().count(), 2, "Y should hold only lo and the TUN:\n{links}");
    ny.sh(&format!("ip addr add 10.77.0.1/24 dev {}", m.ifname));
    ny.sh(&format!("ip link set {} mtu 1420 up", m.ifname));

    // The daemon (its UDP and UAPI sockets in X) is configured after the move, with `wg` run
    // outside both namespaces: the socket path is global.
    assert!(Path::new(&sock(&m.ifname)).exists(), "the UAPI socket is gone");
    sh(&format!("wg set {} listen-port 51820", m.ifname));
    sh(&format!("wg set {} peer {} allowed-ips 10.77.0.2/32 endpoint 10.83.0.2:51821", m.ifname, p.keys.public));
    let show = sh(&format!("wg show {} peers", m.ifname));
    assert_eq!(show.trim(), p.keys.public, "wg show after the move");

    assert!(ny.ping_until("10.77.0.2", Duration::from_secs(10)), "Y -> peer through the moved TUN");
    assert!(ping_all(&ny, "10.77.0.2", 3, 56), "Y -> peer");
    assert!(ping_all(np, "10.77.0.1", 3, 56), "peer -> Y");
    let t = transfer(&m.ifname)[&p.keys.public];
    assert!(t.0 > 0 && t.1 > 0, "the moved interface's tunnel counters did not move: {t:?}");

    // An MTU lowered in Y, where the daemon (in X) cannot see the interface by name: the
    // padding follows at once (it used to keep the old MTU for good). 1352 bytes of ICMP payload
    // make 1380-byte packets: 16 + 1380 + 16 bytes of UDP payload, not 1392 padded.
    ny.sh(&format!("ip link set dev {} mtu 1380", m.ifname));
    // Time for the daemon's netlink thread to see the change (this daemon's log is a pipe the
    // test does not read, so it cannot be asked as in netns_tunnel; a few ms when the machine is
    // idle, 500 ms leaves room for a loaded one).
    std::thread::sleep(Duration::from_millis(500));
    let mut dump = Capture::start(nx, veth, "udp and src host 10.83.0.1 and udp[8] = 4 and greater 1300");
    assert!(ping_all(&ny, "-M do 10.77.0.2", 3, 1352), "full-size pings at the new MTU");
    dump.stop();
    let lengths: Vec<String> =
        dump.lines("").iter().filter_map(|l| l.split("length ").nth(1).map(str::to_string)).collect();
    assert!(!lengths.is_empty(), "no full-size data messages captured: {:?}", dump.lines(""));
    assert!(lengths.iter().all(|l| l == "1412"), "UDP payload lengths {lengths:?}, want 1412 (MTU 1380)");
}

// ---------------------------------------------------------------------------------------------
// 4. Daemon lifecycle
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `veil -f IF`, a child of the test.
    Foreground,
    /// `veil IF`: forks, the command returns once the daemon is ready.
    Daemonized,
}

/// A veil daemon for a fresh interface in `ns`, in either mode.
struct Daemon {
    ifname: String,
    pid: u32,
    /// The child in foreground mode.
    proc: Option<Proc>,
}

/// Whether process `pid` has fully exited. A daemonized veil is reparented to PID 1, which in
/// some containers never reaps, so a zombie counts as gone, but only once all its threads are
/// gone too: the leader of a multithreaded process shows as a zombie while its other threads
/// still exit, and its descriptors (the TUN) close only with the last of them.
fn pid_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    // The state follows the ")" closing the command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    matches!(state, Some("Z") | Some("X")) && threads <= 1
}

impl Daemon {
    fn start(ns: &Netns, mode: Mode) -> Daemon {
        let ifname = unique("wgl");
        let veil = veil_bin();
        let (pid, proc) = match mode {
            Mode::Foreground => {
                let proc = Proc::spawn(ns, &format!("{} -f {ifname}", veil.display()), &format!("veil -f {ifname}"));
                let up = wait_until(Duration::from_secs(10), || Path::new(&sock(&ifname)).exists());
                assert!(up, "veil -f {ifname} did not create its socket");
                (proc.child.id(), Some(proc))
            }
            Mode::Daemonized => {
                // Returns only once the TUN and the socket exist.
                let out = ns.sh_out(&format!("{} {ifname}", veil.display()));
                assert!(out.status.success(), "veil {ifname} failed: {}", String::from_utf8_lossy(&out.stderr));
                assert!(Path::new(&sock(&ifname)).exists(), "veil {ifname} returned before its socket existed");
                let pids = sh(&format!("ip netns pids {}", ns.name));
                let pids: Vec<u32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
                assert_eq!(pids.len(), 1, "expected exactly the daemon in {}: {pids:?}", ns.name);
                let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", pids[0])).unwrap_or_default();
                assert!(cmdline.contains(&ifname), "pid {} is not veil {ifname}: {cmdline:?}", pids[0]);
                (pids[0], None)
            }
        };
        assert!(has_link(ns, &ifname), "{ifname} was not created");
        Daemon { ifname, pid, proc }
    }

    fn gone(&mut self) -> bool {
        match &mut self.proc {
            Some(p) => !p.running(),
            None => pid_gone(self.pid),
        }
    }

    /// Waits (bounded) for the daemon to exit, then checks that nothing of it is left: no
    /// process, no process in its namespace, no socket file, no interface.
    fn assert_exits_cleanly(&mut self, ns: &Netns, mode: Mode, after: &str) {
        let exited = wait_until(Duration::from_secs(10), || self.gone());
        assert!(exited, "{mode:?}: veil {} still running 10 s after {after}", self.ifname);
        assert!(pid_gone(self.pid), "{mode:?}: process {} left after {after}", self.pid);
        let pids = sh(&format!("ip netns pids {}", ns.name));
        assert!(pids.trim().is_empty(), "{mode:?}: processes left in {} after {after}: {pids}", ns.name);
        assert!(!Path::new(&sock(&self.ifname)).exists(), "{mode:?}: socket file left after {after}");
        assert!(!has_link(ns, &self.ifname), "{mode:?}: interface {} left after {after}", self.ifname);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Proc cleans up after itself; a daemonized one is killed if a test failed midway.
        if self.proc.is_none() && !pid_gone(self.pid) {
            let _ = sh_out(&format!("kill -9 {}", self.pid));
        }
    }
}

#[test]
fn daemon_exits_cleanly_when_its_interface_is_deleted() {
    if !require_root("daemon_exits_cleanly_when_its_interface_is_deleted") {
        return;
    }
    for mode in [Mode::Foreground, Mode::Daemonized] {
        let ns = Netns::new("lcd");
        let mut d = Daemon::start(&ns, mode);
        ns.sh(&format!("ip link del {}", d.ifname));
        d.assert_exits_cleanly(&ns, mode, "ip link del");
        // It says why in words, not as a raw errno ("Bad address (os error 14)" before).
        if let Some(mut e) = d.proc.as_mut().and_then(|p| p.child.stderr.take()) {
            use std::io::Read;
            let mut err = String::new();
            let _ = e.read_to_string(&mut err);
            assert!(err.contains("the TUN device was removed"), "{mode:?}: the log does not say so:\n{err}");
            assert!(!err.contains("os error"), "{mode:?}: a raw errno in the log:\n{err}");
        }
    }
}

/// `wg-quick down X && wg-quick up X`: the new daemon starts while the old one is on its way out
/// (its TUN deleted, its socket maybe still there). It must not take that one for a running
/// daemon.
#[test]
fn an_interface_can_be_created_again_right_after_ip_link_del() {
    if !require_root("an_interface_can_be_created_again_right_after_ip_link_del") {
        return;
    }
    let ns = Netns::new("lcr");
    let d = Daemon::start(&ns, Mode::Daemonized);
    let veil = veil_bin();
    for round in 0..10 {
        let out = ns.sh_out(&format!("sh -c 'ip link del {0} && {1} {0}'", d.ifname, veil.display()));
        assert!(
            out.status.success(),
            "round {round}: veil {} right after ip link del: {}",
            d.ifname,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(has_link(&ns, &d.ifname) && Path::new(&sock(&d.ifname)).exists(), "round {round}: up again");
    }
    ns.sh(&format!("ip link del {}", d.ifname));
    let gone = wait_until(Duration::from_secs(10), || !Path::new(&sock(&d.ifname)).exists());
    assert!(gone, "the last daemon removed its socket");
}

#[test]
fn daemon_exits_cleanly_on_sigterm() {
    if !require_root("daemon_exits_cleanly_on_sigterm") {
        return;
    }
    for mode in [Mode::Foreground, Mode::Daemonized] {
        let ns = Netns::new("lct");
        let mut d = Daemon::start(&ns, mode);
        sh(&format!("kill -TERM {}", d.pid));
        d.assert_exits_cleanly(&ns, mode, "SIGTERM");
    }
}

#[test]
fn daemon_exits_cleanly_when_its_socket_is_removed() {
    if !require_root("daemon_exits_cleanly_when_its_socket_is_removed") {
        return;
    }
    for mode in [Mode::Foreground, Mode::Daemonized] {
        let ns = Netns::new("lcs");
        let mut d = Daemon::start(&ns, mode);
        std::fs::remove_file(sock(&d.ifname)).unwrap();
        d.assert_exits_cleanly(&ns, mode, "removing the socket");
    }
}

#[test]
fn second_daemon_for_a_served_interface_fails_and_the_first_keeps_working() {
    if !require_root("second_daemon_for_a_served_interface_fails_and_the_first_keeps_working") {
        return;
    }
    // z: a third namespace, in no tunnel and on no link.
    let mut topology = pair_topology(PairSpec {
        tag: "sd",
        underlay: ["10.84.0.1/24", "10.84.0.2/24"],
        tunnel: [&["10.77.0.1/24"], &["10.77.0.2/24"]],
        dialer: Some("a"),
        ..PairSpec::default()
    });
    topology.nodes.push(plain_node("z"));
    let p = LabPair::up(&topology);
    let (na, nb, nz, a, b) = (&p.na, &p.nb, Netns::of(&p.lab, "z"), &p.a, &p.b);
    assert!(na.ping_until("10.77.0.2", Duration::from_secs(10)), "tunnel before the second start");

    // Same name in the same namespace (the TUN exists there), and in another namespace (only the
    // global socket path collides); both foreground and daemonized.
    for ns in [na, &nz] {
        for flag in ["-f ", ""] {
            let cmd = format!("timeout 10 {} {flag}{}", veil_bin().display(), a.ifname);
            let out = ns.sh_out(&cmd);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "in {}: `{cmd}` succeeded for a served interface", ns.name);
            assert_ne!(out.status.code(), Some(124), "in {}: `{cmd}` hung", ns.name);
            assert!(
                err.contains(&a.ifname) && ["already", "in use", "busy"].iter().any(|w| err.contains(w)),
                "in {}: `{cmd}` gave no clear message: {err:?}",
                ns.name
            );
            assert!(!has_link(&nz, &a.ifname), "a failed start left {} in the other namespace", a.ifname);
            let stray = sh(&format!("ip netns pids {}", nz.name));
            assert!(stray.trim().is_empty(), "a failed start left a process: {stray}");
        }
    }

    // The first daemon is untouched: running, its socket in place and answering, tunnel up.
    assert!(a.running(), "the first daemon exited");
    assert!(Path::new(&sock(&a.ifname)).exists(), "the first daemon's socket was removed");
    assert_eq!(sh(&format!("wg show {} peers", a.ifname)).trim(), b.keys.public);
    assert!(ping_all(na, "10.77.0.2", 3, 56), "a -> b after the failed starts");
    assert!(ping_all(nb, "10.77.0.1", 3, 56), "b -> a after the failed starts");
}

#[test]
fn daemon_exits_cleanly_when_the_namespace_its_tun_moved_to_is_deleted() {
    if !require_root("daemon_exits_cleanly_when_the_namespace_its_tun_moved_to_is_deleted") {
        return;
    }
    let nx = Netns::new("lcx");
    let ny = Netns::new("lcy");
    let mut d = Daemon::start(&nx, Mode::Foreground);
    nx.sh(&format!("ip link set {} netns {}", d.ifname, ny.name));
    assert!(has_link(&ny, &d.ifname), "the TUN did not arrive in Y");
    assert!(sh_out(&format!("wg show {}", d.ifname)).status.success(), "wg show after the move");
    // Deleting Y destroys the TUN in it; the daemon, in X, must notice and end.
    drop(ny);
    d.assert_exits_cleanly(&nx, Mode::Foreground, "deleting the namespace holding its TUN");
}

#[test]
fn repeated_listen_port_changes_leak_no_threads_and_never_panic() {
    if !require_root("repeated_listen_port_changes_leak_no_threads_and_never_panic") {
        return;
    }
    let p = lab_pair(PairSpec {
        tag: "lp",
        underlay: ["10.84.0.1/24", "10.84.0.2/24"],
        tunnel: [&["10.85.0.1/24"], &["10.85.0.2/24"]],
        dialer: Some("a"),
        ..PairSpec::default()
    });
    let (na, a, b) = (&p.na, &p.a, &p.b);
    let pid = a.pid;
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    a.listen(na, 40000);
    assert!(na.ping_until("10.85.0.2", Duration::from_secs(10)), "tunnel up");
    let settled = threads();
    // 40 rebinds: each replaces both UDP sockets and their reader threads.
    for i in 1..=40u16 {
        a.listen(na, 40000 + i);
    }
    // Old readers leave once they notice; give them a bounded moment.
    let bounded = wait_until(Duration::from_secs(5), || threads() <= settled);
    assert!(bounded, "threads grew from {settled} to {} over 40 listen-port changes", threads());
    assert!(na.ping("10.85.0.2", 3), "tunnel works from the last port");
    assert!(endpoints(&b.ifname).values().any(|e| e == "10.84.0.1:40040"), "b saw the new port");
    // Stop it and read everything it wrote: no thread may have panicked.
    assert!(a.terminate(Duration::from_secs(10)), "daemon stops on SIGTERM");
    let err = a.log_text();
    assert!(!err.contains("panicked"), "a thread panicked:\n{err}");
}
