//! The handshake path: handshake messages (types 1-3) that the UDP readers queued, answered by
//! a thread of their own, so a flood of them fills only this bounded queue and never the data
//! path. The queue is fair between sources ([`super::handshake_queue`]). Once it holds 1/8 of
//! its capacity the interface is "under load" (for [`UNDER_LOAD_HOLD`] after the last time it
//! did) and the core answers initiations without a valid mac2 with cookie replies (paper
//! section 5.3; the kernel's receive.c uses the same 1/8 of 4096).
//!
//! A thread takes up to [`BATCH`] messages at a time: their mac checks run under one hold of
//! the gate's lock, and their cookie replies leave in one `sendmmsg`, which is what lets it keep
//! up with a flood. One thread serves an idle or lightly used interface; once the queue holds
//! [`UNDER_LOAD_AT`] messages, more are started, up to one per core (at most [`MAX_THREADS`]),
//! so that one thread's public-key work or system calls overlap another's mac checks. They stay
//! until the device stops. Handshake messages for one peer may then be handled by two threads
//! at once; the core takes each piece of work back against its state as it is then
//! ([`crate::noise::Interface::resume`]), so this needs nothing more.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::handshake_queue::{Admission, FairQueue, Job};
use crate::device::{Reply, Shared};
use crate::noise::messages::COOKIE_REPLY_LEN;
use crate::noise::{self, Interface, PeerId, Step};

pub use super::handshake_queue::CAPACITY as QUEUE;
/// "Under load" from this many queued messages on.
pub const UNDER_LOAD_AT: usize = QUEUE / 8;
/// Once under load, stay so for this long.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
/// Messages a handshake thread takes from the queue at a time.
pub const BATCH: usize = 64;
/// Handshake threads at most (fewer on machines with fewer cores).
pub const MAX_THREADS: usize = 4;

/// What the queue's lock guards.
#[derive(Default)]
struct State {
    jobs: FairQueue,
    closed: bool,
    /// Handshake threads waiting for messages (so a reader must wake one).
    waiting: usize,
}

/// The bounded queue between the UDP readers and the handshake thread. It holds only what is
/// queued (a preallocated channel of 4096 slots would keep its memory resident in an idle
/// daemon).
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    /// Messages queued, readable without the lock (for "under load").
    len: AtomicUsize,
    /// Handshake threads started.
    threads: AtomicUsize,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Wakes the handshake thread for good (it leaves once the queue is closed).
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }

    /// Moves up to `max` messages into `out` (empty), waiting for the first; false once the
    /// queue is closed.
    fn pop_batch(&self, out: &mut Vec<Job>, max: usize) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if state.closed {
                return false;
            }
            if !state.jobs.is_empty() {
                break;
            }
            state.waiting += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
        while out.len() < max
            && let Some(job) = state.jobs.pop()
        {
            out.push(job);
        }
        self.len.store(state.jobs.len(), Ordering::Relaxed);
        // More than one batch queued: another thread may take the next one meanwhile.
        let more = !state.jobs.is_empty() && state.waiting > 0;
        drop(state);
        if more {
            self.ready.notify_one();
        }
        true
    }
}

/// Queues the handshake messages a UDP reader collected in one batch (leaving `jobs` empty),
/// under one hold of the queue's lock, waking the handshake thread once if it waits. A message
/// that does not fit, or that takes the place of a queued one, counts as dropped for a full
/// queue (the queue is the flood limit).
pub(crate) fn enqueue_all(shared: &Shared, jobs: &mut Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let q = &shared.handshakes;
    let mut state = q.state.lock().unwrap_or_else(|e| e.into_inner());
    if state.closed {
        jobs.clear();
        return;
    }
    let mut dropped = 0;
    for job in jobs.drain(..) {
        if state.jobs.push(job) != Admission::Queued {
            dropped += 1;
        }
    }
    q.len.store(state.jobs.len(), Ordering::Relaxed);
    let wake = state.waiting > 0;
    drop(state);
    if dropped > 0 {
        shared.drops.handshake_queue_full.fetch_add(dropped, Ordering::Relaxed);
    }
    if wake {
        q.ready.notify_one();
    }
}

/// Starts the first handshake thread (of a device that starts).
pub(crate) fn start(shared: &Arc<Shared>) -> std::io::Result<()> {
    shared.handshakes.threads.fetch_add(1, Ordering::Relaxed);
    let s = shared.clone();
    std::thread::Builder::new().name("veil-handshake".into()).spawn(move || run(s)).map(drop)
}

