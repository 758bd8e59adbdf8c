//! veil: a user-space WireGuard tunnel.
//!
//! - [`noise`]: the sans-I/O protocol core.
//! - [`device`]: TUN, UDP, UAPI socket and the threads that join them to the core.
//! - [`control`]: the daemon's life cycle and the command-line tools.

pub mod control;
pub mod device;
pub mod noise;
