//! `veil [-f] IFNAME`: create the TUN device and the UAPI socket, go to the background once both
//! exist (a failure before that is the exit status of the command), then serve until a signal,
//! the deletion of the TUN device or the removal of the socket file. In the foreground under a
//! service manager (`NOTIFY_SOCKET`, systemd's Type=notify), it says `READY=1` once its socket
//! serves and `STOPPING=1` when it stops; elsewhere that is a no-op.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::device::Device;
use crate::noise::Config;
use crate::sys::link::LinkEvents;
use crate::sys::privileges::{self, User};

/// Where `wg` looks for userspace interfaces' sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The directory of the UAPI sockets: `VEIL_SOCKET_DIR` if set (where /var/run/wireguard cannot
/// be written, as for an unprivileged user in a user namespace), else [`SOCKET_DIR`].
pub fn socket_dir() -> PathBuf {
    std::env::var_os("VEIL_SOCKET_DIR").filter(|d| !d.is_empty()).map_or_else(|| SOCKET_DIR.into(), PathBuf::from)
}

/// The UAPI socket of interface `ifname`, in [`socket_dir`].
pub fn socket_path(ifname: &str) -> PathBuf {
    socket_dir().join(format!("{ifname}.sock"))
}

/// Checks an interface name as the kernel would (1 to 15 bytes, no '/', no whitespace).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.chars().any(char::is_whitespace)
        || name == "."
        || name == ".."
    {
        return Err(format!("invalid interface name {name:?}: 1 to 15 characters, no '/' or spaces"));
    }
    Ok(())
}

