//! Applying a UAPI `set` request to the running device, and reading its state for `get`.
//! What can fail (binding a new port, setting the fwmark) is done first, so a refused request
//! changes nothing; live changes (psk, endpoint, allowed IPs, keepalive) keep the peer's
//! sessions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand_core::OsRng;

use super::uapi::{self, SetRequest, UapiError};
use super::{Core, Io, NoOutput, Shared, spawn_udp_readers};
use crate::noise::{self, Config, Interface, PresharedKey, StaticSecret};
use crate::status;
use crate::sys::udp::Sockets;

/// Writes the answer to `get=1` (without the final `errno=0`); `veil`: with veil's counters.
pub(super) fn write_get(shared: &Shared, out: &mut String, veil: bool) {
    let now = crate::sys::clock::now();
    let under_load = shared.under_load(now);
    let core = shared.lock();
    let (iface, psks) = snapshot(shared, &core, now, under_load, true);
    let key = core.has_key.then(|| core.iface.private_key());
    uapi::write_get(out, key, &iface, &psks, veil);
}

/// The device's status now (without its name, which the daemon knows).
pub(super) fn status(shared: &Shared) -> status::Interface {
    let now = crate::sys::clock::now();
    let under_load = shared.under_load(now);
    snapshot(shared, &shared.lock(), now, under_load, false).0
}

/// The status, read under the core's lock, and (`with_psks`) each peer's psk in the same order.
fn snapshot(
    shared: &Shared,
    core: &Core,
    now: Instant,
    under_load: bool,
    with_psks: bool,
) -> (status::Interface, Vec<Option<PresharedKey>>) {
    let routing = shared.routing();
    let mut psks = Vec::new();
    let mut no_session = 0;
    let peers = core
        .iface
        .peers()
        .map(|p| {
            let stats = p.stats();
            let id = core.iface.peer_by_key(p.public_key()).expect("listed peer exists");
            if with_psks {
                psks.push(p.has_psk().then(|| p.psk().clone()));
            }
            no_session += stats.dropped_no_session;
            status::Peer {
                public_key: *p.public_key(),
                has_preshared_key: p.has_psk(),
                endpoint: p.endpoint(),
                allowed_ips: routing.prefixes_of(id),
                latest_handshake: stats.last_handshake,
                persistent_keepalive: p.persistent_keepalive().map(|d| d.as_secs() as u16),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
                counters: Some(status::PeerCounters {
                    rx_packets: stats.rx_packets,
                    tx_packets: stats.tx_packets,
                    handshakes_initiated: stats.handshakes_initiated,
                    handshakes_completed: stats.handshakes_completed,
                    handshakes_failed: stats.handshakes_failed,
                    cookies_received: stats.cookies_received,
                    endpoint_changes: stats.endpoint_changes,
                    dropped_no_session: stats.dropped_no_session,
                    session_age_ms: stats.session_created.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                }),
            }
        })
        .collect();
    let d = &shared.drops;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let counters = status::InterfaceCounters {
        under_load,
        cookies_sent: core.iface.cookies_sent(),
        dropped: status::Dropped {
            not_allowed: load(&d.not_allowed),
            replayed: load(&d.replayed),
            bad_authentication: load(&d.bad_authentication),
            unknown_index: load(&d.unknown_index),
            no_session: load(&d.no_session) + no_session,
            queue_full: load(&d.handshake_queue_full),
            routing_loop: load(&d.routing_loop),
        },
    };
    let iface = status::Interface {
        name: String::new(),
        public_key: core.has_key.then(|| *core.iface.public_key()),
        listen_port: shared.sockets().port,
        fwmark: Some(core.fwmark).filter(|&m| m != 0),
        peers,
        counters: Some(counters),
    };
    (iface, psks)
}

/// Applies a validated set request. Endpoint zones named by interface are looked up first
/// (without the lock): an unknown name refuses the request before anything changes.
pub(super) fn apply_set(shared: &Arc<Shared>, mut req: SetRequest) -> Result<(), UapiError> {
    req.resolve_zones(crate::sys::udp::interface_index)?;
    let mut retired = None;
    let mut core = shared.lock();
    let result = apply_locked(shared, &mut core, req, &mut retired);
    // A keepalive turned on may have started a handshake: written without the lock.
    drop(shared.finish_initiations(core));
    if let Some(old) = retired {
        old.close();
    }
    result
}

