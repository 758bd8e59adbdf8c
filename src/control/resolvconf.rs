//! `DNS =` of a wg-quick config, handed to resolvconf as wg-quick does: addresses become name
//! servers, anything else search domains, in an exclusive record of highest priority that is
//! removed again on `down`. Like wg-quick, it needs resolvconf (openresolv or Debian's
//! resolvconf) and fails without it.

use super::cmd::{run, run_with_input};

/// The name of the interface's record: the interface name, behind the first `NAME*` pattern of
/// Debian resolvconf's interface-order file if there is one (so that it is ordered like other
/// tunnels' records), as wg-quick names it.
fn record(ifname: &str) -> String {
    let order = std::fs::read_to_string("/etc/resolvconf/interface-order").unwrap_or_default();
    let prefix = order.lines().map(str::trim).find_map(|l| {
        let name = l.strip_suffix('*')?;
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then_some(name)
    });
    match prefix {
        Some(p) => format!("{p}.{ifname}"),
        None => ifname.to_string(),
    }
}

/// wg-quick's rule: an entry of digits and dots, or one with a colon (IPv6, a zone allowed), is
/// a name server; anything else a search domain.
fn is_server(entry: &str) -> bool {
    entry.contains(':') || (!entry.is_empty() && entry.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Adds the record for `dns` (does nothing if `dns` is empty).
pub fn set(dns: &[String], ifname: &str) -> Result<(), String> {
    if dns.is_empty() {
        return Ok(());
    }
    let (servers, search): (Vec<&String>, Vec<&String>) = dns.iter().partition(|d| is_server(d));
    let mut text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
    if !search.is_empty() {
        text += &format!("search {}\n", search.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    }
    run_with_input("resolvconf", &["-a", &record(ifname), "-m", "0", "-x"], Some(&text))
        .map_err(|e| format!("DNS= needs resolvconf (Debian: openresolv or resolvconf): {e}"))
}

/// Removes the record (if the config has DNS entries; failures are ignored, as in wg-quick).
pub fn unset(dns: &[String], ifname: &str) {
    if !dns.is_empty() {
        let _ = run("resolvconf", &["-d", &record(ifname), "-f"]);
    }
}

#[cfg(test)]
mod tests {
    use super::is_server;

    #[test]
    fn servers_and_search_domains_are_told_apart_as_wg_quick_does() {
        for server in ["10.0.0.53", "fd00::53", "fe80::1%eth0", "::1"] {
            assert!(is_server(server), "{server}");
        }
        for domain in ["corp.example", "lab", "10.in-addr.arpa", "a1.example"] {
            assert!(!is_server(domain), "{domain}");
        }
    }
}
