//! [`repair`] and [`RepairReport`]: the operator's way past a corrupt
//! record, for `redoubt journal repair` or similar.
//!
//! Nothing is deleted: the corrupt record and everything after it (the
//! rest of its segment, later segments; or a corrupt snapshot) are moved
//! into `<data_dir>/journal/quarantine-<unix ms>/` for forensics or manual
//! recovery, and the journal is cut at the corruption so it opens clean.
//! Records in the quarantine are lost to replay: that is the operator's
//! decision, which is why the journal never does this by itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Corruption, JournalError, Result};
use crate::journal::JOURNAL_DIR;
use crate::lock::DataDirLock;
use crate::recovery;
use crate::segment::{self, sync_dir};

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The corruption repaired.
    pub corruption: Corruption,
    /// Where the cut-off data now is.
    pub quarantine: PathBuf,
    /// Files written or moved into the quarantine.
    pub moved: Vec<PathBuf>,
    /// Bytes moved out of the journal.
    pub bytes_moved: u64,
}

/// Cuts the journal of the locked data dir at its corruption, moving the
/// damaged data aside. `Ok(None)` when there is no corruption. Taking the
/// [`DataDirLock`] makes sure no Redoubt process has the journal open.
pub fn repair(lock: &DataDirLock) -> Result<Option<RepairReport>> {
    let dir = lock.dir().join(JOURNAL_DIR);
    let io = |what: &'static str| move |e: io::Error| JournalError::io(what, e);
    let scan = recovery::scan(&dir).map_err(io("scanning the journal"))?;
    let Some(c) = scan.corruption else {
        return Ok(None);
    };
    let listing = segment::list(&dir).map_err(io("listing the journal"))?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let quarantine = dir.join(format!("quarantine-{ms}"));
    fs::create_dir_all(&quarantine).map_err(io("creating the quarantine directory"))?;
    let mut moved = Vec::new();
    let mut bytes_moved = 0;
    let mut to_move: Vec<PathBuf> = Vec::new();
    if c.snapshot {
        to_move.push(c.file.clone());
    } else {
        let seg = c.position.segment;
        if c.position.offset == 0 {
            if c.file.exists() {
                to_move.push(c.file.clone());
            }
        } else {
            let name = c
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tail_path = quarantine.join(format!("{name}.from-{}", c.position.offset));
            copy_tail(&c.file, c.position.offset, &tail_path)
                .map_err(io("copying the corrupt tail"))?;
            bytes_moved += c.bytes_after;
            moved.push(tail_path);
            let f = OpenOptions::new()
                .write(true)
                .open(&c.file)
                .map_err(io("opening the corrupt segment"))?;
            f.set_len(c.position.offset)
                .map_err(io("cutting the corrupt segment"))?;
            f.sync_all().map_err(io("syncing the cut segment"))?;
        }
        to_move.extend(listing.segments.range(seg + 1..).map(|(_, p)| p.clone()));
    }
    for from in to_move {
        let Some(name) = from.file_name() else {
            continue;
        };
        let to = quarantine.join(name);
        bytes_moved += fs::metadata(&from).map_or(0, |m| m.len());
        fs::rename(&from, &to).map_err(io("moving a file into the quarantine"))?;
        moved.push(to);
    }
    sync_dir(&quarantine).map_err(io("syncing the quarantine directory"))?;
    sync_dir(&dir).map_err(io("syncing the journal directory"))?;
    tracing::warn!(%c, quarantine = %quarantine.display(), "journal repaired: corrupt data moved aside");
    Ok(Some(RepairReport {
        corruption: c,
        quarantine,
        moved,
        bytes_moved,
    }))
}

fn copy_tail(from: &Path, offset: u64, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut dst = File::create(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}
