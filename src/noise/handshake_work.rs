//! The public-key work of answering a handshake message, separated from the interface's state
//! so that an engine can do it without holding the interface's lock (the kernel likewise does
//! its handshake crypto in a worker, outside the peer's locks).
//!
//! [`crate::noise::Interface::receive_handshake`] checks a message (type, length, mac1, and
//! mac2 under load) and returns either the outcome or a [`HandshakeWork`]. [`HandshakeWork::run`]
//! does the X25519 and AEAD work and needs nothing but itself. [`crate::noise::Interface::resume`]
//! takes the result back to the interface, which checks it against its current state (the
//! peer may have been removed, or a newer handshake started, in between) and either finishes
//! or hands out the next piece of work. An initiation takes two pieces (decrypting it, writing
//! the response); a response takes one.
//!
//! Initiations of our own are work too ([`InitiationWork`]): with
//! [`crate::noise::Interface::set_defer_work`] on, a rekey, a retry or a first packet leaves its
//! initiation to be written by whoever takes it ([`crate::noise::Interface::take_work`]) and sent
//! with [`crate::noise::Interface::send_initiation`]. Off (the default), it is written in place.

use std::net::SocketAddr;
use std::sync::Arc;

use super::handshake::{self, HandshakeError, PendingInitiation, ReceivedInitiation, TransportKeys};
use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::messages::{self, INITIATION_LEN, Message, RESPONSE_LEN};
use super::peer::PeerId;
use super::resolver::StaticStaticTable;
use super::tai64n::Timestamp;
use zeroize::Zeroizing;

/// Work on one handshake message, to be [run](HandshakeWork::run) and then given back to the
/// interface with [`crate::noise::Interface::resume`].
pub struct HandshakeWork {
    pub(crate) src: SocketAddr,
    pub(crate) state: Work,
}

pub(crate) enum Work {
    /// Decrypt an initiation addressed to `secret` (DH es, the static key, the timestamp).
    ReadInitiation {
        msg: [u8; INITIATION_LEN],
        secret: StaticSecret,
        table: Arc<StaticStaticTable>,
        /// Makes the response's ephemeral key: erased with the work.
        seed: Zeroizing<[u8; 32]>,
        result: Option<Result<ReceivedInitiation, HandshakeError>>,
    },
    /// Write the response to an initiation from `peer` that passed the replay checks
    /// (DH ee, se, the psk).
    WriteResponse {
        peer: PeerId,
        received: Option<ReceivedInitiation>,
        remote_index: u32,
        psk: PresharedKey,
        index: u32,
        result: Option<Result<([u8; RESPONSE_LEN], TransportKeys), HandshakeError>>,
    },
    /// Read the response to our initiation `pending` (DH ee, se, the psk).
    ReadResponse {
        peer: PeerId,
        msg: [u8; RESPONSE_LEN],
        pending: PendingInitiation,
        result: Option<Result<TransportKeys, HandshakeError>>,
    },
}

impl HandshakeWork {
    /// Does the work (about 35 us of X25519 per scalar multiplication on the project's
    /// machine, two or three of them). Touches nothing outside `self`.
    pub fn run(&mut self) {
        match &mut self.state {
            Work::ReadInitiation { msg, secret, table, seed, result } => {
                let Ok(Message::Initiation(init)) = messages::parse(&msg[..]) else {
                    *result = Some(Err(HandshakeError::Internal));
                    return;
                };
                *result = Some(handshake::read_initiation(secret, &init, **seed, table.clone()));
            }
            Work::WriteResponse { received, psk, index, result, .. } => {
                let Some(received) = received.take() else { return };
                let mut msg = [0u8; RESPONSE_LEN];
                *result = Some(handshake::write_response(received, psk, *index, &mut msg).map(|keys| (msg, keys)));
            }
            Work::ReadResponse { msg, pending, result, .. } => {
                let Ok(Message::Response(resp)) = messages::parse(&msg[..]) else {
                    *result = Some(Err(HandshakeError::Internal));
                    return;
                };
                *result = Some(handshake::read_response(pending, &resp));
            }
        }
    }
}

/// The public-key work of an initiation of ours (our ephemeral, DH es, the static key and the
/// timestamp encrypted), to be [run](InitiationWork::run) and then sent with
/// [`crate::noise::Interface::send_initiation`].
pub struct InitiationWork {
    pub(crate) peer: PeerId,
    pub(crate) secret: StaticSecret,
    pub(crate) remote: PublicKey,
    pub(crate) psk: PresharedKey,
    pub(crate) index: u32,
    pub(crate) timestamp: Timestamp,
    /// Makes the ephemeral key: erased with the work.
    pub(crate) seed: Zeroizing<[u8; 32]>,
    pub(crate) table: Arc<StaticStaticTable>,
    pub(crate) result: Option<Result<(PendingInitiation, [u8; INITIATION_LEN]), HandshakeError>>,
}

impl InitiationWork {
    /// Writes the message (about 60 us: a fixed-base and a variable-base X25519).
    pub fn run(&mut self) {
        let mut msg = [0u8; INITIATION_LEN];
        let r = handshake::write_initiation(
            &self.secret,
            &self.remote,
            &self.psk,
            self.index,
            self.timestamp,
            *self.seed,
            self.table.clone(),
            &mut msg,
        );
        self.result = Some(r.map(|pending| (pending, msg)));
    }
}
