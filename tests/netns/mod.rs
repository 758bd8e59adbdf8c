//! Real tunnels between network namespaces: namespaces, veth links, daemons and tools, each
//! cleaned up on drop. Nodes, links and tunnels between them come from veil's lab ([`lab_pair`],
//! [`pair_topology`], [`lab_nodes`]); [`Netns::new`] and [`endpoint`] make a namespace or a
//! daemon of a test's own. Everything here needs root; without it a test says so loudly, and
//! under `CI=true` that is a failure.
#![allow(dead_code)]

pub mod relay;

pub use veil::lab::Lab;
use veil::lab::topology::{LinkSpec, NodeSpec, Topology, TunnelSpec};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True when the test may run. Without root: a loud skip, or a panic under CI=true.
pub fn require_root(test: &str) -> bool {
    // SAFETY-free check: the effective uid from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (network namespaces), and CI=true: this is a failure, not a skip");
    }
    eprintln!("\n!!!!! SKIPPED {test}: needs root for network namespaces; run the suite as root !!!!!\n");
    false
}

/// Whether a tool is installed.
pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// A short unique tag for names (interfaces, namespaces) so tests never collide.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{n}", std::process::id() % 10000)
}

pub fn veil_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veil"))
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever the status.
pub fn sh_out(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A network namespace, deleted on drop (with everything in it) unless a lab owns it.
pub struct Netns {
    pub name: String,
    /// Whether this value deletes it on drop (false for a lab's node: the lab does).
    owned: bool,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name, owned: true }
    }

    /// The namespace of node `node` of `lab` (named, as the lab names them as root), left to
    /// the lab to delete.
    pub fn of(lab: &Lab, node: &str) -> Netns {
        let name = lab.node(node).ns_name().expect("a lab run as root names its namespaces").to_string();
        Netns { name, owned: false }
    }

    /// Runs `cmd` inside the namespace.
    pub fn sh(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn sh_out(&self, cmd: &str) -> Output {
        sh_out(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// `ping` from this namespace; true if all `count` replies came back.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        self.sh_out(&format!("ping -c {count} -i 0.2 -W 2 {addr}")).status.success()
    }

    /// Pings until one answer arrives (the first packets start the handshake).
    pub fn ping_until(&self, addr: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.sh_out(&format!("ping -c 1 -W 1 {addr}")).status.success())
    }
}

