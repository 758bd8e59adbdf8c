//! A netns lab for tests: a [`Topology`] (nodes, veth links, tunnels, subnets) becomes network
//! namespaces, links with addresses, one tunnel daemon per node that is in a tunnel, with fresh
//! keys, its peers, addresses and routes, all made directly (unshare/setns, rtnetlink, the UAPI
//! socket; no `ip` or `wg` run). [`Lab::down`], or dropping the [`Lab`], removes everything.
//!
//! The process that calls [`Lab::up`] owns the lab. A guard process started with it (`veil lab
//! guard`) waits for the owner's end and tears down what is left if it died without doing so
//! (killed, aborted); a state file (`DIR/NAME/state.toml`) says what to tear down, and lets
//! `veil lab down` and `veil lab exec` find the lab from another process.
//!
//! As root the namespaces are also named NAME-NODE under /run/netns (so `ip netns exec` works)
//! and the daemons' sockets are in /var/run/wireguard (so `wg` works). Without root, in a user
//! namespace (`unshare -Urn`), the namespaces are held by the owner's descriptors only and the
//! sockets are in the lab's own directory (the daemons get `VEIL_SOCKET_DIR`). See docs/lab.md.

mod exec;
mod netns;
mod rtnl;
mod state;
pub mod topology;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rand_core::OsRng;

use crate::control::uapi_client;
use crate::noise::{PresharedKey, StaticSecret, keys::hex};
pub use exec::exec;
pub use state::{State, StateNode, default_dir, down_by_name, guard, resolve};
use state::{remove_stale_socket, signal, spawn_guard, start_time, writable};
pub use topology::{Plan, Topology};
/// How long a daemon may take to answer on its socket, a veth to come up, and a stopped daemon
/// to exit before it is killed.
const START_LIMIT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How to run a lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `veil` program: the daemons (unless a node names another) and the guard process.
    pub veil: PathBuf,
    /// Where labs keep their state; [`default_dir`] if None.
    pub dir: Option<PathBuf>,
    /// Name the namespaces under /run/netns: None tries and goes without where it cannot
    /// (without root); Some(true) insists.
    pub named: Option<bool>,
}

impl Options {
    /// Runs daemons and the guard with the `veil` program at `veil`.
    pub fn new(veil: impl Into<PathBuf>) -> Options {
        Options { veil: veil.into(), dir: None, named: None }
    }
}

/// One node of a running lab.
#[derive(Debug)]
pub struct Node {
    name: String,
    ns: OwnedFd,
    ns_name: Option<String>,
    ifname: Option<String>,
    private_key: Option<StaticSecret>,
    addresses: Vec<IpNet>,
    listen_port: u16,
    /// (veth name, its address, the node at the other end).
    veths: Vec<(String, IpNet, String)>,
    log: PathBuf,
}

impl Node {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's name under /run/netns (for `ip netns exec`), where it has one.
    pub fn ns_name(&self) -> Option<&str> {
        self.ns_name.as_deref()
    }

    /// A descriptor of the node's network namespace (for `setns`).
    pub fn ns_fd(&self) -> &OwnedFd {
        &self.ns
    }

    /// The tunnel interface, if the node is in a tunnel.
    pub fn ifname(&self) -> Option<&str> {
        self.ifname.as_deref()
    }

    /// The tunnel's public key in base64 (as `wg` prints it), if the node is in a tunnel.
    pub fn public_key(&self) -> Option<String> {
        self.private_key.as_ref().map(|k| k.public_key().to_base64())
    }

    /// The tunnel's private key in base64, if the node is in a tunnel.
    pub fn private_key(&self) -> Option<String> {
        self.private_key.as_ref().map(|k| k.to_base64().to_string())
    }

    /// The tunnel's addresses.
    pub fn addresses(&self) -> &[IpNet] {
        &self.addresses
    }

    /// The tunnel's UDP port.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The veth toward node `peer` and this node's address on it (the first such link).
    pub fn veth_to(&self, peer: &str) -> Option<(&str, IpNet)> {
        self.veths.iter().find(|v| v.2 == peer).map(|v| (v.0.as_str(), v.1))
    }

