//! Riding out an outage for `durable` keyspaces: while Redis is Down (or
//! rejecting writes), their commands run on the local store, writes are
//! journaled before the reply, and once Redis is back the journal is
//! replayed into it exactly once ([`crate::replay`]).
//!
//! What a durable key accepts while Redis is not Up follows
//! [`crate::policy::outage_rule`]: reads only of values known locally,
//! blind writes always, value-dependent writes only on known values, never
//! anything whose replay would not reproduce its outcome. A key is known
//! when the outage overwrote it whole (`SET`, `DEL`, …); a partial write to
//! a key whose value is unknown (an `HSET` on a hash never seen) leaves it
//! unknown, so no read ever answers from a made-up value.
//!
//! Order: the proxy runs on many threads, so executing on the store and
//! appending to the journal happen under one lock ([`Outage::order`]): the
//! journal's order is the order the store saw.
//!
//! Values read while Redis was Up come from the near-cache
//! ([`crate::near_cache`]): the session asks [`Outage::near_fill`] whether
//! a `GET`/`HGETALL` reply should be kept, and during an outage a key not
//! written locally is *seeded* into the local store from the near-cache
//! (under the order lock) before a command runs on it, so any read, and a
//! value-dependent write such as `INCR`, sees the value Redis last had.
//! Seeded keys are not trusted later: unless the outage wrote them they are
//! seeded afresh each time, so a value from an earlier outage never
//! answers.
//!
//! `cache` keys while Down: reads from the near-cache (a miss is nil),
//! `SET`s kept in the near-cache only (dropped when tracking restarts),
//! `DEL`/`EXPIRE` family applied there and journaled so Redis hears of the
//! invalidation.
//!
//! While the journal holds records, the health handle is held in
//! Recovering ([`upstream::HealthHandle::hold_recovering`]): Redis answers
//! but is not Up until the replay has drained.
//!
//! Who may have what is answered here is [`crate::access`]'s call: every
//! local answer passes [`crate::access::Caller::check`] first.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use journal::{Entry, Journal, JournalError};
use store::Store;
use upstream::{HealthHandle, State, UpstreamUrl};

use crate::gate::Refusal;
use crate::incident::IncidentCounters;
use crate::near_cache::prefix::Tracked;
use crate::near_cache::tracker::{spawn_tracker, Tracker, TrackerConfig};
use crate::near_cache::{Cached, Lookup, NearCache, Ticket};
use crate::policy::{outage_rule, Keyspaces, OutageRule, Policy};
use crate::replay::{ReplayConfig, ReplayOutcome, Replayer};
use crate::replica::Knowledge;
use crate::reply;

mod blocking;
mod keys;
mod script;

pub use blocking::Try;
use keys::KeyMarks;

/// A reply that may only be sent once its journal entry is durable: the
/// journal's answer; for a refused write, once every refused write is
/// undone ([`Settle::answered`]), so the client told of the refusal never
/// reads the write it was refused afterwards.
pub struct Durable {
    appended: journal::Appended,
    settle: Arc<Settle>,
    refused: Option<(JournalError, Undone)>,
}

/// Resolves once no refused write is being undone ([`Settle::undone`]).
type Undone = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Future for Durable {
    type Output = Result<journal::Position, JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.refused.is_none() {
            match Pin::new(&mut this.appended).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(pos)) => return Poll::Ready(Ok(pos)),
                Poll::Ready(Err(e)) => {
                    let settle = this.settle.clone();
                    this.refused = Some((e, Box::pin(async move { settle.undone().await })));
                }
            }
        }
        let Some((_, undone)) = this.refused.as_mut() else {
            return Poll::Pending;
        };
        if undone.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match this.refused.take() {
            Some((e, _)) => Poll::Ready(Err(e)),
            None => Poll::Pending,
        }
    }
}

/// Where a command goes.
pub enum Route {
    /// To Redis, as usual.
    Upstream,
    /// Answered here: the reply, and the journal append it waits for.
    Local(Bytes, Option<Durable>),
    /// Refused here, as Redis would (`NOAUTH`, `NOPERM`) or because the
    /// outage cannot serve it (`UNAVAILABLE`).
    Refused(Refusal),
}

/// Local serving of durable keyspaces and the journal behind it.
pub struct Outage {
    keyspaces: Keyspaces,
    store: Store,
    journal: Arc<Journal>,
    order: Arc<tokio::sync::Mutex<()>>,
    /// Keys whose whole value is local (`known`), and keys with journal
    /// records not replayed yet (`dirty`: served locally even when Redis is
    /// back, until the replay has drained).
    keys: Arc<KeyMarks>,
    /// True while anything is dirty: the Up fast path checks only this.
    active: AtomicBool,
    /// Times the local state was forgotten ([`Outage::forgotten`]).
    forgets: AtomicU64,
    /// `cache` keys deleted during this outage: with the replica keeping
    /// the cache keyspaces, its value must not answer for them again.
    cache_gone: Mutex<HashSet<(u32, Bytes)>>,
    /// Journal appends sent but not answered yet. The journal counts a
    /// record in `pending_entries` only once it is written, so without this
    /// the recovery could find the journal drained, forget the dirty keys,
    /// and let later commands on a key reach Redis before its last record.
    appending: Arc<AtomicU64>,
    /// Settles each append when the journal answers it.
    settle: Arc<Settle>,
    /// Metrics added to per command (taken at the first).
    per_command: OnceLock<crate::metrics::OutageCounters>,
    /// The recovery task's replay progress, for `/status`.
    progress: Mutex<Option<crate::replay::ProgressHandle>>,
    counters: Arc<IncidentCounters>,
    /// Values of `cache`/`durable` keys read while Redis was Up.
    near: OnceLock<Arc<NearCache>>,
    /// Keeps the near-cache's invalidation feed running.
    tracker: Mutex<Option<Tracker>>,
    /// The replica of the durable keyspaces, when Redis serves one.
    replica: OnceLock<Arc<crate::replica::Replica>>,
    /// Whether this instance takes durable writes during an outage (none
    /// attached: it does, as if alone).
    writer: OnceLock<Arc<crate::writer::Writer>>,
    /// Held in Recovering while records are pending; last-known facts.
    health: OnceLock<HealthHandle>,
    /// `POST /admin/replay`: try now rather than at the next tick.
    replay_now: tokio::sync::Notify,
    /// The locked data_dir (set by [`Outage::spawn_recovery`]).
    data_dir: OnceLock<std::path::PathBuf>,
    /// Scripts clients sent, for `EVALSHA` here and for a Redis that
    /// comes back without them.
    scripts: crate::scripts::ScriptCache,
    /// In front of a Redis Cluster: whose slots are unreachable.
    cluster: OnceLock<Arc<upstream::cluster::Cluster>>,
    /// In front of a Redis Cluster: a replica per primary.
    shards: OnceLock<Arc<crate::shard_replicas::ShardReplicas>>,
}

