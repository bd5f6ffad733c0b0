//! Health probing: the only thing that decides whether Redis is Down.
//!
//! A prober sends `PING` every `interval_ms` (±20% jitter, also while
//! Down, so recovery is noticed within `up_after × interval_ms`), and every
//! few probes `INFO` to see loading, a read-only role, and write
//! rejections (`OOM` under `noeviction`, failed persistence → `MISCONF`).
//! Consecutive-count hysteresis (`down_after`, `up_after`) keeps one
//! dropped connection (a `CLIENT KILL`, an idle timeout) from flapping the
//! state: a probe whose connection was cut reconnects and retries at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::backoff::jitter;
use crate::conn::{CallError, Conn};
use crate::url::UpstreamUrl;
use resp::Frame;

/// `[health]` defaults (DESIGN).
pub const DEFAULT_INTERVAL_MS: u64 = 250;
/// Probe timeout default.
pub const DEFAULT_TIMEOUT_MS: u64 = 250;
/// Failed probes in a row before Down.
pub const DEFAULT_DOWN_AFTER: u32 = 2;
/// Good probes in a row before leaving Down.
pub const DEFAULT_UP_AFTER: u32 = 2;
/// Round trip of each answered probe `PING`.
pub const PROBE_DURATION: &str = "redoubt_upstream_probe_duration_seconds";

/// Redis's vital signs from the prober's `INFO`, under `redis_exporter`'s
/// names so dashboards built for it read them: `(metric, INFO field,
/// counter?)`.
pub const VITALS: &[(&str, &str, bool)] = &[
    ("redis_memory_used_bytes", "used_memory", false),
    ("redis_memory_max_bytes", "maxmemory", false),
    ("redis_connected_clients", "connected_clients", false),
    ("redis_blocked_clients", "blocked_clients", false),
    ("redis_evicted_keys_total", "evicted_keys", true),
    ("redis_expired_keys_total", "expired_keys", true),
    ("redis_keyspace_hits_total", "keyspace_hits", true),
    ("redis_keyspace_misses_total", "keyspace_misses", true),
    (
        "redis_commands_processed_total",
        "total_commands_processed",
        true,
    ),
];

/// Publishes [`VITALS`] from an `INFO` text.
fn publish_vitals(info: &str) {
    for line in info.lines() {
        let Some((field, value)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let Some((name, _, counter)) = VITALS.iter().find(|(_, f, _)| *f == field) else {
            continue;
        };
        let Ok(v) = value.parse::<u64>() else {
            continue;
        };
        if *counter {
            metrics::counter!(*name).absolute(v);
        } else {
            metrics::gauge!(*name).set(v as f64);
        }
    }
}

/// `INFO` is read on every Nth good probe.
const INFO_EVERY: u32 = 4;

/// The `[health]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Probe cadence in ms, also while Down.
    pub interval_ms: u64,
    /// Probe timeout in ms.
    pub timeout_ms: u64,
    /// Consecutive failed probes before Down.
    pub down_after: u32,
    /// Consecutive good probes before Up again.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: DEFAULT_INTERVAL_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            down_after: DEFAULT_DOWN_AFTER,
            up_after: DEFAULT_UP_AFTER,
        }
    }
}

impl HealthConfig {
    /// Every problem with the values, with key names.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.interval_ms == 0 {
            p.push("health.interval_ms must be at least 1".to_string());
        }
        if self.timeout_ms == 0 {
            p.push("health.timeout_ms must be at least 1".to_string());
        }
        if self.down_after == 0 {
            p.push("health.down_after must be at least 1".to_string());
        }
        if self.up_after == 0 {
            p.push("health.up_after must be at least 1".to_string());
        }
        p
    }
}

/// Redoubt's view of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Redis answers and accepts writes.
    Up,
    /// Redis does not answer (or is loading, or its master is down).
    Down,
    /// Redis answers reads but rejects writes (OOM, MISCONF, READONLY…).
    WritesDown,
    /// Redis is back and the journal is being replayed.
    Recovering,
    /// No upstream configured.
    Standalone,
}

impl State {
    /// All states, in metric-label order.
    pub const ALL: [State; 5] = [
        State::Up,
        State::Down,
        State::WritesDown,
        State::Recovering,
        State::Standalone,
    ];

