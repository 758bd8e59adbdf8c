//! The handshake path: handshake messages (types 1-3) that the UDP readers queued, answered one
//! at a time by a thread of their own, so a flood of them fills only this bounded queue and
//! never the data path. Once the queue holds 1/8 of its capacity the interface is "under load"
//! (for [`UNDER_LOAD_HOLD`] after the last time it did) and the core answers initiations
//! without a valid mac2 with cookie replies (paper section 5.3; the kernel's receive.c uses the
//! same 1/8 of 4096).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TrySendError};
use std::time::{Duration, Instant};

use crate::device::{HandshakeJob, Shared};
use crate::noise::{self, Interface, PeerId};

/// Capacity of the handshake queue.
pub const QUEUE: usize = 4096;
/// "Under load" from this many queued messages on.
pub const UNDER_LOAD_AT: usize = QUEUE / 8;
/// Once under load, stay so for this long.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);

/// Queues a handshake message for the handshake thread; false when the queue is full (the
/// message is dropped: the queue is the flood limit) or the thread is gone.
pub(crate) fn enqueue(shared: &Shared, src: SocketAddr, message: &[u8]) -> bool {
    // Count before sending: the handshake thread may take the message and decrement before
    // this thread runs again, and the count must never wrap below zero (a wrapped count reads
    // as a full queue and answers every initiation with a cookie).
    shared.handshake_queued.fetch_add(1, Ordering::Relaxed);
    match shared.handshake_tx.try_send((src, message.to_vec())) {
        Ok(()) => true,
        Err(e) => {
            shared.handshake_queued.fetch_sub(1, Ordering::Relaxed);
            if let TrySendError::Full(_) = e {
                shared.drops.handshake_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            false
        }
    }
}

/// The handshake thread.
pub(crate) fn run(shared: Arc<Shared>, rx: Receiver<HandshakeJob>) {
    while let Ok((src, mut datagram)) = rx.recv() {
        shared.handshake_queued.fetch_sub(1, Ordering::Relaxed);
        if shared.stopping() {
            return;
        }
        let now = Instant::now();
        let load = shared.under_load(now);
        shared.with_core(|core, io| {
            let result = core.iface.receive(src, &mut datagram, now, load, io);
            if tracing::enabled!(tracing::Level::DEBUG) {
                log_handshake(&core.iface, src, &result);
            }
        });
    }
}

/// A short form of a peer's public key for the log, like wireguard-go's `peer(AbCd…wXyZ)`.
fn peer_name(iface: &Interface, id: PeerId) -> String {
    match iface.peer(id) {
        Some(p) => {
            let b64 = p.public_key().to_base64();
            format!("peer({}…{})", &b64[..4], &b64[39..43])
        }
        None => "peer(removed)".into(),
    }
}

fn log_handshake(iface: &Interface, src: SocketAddr, result: &Result<noise::Received, noise::ReceiveError>) {
    match result {
        Ok(noise::Received::Initiation(id)) => {
            tracing::debug!("{}: handshake initiation from {src}, response sent", peer_name(iface, *id))
        }
        Ok(noise::Received::Response(id)) => {
            tracing::debug!("{}: handshake response from {src}, session established", peer_name(iface, *id))
        }
        Ok(noise::Received::CookieReply(id)) => {
            tracing::debug!("{}: cookie reply from {src} (the peer is under load)", peer_name(iface, *id))
        }
        Ok(_) => {}
        Err(e) => tracing::debug!("{src}: handshake message refused: {e}"),
    }
}
