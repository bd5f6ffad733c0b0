//! The near-cache: values of `cache` and `durable` keys that passed through
//! while Redis was Up, kept so reads can still be answered during an
//! outage.
//!
//! Strings and whole hashes are kept, per db, with their absolute expiry
//! (the proxy reads it with `PEXPIRETIME` alongside the value), in a LRU
//! bounded by `max_bytes` (key + value + a fixed per-entry and per-field
//! overhead). Redis's client-side caching keeps the values honest: the
//! [`tracker`] holds a `CLIENT TRACKING ON BCAST` connection and drops every
//! key Redis says was written, by any client, Redoubt included.
//!
//! # Freshness
//! While invalidations flow, every entry is as fresh as Redis. When they
//! stop (the tracking connection breaks, or health says Down), the moment
//! is recorded and entries are served for `max_stale_ms` more; after that
//! the whole cache answers miss. When a new tracking connection is
//! established everything is flushed (invalidations may have been missed)
//! and the cache is fresh again. Values Redoubt itself wrote during the
//! outage ([`NearCache::set_local_string`]) are its own knowledge, not
//! stale copies: they are exempt from the bound and dropped at that flush
//! ("`SET`s on `cache` keys stay local and are dropped at recovery").
//!
//! # Tickets
//! A read travels to Redis on a data connection while invalidations arrive
//! on the tracking connection, so an invalidation for a write that followed
//! the read can arrive *before* the read's reply is cached, and caching the
//! reply then would keep an outdated value forever. The proxy therefore
//! takes a [`Ticket`] (a hash, two atomic loads) before sending the read
//! and hands it to `put_*`: the put is refused if the key (or one sharing its
//! invalidation slot) was invalidated since, if the cache was flushed
//! since, or if tracking is not running. Refusals only cost a miss.
//!
//! # Use
//! - Start: `Tracked::from_patterns(globs of cache/durable keyspaces)`;
//!   `None` → no near-cache. Otherwise `Arc::new(NearCache::new(max_bytes,
//!   max_stale_ms, tracked))` and keep the [`Tracker`] from
//!   [`spawn_tracker`] (upstream address, [`upstream::Handshake`] with the
//!   URL's credentials, the health handle) for the proxy's lifetime.
//! - While Up, for `GET k` / `HGETALL k` on a `cache`/`durable` key:
//!   `let t = cache.ticket(k)` before sending, pipeline `PEXPIRETIME k`
//!   right after it on the same connection (Redis 7.0+; an error reply
//!   means: do not cache), then [`NearCache::put_string`] /
//!   [`NearCache::put_hash`] with the ticket. Writes need no call: Redis's
//!   invalidation for them comes back through the tracker, Redoubt's own
//!   writes included.
//! - While not Up: [`NearCache::get_string`], [`NearCache::hget`],
//!   [`NearCache::get_hash`], [`NearCache::expire_at`] with the current
//!   Unix ms; writes to `cache` keys go to [`NearCache::set_local_string`],
//!   [`NearCache::delete_local`], [`NearCache::expire_local`],
//!   [`NearCache::hset_local`], [`NearCache::hdel_local`] (and `DEL` /
//!   `EXPIRE` also to the journal, so Redis hears of them).
//! - Metrics: [`NearCache::len`] and [`NearCache::bytes`] are atomic
//!   loads, cheap enough to read at every scrape.
//!
//! # Concurrency
//! Entries live in up to [`MAX_SHARDS`] shards by key hash, each behind a
//! `std::sync::Mutex` held for a map lookup and a relink; no lock is ever
//! held across an `.await`, and no two shard locks are held at once. Each
//! shard has `max_bytes / shards` of budget, with one shard per MiB (so a
//! cache under 2 MiB has one shard and exact LRU order; the default 64 MiB
//! has 16 of 4 MiB, LRU within each); a value bigger than a shard's budget
//! is not cached.
//!
//! # Layout
//! - this module: [`NearCache`], [`Cached`], [`Lookup`], [`Ticket`].
//! - [`prefix`]: [`Tracked`], the key prefixes to track, from keyspace
//!   globs.
//! - [`tracker`]: [`spawn_tracker`], the task holding the tracking
//!   connection, its reconnects, and the health watch.
//! - `lru` (private): one shard, a map plus a slab-linked recency list.

