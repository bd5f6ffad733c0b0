//! `DUMP` and `RESTORE`: values in Redis's serialization (an RDB value, the
//! RDB version, a CRC64), so a payload moves between the store and a real
//! Redis either way.
//!
//! `RESTORE` reads every encoding Redis 7.0 writes (the `rdb` crate's
//! decoder). `DUMP` writes the plain encodings every Redis since 2.x reads
//! (string, list, set, hash, sorted set with binary scores), not the
//! compact ones Redis picks for small values: the bytes differ from
//! Redis's own `DUMP`, the value they restore to does not. Streams are
//! written as Redis 7.0 writes them (listpack nodes, counters, groups).

use bytes::{BufMut, Bytes, BytesMut};
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply, NOT_INT, SYNTAX};
use crate::num;
use crate::pubsub::class::GENERIC;
use crate::value::Value;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[("dump", dump), ("restore", restore)];

/// The RDB version written in the footer: Redis 7.0's, so 7.0 accepts it.
const RDB_VERSION: u16 = 10;

fn dump(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let Some(v) = ctx.lookup_read(key) else {
        return Ok(ctx.null());
    };
    Ok(Frame::Bulk(encode(v)))
}

/// The payload `DUMP` returns for `v`.
pub fn encode(v: &Value) -> Bytes {
    let mut out = BytesMut::new();
    match v {
        Value::Str(s) => {
            out.put_u8(0);
            put_string(&mut out, s);
        }
        Value::List(items) => {
            out.put_u8(1);
            put_len(&mut out, items.len() as u64);
            for i in items {
                put_string(&mut out, i);
            }
        }
        Value::Set(members) => {
            out.put_u8(2);
            put_len(&mut out, members.len() as u64);
            for m in members.iter() {
                put_string(&mut out, m);
            }
        }
        Value::ZSet(z) => {
            // ZSET_2: scores as little-endian binary doubles.
            out.put_u8(5);
            put_len(&mut out, z.len() as u64);
            for (m, s) in z.iter() {
                put_string(&mut out, m);
                out.put_f64_le(s);
            }
        }
        Value::Hash(h) => {
            out.put_u8(4);
            put_len(&mut out, h.len() as u64);
            for (f, v) in h.iter() {
                put_string(&mut out, f);
                put_string(&mut out, v);
            }
        }
        Value::Stream(st) => put_stream(&mut out, st),
    }
    out.put_u16_le(RDB_VERSION);
    let crc = rdb::crc64(&out);
    out.put_u64_le(crc);
    out.freeze()
}

/// Entries per listpack node, as Redis's `stream-node-max-entries`.
const STREAM_NODE_ENTRIES: usize = 100;

