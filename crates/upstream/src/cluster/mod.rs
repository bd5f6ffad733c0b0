//! A `redis+cluster://` upstream: Redis Cluster shown to clients as one
//! Redis.
//!
//! [`Cluster`] holds the slot map, learnt from any node that answers
//! (`CLUSTER SHARDS`, or `CLUSTER SLOTS` from a Redis before 7.0), asked
//! again on a timer and whenever a node redirects a command. A [`Conn`]
//! to a cluster endpoint is a router ([`router`]): it takes the session's
//! batches like any connection, sends each command to its slot's primary
//! on connections of its own, follows `MOVED` and `ASK`, retries
//! `TRYAGAIN` and `CLUSTERDOWN`, splits the multi-key commands Redis
//! refuses across slots and merges their replies, and hands the batch's
//! replies back in order. Which node a keyless command goes to is the
//! table in the README ("Redis Cluster").
//!
//! [`Conn`]: crate::Conn

mod merge;
pub(crate) mod router;
pub mod slots;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resp::Frame;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::conn::{Conn, Credentials, Handshake};
use crate::endpoint::Endpoint;
pub use slots::{key_slot, SlotMap, SLOTS};

/// How often the slot map is asked again when nothing redirected us.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often while a node is unreachable or a slot unserved: the slots of
/// a failed primary are served locally (durable keyspaces) and nothing
/// redirects Redoubt to the replica that takes over, so the map is asked
/// for until it names one.
pub const REFRESH_WHILE_DOWN: Duration = Duration::from_millis(250);
/// A refresh asked for within this long of the last one is that one.
const REFRESH_COALESCE: Duration = Duration::from_millis(100);
/// How long one node may take to give the map.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// Failovers kept for `/status`.
const FAILOVERS_KEPT: usize = 20;

/// Slots whose primary Redoubt cannot reach now, or that no primary
/// serves.
pub const SLOTS_UNREACHABLE: &str = "redoubt_cluster_slots_unreachable";
/// Primaries in the slot map.
pub const PRIMARIES: &str = "redoubt_cluster_primaries";
/// Failovers seen: a replica took over its primary's slots.
pub const FAILOVERS_TOTAL: &str = "redoubt_cluster_failovers_total";

/// What `/status` shows of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The nodes named in the URL.
    pub seeds: Vec<String>,
    /// Each primary and what it serves.
    pub shards: Vec<ShardStatus>,
    /// Slots no primary serves.
    pub unserved_slots: usize,
    /// Why the last refresh of the map failed, if it did.
    pub error: Option<String>,
    /// When the map was last learnt (Unix ms).
    pub refreshed_unix_ms: Option<u64>,
    /// The last failovers, oldest first.
    pub failovers: Vec<ClusterFailover>,
}

/// One primary, its replicas and its slots.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// `host:port`.
    pub primary: String,
    /// Its replicas.
    pub replicas: Vec<String>,
    /// Slot ranges, `[first, last]`.
    pub slots: Vec<(u16, u16)>,
    /// How many slots.
    pub slot_count: usize,
    /// False while Redoubt's last connect to it failed.
    pub reachable: bool,
    /// Since when it is not reached (Unix ms).
    pub down_since_unix_ms: Option<u64>,
    /// Why not.
    pub error: Option<String>,
}

/// A replica took over its primary's slots.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterFailover {
    /// When Redoubt learnt it (Unix ms).
    pub at_unix_ms: u64,
    /// The old primary.
    pub from: String,
    /// The promoted replica.
    pub to: String,
    /// Slots that moved with it.
    pub slots: usize,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Resolves when `reach` (from [`Cluster::reach_changed`]) changes; never
