//! A live copy of the durable keyspaces, kept as a Redis replica is: a full
//! resync's RDB loaded, then the replication stream applied in Redis's own
//! order ([`upstream::replication`] is the link).
//!
//! Only keys of `durable` keyspaces are kept, in every db. The copy knows
//! absence: while it is complete (a full resync loaded, no load under way,
//! not refused, not over its size), a key it does not hold does not exist
//! in Redis either, as of the last byte of the stream. A key whose state
//! the copy cannot represent (a module type, a command the local store
//! does not run, a command that mixes kept and other keys) is marked
//! unknown until a command replaces it whole. Streams are held like the
//! other types, consumer groups included.
//!
//! The copy never expires keys on its own (its store's clock stands
//! still): Redis sends a `DEL` when one of its keys expires, as it does to
//! every replica. Expiry times travel with the values to whoever reads them
//! ([`Replica::lookup`]).

use std::collections::{HashMap, HashSet};
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::value::Value;
use store::{Clock, Store, StoreConfig};
use tokio::sync::mpsc;
use upstream::replication::{spawn_link, LinkConfig, LinkEvent};

use crate::policy::{Keyspaces, Policy};

/// Events queued between the link and the applier; past this the link
/// stops reading and Redis buffers for us.
const EVENTS_QUEUED: usize = 4096;

/// What the copy says about one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Knowledge {
    /// The key's value and absolute expiry (Unix ms).
    Value(Arc<Value>, Option<u64>),
    /// The key does not exist.
    Absent,
    /// The copy cannot say (not synced, or this key's state is unknown).
    Unknown,
}

/// How the replica is set up.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The link to Redis.
    pub link: LinkConfig,
    /// Largest copy kept (approximate bytes, as `used_memory`); past it
    /// the copy is dropped and the near-cache serves instead.
    pub max_bytes: u64,
    /// `on_data_loss = "restore"`: a Redis that comes back without durable
    /// keys the copy holds gets them back before it is declared Up.
    pub restore: bool,
    /// Keep the `cache` keyspaces too (`[replica] cache_keyspaces`): during
    /// an outage their reads answer from the copy, not only from what the
    /// near-cache happened to read. Never restored: a cache.
    pub cache: bool,
}

/// Where the copy stands, for `/status` and the metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplicaStatus {
    /// `connecting`, `syncing`, `loading`, `streaming`, `lost`, `refused`,
    /// `too-large`.
    pub state: &'static str,
    /// Why, when not streaming.
    pub reason: Option<String>,
    /// Redis's replication ID of the copy.
    pub replid: Option<String>,
    /// Stream offset applied.
    pub offset: u64,
    /// Keys held.
    pub keys: usize,
    /// Approximate bytes held.
    pub bytes: usize,
    /// Keys whose state is unknown.
    pub unknown_keys: usize,
    /// Full resyncs loaded since start.
    pub full_syncs: u64,
    /// Partial resyncs (the stream continued after a broken link).
    pub partial_syncs: u64,
    /// The last full resync: RDB bytes, keys kept, milliseconds to load.
    pub last_full_sync: Option<FullSyncFacts>,
    /// Milliseconds since Redis last sent anything on the link.
    pub last_io_ms_ago: Option<u64>,
    /// Bytes of Redis's replication stream not yet applied, as of the
    /// prober's last `INFO` (`master_repl_offset` minus `offset`).
    pub lag_bytes: Option<u64>,
    /// True while a Redis that came back is checked (and restored) before
    /// it is declared Up.
    pub restoring: bool,
    /// The last restore of a Redis that came back without its data.
    pub last_restore: Option<RestoreFacts>,
}

/// What a restore put back into Redis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreFacts {
    /// When it finished (Unix ms).
    pub at_unix_ms: u64,
    /// Redis's replication ID before and after it came back.
    pub replid_before: Option<String>,
    /// The new one.
    pub replid_after: String,
    /// Durable keys written back: those the copy held that Redis no longer
    /// had, and the diverged ones.
    pub keys: usize,
    /// Of those, keys an outage took from the copy that Redis came back
    /// holding otherwise (a write Redis ran and kept but never streamed,
    /// such as one answered `UNCERTAIN` at the crash): made what the copy
    /// held, deleted where it held none, so the journal replays on the
    /// state it was written on.
    pub diverged: usize,
    /// Their approximate size.
    pub bytes: usize,
    /// Keys Redis refused to take back.
    pub failed: usize,
    /// How long it took.
    pub ms: u64,
}

/// Facts about one full resync.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FullSyncFacts {
    /// Size of the RDB Redis sent.
    pub rdb_bytes: u64,
    /// Keys kept from it.
    pub keys: usize,
    /// Keys in it that were not kept (other keyspaces).
    pub skipped: u64,
    /// Time to load it.
    pub load_ms: u64,
}

