//! Keyspace policies and what each command may do while Redis is not Up.
//!
//! Each key maps to a policy by the first matching `[[keyspace]]` glob
//! (Redis glob syntax, every db). During an outage a `durable` key accepts
//! reads of values Redoubt knows, blind writes, and value-dependent writes
//! on known values; never conditional writes, pops, scripts or mixed
//! multi-key writes, whose replay would not reproduce their outcome. The
//! command rules are a table ([`OUTAGE_TABLE`]), each row tested.

use bytes::Bytes;

/// What happens to a key's commands while Redis is not Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Refused with `-UNAVAILABLE` (the default for keys matching nothing).
    FailFast,
    /// Served from the near-cache; writes stay local, invalidations are
    /// journaled.
    Cache,
    /// Served from the local store; writes journaled before the reply.
    Durable,
}

impl Policy {
    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "fail-fast" => Some(Policy::FailFast),
            "cache" => Some(Policy::Cache),
            "durable" => Some(Policy::Durable),
            _ => None,
        }
    }

    /// The metric label / config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::FailFast => "fail-fast",
            Policy::Cache => "cache",
            Policy::Durable => "durable",
        }
    }
}

/// The ordered `[[keyspace]]` rules.
#[derive(Debug, Clone, Default)]
pub struct Keyspaces {
    rules: Vec<(Bytes, Policy)>,
}

impl Keyspaces {
    /// Rules in config order; the first match wins.
    pub fn new(rules: Vec<(String, Policy)>) -> Keyspaces {
        Keyspaces {
            rules: rules
                .into_iter()
                .map(|(p, pol)| (Bytes::from(p), pol))
                .collect(),
        }
    }

    /// The policy of `key`.
    pub fn policy(&self, key: &[u8]) -> Policy {
        self.rules
            .iter()
            .find(|(pat, _)| store::glob_match(pat, key, false))
            .map(|(_, p)| *p)
            .unwrap_or(Policy::FailFast)
    }

    /// True when any keyspace is served locally (`cache` or `durable`):
    /// `/readyz` then stays 200 (degraded) during an outage.
    pub fn any_local(&self) -> bool {
        self.rules.iter().any(|(_, p)| *p != Policy::FailFast)
    }

    /// True when any keyspace is `durable`: those are kept by the replica.
    pub fn any_durable(&self) -> bool {
        self.rules.iter().any(|(_, p)| *p == Policy::Durable)
    }

    /// The globs of the local (`cache`, `durable`) keyspaces: what the
    /// near-cache tracks ([`crate::near_cache::prefix::Tracked`]).
    pub fn local_patterns(&self) -> Vec<Bytes> {
        self.rules
            .iter()
            .filter(|(_, p)| *p != Policy::FailFast)
            .map(|(pat, _)| pat.clone())
            .collect()
    }
}

/// What a command may do to a durable key while Redis is not Up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageRule {
    /// A read: served when the value is known locally.
    Read,
    /// A write whose result does not depend on the current value: always
    /// accepted and journaled (count replies computed from what is known).
    Blind,
    /// A write whose result depends on the value: only on known values.
    ValueDependent,
    /// Replay would not reproduce its outcome: refused.
    Never,
}

/// Command rules during an outage (command-table names). Anything not
/// listed is a read if the table says read-only, else [`OutageRule::Never`].
pub const OUTAGE_TABLE: &[(&str, OutageRule)] = &[
    ("set", OutageRule::Blind),
    ("setex", OutageRule::Blind),
    ("psetex", OutageRule::Blind),
    ("mset", OutageRule::Blind),
    ("del", OutageRule::Blind),
    ("unlink", OutageRule::Blind),
    ("expire", OutageRule::Blind),
    ("pexpire", OutageRule::Blind),
    ("expireat", OutageRule::Blind),
    ("pexpireat", OutageRule::Blind),
    ("persist", OutageRule::Blind),
    ("hset", OutageRule::Blind),
    ("hmset", OutageRule::Blind),
    ("hdel", OutageRule::Blind),
    ("lpush", OutageRule::Blind),
    ("rpush", OutageRule::Blind),
    ("sadd", OutageRule::Blind),
    ("srem", OutageRule::Blind),
    ("zadd", OutageRule::Blind),
    ("zrem", OutageRule::Blind),
    ("incr", OutageRule::ValueDependent),
    ("decr", OutageRule::ValueDependent),
    ("incrby", OutageRule::ValueDependent),
    ("decrby", OutageRule::ValueDependent),
    ("incrbyfloat", OutageRule::ValueDependent),
    ("append", OutageRule::ValueDependent),
    ("hincrby", OutageRule::ValueDependent),
    ("hincrbyfloat", OutageRule::ValueDependent),
    ("zincrby", OutageRule::ValueDependent),
    ("getdel", OutageRule::ValueDependent),
    ("getex", OutageRule::ValueDependent),
];

