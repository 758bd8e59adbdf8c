//! A session's keypair: the two transport keys, the receiver indices, the send counter and the
//! replay window.
//!
//! A session is shared (`Arc`) so that an engine can seal and open on several threads: the send
//! counter is atomic and the replay window sits behind a short lock taken only after a packet
//! authenticated.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::crypto::{DataKey, TAG_LEN};
use super::messages::{DATA_HEADER_LEN, TYPE_DATA, write_header};
use super::replay::ReplayWindow;

/// Why a session refused to seal or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The send counter reached REJECT_AFTER_MESSAGES.
    Exhausted,
    /// The output buffer is too small for the sealed packet.
    BufferTooSmall,
    /// The tag did not verify.
    Decrypt,
    /// The counter was seen before, is too old for the window, or is beyond the message limit.
    Replay,
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionError::Exhausted => "session has sent its maximum number of messages",
            SessionError::BufferTooSmall => "output buffer too small",
            SessionError::Decrypt => "data message failed authentication",
            SessionError::Replay => "data message counter replayed or outside the window",
        })
    }
}

impl std::error::Error for SessionError {}

/// Length of the plaintext once zero-padded to a multiple of 16, capped at `mtu` (never below
/// the packet's own length).
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let padded = len.div_ceil(16) * 16;
    padded.min(mtu.max(len))
}

/// Bytes a data message carrying a packet of `len` bytes occupies on the wire.
pub fn sealed_len(len: usize, mtu: usize) -> usize {
    DATA_HEADER_LEN + padded_len(len, mtu) + TAG_LEN
}

/// One keypair, as derived by a completed handshake.
pub struct Session {
    /// The index peers put in data messages to us (we chose it).
    pub local_index: u32,
    /// The index we put in data messages to the peer (it chose it).
    pub remote_index: u32,
    /// When the handshake that made it completed.
    pub created: Instant,
    /// True when this side sent the initiation (only the initiator rekeys after time).
    pub we_initiated: bool,
    send_key: DataKey,
    recv_key: DataKey,
    send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
    reject_after_messages: u64,
    /// `created` + REJECT_AFTER_TIME (`None`: beyond what an `Instant` can hold).
    expires: Option<Instant>,
}

