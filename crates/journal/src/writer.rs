//! [`Writer`]: the one thread that writes segments, with group commit.
//!
//! Appenders put a [`Request`] on a channel and wait on a oneshot. The
//! writer takes whatever is queued (up to [`MAX_BATCH`]), encodes it into
//! one buffer, writes it with one `write`, and under `fsync = always` syncs
//! once before answering every appender of the batch: while one `fsync` is
//! in flight the next batch queues up, so concurrent appenders share syncs
//! and throughput grows with concurrency instead of being bound by
//! `1 / fsync latency`. Sequence numbers are given here, in channel order,
//! which is the journal's one total order.
//!
//! After a failed write or sync nothing is known about what reached the
//! disk (and retrying `fsync` after a failure can report success for lost
//! data), so the journal stops accepting appends until restarted.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::config::Fsync;
use crate::entry::Entry;
use crate::error::{JournalError, Result};
use crate::header::HEADER_LEN;
use crate::position::Position;
use crate::record::{encode_record, record_len, FRAME_HEADER_LEN, MAX_PAYLOAD};
use crate::segment::create_segment;
use crate::shared::{SegMeta, Shared};

/// Most requests handled in one batch, so one huge queue does not delay
/// the first appenders' acknowledgements without bound.
pub(crate) const MAX_BATCH: usize = 4096;

/// Work for the writer thread.
pub(crate) enum Request {
    /// Append one entry; answered with its position once durable.
    Append {
        entry: Entry,
        done: oneshot::Sender<Result<Position>>,
    },
    /// Start a new segment (unless the current one is empty); answered with
    /// the number of the segment later appends go to.
    Rotate { done: oneshot::Sender<Result<u64>> },
    /// Called once every request before it is answered.
    Barrier { done: Box<dyn FnOnce() + Send> },
}

impl Request {
    fn fail(self, err: JournalError) {
        // An appender that stopped waiting (its future dropped) needs no
        // answer: ignoring the send error is right.
        match self {
            Request::Append { done, .. } => drop(done.send(Err(err))),
            Request::Rotate { done } => drop(done.send(Err(err))),
            Request::Barrier { done } => done(),
        }
    }
}

