//! Replay into a Redis Cluster (`ReplayConfig::by_slot`).
//!
//! A cluster runs a transaction only when all its keys hash to one slot,
//! so the single checkpoint key of the module docs cannot travel with the
//! records. Here each transaction is a run of consecutive records of one
//! slot, ending with that slot's own checkpoint:
//!
//! ```text
//! MULTI
//!   <records of slot S, in journal order>
//!   SET redoubt:replay:{TAG}:NODE_ID epoch:segment:offset
//! EXEC
//! ```
//!
//! `TAG` is a hash tag of slot S ([`slot_key`]), so the router sends the
//! whole transaction to S's primary, and the checkpoint moves if and only
//! if the records ran, as before. A record is applied when it starts
//! before its slot's checkpoint. Each run reads the checkpoint of every
//! slot its records name in one pipelined batch, starting from the
//! journal's release point (a promoted replica may hold an older one than
//! the primary it replaced).
//!
//! Up to `WINDOW` transactions are in flight, at most one per slot, so a
//! slot's records still run in journal order and one refused never lets a
//! later one of its slot run. Outcomes are taken oldest first; the journal
//! is released up to a transaction's end once it and everything before it
//! ran or is recorded as failed. A slot whose primary cannot be reached
//! now (its shard still failing over) is left for a later run: its records
//! are skipped, the journal is not released past the first of them, the
//! other slots go on, and the run ends like a lost connection so the
//! recovery task runs again. After a drain, the checkpoints the run set
//! expire as the single key does (`retain_after_replay` plus
//! `CHECKPOINT_MARGIN`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use journal::{Checkpoint, Entry, JournalError, Position};
use resp::Frame;
use upstream::cluster::{key_slot, SLOTS};

use super::batch::{self, Exec, Queued};
use super::{ReplayError, ReplayOutcome, Replayer, RunBase, Source, CHECKPOINT_MARGIN};

/// A short hash tag for each slot: the first decimal number hashing to it.
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS];
        let mut left = SLOTS;
        let mut n = 0u64;
        while left > 0 {
            let t = n.to_string();
            let slot = key_slot(t.as_bytes()) as usize;
            if tags[slot].is_empty() {
                tags[slot] = t;
                left -= 1;
            }
            n += 1;
        }
        tags
    })
}

/// The checkpoint key of `slot` for `node_id`: its hash tag puts it in
/// that slot.
pub fn slot_key(node_id: &str, slot: u16) -> String {
    format!("redoubt:replay:{{{}}}:{node_id}", tags()[slot as usize])
}

/// The one slot every key of `entry` hashes to.
fn entry_slot(entry: &Entry) -> Result<u16, String> {
    let mut slot = None;
    for cmd in &entry.commands {
        let Some(spec) = resp::lookup(cmd) else {
            continue;
        };
        for i in spec.key_indices(cmd) {
            let s = key_slot(&cmd[i]);
            match slot {
                None => slot = Some(s),
                Some(t) if t != s => {
                    return Err("CROSSSLOT its keys hash to different cluster slots, which no cluster node runs in one transaction".into())
                }
                Some(_) => {}
            }
        }
    }
    slot.ok_or_else(|| "it names no key, so no cluster node is its own".into())
}

/// Transactions in flight at once, each for a different slot.
const WINDOW: usize = 64;

/// What reading on from the journal gave.
enum Step {
    /// A transaction of `slot`'s records.
    Batch(batch::Batch, u16),
    /// The next record's slot has no checkpoint read in this run yet.
    Checkpoint(u16),
    /// The next record's slot has a transaction in flight.
    Busy,
    /// Nothing to send up to the journal's end now.
    End,
}

/// A transaction sent and not answered yet.
struct InFlight {
    batch: batch::Batch,
    slot: u16,
    rx: tokio::sync::oneshot::Receiver<upstream::BatchReply>,
}

/// The error texts of a slot whose primary cannot be reached now (the
/// router's own, or the cluster's while it fails over): that slot's
/// records wait for a later run, the others go on.
fn slot_unreachable(why: &str) -> bool {
    why.contains("could not reach cluster node") || why.contains("CLUSTERDOWN")
}

