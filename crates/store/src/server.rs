//! Connection and server commands: PING, ECHO, TIME, HELLO, RESET, CLIENT,
//! COMMAND (from `resp`'s command table) and INFO.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use resp::command::{CommandSpec, COMMANDS as SPECS, REDIS_VERSION, SUBCOMMANDS};
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply, SYNTAX};
use crate::num;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("ping", ping),
    ("echo", echo),
    ("time", time),
    ("hello", hello),
    ("reset", reset),
    ("lastsave", lastsave),
    ("quit", quit),
    ("role", role),
    ("memory|usage", memory_usage),
    ("auth", auth),
    ("info", info),
    ("client|id", client_id),
    ("client|setname", client_setname),
    ("client|getname", client_getname),
    ("client|list", client_list),
    ("client|info", client_info),
    ("client|kill", client_kill),
    ("client|unblock", client_unblock),
    ("command", command),
    ("command|count", command_count),
    ("command|info", command_info),
    ("command|docs", command_docs),
    ("command|list", command_list),
    ("command|getkeys", command_getkeys),
    ("client|no-evict", client_no_evict),
    ("latency|latest", empty_array),
    ("latency|history", empty_array),
    ("latency|reset", zero),
    ("latency|doctor", latency_doctor),
    ("latency|histogram", latency_histogram),
    ("slowlog|get", empty_array),
    ("slowlog|len", zero),
    ("slowlog|reset", ok),
    ("lolwut", lolwut),
    ("wait", wait),
    ("failover", failover),
    ("sync", no_replicas_here),
    ("psync", no_replicas_here),
    ("debug", debug),
    ("monitor", monitor),
];

// The store keeps no latency samples and no slow log: each is empty, as
// a fresh Redis's is.
fn empty_array(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Array(Vec::new()))
}

fn zero(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(0))
}

fn ok(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::simple("OK"))
}

fn latency_doctor(ctx: &mut Ctx) -> Reply {
    Ok(verbatim(
        ctx,
        "Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep tonight.\n".into(),
    ))
}

/// `LATENCY HISTOGRAM [command …]`: no per-command histograms are kept.
fn latency_histogram(ctx: &mut Ctx) -> Reply {
    Ok(ctx.map(Vec::new()))
}

/// `CLIENT NO-EVICT on|off`: the store never evicts clients.
fn client_no_evict(ctx: &mut Ctx) -> Reply {
    if ctx.arg_is(2, "on") || ctx.arg_is(2, "off") {
        Ok(Frame::simple("OK"))
    } else {
        Err(err(SYNTAX))
    }
}

fn lolwut(ctx: &mut Ctx) -> Reply {
    Ok(verbatim(
        ctx,
        format!("Redoubt standalone, answering as Redis ver. {REDIS_VERSION}\n"),
    ))
}

/// `WAIT numreplicas timeout`: standalone has no replicas, so none
/// acknowledges; answered at once rather than after `timeout` (a Redis
/// without replicas answers 0 too, once the timeout has passed).
fn wait(ctx: &mut Ctx) -> Reply {
    for i in 1..=2 {
        match num::parse_i64(&ctx.args[i]) {
            Some(n) if n >= 0 => {}
            Some(_) if i == 2 => return Err(err("ERR timeout is negative")),
            _ => return Err(err("ERR value is not an integer or out of range")),
        }
    }
    Ok(Frame::Integer(0))
}

/// Redis's own reply when no replica is connected.
fn failover(_ctx: &mut Ctx) -> Reply {
    Err(err("ERR FAILOVER requires connected replicas."))
}

pub(crate) fn no_replicas_here(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR standalone Redoubt does not serve replicas (its durability is its journal; see redoubt journal export): command not executed",
    ))
}

fn debug(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR DEBUG is Redis's internal debugging interface; Redoubt has none: command not executed",
    ))
}

