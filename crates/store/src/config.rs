//! `CONFIG GET/SET/RESETSTAT` over Redis 7.0's parameter list.
//!
//! Every parameter Redis 7.0 knows is stored and reported so tools that set
//! them keep working. These take effect in the store: `maxmemory`,
//! `maxmemory-policy`, `maxmemory-samples`, `notify-keyspace-events`
//! (keyspace notifications), `proto-max-bulk-len`
//! (string growth limit of APPEND/SETRANGE/SETBIT), `lfu-log-factor`,
//! `lfu-decay-time`, `active-expire-effort`. The others have no effect.

use std::collections::BTreeMap;

use resp::Frame;

use crate::ctx::{Ctx, Reply};
use crate::glob::glob_match;

#[path = "config_table.rs"]
mod table;

/// How `CONFIG SET` validates a parameter's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// `yes` / `no`.
    Bool,
    /// A signed integer.
    Int,
    /// A memory amount (`100mb`, `1gb`, bytes).
    Memory,
    /// One of the listed words.
    Enum(&'static str),
    /// Anything.
    Text,
    /// `notify-keyspace-events` letters.
    Events,
}

/// Eviction policies, `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Refuse writes that need memory.
    NoEviction,
    /// Least recently used among all keys.
    AllKeysLru,
    /// Least frequently used among all keys.
    AllKeysLfu,
    /// Any key.
    AllKeysRandom,
    /// LRU among keys with a TTL.
    VolatileLru,
    /// LFU among keys with a TTL.
    VolatileLfu,
    /// Any key with a TTL.
    VolatileRandom,
    /// The key with the nearest expiry.
    VolatileTtl,
}

impl Policy {
    fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "noeviction" => Policy::NoEviction,
            "allkeys-lru" => Policy::AllKeysLru,
            "allkeys-lfu" => Policy::AllKeysLfu,
            "allkeys-random" => Policy::AllKeysRandom,
            "volatile-lru" => Policy::VolatileLru,
            "volatile-lfu" => Policy::VolatileLfu,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => return None,
        })
    }

    /// True for the `volatile-*` policies.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }
}

/// The parameters, with the typed values the store acts on.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    values: BTreeMap<&'static str, String>,
    pub maxmemory: u64,
    pub policy: Policy,
    pub samples: usize,
    pub proto_max_bulk_len: u64,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u64,
    /// Enabled keyspace notification classes.
    pub notify_flags: u32,
    /// busy-reply-threshold (alias lua-time-limit) in ms: a script running
    /// longer makes other clients get BUSY and may be killed.
    pub busy_reply_ms: u64,
    /// `min-replicas-to-write` asks for replicas (with `min-replicas-max-lag`
    /// set): the store has none, so writes are refused with NOREPLICAS.
    pub no_replicas: bool,
}

impl Config {
    pub fn new() -> Config {
        let mut c = Config {
            values: table::PARAMS
                .iter()
                .map(|(n, v, _)| (*n, v.to_string()))
                .collect(),
            maxmemory: 0,
            policy: Policy::NoEviction,
            samples: 5,
            proto_max_bulk_len: 512 * 1024 * 1024,
            lfu_log_factor: 10,
            lfu_decay_time: 1,
            notify_flags: 0,
            busy_reply_ms: 5000,
            no_replicas: false,
        };
        c.refresh();
        c
    }

    /// A parameter's current text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|s| s.as_str())
    }

    fn refresh(&mut self) {
        let num = |c: &Config, n: &str| c.get(n).and_then(parse_memory).unwrap_or(0);
        self.maxmemory = num(self, "maxmemory");
        self.proto_max_bulk_len = num(self, "proto-max-bulk-len");
        self.samples = num(self, "maxmemory-samples").max(1) as usize;
        self.lfu_log_factor = num(self, "lfu-log-factor") as u32;
        self.lfu_decay_time = num(self, "lfu-decay-time");
        self.busy_reply_ms = num(self, "busy-reply-threshold");
        self.no_replicas =
            num(self, "min-replicas-to-write") > 0 && num(self, "min-replicas-max-lag") > 0;
        self.policy = self
            .get("maxmemory-policy")
            .and_then(Policy::parse)
            .unwrap_or(Policy::NoEviction);
    }

    /// Sets a parameter from a caller outside the command path (start-up).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let Some(&(n, _, kind)) = table::PARAMS.iter().find(|(n, _, _)| *n == name) else {
            return Err(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
        };
        let v = validate(n, kind, value)?;
        self.store(n, value, v);
        self.refresh();
        Ok(())
    }

    /// Records a validated value. Keyspace-event flags are kept from what
    /// was given: Redis's canonical text drops `n` when `A` is set (it
    /// shows `AKE` for `KEAn`) but the `new` events still flow.
    fn store(&mut self, name: &'static str, given: &str, canonical: String) {
        if name == "notify-keyspace-events" {
            self.notify_flags = crate::pubsub::parse_events(given).unwrap_or(0);
        }
        // lua-time-limit is the old name of busy-reply-threshold: one value.
        if name == "busy-reply-threshold" {
            self.values.insert("lua-time-limit", canonical.clone());
        } else if name == "lua-time-limit" {
            self.values
                .insert("busy-reply-threshold", canonical.clone());
        }
        self.values.insert(name, canonical);
    }
}

