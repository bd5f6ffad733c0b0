//! [`Vitals`]: the handful of numbers a person looks at before any
//! finding (memory, clients, ops/s, hit rate, evictions, latency), read
//! from the same INFO the checks use plus one timed PING.

use serde::Serialize;

use crate::checks::bytes;
use crate::snapshot::Snapshot;

/// Vital signs of the diagnosed server. Every field is optional: an old
/// Redis, or a Redoubt, may not report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Vitals {
    /// `used_memory`.
    pub used_memory: Option<u64>,
    /// `maxmemory` (0: no limit).
    pub maxmemory: Option<u64>,
    /// `connected_clients`.
    pub clients: Option<u64>,
    /// `maxclients`.
    pub maxclients: Option<u64>,
    /// `instantaneous_ops_per_sec`.
    pub ops_per_sec: Option<u64>,
    /// `keyspace_hits / (hits + misses)` since start, `None` before any read.
    pub hit_rate: Option<f64>,
    /// `evicted_keys` since start.
    pub evicted_keys: Option<u64>,
    /// Round trip of one PING, in microseconds.
    pub ping_us: Option<u64>,
}

impl Vitals {
    /// The vital signs in `snap`, with the PING round trip measured.
    pub(crate) fn read(snap: &Snapshot, ping_us: Option<u64>) -> Vitals {
        let hits = snap.u("keyspace_hits");
        let misses = snap.u("keyspace_misses");
        let hit_rate = match (hits, misses) {
            (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
            _ => None,
        };
        Vitals {
            used_memory: snap.u("used_memory"),
            maxmemory: snap.u("maxmemory"),
            clients: snap.u("connected_clients"),
            maxclients: snap
                .u("maxclients")
                .or_else(|| snap.cfg("maxclients")?.parse().ok()),
            ops_per_sec: snap.u("instantaneous_ops_per_sec"),
            hit_rate,
            evicted_keys: snap.u("evicted_keys"),
            ping_us,
        }
    }

    /// One line: `memory 1.2 MiB of 100.0 MiB (1%) · clients 3 of 10000 ·
    /// 12 ops/s · hit rate 93% · 0 evicted · ping 0.1 ms`. Unknown values
    /// are left out.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(used) = self.used_memory {
            parts.push(match self.maxmemory {
                Some(max) if max > 0 => format!(
                    "memory {} of {} ({:.0}%)",
                    bytes(used),
                    bytes(max),
                    used as f64 * 100.0 / max as f64
                ),
                _ => format!("memory {} (no maxmemory)", bytes(used)),
            });
        }
        if let Some(c) = self.clients {
            parts.push(match self.maxclients {
                Some(m) => format!("clients {c} of {m}"),
                None => format!("clients {c}"),
            });
        }
        if let Some(o) = self.ops_per_sec {
            parts.push(format!("{o} ops/s"));
        }
        parts.push(match self.hit_rate {
            Some(r) => format!("hit rate {:.0}%", r * 100.0),
            None => "hit rate - (no reads yet)".into(),
        });
        if let Some(e) = self.evicted_keys {
            parts.push(format!("{e} evicted"));
        }
        if let Some(us) = self.ping_us {
            parts.push(format!("ping {:.1} ms", us as f64 / 1000.0));
        }
        parts.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_naturally_and_leaves_out_what_is_unknown() {
        let v = Vitals {
            used_memory: Some(1536 * 1024),
            maxmemory: Some(100 * 1024 * 1024),
            clients: Some(3),
            maxclients: Some(10000),
            ops_per_sec: Some(12),
            hit_rate: Some(0.934),
            evicted_keys: Some(0),
            ping_us: Some(150),
        };
        assert_eq!(
            v.line(),
            "memory 1.5 MiB of 100.0 MiB (2%) · clients 3 of 10000 · 12 ops/s · hit rate 93% · 0 evicted · ping 0.1 ms"
        );
        let v = Vitals {
            used_memory: Some(1024),
            maxmemory: Some(0),
            ..Vitals::default()
        };
        assert_eq!(
            v.line(),
            "memory 1.0 KiB (no maxmemory) · hit rate - (no reads yet)"
        );
    }
}
