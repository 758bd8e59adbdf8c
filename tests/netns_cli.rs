//! The command-line side of veil inside network namespaces: wg-quick with veil as its userspace
//! implementation, `veil up`/`veil down` with the configurations in examples/, the `wg` tool
//! against veil's UAPI socket (show, showconf/setconf, set, syncconf, raw UAPI semantics, a
//! 200,000-prefix get), and bad input of every kind (configs, hooks, UAPI lines, keys, names,
//! UDP garbage).
mod netns;

use netns::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use veil::control::config::Key32;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The text of a file in examples/.
fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An example adapted to a test: every `Endpoint = ...` line replaced by `endpoint` (if given),
/// and `extra` lines added at the end of the `[Interface]` section (before the first `[Peer]`).
fn adapt(text: &str, endpoint: Option<&str>, extra: &[String]) -> String {
    let mut out = String::new();
    let mut added = false;
    for line in text.lines() {
        if line.trim() == "[Peer]" && !added {
            for e in extra {
                out.push_str(e);
                out.push('\n');
            }
            out.push('\n');
            added = true;
        }
        match endpoint {
            Some(ep) if line.trim_start().starts_with("Endpoint") => out.push_str(&format!("Endpoint = {ep}\n")),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(added || extra.is_empty(), "no [Peer] section to put {extra:?} before");
    out
}

fn sock(ifname: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"))
}

fn link_exists(ns: &Netns, ifname: &str) -> bool {
    sh_out(&format!("ip -n {} link show dev {ifname}", ns.name)).status.success()
}

/// Pids of veil daemons in `ns` serving `ifname` (by their command line).
fn veil_daemons(ns: &Netns, ifname: &str) -> Vec<u32> {
    let pids = sh_out(&format!("ip netns pids {}", ns.name));
    String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> =
                cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            exe.file_name().is_some_and(|n| n == "veil" || n == "veil-daemon") && args.iter().any(|a| a == ifname)
        })
        .collect()
}

/// Asserts the interface, its socket and its daemon exist.
fn assert_running(ns: &Netns, ifname: &str) {
    assert!(link_exists(ns, ifname), "{ifname} should exist in {}", ns.name);
    assert!(sock(ifname).exists(), "{} should exist", sock(ifname).display());
    assert_eq!(veil_daemons(ns, ifname).len(), 1, "one veil daemon should serve {ifname}");
}

/// Asserts (after at most 10 s for the daemon to notice) that the interface, its socket and
/// its daemon are gone.
fn assert_gone(ns: &Netns, ifname: &str) {
    wait_until(Duration::from_secs(10), || {
        !link_exists(ns, ifname) && !sock(ifname).exists() && veil_daemons(ns, ifname).is_empty()
    });
    assert!(!link_exists(ns, ifname), "{ifname} still exists in {}", ns.name);
    assert!(!sock(ifname).exists(), "{} still exists", sock(ifname).display());
    assert_eq!(veil_daemons(ns, ifname), Vec::<u32>::new(), "a veil daemon for {ifname} is still running");
}

/// `ip -4 rule` and `ip -6 rule` in `ns`, together.
fn rules(ns: &Netns) -> String {
    ns.sh("ip -4 rule show") + &ns.sh("ip -6 rule show")
}

/// The rules a fresh namespace has: nothing but the three defaults per family.
fn assert_default_rules(ns: &Netns) {
    let r = rules(ns);
    assert!(!r.contains("fwmark"), "a fwmark rule is left:\n{r}");
    assert!(!r.contains("suppress_prefixlength"), "a suppress_prefixlength rule is left:\n{r}");
    assert!(!r.contains("51820"), "a rule for table 51820 is left:\n{r}");
}

fn mtu(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.sh(&format!("ip link show dev {ifname}"));
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "mtu").expect("mtu in ip link output");
    words[i + 1].parse().unwrap()
}

