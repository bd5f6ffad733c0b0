//! The last minutes of traffic for the status page: commands per second
//! by route, latency, journal depth and client connections, one point a
//! second in a ring buffer.
//!
//! Sampled from the `/metrics` text, off the data path: the sessions only
//! bump the counters they already bump, and a task of the admin server
//! renders and reads them once a second. Prometheus keeps the long
//! history; this is what an on-call person sees without one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How often a point is taken.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Points kept: ten minutes at [`INTERVAL`].
pub const CAPACITY: usize = 600;

/// The metric names read here. They are proxy's (`proxy::metrics`); the
/// admin crate does not depend on it, so a test in `redoubt` checks that
/// the two agree.
pub mod names {
    /// `redoubt_commands_total{route,policy}`.
    pub const COMMANDS_TOTAL: &str = "redoubt_commands_total";
    /// `redoubt_command_duration_seconds` histogram.
    pub const COMMAND_DURATION: &str = "redoubt_command_duration_seconds";
    /// `redoubt_journal_pending_commands` gauge.
    pub const JOURNAL_PENDING: &str = "redoubt_journal_pending_commands";
    /// `redoubt_client_connections` gauge.
    pub const CLIENT_CONNECTIONS: &str = "redoubt_client_connections";
    /// `redoubt_writes_refused_total{reason}`.
    pub const WRITES_REFUSED: &str = "redoubt_writes_refused_total";
    /// `redoubt_upstream_probe_duration_seconds` histogram: the prober's
    /// `PING` round trip to Redis.
    pub const PROBE_DURATION: &str = "redoubt_upstream_probe_duration_seconds";
}

/// Cumulative values read from one render of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// `redoubt_commands_total` summed by `route`.
    pub commands: BTreeMap<String, f64>,
    /// `redoubt_commands_total{route="rejected"}` by `policy`.
    pub rejected_by_policy: BTreeMap<String, f64>,
    /// `redoubt_writes_refused_total` by `reason`.
    pub writes_refused: BTreeMap<String, f64>,
    /// The duration histogram's `_sum`, seconds.
    pub duration_sum: f64,
    /// The duration histogram's `_count`.
    pub duration_count: f64,
    /// The duration histogram's buckets: (upper bound in seconds,
    /// cumulative count), `+Inf` included.
    pub duration_buckets: Vec<(f64, f64)>,
    /// `redoubt_journal_pending_commands`, when exported (proxy mode with
    /// local keyspaces).
    pub journal_pending: Option<f64>,
    /// `redoubt_client_connections`.
    pub clients: Option<f64>,
    /// The probe histogram's `_sum` (seconds) and `_count`.
    pub probe_sum: f64,
    /// See [`probe_sum`](Self::probe_sum).
    pub probe_count: f64,
}

impl Totals {
    /// Reads the series this module uses from Prometheus text; anything
    /// else, and any line it cannot read, is skipped.
    pub fn parse(text: &str) -> Totals {
        let mut t = Totals::default();
        for line in text.lines() {
            let Some((name, labels, value)) = parse_line(line) else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            match name {
                names::COMMANDS_TOTAL => {
                    let route = label("route");
                    if route == "rejected" {
                        *t.rejected_by_policy.entry(label("policy")).or_default() += value;
                    }
                    *t.commands.entry(route).or_default() += value;
                }
                names::WRITES_REFUSED => {
                    *t.writes_refused.entry(label("reason")).or_default() += value;
                }
                names::JOURNAL_PENDING => t.journal_pending = Some(value),
                names::CLIENT_CONNECTIONS => t.clients = Some(value),
                _ if name.starts_with(names::PROBE_DURATION) => {
                    match &name[names::PROBE_DURATION.len()..] {
                        "_sum" => t.probe_sum = value,
                        "_count" => t.probe_count = value,
                        _ => {}
                    }
                }
                _ => {
                    let Some(suffix) = name.strip_prefix(names::COMMAND_DURATION) else {
                        continue;
                    };
                    match suffix {
                        "_sum" => t.duration_sum = value,
                        "_count" => t.duration_count = value,
                        "_bucket" => {
                            let le = label("le");
                            let bound = if le == "+Inf" {
                                f64::INFINITY
                            } else {
                                match le.parse() {
                                    Ok(b) => b,
                                    Err(_) => continue,
                                }
                            };
                            t.duration_buckets.push((bound, value));
                        }
                        _ => {}
                    }
                }
            }
        }
        t.duration_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        t
    }
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

/// One sample line: name, labels, value. `None` for comments, blank lines
/// and anything malformed.
fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // A timestamp may follow the value; Redoubt's exporter writes none.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// `key="value",…}` → the pairs and what follows the `}`. Values are
/// unescaped (`\\`, `\"`, `\n`), as the text format defines.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((out, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        out.push((key, value));
        s = &s[end?..];
    }
}

