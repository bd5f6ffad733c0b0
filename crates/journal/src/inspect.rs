//! [`InspectReport`] and [`inspect`]: what is in a journal directory,
//! read-only (safe while a Redoubt process has it open), for
//! `redoubt journal inspect`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::human_bytes;
use crate::error::{Corruption, JournalError, Result};
use crate::journal::JOURNAL_DIR;
use crate::recovery::{self, Scan, TornTail};
use crate::segment::SegmentInfo;
use crate::snapshot::SnapshotInfo;

/// Summary of a journal directory. `Display` is for people; serde gives
/// the JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectReport {
    /// The journal directory inspected.
    pub dir: PathBuf,
    /// The journal's epoch (`None` for an empty directory).
    pub epoch: Option<u64>,
    /// The latest snapshot.
    pub snapshot: Option<SnapshotInfo>,
    /// Segments, in order, up to a corruption.
    pub segments: Vec<SegmentInfo>,
    /// Intact records in the segments.
    pub records: u64,
    /// Bytes of the segment files on disk.
    pub bytes: u64,
    /// Sequence number of the first intact record.
    pub first_seq: Option<u64>,
    /// Sequence number of the last intact record.
    pub last_seq: Option<u64>,
    /// Earliest `time_ms` of the intact records.
    pub first_time_ms: Option<u64>,
    /// Latest `time_ms` of the intact records.
    pub last_time_ms: Option<u64>,
    /// A torn last record (the next `open` truncates it). While a Redoubt
    /// process is appending, this can also be a record being written.
    pub torn_tail: Option<TornTail>,
    /// A corrupt record: nothing from there on is readable.
    pub corruption: Option<Corruption>,
    /// Leftover files the next `open` removes.
    pub leftovers: Vec<PathBuf>,
}

impl InspectReport {
    /// True unless a corrupt record was found.
    pub fn is_healthy(&self) -> bool {
        self.corruption.is_none()
    }
}

/// The journal directory for `dir`: `<dir>/journal` when `dir` is a data
/// dir, else `dir` itself (pointing the CLI at either works).
pub(crate) fn resolve(dir: &Path) -> PathBuf {
    let nested = dir.join(JOURNAL_DIR);
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

pub(crate) fn report(dir: PathBuf, scan: Scan) -> InspectReport {
    let segs = &scan.segments;
    InspectReport {
        epoch: scan.epoch,
        records: segs.iter().map(|s| s.records).sum(),
        bytes: segs.iter().map(|s| s.file_bytes).sum(),
        first_seq: segs.iter().find(|s| s.records > 0).map(|s| s.first_seq),
        last_seq: segs.iter().filter_map(|s| s.last_seq).next_back(),
        first_time_ms: segs.iter().filter_map(|s| s.first_time_ms).min(),
        last_time_ms: segs.iter().filter_map(|s| s.last_time_ms).max(),
        snapshot: scan.snapshot,
        segments: scan.segments,
        torn_tail: scan.torn_tail,
        corruption: scan.corruption,
        leftovers: scan.stale,
        dir,
    }
}

/// Inspects the journal of data dir `dir` (or the journal directory
/// itself) without changing anything.
pub fn inspect(dir: impl AsRef<Path>) -> Result<InspectReport> {
    let dir = resolve(dir.as_ref());
    if !dir.is_dir() {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
        return Err(JournalError::io(format!("inspecting {}", dir.display()), e));
    }
    let scan = recovery::scan(&dir)
        .map_err(|e| JournalError::io(format!("inspecting {}", dir.display()), e))?;
    Ok(report(dir, scan))
}

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), crate::rfc3339::rfc3339_millis)
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "journal {}", self.dir.display())?;
        match self.epoch {
            Some(e) => writeln!(f, "  epoch      {e}")?,
            None => writeln!(f, "  empty (no segments)")?,
        }
        if let Some(s) = &self.snapshot {
            writeln!(
                f,
                "  snapshot   {} entries, {}, base segment {}",
                s.entries,
                human_bytes(s.bytes),
                s.base_segment
            )?;
        }
        writeln!(f, "  segments   {}", self.segments.len())?;
        for s in &self.segments {
            let seqs = match s.last_seq {
                Some(l) => format!("seq {}..={l}", s.first_seq),
                None => "no records".into(),
            };
            writeln!(
                f,
                "    {:>6}  {:>8} records  {:>10}  {seqs}",
                s.segment,
                s.records,
                human_bytes(s.file_bytes)
            )?;
        }
        writeln!(f, "  records    {}", self.records)?;
        writeln!(f, "  bytes      {}", human_bytes(self.bytes))?;
        if let (Some(a), Some(b)) = (self.first_seq, self.last_seq) {
            writeln!(f, "  seq        {a}..={b}")?;
        }
        writeln!(f, "  first      {}", time(self.first_time_ms))?;
        writeln!(f, "  last       {}", time(self.last_time_ms))?;
        match &self.torn_tail {
            Some(t) => writeln!(f, "  torn tail  {t} (truncated at next start)")?,
            None => writeln!(f, "  torn tail  none")?,
        }
        match &self.corruption {
            Some(c) => writeln!(f, "  CORRUPT    {c}")?,
            None => writeln!(f, "  corruption none")?,
        }
        for l in &self.leftovers {
            writeln!(f, "  leftover   {} (removed at next start)", l.display())?;
        }
        Ok(())
    }
}
