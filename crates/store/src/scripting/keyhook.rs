//! The caller's say over the keys a script touches, and the undo log that
//! lets a refused script leave the keyspace exactly as it found it.
//!
//! The proxy runs scripts on a partial local copy while Redis is away: a
//! key the copy does not hold may be seeded on first use, or the whole
//! script refused. A refusal can come after the script already wrote, so
//! every key is saved before its first write or seed in the run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::store::Inner;
use crate::value::{Entry, Value};

/// What the caller says about a key a script is about to touch.
pub enum KeyAccess {
    /// The local copy of the key is authoritative: go on.
    Local,
    /// Replace the key's local entry with this value and absolute expiry
    /// (Unix ms) first; `None` makes the key absent.
    Seed(Option<(Arc<Value>, Option<u64>)>),
    /// Refuse the whole script: it is undone and this error text (e.g.
    /// `"TRYAGAIN key not available"`) is the reply.
    Deny(String),
}

/// Asked once per (database, key) per script run, before the first
/// command that names the key (read or write; keys found by the command's
/// key specs, `numkeys`-style ones included).
///
/// It runs while the script holds the store lock: it must not call back
/// into the [`crate::Store`] (that would deadlock) and should be quick
/// (it delays every client). A seed is not journaled, like
/// [`crate::Store::import`]; the script's own writes are. While a hook is
/// set, FLUSHDB, FLUSHALL, SWAPDB, MOVE and COPY … DB are refused inside
/// scripts, since their keys cannot be known or undone.
pub type KeyHook = Arc<dyn Fn(usize, &[u8]) -> KeyAccess + Send + Sync>;

/// Asked about each command a script runs while a [`KeyHook`] is set:
/// `Some(error text)` fails that command, as Redis fails a script's
/// command its user may not run (the script may catch it with `pcall`).
pub type CommandHook = Arc<dyn Fn(usize, &[Bytes]) -> Option<String> + Send + Sync>;

/// One run's bookkeeping for the hook.
pub(crate) struct KeyGuard {
    pub hook: KeyHook,
    command: Option<CommandHook>,
    asked: HashSet<(usize, Bytes)>,
    /// Each key's entry before the run first changed it.
    undo: HashMap<(usize, Bytes), Option<Entry>>,
}

impl KeyGuard {
    pub fn new(hook: KeyHook, command: Option<CommandHook>) -> KeyGuard {
        KeyGuard {
            hook,
            command,
            asked: HashSet::new(),
            undo: HashMap::new(),
        }
    }

    /// Asks the command hook, if any, about `argv` run in `db`.
    pub fn check_command(&self, db: usize, argv: &[Bytes]) -> Result<(), String> {
        match self.command.as_ref().and_then(|h| h(db, argv)) {
            Some(msg) => Err(msg),
            None => Ok(()),
        }
    }

    /// Asks the hook about `key` unless it already answered in this run,
    /// seeding as told. `Err` carries a refusal.
    pub fn check(
        &mut self,
        inner: &mut Inner,
        db: usize,
        key: &Bytes,
        now: u64,
    ) -> Result<(), String> {
        if !self.asked.insert((db, key.clone())) {
            return Ok(());
        }
        match (self.hook)(db, key) {
            KeyAccess::Local => Ok(()),
            KeyAccess::Deny(msg) => Err(msg),
            KeyAccess::Seed(seed) => {
                self.save(inner, db, key);
                inner.delete_key(db, key);
                inner.touch_watched(db, key);
                if let Some((value, expire_at)) = seed {
                    if !value.is_empty_collection() {
                        let mut e = Entry::new(Value::Str(Bytes::new()), now);
                        e.value = value;
                        insert(inner, db, key.clone(), e, expire_at);
                    }
                }
                Ok(())
            }
        }
    }

    /// Records a key's entry before its first change in this run.
    pub fn save(&mut self, inner: &Inner, db: usize, key: &Bytes) {
        self.undo
            .entry((db, key.clone()))
            .or_insert_with(|| inner.dbs[db].map.get(&key[..]).cloned());
    }

    /// Puts every saved key back as it was before the run.
    pub fn undo(self, inner: &mut Inner) {
        for ((db, key), old) in self.undo {
            inner.delete_key(db, &key);
            inner.touch_watched(db, &key);
            if let Some(e) = old {
                let at = e.expire_at;
                insert(inner, db, key, e, at);
            }
        }
    }
}

/// Inserts an entry with its memory accounted and its expiry indexed.
fn insert(inner: &mut Inner, db: usize, key: Bytes, mut e: Entry, expire_at: Option<u64>) {
    e.expire_at = None;
    e.size = crate::ctx::entry_size(&key, &e);
    inner.used_memory += e.size;
    inner.peak_memory = inner.peak_memory.max(inner.used_memory);
    let d = &mut inner.dbs[db];
    d.map.insert(key.clone(), e);
    d.set_expire(&key, expire_at);
}
