//! The `veil` command. Until the daemon lands, `veil demo` shows the protocol core at work:
//! two interfaces in one process, a handshake, data both ways and a rekey, on a virtual clock.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use veil::noise::{Config, Interface, Output, PeerId, StaticSecret, WallClock};

#[derive(Default)]
struct Wire {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    delivered: Vec<(PeerId, Vec<u8>)>,
}

impl Output for Wire {
    fn send(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.sent.push((to, datagram.to_vec()));
    }
    fn deliver(&mut self, peer: PeerId, packet: &[u8]) {
        self.delivered.push((peer, packet.to_vec()));
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

fn ipv4_packet(payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 99, 0, 1]);
    p[16..20].copy_from_slice(&[10, 99, 0, 2]);
    p.extend_from_slice(payload);
    p
}

fn demo() -> ExitCode {
    let start = Instant::now();
    let clock = WallClock::system();
    let config =
        Config { rekey_after_time: Duration::from_secs(2), rekey_timeout: Duration::from_secs(1), ..Config::default() };
    let (ka, kb) = (StaticSecret::random(&mut OsRng), StaticSecret::random(&mut OsRng));
    let (addr_a, addr_b): (SocketAddr, SocketAddr) =
        ("192.0.2.1:51820".parse().unwrap(), "192.0.2.2:51820".parse().unwrap());
    let mut a = Interface::new(ka.clone(), config.clone(), clock, seed());
    let mut b = Interface::new(kb.clone(), config, clock, seed());
    let pb = a.add_peer(kb.public_key()).expect("peer b");
    let pa = b.add_peer(ka.public_key()).expect("peer a");
    a.set_endpoint(pb, Some(addr_b)).unwrap();
    println!(
        "veil {} protocol demo (in memory; the netns tunnel demo arrives with the daemon)",
        env!("CARGO_PKG_VERSION")
    );
    println!("  a = {}\n  b = {}", ka.public_key().to_base64(), kb.public_key().to_base64());
    let (mut wa, mut wb) = (Wire::default(), Wire::default());
    let mut now = start;
    let mut delivered = 0usize;
    for round in 0..5u32 {
        let msg = format!("hello #{round} from a");
        a.send(pb, &ipv4_packet(msg.as_bytes()), now, &mut wa).unwrap();
        // Carry datagrams until both sides are quiet.
        loop {
            let (to_b, to_a) = (std::mem::take(&mut wa.sent), std::mem::take(&mut wb.sent));
            if to_b.is_empty() && to_a.is_empty() {
                break;
            }
            for (dst, mut d) in to_b {
                assert_eq!(dst, addr_b);
                let r = b.receive(addr_a, &mut d, now, false, &mut wb);
                println!("  b <- {:>3} bytes: {:?}", d.len(), r);
            }
            for (_, mut d) in to_a {
                let r = a.receive(addr_b, &mut d, now, false, &mut wa);
                println!("  a <- {:>3} bytes: {:?}", d.len(), r);
            }
        }
        for (_, p) in wb.delivered.drain(..) {
            delivered += 1;
            println!("  b delivered: {:?}", String::from_utf8_lossy(&p[20..]));
        }
        now += Duration::from_secs(1);
        a.tick(now, &mut wa);
        b.tick(now, &mut wb);
    }
    let (sa, sb) = (a.stats(pb).unwrap(), b.stats(pa).unwrap());
    println!("  a: {} handshakes, tx {} B, rx {} B", sa.handshakes_completed, sa.tx_bytes, sa.rx_bytes);
    println!("  b: {} handshakes, tx {} B, rx {} B", sb.handshakes_completed, sb.tx_bytes, sb.rx_bytes);
    if delivered == 5 && sa.handshakes_completed >= 2 {
        println!("ok: 5 packets delivered across {} handshakes", sa.handshakes_completed);
        ExitCode::SUCCESS
    } else {
        eprintln!("demo failed: {delivered} of 5 packets delivered");
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") | None => demo(),
        Some("--version") | Some("-V") => {
            println!("veil {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("veil: unknown command {other:?}; the daemon and CLI are not built yet (try `veil demo`)");
            ExitCode::from(2)
        }
    }
}
