//! The command table: one row per Redis command with its arity, flags and
//! key positions, generated from a real `redis-server` (see
//! `scripts/gen-command-table.py`). Routing, the store's `COMMAND` replies
//! and the doctor all read it; nobody hard-codes key positions.

pub use crate::command_table::{COMMANDS, REDIS_VERSION, SUBCOMMANDS};

/// Where the search for a key spec's keys begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index (the command name is index 0).
    Index(i32),
    /// After the first occurrence of `keyword`, searching from `start_from`
    /// (negative: from the end, backwards).
    Keyword {
        /// Keyword, lower-case as Redis reports it.
        keyword: &'static str,
        /// Argument index to start searching at.
        start_from: i32,
    },
    /// Not describable; the command has `movablekeys` handling.
    Unknown,
}

/// How keys are found once the search has begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative; -1 the last argument) every `step`.
    Range {
        /// Last key, relative to the begin index; negative counts from the end.
        last_key: i32,
        /// Distance between keys.
        step: i32,
        /// With `last_key == -1`: keep 1/limit of the remaining arguments.
        limit: i32,
    },
    /// The number of keys is an argument (`EVAL script numkeys key…`).
    Keynum {
        /// Index of the count, relative to the begin index.
        keynum_idx: i32,
        /// First key, relative to the begin index.
        first_key: i32,
        /// Distance between keys.
        step: i32,
    },
    /// Not describable.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// Where to start.
    pub begin: BeginSearch,
    /// How to find the keys from there.
    pub find: FindKeys,
    /// `K_*` bits.
    pub flags: u32,
}

/// One row of the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name; subcommands are `container|sub`.
    pub name: &'static str,
    /// Redis arity: positive is exact, negative is a minimum.
    pub arity: i32,
    /// `F_*` bits.
    pub flags: u32,
    /// Legacy first key index (0: no keys).
    pub first_key: i32,
    /// Legacy last key index (-1: the last argument).
    pub last_key: i32,
    /// Legacy key step.
    pub step: i32,
    /// Command group from `COMMAND DOCS` (`string`, `list`, …).
    pub group: &'static str,
    /// Redis version that introduced it.
    pub since: &'static str,
    /// One-line summary from `COMMAND DOCS`.
    pub summary: &'static str,
    /// Key specifications.
    pub key_specs: &'static [KeySpec],
    /// ACL categories, without the `@` (Redis's `COMMAND INFO`: declared
    /// and implied by the flags), as `ACL CAT <category>` lists them.
    pub acl: &'static [&'static str],
}

/// Command flags as bits, named after Redis's flag strings.
pub type CommandFlags = u32;

