//! `Interface::receive` with arbitrary datagrams, interleaved with time passing, handshakes the
//! interface starts and packets it sends (records, see `veil_fuzz::records`). Seeded with real
//! handshakes and data from a peer (`examples/seeds.rs`), which replay exactly: the interface is
//! deterministic. Checked on every step (`Harness::step`): a refused datagram changes no peer
//! state and delivers nothing; delivered data is an IP packet of the length reported; every
//! datagram sent is a well-formed message to an address that spoke to us; indices do not leak.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_fuzz::{Harness, records};

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    for (op, body) in records(data).take(64) {
        h.step(op, body);
    }
});
