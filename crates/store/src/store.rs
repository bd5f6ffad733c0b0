//! [`Store`]: the shared keyspace behind one mutex, the command dispatch
//! table, and the entry points ([`Store::execute`], [`Store::apply`],
//! [`Store::snapshot`], [`Store::active_expire_cycle`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use indexmap::IndexSet;
use resp::command::{F_DENYOOM, F_MAY_REPLICATE, F_NO_MULTI, F_WRITE};
use resp::Frame;
use tokio::sync::{mpsc, watch, Notify};

use crate::config::Config;
use crate::ctx::{err, Block, Ctx, Handler};
use crate::db::Db;
use crate::session::{Session, PUSH_CAPACITY};
use crate::stats::Stats;
use crate::value::{Entry, Value};
use crate::{Effect, Executed};

/// Where the store reads the time. Expiry, TTL replies and the absolute
/// times written into effects all come from it.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Wall clock.
    System,
    /// Wall clock at creation plus tokio's monotonic time since, so tests
    /// that `tokio::time::pause()` and `advance()` move expiry too.
    Tokio {
        /// Unix ms at `base`.
        base_ms: u64,
        /// tokio instant of `base_ms`.
        base: tokio::time::Instant,
    },
    /// A settable time in Unix ms, for synchronous tests.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A tokio-driven clock starting at the current wall time.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            base_ms: system_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    /// Current time in Unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_ms(),
            Clock::Tokio { base_ms, base } => base_ms + base.elapsed().as_millis() as u64,
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }

    /// A command's start: the time in Unix ms, and the instant its duration
    /// (commandstats, SLOWLOG) is measured from. One clock read for both
    /// with the tokio clock: reading the clock cost a tenth of a pipelined
    /// GET when each use read it again.
    fn start(&self) -> (u64, tokio::time::Instant) {
        let at = tokio::time::Instant::now();
        let ms = match self {
            Clock::Tokio { base_ms, base } => {
                base_ms + at.saturating_duration_since(*base).as_millis() as u64
            }
            other => other.now_ms(),
        };
        (ms, at)
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How to build a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Number of databases (Redis: 16).
    pub databases: usize,
    /// Time source.
    pub clock: Clock,
    /// Initial `CONFIG SET` pairs (`("maxmemory", "100mb")`).
    pub params: Vec<(String, String)>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            databases: 16,
            clock: Clock::Tokio {
                base_ms: system_ms(),
                base: tokio::time::Instant::now(),
            },
            params: Vec::new(),
        }
    }
}

/// What `CLIENT LIST` and friends know about a connected client.
pub(crate) struct ClientInfo {
    pub name: Option<Bytes>,
    pub addr: String,
    pub db: usize,
    pub created_ms: u64,
    pub last_ms: u64,
    pub last_cmd: &'static str,
    pub resp: u8,
    pub push: mpsc::Sender<Frame>,
    pub killed: Arc<AtomicBool>,
    pub unblock: Arc<Notify>,
    /// A WATCHed key changed: the next EXEC fails.
    pub dirty_cas: bool,
    pub in_multi: bool,
    pub blocked: bool,
    /// CLIENT UNBLOCK … ERROR was used.
    pub unblock_error: bool,
    pub subs: usize,
    pub psubs: usize,
    pub watching: usize,
}

/// Everything behind the lock.
pub(crate) struct Inner {
    pub dbs: Vec<Db>,
    pub clients: crate::names::NamedMap<u64, ClientInfo>,
    /// WATCHed keys → (client id, key was already expired at WATCH time).
    pub watchers: HashMap<(usize, Bytes), Vec<(u64, bool)>>,
    pub channels: HashMap<Bytes, IndexSet<u64>>,
    pub patterns: HashMap<Bytes, IndexSet<u64>>,
    pub shard_channels: HashMap<Bytes, IndexSet<u64>>,
    pub config: Config,
    pub stats: Stats,
    pub used_memory: usize,
    pub peak_memory: usize,
    /// Number of clients waiting in a blocking command.
    pub blocked: usize,
    /// Clients blocked on each (db, key), in the order they blocked.
    pub waiting: HashMap<(usize, Bytes), std::collections::VecDeque<u64>>,
    /// The Lua engine and its cached scripts.
    pub scripting: crate::scripting::Scripting,
}

impl Inner {
    /// Removes a key and its memory; true if it existed.
    pub fn delete_key(&mut self, db: usize, key: &[u8]) -> bool {
        match self.dbs[db].remove(key) {
            Some(e) => {
                self.used_memory = self.used_memory.saturating_sub(e.size);
                true
            }
            None => false,
        }
    }

    /// Marks clients WATCHing this key dirty, after the key changed. As in
    /// Redis 7.0, deleting a key that was already expired when it was
    /// WATCHed is not a change.
    pub fn touch_watched(&mut self, db: usize, key: &[u8]) {
        if self.watchers.is_empty() {
            return;
        }
        let exists = self.dbs[db].map.contains_key(key);
        if let Some(ws) = self.watchers.get_mut(&(db, Bytes::copy_from_slice(key))) {
            for (id, expired) in ws.iter_mut() {
                if *expired && !exists {
                    *expired = false;
                    continue;
                }
                if let Some(c) = self.clients.get_mut(id) {
                    c.dirty_cas = true;
                }
            }
        }
    }

    /// Before FLUSHDB or SWAPDB empties `db`: clients WATCHing a key that
    /// exists there become dirty.
    pub fn touch_all_watched(&mut self, db: usize) {
        let keys: Vec<Bytes> = self
            .watchers
            .keys()
            .filter(|(d, _)| *d == db)
            .map(|(_, k)| k.clone())
            .collect();
        for k in keys {
            if !self.dbs[db].map.contains_key(&k[..]) {
                continue;
            }
            if let Some(ws) = self.watchers.get_mut(&(db, k.clone())) {
                for (id, expired) in ws.iter_mut() {
                    if *expired {
                        *expired = false;
                        continue;
                    }
                    if let Some(c) = self.clients.get_mut(id) {
                        c.dirty_cas = true;
                    }
                }
            }
        }
    }