impl Netns {
    /// Stops every process in the namespace: SIGTERM, then SIGKILL after up to 3 s.
    fn stop_processes(&self) {
        // A polite stop first so daemons still inside remove their UAPI sockets, then force.
        let pids = || sh_out(&format!("ip netns pids {}", self.name)).stdout;
        if !pids().is_empty() {
            let _ = sh_out(&format!("ip netns pids {} | xargs -r kill -TERM", self.name));
            wait_until(Duration::from_secs(3), || pids().is_empty());
        }
        let _ = sh_out(&format!("ip netns pids {} | xargs -r kill -9", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.stop_processes();
        let _ = sh_out(&format!("ip netns del {}", self.name));
    }
}

/// A process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(ns: &Netns, cmd: &str, what: &str) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Proc { child, what: what.to_string() }
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Proc {
    /// SIGTERM, then up to `grace` for the process to exit on its own; true if it did.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        // `ip netns exec` and `sh -c exec` both exec, so the child pid is the program itself.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        wait_until(grace, || !self.running())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A polite stop first, so daemons remove their UAPI sockets.
        if self.running() {
            self.terminate(Duration::from_secs(3));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A key pair made with `veil genkey`/`veil pubkey`.
pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let private = sh(&format!("{} genkey", veil_bin().display())).trim().to_string();
    let public = sh(&format!("echo {private} | {} pubkey", veil_bin().display())).trim().to_string();
    Keys { private, public }
}

pub fn psk() -> String {
    sh(&format!("{} genpsk", veil_bin().display())).trim().to_string()
}

/// Writes `content` to a fresh file under /tmp and returns its path (removed on drop).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(content: &str) -> TempFile {
        let path = std::env::temp_dir().join(unique("veil-test-"));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh directory under /tmp (its name starts with `prefix`), removed with what it holds on
/// drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Writes `IFNAME.conf` (mode 0600, as wg-quick prefers) and returns its path.
    pub fn conf(&self, ifname: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(format!("{ifname}.conf"));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// The path of `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Brings `topology` up through veil's lab, panicking with the lab's error.
pub fn lab_up(topology: &Topology) -> Lab {
    Lab::up(topology, &veil::lab::Options::new(veil_bin())).unwrap_or_else(|e| panic!("lab up: {e}"))
}

/// A lab node in no tunnel: a namespace only (a relay, or where a test runs `veil up`).
pub fn plain_node(name: &str) -> NodeSpec {
    NodeSpec { name: name.into(), ..NodeSpec::default() }
}

/// A lab link between nodes `a` and `b` with addresses `addrs` (CIDR, in that order).
pub fn lab_link(a: &str, b: &str, addrs: [&str; 2]) -> LinkSpec {
    let net = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    LinkSpec { nodes: [a.into(), b.into()], addresses: Some([net(addrs[0]), net(addrs[1])]), mtu: None }
}

/// Two lab nodes `a` and `b` joined by one veth link, and no tunnel: namespaces for tests that
/// make their tunnels themselves (`veil up`, wg-quick). The lab is taken down when this is
/// dropped, after whatever runs in the namespaces is stopped.
pub struct LabNodes {
    pub na: Netns,
    pub nb: Netns,
    /// The veth ends in `na` and `nb`.
    pub veth_a: String,
    pub veth_b: String,
    pub lab: Lab,
}

impl Drop for LabNodes {
    fn drop(&mut self) {
        // What the test started there (`veil up`, wg-quick) is not the lab's to stop.
        self.na.stop_processes();
        self.nb.stop_processes();
    }
}

/// [`LabNodes`] in a lab named after `tag`, with `underlay` (CIDR) on the link's two ends.
pub fn lab_nodes(tag: &str, underlay: [&str; 2]) -> LabNodes {
    let lab = lab_up(&Topology {
        name: Some(unique(tag)),
        nodes: vec![plain_node("a"), plain_node("b")],
        links: vec![lab_link("a", "b", underlay)],
        ..Topology::default()
    });
    LabNodes {
        na: Netns::of(&lab, "a"),
        nb: Netns::of(&lab, "b"),
        veth_a: lab.node("a").veth_to("b").unwrap().0.to_string(),
        veth_b: lab.node("b").veth_to("a").unwrap().0.to_string(),
        lab,
    }
}

/// Two lab nodes `a` and `b`, one veth link between them, a tunnel between them: what the
/// netns tests' pairs are made of. The lab is taken down when this is dropped.
pub struct LabPair {
    pub na: Netns,
    pub nb: Netns,
    pub a: LabTunnel,
    pub b: LabTunnel,
    /// The veth ends in `na` and `nb`.
    pub veth_a: String,
    pub veth_b: String,
    pub lab: Lab,
}

/// How to make a [`LabPair`].
#[derive(Clone, Copy)]
pub struct PairSpec<'a> {
    /// A prefix for the lab's name (made unique).
    pub tag: &'a str,
    /// The implementations at `a` and `b`.
    pub imp: [Impl; 2],
    /// Underlay addresses (CIDR) of `a` and `b` on their link, and its MTU (None: 1500).
    pub underlay: [&'a str; 2],
    pub underlay_mtu: Option<u32>,
    /// Tunnel addresses (CIDR) of `a` and `b`, their listen ports, and the inner MTU.
    pub tunnel: [&'a [&'a str]; 2],
    pub ports: [u16; 2],
    pub inner_mtu: u32,
    /// Extra `NAME=value` words for both daemons' environment.
    pub env: &'a str,
    /// And for `a`'s and for `b`'s alone.
    pub node_env: [&'a str; 2],
    /// Options for a veil daemon at `a` and at `b`, before the interface name (after `-f`).
    pub veil_args: [&'a [&'a str]; 2],
    /// Whether the tunnel has a (fresh) preshared key: [`Lab::psk`].
    pub psk: bool,
    /// The only node (`"a"` or `"b"`) that knows the other's endpoint; None: each knows it.
    pub dialer: Option<&'a str>,
    /// Or the endpoints `a` and `b` have for each other, `""` for none (the lab's `endpoints`).
    pub endpoints: Option<[&'a str; 2]>,
    /// Persistent keepalive, both sides.
    pub keepalive: Option<u16>,
    /// More allowed IPs (CIDR) of `a`'s peer `b` and of `b`'s peer `a`, routed into the tunnel.
    pub allowed_ips: [&'a [&'a str]; 2],
}

impl Default for PairSpec<'_> {
    fn default() -> Self {
        PairSpec {
            tag: "lp",
            imp: [Impl::Veil, Impl::Veil],
            underlay: ["10.8.0.1/24", "10.8.0.2/24"],
            underlay_mtu: None,
            tunnel: [&["10.9.0.1/24", "fd09::1/64"], &["10.9.0.2/24", "fd09::2/64"]],
            ports: [51820, 51821],
            inner_mtu: 1420,
            env: "",
            node_env: ["", ""],
            veil_args: [&[], &[]],
            psk: false,
            dialer: None,
            endpoints: None,
            keepalive: None,
            allowed_ips: [&[], &[]],
        }
    }
}

/// A lab node's tunnel: interface, keys, daemon.
pub struct LabTunnel {
    pub ifname: String,
    pub keys: Keys,
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's log (its standard output and error), until the lab goes down.
    pub log: PathBuf,
}

impl LabTunnel {
    /// Node `node`'s tunnel.
    pub fn of(lab: &Lab, node: &str) -> LabTunnel {
        let n = lab.node(node);
        LabTunnel {
            ifname: n.ifname().expect("a node in a tunnel").to_string(),
            keys: Keys { private: n.private_key().unwrap(), public: n.public_key().unwrap() },
            pid: lab.daemon_pid(node).unwrap(),
            log: n.log_path().to_path_buf(),
        }
    }

    /// Whether the daemon still runs.
    pub fn running(&self) -> bool {
        // A daemon that died is a zombie of the lab's (state Z) until the lab reaps it.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])))
    }

    /// SIGTERM, then up to `grace` for the daemon to exit on its own; true if it did.
    pub fn terminate(&self, grace: Duration) -> bool {
        // SAFETY: kill with a pid of the lab's child, which the lab has not reaped yet.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        wait_until(grace, || !self.running())
    }

    /// What the daemon has written to its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| panic!("{}: {e}", self.log.display()))
    }

    pub fn listen(&self, ns: &Netns, port: u16) {
        ns.sh(&format!("wg set {} listen-port {port}", self.ifname));
    }
}

/// The topology of a [`LabPair`] as `spec` says: nodes `a` and `b`, their link, their tunnel.
/// A test may add to it before [`LabPair::up`].
pub fn pair_topology(spec: PairSpec) -> Topology {
    let net = |s: &str| s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    let words = |text: &str| -> std::collections::BTreeMap<String, String> {
        text.split_whitespace()
            .map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).expect("NAME=value"))
            .collect()
    };
    let node = |i: usize, name: &str| {
        let (mut daemon, extra) = spec.imp[i].lab_daemon();
        if !spec.veil_args[i].is_empty() {
            assert_eq!(spec.imp[i], Impl::Veil, "veil_args are for veil");
            let bin = veil_bin().display().to_string();
            let args = spec.veil_args[i].iter().map(|a| a.to_string());
            daemon = Some([bin, "-f".into()].into_iter().chain(args).chain(["{if}".to_string()]).collect());
        }
        let mut env = words(spec.env);
        env.extend(extra);
        env.extend(words(spec.node_env[i]));
        NodeSpec {
            name: name.into(),
            ifname: Some(unique("wg")),
            address: spec.tunnel[i].iter().map(|a| net(a)).collect(),
            listen_port: Some(spec.ports[i]),
            mtu: Some(spec.inner_mtu),
            daemon,
            env,
            ready: spec.imp[i].lab_ready(),
            ..NodeSpec::default()
        }
    };
    let extra = spec.allowed_ips.map(|l| l.iter().map(|a| net(a)).collect::<Vec<_>>());
    Topology {
        name: Some(unique(spec.tag)),
        nodes: vec![node(0, "a"), node(1, "b")],
        links: vec![LinkSpec {
            nodes: ["a".into(), "b".into()],
            addresses: Some([net(spec.underlay[0]), net(spec.underlay[1])]),
            mtu: spec.underlay_mtu,
        }],
        tunnels: vec![TunnelSpec {
            nodes: ["a".into(), "b".into()],
            psk: spec.psk,
            keepalive: spec.keepalive,
            allowed_ips: (!extra.iter().all(Vec::is_empty)).then_some(extra),
            dialer: spec.dialer.map(str::to_string),
            endpoints: spec.endpoints.map(|e| e.map(str::to_string)),
        }],
        ..Topology::default()
    }
}

