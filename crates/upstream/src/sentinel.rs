//! Sentinel: finding the primary of a `redis+sentinel://` upstream and
//! following it through failovers ([`Sentinel`]).
//!
//! Discovery follows Redis's Sentinel client guidelines: ask the Sentinels
//! (`SENTINEL get-master-addr-by-name`); check the address with `ROLE` (a
//! primary that turned replica is a failover in progress, not a primary);
//! learn the other Sentinels (`SENTINEL sentinels`) so a Sentinel list
//! that changes is followed. Every Sentinel is asked, at once, and the
//! primary named with the greatest `config-epoch` wins (ties: the primary
//! in use, then the first Sentinel of the URL): after a failover its leader
//! names the new primary under a new epoch while the others still name the
//! old one, which answers `ROLE master` until it is reconfigured. Taking
//! the first answer then would follow the old primary, or go back to it,
//! and send writes to a server about to drop them.
//!
//! Every connection to Redis reads the primary's address when it is opened
//! ([`crate::Endpoint::connect`]), and a connection opened to an older
//! primary closes itself when the address changes ([`crate::Endpoint::moved`]),
//! so everything re-resolves on reconnect.
//!
//! **Failover.** The follower subscribes to every known Sentinel. From the
//! first event of a failover of our master (`+try-failover`,
//! `+selected-slave`, …: Sentinel sends them before it promotes a replica)
//! until the new primary answers `ROLE master` (or the failover is
//! aborted), [`Sentinel::failover`] says why, and the health prober
//! publishes Down: durable keyspaces are served locally and journaled as in
//! any outage, and no write reaches an old primary that is about to become
//! a replica and drop what it took since the promotion.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::join_all;
use resp::{parse_frame, Frame, Limits};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

use crate::conn::{Conn, Credentials, Handshake};
use crate::endpoint::Endpoint;

/// `redoubt_sentinel_failovers_total`: failovers of the primary seen.
pub const FAILOVERS_TOTAL: &str = "redoubt_sentinel_failovers_total";
/// `redoubt_sentinels_reached`: Sentinels that answered the last time they
/// were asked.
pub const SENTINELS_REACHED: &str = "redoubt_sentinels_reached";
/// `redoubt_sentinel_failover_in_progress`: 1 from a failover's first
/// event until the new primary answers.
pub const FAILOVER_IN_PROGRESS: &str = "redoubt_sentinel_failover_in_progress";

/// How long one question to a Sentinel or to a candidate primary may take.
const ASK_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often the primary is asked for while nothing happens: a missed
/// `+switch-master` (a Sentinel connection was down) is found this late.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How often during a failover, or while no primary is known.
const REFRESH_FAILOVER: Duration = Duration::from_millis(250);
/// Failovers kept for the status page.
const HISTORY: usize = 20;

/// Sentinel events that say a failover of a master has begun; Sentinel
/// publishes them before it sends `REPLICAOF NO ONE` to the replica it
/// chose.
const FAILOVER_STARTS: &[&str] = &[
    "+try-failover",
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
];
/// Events after which the primary is asked for again at once.
const FAILOVER_ENDS: &[&str] = &[
    "+switch-master",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "-failover-abort-not-elected",
];

/// What a `redis+sentinel://` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSpec {
    /// The Sentinels given (`host:port`), asked first and in this order.
    pub sentinels: Vec<String>,
    /// The master's name in Sentinel's configuration.
    pub master: String,
    /// Credentials for the Sentinels (not Redis's).
    pub auth: Option<Credentials>,
}

/// One failover, as seen from here.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The primary before.
    pub from: Option<String>,
    /// The primary after (the same address when the failover was aborted).
    pub to: String,
    /// When its first event (or the old primary's demotion) was seen.
    pub started_unix_ms: u64,
    /// When the new primary answered `ROLE master`.
    pub ended_unix_ms: u64,
    /// `ended - started`.
    pub duration_ms: u64,
    /// What started it, in words.
    pub why: String,
}

