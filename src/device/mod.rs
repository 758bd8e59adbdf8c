//! The device: owns the TUN device, the UDP sockets, the UAPI socket and the threads that move
//! packets between them and the protocol core.
//!
//! Threads: one reads the TUN (outbound: allowed-IPs lookup, then the core seals), one per UDP
//! socket reads datagrams (data is opened inline; handshake messages go to a bounded queue),
//! one works through that handshake queue, one fires the core's timers at their deadlines, and
//! one serves the UAPI socket. A handshake flood fills only its own queue (and sets "under
//! load", which makes the core demand cookies), so it cannot stall data.
//!
//! The protocol state sits behind one mutex; each thread takes it per packet. The shapes that
//! make this fast later (batches per lock, sealing outside the lock with the core's shared
//! sessions, offloads) fit in the same threads.

pub mod allowed_ips;
pub mod uapi;
pub mod udp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

use crate::noise::{self, Config, Interface, Output, PeerId, StaticSecret, WallClock, ip};
use allowed_ips::AllowedIps;
use uapi::{PeerReport, SetRequest, UapiError};
use udp::Sockets;

/// Capacity of the handshake queue; "under load" starts at 1/8 of it, as in the kernel.
const HANDSHAKE_QUEUE: usize = 4096;
const UNDER_LOAD_AT: usize = HANDSHAKE_QUEUE / 8;
/// Once under load, stay so for this long.
const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Largest datagram or packet handled.
const MAX_PACKET: usize = 65535 + 64;
/// A UAPI connection idle (or stalled inside a request) this long is closed.
const UAPI_IDLE: Duration = Duration::from_secs(30);
/// At most this many UAPI connections are served at once; more are closed at once.
const UAPI_MAX_CONNECTIONS: usize = 128;
/// The longest UAPI line accepted (the longest valid one is under 100 bytes).
const MAX_UAPI_LINE: usize = 4096;
/// How often, at most, the TUN's MTU is read again while packets flow.
const MTU_REREAD: Duration = Duration::from_secs(1);

/// Why the device stopped.
pub type ExitReason = String;

struct State {
    iface: Interface,
    /// False until a private key is set: nothing is sent or accepted without one.
    has_key: bool,
    allowed: AllowedIps<PeerId>,
    listen_port: u16,
    fwmark: u32,
    /// When the timer thread will wake next.
    timer_wake: Option<Instant>,
}

/// The device's shared parts.
struct Shared {
    state: Mutex<State>,
    timer_cv: Condvar,
    tun: tun_rs::SyncDevice,
    sockets: RwLock<Arc<Sockets>>,
    generation: AtomicU64,
    /// The reader threads of the current sockets (joined when the sockets are replaced).
    readers: Mutex<Vec<JoinHandle<()>>>,
    handshake_tx: SyncSender<(SocketAddr, Vec<u8>)>,
    handshake_queued: AtomicUsize,
    under_load_until: Mutex<Option<Instant>>,
    stop: AtomicBool,
    exit: Mutex<Option<ExitReason>>,
    /// Signalled (with `exit`) when something asks the device to stop.
    exit_cv: Condvar,
    dropped_not_allowed: AtomicU64,
    /// UAPI connections being served.
    uapi_connections: AtomicUsize,
}

/// A running device (clones are handles to the same device).
#[derive(Clone)]
pub struct Device {
    shared: Arc<Shared>,
}

/// Sends datagrams on the sockets and writes delivered packets to the TUN after checking that
/// their source address routes back to the peer they came from.
struct Io<'a> {
    sockets: &'a Sockets,
    tun: &'a tun_rs::SyncDevice,
    allowed: &'a AllowedIps<PeerId>,
    dropped: &'a AtomicU64,
}

