//! Puts the journal back into Redis exactly once, in order: [`Replayer`],
//! and [`replay_dir`] for `redoubt journal replay DIR --to URL`.
//!
//! # Protocol
//! Records go to Redis in transactions of up to
//! [`batch_records`](ReplayConfig::batch_records) records, on one
//! connection:
//!
//! ```text
//! MULTI
//!   <record commands, a client's MULTI block inlined whole>
//!   SELECT n            (only where a record's db differs from the last)
//!   SELECT 0            (if the batch left db 0)
//!   SET redoubt:replay:{NODE_ID} epoch:segment:offset
//! EXEC
//! ```
//!
//! The checkpoint is the position after the batch's last record, so it
//! moves if and only if the batch's commands ran: a crash of Redoubt or of
//! Redis (with its own persistence) at any point neither loses nor repeats
//! a command. An `EXEC` whose reply was lost either happened (the
//! checkpoint moved) or did not. The journal is released up to a batch's
//! end once its `EXEC` succeeded.
//!
//! **Pipelining, and why only one `EXEC` is in flight.** A batch's `MULTI`
//! and commands are written while the previous batch's `EXEC` runs, so
//! Redis always has the next transaction queued; but `EXEC` is only sent
//! once the previous `EXEC` has succeeded and every command of this batch
//! answered `QUEUED`. Sending several `EXEC`s ahead would be faster by a
//! round trip per batch, but if one of them were refused (`EXECABORT …
//! OOM` when memory frees up a moment later, an unknown command) the
//! later ones would still run, applying records out of order and moving
//! the checkpoint past records that never ran.
//!
//! # Where replay starts
//! At every [`run_until_drained`](Replayer::run_until_drained), from the
//! checkpoint key in Redis (db 0): if its epoch is this journal's
//! ([`Journal::epoch`]), replay resumes at its position. Otherwise (no key,
//! a key from an older journal, or a value that does not parse) it starts
//! at the journal's release point ([`Journal::released`], kept across
//! restarts): a record released was acknowledged by Redis inside the same
//! `EXEC` as a checkpoint, and applying it again would apply it twice
//! whenever the key alone went missing (deleted, evicted, a new node id)
//! while the data stayed. Only a Redis with no key at all, one that came
//! back empty, gets the released records still on disk (segments kept for
//! `retain_after_replay`) again: it holds none of what they wrote.
//! A checkpoint whose segment was already deleted
//! resumes at the oldest segment on disk (with a warning); one past the
//! journal's end is an error (the journal was replaced: delete the key).
//!
//! # Failures
//! - A command failing inside `EXEC` (`WRONGTYPE` because another client
//!   changed the key meanwhile) is appended to `replay-failed.jsonl`
//!   ([`FailedCommand`]), counted, and replay goes on.
//! - A record that cannot run inside a transaction at all is recorded the
//!   same way and not sent: a db index Redis does not have, a wrong
//!   argument count, `EXEC`/`WATCH`/`SELECT` …, or a command Redis refuses
//!   when queuing it (unknown command, `NOPERM`): its batch is discarded
//!   and sent again without it. A client's transaction fails whole, as
//!   Redis would have failed it.
//! - `OOM`, `MISCONF` (and the other "not taking writes" errors:
//!   `READONLY`, `NOREPLICAS`, `LOADING`, `BUSY`, `MASTERDOWN`, `NOAUTH`)
//!   when queuing or at `EXEC` pause replay: the batch is discarded, the
//!   checkpoint stays, and [`ReplayOutcome::Paused`] says why; call again
//!   once Redis accepts writes. (Inside a running `EXEC` Redis 7 does not
//!   raise them; if one does, that command is recorded as failed — the
//!   rest of its transaction ran — and replay pauses after the batch.)
//! - A lost connection or a reply that does not come within
//!   [`reply_timeout`](ReplayConfig::reply_timeout) ends the run with
//!   [`ReplayOutcome::ConnectionLost`]; the next run reconnects and resumes
//!   from the checkpoint.
//! - A corrupt journal record stops replay just before it with
//!   [`ReplayError::Journal`]; it is never skipped.
//!
//! A line of `replay-failed.jsonl` may repeat if Redoubt dies after
//! writing it and before the checkpoint passed its record; the position
//! identifies it.
//!
//! # Layout
//! - this file: [`Replayer`], [`ReplayConfig`], [`ReplayOutcome`],
//!   [`ReplayError`], [`ReplayProgress`], [`replay_dir`].
//! - `batch` (private): encoding a transaction, checking records before
//!   sending, reading the replies.
//! - `failed`: [`FailedCommand`], [`read_failed_log`].

mod batch;
mod failed;
mod slots;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use journal::{
    Checkpoint, DataDirLock, Journal, JournalConfig, JournalError, LockError, Position, Reader,
    Record,
};
use metrics::{counter, Counter};
use resp::Frame;
use serde::{Serialize, Serializer};
use tokio::sync::{oneshot, watch};
use upstream::{BatchReply, Conn, ConnectError, Credentials, Handshake, UpstreamUrl, UrlError};