mod lru;
pub mod prefix;
pub mod tracker;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use lru::{Entry, Shard};
pub use prefix::Tracked;
pub use tracker::{spawn_tracker, Tracker, TrackerConfig, TrackerStatus};

/// `near_cache.max_bytes` default (DESIGN): 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// `near_cache.max_stale_ms` default (DESIGN): five minutes.
pub const DEFAULT_MAX_STALE_MS: u64 = 300_000;
/// Most shards a cache is split into.
pub const MAX_SHARDS: usize = 16;
/// Least budget per shard, so a value of a few hundred KiB is cacheable
/// even in a small cache.
pub const MIN_SHARD_BYTES: usize = 1 << 20;
/// Bytes charged per entry beyond key and value: the slab node, the map
/// slot and the `Bytes` headers, roughly.
pub const ENTRY_OVERHEAD: usize = 96;
/// Bytes charged per hash field beyond its name and value.
pub const FIELD_OVERHEAD: usize = 48;

/// Invalidation slots for [`Ticket`]s: keys sharing a slot refuse each
/// other's puts after an invalidation, so more slots mean fewer needless
/// refusals; 4096 counters are 32 KiB.
const TICKET_SLOTS: usize = 4096;
/// `stopped_at_ms` while invalidations flow (or never flowed).
const NOT_STOPPED: u64 = u64::MAX;

/// A cached value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// A string.
    String(Bytes),
    /// A whole hash, field → value. Shared, so a hit costs a refcount,
    /// not a copy. Field order is not kept (Redis promises none).
    Hash(Arc<HashMap<Bytes, Bytes>>),
}

impl Cached {
    /// The same value in allocations of its own; see [`owned`].
    fn owned(self) -> Cached {
        match self {
            Cached::String(b) => Cached::String(owned(&b)),
            Cached::Hash(h) => Cached::Hash(Arc::new(
                h.iter().map(|(f, v)| (owned(f), owned(v))).collect(),
            )),
        }
    }
}

/// A copy of `b` in an allocation of its own. What the near-cache keeps
/// arrives as slices of a connection's read buffer (Redis's reply, or a
/// client's request for a local write): kept as such, each entry would
/// hold that whole buffer alive, so 64 MiB of budget held over a
/// gigabyte.
fn owned(b: &Bytes) -> Bytes {
    Bytes::copy_from_slice(b)
}

/// The answer of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The value is known.
    Hit(T),
    /// Not known: never cached, evicted, invalidated, expired, or the
    /// cache is past `max_stale_ms`. Whether that means nil (`cache` keys)
    /// or "value unknown locally" (`durable` keys) is the caller's policy.
    Miss,
    /// The key is known to hold another type: Redis would answer
    /// `WRONGTYPE`.
    WrongType,
}

impl<T> Lookup<T> {
    /// The value of a hit.
    pub fn hit(self) -> Option<T> {
        match self {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    /// True for [`Lookup::Miss`].
    pub fn is_miss(&self) -> bool {
        matches!(self, Lookup::Miss)
    }
}

/// Taken before a read is sent to Redis, handed to the put that caches its
/// reply; see the module docs. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    slot: u32,
    seq: u64,
}

/// The near-cache. Share it as `Arc<NearCache>`.
pub struct NearCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_bytes: usize,
    max_stale_ms: u64,
    /// The keys whose writes Redis reports; no other key is cached.
    tracked: Tracked,
    /// Bumped by every flush; a ticket from an older epoch is refused.
    epoch: AtomicU64,
    /// Per-slot invalidation counters for tickets.
    slots: Box<[AtomicU64]>,
    /// True while a tracking connection is established.
    live: AtomicBool,
    /// Unix ms when invalidations stopped, [`NOT_STOPPED`] otherwise.
    stopped_at_ms: AtomicU64,
    len: AtomicUsize,
    bytes: AtomicUsize,
}

impl std::fmt::Debug for NearCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearCache")
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .field("max_bytes", &self.max_bytes)
            .field("tracking", &self.is_tracking())
            .field("stopped_at_ms", &self.stopped_at_ms())
            .finish()
    }
}

