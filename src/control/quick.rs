//! `veil up CONFIG-or-NAME` and `veil down CONFIG-or-NAME`: what wg-quick does with a wg-quick
//! configuration file, with veil as the implementation and no wg-quick needed.
//!
//! Up: PreUp hooks, start the daemon, configure it over its socket, addresses, MTU, link up,
//! routes for the allowed IPs (a /0 gets wg-quick's fwmark policy routing), DNS through
//! resolvconf, PostUp hooks. Any
//! failure (a failing PostUp hook included) removes the interface again, so nothing is left
//! half-configured. Without `MTU`, the MTU is wg-quick's: the largest MTU of the routes to the
//! endpoints (else of the default route, else 1500) minus 80. Down: PreDown hooks, the file
//! rewritten from the live device if `SaveConfig = true`, DNS and policy rules removed, interface
//! deleted (the daemon exits with it), PostDown hooks.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cmd::{Interrupts, addresses, hooks, output, run, say};
use super::config::{self, Config, Key32, PeerSection};
use super::daemon::{check_ifname, socket_path};
use super::policy_routing::{self, Family};
use super::resolvconf;
use super::uapi_client;
use crate::noise::keys::parse_hex_key;

/// Where `veil up NAME` finds NAME.conf, as wg-quick.
pub const CONFIG_DIR: &str = "/etc/wireguard";

/// Finds the config: a path as given, else /etc/wireguard/NAME.conf. Returns it and the
/// interface name (the file's stem).
pub fn locate(arg: &str) -> Result<(PathBuf, String), String> {
    let given = Path::new(arg);
    let path = if given.exists() || arg.contains('/') || arg.ends_with(".conf") {
        given.to_path_buf()
    } else {
        Path::new(CONFIG_DIR).join(format!("{arg}.conf"))
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: cannot take an interface name from this path", path.display()))?
        .to_string();
    check_ifname(&name).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, name))
}

fn link_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

/// An endpoint's address: a literal as it is (a link-local zone may be an interface name, as wg
/// accepts), a host name resolved with wg's retries for temporary failures (see `resolve.rs`),
/// the waits cut short by a signal.
fn resolve(endpoint: &str, signals: &Interrupts) -> Result<SocketAddr, String> {
    let literal = crate::device::uapi::parse_endpoint(endpoint);
    if let Ok(addr) = literal.and_then(|e| e.resolve(crate::sys::udp::interface_index)) {
        return Ok(addr);
    }
    let bad = || format!("endpoint {endpoint:?} is not HOST:PORT");
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let retries = super::resolve::retries_from_env()?;
    let wait = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            signals.check()?;
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
        }
        signals.check()
    };
    super::resolve::resolve(host, port, super::resolve::delays(retries), wait, |m| say!("{m}"))
        .map_err(|e| format!("cannot resolve endpoint {endpoint:?}: {e}"))
}

