//! The doctor's checks as a table: one row per stable id, with what it
//! reads, the finding and the fix in our words, and a pure function of a
//! snapshot (`Snapshot`) that decides whether it fires and with which numbers.
//!
//! Catalog numbers (`A1`…`A35`) refer to the team's diagnosis reference;
//! `redoubt` marks checks of what Redoubt itself needs from Redis. Wording
//! here is our own.

use crate::finding::Finding;
use crate::severity::Severity;
use crate::snapshot::{parse_kv_list, SampledKey, Snapshot};
use crate::thresholds::Thresholds;

/// One check of a live Redis.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Stable id, `area.name`.
    pub id: &'static str,
    /// Entry in the diagnosis catalog this implements.
    pub catalog: &'static str,
    /// What it reads.
    pub reads: &'static str,
    /// When it fires and how bad, in words (threshold names refer to
    /// [`Thresholds`] fields).
    pub condition: &'static str,
    /// What is wrong when it fires.
    pub title: &'static str,
    /// What to do.
    pub fix: &'static str,
    /// Needs Redis on this machine (reads `/proc` or `/sys`).
    pub host: bool,
    eval: fn(&Snapshot, &Thresholds) -> Option<Hit>,
}

/// A check that fired: how bad, and the measured values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    /// Replaces the check's title when the same check covers a worse
    /// state that needs other words (over maxmemory, not close to it).
    pub title: Option<String>,
    pub severity: Severity,
    pub detail: String,
}

fn hit(severity: Severity, detail: impl Into<String>) -> Option<Hit> {
    Some(Hit {
        title: None,
        severity,
        detail: detail.into(),
    })
}

impl Check {
    /// Runs the check on a snapshot.
    pub(crate) fn run(&self, snap: &Snapshot, t: &Thresholds) -> Option<Finding> {
        (self.eval)(snap, t).map(|h| Finding {
            id: self.id.to_string(),
            severity: h.severity,
            title: h.title.unwrap_or_else(|| self.title.to_string()),
            detail: h.detail,
            fix: self.fix.to_string(),
            causes: Vec::new(),
        })
    }
}

/// Every check, in catalog order.
pub fn checks() -> &'static [Check] {
    CHECKS
}

/// Redis release lines with security support, newest first (SECURITY.md
/// as of late 2024; 8.x lines were released after it and count as
/// supported). Anything at or above the first row is taken as supported.
pub const SUPPORTED_VERSIONS: &[(u32, u32)] = &[(8, 0), (7, 4), (7, 2), (6, 2)];

/// Checks that are about `redis-server` itself (its RDB/AOF, release
/// line, fork, the host tuning that fork needs, its latency monitor) and
/// say nothing true about a standalone Redoubt, which journals every
/// write and answers INFO and CONFIG with its own fields: not run against
/// it.
pub const NOT_FOR_REDOUBT: &[&str] = &[
    "persistence.off",
    "persistence.bgsave-failed",
    "persistence.aof-errors",
    "persistence.stale-snapshot",
    "server.version",
    "latency.monitor-off",
    "latency.slow-fork",
    "memory.fragmentation",
    "host.thp",
    "host.overcommit",
    "host.somaxconn",
    "redoubt.replica-grant",
    "scripts.cached",
    // Redoubt answers CONFIG GET bind with redis-server's default, not its
    // own `listen`; its exposure is governed by `[auth]` and `admin.token`.
    "security.exposed-no-auth",
];

/// Key prefixes that hold sessions: losing or never expiring them hurts users.
const SESSION_PREFIXES: &[&str] = &["sess:", "session:"];
/// Key prefixes of job queues (BullMQ), which must never be evicted.
const QUEUE_PREFIXES: &[&str] = &["bull:"];
/// Key prefixes of plain caches.
const CACHE_PREFIXES: &[&str] = &["cache:"];