/// The copy.
pub struct Replica {
    keyspaces: Keyspaces,
    /// `cache` keyspaces are kept too ([`ReplicaConfig::cache`]).
    cache: bool,
    store: RwLock<Store>,
    unknown: Mutex<HashSet<(u32, Bytes)>>,
    /// Durable keys an outage took from the copy (read, or seeded before a
    /// write) since the last settled check: the journal is written on top
    /// of their values, so a Redis that comes back with other values has
    /// them written back ([`Replica::restore_missing`]).
    /// By database, so a key already recorded is found without a copy.
    consulted: Mutex<HashMap<u32, HashSet<Bytes>>>,
    /// After a restore: the copy from before the resync, which answers
    /// lookups until the stream has brought the restored keys into the
    /// fresh one (stream offset in `Behind::until`).
    behind: RwLock<Option<Behind>>,
    /// A full resync has been loaded and nothing since made the copy
    /// incomplete.
    complete: AtomicBool,
    /// A full resync has been loaded (and not dropped since).
    loaded: AtomicBool,
    status: Mutex<ReplicaStatus>,
    last_io: Mutex<Option<Instant>>,
    offset: AtomicU64,
    max_bytes: u64,
    /// Restore a Redis that came back without the data.
    restore: bool,
    /// Between a broken link and the resync that settles whether Redis
    /// kept its data.
    restoring: AtomicBool,
    /// Where to write a restore.
    link: LinkConfig,
    health: Option<upstream::HealthHandle>,
    on_restore: Mutex<Vec<RestoreHook>>,
    /// Whether this instance may restore (with several Redoubts in front
    /// of one Redis, only the outage writer: the others' copies are stale
    /// by what the writer's clients did since, and would put back keys
    /// they deleted). None: alone, it may.
    may_restore: Mutex<Option<MayRestore>>,
    /// The link's task, ended by [`Replica::stop`].
    link_task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Ends the applying task ([`Replica::stop`]).
    stop: tokio::sync::Notify,
    /// One of several copies: its owner publishes the gauges for all.
    quiet: AtomicBool,
}

/// Asked before a restore: true when this instance may write it.
pub type MayRestore = Arc<dyn Fn() -> bool + Send + Sync>;

/// Called with the facts of each restore (the incident log records it).
type RestoreHook = Box<dyn Fn(&RestoreFacts) + Send + Sync>;

/// How long a Redis that answers may stay unresynced before it is let
/// out of Recovering without the restore check (said loudly).
const RESTORE_CHECK_LIMIT: Duration = Duration::from_secs(60);

fn still_store() -> Store {
    Store::new(StoreConfig {
        clock: Clock::Manual(Arc::new(AtomicU64::new(0))),
        ..StoreConfig::default()
    })
}

impl Replica {
    /// An empty, incomplete copy of `keyspaces`' durable keys; `health`
    /// is held in Recovering while a Redis that came back is checked.
    pub fn new(
        keyspaces: Keyspaces,
        cfg: &ReplicaConfig,
        health: Option<upstream::HealthHandle>,
    ) -> Arc<Replica> {
        let max_bytes = cfg.max_bytes;
        Arc::new(Replica {
            restore: cfg.restore,
            cache: cfg.cache,
            restoring: AtomicBool::new(false),
            link: cfg.link.clone(),
            health,
            on_restore: Mutex::default(),
            may_restore: Mutex::default(),
            keyspaces,
            store: RwLock::new(still_store()),
            unknown: Mutex::default(),
            consulted: Mutex::default(),
            behind: RwLock::new(None),
            complete: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            status: Mutex::new(ReplicaStatus {
                state: "connecting",
                ..ReplicaStatus::default()
            }),
            last_io: Mutex::default(),
            offset: AtomicU64::new(0),
            max_bytes,
            link_task: Mutex::default(),
            stop: tokio::sync::Notify::new(),
            quiet: AtomicBool::new(false),
        })
    }