/// Whether `veil up` runs under a service manager that waits to hear that the service is ready
/// (systemd's `Type=notify`, which sets `NOTIFY_SOCKET`; see docs/install.md).
fn notify_expected() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// Starts the daemon and waits for its socket. It detaches as wg-quick's daemons do, except
/// under a service manager (`NOTIFY_SOCKET`): then it stays in the foreground as a child of
/// this process, recorded in `done`, so that [`hand_over`] can make it the service's main
/// process once the tunnel is configured; its log goes where ours goes (the journal).
fn start_daemon(ifname: &str, done: &mut Progress) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&exe);
    // In a process group of its own: a Ctrl-C meant for `veil up` must not kill the daemon's
    // parent halfway (its child would live on, unknown to the rollback); `veil up` catches the
    // signal and undoes the start itself.
    cmd.stdin(Stdio::null()).process_group(0);
    if notify_expected() {
        say!("[#] {} --foreground {ifname}", exe.display());
        // The daemon is not the main process yet: its own readiness message would be refused.
        cmd.arg("--foreground").arg(ifname).env_remove("NOTIFY_SOCKET");
        done.child = Some(cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))?);
    } else {
        say!("[#] {} {ifname}", exe.display());
        let status = cmd.arg(ifname).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("the daemon for {ifname} failed to start ({status})"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket_path(ifname).exists() {
        if let Some(Ok(Some(status))) = done.child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the daemon for {ifname} failed to start ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not appear", socket_path(ifname).display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Under a service manager: tells it that the tunnel is configured (`READY=1`) and that the
/// daemon, not this process, is the service's main process (`MAINPID=`), so that the service
/// lives as long as the tunnel and fails if the daemon dies. Without `NOTIFY_SOCKET`, nothing.
fn hand_over(ifname: &str, done: &Progress) -> Result<(), String> {
    use sd_notify::NotifyState;
    let Some(daemon) = &done.child else { return Ok(()) };
    let status = format!("{ifname} is up");
    sd_notify::notify(&[NotifyState::MainPid(daemon.id()), NotifyState::Status(&status), NotifyState::Ready])
        .map_err(|e| format!("cannot tell the service manager that {ifname} is ready (NOTIFY_SOCKET): {e}"))
}

/// Waits for a daemon started in the foreground to end after a failed `veil up` removed its
/// interface; one that did not get that far is killed.
fn reap(mut daemon: std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if matches!(daemon.try_wait(), Ok(None)) {
        let _ = daemon.kill();
    }
    let _ = daemon.wait();
}

/// The MTU of a route as `ip route get` / `ip route show` prints it: its own `mtu`, else its
/// device's.
fn route_mtu(route: &str) -> Option<u32> {
    let after = |text: &str, key: &str| -> Option<String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).map(|w| w.to_string())
    };
    if let Some(mtu) = after(route, "mtu").and_then(|m| m.parse().ok()) {
        return Some(mtu);
    }
    link_mtu(&after(route, "dev")?)
}

/// A link's MTU, from `ip link show`.
fn link_mtu(dev: &str) -> Option<u32> {
    let out = output("ip", &["link", "show", "dev", dev]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words.iter().position(|w| *w == "mtu").and_then(|i| words.get(i + 1)).and_then(|m| m.parse().ok())
}

/// wg-quick's MTU when none is configured: the largest MTU of the routes to the peers'
/// endpoints, else of the default route, else 1500; minus 80 bytes of WireGuard overhead.
fn auto_mtu(endpoints: &[SocketAddr]) -> u32 {
    let mut mtu = endpoints
        .iter()
        .filter_map(|e| route_mtu(&output("ip", &["route", "get", &e.ip().to_string()])))
        .max()
        .unwrap_or(0);
    if mtu == 0 {
        mtu = route_mtu(output("ip", &["route", "show", "default"]).lines().next().unwrap_or("")).unwrap_or(0);
    }
    if mtu == 0 {
        mtu = 1500;
    }
    mtu.saturating_sub(80)
}

fn table_of(cfg: &Config) -> Option<String> {
    match cfg.interface.table.as_deref() {
        Some("off") => None,
        Some("auto") | None => Some("auto".into()),
        Some(t) => Some(t.to_string()),
    }
}

/// What this run of `veil up` has set up so far, so that a failure (or `down`) undoes exactly
/// that and nothing that belongs to someone else.
#[derive(Default)]
struct Progress {
    /// The daemon (and so the interface) was started by this run.
    daemon: bool,
    /// That daemon, when it runs in the foreground as our child (under a service manager).
    child: Option<std::process::Child>,
    /// The resolvconf record was added.
    dns: bool,
    /// The default routes' table, and the families whose route and rules were added.
    table: Option<u32>,
    families: Vec<Family>,
}

/// Why the daemon refused the configuration, in words.
fn refused(ifname: &str, errno: i32, cfg: &Config) -> String {
    match (errno, cfg.interface.listen_port) {
        (crate::device::uapi::EADDRINUSE, Some(port)) => format!(
            "{ifname}: UDP port {port} (ListenPort) is already in use{}; choose another ListenPort, or stop what \
             uses it",
            port_user(port).map(|u| format!(" by {u}")).unwrap_or_default()
        ),
        (e, _) => format!("{ifname} refused the configuration (errno {e})"),
    }
}

/// Who holds UDP `port` in this network namespace, if `ss` can tell: a tunnel daemon named with
/// its interface (`veil (pid 123, interface wg1)`), else the process.
fn port_user(port: u16) -> Option<String> {
    let out = output("ss", &["-Hulnp", "sport", "=", &format!(":{port}")]);
    // ... users:(("veil",pid=123,fd=7))
    let users = out.split("users:((").nth(1)?;
    let name = users.split('"').nth(1)?.to_string();
    let pid: u32 = users.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        cmdline.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    // veil, wireguard-go, boringtun and gotatun all take the interface name last.
    let tunnel =
        ["veil", "veil-daemon", "wireguard-go", "boringtun", "boringtun-cli", "gotatun"].contains(&name.as_str());
    Some(match args.last().filter(|_| tunnel && args.len() > 1) {
        Some(iface) => format!("{name} (pid {pid}, interface {iface})"),
        None => format!("{name} (pid {pid})"),
    })
}

/// Everything of `veil up` between the daemon's start and the PostUp hooks, recorded in `done`
/// as it goes. Stops with an error between steps once `signals` caught one.
fn bring_up(cfg: &Config, path: &Path, ifname: &str, done: &mut Progress, signals: &Interrupts) -> Result<(), String> {
    start_daemon(ifname, done)?;
    done.daemon = true;
    signals.check()?;
    let endpoints = std::cell::RefCell::new(Vec::new());
    let failed = std::cell::RefCell::new(None);
    let set = cfg
        .to_uapi_set(&|e| {
            resolve(e, signals)
                .inspect(|a| endpoints.borrow_mut().push(*a))
                .inspect_err(|_| *failed.borrow_mut() = Some(e.to_string()))
        })
        .map_err(|mut e| {
            // Name the file and the line of the endpoint that did not resolve.
            e.file = path.display().to_string();
            let text = std::fs::read_to_string(path).unwrap_or_default();
            e.line = failed.borrow().as_deref().and_then(|v| config::line_of(&text, "Endpoint", v));
            e.to_string()
        })?;
    say!("[#] configure {ifname} over its socket");
    match uapi_client::errno(ifname, &format!("set=1\n{set}\n"))? {
        0 => {}
        errno => return Err(refused(ifname, errno, cfg)),
    }
    for addr in &cfg.interface.addresses {
        signals.check()?;
        run("ip", &[Family::of(addr).flag(), "address", "add", &addr.to_string(), "dev", ifname])?;
    }
    signals.check()?;
    let mtu = cfg.interface.mtu.unwrap_or_else(|| auto_mtu(&endpoints.borrow())).to_string();
    run("ip", &["link", "set", "mtu", &mtu, "up", "dev", ifname])?;
    signals.check()?;
    resolvconf::set(&cfg.interface.dns, ifname)?;
    done.dns = !cfg.interface.dns.is_empty();
    let Some(route_table) = table_of(cfg) else { return Ok(()) };
    // wg-quick's order (`sort -nr -k 2 -t /`): longest prefix first, ties in reverse byte order
    // of the text (so ::/0 before 0.0.0.0/0).
    let mut nets: Vec<ipnet::IpNet> = cfg.peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
    nets.sort_by(|a, b| b.prefix_len().cmp(&a.prefix_len()).then_with(|| b.to_string().cmp(&a.to_string())));
    nets.dedup();
    // Held from choosing a free table until its rules are in place.
    let mut routing_lock = None;
    for net in nets {
        signals.check()?;
        if net.prefix_len() == 0 && route_table == "auto" {
            let t = match done.table {
                Some(t) => t,
                None => {
                    routing_lock = Some(policy_routing::lock(signals)?);
                    let fwmark = cfg.interface.fwmark.filter(|&m| m != 0);
                    let t = policy_routing::choose_table(fwmark);
                    if fwmark.is_none() {
                        say!("[#] set fwmark {t} on {ifname} over its socket");
                        match uapi_client::errno(ifname, &format!("set=1\nfwmark={t}\n\n"))? {
                            0 => {}
                            e => return Err(format!("setting fwmark failed (errno {e})")),
                        }
                    }
                    done.table = Some(t);
                    t
                }
            };
            policy_routing::add(ifname, &net, t)?;
            done.families.push(Family::of(&net));
        } else if route_table == "auto" {
            // As wg-quick: nothing to add where a route of the interface covers the prefix
            // already (the subnet of the interface's address, say). `add`, not `replace`: a
            // route of another interface is not taken over (up fails instead, as wg-quick).
            let covered =
                output("ip", &[Family::of(&net).flag(), "route", "show", "dev", ifname, "match", &net.to_string()]);
            if covered.trim().is_empty() {
                run("ip", &[Family::of(&net).flag(), "route", "add", &net.to_string(), "dev", ifname])?;
            }
        } else {
            run(
                "ip",
                &[Family::of(&net).flag(), "route", "add", &net.to_string(), "dev", ifname, "table", &route_table],
            )?;
        }
    }
    drop(routing_lock);
    Ok(())
}

/// Whether a file of mode `file_mode` in a directory of mode `dir_mode` is open to others,
/// as wg-quick judges it: some permission for others on both.
pub fn world_accessible(file_mode: u32, dir_mode: u32) -> bool {
    file_mode & dir_mode & 0o007 != 0
}

/// wg-quick's warning, for a config file that holds a private key and is open to others.
fn warn_if_world_accessible(path: &Path, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    if cfg.interface.private_key.is_none() {
        return;
    }
    let Ok(real) = std::fs::canonicalize(path) else { return };
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode());
    let (Ok(file), Ok(dir)) = (mode(&real), mode(real.parent().unwrap_or(Path::new("/")))) else { return };
    if world_accessible(file, dir) {
        say!("Warning: `{}' is world accessible", real.display());
    }
}

/// `veil up`.
pub fn up(arg: &str) -> Result<(), String> {
    let (path, ifname) = locate(arg)?;
    let cfg = config::parse_file(&path).map_err(|e| e.to_string())?;
    warn_if_world_accessible(&path, &cfg);
    if link_exists(&ifname) {
        return Err(format!("{ifname} already exists"));
    }
    // As wg-quick's trap: SIGINT, SIGTERM or SIGHUP midway undoes what was done.
    let signals = Interrupts::catch()?;
    hooks(&cfg.interface.pre_up, &ifname)?;
    let mut done = Progress::default();
    // As wg-quick (its EXIT trap): a failing PostUp hook takes the interface down again.
    let result = bring_up(&cfg, &path, &ifname, &mut done, &signals)
        .and_then(|()| hooks(&cfg.interface.post_up, &ifname))
        .and_then(|()| signals.check())
        .and_then(|()| hand_over(&ifname, &done));
    if let Err(e) = result {
        say!("[!] {e}; removing {ifname}");
        teardown(&ifname, &cfg.interface.dns, &done);
        if let Some(daemon) = done.child.take() {
            reap(daemon);
        }
        return Err(e);
    }
    Ok(())
}

/// Takes down what `done` says was set up: the DNS record, the default routes' rules and
/// firewall rules, the interface itself (its daemon exits with it).
fn teardown(ifname: &str, dns: &[String], done: &Progress) {
    if done.dns {
        resolvconf::unset(dns, ifname);
    }
    if let Some(t) = done.table {
        policy_routing::remove(ifname, t, &done.families);
    } else if done.daemon {
        policy_routing::remove_firewall(ifname);
    }
    if done.daemon && link_exists(ifname) {
        let _ = run("ip", &["link", "delete", "dev", ifname]);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while done.daemon && socket_path(ifname).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `veil down`. What is removed follows the live interface, as in wg-quick, not the file (which
/// may have been edited since `up`): the default route's table is the device's fwmark, if one
/// of its peers has a /0.
pub fn down(arg: &str) -> Result<(), String> {
    let (path, ifname) = locate(arg)?;
    let cfg = config::parse_file(&path).map_err(|e| e.to_string())?;
    if !link_exists(&ifname) {
        return Err(format!("{ifname} is not a running interface"));
    }
    // Only a userspace WireGuard interface is taken down: a TUN device whose socket answers.
    if !Path::new("/sys/class/net").join(&ifname).join("tun_flags").exists() {
        return Err(format!("{ifname} is not a WireGuard interface (not a TUN device)"));
    }
    let live = device_config(&ifname).map_err(|e| format!("{ifname} is not a WireGuard interface ({e})"))?;
    let families: Vec<Family> = [Family::V6, Family::V4]
        .into_iter()
        .filter(|&f| live.peers.iter().flat_map(|p| &p.allowed_ips).any(|n| n.prefix_len() == 0 && Family::of(n) == f))
        .collect();
    let auto = table_of(&cfg).as_deref() == Some("auto");
    let table = live.interface.fwmark.filter(|_| auto && !families.is_empty());
    hooks(&cfg.interface.pre_down, &ifname)?;
    if cfg.interface.save_config {
        save_config(&cfg, &path, &ifname)?;
    }
    teardown(&ifname, &cfg.interface.dns, &Progress { daemon: true, child: None, dns: true, table, families });
    hooks(&cfg.interface.post_down, &ifname)?;
    Ok(())
}

/// The device's own configuration (keys, port, fwmark, peers), read with `get=1`.
fn device_config(ifname: &str) -> Result<Config, String> {
    let answer = uapi_client::get(ifname)?;
    let key = |v: &str| parse_hex_key(v).ok().filter(|k| k.iter().any(|&b| b != 0)).map(|k| Key32::from_bytes(*k));
    let mut cfg = Config::default();
    for line in answer.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let peer = cfg.peers.last_mut();
        match (k, peer) {
            ("errno", _) if v == "0" => return Ok(cfg),
            ("errno", _) => return Err(format!("{ifname}: get failed with errno {v}")),
            ("private_key", _) => cfg.interface.private_key = key(v),
            ("listen_port", _) => cfg.interface.listen_port = v.parse().ok().filter(|&p| p != 0),
            ("fwmark", _) => cfg.interface.fwmark = v.parse().ok().filter(|&m| m != 0),
            ("public_key", _) => cfg.peers.push(PeerSection {
                public_key: key(v).ok_or_else(|| format!("{ifname}: bad public key in get"))?,
                preshared_key: None,
                allowed_ips: Vec::new(),
                endpoint: None,
                persistent_keepalive: None,
            }),
            ("preshared_key", Some(p)) => p.preshared_key = key(v),
            ("endpoint", Some(p)) => p.endpoint = Some(v.to_string()),
            ("persistent_keepalive_interval", Some(p)) => p.persistent_keepalive = v.parse().ok().filter(|&s| s != 0),
            ("allowed_ip", Some(p)) => p.allowed_ips.extend(v.parse::<ipnet::IpNet>().ok()),
            _ => {}
        }
    }
    Err(format!("{ifname}: incomplete answer to get"))
}

/// `SaveConfig = true`, as wg-quick does it before `down` deletes the interface: the file is
/// rewritten with the device's current keys, port, fwmark and peers, the interface's current
/// global addresses (and current MTU, if the file sets one), and the file's other wg-quick
/// settings. Written to a temporary file (mode 0600) and renamed over the original.
fn save_config(cfg: &Config, path: &Path, ifname: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    say!("[#] save the configuration of {ifname} to {}", path.display());
    let mut saved = device_config(ifname)?;
    let (now, before) = (&mut saved.interface, &cfg.interface);
    now.addresses = addresses(ifname, &[], &["scope", "global"]);
    now.mtu = before.mtu.map(|m| link_mtu(ifname).unwrap_or(m));
    now.dns = before.dns.clone();
    now.table = before.table.clone();
    now.pre_up = before.pre_up.clone();
    now.post_up = before.post_up.clone();
    now.pre_down = before.pre_down.clone();
    now.post_down = before.post_down.clone();
    now.save_config = true;
    let text = zeroize::Zeroizing::new(saved.to_text().map_err(|e| format!("{}: {e}", path.display()))?);
    let tmp = path.with_extension("conf.tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot save {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::world_accessible;

    #[test]
    fn open_to_others_only_through_both_the_file_and_its_directory() {
        assert!(world_accessible(0o644, 0o755));
        assert!(world_accessible(0o606, 0o705));
        assert!(!world_accessible(0o602, 0o701));
        assert!(!world_accessible(0o600, 0o755));
        assert!(!world_accessible(0o640, 0o755));
        assert!(!world_accessible(0o644, 0o750));
    }
}