/// A Sentinel and what it last did for us.
#[derive(Debug, Clone, Serialize)]
pub struct SentinelSeen {
    /// `host:port`.
    pub addr: String,
    /// It answered the last question put to it.
    pub reached: bool,
    /// Our subscription to its events is up.
    pub subscribed: bool,
    /// The last error, if it did not answer.
    pub error: Option<String>,
}

/// A failover under way.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverInProgress {
    /// The primary it replaces.
    pub from: Option<String>,
    /// When its first sign was seen.
    pub since_unix_ms: u64,
    /// What that sign was.
    pub why: String,
}

/// What `/status` shows of Sentinel.
#[derive(Debug, Clone, Serialize)]
pub struct SentinelStatus {
    /// The master's name.
    pub master: String,
    /// The primary's address, once known.
    pub primary: Option<String>,
    /// Every Sentinel known (given and learned).
    pub sentinels: Vec<SentinelSeen>,
    /// A failover under way, if any.
    pub failover: Option<FailoverInProgress>,
    /// The last failovers, oldest first.
    pub failovers: Vec<Failover>,
    /// Why no primary is known, while none is.
    pub error: Option<String>,
}

/// The primary of a Sentinel-managed master, and the follower that keeps
/// it current. Shared by every [`Endpoint`] built from the URL.
pub struct Sentinel {
    spec: SentinelSpec,
    /// The handshake of a check of a candidate (`ROLE`): Redis's
    /// credentials.
    redis: Handshake,
    primary: watch::Sender<Option<String>>,
    failover_on: AtomicBool,
    state: Mutex<Inner>,
    /// Wakes the follower: the prober saw the primary turn replica.
    wake: Notify,
    /// Told when a failover begins or ends, so the prober publishes it at
    /// once.
    on_change: Mutex<Vec<Arc<Notify>>>,
    on_failover: Mutex<Vec<FailoverHook>>,
    started: AtomicBool,
}

/// Called with each failover as it ends.
type FailoverHook = Box<dyn Fn(&Failover) + Send + Sync>;

#[derive(Default)]
struct Inner {
    sentinels: Vec<SentinelSeen>,
    failover: Option<FailoverInProgress>,
    failovers: VecDeque<Failover>,
    error: Option<String>,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinel")
            .field("spec", &self.spec)
            .field("primary", &*self.primary.borrow())
            .finish()
    }
}

impl PartialEq for Sentinel {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Sentinel {}

impl Sentinel {
    /// A follower for `spec`, checking candidates with `redis` (Redis's
    /// credentials). Nothing runs until [`Sentinel::start`] or
    /// [`Sentinel::resolve`].
    pub fn new(spec: SentinelSpec, redis: Option<Credentials>) -> Arc<Sentinel> {
        let sentinels = spec
            .sentinels
            .iter()
            .map(|a| SentinelSeen {
                addr: a.clone(),
                reached: false,
                subscribed: false,
                error: None,
            })
            .collect();
        Arc::new(Sentinel {
            redis: Handshake {
                auth: redis,
                db: 0,
                proto: 2,
                name: Some("redoubt-sentinel-check".into()),
            },
            spec,
            primary: watch::channel(None).0,
            failover_on: AtomicBool::new(false),
            state: Mutex::new(Inner {
                sentinels,
                ..Inner::default()
            }),
            wake: Notify::new(),
            on_change: Mutex::new(Vec::new()),
            on_failover: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        })
    }

    /// What the URL named.
    pub fn spec(&self) -> &SentinelSpec {
        &self.spec
    }

    /// The primary's `host:port`, once known.
    pub fn primary(&self) -> Option<String> {
        self.primary.borrow().clone()
    }

    /// A receiver of the primary's address (the current one marked seen).
    pub fn watch_primary(&self) -> watch::Receiver<Option<String>> {
        self.primary.subscribe()
    }

    /// Why no primary is known, for connect errors.
    pub fn unknown_why(&self) -> String {
        let why = lock(&self.state).error.clone();
        format!(
            "no primary known yet for sentinel master '{}'{}",
            self.spec.master,
            why.map(|w| format!(": {w}")).unwrap_or_default()
        )
    }