/// Runs `cmd` in `ns` and returns (success, stdout + stderr).
fn run_in(ns: &Netns, cmd: &str) -> (bool, String) {
    let out = ns.sh_out(cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn veil() -> String {
    veil_bin().display().to_string()
}

/// Whether wg-quick is installed; says so loudly when it is not.
fn have_wg_quick(test: &str) -> bool {
    if have("wg-quick") {
        return true;
    }
    eprintln!("\n!!!!! SKIPPED {test}: wg-quick is not installed !!!!!\n");
    false
}

/// wg-quick in `ns` with veil as the userspace implementation.
fn wg_quick(ns: &Netns, verb: &str, conf: &str) {
    let (ok, out) = run_in(ns, &format!("env WG_QUICK_USERSPACE_IMPLEMENTATION={} wg-quick {verb} {conf}", veil()));
    assert!(ok, "wg-quick {verb} {conf} failed:\n{out}");
}

fn veil_up(ns: &Netns, conf: &str) {
    let (ok, out) = run_in(ns, &format!("{} up {conf}", veil()));
    assert!(ok, "veil up {conf} failed:\n{out}");
}

fn veil_down(ns: &Netns, conf: &str) {
    let (ok, out) = run_in(ns, &format!("{} down {conf}", veil()));
    assert!(ok, "veil down {conf} failed:\n{out}");
}

/// An address on `ns`'s loopback: a network only reachable through the tunnel from the other
/// side.
fn lan(ns: &Netns, addr: &str) {
    ns.sh(&format!("ip addr add {addr} dev lo"));
}

/// One raw UAPI request; returns the whole answer.
fn uapi(ifname: &str, request: &str) -> String {
    uapi_bytes(ifname, request.as_bytes())
}

/// One raw UAPI request of any bytes, then the end of the stream; returns the whole answer.
fn uapi_bytes(ifname: &str, request: &[u8]) -> String {
    try_uapi(ifname, request).unwrap_or_else(|e| panic!("UAPI request to {ifname}: {e}"))
}

fn try_uapi(ifname: &str, request: &[u8]) -> std::io::Result<String> {
    let mut s = UnixStream::connect(sock(ifname))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    s.set_write_timeout(Some(Duration::from_secs(120)))?;
    s.write_all(request)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The errno of a UAPI answer.
fn errno(answer: &str) -> i32 {
    let line = answer.lines().rev().find(|l| l.starts_with("errno=")).unwrap_or_else(|| panic!("no errno: {answer}"));
    line["errno=".len()..].parse().unwrap()
}

fn set(ifname: &str, body: &str) -> i32 {
    errno(&uapi(ifname, &format!("set=1\n{body}\n")))
}

fn get(ifname: &str) -> String {
    let a = uapi(ifname, "get=1\n\n");
    assert_eq!(errno(&a), 0, "get failed: {a}");
    a
}

fn hex(b64: &str) -> String {
    Key32::from_base64(b64).unwrap_or_else(|| panic!("not a key: {b64}")).to_hex()
}

/// The values of `key` in the part of a get answer that belongs to the peer `pub_hex` (or to the
/// interface if `None`).
fn field(answer: &str, peer: Option<&str>, key: &str) -> Vec<String> {
    let mut current: Option<String> = None;
    let mut out = Vec::new();
    for line in answer.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        if k == "public_key" {
            current = Some(v.to_string());
            continue;
        }
        if k == key && current.as_deref() == peer {
            out.push(v.to_string());
        }
    }
    out
}

fn peers(answer: &str) -> Vec<String> {
    answer.lines().filter_map(|l| l.strip_prefix("public_key=")).map(str::to_string).collect()
}

/// The latest handshake of `peer` as (sec, nsec) from a raw get.
fn handshake(ifname: &str, peer_b64: &str) -> (u64, u32) {
    let a = get(ifname);
    let p = Some(hex(peer_b64));
    let sec = field(&a, p.as_deref(), "last_handshake_time_sec")[0].parse().unwrap();
    let nsec = field(&a, p.as_deref(), "last_handshake_time_nsec")[0].parse().unwrap();
    (sec, nsec)
}

/// Two lab nodes on veth (10.50.0.1 / 10.50.0.2, plus 10.50.0.3 on b), a veil daemon in each
/// (tunnel 10.9.0.1 / 10.9.0.2, ports 51820 / 51821), a knowing b's endpoint.
type Pair = LabPair;

fn pair() -> Pair {
    let p = lab_pair(PairSpec {
        tag: "cl",
        underlay: ["10.50.0.1/24", "10.50.0.2/24"],
        tunnel: [&["10.9.0.1/24"], &["10.9.0.2/24"]],
        dialer: Some("a"),
        ..PairSpec::default()
    });
    p.nb.sh(&format!("ip addr add 10.50.0.3/24 dev {}", p.veth_b));
    p
}

impl LabPair {
    /// Pings until the session is up, then checks that it carries traffic.
    fn established(&self) {
        assert!(self.na.ping_until("10.9.0.2", Duration::from_secs(15)), "a -> b through the tunnel");
        assert!(self.na.ping("10.9.0.2", 2), "a -> b again");
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

// ---------------------------------------------------------------------------------------------
// 1. wg-quick with veil
// ---------------------------------------------------------------------------------------------

#[test]
fn wg_quick_site_to_site_with_veil() {
    if !require_root("wg_quick_site_to_site_with_veil") || !have_wg_quick("wg_quick_site_to_site_with_veil") {
        return;
    }
    let l = lab_nodes("qa", ["10.50.0.1/24", "10.50.0.2/24"]);
    let (na, nb) = (&l.na, &l.nb);
    lan(nb, "10.200.2.1/24");
    let dir = TempDir::new("veil-cli-");
    let (ia, ib) = (unique("wqa"), unique("wqb"));
    let ca = dir.conf(&ia, &adapt(&example("site-a.conf"), Some("10.50.0.2:51820"), &[]));
    let cb = dir.conf(&ib, &adapt(&example("site-b.conf"), Some("10.50.0.1:51820"), &[]));
    wg_quick(na, "up", &ca);
    wg_quick(nb, "up", &cb);
    assert_running(na, &ia);
    assert_running(nb, &ib);
    assert!(na.ping_until("10.100.0.2", Duration::from_secs(15)), "a -> b tunnel address");
    assert!(na.ping("10.100.0.2", 3), "a -> b tunnel address");
    assert!(nb.ping("10.100.0.1", 3), "b -> a tunnel address");
    assert!(na.ping("fd00:100::2", 3), "a -> b tunnel address over IPv6");
    assert!(na.ping("10.200.2.1", 3), "a -> b's LAN through the tunnel");
    assert_eq!(mtu(na, &ia), 1380, "MTU from the config");
    wg_quick(na, "down", &ca);
    wg_quick(nb, "down", &cb);
    assert_gone(na, &ia);
    assert_gone(nb, &ib);
}

#[test]
fn wg_quick_full_tunnel_with_veil() {
    if !require_root("wg_quick_full_tunnel_with_veil") || !have_wg_quick("wg_quick_full_tunnel_with_veil") {
        return;
    }
    let l = lab_nodes("qfa", ["10.50.0.1/24", "10.50.0.2/24"]);
    let (na, nb) = (&l.na, &l.nb);
    // Only reachable from a through the tunnel: a has no route to it otherwise.
    lan(nb, "198.51.100.7/32");
    assert!(!na.ping("198.51.100.7", 1), "198.51.100.7 must not be reachable outside the tunnel");
    let dir = TempDir::new("veil-cli-");
    let (ic, is) = (unique("wqc"), unique("wqs"));
    let cc = dir.conf(&ic, &adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), &[]));
    let cs = dir.conf(&is, &example("full-tunnel-server.conf"));
    wg_quick(nb, "up", &cs);
    wg_quick(na, "up", &cc);
    assert_running(na, &ic);
    let r = rules(na);
    assert!(r.contains("not from all fwmark 0xca6c lookup 51820"), "wg-quick's fwmark rule:\n{r}");
    assert_eq!(na.sh(&format!("wg show {ic} fwmark")).trim(), "0xca6c", "veil took the fwmark");
    assert!(na.ping_until("10.101.0.1", Duration::from_secs(15)), "client -> server tunnel address");
    assert!(na.ping("10.101.0.1", 3), "client -> server tunnel address");
    assert!(na.ping("198.51.100.7", 3), "client -> an address only reachable through the tunnel");
    assert!(na.ping("fd00:101::1", 3), "client -> server tunnel address over IPv6");
    wg_quick(na, "down", &cc);
    wg_quick(nb, "down", &cs);
    assert_gone(na, &ic);
    assert_gone(nb, &is);
    assert_default_rules(na);
}

// ---------------------------------------------------------------------------------------------
// 2. veil up / veil down with the examples
// ---------------------------------------------------------------------------------------------

/// PreUp/PostUp/PreDown/PostDown hooks that touch `DIR/%i.HOOK`.
fn hook_lines(dir: &TempDir) -> Vec<String> {
    ["PreUp", "PostUp", "PreDown", "PostDown"]
        .iter()
        .map(|h| format!("{h} = touch {}/%i.{}", dir.path(), h.to_lowercase()))
        .collect()
}

fn hooks_ran(dir: &TempDir, ifname: &str) -> Vec<&'static str> {
    ["preup", "postup", "predown", "postdown"]
        .into_iter()
        .filter(|h| dir.file(&format!("{ifname}.{h}")).exists())
        .collect()
}

#[test]
fn veil_up_down_site_to_site_examples() {
    if !require_root("veil_up_down_site_to_site_examples") {
        return;
    }
    let l = lab_nodes("ua", ["10.50.0.1/24", "10.50.0.2/24"]);
    let (na, nb) = (&l.na, &l.nb);
    lan(nb, "10.200.2.1/24");
    lan(na, "10.200.1.1/24");
    let dir = TempDir::new("veil-cli-");
    let (ia, ib) = (unique("vua"), unique("vub"));
    let ca = dir.conf(&ia, &adapt(&example("site-a.conf"), Some("10.50.0.2:51820"), &hook_lines(&dir)));
    let cb = dir.conf(&ib, &adapt(&example("site-b.conf"), Some("10.50.0.1:51820"), &[]));
    veil_up(na, &ca);
    assert_eq!(hooks_ran(&dir, &ia), ["preup", "postup"], "after up: PreUp and PostUp ran, with %i = {ia}");
    veil_up(nb, &cb);
    assert_running(na, &ia);
    assert_running(nb, &ib);
    assert_eq!(mtu(na, &ia), 1380, "MTU from the config");
    let routes = na.sh(&format!("ip -4 route show dev {ia}"));
    // (10.100.0.2/32 has no route of its own: the address's 10.100.0.0/24 covers it.)
    for want in ["10.200.2.0/24", "10.100.0.0/24"] {
        assert!(routes.contains(want), "route {want} for {ia}:\n{routes}");
    }
    let route6 = na.sh("ip -6 route get fd00:100::2");
    assert!(route6.contains(&format!("dev {ia} ")), "IPv6 route for the allowed IP:\n{route6}");
    let addrs = na.sh(&format!("ip addr show dev {ia}"));
    assert!(addrs.contains("10.100.0.1/24") && addrs.contains("fd00:100::1/64"), "addresses:\n{addrs}");
    assert!(na.ping_until("10.100.0.2", Duration::from_secs(15)), "a -> b tunnel address");
    assert!(na.ping("10.100.0.2", 3), "a -> b");
    assert!(nb.ping("10.100.0.1", 3), "b -> a");
    assert!(na.ping("fd00:100::2", 3), "a -> b over IPv6");
    assert!(na.ping("10.200.2.1", 3), "a -> b's LAN");
    assert!(nb.ping("10.200.1.1", 3), "b -> a's LAN");
    veil_down(na, &ca);
    assert_eq!(hooks_ran(&dir, &ia), ["preup", "postup", "predown", "postdown"], "after down: all four hooks ran");
    veil_down(nb, &cb);
    assert_gone(na, &ia);
    assert_gone(nb, &ib);
    let left = na.sh("ip route show table all");
    assert!(!left.contains(&ia), "routes left for {ia}:\n{left}");
}

#[test]
fn veil_up_down_full_tunnel_examples() {
    if !require_root("veil_up_down_full_tunnel_examples") {
        return;
    }
    let l = lab_nodes("ufa", ["10.50.0.1/24", "10.50.0.2/24"]);
    let (na, nb) = (&l.na, &l.nb);
    lan(nb, "198.51.100.7/32");
    assert!(!na.ping("198.51.100.7", 1), "198.51.100.7 must not be reachable outside the tunnel");
    let dir = TempDir::new("veil-cli-");
    let (ic, is) = (unique("vuc"), unique("vus"));
    let cc = dir.conf(&ic, &adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), &hook_lines(&dir)));
    let cs = dir.conf(&is, &example("full-tunnel-server.conf"));
    veil_up(nb, &cs);
    veil_up(na, &cc);
    assert_running(na, &ic);
    assert_eq!(hooks_ran(&dir, &ic), ["preup", "postup"]);
    let r4 = na.sh("ip -4 rule show");
    let r6 = na.sh("ip -6 rule show");
    for r in [&r4, &r6] {
        assert!(r.contains("not from all fwmark 0xca6c lookup 51820"), "fwmark rule:\n{r}");
        assert!(r.contains("from all lookup main suppress_prefixlength 0"), "suppress rule:\n{r}");
    }
    let t4 = na.sh("ip -4 route show table 51820");
    assert!(t4.contains(&format!("default dev {ic}")), "default route in table 51820:\n{t4}");
    let t6 = na.sh("ip -6 route show table 51820");
    assert!(t6.contains(&format!("default dev {ic}")), "IPv6 default route in table 51820:\n{t6}");
    assert_eq!(na.sh(&format!("wg show {ic} fwmark")).trim(), "0xca6c", "the tunnel's own packets are marked");
    assert!(na.ping_until("10.101.0.1", Duration::from_secs(15)), "client -> server tunnel address");
    assert!(na.ping("10.101.0.1", 3), "client -> server");
    assert!(na.ping("198.51.100.7", 3), "client -> an address only reachable through the tunnel");
    assert!(na.ping("fd00:101::1", 3), "client -> server over IPv6");
    veil_down(na, &cc);
    assert_eq!(hooks_ran(&dir, &ic), ["preup", "postup", "predown", "postdown"]);
    veil_down(nb, &cs);
    assert_gone(na, &ic);
    assert_gone(nb, &is);
    assert_default_rules(na);
    assert_eq!(na.sh("ip -4 route show table 51820").trim(), "", "table 51820 is empty");
}

/// A directory of links to every program on the usual PATH but `nft`, so that wg-quick and veil
/// both fall back to iptables.
fn path_without_nft(dir: &TempDir) -> String {
    let farm = dir.file("no-nft");
    std::fs::create_dir_all(&farm).unwrap();
    for bin in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        for entry in std::fs::read_dir(bin).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != "nft" && !farm.join(&name).exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), farm.join(&name));
            }
        }
    }
    farm.to_str().unwrap().to_string()
}

/// The state a full tunnel leaves in a namespace: rules, the tables' routes, firewall rules
/// (nftables ruleset and iptables-save without comments or counters), with interface names
/// replaced by placeholders.
fn full_tunnel_state(ns: &Netns, names: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for cmd in ["ip -4 rule show", "ip -6 rule show", "ip -4 route show table all type unicast", "nft list ruleset"] {
        text += &format!("## {cmd}\n{}", ns.sh_out(cmd).stdout.iter().map(|&b| b as char).collect::<String>());
    }
    for cmd in ["iptables-save", "ip6tables-save"] {
        let out = String::from_utf8_lossy(&ns.sh_out(cmd).stdout).into_owned();
        let kept: Vec<&str> = out.lines().filter(|l| !l.starts_with('#') && !l.starts_with(':')).collect();
        text += &format!("## {cmd}\n{}\n", kept.join("\n"));
    }
    for (name, placeholder) in names {
        text = text.replace(name, placeholder);
    }
    // The kernel gives each TUN a random link-local address.
    text.split(' ').map(|w| if w.starts_with("fe80::") { "fe80::(random)" } else { w }).collect::<Vec<_>>().join(" ")
}