impl Output for Io<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        let _ = self.sockets.send_to(datagram, to);
    }

    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        let owner = ip::source(packet).and_then(|src| self.allowed.lookup(src));
        if owner == Some(peer) {
            let _ = self.tun.send(packet);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Shared {
    /// The output the core writes to, bound to `sockets` and the routing table `allowed`.
    fn io<'a>(&'a self, sockets: &'a Sockets, allowed: &'a AllowedIps<PeerId>) -> Io<'a> {
        Io { sockets, tun: &self.tun, allowed, dropped: &self.dropped_not_allowed }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sockets(&self) -> Arc<Sockets> {
        self.sockets.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn request_stop(&self, reason: impl Into<String>) {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            *exit = Some(reason.into());
        }
        self.stop.store(true, Ordering::SeqCst);
        self.timer_cv.notify_all();
        self.exit_cv.notify_all();
    }

    /// Runs `f` on the core with an output bound to the current sockets, then wakes the timer
    /// thread if the core now has an earlier deadline.
    /// Does nothing (returns `None`) while the device has no private key.
    fn with_core<R>(&self, f: impl FnOnce(&mut Interface, &mut Io<'_>) -> R) -> Option<R> {
        let mut guard = self.lock();
        if !guard.has_key {
            return None;
        }
        // Taken under the lock: sockets replaced by a set request are never used afterwards.
        let sockets = self.sockets();
        let state = &mut *guard;
        let mut io = self.io(&sockets, &state.allowed);
        let r = f(&mut state.iface, &mut io);
        let next = state.iface.next_deadline();
        if next.is_some() && (state.timer_wake.is_none() || next < state.timer_wake) {
            self.timer_cv.notify_one();
        }
        Some(r)
    }

    fn under_load(&self, now: Instant) -> bool {
        let mut until = self.under_load_until.lock().unwrap_or_else(|e| e.into_inner());
        if self.handshake_queued.load(Ordering::Relaxed) >= UNDER_LOAD_AT {
            *until = Some(now + UNDER_LOAD_HOLD);
        }
        until.is_some_and(|t| now < t)
    }
}

fn tun_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut mtu_read = Instant::now();
    loop {
        let n = match shared.tun.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.request_stop(format!("TUN device is gone ({e})"));
                return;
            }
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let packet = &buf[..n];
        let Some(dst) = ip::destination(packet) else { continue };
        let now = Instant::now();
        // The padding cap follows the TUN's MTU (`ip link set mtu` after start); reading it is a
        // system call, so at most once per MTU_REREAD while packets flow. (Where the TUN was
        // moved to another namespace it can no longer be read by name: the last value stays.)
        let mtu = if now.duration_since(mtu_read) >= MTU_REREAD {
            mtu_read = now;
            shared.tun.mtu().ok().map(|m| m as usize)
        } else {
            None
        };
        shared.with_core(|iface, io| {
            if let Some(mtu) = mtu {
                follow_mtu(iface, mtu);
            }
            let Some(peer) = io.allowed.lookup(dst) else { return };
            let _ = iface.send(peer, packet, now, io);
        });
    }
}

/// Caps the padding of data messages at `mtu` from now on (the TUN's MTU, read again).
fn follow_mtu(iface: &mut Interface, mtu: usize) {
    if iface.config().mtu != mtu {
        let config = Config { mtu, ..iface.config().clone() };
        iface.set_config(config);
    }
}

fn udp_loop(shared: Arc<Shared>, sockets: Arc<Sockets>, v6: bool, generation: u64) {
    let sock = if v6 { sockets.v6.as_ref() } else { sockets.v4.as_ref() };
    let Some(sock) = sock else { return };
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let r = Sockets::recv_from(sock, &mut buf);
        // Sockets of an older generation were replaced: leave (newer readers may start first).
        if shared.stop.load(Ordering::Relaxed) || shared.generation.load(Ordering::SeqCst) > generation {
            return;
        }
        let (n, src) = match r {
            Ok((n, Some(src))) => (n, src),
            // Shut down but not (yet) told to stop: nothing to read; do not spin.
            Ok((_, None)) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if n == 0 {
            continue;
        }
        if buf[0] == noise::messages::TYPE_DATA {
            let now = Instant::now();
            shared.with_core(|iface, io| {
                if let Err(e) = iface.receive(src, &mut buf[..n], now, false, io) {
                    tracing::trace!("{src}: data message refused: {e}");
                }
            });
        } else {
            // Count before sending: the handshake thread may take the message and decrement
            // before this thread runs again, and the count must never wrap below zero (a
            // wrapped count reads as a full queue and answers every initiation with a cookie).
            shared.handshake_queued.fetch_add(1, Ordering::Relaxed);
            match shared.handshake_tx.try_send((src, buf[..n].to_vec())) {
                Ok(()) => {}
                Err(e) => {
                    shared.handshake_queued.fetch_sub(1, Ordering::Relaxed);
                    match e {
                        TrySendError::Full(_) => {} // dropped: the queue is the flood limit
                        TrySendError::Disconnected(_) => return,
                    }
                }
            }
        }
    }
}

