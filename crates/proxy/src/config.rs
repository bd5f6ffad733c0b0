//! The `[limits]` section: what one client may cost.

use serde::{Deserialize, Serialize};

/// DESIGN `limits.command_timeout_ms`.
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 1000;
/// DESIGN `limits.max_clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// DESIGN `limits.max_inflight_per_client`.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
/// DESIGN `limits.max_query_buffer_bytes` (1 GiB).
pub const DEFAULT_MAX_QUERY_BUFFER: u64 = 1 << 30;
/// DESIGN `limits.max_output_buffer_bytes` (256 MiB).
pub const DEFAULT_MAX_OUTPUT_BUFFER: u64 = 256 << 20;
/// DESIGN `limits.proto_max_bulk_len` (512 MiB).
pub const DEFAULT_PROTO_MAX_BULK_LEN: u64 = 512 << 20;
/// DESIGN `limits.max_nesting`.
pub const DEFAULT_MAX_NESTING: usize = 128;
/// `limits.client_write_timeout_ms`: a client that reads none of its
/// replies for this long is disconnected, so it cannot hold them in
/// memory for ever.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_MS: u64 = 30_000;

/// Per-client limits, with sizes already in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsConfig {
    /// No client waits longer than this for a non-blocking command.
    pub command_timeout_ms: u64,
    /// Connections beyond this are answered with an error and closed.
    pub max_clients: usize,
    /// Commands one client may have waiting for replies; beyond it we stop
    /// reading from that client (backpressure, not an error).
    pub max_inflight_per_client: usize,
    /// Largest unparsed input held for one client.
    pub max_query_buffer_bytes: u64,
    /// A client whose unread replies exceed this is disconnected.
    pub max_output_buffer_bytes: u64,
    /// Largest bulk string accepted from a client.
    pub proto_max_bulk_len: u64,
    /// Deepest aggregate nesting accepted.
    pub max_nesting: usize,
    /// A client that takes none of its replies for this long is
    /// disconnected.
    pub client_write_timeout_ms: u64,
    /// While Redis is Down, a command that cannot be served locally waits
    /// up to this long for Redis to come back before `-UNAVAILABLE`, as a
    /// client library's offline queue would, but bounded. 0: refused at
    /// once.
    #[serde(default)]
    pub hold_during_outage_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            command_timeout_ms: DEFAULT_COMMAND_TIMEOUT_MS,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_inflight_per_client: DEFAULT_MAX_INFLIGHT,
            max_query_buffer_bytes: DEFAULT_MAX_QUERY_BUFFER,
            max_output_buffer_bytes: DEFAULT_MAX_OUTPUT_BUFFER,
            proto_max_bulk_len: DEFAULT_PROTO_MAX_BULK_LEN,
            max_nesting: DEFAULT_MAX_NESTING,
            client_write_timeout_ms: DEFAULT_CLIENT_WRITE_TIMEOUT_MS,
            hold_during_outage_ms: 0,
        }
    }
}

impl LimitsConfig {
    /// How long one write to a client may wait for it to read.
    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.client_write_timeout_ms)
    }

    /// Every problem with the values, with key names.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.command_timeout_ms == 0 {
            p.push("limits.command_timeout_ms must be at least 1".into());
        }
        if self.max_clients == 0 {
            p.push("limits.max_clients must be at least 1".into());
        }
        if self.max_inflight_per_client == 0 {
            p.push("limits.max_inflight_per_client must be at least 1".into());
        }
        if self.client_write_timeout_ms == 0 {
            p.push("limits.client_write_timeout_ms must be at least 1".into());
        }
        if self.max_nesting == 0 {
            p.push("limits.max_nesting must be at least 1".into());
        }
        if self.proto_max_bulk_len == 0 {
            p.push("limits.proto_max_bulk_len must be at least 1 byte".into());
        }
        if self.max_query_buffer_bytes < self.proto_max_bulk_len.min(1 << 30) {
            p.push(
                "limits.max_query_buffer_bytes must be at least limits.proto_max_bulk_len".into(),
            );
        }
        p
    }

    /// The decoder limits for client input.
    pub fn decoder(&self) -> resp::Limits {
        resp::Limits {
            max_bulk_len: self.proto_max_bulk_len.min(usize::MAX as u64) as usize,
            max_nesting: self.max_nesting,
            ..resp::Limits::default()
        }
    }
}