    /// While a failover is under way: why we think so.
    pub fn failover(&self) -> Option<String> {
        if !self.failover_on.load(Ordering::Acquire) {
            return None;
        }
        let st = lock(&self.state);
        st.failover.as_ref().map(|f| {
            format!(
                "sentinel failover of '{}' in progress ({}); the old primary {} takes no writes meanwhile",
                self.spec.master,
                f.why,
                f.from.as_deref().unwrap_or("(unknown)")
            )
        })
    }

    /// The status page's view.
    pub fn status(&self) -> SentinelStatus {
        let st = lock(&self.state);
        SentinelStatus {
            master: self.spec.master.clone(),
            primary: self.primary(),
            sentinels: st.sentinels.clone(),
            failover: st.failover.clone(),
            failovers: st.failovers.iter().cloned().collect(),
            error: st.error.clone(),
        }
    }

    /// `notify` is woken whenever a failover begins or ends.
    pub fn notify_on_change(&self, notify: Arc<Notify>) {
        lock(&self.on_change).push(notify);
    }

    /// `hook` is called with every failover as it ends (it must not wait).
    pub fn on_failover(&self, hook: impl Fn(&Failover) + Send + Sync + 'static) {
        lock(&self.on_failover).push(Box::new(hook));
    }

    /// The primary answered as a replica (`ROLE`, `INFO`, a `READONLY`
    /// reply): a failover is in progress; find the new primary now.
    pub fn primary_turned_replica(&self, seen: &str) {
        let from = self.primary();
        self.begin_failover(format!(
            "the primary {} {seen}",
            from.as_deref().unwrap_or("(unknown)")
        ));
        self.wake.notify_one();
    }

