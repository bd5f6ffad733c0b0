//! Decoder of Redis RDB files (versions 1 to 11, everything Redis 7.0–7.2
//! writes) and of DUMP payloads.
//!
//! Redoubt attaches to Redis as a replica and loads the RDB the primary
//! sends; [`Reader`] pulls it from any [`std::io::Read`] one key at a time,
//! holding only one value's blobs in memory. The input is treated as
//! hostile: no length prefix is trusted for an allocation (blobs grow as
//! bytes actually arrive, [`Limits`] cap strings and element counts),
//! nothing is sliced unchecked, nothing recurses on input, and every error
//! says what was wrong and at which byte.
//!
//! ```no_run
//! # fn main() -> Result<(), rdb::Error> {
//! let file = std::io::BufReader::new(std::fs::File::open("dump.rdb")?);
//! let mut reader = rdb::Reader::new(file)?;
//! while let Some(record) = reader.next_record()? {
//!     println!("db {} key {:?}", record.db, record.key);
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `reader`: the file level: header, opcodes (AUX, SELECTDB, RESIZEDB,
//!   expiry, IDLE/FREQ, module aux, functions), EOF and checksum.
//! - `value`: one value of each RDB type, in each of its encodings.
//! - `source`: the byte source with offsets and running CRC; lengths
//!   (6/14/32/64-bit), strings (raw, integer, LZF), doubles, times.
//! - `listpack`, `ziplist`, `intset`, `zipmap`: the packed blob encodings.
//! - `stream`: stream listpacks, metadata, consumer groups.
//! - `module`: module IDs and skipping self-describing module data.
//! - `lzf`: LZF decompression.
//! - `crc`: Redis's CRC-64 (Jones polynomial).
//! - `dump`: DUMP payloads.
//! - `error`: [`Error`].
#![forbid(unsafe_code)]

mod crc;
mod dump;
mod error;
mod intset;
mod listpack;
mod lzf;
mod module;
mod reader;
mod source;
mod stream;
mod value;
mod ziplist;
mod zipmap;

use bytes::Bytes;

pub use crc::{crc64, crc64_update};
pub use dump::{decode_dump, decode_dump_with_limits};
pub use error::Error;
pub use listpack::ListpackWriter;
pub use module::type_name as module_type_name;
pub use reader::Reader;
pub use stream::{Consumer, ConsumerGroup, PendingEntry, Stream, StreamEntry, StreamId};

/// The newest RDB version this build reads (Redis 7.2).
pub const MAX_VERSION: u32 = 11;

/// Caps on what a length prefix may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string or blob (after LZF decompression). Default 512 MiB,
    /// Redis's own `proto-max-bulk-len` default.
    pub max_string: usize,
    /// Most elements in one value. Default 2^32.
    pub max_elements: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string: 512 << 20,
            max_elements: 1 << 32,
        }
    }
}

/// One key with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub db: u32,
    pub key: Bytes,
    /// Absolute expiry, Unix milliseconds (EXPIRETIME in seconds is scaled).
    pub expire_at_ms: Option<i64>,
    /// LRU idle seconds (IDLE opcode), when the primary uses an LRU policy.
    pub idle_secs: Option<u64>,
    /// LFU counter (FREQ opcode), when the primary uses an LFU policy.
    pub lfu_freq: Option<u8>,
    pub value: Value,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Integer-encoded strings rendered as decimal text, LZF decompressed.
    String(Bytes),
    /// Head to tail.
    List(Vec<Bytes>),
    Set(Vec<Bytes>),
    /// In stored order.
    Hash(Vec<(Bytes, Bytes)>),
    /// In stored order (ascending score for ziplist/listpack, descending
    /// for the skiplist types 3 and 5, as Redis saves them).
    ZSet(Vec<(Bytes, f64)>),
    Stream(Box<Stream>),
    /// A module-2 value, skipped via its opcodes; the name decoded from the module ID.
    Module {
        type_name: String,
    },
}