    /// The daemon's log (its standard output and error).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// A running lab; dropping it tears it down (see [`Lab::down`]).
pub struct Lab {
    name: String,
    dir: PathBuf,
    state: State,
    nodes: Vec<Node>,
    daemons: Vec<Option<Child>>,
    guard: Option<(Child, OwnedFd)>,
    /// The preshared keys, by the two nodes (indices, lower first) of their tunnel.
    psks: Vec<([usize; 2], PresharedKey)>,
    down: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("name", &self.name).field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Lab {
    /// Brings `topology` up: namespaces, links and addresses, daemons with fresh keys, their
    /// peers, tunnel addresses and routes. Returns once every daemon is configured and every
    /// link is up. On an error, whatever was made is removed again.
    pub fn up(topology: &Topology, options: &Options) -> Result<Lab, String> {
        let plan = topology.plan()?;
        let root = options.dir.clone().unwrap_or_else(default_dir);
        let dir = root.join(&plan.name);
        if let Ok(old) = State::load(&root, &plan.name) {
            if old.owner_alive() {
                return Err(format!("lab {} is already up (owner pid {})", plan.name, old.owner));
            }
            old.teardown(&root);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Under /tmp another user could have made the directory first: use only our own.
        for d in [&root, &dir] {
            let meta = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
            // SAFETY: geteuid cannot fail.
            if !meta.is_dir() || meta.uid() != unsafe { libc::geteuid() } {
                return Err(format!("{} is not a directory of this user's", d.display()));
            }
        }
        let default_sockets = Path::new(crate::control::daemon::SOCKET_DIR);
        let private_sockets = !(std::fs::create_dir_all(default_sockets).is_ok() && writable(default_sockets));
        let socket_dir = if private_sockets { dir.join("sockets") } else { default_sockets.to_path_buf() };
        if private_sockets {
            std::fs::create_dir_all(&socket_dir).map_err(|e| format!("{}: {e}", socket_dir.display()))?;
        }
        let owner = std::process::id();
        let owner_start = start_time(owner).unwrap_or_default();
        let state = State { name: plan.name.clone(), owner, owner_start, socket_dir, private_sockets, nodes: vec![] };
        let mut lab = Lab {
            name: plan.name.clone(),
            dir: root,
            state,
            nodes: Vec::new(),
            daemons: Vec::new(),
            guard: None,
            psks: Vec::new(),
            down: false,
        };
        lab.state.save(&dir)?;
        match lab.build(&plan, options) {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.down();
                Err(e)
            }
        }
    }

    fn build(&mut self, plan: &Plan, options: &Options) -> Result<(), String> {
        let dir = self.dir.join(&self.name);
        self.guard = Some(spawn_guard(&options.veil, &dir.join("state.toml"))?);

        // Namespaces, named where possible.
        let fds = netns::create(plan.nodes.len()).map_err(|e| {
            format!("cannot create network namespaces: {e} (run as root, or without root inside `unshare -Urn`)")
        })?;
        let mut named = options.named != Some(false);
        for (n, fd) in plan.nodes.iter().zip(fds) {
            let mut ns_name = None;
            let mut path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd()));
            if named {
                let name = format!("{}-{}", plan.name, n.name);
                match netns::mount_name(&fd, &name) {
                    Ok(p) => {
                        path = p;
                        ns_name = Some(name);
                    }
                    Err(e) if options.named == Some(true) => {
                        return Err(format!("cannot name namespace {name} under {}: {e}", netns::NETNS_DIR));
                    }
                    Err(_) => named = false,
                }
            }
            self.state.nodes.push(StateNode {
                name: n.name.clone(),
                netns: path,
                named: ns_name.is_some(),
                ifname: n.tunnel.as_ref().map(|t| t.ifname.clone()),
                daemon: None,
            });
            let t = n.tunnel.as_ref();
            self.nodes.push(Node {
                name: n.name.clone(),
                ns: fd,
                ns_name,
                ifname: t.map(|t| t.ifname.clone()),
                private_key: t.map(|_| StaticSecret::random(&mut OsRng)),
                addresses: t.map(|t| t.addresses.clone()).unwrap_or_default(),
                listen_port: t.map_or(0, |t| t.listen_port),
                veths: Vec::new(),
                log: dir.join(format!("{}.log", n.name)),
            });
        }
        self.state.save(&dir)?;

