//! The Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s handshake, as WireGuard frames it, through snow.
//!
//! snow produces the Noise payloads of messages 1 and 2 (108 and 48 bytes) byte for byte; this
//! module places them in WireGuard's framing with the sender and receiver indices. mac1/mac2
//! are added by [`super::cookie`]; timestamps, replay of initiations and indices are checked by
//! the peer and the interface.
//!
//! snow's handshake state (chaining key, hash, psk) is held [`Wiped`]: erased as soon as the
//! handshake is done with, whether it completed (the transport keys are taken out), failed or
//! was superseded.

use std::sync::{Arc, OnceLock};

use snow::params::NoiseParams;
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use super::keys::{PresharedKey, PublicKey, StaticSecret};
use super::messages::{
    INITIATION_LEN, INITIATION_NOISE, Initiation, RESPONSE_LEN, RESPONSE_NOISE, Response, TYPE_INITIATION,
    TYPE_RESPONSE, write_header,
};
use super::resolver::{Resolver, StaticStaticTable};
use super::tai64n::{TIMESTAMP_LEN, Timestamp};
use super::wipe::Wiped;

/// WireGuard's Noise protocol name.
pub const PROTOCOL: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's prologue, mixed into the handshake hash.
pub const PROLOGUE: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

fn params() -> NoiseParams {
    static PARAMS: OnceLock<NoiseParams> = OnceLock::new();
    PARAMS.get_or_init(|| PROTOCOL.parse().expect("valid Noise protocol name")).clone()
}

/// Why a handshake message could not be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The Noise payload did not decrypt (wrong keys, wrong psk, tampering, low-order point).
    Decrypt,
    /// snow refused an operation that should not fail (a bug or an impossible state).
    Internal,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HandshakeError::Decrypt => "handshake message failed to decrypt",
            HandshakeError::Internal => "internal handshake error",
        })
    }
}

impl std::error::Error for HandshakeError {}

/// The two transport keys a completed handshake yields, from this side's point of view.
pub struct TransportKeys {
    pub send: Zeroizing<[u8; 32]>,
    pub recv: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for TransportKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKeys(<redacted>)")
    }
}

fn split(hs: &mut HandshakeState, initiator: bool) -> TransportKeys {
    let (i2r, r2i) = hs.dangerously_get_raw_split();
    let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
    TransportKeys { send: Zeroizing::new(send), recv: Zeroizing::new(recv) }
}

/// Our side of a handshake we initiated, waiting for the response.
pub struct PendingInitiation {
    hs: Wiped<HandshakeState>,
    /// The index we chose; the response names it as receiver.
    pub sender_index: u32,
}

/// Writes message 1 (without mac1/mac2) into `out`.
#[allow(clippy::too_many_arguments)]
pub fn write_initiation(
    ours: &StaticSecret,
    peer: &PublicKey,
    psk: &PresharedKey,
    sender_index: u32,
    timestamp: Timestamp,
    seed: [u8; 32],
    table: Arc<StaticStaticTable>,
    out: &mut [u8; INITIATION_LEN],
) -> Result<PendingInitiation, HandshakeError> {
    let hs = Builder::with_resolver(params(), Box::new(Resolver::new(seed, table)))
        .local_private_key(ours.as_bytes())
        .and_then(|b| b.remote_public_key(peer.as_bytes()))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .map_err(|_| HandshakeError::Internal)?;
    // The psk goes in only once the state is where it will be erased (a state built with it
    // would leave a copy behind where it was built).
    let mut hs = Wiped::new(hs);
    hs.set_psk(2, psk.as_bytes()).map_err(|_| HandshakeError::Internal)?;
    write_header(out, TYPE_INITIATION, sender_index);
    let n = hs.write_message(&timestamp.0, &mut out[INITIATION_NOISE]).map_err(|_| HandshakeError::Internal)?;
    debug_assert_eq!(n, INITIATION_NOISE.len());
    out[INITIATION_NOISE.end..].fill(0);
    Ok(PendingInitiation { hs, sender_index })
}

/// Reads message 2 for a pending initiation. On failure the pending state is unchanged, so a
/// forged response cannot spoil the real one.
pub fn read_response(pending: &mut PendingInitiation, msg: &Response<'_>) -> Result<TransportKeys, HandshakeError> {
    let mut payload = [0u8; 0];
    pending.hs.read_message(msg.noise(), &mut payload).map_err(|_| HandshakeError::Decrypt)?;
    Ok(split(&mut pending.hs, true))
}

/// A decrypted initiation: who sent it and when, ready to be answered.
pub struct ReceivedInitiation {
    hs: Wiped<HandshakeState>,
    pub peer: PublicKey,
    pub timestamp: Timestamp,
    /// The initiator's index; our response and data name it as receiver.
    pub sender_index: u32,
}

