//! `veil up CONFIG-or-NAME` and `veil down CONFIG-or-NAME`: what wg-quick does with a wg-quick
//! configuration file, with veil as the implementation and no wg-quick needed.
//!
//! Up: PreUp hooks, start the daemon, configure it over its socket, addresses, MTU, link up,
//! routes for the allowed IPs (a /0 gets wg-quick's fwmark policy routing), PostUp hooks. Any
//! failure removes the interface again, so nothing is left half-configured. Down: PreDown
//! hooks, policy rules removed, interface deleted (the daemon exits with it), PostDown hooks.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::config::{self, Config};
use super::daemon::{check_ifname, socket_path};
use super::show::uapi_request;

/// The routing table and fwmark wg-quick uses for a default route when Table is not given.
const DEFAULT_TABLE: u32 = 51820;

/// Finds the config: a path as given, else /etc/wireguard/NAME.conf. Returns it and the
/// interface name (the file's stem).
pub fn locate(arg: &str) -> Result<(PathBuf, String), String> {
    let given = Path::new(arg);
    let path = if given.exists() || arg.contains('/') || arg.ends_with(".conf") {
        given.to_path_buf()
    } else {
        Path::new("/etc/wireguard").join(format!("{arg}.conf"))
    };
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: cannot take an interface name from this path", path.display()))?
        .to_string();
    check_ifname(&name).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, name))
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("[#] {cmd} {}", args.join(" "));
    let out = Command::new(cmd).args(args).stdin(Stdio::null()).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{cmd} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn hooks(list: &[String], ifname: &str) -> Result<(), String> {
    for h in list {
        let cmd = h.replace("%i", ifname);
        eprintln!("[#] {cmd}");
        let status = Command::new("bash").arg("-c").arg(&cmd).status().map_err(|e| format!("hook: {e}"))?;
        if !status.success() {
            return Err(format!("hook `{cmd}` failed with {status}"));
        }
    }
    Ok(())
}

fn link_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve endpoint {endpoint:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("endpoint {endpoint:?} resolves to no address"))
}

