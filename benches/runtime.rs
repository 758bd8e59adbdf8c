//! Plain threads against tokio, in the shapes veil's engine stages have (docs/architecture.md,
//! "Threads or tokio"):
//!
//! - `rtt`: a UDP ping-pong between two endpoints, the wake-up latency a lone packet sees;
//!   `rtt-one-cpu` the same with every thread on one CPU (no wake-up crosses CPUs);
//! - `udp-stream`: one sender thread blasts 1400-byte datagrams at a receiver that copies each
//!   one out (received datagrams per second; after each receiver, a line with the receive
//!   side's and the sender's CPU time per datagram and the datagrams per wait);
//! - `udp-backlog`: the same datagrams all queued before the receiver starts, so its rate is
//!   the most the receiving side can do;
//! - `handoff`: a small job (a 148-byte message and its sender, like a handshake job) to
//!   another thread or task and back; `handoff-one-cpu` the same on one CPU;
//! - `timer`: a 1 ms timed wait (the timer thread's condition variable against tokio's sleep);
//! - before all of them, the resident memory of an idle engine's threads against a tokio
//!   runtime with the same waits, each measured in a fresh process (`memory: ...` lines).
//!
//! Loopback UDP only, every loop bounded in count, and a watchdog ends the process if it ever
//! runs past ten minutes. `cargo bench --bench runtime`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use tokio::io::Interest;
use tokio::runtime::{Builder, Runtime};

/// Bounds each blocking receive of the thread variants (a lost datagram ends the run instead of
/// hanging it); the tokio variants are bounded by the watchdog instead, since a timeout around
/// every await would add a timer registration to what is measured.
const WAIT: Duration = Duration::from_secs(5);
/// The whole bench ends the process after this long, whatever it is doing.
const WATCHDOG: Duration = Duration::from_secs(600);

/// A ping: about a keepalive or a small data message.
const PING: usize = 64;
/// A 1-byte datagram ends an echo loop or a drain.
const END: &[u8] = &[0];
/// A full-size datagram of a tunnel with a 1420-byte MTU, near enough.
const DGRAM: usize = 1400;
/// At most this many datagrams per streaming run.
const BLAST: usize = 200_000;
/// At most this many datagrams queued before a backlog run starts draining.
const BACKLOG: usize = 50_000;
/// At least this many (criterion's warm-up asks for 1, 2, 4, ... iterations).
const MIN_BLAST: usize = 2_000;
/// Datagrams per `sendmmsg` of the sender.
const SEND_BATCH: usize = 32;
/// Buffers per `recvmmsg`, as veil's UDP readers (`sys::udp::RECV_BATCH`).
const RECV_BATCH: usize = 16;
/// Receive buffer asked for while streaming, as veil's sockets.
const RCVBUF: libc::c_int = 8 << 20;
/// Receive buffer asked for a backlog run: room for [`BACKLOG`] datagrams (the kernel doubles
/// it; each 1400-byte datagram takes a few KiB of it).
const RCVBUF_BACKLOG: libc::c_int = 192 << 20;
/// Samples per benchmark (criterion's minimum).
const SAMPLES: usize = 10;
/// Samples per UDP drain benchmark: each is one run, and a run is short enough for a burst of
/// another process's work to move it.
const DRAIN_SAMPLES: usize = 20;

fn current() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// Two workers: tokio's default on this 2-core machine, spelled out so the figures mean the
/// same elsewhere.
fn multi() -> Runtime {
    Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Two sockets on 127.0.0.1, connected to each other.
fn pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    (a, b)
}

/// A std socket handed to tokio (call inside a runtime).
fn to_tokio(s: UdpSocket) -> tokio::net::UdpSocket {
    s.set_nonblocking(true).unwrap();
    tokio::net::UdpSocket::from_std(s).unwrap()
}