static CHECKS: &[Check] = &[
    Check {
        id: "memory.near-maxmemory",
        catalog: "A1",
        reads: "INFO memory used_memory, maxmemory, maxmemory_policy; INFO errorstats errorstat_OOM",
        condition: "maxmemory > 0 and used/maxmemory ≥ memory_warn_ratio (warn) or ≥ memory_critical_ratio (critical); at or over maxmemory, or at the critical ratio under noeviction with OOM errors counted, critical and titled 'over maxmemory'",
        title: "Memory is close to maxmemory",
        fix: "Look for big keys (keys.big), then raise maxmemory or pick an eviction policy that fits the data; at the limit writes fail with OOM or keys get evicted.",
        host: false,
        eval: |s, t| {
            let max = s.u("maxmemory").filter(|m| *m > 0)?;
            let used = s.u("used_memory")?;
            let r = used as f64 / max as f64;
            let sev = if r >= t.memory_critical_ratio {
                Severity::Critical
            } else if r >= t.memory_warn_ratio {
                Severity::Warn
            } else {
                return None;
            };
            let numbers = format!("used_memory {} of maxmemory {} ({:.0}%)", bytes(used), bytes(max), r * 100.0);
            let policy = s.s("maxmemory_policy").or_else(|| s.cfg("maxmemory-policy")).unwrap_or("noeviction");
            // A refused write frees its arguments, so right after an OOM
            // used_memory can read just under the limit: OOM errors counted
            // (INFO errorstats, Redis 6.2+) near it mean the same thing.
            let ooms = s.s("errorstat_OOM").and_then(|v| v.strip_prefix("count=")?.parse::<u64>().ok()).unwrap_or(0);
            let refusing = policy == "noeviction" && r >= t.memory_critical_ratio && ooms > 0;
            if used < max && !refusing {
                return hit(sev, numbers);
            }
            // At or past the limit Redis no longer "gets close": under
            // noeviction every write that needs memory fails with OOM now,
            // otherwise each write evicts first.
            let numbers = if ooms > 0 { format!("{numbers}, {ooms} writes refused with OOM since start") } else { numbers };
            let (title, what) = if policy == "noeviction" {
                ("Redis is over maxmemory — writes are being refused", "writes that need memory fail with OOM")
            } else {
                ("Redis is over maxmemory — keys are being evicted", "every write evicts keys first; writes fail with OOM once nothing evictable is left")
            };
            Some(Hit { title: Some(title.into()), severity: Severity::Critical, detail: format!("{numbers}, maxmemory-policy {policy}: {what}") })
        },
    },
    Check {
        id: "memory.no-limit",
        catalog: "A2",
        reads: "INFO memory maxmemory, used_memory_rss, total_system_memory",
        condition: "maxmemory = 0 and rss/host RAM ≥ system_memory_warn_ratio (warn) or > system_memory_critical_ratio (critical)",
        title: "No maxmemory set and Redis is using most of the host's RAM",
        fix: "Set maxmemory below the RAM Redis may use (leave room for fork copy-on-write and the OS), e.g. 80% of the memory available to it; in a container also compare with its memory limit.",
        host: false,
        eval: |s, t| {
            if s.u("maxmemory")? != 0 {
                return None;
            }
            let rss = s.u("used_memory_rss")?;
            let total = s.u("total_system_memory").filter(|m| *m > 0)?;
            let r = rss as f64 / total as f64;
            let sev = if r > t.system_memory_critical_ratio {
                Severity::Critical
            } else if r >= t.system_memory_warn_ratio {
                Severity::Warn
            } else {
                return None;
            };
            hit(sev, format!("maxmemory 0 (no limit); rss {} of {} host RAM ({:.0}%)", bytes(rss), bytes(total), r * 100.0))
        },
    },
    Check {
        id: "memory.noeviction-cache",
        catalog: "A3",
        reads: "CONFIG maxmemory-policy; SCAN sample with TTL; INFO memory",
        condition: "policy noeviction, used ≥ memory_warn_ratio of maxmemory, and ≥ cache_like_share of sampled keys have a TTL or a cache: prefix (warn)",
        title: "Cache-like data under the noeviction policy, close to the limit",
        fix: "If this data can be recomputed, use allkeys-lru (or allkeys-lfu) so old entries make room; under noeviction writes start failing with OOM at the limit.",
        host: false,
        eval: |s, t| {
            if s.cfg("maxmemory-policy")? != "noeviction" {
                return None;
            }
            let max = s.u("maxmemory").filter(|m| *m > 0)?;
            let used = s.u("used_memory")?;
            if (used as f64 / max as f64) < t.memory_warn_ratio || s.keys.is_empty() {
                return None;
            }
            let cache_like = s.keys.iter().filter(|k| is_cache_like(k)).count();
            let share = cache_like as f64 / s.keys.len() as f64;
            if share < t.cache_like_share {
                return None;
            }
            hit(
                Severity::Warn,
                format!(
                    "policy noeviction, used {:.0}% of maxmemory; {cache_like} of {} sampled keys have a TTL or a cache prefix",
                    used as f64 / max as f64 * 100.0,
                    s.keys.len()
                ),
            )
        },
    },
    Check {
        id: "memory.evicting-sessions",
        catalog: "A4",
        reads: "CONFIG maxmemory-policy; SCAN sample for sess:/session:/bull: keys; INFO stats evicted_keys",
        condition: "an allkeys-* policy, evicted_keys > 0 and sess:/session:/bull: keys in the sample (critical)",
        title: "Sessions or queued jobs are being evicted",
        fix: "Keep sessions and job queues out of allkeys-* eviction: give them their own instance with noeviction (BullMQ requires it), or use volatile-lru with TTLs only on cache keys.",
        host: false,
        eval: |s, _| {
            let policy = s.cfg("maxmemory-policy")?;
            let evicted = s.u("evicted_keys")?;
            if !policy.starts_with("allkeys-") || evicted == 0 {
                return None;
            }
            let precious: Vec<&str> = s
                .keys
                .iter()
                .filter(|k| has_prefix(&k.name, SESSION_PREFIXES) || has_prefix(&k.name, QUEUE_PREFIXES))
                .map(|k| k.name.as_str())
                .take(3)
                .collect();
            if precious.is_empty() {
                return None;
            }
            hit(Severity::Critical, format!("policy {policy}, {evicted} keys evicted, sessions/jobs present (e.g. {})", precious.join(", ")))
        },
    },
    Check {
        id: "memory.evictions",
        catalog: "A5",
        reads: "INFO stats evicted_keys",
        condition: "evicted_keys > 0, or grew since the baseline (warn)",
        title: "Redis has been evicting keys to stay under maxmemory",
        fix: "Memory is full enough that keys are dropped. If that is intended (a cache) watch the rate; otherwise raise maxmemory, shrink big keys, or move durable data elsewhere.",
        host: false,
        eval: |s, _| {
            let n = s.u("evicted_keys").filter(|n| *n > 0)?;
            if let Some(before) = s.baseline().and_then(|b| b.evicted_keys) {
                let d = n.saturating_sub(before);
                return (d > 0).then(|| Hit { title: None, severity: Severity::Warn, detail: format!("{d} keys evicted since the previous diagnosis ({n} since start)") });
            }
            let up = s.u("uptime_in_seconds").unwrap_or(0);
            hit(Severity::Warn, format!("{n} keys evicted in {} of uptime", duration(up)))
        },
    },
    Check {
        id: "memory.expire-storm",
        catalog: "A6",
        reads: "LATENCY LATEST expire-cycle; INFO stats expired_keys",
        condition: "LATENCY LATEST has an expire-cycle event (warn)",
        title: "Mass expiry is blocking the server",
        fix: "Many keys expire in the same moment. Add random jitter to TTLs so expiry spreads out.",
        host: false,
        eval: |s, _| {
            let e = s.latency.iter().find(|e| e.event == "expire-cycle")?;
            hit(
                Severity::Warn,
                format!("expire-cycle latency {} ms (max {} ms); expired_keys {}", e.latest_ms, e.max_ms, s.u("expired_keys").unwrap_or(0)),
            )
        },
    },
    Check {
        id: "memory.fragmentation",
        catalog: "A7",
        reads: "INFO memory mem_fragmentation_ratio/bytes, allocator_frag_ratio/bytes, used_memory_peak",
        condition: "used ≥ fragmentation_min_used_bytes and fragmentation or allocator fragmentation above its ratio with more than fragmentation_min_bytes wasted (warn), or peak/used > peak_ratio_info (info)",
        title: "Resident memory is well above what the data needs",
        fix: "If the peak was long ago, MEMORY PURGE (or a restart) gives it back; if the allocator is fragmented, enable activedefrag yes.",
        host: false,
        eval: |s, t| {
            let used = s.u("used_memory").filter(|u| *u >= t.fragmentation_min_used_bytes)?;
            let rss = s.u("used_memory_rss").unwrap_or(0);
            let ratio = s.f("mem_fragmentation_ratio").unwrap_or(0.0);
            let frag_bytes = s.u("mem_fragmentation_bytes").unwrap_or(rss.saturating_sub(used));
            if ratio > t.fragmentation_warn_ratio && frag_bytes > t.fragmentation_min_bytes {
                return hit(Severity::Warn, format!("mem_fragmentation_ratio {ratio:.2} ({} beyond the data)", bytes(frag_bytes)));
            }
            let a_ratio = s.f("allocator_frag_ratio").unwrap_or(0.0);
            let a_bytes = s.u("allocator_frag_bytes").unwrap_or(0);
            if a_ratio > t.allocator_frag_warn_ratio && a_bytes > t.fragmentation_min_bytes {
                return hit(Severity::Warn, format!("allocator_frag_ratio {a_ratio:.2} ({} fragmented)", bytes(a_bytes)));
            }
            let peak = s.u("used_memory_peak").unwrap_or(0);
            if used > 0 && peak as f64 / used as f64 > t.peak_ratio_info && peak - used > t.fragmentation_min_bytes {
                return hit(Severity::Info, format!("used_memory {} but peak {}: memory held from an old peak", bytes(used), bytes(peak)));
            }
            None
        },
    },
    Check {
        id: "memory.swapped",
        catalog: "A8",
        reads: "INFO memory mem_fragmentation_ratio, used_memory, used_memory_rss",
        condition: "fragmentation ratio < swapped_ratio with more than fragmentation_min_bytes missing from RSS (critical)",
        title: "Part of Redis's memory seems to be swapped out",
        fix: "Resident memory is below what Redis allocated, so the OS moved pages to swap: expect slow replies. Add RAM or lower maxmemory, and check swap usage (host.swap).",
        host: false,
        eval: |s, t| {
            let used = s.u("used_memory").filter(|u| *u >= t.fragmentation_min_used_bytes)?;
            let rss = s.u("used_memory_rss")?;
            let ratio = s.f("mem_fragmentation_ratio").unwrap_or(rss as f64 / used.max(1) as f64);
            if ratio >= t.swapped_ratio || used.saturating_sub(rss) <= t.fragmentation_min_bytes {
                return None;
            }
            hit(Severity::Critical, format!("used_memory {} but rss {} (ratio {ratio:.2})", bytes(used), bytes(rss)))
        },
    },
    Check {
        id: "host.swap",
        catalog: "A9",
        reads: "/proc/<redis pid>/status VmSwap",
        condition: "local Redis with VmSwap > 0 (critical)",
        title: "Redis memory is in swap",
        fix: "Every access to a swapped page waits for the disk. Free RAM (lower maxmemory, move other processes) so Redis stays resident; keep swap enabled as a safety net against the OOM killer.",
        host: true,
        eval: |s, _| {
            let kb = s.host.as_ref()?.redis_swap_kb.filter(|k| *k > 0)?;
            hit(Severity::Critical, format!("{} of the redis-server process is swapped out", bytes(kb * 1024)))
        },
    },
    Check {
        id: "persistence.off",
        catalog: "A10",
        reads: "CONFIG save, appendonly; INFO replication role, connected_slaves",
        condition: "save \"\" and appendonly no (info; warn on a master with replicas)",
        title: "Persistence is off: a restart loses every key",
        fix: "Enable RDB snapshots (CONFIG SET save \"3600 1 300 100\") or AOF (appendonly yes) unless this is a pure cache. A master without persistence that restarts empty also empties its replicas.",
        host: false,
        eval: |s, _| {
            let save = s.cfg("save")?;
            let aof = s.cfg("appendonly")?;
            if !save.trim().is_empty() || aof != "no" {
                return None;
            }
            let replicas = s.u("connected_slaves").unwrap_or(0);
            if s.s("role") == Some("master") && replicas > 0 {
                return hit(Severity::Warn, format!("save \"\" and appendonly no on a master with {replicas} replicas"));
            }
            hit(Severity::Info, "save \"\" and appendonly no")
        },
    },
    Check {
        id: "persistence.bgsave-failed",
        catalog: "A11",
        reads: "INFO persistence rdb_last_bgsave_status; CONFIG stop-writes-on-bgsave-error",
        condition: "rdb_last_bgsave_status:err (critical)",
        title: "The last background save failed",
        fix: "Read the server log for the save error: the dir is not writable or gone, the disk is full, or fork failed for lack of memory (see host.overcommit). Fix that and run BGSAVE. Only as a stop-gap: CONFIG SET stop-writes-on-bgsave-error no.",
        host: false,
        eval: |s, _| {
            if s.s("rdb_last_bgsave_status")? != "err" {
                return None;
            }
            let stops = s.cfg("stop-writes-on-bgsave-error") == Some("yes") && !s.cfg("save").unwrap_or("").trim().is_empty();
            let effect = if stops { "writes are refused with MISCONF" } else { "writes still accepted, but nothing is being saved" };
            hit(Severity::Critical, format!("rdb_last_bgsave_status:err; {effect}"))
        },
    },
    Check {
        id: "persistence.aof-errors",
        catalog: "A12",
        reads: "INFO persistence aof_last_write_status, aof_last_bgrewrite_status, aof_delayed_fsync",
        condition: "aof_last_write_status:err (critical), aof_last_bgrewrite_status:err or aof_delayed_fsync > 0 (warn)",
        title: "The append-only file is failing or slow",
        fix: "Check free disk space and disk latency where the AOF lives; a failed AOF write makes Redis refuse writes until it succeeds again.",
        host: false,
        eval: |s, _| {
            let mut parts = Vec::new();
            let mut sev = Severity::Ok;
            if s.s("aof_last_write_status") == Some("err") {
                parts.push("aof_last_write_status:err (writes refused)".to_string());
                sev = Severity::Critical;
            }
            if s.s("aof_last_bgrewrite_status") == Some("err") {
                parts.push("aof_last_bgrewrite_status:err".to_string());
                sev = sev.max(Severity::Warn);
            }
            if let Some(n) = s.u("aof_delayed_fsync").filter(|n| *n > 0) {
                parts.push(format!("aof_delayed_fsync {n}"));
                sev = sev.max(Severity::Warn);
            }
            if parts.is_empty() {
                return None;
            }
            hit(sev, parts.join("; "))
        },
    },
    Check {
        id: "persistence.stale-snapshot",
        catalog: "A13",
        reads: "INFO persistence rdb_last_save_time, rdb_changes_since_last_save; CONFIG save, appendonly",
        condition: "RDB on and AOF off: last save older than last_save_max_age_secs (critical) or more than unsaved_changes_warn changes (warn)",
        title: "The last snapshot is old: a crash now loses recent writes",
        fix: "Find why snapshots stopped (persistence.bgsave-failed, the server log), run BGSAVE, and keep an off-host copy of the latest dump.",
        host: false,
        eval: |s, t| {
            // With AOF on, the snapshot age says little about what a crash loses.
            if s.cfg("save")?.trim().is_empty() || s.cfg("appendonly") == Some("yes") {
                return None;
            }
            let last = s.u("rdb_last_save_time")?;
            let age = s.now().saturating_sub(last);
            let changes = s.u("rdb_changes_since_last_save").unwrap_or(0);
            if age > t.last_save_max_age_secs {
                return hit(Severity::Critical, format!("last successful save {} ago; {changes} changes not saved", duration(age)));
            }
            if changes > t.unsaved_changes_warn {
                return hit(Severity::Warn, format!("{changes} changes since the last save {} ago", duration(age)));
            }
            None
        },
    },
    Check {
        id: "server.loading",
        catalog: "A14",
        reads: "INFO persistence loading, loading_loaded_perc, loading_eta_seconds",
        condition: "loading:1 (critical)",
        title: "Redis is loading its dataset and answers LOADING",
        fix: "Wait for the load to finish (see the ETA); then find out why it restarted (redoubt triage on its log).",
        host: false,
        eval: |s, _| {
            if s.s("loading")? != "1" {
                return None;
            }
            hit(
                Severity::Critical,
                format!(
                    "loading {}% done, about {} left",
                    s.s("loading_loaded_perc").unwrap_or("?"),
                    duration(s.u("loading_eta_seconds").unwrap_or(0))
                ),
            )
        },
    },
    Check {
        id: "server.recent-restart",
        catalog: "A14",
        reads: "INFO server uptime_in_seconds",
        condition: "uptime < recent_restart_secs (info)",
        title: "Redis restarted recently",
        fix: "If nobody restarted it on purpose, read the end of the previous server log (crash, OOM kill, orchestrator) with redoubt triage.",
        host: false,
        eval: |s, t| {
            let up = s.u("uptime_in_seconds")?;
            (up < t.recent_restart_secs).then(|| Hit { title: None, severity: Severity::Info, detail: format!("uptime {}", duration(up)) })
        },
    },
    Check {
        id: "clients.near-maxclients",
        catalog: "A15",
        reads: "INFO clients connected_clients, maxclients",
        condition: "connected/maxclients ≥ clients_warn_ratio (warn) or ≥ clients_critical_ratio (critical)",
        title: "Connections are close to maxclients",
        fix: "Reuse connections through a pool instead of one per request, look for leaks in CLIENT LIST (group by addr), and check that the file-descriptor limit did not lower maxclients.",
        host: false,
        eval: |s, t| {
            let max = s.u("maxclients").or_else(|| s.cfg("maxclients")?.parse().ok()).filter(|m| *m > 0)?;
            let n = s.u("connected_clients")?;
            let r = n as f64 / max as f64;
            let sev = if r >= t.clients_critical_ratio {
                Severity::Critical
            } else if r >= t.clients_warn_ratio {
                Severity::Warn
            } else {
                return None;
            };
            hit(sev, format!("{n} of maxclients {max} connected ({:.0}%)", r * 100.0))
        },
    },
    Check {
        id: "clients.rejected",
        catalog: "A16",
        reads: "INFO stats rejected_connections",
        condition: "rejected_connections grew since the baseline (critical), or > 0 without a baseline (warn)",
        title: "Connections were refused: max number of clients reached",
        fix: "Clients saw 'max number of clients reached'. Find who holds the connections (CLIENT LIST by addr), fix the leak or pool size, then raise maxclients if really needed.",
        host: false,
        eval: |s, _| {
            let n = s.u("rejected_connections").filter(|n| *n > 0)?;
            // Only new refusals are an emergency; an old count that no
            // longer grows is history, reported as a warning.
            if let Some(before) = s.baseline().and_then(|b| b.rejected_connections) {
                let d = n.saturating_sub(before);
                return (d > 0).then(|| Hit { title: None, severity: Severity::Critical, detail: format!("{d} connections refused since the previous diagnosis") });
            }
            let up = s.u("uptime_in_seconds").unwrap_or(0);
            hit(Severity::Warn, format!("{n} connections refused in {} of uptime (diagnose again to see whether it continues)", duration(up)))
        },
    },
    Check {
        id: "clients.blocked",
        catalog: "A17",
        reads: "INFO clients blocked_clients",
        condition: "blocked_clients ≥ blocked_clients_warn (warn) or > 0 (info)",
        title: "Clients are parked in blocking commands",
        fix: "Each BLPOP/XREAD BLOCK holds a connection; size the client pool for them or give blocking consumers their own connections.",
        host: false,
        eval: |s, t| {
            let n = s.u("blocked_clients").filter(|n| *n > 0)?;
            let keys = s.u("total_blocking_keys").map(|k| format!(" on {k} keys")).unwrap_or_default();
            let sev = if n >= t.blocked_clients_warn { Severity::Warn } else { Severity::Info };
            hit(sev, format!("{n} blocked clients{keys}"))
        },
    },
    Check {
        id: "clients.idle",
        catalog: "A18",
        reads: "CONFIG timeout; CLIENT LIST idle",
        condition: "timeout 0 and at least idle_clients_warn non-subscriber clients idle ≥ idle_client_secs (warn)",
        title: "Many idle connections and no server timeout",
        fix: "Connections that sit idle are usually leaked. Set CONFIG SET timeout 300 (subscribers are exempt) and find the owner by addr or name.",
        host: false,
        eval: |s, t| {
            if s.cfg("timeout")? != "0" {
                return None;
            }
            let idle: Vec<_> = s
                .clients
                .iter()
                .filter(|c| c.idle >= t.idle_client_secs && c.subs == 0 && !c.flags.contains('S') && !c.flags.contains('M'))
                .collect();
            if idle.len() < t.idle_clients_warn {
                return None;
            }
            let mut by_host: std::collections::BTreeMap<&str, usize> = Default::default();
            for c in &idle {
                *by_host.entry(c.addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&c.addr)).or_default() += 1;
            }
            let mut top: Vec<_> = by_host.into_iter().collect();
            top.sort_by_key(|e| std::cmp::Reverse(e.1));
            let top: Vec<String> = top.iter().take(3).map(|(h, n)| format!("{h} ×{n}")).collect();
            hit(
                Severity::Warn,
                format!("timeout 0; {} clients idle ≥ {} (most from {})", idle.len(), duration(t.idle_client_secs), top.join(", ")),
            )
        },
    },
    Check {
        id: "clients.output-buffers",
        catalog: "A19",
        reads: "CLIENT LIST omem, flags, cmd",
        condition: "a replica's omem > replica_output_warn_bytes, or the normal clients' average omem > client_output_avg_warn_bytes (warn)",
        title: "Large client output buffers",
        fix: "A slow pub/sub consumer, a huge reply (KEYS, HGETALL on a big hash) or a lagging replica is piling up data in Redis. Find the client by addr/cmd; tune client-output-buffer-limit.",
        host: false,
        eval: |s, t| {
            let replicas: Vec<_> = s.clients.iter().filter(|c| c.flags.contains('S') && c.omem > t.replica_output_warn_bytes).collect();
            if let Some(r) = replicas.first() {
                return hit(Severity::Warn, format!("replica {} has {} waiting in its output buffer", r.addr, bytes(r.omem)));
            }
            let normal: Vec<_> = s.clients.iter().filter(|c| !c.flags.contains('S') && !c.flags.contains('M')).collect();
            if normal.is_empty() {
                return None;
            }
            let total: u64 = normal.iter().map(|c| c.omem).sum();
            let avg = total / normal.len() as u64;
            if avg <= t.client_output_avg_warn_bytes {
                return None;
            }
            let worst = normal.iter().max_by_key(|c| c.omem)?;
            hit(
                Severity::Warn,
                format!("average {} per client; largest {} at {} (cmd={})", bytes(avg), bytes(worst.omem), worst.addr, worst.cmd),
            )
        },
    },
    Check {
        id: "keys.session-no-ttl",
        catalog: "A20",
        reads: "SCAN sample of sess:*/session:* keys with TTL",
        condition: "a sampled sess:/session: key without TTL (warn)",
        title: "Session keys without expiry",
        fix: "Sessions that never expire only grow memory. Set a TTL when writing them (SET ... EX, or EXPIRE after HSET).",
        host: false,
        eval: |s, _| {
            let no_ttl: Vec<&SampledKey> = s.keys.iter().filter(|k| has_prefix(&k.name, SESSION_PREFIXES) && k.ttl == -1).collect();
            if no_ttl.is_empty() {
                return None;
            }
            let sessions = s.keys.iter().filter(|k| has_prefix(&k.name, SESSION_PREFIXES)).count();
            let ex: Vec<&str> = no_ttl.iter().take(3).map(|k| k.name.as_str()).collect();
            hit(Severity::Warn, format!("{} of {sessions} sampled session keys have no TTL (e.g. {})", no_ttl.len(), ex.join(", ")))
        },
    },
    Check {
        id: "keys.big",
        catalog: "A21",
        reads: "SCAN sample + STRLEN/HLEN/LLEN/SCARD/ZCARD/XLEN; DBSIZE",
        condition: "a sampled key over big_string_bytes / big_hash_fields / big_collection_items, or db0 over many_keys (warn)",
        title: "Big keys",
        fix: "Deleting, expiring or evicting a big key blocks Redis while it is freed. Split it into smaller keys, and remove it with UNLINK rather than DEL.",
        host: false,
        eval: |s, t| {
            let mut big: Vec<(&SampledKey, u64)> = s
                .keys
                .iter()
                .filter_map(|k| {
                    let size = k.size?;
                    let limit = match k.kind.as_str() {
                        "string" => t.big_string_bytes,
                        "hash" => t.big_hash_fields,
                        _ => t.big_collection_items,
                    };
                    (size > limit).then_some((k, size))
                })
                .collect();
            big.sort_by_key(|e| std::cmp::Reverse(e.1));
            let many = s.info.get("db0").and_then(|v| parse_kv_list(v).get("keys").and_then(|k| k.parse::<u64>().ok())).filter(|n| *n > t.many_keys);
            if big.is_empty() && many.is_none() {
                return None;
            }
            let mut parts: Vec<String> = big
                .iter()
                .take(5)
                .map(|(k, n)| format!("{} ({} {})", k.name, k.kind, if k.kind == "string" { bytes(*n) } else { format!("{n} items") }))
                .collect();
            if big.len() > 5 {
                parts.push(format!("and {} more in the sample", big.len() - 5));
            }
            if let Some(n) = many {
                parts.push(format!("db0 holds {n} keys"));
            }
            hit(Severity::Warn, parts.join("; "))
        },
    },
    Check {
        id: "slowlog.entries",
        catalog: "A22",
        reads: "SLOWLOG LEN, SLOWLOG GET; CONFIG slowlog-log-slower-than",
        condition: "SLOWLOG has entries not made by the doctor (warn)",
        title: "Slow commands were logged",
        fix: "Each entry blocked every other client while it ran. Replace KEYS with SCAN, avoid whole-collection reads on big keys, and look at SLOWLOG GET for the callers.",
        host: false,
        eval: |s, _| {
            let n = s.slowlog_len.filter(|n| *n > 0)?;
            if s.slowlog.is_empty() {
                return None;
            }
            let mut worst: Vec<_> = s.slowlog.iter().collect();
            worst.sort_by_key(|e| std::cmp::Reverse(e.micros));
            let list: Vec<String> = worst.iter().take(3).map(|e| format!("{} {} µs", e.command, e.micros)).collect();
            let keys = if s.slowlog.iter().any(|e| e.command.eq_ignore_ascii_case("keys")) { "; KEYS was used" } else { "" };
            let thr = s.cfg("slowlog-log-slower-than").map(|v| format!(" (threshold {v} µs)")).unwrap_or_default();
            hit(Severity::Warn, format!("{n} entries{thr}; slowest: {}{keys}", list.join(", ")))
        },
    },
    Check {
        id: "latency.monitor-off",
        catalog: "A23",
        reads: "CONFIG latency-monitor-threshold",
        condition: "latency-monitor-threshold 0 (info)",
        title: "The latency monitor is off",
        fix: "Turn it on to see what stalls Redis: CONFIG SET latency-monitor-threshold 100 (milliseconds).",
        host: false,
        eval: |s, _| (s.cfg("latency-monitor-threshold")? == "0").then(|| Hit { title: None, severity: Severity::Info, detail: "latency-monitor-threshold 0".into() }),
    },
    Check {
        id: "latency.events",
        catalog: "A23",
        reads: "LATENCY LATEST",
        condition: "LATENCY LATEST has events (warn)",
        title: "Redis recorded latency spikes",
        fix: "Match each event to its cause: fork → big dataset or slow fork (THP, VM); command → slow commands (slowlog); fast-command → CPU steal or swap; aof-* → slow disk; expire-cycle / eviction-* → mass expiry or eviction.",
        host: false,
        eval: |s, _| {
            if s.latency.is_empty() {
                return None;
            }
            let list: Vec<String> = s.latency.iter().map(|e| format!("{} latest {} ms, max {} ms", e.event, e.latest_ms, e.max_ms)).collect();
            hit(Severity::Warn, list.join("; "))
        },
    },
    Check {
        id: "latency.slow-fork",
        catalog: "A23",
        reads: "INFO stats latest_fork_usec; INFO memory used_memory",
        condition: "used ≥ fork_min_memory_bytes and fork speed < fork_gb_per_sec_warn (warn)",
        title: "Forking is slow",
        fix: "A slow fork stalls Redis at every BGSAVE and full sync. Disable transparent huge pages, prefer bare metal or HVM instances, or keep the dataset smaller.",
        host: false,
        eval: |s, t| {
            let usec = s.u("latest_fork_usec").filter(|u| *u > 0)?;
            let used = s.u("used_memory").filter(|u| *u >= t.fork_min_memory_bytes)?;
            let gbps = used as f64 / 1e9 / (usec as f64 / 1e6);
            (gbps < t.fork_gb_per_sec_warn)
                .then(|| Hit { title: None, severity: Severity::Warn, detail: format!("last fork took {} ms for {} ({gbps:.1} GB/s)", usec / 1000, bytes(used)) })
        },
    },
    Check {
        id: "replication.link-down",
        catalog: "A24",
        reads: "INFO replication master_link_status, master_link_down_since_seconds",
        condition: "role:slave and master_link_status:down (critical)",
        title: "This replica has lost its master",
        fix: "It serves stale data (or MASTERDOWN errors). Check the master is up and reachable from here, and read this replica's log for the sync error.",
        host: false,
        eval: |s, _| {
            if s.s("role")? != "slave" || s.s("master_link_status")? != "down" {
                return None;
            }
            let since = s.u("master_link_down_since_seconds").map(|d| format!(" for {}", duration(d))).unwrap_or_default();
            let master = format!("{}:{}", s.s("master_host").unwrap_or("?"), s.s("master_port").unwrap_or("?"));
            hit(Severity::Critical, format!("master_link_status:down{since}, master {master}"))
        },
    },
    Check {
        id: "replication.lag",
        catalog: "A25",
        reads: "INFO replication slaveN lag, master_last_io_seconds_ago; CONFIG repl-timeout",
        condition: "a replica's lag > replica_lag_warn_secs (warn); on a replica, master silent longer than repl-timeout (critical)",
        title: "Replication is lagging",
        fix: "A lagging replica serves old data and fails over with data loss. Check the network between the two, the replica's load, and the output buffer of the replica link.",
        host: false,
        eval: |s, t| {
            if s.s("role")? == "slave" {
                if s.s("master_link_status") != Some("up") {
                    return None;
                }
                let silent = s.u("master_last_io_seconds_ago")?;
                let limit = s.cfg("repl-timeout").and_then(|v| v.parse().ok()).unwrap_or(t.master_silence_crit_secs);
                return (silent > limit).then(|| Hit { title: None, severity: Severity::Critical, detail: format!("no data from the master for {silent} s (repl-timeout {limit} s)") });
            }
            let lagging: Vec<String> = s
                .info
                .iter()
                .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()) && k.len() > 5)
                .filter_map(|(_, v)| {
                    let f = parse_kv_list(v);
                    let lag: u64 = f.get("lag")?.parse().ok()?;
                    (lag > t.replica_lag_warn_secs).then(|| format!("{}:{} lag {lag} s", f.get("ip").unwrap_or(&"?"), f.get("port").unwrap_or(&"?")))
                })
                .collect();
            if lagging.is_empty() {
                return None;
            }
            hit(Severity::Warn, lagging.join(", "))
        },
    },
    Check {
        id: "replication.replica-lost",
        catalog: "A25",
        reads: "INFO replication connected_slaves, compared with the previous diagnosis",
        condition: "connected_slaves dropped since the baseline (critical)",
        title: "The master lost replicas",
        fix: "Fewer replicas means less redundancy and maybe a failover in progress. Check the missing replicas' hosts and logs.",
        host: false,
        eval: |s, _| {
            let before = s.baseline()?.connected_slaves?;
            let now = s.u("connected_slaves")?;
            (now < before).then(|| Hit { title: None, severity: Severity::Critical, detail: format!("connected_slaves went from {before} to {now}") })
        },
    },
    Check {
        id: "replication.replica-endpoint",
        catalog: "A26",
        reads: "INFO replication role; CONFIG replica-read-only",
        condition: "role:slave (critical with replica-read-only yes, else warn)",
        title: "This endpoint is a replica: writes sent here fail",
        fix: "Applications writing here get READONLY, typically after a failover when clients still use the old address. Point them at the current primary (or reconnect them so DNS is re-resolved).",
        host: false,
        eval: |s, _| {
            if s.s("role")? != "slave" {
                return None;
            }
            let ro = s.cfg("replica-read-only").unwrap_or("yes");
            let sev = if ro == "yes" { Severity::Critical } else { Severity::Warn };
            hit(sev, format!("role:slave of {}:{}, replica-read-only {ro}", s.s("master_host").unwrap_or("?"), s.s("master_port").unwrap_or("?")))
        },
    },
    Check {
        id: "cluster.state",
        catalog: "A27",
        reads: "CLUSTER INFO cluster_state, cluster_slots_fail, cluster_slots_pfail",
        condition: "cluster_state not ok or slots_fail > 0 (critical), slots_pfail > 0 (warn)",
        title: "The cluster does not cover every slot",
        fix: "Clients get CLUSTERDOWN for uncovered slots. Bring failed nodes back or fail over to their replicas; CLUSTER SHARDS shows which.",
        host: false,
        eval: |s, _| {
            let state = s.cluster.get("cluster_state")?;
            let n = |k: &str| s.cluster.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let (fail, pfail) = (n("cluster_slots_fail"), n("cluster_slots_pfail"));
            let detail = format!("cluster_state:{state}, slots_fail {fail}, slots_pfail {pfail}");
            if state != "ok" || fail > 0 {
                hit(Severity::Critical, detail)
            } else if pfail > 0 {
                hit(Severity::Warn, detail)
            } else {
                None
            }
        },
    },
    Check {
        id: "host.thp",
        catalog: "A28",
        reads: "/sys/kernel/mm/transparent_hugepage/enabled",
        condition: "local Redis and THP enabled is [always] (warn)",
        title: "Transparent huge pages are always on",
        fix: "THP makes forks slow and copy-on-write expensive. Set it to madvise: echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (and make it persistent).",
        host: true,
        eval: |s, _| {
            let thp = s.host.as_ref()?.thp.as_ref()?;
            thp.contains("[always]").then(|| Hit { title: None, severity: Severity::Warn, detail: format!("transparent_hugepage/enabled: {thp}") })
        },
    },
    Check {
        id: "host.overcommit",
        catalog: "A29",
        reads: "/proc/sys/vm/overcommit_memory",
        condition: "local Redis and vm.overcommit_memory ≠ 1 (warn)",
        title: "Memory overcommit is not enabled",
        fix: "A BGSAVE or replica sync needs fork(), which can fail under memory pressure with this setting. Set sysctl vm.overcommit_memory=1 (and persist it in /etc/sysctl.conf).",
        host: true,
        eval: |s, _| {
            let v = s.host.as_ref()?.overcommit.as_ref()?;
            (v != "1").then(|| Hit { title: None, severity: Severity::Warn, detail: format!("vm.overcommit_memory = {v}") })
        },
    },
    Check {
        id: "host.somaxconn",
        catalog: "A30",
        reads: "/proc/sys/net/core/somaxconn; CONFIG tcp-backlog",
        condition: "local Redis and somaxconn < tcp-backlog (warn)",
        title: "The kernel accept queue is shorter than Redis's tcp-backlog",
        fix: "Bursts of new connections can be dropped. Raise net.core.somaxconn to at least tcp-backlog.",
        host: true,
        eval: |s, _| {
            let max = s.host.as_ref()?.somaxconn?;
            let backlog: u64 = s.cfg("tcp-backlog")?.parse().ok()?;
            (max < backlog).then(|| Hit { title: None, severity: Severity::Warn, detail: format!("somaxconn {max} < tcp-backlog {backlog}") })
        },
    },
    Check {
        id: "host.clocksource",
        catalog: "A31",
        reads: "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        condition: "local Redis and clocksource xen (warn)",
        title: "Slow clock source",
        fix: "Redis reads the clock constantly; the xen clocksource makes that slow. Switch to tsc if the platform supports it.",
        host: true,
        eval: |s, _| {
            let c = s.host.as_ref()?.clocksource.as_ref()?;
            (c == "xen").then(|| Hit { title: None, severity: Severity::Warn, detail: format!("current_clocksource {c}") })
        },
    },
    Check {
        id: "server.version",
        catalog: "A32",
        reads: "INFO server redis_version",
        condition: "redis_version below the newest supported line and not in SUPPORTED_VERSIONS (warn)",
        title: "This Redis version no longer gets security fixes",
        fix: "Plan an upgrade to a supported release line (7.2 or newer).",
        host: false,
        eval: |s, _| {
            let v = s.s("redis_version")?;
            let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
            let (major, minor) = (it.next()??, it.next()??);
            let newest = SUPPORTED_VERSIONS.first()?;
            if (major, minor) >= *newest || SUPPORTED_VERSIONS.contains(&(major, minor)) {
                return None;
            }
            let lines: Vec<String> = SUPPORTED_VERSIONS
                .iter()
                .enumerate()
                .map(|(i, (ma, mi))| if i == 0 { format!("{ma}.{mi} and newer") } else { format!("{ma}.{mi}") })
                .collect();
            hit(Severity::Warn, format!("redis_version {v}; supported lines: {}", lines.join(", ")))
        },
    },
    Check {
        id: "security.exposed-no-auth",
        catalog: "A33",
        reads: "CONFIG bind, protected-mode, requirepass; ACL LIST",
        condition: "a non-loopback bind and an enabled nopass user (critical with protected-mode no, else warn)",
        title: "Redis listens beyond loopback without a password",
        fix: "Anyone who reaches the port can read or wipe everything. Set a password (requirepass or ACL users), remove nopass from enabled users, and bind only to private interfaces.",
        host: false,
        eval: |s, _| {
            let bind = s.cfg("bind")?;
            let open: Vec<&str> = bind.split_whitespace().map(|a| a.trim_start_matches('-')).filter(|a| !is_loopback(a)).collect();
            // An empty bind means every interface.
            if !bind.trim().is_empty() && open.is_empty() {
                return None;
            }
            let nopass: Vec<String> = if s.acl_users.is_empty() {
                if s.cfg("requirepass")?.is_empty() { vec!["default".into()] } else { vec![] }
            } else {
                s.acl_users
                    .iter()
                    .filter(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.contains(&"on") && w.contains(&"nopass")
                    })
                    .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                    .collect()
            };
            if nopass.is_empty() {
                return None;
            }
            let shown = if bind.trim().is_empty() { "all interfaces".to_string() } else { open.join(" ") };
            let users = nopass.join(", ");
            if s.cfg("protected-mode") == Some("no") {
                hit(Severity::Critical, format!("bound to {shown}, protected-mode no, users without password: {users}"))
            } else {
                hit(Severity::Warn, format!("bound to {shown}, users without password: {users}; only protected mode keeps remote clients out (they get DENIED)"))
            }
        },
    },
    Check {
        id: "security.dangerous-commands",
        catalog: "A34",
        reads: "ACL DRYRUN <user> FLUSHALL / KEYS / CONFIG",
        condition: "ACL DRYRUN allows FLUSHALL, KEYS or CONFIG SET for the app user (warn), or for default when no app user is named (info)",
        title: "The application user may run dangerous commands",
        fix: "An app bug or a leaked password can wipe or stall Redis. Restrict the app user: ACL SETUSER <user> -@dangerous (keep the doctor's own user separate).",
        host: false,
        eval: |s, _| {
            let (user, allowed) = s.dangerous.as_ref()?;
            if allowed.is_empty() {
                return None;
            }
            let sev = if s.app_user_named { Severity::Warn } else { Severity::Info };
            let who = if s.app_user_named { format!("app user {user:?}") } else { format!("user {user:?} (clients that don't authenticate)") };
            hit(sev, format!("{who} may run {}", allowed.join(", ")))
        },
    },
    Check {
        id: "redoubt.replica-grant",
        catalog: "redoubt",
        reads: "ACL WHOAMI, ACL DRYRUN <user> PSYNC / REPLCONF",
        condition: "the user this connection acts as may not run PSYNC or REPLCONF (warn)",
        title: "Redoubt cannot keep a replica of the durable keyspaces",
        fix: "Redoubt attaches to Redis as a replica so that an outage serves every durable key as Redis had it; without the grant it serves only values read through it before the outage (the near-cache). Grant it: ACL SETUSER <user> +psync +replconf (a managed Redis may forbid replicas: then set [replica] mode = \"off\").",
        host: false,
        eval: |s, _| {
            let (user, missing) = s.replica_grant.as_ref()?;
            if missing.is_empty() {
                return None;
            }
            hit(Severity::Warn, format!("user {user:?} may not run {}", missing.join(", ")))
        },
    },
    Check {
        id: "scripts.cached",
        catalog: "A35",
        reads: "INFO memory number_of_cached_scripts",
        condition: "number_of_cached_scripts > cached_scripts_warn (warn)",
        title: "Many cached Lua scripts",
        fix: "Scripts built with values inside their text are cached once per variant and never freed. Pass values as KEYS/ARGV and call the script by EVALSHA; SCRIPT FLUSH clears the cache.",
        host: false,
        eval: |s, t| {
            let n = s.u("number_of_cached_scripts").filter(|n| *n > t.cached_scripts_warn)?;
            hit(Severity::Warn, format!("{n} scripts cached, using {}", bytes(s.u("used_memory_scripts").or(s.u("used_memory_scripts_eval")).unwrap_or(0))))
        },
    },
];

