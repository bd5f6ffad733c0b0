//! `ACL` in standalone mode, answered as Redis 7.0 answers it for the users
//! standalone has: the `[auth]` users, or, with none configured, Redis's
//! own `default` with `nopass`. Every one of them may run every command on
//! every key and channel (`~* &* +@all`), which is what standalone
//! enforces; so `ACL DRYRUN` says `OK` for any user that exists.
//!
//! Users are the config's: `ACL SETUSER`, `DELUSER`, `LOAD` and `SAVE`
//! are refused with a reply that says where users are changed, since a
//! rule accepted here would be one standalone does not enforce.

use bytes::Bytes;
use rand::RngCore;
use resp::Frame;

use super::LocalUser;

/// Redis's `GENPASS` bound.
const GENPASS_MAX_BITS: i64 = 4096;

/// One user as standalone knows it.
struct User {
    name: String,
    /// Hex SHA-256 of the password; `None`: `nopass`.
    password: Option<String>,
}

fn users_of(configured: &[LocalUser]) -> Vec<User> {
    if configured.is_empty() {
        return vec![User {
            name: "default".into(),
            password: None,
        }];
    }
    let mut v: Vec<User> = configured
        .iter()
        .map(|u| User {
            name: u.name().to_string(),
            password: Some(u.password_hex()),
        })
        .collect();
    // Redis lists users in name order (its radix tree).
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn error(text: impl AsRef<str>) -> Frame {
    Frame::error(format!("ERR {}", text.as_ref()))
}

/// The `ACL` reply for `args` (`ACL` and its subcommand first) from a
/// session logged in as `whoami`, for protocol `proto`.
pub fn answer(configured: &[LocalUser], whoami: &str, args: &[Bytes], proto: u8) -> Frame {
    let users = users_of(configured);
    let sub = args
        .get(1)
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .unwrap_or_default();
    let argc = args.len();
    let find = |name: &[u8]| users.iter().find(|u| u.name.as_bytes() == name);
    match (sub.as_str(), argc) {
        ("whoami", 2) => Frame::bulk(whoami),
        ("users", 2) => Frame::Array(users.iter().map(|u| Frame::bulk(&u.name)).collect()),
        ("list", 2) => Frame::Array(
            users
                .iter()
                .map(|u| Frame::bulk(format!("user {} {}", u.name, describe(u))))
                .collect(),
        ),
        ("getuser", 3) => match find(&args[2]) {
            Some(u) => getuser(u, proto),
            None if proto >= 3 => Frame::Null,
            None => Frame::NullBulk,
        },
        ("cat", 2) => Frame::Array(CATEGORIES.iter().map(Frame::bulk).collect()),
        ("cat", 3) => {
            let cat = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
            if !CATEGORIES.contains(&cat.as_str()) {
                return error(format!(
                    "Unknown category '{}'",
                    String::from_utf8_lossy(&args[2])
                ));
            }
            Frame::Array(
                resp::command::COMMANDS
                    .iter()
                    .chain(resp::command::SUBCOMMANDS.iter())
                    .filter(|c| c.acl.contains(&cat.as_str()))
                    .map(|c| Frame::bulk(c.name))
                    .collect(),
            )
        }
        ("dryrun", n) if n >= 4 => {
            if find(&args[2]).is_none() {
                return error(format!(
                    "User '{}' not found",
                    String::from_utf8_lossy(&args[2])
                ));
            }
            let Some(spec) = resp::lookup(&args[3..]) else {
                return error(format!(
                    "Command '{}' not found",
                    String::from_utf8_lossy(&args[3])
                ));
            };
            let given = (n - 3) as i32;
            if (spec.arity > 0 && spec.arity != given) || given < -spec.arity {
                return error(format!(
                    "wrong number of arguments for '{}' command",
                    spec.name
                ));
            }
            Frame::simple("OK")
        }
        ("genpass", 2 | 3) => {
            let bits = match args.get(2) {
                None => 256,
                Some(b) => match std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                {
                    Some(n) => n,
                    None => return error("value is not an integer or out of range"),
                },
            };
            if bits <= 0 || bits > GENPASS_MAX_BITS {
                return error(format!("ACL GENPASS argument must be the number of bits for the output password, a positive number up to {GENPASS_MAX_BITS}"));
            }
            let chars = ((bits + 3) / 4) as usize;
            let mut raw = vec![0u8; chars.div_ceil(2)];
            rand::thread_rng().fill_bytes(&mut raw);
            let mut hex = hex(&raw);
            hex.truncate(chars);
            Frame::bulk(hex)
        }
        // Nothing standalone refuses is an ACL denial: the log stays empty.
        ("log", 2) => Frame::Array(Vec::new()),
        ("log", 3) => {
            if args[2].eq_ignore_ascii_case(b"reset") {
                return Frame::simple("OK");
            }
            match std::str::from_utf8(&args[2])
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(_) => Frame::Array(Vec::new()),
                None => error("value is not an integer or out of range"),
            }
        }
        ("setuser", n) if n >= 3 => config_only("SETUSER"),
        ("deluser", n) if n >= 3 => config_only("DELUSER"),
        ("load", 2) => config_only("LOAD"),
        ("save", 2) => config_only("SAVE"),
        ("help", 2) => Frame::Array(
            HELP.iter()
                .map(|l| Frame::Simple(Bytes::from(*l)))
                .collect(),
        ),
        _ => error(format!(
            "unknown subcommand or wrong number of arguments for '{}'. Try ACL HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |b| &b[..]))
        )),
    }
}

