//! `cmsgpack`: lua-cmsgpack 0.4.0 as Redis 7.0 bundles it.
//!
//! Its choices are part of what scripts store: the smallest integer form,
//! a 4-byte float whenever the double survives the round trip, str8
//! (`0xd9`) but never bin, a table as an array only when its keys are
//! exactly 1..n (so `{}` packs as an empty array), tables nested 16 deep
//! packed as nil. Unpacking knows no bin/ext types ("Bad data format") and
//! gives every number as a Lua double.

use mlua::{Lua, MultiValue, Table, Value};

use crate::args::{number, one, raise, Args, Fault, Outcome, Wrapper};
use crate::pending::Pending;

/// `LUACMSGPACK_MAX_NESTING`: a table this deep packs as nil, which is how
/// a table containing itself survives.
const MAX_NESTING: u32 = 16;

/// `LUAI_MAXCSTACK`: the stack slots a C function may use. lua_cmsgpack.c
/// checks it while unpacking, so the same inputs fail with its messages;
/// counting slots as C would also bounds our recursion.
const MAX_C_STACK: usize = 8000;

pub(crate) fn open(lua: &Lua, w: &Wrapper) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("pack", w.wrap(lua, "pack", pack)?)?;
    t.set(
        "unpack",
        w.wrap_spread(lua, "unpack", |lua, a| unpack_full(lua, a, 0, 0))?,
    )?;
    t.set(
        "unpack_one",
        w.wrap_spread(lua, "unpack_one", |lua, mut a| {
            let offset = a.opt_integer(2, 0)?;
            a.truncate(1);
            unpack_full(lua, a, 1, offset)
        })?,
    )?;
    t.set(
        "unpack_limit",
        w.wrap_spread(lua, "unpack_limit", |lua, mut a| {
            let limit = a.check_integer(2)?;
            let offset = a.opt_integer(3, 0)?;
            a.truncate(1);
            unpack_full(lua, a, limit, offset)
        })?,
    )?;
    t.set("_NAME", "cmsgpack")?;
    t.set("_VERSION", "lua-cmsgpack 0.4.0")?;
    t.set("_COPYRIGHT", "Copyright (C) 2012, Salvatore Sanfilippo")?;
    t.set("_DESCRIPTION", "MessagePack C implementation for Lua")?;
    Ok(t)
}

// ===== Packing =====

fn pack(lua: &Lua, a: Args<'_>) -> Outcome<MultiValue> {
    if a.len() == 0 {
        return Err(a.arg_error(0, "MessagePack pack needs input."));
    }
    let mut out = Vec::new();
    for i in 1..=a.len() {
        let v = a.get(i).cloned().unwrap_or(Value::Nil);
        encode_value(&v, 0, &mut out)?;
    }
    Ok(one(Value::String(lua.create_string(&out)?)))
}

