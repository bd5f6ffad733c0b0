//! Everything the checks look at, gathered once per diagnosis. Checks
//! never talk to Redis themselves: that keeps them pure functions of a
//! snapshot, testable on captured text.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::host::HostFacts;

/// Counters Redis only ever increases (or that should not drop), kept in
/// a [`Report`](crate::Report) so the next diagnosis can tell what
/// happened *since* rather than since Redis started. The proxy passes the
/// previous report's counters as [`DoctorOptions::baseline`](crate::DoctorOptions::baseline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// `run_id`: a different one means Redis restarted and counters reset.
    pub run_id: Option<String>,
    /// `evicted_keys`.
    pub evicted_keys: Option<u64>,
    /// `rejected_connections`.
    pub rejected_connections: Option<u64>,
    /// `connected_slaves` of a master.
    pub connected_slaves: Option<u64>,
}

/// One connection from `CLIENT LIST`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientEntry {
    pub addr: String,
    pub name: String,
    pub idle: u64,
    pub flags: String,
    pub omem: u64,
    pub cmd: String,
    /// Channels + patterns subscribed; such clients are exempt from `timeout`.
    pub subs: u64,
}

/// One `SLOWLOG GET` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlowEntry {
    pub micros: u64,
    pub command: String,
}

/// One `LATENCY LATEST` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LatencyEvent {
    pub event: String,
    pub latest_ms: u64,
    pub max_ms: u64,
}

/// A key seen by the SCAN sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SampledKey {
    pub name: String,
    pub kind: String,
    /// Bytes for strings, elements for collections; `None` if unknown.
    pub size: Option<u64>,
    /// Seconds to live; -1 means no expiry.
    pub ttl: i64,
}

/// What one diagnosis read. Missing data (a command renamed away, no
/// permission) leaves fields empty; checks then stay silent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub info: HashMap<String, String>,
    pub config: HashMap<String, String>,
    pub clients: Vec<ClientEntry>,
    pub slowlog_len: Option<u64>,
    pub slowlog: Vec<SlowEntry>,
    pub latency: Vec<LatencyEvent>,
    pub keys: Vec<SampledKey>,
    pub cluster: HashMap<String, String>,
    /// `ACL LIST` lines.
    pub acl_users: Vec<String>,
    /// The user judged by the dangerous-commands check and which of the
    /// probed commands it may run.
    pub dangerous: Option<(String, Vec<String>)>,
    /// The user this connection acts as and which replication commands
    /// it may not run (Redoubt's replica needs `PSYNC` and `REPLCONF`).
    pub replica_grant: Option<(String, Vec<String>)>,
    /// Whether the app user was named by the caller (a warning) or is the
    /// `default` user by assumption (information).
    pub app_user_named: bool,
    pub host: Option<HostFacts>,
    /// Seconds since the epoch on the doctor's clock, for Redis servers
    /// too old to report their own time.
    pub now_unix: u64,
    /// Counters from an earlier diagnosis of the same Redis.
    pub baseline: Option<Counters>,
}

impl Snapshot {
    /// An INFO field as text.
    pub fn s(&self, key: &str) -> Option<&str> {
        self.info.get(key).map(String::as_str)
    }

    /// An INFO field as an unsigned number.
    pub fn u(&self, key: &str) -> Option<u64> {
        self.s(key)?.parse().ok()
    }

    /// An INFO field as a float.
    pub fn f(&self, key: &str) -> Option<f64> {
        self.s(key)?.parse().ok()
    }

    /// A CONFIG value.
    pub fn cfg(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }

    /// This snapshot's counters.
    pub fn counters(&self) -> Counters {
        Counters {
            run_id: self.s("run_id").map(str::to_string),
            evicted_keys: self.u("evicted_keys"),
            rejected_connections: self.u("rejected_connections"),
            connected_slaves: self.u("connected_slaves"),
        }
    }

    /// The baseline, if it is from this same Redis process (same run_id).
    pub fn baseline(&self) -> Option<&Counters> {
        self.baseline
            .as_ref()
            .filter(|b| b.run_id.is_some() && b.run_id.as_deref() == self.s("run_id"))
    }

    /// Redis's clock when it reports it, else ours.
    pub fn now(&self) -> u64 {
        self.u("server_time_usec")
            .map(|us| us / 1_000_000)
            .unwrap_or(self.now_unix)
    }
}

/// Parses INFO text (`key:value` lines, `#` section headers) into a map.
pub(crate) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Parses `CLIENT LIST` text, one client per line of `key=value` pairs.
pub(crate) fn parse_client_list(text: &str) -> Vec<ClientEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut c = ClientEntry::default();
            for (k, v) in line.split_whitespace().filter_map(|kv| kv.split_once('=')) {
                let n = || v.parse::<u64>().unwrap_or(0);
                match k {
                    "addr" => c.addr = v.to_string(),
                    "name" => c.name = v.to_string(),
                    "idle" => c.idle = n(),
                    "flags" => c.flags = v.to_string(),
                    "omem" => c.omem = n(),
                    "cmd" => c.cmd = v.to_string(),
                    "sub" | "psub" | "ssub" => c.subs += n(),
                    _ => {}
                }
            }
            c
        })
        .collect()
}

/// Fields of a `slave0:ip=...,port=...,lag=0` INFO value.
pub(crate) fn parse_kv_list(v: &str) -> HashMap<&str, &str> {
    v.split(',').filter_map(|kv| kv.split_once('=')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections_flatten_into_one_map() {
        let m = parse_info("# Memory\r\nused_memory:100\r\nmaxmemory:0\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\n");
        assert_eq!(m.get("used_memory").map(String::as_str), Some("100"));
        assert_eq!(
            m.get("db0").map(String::as_str),
            Some("keys=3,expires=0,avg_ttl=0")
        );
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn client_list_lines_become_entries() {
        let text = "id=3 addr=10.1.2.3:5000 laddr=127.0.0.1:6379 fd=8 name=worker age=9 idle=7200 flags=N db=0 sub=0 psub=1 ssub=0 omem=4096 cmd=get user=default\n\
                    id=4 addr=10.1.2.4:5000 name= idle=0 flags=S omem=0 cmd=psync\n";
        let c = parse_client_list(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].addr, "10.1.2.3:5000");
        assert_eq!(c[0].name, "worker");
        assert_eq!(c[0].idle, 7200);
        assert_eq!(c[0].omem, 4096);
        assert_eq!(c[0].subs, 1);
        assert_eq!(c[1].flags, "S");
        assert_eq!(c[1].cmd, "psync");
    }

    #[test]
    fn replica_lines_split_into_fields() {
        let f = parse_kv_list("ip=10.0.0.2,port=6380,state=online,offset=100,lag=12");
        assert_eq!(f.get("lag"), Some(&"12"));
    }
}
