//! Running host commands (`ip`, `nft`, `resolvconf`, hooks) for `veil up`/`veil down`, each
//! echoed as wg-quick echoes them: `[#] command`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prints a line to standard error, ignoring failure: `eprintln!` panics when stderr is gone
/// (a terminal hung up, a closed pipe), which would abort `veil up` before it can undo its work.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

/// SIGINT, SIGTERM and SIGHUP caught instead of ending the process, so that a command can stop
/// between two steps and undo what it did.
pub struct Interrupts(Arc<AtomicBool>);

impl Interrupts {
    pub fn catch() -> Result<Interrupts, String> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register(sig, flag.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
        }
        Ok(Interrupts(flag))
    }

    /// An error once a signal arrived.
    pub fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) { Err("interrupted by a signal".into()) } else { Ok(()) }
    }
}

/// Runs `cmd`; an error carries its standard error output.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    run_with_input(cmd, args, None)
}

/// Runs `cmd` with `input` on its standard input (or none).
pub fn run_with_input(cmd: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    say!("[#] {cmd} {}", args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    let written = match (child.stdin.take(), input) {
        (Some(mut stdin), Some(text)) => stdin.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let out = child.wait_with_output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    written.map_err(|e| format!("{cmd}: writing its input: {e}"))
}

/// The standard output of `cmd` (empty if it cannot run), for queries that are not echoed.
pub fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The addresses (with prefix length) of `ifname`, as `ip -o address show dev IFNAME` lists
/// them after the `ip` options `ip_args` (a family, say) and before the `show` filters
/// `filters` (a scope, say).
pub fn addresses(ifname: &str, ip_args: &[&str], filters: &[&str]) -> Vec<ipnet::IpNet> {
    let args: Vec<&str> =
        ["-o"].iter().chain(ip_args).chain(&["address", "show", "dev", ifname]).chain(filters).copied().collect();
    output("ip", &args)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words.iter().position(|w| *w == "inet" || *w == "inet6")?;
            words.get(i + 1)?.parse().ok()
        })
        .collect()
}

/// Whether an executable `name` is on PATH.
pub fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs wg-quick hooks (`PreUp` ...) through bash, `%i` replaced by the interface name.
pub fn hooks(list: &[String], ifname: &str) -> Result<(), String> {
    for h in list {
        let cmd = h.replace("%i", ifname);
        say!("[#] {cmd}");
        let status = Command::new("bash").arg("-c").arg(&cmd).status().map_err(|e| format!("hook: {e}"))?;
        if !status.success() {
            return Err(format!("hook `{cmd}` failed with {status}"));
        }
    }
    Ok(())
}
