//! The ordered reply queue: replies go back in request order, and each slot
//! waits for its fate (its replies, "never sent", its deadline, or its
//! journal record) before anything behind it is written.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use resp::{frame_len, Limits, Request};
use tokio::time::Instant;
use upstream::pool::Dedicated;
use upstream::{BatchReply, Conn, OutputBudget, Replies, State};

use super::{ReplyMode, Session};
use crate::reply;

pub(super) struct Slot {
    body: Body,
    silent: bool,
    started: Instant,
}

pub(super) enum Body {
    Ready(Bytes),
    Wait(Wait),
    /// Answered locally; sent once its journal entry is durable, or given
    /// up as uncertain at the deadline (a stalled disk must not hang the
    /// client).
    Durable(Bytes, crate::outage::Durable, Instant),
    Close,
}

pub(super) struct Wait {
    pub(super) rx: Replies,
    pub(super) conn: Conn,
    /// Per command: may it change data?
    pub(super) writes: Vec<bool>,
    /// Per command raw bytes, to resend reads once on a fresh connection.
    pub(super) raws: Vec<Bytes>,
    pub(super) deadline: Option<Instant>,
    /// `MULTI … EXEC` sent as one piece: only EXEC's reply goes back.
    pub(super) exec_only: bool,
    /// Replies the batch will get (more than `writes.len()` for a
    /// transaction: `+OK` and the `+QUEUED`s).
    pub(super) expect: usize,
    /// On a dedicated connection: never moved to another one.
    pub(super) dedicated: Option<Dedicated>,
    pub(super) retried: bool,
    /// Reads whose replies go into the near-cache: (position, fill). The
    /// command after each is its hidden `PEXPIRETIME`, never shown to the
    /// client.
    pub(super) fills: Vec<(usize, crate::outage::Fill)>,
    /// Client commands counted into `pending_cmds` when pushed.
    pub(super) counted: usize,
}

impl Wait {
    /// Sends one command on a connection of its own (pinned or dedicated):
    /// never moved to another connection, so never resent.
    pub(super) fn single(
        conn: Conn,
        req: Request,
        write: bool,
        deadline: Option<Instant>,
        dedicated: Option<Dedicated>,
        budget: &Arc<OutputBudget>,
    ) -> Wait {
        let rx = conn.send_bounded(req.raw.clone(), 1, budget, false);
        Wait {
            rx,
            conn,
            writes: vec![write],
            raws: vec![req.raw],
            deadline,
            exec_only: false,
            expect: 1,
            dedicated,
            retried: true,
            fills: Vec::new(),
            counted: 1,
        }
    }

    /// True when command `i` of the batch is a hidden `PEXPIRETIME`.
    fn hidden(&self, i: usize) -> bool {
        self.fills.iter().any(|(p, _)| p + 1 == i)
    }

    /// Commands the client sent (hidden ones not counted).
    fn visible(&self) -> usize {
        self.writes.len() - self.fills.len()
    }

    /// Shows the replies in `data` (`received` frames) to the client, minus
    /// the hidden ones, and keeps the filled reads in the near-cache. Then
    /// drops what was answered and every hidden command from the batch, so
    /// what is left can be resent or failed like any batch.
    fn take_fills(
        &mut self,
        data: &[u8],
        received: usize,
        outage: Option<&crate::outage::Outage>,
        emit: &mut impl FnMut(&[u8]),
    ) {
        let limits = resp::Limits::upstream();
        let mut frames = Vec::with_capacity(received);
        let mut pos = 0;
        while frames.len() < received {
            match frame_len(&data[pos..], &limits) {
                Ok(Some(n)) => {
                    frames.push(&data[pos..pos + n]);
                    pos += n;
                }
                _ => break,
            }
        }
        for (i, f) in frames.iter().enumerate() {
            if self.hidden(i) {
                continue;
            }
            emit(f);
            if let (Some((_, fill)), Some(o), Some(exp)) = (
                self.fills.iter().find(|(p, _)| *p == i),
                outage,
                frames.get(i + 1),
            ) {
                o.fill(fill, f, exp);
            }
        }
        let done = frames.len().min(self.writes.len());
        let keep: Vec<usize> = (done..self.writes.len())
            .filter(|i| !self.hidden(*i))
            .collect();
        self.writes = keep.iter().map(|&i| self.writes[i]).collect();
        self.raws = keep
            .iter()
            .filter_map(|&i| self.raws.get(i).cloned())
            .collect();
        self.fills.clear();
    }
}

