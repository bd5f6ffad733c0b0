//! String commands: GET/SET and friends, counters, ranges and bits.

use bytes::{Bytes, BytesMut};
use resp::Frame;

use crate::ctx::{err, owned, Ctx, Handler, Reply, NOT_FLOAT, NOT_INT, SYNTAX, WRONGTYPE};
use crate::num;
use crate::pubsub::class::{GENERIC, STRING};
use crate::value::{StrEnc, Value};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("get", get),
    ("set", set),
    ("setnx", setnx),
    ("setex", setex),
    ("psetex", psetex),
    ("getex", getex),
    ("getdel", getdel),
    ("getset", getset),
    ("mget", mget),
    ("mset", mset),
    ("msetnx", msetnx),
    ("incr", incr),
    ("decr", decr),
    ("incrby", incrby),
    ("decrby", decrby),
    ("incrbyfloat", incrbyfloat),
    ("append", append),
    ("strlen", strlen),
    ("getrange", getrange),
    ("substr", getrange),
    ("setrange", setrange),
    ("setbit", setbit),
    ("getbit", getbit),
    ("bitcount", bitcount),
    ("bitpos", bitpos),
    ("bitop", bitop),
    ("bitfield", bitfield),
    ("bitfield_ro", bitfield_ro),
    ("lcs", lcs),
];

fn bulk_or_null(ctx: &Ctx, v: Option<Bytes>) -> Frame {
    match v {
        Some(b) => Frame::Bulk(b),
        None => ctx.null(),
    }
}

fn get(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let v = ctx.get_str(key)?;
    Ok(bulk_or_null(ctx, v))
}

/// Parsed expiry option: absolute Unix ms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ttl {
    Keep,
    Persist,
    At(u64),
}

/// Turns `EX/PX/EXAT/PXAT n` into an absolute time, with Redis's checks.
fn expire_at(ctx: &Ctx, unit: &[u8], i: usize, cmd: &str) -> Result<u64, Frame> {
    let n = ctx.arg_i64(i)?;
    let invalid = || Frame::error(format!("ERR invalid expire time in '{cmd}' command"));
    if n <= 0 {
        return Err(invalid());
    }
    let unit = unit.to_ascii_uppercase();
    let ms = match unit.as_slice() {
        b"EX" | b"EXAT" => n.checked_mul(1000).ok_or_else(invalid)?,
        _ => n,
    };
    let at = if unit == b"EX" || unit == b"PX" {
        ms.checked_add(ctx.now as i64).ok_or_else(invalid)?
    } else {
        ms
    };
    Ok(at as u64)
}

fn pxat(at: u64) -> [Bytes; 2] {
    [Bytes::from_static(b"PXAT"), Bytes::from(at.to_string())]
}

