//! Counters INFO reports (`INFO stats`), reset by CONFIG RESETSTAT.

/// Server-wide counters.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub commands_processed: u64,
    pub connections_received: u64,
    pub expired_keys: u64,
    pub evicted_keys: u64,
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub rejected_calls: u64,
    pub pubsub_messages: u64,
    /// Changes since start (INFO persistence `rdb_changes_since_last_save`).
    pub dirty: u64,
}

impl Stats {
    /// What CONFIG RESETSTAT clears (Redis keeps `dirty`).
    pub fn reset(&mut self) {
        let dirty = self.dirty;
        *self = Stats {
            dirty,
            ..Stats::default()
        };
    }
}