/// A `GET`/`HGETALL` whose reply should go into the near-cache: the
/// session sends `PEXPIRETIME key` right after it on the same connection
/// and hands both replies to [`Outage::fill`].
#[derive(Debug, Clone)]
pub struct Fill {
    ticket: Ticket,
    db: u32,
    key: Bytes,
    hash: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What settles an append once the journal answers it, wherever that
/// happens (the journal's relay task, its writer thread, an appender).
struct Settle {
    appending: Arc<AtomicU64>,
    journal: Arc<Journal>,
    order: Arc<tokio::sync::Mutex<()>>,
    store: Store,
    keys: Arc<KeyMarks>,
    /// Where an undo runs: the runtime of the appends.
    runtime: OnceLock<tokio::runtime::Handle>,
    /// Undos begun and not finished.
    undoing: AtomicU64,
    /// Told when an undo finishes.
    undo_done: tokio::sync::Notify,
}

impl Settle {
    /// An append's answer. Durable: it no longer counts in `appending`.
    ///
    /// Refused: the write already ran in the local store, so it is undone
    /// before the count falls: its `keys` are forgotten there (reads of
    /// them are refused as unknown until the replay has drained, never
    /// served from a write that will not reach Redis). The journal fences
    /// itself at the refusal, so writes that ran after this one (and may
    /// have read its effect) are refused and undone too; the fence is
    /// lifted under the order lock once the keys are forgotten.
    fn answered(
        self: Arc<Self>,
        r: &Result<journal::Position, JournalError>,
        db: u32,
        keys: Vec<Bytes>,
    ) {
        let Err(e) = r else {
            self.appending.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        crate::metrics::count_write_refused(match e {
            JournalError::Full { .. } => "journal-full",
            _ => "journal-failed",
        });
        let Some(runtime) = self.runtime.get().cloned() else {
            self.appending.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        // Counted before the refusal reaches its future (which waits for
        // it): this runs before the journal answers the future.
        self.undoing.fetch_add(1, Ordering::AcqRel);
        runtime.spawn(async move {
            let _order = self.order.lock().await;
            self.keys.unmark_known(db, &keys);
            for key in keys {
                let _ = self
                    .store
                    .apply(db as usize, &[Bytes::from_static(b"DEL"), key]);
            }
            // Every append queued before this point ran before the
            // undo: it must meet the fence, not slip in after it.
            let _ = self.journal.barrier().await;
            self.journal.unfence();
            self.appending.fetch_sub(1, Ordering::AcqRel);
            self.undoing.fetch_sub(1, Ordering::AcqRel);
            self.undo_done.notify_waiters();
        });
    }

    /// Resolves once no undo is under way.
    async fn undone(&self) {
        loop {
            let done = self.undo_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.undoing.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }
}

/// Drains in a row that found records appended behind them before the
/// last one is made holding the order lock.
const HAND_BACK_TRIES: u32 = 3;

/// Commands after which a key's whole value is known.
pub(crate) const OVERWRITES: &[&str] = &["set", "setex", "psetex", "mset", "del", "unlink"];

/// Whether `args` (a blind write named `name`) replaces the whole value of
/// every key it names whatever was there, type and expiry included:
/// `SET` without `KEEPTTL`, `SETEX`, `PSETEX`, `MSET`.
fn replaces_whole(name: &str, args: &[Bytes]) -> bool {
    match name {
        "setex" | "psetex" | "mset" => true,
        "set" => !args
            .iter()
            .skip(3)
            .any(|a| a.eq_ignore_ascii_case(b"keepttl")),
        _ => false,
    }
}

/// A command being routed: its arguments, its keys, and its row as the
/// gate found it.
struct Cmd<'a> {
    args: &'a [Bytes],
    keys: &'a [Bytes],
    gated: crate::gate::Gated,
}

/// The journal form of an outage write: relative expiries as absolute
/// Unix-ms times, so replaying later means the same instant.
pub fn absolute(args: &[Bytes], now: u64) -> Vec<Bytes> {
    let lower = |b: &Bytes| b.to_ascii_lowercase();
    let num = |b: &Bytes| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    // `t × unit` after `now`, or `None` when it overflows: the command is
    // then left as sent, and the store refuses it as Redis does ("invalid
    // expire time").
    let at = |t: i64, unit: i64| {
        t.checked_mul(unit)
            .and_then(|ms| ms.checked_add(now as i64))
            .map(|ms| Bytes::from(ms.to_string()))
    };
    // Lowered on the stack: every journaled command passes here.
    let mut buf = [0u8; 8];
    let name: &[u8] = match args.first() {
        Some(a) if a.len() <= buf.len() => {
            let n = &mut buf[..a.len()];
            n.copy_from_slice(a);
            n.make_ascii_lowercase();
            n
        }
        _ => b"",
    };
    match name {
        b"setex" | b"psetex" if args.len() == 4 => {
            let unit = if name == b"setex" { 1000 } else { 1 };
            match num(&args[2]).and_then(|t| at(t, unit)) {
                Some(when) => vec![
                    Bytes::from_static(b"SET"),
                    args[1].clone(),
                    args[3].clone(),
                    Bytes::from_static(b"PXAT"),
                    when,
                ],
                None => args.to_vec(),
            }
        }
        b"expire" | b"pexpire" if args.len() >= 3 => {
            let unit = if name == b"expire" { 1000 } else { 1 };
            match num(&args[2]).and_then(|t| at(t, unit)) {
                Some(when) => {
                    let mut v = vec![Bytes::from_static(b"PEXPIREAT"), args[1].clone(), when];
                    v.extend_from_slice(&args[3..]);
                    v
                }
                None => args.to_vec(),
            }
        }
        b"set" | b"getex" => {
            let mut v = args.to_vec();
            let mut i = if name == b"set" { 3 } else { 2 };
            while i + 1 < v.len() {
                let opt = lower(&v[i]);
                let unit = match &opt[..] {
                    b"ex" => Some(1000),
                    b"px" => Some(1),
                    _ => None,
                };
                match unit.and_then(|u| num(&v[i + 1]).map(|t| (t, u))) {
                    Some((t, u)) => match at(t, u) {
                        Some(when) => {
                            v[i] = Bytes::from_static(b"PXAT");
                            v[i + 1] = when;
                            i += 2;
                        }
                        None => return args.to_vec(),
                    },
                    None => i += 1,
                }
            }
            v
        }
        _ => args.to_vec(),
    }
}

/// How often a replay that keeps stopping for the same kind of reason is
/// logged as a warning.
const REPLAY_STOP_REMINDER: Duration = Duration::from_secs(10);

impl Outage {
    /// Local serving for `keyspaces`, journaling into `journal`. Rebuilds
    /// the local state of every record not yet replayed, so a restart in
    /// the middle of an outage keeps serving what was written.
    pub fn new(
        keyspaces: Keyspaces,
        journal: Arc<Journal>,
        counters: Arc<IncidentCounters>,
    ) -> Result<Arc<Outage>, JournalError> {
        let store = Store::new(store::StoreConfig::default());
        let (order, keys, appending): (_, Arc<KeyMarks>, Arc<AtomicU64>) =
            (Arc::default(), Arc::default(), Arc::default());
        let settle = Arc::new(Settle {
            appending: appending.clone(),
            journal: journal.clone(),
            order: Arc::clone(&order),
            store: store.clone(),
            keys: keys.clone(),
            runtime: OnceLock::new(),
            undoing: AtomicU64::new(0),
            undo_done: tokio::sync::Notify::new(),
        });
        let o = Outage {
            keyspaces,
            store,
            journal,
            order,
            keys,
            active: AtomicBool::new(false),
            appending,
            settle,
            per_command: OnceLock::new(),
            forgets: AtomicU64::new(0),
            cache_gone: Mutex::default(),
            progress: Mutex::default(),
            counters,
            near: OnceLock::new(),
            tracker: Mutex::default(),
            replica: OnceLock::new(),
            writer: OnceLock::new(),
            health: OnceLock::new(),
            replay_now: tokio::sync::Notify::new(),
            data_dir: OnceLock::new(),
            scripts: crate::scripts::ScriptCache::new(crate::scripts::DEFAULT_MAX_BYTES),
            cluster: OnceLock::new(),
            shards: OnceLock::new(),
        };
        if o.journal.pending_entries() > 0 {
            // Only what was not replayed yet: records Redis already has are
            // not the outage's knowledge any more.
            for record in o.journal.reader(o.journal.released())? {
                let entry = record?.entry;
                for cmd in &entry.commands {
                    o.store.apply(entry.db as usize, cmd);
                    o.mark(entry.db, cmd);
                }
            }
        }
        Ok(Arc::new(o))
    }

    /// Starts the near-cache: at most `max_bytes`, served for
    /// `max_stale_ms` after invalidations stop, fed by a tracking
    /// connection to `url` that lives as long as this. Nothing happens
    /// when `max_bytes` is 0 or no keyspace is local.
    pub fn start_near_cache(
        &self,
        max_bytes: usize,
        max_stale_ms: u64,
        url: &UpstreamUrl,
        health: HealthHandle,
    ) {
        let Some(tracked) = Tracked::from_patterns(self.keyspaces.local_patterns()) else {
            return;
        };
        if max_bytes == 0 {
            return;
        }
        let near = Arc::new(NearCache::new(max_bytes, max_stale_ms, tracked));
        let handshake = url.control_handshake(3, "redoubt-tracking");
        let tracker = spawn_tracker(
            near.clone(),
            TrackerConfig::new(url.endpoint(), handshake),
            health,
        );
        if self.near.set(near).is_ok() {
            if let Ok(mut t) = self.tracker.lock() {
                *t = Some(tracker);
            }
        }
    }

    /// Seeds durable keys from `replica` from now on (the near-cache only
    /// for keys the replica cannot answer for).
    pub fn attach_replica(&self, replica: Arc<crate::replica::Replica>) {
        let _ = self.replica.set(replica);
        self.restore_only_by_the_writer();
    }

    /// Decides with `writer` whether durable writes are taken during an
    /// outage ([`crate::writer`]).
    pub fn attach_writer(&self, writer: Arc<crate::writer::Writer>) {
        let _ = self.writer.set(writer);
        self.restore_only_by_the_writer();
    }

    /// With a writer lease, only its holder restores a Redis that came
    /// back without durable keys: another instance's copy lacks what the
    /// holder's clients did since, and would put back what they deleted.
    fn restore_only_by_the_writer(&self) {
        if let (Some(r), Some(w)) = (self.replica.get(), self.writer.get()) {
            let w = w.clone();
            r.restore_only_if(Arc::new(move || w.holds()));
        }
    }

    /// True while durable keys stay local though Redis answers: it is
    /// checked for lost durable keys, or another Redoubt that took the
    /// outage's writes may still be replaying them ([`crate::writer`]).
    fn restoring(&self) -> bool {
        self.replica.get().is_some_and(|r| r.restoring())
            || self.writer.get().is_some_and(|w| w.waiting())
    }

    /// In front of a Redis Cluster: a slot whose primary cannot be reached
    /// is in an outage of its own ([`Outage::state_for`]) while the rest
    /// of the cluster answers, and whatever is served here keeps to one
    /// slot, as a cluster transaction must.
    pub fn attach_cluster(&self, cluster: Arc<upstream::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// In front of a Redis Cluster: durable keys are seeded from the copy
    /// of their slot's primary.
    pub fn attach_shard_replicas(&self, shards: Arc<crate::shard_replicas::ShardReplicas>) {
        let _ = self.shards.set(shards);
    }

    /// The copy that answers for `key`: the replica, or in front of a
    /// cluster the one of the primary serving its slot.
    fn copy_for(&self, key: &[u8]) -> Option<Arc<crate::replica::Replica>> {
        match self.shards.get() {
            Some(s) => s.for_key(key),
            None => self.replica.get().cloned(),
        }
    }

    /// The complete copy that answers for `keys` (in a cluster they share
    /// a slot: the first names it).
    fn complete_copy(&self, keys: &[Bytes]) -> Option<Arc<crate::replica::Replica>> {
        let copy = match (self.shards.get(), keys.first()) {
            (Some(s), Some(k)) => s.for_key(k),
            (Some(_), None) => None,
            (None, _) => self.replica.get().cloned(),
        };
        copy.filter(|r| r.is_complete())
    }

    /// The state a command on `args` meets: `state` (the prober's, for
    /// the whole upstream), or Down when one of its keys is in a cluster
    /// slot whose primary cannot be reached now.
    pub fn state_for(&self, state: State, args: &[Bytes]) -> State {
        match self.cluster.get() {
            Some(c) if state != State::Down && c.degraded() => {
                let down = Self::keys(args)
                    .iter()
                    .any(|k| c.slot_unreachable(upstream::cluster::key_slot(k)));
                if down {
                    State::Down
                } else {
                    state
                }
            }
            _ => state,
        }
    }

    /// [`Outage::state_for`] a transaction: Down when any of its commands is.
    pub fn state_for_all(&self, state: State, cmds: &[Vec<Bytes>]) -> State {
        if self.cluster.get().is_some_and(|c| c.degraded())
            && cmds.iter().any(|c| self.state_for(state, c) == State::Down)
        {
            return State::Down;
        }
        state
    }

    /// In front of a cluster, a refusal when `keys` hash to more than one
    /// slot: their journal record could not be replayed as one
    /// transaction.
    fn cross_slot(&self, keys: &[Bytes]) -> Option<Route> {
        self.cluster.get()?;
        let mut slots = keys.iter().map(|k| upstream::cluster::key_slot(k));
        let first = slots.next()?;
        if slots.all(|s| s == first) {
            return None;
        }
        Some(self.refuse(
            "its keys hash to different cluster slots (only single-slot commands are served while a shard is down)",
        ))
    }

    /// The replica, when one is attached.
    pub fn replica(&self) -> Option<&Arc<crate::replica::Replica>> {
        self.replica.get()
    }

    /// The near-cache, when one is attached.
    pub fn near_cache(&self) -> Option<&Arc<NearCache>> {
        self.near.get()
    }

    /// The counters it adds to (shared with the proxy's incident log).
    pub fn counters(&self) -> Arc<IncidentCounters> {
        self.counters.clone()
    }

    /// The keyspace rules.
    pub fn keyspaces(&self) -> &Keyspaces {
        &self.keyspaces
    }

    /// The data_dir, once recovery runs.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.get().map(|d| d.as_path())
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn keys(args: &[Bytes]) -> Vec<Bytes> {
        Self::keys_of(resp::lookup(args), args)
    }

    /// [`keys`](Self::keys) of a command whose row is known.
    fn keys_of(spec: Option<&'static resp::CommandSpec>, args: &[Bytes]) -> Vec<Bytes> {
        spec.map(|s| {
            s.key_positions(args)
                .into_iter()
                .map(|(i, _)| args[i].clone())
                .collect()
        })
        .unwrap_or_default()
    }

    fn mark(&self, db: u32, args: &[Bytes]) {
        let overwrite = resp::lookup(args).is_some_and(|s| OVERWRITES.contains(&s.name));
        self.mark_keys(db, &Self::keys(args), overwrite);
    }

    /// [`mark`](Self::mark) for a command whose `keys` and name are known
    /// already: `overwrite` when it replaces their whole values.
    fn mark_keys(&self, db: u32, keys: &[Bytes], overwrite: bool) {
        self.keys.mark(db, keys, overwrite);
        self.active.store(true, Ordering::Release);
        if let Some(h) = self.health.get() {
            h.hold_recovering(true);
        }
    }

    /// True when every key's whole value is what the outage wrote: known
    /// and dirty (a key known but not dirty was only seeded from the
    /// near-cache, possibly in an earlier outage).
    fn all_known(&self, db: u32, keys: &[Bytes]) -> bool {
        self.keys.all_written(db, keys)
    }

    /// True when every key's whole value is here: seeded just now, or
    /// known from what the outage wrote.
    fn all_whole(&self, db: u32, keys: &[Bytes], seeded: &[Bytes]) -> bool {
        keys.iter()
            .all(|k| seeded.contains(k) || self.keys.written(db, k))
    }

    /// Whether a `GET key` / `HGETALL key` going to Redis now should be
    /// kept in the near-cache; the session then pipelines `PEXPIRETIME`.
    pub fn near_fill(&self, db: u32, args: &[Bytes]) -> Option<Fill> {
        let near = self.near.get()?;
        if args.len() != 2 {
            return None;
        }
        let hash = if args[0].eq_ignore_ascii_case(b"get") {
            false
        } else if args[0].eq_ignore_ascii_case(b"hgetall") {
            true
        } else {
            return None;
        };
        let key = &args[1];
        if !near.is_tracking()
            || !near.tracked().covers(key)
            || self.keyspaces.policy(key) == Policy::FailFast
        {
            return None;
        }
        Some(Fill {
            ticket: near.ticket(key),
            db,
            key: key.clone(),
            hash,
        })
    }

    /// Keeps a `GET`/`HGETALL` reply (`value`, one RESP frame) with its
    /// `PEXPIRETIME` reply (`expiry`). Anything unexpected (an error, a
    /// missing key, a Redis without `PEXPIRETIME`) is simply not cached.
    pub fn fill(&self, fill: &Fill, value: &[u8], expiry: &[u8]) {
        let Some(near) = self.near.get() else { return };
        let limits = resp::Limits::upstream();
        let (Ok(Some((v, _))), Ok(Some((resp::Frame::Integer(at), _)))) = (
            resp::parse_frame(value, &limits),
            resp::parse_frame(expiry, &limits),
        ) else {
            return;
        };
        match (fill.hash, v) {
            (false, resp::Frame::Bulk(b)) => {
                near.put_string(fill.ticket, fill.db, fill.key.clone(), b, at);
            }
            (true, resp::Frame::Array(items)) => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(resp::Frame::Bulk(f)), Some(resp::Frame::Bulk(v))) =
                    (it.next(), it.next())
                {
                    pairs.push((f, v));
                }
                near.put_hash(fill.ticket, fill.db, fill.key.clone(), pairs, at);
            }
            (true, resp::Frame::Map(items)) => {
                let pairs = items.into_iter().filter_map(|(f, v)| match (f, v) {
                    (resp::Frame::Bulk(f), resp::Frame::Bulk(v)) => Some((f, v)),
                    _ => None,
                });
                near.put_hash(fill.ticket, fill.db, fill.key.clone(), pairs, at);
            }
            _ => {}
        }
    }

    /// Under the order lock: every key the outage has not written is
    /// reset in the local store and seeded from the replica (a value, or
    /// known absence) or else, when it knows it, the near-cache. Returns
    /// the keys whose state is now known.
    fn materialize(&self, db: u32, keys: &[Bytes]) -> Vec<Bytes> {
        let Some(dirty) = self.keys.dirty_each(db, keys) else {
            return Vec::new();
        };
        let now = self.redis_now_ms();
        let mut seeded = Vec::new();
        for (key, dirty) in keys.iter().zip(dirty) {
            if dirty {
                continue;
            }
            let d = db as usize;
            self.store.forget(d, key);
            // A cache key written or deleted during this outage is the
            // near-cache's; otherwise the replica (when it keeps cache
            // keyspaces) knows better than what the near-cache read.
            let cache = self.keyspaces.policy(key) == Policy::Cache;
            if cache && self.cache_gone(db, key) {
                seeded.push(key.clone());
                continue;
            }
            let written_here = cache
                && self
                    .near
                    .get()
                    .is_some_and(|n| n.written_locally(db, key, now));
            // The replica knows values and absence, in Redis's order; the
            // near-cache only what was read.
            match self
                .copy_for(key)
                .filter(|_| !written_here)
                .map(|r| r.lookup(db, key))
            {
                Some(Knowledge::Value(v, at)) => {
                    self.store.import(d, key.clone(), v, at);
                    seeded.push(key.clone());
                    continue;
                }
                Some(Knowledge::Absent) => {
                    seeded.push(key.clone());
                    continue;
                }
                Some(Knowledge::Unknown) | None => {}
            }
            let Some(near) = self.near.get() else {
                continue;
            };
            let counters = self.per_command();
            let expiry = match near.expire_at(db, key, now) {
                Lookup::Hit(e) => e,
                _ => {
                    counters.near_miss.increment(1);
                    continue;
                }
            };
            counters.near_hit.increment(1);
            match near.get(db, key, now) {
                Lookup::Hit(Cached::String(v)) => {
                    self.store
                        .apply(d, &[Bytes::from_static(b"SET"), key.clone(), v]);
                }
                Lookup::Hit(Cached::Hash(m)) => {
                    let mut cmd = vec![Bytes::from_static(b"HSET"), key.clone()];
                    for (f, v) in m.iter() {
                        cmd.push(f.clone());
                        cmd.push(v.clone());
                    }
                    self.store.apply(d, &cmd);
                }
                _ => continue,
            }
            if let Some(at) = expiry {
                self.store.apply(
                    d,
                    &[
                        Bytes::from_static(b"PEXPIREAT"),
                        key.clone(),
                        Bytes::from(at.to_string()),
                    ],
                );
            }
            seeded.push(key.clone());
        }
        seeded
    }

    fn cache_gone(&self, db: u32, key: &Bytes) -> bool {
        self.cache_gone
            .lock()
            .map(|g| g.contains(&(db, key.clone())))
            .unwrap_or(false)
    }

    fn mark_cache_gone(&self, db: u32, keys: &[Bytes]) {
        if self.replica.get().is_none() {
            return;
        }
        if let Ok(mut g) = self.cache_gone.lock() {
            g.extend(keys.iter().map(|k| (db, k.clone())));
        }
    }

    /// Before a write to the `cache` key `key` while Redis is down: a key
    /// the near-cache lacks takes the replica's value (when it keeps cache
    /// keyspaces), so the write changes what Redis held, as in Redis.
    /// True when the replica holds the key as a type the near-cache cannot
    /// hold.
    fn seed_cache(&self, near: &NearCache, db: u32, key: &Bytes, now: u64) -> bool {
        if self.cache_gone(db, key) || !matches!(near.get(db, key, now), Lookup::Miss) {
            return false;
        }
        let Some(Knowledge::Value(v, at)) = self.replica.get().map(|r| r.lookup(db, key)) else {
            return false;
        };
        let cached = match &*v {
            store::value::Value::Str(b) => Cached::String(b.clone()),
            store::value::Value::Hash(m) => Cached::Hash(Arc::new(
                m.iter().map(|(f, v)| (f.clone(), v.clone())).collect(),
            )),
            _ => return true,
        };
        near.seed_local(db, key.clone(), cached, at);
        false
    }

    /// Decides where a keyed command goes in `state`, and runs it here when
    /// it stays local. `session` is the client's store session (its db is
    /// kept in step with the client's); `caller` says whether the client
    /// may use what is answered here (Redis judges everything else).
    /// `gated`: the command's row as the gate found it (not looked up
    /// again here).
    pub async fn route(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
        caller: &crate::access::Caller<'_>,
        gated: crate::gate::Gated,
    ) -> Route {
        if matches!(state, State::Up | State::Recovering)
            && !self.active.load(Ordering::Acquire)
            && !self.restoring()
        {
            return Route::Upstream;
        }
        let keys = Self::keys_of(gated.spec, args);
        let r = self
            .route_slow(
                state,
                session,
                db,
                Cmd {
                    args,
                    keys: &keys,
                    gated,
                },
                caller,
            )
            .await;
        self.count(&r, || keys.first().cloned());
        r
    }

    /// `redoubt_commands_total{route, policy}` for a command routed here;
    /// `key` (the first key, looked up only for local answers) names the
    /// policy.
    fn count(&self, r: &Route, key: impl FnOnce() -> Option<Bytes>) {
        let route = match r {
            Route::Upstream => return,
            Route::Local(..) => 0,
            Route::Refused(_) => 1,
        };
        let policy = key().map_or(3, |k| self.keyspaces.policy(&k) as usize);
        self.per_command().routed[route][policy].increment(1);
    }

    async fn route_slow(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        cmd: Cmd<'_>,
        caller: &crate::access::Caller<'_>,
    ) -> Route {
        let Cmd { args, keys, gated } = cmd;
        let era = self.era();
        let name = gated.spec.map(|s| s.name);
        if keys.is_empty() {
            if state != State::Down {
                return Route::Upstream;
            }
            let name = name.unwrap_or("");
            if script::is_script(name) && self.cluster.get().is_some() {
                // Its keys could be in any slots: no one transaction
                // replays them.
                return self.refuse("in front of a cluster a script must declare its keys");
            }
            if script::is_script(name) {
                // No declared keys: each key it touches is judged as it
                // comes.
                if let Some(denied) = caller.judge(args, &gated) {
                    return Route::Refused(denied);
                }
                return self
                    .script_route(session, db, args, name, caller.to_owned(), era)
                    .await;
            }
            return self.keyless(session, args, caller).await;
        }
        let durable = keys
            .iter()
            .all(|k| self.keyspaces.policy(k) == Policy::Durable);
        // Looked up only when it decides: while Down everything is local.
        let dirty = || durable && self.keys.any_dirty(db, keys);
        let rule = crate::policy::outage_rule_of(gated.spec, args);
        // While a Redis that came back is checked for lost durable keys
        // (and they are restored), those keys are served as during the
        // outage: Redis may not have them yet.
        let restoring = durable && self.restoring();
        let local = match state {
            State::Down => true,
            State::WritesDown => {
                restoring
                    || matches!(rule, OutageRule::Blind | OutageRule::ValueDependent)
                    || dirty()
            }
            _ => restoring || dirty(),
        };
        if !local {
            return Route::Upstream;
        }
        // Every local answer below, durable store or near-cache, is given
        // only to a client whose Redis user may have it.
        if let Some(denied) = caller.judge(args, &gated) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Route::Refused(denied);
        }
        if let Some(refused) = self.cross_slot(keys) {
            return refused;
        }
        if !durable {
            if state != State::Down {
                // Redis reads and judges them (it may reject the writes).
                return Route::Upstream;
            }
            let policies: Vec<Policy> = keys.iter().map(|k| self.keyspaces.policy(k)).collect();
            if policies.iter().all(|p| *p == Policy::Cache) {
                return self.cache_route(session, db, args, keys, rule).await;
            }
            let why = if policies.iter().any(|p| *p != Policy::FailFast) {
                "the command mixes keyspaces of different policies"
            } else {
                "its keys are not in a durable or cache keyspace"
            };
            return self.refuse(why);
        }
        let name = name.unwrap_or("?");
        if script::is_script(name) {
            return self
                .script_route(session, db, args, name, caller.to_owned(), era)
                .await;
        }
        // With an exact copy of what Redis held, a conditional write, a pop
        // or a rename is decided here and journaled as its effects, as
        // Redis replicates it: replay then does what the client was told.
        let exact = rule == OutageRule::Never && self.decidable_here(args);
        if rule == OutageRule::Never && !exact {
            return self.refuse(&format!("'{name}' is not allowed during an outage"));
        }
        self.select(session, db).await;
        if rule != OutageRule::Read {
            if let Some(refused) = self.durable_write_refused() {
                return refused;
            }
        }
        // Seed, execute and append under one lock: journal order = store
        // order, and no seeding overwrites a write in between. Reads too:
        // one that chose the local store before the hand-back to Redis
        // must not meet the store it emptied.
        let _order = self.order.lock().await;
        if self.forgotten(era) {
            return Route::Upstream;
        }
        if rule == OutageRule::Read && self.all_known(db, keys) {
            self.counters.served_locally.fetch_add(1, Ordering::Relaxed);
            let out = self
                .store
                .execute_row(session, args.to_vec(), gated.found())
                .await;
            return Route::Local(out.reply.to_bytes(), None);
        }
        // A write that replaces whole values, expiry included, needs
        // nothing of what was there: no earlier value is brought here.
        let seeded = if rule == OutageRule::Blind && replaces_whole(name, args) {
            Vec::new()
        } else {
            self.materialize(db, keys)
        };
        if (exact || matches!(rule, OutageRule::Read | OutageRule::ValueDependent))
            && !self.all_whole(db, keys, &seeded)
        {
            return self.refuse("value unknown locally");
        }
        self.counters.served_locally.fetch_add(1, Ordering::Relaxed);
        let mut out = self
            .store
            .execute_row(session, args.to_vec(), gated.found())
            .await;
        if rule == OutageRule::Read || out.reply.is_error() {
            return Route::Local(out.reply.to_bytes(), None);
        }
        let entry = if exact {
            if out.effects.is_empty() {
                // It changed nothing (`SET … NX` on an existing key).
                return Route::Local(out.reply.to_bytes(), None);
            }
            Entry {
                db,
                commands: std::mem::take(&mut out.effects)
                    .into_iter()
                    .map(|e| e.args)
                    .collect(),
                time_ms: now_ms(),
            }
        } else {
            Entry::command(db, absolute(args, self.redis_now_ms()), now_ms())
        };
        let durable = self.append(entry, keys.to_vec());
        self.mark_keys(db, keys, OVERWRITES.contains(&name));
        if !seeded.is_empty() {
            // The seeded value plus this write is now the whole value.
            self.keys.mark_known(db, &seeded);
        }
        self.counters.journaled.fetch_add(1, Ordering::Relaxed);
        Route::Local(out.reply.to_bytes(), Some(durable))
    }

