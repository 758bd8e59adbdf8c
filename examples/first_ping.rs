//! Time from starting two WireGuard daemons to the first ping answered through the tunnel
//! between them, configured the way a test harness would: the daemons are started inside
//! their network namespaces directly (`setns` before `exec`, no `ip netns exec`), configured
//! through their UAPI sockets (no `wg`), their interfaces given an address, MTU 1420 and link up
//! through rtnetlink (no `ip`), and the ping is one ICMP echo from a raw socket in the first
//! namespace (no `ping`). Any implementation that serves the UAPI socket can be timed, so
//! `scripts/bench.sh` runs it for each one side by side.
//!
//! ```text
//! first_ping --ns-a NS --ns-b NS --underlay-a 10.98.0.1 --underlay-b 10.98.0.2 \
//!            --if-a wgA --if-b wgB --log-a FILE --log-b FILE [--ready TEXT] \
//!            -- [NAME=VALUE...] PROGRAM ARGS...
//! ```
//!
//! With `--ready TEXT` a daemon's UAPI socket is used only once TEXT is in its log (5 s at
//! most): gotatun 0.10 opens its socket before its device is built, and a client that connects
//! in between makes it panic, so for gotatun the harness must wait for "started successfully"
//! (the lab's `ready`, docs/lab.md).
//!
//! In PROGRAM's arguments `{if}` is replaced by the interface name. The namespaces must exist
//! and reach each other at the underlay addresses (port 51820 on both). The tunnel addresses
//! are 10.99.0.1/24 and 10.99.0.2/24. Prints one line,
//! `pid_a pid_b ready_us configured_us first_ping_us`, microseconds from the launch of the
//! first daemon to: both UAPI sockets answering, both tunnels configured and up, the echo
//! reply. The daemons are left running, and this program waits until the caller has stopped
//! both (it reaps them); on an error they are killed and the exit status is 1.
//!
//! Root only (namespaces, raw sockets). Linux only.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use veil::control::uapi_client::{poll_while_alive, wait_for_log};
use veil::noise::StaticSecret;

const PORT: u16 = 51820;
/// How long a daemon may take to accept on its socket (and, with `--ready`, to log its text).
const START_LIMIT: Duration = Duration::from_secs(5);

struct Side {
    ns: String,
    underlay: Ipv4Addr,
    ifname: String,
    log: String,
    tunnel: Ipv4Addr,
}

fn main() {
    let (a, b, ready, env, program) = match parse(std::env::args().skip(1).collect()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("first_ping: {e}");
            std::process::exit(2);
        }
    };
    let mut children = Vec::new();
    match run(&a, &b, ready.as_deref(), &env, &program, &mut children) {
        Ok((ready, configured, reply)) => {
            println!("{} {} {ready} {configured} {reply}", children[0].id(), children[1].id());
            let _ = std::io::stdout().flush();
            // Stay their parent until they are stopped, so that they are reaped at once (a
            // caller that polls `kill -0` would otherwise wait on zombies).
            for c in &mut children {
                let _ = c.wait();
            }
        }
        Err(e) => {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            eprintln!("first_ping: {e}");
            std::process::exit(1);
        }
    }
}

type Parsed = (Side, Side, Option<String>, Vec<(String, String)>, Vec<String>);