/// Binds the UAPI socket, replacing a stale socket file but refusing one that is in use.
fn bind_uapi(path: &Path) -> Result<UnixListener, String> {
    let dir = socket_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if path.exists() {
        if super::uapi_client::served(path) {
            return Err(format!("{} is in use by another process", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    let old = unsafe { libc::umask(0o077) };
    let r = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    r.map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

/// The child's side of a daemonized start: it reports success or failure to the waiting parent.
struct Readiness(Option<std::fs::File>);

impl Readiness {
    /// Tells the parent that start-up finished; the parent then exits 0.
    fn ready(&mut self) {
        if let Some(mut f) = self.0.take() {
            use std::io::Write;
            let _ = f.write_all(&[0]);
        }
    }

    /// Tells the parent why start-up failed; the parent prints it and exits 1.
    fn failed(&mut self, message: &str) {
        if let Some(mut f) = self.0.take() {
            use std::io::Write;
            let _ = f.write_all(message.as_bytes());
        }
    }
}

/// Detaches into the background. The parent waits until the child reports that the device is
/// running (exit 0) or why it is not (the message on stderr, exit 1); the child continues in a
/// new session with standard input and output on /dev/null, and standard error on /dev/null
/// too unless `keep_log` (the log then goes on to the caller's standard error, as wireguard-go
/// keeps its streams when `LOG_LEVEL` is set; standard output, which the log does not use, is
/// not held, so `veil up | tee` ends). Must be called before any thread starts.
fn daemonize(keep_log: bool) -> Result<Readiness, String> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe failed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created by pipe2 and are owned by nothing else.
    let (mut rd, wr) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    // SAFETY: called while the process is single-threaded (no device threads exist yet), so
    // the child is a consistent copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(wr);
        let mut report = Vec::new();
        let _ = rd.read_to_end(&mut report);
        match report.as_slice() {
            [0] => std::process::exit(0),
            [] => eprintln!("veil: the daemon exited during start-up"),
            m => eprintln!("veil: {}", String::from_utf8_lossy(m)),
        }
        std::process::exit(1);
    }
    drop(rd);
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in if keep_log { 0..2 } else { 0..3 } {
            // SAFETY: dup2 onto the standard descriptors with a valid open descriptor.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    Ok(Readiness(Some(wr)))
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Keeps the secrets in memory and gives up the privileges the daemon no longer needs (see
/// docs/security.md): not dumpable, every page locked against swapping, capabilities cut to
/// CAP_NET_ADMIN (and CAP_NET_BIND_SERVICE permitted), `no_new_privs`, and `user` if one is
/// given, with a janitor left as root to remove the socket file at `path` in the end. Must run
/// while the process has a single thread.
fn protect(path: &Path, socket_inode: Option<u64>, user: Option<&User>) -> Result<(), String> {
    if let (Some(_), Some(ino)) = (user, socket_inode) {
        privileges::spawn_socket_janitor(path, ino)?;
    }
    crate::sys::memory::set_non_dumpable().map_err(|e| format!("cannot make the process non-dumpable: {e}"))?;
    // Not fatal: a container may forbid it; the keys are then only kept out of core files.
    if let Err(e) = crate::sys::memory::lock_all() {
        tracing::warn!("memory is not locked against swapping, keys may be written to swap: {e}");
    }
    privileges::drop_privileges(user).map_err(|e| format!("cannot drop privileges: {e}"))?;
    // The user change resets the flag to the system's default (fs.suid_dumpable): set it again.
    crate::sys::memory::set_non_dumpable().map_err(|e| format!("cannot make the process non-dumpable: {e}"))
}

/// Protocol parameters from the environment, for tests and netns users who need a rekey every
/// second: `VEIL_REKEY_AFTER_TIME_MS`, `VEIL_REJECT_AFTER_TIME_MS`, `VEIL_REKEY_TIMEOUT_MS`,
/// `VEIL_KEEPALIVE_TIMEOUT_MS`, `VEIL_REKEY_ATTEMPT_TIME_MS`, `VEIL_REKEY_AFTER_MESSAGES`,
/// `VEIL_REJECT_AFTER_MESSAGES`. Unset variables keep WireGuard's values.
pub fn config_from_env() -> Result<Config, String> {
    let mut c = Config::default();
    let ms = |name: &str, slot: &mut Duration| -> Result<(), String> {
        if let Ok(v) = std::env::var(name) {
            let n: u64 = v.parse().map_err(|_| format!("{name}={v:?} is not a number of milliseconds"))?;
            *slot = Duration::from_millis(n);
        }
        Ok(())
    };
    ms("VEIL_REKEY_AFTER_TIME_MS", &mut c.rekey_after_time)?;
    ms("VEIL_REJECT_AFTER_TIME_MS", &mut c.reject_after_time)?;
    ms("VEIL_REKEY_TIMEOUT_MS", &mut c.rekey_timeout)?;
    ms("VEIL_KEEPALIVE_TIMEOUT_MS", &mut c.keepalive_timeout)?;
    ms("VEIL_REKEY_ATTEMPT_TIME_MS", &mut c.rekey_attempt_time)?;
    for (name, slot) in [
        ("VEIL_REKEY_AFTER_MESSAGES", &mut c.rekey_after_messages),
        ("VEIL_REJECT_AFTER_MESSAGES", &mut c.reject_after_messages),
    ] {
        if let Ok(v) = std::env::var(name) {
            *slot = v.parse().map_err(|_| format!("{name}={v:?} is not a number"))?;
        }
    }
    Ok(c)
}

/// How the daemon runs, besides its interface.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stay in the foreground instead of detaching.
    pub foreground: bool,
    /// Run as this user once the TUN device and the socket exist (`--user`, `VEIL_USER`).
    pub user: Option<String>,
    /// Serve Prometheus metrics over HTTP at this address (`--metrics-listen`,
    /// `VEIL_METRICS_LISTEN`); `None`: no endpoint.
    pub metrics_listen: Option<String>,
}

/// Runs the daemon for `ifname`. Returns an error message when start-up fails.
pub fn run(ifname: &str, options: Options) -> Result<(), String> {
    check_ifname(ifname)?;
    let config = config_from_env()?;
    let log_level = super::log::level_from_env()?;
    super::log::init(log_level);
    let user_name = options.user.or_else(|| std::env::var("VEIL_USER").ok().filter(|u| !u.is_empty()));
    let user = user_name.as_deref().map(User::lookup).transpose()?;
    let metrics_listen = options
        .metrics_listen
        .or_else(|| std::env::var(super::metrics_http::ENV).ok().filter(|a| !a.is_empty()))
        .map(|a| super::metrics_http::parse_listen(&a))
        .transpose()?;
    let path = socket_path(ifname);
    if super::uapi_client::served(&path) {
        return Err(format!("{ifname} is already running: {} answers", path.display()));
    }
    let tun = crate::sys::tun::Tun::create(ifname).map_err(|e| format!("cannot create TUN device {ifname}: {e}"))?;
    let links = LinkEvents::open().map_err(|e| format!("cannot follow {ifname}'s link: {e}"))?;
    let listener = bind_uapi(&path)?;
    let our_inode = inode(&path);
    let foreground = options.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    let mut readiness = if foreground { Readiness(None) } else { daemonize(super::log::asked_for(log_level))? };
    // Still one thread: what follows changes it alone, and the threads started later inherit it.
    if let Err(e) = protect(&path, our_inode, user.as_ref()) {
        let _ = std::fs::remove_file(&path);
        readiness.failed(&e);
        return Err(e);
    }
    let started = (|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map_err(|e| format!("cannot handle signals: {e}"))?;
        let device = Device::start(tun, links, config).map_err(|e| format!("cannot start device: {e}"))?;
        device.serve_uapi(listener).map_err(|e| format!("cannot serve {}: {e}", path.display()))?;
        if let Some(addr) = metrics_listen {
            super::metrics_http::serve(addr, device.clone(), ifname.to_string())?;
        }
        // A signal stops the device at once, which wakes the loop below.
        let on_signal = device.clone();
        std::thread::Builder::new()
            .name("veil-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    on_signal.stop(if sig == SIGINT { "SIGINT" } else { "SIGTERM" });
                }
            })
            .map_err(|e| format!("cannot handle signals: {e}"))?;
        Ok::<_, String>(device)
    })();
    let device = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            readiness.failed(&e);
            return Err(e);
        }
    };
    readiness.ready();
    if foreground {
        // A service manager (Type=notify) started us: the socket serves, `wg` can configure us.
        let status = format!("{ifname} is running, configure it with wg");
        let _ = sd_notify::notify(&[NotifyState::Status(&status), NotifyState::Ready]);
    }
    // A panicking thread would leave a half-working device behind; stop the whole daemon instead,
    // cleanly (socket removed), and say so.
    static PANICKED: AtomicBool = AtomicBool::new(false);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        PANICKED.store(true, Ordering::SeqCst);
    }));
    tracing::info!("{ifname} is up, configure it with `wg set {ifname} ...` or `wg setconf {ifname} FILE`");
    // Woken at once when the device stops (signal, TUN gone); the socket file and panics are
    // looked at every 100 ms.
    let reason = loop {
        if device.wait_stopped(Duration::from_millis(100)) {
            break device.exit_reason().unwrap_or_else(|| "stopped".into());
        }
        if PANICKED.load(Ordering::SeqCst) {
            device.stop("internal error");
            if inode(&path) == our_inode {
                let _ = std::fs::remove_file(&path);
            }
            tracing::error!("{ifname} stopped: internal error (a thread panicked, see above)");
            return Err("internal error: a thread panicked".into());
        }
        if inode(&path) != our_inode {
            break format!("{} was removed", path.display());
        }
    };
    if foreground {
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
    }
    device.stop(&reason);
    if inode(&path) == our_inode {
        let _ = std::fs::remove_file(&path);
    }
    tracing::info!("{ifname} stopped: {reason}");
    tracing::debug!("{ifname}: {}", device.drop_summary());
    Ok(())
}