    /// True when a command the rules call [`OutageRule::Never`] can still
    /// be decided here: the replica holds Redis's exact state, the local
    /// store runs the command, and its effects stay in this db. Scripts
    /// and blocking commands never are.
    fn decidable_here(&self, args: &[Bytes]) -> bool {
        const NOT_HERE: &[&str] = &[
            "eval",
            "evalsha",
            "eval_ro",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
            "move",
            "copy",
            "swapdb",
            "flushdb",
            "flushall",
            "migrate",
            "sort",
        ];
        let Some(spec) = resp::lookup(args) else {
            return false;
        };
        if NOT_HERE.contains(&spec.name) || spec.has(resp::command::F_BLOCKING) {
            return false;
        }
        self.complete_copy(&Self::keys(args)).is_some() && store::implements(spec.name)
    }

    /// A `MULTI … EXEC` block while Redis is not Up: served here only if
    /// every command in it would be (durable keys, allowed, values known),
    /// its writes journaled as one record and so replayed as one
    /// transaction. Otherwise refused whole: part of a transaction cannot
    /// run here and part in Redis.
    pub async fn route_multi(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        cmds: &[Vec<Bytes>],
        caller: &crate::access::Caller<'_>,
    ) -> Route {
        if matches!(state, State::Up | State::Recovering)
            && !self.active.load(Ordering::Acquire)
            && !self.restoring()
        {
            return Route::Upstream;
        }
        let r = self
            .route_multi_slow(state, session, db, cmds, caller)
            .await;
        self.count(&r, || {
            cmds.iter().find_map(|c| Self::keys(c).into_iter().next())
        });
        r
    }

