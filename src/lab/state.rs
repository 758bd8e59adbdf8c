//! A lab as other processes see it: its state file (where its namespaces are, which daemons
//! to stop), the guard that tears down after an owner that died, `veil lab down`, and finding
//! a lab by its file or name.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{STOP_GRACE, Topology, netns};

/// Where labs keep their state: `VEIL_LAB_DIR`, else /run/veil-lab where it can be written
/// (root), else `$XDG_RUNTIME_DIR/veil-lab`, else /tmp/veil-lab-UID (UID outside any user
/// namespace, so two users never share it).
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VEIL_LAB_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let run = Path::new("/run/veil-lab");
    if std::fs::create_dir_all(run).is_ok() && writable(run) {
        return run.into();
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&d).join("veil-lab");
    }
    std::env::temp_dir().join(format!("veil-lab-{}", outer_uid()))
}

pub(super) fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path alive for the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// This process's uid as the initial user namespace knows it (through /proc/self/uid_map).
fn outer_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    for line in map.lines() {
        let f: Vec<u32> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if let [inside, outside, count] = f[..]
            && uid >= inside
            && uid - inside < count
        {
            return outside + (uid - inside);
        }
    }
    uid
}

/// What another process needs to find, enter and tear down a lab (its state file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// The lab's name.
    pub name: String,
    /// The owner's process id.
    pub owner: u32,
    /// The owner's start time (clock ticks after boot, from /proc), so that another process
    /// that got the same id later is not taken for it.
    #[serde(default)]
    pub owner_start: u64,
    /// The directory of the daemons' sockets.
    pub socket_dir: PathBuf,
    /// Whether that is not /var/run/wireguard (the daemons were given `VEIL_SOCKET_DIR`).
    pub private_sockets: bool,
    /// The nodes.
    pub nodes: Vec<StateNode>,
}

/// A node in a [`State`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateNode {
    /// The node's name.
    pub name: String,
    /// A path that opens its namespace: /run/netns/NAME, or /proc/OWNER/fd/N.
    pub netns: PathBuf,
    /// Whether `netns` is a name under /run/netns to unmount on teardown.
    pub named: bool,
    /// The tunnel interface, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The daemon's process id, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<u32>,
}

impl State {
    /// Reads the state of lab `name` under `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<State, String> {
        let path = dir.join(name).join("state.toml");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("lab {name} is not up ({}: {e})", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The names of the labs that have state under `dir`.
    pub fn list(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().join("state.toml").exists())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub(super) fn save(&self, dir: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        let tmp = dir.join("state.toml.new");
        std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("state.toml")).map_err(|e| format!("{}: {e}", dir.display()))
    }

    /// Whether the owner process still runs.
    pub fn owner_alive(&self) -> bool {
        alive(self.owner) && start_time(self.owner) == Some(self.owner_start)
    }

    /// Tears down what the state names, for an owner that is gone: stops the daemons (SIGTERM,
    /// then SIGKILL), removes sockets they left, the namespace names and the lab's directory.
    pub fn teardown(&self, dir: &Path) {
        let pids: Vec<u32> = self.nodes.iter().filter_map(|n| n.daemon).collect();
        for &pid in &pids {
            signal(pid, libc::SIGTERM);
        }
        let until = Instant::now() + STOP_GRACE;
        while pids.iter().any(|&p| alive(p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        for &pid in pids.iter().filter(|&&p| alive(p)) {
            signal(pid, libc::SIGKILL);
        }
        for n in &self.nodes {
            if let Some(ifname) = &n.ifname {
                remove_stale_socket(&self.socket_dir.join(format!("{ifname}.sock")));
            }
            if n.named {
                let _ = netns::unmount_name(&n.netns);
            }
        }
        let _ = std::fs::remove_dir_all(dir.join(&self.name));
    }
}

/// Removes a socket file that a stopped daemon left behind, but not one that answers: that is
/// another daemon's (one that already served the name, so ours could not start).
pub(super) fn remove_stale_socket(path: &Path) {
    if path.exists() && UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// When process `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat).
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (in parentheses, which may hold anything): state is 3rd.
    stat.rsplit_once(") ")?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` runs (a zombie, dead but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may contain anything.
    pid != 0 && stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
}

pub(super) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sending a signal to a process id; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Starts `veil lab guard STATE` with the read end of a pipe as its standard input; the write
/// end, returned, lives as long as the lab in this process only.
pub(super) fn spawn_guard(veil: &Path, state: &Path) -> Result<(Child, OwnedFd), String> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just made by pipe2 and belong to nothing else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child = Command::new(veil)
        .args(["lab", "guard"])
        .arg(state)
        .stdin(Stdio::from(rd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the lab's guard ({} lab guard): {e}", veil.display()))?;
    Ok((child, wr))
}

/// `veil lab guard STATE`: waits until standard input ends (the owner is gone, one way or
/// another), then tears down what `STATE` still names.
pub fn guard(state: &Path) -> Result<(), String> {
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGPIPE] {
        // SAFETY: ignoring a signal installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while std::io::Read::read(&mut stdin, &mut sink).is_ok_and(|n| n > 0) {}
    let Ok(text) = std::fs::read_to_string(state) else { return Ok(()) };
    let s: State = toml::from_str(&text).map_err(|e| e.to_string())?;
    let root = state.parent().and_then(Path::parent).ok_or("bad state path")?;
    s.teardown(root);
    Ok(())
}

/// For `veil lab down`: finds lab `name` under `dir` and takes it down: asks a live owner to do
/// it (SIGTERM) and waits, or tears it down itself when the owner is gone.
pub fn down_by_name(dir: &Path, name: &str) -> Result<(), String> {
    let state = State::load(dir, name)?;
    if state.owner_alive() && state.owner != std::process::id() {
        signal(state.owner, libc::SIGTERM);
        // Until the lab's directory is gone, not just its state file: the owner removes the
        // directory's contents first, and a caller that looks right after we return must find
        // nothing (as CI once did, between the two).
        let lab_dir = dir.join(name);
        let until = Instant::now() + Duration::from_secs(15);
        while lab_dir.exists() && state.owner_alive() {
            if Instant::now() > until {
                return Err(format!("the owner of lab {name} (pid {}) did not take it down", state.owner));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !lab_dir.join("state.toml").exists() {
            // What an owner that died halfway through removing the directory left behind.
            let _ = std::fs::remove_dir_all(&lab_dir);
            return Ok(());
        }
        // The owner ended without taking the lab down (killed meanwhile): as for a dead one.
    }
    state.teardown(dir);
    Ok(())
}

/// Which lab a command means: `lab` (a topology file, or a lab's name), or the only lab up.
pub fn resolve(dir: &Path, lab: Option<&str>) -> Result<String, String> {
    match lab {
        Some(l) if Path::new(l).is_file() => Ok(Topology::from_file(Path::new(l))?.name().to_string()),
        Some(l) => Ok(l.to_string()),
        None => {
            let labs = State::list(dir);
            match labs.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(format!("no lab is up (under {})", dir.display())),
                many => Err(format!("several labs are up ({}): say which with --lab", many.join(", "))),
            }
        }
    }
}