enum Ack {
    Append(oneshot::Sender<Result<Position>>, Position),
    Rotate(oneshot::Sender<Result<u64>>, u64),
    Barrier(Box<dyn FnOnce() + Send>),
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    /// `None` when the journal was opened refused (corrupt): nothing is
    /// ever written then.
    file: Option<Arc<File>>,
    segment: u64,
    /// Bytes in the current segment file, header included.
    offset: u64,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        file: Option<Arc<File>>,
        segment: u64,
        offset: u64,
        next_seq: u64,
    ) -> Self {
        Writer {
            shared,
            file,
            segment,
            offset,
            next_seq,
            buf: Vec::with_capacity(1 << 16),
        }
    }

    /// Runs until every sender is gone, then syncs what `everysec` / `no`
    /// left unsynced so a clean shutdown loses nothing.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        if let Some(f) = &self.file {
            if self.shared.cfg.fsync != Fsync::Always && self.shared.state().refused.is_none() {
                if let Err(e) = self.shared.sync(f) {
                    tracing::error!(error = %e, "journal: final sync at shutdown failed");
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let (refused, mut pending) = {
            let st = self.shared.state();
            (st.refused.clone(), Shared::pending_bytes(&st))
        };
        if let Some(err) = refused.or_else(|| self.file.is_none().then_some(JournalError::Closed)) {
            for r in batch {
                r.fail(err.clone());
            }
            return;
        }
        let cfg = self.shared.cfg.clone();
        let mut acks = Vec::with_capacity(batch.len());
        let mut failure: Option<JournalError> = None;
        let mut rolled = false;
        let mut rest = batch.into_iter();
        for req in rest.by_ref() {
            match req {
                Request::Append { entry, done } => {
                    // After a refused append, refuse the ones behind it:
                    // they executed after it and may depend on it, until
                    // its owner has undone it and unfenced.
                    if self.shared.fenced.load(Ordering::Acquire) {
                        drop(done.send(Err(JournalError::Fenced)));
                        continue;
                    }
                    let len = record_len(&entry);
                    if len - FRAME_HEADER_LEN > u64::from(MAX_PAYLOAD) {
                        self.shared.set_fence();
                        drop(done.send(Err(JournalError::TooLarge { bytes: len })));
                        continue;
                    }
                    if pending + len > cfg.max_bytes {
                        self.shared.full.store(true, Ordering::Relaxed);
                        self.shared.set_fence();
                        drop(done.send(Err(JournalError::Full {
                            max_bytes: cfg.max_bytes,
                        })));
                        continue;
                    }
                    let used = self.offset + self.buf.len() as u64;
                    if used + len > cfg.segment_bytes && used > HEADER_LEN {
                        if let Err(e) = self.roll() {
                            drop(done.send(Err(e.clone())));
                            failure = Some(e);
                            break;
                        }
                        rolled = true;
                        pending += HEADER_LEN;
                    }
                    self.shared.full.store(false, Ordering::Relaxed);
                    let pos = Position::new(self.segment, self.offset + self.buf.len() as u64);
                    encode_record(self.next_seq, &entry, &mut self.buf);
                    self.next_seq += 1;
                    pending += len;
                    acks.push(Ack::Append(done, pos));
                }
                Request::Rotate { done } => {
                    if self.offset + self.buf.len() as u64 > HEADER_LEN {
                        if let Err(e) = self.roll() {
                            drop(done.send(Err(e.clone())));
                            failure = Some(e);
                            break;
                        }
                        rolled = true;
                        pending += HEADER_LEN;
                    }
                    acks.push(Ack::Rotate(done, self.segment));
                }
                Request::Barrier { done } => acks.push(Ack::Barrier(done)),
            }
        }
        if failure.is_none() {
            if let Err(e) = self.flush(cfg.fsync == Fsync::Always) {
                failure = Some(e);
            }
        }
        if let Some(err) = failure {
            self.shared.fail(&err);
            // What ran before these appends must be undone by its owner.
            self.shared.set_fence();
            for ack in acks {
                match ack {
                    Ack::Append(done, _) => drop(done.send(Err(err.clone()))),
                    Ack::Rotate(done, _) => drop(done.send(Err(err.clone()))),
                    Ack::Barrier(done) => done(),
                }
            }
            let refused = self
                .shared
                .state()
                .refused
                .clone()
                .unwrap_or(JournalError::Closed);
            for r in rest {
                r.fail(refused.clone());
            }
            return;
        }
        let committed = Position::new(self.segment, self.offset);
        {
            let mut st = self.shared.state();
            st.committed = committed;
            st.last_seq = self.next_seq - 1;
            if let Some(m) = st.segments.get_mut(&self.segment) {
                m.bytes = self.offset;
            }
        }
        self.shared.end.send_replace(committed);
        for ack in acks {
            match ack {
                Ack::Append(done, pos) => drop(done.send(Ok(pos))),
                Ack::Rotate(done, seg) => drop(done.send(Ok(seg))),
                Ack::Barrier(done) => done(),
            }
        }
        if rolled {
            // Rotation is when old segments can have outlived their
            // retention; a failure to delete one is logged, not fatal.
            if let Err(e) = self.shared.gc(Instant::now()) {
                tracing::warn!(error = %e, "journal: deleting replayed segments failed");
            }
        }
    }

    /// Writes the buffer; syncs when `sync` (else marks it for the
    /// `everysec` syncer).
    fn flush(&mut self, sync: bool) -> Result<()> {
        let Some(file) = &self.file else {
            return Err(JournalError::Closed);
        };
        if !self.buf.is_empty() {
            let what = || format!("writing segment {}", self.segment);
            (&**file)
                .write_all(&self.buf)
                .map_err(|e| JournalError::io(what(), e))?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
            if sync {
                self.shared.sync(file).map_err(|e| {
                    JournalError::io(format!("syncing segment {}", self.segment), e)
                })?;
            } else {
                self.shared
                    .dirty
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }

    /// Seals the current segment (written and synced whatever the policy,
    /// so only the last segment can ever have a torn tail) and starts the
    /// next one.
    fn roll(&mut self) -> Result<()> {
        self.flush(false)?;
        let Some(file) = &self.file else {
            return Err(JournalError::Closed);
        };
        self.shared
            .sync(file)
            .map_err(|e| JournalError::io(format!("syncing segment {}", self.segment), e))?;
        let next = self.segment + 1;
        let f = create_segment(&self.shared.dir, self.shared.epoch, next, self.next_seq)
            .map_err(|e| JournalError::io(format!("creating segment {next}"), e))?;
        let f = Arc::new(f);
        {
            let mut st = self.shared.state();
            if let Some(m) = st.segments.get_mut(&self.segment) {
                m.bytes = self.offset;
            }
            st.segments.insert(
                next,
                SegMeta {
                    first_seq: self.next_seq,
                    bytes: HEADER_LEN,
                    released_at: None,
                },
            );
        }
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(f.clone());
        self.file = Some(f);
        self.segment = next;
        self.offset = HEADER_LEN;
        Ok(())
    }
}
