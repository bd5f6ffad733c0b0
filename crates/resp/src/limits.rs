//! Decoder limits: the guard rails that keep a hostile or broken peer from
//! exhausting memory or the stack.

/// Bounds enforced while decoding. Defaults follow Redis's own
/// (`proto-max-bulk-len` 512 MiB, inline requests 64 KiB) and DESIGN's
/// `limits` section (nesting 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted, in bytes.
    pub max_bulk_len: usize,
    /// Largest number of elements in one array, map, set or push frame.
    pub max_array_len: usize,
    /// Deepest nesting of aggregates.
    pub max_nesting: usize,
    /// Longest inline command line (without the line ending).
    pub max_inline_len: usize,
}

/// Redis's `proto-max-bulk-len` default.
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Redis accepts multibulk lengths up to `INT_MAX`; we cap lower by default
/// because nothing legitimate sends a billion arguments.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 1 << 30;
/// DESIGN `limits.max_nesting`.
pub const DEFAULT_MAX_NESTING: usize = 128;
/// Redis's `PROTO_INLINE_MAX_SIZE`.
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            max_nesting: DEFAULT_MAX_NESTING,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
        }
    }
}

impl Limits {
    /// Limits for replies read from an upstream Redis: Redis is trusted to
    /// send well-formed data, but a deep reply still must not blow the stack.
    pub fn upstream() -> Self {
        Limits {
            max_bulk_len: usize::MAX >> 1,
            max_array_len: usize::MAX >> 1,
            max_nesting: 1024,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
        }
    }
}
