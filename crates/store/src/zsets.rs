//! Sorted set commands, including ranges by rank, score and lex, the set
//! algebra (ZUNION/ZINTER/ZDIFF and their STORE forms), pops and the
//! blocking pops (BZPOPMIN/BZPOPMAX/BZMPOP).

use crate::pubsub::class::ZSET;
use std::collections::HashMap;

use bytes::Bytes;
use rand::Rng;
use resp::Frame;

use crate::ctx::{err, owned, Ctx, Handler, Reply, NOT_FLOAT, SYNTAX, WRONGTYPE};
use crate::hashes::random_picks;
use crate::keys::{parse_scan, scan_page, scan_pos, scan_reply};
use crate::lists::{block, parse_timeout};
use crate::num;
use crate::value::{Score, Value, ZSet};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("zadd", zadd),
    ("zincrby", zincrby),
    ("zrem", zrem),
    ("zcard", zcard),
    ("zscore", zscore),
    ("zmscore", zmscore),
    ("zrank", zrank),
    ("zrevrank", zrank),
    ("zcount", zcount),
    ("zlexcount", zlexcount),
    ("zrange", zrange),
    ("zrangestore", zrange),
    ("zrevrange", zrange),
    ("zrangebyscore", zrange),
    ("zrevrangebyscore", zrange),
    ("zrangebylex", zrange),
    ("zrevrangebylex", zrange),
    ("zremrangebyrank", zremrange),
    ("zremrangebyscore", zremrange),
    ("zremrangebylex", zremrange),
    ("zunion", zsetop),
    ("zinter", zsetop),
    ("zdiff", zsetop),
    ("zunionstore", zsetop),
    ("zinterstore", zsetop),
    ("zdiffstore", zsetop),
    ("zintercard", zintercard),
    ("zpopmin", zpop),
    ("zpopmax", zpop),
    ("zmpop", zmpop),
    ("bzpopmin", bzpop),
    ("bzpopmax", bzpop),
    ("bzmpop", bzmpop),
    ("zrandmember", zrandmember),
    ("zscan", zscan),
];

fn parse_score(b: &[u8]) -> Result<f64, Frame> {
    num::parse_f64(b).ok_or_else(|| err(NOT_FLOAT))
}

