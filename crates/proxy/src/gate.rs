//! The gate: the one check every request passes, in both modes, before it
//! is routed, forwarded or run locally.
//!
//! Redis checks a command in a fixed order before running it — does it
//! exist, its arity, authentication, permissions, then state-dependent
//! refusals (`processCommand` in Redis's `server.c`). The gate does the
//! part that depends only on the request: the command's row in the table,
//! its arity, and every key it names, with keys whose position only the
//! command itself can find at run time (`SORT … BY pattern GET pattern`)
//! counted as "every key", as Redis's ACL counts them. Code after the gate
//! never indexes an argument the arity does not promise.
//!
//! Authentication and permissions are the session's: [`crate::access`]
//! judges a [`Gated`] request for whatever Redoubt answers itself, with
//! Redis's own wording. A refusal is a [`Refusal`], rendered in one place.

use bytes::Bytes;
use resp::command::{CommandSpec, K_ACCESS, K_OW, K_RO, K_UPDATE};

use crate::reply;

/// A request the gate let through: its command-table row (`None` for a
/// command the table does not know, such as a module's). Its keys are
/// resolved only where a permission is judged ([`Gated::keys`]): forwarded
/// commands are judged by Redis, and the hot path allocates nothing here.
#[derive(Debug, Clone, Copy)]
pub struct Gated {
    /// The command's row; subcommands have their own (`client|list`).
    pub spec: Option<&'static CommandSpec>,
    /// Its place in the table (`resp::command::lookup_id`), handed on so
    /// the local store does not look the command up again.
    pub row: Option<usize>,
}

/// A request's keys, as a permission check needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Key argument indices with their key-spec flags (`K_*`).
    pub named: Vec<(usize, u32)>,
    /// Keys the command finds only while it runs: permission needs every
    /// key. The `&str` names the option, for Redis's wording.
    pub every_key: Option<&'static str>,
}

impl Gated {
    /// The row of `args`' command, arity not checked: [`admit`] checks it;
    /// alone, for a request admitted already whose gating was not kept.
    pub fn of(args: &[Bytes]) -> Gated {
        let found = resp::command::lookup_id(args);
        Gated {
            spec: found.map(|(_, s)| s),
            row: found.map(|(i, _)| i),
        }
    }

    /// The row and its place in the table, as the local store takes them.
    pub fn found(&self) -> Option<(usize, &'static CommandSpec)> {
        self.row.zip(self.spec)
    }

    /// The name ACL rules use: `get`, or `client|list` for a subcommand.
    pub fn acl_name(&self, args: &[Bytes]) -> std::borrow::Cow<'static, str> {
        match self.spec {
            // The table's name: no allocation for every command judged.
            Some(s) => s.name.into(),
            None => args
                .first()
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .unwrap_or_default()
                .into(),
        }
    }

    /// Every key `args` names, with keys known only at run time (SORT's
    /// `BY`/`GET` patterns, any key spec Redis cannot describe) counted as
    /// "every key", as Redis's ACL counts them.
    pub fn keys(&self, args: &[Bytes]) -> Keys {
        let Some(spec) = self.spec else {
            return Keys {
                named: Vec::new(),
                every_key: None,
            };
        };
        if matches!(spec.name, "sort" | "sort_ro") {
            let (named, every_key) = sort_keys(args);
            return Keys { named, every_key };
        }
        let unresolved = spec.key_specs.iter().any(|k| {
            k.flags & resp::command::K_NOT_KEY == 0
                && (matches!(k.begin, resp::command::BeginSearch::Unknown)
                    || matches!(k.find, resp::command::FindKeys::Unknown))
        });
        Keys {
            named: spec.key_positions(args),
            every_key: unresolved.then_some("this command's"),
        }
    }
}