#[test]
fn two_full_tunnels_get_their_own_tables_and_firewall_rules_as_with_wg_quick() {
    if !require_root("two_full_tunnels_get_their_own_tables_and_firewall_rules_as_with_wg_quick")
        || !have_wg_quick("two_full_tunnels_get_their_own_tables_and_firewall_rules_as_with_wg_quick")
    {
        return;
    }
    let conf = |n: u8| {
        format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.12{n}.0.1/24, fd00:12{n}::1/64\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 192.0.2.1:51820\n",
            keys().private,
            keys().public
        )
    };
    let texts = [conf(0), conf(1)];
    // With nft, and with iptables only (wg-quick's fallback).
    for mode in ["nft", "iptables"] {
        let dir = TempDir::new("veil-cli-");
        let path = if mode == "nft" { "$PATH".to_string() } else { path_without_nft(&dir) };
        let mut states = Vec::new();
        let mut veil_side = None;
        for tool in ["wg-quick", "veil"] {
            let ns = Netns::new("clft");
            let names = [unique("cft"), unique("cft")];
            let confs: Vec<String> = names.iter().zip(&texts).map(|(n, t)| dir.conf(n, t)).collect();
            let run = |verb: &str, conf: &str| {
                let cmd = match tool {
                    "veil" => format!("env PATH={path} {} {verb} {conf}", veil()),
                    _ => format!("env PATH={path} WG_QUICK_USERSPACE_IMPLEMENTATION={} wg-quick {verb} {conf}", veil()),
                };
                let (ok, out) = run_in(&ns, &cmd);
                assert!(ok, "{mode}: {tool} {verb} {conf} failed:\n{out}");
            };
            run("up", &confs[0]);
            run("up", &confs[1]);
            for (name, table) in names.iter().zip(["0xca6c", "0xca6d"]) {
                assert_eq!(ns.sh(&format!("wg show {name} fwmark")).trim(), table, "{mode}: {tool}: fwmark of {name}");
            }
            states.push(full_tunnel_state(&ns, &[(&names[0], "IF0"), (&names[1], "IF1")]));
            if tool == "wg-quick" {
                run("down", &confs[1]);
                run("down", &confs[0]);
                assert_nothing_left(&ns, &names[0]);
            } else {
                veil_side = Some((ns, names, confs));
            }
        }
        assert_eq!(states[1], states[0], "{mode}: veil up leaves what wg-quick up leaves");
        assert!(
            states[1].contains("lookup 51821")
                && states[1].contains("wg-quick(8) rule for IF1") == (mode == "iptables")
        );

        let (ns, names, confs) = veil_side.unwrap();
        // A third whose FwMark is the first's table: its route cannot go in, up fails, and its
        // rollback must not touch the rules of the tunnel that owns the table.
        let before = full_tunnel_state(&ns, &[]);
        let clash = unique("cft");
        let clash_conf = dir.conf(&clash, &texts[0].replace("[Interface]\n", "[Interface]\nFwMark = 51820\n"));
        let (ok, out) = run_in(&ns, &format!("env PATH={path} {} up {clash_conf}", veil()));
        assert!(!ok, "{mode}: a /0 in a table in use fails:\n{out}");
        assert_eq!(full_tunnel_state(&ns, &[]), before, "{mode}: the failed up left the other tunnels alone");
        assert!(!link_exists(&ns, &clash));

        // Down of the first keeps the second's rules whole, with its own suppress rule: the one
        // right in front of its `not fwmark` rule (the LAN must still bypass the second tunnel).
        let (ok, out) = run_in(&ns, &format!("env PATH={path} {} down {}", veil(), confs[0]));
        assert!(ok, "{mode}: veil down {}:\n{out}", confs[0]);
        let state = full_tunnel_state(&ns, &[(&names[0], "IF0"), (&names[1], "IF1")]);
        assert!(!state.contains("lookup 51820") && !state.contains("IF0"), "{mode}: IF0's rules are gone:\n{state}");
        for family in ["-4", "-6"] {
            let r = ns.sh(&format!("ip {family} rule show"));
            let pref = |want: &str| -> Vec<u32> {
                r.lines().filter(|l| l.contains(want)).filter_map(|l| l.split(':').next()?.parse().ok()).collect()
            };
            let (tunnel, suppress) = (pref("not from all fwmark 0xca6d lookup 51821"), pref("suppress_prefixlength 0"));
            assert_eq!(tunnel.len(), 1, "{mode}: IF1's rule stays:\n{r}");
            assert_eq!(suppress, [tunnel[0] - 1], "{mode}: IF1's suppress rule stays, right in front of it:\n{r}");
        }
        // The second's file loses its /0 before down: down still removes what up set, since it
        // follows the live interface.
        std::fs::write(&confs[1], texts[1].replace("0.0.0.0/0, ::/0", "10.99.0.0/16")).unwrap();
        let (ok, out) = run_in(&ns, &format!("env PATH={path} {} down {}", veil(), confs[1]));
        assert!(ok, "{mode}: veil down {}:\n{out}", confs[1]);
        assert_nothing_left(&ns, &names[1]);
        let left = full_tunnel_state(&ns, &[]);
        assert!(!left.contains("wg-quick"), "{mode}: firewall rules left:\n{left}");
    }
}

#[test]
fn veil_up_with_a_link_local_endpoint_and_its_zone_by_name() {
    if !require_root("veil_up_with_a_link_local_endpoint_and_its_zone_by_name") {
        return;
    }
    let l = lab_nodes("clla", ["fe80::a/64", "fe80::b/64"]);
    let (na, nb) = (&l.na, &l.nb);
    let veth_a = &l.veth_a;
    let b = endpoint(nb, Impl::Veil, &["10.9.0.2/24"], "");
    b.listen(nb, 51821);
    let a = keys();
    nb.sh(&format!("wg set {} peer {} allowed-ips 10.9.0.1/32", b.ifname, a.public));
    let dir = TempDir::new("veil-cli-");
    let ifname = unique("cll");
    let conf = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.9.0.1/24\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = 10.9.0.2/32\nEndpoint = [fe80::b%{veth_a}]:51821\n",
            a.private, b.keys.public
        ),
    );
    veil_up(na, &conf);
    assert!(na.ping_until("10.9.0.2", Duration::from_secs(10)), "through the tunnel over link-local addresses");
    veil_down(na, &conf);
}

#[test]
fn full_tunnels_brought_up_at_once_get_distinct_tables() {
    if !require_root("full_tunnels_brought_up_at_once_get_distinct_tables") {
        return;
    }
    let ns = Netns::new("clfc");
    let dir = TempDir::new("veil-cli-");
    let names: Vec<String> = (0..3).map(|_| unique("cfc")).collect();
    let confs: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let text = format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.13{n}.0.1/24\n\n[Peer]\nPublicKey = {}\n\
                 AllowedIPs = 0.0.0.0/0, ::/0\n",
                keys().private,
                keys().public
            );
            dir.conf(name, &text)
        })
        .collect();
    let started: Vec<_> = confs
        .iter()
        .map(|c| {
            Command::new("ip")
                .args(["netns", "exec", &ns.name, &veil(), "up", c])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, conf) in started.into_iter().zip(&confs) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "veil up {conf}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut marks: Vec<String> =
        names.iter().map(|n| ns.sh(&format!("wg show {n} fwmark")).trim().to_string()).collect();
    marks.sort();
    assert_eq!(marks, ["0xca6c", "0xca6d", "0xca6e"], "three tables");
    for family in ["-4", "-6"] {
        let r = ns.sh(&format!("ip {family} rule show"));
        assert_eq!(r.matches("not from all fwmark").count(), 3, "{r}");
        assert_eq!(r.matches("suppress_prefixlength 0").count(), 3, "{r}");
    }
    for (conf, name) in confs.iter().zip(&names) {
        veil_down(&ns, conf);
        assert_gone(&ns, name);
    }
    assert_nothing_left(&ns, &names[0]);
}

#[test]
fn veil_up_does_not_take_over_routes_of_other_interfaces() {
    if !require_root("veil_up_does_not_take_over_routes_of_other_interfaces") {
        return;
    }
    let l = lab_nodes("clto", ["10.51.0.1/24", "10.51.0.2/24"]);
    let na = &l.na;
    let veth = &l.veth_a;
    na.sh("ip route add default via 10.51.0.2");
    let dir = TempDir::new("veil-cli-");
    let routes_before = na.sh("ip -4 route show table all");
    // An allowed IP that is the veth's subnet, and a /0 into the main table, which has a
    // default route: wg-quick's `ip route add` fails on both, and so must veil up, rather than
    // replace the routes (they would be gone after down).
    for (what, allowed, extra) in
        [("the veth's subnet", "10.51.0.0/24", ""), ("a default route in table main", "0.0.0.0/0", "Table = main\n")]
    {
        let name = unique("cto");
        let conf = dir.conf(
            &name,
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = 10.140.0.1/24\n{extra}\n[Peer]\nPublicKey = {}\nAllowedIPs = {allowed}\n",
                keys().private,
                keys().public
            ),
        );
        let (ok, out) = run_in(na, &format!("{} up {conf}", veil()));
        assert!(!ok, "{what}: veil up must fail:\n{out}");
        assert_nothing_left(na, &name);
        assert_eq!(na.sh("ip -4 route show table all"), routes_before, "{what}: the routes of {veth} are untouched");
    }
}

#[test]
fn a_signal_during_veil_up_undoes_everything() {
    if !require_root("a_signal_during_veil_up_undoes_everything") {
        return;
    }
    let ns = Netns::new("clsg");
    let dir = TempDir::new("veil-cli-");
    for signal in ["TERM", "INT", "HUP"] {
        let name = unique("csg");
        // The PostUp hook signals veil up itself (its parent) once the full tunnel is in place.
        let conf = full_tunnel_conf(&dir, &name, &format!("kill -{signal} $PPID"));
        let (ok, out) = run_in(&ns, &format!("{} up {conf}", veil()));
        assert!(!ok && out.contains("interrupted"), "SIG{signal}: veil up must fail:\n{out}");
        assert_nothing_left(&ns, &name);
        assert!(!ns.sh("nft list ruleset").contains(&name), "SIG{signal}: firewall rules left");
    }
}

/// A /0 config with a PostUp hook.
fn full_tunnel_conf(dir: &TempDir, name: &str, post_up: &str) -> String {
    dir.conf(
        name,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.142.0.1/24\nPostUp = {post_up}\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = 0.0.0.0/0, ::/0\n",
            keys().private,
            keys().public
        ),
    )
}

#[test]
fn veil_up_works_and_undoes_its_work_with_stderr_gone() {
    if !require_root("veil_up_works_and_undoes_its_work_with_stderr_gone") {
        return;
    }
    // Standard output and error are a pipe nobody reads (a hung-up terminal, `| head -1`):
    // every write fails, and veil up must neither crash nor stop halfway.
    let ns = Netns::new("clse");
    let dir = TempDir::new("veil-cli-");
    let up_with_stderr_gone = |conf: &str| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Command::new("ip")
            .args(["netns", "exec", &ns.name, &veil(), "up", conf])
            .stdin(Stdio::null())
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap()
    };
    let good = unique("cse");
    let conf = full_tunnel_conf(&dir, &good, "true");
    let status = up_with_stderr_gone(&conf);
    assert!(status.success(), "veil up with stderr gone: {status:?}");
    assert_running(&ns, &good);
    assert!(ns.sh("ip -4 rule show").contains("lookup 51820"), "the full tunnel is in place");
    veil_down(&ns, &conf);
    assert_nothing_left(&ns, &good);

    let bad = unique("cse");
    let status = up_with_stderr_gone(&full_tunnel_conf(&dir, &bad, "false"));
    assert_eq!(status.code(), Some(1), "a failing PostUp: exit 1, not a crash");
    assert_nothing_left(&ns, &bad);
}

