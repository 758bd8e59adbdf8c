//! The netns lab itself (`veil::lab`, `veil lab`): the example topologies come up and every
//! tunnel in them carries pings (subnets behind nodes and spoke to spoke through a hub too); and a lab leaves nothing behind
//! (namespaces, daemons, sockets, state) whichever way it ends: dropped, `veil lab down`,
//! Ctrl-C to `veil lab up`, or its owner killed with SIGKILL.
mod netns;
use netns::*;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use veil::lab::{Options, Topology};

/// An example topology under a unique lab name, with unique interface names (sockets in
/// /var/run/wireguard are shared by every namespace, and other tests run at the same time).
fn example(file: &str) -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab").join(file);
    let mut t = Topology::from_file(&path).unwrap();
    t.name = Some(unique("lx"));
    for n in &mut t.nodes {
        n.ifname = Some(unique("wg"));
    }
    t
}

/// What a lab named `name` with interfaces `ifnames` may leave behind: the names of what is
/// still there (namespaces, sockets, state, daemons).
fn leftovers(name: &str, ifnames: &[String]) -> Vec<String> {
    let mut left: Vec<String> =
        sh("ip netns list").lines().filter(|l| l.starts_with(&format!("{name}-"))).map(str::to_string).collect();
    for i in ifnames {
        let sock = format!("/var/run/wireguard/{i}.sock");
        if Path::new(&sock).exists() {
            left.push(sock);
        }
        if sh_out(&format!("pgrep -f 'veil(-daemon)? (-f|--foreground) {i}$'")).status.success() {
            left.push(format!("daemon of {i}"));
        }
    }
    let state = format!("/run/veil-lab/{name}");
    if Path::new(&state).exists() {
        left.push(state);
    }
    left
}

fn ifnames(t: &Topology) -> Vec<String> {
    t.nodes.iter().filter_map(|n| n.ifname.clone()).collect()
}

#[test]
fn the_examples_come_up_and_every_tunnel_carries_pings() {
    let test = "the_examples_come_up_and_every_tunnel_carries_pings";
    if !require_root(test) {
        return;
    }
    for file in ["two-sites.toml", "hub-and-spoke.toml", "mesh-8.toml"] {
        let t = example(file);
        let plan = t.plan().unwrap();
        let lab = veil::lab::Lab::up(&t, &Options::new(veil_bin())).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (i, node) in plan.nodes.iter().enumerate() {
            let ns = Netns::of(&lab, &node.name);
            let Some(tunnel) = &node.tunnel else { continue };
            for peer in &tunnel.peers {
                // A peer's first tunnel address, and the first host of each of its subnets.
                let mut targets = vec![plan.nodes[peer.node].tunnel.as_ref().unwrap().addresses[0].addr()];
                targets.extend(plan.nodes[peer.node].subnets.iter().filter_map(|s| s.hosts().nth(9)));
                for to in targets {
                    assert!(
                        ns.ping_until(&to.to_string(), Duration::from_secs(10)),
                        "{file}: {} (node {i}) cannot ping {to} through its tunnel to {}",
                        node.name,
                        plan.nodes[peer.node].name
                    );
                }
            }
        }
        if file == "hub-and-spoke.toml" {
            // Spoke to spoke, through the forwarding hub.
            let s1 = Netns::of(&lab, "spoke1");
            assert!(s1.ping_until("10.100.0.4", Duration::from_secs(10)), "{file}: spoke1 -> spoke3 via the hub");
            assert!(s1.ping_until("fd00:100::4", Duration::from_secs(10)), "{file}: spoke1 -> spoke3 over IPv6");
        }
        // The API's view matches the plan.
        let first = &plan.nodes[0];
        let n = lab.node(&first.name);
        assert_eq!(n.ifname(), first.tunnel.as_ref().map(|t| t.ifname.as_str()), "{file}");
        assert!(n.public_key().is_some_and(|k| k.len() == 44), "{file}: a base64 public key");
        let out = lab.sh(&first.name, "ip -br link").unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(n.ifname().unwrap()), "{file}: Lab::sh runs in the node");
        let (name, ifs) = (lab.name().to_string(), ifnames(&t));
        assert!(!leftovers(&name, &ifs).is_empty(), "{file}: the lab is not where it should be");
        drop(lab);
        assert_eq!(leftovers(&name, &ifs), Vec::<String>::new(), "{file}: left behind after the lab was dropped");
    }
}

