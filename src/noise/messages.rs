//! Codecs for WireGuard's four message types.
//!
//! Parsing borrows the datagram, never allocates and never panics: every length, type and
//! reserved byte is checked first and a wrong one is a [`ParseError`]. Integers are
//! little-endian; every message starts with a type byte and three zero bytes.

use std::fmt;

pub const TYPE_INITIATION: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_COOKIE_REPLY: u8 = 3;
pub const TYPE_DATA: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Type, receiver index and counter in front of the ciphertext.
pub const DATA_HEADER_LEN: usize = 16;
/// The shortest data message: a keepalive, header plus a Poly1305 tag.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + 16;

/// Bytes of the Noise part of an initiation (ephemeral 32, static 32+16, timestamp 12+16).
pub const INITIATION_NOISE: std::ops::Range<usize> = 8..116;
/// Bytes of the Noise part of a response (ephemeral 32, empty 0+16).
pub const RESPONSE_NOISE: std::ops::Range<usize> = 12..60;

/// Why a datagram is not a well-formed WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 4-byte header.
    TooShort { len: usize },
    /// The type byte is not 1 to 4.
    UnknownType(u8),
    /// One of the three bytes after the type is not zero.
    ReservedNotZero,
    /// Right type, wrong size for it.
    WrongLength { message: u8, len: usize },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort { len } => write!(f, "datagram of {len} bytes is shorter than a message header"),
            ParseError::UnknownType(t) => write!(f, "unknown message type {t}"),
            ParseError::ReservedNotZero => f.write_str("reserved header bytes are not zero"),
            ParseError::WrongLength { message, len } => {
                write!(f, "message type {message} cannot be {len} bytes long")
            }
        }
    }
}

impl std::error::Error for ParseError {}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    b[at..at + N].try_into().expect("length checked by parse")
}

/// Message 1: handshake initiation (148 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Initiation<'a>(&'a [u8]);

impl<'a> Initiation<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn sender(&self) -> u32 {
        u32_at(self.0, 4)
    }
    pub fn ephemeral(&self) -> &'a [u8; 32] {
        array_at(self.0, 8)
    }
    pub fn noise(&self) -> &'a [u8] {
        &self.0[INITIATION_NOISE]
    }
    pub fn mac1(&self) -> &'a [u8; 16] {
        array_at(self.0, 116)
    }
    pub fn mac2(&self) -> &'a [u8; 16] {
        array_at(self.0, 132)
    }
}

/// Message 2: handshake response (92 bytes).
#[derive(Clone, Copy, Debug)]
pub struct Response<'a>(&'a [u8]);

impl<'a> Response<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn sender(&self) -> u32 {
        u32_at(self.0, 4)
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, 8)
    }
    pub fn noise(&self) -> &'a [u8] {
        &self.0[RESPONSE_NOISE]
    }
    pub fn mac1(&self) -> &'a [u8; 16] {
        array_at(self.0, 60)
    }
    pub fn mac2(&self) -> &'a [u8; 16] {
        array_at(self.0, 76)
    }
}

/// Message 3: cookie reply (64 bytes).
#[derive(Clone, Copy, Debug)]
pub struct CookieReply<'a>(&'a [u8]);

impl<'a> CookieReply<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, 4)
    }
    pub fn nonce(&self) -> &'a [u8; 24] {
        array_at(self.0, 8)
    }
    pub fn encrypted_cookie(&self) -> &'a [u8; 32] {
        array_at(self.0, 32)
    }
}

/// Message 4: transport data (16-byte header, then ciphertext and tag).
#[derive(Clone, Copy, Debug)]
pub struct Data<'a>(&'a [u8]);

impl<'a> Data<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, 4)
    }
    pub fn counter(&self) -> u64 {
        u64::from_le_bytes(*array_at(self.0, 8))
    }
    /// Ciphertext followed by the 16-byte tag.
    pub fn ciphertext(&self) -> &'a [u8] {
        &self.0[DATA_HEADER_LEN..]
    }
}