#[test]
fn a_veil_up_waiting_for_the_routing_lock_can_be_interrupted() {
    if !require_root("a_veil_up_waiting_for_the_routing_lock_can_be_interrupted") {
        return;
    }
    let ns = Netns::new("clwl");
    let dir = TempDir::new("veil-cli-");
    let name = unique("cwl");
    let conf = full_tunnel_conf(&dir, &name, "true");
    // Hold the lock as another veil up would, then send SIGTERM to the waiting one.
    std::fs::create_dir_all("/var/run/wireguard").unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/var/run/wireguard/.veil-policy-routing.lock")
        .unwrap();
    lock.lock().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, &veil(), "up", &conf])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until the interface is up and veil up waits for the lock.
    let waiting = wait_until(Duration::from_secs(10), || ns.sh("ip -4 route show").contains(&name));
    std::thread::sleep(Duration::from_millis(200));
    sh(&format!("kill -TERM {}", child.id()));
    let exited = wait_until(Duration::from_secs(10), || !matches!(child.try_wait(), Ok(None)));
    drop(lock);
    assert!(waiting, "veil up got as far as the routes");
    assert!(exited, "veil up still waits for the lock after SIGTERM");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("interrupted"), "veil up: {:?}\n{err}", out.status);
    assert_nothing_left(&ns, &name);
}

#[test]
fn veil_down_refuses_an_interface_that_is_not_wireguard() {
    if !require_root("veil_down_refuses_an_interface_that_is_not_wireguard") {
        return;
    }
    let ns = Netns::new("clnw");
    let dir = TempDir::new("veil-cli-");
    let name = unique("cnw");
    ns.sh(&format!("ip link add {name} type veth peer name {name}p"));
    let conf = dir.conf(&name, &format!("[Interface]\nPrivateKey = {}\n", keys().private));
    let (ok, out) = run_in(&ns, &format!("{} down {conf}", veil()));
    assert!(!ok && out.contains("is not a WireGuard interface"), "veil down on a veth:\n{out}");
    assert!(link_exists(&ns, &name), "the veth is still there");
}

#[test]
fn veil_up_configures_like_wg_quick() {
    if !require_root("veil_up_configures_like_wg_quick") || !have_wg_quick("veil_up_configures_like_wg_quick") {
        return;
    }
    // wg-quick's syntax quirks: any case, comments after values, repeated list keys.
    let (a, b, c) = (keys(), keys(), keys());
    let text = format!(
        "[interface]\nprivatekey = {}   # a comment\nLISTENPORT=51820\naddress = 10.100.0.1/24\n\
         Address = fd00:100::1/64, 10.111.0.1/32\nmtu = 1400\n\n[peer]\npublickey = {}\n\
         allowedips = 10.100.0.2/32\nAllowedIPs = 10.200.2.0/24, fd00:100::2/128\n\
         endpoint = 10.50.0.2:51820\npersistentkeepalive = 25\n\n[Peer]\nPublicKey = {}\n\
         AllowedIPs = 10.90.0.0/16 # another\n",
        a.private, b.public, c.public
    );
    let dir = TempDir::new("veil-cli-");
    let (nq, nv) = (Netns::new("clwq"), Netns::new("clwv"));
    let (iq, iv) = (unique("cwq"), unique("cwv"));
    let (cq, cv) = (dir.conf(&iq, &text), dir.conf(&iv, &text));
    wg_quick(&nq, "up", &cq);
    veil_up(&nv, &cv);
    assert_running(&nq, &iq);
    assert_running(&nv, &iv);
    let conf_q = nq.sh(&format!("wg showconf {iq}"));
    let conf_v = nv.sh(&format!("wg showconf {iv}"));
    assert_eq!(conf_v, conf_q, "the same device configuration");
    let addrs = |ns: &Netns, i: &str| -> Vec<String> {
        let mut v: Vec<String> = ns
            .sh(&format!("ip -o addr show dev {i} scope global"))
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| !w.starts_with("inet")).nth(1).map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(addrs(&nv, &iv), addrs(&nq, &iq), "the same addresses");
    assert_eq!(addrs(&nv, &iv), ["10.100.0.1/24", "10.111.0.1/32", "fd00:100::1/64"]);
    assert_eq!(mtu(&nv, &iv), mtu(&nq, &iq), "the same MTU");
    for net in ["10.100.0.2/32", "10.200.2.0/24", "fd00:100::2/128", "10.90.0.0/16"] {
        let f = if net.contains(':') { "-6" } else { "-4" };
        for (ns, i) in [(&nq, &iq), (&nv, &iv)] {
            let r = ns.sh(&format!("ip {f} route show dev {i} match {net}"));
            assert!(!r.trim().is_empty(), "{net} is routed to {i} ({})", ns.name);
        }
    }
    // The same IPv4 routes, no more: an allowed IP already covered by a route of the interface
    // (10.100.0.2/32 by the address's 10.100.0.0/24) gets none of its own. (Not compared for
    // IPv6: the kernel adds an IPv6 address's prefix route only some time after the link is up,
    // so whether it covers an allowed IP yet is a race, for wg-quick too.)
    let routes = |ns: &Netns, i: &str| -> Vec<String> {
        let mut v: Vec<String> = ns.sh(&format!("ip -4 route show dev {i}")).lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(routes(&nv, &iv), routes(&nq, &iq), "the same routes");
    assert!(!routes(&nv, &iv).iter().any(|r| r.starts_with("10.100.0.2")), "{:?}", routes(&nv, &iv));
    wg_quick(&nq, "down", &cq);
    veil_down(&nv, &cv);
    assert_gone(&nq, &iq);
    assert_gone(&nv, &iv);
}

/// A stand-in for resolvconf in `dir`: logs its arguments and input to `dir/resolvconf.log`,
/// then exits with `status`. Returns the directory to put first on PATH.
fn fake_resolvconf(dir: &TempDir, status: i32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.file("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.file("resolvconf.log");
    let script = format!("#!/bin/sh\necho \"resolvconf $*\" >> {0}\ncat >> {0}\nexit {status}\n", log.display());
    let path = bin.join("resolvconf");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin.to_str().unwrap().to_string()
}

#[test]
fn veil_up_sets_dns_through_resolvconf_as_wg_quick_does() {
    if !require_root("veil_up_sets_dns_through_resolvconf_as_wg_quick_does")
        || !have_wg_quick("veil_up_sets_dns_through_resolvconf_as_wg_quick_does")
    {
        return;
    }
    let (a, b) = (keys(), keys());
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.101.0.1/24\nDNS = 10.101.0.53, fd00:101::53, corp.example\n\
         DNS = lab.example\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.101.0.2/32\n",
        a.private, b.public
    );
    // The same config through wg-quick and through veil up, each with the stand-in first on
    // PATH: both must hand resolvconf the same commands and the same input.
    let mut logs = Vec::new();
    for tool in ["wg-quick", "veil"] {
        let (ns, dir, ifname) = (Netns::new("cldns"), TempDir::new("veil-cli-"), unique("cdn"));
        let conf = dir.conf(&ifname, &text);
        let path = fake_resolvconf(&dir, 0);
        let run = |verb: &str| {
            let cmd = match tool {
                "veil" => format!("env PATH={path}:$PATH {} {verb} {conf}", veil()),
                _ => {
                    format!("env PATH={path}:$PATH WG_QUICK_USERSPACE_IMPLEMENTATION={} wg-quick {verb} {conf}", veil())
                }
            };
            let (ok, out) = run_in(&ns, &cmd);
            assert!(ok, "{tool} {verb} failed:\n{out}");
        };
        run("up");
        assert_running(&ns, &ifname);
        run("down");
        assert_gone(&ns, &ifname);
        let log = std::fs::read_to_string(dir.file("resolvconf.log")).unwrap_or_default();
        logs.push(log.replace(&ifname, "IFNAME"));
    }
    assert_eq!(logs[1], logs[0], "veil up/down and wg-quick up/down call resolvconf alike");
    assert_eq!(
        logs[1],
        "resolvconf -a IFNAME -m 0 -x\nnameserver 10.101.0.53\nnameserver fd00:101::53\nsearch corp.example lab.example\n\
         resolvconf -d IFNAME -f\n"
    );

    // Where resolvconf fails, veil up fails and leaves nothing behind.
    let (ns, dir, ifname) = (Netns::new("cldnf"), TempDir::new("veil-cli-"), unique("cdf"));
    let conf = dir.conf(&ifname, &text);
    let path = fake_resolvconf(&dir, 1);
    let (ok, out) = run_in(&ns, &format!("env PATH={path}:$PATH {} up {conf}", veil()));
    assert!(!ok && out.contains("DNS= needs resolvconf"), "veil up with a failing resolvconf:\n{out}");
    assert_nothing_left(&ns, &ifname);
}

#[test]
fn veil_up_picks_the_mtu_as_wg_quick_does() {
    if !require_root("veil_up_picks_the_mtu_as_wg_quick_does")
        || !have_wg_quick("veil_up_picks_the_mtu_as_wg_quick_does")
    {
        return;
    }
    let l = lab_nodes("clx", ["10.50.0.1/24", "10.50.0.2/24"]);
    let na = &l.na;
    let va = &l.veth_a;
    na.sh(&format!("ip link set dev {va} mtu 1400"));
    na.sh("ip route add default via 10.50.0.2");
    na.sh("ip route add 10.88.0.0/24 via 10.50.0.2 mtu 1300");
    let dir = TempDir::new("veil-cli-");
    let peer = keys();
    // No MTU given: with an endpoint, the MTU of the route to it (its own, else its device's);
    // without, the default route's. Minus 80.
    for (endpoint, want) in [("Endpoint = 10.50.0.2:51820\n", 1320), ("Endpoint = 10.88.0.5:51820\n", 1220), ("", 1320)]
    {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.100.0.1/24\n\n[Peer]\nPublicKey = {}\n{endpoint}\
             AllowedIPs = 10.100.0.2/32\n",
            keys().private,
            peer.public
        );
        let (iq, iv) = (unique("cmq"), unique("cmv"));
        let (cq, cv) = (dir.conf(&iq, &text), dir.conf(&iv, &text));
        wg_quick(na, "up", &cq);
        veil_up(na, &cv);
        assert_eq!(mtu(na, &iq), want, "wg-quick's choice ({endpoint:?})");
        assert_eq!(mtu(na, &iv), want, "veil up's choice ({endpoint:?})");
        wg_quick(na, "down", &cq);
        veil_down(na, &cv);
        assert_gone(na, &iq);
        assert_gone(na, &iv);
    }
}

