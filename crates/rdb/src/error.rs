//! The one error type: what went wrong and at which byte of the input.

/// Why decoding stopped. Offsets count bytes from the start of the input
/// (for a DUMP payload, from the start of the payload).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying reader failed (not a short read: that is `Corrupt`).
    #[error("reading the RDB input failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes do not follow the RDB format (including input that ends early).
    #[error("RDB corrupt at byte {at}: {what}; nothing after it was loaded")]
    Corrupt { at: u64, what: String },
    /// Well-formed, but something this decoder cannot read (a module-1 value,
    /// a pre-release function record).
    #[error("RDB unsupported at byte {at}: {what}; nothing after it was loaded")]
    Unsupported { at: u64, what: String },
    /// A length in the input is beyond the configured [`crate::Limits`].
    #[error("RDB over a limit at byte {at}: {what}; nothing after it was loaded")]
    Limit { at: u64, what: String },
    /// The CRC-64 at the end does not match the bytes before it.
    #[error("RDB checksum mismatch: the input says {expected:#018x} but its bytes give {computed:#018x}; the data was damaged or cut")]
    Checksum { expected: u64, computed: u64 },
    /// Not an RDB ("REDIS" magic missing) or a version newer than this build reads.
    #[error("RDB version {found} is newer than this build reads (RDB versions 1 to {supported}, i.e. up to Redis 7.2)")]
    Version { found: u32, supported: u32 },
    /// `next_record` was called again after it returned an error.
    #[error("RDB decoding already stopped at an earlier error")]
    Stopped,
}

impl Error {
    pub(crate) fn corrupt(at: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            at,
            what: what.into(),
        }
    }
}

/// An error inside an in-memory blob (listpack, ziplist, intset, zipmap):
/// the byte offset inside the blob and what was wrong.
#[derive(Debug)]
pub(crate) struct BlobError {
    pub pos: usize,
    pub what: String,
}

impl BlobError {
    pub(crate) fn new(pos: usize, what: impl Into<String>) -> BlobError {
        BlobError {
            pos,
            what: what.into(),
        }
    }
}
