//! [`Journal`]: the open journal — appends, rotation, snapshots, readers,
//! release and retention, metrics.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, watch};

use crate::config::{Fsync, JournalConfig};
use crate::entry::Entry;
use crate::error::{JournalError, Result};
use crate::header::HEADER_LEN;
use crate::position::{Checkpoint, Position};
use crate::reader::{seq_at, Reader};
use crate::recovery::{self, Recovery};
use crate::segment::{create_segment, segment_path, sync_dir};
use crate::shared::{SegMeta, Shared, State};
use crate::snapshot::{self, SnapshotInfo, SnapshotReader};
use crate::writer::{Done, Relay, Request, Then, Tickets, Writer};

/// Name of the journal's directory inside the data dir.
pub const JOURNAL_DIR: &str = "journal";

/// Tells the `everysec` syncer to stop, waking it at once.
type StopFlag = (Mutex<bool>, Condvar);

/// How often the `everysec` syncer runs.
const EVERYSEC: Duration = Duration::from_secs(1);

/// An open journal. Share it behind an `Arc`; every method takes `&self`.
///
/// The caller holds the [`DataDirLock`](crate::DataDirLock) of the data dir
/// for as long as the journal is open. Dropping the journal stops its
/// writer after it has finished every append already queued.
pub struct Journal {
    shared: Arc<Shared>,
    /// The writer thread's queue (`fsync = always`).
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// The writer callers run themselves (`everysec`, `no`); see the
    /// writer module.
    inline: Option<Arc<Inline>>,
    /// Under `fsync = always`: hands the writer thread's answers to a task
    /// on the appenders' runtime ([`relay`](Self::relay)).
    relay: Option<Arc<Relay>>,
    syncer: Option<(JoinHandle<()>, Arc<StopFlag>)>,
    snapshot_lock: Mutex<()>,
}

fn new_epoch() -> u64 {
    // Unique enough to tell journals of one node apart: wall clock in
    // nanoseconds mixed with the pid; never 0.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 40)).max(1)
}

impl Journal {
    /// Opens (or creates) the journal in `<data_dir>/journal`.
    ///
    /// Scans every segment: a torn tail is truncated; a corrupt record
    /// stops the scan and leaves the journal open but refusing appends
    /// (each returns [`JournalError::Corrupt`]) — see the returned
    /// [`Recovery`]. Leftover temporary files and segments already folded
    /// into a snapshot are removed. Errors are I/O errors only.
    pub fn open(data_dir: impl AsRef<Path>, cfg: JournalConfig) -> Result<(Journal, Recovery)> {
        let dir = data_dir.as_ref().join(JOURNAL_DIR);
        let io = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| JournalError::io(what, e)
        };
        fs::create_dir_all(&dir).map_err(io("creating the journal directory"))?;
        let scan = recovery::scan(&dir).map_err(io("scanning the journal"))?;

        let mut removed = Vec::new();
        for p in &scan.stale {
            match fs::remove_file(p) {
                Ok(()) => removed.push(p.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::io(format!("removing {}", p.display()), e)),
            }
        }
        if !removed.is_empty() {
            sync_dir(&dir).map_err(io("syncing the journal directory"))?;
        }
        if let Some(t) = &scan.torn_tail {
            let f = OpenOptions::new()
                .write(true)
                .open(&t.file)
                .map_err(io("opening the torn segment"))?;
            f.set_len(t.position.offset)
                .map_err(io("truncating the torn tail"))?;
            f.sync_all().map_err(io("syncing the truncated segment"))?;
            tracing::warn!(%t, "journal: torn tail truncated");
        }