/// Options that make an otherwise blind write conditional (`SET … NX`) or
/// change what ZADD means (`ZADD … GT`): such invocations are Never.
fn has_conditional_option(name: &str, args: &[Bytes]) -> bool {
    let opts: &[&str] = match name {
        "set" => &["nx", "xx", "get"],
        "zadd" => &["nx", "xx", "gt", "lt", "ch", "incr"],
        "expire" | "pexpire" | "expireat" | "pexpireat" => &["nx", "xx", "gt", "lt"],
        _ => return false,
    };
    let from = if name == "zadd" || name.ends_with("expire") || name.ends_with("expireat") {
        2
    } else {
        3
    };
    args.iter()
        .skip(from)
        .any(|a| opts.iter().any(|o| a.eq_ignore_ascii_case(o.as_bytes())))
}

/// The rule for one invocation.
pub fn outage_rule(args: &[Bytes]) -> OutageRule {
    let Some(spec) = resp::lookup(args) else {
        return OutageRule::Never;
    };
    if let Some((_, rule)) = OUTAGE_TABLE.iter().find(|(n, _)| *n == spec.name) {
        if *rule == OutageRule::Blind && has_conditional_option(spec.name, args) {
            return OutageRule::Never;
        }
        return *rule;
    }
    if spec.has(resp::command::F_READONLY)
        && !spec.has(resp::command::F_WRITE)
        && spec.group != "scripting"
    {
        OutageRule::Read
    } else {
        OutageRule::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn first_matching_glob_wins_and_unmatched_keys_fail_fast() {
        let k = Keyspaces::new(vec![
            ("sess:admin:*".into(), Policy::FailFast),
            ("sess:*".into(), Policy::Durable),
            ("cache:*".into(), Policy::Cache),
        ]);
        assert_eq!(k.policy(b"sess:42"), Policy::Durable);
        assert_eq!(k.policy(b"sess:admin:1"), Policy::FailFast);
        assert_eq!(k.policy(b"cache:x"), Policy::Cache);
        assert_eq!(k.policy(b"other"), Policy::FailFast);
        assert!(k.any_local());
        assert_eq!(
            k.local_patterns(),
            vec![Bytes::from("sess:*"), Bytes::from("cache:*")]
        );
        assert!(!Keyspaces::default().any_local());
    }

    #[test]
    fn every_outage_table_row_is_a_real_command() {
        for (name, _) in OUTAGE_TABLE {
            assert!(
                resp::lookup(&[*name]).is_some_and(|s| s.name == *name),
                "{name}"
            );
        }
    }

    #[test]
    fn outage_rules() {
        for (args, rule) in [
            (&["GET", "k"][..], OutageRule::Read),
            (&["HGETALL", "k"], OutageRule::Read),
            (&["SET", "k", "v"], OutageRule::Blind),
            (&["SET", "k", "v", "EX", "10"], OutageRule::Blind),
            (&["SET", "k", "v", "NX"], OutageRule::Never),
            (&["SET", "k", "v", "GET"], OutageRule::Never),
            (&["SETNX", "k", "v"], OutageRule::Never),
            (&["GETSET", "k", "v"], OutageRule::Never),
            (&["ZADD", "z", "1", "m"], OutageRule::Blind),
            (&["ZADD", "z", "GT", "1", "m"], OutageRule::Never),
            (&["EXPIRE", "k", "10"], OutageRule::Blind),
            (&["EXPIRE", "k", "10", "NX"], OutageRule::Never),
            (&["INCR", "n"], OutageRule::ValueDependent),
            (&["LPOP", "q"], OutageRule::Never),
            (&["BLPOP", "q", "0"], OutageRule::Never),
            (&["RENAME", "a", "b"], OutageRule::Never),
            (&["EVAL", "return 1", "0"], OutageRule::Never),
            (&["MSETNX", "a", "1"], OutageRule::Never),
            (&["NOSUCH.CMD", "k"], OutageRule::Never),
        ] {
            assert_eq!(outage_rule(&a(args)), rule, "{args:?}");
        }
    }
}
