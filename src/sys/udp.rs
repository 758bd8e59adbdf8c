//! The outer UDP sockets: one IPv4 and (where the host has IPv6) one IPv6 socket on the same
//! port, with large buffers and the interface's fwmark, read and written in batches.
//!
//! - Receive: `recvmmsg` fills up to [`RECV_BATCH`] buffers per system call, and with UDP GRO
//!   (`UDP_GRO`, Linux 5.0) each buffer holds up to 64 datagrams of one sender back to back,
//!   all of one size but the last (the size comes in a control message).
//! - Send: a run of datagrams to one destination, all of one size but the last, leaves in one
//!   `sendmsg` with UDP GSO (`UDP_SEGMENT`, Linux 4.18) gathering them from where they lie (an
//!   iovec each, no copy); what cannot go that way leaves through `sendmmsg`.
//!
//! Why not quinn-udp, which does GSO and GRO too: its send takes one contiguous buffer (a copy
//! of every datagram here, where the datagrams are sealed in separate buffers), it turns GSO off
//! for the socket's lifetime after one `EINVAL` (which a single datagram larger than the path
//! MTU causes), and it sets `IP_PMTUDISC_PROBE`, which forbids the fragmentation a tunnel MTU
//! above the path MTU needs. Here a GSO send the kernel refuses is sent again datagram by
//! datagram; only `EIO` (a device that cannot segment) turns GSO off for the socket.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket as RawSocket, Type};

/// Socket buffer size asked for (forced past net.core.{r,w}mem_max where we may).
const BUFFER_BYTES: usize = 8 << 20;
/// How many kernel-picked ports to try before giving up on one free for both families.
const BIND_ATTEMPTS: usize = 100;
/// Buffers filled per `recvmmsg`.
pub const RECV_BATCH: usize = 16;
/// One receive buffer: the largest GRO train (64 KiB of UDP payload) or datagram.
pub const RECV_BUF_LEN: usize = 65536;
/// At most this many segments per GSO send (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// At most this many bytes per GSO send (one IP packet's worth, minus headers).
const GSO_MAX_BYTES: usize = 65535 - 40 - 8;
/// linux/udp.h
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// One UDP socket with what the kernel lets it do.
pub struct Socket {
    sock: UdpSocket,
    /// Sends may use UDP GSO (cleared when the kernel says the device cannot).
    gso: AtomicBool,
}

/// What became of the source address a send asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Used as asked (or none was asked for).
    Kept,
    /// No longer one of ours: the datagrams left from where the kernel chose.
    Dropped,
}

/// The pair of sockets bound to one port.
pub struct Sockets {
    pub v4: Option<Socket>,
    pub v6: Option<Socket>,
    pub port: u16,
}

