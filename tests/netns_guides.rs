//! The guides in docs/guides/ run as written. Every shell block marked for testing,
//!
//! ````text
//! <!-- test: host=site-a expect="latest handshake" -->
//! ```sh
//! veil show
//! ```
//! ````
//!
//! is run unchanged, in the order of the guide, by `sh -e` on a stand-in for the machine it
//! names (`host=`), from the repository's top directory; it must exit 0 and print every
//! `expect=` text. A stand-in machine is a network namespace joined to the others by veth links
//! as the guide's picture shows, with a mount namespace of its own in which /etc/wireguard,
//! /usr/local/bin, /run/wireguard, /run/netns and /run/veil-lab are empty (so the guide's
//! `install` and `veil up NAME` work on those paths, and nothing of the host is seen or
//! changed). Then each test checks what the guide promises from outside the guide's own
//! commands: traffic took the tunnel, DNS went to the server through it, and `down` left
//! nothing behind.
//!
//! The laptop has a stand-in for resolvconf (none is installed on the test machines): it makes
//! /etc/resolv.conf, a file of the test's bind-mounted there, of the record `veil up` hands it,
//! and puts the old file back on `-d`. The name server behind the tunnel is the test's own: it
//! answers every A query with 203.0.113.80 and notes where each query came from.
mod netns;
use netns::*;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Directories that each stand-in machine has to itself (an empty tmpfs on each).
const PRIVATE_DIRS: [&str; 5] = ["/etc/wireguard", "/usr/local/bin", "/run/wireguard", "/run/netns", "/run/veil-lab"];

/// A hang guard per block; the slowest is the lab guide's `cargo run`, which builds the example
/// when `cargo test` has not built it yet.
const BLOCK_LIMIT: Duration = Duration::from_secs(300);

/// A shell block of a guide marked for testing.
#[derive(Debug)]
struct Block {
    host: String,
    expect: Vec<String>,
    script: String,
    /// The line of the marker in the guide, for messages.
    line: usize,
}

/// The blocks of `text` marked `<!-- test: host=NAME [expect="TEXT"]... -->`, each directly
/// followed by a ```` ```sh ```` block.
fn marked_blocks(guide: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(marker) = line.trim().strip_prefix("<!-- test:") else { continue };
        let marker = marker.strip_suffix("-->").unwrap_or_else(|| panic!("{guide}:{}: unclosed marker", i + 1));
        let (host, expect) = parse_marker(marker).unwrap_or_else(|e| panic!("{guide}:{}: {e}", i + 1));
        assert_eq!(lines.get(i + 1).map(|l| l.trim()), Some("```sh"), "{guide}:{}: a ```sh block must follow", i + 1);
        let body: Vec<&str> = lines[i + 2..].iter().take_while(|l| l.trim() != "```").copied().collect();
        assert!(i + 2 + body.len() < lines.len(), "{guide}:{}: the block is not closed", i + 1);
        blocks.push(Block { host, expect, script: body.join("\n") + "\n", line: i + 1 });
    }
    blocks
}

/// `host=NAME expect="TEXT" expect="TEXT"`.
fn parse_marker(marker: &str) -> Result<(String, Vec<String>), String> {
    let (mut host, mut expect, mut rest) = (None, Vec::new(), marker.trim());
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| format!("expected KEY=VALUE at {rest:?}"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').ok_or_else(|| format!("unclosed quote at {rest:?}"))?,
            None => after.split_once(' ').unwrap_or((after, "")),
        };
        match key {
            "host" => host = Some(value.to_string()),
            "expect" => expect.push(value.to_string()),
            _ => return Err(format!("unknown key {key:?}")),
        }
        rest = after.trim_start();
    }
    Ok((host.ok_or("no host=")?, expect))
}

/// The first ```` ```rust ```` block of `text`.
fn rust_block(text: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != "```rust").skip(1);
    let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
    (!body.is_empty()).then(|| body.join("\n") + "\n")
}

/// True when the test may run: root, and a release build (the guides install target/release).
fn ready(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if veil_bin().parent().is_some_and(|d| d.ends_with("release")) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: the guides install target/release/veil: run with --release (scripts/test.sh does)");
    }
    eprintln!("\n!!!!! SKIPPED {test}: the guides install target/release/veil: run with --release !!!!!\n");
    false
}