    /// The metric label / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::WritesDown => "writes_down",
            State::Recovering => "recovering",
            State::Standalone => "standalone",
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> State {
        State::ALL.get(v as usize).copied().unwrap_or(State::Down)
    }
}

/// Last-known facts about the server, from `INFO`; served to clients
/// during an outage and shown on the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerFacts {
    /// `redis_version`.
    pub redis_version: Option<String>,
    /// `role` (master / slave).
    pub role: Option<String>,
    /// `maxmemory_policy`.
    pub maxmemory_policy: Option<String>,
    /// `run_id`, to tell a restart from a blip.
    pub run_id: Option<String>,
    /// Redis's clock minus ours, in ms (from `server_time_usec`, Redis
    /// 6.2+): relative expiries journaled during an outage are made
    /// absolute on Redis's clock.
    pub clock_offset_ms: Option<i64>,
    /// `master_repl_offset`: how far Redis's replication stream has gone,
    /// for the replica's lag.
    pub master_repl_offset: Option<u64>,
}

/// One published health observation.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Current state.
    pub state: State,
    /// Why, in words (the last failure or rejection).
    pub reason: String,
    /// When the state last changed.
    pub since: SystemTime,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    /// Last-known server facts.
    pub facts: ServerFacts,
    /// Redis's `BUSY` text while it runs a script or function past
    /// `busy-reply-threshold`: it answers (so not Down), refusing all but
    /// `SCRIPT KILL`, `FUNCTION KILL` and `SHUTDOWN NOSAVE`.
    pub busy: Option<String>,
}

/// Hold bit: the outage's journal is being replayed.
const HOLD_REPLAY: u8 = 1;
/// Hold bit: the replica checks (and restores) what Redis kept.
const HOLD_RESTORE: u8 = 2;
/// Another Redoubt took the outage's durable writes and may be replaying.
const HOLD_WRITER: u8 = 4;

/// A cheap, clonable view of the prober's output.
#[derive(Clone)]
pub struct HealthHandle {
    rx: watch::Receiver<Health>,
    state: Arc<AtomicU8>,
    poke: Arc<Notify>,
    /// Set while a journal waits to be replayed: a Redis that answers is
    /// then published as Recovering, not Up.
    hold: Arc<AtomicU8>,
}

impl HealthHandle {
    /// A handle pinned to one state that never changes (standalone mode,
    /// tests).
    pub fn fixed(state: State) -> HealthHandle {
        let (tx, rx) = watch::channel(Health {
            state,
            reason: String::new(),
            since: SystemTime::now(),
            consecutive_failures: 0,
            facts: ServerFacts::default(),
            busy: None,
        });
        // Keep the sender alive for the process lifetime so `changed()` on
        // clones does not report a closed channel.
        std::mem::forget(tx);
        HealthHandle {
            rx,
            state: Arc::new(AtomicU8::new(state.to_u8())),
            poke: Arc::new(Notify::new()),
            hold: Arc::default(),
        }
    }

    /// Current state, read without locks (the hot path).
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Redis's `BUSY` reply while a script runs past
    /// `busy-reply-threshold` (no copy of the rest of the facts).
    pub fn busy(&self) -> Option<String> {
        self.rx.borrow().busy.clone()
    }

    /// The latest full observation.
    pub fn current(&self) -> Health {
        self.rx.borrow().clone()
    }

    /// Redis's `redis_version`, last read (without a copy of the rest).
    pub fn redis_version(&self) -> Option<String> {
        self.rx.borrow().facts.redis_version.clone()
    }

    /// Redis's clock minus ours, last measured (no copy of the facts: it
    /// is read for every write journaled during an outage).
    pub fn clock_offset_ms(&self) -> Option<i64> {
        self.rx.borrow().facts.clock_offset_ms
    }