    /// True when a key this client WATCHed while it was live has expired
    /// since (Redis's `isWatchedKeyExpired`), even if nobody deleted it yet.
    pub fn watched_key_expired(&self, sess: &Session, now: u64) -> bool {
        sess.watched.iter().any(|(db, key)| {
            let expired_at_watch = self
                .watchers
                .get(&(*db, key.clone()))
                .and_then(|ws| ws.iter().find(|(id, _)| *id == sess.id))
                .is_some_and(|(_, e)| *e);
            !expired_at_watch && self.dbs[*db].is_expired(key, now)
        })
    }

    pub fn unwatch(&mut self, sess: &mut Session) {
        for (db, key) in sess.watched.drain(..) {
            if let Some(ids) = self.watchers.get_mut(&(db, key.clone())) {
                ids.retain(|(i, _)| *i != sess.id);
                if ids.is_empty() {
                    self.watchers.remove(&(db, key));
                }
            }
        }
        if let Some(c) = self.clients.get_mut(&sess.id) {
            c.dirty_cas = false;
            c.watching = 0;
        }
    }

    pub fn unregister(&mut self, sess: &mut Session) {
        self.unwatch(sess);
        for ch in sess.channels.drain(..) {
            if let Some(s) = self.channels.get_mut(&ch) {
                s.swap_remove(&sess.id);
                if s.is_empty() {
                    self.channels.remove(&ch);
                }
            }
        }
        for p in sess.patterns.drain(..) {
            if let Some(s) = self.patterns.get_mut(&p) {
                s.swap_remove(&sess.id);
                if s.is_empty() {
                    self.patterns.remove(&p);
                }
            }
        }
        for ch in sess.shard_channels.drain(..) {
            if let Some(s) = self.shard_channels.get_mut(&ch) {
                s.swap_remove(&sess.id);
                if s.is_empty() {
                    self.shard_channels.remove(&ch);
                }
            }
        }
        self.clients.remove(&sess.id);
    }

    /// Number of keys in a database (including expired-unreclaimed keys,
    /// like Redis's DBSIZE).
    pub fn keys_in(&self, db: usize) -> usize {
        self.dbs[db].len()
    }
}

/// State shared by all handles of one store.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub clock: Clock,
    /// Bumped when a list or sorted set gains elements while clients block.
    pub wake: watch::Sender<u64>,
    pub started_ms: u64,
    pub run_id: String,
    pub databases: usize,
    /// The running script's busy/kill state, read before the lock.
    pub script_gate: Arc<crate::scripting::gate::Gate>,
    /// Client ids, handed out without the lock.
    pub next_id: AtomicU64,
    /// Client bookkeeping that arrived while the lock was held (a script
    /// holds it for its whole run): applied at the next lock, so opening
    /// or closing a connection never waits for a script.
    pub deferred: Mutex<Deferred>,
    /// Something waits in `deferred`: every command takes the lock, and
    /// only this flag is read on that path.
    pub deferred_pending: AtomicBool,
    /// CLIENT PAUSE in effect, if any.
    pub pause: watch::Sender<Option<Pause>>,
    /// A pause was set (and maybe not yet ended): the one flag commands
    /// read when nothing is paused.
    pub paused: AtomicBool,
}

/// One `CLIENT PAUSE`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pause {
    pub until: tokio::time::Instant,
    /// `ALL`; else `WRITE`.
    pub all: bool,
}

/// True when `args` from `session` waits out pause `p`.
fn pauses(p: &Pause, session: &Session, args: &[Bytes]) -> bool {
    let Some(spec) = resp::lookup(args) else {
        return p.all;
    };
    if spec.name == "client|unpause" {
        return false;
    }
    if p.all {
        return true;
    }
    let writes = |s: &resp::CommandSpec| s.flags & (F_WRITE | F_MAY_REPLICATE) != 0;
    if spec.name == "exec" {
        return session
            .multi
            .as_ref()
            .is_some_and(|q| q.iter().filter_map(|c| resp::lookup(c)).any(writes));
    }
    // Queued commands wait at EXEC, as in Redis.
    session.multi.is_none() && writes(spec)
}

/// See [`Shared::deferred`].
#[derive(Default)]
pub(crate) struct Deferred {
    /// Clients to register.
    pub arrivals: Vec<(u64, ClientInfo)>,
    /// Peer addresses to record.
    pub addrs: Vec<(u64, String)>,
    /// Sessions gone (detached from the store) to unregister.
    pub departures: Vec<Session>,
    /// Replies sent without the lock, for the stats: the error text (none
    /// for a success) and the command they answered, when the table knows it.
    pub replies: Vec<(Option<Bytes>, Option<&'static str>)>,
    /// Clients that began (`true`) or ended waiting out a CLIENT PAUSE:
    /// shown blocked meanwhile, as Redis shows them.
    pub paused: Vec<(u64, bool)>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a keyspace that is still
        // structurally valid (every write is a complete map operation), so
        // carry on rather than poison every later command.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        self.settle(&mut inner);
        inner
    }

    /// True while a CLIENT PAUSE is in effect: keys past their TTL are not
    /// deleted meanwhile (Redis pauses expiry with its clients).
    pub fn expiry_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
            && self
                .pause
                .borrow()
                .is_some_and(|p| tokio::time::Instant::now() < p.until)
    }

    /// Queues client bookkeeping for the next lock.
    pub fn defer(&self, f: impl FnOnce(&mut Deferred)) {
        let mut d = match self.deferred.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        f(&mut d);
        self.deferred_pending.store(true, Ordering::Release);
    }

    /// Applies the deferred client bookkeeping; called with the lock held.
    pub fn settle(&self, inner: &mut Inner) {
        // Looked at before it is taken: a swap is a locked instruction,
        // and this runs for every command.
        if !self.deferred_pending.load(Ordering::Acquire)
            || !self.deferred_pending.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let mut d = match self.deferred.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        for (id, info) in d.arrivals.drain(..) {
            inner.stats.connections_received += 1;
            inner.clients.insert(id, info);
        }
        for (id, addr) in d.addrs.drain(..) {
            if let Some(c) = inner.clients.get_mut(&id) {
                c.addr = addr;
            }
        }
        for (error, cmd) in d.replies.drain(..) {
            match (error, cmd) {
                (Some(e), cmd) => {
                    inner.stats.error(&e);
                    if let Some(cmd) = cmd {
                        inner.stats.rejected(cmd);
                    }
                }
                (None, Some(cmd)) => inner.stats.called(cmd, 0, false),
                (None, None) => {}
            }
        }
        for (id, waiting) in d.paused.drain(..) {
            if let Some(c) = inner.clients.get_mut(&id) {
                c.blocked = waiting;
            }
        }
        let gone: Vec<Session> = d.departures.drain(..).collect();
        drop(d);
        for mut sess in gone {
            inner.unregister(&mut sess);
        }
    }
}