    async fn route_multi_slow(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        cmds: &[Vec<Bytes>],
        caller: &crate::access::Caller<'_>,
    ) -> Route {
        let era = self.era();
        let keyed: Vec<(Vec<Bytes>, OutageRule)> = cmds
            .iter()
            .map(|c| (Self::keys(c), outage_rule(c)))
            .collect();
        let all_keys: Vec<Bytes> = keyed.iter().flat_map(|(k, _)| k.iter().cloned()).collect();
        let any_dirty = self.keys.any_dirty(db, &all_keys);
        let any_write = keyed
            .iter()
            .any(|(_, r)| matches!(r, OutageRule::Blind | OutageRule::ValueDependent));
        // While a Redis that came back is checked for lost data, durable
        // keys stay local (as in `route_slow`).
        let restoring = self.restoring()
            && !all_keys.is_empty()
            && all_keys
                .iter()
                .all(|k| self.keyspaces.policy(k) == Policy::Durable);
        let local = match state {
            State::Down => true,
            State::WritesDown => any_dirty || any_write || restoring,
            _ => any_dirty || restoring,
        };
        if !local {
            return Route::Upstream;
        }
        // As in Redis, a command the user may not run refuses the whole
        // transaction; nothing of it runs.
        if let Some(denied) = cmds.iter().find_map(|c| caller.check(c)) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return Route::Refused(denied);
        }
        if let Some(refused) = self.cross_slot(&all_keys) {
            return refused;
        }
        for (cmd, (keys, rule)) in cmds.iter().zip(&keyed) {
            let name = resp::lookup(cmd).map(|s| s.name).unwrap_or("?");
            if keys.is_empty()
                || keys
                    .iter()
                    .any(|k| self.keyspaces.policy(k) != Policy::Durable)
            {
                return self.refuse(&format!(
                        "'{name}' in the transaction is not on durable keys (a transaction during an outage may only touch durable keys)"
                    ));
            }
            if *rule == OutageRule::Never && !self.decidable_here(cmd) {
                return self.refuse(&format!(
                    "'{name}' in the transaction is not allowed during an outage"
                ));
            }
        }
        // A command decided on the exact copy (`XADD`, a pop) makes the
        // whole block run as a transaction of the local store, journaled
        // as its effects, as Redis replicates it.
        let exact = session.watching() || keyed.iter().any(|(_, r)| *r == OutageRule::Never);
        if any_write {
            if let Some(refused) = self.durable_write_refused() {
                return refused;
            }
        }
        self.select(session, db).await;
        let _order = self.order.lock().await;
        if self.forgotten(era) {
            return Route::Upstream;
        }
        let seeded = self.materialize(db, &all_keys);
        if exact {
            return self
                .exact_multi(session, db, cmds, &all_keys, &seeded)
                .await;
        }
        let known = |keys: &[Bytes]| {
            keys.iter()
                .all(|k| seeded.contains(k) || self.all_known(db, std::slice::from_ref(k)))
        };
        // In order: a key the block itself overwrote earlier is known.
        let mut written: HashSet<Bytes> = HashSet::new();
        for (cmd, (keys, rule)) in cmds.iter().zip(&keyed) {
            let by_block = keys.iter().all(|k| written.contains(k));
            if matches!(rule, OutageRule::Read | OutageRule::ValueDependent)
                && !by_block
                && !known(keys)
            {
                return self.refuse("value unknown locally");
            }
            if resp::lookup(cmd).is_some_and(|s| OVERWRITES.contains(&s.name)) {
                written.extend(keys.iter().cloned());
            }
        }
        self.counters
            .served_locally
            .fetch_add(cmds.len() as u64, Ordering::Relaxed);
        let now = self.redis_now_ms();
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(format!("*{}\r\n", cmds.len()).as_bytes());
        let mut journaled = Vec::new();
        for (cmd, (_, rule)) in cmds.iter().zip(&keyed) {
            let r = self.store.execute(session, cmd.clone()).await;
            // As in Redis, a failing command does not undo the others; it
            // is not journaled, since replaying it would fail the same way.
            if *rule != OutageRule::Read && !r.reply.is_error() {
                journaled.push(absolute(cmd, now));
                self.mark(db, cmd);
            }
            out.extend_from_slice(&r.reply.to_bytes());
        }
        if journaled.is_empty() {
            return Route::Local(out.freeze(), None);
        }
        if !seeded.is_empty() {
            self.keys.mark_known(db, &seeded);
        }
        self.counters
            .journaled
            .fetch_add(journaled.len() as u64, Ordering::Relaxed);
        let entry = Entry {
            db,
            commands: journaled,
            time_ms: now,
        };
        let keys = entry.commands.iter().flat_map(|c| Self::keys(c)).collect();
        let durable = self.append(entry, keys);
        Route::Local(out.freeze(), Some(durable))
    }