fn monitor(_ctx: &mut Ctx) -> Reply {
    Err(err(
        "ERR MONITOR is not offered by standalone Redoubt (redoubt serve --log-format json and /metrics show its traffic): command not executed",
    ))
}

fn ping(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() > 2 {
        return Err(err("ERR wrong number of arguments for 'ping' command"));
    }
    if ctx.sess.resp == 2 && ctx.sess.subscriptions() > 0 {
        let arg = ctx.args.get(1).cloned().unwrap_or_default();
        return Ok(Frame::Array(vec![Frame::bulk("pong"), Frame::Bulk(arg)]));
    }
    Ok(match ctx.args.get(1) {
        Some(a) => Frame::Bulk(a.clone()),
        None => Frame::simple("PONG"),
    })
}

fn echo(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Bulk(ctx.args[1].clone()))
}

fn time(ctx: &mut Ctx) -> Reply {
    // Saturating: a test clock can be far in the future (paused time
    // advanced past a huge blocking timeout).
    let now_us = ctx.now.saturating_mul(1000);
    Ok(Frame::Array(vec![
        Frame::Bulk(Bytes::from((now_us / 1_000_000).to_string())),
        Frame::Bulk(Bytes::from((now_us % 1_000_000).to_string())),
    ]))
}

/// A standalone master with no replicas.
fn role(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Array(vec![
        Frame::bulk("master"),
        Frame::Integer(0),
        Frame::Array(Vec::new()),
    ]))
}

/// MEMORY USAGE key [SAMPLES n]: the store's estimate for the key (not
/// Redis's allocator figure).
fn memory_usage(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() > 3 {
        if ctx.args.len() == 5 && ctx.arg_is(3, "SAMPLES") {
            ctx.arg_i64(4)?;
        } else {
            return Err(err(SYNTAX));
        }
    }
    let key = ctx.args[2].clone();
    let size = ctx.peek(&key).map(|e| crate::ctx::entry_size(&key, e));
    Ok(size.map_or_else(|| ctx.null(), |n| Frame::Integer(n as i64)))
}

/// QUIT answers OK and marks the session killed so the connection loop
/// closes it after writing the reply.
fn quit(ctx: &mut Ctx) -> Reply {
    ctx.sess.killed.store(true, Ordering::Relaxed);
    Ok(Frame::simple("OK"))
}

/// The store knows only Redis's passwordless `default` user (the proxy
/// verifies real credentials), and answers as such a Redis does.
fn auth(ctx: &mut Ctx) -> Reply {
    match ctx.args.len() {
        2 => Err(err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")),
        3 if ctx.args[1].as_ref() == b"default" => Ok(Frame::simple("OK")),
        3 => Err(err("WRONGPASS invalid username-password pair or user is disabled.")),
        _ => Err(err(SYNTAX)),
    }
}

fn lastsave(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer((ctx.shared.started_ms / 1000) as i64))
}

fn hello(ctx: &mut Ctx) -> Reply {
    let mut i = 1;
    let mut proto = ctx.sess.resp;
    if ctx.args.len() > 1 {
        let v = num::parse_i64(&ctx.args[1])
            .ok_or_else(|| err("ERR Protocol version is not an integer or out of range"))?;
        if !(2..=3).contains(&v) {
            return Err(err("NOPROTO unsupported protocol version"));
        }
        proto = v as u8;
        i = 2;
    }
    let mut name = None;
    while i < ctx.args.len() {
        let more = ctx.args.len() - i - 1;
        if ctx.arg_is(i, "AUTH") && more >= 2 {
            // Authentication is the proxy's job; the store has only the
            // passwordless default user, which accepts any password.
            if ctx.args[i + 1].as_ref() != b"default" {
                return Err(err(
                    "WRONGPASS invalid username-password pair or user is disabled.",
                ));
            }
            i += 3;
        } else if ctx.arg_is(i, "SETNAME") && more >= 1 {
            name = Some(ctx.args[i + 1].clone());
            i += 2;
        } else {
            return Err(Frame::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(&ctx.args[i])
            )));
        }
    }
    if let Some(n) = name {
        check_name(&n)?;
        if let Some(c) = ctx.inner.clients.get_mut(&ctx.sess.id) {
            c.name = (!n.is_empty()).then_some(n);
        }
    }
    ctx.sess.resp = proto;
    if let Some(c) = ctx.inner.clients.get_mut(&ctx.sess.id) {
        c.resp = proto;
    }
    let pairs = vec![
        (Frame::bulk("server"), Frame::bulk("redis")),
        (Frame::bulk("version"), Frame::bulk(REDIS_VERSION)),
        (Frame::bulk("proto"), Frame::Integer(proto as i64)),
        (Frame::bulk("id"), Frame::Integer(ctx.sess.id as i64)),
        (Frame::bulk("mode"), Frame::bulk("standalone")),
        (Frame::bulk("role"), Frame::bulk("master")),
        (Frame::bulk("modules"), Frame::Array(Vec::new())),
    ];
    Ok(ctx.map(pairs))
}