/// The keyspace. Cheap to clone; every clone sees the same data.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
}

fn table() -> &'static HashMap<&'static str, Handler> {
    static TABLE: OnceLock<HashMap<&'static str, Handler>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let families: &[&[(&str, Handler)]] = &[
            crate::strings::COMMANDS,
            crate::keys::COMMANDS,
            crate::hashes::COMMANDS,
            crate::lists::COMMANDS,
            crate::sets::COMMANDS,
            crate::zsets::COMMANDS,
            crate::server::COMMANDS,
            crate::pubsub::COMMANDS,
            crate::tx::COMMANDS,
            crate::config::COMMANDS,
            crate::sort::COMMANDS,
            crate::scripting::COMMANDS,
            crate::scripting::functions::COMMANDS,
            crate::streams::COMMANDS,
            crate::dump::COMMANDS,
            crate::hll::COMMANDS,
            crate::geo::COMMANDS,
            crate::introspection::COMMANDS,
        ];
        families
            .iter()
            .flat_map(|f| f.iter().copied())
            .chain(crate::introspection::cluster_commands())
            .collect()
    })
}

/// True when this store runs `name` (a full name: `get`, `config|set`).
pub fn implements(name: &str) -> bool {
    table().contains_key(name)
}

/// Names of the commands this store implements (for docs and tests).
pub fn implemented_commands() -> Vec<&'static str> {
    let mut v: Vec<_> = table().keys().copied().collect();
    v.sort_unstable();
    v
}

/// `Some(true)` for SCRIPT KILL, `Some(false)` for FUNCTION KILL.
/// FUNCTION STATS, which Redis answers while a script is busy.
fn is_function_stats(args: &[Bytes]) -> bool {
    args.len() == 2
        && args[0].eq_ignore_ascii_case(b"function")
        && args[1].eq_ignore_ascii_case(b"stats")
}

fn kill_kind(args: &[Bytes]) -> Option<bool> {
    if args.len() != 2 || !args[1].eq_ignore_ascii_case(b"kill") {
        return None;
    }
    if args[0].eq_ignore_ascii_case(b"script") {
        Some(true)
    } else if args[0].eq_ignore_ascii_case(b"function") {
        Some(false)
    } else {
        None
    }
}

/// Commands that may run while a RESP2 client is subscribed.
const SUBSCRIBED_OK: &[&str] = &[
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
    "ping",
    "quit",
    "reset",
];

/// The error Redis sends for a command it does not know.
pub(crate) fn unknown_command(args: &[Bytes]) -> Frame {
    let mut rest = String::new();
    for a in &args[1..] {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        let s = String::from_utf8_lossy(a);
        let s: String = s.chars().take(room).collect();
        rest.push_str(&format!("'{s}' "));
    }
    let name: String = String::from_utf8_lossy(&args[0])
        .chars()
        .take(128)
        .collect();
    let msg = format!("ERR unknown command '{name}', with args beginning with: {rest}")
        .replace(['\r', '\n'], " ");
    Frame::Error(Bytes::from(msg))
}

pub(crate) fn is_container(name: &str) -> bool {
    static CONTAINERS: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    CONTAINERS
        .get_or_init(|| {
            resp::command::SUBCOMMANDS
                .iter()
                .filter_map(|s| s.name.split_once('|').map(|(c, _)| c))
                .collect()
        })
        .contains(name)
}

/// A retried blocking pop that found a key it waits on holding another
/// type: Redis leaves the client blocked rather than answer WRONGTYPE (it
/// serves only the type the command pops). A wrong destination of BLMOVE
/// is answered.
fn stays_blocked(ctx: &mut Ctx, reply: &Frame) -> bool {
    if !matches!(reply, Frame::Error(e) if e.starts_with(b"WRONGTYPE")) {
        return false;
    }
    match ctx.name {
        "blpop" | "brpop" | "blmpop" | "bzpopmin" | "bzpopmax" | "bzmpop" => true,
        "blmove" | "brpoplpush" => {
            let src = ctx.args[1].clone();
            ctx.get_list(&src).is_err()
        }
        _ => false,
    }
}

