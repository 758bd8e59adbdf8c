//! Records known-answer vectors of veil's protocol core talking to wireguard-go.
//!
//! ```text
//! cargo run --release --example record_wireguard_go_kat -- tests/data/wireguard_go_kat.txt
//! ```
//!
//! Needs root, `/dev/net/tun`, `wireguard-go`, `wg`, `ip`, `ping`, `kill` and `unshare`. The
//! recorder first runs itself again in a private network namespace (`unshare --net`), so the TUN
//! devices, the 10.77.x.0/24 addresses and the UDP ports it uses exist only there and vanish
//! with it; only wireguard-go's UAPI socket lives outside (in `/var/run/wireguard`, shared by
//! all namespaces), and it is removed at the end.
//!
//! veil's `Interface` runs on a fixed seed and a `WallClock` anchored at a fixed `SystemTime`;
//! its `now` is the anchor `Instant` plus the real elapsed time, and every offset used is
//! written to the output, so `tests/kat_wireguard_go.rs` can replay the same calls at the same
//! virtual times and must get the same bytes.
//!
//! - Scenario A (no psk): veil sends a hand-built ICMP echo request 10.77.0.2 -> 10.77.0.1,
//!   which makes it initiate; wireguard-go responds; veil sends the queued ping as data;
//!   the kernel behind wireguard-go answers and wireguard-go sends the echo reply back.
//! - Scenario B (with psk): `ping 10.77.1.2` on the host makes wireguard-go initiate; veil
//!   responds; wireguard-go sends the ping as data.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use veil::noise::{Config, Interface, Output, PeerId, PresharedKey, Received, StaticSecret, WallClock};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Upper bound of every wait: a command, a socket appearing, a datagram arriving.
const WAIT: Duration = Duration::from_secs(5);

/// The fixed inputs of one scenario.
struct Fixed {
    veil_private: [u8; 32],
    wg_private: [u8; 32],
    psk: Option<[u8; 32]>,
    seed: [u8; 32],
    /// The wall-clock time (since the Unix epoch) of the anchor `Instant`.
    anchor_unix_ns: u64,
    veil_addr: SocketAddr,
    wg_port: u16,
}

fn fixed_a() -> Fixed {
    Fixed {
        veil_private: bytes_from(0x10),
        wg_private: bytes_from(0x40),
        psk: None,
        seed: bytes_from(0x70),
        anchor_unix_ns: 1_767_225_600_123_456_789, // 2026-01-01T00:00:00.123456789Z
        veil_addr: "127.0.0.1:47101".parse().expect("literal address"),
        wg_port: 47102,
    }
}

fn fixed_b() -> Fixed {
    Fixed {
        veil_private: bytes_from(0x20),
        wg_private: bytes_from(0x50),
        psk: Some(bytes_from(0x90)),
        seed: bytes_from(0xa0),
        anchor_unix_ns: 1_767_225_660_987_654_321, // 2026-01-01T00:01:00.987654321Z
        veil_addr: "127.0.0.1:47201".parse().expect("literal address"),
        wg_port: 47202,
    }
}

/// 32 bytes counting up from `start` (wrapping): fixed and obviously not secret.
fn bytes_from(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Collects what veil sends and delivers during one call.
#[derive(Default)]
struct Capture {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    delivered: Vec<(PeerId, Vec<u8>)>,
}

impl Output for Capture {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        self.delivered.push((peer, packet.to_vec()));
    }
}

impl Capture {
    /// The one datagram the last call sent, which must be of `kind`; it is also put on the wire.
    fn take_one_sent(&mut self, kind: u8, sock: &UdpSocket, what: &str) -> Result<(SocketAddr, Vec<u8>)> {
        let sent = std::mem::take(&mut self.sent);
        if sent.len() != 1 || sent[0].1.first() != Some(&kind) {
            let kinds: Vec<_> = sent.iter().map(|(_, d)| d.first().copied()).collect();
            return Err(format!("{what}: expected one datagram of type {kind}, veil sent types {kinds:?}").into());
        }
        let (to, bytes) = sent.into_iter().next().expect("length checked");
        sock.send_to(&bytes, to)?;
        Ok((to, bytes))
    }

