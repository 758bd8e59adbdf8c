//! A bad network for tests, since there is no `tc netem` here: a user-space UDP relay that
//! drops, duplicates, reorders and delays the datagrams it forwards between two peers.
//!
//! Where it sits: in a namespace of its own between the peers' namespaces, joined to each by a
//! veth, with IP forwarding off there, so the peers cannot reach each other except through it.
//! It listens on one UDP socket per side; each peer's endpoint for the other is the relay's
//! socket on its own side, and what arrives on one side leaves from the other side's socket to
//! the real peer. Each peer therefore sees the other at one fixed address (the relay's), and
//! roaming stays quiet. The sockets are made on a thread that entered the relay's namespace
//! (`setns` moves only the calling thread); the forwarding threads just use them.
//!
//! Each direction has its own impairments, its own deterministic RNG (splitmix64 from the seed)
//! drawing the same decisions for the same sequence of datagrams, and its own counters, so a test
//! can assert that the relay really did what it was asked. The threads stop on drop or at a
//! lifetime cap, whichever comes first.

use super::Netns;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happens to the datagrams of one direction. Probabilities are per datagram, drawn in this
/// order: lost (nothing else happens), then duplicated (a second copy follows after `delay`
/// plus up to 1 ms), then held back (`delay + reorder_delay` instead of `delay`, so datagrams
/// that arrive after it overtake it).
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub delay: Duration,
    pub reorder_delay: Duration,
}

impl Impairment {
    /// A clean direction: every datagram forwarded at once, once, in order.
    pub const NONE: Impairment =
        Impairment { loss: 0.0, duplicate: 0.0, reorder: 0.0, delay: Duration::ZERO, reorder_delay: Duration::ZERO };
}

/// What one direction did, counted as it happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams that arrived at the relay.
    pub received: u64,
    /// Datagrams dropped on purpose (never forwarded).
    pub dropped: u64,
    /// Of those, handshake messages (initiation, response, cookie reply: first byte 1 to 3).
    pub dropped_handshakes: u64,
    /// Extra copies made (each sent once due, as the original is).
    pub duplicated: u64,
    /// Datagrams forwarded after one that arrived later than them (really reordered).
    pub reordered: u64,
    /// Datagrams sent on (copies included).
    pub forwarded: u64,
    /// Sends the kernel refused (e.g. a full buffer); those datagrams are lost too.
    pub send_errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    dropped: AtomicU64,
    dropped_handshakes: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    forwarded: AtomicU64,
    send_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            received: get(&self.received),
            dropped: get(&self.dropped),
            dropped_handshakes: get(&self.dropped_handshakes),
            duplicated: get(&self.duplicated),
            reordered: get(&self.reordered),
            forwarded: get(&self.forwarded),
            send_errors: get(&self.send_errors),
        }
    }
}

/// One side of the relay: the address it listens on (in the relay's namespace) and the real
/// peer on that side, where datagrams coming from the other side go.
#[derive(Clone, Copy, Debug)]
pub struct Side {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
}

/// A running relay; stopped (threads joined) on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    a_to_b: Arc<Counters>,
    b_to_a: Arc<Counters>,
}

impl Relay {
    /// Starts relaying between `a` and `b` in `ns`, with `a_to_b` applied to what `a`'s peer sends
    /// and `b_to_a` to the other direction; the threads end by themselves after `lifetime`.
    pub fn start(
        ns: &Netns,
        a: Side,
        b: Side,
        a_to_b: Impairment,
        b_to_a: Impairment,
        seed: u64,
        lifetime: Duration,
    ) -> Relay {
        let path = format!("/var/run/netns/{}", ns.name);
        let (sock_a, sock_b) = std::thread::spawn(move || {
            let netns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns with a namespace file descriptor we own; CLONE_NEWNET moves only this
            // thread, which exits right after making the sockets.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
            (bind(a.listen), bind(b.listen))
        })
        .join()
        .expect("relay socket thread");
        let (sock_a, sock_b) = (Arc::new(sock_a), Arc::new(sock_b));
        let stop = Arc::new(AtomicBool::new(false));
        let end = Instant::now() + lifetime;
        let (c_ab, c_ba) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let forward = Direction {
            from: sock_a.clone(),
            to: sock_b.clone(),
            dest: b.peer,
            imp: a_to_b,
            seed,
            counters: c_ab.clone(),
        };
        let backward = Direction {
            from: sock_b,
            to: sock_a,
            dest: a.peer,
            imp: b_to_a,
            seed: seed ^ 0x5bd1_e995,
            counters: c_ba.clone(),
        };
        let threads = vec![forward.spawn(stop.clone(), end), backward.spawn(stop.clone(), end)];
        Relay { stop, threads, a_to_b: c_ab, b_to_a: c_ba }
    }

