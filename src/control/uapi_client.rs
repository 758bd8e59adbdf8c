//! The one UAPI client: every tool of veil's (`show`, `metrics`, `up`/`down`, `demo`, the lab
//! configuring its daemons, and the daemon's check for a socket already served) talks to
//! `/var/run/wireguard/IFNAME.sock` through here. Answers are read up to their `errno=` line into memory that is erased when
//! dropped, since a `get` answer holds the private key.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::daemon::{socket_dir, socket_path};
use crate::device::uapi;
use crate::status;

/// How long a request may take before the client gives up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request (its lines and the empty line that ends it) and returns the answer up to
/// and including its `errno=` line.
pub fn exchange(ifname: &str, request: &str) -> Result<Zeroizing<String>, String> {
    let path = socket_path(ifname);
    let mut conn = UnixStream::connect(&path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    exchange_on(&mut conn, request).map_err(|e| format!("{ifname}: {e}"))
}

/// As [`exchange`], over a stream already connected to a daemon's socket (see
/// [`connect_while_alive`]). Sets the stream's read and write timeouts to 10 s. Errors: the
/// write or a read failed or timed out, or the stream ended before an `errno=` line; the
/// message does not name the interface (the caller knows it).
pub fn exchange_on(stream: &mut UnixStream, request: &str) -> Result<Zeroizing<String>, String> {
    stream.set_read_timeout(Some(TIMEOUT)).ok();
    stream.set_write_timeout(Some(TIMEOUT)).ok();
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = Zeroizing::new(String::new());
    let mut reader = BufReader::new(&*stream);
    loop {
        let start = answer.len();
        if reader.read_line(&mut answer).map_err(|e| e.to_string())? == 0 {
            return Err("the answer ended early (no errno line)".into());
        }
        if answer[start..].starts_with("errno=") {
            return Ok(answer);
        }
    }
}

/// The errno of an answer that [`exchange`] returned (its last line), or None if that line is
/// not `errno=N`.
fn errno_of(answer: &str) -> Option<i32> {
    answer.lines().last().and_then(|l| l.strip_prefix("errno=")).and_then(|v| v.parse().ok())
}

/// Sends a request and returns the errno it was answered with (0: done).
pub fn errno(ifname: &str, request: &str) -> Result<i32, String> {
    let answer = exchange(ifname, request)?;
    errno_of(&answer).ok_or_else(|| format!("{ifname}: bad errno line {:?}", answer.lines().last().unwrap_or_default()))
}

/// Sends a `set=1` request (lines and the empty line that ends it) over a connected stream and
/// checks that it was answered with `errno=0`. Errors: as [`exchange_on`], or `set refused:
/// errno=N` for any other errno.
pub fn set_on(stream: &mut UnixStream, request: &str) -> Result<(), String> {
    let answer = exchange_on(stream, request)?;
    match errno_of(&answer) {
        Some(0) => Ok(()),
        _ => Err(format!("set refused: {}", answer.lines().last().unwrap_or_default())),
    }
}

/// Connects to the socket at `path` of a daemon just started as `child`, as soon as it accepts
/// (tried every 200 us), for up to `limit`. Errors: the child exited first (the message quotes
/// `log`, where the daemon wrote its output, trimmed), or `limit` passed. The child is only
/// polled (`try_wait`), never waited for or killed.
pub fn connect_while_alive(path: &Path, child: &mut Child, log: &Path, limit: Duration) -> Result<UnixStream, String> {
    poll_while_alive(child, limit, Duration::from_micros(200), || UnixStream::connect(path).ok()).map_err(|exited| {
        match exited {
            Some(status) => format!("the daemon for {} exited ({status}): {}", path.display(), said(log)),
            None => format!("{} did not accept within {} s", path.display(), limit.as_secs()),
        }
    })
}

/// Waits until the log of a daemon just started as `child` (`log`, where it writes its output)
/// contains `text`, read every 1 ms for up to `limit`: for a daemon that opens its socket before
/// it can serve it (`lab::topology::NodeSpec::ready`). Errors: the child exited first, or
/// `limit` passed; both quote the log, trimmed.
pub fn wait_for_log(child: &mut Child, log: &Path, text: &str, limit: Duration) -> Result<(), String> {
    let logged = || std::fs::read_to_string(log).is_ok_and(|l| l.contains(text)).then_some(());
    poll_while_alive(child, limit, Duration::from_millis(1), logged).map_err(|exited| match exited {
        Some(status) => format!("the daemon exited ({status}) before logging {text:?}: {}", said(log)),
        None => format!("the daemon did not log {text:?} within {} s: {}", limit.as_secs(), said(log)),
    })
}

/// Calls `attempt` every `every` until it gives a value, while `child` runs, for up to `limit`.
/// Errors: `Some(status)` when the child exited first, `None` when `limit` passed. The child is
/// only polled (`try_wait`), never waited for or killed.
pub fn poll_while_alive<T>(
    child: &mut Child,
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Result<T, Option<ExitStatus>> {
    let until = Instant::now() + limit;
    loop {
        if let Some(value) = attempt() {
            return Ok(value);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Some(status));
        }
        if Instant::now() > until {
            return Err(None);
        }
        std::thread::sleep(every);
    }
}

/// What a daemon wrote to `log`, trimmed, for an error message.
fn said(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default().trim().to_string()
}

/// The full `get=1` answer, secrets included (for `veil down` with SaveConfig).
pub fn get(ifname: &str) -> Result<Zeroizing<String>, String> {
    exchange(ifname, "get=1\n\n")
}

/// The interface's status. veil's counters are asked for with `veil=1`; a daemon that refuses
/// that line (wireguard-go answers a get with a body with EINVAL) is asked again plainly.
pub fn status(ifname: &str) -> Result<status::Interface, String> {
    let answer = exchange(ifname, "get=1\nveil=1\n\n")?;
    let mut iface = match uapi::parse_get(&answer) {
        Ok(iface) => iface,
        Err(_) => uapi::parse_get(&get(ifname)?).map_err(|e| format!("{ifname}: {e}"))?,
    };
    iface.name = ifname.to_string();
    Ok(iface)
}

/// Names of the interfaces with a socket in /var/run/wireguard (or `VEIL_SOCKET_DIR`), sorted.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(socket_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".sock")).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether a daemon serves the socket at `path`. One that accepts but does not answer a get
/// (a daemon on its way out, say after `ip link del`) is given up to two seconds to go.
pub fn served(path: &Path) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let Ok(mut conn) = UnixStream::connect(path) else { return false };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
        // A serving daemon answers with something; a departing one closes without a word.
        let mut first = [0u8; 1];
        let answered = conn.write_all(b"get=1\n\n").is_ok() && matches!(conn.read(&mut first), Ok(1));
        if answered || Instant::now() >= deadline {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
