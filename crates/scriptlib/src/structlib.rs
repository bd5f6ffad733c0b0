//! `struct`: Roberto Ierusalimschy's struct library as Redis 7.0 bundles
//! it (x86-64 sizes: `l`, `L` and `T` are 8 bytes, `i` defaults to 4, the
//! native order is little-endian, `!` alone aligns to 8).
//!
//! Formats: `>` `<` byte order, `!n` alignment, `b B h H l L T i[n] I[n]`
//! integers (n up to 32), `f d` floats, `c[n]` (`c0`: the whole string, or
//! on unpack a length from the previous number), `s` zero-terminated,
//! `x` a pad byte, space ignored.

use mlua::{Lua, MultiValue, Table, Value};

use crate::args::{one, raise, Args, Outcome, Wrapper};

const MAX_INT_SIZE: usize = 32;
/// `MAXALIGN` on x86-64: a double's alignment.
const MAX_ALIGN: usize = 8;
/// `LUAI_MAXCSTACK`: results an unpack may push.
const MAX_C_STACK: usize = 8000;

#[derive(Clone, Copy, PartialEq)]
enum Endian {
    Big,
    Little,
}

struct Header {
    endian: Endian,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            endian: Endian::Little,
            align: 1,
        }
    }
}

pub(crate) fn open(lua: &Lua, w: &Wrapper) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("pack", w.wrap(lua, "pack", pack)?)?;
    t.set("unpack", w.wrap(lua, "unpack", unpack)?)?;
    t.set("size", w.wrap(lua, "size", size)?)?;
    Ok(t)
}

/// The format string up to its first NUL, as C reads it.
fn format_arg(a: &Args<'_>) -> Outcome<Vec<u8>> {
    let mut f = a.check_bytes(1)?;
    if let Some(end) = f.iter().position(|&c| c == 0) {
        f.truncate(end);
    }
    Ok(f)
}

/// Reads the digits at `fmt[*i..]`, or gives `default` when there are none.
fn getnum(fmt: &[u8], i: &mut usize, default: usize) -> Outcome<usize> {
    if !fmt.get(*i).is_some_and(u8::is_ascii_digit) {
        return Ok(default);
    }
    let mut a: i32 = 0;
    while let Some(&c) = fmt.get(*i).filter(|c| c.is_ascii_digit()) {
        let d = i32::from(c - b'0');
        if a > i32::MAX / 10 || a * 10 > i32::MAX - d {
            return Err(raise("integral size overflow"));
        }
        a = a * 10 + d;
        *i += 1;
    }
    Ok(a as usize)
}

fn optsize(opt: u8, fmt: &[u8], i: &mut usize) -> Outcome<usize> {
    Ok(match opt {
        b'B' | b'b' | b'x' => 1,
        b'H' | b'h' => 2,
        b'L' | b'l' | b'T' | b'd' => 8,
        b'f' => 4,
        b'c' => getnum(fmt, i, 1)?,
        b'i' | b'I' => {
            let sz = getnum(fmt, i, 4)?;
            if sz > MAX_INT_SIZE {
                return Err(raise(format!(
                    "integral size {sz} is larger than limit of {MAX_INT_SIZE}"
                )));
            }
            sz
        }
        _ => 0,
    })
}

/// Padding before an item of `size` at `len` (the C formula, which
/// assumes a power-of-two size).
fn gettoalign(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    (size.wrapping_sub(len & (size - 1))) & (size - 1)
}

fn controloptions(a: &Args<'_>, opt: u8, fmt: &[u8], i: &mut usize, h: &mut Header) -> Outcome<()> {
    match opt {
        b' ' => {}
        b'>' => h.endian = Endian::Big,
        b'<' => h.endian = Endian::Little,
        b'!' => {
            let al = getnum(fmt, i, MAX_ALIGN)?;
            if !al.is_power_of_two() {
                return Err(raise(format!("alignment {al} is not a power of 2")));
            }
            h.align = al;
        }
        _ => {
            let mut msg = b"invalid format option '".to_vec();
            msg.push(opt);
            msg.push(b'\'');
            return Err(a.arg_error_bytes(1, &msg));
        }
    }
    Ok(())
}

/// C's `(unsigned long)n` / `(unsigned long)(long)n` on x86-64.
fn to_bits(n: f64) -> u64 {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if n < 0.0 {
        crate::args::trunc_i64(n) as u64
    } else if n < TWO63 {
        n as u64
    } else {
        // cvttsd2si(n - 2^63) ^ 2^63; the conversion's overflow value is
        // 2^63, so values past 2^64 (and NaN) come out as 0.
        let low = n - TWO63;
        let t = if low < TWO63 {
            low as i64 as u64
        } else {
            1 << 63
        };
        t ^ (1 << 63)
    }
}

fn ordered(mut bytes: Vec<u8>, endian: Endian) -> Vec<u8> {
    if endian == Endian::Big {
        bytes.reverse();
    }
    bytes
}