/// A header: the fix form's tag ORed with `n` when `n` fits `fix_max`,
/// else the 16- or 32-bit form (or 8-bit for strings).
fn put_len(out: &mut Vec<u8>, n: usize, fix: u8, fix_max: usize, tags: [u8; 3]) {
    if n <= fix_max {
        out.push(fix | n as u8);
    } else if tags[0] != 0 && n <= 0xff {
        out.extend_from_slice(&[tags[0], n as u8]);
    } else if n <= 0xffff {
        out.push(tags[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(tags[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn encode_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        if n <= 127 {
            out.push(n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[0xcc, n as u8]);
        } else if n <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= -128 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -2_147_483_648 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn encode_number(n: f64, out: &mut Vec<u8>) {
    // IS_INT64_EQUIVALENT: (int64_t)n == n, which on x86 holds exactly for
    // integral values in [-2^63, 2^63).
    if n.is_finite()
        && n.trunc() == n
        && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&n)
    {
        encode_int(n as i64, out);
        return;
    }
    let f = n as f32;
    if f64::from(f) == n {
        out.push(0xca);
        out.extend_from_slice(&f.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// `table_is_an_array`: keys exactly 1..count (each an integral number
/// that fits a C int).
fn is_array(t: &Table) -> Outcome<bool> {
    let mut count: i64 = 0;
    let mut max: i64 = 0;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let n = match number(&k) {
            Some(n) if n > 0.0 && n.trunc() == n && n <= f64::from(i32::MAX) => n as i64,
            _ => return Ok(false),
        };
        max = max.max(n);
        count += 1;
    }
    Ok(max == count)
}

fn encode_value(v: &Value, level: u32, out: &mut Vec<u8>) -> Outcome<()> {
    match v {
        Value::String(s) => {
            let b = s.as_bytes();
            put_len(out, b.len(), 0xa0, 31, [0xd9, 0xda, 0xdb]);
            out.extend_from_slice(&b);
        }
        Value::Boolean(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Integer(_) | Value::Number(_) => encode_number(number(v).unwrap_or(0.0), out),
        Value::Table(t) if level < MAX_NESTING => {
            if is_array(t)? {
                let len = t.raw_len();
                put_len(out, len, 0x90, 15, [0, 0xdc, 0xdd]);
                for j in 1..=len {
                    // lua_gettable: an __index metamethod takes part.
                    let item: Value = t.get(j as i64)?;
                    encode_value(&item, level + 1, out)?;
                }
            } else {
                // Two walks, as C does: count, then write. (Collecting the
                // pairs would hold a handle for each; see `pending`.)
                let mut count = 0usize;
                for pair in t.pairs::<Value, Value>() {
                    pair?;
                    count += 1;
                }
                put_len(out, count, 0x80, 15, [0, 0xde, 0xdf]);
                for pair in t.pairs::<Value, Value>() {
                    let (k, item) = pair?;
                    encode_value(&k, level + 1, out)?;
                    encode_value(&item, level + 1, out)?;
                }
            }
        }
        _ => out.push(0xc0),
    }
    Ok(())
}

// ===== Unpacking =====

enum Stop {
    /// `MP_CUR_ERROR_EOF`
    Eof,
    /// `MP_CUR_ERROR_BADFMT`
    BadFormat,
    Fault(Fault),
}

impl From<mlua::Error> for Stop {
    fn from(e: mlua::Error) -> Self {
        Stop::Fault(Fault::Lua(e))
    }
}

struct Decoder<'a> {
    lua: &'a Lua,
    data: &'a [u8],
    pos: usize,
    /// Stack slots the C function would hold now (`top - base`).
    slots: usize,
}

impl Decoder<'_> {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn need(&self, n: usize) -> Result<(), Stop> {
        if self.left() < n {
            Err(Stop::Eof)
        } else {
            Ok(())
        }
    }

    fn check_stack(&self, n: usize, what: &str) -> Result<(), Stop> {
        if self.slots + n > MAX_C_STACK {
            return Err(Stop::Fault(raise(format!("stack overflow ({what})"))));
        }
        Ok(())
    }

    fn byte(&self, i: usize) -> u8 {
        self.data[self.pos + i]
    }

    fn be(&self, from: usize, n: usize) -> u64 {
        (0..n).fold(0u64, |acc, k| (acc << 8) | u64::from(self.byte(from + k)))
    }

    /// A number of `n` big-endian bytes after the tag.
    fn fixed(&mut self, n: usize) -> Result<u64, Stop> {
        self.need(1 + n)?;
        let v = self.be(1, n);
        self.pos += 1 + n;
        Ok(v)
    }

    fn string(&mut self, header: usize, len: usize) -> Result<Item, Stop> {
        self.need(header.saturating_add(len))?;
        let start = self.pos + header;
        let s = self.lua.create_string(&self.data[start..start + len])?;
        self.pos += header + len;
        Ok(Item::Scalar(Value::String(s)))
    }

    /// A length of `n` bytes after the tag; then the tag and length are
    /// consumed.
    fn length(&mut self, n: usize) -> Result<usize, Stop> {
        self.need(1 + n)?;
        let l = self.be(1, n) as usize;
        self.pos += 1 + n;
        Ok(l)
    }

    /// One item's header: a whole scalar, or a container's length (its
    /// tag and length consumed).
    fn item(&mut self) -> Result<Item, Stop> {
        self.need(1)?;
        self.check_stack(
            1,
            "too many return values at once; use unpack_one or unpack_limit instead.",
        )?;
        let tag = self.byte(0);
        let num = |v: f64| Ok(Item::Scalar(Value::Number(v)));
        match tag {
            0xcc => num(self.fixed(1)? as f64),
            0xd0 => num(f64::from(self.fixed(1)? as u8 as i8)),
            0xcd => num(self.fixed(2)? as f64),
            0xd1 => num(f64::from(self.fixed(2)? as u16 as i16)),
            0xce => num(self.fixed(4)? as f64),
            0xd2 => num(f64::from(self.fixed(4)? as u32 as i32)),
            // lua_pushunsigned is lua_pushinteger here: a value above 2^63
            // wraps negative before becoming a double.
            0xcf => num(self.fixed(8)? as i64 as f64),
            0xd3 => num(self.fixed(8)? as i64 as f64),
            0xc0 => {
                self.pos += 1;
                Ok(Item::Scalar(Value::Nil))
            }
            0xc3 | 0xc2 => {
                self.pos += 1;
                Ok(Item::Scalar(Value::Boolean(tag == 0xc3)))
            }
            0xca => num(f64::from(f32::from_bits(self.fixed(4)? as u32))),
            0xcb => num(f64::from_bits(self.fixed(8)?)),
            0xd9 => {
                self.need(2)?;
                let l = usize::from(self.byte(1));
                self.string(2, l)
            }
            0xda => {
                self.need(3)?;
                let l = self.be(1, 2) as usize;
                self.string(3, l)
            }
            0xdb => {
                let l = self.length(4)?;
                self.string(0, l)
            }
            0xdc => Ok(Item::Array(self.length(2)?)),
            0xdd => Ok(Item::Array(self.length(4)?)),
            0xde => Ok(Item::Map(self.length(2)?)),
            0xdf => Ok(Item::Map(self.length(4)?)),
            _ if tag & 0x80 == 0 => {
                self.pos += 1;
                num(f64::from(tag))
            }
            _ if tag & 0xe0 == 0xe0 => {
                self.pos += 1;
                num(f64::from(tag as i8))
            }
            _ if tag & 0xe0 == 0xa0 => self.string(1, usize::from(tag & 0x1f)),
            _ if tag & 0xf0 == 0x90 => {
                self.pos += 1;
                Ok(Item::Array(usize::from(tag & 0xf)))
            }
            _ if tag & 0xf0 == 0x80 => {
                self.pos += 1;
                Ok(Item::Map(usize::from(tag & 0xf)))
            }
            _ => Err(Stop::BadFormat),
        }
    }

    /// One whole value. Iterative, with the containers being filled on an
    /// explicit stack, so deep nesting cannot exhaust the native stack;
    /// `slots` follows the recursive C code's use of the Lua stack, so the
    /// same depth fails with the same message.
    fn value(&mut self) -> Result<Value, Stop> {
        let mut open: Vec<Frame> = Vec::new();
        let mut pending = Pending::new(self.lua);
        loop {
            let mut v = match self.item()? {
                Item::Scalar(v) => v,
                Item::Array(len) => {
                    let table = self.lua.create_table()?;
                    self.slots += 1;
                    self.check_stack(1, "in function mp_decode_to_lua_array")?;
                    if len > 0 {
                        self.slots += 1; // the index pushed before each item
                        pending.push(Value::Table(table))?;
                        open.push(Frame::Array { len, next: 1 });
                        continue;
                    }
                    self.slots -= 1;
                    Value::Table(table)
                }
                Item::Map(len) => {
                    let table = self.lua.create_table()?;
                    self.slots += 1;
                    if len > 0 {
                        pending.push(Value::Table(table))?;
                        open.push(Frame::Map {
                            left: len,
                            has_key: false,
                        });
                        continue;
                    }
                    self.slots -= 1;
                    Value::Table(table)
                }
            };
            // Store `v` in the innermost open container; a container that
            // is now full becomes the value stored in its parent.
            loop {
                let Some(frame) = open.last_mut() else {
                    return Ok(v);
                };
                let full = match frame {
                    Frame::Array { len, next } => {
                        self.slots -= 1;
                        pending.table(0)?.raw_set(*next as i64, v)?;
                        *next += 1;
                        if *next <= *len {
                            self.slots += 1;
                        }
                        *next > *len
                    }
                    Frame::Map { has_key, .. } if !*has_key => {
                        // A key: it waits for its value.
                        *has_key = true;
                        pending.push(v)?;
                        self.slots += 1;
                        break;
                    }
                    Frame::Map { left, has_key } => {
                        *has_key = false;
                        let k = pending.pop()?;
                        self.slots -= 1;
                        // lua_settable's own checks on the key.
                        let bad = match &k {
                            Value::Nil => Some("table index is nil"),
                            Value::Number(n) if n.is_nan() => Some("table index is NaN"),
                            _ => None,
                        };
                        if let Some(msg) = bad {
                            return Err(Stop::Fault(Fault::Bare(msg.as_bytes().to_vec())));
                        }
                        pending.table(0)?.raw_set(k, v)?;
                        *left -= 1;
                        *left == 0
                    }
                };
                if !full {
                    break;
                }
                open.pop();
                self.slots -= 1;
                v = pending.pop()?;
            }
        }
    }
}

enum Item {
    Scalar(Value),
    Array(usize),
    Map(usize),
}

/// A container being filled.
enum Frame {
    Array { len: usize, next: usize },
    Map { left: usize, has_key: bool },
}

/// `mp_unpack_full`: up to `limit` values from `offset`; with neither,
/// every value. With either, the next offset (-1 at the end) comes first.
fn unpack_full(lua: &Lua, a: Args<'_>, limit: i64, offset: i64) -> Outcome<(Table, usize)> {
    let data = a.check_bytes(1)?;
    let len = data.len();
    if offset < 0 || limit < 0 {
        // The C message prints the input length where it means the limit.
        return Err(raise(format!(
            "Invalid request to unpack with offset of {} and limit of {}.",
            offset as i32, len as i32
        )));
    }
    if offset as u64 > len as u64 {
        return Err(raise(format!(
            "Start offset {} greater than input length {}.",
            offset as i32, len as i32
        )));
    }
    let decode_all = limit == 0 && offset == 0;
    let limit = if decode_all {
        i64::from(i32::MAX)
    } else {
        limit
    };
    let mut d = Decoder {
        lua,
        data: &data,
        pos: offset as usize,
        slots: a.len(),
    };
    // The results go to a table (the wrapper spreads it), so that many
    // of them cost no mlua handles; slot 1 is kept for the offset.
    let out = lua.create_table()?;
    let first = if decode_all { 1 } else { 2 };
    let mut count = 0;
    while d.left() > 0 && count < limit {
        match d.value() {
            Ok(v) => out.raw_set(first + count, v)?,
            Err(Stop::Eof) => return Err(raise("Missing bytes in input.")),
            Err(Stop::BadFormat) => return Err(raise("Bad data format in input.")),
            Err(Stop::Fault(f)) => return Err(f),
        }
        d.slots += 1;
        count += 1;
    }
    if !decode_all {
        if d.slots + 1 > MAX_C_STACK {
            return Err(raise("stack overflow (in function mp_unpack_full)"));
        }
        let next = if d.left() == 0 { -1 } else { d.pos as i64 };
        out.raw_set(1, next)?;
    }
    Ok((out, (first - 1 + count) as usize))
}
