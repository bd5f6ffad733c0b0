//! The server commands a Redis 7.0 client or tool may send that the store
//! answers as a stand-alone, module-less Redis with no cluster, no
//! replicas and no allocator statistics would: the HELP texts (as
//! `redis-server` 7.0 prints them), MEMORY, MODULE, LATENCY GRAPH,
//! COMMAND GETKEYSANDFLAGS, the cluster commands, client tracking's
//! queries; and the few refused by design, each saying why and what to do.

use bytes::Bytes;
use resp::command::{
    K_ACCESS, K_DELETE, K_INCOMPLETE, K_INSERT, K_NOT_KEY, K_OW, K_RM, K_RO, K_RW, K_UPDATE,
    K_VARIABLE_FLAGS,
};
use resp::Frame;

use crate::ctx::Handler;
use crate::ctx::{err, Ctx, Reply};
use crate::scripting::help;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("client|help", client_help),
    ("command|help", command_help),
    ("config|help", config_help),
    ("latency|help", latency_help),
    ("memory|help", memory_help),
    ("module|help", module_help),
    ("pubsub|help", pubsub_help),
    ("slowlog|help", slowlog_help),
    ("asking", no_cluster),
    ("readonly", no_cluster),
    ("readwrite", no_cluster),
    ("memory|doctor", memory_doctor),
    ("memory|malloc-stats", memory_malloc_stats),
    ("memory|purge", ok),
    ("memory|stats", memory_stats),
    ("module|list", module_list),
    ("module|load", module_refused),
    ("module|loadex", module_refused),
    ("module|unload", module_refused),
    ("latency|graph", latency_graph),
    ("command|getkeysandflags", command_getkeysandflags),
    ("client|getredir", client_getredir),
    ("client|trackinginfo", client_trackinginfo),
    ("client|caching", client_caching),
    ("client|tracking", client_tracking),
    ("client|pause", client_pause),
    ("client|unpause", client_unpause),
    ("client|reply", client_reply),
    ("restore-asking", crate::dump::restore),
    ("replicaof", replicaof),
    ("slaveof", replicaof),
    ("replconf", crate::server::no_replicas_here),
    ("migrate", migrate),
    ("save", persisted_by_journal),
    ("bgsave", persisted_by_journal),
    ("bgrewriteaof", persisted_by_journal),
    ("shutdown", shutdown),
];

/// Every `CLUSTER` subcommand, answered as a Redis started without
/// `cluster-enabled`.
pub(crate) fn cluster_commands() -> impl Iterator<Item = (&'static str, Handler)> {
    resp::command::SUBCOMMANDS
        .iter()
        .filter(|s| s.name.starts_with("cluster|"))
        .map(|s| (s.name, no_cluster as Handler))
}

fn ok(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::simple("OK"))
}

fn no_cluster(_ctx: &mut Ctx) -> Reply {
    Err(err("ERR This instance has cluster support disabled"))
}

/// Redis's report for an instance under 5 MB, and for one where its
/// checks find nothing (the store has no allocator fragmentation or
/// replication buffers to report).
fn memory_doctor(ctx: &mut Ctx) -> Reply {
    let text = if crate::eviction::used(ctx.inner) < 5 * 1024 * 1024 {
        "Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting."
    } else {
        "Hi Sam, I can't find any memory issue in your instance. I can only account for what occurs on this base."
    };
    Ok(crate::server::verbatim(ctx, text.to_string()))
}

fn memory_malloc_stats(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::bulk("Stats not supported for the current allocator"))
}