fn set(ctx: &mut Ctx) -> Reply {
    let (mut nx, mut xx, mut get_old) = (false, false, false);
    let mut ttl: Option<Ttl> = None;
    let mut i = 3;
    while i < ctx.args.len() {
        let a = ctx.args[i].to_ascii_uppercase();
        let has_next = i + 1 < ctx.args.len();
        match a.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get_old = true,
            b"KEEPTTL" if ttl.is_none() => ttl = Some(Ttl::Keep),
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if ttl.is_none() && has_next => {
                ttl = Some(Ttl::At(expire_at(ctx, &a, i + 1, "set")?));
                i += 1;
            }
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    let key = &ctx.args[1];
    let old = if get_old {
        match ctx.lookup_read(key) {
            None => None,
            Some(Value::Str(s)) => Some(s.clone()),
            Some(_) => return Err(err(WRONGTYPE)),
        }
    } else {
        None
    };
    // Only NX and XX need to know beforehand (set_value looks it up).
    let exists = (nx || xx) && ctx.peek(key).is_some();
    if (nx && exists) || (xx && !exists) {
        return Ok(if get_old {
            bulk_or_null(ctx, old)
        } else {
            ctx.null()
        });
    }
    // Copies of short arguments for the store and the journal's entry
    // (see `owned`): the command's own buffers are then dropped unshared.
    let val = &ctx.args[2];
    ctx.set_value(key, Value::Str(owned(val)), ttl == Some(Ttl::Keep));
    ctx.notify(STRING, "set", key);
    let mut effect = vec![Bytes::from_static(b"SET"), owned(key), owned(val)];
    match ttl {
        Some(Ttl::At(at)) => {
            ctx.db().set_expire(key, Some(at));
            ctx.notify(GENERIC, "expire", key);
            effect.extend(pxat(at));
        }
        Some(Ttl::Keep) => effect.push(Bytes::from_static(b"KEEPTTL")),
        _ => {}
    }
    ctx.propagate(effect);
    Ok(if get_old {
        bulk_or_null(ctx, old)
    } else {
        Frame::simple("OK")
    })
}

fn setnx(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    if ctx.peek(key).is_some() {
        return Ok(Frame::Integer(0));
    }
    let v = ctx.args[2].clone();
    ctx.set_value(key, Value::Str(v.clone()), false);
    ctx.notify(STRING, "set", key);
    ctx.propagate(vec![Bytes::from_static(b"SET"), key.clone(), v]);
    Ok(Frame::Integer(1))
}

fn setex_generic(ctx: &mut Ctx, unit: &[u8], cmd: &str) -> Reply {
    let at = expire_at(ctx, unit, 2, cmd)?;
    let key = &ctx.args[1];
    let v = ctx.args[3].clone();
    ctx.set_value(key, Value::Str(v.clone()), false);
    ctx.notify(STRING, "set", key);
    ctx.db().set_expire(key, Some(at));
    ctx.notify(GENERIC, "expire", key);
    let mut e = vec![Bytes::from_static(b"SET"), key.clone(), v];
    e.extend(pxat(at));
    ctx.propagate(e);
    Ok(Frame::simple("OK"))
}

fn setex(ctx: &mut Ctx) -> Reply {
    setex_generic(ctx, b"EX", "setex")
}

fn psetex(ctx: &mut Ctx) -> Reply {
    setex_generic(ctx, b"PX", "psetex")
}

fn getex(ctx: &mut Ctx) -> Reply {
    let mut ttl: Option<Ttl> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let a = ctx.args[i].to_ascii_uppercase();
        let has_next = i + 1 < ctx.args.len();
        match a.as_slice() {
            b"PERSIST" if ttl.is_none() => ttl = Some(Ttl::Persist),
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if ttl.is_none() && has_next => {
                ttl = Some(Ttl::At(expire_at(ctx, &a, i + 1, "getex")?));
                i += 1;
            }
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    let key = &ctx.args[1];
    let Some(v) = ctx.get_str(key)? else {
        return Ok(ctx.null());
    };
    match ttl {
        Some(Ttl::At(at)) if at <= ctx.now => {
            ctx.delete(key);
            ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
        }
        Some(Ttl::At(at)) => {
            ctx.db().set_expire(key, Some(at));
            ctx.notify(GENERIC, "expire", key);
            ctx.modified(key);
            ctx.propagate(vec![
                Bytes::from_static(b"PEXPIREAT"),
                key.clone(),
                Bytes::from(at.to_string()),
            ]);
        }
        Some(Ttl::Persist) if ctx.peek(key).is_some_and(|e| e.expire_at.is_some()) => {
            ctx.db().set_expire(key, None);
            ctx.notify(GENERIC, "persist", key);
            ctx.modified(key);
            ctx.propagate(vec![Bytes::from_static(b"PERSIST"), key.clone()]);
        }
        _ => {}
    }
    Ok(Frame::Bulk(v))
}

fn getdel(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let v = ctx.get_str(key)?;
    if v.is_some() {
        ctx.delete(key);
        ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
    }
    Ok(bulk_or_null(ctx, v))
}

fn getset(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let old = ctx.get_str(key)?;
    let v = ctx.args[2].clone();
    ctx.set_value(key, Value::Str(v.clone()), false);
    ctx.notify(STRING, "set", key);
    ctx.propagate(vec![Bytes::from_static(b"SET"), key.clone(), v]);
    Ok(bulk_or_null(ctx, old))
}

fn mget(ctx: &mut Ctx) -> Reply {
    let keys = &ctx.args[1..];
    if ctx.wire_replies() {
        let resp3 = ctx.resp3();
        let mut out = resp::frame::Wire::aggregate(b'*', keys.len(), keys.len() * 16);
        for key in keys {
            match ctx.lookup_read(key) {
                Some(Value::Str(s)) => out.bulk(s),
                _ => out.null(resp3),
            }
        }
        return Ok(out.finish());
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let v = match ctx.lookup_read(key) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        out.push(bulk_or_null(ctx, v));
    }
    Ok(Frame::Array(out))
}

fn mset(ctx: &mut Ctx) -> Reply {
    if ctx.args.len().is_multiple_of(2) {
        return Err(Frame::error(format!(
            "ERR wrong number of arguments for '{}' command",
            ctx.name
        )));
    }
    for i in (1..ctx.args.len()).step_by(2) {
        let (k, v) = (&ctx.args[i], owned(&ctx.args[i + 1]));
        ctx.set_value(k, Value::Str(v), false);
        ctx.notify(STRING, "set", k);
    }
    Ok(Frame::simple("OK"))
}

fn msetnx(ctx: &mut Ctx) -> Reply {
    if ctx.args.len().is_multiple_of(2) {
        return Err(Frame::error(format!(
            "ERR wrong number of arguments for '{}' command",
            ctx.name
        )));
    }
    for i in (1..ctx.args.len()).step_by(2) {
        let k = ctx.args[i].clone();
        if ctx.peek(&k).is_some() {
            return Ok(Frame::Integer(0));
        }
    }
    mset(ctx)?;
    let mut e = ctx.args.to_vec();
    e[0] = Bytes::from_static(b"MSET");
    ctx.propagate(e);
    Ok(Frame::Integer(1))
}

/// Adds `by` to the integer at key, keeping its TTL.
fn incr_generic(ctx: &mut Ctx, by: i64) -> Reply {
    let key = &ctx.args[1];
    // One lookup: the value is read and replaced at the same index.
    let live = ctx.live_index(key);
    let cur = match live.map(|i| ctx.accessed(i)) {
        None => 0,
        Some(Value::Str(s)) => num::parse_i64(s).ok_or_else(|| err(NOT_INT))?,
        Some(_) => return Err(err(WRONGTYPE)),
    };
    let new = cur
        .checked_add(by)
        .ok_or_else(|| err("ERR increment or decrement would overflow"))?;
    ctx.set_value_at(live, key, Value::Str(num::fmt_i64(new)), true);
    ctx.notify(STRING, "incrby", key);
    Ok(Frame::Integer(new))
}

fn incr(ctx: &mut Ctx) -> Reply {
    incr_generic(ctx, 1)
}

fn decr(ctx: &mut Ctx) -> Reply {
    incr_generic(ctx, -1)
}

fn incrby(ctx: &mut Ctx) -> Reply {
    let by = ctx.arg_i64(2)?;
    incr_generic(ctx, by)
}

fn decrby(ctx: &mut Ctx) -> Reply {
    let by = ctx.arg_i64(2)?;
    if by == i64::MIN {
        return Err(err("ERR decrement would overflow"));
    }
    incr_generic(ctx, -by)
}

fn incrbyfloat(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    // Redis checks the key's type, then its value, then the increment.
    let cur = match ctx.lookup(key) {
        None => 0.0,
        Some(Value::Str(s)) => num::parse_f64(s).ok_or_else(|| err(NOT_FLOAT))?,
        Some(_) => return Err(err(WRONGTYPE)),
    };
    let by = ctx.arg_f64(2)?;
    let new = cur + by;
    if !new.is_finite() {
        return Err(err("ERR increment would produce NaN or Infinity"));
    }
    let text = Bytes::from(num::fmt_human(new));
    ctx.set_value(key, Value::Str(text.clone()), true);
    ctx.mark_str_enc(key, StrEnc::Embstr);
    ctx.notify(STRING, "incrbyfloat", key);
    // The float sum depends on rounding: journal the result, not the step.
    ctx.propagate(vec![
        Bytes::from_static(b"SET"),
        key.clone(),
        text.clone(),
        Bytes::from_static(b"KEEPTTL"),
    ]);
    Ok(Frame::Bulk(text))
}

fn check_size(ctx: &Ctx, len: u64) -> Result<(), Frame> {
    if len > ctx.inner.config.proto_max_bulk_len {
        Err(err(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ))
    } else {
        Ok(())
    }
}

fn append(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let add = ctx.args[2].clone();
    let cur = match ctx.lookup(key) {
        None => Bytes::new(),
        Some(Value::Str(s)) => s.clone(),
        Some(_) => return Err(err(WRONGTYPE)),
    };
    check_size(ctx, (cur.len() + add.len()) as u64)?;
    let mut b = BytesMut::with_capacity(cur.len() + add.len());
    b.extend_from_slice(&cur);
    b.extend_from_slice(&add);
    let len = b.len();
    let existed = !cur.is_empty() || ctx.peek(key).is_some();
    ctx.set_value(key, Value::Str(b.freeze()), true);
    if existed {
        ctx.mark_str_enc(key, StrEnc::Raw);
    }
    ctx.notify(STRING, "append", key);
    Ok(Frame::Integer(len as i64))
}

fn strlen(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        ctx.get_str(key)?.map_or(0, |s| s.len() as i64),
    ))
}

