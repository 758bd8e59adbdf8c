//! Outbound, the TUN thread: read a batch from the TUN (super-segments split into packets by
//! the offload layer), find each packet's peer by its destination (cryptokey routing), let the
//! core plan each peer's share (one lock for the whole batch: counters reserved, timers told),
//! seal outside the lock, possibly on several cores ([`super::workers`]), and send each peer's
//! datagrams in as few system calls as the socket allows (GSO).
//!
//! Packets are read to [`OFFSET`] in their slots ([`super::batch`]), so the data message's
//! header goes in front and the padding and tag behind without copying the packet.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::device::Shared;
use crate::noise::messages::{self, DATA_HEADER_LEN};
use crate::noise::{PeerId, SealPlan, ip};
use crate::sys::tun::{MAX_READ, MAX_SEGMENTS};

use super::batch::Slots;
use super::workers::Sealer;

/// Where a packet starts in its buffer: room for the data message header.
pub const OFFSET: usize = DATA_HEADER_LEN;
/// Packets per batch: a batch ends when fewer than one read's worth of buffers are left.
pub const BATCH: usize = 2 * MAX_SEGMENTS;
/// How long the thread sleeps in `poll` before looking at the stop flag again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// One peer's share of a batch: the packets' positions, and the plan the core made for them.
struct Group {
    peer: PeerId,
    packets: Vec<usize>,
    plan: Option<SealPlan>,
}

/// The TUN thread's buffers, allocated once.
struct TxBatch {
    scratch: Vec<u8>,
    bufs: Slots,
    sizes: Vec<usize>,
    /// Per packet: a WireGuard message from our own port, maybe our own datagram looping back.
    suspect: Vec<bool>,
    count: usize,
    groups: Vec<Group>,
    active: usize,
}

impl TxBatch {
    fn new() -> Self {
        TxBatch {
            scratch: vec![0u8; MAX_READ],
            bufs: Slots::new(BATCH),
            sizes: vec![0; BATCH],
            suspect: vec![false; BATCH],
            count: 0,
            groups: Vec::new(),
            active: 0,
        }
    }

    fn group_of(&mut self, peer: PeerId, last: &mut usize) -> usize {
        if *last < self.active && self.groups[*last].peer == peer {
            return *last;
        }
        if let Some(g) = self.groups[..self.active].iter().position(|g| g.peer == peer) {
            *last = g;
            return g;
        }
        if self.active == self.groups.len() {
            self.groups.push(Group { peer, packets: Vec::with_capacity(BATCH), plan: None });
        }
        let g = &mut self.groups[self.active];
        g.peer = peer;
        g.packets.clear();
        g.plan = None;
        self.active += 1;
        *last = self.active - 1;
        *last
    }
}

/// The outbound side's state: its buffers and what it remembers between batches. It sits
/// behind a lock (`Shared::tx`) so that, besides the TUN thread, a UDP thread that has just
/// written packets to the TUN can move the answers the kernel queued at once (see
/// [`super::rx`]), saving a wake-up per round trip; the lock keeps the TUN read by one thread
/// at a time, so packets still leave in order.
pub(crate) struct Tx {
    batch: TxBatch,
    sealer: Sealer,
}

impl Tx {
    pub fn new(crypto: Option<Arc<super::workers::Pool>>) -> Tx {
        Tx { batch: TxBatch::new(), sealer: Sealer::new(crypto) }
    }

    /// Moves up to `max` batches from the TUN to the sockets, stopping early when the TUN is
    /// empty. Returns how many packets moved. Errors are the TUN device's.
    pub fn drain(&mut self, shared: &Shared, max: usize) -> std::io::Result<usize> {
        let mut moved = 0;
        for _ in 0..max {
            let n = fill(shared, &mut self.batch)?;
            if n == 0 {
                break;
            }
            moved += n;
            let now = crate::sys::clock::now();
            route(shared, &mut self.batch);
            plan(shared, &mut self.batch, now);
            seal(&mut self.batch, &mut self.sealer);
            send(shared, &self.batch);
        }
        Ok(moved)
    }
}

/// The TUN thread: runs until the device stops or the TUN goes away.
pub(crate) fn run(shared: Arc<Shared>) {
    loop {
        if shared.stopping() {
            return;
        }
        let drained = shared.tx.lock().unwrap_or_else(|e| e.into_inner()).drain(&shared, usize::MAX);
        if let Err(e) = drained {
            shared.request_stop(tun_gone(&e));
            return;
        }
        if let Err(e) = shared.tun.wait_readable(IDLE_WAIT) {
            shared.request_stop(format!("TUN device is gone ({e})"));
            return;
        }
    }
}

/// What to say when reading the TUN fails for good.
fn tun_gone(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // What a read returns once `ip link del` removed the device under us.
        Some(libc::EFAULT) | Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            "the TUN device was removed".to_string()
        }
        _ => format!("reading the TUN device failed ({e})"),
    }
}

/// Reads packets until the TUN is empty or the batch is full. Errors are the device's.
fn fill(shared: &Shared, batch: &mut TxBatch) -> std::io::Result<usize> {
    batch.count = 0;
    while BATCH - batch.count >= MAX_SEGMENTS {
        let c = batch.count;
        let mut slots = batch.bufs.tail_mut(c);
        match shared.tun.recv_batch(&mut batch.scratch, &mut slots, &mut batch.sizes[c..], OFFSET) {
            Ok(n) => batch.count += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error().is_some() => return Err(e),
            // A packet the offload layer could not split (or too large for the buffers).
            Err(e) => tracing::trace!("TUN packet dropped: {e}"),
        }
    }
    Ok(batch.count)
}