    /// Starts the link to Redis and the task applying what it sends.
    pub fn spawn(
        keyspaces: Keyspaces,
        cfg: ReplicaConfig,
        health: Option<upstream::HealthHandle>,
    ) -> Arc<Replica> {
        let r = Replica::new(keyspaces, &cfg, health);
        let (tx, rx) = mpsc::channel(EVENTS_QUEUED);
        let link = spawn_link(cfg.link, tx);
        if let Ok(mut t) = r.link_task.lock() {
            *t = Some(link.abort_handle());
        }
        tokio::spawn(r.clone().run(rx));
        let weak = Arc::downgrade(&r);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(r) = weak.upgrade() else { return };
                r.publish_gauges();
            }
        });
        r
    }

    /// Leaves the `redoubt_replica_*` gauges to the owner of several
    /// copies ([`crate::shard_replicas::ShardReplicas`]).
    pub fn quiet_gauges(&self) {
        self.quiet.store(true, Ordering::Release);
    }

    fn publish_gauges(&self) {
        use crate::metrics::*;
        if self.quiet.load(Ordering::Acquire) {
            return;
        }
        let s = self.status();
        metrics::gauge!(REPLICA_KEYS).set(s.keys as f64);
        metrics::gauge!(REPLICA_BYTES).set(s.bytes as f64);
        metrics::gauge!(REPLICA_OFFSET).set(s.offset as f64);
        if let Some(lag) = s.lag_bytes {
            metrics::gauge!(REPLICA_LAG).set(lag as f64);
        }
        if let Some(ms) = s.last_io_ms_ago {
            metrics::gauge!(REPLICA_LAST_IO).set(ms as f64 / 1000.0);
        }
    }

    fn store(&self) -> Store {
        self.store
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Ends the link and the task applying its stream; the copy goes when
    /// the last handle is dropped.
    pub fn stop(&self) {
        if let Some(t) = self.link_task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
        self.stop.notify_one();
    }

    /// True while a Redis that came back is being checked for the durable
    /// keys it lost: they are served from the copy meanwhile, and the
    /// outage's journal waits to be replayed on top of the restore.
    pub fn restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// Restores only while `may` says so (see [`MayRestore`]).
    pub fn restore_only_if(&self, may: MayRestore) {
        if let Ok(mut m) = self.may_restore.lock() {
            *m = Some(may);
        }
    }

    fn may_restore(&self) -> bool {
        self.may_restore
            .lock()
            .map(|m| m.as_ref().is_none_or(|f| f()))
            .unwrap_or(true)
    }

    /// Calls `hook` with the facts of every restore.
    pub fn on_restore(&self, hook: impl Fn(&RestoreFacts) + Send + Sync + 'static) {
        if let Ok(mut h) = self.on_restore.lock() {
            h.push(Box::new(hook));
        }
    }

    fn begin_restore_check(&self) {
        // A loaded copy is the best knowledge of what Redis held, even one
        // whose stream had not started: restoring from it loses less.
        if self.restore
            && self.loaded.load(Ordering::Acquire)
            && !self.restoring.swap(true, Ordering::AcqRel)
        {
            if let Some(h) = &self.health {
                h.hold_restore(true);
            }
        }
    }

    fn settle(&self) {
        if let Ok(mut c) = self.consulted.lock() {
            c.clear();
        }
        if self.restoring.swap(false, Ordering::AcqRel) {
            if let Some(h) = &self.health {
                h.hold_restore(false);
            }
        }
    }

    /// True when the copy can answer for every durable key.
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    /// What the copy knows of `key` in `db`.
    pub fn lookup(&self, db: u32, key: &[u8]) -> Knowledge {
        if !self.is_complete() || !keeps(&self.keyspaces, self.cache, key) {
            return Knowledge::Unknown;
        }
        if let Some(b) = self.behind.read().ok().and_then(|b| b.clone()) {
            if b.unknown.contains(&(db, Bytes::copy_from_slice(key))) {
                return Knowledge::Unknown;
            }
            return match b.store.export(db as usize, key) {
                Some((v, at)) => Knowledge::Value(v, at),
                None => Knowledge::Absent,
            };
        }
        if self.keyspaces.policy(key) == Policy::Durable {
            if let Ok(mut c) = self.consulted.lock() {
                let keys = c.entry(db).or_default();
                if !keys.contains(key) {
                    keys.insert(Bytes::copy_from_slice(key));
                }
            }
        }
        // Usually empty: no key copied just to be looked up.
        if self
            .unknown
            .lock()
            .map(|u| !u.is_empty() && u.contains(&(db, Bytes::copy_from_slice(key))))
            .unwrap_or(true)
        {
            return Knowledge::Unknown;
        }
        match self.store().export(db as usize, key) {
            Some((v, at)) => Knowledge::Value(v, at),
            None => Knowledge::Absent,
        }
    }

    /// Ends the window in which the copy from before a restore answers,
    /// once the stream reached `offset` (or a resync replaced everything).
    fn caught_up(&self, offset: Option<u64>) {
        // Called for every command of the stream: a read lock answers the
        // usual case (no restore window open) without excluding lookups.
        if self.behind.read().is_ok_and(|b| b.is_none()) {
            return;
        }
        if let Ok(mut b) = self.behind.write() {
            if b.as_ref()
                .is_some_and(|b| offset.is_none_or(|o| o >= b.until))
            {
                *b = None;
            }
        }
    }

    /// Where the copy stands.
    pub fn status(&self) -> ReplicaStatus {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let store = self.store();
        s.keys = (0..store.databases()).map(|d| store.key_count(d)).sum();
        s.bytes = store.used_memory();
        s.unknown_keys = self.unknown.lock().map(|u| u.len()).unwrap_or(0);
        s.offset = self.offset.load(Ordering::Relaxed);
        s.restoring = self.restoring();
        s.lag_bytes = self
            .health
            .as_ref()
            .and_then(|h| h.current().facts.master_repl_offset)
            .map(|m| m.saturating_sub(s.offset));
        s.last_io_ms_ago = self
            .last_io
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed().as_millis() as u64));
        s
    }

    fn set_state(&self, state: &'static str, reason: Option<String>) {
        if let Ok(mut s) = self.status.lock() {
            s.state = state;
            s.reason = reason;
        }
        crate::metrics::replica_state(state);
    }

    fn heard(&self) {
        if let Ok(mut t) = self.last_io.lock() {
            *t = Some(Instant::now());
        }
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<LinkEvent>) {
        let mut db: u32 = 0;
        let mut since_check = 0usize;
        // Since when Redis has answered while the restore check waits for
        // a resync.
        let mut answering_since: Option<Instant> = None;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return,
                },
                _ = self.stop.notified() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)), if self.restoring() => {
                    let answering = self
                        .health
                        .as_ref()
                        .is_some_and(|h| h.state() != upstream::State::Down);
                    if !answering {
                        answering_since = None;
                        continue;
                    }
                    let since = *answering_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= RESTORE_CHECK_LIMIT {
                        tracing::error!(
                            "redis has answered for {} s but Redoubt could not resync with it: it is declared up without checking it kept the durable keyspaces; see the replica's state in /status",
                            RESTORE_CHECK_LIMIT.as_secs()
                        );
                        self.settle();
                        answering_since = None;
                    }
                    continue;
                }
            };
            match ev {
                LinkEvent::Syncing => {
                    self.heard();
                    if !self.is_complete() {
                        self.set_state("syncing", None);
                    }
                }
                LinkEvent::FullSync {
                    path,
                    replid,
                    offset,
                    bytes,
                } => {
                    self.heard();
                    // The copy in place keeps answering until the new one
                    // is loaded (and, if Redis lost data, restored).
                    self.set_state("loading", None);
                    let before = self.status().replid;
                    let check = self.restoring() && before.as_deref() != Some(replid.as_str());
                    let keyspaces = self.keyspaces.clone();
                    let cache = self.cache;
                    let started = Instant::now();
                    let loaded =
                        tokio::task::spawn_blocking(move || load_rdb(&path, &keyspaces, cache))
                            .await;
                    let Loaded {
                        store,
                        unknown,
                        kept,
                        skipped,
                    } = match loaded {
                        Ok(Ok(x)) => x,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "the RDB from redis could not be loaded; the replica is off until the next full resync");
                            self.complete.store(false, Ordering::Release);
                            self.loaded.store(false, Ordering::Release);
                            self.set_state("lost", Some(e));
                            continue;
                        }
                        Err(e) => {
                            self.complete.store(false, Ordering::Release);
                            self.loaded.store(false, Ordering::Release);
                            self.set_state("lost", Some(e.to_string()));
                            continue;
                        }
                    };
                    let load_ms = started.elapsed().as_millis() as u64;
                    if check && !self.may_restore() {
                        tracing::info!(
                            replid_before = before.as_deref().unwrap_or("-"),
                            replid_after = %replid,
                            "redis came back with a new history; the Redoubt holding the outage-writer lease checks it for lost durable keys, not this one"
                        );
                    } else if check {
                        // A new history: Redis restarted or failed over.
                        // What it no longer has of the durable keyspaces
                        // is written back before anything else happens.
                        let old = self.store();
                        let old_unknown =
                            self.unknown.lock().map(|u| u.clone()).unwrap_or_default();
                        let (facts, until) = self.restore_missing(&store, before, &replid).await;
                        if let Some(until) = until {
                            // The fresh copy lacks what was just written
                            // back until the stream brings it: the old copy,
                            // which holds it, answers until then.
                            if let Ok(mut b) = self.behind.write() {
                                *b = Some(Behind {
                                    store: old,
                                    unknown: Arc::new(old_unknown),
                                    until,
                                });
                            }
                        }
                        if let Some(f) = facts {
                            if let Ok(mut st) = self.status.lock() {
                                st.last_restore = Some(f.clone());
                            }
                            if let Ok(hooks) = self.on_restore.lock() {
                                for h in hooks.iter() {
                                    h(&f);
                                }
                            }
                        }
                    }
                    if let Ok(mut s) = self.store.write() {
                        *s = store;
                    }
                    if let Ok(mut u) = self.unknown.lock() {
                        *u = unknown;
                    }
                    db = 0;
                    self.offset.store(offset, Ordering::Relaxed);
                    if let Ok(mut s) = self.status.lock() {
                        s.replid = Some(replid);
                        s.full_syncs += 1;
                        s.last_full_sync = Some(FullSyncFacts {
                            rdb_bytes: bytes,
                            keys: kept,
                            skipped,
                            load_ms,
                        });
                    }
                    tracing::info!(
                        rdb_bytes = bytes,
                        keys = kept,
                        skipped,
                        load_ms,
                        "replica: full resync loaded"
                    );
                    if !self.within_size() {
                        self.settle();
                        return;
                    }
                    // The copy answers at once: what was written since the
                    // RDB comes first on the stream, which the link has
                    // Redis start within one fast ACK (`Online`).
                    self.complete.store(true, Ordering::Release);
                    self.loaded.store(true, Ordering::Release);
                    self.set_state("streaming", None);
                    self.settle();
                    answering_since = None;
                }
                LinkEvent::Online { offset } => {
                    self.heard();
                    self.offset.store(offset, Ordering::Relaxed);
                    self.caught_up(Some(offset));
                    if self.loaded.load(Ordering::Acquire) {
                        self.complete.store(true, Ordering::Release);
                        self.set_state("streaming", None);
                    }
                }
                LinkEvent::Continued { replid, offset } => {
                    self.heard();
                    self.offset.store(offset, Ordering::Relaxed);
                    if let Ok(mut s) = self.status.lock() {
                        s.replid = Some(replid);
                        s.partial_syncs += 1;
                    }
                    // The same history continued: nothing was lost.
                    self.settle();
                    answering_since = None;
                }
                LinkEvent::Command { args, offset } => {
                    self.heard();
                    self.apply(&mut db, &args);
                    self.offset.store(offset, Ordering::Relaxed);
                    self.caught_up(Some(offset));
                    since_check += 1;
                    if since_check >= 1024 {
                        since_check = 0;
                        if !self.within_size() {
                            return;
                        }
                    }
                }
                LinkEvent::Lost { why, .. } => {
                    // Whatever comes next (a resync) replaces both copies.
                    self.caught_up(None);
                    // What was received stays the latest word on the kept
                    // keys: Redis cannot have changed them without sending
                    // it, and a resync replaces the copy if it did.
                    self.set_state("lost", Some(why));
                    // Whether Redis kept its data is known only once the
                    // link is back: until then a Redis that answers is
                    // held in Recovering.
                    self.begin_restore_check();
                }
                LinkEvent::Refused(why) => {
                    tracing::warn!(
                        reason = %why,
                        "redis refuses Redoubt as a replica: during an outage durable keys are served from the near-cache only (values read while Redis was up). Grant the user '+psync +replconf' (see `redoubt doctor`) or set [replica] mode = \"off\""
                    );
                    self.complete.store(false, Ordering::Release);
                    self.loaded.store(false, Ordering::Release);
                    self.set_state("refused", Some(why));
                    self.settle();
                    return;
                }
            }
        }
    }

    /// Past `max_bytes` the copy is dropped for good (said once).
    fn within_size(&self) -> bool {
        let used = self.store().used_memory() as u64;
        if used <= self.max_bytes {
            return true;
        }
        self.complete.store(false, Ordering::Release);
        self.loaded.store(false, Ordering::Release);
        if let Ok(mut s) = self.store.write() {
            *s = still_store();
        }
        let why = format!(
            "the durable keyspaces take {used} bytes, more than replica.max_bytes ({}): the copy was dropped; during an outage durable keys are served from the near-cache only. Raise replica.max_bytes",
            self.max_bytes
        );
        tracing::warn!("{why}");
        self.set_state("too-large", Some(why));
        false
    }

    /// Applies one command of the stream to the kept keys.
    fn apply(&self, db: &mut u32, args: &[Bytes]) {
        let Some(first) = args.first() else { return };
        let name = String::from_utf8_lossy(first).to_ascii_lowercase();
        let store = self.store();
        match name.as_str() {
            "select" => {
                if let Some(n) = args.get(1).and_then(|a| std::str::from_utf8(a).ok()) {
                    *db = n.parse().unwrap_or(*db);
                }
                return;
            }
            // Markers and keyless commands that touch no kept key.
            "ping" | "multi" | "exec" | "replconf" | "publish" | "spublish" | "script"
            | "function" => return,
            "flushall" => {
                store.apply(0, &[Bytes::from_static(b"FLUSHALL")]);
                if let Ok(mut u) = self.unknown.lock() {
                    u.clear();
                }
                return;
            }
            "flushdb" => {
                store.apply(*db as usize, &[Bytes::from_static(b"FLUSHDB")]);
                let d = *db;
                if let Ok(mut u) = self.unknown.lock() {
                    u.retain(|(k, _)| *k != d);
                }
                return;
            }
            "swapdb" => {
                let reply = store.apply(*db as usize, args);
                let parse = |i: usize| {
                    args.get(i)
                        .and_then(|a| std::str::from_utf8(a).ok())
                        .and_then(|s| s.parse::<u32>().ok())
                };
                if let (false, Some(a), Some(b)) = (reply.is_error(), parse(1), parse(2)) {
                    if let Ok(mut u) = self.unknown.lock() {
                        *u = u
                            .drain()
                            .map(|(d, k)| match d {
                                d if d == a => (b, k),
                                d if d == b => (a, k),
                                d => (d, k),
                            })
                            .collect();
                    }
                } else if reply.is_error() {
                    self.all_unknown("SWAPDB could not be applied");
                }
                return;
            }
            _ => {}
        }
        let keys: Vec<Bytes> = resp::lookup(args)
            .map(|s| {
                s.key_indices(args)
                    .into_iter()
                    .map(|i| args[i].clone())
                    .collect()
            })
            .unwrap_or_default();
        let kept: Vec<&Bytes> = keys
            .iter()
            .filter(|k| keeps(&self.keyspaces, self.cache, k))
            .collect();
        if kept.is_empty() {
            return;
        }
        if kept.len() < keys.len() {
            // Part of the command's input or output is not kept here: the
            // kept keys' new state cannot be computed.
            // (COPY ... DB's destination is in the other db.)
            let to = copy_db(&name, args);
            for k in kept {
                let d = match to {
                    Some(to) if args.get(2) == Some(k) => to,
                    _ => *db,
                };
                self.mark_unknown(&store, d, std::slice::from_ref(k));
            }
            return;
        }
        if self.reads_unknown(&store, *db, &name, args) {
            return;
        }
        let reply = store.apply(*db as usize, args);
        if reply.is_error() {
            // Redis ran it; we could not: the copy no longer knows.
            self.mark_unknown(&store, *db, &keys);
            return;
        }
        if overwrites(&name, args) {
            if let Ok(mut u) = self.unknown.lock() {
                for k in &keys {
                    u.remove(&(*db, k.clone()));
                }
            }
        }
    }

    /// A command that involves an unknown key (here, or in the db a MOVE
    /// or COPY ... DB goes to) cannot be computed: every key it writes
    /// becomes unknown, in both dbs. Whole-value overwrites are exempt (a
    /// `SET ... KEEPTTL` is not one: it keeps an expiry the copy lacks).
    /// True when it was handled so.
    fn reads_unknown(&self, store: &Store, db: u32, name: &str, args: &[Bytes]) -> bool {
        if overwrites(name, args) {
            return false;
        }
        let Some(spec) = resp::lookup(args) else {
            return false;
        };
        let positions = spec.key_positions(args);
        let arg_db = |i: usize| {
            args.get(i)
                .and_then(|a| std::str::from_utf8(a).ok())
                .and_then(|s| s.parse::<u32>().ok())
        };
        // The key written in another db, if any.
        let other = match name {
            "move" => arg_db(2).zip(args.get(1).cloned()),
            "copy" => copy_db(name, args).zip(args.get(2).cloned()),
            _ => None,
        };
        let involved = {
            let Ok(u) = self.unknown.lock() else {
                return false;
            };
            positions
                .iter()
                .any(|(i, _)| u.contains(&(db, args[*i].clone())))
                || other
                    .as_ref()
                    .is_some_and(|(d, k)| u.contains(&(*d, k.clone())))
        };
        if !involved {
            return false;
        }
        // COPY ... DB writes its destination in the other db only.
        let written: Vec<Bytes> = positions
            .iter()
            .filter(|(i, f)| {
                f & resp::command::K_RO == 0 && !(name == "copy" && *i == 2 && other.is_some())
            })
            .map(|(i, _)| args[*i].clone())
            .collect();
        self.mark_unknown(store, db, &written);
        if let Some((d, k)) = other {
            self.mark_unknown(store, d, &[k]);
        }
        true
    }

    fn mark_unknown(&self, store: &Store, db: u32, keys: &[Bytes]) {
        if let Ok(mut u) = self.unknown.lock() {
            for k in keys {
                store.apply(db as usize, &[Bytes::from_static(b"DEL"), k.clone()]);
                u.insert((db, k.clone()));
            }
        }
    }

    fn all_unknown(&self, why: &str) {
        tracing::warn!("replica: {why}; the copy is incomplete until the next full resync");
        self.complete.store(false, Ordering::Release);
        self.loaded.store(false, Ordering::Release);
        self.set_state("lost", Some(why.to_string()));
    }
}