/// Decrypts message 1 addressed to `ours`. `seed` feeds the ephemeral of the eventual response.
pub fn read_initiation(
    ours: &StaticSecret,
    msg: &Initiation<'_>,
    seed: [u8; 32],
    table: Arc<StaticStaticTable>,
) -> Result<ReceivedInitiation, HandshakeError> {
    let hs = Builder::with_resolver(params(), Box::new(Resolver::new(seed, table)))
        .local_private_key(ours.as_bytes())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(|_| HandshakeError::Internal)?;
    let mut hs = Wiped::new(hs);
    let mut ts = [0u8; TIMESTAMP_LEN];
    let n = hs.read_message(msg.noise(), &mut ts).map_err(|_| HandshakeError::Decrypt)?;
    if n != TIMESTAMP_LEN {
        return Err(HandshakeError::Decrypt);
    }
    let remote: [u8; 32] = hs.get_remote_static().and_then(|k| k.try_into().ok()).ok_or(HandshakeError::Internal)?;
    Ok(ReceivedInitiation {
        hs,
        peer: PublicKey::from_bytes(remote),
        timestamp: Timestamp(ts),
        sender_index: msg.sender(),
    })
}

/// Writes message 2 (without mac1/mac2) answering `received`, mixing in the peer's psk.
pub fn write_response(
    mut received: ReceivedInitiation,
    psk: &PresharedKey,
    sender_index: u32,
    out: &mut [u8; RESPONSE_LEN],
) -> Result<TransportKeys, HandshakeError> {
    received.hs.set_psk(2, psk.as_bytes()).map_err(|_| HandshakeError::Internal)?;
    write_header(out, TYPE_RESPONSE, sender_index);
    out[8..12].copy_from_slice(&received.sender_index.to_le_bytes());
    let n = received.hs.write_message(&[], &mut out[RESPONSE_NOISE]).map_err(|_| HandshakeError::Internal)?;
    debug_assert_eq!(n, RESPONSE_NOISE.len());
    out[RESPONSE_NOISE.end..].fill(0);
    Ok(split(&mut received.hs, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::messages::{self, Message};
    use std::time::Duration;

    fn table(secret: &StaticSecret, peers: &[&PublicKey]) -> Arc<StaticStaticTable> {
        let t = StaticStaticTable::new(secret.as_bytes());
        for p in peers {
            assert!(t.insert(p.as_bytes()));
        }
        Arc::new(t)
    }

    #[test]
    fn both_sides_derive_mirrored_keys_and_psk_mismatch_fails() {
        let a = StaticSecret::from_bytes([1; 32]);
        let b = StaticSecret::from_bytes([2; 32]);
        let psk = PresharedKey::from_bytes([9; 32]);
        let ts = Timestamp::from_unix(Duration::from_secs(1_700_000_000));
        let mut m1 = [0u8; INITIATION_LEN];
        let mut pending =
            write_initiation(&a, &b.public_key(), &psk, 11, ts, [5; 32], table(&a, &[&b.public_key()]), &mut m1)
                .unwrap();
        let Message::Initiation(init) = messages::parse(&m1).unwrap() else { panic!() };
        let got = read_initiation(&b, &init, [6; 32], table(&b, &[&a.public_key()])).unwrap();
        assert_eq!(got.peer, a.public_key());
        assert_eq!(got.timestamp, ts);
        assert_eq!(got.sender_index, 11);

        // With the wrong psk the response fails to decrypt and the pending state survives.
        let got_wrong = read_initiation(&b, &init, [6; 32], table(&b, &[])).unwrap();
        let mut bad = [0u8; RESPONSE_LEN];
        write_response(got_wrong, &PresharedKey::none(), 22, &mut bad).unwrap();
        let Message::Response(bad_resp) = messages::parse(&bad).unwrap() else { panic!() };
        assert_eq!(read_response(&mut pending, &bad_resp).unwrap_err(), HandshakeError::Decrypt);

        let mut m2 = [0u8; RESPONSE_LEN];
        let kb = write_response(got, &psk, 22, &mut m2).unwrap();
        let Message::Response(resp) = messages::parse(&m2).unwrap() else { panic!() };
        assert_eq!((resp.sender(), resp.receiver()), (22, 11));
        let ka = read_response(&mut pending, &resp).unwrap();
        assert_eq!(*ka.send, *kb.recv);
        assert_eq!(*ka.recv, *kb.send);
        assert_ne!(*ka.send, *ka.recv);
    }

    #[test]
    fn precomputed_static_static_gives_the_same_result_as_computing_it() {
        let a = StaticSecret::from_bytes([1; 32]);
        let b = StaticSecret::from_bytes([2; 32]);
        let psk = PresharedKey::none();
        let ts = Timestamp::from_unix(Duration::from_secs(5));
        let mut with = [0u8; INITIATION_LEN];
        let mut without = [0u8; INITIATION_LEN];
        write_initiation(&a, &b.public_key(), &psk, 1, ts, [7; 32], table(&a, &[&b.public_key()]), &mut with).unwrap();
        write_initiation(&a, &b.public_key(), &psk, 1, ts, [7; 32], table(&a, &[]), &mut without).unwrap();
        assert_eq!(with, without);
    }
}
