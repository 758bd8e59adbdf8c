//! Cryptography on every core. Each packet of a planned batch has its own counter (reserved by
//! the core), so packets can be sealed, and opened, in any order and on any core; a batch is
//! sent or delivered, in order, only once all of it is done, which keeps every peer's packets
//! in order without a reordering queue.
//!
//! The engine thread that owns a batch splits it by banks of packet slots
//! ([`super::batch::Bank`]) and lends all but the first to a small pool of helper threads (one
//! per other core). It works through its own bank, then takes back and does itself whatever no
//! helper has started (so a batch never waits for a helper that the scheduler has not run),
//! and waits only for banks a helper is working on. Small batches are done in place: a
//! wake-up costs more than sealing a few packets.
//!
//! The pool is shared by the TUN and UDP threads of a device. Its helpers sleep on a condition
//! variable when there is nothing to do; they never spin.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crate::noise::SealPlan;
use crate::noise::session::Session;

use super::batch::{BANK, Bank, Slots};
use crate::sys::udp::{RecvBatch, RecvBuf};

/// A bank is lent out only with at least this many packets to seal in it.
const MIN_LENT: usize = 8;

type Task = Box<dyn FnOnce() + Send>;

/// Helper threads and the tasks waiting for them.
pub(crate) struct Pool {
    tasks: Mutex<VecDeque<Task>>,
    ready: Condvar,
}

impl Pool {
    /// Starts `helpers` helper threads (none: `None`, every batch is done in place).
    pub fn start(helpers: usize) -> std::io::Result<Option<Arc<Pool>>> {
        if helpers == 0 {
            return Ok(None);
        }
        let pool = Arc::new(Pool { tasks: Mutex::new(VecDeque::new()), ready: Condvar::new() });
        for _ in 0..helpers {
            let p = pool.clone();
            thread::Builder::new().name("veil-crypto".into()).spawn(move || {
                loop {
                    let task = {
                        let mut tasks = p.tasks.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(t) = tasks.pop_front() {
                                break t;
                            }
                            tasks = p.ready.wait(tasks).unwrap_or_else(|e| e.into_inner());
                        }
                    };
                    task();
                }
            })?;
        }
        Ok(Some(pool))
    }

    /// How many helpers to start by default: one per core beyond the two that the TUN thread
    /// and a UDP thread, each sealing or opening its own batches, keep busy under load.
    /// `VEIL_CRYPTO_HELPERS` overrides it (0 keeps all cryptography on the engine threads).
    ///
    /// Measured on 2 cores (docs/performance.md): one helper there cost 16% of single-stream
    /// throughput and 21% more CPU per GiB, since no core is idle for it and every lent bank
    /// moves its packets between the cores' caches and costs a wake-up.
    pub fn default_helpers() -> usize {
        if let Some(n) = std::env::var("VEIL_CRYPTO_HELPERS").ok().and_then(|v| v.parse().ok()) {
            return n;
        }
        thread::available_parallelism().map(|n| n.get().saturating_sub(2)).unwrap_or(0).min(16)
    }

    fn submit(&self, task: Task) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push_back(task);
        self.ready.notify_one();
    }

    /// A task no helper has started yet, for the caller to run itself.
    fn take(&self) -> Option<Task> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
    }
}

/// One packet to seal: its slot in the bank, its length, its counter and its plan.
#[derive(Clone, Copy)]
struct Item {
    slot: usize,
    len: usize,
    counter: u64,
    plan: usize,
}

/// What a bank needs to be sealed, lent together and given back together.
struct Loan {
    index: usize,
    bank: Bank,
    items: Vec<Item>,
    sessions: Vec<(Arc<Session>, usize)>,
}

fn seal_bank(bank: &mut Bank, items: &mut [Item], sessions: &[(Arc<Session>, usize)]) {
    for item in items {
        let (session, mtu) = &sessions[item.plan];
        item.len = session.seal_at(item.counter, bank.slot_mut(item.slot), item.len, *mtu).unwrap_or(0);
    }
}

/// Seals the TUN thread's batches, spread over the pool.
pub(crate) struct Sealer {
    pool: Option<Arc<Pool>>,
    items: Vec<Vec<Item>>,
    sessions: Vec<(Arc<Session>, usize)>,
    done_tx: Sender<Loan>,
    done_rx: Receiver<Loan>,
}

