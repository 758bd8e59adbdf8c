//! The protocol core's own figures: handshakes per second per side, seal and open throughput
//! at 64, 1420 and 65535 bytes, and mac1 checks per second.
//! `cargo bench --bench core`; results in docs/performance.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veil::noise::cookie::{CookieChecker, CookieState};
use veil::noise::session::Session;
use veil::noise::{Config, Interface, Output, PeerId, StaticSecret, WallClock};

#[derive(Default)]
struct Last(Vec<u8>);

impl Output for Last {
    fn send(&mut self, _: SocketAddr, d: &[u8]) {
        self.0.clear();
        self.0.extend_from_slice(d);
    }
    fn deliver(&mut self, _: PeerId, _: &[u8]) {}
}

fn handshakes(c: &mut Criterion) {
    let t0 = Instant::now();
    let clock = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let (ka, kb) = (StaticSecret::from_bytes([1; 32]), StaticSecret::from_bytes([2; 32]));
    let mut a = Interface::new(ka.clone(), Config::default(), clock.clone(), [1; 32]);
    let mut b = Interface::new(kb.clone(), Config::default(), clock, [2; 32]);
    let pb = a.add_peer(kb.public_key()).unwrap();
    let _pa = b.add_peer(ka.public_key()).unwrap();
    let (addr_a, addr_b): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
    a.set_endpoint(pb, Some(addr_b)).unwrap();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    let mut now = t0;
    let (mut oa, mut ob) = (Last::default(), Last::default());
    // A full handshake costs each side the same number of DH operations; this measures both
    // sides together, so per side it is twice the figure criterion reports.
    g.bench_function("initiation+response+confirmation (both sides)", |bench| {
        bench.iter(|| {
            now += Duration::from_secs(6); // past REKEY_TIMEOUT and the 1/50 s flood limit
            a.initiate(pb, now, &mut oa).unwrap();
            b.receive(addr_a, &mut oa.0, now, false, &mut ob).unwrap();
            a.receive(addr_b, &mut ob.0, now, false, &mut oa).unwrap();
            black_box(&oa.0);
        })
    });
    g.finish();
}

fn data(c: &mut Criterion) {
    let t = Instant::now();
    let limit = u64::MAX - 8192;
    let tx = Session::new(1, 2, &[1; 32], &[2; 32], t, true, limit, Duration::MAX);
    let rx = Session::new(2, 1, &[2; 32], &[1; 32], t, false, limit, Duration::MAX);
    let mut g = c.benchmark_group("data");
    for size in [64usize, 1420, 65535] {
        g.throughput(Throughput::Bytes(size as u64));
        let packet = vec![0x45u8; size];
        let mut out = vec![0u8; size + 64];
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| black_box(tx.seal(&packet, &mut out, 65535).unwrap()))
        });
        // Open: decrypt a fresh message each time (the replay window needs new counters).
        let msgs: Vec<Vec<u8>> = (0..4096)
            .map(|_| {
                let (n, _) = tx.seal(&packet, &mut out, 65535).unwrap();
                out[..n].to_vec()
            })
            .collect();
        let mut i = 0usize;
        let mut work = vec![0u8; size + 64];
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| {
                let m = &msgs[i % msgs.len()];
                i += 1;
                let n = m.len();
                work[..n].copy_from_slice(m);
                let counter = u64::from_le_bytes(m[8..16].try_into().unwrap());
                // Replays after the first lap are refused after decryption, still full cost.
                black_box(rx.open(counter, &mut work[16..n]).ok().map(|p| p.len()))
            })
        });
    }
    g.finish();
}

fn mac1(c: &mut Criterion) {
    let responder = StaticSecret::from_bytes([3; 32]).public_key();
    let mut state = CookieState::new(&responder, Duration::from_secs(120));
    let mut checker = CookieChecker::new(&responder, Duration::from_secs(120));
    let mut msg = vec![0u8; 148];
    msg[0] = 1;
    let t = Instant::now();
    state.stamp(&mut msg, t);
    let src: SocketAddr = "10.0.0.1:1".parse().unwrap();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
    let mut g = c.benchmark_group("mac");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mac1 check", |b| b.iter(|| black_box(checker.check(&msg, &src, t, false, &mut rng))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = handshakes, data, mac1
}
criterion_main!(benches);
