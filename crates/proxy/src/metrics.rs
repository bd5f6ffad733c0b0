//! Metric names (part of the contract, see DESIGN) and handles registered
//! once, so the data path only bumps atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Gauge, Unit,
};
use upstream::State;

/// `redoubt_commands_total{route,policy}`.
pub const COMMANDS_TOTAL: &str = "redoubt_commands_total";
/// `redoubt_command_duration_seconds` histogram.
pub const COMMAND_DURATION: &str = "redoubt_command_duration_seconds";
/// `redoubt_client_connections` gauge.
pub const CLIENT_CONNECTIONS: &str = "redoubt_client_connections";
/// `redoubt_upstream_up` gauge.
pub const UPSTREAM_UP: &str = "redoubt_upstream_up";
/// `redoubt_state{state}` gauge, 1 for the current state.
pub const STATE: &str = "redoubt_state";
/// `redoubt_outages_total` counter.
pub const OUTAGES_TOTAL: &str = "redoubt_outages_total";
/// `redoubt_outage_seconds_total` counter.
pub const OUTAGE_SECONDS_TOTAL: &str = "redoubt_outage_seconds_total";
/// `redoubt_outage_current_seconds` gauge: how long the open outage has
/// lasted, 0 when none is open.
pub const OUTAGE_CURRENT_SECONDS: &str = "redoubt_outage_current_seconds";

/// `redoubt_journal_pending_commands` gauge: journaled, not yet replayed.
pub const JOURNAL_PENDING: &str = "redoubt_journal_pending_commands";
/// `redoubt_journal_bytes` gauge.
pub const JOURNAL_BYTES: &str = "redoubt_journal_bytes";
/// `redoubt_journal_max_bytes` gauge: `journal.max_bytes`, so an alert can
/// compare [`JOURNAL_BYTES`] with the point where writes are refused.
pub const JOURNAL_MAX_BYTES: &str = "redoubt_journal_max_bytes";
/// `redoubt_writes_refused_total{reason}`: writes refused because the
/// journal could not keep them (`journal-full`, `journal-failed`).
pub const WRITES_REFUSED: &str = "redoubt_writes_refused_total";
/// Gauge: keys Redoubt could answer locally (local store + near-cache).
pub const FALLBACK_KEYS: &str = "redoubt_fallback_keys";
/// Gauge: bytes held for local answers (local store + near-cache).
pub const FALLBACK_MEMORY: &str = "redoubt_fallback_memory_bytes";

/// Gauge: 1 for the replica's current state (`state` label), 0 for the others.
pub const REPLICA_STATE: &str = "redoubt_replica_state";
/// Gauge: keys in the replica of the durable keyspaces.
pub const REPLICA_KEYS: &str = "redoubt_replica_keys";
/// Gauge: approximate bytes the replica holds.
pub const REPLICA_BYTES: &str = "redoubt_replica_memory_bytes";
/// Gauge: replication stream offset applied.
pub const REPLICA_OFFSET: &str = "redoubt_replica_offset";
/// Gauge: bytes of Redis's replication stream the replica has not applied.
pub const REPLICA_LAG: &str = "redoubt_replica_lag_bytes";
/// Gauge: seconds since Redis last sent anything on the replication link.
pub const REPLICA_LAST_IO: &str = "redoubt_replica_last_io_seconds";

/// The replica's states, for [`REPLICA_STATE`].
pub const REPLICA_STATES: &[&str] = &[
    "connecting",
    "syncing",
    "loading",
    "streaming",
    "lost",
    "refused",
    "too-large",
];

/// Buckets for [`COMMAND_DURATION`], in seconds: 50 µs to the 1 s default
/// deadline and beyond, for blocking commands.
pub const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// [`COMMAND_DURATION`], kept here rather than by the exporter: it is
/// recorded for every command, and the exporter's histogram (a lock-free
/// queue of samples folded into buckets at the scrape) took a twentieth
/// of a pipelined `GET`'s CPU. Recording here is a bucket search and two
/// relaxed atomic adds; [`Durations::render`] writes it into `/metrics`.
pub struct Durations {
    /// Samples per bucket of [`DURATION_BUCKETS`] (not cumulative), the
    /// last one past every bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// Commands answered and how long each took, gathered over one turn of a
/// session and added to the shared counter and [`Durations`] once, when
/// the turn ends (and when the tally is dropped): each shared add is an
/// atomic instruction, a few per command, and a pipelined turn answers
/// many commands.
pub struct Tally {
    counter: Counter,
    durations: &'static Durations,
    n: u64,
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_nanos: u64,
}

impl Tally {
    /// A tally that adds into `counter` and `durations`.
    pub fn new(counter: Counter, durations: &'static Durations) -> Tally {
        Tally {
            counter,
            durations,
            n: 0,
            buckets: [0; DURATION_BUCKETS.len() + 1],
            sum_nanos: 0,
        }
    }