    /// `WATCH` on durable keys while Redis is Down, held by the local
    /// store on the exact copy: the keys are seeded and then kept (as if
    /// written) so no later seeding counts as a change, and the `EXEC`
    /// that follows runs as a local transaction, which the WATCH guards.
    /// `None` when it is not served here.
    pub async fn watch_locally(
        &self,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
        caller: &crate::access::Caller<'_>,
    ) -> Option<Route> {
        let era = self.era();
        let keys = Self::keys(args);
        if keys.is_empty()
            || !keys
                .iter()
                .all(|k| self.keyspaces.policy(k) == Policy::Durable)
            || self.complete_copy(&keys).is_none()
        {
            return None;
        }
        if let Some(denied) = caller.check(args) {
            return Some(Route::Refused(denied));
        }
        if let Some(refused) = self.cross_slot(&keys) {
            return Some(refused);
        }
        let _order = self.order.lock().await;
        if self.forgotten(era) {
            // Handed back to Redis meanwhile: watched there, not here (a
            // watch kept here would mark its keys dirty again and pull
            // them back from Redis).
            return None;
        }
        self.select(session, db).await;
        let seeded = self.materialize(db, &keys);
        if !self.all_whole(db, &keys, &seeded) {
            return Some(self.refuse("value unknown locally"));
        }
        let out = self.store.execute(session, args.to_vec()).await;
        if !out.reply.is_error() {
            self.keys.mark(db, &keys, true);
            self.active.store(true, Ordering::Release);
            if let Some(h) = self.health.get() {
                h.hold_recovering(true);
            }
        }
        Some(Route::Local(out.reply.to_bytes(), None))
    }

