//! The device: one WireGuard interface at run time. It owns the TUN device, the UDP sockets,
//! the protocol core and the threads of the packet engine ([`crate::datapath`]), starts and
//! stops them, and applies what `wg` asks through the UAPI socket.
//!
//! - `mod.rs` (here): the shared state and its locks, start and stop;
//! - [`uapi`]: the UAPI text protocol (parsing `set`, writing `get`);
//! - `uapi_server`: serving the UAPI socket's connections;
//! - `configure`: applying a `set` request to the running device, and reading its state;
//! - [`allowed_ips`]: the cryptokey routing table.
//!
//! Locks, always taken in this order and never held across I/O that may block for long:
//! `core` (the protocol core; the data path takes it once per batch for bookkeeping, never for
//! cryptography), then `routing` (read by the data path once per batch). Sessions are found by
//! the data path through the core's shared index table, without the core's lock.

pub mod allowed_ips;
pub(crate) mod configure;
pub mod uapi;
mod uapi_server;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};

use crate::datapath;
use crate::noise::{Config, GateHandle, IndexReader, Interface, Output, PeerId, StaticSecret, WallClock, ip};
use crate::sys::link::LinkEvents;
use crate::sys::tun::Tun;
use crate::sys::udp::{Sockets, Source};
use allowed_ips::AllowedIps;

/// Why the device stopped.
pub type ExitReason = String;

/// Most remote endpoints whose local address is remembered at once.
const MAX_SOURCES: usize = 65536;

/// The protocol core and the settings that go with it (behind `Shared::core`).
pub(crate) struct Core {
    pub iface: Interface,
    /// False until a private key is set: nothing is sent or accepted without one.
    pub has_key: bool,
    pub listen_port: u16,
    pub fwmark: u32,
    /// When the timer thread will wake next.
    pub timer_wake: Option<Instant>,
}

/// Counters of packets the engine dropped, by reason (relaxed atomics, never a lock; reported
/// by `get` with `veil=1` and when the daemon stops, see [`Device::drop_summary`]).
#[derive(Default)]
pub(crate) struct Drops {
    /// Decrypted, but the inner source address is not one of the peer's allowed IPs.
    pub not_allowed: AtomicU64,
    /// A data message whose receiver index belongs to no session.
    pub unknown_index: AtomicU64,
    /// A data message whose session has expired (REJECT_AFTER_TIME).
    pub no_session: AtomicU64,
    /// A data message whose counter was seen already or is behind the replay window.
    pub replayed: AtomicU64,
    /// A data message that failed authentication (forged, corrupted, or the wrong key).
    pub bad_authentication: AtomicU64,
    /// A handshake message that found the handshake queue full.
    pub handshake_queue_full: AtomicU64,
    /// Our own datagram came back through the TUN (a routing loop, see `tx.rs`).
    pub routing_loop: AtomicU64,
    /// The routing loop was logged already (it is logged once).
    pub routing_loop_logged: AtomicBool,
}

/// The device's shared parts.
pub(crate) struct Shared {
    pub core: Mutex<Core>,
    /// Signalled when the core's next deadline may have moved earlier.
    pub timer_cv: Condvar,
    /// Cryptokey routing: which peer owns an inner address.
    pub routing: RwLock<AllowedIps<PeerId>>,
    /// The core's receiver indices, read by the data path without the core's lock.
    pub sessions: IndexReader,
    pub tun: Tun,
    pub sockets: RwLock<Arc<Sockets>>,
    pub generation: AtomicU64,
    /// The reader threads of the current sockets (joined when the sockets are replaced).
    pub readers: Mutex<Vec<JoinHandle<()>>>,
    /// Handshake messages waiting for the handshake thread.
    pub handshakes: datapath::handshake::Queue,
    /// The core's handshake checks (mac1, mac2, rate limit), under a lock of their own.
    pub gate: GateHandle,
    pub under_load_until: Mutex<Option<Instant>>,
    pub stop: AtomicBool,
    exit: Mutex<Option<ExitReason>>,
    /// Signalled (with `exit`) when something asks the device to stop.
    exit_cv: Condvar,
    pub drops: Drops,
    /// Helper threads for cryptography (`None` on one core).
    pub crypto: Option<Arc<datapath::workers::Pool>>,
    /// The outbound side (the TUN thread's, lent to a UDP thread now and then; see `tx.rs`).
    pub tx: Mutex<datapath::tx::Tx>,
    /// The local address each remote endpoint last reached us at (authenticated), which
    /// datagrams to it leave from.
    sources: RwLock<HashMap<SocketAddr, IpAddr>>,
    /// UAPI connections being served.
    pub uapi_connections: AtomicUsize,
}