/// MEMORY STATS's fields a monitoring tool reads, from the store's own
/// accounting (no allocator figures).
fn memory_stats(ctx: &mut Ctx) -> Reply {
    let used = crate::eviction::used(ctx.inner) as i64;
    let startup = crate::eviction::BASELINE as i64;
    let peak = (ctx.inner.peak_memory + crate::eviction::BASELINE) as i64;
    let keys: usize = ctx.inner.dbs.iter().map(|d| d.len()).sum();
    let dataset = ctx.inner.used_memory as i64;
    let scripts = ctx
        .inner
        .scripting
        .eval
        .as_ref()
        .map_or(0, |e| e.scripts.len()) as i64;
    let pct = |part: i64, whole: i64| {
        if whole > 0 {
            part as f64 * 100.0 / whole as f64
        } else {
            0.0
        }
    };
    let mut pairs = vec![
        (Frame::bulk("peak.allocated"), Frame::Integer(peak)),
        (Frame::bulk("total.allocated"), Frame::Integer(used)),
        (Frame::bulk("startup.allocated"), Frame::Integer(startup)),
        (Frame::bulk("replication.backlog"), Frame::Integer(0)),
        (Frame::bulk("clients.slaves"), Frame::Integer(0)),
        (Frame::bulk("clients.normal"), Frame::Integer(0)),
        (Frame::bulk("cluster.links"), Frame::Integer(0)),
        (Frame::bulk("aof.buffer"), Frame::Integer(0)),
        (Frame::bulk("lua.caches"), Frame::Integer(scripts)),
        (Frame::bulk("functions.caches"), Frame::Integer(0)),
        (Frame::bulk("overhead.total"), Frame::Integer(startup)),
    ];
    for (n, db) in ctx.inner.dbs.iter().enumerate() {
        if !db.is_empty() {
            pairs.push((
                Frame::bulk(format!("db.{n}")),
                ctx.map(vec![
                    (Frame::bulk("overhead.hashtable.main"), Frame::Integer(0)),
                    (Frame::bulk("overhead.hashtable.expires"), Frame::Integer(0)),
                ]),
            ));
        }
    }
    pairs.extend([
        (Frame::bulk("keys.count"), Frame::Integer(keys as i64)),
        (
            Frame::bulk("keys.bytes-per-key"),
            Frame::Integer(if keys > 0 { dataset / keys as i64 } else { 0 }),
        ),
        (Frame::bulk("dataset.bytes"), Frame::Integer(dataset)),
        (
            Frame::bulk("dataset.percentage"),
            ctx.double(pct(dataset, used - startup)),
        ),
        (Frame::bulk("peak.percentage"), ctx.double(pct(used, peak))),
        (Frame::bulk("fragmentation"), ctx.double(1.0)),
    ]);
    Ok(ctx.map(pairs))
}

fn module_list(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Array(Vec::new()))
}

/// Redis 7.0's answer while `enable-module-command` is `no`, its default,
/// which the store keeps: it runs no modules.
fn module_refused(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR MODULE command not allowed. If the enable-module-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
    ))
}

/// No latency samples are kept (LATENCY LATEST is empty): Redis's answer
/// for an event without samples.
fn latency_graph(ctx: &mut Ctx) -> Reply {
    Err(Frame::error(format!(
        "ERR No samples available for event '{}'",
        String::from_utf8_lossy(&ctx.args[2])
    )))
}

/// The key-spec flags, in the order Redis names them.
const KEY_FLAGS: [(u32, &str); 11] = [
    (K_RW, "RW"),
    (K_RO, "RO"),
    (K_OW, "OW"),
    (K_RM, "RM"),
    (K_ACCESS, "access"),
    (K_UPDATE, "update"),
    (K_INSERT, "insert"),
    (K_DELETE, "delete"),
    (K_NOT_KEY, "not_key"),
    (K_INCOMPLETE, "incomplete"),
    (K_VARIABLE_FLAGS, "variable_flags"),
];

fn command_getkeysandflags(ctx: &mut Ctx) -> Reply {
    let args = &ctx.args[2..];
    let Some(spec) = resp::lookup(args) else {
        return Err(err("ERR Invalid command specified"));
    };
    if spec.key_specs.is_empty() {
        return Err(err("ERR The command has no key arguments"));
    }
    if !spec.arity_ok(args.len()) {
        return Err(err("ERR Invalid number of arguments specified for command"));
    }
    let out = key_flags(spec, args)
        .into_iter()
        .map(|(i, flags)| {
            let names = KEY_FLAGS
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, n)| Frame::Simple(Bytes::from_static(n.as_bytes())))
                .collect();
            Frame::Array(vec![Frame::Bulk(args[i].clone()), ctx.set_reply(names)])
        })
        .collect();
    Ok(Frame::Array(out))
}