fn zadd(ctx: &mut Ctx) -> Reply {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < ctx.args.len() {
        match ctx.args[i].to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            b"CH" => ch = true,
            b"INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let rest = &ctx.args[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(err(SYNTAX));
    }
    if nx && xx {
        return Err(err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return Err(err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr && rest.len() > 2 {
        return Err(err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    for p in rest.chunks(2) {
        pairs.push((parse_score(&p[0])?, owned(&p[1])));
    }
    let key = &ctx.args[1];
    if ctx.get_zset(key)?.is_none() && xx {
        return Ok(if incr { ctx.null() } else { Frame::Integer(0) });
    }
    let z = ctx
        .zset_mut(key, true)?
        .ok_or_else(|| err("ERR internal"))?;
    let (mut added, mut changed) = (0, 0);
    let mut incr_result = None;
    for (score, m) in pairs {
        let cur = z.score(&m);
        let mut new = score;
        if let (true, Some(c)) = (incr, cur) {
            new = c + score;
            if new.is_nan() {
                ctx.modified(key);
                return Err(err("ERR resulting score is not a number (NaN)"));
            }
        }
        match cur {
            Some(c) => {
                if nx || (gt && new <= c) || (lt && new >= c) {
                    continue;
                }
                if c != new {
                    z.insert(m, new);
                    changed += 1;
                }
                incr_result = Some(new);
            }
            None => {
                if xx {
                    continue;
                }
                z.insert(m, new);
                added += 1;
                incr_result = Some(new);
            }
        }
    }
    if added + changed > 0 {
        ctx.notify(ZSET, if incr { "zincr" } else { "zadd" }, key);
    }
    ctx.modified(key);
    if added + changed == 0 {
        ctx.dirty = ctx.dirty.saturating_sub(1);
    }
    if incr {
        return Ok(match incr_result {
            Some(s) => ctx.double(s),
            None => ctx.null(),
        });
    }
    Ok(Frame::Integer(if ch { added + changed } else { added }))
}

fn zincrby(ctx: &mut Ctx) -> Reply {
    let by = parse_score(&ctx.args[2])?;
    let key = &ctx.args[1];
    let m = ctx.args[3].clone();
    let z = ctx
        .zset_mut(key, true)?
        .ok_or_else(|| err("ERR internal"))?;
    let new = z.score(&m).unwrap_or(0.0) + by;
    if new.is_nan() {
        ctx.modified(key);
        return Err(err("ERR resulting score is not a number (NaN)"));
    }
    z.insert(m, new);
    ctx.notify(ZSET, "zincr", key);
    ctx.modified(key);
    Ok(ctx.double(new))
}

fn zrem(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let Some(z) = ctx.zset_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let n = args[2..].iter().filter(|m| z.remove(m)).count();
    if n > 0 {
        ctx.notify(ZSET, "zrem", key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(n as i64))
}

fn zcard(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        ctx.get_zset(key)?.map_or(0, |z| z.len() as i64),
    ))
}

fn zscore(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let m = ctx.args[2].clone();
    let s = ctx.get_zset(key)?.and_then(|z| z.score(&m));
    Ok(s.map_or_else(|| ctx.null(), |s| ctx.double(s)))
}

fn zmscore(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let args = ctx.args;
    let scores: Vec<Option<f64>> = match ctx.get_zset(key)? {
        Some(z) => args[2..].iter().map(|m| z.score(m)).collect(),
        None => vec![None; args.len() - 2],
    };
    Ok(Frame::Array(
        scores
            .into_iter()
            .map(|s| s.map_or_else(|| ctx.null(), |s| ctx.double(s)))
            .collect(),
    ))
}

fn zrank(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let m = ctx.args[2].clone();
    let rev = ctx.name == "zrevrank";
    let r = ctx
        .get_zset(key)?
        .and_then(|z| z.rank(&m).map(|r| if rev { z.len() - 1 - r } else { r }));
    Ok(r.map_or_else(|| ctx.null(), |r| Frame::Integer(r as i64)))
}

/// A score bound: value and exclusivity.
#[derive(Clone, Copy)]
struct ScoreBound {
    v: f64,
    excl: bool,
}

fn parse_score_bound(b: &[u8]) -> Result<ScoreBound, Frame> {
    let bad = || err("ERR min or max is not a float");
    let (excl, rest) = if b.first() == Some(&b'(') {
        (true, &b[1..])
    } else {
        (false, b)
    };
    let v = num::parse_f64(rest).ok_or_else(bad)?;
    Ok(ScoreBound { v, excl })
}

fn above_min(s: f64, min: ScoreBound) -> bool {
    if min.excl {
        s > min.v
    } else {
        s >= min.v
    }
}

fn below_max(s: f64, max: ScoreBound) -> bool {
    if max.excl {
        s < max.v
    } else {
        s <= max.v
    }
}

/// A lex bound.
#[derive(Clone)]
enum Lex {
    NegInf,
    PosInf,
    Incl(Bytes),
    Excl(Bytes),
}

fn parse_lex(b: &Bytes) -> Result<Lex, Frame> {
    match b.first() {
        Some(b'-') if b.len() == 1 => Ok(Lex::NegInf),
        Some(b'+') if b.len() == 1 => Ok(Lex::PosInf),
        Some(b'[') => Ok(Lex::Incl(b.slice(1..))),
        Some(b'(') => Ok(Lex::Excl(b.slice(1..))),
        _ => Err(err("ERR min or max not valid string range item")),
    }
}

fn lex_above_min(m: &[u8], min: &Lex) -> bool {
    match min {
        Lex::NegInf => true,
        Lex::PosInf => false,
        Lex::Incl(v) => m >= &v[..],
        Lex::Excl(v) => m > &v[..],
    }
}

fn lex_below_max(m: &[u8], max: &Lex) -> bool {
    match max {
        Lex::NegInf => false,
        Lex::PosInf => true,
        Lex::Incl(v) => m <= &v[..],
        Lex::Excl(v) => m < &v[..],
    }
}

/// Redis's `sdscmplex` between two bounds' values (`-` below all, `+`
/// above all).
fn lex_bound_cmp(a: &Lex, b: &Lex) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    let val = |l: &Lex| match l {
        Lex::Incl(v) | Lex::Excl(v) => Some(v.clone()),
        _ => None,
    };
    match (a, b) {
        (Lex::NegInf, Lex::NegInf) | (Lex::PosInf, Lex::PosInf) => Equal,
        (Lex::NegInf, _) | (_, Lex::PosInf) => Less,
        (Lex::PosInf, _) | (_, Lex::NegInf) => Greater,
        _ => val(a).cmp(&val(b)),
    }
}

/// Members in a lex range, the way Redis walks it: lex ranges assume all
/// scores are equal, so like Redis we check the ends of the whole set,
/// find the first member past the start bound, then take members while
/// they stay within the other bound (with mixed scores this is not a
/// filter, and Redis's answer is what clients see).
fn lex_walk(z: &ZSet, min: &Lex, max: &Lex, rev: bool) -> Vec<(Bytes, f64)> {
    let c = lex_bound_cmp(min, max);
    let excl = matches!(min, Lex::Excl(_)) || matches!(max, Lex::Excl(_));
    if c == std::cmp::Ordering::Greater || (c == std::cmp::Ordering::Equal && excl) {
        return Vec::new();
    }
    let (Some((first, _)), Some((last, _))) = (z.iter().next(), z.iter().next_back()) else {
        return Vec::new();
    };
    if !lex_above_min(last, min) || !lex_below_max(first, max) {
        return Vec::new();
    }
    if rev {
        let Some(start) = z.iter().rev().position(|(m, _)| lex_below_max(m, max)) else {
            return Vec::new();
        };
        z.iter()
            .rev()
            .skip(start)
            .take_while(|(m, _)| lex_above_min(m, min))
            .map(|(m, s)| (m.clone(), s))
            .collect()
    } else {
        let Some(start) = z.iter().position(|(m, _)| lex_above_min(m, min)) else {
            return Vec::new();
        };
        z.iter()
            .skip(start)
            .take_while(|(m, _)| lex_below_max(m, max))
            .map(|(m, s)| (m.clone(), s))
            .collect()
    }
}

fn zcount(ctx: &mut Ctx) -> Reply {
    let (min, max) = (
        parse_score_bound(&ctx.args[2])?,
        parse_score_bound(&ctx.args[3])?,
    );
    let key = &ctx.args[1];
    let n = ctx.get_zset(key)?.map_or(0, |z| {
        z.iter()
            .filter(|(_, s)| above_min(*s, min) && below_max(*s, max))
            .count()
    });
    Ok(Frame::Integer(n as i64))
}

fn zlexcount(ctx: &mut Ctx) -> Reply {
    let (min, max) = (parse_lex(&ctx.args[2])?, parse_lex(&ctx.args[3])?);
    let key = &ctx.args[1];
    let n = ctx
        .get_zset(key)?
        .map_or(0, |z| lex_walk(z, &min, &max, false).len());
    Ok(Frame::Integer(n as i64))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RangeKind {
    Rank,
    Score,
    Lex,
}

/// The members a ZRANGE-family command selects, in reply order.
fn select(
    z: &ZSet,
    kind: RangeKind,
    rev: bool,
    start: &Bytes,
    stop: &Bytes,
    limit: Option<(i64, i64)>,
) -> Result<Vec<(Bytes, f64)>, Frame> {
    let items: Box<dyn Iterator<Item = (&Bytes, f64)>> = if rev {
        Box::new(z.iter().rev())
    } else {
        Box::new(z.iter())
    };
    let picked: Vec<(Bytes, f64)> = match kind {
        RangeKind::Rank => {
            let s = num::parse_i64(start).ok_or_else(|| err(crate::ctx::NOT_INT))?;
            let e = num::parse_i64(stop).ok_or_else(|| err(crate::ctx::NOT_INT))?;
            match crate::strings::clamp_range(s, e, z.len()) {
                Some((a, b)) => items
                    .skip(a)
                    .take(b - a + 1)
                    .map(|(m, s)| (m.clone(), s))
                    .collect(),
                None => Vec::new(),
            }
        }
        RangeKind::Score => {
            // REV takes max first.
            let (min, max) = if rev {
                (parse_score_bound(stop)?, parse_score_bound(start)?)
            } else {
                (parse_score_bound(start)?, parse_score_bound(stop)?)
            };
            items
                .filter(|(_, s)| above_min(*s, min) && below_max(*s, max))
                .map(|(m, s)| (m.clone(), s))
                .collect()
        }
        RangeKind::Lex => {
            let (min, max) = if rev {
                (parse_lex(stop)?, parse_lex(start)?)
            } else {
                (parse_lex(start)?, parse_lex(stop)?)
            };
            drop(items);
            lex_walk(z, &min, &max, rev)
        }
    };
    Ok(match limit {
        Some((off, count)) => {
            if off < 0 {
                return Ok(Vec::new());
            }
            let it = picked.into_iter().skip(off as usize);
            if count < 0 {
                it.collect()
            } else {
                it.take(count as usize).collect()
            }
        }
        None => picked,
    })
}

/// Members with scores as Redis replies: flat in RESP2, pairs in RESP3.
fn with_scores(ctx: &Ctx, items: Vec<(Bytes, f64)>, scores: bool) -> Frame {
    Frame::Array(if !scores {
        items.into_iter().map(|(m, _)| Frame::Bulk(m)).collect()
    } else if ctx.resp3() {
        items
            .into_iter()
            .map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), ctx.double(s)]))
            .collect()
    } else {
        items
            .into_iter()
            .flat_map(|(m, s)| [Frame::Bulk(m), ctx.double(s)])
            .collect()
    })
}