fn setsockopt_int(sock: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn open(domain: Domain, addr: SocketAddr, fwmark: u32) -> io::Result<Socket> {
    let s = RawSocket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
    }
    // Large buffers absorb bursts between two reads; forced where we are allowed to (root),
    // else as large as net.core.{r,w}mem_max lets them be. Best effort: smaller ones work.
    if setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, BUFFER_BYTES as libc::c_int).is_err() {
        let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    }
    if setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, BUFFER_BYTES as libc::c_int).is_err() {
        let _ = s.set_send_buffer_size(BUFFER_BYTES);
    }
    if fwmark != 0 {
        s.set_mark(fwmark)?;
    }
    s.bind(&addr.into())?;
    // GRO: datagrams of one flow arrive coalesced. Without it each arrives alone.
    let _ = setsockopt_int(&s, libc::SOL_UDP, UDP_GRO, 1);
    // The local address each datagram was sent to, so replies leave from it.
    let _ = if domain == Domain::IPV6 {
        setsockopt_int(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
    } else {
        setsockopt_int(&s, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
    };
    // GSO: probe with the socket option, then clear it (sends set the size per message).
    let gso = setsockopt_int(&s, libc::SOL_UDP, UDP_SEGMENT, 1200).is_ok()
        && setsockopt_int(&s, libc::SOL_UDP, UDP_SEGMENT, 0).is_ok();
    Ok(Socket { sock: s.into(), gso: AtomicBool::new(gso) })
}

/// The index of the network interface `name` in this network namespace, for the zone of a
/// link-local address (`fe80::1%eth0`).
pub fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call, which only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl Sockets {
    /// Binds both families to `port` (0 = any free port, the same for both). IPv6 is optional:
    /// a host without it gets an IPv4 socket only.
    pub fn bind(port: u16, fwmark: u32) -> io::Result<Sockets> {
        // With port 0 the kernel picks a port free for IPv4, which IPv6 may have in use: then
        // try another one.
        let attempts = if port == 0 { BIND_ATTEMPTS } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            match Self::bind_once(port, fwmark) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
    }

    fn bind_once(port: u16, fwmark: u32) -> io::Result<Sockets> {
        let v4 = open(Domain::IPV4, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into(), fwmark)?;
        let port = v4.sock.local_addr()?.port();
        let v6 = match open(Domain::IPV6, SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into(), fwmark) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => None,
        };
        Ok(Sockets { v4: Some(v4), v6, port })
    }

    /// The socket of the destination's family.
    pub fn for_addr(&self, to: &SocketAddr) -> io::Result<&Socket> {
        let sock = match to {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        };
        sock.ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no socket for this address family"))
    }

    /// Sends one datagram on the socket of the destination's family, from `from` if given (see
    /// [`Socket::send_batch`]).
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr, from: Option<IpAddr>) -> io::Result<Source> {
        self.for_addr(&to)?.send_batch(to, from, &[datagram])
    }

    /// Sends datagrams to `to`, in order, in as few system calls as the kernel allows, from
    /// `from` if given (see [`Socket::send_batch`]).
    pub fn send_batch(&self, to: SocketAddr, from: Option<IpAddr>, datagrams: &[&[u8]]) -> io::Result<Source> {
        self.for_addr(&to)?.send_batch(to, from, datagrams)
    }

    /// Sends each message to its own destination, all from `from` if given (see
    /// [`Socket::send_each_to`]); the destinations must be of one address family.
    pub fn send_each_to(&self, from: Option<IpAddr>, messages: &[(SocketAddr, &[u8])]) -> io::Result<Source> {
        match messages.first() {
            Some((to, _)) => self.for_addr(to)?.send_each_to(from, messages),
            None => Ok(Source::Kept),
        }
    }

    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        for s in [self.v4.as_ref(), self.v6.as_ref()].into_iter().flatten() {
            socket2::SockRef::from(&s.sock).set_mark(mark)?;
        }
        Ok(())
    }

    /// Wakes any thread blocked reading these sockets (they then see the shutdown).
    pub fn shutdown(&self) {
        for s in [self.v4.as_ref(), self.v6.as_ref()].into_iter().flatten() {
            let _ = socket2::SockRef::from(&s.sock).shutdown(std::net::Shutdown::Read);
        }
    }
}

/// Where one received buffer came from and how it divides into datagrams.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    /// Bytes in the buffer.
    pub len: usize,
    pub src: SocketAddr,
    /// Size of each datagram in the buffer (the last may be shorter); `len` without GRO.
    pub segment: usize,
    /// The local address the datagrams were sent to (where the sender reached us).
    pub dst: Option<IpAddr>,
}

/// One received message's control data (GRO segment size, packet info), 8-aligned.
type RecvControl = [u64; 16];

