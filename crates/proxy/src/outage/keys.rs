//! What the outage knows of each key it touched: whether its whole value
//! is local (`known`), and whether it has journal records not replayed yet
//! (`dirty`). One map under one lock, looked up by `(db, &[u8])` without
//! building a key: a durable write asks and marks its keys several times,
//! and each lookup in a set of 100,000 keys is a cache miss or two. Each
//! key is hashed once per call and the map keeps its hash: a new key is
//! not hashed again to be inserted, nor every key again each time the map
//! grows (that was most of what marking a new key cost).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// A key's marks.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    /// Its whole value is local.
    known: bool,
    /// It has journal records not replayed yet.
    dirty: bool,
}

type Map = HashMap<DbKey, Marks, BuildHasherDefault<Carried>>;

/// The outage's marks on keys, by (db, key).
#[derive(Default)]
pub(crate) struct KeyMarks {
    map: Mutex<Map>,
    /// What keys are hashed with: SipHash under a random key, as std's
    /// maps hash (the keys are the clients').
    seed: RandomState,
}

impl KeyMarks {
    fn lock(&self) -> Option<(MutexGuard<'_, Map>, &RandomState)> {
        self.map.lock().ok().map(|m| (m, &self.seed))
    }

    /// Whether any of `keys` is dirty.
    pub(crate) fn any_dirty(&self, db: u32, keys: &[Bytes]) -> bool {
        self.lock()
            .is_some_and(|(m, seed)| keys.iter().any(|k| marks(&m, seed, db, k).dirty))
    }

    /// For each of `keys`, whether it is dirty.
    pub(crate) fn dirty_each(&self, db: u32, keys: &[Bytes]) -> Option<Vec<bool>> {
        let (m, seed) = self.lock()?;
        Some(keys.iter().map(|k| marks(&m, seed, db, k).dirty).collect())
    }

    /// Whether every one of `keys` is whole here as the outage wrote it:
    /// known and dirty (a key known but not dirty was only seeded, possibly
    /// in an earlier outage).
    pub(crate) fn all_written(&self, db: u32, keys: &[Bytes]) -> bool {
        self.lock().is_some_and(|(m, seed)| {
            keys.iter().all(|k| {
                let s = marks(&m, seed, db, k);
                s.known && s.dirty
            })
        })
    }

    /// [`all_written`](Self::all_written) for one key.
    pub(crate) fn written(&self, db: u32, key: &[u8]) -> bool {
        self.lock().is_some_and(|(m, seed)| {
            let s = marks(&m, seed, db, key);
            s.known && s.dirty
        })
    }

    /// Marks `keys` dirty, and known too when `known` (the write replaced
    /// their whole values).
    pub(crate) fn mark(&self, db: u32, keys: &[Bytes], known: bool) {
        if let Some((mut m, seed)) = self.lock() {
            for k in keys {
                update(&mut m, seed, db, k, |s| {
                    s.dirty = true;
                    s.known |= known;
                });
            }
        }
    }

    /// Marks `keys` known (their whole values are local now).
    pub(crate) fn mark_known(&self, db: u32, keys: &[Bytes]) {
        if let Some((mut m, seed)) = self.lock() {
            for k in keys {
                update(&mut m, seed, db, k, |s| s.known = true);
            }
        }
    }

    /// Takes back `known` from `keys` (their local values are gone).
    pub(crate) fn unmark_known(&self, db: u32, keys: &[Bytes]) {
        if let Some((mut m, seed)) = self.lock() {
            for k in keys {
                let q: &dyn Lookup = &Probe::new(seed, db, k);
                if let Some(s) = m.get_mut(q) {
                    s.known = false;
                    if !s.dirty {
                        m.remove(q);
                    }
                }
            }
        }
    }

    /// Forgets every mark.
    pub(crate) fn clear(&self) {
        if let Some((mut m, _)) = self.lock() {
            m.clear();
        }
    }

    /// How many keys are dirty, and how many known.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.lock().map_or((0, 0), |(m, _)| {
            (
                m.values().filter(|s| s.dirty).count(),
                m.values().filter(|s| s.known).count(),
            )
        })
    }
}

fn marks(m: &Map, seed: &RandomState, db: u32, key: &[u8]) -> Marks {
    let q: &dyn Lookup = &Probe::new(seed, db, key);
    m.get(q).copied().unwrap_or_default()
}