/// Clamps Redis-style inclusive [start, end] (negatives from the end) to a
/// length; None for an empty range.
/// Lists and sorted sets (LRANGE, ZRANGE…): an end still negative after
/// adding the length means an empty range.
pub(crate) fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    clamp(start, end, len, false)
}

/// GETRANGE's variant: a negative end is clamped to 0 instead.
fn clamp_str_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    clamp(start, end, len, true)
}

fn clamp(start: i64, end: i64, len: usize, clamp_end: bool) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        if !clamp_end {
            return None;
        }
        e = 0;
    }
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        None
    } else {
        Some((s as usize, e as usize))
    }
}

fn getrange(ctx: &mut Ctx) -> Reply {
    let start = ctx.arg_i64(2)?;
    let end = ctx.arg_i64(3)?;
    let key = &ctx.args[1];
    let s = ctx.get_str(key)?.unwrap_or_default();
    // Redis: both negative and start > end is empty even when clamping would
    // not make it so.
    if start < 0 && end < 0 && start > end {
        return Ok(Frame::Bulk(Bytes::new()));
    }
    Ok(Frame::Bulk(match clamp_str_range(start, end, s.len()) {
        Some((a, b)) => s.slice(a..=b),
        None => Bytes::new(),
    }))
}

fn setrange(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let off = ctx.arg_i64(2)?;
    if off < 0 {
        return Err(err("ERR offset is out of range"));
    }
    let val = ctx.args[3].clone();
    let cur = match ctx.lookup(key) {
        None => None,
        Some(Value::Str(s)) => Some(s.clone()),
        Some(_) => return Err(err(WRONGTYPE)),
    };
    let cur_len = cur.as_ref().map_or(0, |c| c.len());
    if val.is_empty() {
        return Ok(Frame::Integer(cur_len as i64));
    }
    check_size(ctx, off as u64 + val.len() as u64)?;
    let off = off as usize;
    let mut b = BytesMut::from(&cur.unwrap_or_default()[..]);
    if b.len() < off + val.len() {
        b.resize(off + val.len(), 0);
    }
    b[off..off + val.len()].copy_from_slice(&val);
    let len = b.len();
    ctx.set_value(key, Value::Str(b.freeze()), true);
    ctx.mark_str_enc(key, StrEnc::Raw);
    ctx.notify(STRING, "setrange", key);
    Ok(Frame::Integer(len as i64))
}