fn zrange(ctx: &mut Ctx) -> Reply {
    let name = ctx.name;
    let store = name == "zrangestore";
    let first = if store { 2 } else { 1 };
    let key = ctx.args[first].clone();
    let (start, stop) = (ctx.args[first + 1].clone(), ctx.args[first + 2].clone());
    let (mut kind, mut rev) = match name {
        "zrevrange" => (RangeKind::Rank, true),
        "zrangebyscore" => (RangeKind::Score, false),
        "zrevrangebyscore" => (RangeKind::Score, true),
        "zrangebylex" => (RangeKind::Lex, false),
        "zrevrangebylex" => (RangeKind::Lex, true),
        _ => (RangeKind::Rank, false),
    };
    let generic = name == "zrange" || store;
    let (mut scores, mut limit) = (false, None);
    let mut i = first + 3;
    while i < ctx.args.len() {
        let a = ctx.args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"WITHSCORES" if !store && (generic || kind != RangeKind::Lex) => scores = true,
            b"LIMIT" if i + 2 < ctx.args.len() && (generic || kind != RangeKind::Rank) => {
                limit = Some((ctx.arg_i64(i + 1)?, ctx.arg_i64(i + 2)?));
                i += 2;
            }
            b"BYSCORE" if generic && kind == RangeKind::Rank => kind = RangeKind::Score,
            b"BYLEX" if generic && kind == RangeKind::Rank => kind = RangeKind::Lex,
            b"REV" if generic => rev = true,
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    if limit.is_some() && kind == RangeKind::Rank {
        return Err(err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if scores && kind == RangeKind::Lex {
        return Err(err(
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    let empty = ZSet::default();
    let z = ctx.get_zset(&key)?.cloned();
    let items = select(
        z.as_ref().unwrap_or(&empty),
        kind,
        rev,
        &start,
        &stop,
        limit,
    )?;
    if store {
        let dst = ctx.args[1].clone();
        let mut out = ZSet::default();
        for (m, s) in items {
            out.insert(m, s);
        }
        return Ok(store_zset(ctx, &dst, out));
    }
    Ok(with_scores(ctx, items, scores))
}

fn zremrange(ctx: &mut Ctx) -> Reply {
    let kind = match ctx.name {
        "zremrangebyrank" => RangeKind::Rank,
        "zremrangebyscore" => RangeKind::Score,
        _ => RangeKind::Lex,
    };
    let key = &ctx.args[1];
    let (start, stop) = (ctx.args[2].clone(), ctx.args[3].clone());
    // Validate the range before looking at the key, as Redis does.
    select(&ZSet::default(), kind, false, &start, &stop, None)?;
    let Some(z) = ctx.get_zset(key)?.cloned() else {
        return Ok(Frame::Integer(0));
    };
    let items = select(&z, kind, false, &start, &stop, None)?;
    if let Some(z) = ctx.zset_mut(key, false)? {
        for (m, _) in &items {
            z.remove(m);
        }
    }
    if !items.is_empty() {
        ctx.notify(ZSET, ctx.name, key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(items.len() as i64))
}

/// Writes a computed sorted set to `dst`, deleting it when empty.
fn store_zset(ctx: &mut Ctx, dst: &Bytes, z: ZSet) -> Frame {
    let n = z.len();
    if n == 0 {
        if ctx.delete(dst) {
            ctx.propagate(vec![Bytes::from_static(b"DEL"), dst.clone()]);
        }
    } else {
        ctx.set_value(dst, Value::ZSet(Box::new(z)), false);
        ctx.notify(ZSET, ctx.name, dst);
    }
    Frame::Integer(n as i64)
}

/// Reads a key as a sorted set; plain sets count with score 1, as in Redis.
fn load_zset_like(ctx: &mut Ctx, key: &[u8]) -> Result<Option<ZSet>, Frame> {
    match ctx.lookup(key) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some((**z).clone())),
        Some(Value::Set(s)) => {
            let mut z = ZSet::default();
            for m in s.iter() {
                z.insert(m.clone(), 1.0);
            }
            Ok(Some(z))
        }
        Some(_) => Err(err(WRONGTYPE)),
    }
}

#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Min,
    Max,
}

fn aggregate(a: f64, b: f64, agg: Agg) -> f64 {
    match agg {
        Agg::Sum => {
            let s = a + b;
            // inf + -inf: Redis defines the sum as 0.
            if s.is_nan() {
                0.0
            } else {
                s
            }
        }
        Agg::Min => a.min(b),
        Agg::Max => a.max(b),
    }
}

fn zsetop(ctx: &mut Ctx) -> Reply {
    let name = ctx.name;
    let store = name.ends_with("store");
    let op = &name[1..5];
    let first = if store { 2 } else { 1 };
    let nk = num::parse_i64(&ctx.args[first]).ok_or_else(|| err(crate::ctx::NOT_INT))?;
    if nk < 1 {
        return Err(Frame::error(format!(
            "ERR at least 1 input key is needed for '{name}' command"
        )));
    }
    let nk = nk as usize;
    if first + 1 + nk > ctx.args.len() {
        return Err(err(SYNTAX));
    }
    let keys = ctx.args[first + 1..first + 1 + nk].to_vec();
    let mut weights = vec![1.0; nk];
    let mut agg = Agg::Sum;
    let mut scores = false;
    let mut i = first + 1 + nk;
    while i < ctx.args.len() {
        let left = ctx.args.len() - i - 1;
        if op != "diff" && ctx.arg_is(i, "WEIGHTS") && left >= nk {
            for (j, w) in weights.iter_mut().enumerate() {
                *w = num::parse_f64(&ctx.args[i + 1 + j])
                    .ok_or_else(|| err("ERR weight value is not a float"))?;
            }
            i += 1 + nk;
        } else if op != "diff" && ctx.arg_is(i, "AGGREGATE") && left >= 1 {
            agg = match ctx.args[i + 1].to_ascii_uppercase().as_slice() {
                b"SUM" => Agg::Sum,
                b"MIN" => Agg::Min,
                b"MAX" => Agg::Max,
                _ => return Err(err(SYNTAX)),
            };
            i += 2;
        } else if !store && ctx.arg_is(i, "WITHSCORES") {
            scores = true;
            i += 1;
        } else {
            return Err(err(SYNTAX));
        }
    }
    let mut inputs = Vec::with_capacity(nk);
    for k in &keys {
        inputs.push(load_zset_like(ctx, k)?);
    }
    let weigh = |s: f64, w: f64| {
        let v = s * w;
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let mut acc: HashMap<Bytes, f64> = HashMap::new();
    match op {
        "unio" => {
            for (z, w) in inputs.iter().zip(&weights) {
                let Some(z) = z else { continue };
                for (m, s) in z.iter() {
                    let v = weigh(s, *w);
                    acc.entry(m.clone())
                        .and_modify(|a| *a = aggregate(*a, v, agg))
                        .or_insert(v);
                }
            }
        }
        "inte" => {
            if inputs.iter().all(|z| z.is_some()) {
                let zs: Vec<&ZSet> = inputs.iter().flatten().collect();
                for (m, s) in zs[0].iter() {
                    let mut v = weigh(s, weights[0]);
                    let mut all = true;
                    for (z, w) in zs.iter().zip(&weights).skip(1) {
                        match z.score(m) {
                            Some(s2) => v = aggregate(v, weigh(s2, *w), agg),
                            None => {
                                all = false;
                                break;
                            }
                        }
                    }
                    if all {
                        acc.insert(m.clone(), v);
                    }
                }
            }
        }
        _ => {
            if let Some(Some(z0)) = inputs.first() {
                for (m, s) in z0.iter() {
                    if !inputs[1..].iter().flatten().any(|z| z.score(m).is_some()) {
                        acc.insert(m.clone(), s);
                    }
                }
            }
        }
    }
    let mut out = ZSet::default();
    for (m, s) in acc {
        out.insert(m, s);
    }
    if store {
        let dst = ctx.args[1].clone();
        return Ok(store_zset(ctx, &dst, out));
    }
    let items: Vec<(Bytes, f64)> = out.iter().map(|(m, s)| (m.clone(), s)).collect();
    Ok(with_scores(ctx, items, scores))
}

fn zintercard(ctx: &mut Ctx) -> Reply {
    let n = ctx.arg_i64(1)?;
    if n < 1 {
        return Err(err(
            "ERR at least 1 input key is needed for 'zintercard' command",
        ));
    }
    let n = n as usize;
    if n > ctx.args.len() - 2 {
        return Err(err(SYNTAX));
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
    let mut inputs = Vec::new();
    for k in &keys {
        inputs.push(load_zset_like(ctx, k)?);
    }
    if inputs.iter().any(|z| z.is_none()) {
        return Ok(Frame::Integer(0));
    }
    let zs: Vec<ZSet> = inputs.into_iter().flatten().collect();
    let mut c = zs[0]
        .iter()
        .filter(|(m, _)| zs[1..].iter().all(|z| z.score(m).is_some()))
        .count();
    if limit > 0 {
        c = c.min(limit);
    }
    Ok(Frame::Integer(c as i64))
}

/// Pops `count` lowest (or highest) members.
fn pop_members(z: &mut ZSet, max: bool, count: usize) -> Vec<(Bytes, f64)> {
    let mut out = Vec::new();
    for _ in 0..count {
        let first = if max {
            z.order.iter().next_back().cloned()
        } else {
            z.order.iter().next().cloned()
        };
        let Some((Score(s), m)) = first else { break };
        z.remove(&m);
        out.push((m, s));
    }
    out
}

fn zpop(ctx: &mut Ctx) -> Reply {
    let max = ctx.name == "zpopmax";
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
    let Some(z) = ctx.zset_mut(key, false)? else {
        return Ok(Frame::Array(Vec::new()));
    };
    let popped = pop_members(z, max, count.unwrap_or(1));
    if !popped.is_empty() {
        ctx.notify(ZSET, ctx.name, key);
        ctx.modified(key);
    }
    // RESP3 nests pairs only when a count was given.
    if ctx.resp3() && count.is_some() {
        return Ok(Frame::Array(
            popped
                .into_iter()
                .map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), ctx.double(s)]))
                .collect(),
        ));
    }
    Ok(Frame::Array(
        popped
            .into_iter()
            .flat_map(|(m, s)| [Frame::Bulk(m), ctx.double(s)])
            .collect(),
    ))
}

fn parse_zmpop(ctx: &Ctx, first: usize) -> Result<(Vec<Bytes>, bool, usize), Frame> {
    let n = num::parse_i64(&ctx.args[first])
        .filter(|n| *n > 0)
        .ok_or_else(|| err("ERR numkeys should be greater than 0"))?;
    let n = n as usize;
    let where_i = first + 1 + n;
    if where_i >= ctx.args.len() {
        return Err(err(SYNTAX));
    }
    let keys = ctx.args[first + 1..where_i].to_vec();
    let max = if ctx.arg_is(where_i, "MAX") {
        true
    } else if ctx.arg_is(where_i, "MIN") {
        false
    } else {
        return Err(err(SYNTAX));
    };
    let mut count = 1;
    let mut i = where_i + 1;
    let mut seen = false;
    while i < ctx.args.len() {
        if !seen && ctx.arg_is(i, "COUNT") && i + 1 < ctx.args.len() {
            count = num::parse_i64(&ctx.args[i + 1])
                .filter(|c| *c > 0)
                .ok_or_else(|| err("ERR count should be greater than 0"))?
                as usize;
            seen = true;
            i += 2;
        } else {
            return Err(err(SYNTAX));
        }
    }
    Ok((keys, max, count))
}

/// Pops from the first non-empty sorted set; journals an explicit ZPOP.
fn mpop(ctx: &mut Ctx, keys: &[Bytes], max: bool, count: usize) -> Result<Option<Frame>, Frame> {
    for k in keys {
        let Some(z) = ctx.zset_mut(k, false)? else {
            continue;
        };
        let popped = pop_members(z, max, count);
        ctx.notify(ZSET, if max { "zpopmax" } else { "zpopmin" }, k);
        ctx.modified(k);
        ctx.propagate(vec![
            Bytes::from_static(if max { b"ZPOPMAX" } else { b"ZPOPMIN" }),
            k.clone(),
            Bytes::from(popped.len().to_string()),
        ]);
        let pairs = popped
            .into_iter()
            .map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), ctx.double(s)]))
            .collect();
        return Ok(Some(Frame::Array(vec![
            Frame::Bulk(k.clone()),
            Frame::Array(pairs),
        ])));
    }
    Ok(None)
}