fn apply_locked(
    shared: &Arc<Shared>,
    core: &mut Core,
    req: SetRequest,
    retired: &mut Option<Retired>,
) -> Result<(), UapiError> {
    let now = crate::sys::clock::now();
    let fwmark = req.fwmark.unwrap_or(core.fwmark);
    let current_port = shared.sockets().port;
    let rebind = req.listen_port.filter(|&port| port != current_port || port == 0 && core.listen_port != 0);
    if rebind.is_none()
        && let Some(mark) = req.fwmark
    {
        shared.sockets().set_fwmark(mark).map_err(|e| UapiError { errno: uapi::EIO, message: e.to_string() })?;
    }
    if let Some(port) = rebind {
        let new = crate::sys::privileges::binding(port, || Sockets::bind(port, fwmark)).map_err(|e| UapiError {
            errno: if e.kind() == std::io::ErrorKind::AddrInUse { uapi::EADDRINUSE } else { uapi::EIO },
            message: format!("cannot bind UDP port {port}: {e}"),
        })?;
        let new = Arc::new(new);
        let generation = shared.generation.load(Ordering::SeqCst) + 1;
        let readers = spawn_udp_readers(shared, new.clone(), generation).map_err(|e| {
            new.shutdown();
            UapiError { errno: uapi::EIO, message: format!("cannot start UDP readers: {e}") }
        })?;
        let old = std::mem::replace(&mut *shared.sockets.write().unwrap_or_else(|e| e.into_inner()), new);
        shared.generation.store(generation, Ordering::SeqCst);
        old.shutdown();
        let old_readers = std::mem::replace(&mut *shared.readers.lock().unwrap_or_else(|e| e.into_inner()), readers);
        *retired = Some(Retired { sockets: old, readers: old_readers });
    }
    if let Some(port) = req.listen_port {
        core.listen_port = port;
    }
    core.fwmark = fwmark;
    let mut routing = shared.routing.write().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = req.private_key {
        match key {
            Some(secret) => {
                if let Some(own) = core.iface.peer_by_key(&secret.public_key()) {
                    routing.remove_peer(own);
                }
                core.iface.set_private_key(secret);
                core.has_key = true;
            }
            None => {
                core.iface.set_private_key(StaticSecret::random(&mut OsRng));
                core.has_key = false;
            }
        }
    }
    if req.replace_peers {
        for id in core.iface.peer_ids() {
            let _ = core.iface.remove_peer(id);
        }
        routing.clear();
    }
    let mut keepalives = Vec::new();
    for change in req.peers {
        let Some(key) = change.public_key else { continue };
        let existing = core.iface.peer_by_key(&key);
        if change.remove {
            if let Some(id) = existing {
                let _ = core.iface.remove_peer(id);
                routing.remove_peer(id);
            }
            continue;
        }
        let id = match existing {
            Some(id) => id,
            None if change.update_only => continue,
            None => match core.iface.add_peer(key) {
                Ok(id) => id,
                // The interface's own key: wg-go ignores such a peer silently.
                Err(noise::PeerError::OwnKey) => continue,
                Err(e) => return Err(UapiError::invalid(format!("peer: {e}"))),
            },
        };
        if let Some(psk) = change.preshared_key {
            let _ = core.iface.set_psk(id, psk);
        }
        if let Some(ep) = change.endpoint {
            // Zones resolved by apply_set.
            let _ = core.iface.set_endpoint(id, Some(ep.addr));
        }
        if change.replace_allowed_ips {
            routing.remove_peer(id);
        }
        for (add, net) in change.allowed_ips {
            if add {
                routing.insert(net, id);
            } else {
                routing.remove(net, id);
            }
        }
        if let Some(secs) = change.persistent_keepalive {
            let interval = (secs != 0).then(|| Duration::from_secs(secs as u64));
            if interval != core.iface.peer(id).and_then(|p| p.persistent_keepalive()) {
                keepalives.push((id, interval));
            }
        }
    }
    drop(routing);
    // Turning a keepalive on sends one at once, through the core's output (which takes the
    // routing lock to deliver, hence after it was released above).
    let sockets = shared.sockets();
    for (id, interval) in keepalives {
        let _ = if core.has_key {
            let mut io = Io { sockets: &sockets, shared, reply: None };
            core.iface.set_persistent_keepalive(id, interval, now, &mut io)
        } else {
            core.iface.set_persistent_keepalive(id, interval, now, &mut NoOutput)
        };
    }
    shared.timer_cv.notify_one();
    Ok(())
}

/// Sockets replaced by a set request, with their reader threads.
struct Retired {
    sockets: Arc<Sockets>,
    readers: Vec<JoinHandle<()>>,
}

impl Retired {
    /// Waits for the readers to leave (they were woken by the shutdown and see the new
    /// generation), then closes the sockets, so that their port is free again when the set
    /// request is answered. Must run without the state lock: a reader may be waiting for it.
    fn close(self) {
        for reader in self.readers {
            let _ = reader.join();
        }
        if Arc::strong_count(&self.sockets) > 1 {
            tracing::warn!("old UDP sockets are still in use; their port is freed once that ends");
        }
    }
}

/// Caps the padding of data messages at `mtu` from now on (the TUN's MTU, as `sys::link`
/// reports it).
pub(crate) fn follow_mtu(iface: &mut Interface, mtu: usize) {
    if iface.config().mtu != mtu {
        tracing::debug!("the tunnel's MTU is now {mtu}: padding capped at it");
        let config = Config { mtu, ..iface.config().clone() };
        iface.set_config(config);
    }
}
