//! The TUN device, with the kernel's offloads where it has them (tun-rs does the system work).
//!
//! With `IFF_VNET_HDR` and TSO (`TUNSETOFFLOAD`: checksum, TSO4/6, USO4/6 on Linux >= 6.2), one
//! read returns a TCP (or UDP) super-segment of up to 64 KiB, which tun-rs splits into
//! MTU-sized packets with their checksums; on the way in, tun-rs's GRO table coalesces the
//! segments of each TCP/UDP flow so one write hands the kernel one large packet. Without the
//! offloads (a kernel that refuses them) every read and write is one packet.
//!
//! The file descriptor is non-blocking: readers drain it in batches and then wait in
//! [`Tun::wait_readable`].

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tun_rs::{DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_LEN};

/// Bytes a packet needs in front of it for [`Tun::write`] (the virtio-net header).
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;

/// The virtio-net header that leads every read and write of a TUN with `IFF_VNET_HDR`
/// (struct virtio_net_hdr in linux/virtio_net.h; native byte order, as the TUN uses it unless
/// told otherwise): how the kernel should segment a large packet and where its checksum goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (IP + TCP/UDP) repeated in front of every segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed region starts (the TCP/UDP header) ...
    pub csum_start: u16,
    /// ... and where in it the checksum field is.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The checksum is partial: the kernel completes it (CHECKSUM_PARTIAL).
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksums are known good: the kernel does not verify them (CHECKSUM_UNNECESSARY).
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;

    /// Writes the header into the first [`HEADROOM`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// Reads a header from the first [`HEADROOM`] bytes of `b` (`None` if `b` is shorter).
    pub fn read(b: &[u8]) -> Option<VirtioNetHdr> {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        (b.len() >= HEADROOM).then(|| VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }
}
/// Largest read: a 64 KiB super-segment and its virtio-net header.
pub const MAX_READ: usize = VIRTIO_NET_HDR_LEN + 65535;
/// A read may split into this many packets at most (room to give [`Tun::recv_batch`]).
pub const MAX_SEGMENTS: usize = tun_rs::IDEAL_BATCH_SIZE;

pub struct Tun {
    dev: SyncDevice,
    /// Reads and writes carry a virtio-net header (offloads on).
    vnet: bool,
}

impl Tun {
    /// Creates TUN device `name` (down, no address), with offloads unless the kernel refuses.
    pub fn create(name: &str) -> io::Result<Tun> {
        let build = |offload: bool| DeviceBuilder::new().name(name).enable(false).offload(offload).build_sync();
        let dev = match build(true) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!("TUN offloads unavailable ({e}); one packet per read and write");
                build(false)?
            }
        };
        dev.set_nonblocking(true)?;
        let vnet = dev.tcp_gso();
        Ok(Tun { dev, vnet })
    }

    /// Whether reads may return super-segments and writes may be coalesced.
    pub fn offload(&self) -> bool {
        self.vnet
    }

    /// Whether the kernel takes coalesced UDP (USO) as well as TCP.
    pub fn udp_offload(&self) -> bool {
        self.dev.udp_gso()
    }

    pub fn mtu(&self) -> io::Result<u16> {
        self.dev.mtu()
    }

    /// The TUN's file descriptor (to follow its link, see [`super::link`]).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.dev.as_raw_fd()
    }

    /// Reads one packet or super-segment without blocking and splits it into `bufs`, each
    /// packet at `offset` in its buffer (room for a header in front); its length goes to
    /// `sizes`. Returns how many packets; `WouldBlock` when nothing is waiting. `bufs` should
    /// offer [`MAX_SEGMENTS`] buffers. Errors without an OS code are a packet tun-rs could not
    /// split (dropped); errors with one are the device's.
    pub fn recv_batch<B: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        scratch: &mut [u8],
        bufs: &mut [B],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        self.dev.recv_multiple(scratch, bufs, sizes, offset)
    }

    /// Waits up to `timeout` until a read would not block (or the device fails).
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_in(self.dev.as_raw_fd(), timeout)
    }

    /// Writes one packet, or one coalesced super-packet, that `buf` holds after its virtio-net
    /// header (which must be there when [`Tun::offload`] is on; without offloads `buf` is the
    /// bare packet).
    pub fn write(&self, buf: &[u8]) -> io::Result<()> {
        self.dev.send(buf).map(|_| ())
    }

    /// Writes one packet (a copy is made to put the virtio-net header in front when needed).
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        if !self.vnet {
            return self.dev.send(packet).map(|_| ());
        }
        let mut buf = vec![0u8; HEADROOM + packet.len()];
        buf[HEADROOM..].copy_from_slice(packet);
        self.dev.send(&buf).map(|_| ())
    }
}

/// `poll` for readability of `fd`, up to `timeout`; true when readable (or in error).
pub(crate) fn poll_in(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: one pollfd, live for the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
