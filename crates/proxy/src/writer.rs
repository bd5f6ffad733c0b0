//! Which Redoubt takes durable writes during an outage when several stand
//! in front of one Redis.
//!
//! The rule: **during an outage at most one Redoubt accepts writes to
//! durable keys** — the one that held the outage-writer lease in Redis
//! when Redis went away. The others serve reads of what Redis had (their
//! replica) and refuse durable writes. Two instances that both accepted
//! `INCR` on the same counter would both answer 43; with one writer that
//! cannot happen.
//!
//! The lease is one key, [`LEASE_KEY`], holding `NODE SEQ REPLAYING` (the
//! writer's node id, a count of its renewals, and 1 while its journal
//! holds outage writes not yet replayed) with a TTL, claimed or renewed by
//! a small script every [`RENEW_EVERY`] while Redis answers. An instance
//! with `[outage] writer = "never"` never claims it, only reads it. If
//! Redis refuses the script (no `EVAL` for Redoubt's user), the lease
//! cannot be kept: the instance takes writes as if alone, and says so once.
//!
//! **After the outage, the others wait for the writer's replay.** An
//! instance that saw Redis go away while another held the lease keeps its
//! durable keyspaces as during the outage (reads from its copy, writes
//! refused) and its state Recovering until the lease shows a renewal made
//! since Redis came back that says the writer's journal is drained. Were it
//! to send writes to Redis at once, they would land on a Redis that lacks
//! the writer's outage writes (a queue's job-id counter among them) and
//! hand out what the writer already handed out. A writer that does not
//! renew within [`LEASE_MS`] + [`RENEW_EVERY`] of Redis answering is taken
//! as gone: the wait ends, and its journal replays whenever it starts again.
//!
//! **In front of a Redis Cluster** the lease is one key on one shard, and
//! a shard's outage counts as an outage here: while any slot is
//! unreachable nobody renews (the last answer stands, as above), only the
//! holder takes durable writes to the down shard's keys, and the others
//! wait for its replay once the cluster serves every slot again (keeping
//! every durable key as during an outage meanwhile: they cannot tell which
//! keys the writer's journal holds).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use upstream::{HealthHandle, State, UpstreamUrl};

/// The key holding the writer's node id.
pub const LEASE_KEY: &str = "redoubt:outage-writer";
/// How long a lease lives without renewal: a writer that dies is replaced
/// after this.
pub const LEASE_MS: u64 = 10_000;
/// How often the lease is claimed or renewed while Redis answers.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// A cluster's "this node cannot be reached now" answers (the router's
/// own, and the cluster's while it fails over).
fn unreachable(err: &[u8]) -> bool {
    let text = String::from_utf8_lossy(err);
    text.contains("could not reach cluster node")
        || text.starts_with("CLUSTERDOWN")
        || text.starts_with("TRYAGAIN")
}

/// Claims the lease if free or ours (and renews it, counting renewals and
/// saying whether our journal is replaying); else returns the lease's
/// value. A bare node id is the form older versions wrote.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
local node, seq = nil, 0 \
if v then node, seq = string.match(v, '^(%S+) (%d+)') if node == nil then node, seq = v, 0 end end \
if v == false or node == ARGV[1] then \
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. (tonumber(seq) + 1) .. ' ' .. ARGV[3], 'PX', ARGV[2]) return 1 \
else return v end";

/// The lease's value, as [`CLAIM`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's node id.
    pub node: String,
    /// How many times the holder has claimed or renewed it.
    pub seq: u64,
    /// True while the holder's journal holds outage writes not yet replayed.
    pub replaying: bool,
}

impl Lease {
    /// Reads a lease value; a bare node id (older versions) has seq 0.
    pub fn parse(v: &[u8]) -> Lease {
        let v = String::from_utf8_lossy(v);
        let mut parts = v.split(' ');
        let node = parts.next().unwrap_or_default().to_string();
        let seq = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let replaying = parts.next() == Some("1");
        Lease {
            node,
            seq,
            replaying,
        }
    }
}

/// What an instance that was not the writer waits for after an outage.
#[derive(Debug)]
struct Wait {
    /// The node that held the lease when Redis went away.
    writer: String,
    /// The lease's renewal count when Redis was first seen answering.
    baseline: Option<u64>,
    /// When Redis was first seen answering again.
    answering_since: Option<tokio::time::Instant>,
}

