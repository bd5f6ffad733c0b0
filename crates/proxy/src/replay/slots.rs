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
//! before its slot's checkpoint; each run reads the checkpoint of every
//! slot it meets (a promoted replica may hold an older one than the
//! primary it replaced), starting from the journal's release point.
//!
//! Transactions go one at a time, in journal order, and the journal is
//! released up to a transaction's end once it ran: everything before that
//! end ran or is recorded as failed. A record whose slot cannot be reached
//! now (its shard is still failing over) ends the run like a lost
//! connection; the recovery task runs again until the shard answers.
//! After a drain, the checkpoints the run set expire as the single key
//! does (`retain_after_replay` plus `CHECKPOINT_MARGIN`).

use std::collections::BTreeSet;
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

/// What reading on from the journal gave.
enum Step {
    /// A transaction of `slot`'s records.
    Batch(batch::Batch, u16),
    /// The next record's slot has no checkpoint read in this run yet.
    Checkpoint(u16),
    /// Nothing to send up to the journal's end now.
    End,
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
        let start = self.released.max(self.journal.released());
        let reader = match self.journal.reader(start) {
            Ok(r) => r,
            Err(JournalError::Gone { position, oldest }) => {
                tracing::warn!(%position, oldest, "replay: the release point's segment is gone; resuming at the oldest segment on disk");
                self.journal.reader(Position::START)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut src = Source {
            reader,
            peeked: None,
            error: None,
        };
        let mut touched: BTreeSet<u16> = BTreeSet::new();
        let mut empty = 0u32;
        loop {
            let (b, slot) = match self.build_slot(&mut src)? {
                Step::Batch(b, slot) => (b, slot),
                Step::Checkpoint(slot) => match self.read_slot_checkpoint(&conn, slot).await? {
                    Ok(pos) => {
                        self.slot_done.insert(slot, pos);
                        continue;
                    }
                    Err(reason) => return Ok(lost(self, reason)),
                },
                Step::End => {
                    empty += 1;
                    if src.caught_up(&self.journal) || empty >= 2 {
                        self.expire_slot_checkpoints(&conn, &touched).await;
                        let (replayed, failed) = self.counts(base);
                        return Ok(ReplayOutcome::Drained { replayed, failed });
                    }
                    continue;
                }
            };
            empty = 0;
            // MULTI, the records, the checkpoint and EXEC in one write:
            // the router sends a transaction whole to its slot's primary.
            let queued = b.queued_replies();
            let mut raw = BytesMut::with_capacity(b.raw.len() + batch::EXEC.len());
            raw.extend_from_slice(&b.raw);
            raw.extend_from_slice(batch::EXEC);
            let rx = conn.send(raw.freeze(), queued + 1);
            let reply = match self.reply(&conn, rx).await {
                Ok(r) => r,
                Err(reason) => return Ok(lost(self, reason)),
            };
            let Some(split) = batch::replies_len(&reply.data, queued) else {
                return Ok(lost(
                    self,
                    "replies to a replay transaction cut short".into(),
                ));
            };
            let (q, exec) = reply.data.split_at(split);
            match batch::parse_queued(q, &b.slots) {
                Queued::Ok => {}
                Queued::Desync(why) => {
                    return Ok(lost(self, format!("slot {slot}: {why}")));
                }
                Queued::Pause(reason) => {
                    let (replayed, failed) = self.counts(base);
                    return Ok(ReplayOutcome::Paused {
                        reason,
                        replayed,
                        failed,
                    });
                }
                Queued::Refused(refused) => {
                    // EXEC found the transaction flagged: nothing ran.
                    if !self.refused(&b, &refused)? {
                        let why = refused.first().map(|r| r.1.clone()).unwrap_or_default();
                        let (replayed, failed) = self.counts(base);
                        return Ok(ReplayOutcome::Paused {
                            reason: why,
                            replayed,
                            failed,
                        });
                    }
                    src = Source {
                        reader: self.journal.reader(b.start)?,
                        peeked: None,
                        error: None,
                    };
                    continue;
                }
            }
            match batch::parse_exec(exec, b.slots.len()) {
                Exec::Done(errors) => {
                    touched.insert(slot);
                    self.slot_done.insert(slot, b.next);
                    if let Some(reason) = self.applied(&b, &errors)? {
                        let (replayed, failed) = self.counts(base);
                        return Ok(ReplayOutcome::Paused {
                            reason,
                            replayed,
                            failed,
                        });
                    }
                }
                Exec::Aborted(reason) => {
                    let (replayed, failed) = self.counts(base);
                    return Ok(ReplayOutcome::Paused {
                        reason,
                        replayed,
                        failed,
                    });
                }
                Exec::Desync(why) => {
                    return Ok(lost(self, format!("unexpected reply to EXEC: {why}")))
                }
            }
        }
    }

    /// The next transaction: consecutive records of one slot, leaving out
    /// those already applied (before their slot's checkpoint) and those
    /// that cannot run in a cluster transaction (recorded as failed).
    fn build_slot(&mut self, src: &mut Source) -> Result<Step, ReplayError> {
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
        let mut need = None;
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
            let s = match entry_slot(&rec.entry) {
                Ok(s) => s,
                Err(why) => {
                    self.skip.insert(rec.position);
                    failed.extend(self.whole_record_failed(&rec, 0, &why));
                    next = Some(rec.next);
                    continue;
                }
            };
            if let Err((cmd, why)) = batch::validate(&rec.entry, self.databases) {
                self.skip.insert(rec.position);
                failed.extend(self.whole_record_failed(&rec, cmd, &why));
                next = Some(rec.next);
                continue;
            }
            match self.slot_done.get(&s) {
                None => {
                    src.peeked = Some(rec);
                    if records.is_empty() {
                        need = Some(s);
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
            // Only records left out: everything before `next` ran or is
            // recorded as failed.
            if let Some(n) = next {
                self.journal.release(n)?;
                self.released = self.released.max(n);
                self.released_tx.send_replace(self.released);
            }
            return Ok(need.map_or(Step::End, Step::Checkpoint));
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

    /// `slot`'s checkpoint in Redis as a position of this journal (`START`
    /// when there is none, or one of another journal). `Err(reason)` when
    /// the slot's primary cannot be asked now.
    async fn read_slot_checkpoint(
        &self,
        conn: &upstream::Conn,
        slot: u16,
    ) -> Result<Result<Position, String>, ReplayError> {
        let key = slot_key(&self.node_id, slot);
        let frame = match conn
            .call(&["GET", key.as_str()], self.cfg.reply_timeout)
            .await
        {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("reading {key}: {e}"))),
        };
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
            // deadline, LOADING …: try again on the next run.
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