/// The db a `COPY ... DB n` writes its destination in.
fn copy_db(name: &str, args: &[Bytes]) -> Option<u32> {
    if name != "copy" {
        return None;
    }
    let i = args
        .iter()
        .skip(3)
        .position(|a| a.eq_ignore_ascii_case(b"db"))?;
    std::str::from_utf8(args.get(i + 4)?).ok()?.parse().ok()
}

/// True when `args` replaces its keys whole, whatever they held: a `SET`
/// only without NX/XX (which depend on whether the key exists) and
/// KEEPTTL (which keeps its expiry).
fn overwrites(name: &str, args: &[Bytes]) -> bool {
    crate::outage::OVERWRITES.contains(&name)
        && !(name == "set"
            && args.iter().skip(3).any(|a| {
                a.eq_ignore_ascii_case(b"nx")
                    || a.eq_ignore_ascii_case(b"xx")
                    || a.eq_ignore_ascii_case(b"keepttl")
            }))
}

impl Replica {
    /// Writes back every durable key the copy holds (unexpired, known) that
    /// `fresh` (what Redis has now) lacks, and makes every key an outage
    /// took from the copy (`consulted`) what the copy held. Other keys
    /// Redis has are left as they are. Returns the facts, or `None` when
    /// nothing differed.
    async fn restore_missing(
        &self,
        fresh: &Store,
        before: Option<String>,
        after: &str,
    ) -> (Option<RestoreFacts>, Option<u64>) {
        let started = Instant::now();
        let old = self.store();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let unknown = self.unknown.lock().map(|u| u.clone()).unwrap_or_default();
        let consulted = self
            .consulted
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        // Both copies' clocks are frozen: what has expired is judged here.
        let live = |got: Option<(Arc<Value>, Option<u64>)>| {
            got.filter(|(_, at)| at.is_none_or(|t| t > now))
        };
        let mut missing = Vec::new();
        for db in 0..old.databases() {
            for (key, value, at) in old.entries(db) {
                // A cache keyspace kept in the copy is not restored.
                if at.is_some_and(|t| t <= now)
                    || self.keyspaces.policy(&key) != Policy::Durable
                    || unknown.contains(&(db as u32, key.clone()))
                    || live(fresh.export(db, &key)).is_some()
                {
                    continue;
                }
                missing.push((db, key, Some(value), at));
            }
        }
        // A key the outage read or wrote on top of must be what the copy
        // held, or the journal replays onto another state: Redis can hold a
        // write it ran and persisted but never streamed (killed between its
        // fsync and the writes to its sockets), one whose client was told
        // `UNCERTAIN` and may have retried it here. The copy wins, as a
        // replica promoted in its place would.
        let mut diverged = 0;
        let consulted = consulted
            .into_iter()
            .flat_map(|(db, keys)| keys.into_iter().map(move |k| (db, k)));
        for (db, key) in consulted {
            if self.keyspaces.policy(&key) != Policy::Durable
                || unknown.contains(&(db, key.clone()))
            {
                continue;
            }
            let d = db as usize;
            let (was, is) = (live(old.export(d, &key)), live(fresh.export(d, &key)));
            match (was, is) {
                (Some(w), Some(i)) if w.1 != i.1 || w.0 != i.0 => {
                    missing.push((d, key, Some(w.0), w.1));
                }
                (None, Some(_)) => missing.push((d, key, None, None)),
                _ => continue,
            }
            diverged += 1;
        }
        if missing.is_empty() {
            tracing::info!(
                replid_before = before.as_deref().unwrap_or("-"),
                replid_after = after,
                "redis came back with a new history and every durable key: nothing to restore"
            );
            return (None, None);
        }
        tracing::warn!(
            keys = missing.len(),
            first = %missing
                .iter()
                .take(5)
                .map(|(db, k, _, _)| format!("{db}:{}", String::from_utf8_lossy(k)))
                .collect::<Vec<_>>()
                .join(" "),
            replid_before = before.as_deref().unwrap_or("-"),
            replid_after = after,
            diverged,
            "redis came back without durable keys the replica holds, or with other values for keys the outage used: restoring them before it is declared up"
        );
        // What is written back reaches the fresh copy through the stream,
        // which Redis starts right after (never imported here as well: Redis
        // does not replicate the DEL of a key it lacks, so the stream's
        // RPUSH would add a list's elements a second time).
        let (done, bytes, until) = restore_into_redis(&self.link, &missing).await;
        let written = done.iter().filter(|ok| **ok).count();
        let failed = done.len() - written;
        let facts = RestoreFacts {
            at_unix_ms: now,
            replid_before: before,
            replid_after: after.to_string(),
            keys: written,
            diverged,
            bytes,
            failed,
            ms: started.elapsed().as_millis() as u64,
        };
        if failed > 0 {
            tracing::error!(?facts, "some durable keys could not be restored into redis");
        } else {
            tracing::info!(?facts, "durable keys restored into redis");
        }
        (Some(facts), until)
    }
}