fn start_daemon(ifname: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    eprintln!("[#] {} {ifname}", exe.display());
    let status = Command::new(&exe).arg(ifname).stdin(Stdio::null()).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the daemon for {ifname} failed to start ({status})"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket_path(ifname).exists() {
        if Instant::now() > deadline {
            return Err(format!("{} did not appear", socket_path(ifname).display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn table_of(cfg: &Config) -> Option<String> {
    match cfg.interface.table.as_deref() {
        Some("off") => None,
        Some("auto") | None => Some("auto".into()),
        Some(t) => Some(t.to_string()),
    }
}

fn family(net: &ipnet::IpNet) -> &'static str {
    if matches!(net, ipnet::IpNet::V4(_)) { "-4" } else { "-6" }
}

fn add_default_route(ifname: &str, net: &ipnet::IpNet, table: u32) -> Result<(), String> {
    let t = table.to_string();
    let f = family(net);
    run("ip", &[f, "route", "add", &net.to_string(), "dev", ifname, "table", &t])?;
    run("ip", &[f, "rule", "add", "not", "fwmark", &t, "table", &t])?;
    run("ip", &[f, "rule", "add", "table", "main", "suppress_prefixlength", "0"])?;
    if f == "-4" {
        let _ = std::fs::write("/proc/sys/net/ipv4/conf/all/src_valid_mark", "1");
    }
    Ok(())
}

fn bring_up(cfg: &Config, ifname: &str) -> Result<(), String> {
    start_daemon(ifname)?;
    let set = cfg.to_uapi_set(&|e| resolve(e)).map_err(|e| e.to_string())?;
    eprintln!("[#] configure {ifname} over its socket");
    match uapi_request(ifname, &format!("set=1\n{set}\n"))? {
        0 => {}
        errno => return Err(format!("{ifname} refused the configuration (errno {errno})")),
    }
    for addr in &cfg.interface.addresses {
        run("ip", &[family(addr), "address", "add", &addr.to_string(), "dev", ifname])?;
    }
    let mtu = cfg.interface.mtu.unwrap_or(1420).to_string();
    run("ip", &["link", "set", "mtu", &mtu, "up", "dev", ifname])?;
    if !cfg.interface.dns.is_empty() {
        eprintln!("[!] DNS= is not applied by veil (no resolvconf integration); set it by hand if needed");
    }
    if let Some(table) = table_of(cfg) {
        let mut nets: Vec<ipnet::IpNet> = cfg.peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
        nets.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
        nets.dedup();
        for net in nets {
            if net.prefix_len() == 0 && table == "auto" {
                let fw = cfg.interface.fwmark.filter(|&m| m != 0).unwrap_or(DEFAULT_TABLE);
                if cfg.interface.fwmark.filter(|&m| m != 0).is_none() {
                    match uapi_request(ifname, &format!("set=1\nfwmark={fw}\n\n"))? {
                        0 => {}
                        e => return Err(format!("setting fwmark failed (errno {e})")),
                    }
                }
                add_default_route(ifname, &net, fw)?;
            } else if table == "auto" {
                run("ip", &[family(&net), "route", "replace", &net.to_string(), "dev", ifname])?;
            } else {
                run("ip", &[family(&net), "route", "replace", &net.to_string(), "dev", ifname, "table", &table])?;
            }
        }
    }
    Ok(())
}

/// `veil up`.
pub fn up(arg: &str) -> Result<(), String> {
    let (path, ifname) = locate(arg)?;
    let cfg = config::parse_file(&path).map_err(|e| e.to_string())?;
    if link_exists(&ifname) {
        return Err(format!("{ifname} already exists"));
    }
    hooks(&cfg.interface.pre_up, &ifname)?;
    if let Err(e) = bring_up(&cfg, &ifname) {
        eprintln!("[!] {e}; removing {ifname}");
        teardown(&cfg, &ifname);
        return Err(e);
    }
    hooks(&cfg.interface.post_up, &ifname)?;
    Ok(())
}

fn remove_policy_rules(cfg: &Config) {
    let fw = cfg.interface.fwmark.filter(|&m| m != 0).unwrap_or(DEFAULT_TABLE).to_string();
    for f in ["-4", "-6"] {
        for _ in 0..64 {
            let rules = output("ip", &[f, "rule", "show"]);
            let ours = rules.lines().any(|l| l.contains(&format!("lookup {fw}")));
            let suppress = rules.lines().any(|l| l.contains("from all lookup main suppress_prefixlength 0"));
            if !ours && !suppress {
                break;
            }
            if ours {
                let _ = run("ip", &[f, "rule", "delete", "table", &fw]);
            }
            if suppress {
                let _ = run("ip", &[f, "rule", "delete", "table", "main", "suppress_prefixlength", "0"]);
            }
        }
    }
}

fn teardown(cfg: &Config, ifname: &str) {
    let has_default = cfg.peers.iter().any(|p| p.allowed_ips.iter().any(|n| n.prefix_len() == 0));
    if has_default && table_of(cfg).as_deref() == Some("auto") {
        remove_policy_rules(cfg);
    }
    if link_exists(ifname) {
        let _ = run("ip", &["link", "delete", "dev", ifname]);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while socket_path(ifname).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `veil down`.
pub fn down(arg: &str) -> Result<(), String> {
    let (path, ifname) = locate(arg)?;
    let cfg = config::parse_file(&path).map_err(|e| e.to_string())?;
    if !link_exists(&ifname) {
        return Err(format!("{ifname} is not a running interface"));
    }
    hooks(&cfg.interface.pre_down, &ifname)?;
    teardown(&cfg, &ifname);
    hooks(&cfg.interface.post_down, &ifname)?;
    Ok(())
}