impl NearCache {
    /// An empty cache of at most `max_bytes`, serving entries for
    /// `max_stale_ms` after invalidations stop, holding only keys that
    /// `tracked` covers (Redis would not report writes to others). It
    /// accepts puts only once tracking has started
    /// ([`start_tracking`](Self::start_tracking), called by the tracker).
    pub fn new(max_bytes: usize, max_stale_ms: u64, tracked: Tracked) -> NearCache {
        let n = (max_bytes / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS);
        let per_shard = max_bytes / n;
        NearCache {
            shards: (0..n).map(|_| Mutex::new(Shard::new(per_shard))).collect(),
            hasher: RandomState::new(),
            max_bytes,
            max_stale_ms,
            tracked,
            epoch: AtomicU64::new(0),
            slots: (0..TICKET_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            live: AtomicBool::new(false),
            stopped_at_ms: AtomicU64::new(NOT_STOPPED),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The staleness bound.
    pub fn max_stale_ms(&self) -> u64 {
        self.max_stale_ms
    }

    /// The keys this cache may hold, and the tracker subscribes to.
    pub fn tracked(&self) -> &Tracked {
        &self.tracked
    }

    /// Entries held (for `redoubt_fallback_keys`). Expired entries count
    /// until a lookup finds them.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged (for `redoubt_fallback_memory_bytes`).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True while a tracking connection is established.
    pub fn is_tracking(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// When invalidations stopped, in Unix ms, while they are stopped.
    pub fn stopped_at_ms(&self) -> Option<u64> {
        match self.stopped_at_ms.load(Ordering::Acquire) {
            NOT_STOPPED => None,
            t => Some(t),
        }
    }

    /// True if entries read from Redis may be served at `now_ms`: tracking
    /// runs, or stopped no more than `max_stale_ms` ago.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        if self.live.load(Ordering::Acquire) {
            return true;
        }
        match self.stopped_at_ms.load(Ordering::Acquire) {
            NOT_STOPPED => true,
            at => now_ms.saturating_sub(at) <= self.max_stale_ms,
        }
    }

    // ----- tracking state (driven by the tracker) -----

    /// A new tracking connection is established: everything cached may
    /// have missed invalidations, so it is flushed; entries are fresh from
    /// now on and puts are accepted again.
    pub fn start_tracking(&self) {
        self.flush();
        self.stopped_at_ms.store(NOT_STOPPED, Ordering::Release);
        self.live.store(true, Ordering::Release);
    }

    /// Invalidations stopped at `at_ms` (Unix ms): the staleness clock
    /// starts. If already stopped, the earlier moment is kept, so a
    /// connection loss and a Down state for the same outage count once.
    pub fn stop_tracking(&self, at_ms: u64) {
        self.live.store(false, Ordering::Release);
        self.stopped_at_ms.fetch_min(at_ms, Ordering::AcqRel);
    }

    // ----- invalidation -----

    /// Drops `key` from every db (tracking invalidations carry no db).
    pub fn invalidate(&self, key: &[u8]) {
        let h = self.hash(key);
        // Bump before removing, so a put holding an older ticket either
        // sees the bump (and is refused) or inserted before the removal
        // below takes the lock (and is removed).
        self.slots[slot_of(h)].fetch_add(1, Ordering::AcqRel);
        self.with_shard(h, |s| {
            s.remove_key(h, key);
        });
    }

    /// Drops everything (`FLUSHALL` seen, tracking restarted) and refuses
    /// puts holding tickets from before.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for i in 0..self.shards.len() {
            self.with_shard_at(i, Shard::clear);
        }
    }

    // ----- filling while Up -----

    /// Take before sending the read whose reply will be put.
    pub fn ticket(&self, key: &[u8]) -> Ticket {
        let slot = slot_of(self.hash(key));
        Ticket {
            epoch: self.epoch.load(Ordering::Acquire),
            slot: slot as u32,
            seq: self.slots[slot].load(Ordering::Acquire),
        }
    }

    /// Caches a string read from Redis. `expire_at_ms` is the
    /// `PEXPIRETIME` reply: -1 no expiry, -2 the key does not exist (not
    /// cached), otherwise Unix ms. Returns whether it was cached (refused:
    /// stale ticket, tracking down, key gone, key not tracked, too big for
    /// a shard).
    pub fn put_string(
        &self,
        ticket: Ticket,
        db: u32,
        key: Bytes,
        value: Bytes,
        expire_at_ms: i64,
    ) -> bool {
        let size = ENTRY_OVERHEAD + key.len() + value.len();
        self.put(ticket, db, key, Cached::String(value), expire_at_ms, size)
    }

