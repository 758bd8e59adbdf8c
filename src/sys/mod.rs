//! The kernel interfaces the engine uses, and the only place (with the daemon's process set-up)
//! where veil makes system calls of its own: the TUN device with its offloads, and the UDP
//! sockets with batched, segmented sends and coalesced receives; the TUN's link as it changes
//! (netlink); and the clock the engine ages sessions by (CLOCK_BOOTTIME). Also the process's
//! own protection: its memory kept out of swap and core files (`memory`), its capabilities and
//! user (`privileges`).

pub mod clock;
pub mod link;
pub mod memory;
pub mod privileges;
pub mod tun;
pub mod udp;
