//! `veil show` (text and JSON) against `wg show`, the key commands against wg's, and the
//! README's first command, `veil demo`, end to end.
mod netns;

use netns::*;
use std::time::Duration;

fn veil(args: &str) -> std::process::Output {
    sh_out(&format!("{} {args}", veil_bin().display()))
}

/// A veil pair with one completed handshake and some traffic, ready to be shown.
fn busy_pair() -> (Netns, Netns, Endpoint, Endpoint) {
    let (na, nb) = (Netns::new("sha"), Netns::new("shb"));
    link(&na, &nb, &["10.61.0.1/24"], &["10.61.0.2/24"]);
    let a = endpoint(&na, Impl::Veil, &["10.62.0.1/24"], "");
    let b = endpoint(&nb, Impl::Veil, &["10.62.0.2/24"], "");
    a.listen(&na, 51820);
    b.listen(&nb, 51821);
    let k = psk();
    a.add_peer(&na, &b, "10.62.0.2/32,10.63.0.0/16", Some("10.61.0.2:51821"), Some(&k));
    b.add_peer(&nb, &a, "10.62.0.1/32", None, Some(&k));
    na.sh(&format!("wg set {} peer {} persistent-keepalive 25", a.ifname, b.keys.public));
    assert!(na.ping_until("10.62.0.2", Duration::from_secs(10)), "tunnel up");
    (na, nb, a, b)
}