/// The keys and their flags as Redis's own key-finding functions give
/// them where the table's specs cannot: SET's flags depend on GET, SORT's
/// STORE destination is found by parsing.
fn key_flags(spec: &resp::CommandSpec, args: &[Bytes]) -> Vec<(usize, u32)> {
    match spec.name {
        "set" => {
            let get = args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"get"));
            let flags = if get {
                K_RW | K_ACCESS | K_UPDATE
            } else {
                K_OW | K_UPDATE
            };
            vec![(1, flags)]
        }
        "sort" => {
            let mut out = vec![(1, K_RO | K_ACCESS)];
            let mut i = 2;
            while i < args.len() {
                let skip = if args[i].eq_ignore_ascii_case(b"limit") {
                    2
                } else if ["by", "get", "store"]
                    .iter()
                    .any(|w| args[i].eq_ignore_ascii_case(w.as_bytes()))
                {
                    if args[i].eq_ignore_ascii_case(b"store") && i + 1 < args.len() {
                        // The last STORE wins, as in Redis.
                        out.truncate(1);
                        out.push((i + 1, K_OW | K_UPDATE));
                    }
                    1
                } else {
                    0
                };
                i += 1 + skip;
            }
            out
        }
        _ => spec.key_positions(args),
    }
}

/// Client tracking is off for every client of the store.
fn client_getredir(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(-1))
}

fn client_trackinginfo(ctx: &mut Ctx) -> Reply {
    Ok(ctx.map(vec![
        (
            Frame::bulk("flags"),
            ctx.set_reply(vec![Frame::bulk("off")]),
        ),
        (Frame::bulk("redirect"), Frame::Integer(-1)),
        (Frame::bulk("prefixes"), Frame::Array(Vec::new())),
    ]))
}

fn client_caching(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
    ))
}

/// `OFF` is what every client already is. `ON` would promise invalidation
/// messages the store does not send, so it is refused.
fn client_tracking(ctx: &mut Ctx) -> Reply {
    if ctx.arg_is(2, "off") {
        return Ok(Frame::simple("OK"));
    }
    if ctx.arg_is(2, "on") {
        return Err(err(
            "ERR CLIENT TRACKING ON: standalone redoubt sends no invalidation messages, so tracking stays off and nothing was changed; cache without tracking (or with a TTL) against redoubt",
        ));
    }
    Err(err("ERR syntax error"))
}

/// CLIENT PAUSE timeout [WRITE|ALL]: commands wait in `Store::execute`
/// (`wait_unpaused`). A pause already in effect is extended, never
/// shortened or relaxed.
fn client_pause(ctx: &mut Ctx) -> Reply {
    let ms = crate::num::parse_i64(&ctx.args[2])
        .ok_or_else(|| err("ERR timeout is not an integer or out of range"))?;
    if ms < 0 {
        return Err(err("ERR timeout is negative"));
    }
    let all = match ctx.args.len() {
        3 => true,
        4 if ctx.arg_is(3, "all") => true,
        4 if ctx.arg_is(3, "write") => false,
        4 => return Err(err("ERR CLIENT PAUSE mode must be WRITE or ALL")),
        _ => return Err(err("ERR syntax error")),
    };
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
    ctx.shared.pause.send_modify(|p| {
        *p = Some(match *p {
            Some(old) if tokio::time::Instant::now() < old.until => crate::store::Pause {
                until: old.until.max(until),
                all: old.all || all,
            },
            _ => crate::store::Pause { until, all },
        })
    });
    ctx.shared
        .paused
        .store(true, std::sync::atomic::Ordering::Release);
    Ok(Frame::simple("OK"))
}

fn client_unpause(ctx: &mut Ctx) -> Reply {
    ctx.shared.pause.send_replace(None);
    ctx.shared
        .paused
        .store(false, std::sync::atomic::Ordering::Release);
    Ok(Frame::simple("OK"))
}

/// CLIENT REPLY ON|OFF|SKIP: the session's state; `Store::execute` marks
/// each reply to send or not (`Session::silenced`).
fn client_reply(ctx: &mut Ctx) -> Reply {
    if ctx.arg_is(2, "on") {
        ctx.sess.reply_off = false;
    } else if ctx.arg_is(2, "off") {
        ctx.sess.reply_off = true;
    } else if ctx.arg_is(2, "skip") {
        ctx.sess.skip_next = true;
    } else {
        return Err(err("ERR syntax error"));
    }
    Ok(Frame::simple("OK"))
}

/// `NO ONE` is what the store already is; following another Redis is
/// what `redoubt serve --upstream` does, not a command.
fn replicaof(ctx: &mut Ctx) -> Reply {
    if ctx.arg_is(1, "no") && ctx.arg_is(2, "one") {
        return Ok(Frame::simple("OK"));
    }
    Err(err(
        "ERR standalone redoubt cannot become a replica: nothing was changed; to sit in front of a Redis, run redoubt serve --upstream redis://HOST:PORT",
    ))
}

