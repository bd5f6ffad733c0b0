//! [`Writer`]: what writes segments, with group commit.
//!
//! Under `fsync = always` it is a thread of its own: appenders put a
//! [`Request`] on a channel and wait on a oneshot. The writer takes
//! whatever is queued (up to [`MAX_BATCH`]), encodes it into one buffer,
//! writes it with one `write`, and syncs once before answering every
//! appender of the batch: while one `fsync` is in flight the next batch
//! queues up, so concurrent appenders share syncs and throughput grows
//! with concurrency instead of being bound by `1 / fsync latency`.
//! Syncing on the appenders' own thread instead, once per turn of a
//! current-thread runtime as Redis syncs once per event-loop turn, saves
//! the wake-up from this thread per append but was slower: that thread
//! runs no command while it syncs, so each sync covered fewer appends
//! (durable SETs at 0.45× `redis-server`'s `appendfsync always` against
//! 0.64× with this thread, `scripts/bench-outage.sh`).
//!
//! Under `everysec` and `no` nothing waits on a disk, and a thread only
//! added two context switches and a channel to every append (half of
//! standalone's unpipelined SET throughput): the writer sits behind a mutex
//! instead. An append is encoded into the buffer by the caller
//! ([`Writer::stage`]); the first appender to await its reply writes
//! everything staged so far with one `write` and answers every one of them
//! ([`Writer::complete`]), as Redis writes its AOF buffer once per event
//! loop turn. Sequence numbers are given when staged, in call order, which
//! is the journal's one total order.
//!
//! Answering each appender from the writer thread woke the appenders'
//! runtime once per append (a syscall to wake it, and often a switch to
//! it and back before the next answer): under `always` a batch's answers
//! go instead to a [`Relay`] task on that runtime, woken once per batch,
//! which answers them from there, where waking a task is a push on its
//! own queue. Barriers are still called on the writer thread, in order.
//!
//! After a failed write or sync nothing is known about what reached the
//! disk (and retrying `fsync` after a failure can report success for lost
//! data), so the journal stops accepting appends until restarted.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
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
    Append { entry: Entry, done: Done },
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
            Request::Append { done, .. } => done.send(Err(err)),
            Request::Rotate { done } => drop(done.send(Err(err))),
            Request::Barrier { done } => done(),
        }
    }
}

/// Outcomes of the appends staged by ticket
/// ([`Writer::stage_ticket`]), numbered in staging order, readable without
/// the writer's lock: an inline append then needs no channel of its own
/// (an allocation and four locked instructions per write).
pub(crate) struct Tickets {
    /// Every ticket below this one is written.
    ok_below: AtomicU64,
    /// Every ticket from this one on failed, with `error` (nothing is
    /// staged after a failure: the journal refuses appends from then).
    failed_from: AtomicU64,
    error: Mutex<Option<JournalError>>,
}

impl Tickets {
    fn new() -> Tickets {
        Tickets {
            ok_below: AtomicU64::new(0),
            failed_from: AtomicU64::new(u64::MAX),
            error: Mutex::new(None),
        }
    }

    /// How `ticket` ended, once known.
    pub(crate) fn outcome(&self, ticket: u64) -> Option<Result<()>> {
        if ticket < self.ok_below.load(Ordering::Acquire) {
            return Some(Ok(()));
        }
        if ticket >= self.failed_from.load(Ordering::Acquire) {
            let e = self.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Some(Err(e.unwrap_or(JournalError::Closed)));
        }
        None
    }
}

/// What an append's appender is told: its result on its future's
/// channel, and first to its [`Then`], if it gave one. Dropped unanswered
/// (the writer gone), the `Then` hears [`JournalError::Closed`].
pub(crate) struct Done {
    tx: Option<oneshot::Sender<Result<Position>>>,
    then: Option<Then>,
}

/// Called with an append's result as soon as the journal answers it (see
/// [`crate::Journal::append_then`]).
pub type Then = Box<dyn FnOnce(&Result<Position>) + Send>;

impl Done {
    pub(crate) fn new(tx: oneshot::Sender<Result<Position>>, then: Option<Then>) -> Done {
        Done { tx: Some(tx), then }
    }

    /// Answers. An appender that stopped waiting (its future dropped)
    /// needs no answer on the channel: ignoring the send error is right.
    pub(crate) fn send(mut self, r: Result<Position>) {
        if let Some(then) = self.then.take() {
            then(&r);
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(r);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then(&Err(JournalError::Closed));
        }
    }
}

enum Ack {
    Append(Done, Position),
    Rotate(oneshot::Sender<Result<u64>>, u64),
    Barrier(Box<dyn FnOnce() + Send>),
}

impl Ack {
    /// Answers the request: with its result, or with `failure`. An
    /// appender that stopped waiting needs no answer (the send error is
    /// ignored).
    fn answer(self, failure: Option<&JournalError>) {
        match (self, failure) {
            (Ack::Append(done, pos), None) => done.send(Ok(pos)),
            (Ack::Append(done, _), Some(e)) => done.send(Err(e.clone())),
            (Ack::Rotate(done, seg), None) => drop(done.send(Ok(seg))),
            (Ack::Rotate(done, _), Some(e)) => drop(done.send(Err(e.clone()))),
            (Ack::Barrier(done), _) => done(),
        }
    }
}