/// Brings up a [`LabPair`] as `spec` says, through veil's lab.
pub fn lab_pair(spec: PairSpec) -> LabPair {
    LabPair::up(&pair_topology(spec))
}

impl LabPair {
    /// What a failed check should show: for each node, `wg show` of its interface (any
    /// implementation), veil's counters (`veil show --json`, veil nodes only) and the last lines of
    /// the daemon's log.
    pub fn report(&self) -> String {
        let sides = [("a", &self.na, &self.a), ("b", &self.nb, &self.b)];
        // The logs first, as they were when the check failed (the queries below add to them).
        let logs: Vec<String> =
            sides.iter().map(|(_, _, t)| std::fs::read_to_string(&t.log).unwrap_or_default()).collect();
        let mut out = String::new();
        for ((node, ns, t), log) in sides.iter().zip(&logs) {
            let wg = ns.sh_out(&format!("wg show {}", t.ifname));
            out += &format!("\n--- node {node}: wg show {}\n{}", t.ifname, String::from_utf8_lossy(&wg.stdout));
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", t.pid)).unwrap_or_default();
            if comm.starts_with("veil") {
                let json = ns.sh_out(&format!("{} show --json {}", veil_bin().display(), t.ifname));
                out += &format!("--- node {node}: veil show --json\n{}\n", String::from_utf8_lossy(&json.stdout));
            }
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            out += &format!("--- node {node}: log (last {} lines)\n", tail.len());
            for line in tail.iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Brings up `topology`, a [`pair_topology`] perhaps with more nodes and links.
    pub fn up(topology: &Topology) -> LabPair {
        let lab = lab_up(topology);
        LabPair {
            na: Netns::of(&lab, "a"),
            nb: Netns::of(&lab, "b"),
            a: LabTunnel::of(&lab, "a"),
            b: LabTunnel::of(&lab, "b"),
            veth_a: lab.node("a").veth_to("b").map(|v| v.0.to_string()).unwrap_or_default(),
            veth_b: lab.node("b").veth_to("a").map(|v| v.0.to_string()).unwrap_or_default(),
            lab,
        }
    }
}

/// A tunnel endpoint: some implementation's daemon in a namespace, configured with `wg`.
pub struct Endpoint {
    pub ifname: String,
    pub proc: Proc,
    pub keys: Keys,
    pub imp: Impl,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Stop the daemon now rather than with the struct's fields, so the check below sees it gone.
        if self.proc.running() {
            self.proc.terminate(Duration::from_secs(3));
        }
        // Some peer implementations leave their socket behind when stopped; veil must not, and
        // the lifecycle tests check that, so only other implementations' files are tidied here.
        if self.imp != Impl::Veil {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
        }
    }
}

/// Which implementation runs an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Veil,
    WireguardGo,
    Boringtun,
    Gotatun,
}