    fn take_one_delivered(&mut self, what: &str) -> Result<Vec<u8>> {
        let delivered = std::mem::take(&mut self.delivered);
        if delivered.len() != 1 {
            return Err(format!("{what}: expected one delivered packet, got {}", delivered.len()).into());
        }
        Ok(delivered.into_iter().next().expect("length checked").1)
    }
}

/// Runs a command to completion within [`WAIT`], feeding it `stdin`; fails on a non-zero exit.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input)?;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{shown}: no exit within {WAIT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("{shown}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Waits (within [`WAIT`]) for a child to exit; kills it if it does not.
fn reap(child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Set in the copy of the recorder that runs inside its private network namespace.
const NETNS_ENV: &str = "VEIL_KAT_IN_PRIVATE_NETNS";

/// Runs this recorder again inside a fresh network namespace (`unshare --net`) and returns its
/// exit status; `None` when already inside, after bringing that namespace's loopback up.
fn private_netns() -> Result<Option<std::process::ExitStatus>> {
    if std::env::var_os(NETNS_ENV).is_some() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]), None)?;
        return Ok(None);
    }
    // The inner run bounds each of its own waits, so this wait is bounded too.
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env(NETNS_ENV, "1")
        .status()
        .map_err(|e| format!("unshare: {e}"))?;
    Ok(Some(status))
}

/// A private directory for key files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("veil-kat-{}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(TempDir(path))
    }

    /// Writes a base64 key to a file only we can read, for `wg set ... private-key FILE`.
    fn key_file(&self, name: &str, key: &[u8; 32]) -> Result<PathBuf> {
        let path = self.0.join(name);
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        writeln!(f, "{}", b64(key))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A wireguard-go child process and its interface; stopped and cleaned up on drop.
struct WireguardGo {
    name: String,
    child: Child,
    log: PathBuf,
}

fn socket_path(name: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{name}.sock"))
}

impl WireguardGo {
    fn start(name: &str, log: PathBuf) -> Result<Self> {
        if socket_path(name).exists() {
            return Err(format!("{} exists: is another wireguard-go using {name}?", socket_path(name).display()).into());
        }
        let child = Command::new("wireguard-go")
            .args(["-f", name])
            .env("LOG_LEVEL", "verbose")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(Stdio::from(fs::File::options().append(true).open(&log)?))
            .spawn()
            .map_err(|e| format!("wireguard-go: {e}"))?;
        let mut wg = WireguardGo { name: name.to_string(), child, log };
        let deadline = Instant::now() + WAIT;
        while !socket_path(name).exists() {
            if let Some(status) = wg.child.try_wait()? {
                return Err(format!("wireguard-go exited early ({status}); log: {}", wg.log_text()).into());
            }
            if Instant::now() >= deadline {
                return Err(format!("wireguard-go made no UAPI socket within {WAIT:?}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(wg)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Configures the interface and brings it up with `address` (no IPv6, so the kernel sends
    /// nothing into the tunnel on its own).
    fn configure(&self, wg_set: &[&str], address: &str) -> Result<()> {
        run(Command::new("wg").arg("set").arg(&self.name).args(wg_set), None)?;
        fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", self.name), "1")?;
        run(Command::new("ip").args(["addr", "add", address, "dev", &self.name]), None)?;
        run(Command::new("ip").args(["link", "set", &self.name, "up"]), None)?;
        Ok(())
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        // SIGTERM lets wireguard-go close its TUN and remove its socket itself. The child is
        // not reaped yet, so its pid still names it.
        let _ = run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]), None);
        reap(&mut self.child);
        let _ = run(Command::new("ip").args(["link", "del", &self.name]), None);
        let _ = fs::remove_file(socket_path(&self.name));
    }
}

/// Receives the next datagram within [`WAIT`]; it must be of `kind`.
fn recv(sock: &UdpSocket, kind: u8, what: &str, wg: &WireguardGo) -> Result<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(WAIT))?;
    let (n, src) = match sock.recv_from(&mut buf) {
        Ok(x) => x,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(
                format!("{what}: nothing from wireguard-go within {WAIT:?}; its log:\n{}", wg.log_text()).into()
            );
        }
        Err(e) => return Err(e.into()),
    };
    buf.truncate(n);
    if buf.first() != Some(&kind) {
        return Err(format!("{what}: expected message type {kind}, got {}", hex(&buf)).into());
    }
    Ok((src, buf))
}

/// Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request from `src` to `dst`, checksums included.
fn echo_request(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45; // IPv4, 5-word header
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x7665u16.to_be_bytes()); // identification
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8; // echo request, code 0
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(payload);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// Output lines, `key = value`.
struct Record(String);

impl Record {
    fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{key} = {value}");
    }
    fn bytes(&mut self, key: &str, value: &[u8]) {
        self.put(key, hex(value));
    }
    fn offset(&mut self, key: &str, d: Duration) {
        self.put(key, d.as_nanos());
    }
    fn comment(&mut self, text: &str) {
        let _ = writeln!(self.0, "{}", format!("# {text}").trim_end());
    }
}

/// The interface, keys and clock of one scenario.
struct Veil {
    iface: Interface,
    peer: PeerId,
    t0: Instant,
    sock: UdpSocket,
    out: Capture,
}

impl Veil {
    fn new(f: &Fixed, rec: &mut Record, prefix: &str) -> Result<Veil> {
        let secret = StaticSecret::from_bytes(f.veil_private);
        let wg_secret = StaticSecret::from_bytes(f.wg_private);
        let wg_public = wg_secret.public_key();
        // wg(8) must agree with veil on both public keys, or nothing below can work.
        for (name, s) in [("veil", &secret), ("wireguard-go", &wg_secret)] {
            let theirs = run(Command::new("wg").arg("pubkey"), Some(format!("{}\n", b64(s.as_bytes())).as_bytes()))?;
            if theirs != s.public_key().to_base64() {
                return Err(format!("{name}: wg pubkey says {theirs}, veil {}", s.public_key().to_base64()).into());
            }
        }
        rec.bytes(&format!("{prefix}.veil_private"), secret.as_bytes());
        rec.bytes(&format!("{prefix}.veil_public"), secret.public_key().as_bytes());
        rec.bytes(&format!("{prefix}.wg_private"), wg_secret.as_bytes());
        rec.bytes(&format!("{prefix}.wg_public"), wg_public.as_bytes());
        if let Some(psk) = f.psk {
            rec.bytes(&format!("{prefix}.psk"), &psk);
        }
        rec.bytes(&format!("{prefix}.seed"), &f.seed);
        rec.put(&format!("{prefix}.anchor_unix_ns"), f.anchor_unix_ns);
        rec.put(&format!("{prefix}.veil_addr"), f.veil_addr);

        let sock = UdpSocket::bind(f.veil_addr)?;
        let t0 = Instant::now();
        let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_nanos(f.anchor_unix_ns));
        let mut iface = Interface::new(secret, Config::default(), clock, f.seed);
        let peer = iface.add_peer(wg_public)?;
        if let Some(psk) = f.psk {
            iface.set_psk(peer, Some(PresharedKey::from_bytes(psk)))?;
        }
        Ok(Veil { iface, peer, t0, sock, out: Capture::default() })
    }

    /// The virtual `now` (anchor plus real elapsed time) and its offset from the anchor.
    fn now(&self) -> (Instant, Duration) {
        let offset = self.t0.elapsed();
        (self.t0 + offset, offset)
    }
}