/// Answers the writer thread hands to a task on the appenders' runtime
/// ([`Journal::relay`](crate::Journal::relay)), so that a batch wakes that
/// runtime once rather than once per append.
pub(crate) struct Relay {
    queue: Mutex<Relayed>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Relayed {
    /// A relay task is running: answers may be left here.
    running: bool,
    answers: Vec<(Ack, Option<JournalError>)>,
}

impl Relay {
    pub(crate) fn new() -> Relay {
        Relay {
            queue: Mutex::new(Relayed::default()),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Relayed> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers what the writer relays until dropped; then answers what is
    /// left and lets the writer answer by itself again. A second relay
    /// while one runs ends at once.
    pub(crate) async fn run(self: Arc<Relay>) {
        struct Running(Arc<Relay>);
        impl Drop for Running {
            fn drop(&mut self) {
                let left = {
                    let mut q = self.0.queue();
                    q.running = false;
                    std::mem::take(&mut q.answers)
                };
                for (ack, failure) in left {
                    ack.answer(failure.as_ref());
                }
            }
        }
        {
            let mut q = self.queue();
            if q.running {
                return;
            }
            q.running = true;
        }
        let running = Running(self);
        let relay = &running.0;
        let mut batch = Vec::new();
        loop {
            relay.wake.notified().await;
            std::mem::swap(&mut relay.queue().answers, &mut batch);
            for (ack, failure) in batch.drain(..) {
                ack.answer(failure.as_ref());
            }
        }
    }
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
    /// Requests staged since the last [`complete`](Self::complete), to be
    /// answered by it.
    acks: Vec<Ack>,
    /// A segment was rolled since the last `complete` (old ones may be
    /// collectable).
    rolled: bool,
    /// Rolling failed since the last `complete`: it fails what is staged.
    failure: Option<JournalError>,
    /// Tickets given out ([`Writer::stage_ticket`]), and how far they are
    /// answered (by the last `complete`).
    issued: u64,
    settled: u64,
    pub(crate) tickets: Arc<Tickets>,
    /// Where the writer thread leaves its answers while a relay runs.
    relay: Option<Arc<Relay>>,
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
            acks: Vec::new(),
            rolled: false,
            failure: None,
            issued: 0,
            settled: 0,
            tickets: Arc::new(Tickets::new()),
            relay: None,
        }
    }

    /// Leaves answers to `relay` while it runs (the writer thread).
    pub(crate) fn relayed_by(mut self, relay: Arc<Relay>) -> Writer {
        self.relay = Some(relay);
        self
    }

    /// Runs until every sender is gone, then syncs what `everysec` / `no`
    /// left unsynced so a clean shutdown loses nothing.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            // Woken by the first append of a turn of the appenders'
            // runtime, this thread would otherwise preempt that runtime on
            // a shared CPU and sync that one append alone. Yielding lets
            // the turn finish, so its appends share the sync, as Redis
            // syncs once per event-loop turn (about 20 appends per sync
            // became 40 with 50 clients, `scripts/bench-outage.sh`; with a
            // CPU of its own the yield returns at once).
            std::thread::yield_now();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        self.close();
    }