/// Redis's refusal of a write while `min-replicas-to-write` is not met.
pub(crate) const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// Resolution of one command against the tables.
pub(crate) enum Resolved {
    /// Name, handler, flags and row (`resp::command::lookup_id`).
    Run(&'static str, Handler, u32, usize),
    /// The refusal, and the command it names when the table knows it
    /// (counted as that command's rejected call).
    Reject(Frame, Option<&'static str>),
}

/// Per row of the command table ([`resp::command::lookup_id`]): its
/// handler, and whether it is a container of subcommands. Indexed, not
/// hashed by name, on every command.
fn rows() -> &'static [(Option<Handler>, bool)] {
    static ROWS: OnceLock<Vec<(Option<Handler>, bool)>> = OnceLock::new();
    ROWS.get_or_init(|| {
        (0..resp::command::row_count())
            .filter_map(resp::command::row)
            .map(|spec| (table().get(spec.name).copied(), is_container(spec.name)))
            .collect()
    })
}

/// Finds the handler for a command and checks its arity.
pub(crate) fn resolve(args: &[Bytes]) -> Resolved {
    resolve_row(args, resp::command::lookup_id(args))
}

/// [`resolve`] with the command's row (`lookup_id`) looked up already.
pub(crate) fn resolve_row(
    args: &[Bytes],
    row: Option<(usize, &'static resp::CommandSpec)>,
) -> Resolved {
    let Some((id, spec)) = row else {
        return Resolved::Reject(unknown_command(args), None);
    };
    let (handler, container) = rows().get(id).copied().unwrap_or((None, false));
    if args.len() >= 2 && container && !spec.name.contains('|') {
        // An unknown subcommand resolved to its container.
        let sub = String::from_utf8_lossy(&args[1]).to_string();
        let cont = spec.name.to_ascii_uppercase();
        return Resolved::Reject(
            Frame::error(format!(
                "ERR unknown subcommand '{}'. Try {cont} HELP.",
                sub.chars().take(128).collect::<String>()
            )),
            None,
        );
    }
    if !spec.arity_ok(args.len()) {
        return Resolved::Reject(
            Frame::error(format!(
                "ERR wrong number of arguments for '{}' command",
                spec.name
            )),
            Some(spec.name),
        );
    }
    match handler {
        Some(h) => Resolved::Run(spec.name, h, spec.flags, id),
        None => {
            let shown = spec.name.replace('|', " ").to_ascii_uppercase();
            Resolved::Reject(
                Frame::error(format!(
                    "ERR {shown} is not supported by the local store yet (group '{}'): command not executed",
                    spec.group
                )),
                Some(spec.name),
            )
        }
    }
}

/// The outcome of one handler call.
pub(crate) struct Ran {
    pub reply: Frame,
    pub more: Vec<Frame>,
    pub effects: Vec<Effect>,
    pub block: Option<Block>,
    /// The effects replay as one transaction (a script's).
    pub atomic: bool,
}

/// Runs one resolved command under the lock.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    inner: &mut Inner,
    shared: &Shared,
    sess: &mut Session,
    args: &[Bytes],
    (row, name): (usize, &'static str),
    handler: Handler,
    // The time in Unix ms, and when the command started if already read.
    (now, started): (u64, Option<tokio::time::Instant>),
    no_block: bool,
) -> Ran {
    let db = sess.db;
    let mut ctx = Ctx {
        inner,
        shared,
        sess,
        args,
        name,
        now,
        db,
        dirty: 0,
        effects: None,
        more: Vec::new(),
        block: None,
        wake: false,
        no_block,
        keep_effects: false,
        atomic: false,
        error_counted: false,
        rejected: false,
    };
    let started = started.unwrap_or_else(tokio::time::Instant::now);
    let result = handler(&mut ctx);
    let usec = started.elapsed().as_micros() as u64;
    let (reply, ok) = match result {
        Ok(f) => (f, true),
        Err(f) => (f, false),
    };
    let retried = std::mem::replace(&mut ctx.sess.block_counted, ctx.block.is_some());
    let waits_on = retried && stays_blocked(&mut ctx, &reply);
    let stats = &mut ctx.inner.stats;
    match &reply {
        // Not an answer: the client goes on waiting (see `stays_blocked`);
        // it stays in the wait queues of its keys from its first try.
        _ if waits_on => {
            ctx.sess.block_counted = true;
            ctx.block.get_or_insert(Block {
                timeout_ms: 0,
                keys: Vec::new(),
                retry_args: None,
            });
        }
        Frame::Error(e) | Frame::BulkError(e) => {
            if !ctx.error_counted {
                stats.error(e);
            }
            if ctx.rejected {
                stats.rejected(name);
            } else if retried {
                stats.failed(name);
            } else {
                stats.called_row(row, usec, true);
            }
        }
        _ if retried => {}
        _ => stats.called_row(row, usec, false),
    }
    let effects = match (ok, ctx.effects.take()) {
        (true, Some(e)) => e,
        (false, Some(e)) if ctx.keep_effects => e,
        (true, None) if ctx.dirty > 0 => vec![Effect {
            db,
            args: args.iter().map(crate::ctx::owned).collect(),
        }],
        _ => Vec::new(),
    };
    if ctx.dirty > 0 {
        ctx.inner.stats.dirty += ctx.dirty;
    }
    if ctx.wake {
        shared.wake.send_modify(|v| *v = v.wrapping_add(1));
    }
    let used = ctx.inner.used_memory;
    if used > ctx.inner.peak_memory {
        ctx.inner.peak_memory = used;
    }
    Ran {
        reply,
        more: std::mem::take(&mut ctx.more),
        effects,
        block: ctx.block,
        atomic: ctx.atomic,
    }
}

impl Store {
    /// A new, empty store.
    pub fn new(cfg: StoreConfig) -> Store {
        let mut config = Config::new();
        for (k, v) in &cfg.params {
            if let Err(e) = config.set(k, v) {
                tracing::warn!(param = %k, error = %e, "ignoring invalid store parameter");
            }
        }
        let databases = cfg.databases.max(1);
        let inner = Inner {
            dbs: (0..databases).map(|_| Db::default()).collect(),
            clients: Default::default(),
            watchers: HashMap::new(),
            channels: HashMap::new(),
            patterns: HashMap::new(),
            shard_channels: HashMap::new(),
            config,
            stats: Stats::default(),
            used_memory: 0,
            peak_memory: 0,
            blocked: 0,
            waiting: HashMap::new(),
            scripting: Default::default(),
        };
        let run_id: String = {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..40)
                .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
                .collect()
        };
        let (wake, _) = watch::channel(0);
        Store {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                started_ms: cfg.clock.now_ms(),
                clock: cfg.clock,
                wake,
                run_id,
                databases,
                script_gate: Arc::new(crate::scripting::gate::Gate::new()),
                next_id: AtomicU64::new(1),
                deferred: Mutex::default(),
                deferred_pending: AtomicBool::new(false),
                pause: watch::channel(None).0,
                paused: AtomicBool::new(false),
            }),
        }
    }

    /// Current time on the store's clock (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// A new client session, registered for CLIENT LIST and pub/sub.
    pub fn session(&self) -> Session {
        let (tx, rx) = mpsc::channel(PUSH_CAPACITY);
        let killed = Arc::new(AtomicBool::new(false));
        let unblock = Arc::new(Notify::new());
        let now = self.now_ms();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let info = ClientInfo {
            name: None,
            addr: String::new(),
            db: 0,
            created_ms: now,
            last_ms: now,
            last_cmd: "NULL",
            resp: 2,
            push: tx,
            killed: killed.clone(),
            unblock: unblock.clone(),
            dirty_cas: false,
            in_multi: false,
            blocked: false,
            unblock_error: false,
            subs: 0,
            psubs: 0,
            watching: 0,
        };
        // Registered now, or at the next lock when a script holds it.
        match self.shared.inner.try_lock() {
            Ok(mut inner) => {
                self.shared.settle(&mut inner);
                inner.stats.connections_received += 1;
                inner.clients.insert(id, info);
            }
            Err(_) => self.shared.defer(|d| d.arrivals.push((id, info))),
        }
        Session {
            shared: Some(self.shared.clone()),
            id,
            db: 0,
            resp: 2,
            multi: None,
            multi_error: false,
            watched: Vec::new(),
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            shard_channels: IndexSet::new(),
            pushes: rx,
            killed,
            unblock,
            key_hook: None,
            command_hook: None,
            script: false,
            block_counted: false,
            reply_off: false,
            skip_next: false,
            silenced: false,
            wire_replies: false,
        }
    }

    /// A session that is not registered as a client: for [`Store::apply`].
    pub(crate) fn internal_session(db: usize) -> Session {
        let (_tx, rx) = mpsc::channel(1);
        Session {
            shared: None,
            id: 0,
            db,
            resp: 2,
            multi: None,
            multi_error: false,
            watched: Vec::new(),
            channels: IndexSet::new(),
            patterns: IndexSet::new(),
            shard_channels: IndexSet::new(),
            pushes: rx,
            killed: Arc::new(AtomicBool::new(false)),
            unblock: Arc::new(Notify::new()),
            key_hook: None,
            command_hook: None,
            script: false,
            block_counted: false,
            reply_off: false,
            skip_next: false,
            silenced: false,
            wire_replies: false,
        }
    }

    /// Executes one client command for `session`. Blocking commands wait
    /// here (tokio time) until served, timed out or unblocked; nothing else
    /// awaits, and the lock is never held across an await.
    pub async fn execute(&self, session: &mut Session, args: Vec<Bytes>) -> Executed {
        let row = resp::command::lookup_id(&args);
        self.execute_row(session, args, row).await
    }

    /// [`execute`](Self::execute) with the command's row
    /// (`resp::command::lookup_id` of `args`) looked up by the caller.
    pub async fn execute_row(
        &self,
        session: &mut Session,
        args: Vec<Bytes>,
        row: Option<(usize, &'static resp::CommandSpec)>,
    ) -> Executed {
        self.wait_unpaused(session, &args).await;
        let skipped = std::mem::take(&mut session.skip_next);
        let reply_cmd = (args.len() == 3
            && args[0].eq_ignore_ascii_case(b"client")
            && args[1].eq_ignore_ascii_case(b"reply"))
        .then(|| args[2].to_ascii_lowercase());
        let exec = self.execute_blocking(session, args, row).await;
        session.silenced = match reply_cmd.as_deref() {
            Some(b"on") => false,
            Some(b"off" | b"skip") => true,
            _ => skipped || session.reply_off,
        };
        exec
    }

    /// Waits while `CLIENT PAUSE` holds `args` back: every command under
    /// `ALL` (but CLIENT UNPAUSE, the way out), writes and commands that
    /// may write (scripts, EXEC of a write) under `WRITE`. Returns at once
    /// when nothing is paused.
    pub async fn wait_unpaused(&self, session: &Session, args: &[Bytes]) {
        if !self.shared.paused.load(Ordering::Acquire) {
            return;
        }
        let mut rx = self.shared.pause.subscribe();
        struct Waiting<'a>(&'a Shared, u64, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                if self.2 {
                    let id = self.1;
                    self.0.defer(|d| d.paused.push((id, false)));
                }
            }
        }
        let mut waiting = Waiting(&self.shared, session.id, false);
        loop {
            let Some(p) = *rx.borrow_and_update() else {
                return;
            };
            // A script that declares no-writes is not held back; the lock
            // is only tried (a running script holds it): unknown, it waits.
            let no_writes = || {
                self.shared
                    .inner
                    .try_lock()
                    .is_ok_and(|i| crate::scripting::declares_no_writes(&i, args))
            };
            if tokio::time::Instant::now() >= p.until
                || !pauses(&p, session, args)
                || (!p.all && no_writes())
            {
                return;
            }
            if !waiting.2 {
                waiting.2 = true;
                let id = session.id;
                self.shared.defer(|d| d.paused.push((id, true)));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(p.until) => return,
            }
        }
    }

    async fn execute_blocking(
        &self,
        session: &mut Session,
        args: Vec<Bytes>,
        // Looked up once: detaching, resolving and every retry use it.
        mut row: Option<(usize, &'static resp::CommandSpec)>,
    ) -> Executed {
        let mut args = detach(args, row.map(|(_, s)| s));
        session.block_counted = false;
        let mut attempt = self.execute_once(session, &args, row);
        // Nearly every command is answered by its first try: the waiting
        // state below is not even set up for it.
        if attempt.1.is_none() || attempt.2.is_none() {
            return attempt.0;
        }
        let mut deadline: Option<tokio::time::Instant> = None;
        // Our place in the wait queues of the keys we block on, kept across
        // wake-ups and left however this call ends.
        // While blocked: the reply a timeout gets.
        let mut on_timeout = Frame::Null;
        let mut queued = Queued {
            shared: &self.shared,
            id: session.id,
            db: session.db,
            keys: Vec::new(),
        };
        loop {
            let (mut exec, block, rx) = attempt;
            let (Some(block), Some(mut rx)) = (block, rx) else {
                return exec;
            };
            if queued.keys.is_empty() {
                queued.keys = block.keys.clone();
            } else if matches!(exec.reply, Frame::Error(_)) {
                // A retry that found a key of another type goes on waiting
                // (see `run`): a timeout still gets the first try's reply.
                exec = Executed::reply(on_timeout.clone());
            }
            on_timeout = exec.reply.clone();
            if let Some(retry) = block.retry_args {
                row = resp::command::lookup_id(&retry);
                args = retry;
            }
            if deadline.is_none() && block.timeout_ms > 0 {
                deadline =
                    Some(tokio::time::Instant::now() + Duration::from_millis(block.timeout_ms));
            }
            let unblock = session.unblock.clone();
            // Leaves the blocked state however the wait ends, including when
            // the caller drops this future (client gone, proxy deadline).
            let mut guard = Unblocked {
                shared: &self.shared,
                id: session.id,
                unblock_error: false,
            };
            let outcome = tokio::select! {
                _ = rx.changed() => None,
                _ = unblock.notified() => Some(true),
                _ = sleep_until(deadline) => Some(false),
            };
            guard.release();
            let unblock_error = guard.unblock_error;
            match outcome {
                None => {}
                Some(true) if unblock_error => {
                    return Executed::reply(err("UNBLOCKED client unblocked via CLIENT UNBLOCK"));
                }
                Some(_) => return exec,
            }
            attempt = self.execute_once(session, &args, row);
        }
    }

    /// One attempt: the reply, and if the command wants to block, how long
    /// and a receiver subscribed under the lock (so no wake-up is missed).
    fn execute_once(
        &self,
        sess: &mut Session,
        args: &[Bytes],
        row: Option<(usize, &'static resp::CommandSpec)>,
    ) -> (Executed, Option<Block>, Option<watch::Receiver<u64>>) {
        if args.is_empty() {
            return (Executed::reply(err("ERR empty command")), None, None);
        }
        let shared = &*self.shared;
        let mut guard = match self.lock_unless_busy(args, sess.resp == 3) {
            Ok(g) => g,
            Err(reply) => {
                self.count_unlocked(args, &reply.to_bytes());
                if sess.multi.is_some() && kill_kind(args).is_none() && !is_function_stats(args) {
                    sess.multi_error = true;
                }
                return (Executed::reply(reply), None, None);
            }
        };
        // Read after the lock: a command that waited behind a long script
        // must see the time it actually runs at.
        let (now, started) = self.shared.clock.start();
        let inner = &mut *guard;
        inner.stats.commands_processed += 1;
        let resolved = resolve_row(args, row);
        if let Some(c) = inner.clients.get_mut(&sess.id) {
            c.last_ms = now;
            if let Resolved::Run(name, _, _, _) = &resolved {
                c.last_cmd = name;
            }
        }
        let (name, handler, flags, id) = match resolved {
            Resolved::Run(n, h, f, r) => (n, h, f, r),
            Resolved::Reject(e, cmd) => {
                inner.stats.rejected_calls += 1;
                inner.stats.refused(&e, cmd);
                if sess.multi.is_some() {
                    sess.multi_error = true;
                }
                return (Executed::reply(e), None, None);
            }
        };
        if sess.resp == 2 && sess.subscriptions() > 0 && !SUBSCRIBED_OK.contains(&name) {
            let e = Frame::error(format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            ));
            inner.stats.refused(&e, Some(name));
            return (Executed::reply(e), None, None);
        }
        if flags & F_WRITE != 0 && inner.config.no_replicas {
            let e = err(NOREPLICAS);
            inner.stats.refused(&e, Some(name));
            if sess.multi.is_some() {
                sess.multi_error = true;
            }
            return (Executed::reply(e), None, None);
        }
        let mut evicted = Vec::new();
        if sess.multi.is_some()
            && !matches!(
                name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            if flags & F_NO_MULTI != 0 {
                sess.multi_error = true;
                let e = err("ERR Command not allowed inside a transaction");
                inner.stats.refused(&e, Some(name));
                return (Executed::reply(e), None, None);
            }
            if flags & F_DENYOOM != 0 && !crate::eviction::make_room(inner, now, &mut evicted) {
                sess.multi_error = true;
                inner.stats.refused(&err(crate::eviction::OOM), Some(name));
                let mut e = Executed::reply(err(crate::eviction::OOM));
                e.effects = evicted;
                return (e, None, None);
            }
            if let Some(q) = sess.multi.as_mut() {
                q.push(args.to_vec());
            }
            let mut e = Executed::reply(Frame::simple("QUEUED"));
            e.effects = evicted;
            return (e, None, None);
        }
        if flags & F_DENYOOM != 0 && !crate::eviction::make_room(inner, now, &mut evicted) {
            inner.stats.rejected_calls += 1;
            inner.stats.refused(&err(crate::eviction::OOM), Some(name));
            let mut e = Executed::reply(err(crate::eviction::OOM));
            e.effects = evicted;
            return (e, None, None);
        }
        if name == "exec" {
            let mut e = crate::tx::exec(inner, shared, sess, now);
            let failed = matches!(&e.reply, Frame::Error(_));
            if let Frame::Error(text) = &e.reply {
                inner.stats.error(text);
            }
            inner
                .stats
                .called_row(id, started.elapsed().as_micros() as u64, failed);
            if !evicted.is_empty() {
                evicted.append(&mut e.effects);
                e.effects = evicted;
            }
            return (e, None, None);
        }
        let ran = run(
            inner,
            shared,
            sess,
            args,
            (id, name),
            handler,
            (now, Some(started)),
            false,
        );
        if let Some(c) = inner.clients.get_mut(&sess.id) {
            c.db = sess.db;
        }
        evicted.extend(ran.effects);
        let exec = Executed {
            reply: ran.reply,
            more: ran.more,
            effects: evicted,
            atomic: ran.atomic,
        };
        match ran.block {
            Some(b) => {
                inner.blocked += 1;
                for k in &b.keys {
                    let q = inner.waiting.entry((sess.db, k.clone())).or_default();
                    if !q.contains(&sess.id) {
                        q.push_back(sess.id);
                    }
                }
                if let Some(c) = inner.clients.get_mut(&sess.id) {
                    c.blocked = true;
                }
                let rx = shared.wake.subscribe();
                (exec, Some(b), Some(rx))
            }
            None => (exec, None, None),
        }
    }

    /// True while a script (`EVAL`, `FCALL`, a library's load) holds the
    /// store.
    pub fn script_running(&self) -> bool {
        self.shared.script_gate.running.load(Ordering::SeqCst)
    }

    /// Counts, in INFO's stats, a reply (RESP as sent) that answered `args`
    /// without the store: the gate's refusals, BUSY, SCRIPT KILL. Applied
    /// at the next lock, so it never waits for a running script.
    pub fn count_unlocked(&self, args: &[Bytes], reply: &[u8]) {
        let cmd = resp::lookup(args)
            .filter(|s| !(args.len() >= 2 && !s.name.contains('|') && is_container(s.name)))
            .map(|s| s.name);
        let error = reply.strip_prefix(b"-").map(|e| {
            let end = e.iter().position(|&b| b == b'\r').unwrap_or(e.len());
            Bytes::copy_from_slice(&e[..end])
        });
        self.shared.defer(|d| d.replies.push((error, cmd)));
    }

    /// While a script runs past busy-reply-threshold, the reply `args`
    /// gets without waiting for the lock the script holds: `BUSY`, the
    /// answer to `SCRIPT KILL` / `FUNCTION KILL`, or `FUNCTION STATS`.
    /// `None` when no script is past it.
    pub fn busy_reply(&self, args: &[Bytes], resp3: bool) -> Option<Frame> {
        let gate = &self.shared.script_gate;
        if is_function_stats(args) {
            if let Some(reply) = gate.stats_reply(resp3) {
                return Some(reply);
            }
        }
        gate.refuse(kill_kind(args))
    }

    /// The lock, unless a script holds it past busy-reply-threshold: then
    /// Redis's BUSY error, or the answer to SCRIPT KILL / FUNCTION KILL,
    /// which must reach the script without waiting for the lock it holds.
    /// While a script runs but is not yet past the threshold, the lock is
    /// polled rather than waited on, so a client that arrived early still
    /// gets BUSY once the script crosses it (as Redis serves clients from
    /// inside a slow script).
    fn lock_unless_busy(
        &self,
        args: &[Bytes],
        resp3: bool,
    ) -> Result<MutexGuard<'_, Inner>, Frame> {
        let gate = &self.shared.script_gate;
        let kill = kill_kind(args);
        let stats = is_function_stats(args);
        // Never a blocking lock(): a script may start between a check and
        // the wait, and a client parked on the mutex behind a script that
        // never ends could not be told BUSY, nor deliver the SCRIPT KILL
        // that ends it.
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            if stats {
                if let Some(reply) = gate.stats_reply(resp3) {
                    return Err(reply);
                }
            }
            if let Some(reply) = gate.refuse(kill) {
                return Err(reply);
            }
            match self.shared.inner.try_lock() {
                Ok(mut g) => {
                    self.shared.settle(&mut g);
                    return Ok(g);
                }
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    let mut g = p.into_inner();
                    self.shared.settle(&mut g);
                    return Ok(g);
                }
                Err(std::sync::TryLockError::WouldBlock) => {
                    if gate.running.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    } else if attempt <= 64 {
                        // Ordinary commands hold the lock for microseconds.
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
    }

    /// Applies a journaled effect synchronously while rebuilding state (no
    /// blocking, no memory limit, no client). Returns the reply the command
    /// would have had, so the caller can log failures.
    pub fn apply(&self, db: usize, args: &[Bytes]) -> Frame {
        if args.is_empty() {
            return err("ERR empty command");
        }
        let now = self.now_ms();
        let shared = &*self.shared;
        let mut sess = Self::internal_session(db.min(shared.databases - 1));
        let mut guard = shared.lock();
        let inner = &mut *guard;
        match resolve(args) {
            Resolved::Reject(e, _) => e,
            Resolved::Run(name, handler, _, row) => {
                run(
                    inner,
                    shared,
                    &mut sess,
                    args,
                    (row, name),
                    handler,
                    (now, None),
                    true,
                )
                .reply
            }
        }
    }

    /// A key's live value and absolute expiry (Unix ms), or `None` when it
    /// does not exist or has expired. The value is shared, not copied: a
    /// later write to either store copies on write.
    pub fn export(&self, db: usize, key: &[u8]) -> Option<(Arc<Value>, Option<u64>)> {
        let now = self.now_ms();
        let inner = self.shared.lock();
        let e = inner.dbs.get(db)?.map.get(key)?;
        if e.expire_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some((e.value.clone(), e.expire_at))
    }

    /// Every key of `db` with its value (shared, not copied) and absolute
    /// expiry, expired ones included.
    pub fn entries(&self, db: usize) -> Vec<(Bytes, Arc<Value>, Option<u64>)> {
        let inner = self.shared.lock();
        inner.dbs.get(db).map_or_else(Vec::new, |d| {
            d.map
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.expire_at))
                .collect()
        })
    }

    /// Puts a whole value under `key` in `db`, replacing whatever was there
    /// (memory accounted, WATCHes touched), as loading a snapshot or a
    /// replica's copy does. An empty collection deletes the key instead,
    /// since Redis never holds one.
    pub fn import(&self, db: usize, key: Bytes, value: Arc<Value>, expire_at: Option<u64>) {
        let now = self.now_ms();
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if db >= inner.dbs.len() {
            return;
        }
        inner.delete_key(db, &key);
        inner.touch_watched(db, &key);
        if value.is_empty_collection() {
            return;
        }
        let mut e = Entry::new(Value::Str(Bytes::new()), now);
        e.value = value;
        e.size = crate::ctx::entry_size(&key, &e);
        inner.used_memory += e.size;
        inner.peak_memory = inner.peak_memory.max(inner.used_memory);
        let d = &mut inner.dbs[db];
        d.map.insert(key.clone(), e);
        d.set_expire(&key, expire_at);
    }

    /// Removes `key` from `db` as loading does, not as a client's DEL: no
    /// command counted, no event; WATCHes on it are touched. True if it
    /// was there.
    pub fn forget(&self, db: usize, key: &[u8]) -> bool {
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if db >= inner.dbs.len() || !inner.delete_key(db, key) {
            return false;
        }
        inner.touch_watched(db, key);
        true
    }

    /// Number of keys in database `db` (0 for a database that does not exist).
    pub fn key_count(&self, db: usize) -> usize {
        let inner = self.shared.lock();
        if db < inner.dbs.len() {
            inner.keys_in(db)
        } else {
            0
        }
    }

    /// Approximate bytes used by keys and values.
    pub fn used_memory(&self) -> usize {
        self.shared.lock().used_memory
    }

    /// Keys in every database and approximate bytes, without waiting:
    /// `None` while a script holds the store (a caller on the thread that
    /// tells clients BUSY must not park behind it).
    pub fn try_usage(&self) -> Option<(usize, usize)> {
        let inner = self.shared.inner.try_lock().ok()?;
        let keys = (0..inner.dbs.len()).map(|db| inner.keys_in(db)).sum();
        Some((keys, inner.used_memory))
    }

    /// Number of databases.
    pub fn databases(&self) -> usize {
        self.shared.databases
    }

    /// Sets a `CONFIG` parameter from outside the command path (start-up
    /// configuration). Errors carry Redis's text.
    pub fn set_param(&self, name: &str, value: &str) -> Result<(), String> {
        self.shared.lock().config.set(name, value)
    }

    /// One round of active expiry, as Redis's `activeExpireCycle` does:
    /// in each database, sample keys with a TTL and delete the expired
    /// ones, repeating while more than a quarter of a sample was expired,
    /// within a small time budget. Call it about every 100 ms. Returns the
    /// number of keys deleted.
    pub fn active_expire_cycle(&self) -> usize {
        crate::expire::active_cycle(&self.shared, self.now_ms())
    }

    /// Spawns a task that runs [`Store::active_expire_cycle`] every
    /// `every` (Redis: 100 ms) on the current tokio runtime. It holds only a
    /// weak reference and ends once every handle to the store is dropped.
    pub fn spawn_active_expire(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                // As in Redis, no active expiry while a script runs: the
                // script holds the lock, and this task must not park the
                // thread that tells other clients BUSY.
                if shared.script_gate.running.load(Ordering::SeqCst) {
                    continue;
                }
                let now = shared.clock.now_ms();
                crate::expire::active_cycle(&shared, now);
            }
        })
    }

    /// A point-in-time copy of the data, cheap to take: only the key maps
    /// are cloned under the lock; values are shared (`Arc`) and copied on
    /// the next write. Iterate it outside the lock.
    pub fn snapshot(&self) -> crate::Snapshot {
        let inner = self.shared.lock();
        let libraries = inner
            .scripting
            .libraries
            .values()
            .map(|l| l.code.clone())
            .collect();
        crate::snapshot::Snapshot::new(inner.dbs.clone(), libraries, self.now_ms())
    }
}