    /// Starts the follower (once) on the current runtime.
    pub fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(follow(self.clone()));
        }
    }

    /// Asks the Sentinels for the primary once (for one-shot commands
    /// such as `redoubt journal replay`).
    pub async fn resolve(&self) -> Result<String, String> {
        self.refresh().await;
        self.primary().ok_or_else(|| self.unknown_why())
    }

    fn begin_failover(&self, why: String) {
        {
            let mut st = lock(&self.state);
            if st.failover.is_some() {
                return;
            }
            tracing::warn!(master = %self.spec.master, %why, "sentinel: failover begins; durable keyspaces are served locally until the new primary answers");
            st.failover = Some(FailoverInProgress {
                from: self.primary(),
                since_unix_ms: crate::health::unix_ms().max(0) as u64,
                why,
            });
        }
        self.failover_on.store(true, Ordering::Release);
        if self.started.load(Ordering::Acquire) {
            metrics::gauge!(FAILOVER_IN_PROGRESS).set(1.0);
        }
        self.changed();
    }

    fn end_failover(&self, to: &str) {
        let ended = {
            let mut st = lock(&self.state);
            let Some(f) = st.failover.take() else {
                return;
            };
            let now = crate::health::unix_ms().max(0) as u64;
            let done = Failover {
                from: f.from,
                to: to.to_string(),
                started_unix_ms: f.since_unix_ms,
                ended_unix_ms: now,
                duration_ms: now.saturating_sub(f.since_unix_ms),
                why: f.why,
            };
            st.failovers.push_back(done.clone());
            while st.failovers.len() > HISTORY {
                st.failovers.pop_front();
            }
            done
        };
        self.failover_on.store(false, Ordering::Release);
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        metrics::gauge!(FAILOVER_IN_PROGRESS).set(0.0);
        if ended.from.as_deref() != Some(to) {
            metrics::counter!(FAILOVERS_TOTAL).increment(1);
        }
        tracing::warn!(master = %self.spec.master, from = ?ended.from, to, duration_ms = ended.duration_ms, "sentinel: failover over; the primary answers ROLE master");
        for hook in lock(&self.on_failover).iter() {
            hook(&ended);
        }
        self.changed();
    }

    fn changed(&self) {
        for n in lock(&self.on_change).iter() {
            n.notify_one();
        }
    }

    fn set_primary(&self, addr: &str) {
        self.primary.send_if_modified(|p| {
            if p.as_deref() == Some(addr) {
                return false;
            }
            tracing::info!(master = %self.spec.master, from = ?p, to = addr, "sentinel: primary address");
            *p = Some(addr.to_string());
            true
        });
    }

    fn known(&self) -> Vec<String> {
        lock(&self.state)
            .sentinels
            .iter()
            .map(|s| s.addr.clone())
            .collect()
    }

    fn mark(&self, addr: &str, f: impl FnOnce(&mut SentinelSeen)) {
        let mut st = lock(&self.state);
        if let Some(s) = st.sentinels.iter_mut().find(|s| s.addr == addr) {
            f(s);
        }
        // Only the follower speaks for the process: a one-shot resolve (the
        // doctor's) asks one Sentinel and would undercount.
        if self.started.load(Ordering::Acquire) {
            let reached = st.sentinels.iter().filter(|s| s.reached).count();
            metrics::gauge!(SENTINELS_REACHED).set(reached as f64);
        }
    }

    fn learn(&self, addrs: Vec<String>) {
        let mut st = lock(&self.state);
        for a in addrs {
            if !st.sentinels.iter().any(|s| s.addr == a) {
                tracing::info!(sentinel = %a, "sentinel: learned another sentinel");
                st.sentinels.push(SentinelSeen {
                    addr: a,
                    reached: false,
                    subscribed: false,
                    error: None,
                });
            }
        }
    }

    fn handshake(&self, name: &str) -> Handshake {
        Handshake {
            auth: self.spec.auth.clone(),
            db: 0,
            proto: 2,
            name: Some(name.into()),
        }
    }

    /// Asks the Sentinels in turn for the primary, checks it with `ROLE`,
    /// and decides whether a failover began or ended.
    async fn refresh(&self) {
        let known = self.known();
        let answers = join_all(known.iter().map(|a| self.ask(a))).await;
        let mut named = Vec::new();
        let mut errors = Vec::new();
        let mut in_progress = false;
        let mut all_answered = true;
        let mut timeout_ms = 0;
        for (addr, answer) in known.iter().zip(answers) {
            match answer {
                Ok(answer) => {
                    self.mark(addr, |s| {
                        s.reached = true;
                        s.error = None;
                    });
                    self.learn(answer.sentinels);
                    in_progress |= answer.failover_in_progress;
                    timeout_ms = timeout_ms.max(answer.failover_timeout_ms);
                    match answer.primary {
                        Some(p) => named.push((p, answer.config_epoch)),
                        None => errors.push(format!(
                            "{addr} does not know master '{}'",
                            self.spec.master
                        )),
                    }
                }
                Err(e) => {
                    self.mark(addr, |s| {
                        s.reached = false;
                        s.error = Some(e.clone());
                    });
                    errors.push(format!("{addr}: {e}"));
                    all_answered = false;
                }
            }
        }
        let Some(candidate) = newest(&named, self.primary().as_deref()) else {
            lock(&self.state).error = Some(if errors.is_empty() {
                "no sentinel given".into()
            } else {
                errors.join("; ")
            });
            return;
        };
        let candidate = candidate.to_string();
        lock(&self.state).error = None;
        match self.role(&candidate).await {
            Ok(role) if role == "master" => {
                let on = lock(&self.state)
                    .failover
                    .as_ref()
                    .map(|f| (f.from.clone(), f.since_unix_ms));
                match on {
                    // A failover is on: over when the primary moved, or when
                    // no Sentinel runs it any more (aborted). Only the leader
                    // knows, so with a Sentinel unanswered it may be the
                    // leader, done and not heard of yet: aborted only once
                    // the Sentinels' failover-timeout has passed.
                    Some((from, since))
                        if from.as_deref() == Some(candidate.as_str())
                            && (in_progress || (!all_answered && !elapsed(since, timeout_ms))) => {}
                    Some(_) => {
                        self.set_primary(&candidate);
                        self.end_failover(&candidate);
                    }
                    None => {
                        let before = self.primary();
                        if before.is_some() && before.as_deref() != Some(&candidate) {
                            // Moved without our seeing the failover (our
                            // subscriptions were down): record it as one.
                            self.begin_failover("the sentinels name another primary".into());
                            self.set_primary(&candidate);
                            self.end_failover(&candidate);
                        } else {
                            self.set_primary(&candidate);
                        }
                    }
                }
            }
            Ok(role) => {
                self.begin_failover(format!("{candidate} answers ROLE {role}"));
            }
            Err(e) => {
                // Unreachable: it is still the primary Sentinel names; the
                // prober reports it Down.
                tracing::debug!(%candidate, error = %e, "sentinel: the primary does not answer ROLE");
                if self.primary().is_none() {
                    self.set_primary(&candidate);
                }
            }
        }
    }

    /// One Sentinel's answers: the primary's address and its epoch, the
    /// other Sentinels, and whether it runs a failover of our master.
    async fn ask(&self, addr: &str) -> Result<Answer, String> {
        let conn = Conn::connect(
            &Endpoint::plain(addr.to_string()),
            &self.handshake("redoubt-sentinel"),
            ASK_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string().replace("redis at", "sentinel at"))?;
        let master = self.spec.master.as_str();
        let primary = match call(&conn, &["SENTINEL", "get-master-addr-by-name", master]).await? {
            Frame::Array(items) if items.len() == 2 => {
                let host = text(&items[0]);
                let port = text(&items[1]);
                Some(join_host_port(&host, &port))
            }
            Frame::NullArray | Frame::Null | Frame::NullBulk => None,
            f if f.is_error() => return Err(error_text(&f)),
            f => {
                return Err(format!(
                    "unexpected reply to SENTINEL get-master-addr-by-name: {f:?}"
                ))
            }
        };
        let mut sentinels = Vec::new();
        if primary.is_some() {
            if let Ok(Frame::Array(list)) = call(&conn, &["SENTINEL", "sentinels", master]).await {
                for s in list {
                    let fields = pairs(&s);
                    if let (Some(ip), Some(port)) = (fields.get("ip"), fields.get("port")) {
                        sentinels.push(join_host_port(ip, port));
                    }
                }
            }
        }
        let mut failover_in_progress = false;
        let mut config_epoch = 0;
        let mut failover_timeout_ms = 0;
        if primary.is_some() {
            if let Ok(f) = call(&conn, &["SENTINEL", "master", master]).await {
                let fields = pairs(&f);
                failover_in_progress = fields
                    .get("flags")
                    .is_some_and(|fl| fl.split(',').any(|x| x == "failover_in_progress"));
                let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok());
                config_epoch = number("config-epoch").unwrap_or(0);
                failover_timeout_ms = number("failover-timeout").unwrap_or(0);
            }
        }
        conn.close();
        Ok(Answer {
            primary,
            sentinels,
            failover_in_progress,
            config_epoch,
            failover_timeout_ms,
        })
    }

    /// `ROLE` of a candidate primary: `master`, `slave`, ….
    async fn role(&self, addr: &str) -> Result<String, String> {
        let conn = Conn::connect(&Endpoint::plain(addr.to_string()), &self.redis, ASK_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let reply = call(&conn, &["ROLE"]).await;
        conn.close();
        match reply? {
            Frame::Array(items) if !items.is_empty() => Ok(text(&items[0])),
            f => Err(format!("unexpected ROLE reply: {}", error_text(&f))),
        }
    }

    /// Handles one event from a Sentinel; true when the primary should be
    /// asked for again at once.
    fn event(&self, from: &str, channel: &str, payload: &str) -> bool {
        let Some((master, addr)) = event_master(channel, payload) else {
            return false;
        };
        if master != self.spec.master {
            return false;
        }
        tracing::info!(sentinel = from, event = channel, %payload, "sentinel event");
        if FAILOVER_STARTS.contains(&channel) {
            // Only a failover of the primary we use: the leader's last
            // events of one already followed (Sentinel names the promoted
            // replica while it reconfigures the others) are old news.
            if addr.is_some() && addr == self.primary() {
                self.begin_failover(format!("{channel} from sentinel {from}"));
            }
            return true;
        }
        FAILOVER_ENDS.contains(&channel)
    }
}