#[test]
fn veil_down_saves_the_config_with_save_config() {
    if !require_root("veil_down_saves_the_config_with_save_config") {
        return;
    }
    let ns = Netns::new("cls");
    let dir = TempDir::new("veil-cli-");
    let i = unique("vsc");
    let hooks = ["SaveConfig = true".to_string(), format!("PostUp = touch {}/%i.postup", dir.path())];
    let c = dir.conf(&i, &adapt(&example("site-a.conf"), Some("10.50.0.2:51820"), &hooks));
    veil_up(&ns, &c);
    // Live changes that `veil down` must write back.
    let extra = keys();
    let pf = TempFile::new(&psk());
    ns.sh(&format!(
        "wg set {i} listen-port 41000 peer {} allowed-ips 10.66.0.0/16 preshared-key {}",
        extra.public,
        pf.path()
    ));
    ns.sh(&format!("ip addr add 10.100.9.1/24 dev {i}"));
    let before = ns.sh(&format!("wg showconf {i}"));
    veil_down(&ns, &c);
    assert_gone(&ns, &i);
    let saved = std::fs::read_to_string(&c).unwrap();
    assert!(saved.contains(&extra.public), "the new peer is saved:\n{saved}");
    assert!(saved.contains("ListenPort = 41000"), "the new port is saved:\n{saved}");
    assert!(saved.contains("10.100.9.1/24"), "the new address is saved:\n{saved}");
    assert!(saved.contains("MTU = 1380") && saved.contains("SaveConfig = true"), "{saved}");
    assert!(saved.contains(&format!("PostUp = touch {}/%i.postup", dir.path())), "hooks kept:\n{saved}");
    // And it comes back up as it went down.
    veil_up(&ns, &c);
    assert_eq!(ns.sh(&format!("wg showconf {i}")), before, "the saved config restores the device");
    veil_down(&ns, &c);
    assert_gone(&ns, &i);
}

/// A config for the routing options: the client example with `lines` added to [Interface]
/// and AllowedIPs replaced by `allowed`.
fn routing_conf(lines: &[String], allowed: &str) -> String {
    adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), lines)
        .lines()
        .map(|l| if l.starts_with("AllowedIPs") { format!("AllowedIPs = {allowed}\n") } else { format!("{l}\n") })
        .collect()
}

#[test]
fn veil_up_table_and_fwmark_options() {
    if !require_root("veil_up_table_and_fwmark_options") {
        return;
    }
    let ns = Netns::new("clt");
    let dir = TempDir::new("veil-cli-");

    // Table = off: addresses, but no routes for the allowed IPs and no rules.
    let i = unique("vto");
    let c = dir.conf(&i, &routing_conf(&["Table = off".into()], "10.80.0.0/24, 0.0.0.0/0"));
    veil_up(&ns, &c);
    assert_running(&ns, &i);
    let routes = ns.sh("ip -4 route show table all");
    assert!(!routes.contains("10.80.0.0/24") && !routes.contains("table 51820"), "Table = off:\n{routes}");
    assert_default_rules(&ns);
    veil_down(&ns, &c);
    assert_nothing_left(&ns, &i);

    // Table = 1234: every allowed IP, /0 included, goes to that table; no policy rules.
    let i = unique("vtt");
    let c = dir.conf(&i, &routing_conf(&["Table = 1234".into()], "10.80.0.0/24, 0.0.0.0/0"));
    veil_up(&ns, &c);
    assert_running(&ns, &i);
    let t = ns.sh("ip -4 route show table 1234");
    assert!(t.contains(&format!("10.80.0.0/24 dev {i}")) && t.contains(&format!("default dev {i}")), "{t}");
    assert!(!ns.sh("ip -4 route show").contains("10.80.0.0/24"), "not in the main table");
    assert_default_rules(&ns);
    // A second `veil up` of a running interface fails and leaves the first alone.
    let (ok, out) = run_in(&ns, &format!("{} up {c}", veil()));
    assert!(!ok && out.contains("already exists"), "second veil up: {out}");
    assert_running(&ns, &i);
    veil_down(&ns, &c);
    assert_nothing_left(&ns, &i);

    // FwMark = 0x1234 with a /0: the mark is also the table, as with wg-quick.
    let i = unique("vtf");
    let c = dir.conf(&i, &routing_conf(&["FwMark = 0x1234".into()], "0.0.0.0/0"));
    veil_up(&ns, &c);
    assert_running(&ns, &i);
    assert_eq!(ns.sh(&format!("wg show {i} fwmark")).trim(), "0x1234");
    let r = ns.sh("ip -4 rule show");
    assert!(r.contains("not from all fwmark 0x1234 lookup 4660"), "{r}");
    assert!(ns.sh("ip -4 route show table 4660").contains(&format!("default dev {i}")));
    veil_down(&ns, &c);
    assert_nothing_left(&ns, &i);
    let r = ns.sh("ip -4 rule show");
    assert!(!r.contains("4660"), "rules left:\n{r}");
}

// ---------------------------------------------------------------------------------------------
// 3. wg against veil
// ---------------------------------------------------------------------------------------------

#[test]
fn wg_show_all_fields_and_dump() {
    if !require_root("wg_show_all_fields_and_dump") {
        return;
    }
    let p = pair();
    let psk = psk();
    let pf = TempFile::new(&psk);
    p.na.sh(&format!(
        "wg set {} fwmark 0x1234 peer {} preshared-key {} persistent-keepalive 25 allowed-ips 10.9.0.2/32,10.60.0.0/16,fd09::/64",
        p.a.ifname,
        p.b.keys.public,
        pf.path()
    ));
    p.nb.sh(&format!("wg set {} peer {} preshared-key {}", p.b.ifname, p.a.keys.public, pf.path()));
    p.established();

    let text = p.na.sh(&format!("wg show {}", p.a.ifname));
    for want in [
        format!("interface: {}", p.a.ifname),
        format!("public key: {}", p.a.keys.public),
        "private key: (hidden)".to_string(),
        "listening port: 51820".to_string(),
        "fwmark: 0x1234".to_string(),
        format!("peer: {}", p.b.keys.public),
        "preshared key: (hidden)".to_string(),
        "endpoint: 10.50.0.2:51821".to_string(),
        "latest handshake: ".to_string(),
        "transfer: ".to_string(),
        "persistent keepalive: every 25 seconds".to_string(),
    ] {
        assert!(text.contains(&want), "`wg show` lacks {want:?}:\n{text}");
    }
    let allowed = text.lines().find(|l| l.trim_start().starts_with("allowed ips:")).expect("allowed ips line");
    for net in ["10.9.0.2/32", "10.60.0.0/16", "fd09::/64"] {
        assert!(allowed.contains(net), "allowed ips lack {net}: {allowed}");
    }

    let dump = p.na.sh(&format!("wg show {} dump", p.a.ifname));
    let lines: Vec<Vec<&str>> = dump.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "interface line and one peer line:\n{dump}");
    assert_eq!(lines[0], [p.a.keys.private.as_str(), &p.a.keys.public, "51820", "0x1234"], "interface line");
    let peer = &lines[1];
    assert_eq!(peer.len(), 8, "peer line fields: {peer:?}");
    assert_eq!(peer[0], p.b.keys.public);
    assert_eq!(peer[1], psk);
    assert_eq!(peer[2], "10.50.0.2:51821");
    let mut nets: Vec<&str> = peer[3].split(',').collect();
    nets.sort();
    assert_eq!(nets, ["10.60.0.0/16", "10.9.0.2/32", "fd09::/64"]);
    let hs: u64 = peer[4].parse().unwrap();
    let now = now_secs();
    assert!(hs > 0 && hs <= now + 5 && now - hs < 300, "latest handshake {hs} is a Unix time close to now {now}");
    let (rx, tx): (u64, u64) = (peer[5].parse().unwrap(), peer[6].parse().unwrap());
    assert!(rx > 0 && tx > 0, "transfer counted: rx {rx} tx {tx}");
    assert_eq!(peer[7], "25");

    // The raw UAPI: an epoch timestamp close to now, and the private key on get=1.
    let a = get(&p.a.ifname);
    assert_eq!(field(&a, None, "private_key"), [hex(&p.a.keys.private)], "get=1 returns the private key");
    let (sec, _) = handshake(&p.a.ifname, &p.b.keys.public);
    assert!(sec <= now + 5 && now - sec < 300, "last_handshake_time_sec {sec} is a Unix time close to {now}");
}

#[test]
fn wg_showconf_round_trips_through_setconf() {
    if !require_root("wg_showconf_round_trips_through_setconf") {
        return;
    }
    let p = pair();
    let extra = keys();
    let pf = TempFile::new(&psk());
    p.na.sh(&format!(
        "wg set {} fwmark 77 peer {} preshared-key {} persistent-keepalive 15 allowed-ips 10.9.0.2/32,10.61.0.0/16,fd09::2/128",
        p.a.ifname,
        p.b.keys.public,
        pf.path()
    ));
    p.nb.sh(&format!("wg set {} peer {} preshared-key {}", p.b.ifname, p.a.keys.public, pf.path()));
    p.na.sh(&format!(
        "wg set {} peer {} endpoint [fd00::9]:4000 allowed-ips 10.62.0.0/24,10.62.1.0/24",
        p.a.ifname, extra.public
    ));
    p.established();
    let conf = p.na.sh(&format!("wg showconf {}", p.a.ifname));
    assert!(conf.contains("PrivateKey") && conf.contains("PresharedKey") && conf.contains("FwMark"), "{conf}");
    // A second veil interface in a namespace of its own (the listen port is part of the config).
    let nc = Netns::new("clc");
    let c = endpoint(&nc, Impl::Veil, &[], "");
    let f = TempFile::new(&conf);
    nc.sh(&format!("wg setconf {} {}", c.ifname, f.path()));
    let again = nc.sh(&format!("wg showconf {}", c.ifname));
    assert_eq!(again, conf, "showconf after setconf of showconf");
}