    /// Caches a whole hash read from Redis (`HGETALL`); see
    /// [`put_string`](Self::put_string). An empty field list means the
    /// key does not exist and is not cached.
    pub fn put_hash<I>(
        &self,
        ticket: Ticket,
        db: u32,
        key: Bytes,
        fields: I,
        expire_at_ms: i64,
    ) -> bool
    where
        I: IntoIterator<Item = (Bytes, Bytes)>,
    {
        let map: HashMap<Bytes, Bytes> = fields.into_iter().collect();
        if map.is_empty() {
            return false;
        }
        let size = hash_size(key.len(), &map);
        let value = Cached::Hash(Arc::new(map));
        self.put(ticket, db, key, value, expire_at_ms, size)
    }

    fn put(
        &self,
        ticket: Ticket,
        db: u32,
        key: Bytes,
        value: Cached,
        expire_at_ms: i64,
        size: usize,
    ) -> bool {
        let expire_at_ms = match expire_at_ms {
            -1 => None,
            t if t >= 0 => Some(t as u64),
            _ => return false,
        };
        if !self.tracked.covers(&key) {
            return false;
        }
        let h = self.hash(&key);
        let entry = Entry {
            hash: h,
            db,
            key: owned(&key),
            value: value.owned(),
            expire_at_ms,
            local: false,
            size,
        };
        self.with_shard(h, |s| {
            // Checked under the shard lock: `flush` and `invalidate` bump
            // their counter before taking it, so a put either sees the
            // bump or lands before the removal.
            let valid = self.live.load(Ordering::Acquire)
                && self.epoch.load(Ordering::Acquire) == ticket.epoch
                && self.slots[ticket.slot as usize].load(Ordering::Acquire) == ticket.seq;
            valid && s.insert(entry)
        })
    }

    // ----- reads -----

    /// The string at `(db, key)` as of `now_ms` (Unix ms).
    pub fn get_string(&self, db: u32, key: &[u8], now_ms: u64) -> Lookup<Bytes> {
        self.lookup(db, key, now_ms, |v| match v {
            Cached::String(b) => Lookup::Hit(b.clone()),
            Cached::Hash(_) => Lookup::WrongType,
        })
    }

    /// The whole hash at `(db, key)` as of `now_ms`.
    pub fn get_hash(&self, db: u32, key: &[u8], now_ms: u64) -> Lookup<Arc<HashMap<Bytes, Bytes>>> {
        self.lookup(db, key, now_ms, |v| match v {
            Cached::Hash(m) => Lookup::Hit(m.clone()),
            Cached::String(_) => Lookup::WrongType,
        })
    }

    /// One field of the hash at `(db, key)`: `Hit(None)` when the hash is
    /// known and lacks the field (Redis answers nil).
    pub fn hget(&self, db: u32, key: &[u8], field: &[u8], now_ms: u64) -> Lookup<Option<Bytes>> {
        self.lookup(db, key, now_ms, |v| match v {
            Cached::Hash(m) => Lookup::Hit(m.get(field).cloned()),
            Cached::String(_) => Lookup::WrongType,
        })
    }

    /// Whatever is cached at `(db, key)`.
    pub fn get(&self, db: u32, key: &[u8], now_ms: u64) -> Lookup<Cached> {
        self.lookup(db, key, now_ms, |v| Lookup::Hit(v.clone()))
    }

    /// The absolute expiry of `(db, key)` (`Hit(None)`: no expiry), for
    /// `TTL`/`PTTL` during an outage.
    pub fn expire_at(&self, db: u32, key: &[u8], now_ms: u64) -> Lookup<Option<u64>> {
        let h = self.hash(key);
        let fresh = self.is_fresh(now_ms);
        self.with_shard(h, |s| match s.peek(h, db, key) {
            None => Lookup::Miss,
            Some(e) if e.expired(now_ms) || (!fresh && !e.local) => {
                s.remove(h, db, key);
                Lookup::Miss
            }
            Some(e) => Lookup::Hit(e.expire_at_ms),
        })
    }