/// A running device (clones are handles to the same device).
#[derive(Clone)]
pub struct Device {
    shared: Arc<Shared>,
}

/// Where the core's own output goes (handshake messages, keepalives, staged packets): the
/// sockets, one datagram at a time, and the TUN after the cryptokey routing check.
pub(crate) struct Io<'a> {
    pub sockets: &'a Sockets,
    pub shared: &'a Shared,
    /// Set while a received handshake message is handled: datagrams to its sender leave from
    /// the local address it was sent to (kernel `wg_socket_set_peer_endpoint_from_skb`).
    pub reply: Option<Reply>,
}

/// The sender of a handshake message being handled and the local address it reached.
#[derive(Clone, Copy)]
pub(crate) struct Reply {
    pub to: SocketAddr,
    pub from: IpAddr,
    /// Whether the message is authentic (its answer is then the peer's source from now on).
    pub learn: bool,
}

impl Output for Io<'_> {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        let from = match self.reply {
            Some(r) if r.to == to => {
                if r.learn {
                    self.shared.learn_source(to, Some(r.from));
                }
                Some(r.from)
            }
            _ => self.shared.source_for(to),
        };
        self.shared.sent(to, self.sockets.send_to(datagram, to, from));
    }

    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        let owner = ip::source(packet).and_then(|src| self.shared.routing().lookup(src));
        if owner == Some(peer) {
            let _ = self.shared.tun.send(packet);
        } else {
            self.shared.drops.not_allowed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Discards output (used while no private key is set).
pub(crate) struct NoOutput;

impl Output for NoOutput {
    fn send(&mut self, _: SocketAddr, _: &[u8]) {}
    fn deliver(&mut self, _: PeerId, _: &[u8]) {}
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn routing(&self) -> RwLockReadGuard<'_, AllowedIps<PeerId>> {
        self.routing.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn sockets(&self) -> Arc<Sockets> {
        self.sockets.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The local address datagrams to `to` leave from: the one `to` last reached us at
    /// (the kernel's WireGuard keeps it per peer the same way).
    pub fn source_for(&self, to: SocketAddr) -> Option<IpAddr> {
        self.sources.read().unwrap_or_else(|e| e.into_inner()).get(&to).copied()
    }

    /// Remembers that `from` reached us at `local` (an authenticated datagram).
    pub fn learn_source(&self, from: SocketAddr, local: Option<IpAddr>) {
        let Some(local) = local.filter(|l| !l.is_unspecified()) else { return };
        if self.source_for(from) == Some(local) {
            return;
        }
        let mut sources = self.sources.write().unwrap_or_else(|e| e.into_inner());
        // Bounded: endpoints of roaming peers come and go; forgetting all is harmless (the
        // kernel then picks a source until a peer's next datagram).
        if sources.len() >= MAX_SOURCES {
            sources.clear();
        }
        sources.insert(from, local);
    }

    /// What a send to `to` came to: a source that was no longer ours is forgotten (the
    /// datagrams left from the kernel's choice); errors are only traced (UDP is lossy anyway).
    pub fn sent(&self, to: SocketAddr, result: std::io::Result<Source>) {
        match result {
            Ok(Source::Dropped) => {
                self.sources.write().unwrap_or_else(|e| e.into_inner()).remove(&to);
            }
            Ok(Source::Kept) => {}
            Err(e) => tracing::trace!("send to {to}: {e}"),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn request_stop(&self, reason: impl Into<String>) {
        let mut exit = self.exit.lock().unwrap_or_else(|e| e.into_inner());
        if exit.is_none() {
            *exit = Some(reason.into());
        }
        self.stop.store(true, Ordering::SeqCst);
        self.handshakes.close();
        self.timer_cv.notify_all();
        self.exit_cv.notify_all();
    }

    /// Runs `f` on the core with an output bound to the current sockets, then wakes the timer
    /// thread if the core now has an earlier deadline. Does nothing (returns `None`) while the
    /// device has no private key.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut Core, &mut Io<'_>) -> R) -> Option<R> {
        let mut core = self.lock();
        if !core.has_key {
            return None;
        }
        // Taken under the lock: sockets replaced by a set request are never used afterwards.
        let sockets = self.sockets();
        let mut io = Io { sockets: &sockets, shared: self, reply: None };
        let r = f(&mut core, &mut io);
        let core = self.finish_initiations(core);
        self.wake_timers_if_earlier(&core);
        Some(r)
    }

    /// Writes the initiations the core started under `core` (a rekey, a retry, a first packet)
    /// with the lock released, then takes it again to send them. The X25519 work of our own
    /// handshakes thus never runs under the lock the data path takes.
    pub fn finish_initiations<'a>(&'a self, mut core: MutexGuard<'a, Core>) -> MutexGuard<'a, Core> {
        loop {
            let mut work = core.iface.take_work();
            if work.is_empty() {
                return core;
            }
            drop(core);
            for w in &mut work {
                w.run();
            }
            core = self.lock();
            let sockets = self.sockets();
            let mut io = Io { sockets: &sockets, shared: self, reply: None };
            let now = crate::sys::clock::now();
            for w in work {
                if core.has_key {
                    core.iface.send_initiation(w, now, &mut io);
                } else {
                    core.iface.send_initiation(w, now, &mut NoOutput);
                }
            }
        }
    }

    /// Wakes the timer thread when the core's next deadline is earlier than its wake-up.
    pub fn wake_timers_if_earlier(&self, core: &Core) {
        let next = core.iface.next_deadline();
        if next.is_some() && (core.timer_wake.is_none() || next < core.timer_wake) {
            self.timer_cv.notify_one();
        }
        // The timer thread's wait runs on the monotonic clock, which stops while the machine
        // sleeps: after a resume it may still be waiting for a deadline already past.
        if core.timer_wake.is_some_and(|w| w < crate::sys::clock::now()) {
            self.timer_cv.notify_one();
        }
    }

    /// Keeps the interface under load for [`datapath::handshake::UNDER_LOAD_HOLD`] from `now`
    /// (sources are still being rate limited: the flood goes on even if the queue drains).
    pub fn hold_load(&self, now: Instant) {
        *self.under_load_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(now + datapath::handshake::UNDER_LOAD_HOLD);
    }

    /// Whether handshake messages should be answered with cookies (the queue is filling).
    pub fn under_load(&self, now: Instant) -> bool {
        let mut until = self.under_load_until.lock().unwrap_or_else(|e| e.into_inner());
        if self.handshakes.len() >= datapath::handshake::UNDER_LOAD_AT {
            *until = Some(now + datapath::handshake::UNDER_LOAD_HOLD);
        }
        until.is_some_and(|t| now < t)
    }
}

impl Device {
    /// Starts the device's threads on a TUN device that is already open, following its link
    /// through `links`. The UDP sockets are bound to a free port until `listen_port` is set.
    pub fn start(tun: Tun, links: LinkEvents, mut config: Config) -> std::io::Result<Device> {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        if let Ok(mtu) = tun.mtu() {
            config.mtu = mtu as usize;
        }
        let placeholder = StaticSecret::random(&mut OsRng);
        let mut iface = Interface::new(placeholder, config, WallClock::system(), seed);
        // Our own initiations' X25519 work runs outside the core's lock (finish_initiations).
        iface.set_defer_work(true);
        let sessions = iface.index_reader();
        let gate = iface.gate();
        let sockets = Arc::new(Sockets::bind(0, 0)?);
        let crypto = datapath::workers::Pool::start(datapath::workers::Pool::default_helpers())?;
        let tx = datapath::tx::Tx::new(crypto.clone());
        let shared = Arc::new(Shared {
            core: Mutex::new(Core { iface, has_key: false, listen_port: 0, fwmark: 0, timer_wake: None }),
            timer_cv: Condvar::new(),
            routing: RwLock::new(AllowedIps::new()),
            sessions,
            tun,
            sockets: RwLock::new(sockets.clone()),
            generation: AtomicU64::new(0),
            readers: Mutex::new(Vec::new()),
            handshakes: datapath::handshake::Queue::default(),
            gate,
            under_load_until: Mutex::new(None),
            stop: AtomicBool::new(false),
            exit: Mutex::new(None),
            exit_cv: Condvar::new(),
            drops: Drops::default(),
            crypto,
            tx: Mutex::new(tx),
            sources: RwLock::new(HashMap::new()),
            uapi_connections: AtomicUsize::new(0),
        });
        let s = shared.clone();
        thread::Builder::new().name("veil-tun".into()).spawn(move || datapath::tx::run(s))?;
        datapath::handshake::start(&shared)?;
        let s = shared.clone();
        thread::Builder::new().name("veil-timers".into()).spawn(move || datapath::timers::run(s))?;
        *shared.readers.lock().unwrap_or_else(|e| e.into_inner()) = spawn_udp_readers(&shared, sockets, 0)?;
        // The padding cap follows the TUN's MTU the moment it changes, wherever the TUN is.
        let weak = Arc::downgrade(&shared);
        crate::sys::link::follow(links, shared.tun.raw_fd(), move |mtu| {
            if let Some(s) = weak.upgrade() {
                configure::follow_mtu(&mut s.lock().iface, mtu);
            }
        })?;
        Ok(Device { shared })
    }

    /// Serves UAPI connections on `listener` in a thread of its own.
    pub fn serve_uapi(&self, listener: UnixListener) -> std::io::Result<()> {
        uapi_server::spawn(self.shared.clone(), listener)
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

    /// What the engine dropped so far, in words (for the daemon's last log line).
    pub fn drop_summary(&self) -> String {
        let d = &self.shared.drops;
        format!(
            "{} packets dropped for a source outside the peer's allowed IPs, data messages refused: \
             {} for an unknown index, {} for an expired session, {} replayed, {} failing \
             authentication; {} handshake messages dropped with the handshake queue full, {} \
             datagrams of ours that came back through the tunnel (a routing loop)",
            d.not_allowed.load(Ordering::Relaxed),
            d.unknown_index.load(Ordering::Relaxed),
            d.no_session.load(Ordering::Relaxed),
            d.replayed.load(Ordering::Relaxed),
            d.bad_authentication.load(Ordering::Relaxed),
            d.handshake_queue_full.load(Ordering::Relaxed),
            d.routing_loop.load(Ordering::Relaxed)
        )
    }

    pub fn exit_reason(&self) -> Option<ExitReason> {
        self.shared.exit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The device's status now, with veil's counters (its `name` left empty).
    pub fn status(&self) -> crate::status::Interface {
        configure::status(&self.shared)
    }

    /// Answers one UAPI request given as text (`get=1\n\n` or `set=1\n...\n\n`).
    pub fn uapi(&self, request: &str) -> String {
        uapi_server::answer_text(&self.shared, request)
    }
}

/// Starts one reader thread per socket of `sockets` (see [`datapath::rx`]).
pub(crate) fn spawn_udp_readers(
    shared: &Arc<Shared>,
    sockets: Arc<Sockets>,
    generation: u64,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut readers = Vec::new();
    for v6 in [false, true] {
        let (s, socks) = (shared.clone(), sockets.clone());
        readers.push(
            thread::Builder::new()
                .name("veil-udp".into())
                .spawn(move || datapath::rx::run(s, socks, v6, generation))?,
        );
    }
    Ok(readers)
}
