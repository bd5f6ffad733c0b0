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
//! Not built yet: `cache` keyspaces (served from the near-cache), the
//! Recovering state on `/readyz`, credentials checks during an outage.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use journal::{Entry, Journal, JournalError};
use store::Store;
use upstream::{HealthHandle, State, UpstreamUrl};

use crate::incident::IncidentCounters;
use crate::policy::{outage_rule, Keyspaces, OutageRule, Policy};
use crate::replay::{ReplayConfig, ReplayOutcome, Replayer};
use crate::reply;

/// A reply that may only be sent once its journal entry is durable.
pub type Durable = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<journal::Position, JournalError>> + Send>,
>;

/// Where a command goes.
pub enum Route {
    /// To Redis, as usual.
    Upstream,
    /// Answered here: the reply, and the journal append it waits for.
    Local(Bytes, Option<Durable>),
}

/// Local serving of durable keyspaces and the journal behind it.
pub struct Outage {
    keyspaces: Keyspaces,
    store: Store,
    journal: Arc<Journal>,
    order: tokio::sync::Mutex<()>,
    /// Keys whose whole value is local (db, key).
    known: Mutex<HashSet<(u32, Bytes)>>,
    /// Keys with journal records not replayed yet: served locally even
    /// when Redis is back, until the replay has drained.
    dirty: Mutex<HashSet<(u32, Bytes)>>,
    /// True while anything is dirty: the Up fast path checks only this.
    active: AtomicBool,
    /// The recovery task's replay progress, for `/status`.
    progress: Mutex<Option<crate::replay::ProgressHandle>>,
    counters: Arc<IncidentCounters>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Commands after which a key's whole value is known.
const OVERWRITES: &[&str] = &["set", "setex", "psetex", "mset", "del", "unlink"];

/// The journal form of an outage write: relative expiries as absolute
/// Unix-ms times, so replaying later means the same instant.
pub fn absolute(args: &[Bytes], now: u64) -> Vec<Bytes> {
    let lower = |b: &Bytes| b.to_ascii_lowercase();
    let num = |b: &Bytes| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
    };
    let name = args.first().map(lower).unwrap_or_default();
    let at = |ms: i64| Bytes::from((now as i64 + ms).to_string());
    match &name[..] {
        b"setex" | b"psetex" if args.len() == 4 => {
            let mult = if &name[..] == b"setex" { 1000 } else { 1 };
            match num(&args[2]) {
                Some(t) => vec![
                    Bytes::from_static(b"SET"),
                    args[1].clone(),
                    args[3].clone(),
                    Bytes::from_static(b"PXAT"),
                    at(t * mult),
                ],
                None => args.to_vec(),
            }
        }
        b"expire" | b"pexpire" if args.len() >= 3 => {
            let mult = if &name[..] == b"expire" { 1000 } else { 1 };
            match num(&args[2]) {
                Some(t) => {
                    let mut v = vec![
                        Bytes::from_static(b"PEXPIREAT"),
                        args[1].clone(),
                        at(t * mult),
                    ];
                    v.extend_from_slice(&args[3..]);
                    v
                }
                None => args.to_vec(),
            }
        }
        b"set" | b"getex" => {
            let mut v = args.to_vec();
            let mut i = if &name[..] == b"set" { 3 } else { 2 };
            while i + 1 < v.len() {
                let opt = lower(&v[i]);
                let mult = match &opt[..] {
                    b"ex" => Some(1000),
                    b"px" => Some(1),
                    _ => None,
                };
                if let (Some(m), Some(t)) = (mult, num(&v[i + 1])) {
                    v[i] = Bytes::from_static(b"PXAT");
                    v[i + 1] = at(t * m);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            v
        }
        _ => args.to_vec(),
    }
}

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
        let o = Outage {
            keyspaces,
            store,
            journal,
            order: tokio::sync::Mutex::new(()),
            known: Mutex::default(),
            dirty: Mutex::default(),
            active: AtomicBool::new(false),
            progress: Mutex::default(),
            counters,
        };
        if o.journal.pending_entries() > 0 {
            for entry in o.journal.replay_all()? {
                let entry = entry?;
                for cmd in &entry.commands {
                    o.store.apply(entry.db as usize, cmd);
                    o.mark(entry.db, cmd);
                }
            }
        }
        Ok(Arc::new(o))
    }

    /// The counters it adds to (shared with the proxy's incident log).
    pub fn counters(&self) -> Arc<IncidentCounters> {
        self.counters.clone()
    }