/// A stream as Redis 7.0 writes it (`RDB_TYPE_STREAM_LISTPACKS_2`): nodes
/// of up to 100 entries keyed by their first ID, each a listpack with a
/// master entry (live count, 0 deleted, the first entry's fields) and the
/// entries as deltas from it; then the counters and the consumer groups
/// with their pending entries and consumers.
fn put_stream(out: &mut BytesMut, st: &crate::stream::Stream) {
    use crate::stream::StreamId;
    const SAME_FIELDS: i64 = 2;
    let raw_id = |out: &mut BytesMut, id: &StreamId| {
        out.put_u64(id.ms);
        out.put_u64(id.seq);
    };
    out.put_u8(19);
    let entries: Vec<_> = st.entries.iter().collect();
    put_len(out, entries.chunks(STREAM_NODE_ENTRIES).len() as u64);
    for node in entries.chunks(STREAM_NODE_ENTRIES) {
        let (master, master_fields) = node[0];
        let mut lp = rdb::ListpackWriter::new();
        lp.int(node.len() as i64)
            .int(0)
            .int(master_fields.len() as i64);
        for (f, _) in master_fields {
            lp.bytes(f);
        }
        lp.int(0);
        for (id, fields) in node {
            let same = fields.len() == master_fields.len()
                && fields.iter().zip(master_fields).all(|(a, b)| a.0 == b.0);
            lp.int(if same { SAME_FIELDS } else { 0 })
                .int(id.ms.wrapping_sub(master.ms) as i64)
                .int(id.seq.wrapping_sub(master.seq) as i64);
            if same {
                for (_, v) in fields.iter() {
                    lp.bytes(v);
                }
                lp.int(fields.len() as i64 + 3);
            } else {
                lp.int(fields.len() as i64);
                for (f, v) in fields.iter() {
                    lp.bytes(f).bytes(v);
                }
                lp.int(2 * fields.len() as i64 + 4);
            }
        }
        let mut key = BytesMut::new();
        raw_id(&mut key, master);
        put_string(out, &key);
        put_string(out, &lp.finish());
    }
    put_len(out, st.entries.len() as u64);
    for id in [&st.last_id, &st.first_id, &st.max_deleted_id] {
        put_len(out, id.ms);
        put_len(out, id.seq);
    }
    put_len(out, st.entries_added);
    put_len(out, st.groups.len() as u64);
    for (name, g) in &st.groups {
        put_string(out, name);
        put_len(out, g.last_id.ms);
        put_len(out, g.last_id.seq);
        // -1 (unknown) is stored as Redis stores it: all bits set.
        put_len(out, g.entries_read as u64);
        put_len(out, g.pel.len() as u64);
        for (id, nack) in &g.pel {
            raw_id(out, id);
            out.put_u64_le(nack.delivery_time);
            put_len(out, nack.delivery_count);
        }
        put_len(out, g.consumers.len() as u64);
        for (cname, c) in &g.consumers {
            put_string(out, cname);
            out.put_u64_le(c.seen_time);
            put_len(out, c.pel.len() as u64);
            for id in &c.pel {
                raw_id(out, id);
            }
        }
    }
}

/// An RDB length: 6, 14, 32 or 64 bits, by size.
fn put_len(out: &mut BytesMut, n: u64) {
    if n < 1 << 6 {
        out.put_u8(n as u8);
    } else if n < 1 << 14 {
        out.put_u8(0x40 | (n >> 8) as u8);
        out.put_u8(n as u8);
    } else if n <= u32::MAX as u64 {
        out.put_u8(0x80);
        out.put_u32(n as u32);
    } else {
        out.put_u8(0x81);
        out.put_u64(n);
    }
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.put_slice(s);
}

/// A decoded RDB value as the store holds it; `None` for a module type.
pub fn from_rdb(v: rdb::Value) -> Option<Value> {
    Some(match v {
        rdb::Value::String(s) => Value::Str(s),
        rdb::Value::List(items) => Value::list(items),
        rdb::Value::Set(members) => Value::set(members),
        rdb::Value::Hash(pairs) => Value::hash(pairs),
        rdb::Value::ZSet(pairs) => Value::zset(pairs),
        rdb::Value::Stream(s) => stream_from_rdb(*s),
        rdb::Value::Module { .. } => return None,
    })
}

