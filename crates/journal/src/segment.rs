//! [`SegmentInfo`]: what a scan learned about one segment file, and the
//! helpers that name, list and create segment files.
//!
//! A segment is created under a temporary name, its header synced, then
//! renamed into place and the directory synced, so a segment file with its
//! final name always has a complete header.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::header::{FileHeader, SEGMENT_MAGIC};

/// One segment as found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Segment number.
    pub segment: u64,
    /// Its file.
    pub path: PathBuf,
    /// Bytes of valid data: header plus intact records.
    pub bytes: u64,
    /// Size of the file on disk (more than `bytes` when a torn tail or a
    /// corrupt record follows the valid data).
    pub file_bytes: u64,
    /// Intact records.
    pub records: u64,
    /// Sequence number of its first record (from the header).
    pub first_seq: u64,
    /// Sequence number of its last intact record.
    pub last_seq: Option<u64>,
    /// `time_ms` of its first intact record.
    pub first_time_ms: Option<u64>,
    /// `time_ms` of its last intact record.
    pub last_time_ms: Option<u64>,
}

/// `<dir>/00000000000000000001.seg`.
pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.seg"))
}

/// `<dir>/snapshot-00000000000000000001.snap`.
pub(crate) fn snapshot_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("snapshot-{base:020}.snap"))
}

/// The files of a journal directory, by kind.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segment files by number.
    pub segments: BTreeMap<u64, PathBuf>,
    /// Snapshot files by base segment.
    pub snapshots: BTreeMap<u64, PathBuf>,
    /// Leftover temporary files (an interrupted rotation or snapshot).
    pub temp: Vec<PathBuf>,
}

/// Lists `dir`; a missing directory is an empty journal. Files that match
/// no pattern are left alone.
pub(crate) fn list(dir: &Path) -> io::Result<Listing> {
    let mut out = Listing::default();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            out.temp.push(e.path());
        } else if let Some(n) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
            out.segments.insert(n, e.path());
        } else if let Some(n) = name
            .strip_prefix("snapshot-")
            .and_then(|s| s.strip_suffix(".snap"))
            .and_then(|s| s.parse().ok())
        {
            out.snapshots.insert(n, e.path());
        }
    }
    Ok(out)
}

/// Syncs a directory so renames and deletions in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `segment` whose first record will have `first_seq`,
/// atomically (temp name, sync, rename, sync dir), and returns it open for
/// writing at the end of its header.
pub(crate) fn create_segment(
    dir: &Path,
    epoch: u64,
    segment: u64,
    first_seq: u64,
) -> io::Result<File> {
    let path = segment_path(dir, segment);
    let tmp = path.with_extension("seg.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(
        &FileHeader {
            epoch,
            number: segment,
            seq: first_seq,
        }
        .encode(SEGMENT_MAGIC),
    )?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(f)
}
