//! A lab's topology file (TOML) and the plan made from it: which namespaces, which veth links
//! with which addresses, which nodes run a tunnel to which, and with which allowed IPs and
//! endpoints. Pure: no system calls, so a topology can be checked and tested on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The listen port of a node's tunnel unless it names one.
pub const DEFAULT_PORT: u16 = 51820;
/// The MTU of a node's tunnel interface unless it names one (wireguard-go's).
pub const DEFAULT_MTU: u32 = 1420;

/// A lab as written in its file. See docs/lab.md for every field.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The lab's name (namespaces are called NAME-NODE); the file name without `.toml` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Environment for every node's daemon (`LOG_LEVEL`, `VEIL_REKEY_AFTER_TIME_MS`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The nodes, one network namespace each.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// veth links between two nodes each: the underlay.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// WireGuard tunnels between two nodes each, over a link that joins them.
    #[serde(default)]
    pub tunnels: Vec<TunnelSpec>,
}

/// A node: a network namespace, and a tunnel daemon if it is in a tunnel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Unique in the lab; letters, digits, `-` and `_`.
    pub name: String,
    /// The tunnel interface's name; `wg-NAME` if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Tunnel addresses (CIDR); 10.100.0.N/24 and fd00:100::N/64 for the Nth node if absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<IpNet>,
    /// The tunnel's UDP port; 51820 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// The tunnel interface's MTU; 1420 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Networks behind this node: each is put on its loopback (so every address in it answers)
    /// and routed to it through the tunnels of its peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<IpNet>,
    /// Forward IPv4 and IPv6 between its interfaces (a router, a hub, a site's gateway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward: bool,
    /// A default route through this address (of a node on one of its links), e.g. for a host
    /// on a LAN behind a gateway node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// More environment for this node's daemon.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Another daemon serving the same UAPI socket, `{if}` standing for the interface name
    /// (e.g. `["wireguard-go", "-f", "{if}"]`); veil itself if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Vec<String>>,
    /// Text the daemon writes to its log once it can be configured: the lab waits for it (up to
    /// 10 s) before its first UAPI connection. For a daemon that opens its UAPI socket before it
    /// can serve it: gotatun 0.10 aborts its start when a client connects in between (its
    /// `DeviceBuilder::build` panics, "lock is not taken"); it logs "started successfully" once
    /// past that point. Absent: the socket accepting is enough (veil, wireguard-go, boringtun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
}

/// A veth link between two nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The two nodes it joins.
    pub nodes: [String; 2],
    /// Their addresses on it (CIDR, in the order of `nodes`); 10.200.L.1/24 and 10.200.L.2/24
    /// for the Lth link if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<[IpNet; 2]>,
    /// The link's MTU (both ends); the kernel's 1500 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A tunnel between two nodes: each is a peer of the other.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelSpec {
    /// The two nodes.
    pub nodes: [String; 2],
    /// A fresh preshared key for the pair.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub psk: bool,
    /// `persistent_keepalive_interval` on both sides, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
    /// More networks each side reaches through the other: the first list is added to the
    /// allowed IPs of `nodes[0]`'s peer `nodes[1]` (and routed into the tunnel), the second the
    /// other way round. E.g. a spoke reaching the other spokes through its hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<[Vec<IpNet>; 2]>,
    /// Only this node knows the other's endpoint (so only it can start the handshake, and the
    /// other learns its endpoint from it); both know each other's if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialer: Option<String>,
    /// Where each side sends to the other, as the UAPI's `endpoint=` takes it (`HOST:PORT`,
    /// `[V6%ZONE]:PORT`): the first for `nodes[0]`, the second for `nodes[1]`; `""` for a side
    /// that does not know it. For a peer reached through a relay on a third node, or at a
    /// link-local address with its zone; then no link need join the two nodes. Not with
    /// `dialer`. Without it: the other's address on a link that joins them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<[String; 2]>,
}

/// A topology turned into concrete names, addresses and peers.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The lab's name.
    pub name: String,
    /// The nodes, in the order of the file.
    pub nodes: Vec<PlannedNode>,
    /// The veth links.
    pub links: Vec<PlannedLink>,
    /// Whether each tunnel (by index) has a preshared key.
    pub psks: Vec<bool>,
}

/// One node of a [`Plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedNode {
    /// The node's name.
    pub name: String,
    /// The tunnel, if the node is in one.
    pub tunnel: Option<PlannedTunnel>,
    /// Its networks on loopback.
    pub subnets: Vec<IpNet>,
    /// Whether it forwards.
    pub forward: bool,
    /// Its default route's gateway.
    pub gateway: Option<IpAddr>,
}