fn zmpop(ctx: &mut Ctx) -> Reply {
    let (keys, max, count) = parse_zmpop(ctx, 1)?;
    Ok(mpop(ctx, &keys, max, count)?.unwrap_or_else(|| ctx.null_array()))
}

fn bzpop(ctx: &mut Ctx) -> Reply {
    let max = ctx.name == "bzpopmax";
    let n = ctx.args.len();
    let timeout = parse_timeout(ctx, n - 1)?;
    let keys = ctx.args[1..n - 1].to_vec();
    for k in &keys {
        let has = ctx.get_zset(k)?.is_some_and(|z| !z.is_empty());
        if !has || !ctx.may_serve(k) {
            continue;
        }
        let Some(z) = ctx.zset_mut(k, false)? else {
            continue;
        };
        let Some((m, s)) = pop_members(z, max, 1).pop() else {
            continue;
        };
        ctx.notify(ZSET, if max { "zpopmax" } else { "zpopmin" }, k);
        ctx.modified(k);
        ctx.propagate(vec![
            Bytes::from_static(if max { b"ZPOPMAX" } else { b"ZPOPMIN" }),
            k.clone(),
        ]);
        return Ok(Frame::Array(vec![
            Frame::Bulk(k.clone()),
            Frame::Bulk(m),
            ctx.double(s),
        ]));
    }
    let r = ctx.null_array();
    block(ctx, timeout, r, keys)
}