/// Whether this instance takes durable writes during an outage.
pub struct Writer {
    holds: AtomicBool,
    /// The node holding the lease when it is not us.
    other: Mutex<Option<String>>,
    never: bool,
    /// True from an outage another instance held the lease through until
    /// its replay is over (durable keys stay local meanwhile).
    waiting: AtomicBool,
    /// Redis has answered about the lease at least once: until then
    /// `holds` is only the default (as if alone).
    answered: AtomicBool,
}

impl Writer {
    /// An instance that takes outage writes (as if alone) until told
    /// otherwise by Redis.
    pub fn alone() -> Arc<Writer> {
        Arc::new(Writer {
            holds: AtomicBool::new(true),
            other: Mutex::default(),
            never: false,
            waiting: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        })
    }

    /// `writer = "never"`: this instance never takes outage writes.
    pub fn never() -> Arc<Writer> {
        Arc::new(Writer {
            holds: AtomicBool::new(false),
            other: Mutex::default(),
            never: true,
            waiting: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        })
    }

    /// True when durable writes may be taken during an outage.
    pub fn holds(&self) -> bool {
        self.holds.load(Ordering::Acquire)
    }

    /// True once Redis has answered about the lease (a claim, a renewal,
    /// another holder, or a Redis that cannot keep one): before,
    /// [`holds`](Self::holds) is the default of an instance alone.
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// True while this instance keeps its durable keyspaces as during the
    /// outage because another one may still be replaying its writes.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Why this instance does not take durable writes now (during an
    /// outage, or after it while `redis_answers` and it waits).
    pub fn refusal(&self, redis_answers: bool) -> String {
        let other = self.other.lock().ok().and_then(|o| o.clone());
        if self.waiting() && redis_answers {
            let node = other.as_deref().unwrap_or("?");
            return format!(
                "another Redoubt (node {node}) took durable writes during the outage and may still be replaying them into redis; retry in a moment"
            );
        }
        if self.never {
            return "this Redoubt is configured [outage] writer = \"never\"".into();
        }
        match other {
            Some(node) => format!(
                "another Redoubt (node {node}) takes durable writes during this outage; send writes there"
            ),
            None => "this Redoubt did not hold the outage-writer lease when redis went away".into(),
        }
    }