/// What one Sentinel said.
struct Answer {
    primary: Option<String>,
    sentinels: Vec<String>,
    failover_in_progress: bool,
    /// The epoch of the configuration it names the primary under: a
    /// failover's leader takes a new one, and the other Sentinels adopt a
    /// configuration with a greater epoch than theirs when they hear of it.
    config_epoch: u64,
    /// Its `failover-timeout` for our master (ms).
    failover_timeout_ms: u64,
}

/// The primary named under the greatest epoch; among equals the one in
/// use, else the first named.
fn newest<'a>(named: &'a [(String, u64)], current: Option<&str>) -> Option<&'a str> {
    let top = named.iter().map(|(_, e)| *e).max()?;
    let tied: Vec<&str> = named
        .iter()
        .filter(|(_, e)| *e == top)
        .map(|(p, _)| p.as_str())
        .collect();
    tied.iter()
        .find(|p| Some(**p) == current)
        .or(tied.first())
        .copied()
}

/// Whether `timeout_ms` has passed since `since_unix_ms`; Sentinel's
/// default `failover-timeout` when none was read.
fn elapsed(since_unix_ms: u64, timeout_ms: u64) -> bool {
    let timeout_ms = if timeout_ms == 0 { 180_000 } else { timeout_ms };
    let now = crate::health::unix_ms().max(0) as u64;
    now.saturating_sub(since_unix_ms) > timeout_ms
}