/// without one, so a select may always include it.
pub async fn reach_news(reach: Option<&mut watch::Receiver<u64>>) {
    if let Some(r) = reach {
        if r.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// The cluster's nodes as far as Redoubt knows them.
pub struct Cluster {
    seeds: Vec<String>,
    auth: Option<Credentials>,
    map: RwLock<Arc<SlotMap>>,
    /// Bumped after each refresh that succeeded.
    version: watch::Sender<u64>,
    /// Bumped whenever what is reachable may have changed: a node failed
    /// or was reached, or a new map was taken.
    reach: watch::Sender<u64>,
    /// One refresh at a time; holds when the last one finished.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    timer: Mutex<bool>,
    /// Nodes a router could not reach: since when, and why.
    down: Mutex<HashMap<String, (SystemTime, String)>>,
    /// True while `down` names a primary of the map or a slot is
    /// unserved: the one atomic read the data path makes when all is well.
    degraded: std::sync::atomic::AtomicBool,
    refreshed: Mutex<Option<SystemTime>>,
    failovers: Mutex<VecDeque<ClusterFailover>>,
    /// Client ids the routers gave out (`CLIENT ID`): where each one's
    /// last command went, as (node, that connection's id there).
    blockers: Mutex<HashMap<i64, Weak<NodeAndId>>>,
    next_id: std::sync::atomic::AtomicI64,
}

/// A node and a client id there.
pub(crate) type NodeAndId = Mutex<Option<(String, i64)>>;

/// Where a router's last command went: the node and its client id there.
pub(crate) type LastNode = Arc<NodeAndId>;

/// Ids routers answer `CLIENT ID` with start here, far above any one
/// node's own, so they are never taken for one.
const ROUTER_IDS: i64 = 1 << 48;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cluster({})", self.seeds.join(","))
    }
}

impl PartialEq for Cluster {
    fn eq(&self, other: &Self) -> bool {
        self.seeds == other.seeds && self.auth == other.auth
    }
}

impl Eq for Cluster {}

impl Cluster {
    /// A cluster reached first through `seeds` (`host:port`), logging in
    /// with `auth` to read the slot map.
    pub fn new(seeds: Vec<String>, auth: Option<Credentials>) -> Arc<Cluster> {
        Arc::new(Cluster {
            seeds,
            auth,
            map: RwLock::new(Arc::new(SlotMap::default())),
            version: watch::channel(0).0,
            reach: watch::channel(0).0,
            refreshing: tokio::sync::Mutex::new(None),
            last_error: Mutex::new(None),
            timer: Mutex::new(false),
            down: Mutex::new(HashMap::new()),
            degraded: std::sync::atomic::AtomicBool::new(false),
            refreshed: Mutex::new(None),
            failovers: Mutex::new(VecDeque::new()),
            blockers: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicI64::new(ROUTER_IDS),
        })
    }

