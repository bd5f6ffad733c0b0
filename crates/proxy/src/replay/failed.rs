//! [`FailedCommand`]: one line of `<data_dir>/replay-failed.jsonl`, the
//! record of every journaled command Redis refused during replay.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use journal::{Checkpoint, Record};
use serde::{Deserialize, Serialize};

/// A journaled command that did not take effect in Redis, as written to
/// `replay-failed.jsonl` (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCommand {
    /// When replay saw the failure, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// When the command was journaled, milliseconds since the Unix epoch.
    pub journal_time_ms: u64,
    /// The record's position, `epoch:segment:offset`
    /// (`redoubt journal inspect` finds it there).
    pub position: String,
    /// The record's sequence number.
    pub seq: u64,
    /// Database the command was for.
    pub db: u32,
    /// The command, arguments as UTF-8 (invalid bytes replaced).
    pub command: Vec<String>,
    /// Redis's error, or why Redoubt did not send the command.
    pub error: String,
}

impl FailedCommand {
    /// The line for command `cmd` of `record`, refused with `error`.
    pub(super) fn new(checkpoint: Checkpoint, record: &Record, cmd: usize, error: &str) -> Self {
        let command = record
            .entry
            .commands
            .get(cmd)
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        FailedCommand {
            time_ms: now_ms(),
            journal_time_ms: record.entry.time_ms,
            position: checkpoint.to_string(),
            seq: record.seq,
            db: record.entry.db,
            command,
            error: error.to_string(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads a `replay-failed.jsonl` (for the incident log, `/status` and
/// tests). A missing file reads as empty.
pub fn read_failed_log(path: impl AsRef<Path>) -> io::Result<Vec<FailedCommand>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        );
    }
    Ok(out)
}

/// The append-only file, opened on the first failure.
pub(super) struct FailedLog {
    path: PathBuf,
    file: Option<File>,
}

impl FailedLog {
    pub(super) fn new(path: PathBuf) -> FailedLog {
        FailedLog { path, file: None }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` in one write and syncs them: failures are rare, and
    /// the journal records they stand for are released right after.
    pub(super) fn append(&mut self, lines: &[FailedCommand]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = Vec::with_capacity(256 * lines.len());
        for l in lines {
            serde_json::to_writer(&mut text, l)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            text.push(b'\n');
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        let res = file.write_all(&text).and_then(|()| file.sync_data());
        if res.is_err() {
            // Reopen next time rather than keep writing after a failure.
            self.file = None;
        }
        res
    }
}