macro_rules! bits {
    ($($name:ident = $bit:expr, $doc:literal;)*) => {
        $(#[doc = $doc] pub const $name: u32 = 1 << $bit;)*
    };
}

bits! {
    F_WRITE = 0, "May modify the dataset.";
    F_READONLY = 1, "Only reads.";
    F_DENYOOM = 2, "Refused when over maxmemory.";
    F_MODULE = 3, "Module command.";
    F_ADMIN = 4, "Administrative.";
    F_PUBSUB = 5, "Pub/sub.";
    F_NOSCRIPT = 6, "Not allowed in scripts.";
    F_BLOCKING = 7, "May block the client.";
    F_LOADING = 8, "Allowed while loading.";
    F_STALE = 9, "Allowed on a stale replica.";
    F_SKIP_MONITOR = 10, "Not shown by MONITOR.";
    F_SKIP_SLOWLOG = 11, "Not logged in the slowlog.";
    F_ASKING = 12, "Cluster ASKING.";
    F_FAST = 13, "O(1) or O(log N).";
    F_NO_AUTH = 14, "Allowed before authentication.";
    F_MAY_REPLICATE = 15, "May replicate.";
    F_NO_MANDATORY_KEYS = 16, "Keys are optional.";
    F_NO_MULTI = 17, "Not allowed in MULTI.";
    F_MOVABLEKEYS = 18, "Key positions depend on arguments.";
    F_ALLOW_BUSY = 19, "Allowed while a script is busy.";
}

bits! {
    K_RW = 0, "Reads and writes the key.";
    K_RO = 1, "Only reads the key.";
    K_OW = 2, "Overwrites the key.";
    K_RM = 3, "Removes the key.";
    K_ACCESS = 4, "Returns or copies user data.";
    K_UPDATE = 5, "Updates the value.";
    K_INSERT = 6, "Adds data.";
    K_DELETE = 7, "Deletes data.";
    K_NOT_KEY = 8, "Not really a key (e.g. a channel).";
    K_INCOMPLETE = 9, "The spec may miss keys.";
    K_VARIABLE_FLAGS = 10, "Flags depend on arguments.";
}

impl CommandSpec {
    /// True if any of `flags` (`F_*`) is set.
    pub fn has(&self, flags: u32) -> bool {
        self.flags & flags != 0
    }

    /// True when the command may write.
    pub fn is_write(&self) -> bool {
        self.has(F_WRITE)
    }

    /// True if `argc` (command name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= (-a) as usize
        }
    }

    /// True when a container's subcommands carry the real rows.
    pub fn has_subcommands(&self) -> bool {
        let prefix_len = self.name.len();
        SUBCOMMANDS.iter().any(|s| {
            s.name.len() > prefix_len
                && s.name.starts_with(self.name)
                && s.name.as_bytes()[prefix_len] == b'|'
        })
    }

    /// Indices of the key arguments in `args` (command name at 0), following
    /// Redis's key-spec algorithm. Channels (`K_NOT_KEY`) are left out.
    pub fn key_indices<B: AsRef<[u8]>>(&self, args: &[B]) -> Vec<usize> {
        self.key_positions(args)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }

    /// [`key_indices`](Self::key_indices) with each key's spec flags
    /// (`K_*`): what the command does to that key, which is what Redis's
    /// read/write key permissions (`%R~`, `%W~`) are checked against.
    pub fn key_positions<B: AsRef<[u8]>>(&self, args: &[B]) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let argc = args.len() as i32;
        for spec in self.key_specs {
            if spec.flags & K_NOT_KEY != 0 {
                continue;
            }
            let first = match spec.begin {
                BeginSearch::Index(i) => i,
                BeginSearch::Keyword {
                    keyword,
                    start_from,
                } => match find_keyword(args, keyword, start_from) {
                    Some(i) => i + 1,
                    None => continue,
                },
                BeginSearch::Unknown => continue,
            };
            if first >= argc {
                continue;
            }
            match spec.find {
                FindKeys::Range {
                    last_key,
                    step,
                    limit,
                } => {
                    let last = if last_key >= 0 {
                        first + last_key
                    } else if last_key == -1 && limit > 1 {
                        first + (argc - first) / limit - 1
                    } else {
                        argc + last_key
                    };
                    let step = step.max(1);
                    let mut i = first;
                    while i <= last && i < argc {
                        out.push((i as usize, spec.flags));
                        i += step;
                    }
                }
                FindKeys::Keynum {
                    keynum_idx,
                    first_key,
                    step,
                } => {
                    let idx = (first + keynum_idx) as usize;
                    let Some(n) = args
                        .get(idx)
                        .and_then(|a| std::str::from_utf8(a.as_ref()).ok()?.parse::<i32>().ok())
                    else {
                        continue;
                    };
                    let step = step.max(1);
                    let start = first + first_key;
                    for k in 0..n.max(0) {
                        let i = start + k * step;
                        if i >= argc {
                            break;
                        }
                        out.push((i as usize, spec.flags));
                    }
                }
                FindKeys::Unknown => {}
            }
        }
        out
    }
}

fn find_keyword<B: AsRef<[u8]>>(args: &[B], keyword: &str, start_from: i32) -> Option<i32> {
    let argc = args.len() as i32;
    let matches = |i: i32| {
        args[i as usize]
            .as_ref()
            .eq_ignore_ascii_case(keyword.as_bytes())
    };
    if start_from >= 0 {
        (start_from..argc).find(|&i| matches(i))
    } else {
        let start = argc + start_from;
        (1..=start.max(0)).rev().find(|&i| matches(i))
    }
}