    /// A `MULTI … EXEC` block with commands decided on the exact copy:
    /// run as one transaction of the local store (under the order lock,
    /// keys seeded), its effects journaled as one record.
    async fn exact_multi(
        &self,
        session: &mut store::Session,
        db: u32,
        cmds: &[Vec<Bytes>],
        keys: &[Bytes],
        seeded: &[Bytes],
    ) -> Route {
        if !self.all_whole(db, keys, seeded) {
            return self.refuse("value unknown locally");
        }
        let out = match self.run_transaction(session, cmds).await {
            Ok(out) => out,
            Err(refused) => return Route::Local(refused, None),
        };
        self.counters
            .served_locally
            .fetch_add(cmds.len() as u64, Ordering::Relaxed);
        if out.effects.is_empty() {
            return Route::Local(out.reply.to_bytes(), None);
        }
        let durable = self.journal_effects(db, &out.effects);
        Route::Local(out.reply.to_bytes(), Some(durable))
    }

    /// Why a durable write cannot be taken now (another Redoubt holds the
    /// outage-writer lease, or the journal refuses), as the refusal.
    fn durable_write_refused(&self) -> Option<Route> {
        if let Some(w) = self.writer.get().filter(|w| !w.holds()) {
            let answers = self.health.get().is_some_and(|h| h.state() != State::Down);
            return Some(self.refuse(&w.refusal(answers)));
        }
        let e = self.journal.refusal()?;
        crate::metrics::count_write_refused("journal-failed");
        Some(Route::Refused(Refusal::Unavailable(format!(
            "{e}: command not executed"
        ))))
    }

    /// Runs `cmds` as one transaction of the local store (`MULTI … EXEC`,
    /// where a blocking command takes what is there, as in Redis): its
    /// reply and effects, or the reply refusing `MULTI`.
    async fn run_transaction(
        &self,
        session: &mut store::Session,
        cmds: &[Vec<Bytes>],
    ) -> Result<store::Executed, Bytes> {
        let multi = self
            .store
            .execute(session, vec![Bytes::from_static(b"MULTI")])
            .await;
        if multi.reply.is_error() {
            return Err(multi.reply.to_bytes());
        }
        for cmd in cmds {
            let _ = self.store.execute(session, cmd.clone()).await;
        }
        Ok(self
            .store
            .execute(session, vec![Bytes::from_static(b"EXEC")])
            .await)
    }

