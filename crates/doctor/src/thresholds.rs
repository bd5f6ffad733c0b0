//! Tunable limits for the checks. Defaults are named constants so a
//! reader sees each number once, with where it comes from.

use serde::Serialize;

/// used/maxmemory ratio that warns (catalog A1).
pub const MEMORY_WARN_RATIO: f64 = 0.80;
/// used/maxmemory ratio that is critical (catalog A1).
pub const MEMORY_CRITICAL_RATIO: f64 = 0.95;
/// rss/host RAM ratio that warns when maxmemory is unset (A2, our guess).
pub const SYSTEM_MEMORY_WARN_RATIO: f64 = 0.80;
/// rss/host RAM ratio that is critical when maxmemory is unset (A2).
pub const SYSTEM_MEMORY_CRITICAL_RATIO: f64 = 0.90;
/// Share of sampled keys that must look like cache entries before a
/// noeviction policy is called wrong (A3, our guess).
pub const CACHE_LIKE_SHARE: f64 = 0.5;
/// Fragmentation ratio above which RSS waste is worth a look (A7).
pub const FRAGMENTATION_WARN_RATIO: f64 = 1.4;
/// Allocator fragmentation ratio that warns (A7).
pub const ALLOCATOR_FRAG_WARN_RATIO: f64 = 1.1;
/// Bytes of waste below which any ratio is harmless (A7, A8).
pub const FRAGMENTATION_MIN_BYTES: u64 = 10 * 1024 * 1024;
/// Data size under which fragmentation is not judged: the allocator's
/// fixed overhead dominates an almost empty instance (Redis's own memory
/// doctor uses the same cut-off).
pub const FRAGMENTATION_MIN_USED_BYTES: u64 = 5 * 1024 * 1024;
/// peak/used ratio that says RSS is left over from an old peak (A7).
pub const PEAK_RATIO_INFO: f64 = 1.5;
/// Fragmentation ratio under which Redis memory is probably swapped (A8).
pub const SWAPPED_RATIO: f64 = 1.0;
/// Seconds since the last successful save that is critical (A13).
pub const LAST_SAVE_MAX_AGE_SECS: u64 = 24 * 3600;
/// Unsaved changes that warn (A13, our guess).
pub const UNSAVED_CHANGES_WARN: u64 = 1_000_000;
/// Uptime under which a restart is reported (A14, our guess).
pub const RECENT_RESTART_SECS: u64 = 600;
/// connected/maxclients ratio that warns (A15, our guess).
pub const CLIENTS_WARN_RATIO: f64 = 0.80;
/// connected/maxclients ratio that is critical (A15, our guess).
pub const CLIENTS_CRITICAL_RATIO: f64 = 0.95;
/// Blocked clients that warn (A17, our guess).
pub const BLOCKED_CLIENTS_WARN: u64 = 10;
/// Idle seconds after which a connection counts as idle (A18).
pub const IDLE_CLIENT_SECS: u64 = 3600;
/// Idle connections that warn when `timeout` is 0 (A18, our guess).
pub const IDLE_CLIENTS_WARN: usize = 10;
/// Average output buffer per normal client that warns (A19).
pub const CLIENT_OUTPUT_AVG_WARN_BYTES: u64 = 200 * 1024;
/// Output buffer of one replica connection that warns (A19).
pub const REPLICA_OUTPUT_WARN_BYTES: u64 = 10 * 1024 * 1024;
/// Keys looked at by the SCAN sample (A3, A4, A20, A21).
pub const SCAN_SAMPLE_KEYS: usize = 1000;
/// Bytes above which a string is big (A21).
pub const BIG_STRING_BYTES: u64 = 100_000;
/// Fields above which a hash is big (A21).
pub const BIG_HASH_FIELDS: u64 = 5_000;
/// Elements above which a list, set, sorted set or stream is big (A21).
pub const BIG_COLLECTION_ITEMS: u64 = 1_000;
/// Keys in one database above which the keyspace itself is big (A21).
pub const MANY_KEYS: u64 = 1_000_000;
/// Replica lag in seconds that warns (A25; redis.conf's min-replicas-max-lag).
pub const REPLICA_LAG_WARN_SECS: u64 = 10;
/// Seconds without data from the master that are critical (A25; repl-timeout).
pub const MASTER_SILENCE_CRIT_SECS: u64 = 60;
/// Fork speed in GB/s under which forks are slow (A23).
pub const FORK_GB_PER_SEC_WARN: f64 = 10.0;
/// Memory below which fork speed is not judged (too small to measure).
pub const FORK_MIN_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Cached scripts that warn (A35).
pub const CACHED_SCRIPTS_WARN: u64 = 1000;