fn handshake_loop(shared: Arc<Shared>, rx: Receiver<(SocketAddr, Vec<u8>)>) {
    while let Ok((src, mut datagram)) = rx.recv() {
        shared.handshake_queued.fetch_sub(1, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let load = shared.under_load(now);
        shared.with_core(|iface, io| {
            let result = iface.receive(src, &mut datagram, now, load, io);
            if tracing::enabled!(tracing::Level::DEBUG) {
                log_handshake(iface, src, &result);
            }
        });
    }
}

/// A short form of a peer's public key for the log, like wireguard-go's `peer(AbCd…wXyZ)`.
fn peer_name(iface: &Interface, id: PeerId) -> String {
    match iface.peer(id) {
        Some(p) => {
            let b64 = p.public_key().to_base64();
            format!("peer({}…{})", &b64[..4], &b64[39..43])
        }
        None => "peer(removed)".into(),
    }
}

fn log_handshake(iface: &Interface, src: SocketAddr, result: &Result<noise::Received, noise::ReceiveError>) {
    match result {
        Ok(noise::Received::Initiation(id)) => {
            tracing::debug!("{}: handshake initiation from {src}, response sent", peer_name(iface, *id))
        }
        Ok(noise::Received::Response(id)) => {
            tracing::debug!("{}: handshake response from {src}, session established", peer_name(iface, *id))
        }
        Ok(noise::Received::CookieReply(id)) => {
            tracing::debug!("{}: cookie reply from {src} (the peer is under load)", peer_name(iface, *id))
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("{src}: handshake message refused: {e}"),
    }
}

fn timer_loop(shared: Arc<Shared>) {
    let sockets_of = |s: &Shared| s.sockets();
    let mut guard = shared.lock();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        {
            let sockets = sockets_of(&shared);
            let state = &mut *guard;
            let mut io = shared.io(&sockets, &state.allowed);
            state.iface.tick(now, &mut io);
        }
        let next = guard.iface.next_deadline();
        guard.timer_wake = next;
        let wait = next.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(Duration::from_secs(3600));
        guard = shared.timer_cv.wait_timeout(guard, wait).unwrap_or_else(|e| e.into_inner()).0;
    }
}

impl Device {
    /// Starts the device's threads on a TUN device that is already open. The UDP sockets are
    /// bound to a free port until `listen_port` is set.
    pub fn start(tun: tun_rs::SyncDevice, mut config: Config) -> std::io::Result<Device> {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        if let Ok(mtu) = tun.mtu() {
            config.mtu = mtu as usize;
        }
        let placeholder = StaticSecret::random(&mut OsRng);
        let iface = Interface::new(placeholder, config, WallClock::system(), seed);
        let sockets = Arc::new(Sockets::bind(0, 0)?);
        let (handshake_tx, handshake_rx) = sync_channel(HANDSHAKE_QUEUE);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                iface,
                has_key: false,
                allowed: AllowedIps::new(),
                listen_port: 0,
                fwmark: 0,
                timer_wake: None,
            }),
            timer_cv: Condvar::new(),
            tun,
            sockets: RwLock::new(sockets.clone()),
            generation: AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            handshake_tx,
            handshake_queued: AtomicUsize::new(0),
            under_load_until: Mutex::new(None),
            stop: AtomicBool::new(false),
            exit: Mutex::new(None),
            exit_cv: Condvar::new(),
            dropped_not_allowed: AtomicU64::new(0),
            uapi_connections: AtomicUsize::new(0),
        });
        let s = shared.clone();
        thread::Builder::new().name("veil-tun".into()).spawn(move || tun_loop(s))?;
        let s = shared.clone();
        thread::Builder::new().name("veil-handshake".into()).spawn(move || handshake_loop(s, handshake_rx))?;
        let s = shared.clone();
        thread::Builder::new().name("veil-timers".into()).spawn(move || timer_loop(s))?;
        *shared.readers.lock().unwrap_or_else(|e| e.into_inner()) = spawn_udp_readers(&shared, sockets, 0)?;
        Ok(Device { shared })
    }

    /// Serves UAPI connections on `listener` in a thread of its own.
    pub fn serve_uapi(&self, listener: UnixListener) -> std::io::Result<()> {
        let shared = self.shared.clone();
        thread::Builder::new().name("veil-uapi".into()).spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if shared.uapi_connections.fetch_add(1, Ordering::SeqCst) >= UAPI_MAX_CONNECTIONS {
                    shared.uapi_connections.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("UAPI: {UAPI_MAX_CONNECTIONS} connections open already; one more refused");
                    continue;
                }
                let s = shared.clone();
                let spawned = thread::Builder::new().name("veil-uapi-conn".into()).spawn(move || {
                    serve_conn(&s, conn);
                    s.uapi_connections.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    shared.uapi_connections.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
        Ok(())
    }

    pub fn stop(&self, reason: &str) {
        self.shared.request_stop(reason);
        self.shared.sockets().shutdown();
    }

    /// Waits up to `timeout` for something to ask the device to stop; true if it was asked.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let exit = self.shared.exit.lock().unwrap_or_else(|e| e.into_inner());
        let (exit, _) =
            self.shared.exit_cv.wait_timeout_while(exit, timeout, |e| e.is_none()).unwrap_or_else(|e| e.into_inner());
        exit.is_some()
    }

    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers one UAPI request given as text (`get=1\n\n` or `set=1\n...\n\n`).
    pub fn uapi(&self, request: &str) -> String {
        let mut lines = request.lines();
        let mut out = String::new();
        match lines.next() {
            Some(first) => handle_request(&self.shared, first, &mut lines.take_while(|l| !l.is_empty()), &mut out),
            None => out.push_str("errno=-22\n\n"),
        }
        out
    }
}

