//! The six Redis data types as held in the keyspace, and the per-key entry
//! (value, expiry, access statistics for eviction).
//!
//! Values sit behind an `Arc` in [`Entry`] so a snapshot can share them and
//! writers copy on write (`Arc::make_mut`) only what changed after it.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};

/// Redis keeps small hashes and sorted sets as listpacks (insertion or score
/// order) up to these sizes; we only use them to report `OBJECT ENCODING`
/// and to decide when a scan may answer in one page.
pub(crate) const LISTPACK_MAX_ENTRIES: usize = 128;
pub(crate) const LISTPACK_MAX_VALUE: usize = 64;
pub(crate) const INTSET_MAX_ENTRIES: usize = 512;

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string (also integers and bitmaps).
    Str(Bytes),
    /// A list.
    List(VecDeque<Bytes>),
    /// A hash; insertion-ordered like Redis's listpack encoding.
    Hash(Box<IndexMap<Bytes, Bytes>>),
    /// A set.
    Set(Box<IndexSet<Bytes>>),
    /// A sorted set.
    ZSet(Box<ZSet>),
    /// A stream, with its consumer groups.
    Stream(Box<crate::stream::Stream>),
}

// Every key's value lives behind an `Arc` allocation of 16 bytes plus a
// `Value`: at 40 bytes (a string's `Bytes` and the tag) it fits one cache
// line with the counts; with the collections inline it was 80.
const _: () = assert!(std::mem::size_of::<Value>() <= 40);

impl Value {
    /// A list of `items`, head first.
    pub fn list(items: impl IntoIterator<Item = Bytes>) -> Value {
        Value::List(items.into_iter().collect())
    }

    /// A hash of `pairs`, in their order (a repeated field keeps its last value).
    pub fn hash(pairs: impl IntoIterator<Item = (Bytes, Bytes)>) -> Value {
        Value::Hash(Box::new(pairs.into_iter().collect()))
    }

    /// A set of `members`.
    pub fn set(members: impl IntoIterator<Item = Bytes>) -> Value {
        Value::Set(Box::new(members.into_iter().collect()))
    }

    /// A sorted set of `(member, score)` pairs.
    pub fn zset(pairs: impl IntoIterator<Item = (Bytes, f64)>) -> Value {
        let mut z = ZSet::default();
        for (m, s) in pairs {
            z.insert(m, s);
        }
        Value::ZSet(Box::new(z))
    }

    /// True for a list, hash, set or sorted set with no elements.
    pub fn is_empty_collection(&self) -> bool {
        match self {
            Value::Str(_) => false,
            Value::List(l) => l.is_empty(),
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            // Redis keeps a stream with no entries (its IDs and groups).
            Value::Stream(_) => false,
        }
    }

    /// The name `TYPE` reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// The encoding Redis 7.0's thresholds give these contents;
    /// [`Entry::encoding`] adds how the value was written (sticky
    /// conversions, string edits), which is what `OBJECT ENCODING` shows.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => {
                if s.len() <= 20 && crate::num::parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            Value::List(_) => "quicklist",
            Value::Hash(h) => {
                if h.len() <= LISTPACK_MAX_ENTRIES
                    && h.iter().all(|(k, v)| {
                        k.len() <= LISTPACK_MAX_VALUE && v.len() <= LISTPACK_MAX_VALUE
                    })
                {
                    "listpack"
                } else {
                    "hashtable"
                }
            }
            Value::Set(s) => {
                if is_intset(s) {
                    "intset"
                } else {
                    "hashtable"
                }
            }
            Value::ZSet(z) => {
                if z.len() <= LISTPACK_MAX_ENTRIES
                    && z.scores.keys().all(|m| m.len() <= LISTPACK_MAX_VALUE)
                {
                    "listpack"
                } else {
                    "skiplist"
                }
            }
            Value::Stream(_) => "stream",
        }
    }

    /// Approximate bytes used, for `INFO memory` and `maxmemory`. Large
    /// collections (over [`SAMPLED_FROM`] elements) are measured on a
    /// sample so a write stays O(1).
    pub fn approx_size(&self) -> usize {
        self.measure().0
    }

    /// [`approx_size`](Self::approx_size), and the sample's bytes when it
    /// took one.
    pub(crate) fn measure(&self) -> (usize, Option<usize>) {
        const PER_ELEM: usize = 16;
        fn est<I: ExactSizeIterator<Item = usize>>(it: I, fixed: usize) -> (usize, Option<usize>) {
            let n = it.len();
            if n <= SAMPLED_FROM {
                (it.sum::<usize>() + fixed, None)
            } else {
                let sample: usize = it.take(SAMPLE).sum();
                (sampled(sample, n, fixed), Some(sample))
            }
        }
        match self {
            Value::Str(s) => (s.len() + 16, None),
            Value::List(l) => est(l.iter().map(|e| e.len() + PER_ELEM), LIST_FIXED),
            Value::Hash(h) => est(
                h.iter().map(|(k, v)| k.len() + v.len() + 2 * PER_ELEM),
                HASH_FIXED,
            ),
            Value::Set(s) => est(s.iter().map(|e| e.len() + PER_ELEM), SET_FIXED),
            Value::ZSet(z) => est(
                z.scores.keys().map(|m| 2 * m.len() + 3 * PER_ELEM),
                ZSET_FIXED,
            ),
            Value::Stream(s) => (s.approx_size(), None),
        }
    }

    /// A collection's length and its fixed bytes, for sizing it from a
    /// sample taken earlier; `None` for strings and streams.
    pub(crate) fn sizing(&self) -> Option<(usize, usize)> {
        match self {
            Value::List(l) => Some((l.len(), LIST_FIXED)),
            Value::Hash(h) => Some((h.len(), HASH_FIXED)),
            Value::Set(s) => Some((s.len(), SET_FIXED)),
            Value::ZSet(z) => Some((z.len(), ZSET_FIXED)),
            Value::Str(_) | Value::Stream(_) => None,
        }
    }
}