/// Buffers and kernel structures for `recvmmsg`, allocated once per reader thread. The
/// buffers are one allocation that is never cleared: only the pages the kernel receives into
/// become resident (an idle socket's megabyte costs nothing), and only the bytes the kernel
/// wrote are ever read.
pub struct RecvBatch {
    /// `None` while a buffer is lent out (see [`RecvBatch::lend`]).
    bufs: Vec<Option<RecvBuf>>,
    names: Vec<MaybeUninit<libc::sockaddr_storage>>,
    ctrls: Vec<RecvControl>,
    meta: Vec<RecvMeta>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..RECV_BATCH)
                .map(|_| Some(RecvBuf { data: Box::new_uninit_slice(RECV_BUF_LEN), len: 0 }))
                .collect(),
            names: vec![MaybeUninit::zeroed(); RECV_BATCH],
            ctrls: vec![[0; 16]; RECV_BATCH],
            meta: Vec::with_capacity(RECV_BATCH),
            count: 0,
        }
    }
}

impl RecvBatch {
    /// How many buffers the last receive filled.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Buffer `i` of the last receive (its bytes and where they came from). Mutable, so that
    /// datagrams can be decrypted in place.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], RecvMeta) {
        let m = self.meta[i];
        (self.bufs[i].as_mut().expect("buffer lent out and not given back").bytes_mut(), m)
    }

    /// Takes buffer `i` of the last receive out, with what it holds, to lend it to another
    /// thread; [`RecvBatch::give_back`] before the next receive.
    pub fn lend(&mut self, i: usize) -> RecvBuf {
        self.bufs[i].take().expect("buffer lent twice")
    }

    pub fn give_back(&mut self, i: usize, buf: RecvBuf) {
        debug_assert!(self.bufs[i].is_none());
        self.bufs[i] = Some(buf);
    }
}

/// One receive buffer and how many bytes the kernel put in it.
pub struct RecvBuf {
    data: Box<[MaybeUninit<u8>]>,
    len: usize,
}

impl RecvBuf {
    /// The received bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let buf = &mut self.data[..self.len];
        // SAFETY: `len` is what recvmmsg reported for this buffer (set in `recv_batch`), so the
        // kernel wrote, i.e. initialised, exactly these bytes; `MaybeUninit<u8>` has the
        // layout of `u8`.
        unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) }
    }
}

/// The datagrams in one received buffer of `meta`: `(offset, len)` pairs.
pub fn datagrams(meta: RecvMeta) -> impl Iterator<Item = (usize, usize)> {
    let seg = meta.segment.max(1);
    (0..meta.len).step_by(seg).map(move |off| (off, seg.min(meta.len - off)))
}

fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let a = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// What a received message's control data says: its GRO segment size and the local address
/// it was sent to.
fn control(hdr: &libc::msghdr) -> (Option<usize>, Option<IpAddr>) {
    let (mut segment, mut dst) = (None, None);
    // SAFETY: `hdr` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR walk the control buffer it
    // points to within `msg_controllen`, each header they return lies inside it, and each data
    // read is of the type the (level, type) pair says the kernel put there (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::SOL_UDP, UDP_GRO) => {
                    segment = usize::try_from(data.cast::<libc::c_int>().read_unaligned()).ok().filter(|&s| s > 0)
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (segment, dst)
}

/// Control messages for a send, built in an aligned buffer.
struct Control {
    buf: [u64; 12],
    len: usize,
}

impl Control {
    fn new() -> Self {
        Control { buf: [0; 12], len: 0 }
    }

    /// Appends one control message carrying `data`.
    fn push(&mut self, level: libc::c_int, kind: libc::c_int, data: &[u8]) {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let (space, len) = unsafe { (libc::CMSG_SPACE(data.len() as u32) as usize, libc::CMSG_LEN(data.len() as u32)) };
        assert!(self.len + space <= size_of_val(&self.buf), "control buffer too small");
        // SAFETY: `self.len` is a multiple of 8 (CMSG_SPACE rounds up to it), so the header
        // lands aligned inside `buf`, and the data after it (at CMSG_DATA) fits in `space`, which
        // the assertion checked.
        unsafe {
            let c = self.buf.as_mut_ptr().cast::<u8>().add(self.len).cast::<libc::cmsghdr>();
            (*c).cmsg_len = len as _;
            (*c).cmsg_level = level;
            (*c).cmsg_type = kind;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
        }
        self.len += space;
    }

