//! The outer UDP sockets: one IPv4 and (where the host has IPv6) one IPv6 socket on the same
//! port, with large buffers and the interface's fwmark.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for (the kernel caps it at net.core.{r,w}mem_max unless root).
const BUFFER_BYTES: usize = 8 << 20;
/// How many kernel-picked ports to try before giving up on one free for both families.
const BIND_ATTEMPTS: usize = 100;

/// The pair of sockets bound to one port.
pub struct Sockets {
    pub v4: Option<UdpSocket>,
    pub v6: Option<UdpSocket>,
    pub port: u16,
}

fn open(domain: Domain, addr: SocketAddr, fwmark: u32) -> io::Result<UdpSocket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer still works.
    let _ = s.set_recv_buffer_size(BUFFER_BYTES);
    let _ = s.set_send_buffer_size(BUFFER_BYTES);
    if fwmark != 0 {
        s.set_mark(fwmark)?;
    }
    s.bind(&addr.into())?;
    Ok(s.into())
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
        let port = v4.local_addr()?.port();
        let v6 = match open(Domain::IPV6, SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into(), fwmark) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(e),
            Err(_) => None,
        };
        Ok(Sockets { v4: Some(v4), v6, port })
    }

    /// Receives one datagram on `sock` (one of these sockets). The address is `None` when the
    /// socket was shut down (a zero-length read with no sender), which the standard library's
    /// `recv_from` would turn into a panic.
    pub fn recv_from(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddr>)> {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, the slice is already initialized,
        // and recvfrom only writes initialized bytes into it, so viewing it as possibly
        // uninitialized for the duration of the call cannot expose uninitialized memory.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
        let (n, from) = socket2::SockRef::from(sock).recv_from(uninit)?;
        Ok((n, from.as_socket()))
    }

    /// Sends one datagram on the socket of the destination's family.
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        let sock = match to {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        };
        match sock {
            Some(s) => s.send_to(datagram, to),
            None => Err(io::Error::new(io::ErrorKind::Unsupported, "no socket for this address family")),
        }
    }

    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        for s in [self.v4.as_ref(), self.v6.as_ref()].into_iter().flatten() {
            socket2::SockRef::from(s).set_mark(mark)?;
        }
        Ok(())
    }

    /// Wakes any thread blocked reading these sockets (they then see the shutdown).
    pub fn shutdown(&self) {
        for s in [self.v4.as_ref(), self.v6.as_ref()].into_iter().flatten() {
            let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Read);
        }
    }
}