/// A node's tunnel interface and its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTunnel {
    /// The tunnel interface's name.
    pub ifname: String,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
    /// Its UDP port.
    pub listen_port: u16,
    /// Its MTU.
    pub mtu: u32,
    /// The daemon's program and arguments (`{if}` already replaced); None: veil.
    pub daemon: Option<Vec<String>>,
    /// The daemon's environment (the lab's, then the node's).
    pub env: BTreeMap<String, String>,
    /// What the daemon logs once it can be configured ([`NodeSpec::ready`]).
    pub ready: Option<String>,
    /// One per tunnel the node is in.
    pub peers: Vec<PlannedPeer>,
}

/// A peer of a node's tunnel.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPeer {
    /// The peer's node (index in [`Plan::nodes`]).
    pub node: usize,
    /// Where to send to the peer (as the UAPI's `endpoint=` takes it), if this side knows it.
    pub endpoint: Option<String>,
    /// The peer's tunnel addresses as host prefixes, then its subnets, then the tunnel's extra
    /// allowed IPs; each is routed into the tunnel.
    pub allowed_ips: Vec<IpNet>,
    /// The tunnel's index in [`Plan::psks`], where it has a psk.
    pub psk: Option<usize>,
    /// `persistent_keepalive_interval`, seconds.
    pub keepalive: Option<u16>,
}

/// A veth link of a [`Plan`]: `ends[i]` is in node `nodes[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedLink {
    /// The two nodes (indices in [`Plan::nodes`]).
    pub nodes: [usize; 2],
    /// Interface names, each in its own node: the other node's name where it fits.
    pub ends: [String; 2],
    /// The two ends' addresses.
    pub addresses: [IpNet; 2],
    /// The link's MTU, if not the kernel's default.
    pub mtu: Option<u32>,
}