/// A stand-in for one machine of a guide: a network namespace, and a mount namespace (held by a
/// `sleep`) in which [`PRIVATE_DIRS`] are empty and, where given, /etc/resolv.conf is a file of
/// the test's.
struct Machine {
    name: String,
    holder: Child,
    /// PATH for the guide's commands.
    path: String,
    scratch: PathBuf,
    ns: Netns,
}

impl Machine {
    fn new(name: &str, resolv_conf: Option<&Path>, extra_bin: Option<&Path>) -> Machine {
        let ns = Netns::new("gd");
        let scratch = std::env::temp_dir().join(unique("veil-guide-"));
        std::fs::create_dir_all(&scratch).unwrap();
        let mut setup = String::from("set -e\n");
        for dir in PRIVATE_DIRS {
            // Created on the host if missing (veil and the lab would make them there anyway).
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
            let mode = if dir == "/etc/wireguard" { "0700" } else { "0755" };
            setup += &format!("mount -t tmpfs -o mode={mode} veil-guide {dir}\n");
        }
        if let Some(file) = resolv_conf {
            setup += &format!("mount --bind {} /etc/resolv.conf\n", file.display());
        }
        // The guides install target/release/veil; let that be the build under test.
        let built = veil_bin().parent().unwrap().to_path_buf();
        let release = Path::new(REPO).join("target/release");
        let same = std::fs::canonicalize(&built).ok() == std::fs::canonicalize(&release).ok();
        if !same {
            std::fs::create_dir_all(&release).unwrap();
            setup += &format!("mount --bind {} {}\n", built.display(), release.display());
        }
        setup += "echo ready\nexec sleep 3600\n";
        // `ip netns exec` gives its command a mount namespace of its own (a slave of the
        // host's): what is mounted in it stays there.
        let mut holder = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", &setup])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let out = holder.wait_with_output().unwrap();
            panic!("{name}: setting up the machine's mounts failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut path = String::new();
        if let Some(bin) = extra_bin {
            path += &format!("{}:", bin.display());
        }
        path += "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        if let Ok(outer) = std::env::var("PATH") {
            // For cargo (the lab guide's `cargo run`).
            path += &format!(":{outer}");
        }
        Machine { name: name.to_string(), holder, path, scratch, ns }
    }

    /// Runs `script` with `sh -e` inside the machine, from the repository's top directory.
    fn run(&self, script: &str) -> Ran {
        let (out, err) = (self.scratch.join("stdout"), self.scratch.join("stderr"));
        // Files, not pipes: a daemon the script starts may keep its copy open.
        let file = |p: &Path| std::fs::File::create(p).unwrap();
        let start = Instant::now();
        let mut cmd = Command::new("timeout");
        // A user's shell has none of what cargo sets for a running test; build scripts notice
        // (ring's reruns when CARGO_MANIFEST_DIR changes), so `cargo run` would rebuild.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if ["CARGO", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
                .contains(&k.as_ref())
                || ["CARGO_PKG_", "CARGO_BIN_", "CARGO_TARGET_TMPDIR"].iter().any(|p| k.starts_with(p))
            {
                cmd.env_remove(&key);
            }
        }
        let status = cmd
            .arg(BLOCK_LIMIT.as_secs().to_string())
            .args(["nsenter", "--target", &self.holder.id().to_string(), "--mount", "--net"])
            .arg(format!("--wd={REPO}"))
            .args(["sh", "-e", "-c", script])
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err))
            .status()
            .expect("timeout nsenter");
        let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Ran {
            host: self.name.clone(),
            script: script.to_string(),
            ok: status.success(),
            stdout: read(&out),
            stderr: read(&err),
            took: start.elapsed(),
        }
    }

    /// Runs a check of the test's own inside the machine; panics if it fails.
    fn sh(&self, script: &str) -> String {
        let ran = self.run(script);
        assert!(ran.ok, "{}: {script}\nstdout: {}\nstderr: {}", self.name, ran.stdout, ran.stderr);
        ran.stdout
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
        // Then `ns` goes, and with it whatever still runs in the namespace.
    }
}