fn reset(ctx: &mut Ctx) -> Reply {
    ctx.sess.multi = None;
    ctx.sess.multi_error = false;
    ctx.inner.unwatch(ctx.sess);
    let id = ctx.sess.id;
    for ch in std::mem::take(&mut ctx.sess.channels) {
        if let Some(s) = ctx.inner.channels.get_mut(&ch) {
            s.swap_remove(&id);
            if s.is_empty() {
                ctx.inner.channels.remove(&ch);
            }
        }
    }
    for p in std::mem::take(&mut ctx.sess.patterns) {
        if let Some(s) = ctx.inner.patterns.get_mut(&p) {
            s.swap_remove(&id);
            if s.is_empty() {
                ctx.inner.patterns.remove(&p);
            }
        }
    }
    for ch in std::mem::take(&mut ctx.sess.shard_channels) {
        if let Some(s) = ctx.inner.shard_channels.get_mut(&ch) {
            s.swap_remove(&id);
            if s.is_empty() {
                ctx.inner.shard_channels.remove(&ch);
            }
        }
    }
    ctx.sess.db = 0;
    ctx.sess.resp = 2;
    if let Some(c) = ctx.inner.clients.get_mut(&id) {
        c.name = None;
        c.resp = 2;
        c.subs = 0;
        c.psubs = 0;
        c.in_multi = false;
    }
    Ok(Frame::simple("RESET"))
}

fn client_id(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(ctx.sess.id as i64))
}