/// One second of traffic.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    at_unix_ms: u64,
    commands_per_s: BTreeMap<String, f64>,
    latency_avg_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    journal_pending: Option<f64>,
    clients: Option<f64>,
    /// Redis's round trip as the prober measured it (average `PING`).
    upstream_rtt_ms: Option<f64>,
}

/// The ring buffer and the totals of the last sample.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    points: VecDeque<Point>,
    last: Option<(Instant, Totals)>,
}

/// `/history`: the points in columns (a sparkline wants one array per
/// line), oldest first, and the latest totals.
#[derive(Debug, Serialize)]
struct Columns {
    interval_ms: u64,
    at_unix_ms: Vec<u64>,
    commands_per_s: BTreeMap<String, Vec<f64>>,
    latency_avg_ms: Vec<Option<f64>>,
    latency_p99_ms: Vec<Option<f64>>,
    journal_pending: Vec<Option<f64>>,
    clients: Vec<Option<f64>>,
    upstream_rtt_ms: Vec<Option<f64>>,
    totals: TotalsJson,
}

#[derive(Debug, Serialize, Default)]
struct TotalsJson {
    commands: BTreeMap<String, f64>,
    rejected_by_policy: BTreeMap<String, f64>,
    writes_refused: BTreeMap<String, f64>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Takes a sample from one render of `/metrics` made at `now`
    /// (`at` the wall clock for the page): the first only sets the
    /// baseline, each later one adds a point of rates since the previous.
    pub fn record(&self, text: &str, now: Instant, at: SystemTime) {
        let cur = Totals::parse(text);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((then, prev)) = &inner.last {
            let secs = now.saturating_duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let point = Point::between(prev, &cur, secs, at);
                inner.points.push_back(point);
                while inner.points.len() > CAPACITY {
                    inner.points.pop_front();
                }
            }
        }
        inner.last = Some((now, cur));
    }

    /// The JSON for `GET /history`.
    pub fn to_json(&self) -> serde_json::Value {
        let Ok(inner) = self.inner.lock() else {
            return serde_json::Value::Null;
        };
        let routes: std::collections::BTreeSet<&String> = inner
            .points
            .iter()
            .flat_map(|p| p.commands_per_s.keys())
            .collect();
        let cols = Columns {
            interval_ms: INTERVAL.as_millis() as u64,
            at_unix_ms: inner.points.iter().map(|p| p.at_unix_ms).collect(),
            commands_per_s: routes
                .into_iter()
                .map(|r| {
                    let line = inner
                        .points
                        .iter()
                        .map(|p| p.commands_per_s.get(r).copied().unwrap_or(0.0))
                        .collect();
                    (r.clone(), line)
                })
                .collect(),
            latency_avg_ms: inner.points.iter().map(|p| p.latency_avg_ms).collect(),
            latency_p99_ms: inner.points.iter().map(|p| p.latency_p99_ms).collect(),
            journal_pending: inner.points.iter().map(|p| p.journal_pending).collect(),
            clients: inner.points.iter().map(|p| p.clients).collect(),
            upstream_rtt_ms: inner.points.iter().map(|p| p.upstream_rtt_ms).collect(),
            totals: inner
                .last
                .as_ref()
                .map(|(_, t)| TotalsJson {
                    commands: t.commands.clone(),
                    rejected_by_policy: t.rejected_by_policy.clone(),
                    writes_refused: t.writes_refused.clone(),
                })
                .unwrap_or_default(),
        };
        serde_json::to_value(cols).unwrap_or(serde_json::Value::Null)
    }
}

impl Point {
    /// Rates between two samples `secs` apart. A counter that went down
    /// (a restart would do it; the recorder lives as long as the process)
    /// counts as 0, not as a negative rate.
    fn between(prev: &Totals, cur: &Totals, secs: f64, at: SystemTime) -> Point {
        let commands_per_s = cur
            .commands
            .iter()
            .map(|(route, n)| {
                let before = prev.commands.get(route).copied().unwrap_or(0.0);
                (route.clone(), ((n - before) / secs).max(0.0))
            })
            .collect();
        let count = cur.duration_count - prev.duration_count;
        let latency_avg_ms =
            (count > 0.0).then(|| (cur.duration_sum - prev.duration_sum) / count * 1000.0);
        Point {
            at_unix_ms: at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            commands_per_s,
            latency_avg_ms,
            latency_p99_ms: quantile(&prev.duration_buckets, &cur.duration_buckets, 0.99)
                .map(|s| s * 1000.0),
            journal_pending: cur.journal_pending,
            clients: cur.clients,
            upstream_rtt_ms: {
                let n = cur.probe_count - prev.probe_count;
                (n > 0.0).then(|| (cur.probe_sum - prev.probe_sum) / n * 1000.0)
            },
        }
    }
}