        let created = scan.epoch.is_none() && scan.corruption.is_none();
        let epoch = scan.epoch.unwrap_or_else(new_epoch);
        let mut segments: BTreeMap<u64, SegMeta> = scan
            .segments
            .iter()
            .map(|s| {
                (
                    s.segment,
                    SegMeta {
                        first_seq: s.first_seq,
                        bytes: s.bytes,
                        released_at: None,
                    },
                )
            })
            .collect();
        let mut file = None;
        let (committed, refused) = match &scan.corruption {
            Some(c) => {
                tracing::error!(%c, "journal: corrupt record; durable writes refused until an operator acts");
                let at = if c.snapshot {
                    Position::START
                } else {
                    c.position
                };
                (at, Some(JournalError::Corrupt(Box::new(c.clone()))))
            }
            None => {
                if segments.is_empty() {
                    let first = scan.snapshot.as_ref().map_or(1, |s| s.base_segment);
                    let f = create_segment(&dir, epoch, first, scan.next_seq)
                        .map_err(io("creating a segment"))?;
                    segments.insert(
                        first,
                        SegMeta {
                            first_seq: scan.next_seq,
                            bytes: HEADER_LEN,
                            released_at: None,
                        },
                    );
                    file = Some(f);
                }
                let (&last, meta) = segments.iter().next_back().ok_or(JournalError::Closed)?;
                let f = match file {
                    Some(f) => f,
                    None => {
                        let mut f = OpenOptions::new()
                            .write(true)
                            .open(segment_path(&dir, last))
                            .map_err(io("opening the last segment"))?;
                        f.seek(SeekFrom::Start(meta.bytes))
                            .map_err(io("seeking in the last segment"))?;
                        f
                    }
                };
                file = Some(f);
                (Position::new(last, meta.bytes), None)
            }
        };
        let mut released_seq = segments
            .values()
            .next()
            .map_or(scan.next_seq - 1, |m| m.first_seq - 1);
        // The release point of the last run, so records replayed before a
        // restart are not pending again (a proxy restarted while Redis is
        // down would otherwise serve them as the outage's writes).
        let mut released = Position::START;
        if let Some((pos, seq)) = read_release_point(&dir, epoch) {
            if pos <= committed && seq < scan.next_seq && seq >= released_seq {
                released = pos;
                released_seq = seq;
                // Retention counts again from now: when they were replayed
                // is not kept.
                let now = Instant::now();
                for (_, m) in segments.range_mut(..pos.segment) {
                    m.released_at = Some(now);
                }
            }
        }
        let state = State {
            segments,
            committed,
            last_seq: scan.next_seq - 1,
            released,
            released_seq,
            refused,
            corruption: scan.corruption.clone(),
            snapshot: scan.snapshot.clone(),
        };
        let file = file.map(Arc::new);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            cfg: cfg.clone(),
            epoch,
            state: Mutex::new(state),
            end: watch::Sender::new(committed),
            fsyncs: AtomicU64::new(0),
            full: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            fence_set: tokio::sync::Notify::new(),
            current: Mutex::new(file.clone()),
            dirty: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            refused_now: AtomicBool::new(false),
        });
        // Publishes the mirrors of the state.
        drop(shared.state());

        let w = Writer::new(
            shared.clone(),
            file,
            committed.segment,
            committed.offset,
            scan.next_seq,
        );
        let (tx, writer, inline, relay) = if cfg.fsync == Fsync::Always {
            let (tx, rx) = mpsc::channel();
            let relay = Arc::new(Relay::new());
            let w = w.relayed_by(relay.clone());
            let h = std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || w.run(rx))
                .map_err(io("starting the journal writer thread"))?;
            (Some(tx), Some(h), None, Some(relay))
        } else {
            (None, None, Some(Arc::new(Inline::new(w))), None)
        };
        // Under `everysec` and `no`, it also writes what appenders staged
        // and then stopped waiting for (their futures dropped).
        let syncer = if let Some(w) = &inline {
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let (s, st, w) = (shared.clone(), stop.clone(), w.clone());
            let h = std::thread::Builder::new()
                .name("journal-syncer".into())
                .spawn(move || run_syncer(&s, &st, &w))
                .map_err(io("starting the journal syncer thread"))?;
            Some((h, stop))
        } else {
            None
        };
        let recovery = Recovery {
            epoch,
            created,
            snapshot: scan.snapshot,
            segments: scan.segments,
            torn_tail: scan.torn_tail,
            corruption: scan.corruption,
            removed,
        };
        let journal = Journal {
            shared,
            tx,
            writer,
            inline,
            relay,
            syncer,
            snapshot_lock: Mutex::new(()),
        };
        Ok((journal, recovery))
    }

    /// Appends `entry`. The entry takes its place in the journal's order
    /// when `append` is **called**, not when the future is first polled, so
    /// a caller may call it while holding the store's lock and await it
    /// after releasing the lock. The future resolves once the record is
    /// durable under the fsync policy (with `always`: written and synced,
    /// sharing the sync with concurrent appends), to the record's position.
    pub fn append(&self, entry: Entry) -> Appended {
        match (self.stage(entry).0, &self.inline) {
            (Stage::Ticket { ticket, pos }, Some(w)) => Appended(Waiting::Ticket {
                inline: w.clone(),
                ticket,
                pos,
            }),
            (Stage::Ticket { .. }, None) => Appended(Waiting::Refused(None)),
            (Stage::Waiting(a), _) => a,
        }
    }

    /// [`append`](Self::append), and `then` called with the result as soon
    /// as the journal answers it, whether or not the returned future is
    /// still held: by the writer thread or the [`relay`](Self::relay)
    /// under `always`, by whichever appender writes the staged appends
    /// under `everysec` and `no` (at the latest the once-a-second syncer).
    /// Called before the future resolves; with
    /// [`JournalError::Closed`] if the journal goes away without
    /// answering. For a caller that must act on every outcome (count it,
    /// undo a refused write) even when nobody waits for it any more,
    /// without a task of its own per append. `then` must not block: it may
    /// run on the writer thread, or on an appender's.
    pub fn append_then(&self, entry: Entry, then: Then) -> Appended {
        let (tx, rx) = oneshot::channel();
        let done = Done::new(tx, Some(then));
        // Refused, the request (and `then`) was dropped: `then` heard
        // `Closed`, the only refusal of a send.
        match self.send(Request::Append { entry, done }) {
            Ok(()) => Appended(match &self.inline {
                Some(w) => Waiting::Staged {
                    inline: w.clone(),
                    rx,
                },
                None => Waiting::Channel(rx),
            }),
            Err(e) => Appended(Waiting::Refused(Some(e))),
        }
    }

    /// Under `fsync = always`, answers appends from the task that polls
    /// this future, until it is dropped: spawn it on the runtime the
    /// appenders run on. The writer thread then wakes that runtime once per
    /// group commit, for the whole group, instead of once per append; the
    /// answers come from within the runtime, where waking a task costs no
    /// system call. Without it (or after it is dropped) the writer thread
    /// answers by itself. Under `everysec` and `no` it ends at once:
    /// appenders are answered on their own thread already. While it runs,
    /// do not block that runtime's threads waiting for an append
    /// ([`append_blocking`](Self::append_blocking) is for other threads).
    pub fn relay(&self) -> impl Future<Output = ()> + Send + 'static {
        let relay = self.relay.clone();
        async move {
            if let Some(relay) = relay {
                relay.run().await;
            }
        }
    }

    /// [`append`](Self::append) for a caller that keeps this journal at
    /// hand until it waits ([`durable`](Self::durable)): under `everysec`
    /// and `no` the result holds no reference on the journal's writer (a
    /// locked instruction to take and one to drop, per write).
    pub fn stage(&self, entry: Entry) -> Staged {
        let refused = |e| Stage::Waiting(Appended(Waiting::Refused(Some(e))));
        if let Some(w) = &self.inline {
            return Staged(match w.stage_ticket(&entry) {
                Ok((pos, ticket)) => Stage::Ticket { ticket, pos },
                Err(e) => refused(e),
            });
        }
        let (tx, rx) = oneshot::channel();
        let done = Done::new(tx, None);
        Staged(match self.send(Request::Append { entry, done }) {
            Ok(()) => Stage::Waiting(Appended(Waiting::Channel(rx))),
            Err(e) => refused(e),
        })
    }

    /// Resolves what [`stage`](Self::stage) staged here, as
    /// [`append`](Self::append)'s future would.
    pub async fn durable(&self, staged: Staged) -> Result<Position> {
        match (staged.0, &self.inline) {
            (Stage::Ticket { ticket, pos }, Some(w)) => w.outcome(ticket).map(|()| pos),
            // A ticket comes only from an inline writer, which a journal
            // keeps for its life.
            (Stage::Ticket { .. }, None) => Err(JournalError::Closed),
            (Stage::Waiting(a), _) => a.await,
        }
    }

    /// [`append`](Self::append) for threads outside an async runtime.
    /// Must not be called from within an async task (it blocks).
    pub fn append_blocking(&self, entry: Entry) -> Result<Position> {
        if let Some(w) = &self.inline {
            let (pos, ticket) = w.stage_ticket(&entry)?;
            return w.outcome(ticket).map(|()| pos);
        }
        let (tx, rx) = oneshot::channel();
        self.send(Request::Append {
            entry,
            done: Done::new(tx, None),
        })?;
        rx.blocking_recv().unwrap_or(Err(JournalError::Closed))
    }

    /// Starts a new segment (unless the current one has no records yet) and
    /// resolves to its number. Ordered with appends like
    /// [`append`](Self::append): every append called before `rotate` is in
    /// an older segment, every one called after is in this one or later.
    /// Call it while holding the store's lock, then snapshot the store and
    /// pass the number to [`write_snapshot`](Self::write_snapshot).
    pub fn rotate(&self) -> impl Future<Output = Result<u64>> + Send + 'static {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Request::Rotate { done });
        let inline = self.inline.clone();
        async move {
            sent?;
            complete(inline.as_deref());
            rx.await.unwrap_or(Err(JournalError::Closed))
        }
    }

    /// [`rotate`](Self::rotate) for threads outside an async runtime.
    pub fn rotate_blocking(&self) -> Result<u64> {
        let (done, rx) = oneshot::channel();
        self.send(Request::Rotate { done })?;
        complete(self.inline.as_deref());
        rx.blocking_recv().unwrap_or(Err(JournalError::Closed))
    }

    /// Gives `req` its place in the journal's order: queued for the
    /// writer thread, or staged in the inline writer (answered once
    /// [`complete`] runs).
    fn send(&self, req: Request) -> Result<()> {
        if let Some(w) = &self.inline {
            w.stage(req);
            return Ok(());
        }
        let tx = self.tx.as_ref().ok_or(JournalError::Closed)?;
        tx.send(req).map_err(|_| JournalError::Closed)
    }

    /// Writes a snapshot whose `entries` rebuild the state of everything
    /// before segment `base_segment` (as returned by
    /// [`rotate`](Self::rotate)), then deletes older snapshots and the
    /// segments before `base_segment`. Blocking I/O: run it on a blocking
    /// thread. For standalone mode only: segments folded into a snapshot
    /// can no longer be replayed to Redis.
    pub fn write_snapshot(
        &self,
        base_segment: u64,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<SnapshotInfo> {
        let _one_at_a_time = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        let base_seq = {
            let st = self.shared.state();
            if let Some(err) = &st.refused {
                return Err(err.clone());
            }
            let invalid = |why: &str| JournalError::InvalidPosition {
                position: Position::new(base_segment, HEADER_LEN),
                why: why.to_string(),
            };
            if base_segment > st.committed.segment {
                return Err(invalid("snapshot base is after the current segment"));
            }
            match st.segments.get(&base_segment) {
                Some(m) => m.first_seq,
                None => return Err(invalid("snapshot base segment does not exist")),
            }
        };
        let info = snapshot::write(
            &self.shared.dir,
            self.shared.epoch,
            base_segment,
            base_seq,
            entries.into_iter(),
        )
        .map_err(|e| JournalError::io("writing a snapshot", e))?;
        let (old_segments, old_snapshot) = {
            let mut st = self.shared.state();
            let old: Vec<u64> = st.segments.range(..base_segment).map(|(&k, _)| k).collect();
            for k in &old {
                st.segments.remove(k);
            }
            let old_snapshot = st
                .snapshot
                .replace(info.clone())
                .filter(|s| s.path != info.path);
            if st.released < Position::new(base_segment, HEADER_LEN) {
                st.released = Position::new(base_segment, HEADER_LEN);
                st.released_seq = base_seq - 1;
            }
            (old, old_snapshot)
        };
        let mut paths: Vec<PathBuf> = old_segments
            .iter()
            .map(|&k| segment_path(&self.shared.dir, k))
            .collect();
        paths.extend(old_snapshot.map(|s| s.path));
        for p in &paths {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::io(format!("removing {}", p.display()), e)),
            }
        }
        sync_dir(&self.shared.dir)
            .map_err(|e| JournalError::io("syncing the journal directory", e))?;
        Ok(info)
    }

    /// A reader of the records from `from` on ([`Position::START`] for the
    /// oldest on disk, or a [`Record::next`](crate::Record::next) /
    /// checkpoint position). Fails with [`JournalError::Gone`] when the
    /// segment was deleted, [`JournalError::InvalidPosition`] when `from` is
    /// not a record boundary.
    pub fn reader(&self, from: Position) -> Result<Reader> {
        Reader::new(self.shared.clone(), from)
    }

    /// Every entry needed to rebuild the local state at start-up, in
    /// order: the latest snapshot's, then every record of the segments
    /// after it. Ends with an error item at a corruption.
    pub fn replay_all(&self) -> Result<ReplayAll> {
        let snapshot = self.shared.state().snapshot.clone();
        let snapshot = match snapshot {
            Some(s) => match SnapshotReader::open(&s.path, s.base_segment)
                .map_err(|e| JournalError::io("opening the snapshot", e))?
            {
                Ok((_, r)) => Some(r),
                Err(c) => return Err(JournalError::Corrupt(Box::new(c))),
            },
            None => None,
        };
        let reader = self.reader(Position::START)?;
        Ok(ReplayAll {
            snapshot,
            reader,
            failed: false,
        })
    }

    /// Marks everything before `upto` as replayed. Segments entirely
    /// before it are deleted by [`gc`](Self::gc) once
    /// `retain_after_replay` has passed. Releasing a position already
    /// released (or older) does nothing.
    pub fn release(&self, upto: Position) -> Result<()> {
        let (pos, hint, limit) = {
            let st = self.shared.state();
            let pos = match Shared::normalize(&st, upto) {
                Ok(p) => p,
                Err(JournalError::Gone { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            if pos <= st.released {
                return Ok(());
            }
            let Some(meta) = st.segments.get(&pos.segment) else {
                return Ok(()); // the committed end of an empty journal
            };
            let hint = if st.released.segment == pos.segment && st.released.offset >= HEADER_LEN {
                (st.released, st.released_seq + 1)
            } else {
                (Position::new(pos.segment, HEADER_LEN), meta.first_seq)
            };
            let limit = if pos.segment == st.committed.segment {
                st.committed.offset
            } else {
                meta.bytes
            };
            (pos, hint, limit)
        };
        let seq = seq_at(&self.shared, hint, pos, limit)?;
        let now = Instant::now();
        let mut st = self.shared.state();
        if pos > st.released {
            // Space is freed: "refused for max_bytes" no longer holds
            // until an append is refused again.
            self.shared.full.store(false, Ordering::Relaxed);
            st.released = pos;
            st.released_seq = seq - 1;
            for (_, m) in st.segments.range_mut(..pos.segment) {
                m.released_at.get_or_insert(now);
            }
            write_release_point(&self.shared.dir, self.shared.epoch, pos, seq - 1);
        }
        Ok(())
    }

    /// Where the records not yet released start.
    pub fn released(&self) -> Position {
        self.shared.state().released
    }

    /// Deletes segments released at least `retain_after_replay` before
    /// `now`; returns their numbers. Also run on every rotation.
    pub fn gc(&self, now: Instant) -> Result<Vec<u64>> {
        self.shared.gc(now)
    }

    /// Records not yet released (`redoubt_journal_pending_commands`
    /// counts entries).
    pub fn pending_entries(&self) -> u64 {
        let st = self.shared.state();
        st.last_seq.saturating_sub(st.released_seq)
    }

    /// Bytes of segments not yet released, the figure `max_bytes` bounds
    /// (`redoubt_journal_bytes`).
    pub fn bytes(&self) -> u64 {
        Shared::pending_bytes(&self.shared.state())
    }

    /// `fsync` calls made on segments since open (metrics; tests use it to
    /// see group commit share syncs).
    pub fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// The committed end: every acknowledged record is before it.
    pub fn end(&self) -> Position {
        self.shared.state().committed
    }

    /// Follows the committed end, so a replayer at the end can await new
    /// records instead of polling.
    pub fn watch_end(&self) -> watch::Receiver<Position> {
        self.shared.end.subscribe()
    }

    /// The configured bound on pending bytes (`journal.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.shared.cfg.max_bytes
    }

    /// How long released segments are kept before they are deleted.
    pub fn retain_after_replay(&self) -> Duration {
        self.shared.cfg.retain_after_replay
    }

    /// The journal's epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch
    }

    /// `epoch:segment:offset` for a position of this journal.
    pub fn checkpoint(&self, position: Position) -> Checkpoint {
        Checkpoint {
            epoch: self.shared.epoch,
            position,
        }
    }

    /// True when the latest append was refused because the journal is at
    /// `max_bytes` (until an append fits again).
    pub fn refusing_full(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed)
    }

    /// Records that a caller refused a write because it would not fit
    /// (checked before running it): [`refusing_full`](Self::refusing_full)
    /// then says so until an append fits again.
    pub fn note_refused_full(&self) {
        self.shared.full.store(true, Ordering::Relaxed);
    }

    /// Why appends are refused, if they are (corruption found at open, or
    /// an earlier write failure).
    pub fn refusal(&self) -> Option<JournalError> {
        // Asked before every durable write: the lock only once refused.
        if !self.shared.refused_now.load(Ordering::Acquire) {
            return None;
        }
        self.shared.state().refused.clone()
    }

    /// [`refusal`](Self::refusal), else [`bytes`](Self::bytes): what a
    /// caller checks before every write, under one lock.
    pub fn refusal_or_bytes(&self) -> Result<u64, JournalError> {
        if !self.shared.refused_now.load(Ordering::Acquire) {
            return Ok(self.shared.pending.load(Ordering::Relaxed));
        }
        let st = self.shared.state();
        match &st.refused {
            Some(e) => Err(e.clone()),
            None => Ok(Shared::pending_bytes(&st)),
        }
    }

    /// True after an append failed and before [`unfence`](Self::unfence):
    /// every append fails with [`JournalError::Fenced`].
    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Acquire)
    }

    /// Refuses appends from now on, as a failed append does. An owner
    /// undoing a failed write calls it first, so nothing executed before
    /// the undo becomes durable behind its back.
    pub fn fence(&self) {
        self.shared.set_fence();
    }

    /// Resolves once the journal is fenced (at once if it is).
    pub async fn fenced(&self) {
        loop {
            let set = self.shared.fence_set.notified();
            if self.is_fenced() {
                return;
            }
            set.await;
        }
    }

    /// Accepts appends again, once the writes the failures refused are
    /// undone. Appends called before it may still be refused.
    pub fn unfence(&self) {
        self.shared.fenced.store(false, Ordering::Release);
    }

    /// Waits, blocking the thread, until every append called before it
    /// has been answered (or, while a [`relay`](Self::relay) runs, handed
    /// to it). Usable inside an async task (it blocks that thread): the
    /// writer is a thread of its own, and barriers are not relayed.
    pub fn barrier_blocking(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let done = Box::new(move || {
            let _ = tx.send(());
        });
        self.send(Request::Barrier { done })?;
        complete(self.inline.as_deref());
        rx.recv().map_err(|_| JournalError::Closed)
    }

    /// Resolves once every append called before it has been answered (or,
    /// while a [`relay`](Self::relay) runs, handed to it: their futures
    /// may resolve just after this one).
    pub fn barrier(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let done = Box::new(move || {
            let _ = tx.send(());
        });
        let sent = self.send(Request::Barrier { done });
        let inline = self.inline.clone();
        async move {
            sent?;
            complete(inline.as_deref());
            rx.await.map_err(|_| JournalError::Closed)
        }
    }

    /// Holds the writer thread for `d` once every append called before has
    /// been answered: appends called after it wait, as on a stalled disk.
    /// Only for tests of what waits on the journal (feature `test-hooks`),
    /// and only under `fsync = always` (the writer is a thread then).
    #[cfg(feature = "test-hooks")]
    pub fn stall_writer(&self, d: std::time::Duration) -> Result<()> {
        if self.inline.is_some() {
            return Err(JournalError::Closed);
        }
        self.send(Request::Barrier {
            done: Box::new(move || std::thread::sleep(d)),
        })
    }

    /// Numbers of the segments on disk.
    pub fn segments(&self) -> Vec<u64> {
        self.shared.state().segments.keys().copied().collect()
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit.
        self.tx.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        if let Some((h, stop)) = self.syncer.take() {
            *stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            stop.1.notify_all();
            let _ = h.join();
        }
        if let Some(w) = self.inline.take() {
            w.lock().close();
        }
    }
}

