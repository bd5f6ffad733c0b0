//! [`JournalConfig`]: how the journal syncs, how big it may grow, how its
//! segments are cut and how long replayed segments are kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When appended records reach the disk (DESIGN `journal.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Every append returns only after an `fsync` covering it; concurrent
    /// appends share one write and one `fsync` (group commit).
    Always,
    /// Appends return once written to the OS; a background thread syncs
    /// once a second, so a host crash loses at most about a second.
    EverySec,
    /// Appends return once written to the OS, which syncs when it likes.
    No,
}

/// DESIGN's default `journal.max_bytes`: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default segment size: 64 MiB, small enough that replayed segments are
/// freed promptly, large enough that rotation (one extra `fsync`) is rare.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
/// DESIGN's default `journal.retain_after_replay`: one hour.
pub const DEFAULT_RETAIN_AFTER_REPLAY: Duration = Duration::from_secs(3600);

/// Configuration of one [`Journal`](crate::Journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Sync policy.
    pub fsync: Fsync,
    /// Bound on the bytes of segments not yet released (replayed); an
    /// append that would exceed it is refused with [`JournalError::Full`](crate::JournalError::Full).
    pub max_bytes: u64,
    /// A segment is closed and a new one started once the next record would
    /// take it past this size (a single larger record gets a segment alone).
    pub segment_bytes: u64,
    /// How long segments that were fully released stay on disk, for manual
    /// re-replay, before [`Journal::gc`](crate::Journal::gc) deletes them.
    pub retain_after_replay: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            fsync: Fsync::Always,
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            retain_after_replay: DEFAULT_RETAIN_AFTER_REPLAY,
        }
    }
}

/// Formats a byte count the way error messages show it: `1.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_matches_error_message_style() {
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
