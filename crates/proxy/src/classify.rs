//! What kind of command a request is, which decides where it goes.
//! The table of connection-scoped commands is data; everything else comes
//! from the generated command table (flags, blocking, write).

use bytes::Bytes;
use resp::command::{F_BLOCKING, F_MAY_REPLICATE, F_WRITE};

/// Where a command is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connection state Redoubt keeps for the session (`SELECT`, `HELLO`…).
    Session(SessionCmd),
    /// `MULTI`.
    Multi,
    /// `EXEC`.
    Exec,
    /// `DISCARD`.
    Discard,
    /// `WATCH`: pins a dedicated connection.
    Watch,
    /// `UNWATCH`.
    Unwatch,
    /// Blocks on Redis: runs on a dedicated connection, with its block
    /// time added to the deadline (`None`: blocks forever).
    Blocking(Option<u64>),
    /// Switches the connection into a push stream (`SUBSCRIBE`,
    /// `MONITOR`, `CLIENT TRACKING on`): relayed on a dedicated connection.
    Tunnel,
    /// `CLIENT UNBLOCK <id>`: the id names a Redoubt client; forwarded
    /// with the Redis id of that client's blocking connection.
    ClientUnblock,
    /// Everything else: pipelined on the shared connection; `true` when
    /// it may write (a lost reply is then `UNCERTAIN`).
    Forward(bool),
}

/// Connection-scoped commands answered for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCmd {
    /// `AUTH [user] pass`
    Auth,
    /// `HELLO [proto [AUTH u p] [SETNAME n]]`
    Hello,
    /// `SELECT db`
    Select,
    /// `CLIENT ID`
    ClientId,
    /// `CLIENT SETNAME`
    ClientSetName,
    /// `CLIENT GETNAME`
    ClientGetName,
    /// `CLIENT SETINFO`
    ClientSetInfo,
    /// `CLIENT INFO`
    ClientInfo,
    /// `CLIENT LIST`: Redoubt's own clients (Redis would list only
    /// Redoubt's pooled connections, and tools that look for their
    /// connection names, like BullMQ, would find nothing).
    ClientList,
    /// `CLIENT REPLY ON|OFF|SKIP`
    ClientReply,
    /// `CLIENT NO-EVICT|NO-TOUCH`: per-connection switches that make no
    /// sense on a shared connection; acknowledged.
    ClientSwitch,
    /// `UNSUBSCRIBE`, `PUNSUBSCRIBE`, `SUNSUBSCRIBE` from a connection
    /// that is not subscribed (a subscribed one is relayed): Redis's
    /// confirmation with a count of 0.
    Unsubscribe,
    /// `RESET`
    Reset,
    /// `QUIT`
    Quit,
}

/// Connection-scoped commands by their command-table name.
const SESSION_TABLE: &[(&str, SessionCmd)] = &[
    ("auth", SessionCmd::Auth),
    ("hello", SessionCmd::Hello),
    ("select", SessionCmd::Select),
    ("reset", SessionCmd::Reset),
    ("unsubscribe", SessionCmd::Unsubscribe),
    ("punsubscribe", SessionCmd::Unsubscribe),
    ("sunsubscribe", SessionCmd::Unsubscribe),
    ("quit", SessionCmd::Quit),
    ("client|id", SessionCmd::ClientId),
    ("client|setname", SessionCmd::ClientSetName),
    ("client|getname", SessionCmd::ClientGetName),
    ("client|setinfo", SessionCmd::ClientSetInfo),
    ("client|info", SessionCmd::ClientInfo),
    ("client|list", SessionCmd::ClientList),
    ("client|reply", SessionCmd::ClientReply),
    ("client|no-evict", SessionCmd::ClientSwitch),
    ("client|no-touch", SessionCmd::ClientSwitch),
];

/// Commands that turn the connection into a push stream.
const TUNNEL: &[&str] = &[
    "subscribe",
    "psubscribe",
    "ssubscribe",
    "monitor",
    "sync",
    "psync",
];

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Classifies a request by its arguments (name first) and its row in the
/// command table, which the gate looked up: this runs for every command.
pub fn classify(args: &[Bytes], spec: Option<&resp::CommandSpec>) -> Kind {
    // Not in the table (a module, a newer Redis): forwarded as is.
    let Some(spec) = spec else {
        return Kind::Forward(true);
    };
    let name = spec.name;
    if let Some((_, cmd)) = SESSION_TABLE.iter().find(|(n, _)| *n == name) {
        return Kind::Session(*cmd);
    }
    match name {
        "exec" => return Kind::Exec,
        "multi" => return Kind::Multi,
        "watch" => return Kind::Watch,
        "discard" => return Kind::Discard,
        "unwatch" => return Kind::Unwatch,
        "client|unblock" => return Kind::ClientUnblock,
        "client|tracking" if args.get(2).is_some_and(|a| eq(a, "on")) => return Kind::Tunnel,
        // Subcommands newer than our 7.0 table land on the container row.
        "client" => {
            if let Some(sub) = args.get(1) {
                let newer = [
                    ("setinfo", SessionCmd::ClientSetInfo),
                    ("no-touch", SessionCmd::ClientSwitch),
                ];
                if let Some((_, cmd)) = newer.iter().find(|(n, _)| eq(sub, n)) {
                    return Kind::Session(*cmd);
                }
            }
        }
        _ => {}
    }
    if TUNNEL.contains(&name) {
        return Kind::Tunnel;
    }
    if spec.has(F_BLOCKING) {
        if let Some(t) = block_ms(args) {
            return Kind::Blocking(t);
        }
    }
    Kind::Forward(spec_writes(spec))
}

