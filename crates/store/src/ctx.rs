//! What a command handler works with: the locked keyspace, the session, the
//! arguments, and the bookkeeping every write does (watch invalidation,
//! memory accounting, waking blocked clients, the effects to journal).
//!
//! Handlers are `fn(&mut Ctx) -> Reply`; an `Err` is an error reply, so `?`
//! carries Redis's error text straight out.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use indexmap::{IndexMap, IndexSet};
use resp::Frame;

use crate::db::{Db, KEY_OVERHEAD};
use crate::num;
use crate::session::Session;
use crate::store::{Inner, Shared};
use crate::value::{Entry, Value, ZSet};
use crate::Effect;

/// Values up to this many bytes are copied out of the keyspace rather
/// than shared (see [`Ctx::get_str`]).
const COPY_UP_TO: usize = 64;

/// `b` to keep or hand on: up to [`COPY_UP_TO`] bytes copied, longer ones
/// shared. A clone of a buffer nobody shares yet turns it shared (an
/// allocation and a locked instruction), and every clone and drop after
/// that counts a reference on its header; a short copy costs less than
/// those and is dropped without one.
pub(crate) fn owned(b: &Bytes) -> Bytes {
    if b.len() <= COPY_UP_TO {
        Bytes::copy_from_slice(b)
    } else {
        b.clone()
    }
}

/// A handler's answer: `Err` is an error reply.
pub(crate) type Reply = Result<Frame, Frame>;

/// A command implementation.
pub(crate) type Handler = fn(&mut Ctx) -> Reply;

pub(crate) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
pub(crate) const NOT_INT: &str = "ERR value is not an integer or out of range";
pub(crate) const NOT_FLOAT: &str = "ERR value is not a valid float";
pub(crate) const SYNTAX: &str = "ERR syntax error";
pub(crate) const NO_KEY: &str = "ERR no such key";

pub(crate) fn err(msg: &str) -> Frame {
    Frame::Error(Bytes::copy_from_slice(msg.as_bytes()))
}

/// Why a blocking command did not complete: how long it may wait.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// Timeout in ms; 0 waits forever.
    pub timeout_ms: u64,
    /// Keys it waits on, in the session's database.
    pub keys: Vec<Bytes>,
    /// The command to run on each retry instead of the one sent, when the
    /// first run fixed something the retries must keep (XREAD's `$`
    /// resolved to the IDs current when it blocked).
    pub retry_args: Option<Vec<Bytes>>,
}

pub(crate) struct Ctx<'a> {
    pub inner: &'a mut Inner,
    pub shared: &'a Shared,
    pub sess: &'a mut Session,
    pub args: &'a [Bytes],
    /// Lower-case full name from the command table (`get`, `client|list`).
    pub name: &'static str,
    pub now: u64,
    /// Database the command runs in.
    pub db: usize,
    /// Number of changes made; zero means nothing to journal.
    pub dirty: u64,
    /// Effects set by the handler; `None` means "journal the command as sent".
    pub effects: Option<Vec<Effect>>,
    /// Extra reply frames after the main one (SUBSCRIBE with several channels).
    pub more: Vec<Frame>,
    /// Set by a blocking command that found nothing to pop.
    pub block: Option<Block>,
    /// True when a list or sorted set gained elements: blocked clients retry.
    pub wake: bool,
    /// True inside EXEC, apply or a script-like context: never block.
    pub no_block: bool,
    /// Journal `effects` even when the reply is an error (a script that
    /// failed after writing keeps its writes).
    pub keep_effects: bool,
    /// `effects` must replay as one transaction.
    pub atomic: bool,
    /// The error reply was counted in the error stats already (a script's
    /// error raised by one of its commands).
    pub error_counted: bool,
    /// The command was refused before it ran (a script's flags under OOM):
    /// a rejected call, not a failed one.
    pub rejected: bool,
}