fn spawn_udp_readers(
    shared: &Arc<Shared>,
    sockets: Arc<Sockets>,
    generation: u64,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut readers = Vec::new();
    for v6 in [false, true] {
        let (s, socks) = (shared.clone(), sockets.clone());
        readers.push(thread::Builder::new().name("veil-udp".into()).spawn(move || udp_loop(s, socks, v6, generation))?);
    }
    Ok(readers)
}

/// Sockets replaced by a set request, with their reader threads.
struct Retired {
    sockets: Arc<Sockets>,
    readers: Vec<JoinHandle<()>>,
}

impl Retired {
    /// Waits for the readers to leave (they were woken by the shutdown and see the new
    /// generation), then closes the sockets, so that their port is free again when the set
    /// request is answered. Must run without the state lock: a reader may be waiting for it.
    fn close(self) {
        for reader in self.readers {
            let _ = reader.join();
        }
        if Arc::strong_count(&self.sockets) > 1 {
            tracing::warn!("old UDP sockets are still in use; their port is freed once that ends");
        }
    }
}

/// One line of a UAPI request, without its newline.
enum Line {
    Text(String),
    /// Not UTF-8, or longer than MAX_UAPI_LINE: the request is refused.
    Invalid,
    /// End of the stream (also in the middle of a line), a read error or the idle timeout.
    End,
}

fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> Line {
    buf.clear();
    match reader.by_ref().take(MAX_UAPI_LINE as u64 + 1).read_until(b'\n', buf) {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if buf.last() != Some(&b'\n') => {
            if buf.len() > MAX_UAPI_LINE {
                Line::Invalid
            } else {
                Line::End
            }
        }
        Ok(_) => {
            // "\n" or "\r\n": a client that ends lines as in HTTP is understood too.
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            match std::str::from_utf8(buf) {
                Ok(text) => Line::Text(text.to_string()),
                Err(_) => Line::Invalid,
            }
        }
    }
}