/// A key to write back: database, key, value (`None`: delete it), expiry.
type WriteBack = (usize, Bytes, Option<Arc<Value>>, Option<u64>);

/// Elements per command when a collection is written back.
const RESTORE_CHUNK: usize = 512;
/// Keys per pipelined round trip.
const RESTORE_BATCH: usize = 256;

/// The commands that recreate `key` as `value` (expiring at `at`), or
/// delete it when `None`, in one transaction so no client sees half of it.
fn recreate(key: &Bytes, value: Option<&Value>, at: Option<u64>) -> Vec<Vec<Bytes>> {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    let mut cmds = vec![vec![b("MULTI")], vec![b("DEL"), key.clone()]];
    let mut chunked = |name: &'static str, items: Vec<Bytes>, per: usize| {
        for chunk in items.chunks(RESTORE_CHUNK * per) {
            let mut c = vec![b(name), key.clone()];
            c.extend(chunk.iter().cloned());
            cmds.push(c);
        }
    };
    match value {
        None => {}
        Some(Value::Str(v)) => chunked("SET", vec![v.clone()], 1),
        Some(Value::List(l)) => chunked("RPUSH", l.iter().cloned().collect(), 1),
        Some(Value::Set(m)) => chunked("SADD", m.iter().cloned().collect(), 1),
        Some(Value::Hash(h)) => chunked(
            "HSET",
            h.iter().flat_map(|(f, v)| [f.clone(), v.clone()]).collect(),
            2,
        ),
        Some(Value::ZSet(z)) => chunked(
            "ZADD",
            z.iter()
                .flat_map(|(m, s)| [Bytes::from(store::format_score(s)), m.clone()])
                .collect(),
            2,
        ),
        Some(Value::Stream(s)) => cmds.extend(s.rebuild_commands(key)),
    }
    if let Some(t) = at {
        cmds.push(vec![
            b("PEXPIREAT"),
            key.clone(),
            Bytes::from(t.to_string()),
        ]);
    }
    cmds.push(vec![b("EXEC")]);
    cmds
}