/// What [`Journal::append`] returns: resolves to the record's position
/// once it is durable. A named type, not an `async` block, so a caller
/// holding many (one per write of a pipeline) keeps them in a `Vec`
/// without boxing each.
#[must_use = "an append is durable only once this resolves"]
pub struct Appended(Waiting);

/// What [`Journal::stage`] returns; resolved by [`Journal::durable`] on
/// the same journal.
#[must_use = "an append is durable only once Journal::durable resolves it"]
pub struct Staged(Stage);

enum Stage {
    /// Staged in the inline writer as `ticket`, at `pos`.
    Ticket { ticket: u64, pos: Position },
    /// Queued for the writer thread, or refused.
    Waiting(Appended),
}

enum Waiting {
    /// Why the append was not even queued (taken when answered).
    Refused(Option<JournalError>),
    /// Queued for the writer thread.
    Channel(oneshot::Receiver<Result<Position>>),
    /// Staged in the inline writer, answered on the channel.
    Staged {
        inline: Arc<Inline>,
        rx: oneshot::Receiver<Result<Position>>,
    },
    /// Staged in the inline writer as `ticket`, at `pos`.
    Ticket {
        inline: Arc<Inline>,
        ticket: u64,
        pos: Position,
    },
}

impl Future for Appended {
    type Output = Result<Position>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Waiting::Refused(e) => Poll::Ready(Err(e.take().unwrap_or(JournalError::Closed))),
            Waiting::Channel(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(JournalError::Closed))),
            // Written by whoever completes first; this poll, if nobody
            // has yet (another appender completing it answers the
            // channel, which wakes this one).
            Waiting::Staged { inline, rx } => {
                inline.complete();
                Pin::new(rx)
                    .poll(cx)
                    .map(|r| r.unwrap_or(Err(JournalError::Closed)))
            }
            // Known once polled: the inline writer writes on the caller's
            // thread.
            Waiting::Ticket {
                inline,
                ticket,
                pos,
            } => Poll::Ready(inline.outcome(*ticket).map(|()| *pos)),
        }
    }
}