fn check_name(n: &[u8]) -> Result<(), Frame> {
    if n.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client_setname(ctx: &mut Ctx) -> Reply {
    let n = ctx.args[2].clone();
    check_name(&n)?;
    if let Some(c) = ctx.inner.clients.get_mut(&ctx.sess.id) {
        c.name = (!n.is_empty()).then_some(n);
    }
    Ok(Frame::simple("OK"))
}

fn client_getname(ctx: &mut Ctx) -> Reply {
    let n = ctx
        .inner
        .clients
        .get(&ctx.sess.id)
        .and_then(|c| c.name.clone());
    Ok(n.map_or_else(|| ctx.null(), Frame::Bulk))
}

fn client_line(ctx: &Ctx, id: u64) -> String {
    let Some(c) = ctx.inner.clients.get(&id) else {
        return String::new();
    };
    let flags = if c.blocked {
        "b"
    } else if c.subs + c.psubs > 0 {
        "P"
    } else if c.in_multi {
        "x"
    } else {
        "N"
    };
    let name = c
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    format!(
        "id={id} addr={} laddr= fd=-1 name={name} age={} idle={} flags={flags} db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={}\n",
        if c.addr.is_empty() { "local:0" } else { &c.addr },
        ctx.now.saturating_sub(c.created_ms) / 1000,
        ctx.now.saturating_sub(c.last_ms) / 1000,
        c.db,
        c.subs,
        c.psubs,
        if c.in_multi { 0 } else { -1 },
        c.last_cmd,
        c.resp,
    )
}

pub(crate) fn verbatim(ctx: &Ctx, text: String) -> Frame {
    if ctx.resp3() {
        Frame::Verbatim(Bytes::from(format!("txt:{text}")))
    } else {
        Frame::Bulk(Bytes::from(text))
    }
}

fn client_list(ctx: &mut Ctx) -> Reply {
    let mut ids: Vec<u64> = ctx.inner.clients.keys().copied().collect();
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "ID") && i + 1 < ctx.args.len() {
            let mut want = Vec::new();
            for a in &ctx.args[i + 1..] {
                let id = num::parse_i64(a)
                    .filter(|v| *v > 0)
                    .ok_or_else(|| err("ERR Invalid client ID"))?;
                want.push(id as u64);
            }
            ids.retain(|id| want.contains(id));
            i = ctx.args.len();
        } else if ctx.arg_is(i, "TYPE") && i + 1 < ctx.args.len() {
            let t = ctx.args[i + 1].to_ascii_lowercase();
            match t.as_slice() {
                b"normal" | b"master" | b"replica" | b"slave" | b"pubsub" => {}
                _ => {
                    return Err(Frame::error(format!(
                        "ERR Unknown client type '{}'",
                        String::from_utf8_lossy(&ctx.args[i + 1])
                    )))
                }
            }
            let pubsub = t == b"pubsub";
            let normal = t == b"normal";
            ids.retain(|id| {
                let c = &ctx.inner.clients[id];
                let is_pubsub = c.subs + c.psubs > 0;
                (pubsub && is_pubsub) || (normal && !is_pubsub)
            });
            i += 2;
        } else {
            return Err(err(SYNTAX));
        }
    }
    ids.sort_unstable();
    let text: String = ids.iter().map(|id| client_line(ctx, *id)).collect();
    Ok(verbatim(ctx, text))
}

fn client_info(ctx: &mut Ctx) -> Reply {
    let line = client_line(ctx, ctx.sess.id);
    Ok(verbatim(ctx, line))
}

fn kill_client(ctx: &mut Ctx, id: u64) {
    if let Some(c) = ctx.inner.clients.get(&id) {
        c.killed.store(true, Ordering::Relaxed);
        c.unblock.notify_one();
    }
}

fn client_kill(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() == 3 {
        // Old form: CLIENT KILL addr:port.
        let addr = ctx.args[2].clone();
        let found = ctx
            .inner
            .clients
            .iter()
            .find(|(_, c)| c.addr.as_bytes() == &addr[..])
            .map(|(id, _)| *id);
        return match found {
            Some(id) => {
                kill_client(ctx, id);
                Ok(Frame::simple("OK"))
            }
            None => Err(err("ERR No such client")),
        };
    }
    let mut id_f: Option<u64> = None;
    let mut addr_f: Option<Bytes> = None;
    let mut skipme = true;
    let mut i = 2;
    while i < ctx.args.len() {
        if i + 1 >= ctx.args.len() {
            return Err(err(SYNTAX));
        }
        let v = ctx.args[i + 1].clone();
        if ctx.arg_is(i, "ID") {
            id_f = Some(
                num::parse_i64(&v)
                    .filter(|x| *x > 0)
                    .ok_or_else(|| err("ERR client-id should be greater than 0"))?
                    as u64,
            );
        } else if ctx.arg_is(i, "ADDR") {
            addr_f = Some(v);
        } else if ctx.arg_is(i, "SKIPME") {
            skipme = match v.to_ascii_lowercase().as_slice() {
                b"yes" => true,
                b"no" => false,
                _ => return Err(err(SYNTAX)),
            };
        } else if ctx.arg_is(i, "TYPE")
            || ctx.arg_is(i, "USER")
            || ctx.arg_is(i, "LADDR")
            || ctx.arg_is(i, "MAXAGE")
        {
            // Accepted; every local client is a normal client of user default.
        } else {
            return Err(err(SYNTAX));
        }
        i += 2;
    }
    let me = ctx.sess.id;
    let targets: Vec<u64> = ctx
        .inner
        .clients
        .iter()
        .filter(|(id, c)| {
            id_f.is_none_or(|f| f == **id)
                && addr_f.as_ref().is_none_or(|a| c.addr.as_bytes() == &a[..])
                && !(skipme && **id == me)
        })
        .map(|(id, _)| *id)
        .collect();
    for id in &targets {
        kill_client(ctx, *id);
    }
    Ok(Frame::Integer(targets.len() as i64))
}

