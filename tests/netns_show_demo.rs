//! `veil show` (text and JSON) against `wg show`, `veil metrics` and the daemon's metrics
//! endpoint through `promtool check metrics`, the key commands against wg's, and the README's
//! first command, `veil demo`, end to end.
mod netns;

use netns::*;
use std::time::Duration;

fn veil(args: &str) -> std::process::Output {
    sh_out(&format!("{} {args}", veil_bin().display()))
}

/// A veil pair with one completed handshake and some traffic, ready to be shown: a (10.62.0.1,
/// port 51820) knows b's endpoint (10.61.0.2:51821) and keeps it alive every 25 s, b is also
/// allowed 10.63.0.0/16, with a psk.
fn busy_pair() -> LabPair {
    busy_pair_with(["", ""], [&[], &[]])
}

/// [`busy_pair`], `env` added to a's and b's daemon's environment and `args` to their options.
fn busy_pair_with(env: [&str; 2], args: [&[&str]; 2]) -> LabPair {
    let p = lab_pair(PairSpec {
        tag: "sh",
        underlay: ["10.61.0.1/24", "10.61.0.2/24"],
        tunnel: [&["10.62.0.1/24"], &["10.62.0.2/24"]],
        node_env: env,
        veil_args: args,
        psk: true,
        dialer: Some("a"),
        allowed_ips: [&["10.63.0.0/16"], &[]],
        ..PairSpec::default()
    });
    // On a's side only (the lab's keepalive is on both).
    p.na.sh(&format!("wg set {} peer {} persistent-keepalive 25", p.a.ifname, p.b.keys.public));
    assert!(p.na.ping_until("10.62.0.2", Duration::from_secs(10)), "tunnel up");
    p
}