use batch::{Batch, Exec, Queued, Slot};
pub use failed::{read_failed_log, FailedCommand};
pub use slots::slot_key;

/// `redoubt_replayed_commands_total`: journaled commands that ran in Redis.
pub const REPLAYED_COMMANDS_TOTAL: &str = "redoubt_replayed_commands_total";
/// `redoubt_replay_errors_total`: journaled commands recorded in
/// `replay-failed.jsonl`.
pub const REPLAY_ERRORS_TOTAL: &str = "redoubt_replay_errors_total";
/// Name of the failed-commands file in the data dir.
pub const FAILED_LOG_FILE: &str = "replay-failed.jsonl";
/// Default [`ReplayConfig::batch_records`]: large enough that the round
/// trip between transactions is a few percent of their run time.
pub const DEFAULT_BATCH_RECORDS: usize = 1024;
/// Default [`ReplayConfig::batch_bytes`].
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Default [`ReplayConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`ReplayConfig::reply_timeout`]: generous, since a big batch on
/// a loaded Redis takes a while, but bounded so a hung Redis ends the run.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Name replay's connection gives itself (`CLIENT LIST`).
const CLIENT_NAME: &str = "redoubt-replay";

/// How much longer than `retain_after_replay` a drained checkpoint key
/// lives in Redis.
pub const CHECKPOINT_MARGIN: Duration = Duration::from_secs(3600);

/// The checkpoint key of a node: `redoubt:replay:{NODE_ID}`, braces
/// included (a cluster hash tag, so it stays put if Redis is sharded).
pub fn checkpoint_key(node_id: &str) -> String {
    format!("redoubt:replay:{{{node_id}}}")
}

/// How to reach Redis and how big the transactions are.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Where Redis is (plain or TLS).
    pub addr: upstream::Endpoint,
    /// Credentials for `AUTH`, if any (the upstream URL's).
    pub auth: Option<Credentials>,
    /// Records per transaction (a record larger than the rest still goes
    /// whole). At least 1.
    pub batch_records: usize,
    /// Bytes of arguments per transaction, so a few huge values do not
    /// make one enormous `MULTI`. A single larger record still goes whole.
    pub batch_bytes: usize,
    /// `<data_dir>/replay-failed.jsonl`.
    pub failed_log_path: PathBuf,
    /// Bound on connecting and the handshake.
    pub connect_timeout: Duration,
    /// Bound on waiting for any one reply.
    pub reply_timeout: Duration,
    /// Redis Cluster: a transaction holds one slot's records and that
    /// slot's own checkpoint key (`slots`).
    pub by_slot: bool,
}

impl ReplayConfig {
    /// Defaults for Redis at `addr`, recording failures in
    /// `<data_dir>/replay-failed.jsonl`.
    pub fn new(addr: impl Into<upstream::Endpoint>, data_dir: impl AsRef<Path>) -> ReplayConfig {
        ReplayConfig {
            addr: addr.into(),
            auth: None,
            batch_records: DEFAULT_BATCH_RECORDS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            failed_log_path: data_dir.as_ref().join(FAILED_LOG_FILE),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            by_slot: false,
        }
    }

    /// Defaults for the upstream `url` (its credentials; its db is unused,
    /// each record names its own).
    pub fn from_url(url: &UpstreamUrl, data_dir: impl AsRef<Path>) -> ReplayConfig {
        let mut cfg = ReplayConfig::new(url.endpoint(), data_dir);
        cfg.auth = url.password.as_ref().map(|p| Credentials {
            user: url.user.clone(),
            password: p.clone(),
        });
        cfg.by_slot = url.cluster.is_some();
        cfg
    }
}

/// How a [`Replayer::run_until_drained`] ended. The counts are this run's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Every record up to the journal's end was replayed (new appends
    /// during the run included); Redis's checkpoint is at that end.
    Drained {
        /// Commands that ran.
        replayed: u64,
        /// Commands recorded in `replay-failed.jsonl`.
        failed: u64,
    },
    /// Redis is not taking writes (`OOM`, `MISCONF`, …): nothing was lost,
    /// the checkpoint is where it was; run again once Redis accepts writes.
    Paused {
        /// Redis's error.
        reason: String,
        /// Commands that ran before the pause.
        replayed: u64,
        /// Commands recorded as failed before the pause.
        failed: u64,
    },
    /// The connection could not be made or broke; the next run resumes from
    /// the checkpoint.
    ConnectionLost {
        /// What happened.
        reason: String,
        /// Commands that ran before.
        replayed: u64,
        /// Commands recorded as failed before.
        failed: u64,
    },
}

/// Faults that stop replay until someone acts (a retry will not help).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The journal cannot be read on (a corrupt record: replay stopped just
    /// before it).
    #[error("replay stopped: {0}")]
    Journal(#[from] JournalError),
    /// `replay-failed.jsonl` cannot be written, so a failure could not be
    /// recorded.
    #[error("cannot write {}: {source}: replay stopped so no failure goes unrecorded; check the disk under the data_dir", path.display())]
    FailedLog {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Redis refused the connection's handshake or the checkpoint read
    /// (`WRONGPASS`, `NOPERM` …).
    #[error(
        "redis refused replay: {0}: nothing replayed; check the upstream credentials and ACLs"
    )]
    Rejected(String),
    /// Redis's checkpoint is past this journal's end: the journal was
    /// replaced or lost records Redis already has.
    #[error("checkpoint {checkpoint} in redis key {key} is past this journal's end ({end}): nothing replayed; if the journal was replaced, DEL {key} and replay again")]
    CheckpointAhead {
        /// The key.
        key: String,
        /// Its value.
        checkpoint: String,
        /// The journal's end.
        end: Position,
    },
    /// The upstream URL does not parse ([`replay_dir`]).
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The data dir is locked by a running Redoubt ([`replay_dir`]).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The data dir has no journal or no node id ([`replay_dir`]).
    #[error("{0}: nothing replayed")]
    DataDir(String),
}

/// Replay progress for `/status`, read without disturbing replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayProgress {
    /// Commands replayed since this replayer was made.
    pub replayed: u64,
    /// Commands recorded in `replay-failed.jsonl` since then.
    pub failed: u64,
    /// Journal entries not yet released (replayed).
    pub remaining: u64,
    /// The checkpoint replay last set or resumed from (`epoch:segment:offset`).
    #[serde(serialize_with = "display_opt")]
    pub checkpoint: Option<Checkpoint>,
    /// Why replay is paused, if the last run paused.
    pub paused: Option<String>,
}

fn display_opt<S: Serializer>(c: &Option<Checkpoint>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

#[derive(Default)]
struct ProgressShared {
    replayed: AtomicU64,
    failed: AtomicU64,
    // A short critical section, never held across an await.
    checkpoint: Mutex<Option<Checkpoint>>,
    paused: Mutex<Option<String>>,
}

/// A cheap handle on a replayer's progress; clone it into the admin server.
#[derive(Clone)]
pub struct ProgressHandle {
    shared: Arc<ProgressShared>,
    journal: Arc<Journal>,
}

impl ProgressHandle {
    /// The progress now.
    pub fn snapshot(&self) -> ReplayProgress {
        ReplayProgress {
            replayed: self.shared.replayed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            remaining: self.journal.pending_entries(),
            checkpoint: *lock(&self.shared.checkpoint),
            paused: lock(&self.shared.paused).clone(),
        }
    }
}

/// Locks a progress field; a poisoned lock still holds a usable value.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the run loop stopped building batches.
enum Stop {
    /// Redis is not taking writes: discard what is queued, then pause.
    Pause(String),
    /// Finish what is queued (it is valid), then fail.
    Fail(ReplayError),
}

/// The journal records still to send in this run, with one record of
/// look-ahead (a record that did not fit the last batch).
struct Source {
    reader: Reader,
    peeked: Option<Record>,
    /// A read error met after records were already taken for a batch: that
    /// batch goes first, the error after.
    error: Option<JournalError>,
}

impl Source {
    fn next(&mut self) -> Result<Option<Record>, JournalError> {
        if let Some(r) = self.peeked.take() {
            return Ok(Some(r));
        }
        self.reader.next_record()
    }

    /// True when nothing is left up to the journal's committed end now.
    fn caught_up(&self, journal: &Journal) -> bool {
        self.peeked.is_none() && self.error.is_none() && self.reader.position() >= journal.end()
    }
}

/// The progress counters when a run started, to report the run's own.
#[derive(Clone, Copy)]
struct RunBase {
    replayed: u64,
    failed: u64,
}

/// Replays one journal into one Redis. See the module docs for the
/// protocol and its guarantees.
pub struct Replayer {
    journal: Arc<Journal>,
    key: String,
    node_id: String,
    /// By slot (Redis Cluster): each slot's checkpoint as read from Redis
    /// in this run, in this journal's positions (`START` when none).
    slot_done: std::collections::HashMap<u16, Position>,
    /// By slot: the journal is not released past here in this run (the
    /// first record of a slot left for a later run).
    release_cap: Option<Position>,
    cfg: ReplayConfig,
    conn: Option<Conn>,
    /// Redis's `databases`, when it would tell.
    databases: Option<u32>,
    /// Records already recorded as failed and not to be sent.
    skip: BTreeSet<Position>,
    /// Released up to here (the start when a checkpoint is unusable).
    released: Position,
    failed_log: failed::FailedLog,
    progress: Arc<ProgressShared>,
    /// The journal position replayed (and released) up to.
    released_tx: watch::Sender<Position>,
    replayed_total: Counter,
    errors_total: Counter,
    buf: BytesMut,
}

impl Replayer {
    /// A replayer for `journal`, checkpointing under
    /// [`checkpoint_key`]`(node_id)`. Connects on the first run.
    pub fn new(journal: Arc<Journal>, node_id: &str, mut cfg: ReplayConfig) -> Replayer {
        cfg.batch_records = cfg.batch_records.max(1);
        cfg.batch_bytes = cfg.batch_bytes.max(1);
        Replayer {
            journal,
            key: checkpoint_key(node_id),
            node_id: node_id.to_string(),
            slot_done: std::collections::HashMap::new(),
            release_cap: None,
            failed_log: failed::FailedLog::new(cfg.failed_log_path.clone()),
            cfg,
            conn: None,
            databases: None,
            skip: BTreeSet::new(),
            released: Position::START,
            progress: Arc::default(),
            released_tx: watch::Sender::new(Position::START),
            replayed_total: counter!(REPLAYED_COMMANDS_TOTAL),
            errors_total: counter!(REPLAY_ERRORS_TOTAL),
            buf: BytesMut::new(),
        }
    }

    /// The checkpoint key this replayer writes.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A handle for `/status`.
    pub fn progress(&self) -> ProgressHandle {
        ProgressHandle {
            shared: self.progress.clone(),
            journal: self.journal.clone(),
        }
    }

    /// Follows the position replayed up to (each batch's end once its
    /// `EXEC` ran): a key whose last journaled record starts before it is
    /// in Redis, so the proxy can stop serving it locally.
    pub fn watch_released(&self) -> watch::Receiver<Position> {
        self.released_tx.subscribe()
    }

    /// Replays from the checkpoint until the journal's end (appends made
    /// meanwhile included), a pause, a lost connection, or a fault that
    /// needs an operator. Safe to call again after any outcome: each run
    /// starts from Redis's checkpoint.
    pub async fn run_until_drained(&mut self) -> Result<ReplayOutcome, ReplayError> {
        let base = RunBase {
            replayed: self.progress.replayed.load(Ordering::Relaxed),
            failed: self.progress.failed.load(Ordering::Relaxed),
        };
        let res = if self.cfg.by_slot {
            self.run_slots(base).await
        } else {
            self.run(base).await
        };
        let paused = match &res {
            Ok(ReplayOutcome::Paused { reason, .. }) => Some(reason.clone()),
            _ => None,
        };
        *lock(&self.progress.paused) = paused;
        if let Ok(ReplayOutcome::Drained { replayed, failed }) = &res {
            if replayed + failed > 0 && !self.cfg.by_slot {
                self.expire_checkpoint().await;
            }
        }
        match &res {
            Ok(ReplayOutcome::Drained { .. }) | Ok(ReplayOutcome::Paused { .. }) => {}
            _ => {
                // The connection may be mid-transaction or out of step:
                // never reuse it.
                if let Some(c) = self.conn.take() {
                    c.close();
                }
            }
        }
        res
    }

    /// After a drain: the checkpoint key expires once the records it
    /// guards are gone from disk (`retain_after_replay`, plus
    /// [`CHECKPOINT_MARGIN`]), so Redis does not keep one key per node id
    /// forever. Sent only now, with every replayed record released on
    /// disk: the next batch's `SET` of the key clears the expiry, so it
    /// never runs out while records it guards are unreleased. Without the
    /// key, replay resumes at the journal's own release point (the
    /// module's doc), so an expired key repeats nothing.
    async fn expire_checkpoint(&mut self) {
        let Some(conn) = &self.conn else {
            return;
        };
        let ms = (self.journal.retain_after_replay() + CHECKPOINT_MARGIN).as_millis();
        let cmd = ["PEXPIRE".to_string(), self.key.clone(), ms.to_string()];
        if let Err(e) = conn.call(&cmd, self.cfg.reply_timeout).await {
            tracing::debug!(error = %e, key = %self.key, "replay: could not set the checkpoint's expiry; it stays");
        }
    }

    /// This run's counts so far.
    fn counts(&self, base: RunBase) -> (u64, u64) {
        (
            self.progress.replayed.load(Ordering::Relaxed) - base.replayed,
            self.progress.failed.load(Ordering::Relaxed) - base.failed,
        )
    }

    async fn run(&mut self, base: RunBase) -> Result<ReplayOutcome, ReplayError> {
        let lost = |this: &Self, reason: String| {
            let (replayed, failed) = this.counts(base);
            ReplayOutcome::ConnectionLost {
                reason,
                replayed,
                failed,
            }
        };
        let conn = match self.connect().await? {
            Ok(c) => c,
            Err(reason) => return Ok(lost(self, reason)),
        };
        let start = match self.resume_position(&conn).await? {
            Ok(p) => p,
            Err(reason) => return Ok(lost(self, reason)),
        };
        let reader = match self.journal.reader(start) {
            Ok(r) => r,
            Err(JournalError::Gone { position, oldest }) => {
                tracing::warn!(%position, oldest, "replay: the checkpoint's segment is gone; resuming at the oldest segment on disk");
                self.journal.reader(Position::START)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut src = Source {
            reader,
            peeked: None,
            error: None,
        };
        let mut staged: Option<(Batch, oneshot::Receiver<BatchReply>)> = None;
        let mut executing: Option<(Batch, oneshot::Receiver<BatchReply>)> = None;
        let mut stop: Option<Stop> = None;
        let mut empty_builds = 0u32;
        loop {
            // 1. Queue the next batch behind the running EXEC.
            if staged.is_none() && stop.is_none() {
                match self.build(&mut src) {
                    Ok(Some(b)) => {
                        empty_builds = 0;
                        let rx = conn.send(b.raw.clone(), b.queued_replies());
                        staged = Some((b, rx));
                    }
                    Ok(None) => empty_builds += 1,
                    Err(e) => stop = Some(Stop::Fail(e)),
                }
            }
            // 2. The running EXEC's outcome.
            if let Some((b, rx)) = executing.take() {
                let reply = match self.reply(&conn, rx).await {
                    Ok(r) => r,
                    Err(reason) => return Ok(lost(self, reason)),
                };
                match batch::parse_exec(&reply.data, b.slots.len()) {
                    Exec::Done(errors) => {
                        if let Some(reason) = self.applied(&b, &errors)? {
                            stop.get_or_insert(Stop::Pause(reason));
                        }
                    }
                    Exec::Aborted(reason) => {
                        if !matches!(stop, Some(Stop::Fail(_))) {
                            stop = Some(Stop::Pause(reason));
                        }
                    }
                    Exec::Desync(why) => {
                        return Ok(lost(self, format!("unexpected reply to EXEC: {why}")))
                    }
                }
            }
            // 3. The queued batch: EXEC it, or discard it.
            if let Some((b, rx)) = staged.take() {
                let reply = match self.reply(&conn, rx).await {
                    Ok(r) => r,
                    Err(reason) => return Ok(lost(self, reason)),
                };
                let verdict = batch::parse_queued(&reply.data, &b.slots);
                let run_it = match verdict {
                    Queued::Desync(why) => {
                        return Ok(lost(self, format!("unexpected reply to MULTI: {why}")))
                    }
                    _ if matches!(stop, Some(Stop::Pause(_))) => false,
                    Queued::Ok => true,
                    Queued::Pause(reason) => {
                        if !matches!(stop, Some(Stop::Fail(_))) {
                            stop = Some(Stop::Pause(reason));
                        }
                        false
                    }
                    Queued::Refused(refused) => {
                        if self.refused(&b, &refused)? {
                            // Send the same records again, without these.
                            src = Source {
                                reader: self.journal.reader(b.start)?,
                                peeked: None,
                                error: None,
                            };
                        } else if !matches!(stop, Some(Stop::Fail(_))) {
                            // Nothing new to leave out: resending would loop.
                            let why = refused.first().map(|r| r.1.clone()).unwrap_or_default();
                            stop = Some(Stop::Pause(why));
                        }
                        false
                    }
                };
                if run_it {
                    let rx = conn.send(Bytes::from_static(batch::EXEC), 1);
                    executing = Some((b, rx));
                } else {
                    let rx = conn.send(Bytes::from_static(batch::DISCARD), 1);
                    match self.reply(&conn, rx).await {
                        Ok(r) if &r.data[..] == b"+OK\r\n" => {}
                        Ok(r) => {
                            let text = String::from_utf8_lossy(&r.data).trim_end().to_string();
                            return Ok(lost(self, format!("unexpected reply to DISCARD: {text}")));
                        }
                        Err(reason) => return Ok(lost(self, reason)),
                    }
                }
            }
            if staged.is_none() && executing.is_none() {
                let (replayed, failed) = self.counts(base);
                match stop.take() {
                    Some(Stop::Pause(reason)) => {
                        return Ok(ReplayOutcome::Paused {
                            reason,
                            replayed,
                            failed,
                        })
                    }
                    Some(Stop::Fail(e)) => return Err(e),
                    // Two empty reads in a row also end the run, so a
                    // reader that sees nothing before the end can't spin.
                    None if src.caught_up(&self.journal) || empty_builds >= 2 => {
                        return Ok(ReplayOutcome::Drained { replayed, failed })
                    }
                    None => {}
                }
            }
        }
    }

    /// The connection, made (with `CONFIG GET databases`) if needed.
    /// `Ok(Err(reason))` when Redis cannot be reached now.
    async fn connect(&mut self) -> Result<Result<Conn, String>, ReplayError> {
        if let Some(c) = &self.conn {
            if c.is_alive() {
                return Ok(Ok(c.clone()));
            }
        }
        let hs = Handshake {
            auth: self.cfg.auth.clone(),
            // Batches SELECT each record's db and come back to 0, where the
            // checkpoint key lives.
            db: 0,
            proto: 2,
            name: Some(CLIENT_NAME.into()),
        };
        let conn = match Conn::connect(&self.cfg.addr, &hs, self.cfg.connect_timeout).await {
            Ok(c) => c,
            Err(ConnectError::Rejected(why)) if !batch::is_pausing(why.as_bytes()) => {
                return Err(ReplayError::Rejected(why))
            }
            Err(e) => return Ok(Err(e.to_string())),
        };
        self.databases = match conn
            .call(&["CONFIG", "GET", "databases"], self.cfg.reply_timeout)
            .await
        {
            Ok(Frame::Array(items)) => items
                .get(1)
                .and_then(Frame::as_bytes)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok()),
            Ok(Frame::Map(pairs)) => pairs
                .first()
                .and_then(|(_, v)| v.as_bytes())
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok()),
            _ => None,
        };
        if self.databases.is_none() {
            tracing::warn!("replay: CONFIG GET databases unanswered; records' db indexes are not checked before sending");
        }
        self.conn = Some(conn.clone());
        Ok(Ok(conn))
    }

    /// True when Redis holds no key in any database (`INFO keyspace` lists
    /// none).
    async fn is_empty(&self, conn: &Conn) -> Result<bool, String> {
        match conn
            .call(&["INFO", "keyspace"], self.cfg.reply_timeout)
            .await
        {
            Ok(Frame::Bulk(b)) | Ok(Frame::Verbatim(b)) => {
                Ok(!String::from_utf8_lossy(&b).contains("keys="))
            }
            Ok(other) => Err(format!("INFO keyspace answered {other:?}")),
            Err(e) => Err(format!("reading INFO keyspace: {e}")),
        }
    }

    /// Where this run starts (module docs, "Where replay starts").
    async fn resume_position(
        &mut self,
        conn: &Conn,
    ) -> Result<Result<Position, String>, ReplayError> {
        let key = self.key().to_string();
        let frame = match conn
            .call(&["GET", self.key.as_str()], self.cfg.reply_timeout)
            .await
        {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("reading the replay checkpoint: {e}"))),
        };
        let fallback = self.released.max(self.journal.released());
        let pos = match frame {
            Frame::NullBulk | Frame::Null => match self.is_empty(conn).await {
                Ok(true) => Position::START,
                Ok(false) => {
                    if fallback != Position::START {
                        tracing::warn!(key, from = %fallback, "replay: no checkpoint in redis; resuming at the journal's release point, so nothing replayed before is applied again");
                    }
                    fallback
                }
                Err(why) => return Ok(Err(why)),
            },
            Frame::Bulk(b) => {
                let text = String::from_utf8_lossy(&b).into_owned();
                match text.parse::<Checkpoint>() {
                    Ok(c) if c.epoch == self.journal.epoch() => {
                        let end = self.journal.end();
                        if c.position > end {
                            return Err(ReplayError::CheckpointAhead {
                                key,
                                checkpoint: text,
                                end,
                            });
                        }
                        c.position
                    }
                    Ok(c) => {
                        tracing::info!(checkpoint = %c, epoch = self.journal.epoch(), "replay: checkpoint of another journal; starting at the oldest unreleased record");
                        fallback
                    }
                    Err(e) => {
                        tracing::warn!(%e, "replay: unreadable checkpoint; starting at the oldest unreleased record");
                        fallback
                    }
                }
            }
            Frame::Error(e) if batch::is_pausing(&e[..]) => {
                return Ok(Err(format!(
                    "reading the replay checkpoint: {}",
                    String::from_utf8_lossy(&e)
                )))
            }
            Frame::Error(e) => {
                return Err(ReplayError::Rejected(format!(
                    "GET {key}: {}",
                    String::from_utf8_lossy(&e)
                )))
            }
            other => {
                return Err(ReplayError::Rejected(format!(
                    "GET {key} answered {other:?}"
                )))
            }
        };
        // Everything before the checkpoint is in Redis. The journal's own
        // release point can lag it (it is not synced, so a host crash can
        // lose it): records Redis already has would then count as pending
        // with nothing left to replay that could release them, and the
        // recovery would never drain.
        self.journal.release(pos)?;
        if pos > self.released {
            self.released = pos;
            self.released_tx.send_replace(pos);
        }
        self.set_checkpoint(pos);
        Ok(Ok(pos))
    }

    fn set_checkpoint(&self, pos: Position) {
        *lock(&self.progress.checkpoint) = Some(self.journal.checkpoint(pos));
    }

    /// Awaits one reply, bounded by `reply_timeout`. `Err(reason)` when the
    /// connection is gone or too slow (it is closed then).
    async fn reply(
        &self,
        conn: &Conn,
        rx: oneshot::Receiver<BatchReply>,
    ) -> Result<BatchReply, String> {
        match tokio::time::timeout(self.cfg.reply_timeout, rx).await {
            Err(_) => {
                conn.close();
                Err(format!(
                    "no reply from redis within {:?}; a new run resumes from the checkpoint",
                    self.cfg.reply_timeout
                ))
            }
            Ok(Err(_)) => Err("connection to redis closed before the batch was sent".into()),
            Ok(Ok(r)) if r.lost => Err(
                "connection to redis lost mid-batch; a new run resumes from the checkpoint".into(),
            ),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Takes the next batch of records from `src`: `None` when none are
    /// left now. Records that cannot run in a transaction are recorded as
    /// failed here and left out.
    fn build(&mut self, src: &mut Source) -> Result<Option<Batch>, ReplayError> {
        if let Some(e) = src.error.take() {
            return Err(e.into());
        }
        let start = src.reader.position();
        let start = src.peeked.as_ref().map_or(start, |r| r.position);
        let mut records = Vec::with_capacity(self.cfg.batch_records.min(4096));
        let mut bytes = 0usize;
        let mut next = None;
        let mut failed = Vec::new();
        loop {
            if records.len() >= self.cfg.batch_records {
                break;
            }
            let rec = match src.next() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if records.is_empty() && next.is_none() => return Err(e.into()),
                Err(e) => {
                    src.error = Some(e);
                    break;
                }
            };
            if self.skip.contains(&rec.position) {
                next = Some(rec.next);
                continue;
            }
            if let Err((cmd, why)) = batch::validate(&rec.entry, self.databases) {
                self.skip.insert(rec.position);
                failed.extend(self.whole_record_failed(&rec, cmd, &why));
                next = Some(rec.next);
                continue;
            }
            let size = rec.entry.arg_bytes();
            if !records.is_empty() && bytes + size > self.cfg.batch_bytes {
                src.peeked = Some(rec);
                break;
            }
            bytes += size;
            next = Some(rec.next);
            records.push(rec);
        }
        self.record_failures(&failed)?;
        let Some(next) = next else {
            return Ok(None);
        };
        let checkpoint = self.journal.checkpoint(next).to_string();
        Ok(Some(batch::encode(
            &mut self.buf,
            start,
            next,
            records,
            self.key.as_bytes(),
            &checkpoint,
        )))
    }

    /// Lines for a record none of whose commands ran because command `bad`
    /// was refused with `why`: a client's transaction fails whole.
    fn whole_record_failed(&self, rec: &Record, bad: usize, why: &str) -> Vec<FailedCommand> {
        let cp = self.journal.checkpoint(rec.position);
        (0..rec.entry.commands.len().max(1))
            .map(|i| {
                if i == bad {
                    FailedCommand::new(cp, rec, i, why)
                } else {
                    let other = format!(
                        "EXECABORT not run: command {} of the same transaction was refused: {why}",
                        bad + 1
                    );
                    FailedCommand::new(cp, rec, i, &other)
                }
            })
            .collect()
    }

    fn record_failures(&mut self, lines: &[FailedCommand]) -> Result<(), ReplayError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.failed_log
            .append(lines)
            .map_err(|source| ReplayError::FailedLog {
                path: self.failed_log.path().to_path_buf(),
                source,
            })?;
        for l in lines {
            tracing::warn!(position = %l.position, db = l.db, command = ?l.command.first(), error = %l.error, "replay: command failed; recorded in replay-failed.jsonl");
        }
        let n = lines.len() as u64;
        self.progress.failed.fetch_add(n, Ordering::Relaxed);
        self.errors_total.increment(n);
        Ok(())
    }

    /// Commands of `b` refused when queued: their records are recorded as
    /// failed and skipped from now on. False if no record was newly left out.
    fn refused(&mut self, b: &Batch, refused: &[(usize, String)]) -> Result<bool, ReplayError> {
        let mut lines = Vec::new();
        for (slot, why) in refused {
            if let Some(Slot::Command { rec, cmd }) = b.slots.get(*slot) {
                if let Some(r) = b.records.get(*rec as usize) {
                    if self.skip.insert(r.position) {
                        lines.extend(self.whole_record_failed(r, *cmd as usize, why));
                    }
                }
            }
        }
        self.record_failures(&lines)?;
        Ok(!lines.is_empty())
    }

    /// Bookkeeping once `b`'s `EXEC` ran: failures recorded, counters,
    /// checkpoint, journal released. Returns a pause reason if a command
    /// failed with a "not taking writes" error.
    fn applied(
        &mut self,
        b: &Batch,
        errors: &[(usize, String)],
    ) -> Result<Option<String>, ReplayError> {
        let mut lines = Vec::new();
        let mut pause = None;
        let mut commands_failed = 0u64;
        for (slot, why) in errors {
            match b.slots.get(*slot) {
                Some(Slot::Command { rec, cmd }) => {
                    commands_failed += 1;
                    if let Some(r) = b.records.get(*rec as usize) {
                        let cp = self.journal.checkpoint(r.position);
                        lines.push(FailedCommand::new(cp, r, *cmd as usize, why));
                    }
                    if batch::is_pausing(why.as_bytes()) {
                        pause.get_or_insert_with(|| why.clone());
                    }
                }
                Some(Slot::Select { rec, db }) => {
                    // Checked before sending, so only a Redis that changed
                    // its `databases` gets here; what followed ran in the
                    // wrong db. Recorded against the record so it is seen.
                    tracing::error!(db, error = %why, "replay: SELECT failed inside EXEC");
                    if let Some(r) = b.records.get(*rec as usize) {
                        let cp = self.journal.checkpoint(r.position);
                        let mut l = FailedCommand::new(cp, r, usize::MAX, why);
                        l.command = vec!["SELECT".into(), db.to_string()];
                        lines.push(l);
                    }
                }
                Some(Slot::Checkpoint) | None => {
                    // The commands ran but the checkpoint did not move: a
                    // crash before the next batch would repeat them.
                    tracing::error!(error = %why, "replay: checkpoint SET failed inside EXEC");
                    pause.get_or_insert_with(|| why.clone());
                }
            }
        }
        self.record_failures(&lines)?;
        let ok = b.commands.saturating_sub(commands_failed);
        self.progress.replayed.fetch_add(ok, Ordering::Relaxed);
        self.replayed_total.increment(ok);
        let upto = self.release_cap.map_or(b.next, |c| c.min(b.next));
        self.journal.release(upto)?;
        self.released = self.released.max(upto);
        self.released_tx.send_replace(self.released);
        self.set_checkpoint(b.next);
        Ok(pause)
    }
}

/// `redoubt journal replay DIR --to URL`: replays the journal of data dir
/// `dir` (or of the journal directory itself) into the Redis at `url`
/// until drained, paused or disconnected, checkpointing under
/// `redoubt:replay:{NODE_ID}` with `node_id` or, without it, the id kept in
/// `<data_dir>/node_id` — the same key `serve` uses, so the two never
/// replay a record twice. Takes the data dir's lock: fails while
/// `redoubt serve` runs on it.
pub async fn replay_dir(
    dir: impl AsRef<Path>,
    url: &str,
    node_id: Option<&str>,
) -> Result<ReplayOutcome, ReplayError> {
    replay_dir_watched(dir, url, node_id, None, |_| {}).await
}

/// [`replay_dir`] with TLS settings for a `rediss://` URL (`None`: the
/// system's roots, no client certificate).
pub async fn replay_dir_tls(
    dir: impl AsRef<Path>,
    url: &str,
    node_id: Option<&str>,
    tls: Option<tls::TlsClient>,
) -> Result<ReplayOutcome, ReplayError> {
    replay_dir_watched(dir, url, node_id, tls, |_| {}).await
}

/// [`replay_dir_tls`], handing `watch` the replayer's progress before it
/// starts (`redoubt journal replay` draws a progress bar from it).
pub async fn replay_dir_watched(
    dir: impl AsRef<Path>,
    url: &str,
    node_id: Option<&str>,
    tls: Option<tls::TlsClient>,
    watch: impl FnOnce(ProgressHandle),
) -> Result<ReplayOutcome, ReplayError> {
    let mut url = UpstreamUrl::parse(url)?;
    if let Some(t) = tls {
        url = url.with_tls(t);
    }
    if let Some(s) = &url.sentinel {
        // The primary now; a failover during the run ends it like a lost
        // connection, and the checkpoint says where to go on.
        s.resolve().await.map_err(ReplayError::DataDir)?;
    }
    let dir = dir.as_ref();
    let data_dir = if dir.join(journal::JOURNAL_DIR).is_dir() {
        dir.to_path_buf()
    } else if dir.file_name().is_some_and(|n| n == journal::JOURNAL_DIR) && dir.is_dir() {
        dir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        return Err(ReplayError::DataDir(format!(
            "{} holds no journal (expected {}/{})",
            dir.display(),
            dir.display(),
            journal::JOURNAL_DIR
        )));
    };
    let _lock = DataDirLock::acquire(&data_dir)?;
    let node_id = match node_id {
        Some(n) => n.to_string(),
        None => {
            let path = data_dir.join("node_id");
            match std::fs::read_to_string(&path) {
                Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
                _ => {
                    return Err(ReplayError::DataDir(format!(
                        "no node id in {} (give the node_id configured for this data dir)",
                        path.display()
                    )))
                }
            }
        }
    };
    let (journal, recovery) = Journal::open(&data_dir, JournalConfig::default())?;
    if let Some(c) = &recovery.corruption {
        tracing::error!(%c, "replay: the journal has a corrupt record; replaying up to it");
    }
    let cfg = ReplayConfig::from_url(&url, &data_dir);
    let mut replayer = Replayer::new(Arc::new(journal), &node_id, cfg);
    watch(replayer.progress());
    replayer.run_until_drained().await
}
