//! Serving the UAPI socket (`/var/run/wireguard/IFNAME.sock`): one short thread per `wg`
//! connection, at most [`UAPI_MAX_CONNECTIONS`] at once, each closed after [`UAPI_IDLE`] of
//! silence. A request is applied only once it is complete; see [`super::uapi`] for the protocol.

use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::{Shared, configure, uapi};

/// A UAPI connection idle (or stalled inside a request) this long is closed.
const UAPI_IDLE: Duration = Duration::from_secs(30);
/// At most this many UAPI connections are served at once; more are closed at once.
const UAPI_MAX_CONNECTIONS: usize = 128;

/// Accepts connections on `listener` in a thread of its own.
pub(super) fn spawn(shared: Arc<Shared>, listener: UnixListener) -> std::io::Result<()> {
    thread::Builder::new().name("veil-uapi".into()).spawn(move || {
        for conn in listener.incoming() {
            if shared.stopping() {
                return;
            }
            let Ok(conn) = conn else { continue };
            if shared.uapi_connections.fetch_add(1, Ordering::SeqCst) >= UAPI_MAX_CONNECTIONS {
                shared.uapi_connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("UAPI: {UAPI_MAX_CONNECTIONS} connections open already; one more refused");
                continue;
            }
            let s = shared.clone();
            let spawned = thread::Builder::new().name("veil-uapi-conn".into()).spawn(move || {
                serve_conn(&s, conn);
                s.uapi_connections.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                shared.uapi_connections.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })?;
    Ok(())
}

/// Answers one request given as text (`get=1\n\n` or `set=1\n...\n\n`).
pub(super) fn answer_text(shared: &Arc<Shared>, request: &str) -> String {
    let mut lines = request.lines();
    let mut out = String::new();
    match lines.next() {
        Some(first) => handle_request(shared, first, &mut lines.take_while(|l| !l.is_empty()), &mut out),
        None => out.push_str("errno=-22\n\n"),
    }
    out
}

/// Serves the requests of one UAPI connection, in order. A request is applied only when it is
/// complete (its empty line arrived) and every line is text: a request cut short by the end of
/// the stream changes nothing (wireguard-go would apply the lines it got).
fn serve_conn(shared: &Arc<Shared>, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(UAPI_IDLE));
    let _ = conn.set_write_timeout(Some(UAPI_IDLE));
    let Ok(write_half) = conn.try_clone() else { return };
    let mut writer = std::io::BufWriter::new(write_half);
    let mut reader = BufReader::new(conn);
    let mut buf = Vec::new();
    while let Some(request) = uapi::read_request(&mut reader, &mut buf) {
        let mut out = String::new();
        let complete = !matches!(request, uapi::Request::CutShort { .. });
        match request {
            uapi::Request::Complete { op, body } => {
                handle_request(shared, &op, &mut body.iter().map(String::as_str), &mut out)
            }
            uapi::Request::Invalid => {
                tracing::warn!("UAPI request refused: a line is not UTF-8 text or is too long");
                out.push_str(&format!("errno={}\n\n", uapi::EINVAL));
            }
            uapi::Request::CutShort { lines } => {
                tracing::warn!("UAPI request cut short ({lines} lines, no empty line): not applied");
                out.push_str(&format!("errno={}\n\n", uapi::EINVAL));
            }
        }
        if writer.write_all(out.as_bytes()).and_then(|_| writer.flush()).is_err() || !complete {
            return;
        }
    }
}

fn handle_request(shared: &Arc<Shared>, op: &str, body: &mut dyn Iterator<Item = &str>, out: &mut String) {
    match op {
        "get=1" => {
            // wg sends no body; veil's tools add `veil=1` for veil's counters (other lines are
            // ignored, as before).
            let mut veil = false;
            for line in body {
                veil |= line == "veil=1";
            }
            configure::write_get(shared, out, veil);
            out.push_str("errno=0\n\n");
        }
        "set=1" => {
            let errno = match uapi::parse_set(body).and_then(|req| configure::apply_set(shared, req)) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!("UAPI set refused: {e}");
                    e.errno
                }
            };
            out.push_str(&format!("errno={errno}\n\n"));
        }
        _ => {
            for _ in &mut *body {}
            out.push_str(&format!("errno={}\n\n", uapi::EINVAL));
        }
    }
}