/// The upper bound of the bucket holding quantile `q` of the samples that
/// arrived between two cumulative histograms (seconds); `None` when none
/// did. A sample past the last finite bound reads as that bound: the
/// page says "≤", so this errs towards the known.
fn quantile(prev: &[(f64, f64)], cur: &[(f64, f64)], q: f64) -> Option<f64> {
    let before = |bound: f64| {
        prev.iter()
            .find(|(b, _)| *b == bound)
            .map_or(0.0, |(_, n)| *n)
    };
    let deltas: Vec<(f64, f64)> = cur.iter().map(|(b, n)| (*b, n - before(*b))).collect();
    let total = deltas.last().map(|(_, n)| *n)?;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let last_finite = deltas
        .iter()
        .rev()
        .find(|(b, _)| b.is_finite())
        .map(|(b, _)| *b);
    deltas.iter().find(|(_, n)| *n >= target).map(|(b, _)| {
        if b.is_finite() {
            *b
        } else {
            last_finite.unwrap_or(*b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP redoubt_commands_total Commands handled
# TYPE redoubt_commands_total counter
redoubt_commands_total{route="upstream",policy="none"} 100
redoubt_commands_total{route="local",policy="durable"} 4
redoubt_commands_total{route="rejected",policy="none"} 2
redoubt_commands_total{route="rejected",policy="fail-fast"} 3
redoubt_writes_refused_total{reason="journal-full"} 1
redoubt_journal_pending_commands 7
redoubt_client_connections 3
redoubt_state{state="odd \"quoted\", value"} 1
redoubt_command_duration_seconds_bucket{le="0.001"} 90
redoubt_command_duration_seconds_bucket{le="0.01"} 100
redoubt_command_duration_seconds_bucket{le="+Inf"} 109
redoubt_command_duration_seconds_sum 0.5
redoubt_command_duration_seconds_count 109
redoubt_upstream_probe_duration_seconds_bucket{le="+Inf"} 4
redoubt_upstream_probe_duration_seconds_sum 0.002
redoubt_upstream_probe_duration_seconds_count 4
"#;

    #[test]
    fn the_metrics_text_is_read_by_route_reason_and_bucket() {
        let t = Totals::parse(TEXT);
        assert_eq!(t.commands["upstream"], 100.0);
        assert_eq!(t.commands["rejected"], 5.0);
        assert_eq!(t.rejected_by_policy["fail-fast"], 3.0);
        assert_eq!(t.writes_refused["journal-full"], 1.0);
        assert_eq!(t.journal_pending, Some(7.0));
        assert_eq!(t.clients, Some(3.0));
        assert_eq!(t.duration_count, 109.0);
        assert_eq!(t.duration_buckets.len(), 3);
        assert!(t.duration_buckets[2].0.is_infinite());
        assert_eq!(Totals::parse("garbage{\nx 1\n{}"), Totals::default());
    }

    #[test]
    fn a_point_is_the_rate_between_two_samples_and_the_ring_is_bounded() {
        let h = History::new();
        let t0 = Instant::now();
        h.record(TEXT, t0, SystemTime::now());
        assert_eq!(h.to_json()["at_unix_ms"].as_array().map(Vec::len), Some(0));
        let later = TEXT
            .replace("none\"} 100", "none\"} 300")
            .replace("le=\"0.001\"} 90", "le=\"0.001\"} 91")
            .replace("le=\"0.01\"} 100", "le=\"0.01\"} 101")
            .replace("le=\"+Inf\"} 109", "le=\"+Inf\"} 209")
            .replace("_sum 0.5", "_sum 1.5")
            .replace("_count 109", "_count 209")
            .replace("_sum 0.002", "_sum 0.006")
            .replace("_count 4", "_count 8");
        h.record(&later, t0 + Duration::from_secs(2), SystemTime::now());
        let j = h.to_json();
        assert_eq!(j["commands_per_s"]["upstream"][0], 100.0);
        assert_eq!(j["commands_per_s"]["local"][0], 0.0);
        assert_eq!(j["latency_avg_ms"][0], 10.0);
        // 98 of the 100 new samples were past 10 ms: the last finite bound.
        assert_eq!(j["latency_p99_ms"][0], 10.0);
        assert_eq!(j["journal_pending"][0], 7.0);
        // Four probes, 4 ms in all: Redis's round trip.
        assert_eq!(j["upstream_rtt_ms"][0], 1.0);
        assert_eq!(j["totals"]["writes_refused"]["journal-full"], 1.0);
        for i in 0..CAPACITY as u64 + 10 {
            h.record(TEXT, t0 + Duration::from_secs(3 + i), SystemTime::now());
        }
        assert_eq!(
            h.to_json()["at_unix_ms"].as_array().map(Vec::len),
            Some(CAPACITY)
        );
    }

    #[test]
    fn the_quantile_is_the_bound_of_the_bucket_that_holds_it() {
        let prev = [(0.001, 0.0), (0.01, 0.0), (f64::INFINITY, 0.0)];
        let cur = [(0.001, 99.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&prev, &cur, 0.99), Some(0.001));
        assert_eq!(quantile(&prev, &cur, 0.995), Some(0.01));
        assert_eq!(quantile(&cur, &cur, 0.99), None, "no new samples");
    }
}
