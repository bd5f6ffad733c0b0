//! One shard of the near-cache: a map from key to entries (one per db) and
//! a recency list threaded through a slab, with byte accounting.
//!
//! The list lives in a `Vec` of nodes linked by index, so touching an entry
//! on a hit is two relinks and no allocation, and a freed slot is reused by
//! the next insert. The map is keyed by the key's hash alone (not by
//! `(db, key)`): tracking invalidations name a key without a db, so
//! dropping a key from every db is one map lookup; and the hash the cache
//! already computed to pick the shard is reused as is, so a lookup hashes
//! the key once. Keys are compared in the nodes, so two keys with the same
//! 64-bit hash still stay apart.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use bytes::Bytes;

use super::Cached;
use crate::prehashed::Prehashed;

/// "No node": the end of the recency list.
const NIL: u32 = u32::MAX;

/// One cached value and what is known about it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The key's hash (from the cache's hasher).
    pub hash: u64,
    /// Database the value belongs to.
    pub db: u32,
    /// The key (shared with the map, so stored once).
    pub key: Bytes,
    /// The value.
    pub value: Cached,
    /// Absolute expiry in Unix ms; `None` means no expiry.
    pub expire_at_ms: Option<u64>,
    /// Written by Redoubt during an outage rather than read from Redis:
    /// exempt from the staleness bound, dropped when tracking restarts.
    pub local: bool,
    /// Bytes charged against the budget.
    pub size: usize,
}

impl Entry {
    /// Expired under Redis's rule: a key lives through its expiry
    /// millisecond and is gone after it.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms.is_some_and(|at| now_ms > at)
    }
}

struct Node {
    entry: Option<Entry>,
    prev: u32,
    next: u32,
}

/// The nodes whose key has one hash. Almost every key lives in one db and
/// no other key shares its hash, so that case carries no allocation.
enum Slots {
    One(u32),
    Many(Vec<u32>),
}

impl Slots {
    fn as_slice(&self) -> &[u32] {
        match self {
            Slots::One(i) => std::slice::from_ref(i),
            Slots::Many(v) => v,
        }
    }
}

/// An LRU shard bounded by `budget` bytes.
pub(super) struct Shard {
    map: HashMap<u64, Slots, BuildHasherDefault<Prehashed>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    bytes: usize,
    len: usize,
    budget: usize,
}

