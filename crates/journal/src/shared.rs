//! [`Shared`]: the state the writer thread, the syncer, readers and the
//! [`Journal`](crate::Journal) handle all see.
//!
//! One `std::sync::Mutex` guards it; every critical section is a few field
//! updates with no I/O and no `.await`, so contention stays negligible next
//! to an `fsync`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::config::JournalConfig;
use crate::error::{Corruption, JournalError, Result};
use crate::header::HEADER_LEN;
use crate::position::Position;
use crate::segment::{segment_path, sync_dir};
use crate::snapshot::SnapshotInfo;

/// What is known about one live segment.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// Committed bytes (final once sealed).
    pub bytes: u64,
    /// When it became fully released, for retention.
    pub released_at: Option<Instant>,
}

/// Mutable journal state.
#[derive(Debug)]
pub(crate) struct State {
    pub segments: BTreeMap<u64, SegMeta>,
    /// End of the data appends have been acknowledged for: readers see
    /// everything before it and nothing after.
    pub committed: Position,
    /// Sequence number of the last committed record (0 when none ever).
    pub last_seq: u64,
    /// Replay progress: everything before it is released.
    pub released: Position,
    /// Records with a sequence number up to this one are released.
    pub released_seq: u64,
    /// Set when appends must be refused (corruption, earlier failure).
    pub refused: Option<JournalError>,
    /// Where reading stops.
    pub corruption: Option<Corruption>,
    pub snapshot: Option<SnapshotInfo>,
}

/// State shared by every part of one open journal.
pub(crate) struct Shared {
    /// The journal directory (`<data_dir>/journal`).
    pub dir: PathBuf,
    pub cfg: JournalConfig,
    pub epoch: u64,
    pub state: Mutex<State>,
    /// Publishes `committed` so a replayer can await new records.
    pub end: watch::Sender<Position>,
    /// `fsync` calls made on segment files (metrics and tests).
    pub fsyncs: AtomicU64,
    /// The segment being appended to, for the `everysec` syncer.
    pub current: Mutex<Option<Arc<File>>>,
    /// Bytes written since the syncer last synced.
    pub dirty: AtomicBool,
    /// The latest append was refused for `max_bytes` (cleared by the next
    /// one that fits): writes are being refused, which `/readyz` shows.
    pub full: AtomicBool,
    /// An append failed: later ones fail with `Fenced` until the owner
    /// has undone what the failed one executed.
    pub fenced: AtomicBool,
    /// Woken when `fenced` is set.
    pub fence_set: tokio::sync::Notify,
    /// [`Shared::pending_bytes`] and whether `refused` is set, as of the
    /// last release of the state's lock: what every write checks, read
    /// without taking it.
    pub pending: AtomicU64,
    pub refused_now: AtomicBool,
}

/// The state, locked; publishes `pending` and `refused_now` when released,
/// so no change to what they mirror can miss them.
pub(crate) struct StateGuard<'a> {
    guard: MutexGuard<'a, State>,
    shared: &'a Shared,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        // Still under the lock: stores land in the lock's order.
        let st = &*self.guard;
        self.shared
            .pending
            .store(Shared::pending_bytes(st), Ordering::Relaxed);
        self.shared
            .refused_now
            .store(st.refused.is_some(), Ordering::Release);
    }
}

impl Shared {
    /// Fences the journal ([`crate::Journal::fence`]) and wakes whoever
    /// waits for it.
    pub(crate) fn set_fence(&self) {
        self.fenced
            .store(true, std::sync::atomic::Ordering::Release);
        self.fence_set.notify_waiters();
    }
}

