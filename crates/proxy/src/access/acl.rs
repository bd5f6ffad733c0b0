//! A Redis user's permissions as `ACL GETUSER` reports them, and the two
//! questions Redoubt asks of them when it answers from local data: may
//! this user run this command, and touch this key this way?
//!
//! Everything here leans towards "no": a rule Redoubt cannot read grants
//! nothing, and a rule it cannot read that might take something away
//! takes it away. Selectors (Redis 7's `(…)` rules) are ignored: they only
//! ever add permissions, and only for the commands they name, so ignoring
//! them can deny what Redis would allow, never the reverse.

use std::collections::{HashMap, HashSet};

use resp::command::{K_ACCESS, K_DELETE, K_INCOMPLETE, K_INSERT, K_UPDATE};
use resp::Frame;
use sha2::{Digest, Sha256};

/// Members of ACL categories (`ACL CAT <name>`), by category name. A
/// category missing here is one whose members are not known.
pub type Categories = HashMap<String, HashSet<String>>;

/// What one Redis user may do, from `ACL GETUSER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclProfile {
    /// `on`: the user may log in at all.
    pub enabled: bool,
    /// `nopass`: any password logs in; for `default`, connections are
    /// logged in without `AUTH`.
    pub nopass: bool,
    /// `~*` / `allkeys`: every key, read and write.
    all_keys: bool,
    keys: Vec<KeyPattern>,
    /// The `commands` rules, lower-case, in order (`+@all`, `-@dangerous`,
    /// `+get`, …).
    commands: Vec<String>,
    /// The rules grant every command (`+@all` with nothing taken away
    /// after it): [`may_run`](Self::may_run) need not walk them for each
    /// command judged.
    all_commands: bool,
    /// SHA-256 over Redis's own password hashes for the user: when it
    /// changes, passwords were added or revoked.
    passwords: [u8; 32],
}

/// One key pattern and what it allows (`~p` both, `%R~p` reads, `%W~p`
/// writes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    read: bool,
    write: bool,
    glob: Vec<u8>,
}

fn text(f: &Frame) -> Option<&[u8]> {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) | Frame::Verbatim(b) => Some(b),
        _ => None,
    }
}

fn items(f: &Frame) -> &[Frame] {
    match f {
        Frame::Array(v) | Frame::Set(v) => v,
        _ => &[],
    }
}

/// Parses an `ACL GETUSER` reply (RESP2 flat array or RESP3 map). `None`:
/// no such user (Redis's nil).
pub fn parse_getuser(reply: &Frame) -> Result<Option<AclProfile>, String> {
    let pairs: Vec<(&Frame, &Frame)> = match reply {
        Frame::NullBulk | Frame::NullArray | Frame::Null => return Ok(None),
        Frame::Array(v) if v.len() % 2 == 0 => v.chunks(2).map(|p| (&p[0], &p[1])).collect(),
        Frame::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        other => return Err(format!("unexpected ACL GETUSER reply {other:?}")),
    };
    // Missing fields stay at their most restrictive.
    let mut p = AclProfile {
        enabled: false,
        nopass: false,
        all_keys: false,
        keys: Vec::new(),
        commands: Vec::new(),
        all_commands: false,
        passwords: [0; 32],
    };
    for (name, value) in pairs {
        let Some(name) = text(name) else { continue };
        match &name.to_ascii_lowercase()[..] {
            b"flags" => {
                for flag in items(value).iter().filter_map(text) {
                    match &flag.to_ascii_lowercase()[..] {
                        b"on" => p.enabled = true,
                        b"off" => p.enabled = false,
                        b"nopass" => p.nopass = true,
                        // Redis 6 reports these as flags.
                        b"allkeys" => p.all_keys = true,
                        b"allcommands" => p.commands.insert(0, "+@all".into()),
                        _ => {}
                    }
                }
            }
            b"passwords" => {
                let mut hashes: Vec<&[u8]> = items(value).iter().filter_map(text).collect();
                hashes.sort_unstable();
                let mut h = Sha256::new();
                for x in hashes {
                    h.update((x.len() as u64).to_le_bytes());
                    h.update(x);
                }
                p.passwords = h.finalize().into();
            }
            b"commands" => {
                if let Some(rules) = text(value) {
                    p.commands.extend(
                        String::from_utf8_lossy(rules)
                            .split_ascii_whitespace()
                            .map(|t| t.to_ascii_lowercase()),
                    );
                }
            }
            b"keys" => match text(value) {
                // Redis 7: one string of `~p`, `%R~p`, `%W~p` rules. (A
                // pattern holding a space is ambiguous in this form; its
                // halves are read as two rules, as Redis prints them.)
                Some(rules) => {
                    for token in rules.split(|c| *c == b' ') {
                        match key_rule(token) {
                            Some(KeyRule::All) => p.all_keys = true,
                            Some(KeyRule::Pattern(k)) => p.keys.push(k),
                            None => {}
                        }
                    }
                }
                // Redis 6: a list of bare patterns, each read and write.
                None => p
                    .keys
                    .extend(items(value).iter().filter_map(text).map(|g| KeyPattern {
                        read: true,
                        write: true,
                        glob: g.to_vec(),
                    })),
            },
            _ => {}
        }
    }
    p.all_commands = grants_all(&p.commands);
    Ok(Some(p))
}

