//! Generic key commands: existence, deletion, renaming, expiry, iteration
//! (KEYS, SCAN), databases (SELECT, SWAPDB, MOVE, FLUSH*), OBJECT.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use rand::Rng;
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply, NOT_INT, NO_KEY, SYNTAX};
use crate::glob::glob_match;
use crate::num;
use crate::pubsub::class::GENERIC;
use crate::value::Value;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("del", del),
    ("unlink", del),
    ("exists", exists),
    ("touch", exists),
    ("type", type_),
    ("rename", rename),
    ("renamenx", renamenx),
    ("copy", copy),
    ("expire", expire),
    ("pexpire", expire),
    ("expireat", expire),
    ("pexpireat", expire),
    ("persist", persist),
    ("ttl", ttl),
    ("pttl", ttl),
    ("expiretime", ttl),
    ("pexpiretime", ttl),
    ("keys", keys),
    ("scan", scan),
    ("randomkey", randomkey),
    ("dbsize", dbsize),
    ("flushdb", flushdb),
    ("flushall", flushall),
    ("select", select),
    ("swapdb", swapdb),
    ("move", move_),
    ("object|encoding", object),
    ("object|freq", object),
    ("object|idletime", object),
    ("object|refcount", object),
    ("object|help", object_help),
];

fn del(ctx: &mut Ctx) -> Reply {
    let mut n = 0;
    for i in 1..ctx.args.len() {
        let k = ctx.args[i].clone();
        if ctx.delete(&k) {
            n += 1;
        }
    }
    Ok(Frame::Integer(n))
}

fn exists(ctx: &mut Ctx) -> Reply {
    let mut n = 0;
    for i in 1..ctx.args.len() {
        let k = ctx.args[i].clone();
        if ctx.lookup(&k).is_some() {
            n += 1;
        }
    }
    Ok(Frame::Integer(n))
}

fn type_(ctx: &mut Ctx) -> Reply {
    let k = ctx.args[1].clone();
    let t = ctx.peek(&k).map_or("none", |e| e.value.type_name());
    Ok(Frame::Simple(Bytes::from_static(t.as_bytes())))
}

fn rename_generic(ctx: &mut Ctx, nx: bool) -> Reply {
    let (src, dst) = (ctx.args[1].clone(), ctx.args[2].clone());
    let Some(e) = ctx.peek(&src).cloned() else {
        return Err(err(NO_KEY));
    };
    if src == dst {
        return Ok(if nx {
            Frame::Integer(0)
        } else {
            Frame::simple("OK")
        });
    }
    if nx && ctx.peek(&dst).is_some() {
        return Ok(Frame::Integer(0));
    }
    ctx.delete_quiet(&src);
    ctx.delete_quiet(&dst);
    let db = ctx.db;
    let mut e = e;
    e.size = 0;
    ctx.inner.dbs[db].map.insert(dst.clone(), e.clone());
    ctx.created(&dst);
    if e.expire_at.is_some() {
        ctx.inner.dbs[db].volatile.insert(dst.clone());
    }
    ctx.notify(GENERIC, "rename_from", &src);
    ctx.notify(GENERIC, "rename_to", &dst);
    ctx.modified(&dst);
    Ok(if nx {
        Frame::Integer(1)
    } else {
        Frame::simple("OK")
    })
}

fn rename(ctx: &mut Ctx) -> Reply {
    rename_generic(ctx, false)
}

fn renamenx(ctx: &mut Ctx) -> Reply {
    rename_generic(ctx, true)
}

fn parse_db(ctx: &Ctx, i: usize) -> Result<usize, Frame> {
    let n = num::parse_i64(&ctx.args[i]).ok_or_else(|| err(NOT_INT))?;
    if n < 0 || n as usize >= ctx.inner.dbs.len() {
        return Err(err("ERR DB index is out of range"));
    }
    Ok(n as usize)
}

