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
    /// For each rule, the length of its literal prefix when the pattern
    /// is that prefix and one final `*` (`sess:*`, the usual form): the
    /// policy of every key a command names is asked several times per
    /// command, and a prefix compare is a fraction of a glob match.
    prefix: Vec<Option<usize>>,
}

/// The literal prefix's length of a pattern that is a prefix and a final
/// `*` and has no other glob character.
fn literal_prefix(pattern: &[u8]) -> Option<usize> {
    let (last, head) = pattern.split_last()?;
    (*last == b'*' && !head.iter().any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\')))
        .then_some(head.len())
}

impl Keyspaces {
    /// Rules in config order; the first match wins.
    pub fn new(rules: Vec<(String, Policy)>) -> Keyspaces {
        let rules: Vec<(Bytes, Policy)> = rules
            .into_iter()
            .map(|(p, pol)| (Bytes::from(p), pol))
            .collect();
        let prefix = rules.iter().map(|(p, _)| literal_prefix(p)).collect();
        Keyspaces { rules, prefix }
    }

    /// The policy of `key`.
    pub fn policy(&self, key: &[u8]) -> Policy {
        self.rules
            .iter()
            .zip(&self.prefix)
            .find(|((pat, _), prefix)| match prefix {
                // As the glob: `*` alone does not match the empty key.
                Some(n) => !key.is_empty() && key.starts_with(&pat[..*n]),
                None => store::glob_match(pat, key, false),
            })
            .map(|((_, p), _)| *p)
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
    outage_rule_of(resp::lookup(args), args)
}

/// [`outage_rule`] of a command whose row is known.
pub fn outage_rule_of(spec: Option<&'static resp::CommandSpec>, args: &[Bytes]) -> OutageRule {
    let Some(spec) = spec else {
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

    #[test]
    fn a_prefix_pattern_matches_as_its_glob_does() {
        assert_eq!(literal_prefix(b"sess:*"), Some(5));
        assert_eq!(literal_prefix(b"*"), Some(0));
        for not_prefix in [&b"a*b*"[..], b"a?*", b"a[bc]*", b"a\\**", b"sess:", b""] {
            assert_eq!(literal_prefix(not_prefix), None, "{not_prefix:?}");
        }
        let patterns = ["sess:*", "q:*:jobs", "c?che:*", "*", "[ab]:*", "x\\*y*"];
        let keys = [
            "sess:",
            "sess:1",
            "ses",
            "q:1:jobs",
            "q:1:jobsx",
            "cache:1",
            "a:1",
            "c:1",
            "x*yz",
            "xay",
            "",
        ];
        for pat in patterns {
            let k = Keyspaces::new(vec![(pat.to_string(), Policy::Durable)]);
            for key in keys {
                let glob = store::glob_match(pat.as_bytes(), key.as_bytes(), false);
                assert_eq!(
                    k.policy(key.as_bytes()) == Policy::Durable,
                    glob,
                    "{pat} vs {key}"
                );
            }
        }
    }

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
