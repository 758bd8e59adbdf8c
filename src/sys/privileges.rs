//! Least privilege for the daemon. Once the TUN device and the UAPI socket exist, and before any
//! thread starts (capabilities belong to threads; those started later inherit the main
//! thread's), the daemon gives up everything but what it still uses while it runs:
//!
//! - CAP_NET_ADMIN, effective: the fwmark (`SO_MARK`) of every UDP socket, the sockets' large
//!   buffers (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`) when `wg set` rebinds them to a new port;
//! - CAP_NET_BIND_SERVICE, permitted only: raised by the thread that binds a port below 1024,
//!   for that `bind` alone ([`binding`]), since `wg set listen-port` may ask for one at any time;
//! - nothing else: the bounding set is cut to the same two, the inheritable and ambient sets
//!   are emptied, and `no_new_privs` is set, so no program the process might run could gain
//!   privileges either.
//!
//! Optionally it also becomes an unprivileged user ([`User`]), keeping the same capabilities
//! through the change (`PR_SET_KEEPCAPS`). Such a user cannot remove the socket file from
//! /var/run/wireguard (root's directory), so a small process that stays root, with no
//! capabilities, waits for the daemon to end and removes it ([`spawn_socket_janitor`]).

use std::ffi::CString;
use std::io;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};

/// Capabilities in the effective set while the daemon runs.
pub const EFFECTIVE: &[Capability] = &[Capability::CAP_NET_ADMIN];
/// Capabilities in the permitted (and bounding) set while the daemon runs.
pub const PERMITTED: &[Capability] = &[Capability::CAP_NET_ADMIN, Capability::CAP_NET_BIND_SERVICE];

/// A user to run as: from a name in the password database, or a numeric uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// As given (for messages).
    pub name: String,
    pub uid: libc::uid_t,
    /// The user's primary group (the only group the daemon keeps).
    pub gid: libc::gid_t,
}

impl User {
    /// Looks `name` up in the password database; a number that is not a name there is taken as
    /// a uid with the group of the same number.
    pub fn lookup(name: &str) -> Result<User, String> {
        let c = CString::new(name).map_err(|_| format!("user {name:?}: contains a NUL byte"))?;
        let mut buf = vec![0 as libc::c_char; 16 << 10];
        // SAFETY: an all-zero passwd is a valid value for getpwnam_r to fill in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to live memory of the size given; the strings getpwnam_r
        // stores in `pw` point into `buf`, which outlives their only use below (none are read).
        let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
        if r == 0 && !found.is_null() {
            return Ok(User { name: name.to_string(), uid: pw.pw_uid, gid: pw.pw_gid });
        }
        match name.parse::<libc::uid_t>() {
            Ok(uid) => Ok(User { name: name.to_string(), uid, gid: uid }),
            Err(_) if r != 0 => Err(format!("user {name:?}: {}", io::Error::from_raw_os_error(r))),
            Err(_) => Err(format!("user {name:?}: no such user")),
        }
    }
}

fn set_of(caps: &[Capability]) -> CapsHashSet {
    caps.iter().copied().collect()
}

fn caps_error(what: &str) -> impl Fn(caps::errors::CapsError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn check(r: libc::c_int, what: &str) -> Result<(), String> {
    if r == 0 { Ok(()) } else { Err(format!("{what}: {}", io::Error::last_os_error())) }
}

/// Gives up every capability but [`EFFECTIVE`] and [`PERMITTED`] (those the process has of
/// them), sets `no_new_privs`, and becomes `user` if one is given. Must run while the process
/// has a single thread. A process started without CAP_SETPCAP (not by root) keeps its bounding
/// set; `no_new_privs` then still stops any gain through exec.
pub fn drop_privileges(user: Option<&User>) -> Result<(), String> {
    // A thread started before this point would keep every capability: refuse, loudly.
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(1);
    if threads != 1 {
        return Err(format!("{threads} threads run already, and capabilities belong to each thread"));
    }
    let had = caps::read(None, CapSet::Permitted).map_err(caps_error("reading capabilities"))?;
    let permitted: CapsHashSet = set_of(PERMITTED).intersection(&had).copied().collect();
    let effective: CapsHashSet = set_of(EFFECTIVE).intersection(&had).copied().collect();
    if had.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().into_iter().filter(|c| !permitted.contains(c)) {
            // A capability this kernel does not know is not in the bounding set either.
            if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap).map_err(caps_error("dropping from the bounding set"))?;
            }
        }
    }
    if let Some(user) = user {
        // SAFETY: these calls take integers (and, for setgroups, an empty list) and change
        // this process's credentials only; it has a single thread, so all of it changes.
        unsafe {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")?;
            check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
            check(libc::setresgid(user.gid, user.gid, user.gid), "setresgid")?;
            check(libc::setresuid(user.uid, user.uid, user.uid), "setresuid")?;
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0), "PR_SET_KEEPCAPS")?;
        }
        // SAFETY: getuid and getgid cannot fail.
        if unsafe { (libc::getuid(), libc::getgid()) } != (user.uid, user.gid) {
            return Err(format!("could not become user {} (uid {}, gid {})", user.name, user.uid, user.gid));
        }
    }
    // Effective first: it must stay a subset of the permitted set at every step.
    caps::set(None, CapSet::Effective, &effective).map_err(caps_error("setting the effective set"))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(caps_error("setting the permitted set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_error("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Ambient).map_err(caps_error("clearing the ambient set"))?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes one integer argument.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "PR_SET_NO_NEW_PRIVS")?;
    Ok(())
}