fn client_unblock(ctx: &mut Ctx) -> Reply {
    let id = ctx.arg_i64(2)?;
    let error = match ctx.args.get(3) {
        None => false,
        Some(_) if ctx.arg_is(3, "TIMEOUT") => false,
        Some(_) if ctx.arg_is(3, "ERROR") => true,
        Some(_) => return Err(err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")),
    };
    let Some(c) = ctx.inner.clients.get_mut(&(id as u64)) else {
        return Ok(Frame::Integer(0));
    };
    if !c.blocked {
        return Ok(Frame::Integer(0));
    }
    c.unblock_error = error;
    c.unblock.notify_one();
    Ok(Frame::Integer(1))
}

const FLAG_NAMES: &[(u32, &str)] = &[
    (resp::command::F_WRITE, "write"),
    (resp::command::F_READONLY, "readonly"),
    (resp::command::F_DENYOOM, "denyoom"),
    (resp::command::F_MODULE, "module"),
    (resp::command::F_ADMIN, "admin"),
    (resp::command::F_PUBSUB, "pubsub"),
    (resp::command::F_NOSCRIPT, "noscript"),
    (resp::command::F_BLOCKING, "blocking"),
    (resp::command::F_LOADING, "loading"),
    (resp::command::F_STALE, "stale"),
    (resp::command::F_SKIP_MONITOR, "skip_monitor"),
    (resp::command::F_SKIP_SLOWLOG, "skip_slowlog"),
    (resp::command::F_ASKING, "asking"),
    (resp::command::F_FAST, "fast"),
    (resp::command::F_NO_AUTH, "no_auth"),
    // may_replicate is left out, as Redis hides it from COMMAND INFO.
    (resp::command::F_NO_MANDATORY_KEYS, "no_mandatory_keys"),
    (resp::command::F_NO_MULTI, "no_multi"),
    (resp::command::F_MOVABLEKEYS, "movablekeys"),
    (resp::command::F_ALLOW_BUSY, "allow_busy"),
];

fn subs_of(name: &str) -> Vec<&'static CommandSpec> {
    SUBCOMMANDS
        .iter()
        .filter(|s| s.name.split_once('|').is_some_and(|(c, _)| c == name))
        .collect()
}

/// One `COMMAND INFO` entry: name, arity, flags, first/last/step, ACL
/// categories, tips (empty), key specs (omitted), subcommands.
fn info_entry(ctx: &Ctx, c: &CommandSpec) -> Frame {
    let flags = FLAG_NAMES
        .iter()
        .filter(|(b, _)| c.flags & b != 0)
        .map(|(_, n)| Frame::Simple(Bytes::from_static(n.as_bytes())))
        .collect();
    let subs = if c.name.contains('|') {
        Vec::new()
    } else {
        subs_of(c.name)
            .into_iter()
            .map(|s| info_entry(ctx, s))
            .collect()
    };
    Frame::Array(vec![
        Frame::bulk(c.name),
        Frame::Integer(c.arity as i64),
        ctx.set_reply(flags),
        Frame::Integer(c.first_key as i64),
        Frame::Integer(c.last_key as i64),
        Frame::Integer(c.step as i64),
        ctx.set_reply(
            c.acl
                .iter()
                .map(|a| Frame::Simple(Bytes::from(format!("@{a}"))))
                .collect(),
        ),
        ctx.set_reply(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(subs),
    ])
}

fn command(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Array(
        SPECS.iter().map(|c| info_entry(ctx, c)).collect(),
    ))
}

