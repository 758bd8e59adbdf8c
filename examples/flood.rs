//! A handshake flood for `scripts/flood.sh`: WireGuard initiations with a valid mac1 for the
//! responder's public key, sent from many source ports as fast as asked, bounded in count and
//! time. mac1 covers only the message's bytes (keyed with the responder's public key), so the
//! rest (sender index, ephemeral, encrypted static and timestamp) is random and need not be a
//! curve point: a responder cannot tell such a message from a real one before its mac1 check
//! passes and it does public-key work, unless it demands mac2 (cookies) and rate-limits.
//!
//! ```text
//! flood --to 10.96.0.2:51820 --key BASE64_PUBLIC_KEY [--rate 200000] [--seconds 20]
//!       [--count 10000000] [--ports 256] [--bind 10.96.0.3]
//! ```
//!
//! `--rate 0` sends as fast as it can. Prints `sent N in S s: R/s from P ports` every second
//! and at the end.
//! Never reads the answers (cookie replies pile up in its sockets' buffers and are dropped).
//! Linux only (sendmmsg). Run it only inside a network namespace made for it.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use veil::noise::PublicKey;
use veil::noise::cookie::MacKeys;
use veil::noise::messages::{INITIATION_LEN, TYPE_INITIATION};

/// Distinct messages sent in turn (random sender indices and bodies).
const POOL: usize = 4096;
/// Messages per sendmmsg call.
const BATCH: usize = 64;

struct Args {
    to: SocketAddr,
    key: PublicKey,
    rate: u64,
    seconds: f64,
    count: u64,
    ports: usize,
    bind: String,
}

fn usage() -> ! {
    eprintln!("usage: flood --to IP:PORT --key BASE64 [--rate N/s] [--seconds S] [--count N] [--ports N] [--bind IP]");
    std::process::exit(2)
}

fn parse() -> Args {
    let mut a = Args {
        to: "127.0.0.1:51820".parse().unwrap(),
        key: PublicKey::from_bytes([9; 32]),
        rate: 200_000,
        seconds: 20.0,
        count: 10_000_000,
        ports: 256,
        bind: "0.0.0.0".into(),
    };
    let mut key = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--to" => a.to = v.parse().unwrap_or_else(|_| usage()),
            "--key" => {
                a.key = PublicKey::from_base64(&v).unwrap_or_else(|_| usage());
                key = true;
            }
            "--rate" => a.rate = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage()),
            "--count" => a.count = v.parse().unwrap_or_else(|_| usage()),
            "--ports" => a.ports = v.parse::<usize>().unwrap_or_else(|_| usage()).max(1),
            "--bind" => a.bind = v,
            _ => usage(),
        }
    }
    if !key || a.seconds <= 0.0 || a.seconds > 600.0 {
        usage();
    }
    a
}

/// `n` initiations with random bodies and a valid mac1 for `key` (mac2 zero).
fn pool(key: &PublicKey, n: usize) -> Vec<[u8; INITIATION_LEN]> {
    let keys = MacKeys::new(key);
    (0..n)
        .map(|_| {
            let mut m = [0u8; INITIATION_LEN];
            OsRng.fill_bytes(&mut m[4..116]);
            m[0] = TYPE_INITIATION;
            m[1..4].fill(0);
            let mac1 = keys.mac1(&m);
            m[116..132].copy_from_slice(&mac1);
            m
        })
        .collect()
}

/// Sends `msgs` on the connected socket `fd` with one sendmmsg; returns how many left.
fn send_batch(fd: i32, msgs: &[[u8; INITIATION_LEN]]) -> usize {
    let mut iov: Vec<libc::iovec> =
        msgs.iter().map(|m| libc::iovec { iov_base: m.as_ptr() as *mut libc::c_void, iov_len: m.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: `hdrs` points at `iov`, which points at `msgs`; all outlive the call.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, libc::MSG_DONTWAIT) };
    n.max(0) as usize
}

fn main() {
    let args = parse();
    let msgs = pool(&args.key, POOL);
    let sockets: Vec<UdpSocket> = (0..args.ports)
        .map(|_| {
            let s = UdpSocket::bind((args.bind.as_str(), 0)).expect("bind");
            s.connect(args.to).expect("connect");
            s
        })
        .collect();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(args.seconds);
    let (mut sent, mut tried, mut at, mut port) = (0u64, 0u64, 0usize, 0usize);
    let mut report = Duration::from_secs(1);
    while sent < args.count {
        let elapsed = start.elapsed();
        if elapsed >= limit {
            break;
        }
        if args.rate > 0 {
            let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
            if tried >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let n = BATCH.min((args.count - sent) as usize).min(POOL - at);
        let fd = sockets[port].as_raw_fd();
        port = (port + 1) % sockets.len();
        sent += send_batch(fd, &msgs[at..at + n]) as u64;
        tried += n as u64;
        at = (at + n) % POOL;
        if elapsed >= report {
            // A line a second, so that a caller that stops it early still has the figures.
            println!(
                "sent {sent} in {:.2} s: {:.0}/s from {} ports",
                elapsed.as_secs_f64(),
                sent as f64 / elapsed.as_secs_f64(),
                sockets.len()
            );
            report += Duration::from_secs(1);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent {sent} in {secs:.2} s: {:.0}/s from {} ports", sent as f64 / secs, sockets.len());
}
