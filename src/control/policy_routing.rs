//! A default route through the tunnel (an allowed IP of /0 with `Table = auto`), set up as
//! wg-quick does so that both can take down what the other brought up:
//!
//! - a routing table T (the interface's fwmark if it has one, else the first table from 51820
//!   on with no routes in either family, which then becomes the fwmark) whose default route is
//!   the tunnel;
//! - the rules `not fwmark T lookup T` (everything but the tunnel's own UDP packets goes to T)
//!   and `lookup main suppress_prefixlength 0` (the main table still wins with anything more
//!   specific than its default route);
//! - firewall rules in an nftables table `wg-quick-IFNAME` (or iptables rules commented
//!   `wg-quick(8) rule for IFNAME` where nft is missing): packets for the tunnel's addresses that
//!   arrive on another interface are dropped, and the fwmark of the tunnel's UDP flows is kept
//!   in conntrack so that their replies pass reverse-path filtering (`src_valid_mark`).

use super::cmd::{Interrupts, addresses, on_path, output, run, run_with_input, say};

/// The first table (and fwmark) tried for a default route.
pub const FIRST_TABLE: u32 = 51820;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: &ipnet::IpNet) -> Family {
        if matches!(net, ipnet::IpNet::V4(_)) { Family::V4 } else { Family::V6 }
    }
    /// The `ip` option for this family.
    pub fn flag(self) -> &'static str {
        if self == Family::V4 { "-4" } else { "-6" }
    }
    /// The nftables family.
    fn nft(self) -> &'static str {
        if self == Family::V4 { "ip" } else { "ip6" }
    }
    fn iptables(self) -> &'static str {
        if self == Family::V4 { "iptables" } else { "ip6tables" }
    }
}

/// Serializes the setting up of default routes between `veil up`s (from choosing a table to
/// adding its rules), so that two at once cannot pick the same table. Held until dropped. The
/// wait ends early with an error once `signals` caught one.
pub fn lock(signals: &Interrupts) -> Result<std::fs::File, String> {
    let dir = std::path::Path::new(super::daemon::SOCKET_DIR);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(".veil-policy-routing.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                signals.check()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
}

/// The table for a default route: the interface's fwmark if it has one, else the first table
/// from 51820 on that holds no route of either family.
pub fn choose_table(fwmark: Option<u32>) -> u32 {
    if let Some(mark) = fwmark.filter(|&m| m != 0) {
        return mark;
    }
    let mut table = FIRST_TABLE;
    while [Family::V4, Family::V6]
        .iter()
        .any(|f| !output("ip", &[f.flag(), "route", "show", "table", &table.to_string()]).trim().is_empty())
    {
        table += 1;
    }
    table
}

/// Routes `net` (a /0) through `ifname` with table `table`, its rules and firewall rules. On
/// failure nothing of this family is left: the route comes first and fails where the table is
/// in use (so the table's rules are someone else's and stay), and a later failure removes the
/// rules this call added.
pub fn add(ifname: &str, net: &ipnet::IpNet, table: u32) -> Result<(), String> {
    let f = Family::of(net);
    let t = table.to_string();
    run("ip", &[f.flag(), "route", "add", &net.to_string(), "dev", ifname, "table", &t])?;
    let rest = (|| {
        run("ip", &[f.flag(), "rule", "add", "not", "fwmark", &t, "table", &t])?;
        run("ip", &[f.flag(), "rule", "add", "table", "main", "suppress_prefixlength", "0"])?;
        if f == Family::V4 {
            // Replies to the tunnel's marked UDP packets must pass reverse-path filtering. As
            // wg-quick, written only when it is not 1 already: a container often has /proc/sys
            // read-only, with the value set by its host.
            const SRC_VALID_MARK: &str = "/proc/sys/net/ipv4/conf/all/src_valid_mark";
            if std::fs::read_to_string(SRC_VALID_MARK).map(|v| v.trim() != "1").unwrap_or(true) {
                say!("[#] sysctl -q net.ipv4.conf.all.src_valid_mark=1");
                std::fs::write(SRC_VALID_MARK, "1").map_err(|e| {
                    format!(
                        "cannot set net.ipv4.conf.all.src_valid_mark ({e}); a /0 tunnel needs it: set it to 1 \
                         (on a container's host if /proc/sys is read-only here)"
                    )
                })?;
            }
        }
        add_firewall(ifname, f, table)
    })();
    if rest.is_err() {
        remove_rules(f, table);
        let _ = run("ip", &[f.flag(), "route", "delete", &net.to_string(), "dev", ifname, "table", &t]);
    }
    rest
}

fn nft_table(ifname: &str) -> String {
    format!("wg-quick-{ifname}")
}

fn comment(ifname: &str) -> String {
    format!("wg-quick(8) rule for {ifname}")
}

fn add_firewall(ifname: &str, f: Family, table: u32) -> Result<(), String> {
    let addrs: Vec<std::net::IpAddr> = addresses(ifname, &[f.flag()], &[]).iter().map(|n| n.addr()).collect();
    if on_path("nft") {
        let (pf, t) = (f.nft(), nft_table(ifname));
        let mut script = format!("add table {pf} {t}\n");
        for (chain, hook, priority) in
            [("preraw", "prerouting", -300), ("premangle", "prerouting", -150), ("postmangle", "postrouting", -150)]
        {
            script += &format!("add chain {pf} {t} {chain} {{ type filter hook {hook} priority {priority}; }}\n");
        }
        for a in &addrs {
            script += &format!(
                "add rule {pf} {t} preraw iifname != \"{ifname}\" {pf} daddr {a} fib saddr type != local drop\n"
            );
        }
        script += &format!("add rule {pf} {t} postmangle meta l4proto udp mark {table} ct mark set mark\n");
        script += &format!("add rule {pf} {t} premangle meta l4proto udp meta mark set ct mark\n");
        run_with_input("nft", &["-f", "-"], Some(&script))
    } else {
        let c = comment(ifname);
        let mut script = String::from("*raw\n");
        for a in &addrs {
            script += &format!(
                "-I PREROUTING ! -i {ifname} -d {a} -m addrtype ! --src-type LOCAL -j DROP -m comment --comment \"{c}\"\n"
            );
        }
        script += "COMMIT\n*mangle\n";
        script += &format!(
            "-I POSTROUTING -m mark --mark {table} -p udp -j CONNMARK --save-mark -m comment --comment \"{c}\"\n"
        );
        script += &format!("-I PREROUTING -p udp -j CONNMARK --restore-mark -m comment --comment \"{c}\"\n");
        script += "COMMIT\n";
        run_with_input(&format!("{}-restore", f.iptables()), &["-n"], Some(&script))
            .map_err(|e| format!("the firewall rules for the default route need nft or iptables: {e}"))
    }
}

/// Removes `ifname`'s firewall rules (nftables tables and iptables rules), whoever added them.
pub fn remove_firewall(ifname: &str) {
    if on_path("nft") {
        let name = nft_table(ifname);
        let script: String = output("nft", &["list", "tables"])
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some(name.as_str()))
            .map(|l| format!("delete {}\n", l.trim()))
            .collect();
        if !script.is_empty() {
            let _ = run_with_input("nft", &["-f", "-"], Some(&script));
        }
    }
    let marker = format!("-m comment --comment \"{}\"", comment(ifname));
    for f in [Family::V4, Family::V6] {
        if !on_path(&format!("{}-save", f.iptables())) {
            continue;
        }
        let mut script = String::new();
        let mut found = false;
        for line in output(&format!("{}-save", f.iptables()), &[]).lines() {
            if line.starts_with('*') || line == "COMMIT" {
                script += &format!("{line}\n");
            } else if let Some(rule) = line.strip_prefix("-A ").filter(|r| r.contains(&marker)) {
                script += &format!("-D {rule}\n");
                found = true;
            }
        }
        if found {
            let _ = run_with_input(&format!("{}-restore", f.iptables()), &["-n"], Some(&script));
        }
    }
}

