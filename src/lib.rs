//! veil: a user-space WireGuard tunnel.
//!
//! - [`noise`]: the sans-I/O protocol core.
//! - [`datapath`]: the packet engine (batches, TX, RX, workers, handshake and timer threads).
//! - [`device`]: one interface at run time: its state, start and stop, the UAPI socket.
//! - [`sys`]: the kernel interfaces (TUN with offloads, UDP with GSO/GRO).
//! - [`status`]: the status of an interface and its peers, as text, JSON and metrics.
//! - [`control`]: the daemon's life cycle and the command-line tools.
//! - [`lab`]: network namespaces, links and tunnels from a topology, for tests (`veil lab`).

pub mod control;
pub mod datapath;
pub mod device;
pub mod lab;
pub mod noise;
pub mod status;
pub mod sys;