/// Collections with more elements than this are measured on a sample.
pub(crate) const SAMPLED_FROM: usize = 64;
/// Elements in that sample: the first ones.
pub(crate) const SAMPLE: usize = 32;
const LIST_FIXED: usize = 32;
const HASH_FIXED: usize = 48;
const SET_FIXED: usize = 48;
const ZSET_FIXED: usize = 64;

/// A collection of `n` elements whose first [`SAMPLE`] take `sample` bytes.
pub(crate) fn sampled(sample: usize, n: usize, fixed: usize) -> usize {
    sample * n / SAMPLE + fixed
}

/// True when Redis 7.0 would keep this set as an intset, whose members come
/// back in numeric order.
pub(crate) fn is_intset(s: &IndexSet<Bytes>) -> bool {
    s.len() <= INTSET_MAX_ENTRIES && s.iter().all(|m| crate::num::parse_i64(m).is_some())
}

/// A score with the total order sorted sets need (scores are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // -0.0 and 0.0 compare equal in Redis (C `<`), so not total_cmp.
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// A sorted set: member → score, plus (score, member) in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZSet {
    pub(crate) scores: HashMap<Bytes, f64>,
    pub(crate) order: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    /// Number of members.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// True with no members.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Score of a member.
    pub fn score(&self, m: &[u8]) -> Option<f64> {
        self.scores.get(m).copied()
    }

    /// Sets a member's score; returns true if it was new.
    pub fn insert(&mut self, m: Bytes, score: f64) -> bool {
        match self.scores.insert(m.clone(), score) {
            Some(old) => {
                self.order.remove(&(Score(old), m.clone()));
                self.order.insert((Score(score), m));
                false
            }
            None => {
                self.order.insert((Score(score), m));
                true
            }
        }
    }

    /// Removes a member; returns true if it was there.
    pub fn remove(&mut self, m: &[u8]) -> bool {
        match self.scores.remove_entry(m) {
            Some((k, s)) => {
                self.order.remove(&(Score(s), k));
                true
            }
            None => false,
        }
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Bytes, f64)> {
        self.order.iter().map(|(s, m)| (m, s.0))
    }

    /// 0-based rank of a member in ascending order.
    pub fn rank(&self, m: &[u8]) -> Option<usize> {
        let s = self.score(m)?;
        Some(
            self.order
                .range(..(Score(s), Bytes::copy_from_slice(m)))
                .count(),
        )
    }
}

// `Entry::sample` lives in what was padding: a key's slot stays 48 bytes.
const _: () = assert!(std::mem::size_of::<Entry>() <= 48);

/// One key's slot in a database.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value, shared with snapshots until written.
    pub value: Arc<Value>,
    /// Absolute expiry in Unix milliseconds.
    pub expire_at: Option<u64>,
    /// Last access (store clock, ms), for LRU and `OBJECT IDLETIME`.
    pub access: u64,
    /// Logarithmic access counter, for LFU and `OBJECT FREQ`.
    pub freq: u8,
    /// Size last accounted for this entry (key included).
    pub(crate) size: usize,
    /// For a collection measured on a sample: the sample's bytes (its
    /// first [`SAMPLE`] elements'), so a write that changes only its
    /// length is accounted without walking them again (see
    /// `ctx::resized`); 0 when there is none. It sits in the entry's
    /// padding: no memory per key.
    pub(crate) sample: u32,
    /// How Redis would have encoded a string written by this command.
    pub(crate) str_enc: StrEnc,
}

/// Redis picks a string's encoding by how it was written: SET tries `int`,
/// INCRBYFLOAT makes an `embstr`, in-place edits (APPEND to an existing
/// value, SETRANGE, SETBIT) make a `raw` one. Collections convert to their
/// big encoding (hashtable, skiplist) once and never back. `OBJECT
/// ENCODING` shows the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrEnc {
    /// By content and size.
    Auto,
    /// embstr (or raw past 44 bytes), never int.
    Embstr,
    /// Always raw.
    Raw,
    /// A collection that has been converted to its big encoding.
    Big,
}

impl Entry {
    /// The encoding `OBJECT ENCODING` reports for this entry.
    pub fn encoding(&self) -> &'static str {
        match (&*self.value, self.str_enc) {
            (Value::Str(s), StrEnc::Embstr) if s.len() <= 44 => "embstr",
            (Value::Str(_), StrEnc::Embstr | StrEnc::Raw) => "raw",
            (Value::Hash(_) | Value::Set(_), StrEnc::Big) => "hashtable",
            (Value::ZSet(_), StrEnc::Big) => "skiplist",
            (v, _) => v.encoding(),
        }
    }
}

/// Redis's initial LFU counter for new keys (`LFU_INIT_VAL`).
pub(crate) const LFU_INIT: u8 = 5;

impl Entry {
    /// A fresh entry with no expiry.
    pub fn new(value: Value, now: u64) -> Entry {
        Entry {
            value: Arc::new(value),
            expire_at: None,
            access: now,
            freq: LFU_INIT,
            size: 0,
            sample: 0,
            str_enc: StrEnc::Auto,
        }
    }
}