fn bzmpop(ctx: &mut Ctx) -> Reply {
    let timeout = parse_timeout(ctx, 1)?;
    let (keys, max, count) = parse_zmpop(ctx, 2)?;
    for k in &keys {
        ctx.get_zset(k)?;
    }
    let servable: Vec<Bytes> = keys.iter().filter(|k| ctx.may_serve(k)).cloned().collect();
    match mpop(ctx, &servable, max, count)? {
        Some(f) => Ok(f),
        None => {
            let r = ctx.null_array();
            block(ctx, timeout, r, keys)
        }
    }
}

fn zrandmember(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let count = if ctx.args.len() > 2 {
        Some(ctx.arg_i64(2)?)
    } else {
        None
    };
    let scores = if ctx.args.len() > 3 {
        if ctx.args.len() > 4 || !ctx.arg_is(3, "WITHSCORES") {
            return Err(err(SYNTAX));
        }
        true
    } else {
        false
    };
    let items: Vec<(Bytes, f64)> = ctx
        .get_zset(key)?
        .map(|z| z.iter().map(|(m, s)| (m.clone(), s)).collect())
        .unwrap_or_default();
    let Some(count) = count else {
        if items.is_empty() {
            return Ok(ctx.null());
        }
        let i = rand::thread_rng().gen_range(0..items.len());
        return Ok(Frame::Bulk(items[i].0.clone()));
    };
    if scores && count.unsigned_abs() > (i64::MAX as u64) / 2 {
        return Err(err("ERR value is out of range"));
    }
    crate::hashes::check_picks(count)?;
    let picked = random_picks(&items, count);
    Ok(with_scores(ctx, picked, scores))
}

fn zscan(ctx: &mut Ctx) -> Reply {
    let a = parse_scan(ctx, 2, false)?;
    let key = &ctx.args[1];
    let Some(z) = ctx.get_zset(key)?.cloned() else {
        return Ok(scan_reply(0, Vec::new()));
    };
    // Small sorted sets come back whole, in score order, as Redis does.
    let (page, next) = if Value::ZSet(Box::new(z.clone())).encoding() == "listpack" {
        (z.iter().map(|(m, s)| (m.clone(), s)).collect::<Vec<_>>(), 0)
    } else {
        scan_page(
            z.iter()
                .map(|(m, s)| (scan_pos(m), (m.clone(), s)))
                .collect(),
            a.cursor,
            a.count,
        )
    };
    let mut out = Vec::new();
    for (m, s) in page {
        if a.pattern
            .as_ref()
            .is_none_or(|p| crate::glob_match(p, &m, false))
        {
            out.push(Frame::Bulk(m));
            out.push(Frame::Bulk(Bytes::from(num::fmt_g17(s))));
        }
    }
    Ok(scan_reply(next, out))
}
