//! Maps keyed by what the store itself names (the client ids it hands
//! out), never bytes a client chose. No one can pick keys that collide,
//! so they skip SipHash's flooding defence, which cost more on every
//! command than the rest of its bookkeeping (`execute GET` in
//! `benches/execute.rs`). Command statistics need no map: they are
//! indexed by the command's row (`stats::Stats::commands`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64 bits (one multiply for a `u64`).
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A client id in one multiply: an odd multiplier keeps sequential ids
    /// apart in the low bits and spreads them into the high ones.
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A `HashMap` for keys the store names itself.
pub type NamedMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
