//! [`Reader`]: records from a position on, in order, while appends go on;
//! and [`Record`], what it yields.
//!
//! A reader sees exactly the records whose appends were acknowledged (the
//! committed end), never a half-written batch. At the committed end it
//! returns `None`; call again later (await
//! [`Journal::watch_end`](crate::Journal::watch_end) for new data). At a
//! corrupt record it returns [`JournalError::Corrupt`] and stays there.

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::sync::Arc;

use crate::entry::{decode_payload, Entry};
use crate::error::{Corruption, JournalError, Result};
use crate::header::HEADER_LEN;
use crate::position::Position;
use crate::record::{FrameReader, Next};
use crate::segment::segment_path;
use crate::shared::Shared;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it starts.
    pub position: Position,
    /// Where the next record starts: the replay checkpoint after applying
    /// this one, and the argument to [`Journal::release`](crate::Journal::release).
    pub next: Position,
    /// Its sequence number (1, 2, … over the journal's life).
    pub seq: u64,
    /// The entry.
    pub entry: Entry,
}

/// Reads records in order from a position. Also an [`Iterator`] that ends
/// at the committed end (or after yielding a corruption error).
pub struct Reader {
    shared: Arc<Shared>,
    pos: Position,
    seq: u64,
    file: Option<(u64, FrameReader<BufReader<File>>)>,
    failed: bool,
}

/// Counts records from `from` (a record start with sequence number
/// `from_seq`) up to `to` in the same segment, returning the sequence number
/// of the record starting at `to`; an error if `to` is not a record
/// boundary.
pub(crate) fn seq_at(
    shared: &Shared,
    from: (Position, u64),
    to: Position,
    limit: u64,
) -> Result<u64> {
    let (from, mut seq) = from;
    debug_assert_eq!(from.segment, to.segment);
    if from.offset == to.offset {
        return Ok(seq);
    }
    let path = segment_path(&shared.dir, to.segment);
    let mut f = File::open(&path).map_err(|e| open_error(e, to, shared))?;
    f.seek(SeekFrom::Start(from.offset))
        .map_err(|e| JournalError::io("seeking in a segment", e))?;
    let mut frames = FrameReader::new(BufReader::with_capacity(1 << 16, f), from.offset);
    while frames.offset() < to.offset {
        match frames
            .next_frame(limit)
            .map_err(|e| JournalError::io("reading a segment", e))?
        {
            Next::Frame { .. } => seq += 1,
            Next::End => break,
            Next::Damaged(d) => {
                let at = Position::new(to.segment, frames.offset());
                return Err(corrupt(shared, at, d.describe(), limit));
            }
        }
    }
    if frames.offset() != to.offset {
        return Err(JournalError::InvalidPosition {
            position: to,
            why: "inside a record".into(),
        });
    }
    Ok(seq)
}

fn open_error(e: io::Error, pos: Position, shared: &Shared) -> JournalError {
    if e.kind() == io::ErrorKind::NotFound {
        let oldest = shared
            .state()
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(pos.segment + 1);
        JournalError::Gone {
            position: pos,
            oldest,
        }
    } else {
        JournalError::io(format!("opening segment {}", pos.segment), e)
    }
}

fn corrupt(shared: &Shared, at: Position, reason: String, limit: u64) -> JournalError {
    JournalError::Corrupt(Box::new(Corruption {
        file: segment_path(&shared.dir, at.segment),
        snapshot: false,
        position: at,
        reason,
        bytes_after: limit.saturating_sub(at.offset),
        later_segments: shared.state().segments.range(at.segment + 1..).count() as u64,
    }))
}