/// User + system CPU time of this thread (`libc::RUSAGE_THREAD`) or process (`RUSAGE_SELF`).
fn cpu(who: libc::c_int) -> Duration {
    let mut u = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is given; zeroed is a valid rusage.
    let r = unsafe { libc::getrusage(who, u.as_mut_ptr()) };
    assert_eq!(r, 0, "getrusage: {}", io::Error::last_os_error());
    // SAFETY: initialised above (zeroed, then filled).
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

// ---------------------------------------------------------------------------------------------
// Round trip

fn echo_blocking(s: UdpSocket) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 2048];
    while let Ok(n) = s.recv(&mut buf) {
        if n == END.len() {
            return;
        }
        s.send(&buf[..n]).unwrap();
    }
}

async fn echo_tokio(s: tokio::net::UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        let n = s.recv(&mut buf).await.unwrap();
        if n == END.len() {
            return;
        }
        s.send(&buf[..n]).await.unwrap();
    }
}

async fn pings(s: &tokio::net::UdpSocket, iters: u64) -> Duration {
    let msg = [7u8; PING];
    let mut buf = [0u8; 2048];
    let t = Instant::now();
    for _ in 0..iters {
        s.send(&msg).await.unwrap();
        black_box(s.recv(&mut buf).await.unwrap());
    }
    t.elapsed()
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Pins the calling thread, and so every thread it spawns until dropped (tokio's workers
/// included), to the first CPU it may run on; dropping it restores the affinity it found.
struct OneCpu(libc::cpu_set_t);

impl OneCpu {
    fn pin() -> Self {
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain bits (all-zero is the empty set); sched_{get,set}affinity
        // read or write exactly `size` bytes of it, and CPU_SET writes inside it.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(0, size, &mut old), 0);
            let first = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &old)).unwrap();
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(first, &mut one);
            assert_eq!(libc::sched_setaffinity(0, size, &one), 0, "{}", io::Error::last_os_error());
            OneCpu(old)
        }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        // SAFETY: as in `pin`.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// The `rtt` and `handoff` groups run twice: with the threads where the scheduler puts them,
/// which on this 2-vCPU virtual machine makes each wake-up of a thread on the other, idle CPU
/// cost tens of microseconds (the hypervisor wakes the halted vCPU), and all on one CPU, where
/// no wake-up crosses CPUs and what is left is the software's own cost.
fn groups(c: &mut Criterion, name: &str, f: fn(&mut Group<'_>)) {
    {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        f(&mut g);
        g.finish();
    }
    let _pinned = OneCpu::pin();
    let mut g = c.benchmark_group(format!("{name}-one-cpu"));
    g.throughput(Throughput::Elements(1));
    f(&mut g);
    g.finish();
}

fn rtt(c: &mut Criterion) {
    groups(c, "rtt", rtt_group)
}

fn handoff(c: &mut Criterion) {
    groups(c, "handoff", handoff_group)
}

fn rtt_group(g: &mut Group<'_>) {
    // Both ends plain threads blocking in recv, as veil's UDP readers block in recvmmsg.
    {
        let (a, b) = pair();
        a.set_read_timeout(Some(WAIT)).unwrap();
        let echo = thread::spawn(move || echo_blocking(b));
        let msg = [7u8; PING];
        let mut buf = [0u8; 2048];
        g.bench_function("threads, blocking recv at both ends", |bench| {
            bench.iter(|| {
                a.send(&msg).unwrap();
                black_box(a.recv(&mut buf).unwrap())
            })
        });
        a.send(END).unwrap();
        echo.join().unwrap();
    }

    // Each end a thread of its own running a current_thread runtime.
    {
        let (a, b) = pair();
        let echo = thread::spawn(move || current().block_on(async move { echo_tokio(to_tokio(b)).await }));
        let rt = current();
        let a = rt.block_on(async { to_tokio(a) });
        g.bench_function("tokio current_thread, one runtime per end", |bench| {
            bench.iter_custom(|iters| rt.block_on(pings(&a, iters)))
        });
        rt.block_on(a.send(END)).unwrap();
        echo.join().unwrap();
    }

    // Both ends tasks of one current_thread runtime: no thread ever crosses to another.
    {
        let (a, b) = pair();
        let rt = current();
        let (a, echo) = rt.block_on(async { (to_tokio(a), tokio::spawn(echo_tokio(to_tokio(b)))) });
        g.bench_function("tokio current_thread, both ends on one thread", |bench| {
            bench.iter_custom(|iters| rt.block_on(pings(&a, iters)))
        });
        rt.block_on(async {
            a.send(END).await.unwrap();
            echo.await.unwrap()
        });
    }

    // Both ends spawned tasks of a multi_thread runtime, as an all-tokio engine would be.
    {
        let (a, b) = pair();
        let rt = multi();
        let a = Arc::new(rt.block_on(async { to_tokio(a) }));
        let echo = rt.spawn(async move { echo_tokio(to_tokio(b)).await });
        g.bench_function("tokio multi_thread (2 workers), both ends tasks", |bench| {
            bench.iter_custom(|iters| {
                let a = a.clone();
                rt.block_on(rt.spawn(async move { pings(&a, iters).await })).unwrap()
            })
        });
        rt.block_on(async {
            a.send(END).await.unwrap();
            echo.await.unwrap()
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Drain

/// Buffers for `recvmmsg`, with the sender's address of each datagram as veil takes it.
struct Mmsg {
    bufs: Vec<[u8; 2048]>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` point into this struct's own heap buffers, which
// move with it.
unsafe impl Send for Mmsg {}

impl Mmsg {
    fn new() -> Self {
        fn zero<T>() -> T {
            // SAFETY: only used for sockaddr_storage, iovec and mmsghdr, all valid all-zero.
            unsafe { std::mem::zeroed() }
        }
        let mut m = Mmsg {
            bufs: vec![[0u8; 2048]; RECV_BATCH],
            names: (0..RECV_BATCH).map(|_| zero()).collect(),
            iovs: (0..RECV_BATCH).map(|_| zero()).collect(),
            hdrs: (0..RECV_BATCH).map(|_| zero()).collect(),
        };
        for i in 0..RECV_BATCH {
            m.iovs[i] = libc::iovec { iov_base: m.bufs[i].as_mut_ptr().cast(), iov_len: 2048 };
        }
        for i in 0..RECV_BATCH {
            let h = &mut m.hdrs[i].msg_hdr;
            h.msg_iov = &mut m.iovs[i];
            h.msg_iovlen = 1;
            h.msg_name = (&mut m.names[i] as *mut libc::sockaddr_storage).cast();
        }
        m
    }

    /// One `recvmmsg`: how many buffers it filled.
    fn recv(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        loop {
            // SAFETY: every header points at buffers owned by `self` with the lengths given.
            let n = unsafe {
                libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), RECV_BATCH as libc::c_uint, flags, std::ptr::null_mut())
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.hdrs[i].msg_len as usize]
    }
}

/// The receiver's fixed work per datagram: copy it out.
struct Sink {
    work: Box<[u8; DGRAM]>,
    received: u64,
    wakes: u64,
}

impl Sink {
    fn new() -> Self {
        Sink { work: Box::new([0; DGRAM]), received: 0, wakes: 0 }
    }

    /// False at the end marker.
    fn take(&mut self, d: &[u8]) -> bool {
        if d.len() != DGRAM {
            return false;
        }
        self.work.copy_from_slice(d);
        black_box(&mut self.work);
        self.received += 1;
        true
    }
}

#[derive(Clone, Copy)]
enum Rx {
    /// A thread blocking in recvmmsg(MSG_WAITFORONE), veil's UDP reader.
    ThreadRecvmmsg,
    /// A thread blocking in recv_from, one datagram per system call.
    ThreadRecvFrom,
    /// current_thread runtime on the receiving thread: readable().await, then try_recv_from
    /// until WouldBlock.
    TokioTryRecv,
    /// current_thread runtime: recv_from().await per datagram, the way most tokio code reads.
    TokioRecvFrom,
    /// current_thread runtime: readable().await, then recvmmsg through try_io until
    /// WouldBlock (what quinn-udp does on tokio).
    TokioRecvmmsg,
    /// A task on a multi_thread runtime (2 workers): readable().await + try_recv_from.
    MultiTryRecv,
    /// A task on a multi_thread runtime (2 workers): recvmmsg through try_io.
    MultiRecvmmsg,
}

impl Rx {
    const ALL: [Rx; 7] = [
        Rx::ThreadRecvmmsg,
        Rx::ThreadRecvFrom,
        Rx::TokioTryRecv,
        Rx::TokioRecvFrom,
        Rx::TokioRecvmmsg,
        Rx::MultiTryRecv,
        Rx::MultiRecvmmsg,
    ];

    fn name(self) -> &'static str {
        match self {
            Rx::ThreadRecvmmsg => "thread, recvmmsg(MSG_WAITFORONE) x16",
            Rx::ThreadRecvFrom => "thread, recv_from",
            Rx::TokioTryRecv => "tokio current_thread, readable + try_recv_from",
            Rx::TokioRecvFrom => "tokio current_thread, recv_from().await",
            Rx::TokioRecvmmsg => "tokio current_thread, readable + try_io(recvmmsg x16)",
            Rx::MultiTryRecv => "tokio multi_thread, readable + try_recv_from",
            Rx::MultiRecvmmsg => "tokio multi_thread, readable + try_io(recvmmsg x16)",
        }
    }
}

fn recv_thread(s: UdpSocket, go: &Barrier, batch: bool) -> (Sink, Instant) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut sink = Sink::new();
    let mut m = Mmsg::new();
    let mut buf = [0u8; 2048];
    go.wait();
    'outer: loop {
        sink.wakes += 1;
        if batch {
            let Ok(n) = m.recv(s.as_raw_fd(), libc::MSG_WAITFORONE) else { break };
            for i in 0..n {
                if !sink.take(m.datagram(i)) {
                    break 'outer;
                }
            }
        } else {
            let Ok((n, from)) = s.recv_from(&mut buf) else { break };
            black_box(from);
            if !sink.take(&buf[..n]) {
                break;
            }
        }
    }
    (sink, Instant::now())
}

async fn recv_tokio(s: tokio::net::UdpSocket, go: &Barrier, rx: Rx) -> (Sink, Instant) {
    let mut sink = Sink::new();
    let mut m = Mmsg::new();
    let mut buf = [0u8; 2048];
    let fd = s.as_raw_fd();
    go.wait();
    match rx {
        Rx::TokioRecvFrom => loop {
            sink.wakes += 1;
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            black_box(from);
            if !sink.take(&buf[..n]) {
                break;
            }
        },
        Rx::TokioTryRecv | Rx::MultiTryRecv => 'outer: loop {
            s.readable().await.unwrap();
            sink.wakes += 1;
            loop {
                match s.try_recv_from(&mut buf) {
                    Ok((n, from)) => {
                        black_box(from);
                        if !sink.take(&buf[..n]) {
                            break 'outer;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        },
        Rx::TokioRecvmmsg | Rx::MultiRecvmmsg => 'outer: loop {
            s.readable().await.unwrap();
            sink.wakes += 1;
            loop {
                match s.try_io(Interest::READABLE, || m.recv(fd, libc::MSG_DONTWAIT)) {
                    Ok(n) => {
                        for i in 0..n {
                            if !sink.take(m.datagram(i)) {
                                break 'outer;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
        },
        Rx::ThreadRecvmmsg | Rx::ThreadRecvFrom => unreachable!(),
    }
    (sink, Instant::now())
}

/// How the datagrams meet the receiver.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Sent while the receiver drains them: the receiver keeps up with the sender, and sleeps
    /// whenever it has caught up (what a loaded tunnel's UDP reader does most of the time).
    Stream,
    /// All queued in the socket before the receiver starts: it never waits, so its rate is the
    /// most the receiving side can do.
    Backlog,
}

/// Sends `count` datagrams with sendmmsg (after `go`, or before it for a backlog), then end
/// markers every 200 µs until `done` (at most [`WAIT`]). Returns this thread's CPU time for
/// the datagrams and its CPU time after `go`.
fn send_blast(s: UdpSocket, count: usize, mode: Mode, go: &Barrier, done: &AtomicBool) -> (Duration, Duration) {
    let payload = [0xa5u8; DGRAM];
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: DGRAM };
    // SAFETY: an all-zero mmsghdr is valid.
    let mut hdrs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for h in &mut hdrs {
        h.msg_hdr.msg_iov = &mut iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    if mode == Mode::Stream {
        go.wait();
    }
    let cpu0 = cpu(libc::RUSAGE_THREAD);
    let mut left = count;
    while left > 0 {
        let k = left.min(SEND_BATCH);
        // SAFETY: the headers point at `iov`, which points at `payload`; the kernel only reads.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), hdrs.as_mut_ptr(), k as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOBUFS) | Some(libc::EAGAIN) => continue,
                _ => panic!("sendmmsg: {e}"),
            }
        }
        left -= n as usize;
    }
    let sending = cpu(libc::RUSAGE_THREAD) - cpu0;
    let after_go = if mode == Mode::Backlog {
        let _ = s.send(END);
        go.wait();
        cpu(libc::RUSAGE_THREAD)
    } else {
        cpu0
    };
    let t = Instant::now();
    while !done.load(Ordering::Acquire) && t.elapsed() < WAIT {
        let _ = s.send(END);
        thread::sleep(Duration::from_micros(200));
    }
    (sending, cpu(libc::RUSAGE_THREAD) - after_go)
}

/// One drain run's figures.
#[derive(Clone, Copy, Default)]
struct Run {
    sent: u64,
    received: u64,
    wakes: u64,
    elapsed: Duration,
    rx_cpu: Duration,
    tx_cpu: Duration,
}

fn drain_once(rx: Rx, mode: Mode, count: usize) -> Run {
    let (tx_sock, rx_sock) = pair();
    // SAFETY: passes a live c_int and its size; SO_RCVBUFFORCE needs CAP_NET_ADMIN, else the
    // plain option (capped at net.core.rmem_max) is used.
    unsafe {
        let size = if mode == Mode::Backlog { RCVBUF_BACKLOG } else { RCVBUF };
        let p = (&size as *const libc::c_int).cast();
        let len = size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(rx_sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, len) != 0 {
            libc::setsockopt(rx_sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, p, len);
        }
    }
    let go = Arc::new(Barrier::new(3));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (go, done) = (go.clone(), done.clone());
        thread::spawn(move || send_blast(tx_sock, count, mode, &go, &done))
    };
    let (sink, t0, end, cpu0, rt) = match rx {
        Rx::ThreadRecvmmsg | Rx::ThreadRecvFrom => {
            let receiver = {
                let (go, done) = (go.clone(), done.clone());
                thread::spawn(move || {
                    let r = recv_thread(rx_sock, &go, matches!(rx, Rx::ThreadRecvmmsg));
                    done.store(true, Ordering::Release);
                    r
                })
            };
            go.wait();
            let (cpu0, t0) = (cpu(libc::RUSAGE_SELF), Instant::now());
            let (sink, end) = receiver.join().unwrap();
            (sink, t0, end, cpu0, None)
        }
        Rx::TokioTryRecv | Rx::TokioRecvFrom | Rx::TokioRecvmmsg => {
            let receiver = {
                let (go, done) = (go.clone(), done.clone());
                thread::spawn(move || {
                    let rt = current();
                    let r = rt.block_on(async move {
                        let s = to_tokio(rx_sock);
                        recv_tokio(s, &go, rx).await
                    });
                    done.store(true, Ordering::Release);
                    r
                })
            };
            // The runtime is built before the barrier, so outside the measured window.
            go.wait();
            let (cpu0, t0) = (cpu(libc::RUSAGE_SELF), Instant::now());
            let (sink, end) = receiver.join().unwrap();
            (sink, t0, end, cpu0, None)
        }
        Rx::MultiTryRecv | Rx::MultiRecvmmsg => {
            let rt = multi();
            let receiver = {
                let (go, done) = (go.clone(), done.clone());
                rt.spawn(async move {
                    let s = to_tokio(rx_sock);
                    let r = recv_tokio(s, &go, rx).await;
                    done.store(true, Ordering::Release);
                    r
                })
            };
            go.wait();
            let (cpu0, t0) = (cpu(libc::RUSAGE_SELF), Instant::now());
            let (sink, end) = rt.block_on(receiver).unwrap();
            (sink, t0, end, cpu0, Some(rt))
        }
    };
    let (tx_cpu, tx_after_go) = sender.join().unwrap();
    // Everything this process spent from `go` on, less the sender's share: the receiving side
    // (whichever threads it ran on; the main thread only waits).
    let all = cpu(libc::RUSAGE_SELF) - cpu0;
    drop(rt);
    Run {
        sent: count as u64,
        received: sink.received,
        wakes: sink.wakes,
        elapsed: end - t0,
        rx_cpu: all.saturating_sub(tx_after_go),
        tx_cpu,
    }
}

fn drain(c: &mut Criterion, mode: Mode) {
    let (group, most) = match mode {
        Mode::Stream => ("udp-stream", BLAST),
        Mode::Backlog => ("udp-backlog", BACKLOG),
    };
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1)).sampling_mode(SamplingMode::Flat).sample_size(DRAIN_SAMPLES);
    // Criterion asks for `iters` datagrams; a run sends min(max(iters, MIN_BLAST), most) and
    // reports its time scaled to `iters` at the rate it received, so the time per iteration is
    // the time per received datagram (drops included: a datagram dropped is one not received).
    g.measurement_time(Duration::from_secs(if mode == Mode::Stream { 8 } else { 4 }));
    g.warm_up_time(Duration::from_millis(300));
    for rx in Rx::ALL {
        let mut runs = Vec::new();
        g.bench_function(rx.name(), |b| {
            b.iter_custom(|iters| {
                let run = drain_once(rx, mode, (iters as usize).clamp(MIN_BLAST, most));
                runs.push(run);
                run.elapsed.mul_f64(iters as f64 / run.received.max(1) as f64)
            })
        });
        if runs.is_empty() {
            continue; // filtered out
        }
        // The measured samples only (the warm-up's runs come first and are smaller).
        let last = &runs[runs.len().saturating_sub(DRAIN_SAMPLES)..];
        let sum = last.iter().fold(Run::default(), |a, r| Run {
            sent: a.sent + r.sent,
            received: a.received + r.received,
            wakes: a.wakes + r.wakes,
            elapsed: a.elapsed + r.elapsed,
            rx_cpu: a.rx_cpu + r.rx_cpu,
            tx_cpu: a.tx_cpu + r.tx_cpu,
        });
        // Medians over the runs: a burst of another process's work moves one run, not them.
        let median = |f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = last.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let per = |d: Duration, r: &Run| d.as_nanos() as f64 / r.received.max(1) as f64;
        println!(
            "{group}/{}: {} runs of {} datagrams; medians: {:.0} k datagrams/s received, receive CPU {:.0} \
             ns/datagram, send CPU {:.0} ns/datagram; in all: {:.2}% lost, {:.1} datagrams per wait",
            rx.name(),
            last.len(),
            sum.sent / last.len().max(1) as u64,
            median(&|r| r.received as f64 / r.elapsed.as_secs_f64() / 1e3),
            median(&|r| per(r.rx_cpu, r)),
            median(&|r| per(r.tx_cpu, r)),
            100.0 * (sum.sent - sum.received) as f64 / sum.sent.max(1) as f64,
            sum.received as f64 / sum.wakes.max(1) as f64,
        );
    }
    g.finish();
}

fn stream(c: &mut Criterion) {
    drain(c, Mode::Stream)
}

fn backlog(c: &mut Criterion) {
    drain(c, Mode::Backlog)
}

// ---------------------------------------------------------------------------------------------
// Handoff

/// A handshake job: the sender and the message (148 bytes, an initiation).
type Job = (SocketAddr, Vec<u8>);

fn job() -> Job {
    ("127.0.0.1:51820".parse().unwrap(), vec![1u8; 148])
}

/// veil's handshake queue: a VecDeque behind a mutex, a condition variable, and a closed flag.
#[derive(Default)]
struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, j: Job) {
        self.jobs.lock().unwrap().0.push_back(j);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.jobs.lock().unwrap().1 = true;
        self.ready.notify_all();
    }

    fn pop(&self) -> Option<Job> {
        let mut jobs = self.jobs.lock().unwrap();
        loop {
            if let Some(j) = jobs.0.pop_front() {
                return Some(j);
            }
            if jobs.1 {
                return None;
            }
            let (j, timeout) = self.ready.wait_timeout(jobs, WAIT).unwrap();
            if timeout.timed_out() {
                return None;
            }
            jobs = j;
        }
    }
}

type TokioPair = (tokio::sync::mpsc::Sender<Job>, tokio::sync::mpsc::Receiver<Job>);

/// Worker side of the tokio variants: answers every job with itself.
fn tokio_worker(rt: &Runtime) -> TokioPair {
    let (req_tx, mut req_rx) = tokio::sync::mpsc::channel::<Job>(4096);
    let (resp_tx, resp_rx) = tokio::sync::mpsc::channel::<Job>(4096);
    rt.spawn(async move {
        while let Some(j) = req_rx.recv().await {
            if resp_tx.send(j).await.is_err() {
                return;
            }
        }
    });
    (req_tx, resp_rx)
}

async fn round_trips(chan: &mut TokioPair, iters: u64) -> Duration {
    let mut j = job();
    let t = Instant::now();
    for _ in 0..iters {
        chan.0.send(j).await.unwrap();
        j = chan.1.recv().await.unwrap();
    }
    black_box(&j);
    t.elapsed()
}

fn handoff_group(g: &mut Group<'_>) {
    {
        let (req, resp) = (Arc::new(Queue::default()), Arc::new(Queue::default()));
        let worker = {
            let (req, resp) = (req.clone(), resp.clone());
            thread::spawn(move || {
                while let Some(j) = req.pop() {
                    resp.push(j);
                }
            })
        };
        let mut j = Some(job());
        g.bench_function("std Mutex+Condvar queue (veil's), thread <-> thread", |b| {
            b.iter(|| {
                req.push(j.take().unwrap());
                j = Some(resp.pop().unwrap());
            })
        });
        req.close();
        worker.join().unwrap();
    }

    {
        let (req_tx, req_rx) = mpsc::channel::<Job>();
        let (resp_tx, resp_rx) = mpsc::channel::<Job>();
        let worker = thread::spawn(move || {
            while let Ok(j) = req_rx.recv_timeout(WAIT) {
                if resp_tx.send(j).is_err() {
                    return;
                }
            }
        });
        let mut j = Some(job());
        g.bench_function("std mpsc, thread <-> thread", |b| {
            b.iter(|| {
                req_tx.send(j.take().unwrap()).unwrap();
                j = Some(resp_rx.recv_timeout(WAIT).unwrap());
            })
        });
        drop(req_tx);
        worker.join().unwrap();
    }

    {
        // A plain thread (a UDP reader) hands to a task of a multi_thread runtime.
        let rt = multi();
        let (req_tx, mut resp_rx) = tokio_worker(&rt);
        let mut j = Some(job());
        g.bench_function("tokio mpsc, thread <-> task on multi_thread", |b| {
            b.iter(|| {
                req_tx.blocking_send(j.take().unwrap()).unwrap();
                j = Some(resp_rx.blocking_recv().unwrap());
            })
        });
    }

    {
        let rt = multi();
        let mut chan = Some(tokio_worker(&rt));
        g.bench_function("tokio mpsc, task <-> task on multi_thread", |b| {
            b.iter_custom(|iters| {
                let mut ch = chan.take().unwrap();
                let (d, ch) = rt
                    .block_on(rt.spawn(async move {
                        let d = round_trips(&mut ch, iters).await;
                        (d, ch)
                    }))
                    .unwrap();
                chan = Some(ch);
                d
            })
        });
    }

    {
        let rt = current();
        let mut chan = tokio_worker(&rt);
        g.bench_function("tokio mpsc, task <-> task on one current_thread", |b| {
            b.iter_custom(|iters| rt.block_on(round_trips(&mut chan, iters)))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Timer

fn timer(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    g.measurement_time(Duration::from_secs(1));
    let (lock, cv) = (Mutex::new(()), Condvar::new());
    g.bench_function("std Condvar::wait_timeout(1 ms)", |b| {
        b.iter(|| {
            let guard = lock.lock().unwrap();
            black_box(cv.wait_timeout(guard, Duration::from_millis(1)).unwrap().1.timed_out())
        })
    });
    let rt = current();
    g.bench_function("tokio sleep(1 ms), current_thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Memory

/// Set in a child process to the kind of idle engine it holds.
const PROBE: &str = "VEIL_RUNTIME_BENCH_PROBE";

/// VmRSS and RssAnon (KiB) and the thread count of this process.
fn status() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("Threads:"))
}

/// The waits of an idle veil engine, as threads or as tasks, then the process's figures.
fn probe(kind: &str) {
    let settle = Duration::from_millis(100);
    let figures = match kind {
        "none" => {
            thread::sleep(settle);
            status()
        }
        "threads" => {
            // TUN reader (poll), two UDP readers (blocking receive), handshake queue (condvar),
            // timers (condvar with a timeout), UAPI listener (blocking accept; a receive here).
            let socks: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            for s in socks {
                thread::spawn(move || {
                    let _ = s.recv(&mut [0u8; 64]);
                });
            }
            let pair = Arc::new((Mutex::new(()), Condvar::new()));
            for timed in [false, true] {
                let pair = pair.clone();
                thread::spawn(move || {
                    let g = pair.0.lock().unwrap();
                    if timed {
                        drop(pair.1.wait_timeout(g, Duration::from_secs(3600)));
                    } else {
                        drop(pair.1.wait(g));
                    }
                });
            }
            thread::sleep(settle);
            status()
        }
        "tokio-current" | "tokio-multi" => {
            let rt = if kind == "tokio-current" { current() } else { multi() };
            rt.block_on(async {
                for _ in 0..4 {
                    let s = to_tokio(UdpSocket::bind("127.0.0.1:0").unwrap());
                    tokio::spawn(async move {
                        let _ = s.recv(&mut [0u8; 64]).await;
                    });
                }
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(4096);
                tokio::spawn(async move {
                    let _ = rx.recv().await;
                });
                tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
                tokio::time::sleep(settle).await;
                let s = status();
                drop(tx);
                s
            })
        }
        _ => panic!("unknown probe {kind}"),
    };
    println!("{} {} {}", figures.0, figures.1, figures.2);
    // Leave at once: the threads above are parked for good.
    std::process::exit(0);
}

/// Each kind five times in a fresh process; the median of each figure. VmRSS moves by 100 KiB
/// or more from one process to the next (how many file pages a fault maps around it depends on
/// the page cache); RssAnon does not.
fn memory() {
    let exe = std::env::current_exe().unwrap();
    let mut base = 0;
    for kind in ["none", "threads", "tokio-current", "tokio-multi"] {
        let runs: Vec<(u64, u64, u64)> = (0..5)
            .map(|_| {
                let out = Command::new(&exe).env(PROBE, kind).output().unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                let v: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                assert_eq!(v.len(), 3, "probe {kind}: {text}");
                (v[0], v[1], v[2])
            })
            .collect();
        let pick = |f: fn(&(u64, u64, u64)) -> u64| {
            let mut v: Vec<u64> = runs.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let (rss, anon, threads) = (pick(|r| r.0), pick(|r| r.1), pick(|r| r.2));
        if kind == "none" {
            base = rss;
        }
        println!(
            "memory: {kind:<13} VmRSS {rss} KiB ({:+} KiB), RssAnon {anon} KiB, {threads} threads",
            rss as i64 - base as i64
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(SAMPLES)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = rtt, stream, backlog, handoff, timer
}

fn main() {
    if let Ok(kind) = std::env::var(PROBE) {
        probe(&kind);
    }
    thread::spawn(|| {
        thread::sleep(WATCHDOG);
        eprintln!("runtime bench: still running after {WATCHDOG:?}; giving up");
        std::process::exit(1);
    });
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    println!("load average at start: {}", load());
    let t = Instant::now();
    memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!("load average at end: {}; the bench took {:.0} s", load(), t.elapsed().as_secs_f64());
}