/// Sorts the batch's packets into per-peer groups by their destination address. Packets no
/// peer's allowed IPs cover are dropped (as the kernel does, without an ICMP error).
fn route(shared: &Shared, batch: &mut TxBatch) {
    batch.active = 0;
    let our_port = shared.sockets().port;
    let routing = shared.routing();
    let mut cached: Option<(IpAddr, Option<PeerId>)> = None;
    let mut last = 0;
    for i in 0..batch.count {
        let packet = &batch.bufs.get(i)[OFFSET..OFFSET + batch.sizes[i]];
        let Some(dst) = ip::destination(packet) else { continue };
        batch.suspect[i] =
            ip::udp(packet).is_some_and(|u| u.source_port == our_port && messages::parse(u.payload).is_ok());
        let peer = match cached {
            Some((addr, peer)) if addr == dst => peer,
            _ => {
                let peer = routing.lookup(dst);
                cached = Some((dst, peer));
                peer
            }
        };
        let Some(peer) = peer else { continue };
        let g = batch.group_of(peer, &mut last);
        batch.groups[g].packets.push(i);
    }
}

/// Drops the packets of `g` that are our own datagrams to its peer coming back: the route to
/// the peer's endpoint points into this tunnel (an allowed IP covers the endpoint and nothing
/// keeps the tunnel's own traffic out of it), and sealing them again would loop forever, as
/// fast as the machine goes. The kernel's WireGuard refuses such a route when it sends; here
/// the loop is cut the first time a datagram comes around. Counted, and logged once.
fn drop_loops(
    shared: &Shared,
    g: &mut Group,
    batch_suspect: &[bool],
    bufs: &Slots,
    sizes: &[usize],
    endpoint: Option<SocketAddr>,
) {
    let Some(endpoint) = endpoint else { return };
    g.packets.retain(|&i| {
        if !batch_suspect[i] {
            return true;
        }
        let packet = &bufs.get(i)[OFFSET..OFFSET + sizes[i]];
        let looping = ip::udp(packet).is_some_and(|u| u.destination == endpoint);
        if looping {
            shared.drops.routing_loop.fetch_add(1, Ordering::Relaxed);
            if !shared.drops.routing_loop_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "routing loop: datagrams to {endpoint} are routed back into this tunnel (an allowed IP \
                     covers the endpoint); dropped. Route the endpoint outside the tunnel (a fwmark rule, as \
                     wg-quick sets up for a /0) or leave it out of the allowed IPs"
                );
            }
        }
        !looping
    });
}

/// Takes the core's lock once for the batch: each peer's share gets a plan (counters reserved)
/// or, without a session, goes to the core packet by packet to wait for the handshake.
fn plan(shared: &Shared, batch: &mut TxBatch, now: Instant) {
    let TxBatch { groups, active, bufs, sizes, suspect, count, .. } = batch;
    let any_suspect = suspect[..*count].iter().any(|&s| s);
    let planned = shared.with_core(|core, io| {
        for g in &mut groups[..*active] {
            if any_suspect {
                let endpoint = core.iface.peer(g.peer).and_then(|p| p.endpoint());
                drop_loops(shared, g, suspect, bufs, sizes, endpoint);
            }
            let lens = g.packets.iter().map(|&i| sizes[i]);
            g.plan = match core.iface.plan_send(g.peer, lens, now, io) {
                Ok(Some(plan)) => Some(plan),
                Ok(None) => {
                    for &i in &g.packets {
                        let _ = core.iface.send(g.peer, &bufs.get(i)[OFFSET..OFFSET + sizes[i]], now, io);
                    }
                    None
                }
                Err(_) => None, // the peer was removed meanwhile
            };
        }
    });
    if planned.is_none() {
        // No private key: nothing can be sent.
        for g in &mut groups[..*active] {
            g.plan = None;
        }
    }
}

/// Seals every planned packet in place (on several cores when the batch is large); its size
/// becomes the datagram's (0: not sent).
fn seal(batch: &mut TxBatch, sealer: &mut Sealer) {
    let TxBatch { groups, active, bufs, sizes, .. } = batch;
    for g in &groups[..*active] {
        if let Some(plan) = &g.plan {
            sealer.add(plan, &g.packets, sizes);
        }
    }
    sealer.seal(bufs, sizes);
}

/// Sends each planned group's datagrams to its peer's endpoint.
fn send(shared: &Shared, batch: &TxBatch) {
    let sockets = shared.sockets();
    let mut datagrams: [&[u8]; BATCH] = [&[]; BATCH];
    for g in &batch.groups[..batch.active] {
        let Some(plan) = &g.plan else { continue };
        let mut n = 0;
        for &i in &g.packets {
            if batch.sizes[i] > 0 {
                datagrams[n] = &batch.bufs.get(i)[..batch.sizes[i]];
                n += 1;
            }
        }
        let from = shared.source_for(plan.endpoint);
        shared.sent(plan.endpoint, sockets.send_batch(plan.endpoint, from, &datagrams[..n]));
    }
}