    /// The keyspace rules.
    pub fn keyspaces(&self) -> &Keyspaces {
        &self.keyspaces
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn keys(args: &[Bytes]) -> Vec<Bytes> {
        resp::lookup(args)
            .map(|s| {
                s.key_indices(args)
                    .into_iter()
                    .map(|i| args[i].clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mark(&self, db: u32, args: &[Bytes]) {
        let keys = Self::keys(args);
        let overwrite = resp::lookup(args).is_some_and(|s| OVERWRITES.contains(&s.name));
        if let Ok(mut d) = self.dirty.lock() {
            d.extend(keys.iter().map(|k| (db, k.clone())));
        }
        if overwrite {
            if let Ok(mut k) = self.known.lock() {
                k.extend(keys.into_iter().map(|k| (db, k)));
            }
        }
        self.active.store(true, Ordering::Release);
    }

    fn all_in(set: &Mutex<HashSet<(u32, Bytes)>>, db: u32, keys: &[Bytes]) -> bool {
        set.lock()
            .map(|s| keys.iter().all(|k| s.contains(&(db, k.clone()))))
            .unwrap_or(false)
    }

    fn any_in(set: &Mutex<HashSet<(u32, Bytes)>>, db: u32, keys: &[Bytes]) -> bool {
        set.lock()
            .map(|s| keys.iter().any(|k| s.contains(&(db, k.clone()))))
            .unwrap_or(false)
    }

    /// Decides where a keyed command goes in `state`, and runs it here when
    /// it stays local. `session` is the client's store session (its db is
    /// kept in step with the client's).
    pub async fn route(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
    ) -> Route {
        if state == State::Up && !self.active.load(Ordering::Acquire) {
            return Route::Upstream;
        }
        let keys = Self::keys(args);
        if keys.is_empty() {
            // The handshake a reconnecting client sends is answered here,
            // so its health checks pass while its durable keys are served.
            let name = resp::lookup(args).map(|s| s.name).unwrap_or("");
            if state == State::Down && matches!(name, "ping" | "echo" | "time") {
                let out = self.store.execute(session, args.to_vec()).await;
                return Route::Local(out.reply.to_bytes(), None);
            }
            return Route::Upstream;
        }
        let durable = keys
            .iter()
            .all(|k| self.keyspaces.policy(k) == Policy::Durable);
        let dirty = durable && Self::any_in(&self.dirty, db, &keys);
        let rule = outage_rule(args);
        let local = match state {
            State::Down => true,
            State::WritesDown => {
                dirty || matches!(rule, OutageRule::Blind | OutageRule::ValueDependent)
            }
            _ => dirty,
        };
        if !local {
            return Route::Upstream;
        }
        if !durable {
            // Fail-fast (and, until the near-cache serves them, cache) keys,
            // or a command mixing keyspaces: Redis's answer is needed.
            if state == State::Down {
                return Route::Local(self.refuse("its keys are not in a durable keyspace"), None);
            }
            return Route::Upstream;
        }
        let name = resp::lookup(args).map(|s| s.name).unwrap_or("?");
        let known = Self::all_in(&self.known, db, &keys);
        match rule {
            OutageRule::Never => {
                return Route::Local(
                    self.refuse(&format!("'{name}' is not allowed during an outage")),
                    None,
                )
            }
            OutageRule::Read | OutageRule::ValueDependent if !known => {
                return Route::Local(self.refuse("value unknown locally"), None)
            }
            _ => {}
        }
        if session.db() != db as usize {
            let _ = self
                .store
                .execute(
                    session,
                    vec![Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())],
                )
                .await;
        }
        self.counters.served_locally.fetch_add(1, Ordering::Relaxed);
        if rule == OutageRule::Read {
            let out = self.store.execute(session, args.to_vec()).await;
            return Route::Local(out.reply.to_bytes(), None);
        }
        if let Some(e) = self.journal.refusal() {
            return Route::Local(
                reply::error(format!("UNAVAILABLE {e}: command not executed")),
                None,
            );
        }
        // Execute and append under one lock: journal order = store order.
        let _order = self.order.lock().await;
        let out = self.store.execute(session, args.to_vec()).await;
        if out.reply.is_error() {
            return Route::Local(out.reply.to_bytes(), None);
        }
        let entry = Entry::command(db, absolute(args, now_ms()), now_ms());
        let durable: Durable = Box::pin(self.journal.append(entry));
        self.mark(db, args);
        self.counters.journaled.fetch_add(1, Ordering::Relaxed);
        Route::Local(out.reply.to_bytes(), Some(durable))
    }

    fn refuse(&self, why: &str) -> Bytes {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        reply::error(format!(
            "UNAVAILABLE redis is down and {why}: command not executed"
        ))
    }

    /// A store session for one client.
    pub fn session(&self) -> store::Session {
        self.store.session()
    }

    /// Replays the journal whenever Redis is Up and records are pending,
    /// then forgets the local state (Redis has it all).
    pub fn spawn_recovery(
        self: &Arc<Self>,
        url: UpstreamUrl,
        data_dir: std::path::PathBuf,
        node_id: String,
        health: HealthHandle,
    ) {
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
            loop {
                me.publish_gauges();
                if health.state() == State::Up && me.journal.pending_entries() > 0 {
                    match replayer.run_until_drained().await {
                        Ok(ReplayOutcome::Drained { replayed, failed }) => {
                            tracing::info!(replayed, failed, "journal replayed into redis");
                            let _order = me.order.lock().await;
                            if me.journal.pending_entries() == 0 {
                                me.forget();
                            }
                            continue;
                        }
                        Ok(other) => tracing::warn!(?other, "replay stopped; will retry"),
                        Err(e) => tracing::error!(error = %e, "replay failed; will retry"),
                    }
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
    }

    fn publish_gauges(&self) {
        metrics::gauge!(crate::metrics::JOURNAL_PENDING).set(self.journal.pending_entries() as f64);
        metrics::gauge!(crate::metrics::JOURNAL_BYTES).set(self.journal.bytes() as f64);
    }

    /// For `/status`: journal depth and bytes, replay progress, whether
    /// keys are being served locally.
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
            "refusing": self.journal.refusal().map(|e| e.to_string()),
            "replay": replay,
        })
    }

    fn forget(&self) {
        let _ = self.store.apply(0, &[Bytes::from_static(b"FLUSHALL")]);
        if let Ok(mut k) = self.known.lock() {
            k.clear();
        }
        if let Ok(mut d) = self.dirty.lock() {
            d.clear();
        }
        self.active.store(false, Ordering::Release);
    }
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
