//! The packet engine: the threads that move packets between the TUN device, the protocol core
//! and the UDP sockets, one file per stage, in the order a packet meets them.
//!
//! Outbound ([`tx`]): TUN read (a batch; super-segments split) -> cryptokey routing by
//! destination -> the core plans each peer's share under one lock per batch -> [`workers`]
//! seal outside the lock -> UDP send (GSO).
//!
//! Inbound ([`rx`], one thread per socket): UDP receive (a batch; GRO trains split) ->
//! handshake messages to [`handshake`], data messages: session found without the core's lock ->
//! open (AEAD, replay window) -> source address must route back to the sending peer -> TUN
//! write (segments coalesced by [`gro`]) -> the core's bookkeeping under one lock per batch.
//!
//! [`timers`] fires the core's deadlines; [`handshake`] answers handshake messages from a
//! bounded queue, fair between sources ([`handshake_queue`]), so a flood of them cannot stall
//! data or crowd out other peers' handshakes. The kernel interfaces are in
//! [`crate::sys`].

pub mod batch;
pub mod checksum;
pub mod gro;
pub mod handshake;
pub mod handshake_queue;
pub mod rx;
pub mod timers;
pub mod tx;
pub mod workers;
