//! The incident log: one record per outage (Redis Down or rejecting
//! writes), appended to `<data_dir>/incidents.jsonl` when it ends and kept
//! in memory for `GET /incidents`.
//!
//! An incident opens when the state leaves Up and closes when it returns.
//! The doctor's findings from the moment it went down (and came back) are
//! attached, so the record says what happened and why.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge};
use serde::Serialize;
use upstream::{HealthHandle, State};

use crate::metrics::{OUTAGES_TOTAL, OUTAGE_CURRENT_SECONDS, OUTAGE_SECONDS_TOTAL};

/// How many finished incidents `GET /incidents` keeps in memory.
const KEEP: usize = 100;

/// Counts the data path adds to the open incident.
#[derive(Debug, Default)]
pub struct IncidentCounters {
    /// Commands answered from the local store.
    pub served_locally: AtomicU64,
    /// Durable writes journaled.
    pub journaled: AtomicU64,
    /// Commands refused (`-UNAVAILABLE`).
    pub rejected: AtomicU64,
    /// Journal commands replayed into Redis.
    pub replayed: AtomicU64,
    /// Replayed commands Redis refused (in `replay-failed.jsonl`).
    pub failed: AtomicU64,
}

impl IncidentCounters {
    fn snapshot(&self) -> [u64; 5] {
        [
            self.served_locally.load(Ordering::Relaxed),
            self.journaled.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.replayed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ]
    }
}

/// One outage.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// Start, Unix ms.
    pub started_at_ms: u64,
    /// End, Unix ms; `None` while open.
    pub ended_at_ms: Option<u64>,
    /// The state that opened it (`down`, `writes_down`).
    pub state: &'static str,
    /// The prober's reason at the start.
    pub cause: String,
    /// Commands answered locally.
    pub served_locally: u64,
    /// Durable writes journaled.
    pub journaled: u64,
    /// Journal records replayed to Redis.
    pub replayed: u64,
    /// Replayed commands Redis refused.
    pub failed: u64,
    /// Commands refused.
    pub rejected: u64,
    /// Doctor findings attached while it was open (JSON reports).
    pub diagnoses: Vec<serde_json::Value>,
    /// Where the commands Redis refused at replay are, when any were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_failed_log: Option<String>,
    /// Remediation commands run while it was open (JSON: attempt, exit,
    /// first lines of output), so the record says what was tried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remediation: Vec<serde_json::Value>,
    /// Durable keys written back into a Redis that came back without them
    /// (JSON: keys, bytes, ms, replication IDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored: Vec<serde_json::Value>,
    /// Sentinel failovers of the primary during it (JSON: from, to,
    /// duration, what started it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<serde_json::Value>,
    /// In front of a Redis Cluster: each primary found unreachable during
    /// it (JSON: primary, slot ranges and count, since when, why).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<serde_json::Value>,
}

/// How often the cluster follower looks at the shards.
const CLUSTER_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Called with each incident as it closes (webhook alerts).
type CloseHook = Box<dyn Fn(&Incident) + Send + Sync>;

