//! `cjson.encode`: Lua values to lua-cjson's JSON.

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::{Config, MAX_C_STACK};
use crate::args::{number, one, raise, Args, Fault, Outcome};
use crate::numfmt::format_g;
use crate::pending::Pending;

pub(super) fn encode(
    lua: &Lua,
    next_fn: &Function,
    cfg: &Config,
    a: Args<'_>,
) -> Outcome<MultiValue> {
    if a.len() != 1 {
        return Err(a.arg_error(1, "expected 1 argument"));
    }
    let mut out = Vec::new();
    let v = a.get(1).cloned().unwrap_or(Value::Nil);
    append_value(lua, next_fn, cfg, v, &mut out)?;
    Ok(one(Value::String(lua.create_string(&out)?)))
}

fn cannot(v: &Value, reason: &str) -> Fault {
    raise(format!(
        "Cannot serialise {}: {reason}",
        crate::args::typename(Some(v))
    ))
}

fn append_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

fn append_number(cfg: &Config, v: &Value, n: f64, out: &mut Vec<u8>) -> Outcome<()> {
    match cfg.encode_invalid_numbers {
        0 if !n.is_finite() => return Err(cannot(v, "must not be NaN or Inf")),
        1 if n.is_nan() => {
            out.extend_from_slice(b"nan");
            return Ok(());
        }
        2 if !n.is_finite() => {
            out.extend_from_slice(b"null");
            return Ok(());
        }
        _ => {}
    }
    out.extend_from_slice(format_g(n, cfg.number_precision as usize).as_bytes());
    Ok(())
}

/// `lua_array_length`: the array size when every key is an integer >= 1
/// and the table is not too sparse; -1 for an object.
fn array_length(cfg: &Config, t: &Table) -> Outcome<i32> {
    let mut max: i32 = 0;
    let mut items: i32 = 0;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        match number(&k) {
            Some(k) if k != 0.0 && k.floor() == k && k >= 1.0 => {
                if k > f64::from(max) {
                    // C assigns the double to an int; beyond INT_MAX x86
                    // gives INT_MIN.
                    max = if k <= f64::from(i32::MAX) {
                        k as i32
                    } else {
                        i32::MIN
                    };
                }
                items += 1;
            }
            _ => return Ok(-1),
        }
    }
    if cfg.sparse_ratio > 0 && max > items.wrapping_mul(cfg.sparse_ratio) && max > cfg.sparse_safe {
        if !cfg.sparse_convert {
            return Err(raise("Cannot serialise table: excessively sparse array"));
        }
        return Ok(-1);
    }
    Ok(max)
}

/// A table being written: an array by index, or an object by its pairs.
/// A small object's pairs are collected up front; past a budget of held
/// pairs (see `pending`: mlua handles are a bounded resource) an object is
/// walked with `next` from its current key instead, the table and key
/// waiting in the `Pending`. Arrays' tables wait there too.
enum Open {
    Array {
        len: i32,
        next: i32,
    },
    Object {
        pairs: Vec<(Value, Value)>,
        next: usize,
    },
    Walk {
        first: bool,
    },
}

/// Pairs the open objects may hold as Rust handles in all.
const COLLECT_BUDGET: usize = 1024;

impl Open {
    /// Lua stack slots C holds for this level while a child is written:
    /// the child for an array, the key and the child for an object.
    fn slots(&self) -> usize {
        match self {
            Open::Array { .. } => 1,
            Open::Object { .. } | Open::Walk { .. } => 2,
        }
    }
}

/// An object's pairs in `lua_next` order, unless there are more than
/// `budget`.
fn collect_pairs(t: &Table, budget: usize) -> mlua::Result<Option<Vec<(Value, Value)>>> {
    let mut pairs = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        if pairs.len() == budget {
            return Ok(None);
        }
        pairs.push(pair?);
    }
    Ok(Some(pairs))
}