/// Runs the inline writer's [`Writer::complete`], if there is one: writes
/// what is staged and answers it.
fn complete(inline: Option<&Inline>) {
    if let Some(w) = inline {
        w.complete();
    }
}

/// The writer appenders run themselves (`everysec`, `no`).
pub(crate) struct Inline {
    writer: Mutex<Writer>,
    /// The writer's, read without its lock.
    tickets: Arc<Tickets>,
    /// Set when a request is staged, cleared when the staged ones are
    /// written. Every append's future completes once, and the first to do
    /// so in a turn of a pipelining client writes the whole turn: the
    /// others see this clear and skip the lock (a locked instruction
    /// each way, per command).
    staged: AtomicBool,
}

impl Inline {
    fn new(w: Writer) -> Inline {
        Inline {
            tickets: w.tickets.clone(),
            writer: Mutex::new(w),
            staged: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stage(&self, req: Request) {
        let mut w = self.lock();
        w.stage(req);
        // Under the lock: a `complete` that then finds it clear has
        // written this request (it took the lock after).
        self.staged.store(true, Ordering::Release);
    }

    fn complete(&self) {
        if !self.staged.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.lock();
        self.staged.store(false, Ordering::Relaxed);
        w.complete();
    }

    fn stage_ticket(&self, entry: &Entry) -> Result<(Position, u64)> {
        let mut w = self.lock();
        let staged = w.stage_ticket(entry)?;
        self.staged.store(true, Ordering::Release);
        Ok(staged)
    }

    /// How the append given `ticket` ended: writes what is staged if no
    /// one has, and waits for a caller writing it now.
    fn outcome(&self, ticket: u64) -> Result<()> {
        self.complete();
        if let Some(done) = self.tickets.outcome(ticket) {
            return done;
        }
        // Another caller took the staged writes (and cleared `staged`)
        // but has not answered them yet: its lock is held until it has.
        let mut w = self.lock();
        self.staged.store(false, Ordering::Relaxed);
        w.complete();
        drop(w);
        self.tickets
            .outcome(ticket)
            .unwrap_or(Err(JournalError::Closed))
    }
}

/// Once a second: writes what appenders staged and stopped waiting for,
/// and under `everysec` syncs the current segment if anything was written
/// since the last sync. A thread of its own, so a slow sync never holds up
/// appends.
fn run_syncer(shared: &Shared, stop: &StopFlag, inline: &Inline) {
    let mut stopped = stop.0.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        stopped = match stop.1.wait_timeout_while(stopped, EVERYSEC, |s| !*s) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        if *stopped {
            return;
        }
        complete(Some(inline));
        if shared.cfg.fsync == Fsync::EverySec && shared.dirty.swap(false, Ordering::AcqRel) {
            let file = shared
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(f) = file {
                if let Err(e) = shared.sync(&f) {
                    shared.fail(&JournalError::io("syncing the journal (everysec)", e));
                }
            }
        }
    }
}

/// Start-up rebuild: the snapshot's entries, then the segments'. See
/// [`Journal::replay_all`].
pub struct ReplayAll {
    snapshot: Option<SnapshotReader>,
    reader: Reader,
    failed: bool,
}

impl Iterator for ReplayAll {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(s) = &mut self.snapshot {
            match s.next_entry() {
                Ok(Ok(Some(e))) => return Some(Ok(e)),
                Ok(Ok(None)) => self.snapshot = None,
                Ok(Err(c)) => {
                    self.failed = true;
                    return Some(Err(JournalError::Corrupt(Box::new(c))));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(JournalError::io("reading the snapshot", e)));
                }
            }
        }
        match self.reader.next() {
            Some(Err(e)) => {
                self.failed = true;
                Some(Err(e))
            }
            other => other.map(|r| r.map(|rec| rec.entry)),
        }
    }
}