macro_rules! typed_access {
    // Hashes, sets and sorted sets are boxed in `Value` (a `Value` stays
    // the size of a string's `Bytes`); callers see the collection itself.
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty, $new:expr, boxed) => {
        typed_access!(@impl $get, $get_mut, $variant, $ty, $new, |v| &**v, |v| &mut **v);
    };
    ($get:ident, $get_mut:ident, $variant:ident, $ty:ty, $new:expr) => {
        typed_access!(@impl $get, $get_mut, $variant, $ty, $new, |v| v, |v| v);
    };
    (@impl $get:ident, $get_mut:ident, $variant:ident, $ty:ty, $new:expr, |$r:ident| $read:expr, |$w:ident| $write:expr) => {
        /// Read access to a value of this type; WRONGTYPE for another type.
        #[allow(dead_code)]
        pub fn $get(&mut self, key: &[u8]) -> Result<Option<&$ty>, Frame> {
            match self.lookup(key) {
                None => Ok(None),
                Some(Value::$variant($r)) => Ok(Some($read)),
                Some(_) => Err(err(WRONGTYPE)),
            }
        }

        /// Write access (copy on write); creates an empty one with `create`.
        /// The caller must call [`Ctx::modified`] afterwards.
        #[allow(dead_code)]
        pub fn $get_mut(&mut self, key: &Bytes, create: bool) -> Result<Option<&mut $ty>, Frame> {
            let now = self.now;
            // One lookup for a live key; the entry is reached by index.
            let mut found = self.inner.dbs[self.db].map.get_index_of(&key[..]);
            if let Some(i) = found {
                if self.inner.dbs[self.db].map[i].expire_at.is_some_and(|t| t <= now) {
                    self.expire_if_needed(key);
                    found = None;
                }
            }
            let i = match found {
                Some(i) => i,
                None => {
                    if !create {
                        return Ok(None);
                    }
                    let (i, _) = self.inner.dbs[self.db]
                        .map
                        .insert_full(key.clone(), Entry::new($new, now));
                    self.created(key);
                    i
                }
            };
            let e = &mut self.inner.dbs[self.db].map[i];
            e.access = now;
            match Arc::make_mut(&mut e.value) {
                Value::$variant($w) => Ok(Some($write)),
                _ => Err(err(WRONGTYPE)),
            }
        }
    };
}

impl<'a> Ctx<'a> {
    /// The current database.
    pub fn db(&mut self) -> &mut Db {
        &mut self.inner.dbs[self.db]
    }

    pub fn resp3(&self) -> bool {
        self.sess.resp == 3
    }

    /// True when this session takes replies already encoded
    /// ([`Session::set_wire_replies`]); see [`bulks`].
    pub fn wire_replies(&self) -> bool {
        self.sess.wire_replies
    }

    /// Null bulk in RESP2, null in RESP3.
    pub fn null(&self) -> Frame {
        if self.resp3() {
            Frame::Null
        } else {
            Frame::NullBulk
        }
    }

    /// Null array in RESP2, null in RESP3.
    pub fn null_array(&self) -> Frame {
        if self.resp3() {
            Frame::Null
        } else {
            Frame::NullArray
        }
    }

    /// A map in RESP3, a flat array in RESP2.
    pub fn map(&self, pairs: Vec<(Frame, Frame)>) -> Frame {
        if self.resp3() {
            Frame::Map(pairs)
        } else {
            Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        }
    }

    /// A set in RESP3, an array in RESP2.
    pub fn set_reply(&self, items: Vec<Frame>) -> Frame {
        if self.resp3() {
            Frame::Set(items)
        } else {
            Frame::Array(items)
        }
    }

    /// A double: `%.17g` bulk in RESP2, a double in RESP3.
    #[allow(dead_code)]
    pub fn double(&self, d: f64) -> Frame {
        let s = Bytes::from(num::fmt_g17(d));
        if self.resp3() {
            Frame::Double(s)
        } else {
            Frame::Bulk(s)
        }
    }

    pub fn arg_i64(&self, i: usize) -> Result<i64, Frame> {
        num::parse_i64(&self.args[i]).ok_or_else(|| err(NOT_INT))
    }

