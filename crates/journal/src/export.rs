//! [`export_resp`] and [`ExportReport`]: the journal as plain RESP for
//! `redis-cli --pipe` (`redoubt journal export DIR --format resp`).
//!
//! Read-only, like [`inspect`](fn@crate::inspect). Entries come out in order:
//! the snapshot's, then every intact record of the segments (replayed and
//! not), each transaction wrapped in `MULTI` / `EXEC`, with a `SELECT`
//! whenever the database changes (and before the first entry, since the
//! connection's database is unknown).

use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::entry::{decode_payload, Entry};
use crate::error::{Corruption, JournalError, Result};
use crate::header::HEADER_LEN;
use crate::inspect::resolve;
use crate::record::{FrameReader, Next};
use crate::recovery::{self, TornTail};
use crate::snapshot::SnapshotReader;

/// What [`export_resp`] wrote, and why it stopped early if it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// The journal directory.
    pub dir: PathBuf,
    /// Entries written.
    pub entries: u64,
    /// Commands written, not counting `SELECT`, `MULTI` and `EXEC`.
    pub commands: u64,
    /// A torn last record, not exported.
    pub torn_tail: Option<TornTail>,
    /// A corrupt record: the export stops before it (the CLI should exit
    /// non-zero and say so).
    pub corruption: Option<Corruption>,
}

/// Calls `f` with every intact entry of the journal in `dir`, in order.
pub(crate) fn for_each_entry(
    dir: &Path,
    mut f: impl FnMut(Entry) -> io::Result<()>,
) -> Result<(Option<TornTail>, Option<Corruption>)> {
    let io = |what: &'static str| move |e: io::Error| JournalError::io(what, e);
    let scan = recovery::scan(dir).map_err(io("scanning the journal"))?;
    if let Some(s) = &scan.snapshot {
        match SnapshotReader::open(&s.path, s.base_segment).map_err(io("opening the snapshot"))? {
            Ok((_, mut r)) => loop {
                match r.next_entry().map_err(io("reading the snapshot"))? {
                    Ok(Some(e)) => f(e).map_err(io("writing the export"))?,
                    Ok(None) => break,
                    Err(c) => return Ok((None, Some(c))),
                }
            },
            Err(c) => return Ok((None, Some(c))),
        }
    }
    for seg in &scan.segments {
        let mut file = File::open(&seg.path).map_err(io("opening a segment"))?;
        file.seek(SeekFrom::Start(HEADER_LEN))
            .map_err(io("reading a segment"))?;
        let mut frames = FrameReader::new(BufReader::with_capacity(1 << 16, file), HEADER_LEN);
        // `seg.bytes` is where the scan found the intact records to end.
        while let Next::Frame { payload } = frames
            .next_frame(seg.bytes)
            .map_err(io("reading a segment"))?
        {
            match decode_payload(&payload) {
                Ok((_, e)) => f(e).map_err(io("writing the export"))?,
                Err(_) => break,
            }
        }
    }
    Ok((scan.torn_tail, scan.corruption))
}

/// Writes the journal of data dir `dir` (or the journal directory itself)
/// to `out` as RESP commands.
pub fn export_resp(dir: impl AsRef<Path>, out: &mut impl Write) -> Result<ExportReport> {
    let dir = resolve(dir.as_ref());
    let mut db: Option<u32> = None;
    let (mut entries, mut commands) = (0u64, 0u64);
    let mut buf = BytesMut::with_capacity(1 << 16);
    let (torn_tail, corruption) = for_each_entry(&dir, |e| {
        if e.commands.is_empty() {
            return Ok(());
        }
        if db != Some(e.db) {
            resp::frame::encode_command(&mut buf, &[&b"SELECT"[..], e.db.to_string().as_bytes()]);
            db = Some(e.db);
        }
        let multi = e.commands.len() > 1;
        if multi {
            resp::frame::encode_command(&mut buf, &[&b"MULTI"[..]]);
        }
        for c in &e.commands {
            resp::frame::encode_command(&mut buf, c);
        }
        if multi {
            resp::frame::encode_command(&mut buf, &[&b"EXEC"[..]]);
        }
        entries += 1;
        commands += e.commands.len() as u64;
        if buf.len() >= 1 << 16 {
            out.write_all(&buf)?;
            buf.clear();
        }
        Ok(())
    })?;
    out.write_all(&buf)
        .map_err(|e| JournalError::io("writing the export", e))?;
    out.flush()
        .map_err(|e| JournalError::io("writing the export", e))?;
    Ok(ExportReport {
        dir,
        entries,
        commands,
        torn_tail,
        corruption,
    })
}
