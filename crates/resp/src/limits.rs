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
/// Deepest nesting [`parse_frame`](crate::parse_frame) builds into a
/// [`Frame`](crate::Frame), whatever the limits allow. `parse_frame` itself
/// needs almost no stack at any depth, but a `Frame` is a tree that its
/// `Drop`, `Clone`, `PartialEq`, `Debug` and `encode` walk recursively, so a
/// deep one would overflow the stack of whoever touched it next. At this
/// depth all of them fit in 1 MiB, half a Tokio worker's stack, even
/// unoptimised (where `clone` takes about 1.5 KiB a level; tested). No reply
/// the proxy decodes for itself (handshakes, probes, `INFO`, `ACL GETUSER`,
/// near-cache fills, invalidations) nests more than a few levels; deeper
/// replies pass through as raw bytes measured by
/// [`frame_len`](crate::frame_len), which has no such bound.
pub const MAX_FRAME_NESTING: usize = 512;

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
    /// Limits for replies read from an upstream Redis. Redis's own replies
    /// must pass whatever their shape: a Lua script may return a table
    /// nested thousands deep, and refusing it would break the connection and
    /// fail every command behind it. So nesting is unbounded here:
    /// [`frame_len`](crate::frame_len) measures any depth with a heap stack
    /// (a word per level, and a level takes at least 4 bytes of reply), while
    /// [`parse_frame`](crate::parse_frame) still stops at
    /// [`MAX_FRAME_NESTING`].
    pub fn upstream() -> Self {
        Limits {
            max_bulk_len: usize::MAX >> 1,
            max_array_len: usize::MAX >> 1,
            max_nesting: usize::MAX,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
        }
    }
}
