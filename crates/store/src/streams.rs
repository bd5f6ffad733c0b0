//! Stream commands (XADD, XRANGE, XREAD, consumer groups, XINFO …), reply
//! for reply as Redis 7.0's `t_stream.c`.
//!
//! Effects are deterministic, as Redis propagates them: XADD is journaled
//! with the ID it generated and an approximate trim as the exact trim it
//! turned out to be; XREADGROUP, XCLAIM and XAUTOCLAIM are journaled as
//! `XCLAIM … TIME RETRYCOUNT FORCE JUSTID LASTID` per pending entry they
//! touched plus `XGROUP CREATECONSUMER` / `XGROUP SETID … ENTRIESREAD` for
//! consumers and group positions, so replaying them rebuilds the same
//! groups and pending lists.

use bytes::Bytes;
use resp::Frame;

use crate::ctx::{err, Block, Ctx, Handler, Reply, NOT_INT, NO_KEY, SYNTAX, WRONGTYPE};
use crate::pubsub::class::STREAM;
use crate::stream::{Group, Nack, Stream, StreamId, Trim};
use crate::value::Value;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("xadd", xadd),
    ("xlen", xlen),
    ("xrange", xrange),
    ("xrevrange", xrevrange),
    ("xdel", xdel),
    ("xtrim", xtrim),
    ("xread", xread),
    ("xreadgroup", xread),
    ("xgroup|create", xgroup),
    ("xgroup|createconsumer", xgroup),
    ("xgroup|delconsumer", xgroup),
    ("xgroup|destroy", xgroup),
    ("xgroup|setid", xgroup),
    ("xgroup|help", xgroup_help),
    ("xack", xack),
    ("xpending", xpending),
    ("xclaim", xclaim),
    ("xautoclaim", xautoclaim),
    ("xsetid", xsetid),
    ("xinfo|stream", xinfo),
    ("xinfo|groups", xinfo),
    ("xinfo|consumers", xinfo),
    ("xinfo|help", xinfo_help),
];

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";
/// Redis's XREAD COUNT for a client that blocked without one.
const BLOCKED_DEFAULT_COUNT: &str = "1000";

/// `stream-node-max-bytes` and `stream-node-max-entries`.
fn node_limits(ctx: &Ctx) -> (u64, u64) {
    let get = |name: &str, default: u64| {
        ctx.inner
            .config
            .get(name)
            .and_then(crate::config::parse_memory)
            .unwrap_or(default)
    };
    (
        get("stream-node-max-bytes", 4096),
        get("stream-node-max-entries", 100),
    )
}

