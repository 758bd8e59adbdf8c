//! The handshake path: handshake messages (types 1-3) that the UDP readers queued, answered one
//! at a time by a thread of their own, so a flood of them fills only this bounded queue and
//! never the data path. Once the queue holds 1/8 of its capacity the interface is "under load"
//! (for [`UNDER_LOAD_HOLD`] after the last time it did) and the core answers initiations
//! without a valid mac2 with cookie replies (paper section 5.3; the kernel's receive.c uses the
//! same 1/8 of 4096).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::device::{Io, Reply, Shared};
use crate::noise::{self, Interface, Output, PeerId, Step};

/// Capacity of the handshake queue.
pub const QUEUE: usize = 4096;
/// "Under load" from this many queued messages on.
pub const UNDER_LOAD_AT: usize = QUEUE / 8;
/// Once under load, stay so for this long.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);

/// A handshake message, its sender and the local address it was sent to.
type Job = (SocketAddr, Option<IpAddr>, Vec<u8>);

/// The bounded queue between the UDP readers and the handshake thread. It holds only what is
/// queued (a preallocated channel of 4096 slots would keep 256 KiB resident in an idle daemon).
#[derive(Default)]
pub(crate) struct Queue {
    /// The messages with their senders, and whether the queue was closed.
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
    /// Messages queued, readable without the lock (for "under load").
    len: AtomicUsize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Wakes the handshake thread for good (it leaves once the queue is closed).
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
    }

    fn pop(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if jobs.1 {
                return None;
            }
            if let Some(job) = jobs.0.pop_front() {
                self.len.store(jobs.0.len(), Ordering::Relaxed);
                return Some(job);
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Queues a handshake message for the handshake thread; false when the queue is full (the
/// message is dropped: the queue is the flood limit) or closed.
pub(crate) fn enqueue(shared: &Shared, src: SocketAddr, dst: Option<IpAddr>, message: &[u8]) -> bool {
    let q = &shared.handshakes;
    let mut jobs = q.jobs.lock().unwrap_or_else(|e| e.into_inner());
    if jobs.1 || jobs.0.len() >= QUEUE {
        drop(jobs);
        shared.drops.handshake_queue_full.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    jobs.0.push_back((src, dst, message.to_vec()));
    q.len.store(jobs.0.len(), Ordering::Relaxed);
    drop(jobs);
    q.ready.notify_one();
    true
}

/// The handshake thread. Each message first passes the core's gate (mac1; under load, mac2 and
/// the source's rate limit) under the gate's own lock, its cookie reply if any sent after it:
/// a flood that fails these checks never takes the core's lock. What passes goes to the core,
/// whose public-key work runs without the core's lock ([`crate::noise::HandshakeWork`]): the
/// lock is held only to check the message against the peers and to apply the result, a few
/// microseconds each, so the data path never waits behind ~150 us of X25519.
pub(crate) fn run(shared: Arc<Shared>) {
    let mut held = Held::default();
    while let Some((src, dst, datagram)) = shared.handshakes.pop() {
        if shared.stopping() {
            return;
        }
        let now = crate::sys::clock::now();
        let load = shared.under_load(now);
        // A cookie reply leaves from the address the message reached; nothing is learnt from it.
        let reply = |learn| dst.filter(|d| !d.is_unspecified()).map(|from| Reply { to: src, from, learn });
        let checked = shared.gate.lock().check(&datagram, src, now, load, &mut held);
        if !held.0.is_empty() {
            let sockets = shared.sockets();
            let mut io = Io { sockets: &sockets, shared: &shared, reply: reply(false) };
            for (to, d) in held.0.drain(..) {
                io.send(to, &d);
            }
        }
        if let Err(e) = checked {
            tracing::debug!("{src}: handshake message refused: {e}");
            continue;
        }
        let mut step = shared.with_core(|core, io| {
            io.reply = reply(false);
            let step = core.iface.receive_checked_handshake(src, &datagram, now, io);
            log_done(&core.iface, src, &step);
            step
        });
        while let Some(Step::Work(mut work)) = step {
            work.run();
            // The core answers only a message that decrypted and passed the replay checks: its
            // answer (a response, or the keepalive after ours) leaves from the address the
            // message reached, which becomes the peer's source.
            step = shared.with_core(|core, io| {
                io.reply = reply(true);
                let step = core.iface.resume(work, crate::sys::clock::now(), io);
                log_done(&core.iface, src, &step);
                step
            });
        }
    }
}

/// The gate's cookie replies, held until its lock is released.
#[derive(Default)]
struct Held(Vec<(SocketAddr, Vec<u8>)>);

impl noise::Output for Held {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.0.push((to, datagram.to_vec()));
    }

    /// The gate never delivers packets.
    fn deliver(&mut self, _: PeerId, _: &[u8]) {}
}

fn log_done(iface: &Interface, src: SocketAddr, step: &Step) {
    if let Step::Done(result) = step
        && tracing::enabled!(tracing::Level::DEBUG)
    {
        log_handshake(iface, src, result);
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