#[test]
fn wg_set_live_changes_keep_the_session() {
    if !require_root("wg_set_live_changes_keep_the_session") {
        return;
    }
    let p = pair();
    p.established();
    let before = handshake(&p.a.ifname, &p.b.keys.public);
    assert_ne!(before, (0, 0), "a session is established");
    let (a, b) = (&p.a.ifname, &p.b.keys.public);
    let pf = TempFile::new(&psk());
    let new_psk = std::fs::read_to_string(pf.path()).unwrap();
    // (change, dump field of the peer line, its value right after the change)
    let steps = [
        (format!("wg set {a} peer {b} preshared-key {}", pf.path()), 1, new_psk.trim().to_string()),
        // b's second address on the same link.
        (format!("wg set {a} peer {b} endpoint 10.50.0.3:51821"), 2, "10.50.0.3:51821".to_string()),
        (format!("wg set {a} peer {b} persistent-keepalive 7"), 7, "7".to_string()),
        (
            format!("wg set {a} peer {b} allowed-ips 10.63.0.0/16,10.9.0.2/32"),
            3,
            "10.63.0.0/16,10.9.0.2/32".to_string(),
        ),
    ];
    for (step, index, want) in &steps {
        p.na.sh(step);
        let dump = p.na.sh(&format!("wg show {a} dump"));
        let peer: Vec<&str> = dump.lines().nth(1).unwrap().split('\t').collect();
        let mut got: Vec<&str> = peer[*index].split(',').collect();
        got.sort();
        assert_eq!(got.join(","), *want, "`{step}` took effect");
        assert_eq!(handshake(a, b), before, "`{step}` must not drop the session");
        assert!(p.na.ping("10.9.0.2", 2), "ping right after `{step}`");
        assert_eq!(handshake(a, b), before, "no new handshake was needed after `{step}`");
    }
}

#[test]
fn wg_syncconf_removes_only_missing_peers() {
    if !require_root("wg_syncconf_removes_only_missing_peers") {
        return;
    }
    let p = pair();
    let (x, y) = (keys(), keys());
    let a = &p.a.ifname;
    p.na.sh(&format!("wg set {a} peer {} allowed-ips 10.64.0.0/24", x.public));
    p.na.sh(&format!("wg set {a} peer {} allowed-ips 10.65.0.0/24", y.public));
    p.established();
    let before = handshake(a, &p.b.keys.public);
    // The file keeps b and y, drops x.
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nEndpoint = 10.50.0.2:51821\nAllowedIPs = 10.9.0.2/32\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.65.0.0/24\n",
        p.a.keys.private, p.b.keys.public, y.public
    );
    let f = TempFile::new(&conf);
    p.na.sh(&format!("wg syncconf {a} {}", f.path()));
    let now = get(a);
    let listed = peers(&now);
    assert!(!listed.contains(&hex(&x.public)), "x is gone: {listed:?}");
    assert!(listed.contains(&hex(&y.public)) && listed.contains(&hex(&p.b.keys.public)), "b and y kept: {listed:?}");
    assert_eq!(handshake(a, &p.b.keys.public), before, "b's session survived syncconf");
    // syncconf resent a's unchanged private key: b's session must still be good for a, so b
    // reaches a at once, with no new handshake on either side.
    assert!(p.nb.ping("10.9.0.1", 2), "b -> a right after syncconf");
    assert!(p.na.ping("10.9.0.2", 2), "b still reachable");
    assert_eq!(handshake(a, &p.b.keys.public), before, "no new handshake after syncconf");
}

#[test]
fn uapi_set_semantics() {
    if !require_root("uapi_set_semantics") {
        return;
    }
    set_semantics(Impl::Veil);
}

/// The same expectations hold for the reference implementation.
#[test]
fn uapi_set_semantics_match_wireguard_go() {
    if !require_root("uapi_set_semantics_match_wireguard_go") {
        return;
    }
    if !Impl::WireguardGo.available() {
        eprintln!("wireguard-go is not installed; skipping the reference run");
        return;
    }
    set_semantics(Impl::WireguardGo);
}

/// allowed_ip=-PREFIX, update_only, replace_allowed_ips, moves between peers, replace_peers,
/// remove, and the private key in get=1, on a fresh `imp` device.
fn set_semantics(imp: Impl) {
    let ns = Netns::new("clu");
    let d = endpoint(&ns, imp, &[], "");
    let i = &d.ifname;
    let (k1, k2, k3) = (hex(&keys().public), hex(&keys().public), hex(&keys().public));
    let ips = |peer: &str| -> Vec<String> {
        let mut v = field(&get(i), Some(peer), "allowed_ip");
        v.sort();
        v
    };

    assert_eq!(set(i, &format!("public_key={k1}\nallowed_ip=10.0.0.0/24\nallowed_ip=10.1.0.0/24\n")), 0);
    // allowed_ip=-PREFIX removes exactly that prefix. (The installed wireguard-go, 0.0.20220316,
    // predates the removal syntax and refuses it.)
    if imp == Impl::Veil {
        assert_eq!(set(i, &format!("public_key={k1}\nallowed_ip=-10.0.0.0/24\n")), 0);
        assert_eq!(ips(&k1), ["10.1.0.0/24"], "allowed_ip=-10.0.0.0/24 removed it");
    }

    // update_only: an unknown peer is not created; a known one is updated.
    assert_eq!(set(i, &format!("public_key={k2}\nupdate_only=true\nallowed_ip=10.2.0.0/24\n")), 0);
    assert!(!peers(&get(i)).contains(&k2), "update_only must not create a peer");
    assert_eq!(set(i, &format!("public_key={k1}\nupdate_only=true\nendpoint=10.7.7.7:7\n")), 0);
    assert_eq!(field(&get(i), Some(&k1), "endpoint"), ["10.7.7.7:7"], "update_only updates a known peer");

    // replace_allowed_ips: the old list goes, the new one stays.
    assert_eq!(
        set(i, &format!("public_key={k1}\nreplace_allowed_ips=true\nallowed_ip=10.3.0.0/24\nallowed_ip=fd03::/64\n")),
        0
    );
    assert_eq!(ips(&k1), ["10.3.0.0/24", "fd03::/64"], "replace_allowed_ips");
    // Without it, prefixes accumulate.
    assert_eq!(set(i, &format!("public_key={k1}\nallowed_ip=10.4.0.0/24\n")), 0);
    assert_eq!(ips(&k1), ["10.3.0.0/24", "10.4.0.0/24", "fd03::/64"], "allowed_ip adds");

    // An allowed IP claimed by another peer moves to it.
    assert_eq!(set(i, &format!("public_key={k2}\nallowed_ip=10.4.0.0/24\n")), 0);
    assert_eq!(ips(&k2), ["10.4.0.0/24"], "k2 claimed 10.4.0.0/24");
    assert_eq!(ips(&k1), ["10.3.0.0/24", "fd03::/64"], "k1 lost 10.4.0.0/24");

    // replace_peers: only the peers of this request remain.
    assert_eq!(set(i, &format!("replace_peers=true\npublic_key={k3}\nallowed_ip=10.5.0.0/24\n")), 0);
    assert_eq!(peers(&get(i)), std::slice::from_ref(&k3), "replace_peers");
    assert_eq!(ips(&k3), ["10.5.0.0/24"]);

    // remove=true removes a peer and its prefixes.
    assert_eq!(set(i, &format!("public_key={k3}\nremove=true\n")), 0);
    assert!(peers(&get(i)).is_empty(), "remove=true");

    // get=1 returns the private key.
    assert_eq!(field(&get(i), None, "private_key"), [hex(&d.keys.private)]);
}

#[test]
fn uapi_get_with_200000_allowed_ips_is_complete() {
    if !require_root("uapi_get_with_200000_allowed_ips_is_complete") {
        return;
    }
    const N: u32 = 200_000;
    let ns = Netns::new("clg");
    let d = endpoint(&ns, Impl::Veil, &[], "");
    let k = hex(&keys().public);
    let mut body = format!("public_key={k}\n");
    for n in 0..N {
        body.push_str(&format!("allowed_ip=10.{}.{}.{}/32\n", n >> 16, (n >> 8) & 255, n & 255));
    }
    assert_eq!(set(&d.ifname, &body), 0, "one set request with {N} allowed IPs");
    let answer = get(&d.ifname);
    let count = answer.lines().filter(|l| l.starts_with("allowed_ip=")).count();
    assert_eq!(count, N as usize, "every allowed IP is in the get answer");
    assert!(answer.ends_with("errno=0\n\n"), "the answer is complete");
}

/// UDP ports bound in `ns`, as "address:port" words from `ss`.
fn udp_bound(ns: &Netns) -> Vec<String> {
    ns.sh("ss -uanH").lines().filter_map(|l| l.split_whitespace().nth(3).map(str::to_string)).collect()
}