fn has_prefix(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| name.starts_with(p))
}

fn is_cache_like(k: &SampledKey) -> bool {
    k.ttl >= 0 || has_prefix(&k.name, CACHE_PREFIXES)
}

fn is_loopback(addr: &str) -> bool {
    addr == "localhost"
        || addr
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `1536` → `1.5 KiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `3700` → `1h 1m`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    //! Every row of the table, on captured text: INFO as a healthy
    //! production server would print it, changed one fact at a time.
    use super::*;
    use crate::host::HostFacts;
    use crate::snapshot::{parse_client_list, parse_info, Counters, LatencyEvent, SlowEntry};

    const HEALTHY_INFO: &str = "# Server\r\nredis_version:7.2.4\r\nuptime_in_seconds:864000\r\nprocess_id:1\r\nserver_time_usec:1700000000000000\r\n\
# Clients\r\nconnected_clients:10\r\nmaxclients:10000\r\nblocked_clients:0\r\ntotal_blocking_keys:0\r\n\
# Memory\r\nused_memory:104857600\r\nused_memory_rss:115343360\r\nused_memory_peak:115343360\r\nmaxmemory:1073741824\r\n\
total_system_memory:8589934592\r\nmem_fragmentation_ratio:1.10\r\nmem_fragmentation_bytes:10485760\r\nallocator_frag_ratio:1.01\r\n\
allocator_frag_bytes:1048576\r\nnumber_of_cached_scripts:3\r\n\
# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:10\r\nrdb_last_save_time:1699999000\r\nrdb_last_bgsave_status:ok\r\n\
aof_last_bgrewrite_status:ok\r\naof_last_write_status:ok\r\naof_delayed_fsync:0\r\n\
# Stats\r\nevicted_keys:0\r\nexpired_keys:5\r\nrejected_connections:0\r\nlatest_fork_usec:5000\r\n\
# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=10.0.0.2,port=6379,state=online,offset=100,lag=0\r\n\
# Cluster\r\ncluster_enabled:0\r\n\
# Keyspace\r\ndb0:keys=100,expires=10,avg_ttl=0\r\n";

    fn healthy() -> Snapshot {
        let config = [
            ("maxmemory-policy", "volatile-lru"),
            ("save", "3600 1 300 100"),
            ("appendonly", "no"),
            ("stop-writes-on-bgsave-error", "yes"),
            ("timeout", "300"),
            ("tcp-backlog", "511"),
            ("slowlog-log-slower-than", "10000"),
            ("latency-monitor-threshold", "100"),
            ("replica-read-only", "yes"),
            ("repl-timeout", "60"),
            ("bind", "10.0.0.1"),
            ("protected-mode", "yes"),
            ("requirepass", "(set)"),
            ("maxclients", "10000"),
        ];
        Snapshot {
            info: parse_info(HEALTHY_INFO),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            clients: parse_client_list(
                "id=1 addr=10.0.0.9:4000 name=web idle=2 flags=N sub=0 psub=0 omem=0 cmd=get\n",
            ),
            slowlog_len: Some(0),
            acl_users: vec!["user default on #5e88 ~* &* +@all".into()],
            dangerous: Some(("app".into(), vec![])),
            app_user_named: true,
            host: Some(HostFacts {
                thp: Some("always [madvise] never".into()),
                overcommit: Some("1".into()),
                somaxconn: Some(4096),
                clocksource: Some("tsc".into()),
                redis_swap_kb: Some(0),
            }),
            now_unix: 1_700_000_000,
            ..Default::default()
        }
    }

    fn set(s: &mut Snapshot, kv: &[(&str, &str)]) {
        for (k, v) in kv {
            s.info.insert(k.to_string(), v.to_string());
        }
    }

    fn cfg(s: &mut Snapshot, kv: &[(&str, &str)]) {
        for (k, v) in kv {
            s.config.insert(k.to_string(), v.to_string());
        }
    }

    fn key(name: &str, kind: &str, size: u64, ttl: i64) -> SampledKey {
        SampledKey {
            name: name.into(),
            kind: kind.into(),
            size: Some(size),
            ttl,
        }
    }

    type Case = (&'static str, Option<Severity>, fn(&mut Snapshot));

    /// (check id, expected severity or None for silent, how to break the healthy snapshot)
    const CASES: &[Case] = &[
        ("memory.near-maxmemory", Some(Severity::Warn), |s| {
            set(s, &[("used_memory", "912680550")])
        }),
        ("memory.near-maxmemory", Some(Severity::Critical), |s| {
            set(s, &[("used_memory", "1063004405")])
        }),
        ("memory.near-maxmemory", None, |s| {
            set(s, &[("maxmemory", "0")])
        }),
        ("memory.near-maxmemory", Some(Severity::Critical), |s| {
            set(s, &[("used_memory", "1200000000")])
        }),
        ("memory.no-limit", Some(Severity::Critical), |s| {
            set(s, &[("maxmemory", "0"), ("used_memory_rss", "8000000000")])
        }),
        ("memory.no-limit", Some(Severity::Warn), |s| {
            set(s, &[("maxmemory", "0"), ("used_memory_rss", "7000000000")])
        }),
        ("memory.no-limit", None, |s| {
            set(s, &[("used_memory_rss", "8000000000")])
        }),
        ("memory.noeviction-cache", Some(Severity::Warn), |s| {
            cfg(s, &[("maxmemory-policy", "noeviction")]);
            set(s, &[("used_memory", "912680550")]);
            s.keys = vec![
                key("page:1", "string", 10, 300),
                key("cache:2", "string", 10, -1),
                key("user:3", "hash", 2, -1),
            ];
        }),
        ("memory.noeviction-cache", None, |s| {
            cfg(s, &[("maxmemory-policy", "noeviction")]);
            set(s, &[("used_memory", "912680550")]);
            s.keys = vec![key("user:1", "hash", 2, -1), key("user:2", "hash", 2, -1)];
        }),
        ("memory.evicting-sessions", Some(Severity::Critical), |s| {
            cfg(s, &[("maxmemory-policy", "allkeys-lru")]);
            set(s, &[("evicted_keys", "42")]);
            s.keys = vec![key("bull:email:1", "hash", 5, -1)];
        }),
        ("memory.evicting-sessions", None, |s| {
            set(s, &[("evicted_keys", "42")]);
            s.keys = vec![key("sess:1", "string", 5, 100)];
        }),
        ("memory.evictions", Some(Severity::Warn), |s| {
            set(s, &[("evicted_keys", "42")])
        }),
        ("memory.evictions", None, |s| {
            set(s, &[("run_id", "abc"), ("evicted_keys", "42")]);
            s.baseline = Some(Counters {
                run_id: Some("abc".into()),
                evicted_keys: Some(42),
                ..Default::default()
            });
        }),
        ("replication.replica-lost", Some(Severity::Critical), |s| {
            set(s, &[("run_id", "abc"), ("connected_slaves", "1")]);
            s.baseline = Some(Counters {
                run_id: Some("abc".into()),
                connected_slaves: Some(2),
                ..Default::default()
            });
        }),
        ("memory.expire-storm", Some(Severity::Warn), |s| {
            s.latency = vec![LatencyEvent {
                event: "expire-cycle".into(),
                latest_ms: 120,
                max_ms: 300,
            }];
        }),
        ("memory.fragmentation", Some(Severity::Warn), |s| {
            set(
                s,
                &[
                    ("mem_fragmentation_ratio", "1.80"),
                    ("mem_fragmentation_bytes", "83886080"),
                ],
            )
        }),
        ("memory.fragmentation", Some(Severity::Warn), |s| {
            set(
                s,
                &[
                    ("allocator_frag_ratio", "1.30"),
                    ("allocator_frag_bytes", "31457280"),
                ],
            )
        }),
        ("memory.fragmentation", Some(Severity::Info), |s| {
            set(s, &[("used_memory_peak", "524288000")])
        }),
        ("memory.fragmentation", None, |s| {
            set(
                s,
                &[
                    ("used_memory", "900000"),
                    ("mem_fragmentation_ratio", "13.0"),
                    ("mem_fragmentation_bytes", "11000000"),
                ],
            )
        }),
        ("memory.swapped", Some(Severity::Critical), |s| {
            set(
                s,
                &[
                    ("used_memory_rss", "52428800"),
                    ("mem_fragmentation_ratio", "0.50"),
                ],
            )
        }),
        ("host.swap", Some(Severity::Critical), |s| {
            s.host.as_mut().unwrap().redis_swap_kb = Some(204800)
        }),
        ("host.swap", None, |s| s.host = None),
        ("persistence.off", Some(Severity::Warn), |s| {
            cfg(s, &[("save", "")])
        }),
        ("persistence.off", Some(Severity::Info), |s| {
            cfg(s, &[("save", "")]);
            set(s, &[("connected_slaves", "0")]);
        }),
        ("persistence.off", None, |s| {
            cfg(s, &[("save", ""), ("appendonly", "yes")])
        }),
        ("persistence.bgsave-failed", Some(Severity::Critical), |s| {
            set(s, &[("rdb_last_bgsave_status", "err")])
        }),
        ("persistence.aof-errors", Some(Severity::Critical), |s| {
            set(s, &[("aof_last_write_status", "err")])
        }),
        ("persistence.aof-errors", Some(Severity::Warn), |s| {
            set(
                s,
                &[
                    ("aof_last_bgrewrite_status", "err"),
                    ("aof_delayed_fsync", "3"),
                ],
            )
        }),
        (
            "persistence.stale-snapshot",
            Some(Severity::Critical),
            |s| set(s, &[("rdb_last_save_time", "1699800000")]),
        ),
        ("persistence.stale-snapshot", Some(Severity::Warn), |s| {
            set(s, &[("rdb_changes_since_last_save", "2000000")])
        }),
        ("persistence.stale-snapshot", None, |s| {
            set(s, &[("rdb_last_save_time", "1699800000")]);
            cfg(s, &[("appendonly", "yes")]);
        }),
        ("server.loading", Some(Severity::Critical), |s| {
            set(
                s,
                &[
                    ("loading", "1"),
                    ("loading_loaded_perc", "42.5"),
                    ("loading_eta_seconds", "90"),
                ],
            )
        }),
        ("server.recent-restart", Some(Severity::Info), |s| {
            set(s, &[("uptime_in_seconds", "30")])
        }),
        ("clients.near-maxclients", Some(Severity::Warn), |s| {
            set(s, &[("connected_clients", "8500")])
        }),
        ("clients.near-maxclients", Some(Severity::Critical), |s| {
            set(s, &[("connected_clients", "9600")])
        }),
        ("clients.rejected", Some(Severity::Warn), |s| {
            set(s, &[("rejected_connections", "17")])
        }),
        ("clients.rejected", Some(Severity::Critical), |s| {
            set(s, &[("run_id", "abc"), ("rejected_connections", "17")]);
            s.baseline = Some(Counters {
                run_id: Some("abc".into()),
                rejected_connections: Some(10),
                ..Default::default()
            });
        }),
        ("clients.rejected", None, |s| {
            set(s, &[("run_id", "abc"), ("rejected_connections", "17")]);
            s.baseline = Some(Counters {
                run_id: Some("abc".into()),
                rejected_connections: Some(17),
                ..Default::default()
            });
        }),
        ("clients.rejected", Some(Severity::Warn), |s| {
            // A restart resets counters: the baseline no longer applies.
            set(s, &[("run_id", "new"), ("rejected_connections", "17")]);
            s.baseline = Some(Counters {
                run_id: Some("old".into()),
                rejected_connections: Some(17),
                ..Default::default()
            });
        }),
        ("clients.blocked", Some(Severity::Warn), |s| {
            set(
                s,
                &[("blocked_clients", "12"), ("total_blocking_keys", "3")],
            )
        }),
        ("clients.blocked", Some(Severity::Info), |s| {
            set(s, &[("blocked_clients", "2")])
        }),
        ("clients.idle", Some(Severity::Warn), |s| {
            cfg(s, &[("timeout", "0")]);
            s.clients = (0..12)
                .map(|i| crate::snapshot::ClientEntry {
                    addr: format!("10.0.0.7:{i}"),
                    idle: 7200,
                    flags: "N".into(),
                    ..Default::default()
                })
                .collect();
        }),
        ("clients.idle", None, |s| {
            cfg(s, &[("timeout", "0")]);
            // Subscribers idle by design and are exempt from timeout.
            s.clients = (0..12)
                .map(|i| crate::snapshot::ClientEntry {
                    addr: format!("10.0.0.7:{i}"),
                    idle: 7200,
                    flags: "P".into(),
                    subs: 1,
                    ..Default::default()
                })
                .collect();
        }),
        ("clients.output-buffers", Some(Severity::Warn), |s| {
            s.clients = parse_client_list("id=1 addr=10.0.0.5:1 flags=N omem=8388608 cmd=subscribe\nid=2 addr=10.0.0.6:1 flags=N omem=0 cmd=get\n");
        }),
        ("clients.output-buffers", Some(Severity::Warn), |s| {
            s.clients = parse_client_list("id=1 addr=10.0.0.2:1 flags=S omem=67108864 cmd=psync\n");
        }),
        ("keys.session-no-ttl", Some(Severity::Warn), |s| {
            s.keys = vec![
                key("sess:a", "string", 10, -1),
                key("session:b", "hash", 3, 600),
            ]
        }),
        ("keys.session-no-ttl", None, |s| {
            s.keys = vec![key("sess:a", "string", 10, 60)]
        }),
        ("keys.big", Some(Severity::Warn), |s| {
            s.keys = vec![key("h", "hash", 6000, -1)]
        }),
        ("keys.big", Some(Severity::Warn), |s| {
            set(s, &[("db0", "keys=2000000,expires=0,avg_ttl=0")])
        }),
        ("keys.big", None, |s| {
            s.keys = vec![key("h", "hash", 4000, -1), key("s", "string", 90_000, -1)]
        }),
        ("slowlog.entries", Some(Severity::Warn), |s| {
            s.slowlog_len = Some(3);
            s.slowlog = vec![SlowEntry {
                micros: 250_000,
                command: "KEYS".into(),
            }];
        }),
        ("latency.monitor-off", Some(Severity::Info), |s| {
            cfg(s, &[("latency-monitor-threshold", "0")])
        }),
        ("latency.events", Some(Severity::Warn), |s| {
            s.latency = vec![LatencyEvent {
                event: "fork".into(),
                latest_ms: 500,
                max_ms: 900,
            }]
        }),
        ("latency.slow-fork", Some(Severity::Warn), |s| {
            set(s, &[("latest_fork_usec", "50000")])
        }),
        ("replication.link-down", Some(Severity::Critical), |s| {
            set(
                s,
                &[
                    ("role", "slave"),
                    ("master_host", "10.0.0.1"),
                    ("master_port", "6379"),
                    ("master_link_status", "down"),
                    ("master_link_down_since_seconds", "95"),
                ],
            )
        }),
        ("replication.lag", Some(Severity::Warn), |s| {
            set(
                s,
                &[(
                    "slave0",
                    "ip=10.0.0.2,port=6379,state=online,offset=100,lag=30",
                )],
            )
        }),
        ("replication.lag", Some(Severity::Critical), |s| {
            set(
                s,
                &[
                    ("role", "slave"),
                    ("master_link_status", "up"),
                    ("master_last_io_seconds_ago", "120"),
                ],
            )
        }),
        (
            "replication.replica-endpoint",
            Some(Severity::Critical),
            |s| set(s, &[("role", "slave"), ("master_link_status", "up")]),
        ),
        ("replication.replica-endpoint", Some(Severity::Warn), |s| {
            set(s, &[("role", "slave"), ("master_link_status", "up")]);
            cfg(s, &[("replica-read-only", "no")]);
        }),
        ("cluster.state", Some(Severity::Critical), |s| {
            s.cluster = parse_info("cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_fail:100\r\ncluster_slots_pfail:0\r\n")
        }),
        ("cluster.state", Some(Severity::Warn), |s| {
            s.cluster =
                parse_info("cluster_state:ok\r\ncluster_slots_fail:0\r\ncluster_slots_pfail:5\r\n")
        }),
        ("cluster.state", None, |s| {
            s.cluster =
                parse_info("cluster_state:ok\r\ncluster_slots_fail:0\r\ncluster_slots_pfail:0\r\n")
        }),
        ("host.thp", Some(Severity::Warn), |s| {
            s.host.as_mut().unwrap().thp = Some("[always] madvise never".into())
        }),
        ("host.overcommit", Some(Severity::Warn), |s| {
            s.host.as_mut().unwrap().overcommit = Some("0".into())
        }),
        ("host.somaxconn", Some(Severity::Warn), |s| {
            s.host.as_mut().unwrap().somaxconn = Some(128)
        }),
        ("host.clocksource", Some(Severity::Warn), |s| {
            s.host.as_mut().unwrap().clocksource = Some("xen".into())
        }),
        ("server.version", Some(Severity::Warn), |s| {
            set(s, &[("redis_version", "6.0.9")])
        }),
        ("server.version", Some(Severity::Warn), |s| {
            set(s, &[("redis_version", "7.0.15")])
        }),
        ("server.version", None, |s| {
            set(s, &[("redis_version", "6.2.14")])
        }),
        ("server.version", None, |s| {
            set(s, &[("redis_version", "8.2.1")])
        }),
        ("security.exposed-no-auth", Some(Severity::Critical), |s| {
            cfg(
                s,
                &[
                    ("bind", "0.0.0.0"),
                    ("requirepass", ""),
                    ("protected-mode", "no"),
                ],
            );
            s.acl_users = vec!["user default on nopass ~* &* +@all".into()];
        }),
        ("security.exposed-no-auth", Some(Severity::Warn), |s| {
            cfg(s, &[("bind", "")]);
            s.acl_users = vec!["user default on nopass ~* &* +@all".into()];
        }),
        ("security.exposed-no-auth", None, |s| {
            cfg(s, &[("bind", "127.0.0.1 -::1")]);
            s.acl_users = vec!["user default on nopass ~* &* +@all".into()];
        }),
        ("security.exposed-no-auth", Some(Severity::Critical), |s| {
            // Redis without ACLs: requirepass decides.
            cfg(
                s,
                &[
                    ("bind", "0.0.0.0"),
                    ("requirepass", ""),
                    ("protected-mode", "no"),
                ],
            );
            s.acl_users.clear();
        }),
        ("security.dangerous-commands", Some(Severity::Warn), |s| {
            s.dangerous = Some(("app".into(), vec!["FLUSHALL".into()]))
        }),
        ("security.dangerous-commands", Some(Severity::Info), |s| {
            s.dangerous = Some(("default".into(), vec!["FLUSHALL".into()]));
            s.app_user_named = false;
        }),
        ("redoubt.replica-grant", Some(Severity::Warn), |s| {
            s.replica_grant = Some(("app".into(), vec!["psync".into()]))
        }),
        ("redoubt.replica-grant", None, |s| {
            s.replica_grant = Some(("app".into(), vec![]))
        }),
        ("scripts.cached", Some(Severity::Warn), |s| {
            set(s, &[("number_of_cached_scripts", "1500")])
        }),
    ];

    fn check(id: &str) -> &'static Check {
        checks()
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no check {id}"))
    }

    #[test]
    fn healthy_capture_fires_nothing() {
        let s = healthy();
        let fired: Vec<_> = checks()
            .iter()
            .filter_map(|c| c.run(&s, &Thresholds::default()))
            .map(|f| f.id)
            .collect();
        assert!(fired.is_empty(), "{fired:?}");
    }

    #[test]
    fn every_case_gives_its_severity() {
        for (i, (id, want, breaks)) in CASES.iter().enumerate() {
            let mut s = healthy();
            breaks(&mut s);
            let got = check(id).run(&s, &Thresholds::default());
            assert_eq!(
                got.as_ref().map(|f| f.severity),
                *want,
                "case {i} ({id}): {got:?}"
            );
            if let Some(f) = got {
                assert!(
                    !f.detail.is_empty(),
                    "case {i} ({id}) has no measured values"
                );
            }
        }
    }

    #[test]
    fn every_check_has_a_firing_case_and_complete_text() {
        let mut ids = std::collections::HashSet::new();
        for c in checks() {
            assert!(ids.insert(c.id), "duplicate id {}", c.id);
            assert!(
                c.id.contains('.') && c.id == c.id.to_ascii_lowercase(),
                "{}",
                c.id
            );
            assert!(
                (c.catalog.starts_with('A') || c.catalog == "redoubt")
                    && !c.reads.is_empty()
                    && !c.condition.is_empty()
                    && !c.title.is_empty()
                    && !c.fix.is_empty(),
                "{}",
                c.id
            );
            assert!(
                CASES
                    .iter()
                    .any(|(id, want, _)| *id == c.id && want.is_some()),
                "no firing case for {}",
                c.id
            );
        }
        // The whole catalog part A, 35 entries, is covered.
        let catalog: std::collections::HashSet<_> = checks()
            .iter()
            .map(|c| c.catalog)
            .filter(|c| c.starts_with('A'))
            .collect();
        assert_eq!(catalog.len(), 35, "{catalog:?}");
    }

    #[test]
    fn over_maxmemory_says_so_and_what_it_does_to_writes() {
        let mut s = healthy();
        set(
            &mut s,
            &[
                ("used_memory", "1120000000"),
                ("maxmemory_policy", "noeviction"),
            ],
        );
        let f = check("memory.near-maxmemory")
            .run(&s, &Thresholds::default())
            .unwrap();
        assert_eq!(
            f.title,
            "Redis is over maxmemory — writes are being refused"
        );
        assert!(
            f.detail.contains("(104%)") && f.detail.contains("fail with OOM"),
            "{}",
            f.detail
        );
        set(&mut s, &[("maxmemory_policy", "allkeys-lru")]);
        let f = check("memory.near-maxmemory")
            .run(&s, &Thresholds::default())
            .unwrap();
        assert_eq!(f.title, "Redis is over maxmemory — keys are being evicted");
        set(&mut s, &[("used_memory", "1000000000")]);
        let f = check("memory.near-maxmemory")
            .run(&s, &Thresholds::default())
            .unwrap();
        assert_eq!(f.title, "Memory is close to maxmemory");
    }

    #[test]
    fn thresholds_are_honoured() {
        let mut s = healthy();
        set(&mut s, &[("used_memory", "700000000")]); // 65%
        assert!(check("memory.near-maxmemory")
            .run(&s, &Thresholds::default())
            .is_none());
        let t = Thresholds {
            memory_warn_ratio: 0.6,
            ..Thresholds::default()
        };
        assert_eq!(
            check("memory.near-maxmemory")
                .run(&s, &t)
                .map(|f| f.severity),
            Some(Severity::Warn)
        );
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3700), "1h 1m");
        assert_eq!(duration(2 * 86400 + 3600), "2d 1h");
    }
}
