//! The crash-safe durable log behind Redoubt's promise that an
//! acknowledged durable write survives a crash of Redis, of Redoubt
//! (`kill -9`) and of the host.
//!
//! Durable writes made while Redis is away are appended here before the
//! client gets its reply, and replayed to Redis, in order, when it
//! returns. In standalone mode the journal (with snapshots) is the store's
//! persistence. The journal never interprets commands, except to export
//! them as RESP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), journal::JournalError> {
//! use bytes::Bytes;
//! use journal::{DataDirLock, Entry, Journal, JournalConfig, Position};
//!
//! let _lock = DataDirLock::acquire("./redoubt-data")?; // held for the process's life
//! let (journal, recovery) = Journal::open("./redoubt-data", JournalConfig::default())?;
//! assert!(recovery.corruption.is_none(), "{recovery}");
//! let entry = Entry::command(0, vec![Bytes::from("SET"), Bytes::from("k"), Bytes::from("v")], 0);
//! let pos = journal.append(entry).await?; // durable now (fsync = always)
//! for record in journal.reader(Position::START)? {
//!     let record = record?; // replay it, then checkpoint `record.next`
//!     journal.release(record.next)?;
//! }
//! # let _ = pos; Ok(()) }
//! ```
//!
//! # Guarantees
//! - `append` resolves only once the record is durable under the
//!   [`Fsync`] policy; with `always`, concurrent appends share one write
//!   and one `fsync` (group commit). Appends have one total order (the
//!   sequence number), fixed when `append` is called.
//! - A torn tail (the last, partly written record) is truncated at `open`
//!   and reported in [`Recovery::torn_tail`]. A corrupt record anywhere
//!   else stops reading at its exact [`Position`], is reported in
//!   [`Recovery::corruption`], and makes every append fail with
//!   [`JournalError::Corrupt`] until an operator acts (inspect, then
//!   [`repair()`](fn@repair) moves the damaged data aside): never skipped.
//! - The journal refuses appends past `max_bytes` ([`JournalError::Full`]).
//!
//! # On-disk format
//! Everything lives in `<data_dir>/journal/`; integers are little endian.
//!
//! - **Segments** `00000000000000000001.seg`, numbered from 1. A 40-byte
//!   header — magic `RDTJSEG\n`, version `u32` (1), epoch `u64`, segment
//!   number `u64`, sequence number of the first record `u64`,
//!   `crc32c` of those 36 bytes `u32` — then records back to back. A new
//!   segment starts when the next record would pass `segment_bytes`; the
//!   old one is synced first (whatever the policy), so only the last
//!   segment can have a torn tail. Segments are created under a `.tmp`
//!   name and renamed, so a named segment always has a whole header.
//! - **Records**: `len u32 | crc32c(len bytes) u32 | crc32c(payload) u32 |
//!   payload[len]`. The length has its own checksum so a damaged length
//!   is told apart from a record cut short. Payload: `kind u8` (1 =
//!   entry), `seq u64`, `time_ms u64`, `db u32`, `ncommands u32`, then per
//!   command `nargs u32` and per argument `len u32` and its bytes.
//!   Sequence numbers increase by one across segments.
//! - **Snapshots** `snapshot-<base>.snap`: a header like a segment's
//!   (magic `RDTJSNP\n`, number = base segment, seq = the base segment's
//!   first sequence number), entries framed as records (numbered 1, 2, …),
//!   then an end record (`kind` 2, entry count `u64`) that must end the
//!   file. Restoring = latest snapshot, then the segments from its base.
//! - **Positions** are `segment:offset` of a record start; the replay
//!   checkpoint is `epoch:segment:offset` ([`Checkpoint`]), the epoch
//!   being a random number fixed when the journal was created.
//! - `<data_dir>/redoubt.lock` holds the pid of the process that has the
//!   data dir ([`DataDirLock`]).
//!
//! # Layout
//! - [`config`]: [`JournalConfig`], [`Fsync`].
//! - [`entry`]: [`Entry`] and its payload encoding.
//! - [`position`]: [`Position`], [`Checkpoint`].
//! - [`journal`]: [`Journal`] — open, append, rotate, snapshot, readers,
//!   release and retention, metrics; [`ReplayAll`].
//! - `writer` (private): the writer thread and group commit.
//! - [`reader`]: [`Reader`], [`Record`].
//! - [`recovery`]: [`Recovery`], [`TornTail`], and the directory scan.
//! - [`snapshot`]: [`SnapshotInfo`] and the snapshot file.
//! - [`segment`]: [`SegmentInfo`] and segment files.
//! - `record` (private): record framing and the frame reader.
//! - `header` (private): the 40-byte file header.
//! - `shared` (private): state shared by writer, readers and handle.
//! - [`lock`]: [`DataDirLock`], [`LockError`].
//! - [`inspect`](mod@inspect): [`InspectReport`], [`inspect()`](fn@inspect).
//! - [`export`]: [`export_resp`], [`ExportReport`].
//! - [`repair`](mod@repair): [`repair()`](fn@repair), [`RepairReport`]:
//!   the operator's way past a corruption (moves damaged data aside).
//! - [`error`]: [`JournalError`], [`Corruption`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod entry;
pub mod error;
pub mod export;
mod header;
pub mod inspect;
pub mod journal;
pub mod lock;
pub mod position;
pub mod reader;
mod record;
pub mod recovery;
pub mod repair;
pub mod rfc3339;
pub mod segment;
mod shared;
pub mod snapshot;
mod writer;

pub use config::{human_bytes, Fsync, JournalConfig};
pub use entry::Entry;
pub use error::{Corruption, JournalError, Result};
pub use export::{export_resp, ExportReport};
pub use inspect::{inspect, InspectReport};
pub use journal::{Appended, Journal, ReplayAll, Staged, JOURNAL_DIR};
pub use lock::{DataDirLock, LockError};
pub use position::{Checkpoint, ParseCheckpointError, Position};
pub use reader::{Reader, Record};
pub use recovery::{Recovery, TornTail};
pub use repair::{repair, RepairReport};
pub use rfc3339::{rfc3339_millis, rfc3339_secs};
pub use segment::SegmentInfo;
pub use snapshot::SnapshotInfo;
pub use writer::Then;
