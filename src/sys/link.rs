//! Following the TUN's link as it changes: its MTU, the moment `ip link set mtu` sets it, in
//! whichever network namespace the interface lives (it may be moved after it was created, while
//! the daemon and its sockets stay where they were).
//!
//! One netlink route socket in the daemon's namespace listens to link changes
//! (RTMGRP_LINK) with `NETLINK_LISTEN_ALL_NSID`, so it also hears those of a namespace the TUN
//! was moved to (moving a device gives that namespace an id here). The socket is not inside
//! that namespace, so it does not keep it alive: deleting the namespace still destroys the TUN
//! and stops the daemon. Messages are matched to the TUN by its current name (`TUNGETIFF`); the
//! thread ends when the TUN is gone.

use std::io;
use std::os::fd::RawFd;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// `_IOR('T', 210, unsigned int)`: the device's name and flags.
const TUNGETIFF: libc::c_ulong = 0x800454d2;
/// The netlink multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

/// The device's current name.
fn device_name(fd: RawFd) -> io::Result<String> {
    // SAFETY: an all-zero ifreq is valid; TUNGETIFF fills in its name and flags.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: `req` is a live ifreq the ioctl writes into.
    if unsafe { libc::ioctl(fd, TUNGETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let name: Vec<u8> = req.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// The netlink socket that hears link changes, opened ahead of [`follow`]: listening to every
/// namespace (`NETLINK_LISTEN_ALL_NSID`) needs CAP_NET_BROADCAST, which the daemon gives up
/// before its threads start (see [`super::privileges`]).
pub struct LinkEvents(Socket);

impl LinkEvents {
    /// Opens the socket in the calling thread's network namespace and joins the link group.
    pub fn open() -> io::Result<LinkEvents> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        if let Err(e) = sock.set_listen_all_namespaces(true) {
            tracing::debug!("link changes of a namespace the TUN moves to will not be heard: {e}");
        }
        Ok(LinkEvents(sock))
    }
}

/// Starts the thread that calls `on_mtu` with the TUN's MTU whenever `events` announce a change
/// of its link (the MTU at start is the caller's to read).
pub fn follow(events: LinkEvents, tun: RawFd, on_mtu: impl Fn(usize) + Send + 'static) -> io::Result<()> {
    let sock = events.0;
    std::thread::Builder::new().name("veil-link".into()).spawn(move || {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = match sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                // ENOBUFS: events were lost; the next ones are still heard.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("link changes: {e}");
                    return;
                }
            };
            // The TUN's name now (it may have been renamed); gone: nothing more to follow.
            let Ok(name) = device_name(tun) else { return };
            for mtu in mtus_of(&buf[..n], &name) {
                on_mtu(mtu);
            }
        }
    })?;
    Ok(())
}

/// RTM_NEWLINK (linux/rtnetlink.h), and the two attributes of a link that matter here
/// (linux/if_link.h).
const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
/// struct nlmsghdr and struct ifinfomsg.
const NLMSG_HDR: usize = 16;
const IFINFO: usize = 16;

/// The MTUs that the link messages in `buf` announce for interface `name`.
///
/// The two attributes are read here rather than through netlink-packet-route, which decodes
/// every attribute of every message kind: it added 400 KB of code, and the idle daemon's
/// resident set (its budget is 4 MiB) is mostly code (docs/performance.md).
fn mtus_of(buf: &[u8], name: &str) -> Vec<usize> {
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let mut found = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDR <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("four bytes")) as usize;
        if len < NLMSG_HDR || off + len > buf.len() {
            break;
        }
        let msg = &buf[off..off + len];
        if u16_at(msg, 4) == RTM_NEWLINK && len >= NLMSG_HDR + IFINFO {
            let (mut ifname, mut mtu) = (None, None);
            let mut a = NLMSG_HDR + IFINFO;
            while a + 4 <= len {
                let alen = usize::from(u16_at(msg, a));
                if alen < 4 || a + alen > len {
                    break;
                }
                let data = &msg[a + 4..a + alen];
                match u16_at(msg, a + 2) {
                    IFLA_IFNAME => ifname = Some(data.split(|&c| c == 0).next().unwrap_or(data)),
                    IFLA_MTU if data.len() >= 4 => {
                        mtu = Some(u32::from_ne_bytes(data[..4].try_into().expect("four bytes")) as usize)
                    }
                    _ => {}
                }
                a += alen.next_multiple_of(4);
            }
            if let (Some(n), Some(m)) = (ifname, mtu)
                && n == name.as_bytes()
            {
                found.push(m);
            }
        }
        off += len.next_multiple_of(4);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RTM_NEWLINK message as the kernel writes it: header, ifinfomsg, attributes.
    fn new_link(name: &str, mtu: u32) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |kind: u16, data: &[u8]| {
            attrs.extend(((4 + data.len()) as u16).to_ne_bytes());
            attrs.extend(kind.to_ne_bytes());
            attrs.extend(data);
            attrs.resize(attrs.len().next_multiple_of(4), 0);
        };
        attr(IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
        attr(1, &[0xaa; 6]); // IFLA_ADDRESS: skipped
        attr(IFLA_MTU, &mtu.to_ne_bytes());
        let len = NLMSG_HDR + IFINFO + attrs.len();
        let mut m = Vec::new();
        m.extend((len as u32).to_ne_bytes());
        m.extend(RTM_NEWLINK.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend([0u8; IFINFO]);
        m.extend(attrs);
        m
    }

    #[test]
    fn the_mtu_of_the_named_link_is_found_among_several_messages() {
        let mut buf = new_link("other0", 9000);
        buf.extend(new_link("wg0", 1380));
        assert_eq!(mtus_of(&buf, "wg0"), vec![1380]);
        assert_eq!(mtus_of(&buf, "other0"), vec![9000]);
        assert_eq!(mtus_of(&buf, "wg1"), Vec::<usize>::new());
        assert_eq!(mtus_of(&buf[..10], "wg0"), Vec::<usize>::new(), "a cut message is no message");
    }

    #[test]
    fn any_bytes_never_panic() {
        for len in 0..200 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let _ = mtus_of(&junk, "wg0");
        }
    }
}
