//! `cjson`: lua-cjson 2.1.0 as Redis 7.0 bundles it.
//!
//! Hand-written rather than serde_json: lua-cjson's output is not canonical
//! JSON (`/` escaped as `\/`, DEL as `\u007f`, numbers as `%.14g`, `{}` for
//! an empty table, keys in `lua_next` order) and its input is wider than
//! JSON (anything `strtod` reads, raw control bytes in strings, an embedded
//! NUL ending the text), and scripts see both; a tokenizer that follows
//! `lua_cjson.c` step by step also gives its exact error messages and
//! character positions.
//!
//! # Layout
//! - this module: the table, its settings functions, `cjson.null`.
//! - `encode`: `cjson.encode`.
//! - `decode`: `cjson.decode`.

mod decode;
mod encode;

use std::sync::{Arc, Mutex};

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use crate::args::{one, Args, Fault, Outcome, Wrapper};

/// `LUAI_MAXCSTACK`: the stack slots a C function may use. lua_cjson.c
/// checks room on the Lua stack at each nesting level, which bounds
/// nesting even when a script raises the depth settings; we count the
/// slots its recursion would hold so the same inputs fail the same way.
const MAX_C_STACK: usize = 8000;

/// The settings one cjson table's functions share (`json_config_t`).
#[derive(Clone, Copy)]
struct Config {
    sparse_convert: bool,
    sparse_ratio: i32,
    sparse_safe: i32,
    encode_max_depth: i32,
    decode_max_depth: i32,
    /// 0 refuse, 1 write `inf`/`nan`, 2 write `null`.
    encode_invalid_numbers: i32,
    decode_invalid_numbers: bool,
    /// Only the value it reports: there is no shared buffer to keep.
    encode_keep_buffer: bool,
    number_precision: i32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            encode_invalid_numbers: 0,
            decode_invalid_numbers: true,
            encode_keep_buffer: true,
            number_precision: 14,
        }
    }
}

type Shared = Arc<Mutex<Config>>;

fn snapshot(cfg: &Shared) -> Config {
    *cfg.lock().unwrap_or_else(|p| p.into_inner())
}

fn update(cfg: &Shared, f: impl FnOnce(&mut Config)) {
    f(&mut cfg.lock().unwrap_or_else(|p| p.into_inner()));
}

/// `cjson.null`: a NULL light userdata, as lua-cjson uses.
fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