/// Writes `keys` into Redis, pipelined. Returns, per key, whether Redis
/// took it, and the bytes written.
/// Writes `keys` back; returns which succeeded, the bytes written, and
/// Redis's replication offset after the last of them (`None` if it could
/// not be read: the fresh copy then answers at once).
async fn restore_into_redis(
    link: &LinkConfig,
    keys: &[WriteBack],
) -> (Vec<bool>, usize, Option<u64>) {
    let mut hs = link.handshake.clone();
    hs.name = Some("redoubt-restore".into());
    let conn = match upstream::Conn::connect(&link.addr, &hs, link.connect_timeout).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect to restore the durable keys");
            return (vec![false; keys.len()], 0, None);
        }
    };
    let mut done = Vec::with_capacity(keys.len());
    let mut bytes = 0;
    let mut db = usize::MAX;
    for batch in keys.chunks(RESTORE_BATCH) {
        let mut raw = bytes::BytesMut::new();
        let mut count = 0;
        // Per key: where its EXEC reply is.
        let mut execs = Vec::with_capacity(batch.len());
        for (d, key, value, at) in batch {
            if *d != db {
                resp::frame::encode_command(
                    &mut raw,
                    &[b"SELECT".as_slice(), d.to_string().as_bytes()],
                );
                count += 1;
                db = *d;
            }
            for c in recreate(key, value.as_deref(), *at) {
                resp::frame::encode_command(&mut raw, &c);
                count += 1;
            }
            execs.push(count - 1);
            bytes += key.len() + value.as_ref().map_or(0, |v| v.approx_size());
        }
        let reply =
            match tokio::time::timeout(Duration::from_secs(30), conn.send(raw.freeze(), count))
                .await
            {
                Ok(Ok(r)) if r.received == count => r,
                _ => {
                    done.resize(done.len() + batch.len(), false);
                    continue;
                }
            };
        let mut frames = Vec::with_capacity(count);
        let mut rest = &reply.data[..];
        while let Ok(Some((f, n))) = resp::parse_frame(rest, &resp::Limits::upstream()) {
            frames.push(f);
            rest = &rest[n..];
        }
        for i in execs {
            done.push(matches!(
                frames.get(i),
                Some(resp::Frame::Array(items)) if !items.iter().any(|f| f.is_error())
            ));
        }
    }
    // Asked on the same connection, so it counts every write above.
    let until = match conn
        .call(&["INFO", "replication"], Duration::from_secs(5))
        .await
    {
        Ok(f) => f.as_bytes().and_then(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .find_map(|l| l.trim().strip_prefix("master_repl_offset:")?.parse().ok())
        }),
        Err(_) => None,
    };
    conn.close();
    (done, bytes, until)
}

