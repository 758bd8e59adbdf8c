//! The sans-I/O protocol core: WireGuard's handshake, cookies, sessions, replay window and
//! timers. Nothing here touches a socket, a TUN device, a thread or the wall clock: every entry
//! point takes `now`, and what must be sent or delivered goes to an [`Output`].
//!
//! Start at [`Interface`].

pub mod aead;
pub mod config;
pub mod cookie;
pub mod crypto;
pub mod gate;
pub mod handshake;
pub mod handshake_work;
pub mod index;
pub mod interface;
pub mod ip;
pub mod keys;
pub mod messages;
pub mod peer;
pub mod ratelimit;
pub mod replay;
pub mod resolver;
mod schedule;
pub mod session;
pub mod tai64n;
pub mod timers;
mod wipe;

use std::net::SocketAddr;

pub use config::Config;
pub use gate::{Gate, GateHandle};
pub use handshake_work::{HandshakeWork, InitiationWork};
pub use index::{IndexReader, Sessions};
pub use interface::{Interface, PeerError, Step};
pub use keys::{KeyError, PresharedKey, PublicKey, StaticSecret};
pub use peer::{PeerId, PeerStats, ReceivedData, SealPlan, SendOutcome};
pub use tai64n::WallClock;

/// Where the core's results go: datagrams to send and decrypted packets to deliver.
pub trait Output {
    /// Send `datagram` over UDP to `to`.
    fn send(&mut self, to: SocketAddr, datagram: &[u8]);
    /// Hand a decrypted IP packet from `peer` to the TUN side (after its source address has
    /// been checked against the peer's allowed IPs, which is the caller's job).
    fn deliver(&mut self, peer: PeerId, packet: &[u8]);
}

/// What an accepted datagram was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A valid initiation; the response was sent.
    Initiation(PeerId),
    /// The response to our initiation; the session is established.
    Response(PeerId),
    /// A cookie reply; the cookie will be used for mac2.
    CookieReply(PeerId),
    /// A data packet of `len` bytes was delivered.
    Data { peer: PeerId, len: usize },
    /// An authenticated keepalive.
    Keepalive(PeerId),
}

/// Why a datagram was refused. A refused datagram changes no peer or session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveError {
    Parse(messages::ParseError),
    /// mac1 does not match our public key.
    BadMac1,
    /// Under load and mac2 missing or wrong: a cookie reply was sent instead.
    CookieRequired,
    /// Under load, mac2 valid, but its source (IPv4 address, IPv6 /64) sent more than 20
    /// handshake messages a second (burst 5): dropped without an answer.
    RateLimited,
    /// The initiation decrypted but names a static key that is not one of our peers.
    UnknownPeer,
    /// No handshake or session of ours has this receiver index.
    UnknownIndex(u32),
    Handshake(handshake::HandshakeError),
    /// The initiation's timestamp is not newer than the last one accepted from this peer.
    StaleTimestamp,
    /// A second initiation from one peer within 1/50 s.
    InitiationFlood,
    Cookie(cookie::CookieError),
    Session(session::SessionError),
    /// The session is older than REJECT_AFTER_TIME.
    Expired,
    /// Authenticated, but the plaintext is not an IPv4 or IPv6 packet.
    InvalidPacket,
}

impl std::fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiveError::Parse(e) => write!(f, "malformed message: {e}"),
            ReceiveError::BadMac1 => f.write_str("handshake message with a wrong mac1"),
            ReceiveError::CookieRequired => f.write_str("under load: mac2 missing or wrong, cookie reply sent"),
            ReceiveError::RateLimited => {
                f.write_str("under load: over the source's handshake or cookie-reply rate limit")
            }
            ReceiveError::UnknownPeer => f.write_str("initiation from an unknown public key"),
            ReceiveError::UnknownIndex(i) => write!(f, "no handshake or session with index {i:#010x}"),
            ReceiveError::Handshake(e) => write!(f, "{e}"),
            ReceiveError::StaleTimestamp => f.write_str("initiation timestamp not newer than the last one (replay)"),
            ReceiveError::InitiationFlood => f.write_str("initiations from this peer faster than 50 per second"),
            ReceiveError::Cookie(e) => write!(f, "cookie reply refused: {e:?}"),
            ReceiveError::Session(e) => write!(f, "{e}"),
            ReceiveError::Expired => f.write_str("session older than REJECT_AFTER_TIME"),
            ReceiveError::InvalidPacket => f.write_str("decrypted payload is not an IP packet"),
        }
    }
}

impl std::error::Error for ReceiveError {}
