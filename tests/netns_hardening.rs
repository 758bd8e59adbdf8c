//! The running daemon's protection (issue 9, parts 4 and 5), seen from outside: the
//! capabilities, `no_new_privs` and user of a running daemon in /proc, a tunnel that still
//! works (a low port, an fwmark) after the drop, and logs that never hold a key.
mod netns;

use netns::*;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// CAP_NET_BIND_SERVICE (10) and CAP_NET_ADMIN (12), as bits of /proc/PID/status.
const NET_BIND_SERVICE: u64 = 1 << 10;
const NET_ADMIN: u64 = 1 << 12;

/// The value of `field` in /proc/PID/status.
fn status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    text.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn capabilities(pid: u32, set: &str) -> u64 {
    u64::from_str_radix(&status(pid, set), 16).unwrap()
}

/// Asserts exactly what the daemon `pid` keeps: CAP_NET_ADMIN effective, CAP_NET_BIND_SERVICE
/// permitted besides, the same two in the bounding set, nothing inheritable or ambient, and
/// `no_new_privs`.
fn assert_least_privilege(pid: u32, what: &str) {
    assert_eq!(capabilities(pid, "CapEff"), NET_ADMIN, "{what}: effective set");
    assert_eq!(capabilities(pid, "CapPrm"), NET_ADMIN | NET_BIND_SERVICE, "{what}: permitted set");
    assert_eq!(capabilities(pid, "CapBnd"), NET_ADMIN | NET_BIND_SERVICE, "{what}: bounding set");
    assert_eq!(capabilities(pid, "CapInh"), 0, "{what}: inheritable set");
    assert_eq!(capabilities(pid, "CapAmb"), 0, "{what}: ambient set");
    assert_eq!(status(pid, "NoNewPrivs"), "1", "{what}: no_new_privs");
}

/// The uid `nobody` has here.
fn nobody() -> (u32, u32) {
    let line = sh("getent passwd nobody");
    let f: Vec<&str> = line.trim().split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn ping_both_ways(na: &Netns, nb: &Netns, what: &str) {
    assert!(na.ping_until("10.9.0.2", Duration::from_secs(10)), "{what}: a -> b");
    assert!(nb.ping("10.9.0.1", 2), "{what}: b -> a");
}

/// Two veil daemons as root: each keeps exactly CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE
/// permitted) with no_new_privs, and what needs them still works after the drop: a listen port
/// below 1024 (the binding thread raises CAP_NET_BIND_SERVICE for the bind), an fwmark, and a
/// tunnel on those.
#[test]
fn the_root_daemon_keeps_only_net_admin_and_still_binds_a_low_port_with_a_mark() {
    if !require_root("the_root_daemon_keeps_only_net_admin_and_still_binds_a_low_port_with_a_mark") {
        return;
    }
    // b listens on port 500, bound after the drop (the lab configures the started daemons).
    let p = lab_pair(PairSpec {
        tag: "vh",
        underlay: ["192.168.71.1/24", "192.168.71.2/24"],
        tunnel: [&["10.9.0.1/24"], &["10.9.0.2/24"]],
        ports: [51820, 500],
        dialer: Some("a"),
        ..PairSpec::default()
    });
    let (na, nb, a, b) = (&p.na, &p.nb, &p.a, &p.b);
    for e in [a, b] {
        assert_least_privilege(e.pid, &e.ifname);
        assert_eq!(status(e.pid, "Uid").split_whitespace().next(), Some("0"));
    }
    assert_eq!(nb.sh(&format!("wg show {} listen-port", b.ifname)).trim(), "500");
    na.sh(&format!("wg set {} fwmark 0x1234", a.ifname));
    assert_eq!(na.sh(&format!("wg show {} fwmark", a.ifname)).trim(), "0x1234");
    ping_both_ways(na, nb, "low port and fwmark after the drop");
    // The binding thread lowered CAP_NET_BIND_SERVICE again: every thread's effective set is
    // still CAP_NET_ADMIN alone.
    for task in std::fs::read_dir(format!("/proc/{}/task", b.pid)).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        assert_eq!(capabilities(tid, "CapEff"), NET_ADMIN, "thread {tid} of {}", b.ifname);
    }
}