impl Reader {
    /// A reader at `from` (see [`Journal::reader`](crate::Journal::reader)).
    pub(crate) fn new(shared: Arc<Shared>, from: Position) -> Result<Reader> {
        let (pos, start, limit) = {
            let st = shared.state();
            if let Some(c) = &st.corruption {
                if c.snapshot || from >= c.position {
                    return Err(JournalError::Corrupt(Box::new(c.clone())));
                }
            }
            let pos = Shared::normalize(&st, from)?;
            let start = st
                .segments
                .get(&pos.segment)
                .map(|m| (Position::new(pos.segment, HEADER_LEN), m.first_seq));
            let limit = if pos.segment == st.committed.segment {
                st.committed.offset
            } else {
                st.segments.get(&pos.segment).map_or(0, |m| m.bytes)
            };
            (pos, start, limit)
        };
        let seq = match start {
            Some(start) => seq_at(&shared, start, pos, limit)?,
            None => shared.state().last_seq + 1,
        };
        Ok(Reader {
            shared,
            pos,
            seq,
            file: None,
            failed: false,
        })
    }

    /// Where the next record will be read from.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next record, `Ok(None)` at the committed end.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            let (committed, limit, next_segment) = {
                let st = self.shared.state();
                if let Some(c) = &st.corruption {
                    if c.snapshot || self.pos >= c.position {
                        return Err(JournalError::Corrupt(Box::new(c.clone())));
                    }
                }
                let limit = if self.pos.segment == st.committed.segment {
                    st.committed.offset
                } else {
                    st.segments.get(&self.pos.segment).map_or(0, |m| m.bytes)
                };
                let next = st
                    .segments
                    .range(self.pos.segment + 1..)
                    .next()
                    .map(|(&n, m)| (n, m.first_seq));
                (st.committed, limit, next)
            };
            if self.pos >= committed {
                return Ok(None);
            }
            if self.pos.offset >= limit {
                // End of a sealed segment: go on with the next one.
                let Some((n, first_seq)) = next_segment else {
                    return Ok(None);
                };
                if first_seq != self.seq {
                    let why = format!(
                        "segment {n} starts at sequence number {first_seq}, {} expected",
                        self.seq
                    );
                    return Err(corrupt(&self.shared, Position::new(n, 0), why, 0));
                }
                self.pos = Position::new(n, HEADER_LEN);
                self.file = None;
                continue;
            }
            if self
                .file
                .as_ref()
                .is_none_or(|(s, _)| *s != self.pos.segment)
            {
                let path = segment_path(&self.shared.dir, self.pos.segment);
                let mut f = File::open(&path).map_err(|e| open_error(e, self.pos, &self.shared))?;
                f.seek(SeekFrom::Start(self.pos.offset))
                    .map_err(|e| JournalError::io("seeking in a segment", e))?;
                let frames =
                    FrameReader::new(BufReader::with_capacity(1 << 16, f), self.pos.offset);
                self.file = Some((self.pos.segment, frames));
            }
            let Some((_, frames)) = self.file.as_mut() else {
                continue;
            };
            let at = self.pos;
            let next = frames.next_frame(limit);
            let payload = match next {
                Ok(Next::Frame { payload }) => payload,
                Ok(Next::End) => return Ok(None),
                Ok(Next::Damaged(d)) => {
                    // The stream is no longer at `pos`: reopen on a retry.
                    self.file = None;
                    return Err(corrupt(&self.shared, at, d.describe(), limit));
                }
                Err(e) => {
                    self.file = None;
                    return Err(JournalError::io("reading a segment", e));
                }
            };
            let (seq, entry) = match decode_payload(&payload) {
                Ok(x) => x,
                Err(bad) => {
                    return Err(corrupt(
                        &self.shared,
                        at,
                        format!("undecodable record: {}", bad.0),
                        limit,
                    ))
                }
            };
            if seq != self.seq {
                let why = format!("sequence number {seq} but {} expected", self.seq);
                return Err(corrupt(&self.shared, at, why, limit));
            }
            self.seq += 1;
            self.pos = Position::new(at.segment, frames.offset());
            return Ok(Some(Record {
                position: at,
                next: self.pos,
                seq,
                entry,
            }));
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_record() {
            Ok(r) => r.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