    /// The GSO segment size.
    fn segment(&mut self, seg: u16) {
        self.push(libc::SOL_UDP, UDP_SEGMENT, &seg.to_ne_bytes());
    }

    /// The source address (of the socket's family) the datagrams leave from.
    fn source(&mut self, src: IpAddr) {
        match src {
            IpAddr::V4(a) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from(a).to_be() },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                self.push(libc::IPPROTO_IP, libc::IP_PKTINFO, bytes_of(&info));
            }
            IpAddr::V6(a) => {
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: a.octets() }, ipi6_ifindex: 0 };
                self.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes_of(&info));
            }
        }
    }

    /// Points `hdr` at the messages (none: no control data).
    fn attach(&mut self, hdr: &mut libc::msghdr) {
        if self.len > 0 {
            hdr.msg_control = self.buf.as_mut_ptr().cast();
            hdr.msg_controllen = self.len as _;
        }
    }
}

/// The bytes of a plain C struct (no padding that matters: the kernel reads the fields).
fn bytes_of<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `v` is a live `T`; reading its `size_of::<T>()` bytes is in bounds. The pktinfo
    // structs used here have no padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Whether a send failed because its source address is no longer ours (removed, or moved to
/// another interface): it should go again without one.
fn source_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EADDRNOTAVAIL) | Some(libc::ENETUNREACH))
}

impl Socket {
    /// Waits for datagrams and fills `batch` with what has arrived (at least one buffer).
    /// `Ok(0)` means the socket was shut down.
    pub fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.count = 0;
        batch.meta.clear();
        let mut iovs: [MaybeUninit<libc::iovec>; RECV_BATCH] = [const { MaybeUninit::uninit() }; RECV_BATCH];
        // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
        for (i, buf) in batch.bufs.iter_mut().enumerate() {
            let buf = buf.as_mut().expect("every buffer given back before the next receive");
            buf.len = 0;
            let iov = iovs[i].write(libc::iovec { iov_base: buf.data.as_mut_ptr().cast(), iov_len: buf.data.len() });
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = batch.names[i].as_mut_ptr().cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_control = batch.ctrls[i].as_mut_ptr().cast();
            h.msg_controllen = size_of::<RecvControl>() as _;
        }
        let n = loop {
            // SAFETY: every header points at live buffers owned by `batch` (names, control,
            // iovecs on this stack frame pointing into `batch.bufs`) with the lengths given;
            // the kernel writes at most those lengths.
            let n = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for (i, h) in hdrs.iter().enumerate().take(n) {
            // SAFETY: the kernel initialised the name it reported (msg_namelen bytes, possibly 0).
            let name = unsafe { batch.names[i].assume_init_ref() };
            let Some(src) = socket_addr(name, h.msg_hdr.msg_namelen) else {
                // No sender: the socket was shut down (a zero-length read).
                if batch.meta.is_empty() {
                    return Ok(0);
                }
                break;
            };
            let len = h.msg_len as usize;
            let (segment, dst) = control(&h.msg_hdr);
            batch.meta.push(RecvMeta { len, src, segment: segment.unwrap_or(len), dst });
            if let Some(buf) = batch.bufs[i].as_mut() {
                buf.len = len.min(buf.data.len());
            }
        }
        // Buffers are used in order; a skipped one (no sender) ends the batch, so meta[i]
        // describes buffer i.
        batch.count = batch.meta.len();
        Ok(batch.count)
    }

