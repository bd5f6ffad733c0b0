//! List commands, including the blocking pops (BLPOP, BRPOP, BLMOVE,
//! BRPOPLPUSH, BLMPOP). A blocking pop that finds nothing sets
//! `ctx.block`; [`crate::Store::execute`] waits and calls it again.

use crate::pubsub::class::LIST;
use std::collections::VecDeque;

use bytes::Bytes;
use resp::Frame;

use crate::ctx::{err, owned, Block, Ctx, Handler, Reply, NO_KEY, SYNTAX, WRONGTYPE};
use crate::num;
use crate::strings::clamp_range;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("lpush", lpush),
    ("rpush", rpush),
    ("lpushx", lpush),
    ("rpushx", rpush),
    ("lpop", lpop),
    ("rpop", rpop),
    ("llen", llen),
    ("lrange", lrange),
    ("lindex", lindex),
    ("lset", lset),
    ("lrem", lrem),
    ("ltrim", ltrim),
    ("linsert", linsert),
    ("lpos", lpos),
    ("lmove", lmove),
    ("rpoplpush", rpoplpush),
    ("lmpop", lmpop),
    ("blpop", blpop),
    ("brpop", brpop),
    ("blmove", blmove),
    ("brpoplpush", brpoplpush),
    ("blmpop", blmpop),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Left,
    Right,
}

fn push_generic(ctx: &mut Ctx, end: End) -> Reply {
    let key = &ctx.args[1];
    let only_existing = ctx.name.ends_with('x');
    let args = ctx.args;
    let Some(l) = ctx.list_mut(key, !only_existing)? else {
        return Ok(Frame::Integer(0));
    };
    for v in &args[2..] {
        match end {
            End::Left => l.push_front(owned(v)),
            End::Right => l.push_back(owned(v)),
        }
    }
    let n = l.len();
    ctx.notify(LIST, push_event(end), key);
    ctx.modified(key);
    Ok(Frame::Integer(n as i64))
}

fn push_event(e: End) -> &'static str {
    if e == End::Left {
        "lpush"
    } else {
        "rpush"
    }
}

fn pop_event(e: End) -> &'static str {
    if e == End::Left {
        "lpop"
    } else {
        "rpop"
    }
}

fn lpush(ctx: &mut Ctx) -> Reply {
    push_generic(ctx, End::Left)
}

fn rpush(ctx: &mut Ctx) -> Reply {
    push_generic(ctx, End::Right)
}

