//! The status of an interface and its peers: one typed snapshot, rendered three ways — [`text`]
//! (what `wg show` prints), [`json`] (`veil show --json`) and [`metrics`] (Prometheus text
//! exposition, for `veil metrics` and the daemon's `--metrics-listen` endpoint).
//!
//! The daemon builds it from its state and writes it as a UAPI `get` answer
//! ([`crate::device::uapi::write_get`]); the tools read it back through the one UAPI client
//! ([`crate::control::uapi_client`]). What the standard answer does not carry (packet counts,
//! handshake and cookie counts, drops by reason, session age, load) travels only when the
//! request asks for it with a `veil=1` line, so `wg` and other UAPI clients see exactly what
//! wireguard-go sends. No secret is part of the snapshot: a preshared key is only "set or not".
//! Field names and units are documented in docs/status.md; `tests/status_schema.rs` keeps the
//! JSON form stable.

pub mod json;
pub mod metrics;
pub mod text;

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::noise::PublicKey;

/// One interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Interface {
    /// The interface's name (not part of a `get` answer: the client knows it); `interface` in
    /// JSON.
    #[serde(rename = "interface")]
    pub name: String,
    /// Our public key (`None`: no private key set).
    #[serde(serialize_with = "opt_key")]
    pub public_key: Option<PublicKey>,
    /// The UDP port (0: none yet).
    pub listen_port: u16,
    /// The fwmark on outgoing datagrams (`None`: off).
    pub fwmark: Option<u32>,
    pub peers: Vec<Peer>,
    /// veil's own counters (`None`: the daemon is another implementation and did not send them).
    pub counters: Option<InterfaceCounters>,
}

/// veil's counters for the interface as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceCounters {
    /// Handshake messages are answered with cookie replies (the handshake queue is filling).
    pub under_load: bool,
    /// Cookie replies sent (handshake messages refused under load).
    pub cookies_sent: u64,
    /// Packets and messages dropped, by reason.
    pub dropped: Dropped,
}

/// Packets and messages dropped, by reason (counts since the daemon started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Decrypted packets whose inner source address is not one of the sending peer's allowed IPs.
    pub not_allowed: u64,
    /// Data messages whose counter was seen already or is behind the replay window.
    pub replayed: u64,
    /// Data messages that failed authentication.
    pub bad_authentication: u64,
    /// Data messages for a receiver index that belongs to no session.
    pub unknown_index: u64,
    /// Data messages for an expired session, and packets that waited for a session and were
    /// dropped (the peers' `dropped_no_session`, summed).
    pub no_session: u64,
    /// Handshake messages dropped because the handshake queue was full.
    pub queue_full: u64,
    /// Our own datagrams routed back into the tunnel (a routing loop).
    pub routing_loop: u64,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peer {
    #[serde(serialize_with = "key")]
    pub public_key: PublicKey,
    /// A preshared key is set (the key itself is never reported).
    pub has_preshared_key: bool,
    pub endpoint: Option<SocketAddr>,
    #[serde(serialize_with = "nets")]
    pub allowed_ips: Vec<IpNet>,
    /// Time of the latest handshake since the Unix epoch (`None`: none yet); in JSON, whole
    /// seconds.
    #[serde(serialize_with = "opt_secs")]
    pub latest_handshake: Option<Duration>,
    /// Seconds between keepalives (`None`: off).
    pub persistent_keepalive: Option<u16>,
    /// Bytes of authenticated datagrams received (whole UDP payloads, as wg counts them).
    pub rx_bytes: u64,
    /// Bytes of datagrams sent.
    pub tx_bytes: u64,
    /// veil's own counters (`None`: not reported by this daemon).
    pub counters: Option<PeerCounters>,
}

/// veil's counters for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Data messages received that carried a packet (keepalives not counted).
    pub rx_packets: u64,
    /// Data messages sent that carried a packet (keepalives not counted).
    pub tx_packets: u64,
    /// Initiations sent (retries included).
    pub handshakes_initiated: u64,
    /// Handshakes completed, as initiator or responder.
    pub handshakes_completed: u64,
    /// Initiations that got no response within REKEY_TIMEOUT (5 s).
    pub handshakes_failed: u64,
    /// Cookie replies received from the peer and taken.
    pub cookies_received: u64,
    /// Times an authenticated message came from another address than the endpoint in use.
    pub endpoint_changes: u64,
    /// Packets that waited for a session and were dropped (queue full or handshake given up).
    pub dropped_no_session: u64,
    /// Age of the newest session in milliseconds (`None`: no session).
    pub session_age_ms: Option<u64>,
}

impl Interface {
    /// The drop counters (zeros when the daemon did not report them).
    pub fn dropped(&self) -> Dropped {
        self.counters.map(|c| c.dropped).unwrap_or_default()
    }
}

fn key<S: Serializer>(k: &PublicKey, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&k.to_base64())
}

fn opt_key<S: Serializer>(k: &Option<PublicKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => key(k, s),
        None => s.serialize_none(),
    }
}

fn nets<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(|n| n.to_string()))
}

fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}