/// Whether `rules` (as [`AclProfile::may_run`] reads them) end up granting
/// every command: a `+@all` (or `allcommands`) with no rule after it that
/// takes anything away. Other grants after it change nothing.
fn grants_all(rules: &[String]) -> bool {
    let mut all = false;
    for rule in rules {
        match rule.as_str() {
            "+@all" | "allcommands" => all = true,
            "nocommands" => all = false,
            r if r.starts_with('-') => all = false,
            _ => {}
        }
    }
    all
}

enum KeyRule {
    All,
    Pattern(KeyPattern),
}

/// One Redis 7 key rule. Anything not understood grants nothing.
fn key_rule(token: &[u8]) -> Option<KeyRule> {
    if token.eq_ignore_ascii_case(b"allkeys") || token == b"~*" {
        return Some(KeyRule::All);
    }
    if let Some(glob) = token.strip_prefix(b"~") {
        return Some(KeyRule::Pattern(KeyPattern {
            read: true,
            write: true,
            glob: glob.to_vec(),
        }));
    }
    let rest = token.strip_prefix(b"%")?;
    let tilde = rest.iter().position(|c| *c == b'~')?;
    let (mut read, mut write) = (false, false);
    for c in &rest[..tilde] {
        match c.to_ascii_uppercase() {
            b'R' => read = true,
            b'W' => write = true,
            _ => return None,
        }
    }
    if !read && !write {
        return None;
    }
    Some(KeyRule::Pattern(KeyPattern {
        read,
        write,
        glob: rest[tilde + 1..].to_vec(),
    }))
}