fn parse(args: Vec<String>) -> Result<Parsed, String> {
    let split = args.iter().position(|a| a == "--").ok_or("no `-- PROGRAM ARGS...`")?;
    let (opts, rest) = (&args[..split], &args[split + 1..]);
    let get = |name: &str| -> Result<String, String> {
        let i = opts.iter().position(|o| o == name).ok_or(format!("{name} is missing"))?;
        opts.get(i + 1).cloned().ok_or(format!("{name} needs a value"))
    };
    let addr = |name: &str| -> Result<Ipv4Addr, String> { get(name)?.parse().map_err(|e| format!("{name}: {e}")) };
    let side = |s: &str, tunnel| -> Result<Side, String> {
        Ok(Side {
            ns: get(&format!("--ns-{s}"))?,
            underlay: addr(&format!("--underlay-{s}"))?,
            ifname: get(&format!("--if-{s}"))?,
            log: get(&format!("--log-{s}"))?,
            tunnel,
        })
    };
    let ready = match opts.iter().position(|o| o == "--ready") {
        Some(i) => match opts.get(i + 1) {
            Some(text) if !text.is_empty() => Some(text.clone()),
            _ => return Err("--ready needs a non-empty text".into()),
        },
        None => None,
    };
    let a = side("a", Ipv4Addr::new(10, 99, 0, 1))?;
    let b = side("b", Ipv4Addr::new(10, 99, 0, 2))?;
    let vars = rest.iter().take_while(|w| w.contains('=') && !w.starts_with('/')).count();
    let env = rest[..vars]
        .iter()
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap_or((w, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let program = rest[vars..].to_vec();
    if program.is_empty() {
        return Err("no PROGRAM after `--`".into());
    }
    Ok((a, b, ready, env, program))
}

fn run(
    a: &Side,
    b: &Side,
    ready_text: Option<&str>,
    env: &[(String, String)],
    program: &[String],
    children: &mut Vec<Child>,
) -> Result<(u128, u128, u128), String> {
    // Everything that is not the daemons' work is prepared before the clock starts.
    let keys = [StaticSecret::random(&mut OsRng), StaticSecret::random(&mut OsRng)];
    let netns = [netns_fd(&a.ns)?, netns_fd(&b.ns)?];
    let logs = [File::create(&a.log), File::create(&b.log)];
    let echo = {
        let _in_a = Entered::new(&netns[0])?;
        raw_icmp()?
    };

    let t0 = Instant::now();
    for (i, side) in [a, b].into_iter().enumerate() {
        let log = logs[i].as_ref().map_err(|e| format!("{}: {e}", side.log))?;
        let args: Vec<String> = program[1..].iter().map(|w| w.replace("{if}", &side.ifname)).collect();
        let mut cmd = Command::new(&program[0]);
        cmd.args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log.try_clone().map_err(|e| e.to_string())?);
        let fd = netns[i].as_raw_fd();
        // SAFETY: between fork and exec only setns (async-signal-safe) runs; `fd` stays open in
        // the parent for as long as `cmd` is used.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        children.push(cmd.spawn().map_err(|e| format!("{}: {e}", program[0]))?);
    }

    let mut uapi = Vec::new();
    for (i, side) in [a, b].into_iter().enumerate() {
        if let Some(text) = ready_text {
            wait_for_log(&mut children[i], Path::new(&side.log), text, START_LIMIT)?;
        }
        uapi.push(connect(&side.ifname, &mut children[i])?);
    }
    let ready = t0.elapsed().as_micros();

    for (i, (side, other)) in [(a, b), (b, a)].into_iter().enumerate() {
        let request = format!(
            "set=1\nprivate_key={}\nlisten_port={PORT}\nreplace_peers=true\npublic_key={}\n\
             endpoint={}:{PORT}\nreplace_allowed_ips=true\nallowed_ip={}/32\n\n",
            veil::noise::keys::hex(keys[i].as_bytes()),
            keys[1 - i].public_key().to_hex(),
            other.underlay,
            other.tunnel,
        );
        uapi_set(&mut uapi[i], &request).map_err(|e| format!("{}: {e}", side.ifname))?;
        let _in_ns = Entered::new(&netns[i])?;
        link_up(&side.ifname, side.tunnel, 24, 1420).map_err(|e| format!("{}: {e}", side.ifname))?;
    }
    let configured = t0.elapsed().as_micros();

    ping(&echo, b.tunnel, t0 + Duration::from_secs(10))?;
    Ok((ready, configured, t0.elapsed().as_micros()))
}

fn netns_fd(name: &str) -> Result<OwnedFd, String> {
    let f = File::open(format!("/run/netns/{name}")).map_err(|e| format!("namespace {name}: {e}"))?;
    Ok(f.into())
}

/// This thread inside a network namespace until dropped (then back in the one it came from).
struct Entered(OwnedFd);

impl Entered {
    fn new(ns: &OwnedFd) -> Result<Entered, String> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| format!("own namespace: {e}"))?;
        // SAFETY: setns on a namespace file descriptor that is open; it only changes which
        // network namespace this thread's new sockets belong to.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(Entered(home.into()))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: as in `new`, with the namespace this thread came from.
        unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Connects to the daemon's UAPI socket as soon as it accepts (polled every 100 us, 5 s at most;
/// finer than the lab's 200 us, since the time to this point is one of the figures).
fn connect(ifname: &str, child: &mut Child) -> Result<UnixStream, String> {
    let path = format!("/var/run/wireguard/{ifname}.sock");
    poll_while_alive(child, START_LIMIT, Duration::from_micros(100), || UnixStream::connect(&path).ok()).map_err(
        |exited| match exited {
            Some(status) => format!("the daemon for {ifname} exited: {status}"),
            None => format!("{path} did not accept within 5 s"),
        },
    )
}

/// Sends a UAPI set request and checks its `errno=0`.
fn uapi_set(stream: &mut UnixStream, request: &str) -> Result<(), String> {
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("UAPI socket closed before the answer".into());
        }
        match line.trim_end() {
            "errno=0" => return Ok(()),
            l if l.starts_with("errno=") => return Err(format!("set refused: {l}")),
            _ => {}
        }
    }
}