/// Every threshold the checks use; `Thresholds::default()` gives the
/// constants above.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Default [`MEMORY_WARN_RATIO`].
    pub memory_warn_ratio: f64,
    /// Default [`MEMORY_CRITICAL_RATIO`].
    pub memory_critical_ratio: f64,
    /// Default [`SYSTEM_MEMORY_WARN_RATIO`].
    pub system_memory_warn_ratio: f64,
    /// Default [`SYSTEM_MEMORY_CRITICAL_RATIO`].
    pub system_memory_critical_ratio: f64,
    /// Default [`CACHE_LIKE_SHARE`].
    pub cache_like_share: f64,
    /// Default [`FRAGMENTATION_WARN_RATIO`].
    pub fragmentation_warn_ratio: f64,
    /// Default [`ALLOCATOR_FRAG_WARN_RATIO`].
    pub allocator_frag_warn_ratio: f64,
    /// Default [`FRAGMENTATION_MIN_BYTES`].
    pub fragmentation_min_bytes: u64,
    /// Default [`FRAGMENTATION_MIN_USED_BYTES`].
    pub fragmentation_min_used_bytes: u64,
    /// Default [`PEAK_RATIO_INFO`].
    pub peak_ratio_info: f64,
    /// Default [`SWAPPED_RATIO`].
    pub swapped_ratio: f64,
    /// Default [`LAST_SAVE_MAX_AGE_SECS`].
    pub last_save_max_age_secs: u64,
    /// Default [`UNSAVED_CHANGES_WARN`].
    pub unsaved_changes_warn: u64,
    /// Default [`RECENT_RESTART_SECS`].
    pub recent_restart_secs: u64,
    /// Default [`CLIENTS_WARN_RATIO`].
    pub clients_warn_ratio: f64,
    /// Default [`CLIENTS_CRITICAL_RATIO`].
    pub clients_critical_ratio: f64,
    /// Default [`BLOCKED_CLIENTS_WARN`].
    pub blocked_clients_warn: u64,
    /// Default [`IDLE_CLIENT_SECS`].
    pub idle_client_secs: u64,
    /// Default [`IDLE_CLIENTS_WARN`].
    pub idle_clients_warn: usize,
    /// Default [`CLIENT_OUTPUT_AVG_WARN_BYTES`].
    pub client_output_avg_warn_bytes: u64,
    /// Default [`REPLICA_OUTPUT_WARN_BYTES`].
    pub replica_output_warn_bytes: u64,
    /// Default [`SCAN_SAMPLE_KEYS`].
    pub scan_sample_keys: usize,
    /// Default [`BIG_STRING_BYTES`].
    pub big_string_bytes: u64,
    /// Default [`BIG_HASH_FIELDS`].
    pub big_hash_fields: u64,
    /// Default [`BIG_COLLECTION_ITEMS`].
    pub big_collection_items: u64,
    /// Default [`MANY_KEYS`].
    pub many_keys: u64,
    /// Default [`REPLICA_LAG_WARN_SECS`].
    pub replica_lag_warn_secs: u64,
    /// Default [`MASTER_SILENCE_CRIT_SECS`].
    pub master_silence_crit_secs: u64,
    /// Default [`FORK_GB_PER_SEC_WARN`].
    pub fork_gb_per_sec_warn: f64,
    /// Default [`FORK_MIN_MEMORY_BYTES`].
    pub fork_min_memory_bytes: u64,
    /// Default [`CACHED_SCRIPTS_WARN`].
    pub cached_scripts_warn: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_warn_ratio: MEMORY_WARN_RATIO,
            memory_critical_ratio: MEMORY_CRITICAL_RATIO,
            system_memory_warn_ratio: SYSTEM_MEMORY_WARN_RATIO,
            system_memory_critical_ratio: SYSTEM_MEMORY_CRITICAL_RATIO,
            cache_like_share: CACHE_LIKE_SHARE,
            fragmentation_warn_ratio: FRAGMENTATION_WARN_RATIO,
            allocator_frag_warn_ratio: ALLOCATOR_FRAG_WARN_RATIO,
            fragmentation_min_bytes: FRAGMENTATION_MIN_BYTES,
            fragmentation_min_used_bytes: FRAGMENTATION_MIN_USED_BYTES,
            peak_ratio_info: PEAK_RATIO_INFO,
            swapped_ratio: SWAPPED_RATIO,
            last_save_max_age_secs: LAST_SAVE_MAX_AGE_SECS,
            unsaved_changes_warn: UNSAVED_CHANGES_WARN,
            recent_restart_secs: RECENT_RESTART_SECS,
            clients_warn_ratio: CLIENTS_WARN_RATIO,
            clients_critical_ratio: CLIENTS_CRITICAL_RATIO,
            blocked_clients_warn: BLOCKED_CLIENTS_WARN,
            idle_client_secs: IDLE_CLIENT_SECS,
            idle_clients_warn: IDLE_CLIENTS_WARN,
            client_output_avg_warn_bytes: CLIENT_OUTPUT_AVG_WARN_BYTES,
            replica_output_warn_bytes: REPLICA_OUTPUT_WARN_BYTES,
            scan_sample_keys: SCAN_SAMPLE_KEYS,
            big_string_bytes: BIG_STRING_BYTES,
            big_hash_fields: BIG_HASH_FIELDS,
            big_collection_items: BIG_COLLECTION_ITEMS,
            many_keys: MANY_KEYS,
            replica_lag_warn_secs: REPLICA_LAG_WARN_SECS,
            master_silence_crit_secs: MASTER_SILENCE_CRIT_SECS,
            fork_gb_per_sec_warn: FORK_GB_PER_SEC_WARN,
            fork_min_memory_bytes: FORK_MIN_MEMORY_BYTES,
            cached_scripts_warn: CACHED_SCRIPTS_WARN,
        }
    }
}