/// The table indexed for [`lookup`], built once: every command is looked
/// up (three times on the hot path: gate, router, store), and a binary
/// search of the whole table cost a sixth of a pipelined `GET`'s CPU.
struct Index {
    /// Rows of `COMMANDS` by [`shape`] (name length and first letter):
    /// usually one or two candidates, each with its name's [`folded`]
    /// first word, so a candidate is checked with one comparison.
    by_shape: Vec<Vec<(u64, u16)>>,
    /// For each row of `COMMANDS`, its subcommands' range in `SUBCOMMANDS`
    /// (empty for the commands that take none: most, whose second argument
    /// is a key, never a subcommand).
    subs: Vec<std::ops::Range<usize>>,
}

/// Longest command name the index holds (Redis's longest is 20 bytes).
const MAX_NAME: usize = 31;

/// A name's slot in [`Index::by_shape`]: its length and first letter,
/// case-insensitively. `None` for names no command has.
fn shape(name: &[u8]) -> Option<usize> {
    let first = name.first()?.to_ascii_lowercase();
    if name.len() > MAX_NAME || !first.is_ascii_lowercase() {
        return None;
    }
    Some(name.len() * 26 + usize::from(first - b'a'))
}

/// A name's first 8 bytes lower-cased, as one word (zero-padded): equal
/// words mean equal names up to their 8th byte, case-insensitively.
fn folded(name: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    u64::from_le_bytes(w)
}

fn index() -> &'static Index {
    static INDEX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_shape = vec![Vec::new(); (MAX_NAME + 1) * 26];
        let mut subs = Vec::with_capacity(COMMANDS.len());
        for (i, c) in COMMANDS.iter().enumerate() {
            if let Some(slot) = shape(c.name.as_bytes()) {
                by_shape[slot].push((folded(c.name.as_bytes()), i as u16));
            }
            let start = SUBCOMMANDS.partition_point(|s| s.name < c.name);
            let len = SUBCOMMANDS[start..]
                .iter()
                .take_while(|s| {
                    s.name.len() > c.name.len()
                        && s.name.starts_with(c.name)
                        && s.name.as_bytes()[c.name.len()] == b'|'
                })
                .count();
            subs.push(start..start + len);
        }
        Index { by_shape, subs }
    })
}

/// Finds the row for a command, descending into the subcommand table for
/// containers (`CLIENT SETNAME` → `client|setname`). Case-insensitive; an
/// unknown subcommand falls back to its container's row. `None` means the
/// command is not in the table (modules, newer Redis).
pub fn lookup<B: AsRef<[u8]>>(args: &[B]) -> Option<&'static CommandSpec> {
    lookup_id(args).map(|(_, spec)| spec)
}

/// [`lookup`], with the row's place among every row: below
/// [`COMMANDS`]`.len()` a command, above it a subcommand. Callers keep
/// per-command tables as vectors of [`row_count`] entries indexed by it,
/// instead of hashing the name on every call.
pub fn lookup_id<B: AsRef<[u8]>>(args: &[B]) -> Option<(usize, &'static CommandSpec)> {
    let name = args.first()?.as_ref();
    let index = index();
    let word = folded(name);
    let idx = index.by_shape[shape(name)?]
        .iter()
        .find(|&&(w, i)| {
            w == word
                && (name.len() <= 8
                    || COMMANDS[i as usize].name.as_bytes()[8..].eq_ignore_ascii_case(&name[8..]))
        })?
        .1 as usize;
    let top = &COMMANDS[idx];
    let range = index.subs[idx].clone();
    if let (Some(sub), false) = (args.get(1), range.is_empty()) {
        let sub = sub.as_ref();
        let n = top.name.len() + 1;
        let start = range.start;
        if let Some(i) = SUBCOMMANDS[range].iter().position(|s| {
            s.name.len() == n + sub.len() && s.name.as_bytes()[n..].eq_ignore_ascii_case(sub)
        }) {
            return Some((COMMANDS.len() + start + i, &SUBCOMMANDS[start + i]));
        }
    }
    Some((idx, top))
}

/// How many rows [`lookup_id`] numbers: commands and subcommands.
pub fn row_count() -> usize {
    COMMANDS.len() + SUBCOMMANDS.len()
}