impl Impl {
    pub fn available(self) -> bool {
        match self {
            Impl::Veil => true,
            Impl::WireguardGo => have("wireguard-go"),
            Impl::Boringtun => have("boringtun-cli"),
            Impl::Gotatun => have("gotatun"),
        }
    }

    /// What the daemon logs once it can be configured, for the lab to wait for
    /// (`NodeSpec::ready`): gotatun 0.10 opens its UAPI socket before it can serve it and dies
    /// when a client connects in between (seen once in 291 runs of its interop tests, 2026-11-30).
    pub fn lab_ready(self) -> Option<String> {
        (self == Impl::Gotatun).then(|| "GotaTun started successfully".to_string())
    }

    /// The daemon a lab node runs for this implementation (None: veil) and its environment.
    pub fn lab_daemon(self) -> (Option<Vec<String>>, Vec<(String, String)>) {
        let argv = |w: &[&str]| Some(w.iter().map(|s| s.to_string()).collect());
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        match self {
            Impl::Veil => (None, vec![]),
            Impl::WireguardGo => (argv(&["wireguard-go", "-f", "{if}"]), vec![]),
            Impl::Boringtun => {
                (argv(&["boringtun-cli", "-f", "--disable-drop-privileges", "{if}"]), env("WG_SUDO", "true"))
            }
            // As in `command`: one tokio worker, privilege dropping off.
            Impl::Gotatun => {
                (argv(&["gotatun", "-f", "--disable-drop-privileges", "{if}"]), env("TOKIO_WORKER_THREADS", "1"))
            }
        }
    }