    /// What the relay did so far to datagrams from `a`'s peer.
    pub fn a_to_b(&self) -> Counts {
        self.a_to_b.snapshot()
    }

    /// What the relay did so far to datagrams from `b`'s peer.
    pub fn b_to_a(&self) -> Counts {
        self.b_to_a.snapshot()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A non-blocking UDP socket on `addr` with large buffers (SO_*BUFFORCE, as root), so the relay
/// itself loses nothing it was not told to.
fn bind(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("relay: bind {addr}: {e}"));
    s.set_nonblocking(true).unwrap();
    let size: libc::c_int = 16 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt on an open socket with a pointer to a c_int and its length.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "relay: buffer size on {addr}: {}", std::io::Error::last_os_error());
    }
    s
}

/// splitmix64: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// The most datagrams taken in before the due ones are sent.
const BATCH: usize = 256;

/// A datagram waiting for its time: ordered by due time, then arrival.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    due: Instant,
    arrival: u64,
    data: Vec<u8>,
}

/// One direction of the relay: what arrives on `from` leaves from `to` towards `dest`, impaired
/// by `imp`.
struct Direction {
    from: Arc<UdpSocket>,
    to: Arc<UdpSocket>,
    dest: SocketAddr,
    imp: Impairment,
    seed: u64,
    counters: Arc<Counters>,
}

impl Direction {
    /// Forwards until `stop` is set or `end` passes.
    fn spawn(self, stop: Arc<AtomicBool>, end: Instant) -> JoinHandle<()> {
        let Direction { from, to, dest, imp, seed, counters } = self;
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut queue: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
            let (mut arrivals, mut latest_sent) = (0u64, None::<u64>);
            let mut buf = vec![0u8; 65536];
            let count = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                // Sleep until a datagram arrives or the next one is due (at most 50 ms, to see `stop`).
                let now = Instant::now();
                let wait =
                    queue.peek().map_or(Duration::from_millis(50), |Reverse(p)| p.due.saturating_duration_since(now));
                if !wait.is_zero() {
                    poll_readable(&from, wait.min(Duration::from_millis(50)));
                }
                // What arrived meanwhile, at most a batch, so sending keeps up under a steady stream.
                for _ in 0..BATCH {
                    let n = match from.recv_from(&mut buf) {
                        Ok((n, _)) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => panic!("relay: receive: {e}"),
                    };
                    count(&counters.received);
                    let now = Instant::now();
                    if rng.chance(imp.loss) {
                        count(&counters.dropped);
                        if n > 0 && matches!(buf[0], 1..=3) {
                            count(&counters.dropped_handshakes);
                        }
                        continue;
                    }
                    let data = buf[..n].to_vec();
                    if rng.chance(imp.duplicate) {
                        let jitter = Duration::from_micros((rng.unit() * 1000.0) as u64);
                        let due = now + imp.delay + jitter;
                        queue.push(Reverse(Pending { due, arrival: arrivals, data: data.clone() }));
                        count(&counters.duplicated);
                    }
                    let held = if rng.chance(imp.reorder) { imp.reorder_delay } else { Duration::ZERO };
                    queue.push(Reverse(Pending { due: now + imp.delay + held, arrival: arrivals, data }));
                    arrivals += 1;
                }
                // Everything that is due, in due order.
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse(p)| p.due <= now) {
                    let Reverse(p) = queue.pop().unwrap();
                    match to.send_to(&p.data, dest) {
                        Ok(_) => {
                            count(&counters.forwarded);
                        }
                        Err(_) => {
                            count(&counters.send_errors);
                        }
                    }
                    // A copy shares its original's arrival number: the later of the two counts only
                    // if a datagram that arrived after them went out between them.
                    if latest_sent.is_some_and(|l| p.arrival < l) {
                        count(&counters.reordered);
                    }
                    latest_sent = latest_sent.max(Some(p.arrival));
                }
            }
        })
    }
}

/// Waits until `s` is readable or `timeout` passes (ppoll: microsecond resolution, where a
/// socket receive timeout would round up to the scheduler tick).
fn poll_readable(s: &UdpSocket, timeout: Duration) {
    let mut pfd = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}