/// The rules of family `f` as (preference, text after it).
fn rules(f: Family) -> Vec<(u32, String)> {
    output("ip", &[f.flag(), "rule", "show"])
        .lines()
        .filter_map(|l| {
            let (pref, rest) = l.split_once(':')?;
            Some((pref.trim().parse().ok()?, rest.trim().to_string()))
        })
        .collect()
}

/// True if a rule looks up `table`.
fn looks_up(rule: &str, table: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words.windows(2).any(|w| w[0] == "lookup" && w[1] == table)
}

fn is_suppress(rule: &str) -> bool {
    looks_up(rule, "main") && rule.contains("suppress_prefixlength 0")
}

/// A rule of some tunnel's default route: `not from all fwmark M lookup T`.
fn is_tunnel_rule(rule: &str) -> bool {
    rule.starts_with("not from all fwmark") && rule.contains("lookup")
}

fn delete_pref(f: Family, pref: u32) -> bool {
    run("ip", &[f.flag(), "rule", "delete", "pref", &pref.to_string()]).is_ok()
}

/// Removes the rules of family `f` that send traffic to `table`, each with the
/// `suppress_prefixlength 0` rule added right before it (one preference lower). Those rules are
/// alike for every tunnel with a default route, so they are told apart by position: deleting
/// "a" suppress rule would take the one in front of the newest tunnel. Suppress rules left
/// over beyond one per remaining tunnel (from a wg-quick that added them in another order, say)
/// go too, except those in front of a remaining tunnel's rule. (wg-quick removes every
/// suppress rule, which breaks the other tunnels.)
fn remove_rules(f: Family, table: u32) {
    let t = table.to_string();
    // Bounded: a rule that cannot be deleted must not loop forever.
    for _ in 0..64 {
        let now = rules(f);
        let Some(&(pref, _)) = now.iter().find(|(_, r)| is_tunnel_rule(r) && looks_up(r, &t)) else { break };
        if now.iter().any(|(p, r)| *p + 1 == pref && is_suppress(r)) {
            delete_pref(f, pref - 1);
        }
        if !delete_pref(f, pref) {
            break;
        }
    }
    for _ in 0..64 {
        let now = rules(f);
        let tunnels: Vec<u32> = now.iter().filter(|(_, r)| is_tunnel_rule(r)).map(|(p, _)| *p).collect();
        let suppress: Vec<u32> = now.iter().filter(|(_, r)| is_suppress(r)).map(|(p, _)| *p).collect();
        if suppress.len() <= tunnels.len() {
            break;
        }
        let Some(&spare) = suppress.iter().find(|&&p| !tunnels.contains(&(p + 1))) else { break };
        if !delete_pref(f, spare) {
            break;
        }
    }
}

/// Removes the default routes' rules of `table` in `families`, and `ifname`'s firewall rules.
pub fn remove(ifname: &str, table: u32, families: &[Family]) {
    for &f in families {
        remove_rules(f, table);
    }
    remove_firewall(ifname);
}
