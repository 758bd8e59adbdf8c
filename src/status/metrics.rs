//! Prometheus text exposition (format 0.0.4, through the `prometheus-client` crate) of one or
//! more interfaces: for `veil metrics` (node_exporter's textfile collector) and the daemon's
//! `--metrics-listen` endpoint.
//!
//! The first three families carry prometheus_wireguard_exporter's names and labels
//! (`interface`, `public_key`, `allowed_ips` joined with commas), so dashboards built for it
//! work unchanged; veil's own counters are under `veil_`. Names, labels and units:
//! docs/status.md. No secret is ever a label or a value.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Interface;

type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter<u64>>;
type Gauges = Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

fn counters(registry: &mut Registry, name: &str, help: &str) -> Counters {
    let family = Counters::default();
    registry.register(name, help, family.clone());
    family
}

fn gauges(registry: &mut Registry, name: &str, help: &str) -> Gauges {
    let family = Gauges::default();
    registry.register(name, help, family.clone());
    family
}

/// The interfaces' metrics in Prometheus' text format.
pub fn render(interfaces: &[Interface]) -> String {
    let mut r = Registry::default();
    // prometheus_wireguard_exporter's three.
    let sent = counters(&mut r, "wireguard_sent_bytes", "Bytes sent to the peer");
    let received = counters(&mut r, "wireguard_received_bytes", "Bytes received from the peer");
    let handshake = gauges(
        &mut r,
        "wireguard_latest_handshake_seconds",
        "Unix time of the latest handshake with the peer, in seconds (0: none yet)",
    );
    // veil's own, per peer.
    let rx_packets =
        counters(&mut r, "veil_peer_received_packets", "Data packets received from the peer (no keepalives)");
    let tx_packets = counters(&mut r, "veil_peer_sent_packets", "Data packets sent to the peer (no keepalives)");
    let initiated = counters(&mut r, "veil_peer_handshakes_initiated", "Handshake initiations sent to the peer");
    let completed = counters(&mut r, "veil_peer_handshakes_completed", "Handshakes completed with the peer");
    let failed =
        counters(&mut r, "veil_peer_handshakes_failed", "Handshake initiations the peer did not answer in time");
    let cookies_received = counters(&mut r, "veil_peer_cookies_received", "Cookie replies received from the peer");
    let endpoint_changes =
        counters(&mut r, "veil_peer_endpoint_changes", "Times the peer's endpoint changed (roaming)");
    let session_age = gauges(&mut r, "veil_peer_session_age_seconds", "Age of the peer's newest session");
    // veil's own, per interface.
    let under_load = gauges(
        &mut r,
        "veil_interface_under_load",
        "1 while handshake messages are answered with cookie replies, else 0",
    );
    let cookies_sent = counters(&mut r, "veil_interface_cookies_sent", "Cookie replies sent");
    let dropped = counters(&mut r, "veil_interface_dropped_packets", "Packets and messages dropped, by reason");

    for iface in interfaces {
        let name = || ("interface", iface.name.clone());
        for p in &iface.peers {
            let key = p.public_key.to_base64();
            let ips = p.allowed_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
            let compat: Labels = vec![name(), ("public_key", key.clone()), ("allowed_ips", ips)];
            sent.get_or_create(&compat).inc_by(p.tx_bytes);
            received.get_or_create(&compat).inc_by(p.rx_bytes);
            let latest = p.latest_handshake.map(|d| d.as_secs() as f64).unwrap_or(0.0);
            handshake.get_or_create(&compat).set(latest);
            let Some(c) = p.counters else { continue };
            let labels: Labels = vec![name(), ("public_key", key)];
            rx_packets.get_or_create(&labels).inc_by(c.rx_packets);
            tx_packets.get_or_create(&labels).inc_by(c.tx_packets);
            initiated.get_or_create(&labels).inc_by(c.handshakes_initiated);
            completed.get_or_create(&labels).inc_by(c.handshakes_completed);
            failed.get_or_create(&labels).inc_by(c.handshakes_failed);
            cookies_received.get_or_create(&labels).inc_by(c.cookies_received);
            endpoint_changes.get_or_create(&labels).inc_by(c.endpoint_changes);
            if let Some(ms) = c.session_age_ms {
                session_age.get_or_create(&labels).set(ms as f64 / 1000.0);
            }
        }
        let Some(c) = iface.counters else { continue };
        under_load.get_or_create(&vec![name()]).set(if c.under_load { 1.0 } else { 0.0 });
        cookies_sent.get_or_create(&vec![name()]).inc_by(c.cookies_sent);
        let d = c.dropped;
        for (reason, n) in [
            ("not_allowed", d.not_allowed),
            ("replayed", d.replayed),
            ("bad_authentication", d.bad_authentication),
            ("unknown_index", d.unknown_index),
            ("no_session", d.no_session),
            ("queue_full", d.queue_full),
            ("routing_loop", d.routing_loop),
        ] {
            dropped.get_or_create(&vec![name(), ("reason", reason.to_string())]).inc_by(n);
        }
    }
    let mut out = String::new();
    prometheus_text::encode(&mut out, &r).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::PublicKey;
    use crate::status::{InterfaceCounters, Peer, PeerCounters};
    use std::time::Duration;

    #[test]
    fn compatible_names_and_labels() {
        let iface = Interface {
            name: "wg0".into(),
            peers: vec![Peer {
                public_key: PublicKey::from_bytes([1; 32]),
                has_preshared_key: true,
                endpoint: None,
                allowed_ips: vec!["10.0.0.2/32".parse().unwrap(), "10.0.0.66/32".parse().unwrap()],
                latest_handshake: Some(Duration::from_secs(1_562_834_127)),
                persistent_keepalive: None,
                rx_bytes: 71_420_072,
                tx_bytes: 3_208_804,
                counters: Some(PeerCounters { session_age_ms: Some(1500), ..PeerCounters::default() }),
            }],
            counters: Some(InterfaceCounters::default()),
            ..Interface::default()
        };
        let text = render(&[iface]);
        let labels = format!(
            "interface=\"wg0\",public_key=\"{}\",allowed_ips=\"10.0.0.2/32,10.0.0.66/32\"",
            PublicKey::from_bytes([1; 32]).to_base64()
        );
        assert!(text.contains("# TYPE wireguard_sent_bytes_total counter\n"), "{text}");
        assert!(text.contains(&format!("wireguard_sent_bytes_total{{{labels}}} 3208804\n")), "{text}");
        assert!(text.contains(&format!("wireguard_received_bytes_total{{{labels}}} 71420072\n")), "{text}");
        assert!(text.contains("# TYPE wireguard_latest_handshake_seconds gauge\n"), "{text}");
        assert!(text.contains(&format!("wireguard_latest_handshake_seconds{{{labels}}} 1562834127")), "{text}");
        assert!(text.contains("veil_peer_session_age_seconds{interface=\"wg0\",public_key="), "{text}");
        assert!(text.contains("veil_interface_dropped_packets_total{interface=\"wg0\",reason=\"replayed\"} 0"));
        assert!(text.contains("veil_interface_under_load{interface=\"wg0\"} 0"), "{text}");
    }
}