    /// One command answered after `d`.
    pub fn record(&mut self, d: std::time::Duration) {
        self.buckets[bucket_of(d)] += 1;
        self.sum_nanos = self
            .sum_nanos
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.n += 1;
    }

    /// Adds what was gathered to the shared counters.
    pub fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        self.counter.increment(self.n);
        for (shared, b) in self.durations.buckets.iter().zip(self.buckets.iter_mut()) {
            if *b > 0 {
                shared.fetch_add(*b, Ordering::Relaxed);
                *b = 0;
            }
        }
        self.durations
            .sum_nanos
            .fetch_add(self.sum_nanos, Ordering::Relaxed);
        self.sum_nanos = 0;
        self.n = 0;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The bucket of [`DURATION_BUCKETS`] a duration counts in (the last one
/// past every bound).
fn bucket_of(d: std::time::Duration) -> usize {
    DURATION_BUCKETS.partition_point(|&le| le < d.as_secs_f64())
}

/// The process's command durations.
pub static DURATIONS: Durations = Durations {
    buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64::new(0),
};

impl Durations {
    /// Records one command that took `d`.
    pub fn record(&self, d: std::time::Duration) {
        self.record_n(d, 1);
    }

    /// Records `n` commands that each took `d` (a batch answered at once).
    pub fn record_n(&self, d: std::time::Duration, n: u64) {
        self.buckets[bucket_of(d)].fetch_add(n, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos
            .fetch_add(nanos.saturating_mul(n), Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus's text format, as the exporter
    /// writes its own (so dashboards and `/history` read it unchanged).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "# HELP {COMMAND_DURATION} Time from a command's arrival to its reply, as the client sees it"
        );
        let _ = writeln!(out, "# TYPE {COMMAND_DURATION} histogram");
        let mut cumulative = 0u64;
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{COMMAND_DURATION}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{COMMAND_DURATION}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{COMMAND_DURATION}_sum {sum}");
        // The count is the buckets' total: a scrape racing a record never
        // shows a count the +Inf bucket disagrees with.
        let _ = writeln!(out, "{COMMAND_DURATION}_count {cumulative}");
    }
}

/// Near-cache lookups for local answers, by `result` (`hit`, `miss`).
pub const NEAR_CACHE_LOOKUPS: &str = "redoubt_near_cache_lookups_total";

/// Gives every metric this crate names its `# HELP` text (and unit), once,
/// after the recorder is installed: a scraper or a person reading
/// `/metrics` should not have to find the source to know what a number is.
/// The prober's metrics ([`upstream::health::PROBE_DURATION`],
/// [`upstream::health::VITALS`]) too.
pub fn describe() {
    describe_counter!(
        NEAR_CACHE_LOOKUPS,
        Unit::Count,
        "Near-cache lookups for local answers, by result (hit, miss: absent, expired or stale)"
    );
    describe_histogram!(
        upstream::health::PROBE_DURATION,
        Unit::Seconds,
        "Round trip of the health prober's PING to Redis"
    );
    for (name, field, counter) in upstream::health::VITALS {
        let help = format!("Redis INFO {field}, as the prober last read it");
        if *counter {
            describe_counter!(*name, help);
        } else {
            describe_gauge!(*name, help);
        }
    }
    describe_counter!(
        COMMANDS_TOTAL,
        Unit::Count,
        "Commands handled, by route (upstream, local, rejected) and the keyspace policy of the first key (none: no key)"
    );
    describe_gauge!(
        CLIENT_CONNECTIONS,
        Unit::Count,
        "Client connections open now"
    );
    describe_gauge!(
        UPSTREAM_UP,
        "1 when Redis answers through Redoubt (up, writes_down, recovering), else 0 (always 0 standalone)"
    );
    describe_gauge!(STATE, "1 for Redoubt's current state, 0 for the others");
    describe_gauge!(
        upstream::cluster::SLOTS_UNREACHABLE,
        Unit::Count,
        "Redis Cluster: slots whose primary Redoubt cannot reach now, or that no primary serves"
    );
    describe_gauge!(
        upstream::cluster::PRIMARIES,
        Unit::Count,
        "Redis Cluster: primaries in the slot map"
    );
    describe_counter!(
        upstream::cluster::FAILOVERS_TOTAL,
        Unit::Count,
        "Redis Cluster: failovers seen (a replica took over its primary's slots)"
    );
    describe_counter!(
        OUTAGES_TOTAL,
        Unit::Count,
        "Outages (Redis down or refusing writes) since start"
    );
    describe_counter!(
        OUTAGE_SECONDS_TOTAL,
        Unit::Seconds,
        "Seconds spent in outages that have ended"
    );
    describe_gauge!(
        OUTAGE_CURRENT_SECONDS,
        Unit::Seconds,
        "Seconds the current outage has lasted, 0 when there is none"
    );
    describe_gauge!(
        JOURNAL_PENDING,
        Unit::Count,
        "Journaled commands not yet replayed into Redis"
    );
    describe_gauge!(
        JOURNAL_BYTES,
        Unit::Bytes,
        "Bytes the journal holds on disk"
    );
    describe_gauge!(
        JOURNAL_MAX_BYTES,
        Unit::Bytes,
        "journal.max_bytes: writes are refused before the journal reaches it"
    );
    describe_counter!(
        WRITES_REFUSED,
        Unit::Count,
        "Writes refused because the journal could not keep them, by reason"
    );
    describe_gauge!(
        FALLBACK_KEYS,
        Unit::Count,
        "Keys Redoubt could answer locally (local store and near-cache; standalone: the dataset)"
    );
    describe_gauge!(
        FALLBACK_MEMORY,
        Unit::Bytes,
        "Bytes held for local answers (local store and near-cache; standalone: the dataset)"
    );
    describe_gauge!(
        REPLICA_STATE,
        "1 for the replica's current state (streaming, lost, refused, …), 0 for the others"
    );
    describe_gauge!(
        REPLICA_KEYS,
        Unit::Count,
        "Keys in Redoubt's replica of the durable keyspaces"
    );
    describe_gauge!(
        REPLICA_BYTES,
        Unit::Bytes,
        "Approximate bytes held by the replica of the durable keyspaces"
    );
    describe_gauge!(
        REPLICA_OFFSET,
        Unit::Bytes,
        "Replication stream offset the replica has applied"
    );
    describe_gauge!(
        REPLICA_LAG,
        Unit::Bytes,
        "Bytes of Redis's replication stream the replica has not applied yet (master_repl_offset from the prober's INFO minus the replica's offset)"
    );
    describe_gauge!(
        REPLICA_LAST_IO,
        Unit::Seconds,
        "Seconds since Redis last sent anything on the replication link (it pings every 10 s)"
    );
    describe_counter!(
        crate::replay::REPLAYED_COMMANDS_TOTAL,
        Unit::Count,
        "Journaled commands that ran in Redis on replay"
    );
    describe_counter!(
        crate::replay::REPLAY_ERRORS_TOTAL,
        Unit::Count,
        "Journaled commands Redis refused on replay (kept in replay-failed.jsonl)"
    );
}

/// Handles the sessions use.
#[derive(Clone)]
pub struct Metrics {
    /// Commands forwarded to Redis, by the policy of their first key
    /// ([`Policy`](crate::policy::Policy) order), and keyless ones.
    upstream: [Counter; 3],
    upstream_keyless: Counter,
    /// Commands answered by Redoubt itself.
    pub local: Counter,
    /// Commands refused (`-UNAVAILABLE`, limits).
    pub rejected: Counter,
    /// Per-command latency as the client sees it.
    pub duration: &'static Durations,
    /// Open client connections.
    pub clients: Gauge,
}

impl Metrics {
    /// Registers the handles with the installed recorder (or the no-op one).
    pub fn new() -> Metrics {
        // Answered or refused by the session itself (connection commands,
        // limits, refusals before any key is looked at): no policy. Outage
        // routing counts with the key's policy ([`OutageCounters`]), and
        // forwarded commands by their first key's ([`Metrics::count_upstream`]).
        let c =
            |route: &'static str| counter!(COMMANDS_TOTAL, "route" => route, "policy" => "none");
        let up = |policy: crate::policy::Policy| counter!(COMMANDS_TOTAL, "route" => "upstream", "policy" => policy.as_str());
        use crate::policy::Policy;
        Metrics {
            upstream: [up(Policy::FailFast), up(Policy::Cache), up(Policy::Durable)],
            upstream_keyless: counter!(COMMANDS_TOTAL, "route" => "upstream", "policy" => "none"),
            local: c("local"),
            rejected: c("rejected"),
            duration: &DURATIONS,
            clients: gauge!(CLIENT_CONNECTIONS),
        }
    }

    /// Counts one command sent to Redis under the policy of its first key
    /// (the command table's fixed first key: commands whose keys move,
    /// such as `EVAL`, count as keyless). No allocation: this runs for
    /// every forwarded command, and `spec` is the command's row as the
    /// gate found it (not looked up again).
    pub fn count_upstream(
        &self,
        keyspaces: Option<&crate::policy::Keyspaces>,
        args: &[bytes::Bytes],
        spec: Option<&resp::CommandSpec>,
    ) {
        match upstream_slot(keyspaces, args, spec) {
            KEYLESS => self.upstream_keyless.increment(1),
            p => self.upstream[p].increment(1),
        }
    }
}

/// Where [`upstream_slot`] puts a command without keys.
const KEYLESS: usize = 3;

/// The counter a forwarded command goes to: its first key's policy
/// ([`Policy`](crate::policy::Policy) order), or [`KEYLESS`].
fn upstream_slot(
    keyspaces: Option<&crate::policy::Keyspaces>,
    args: &[bytes::Bytes],
    spec: Option<&resp::CommandSpec>,
) -> usize {
    let first = spec
        .map(|s| s.first_key)
        .filter(|&k| k > 0)
        .and_then(|k| args.get(k as usize));
    match first {
        None => KEYLESS,
        Some(key) => keyspaces.map_or(crate::policy::Policy::FailFast, |k| k.policy(key)) as usize,
    }
}

/// Commands a session forwarded, counted as [`Metrics::count_upstream`]
/// does and added to the shared counters once per turn (and when dropped),
/// for the reason given at [`Tally`].
pub struct UpstreamTally {
    counters: [Counter; 4],
    counts: [u64; 4],
}

impl UpstreamTally {
    /// A tally that adds into `m`'s counters of forwarded commands.
    pub fn new(m: &Metrics) -> UpstreamTally {
        UpstreamTally {
            counters: [
                m.upstream[0].clone(),
                m.upstream[1].clone(),
                m.upstream[2].clone(),
                m.upstream_keyless.clone(),
            ],
            counts: [0; 4],
        }
    }

    /// One command forwarded.
    pub fn count(
        &mut self,
        keyspaces: Option<&crate::policy::Keyspaces>,
        args: &[bytes::Bytes],
        spec: Option<&resp::CommandSpec>,
    ) {
        self.counts[upstream_slot(keyspaces, args, spec)] += 1;
    }

    /// Adds what was counted to the shared counters.
    pub fn flush(&mut self) {
        for (c, n) in self.counters.iter().zip(self.counts.iter_mut()) {
            if *n > 0 {
                c.increment(*n);
                *n = 0;
            }
        }
    }
}

impl Drop for UpstreamTally {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The counters the outage adds to per command, taken once and kept: a
/// counter looked up by its labels costs an allocation, a hash and a lock.
pub struct OutageCounters {
    /// Commands routed by keyspace during an outage, by route (`local`,
    /// `rejected`) and by the first key's policy
    /// ([`Policy`](crate::policy::Policy) order, then `none`).
    pub routed: [[Counter; 4]; 2],
    /// [`NEAR_CACHE_LOOKUPS`] that found the key.
    pub near_hit: Counter,
    /// [`NEAR_CACHE_LOOKUPS`] that did not.
    pub near_miss: Counter,
}

impl Default for OutageCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl OutageCounters {
    /// Registers them with the installed recorder.
    pub fn new() -> OutageCounters {
        use crate::policy::Policy;
        let row = |route: &'static str| {
            [
                Policy::FailFast.as_str(),
                Policy::Cache.as_str(),
                Policy::Durable.as_str(),
                "none",
            ]
            .map(|policy| counter!(COMMANDS_TOTAL, "route" => route, "policy" => policy))
        };
        OutageCounters {
            routed: [row("local"), row("rejected")],
            near_hit: counter!(NEAR_CACHE_LOOKUPS, "result" => "hit"),
            near_miss: counter!(NEAR_CACHE_LOOKUPS, "result" => "miss"),
        }
    }
}

/// Counts one write refused for `reason` (`journal-full`,
/// `journal-failed`).
pub fn count_write_refused(reason: &'static str) {
    counter!(WRITES_REFUSED, "reason" => reason).increment(1);
}

/// Publishes [`REPLICA_STATE`] for `state`.
pub fn replica_state(state: &str) {
    for s in REPLICA_STATES {
        gauge!(REPLICA_STATE, "state" => *s).set(if *s == state { 1.0 } else { 0.0 });
    }
}

/// Publishes `redoubt_state` and `redoubt_upstream_up` for `state`.
pub fn publish_state(state: State) {
    for s in State::ALL {
        gauge!(STATE, "state" => s.as_str()).set(if s == state { 1.0 } else { 0.0 });
    }
    gauge!(UPSTREAM_UP).set(
        if matches!(state, State::Up | State::WritesDown | State::Recovering) {
            1.0
        } else {
            0.0
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_render_as_a_cumulative_prometheus_histogram() {
        let d = Durations {
            buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        };
        d.record(Duration::from_micros(30));
        d.record_n(Duration::from_micros(100), 2); // on a bound: that bucket
        d.record(Duration::from_secs(60));
        let mut text = String::from("# TYPE other gauge\nother 1\n");
        d.render(&mut text);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l.as_bytes()[name.len()] == b' ')
                .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert!(text.contains("other 1\n\n# HELP redoubt_command_duration_seconds "));
        assert_eq!(
            line("redoubt_command_duration_seconds_bucket{le=\"0.00005\"}"),
            "1"
        );
        assert_eq!(
            line("redoubt_command_duration_seconds_bucket{le=\"0.0001\"}"),
            "3"
        );
        assert_eq!(
            line("redoubt_command_duration_seconds_bucket{le=\"10\"}"),
            "3"
        );
        assert_eq!(
            line("redoubt_command_duration_seconds_bucket{le=\"+Inf\"}"),
            "4"
        );
        assert_eq!(line("redoubt_command_duration_seconds_count"), "4");
        let sum: f64 = line("redoubt_command_duration_seconds_sum")
            .parse()
            .unwrap_or(0.0);
        assert!((sum - 60.00023).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn a_tally_adds_its_turn_once_at_flush_and_what_is_left_when_dropped() {
        let d: &'static Durations = Box::leak(Box::new(Durations {
            buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }));
        let count = std::sync::Arc::new(AtomicU64::new(0));
        let mut t = Tally::new(Counter::from_arc(count.clone()), d);
        t.record(Duration::from_micros(30));
        t.record(Duration::from_micros(30));
        t.record(Duration::from_secs(60));
        let total = |d: &Durations| {
            d.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        assert_eq!(total(d), 0, "nothing shared before the turn ends");
        assert_eq!(count.load(Ordering::Relaxed), 0);
        t.flush();
        assert_eq!(count.load(Ordering::Relaxed), 3);
        assert_eq!(
            d.buckets[0].load(Ordering::Relaxed),
            2,
            "30 µs: under 50 µs"
        );
        assert_eq!(
            d.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed),
            1,
            "past every bound"
        );
        assert_eq!(d.sum_nanos.load(Ordering::Relaxed), 60_000_060_000);
        t.flush();
        assert_eq!(
            count.load(Ordering::Relaxed),
            3,
            "a second flush adds nothing"
        );
        t.record(Duration::from_micros(30));
        drop(t);
        assert_eq!(count.load(Ordering::Relaxed), 4);
        assert_eq!(total(d), 4);
    }
}