impl Replayer {
    /// [`Replayer::run`] for a cluster: see the module docs.
    pub(super) async fn run_slots(&mut self, base: RunBase) -> Result<ReplayOutcome, ReplayError> {
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
        // A cluster has db 0 only.
        self.databases = Some(1);
        self.slot_done.clear();
        self.release_cap = None;
        let start = self.released.max(self.journal.released());
        let reader = match self.journal.reader(start) {
            Ok(r) => r,
            Err(JournalError::Gone { position, oldest }) => {
                tracing::warn!(%position, oldest, "replay: the release point's segment is gone; resuming at the oldest segment on disk");
                self.journal.reader(Position::START)?
            }
            Err(e) => return Err(e.into()),
        };
        let from = reader.position();
        if let Err(reason) = self.read_slot_checkpoints(&conn, from).await? {
            return Ok(lost(self, reason));
        }
        let mut src = Source {
            reader,
            peeked: None,
            error: None,
        };
        let mut touched: BTreeSet<u16> = BTreeSet::new();
        // Slots whose primary cannot be reached in this run, and why.
        let mut blocked: HashMap<u16, String> = HashMap::new();
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        // A transaction refused when queued: read again from here once
        // the window is empty.
        let mut restart: Option<Position> = None;
        let mut ended = false;
        loop {
            // 1. Fill the window.
            while restart.is_none() && !ended && inflight.len() < WINDOW {
                let busy: Vec<u16> = inflight.iter().map(|f| f.slot).collect();
                match self.build_slot(&mut src, &busy, &blocked)? {
                    Step::Batch(b, slot) => {
                        let queued = b.queued_replies();
                        let mut raw = BytesMut::with_capacity(b.raw.len() + batch::EXEC.len());
                        raw.extend_from_slice(&b.raw);
                        raw.extend_from_slice(batch::EXEC);
                        // MULTI, the records, the checkpoint and EXEC in
                        // one piece: the router sends a transaction whole
                        // to its slot's primary.
                        let rx = conn.send(raw.freeze(), queued + 1);
                        inflight.push_back(InFlight { batch: b, slot, rx });
                    }
                    Step::Checkpoint(slot) => match self.read_slot_checkpoint(&conn, slot).await? {
                        Ok(pos) => {
                            self.slot_done.insert(slot, pos);
                        }
                        Err(reason) if slot_unreachable(&reason) => {
                            blocked.insert(slot, reason);
                        }
                        Err(reason) => return Ok(lost(self, reason)),
                    },
                    Step::Busy => break,
                    Step::End => ended = true,
                }
            }
            // 2. The oldest transaction's outcome.
            let Some(f) = inflight.pop_front() else {
                if let Some(pos) = restart.take() {
                    src = Source {
                        reader: self.journal.reader(pos)?,
                        peeked: None,
                        error: None,
                    };
                    ended = false;
                    continue;
                }
                if !ended {
                    continue;
                }
                if !src.caught_up(&self.journal) {
                    // Appends came in meanwhile.
                    ended = false;
                    continue;
                }
                if blocked.is_empty() {
                    if let Some(cap) = self.release_cap.take() {
                        // Held back only by a transaction sent again
                        // without its refused records: one more pass from
                        // there finds it all ran, and releases it.
                        src = Source {
                            reader: self.journal.reader(cap)?,
                            peeked: None,
                            error: None,
                        };
                        ended = false;
                        continue;
                    }
                }
                if let Some((slot, why)) = blocked.iter().next() {
                    let reason = format!(
                        "{} slot(s) wait for a primary, e.g. slot {slot}: {why}",
                        blocked.len()
                    );
                    return Ok(lost(self, reason));
                }
                self.expire_slot_checkpoints(&conn, &touched).await;
                let (replayed, failed) = self.counts(base);
                return Ok(ReplayOutcome::Drained { replayed, failed });
            };
            let InFlight { batch: b, slot, rx } = f;
            let reply = match self.reply(&conn, rx).await {
                Ok(r) => r,
                Err(reason) => return Ok(lost(self, reason)),
            };
            let Some(split) = batch::replies_len(&reply.data, b.queued_replies()) else {
                return Ok(lost(
                    self,
                    "replies to a replay transaction cut short".into(),
                ));
            };
            let (q, exec) = reply.data.split_at(split);
            let paused = |this: &Self, reason: String| {
                let (replayed, failed) = this.counts(base);
                ReplayOutcome::Paused {
                    reason,
                    replayed,
                    failed,
                }
            };
            match batch::parse_queued(q, &b.slots) {
                Queued::Ok => {}
                Queued::Desync(why) if slot_unreachable(&why) => {
                    self.hold_back(&b);
                    blocked.insert(slot, why);
                    continue;
                }
                Queued::Desync(why) => return Ok(lost(self, format!("slot {slot}: {why}"))),
                Queued::Pause(reason) => return Ok(paused(self, reason)),
                Queued::Refused(refused) => {
                    // EXEC found the transaction flagged: nothing ran.
                    if !self.refused(&b, &refused)? {
                        let why = refused.first().map(|r| r.1.clone()).unwrap_or_default();
                        return Ok(paused(self, why));
                    }
                    self.hold_back(&b);
                    restart = Some(restart.map_or(b.start, |r| r.min(b.start)));
                    continue;
                }
            }
            match batch::parse_exec(exec, b.slots.len()) {
                Exec::Done(errors) => {
                    touched.insert(slot);
                    self.slot_done.insert(slot, b.next);
                    if let Some(reason) = self.applied(&b, &errors)? {
                        return Ok(paused(self, reason));
                    }
                }
                Exec::Aborted(reason) => return Ok(paused(self, reason)),
                Exec::Desync(why) => {
                    return Ok(lost(self, format!("unexpected reply to EXEC: {why}")))
                }
            }
        }
    }