    /// A client id for a router: `CLIENT UNBLOCK` with it reaches the node
    /// and connection `last` names.
    pub(crate) fn register_blocker(&self, last: &LastNode) -> i64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut b = lock(&self.blockers);
        b.retain(|_, w| w.strong_count() > 0);
        b.insert(id, Arc::downgrade(last));
        id
    }

    /// The node and client id there that router id `id` last used.
    pub(crate) fn blocker(&self, id: i64) -> Option<(String, i64)> {
        let last = lock(&self.blockers).get(&id)?.upgrade()?;
        let l = lock(&last).clone();
        l
    }

    /// A router could not connect to `addr`.
    pub(crate) fn node_failed(&self, addr: &str, why: &str) {
        let mut down = lock(&self.down);
        down.entry(addr.to_string())
            .or_insert_with(|| (SystemTime::now(), String::new()))
            .1 = why.to_string();
        drop(down);
        self.publish_metrics(&self.map());
    }

    /// A router connected to `addr`.
    pub(crate) fn node_reached(&self, addr: &str) {
        if lock(&self.down).remove(addr).is_some() {
            self.publish_metrics(&self.map());
        }
    }

    /// True when a primary Redoubt cannot reach serves `slot`, or none
    /// does: the slot is in an outage of its own while the rest of the
    /// cluster answers.
    pub fn slot_unreachable(&self, slot: u16) -> bool {
        if !self.degraded.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        match self.map().node(slot) {
            None => true,
            Some(addr) => lock(&self.down).contains_key(addr),
        }
    }

    /// Changes whenever [`Cluster::slot_unreachable`] may answer
    /// differently: what waits for a shard to come back awaits this.
    pub fn reach_changed(&self) -> watch::Receiver<u64> {
        self.reach.subscribe()
    }

    /// True when some slot is unreachable now ([`Cluster::slot_unreachable`]).
    pub fn degraded(&self) -> bool {
        self.degraded.load(std::sync::atomic::Ordering::Acquire)
    }

    fn publish_metrics(&self, m: &SlotMap) {
        let down = lock(&self.down);
        let degraded = m.unserved() > 0 || m.primaries().iter().any(|p| down.contains_key(p));
        self.degraded
            .store(degraded, std::sync::atomic::Ordering::Release);
        let unreachable: usize = m
            .primaries()
            .iter()
            .filter(|p| down.contains_key(*p))
            .map(|p| {
                m.ranges_of(p)
                    .iter()
                    .map(|(a, b)| (b - a) as usize + 1)
                    .sum::<usize>()
            })
            .sum();
        metrics::gauge!(SLOTS_UNREACHABLE).set((unreachable + m.unserved()) as f64);
        metrics::gauge!(PRIMARIES).set(m.primaries().len() as f64);
        drop(down);
        self.reach.send_modify(|v| *v += 1);
    }

    /// What `/status` shows.
    pub fn status(&self) -> ClusterStatus {
        let m = self.map();
        let down = lock(&self.down);
        let shards = m
            .primaries()
            .iter()
            .map(|p| {
                let slots = m.ranges_of(p);
                let d = down.get(p);
                ShardStatus {
                    primary: p.clone(),
                    replicas: m.replicas_of(p).to_vec(),
                    slot_count: slots.iter().map(|(a, b)| (b - a) as usize + 1).sum(),
                    slots,
                    reachable: d.is_none(),
                    down_since_unix_ms: d.map(|(t, _)| unix_ms(*t)),
                    error: d.map(|(_, why)| why.clone()),
                }
            })
            .collect();
        ClusterStatus {
            seeds: self.seeds.clone(),
            shards,
            unserved_slots: m.unserved(),
            error: self.last_error(),
            refreshed_unix_ms: lock(&self.refreshed).map(unix_ms),
            failovers: lock(&self.failovers).iter().cloned().collect(),
        }
    }

    /// Failovers between `old` and `new`: a primary that serves nothing
    /// now and whose slots its replica serves.
    fn note_failovers(&self, old: &SlotMap, new: &SlotMap) {
        for p in old.primaries() {
            if !new.ranges_of(p).is_empty() {
                continue;
            }
            let mut moved: HashMap<&str, usize> = HashMap::new();
            for (a, b) in old.ranges_of(p) {
                for slot in a..=b {
                    if let Some(to) = new.node(slot) {
                        *moved.entry(to).or_default() += 1;
                    }
                }
            }
            for (to, slots) in moved {
                if !old.replicas_of(p).iter().any(|r| r == to) {
                    continue;
                }
                tracing::warn!(from = %p, to, slots, "cluster failover: a replica took over its primary's slots");
                metrics::counter!(FAILOVERS_TOTAL).increment(1);
                let mut f = lock(&self.failovers);
                if f.len() == FAILOVERS_KEPT {
                    f.pop_front();
                }
                f.push_back(ClusterFailover {
                    at_unix_ms: unix_ms(SystemTime::now()),
                    from: p.clone(),
                    to: to.to_string(),
                    slots,
                });
            }
        }
    }

    /// The nodes named in the URL.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// The slot map as last learnt (empty before the first refresh).
    pub fn map(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the last refresh failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where a command with no key goes: the primary of slot 0's range
    /// (the first in the map), else the first seed.
    pub fn default_node(&self) -> String {
        self.map()
            .primaries()
            .first()
            .cloned()
            .unwrap_or_else(|| self.seeds.first().cloned().unwrap_or_default())
    }

    /// A `MOVED` redirect: `slot` is `addr`'s now. The map is patched at
    /// once and learnt again in the background (a redirect usually means
    /// more slots moved).
    pub fn moved(self: &Arc<Self>, slot: u16, addr: &str) {
        {
            let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
            if m.node(slot) != Some(addr) {
                *m = Arc::new(m.with_moved(slot, addr));
            }
        }
        self.refresh_soon();
    }

    /// Learns the map again in the background.
    pub fn refresh_soon(self: &Arc<Self>) {
        let c = self.clone();
        tokio::spawn(async move {
            let _ = c.refresh().await;
        });
    }

    /// Learns the slot map from the first node that gives it: the known
    /// primaries, then their replicas, then the seeds. Calls that wait on
    /// a refresh running already share its result.
    pub async fn refresh(self: &Arc<Self>) -> Result<Arc<SlotMap>, String> {
        let asked_at = Instant::now();
        let mut last = self.refreshing.lock().await;
        if last.is_some_and(|t| t + REFRESH_COALESCE > asked_at) {
            return Ok(self.map());
        }
        self.start_timer();
        let known = self.map();
        let mut candidates: Vec<String> = known.primaries().to_vec();
        for p in known.primaries() {
            candidates.extend(known.replicas_of(p).iter().cloned());
        }
        candidates.extend(self.seeds.iter().cloned());
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|c| seen.insert(c.clone()));
        let mut errors = Vec::new();
        for addr in candidates {
            match self.ask(&addr).await {
                Ok(m) if m.primaries().is_empty() => {
                    errors.push(format!("{addr}: serves no slots (not a cluster yet?)"))
                }
                Ok(m) => {
                    let old = self.map();
                    self.note_failovers(&old, &m);
                    *lock(&self.refreshed) = Some(SystemTime::now());
                    if *old != m {
                        tracing::info!(
                            from = %addr,
                            primaries = %m.primaries().join(","),
                            unserved = m.unserved(),
                            "cluster slot map changed"
                        );
                    }
                    let m = Arc::new(m);
                    *self.map.write().unwrap_or_else(|e| e.into_inner()) = m.clone();
                    // After the swap: whoever `reach` wakes reads this map.
                    self.publish_metrics(&m);
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    *last = Some(Instant::now());
                    self.version.send_modify(|v| *v += 1);
                    return Ok(m);
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        let why = format!("no cluster node gave the slot map ({})", errors.join("; "));
        tracing::warn!(%why, "cluster slot map not refreshed");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        *last = Some(Instant::now());
        Err(why)
    }

    /// Waits until a refresh after this call succeeded, at most `timeout`.
    pub async fn refreshed(self: &Arc<Self>, timeout: Duration) {
        let mut rx = self.version.subscribe();
        rx.mark_unchanged();
        self.refresh_soon();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// The handshake of the connections that read the map.
    fn control(&self) -> Handshake {
        Handshake {
            auth: self.auth.clone(),
            db: 0,
            proto: 2,
            name: Some("redoubt-cluster".into()),
        }
    }

    async fn ask(&self, addr: &str) -> Result<SlotMap, String> {
        let conn = Conn::connect_node(&Endpoint::plain(addr), &self.control(), ASK_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let shards = conn
            .call(&["CLUSTER", "SHARDS"], ASK_TIMEOUT)
            .await
            .map_err(|e| e.to_string());
        let m = match shards {
            Ok(f @ Frame::Array(_)) => SlotMap::from_shards(&f, addr),
            // Before Redis 7.0.
            Ok(f) if f.is_error() => {
                let slots = conn
                    .call(&["CLUSTER", "SLOTS"], ASK_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                match slots.error_text() {
                    Some(t) => Err(String::from_utf8_lossy(t).into_owned()),
                    None => SlotMap::from_slots(&slots, addr),
                }
            }
            Ok(other) => Err(format!("CLUSTER SHARDS answered {other:?}")),
            Err(e) => Err(e),
        };
        conn.close();
        m
    }

    /// Starts the periodic refresh once; it ends when the cluster is
    /// dropped.
    fn start_timer(self: &Arc<Self>) {
        let mut started = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return;
        }
        *started = true;
        let weak: Weak<Cluster> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(REFRESH_WHILE_DOWN).await;
                let Some(c) = weak.upgrade() else { return };
                if c.degraded() || last.elapsed() >= REFRESH_EVERY {
                    let _ = c.refresh().await;
                    last = Instant::now();
                }
            }
        });
    }

    /// The map, learnt first if none is known yet.
    pub async fn ready_map(self: &Arc<Self>) -> Result<Arc<SlotMap>, String> {
        let m = self.map();
        if !m.primaries().is_empty() {
            return Ok(m);
        }
        let m = self.refresh().await?;
        if m.primaries().is_empty() {
            return Err(self
                .last_error()
                .unwrap_or_else(|| "the cluster's slot map is not known yet".into()));
        }
        Ok(m)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