/// A waiter outside the store for lists, sorted sets or streams to gain
/// elements (a blocking command the proxy serves during an outage, one
/// non-blocking try at a time). While it lives the store counts one more
/// blocked client, so every push bumps the wake-up channel.
pub struct Pushes {
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
}

impl Pushes {
    /// Resolves at the next push after this waiter was made or last woke.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The store is gone; nothing will ever be pushed.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Pushes {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.blocked = inner.blocked.saturating_sub(1);
    }
}

impl Store {
    /// Number of waiters for pushes: blocked clients and [`Pushes`].
    pub fn waiting_for_pushes(&self) -> usize {
        self.shared.lock().blocked
    }

    /// A [`Pushes`] waiter. Make it before the try that found nothing, so
    /// a push in between is not missed.
    pub fn watch_pushes(&self) -> Pushes {
        let mut inner = self.shared.lock();
        inner.blocked += 1;
        let rx = self.shared.wake.subscribe();
        drop(inner);
        Pushes {
            shared: self.shared.clone(),
            rx,
        }
    }
}

/// A blocked client's entries in the per-key wait queues.
struct Queued<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    db: usize,
    keys: Vec<Bytes>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut inner = self.shared.lock();
        let mut others_waiting = false;
        for k in &self.keys {
            let slot = (self.db, k.clone());
            if let Some(q) = inner.waiting.get_mut(&slot) {
                q.retain(|id| *id != self.id);
                if q.is_empty() {
                    inner.waiting.remove(&slot);
                } else {
                    others_waiting = true;
                }
            }
        }
        drop(inner);
        // The next client in line may now take what we left.
        if others_waiting {
            self.shared.wake.send_modify(|v| *v = v.wrapping_add(1));
        }
    }
}