/// Parses Redis memory units: `1k` = 1000, `1kb` = 1024, … (case-insensitive).
pub(crate) fn parse_memory(s: &str) -> Option<u64> {
    let l = s.to_ascii_lowercase();
    let units: [(&str, u64); 6] = [
        ("kb", 1024),
        ("mb", 1 << 20),
        ("gb", 1 << 30),
        ("k", 1000),
        ("m", 1_000_000),
        ("g", 1_000_000_000),
    ];
    for (u, mul) in units {
        if let Some(n) = l.strip_suffix(u) {
            return n.parse::<u64>().ok()?.checked_mul(mul);
        }
    }
    if let Some(n) = l.strip_suffix('b') {
        return n.parse().ok();
    }
    l.parse::<i64>().ok().map(|v| v.max(0) as u64)
}

fn validate(name: &str, kind: Kind, value: &str) -> Result<String, String> {
    let fail = |why: String| {
        Err(format!(
            "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
        ))
    };
    match kind {
        Kind::Bool => match value.to_ascii_lowercase().as_str() {
            "yes" | "no" => Ok(value.to_ascii_lowercase()),
            _ => fail("argument must be 'yes' or 'no'".into()),
        },
        Kind::Int => match value.parse::<i64>() {
            Ok(v) => Ok(v.to_string()),
            Err(_) => fail("argument couldn't be parsed into an integer".into()),
        },
        Kind::Memory => match parse_memory(value) {
            Some(v) => Ok(v.to_string()),
            None => fail("argument must be a memory value".into()),
        },
        Kind::Enum(words) => {
            let l = value.to_ascii_lowercase();
            if words.split(", ").any(|w| w == l) {
                Ok(l)
            } else {
                fail(format!("argument(s) must be one of the following: {words}"))
            }
        }
        Kind::Text => Ok(value.to_string()),
        Kind::Events => match crate::pubsub::parse_events(value) {
            Some(f) => Ok(crate::pubsub::events_text(f)),
            None => fail("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.".into()),
        },
    }
}

pub(crate) const COMMANDS: &[(&str, crate::ctx::Handler)] = &[
    ("config|get", config_get),
    ("config|set", config_set),
    ("config|resetstat", config_resetstat),
    ("config|rewrite", config_rewrite),
];

fn config_get(ctx: &mut Ctx) -> Reply {
    let mut out: Vec<(Frame, Frame)> = Vec::new();
    let cfg = &ctx.inner.config;
    for pat in &ctx.args[2..] {
        for (name, v) in &cfg.values {
            if glob_match(pat, name.as_bytes(), true)
                && !out
                    .iter()
                    .any(|(k, _)| k.as_bytes() == Some(name.as_bytes()))
            {
                out.push((Frame::bulk(name), Frame::bulk(v)));
            }
        }
    }
    Ok(ctx.map(out))
}

fn config_set(ctx: &mut Ctx) -> Reply {
    let args = &ctx.args[2..];
    if !args.len().is_multiple_of(2) {
        return Err(Frame::error(
            "ERR wrong number of arguments for 'config|set' command",
        ));
    }
    // All or nothing, like Redis: validate every pair before applying any.
    let mut staged = Vec::new();
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        let Some(&(n, _, kind)) = table::PARAMS.iter().find(|(n, _, _)| *n == name) else {
            return Err(Frame::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(&pair[0])
            )));
        };
        if staged.iter().any(|(s, _, _)| *s == n) {
            return Err(Frame::error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{n}') - duplicate parameter"
            )));
        }
        let v = validate(n, kind, &String::from_utf8_lossy(&pair[1])).map_err(Frame::error)?;
        staged.push((n, String::from_utf8_lossy(&pair[1]).into_owned(), v));
    }
    for (n, given, v) in staged {
        ctx.inner.config.store(n, &given, v);
    }
    ctx.inner.config.refresh();
    Ok(Frame::simple("OK"))
}

fn config_resetstat(ctx: &mut Ctx) -> Reply {
    ctx.inner.stats.reset();
    Ok(Frame::simple("OK"))
}

fn config_rewrite(_ctx: &mut Ctx) -> Reply {
    Err(Frame::error(
        "ERR The server is running without a config file",
    ))
}