fn spec_writes(spec: &resp::CommandSpec) -> bool {
    // A PUBLISH whose reply was lost may have been delivered: resending it
    // could deliver it twice, so it is not a read. PFCOUNT may replicate
    // only its cached count: resending it is harmless, so it is one.
    (spec.has(F_WRITE | F_MAY_REPLICATE) && spec.name != "pfcount")
        || spec.group == "scripting"
        || matches!(spec.name, "publish" | "spublish")
}

/// The block time of a blocking command in ms (`Some(None)`: forever), or
/// `None` when this invocation does not block (`XREAD` without `BLOCK`).
fn block_ms(args: &[Bytes]) -> Option<Option<u64>> {
    let name = args[0].to_ascii_lowercase();
    let secs = |a: Option<&Bytes>| -> Option<Option<u64>> {
        let v: f64 = std::str::from_utf8(a?).ok()?.parse().ok()?;
        Some(if v <= 0.0 {
            None
        } else {
            Some((v * 1000.0).ceil() as u64)
        })
    };
    let ms = |a: Option<&Bytes>| -> Option<Option<u64>> {
        let v: u64 = std::str::from_utf8(a?).ok()?.parse().ok()?;
        Some(if v == 0 { None } else { Some(v) })
    };
    match &name[..] {
        b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" | b"brpoplpush" | b"blmove" => {
            secs(args.last())
        }
        b"blmpop" | b"bzmpop" => secs(args.get(1)),
        b"wait" => ms(args.get(2)),
        b"waitaof" => ms(args.get(3)),
        b"xread" | b"xreadgroup" => {
            let i = args.iter().position(|a| eq(a, "block"))?;
            ms(args.get(i + 1))
        }
        // Unknown blocking command: treat as blocking forever (dedicated
        // connection, no deadline) rather than risk stalling a shared one.
        _ => Some(None),
    }
}

/// True when a command may change data, so a lost reply is `UNCERTAIN`.
/// Unknown commands (modules, newer Redis) count as writes: the safe side,
/// and so do scripts, which Redis 7.0 does not flag as writes.
pub fn is_write(args: &[Bytes]) -> bool {
    match resp::lookup(args) {
        Some(spec) => spec_writes(spec),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(args: &[&str]) -> Kind {
        let a: Vec<Bytes> = args
            .iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect();
        classify(&a, resp::lookup(&a))
    }

    #[test]
    fn every_session_table_row_classifies() {
        for (n, cmd) in SESSION_TABLE {
            let args: Vec<String> = n.split('|').map(|s| s.to_uppercase()).collect();
            let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            assert_eq!(k(&refs), Kind::Session(*cmd), "{args:?}");
        }
        assert_eq!(
            k(&["CLIENT", "SETINFO", "lib-name", "x"]),
            Kind::Session(SessionCmd::ClientSetInfo)
        );
    }

    #[test]
    fn routing_kinds() {
        assert_eq!(k(&["GET", "a"]), Kind::Forward(false));
        assert_eq!(k(&["SET", "a", "1"]), Kind::Forward(true));
        assert_eq!(
            k(&["client", "list"]),
            Kind::Session(SessionCmd::ClientList)
        );
        assert_eq!(k(&["client", "getredir"]), Kind::Forward(false));
        assert_eq!(k(&["CLIENT", "UNBLOCK", "7"]), Kind::ClientUnblock);
        assert_eq!(k(&["MULTI"]), Kind::Multi);
        assert_eq!(k(&["exec"]), Kind::Exec);
        assert_eq!(k(&["WATCH", "a"]), Kind::Watch);
        assert_eq!(k(&["subscribe", "c"]), Kind::Tunnel);
        assert_eq!(k(&["CLIENT", "TRACKING", "on", "BCAST"]), Kind::Tunnel);
        assert_eq!(k(&["BLPOP", "q", "1.5"]), Kind::Blocking(Some(1500)));
        assert_eq!(k(&["BLPOP", "q", "0"]), Kind::Blocking(None));
        assert_eq!(
            k(&["BLMPOP", "2", "2", "a", "b", "LEFT"]),
            Kind::Blocking(Some(2000))
        );
        assert_eq!(
            k(&["XREAD", "BLOCK", "100", "STREAMS", "s", "$"]),
            Kind::Blocking(Some(100))
        );
        assert_eq!(k(&["XREAD", "STREAMS", "s", "0"]), Kind::Forward(false));
        assert_eq!(k(&["FOO.BAR", "x"]), Kind::Forward(true));
    }

    #[test]
    fn writes_and_unknowns_are_uncertain() {
        let b = |s: &[&str]| {
            s.iter()
                .map(|x| Bytes::copy_from_slice(x.as_bytes()))
                .collect::<Vec<_>>()
        };
        assert!(is_write(&b(&["SET", "a", "1"])));
        assert!(is_write(&b(&["EVAL", "return 1", "0"])));
        assert!(is_write(&b(&["MODULE.CMD"])));
        assert!(!is_write(&b(&["GET", "a"])));
    }
}