/// The row [`lookup_id`] numbered `id`.
pub fn row(id: usize) -> Option<&'static CommandSpec> {
    COMMANDS
        .get(id)
        .or_else(|| SUBCOMMANDS.get(id.checked_sub(COMMANDS.len())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_id_numbers_every_row_once_and_row_finds_it_again() {
        let mut seen = vec![false; row_count()];
        let names = COMMANDS.iter().chain(SUBCOMMANDS.iter()).map(|c| c.name);
        for name in names {
            let args: Vec<&[u8]> = match name.split_once('|') {
                Some((c, sub)) => vec![c.as_bytes(), sub.as_bytes()],
                None => vec![name.as_bytes()],
            };
            let (id, spec) = lookup_id(&args).expect(name);
            assert_eq!(spec.name, name);
            assert!(std::ptr::eq(row(id).expect(name), spec), "{name}");
            assert!(!seen[id], "{name} numbered twice");
            seen[id] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert!(row(row_count()).is_none());
        let upper: [&[u8]; 2] = [b"CLIENT", b"SETNAME"];
        assert_eq!(
            lookup_id(&upper).map(|(_, s)| s.name),
            Some("client|setname")
        );
    }

    fn keys(args: &[&str]) -> Vec<String> {
        let spec = lookup(args).expect("known command");
        spec.key_indices(args)
            .into_iter()
            .map(|i| args[i].to_string())
            .collect()
    }

    #[test]
    fn every_row_is_found_by_its_name_in_any_case() {
        assert!(COMMANDS.iter().all(|c| shape(c.name.as_bytes()).is_some()));
        for c in COMMANDS.iter().chain(SUBCOMMANDS.iter()) {
            let upper = c.name.to_ascii_uppercase();
            let args: Vec<&str> = upper.split('|').collect();
            assert_eq!(lookup(&args).map(|r| r.name), Some(c.name));
        }
        // A key that looks like a subcommand is still a key.
        assert_eq!(lookup(&["GET", "info"]).map(|r| r.name), Some("get"));
        assert_eq!(
            lookup(&["client", "nosuch"]).map(|r| r.name),
            Some("client")
        );
        assert_eq!(lookup(&["config"]).map(|r| r.name), Some("config"));
        assert!(lookup(&["nosuch"]).is_none());
        assert!(lookup(&[""]).is_none());
        assert!(lookup::<&str>(&[]).is_none());
    }

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(COMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(SUBCOMMANDS.windows(2).all(|w| w[0].name < w[1].name));
        assert!(COMMANDS.len() > 200, "a full Redis 7 table");
    }

    #[test]
    fn lookup_is_case_insensitive_and_finds_subcommands() {
        assert_eq!(lookup(&["GeT"]).unwrap().name, "get");
        assert_eq!(
            lookup(&["client", "SETNAME", "x"]).unwrap().name,
            "client|setname"
        );
        assert_eq!(lookup(&["client", "nosuch"]).unwrap().name, "client");
        assert!(lookup(&["nosuchcommand"]).is_none());
    }

    #[test]
    fn key_positions_follow_key_specs() {
        assert_eq!(keys(&["GET", "a"]), ["a"]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(keys(&["DEL", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(
            keys(&["EVAL", "return 1", "2", "k1", "k2", "arg"]),
            ["k1", "k2"]
        );
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "s1", "s2", "WEIGHTS", "1", "2"]),
            ["d", "s1", "s2"]
        );
        assert_eq!(keys(&["BLPOP", "q1", "q2", "0"]), ["q1", "q2"]);
        assert_eq!(
            keys(&["XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0"]),
            ["s1", "s2"]
        );
        assert_eq!(
            keys(&["LMOVE", "src", "dst", "LEFT", "RIGHT"]),
            ["src", "dst"]
        );
        assert!(keys(&["PUBLISH", "chan", "msg"]).is_empty());
        assert!(keys(&["PING"]).is_empty());
    }

    #[test]
    fn flags_and_arity() {
        let set = lookup(&["set"]).unwrap();
        assert!(set.is_write() && set.has(F_DENYOOM));
        assert!(set.arity_ok(3) && !set.arity_ok(2));
        assert!(lookup(&["blpop"]).unwrap().has(F_BLOCKING));
        assert!(lookup(&["get"]).unwrap().arity_ok(2) && !lookup(&["get"]).unwrap().arity_ok(3));
    }
}