/// A new cjson table with its own settings (`lua_cjson_new`).
pub(crate) fn open(lua: &Lua, w: &Wrapper) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let cfg: Shared = Arc::new(Mutex::new(Config::default()));

    let c = cfg.clone();
    let next_fn = w.next.clone();
    t.set(
        "encode",
        w.wrap(lua, "encode", move |lua, a| {
            encode::encode(lua, &next_fn, &snapshot(&c), a)
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "decode",
        w.wrap(lua, "decode", move |lua, a| {
            decode::decode(lua, &snapshot(&c), a)
        })?,
    )?;
    let c = cfg.clone();
    t.set(
        "encode_sparse_array",
        w.wrap(lua, "encode_sparse_array", move |lua, a| {
            arg_init(&a, 3)?;
            let mut v = snapshot(&c);
            let mut convert = i32::from(v.sparse_convert);
            let r1 = enum_option(lua, &a, 1, &mut convert, &["off", "on"])?;
            let r2 = integer_option(&a, 2, &mut v.sparse_ratio, 0, i32::MAX)?;
            let r3 = integer_option(&a, 3, &mut v.sparse_safe, 0, i32::MAX)?;
            v.sparse_convert = convert != 0;
            update(&c, |cur| *cur = v);
            Ok(MultiValue::from_iter([r1, r2, r3]))
        })?,
    )?;
    let int_setting = |name: &'static str,
                       min: i32,
                       max: i32,
                       field: fn(&mut Config) -> &mut i32|
     -> mlua::Result<mlua::Function> {
        let c = cfg.clone();
        w.wrap(lua, name, move |_, a| {
            arg_init(&a, 1)?;
            let mut v = snapshot(&c);
            let r = integer_option(&a, 1, field(&mut v), min, max)?;
            update(&c, |cur| *cur = v);
            Ok(one(r))
        })
    };
    t.set(
        "encode_max_depth",
        int_setting("encode_max_depth", 1, i32::MAX, |c| &mut c.encode_max_depth)?,
    )?;
    t.set(
        "decode_max_depth",
        int_setting("decode_max_depth", 1, i32::MAX, |c| &mut c.decode_max_depth)?,
    )?;
    t.set(
        "encode_number_precision",
        int_setting("encode_number_precision", 1, 14, |c| {
            &mut c.number_precision
        })?,
    )?;
    let bool_setting = |name: &'static str,
                        options: &'static [&'static str],
                        get: fn(&Config) -> i32,
                        set: fn(&mut Config, i32)|
     -> mlua::Result<mlua::Function> {
        let c = cfg.clone();
        w.wrap(lua, name, move |lua, a| {
            arg_init(&a, 1)?;
            let mut v = snapshot(&c);
            let mut setting = get(&v);
            let r = enum_option(lua, &a, 1, &mut setting, options)?;
            set(&mut v, setting);
            update(&c, |cur| *cur = v);
            Ok(one(r))
        })
    };
    t.set(
        "encode_keep_buffer",
        bool_setting(
            "encode_keep_buffer",
            &["off", "on"],
            |c| i32::from(c.encode_keep_buffer),
            |c, v| c.encode_keep_buffer = v != 0,
        )?,
    )?;
    t.set(
        "encode_invalid_numbers",
        bool_setting(
            "encode_invalid_numbers",
            &["off", "on", "null"],
            |c| c.encode_invalid_numbers,
            |c, v| c.encode_invalid_numbers = v,
        )?,
    )?;
    t.set(
        "decode_invalid_numbers",
        bool_setting(
            "decode_invalid_numbers",
            &["off", "on"],
            |c| i32::from(c.decode_invalid_numbers),
            |c, v| c.decode_invalid_numbers = v != 0,
        )?,
    )?;
    let w2 = w.clone();
    t.set(
        "new",
        w.wrap(lua, "new", move |lua, _| {
            Ok(one(Value::Table(open(lua, &w2).map_err(Fault::Lua)?)))
        })?,
    )?;
    t.set("null", null())?;
    t.set("_NAME", "cjson")?;
    t.set("_VERSION", "2.1.0")?;
    Ok(t)
}

/// `json_arg_init`: at most `n` arguments.
fn arg_init(a: &Args<'_>, n: usize) -> Outcome<()> {
    if a.len() > n {
        return Err(a.arg_error(n + 1, "found too many arguments"));
    }
    Ok(())
}

/// `json_integer_option`: sets from argument `i` unless nil; returns the
/// setting. The range message names argument 1 whatever `i` is, as in C.
fn integer_option(a: &Args<'_>, i: usize, setting: &mut i32, min: i32, max: i32) -> Outcome<Value> {
    if !matches!(a.get(i), None | Some(Value::Nil)) {
        let v = a.check_integer(i)? as i32;
        if !(min <= v && v <= max) {
            return Err(a.arg_error(1, &format!("expected integer between {min} and {max}")));
        }
        *setting = v;
    }
    Ok(Value::Integer(i64::from(*setting)))
}

/// `json_enum_option` with `bool_true` 1: a boolean or one of `options`;
/// returns the setting as a boolean when it is 0 or 1, else its name.
fn enum_option(
    lua: &Lua,
    a: &Args<'_>,
    i: usize,
    setting: &mut i32,
    options: &[&str],
) -> Outcome<Value> {
    match a.get(i) {
        None | Some(Value::Nil) => {}
        Some(Value::Boolean(b)) => *setting = i32::from(*b),
        Some(_) => {
            let s = a.check_bytes(i)?;
            match options.iter().position(|o| o.as_bytes() == s.as_slice()) {
                Some(k) => *setting = k as i32,
                None => {
                    let mut msg = b"invalid option '".to_vec();
                    msg.extend_from_slice(&s);
                    msg.push(b'\'');
                    return Err(a.arg_error_bytes(i, &msg));
                }
            }
        }
    }
    Ok(if *setting == 0 || *setting == 1 {
        Value::Boolean(*setting == 1)
    } else {
        let name = options.get(*setting as usize).copied().unwrap_or("");
        Value::String(lua.create_string(name)?)
    })
}