/// A: veil initiates, no psk.
fn scenario_a(ifname: &str, dir: &TempDir, rec: &mut Record) -> Result<()> {
    let f = fixed_a();
    rec.comment("Scenario A: veil initiates (no psk). wireguard-go has 10.77.0.1/24; veil is 10.77.0.2.");
    let wg = WireguardGo::start(ifname, dir.0.join(format!("{ifname}.log")))?;
    let mut veil = Veil::new(&f, rec, "a")?;
    let key = dir.key_file("a-wg.key", &f.wg_private)?;
    let wg_port = f.wg_port.to_string();
    let veil_public = b64(StaticSecret::from_bytes(f.veil_private).public_key().as_bytes());
    let endpoint = f.veil_addr.to_string();
    wg.configure(
        &[
            "private-key",
            key.to_str().ok_or("temp path is not UTF-8")?,
            "listen-port",
            &wg_port,
            "peer",
            &veil_public,
            "allowed-ips",
            "10.77.0.2/32",
            "endpoint",
            &endpoint,
        ],
        "10.77.0.1/24",
    )?;
    let wg_addr: SocketAddr = format!("127.0.0.1:{}", f.wg_port).parse()?;
    rec.put("a.wg_addr", wg_addr);
    veil.iface.set_endpoint(veil.peer, Some(wg_addr))?;

    let ping = echo_request([10, 77, 0, 2], [10, 77, 0, 1], 0x6b61, 1, b"veil <-> wireguard-go known answer");
    rec.bytes("a.ping", &ping);

    // 1. veil queues the ping and initiates.
    let (now, off) = veil.now();
    let outcome = veil.iface.send(veil.peer, &ping, now, &mut veil.out)?;
    if outcome != veil::noise::SendOutcome::Queued {
        return Err(format!("send: expected Queued, got {outcome:?}").into());
    }
    let (_, initiation) = veil.out.take_one_sent(1, &veil.sock, "initiation")?;
    rec.offset("a.t_send_ns", off);
    rec.bytes("a.veil_initiation", &initiation);

    // 2. wireguard-go responds; veil completes the handshake and sends the queued ping.
    let (src, response) = recv(&veil.sock, 2, "response", &wg)?;
    let (now, off) = veil.now();
    let mut buf = response.clone();
    match veil.iface.receive(src, &mut buf, now, false, &mut veil.out) {
        Ok(Received::Response(p)) if p == veil.peer => {}
        other => return Err(format!("response: veil said {other:?}").into()),
    }
    let (_, data) = veil.out.take_one_sent(4, &veil.sock, "veil data")?;
    rec.put("a.wg_src", src);
    rec.offset("a.t_response_ns", off);
    rec.bytes("a.wg_response", &response);
    rec.bytes("a.veil_data", &data);

    // 3. The kernel behind wireguard-go answers the ping; veil decrypts the echo reply.
    let (src, wg_data) = recv(&veil.sock, 4, "wireguard-go data", &wg)?;
    let (now, off) = veil.now();
    let mut buf = wg_data.clone();
    match veil.iface.receive(src, &mut buf, now, false, &mut veil.out) {
        Ok(Received::Data { peer, .. }) if peer == veil.peer => {}
        other => return Err(format!("wireguard-go data: veil said {other:?}").into()),
    }
    let delivered = veil.out.take_one_delivered("echo reply")?;
    rec.offset("a.t_data_ns", off);
    rec.bytes("a.wg_data", &wg_data);
    rec.bytes("a.delivered", &delivered);
    if !veil.out.sent.is_empty() {
        return Err("veil sent something after the echo reply".into());
    }
    drop(wg);
    Ok(())
}

/// B: wireguard-go initiates, with a psk.
fn scenario_b(ifname: &str, dir: &TempDir, rec: &mut Record) -> Result<()> {
    let f = fixed_b();
    rec.comment("Scenario B: wireguard-go initiates (psk). wireguard-go has 10.77.1.1/24; veil is 10.77.1.2.");
    rec.comment("The host runs `ping -n -c1 -W2 -s 40 -p 5665696c 10.77.1.2`; wireguard-go initiates to veil.");
    let wg = WireguardGo::start(ifname, dir.0.join(format!("{ifname}.log")))?;
    let mut veil = Veil::new(&f, rec, "b")?;
    let key = dir.key_file("b-wg.key", &f.wg_private)?;
    let psk = dir.key_file("b.psk", &f.psk.ok_or("scenario B has a psk")?)?;
    let wg_port = f.wg_port.to_string();
    let veil_public = b64(StaticSecret::from_bytes(f.veil_private).public_key().as_bytes());
    let endpoint = f.veil_addr.to_string();
    wg.configure(
        &[
            "private-key",
            key.to_str().ok_or("temp path is not UTF-8")?,
            "listen-port",
            &wg_port,
            "peer",
            &veil_public,
            "preshared-key",
            psk.to_str().ok_or("temp path is not UTF-8")?,
            "allowed-ips",
            "10.77.1.2/32",
            "endpoint",
            &endpoint,
        ],
        "10.77.1.1/24",
    )?;

    let mut ping = Command::new("ping")
        .args(["-n", "-c1", "-W2", "-s", "40", "-p", "5665696c", "10.77.1.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> Result<()> {
        // 1. wireguard-go's initiation; veil responds.
        let (src, initiation) = recv(&veil.sock, 1, "initiation", &wg)?;
        let (now, off) = veil.now();
        let mut buf = initiation.clone();
        match veil.iface.receive(src, &mut buf, now, false, &mut veil.out) {
            Ok(Received::Initiation(p)) if p == veil.peer => {}
            other => return Err(format!("initiation: veil said {other:?}").into()),
        }
        let (to, response) = veil.out.take_one_sent(2, &veil.sock, "response")?;
        if to != src {
            return Err(format!("veil answered {to}, the initiation came from {src}").into());
        }
        rec.put("b.wg_src", src);
        rec.offset("b.t_initiation_ns", off);
        rec.bytes("b.wg_initiation", &initiation);
        rec.bytes("b.veil_response", &response);

        // 2. wireguard-go sends the ping under the new session (key confirmation for veil).
        let (src, wg_data) = recv(&veil.sock, 4, "wireguard-go data", &wg)?;
        let (now, off) = veil.now();
        let mut buf = wg_data.clone();
        match veil.iface.receive(src, &mut buf, now, false, &mut veil.out) {
            Ok(Received::Data { peer, .. }) if peer == veil.peer => {}
            other => return Err(format!("wireguard-go data: veil said {other:?}").into()),
        }
        let delivered = veil.out.take_one_delivered("ping")?;
        rec.offset("b.t_data_ns", off);
        rec.bytes("b.wg_data", &wg_data);
        rec.bytes("b.delivered", &delivered);
        if !veil.out.sent.is_empty() {
            return Err("veil sent something after the ping".into());
        }
        Ok(())
    })();
    // ping gets no answer (veil is a library here, not a host): stop it rather than wait.
    let _ = ping.kill();
    let _ = ping.wait();
    drop(wg);
    result
}