/// Clears a client's blocked state once, on release or drop.
struct Unblocked<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    unblock_error: bool,
}

impl Unblocked<'_> {
    fn release(&mut self) {
        if self.id == 0 {
            return;
        }
        let mut inner = self.shared.lock();
        inner.blocked = inner.blocked.saturating_sub(1);
        if let Some(c) = inner.clients.get_mut(&self.id) {
            c.blocked = false;
            self.unblock_error = std::mem::take(&mut c.unblock_error);
        }
        // Released: a later drop must not count it twice.
        self.id = 0;
    }
}

impl Drop for Unblocked<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
/// Arguments of a write, copied out of the client's read buffer into one
/// allocation of their own: a stored key or value sliced from the buffer
/// would keep the whole buffer (16 KiB or more, shared by every request
/// of one read) alive for as long as the key lives, and scatter the keys a
/// lookup compares across memory. Big requests are left as they are: the
/// buffer is then mostly the value itself (Redis does the same above 32
/// KiB). Reads are never stored, so they are not copied, nor are requests
/// whose arguments are all short: the decoder gave each its own allocation
/// ([`resp::COPY_ARG_MAX`]).
fn detach(mut args: Vec<Bytes>, spec: Option<&resp::CommandSpec>) -> Vec<Bytes> {
    const BIG: usize = 32 * 1024;
    if !spec.is_some_and(|s| s.is_write()) || args.iter().all(|a| a.len() <= resp::COPY_ARG_MAX) {
        return args;
    }
    let total: usize = args.iter().map(Bytes::len).sum();
    if total > BIG {
        return args;
    }
    let mut buf = bytes::BytesMut::with_capacity(total);
    for a in &args {
        buf.extend_from_slice(a);
    }
    let buf = buf.freeze();
    let mut at = 0;
    // In place: the vector is the request's own, no second one is needed.
    for a in &mut args {
        let len = a.len();
        *a = buf.slice(at..at + len);
        at += len;
    }
    args
}