/// The copy from before a restore, answering until `until`.
#[derive(Clone)]
struct Behind {
    store: Store,
    unknown: Arc<HashSet<(u32, Bytes)>>,
    until: u64,
}

/// A freshly loaded copy.
struct Loaded {
    store: Store,
    /// Kept keys whose state cannot be held (module types).
    unknown: HashSet<(u32, Bytes)>,
    kept: usize,
    skipped: u64,
}

/// Whether the copy keeps `key`: durable keyspaces, and `cache` ones when
/// configured.
fn keeps(keyspaces: &Keyspaces, cache: bool, key: &[u8]) -> bool {
    match keyspaces.policy(key) {
        Policy::Durable => true,
        Policy::Cache => cache,
        Policy::FailFast => false,
    }
}

/// Loads the kept keys of an RDB into a fresh copy.
fn load_rdb(path: &std::path::Path, keyspaces: &Keyspaces, cache: bool) -> Result<Loaded, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the RDB at {}: {e}", path.display()))?;
    let mut reader =
        rdb::Reader::new(BufReader::with_capacity(1 << 20, file)).map_err(|e| e.to_string())?;
    let store = still_store();
    let mut unknown = HashSet::new();
    let (mut kept, mut skipped) = (0usize, 0u64);
    while let Some(rec) = reader.next_record().map_err(|e| e.to_string())? {
        if !keeps(keyspaces, cache, &rec.key) {
            skipped += 1;
            continue;
        }
        let at = rec.expire_at_ms.map(|t| t.max(0) as u64);
        let Some(value) = store::dump::from_rdb(rec.value) else {
            unknown.insert((rec.db, rec.key));
            continue;
        };
        store.import(rec.db as usize, rec.key, Arc::new(value), at);
        kept += 1;
    }
    Ok(Loaded {
        store,
        unknown,
        kept,
        skipped,
    })
}