    fn lookup<T>(
        &self,
        db: u32,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(&Cached) -> Lookup<T>,
    ) -> Lookup<T> {
        let h = self.hash(key);
        let fresh = self.is_fresh(now_ms);
        self.with_shard(h, |s| {
            // Past max_stale_ms an entry read from Redis is never served
            // again (tracking restarting flushes it anyway): drop it now,
            // so a long outage frees the memory as reads come.
            let gone = match s.peek(h, db, key) {
                None => return Lookup::Miss,
                Some(e) => e.expired(now_ms) || (!fresh && !e.local),
            };
            if gone {
                s.remove(h, db, key);
                return Lookup::Miss;
            }
            match s.get(h, db, key) {
                Some(e) => f(&e.value),
                None => Lookup::Miss,
            }
        })
    }

    // ----- local writes during an outage -----

    /// `SET` on a `cache` key while Redis is not Up: the value stays here
    /// (exempt from `max_stale_ms`) until tracking restarts. No ticket:
    /// this is Redoubt's own write, not a copy of Redis's. `expire_at_ms`
    /// as in [`put_string`](Self::put_string). Returns whether it was kept
    /// (false only when too big for a shard, or `expire_at_ms` is -2).
    pub fn set_local_string(&self, db: u32, key: Bytes, value: Bytes, expire_at_ms: i64) -> bool {
        let expire_at_ms = match expire_at_ms {
            -1 => None,
            t if t >= 0 => Some(t as u64),
            _ => return false,
        };
        let h = self.hash(&key);
        let entry = Entry {
            hash: h,
            db,
            size: ENTRY_OVERHEAD + key.len() + value.len(),
            key: owned(&key),
            value: Cached::String(owned(&value)),
            expire_at_ms,
            local: true,
        };
        self.with_shard(h, |s| s.insert(entry))
    }

    /// A value the replica holds for a `cache` key, put here before a
    /// write during an outage changes it (the write then finds it, as in
    /// Redis). Kept as a local write: exempt from `max_stale_ms`, dropped
    /// when tracking restarts. Returns whether it was kept.
    pub fn seed_local(
        &self,
        db: u32,
        key: Bytes,
        value: Cached,
        expire_at_ms: Option<u64>,
    ) -> bool {
        let h = self.hash(&key);
        let size = match &value {
            Cached::String(v) => ENTRY_OVERHEAD + key.len() + v.len(),
            Cached::Hash(m) => hash_size(key.len(), m),
        };
        let entry = Entry {
            hash: h,
            db,
            size,
            key: owned(&key),
            value: value.owned(),
            expire_at_ms,
            local: true,
        };
        self.with_shard(h, |s| s.insert(entry))
    }

    /// True when `(db, key)` holds a live value written (or seeded) here
    /// during an outage: it answers before the replica does.
    pub fn written_locally(&self, db: u32, key: &[u8], now_ms: u64) -> bool {
        let h = self.hash(key);
        self.with_shard(h, |s| {
            s.peek(h, db, key)
                .is_some_and(|e| e.local && !e.expired(now_ms))
        })
    }

    /// `DEL`/`UNLINK` of `(db, key)` while Redis is not Up. Returns whether
    /// a live (unexpired) value was known and removed.
    pub fn delete_local(&self, db: u32, key: &[u8], now_ms: u64) -> bool {
        let h = self.hash(key);
        let fresh = self.is_fresh(now_ms);
        self.with_shard(h, |s| {
            let known = s
                .peek(h, db, key)
                .is_some_and(|e| !e.expired(now_ms) && (fresh || e.local));
            s.remove(h, db, key);
            known
        })
    }

    /// `EXPIRE` family / `PERSIST` on `(db, key)` while Redis is not Up:
    /// `expire_at_ms` absolute Unix ms, or `None` to persist. Returns
    /// whether a live value was known (and now carries the new expiry).
    pub fn expire_local(
        &self,
        db: u32,
        key: &[u8],
        expire_at_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        let h = self.hash(key);
        let fresh = self.is_fresh(now_ms);
        self.with_shard(h, |s| {
            let known = s
                .peek(h, db, key)
                .is_some_and(|e| !e.expired(now_ms) && (fresh || e.local));
            if !known {
                s.remove(h, db, key);
                return false;
            }
            if let Some(e) = s.get(h, db, key) {
                e.expire_at_ms = expire_at_ms;
            }
            true
        })
    }