impl Topology {
    /// Parses a topology file's text.
    pub fn from_toml(text: &str) -> Result<Topology, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads a topology file; the lab is named after the file unless it names itself.
    pub fn from_file(path: &std::path::Path) -> Result<Topology, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut t = Topology::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if t.name.is_none() {
            t.name = path.file_stem().and_then(|s| s.to_str()).map(str::to_string);
        }
        Ok(t)
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("lab")
    }

    /// Checks the topology and works out every name, address and peer.
    pub fn plan(&self) -> Result<Plan, String> {
        let name = self.name().to_string();
        check_name("lab", &name)?;
        let mut index = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            check_name("node", &n.name)?;
            if index.insert(n.name.as_str(), i).is_some() {
                return Err(format!("node {:?} is declared twice", n.name));
            }
        }
        if self.nodes.len() > 250 {
            return Err("at most 250 nodes".into());
        }
        let find = |what: &str, name: &str| -> Result<usize, String> {
            index.get(name).copied().ok_or_else(|| format!("{what} names {name:?}, which is not a node"))
        };

        let mut links = Vec::new();
        let mut used: Vec<BTreeSet<String>> = vec![BTreeSet::new(); self.nodes.len()];
        for (l, link) in self.links.iter().enumerate() {
            let what = format!("link {} ({} - {})", l + 1, link.nodes[0], link.nodes[1]);
            let ends = [find(&what, &link.nodes[0])?, find(&what, &link.nodes[1])?];
            if ends[0] == ends[1] {
                return Err(format!("{what}: joins a node to itself"));
            }
            if l > 255 && link.addresses.is_none() {
                return Err(format!("{what}: give its addresses (only 256 links are numbered)"));
            }
            let addresses = match link.addresses {
                Some(a) => a,
                None => {
                    let net = |h| IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 200, l as u8, h)), 24).unwrap();
                    [net(1), net(2)]
                }
            };
            let mut names = [String::new(), String::new()];
            for side in 0..2 {
                let other = &self.nodes[ends[1 - side]].name;
                let name = if other.len() <= 15 && !used[ends[side]].contains(other) {
                    other.clone()
                } else {
                    format!("veth{l}")
                };
                used[ends[side]].insert(name.clone());
                names[side] = name;
            }
            links.push(PlannedLink { nodes: ends, ends: names, addresses, mtu: link.mtu });
        }

        let mut nodes: Vec<PlannedNode> = self
            .nodes
            .iter()
            .map(|n| PlannedNode {
                name: n.name.clone(),
                tunnel: None,
                subnets: n.subnets.clone(),
                forward: n.forward,
                gateway: n.gateway,
            })
            .collect();
        let mut psks = Vec::new();
        for (t, tunnel) in self.tunnels.iter().enumerate() {
            let what = format!("tunnel {} ({} - {})", t + 1, tunnel.nodes[0], tunnel.nodes[1]);
            let ends = [find(&what, &tunnel.nodes[0])?, find(&what, &tunnel.nodes[1])?];
            if ends[0] == ends[1] {
                return Err(format!("{what}: joins a node to itself"));
            }
            let dialer = tunnel.dialer.as_deref().map(|d| find(&what, d)).transpose()?;
            if dialer.is_some_and(|d| !ends.contains(&d)) {
                return Err(format!("{what}: the dialer must be one of its two nodes"));
            }
            if let Some(e) = &tunnel.endpoints {
                if dialer.is_some() {
                    return Err(format!("{what}: give either `dialer` or `endpoints`"));
                }
                if let Some(bad) = e.iter().find(|e| e.chars().any(|c| c.is_whitespace() || c.is_control())) {
                    return Err(format!("{what}: endpoint {bad:?} has a space or control character"));
                }
            }
            psks.push(tunnel.psk);
            for side in 0..2 {
                let (me, peer) = (ends[side], ends[1 - side]);
                for n in [me, peer] {
                    if nodes[n].tunnel.is_none() {
                        nodes[n].tunnel = Some(self.tunnel_of(n)?);
                    }
                }
                let endpoint = if let Some(e) = &tunnel.endpoints {
                    Some(e[side].clone()).filter(|e| !e.is_empty())
                } else if dialer.is_none_or(|d| d == me) {
                    let link = links
                        .iter()
                        .find(|l| l.nodes == [me, peer] || l.nodes == [peer, me])
                        .ok_or_else(|| format!("{what}: no link joins the two nodes (the lab does not route)"))?;
                    let at = if link.nodes[0] == peer { 0 } else { 1 };
                    let port = self.nodes[peer].listen_port.unwrap_or(DEFAULT_PORT);
                    Some(SocketAddr::new(link.addresses[at].addr(), port).to_string())
                } else {
                    None
                };
                let peer_tunnel = nodes[peer].tunnel.as_ref().expect("set above");
                let mut allowed_ips: Vec<IpNet> = peer_tunnel
                    .addresses
                    .iter()
                    .map(|a| IpNet::new(a.addr(), if a.addr().is_ipv4() { 32 } else { 128 }).unwrap())
                    .collect();
                allowed_ips.extend(self.nodes[peer].subnets.iter().map(IpNet::trunc));
                if let Some(extra) = &tunnel.allowed_ips {
                    allowed_ips.extend(extra[side].iter().map(IpNet::trunc));
                }
                let mine = nodes[me].tunnel.as_mut().expect("set above");
                if mine.peers.iter().any(|p| p.node == peer) {
                    return Err(format!("{what}: the two nodes already have a tunnel"));
                }
                mine.peers.push(PlannedPeer {
                    node: peer,
                    endpoint,
                    allowed_ips,
                    psk: tunnel.psk.then_some(t),
                    keepalive: tunnel.keepalive,
                });
            }
        }
        let mut ifnames = BTreeMap::new();
        for n in &nodes {
            if let Some(t) = &n.tunnel
                && let Some(other) = ifnames.insert(t.ifname.clone(), n.name.clone())
            {
                return Err(format!("nodes {other:?} and {:?} have the same interface name {}", n.name, t.ifname));
            }
        }
        Ok(Plan { name, nodes, links, psks })
    }

    /// Node `n`'s tunnel, without peers yet.
    fn tunnel_of(&self, n: usize) -> Result<PlannedTunnel, String> {
        let spec = &self.nodes[n];
        let ifname = spec.ifname.clone().unwrap_or_else(|| format!("wg-{}", spec.name));
        crate::control::daemon::check_ifname(&ifname)
            .map_err(|e| format!("node {:?}: {e} (give it a shorter `ifname`)", spec.name))?;
        let addresses = if spec.address.is_empty() {
            let k = n as u8 + 1;
            vec![
                IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 100, 0, k)), 24).unwrap(),
                IpNet::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, u16::from(k))), 64).unwrap(),
            ]
        } else {
            spec.address.clone()
        };
        let daemon = spec.daemon.as_ref().map(|d| d.iter().map(|w| w.replace("{if}", &ifname)).collect());
        if daemon.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("node {:?}: `daemon` is empty", spec.name));
        }
        if spec.ready.as_deref() == Some("") {
            return Err(format!("node {:?}: `ready` is empty", spec.name));
        }
        let mut env = self.env.clone();
        env.extend(spec.env.clone());
        Ok(PlannedTunnel {
            ifname,
            addresses,
            listen_port: spec.listen_port.unwrap_or(DEFAULT_PORT),
            mtu: spec.mtu.unwrap_or(DEFAULT_MTU),
            daemon,
            env,
            ready: spec.ready.clone(),
            peers: Vec::new(),
        })
    }
}