pub(super) enum Outcome {
    Reply(BatchReply),
    NotSent,
    Deadline,
    Journaled(Result<(), String>),
    /// The journal did not confirm a local write by its deadline.
    JournalLate,
}

pub(super) struct Builder {
    pub(super) conn: Conn,
    pub(super) raws: Vec<Bytes>,
    pub(super) writes: Vec<bool>,
    pub(super) fills: Vec<(usize, crate::outage::Fill)>,
}

/// A batch's vectors, kept from the last one answered for the next one
/// built: a client that sends one command at a time builds a batch per
/// command, and allocating both vectors for each (then growing them, for
/// a pipeline) cost about a twentieth of the proxy's work per command.
#[derive(Default)]
pub(super) struct Spare {
    raws: Vec<Bytes>,
    writes: Vec<bool>,
}

/// Vectors bigger than this go back to the allocator rather than being
/// kept for a session's life.
const SPARE_AT_MOST: usize = 64;

impl Spare {
    /// Keeps a finished batch's vectors, emptied, unless one is kept
    /// already or they are big.
    fn keep(&mut self, raws: &mut Vec<Bytes>, writes: &mut Vec<bool>) {
        if self.raws.capacity() == 0
            && raws.capacity() <= SPARE_AT_MOST
            && writes.capacity() <= SPARE_AT_MOST
        {
            raws.clear();
            writes.clear();
            self.raws = std::mem::take(raws);
            self.writes = std::mem::take(writes);
        }
    }

    /// A new batch for `conn`, on the kept vectors if there are any.
    pub(super) fn builder(&mut self, conn: Conn) -> Builder {
        Builder {
            conn,
            raws: std::mem::take(&mut self.raws),
            writes: std::mem::take(&mut self.writes),
            fills: Vec::new(),
        }
    }
}