    /// A receiver that wakes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<Health> {
        self.rx.clone()
    }

    /// After a connect was refused (nothing listens where Redis was): has
    /// the prober probe at once, and again every few milliseconds (each
    /// probe is refused at once too) until `down_after` failures say Down,
    /// for up to `within`. True when it said Down in time.
    pub async fn confirm_gone(&self, within: Duration) -> bool {
        const REPOKE: Duration = Duration::from_millis(10);
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.poke();
            let next = (tokio::time::Instant::now() + REPOKE).min(deadline);
            tokio::select! {
                r = rx.wait_for(|h| h.state == State::Down) => return r.is_ok(),
                _ = tokio::time::sleep_until(next) => {}
            }
            if next == deadline {
                return false;
            }
        }
    }

    /// Tells the prober a data connection saw a write rejected (`OOM`,
    /// `MISCONF`, `READONLY`…), so it reads `INFO` now instead of waiting
    /// for its turn.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// While `on`, a Redis that answers is Recovering rather than Up: the
    /// journal of an outage is still being replayed into it. Clearing it
    /// wakes the prober so Up is published at once.
    pub fn hold_recovering(&self, on: bool) {
        self.set_hold(HOLD_REPLAY, on);
    }

    /// While `on`, a Redis that answers is Recovering rather than Up: it
    /// came back and the replica is checking it kept the durable keyspaces
    /// (restoring them if not).
    pub fn hold_restore(&self, on: bool) {
        self.set_hold(HOLD_RESTORE, on);
    }

    /// While `on`, a Redis that answers is Recovering rather than Up:
    /// another Redoubt took durable writes during the outage and may still
    /// be replaying them into it.
    pub fn hold_for_writer(&self, on: bool) {
        self.set_hold(HOLD_WRITER, on);
    }

    fn set_hold(&self, bit: u8, on: bool) {
        let before = if on {
            self.hold.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.hold.fetch_and(!bit, Ordering::AcqRel)
        };
        if (!on && before == bit) || (on && before == 0) {
            // The last hold went: Up at once. The first came: Recovering
            // at the next probe (a cluster shard's outage journals while
            // the upstream stays Up).
            self.poke.notify_one();
        }
    }
}

/// Starts the prober for `url` on a thread of its own; it runs until every
/// [`HealthHandle`] is dropped.
/// The state starts as Down and becomes Up on the first good probe, so a
/// Redoubt started before Redis simply waits for it.
pub fn spawn_prober(url: UpstreamUrl, cfg: HealthConfig) -> HealthHandle {
    let (tx, rx) = watch::channel(Health {
        state: State::Down,
        reason: "not probed yet".into(),
        since: SystemTime::now(),
        consecutive_failures: 0,
        facts: ServerFacts::default(),
        busy: None,
    });
    let state = Arc::new(AtomicU8::new(State::Down.to_u8()));
    let poke = Arc::new(Notify::new());
    let hold = Arc::new(AtomicU8::new(0));
    let handle = HealthHandle {
        rx,
        state: state.clone(),
        poke: poke.clone(),
        hold: hold.clone(),
    };
    let sentinel = url.sentinel.clone();
    if let Some(s) = &sentinel {
        s.notify_on_change(poke.clone());
    }
    let prober = Prober::new(url, cfg, tx, state, poke, hold);
    // A thread and runtime of its own: however busy the clients keep the
    // data path's workers, probes go out and time out on time, so a
    // healthy Redis is never declared Down because Redoubt was slow.
    let spawned = std::thread::Builder::new()
        .name("redoubt-prober".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async move {
                    // Sentinel's follower shares the prober's thread: it
                    // too must act on time however busy the data path is.
                    if let Some(s) = &sentinel {
                        s.start();
                    }
                    prober.run().await
                }),
                Err(e) => tracing::error!(error = %e, "cannot start the health prober's runtime"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the health prober's thread");
    }
    handle
}

/// Result of reading `INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoVerdict {
    /// Serving reads and writes.
    Healthy,
    /// Answers but cannot serve (loading): counts as a failed probe.
    Unavailable(String),
    /// Answers reads, rejects writes.
    WritesRejected(String),
}