/// `--user nobody` (and `VEIL_USER=nobody`, which wg-quick and `veil up` pass on): the daemon
/// runs as nobody with the same capabilities and no_new_privs, is not dumpable (its /proc
/// files belong to root, not to nobody), carries a tunnel with a low port, and its socket file
/// is removed when it stops (by the janitor that stayed root for it).
#[test]
fn user_option_runs_as_that_user_with_the_same_capabilities() {
    if !require_root("user_option_runs_as_that_user_with_the_same_capabilities") {
        return;
    }
    let (uid, gid) = nobody();
    // a is told on the command line, b through the environment; b listens on port 443.
    let p = lab_pair(PairSpec {
        tag: "vu",
        underlay: ["192.168.72.1/24", "192.168.72.2/24"],
        tunnel: [&["10.9.0.1/24"], &["10.9.0.2/24"]],
        ports: [51820, 443],
        node_env: ["", "VEIL_USER=nobody"],
        veil_args: [&["--user", "nobody"], &[]],
        psk: true,
        dialer: Some("a"),
        ..PairSpec::default()
    });
    let (na, nb, a, b) = (&p.na, &p.nb, &p.a, &p.b);
    for e in [a, b] {
        let pid = e.pid;
        let ids = |field| status(pid, field).split_whitespace().map(|v| v.parse().unwrap()).collect::<Vec<u32>>();
        assert_eq!(ids("Uid"), [uid; 4], "{}: real, effective, saved and filesystem uid", e.ifname);
        assert_eq!(ids("Gid"), [gid; 4], "{}: gids", e.ifname);
        assert_eq!(status(pid, "Groups"), "", "{}: no supplementary groups", e.ifname);
        assert_least_privilege(pid, &e.ifname);
        // Non-dumpable: the kernel gives its /proc files to root instead of the process's user.
        assert_eq!(std::fs::metadata(format!("/proc/{pid}/status")).unwrap().uid(), 0, "{}: dumpable", e.ifname);
    }
    assert_eq!(nb.sh(&format!("wg show {} listen-port", b.ifname)).trim(), "443");
    ping_both_ways(na, nb, "as nobody");

    let sock = format!("/var/run/wireguard/{}.sock", b.ifname);
    assert!(b.terminate(Duration::from_secs(10)), "the daemon did not stop on SIGTERM");
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&sock).exists()),
        "{sock} was left behind by a daemon that ran as nobody"
    );
}

/// Every way a key of this test could be written: base64, hex in both cases, and Rust's
/// `Debug` of the bytes (`[12, 34, ...]`).
fn spellings(base64_key: &str) -> Vec<String> {
    let out = sh(&format!("echo {base64_key} | base64 -d | od -An -v -tx1"));
    let bytes: Vec<u8> = out.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    assert_eq!(bytes.len(), 32, "{base64_key} is not a key");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![base64_key.to_string(), hex.to_uppercase(), format!("{bytes:?}"), hex]
}

/// A UAPI request as text; returns the answer.
fn uapi(ifname: &str, request: &str) -> String {
    let mut conn = UnixStream::connect(format!("/var/run/wireguard/{ifname}.sock")).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}

