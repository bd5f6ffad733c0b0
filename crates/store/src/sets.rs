//! Set commands. Members that are all integers (Redis's intset) come back
//! in numeric order, as from Redis; other sets come back in insertion
//! order where Redis's hashtable order is arbitrary.

use crate::pubsub::class::SET;
use bytes::Bytes;
use indexmap::IndexSet;
use rand::Rng;
use resp::Frame;

use crate::ctx::{err, owned, Ctx, Handler, Reply, SYNTAX};
use crate::hashes::random_picks;
use crate::keys::{parse_scan, scan_page, scan_pos, scan_reply};
use crate::num;
use crate::value::{is_intset, Value};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("sadd", sadd),
    ("srem", srem),
    ("smembers", smembers),
    ("sismember", sismember),
    ("smismember", smismember),
    ("scard", scard),
    ("spop", spop),
    ("srandmember", srandmember),
    ("smove", smove),
    ("sinter", sinter),
    ("sinterstore", sinter),
    ("sintercard", sintercard),
    ("sunion", sunion),
    ("sunionstore", sunion),
    ("sdiff", sdiff),
    ("sdiffstore", sdiff),
    ("sscan", sscan),
];

/// Members in the order Redis would list them.
pub(crate) fn ordered(s: &IndexSet<Bytes>) -> Vec<Bytes> {
    let mut v: Vec<Bytes> = s.iter().cloned().collect();
    if is_intset(s) {
        v.sort_by_key(|m| num::parse_i64(m).unwrap_or(0));
    }
    v
}

/// Removes a member keeping the others' order while the set is small, so
/// replaying SREM effects rebuilds the very same order; big sets swap.
fn remove_member(s: &mut IndexSet<Bytes>, m: &[u8]) -> bool {
    if s.len() <= crate::value::INTSET_MAX_ENTRIES {
        s.shift_remove(m)
    } else {
        s.swap_remove(m)
    }
}

fn sadd(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let Some(s) = ctx.set_mut(key, true)? else {
        return Ok(Frame::Integer(0));
    };
    let n = args[2..].iter().filter(|m| s.insert(owned(m))).count();
    if n > 0 {
        ctx.notify(SET, "sadd", key);
        ctx.modified(key);
    } else {
        // Nothing added: not a write (and an empty new set must not stay).
        ctx.modified(key);
        ctx.dirty -= 1;
    }
    Ok(Frame::Integer(n as i64))
}

fn srem(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let Some(s) = ctx.set_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let n = args[2..].iter().filter(|m| remove_member(s, m)).count();
    if n > 0 {
        ctx.notify(SET, "srem", key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(n as i64))
}

fn smembers(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let v = ctx.get_set(key)?.map(ordered).unwrap_or_default();
    Ok(ctx.set_reply(v.into_iter().map(Frame::Bulk).collect()))
}

fn sismember(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let m = ctx.args[2].clone();
    Ok(Frame::Integer(
        ctx.get_set(key)?.is_some_and(|s| s.contains(&m[..])) as i64,
    ))
}

fn smismember(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let s = ctx.get_set(key)?;
    Ok(Frame::Array(
        args[2..]
            .iter()
            .map(|m| Frame::Integer(s.is_some_and(|s| s.contains(&m[..])) as i64))
            .collect(),
    ))
}

fn scard(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        ctx.get_set(key)?.map_or(0, |s| s.len() as i64),
    ))
}

fn spop(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let count = if ctx.args.len() > 2 {
        if ctx.args.len() > 3 {
            return Err(err(SYNTAX));
        }
        let c = num::parse_i64(&ctx.args[2])
            .filter(|c| *c >= 0)
            .ok_or_else(|| err("ERR value is out of range, must be positive"))?;
        Some(c as usize)
    } else {
        None
    };
    let Some(s) = ctx.set_mut(key, false)? else {
        return Ok(if count.is_some() {
            ctx.set_reply(Vec::new())
        } else {
            ctx.null()
        });
    };
    let mut rng = rand::thread_rng();
    let mut popped = Vec::new();
    for _ in 0..count.unwrap_or(1) {
        if s.is_empty() {
            break;
        }
        let i = rng.gen_range(0..s.len());
        if let Some(m) = s.get_index(i).cloned() {
            remove_member(s, &m);
            popped.push(m);
        }
    }
    if popped.is_empty() {
        return Ok(ctx.set_reply(Vec::new()));
    }
    ctx.notify(SET, "spop", key);
    ctx.modified(key);
    // The choice was random: journal which members went.
    let mut e = vec![Bytes::from_static(b"SREM"), key.clone()];
    e.extend(popped.iter().cloned());
    ctx.propagate(e);
    Ok(match count {
        None => Frame::Bulk(popped.remove(0)),
        Some(_) => ctx.set_reply(popped.into_iter().map(Frame::Bulk).collect()),
    })
}

fn srandmember(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let count = if ctx.args.len() > 2 {
        if ctx.args.len() > 3 {
            return Err(err(SYNTAX));
        }
        let c = ctx.arg_i64(2)?;
        if c == i64::MIN {
            return Err(err("ERR value is out of range"));
        }
        crate::hashes::check_picks(c)?;
        Some(c)
    } else {
        None
    };
    let items: Vec<Bytes> = ctx
        .get_set(key)?
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    match count {
        None => {
            if items.is_empty() {
                return Ok(ctx.null());
            }
            let i = rand::thread_rng().gen_range(0..items.len());
            Ok(Frame::Bulk(items[i].clone()))
        }
        Some(c) => Ok(Frame::Array(
            random_picks(&items, c)
                .into_iter()
                .map(Frame::Bulk)
                .collect(),
        )),
    }
}