    pub fn arg_f64(&self, i: usize) -> Result<f64, Frame> {
        num::parse_f64(&self.args[i]).ok_or_else(|| err(NOT_FLOAT))
    }

    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.args
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }

    /// Deletes the key if its TTL has passed; true if it did.
    pub fn expire_if_needed(&mut self, key: &[u8]) -> bool {
        let now = self.now;
        if self.inner.dbs[self.db].is_expired(key, now) {
            let db = self.db;
            self.inner.delete_key(db, key);
            self.inner.touch_watched(db, key);
            self.inner.stats.expired_keys += 1;
            crate::pubsub::notify(
                self.inner,
                db,
                crate::pubsub::class::EXPIRED,
                "expired",
                key,
            );
            true
        } else {
            false
        }
    }

    /// Where a live key sits in its database's map, deleting it first if
    /// its TTL has passed: one hash lookup for the common case (a key
    /// with no TTL or one still ahead), where a lookup was once repeated
    /// by every layer above.
    pub(crate) fn live_index(&mut self, key: &[u8]) -> Option<usize> {
        let now = self.now;
        let i = self.inner.dbs[self.db].map.get_index_of(key)?;
        match self.inner.dbs[self.db].map[i].expire_at {
            Some(t) if t <= now => {
                // During CLIENT PAUSE a key past its TTL reads as gone but
                // is not deleted (no expiry is propagated), as in Redis.
                if !self.shared.expiry_paused() {
                    self.expire_if_needed(key);
                }
                None
            }
            _ => Some(i),
        }
    }

    /// The live value of a key, updating its access statistics.
    pub fn lookup(&mut self, key: &[u8]) -> Option<&Value> {
        let i = self.live_index(key)?;
        Some(self.accessed(i))
    }

    pub(crate) fn accessed(&mut self, i: usize) -> &Value {
        let now = self.now;
        let log_factor = self.inner.config.lfu_log_factor;
        let decay = self.inner.config.lfu_decay_time;
        let e = &mut self.inner.dbs[self.db].map[i];
        crate::eviction::record_access(e, now, log_factor, decay);
        &e.value
    }

    /// The live entry of a key without touching access statistics.
    pub fn peek(&mut self, key: &[u8]) -> Option<&Entry> {
        let i = self.live_index(key)?;
        Some(&self.inner.dbs[self.db].map[i])
    }

    /// Lookup that counts keyspace hits and misses (read commands).
    pub fn lookup_read(&mut self, key: &[u8]) -> Option<&Value> {
        match self.live_index(key) {
            Some(i) => {
                self.inner.stats.keyspace_hits += 1;
                Some(self.accessed(i))
            }
            None => {
                self.inner.stats.keyspace_misses += 1;
                None
            }
        }
    }

    pub fn get_str(&mut self, key: &[u8]) -> Result<Option<Bytes>, Frame> {
        match self.lookup_read(key) {
            None => Ok(None),
            // A short value is copied: its bytes share a cache line with
            // the key just compared, while a clone would count a reference
            // on the buffer's header, a line of its own, cold.
            Some(Value::Str(s)) => Ok(Some(owned(s))),
            Some(_) => Err(err(WRONGTYPE)),
        }
    }

    typed_access!(
        get_list,
        list_mut,
        List,
        VecDeque<Bytes>,
        Value::List(VecDeque::new())
    );
    typed_access!(
        get_hash,
        hash_mut,
        Hash,
        IndexMap<Bytes, Bytes>,
        Value::Hash(Box::default()),
        boxed
    );
    typed_access!(
        get_set,
        set_mut,
        Set,
        IndexSet<Bytes>,
        Value::Set(Box::default()),
        boxed
    );
    typed_access!(
        get_zset,
        zset_mut,
        ZSet,
        ZSet,
        Value::ZSet(Box::default()),
        boxed
    );
    typed_access!(
        get_stream,
        stream_mut,
        Stream,
        Box<crate::stream::Stream>,
        Value::Stream(Box::default())
    );

    /// Stores a value, replacing any old one. The TTL is cleared unless
    /// `keep_ttl`.
    pub fn set_value(&mut self, key: &Bytes, value: Value, keep_ttl: bool) {
        let live = self.live_index(key);
        self.set_value_at(live, key, value, keep_ttl);
    }

    /// [`Ctx::set_value`] for a key whose [`Ctx::live_index`] the caller
    /// has just read (`None`: the key is not there): a read-modify-write
    /// such as INCR looks the key up once.
    pub(crate) fn set_value_at(
        &mut self,
        live: Option<usize>,
        key: &Bytes,
        value: Value,
        keep_ttl: bool,
    ) {
        let now = self.now;
        let db = &mut self.inner.dbs[self.db];
        let mut was_stream = false;
        let i = match live {
            Some(i) => {
                let e = &mut db.map[i];
                was_stream = matches!(&*e.value, Value::Stream(_));
                // In place when nothing else holds the old value (no
                // snapshot or copy shares it): one check instead of a
                // free, an allocation and two reference counts.
                match Arc::get_mut(&mut e.value) {
                    Some(v) => *v = value,
                    None => e.value = Arc::new(value),
                }
                e.sample = 0;
                e.access = now;
                e.str_enc = crate::value::StrEnc::Auto;
                if !keep_ttl && e.expire_at.is_some() {
                    db.set_expire(key, None);
                }
                i
            }
            None => {
                let (i, _) = db.map.insert_full(owned(key), Entry::new(value, now));
                self.created(key);
                i
            }
        };
        // A stream overwritten by another value is gone for the consumers
        // blocked on it, as when it is deleted: they are told at once.
        if was_stream
            && self.inner.blocked > 0
            && self.inner.waiting.contains_key(&(self.db, key.clone()))
        {
            self.wake = true;
        }
        let db = self.db;
        self.modified_at(db, Some(i), key);
    }

    /// Keyspace event `new` (class `n`) for a key just added, as Redis's
    /// `dbAdd` sends it.
    pub fn created(&mut self, key: &[u8]) {
        self.notify(crate::pubsub::class::NEW, "new", key);
    }

    /// Records how a string was written, for `OBJECT ENCODING`.
    pub fn mark_str_enc(&mut self, key: &[u8], enc: crate::value::StrEnc) {
        if let Some(e) = self.inner.dbs[self.db].map.get_mut(key) {
            e.str_enc = enc;
        }
    }

    /// True when this client may take elements from `key`: nobody waits on
    /// it, or this client has waited longest. Keeps blocked clients served
    /// in the order they blocked, as in Redis.
    pub fn may_serve(&self, key: &[u8]) -> bool {
        if self.sess.id == 0 || self.inner.waiting.is_empty() {
            return true;
        }
        match self
            .inner
            .waiting
            .get(&(self.db, Bytes::copy_from_slice(key)))
        {
            None => true,
            Some(q) => q.front().is_none_or(|f| *f == self.sess.id),
        }
    }

    /// Publishes a keyspace event for `key` in the current database.
    pub fn notify(&mut self, class: u32, event: &str, key: &[u8]) {
        if self.inner.config.notify_flags != 0 {
            let db = self.db;
            crate::pubsub::notify(self.inner, db, class, event, key);
        }
    }

    /// Deletes a key (keyspace event `del`); true if it existed and was live.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let done = self.delete_quiet(key);
        if done {
            self.notify(crate::pubsub::class::GENERIC, "del", key);
        }
        done
    }

    /// Deletes a key without a `del` event (RENAME, MOVE, COPY REPLACE).
    pub fn delete_quiet(&mut self, key: &[u8]) -> bool {
        if self.expire_if_needed(key) {
            return false;
        }
        let db = self.db;
        if self.inner.delete_key(db, key) {
            self.dirty += 1;
            self.signal(db, key);
            // A consumer blocked on a deleted stream is told at once.
            if self.inner.blocked > 0
                && self
                    .inner
                    .waiting
                    .contains_key(&(db, Bytes::copy_from_slice(key)))
            {
                self.wake = true;
            }
            true
        } else {
            false
        }
    }

    /// After a write to `key`: drops an emptied collection, re-accounts its
    /// memory, invalidates WATCHes and wakes blocked clients.
    pub fn modified(&mut self, key: &[u8]) {
        let db = self.db;
        self.modified_in(db, key);
    }

    pub fn modified_in(&mut self, db: usize, key: &[u8]) {
        // One lookup: the entry is reached by its index from here on.
        let i = self.inner.dbs[db].map.get_index_of(key);
        self.modified_at(db, i, key);
    }

    /// [`Ctx::modified_in`] for a key at index `i` of its database's map
    /// (`None`: not there).
    fn modified_at(&mut self, db: usize, i: Option<usize>, key: &[u8]) {
        self.dirty += 1;
        let d = &mut self.inner.dbs[db];
        let empty = match i.map(|i| &*d.map[i].value) {
            Some(Value::List(l)) => l.is_empty(),
            Some(Value::Hash(h)) => h.is_empty(),
            Some(Value::Set(s)) => s.is_empty(),
            Some(Value::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.inner.delete_key(db, key);
            crate::pubsub::notify(self.inner, db, crate::pubsub::class::GENERIC, "del", key);
        } else if let Some(e) = i.map(|i| &mut d.map[i]) {
            // The big encoding is for good once reached: not worked out
            // again (for a set, by parsing every member) on every write.
            if e.str_enc != crate::value::StrEnc::Big
                && !matches!(&*e.value, Value::Str(_))
                && matches!(e.value.encoding(), "hashtable" | "skiplist")
            {
                e.str_enc = crate::value::StrEnc::Big;
            }
            let new = resized(key, e);
            self.inner.used_memory = self.inner.used_memory.saturating_sub(e.size) + new;
            e.size = new;
            if self.inner.blocked > 0
                && matches!(
                    &*e.value,
                    Value::List(_) | Value::ZSet(_) | Value::Stream(_)
                )
            {
                self.wake = true;
            }
        }
        self.signal(db, key);
    }

    /// Invalidates WATCHes on a key (Redis's `signalModifiedKey`).
    pub fn signal(&mut self, db: usize, key: &[u8]) {
        self.inner.touch_watched(db, key);
    }

    /// Journal these effects instead of the command as sent.
    pub fn propagate(&mut self, args: Vec<Bytes>) {
        let db = self.db;
        self.effects
            .get_or_insert_with(Vec::new)
            .push(Effect { db, args });
    }
}