impl AclProfile {
    /// Categories the command rules name (`@all` aside): their members
    /// are needed to judge a command.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.commands
            .iter()
            .filter_map(|t| t.get(1..)?.strip_prefix('@'))
            .filter(|c| *c != "all")
    }

    /// A digest of the user's password list.
    pub fn passwords(&self) -> [u8; 32] {
        self.passwords
    }

    /// May the user run `name` (lower-case; `container|sub` for a
    /// subcommand)? Rules apply in order, as Redis applies them; what
    /// cannot be judged (a category with unknown members, a rule on one
    /// subcommand or first argument) never grants, and denies when it is
    /// a `-` rule that might cover the command.
    pub fn may_run(&self, name: &str, cats: &Categories) -> bool {
        if !self.enabled {
            return false;
        }
        if self.all_commands {
            return true;
        }
        let top = name.split('|').next().unwrap_or(name);
        let mut allowed = false;
        for rule in &self.commands {
            let (grant, body) = match rule.as_bytes().first() {
                Some(b'+') => (true, &rule[1..]),
                Some(b'-') => (false, &rule[1..]),
                _ => {
                    match rule.as_str() {
                        "allcommands" => allowed = true,
                        "nocommands" => allowed = false,
                        _ => {}
                    }
                    continue;
                }
            };
            if let Some(cat) = body.strip_prefix('@') {
                if cat == "all" {
                    allowed = grant;
                    continue;
                }
                match cats.get(cat) {
                    Some(members) if members.contains(name) || members.contains(top) => {
                        allowed = grant
                    }
                    Some(_) => {}
                    None if !grant => allowed = false,
                    None => {}
                }
            } else if body == name || body == top {
                allowed = grant;
            } else if body.split('|').next() == Some(top) && !grant {
                // `-cmd|x`: part of this command taken away.
                allowed = false;
            }
        }
        allowed
    }

    /// May the user touch every key (what Redis asks of commands whose
    /// keys are found only while they run)?
    pub fn may_access_every_key(&self) -> bool {
        // Redis asks for unrestricted key access (`~*`, `allkeys`) when a
        // command's keys are known only while it runs (SORT's BY/GET).
        self.all_keys
    }

    /// May the user touch `key` the way a command's key spec says
    /// (`flags`: `K_*`)? Redis's rule: reading user data (`access`) needs
    /// a read pattern, inserting/updating/deleting needs a write pattern,
    /// anything else needs any matching pattern.
    pub fn may_access(&self, key: &[u8], flags: u32) -> bool {
        if self.all_keys {
            return true;
        }
        if flags & K_INCOMPLETE != 0 {
            // Keys may be missing from what Redoubt sees: only a user with
            // every key is safe.
            return false;
        }
        let read = flags & K_ACCESS != 0;
        let write = flags & (K_INSERT | K_DELETE | K_UPDATE) != 0;
        self.keys.iter().any(|p| {
            (!read || p.read) && (!write || p.write) && store::glob_match(&p.glob, key, false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resp::command::{K_OW, K_RM, K_RO, K_RW};

    fn b(s: &str) -> Frame {
        Frame::bulk(s)
    }

    /// A Redis 7 reply: flags, passwords, commands, keys, channels,
    /// selectors.
    fn getuser(flags: &[&str], commands: &str, keys: &str) -> Frame {
        Frame::Array(vec![
            b("flags"),
            Frame::Array(flags.iter().map(|f| b(f)).collect()),
            b("passwords"),
            Frame::Array(vec![b("5e88489")]),
            b("commands"),
            b(commands),
            b("keys"),
            b(keys),
            b("channels"),
            b(""),
            b("selectors"),
            Frame::Array(vec![Frame::Array(vec![
                b("commands"),
                b("+@all"),
                b("keys"),
                b("~*"),
            ])]),
        ])
    }

    fn parse(f: &Frame) -> AclProfile {
        parse_getuser(f).unwrap().unwrap()
    }

    const GET: u32 = K_RO | K_ACCESS;
    const SET: u32 = K_RW | K_ACCESS | K_UPDATE;
    const DEL: u32 = K_RM | K_DELETE;
    const EXISTS: u32 = K_RO;

    #[test]
    fn plain_key_patterns_allow_reads_and_writes_of_matching_keys_only() {
        let p = parse(&getuser(&["on"], "+@all", "~sess:* ~cache:*"));
        assert!(p.enabled && !p.nopass);
        for flags in [GET, SET, DEL, EXISTS] {
            assert!(p.may_access(b"sess:1", flags));
            assert!(p.may_access(b"cache:x", flags));
            assert!(!p.may_access(b"other", flags));
        }
        assert!(
            !p.may_access(b"other", GET),
            "the selector's ~* is not applied"
        );
    }

    #[test]
    fn all_keys_in_every_spelling() {
        for keys in ["~*", "allkeys", "~sess:* ~*"] {
            let p = parse(&getuser(&["on"], "+@all", keys));
            assert!(p.may_access(b"anything", SET), "{keys}");
            assert!(
                p.may_access(b"x", K_RW | K_INCOMPLETE),
                "{keys}: every key covers keys Redoubt cannot see"
            );
        }
        // Redis 6: `allkeys` flag and a list of bare patterns.
        let r6 = Frame::Array(vec![
            b("flags"),
            Frame::Array(vec![b("on"), b("allkeys"), b("allcommands")]),
            b("passwords"),
            Frame::Array(vec![]),
            b("commands"),
            b("+@all"),
            b("keys"),
            Frame::Array(vec![b("*")]),
        ]);
        let p = parse(&r6);
        assert!(p.may_access(b"k", SET) && p.may_run("set", &Categories::new()));
        let r6 = Frame::Array(vec![
            b("flags"),
            Frame::Array(vec![b("on")]),
            b("commands"),
            b("+@all"),
            b("keys"),
            Frame::Array(vec![b("a:*")]),
        ]);
        let p = parse(&r6);
        assert!(p.may_access(b"a:1", SET) && !p.may_access(b"b", GET));
    }

    #[test]
    fn read_and_write_patterns_follow_the_key_spec() {
        let p = parse(&getuser(&["on"], "+@all", "%R~r:* %W~w:* %RW~both:*"));
        assert!(p.may_access(b"r:1", GET));
        assert!(!p.may_access(b"r:1", SET), "read-only pattern");
        assert!(!p.may_access(b"r:1", DEL));
        assert!(p.may_access(b"w:1", DEL));
        assert!(!p.may_access(b"w:1", GET), "write-only pattern");
        assert!(
            p.may_access(b"w:1", EXISTS),
            "no user data read: any pattern"
        );
        assert!(p.may_access(b"both:1", SET) && p.may_access(b"both:1", GET));
        assert!(p.may_access(b"w:1", K_OW | K_UPDATE));
    }

    #[test]
    fn unknown_key_syntax_grants_nothing() {
        let p = parse(&getuser(&["on"], "+@all", "%X~x:* %~y:* #weird ~ok:* %R~"));
        assert!(!p.may_access(b"x:1", EXISTS));
        assert!(!p.may_access(b"y:1", EXISTS));
        assert!(!p.may_access(b"#weird", EXISTS));
        assert!(p.may_access(b"ok:1", SET));
        assert!(
            !p.may_access(b"ok:1", K_RW | K_INCOMPLETE),
            "incomplete key specs need every key"
        );
        let none = parse(&getuser(&["on"], "+@all", ""));
        assert!(!none.may_access(b"k", EXISTS));
    }

    #[test]
    fn command_rules_apply_in_order_with_known_categories() {
        let mut cats = Categories::new();
        cats.insert(
            "dangerous".into(),
            ["flushall", "keys", "config|set"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        cats.insert(
            "write".into(),
            ["set", "del"].iter().map(|s| s.to_string()).collect(),
        );
        let p = parse(&getuser(&["on"], "+@all -@dangerous +keys", "~*"));
        assert!(p.may_run("get", &cats));
        assert!(!p.may_run("flushall", &cats));
        assert!(p.may_run("keys", &cats), "re-granted after the category");
        assert_eq!(p.categories().collect::<Vec<_>>(), vec!["dangerous"]);

        let p = parse(&getuser(&["on"], "-@all +get", "~*"));
        assert!(p.may_run("get", &cats) && !p.may_run("set", &cats));
        let p = parse(&getuser(&["on"], "-@all +@write -del", "~*"));
        assert!(p.may_run("set", &cats) && !p.may_run("del", &cats));
        assert!(!p.may_run("get", &cats));
    }

    #[test]
    fn a_profile_that_grants_everything_is_judged_as_its_rules_are() {
        let mut cats = Categories::new();
        cats.insert(
            "dangerous".into(),
            ["flushall", "keys"].iter().map(|s| s.to_string()).collect(),
        );
        let names = [
            "get",
            "set",
            "flushall",
            "keys",
            "client|id",
            "client",
            "select",
        ];
        for rules in [
            "+@all",
            "+@all +get",
            "+@all -@dangerous",
            "+@all -@unknown",
            "+@all -select|0",
            "-@all +@all",
            "+@all -@all",
            "+@all -get +get",
            "-@all +get",
            "",
        ] {
            let p = parse(&getuser(&["on"], rules, "~*"));
            let mut walked = p.clone();
            walked.all_commands = false;
            for name in names {
                assert_eq!(
                    p.may_run(name, &cats),
                    walked.may_run(name, &cats),
                    "{rules:?} {name}"
                );
            }
        }
        assert!(parse(&getuser(&["on"], "+@all", "~*")).all_commands);
        assert!(parse(&getuser(&["on", "allcommands"], "", "~*")).all_commands);
        assert!(!parse(&getuser(&["on"], "+@all -get +get", "~*")).all_commands);
        let off = parse(&getuser(&["off"], "+@all", "~*"));
        assert!(!off.may_run("get", &cats), "a disabled user runs nothing");
    }

    #[test]
    fn what_cannot_be_judged_denies() {
        let cats = Categories::new();
        // `+@unknown` grants nothing it cannot name.
        let p = parse(&getuser(&["on"], "-@all +@string", "~*"));
        assert!(!p.may_run("get", &cats));
        // `-@unknown` might cover anything.
        let p = parse(&getuser(&["on"], "+@all -@dangerous", "~*"));
        assert!(!p.may_run("get", &cats));
        // A subcommand or first-argument rule takes part of the command.
        let p = parse(&getuser(&["on"], "+@all -select|0", "~*"));
        assert!(!p.may_run("select", &cats) && p.may_run("get", &cats));
        let p = parse(&getuser(&["on"], "-@all +client|id", "~*"));
        assert!(!p.may_run("client", &cats));
        assert!(p.may_run("client|id", &cats));
        // Disabled users run nothing; missing fields grant nothing.
        let p = parse(&getuser(&["off"], "+@all", "~*"));
        assert!(!p.enabled && !p.may_run("get", &cats));
        let p = parse(&Frame::Array(vec![b("keys"), b("~*")]));
        assert!(!p.enabled && !p.may_run("get", &cats));
    }

    #[test]
    fn replies_that_are_not_a_user() {
        assert_eq!(parse_getuser(&Frame::NullBulk), Ok(None));
        assert_eq!(parse_getuser(&Frame::Null), Ok(None));
        assert!(parse_getuser(&Frame::Integer(1)).is_err());
        assert!(parse_getuser(&Frame::Array(vec![b("flags")])).is_err());
        // RESP3 map.
        let m = Frame::Map(vec![
            (b("flags"), Frame::Set(vec![b("on"), b("nopass")])),
            (b("commands"), b("+@all")),
            (b("keys"), b("~*")),
        ]);
        let p = parse(&m);
        assert!(p.enabled && p.nopass && p.may_access(b"k", SET));
    }

    #[test]
    fn password_changes_show_in_the_digest() {
        let with = |pw: Vec<&str>| {
            parse(&Frame::Array(vec![
                b("passwords"),
                Frame::Array(pw.into_iter().map(b).collect()),
            ]))
            .passwords()
        };
        assert_eq!(with(vec!["a", "b"]), with(vec!["b", "a"]));
        assert_ne!(with(vec!["a"]), with(vec!["a", "b"]));
        assert_ne!(with(vec!["ab"]), with(vec!["a", "b"]));
    }
}