/// Serves the requests of one UAPI connection, in order. A request is applied only when it is
/// complete (its empty line arrived) and every line is text: a request cut short by the end of
/// the stream changes nothing (wireguard-go would apply the lines it got).
fn serve_conn(shared: &Arc<Shared>, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(UAPI_IDLE));
    let _ = conn.set_write_timeout(Some(UAPI_IDLE));
    let Ok(write_half) = conn.try_clone() else { return };
    let mut writer = std::io::BufWriter::new(write_half);
    let mut reader = BufReader::new(conn);
    let mut buf = Vec::new();
    loop {
        let mut valid = true;
        let op = match next_line(&mut reader, &mut buf) {
            Line::End => return,
            Line::Invalid => {
                valid = false;
                String::new()
            }
            Line::Text(op) => op,
        };
        // An empty first line is a (refused) request of its own, with no body to wait for.
        let mut body: Vec<String> = Vec::new();
        let mut complete = true;
        if !op.is_empty() || !valid {
            loop {
                match next_line(&mut reader, &mut buf) {
                    Line::End => {
                        complete = false;
                        break;
                    }
                    Line::Invalid => valid = false,
                    Line::Text(line) if line.is_empty() => break,
                    Line::Text(line) => body.push(line),
                }
            }
        }
        let mut out = String::new();
        if !complete {
            tracing::warn!("UAPI request cut short ({} lines, no empty line): not applied", body.len() + 1);
        } else if !valid {
            tracing::warn!("UAPI request refused: a line is not UTF-8 text or is too long");
        }
        if valid && complete {
            handle_request(shared, &op, &mut body.iter().map(String::as_str), &mut out);
        } else {
            out.push_str(&format!("errno={}\n\n", uapi::EINVAL));
        }
        if writer.write_all(out.as_bytes()).and_then(|_| writer.flush()).is_err() || !complete {
            return;
        }
    }
}

fn handle_request(shared: &Arc<Shared>, op: &str, body: &mut dyn Iterator<Item = &str>, out: &mut String) {
    match op {
        "get=1" => {
            // A get has no body; drain whatever came.
            for _ in &mut *body {}
            write_get(shared, out);
            out.push_str("errno=0\n\n");
        }
        "set=1" => {
            let errno = match uapi::parse_set(body).and_then(|req| apply_set(shared, req)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!("UAPI set refused: {e}");
                    e.errno
                }
            };
            out.push_str(&format!("errno={errno}\n\n"));
        }
        _ => {
            for _ in &mut *body {}
            out.push_str(&format!("errno={}\n\n", uapi::EINVAL));
        }
    }
}

fn write_get(shared: &Shared, out: &mut String) {
    let state = shared.lock();
    let peers = state.iface.peers().map(|p| {
        let stats = p.stats();
        PeerReport {
            public_key: *p.public_key(),
            preshared_key: p.has_psk().then(|| p.psk().clone()),
            endpoint: p.endpoint(),
            last_handshake: stats.last_handshake,
            tx_bytes: stats.tx_bytes,
            rx_bytes: stats.rx_bytes,
            persistent_keepalive: p.persistent_keepalive().map(|d| d.as_secs() as u16).unwrap_or(0),
            allowed_ips: state.allowed.prefixes_of(peer_id_of(&state.iface, p.public_key())),
        }
    });
    let key = state.has_key.then(|| state.iface.private_key());
    uapi::write_get(out, key, shared.sockets().port, state.fwmark, peers.collect::<Vec<_>>());
}

fn peer_id_of(iface: &Interface, key: &noise::PublicKey) -> PeerId {
    iface.peer_by_key(key).expect("listed peer exists")
}

/// Applies a validated set request. What can fail (binding a new port, setting the fwmark) is
/// done first, so a refused request changes nothing.
fn apply_set(shared: &Arc<Shared>, req: SetRequest) -> Result<(), UapiError> {
    let mut retired = None;
    let result = apply_set_locked(shared, &mut shared.lock(), req, &mut retired);
    if let Some(old) = retired {
        old.close();
    }
    result
}