/// MIGRATE would open a connection to another server from inside the
/// store, which owns no sockets.
fn migrate(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR MIGRATE is not available in redoubt: nothing was moved; copy keys with DUMP here and RESTORE on the target (or redoubt journal export), then DEL here",
    ))
}

/// Standalone answers these itself (a compaction of its journal into a
/// snapshot); the store alone has no files.
fn persisted_by_journal(ctx: &mut Ctx) -> Reply {
    Err(Frame::error(format!(
        "ERR {}: this keyspace is persisted by redoubt's journal, which owns its files: nothing was saved here",
        ctx.name.to_ascii_uppercase()
    )))
}

/// A client does not stop the server: its operator does.
fn shutdown(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR SHUTDOWN is not taken from clients by redoubt: nothing was stopped; stop it with SIGTERM (systemctl stop, docker stop), which ends it cleanly with every acknowledged write kept",
    ))
}

fn client_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "CLIENT",
        &[
            "CACHING (YES|NO)",
            "    Enable/disable tracking of the keys for next command in OPTIN/OPTOUT modes.",
            "GETREDIR",
            "    Return the client ID we are redirecting to when tracking is enabled.",
            "GETNAME",
            "    Return the name of the current connection.",
            "ID",
            "    Return the ID of the current connection.",
            "INFO",
            "    Return information about the current client connection.",
            "KILL <ip:port>",
            "    Kill connection made from <ip:port>.",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Kill connections. Options are:",
            "    * ADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made from the specified address",
            "    * LADDR (<ip:port>|<unixsocket>:0)",
            "      Kill connections made to specified local address",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Kill connections by type.",
            "    * USER <username>",
            "      Kill connections authenticated by <username>.",
            "    * SKIPME (YES|NO)",
            "      Skip killing current connection (default: yes).",
            "LIST [options ...]",
            "    Return information about client connections. Options:",
            "    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)",
            "      Return clients of specified type.",
            "UNPAUSE",
            "    Stop the current client pause, resuming traffic.",
            "PAUSE <timeout> [WRITE|ALL]",
            "    Suspend all, or just write, clients for <timeout> milliseconds.",
            "REPLY (ON|OFF|SKIP)",
            "    Control the replies sent to the current connection.",
            "SETNAME <name>",
            "    Assign the name <name> to the current connection.",
            "UNBLOCK <clientid> [TIMEOUT|ERROR]",
            "    Unblock the specified blocked client.",
            "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]]",
            "         [OPTIN] [OPTOUT] [NOLOOP]",
            "    Control server assisted client side caching.",
            "TRACKINGINFO",
            "    Report tracking status for the current connection.",
            "NO-EVICT (ON|OFF)",
            "    Protect current client connection from eviction.",
        ],
    ))
}

fn command_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "GETKEYSANDFLAGS <full-command>",
            "    Return the keys and the access flags from a full Redis command.",
        ],
    ))
}

fn config_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "CONFIG",
        &[
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
        ],
    ))
}

fn latency_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "LATENCY",
        &[
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "GRAPH <event>",
            "    Return an ASCII latency graph for the <event> class.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HISTOGRAM [COMMAND ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
        ],
    ))
}

fn memory_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "MEMORY",
        &[
            "DOCTOR",
            "    Return memory problems reports.",
            "MALLOC-STATS",
            "    Return internal statistics report from the memory allocator.",
            "PURGE",
            "    Attempt to purge dirty pages for reclamation by the allocator.",
            "STATS",
            "    Return information about the memory usage of the server.",
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ],
    ))
}

fn module_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "MODULE",
        &[
            "LIST",
            "    Return a list of loaded modules.",
            "LOAD <path> [<arg> ...]",
            "    Load a module library from <path>, passing to it any optional arguments.",
            "LOADEX <path> [[CONFIG NAME VALUE] [CONFIG NAME VALUE]] [ARGS ...]",
            "    Load a module library from <path>, while passing it module configurations and optional arguments.",
            "UNLOAD <name>",
            "    Unload a module.",
        ],
    ))
}

fn pubsub_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "PUBSUB",
        &[
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "SHARDCHANNELS [<pattern>]",
            "    Return the currently active shard level channels matching a <pattern> (default: '*').",
            "SHARDNUMSUB [<shardchannel> ...]",
            "    Return the number of subscribers for the specified shard level channel(s)",
        ],
    ))
}

fn slowlog_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "SLOWLOG",
        &[
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
        ],
    ))
}
