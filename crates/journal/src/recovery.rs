//! [`Recovery`]: what [`Journal::open`](crate::Journal::open) found and did,
//! and the scan behind it (shared with [`inspect`](fn@crate::inspect)).
//!
//! A damaged record is a **torn tail** only when it is in the last segment
//! and nothing written after it survives: the header or payload is cut
//! short (the length, which has its own checksum, points past the end of
//! the file), or the payload checksum fails or the header is garbage and
//! only zero bytes follow the damaged record (a filesystem can extend a
//! file before the data reaches the disk).
//! Anything else — damage in an earlier segment, or damage followed by
//! more data — is **corruption**: reported with its position, never
//! skipped.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::human_bytes;
use crate::entry::decode_payload;
use crate::error::Corruption;
use crate::header::{FileHeader, HEADER_LEN, SEGMENT_MAGIC};
use crate::position::Position;
use crate::record::{Damage, FrameReader, Next, FRAME_HEADER_LEN};
use crate::segment::{self, segment_path, SegmentInfo};
use crate::snapshot::{self, SnapshotInfo};

/// The last, partly written record of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the torn record starts; the file is truncated here.
    pub position: Position,
    /// Bytes from there to the end of the file.
    pub bytes_dropped: u64,
    /// How it is damaged.
    pub reason: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail in segment {} at offset {}: {} dropped ({})",
            self.position.segment,
            self.position.offset,
            human_bytes(self.bytes_dropped),
            self.reason
        )
    }
}

/// What [`Journal::open`](crate::Journal::open) found and did. When
/// `corruption` is set the journal is open but refuses appends, and readers
/// stop with [`JournalError::Corrupt`](crate::JournalError::Corrupt) at that
/// position: raise an incident and wait for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    /// The journal's epoch.
    pub epoch: u64,
    /// True when the directory held no journal and a new one was made.
    pub created: bool,
    /// The snapshot restoring starts from.
    pub snapshot: Option<SnapshotInfo>,
    /// Segments read, in order (up to the corruption, if any).
    pub segments: Vec<SegmentInfo>,
    /// A torn last record, truncated.
    pub torn_tail: Option<TornTail>,
    /// A corrupt record: reading stops there.
    pub corruption: Option<Corruption>,
    /// Files removed: leftover temporary files, and segments and snapshots
    /// already folded into a newer snapshot.
    pub removed: Vec<PathBuf>,
}

impl Recovery {
    /// Intact records in the segments.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// True when nothing was dropped and nothing is corrupt.
    pub fn is_clean(&self) -> bool {
        self.torn_tail.is_none() && self.corruption.is_none()
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal epoch {}: ", self.epoch)?;
        if self.created {
            write!(f, "created; ")?;
        }
        if let Some(s) = &self.snapshot {
            write!(
                f,
                "snapshot of {} entries (base segment {}); ",
                s.entries, s.base_segment
            )?;
        }
        write!(
            f,
            "{} record(s) in {} segment(s)",
            self.records(),
            self.segments.len()
        )?;
        if let Some(t) = &self.torn_tail {
            write!(f, "; {t}")?;
        }
        if let Some(c) = &self.corruption {
            write!(f, "; {c}")?;
        }
        Ok(())
    }
}

/// What a read-only scan of a journal directory found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub epoch: Option<u64>,
    pub snapshot: Option<SnapshotInfo>,
    pub segments: Vec<SegmentInfo>,
    pub torn_tail: Option<TornTail>,
    pub corruption: Option<Corruption>,
    /// Files `open` removes: temporary files, folded segments and snapshots.
    pub stale: Vec<PathBuf>,
    /// Sequence number the next record gets.
    pub next_seq: u64,
}

/// Scans `dir` without changing anything.
pub(crate) fn scan(dir: &Path) -> io::Result<Scan> {
    let listing = segment::list(dir)?;
    let mut scan = Scan {
        next_seq: 1,
        stale: listing.temp.clone(),
        ..Scan::default()
    };
    let mut base = None;
    if let Some((&b, path)) = listing.snapshots.iter().next_back() {
        scan.stale
            .extend(listing.snapshots.range(..b).map(|(_, p)| p.clone()));
        match snapshot::check(path, b)? {
            Ok((header, info)) => {
                scan.epoch = Some(header.epoch);
                scan.next_seq = header.seq;
                scan.snapshot = Some(info);
                base = Some(b);
            }
            Err(mut c) => {
                c.later_segments = listing.segments.range(b..).count() as u64;
                scan.corruption = Some(c);
                return Ok(scan);
            }
        }
    }
    let mut segs = Vec::new();
    for (num, path) in listing.segments {
        if base.is_some_and(|b| num < b) {
            scan.stale.push(path);
        } else {
            segs.push((num, path));
        }
    }
    let mut expected_num = base;
    let mut seq_known = base.is_some();
    if segs.is_empty() {
        if let Some(b) = base {
            scan.corruption = Some(missing(dir, b, 0));
        }
        return Ok(scan);
    }
    for (i, (num, path)) in segs.iter().enumerate() {
        let later = (segs.len() - i - 1) as u64;
        if let Some(e) = expected_num {
            if *num != e {
                scan.corruption = Some(missing(dir, e, later + 1));
                return Ok(scan);
            }
        }
        expected_num = Some(num + 1);
        let outcome = scan_segment(path, *num, later == 0, &mut scan, seq_known)?;
        seq_known = true;
        if let Err(mut c) = outcome {
            c.later_segments = later;
            scan.corruption = Some(c);
            return Ok(scan);
        }
    }
    Ok(scan)
}