impl Sealer {
    pub fn new(pool: Option<Arc<Pool>>) -> Self {
        let (done_tx, done_rx) = channel();
        Sealer { pool, items: Vec::new(), sessions: Vec::new(), done_tx, done_rx }
    }

    /// Adds `packets` (slot numbers, in plan order, with their lengths in `sizes`) to seal
    /// with `plan`.
    pub fn add(&mut self, plan: &SealPlan, packets: &[usize], sizes: &[usize]) {
        let p = self.sessions.len();
        self.sessions.push((plan.session.clone(), plan.mtu));
        for (k, &i) in packets.iter().enumerate() {
            let bank = i / BANK;
            if self.items.len() <= bank {
                self.items.resize_with(bank + 1, Vec::new);
            }
            self.items[bank].push(Item {
                slot: i % BANK,
                len: sizes[i],
                counter: plan.first_counter + k as u64,
                plan: p,
            });
        }
    }

    /// Seals everything added since the last call; each size in `sizes` becomes the length of
    /// the sealed datagram, or 0 when it could not be sealed.
    pub fn seal(&mut self, slots: &mut Slots, sizes: &mut [usize]) {
        let mut lent = 0;
        let mut first = true;
        for b in 0..self.items.len() {
            if self.items[b].is_empty() {
                continue;
            }
            let pool = self.pool.as_ref().filter(|_| !first && self.items[b].len() >= MIN_LENT);
            first = false;
            if let Some(pool) = pool {
                let loan = Loan {
                    index: b,
                    bank: slots.lend(b),
                    items: std::mem::take(&mut self.items[b]),
                    sessions: self.sessions.clone(),
                };
                let done = self.done_tx.clone();
                pool.submit(Box::new(move || {
                    let mut loan = loan;
                    seal_bank(&mut loan.bank, &mut loan.items, &loan.sessions);
                    let _ = done.send(loan);
                }));
                lent += 1;
            }
        }
        // Our own share: every bank not lent.
        for b in 0..self.items.len() {
            if self.items[b].is_empty() {
                continue;
            }
            for item in &mut self.items[b] {
                let (session, mtu) = &self.sessions[item.plan];
                item.len =
                    session.seal_at(item.counter, slots.get_mut(b * BANK + item.slot), item.len, *mtu).unwrap_or(0);
                sizes[b * BANK + item.slot] = item.len;
            }
            self.items[b].clear();
        }
        // Whatever no helper has started yet, we do ourselves.
        if let Some(pool) = self.pool.as_ref().filter(|_| lent > 0) {
            while let Some(task) = pool.take() {
                task();
            }
        }
        for _ in 0..lent {
            let Ok(mut loan) = self.done_rx.recv() else { break };
            for item in &loan.items {
                sizes[loan.index * BANK + item.slot] = item.len;
            }
            loan.items.clear();
            slots.give_back(loan.index, loan.bank);
            self.items[loan.index] = loan.items;
        }
        self.sessions.clear();
    }
}

/// One data message to open: where it lies in the receive batch, its counter, its session
/// (an index into the batch's sessions) and, once opened, what it held.
#[derive(Clone, Copy)]
pub(crate) struct OpenItem {
    pub buf: usize,
    pub off: usize,
    pub len: usize,
    pub counter: u64,
    pub session: usize,
    /// After opening: the padded plaintext's length, `None` if it did not authenticate.
    pub plain: Option<usize>,
    /// After opening: the IP packet's length (0: keepalive, refused, or not an IP packet).
    pub packet: usize,
    /// After opening: refused by the replay window (not by authentication).
    pub replayed: bool,
}

fn open_items(buf: &mut [u8], items: &mut [OpenItem], sessions: &[Arc<Session>], expired: &[bool]) {
    use crate::noise::messages::DATA_HEADER_LEN;
    for item in items {
        if expired[item.session] {
            continue;
        }
        let body = &mut buf[item.off + DATA_HEADER_LEN..item.off + item.len];
        match sessions[item.session].open(item.counter, body) {
            Ok(plain) => {
                item.plain = Some(plain.len());
                item.packet = if plain.is_empty() { 0 } else { crate::noise::ip::packet_len(plain).unwrap_or(0) };
            }
            Err(e) => item.replayed = e == crate::noise::session::SessionError::Replay,
        }
    }
}