    /// For `/status`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "takes_outage_writes": self.holds(),
            "lease_answered": self.answered(),
            "never": self.never,
            "other_writer": self.other.lock().ok().and_then(|o| o.clone()),
            "waiting_for_writer_replay": self.waiting(),
        })
    }

    /// Keeps the lease while Redis answers: claims it when free, renews it
    /// while ours, saying whether `replaying` (our journal holds outage
    /// writes). The last answer stands while Redis is down. After an
    /// outage another instance held the lease through, waits for its
    /// replay (the module's doc), holding `health` in Recovering meanwhile.
    pub fn spawn_lease(
        self: &Arc<Self>,
        url: UpstreamUrl,
        node_id: String,
        health: HealthHandle,
        replaying: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let hs = url.control_handshake(2, "redoubt-lease");
            let mut conn: Option<upstream::Conn> = None;
            let mut warned = false;
            let mut wait: Option<Wait> = None;
            let mut rx = health.subscribe();
            // In front of a cluster a shard's outage leaves the state Up:
            // the cluster says when what it reaches changes.
            let cluster = url.cluster.clone();
            let mut reach = cluster.as_ref().map(|c| c.reach_changed());
            loop {
                if let Some(r) = reach.as_mut() {
                    r.mark_unchanged();
                }
                if Arc::strong_count(&me) == 1 {
                    health.hold_for_writer(false);
                    return;
                }
                let shard_down = cluster.as_ref().is_some_and(|c| c.degraded());
                if health.state() == State::Down || shard_down {
                    if wait.is_none() && !me.holds() {
                        if let Some(writer) = me.other.lock().ok().and_then(|o| o.clone()) {
                            // Held before Redis can be seen answering, so no
                            // write slips through to it in between.
                            health.hold_for_writer(true);
                            me.waiting.store(true, Ordering::Release);
                            wait = Some(Wait {
                                writer,
                                baseline: None,
                                answering_since: None,
                            });
                        }
                    }
                } else {
                    if conn.as_ref().is_none_or(|c| !c.is_alive()) {
                        conn =
                            upstream::Conn::connect(&url.endpoint(), &hs, Duration::from_secs(2))
                                .await
                                .ok();
                    }
                    if let Some(w) = wait.as_mut() {
                        if me.wait_done(w, conn.as_ref()).await {
                            wait = None;
                            me.waiting.store(false, Ordering::Release);
                            health.hold_for_writer(false);
                        }
                    } else if let Some(c) = &conn {
                        me.renew(c, &node_id, replaying(), &mut warned).await;
                    }
                }
                let pause = if wait.is_some() {
                    Duration::from_millis(200)
                } else {
                    RENEW_EVERY
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = rx.changed() => {}
                    _ = upstream::cluster::reach_news(reach.as_mut()) => {}
                }
            }
        });
    }

    /// One claim or renewal (a read of the lease for `writer = "never"`).
    async fn renew(&self, c: &upstream::Conn, node_id: &str, replaying: bool, warned: &mut bool) {
        if self.never {
            if let Ok(resp::Frame::Bulk(v)) =
                c.call(&["GET", LEASE_KEY], Duration::from_secs(2)).await
            {
                self.set(false, Some(Lease::parse(&v).node));
            }
            return;
        }
        let ttl = LEASE_MS.to_string();
        let flag = if replaying { "1" } else { "0" };
        let args = ["EVAL", CLAIM, "1", LEASE_KEY, node_id, &ttl, flag];
        match c.call(&args, Duration::from_secs(2)).await {
            Ok(resp::Frame::Integer(1)) => self.set(true, None),
            Ok(resp::Frame::Bulk(v)) => {
                let other = Lease::parse(&v).node;
                if self.holds() || !*warned {
                    tracing::warn!(
                        other_node = %other,
                        "another Redoubt holds the outage-writer lease: during an outage this one serves durable reads and refuses durable writes"
                    );
                    *warned = true;
                }
                self.set(false, Some(other));
            }
            // The lease's cluster shard cannot be reached now: the last
            // answer stands, as during an outage.
            Ok(resp::Frame::Error(e)) if unreachable(&e) => {}
            Ok(f) => {
                if !*warned {
                    let text = f
                        .error_text()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    tracing::warn!(
                        reply = %text,
                        "the outage-writer lease cannot be kept (Redoubt's user needs EVAL and the key {LEASE_KEY}): this Redoubt takes durable writes during an outage as if it were alone"
                    );
                    *warned = true;
                }
                self.set(true, None);
            }
            Err(_) => {}
        }
    }

    /// True once the wait after an outage is over: the writer renewed the
    /// lease since Redis answers and says its journal is drained, another
    /// node holds it, or the writer stayed silent past a lease's life.
    async fn wait_done(&self, w: &mut Wait, conn: Option<&upstream::Conn>) -> bool {
        let now = tokio::time::Instant::now();
        let since = *w.answering_since.get_or_insert(now);
        let lease = match conn.map(|c| c.call(&["GET", LEASE_KEY], Duration::from_secs(2))) {
            Some(call) => match call.await {
                Ok(resp::Frame::Bulk(v)) => Some(Lease::parse(&v)),
                Ok(resp::Frame::Null) => None,
                // No answer to judge by: the silence bound below still runs.
                _ => None,
            },
            None => None,
        };
        if let Some(l) = &lease {
            if l.node != w.writer {
                tracing::info!(
                    writer = %w.writer, holder = %l.node,
                    "the outage's writer no longer holds the lease: taking writes to redis again"
                );
                return true;
            }
            match w.baseline {
                None => w.baseline = Some(l.seq),
                Some(b) if l.seq > b && !l.replaying => {
                    tracing::info!(
                        writer = %w.writer,
                        "the outage's writer has replayed its journal: taking writes to redis again"
                    );
                    return true;
                }
                Some(b) if l.seq > b => {
                    // Renewed and still replaying: alive, so the silence
                    // bound starts again.
                    w.baseline = Some(l.seq);
                    w.answering_since = Some(now);
                    return false;
                }
                Some(_) => {}
            }
        }
        if now.duration_since(since) > Duration::from_millis(LEASE_MS) + RENEW_EVERY {
            tracing::warn!(
                writer = %w.writer,
                "the outage's writer has not renewed the lease since redis came back: taken as gone, taking writes to redis again; its journal replays when it starts"
            );
            return true;
        }
        false
    }

    fn set(&self, holds: bool, other: Option<String>) {
        self.holds.store(holds, Ordering::Release);
        if let Ok(mut o) = self.other.lock() {
            *o = other;
        }
        self.answered.store(true, Ordering::Release);
    }
}
