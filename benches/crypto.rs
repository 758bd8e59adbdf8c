//! Side-by-side figures for the primitive choices: the data-path AEAD (aws-lc-rs, ring, the
//! pure-Rust chacha20poly1305 crate) and X25519 (aws-lc-rs, x25519-dalek).
//! `cargo bench --bench crypto`; results in docs/performance.md.

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 3] = [64, 1420, 65535];

fn aead_seal(c: &mut Criterion) {
    let key = [7u8; 32];
    let mut g = c.benchmark_group("seal");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];

        let veil_key = veil::noise::crypto::DataKey::new(&key);
        g.bench_with_input(BenchmarkId::new("veil-DataKey", size), &size, |b, _| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                black_box(veil_key.seal(n, &mut buf))
            })
        });

        let aws_key = aws_lc_rs::aead::LessSafeKey::new(
            aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &key).unwrap(),
        );
        g.bench_with_input(BenchmarkId::new("aws-lc-rs", size), &size, |b, _| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                black_box(
                    aws_key
                        .seal_in_place_separate_tag(
                            aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                            aws_lc_rs::aead::Aad::empty(),
                            &mut buf,
                        )
                        .unwrap(),
                )
            })
        });

        let ring_key =
            ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap());
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                black_box(
                    ring_key
                        .seal_in_place_separate_tag(
                            ring::aead::Nonce::assume_unique_for_key(nonce),
                            ring::aead::Aad::empty(),
                            &mut buf,
                        )
                        .unwrap(),
                )
            })
        });

        let rc = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
        g.bench_with_input(BenchmarkId::new("chacha20poly1305-crate", size), &size, |b, _| {
            let mut n = 0u64;
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_le_bytes());
                black_box(rc.encrypt_in_place_detached((&nonce).into(), &[], &mut buf).unwrap())
            })
        });
    }
    g.finish();
}

fn x25519(c: &mut Criterion) {
    let mut g = c.benchmark_group("x25519");
    let private = [0x42u8; 32];
    let public = veil::noise::crypto::x25519_base(&[0x24u8; 32]);
    g.bench_function("veil(aws-lc-sys raw X25519)", |b| {
        b.iter(|| black_box(veil::noise::crypto::x25519(&private, &public).unwrap()))
    });
    let aws_private =
        aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, &private).unwrap();
    g.bench_function("aws-lc-rs agreement API", |b| {
        b.iter(|| {
            let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(&aws_lc_rs::agreement::X25519, &public);
            black_box(aws_lc_rs::agreement::agree(&aws_private, peer, (), |s| {
                Ok::<[u8; 32], ()>(s.try_into().unwrap())
            }))
        })
    });
    let dalek_secret = x25519_dalek::StaticSecret::from(private);
    let dalek_public = x25519_dalek::PublicKey::from(public);
    g.bench_function("x25519-dalek", |b| b.iter(|| black_box(dalek_secret.diffie_hellman(&dalek_public))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = aead_seal, x25519
}
criterion_main!(benches);
