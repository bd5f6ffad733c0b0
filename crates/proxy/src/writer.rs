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
//! The lease is one key, [`LEASE_KEY`], holding the writer's node id with
//! a TTL, claimed or renewed by a small script every
//! [`RENEW_EVERY`] while Redis answers. An instance with
//! `[outage] writer = "never"` never claims it. If Redis refuses the
//! script (no `EVAL` for Redoubt's user), the lease cannot be kept: the
//! instance takes writes as if alone, and says so once.

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

/// Claims the lease if free or ours (and renews it); else returns the
/// holder's node id.
const CLAIM: &str = "local v = redis.call('GET', KEYS[1]) \
if v == false or v == ARGV[1] then \
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 \
else return v end";

/// Whether this instance takes durable writes during an outage.
pub struct Writer {
    holds: AtomicBool,
    /// The node holding the lease when it is not us.
    other: Mutex<Option<String>>,
    never: bool,
}

impl Writer {
    /// An instance that takes outage writes (as if alone) until told
    /// otherwise by Redis.
    pub fn alone() -> Arc<Writer> {
        Arc::new(Writer {
            holds: AtomicBool::new(true),
            other: Mutex::default(),
            never: false,
        })
    }

    /// `writer = "never"`: this instance never takes outage writes.
    pub fn never() -> Arc<Writer> {
        Arc::new(Writer {
            holds: AtomicBool::new(false),
            other: Mutex::default(),
            never: true,
        })
    }

    /// True when durable writes may be taken during an outage.
    pub fn holds(&self) -> bool {
        self.holds.load(Ordering::Acquire)
    }

    /// Why this instance does not take outage writes.
    pub fn refusal(&self) -> String {
        if self.never {
            return "this Redoubt is configured [outage] writer = \"never\"".into();
        }
        match self.other.lock().ok().and_then(|o| o.clone()) {
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
            "never": self.never,
            "other_writer": self.other.lock().ok().and_then(|o| o.clone()),
        })
    }

    /// Keeps the lease while Redis answers: claims it when free, renews it
    /// while ours. The last answer stands while Redis is down.
    pub fn spawn_lease(self: &Arc<Self>, url: UpstreamUrl, node_id: String, health: HealthHandle) {
        if self.never {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let hs = url.control_handshake(2, "redoubt-lease");
            let mut conn: Option<upstream::Conn> = None;
            let mut warned = false;
            let mut rx = health.subscribe();
            loop {
                if Arc::strong_count(&me) == 1 {
                    return;
                }
                if health.state() != State::Down {
                    if conn.as_ref().is_none_or(|c| !c.is_alive()) {
                        conn =
                            upstream::Conn::connect(&url.endpoint(), &hs, Duration::from_secs(2))
                                .await
                                .ok();
                    }
                    if let Some(c) = &conn {
                        let ttl = LEASE_MS.to_string();
                        let args = ["EVAL", CLAIM, "1", LEASE_KEY, &node_id, &ttl];
                        match c.call(&args, Duration::from_secs(2)).await {
                            Ok(resp::Frame::Integer(1)) => me.set(true, None),
                            Ok(resp::Frame::Bulk(other)) => {
                                let other = String::from_utf8_lossy(&other).into_owned();
                                if me.holds() || !warned {
                                    tracing::warn!(
                                        other_node = %other,
                                        "another Redoubt holds the outage-writer lease: during an outage this one serves durable reads and refuses durable writes"
                                    );
                                    warned = true;
                                }
                                me.set(false, Some(other));
                            }
                            Ok(f) => {
                                if !warned {
                                    let text = f
                                        .error_text()
                                        .map(|t| String::from_utf8_lossy(t).into_owned())
                                        .unwrap_or_default();
                                    tracing::warn!(
                                        reply = %text,
                                        "the outage-writer lease cannot be kept (Redoubt's user needs EVAL and the key {LEASE_KEY}): this Redoubt takes durable writes during an outage as if it were alone"
                                    );
                                    warned = true;
                                }
                                me.set(true, None);
                            }
                            Err(_) => {}
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = rx.changed() => {}
                }
            }
        });
    }

    fn set(&self, holds: bool, other: Option<String>) {
        self.holds.store(holds, Ordering::Release);
        if let Ok(mut o) = self.other.lock() {
            *o = other;
        }
    }
}
