//! The four message codecs: `messages::parse` accepts exactly the datagrams a model of the
//! format accepts, and what it accepts is rebuilt byte for byte from its fields through
//! `write_header` and the accessors (encode(decode(x)) == x).
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil::noise::messages::{self, Message};

/// The format, written independently of the parser: type 1-4, three zero bytes, the size.
fn well_formed(b: &[u8]) -> bool {
    let size_ok = |kind: u8, len: usize| match kind {
        1 => len == 148,
        2 => len == 92,
        3 => len == 64,
        4 => len >= 32,
        _ => false,
    };
    b.len() >= 4 && b[1..4] == [0, 0, 0] && size_ok(b[0], b.len())
}

fuzz_target!(|data: &[u8]| {
    let parsed = messages::parse(data);
    assert_eq!(parsed.is_ok(), well_formed(data), "{parsed:?}");
    let Ok(message) = parsed else { return };
    let mut rebuilt = vec![0u8; data.len()];
    match message {
        Message::Initiation(m) => {
            messages::write_header(&mut rebuilt, messages::TYPE_INITIATION, m.sender());
            rebuilt[messages::INITIATION_NOISE].copy_from_slice(m.noise());
            assert_eq!(&rebuilt[8..40], m.ephemeral());
            rebuilt[116..132].copy_from_slice(m.mac1());
            rebuilt[132..148].copy_from_slice(m.mac2());
            assert_eq!(m.bytes(), data);
        }
        Message::Response(m) => {
            messages::write_header(&mut rebuilt, messages::TYPE_RESPONSE, m.sender());
            rebuilt[8..12].copy_from_slice(&m.receiver().to_le_bytes());
            rebuilt[messages::RESPONSE_NOISE].copy_from_slice(m.noise());
            rebuilt[60..76].copy_from_slice(m.mac1());
            rebuilt[76..92].copy_from_slice(m.mac2());
            assert_eq!(m.bytes(), data);
        }
        Message::CookieReply(m) => {
            messages::write_header(&mut rebuilt, messages::TYPE_COOKIE_REPLY, m.receiver());
            rebuilt[8..32].copy_from_slice(m.nonce());
            rebuilt[32..64].copy_from_slice(m.encrypted_cookie());
            assert_eq!(m.bytes(), data);
        }
        Message::Data(m) => {
            messages::write_header(&mut rebuilt, messages::TYPE_DATA, m.receiver());
            rebuilt[8..16].copy_from_slice(&m.counter().to_le_bytes());
            rebuilt[messages::DATA_HEADER_LEN..].copy_from_slice(m.ciphertext());
            assert_eq!(m.bytes(), data);
        }
    }
    assert_eq!(rebuilt, data);
    if matches!(message, Message::Initiation(_) | Message::Response(_)) {
        // mac1 and mac2 are the last 32 bytes, where the mac code looks for them.
        let (m1, m2) = (messages::mac1_offset(data.len()), messages::mac2_offset(data.len()));
        assert_eq!((m1 + 32, m2 + 16), (data.len(), data.len()));
    }
});