fn smove(ctx: &mut Ctx) -> Reply {
    let (src, dst, m) = (
        ctx.args[1].clone(),
        ctx.args[2].clone(),
        ctx.args[3].clone(),
    );
    let has = match ctx.get_set(&src)? {
        None => return Ok(Frame::Integer(0)),
        Some(s) => s.contains(&m[..]),
    };
    ctx.get_set(&dst)?;
    if src == dst {
        return Ok(Frame::Integer(has as i64));
    }
    if !has {
        return Ok(Frame::Integer(0));
    }
    if let Some(s) = ctx.set_mut(&src, false)? {
        remove_member(s, &m);
    }
    ctx.notify(SET, "srem", &src);
    ctx.modified(&src);
    if let Some(s) = ctx.set_mut(&dst, true)? {
        s.insert(m);
    }
    ctx.notify(SET, "sadd", &dst);
    ctx.modified(&dst);
    Ok(Frame::Integer(1))
}

/// Loads every set named in `keys` (missing = empty); WRONGTYPE for others.
fn load_sets(ctx: &mut Ctx, keys: &[Bytes]) -> Result<Vec<Option<IndexSet<Bytes>>>, Frame> {
    keys.iter().map(|k| Ok(ctx.get_set(k)?.cloned())).collect()
}

/// Writes a computed set to `dst` (deleting it when empty); returns its size.
fn store_set(ctx: &mut Ctx, dst: &Bytes, s: IndexSet<Bytes>) -> Frame {
    let n = s.len();
    if n == 0 {
        if ctx.delete(dst) {
            ctx.propagate(vec![Bytes::from_static(b"DEL"), dst.clone()]);
        }
    } else {
        ctx.set_value(dst, Value::Set(Box::new(s)), false);
        ctx.notify(SET, ctx.name, dst);
    }
    Frame::Integer(n as i64)
}

fn finish(ctx: &mut Ctx, store: bool, s: IndexSet<Bytes>) -> Reply {
    if store {
        let dst = ctx.args[1].clone();
        Ok(store_set(ctx, &dst, s))
    } else {
        let v = ordered(&s);
        Ok(ctx.set_reply(v.into_iter().map(Frame::Bulk).collect()))
    }
}

fn intersect(sets: Vec<Option<IndexSet<Bytes>>>) -> IndexSet<Bytes> {
    if sets.iter().any(|s| s.is_none()) {
        return IndexSet::new();
    }
    let mut sets: Vec<IndexSet<Bytes>> = sets.into_iter().flatten().collect();
    sets.sort_by_key(|s| s.len());
    let Some((first, rest)) = sets.split_first() else {
        return IndexSet::new();
    };
    first
        .iter()
        .filter(|m| rest.iter().all(|s| s.contains(*m)))
        .cloned()
        .collect()
}

fn sinter(ctx: &mut Ctx) -> Reply {
    let store = ctx.name == "sinterstore";
    let keys = ctx.args[if store { 2 } else { 1 }..].to_vec();
    let sets = load_sets(ctx, &keys)?;
    finish(ctx, store, intersect(sets))
}

fn sintercard(ctx: &mut Ctx) -> Reply {
    let n = num::parse_i64(&ctx.args[1])
        .filter(|n| *n > 0)
        .ok_or_else(|| err("ERR numkeys should be greater than 0"))?;
    let n = n as usize;
    if n > ctx.args.len() - 2 {
        return Err(err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let mut limit = 0usize;
    let mut i = 2 + n;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "LIMIT") && i + 1 < ctx.args.len() {
            let l = num::parse_i64(&ctx.args[i + 1])
                .filter(|l| *l >= 0)
                .ok_or_else(|| err("ERR LIMIT can't be negative"))?;
            limit = l as usize;
            i += 2;
        } else {
            return Err(err(SYNTAX));
        }
    }
    let keys = ctx.args[2..2 + n].to_vec();
    let sets = load_sets(ctx, &keys)?;
    let mut c = intersect(sets).len();
    if limit > 0 {
        c = c.min(limit);
    }
    Ok(Frame::Integer(c as i64))
}

fn sunion(ctx: &mut Ctx) -> Reply {
    let store = ctx.name == "sunionstore";
    let keys = ctx.args[if store { 2 } else { 1 }..].to_vec();
    let sets = load_sets(ctx, &keys)?;
    let mut out = IndexSet::new();
    for s in sets.into_iter().flatten() {
        out.extend(s);
    }
    finish(ctx, store, out)
}

fn sdiff(ctx: &mut Ctx) -> Reply {
    let store = ctx.name == "sdiffstore";
    let keys = ctx.args[if store { 2 } else { 1 }..].to_vec();
    let sets = load_sets(ctx, &keys)?;
    let mut it = sets.into_iter();
    let mut out = it.next().flatten().unwrap_or_default();
    for s in it.flatten() {
        out.retain(|m| !s.contains(m));
    }
    finish(ctx, store, out)
}

fn sscan(ctx: &mut Ctx) -> Reply {
    let a = parse_scan(ctx, 2, false)?;
    let key = &ctx.args[1];
    let Some(s) = ctx.get_set(key)? else {
        return Ok(scan_reply(0, Vec::new()));
    };
    // Intsets come back whole, sorted, in one call, as Redis does.
    let (page, next) = if is_intset(s) {
        (ordered(s), 0)
    } else {
        scan_page(
            s.iter().map(|m| (scan_pos(m), m.clone())).collect(),
            a.cursor,
            a.count,
        )
    };
    let out = page
        .into_iter()
        .filter(|m| {
            a.pattern
                .as_ref()
                .is_none_or(|p| crate::glob_match(p, m, false))
        })
        .map(Frame::Bulk)
        .collect();
    Ok(scan_reply(next, out))
}