/// The link's settings for this Redoubt.
pub fn link_config(
    url: &upstream::UpstreamUrl,
    listening_port: u16,
    data_dir: &std::path::Path,
    max_bytes: u64,
) -> LinkConfig {
    LinkConfig {
        addr: url.endpoint(),
        handshake: url.control_handshake(2, "redoubt-replica"),
        listening_port,
        rdb_path: data_dir.join("replica").join("sync.rdb"),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(30),
        // The RDB holds every key, kept or not; bound it well above the copy.
        max_rdb_bytes: max_bytes.saturating_mul(16).max(1 << 30),
    }
}

/// Path of a full resync's RDB under `data_dir` (for cleanup and tests).
pub fn rdb_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("replica").join("sync.rdb")
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::RedisServer;

    /// A reply as flat tokens, arrays bracketed: the same text for
    /// Redis's reply and the store's.
    fn tokens_redis(v: &redis::Value, out: &mut Vec<String>) {
        match v {
            redis::Value::Nil => out.push("nil".into()),
            redis::Value::Int(i) => out.push(format!("i:{i}")),
            redis::Value::BulkString(b) => out.push(format!("b:{}", String::from_utf8_lossy(b))),
            redis::Value::SimpleString(s) => out.push(format!("s:{s}")),
            redis::Value::Okay => out.push("s:OK".into()),
            redis::Value::Array(items) => {
                out.push("[".into());
                items.iter().for_each(|i| tokens_redis(i, out));
                out.push("]".into());
            }
            other => out.push(format!("?{other:?}")),
        }
    }

    fn tokens_frame(f: &resp::Frame, out: &mut Vec<String>) {
        use resp::Frame;
        match f {
            Frame::NullBulk | Frame::NullArray | Frame::Null => out.push("nil".into()),
            Frame::Integer(i) => out.push(format!("i:{i}")),
            Frame::Bulk(b) => out.push(format!("b:{}", String::from_utf8_lossy(b))),
            Frame::Simple(s) => out.push(format!("s:{}", String::from_utf8_lossy(s))),
            Frame::Array(items) => {
                out.push("[".into());
                items.iter().for_each(|i| tokens_frame(i, out));
                out.push("]".into());
            }
            other => out.push(format!("?{other:?}")),
        }
    }

    /// Redis's radix tree shape is not modelled: its node count is masked.
    fn masked(mut t: Vec<String>) -> Vec<String> {
        for i in 1..t.len() {
            if t[i - 1] == "b:radix-tree-nodes" {
                t[i] = "i:*".into();
            }
        }
        t
    }

    #[tokio::test]
    async fn an_rdb_stream_loads_with_its_groups_and_pending_entries() {
        let server = RedisServer::new();
        let client = redis::Client::open(server.url()).expect("client");
        let mut c = client.get_connection().expect("connect");
        let script: &[&[&str]] = &[
            &["XADD", "d:s", "1-1", "a", "1"],
            &["XADD", "d:s", "2-1", "b", "2", "c", "3"],
            &["XADD", "d:s", "3-1", "a", "4"],
            &["XADD", "d:s", "4-1", "a", "5"],
            &["XGROUP", "CREATE", "d:s", "g", "0"],
            &["XGROUP", "CREATE", "d:s", "h", "$"],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "alice",
                "COUNT",
                "2",
                "STREAMS",
                "d:s",
                ">",
            ],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "bob",
                "COUNT",
                "1",
                "STREAMS",
                "d:s",
                ">",
            ],
            &["XGROUP", "CREATECONSUMER", "d:s", "g", "carol"],
            &["XDEL", "d:s", "2-1"],
            &["XADD", "d:empty", "MAXLEN", "0", "7-7", "x", "y"],
            &["SAVE"],
        ];
        for cmd in script {
            let mut q = redis::cmd(cmd[0]);
            for a in &cmd[1..] {
                q.arg(*a);
            }
            let _: redis::Value = q.query(&mut c).expect("setup command");
        }
        let keyspaces = Keyspaces::new(vec![("d:*".into(), Policy::Durable)]);
        let loaded = load_rdb(&server.dir().join("dump.rdb"), &keyspaces, false).expect("load");
        assert!(loaded.unknown.is_empty(), "{:?}", loaded.unknown);
        let store = loaded.store;
        let mut sess = store.session();
        for q in [
            "XINFO STREAM d:s FULL",
            "XINFO STREAM d:empty FULL",
            "XINFO GROUPS d:s",
            "XPENDING d:s g",
            "XRANGE d:s - +",
        ] {
            let args: Vec<&str> = q.split(' ').collect();
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            let theirs: redis::Value = cmd.query(&mut c).expect("query");
            let ours = store
                .execute(
                    &mut sess,
                    args.iter()
                        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                        .collect(),
                )
                .await
                .reply;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            tokens_redis(&theirs, &mut a);
            tokens_frame(&ours, &mut b);
            assert_eq!(masked(a), masked(b), "{q}");
        }
    }
}