    fn command(self, ifname: &str, env: &str) -> String {
        match self {
            Impl::Veil => format!("env {env} {} -f {ifname}", veil_bin().display()),
            Impl::WireguardGo => format!("env {env} wireguard-go -f {ifname}"),
            Impl::Boringtun => format!("env {env} WG_SUDO=true boringtun-cli -f --disable-drop-privileges {ifname}"),
            // gotatun 0.10 as root without a tty: getlogin() fails unless privilege dropping is off.
            // One tokio worker: with several, restarting its connection on a reconfiguration (e.g.
            // `wg set listen-port` after the key) races and kills the daemon ("channel closed").
            Impl::Gotatun => {
                format!("env {env} TOKIO_WORKER_THREADS=1 gotatun -f --disable-drop-privileges {ifname}")
            }
        }
    }
}

/// Starts `imp` for a new interface in `ns`, waits for its socket, and gives the interface
/// `addrs` and link up. `env` is extra `NAME=value` words for the daemon's environment. For a
/// daemon the test starts itself; tunnels between nodes come from the lab ([`lab_pair`]).
pub fn endpoint(ns: &Netns, imp: Impl, addrs: &[&str], env: &str) -> Endpoint {
    let ifname = unique("wg");
    let mut proc = Proc::spawn(ns, &imp.command(&ifname, env), &format!("{imp:?} {ifname}"));
    let sock = format!("/var/run/wireguard/{ifname}.sock");
    let up = wait_until(Duration::from_secs(10), || std::path::Path::new(&sock).exists());
    if !up {
        let _ = proc.child.kill();
        let out = proc.child.wait_with_output_ref();
        panic!("{imp:?} did not create {sock}: {out}");
    }
    let keys = keys();
    let kf = TempFile::new(&keys.private);
    ns.sh(&format!("wg set {ifname} private-key {}", kf.path()));
    for a in addrs {
        ns.sh(&format!("ip addr add {a} dev {ifname}"));
    }
    ns.sh(&format!("ip link set {ifname} mtu 1420 up"));
    Endpoint { ifname, proc, keys, imp }
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Endpoint {
    /// Adds `other` as a peer of this endpoint.
    pub fn add_peer(&self, ns: &Netns, other: &Endpoint, allowed: &str, endpoint: Option<&str>, psk: Option<&str>) {
        let mut cmd = format!("wg set {} peer {} allowed-ips {allowed}", self.ifname, other.keys.public);
        if let Some(e) = endpoint {
            cmd += &format!(" endpoint {e}");
        }
        let pf = psk.map(TempFile::new);
        if let Some(f) = &pf {
            cmd += &format!(" preshared-key {}", f.path());
        }
        ns.sh(&cmd);
    }

    pub fn listen(&self, ns: &Netns, port: u16) {
        ns.sh(&format!("wg set {} listen-port {port}", self.ifname));
    }
}

/// A tcpdump capture on an interface of a namespace, into a file, stopped on `stop` or drop.
pub struct Capture {
    proc: Proc,
    file: TempFile,
}

impl Capture {
    /// Starts capturing what `filter` (a pcap filter) matches on `ifname` in `ns`, at most 10,000
    /// packets, and returns once tcpdump is writing.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Capture {
        let file = TempFile::new("");
        let _ = std::fs::remove_file(file.path());
        let proc = Proc::spawn(
            ns,
            &format!("tcpdump -Z root --immediate-mode -i {ifname} -n -U -c 10000 -w {} '{filter}'", file.path()),
            "tcpdump",
        );
        // The pcap file header (24 bytes) is written once the capture runs.
        let capturing =
            wait_until(Duration::from_secs(10), || std::fs::metadata(file.path()).is_ok_and(|m| m.len() >= 24));
        assert!(capturing, "tcpdump did not start on {ifname}");
        Capture { proc, file }
    }

    pub fn stop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }

    /// For a failure report: each captured WireGuard datagram's time, addresses and length, then
    /// the bytes that name it (IP 16-47: the UDP header, the message type, and for data the
    /// receiver index and counter), at most the last `max` datagrams.
    pub fn wire(&self, max: usize) -> String {
        let o = sh_out(&format!("tcpdump -n -tt -x -r {} 2>/dev/null", self.file.path()));
        let text = String::from_utf8_lossy(&o.stdout);
        let mut packets: Vec<String> = Vec::new();
        for line in text.lines() {
            let hex = line.trim_start();
            if !line.starts_with(char::is_whitespace) {
                packets.push(line.to_string());
            } else if (hex.starts_with("0x0010:") || hex.starts_with("0x0020:"))
                && let Some(p) = packets.last_mut()
            {
                p.push_str("\n    ");
                p.push_str(hex);
            }
        }
        let skip = packets.len().saturating_sub(max);
        format!(
            "\n--- wire ({} datagrams, the last {} shown)\n{}\n",
            packets.len(),
            packets.len() - skip,
            packets[skip..].join("\n")
        )
    }

    /// tcpdump's one-line summaries of the captured packets that `filter` matches.
    pub fn lines(&self, filter: &str) -> Vec<String> {
        let o = sh_out(&format!("tcpdump -n -r {} '{filter}' 2>/dev/null", self.file.path()));
        String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect()
    }
}

