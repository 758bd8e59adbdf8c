//! Inbound, one thread per UDP socket: receive a batch (`recvmmsg`, datagrams coalesced by UDP
//! GRO), send handshake messages to their own queue ([`super::handshake`]), find each data
//! message's session through the core's shared index table (one read lock per batch, no core
//! lock), open them in place, check that each packet's inner source address belongs to the
//! peer it came from (cryptokey routing), write what passes to the TUN with the segments of
//! each flow coalesced, and only then take the core's lock, once, for the bookkeeping
//! (endpoints, counters, key confirmation, timers).
//!
//! A datagram that fails any check is dropped and counted; it changes no state.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::device::Shared;
use crate::noise::messages::{self, DATA_HEADER_LEN, Message};
use crate::noise::session::Session;
use crate::noise::{PeerId, ReceivedData, ip};
use crate::sys::udp::{self, RecvBatch, Sockets};

use super::gro::Coalescer;
use super::handshake;
use super::handshake_queue::Job;
use super::workers::{OpenItem, Opener};

/// A session met in this batch, and what arrived under it.
struct Met {
    index: u32,
    peer: PeerId,
    received: ReceivedData,
    authenticated: bool,
    /// The local address the last authenticated datagram was sent to.
    local: Option<std::net::IpAddr>,
}

/// One reader thread's buffers, allocated once.
struct RxBatch {
    recv: RecvBatch,
    items: Vec<OpenItem>,
    met: Vec<Met>,
    sessions: Vec<Arc<Session>>,
    expired: Vec<bool>,
    opener: Opener,
    gro: Coalescer,
    /// The batch's handshake messages, queued together after it is sorted.
    handshakes: Vec<Job>,
}

impl RxBatch {
    fn new(shared: &Shared) -> Self {
        RxBatch {
            recv: RecvBatch::default(),
            items: Vec::with_capacity(udp::RECV_BATCH * 64),
            met: Vec::new(),
            sessions: Vec::new(),
            expired: Vec::new(),
            opener: Opener::new(shared.crypto.clone()),
            gro: Coalescer::new(shared.tun.offload(), shared.tun.offload() && shared.tun.udp_offload()),
            handshakes: Vec::new(),
        }
    }
}

