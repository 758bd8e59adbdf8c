//! Readiness under a service manager (systemd's Type=notify, as dist/systemd/veil@.service
//! uses it), with the test in systemd's place: `NOTIFY_SOCKET` names a datagram socket the test
//! listens on. `veil up` must say READY=1 only once the tunnel is configured, hand the daemon
//! over as the main process, and say nothing when it fails; a foreground daemon says READY=1
//! once its socket serves and STOPPING=1 when it stops.
mod netns;

use netns::*;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A fresh directory under /tmp with a notify socket in it, both removed on drop.
struct Manager {
    dir: PathBuf,
    socket: UnixDatagram,
}

impl Manager {
    fn new() -> Manager {
        let dir = std::env::temp_dir().join(unique("veil-sd-"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
        Manager { dir, socket }
    }

    fn notify_socket(&self) -> String {
        self.dir.join("notify").to_str().unwrap().to_string()
    }

    /// The next message, waiting up to `timeout`; None if none came.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `veil up CONF` in `ns` under the manager, not waited for; its output (and the daemon's)
/// goes to `log`.
fn spawn_up(ns: &Netns, manager: &Manager, conf: &str, log: &str) -> std::process::Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(veil_bin())
        .args(["up", conf])
        .env("NOTIFY_SOCKET", manager.notify_socket())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn config(me: &Keys, peer: &Keys, extra: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.77.0.1/24\n{extra}\n[Peer]\nPublicKey = {}\nAllowedIPs = \
         10.77.0.2/32, 10.78.0.0/16\n",
        me.private, peer.public
    )
}

fn value<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn veil_up_under_a_service_manager_says_ready_once_configured_and_hands_over_the_daemon() {
    if !require_root("veil_up_under_a_service_manager_says_ready_once_configured_and_hands_over_the_daemon") {
        return;
    }
    let ns = Netns::new("sdu");
    let manager = Manager::new();
    let ifname = unique("sdu");
    let (me, peer) = (keys(), keys());
    // The PostUp hook is the last step of a configuration and takes a while: READY=1 must wait
    // for it.
    let marker = manager.path("post-up-done");
    let conf = manager.path(&format!("{ifname}.conf"));
    std::fs::write(&conf, config(&me, &peer, &format!("PostUp = sleep 0.5; touch {marker}"))).unwrap();
    let log = manager.path("log");
    let mut up = spawn_up(&ns, &manager, &conf, &log);

    let message = manager.next(Duration::from_secs(30)).expect("no message from veil up within 30 s");
    // What systemd would see at this instant: the tunnel complete.
    assert!(std::path::Path::new(&marker).exists(), "READY before the PostUp hook finished: {message:?}");
    let addr = ns.sh(&format!("ip -4 addr show dev {ifname}"));
    assert!(addr.contains("10.77.0.1/24"), "READY before the address was set: {addr}");
    assert!(ns.sh(&format!("ip link show dev {ifname}")).contains(",UP"), "READY before the link was up");
    let routes = ns.sh(&format!("ip -4 route show dev {ifname}"));
    assert!(routes.contains("10.78.0.0/16"), "READY before the routes were added: {routes}");
    let peers = ns.sh(&format!("wg show {ifname} peers"));
    assert!(peers.contains(&peer.public), "READY before the peer was configured: {peers}");
    assert_eq!(value(&message, "READY"), Some("1"), "{message:?}");
    assert_eq!(value(&message, "STATUS"), Some(format!("{ifname} is up").as_str()), "{message:?}");

    let status = up.wait().unwrap();
    assert!(status.success(), "veil up failed: {}", std::fs::read_to_string(&log).unwrap_or_default());
    // The main process handed over is the daemon serving the interface, in the foreground, alive
    // after `veil up` is gone.
    let pid: u32 = value(&message, "MAINPID").expect("no MAINPID").parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    assert_eq!(args[1..], ["--foreground".to_string(), ifname.clone(), String::new()], "MAINPID {pid}: {args:?}");
    let daemon_env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&daemon_env).contains("NOTIFY_SOCKET="),
        "the daemon inherited NOTIFY_SOCKET: its own READY would be refused by systemd"
    );
    // Nothing more: the daemon does not speak for itself.
    assert_eq!(manager.next(Duration::from_millis(300)), None);
    // Its log goes where `veil up`'s goes (the journal, under systemd).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("{ifname} is up, configure it")), "the daemon's log is not with veil up's:\n{text}");

    // ExecStop: `veil down` ends the daemon, so the service ends with it.
    let down = ns.sh_out(&format!("{} down {conf}", veil_bin().display()));
    assert!(down.status.success(), "veil down: {}", String::from_utf8_lossy(&down.stderr));
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true)
    };
    assert!(wait_until(Duration::from_secs(5), gone), "the daemon {pid} outlived veil down");
}

#[test]
fn a_failed_veil_up_under_a_service_manager_says_nothing_and_leaves_no_daemon() {
    if !require_root("a_failed_veil_up_under_a_service_manager_says_nothing_and_leaves_no_daemon") {
        return;
    }
    let ns = Netns::new("sdf");
    let manager = Manager::new();
    let ifname = unique("sdf");
    let (me, peer) = (keys(), keys());
    let conf = manager.path(&format!("{ifname}.conf"));
    std::fs::write(&conf, config(&me, &peer, "PostUp = false")).unwrap();
    let log = manager.path("log");
    let status = spawn_up(&ns, &manager, &conf, &log).wait().unwrap();
    assert!(!status.success(), "veil up succeeded with a failing PostUp");
    assert_eq!(manager.next(Duration::from_millis(300)), None, "a failed start must not say READY");
    assert!(!ns.sh_out(&format!("ip link show dev {ifname}")).status.success(), "{ifname} left behind");
    let left = sh(&format!("ip netns pids {}", ns.name));
    assert!(left.trim().is_empty(), "processes left in the namespace: {left}");
}

#[test]
fn a_foreground_daemon_under_a_service_manager_says_ready_once_its_socket_serves() {
    if !require_root("a_foreground_daemon_under_a_service_manager_says_ready_once_its_socket_serves") {
        return;
    }
    let ns = Netns::new("sdd");
    let manager = Manager::new();
    let ifname = unique("sdd");
    let mut daemon = Proc::spawn(
        &ns,
        &format!("env NOTIFY_SOCKET={} {} --foreground {ifname}", manager.notify_socket(), veil_bin().display()),
        "veil --foreground",
    );
    let message = manager.next(Duration::from_secs(20)).expect("no READY from the daemon within 20 s");
    assert_eq!(value(&message, "READY"), Some("1"), "{message:?}");
    // At that instant `wg` can configure it.
    let get = ns.sh_out(&format!("wg show {ifname}"));
    assert!(get.status.success(), "READY before the socket served: {}", String::from_utf8_lossy(&get.stderr));
    assert!(daemon.terminate(Duration::from_secs(5)), "the daemon did not stop on SIGTERM");
    let message = manager.next(Duration::from_secs(1)).expect("no STOPPING from the daemon");
    assert_eq!(value(&message, "STOPPING"), Some("1"), "{message:?}");
}
