//! `veil show [IFNAME] [--json]` and `veil metrics [IFNAME]`: the status of one interface or of
//! every one with a socket, read through the UAPI client and rendered by [`crate::status`].

use std::time::{SystemTime, UNIX_EPOCH};

use super::uapi_client;
use crate::status::{self, Interface};

/// The status of `interface`, or of every interface with a socket; the errors of those that did
/// not answer come apart.
fn collect(interface: Option<&str>) -> (Vec<Interface>, Vec<String>) {
    let names = match interface {
        Some(n) => vec![n.to_string()],
        None => uapi_client::interfaces(),
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match uapi_client::status(&name) {
            Ok(iface) => found.push(iface),
            Err(e) => errors.push(e),
        }
    }
    (found, errors)
}

/// What `veil show` prints (text as `wg show`, or JSON), and the errors of interfaces that did
/// not answer.
pub fn show(interface: Option<&str>, json: bool) -> (String, Vec<String>) {
    let (found, errors) = collect(interface);
    if json {
        return (status::json::render(&found) + "\n", errors);
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let texts: Vec<String> = found.iter().map(|i| status::text::render(i, now)).collect();
    (texts.join("\n"), errors)
}

/// What `veil metrics` prints: the Prometheus text exposition, and the errors of interfaces
/// that did not answer.
pub fn metrics(interface: Option<&str>) -> (String, Vec<String>) {
    let (found, errors) = collect(interface);
    (status::metrics::render(&found), errors)
}