    /// `HSET` on `(db, key)` while Redis is not Up, applied to the hash
    /// only if it is known whole: `Hit(n)` with the number of new fields
    /// (Redis's reply), `Miss` when unknown (a partial hash would answer
    /// `HGETALL` wrongly), `WrongType` on a string. The entry keeps its
    /// origin: a hash read from Redis stays under `max_stale_ms`.
    pub fn hset_local<I>(&self, db: u32, key: &[u8], pairs: I, now_ms: u64) -> Lookup<usize>
    where
        I: IntoIterator<Item = (Bytes, Bytes)>,
    {
        self.edit_hash(db, key, now_ms, |m| {
            pairs
                .into_iter()
                .filter(|(f, v)| m.insert(owned(f), owned(v)).is_none())
                .count()
        })
    }

    /// `HDEL` on a known hash while Redis is not Up: `Hit(n)` with the
    /// number of fields removed; as [`hset_local`](Self::hset_local)
    /// otherwise. A hash left empty is gone, as in Redis.
    pub fn hdel_local<'a, I>(&self, db: u32, key: &[u8], fields: I, now_ms: u64) -> Lookup<usize>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        self.edit_hash(db, key, now_ms, |m| {
            fields
                .into_iter()
                .filter(|f| m.remove(*f).is_some())
                .count()
        })
    }

    fn edit_hash(
        &self,
        db: u32,
        key: &[u8],
        now_ms: u64,
        edit: impl FnOnce(&mut HashMap<Bytes, Bytes>) -> usize,
    ) -> Lookup<usize> {
        let h = self.hash(key);
        let fresh = self.is_fresh(now_ms);
        self.with_shard(h, |s| {
            match s.peek(h, db, key) {
                None => return Lookup::Miss,
                Some(e) if e.expired(now_ms) || (!fresh && !e.local) => {
                    s.remove(h, db, key);
                    return Lookup::Miss;
                }
                Some(Entry {
                    value: Cached::String(_),
                    ..
                }) => return Lookup::WrongType,
                Some(_) => {}
            }
            let Some(mut e) = s.take(h, db, key) else {
                return Lookup::Miss;
            };
            let Cached::Hash(m) = &mut e.value else {
                // Checked above under the same lock; put it back regardless.
                s.insert(e);
                return Lookup::WrongType;
            };
            // Readers holding the old Arc keep their snapshot.
            let map = Arc::make_mut(m);
            let n = edit(map);
            if map.is_empty() {
                return Lookup::Hit(n);
            }
            e.size = hash_size(e.key.len(), map);
            // Re-inserted: most recently used, and evicting others if it
            // grew (or itself, if it no longer fits a shard).
            s.insert(e);
            Lookup::Hit(n)
        })
    }

    // ----- internals -----

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn with_shard<R>(&self, h: u64, f: impl FnOnce(&mut Shard) -> R) -> R {
        // The low bits pick the ticket slot; the high bits the shard, so
        // the two stay independent.
        let i = ((h >> 32) as usize) % self.shards.len();
        self.with_shard_at(i, f)
    }

    fn with_shard_at<R>(&self, i: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let m = &self.shards[i];
        let mut s = match m.lock() {
            Ok(s) => s,
            Err(poisoned) => {
                // A panic mid-update may have left the links inconsistent.
                // The cache is only an optimisation: drop the shard's
                // contents (and their share of the totals) and carry on.
                let mut s = poisoned.into_inner();
                self.len.fetch_sub(s.len(), Ordering::Relaxed);
                self.bytes.fetch_sub(s.bytes(), Ordering::Relaxed);
                s.clear();
                m.clear_poison();
                s
            }
        };
        let (len0, bytes0) = (s.len(), s.bytes());
        let r = f(&mut s);
        // Adjusted under the lock so each shard's share of the totals
        // changes in order and the sum never dips below zero.
        adjust(&self.len, len0, s.len());
        adjust(&self.bytes, bytes0, s.bytes());
        r
    }
}

/// Bytes charged for a hash entry.
fn hash_size(key_len: usize, map: &HashMap<Bytes, Bytes>) -> usize {
    ENTRY_OVERHEAD
        + key_len
        + map
            .iter()
            .map(|(f, v)| FIELD_OVERHEAD + f.len() + v.len())
            .sum::<usize>()
}

fn slot_of(h: u64) -> usize {
    (h as usize) % TICKET_SLOTS
}

fn adjust(total: &AtomicUsize, before: usize, after: usize) {
    if after >= before {
        total.fetch_add(after - before, Ordering::Relaxed);
    } else {
        total.fetch_sub(before - after, Ordering::Relaxed);
    }
}