fn command_count(_ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(SPECS.len() as i64))
}

fn find_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    let n = String::from_utf8_lossy(name).to_ascii_lowercase();
    SPECS.iter().chain(SUBCOMMANDS.iter()).find(|c| c.name == n)
}

fn command_info(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() == 2 {
        return command(ctx);
    }
    let out = ctx.args[2..]
        .iter()
        .map(|n| find_spec(n).map_or(Frame::NullArray, |c| info_entry(ctx, c)))
        .collect();
    Ok(Frame::Array(out))
}

fn docs_entry(ctx: &Ctx, c: &CommandSpec) -> Frame {
    let mut pairs = vec![
        (Frame::bulk("summary"), Frame::bulk(c.summary)),
        (Frame::bulk("since"), Frame::bulk(c.since)),
        (Frame::bulk("group"), Frame::bulk(c.group)),
    ];
    if !c.name.contains('|') {
        let subs = subs_of(c.name);
        if !subs.is_empty() {
            let sub_pairs = subs
                .into_iter()
                .map(|s| (Frame::bulk(s.name), docs_entry(ctx, s)))
                .collect();
            pairs.push((Frame::bulk("subcommands"), ctx.map(sub_pairs)));
        }
    }
    ctx.map(pairs)
}

fn command_docs(ctx: &mut Ctx) -> Reply {
    let specs: Vec<&CommandSpec> = if ctx.args.len() == 2 {
        SPECS.iter().collect()
    } else {
        ctx.args[2..].iter().filter_map(|n| find_spec(n)).collect()
    };
    let pairs = specs
        .into_iter()
        .map(|c| (Frame::bulk(c.name), docs_entry(ctx, c)))
        .collect();
    Ok(ctx.map(pairs))
}

fn command_list(ctx: &mut Ctx) -> Reply {
    let mut out: Vec<Frame> = SPECS.iter().map(|c| Frame::bulk(c.name)).collect();
    if ctx.args.len() > 2 {
        if ctx.args.len() == 5 && ctx.arg_is(2, "FILTERBY") && ctx.arg_is(3, "PATTERN") {
            let p = ctx.args[4].clone();
            out.retain(|f| f.as_bytes().is_some_and(|n| crate::glob_match(&p, n, true)));
        } else if ctx.args.len() == 5 && ctx.arg_is(2, "FILTERBY") {
            out.clear();
        } else {
            return Err(err(SYNTAX));
        }
    }
    Ok(Frame::Array(out))
}

fn command_getkeys(ctx: &mut Ctx) -> Reply {
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
    let keys = spec.key_indices(args);
    Ok(Frame::Array(
        keys.into_iter()
            .map(|i| Frame::Bulk(args[i].clone()))
            .collect(),
    ))
}

