//! `veil demo`: veil's main job on a built-in default. Two network namespaces joined by a veth
//! link, a veil daemon in each, a tunnel between them; then a ping and a bulk TCP transfer
//! through the tunnel, both peers' state, and everything removed again. Needs root.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::OsRng;

use super::uapi_client;
use crate::noise::StaticSecret;
use crate::noise::keys::hex;

struct Cleanup {
    namespaces: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // SIGTERM first so each daemon removes its own UAPI socket; SIGKILL only if it hangs.
        for c in &mut self.children {
            // SAFETY: kill(2) with the pid of a child we spawned and have not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Prints both peers' state as `wg show` would, indented.
fn show_both(ifnames: &[&str]) {
    for ifname in ifnames {
        println!();
        match uapi_client::status(ifname) {
            Ok(info) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                for line in crate::status::text::render(&info, now).lines() {
                    if line.is_empty() { println!() } else { println!("  {line}") }
                }
            }
            Err(e) => println!("  {ifname}: {e}"),
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (only that thread moves).
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T, String>> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns on a valid namespace descriptor changes only this thread's network
        // namespace; the file stays open for the duration of the call.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
}

fn wait_for(path: &str) -> Result<(), String> {
    let end = Instant::now() + Duration::from_secs(5);
    while !std::path::Path::new(path).exists() {
        if Instant::now() > end {
            return Err(format!("{path} did not appear"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs the demo, printing as it goes.
pub fn run() -> Result<(), String> {
    let tag = std::process::id() % 100_000;
    let (ns_a, ns_b) = (format!("veil-demo-a{tag}"), format!("veil-demo-b{tag}"));
    let (if_a, if_b) = (format!("vdemoa{tag}"), format!("vdemob{tag}"));
    let mut cleanup = Cleanup { namespaces: vec![], children: vec![] };
    println!("veil demo: two network namespaces, one veil tunnel between them");
    for ns in [&ns_a, &ns_b] {
        ip(&["netns", "add", ns]).map_err(|e| format!("{e} (veil demo needs root)"))?;
        cleanup.namespaces.push(ns.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    ip(&["link", "add", "vdemo0", "netns", &ns_a, "type", "veth", "peer", "name", "vdemo1", "netns", &ns_b])?;
    ip(&["-n", &ns_a, "addr", "add", "10.200.0.1/24", "dev", "vdemo0"])?;
    ip(&["-n", &ns_b, "addr", "add", "10.200.0.2/24", "dev", "vdemo1"])?;
    ip(&["-n", &ns_a, "link", "set", "vdemo0", "up"])?;
    ip(&["-n", &ns_b, "link", "set", "vdemo1", "up"])?;
    println!("  underlay: {ns_a} 10.200.0.1 <-veth-> {ns_b} 10.200.0.2");

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    for (ns, ifname) in [(&ns_a, &if_a), (&ns_b, &if_b)] {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .args(["-f", ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting veil: {e}"))?;
        cleanup.children.push(child);
        wait_for(&format!("/var/run/wireguard/{ifname}.sock"))?;
    }
    let (ka, kb) = (StaticSecret::random(&mut OsRng), StaticSecret::random(&mut OsRng));
    let set_a = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\npublic_key={}\nendpoint=10.200.0.2:51821\nallowed_ip=10.201.0.2/32\n\n",
        hex(ka.as_bytes()),
        kb.public_key().to_hex()
    );
    let set_b = format!(
        "set=1\nprivate_key={}\nlisten_port=51821\npublic_key={}\nallowed_ip=10.201.0.1/32\n\n",
        hex(kb.as_bytes()),
        ka.public_key().to_hex()
    );
    for (ifname, set) in [(&if_a, set_a), (&if_b, set_b)] {
        match uapi_client::errno(ifname, &set)? {
            0 => {}
            e => return Err(format!("{ifname}: configuration refused (errno {e})")),
        }
    }
    for (ns, ifname, addr) in [(&ns_a, &if_a, "10.201.0.1/24"), (&ns_b, &if_b, "10.201.0.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", ifname])?;
        ip(&["-n", ns, "link", "set", ifname, "mtu", "1420", "up"])?;
    }
    println!("  tunnel:   {if_a} 10.201.0.1 <-veil-> {if_b} 10.201.0.2");

    let ping = Command::new("ip")
        .args(["netns", "exec", &ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.201.0.2"])
        .output()
        .map_err(|e| format!("ping: {e}"))?;
    let ping_text = String::from_utf8_lossy(&ping.stdout);
    for line in ping_text.lines().filter(|l| l.contains("bytes from") || l.contains("rtt") || l.contains("transmitted"))
    {
        println!("  ping: {line}");
    }
    if !ping.status.success() {
        show_both(&[&if_a, &if_b]);
        return Err("ping through the tunnel failed (the peers' state is above)".into());
    }

    const BYTES: usize = 64 << 20;
    let listener = in_netns(&ns_b, || TcpListener::bind("10.201.0.2:5201"))
        .join()
        .map_err(|_| "listener thread panicked".to_string())??
        .map_err(|e| format!("listen in {ns_b}: {e}"))?;
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    });
    let started = Instant::now();
    let sender = in_netns(&ns_a, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&"10.201.0.2:5201".parse().unwrap(), Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut sent = 0;
        while sent < BYTES {
            s.write_all(&chunk)?;
            sent += chunk.len();
        }
        Ok(())
    });
    sender.join().map_err(|_| "sender panicked".to_string())??.map_err(|e| format!("bulk send: {e}"))?;
    let got =
        receiver.join().map_err(|_| "receiver panicked".to_string())?.map_err(|e| format!("bulk receive: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  bulk TCP: {} MiB in {secs:.2} s = {:.0} Mbit/s through the tunnel",
        got >> 20,
        got as f64 * 8.0 / secs / 1e6
    );
    if got != BYTES {
        return Err(format!("bulk transfer lost data: {got} of {BYTES} bytes"));
    }
    show_both(&[&if_a, &if_b]);
    drop(cleanup);
    println!("\nok: tunnel carried ping and {} MiB; namespaces and daemons removed", BYTES >> 20);
    Ok(())
}