// ---- rtnetlink, by hand: two requests ----

const NLMSG_HDR: usize = 16;

/// Gives `ifname` (in this thread's namespace) `addr/prefix`, the MTU and link up, and waits
/// for the kernel's acknowledgements.
fn link_up(ifname: &str, addr: Ipv4Addr, prefix: u8, mtu: u32) -> Result<(), String> {
    let name = std::ffi::CString::new(ifname).map_err(|e| e.to_string())?;
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {ifname}"));
    }
    // SAFETY: a plain socket(2) call; the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if fd < 0 {
        return Err(format!("netlink: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    // RTM_NEWADDR: ifaddrmsg { family, prefixlen, flags, scope, index } + IFA_LOCAL + IFA_ADDRESS.
    let mut body = vec![libc::AF_INET as u8, prefix, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, libc::IFA_LOCAL, &addr.octets());
    attr(&mut body, libc::IFA_ADDRESS, &addr.octets());
    let flags = libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL;
    request(&sock, libc::RTM_NEWADDR, flags, 1, &body)?;

    // RTM_NEWLINK: ifinfomsg { family, pad, type, index, flags, change } + IFLA_MTU.
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    body.extend_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    attr(&mut body, libc::IFLA_MTU, &mtu.to_ne_bytes());
    request(&sock, libc::RTM_NEWLINK, libc::NLM_F_REQUEST | libc::NLM_F_ACK, 2, &body)
}

/// Appends a netlink attribute (length, type, data, padding to 4 bytes).
fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// Sends one netlink request and reads its acknowledgement (an NLMSG_ERROR with error 0).
fn request(sock: &OwnedFd, kind: u16, flags: libc::c_int, seq: u32, body: &[u8]) -> Result<(), String> {
    let mut msg = Vec::with_capacity(NLMSG_HDR + body.len());
    msg.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(flags as u16).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: `msg` is a live buffer of the given length; the kernel only reads it (the
    // destination defaults to the kernel for an unbound netlink socket).
    let n = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
    }
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < (NLMSG_HDR + 4) as isize {
        return Err(format!("netlink recv: {}", std::io::Error::last_os_error()));
    }
    let kind_back = u16::from_ne_bytes([buf[4], buf[5]]);
    let error = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if kind_back != libc::NLMSG_ERROR as u16 || error != 0 {
        return Err(format!("netlink request {kind}: {}", std::io::Error::from_raw_os_error(-error)));
    }
    Ok(())
}

// ---- ICMP echo ----

fn raw_icmp() -> Result<OwnedFd, String> {
    // SAFETY: a plain socket(2) call; the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(format!("raw ICMP socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends ICMP echo requests to `to` (one now, again every 100 ms) until a matching reply comes
/// back or `until`.
fn ping(sock: &OwnedFd, to: Ipv4Addr, until: Instant) -> Result<(), String> {
    let id = (std::process::id() & 0xffff) as u16;
    let mut echo = [8u8, 0, 0, 0, 0, 0, 0, 1, b'v', b'e', b'i', b'l', 0, 0, 0, 0];
    echo[4..6].copy_from_slice(&id.to_be_bytes());
    let sum = checksum(&echo);
    echo[2..4].copy_from_slice(&sum.to_be_bytes());
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(to).to_be() },
        sin_zero: [0; 8],
    };
    loop {
        // SAFETY: `echo` and `dst` are live for the call; the kernel only reads them.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                echo.as_ptr().cast(),
                echo.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(format!("ICMP send: {}", std::io::Error::last_os_error()));
        }
        let retry = Instant::now() + Duration::from_millis(100);
        while Instant::now() < retry {
            let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let wait = retry.saturating_duration_since(Instant::now()).as_millis().max(1) as libc::c_int;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, wait) } <= 0 {
                continue;
            }
            let mut buf = [0u8; 1500];
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 28 {
                continue;
            }
            let ihl = usize::from(buf[0] & 0x0f) * 4;
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let icmp = &buf[ihl..n as usize];
            if from == to && icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                return Ok(());
            }
        }
        if Instant::now() > until {
            return Err(format!("no echo reply from {to}"));
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