fn missing(dir: &Path, segment: u64, later: u64) -> Corruption {
    Corruption {
        file: segment_path(dir, segment),
        snapshot: false,
        position: Position::new(segment, 0),
        reason: "segment file missing".into(),
        bytes_after: 0,
        later_segments: later,
    }
}

/// Scans one segment, appending its [`SegmentInfo`] to `scan` (and a torn
/// tail if it is the last one). `Ok(Err(_))` is corruption.
fn scan_segment(
    path: &Path,
    num: u64,
    is_last: bool,
    scan: &mut Scan,
    seq_known: bool,
) -> io::Result<Result<(), Corruption>> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 16, file);
    let corrupt = |offset: u64, reason: String| Corruption {
        file: path.to_path_buf(),
        snapshot: false,
        position: Position::new(num, offset),
        reason,
        bytes_after: file_len - offset.min(file_len),
        later_segments: 0,
    };
    let header = match FileHeader::read(&mut r, SEGMENT_MAGIC)? {
        Ok(h) => h,
        Err(why) => return Ok(Err(corrupt(0, why))),
    };
    if header.number != num {
        return Ok(Err(corrupt(
            0,
            format!("header names segment {}, file name {num}", header.number),
        )));
    }
    match scan.epoch {
        Some(e) if e != header.epoch => {
            return Ok(Err(corrupt(
                0,
                format!("epoch {} differs from the journal's {e}", header.epoch),
            )))
        }
        _ => scan.epoch = Some(header.epoch),
    }
    if seq_known && header.seq != scan.next_seq {
        let why = format!(
            "first sequence number {} but {} expected: records missing",
            header.seq, scan.next_seq
        );
        return Ok(Err(corrupt(0, why)));
    }
    scan.next_seq = header.seq;
    let mut info = SegmentInfo {
        segment: num,
        path: path.to_path_buf(),
        bytes: HEADER_LEN,
        file_bytes: file_len,
        records: 0,
        first_seq: header.seq,
        last_seq: None,
        first_time_ms: None,
        last_time_ms: None,
    };
    let mut frames = FrameReader::new(r, HEADER_LEN);
    let result = loop {
        let at = frames.offset();
        match frames.next_frame(file_len)? {
            Next::End => break Ok(()),
            Next::Frame { payload } => match decode_payload(&payload) {
                Ok((seq, entry)) if seq == scan.next_seq => {
                    scan.next_seq += 1;
                    info.records += 1;
                    info.bytes = frames.offset();
                    info.last_seq = Some(seq);
                    info.first_time_ms.get_or_insert(entry.time_ms);
                    info.last_time_ms = Some(entry.time_ms);
                }
                Ok((seq, _)) => {
                    break Err(corrupt(
                        at,
                        format!("sequence number {seq} but {} expected", scan.next_seq),
                    ))
                }
                Err(bad) => break Err(corrupt(at, format!("undecodable record: {}", bad.0))),
            },
            Next::Damaged(d) => {
                if is_last && is_torn(d, at, file_len, path)? {
                    scan.torn_tail = Some(TornTail {
                        file: path.to_path_buf(),
                        position: Position::new(num, at),
                        bytes_dropped: file_len - at,
                        reason: d.describe(),
                    });
                    break Ok(());
                }
                break Err(corrupt(at, d.describe()));
            }
        }
    };
    scan.segments.push(info);
    Ok(result)
}

/// Whether damage at `at` in the last segment is a torn tail (see the
/// module docs).
fn is_torn(d: Damage, at: u64, file_len: u64, path: &Path) -> io::Result<bool> {
    Ok(match d {
        Damage::ShortHeader { .. } | Damage::ShortPayload { .. } => true,
        // The length is genuine (its checksum matched): torn when nothing
        // but zeros follows the record, e.g. the file was extended past
        // data that never reached the disk.
        Damage::PayloadChecksum { len } => {
            zeros(path, at + FRAME_HEADER_LEN + u64::from(len), file_len)?
        }
        Damage::HeaderChecksum => zeros(path, at + FRAME_HEADER_LEN, file_len)?,
        // A length whose checksum matches but is out of range was written
        // like that: not a torn write.
        Damage::BadLength(_) => false,
    })
}

/// True when every byte of `path` in `from..to` is zero.
fn zeros(path: &Path, from: u64, to: u64) -> io::Result<bool> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = f.take(to.saturating_sub(from));
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}