impl Shard {
    /// An empty shard holding at most `budget` bytes.
    pub fn new(budget: usize) -> Shard {
        Shard {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            len: 0,
            budget,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn entry(&self, idx: u32) -> Option<&Entry> {
        self.nodes[idx as usize].entry.as_ref()
    }

    fn find(&self, h: u64, db: u32, key: &[u8]) -> Option<u32> {
        self.map.get(&h)?.as_slice().iter().copied().find(|&i| {
            self.entry(i)
                .is_some_and(|e| e.db == db && e.key[..] == *key)
        })
    }

    /// The entry for `(db, key)` (`h` its hash), marked most recently used.
    pub fn get(&mut self, h: u64, db: u32, key: &[u8]) -> Option<&mut Entry> {
        let idx = self.find(h, db, key)?;
        self.unlink(idx);
        self.push_front(idx);
        self.nodes[idx as usize].entry.as_mut()
    }

    /// The entry for `(db, key)` without touching its recency.
    pub fn peek(&self, h: u64, db: u32, key: &[u8]) -> Option<&Entry> {
        self.entry(self.find(h, db, key)?)
    }

    /// Removes `(db, key)`; true if it was there.
    pub fn remove(&mut self, h: u64, db: u32, key: &[u8]) -> bool {
        self.take(h, db, key).is_some()
    }

    /// Removes `(db, key)` and hands its entry back.
    pub fn take(&mut self, h: u64, db: u32, key: &[u8]) -> Option<Entry> {
        let idx = self.find(h, db, key)?;
        self.drop_node(idx)
    }

    /// Removes `key` from every db; how many entries went.
    pub fn remove_key(&mut self, h: u64, key: &[u8]) -> usize {
        let idxs: Vec<u32> = match self.map.get(&h) {
            None => return 0,
            Some(slots) => slots
                .as_slice()
                .iter()
                .copied()
                .filter(|&i| self.entry(i).is_some_and(|e| e.key[..] == *key))
                .collect(),
        };
        for &i in &idxs {
            self.drop_node(i);
        }
        idxs.len()
    }

    /// Inserts `entry`, replacing any entry for the same db and key, then
    /// evicts least recently used entries until the shard fits its budget.
    /// An entry bigger than the whole budget is not kept, and the entry it
    /// would have replaced is removed all the same: that value is outdated.
    /// Returns whether the entry was kept.
    pub fn insert(&mut self, entry: Entry) -> bool {
        self.remove(entry.hash, entry.db, &entry.key);
        if entry.size > self.budget {
            return false;
        }
        while self.bytes + entry.size > self.budget && self.tail != NIL {
            self.drop_node(self.tail);
        }
        let (h, size) = (entry.hash, entry.size);
        let node = Node {
            entry: Some(entry),
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                // A shard never holds 2^32 entries: its budget is bytes and
                // every entry costs a fixed overhead of dozens of bytes.
                (self.nodes.len() - 1) as u32
            }
        };
        self.push_front(idx);
        match self.map.get_mut(&h) {
            None => {
                self.map.insert(h, Slots::One(idx));
            }
            Some(slots) => match slots {
                Slots::One(i) => *slots = Slots::Many(vec![*i, idx]),
                Slots::Many(v) => v.push(idx),
            },
        }
        self.bytes += size;
        self.len += 1;
        true
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        *self = Shard::new(self.budget);
    }

    fn drop_node(&mut self, idx: u32) -> Option<Entry> {
        self.unlink(idx);
        let entry = self.nodes[idx as usize].entry.take()?;
        self.free.push(idx);
        self.bytes -= entry.size;
        self.len -= 1;
        let now_empty = match self.map.get_mut(&entry.hash) {
            None => false,
            Some(Slots::One(_)) => true,
            Some(Slots::Many(v)) => {
                v.retain(|&i| i != idx);
                v.is_empty()
            }
        };
        if now_empty {
            self.map.remove(&entry.hash);
        }
        Some(entry)
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else if self.head == idx {
            self.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else if self.tail == idx {
            self.tail = prev;
        }
        let n = &mut self.nodes[idx as usize];
        n.prev = NIL;
        n.next = NIL;
    }

    fn push_front(&mut self, idx: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[idx as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            self.nodes[old as usize].prev = idx;
        }
        self.head = idx;
        if self.tail == NIL {
            self.tail = idx;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deliberately weak hash, so the tests also exercise keys that
    /// share one.
    fn h(key: &[u8]) -> u64 {
        key.len() as u64
    }

    fn entry(db: u32, key: &str, size: usize) -> Entry {
        Entry {
            hash: h(key.as_bytes()),
            db,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Cached::String(Bytes::new()),
            expire_at_ms: None,
            local: false,
            size,
        }
    }

    #[test]
    fn evicts_from_the_tail_and_a_get_moves_to_the_head() {
        let mut s = Shard::new(30);
        assert!(s.insert(entry(0, "a", 10)));
        assert!(s.insert(entry(0, "b", 10)));
        assert!(s.insert(entry(0, "c", 10)));
        assert!(s.get(h(b"a"), 0, b"a").is_some());
        assert!(s.insert(entry(0, "d", 10)));
        assert!(
            s.peek(h(b"b"), 0, b"b").is_none(),
            "b was least recently used"
        );
        assert!(s.peek(h(b"a"), 0, b"a").is_some());
        assert_eq!((s.len(), s.bytes()), (3, 30));
    }

    #[test]
    fn one_key_in_several_dbs_is_removed_everywhere_by_remove_key() {
        let mut s = Shard::new(100);
        s.insert(entry(0, "k", 10));
        s.insert(entry(3, "k", 10));
        s.insert(entry(3, "other", 10));
        assert!(s.peek(h(b"k"), 3, b"k").is_some());
        assert_eq!(s.remove_key(h(b"k"), b"k"), 2);
        assert!(s.peek(h(b"k"), 0, b"k").is_none() && s.peek(h(b"k"), 3, b"k").is_none());
        assert_eq!((s.len(), s.bytes()), (1, 10));
    }

    #[test]
    fn keys_sharing_a_hash_stay_apart() {
        let mut s = Shard::new(100);
        s.insert(entry(0, "ab", 10));
        s.insert(entry(0, "cd", 10));
        s.insert(entry(1, "ab", 10));
        assert_eq!(h(b"ab"), h(b"cd"));
        assert!(s.peek(h(b"cd"), 1, b"cd").is_none());
        assert_eq!(s.remove_key(h(b"ab"), b"ab"), 2);
        assert!(s.peek(h(b"cd"), 0, b"cd").is_some());
        assert!(s.remove(h(b"cd"), 0, b"cd"));
        assert!(s.map.is_empty());
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn replacing_charges_only_the_new_size_and_oversized_entries_are_refused() {
        let mut s = Shard::new(50);
        s.insert(entry(0, "k", 10));
        s.insert(entry(0, "k", 20));
        assert_eq!((s.len(), s.bytes()), (1, 20));
        assert!(!s.insert(entry(0, "k", 51)));
        assert!(
            s.peek(h(b"k"), 0, b"k").is_none(),
            "the outdated value is gone"
        );
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn slots_are_reused_and_the_list_stays_consistent_under_churn() {
        let mut s = Shard::new(40);
        for i in 0..1000u32 {
            let k = format!("k{}", i % 7);
            s.insert(entry(i % 3, &k, 10));
            if i % 5 == 0 {
                s.remove(h(k.as_bytes()), i % 3, k.as_bytes());
            }
            assert!(s.bytes() <= 40);
        }
        assert!(s.nodes.len() <= 5, "slots reused, got {}", s.nodes.len());
        // Walk the list both ways: it must hold exactly `len` nodes.
        let mut n = 0;
        let mut i = s.head;
        while i != NIL {
            n += 1;
            i = s.nodes[i as usize].next;
        }
        assert_eq!(n, s.len());
        let mut n = 0;
        let mut i = s.tail;
        while i != NIL {
            n += 1;
            i = s.nodes[i as usize].prev;
        }
        assert_eq!(n, s.len());
    }
}
