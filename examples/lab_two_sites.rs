//! The Rust part of docs/guides/netns-tests.md: brings up the lab of
//! examples/lab/two-sites.toml, checks that a host of site B's network answers site-a through
//! the tunnel, and takes the lab down. Run it from the repository as root, with veil installed:
//! `cargo run --release --example lab_two_sites`.

use veil::lab::{Lab, Options, Topology};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let topology = Topology::from_file("examples/lab/two-sites.toml".as_ref())?;
    // "veil" is looked up on PATH; give a full path to use another build.
    let lab = Lab::up(&topology, &Options::new("veil"))?;

    let site_a = lab.node("site-a");
    println!("site-a: namespace {:?}, tunnel {:?}", site_a.ns_name(), site_a.ifname());

    let ping = lab.sh("site-a", "ping -c 1 -W 2 192.168.2.10")?;
    if !ping.status.success() {
        return Err(format!("site-a cannot reach 192.168.2.10:\n{}", String::from_utf8_lossy(&ping.stdout)).into());
    }
    println!("site-a reaches 192.168.2.10 through the tunnel");

    // Dropping the lab stops the daemons and removes the namespaces (so does a panic).
    drop(lab);
    Ok(())
}