#[test]
fn veil_show_text_matches_wg_show() {
    if !require_root("veil_show_text_matches_wg_show") {
        return;
    }
    let (na, _nb, a, b) = busy_pair();
    let ours = veil(&format!("show {}", a.ifname));
    assert!(ours.status.success(), "veil show: {}", String::from_utf8_lossy(&ours.stderr));
    let text = String::from_utf8_lossy(&ours.stdout).into_owned();
    // Fields that do not move between the two reads must be identical to wg's own rendering.
    let wg = na.sh(&format!("wg show {}", a.ifname));
    for needle in [
        format!("interface: {}", a.ifname),
        format!("public key: {}", a.keys.public),
        "private key: (hidden)".to_string(),
        "listening port: 51820".to_string(),
        format!("peer: {}", b.keys.public),
        "preshared key: (hidden)".to_string(),
        "endpoint: 10.61.0.2:51821".to_string(),
        "persistent keepalive: every 25 seconds".to_string(),
        "latest handshake: ".to_string(),
        "transfer: ".to_string(),
    ] {
        assert!(wg.contains(&needle), "wg show has {needle:?}:\n{wg}");
        assert!(text.contains(&needle), "veil show has {needle:?}:\n{text}");
    }
    // Allowed IPs: the same set (wg may order them differently).
    let line = |s: &str| s.lines().find(|l| l.contains("allowed ips:")).map(|l| l.to_string()).unwrap_or_default();
    let set = |l: String| {
        let mut v: Vec<String> = l.split(':').nth(1).unwrap_or("").split(',').map(|x| x.trim().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(set(line(&text)), set(line(&wg)), "allowed ips");
    assert_eq!(set(line(&text)), vec!["10.62.0.2/32".to_string(), "10.63.0.0/16".to_string()]);
}

#[test]
fn veil_show_json_carries_the_uapi_state() {
    if !require_root("veil_show_json_carries_the_uapi_state") {
        return;
    }
    let (na, _nb, a, b) = busy_pair();
    let out = veil(&format!("show {} --json", a.ifname));
    assert!(out.status.success(), "veil show --json: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let ifs = v.as_array().expect("a JSON array of interfaces");
    assert_eq!(ifs.len(), 1);
    let i = &ifs[0];
    assert_eq!(i["interface"], a.ifname.as_str());
    assert_eq!(i["public_key"], a.keys.public.as_str());
    assert_eq!(i["listen_port"], 51820);
    assert_eq!(i["fwmark"], 0);
    assert!(!out.stdout.windows(a.keys.private.len()).any(|w| w == a.keys.private.as_bytes()), "no private key");
    let peers = i["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert_eq!(p["public_key"], b.keys.public.as_str());
    assert_eq!(p["preshared_key"], true);
    assert_eq!(p["endpoint"], "10.61.0.2:51821");
    assert_eq!(p["persistent_keepalive"], 25);
    // Handshake time and counters: the same values wg reads over the same socket.
    let hs: u64 =
        na.sh(&format!("wg show {} latest-handshakes", a.ifname)).split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hs > 0);
    let ours_hs = p["latest_handshake"].as_u64().unwrap();
    assert!(ours_hs.abs_diff(hs) <= 1, "latest_handshake {ours_hs} vs wg {hs}");
    assert!(p["rx_bytes"].as_u64().unwrap() > 0 && p["tx_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn veil_show_without_a_name_lists_every_interface_and_fails_for_an_unknown_one() {
    if !require_root("veil_show_without_a_name_lists_every_interface_and_fails_for_an_unknown_one") {
        return;
    }
    let (_na, _nb, a, b) = busy_pair();
    // Other tests' interfaces may come and go meanwhile; ours must both be listed.
    let all = String::from_utf8_lossy(&veil("show").stdout).into_owned();
    assert!(all.contains(&format!("interface: {}", a.ifname)), "{all}");
    assert!(all.contains(&format!("interface: {}", b.ifname)), "{all}");
    let missing = veil(&format!("show {}", unique("nosuch")));
    assert!(!missing.status.success(), "an interface without a socket is an error");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("cannot connect"), "clear message: {err}");
}

#[test]
fn keys_are_interchangeable_with_wg() {
    if !have("wg") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "wg (wireguard-tools) missing under CI");
        eprintln!("!!!!! SKIPPED keys_are_interchangeable_with_wg: wg is not installed !!!!!");
        return;
    }
    let v = veil_bin();
    let v = v.display();
    for _ in 0..5 {
        let ours = sh(&format!("{v} genkey")).trim().to_string();
        assert_eq!(
            sh(&format!("echo {ours} | wg pubkey")),
            sh(&format!("echo {ours} | {v} pubkey")),
            "wg and veil derive the same public key from veil's private key"
        );
        let theirs = sh("wg genkey").trim().to_string();
        assert_eq!(sh(&format!("echo {theirs} | wg pubkey")), sh(&format!("echo {theirs} | {v} pubkey")));
    }
    // Both key kinds are 32 bytes of base64 that wg accepts as a key.
    for cmd in ["genkey", "genpsk"] {
        let k = sh(&format!("{v} {cmd}")).trim().to_string();
        assert_eq!(k.len(), 44, "{cmd}: {k}");
        assert!(k.ends_with('='));
        assert!(sh_out(&format!("echo {k} | wg pubkey")).status.success(), "wg takes veil's {cmd} output");
    }
    assert_ne!(sh(&format!("{v} genpsk")), sh(&format!("{v} genpsk")), "fresh randomness each time");
}

#[test]
fn demo_runs_a_tunnel_between_two_namespaces_and_cleans_up() {
    if !require_root("demo_runs_a_tunnel_between_two_namespaces_and_cleans_up") {
        return;
    }
    let out = std::process::Command::new(veil_bin()).arg("demo").output().expect("run veil demo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "veil demo failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(", 0% packet loss"), "the pings crossed the tunnel:\n{text}");
    let bulk = text.lines().find(|l| l.contains("bulk TCP:")).unwrap_or_else(|| panic!("bulk line:\n{text}"));
    assert!(bulk.contains("Mbit/s"), "{bulk}");
    assert_eq!(
        text.matches("\ninterface: ").count() + text.matches("\n  interface: ").count(),
        2,
        "both peers shown:\n{text}"
    );
    assert!(text.contains("latest handshake:"), "{text}");
    // Its namespaces and sockets carry the demo's pid; none may be left.
    let pid = text
        .lines()
        .find_map(|l| l.split("veil-demo-a").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .expect("namespace name");
    let netns = sh("ip netns list");
    assert!(!netns.contains(&format!("veil-demo-a{pid}")) && !netns.contains(&format!("veil-demo-b{pid}")), "{netns}");
    for side in ["a", "b"] {
        let sock = format!("/var/run/wireguard/vdemo{side}{pid}.sock");
        assert!(!std::path::Path::new(&sock).exists(), "{sock} left behind");
    }
}