fn apply_set_locked(
    shared: &Arc<Shared>,
    guard: &mut State,
    req: SetRequest,
    retired: &mut Option<Retired>,
) -> Result<(), UapiError> {
    let now = Instant::now();
    let fwmark = req.fwmark.unwrap_or(guard.fwmark);
    let current_port = shared.sockets().port;
    let rebind = req.listen_port.filter(|&port| port != current_port || port == 0 && guard.listen_port != 0);
    if rebind.is_none()
        && let Some(mark) = req.fwmark
    {
        shared.sockets().set_fwmark(mark).map_err(|e| UapiError { errno: uapi::EIO, message: e.to_string() })?;
    }
    if let Some(port) = rebind {
        let new = Sockets::bind(port, fwmark).map_err(|e| UapiError {
            errno: if e.kind() == std::io::ErrorKind::AddrInUse { uapi::EADDRINUSE } else { uapi::EIO },
            message: format!("cannot bind UDP port {port}: {e}"),
        })?;
        let new = Arc::new(new);
        let generation = shared.generation.load(Ordering::SeqCst) + 1;
        let readers = spawn_udp_readers(shared, new.clone(), generation).map_err(|e| {
            new.shutdown();
            UapiError { errno: uapi::EIO, message: format!("cannot start UDP readers: {e}") }
        })?;
        let old = std::mem::replace(&mut *shared.sockets.write().unwrap_or_else(|e| e.into_inner()), new);
        shared.generation.store(generation, Ordering::SeqCst);
        old.shutdown();
        let old_readers = std::mem::replace(&mut *shared.readers.lock().unwrap_or_else(|e| e.into_inner()), readers);
        *retired = Some(Retired { sockets: old, readers: old_readers });
    }
    if let Some(port) = req.listen_port {
        guard.listen_port = port;
    }
    guard.fwmark = fwmark;
    if let Ok(mtu) = shared.tun.mtu() {
        follow_mtu(&mut guard.iface, mtu as usize);
    }
    if let Some(key) = req.private_key {
        match key {
            Some(secret) => {
                if let Some(own) = guard.iface.peer_by_key(&secret.public_key()) {
                    guard.allowed.remove_peer(own);
                }
                guard.iface.set_private_key(secret);
                guard.has_key = true;
            }
            None => {
                guard.iface.set_private_key(StaticSecret::random(&mut OsRng));
                guard.has_key = false;
            }
        }
    }
    if req.replace_peers {
        for id in guard.iface.peer_ids() {
            let _ = guard.iface.remove_peer(id);
        }
        guard.allowed.clear();
    }
    let sockets = shared.sockets();
    for change in req.peers {
        let Some(key) = change.public_key else { continue };
        let existing = guard.iface.peer_by_key(&key);
        if change.remove {
            if let Some(id) = existing {
                let _ = guard.iface.remove_peer(id);
                guard.allowed.remove_peer(id);
            }
            continue;
        }
        let id = match existing {
            Some(id) => id,
            None if change.update_only => continue,
            None => match guard.iface.add_peer(key) {
                Ok(id) => id,
                // The interface's own key: wg-go ignores such a peer silently.
                Err(noise::PeerError::OwnKey) => continue,
                Err(e) => return Err(UapiError::invalid(format!("peer: {e}"))),
            },
        };
        if let Some(psk) = change.preshared_key {
            let _ = guard.iface.set_psk(id, psk);
        }
        if let Some(ep) = change.endpoint {
            let _ = guard.iface.set_endpoint(id, Some(ep));
        }
        if change.replace_allowed_ips {
            guard.allowed.remove_peer(id);
        }
        for (add, net) in change.allowed_ips {
            if add {
                guard.allowed.insert(net, id);
            } else {
                guard.allowed.remove(net, id);
            }
        }
        if let Some(secs) = change.persistent_keepalive {
            let interval = (secs != 0).then(|| Duration::from_secs(secs as u64));
            if interval != guard.iface.peer(id).and_then(|p| p.persistent_keepalive()) {
                let state = &mut *guard;
                let mut io = shared.io(&sockets, &state.allowed);
                let _ = if state.has_key {
                    state.iface.set_persistent_keepalive(id, interval, now, &mut io)
                } else {
                    state.iface.set_persistent_keepalive(id, interval, now, &mut NoOutput)
                };
            }
        }
    }
    shared.timer_cv.notify_one();
    Ok(())
}

/// Discards output (used while no private key is set).
struct NoOutput;

impl Output for NoOutput {
    fn send(&mut self, _: SocketAddr, _: &[u8]) {}
    fn deliver(&mut self, _: PeerId, _: &[u8]) {}
}