/// Writes an object key (`"key":`).
fn append_key(cfg: &Config, k: &Value, out: &mut Vec<u8>) -> Outcome<()> {
    match k {
        Value::Integer(_) | Value::Number(_) => {
            out.push(b'"');
            append_number(cfg, k, number(k).unwrap_or(0.0), out)?;
            out.extend_from_slice(b"\":");
        }
        Value::String(s) => {
            append_string(&s.as_bytes(), out);
            out.push(b':');
        }
        _ => return Err(cannot(k, "table key must be a number or string")),
    }
    Ok(())
}

/// `json_append_data`, iterative so deep tables cannot exhaust the native
/// stack.
fn append_value(
    lua: &Lua,
    next_fn: &Function,
    cfg: &Config,
    v: Value,
    out: &mut Vec<u8>,
) -> Outcome<()> {
    let mut open: Vec<Open> = Vec::new();
    let mut pending = Pending::new(lua);
    let mut collected = 0usize;
    // The argument itself occupies one slot.
    let mut slots = 1usize;
    let mut v = v;
    loop {
        match &v {
            Value::String(s) => append_string(&s.as_bytes(), out),
            Value::Integer(_) | Value::Number(_) => {
                append_number(cfg, &v, number(&v).unwrap_or(0.0), out)?;
            }
            Value::Boolean(true) => out.extend_from_slice(b"true"),
            Value::Boolean(false) => out.extend_from_slice(b"false"),
            Value::Nil => out.extend_from_slice(b"null"),
            Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
            Value::Table(t) => {
                let depth = open.len() + 1;
                if depth > cfg.encode_max_depth as usize || slots + 3 > MAX_C_STACK {
                    return Err(raise(format!(
                        "Cannot serialise, excessive nesting ({depth})"
                    )));
                }
                let len = array_length(cfg, t)?;
                let frame = if len > 0 {
                    out.push(b'[');
                    pending.push(v.clone())?;
                    Open::Array { len, next: 1 }
                } else {
                    out.push(b'{');
                    match collect_pairs(t, COLLECT_BUDGET - collected)? {
                        Some(pairs) => {
                            collected += pairs.len();
                            Open::Object { pairs, next: 0 }
                        }
                        None => {
                            pending.push(v.clone())?;
                            pending.push(Value::Nil)?;
                            Open::Walk { first: true }
                        }
                    }
                };
                slots += frame.slots();
                open.push(frame);
            }
            _ => return Err(cannot(&v, "type not supported")),
        }
        // The next value to write: the next item of the innermost open
        // table, closing the tables that are done.
        v = loop {
            let Some(frame) = open.last_mut() else {
                return Ok(());
            };
            match frame {
                Open::Array { len, next } => {
                    if *next <= *len {
                        if *next > 1 {
                            out.push(b',');
                        }
                        let item: Value = pending.table(0)?.raw_get(i64::from(*next))?;
                        *next += 1;
                        break item;
                    }
                    out.push(b']');
                    pending.pop()?;
                }
                Open::Object { pairs, next } => {
                    if let Some((k, item)) = pairs.get_mut(*next) {
                        if *next > 0 {
                            out.push(b',');
                        }
                        *next += 1;
                        append_key(cfg, k, out)?;
                        break std::mem::replace(item, Value::Nil);
                    }
                    out.push(b'}');
                    collected -= pairs.len();
                }
                Open::Walk { first } => {
                    let key = pending.peek(0)?.clone();
                    let table = pending.table(1)?.clone();
                    let (k, item): (Value, Value) = next_fn.call((table, key))?;
                    if k != Value::Nil {
                        if !*first {
                            out.push(b',');
                        }
                        *first = false;
                        append_key(cfg, &k, out)?;
                        pending.replace_top(k)?;
                        break item;
                    }
                    out.push(b'}');
                    pending.pop()?;
                    pending.pop()?;
                }
            }
            if let Some(done) = open.pop() {
                slots -= done.slots();
            }
        };
    }
}