/// What a receive buffer needs to be opened, lent together and given back together.
struct OpenLoan {
    index: usize,
    buf: RecvBuf,
    items: Vec<OpenItem>,
    sessions: Vec<Arc<Session>>,
    expired: Vec<bool>,
}

/// Opens a UDP thread's batches, spread over the pool.
pub(crate) struct Opener {
    pool: Option<Arc<Pool>>,
    /// Runs of items (start, end) this thread opens itself.
    own: Vec<(usize, usize)>,
    done_tx: Sender<OpenLoan>,
    done_rx: Receiver<OpenLoan>,
}

impl Opener {
    pub fn new(pool: Option<Arc<Pool>>) -> Self {
        let (done_tx, done_rx) = channel();
        Opener { pool, own: Vec::new(), done_tx, done_rx }
    }

    /// Opens every item in place in `recv`; `items` are in buffer order. `expired[s]` tells
    /// whether session `s` may no longer be used (its messages are left unopened).
    pub fn open(&mut self, recv: &mut RecvBatch, items: &mut [OpenItem], sessions: &[Arc<Session>], expired: &[bool]) {
        let mut lent = 0;
        let mut start = 0;
        let mut first = true;
        self.own.clear();
        while start < items.len() {
            let b = items[start].buf;
            let end = start + items[start..].iter().take_while(|i| i.buf == b).count();
            let pool = self.pool.as_ref().filter(|_| !first && end - start >= MIN_LENT);
            first = false;
            match pool {
                Some(pool) => {
                    let loan = OpenLoan {
                        index: b,
                        buf: recv.lend(b),
                        items: items[start..end].to_vec(),
                        sessions: sessions.to_vec(),
                        expired: expired.to_vec(),
                    };
                    let done = self.done_tx.clone();
                    pool.submit(Box::new(move || {
                        let mut loan = loan;
                        open_items(loan.buf.bytes_mut(), &mut loan.items, &loan.sessions, &loan.expired);
                        let _ = done.send(loan);
                    }));
                    lent += 1;
                }
                None => self.own.push((start, end)),
            }
            start = end;
        }
        for &(start, end) in &self.own {
            let (buf, _) = recv.get_mut(items[start].buf);
            open_items(buf, &mut items[start..end], sessions, expired);
        }
        if let Some(pool) = self.pool.as_ref().filter(|_| lent > 0) {
            while let Some(task) = pool.take() {
                task();
            }
        }
        for _ in 0..lent {
            let Ok(loan) = self.done_rx.recv() else { break };
            // The loan's items are a copy of a contiguous run of ours, in the same order.
            let at = items.iter().position(|i| i.buf == loan.index).expect("lent buffer has items");
            items[at..at + loan.items.len()].copy_from_slice(&loan.items);
            recv.give_back(loan.index, loan.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::messages::DATA_HEADER_LEN;
    use crate::noise::session::sealed_len;
    use crate::sys::udp::{Sockets, datagrams};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    fn sessions() -> (Arc<Session>, Arc<Session>) {
        let t = Instant::now();
        let limit = u64::MAX - 8192;
        let a = Session::new(1, 2, &[1; 32], &[2; 32], t, true, limit, Duration::from_secs(180));
        let b = Session::new(2, 1, &[2; 32], &[1; 32], t, false, limit, Duration::from_secs(180));
        (Arc::new(a), Arc::new(b))
    }

    /// An IPv4 packet of `len` bytes whose payload encodes `seq`.
    fn packet(seq: usize, len: usize) -> Vec<u8> {
        let mut p = vec![(seq % 251) as u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        p
    }

    #[test]
    fn batches_sealed_by_helpers_open_in_order_with_their_own_counters() {
        let pool = Pool::start(2).unwrap();
        let (tx, rx) = sessions();
        let mut slots = Slots::new(4 * BANK);
        let mut sizes = vec![0usize; 4 * BANK];
        // Packets spread over every bank (several lent, one kept), with different sizes.
        let chosen: Vec<usize> = (0..4 * BANK).filter(|i| i % 3 != 1).collect();
        for &i in &chosen {
            let p = packet(i, 60 + (i * 37) % 1300);
            sizes[i] = p.len();
            slots.get_mut(i)[DATA_HEADER_LEN..DATA_HEADER_LEN + p.len()].copy_from_slice(&p);
        }
        let first = tx.reserve(chosen.len() as u64).unwrap();
        let plan = SealPlan {
            peer: crate::noise::PeerId(1),
            endpoint: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            session: tx.clone(),
            first_counter: first,
            mtu: 1420,
        };
        let mut sealer = Sealer::new(pool);
        sealer.add(&plan, &chosen, &sizes);
        sealer.seal(&mut slots, &mut sizes);
        for (k, &i) in chosen.iter().enumerate() {
            let want = packet(i, 60 + (i * 37) % 1300);
            assert_eq!(sizes[i], sealed_len(want.len(), 1420), "slot {i}");
            let msg = &mut slots.get_mut(i)[..sizes[i]];
            assert_eq!(u64::from_le_bytes(msg[8..16].try_into().unwrap()), first + k as u64, "counter of slot {i}");
            let plain = rx.open(first + k as u64, &mut msg[DATA_HEADER_LEN..]).unwrap();
            assert_eq!(&plain[..want.len()], &want[..]);
        }
    }

    #[test]
    fn received_trains_opened_by_helpers_come_back_in_place() {
        let pool = Pool::start(2).unwrap();
        let (tx, rx) = sessions();
        let sink = Sockets::bind(0, 0).unwrap();
        let source = Sockets::bind(0, 0).unwrap();
        // Three trains of 20 datagrams (from three source ports: three GRO buffers) ...
        let sources = [source, Sockets::bind(0, 0).unwrap(), Sockets::bind(0, 0).unwrap()];
        let mut sent = Vec::new();
        for (s, from) in sources.iter().enumerate() {
            let mut train = Vec::new();
            for k in 0..20 {
                let p = packet(s * 100 + k, 1000);
                let mut msg = vec![0u8; sealed_len(p.len(), 1420)];
                msg[DATA_HEADER_LEN..DATA_HEADER_LEN + p.len()].copy_from_slice(&p);
                let counter = tx.reserve(1).unwrap();
                let n = tx.seal_at(counter, &mut msg, p.len(), 1420).unwrap();
                msg.truncate(n);
                train.push(msg);
                sent.push(p);
            }
            let refs: Vec<&[u8]> = train.iter().map(Vec::as_slice).collect();
            from.send_batch(SocketAddr::from((Ipv4Addr::LOCALHOST, sink.port)), None, &refs).unwrap();
        }
        let mut batch = RecvBatch::default();
        let sock = sink.v4.as_ref().unwrap();
        let mut opened: Vec<Vec<u8>> = Vec::new();
        let mut opener = Opener::new(pool);
        while opened.len() < sent.len() {
            assert!(sock.recv_batch(&mut batch).unwrap() > 0);
            let mut items = Vec::new();
            for b in 0..batch.len() {
                let (buf, meta) = batch.get_mut(b);
                for (off, len) in datagrams(meta) {
                    let counter = u64::from_le_bytes(buf[off + 8..off + 16].try_into().unwrap());
                    items.push(OpenItem {
                        buf: b,
                        off,
                        len,
                        counter,
                        session: 0,
                        plain: None,
                        packet: 0,
                        replayed: false,
                    });
                }
            }
            opener.open(&mut batch, &mut items, std::slice::from_ref(&rx), &[false]);
            for item in &items {
                assert!(item.plain.is_some(), "every datagram authenticates");
                let (buf, _) = batch.get_mut(item.buf);
                let start = item.off + DATA_HEADER_LEN;
                opened.push(buf[start..start + item.packet].to_vec());
            }
        }
        // Each train arrives in order; trains may interleave.
        for s in 0..3 {
            let train_of = |p: &Vec<u8>| u32::from_be_bytes(p[4..8].try_into().unwrap()) as usize / 100;
            let mine: Vec<&Vec<u8>> = opened.iter().filter(|p| train_of(p) == s).collect();
            let want: Vec<&Vec<u8>> = sent[s * 20..(s + 1) * 20].iter().collect();
            assert_eq!(mine, want, "train {s}");
        }
    }
}
