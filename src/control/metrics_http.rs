//! The daemon's opt-in metrics endpoint: `--metrics-listen ADDR:PORT` (or `VEIL_METRICS_LISTEN`
//! for the wg-quick path) serves `GET /metrics` in Prometheus' text format over plain HTTP
//! (tiny_http). Off by default: without the option nothing is bound and no thread started.
//! The address is the one given; a non-loopback one is logged as such, since the metrics name
//! the peers' public keys and endpoints.

use std::net::SocketAddr;

use crate::device::Device;
use crate::status::metrics;

/// The environment variable that asks for the endpoint where the command line cannot.
pub const ENV: &str = "VEIL_METRICS_LISTEN";

/// Parses `ADDR:PORT` (`127.0.0.1:9586`, `[::1]:9586`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("--metrics-listen {text:?}: expected ADDRESS:PORT, such as 127.0.0.1:9586"))
}

/// Binds `addr` and serves the device's metrics there from a thread of its own (tiny_http adds
/// its accept thread). A port below 1024 is bound the way the tunnel's is, with
/// CAP_NET_BIND_SERVICE raised for the bind alone (`sys::privileges::binding`), since by now
/// the daemon has dropped it from its effective set.
pub fn serve(addr: SocketAddr, device: Device, ifname: String) -> Result<(), String> {
    let server = crate::sys::privileges::binding(addr.port(), || tiny_http::Server::http(addr))
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    if !addr.ip().is_loopback() {
        tracing::warn!("metrics are served on {addr}, not a loopback address: anyone who reaches it sees the peers");
    }
    tracing::info!("metrics on http://{addr}/metrics");
    let content_type = tiny_http::Header::from_bytes("Content-Type", metrics::CONTENT_TYPE).expect("a valid header");
    std::thread::Builder::new()
        .name("veil-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let found = request.url() == "/metrics" || request.url().starts_with("/metrics?");
                let response = match (request.method(), found) {
                    (tiny_http::Method::Get | tiny_http::Method::Head, true) => {
                        let mut iface = device.status();
                        iface.name = ifname.clone();
                        tiny_http::Response::from_string(metrics::render(&[iface])).with_header(content_type.clone())
                    }
                    (_, true) => tiny_http::Response::from_string("only GET and HEAD\n").with_status_code(405),
                    _ => tiny_http::Response::from_string("metrics are at /metrics\n").with_status_code(404),
                };
                let _ = request.respond(response);
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}