    /// Sends datagrams to `to` in order: runs of equal size (the last of a run may be shorter)
    /// in one GSO `sendmsg` each, the datagrams between runs through `sendmmsg`. With `from`,
    /// they leave from that local address (`IP_PKTINFO`/`IPV6_PKTINFO`), the one the peer
    /// reached us at; if it is no longer ours, they go again without it (`Source::Dropped`), as
    /// the kernel's WireGuard falls over to another address ("sticky but not too sticky").
    pub fn send_batch(&self, to: SocketAddr, from: Option<IpAddr>, datagrams: &[&[u8]]) -> io::Result<Source> {
        let from = from.filter(|f| f.is_ipv4() == to.is_ipv4());
        match self.send_all(to, from, datagrams) {
            Err(e) if from.is_some() && source_gone(&e) => self.send_all(to, None, datagrams).map(|()| Source::Dropped),
            r => r.map(|()| Source::Kept),
        }
    }

    fn send_all(&self, to: SocketAddr, from: Option<IpAddr>, datagrams: &[&[u8]]) -> io::Result<()> {
        let addr = SockAddr::from(to);
        let gso = self.gso.load(Ordering::Relaxed);
        let mut singles = 0; // datagrams[singles..i] wait for a sendmmsg
        let mut i = 0;
        while i < datagrams.len() {
            let seg = datagrams[i].len();
            let (mut j, mut bytes) = (i + 1, seg);
            while gso
                && j < datagrams.len()
                && j - i < GSO_MAX_SEGMENTS
                && datagrams[j].len() <= seg
                && bytes + datagrams[j].len() <= GSO_MAX_BYTES
            {
                bytes += datagrams[j].len();
                j += 1;
                if datagrams[j - 1].len() < seg {
                    break; // a shorter datagram ends the run
                }
            }
            if j - i == 1 {
                i = j;
                continue;
            }
            self.send_each(&addr, from, &datagrams[singles..i])?;
            let run = &datagrams[i..j];
            if let Err(e) = self.send_gso(&addr, from, run, seg) {
                if e.raw_os_error() == Some(libc::EIO) {
                    // The route's device cannot segment: stop trying on this socket.
                    self.gso.store(false, Ordering::Relaxed);
                }
                // EINVAL/EMSGSIZE (a datagram over the path MTU needs fragmenting, which GSO
                // does not do) and the like: send them one by one.
                self.send_each(&addr, from, run)?;
            }
            singles = j;
            i = j;
        }
        self.send_each(&addr, from, &datagrams[singles..])
    }

