//! `veil lab exec`: a command inside a node, from any process of the lab's user.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::{State, netns};

/// Runs `argv` inside node `node` of the lab described by `state` (for `veil lab exec`): joins
/// its network namespace, then, best effort, a mount namespace of its own with /sys showing the
/// node's interfaces and, for private sockets, the lab's socket directory on /var/run/wireguard
/// (so `wg` finds the node's daemon). Returns only on an error.
pub fn exec(state: &State, node: &str, argv: &[String]) -> String {
    let Some(n) = state.nodes.iter().find(|n| n.name == node) else {
        let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
        return format!("lab {} has no node {node:?} (it has {})", state.name, names.join(", "));
    };
    let Some(program) = argv.first() else { return "no command given after `--`".into() };
    let ns = match File::open(&n.netns) {
        Ok(f) => f,
        Err(e) => return format!("{}: {e}", n.netns.display()),
    };
    if let Err(e) = netns::enter(ns.as_raw_fd()) {
        return format!("cannot enter {}'s namespace: {e}", n.name);
    }
    private_mounts(state);
    let mut cmd = Command::new(program);
    cmd.args(&argv[1..]);
    if state.private_sockets {
        cmd.env("VEIL_SOCKET_DIR", &state.socket_dir);
    }
    format!("{program}: {}", cmd.exec())
}

/// A mount namespace for `exec`'s command: sysfs of its network namespace on /sys, and the
/// lab's sockets where `wg` looks. Best effort: without them only `/sys/class/net` and `wg` are
/// wrong.
fn private_mounts(state: &State) {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    // SAFETY: unshare and mount take NUL-terminated strings alive for each call; they change
    // this process's mounts only.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        let root = c("/");
        libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null());
        let sys = c("/sys");
        libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
        let sysfs = c("sysfs");
        libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null());
        if state.private_sockets
            && let Some(dir) = state.socket_dir.to_str()
        {
            let (src, dst) = (c(dir), c(crate::control::daemon::SOCKET_DIR));
            libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null());
        }
    }
}