fn setbit(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let off = num::parse_i64(&ctx.args[2])
        .filter(|o| *o >= 0 && (*o as u64 >> 3) < ctx.inner.config.proto_max_bulk_len)
        .ok_or_else(|| err("ERR bit offset is not an integer or out of range"))?
        as usize;
    let bit = match &ctx.args[3][..] {
        b"0" => 0u8,
        b"1" => 1u8,
        _ => return Err(err("ERR bit is not an integer or out of range")),
    };
    let cur = match ctx.lookup(key) {
        None => Bytes::new(),
        Some(Value::Str(s)) => s.clone(),
        Some(_) => return Err(err(WRONGTYPE)),
    };
    let byte = off >> 3;
    let mut b = BytesMut::from(&cur[..]);
    if b.len() <= byte {
        b.resize(byte + 1, 0);
    }
    let mask = 1u8 << (7 - (off & 7));
    let old = (b[byte] & mask != 0) as i64;
    if bit == 1 {
        b[byte] |= mask;
    } else {
        b[byte] &= !mask;
    }
    ctx.set_value(key, Value::Str(b.freeze()), true);
    ctx.mark_str_enc(key, StrEnc::Raw);
    ctx.notify(STRING, "setbit", key);
    Ok(Frame::Integer(old))
}

fn getbit(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let off = num::parse_i64(&ctx.args[2])
        .filter(|o| *o >= 0 && (*o as u64 >> 3) < ctx.inner.config.proto_max_bulk_len)
        .ok_or_else(|| err("ERR bit offset is not an integer or out of range"))?
        as usize;
    let s = ctx.get_str(key)?.unwrap_or_default();
    let byte = off >> 3;
    Ok(Frame::Integer(match s.get(byte) {
        Some(b) => ((b >> (7 - (off & 7))) & 1) as i64,
        None => 0,
    }))
}