/// Why a request is refused. Each variant renders as the error Redis
/// would send in its place, or as Redoubt's own `UNAVAILABLE` (not
/// executed, safe to retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong number of arguments for the command (its full name).
    Arity(&'static str),
    /// Not logged in.
    NoAuth,
    /// `HELLO` without `AUTH` before logging in.
    HelloNoAuth,
    /// The user may not run the command; `new_wording` follows Redis 7.2.
    NoPermCommand {
        /// The user's name.
        user: String,
        /// The command's ACL name.
        command: String,
        /// Redis 7.2 and later word it differently.
        new_wording: bool,
    },
    /// The user may not touch one of the keys.
    NoPermKey {
        /// Redis 7.2 and later word it differently.
        new_wording: bool,
    },
    /// `SORT … BY pattern` / `GET pattern` needs access to every key.
    SortOption(&'static str),
    /// A `no-multi` command queued inside `MULTI`.
    NotInMulti,
    /// Redoubt's own refusal: the text after `UNAVAILABLE `.
    Unavailable(String),
}

impl Refusal {
    /// The error line the client receives.
    pub fn reply(&self) -> Bytes {
        match self {
            Refusal::Arity(name) => reply::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            )),
            Refusal::NoAuth => reply::error("NOAUTH Authentication required."),
            Refusal::HelloNoAuth => reply::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            ),
            Refusal::NoPermCommand {
                user,
                command,
                new_wording,
            } => reply::error(if *new_wording {
                format!("NOPERM User {user} has no permissions to run the '{command}' command")
            } else {
                format!("NOPERM this user has no permissions to run the '{command}' command")
            }),
            Refusal::NoPermKey { new_wording } => reply::error(if *new_wording {
                "NOPERM No permissions to access a key"
            } else {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
            }),
            Refusal::SortOption(opt) => reply::error(format!(
                "ERR {opt} option of SORT denied due to insufficient ACL permissions."
            )),
            Refusal::NotInMulti => reply::error("ERR Command not allowed inside a transaction"),
            Refusal::Unavailable(text) => reply::error(format!("UNAVAILABLE {text}")),
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Arity(_) => "arity",
            Refusal::NoAuth | Refusal::HelloNoAuth => "noauth",
            Refusal::NoPermCommand { .. } | Refusal::NoPermKey { .. } | Refusal::SortOption(_) => {
                "noperm"
            }
            Refusal::NotInMulti => "no-multi",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

/// Checks a request's shape: a known command with the wrong number of
/// arguments is refused as Redis refuses it; otherwise its keys are
/// resolved. Unknown commands pass (Redis, or the local store, answers
/// them).
pub fn admit(args: &[Bytes]) -> Result<Gated, Refusal> {
    let g = Gated::of(args);
    match g.spec {
        Some(spec) if !spec.arity_ok(args.len()) => Err(Refusal::Arity(spec.name)),
        _ => Ok(g),
    }
}

/// `SORT key [BY pattern] [LIMIT o c] [GET pattern …] [ASC|DESC] [ALPHA]
/// [STORE dest]`: the sorted key is read, `STORE`'s destination written,
/// and a `BY` pattern with `*` or any `GET` reads keys known only while
/// sorting — Redis then asks for access to every key.
fn sort_keys(args: &[Bytes]) -> (Vec<(usize, u32)>, Option<&'static str>) {
    let mut keys = vec![(1, K_RO | K_ACCESS)];
    let mut every = None;
    let mut i = 2;
    while i < args.len() {
        let a = &args[i];
        let has_next = i + 1 < args.len();
        if a.eq_ignore_ascii_case(b"by") && has_next {
            if args[i + 1].contains(&b'*') && every.is_none() {
                every = Some("BY");
            }
            i += 2;
        } else if a.eq_ignore_ascii_case(b"get") && has_next {
            if every.is_none() {
                every = Some("GET");
            }
            i += 2;
        } else if a.eq_ignore_ascii_case(b"store") && has_next {
            keys.push((i + 1, K_OW | K_UPDATE));
            i += 2;
        } else if a.eq_ignore_ascii_case(b"limit") && i + 2 < args.len() {
            i += 3;
        } else {
            i += 1;
        }
    }
    (keys, every)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<Bytes> {
        s.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn wrong_arity_is_refused_in_redis_words() {
        let r = admit(&args(&["EXPIRE", "k"])).unwrap_err();
        assert_eq!(
            &r.reply()[..],
            b"-ERR wrong number of arguments for 'expire' command\r\n"
        );
        let r = admit(&args(&["client", "setname"])).unwrap_err();
        assert_eq!(r, Refusal::Arity("client|setname"));
        assert!(admit(&args(&["SETEX", "k", "10"])).is_err());
        assert!(admit(&args(&["GET", "k"])).is_ok());
        assert!(admit(&args(&["NOSUCH.MODULECMD", "x"])).is_ok());
    }

    fn keys(a: &[&str]) -> Keys {
        let a = args(a);
        admit(&a).unwrap().keys(&a)
    }

    #[test]
    fn sort_patterns_need_every_key_and_store_is_a_written_key() {
        let k = keys(&["SORT_RO", "l", "BY", "nosort", "GET", "sess:*"]);
        assert_eq!(k.every_key, Some("GET"));
        assert_eq!(keys(&["SORT", "l", "BY", "w_*"]).every_key, Some("BY"));
        let k = keys(&["SORT", "l", "BY", "nosort", "STORE", "dst"]);
        assert_eq!(k.every_key, None);
        assert_eq!(k.named.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 5]);
        let k = keys(&["SORT", "l", "LIMIT", "0", "1", "ALPHA"]);
        assert_eq!(k.every_key, None);
        assert_eq!(k.named.len(), 1);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]).named.len(), 2);
    }
}