impl Session {
    pub(super) fn push(&mut self, body: Body) {
        let silent = match (&body, self.reply_mode) {
            (Body::Close, _) => false,
            (_, ReplyMode::On) => false,
            (_, ReplyMode::Off) => true,
            (_, ReplyMode::SkipNext) => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        let mut body = body;
        let n = match &mut body {
            Body::Wait(w) => {
                let id = w.conn.id();
                match self.inflight.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, k)) => *k += 1,
                    None => self.inflight.push((id, 1)),
                }
                w.counted = w.visible();
                w.counted
            }
            _ => 1,
        };
        self.pending_cmds += n;
        self.pending.push_back(Slot {
            body,
            silent,
            started: Instant::now(),
        });
    }

    pub(super) fn push_ready(&mut self, b: Bytes) {
        self.flush_batch();
        self.push(Body::Ready(b));
    }

    pub(super) fn push_silent_ok(&mut self) {
        // CLIENT REPLY OFF/SKIP: the command itself gets no reply.
        self.flush_batch();
        let saved = self.reply_mode;
        self.reply_mode = ReplyMode::Off;
        self.push(Body::Ready(reply::ok()));
        self.reply_mode = saved;
    }

    /// Closes the client before anything else queued is answered.
    fn close_first(&mut self) {
        self.pending_cmds += 1;
        self.pending.push_front(Slot {
            body: Body::Close,
            silent: false,
            started: Instant::now(),
        });
    }

    fn pop_front(&mut self) -> Option<Slot> {
        let mut slot = self.pending.pop_front()?;
        let n = match &mut slot.body {
            Body::Wait(w) => {
                let id = w.conn.id();
                if let Some(pos) = self.inflight.iter().position(|(c, _)| *c == id) {
                    self.inflight[pos].1 -= 1;
                    if self.inflight[pos].1 == 0 {
                        self.inflight.swap_remove(pos);
                    }
                }
                self.spare.keep(&mut w.raws, &mut w.writes);
                w.counted
            }
            _ => 1,
        };
        self.pending_cmds -= n;
        self.shared
            .metrics
            .duration
            .record_n(slot.started.elapsed(), n as u64);
        Some(slot)
    }

    pub(super) fn flush_batch(&mut self) {
        let Some(b) = self.batch.take() else { return };
        let raw = if b.raws.len() == 1 {
            b.raws[0].clone()
        } else {
            let mut buf = BytesMut::with_capacity(b.raws.iter().map(|r| r.len()).sum());
            for r in &b.raws {
                buf.extend_from_slice(r);
            }
            buf.freeze()
        };
        let expect = b.raws.len();
        // Replies stream to the client as they complete, unless some fill
        // the near-cache (those are taken apart whole).
        let rx = b
            .conn
            .send_bounded(raw, expect, &self.budget, b.fills.is_empty());
        let deadline = Some(Instant::now() + self.timeout);
        self.push(Body::Wait(Wait {
            rx,
            conn: b.conn,
            writes: b.writes,
            raws: b.raws,
            deadline,
            exec_only: false,
            expect,
            dedicated: None,
            retried: false,
            fills: b.fills,
            counted: 0,
        }));
    }

    /// Moves every finished slot at the front of the queue into `out`.
    /// Returns true when a slot asks to close the connection.
    pub(super) async fn collect_ready(&mut self, out: &mut BytesMut) -> bool {
        loop {
            if out.len() >= reply::FLUSH_AT {
                // Write these first: the rest stays with Redis's replies,
                // counted against the client's budget.
                return false;
            }
            let health = self.shared.health.state();
            let outcome = match self.pending.front_mut() {
                None => return false,
                Some(Slot {
                    body: Body::Close, ..
                }) => {
                    self.pop_front();
                    return true;
                }
                Some(Slot {
                    body: Body::Ready(_),
                    ..
                }) => {
                    if let Some(Slot {
                        body: Body::Ready(b),
                        silent,
                        ..
                    }) = self.pop_front()
                    {
                        if !silent {
                            out.extend_from_slice(&b);
                        }
                    }
                    continue;
                }
                Some(Slot {
                    body: Body::Durable(_, _, deadline),
                    ..
                }) => {
                    if Instant::now() < *deadline {
                        return false;
                    }
                    Outcome::JournalLate
                }
                Some(Slot {
                    body: Body::Wait(w),
                    ..
                }) => match w.rx.try_recv() {
                    Ok(Some(r)) => Outcome::Reply(r),
                    Err(()) => Outcome::NotSent,
                    Ok(None) => {
                        if w.deadline.is_some_and(|d| Instant::now() >= d) {
                            Outcome::Deadline
                        } else {
                            return false;
                        }
                    }
                },
            };
            self.complete_front(outcome, out, health).await;
        }
    }

    pub(super) async fn complete_front(
        &mut self,
        outcome: Outcome,
        out: &mut BytesMut,
        health: State,
    ) {
        if let Outcome::JournalLate = outcome {
            if let Some(Slot { silent, .. }) = self.pop_front() {
                if !silent {
                    let ms = self.timeout.as_millis() as u64;
                    out.extend_from_slice(&reply::uncertain_journal(ms));
                }
            }
            return;
        }
        if let Outcome::Journaled(result) = outcome {
            // A local write: its reply goes out only now that it is
            // durable, or an honest error if the journal failed it.
            if let Some(Slot {
                body: Body::Durable(reply, ..),
                silent,
                ..
            }) = self.pop_front()
            {
                if !silent {
                    match result {
                        Ok(()) => out.extend_from_slice(&reply),
                        // The outage undid the write locally before this
                        // (`Outage::append`): it ran nowhere.
                        Err(e) => out.extend_from_slice(&reply::error(format!("UNAVAILABLE {e}"))),
                    }
                }
            }
            return;
        }
        let Some(Slot {
            body: Body::Wait(w),
            silent,
            ..
        }) = self.pending.front_mut()
        else {
            return;
        };
        let silent = *silent;
        let mut emit = |b: &[u8]| {
            if !silent {
                out.extend_from_slice(b)
            }
        };
        let timeout_ms = self.timeout.as_millis() as u64;
        if self.budget.is_over() {
            // The client is over its output limit and is being closed; its
            // replies were dropped as they came.
            self.pop_front();
            return;
        }
        match outcome {
            Outcome::Journaled(_) | Outcome::JournalLate => {}
            Outcome::Reply(r) if r.more => {
                // The first replies of a streamed batch: they go out now,
                // and the slot stands for the commands still unanswered.
                emit(&r.data);
                let n = r.received.min(w.writes.len());
                w.writes.drain(..n);
                w.raws.drain(..n.min(w.raws.len()));
                w.expect -= r.received.min(w.expect);
                // Redis is answering: the rest get a full timeout of their
                // own rather than what the first pieces left of it.
                if w.deadline.is_some() {
                    w.deadline = Some(Instant::now() + self.timeout);
                }
            }
            Outcome::Reply(r) => {
                let complete = r.received == w.expect && !r.lost;
                if w.exec_only {
                    match (complete, last_frame(&r.data)) {
                        (true, Some(last)) => emit(last),
                        _ => emit(&reply::uncertain_lost()),
                    }
                } else {
                    let rest = if w.fills.is_empty() {
                        emit(&r.data);
                        r.received.min(w.writes.len())
                    } else {
                        let outage = self.shared.outage.as_deref();
                        w.take_fills(&r.data, r.received, outage, &mut emit);
                        0
                    };
                    if r.lost {
                        // A reset data connection may be Redis gone: have
                        // the prober look now.
                        self.shared.health.poke();
                    }
                    if !complete && w.dedicated.is_some() {
                        // A blocking command whose connection broke: client
                        // libraries retry a broken connection, but take an
                        // error reply as the command's answer (a worker
                        // exits). So the client's connection is closed.
                        self.pop_front();
                        self.close_first();
                        return;
                    }
                    if !complete {
                        let all_reads = w.writes[rest..].iter().all(|x| !x);
                        let in_time = w.deadline.is_none_or(|d| Instant::now() < d);
                        if all_reads
                            && !w.retried
                            && in_time
                            && health != State::Down
                            && w.dedicated.is_none()
                        {
                            w.writes.drain(..rest);
                            w.raws.drain(..rest);
                            w.retried = true;
                            if matches!(self.resend_front(rest).await, Resend::Sent) {
                                return;
                            }
                        }
                        let Some(Slot {
                            body: Body::Wait(w),
                            ..
                        }) = self.pending.front()
                        else {
                            return;
                        };
                        let start = if w.writes.len() < rest { 0 } else { rest };
                        let writes: Vec<bool> = w.writes[start.min(w.writes.len())..].to_vec();
                        let mut o = BytesMut::new();
                        for write in writes {
                            o.extend_from_slice(&if write {
                                reply::uncertain_lost()
                            } else {
                                reply::unavailable_lost()
                            });
                        }
                        if !silent {
                            out.extend_from_slice(&o);
                        }
                    }
                }
                if let Some(slot) = self.pop_front() {
                    if let Body::Wait(w) = slot.body {
                        // A blocking connection that answered is clean:
                        // keep it for the session's next blocking command.
                        if complete && w.dedicated.is_some() && self.blocking.is_none() {
                            self.blocking = w.dedicated;
                        }
                    }
                }
            }
            Outcome::NotSent => {
                let in_time = w.deadline.is_none_or(|d| Instant::now() < d);
                let mut redis_gone = health == State::Down || w.retried;
                if !w.retried && in_time && health != State::Down && w.dedicated.is_none() {
                    w.retried = true;
                    match self.resend_front(0).await {
                        Resend::Sent => return,
                        Resend::Refused => redis_gone = true,
                        Resend::Failed => {}
                    }
                }
                // Redis went away with these commands unsent (nothing
                // listens, or a second connection died too): they are
                // routed as during the outage, as if they had arrived a
                // moment later, instead of failing for a timing the
                // client could not see.
                if redis_gone && !silent && self.front_as_outage().await {
                    return;
                }
                let n = match self.pending.front() {
                    Some(Slot {
                        body: Body::Wait(w),
                        ..
                    }) => w.visible(),
                    _ => 1,
                };
                let r =
                    reply::unavailable_connect("the connection closed before the command was sent");
                for _ in 0..n {
                    if !silent {
                        out.extend_from_slice(&r);
                    }
                }
                self.pop_front();
            }
            Outcome::Deadline => {
                let down_block = w.deadline.is_none();
                if down_block && w.dedicated.is_some() {
                    // Blocked for ever and Redis went down: closed as for a
                    // broken connection, which client libraries retry.
                    self.pop_front();
                    self.close_first();
                    return;
                }
                let mut o = BytesMut::new();
                for (i, &write) in w.writes.iter().enumerate() {
                    if w.hidden(i) {
                        continue;
                    }
                    o.extend_from_slice(&if down_block {
                        reply::uncertain_down()
                    } else if write {
                        reply::uncertain_deadline(timeout_ms)
                    } else {
                        reply::unavailable_deadline(timeout_ms)
                    });
                }
                if !silent {
                    out.extend_from_slice(&o);
                }
                if w.exec_only {
                    // EXEC's reply is still to come on this connection; the
                    // WATCH state is unknown, so give the pinned one up.
                    if self.pinned.is_some() {
                        self.unpin_when_idle = true;
                    }
                }
                self.pop_front();
            }
        }
    }

    /// Resends the front slot's commands on a fresh shared connection;
    /// says why not when none could be had.
    async fn resend_front(&mut self, _skipped: usize) -> Resend {
        self.conn = None;
        let pool = self.shared.upstream.pool(&self.key());
        let deadline = match self.pending.front() {
            Some(Slot {
                body: Body::Wait(w),
                ..
            }) => w.deadline.unwrap_or_else(|| Instant::now() + self.timeout),
            _ => return Resend::Failed,
        };
        let conn = match pool.get(deadline).await {
            Ok(c) => c,
            Err(e) if e.is_gone() => {
                self.shared.health.poke();
                return Resend::Refused;
            }
            Err(_) => return Resend::Failed,
        };
        let old_id = match self.pending.front() {
            Some(Slot {
                body: Body::Wait(w),
                ..
            }) => w.conn.id(),
            _ => return Resend::Failed,
        };
        let Some(Slot {
            body: Body::Wait(w),
            ..
        }) = self.pending.front_mut()
        else {
            return Resend::Failed;
        };
        let mut raw = BytesMut::new();
        for r in &w.raws {
            raw.extend_from_slice(r);
        }
        w.expect = w.raws.len();
        w.rx = conn.send_bounded(raw.freeze(), w.expect, &self.budget, w.fills.is_empty());
        w.conn = conn.clone();
        // Move the in-flight count from the dead connection to the new one.
        if let Some(pos) = self.inflight.iter().position(|(c, _)| *c == old_id) {
            self.inflight[pos].1 -= 1;
            if self.inflight[pos].1 == 0 {
                self.inflight.swap_remove(pos);
            }
        }
        match self.inflight.iter_mut().find(|(c, _)| *c == conn.id()) {
            Some((_, k)) => *k += 1,
            None => self.inflight.push((conn.id(), 1)),
        }
        self.conn = Some(conn);
        Resend::Sent
    }

    /// The front slot's commands, none of them sent, routed as during an
    /// outage (served here, or refused with what the outage says). Only
    /// for a lone plain slot: anything else keeps its place behind the
    /// replies before it. True when the slot was taken over.
    async fn front_as_outage(&mut self) -> bool {
        if self.pending.len() != 1 || self.shared.outage.is_none() {
            return false;
        }
        let raws = match self.pending.front() {
            Some(Slot {
                body: Body::Wait(w),
                ..
            }) if w.dedicated.is_none()
                && !w.exec_only
                && w.fills.is_empty()
                && self.pinned.is_none() =>
            {
                w.raws.clone()
            }
            _ => return false,
        };
        let mut reqs = Vec::with_capacity(raws.len());
        let mut decoder = resp::RequestDecoder::new(self.limits);
        for raw in &raws {
            let mut b = BytesMut::from(&raw[..]);
            match decoder.decode(&mut b) {
                Ok(Some(r)) if b.is_empty() => reqs.push(r),
                _ => return false,
            }
        }
        self.pop_front();
        for req in reqs {
            match self
                .outage_route(&req, State::Down, crate::gate::Gated::of(&req.args))
                .await
            {
                Some(route) => {
                    self.answered_locally(route);
                }
                None => {
                    self.reject();
                    self.push_ready(reply::unavailable_connect(
                        "the connection closed before the command was sent",
                    ));
                }
            }
        }
        true
    }
}