/// Parses `[start end [BYTE|BIT]]` from index `i`; returns the bit range.
fn bit_range(
    ctx: &Ctx,
    i: usize,
    len: usize,
    need_end: bool,
) -> Result<Option<(i64, i64, bool)>, Frame> {
    let n = ctx.args.len();
    if n <= i {
        return Ok(None);
    }
    let start = ctx.arg_i64(i)?;
    let (end, explicit_end) = if n > i + 1 {
        (ctx.arg_i64(i + 1)?, true)
    } else if need_end {
        return Err(err(SYNTAX));
    } else {
        (-1, false)
    };
    let bit_mode = if n > i + 2 {
        if n > i + 3 {
            return Err(err(SYNTAX));
        }
        if ctx.arg_is(i + 2, "BIT") {
            true
        } else if ctx.arg_is(i + 2, "BYTE") {
            false
        } else {
            return Err(err(SYNTAX));
        }
    } else {
        false
    };
    let total = if bit_mode { len as i64 * 8 } else { len as i64 };
    let _ = explicit_end;
    let mut s = if start < 0 { total + start } else { start };
    let mut e = if end < 0 { total + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        e = 0;
    }
    if e >= total {
        e = total - 1;
    }
    Ok(Some((s, e, bit_mode)))
}

fn bit_at(s: &[u8], i: i64) -> u8 {
    (s[(i >> 3) as usize] >> (7 - (i & 7))) & 1
}

fn bitcount(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let n = ctx.args.len();
    if n == 3 {
        return Err(err(SYNTAX));
    }
    // Arguments are validated before the key is read, as in Redis.
    if n > 2 {
        ctx.arg_i64(2)?;
        ctx.arg_i64(3)?;
    }
    let s = ctx.get_str(key)?.unwrap_or_default();
    let Some((a, b, bit_mode)) = bit_range(ctx, 2, s.len(), true)? else {
        return Ok(Frame::Integer(
            s.iter().map(|b| b.count_ones() as i64).sum(),
        ));
    };
    if s.is_empty() || a > b {
        return Ok(Frame::Integer(0));
    }
    let count = if bit_mode {
        (a..=b).map(|i| bit_at(&s, i) as i64).sum()
    } else {
        s[a as usize..=b as usize]
            .iter()
            .map(|b| b.count_ones() as i64)
            .sum()
    };
    Ok(Frame::Integer(count))
}

fn bitpos(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let bit = match &ctx.args[2][..] {
        b"0" => 0u8,
        b"1" => 1u8,
        _ => {
            return Err(if num::parse_i64(&ctx.args[2]).is_some() {
                err("ERR The bit argument must be 1 or 0.")
            } else {
                err(NOT_INT)
            })
        }
    };
    for i in 3..ctx.args.len().min(5) {
        ctx.arg_i64(i)?;
    }
    let end_given = ctx.args.len() > 4;
    let s = ctx.get_str(key)?;
    let Some(s) = s else {
        return Ok(Frame::Integer(if bit == 1 { -1 } else { 0 }));
    };
    let (a, b, bit_mode) = match bit_range(ctx, 3, s.len(), false)? {
        Some(r) => r,
        None => (0, s.len() as i64 - 1, false),
    };
    if a > b || s.is_empty() {
        return Ok(Frame::Integer(-1));
    }
    let (first, last) = if bit_mode { (a, b) } else { (a * 8, b * 8 + 7) };
    for i in first..=last {
        if bit_at(&s, i) == bit {
            return Ok(Frame::Integer(i));
        }
    }
    // Looking for a clear bit with no explicit end: the string is treated
    // as padded with zeros on the right.
    if bit == 0 && !end_given {
        return Ok(Frame::Integer(last + 1));
    }
    Ok(Frame::Integer(-1))
}