#[test]
fn uapi_rebinding_back_and_forth_between_two_ports_never_fails() {
    if !require_root("uapi_rebinding_back_and_forth_between_two_ports_never_fails") {
        return;
    }
    let ns = Netns::new("clr");
    let d = endpoint(&ns, Impl::Veil, &[], "");
    // One connection, as a management tool would keep: each answer must come after the port
    // left behind is free again, or the next request (back to it) fails with EADDRINUSE.
    let mut conn = UnixStream::connect(sock(&d.ifname)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut failures = Vec::new();
    for i in 0..200 {
        let port = 21000 + i % 2;
        conn.write_all(format!("set=1\nlisten_port={port}\n\n").as_bytes()).unwrap();
        let mut answer = String::new();
        while !answer.ends_with("\n\n") {
            use std::io::BufRead;
            assert!(reader.read_line(&mut answer).unwrap() > 0, "connection closed after {i} requests");
        }
        if errno(&answer) != 0 {
            failures.push((i, port, errno(&answer)));
        }
    }
    assert!(failures.is_empty(), "refused rebinds (request, port, errno): {failures:?}");
    let mut bound = udp_bound(&ns);
    bound.sort();
    assert_eq!(bound, ["0.0.0.0:21001", "[::]:21001"], "only the last port stays bound");
}

#[test]
fn a_kernel_picked_port_is_free_for_both_families() {
    if !require_root("a_kernel_picked_port_is_free_for_both_families") {
        return;
    }
    // Ten ephemeral ports, five of them taken for IPv6 only: the kernel picks the daemon's port
    // among those free for IPv4, so it must try again until IPv6 can have the same one.
    let ns = Netns::new("clp");
    ns.sh("sysctl -q -w net.ipv4.ip_local_port_range=\"40000 40009\"");
    let _holder = Proc::spawn(
        &ns,
        "python3 -c 'import socket, time\nheld = []\nfor p in range(40000, 40005):\n    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n    s.bind((\"::\", p))\n    held.append(s)\ntime.sleep(300)'",
        "IPv6 port holder",
    );
    assert!(wait_until(Duration::from_secs(10), || udp_bound(&ns).len() == 5), "holder: {:?}", udp_bound(&ns));
    let daemons: Vec<Endpoint> = (0..3).map(|_| endpoint(&ns, Impl::Veil, &[], "")).collect();
    for d in &daemons {
        let port: u16 = ns.sh(&format!("wg show {} listen-port", d.ifname)).trim().parse().unwrap();
        assert!((40005..=40009).contains(&port), "{} got port {port}", d.ifname);
        let bound = udp_bound(&ns);
        for want in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
            assert!(bound.contains(&want), "{want} not bound: {bound:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------------------------

/// Nothing of `ifname` is left in `ns`: no interface, socket, daemon, routes or policy rules.
fn assert_nothing_left(ns: &Netns, ifname: &str) {
    assert_gone(ns, ifname);
    let routes = ns.sh("ip route show table all") + &ns.sh("ip -6 route show table all");
    assert!(!routes.contains(ifname), "routes left for {ifname}:\n{routes}");
    assert!(!routes.contains("table 51820"), "table 51820 left:\n{routes}");
    assert_default_rules(ns);
}

#[test]
fn veil_up_rejects_malformed_configs_and_leaves_nothing() {
    if !require_root("veil_up_rejects_malformed_configs_and_leaves_nothing") {
        return;
    }
    let ns = Netns::new("clm");
    let dir = TempDir::new("veil-cli-");
    let base = adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), &[]);
    // (what, replaced line start, replacement)
    let cases = [
        ("bad private key", "PrivateKey", "PrivateKey = notakey"),
        ("bad public key", "PublicKey", "PublicKey = AAAA"),
        ("unknown section", "[Peer]", "[Peers]"),
        ("unknown key", "Address", "Adress = 10.101.0.2/32"),
        ("bad CIDR", "AllowedIPs", "AllowedIPs = 10.0.0.0/33"),
        ("bad address", "Address", "Address = 10.101.0.300/32"),
        ("bad port", "Endpoint", "Endpoint = 10.50.0.2:70000"),
        // Found only when veil up resolves it (.invalid never resolves, RFC 6761).
        ("unresolvable endpoint", "Endpoint", "Endpoint = no-such-host.invalid:51820"),
        ("link-local endpoint, no such zone", "Endpoint", "Endpoint = [fe80::1%nosuchif0]:51820"),
    ];
    for (what, start, replacement) in cases {
        let mut line_no = 0;
        let text: String = base
            .lines()
            .enumerate()
            .map(|(n, l)| {
                if line_no == 0 && l.trim_start().starts_with(start) {
                    line_no = n + 1;
                    format!("{replacement}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert!(line_no > 0, "{what}: no line starts with {start}");
        let ifname = unique("vbad");
        let path = dir.conf(&ifname, &text);
        // No DNS in the namespace: the lookup fails as temporary, which wg retries; not here.
        let (ok, out) = run_in(&ns, &format!("env WG_ENDPOINT_RESOLUTION_RETRIES=0 {} up {path}", veil()));
        assert!(!ok, "{what}: veil up must fail:\n{out}");
        assert!(out.contains(&format!("{path}:{line_no}")), "{what}: the message names {path}:{line_no}:\n{out}");
        assert!(!out.contains("notakey") || what != "bad private key", "a bad key is not echoed:\n{out}");
        assert_nothing_left(&ns, &ifname);
    }
    // A bad listen port in the interface section too.
    let ifname = unique("vbad");
    let text = base.replace("[Interface]\n", "[Interface]\nListenPort = 65536\n");
    let path = dir.conf(&ifname, &text);
    let (ok, out) = run_in(&ns, &format!("{} up {path}", veil()));
    assert!(!ok, "bad ListenPort: veil up must fail:\n{out}");
    let line_no = text.lines().position(|l| l.starts_with("ListenPort")).unwrap() + 1;
    assert!(out.contains(&format!("{path}:{line_no}")), "bad ListenPort: message names {path}:{line_no}:\n{out}");
    assert_nothing_left(&ns, &ifname);
}

#[test]
fn veil_up_with_a_failing_pre_or_post_up_hook_leaves_nothing() {
    if !require_root("veil_up_with_a_failing_pre_or_post_up_hook_leaves_nothing") {
        return;
    }
    let l = lab_nodes("clp", ["10.50.0.1/24", "10.50.0.2/24"]);
    let na = &l.na;
    let dir = TempDir::new("veil-cli-");
    let ifname = unique("vpf");
    let hooks = [format!("PostUp = touch {}/%i.postup; false", dir.path())];
    let path = dir.conf(&ifname, &adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), &hooks));
    let (ok, out) = run_in(na, &format!("{} up {path}", veil()));
    assert!(!ok, "veil up with a failing PostUp must fail:\n{out}");
    assert!(dir.file(&format!("{ifname}.postup")).exists(), "the PostUp hook ran");
    assert_nothing_left(na, &ifname);

    // A failing PreUp hook: nothing is started at all, and PostUp does not run.
    let ifname = unique("vpf");
    let hooks = ["PreUp = false".to_string(), format!("PostUp = touch {}/%i.postup", dir.path())];
    let path = dir.conf(&ifname, &adapt(&example("full-tunnel-client.conf"), Some("10.50.0.2:51820"), &hooks));
    let (ok, out) = run_in(na, &format!("{} up {path}", veil()));
    assert!(!ok, "veil up with a failing PreUp must fail:\n{out}");
    assert!(!dir.file(&format!("{ifname}.postup")).exists(), "PostUp must not run after a failed PreUp");
    assert_nothing_left(na, &ifname);
}

#[test]
fn uapi_malformed_lines_are_einval_and_change_nothing() {
    if !require_root("uapi_malformed_lines_are_einval_and_change_nothing") {
        return;
    }
    let ns = Netns::new("cle");
    let d = endpoint(&ns, Impl::Veil, &[], "");
    let i = &d.ifname;
    let k = hex(&keys().public);
    assert_eq!(
        set(i, &format!("listen_port=40000\npublic_key={k}\nendpoint=10.1.1.1:1\nallowed_ip=10.70.0.0/16\n")),
        0
    );
    let before = get(i);
    let other = hex(&keys().public);
    // Each case starts with valid changes, so "unchanged" also means "applied all or nothing".
    let prelude = format!("listen_port=40001\nfwmark=5\npublic_key={k}\nallowed_ip=10.71.0.0/16\n");
    let cases = [
        (
            "unknown interface key",
            format!("listen_port=40001\nfrobnicate=1\npublic_key={k}\nallowed_ip=10.71.0.0/16\n"),
        ),
        ("unknown peer key", format!("{prelude}frobnicate=1\n")),
        ("bad hex public key", format!("{prelude}public_key=zz{}\n", &other[2..])),
        ("short public key", format!("{prelude}public_key={}\n", &other[..62])),
        ("bad hex private key", format!("private_key={}\n{prelude}", "g".repeat(64))),
        ("bad hex preshared key", format!("{prelude}preshared_key=1234\n")),
        ("bad endpoint", format!("{prelude}endpoint=10.1.1.1\n")),
        ("bad endpoint port", format!("{prelude}endpoint=10.1.1.1:99999\n")),
        ("bad allowed_ip", format!("{prelude}allowed_ip=10.0.0.0/40\n")),
        ("bad allowed_ip address", format!("{prelude}allowed_ip=10.0.0.256/8\n")),
        ("bad removal", format!("{prelude}allowed_ip=-nonsense\n")),
        ("peer key before public_key", format!("endpoint=10.2.2.2:2\n{prelude}")),
        ("allowed_ip before public_key", format!("allowed_ip=10.0.0.0/8\n{prelude}")),
        ("line without =", format!("{prelude}garbage\n")),
        ("bad bool", format!("{prelude}replace_allowed_ips=yes\n")),
        ("bad keepalive", format!("{prelude}persistent_keepalive_interval=70000\n")),
        ("bad listen port", format!("listen_port=65536\n{prelude}")),
    ];
    let whole = |body: &str| format!("set=1\n{body}\n").into_bytes();
    let mut requests: Vec<(&str, Vec<u8>)> = cases.iter().map(|(what, body)| (*what, whole(body))).collect();
    let mut not_utf8 = format!("set=1\n{prelude}").into_bytes();
    not_utf8.extend_from_slice(b"allowed_ip=10.72.0.0/16\xff\xfe\n\n");
    requests.push(("a line that is not UTF-8", not_utf8));
    requests.push(("a line of 10,000 bytes", whole(&format!("{prelude}allowed_ip={}\n", "1".repeat(10_000)))));
    // The stream ends before the request's empty line: an incomplete request is not applied.
    requests.push(("cut short", format!("set=1\n{prelude}").into_bytes()));
    requests.push(("cut short mid-line", format!("set=1\n{prelude}allowed_ip=10.73").into_bytes()));
    for (what, request) in requests {
        let answer = uapi_bytes(i, &request);
        assert_eq!(errno(&answer), -22, "{what}: errno=-22 expected, got {answer:?}");
        assert_eq!(get(i), before, "{what}: the device must be unchanged");
    }
    // Lines may end in CRLF.
    assert_eq!(uapi(i, "get=1\r\n\r\n"), get(i), "get=1 with CRLF line ends");
    // An unknown operation is refused too, and the socket keeps serving.
    assert_eq!(errno(&uapi(i, "frob=1\n\n")), -22, "unknown operation");
    assert_eq!(get(i), before);
}

#[test]
fn uapi_connections_are_capped_and_idle_ones_closed() {
    if !require_root("uapi_connections_are_capped_and_idle_ones_closed") {
        return;
    }
    const CAP: usize = 128; // UAPI_MAX_CONNECTIONS in src/device/mod.rs
    let ns = Netns::new("clu");
    let d = endpoint(&ns, Impl::Veil, &[], "");
    let connect = || {
        let c = UnixStream::connect(sock(&d.ifname)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        c
    };
    // Each connection is known to be served once it answered a get.
    let mut held: Vec<UnixStream> = Vec::new();
    for _ in 0..CAP {
        let mut c = connect();
        c.write_all(b"get=1\n\n").unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"errno=0\n\n") {
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "connection {} closed early", held.len());
            answer.extend_from_slice(&buf[..n]);
        }
        held.push(c);
    }
    // One more is closed without an answer.
    let mut extra = connect();
    let _ = extra.write_all(b"get=1\n\n");
    let mut buf = [0u8; 64];
    assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "connection {} beyond the cap is closed", CAP + 1);
    // Closing one frees a place.
    held.pop();
    // (Until the daemon has seen the close, a new connection is still refused: closed, or reset.)
    let served = wait_until(Duration::from_secs(10), || {
        try_uapi(&d.ifname, b"get=1\n\n").is_ok_and(|a| a.ends_with("errno=0\n\n"))
    });
    assert!(served, "a connection is served again once one closed");
    // The held connections sit idle: the daemon closes them after its idle timeout (30 s).
    let mut idle = held.pop().unwrap();
    // A signal may interrupt the long read (EINTR); that is no answer: read again.
    let closed = loop {
        match idle.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    assert!(matches!(closed, Ok(0)), "an idle connection is closed by the daemon: {closed:?}");
    assert!(get(&d.ifname).ends_with("errno=0\n\n"), "and the socket keeps serving");
}

#[test]
fn veil_pubkey_rejects_bad_keys() {
    for bad in ["notakey", "AAAA", "6G+CW2x9npaog92GBR62ncuYh2zQYDhP9MQ96AEmA3!=", ""] {
        let out = sh_out(&format!("echo '{bad}' | {} pubkey", veil()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "veil pubkey must refuse {bad:?}");
        assert!(out.stdout.is_empty(), "no key printed for {bad:?}");
        assert!(err.contains("veil pubkey") && err.to_lowercase().contains("key"), "a clear message: {err}");
    }
    // A good key still works.
    let out = sh_out(&format!("echo 6G+CW2x9npaog92GBR62ncuYh2zQYDhP9MQ96AEmA34= | {} pubkey", veil()));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0/N5AEHZuEU+nMtygWBTE2DHrYJusU8zbn+2pQ+4v2U=");
}

#[test]
fn veil_daemon_rejects_an_invalid_interface_name() {
    for bad in ["thisnameiswaytoolong", "a/b"] {
        let out = sh_out(&format!("{} -f '{bad}'", veil()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "veil -f {bad:?} must fail");
        assert!(err.contains("invalid interface name"), "message names the problem: {err}");
        assert!(!sock(bad).exists(), "no socket for {bad:?}");
    }
}

/// A small xorshift generator: the garbage only needs to vary, not to be secret.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends `count` random datagrams to `to` from a socket in namespace `ns`.
fn send_garbage(ns: &Netns, to: std::net::SocketAddr, count: usize) -> usize {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd; it only affects this (fresh, short-lived) thread.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
        let mut sent = 0;
        for n in 0..count {
            let len = match n % 5 {
                // Plausible sizes of the four message types, with a valid type byte.
                0 => [148, 92, 64, 32, 48][(rng.next() % 5) as usize],
                _ => (rng.next() % 2001) as usize,
            };
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if n % 2 == 0 && len >= 4 {
                buf[0] = (rng.next() % 4 + 1) as u8;
                buf[1..4].fill(0);
            }
            if s.send_to(&buf, to).is_ok() {
                sent += 1;
            }
        }
        sent
    })
    .join()
    .unwrap()
}

#[test]
fn udp_garbage_leaves_the_daemon_running_and_the_tunnel_working() {
    if !require_root("udp_garbage_leaves_the_daemon_running_and_the_tunnel_working") {
        return;
    }
    let p = pair();
    p.established();
    let sent = send_garbage(&p.nb, "10.50.0.1:51820".parse().unwrap(), 5000);
    assert!(sent > 4000, "sent {sent} datagrams");
    assert!(p.a.running(), "the daemon survived the garbage");
    assert!(sock(&p.a.ifname).exists(), "its socket is still there");
    assert!(p.na.ping_until("10.9.0.2", Duration::from_secs(15)), "the tunnel still works a -> b");
    assert!(p.na.ping("10.9.0.2", 3), "a -> b");
    assert!(p.nb.ping("10.9.0.1", 3), "b -> a");
    assert_eq!(errno(&uapi(&p.a.ifname, "get=1\n\n")), 0, "the UAPI still answers");
}

/// A container host: /proc/sys is read-only, and src_valid_mark is already 1 (set by the host).
/// `veil up` of a /0 tunnel must not try to write it (wg-quick does not either).
#[test]
fn veil_up_of_a_full_tunnel_works_with_proc_sys_read_only_when_src_valid_mark_is_set() {
    let test = "veil_up_of_a_full_tunnel_works_with_proc_sys_read_only_when_src_valid_mark_is_set";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("cro");
    ns.sh("sysctl -q -w net.ipv4.conf.all.src_valid_mark=1");
    let dir = TempDir::new("veil-cli-");
    let name = unique("vro");
    let conf = full_tunnel_conf(&dir, &name, "true");
    let (ok, out) = run_in(
        &ns,
        &format!(
            "unshare -m sh -c 'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys \
             && ! sh -c \"echo 1 > /proc/sys/net/ipv4/conf/all/src_valid_mark\" 2>/dev/null && {} up {conf}'",
            veil()
        ),
    );
    assert!(ok, "{test}: veil up failed with /proc/sys read-only:\n{out}");
    assert!(!out.contains("src_valid_mark"), "{test}: it touched src_valid_mark:\n{out}");
    veil_down(&ns, &conf);
}

/// Two configurations with the same ListenPort: the second `veil up` says the port is in use
/// and by which interface, not a raw errno (-98).
#[test]
fn veil_up_says_which_interface_holds_a_busy_listen_port() {
    let test = "veil_up_says_which_interface_holds_a_busy_listen_port";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("cbp");
    let dir = TempDir::new("veil-cli-");
    let conf = |name: &str| {
        dir.conf(
            name,
            &format!(
                "[Interface]\nPrivateKey = {}\nListenPort = 51999\nAddress = 10.143.0.1/24\n\n[Peer]\nPublicKey = {}\n\
                 AllowedIPs = 10.143.0.2/32\n",
                keys().private,
                keys().public
            ),
        )
    };
    let (first, second) = (unique("vbp"), unique("vbq"));
    let (c1, c2) = (conf(&first), conf(&second));
    veil_up(&ns, &c1);
    let (ok, out) = run_in(&ns, &format!("{} up {c2}", veil()));
    assert!(!ok, "{test}: the second veil up succeeded on a busy port:\n{out}");
    assert!(out.contains("UDP port 51999 (ListenPort) is already in use"), "{test}: no word of the busy port:\n{out}");
    assert!(out.contains(&format!("interface {first}")), "{test}: it does not name {first}:\n{out}");
    assert!(!out.contains("errno -98"), "{test}: a raw errno:\n{out}");
    veil_down(&ns, &c1);
}

/// A config whose endpoint is a host name, at a moment the name does not resolve yet (at boot,
/// before the network): the lookup fails as temporary, and `veil up` tries again as `wg` does
/// (after 1 s, then 1.2 times longer each time) instead of giving up. Here the name appears in
/// /etc/hosts (a private copy) once the first retry is announced, and the tunnel comes up with
/// the right endpoint.
#[test]
fn veil_up_retries_an_endpoint_name_that_does_not_resolve_yet() {
    let test = "veil_up_retries_an_endpoint_name_that_does_not_resolve_yet";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("cdr");
    let dir = TempDir::new("veil-cli-");
    let hosts = dir.file("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let ifname = unique("vdr");
    let conf = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.144.0.1/24\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = 10.144.0.2/32\nEndpoint = peer-at-boot.test:51820\n",
            keys().private,
            keys().public
        ),
    );
    let hosts_path = hosts.display().to_string();
    let log = dir.file("up.log");
    let cmd = format!(
        "unshare -m sh -c 'mount --bind {hosts_path} /etc/hosts && {} up {conf}' >{} 2>&1",
        veil(),
        log.display()
    );
    let up = std::thread::spawn({
        let ns_name = ns.name.clone();
        move || std::process::Command::new("ip").args(["netns", "exec", &ns_name, "sh", "-c", &cmd]).status().unwrap()
    });
    // The name appears once veil up has announced its first retry (however long its start took).
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), || said().contains("Trying again") || up.is_finished());
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.50.0.9 peer-at-boot.test\n").unwrap();
    let ok = up.join().unwrap().success();
    let out = said();
    assert!(ok, "{test}: veil up gave up:\n{out}");
    assert!(out.contains("Trying again in 1.00 seconds"), "{test}: no retry was announced:\n{out}");
    let endpoints = ns.sh(&format!("wg show {ifname} endpoints"));
    assert!(endpoints.contains("10.50.0.9:51820"), "{test}: endpoint not set from the name:\n{endpoints}");
    veil_down(&ns, &conf);
}