/// The log. Cheap to share.
pub struct IncidentLog {
    path: Option<PathBuf>,
    open: Mutex<Option<Incident>>,
    done: Mutex<VecDeque<Incident>>,
    /// Bumped by the data path; folded into the open incident.
    pub counters: Arc<IncidentCounters>,
    baseline: Mutex<[u64; 5]>,
    on_close: Mutex<Vec<CloseHook>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl IncidentLog {
    /// A log appending to `path` (`None`: memory only), preloaded with the
    /// last incidents already in the file.
    pub fn new(path: Option<PathBuf>, counters: Arc<IncidentCounters>) -> Arc<IncidentLog> {
        let mut done = VecDeque::new();
        if let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            for line in text.lines().rev().take(KEEP) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    done.push_front(v);
                }
            }
        }
        let done = done.into_iter().filter_map(incident_from_json).collect();
        // Present from the start, so "no outage" reads 0 rather than absent.
        gauge!(OUTAGE_CURRENT_SECONDS).set(0.0);
        Arc::new(IncidentLog {
            path,
            open: Mutex::new(None),
            done: Mutex::new(done),
            counters,
            baseline: Mutex::new([0; 5]),
            on_close: Mutex::new(Vec::new()),
        })
    }

    /// Folds what the data path counted since the incident opened into it.
    fn fill_counts(&self, i: &mut Incident) {
        let now = self.counters.snapshot();
        let base = self.baseline.lock().map(|b| *b).unwrap_or([0; 5]);
        let d = |k: usize| now[k].saturating_sub(base[k]);
        i.served_locally = d(0);
        i.journaled = d(1);
        i.rejected = d(2);
        i.replayed = d(3);
        i.failed = d(4);
        if i.failed > 0 {
            i.replay_failed_log = self
                .path
                .as_ref()
                .and_then(|p| p.parent())
                .map(|d| d.join("replay-failed.jsonl").display().to_string());
        }
    }

    /// Sets `redoubt_outage_current_seconds` to how long the open incident
    /// has lasted (0 when none is open). `redoubt_outage_seconds_total`
    /// only moves when an outage ends, so without this an outage in
    /// progress is invisible to an alert on its length; called when
    /// `/metrics` is rendered, so the value is as of the scrape.
    pub fn publish_current(&self) {
        let Ok(open) = self.open.lock() else {
            return;
        };
        // Set under the lock: a close racing with this cannot have its 0
        // overwritten by the length of the outage it just ended.
        let secs = open.as_ref().map_or(0.0, |i| {
            now_ms().saturating_sub(i.started_at_ms) as f64 / 1000.0
        });
        gauge!(OUTAGE_CURRENT_SECONDS).set(secs);
    }

    /// Opens an incident if none is open.
    pub fn open(&self, state: State, cause: &str) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if open.is_some() {
            return;
        }
        if let Ok(mut b) = self.baseline.lock() {
            *b = self.counters.snapshot();
        }
        counter!(OUTAGES_TOTAL).increment(1);
        *open = Some(Incident {
            started_at_ms: now_ms(),
            ended_at_ms: None,
            state: state.as_str(),
            cause: cause.to_string(),
            served_locally: 0,
            journaled: 0,
            replayed: 0,
            failed: 0,
            rejected: 0,
            diagnoses: Vec::new(),
            replay_failed_log: None,
            remediation: Vec::new(),
            restored: Vec::new(),
            failovers: Vec::new(),
            shards: Vec::new(),
        });
    }

    /// Adds replay results to the open incident.
    pub fn add_replay(&self, replayed: u64, failed: u64) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(i) = open.as_mut() {
                i.replayed += replayed;
                i.failed += failed;
            }
        }
    }

    /// Records a remediation attempt in the open incident (dropped when
    /// none is open: the outage it was for is over).
    pub fn add_remediation(&self, attempt: serde_json::Value) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(i) = open.as_mut() {
                i.remediation.push(attempt);
            }
        }
    }

    /// Records a restore of lost durable keys in the open incident (or the
    /// last one, when it closed first).
    pub fn add_restore(&self, facts: serde_json::Value) {
        self.add_to_current(|i| i.restored.push(facts));
    }

    /// Records a Sentinel failover in the open incident (or the last one,
    /// when it closed first: Up can come before the failover's end is
    /// written down).
    ///
    /// `journaled` is added: the durable writes the incident had journaled
    /// when the new primary answered (the incident opens when the failover
    /// begins, or a moment before when the primary died first).
    pub fn add_failover(&self, mut facts: serde_json::Value) {
        let journaled = self.open.lock().ok().and_then(|o| {
            o.as_ref().map(|i| {
                let mut i = i.clone();
                self.fill_counts(&mut i);
                i.journaled
            })
        });
        if let (Some(n), Some(obj)) = (journaled, facts.as_object_mut()) {
            obj.insert("journaled".into(), n.into());
        }
        self.add_to_current(|i| i.failovers.push(facts));
    }

    fn add_to_current(&self, add: impl FnOnce(&mut Incident)) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(i) = open.as_mut() {
                add(i);
                return;
            }
        }
        if let Ok(mut done) = self.done.lock() {
            if let Some(last) = done.back_mut() {
                add(last);
            }
        }
    }

    /// Calls `hook` with every incident as it closes. The hook runs on the
    /// task that follows the health state: it must only hand the record
    /// on, never wait.
    pub fn on_close(&self, hook: impl Fn(&Incident) + Send + Sync + 'static) {
        if let Ok(mut hooks) = self.on_close.lock() {
            hooks.push(Box::new(hook));
        }
    }

    /// Attaches a diagnosis to the open incident (or to the last one, when
    /// the diagnosis ran just after it closed).
    pub fn attach(&self, diagnosis: serde_json::Value) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(i) = open.as_mut() {
                i.diagnoses.push(diagnosis);
                return;
            }
        }
        if let Ok(mut done) = self.done.lock() {
            if let Some(last) = done.back_mut() {
                last.diagnoses.push(diagnosis);
                // Rewrite is not worth it for one late attachment: the file
                // keeps what was known at close; memory has the rest.
            }
        }
    }

    /// Closes the open incident, appends it to the file, and returns it.
    pub fn close(&self) -> Option<Incident> {
        let mut inc = self.open.lock().ok()?.take()?;
        self.fill_counts(&mut inc);
        let end = now_ms();
        inc.ended_at_ms = Some(end);
        counter!(OUTAGE_SECONDS_TOTAL).increment(end.saturating_sub(inc.started_at_ms) / 1000);
        gauge!(OUTAGE_CURRENT_SECONDS).set(0.0);
        if let Some(p) = &self.path {
            let line = serde_json::to_string(&inc).unwrap_or_default();
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!(path = %p.display(), error = %e, "cannot append to the incident log");
            }
        }
        if let Ok(mut done) = self.done.lock() {
            done.push_back(inc.clone());
            while done.len() > KEEP {
                done.pop_front();
            }
        }
        if let Ok(hooks) = self.on_close.lock() {
            for hook in hooks.iter() {
                hook(&inc);
            }
        }
        Some(inc)
    }

    /// JSON for `GET /incidents`: the open one (if any) and the recent ones.
    pub fn to_json(&self) -> serde_json::Value {
        let open = self.open.lock().ok().and_then(|o| o.clone()).map(|mut i| {
            self.fill_counts(&mut i);
            i
        });
        let done: Vec<Incident> = self
            .done
            .lock()
            .map(|d| d.iter().rev().cloned().collect())
            .unwrap_or_default();
        serde_json::json!({ "open": open, "recent": done })
    }

    /// In front of a Redis Cluster: a primary Redoubt cannot reach opens
    /// an incident while the upstream as a whole stays Up (its slots are
    /// in an outage of their own), each such primary is recorded in it,
    /// and so is each failover the slot map shows. It closes once no slot
    /// is unreachable and the health state is Up (a journal still being
    /// replayed holds it in Recovering: [`IncidentLog::spawn_follower`]
    /// closes it at Up then).
    pub fn spawn_cluster_follower(
        self: &Arc<Self>,
        cluster: Arc<upstream::cluster::Cluster>,
        health: HealthHandle,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            // Primaries recorded in the open incident, and when the
            // newest failover already recorded happened.
            let mut recorded: Vec<String> = Vec::new();
            let mut last_failover = cluster.status().failovers.last().map(|f| f.at_unix_ms);
            loop {
                tokio::time::sleep(CLUSTER_WATCH_EVERY).await;
                let status = cluster.status();
                let open = me.open.lock().map(|o| o.is_some()).unwrap_or(false);
                if !open {
                    recorded.clear();
                }
                for shard in status.shards.iter().filter(|s| !s.reachable) {
                    if recorded.contains(&shard.primary) {
                        continue;
                    }
                    let why = shard.error.clone().unwrap_or_default();
                    me.open(
                        State::Down,
                        &format!(
                            "redis cluster primary {} unreachable ({} slots): {why}",
                            shard.primary, shard.slot_count
                        ),
                    );
                    me.add_to_current(|i| {
                        i.shards.push(serde_json::json!({
                            "primary": shard.primary,
                            "slots": shard.slots,
                            "slot_count": shard.slot_count,
                            "down_since_unix_ms": shard.down_since_unix_ms,
                            "error": why,
                        }))
                    });
                    recorded.push(shard.primary.clone());
                }
                let newest = status.failovers.last().map(|f| f.at_unix_ms);
                if newest != last_failover {
                    // The list keeps the last few: those newer than the
                    // last one seen.
                    let new: Vec<_> = status
                        .failovers
                        .iter()
                        .filter(|f| last_failover.is_none_or(|t| f.at_unix_ms > t))
                        .collect();
                    for f in new {
                        me.add_failover(serde_json::to_value(f).unwrap_or_default());
                    }
                    last_failover = newest;
                }
                if !recorded.is_empty() && !cluster.degraded() && health.state() == State::Up {
                    if let Some(i) = me.close() {
                        tracing::warn!(cause = %i.cause, seconds = (i.ended_at_ms.unwrap_or(0) - i.started_at_ms) / 1000, journaled = i.journaled, "cluster shard outage over");
                    }
                    recorded.clear();
                }
            }
        });
    }

    /// Follows the health state: opens on leaving Up, closes on return.
    pub fn spawn_follower(self: &Arc<Self>, health: HealthHandle) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut rx = health.subscribe();
            loop {
                let (state, reason, failures) = {
                    let h = rx.borrow_and_update();
                    (h.state, h.reason.clone(), h.consecutive_failures)
                };
                match state {
                    // The Down a prober starts in, before any probe, is no
                    // outage: only a failed probe makes one.
                    State::Down if failures == 0 => {}
                    State::Down | State::WritesDown => me.open(state, &reason),
                    State::Up => {
                        if let Some(i) = me.close() {
                            tracing::warn!(cause = %i.cause, seconds = (i.ended_at_ms.unwrap_or(0) - i.started_at_ms) / 1000, rejected = i.rejected, "outage over");
                        }
                    }
                    State::Recovering | State::Standalone => {}
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

fn incident_from_json(v: serde_json::Value) -> Option<Incident> {
    let state = match v.get("state")?.as_str()? {
        "writes_down" => "writes_down",
        _ => "down",
    };
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    Some(Incident {
        started_at_ms: n("started_at_ms"),
        ended_at_ms: v.get("ended_at_ms").and_then(|x| x.as_u64()),
        state,
        cause: v
            .get("cause")
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string(),
        served_locally: n("served_locally"),
        journaled: n("journaled"),
        replayed: n("replayed"),
        failed: n("failed"),
        rejected: n("rejected"),
        diagnoses: v
            .get("diagnoses")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default(),
        replay_failed_log: v
            .get("replay_failed_log")
            .and_then(|x| x.as_str())
            .map(str::to_string),
        remediation: v
            .get("remediation")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default(),
        restored: v
            .get("restored")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default(),
        failovers: v
            .get("failovers")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default(),
        shards: v
            .get("shards")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_written_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incidents.jsonl");
        let log = IncidentLog::new(Some(path.clone()), Arc::default());
        log.counters.rejected.fetch_add(5, Ordering::Relaxed);
        log.open(State::Down, "2 probes failed: connection refused");
        log.counters.rejected.fetch_add(3, Ordering::Relaxed);
        log.attach(serde_json::json!({"id": "connection.refused"}));
        assert_eq!(log.to_json()["open"]["rejected"], 3);
        let inc = log.close().expect("an open incident");
        assert_eq!(inc.rejected, 3, "only what happened during the outage");
        assert!(inc.ended_at_ms.is_some());
        assert!(log.close().is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("connection.refused"));
        let again = IncidentLog::new(Some(path), Arc::default());
        assert_eq!(
            again.to_json()["recent"][0]["cause"],
            "2 probes failed: connection refused"
        );
    }
}