/// A block as it ran.
#[derive(Debug)]
struct Ran {
    host: String,
    script: String,
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the marked blocks of docs/guides/`guide` in order, each on its machine; panics at the
/// first that fails or lacks an expected text.
fn run_guide(guide: &str, machines: &[&Machine]) -> Vec<Ran> {
    let path = Path::new(REPO).join("docs/guides").join(guide);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let blocks = marked_blocks(guide, &text);
    assert!(!blocks.is_empty(), "{guide}: no block is marked for testing");
    let mut done = Vec::new();
    for b in blocks {
        let m = machines.iter().find(|m| m.name == b.host).unwrap_or_else(|| {
            let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
            panic!("{guide}:{}: no machine {:?} (the test has {names:?})", b.line, b.host)
        });
        let ran = m.run(&b.script);
        let show = |r: &Ran| format!("\n--- script\n{}--- stdout\n{}--- stderr\n{}", r.script, r.stdout, r.stderr);
        assert!(ran.ok, "{guide}:{}: the block failed on {}:{}", b.line, b.host, show(&ran));
        for e in &b.expect {
            assert!(
                ran.stdout.contains(e.as_str()),
                "{guide}:{}: {e:?} not printed on {}:{}",
                b.line,
                b.host,
                show(&ran)
            );
        }
        eprintln!("{guide}:{}: {} ok in {:.1} s", b.line, b.host, ran.took.as_secs_f64());
        done.push(ran);
    }
    done
}

/// The first block run on `host` that has a line starting with `command`.
fn find<'a>(ran: &'a [Ran], host: &str, command: &str) -> &'a Ran {
    ran.iter()
        .find(|r| r.host == host && r.script.lines().any(|l| l.trim_start().starts_with(command)))
        .unwrap_or_else(|| panic!("the guide no longer runs `{command}` on {host}"))
}

/// A veth pair between two machines' namespaces, with the names and addresses (CIDR) given.
fn wire(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    sh(&format!("ip link add {a_if} netns {} type veth peer name {b_if} netns {}", a.name, b.name));
    for (ns, dev, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        sh(&format!("ip -n {} address add {addr} dev {dev}", ns.name));
        sh(&format!("ip -n {} link set {dev} up", ns.name));
    }
}

/// Whether `addr` answers one ping from `ns` within a second.
fn answers(ns: &Netns, addr: &str) -> bool {
    ns.sh_out(&format!("ping -c 1 -W 1 {addr}")).status.success()
}

/// Asserts (after at most 10 s for a slow daemon to finish) that the interface and its socket
/// are gone.
fn gone(m: &Machine, ifname: &str) {
    let left = || m.sh(&format!("ip -br link show {ifname} 2>/dev/null || true; ls /run/wireguard"));
    wait_until(Duration::from_secs(10), || left().trim().is_empty());
    let left = left();
    assert_eq!(left.trim(), "", "{}: {ifname} (its link or socket) is still there after down", m.name);
}

#[test]
fn site_to_site_guide_runs_as_written() {
    let test = "site_to_site_guide_runs_as_written";
    if !ready(test) {
        return;
    }
    let (a, b) = (Machine::new("site-a", None, None), Machine::new("site-b", None, None));
    let (pc_a, pc_b) = (Machine::new("pc-a", None, None), Machine::new("pc-b", None, None));
    // The Internet between the gateways is one link; each office LAN another.
    wire(&a.ns, "eth0", "192.0.2.1/24", &b.ns, "eth0", "192.0.2.2/24");
    wire(&a.ns, "lan0", "10.200.1.1/24", &pc_a.ns, "eth0", "10.200.1.10/24");
    wire(&b.ns, "lan0", "10.200.2.1/24", &pc_b.ns, "eth0", "10.200.2.10/24");
    pc_a.ns.sh("ip route add default via 10.200.1.1");
    pc_b.ns.sh("ip route add default via 10.200.2.1");
    assert!(!answers(&pc_a.ns, "10.200.2.10"), "{test}: LAN B must be out of reach without the tunnel");

    let ran = run_guide("site-to-site.md", &[&a, &b, &pc_a, &pc_b]);

    // Office to office, both ways, through the tunnel (the only way between the LANs).
    for (host, to) in [("pc-a", "10.200.2.10"), ("pc-b", "10.200.1.10")] {
        let ping = find(&ran, host, &format!("ping -c 3 {to}"));
        assert!(ping.stdout.contains("3 received"), "{test}: {host} -> {to}: {}", ping.stdout);
    }
    for host in ["site-a", "site-b"] {
        let show = find(&ran, host, "veil show");
        assert!(
            show.stdout.contains("latest handshake:"),
            "{test}: no handshake in veil show on {host}: {}",
            show.stdout
        );
    }
    find(&ran, "site-a", "veil down site-a");
    find(&ran, "site-b", "veil down site-b");
    gone(&a, "site-a");
    gone(&b, "site-b");
    assert!(!answers(&pc_a.ns, "10.200.2.10"), "{test}: LAN B is still reached after down");
}