fn copy(ctx: &mut Ctx) -> Reply {
    let (src, dst) = (ctx.args[1].clone(), ctx.args[2].clone());
    let mut dst_db = ctx.db;
    let mut replace = false;
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "REPLACE") {
            replace = true;
        } else if ctx.arg_is(i, "DB") && i + 1 < ctx.args.len() {
            dst_db = parse_db(ctx, i + 1)?;
            i += 1;
        } else {
            return Err(err(SYNTAX));
        }
        i += 1;
    }
    if src == dst && dst_db == ctx.db {
        return Err(err("ERR source and destination objects are the same"));
    }
    let Some(e) = ctx.peek(&src).cloned() else {
        return Ok(Frame::Integer(0));
    };
    let here = ctx.db;
    ctx.db = dst_db;
    let exists = ctx.peek(&dst).is_some();
    if exists && !replace {
        ctx.db = here;
        return Ok(Frame::Integer(0));
    }
    if exists {
        ctx.delete_quiet(&dst);
    }
    // The copy shares the value until either is written (Arc, copy on write).
    let mut ne = e.clone();
    ne.size = 0;
    ne.access = ctx.now;
    ctx.inner.dbs[dst_db].map.insert(dst.clone(), ne);
    ctx.created(&dst);
    if e.expire_at.is_some() {
        ctx.inner.dbs[dst_db].volatile.insert(dst.clone());
    }
    ctx.notify(GENERIC, "copy_to", &dst);
    ctx.modified(&dst);
    ctx.db = here;
    Ok(Frame::Integer(1))
}

