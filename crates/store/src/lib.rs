//! The local keyspace: Redis's data types, expiry, eviction and command
//! execution, reply for reply (Redis 7.0 wording, RESP2 and RESP3).
//!
//! The proxy serves keys from here while Redis is away, and standalone mode
//! serves everything from here. A [`Store`] is shared by all connections;
//! each connection owns a [`Session`]. [`Store::execute`] runs one command
//! and returns its reply plus the deterministic [`Effect`]s to journal
//! (relative expiries made absolute, random pops made explicit, reads and
//! failures journal nothing), Redis-propagation style. [`Store::apply`]
//! replays those effects on start-up, and [`Store::snapshot`] gives a
//! point-in-time copy, iterated outside the lock as commands, for journal
//! compaction.
//!
//! ```
//! # async fn demo() {
//! use bytes::Bytes;
//! let store = store::Store::new(store::StoreConfig::default());
//! let mut s = store.session();
//! let args = |v: &[&str]| v.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect::<Vec<_>>();
//! let out = store.execute(&mut s, args(&["SET", "k", "v", "EX", "10"])).await;
//! assert_eq!(out.reply, resp::Frame::simple("OK"));
//! assert_eq!(out.effects[0].args[3], "PXAT"); // journaled as an absolute time
//! # }
//! ```
//!
//! # Layout
//! - [`store`]: [`Store`], [`StoreConfig`], [`Clock`], the dispatch table
//!   (command name → handler, arity and flags from `resp`'s command table)
//!   and the blocking wait.
//! - [`session`]: [`Session`], one per client connection.
//! - `ctx`: what a handler sees (locked keyspace, session, arguments) and
//!   the write bookkeeping (WATCH, memory, wake-ups, effects).
//! - [`value`], [`db`]: the data types, entries and databases.
//! - [`stream`]: [`stream::Stream`], a stream's entries, counters,
//!   consumer groups and pending lists, with a model of Redis's listpack
//!   nodes so `~` trims remove what Redis removes.
//! - one file per command family: `strings`, `keys`, `hashes`, `lists`
//!   (blocking pops included), `sets`, `zsets`, `streams` (X* commands,
//!   blocking XREAD/XREADGROUP included), `tx` (MULTI/EXEC/WATCH),
//!   `pubsub`, `server` (PING, HELLO, CLIENT, COMMAND, INFO, …), `config`.
//! - `scripting`: EVAL/EVALSHA/SCRIPT (`scripting/mod.rs`), functions
//!   (`scripting/functions.rs`), the sandboxed Lua state and value
//!   conversions (`scripting/engine.rs`, `scripting/prelude.lua`), BUSY and
//!   SCRIPT KILL (`scripting/gate.rs`), the caller's key hook
//!   (`scripting/keyhook.rs`: [`KeyAccess`], [`KeyHook`]).
//! - `sort` (SORT, SORT_RO).
//! - `expire` (active expiry), `eviction` (maxmemory policies), `stats`,
//!   [`snapshot`], `glob` (Redis's pattern rules), `num` (Redis's number
//!   parsing and formatting).
//!
//! # Concurrency
//! One `std::sync::Mutex` guards the keyspace; it is held only for the
//! duration of one command (or one EXEC), never across an `.await`. A
//! blocking command that finds nothing joins a per-key wait queue, releases
//! the lock and waits on a `tokio::sync::watch` channel bumped whenever a
//! list, sorted set or stream gains elements, then retries (XREAD's `$`
//! kept as it was when it blocked); only the client first
//! in a key's queue may take from it, so blocked clients are served in the
//! order they blocked, as in Redis. (Redis hands the element over inside
//! the pushing command; here a non-blocking pop from another client that
//! runs before the woken waiter can still take it.)
//!
//! A script (EVAL, FCALL) holds the lock for its whole run, like Redis runs
//! it atomically. Meanwhile other callers of [`Store::execute`] poll the
//! lock (their thread sleeps in 1 ms steps) and, once the script is past
//! `busy-reply-threshold`, get `BUSY` instead; SCRIPT KILL and FUNCTION
//! KILL reach the script without the lock. A long script therefore blocks
//! the threads of the callers waiting for it until the threshold.
//!
//! # API at a glance
//! - `Store::new(StoreConfig) -> Store` (cheap `Clone`, `Send + Sync`),
//!   `Store::session() -> Session` per connection.
//! - `Store::execute(&self, &mut Session, Vec<Bytes>) -> Executed`: the
//!   reply, `more` frames (one per channel for SUBSCRIBE), the `effects` to
//!   journal and `atomic` (an EXEC's or a script's effects, to replay as
//!   one transaction). Blocking pops wait inside; dropping the future gives up
//!   the wait cleanly.
//! - `Store::apply(db, &args) -> Frame`: replays one effect synchronously.
//! - `Store::snapshot() -> Snapshot`, `Snapshot::commands()`: the data as
//!   effects (PEXPIREAT for TTLs), for compaction.
//! - `value::Value::Stream(Box<stream::Stream>)`: build one with
//!   `Stream::new`/`append` and its public counters and `groups`;
//!   `Stream::rebuild_commands(key)` gives the commands that recreate it
//!   (snapshots, the replica writing a key back into Redis).
//! - `Store::active_expire_cycle()` / `Store::spawn_active_expire(every)`.
//! - `Store::used_memory()`, `Store::key_count(db)`, `Store::set_param`.
//! - `Session::pushes()` (pub/sub and keyspace messages to write between
//!   replies), `Session::is_killed()` (CLIENT KILL, QUIT, too slow a
//!   subscriber: close the connection), `Session::set_addr`.
//! - `Session::set_key_hook(Option<KeyHook>)`: asked once per (db, key) per
//!   script run before a script's command touches the key; it may seed the
//!   key or refuse the script ([`KeyAccess`]), which is then undone.
//! - A script's or function's `Executed` carries the effects of the
//!   commands it ran (`atomic` when more than one), also when it failed
//!   half-way; function libraries are journaled as FUNCTION commands.
//!
//! # Not supported yet
//! SCRIPT DEBUG YES/SYNC (the Lua debugger). Such commands
//! answer `-ERR <NAME> is not supported by the local store yet …`. See the
//! crate README for the full list and known differences.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod ctx;
pub mod db;
pub mod dump;
mod eviction;
mod expire;
mod geo;
mod glob;
mod hashes;
mod hll;
mod introspection;
mod keys;
mod lists;
mod names;
mod num;
mod pubsub;
mod scripting;
mod server;
pub mod session;
mod sets;
pub mod snapshot;
mod sort;
mod stats;
pub mod store;
pub mod stream;
mod streams;
mod strings;
mod tx;
pub mod value;
mod zsets;

