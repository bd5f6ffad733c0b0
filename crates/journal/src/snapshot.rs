//! [`SnapshotInfo`] and the snapshot file: the live data of a standalone
//! store, written as entries so that "snapshot, then the segments from its
//! base on" rebuilds the store exactly.
//!
//! Format: a file header (see `header.rs`) with the snapshot magic (number = base segment,
//! seq = first sequence number of the base segment), then records framed
//! as in segments (sequence numbers count 1, 2, … within the snapshot),
//! then an end record (`kind = 2, count u64, 16 zero bytes`) that must be
//! the last bytes of the file. A file without it is incomplete.
//!
//! Written under a temporary name, synced, renamed and the directory
//! synced: a snapshot with its final name is always complete, and a crash
//! while writing one leaves only a `.tmp` file that `open` removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::entry::{decode_payload, Entry, KIND_SNAPSHOT_END, MIN_PAYLOAD};
use crate::error::Corruption;
use crate::header::{FileHeader, HEADER_LEN, SNAPSHOT_MAGIC};
use crate::position::Position;
use crate::record::{encode_record, frame, FrameReader, Next};
use crate::segment::{snapshot_path, sync_dir};

/// A complete snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The first segment not folded into the snapshot: restoring is this
    /// snapshot, then segments from `base_segment` on.
    pub base_segment: u64,
    /// Its file.
    pub path: PathBuf,
    /// Entries in it.
    pub entries: u64,
    /// File size.
    pub bytes: u64,
}

fn end_payload(count: u64) -> [u8; MIN_PAYLOAD] {
    let mut p = [0u8; MIN_PAYLOAD];
    p[0] = KIND_SNAPSHOT_END;
    p[1..9].copy_from_slice(&count.to_le_bytes());
    p
}

/// Writes a snapshot of `entries` with base segment `base`, atomically.
pub(crate) fn write(
    dir: &Path,
    epoch: u64,
    base: u64,
    base_seq: u64,
    entries: impl Iterator<Item = Entry>,
) -> io::Result<SnapshotInfo> {
    let path = snapshot_path(dir, base);
    let tmp = path.with_extension("snap.tmp");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(
        &FileHeader {
            epoch,
            number: base,
            seq: base_seq,
        }
        .encode(SNAPSHOT_MAGIC),
    )?;
    let mut buf = Vec::new();
    let mut count = 0u64;
    for e in entries {
        count += 1;
        buf.clear();
        encode_record(count, &e, &mut buf);
        w.write_all(&buf)?;
    }
    buf.clear();
    frame(&end_payload(count), &mut buf);
    w.write_all(&buf)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    drop(file);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(SnapshotInfo {
        base_segment: base,
        path,
        entries: count,
        bytes,
    })
}

/// Reads a snapshot's entries in order. Stops (returns `None`) at the end
/// record; any damage is a [`Corruption`].
pub(crate) struct SnapshotReader {
    frames: FrameReader<BufReader<File>>,
    path: PathBuf,
    base: u64,
    file_len: u64,
    expected: u64,
    done: bool,
}

impl SnapshotReader {
    /// Opens a snapshot and checks its header; the header is returned
    /// beside the reader.
    pub(crate) fn open(
        path: &Path,
        base: u64,
    ) -> io::Result<Result<(FileHeader, SnapshotReader), Corruption>> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 16, file);
        let corrupt = |reason: String| Corruption {
            file: path.to_path_buf(),
            snapshot: true,
            position: Position::new(base, 0),
            reason,
            bytes_after: file_len,
            later_segments: 0,
        };
        let header = match FileHeader::read(&mut r, SNAPSHOT_MAGIC)? {
            Ok(h) => h,
            Err(why) => return Ok(Err(corrupt(why))),
        };
        if header.number != base {
            return Ok(Err(corrupt(format!(
                "header names base segment {}, file name {base}",
                header.number
            ))));
        }
        let reader = SnapshotReader {
            frames: FrameReader::new(r, HEADER_LEN),
            path: path.to_path_buf(),
            base,
            file_len,
            expected: 1,
            done: false,
        };
        Ok(Ok((header, reader)))
    }

    fn corrupt(&self, reason: String) -> Corruption {
        let offset = self.frames.offset();
        Corruption {
            file: self.path.clone(),
            snapshot: true,
            position: Position::new(self.base, offset),
            reason,
            bytes_after: self.file_len - offset,
            later_segments: 0,
        }
    }

    /// The next entry, `Ok(Ok(None))` after the end record.
    pub(crate) fn next_entry(&mut self) -> io::Result<Result<Option<Entry>, Corruption>> {
        if self.done {
            return Ok(Ok(None));
        }
        let at = self.frames.offset();
        let payload: Bytes = match self.frames.next_frame(self.file_len)? {
            Next::Frame { payload } => payload,
            Next::End => {
                return Ok(Err(
                    self.corrupt("snapshot ends without its end record".into())
                ))
            }
            Next::Damaged(d) => return Ok(Err(self.corrupt(d.describe()))),
        };
        if payload.first() == Some(&KIND_SNAPSHOT_END) {
            let mut n = [0u8; 8];
            // In bounds: the frame reader rejects payloads shorter than MIN_PAYLOAD.
            n.copy_from_slice(&payload[1..9]);
            let count = u64::from_le_bytes(n);
            let mut c = self.corrupt(String::new());
            c.position.offset = at;
            if count != self.expected - 1 {
                c.reason = format!(
                    "end record counts {count} entries, found {}",
                    self.expected - 1
                );
                return Ok(Err(c));
            }
            if self.frames.offset() != self.file_len {
                c.reason = "bytes after the end record".into();
                return Ok(Err(c));
            }
            self.done = true;
            return Ok(Ok(None));
        }
        match decode_payload(&payload) {
            Ok((seq, entry)) if seq == self.expected => {
                self.expected += 1;
                Ok(Ok(Some(entry)))
            }
            Ok((seq, _)) => {
                let mut c = self.corrupt(format!("entry number {seq}, expected {}", self.expected));
                c.position.offset = at;
                Ok(Err(c))
            }
            Err(bad) => {
                let mut c = self.corrupt(format!("undecodable entry: {}", bad.0));
                c.position.offset = at;
                Ok(Err(c))
            }
        }
    }
}

/// Reads a whole snapshot to check it, returning its header and summary.
pub(crate) fn check(
    path: &Path,
    base: u64,
) -> io::Result<Result<(FileHeader, SnapshotInfo), Corruption>> {
    let (header, mut r) = match SnapshotReader::open(path, base)? {
        Ok(x) => x,
        Err(c) => return Ok(Err(c)),
    };
    let mut entries = 0;
    loop {
        match r.next_entry()? {
            Ok(Some(_)) => entries += 1,
            Ok(None) => break,
            Err(c) => return Ok(Err(c)),
        }
    }
    let info = SnapshotInfo {
        base_segment: base,
        path: path.to_path_buf(),
        entries,
        bytes: r.file_len,
    };
    Ok(Ok((header, info)))
}