/// BITOP AND|OR|XOR|NOT dest key…: the result is as long as the longest
/// source (missing bytes count as zero).
fn bitop(ctx: &mut Ctx) -> Reply {
    let op = ctx.args[1].to_ascii_uppercase();
    if !matches!(op.as_slice(), b"AND" | b"OR" | b"XOR" | b"NOT") {
        return Err(err(SYNTAX));
    }
    if op == b"NOT" && ctx.args.len() != 4 {
        return Err(err(
            "ERR BITOP NOT must be called with a single source key.",
        ));
    }
    let dst = ctx.args[2].clone();
    let mut srcs = Vec::new();
    for i in 3..ctx.args.len() {
        let k = ctx.args[i].clone();
        srcs.push(match ctx.lookup(&k) {
            None => Bytes::new(),
            Some(Value::Str(s)) => s.clone(),
            Some(_) => return Err(err(WRONGTYPE)),
        });
    }
    let len = srcs.iter().map(|s| s.len()).max().unwrap_or(0);
    let byte = |s: &Bytes, i: usize| s.get(i).copied().unwrap_or(0);
    let out: Vec<u8> = (0..len)
        .map(|i| match op.as_slice() {
            b"NOT" => !byte(&srcs[0], i),
            b"AND" => srcs.iter().fold(0xff, |a, s| a & byte(s, i)),
            b"OR" => srcs.iter().fold(0, |a, s| a | byte(s, i)),
            _ => srcs.iter().fold(0, |a, s| a ^ byte(s, i)),
        })
        .collect();
    if out.is_empty() {
        ctx.delete(&dst);
    } else {
        ctx.set_value(&dst, Value::Str(Bytes::from(out)), false);
        ctx.mark_str_enc(&dst, StrEnc::Raw);
        ctx.notify(STRING, "set", &dst);
    }
    Ok(Frame::Integer(len as i64))
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]: the longest
/// common subsequence, its length, or its matching ranges, found by
/// walking the DP table back from the end as Redis does (so ranges come
/// last-first, as in Redis's reply).
fn lcs(ctx: &mut Ctx) -> Reply {
    let (mut want_len, mut want_idx, mut with_len) = (false, false, false);
    let mut min_len: i64 = 0;
    let mut i = 3;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "LEN") {
            want_len = true;
        } else if ctx.arg_is(i, "IDX") {
            want_idx = true;
        } else if ctx.arg_is(i, "WITHMATCHLEN") {
            with_len = true;
        } else if ctx.arg_is(i, "MINMATCHLEN") && i + 1 < ctx.args.len() {
            min_len = ctx.arg_i64(i + 1)?.max(0);
            i += 1;
        } else {
            return Err(err(SYNTAX));
        }
        i += 1;
    }
    let mut strs = Vec::new();
    for k in 1..3 {
        let key = ctx.args[k].clone();
        strs.push(match ctx.lookup(&key) {
            None => Bytes::new(),
            Some(Value::Str(s)) => s.clone(),
            Some(_) => return Err(err("ERR The specified keys must contain string values")),
        });
    }
    if want_len && want_idx {
        return Err(err(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    let (a, b) = (&strs[0], &strs[1]);
    let (n, m) = (a.len(), b.len());
    // (n+1) x (m+1) table of LCS lengths of prefixes.
    let mut dp = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in 1..=n {
        for j in 1..=m {
            dp[at(i, j)] = if a[i - 1] == b[j - 1] {
                dp[at(i - 1, j - 1)] + 1
            } else {
                dp[at(i - 1, j)].max(dp[at(i, j - 1)])
            };
        }
    }
    let total = dp[at(n, m)] as usize;
    if want_len {
        return Ok(Frame::Integer(total as i64));
    }
    let mut result = vec![0u8; total];
    let mut idx = total;
    let mut matches = Vec::new();
    let (mut i, mut j) = (n, m);
    // The current range, as (a_start, a_end, b_start, b_end); None between
    // ranges.
    let mut range: Option<(usize, usize, usize, usize)> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[idx - 1] = a[i - 1];
            match range {
                None => range = Some((i - 1, i - 1, j - 1, j - 1)),
                Some((as_, ae, bs, be)) if as_ == i && bs == j => {
                    range = Some((as_ - 1, ae, bs - 1, be))
                }
                Some(_) => emit = true,
            }
            if range.is_some_and(|(as_, _, bs, _)| as_ == 0 || bs == 0) {
                emit = true;
            }
            idx -= 1;
            i -= 1;
            j -= 1;
        } else {
            if dp[at(i - 1, j)] > dp[at(i, j - 1)] {
                i -= 1;
            } else {
                j -= 1;
            }
            if range.is_some() {
                emit = true;
            }
        }
        if emit {
            if let Some((as_, ae, bs, be)) = range.take() {
                let len = ae - as_ + 1;
                if min_len == 0 || len as i64 >= min_len {
                    let mut m = vec![
                        Frame::Array(vec![Frame::Integer(as_ as i64), Frame::Integer(ae as i64)]),
                        Frame::Array(vec![Frame::Integer(bs as i64), Frame::Integer(be as i64)]),
                    ];
                    if with_len {
                        m.push(Frame::Integer(len as i64));
                    }
                    matches.push(Frame::Array(m));
                }
            }
        }
    }
    if want_idx {
        return Ok(ctx.map(vec![
            (Frame::bulk("matches"), Frame::Array(matches)),
            (Frame::bulk("len"), Frame::Integer(total as i64)),
        ]));
    }
    Ok(Frame::Bulk(Bytes::from(result)))
}