/// Two daemons at the most verbose level (`LOG_LEVEL=trace`) through handshakes, rekeys every
/// second, a psk rotated on one side (handshakes refused) then on the other, a refused UAPI
/// set that carries a private key and a psk, `wg showconf` (a get with the private key) and a
/// clean stop: no private key or psk of the test appears in either log, in base64, hex or as
/// bytes. Session keys are never printed and cannot be learnt from outside the process, so
/// they cannot be searched for; the keys they are derived from are.
#[test]
fn no_key_or_psk_in_the_logs_at_the_most_verbose_level() {
    if !require_root("no_key_or_psk_in_the_logs_at_the_most_verbose_level") {
        return;
    }
    let p = lab_pair(PairSpec {
        tag: "vk",
        underlay: ["192.168.73.1/24", "192.168.73.2/24"],
        tunnel: [&["10.9.0.1/24"], &["10.9.0.2/24"]],
        env: "LOG_LEVEL=trace VEIL_REKEY_AFTER_TIME_MS=1000 VEIL_REKEY_TIMEOUT_MS=500",
        psk: true,
        dialer: Some("a"),
        ..PairSpec::default()
    });
    let (na, nb, a, b) = (&p.na, &p.nb, &p.a, &p.b);
    let (psk1, psk2) = (p.lab.psk("a", "b").unwrap(), psk());
    let set_psk = |ns: &Netns, me: &LabTunnel, other: &LabTunnel, psk: &str| {
        let f = TempFile::new(psk);
        ns.sh(&format!("wg set {} peer {} preshared-key {}", me.ifname, other.keys.public, f.path()));
    };
    ping_both_ways(na, nb, "first handshake");
    // Rekeys: the initiator's session is a second old by the end of each.
    assert!(na.ping("10.9.0.2", 15), "pings across rekeys");

    // A psk rotated on one side: its handshakes are refused by the other until both agree.
    set_psk(na, a, b, &psk2);
    let _ = na.sh_out("ping -c 8 -i 0.25 -W 1 10.9.0.2");
    set_psk(nb, b, a, &psk2);
    assert!(na.ping_until("10.9.0.2", Duration::from_secs(10)), "after the psk rotation");

    // A set that carries secrets and is refused (a /33): its error must not echo them.
    let (refused_key, refused_psk) = (keys().private, psk());
    let hex = |k: &str| spellings(k).pop().unwrap();
    let answer = uapi(
        &a.ifname,
        &format!(
            "set=1\nprivate_key={}\npublic_key={}\npreshared_key={}\nallowed_ip=10.0.0.0/33\n\n",
            hex(&refused_key),
            hex(&b.keys.public),
            hex(&refused_psk)
        ),
    );
    assert!(answer.contains("errno=-22"), "the set should be refused: {answer}");
    for (ns, e) in [(na, a), (nb, b)] {
        assert!(ns.sh(&format!("wg showconf {}", e.ifname)).contains(&e.keys.private));
    }
    assert!(a.terminate(Duration::from_secs(10)) && b.terminate(Duration::from_secs(10)));

    let logs = [("a", a.log_text()), ("b", b.log_text())];
    let count = |needle: &str| logs.iter().map(|(_, l)| l.matches(needle).count()).sum::<usize>();
    // The logs did cover what they should have: handshakes, rekeys, refusals, the stop.
    assert!(count("session established") >= 4, "too few handshakes logged:\n{logs:?}");
    assert!(count("response sent") >= 4, "too few handshake responses logged:\n{logs:?}");
    assert!(count("handshake message refused") >= 1, "no refused handshake logged:\n{logs:?}");
    assert!(count("UAPI set refused") == 1, "the refused set was not logged:\n{logs:?}");
    assert!(count("stopped: SIGTERM") == 2, "a daemon did not log its stop:\n{logs:?}");
    let secrets = [
        ("a's private key", &a.keys.private),
        ("b's private key", &b.keys.private),
        ("psk 1", &psk1),
        ("psk 2", &psk2),
        ("the refused private key", &refused_key),
        ("the refused psk", &refused_psk),
    ];
    for (what, key) in secrets {
        for spelling in spellings(key) {
            for (side, log) in &logs {
                assert!(!log.contains(&spelling), "{what} is in {side}'s log as {spelling}");
            }
        }
    }
}