/// True when `imp` can run here. Missing under CI=true is a failure (`.ci/run` installs all of
/// them); otherwise a loud skip.
pub fn require_impl(test: &str, imp: Impl) -> bool {
    if imp.available() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {imp:?} is not installed, and CI=true: .ci/run should have installed it");
    }
    // Straight to the stderr handle rather than eprintln!, which the test harness captures.
    let msg = format!("\n!!!!! SKIPPED {test}: {imp:?} is not installed (see .ci/run for how to install it) !!!!!\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
    false
}

/// A file of `bytes` pseudo-random bytes, the same for the same `seed` (splitmix64), so a
/// failure can be reproduced byte for byte. Removed on drop.
pub fn payload_file(bytes: usize, seed: u64) -> TempFile {
    let mut state = seed;
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        data.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    data.truncate(bytes);
    let file = TempFile::new("");
    std::fs::write(file.path(), &data).unwrap();
    file
}

/// The SHA-256 of a file, as `sha256sum` prints it (hex).
pub fn sha256_file(path: &str) -> String {
    sh(&format!("sha256sum < {path}")).split_whitespace().next().unwrap_or_default().to_string()
}

/// Sends the file `payload` over one TCP connection (ncat) from `from` to `to_addr`:`port`, an
/// address of `to`, and asserts that the receiver got exactly the same bytes: the same length
/// and the same SHA-256 (on a mismatch, `cmp` names the first differing byte). `limit` bounds
/// each side; it is a hang guard, never a performance assertion.
pub fn tcp_bulk(from: &Netns, to: &Netns, to_addr: &str, port: u16, payload: &TempFile, limit: Duration, what: &str) {
    let received = TempFile::new("");
    let secs = limit.as_secs().max(1);
    let mut receiver = Proc::spawn(
        to,
        &format!("timeout {secs} ncat -l --recv-only {to_addr} {port} > {}", received.path()),
        &format!("{what}: ncat receiver"),
    );
    let listening = wait_until(Duration::from_secs(10), || {
        String::from_utf8_lossy(&to.sh_out(&format!("ss -Hltn sport = :{port}")).stdout).contains("LISTEN")
    });
    assert!(listening, "{what}: ncat did not start listening on {to_addr} port {port}");

    let send = from.sh_out(&format!("timeout {secs} ncat --send-only {to_addr} {port} < {}", payload.path()));
    assert!(
        send.status.success(),
        "{what}: sending to {to_addr} port {port} failed (status {:?}): {}",
        send.status,
        String::from_utf8_lossy(&send.stderr)
    );
    let ended = wait_until(limit, || !receiver.running());
    assert!(ended, "{what}: the receiver did not see the end of the stream within {secs} s");
    let status = receiver.child.wait().expect("receiver status");
    assert!(status.success(), "{what}: the receiver failed: {status:?}");

    let (want_len, got_len) =
        (std::fs::metadata(payload.path()).unwrap().len(), std::fs::metadata(received.path()).unwrap().len());
    let (want, got) = (sha256_file(payload.path()), sha256_file(received.path()));
    if want_len != got_len || want != got {
        let cmp = sh_out(&format!("cmp {} {} | head -1", payload.path(), received.path()));
        panic!(
            "{what}: received data differs from sent data: sent {want_len} bytes (sha256 {want}), received \
             {got_len} bytes (sha256 {got}); cmp: {}",
            String::from_utf8_lossy(&cmp.stdout).trim()
        );
    }
}

/// The last handshake time with nanoseconds, read straight from the UAPI socket (`wg show` only
/// prints seconds). Each completed handshake gives a new value. (0, 0) means never.
pub fn uapi_last_handshake(ifname: &str) -> (u64, u32) {
    let path = format!("/var/run/wireguard/{ifname}.sock");
    let mut s = UnixStream::connect(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"get=1\n\n").unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // The answer ends with "errno=N\n\n"; read until then (bounded by the read timeout).
    while !text.contains("errno=") || !text.ends_with("\n\n") {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{path}: read: {e}; so far {text:?}"));
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(text.contains("errno=0"), "{path}: get failed: {text:?}");
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(|v| v.parse().unwrap())
    };
    let sec = field("last_handshake_time_sec").unwrap_or_else(|| panic!("{path}: no handshake time: {text:?}"));
    let nsec = field("last_handshake_time_nsec").unwrap_or(0);
    (sec, nsec as u32)
}