/// Lab and node names: 1 to 32 letters, digits, `-` or `_` (they become file names).
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok { Ok(()) } else { Err(format!("{what} name {name:?}: 1 to 32 letters, digits, '-' or '_'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
name = "t"
[[nodes]]
name = "a"
subnets = ["192.168.1.0/24"]
[[nodes]]
name = "b"
[[links]]
nodes = ["a", "b"]
[[tunnels]]
nodes = ["a", "b"]
psk = true
dialer = "a"
"#;

    #[test]
    fn two_nodes_plan_addresses_peers_and_endpoints() {
        let plan = Topology::from_toml(TWO).unwrap().plan().unwrap();
        assert_eq!(plan.links[0].ends, ["b".to_string(), "a".to_string()]);
        assert_eq!(plan.links[0].addresses[1].to_string(), "10.200.0.2/24");
        let a = plan.nodes[0].tunnel.as_ref().unwrap();
        let b = plan.nodes[1].tunnel.as_ref().unwrap();
        assert_eq!(a.ifname, "wg-a");
        assert_eq!(a.addresses[0].to_string(), "10.100.0.1/24");
        assert_eq!(b.addresses[1].to_string(), "fd00:100::2/64");
        assert_eq!(a.peers[0].endpoint.as_deref(), Some("10.200.0.2:51820"));
        assert_eq!(b.peers[0].endpoint, None, "only the dialer knows the endpoint");
        let allowed: Vec<String> = b.peers[0].allowed_ips.iter().map(ToString::to_string).collect();
        assert_eq!(allowed, ["10.100.0.1/32", "fd00:100::1/128", "192.168.1.0/24"]);
        assert_eq!((a.peers[0].psk, plan.psks.clone()), (Some(0), vec![true]));
    }

    #[test]
    fn a_daemons_ready_text_reaches_the_plan_and_may_not_be_empty() {
        let with = |ready: &str| {
            TWO.replace(
                "name = \"b\"\n",
                &format!("name = \"b\"\ndaemon = [\"gotatun\", \"-f\", \"{{if}}\"]\nready = \"{ready}\"\n"),
            )
        };
        let plan = Topology::from_toml(&with("started successfully")).unwrap().plan().unwrap();
        let (a, b) = (plan.nodes[0].tunnel.as_ref().unwrap(), plan.nodes[1].tunnel.as_ref().unwrap());
        assert_eq!((a.ready.as_deref(), b.ready.as_deref()), (None, Some("started successfully")));
        assert_eq!(b.daemon.as_deref(), Some(&["gotatun".to_string(), "-f".into(), "wg-b".into()][..]));
        let err = Topology::from_toml(&with("")).unwrap().plan().unwrap_err();
        assert!(err.contains("`ready` is empty"), "{err}");
    }

    #[test]
    fn given_endpoints_need_no_link_and_may_leave_a_side_without() {
        let text = "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"r\"\n[[nodes]]\nname = \"b\"\n\
                    [[links]]\nnodes = [\"a\", \"r\"]\n[[links]]\nnodes = [\"b\", \"r\"]\n\
                    [[tunnels]]\nnodes = [\"a\", \"b\"]\nendpoints = [\"10.200.0.2:40000\", \"\"]\n";
        let plan = Topology::from_toml(text).unwrap().plan().unwrap();
        let peer = |n: usize| plan.nodes[n].tunnel.as_ref().unwrap().peers[0].endpoint.clone();
        assert_eq!((peer(0).as_deref(), peer(2)), (Some("10.200.0.2:40000"), None));
        assert!(plan.nodes[1].tunnel.is_none(), "the relay's node is in no tunnel");

        let mut t = Topology::from_toml(text).unwrap();
        t.tunnels[0].dialer = Some("a".into());
        assert!(t.plan().unwrap_err().contains("either `dialer` or `endpoints`"));
        t.tunnels[0].dialer = None;
        t.tunnels[0].endpoints = Some(["10.200.0.2:40000\nprivate_key=00".into(), String::new()]);
        assert!(t.plan().unwrap_err().contains("control character"));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| Topology::from_toml(text).and_then(|t| t.plan()).unwrap_err();
        assert!(
            err("[[nodes]]\nname = \"a\"\n[[links]]\nnodes = [\"a\", \"z\"]").contains("\"z\", which is not a node")
        );
        let no_link = "[[nodes]]\nname = \"a\"\n[[nodes]]\nname = \"b\"\n[[tunnels]]\nnodes = [\"a\", \"b\"]";
        assert!(err(no_link).contains("no link joins"));
        assert!(err("[[nodes]]\nname = \"a b\"").contains("node name"));
        assert!(err("[[nodes]]\nname = \"a\"\ncolour = 1").contains("unknown field"));
    }

    #[test]
    fn the_examples_plan() {
        for (file, nodes, links) in [("two-sites.toml", 2, 1), ("hub-and-spoke.toml", 4, 3), ("mesh-8.toml", 8, 28)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab").join(file);
            let t = Topology::from_file(&path).unwrap();
            let plan = t.plan().unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!((plan.nodes.len(), plan.links.len()), (nodes, links), "{file}");
        }
    }
}