/// A name server in namespace `ns` (port 53, every address): every A query gets `answer`,
/// other types an empty answer; the source address of every query is noted.
struct NameServer {
    stop: Arc<AtomicBool>,
    asked_from: Arc<Mutex<Vec<IpAddr>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NameServer {
    fn start(ns: &Netns, answer: Ipv4Addr) -> NameServer {
        let (stop, asked_from) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (s, a) = (stop.clone(), asked_from.clone());
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on an open descriptor moves only this thread.
            assert_eq!(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            let socket = UdpSocket::bind("0.0.0.0:53").expect("bind port 53");
            socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            bound_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                a.lock().unwrap().push(from.ip());
                if let Some(reply) = dns_reply(&buf[..n], answer) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).expect("the name server did not start");
        NameServer { stop, asked_from, thread: Some(thread) }
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The answer to a DNS query with one question: for type A, one record with `addr`; else none.
fn dns_reply(query: &[u8], addr: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question = query.get(12..i + 4)?;
    let a = qtype == 1;
    // ID; QR, the query's RD; RA, no error; one question, one answer or none.
    let mut r = vec![query[0], query[1], 0x80 | (query[2] & 1), 0x80, 0, 1, 0, a as u8, 0, 0, 0, 0];
    r.extend_from_slice(question);
    if a {
        // The question's name (a pointer to offset 12), A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr.octets());
    }
    Some(r)
}

/// Echo requests to 203.0.113.80 from `source`, counted in `internet`'s INPUT chain by a rule
/// without a target.
fn echo_requests(internet: &Netns, source: &str) -> u64 {
    let rules = internet.sh("iptables -nvxL INPUT");
    rules
        .lines()
        .find(|l| l.contains(source) && l.contains("203.0.113.80"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counting rule for {source}:\n{rules}"))
}

#[test]
fn laptop_guide_runs_as_written() {
    let test = "laptop_guide_runs_as_written";
    if !ready(test) {
        return;
    }
    let scratch = TempDir::new("veil-guides-");
    // The laptop's resolv.conf before the tunnel, and the stand-in for resolvconf.
    let before = "# the laptop's own resolver\nnameserver 198.51.100.254\n";
    let resolv = scratch.0.join("resolv.conf");
    std::fs::write(&resolv, before).unwrap();
    let bin = scratch.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let saved = scratch.0.join("resolv.conf.saved");
    let standin = format!(
        "#!/bin/sh\n# resolvconf -a NAME [-m N] [-x] < RECORD | resolvconf -d NAME [-f]\n\
         case \"$1\" in\n\
         -a) [ -e {s} ] || cat /etc/resolv.conf > {s}; {{ echo \"# resolvconf: $2\"; cat; }} > /etc/resolv.conf ;;\n\
         -d) [ -e {s} ] && cat {s} > /etc/resolv.conf && rm {s} ;;\n\
         *) echo \"resolvconf stand-in: $*\" >&2; exit 2 ;;\n\
         esac\n",
        s = saved.display()
    );
    let path = bin.join("resolvconf");
    std::fs::write(&path, standin).unwrap();
    sh(&format!("chmod 755 {}", path.display()));

    let laptop = Machine::new("laptop", Some(&resolv), Some(&bin));
    let server = Machine::new("server", None, None);
    // The Internet: a router between the laptop's network and the server's, with a host on it.
    let internet = Netns::new("gdi");
    wire(&laptop.ns, "eth0", "198.51.100.2/24", &internet, "laptop", "198.51.100.254/24");
    wire(&server.ns, "eth0", "192.0.2.1/24", &internet, "server", "192.0.2.254/24");
    internet.sh("ip address add 203.0.113.80/32 dev lo");
    internet.sh("sysctl -q -w net.ipv4.ip_forward=1");
    laptop.ns.sh("ip route add default via 198.51.100.254");
    server.ns.sh("ip route add default via 192.0.2.254");
    for source in ["192.0.2.1", "198.51.100.2"] {
        internet.sh(&format!("iptables -A INPUT -p icmp --icmp-type echo-request -s {source} -d 203.0.113.80"));
    }
    let resolver = NameServer::start(&server.ns, Ipv4Addr::new(203, 0, 113, 80));

    let ran = run_guide("laptop.md", &[&laptop, &server]);

    // Everything went through the server: the Internet saw the laptop's pings come from the
    // server's address (NAT), none from the laptop's own.
    find(&ran, "laptop", "ping -c 3 203.0.113.80");
    assert!(echo_requests(&internet, "192.0.2.1") >= 3, "{test}: the pings did not leave through the server");
    assert_eq!(echo_requests(&internet, "198.51.100.2"), 0, "{test}: pings went around the tunnel");
    let route = find(&ran, "laptop", "ip route get 203.0.113.80");
    assert!(route.stdout.contains("dev wg0 table 51820"), "{test}: {}", route.stdout);
    // DNS: set while up, asked through the tunnel, answered by the server's name server.
    let dns = find(&ran, "laptop", "cat /etc/resolv.conf");
    assert!(dns.stdout.contains("nameserver 10.102.0.1"), "{test}: DNS not set: {}", dns.stdout);
    let lookup = find(&ran, "laptop", "getent hosts");
    assert!(lookup.stdout.contains("203.0.113.80"), "{test}: {}", lookup.stdout);
    let from = resolver.asked_from.lock().unwrap().clone();
    let tunnel: IpAddr = "10.102.0.2".parse().unwrap();
    assert!(from.contains(&tunnel), "{test}: no query came through the tunnel (from {from:?})");
    let show = find(&ran, "laptop", "veil show");
    assert!(show.stdout.contains("latest handshake:"), "{test}: {}", show.stdout);
    // Down: routes, rules and DNS as before.
    find(&ran, "laptop", "veil down wg0");
    gone(&laptop, "wg0");
    gone(&server, "wg0");
    assert_eq!(std::fs::read_to_string(&resolv).unwrap(), before, "{test}: resolv.conf not restored");
    let rules = laptop.sh("ip rule show; ip -6 rule show");
    assert!(!rules.contains("51820"), "{test}: policy rules left after down:\n{rules}");
    let nat = server.ns.sh("iptables -t nat -S POSTROUTING");
    assert!(!nat.contains("MASQUERADE"), "{test}: the NAT rule is left after down:\n{nat}");
}

#[test]
fn netns_tests_guide_runs_as_written() {
    let test = "netns_tests_guide_runs_as_written";
    if !ready(test) {
        return;
    }
    // The guide's Rust is the example that its `cargo run` runs.
    let text = std::fs::read_to_string(Path::new(REPO).join("docs/guides/netns-tests.md")).unwrap();
    let example = std::fs::read_to_string(Path::new(REPO).join("examples/lab_two_sites.rs")).unwrap();
    assert_eq!(rust_block(&text).as_deref(), Some(example.as_str()), "{test}: the guide's Rust is not the example");

    let dev = Machine::new("dev", None, None);
    let ran = run_guide("netns-tests.md", &[&dev]);

    let ping = find(&ran, "dev", "veil lab exec site-a -- ping");
    assert!(ping.stdout.contains("3 received"), "{test}: {}", ping.stdout);
    let show = find(&ran, "dev", "veil lab exec site-a -- veil show");
    assert!(show.stdout.contains("latest handshake:"), "{test}: {}", show.stdout);
    let rust = find(&ran, "dev", "cargo run --release --example lab_two_sites");
    assert!(rust.stdout.contains("site-a reaches 192.168.2.10 through the tunnel"), "{test}: {}", rust.stdout);
    find(&ran, "dev", "veil lab down");
    let left = dev.sh("ls /run/netns /run/wireguard /run/veil-lab/two-sites 2>/dev/null || true; veil lab list");
    let left: Vec<&str> = left.lines().filter(|l| !l.trim().is_empty() && !l.ends_with(':')).collect();
    assert!(left.iter().all(|l| !l.contains("two-sites") && !l.contains("wg-site")), "{test}: left: {left:?}");
}