/// One parsed `BITFIELD` operation.
struct FieldOp {
    kind: FieldKind,
    offset: u64,
    bits: u32,
    signed: bool,
    /// The value of `SET`, the increment of `INCRBY`.
    arg: i64,
    overflow: Overflow,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Get,
    Set,
    Incrby,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

fn bitfield(ctx: &mut Ctx) -> Reply {
    bitfield_generic(ctx, false)
}

fn bitfield_ro(ctx: &mut Ctx) -> Reply {
    bitfield_generic(ctx, true)
}

/// `BITFIELD` as Redis 7.0 runs it: every operation is parsed (and the
/// first bad one refuses the command) before the key is read; a write
/// grows the string to the farthest bit written, even when `OVERFLOW FAIL`
/// then writes nothing.
fn bitfield_generic(ctx: &mut Ctx, read_only: bool) -> Reply {
    const BAD_TYPE: &str =
        "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
    const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
    let max_bytes = ctx.inner.config.proto_max_bulk_len;
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut highest: Option<u64> = None;
    let n = ctx.args.len();
    let mut j = 2;
    while j < n {
        let rem = n - j - 1;
        let kind = if ctx.arg_is(j, "GET") && rem >= 2 {
            FieldKind::Get
        } else if ctx.arg_is(j, "SET") && rem >= 3 {
            FieldKind::Set
        } else if ctx.arg_is(j, "INCRBY") && rem >= 3 {
            FieldKind::Incrby
        } else if ctx.arg_is(j, "OVERFLOW") && rem >= 1 {
            overflow = if ctx.arg_is(j + 1, "WRAP") {
                Overflow::Wrap
            } else if ctx.arg_is(j + 1, "SAT") {
                Overflow::Sat
            } else if ctx.arg_is(j + 1, "FAIL") {
                Overflow::Fail
            } else {
                return Err(err("ERR Invalid OVERFLOW type specified"));
            };
            j += 2;
            continue;
        } else {
            return Err(err(SYNTAX));
        };
        let ty = &ctx.args[j + 1];
        let signed = match ty.first() {
            Some(b'i') => true,
            Some(b'u') => false,
            _ => return Err(err(BAD_TYPE)),
        };
        let bits = num::parse_i64(&ty[1..])
            .filter(|b| *b >= 1 && *b <= if signed { 64 } else { 63 })
            .ok_or_else(|| err(BAD_TYPE))? as u32;
        let off_arg = &ctx.args[j + 2];
        let (hash, digits) = match off_arg.first() {
            Some(b'#') => (true, &off_arg[1..]),
            _ => (false, &off_arg[..]),
        };
        let mut offset = num::parse_i64(digits).ok_or_else(|| err(BAD_OFFSET))?;
        if hash {
            offset = offset.wrapping_mul(bits as i64);
        }
        if offset < 0 || (offset as u64 >> 3) >= max_bytes {
            return Err(err(BAD_OFFSET));
        }
        let offset = offset as u64;
        let mut arg = 0;
        if kind != FieldKind::Get {
            let last = offset + bits as u64 - 1;
            highest = Some(highest.map_or(last, |h| h.max(last)));
            arg = ctx.arg_i64(j + 3)?;
        }
        ops.push(FieldOp {
            kind,
            offset,
            bits,
            signed,
            arg,
            overflow,
        });
        j += if kind == FieldKind::Get { 3 } else { 4 };
    }
    let key = &ctx.args[1];
    let Some(highest) = highest else {
        // Only reads: a missing key reads as zeros.
        let s = ctx.get_str(key)?.unwrap_or_default();
        let out = ops
            .iter()
            .map(|op| Frame::Integer(field_get(&s, op)))
            .collect();
        return Ok(Frame::Array(out));
    };
    if read_only {
        return Err(err("ERR BITFIELD_RO only supports the GET subcommand"));
    }
    let (mut buf, existed) = match ctx.lookup(key) {
        None => (BytesMut::new(), false),
        Some(Value::Str(s)) => (BytesMut::from(&s[..]), true),
        Some(_) => return Err(err(WRONGTYPE)),
    };
    let need = (highest >> 3) as usize + 1;
    let grown = buf.len() < need;
    if grown {
        buf.resize(need, 0);
    }
    let mut changes = 0;
    let mut out = Vec::with_capacity(ops.len());
    for op in &ops {
        if op.kind == FieldKind::Get {
            out.push(Frame::Integer(field_get(&buf, op)));
            continue;
        }
        let old = read_bits(&buf, op.offset, op.bits);
        let (new, reply, overflowed) = if op.signed {
            let oldv = sign_extend(old, op.bits);
            let (value, incr) = match op.kind {
                FieldKind::Incrby => (oldv, op.arg),
                _ => (op.arg, 0),
            };
            let (over, wrapped) = signed_overflow(value, incr, op.bits, op.overflow);
            let newv = if over {
                wrapped
            } else {
                value.wrapping_add(incr)
            };
            let reply = if op.kind == FieldKind::Incrby {
                newv
            } else {
                oldv
            };
            (newv as u64, reply, over)
        } else {
            let (value, incr) = match op.kind {
                FieldKind::Incrby => (old, op.arg),
                _ => (op.arg as u64, 0),
            };
            let (over, wrapped) = unsigned_overflow(value, incr, op.bits, op.overflow);
            let newv = if over {
                wrapped
            } else {
                value.wrapping_add(incr as u64)
            };
            let reply = if op.kind == FieldKind::Incrby {
                newv
            } else {
                old
            };
            (newv, reply as i64, over)
        };
        if overflowed && op.overflow == Overflow::Fail {
            out.push(ctx.null());
            continue;
        }
        out.push(Frame::Integer(reply));
        write_bits(&mut buf, op.offset, op.bits, new);
        if grown || !existed || read_bits(&buf, op.offset, op.bits) != old {
            changes += 1;
        }
    }
    if grown || !existed || changes > 0 {
        ctx.set_value(key, Value::Str(buf.freeze()), true);
        ctx.mark_str_enc(key, StrEnc::Raw);
    }
    if changes > 0 {
        ctx.notify(STRING, "setbit", key);
    }
    Ok(Frame::Array(out))
}

/// `GET` of a field: bits past the end of the string read as zeros.
fn field_get(s: &[u8], op: &FieldOp) -> i64 {
    let v = read_bits(s, op.offset, op.bits);
    if op.signed {
        sign_extend(v, op.bits)
    } else {
        v as i64
    }
}

/// `bits` bits from bit `offset`, most significant first.
fn read_bits(s: &[u8], offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for i in 0..bits as u64 {
        let at = offset + i;
        let byte = s.get((at >> 3) as usize).copied().unwrap_or(0);
        v = (v << 1) | ((byte >> (7 - (at & 7))) & 1) as u64;
    }
    v
}

fn write_bits(s: &mut [u8], offset: u64, bits: u32, v: u64) {
    for i in 0..bits as u64 {
        let at = offset + i;
        let bit = (v >> (bits as u64 - 1 - i)) & 1;
        let mask = 1u8 << (7 - (at & 7));
        let byte = &mut s[(at >> 3) as usize];
        if bit == 1 {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

fn sign_extend(v: u64, bits: u32) -> i64 {
    if bits < 64 && v & (1 << (bits - 1)) != 0 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    }
}

/// Whether `value + incr` leaves a `bits`-wide unsigned field, and the
/// value `overflow` makes of it (Redis's `checkUnsignedBitfieldOverflow`).
fn unsigned_overflow(value: u64, incr: i64, bits: u32, overflow: Overflow) -> (bool, u64) {
    let max = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let maxincr = max.wrapping_sub(value) as i64;
    let minincr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & !(u64::MAX.checked_shl(bits).unwrap_or(0));
    if value > max || (incr > 0 && incr > maxincr) {
        return match overflow {
            Overflow::Wrap => (true, wrap()),
            Overflow::Sat => (true, max),
            Overflow::Fail => (true, 0),
        };
    }
    if incr < 0 && incr < minincr {
        return match overflow {
            Overflow::Wrap => (true, wrap()),
            Overflow::Sat => (true, 0),
            Overflow::Fail => (true, 0),
        };
    }
    (false, 0)
}

/// The signed counterpart (Redis's `checkSignedBitfieldOverflow`).
fn signed_overflow(value: i64, incr: i64, bits: u32, overflow: Overflow) -> (bool, i64) {
    let max = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let maxincr = (max as u64).wrapping_sub(value as u64) as i64;
    let minincr = min.wrapping_sub(value);
    let wrap = || {
        let c = (value as u64).wrapping_add(incr as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if c & (1u64 << (bits - 1)) != 0 {
                (c | mask) as i64
            } else {
                (c & !mask) as i64
            }
        } else {
            c as i64
        }
    };
    if value > max || (bits != 64 && incr > maxincr) || (value >= 0 && incr > 0 && incr > maxincr) {
        return match overflow {
            Overflow::Wrap => (true, wrap()),
            Overflow::Sat => (true, max),
            Overflow::Fail => (true, 0),
        };
    }
    if value < min || (bits != 64 && incr < minincr) || (value < 0 && incr < 0 && incr < minincr) {
        return match overflow {
            Overflow::Wrap => (true, wrap()),
            Overflow::Sat => (true, min),
            Overflow::Fail => (true, 0),
        };
    }
    (false, 0)
}