use bytes::Bytes;
use resp::Frame;

pub use config::Policy;
pub use glob::glob_match;
pub use scripting::{CommandHook, KeyAccess, KeyHook};
pub use session::Session;
pub use snapshot::Snapshot;
pub use store::{implemented_commands, implements, Clock, Pushes, Store, StoreConfig};

/// A score as text that reads back to the same `f64` (`%.17g`, `inf`,
/// `-inf`), for writing a sorted set back with `ZADD`.
pub fn format_score(d: f64) -> String {
    num::fmt_g17(d)
}

/// A deterministic command to journal: replaying `args` in database `db`
/// recreates what the execution did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Database the command applies to.
    pub db: usize,
    /// The command, name first.
    pub args: Vec<Bytes>,
}

/// The result of [`Store::execute`].
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// The reply to send.
    pub reply: Frame,
    /// Further frames to send right after `reply`, in order (SUBSCRIBE and
    /// UNSUBSCRIBE confirm each channel with its own frame).
    pub more: Vec<Frame>,
    /// What to journal; empty for reads and failures.
    pub effects: Vec<Effect>,
    /// True when `effects` came from one EXEC, or from one script or
    /// function that ran more than one write: replay them as one
    /// transaction.
    pub atomic: bool,
}

impl Executed {
    pub(crate) fn reply(reply: Frame) -> Executed {
        Executed {
            reply,
            more: Vec::new(),
            effects: Vec::new(),
            atomic: false,
        }
    }
}