#[test]
fn veil_show_text_matches_wg_show() {
    if !require_root("veil_show_text_matches_wg_show") {
        return;
    }
    let pair = busy_pair();
    let (na, a, b) = (&pair.na, &pair.a, &pair.b);
    // The whole text, line for line, taken between two equal reads of wg's (the handshake age
    // and the counters move).
    let mut same = false;
    for _ in 0..20 {
        let before = na.sh(&format!("wg show {}", a.ifname));
        let ours = veil(&format!("show {}", a.ifname));
        assert!(ours.status.success(), "veil show: {}", String::from_utf8_lossy(&ours.stderr));
        if na.sh(&format!("wg show {}", a.ifname)) == before {
            assert_eq!(String::from_utf8_lossy(&ours.stdout), before, "veil show is wg show");
            same = true;
            break;
        }
    }
    assert!(same, "wg show never read the same twice in a row");
    let ours = veil(&format!("show {}", a.ifname));
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
    let pair = busy_pair();
    let (na, a, b) = (&pair.na, &pair.a, &pair.b);
    let out = veil(&format!("show {} --json", a.ifname));
    assert!(out.status.success(), "veil show --json: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let ifs = v.as_array().expect("a JSON array of interfaces");
    assert_eq!(ifs.len(), 1);
    let i = &ifs[0];
    assert_eq!(i["interface"], a.ifname.as_str());
    assert_eq!(i["public_key"], a.keys.public.as_str());
    assert_eq!(i["listen_port"], 51820);
    assert_eq!(i["fwmark"], serde_json::Value::Null);
    assert!(!out.stdout.windows(a.keys.private.len()).any(|w| w == a.keys.private.as_bytes()), "no private key");
    assert_eq!(i["counters"]["under_load"], false);
    assert!(i["counters"]["dropped"]["not_allowed"].is_u64(), "{i}");
    let peers = i["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1);
    let p = &peers[0];
    assert_eq!(p["public_key"], b.keys.public.as_str());
    assert_eq!(p["has_preshared_key"], true);
    assert_eq!(p["endpoint"], "10.61.0.2:51821");
    assert_eq!(p["persistent_keepalive"], 25);
    // Handshake time and counters: the same values wg reads over the same socket.
    let hs: u64 =
        na.sh(&format!("wg show {} latest-handshakes", a.ifname)).split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(hs > 0);
    let ours_hs = p["latest_handshake"].as_u64().unwrap();
    assert!(ours_hs.abs_diff(hs) <= 1, "latest_handshake {ours_hs} vs wg {hs}");
    assert!(p["rx_bytes"].as_u64().unwrap() > 0 && p["tx_bytes"].as_u64().unwrap() > 0);
    // veil's own counters: the pings went both ways over one handshake, which a started.
    let c = &p["counters"];
    assert!(c["rx_packets"].as_u64().unwrap() > 0 && c["tx_packets"].as_u64().unwrap() > 0, "{c}");
    assert!(c["handshakes_initiated"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["handshakes_completed"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["session_age_ms"].as_u64().is_some(), "{c}");
}

/// Runs `promtool check metrics` on `text`; panics with its words if it finds a problem.
/// Without promtool: a loud skip, or a failure under CI=true.
fn promtool_check(text: &str, what: &str) -> bool {
    if !have("promtool") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "promtool (Debian prometheus) missing under CI");
        eprintln!(
            "!!!!! SKIPPED promtool check of {what}: promtool is not installed (apt-get install prometheus) !!!!!"
        );
        return false;
    }
    let f = TempFile::new(text);
    let out = sh_out(&format!("promtool check metrics < {}", f.path()));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics on {what}: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// The metrics an endpoint must show for a peer with traffic, in prometheus_wireguard_exporter's
/// names and labels, and no secret.
fn check_metrics(text: &str, ifname: &str, own: &LabTunnel, peer: &LabTunnel, allowed: &str) {
    let labels = format!("{{interface=\"{ifname}\",public_key=\"{}\",allowed_ips=\"{allowed}\"}}", peer.keys.public);
    for family in ["wireguard_sent_bytes_total", "wireguard_received_bytes_total", "wireguard_latest_handshake_seconds"]
    {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{labels} ")))
            .unwrap_or_else(|| panic!("{family}{labels}:\n{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 0.0, "{line}");
    }
    assert!(
        text.contains(&format!("veil_peer_handshakes_completed_total{{interface=\"{ifname}\",public_key=")),
        "{text}"
    );
    assert!(
        text.contains(&format!("veil_interface_dropped_packets_total{{interface=\"{ifname}\",reason=\"replayed\"}}")),
        "{text}"
    );
    assert!(!text.contains(&own.keys.private) && !text.contains(&peer.keys.private), "a private key in the metrics");
}

#[test]
fn veil_metrics_pass_promtool_with_the_exporters_names() {
    if !require_root("veil_metrics_pass_promtool_with_the_exporters_names") {
        return;
    }
    let pair = busy_pair();
    let (a, b) = (&pair.a, &pair.b);
    let out = veil(&format!("metrics {}", a.ifname));
    assert!(out.status.success(), "veil metrics: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    check_metrics(&text, &a.ifname, a, b, "10.62.0.2/32,10.63.0.0/16");
    promtool_check(&text, "veil metrics");
    // --output: the file the textfile collector reads, replaced whole.
    let file = std::env::temp_dir().join(format!("{}.prom", unique("veilmetrics")));
    let written = veil(&format!("metrics {} --output {}", a.ifname, file.display()));
    assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
    let saved = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(saved.contains("# TYPE wireguard_sent_bytes_total counter"), "{saved}");
}

/// The TCP sockets listening in `ns`.
fn listening(ns: &Netns) -> String {
    ns.sh("ss -Hltn")
}

/// The names of a process's threads.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn metrics_endpoint_is_off_by_default_and_serves_when_asked() {
    if !require_root("metrics_endpoint_is_off_by_default_and_serves_when_asked") {
        return;
    }
    // Off by default: nothing listens in a daemon's namespace, no metrics thread.
    {
        let pair = busy_pair();
        for (ns, e) in [(&pair.na, &pair.a), (&pair.nb, &pair.b)] {
            assert_eq!(listening(ns), "", "a daemon without --metrics-listen listens on TCP");
            let names = threads(e.pid);
            assert!(!names.is_empty() && !names.iter().any(|t| t.contains("metrics")), "{names:?}");
        }
    }
    // On when asked: a through the environment (the wg-quick path), b on the command line and
    // on a port below 1024, which the daemon binds after it has dropped its privileges.
    let pair = busy_pair_with(["VEIL_METRICS_LISTEN=127.0.0.1:9586", ""], [&[], &["--metrics-listen", "[::1]:987"]]);
    let (na, nb, a, b) = (&pair.na, &pair.nb, &pair.a, &pair.b);
    assert!(listening(na).contains("127.0.0.1:9586"), "{}", listening(na));
    assert!(listening(nb).contains("[::1]:987"), "{}", listening(nb));
    for (ns, url, own, peer, allowed) in [
        (na, "http://127.0.0.1:9586/metrics", a, b, "10.62.0.2/32,10.63.0.0/16"),
        (nb, "http://[::1]:987/metrics", b, a, "10.62.0.1/32"),
    ] {
        let head = ns.sh(&format!("curl -sf -D - -o /dev/null {url}"));
        assert!(head.to_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
        let text = ns.sh(&format!("curl -sf {url}"));
        check_metrics(&text, &own.ifname, own, peer, allowed);
        promtool_check(&text, url);
        let missing =
            ns.sh_out(&format!("curl -s -o /dev/null -w '%{{http_code}}' {}", url.replace("/metrics", "/other")));
        assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");
        let posted = ns.sh_out(&format!("curl -s -o /dev/null -w '%{{http_code}}' -X POST {url}"));
        assert_eq!(String::from_utf8_lossy(&posted.stdout), "405", "only GET and HEAD at {url}");
    }
}

#[test]
fn veil_show_without_a_name_lists_every_interface_and_fails_for_an_unknown_one() {
    if !require_root("veil_show_without_a_name_lists_every_interface_and_fails_for_an_unknown_one") {
        return;
    }
    let pair = busy_pair();
    let (a, b) = (&pair.a, &pair.b);
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

#[test]
fn another_implementations_interface_is_shown_without_veils_counters() {
    if !require_root("another_implementations_interface_is_shown_without_veils_counters")
        || !require_impl("another_implementations_interface_is_shown_without_veils_counters", Impl::WireguardGo)
    {
        return;
    }
    // No link: g's peer is configured (endpoint, psk, keepalive) but never reached, so nothing
    // moves while the two shows below are compared.
    let mut topology = pair_topology(PairSpec {
        tag: "sg",
        imp: [Impl::WireguardGo, Impl::Veil],
        tunnel: [&["10.62.0.1/24"], &["10.62.0.2/24"]],
        psk: true,
        endpoints: Some(["10.61.0.2:51821", ""]),
        keepalive: Some(25),
        ..PairSpec::default()
    });
    topology.links.clear();
    let pair = LabPair::up(&topology);
    let (na, g) = (&pair.na, &pair.a);
    // wireguard-go refuses a get with veil=1 (errno -22); the client asks again plainly.
    let text = veil(&format!("show {}", g.ifname));
    assert!(text.status.success(), "{}", String::from_utf8_lossy(&text.stderr));
    assert_eq!(String::from_utf8_lossy(&text.stdout), na.sh(&format!("wg show {}", g.ifname)));
    let json: serde_json::Value = serde_json::from_slice(&veil(&format!("show {} --json", g.ifname)).stdout).unwrap();
    assert_eq!(json[0]["counters"], serde_json::Value::Null, "{json}");
    assert_eq!(json[0]["peers"][0]["counters"], serde_json::Value::Null, "{json}");
    assert_eq!(json[0]["peers"][0]["persistent_keepalive"], 25, "{json}");
    let metrics = String::from_utf8_lossy(&veil(&format!("metrics {}", g.ifname)).stdout).into_owned();
    assert!(metrics.contains(&format!("wireguard_sent_bytes_total{{interface=\"{}\"", g.ifname)), "{metrics}");
    assert!(!metrics.contains(&format!("veil_peer_sent_packets_total{{interface=\"{}\"", g.ifname)), "{metrics}");
    promtool_check(&metrics, "veil metrics of a wireguard-go interface");
}

/// The UDP payloads of the IPv4 datagrams in a pcap file of an Ethernet link.
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + len).min(pcap.len())];
        at += 16 + len;
        // Ethernet (14 bytes), IPv4 with its header length, UDP (8 bytes).
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        out.push(frame[14 + ihl + 8..].to_vec());
    }
    out
}

/// `veil show --json`'s drop counters of `ifname`.
fn dropped(ifname: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&veil(&format!("show {ifname} --json")).stdout).unwrap();
    v[0]["counters"]["dropped"].clone()
}

#[test]
fn drops_are_counted_by_reason() {
    if !require_root("drops_are_counted_by_reason") {
        return;
    }
    if !have("tcpdump") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "tcpdump missing under CI");
        eprintln!("!!!!! SKIPPED drops_are_counted_by_reason: tcpdump is not installed !!!!!");
        return;
    }
    let pair = busy_pair();
    let (nb, a) = (&pair.nb, &pair.a);
    // One of b's data messages to a, as it went on the wire (both daemons listen on 51820: the
    // filter names a's address, else a's messages to b are captured too, and one of those sent
    // to a matches none of its sessions).
    let veth =
        nb.sh("ip -o link show type veth").split(':').nth(1).unwrap().trim().split('@').next().unwrap().to_string();
    let file = TempFile::new("");
    let _ = std::fs::remove_file(file.path());
    let mut dump = Proc::spawn(
        nb,
        &format!(
            "tcpdump -Z root --immediate-mode -i {veth} -n -U -c 20 -w {} 'udp and dst host 10.61.0.1 and dst port 51820'",
            file.path()
        ),
        "tcpdump",
    );
    assert!(wait_until(Duration::from_secs(10), || std::fs::metadata(file.path()).is_ok_and(|m| m.len() >= 24)));
    assert!(nb.ping("10.62.0.1", 3), "pings through the tunnel");
    std::thread::sleep(Duration::from_millis(300));
    dump.terminate(Duration::from_secs(5));
    let all = udp_payloads(&std::fs::read(file.path()).unwrap());
    let kinds: Vec<(u8, usize, u64)> = all
        .iter()
        .map(|p| (p[0], p.len(), if p.len() >= 16 { u64::from_le_bytes(p[8..16].try_into().unwrap()) } else { 0 }))
        .collect();
    let data = all.into_iter().find(|p| p.len() >= 16 + 32 && p[0] == 4).expect("a data message from b to a");
    let before = dropped(&a.ifname);
    // One datagram each, from Python (bash's printf to /dev/udp may split its output into
    // several writes, that is several datagrams).
    let send = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        nb.sh(&format!(
            "python3 -c 'import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes.fromhex(sys.argv[1]), (\"10.61.0.1\", 51820))' {hex}"
        ));
    };
    // The same message again: its counter was seen.
    // A counter not seen yet, under the same session: it fails authentication.
    let mut forged = data.clone();
    forged[8..16].copy_from_slice(&(u64::from_le_bytes(data[8..16].try_into().unwrap()) + 1_000_000).to_le_bytes());
    // A receiver index that belongs to no session.
    let mut stray = data.clone();
    for b in &mut stray[4..8] {
        *b = !*b;
    }
    // UDP: sent again on every check until counted (each is refused the same way every time).
    let send_all = || {
        send(&data);
        send(&forged);
        send(&stray);
    };
    let grew = |reason: &str, now: &serde_json::Value| now[reason].as_u64().unwrap() > before[reason].as_u64().unwrap();
    let counted = wait_until(Duration::from_secs(5), || {
        send_all();
        let now = dropped(&a.ifname);
        ["replayed", "bad_authentication", "unknown_index"].iter().all(|r| grew(r, &now))
    });
    let now = dropped(&a.ifname);
    assert!(
        counted,
        "each refusal counted under its reason: before {before}, after {now}; the message replayed: {} bytes, {:02x?}; captured {kinds:?}",
        data.len(),
        &data[..16]
    );
    assert_eq!(now["not_allowed"], before["not_allowed"], "{now}");
    let metrics = String::from_utf8_lossy(&veil(&format!("metrics {}", a.ifname)).stdout).into_owned();
    let series = format!("veil_interface_dropped_packets_total{{interface=\"{}\",reason=\"replayed\"}} ", a.ifname);
    assert!(metrics.lines().any(|l| l.starts_with(&series) && !l.ends_with(" 0")), "{metrics}");
}