        // A socket that answers belongs to a daemon outside the lab: never configure that one.
        for t in plan.nodes.iter().filter_map(|n| n.tunnel.as_ref()) {
            let path = self.state.socket_dir.join(format!("{}.sock", t.ifname));
            if uapi_client::served(&path) {
                return Err(format!(
                    "interface name {} is in use ({} answers): give the node another `ifname`",
                    t.ifname,
                    path.display()
                ));
            }
        }
        // Daemons first: they start while the links are made.
        for (i, n) in plan.nodes.iter().enumerate() {
            let child = match &n.tunnel {
                Some(t) => Some(self.spawn_daemon(i, t, &options.veil)?),
                None => None,
            };
            self.state.nodes[i].daemon = child.as_ref().map(Child::id);
            self.daemons.push(child);
        }
        self.state.save(&dir)?;

        let mut rtnl = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let _in = netns::Entered::new(&node.ns).map_err(|e| format!("setns: {e}"))?;
            rtnl.push(rtnl::Rtnl::open().map_err(|e| format!("netlink: {e}"))?);
        }
        let mut host = rtnl::Rtnl::open().map_err(|e| format!("netlink: {e}"))?;
        let mut veth_index = Vec::new();
        for link in &plan.links {
            let [a, b] = link.nodes;
            let fds = [self.nodes[a].ns.as_raw_fd(), self.nodes[b].ns.as_raw_fd()];
            host.add_veth([&link.ends[0], &link.ends[1]], fds, link.mtu)
                .map_err(|e| format!("link {} - {}: {e}", plan.nodes[a].name, plan.nodes[b].name))?;
            for side in 0..2 {
                let n = link.nodes[side];
                let index = {
                    let _in = netns::Entered::new(&self.nodes[n].ns).map_err(|e| format!("setns: {e}"))?;
                    rtnl::index_of(&link.ends[side]).map_err(|e| e.to_string())?
                };
                let what = |e| format!("{} in {}: {e}", link.ends[side], plan.nodes[n].name);
                rtnl[n].add_address(index, link.addresses[side]).map_err(what)?;
                rtnl[n].set_up(index, None).map_err(what)?;
                veth_index.push((n, index));
                let other = plan.nodes[link.nodes[1 - side]].name.clone();
                self.nodes[n].veths.push((link.ends[side].clone(), link.addresses[side], other));
            }
        }
        for (n, node) in plan.nodes.iter().enumerate() {
            for subnet in &node.subnets {
                let first = subnet.hosts().next().unwrap_or(subnet.addr());
                let addr = IpNet::new(first, subnet.prefix_len()).expect("same prefix length");
                rtnl[n].add_address(1, addr).map_err(|e| format!("subnet {subnet} of {}: {e}", node.name))?;
            }
        }

