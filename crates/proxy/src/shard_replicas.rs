//! In front of a Redis Cluster: a replica of the durable keyspaces per
//! primary ([`ShardReplicas`]).
//!
//! Each primary in the slot map gets a [`Replica`] of its own: its own
//! replication link (`PSYNC` to that node), its own copy. A key's copy is
//! the one of the primary the map names for its slot; while that primary
//! is unreachable the map still names it, and its copy (kept when the link
//! broke: the latest word Redis sent) seeds the outage's local store. Once
//! a replica is promoted, the map names it and it gets a copy of its own;
//! the old primary's copy is stopped and dropped once the map no longer
//! names it as a primary (no slot's key is looked up there any more).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use upstream::cluster::{key_slot, Cluster};

use crate::replica::{Replica, ReplicaStatus};

/// Makes the replica of one primary (`host:port`).
pub type MakeReplica = Box<dyn Fn(&str) -> Arc<Replica> + Send + Sync>;

/// How often the slot map is looked at for new primaries.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// One [`Replica`] per primary of a cluster.
pub struct ShardReplicas {
    cluster: Arc<Cluster>,
    by_node: Mutex<HashMap<String, Arc<Replica>>>,
    make: MakeReplica,
}

impl ShardReplicas {
    /// Starts a replica for every primary of `cluster`'s map, now and as
    /// primaries appear.
    pub fn spawn(cluster: Arc<Cluster>, make: MakeReplica) -> Arc<ShardReplicas> {
        let me = Arc::new(ShardReplicas {
            cluster,
            by_node: Mutex::default(),
            make,
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            loop {
                let Some(me) = weak.upgrade() else { return };
                me.follow_map();
                drop(me);
                tokio::time::sleep(WATCH_EVERY).await;
            }
        });
        me
    }

    fn follow_map(&self) {
        let map = self.cluster.map();
        if map.primaries().is_empty() {
            // Not learnt yet, or the last refresh found nothing: keep all.
            return;
        }
        let mut by_node = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        for p in map.primaries() {
            if !by_node.contains_key(p) {
                tracing::info!(primary = %p, "replica link to a cluster primary started");
                let r = (self.make)(p);
                r.quiet_gauges();
                by_node.insert(p.clone(), r);
            }
        }
        by_node.retain(|addr, r| {
            let keep = map.primaries().contains(addr);
            if !keep {
                tracing::info!(node = %addr, "no longer a cluster primary: its replica link stopped and its copy dropped");
                r.stop();
            }
            keep
        });
        // The copies' gauges as one copy's: keys and bytes summed, the
        // largest lag, the stalest link.
        use crate::metrics::*;
        let all: Vec<ReplicaStatus> = by_node.values().map(|r| r.status()).collect();
        drop(by_node);
        metrics::gauge!(REPLICA_KEYS).set(all.iter().map(|s| s.keys as f64).sum::<f64>());
        metrics::gauge!(REPLICA_BYTES).set(all.iter().map(|s| s.bytes as f64).sum::<f64>());
        if let Some(lag) = all.iter().filter_map(|s| s.lag_bytes).max() {
            metrics::gauge!(REPLICA_LAG).set(lag as f64);
        }
        if let Some(ms) = all.iter().filter_map(|s| s.last_io_ms_ago).max() {
            metrics::gauge!(REPLICA_LAST_IO).set(ms as f64 / 1000.0);
        }
    }

    /// The copy that answers for `key`: the one of its slot's primary.
    pub fn for_key(&self, key: &[u8]) -> Option<Arc<Replica>> {
        let map = self.cluster.map();
        let node = map.node(key_slot(key))?;
        self.by_node
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    }

    /// Each primary's copy, for `/status`.
    pub fn status(&self) -> Vec<(String, ReplicaStatus)> {
        let by_node = self.by_node.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = by_node
            .iter()
            .map(|(addr, r)| (addr.clone(), r.status()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