/// How [`Session::resend_front`] ended.
enum Resend {
    /// On a fresh connection.
    Sent,
    /// Nothing listens where Redis was.
    Refused,
    /// No connection (or nothing to resend).
    Failed,
}

/// True when a blocking command waits among `pending` (its own dedicated
/// connection).
pub(super) fn has_blocking(pending: &VecDeque<Slot>) -> bool {
    pending
        .iter()
        .any(|s| matches!(&s.body, Body::Wait(w) if w.dedicated.is_some()))
}

pub(super) fn has_wait_front(pending: &VecDeque<Slot>) -> bool {
    matches!(
        pending.front(),
        Some(Slot {
            body: Body::Wait(_) | Body::Durable(..),
            ..
        })
    )
}

/// Waits for the front slot's fate: its replies, "never sent", or its
/// deadline. A blocking command with no deadline is given up (as
/// `UNCERTAIN`) when Redis goes down.
pub(super) async fn wait_front(
    pending: &mut VecDeque<Slot>,
    health: &upstream::HealthHandle,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) -> Outcome {
    if let Some(Slot {
        body: Body::Durable(_, fut, deadline),
        ..
    }) = pending.front_mut()
    {
        // The append is the journal's: giving up the wait here does not
        // stop the write from becoming durable (and replayed).
        let d = *deadline;
        let timer = session_timer(timer, d);
        loop {
            tokio::select! {
                biased;
                r = &mut *fut => {
                    return Outcome::Journaled(r.map(|_| ()).map_err(|e| e.to_string()));
                }
                _ = timer.as_mut() => {
                    if Instant::now() >= d {
                        return Outcome::JournalLate;
                    }
                    timer.as_mut().reset(d);
                }
            }
        }
    }
    let Some(Slot {
        body: Body::Wait(w),
        ..
    }) = pending.front_mut()
    else {
        return std::future::pending().await;
    };
    match w.deadline {
        Some(d) => {
            let timer = session_timer(timer, d);
            loop {
                tokio::select! {
                    biased;
                    r = w.rx.recv() => return match r {
                        Some(r) => Outcome::Reply(r),
                        None => Outcome::NotSent,
                    },
                    _ = timer.as_mut() => {
                        if Instant::now() >= d {
                            return Outcome::Deadline;
                        }
                        timer.as_mut().reset(d);
                    }
                }
            }
        }
        None => {
            let mut h = health.subscribe();
            tokio::select! {
                r = w.rx.recv() => match r {
                    Some(r) => Outcome::Reply(r),
                    None => Outcome::NotSent,
                },
                _ = h.wait_for(|h| h.state == State::Down) => Outcome::Deadline,
            }
        }
    }
}

/// The session's one timer, armed for deadline `d` or earlier: deadlines
/// of later commands are later, so it is moved when it fires (or for an
/// earlier deadline), not for every command, and never made afresh. A
/// wait that finds it fired early resets it to `d` and waits again.
fn session_timer(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    d: Instant,
) -> &mut Pin<Box<tokio::time::Sleep>> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(d)));
    if timer.deadline() > d || timer.is_elapsed() {
        timer.as_mut().reset(d);
    }
    timer
}

/// The last of the complete frames in `data` (EXEC's reply after MULTI's
/// `+OK` and the `+QUEUED`s).
fn last_frame(data: &[u8]) -> Option<&[u8]> {
    let limits = Limits::upstream();
    let mut pos = 0;
    let mut last = None;
    while pos < data.len() {
        let n = frame_len(&data[pos..], &limits).ok()??;
        last = Some(&data[pos..pos + n]);
        pos += n;
    }
    last
}