/// The master an event is about, and the address the event gives it:
/// `+switch-master <name> <old ip> <old port> …`, `master <name> <ip>
/// <port>` for a master, `… @ <name> <ip> <port>` for its replicas.
fn event_master<'a>(channel: &str, payload: &'a str) -> Option<(&'a str, Option<String>)> {
    let words: Vec<&str> = payload.split_whitespace().collect();
    let addr = |i: usize| match (words.get(i), words.get(i + 1)) {
        (Some(h), Some(p)) => Some(join_host_port(h, p)),
        _ => None,
    };
    if channel == "+switch-master" {
        return words.first().map(|m| (*m, addr(1)));
    }
    if let Some(at) = words.iter().position(|w| *w == "@") {
        return words.get(at + 1).map(|m| (*m, addr(at + 2)));
    }
    match words.first() {
        Some(&"master") => words.get(1).map(|m| (*m, addr(2))),
        _ => None,
    }
}

/// The follower: subscriptions to every Sentinel, and the primary asked
/// for on every event, every [`REFRESH_EVERY`], and every
/// [`REFRESH_FAILOVER`] while a failover runs or no primary is known.
async fn follow(s: Arc<Sentinel>) {
    let (tx, mut rx) = mpsc::channel::<(String, String, String)>(256);
    let mut listening: Vec<String> = Vec::new();
    loop {
        for addr in s.known() {
            if !listening.contains(&addr) {
                listening.push(addr.clone());
                tokio::spawn(listen(s.clone(), addr, tx.clone()));
            }
        }
        s.refresh().await;
        let wait = if s.failover_on.load(Ordering::Acquire) || s.primary().is_none() {
            REFRESH_FAILOVER
        } else {
            REFRESH_EVERY
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some((from, channel, payload)) = ev else { return };
                    if s.event(&from, &channel, &payload) {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = s.wake.notified() => break,
            }
        }
    }
}