    /// Journals what a local execution decided on the exact copy, as one
    /// record of its effects (replayed as one transaction). The keys they
    /// write were whole here (seeded or the outage's own), so they are
    /// whole now, and dirty until the replay.
    fn journal_effects(&self, db: u32, effects: &[store::Effect]) -> Durable {
        let commands: Vec<Vec<Bytes>> = effects.iter().map(|e| e.args.clone()).collect();
        for c in &commands {
            self.mark(db, c);
        }
        let mut written: Vec<Bytes> = commands.iter().flat_map(|c| Self::keys(c)).collect();
        written.sort();
        written.dedup();
        self.keys.mark_known(db, &written);
        self.counters.journaled.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            db,
            commands,
            time_ms: now_ms(),
        };
        self.append(entry, written)
    }

    /// Now on Redis's clock (ours plus the offset last measured from
    /// `INFO`), so expiries journaled as absolute times mean to Redis what
    /// the client meant.
    fn redis_now_ms(&self) -> u64 {
        let offset = self
            .health
            .get()
            .and_then(|h| h.clock_offset_ms())
            .unwrap_or(0);
        now_ms().saturating_add_signed(offset)
    }

    async fn select(&self, session: &mut store::Session, db: u32) {
        if session.db() != db as usize {
            let _ = self
                .store
                .execute(
                    session,
                    vec![Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())],
                )
                .await;
        }
    }

    /// Keyless commands while Down: the handshake a reconnecting client
    /// sends is answered here, so its health checks pass while its local
    /// keys are served; the rest fail fast.
    async fn keyless(
        &self,
        session: &mut store::Session,
        args: &[Bytes],
        caller: &crate::access::Caller<'_>,
    ) -> Route {
        let name = resp::lookup(args).map(|s| s.name).unwrap_or("");
        if matches!(name, "ping" | "echo" | "time" | "info") {
            if let Some(denied) = caller.check(args) {
                return Route::Refused(denied);
            }
        }
        match name {
            "ping" | "echo" | "time" => {
                let out = self.store.execute(session, args.to_vec()).await;
                Route::Local(out.reply.to_bytes(), None)
            }
            "info" => Route::Local(self.last_known_info(), None),
            _ => Route::Upstream,
        }
    }

    /// `INFO` while Down: the fields clients look at, from the last time
    /// Redis answered, and `loading:0` so nobody waits for a load.
    fn last_known_info(&self) -> Bytes {
        let facts = self
            .health
            .get()
            .map(|h| h.current().facts)
            .unwrap_or_default();
        let or = |v: Option<String>, d: &str| v.unwrap_or_else(|| d.to_string());
        let text = format!(
            "# Server\r\nredis_version:{}\r\nredoubt_serving:local (redis is down; these are the last-known values)\r\n\r\n# Persistence\r\nloading:0\r\n\r\n# Replication\r\nrole:{}\r\n\r\n# Memory\r\nmaxmemory_policy:{}\r\n",
            or(facts.redis_version, "unknown"),
            or(facts.role, "master"),
            or(facts.maxmemory_policy, "noeviction"),
        );
        resp::Frame::Bulk(Bytes::from(text)).to_bytes()
    }

    /// A command on `cache` keys while Down: near-cache reads (a miss is
    /// nil), `SET` kept in the near-cache only, `DEL`/`EXPIRE` family
    /// applied there and journaled so Redis hears of the invalidation.
    async fn cache_route(
        &self,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
        keys: &[Bytes],
        rule: OutageRule,
    ) -> Route {
        let Some(near) = self.near.get() else {
            return self.refuse("the near-cache is off");
        };
        let name = resp::lookup(args).map(|s| s.name).unwrap_or("?");
        let now = self.redis_now_ms();
        let int = |n: usize| resp::Frame::Integer(n as i64).to_bytes();
        if rule == OutageRule::Read {
            self.counters.served_locally.fetch_add(1, Ordering::Relaxed);
            self.select(session, db).await;
            let _order = self.order.lock().await;
            self.materialize(db, keys);
            let out = self.store.execute(session, args.to_vec()).await;
            for k in keys {
                self.store
                    .apply(db as usize, &[Bytes::from_static(b"DEL"), k.clone()]);
            }
            return Route::Local(out.reply.to_bytes(), None);
        }
        if rule == OutageRule::Never {
            return self.refuse(&format!("'{name}' is not allowed during an outage"));
        }
        let journaled = matches!(
            name,
            "del" | "unlink" | "expire" | "pexpire" | "expireat" | "pexpireat" | "persist"
        );
        if journaled {
            if let Some(e) = self.journal.refusal() {
                crate::metrics::count_write_refused("journal-failed");
                return Route::Refused(Refusal::Unavailable(format!("{e}: command not executed")));
            }
        }
        let abs = absolute(args, now);
        // Keys the replica holds as a type the near-cache cannot (a list,
        // a set, …): only a DEL can be served for them here.
        let mut other_type = HashSet::new();
        if name != "set" && name != "setex" && name != "psetex" {
            for k in keys {
                if self.seed_cache(near, db, k, now) {
                    other_type.insert(k.clone());
                }
            }
        }
        let reply = match name {
            "set" | "setex" | "psetex" => {
                let Some(at) = set_expiry(&abs) else {
                    return self
                        .refuse("this SET form is not served for cache keys during an outage");
                };
                if !near.set_local_string(db, abs[1].clone(), abs[2].clone(), at) {
                    return self.refuse("the value does not fit in the near-cache");
                }
                reply::ok()
            }
            "del" | "unlink" => {
                let n = keys
                    .iter()
                    .filter(|k| near.delete_local(db, k, now) | other_type.contains(*k))
                    .count();
                self.mark_cache_gone(db, keys);
                int(n)
            }
            "persist" => int(near.expire_local(db, &keys[0], None, now) as usize),
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                let at = std::str::from_utf8(&abs[2])
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(|t| {
                        if name == "expireat" {
                            t.saturating_mul(1000)
                        } else {
                            t
                        }
                    });
                match at {
                    Some(t) if t > now as i64 => {
                        int(near.expire_local(db, &keys[0], Some(t as u64), now) as usize)
                    }
                    // An expiry in the past deletes, as in Redis.
                    Some(_) => {
                        let n =
                            near.delete_local(db, &keys[0], now) | other_type.contains(&keys[0]);
                        self.mark_cache_gone(db, &keys[..1]);
                        int(n as usize)
                    }
                    None => reply::error("ERR value is not an integer or out of range"),
                }
            }
            "hset" | "hmset" if args.len() >= 4 && args.len().is_multiple_of(2) => {
                let pairs = args[2..]
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect::<Vec<_>>();
                match near.hset_local(db, &keys[0], pairs, now) {
                    Lookup::Hit(n) if name == "hset" => int(n),
                    Lookup::Hit(_) => reply::ok(),
                    Lookup::WrongType => reply::error(WRONGTYPE),
                    Lookup::Miss => return self.refuse("value unknown locally"),
                }
            }
            "hdel" if args.len() >= 3 => {
                match near.hdel_local(db, &keys[0], args[2..].iter().map(|f| &f[..]), now) {
                    Lookup::Hit(n) => int(n),
                    Lookup::WrongType => reply::error(WRONGTYPE),
                    Lookup::Miss => return self.refuse("value unknown locally"),
                }
            }
            _ => {
                return self.refuse(&format!(
                    "'{name}' on a cache key is not served during an outage"
                ))
            }
        };
        self.counters.served_locally.fetch_add(1, Ordering::Relaxed);
        if !journaled {
            return Route::Local(reply, None);
        }
        let _order = self.order.lock().await;
        let entry = Entry::command(db, abs, now);
        // A cache key's local copy is the near-cache's, a cache: a refused
        // write there needs no undo in the store.
        let durable = self.append(entry, Vec::new());
        self.active.store(true, Ordering::Release);
        if let Some(h) = self.health.get() {
            h.hold_recovering(true);
        }
        self.counters.journaled.fetch_add(1, Ordering::Relaxed);
        Route::Local(reply, Some(durable))
    }

    /// Appends under the order lock; the reply waits for the returned
    /// future. Counted in `appending` until the journal has answered, and
    /// settled then ([`Settle::answered`]) even if the client went away
    /// and its reply was dropped.
    fn append(&self, entry: Entry, keys: Vec<Bytes>) -> Durable {
        let db = entry.db;
        self.appending.fetch_add(1, Ordering::AcqRel);
        self.settle
            .runtime
            .get_or_init(tokio::runtime::Handle::current);
        let settle = self.settle.clone();
        let appended = self
            .journal
            .append_then(entry, Box::new(move |r| settle.answered(r, db, keys)));
        Durable {
            appended,
            settle: self.settle.clone(),
            refused: None,
        }
    }

    fn per_command(&self) -> &crate::metrics::OutageCounters {
        self.per_command
            .get_or_init(crate::metrics::OutageCounters::new)
    }

    fn refuse(&self, why: &str) -> Route {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        let shard_down = self.cluster.get().is_some_and(|c| c.degraded());
        let redis = match self.health.get().map(|h| h.state()) {
            Some(State::WritesDown) => "redis rejects writes",
            Some(State::Recovering) if self.writer.get().is_some_and(|w| w.waiting()) => {
                "redis answers again"
            }
            Some(State::Up | State::Recovering) if shard_down => {
                "a redis cluster shard is unreachable"
            }
            Some(State::Recovering) => "redoubt is replaying the outage's writes",
            _ => "redis is down",
        };
        Route::Refused(Refusal::Unavailable(format!(
            "{redis} and {why}: command not executed"
        )))
    }

    /// A store session for one client.
    pub fn session(&self) -> store::Session {
        self.store.session()
    }

    /// The local store the outage serves from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Replays the journal whenever Redis answers and records are pending,
    /// then forgets the local state (Redis has it all) and lets the health
    /// handle publish Up.
    pub fn spawn_recovery(
        self: &Arc<Self>,
        url: UpstreamUrl,
        data_dir: std::path::PathBuf,
        node_id: String,
        health: HealthHandle,
    ) {
        let _ = self.health.set(health.clone());
        let _ = self.data_dir.set(data_dir.clone());
        if self.journal.pending_entries() > 0 {
            health.hold_recovering(true);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut replayer = Replayer::new(
                me.journal.clone(),
                &node_id,
                ReplayConfig::from_url(&url, &data_dir),
            );
            if let Ok(mut p) = me.progress.lock() {
                *p = Some(replayer.progress());
            }
            let mut rx = health.subscribe();
            // Whether Redis may have lost its script cache since the
            // scripts were last loaded: at start, and after every Down.
            let mut scripts_stale = true;
            // Drains that found new records behind them.
            let mut hand_back_tries = 0u32;
            // When a stopped replay was last logged as a warning.
            let mut warned: Option<std::time::Instant> = None;
            loop {
                me.publish_gauges();
                if health.state() == State::Down {
                    scripts_stale = true;
                } else if scripts_stale && matches!(health.state(), State::Up | State::Recovering) {
                    scripts_stale = !me.reload_scripts(&url).await;
                }
                // The journal goes on top of whatever a restore puts back,
                // never under it.
                let answering = matches!(health.state(), State::Up | State::Recovering)
                    && !me.replica.get().is_some_and(|r| r.restoring());
                if answering && me.journal.pending_entries() > 0 {
                    match replayer.run_until_drained().await {
                        Ok(ReplayOutcome::Drained { replayed, failed }) => {
                            tracing::info!(replayed, failed, "journal replayed into redis");
                            me.counters.replayed.fetch_add(replayed, Ordering::Relaxed);
                            me.counters.failed.fetch_add(failed, Ordering::Relaxed);
                            let mut end = me.journal.watch_end();
                            end.borrow_and_update();
                            // Under the order lock no append can start; one
                            // already sent is counted in `appending` until
                            // the journal has it.
                            let order = me.order.lock().await;
                            let idle = me.journal.pending_entries() == 0
                                && me.appending.load(Ordering::Acquire) == 0;
                            if idle {
                                me.forget();
                                health.hold_recovering(false);
                                hand_back_tries = 0;
                            } else if hand_back_tries >= HAND_BACK_TRIES {
                                // Clients keep writing the keys being
                                // handed back, so the journal is never
                                // found empty: the last stretch is
                                // replayed with the order lock held, new
                                // local commands waiting for it.
                                if me.drain_holding_order(&mut replayer).await {
                                    me.forget();
                                    health.hold_recovering(false);
                                }
                                hand_back_tries = 0;
                                drop(order);
                            } else {
                                hand_back_tries += 1;
                                drop(order);
                                if me.journal.pending_entries() == 0 {
                                    // Replay it as soon as it is written.
                                    let _ = tokio::time::timeout(
                                        Duration::from_millis(250),
                                        end.changed(),
                                    )
                                    .await;
                                }
                            }
                            continue;
                        }
                        // A shard still failing over stops every try:
                        // said once per REPLAY_STOP_REMINDER, not 4 times
                        // a second.
                        Ok(other) if warned.is_some_and(|t| t.elapsed() < REPLAY_STOP_REMINDER) => {
                            tracing::debug!(?other, "replay stopped; will retry")
                        }
                        Ok(other) => {
                            warned = Some(std::time::Instant::now());
                            tracing::warn!(?other, "replay stopped; will retry")
                        }
                        Err(e) => tracing::error!(error = %e, "replay failed; will retry"),
                    }
                } else if answering
                    && me.journal.pending_entries() == 0
                    && me.appending.load(Ordering::Acquire) == 0
                {
                    health.hold_recovering(false);
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = me.replay_now.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
    }

    /// With the order lock held by the caller (no append can start):
    /// waits for the appends in flight, then replays what they wrote. True
    /// when the journal is drained, so the local state may be forgotten.
    /// Bounded: an append the journal refuses takes the order lock to undo
    /// itself, so it is not waited for past a second.
    async fn drain_holding_order(&self, replayer: &mut Replayer) -> bool {
        let settled = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.journal.barrier().await;
            // Each append counts down once the journal answers it (a
            // refused one once it is undone).
            while self.appending.load(Ordering::Acquire) > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_ok();
        if !settled {
            return false;
        }
        match replayer.run_until_drained().await {
            Ok(ReplayOutcome::Drained { replayed, failed }) => {
                tracing::info!(replayed, failed, "journal replayed into redis");
                self.counters
                    .replayed
                    .fetch_add(replayed, Ordering::Relaxed);
                self.counters.failed.fetch_add(failed, Ordering::Relaxed);
                self.journal.pending_entries() == 0
            }
            _ => false,
        }
    }

    /// The scripts clients sent through this Redoubt.
    pub fn scripts(&self) -> &crate::scripts::ScriptCache {
        &self.scripts
    }

    /// Loads every remembered script into Redis (`SCRIPT LOAD`): a Redis
    /// that restarted has an empty script cache, and clients that only
    /// send `EVALSHA` would get `NOSCRIPT` for a restart they did not
    /// cause. True when done (or nothing to do).
    async fn reload_scripts(&self, url: &UpstreamUrl) -> bool {
        let bodies = self.scripts.all();
        if bodies.is_empty() {
            return true;
        }
        let hs = url.control_handshake(2, "redoubt-scripts");
        let conn = match upstream::Conn::connect(&url.endpoint(), &hs, Duration::from_secs(2)).await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "cannot load scripts into redis yet");
                return false;
            }
        };
        let mut loaded = 0usize;
        for body in &bodies {
            let cmd = [b"SCRIPT".to_vec(), b"LOAD".to_vec(), body.to_vec()];
            match conn.call(&cmd, Duration::from_secs(5)).await {
                Ok(r) if !r.is_error() => loaded += 1,
                Ok(r) => {
                    // Redoubt's own user may not be allowed SCRIPT; clients
                    // then fall back to EVAL on NOSCRIPT, as they must.
                    tracing::warn!(reply = %String::from_utf8_lossy(&r.to_bytes()).trim_end(), "redis refused to load a remembered script: clients may see NOSCRIPT once");
                    return true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "loading scripts into redis failed; will retry");
                    return false;
                }
            }
        }
        tracing::info!(loaded, "remembered scripts loaded into redis");
        true
    }

    /// Asks the recovery task to try a replay now (after an operator
    /// fixed what paused it), and returns the journal's state.
    pub fn request_replay(&self) -> serde_json::Value {
        self.replay_now.notify_one();
        let mut v = self.status_json();
        v["replay_requested"] = serde_json::Value::Bool(true);
        v
    }

    fn publish_gauges(&self) {
        metrics::gauge!(crate::metrics::JOURNAL_PENDING).set(self.journal.pending_entries() as f64);
        metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(self.journal.bytes() as f64);
        metrics::gauge!(crate::metrics::FALLBACK_KEYS).set(self.fallback_keys() as f64);
        metrics::gauge!(crate::metrics::FALLBACK_MEMORY).set(self.fallback_memory() as f64);
    }

    /// Keys Redoubt could answer locally now: the local store's and the
    /// near-cache's.
    pub fn fallback_keys(&self) -> usize {
        let local: usize = (0..self.store.databases())
            .map(|db| self.store.key_count(db))
            .sum();
        local + self.near.get().map_or(0, |n| n.len())
    }

    /// Bytes held for local answers: the local store's and the
    /// near-cache's.
    pub fn fallback_memory(&self) -> usize {
        self.store.used_memory() + self.near.get().map_or(0, |n| n.bytes())
    }

    /// Why durable writes are refused now (the journal failed), if they
    /// are: for `/readyz`.
    pub fn write_refusal(&self) -> Option<String> {
        if let Some(e) = self.journal.refusal() {
            return Some(e.to_string());
        }
        self.journal.refusing_full().then(|| {
            JournalError::Full {
                max_bytes: self.journal.max_bytes(),
            }
            .to_string()
        })
    }

    /// For `/status`: journal depth and bytes, replay progress, whether
    /// keys are being served locally, the near-cache.
    pub fn status_json(&self) -> serde_json::Value {
        let replay = self
            .progress
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|h| h.snapshot()));
        serde_json::json!({
            "pending_commands": self.journal.pending_entries(),
            "bytes": self.journal.bytes(),
            "serving_locally": self.active.load(Ordering::Acquire),
            "refusing": self.write_refusal(),
            "replay": replay,
            "fallback_keys": self.fallback_keys(),
            "fallback_memory_bytes": self.fallback_memory(),
            "replica": self.replica.get().map(|r| r.status()),
            "shard_replicas": self.shards.get().map(|s| {
                s.status()
                    .into_iter()
                    .map(|(primary, status)| serde_json::json!({ "primary": primary, "replica": status }))
                    .collect::<Vec<_>>()
            }),
            "writer": self.writer.get().map(|w| w.status_json()),
            "near_cache": self.near.get().map(|n| serde_json::json!({
                "keys": n.len(),
                "bytes": n.bytes(),
                "max_bytes": n.max_bytes(),
                "tracking": n.is_tracking(),
                "stale_since_unix_ms": n.stopped_at_ms(),
            })),
        })
    }

    /// True when the recovery has forgotten the local state since `era`
    /// (read before the caller chose to answer here): the replay drained
    /// meanwhile, so the command goes to Redis. Asked under the order
    /// lock. Answering here instead would read a store
    /// just emptied, or seed it from a replica that may not have streamed
    /// the replay's last writes yet.
    fn forgotten(&self, era: u64) -> bool {
        self.forgets.load(Ordering::Acquire) != era
    }

    /// How many times the local state was forgotten so far: read it
    /// before deciding to answer here, and ask [`forgotten`](Self::forgotten)
    /// under the order lock.
    fn era(&self) -> u64 {
        self.forgets.load(Ordering::Acquire)
    }

    fn forget(&self) {
        if let Ok(mut g) = self.cache_gone.lock() {
            g.clear();
        }
        let _ = self.store.apply(0, &[Bytes::from_static(b"FLUSHALL")]);
        self.keys.clear();
        self.active.store(false, Ordering::Release);
        // Last: a command that reads the new era sees the keys no longer
        // dirty and goes to Redis. Counted first, a command reading it
        // while the store was being emptied still found its key dirty,
        // chose to answer here, and (the era unchanged by then) read the
        // key from the replica, which may not have streamed the replay's
        // last writes yet: a stale value, and a write journaled after the
        // hand-back on top of it.
        self.forgets.fetch_add(1, Ordering::AcqRel);
    }
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The absolute expiry of a `SET` in its journal form ([`absolute`]):
/// `-1` for none, Unix ms otherwise; `None` for forms not served for cache
/// keys during an outage (`KEEPTTL`, a bad number).
fn set_expiry(abs: &[Bytes]) -> Option<i64> {
    let num = |b: &Bytes| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
    let mut at = -1;
    let mut i = 3;
    while i < abs.len() {
        let opt = abs[i].to_ascii_lowercase();
        match &opt[..] {
            b"pxat" => at = num(abs.get(i + 1)?)?,
            b"exat" => at = num(abs.get(i + 1)?)?.checked_mul(1000)?,
            _ => return None,
        }
        i += 2;
    }
    (abs.len() >= 3).then_some(at)
}