fn main() -> Result<()> {
    let out_path = std::env::args_os().nth(1).ok_or("usage: record_wireguard_go_kat OUTFILE")?;
    if let Some(status) = private_netns()? {
        std::process::exit(status.code().unwrap_or(1));
    }
    let dir = TempDir::new()?;
    let tag = std::process::id() % 1_000_000;

    let dpkg = |pkg: &str| run(Command::new("dpkg-query").args(["-W", "-f=${Version}", pkg]), None);
    let mut rec = Record(String::new());
    rec.comment("Known-answer vectors: veil's protocol core against wireguard-go (an independent implementation).");
    rec.comment(
        "Produced by: cargo run --release --example record_wireguard_go_kat -- tests/data/wireguard_go_kat.txt",
    );
    rec.comment(&format!("wireguard-go: {} (Debian package wireguard-go)", dpkg("wireguard-go")?));
    rec.comment(&format!("wireguard-tools: {} (wg, used to configure it)", dpkg("wireguard-tools")?));
    rec.comment(&format!("Kernel: {}", run(Command::new("uname").arg("-r"), None)?));
    rec.comment(&format!("Recorded: {}", run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]), None)?));
    rec.comment("");
    rec.comment("Format: `key = value`. Byte strings are lower-case hex; *_ns are decimal nanoseconds;");
    rec.comment("*_addr/*_src are ip:port. veil runs Interface::new(veil_private, Config::default(),");
    rec.comment("WallClock::new(t0, UNIX_EPOCH + anchor_unix_ns), seed) and each call gets now = t0 + t_*_ns.");
    rec.comment("Private keys are stored clamped. wg_* are wireguard-go's bytes, veil_* are veil's.");
    rec.comment("Calls, in order (no tick in between):");
    rec.comment("  A: add_peer(wg_public); set_endpoint(wg_addr); send(ping) @t_send -> veil_initiation;");
    rec.comment(
        "     receive(wg_src, wg_response) @t_response -> veil_data; receive(wg_src, wg_data) @t_data -> delivered",
    );
    rec.comment(
        "  B: add_peer(wg_public); set_psk(psk); receive(wg_src, wg_initiation) @t_initiation -> veil_response;",
    );
    rec.comment("     receive(wg_src, wg_data) @t_data -> delivered");
    rec.comment("");

    scenario_a(&format!("kat{tag}a"), &dir, &mut rec)?;
    rec.comment("");
    scenario_b(&format!("kat{tag}b"), &dir, &mut rec)?;

    fs::write(&out_path, rec.0)?;
    eprintln!("wrote {}", Path::new(&out_path).display());
    Ok(())
}