fn pack(lua: &Lua, mut a: Args<'_>) -> Outcome<MultiValue> {
    let fmt = format_arg(&a)?;
    // C pushes a nil to mark the end of the arguments, so a missing first
    // value is reported as "got nil".
    a.push(Value::Nil);
    let mut h = Header::default();
    let mut arg = 2;
    let mut total = 0usize;
    let mut out = Vec::new();
    let mut i = 0;
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let mut size = optsize(opt, &fmt, &mut i)?;
        let pad = gettoalign(total, &h, opt, size);
        total += pad;
        out.resize(out.len() + pad, 0);
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let mut v = to_bits(a.check_number(arg)?);
                arg += 1;
                let mut le = Vec::with_capacity(size);
                for _ in 0..size {
                    le.push((v & 0xff) as u8);
                    v >>= 8;
                }
                out.extend(ordered(le, h.endian));
            }
            b'x' => out.push(0),
            b'f' => {
                let f = a.check_number(arg)? as f32;
                arg += 1;
                out.extend(ordered(f.to_le_bytes().to_vec(), h.endian));
            }
            b'd' => {
                let d = a.check_number(arg)?;
                arg += 1;
                out.extend(ordered(d.to_le_bytes().to_vec(), h.endian));
            }
            b'c' | b's' => {
                let s = a.check_bytes(arg)?;
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    // C names the argument after the string.
                    return Err(a.arg_error(arg, "string too short"));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                    size += 1;
                }
            }
            _ => controloptions(&a, opt, &fmt, &mut i, &mut h)?,
        }
        total += size;
    }
    Ok(one(Value::String(lua.create_string(&out)?)))
}

fn getinteger(b: &[u8], endian: Endian, signed: bool, size: usize) -> f64 {
    let mut l: u64 = 0;
    let mut push = |c: u8| l = (l << 8) | u64::from(c);
    match endian {
        Endian::Big => b.iter().copied().for_each(&mut push),
        Endian::Little => b.iter().rev().copied().for_each(&mut push),
    }
    if !signed {
        return l as f64;
    }
    // x86 masks the shift count to 6 bits, as the C expression relies on.
    let shift = ((size * 8).wrapping_sub(1) as u32) & 63;
    let mask = u64::MAX << shift;
    if l & mask != 0 {
        l |= mask;
    }
    l as i64 as f64
}

fn unpack(lua: &Lua, a: Args<'_>) -> Outcome<MultiValue> {
    let fmt = format_arg(&a)?;
    let data = a.check_bytes(2)?;
    let ld = data.len();
    let pos = a.opt_integer(3, 1)? as u64 as usize;
    if pos == 0 {
        return Err(a.arg_error(3, "offset must be 1 or greater"));
    }
    let mut pos = pos - 1;
    let mut h = Header::default();
    let mut out = MultiValue::new();
    let mut i = 0;
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let mut size = optsize(opt, &fmt, &mut i)?;
        pos = pos.wrapping_add(gettoalign(pos, &h, opt, size));
        if !(size <= ld && pos <= ld - size) {
            return Err(a.arg_error(2, "data string too short"));
        }
        // The arguments plus the results must fit the C stack.
        if a.len() + out.len() + 2 > MAX_C_STACK {
            return Err(raise("stack overflow (too many results)"));
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let v = getinteger(
                    &data[pos..pos + size],
                    h.endian,
                    opt.is_ascii_lowercase(),
                    size,
                );
                out.push_back(Value::Number(v));
            }
            b'x' => {}
            b'f' => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[pos..pos + 4]);
                let f = match h.endian {
                    Endian::Little => f32::from_le_bytes(b),
                    Endian::Big => f32::from_be_bytes(b),
                };
                out.push_back(Value::Number(f64::from(f)));
            }
            b'd' => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[pos..pos + 8]);
                let d = match h.endian {
                    Endian::Little => f64::from_le_bytes(b),
                    Endian::Big => f64::from_be_bytes(b),
                };
                out.push_back(Value::Number(d));
            }
            b'c' => {
                if size == 0 {
                    let prev = match out.back() {
                        Some(Value::Integer(n)) => Some(*n as f64),
                        Some(Value::Number(n)) => Some(*n),
                        Some(v @ Value::String(_)) => lua.coerce_number(v.clone())?,
                        _ => None,
                    };
                    let Some(prev) = prev else {
                        return Err(raise("format 'c0' needs a previous size"));
                    };
                    out.pop_back();
                    size = if prev >= 0.0 {
                        prev as usize
                    } else {
                        usize::MAX
                    };
                    if !(size <= ld && pos <= ld - size) {
                        return Err(a.arg_error(2, "data string too short"));
                    }
                }
                out.push_back(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|&c| c == 0) else {
                    return Err(raise("unfinished string in data"));
                };
                size = end + 1;
                out.push_back(Value::String(lua.create_string(&data[pos..pos + end])?));
            }
            _ => controloptions(&a, opt, &fmt, &mut i, &mut h)?,
        }
        pos += size;
    }
    out.push_back(Value::Integer(pos as i64 + 1));
    Ok(out)
}

fn size(_: &Lua, a: Args<'_>) -> Outcome<MultiValue> {
    let fmt = format_arg(&a)?;
    let mut h = Header::default();
    let mut pos = 0usize;
    let mut i = 0;
    while i < fmt.len() {
        let opt = fmt[i];
        i += 1;
        let size = optsize(opt, &fmt, &mut i)?;
        pos += gettoalign(pos, &h, opt, size);
        if opt == b's' {
            return Err(a.arg_error(1, "option 's' has no fixed size"));
        }
        if opt == b'c' && size == 0 {
            return Err(a.arg_error(1, "option 'c0' has no fixed size"));
        }
        if !opt.is_ascii_alphanumeric() {
            controloptions(&a, opt, &fmt, &mut i, &mut h)?;
        }
        pos += size;
    }
    Ok(one(Value::Integer(pos as i64)))
}