/// A name that can never resolve (the resolver says so) fails at once, without retries.
#[test]
fn veil_up_fails_at_once_on_a_name_that_cannot_resolve() {
    let test = "veil_up_fails_at_once_on_a_name_that_cannot_resolve";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("cdp");
    let dir = TempDir::new("veil-cli-");
    let ifname = unique("vdp");
    let conf = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = 10.145.0.1/24\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = 10.145.0.2/32\nEndpoint = -no-such-name:51820\n",
            keys().private,
            keys().public
        ),
    );
    let started = std::time::Instant::now();
    let (ok, out) = run_in(&ns, &format!("{} up {conf}", veil()));
    assert!(!ok, "{test}: veil up succeeded:\n{out}");
    assert!(!out.contains("Trying again"), "{test}: a permanent failure was retried:\n{out}");
    assert!(out.contains(&format!("{conf}:")), "{test}: the message names the file:\n{out}");
    // A hang guard (the retries would take minutes), not a timing goal.
    assert!(started.elapsed() < Duration::from_secs(20), "{test}: took {:?}", started.elapsed());
    assert_nothing_left(&ns, &ifname);
}

/// A detached daemon writes its log to the standard error it was started with when `LOG_LEVEL`
/// asks for one, as wireguard-go does, and nowhere otherwise (its stderr is then /dev/null, so
/// a caller's pipe is not held open).
#[test]
fn a_detached_daemon_logs_to_the_callers_stderr_only_when_log_level_is_set() {
    let test = "a_detached_daemon_logs_to_the_callers_stderr_only_when_log_level_is_set";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("clg");
    let dir = TempDir::new("veil-log-");
    for (env, expect_log) in [("LOG_LEVEL=info", true), ("", false), ("LOG_LEVEL=silent", false)] {
        let ifname = unique("vlg");
        let log = dir.file(&format!("{ifname}.log"));
        let out = ns.sh_out(&format!("env {env} {} {ifname} 2>{}", veil(), log.display()));
        assert!(out.status.success(), "{test}: {env:?}: the daemon did not start");
        assert_running(&ns, &ifname);
        // What the daemon logs after it detached: that it stopped, once its link is gone.
        ns.sh(&format!("ip link del {ifname}"));
        assert_gone(&ns, &ifname);
        let text = std::fs::read_to_string(&log).unwrap();
        let stopped = format!("{ifname} stopped");
        assert_eq!(text.contains(&stopped), expect_log, "{test}: {env:?}: the caller's stderr got:\n{text}");
    }
}