/// A handshake thread. Each batch of messages first passes the core's gate (mac1; under
/// load, mac2 and the source's rate limit) under the gate's own lock, their cookie replies sent
/// together after it: a flood that fails these checks never takes the core's lock. What passes
/// goes to the core, one message at a time, whose public-key work runs without the core's lock
/// ([`crate::noise::HandshakeWork`]): the lock is held only to check the message against the
/// peers and to apply the result, a few microseconds each, so the data path never waits behind
/// ~150 us of X25519.
fn run(shared: Arc<Shared>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut passed = Vec::with_capacity(BATCH);
    let mut held = Held::default();
    while shared.handshakes.pop_batch(&mut jobs, BATCH) {
        if shared.stopping() {
            return;
        }
        if shared.handshakes.len() >= UNDER_LOAD_AT {
            start_another(&shared);
        }
        let now = crate::sys::clock::now();
        let load = shared.under_load(now);
        let mut limited = false;
        {
            let mut gate = shared.gate.lock();
            for (i, job) in jobs.iter().enumerate() {
                // A cookie reply leaves from the address the message reached.
                held.from = local(job);
                match gate.check(job.message(), job.src, now, load, &mut held) {
                    Ok(()) => passed.push(i),
                    Err(noise::ReceiveError::RateLimited) => limited = true,
                    Err(e) => tracing::debug!("{}: handshake message refused: {e}", job.src),
                }
            }
        }
        // Messages dropped by the rate limits cost almost nothing, so the queue may drain while
        // the flood goes on: it still counts as load (else the flood's next messages would be
        // taken for real ones, each costing X25519, until the queue filled again).
        if limited {
            shared.hold_load(now);
        }
        if !held.replies.is_empty() {
            send_replies(&shared, &mut held);
        }
        for &i in &passed {
            answer(&shared, &jobs[i]);
        }
        passed.clear();
        jobs.clear();
    }
}

/// Starts one more handshake thread, unless there is one per core (or [`MAX_THREADS`]) already.
fn start_another(shared: &Arc<Shared>) {
    // Looked up once: std reads the affinity mask and cgroup quota files for it.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS));
    let q = &shared.handshakes;
    let n = q.threads.load(Ordering::Relaxed);
    // Counted here, before it runs, so that two threads do not both start the last one.
    if n >= cores || q.threads.compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    let s = shared.clone();
    let started = std::thread::Builder::new().name(format!("veil-handshake{}", n + 1)).spawn(move || run(s));
    match started {
        Ok(_) => tracing::debug!("under load: handshake thread {} of at most {cores} started", n + 1),
        Err(e) => {
            q.threads.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("cannot start another handshake thread: {e}");
        }
    }
}

/// The local address a message reached, if the socket told it.
fn local(job: &Job) -> Option<IpAddr> {
    job.dst.filter(|d| !d.is_unspecified())
}

/// Hands one message that passed the gate to the core, and its public-key work to this thread.
fn answer(shared: &Shared, job: &Job) {
    let src = job.src;
    let reply = |learn| local(job).map(|from| Reply { to: src, from, learn });
    let mut step = shared.with_core(|core, io| {
        io.reply = reply(false);
        let step = core.iface.receive_checked_handshake(src, job.message(), crate::sys::clock::now(), io);
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

/// Sends the held cookie replies, as few `sendmmsg` calls as their families and source
/// addresses allow; a reply that cannot be sent is only logged (the initiator retries).
fn send_replies(shared: &Shared, held: &mut Held) {
    let sockets = shared.sockets();
    let mut start = 0;
    while start < held.replies.len() {
        let (first_to, from, _) = &held.replies[start];
        let v4 = first_to.is_ipv4();
        let end = start + held.replies[start..].iter().take_while(|(to, f, _)| to.is_ipv4() == v4 && f == from).count();
        let run: Vec<(SocketAddr, &[u8])> = held.replies[start..end].iter().map(|(to, _, d)| (*to, &d[..])).collect();
        if let Err(e) = sockets.send_each_to(*from, &run) {
            tracing::trace!("cookie replies to {first_to} and {} more: {e}", run.len() - 1);
        }
        start = end;
    }
    held.replies.clear();
}

/// The gate's cookie replies (destination, local source address, bytes), held until its lock
/// is released; `from` is the local address of the message being checked.
#[derive(Default)]
struct Held {
    replies: Vec<(SocketAddr, Option<IpAddr>, [u8; COOKIE_REPLY_LEN])>,
    from: Option<IpAddr>,
}

impl noise::Output for Held {
    /// Holds a cookie reply (64 bytes, paper section 5.4.7); the gate sends nothing else.
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        if let Ok(reply) = <[u8; COOKIE_REPLY_LEN]>::try_from(datagram) {
            self.replies.push((to, self.from, reply));
        }
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