impl Session {
    /// A session made at `created` from the two transport keys of a handshake. It refuses to
    /// send more than `reject_after_messages` messages and, from `created + reject_after_time`
    /// on, reports itself [expired](Session::expired) (REJECT_AFTER_MESSAGES and
    /// REJECT_AFTER_TIME, paper section 6.1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        created: Instant,
        we_initiated: bool,
        reject_after_messages: u64,
        reject_after_time: Duration,
    ) -> Self {
        Session {
            local_index,
            remote_index,
            created,
            we_initiated,
            send_key: DataKey::new(send_key),
            recv_key: DataKey::new(recv_key),
            send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::new()),
            reject_after_messages,
            expires: created.checked_add(reject_after_time),
        }
    }

    /// True from REJECT_AFTER_TIME after the session was made: it may no longer send or receive.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| now >= t)
    }

    /// Reserves `n` consecutive send counters and returns the first, or `None` when fewer than
    /// `n` remain before REJECT_AFTER_MESSAGES (then none is used). One atomic operation, so
    /// threads sealing batches of the same session never share a counter.
    pub fn reserve(&self, n: u64) -> Option<u64> {
        let first = self.send_counter.fetch_add(n, Ordering::Relaxed);
        match first.checked_add(n) {
            Some(end) if end <= self.reject_after_messages => Some(first),
            _ => {
                self.send_counter.store(self.reject_after_messages, Ordering::Relaxed);
                None
            }
        }
    }

    /// Seals, in place, the packet of `len` bytes at `msg[DATA_HEADER_LEN..]` with a counter
    /// reserved by [`Session::reserve`]: writes the header, zero-pads the packet to a multiple
    /// of 16 (capped at `mtu`), encrypts and appends the tag. `msg` must hold
    /// [`sealed_len`]`(len, mtu)` bytes. Returns the message's length.
    pub fn seal_at(&self, counter: u64, msg: &mut [u8], len: usize, mtu: usize) -> Result<usize, SessionError> {
        let padded = padded_len(len, mtu);
        let total = DATA_HEADER_LEN + padded + TAG_LEN;
        if msg.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        write_header(msg, TYPE_DATA, self.remote_index);
        msg[8..16].copy_from_slice(&counter.to_le_bytes());
        let body = &mut msg[DATA_HEADER_LEN..DATA_HEADER_LEN + padded];
        body[len..].fill(0);
        let tag = self.send_key.seal(counter, body);
        msg[DATA_HEADER_LEN + padded..total].copy_from_slice(&tag);
        Ok(total)
    }

    /// How many counters have been used for sending.
    pub fn sent_messages(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed).min(self.reject_after_messages)
    }

    /// Encrypts `packet` into `out` as a complete data message; returns its length and counter.
    /// An empty packet makes a keepalive.
    pub fn seal(&self, packet: &[u8], out: &mut [u8], mtu: usize) -> Result<(usize, u64), SessionError> {
        if out.len() < sealed_len(packet.len(), mtu) {
            return Err(SessionError::BufferTooSmall);
        }
        let counter = self.reserve(1).ok_or(SessionError::Exhausted)?;
        out[DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        let n = self.seal_at(counter, out, packet.len(), mtu)?;
        Ok((n, counter))
    }

    /// Decrypts a data message in place (its header already parsed: `counter` and the bytes
    /// after the header) and records the counter. Returns the padded plaintext.
    pub fn open<'a>(&self, counter: u64, ciphertext: &'a mut [u8]) -> Result<&'a mut [u8], SessionError> {
        if self.replay.lock().expect("replay lock").is_stale(counter) {
            return Err(SessionError::Replay);
        }
        let n = self.recv_key.open(counter, ciphertext).ok_or(SessionError::Decrypt)?;
        if !self.replay.lock().expect("replay lock").accept(counter, self.reject_after_messages) {
            return Err(SessionError::Replay);
        }
        Ok(&mut ciphertext[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(limit: u64) -> (Session, Session) {
        let t = Instant::now();
        let a = Session::new(1, 2, &[1; 32], &[2; 32], t, true, limit, Duration::from_secs(180));
        let b = Session::new(2, 1, &[2; 32], &[1; 32], t, false, limit, Duration::from_secs(180));
        (a, b)
    }

    #[test]
    fn padding_rounds_up_to_16_but_not_past_the_mtu() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(17, 1420), 32);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1500, 1420), 1500);
    }

    #[test]
    fn seal_open_round_trip_with_padding_and_counters() {
        let (a, b) = pair(u64::MAX - 8192);
        let mut buf = [0u8; 256];
        let (n, c0) = a.seal(b"hello", &mut buf, 1420).unwrap();
        assert_eq!((n, c0), (16 + 16 + 16, 0));
        assert_eq!(&buf[4..8], &2u32.to_le_bytes());
        let plain = b.open(0, &mut buf[16..n]).unwrap();
        assert_eq!(&plain[..5], b"hello");
        assert!(plain[5..].iter().all(|&x| x == 0));
        assert_eq!(plain.len(), 16);
        let (_, c1) = a.seal(b"", &mut buf, 1420).unwrap();
        assert_eq!(c1, 1);
        assert_eq!(a.sent_messages(), 2);
    }

    #[test]
    fn replayed_or_forged_messages_are_refused() {
        let (a, b) = pair(u64::MAX - 8192);
        let mut buf = [0u8; 64];
        let (n, _) = a.seal(b"x", &mut buf, 1420).unwrap();
        let original = buf;
        assert!(b.open(0, &mut buf[16..n]).is_ok());
        let mut again = original;
        assert_eq!(b.open(0, &mut again[16..n]).unwrap_err(), SessionError::Replay);
        let mut forged = original;
        forged[20] ^= 1;
        assert_eq!(b.open(0, &mut forged[16..n]).unwrap_err(), SessionError::Decrypt);
        // The wrong counter for the ciphertext fails authentication and burns nothing.
        let mut wrong = original;
        assert_eq!(b.open(5, &mut wrong[16..n]).unwrap_err(), SessionError::Decrypt);
        let (n2, c) = a.seal(b"y", &mut buf, 1420).unwrap();
        assert_eq!(c, 1);
        assert!(b.open(1, &mut buf[16..n2]).is_ok());
    }

    #[test]
    fn sending_stops_at_reject_after_messages() {
        let (a, b) = pair(3);
        let mut buf = [0u8; 64];
        for expect in 0..3 {
            let (n, c) = a.seal(b"p", &mut buf, 1420).unwrap();
            assert_eq!(c, expect);
            assert!(b.open(c, &mut buf[16..n]).is_ok());
        }
        assert_eq!(a.seal(b"p", &mut buf, 1420).unwrap_err(), SessionError::Exhausted);
        assert_eq!(a.seal(b"p", &mut buf, 1420).unwrap_err(), SessionError::Exhausted);
        assert_eq!(a.sent_messages(), 3);
    }

    #[test]
    fn reserved_ranges_never_overlap_and_stop_at_the_limit() {
        let (a, b) = pair(10);
        assert_eq!(a.reserve(4), Some(0));
        assert_eq!(a.reserve(4), Some(4));
        assert_eq!(a.reserve(3), None, "only 2 counters are left");
        assert_eq!(a.reserve(1), None, "a refused reservation uses the rest up");
        assert_eq!(a.sent_messages(), 10);
        let mut buf = [0u8; 64];
        buf[16..21].copy_from_slice(b"hello");
        let n = a.seal_at(5, &mut buf, 5, 1420).unwrap();
        assert_eq!(&buf[8..16], &5u64.to_le_bytes());
        assert_eq!(&b.open(5, &mut buf[16..n]).unwrap()[..5], b"hello");
    }

    #[test]
    fn a_session_expires_at_reject_after_time() {
        let t = Instant::now();
        let s = Session::new(1, 2, &[1; 32], &[2; 32], t, true, 100, Duration::from_secs(180));
        assert!(!s.expired(t + Duration::from_secs(179)));
        assert!(s.expired(t + Duration::from_secs(180)));
        let forever = Session::new(1, 2, &[1; 32], &[2; 32], t, true, 100, Duration::MAX);
        assert!(!forever.expired(t + Duration::from_secs(1 << 40)));
    }
}