        for (n, node) in plan.nodes.iter().enumerate() {
            if node.forward {
                let _in = netns::Entered::new(&self.nodes[n].ns).map_err(|e| format!("setns: {e}"))?;
                // /proc/sys/net is the opening thread's namespace's.
                for knob in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] {
                    std::fs::write(knob, "1").map_err(|e| format!("{knob} in {}: {e}", node.name))?;
                }
            }
            if let Some(gw) = node.gateway {
                rtnl[n].add_default_route(gw).map_err(|e| format!("default route via {gw} in {}: {e}", node.name))?;
            }
        }

        // Keys and peers through each daemon's socket, then its interface.
        let psks: Vec<Option<PresharedKey>> =
            plan.psks.iter().map(|&p| p.then(|| PresharedKey::random(&mut OsRng))).collect();
        for (i, n) in plan.nodes.iter().enumerate() {
            for p in n.tunnel.iter().flat_map(|t| &t.peers).filter(|p| p.node > i) {
                if let Some(psk) = p.psk.and_then(|k| psks[k].as_ref()) {
                    self.psks.push(([i, p.node], psk.clone()));
                }
            }
        }
        // Keepalives come last (below), once every peer is configured and every link is up:
        // setting one sends at once, and a handshake sent to a daemon not configured yet, or
        // over a veth not up yet, is lost until its retry 5 s later.
        let mut keepalives = vec![String::new(); plan.nodes.len()];
        for (i, n) in plan.nodes.iter().enumerate() {
            let Some(t) = &n.tunnel else { continue };
            let mut request = format!(
                "set=1\nprivate_key={}\nlisten_port={}\nreplace_peers=true\n",
                hex(self.nodes[i].private_key.as_ref().expect("a tunnel node has a key").as_bytes()),
                t.listen_port
            );
            for p in &t.peers {
                let key = self.nodes[p.node].private_key.as_ref().expect("a peer has a key").public_key();
                request += &format!("public_key={}\n", key.to_hex());
                if let Some(psk) = p.psk.and_then(|k| psks[k].as_ref()) {
                    request += &format!("preshared_key={}\n", hex(psk.as_bytes()));
                }
                if let Some(e) = &p.endpoint {
                    request += &format!("endpoint={e}\n");
                }
                if let Some(k) = p.keepalive {
                    keepalives[i] += &format!("public_key={}\npersistent_keepalive_interval={k}\n", key.to_hex());
                }
                request += "replace_allowed_ips=true\n";
                for a in &p.allowed_ips {
                    request += &format!("allowed_ip={a}\n");
                }
            }
            request += "\n";
            let path = self.state.socket_dir.join(format!("{}.sock", t.ifname));
            let child = self.daemons[i].as_mut().expect("a tunnel node has a daemon");
            if let Some(text) = &t.ready {
                uapi_client::wait_for_log(child, &self.nodes[i].log, text, START_LIMIT)
                    .map_err(|e| format!("{} in {}: {e}", t.ifname, n.name))?;
            }
            let mut conn = uapi_client::connect_while_alive(&path, child, &self.nodes[i].log, START_LIMIT)?;
            uapi_client::set_on(&mut conn, &request).map_err(|e| format!("{}: {e}", t.ifname))?;

            let what = |e| format!("{} in {}: {e}", t.ifname, n.name);
            let index = {
                let _in = netns::Entered::new(&self.nodes[i].ns).map_err(|e| format!("setns: {e}"))?;
                rtnl::index_of(&t.ifname).map_err(what)?
            };
            for a in &t.addresses {
                rtnl[i].add_address(index, *a).map_err(what)?;
            }
            rtnl[i].set_up(index, Some(t.mtu)).map_err(what)?;
            for net in t.peers.iter().flat_map(|p| &p.allowed_ips) {
                // A network the interface's own prefix already routes is no error.
                match rtnl[i].add_route(index, *net) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(what(e)),
                    _ => {}
                }
            }
        }

        // Packets sent before a veth is up can be lost: wait for every end.
        let until = Instant::now() + START_LIMIT;
        for (n, index) in veth_index {
            while !rtnl[n].is_running(index).map_err(|e| e.to_string())? {
                if Instant::now() > until {
                    return Err(format!("a link of {} did not come up", plan.nodes[n].name));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        for (i, n) in plan.nodes.iter().enumerate() {
            let Some(t) = n.tunnel.as_ref().filter(|_| !keepalives[i].is_empty()) else { continue };
            let path = self.state.socket_dir.join(format!("{}.sock", t.ifname));
            let child = self.daemons[i].as_mut().expect("a tunnel node has a daemon");
            let mut conn = uapi_client::connect_while_alive(&path, child, &self.nodes[i].log, START_LIMIT)?;
            let request = format!("set=1\n{}\n", keepalives[i]);
            uapi_client::set_on(&mut conn, &request).map_err(|e| format!("{}: {e}", t.ifname))?;
        }
        Ok(())
    }

    fn spawn_daemon(&self, i: usize, t: &topology::PlannedTunnel, veil: &Path) -> Result<Child, String> {
        let node = &self.nodes[i];
        let (program, args) = match &t.daemon {
            Some(d) => (PathBuf::from(&d[0]), d[1..].to_vec()),
            None => (veil.to_path_buf(), vec!["-f".to_string(), t.ifname.clone()]),
        };
        let log = File::create(&node.log).map_err(|e| format!("{}: {e}", node.log.display()))?;
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .envs(&t.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0);
        if self.state.private_sockets {
            cmd.env("VEIL_SOCKET_DIR", &self.state.socket_dir);
        }
        let fd = node.ns.as_raw_fd();
        // SAFETY: between fork and exec only setns (async-signal-safe) runs; `fd` stays open in
        // the parent while `cmd` is used.
        unsafe {
            cmd.pre_exec(move || netns::enter(fd));
        }
        cmd.spawn().map_err(|e| format!("{}: {e}", program.display()))
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The nodes, in the order of the topology.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`. Panics if there is none (a mistake in the test).
    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("lab {} has no node {name:?}", self.name))
    }

    /// The preshared key (base64) of the tunnel between nodes `a` and `b`, if it has one.
    pub fn psk(&self, a: &str, b: &str) -> Option<String> {
        let index = |name| self.nodes.iter().position(|n| n.name == name);
        let (a, b) = (index(a)?, index(b)?);
        let key = [a.min(b), a.max(b)];
        self.psks.iter().find(|(k, _)| *k == key).map(|(_, psk)| psk.to_base64().to_string())
    }

    /// The directory of the daemons' sockets.
    pub fn socket_dir(&self) -> &Path {
        &self.state.socket_dir
    }

    /// The process id of node `name`'s daemon.
    pub fn daemon_pid(&self, name: &str) -> Option<u32> {
        let i = self.nodes.iter().position(|n| n.name == name)?;
        self.daemons[i].as_ref().map(Child::id)
    }

    /// A command that runs `program` inside node `name`'s network namespace.
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let fd = self.node(name).ns.as_raw_fd();
        let mut cmd = Command::new(program);
        if self.state.private_sockets {
            cmd.env("VEIL_SOCKET_DIR", &self.state.socket_dir);
        }
        // SAFETY: as in `spawn_daemon`: only setns between fork and exec.
        unsafe {
            cmd.pre_exec(move || netns::enter(fd));
        }
        cmd
    }

    /// Runs the shell script `script` inside node `name` and returns its output.
    pub fn sh(&self, name: &str, script: &str) -> std::io::Result<Output> {
        self.command(name, "sh").arg("-c").arg(script).stdin(Stdio::null()).output()
    }

    /// Tears the lab down: stops the daemons (SIGTERM, then SIGKILL after 3 s), removes any
    /// socket they left, the namespaces (and with them the links) and the lab's state. Also
    /// done on drop; calling it twice does nothing.
    pub fn down(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        for child in self.daemons.iter_mut().flatten() {
            signal(child.id(), libc::SIGTERM);
        }
        let until = Instant::now() + STOP_GRACE;
        for child in self.daemons.iter_mut().flatten() {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in &self.state.nodes {
            if let Some(ifname) = &n.ifname {
                remove_stale_socket(&self.state.socket_dir.join(format!("{ifname}.sock")));
            }
            if n.named {
                let _ = netns::unmount_name(&n.netns);
            }
        }
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(self.dir.join(&self.name));
        if let Some((mut guard, pipe)) = self.guard.take() {
            drop(pipe);
            let _ = guard.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down();
    }
}

/// A one-line summary per node: namespace, interface, addresses.
pub fn summary(lab: &Lab) -> String {
    let mut out = String::new();
    for n in lab.nodes() {
        let ns = n.ns_name().map(str::to_string).unwrap_or_else(|| "(unnamed)".into());
        let addrs: Vec<String> = n.addresses().iter().map(ToString::to_string).collect();
        let veths: Vec<String> = n.veths.iter().map(|(v, a, _)| format!("{v} {a}")).collect();
        let tunnel = n.ifname().map(|i| format!("  {i} {}", addrs.join(" "))).unwrap_or_default();
        out += &format!("{:<12} netns {ns}{tunnel}  links: {}\n", n.name(), veths.join(", "));
    }
    out
}