    /// `b` did not run: the journal is not released past its first record
    /// in this run.
    fn hold_back(&mut self, b: &batch::Batch) {
        if let Some(first) = b.records.first() {
            let cap = self
                .release_cap
                .map_or(first.position, |c| c.min(first.position));
            self.release_cap = Some(cap);
        }
    }

    /// The checkpoints of every slot the records from `from` name, read
    /// with one pipelined batch. `Err(reason)` when the batch got no
    /// answer; a slot whose primary did not answer is read again when its
    /// records come.
    async fn read_slot_checkpoints(
        &mut self,
        conn: &upstream::Conn,
        from: Position,
    ) -> Result<Result<(), String>, ReplayError> {
        let mut slots = BTreeSet::new();
        for rec in self.journal.reader(from)? {
            let Ok(rec) = rec else { break };
            if let Ok(s) = entry_slot(&rec.entry) {
                slots.insert(s);
            }
        }
        if slots.is_empty() {
            return Ok(Ok(()));
        }
        let slots: Vec<u16> = slots.into_iter().collect();
        let mut raw = BytesMut::new();
        for &slot in &slots {
            let key = slot_key(&self.node_id, slot);
            resp::frame::encode_command(&mut raw, &["GET", key.as_str()]);
        }
        let rx = conn.send(raw.freeze(), slots.len());
        let reply = match self.reply(conn, rx).await {
            Ok(r) => r,
            Err(reason) => return Ok(Err(reason)),
        };
        let limits = resp::Limits::upstream();
        let mut pos = 0;
        for &slot in &slots {
            let frame = match resp::parse_frame(&reply.data[pos..], &limits) {
                Ok(Some((f, n))) => {
                    pos += n;
                    f
                }
                _ => return Ok(Err("replies to the slot checkpoints cut short".into())),
            };
            if let Ok(p) = self.checkpoint_of(slot, frame)? {
                self.slot_done.insert(slot, p);
            }
        }
        Ok(Ok(()))
    }

