//! One numbered database: the key → [`Entry`] map and the index of keys
//! with a TTL (sampled by active expiry and the volatile eviction policies).

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

use crate::value::Entry;

/// Fixed per-key overhead counted in memory accounting (dict entry, robj,
/// key header), roughly what Redis spends.
pub(crate) const KEY_OVERHEAD: usize = 56;

/// One database.
#[derive(Debug, Clone, Default)]
pub struct Db {
    /// Keys in this database.
    pub(crate) map: IndexMap<Bytes, Entry>,
    /// Keys that have an expiry, for O(1) random sampling.
    pub(crate) volatile: IndexSet<Bytes>,
}

impl Db {
    /// Number of keys (including logically expired ones not yet reclaimed).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when the database holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of keys with an expiry.
    pub fn volatile_len(&self) -> usize {
        self.volatile.len()
    }

    /// Removes a key; returns the entry. Uses swap-removal: key order is
    /// not meaningful (SCAN does not depend on it).
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.swap_remove(key)?;
        if e.expire_at.is_some() {
            self.volatile.swap_remove(key);
        }
        Some(e)
    }

    /// Sets or clears the expiry of an existing key.
    pub(crate) fn set_expire(&mut self, key: &[u8], at: Option<u64>) {
        if let Some((_, k, e)) = self.map.get_full_mut(key) {
            match (e.expire_at.is_some(), at.is_some()) {
                (false, true) => {
                    self.volatile.insert(k.clone());
                }
                (true, false) => {
                    self.volatile.swap_remove(key);
                }
                _ => {}
            }
            e.expire_at = at;
        }
    }

    /// True when the key exists and its expiry has passed.
    pub(crate) fn is_expired(&self, key: &[u8], now: u64) -> bool {
        matches!(self.map.get(key), Some(Entry { expire_at: Some(t), .. }) if *t <= now)
    }
}