    fn send_gso(&self, addr: &SockAddr, from: Option<IpAddr>, run: &[&[u8]], seg: usize) -> io::Result<()> {
        let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; GSO_MAX_SEGMENTS];
        for (iov, d) in iovs.iter_mut().zip(run) {
            *iov = libc::iovec { iov_base: d.as_ptr() as *mut _, iov_len: d.len() };
        }
        let mut ctrl = Control::new();
        ctrl.segment(seg as u16);
        if let Some(f) = from {
            ctrl.source(f);
        }
        // SAFETY: an all-zero msghdr is valid.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = addr.as_ptr() as *mut _;
        hdr.msg_namelen = addr.len();
        hdr.msg_iov = iovs.as_mut_ptr();
        hdr.msg_iovlen = run.len() as _;
        ctrl.attach(&mut hdr);
        loop {
            // SAFETY: `hdr` points at the address, the iovecs (each a live datagram slice that
            // the kernel only reads) and the control buffer, all alive for the call.
            let n = unsafe { libc::sendmsg(self.sock.as_raw_fd(), &hdr, 0) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends each datagram as its own message to `addr`, up to 64 per `sendmmsg`.
    fn send_each(&self, addr: &SockAddr, from: Option<IpAddr>, datagrams: &[&[u8]]) -> io::Result<()> {
        self.sendmmsg(from, datagrams.len(), |k| (addr, datagrams[k]), false)
    }

    /// Sends each message (destination, bytes) as its own datagram, up to 64 per `sendmmsg`,
    /// from `from` if given (falling back as [`Socket::send_batch`] does). A message the kernel
    /// refuses (an unreachable destination, too large) is skipped and the rest still go; the
    /// error is the last such refusal, after everything else was sent. For replies to many
    /// senders at once (cookie replies under a flood).
    pub fn send_each_to(&self, from: Option<IpAddr>, messages: &[(SocketAddr, &[u8])]) -> io::Result<Source> {
        let addrs: Vec<SockAddr> = messages.iter().map(|(to, _)| SockAddr::from(*to)).collect();
        let from = from.filter(|f| messages.first().is_some_and(|(to, _)| f.is_ipv4() == to.is_ipv4()));
        let send = |from| self.sendmmsg(from, messages.len(), |k| (&addrs[k], messages[k].1), true);
        match send(from) {
            Err(e) if from.is_some() && source_gone(&e) => send(None).map(|()| Source::Dropped),
            r => r.map(|()| Source::Kept),
        }
    }

    /// Sends `n` messages, message `k` being `message(k)` (its destination and bytes), each as
    /// its own datagram, up to 64 per `sendmmsg`, from `from` if given. A message the kernel
    /// refuses with EMSGSIZE (or, with `skip_refused`, any error) is skipped unless it is the
    /// last; otherwise the error ends the call.
    fn sendmmsg<'a>(
        &self,
        from: Option<IpAddr>,
        n: usize,
        message: impl Fn(usize) -> (&'a SockAddr, &'a [u8]),
        skip_refused: bool,
    ) -> io::Result<()> {
        const CHUNK: usize = 64;
        let mut ctrl = Control::new();
        if let Some(f) = from {
            ctrl.source(f);
        }
        let mut refused = None;
        for base in (0..n).step_by(CHUNK) {
            let count = CHUNK.min(n - base);
            let mut iovs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; CHUNK];
            // SAFETY: an all-zero mmsghdr is valid.
            let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
            for k in 0..count {
                let (addr, d) = message(base + k);
                iovs[k] = libc::iovec { iov_base: d.as_ptr() as *mut _, iov_len: d.len() };
                let h = &mut hdrs[k].msg_hdr;
                h.msg_name = addr.as_ptr() as *mut _;
                h.msg_namelen = addr.len();
                h.msg_iov = &mut iovs[k];
                h.msg_iovlen = 1;
                // Every message reads the same control data (the kernel only reads it).
                ctrl.attach(h);
            }
            let mut sent = 0;
            while sent < count {
                // SAFETY: headers sent..count point at their addresses, the iovecs above (which
                // point at live datagram slices) and the control buffer, all of which the
                // kernel only reads and which outlive the call.
                let r = unsafe {
                    libc::sendmmsg(self.sock.as_raw_fd(), hdrs[sent..].as_mut_ptr(), (count - sent) as libc::c_uint, 0)
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let skip = skip_refused || e.raw_os_error() == Some(libc::EMSGSIZE);
                    if skip && base + sent + 1 < n {
                        sent += 1; // skip the one datagram the kernel refuses, keep the rest
                        refused = Some(e);
                        continue;
                    }
                    return Err(e);
                }
                sent += r as usize;
            }
        }
        match refused {
            Some(e) if skip_refused => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn loopback_pair() -> (Sockets, UdpSocket) {
        let socks = Sockets::bind(0, 0).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        (socks, peer)
    }

    fn pattern(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|k| (i * 31 + k) as u8).collect()
    }

    #[test]
    fn replies_to_many_senders_reach_each_and_an_unreachable_one_does_not_stop_the_rest() {
        let socks = Sockets::bind(0, 0).unwrap();
        let peers: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let data: Vec<Vec<u8>> = (0..3).map(|i| pattern(i, 64)).collect();
        // 70 messages (more than one sendmmsg), cycling over the three peers, with one to a
        // destination the kernel refuses (port 0) among them.
        let mut messages: Vec<(SocketAddr, &[u8])> =
            (0..70).map(|k| (peers[k % 3].local_addr().unwrap(), &data[k % 3][..])).collect();
        messages.insert(10, ("127.0.0.1:0".parse().unwrap(), &data[0][..]));
        let r = socks.send_each_to(None, &messages);
        assert!(r.is_err(), "the refused message is reported");
        let mut buf = [0u8; 128];
        for (i, p) in peers.iter().enumerate() {
            p.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let want = (0..70).filter(|k| k % 3 == i).count();
            for _ in 0..want {
                let (n, from) = p.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], &data[i][..]);
                assert_eq!(from.port(), socks.port);
            }
        }
    }

    #[test]
    fn a_batch_arrives_whole_and_in_order() {
        let (socks, peer) = loopback_pair();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let to = peer.local_addr().unwrap();
        // Runs of equal sizes (GSO), a shorter tail, then odd sizes (sendmmsg).
        let mut sizes = vec![1200; 50];
        sizes.extend([700, 1200, 1200, 33, 1, 1400, 1400]);
        let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| pattern(i, n)).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        socks.send_batch(to, None, &refs).unwrap();
        let mut buf = [0u8; 2048];
        for (i, d) in data.iter().enumerate() {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &d[..], "datagram {i}");
        }
    }

    #[test]
    fn received_trains_split_back_into_the_datagrams_sent() {
        let socks = Sockets::bind(0, 0).unwrap();
        let port = socks.port;
        let sender = Sockets::bind(0, 0).unwrap();
        let sizes = [1000usize, 1000, 1000, 1000, 500, 64, 64, 1];
        let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| pattern(i, n)).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        sender.send_batch(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), None, &refs).unwrap();
        let mut got = Vec::new();
        let mut batch = RecvBatch::default();
        let sock = socks.v4.as_ref().unwrap();
        while got.len() < data.len() {
            let n = sock.recv_batch(&mut batch).unwrap();
            assert!(n > 0);
            for i in 0..batch.len() {
                let (buf, meta) = batch.get_mut(i);
                assert_eq!(meta.src.port(), sender.port);
                for (off, len) in datagrams(meta) {
                    got.push(buf[off..off + len].to_vec());
                }
            }
        }
        assert_eq!(got, data);
    }

    #[test]
    fn received_datagrams_carry_the_local_address_they_reached_and_replies_leave_from_it() {
        // Every 127/8 address is local: reach the sockets at 127.0.0.7 (not the 127.0.0.1 the
        // kernel would choose as a source).
        let (socks, peer) = loopback_pair();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let at = Ipv4Addr::new(127, 0, 0, 7);
        peer.send_to(b"hello", (at, socks.port)).unwrap();
        let mut batch = RecvBatch::default();
        let sock = socks.v4.as_ref().unwrap();
        assert_eq!(sock.recv_batch(&mut batch).unwrap(), 1);
        let meta = batch.get_mut(0).1;
        assert_eq!(meta.dst, Some(IpAddr::V4(at)));

        let to = peer.local_addr().unwrap();
        let replies: Vec<&[u8]> = vec![b"one", b"two"];
        assert_eq!(socks.send_batch(to, meta.dst, &replies).unwrap(), Source::Kept);
        let mut buf = [0u8; 16];
        for want in &replies {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], *want);
            assert_eq!(from, SocketAddr::from((at, socks.port)));
        }
    }

    #[test]
    fn a_source_that_is_not_ours_is_dropped_and_the_datagram_still_goes() {
        let (socks, peer) = loopback_pair();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let to = peer.local_addr().unwrap();
        let gone = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)); // TEST-NET-1: on no interface
        assert_eq!(socks.send_to(b"still", to, Some(gone)).unwrap(), Source::Dropped);
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"still");
        assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, socks.port)));
    }

    #[test]
    fn shutdown_wakes_a_blocked_reader_with_zero() {
        let socks = std::sync::Arc::new(Sockets::bind(0, 0).unwrap());
        let s = socks.clone();
        let reader = std::thread::spawn(move || {
            let mut batch = RecvBatch::default();
            s.v4.as_ref().unwrap().recv_batch(&mut batch).unwrap()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        socks.shutdown();
        assert_eq!(reader.join().unwrap(), 0);
    }
}