    /// The next transaction: consecutive records of one slot, leaving out
    /// those already applied (before their slot's checkpoint), those that
    /// cannot run in a cluster transaction (recorded as failed) and those
    /// of slots `blocked` (for a later run). Stops before a record whose
    /// slot is `busy` (a transaction in flight).
    fn build_slot(
        &mut self,
        src: &mut Source,
        busy: &[u16],
        blocked: &HashMap<u16, String>,
    ) -> Result<Step, ReplayError> {
        if let Some(e) = src.error.take() {
            return Err(e.into());
        }
        let start = src
            .peeked
            .as_ref()
            .map_or(src.reader.position(), |r| r.position);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        // Past the last record taken or left out.
        let mut next = None;
        let mut slot: Option<u16> = None;
        let mut failed = Vec::new();
        let mut stop = None;
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
            // A record no cluster transaction can run is recorded as
            // failed and left out.
            let checked = entry_slot(&rec.entry)
                .map_err(|why| (0, why))
                .and_then(|s| batch::validate(&rec.entry, self.databases).map(|()| s));
            let s = match checked {
                Ok(s) => s,
                Err((cmd, why)) => {
                    self.skip.insert(rec.position);
                    failed.extend(self.whole_record_failed(&rec, cmd, &why));
                    next = Some(rec.next);
                    continue;
                }
            };
            if blocked.contains_key(&s) {
                // For a later run: nothing past it is released now.
                let cap = self
                    .release_cap
                    .map_or(rec.position, |c| c.min(rec.position));
                self.release_cap = Some(cap);
                next = Some(rec.next);
                continue;
            }
            if slot.is_none() && busy.contains(&s) {
                src.peeked = Some(rec);
                stop = Some(Step::Busy);
                break;
            }
            match self.slot_done.get(&s) {
                None => {
                    src.peeked = Some(rec);
                    if records.is_empty() {
                        stop = Some(Step::Checkpoint(s));
                    }
                    break;
                }
                Some(done) if rec.position < *done => {
                    // Ran before: its slot's checkpoint is past it.
                    next = Some(rec.next);
                    continue;
                }
                Some(_) => {}
            }
            let size = rec.entry.arg_bytes();
            if slot.is_some_and(|t| t != s)
                || (!records.is_empty() && bytes + size > self.cfg.batch_bytes)
            {
                src.peeked = Some(rec);
                break;
            }
            slot = Some(s);
            bytes += size;
            next = Some(rec.next);
            records.push(rec);
        }
        self.record_failures(&failed)?;
        let Some(slot) = slot else {
            // Only records left out: everything before `next` ran, is
            // recorded as failed, or waits behind the release cap.
            if let Some(n) = next {
                let upto = self.release_cap.map_or(n, |c| c.min(n));
                self.journal.release(upto)?;
                self.released = self.released.max(upto);
                self.released_tx.send_replace(self.released);
            }
            return Ok(stop.unwrap_or(Step::End));
        };
        let next = next.unwrap_or(start);
        let checkpoint = self.journal.checkpoint(next).to_string();
        let key = slot_key(&self.node_id, slot);
        Ok(Step::Batch(
            batch::encode(
                &mut self.buf,
                start,
                next,
                records,
                key.as_bytes(),
                &checkpoint,
            ),
            slot,
        ))
    }

    /// `slot`'s checkpoint in Redis, read alone (a slot first met after
    /// the run began, or whose primary did not answer then).
    async fn read_slot_checkpoint(
        &self,
        conn: &upstream::Conn,
        slot: u16,
    ) -> Result<Result<Position, String>, ReplayError> {
        let key = slot_key(&self.node_id, slot);
        match conn
            .call(&["GET", key.as_str()], self.cfg.reply_timeout)
            .await
        {
            Ok(f) => self.checkpoint_of(slot, f),
            Err(e) => Ok(Err(format!("reading {key}: {e}"))),
        }
    }

    /// `slot`'s checkpoint from the reply to its `GET`, as a position of
    /// this journal (`START` when there is none, or one of another
    /// journal). `Err(reason)` when the slot's primary could not answer.
    fn checkpoint_of(
        &self,
        slot: u16,
        frame: Frame,
    ) -> Result<Result<Position, String>, ReplayError> {
        let key = slot_key(&self.node_id, slot);
        match frame {
            Frame::Null | Frame::NullBulk => Ok(Ok(Position::START)),
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
                        Ok(Ok(c.position))
                    }
                    Ok(_) => Ok(Ok(Position::START)),
                    Err(e) => {
                        tracing::warn!(%e, key, "replay: unreadable slot checkpoint; records not released yet are sent");
                        Ok(Ok(Position::START))
                    }
                }
            }
            // The router's "could not reach", CLUSTERDOWN past the
            // deadline, LOADING …: try again later.
            Frame::Error(e) => Ok(Err(format!(
                "reading {key}: {}",
                String::from_utf8_lossy(&e)
            ))),
            other => Err(ReplayError::Rejected(format!(
                "GET {key} answered {other:?}"
            ))),
        }
    }

    /// After a drain, as `expire_checkpoint` does for one key.
    async fn expire_slot_checkpoints(&self, conn: &upstream::Conn, slots: &BTreeSet<u16>) {
        let ms = (self.journal.retain_after_replay() + CHECKPOINT_MARGIN)
            .as_millis()
            .to_string();
        for &slot in slots {
            let key = slot_key(&self.node_id, slot);
            let cmd = [
                Bytes::from_static(b"PEXPIRE"),
                Bytes::from(key),
                Bytes::from(ms.clone()),
            ];
            if let Err(e) = conn.call(&cmd, self.cfg.reply_timeout).await {
                tracing::debug!(error = %e, slot, "replay: could not set a slot checkpoint's expiry; it stays");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_key_in_it() {
        for slot in [0u16, 1, 5461, 12182, 16383] {
            let key = slot_key("n1", slot);
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert!(tags().iter().all(|t| !t.is_empty()));
    }

    #[test]
    fn a_record_belongs_to_the_one_slot_of_its_keys() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let entry = |cmds: Vec<Vec<Bytes>>| Entry {
            db: 0,
            commands: cmds,
            time_ms: 0,
        };
        let one = entry(vec![
            vec![b("SET"), b("{u1}a"), b("1")],
            vec![b("PEXPIREAT"), b("{u1}b"), b("9")],
        ]);
        assert_eq!(entry_slot(&one), Ok(key_slot(b"u1")));
        let two = entry(vec![vec![b("MSET"), b("a"), b("1"), b("b"), b("2")]]);
        assert!(entry_slot(&two).unwrap_err().starts_with("CROSSSLOT"));
        let none = entry(vec![vec![b("FLUSHALL")]]);
        assert!(entry_slot(&none).is_err());
    }
}