fn info(ctx: &mut Ctx) -> Reply {
    let wanted: Vec<String> = ctx.args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    // Not in the default sections: only named, or with `all`/`everything`.
    let want_extra = |s: &str| {
        wanted
            .iter()
            .any(|w| w == s || w == "all" || w == "everything")
    };
    let mut out = String::new();
    let i = &*ctx.inner;
    let uptime = ctx.now.saturating_sub(ctx.shared.started_ms) / 1000;
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nmultiplexing_api:tokio\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nexecutable:redoubt\r\nconfig_file:\r\n\r\n",
            std::env::consts::OS,
            std::process::id(),
            ctx.shared.run_id,
            i.config.get("port").unwrap_or("6380"),
            ctx.now.saturating_mul(1000),
            uptime / 86400,
        );
    }
    if want("clients") {
        let blocked = i.clients.values().filter(|c| c.blocked).count();
        let pubsub = i.clients.values().filter(|c| c.subs + c.psubs > 0).count();
        let watching = i.clients.values().filter(|c| c.watching > 0).count();
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{blocked}\r\ntracking_clients:0\r\nclients_in_timeout_table:{blocked}\r\npubsub_clients:{pubsub}\r\nwatching_clients:{watching}\r\ntotal_watched_keys:{}\r\n\r\n",
            i.clients.len(),
            i.config.get("maxclients").unwrap_or("10000"),
            i.watchers.len(),
        );
    }
    if want("memory") {
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{u}\r\nused_memory_human:{}\r\nused_memory_peak:{p}\r\nused_memory_peak_human:{}\r\nused_memory_startup:{b}\r\nused_memory_dataset:{d}\r\nmaxmemory:{m}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_allocator:rust\r\nnumber_of_cached_scripts:{scripts}\r\nnumber_of_functions:{functions}\r\nnumber_of_libraries:{libraries}\r\n\r\n",
            human(crate::eviction::used(i) as u64),
            human((i.peak_memory + crate::eviction::BASELINE) as u64),
            human(i.config.maxmemory),
            i.config.get("maxmemory-policy").unwrap_or("noeviction"),
            u = crate::eviction::used(i),
            p = i.peak_memory + crate::eviction::BASELINE,
            b = crate::eviction::BASELINE,
            d = i.used_memory,
            scripts = i.scripting.eval.as_ref().map_or(0, |e| e.scripts.len()),
            functions = i
                .scripting
                .libraries
                .values()
                .map(|l| l.functions.len())
                .sum::<usize>(),
            libraries = i.scripting.libraries.len(),
            m = i.config.maxmemory,
        );
    }
    if want("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:0\r\naof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\n\r\n",
            i.stats.dirty,
            ctx.shared.started_ms / 1000,
        );
    }
    if want("stats") {
        let s = &i.stats;
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:0\r\nrejected_connections:0\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\ntotal_error_replies:{}\r\nunexpected_error_replies:0\r\ntotal_reads_processed:0\r\ntotal_writes_processed:0\r\nrejected_calls:{}\r\n\r\n",
            s.connections_received,
            s.commands_processed,
            s.expired_keys,
            s.evicted_keys,
            s.keyspace_hits,
            s.keyspace_misses,
            i.channels.len(),
            i.patterns.len(),
            s.error_replies,
            s.rejected_calls,
        );
    }
    if want("replication") {
        out.push_str(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n\r\n",
        );
    }
    if want("cpu") {
        out.push_str("# CPU\r\nused_cpu_sys:0.000000\r\nused_cpu_user:0.000000\r\n\r\n");
    }
    if want_extra("commandstats") {
        out.push_str("# Commandstats\r\n");
        for (name, c) in i.stats.by_name() {
            let per_call = if c.calls > 0 {
                c.usec as f64 / c.calls as f64
            } else {
                0.0
            };
            let _ = write!(
                out,
                "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}\r\n",
                c.calls, c.usec, c.rejected, c.failed
            );
        }
        out.push_str("\r\n");
    }
    if want("errorstats") {
        out.push_str("# Errorstats\r\n");
        for (code, n) in &i.stats.errors {
            let _ = write!(out, "errorstat_{code}:count={n}\r\n");
        }
        out.push_str("\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        for (n, db) in i.dbs.iter().enumerate() {
            if !db.is_empty() {
                let _ = write!(
                    out,
                    "db{n}:keys={},expires={},avg_ttl=0\r\n",
                    db.len(),
                    db.volatile_len()
                );
            }
        }
        out.push_str("\r\n");
    }
    let text = out.trim_end_matches("\r\n").to_string() + "\r\n";
    Ok(verbatim(
        ctx,
        if out.is_empty() { String::new() } else { text },
    ))
}

/// Redis's `bytesToHuman`.
fn human(n: u64) -> String {
    let f = n as f64;
    if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{:.2}K", f / 1024.0)
    } else if n < 1024 * 1024 * 1024 {
        format!("{:.2}M", f / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", f / (1024.0 * 1024.0 * 1024.0))
    }
}