/// Applies `f` to the marks of `key`, added (unmarked) if missing: one
/// lookup for a key already there. A key new to the map is copied into an
/// allocation of its own: a slice of a client's read buffer would keep
/// that whole buffer alive until the outage ends (100,000 keys written
/// during an outage held over a gigabyte).
fn update(m: &mut Map, seed: &RandomState, db: u32, key: &Bytes, f: impl Fn(&mut Marks)) {
    let probe = Probe::new(seed, db, key);
    let q: &dyn Lookup = &probe;
    if let Some(s) = m.get_mut(q) {
        return f(s);
    }
    let mut s = Marks::default();
    f(&mut s);
    m.insert(
        DbKey {
            hash: probe.hash,
            db,
            key: Bytes::copy_from_slice(key),
        },
        s,
    );
}

/// A key of the map, with its hash.
struct DbKey {
    hash: u64,
    db: u32,
    key: Bytes,
}

/// A borrowed `(db, key)` to look up, hashed once.
struct Probe<'a> {
    hash: u64,
    db: u32,
    key: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(seed: &RandomState, db: u32, key: &'a [u8]) -> Probe<'a> {
        Probe {
            hash: seed.hash_one((db, key)),
            db,
            key,
        }
    }
}

/// What a key is compared and hashed by, so the map can be asked with a
/// [`Probe`] as well as with its own keys.
trait Lookup {
    fn hash_value(&self) -> u64;
    fn db(&self) -> u32;
    fn key(&self) -> &[u8];
}

impl Lookup for DbKey {
    fn hash_value(&self) -> u64 {
        self.hash
    }
    fn db(&self) -> u32 {
        self.db
    }
    fn key(&self) -> &[u8] {
        &self.key
    }
}

impl Lookup for Probe<'_> {
    fn hash_value(&self) -> u64 {
        self.hash
    }
    fn db(&self) -> u32 {
        self.db
    }
    fn key(&self) -> &[u8] {
        self.key
    }
}

impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash_value());
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.hash_value() == other.hash_value()
            && self.db() == other.db()
            && self.key() == other.key()
    }
}

/// The map's hasher: hands on the hash a key carries.
#[derive(Default)]
struct Carried(u64);

impl Hasher for Carried {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    // Only `write_u64` is called (see `Hash for dyn Lookup`); anything
    // else still spreads, if ever.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

impl Eq for dyn Lookup + '_ {}

// Hashed and compared as its `dyn Lookup`, as `Borrow` requires.
impl Hash for DbKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self as &dyn Lookup).hash(h);
    }
}

impl PartialEq for DbKey {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Lookup) == (other as &dyn Lookup)
    }
}

impl Eq for DbKey {}

impl<'a> Borrow<dyn Lookup + 'a> for DbKey {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn marks_are_per_db_and_key_and_found_by_borrowed_keys() {
        let m = KeyMarks::default();
        m.mark(0, &[b("a")], false);
        m.mark(1, &[b("b")], true);
        assert!(m.any_dirty(0, &[b("x"), b("a")]));
        assert!(!m.any_dirty(1, &[b("a")]));
        assert!(!m.all_written(0, &[b("a")]), "dirty, not known");
        assert!(m.written(1, b"b"));
        m.mark_known(0, &[b("a"), b("c")]);
        assert!(m.all_written(0, &[b("a")]));
        assert!(!m.all_written(0, &[b("a"), b("c")]), "c known, not dirty");
        assert_eq!(m.dirty_each(0, &[b("c"), b("a")]), Some(vec![false, true]));
        assert_eq!(m.counts(), (2, 3));
        m.unmark_known(0, &[b("a"), b("c"), b("zz")]);
        assert!(!m.written(0, b"a"));
        assert!(m.any_dirty(0, &[b("a")]), "still dirty");
        assert_eq!(m.counts(), (2, 1), "c had nothing left and went");
        m.clear();
        assert_eq!(m.counts(), (0, 0));
    }

    #[test]
    fn marks_survive_the_map_growing_and_keys_alike_in_another_db_stay_apart() {
        let m = KeyMarks::default();
        let keys: Vec<Bytes> = (0..20_000).map(|i| b(&format!("key:{i}"))).collect();
        m.mark(3, &keys, true);
        m.mark_known(4, &keys[..10]);
        for k in &keys {
            assert!(m.written(3, k), "{k:?}");
            assert!(!m.any_dirty(4, std::slice::from_ref(k)), "{k:?}");
        }
        assert!(!m.written(3, b"key:20000"));
        assert_eq!(m.counts(), (20_000, 20_010));
    }

    #[test]
    fn a_marked_key_is_copied_out_of_the_buffer_it_came_in() {
        let buf = Bytes::from(vec![b'k'; 4096]);
        let key = buf.slice(0..3);
        let m = KeyMarks::default();
        m.mark(0, std::slice::from_ref(&key), true);
        drop(key);
        // The buffer's only owner again: the map kept a copy.
        assert!(buf.try_into_mut().is_ok());
    }
}