/// The file keeping the release point across restarts.
const RELEASED_FILE: &str = "released";

/// Keeps `pos` (and the last released sequence number) for the next open.
/// Written to a temporary file and renamed, so a crash leaves the old or
/// the new point, never a torn one; not synced, since a point lost with
/// the host only makes records pending again, which the replay's
/// checkpoint then releases without applying them twice.
fn write_release_point(dir: &std::path::Path, epoch: u64, pos: Position, seq: u64) {
    let tmp = dir.join(format!("{RELEASED_FILE}.tmp"));
    let text = format!("{epoch} {} {} {seq}\n", pos.segment, pos.offset);
    let written =
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, dir.join(RELEASED_FILE)));
    if let Err(e) = written {
        tracing::warn!(error = %e, "journal: cannot keep the release point; replayed records will count as pending after a restart until the replay confirms them");
    }
}

/// The release point kept by the last run of this journal (same epoch).
fn read_release_point(dir: &std::path::Path, epoch: u64) -> Option<(Position, u64)> {
    let text = std::fs::read_to_string(dir.join(RELEASED_FILE)).ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (e, segment, offset, seq) = (it.next()??, it.next()??, it.next()??, it.next()??);
    (e == epoch).then_some((Position::new(segment, offset), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn handles_can_be_shared_across_tasks_and_threads() {
        send_sync::<Journal>();
        send::<Reader>();
        send::<ReplayAll>();
    }
}