fn expire(ctx: &mut Ctx) -> Reply {
    let name = ctx.name;
    let n = ctx.arg_i64(2)?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..ctx.args.len() {
        match ctx.args[i].to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(Frame::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(&ctx.args[i])
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let invalid = || Frame::error(format!("ERR invalid expire time in '{name}' command"));
    let ms = if name == "expire" || name == "expireat" {
        n.checked_mul(1000).ok_or_else(invalid)?
    } else {
        n
    };
    let at = if name == "expire" || name == "pexpire" {
        ms.checked_add(ctx.now as i64).ok_or_else(invalid)?
    } else {
        ms
    };
    let key = &ctx.args[1];
    let Some(cur) = ctx.peek(key).map(|e| e.expire_at) else {
        return Ok(Frame::Integer(0));
    };
    // No TTL counts as an infinite one for GT and LT.
    let ok = match cur {
        Some(t) => !nx && (!gt || at > t as i64) && (!lt || at < t as i64),
        None => !xx && !gt,
    };
    if !ok {
        return Ok(Frame::Integer(0));
    }
    if at <= ctx.now as i64 {
        ctx.delete(key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
    } else {
        ctx.db().set_expire(key, Some(at as u64));
        ctx.notify(GENERIC, "expire", key);
        ctx.modified(key);
        ctx.propagate(vec![
            Bytes::from_static(b"PEXPIREAT"),
            key.clone(),
            Bytes::from(at.to_string()),
        ]);
    }
    Ok(Frame::Integer(1))
}

fn persist(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    match ctx.peek(key).map(|e| e.expire_at) {
        Some(Some(_)) => {
            ctx.db().set_expire(key, None);
            ctx.notify(GENERIC, "persist", key);
            ctx.modified(key);
            Ok(Frame::Integer(1))
        }
        _ => Ok(Frame::Integer(0)),
    }
}

fn ttl(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let name = ctx.name;
    let now = ctx.now;
    let Some(e) = ctx.peek(key) else {
        return Ok(Frame::Integer(-2));
    };
    let Some(at) = e.expire_at else {
        return Ok(Frame::Integer(-1));
    };
    let left = at.saturating_sub(now);
    Ok(Frame::Integer(match name {
        // Redis rounds the remaining seconds to nearest.
        "ttl" => ((left + 500) / 1000) as i64,
        "pttl" => left as i64,
        "expiretime" => (at / 1000) as i64,
        _ => at as i64,
    }))
}

fn keys(ctx: &mut Ctx) -> Reply {
    let pat = ctx.args[1].clone();
    let now = ctx.now;
    let all = pat.as_ref() == b"*";
    let out: Vec<Frame> = ctx
        .db()
        .map
        .iter()
        .filter(|(k, e)| e.expire_at.is_none_or(|t| t > now) && (all || glob_match(&pat, k, false)))
        .map(|(k, _)| Frame::Bulk(k.clone()))
        .collect();
    Ok(Frame::Array(out))
}

/// A key's position in SCAN order: a fixed hash, so a cursor stays valid
/// across inserts and deletes (every key present for the whole scan is
/// returned, as Redis guarantees). 0 is reserved for "start/done".
pub(crate) fn scan_pos(key: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    (h.finish() >> 1) + 1
}

/// Parsed `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`; `first` is the index
/// of the cursor argument.
pub(crate) struct ScanArgs {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_: Option<Bytes>,
}

pub(crate) fn parse_scan(ctx: &Ctx, first: usize, allow_type: bool) -> Result<ScanArgs, Frame> {
    let cursor = std::str::from_utf8(&ctx.args[first])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| err("ERR invalid cursor"))?;
    let mut a = ScanArgs {
        cursor,
        pattern: None,
        count: 10,
        type_: None,
    };
    let mut i = first + 1;
    while i < ctx.args.len() {
        let has_next = i + 1 < ctx.args.len();
        if ctx.arg_is(i, "COUNT") && has_next {
            let n = ctx.arg_i64(i + 1)?;
            if n < 1 {
                return Err(err(SYNTAX));
            }
            a.count = n as usize;
        } else if ctx.arg_is(i, "MATCH") && has_next {
            a.pattern = Some(ctx.args[i + 1].clone());
        } else if allow_type && ctx.arg_is(i, "TYPE") && has_next {
            a.type_ = Some(ctx.args[i + 1].clone());
        } else {
            return Err(err(SYNTAX));
        }
        i += 2;
    }
    Ok(a)
}

/// One page of `items` (already filtered to live ones) from `cursor`:
/// returns the page and the next cursor.
pub(crate) fn scan_page<T>(mut items: Vec<(u64, T)>, cursor: u64, count: usize) -> (Vec<T>, u64) {
    items.retain(|(p, _)| *p >= cursor);
    items.sort_by_key(|(p, _)| *p);
    if items.len() <= count {
        return (items.into_iter().map(|(_, t)| t).collect(), 0);
    }
    // Keep keys that share a position together so none is skipped.
    let mut end = count;
    while end < items.len() && items[end].0 == items[end - 1].0 {
        end += 1;
    }
    let next = items.get(end).map_or(0, |(p, _)| *p);
    items.truncate(end);
    (items.into_iter().map(|(_, t)| t).collect(), next)
}

pub(crate) fn scan_reply(cursor: u64, items: Vec<Frame>) -> Frame {
    Frame::Array(vec![
        Frame::Bulk(Bytes::from(cursor.to_string())),
        Frame::Array(items),
    ])
}

fn scan(ctx: &mut Ctx) -> Reply {
    let a = parse_scan(ctx, 1, true)?;
    let now = ctx.now;
    let items: Vec<(u64, Bytes)> = ctx
        .db()
        .map
        .iter()
        .filter(|(_, e)| e.expire_at.is_none_or(|t| t > now))
        .map(|(k, _)| (scan_pos(k), k.clone()))
        .collect();
    let (page, next) = scan_page(items, a.cursor, a.count);
    let mut out = Vec::with_capacity(page.len());
    for k in page {
        if let Some(p) = &a.pattern {
            if !glob_match(p, &k, false) {
                continue;
            }
        }
        if let Some(t) = &a.type_ {
            let ty = ctx.peek(&k).map_or("none", |e| e.value.type_name());
            if !t.eq_ignore_ascii_case(ty.as_bytes()) {
                continue;
            }
        }
        out.push(Frame::Bulk(k));
    }
    Ok(scan_reply(next, out))
}

fn randomkey(ctx: &mut Ctx) -> Reply {
    let mut rng = rand::thread_rng();
    // Bounded retries: a database full of expired keys must not spin.
    for _ in 0..100 {
        let n = ctx.db().map.len();
        if n == 0 {
            break;
        }
        let i = rng.gen_range(0..n);
        let Some(k) = ctx.db().map.get_index(i).map(|(k, _)| k.clone()) else {
            break;
        };
        if !ctx.expire_if_needed(&k) {
            return Ok(Frame::Bulk(k));
        }
    }
    Ok(ctx.null())
}

fn dbsize(ctx: &mut Ctx) -> Reply {
    Ok(Frame::Integer(ctx.db().len() as i64))
}

fn flush_opt(ctx: &Ctx) -> Result<(), Frame> {
    match ctx.args.len() {
        1 => Ok(()),
        2 if ctx.arg_is(1, "ASYNC") || ctx.arg_is(1, "SYNC") => Ok(()),
        _ => Err(err(SYNTAX)),
    }
}

fn flush_db(ctx: &mut Ctx, db: usize) {
    ctx.inner.touch_all_watched(db);
    let freed: usize = ctx.inner.dbs[db].map.values().map(|e| e.size).sum();
    ctx.inner.used_memory = ctx.inner.used_memory.saturating_sub(freed);
    ctx.inner.dbs[db] = Default::default();
    // Consumers blocked on a stream that is now gone are told at once, as
    // for a DEL; other blocked clients retry and go on waiting.
    ctx.wake |= ctx.inner.blocked > 0;
}

fn flushdb(ctx: &mut Ctx) -> Reply {
    flush_opt(ctx)?;
    let db = ctx.db;
    flush_db(ctx, db);
    ctx.dirty += 1;
    Ok(Frame::simple("OK"))
}

fn flushall(ctx: &mut Ctx) -> Reply {
    flush_opt(ctx)?;
    for db in 0..ctx.inner.dbs.len() {
        flush_db(ctx, db);
    }
    ctx.dirty += 1;
    Ok(Frame::simple("OK"))
}

fn select(ctx: &mut Ctx) -> Reply {
    let db = parse_db(ctx, 1)?;
    ctx.sess.db = db;
    Ok(Frame::simple("OK"))
}

fn swapdb(ctx: &mut Ctx) -> Reply {
    let parse = |i: usize, which: &str| {
        num::parse_i64(&ctx.args[i])
            .ok_or_else(|| Frame::error(format!("ERR invalid {which} DB index")))
    };
    let (a, b) = (parse(1, "first")?, parse(2, "second")?);
    let n = ctx.inner.dbs.len() as i64;
    if a < 0 || a >= n || b < 0 || b >= n {
        return Err(err("ERR DB index is out of range"));
    }
    let (a, b) = (a as usize, b as usize);
    ctx.inner.touch_all_watched(a);
    ctx.inner.touch_all_watched(b);
    ctx.inner.dbs.swap(a, b);
    ctx.inner.touch_all_watched(a);
    ctx.inner.touch_all_watched(b);
    ctx.dirty += 1;
    // Clients blocked on keys that now exist must retry.
    ctx.wake = ctx.inner.blocked > 0;
    Ok(Frame::simple("OK"))
}

fn move_(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let dst = num::parse_i64(&ctx.args[2]).ok_or_else(|| err(NOT_INT))?;
    if dst < 0 || dst as usize >= ctx.inner.dbs.len() {
        return Err(err("ERR DB index is out of range"));
    }
    let dst = dst as usize;
    if dst == ctx.db {
        return Err(err("ERR source and destination objects are the same"));
    }
    let Some(e) = ctx.peek(key).cloned() else {
        return Ok(Frame::Integer(0));
    };
    let here = ctx.db;
    ctx.db = dst;
    if ctx.peek(key).is_some() {
        ctx.db = here;
        return Ok(Frame::Integer(0));
    }
    let mut e = e;
    e.size = 0;
    ctx.inner.dbs[dst].map.insert(key.clone(), e.clone());
    ctx.created(key);
    if e.expire_at.is_some() {
        ctx.inner.dbs[dst].volatile.insert(key.clone());
    }
    ctx.modified(key);
    ctx.db = here;
    ctx.delete_quiet(key);
    ctx.notify(GENERIC, "move_from", key);
    ctx.db = dst;
    ctx.notify(GENERIC, "move_to", key);
    ctx.db = here;
    Ok(Frame::Integer(1))
}

fn object(ctx: &mut Ctx) -> Reply {
    let key = ctx.args[2].clone();
    let name = ctx.name;
    let lfu = matches!(
        ctx.inner.config.policy,
        crate::Policy::AllKeysLfu | crate::Policy::VolatileLfu
    );
    let now = ctx.now;
    let Some(e) = ctx.peek(&key) else {
        return Ok(ctx.null());
    };
    match name {
        "object|encoding" => Ok(Frame::bulk(e.encoding())),
        "object|refcount" => Ok(Frame::Integer(match &*e.value {
            // Shared small integers report INT_MAX refcount in Redis.
            Value::Str(s) if num::parse_i64(s).is_some_and(|v| (0..10000).contains(&v)) => {
                i32::MAX as i64
            }
            _ => 1,
        })),
        "object|freq" => {
            if !lfu {
                return Err(err("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
            }
            Ok(Frame::Integer(e.freq as i64))
        }
        _ => {
            if lfu {
                return Err(err("ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."));
            }
            Ok(Frame::Integer((now.saturating_sub(e.access) / 1000) as i64))
        }
    }
}

fn object_help(_ctx: &mut Ctx) -> Reply {
    let lines = [
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Print this help.",
    ];
    Ok(Frame::Array(
        lines
            .iter()
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
    ))
}
