//! snow's crypto resolver for veil: X25519 from aws-lc-rs, the static-static DH looked up from
//! a per-interface table computed once per peer, and a seeded RNG so that handshakes can be
//! replayed exactly in tests.
//!
//! Hash (BLAKE2s) and cipher (ChaCha20-Poly1305) of the handshake itself stay with snow's
//! default resolver. Everything handed to snow that holds a secret (the DH keys, the cipher's
//! key, the hasher's buffer, the RNG that makes the ephemeral key) is [`Wiped`] when snow
//! drops it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::crypto;
use super::wipe::Wiped;

/// DH(our static, peer static) for every known peer, computed when the peer is added.
#[derive(Default)]
pub struct StaticStaticTable {
    owner: Zeroizing<[u8; 32]>,
    owner_public: [u8; 32],
    /// Behind a lock, not copied on write: handshakes in flight hold the table (an `Arc`), and
    /// adding a peer must not copy every other peer's entry (10,000 peers added one by one
    /// while handshakes run would copy the table 10,000 times).
    shared: RwLock<HashMap<[u8; 32], Zeroizing<[u8; 32]>>>,
}

impl StaticStaticTable {
    pub fn new(owner: &[u8; 32]) -> Self {
        StaticStaticTable {
            owner: Zeroizing::new(*owner),
            owner_public: crypto::x25519_base(owner),
            shared: RwLock::new(HashMap::new()),
        }
    }

    /// Computes and stores DH(owner, peer); `false` if the result is zero (small-order key).
    pub fn insert(&self, peer: &[u8; 32]) -> bool {
        match crypto::x25519(&self.owner, peer) {
            Ok(ss) => {
                self.shared.write().unwrap_or_else(|e| e.into_inner()).insert(*peer, ss);
                true
            }
            Err(_) => false,
        }
    }

    pub fn remove(&self, peer: &[u8; 32]) {
        self.shared.write().unwrap_or_else(|e| e.into_inner()).remove(peer);
    }

    fn lookup(&self, private: &[u8; 32], peer: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        if !bool::from(self.owner.ct_eq(private)) {
            return None;
        }
        let key: &[u8; 32] = peer.get(..32)?.try_into().ok()?;
        self.shared.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

/// One handshake's resolver: built fresh for every handshake with a seed from the interface RNG.
pub struct Resolver {
    /// Determines the handshake's ephemeral key: as secret as that key.
    seed: Zeroizing<[u8; 32]>,
    table: Arc<StaticStaticTable>,
}

impl Resolver {
    pub fn new(seed: [u8; 32], table: Arc<StaticStaticTable>) -> Self {
        Resolver { seed: Zeroizing::new(seed), table }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Wiped::new(SeededRng(ChaCha20Rng::from_seed(*self.seed)))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(Wiped::new(X25519Dh {
                private: Zeroizing::new([0u8; 32]),
                public: [0u8; 32],
                table: Some(self.table.clone()),
            }))),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice).map(|h| Box::new(Wiped::from_box(h)) as Box<dyn Hash>)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice).map(|c| Box::new(Wiped::from_box(c)) as Box<dyn Cipher>)
    }
}

// snow's traits, passed through to the wiped value (every method, so that an implementation's
// own versions of the provided ones are kept).

impl<T: Random + ?Sized> Random for Wiped<T> {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        (**self).try_fill_bytes(dest)
    }
}

impl<T: Dh + ?Sized> Dh for Wiped<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn pub_len(&self) -> usize {
        (**self).pub_len()
    }
    fn priv_len(&self) -> usize {
        (**self).priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        (**self).set(privkey)
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        (**self).generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        (**self).pubkey()
    }
    fn privkey(&self) -> &[u8] {
        (**self).privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        (**self).dh(pubkey, out)
    }
    fn dh_len(&self) -> usize {
        (**self).dh_len()
    }
}

impl<T: Hash + ?Sized> Hash for Wiped<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn block_len(&self) -> usize {
        (**self).block_len()
    }
    fn hash_len(&self) -> usize {
        (**self).hash_len()
    }
    fn reset(&mut self) {
        (**self).reset()
    }
    fn input(&mut self, data: &[u8]) {
        (**self).input(data)
    }
    fn result(&mut self, out: &mut [u8]) {
        (**self).result(out)
    }
    fn hmac(&mut self, key: &[u8], data: &[u8], out: &mut [u8]) {
        (**self).hmac(key, data, out)
    }
    fn hkdf(
        &mut self,
        chaining_key: &[u8],
        input_key_material: &[u8],
        outputs: usize,
        out1: &mut [u8],
        out2: &mut [u8],
        out3: &mut [u8],
    ) {
        (**self).hkdf(chaining_key, input_key_material, outputs, out1, out2, out3)
    }
}

impl<T: Cipher + ?Sized> Cipher for Wiped<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn set(&mut self, key: &[u8; 32]) {
        (**self).set(key)
    }
    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        (**self).encrypt(nonce, authtext, plaintext, out)
    }
    fn decrypt(&self, nonce: u64, authtext: &[u8], ciphertext: &[u8], out: &mut [u8]) -> Result<usize, snow::Error> {
        (**self).decrypt(nonce, authtext, ciphertext, out)
    }
    fn rekey(&mut self) {
        (**self).rekey()
    }
}

struct SeededRng(ChaCha20Rng);

impl Random for SeededRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct X25519Dh {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// Only consulted while `private` is the table's owner, i.e. for our static key.
    table: Option<Arc<StaticStaticTable>>,
}

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        self.private.copy_from_slice(privkey);
        // Our static key's public half is known already: skip a scalar multiplication.
        self.public = match &self.table {
            Some(t) if bool::from(t.owner[..].ct_eq(&self.private[..])) => t.owner_public,
            _ => crypto::x25519_base(&self.private),
        };
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private[..])?;
        super::keys::clamp(&mut self.private);
        self.public = crypto::x25519_base(&self.private);
        self.table = None;
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if let Some(ss) = self.table.as_ref().and_then(|t| t.lookup(&self.private, pubkey)) {
            out[..32].copy_from_slice(&ss[..]);
            return Ok(());
        }
        // snow passes its whole key buffer; an X25519 key is its first 32 bytes.
        let peer: &[u8; 32] = pubkey.get(..32).and_then(|k| k.try_into().ok()).ok_or(snow::Error::Dh)?;
        let shared = crypto::x25519(&self.private, peer).map_err(|_| snow::Error::Dh)?;
        out[..32].copy_from_slice(&shared[..]);
        Ok(())
    }
}
