//! Hash commands. Fields keep insertion order (deletions preserve the order
//! of the rest) like Redis's small listpack hashes, so HGETALL answers in
//! the same order as Redis for hashes of up to 128 short fields.

use crate::pubsub::class::HASH;
use bytes::Bytes;
use indexmap::IndexMap;
use rand::seq::SliceRandom;
use rand::Rng;
use resp::Frame;

use crate::ctx::{err, owned, Ctx, Handler, Reply, NOT_FLOAT};
use crate::keys::{parse_scan, scan_page, scan_pos, scan_reply};
use crate::num;
use crate::value::LISTPACK_MAX_ENTRIES;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("hset", hset),
    ("hmset", hset),
    ("hsetnx", hsetnx),
    ("hget", hget),
    ("hmget", hmget),
    ("hgetall", hgetall),
    ("hkeys", hkeys),
    ("hvals", hvals),
    ("hdel", hdel),
    ("hlen", hlen),
    ("hexists", hexists),
    ("hstrlen", hstrlen),
    ("hincrby", hincrby),
    ("hincrbyfloat", hincrbyfloat),
    ("hrandfield", hrandfield),
    ("hscan", hscan),
];

fn hset(ctx: &mut Ctx) -> Reply {
    if !ctx.args.len().is_multiple_of(2) {
        return Err(Frame::error(format!(
            "ERR wrong number of arguments for '{}' command",
            ctx.name
        )));
    }
    let key = &ctx.args[1];
    let args = ctx.args;
    let h = ctx
        .hash_mut(key, true)?
        .ok_or_else(|| err("ERR internal"))?;
    let mut added = 0;
    for pair in args[2..].chunks(2) {
        if h.insert(owned(&pair[0]), owned(&pair[1])).is_none() {
            added += 1;
        }
    }
    ctx.notify(HASH, "hset", key);
    ctx.modified(key);
    Ok(if ctx.name == "hmset" {
        Frame::simple("OK")
    } else {
        Frame::Integer(added)
    })
}

fn hsetnx(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    if ctx.get_hash(key)?.is_some_and(|h| h.contains_key(&f[..])) {
        return Ok(Frame::Integer(0));
    }
    let v = ctx.args[3].clone();
    if let Some(h) = ctx.hash_mut(key, true)? {
        h.insert(f, v);
    }
    ctx.notify(HASH, "hset", key);
    ctx.modified(key);
    Ok(Frame::Integer(1))
}

fn hget(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    let v = ctx.get_hash(key)?.and_then(|h| h.get(&f[..]).cloned());
    Ok(v.map_or_else(|| ctx.null(), Frame::Bulk))
}

fn hmget(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let vals: Vec<Option<Bytes>> = match ctx.get_hash(key)? {
        Some(h) => args[2..].iter().map(|f| h.get(&f[..]).cloned()).collect(),
        None => vec![None; args.len() - 2],
    };
    Ok(Frame::Array(
        vals.into_iter()
            .map(|v| v.map_or_else(|| ctx.null(), Frame::Bulk))
            .collect(),
    ))
}

fn hgetall(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let resp3 = ctx.resp3();
    if ctx.wire_replies() {
        let Some(h) = ctx.get_hash(key)? else {
            return Ok(if resp3 {
                Frame::Map(Vec::new())
            } else {
                Frame::Array(Vec::new())
            });
        };
        let fields = h.iter().flat_map(|(f, v)| [&f[..], &v[..]]);
        return Ok(match resp3 {
            true => Frame::encoded_aggregate(b'%', h.len(), fields),
            false => Frame::encoded_aggregate(b'*', 2 * h.len(), fields),
        });
    }
    let pairs: Vec<(Frame, Frame)> = match ctx.get_hash(key)? {
        Some(h) => h
            .iter()
            .map(|(f, v)| (Frame::Bulk(f.clone()), Frame::Bulk(v.clone())))
            .collect(),
        None => Vec::new(),
    };
    Ok(ctx.map(pairs))
}

fn hkeys(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let wire = ctx.wire_replies();
    Ok(match ctx.get_hash(key)? {
        Some(h) => crate::ctx::bulks(wire, h.keys()),
        None => Frame::Array(Vec::new()),
    })
}

fn hvals(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let wire = ctx.wire_replies();
    Ok(match ctx.get_hash(key)? {
        Some(h) => crate::ctx::bulks(wire, h.values()),
        None => Frame::Array(Vec::new()),
    })
}

/// Removes a field keeping the order of the others while the hash is
/// small (listpack order), cheaply when it is big (hashtable, unordered).
pub(crate) fn remove_field(h: &mut IndexMap<Bytes, Bytes>, f: &[u8]) -> bool {
    if h.len() <= LISTPACK_MAX_ENTRIES {
        h.shift_remove(f).is_some()
    } else {
        h.swap_remove(f).is_some()
    }
}

fn hdel(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let Some(h) = ctx.hash_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let n = args[2..].iter().filter(|f| remove_field(h, f)).count();
    if n > 0 {
        ctx.notify(HASH, "hdel", key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(n as i64))
}

fn hlen(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        ctx.get_hash(key)?.map_or(0, |h| h.len() as i64),
    ))
}

fn hexists(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    Ok(Frame::Integer(
        ctx.get_hash(key)?.is_some_and(|h| h.contains_key(&f[..])) as i64,
    ))
}

fn hstrlen(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    Ok(Frame::Integer(
        ctx.get_hash(key)?
            .and_then(|h| h.get(&f[..]))
            .map_or(0, |v| v.len() as i64),
    ))
}