/// A decoded RDB stream: entries, counters, groups with their pending
/// entries and consumers. A pending entry no consumer owns (not something
/// Redis writes) is dropped.
fn stream_from_rdb(s: rdb::Stream) -> Value {
    use crate::stream::{Consumer, Group, Nack, Stream, StreamId};
    let id = |i: rdb::StreamId| StreamId::new(i.ms, i.seq);
    let mut out = Stream::new();
    for e in s.entries {
        out.append(id(e.id), e.fields);
    }
    out.last_id = id(s.last_id);
    out.first_id = id(s.first_id);
    out.max_deleted_id = id(s.max_deleted_entry_id);
    out.entries_added = s.entries_added;
    for g in s.groups {
        // Unknown (-1) when the RDB has none or stored it as invalid.
        let read = g.entries_read.map_or(-1, |r| r as i64);
        let mut group = Group::new(id(g.last_delivered_id), read);
        let pel: std::collections::HashMap<StreamId, (i64, u64)> = g
            .pel
            .iter()
            .map(|p| (id(p.id), (p.delivery_time_ms, p.delivery_count)))
            .collect();
        for c in g.consumers {
            let mut consumer = Consumer {
                seen_time: c.seen_time_ms.max(0) as u64,
                ..Consumer::default()
            };
            for pid in c.pending {
                let pid = id(pid);
                if let Some((t, n)) = pel.get(&pid) {
                    consumer.pel.insert(pid);
                    group.pel.insert(
                        pid,
                        Nack {
                            consumer: c.name.clone(),
                            delivery_time: (*t).max(0) as u64,
                            delivery_count: *n,
                        },
                    );
                }
            }
            group.consumers.insert(c.name, consumer);
        }
        out.groups.insert(g.name, group);
    }
    Value::Stream(Box::new(out))
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]`, with
/// Redis 7.0's checks in its order. Journaled with the expiry absolute
/// (`ABSTTL`), as Redis propagates it.
pub(crate) fn restore(ctx: &mut Ctx) -> Reply {
    let (mut replace, mut absttl) = (false, false);
    let (mut idle, mut freq) = (false, false);
    let n = ctx.args.len();
    let mut j = 4;
    while j < n {
        let more = n - j - 1;
        if ctx.arg_is(j, "REPLACE") {
            replace = true;
        } else if ctx.arg_is(j, "ABSTTL") {
            absttl = true;
        } else if ctx.arg_is(j, "IDLETIME") && more >= 1 && !freq {
            if ctx.arg_i64(j + 1)? < 0 {
                return Err(err("ERR Invalid IDLETIME value, must be >= 0"));
            }
            idle = true;
            j += 1;
        } else if ctx.arg_is(j, "FREQ") && more >= 1 && !idle {
            let f = ctx.arg_i64(j + 1)?;
            if !(0..=255).contains(&f) {
                return Err(err("ERR Invalid FREQ value, must be >= 0 and <= 255"));
            }
            freq = true;
            j += 1;
        } else {
            return Err(err(SYNTAX));
        }
        j += 1;
    }
    let key = &ctx.args[1];
    if !replace && ctx.lookup(key).is_some() {
        return Err(err("BUSYKEY Target key name already exists."));
    }
    let ttl = num::parse_i64(&ctx.args[2]).ok_or_else(|| err(NOT_INT))?;
    if ttl < 0 {
        return Err(err("ERR Invalid TTL value, must be >= 0"));
    }
    if !footer_ok(&ctx.args[3]) {
        return Err(err("ERR DUMP payload version or checksum are wrong"));
    }
    let value = match rdb::decode_dump(&ctx.args[3]) {
        Ok(v) => v,
        Err(rdb::Error::Checksum { .. } | rdb::Error::Version { .. }) => {
            return Err(err("ERR DUMP payload version or checksum are wrong"));
        }
        Err(_) => return Err(err("ERR Bad data format")),
    };
    let Some(value) = from_rdb(value) else {
        return Err(err(
            "ERR RESTORE of a module value is not supported by the local store: command not executed",
        ));
    };
    if value.is_empty_collection() {
        // Redis refuses to load an empty aggregate.
        return Err(err("ERR Bad data format"));
    }
    let deleted = replace && ctx.delete_quiet(key);
    let at = match (ttl, absttl) {
        (0, _) => None,
        (t, true) => Some(t as u64),
        (t, false) => Some(ctx.now.saturating_add(t as u64)),
    };
    if at.is_some_and(|at| at <= ctx.now) {
        // Already expired: not added; a replaced key is deleted.
        if deleted {
            ctx.modified(key);
            ctx.notify(GENERIC, "del", key);
            ctx.propagate(vec![Bytes::from_static(b"DEL"), key.clone()]);
        }
        return Ok(Frame::simple("OK"));
    }
    ctx.set_value(key, value, false);
    if let Some(at) = at {
        ctx.db().set_expire(key, Some(at));
    }
    ctx.notify(GENERIC, "restore", key);
    let mut journaled = ctx.args.to_vec();
    if let Some(at) = at {
        if !absttl {
            journaled[2] = Bytes::from(at.to_string());
            journaled.push(Bytes::from_static(b"ABSTTL"));
        }
    }
    ctx.propagate(journaled);
    Ok(Frame::simple("OK"))
}

/// Redis's `verifyDumpPayload`: a version it can read and a CRC64 that
/// matches, checked before the value is.
fn footer_ok(p: &[u8]) -> bool {
    if p.len() < 10 {
        return false;
    }
    let footer = &p[p.len() - 10..];
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&footer[2..]);
    version <= RDB_VERSION && rdb::crc64(&p[..p.len() - 8]) == u64::from_le_bytes(sum)
}
