//! Network namespaces for the lab's nodes: made with `unshare` on a helper thread and held by
//! descriptors; as root also named under /run/netns (a bind mount, as `ip netns add` makes) so
//! that `ip netns exec` and `ip -n` work on them. Entering one is per thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where `ip netns` keeps its names.
pub const NETNS_DIR: &str = "/run/netns";

/// Makes `count` new network namespaces, each with its loopback up, and returns descriptors of
/// them. Runs on a thread of its own, which leaves with it.
pub fn create(count: usize) -> io::Result<Vec<OwnedFd>> {
    std::thread::spawn(move || {
        let mut fds = Vec::with_capacity(count);
        for _ in 0..count {
            // SAFETY: unshare with CLONE_NEWNET moves only this thread to a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rtnl = super::rtnl::Rtnl::open()?;
            rtnl.set_up(1, None)?;
            fds.push(File::open("/proc/thread-self/ns/net")?.into());
        }
        Ok(fds)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Gives the namespace of `fd` the name `name` under /run/netns, as `ip netns add` would.
pub fn mount_name(fd: &OwnedFd, name: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let path = Path::new(NETNS_DIR).join(name);
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(&path)?;
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Err(e) = bind(&source, &path) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

use std::os::unix::fs::OpenOptionsExt;

fn bind(source: &str, target: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let s = std::ffi::CString::new(source)?;
    let t = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths alive for the call; a bind mount changes no memory of ours.
    if unsafe { libc::mount(s.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes a name made by [`mount_name`] (the namespace lives on while anything holds it).
pub fn unmount_name(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let t = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path alive for the call.
    unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    std::fs::remove_file(path)
}

/// This thread inside a network namespace until dropped (then back where it was).
pub struct Entered(OwnedFd);

impl Entered {
    /// Moves the calling thread into the namespace of `ns`.
    pub fn new(ns: &OwnedFd) -> io::Result<Entered> {
        let home = File::open("/proc/thread-self/ns/net")?;
        enter(ns.as_raw_fd())?;
        Ok(Entered(home.into()))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let _ = enter(self.0.as_raw_fd());
    }
}

/// `setns` into the network namespace of descriptor `fd` (async-signal-safe: usable between
/// fork and exec).
pub fn enter(fd: i32) -> io::Result<()> {
    // SAFETY: setns on a descriptor; it changes only this thread's network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