/// A parsed message borrowing its datagram.
#[derive(Clone, Copy, Debug)]
pub enum Message<'a> {
    Initiation(Initiation<'a>),
    Response(Response<'a>),
    CookieReply(CookieReply<'a>),
    Data(Data<'a>),
}

/// Reads the type and checks the header and the length for that type.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    if datagram.len() < 4 {
        return Err(ParseError::TooShort { len: datagram.len() });
    }
    let kind = datagram[0];
    if !(TYPE_INITIATION..=TYPE_DATA).contains(&kind) {
        return Err(ParseError::UnknownType(kind));
    }
    if datagram[1..4] != [0, 0, 0] {
        return Err(ParseError::ReservedNotZero);
    }
    let len = datagram.len();
    let ok = match kind {
        TYPE_INITIATION => len == INITIATION_LEN,
        TYPE_RESPONSE => len == RESPONSE_LEN,
        TYPE_COOKIE_REPLY => len == COOKIE_REPLY_LEN,
        _ => len >= DATA_MIN_LEN,
    };
    if !ok {
        return Err(ParseError::WrongLength { message: kind, len });
    }
    Ok(match kind {
        TYPE_INITIATION => Message::Initiation(Initiation(datagram)),
        TYPE_RESPONSE => Message::Response(Response(datagram)),
        TYPE_COOKIE_REPLY => Message::CookieReply(CookieReply(datagram)),
        _ => Message::Data(Data(datagram)),
    })
}

/// Writes the 4-byte header (type and three zero bytes) and a little-endian index after it.
pub fn write_header(buf: &mut [u8], kind: u8, index: u32) {
    buf[0] = kind;
    buf[1..4].fill(0);
    buf[4..8].copy_from_slice(&index.to_le_bytes());
}

/// Offset of mac1 in a handshake message of `len` bytes (mac1 and mac2 are its last 32 bytes).
pub fn mac1_offset(len: usize) -> usize {
    len - 32
}

/// Offset of mac2 in a handshake message of `len` bytes.
pub fn mac2_offset(len: usize) -> usize {
    len - 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_parses_at_its_length_only() {
        for (kind, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 32)] {
            let mut b = vec![0u8; len];
            b[0] = kind;
            assert!(parse(&b).is_ok(), "type {kind} at {len}");
            let mut shorter = b.clone();
            shorter.pop();
            assert_eq!(parse(&shorter).unwrap_err(), ParseError::WrongLength { message: kind, len: len - 1 });
            if kind != 4 {
                b.push(0);
                assert_eq!(parse(&b).unwrap_err(), ParseError::WrongLength { message: kind, len: len + 1 });
            }
        }
    }

    #[test]
    fn header_errors_are_typed() {
        assert_eq!(parse(&[]).unwrap_err(), ParseError::TooShort { len: 0 });
        assert_eq!(parse(&[1, 0, 0]).unwrap_err(), ParseError::TooShort { len: 3 });
        assert_eq!(parse(&[9, 0, 0, 0]).unwrap_err(), ParseError::UnknownType(9));
        assert_eq!(parse(&[0, 0, 0, 0]).unwrap_err(), ParseError::UnknownType(0));
        let mut b = vec![0u8; 148];
        b[0] = 1;
        b[2] = 1;
        assert_eq!(parse(&b).unwrap_err(), ParseError::ReservedNotZero);
    }

    #[test]
    fn fields_are_little_endian_at_their_offsets() {
        let mut b = vec![0u8; 48];
        write_header(&mut b, TYPE_DATA, 0x0403_0201);
        b[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        let Message::Data(d) = parse(&b).unwrap() else { panic!("not data") };
        assert_eq!(d.receiver(), 0x0403_0201);
        assert_eq!(d.counter(), 0x1122_3344_5566_7788);
        assert_eq!(d.ciphertext().len(), 32);

        let mut r = vec![0u8; 92];
        write_header(&mut r, TYPE_RESPONSE, 7);
        r[8..12].copy_from_slice(&9u32.to_le_bytes());
        r[60] = 0xaa;
        r[76] = 0xbb;
        let Message::Response(resp) = parse(&r).unwrap() else { panic!("not a response") };
        assert_eq!((resp.sender(), resp.receiver()), (7, 9));
        assert_eq!((resp.mac1()[0], resp.mac2()[0]), (0xaa, 0xbb));
        assert_eq!(resp.noise().len(), 48);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