fn hincrby(ctx: &mut Ctx) -> Reply {
    let by = ctx.arg_i64(3)?;
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    let cur = match ctx.get_hash(key)?.and_then(|h| h.get(&f[..])) {
        Some(v) => num::parse_i64(v).ok_or_else(|| err("ERR hash value is not an integer"))?,
        None => 0,
    };
    let new = cur
        .checked_add(by)
        .ok_or_else(|| err("ERR increment or decrement would overflow"))?;
    if let Some(h) = ctx.hash_mut(key, true)? {
        h.insert(f, num::fmt_i64(new));
    }
    ctx.notify(HASH, "hincrby", key);
    ctx.modified(key);
    Ok(Frame::Integer(new))
}

fn hincrbyfloat(ctx: &mut Ctx) -> Reply {
    let by = ctx.arg_f64(3)?;
    if !by.is_finite() {
        return Err(err("ERR value is NaN or Infinity"));
    }
    let key = &ctx.args[1];
    let f = ctx.args[2].clone();
    let cur = match ctx.get_hash(key)?.and_then(|h| h.get(&f[..])) {
        Some(v) => num::parse_f64(v).ok_or_else(|| err("ERR hash value is not a float"))?,
        None => 0.0,
    };
    let new = cur + by;
    if !new.is_finite() {
        return Err(err("ERR increment would produce NaN or Infinity"));
    }
    let text = Bytes::from(num::fmt_human(new));
    if let Some(h) = ctx.hash_mut(key, true)? {
        h.insert(f.clone(), text.clone());
    }
    ctx.notify(HASH, "hincrbyfloat", key);
    ctx.modified(key);
    ctx.propagate(vec![
        Bytes::from_static(b"HSET"),
        key.clone(),
        f,
        text.clone(),
    ]);
    let _ = NOT_FLOAT;
    Ok(Frame::Bulk(text))
}

fn hrandfield(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let count = if ctx.args.len() > 2 {
        Some(ctx.arg_i64(2)?)
    } else {
        None
    };
    let with_values = if ctx.args.len() > 3 {
        if ctx.args.len() > 4 || !ctx.arg_is(3, "WITHVALUES") {
            return Err(err(crate::ctx::SYNTAX));
        }
        true
    } else {
        false
    };
    let resp3 = ctx.resp3();
    let items: Vec<(Bytes, Bytes)> = match ctx.get_hash(key)? {
        Some(h) => h.iter().map(|(f, v)| (f.clone(), v.clone())).collect(),
        None => Vec::new(),
    };
    let Some(count) = count else {
        if items.is_empty() {
            return Ok(ctx.null());
        }
        let i = rand::thread_rng().gen_range(0..items.len());
        return Ok(Frame::Bulk(items[i].0.clone()));
    };
    if with_values && count.unsigned_abs() > (i64::MAX as u64) / 2 {
        return Err(err("ERR value is out of range"));
    }
    check_picks(count)?;
    let picked = random_picks(&items, count);
    Ok(Frame::Array(if with_values {
        if resp3 {
            picked
                .into_iter()
                .map(|(f, v)| Frame::Array(vec![Frame::Bulk(f), Frame::Bulk(v)]))
                .collect()
        } else {
            picked
                .into_iter()
                .flat_map(|(f, v)| [Frame::Bulk(f), Frame::Bulk(v)])
                .collect()
        }
    } else {
        picked.into_iter().map(|(f, _)| Frame::Bulk(f)).collect()
    }))
}

/// Most picks a negative count may ask for. Redis would stream any number;
/// we build the reply in memory, so a count that could exhaust it is
/// refused instead (`ERR value is out of range`).
pub(crate) const MAX_RANDOM_PICKS: u64 = 16 * 1024 * 1024;

/// Checks a random-pick count against [`MAX_RANDOM_PICKS`].
pub(crate) fn check_picks(count: i64) -> Result<(), Frame> {
    if count < 0 && count.unsigned_abs() > MAX_RANDOM_PICKS {
        Err(err("ERR value is out of range"))
    } else {
        Ok(())
    }
}

/// Redis's random-count semantics: positive = distinct (at most all),
/// negative = |count| picks with repetition.
pub(crate) fn random_picks<T: Clone>(items: &[T], count: i64) -> Vec<T> {
    let mut rng = rand::thread_rng();
    if items.is_empty() || count == 0 {
        return Vec::new();
    }
    if count < 0 {
        (0..count.unsigned_abs())
            .map(|_| items[rng.gen_range(0..items.len())].clone())
            .collect()
    } else if count as usize >= items.len() {
        items.to_vec()
    } else {
        let mut v = items.to_vec();
        v.shuffle(&mut rng);
        v.truncate(count as usize);
        v
    }
}

fn hscan(ctx: &mut Ctx) -> Reply {
    let a = parse_scan(ctx, 2, false)?;
    let key = &ctx.args[1];
    let Some(h) = ctx.get_hash(key)? else {
        return Ok(scan_reply(0, Vec::new()));
    };
    let small = crate::value::Value::Hash(Box::new(h.clone())).encoding() == "listpack";
    // Small hashes come back whole in one call, in order, as Redis does.
    let (page, next): (Vec<(Bytes, Bytes)>, u64) = if small {
        (h.iter().map(|(f, v)| (f.clone(), v.clone())).collect(), 0)
    } else {
        let items = h
            .iter()
            .map(|(f, v)| (scan_pos(f), (f.clone(), v.clone())))
            .collect();
        scan_page(items, a.cursor, a.count)
    };
    let mut out = Vec::new();
    for (f, v) in page {
        if a.pattern
            .as_ref()
            .is_none_or(|p| crate::glob_match(p, &f, false))
        {
            out.push(Frame::Bulk(f));
            out.push(Frame::Bulk(v));
        }
    }
    Ok(scan_reply(next, out))
}