/// Runs `bind` with CAP_NET_BIND_SERVICE raised in this thread's effective set when `port` is
/// a privileged one and the capability is permitted but not effective, and lowered again after.
/// Other threads never see it.
pub fn binding<R>(port: u16, bind: impl FnOnce() -> R) -> R {
    let cap = Capability::CAP_NET_BIND_SERVICE;
    let raise = port != 0
        && port < 1024
        && !caps::has_cap(None, CapSet::Effective, cap).unwrap_or(true)
        && caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false);
    if raise && let Err(e) = caps::raise(None, CapSet::Effective, cap) {
        tracing::debug!("raising CAP_NET_BIND_SERVICE for port {port}: {e}");
    }
    let r = bind();
    if raise && let Err(e) = caps::drop(None, CapSet::Effective, cap) {
        tracing::error!("lowering CAP_NET_BIND_SERVICE again: {e}");
    }
    r
}

/// Forks a process that removes the socket file at `path` once this process has exited (by
/// whatever way), if the file is still the one with inode `ino`. It stays root, since only
/// root may remove files from /var/run/wireguard, but gives up every capability, sets
/// `no_new_privs`, closes every descriptor but its end of a pipe, ignores the signals that stop
/// the daemon, and does nothing but wait for the pipe's other end (held by the daemon) to
/// close. Must run while the process has a single thread.
pub fn spawn_socket_janitor(path: &Path, ino: u64) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "socket path contains a NUL byte")?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe")?;
    let [rd, wr] = fds;
    // SAFETY: the process has a single thread (the caller's promise), so the child is a
    // consistent copy; the child only makes system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid > 0 {
        // SAFETY: `rd` is ours and used no more in this process; `wr` is deliberately kept
        // open (never closed) until the daemon exits.
        unsafe { libc::close(rd) };
        return Ok(());
    }
    // The janitor (a copy of a process with one thread, so no lock is held by a thread that is
    // not here). SAFETY: plain system calls on integers, the path string made before the fork
    // and stack buffers; `_exit` ends the process without running anything of the parent's.
    unsafe {
        libc::close(wr);
        // Out of the way of the standard descriptors, were one of them closed at start.
        let rd = libc::fcntl(rd, libc::F_DUPFD_CLOEXEC, 3);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        let keep = rd as libc::c_uint;
        libc::close_range(3, keep - 1, 0);
        libc::close_range(keep + 1, libc::c_uint::MAX, 0);
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            let _ = caps::clear(None, set);
        }
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let mut byte = 0u8;
        loop {
            match libc::read(rd, (&mut byte as *mut u8).cast(), 1) {
                -1 if *libc::__errno_location() == libc::EINTR => continue,
                // End of file: the daemon is gone (nothing is ever written).
                0 | -1 => break,
                _ => {}
            }
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(c_path.as_ptr(), &mut st) == 0 && st.st_ino == ino {
            libc::unlink(c_path.as_ptr());
        }
        libc::_exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_by_name_or_taken_as_numbers() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let numeric = User::lookup("4242").unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4242));
        assert!(User::lookup("no-such-user-here").is_err());
    }

    #[test]
    fn a_high_port_or_an_unprivileged_thread_is_bound_as_it_is() {
        let before = caps::read(None, CapSet::Effective).unwrap();
        assert_eq!(binding(51820, || 7), 7);
        assert_eq!(binding(53, || 8), 8);
        // Whatever the test runs as, the thread's effective set is what it was.
        assert_eq!(caps::read(None, CapSet::Effective).unwrap(), before);
    }
}