impl std::fmt::Debug for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outage")
            .field("keyspaces", &self.keyspaces)
            .field("active", &self.active)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    /// A command reads the era before it looks at which keys are dirty:
    /// one that sees the new era must find nothing of the outage left
    /// (or it would read the key from a replica still streaming the
    /// replay). Watched from another thread while a large local state is
    /// forgotten.
    #[test]
    fn the_era_moves_only_once_the_local_state_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), journal::JournalConfig::default()).unwrap();
        let o = Outage::new(
            Keyspaces::new(vec![("*".into(), Policy::Durable)]),
            Arc::new(journal),
            Arc::default(),
        )
        .unwrap();
        for i in 0..50_000 {
            let set = a(&["SET", &format!("sess:{i}"), "v"]);
            o.store.apply(0, &set);
            o.mark(0, &set);
        }
        let era = o.era();
        let left = std::thread::scope(|s| {
            let watcher = s.spawn(|| loop {
                if o.forgotten(era) {
                    let (dirty, known) = o.keys.counts();
                    return (dirty, known, o.store.key_count(0));
                }
                std::hint::spin_loop();
            });
            o.forget();
            watcher.join().unwrap()
        });
        assert_eq!(
            left,
            (0, 0, 0),
            "(dirty, known, stored) seen with the new era"
        );
    }

    #[test]
    fn relative_expiries_become_absolute() {
        let now = 1_000_000;
        assert_eq!(
            absolute(&a(&["SET", "k", "v", "EX", "10"]), now),
            a(&["SET", "k", "v", "PXAT", "1010000"])
        );
        assert_eq!(
            absolute(&a(&["SET", "k", "v", "px", "5"]), now),
            a(&["SET", "k", "v", "PXAT", "1000005"])
        );
        assert_eq!(
            absolute(&a(&["SETEX", "k", "2", "v"]), now),
            a(&["SET", "k", "v", "PXAT", "1002000"])
        );
        assert_eq!(
            absolute(&a(&["EXPIRE", "k", "3"]), now),
            a(&["PEXPIREAT", "k", "1003000"])
        );
        assert_eq!(
            absolute(&a(&["GETEX", "k", "EX", "1"]), now),
            a(&["GETEX", "k", "PXAT", "1001000"])
        );
        assert_eq!(
            absolute(&a(&["SET", "k", "EX"]), now),
            a(&["SET", "k", "EX"]),
            "a value named EX is not an option"
        );
        assert_eq!(
            absolute(&a(&["HSET", "h", "f", "v"]), now),
            a(&["HSET", "h", "f", "v"])
        );
    }
}
