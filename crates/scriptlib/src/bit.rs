//! `bit`: LuaBitOp 1.0.2 as Redis 7.0 bundles it.
//!
//! Every argument becomes a 32-bit value the way LuaBitOp does it: add
//! 2^52+2^51 to the double and keep the low 32 bits of its representation
//! (round to nearest, modulo 2^32); results are signed 32-bit numbers.

use mlua::{Lua, MultiValue, Table, Value};

use crate::args::{one, Args, Outcome, Wrapper};

/// `barg`: argument `i` as 32 bits. A value that is not a number (nor a
/// numeric string) is refused, as `luaL_typerror` does.
fn barg(a: &Args<'_>, i: usize) -> Outcome<u32> {
    let n = a.to_number(i)?;
    let b = (n.unwrap_or(0.0) + 6_755_399_441_055_744.0).to_bits() as u32;
    if b == 0 && n.is_none() {
        return Err(a.type_error(i, "number"));
    }
    Ok(b)
}

/// `BRET`: a result as a signed 32-bit number.
fn ret(b: u32) -> Outcome<MultiValue> {
    Ok(one(Value::Number(f64::from(b as i32))))
}

/// A two-operand bit operation.
type Op = fn(u32, u32) -> u32;

pub(crate) fn open(lua: &Lua, w: &Wrapper) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("tobit", w.wrap(lua, "tobit", |_, a| ret(barg(&a, 1)?))?)?;
    t.set("bnot", w.wrap(lua, "bnot", |_, a| ret(!barg(&a, 1)?))?)?;
    let folds: [(&'static str, Op); 3] = [
        ("band", |x, y| x & y),
        ("bor", |x, y| x | y),
        ("bxor", |x, y| x ^ y),
    ];
    for (name, op) in folds {
        t.set(
            name,
            w.wrap(lua, name, move |_, a| {
                // LuaBitOp folds from the last argument down to the second.
                let mut b = barg(&a, 1)?;
                for i in (2..=a.len()).rev() {
                    b = op(b, barg(&a, i)?);
                }
                ret(b)
            })?,
        )?;
    }
    let shifts: [(&'static str, Op); 5] = [
        ("lshift", |b, n| b << n),
        ("rshift", |b, n| b >> n),
        ("arshift", |b, n| ((b as i32) >> n) as u32),
        ("rol", |b, n| b.rotate_left(n)),
        ("ror", |b, n| b.rotate_right(n)),
    ];
    for (name, op) in shifts {
        t.set(
            name,
            w.wrap(lua, name, move |_, a| {
                let b = barg(&a, 1)?;
                let n = barg(&a, 2)? & 31;
                ret(op(b, n))
            })?,
        )?;
    }
    t.set(
        "bswap",
        w.wrap(lua, "bswap", |_, a| ret(barg(&a, 1)?.swap_bytes()))?,
    )?;
    t.set("tohex", w.wrap(lua, "tohex", tohex)?)?;
    Ok(t)
}

/// `bit.tohex(x [, n])`: the low `|n|` hex digits (at most 8), upper case
/// when `n` is negative. n = -2^31 is taken as -(2^31-1), the fix Redis
/// made later for CVE-2024-31449 (7.0.15 overruns a buffer there).
fn tohex(lua: &Lua, a: Args<'_>) -> Outcome<MultiValue> {
    let mut b = barg(&a, 1)?;
    let mut n: i32 = if a.len() < 2 { 8 } else { barg(&a, 2)? as i32 };
    if n == i32::MIN {
        n = i32::MIN + 1;
    }
    let digits: &[u8; 16] = if n < 0 {
        n = -n;
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let n = n.min(8) as usize;
    let mut buf = vec![0u8; n];
    for slot in buf.iter_mut().rev() {
        *slot = digits[(b & 15) as usize];
        b >>= 4;
    }
    Ok(one(Value::String(lua.create_string(&buf)?)))
}