/// A reader thread for one socket of `sockets`; it leaves when the device stops or newer
/// sockets (a later `generation`) replace these.
pub(crate) fn run(shared: Arc<Shared>, sockets: Arc<Sockets>, v6: bool, generation: u64) {
    let sock = if v6 { sockets.v6.as_ref() } else { sockets.v4.as_ref() };
    let Some(sock) = sock else { return };
    let mut rx = RxBatch::new(&shared);
    loop {
        let r = sock.recv_batch(&mut rx.recv);
        // Sockets of an older generation were replaced: leave (newer readers may start first).
        if shared.stopping() || shared.generation.load(Ordering::SeqCst) > generation {
            return;
        }
        match r {
            Ok(0) | Err(_) => {
                // Shut down but not (yet) told to stop, or a transient error: do not spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Ok(_) => {}
        }
        let now = crate::sys::clock::now();
        classify(&shared, &mut rx);
        open(&mut rx, now);
        // The bookkeeping first, as the kernel's WireGuard updates a roaming peer's endpoint
        // before it delivers: what the kernel answers to these packets must go to the address
        // they came from, not the one before.
        account(&shared, &mut rx, now);
        let wrote = deliver(&shared, &mut rx);
        if wrote {
            answer(&shared);
        }
    }
}

/// Sorts the received datagrams: handshake messages to their queue, data messages (with their
/// sessions, looked up under one read lock) to `items`; the rest is dropped.
fn classify(shared: &Shared, rx: &mut RxBatch) {
    rx.items.clear();
    rx.met.clear();
    rx.sessions.clear();
    let table = shared.sessions.lock();
    for b in 0..rx.recv.len() {
        let (buf, meta) = rx.recv.get_mut(b);
        for (off, len) in udp::datagrams(meta) {
            let datagram = &buf[off..off + len];
            let (index, counter) = match messages::parse(datagram) {
                Ok(Message::Data(d)) => (d.receiver(), d.counter()),
                Ok(_) => {
                    rx.handshakes.extend(Job::new(meta.src, meta.dst, datagram));
                    continue;
                }
                Err(_) => continue,
            };
            let session = match rx.met.iter().position(|m| m.index == index) {
                Some(s) => s,
                None => {
                    let Some((peer, session)) = table.get(index) else {
                        shared.drops.unknown_index.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    rx.met.push(Met {
                        index,
                        peer,
                        received: ReceivedData { index, src: meta.src, bytes: 0, packets: 0 },
                        authenticated: false,
                        local: None,
                    });
                    rx.sessions.push(session.clone());
                    rx.met.len() - 1
                }
            };
            rx.items.push(OpenItem { buf: b, off, len, counter, session, plain: None, packet: 0, replayed: false });
        }
    }
    drop(table);
    handshake::enqueue_all(shared, &mut rx.handshakes);
}

/// Opens every data message in place (AEAD and replay window, outside any lock of the core's,
/// on several cores when the batch is large), then tallies what authenticated per session.
fn open(rx: &mut RxBatch, now: Instant) {
    rx.expired.clear();
    rx.expired.extend(rx.sessions.iter().map(|s| s.expired(now)));
    rx.opener.open(&mut rx.recv, &mut rx.items, &rx.sessions, &rx.expired);
    for item in &rx.items {
        let Some(plain) = item.plain else { continue };
        // Authenticated.
        let met = &mut rx.met[item.session];
        met.authenticated = true;
        let meta = rx.recv.get_mut(item.buf).1;
        met.local = meta.dst;
        let r = &mut met.received;
        r.src = meta.src;
        r.bytes += item.len as u64;
        r.packets += u64::from(plain > 0);
    }
}

/// What the kernel answered to the packets just written (an echo reply, TCP acknowledgements)
/// is already queued on the TUN when the write returns: move it out now, on this thread, if
/// the TUN thread is not busy, instead of waking the TUN thread for it. A single-threaded
/// event loop gets this for free; here it saves one wake-up per round trip. At most one batch,
/// so receiving never waits long behind sending.
fn answer(shared: &Shared) {
    if let Ok(mut tx) = shared.tx.try_lock() {
        // A failing TUN is the TUN thread's to report.
        let _ = tx.drain(shared, 1);
    }
}

/// Writes the opened packets whose source address belongs to their peer to the TUN, the
/// segments of each flow coalesced where the TUN has offloads. True if it wrote any.
fn deliver(shared: &Shared, rx: &mut RxBatch) -> bool {
    let routing = shared.routing();
    let offload = shared.tun.offload();
    let mut cached: Option<(IpAddr, Option<PeerId>)> = None;
    let mut wrote = false;
    rx.gro.clear();
    for item in &rx.items {
        let met = &rx.met[item.session];
        if item.plain.is_none() {
            let d = &shared.drops;
            let reason = if rx.expired[item.session] {
                &d.no_session
            } else if item.replayed {
                &d.replayed
            } else {
                &d.bad_authentication
            };
            reason.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if item.packet == 0 {
            continue;
        }
        let (buf, _) = rx.recv.get_mut(item.buf);
        let start = item.off + DATA_HEADER_LEN;
        let packet = &buf[start..start + item.packet];
        let Some(src) = ip::source(packet) else { continue };
        let owner = match cached {
            Some((addr, owner)) if addr == src => owner,
            _ => {
                let owner = routing.lookup(src);
                cached = Some((src, owner));
                owner
            }
        };
        if owner != Some(met.peer) {
            shared.drops.not_allowed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if offload {
            rx.gro.push(packet);
        } else {
            wrote = true;
            if let Err(e) = shared.tun.write(packet) {
                tracing::trace!("TUN write: {e}");
            }
        }
    }
    drop(routing);
    if offload {
        rx.gro.finish();
        for buf in rx.gro.packets() {
            wrote = true;
            if let Err(e) = shared.tun.write(buf) {
                tracing::trace!("TUN write: {e}");
            }
        }
    }
    wrote
}

/// The core's bookkeeping for everything that authenticated, under one lock for the batch.
fn account(shared: &Shared, rx: &mut RxBatch, now: Instant) {
    if !rx.met.iter().any(|m| m.authenticated) {
        return;
    }
    for met in rx.met.iter().filter(|m| m.authenticated) {
        shared.learn_source(met.received.src, met.local);
    }
    shared.with_core(|core, io| {
        for met in rx.met.iter().filter(|m| m.authenticated) {
            core.iface.received(met.peer, &met.received, now, io);
        }
    });
}