fn pop_n(l: &mut VecDeque<Bytes>, end: End, n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(n.min(l.len()));
    for _ in 0..n {
        let v = match end {
            End::Left => l.pop_front(),
            End::Right => l.pop_back(),
        };
        match v {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

fn pop_generic(ctx: &mut Ctx, end: End) -> Reply {
    let key = &ctx.args[1];
    let count = if ctx.args.len() > 2 {
        if ctx.args.len() > 3 {
            return Err(Frame::error(format!(
                "ERR wrong number of arguments for '{}' command",
                ctx.name
            )));
        }
        let c = num::parse_i64(&ctx.args[2])
            .filter(|c| *c >= 0)
            .ok_or_else(|| err("ERR value is out of range, must be positive"))?;
        Some(c as usize)
    } else {
        None
    };
    let Some(l) = ctx.list_mut(key, false)? else {
        return Ok(if count.is_some() {
            ctx.null_array()
        } else {
            ctx.null()
        });
    };
    let popped = pop_n(l, end, count.unwrap_or(1));
    if !popped.is_empty() {
        ctx.notify(LIST, pop_event(end), key);
        ctx.modified(key);
    }
    Ok(match count {
        None => popped
            .into_iter()
            .next()
            .map_or_else(|| ctx.null(), Frame::Bulk),
        Some(_) => Frame::Array(popped.into_iter().map(Frame::Bulk).collect()),
    })
}

fn lpop(ctx: &mut Ctx) -> Reply {
    pop_generic(ctx, End::Left)
}

fn rpop(ctx: &mut Ctx) -> Reply {
    pop_generic(ctx, End::Right)
}

fn llen(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        ctx.get_list(key)?.map_or(0, |l| l.len() as i64),
    ))
}

fn lrange(ctx: &mut Ctx) -> Reply {
    let (s, e) = (ctx.arg_i64(2)?, ctx.arg_i64(3)?);
    let key = &ctx.args[1];
    let wire = ctx.wire_replies();
    let Some(l) = ctx.get_list(key)? else {
        return Ok(Frame::Array(Vec::new()));
    };
    Ok(match clamp_range(s, e, l.len()) {
        Some((a, b)) => crate::ctx::bulks(wire, l.range(a..=b)),
        None => Frame::Array(Vec::new()),
    })
}

fn index_of(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (i >= 0 && (i as usize) < len).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx) -> Reply {
    let i = ctx.arg_i64(2)?;
    let key = &ctx.args[1];
    let v = ctx
        .get_list(key)?
        .and_then(|l| index_of(i, l.len()).and_then(|i| l.get(i).cloned()));
    Ok(v.map_or_else(|| ctx.null(), Frame::Bulk))
}

fn lset(ctx: &mut Ctx) -> Reply {
    let i = ctx.arg_i64(2)?;
    let key = &ctx.args[1];
    let v = ctx.args[3].clone();
    let Some(l) = ctx.list_mut(key, false)? else {
        return Err(err(NO_KEY));
    };
    let Some(i) = index_of(i, l.len()) else {
        return Err(err("ERR index out of range"));
    };
    l[i] = v;
    ctx.notify(LIST, "lset", key);
    ctx.modified(key);
    Ok(Frame::simple("OK"))
}

fn lrem(ctx: &mut Ctx) -> Reply {
    let count = ctx.arg_i64(2)?;
    let key = &ctx.args[1];
    let v = ctx.args[3].clone();
    let Some(l) = ctx.list_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let limit = if count == 0 {
        usize::MAX
    } else {
        count.unsigned_abs() as usize
    };
    let mut removed = 0;
    if count >= 0 {
        let mut i = 0;
        while i < l.len() && removed < limit {
            if l[i] == v {
                l.remove(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
    } else {
        let mut i = l.len();
        while i > 0 && removed < limit {
            i -= 1;
            if l[i] == v {
                l.remove(i);
                removed += 1;
            }
        }
    }
    if removed > 0 {
        ctx.notify(LIST, "lrem", key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(removed as i64))
}

fn ltrim(ctx: &mut Ctx) -> Reply {
    let (s, e) = (ctx.arg_i64(2)?, ctx.arg_i64(3)?);
    let key = &ctx.args[1];
    let Some(l) = ctx.list_mut(key, false)? else {
        return Ok(Frame::simple("OK"));
    };
    match clamp_range(s, e, l.len()) {
        Some((a, b)) => {
            l.truncate(b + 1);
            l.drain(..a);
        }
        None => l.clear(),
    }
    ctx.notify(LIST, "ltrim", key);
    ctx.modified(key);
    Ok(Frame::simple("OK"))
}

fn linsert(ctx: &mut Ctx) -> Reply {
    let after = if ctx.arg_is(2, "AFTER") {
        true
    } else if ctx.arg_is(2, "BEFORE") {
        false
    } else {
        return Err(err(SYNTAX));
    };
    let key = &ctx.args[1];
    let (pivot, v) = (ctx.args[3].clone(), ctx.args[4].clone());
    let Some(l) = ctx.list_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let Some(i) = l.iter().position(|e| *e == pivot) else {
        return Ok(Frame::Integer(-1));
    };
    l.insert(if after { i + 1 } else { i }, v);
    let n = l.len();
    ctx.notify(LIST, "linsert", key);
    ctx.modified(key);
    Ok(Frame::Integer(n as i64))
}

fn lpos(ctx: &mut Ctx) -> Reply {
    let mut rank: i64 = 1;
    let mut count: Option<usize> = None;
    let mut maxlen: usize = 0;
    let mut i = 3;
    while i < ctx.args.len() {
        if i + 1 >= ctx.args.len() {
            return Err(err(SYNTAX));
        }
        if ctx.arg_is(i, "RANK") {
            rank = ctx.arg_i64(i + 1)?;
            if rank == 0 {
                return Err(err("ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list"));
            }
            if rank == i64::MIN {
                return Err(err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"));
            }
        } else if ctx.arg_is(i, "COUNT") {
            let c = ctx.arg_i64(i + 1)?;
            if c < 0 {
                return Err(err("ERR COUNT can't be negative"));
            }
            count = Some(c as usize);
        } else if ctx.arg_is(i, "MAXLEN") {
            let m = ctx.arg_i64(i + 1)?;
            if m < 0 {
                return Err(err("ERR MAXLEN can't be negative"));
            }
            maxlen = m as usize;
        } else {
            return Err(err(SYNTAX));
        }
        i += 2;
    }
    let key = &ctx.args[1];
    let elem = ctx.args[2].clone();
    let Some(l) = ctx.get_list(key)? else {
        return Ok(if count.is_some() {
            Frame::Array(Vec::new())
        } else {
            ctx.null()
        });
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => c,
        None => 1,
    };
    let mut found = Vec::new();
    let mut skip = rank.unsigned_abs() - 1;
    let len = l.len();
    let scan = if maxlen == 0 { len } else { maxlen.min(len) };
    for step in 0..scan {
        let idx = if rank > 0 { step } else { len - 1 - step };
        if l[idx] == elem {
            if skip > 0 {
                skip -= 1;
            } else {
                found.push(idx as i64);
                if found.len() >= want {
                    break;
                }
            }
        }
    }
    Ok(match count {
        Some(_) => Frame::Array(found.into_iter().map(Frame::Integer).collect()),
        None => found
            .first()
            .map_or_else(|| ctx.null(), |i| Frame::Integer(*i)),
    })
}

fn parse_end(ctx: &Ctx, i: usize) -> Result<End, Frame> {
    if ctx.arg_is(i, "LEFT") {
        Ok(End::Left)
    } else if ctx.arg_is(i, "RIGHT") {
        Ok(End::Right)
    } else {
        Err(err(SYNTAX))
    }
}

fn end_word(e: End) -> Bytes {
    Bytes::from_static(if e == End::Left { b"LEFT" } else { b"RIGHT" })
}

/// Pops from `src` at `from` and pushes to `dst` at `to`. `Ok(None)` when
/// `src` is empty.
fn move_generic(ctx: &mut Ctx, from: End, to: End) -> Result<Option<Bytes>, Frame> {
    let (src, dst) = (ctx.args[1].clone(), ctx.args[2].clone());
    if ctx.get_list(&src)?.is_none() {
        return Ok(None);
    }
    // Redis checks the destination's type before popping anything.
    if ctx.get_list(&dst).is_err() {
        return Err(err(WRONGTYPE));
    }
    let v = match ctx.list_mut(&src, false)? {
        Some(l) => pop_n(l, from, 1).pop(),
        None => None,
    };
    let Some(v) = v else { return Ok(None) };
    // Redis pushes (and notifies) the destination before it reports the
    // pop and deletes an emptied source.
    if let Some(l) = ctx.list_mut(&dst, true)? {
        match to {
            End::Left => l.push_front(v.clone()),
            End::Right => l.push_back(v.clone()),
        }
    }
    ctx.notify(LIST, push_event(to), &dst);
    ctx.modified(&dst);
    ctx.notify(LIST, pop_event(from), &src);
    ctx.modified(&src);
    ctx.propagate(vec![
        Bytes::from_static(b"LMOVE"),
        src,
        dst,
        end_word(from),
        end_word(to),
    ]);
    Ok(Some(v))
}

fn lmove(ctx: &mut Ctx) -> Reply {
    let (from, to) = (parse_end(ctx, 3)?, parse_end(ctx, 4)?);
    let v = move_generic(ctx, from, to)?;
    Ok(v.map_or_else(|| ctx.null(), Frame::Bulk))
}

fn rpoplpush(ctx: &mut Ctx) -> Reply {
    let v = move_generic(ctx, End::Right, End::Left)?;
    Ok(v.map_or_else(|| ctx.null(), Frame::Bulk))
}

/// Parses `numkeys key… LEFT|RIGHT [COUNT n]` from index `first`.
fn parse_mpop(ctx: &Ctx, first: usize) -> Result<(Vec<Bytes>, End, usize), Frame> {
    let n = num::parse_i64(&ctx.args[first])
        .filter(|n| *n > 0)
        .ok_or_else(|| err("ERR numkeys should be greater than 0"))?;
    let n = n as usize;
    let where_i = first + 1 + n;
    if where_i >= ctx.args.len() {
        return Err(err(SYNTAX));
    }
    let keys = ctx.args[first + 1..where_i].to_vec();
    let end = parse_end(ctx, where_i)?;
    let mut count = 1;
    let mut i = where_i + 1;
    let mut seen_count = false;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "COUNT") && i + 1 < ctx.args.len() && !seen_count {
            let c = num::parse_i64(&ctx.args[i + 1])
                .filter(|c| *c > 0)
                .ok_or_else(|| err("ERR count should be greater than 0"))?;
            count = c as usize;
            seen_count = true;
            i += 2;
        } else {
            return Err(err(SYNTAX));
        }
    }
    Ok((keys, end, count))
}

/// Pops up to `count` from the first non-empty list among `keys`.
fn mpop(
    ctx: &mut Ctx,
    keys: &[Bytes],
    end: End,
    count: usize,
) -> Result<Option<(Bytes, Vec<Bytes>)>, Frame> {
    for k in keys {
        let Some(l) = ctx.list_mut(k, false)? else {
            continue;
        };
        let popped = pop_n(l, end, count);
        ctx.notify(LIST, pop_event(end), k);
        ctx.modified(k);
        let mut e = vec![
            Bytes::from_static(if end == End::Left { b"LPOP" } else { b"RPOP" }),
            k.clone(),
        ];
        e.push(Bytes::from(popped.len().to_string()));
        ctx.propagate(e);
        return Ok(Some((k.clone(), popped)));
    }
    Ok(None)
}

fn mpop_reply(ctx: &Ctx, r: Option<(Bytes, Vec<Bytes>)>) -> Frame {
    match r {
        Some((k, v)) => Frame::Array(vec![
            Frame::Bulk(k),
            Frame::Array(v.into_iter().map(Frame::Bulk).collect()),
        ]),
        None => ctx.null_array(),
    }
}

fn lmpop(ctx: &mut Ctx) -> Reply {
    let (keys, end, count) = parse_mpop(ctx, 1)?;
    let r = mpop(ctx, &keys, end, count)?;
    Ok(mpop_reply(ctx, r))
}

/// Parses a blocking timeout in seconds (float) into ms.
pub(crate) fn parse_timeout(ctx: &Ctx, i: usize) -> Result<u64, Frame> {
    let t = num::parse_f64(&ctx.args[i])
        .filter(|t| t.is_finite())
        .ok_or_else(|| err("ERR timeout is not a float or out of range"))?;
    if t < 0.0 {
        return Err(err("ERR timeout is negative"));
    }
    let ms = (t * 1000.0).ceil();
    if ms > (i64::MAX / 2) as f64 {
        return Err(err("ERR timeout is out of range"));
    }
    Ok(ms as u64)
}

/// Marks the command as waiting (unless inside EXEC) and returns the reply
/// to use if it times out.
pub(crate) fn block(
    ctx: &mut Ctx,
    timeout_ms: u64,
    timeout_reply: Frame,
    keys: Vec<Bytes>,
) -> Reply {
    if !ctx.no_block {
        ctx.block = Some(Block {
            timeout_ms,
            keys,
            retry_args: None,
        });
    }
    Ok(timeout_reply)
}

fn bpop(ctx: &mut Ctx, end: End) -> Reply {
    let n = ctx.args.len();
    let timeout = parse_timeout(ctx, n - 1)?;
    let keys = ctx.args[1..n - 1].to_vec();
    for k in &keys {
        let has = ctx.get_list(k)?.is_some_and(|l| !l.is_empty());
        if !has || !ctx.may_serve(k) {
            continue;
        }
        let Some(l) = ctx.list_mut(k, false)? else {
            continue;
        };
        let v = pop_n(l, end, 1).pop();
        let Some(v) = v else { continue };
        ctx.notify(LIST, pop_event(end), k);
        ctx.modified(k);
        ctx.propagate(vec![
            Bytes::from_static(if end == End::Left { b"LPOP" } else { b"RPOP" }),
            k.clone(),
        ]);
        return Ok(Frame::Array(vec![Frame::Bulk(k.clone()), Frame::Bulk(v)]));
    }
    let r = ctx.null_array();
    block(ctx, timeout, r, keys)
}

/// True when an earlier-blocked client has the first claim on `src`.
fn queued_behind(ctx: &mut Ctx) -> Result<bool, Frame> {
    let src = ctx.args[1].clone();
    Ok(ctx.get_list(&src)?.is_some() && !ctx.may_serve(&src))
}

fn blpop(ctx: &mut Ctx) -> Reply {
    bpop(ctx, End::Left)
}

fn brpop(ctx: &mut Ctx) -> Reply {
    bpop(ctx, End::Right)
}

fn blmove(ctx: &mut Ctx) -> Reply {
    let (from, to) = (parse_end(ctx, 3)?, parse_end(ctx, 4)?);
    let timeout = parse_timeout(ctx, 5)?;
    let got = if queued_behind(ctx)? {
        None
    } else {
        move_generic(ctx, from, to)?
    };
    match got {
        Some(v) => Ok(Frame::Bulk(v)),
        None => {
            let r = ctx.null();
            let keys = vec![ctx.args[1].clone()];
            block(ctx, timeout, r, keys)
        }
    }
}

fn brpoplpush(ctx: &mut Ctx) -> Reply {
    let timeout = parse_timeout(ctx, 3)?;
    let got = if queued_behind(ctx)? {
        None
    } else {
        move_generic(ctx, End::Right, End::Left)?
    };
    match got {
        Some(v) => Ok(Frame::Bulk(v)),
        None => {
            let r = ctx.null();
            let keys = vec![ctx.args[1].clone()];
            block(ctx, timeout, r, keys)
        }
    }
}

fn blmpop(ctx: &mut Ctx) -> Reply {
    let timeout = parse_timeout(ctx, 1)?;
    let (keys, end, count) = parse_mpop(ctx, 2)?;
    for k in &keys {
        ctx.get_list(k)?;
    }
    let servable: Vec<Bytes> = keys.iter().filter(|k| ctx.may_serve(k)).cloned().collect();
    match mpop(ctx, &servable, end, count)? {
        Some(r) => Ok(mpop_reply(ctx, Some(r))),
        None => {
            let r = ctx.null_array();
            block(ctx, timeout, r, keys)
        }
    }
}
