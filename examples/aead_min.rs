//! Minimum time per seal/open over many short runs (robust on a loaded machine):
//! `cargo run --release --example aead_min`. Compares veil's DataKey (whatever backend the
//! CPU gets) with ring for the sizes a tunnel sees.
use std::hint::black_box;
use std::time::Instant;

fn min_ns(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = Instant::now();
        for _ in 0..200 {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / 200.0);
    }
    best
}

fn main() {
    let key = [7u8; 32];
    let veil_key = veil::noise::crypto::DataKey::new(&key);
    let ring_key =
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap());
    println!("own AEAD in use: {}", veil::noise::aead::available());
    let sizes: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a size in bytes")).collect();
    let sizes = if sizes.is_empty() { vec![64, 128, 576, 1024, 1424, 8192] } else { sizes };
    for size in sizes {
        let mut buf = vec![0u8; size];
        let mut n = 0u64;
        let veil_ns = min_ns(|| {
            n += 1;
            black_box(veil_key.seal(n, &mut buf));
        });
        let ring_ns = min_ns(|| {
            n += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&n.to_le_bytes());
            let tag = ring_key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    &mut buf,
                )
                .unwrap();
            black_box(tag.as_ref()[0]);
        });
        let mut sealed = vec![0u8; size];
        let tag = veil_key.seal(5, &mut sealed);
        sealed.extend_from_slice(&tag);
        let mut work = sealed.clone();
        let open_ns = min_ns(|| {
            work.copy_from_slice(&sealed);
            black_box(veil_key.open(5, &mut work).unwrap());
        });
        let ring_open_ns = min_ns(|| {
            work.copy_from_slice(&sealed);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&5u64.to_le_bytes());
            black_box(
                ring_key
                    .open_in_place(ring::aead::Nonce::assume_unique_for_key(nonce), ring::aead::Aad::empty(), &mut work)
                    .unwrap()
                    .len(),
            );
        });
        println!(
            "{size:>5} B  seal veil {veil_ns:7.1} ns ring {ring_ns:7.1} ns ({:.2}x)   open veil {open_ns:7.1} ns ring {ring_open_ns:7.1} ns ({:.2}x)",
            ring_ns / veil_ns,
            ring_open_ns / open_ns
        );
    }
}