/// Reads the state-relevant fields of an `INFO` text.
pub fn judge_info(info: &str) -> (InfoVerdict, ServerFacts) {
    let fields: HashMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .collect();
    let get = |k: &str| fields.get(k).copied();
    let facts = ServerFacts {
        redis_version: get("redis_version").map(str::to_string),
        role: get("role").map(str::to_string),
        maxmemory_policy: get("maxmemory_policy").map(str::to_string),
        run_id: get("run_id").map(str::to_string),
        clock_offset_ms: None,
        master_repl_offset: get("master_repl_offset").and_then(|v| v.parse().ok()),
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let verdict = if get("loading") == Some("1") {
        InfoVerdict::Unavailable("redis is loading its dataset (LOADING)".into())
    } else if get("role") == Some("slave") && get("master_link_status") == Some("down") {
        InfoVerdict::Unavailable("redis is a replica whose master link is down (MASTERDOWN)".into())
    } else if get("role") == Some("slave") {
        InfoVerdict::WritesRejected("redis is a read-only replica (READONLY)".into())
    } else if get("aof_last_write_status") == Some("err") {
        InfoVerdict::WritesRejected("redis cannot write its AOF (MISCONF)".into())
    } else if get("rdb_last_bgsave_status") == Some("err") {
        InfoVerdict::WritesRejected("redis's last background save failed (MISCONF)".into())
    } else if num("maxmemory") > 0
        && num("used_memory") >= num("maxmemory")
        && get("maxmemory_policy") == Some("noeviction")
    {
        InfoVerdict::WritesRejected(format!(
            "redis is at maxmemory ({} of {} bytes) with noeviction (OOM)",
            num("used_memory"),
            num("maxmemory")
        ))
    } else {
        InfoVerdict::Healthy
    };
    (verdict, facts)
}

struct Prober {
    url: UpstreamUrl,
    cfg: HealthConfig,
    tx: watch::Sender<Health>,
    state: Arc<AtomicU8>,
    poke: Arc<Notify>,
    hold: Arc<AtomicU8>,
    conn: Option<Conn>,
    good: u32,
    bad: u32,
    probes: u64,
    writes_rejected: Option<String>,
}

enum Probe {
    Good,
    /// Redis answered `BUSY`: it is alive, running a long script.
    Busy(String),
    Bad(String),
}

impl Prober {
    fn new(
        url: UpstreamUrl,
        cfg: HealthConfig,
        tx: watch::Sender<Health>,
        state: Arc<AtomicU8>,
        poke: Arc<Notify>,
        hold: Arc<AtomicU8>,
    ) -> Self {
        Prober {
            url,
            cfg,
            tx,
            state,
            poke,
            hold,
            conn: None,
            good: 0,
            bad: 0,
            probes: 0,
            writes_rejected: None,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    async fn connection(&mut self) -> Result<Conn, String> {
        if let Some(c) = self.conn.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let hs = self.url.control_handshake(2, "redoubt-probe");
        let c = Conn::connect(&self.url.endpoint(), &hs, self.timeout())
            .await
            .map_err(|e| e.to_string())?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    async fn ping(&mut self) -> Probe {
        // Two tries: a connection cut by CLIENT KILL or an idle timeout is
        // not an outage, so reconnect once before calling the probe failed.
        for attempt in 0..2 {
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => return Probe::Bad(e),
            };
            let sent = std::time::Instant::now();
            match conn.call(&["PING"], self.timeout()).await {
                Ok(Frame::Simple(s)) if &s[..] == b"PONG" => {
                    metrics::histogram!(PROBE_DURATION).record(sent.elapsed().as_secs_f64());
                    return Probe::Good;
                }
                Ok(f) => {
                    let text = f
                        .error_text()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    if text.starts_with("BUSY") {
                        return Probe::Busy(text);
                    }
                    if text.starts_with("NOAUTH") {
                        return Probe::Bad(format!(
                            "redis requires a password the upstream URL does not give: {text}"
                        ));
                    }
                    return Probe::Bad(format!("PING answered {text}"));
                }
                Err(CallError::Timeout) => {
                    return Probe::Bad(format!("no PING reply within {} ms", self.cfg.timeout_ms));
                }
                Err(CallError::Lost | CallError::NotSent) if attempt == 0 => {
                    self.conn = None;
                }
                Err(e) => return Probe::Bad(format!("probe connection failed: {e}")),
            }
        }
        Probe::Bad("probe connection failed twice".into())
    }

    async fn info(&mut self) -> Option<(InfoVerdict, ServerFacts)> {
        let conn = self.connection().await.ok()?;
        let sent = unix_ms();
        let reply = conn
            .call(&["INFO"], self.timeout().max(Duration::from_millis(500)))
            .await
            .ok()?;
        // Redis read its clock somewhere between send and reply: the
        // midpoint is off by at most half the round trip.
        let local = (sent + unix_ms()) / 2;
        let text = reply
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())?;
        let (verdict, mut facts) = judge_info(&text);
        publish_vitals(&text);
        facts.clock_offset_ms = text
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("server_time_usec:"))
            .and_then(|v| v.parse::<i64>().ok())
            .map(|usec| usec / 1000 - local);
        Some((verdict, facts))
    }

    fn publish(&mut self, state: State, reason: String, facts: Option<ServerFacts>) {
        let hold = self.hold.load(Ordering::Acquire);
        let (state, reason) = if state == State::Up && hold != 0 {
            let why = if hold & HOLD_RESTORE != 0 {
                "redis answers; checking it kept the durable keyspaces (restoring them from the replica if not)"
            } else if hold & HOLD_WRITER != 0 {
                "redis answers; waiting for the Redoubt that took the outage's durable writes to replay them"
            } else {
                "redis answers; replaying the outage's journal into it"
            };
            (State::Recovering, why.to_string())
        } else {
            (state, reason)
        };
        let prev = self.tx.borrow().state;
        let bad = self.bad;
        // The atomic first: whoever wakes on the watch and then reads the
        // hot-path state must see the new one.
        self.state.store(state.to_u8(), Ordering::Release);
        self.tx.send_modify(|h| {
            if h.state != state {
                h.since = SystemTime::now();
            }
            h.state = state;
            h.reason = reason;
            h.consecutive_failures = bad;
            if let Some(f) = facts {
                h.facts = f;
            }
        });
        if prev != state {
            tracing::warn!(from = prev.as_str(), to = state.as_str(), reason = %self.tx.borrow().reason, "upstream state changed");
        }
    }

    /// Probes until every [`HealthHandle`] is gone.
    async fn run(mut self) {
        while !self.tx.is_closed() {
            self.probes += 1;
            let current = self.tx.borrow().state;
            if let Some(why) = self.url.sentinel.as_ref().and_then(|s| s.failover()) {
                // Down at once, without waiting for failed probes: the old
                // primary may still answer, but whatever it takes now is
                // lost when it turns replica.
                self.good = 0;
                self.bad += 1;
                self.publish(State::Down, why, None);
                self.pause().await;
                continue;
            }
            let probe = self.ping().await;
            let busy = match &probe {
                Probe::Busy(text) => Some(text.clone()),
                _ => None,
            };
            if self.tx.borrow().busy != busy {
                if let Some(text) = &busy {
                    tracing::warn!(reply = %text, "redis is busy running a script: only SCRIPT KILL, FUNCTION KILL and SHUTDOWN NOSAVE will run");
                }
                self.tx.send_modify(|h| h.busy = busy.clone());
            }
            match probe {
                Probe::Busy(_) => {
                    // Answering, so not an outage: clients get Redis's own
                    // BUSY and can end the script through Redoubt. INFO
                    // would be refused too, so it is not read.
                    self.good += 1;
                    self.bad = 0;
                    self.maybe_up(current, None);
                }
                Probe::Good => {
                    self.good += 1;
                    self.bad = 0;
                    let mut facts = None;
                    let mut verdict = None;
                    // INFO on the first good probe, every few after, and at
                    // once when the data path saw a write rejected.
                    if self.good == 1
                        || self.probes.is_multiple_of(INFO_EVERY as u64)
                        || current == State::WritesDown
                    {
                        if let Some((v, f)) = self.info().await {
                            verdict = Some(v);
                            facts = Some(f);
                        }
                    }
                    let demoted = facts
                        .as_ref()
                        .is_some_and(|f: &ServerFacts| f.role.as_deref() == Some("slave"));
                    if let (Some(s), true) = (&self.url.sentinel, demoted) {
                        s.primary_turned_replica("answers INFO role:slave");
                        self.good = 0;
                        self.bad += 1;
                        let why = s
                            .failover()
                            .unwrap_or_else(|| "the primary turned replica".into());
                        self.publish(State::Down, why, facts);
                        self.pause().await;
                        continue;
                    }
                    match verdict {
                        Some(InfoVerdict::Unavailable(why)) => {
                            self.good = 0;
                            self.bad += 1;
                            if self.bad >= self.cfg.down_after || current == State::Down {
                                self.publish(State::Down, why, facts);
                            }
                        }
                        Some(InfoVerdict::WritesRejected(why)) => {
                            self.writes_rejected = Some(why.clone());
                            if current != State::Down
                                || self.good >= self.cfg.up_after
                                || self.first_ever()
                            {
                                self.publish(State::WritesDown, why, facts);
                            }
                        }
                        Some(InfoVerdict::Healthy) => {
                            self.writes_rejected = None;
                            self.maybe_up(current, facts);
                        }
                        None => {
                            if let Some(why) = self.writes_rejected.clone() {
                                if current != State::Down {
                                    self.publish(State::WritesDown, why, None);
                                }
                            } else {
                                self.maybe_up(current, None);
                            }
                        }
                    }
                }
                Probe::Bad(why) => {
                    self.good = 0;
                    self.bad += 1;
                    if current != State::Down && self.bad >= self.cfg.down_after {
                        self.publish(
                            State::Down,
                            format!("{} probes failed: {why}", self.bad),
                            None,
                        );
                    } else if current == State::Down {
                        // Keep the reason fresh while down.
                        self.publish(
                            State::Down,
                            format!("{} probes failed: {why}", self.bad),
                            None,
                        );
                    }
                }
            }
            self.pause().await;
        }
    }

    /// Until the next probe: an interval, or a poke.
    async fn pause(&mut self) {
        let wait = jitter(Duration::from_millis(self.cfg.interval_ms), 0.2);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.poke.notified() => { self.probes = INFO_EVERY as u64 - 1; }
        }
    }

    fn first_ever(&self) -> bool {
        self.probes <= 1
    }

    fn maybe_up(&mut self, current: State, facts: Option<ServerFacts>) {
        match current {
            State::Down if self.good >= self.cfg.up_after || self.first_ever() => {
                self.publish(State::Up, "PING answered".into(), facts)
            }
            State::WritesDown => {
                self.publish(State::Up, "redis accepts writes again".into(), facts)
            }
            State::Up if facts.is_some() => self.publish(State::Up, "PING answered".into(), facts),
            // A hold set while Up (a cluster shard's outage journals while
            // the upstream answers): Recovering now.
            State::Up if self.hold.load(Ordering::Acquire) != 0 => {
                self.publish(State::Up, "PING answered".into(), None)
            }
            // Published as Up once the journal is drained (the hold is
            // cleared), Recovering until then.
            State::Recovering => self.publish(State::Up, "journal replayed".into(), facts),
            _ => {}
        }
    }
}

/// Now, in Unix ms.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_verdicts() {
        let base = "redis_version:7.0.15\r\nrole:master\r\nloading:0\r\nmaxmemory:0\r\nused_memory:100\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(judge_info(base).0, InfoVerdict::Healthy);
        assert_eq!(judge_info(base).1.redis_version.as_deref(), Some("7.0.15"));
        assert!(matches!(
            judge_info(&base.replace("loading:0", "loading:1")).0,
            InfoVerdict::Unavailable(_)
        ));
        assert!(matches!(
            judge_info(&base.replace("role:master", "role:slave")).0,
            InfoVerdict::WritesRejected(_)
        ));
        let full = base.replace("maxmemory:0", "maxmemory:100");
        assert!(matches!(
            judge_info(&full).0,
            InfoVerdict::WritesRejected(_)
        ));
        let evicting = full.replace("policy:noeviction", "policy:allkeys-lru");
        assert_eq!(judge_info(&evicting).0, InfoVerdict::Healthy);
        let misconf = format!("{base}rdb_last_bgsave_status:err\r\n");
        assert!(
            matches!(judge_info(&misconf).0, InfoVerdict::WritesRejected(w) if w.contains("MISCONF"))
        );
    }
}
