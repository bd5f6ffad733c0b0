//! [`JournalError`]: every way the journal refuses or fails, tagged so the
//! caller knows what to do, and [`Corruption`], the report of a damaged
//! record.
//!
//! The messages follow STYLE: what happened, what was not done, what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::human_bytes;
use crate::lock::LockError;
use crate::position::Position;

/// A damaged record (or file header) that is not a torn tail: the journal
/// stops there, never skips it. Carried by [`JournalError::Corrupt`], the
/// [`Recovery`](crate::Recovery) report and the [`InspectReport`](crate::InspectReport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corruption {
    /// The damaged file.
    pub file: PathBuf,
    /// True when the file is a snapshot rather than a segment.
    pub snapshot: bool,
    /// Where the damaged record starts: segment number (for a snapshot, its
    /// base segment) and byte offset in that file. Offset 0 means the file
    /// header.
    pub position: Position,
    /// What is wrong (`record checksum mismatch (57 bytes)`, …).
    pub reason: String,
    /// Bytes from the damaged record to the end of its file, none of which
    /// is read.
    pub bytes_after: u64,
    /// Segments after the damaged file, also not read.
    pub later_segments: u64,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.snapshot { "snapshot" } else { "segment" };
        write!(
            f,
            "corrupt record in {kind} {} at offset {} ({}): {}; {} from there to the end of the file and {} later segment(s) not read",
            self.position.segment,
            self.position.offset,
            self.file.display(),
            self.reason,
            human_bytes(self.bytes_after),
            self.later_segments
        )
    }
}

/// Errors of the journal. The variant says where the fault is and so what
/// the caller does: every one of them means the durable write in question
/// was **not** made durable and must be refused (`-UNAVAILABLE`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the journal's files failed.
    #[error("journal I/O error while {what}: {source}: durable write not executed; check the disk under the data_dir")]
    Io {
        /// What the journal was doing.
        what: String,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The journal reached `max_bytes`.
    #[error("journal full ({}): durable write not executed; raise journal.max_bytes or restore Redis", human_bytes(*max_bytes))]
    Full {
        /// The configured bound.
        max_bytes: u64,
    },
    /// A record is corrupt: the journal refuses to append or read past it
    /// until an operator acts.
    #[error("journal {0}: durable writes refused; stop Redoubt, run `redoubt journal inspect DATA_DIR`, then `redoubt journal repair DATA_DIR` (moves the damaged records aside, they are not replayed) or move the journal aside")]
    Corrupt(Box<Corruption>),
    /// An earlier write or sync failed, so what is on disk is uncertain and
    /// the journal accepts nothing more in this process.
    #[error("journal stopped after an earlier failure ({cause}): durable write not executed; check the disk and restart Redoubt")]
    Failed {
        /// The first failure.
        cause: String,
    },
    /// One entry larger than a record can hold.
    #[error("journal entry of {} exceeds the 2 GiB record limit: durable write not executed", human_bytes(*bytes))]
    TooLarge {
        /// Encoded size.
        bytes: u64,
    },
    /// A read or release position that is not a record boundary, or past
    /// the end of the journal.
    #[error("journal position {position} is not a record boundary of this journal ({why})")]
    InvalidPosition {
        /// The position given.
        position: Position,
        /// Why it is invalid.
        why: String,
    },
    /// A read position whose segment was already deleted (folded into a
    /// snapshot or past its retention).
    #[error("journal segment {} no longer exists (oldest is {oldest}): records from position {position} cannot be read", position.segment)]
    Gone {
        /// The position asked for.
        position: Position,
        /// Oldest segment still on disk.
        oldest: u64,
    },
    /// The `data_dir` lock is held elsewhere.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The journal was closed (its writer stopped).
    #[error("journal closed: durable write not executed")]
    Closed,
    /// An earlier write could not be journaled, and writes executed after
    /// it may depend on it: they are refused too until its owner has undone
    /// it ([`Journal::unfence`](crate::Journal::unfence)).
    #[error("an earlier write could not be journaled and is being undone: durable write not executed; retry")]
    Fenced,
}

impl JournalError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> JournalError {
        JournalError::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }

    /// The corruption, if this is [`JournalError::Corrupt`].
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            JournalError::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

/// Result alias for the journal.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_message_says_what_happened_what_was_not_done_and_what_to_do() {
        let e = JournalError::Full { max_bytes: 1 << 30 };
        assert_eq!(
            e.to_string(),
            "journal full (1.0 GiB): durable write not executed; raise journal.max_bytes or restore Redis"
        );
    }
}