impl Shared {
    /// Locks the state. A panic while holding the lock cannot leave it
    /// half-updated in a way that matters more than refusing service, so a
    /// poisoned lock is simply taken over.
    pub(crate) fn state(&self) -> StateGuard<'_> {
        StateGuard {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            shared: self,
        }
    }

    /// Syncs `file` and counts it.
    pub(crate) fn sync(&self, file: &File) -> io::Result<()> {
        file.sync_data()?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Marks the journal failed: every later append is refused.
    pub(crate) fn fail(&self, cause: &JournalError) {
        let mut st = self.state();
        if st.refused.is_none() {
            tracing::error!(error = %cause, "journal stopped: durable writes refused");
            st.refused = Some(JournalError::Failed {
                cause: cause.to_string(),
            });
        }
    }

    /// Bytes not yet released: whole segments after the release point,
    /// and the unreleased part of the segment it is in. Counting that
    /// segment whole would keep a journal whose `max_bytes` is below
    /// `segment_bytes` full forever, even after everything was replayed.
    pub(crate) fn pending_bytes(st: &State) -> u64 {
        let r = st.released;
        st.segments
            .range(r.segment..)
            .map(|(&id, m)| {
                if id == r.segment {
                    m.bytes.saturating_sub(r.offset)
                } else {
                    m.bytes
                }
            })
            .sum()
    }

    /// Deletes segments released at least `retain_after_replay` before
    /// `now`. Never the segment being appended to, nor the base of a
    /// snapshot or anything after it (standalone restore needs those).
    pub(crate) fn gc(&self, now: Instant) -> Result<Vec<u64>> {
        let victims: Vec<u64> = {
            let mut st = self.state();
            let keep_from = st.snapshot.as_ref().map_or(u64::MAX, |s| s.base_segment);
            let retain = self.cfg.retain_after_replay;
            let limit = st.committed.segment.min(st.released.segment).min(keep_from);
            let ids: Vec<u64> = st
                .segments
                .range(..limit)
                .filter(|(_, m)| {
                    m.released_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= retain)
                })
                .map(|(&id, _)| id)
                .collect();
            for id in &ids {
                st.segments.remove(id);
            }
            ids
        };
        for id in &victims {
            match fs::remove_file(segment_path(&self.dir, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(JournalError::io(
                        format!("deleting replayed segment {id}"),
                        e,
                    ))
                }
            }
        }
        if !victims.is_empty() {
            sync_dir(&self.dir)
                .map_err(|e| JournalError::io("syncing the journal directory", e))?;
            tracing::info!(segments = ?victims, "deleted replayed journal segments after retention");
        }
        Ok(victims)
    }

    /// Turns `pos` into the canonical position of a record start (or the
    /// committed end): `START` and offsets inside a header become the first
    /// record of that segment; the end of a sealed segment becomes the
    /// start of the next.
    pub(crate) fn normalize(st: &State, pos: Position) -> Result<Position> {
        let Some((&first, _)) = st.segments.iter().next() else {
            return Ok(st.committed);
        };
        let mut pos = pos;
        if pos.segment < first {
            if pos != Position::START {
                return Err(JournalError::Gone {
                    position: pos,
                    oldest: first,
                });
            }
            pos = Position::new(first, HEADER_LEN);
        }
        pos.offset = pos.offset.max(HEADER_LEN);
        loop {
            if pos >= st.committed {
                if pos > st.committed {
                    return Err(JournalError::InvalidPosition {
                        position: pos,
                        why: format!("past the end of the journal ({})", st.committed),
                    });
                }
                return Ok(pos);
            }
            let Some(meta) = st.segments.get(&pos.segment) else {
                return Err(JournalError::InvalidPosition {
                    position: pos,
                    why: "no such segment".into(),
                });
            };
            if pos.offset < meta.bytes {
                return Ok(pos);
            }
            if pos.offset > meta.bytes {
                return Err(JournalError::InvalidPosition {
                    position: pos,
                    why: format!("segment {} ends at {}", pos.segment, meta.bytes),
                });
            }
            match st.segments.range(pos.segment + 1..).next() {
                Some((&n, _)) => pos = Position::new(n, HEADER_LEN),
                None => return Ok(pos),
            }
        }
    }
}