    /// At shutdown: writes what is staged and syncs what `everysec` / `no`
    /// left unsynced, so a clean shutdown loses nothing.
    pub(crate) fn close(&mut self) {
        self.complete();
        if let Some(f) = &self.file {
            if self.shared.cfg.fsync != Fsync::Always && self.shared.state().refused.is_none() {
                if let Err(e) = self.shared.sync(f) {
                    tracing::error!(error = %e, "journal: final sync at shutdown failed");
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        for req in batch {
            self.stage(req);
        }
        self.complete();
    }

    /// Takes `req`'s place in the journal's order: an append is encoded
    /// into the buffer (and given its position), a rotation rolls the
    /// segment. Nothing is acknowledged until [`complete`](Self::complete).
    pub(crate) fn stage(&mut self, req: Request) {
        if let Request::Append { entry, done } = req {
            match self.place(&entry) {
                Ok(pos) => self.acks.push(Ack::Append(done, pos)),
                Err(e) => done.send(Err(e)),
            }
            return;
        }
        if let Some(err) = self.refusal() {
            req.fail(err);
            return;
        }
        match req {
            Request::Append { .. } => {}
            Request::Rotate { done } => {
                if self.offset + self.buf.len() as u64 > HEADER_LEN {
                    if let Err(e) = self.roll() {
                        drop(done.send(Err(e.clone())));
                        self.failure = Some(e);
                        return;
                    }
                    self.rolled = true;
                }
                self.acks.push(Ack::Rotate(done, self.segment));
            }
            Request::Barrier { done } => self.acks.push(Ack::Barrier(done)),
        }
    }

    /// [`stage`](Self::stage) for an append the inline writer answers by
    /// ticket ([`Tickets`]) instead of a channel: its position and ticket,
    /// or why it was refused at once.
    pub(crate) fn stage_ticket(&mut self, entry: &Entry) -> Result<(Position, u64)> {
        let pos = self.place(entry)?;
        let ticket = self.issued;
        self.issued += 1;
        Ok((pos, ticket))
    }

    /// Why nothing can be staged now, if so.
    fn refusal(&self) -> Option<JournalError> {
        if let Some(err) = self.failure.clone() {
            // A batch that failed part-way: the rest of it is refused with
            // what refuses every append from now on.
            let refused = self.shared.state().refused.clone();
            return Some(refused.unwrap_or(err));
        }
        let refused = self.shared.state().refused.clone();
        refused.or_else(|| self.file.is_none().then_some(JournalError::Closed))
    }

    /// Gives `entry` its place: encoded into the buffer, at the position
    /// returned.
    fn place(&mut self, entry: &Entry) -> Result<Position> {
        let pending = (self.failure.is_none()
            && self.file.is_some()
            && !self.shared.refused_now.load(Ordering::Acquire))
        .then(|| self.shared.pending.load(Ordering::Relaxed));
        let Some(pending) = pending else {
            return Err(self.refusal().unwrap_or(JournalError::Closed));
        };
        let cfg = &self.shared.cfg;
        // After a refused append, refuse the ones behind it: they
        // executed after it and may depend on it, until its owner
        // has undone it and unfenced.
        if self.shared.fenced.load(Ordering::Acquire) {
            return Err(JournalError::Fenced);
        }
        let len = record_len(entry);
        if len - FRAME_HEADER_LEN > u64::from(MAX_PAYLOAD) {
            self.shared.set_fence();
            return Err(JournalError::TooLarge { bytes: len });
        }
        let pending = pending + self.buf.len() as u64;
        if pending + len > cfg.max_bytes {
            self.shared.full.store(true, Ordering::Relaxed);
            self.shared.set_fence();
            return Err(JournalError::Full {
                max_bytes: cfg.max_bytes,
            });
        }
        let used = self.offset + self.buf.len() as u64;
        if used + len > cfg.segment_bytes && used > HEADER_LEN {
            if let Err(e) = self.roll() {
                self.failure = Some(e.clone());
                return Err(e);
            }
            self.rolled = true;
        }
        self.shared.full.store(false, Ordering::Relaxed);
        let pos = Position::new(self.segment, self.offset + self.buf.len() as u64);
        encode_record(self.next_seq, entry, &mut self.buf);
        self.next_seq += 1;
        Ok(pos)
    }

    /// Writes what [`stage`](Self::stage) encoded (syncing under `fsync =
    /// always`), publishes the new end, and answers every staged request.
    /// Nothing to do when nothing is staged.
    pub(crate) fn complete(&mut self) {
        if self.acks.is_empty() && self.buf.is_empty() && self.failure.is_none() {
            return;
        }
        let mut failure = self.failure.take();
        if failure.is_none() {
            if let Err(e) = self.flush(self.shared.cfg.fsync == Fsync::Always) {
                failure = Some(e);
            }
        }
        let acks = std::mem::take(&mut self.acks);
        let (from, to) = (self.settled, self.issued);
        self.settled = to;
        if let Some(err) = failure {
            self.buf.clear();
            self.shared.fail(&err);
            if from < to {
                *self.tickets.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
                self.tickets.failed_from.fetch_min(from, Ordering::AcqRel);
            }
            // What ran before these appends must be undone by its owner.
            self.shared.set_fence();
            self.answer(acks, Some(err));
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
        if from < to {
            self.tickets.ok_below.store(to, Ordering::Release);
        }
        self.answer(acks, None);
        if std::mem::take(&mut self.rolled) {
            // Rotation is when old segments can have outlived their
            // retention; a failure to delete one is logged, not fatal.
            if let Err(e) = self.shared.gc(Instant::now()) {
                tracing::warn!(error = %e, "journal: deleting replayed segments failed");
            }
        }
    }

    /// Answers a batch, in order: through the relay while one runs (one
    /// wake for the batch), else here. Barriers are called here either way:
    /// the test hook that stalls the writer is one.
    fn answer(&self, acks: Vec<Ack>, failure: Option<JournalError>) {
        let direct = |acks: Vec<Ack>| {
            for ack in acks {
                ack.answer(failure.as_ref());
            }
        };
        let Some(relay) = &self.relay else {
            return direct(acks);
        };
        let mut q = relay.queue();
        if !q.running {
            drop(q);
            return direct(acks);
        }
        let mut barriers = Vec::new();
        for ack in acks {
            match ack {
                Ack::Barrier(done) => barriers.push(done),
                ack => q.answers.push((ack, failure.clone())),
            }
        }
        drop(q);
        relay.wake.notify_one();
        for done in barriers {
            done();
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