/// Approximate bytes an entry costs, key included.
pub(crate) fn entry_size(key: &[u8], e: &Entry) -> usize {
    KEY_OVERHEAD + key.len() + e.value.approx_size()
}

/// [`entry_size`] after a write to `e`. A large collection is sized from
/// its last sample while only its length changes, and sampled again each
/// time its length reaches a multiple of [`SAMPLED_FROM`]: a sample walks
/// its first elements (about 400 instructions), which every LPUSH, SADD
/// or HSET on a big collection paid.
pub(crate) fn resized(key: &[u8], e: &mut Entry) -> usize {
    use crate::value::{sampled, SAMPLED_FROM};
    let fixed = KEY_OVERHEAD + key.len();
    if let Some((n, overhead)) = e.value.sizing() {
        if e.sample > 0 && n > SAMPLED_FROM && n % SAMPLED_FROM != 0 {
            return fixed + sampled(e.sample as usize, n, overhead);
        }
    }
    let (size, sample) = e.value.measure();
    // A sample too big to keep is taken again next time.
    e.sample = sample.and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
    fixed + size
}

/// An array of bulk strings: already encoded when `wire` (the caller's
/// [`Ctx::wire_replies`]), otherwise a frame per element.
pub fn bulks<'b, I>(wire: bool, items: I) -> Frame
where
    I: ExactSizeIterator<Item = &'b Bytes> + Clone,
{
    if wire {
        Frame::encoded_bulks(items.map(|b| &b[..]))
    } else {
        Frame::Array(items.cloned().map(Frame::Bulk).collect())
    }
}