/// Keeps a subscription to one Sentinel's events, reconnecting.
async fn listen(s: Arc<Sentinel>, addr: String, tx: mpsc::Sender<(String, String, String)>) {
    let mut backoff =
        crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let ended = subscribe(&s, &addr, &tx, &mut backoff).await;
        s.mark(&addr, |seen| {
            seen.subscribed = false;
            seen.error = Some(ended.clone());
        });
        if tx.is_closed() {
            return;
        }
        tracing::debug!(sentinel = %addr, why = %ended, "sentinel: subscription lost; reconnecting");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn subscribe(
    s: &Sentinel,
    addr: &str,
    tx: &mpsc::Sender<(String, String, String)>,
    backoff: &mut crate::backoff::Backoff,
) -> String {
    let endpoint = Endpoint::plain(addr.to_string());
    let mut stream = match crate::conn::open_stream(
        &endpoint,
        &s.handshake("redoubt-sentinel-events"),
        ASK_TIMEOUT,
    )
    .await
    {
        Ok(st) => st,
        Err(e) => return e.to_string().replace("redis at", "sentinel at"),
    };
    let mut out = BytesMut::new();
    let mut channels = vec!["SUBSCRIBE"];
    channels.extend_from_slice(FAILOVER_STARTS);
    channels.extend_from_slice(FAILOVER_ENDS);
    resp::frame::encode_command(&mut out, &channels);
    if let Err(e) = stream.write_all(&out).await {
        return e.to_string();
    }
    if let Err(e) = stream.flush().await {
        return e.to_string();
    }
    s.mark(addr, |seen| seen.subscribed = true);
    backoff.reset();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Ok(Some((frame, n))) = parse_frame(&buf, &Limits::upstream()) {
            let _ = buf.split_to(n);
            if let Frame::Array(items) = frame {
                if items.len() == 3 && text(&items[0]) == "message" {
                    let ev = (addr.to_string(), text(&items[1]), text(&items[2]));
                    if tx.send(ev).await.is_err() {
                        return "follower gone".into();
                    }
                }
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) => return "the sentinel closed the connection".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
    }
}

async fn call(conn: &Conn, args: &[&str]) -> Result<Frame, String> {
    conn.call(args, ASK_TIMEOUT)
        .await
        .map_err(|e| format!("{}: {e}", args.join(" ")))
}

/// A RESP2 array of alternating field names and values, as a map.
fn pairs(f: &Frame) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    match f {
        Frame::Array(items) => {
            for kv in items.chunks(2) {
                if let [k, v] = kv {
                    out.insert(text(k), text(v));
                }
            }
        }
        Frame::Map(items) => {
            for (k, v) in items {
                out.insert(text(k), text(v));
            }
        }
        _ => {}
    }
    out
}

fn text(f: &Frame) -> String {
    f.as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn error_text(f: &Frame) -> String {
    f.error_text()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| format!("{f:?}"))
}

/// `host:port`, with brackets around an IPv6 literal.
pub(crate) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_master() {
        let old = Some("127.0.0.1:6379".to_string());
        assert_eq!(
            event_master("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some(("mymaster", old.clone()))
        );
        assert_eq!(
            event_master("+try-failover", "master mymaster 127.0.0.1 6379"),
            Some(("mymaster", old.clone()))
        );
        assert_eq!(
            event_master(
                "+selected-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ other 127.0.0.1 6379"
            ),
            Some(("other", old))
        );
        assert_eq!(event_master("+sdown", "sentinel a b c"), None);
    }

    #[test]
    fn the_newest_configuration_wins_then_the_primary_in_use_then_the_first() {
        let named = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
            list.iter().map(|(p, e)| (p.to_string(), *e)).collect()
        };
        let split = named(&[("old:1", 3), ("old:1", 3), ("new:2", 4)]);
        assert_eq!(newest(&split, Some("old:1")), Some("new:2"));
        assert_eq!(newest(&split, None), Some("new:2"));
        let tied = named(&[("a:1", 2), ("b:2", 2)]);
        assert_eq!(newest(&tied, Some("b:2")), Some("b:2"));
        assert_eq!(newest(&tied, Some("c:3")), Some("a:1"));
        assert_eq!(newest(&[], Some("a:1")), None);
    }
}