fn config_only(sub: &str) -> Frame {
    error(format!(
        "ACL {sub}: standalone Redoubt's users are the [auth] users of its config file (mode = \"local\"), each allowed every command and key; change them there and restart: command not executed"
    ))
}

/// `on #<hash> ~* &* +@all`, or `on nopass ~* &* +@all`.
fn describe(u: &User) -> String {
    let pass = match &u.password {
        Some(h) => format!("#{h}"),
        None => "nopass".into(),
    };
    format!("on {pass} ~* &* +@all")
}

fn getuser(u: &User, proto: u8) -> Frame {
    let mut flags = vec![Frame::bulk("on")];
    if u.password.is_none() {
        flags.push(Frame::bulk("nopass"));
    }
    let flags = if proto >= 3 {
        Frame::Set(flags)
    } else {
        Frame::Array(flags)
    };
    let passwords = Frame::Array(u.password.iter().map(Frame::bulk).collect());
    let pairs = vec![
        (Frame::bulk("flags"), flags),
        (Frame::bulk("passwords"), passwords),
        (Frame::bulk("commands"), Frame::bulk("+@all")),
        (Frame::bulk("keys"), Frame::bulk("~*")),
        (Frame::bulk("channels"), Frame::bulk("&*")),
        (Frame::bulk("selectors"), Frame::Array(Vec::new())),
    ];
    if proto >= 3 {
        Frame::Map(pairs)
    } else {
        Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Redis 7.0's ACL categories, in `ACL CAT`'s order.
const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

const HELP: &[&str] = &[
    "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CAT [<category>]",
    "    List all commands that belong to <category>, or all command categories",
    "    when no category is specified.",
    "DELUSER <username> [<username> ...]",
    "    Refused: standalone Redoubt's users are its config's [auth] users.",
    "DRYRUN <username> <command> [<arg> ...]",
    "    Returns whether the user can execute the given command without executing the command.",
    "GETUSER <username>",
    "    Get the user's details.",
    "GENPASS [<bits>]",
    "    Generate a secure 256-bit user password. The optional `bits` argument can",
    "    be used to specify a different size.",
    "LIST",
    "    Show users details in config file format.",
    "LOAD",
    "    Refused: standalone Redoubt's users are its config's [auth] users.",
    "LOG [<count> | RESET]",
    "    Show the ACL log entries (always empty: every user may run everything).",
    "SAVE",
    "    Refused: standalone Redoubt's users are its config's [auth] users.",
    "SETUSER <username> <attribute> [<attribute> ...]",
    "    Refused: standalone Redoubt's users are its config's [auth] users.",
    "USERS",
    "    List all the registered usernames.",
    "WHOAMI",
    "    Return the current connection username.",
    "HELP",
    "    Print this help.",
];