/// `veil lab up FILE` with stdout piped, once it printed that the lab is up.
fn lab_up_cli(file: &TempFile, detach: bool) -> Child {
    let mut cmd = Command::new(veil_bin());
    cmd.args(["lab", "up", file.path()]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if detach {
        cmd.arg("--detach");
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let up = lines.by_ref().map_while(Result::ok).any(|l| l.contains(" is up ("));
    assert!(up, "veil lab up did not say the lab is up: {:?}", child.wait_with_output());
    child
}

fn topology_file(t: &Topology) -> TempFile {
    TempFile::new(&toml::to_string(t).unwrap())
}

#[test]
fn a_lab_is_gone_after_down_ctrl_c_or_its_owner_killed() {
    let test = "a_lab_is_gone_after_down_ctrl_c_or_its_owner_killed";
    if !require_root(test) {
        return;
    }
    let gone = |t: &Topology, how: &str| {
        let (name, ifs) = (t.name.clone().unwrap(), ifnames(t));
        let clean = wait_until(Duration::from_secs(10), || leftovers(&name, &ifs).is_empty());
        assert!(clean, "{how}: left behind: {:?}", leftovers(&name, &ifs));
    };

    // Ctrl-C to the foreground owner: it tears down and exits 0. `lab exec` worked before.
    let t = example("two-sites.toml");
    let file = topology_file(&t);
    let mut owner = lab_up_cli(&file, false);
    let site_b_tunnel = t.plan().unwrap().nodes[1].tunnel.clone().unwrap();
    let exec = sh(&format!(
        "{} lab exec --lab {} site-a -- ping -c 1 -W 5 {}",
        veil_bin().display(),
        file.path(),
        site_b_tunnel.addresses[0].addr()
    ));
    assert!(exec.contains("1 received"), "veil lab exec pings through the tunnel: {exec}");
    sh(&format!("kill -INT {}", owner.id()));
    let status = owner.wait().unwrap();
    assert!(status.success(), "veil lab up after Ctrl-C: {status:?}");
    gone(&t, "Ctrl-C");

    // --detach, then `veil lab down FILE`.
    let t = example("hub-and-spoke.toml");
    let file = topology_file(&t);
    let mut parent = lab_up_cli(&file, true);
    // A detached lab outlives this test: take it down whatever happens below.
    struct Down<'a>(&'a TempFile);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = sh_out(&format!("{} lab down {}", veil_bin().display(), self.0.path()));
        }
    }
    let _down = Down(&file);
    assert!(parent.wait().unwrap().success(), "veil lab up --detach exits 0 once up");
    // Its outputs close with it: the lab's owner keeps none of the caller's descriptors (a
    // caller reading them, as `$(veil lab up -d FILE)` does, would wait until `down`).
    let mut err = parent.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        let _ = tx.send(text);
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(30)).is_ok(),
        "the detached lab's owner still holds the caller's standard error while the lab is up"
    );
    assert!(!leftovers(t.name.as_deref().unwrap(), &ifnames(&t)).is_empty(), "the detached lab is up");
    sh(&format!("{} lab down {}", veil_bin().display(), file.path()));
    gone(&t, "veil lab down");

    // The owner killed outright: its guard tears down.
    let t = example("two-sites.toml");
    let file = topology_file(&t);
    let mut owner = lab_up_cli(&file, false);
    owner.kill().unwrap();
    owner.wait().unwrap();
    gone(&t, "SIGKILL to the owner");
}

#[test]
fn an_interface_name_served_outside_the_lab_is_refused_and_left_alone() {
    let test = "an_interface_name_served_outside_the_lab_is_refused_and_left_alone";
    if !require_root(test) {
        return;
    }
    let ns = Netns::new("lxo");
    let outsider = endpoint(&ns, Impl::Veil, &[], "");
    let mut t = example("two-sites.toml");
    t.nodes[0].ifname = Some(outsider.ifname.clone());
    let err = veil::lab::Lab::up(&t, &Options::new(veil_bin())).unwrap_err();
    assert!(err.contains("in use") && err.contains(&outsider.ifname), "{test}: {err}");
    // The outsider keeps its key, socket and life.
    let show = ns.sh(&format!("wg show {} private-key", outsider.ifname));
    assert_eq!(show.trim(), outsider.keys.private, "{test}: the outsider was reconfigured");
    assert!(Path::new(&format!("/var/run/wireguard/{}.sock", outsider.ifname)).exists(), "{test}: socket removed");
    assert_eq!(leftovers(t.name.as_deref().unwrap(), &ifnames(&t)[1..]), Vec::<String>::new(), "{test}");
}
