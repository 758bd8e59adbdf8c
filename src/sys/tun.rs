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

pub use tun_rs::GROTable;
use tun_rs::{DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_LEN};

/// Bytes a packet needs in front of it for [`Tun::send_batch`] (the virtio-net header).
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
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

    /// Reads one packet or super-segment without blocking and splits it into `bufs`, each
    /// packet at `offset` in its buffer (room for a header in front); its length goes to
    /// `sizes`. Returns how many packets; `WouldBlock` when nothing is waiting. `bufs` should
    /// offer [`MAX_SEGMENTS`] buffers. Errors without an OS code are a packet tun-rs could not
    /// split (dropped); errors with one are the device's.
    pub fn recv_batch(
        &self,
        scratch: &mut [u8],
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        self.dev.recv_multiple(scratch, bufs, sizes, offset)
    }

    /// Waits up to `timeout` until a read would not block (or the device fails).
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        poll_in(self.dev.as_raw_fd(), timeout)
    }

    /// Writes packets, each at `offset` (>= [`HEADROOM`]) in its buffer and filling the rest
    /// of it; segments of one flow are coalesced first where the offloads allow. The buffers
    /// may grow (coalescing appends to the first packet of each flow).
    pub fn send_batch(&self, gro: &mut GROTable, bufs: &mut [Vec<u8>], offset: usize) -> io::Result<()> {
        self.dev.send_multiple(gro, bufs, offset).map(|_| ())
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