/// Redis's default LIMIT for `~` trims: 100 × stream-node-max-entries,
/// kept within 1..=1,000,000 (10,000 when that is 0).
fn approx_limit(ctx: &Ctx) -> u64 {
    match node_limits(ctx).1.saturating_mul(100) {
        0 => 10_000,
        n => n.min(1_000_000),
    }
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Redis's `string2ull`: `string2ll` (negative refused), else `strtoull`
/// with its leading blanks, sign and zeros.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if let Some(v) = crate::num::parse_i64(s) {
        return u64::try_from(v).ok();
    }
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let digits = &s[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Parses `ms-seq`, `ms` (seq = `missing_seq`), and unless `strict` the
/// specials `-` and `+`. With `allow_star`, `ms-*` is accepted and the
/// second value says whether the sequence was given.
fn parse_id_full(
    a: &[u8],
    missing_seq: u64,
    strict: bool,
    allow_star: bool,
) -> Option<(StreamId, bool)> {
    if a.len() > 127 {
        return None;
    }
    if a == b"-" || a == b"+" {
        if strict {
            return None;
        }
        return Some((
            if a == b"-" {
                StreamId::MIN
            } else {
                StreamId::MAX
            },
            true,
        ));
    }
    // C strings end at the first NUL.
    let a = a.split(|c| *c == 0).next().unwrap_or(a);
    match a.iter().position(|c| *c == b'-') {
        None => Some((StreamId::new(parse_u64(a)?, missing_seq), true)),
        Some(p) => {
            let ms = parse_u64(&a[..p])?;
            let rest = &a[p + 1..];
            if allow_star && rest == b"*" {
                return Some((StreamId::new(ms, 0), false));
            }
            Some((StreamId::new(ms, parse_u64(rest)?), true))
        }
    }
}

fn parse_id(a: &[u8], missing_seq: u64, strict: bool) -> Result<StreamId, Frame> {
    parse_id_full(a, missing_seq, strict, false)
        .map(|(id, _)| id)
        .ok_or_else(|| err(INVALID_ID))
}

/// A range bound: `(id` is exclusive (and strict).
fn parse_interval(a: &[u8], missing_seq: u64) -> Result<(StreamId, bool), Frame> {
    if a.len() > 1 && a[0] == b'(' {
        Ok((parse_id(&a[1..], missing_seq, true)?, true))
    } else {
        Ok((parse_id(a, missing_seq, false)?, false))
    }
}

fn range_start(a: &[u8]) -> Result<StreamId, Frame> {
    let (id, ex) = parse_interval(a, 0)?;
    if ex {
        id.next()
            .ok_or_else(|| err("ERR invalid start ID for the interval"))
    } else {
        Ok(id)
    }
}

fn range_end(a: &[u8]) -> Result<StreamId, Frame> {
    let (id, ex) = parse_interval(a, u64::MAX)?;
    if ex {
        id.prev()
            .ok_or_else(|| err("ERR invalid end ID for the interval"))
    } else {
        Ok(id)
    }
}

fn id_frame(id: StreamId) -> Frame {
    Frame::Bulk(id.to_bytes())
}

fn entry_frame(id: StreamId, fields: &[(Bytes, Bytes)]) -> Frame {
    Frame::Array(vec![
        id_frame(id),
        Frame::Array(
            fields
                .iter()
                .flat_map(|(f, v)| [Frame::Bulk(f.clone()), Frame::Bulk(v.clone())])
                .collect(),
        ),
    ])
}

fn map(r3: bool, pairs: Vec<(&'static str, Frame)>) -> Frame {
    let pairs = pairs
        .into_iter()
        .map(|(k, v)| (Frame::Bulk(Bytes::from_static(k.as_bytes())), v));
    if r3 {
        Frame::Map(pairs.collect())
    } else {
        Frame::Array(pairs.flat_map(|(k, v)| [k, v]).collect())
    }
}

fn null(r3: bool) -> Frame {
    if r3 {
        Frame::Null
    } else {
        Frame::NullBulk
    }
}

fn null_array(r3: bool) -> Frame {
    if r3 {
        Frame::Null
    } else {
        Frame::NullArray
    }
}

fn subcommand_error(ctx: &Ctx) -> Frame {
    subcommand_error_args(ctx.args)
}

fn help(cmd: &str, lines: &[&str]) -> Reply {
    let mut out = vec![Frame::Simple(Bytes::from(format!(
        "{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )))];
    out.extend(
        lines
            .iter()
            .map(|l| Frame::Simple(Bytes::copy_from_slice(l.as_bytes()))),
    );
    out.push(Frame::simple("HELP"));
    out.push(Frame::simple("    Prints this help."));
    Ok(Frame::Array(out))
}

/// The stream at `key` for reading (hit/miss counted); WRONGTYPE for
/// another type.
fn read_stream<'c>(ctx: &'c mut Ctx, key: &[u8]) -> Result<Option<&'c Stream>, Frame> {
    match ctx.lookup_read(key) {
        None => Ok(None),
        Some(Value::Stream(s)) => Ok(Some(s)),
        Some(_) => Err(err(WRONGTYPE)),
    }
}

/// After a write Redis does not signal (consumer-group bookkeeping): memory
/// re-accounted and the change counted, WATCHes left alone.
fn touched(ctx: &mut Ctx, key: &[u8]) {
    ctx.dirty += 1;
    let db = ctx.db;
    let inner = &mut *ctx.inner;
    if let Some(e) = inner.dbs[db].map.get_mut(key) {
        let new = crate::ctx::entry_size(key, e);
        inner.used_memory = inner.used_memory.saturating_sub(e.size) + new;
        e.size = new;
    }
}

/// Journal exactly `effects` (possibly none) instead of the command.
fn set_effects(ctx: &mut Ctx, effects: Vec<Vec<Bytes>>) {
    let db = ctx.db;
    let list = ctx.effects.get_or_insert_with(Vec::new);
    list.extend(effects.into_iter().map(|args| crate::Effect { db, args }));
}

// ---------------------------------------------------------------------------
// XADD / XTRIM

struct TrimArgs {
    how: Option<Trim>,
    approx: bool,
    limit: u64,
    no_mkstream: bool,
    /// (id, sequence given) when not `*`.
    id: Option<(StreamId, bool)>,
    idpos: usize,
}

fn parse_add_trim(ctx: &Ctx, xadd: bool) -> Result<TrimArgs, Frame> {
    let args = ctx.args;
    let mut t = TrimArgs {
        how: None,
        approx: false,
        limit: 0,
        no_mkstream: false,
        id: None,
        idpos: 0,
    };
    let mut limit_given = false;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let opt = &args[i];
        let is = |w: &str| opt.eq_ignore_ascii_case(w.as_bytes());
        if xadd && &opt[..] == b"*" {
            break;
        } else if (is("maxlen") || is("minid")) && more > 0 {
            if t.how.is_some() {
                return Err(err("ERR syntax error, MAXLEN and MINID options at the same time are not compatible"));
            }
            t.approx = false;
            let next = &args[i + 1][..];
            if more >= 2 && next == b"~" {
                t.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            if is("maxlen") {
                let n = crate::num::parse_i64(&args[i + 1]).ok_or_else(|| err(NOT_INT))?;
                if n < 0 {
                    return Err(err("ERR The MAXLEN argument must be >= 0."));
                }
                t.how = Some(Trim::MaxLen(n as u64));
            } else {
                t.how = Some(Trim::MinId(parse_id(&args[i + 1], 0, true)?));
            }
            i += 1;
        } else if is("limit") && more > 0 {
            let n = crate::num::parse_i64(&args[i + 1]).ok_or_else(|| err(NOT_INT))?;
            if n < 0 {
                return Err(err("ERR The LIMIT argument must be >= 0."));
            }
            t.limit = n as u64;
            limit_given = true;
            i += 1;
        } else if xadd && is("nomkstream") {
            t.no_mkstream = true;
        } else if xadd {
            t.id = Some(parse_id_full(opt, 0, true, true).ok_or_else(|| err(INVALID_ID))?);
            break;
        } else {
            return Err(err(SYNTAX));
        }
        i += 1;
    }
    t.idpos = i;
    if t.limit != 0 && t.how.is_none() {
        return Err(err(
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        ));
    }
    if !xadd && t.how.is_none() {
        return Err(err(
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        ));
    }
    if ctx.sess.id() == 0 {
        // Replaying what Redis propagated (a replica's stream, the
        // journal): Redis rewrites `~` to `=` but keeps LIMIT, and applies
        // such commands with no limit (`mustObeyClient`).
        t.limit = 0;
    } else if limit_given {
        if !t.approx {
            return Err(err(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ));
        }
    } else {
        t.limit = if t.approx { approx_limit(ctx) } else { 0 };
    }
    Ok(t)
}

/// The exact trim an applied trim amounts to, for the journal: an
/// approximate one becomes `= <what is left>` as Redis rewrites it.
fn trim_effect(s: &Stream, how: Trim, approx: bool) -> [Bytes; 3] {
    match how {
        Trim::MaxLen(n) => [
            b("MAXLEN"),
            b("="),
            Bytes::from(if approx { s.len() as u64 } else { n }.to_string()),
        ],
        Trim::MinId(id) => [
            b("MINID"),
            b("="),
            if approx {
                s.first_with_tombstones()
            } else {
                id
            }
            .to_bytes(),
        ],
    }
}

fn xadd(ctx: &mut Ctx) -> Reply {
    let t = parse_add_trim(ctx, true)?;
    let field_pos = t.idpos + 1;
    let n = ctx.args.len();
    if field_pos > n || n - field_pos < 2 || (n - field_pos) % 2 == 1 {
        return Err(err("ERR wrong number of arguments for 'xadd' command"));
    }
    if let Some((id, true)) = t.id {
        if id.is_zero() {
            return Err(err("ERR The ID specified in XADD must be greater than 0-0"));
        }
    }
    let key = &ctx.args[1];
    let r3 = ctx.resp3();
    let now = ctx.now;
    let fields: Vec<(Bytes, Bytes)> = ctx.args[field_pos..]
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    let (node_bytes, node_entries) = node_limits(ctx);
    let Some(s) = ctx.stream_mut(key, !t.no_mkstream)? else {
        return Ok(null(r3));
    };
    if s.last_id == StreamId::MAX {
        return Err(err(
            "ERR The stream has exhausted the last possible ID, unable to add more items",
        ));
    }
    let last = s.last_id;
    let id = match t.id {
        None => {
            if now > last.ms {
                Some(StreamId::new(now, 0))
            } else {
                last.next()
            }
        }
        Some((id, true)) => Some(id),
        Some((id, false)) => {
            if last.ms == id.ms {
                if last.seq == u64::MAX {
                    // Redis fails here without setting errno to EDOM, so
                    // it answers with its other XADD error.
                    return Err(err("ERR Elements are too large to be stored"));
                }
                last.next()
            } else {
                Some(StreamId::new(id.ms, 0))
            }
        }
    };
    let Some(id) = id.filter(|id| *id > last) else {
        return Err(err(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        ));
    };
    s.append_with(id, fields.clone(), node_bytes, node_entries);
    let mut trimmed = 0;
    let mut effect = vec![b("XADD"), key.clone()];
    if let Some(how) = t.how {
        trimmed = s.trim(how, t.approx, t.limit);
        effect.extend(trim_effect(s, how, t.approx));
    }
    effect.push(id.to_bytes());
    for (f, v) in fields {
        effect.push(f);
        effect.push(v);
    }
    ctx.notify(STREAM, "xadd", key);
    if trimmed > 0 {
        ctx.notify(STREAM, "xtrim", key);
    }
    ctx.modified(key);
    ctx.propagate(effect);
    Ok(id_frame(id))
}

fn xtrim(ctx: &mut Ctx) -> Reply {
    let t = parse_add_trim(ctx, false)?;
    let key = &ctx.args[1];
    let Some(how) = t.how else {
        return Err(err(SYNTAX));
    };
    if read_stream(ctx, key)?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let Some(s) = ctx.stream_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let deleted = s.trim(how, t.approx, t.limit);
    if deleted == 0 {
        return Ok(Frame::Integer(0));
    }
    let mut effect = vec![b("XTRIM"), key.clone()];
    effect.extend(trim_effect(s, how, t.approx));
    ctx.notify(STREAM, "xtrim", key);
    ctx.modified(key);
    ctx.propagate(effect);
    Ok(Frame::Integer(deleted as i64))
}

fn xlen(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    Ok(Frame::Integer(
        read_stream(ctx, key)?.map_or(0, |s| s.len() as i64),
    ))
}

fn xrange(ctx: &mut Ctx) -> Reply {
    range_generic(ctx, false)
}

fn xrevrange(ctx: &mut Ctx) -> Reply {
    range_generic(ctx, true)
}

fn range_generic(ctx: &mut Ctx, rev: bool) -> Reply {
    let (sa, ea) = if rev { (3, 2) } else { (2, 3) };
    let start = range_start(&ctx.args[sa])?;
    let end = range_end(&ctx.args[ea])?;
    let mut count: i64 = -1;
    let mut j = 4;
    while j < ctx.args.len() {
        if ctx.arg_is(j, "count") && j + 1 < ctx.args.len() {
            count = ctx.arg_i64(j + 1)?.max(0);
            j += 2;
        } else {
            return Err(err(SYNTAX));
        }
    }
    let key = &ctx.args[1];
    let r3 = ctx.resp3();
    let Some(s) = read_stream(ctx, key)? else {
        return Ok(Frame::Array(Vec::new()));
    };
    if count == 0 {
        return Ok(null_array(r3));
    }
    let take = if count < 0 {
        usize::MAX
    } else {
        count as usize
    };
    Ok(Frame::Array(
        s.range(start, end, rev)
            .take(take)
            .map(|(id, f)| entry_frame(*id, f))
            .collect(),
    ))
}

fn xdel(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    if read_stream(ctx, key)?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let ids = ctx.args[2..]
        .iter()
        .map(|a| parse_id(a, 0, true))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(s) = ctx.stream_mut(key, false)? else {
        return Ok(Frame::Integer(0));
    };
    let mut deleted = 0;
    let mut first = false;
    for id in ids {
        if s.delete(id) {
            if id == s.first_id {
                first = true;
            }
            if id > s.max_deleted_id {
                s.max_deleted_id = id;
            }
            deleted += 1;
        }
    }
    if deleted > 0 {
        if s.is_empty() {
            s.first_id = StreamId::MIN;
        } else if first {
            s.refresh_first_id();
        }
        ctx.notify(STREAM, "xdel", key);
        ctx.modified(key);
    }
    Ok(Frame::Integer(deleted))
}

fn xsetid(ctx: &mut Ctx) -> Reply {
    let id = parse_id(&ctx.args[2], 0, true)?;
    let mut added: i64 = -1;
    let mut max_del = StreamId::MIN;
    let mut i = 3;
    while i < ctx.args.len() {
        let more = ctx.args.len() - 1 - i;
        if ctx.arg_is(i, "entriesadded") && more > 0 {
            added = ctx.arg_i64(i + 1)?;
            if added < 0 {
                return Err(err("ERR entries_added must be positive"));
            }
        } else if ctx.arg_is(i, "maxdeletedid") && more > 0 {
            max_del = parse_id(&ctx.args[i + 1], 0, true)?;
            if id < max_del {
                return Err(err("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id"));
            }
        } else {
            return Err(err(SYNTAX));
        }
        i += 2;
    }
    let key = &ctx.args[1];
    let Some(s) = ctx.stream_mut(key, false)? else {
        return Err(err(NO_KEY));
    };
    if let Some(max) = s.last_live() {
        if id < max {
            return Err(err(
                "ERR The ID specified in XSETID is smaller than the target stream top item",
            ));
        }
        if added != -1 && s.len() as i64 > added {
            return Err(err(
                "ERR The entries_added specified in XSETID is smaller than the target stream length",
            ));
        }
    }
    s.last_id = id;
    if added != -1 {
        s.entries_added = added as u64;
    }
    if !max_del.is_zero() {
        s.max_deleted_id = max_del;
    }
    ctx.notify(STREAM, "xsetid", key);
    touched(ctx, key);
    Ok(Frame::simple("OK"))
}

// ---------------------------------------------------------------------------
// XREAD / XREADGROUP

/// The `XCLAIM` Redis propagates for a pending entry: replaying it sets the
/// entry's owner, delivery time and count, and the group's last ID.
fn xclaim_effect(key: &Bytes, group: &Bytes, g: &Group, id: StreamId, n: &Nack) -> Vec<Bytes> {
    vec![
        b("XCLAIM"),
        key.clone(),
        group.clone(),
        n.consumer.clone(),
        b("0"),
        id.to_bytes(),
        b("TIME"),
        Bytes::from(n.delivery_time.to_string()),
        b("RETRYCOUNT"),
        Bytes::from(n.delivery_count.to_string()),
        b("FORCE"),
        b("JUSTID"),
        b("LASTID"),
        g.last_id.to_bytes(),
    ]
}

fn setid_effect(key: &Bytes, group: &Bytes, g: &Group) -> Vec<Bytes> {
    vec![
        b("XGROUP"),
        b("SETID"),
        key.clone(),
        group.clone(),
        g.last_id.to_bytes(),
        b("ENTRIESREAD"),
        Bytes::from(g.entries_read.to_string()),
    ]
}

fn createconsumer_effect(key: &Bytes, group: &Bytes, consumer: &Bytes) -> Vec<Bytes> {
    vec![
        b("XGROUP"),
        b("CREATECONSUMER"),
        key.clone(),
        group.clone(),
        consumer.clone(),
    ]
}

/// Looks a consumer up (refreshing its seen-time) or creates it; true when
/// created.
fn consumer_seen(g: &mut Group, name: &Bytes, now: u64) -> bool {
    match g.consumers.get_mut(name) {
        Some(c) => {
            c.seen_time = now;
            false
        }
        None => {
            g.consumers.insert(
                name.clone(),
                crate::stream::Consumer {
                    seen_time: now,
                    ..Default::default()
                },
            );
            true
        }
    }
}

/// Gives pending entry `id` to `consumer` (which exists) with the delivery
/// time and count already set in `n`.
fn assign(g: &mut Group, id: StreamId, consumer: &Bytes, delivery_time: u64, count: u64) {
    if let Some(old) = g.pel.get(&id).map(|n| n.consumer.clone()) {
        if old != consumer {
            if let Some(c) = g.consumers.get_mut(&old) {
                c.pel.remove(&id);
            }
        }
    }
    g.pel.insert(
        id,
        Nack {
            consumer: consumer.clone(),
            delivery_time,
            delivery_count: count,
        },
    );
    if let Some(c) = g.consumers.get_mut(consumer) {
        c.pel.insert(id);
    }
}

#[allow(clippy::too_many_arguments)]
/// Serves a group read of new entries after `start` (inclusive) from one
/// stream; returns the entries and the effects.
fn serve_group(
    s: &mut Stream,
    key: &Bytes,
    gname: &Bytes,
    consumer: &Bytes,
    start: StreamId,
    count: usize,
    noack: bool,
    now: u64,
) -> (Vec<Frame>, Vec<Vec<Bytes>>) {
    let mut out = Vec::new();
    let mut effects = Vec::new();
    let picked: Vec<StreamId> = s
        .range(start, StreamId::MAX, false)
        .take(count)
        .map(|(id, _)| *id)
        .collect();
    let Some(g0) = s.groups.get(gname) else {
        return (out, effects);
    };
    let (before_id, before_read) = (g0.last_id, g0.entries_read);
    for id in picked {
        let tomb = s.range_has_tombstones(id, StreamId::MAX);
        let added = s.entries_added;
        let estimate = s.estimate_distance(id);
        let fields = s.get(&id).cloned().unwrap_or_default();
        let Some(g) = s.groups.get_mut(gname) else {
            break;
        };
        if id > g.last_id {
            if g.entries_read != -1 && !tomb {
                g.entries_read = g.entries_read.wrapping_add(1);
            } else if added > 0 {
                g.entries_read = estimate;
            }
            g.last_id = id;
        }
        out.push(entry_frame(id, &fields));
        if !noack {
            assign(g, id, consumer, now, 1);
            if let Some(n) = g.pel.get(&id) {
                effects.push(xclaim_effect(key, gname, g, id, n));
            }
        }
    }
    if let Some(g) = s.groups.get(gname) {
        // Redis's XCLAIM LASTID leaves entries-read behind; SETID carries it.
        if g.last_id != before_id || g.entries_read != before_read {
            effects.push(setid_effect(key, gname, g));
        }
    }
    (out, effects)
}

#[allow(clippy::too_many_arguments)]
/// Serves a consumer's own history (pending entries from `start`).
fn serve_history(
    s: &mut Stream,
    key: &Bytes,
    gname: &Bytes,
    consumer: &Bytes,
    start: StreamId,
    count: usize,
    now: u64,
    r3: bool,
) -> (Vec<Frame>, Vec<Vec<Bytes>>) {
    let mut out = Vec::new();
    let mut effects = Vec::new();
    let ids: Vec<StreamId> = s
        .groups
        .get(gname)
        .and_then(|g| g.consumers.get(consumer))
        .map(|c| c.pel.range(start..).take(count).copied().collect())
        .unwrap_or_default();
    for id in ids {
        let fields = s.get(&id).cloned();
        let Some(g) = s.groups.get_mut(gname) else {
            break;
        };
        match fields {
            Some(f) => {
                out.push(entry_frame(id, &f));
                if let Some(n) = g.pel.get_mut(&id) {
                    n.delivery_time = now;
                    n.delivery_count = n.delivery_count.wrapping_add(1);
                }
                if let Some(n) = g.pel.get(&id) {
                    effects.push(xclaim_effect(key, gname, g, id, n));
                }
            }
            None => out.push(Frame::Array(vec![id_frame(id), null_array(r3)])),
        }
    }
    (out, effects)
}

fn xread(ctx: &mut Ctx) -> Reply {
    let group_cmd = ctx.name == "xreadgroup";
    let args = ctx.args;
    let mut timeout: Option<u64> = None;
    let mut count: i64 = 0;
    let mut streams_arg = 0;
    let mut nstreams = 0;
    let mut noack = false;
    let mut group: Option<(Bytes, Bytes)> = None;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        if ctx.arg_is(i, "block") && more > 0 {
            i += 1;
            let t = crate::num::parse_i64(&args[i])
                .ok_or_else(|| err("ERR timeout is not an integer or out of range"))?;
            if t < 0 {
                return Err(err("ERR timeout is negative"));
            }
            timeout = Some(t as u64);
        } else if ctx.arg_is(i, "count") && more > 0 {
            i += 1;
            count = ctx.arg_i64(i)?.max(0);
        } else if ctx.arg_is(i, "streams") && more > 0 {
            streams_arg = i + 1;
            let n = args.len() - streams_arg;
            if !n.is_multiple_of(2) {
                return Err(err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified."));
            }
            nstreams = n / 2;
            break;
        } else if ctx.arg_is(i, "group") && more >= 2 {
            if !group_cmd {
                return Err(err(
                    "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            group = Some((args[i + 1].clone(), args[i + 2].clone()));
            i += 2;
        } else if ctx.arg_is(i, "noack") {
            if !group_cmd {
                return Err(err(
                    "ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.",
                ));
            }
            noack = true;
        } else {
            return Err(err(SYNTAX));
        }
        i += 1;
    }
    if streams_arg == 0 {
        return Err(err(SYNTAX));
    }
    if group_cmd && group.is_none() {
        return Err(err("ERR Missing GROUP option for XREADGROUP"));
    }
    let keys: Vec<Bytes> = args[streams_arg..streams_arg + nstreams].to_vec();
    // `None` is `>`.
    let mut ids: Vec<Option<StreamId>> = Vec::with_capacity(nstreams);
    for (k, key) in keys.iter().enumerate() {
        let a = &args[streams_arg + nstreams + k];
        if let Some((g, _)) = &group {
            if retrying(ctx, key) {
                // What Redis tells a consumer blocked on this key when the
                // key or its group goes away.
                match ctx.lookup(key) {
                    Some(Value::Stream(s)) if s.groups.contains_key(g) => {}
                    Some(Value::Stream(_)) => {
                        return Err(err("NOGROUP the consumer group this client was blocked on no longer exists"));
                    }
                    _ => return Err(err("UNBLOCKED the stream key no longer exists")),
                }
            }
        }
        // A plain XREAD woken on a key that now holds another type keeps
        // waiting, as in Redis (only the first call answers WRONGTYPE).
        let s = if group.is_none() && retrying(ctx, key) {
            match ctx.lookup_read(key) {
                Some(Value::Stream(s)) => Some(&**s),
                _ => None,
            }
        } else {
            read_stream(ctx, key)?
        };
        if let Some((g, _)) = &group {
            if s.is_none_or(|s| !s.groups.contains_key(g)) {
                return Err(Frame::error(format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    lossy(key),
                    lossy(g)
                )));
            }
        }
        if &a[..] == b"$" {
            if group_cmd {
                return Err(err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set."));
            }
            ids.push(Some(s.map_or(StreamId::MIN, |s| s.last_id)));
        } else if &a[..] == b">" {
            if !group_cmd {
                return Err(err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option."));
            }
            ids.push(None);
        } else {
            ids.push(Some(parse_id(a, 0, true)?));
        }
    }
    let r3 = ctx.resp3();
    let now = ctx.now;
    let take = if count == 0 {
        usize::MAX
    } else {
        count as usize
    };
    let mut served: Vec<(Frame, Frame)> = Vec::new();
    let mut effects: Vec<Vec<Bytes>> = Vec::new();
    // Redis serves a woken client from the one key that became ready.
    let woken = keys.iter().any(|k| retrying(ctx, k));
    for (k, key) in keys.iter().enumerate() {
        if woken && !served.is_empty() {
            break;
        }
        match &group {
            None => {
                let s = if retrying(ctx, key) {
                    match ctx.lookup_read(key) {
                        Some(Value::Stream(s)) => Some(&**s),
                        _ => None,
                    }
                } else {
                    read_stream(ctx, key)?
                };
                let Some(s) = s else {
                    continue;
                };
                let gt = ids[k].unwrap_or(StreamId::MAX);
                if s.last_live().is_some_and(|m| m > gt) {
                    let start = gt.next().unwrap_or(StreamId::MIN);
                    let items: Vec<Frame> = s
                        .range(start, StreamId::MAX, false)
                        .take(take)
                        .map(|(id, f)| entry_frame(*id, f))
                        .collect();
                    served.push((Frame::Bulk(key.clone()), Frame::Array(items)));
                }
            }
            Some((gname, cname)) => {
                // A client that blocked earlier has the first claim on new
                // entries, as Redis serves blocked consumers in order.
                if ids[k].is_none() && timeout.is_some() && !ctx.may_serve(key) {
                    continue;
                }
                let Some(s) = ctx.stream_mut(key, false)? else {
                    continue;
                };
                let Some(g) = s.groups.get(gname) else {
                    continue;
                };
                let start = match ids[k] {
                    Some(id) => Some(id),
                    None => match s.last_live() {
                        Some(m) if m > g.last_id => Some(g.last_id),
                        _ => None,
                    },
                };
                let Some(gt) = start else {
                    continue;
                };
                let start = gt.next().unwrap_or(StreamId::MIN);
                let Some(g) = s.groups.get_mut(gname) else {
                    continue;
                };
                let created = consumer_seen(g, cname, now);
                if created {
                    effects.push(createconsumer_effect(key, gname, cname));
                }
                let (items, eff) = if ids[k].is_some() {
                    serve_history(s, key, gname, cname, start, take, now, r3)
                } else {
                    serve_group(s, key, gname, cname, start, take, noack, now)
                };
                effects.extend(eff);
                if created {
                    ctx.notify(STREAM, "xgroup-createconsumer", key);
                }
                touched(ctx, key);
                served.push((Frame::Bulk(key.clone()), Frame::Array(items)));
            }
        }
    }
    if group_cmd {
        set_effects(ctx, effects);
    }
    if !served.is_empty() {
        return Ok(if r3 {
            Frame::Map(served)
        } else {
            Frame::Array(
                served
                    .into_iter()
                    .map(|(k, v)| Frame::Array(vec![k, v]))
                    .collect(),
            )
        });
    }
    let timeout_reply = null_array(r3);
    let Some(timeout_ms) = timeout else {
        return Ok(timeout_reply);
    };
    if ctx.no_block {
        return Ok(timeout_reply);
    }
    // Retries keep `$` as it was now, and a blocked read without COUNT is
    // served at most 1000 entries, as in Redis.
    let mut retry: Vec<Bytes> = args[..streams_arg - 1].to_vec();
    if count == 0 {
        retry.push(b("COUNT"));
        retry.push(b(BLOCKED_DEFAULT_COUNT));
    }
    retry.extend_from_slice(&args[streams_arg - 1..streams_arg + nstreams]);
    for (k, a) in args[streams_arg + nstreams..].iter().enumerate() {
        match ids[k] {
            Some(id) if &a[..] == b"$" => retry.push(id.to_bytes()),
            _ => retry.push(a.clone()),
        }
    }
    ctx.block = Some(Block {
        timeout_ms,
        keys,
        retry_args: Some(retry),
    });
    Ok(timeout_reply)
}

/// True when this client is running again after blocking on `key`: it is
/// still in the key's wait queue, which it leaves only when its command
/// ends.
fn retrying(ctx: &Ctx, key: &Bytes) -> bool {
    ctx.sess.id() != 0
        && ctx
            .inner
            .waiting
            .get(&(ctx.db, key.clone()))
            .is_some_and(|q| q.contains(&ctx.sess.id()))
}

// ---------------------------------------------------------------------------
// XGROUP

fn xgroup_help(_ctx: &mut Ctx) -> Reply {
    help(
        "XGROUP",
        &[
            "CREATE <key> <groupname> <id|$> [option]",
            "    Create a new consumer group. Options are:",
            "    * MKSTREAM",
            "      Create the empty stream if it does not exist.",
            "    * ENTRIESREAD entries_read",
            "      Set the group's entries_read counter (internal use).",
            "CREATECONSUMER <key> <groupname> <consumer>",
            "    Create a new consumer in the specified group.",
            "DELCONSUMER <key> <groupname> <consumer>",
            "    Remove the specified consumer.",
            "DESTROY <key> <groupname>",
            "    Remove the specified group.",
            "SETID <key> <groupname> <id|$> [ENTRIESREAD entries_read]",
            "    Set the current group ID and entries_read counter.",
        ],
    )
}

fn xgroup(ctx: &mut Ctx) -> Reply {
    let sub = ctx.name.trim_start_matches("xgroup|");
    let n = ctx.args.len();
    let create = sub == "create";
    let setid = sub == "setid";
    let mut mkstream = false;
    let mut entries_read: i64 = -1;
    let mut i = 5;
    while i < n {
        if create && ctx.arg_is(i, "mkstream") {
            mkstream = true;
            i += 1;
        } else if (create || setid) && ctx.arg_is(i, "entriesread") && i + 1 < n {
            entries_read = ctx.arg_i64(i + 1)?;
            if entries_read < 0 && entries_read != -1 {
                return Err(err("ERR value for ENTRIESREAD must be positive or -1"));
            }
            i += 2;
        } else {
            return Err(subcommand_error(ctx));
        }
    }
    let key = ctx.args[2].clone();
    let gname = ctx.args[3].clone();
    let exists = match ctx.lookup(&key) {
        None => false,
        Some(Value::Stream(_)) => true,
        Some(_) => return Err(err(WRONGTYPE)),
    };
    if !mkstream {
        if !exists {
            return Err(err("ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically."));
        }
        let has = ctx
            .get_stream(&key)?
            .is_some_and(|s| s.groups.contains_key(&gname));
        if !has && matches!(sub, "setid" | "createconsumer" | "delconsumer") {
            return Err(Frame::error(format!(
                "NOGROUP No such consumer group '{}' for key name '{}'",
                lossy(&gname),
                lossy(&key)
            )));
        }
    }
    let now = ctx.now;
    match sub {
        "create" if (5..=8).contains(&n) => {
            let id = if &ctx.args[4][..] == b"$" {
                ctx.get_stream(&key)?.map_or(StreamId::MIN, |s| s.last_id)
            } else {
                parse_id(&ctx.args[4], 0, true)?
            };
            let Some(s) = ctx.stream_mut(&key, true)? else {
                return Err(err(NO_KEY));
            };
            if s.groups.contains_key(&gname) {
                return Err(err("BUSYGROUP Consumer Group name already exists"));
            }
            s.groups.insert(gname, Group::new(id, entries_read));
            ctx.notify(STREAM, "xgroup-create", &key);
            if exists {
                touched(ctx, &key);
            } else {
                ctx.modified(&key);
            }
            Ok(Frame::simple("OK"))
        }
        "setid" if n == 5 || n == 7 => {
            let a = ctx.args[4].clone();
            let Some(s) = ctx.stream_mut(&key, false)? else {
                return Err(err(NO_KEY));
            };
            let id = if &a[..] == b"$" {
                s.last_id
            } else {
                parse_id(&a, 0, false)?
            };
            if let Some(g) = s.groups.get_mut(&gname) {
                g.last_id = id;
                g.entries_read = entries_read;
            }
            ctx.notify(STREAM, "xgroup-setid", &key);
            touched(ctx, &key);
            Ok(Frame::simple("OK"))
        }
        "destroy" if n == 4 => {
            let Some(s) = ctx.stream_mut(&key, false)? else {
                return Err(err(NO_KEY));
            };
            if s.groups.remove(&gname).is_none() {
                return Ok(Frame::Integer(0));
            }
            ctx.notify(STREAM, "xgroup-destroy", &key);
            touched(ctx, &key);
            // Consumers blocked on the group retry and find it gone.
            if ctx.inner.blocked > 0 {
                ctx.wake = true;
            }
            Ok(Frame::Integer(1))
        }
        "createconsumer" if n == 5 => {
            let cname = ctx.args[4].clone();
            let Some(s) = ctx.stream_mut(&key, false)? else {
                return Err(err(NO_KEY));
            };
            let Some(g) = s.groups.get_mut(&gname) else {
                return Ok(Frame::Integer(0));
            };
            if g.consumers.contains_key(&cname) {
                return Ok(Frame::Integer(0));
            }
            g.consumers.insert(
                cname,
                crate::stream::Consumer {
                    seen_time: now,
                    ..Default::default()
                },
            );
            ctx.notify(STREAM, "xgroup-createconsumer", &key);
            touched(ctx, &key);
            Ok(Frame::Integer(1))
        }
        "delconsumer" if n == 5 => {
            let cname = ctx.args[4].clone();
            let Some(s) = ctx.stream_mut(&key, false)? else {
                return Err(err(NO_KEY));
            };
            let Some(g) = s.groups.get_mut(&gname) else {
                return Ok(Frame::Integer(0));
            };
            let Some(c) = g.consumers.remove(&cname) else {
                return Ok(Frame::Integer(0));
            };
            for id in &c.pel {
                g.pel.remove(id);
            }
            ctx.notify(STREAM, "xgroup-delconsumer", &key);
            touched(ctx, &key);
            Ok(Frame::Integer(c.pel.len() as i64))
        }
        _ => Err(subcommand_error(ctx)),
    }
}

// ---------------------------------------------------------------------------
// XACK / XPENDING / XCLAIM / XAUTOCLAIM

fn nogroup(key: &[u8], g: &[u8]) -> Frame {
    Frame::error(format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        lossy(key),
        lossy(g)
    ))
}

fn xack(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let gname = ctx.args[2].clone();
    let has = read_stream(ctx, key)?.is_some_and(|s| s.groups.contains_key(&gname));
    if !has {
        return Ok(Frame::Integer(0));
    }
    let ids = ctx.args[3..]
        .iter()
        .map(|a| parse_id(a, 0, true))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(g) = ctx
        .stream_mut(key, false)?
        .and_then(|s| s.groups.get_mut(&gname))
    else {
        return Ok(Frame::Integer(0));
    };
    let mut acked = 0;
    for id in ids {
        if g.remove_nack(id).is_some() {
            acked += 1;
        }
    }
    if acked > 0 {
        touched(ctx, key);
    }
    Ok(Frame::Integer(acked))
}

fn xpending(ctx: &mut Ctx) -> Reply {
    let n = ctx.args.len();
    if n != 3 && !(6..=9).contains(&n) {
        return Err(err(SYNTAX));
    }
    let mut min_idle: i64 = 0;
    let mut range = None;
    let mut consumer = None;
    if n >= 6 {
        let mut si = 3;
        if ctx.arg_is(3, "idle") {
            min_idle = ctx.arg_i64(4)?;
            if n < 8 {
                return Err(err(SYNTAX));
            }
            si += 2;
        }
        let count = ctx.arg_i64(si + 2)?.max(0);
        let start = range_start(&ctx.args[si])?;
        let end = range_end(&ctx.args[si + 1])?;
        if si + 3 < n {
            consumer = Some(ctx.args[si + 3].clone());
        }
        range = Some((start, end, count));
    }
    let key = &ctx.args[1];
    let gname = ctx.args[2].clone();
    let r3 = ctx.resp3();
    let now = ctx.now as i64;
    let Some(g) = read_stream(ctx, key)?.and_then(|s| s.groups.get(&gname)) else {
        return Err(nogroup(key, &gname));
    };
    let Some((start, end, mut count)) = range else {
        let total = Frame::Integer(g.pel.len() as i64);
        let (Some(first), Some(last)) = (g.pel.keys().next(), g.pel.keys().next_back()) else {
            return Ok(Frame::Array(vec![
                total,
                null(r3),
                null(r3),
                null_array(r3),
            ]));
        };
        let owners: Vec<Frame> = g
            .consumers
            .iter()
            .filter(|(_, c)| !c.pel.is_empty())
            .map(|(name, c)| {
                Frame::Array(vec![
                    Frame::Bulk(name.clone()),
                    Frame::Bulk(Bytes::from(c.pel.len().to_string())),
                ])
            })
            .collect();
        return Ok(Frame::Array(vec![
            total,
            id_frame(*first),
            id_frame(*last),
            Frame::Array(owners),
        ]));
    };
    let ids: Vec<StreamId> = match &consumer {
        Some(c) => match g.consumers.get(c) {
            None => return Ok(Frame::Array(Vec::new())),
            Some(c) => c.pel.iter().copied().collect(),
        },
        None => g.pel.keys().copied().collect(),
    };
    let mut out = Vec::new();
    if start <= end {
        for id in ids.into_iter().filter(|id| *id >= start) {
            if count == 0 || id > end {
                break;
            }
            let Some(nack) = g.pel.get(&id) else {
                continue;
            };
            let idle = now - nack.delivery_time as i64;
            if min_idle != 0 && idle < min_idle {
                continue;
            }
            count -= 1;
            out.push(Frame::Array(vec![
                id_frame(id),
                Frame::Bulk(nack.consumer.clone()),
                Frame::Integer(idle.max(0)),
                Frame::Integer(nack.delivery_count as i64),
            ]));
        }
    }
    Ok(Frame::Array(out))
}

fn xclaim(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let gname = ctx.args[2].clone();
    let cname = ctx.args[3].clone();
    let has = read_stream(ctx, key)?.is_some_and(|s| s.groups.contains_key(&gname));
    if !has {
        return Err(nogroup(key, &gname));
    }
    let min_idle = crate::num::parse_i64(&ctx.args[4])
        .ok_or_else(|| err("ERR Invalid min-idle-time argument for XCLAIM"))?
        .max(0);
    let now = ctx.now as i64;
    let mut ids = Vec::new();
    let mut j = 5;
    while j < ctx.args.len() {
        match parse_id_full(&ctx.args[j], 0, true, false) {
            Some((id, _)) => ids.push(id),
            None => break,
        }
        j += 1;
    }
    let (mut force, mut justid) = (false, false);
    let mut delivery: Option<i64> = None;
    let mut retry: Option<i64> = None;
    let mut lastid = StreamId::MIN;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        let num = |i: usize, what: &str| {
            crate::num::parse_i64(&ctx.args[i]).ok_or_else(|| {
                Frame::error(format!("ERR Invalid {what} option argument for XCLAIM"))
            })
        };
        if ctx.arg_is(j, "force") {
            force = true;
        } else if ctx.arg_is(j, "justid") {
            justid = true;
        } else if ctx.arg_is(j, "idle") && more > 0 {
            j += 1;
            delivery = Some(now.wrapping_sub(num(j, "IDLE")?));
        } else if ctx.arg_is(j, "time") && more > 0 {
            j += 1;
            delivery = Some(num(j, "TIME")?);
        } else if ctx.arg_is(j, "retrycount") && more > 0 {
            j += 1;
            retry = Some(num(j, "RETRYCOUNT")?);
        } else if ctx.arg_is(j, "lastid") && more > 0 {
            j += 1;
            lastid = parse_id(&ctx.args[j], 0, true)?;
        } else {
            return Err(Frame::error(format!(
                "ERR Unrecognized XCLAIM option '{}'",
                lossy(&ctx.args[j])
            )));
        }
        j += 1;
    }
    // Redis resets a delivery time in the future to now; a replayed effect
    // (no client) keeps it, since a replica's copy runs on a frozen clock
    // and the time was already checked when the command first ran.
    let replayed = ctx.sess.id() == 0;
    let delivery = match delivery {
        Some(t) if t >= 0 && (t <= now || replayed) => t as u64,
        _ => now as u64,
    };
    let Some(s) = ctx.stream_mut(key, false)? else {
        return Err(nogroup(key, &gname));
    };
    let mut effects = Vec::new();
    let mut out = Vec::new();
    let mut created = false;
    let mut have_consumer = false;
    let mut propagate_last = false;
    if let Some(g) = s.groups.get_mut(&gname) {
        if lastid > g.last_id {
            g.last_id = lastid;
            propagate_last = true;
        }
    }
    for id in ids {
        let exists = s.get(&id).cloned();
        let Some(g) = s.groups.get_mut(&gname) else {
            break;
        };
        let Some(fields) = exists else {
            if let Some(n) = g.pel.get(&id) {
                effects.push(xclaim_effect(key, &gname, g, id, n));
                propagate_last = false;
                g.remove_nack(id);
            }
            continue;
        };
        let (owner, count) = match g.pel.get(&id) {
            Some(n) => (Some(n.consumer.clone()), n.delivery_count),
            None if force => (None, 1),
            None => continue,
        };
        if owner.is_some() && min_idle > 0 {
            let idle = now - g.pel.get(&id).map_or(0, |n| n.delivery_time as i64);
            if idle < min_idle {
                continue;
            }
        }
        if !have_consumer {
            created = consumer_seen(g, &cname, now as u64);
            have_consumer = true;
        }
        let count = match retry {
            Some(r) if r >= 0 => r as u64,
            _ if !justid => count.wrapping_add(1),
            _ => count,
        };
        assign(g, id, &cname, delivery, count);
        out.push(if justid {
            id_frame(id)
        } else {
            entry_frame(id, &fields)
        });
        if let Some(n) = g.pel.get(&id) {
            effects.push(xclaim_effect(key, &gname, g, id, n));
        }
        propagate_last = false;
    }
    if propagate_last {
        if let Some(g) = s.groups.get(&gname) {
            effects.push(setid_effect(key, &gname, g));
        }
    }
    if created {
        ctx.notify(STREAM, "xgroup-createconsumer", key);
    }
    if !effects.is_empty() || created {
        touched(ctx, key);
    }
    set_effects(ctx, effects);
    Ok(Frame::Array(out))
}

fn xautoclaim(ctx: &mut Ctx) -> Reply {
    let min_idle = crate::num::parse_i64(&ctx.args[4])
        .ok_or_else(|| err("ERR Invalid min-idle-time argument for XAUTOCLAIM"))?
        .max(0);
    let start = range_start(&ctx.args[5])?;
    let mut count: i64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < ctx.args.len() {
        let more = ctx.args.len() - 1 - j;
        if ctx.arg_is(j, "count") && more > 0 {
            count = crate::num::parse_i64(&ctx.args[j + 1])
                .filter(|c| (1..=i64::MAX / 16).contains(c))
                .ok_or_else(|| err("ERR COUNT must be > 0"))?;
            j += 1;
        } else if ctx.arg_is(j, "justid") {
            justid = true;
        } else {
            return Err(err(SYNTAX));
        }
        j += 1;
    }
    let key = &ctx.args[1];
    let gname = ctx.args[2].clone();
    let cname = ctx.args[3].clone();
    let has = read_stream(ctx, key)?.is_some_and(|s| s.groups.contains_key(&gname));
    if !has {
        return Err(nogroup(key, &gname));
    }
    let now = ctx.now;
    let Some(s) = ctx.stream_mut(key, false)? else {
        return Err(nogroup(key, &gname));
    };
    let mut attempts = count.saturating_mul(10);
    let mut effects = Vec::new();
    let mut claimed = Vec::new();
    let mut deleted = Vec::new();
    let mut created = false;
    let mut have_consumer = false;
    let mut cursor = Some(start);
    let mut exhausted = false;
    loop {
        if attempts == 0 {
            break;
        }
        attempts -= 1;
        if count == 0 {
            break;
        }
        let Some(from) = cursor else {
            exhausted = true;
            break;
        };
        let Some(g) = s.groups.get(&gname) else {
            exhausted = true;
            break;
        };
        let Some((id, delivered)) = g
            .pel
            .range(from..)
            .next()
            .map(|(id, n)| (*id, n.delivery_time))
        else {
            exhausted = true;
            break;
        };
        cursor = id.next();
        let fields = s.get(&id).cloned();
        let Some(g) = s.groups.get_mut(&gname) else {
            break;
        };
        let Some(fields) = fields else {
            if let Some(n) = g.pel.get(&id) {
                effects.push(xclaim_effect(key, &gname, g, id, n));
            }
            g.remove_nack(id);
            deleted.push(id_frame(id));
            count -= 1;
            continue;
        };
        if min_idle > 0 && (now as i64 - delivered as i64) < min_idle {
            continue;
        }
        let dc = g.pel.get(&id).map_or(0, |n| n.delivery_count);
        if !have_consumer {
            created = consumer_seen(g, &cname, now);
            have_consumer = true;
        }
        assign(
            g,
            id,
            &cname,
            now,
            if justid { dc } else { dc.wrapping_add(1) },
        );
        claimed.push(if justid {
            id_frame(id)
        } else {
            entry_frame(id, &fields)
        });
        count -= 1;
        if let Some(n) = g.pel.get(&id) {
            effects.push(xclaim_effect(key, &gname, g, id, n));
        }
    }
    let next = if exhausted {
        StreamId::MIN
    } else {
        cursor
            .and_then(|c| {
                s.groups
                    .get(&gname)
                    .and_then(|g| g.pel.range(c..).next().map(|(id, _)| *id))
            })
            .unwrap_or(StreamId::MIN)
    };
    if created {
        ctx.notify(STREAM, "xgroup-createconsumer", key);
    }
    if !effects.is_empty() || created {
        touched(ctx, key);
    }
    set_effects(ctx, effects);
    Ok(Frame::Array(vec![
        id_frame(next),
        Frame::Array(claimed),
        Frame::Array(deleted),
    ]))
}

// ---------------------------------------------------------------------------
// XINFO

fn xinfo_help(_ctx: &mut Ctx) -> Reply {
    help(
        "XINFO",
        &[
            "CONSUMERS <key> <groupname>",
            "    Show consumers of <groupname>.",
            "GROUPS <key>",
            "    Show the stream consumer groups.",
            "STREAM <key> [FULL [COUNT <count>]",
            "    Show information about the stream.",
        ],
    )
}

fn opt_int(v: Option<i64>, r3: bool) -> Frame {
    v.map_or_else(|| null(r3), Frame::Integer)
}

fn entries_read(g: &Group, r3: bool) -> Frame {
    opt_int((g.entries_read != -1).then_some(g.entries_read), r3)
}

fn xinfo(ctx: &mut Ctx) -> Reply {
    let sub = ctx.name.trim_start_matches("xinfo|");
    let key = ctx.args[2].clone();
    let r3 = ctx.resp3();
    let now = ctx.now as i64;
    let args = ctx.args;
    let Some(s) = read_stream(ctx, &key)? else {
        return Err(err(NO_KEY));
    };
    match sub {
        "consumers" => {
            let gname = &args[3];
            let Some(g) = s.groups.get(gname) else {
                return Err(Frame::error(format!(
                    "NOGROUP No such consumer group '{}' for key name '{}'",
                    lossy(gname),
                    lossy(&key)
                )));
            };
            Ok(Frame::Array(
                g.consumers
                    .iter()
                    .map(|(name, c)| {
                        map(
                            r3,
                            vec![
                                ("name", Frame::Bulk(name.clone())),
                                ("pending", Frame::Integer(c.pel.len() as i64)),
                                ("idle", Frame::Integer((now - c.seen_time as i64).max(0))),
                            ],
                        )
                    })
                    .collect(),
            ))
        }
        "groups" => Ok(Frame::Array(
            s.groups
                .iter()
                .map(|(name, g)| {
                    map(
                        r3,
                        vec![
                            ("name", Frame::Bulk(name.clone())),
                            ("consumers", Frame::Integer(g.consumers.len() as i64)),
                            ("pending", Frame::Integer(g.pel.len() as i64)),
                            ("last-delivered-id", id_frame(g.last_id)),
                            ("entries-read", entries_read(g, r3)),
                            ("lag", opt_int(s.lag(g), r3)),
                        ],
                    )
                })
                .collect(),
        )),
        _ => {
            let opts = &args[3..];
            let full = !opts.is_empty();
            let mut count: i64 = 10;
            if full {
                if opts.len() != 1 && opts.len() != 3 {
                    return Err(subcommand_error_args(args));
                }
                if !opts[0].eq_ignore_ascii_case(b"full") {
                    return Err(subcommand_error_args(args));
                }
                if opts.len() == 3 {
                    if !opts[1].eq_ignore_ascii_case(b"count") {
                        return Err(subcommand_error_args(args));
                    }
                    count = crate::num::parse_i64(&opts[2]).ok_or_else(|| err(NOT_INT))?;
                    if count < 0 {
                        count = 10;
                    }
                }
            }
            Ok(stream_info(s, full, count as usize, r3))
        }
    }
}

pub(crate) fn subcommand_error_args(args: &[Bytes]) -> Frame {
    Frame::error(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
        lossy(&args[1]).chars().take(128).collect::<String>(),
        lossy(&args[0]).to_ascii_uppercase()
    ))
}

/// `radix-tree-nodes`: the nodes of Redis's radix tree holding the
/// stream's listpack nodes, keyed by their master IDs as 16 big-endian
/// bytes. A rax keeps the canonical compressed shape (one node per run of
/// shared bytes, one per branching point, one per key end), so the count
/// follows from the keys alone.
fn rax_nodes(s: &Stream) -> i64 {
    fn count(keys: &[[u8; 16]], d: usize) -> i64 {
        if d == 16 {
            return 1;
        }
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return 1;
        };
        let mut p = 0;
        while d + p < 16 && first[d + p] == last[d + p] {
            p += 1;
        }
        if p > 0 {
            return 1 + count(keys, d + p);
        }
        let mut total = 1;
        let mut i = 0;
        while i < keys.len() {
            let byte = keys[i][d];
            let j = i + keys[i..].iter().take_while(|k| k[d] == byte).count();
            total += count(&keys[i..j], d + 1);
            i = j;
        }
        total
    }
    let keys: Vec<[u8; 16]> = s
        .node_ids()
        .map(|id| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&id.ms.to_be_bytes());
            k[8..].copy_from_slice(&id.seq.to_be_bytes());
            k
        })
        .collect();
    count(&keys, 0)
}

fn stream_info(s: &Stream, full: bool, count: usize, r3: bool) -> Frame {
    let mut pairs = vec![
        ("length", Frame::Integer(s.len() as i64)),
        ("radix-tree-keys", Frame::Integer(s.node_count() as i64)),
        ("radix-tree-nodes", Frame::Integer(rax_nodes(s))),
        ("last-generated-id", id_frame(s.last_id)),
        ("max-deleted-entry-id", id_frame(s.max_deleted_id)),
        ("entries-added", Frame::Integer(s.entries_added as i64)),
        ("recorded-first-entry-id", id_frame(s.first_id)),
    ];
    let limit = if count == 0 { usize::MAX } else { count };
    if !full {
        pairs.push(("groups", Frame::Integer(s.groups.len() as i64)));
        pairs.push((
            "first-entry",
            s.iter()
                .next()
                .map_or_else(|| null(r3), |(id, f)| entry_frame(*id, f)),
        ));
        pairs.push((
            "last-entry",
            s.iter()
                .next_back()
                .map_or_else(|| null(r3), |(id, f)| entry_frame(*id, f)),
        ));
        return map(r3, pairs);
    }
    pairs.push((
        "entries",
        Frame::Array(
            s.iter()
                .take(limit)
                .map(|(id, f)| entry_frame(*id, f))
                .collect(),
        ),
    ));
    let groups = s
        .groups
        .iter()
        .map(|(name, g)| {
            let pending = g
                .pel
                .iter()
                .take(limit)
                .map(|(id, n)| {
                    Frame::Array(vec![
                        id_frame(*id),
                        Frame::Bulk(n.consumer.clone()),
                        Frame::Integer(n.delivery_time as i64),
                        Frame::Integer(n.delivery_count as i64),
                    ])
                })
                .collect();
            let consumers = g
                .consumers
                .iter()
                .map(|(cname, c)| {
                    let pel = c
                        .pel
                        .iter()
                        .take(limit)
                        .filter_map(|id| g.pel.get(id).map(|n| (id, n)))
                        .map(|(id, n)| {
                            Frame::Array(vec![
                                id_frame(*id),
                                Frame::Integer(n.delivery_time as i64),
                                Frame::Integer(n.delivery_count as i64),
                            ])
                        })
                        .collect();
                    map(
                        r3,
                        vec![
                            ("name", Frame::Bulk(cname.clone())),
                            ("seen-time", Frame::Integer(c.seen_time as i64)),
                            ("pel-count", Frame::Integer(c.pel.len() as i64)),
                            ("pending", Frame::Array(pel)),
                        ],
                    )
                })
                .collect();
            map(
                r3,
                vec![
                    ("name", Frame::Bulk(name.clone())),
                    ("last-delivered-id", id_frame(g.last_id)),
                    ("entries-read", entries_read(g, r3)),
                    ("lag", opt_int(s.lag(g), r3)),
                    ("pel-count", Frame::Integer(g.pel.len() as i64)),
                    ("pending", Frame::Array(pending)),
                    ("consumers", Frame::Array(consumers)),
                ],
            )
        })
        .collect();
    pairs.push(("groups", Frame::Array(groups)));
    map(r3, pairs)
}
