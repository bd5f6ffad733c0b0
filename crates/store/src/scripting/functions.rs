//! Redis 7.0 functions: FUNCTION LOAD|LIST|DELETE|FLUSH|DUMP|RESTORE|
//! KILL|STATS, FCALL and FCALL_RO.
//!
//! Libraries run in their own Lua state (as in Redis, apart from EVAL's),
//! created on first use. Unlike EVAL scripts, libraries are data: LOAD,
//! DELETE, FLUSH and RESTORE are journaled as sent, and a snapshot emits
//! every library as `FUNCTION LOAD REPLACE <code>` (see
//! `crate::snapshot`), so functions survive restarts and compaction.
//!
//! FUNCTION DUMP's payload is our own format, not Redis's RDB one:
//! `REDOUBT-FUNCTIONS-1\n`, then for each library its code's length in
//! decimal, `\n`, and the code itself.

use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use mlua::{Function, Table, Value as LuaValue};
use resp::Frame;

use super::engine::{flags, Engine, Script, ScriptError};
use super::{execute, gate, prepare};
use crate::ctx::{err, Ctx, Handler, Reply};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("function|load", function_load),
    ("function|list", function_list),
    ("function|delete", function_delete),
    ("function|flush", function_flush),
    ("function|dump", function_dump),
    ("function|restore", function_restore),
    ("function|kill", function_kill),
    ("function|stats", function_stats),
    ("function|help", function_help),
    ("fcall", fcall),
    ("fcall_ro", fcall_ro),
];

const DUMP_HEADER: &[u8] = b"REDOUBT-FUNCTIONS-1\n";
const BAD_NAME: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

/// A loaded library as FUNCTION LIST shows it.
#[derive(Clone, Debug)]
pub(crate) struct Library {
    pub code: Bytes,
    pub functions: Vec<FunctionInfo>,
}

#[derive(Clone, Debug)]
pub(crate) struct FunctionInfo {
    pub name: String,
    pub desc: Option<Bytes>,
    pub flags: u32,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Takes the functions engine out of `inner` for the length of `f`.
fn with_engine(ctx: &mut Ctx, f: impl FnOnce(&mut Ctx, &mut Engine) -> Reply) -> Reply {
    let mut engine = match ctx.inner.scripting.functions.take() {
        Some(e) => e,
        None => match Engine::new(ctx.shared.script_gate.clone()) {
            Ok(e) => Box::new(e),
            Err(e) => {
                return Err(Frame::error(format!(
                    "ERR failed to start the Lua engine: {e}"
                )))
            }
        },
    };
    let out = f(ctx, &mut engine);
    ctx.inner.scripting.functions = Some(engine);
    out
}

/// The library's name and code from `#!lua name=<lib>` (Redis's
/// `functionExtractLibMetaData`).
fn metadata(code: &[u8]) -> Result<(String, String, usize), String> {
    if !code.starts_with(b"#!") {
        return Err("Missing library metadata".into());
    }
    let Some(end) = code.iter().position(|&b| b == b'\n') else {
        return Err("Invalid library metadata".into());
    };
    // Split as Redis splits it (`sdssplitargs`): quotes and escapes, so
    // `name="foo"` names the library `foo`.
    let Ok(words) = resp::decode::split_inline(&code[..end]) else {
        return Err("Invalid library metadata".into());
    };
    let words: Vec<String> = words
        .iter()
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut parts = words.iter();
    let Some(first) = parts.next() else {
        return Err("Invalid library metadata".into());
    };
    let engine = first.get(2..).unwrap_or_default().to_string();
    let mut name = None;
    for p in parts {
        if p.len() >= 5 && p[..5].eq_ignore_ascii_case("name=") {
            if name.is_some() {
                return Err(
                    "Invalid metadata value, name argument was given multiple times".into(),
                );
            }
            name = Some(p[5..].to_string());
            continue;
        }
        return Err(format!("Invalid metadata value given: {p}"));
    }
    let Some(name) = name else {
        return Err("Library name was not given".into());
    };
    Ok((engine, name, end))
}

/// A compiled library: its name, what FUNCTION LIST shows, and each
/// function's compiled callback.
type Compiled = (String, Library, Vec<(String, Script)>);

/// Compiles a library and collects what it registers, without installing
/// it: (name, library, compiled functions).
/// Redis's limit on running a library's code at load time.
const LOAD_TIMEOUT_MS: u64 = 500;

fn compile(
    engine: &mut Engine,
    code: &Bytes,
    replace: bool,
    libraries: &BTreeMap<String, Library>,
    gate: &gate::Gate,
    load_timeout: Option<u64>,
) -> Result<Compiled, String> {
    let (eng, name, end) = metadata(code)?;
    if !valid_name(&name) {
        return Err(BAD_NAME.into());
    }
    if !eng.eq_ignore_ascii_case("lua") {
        return Err(format!("Engine '{eng}' not found"));
    }
    if libraries.contains_key(&name) && !replace {
        return Err(format!("Library '{name}' already exists"));
    }
    let chunk = engine
        .compile(&code[end..], "@user_function")
        .map_err(|e| format!("Error compiling function: {e}"))?;
    let registered: RefCell<Vec<(FunctionInfo, Function)>> = RefCell::new(Vec::new());
    let lua_err = |e: mlua::Error| format!("Error registering functions: {e}");
    let ran = engine
        .lua
        .scope(|scope| {
            let register = scope.create_function(|_, args: mlua::MultiValue| {
                let (info, f) = register_args(args)
                    .map_err(|m| mlua::Error::external(ScriptError(format!("ERR {m}"))))?;
                let mut list = registered.borrow_mut();
                if !valid_name(&info.name) {
                    return Err(mlua::Error::external(ScriptError(format!(
                        "ERR {BAD_NAME}"
                    ))));
                }
                if list
                    .iter()
                    .any(|(i, _)| i.name.eq_ignore_ascii_case(&info.name))
                {
                    return Err(mlua::Error::external(ScriptError(
                        "ERR Function already exists in the library".into(),
                    )));
                }
                list.push((info, f));
                Ok(())
            })?;
            // At load time the globals offer only `redis`, and it only
            // registration, logging and the version, as in Redis: the
            // globals' lookup is pointed at that API for the load and back
            // after, so the callbacks see the full API when they run.
            let lua = &engine.lua;
            let missing: LuaValue = match engine.hidden.metatable() {
                Some(mt) => mt.raw_get("__index")?,
                None => LuaValue::Nil,
            };
            let strict = lua.create_table()?;
            strict.raw_set("__index", missing.clone())?;
            let api = lua.create_table()?;
            api.raw_set("register_function", register)?;
            for k in [
                "log",
                "LOG_DEBUG",
                "LOG_VERBOSE",
                "LOG_NOTICE",
                "LOG_WARNING",
                "REDIS_VERSION",
                "REDIS_VERSION_NUM",
            ] {
                api.raw_set(k, engine.redis.raw_get::<LuaValue>(k)?)?;
            }
            // Read-only as in Redis: a function that kept a reference to
            // it cannot change it when it runs.
            let api_mt = lua.create_table()?;
            api_mt.raw_set("__index", missing)?;
            api_mt.raw_set("__newindex", engine.ctl.raw_get::<LuaValue>("readonly")?)?;
            api.set_metatable(Some(api_mt))?;
            let load_env = lua.create_table()?;
            load_env.raw_set("redis", api.clone())?;
            load_env.set_metatable(Some(strict))?;
            let Some(globals_mt) = lua.globals().metatable() else {
                return Err(mlua::Error::runtime("globals are not sealed"));
            };
            globals_mt.raw_set("__index", load_env)?;
            gate.load_limit(load_timeout);
            let out = engine.call_bare(&chunk);
            gate.load_limit(None);
            // A function that kept the API table finds registration closed
            // (the scoped callback ends with this load), worded as Redis.
            api.raw_set(
                "register_function",
                lua.create_function(|_, _: mlua::MultiValue| -> mlua::Result<()> {
                    Err(mlua::Error::external(ScriptError(
                        "ERR redis.register_function can only be called on FUNCTION LOAD command"
                            .into(),
                    )))
                })?,
            )?;
            globals_mt.raw_set("__index", engine.hidden.clone())?;
            Ok(out)
        })
        .map_err(lua_err)?;
    ran.map_err(|m| format!("Error registering functions: {m}"))?;
    let registered = registered.into_inner();
    if registered.is_empty() {
        return Err("No functions registered".into());
    }
    for (info, _) in &registered {
        let clash = libraries
            .iter()
            .filter(|(lib, _)| **lib != name)
            .any(|(_, l)| {
                l.functions
                    .iter()
                    .any(|f| f.name.eq_ignore_ascii_case(&info.name))
            });
        if clash {
            return Err(format!("Function {} already exists", info.name));
        }
    }
    let lib = Library {
        code: code.clone(),
        functions: registered.iter().map(|(i, _)| i.clone()).collect(),
    };
    let compiled = registered
        .into_iter()
        .map(|(i, f)| {
            (
                i.name,
                Script {
                    flags: i.flags,
                    func: f,
                },
            )
        })
        .collect();
    Ok((name, lib, compiled))
}

/// `redis.register_function(name, callback)` or
/// `redis.register_function{function_name=..., callback=..., flags=...,
/// description=...}`.
fn register_args(args: mlua::MultiValue) -> Result<(FunctionInfo, Function), String> {
    let v: Vec<LuaValue> = args.into_iter().collect();
    let text = |v: &LuaValue| match v {
        LuaValue::String(s) => Some(s.to_string_lossy()),
        LuaValue::Integer(i) => Some(i.to_string()),
        LuaValue::Number(n) => Some(crate::num::fmt_g17(*n)),
        _ => None,
    };
    match v.len() {
        2 => {
            let name =
                text(&v[0]).ok_or("first argument to redis.register_function must be a string")?;
            let LuaValue::Function(f) = &v[1] else {
                return Err("second argument to redis.register_function must be a function".into());
            };
            Ok((
                FunctionInfo {
                    name,
                    desc: None,
                    flags: 0,
                },
                f.clone(),
            ))
        }
        1 => {
            let LuaValue::Table(t) = &v[0] else {
                return Err("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).".into());
            };
            let (mut name, mut desc, mut cb, mut fl) = (None, None, None, 0);
            for pair in t.pairs::<LuaValue, LuaValue>() {
                let (k, val) = pair.map_err(|e| e.to_string())?;
                let key = text(&k)
                    .ok_or("named argument key given to redis.register_function is not a string")?;
                match key.to_ascii_lowercase().as_str() {
                    "function_name" => name = Some(text(&val).ok_or(
                        "function_name argument given to redis.register_function must be a string",
                    )?),
                    "description" => desc = Some(Bytes::from(text(&val).ok_or(
                        "description argument given to redis.register_function must be a string",
                    )?)),
                    "callback" => match val {
                        LuaValue::Function(f) => cb = Some(f),
                        _ => return Err(
                            "callback argument given to redis.register_function must be a function"
                                .into(),
                        ),
                    },
                    "flags" => {
                        let LuaValue::Table(ft) = val else {
                            return Err("flags argument to redis.register_function must be a table representing function flags".into());
                        };
                        fl = read_flags(&ft).ok_or("unknown flag given")?;
                    }
                    _ => return Err("unknown argument given to redis.register_function".into()),
                }
            }
            let name = name.ok_or("redis.register_function must get a function name argument")?;
            let cb = cb.ok_or("redis.register_function must get a callback argument")?;
            Ok((
                FunctionInfo {
                    name,
                    desc,
                    flags: fl,
                },
                cb,
            ))
        }
        _ => Err("wrong number of arguments to redis.register_function".into()),
    }
}

fn read_flags(t: &Table) -> Option<u32> {
    let mut out = 0;
    for i in 1.. {
        match t.raw_get::<LuaValue>(i).ok()? {
            LuaValue::Nil => break,
            LuaValue::String(s) => {
                let s = s.to_string_lossy();
                let (_, bit) = flags::NAMES
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&s))?;
                out |= bit;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Loads (or replaces) a library: compiles it, then swaps it in.
fn load(ctx: &mut Ctx, engine: &mut Engine, code: &Bytes, replace: bool) -> Result<String, Frame> {
    // Replaying the journal (no client) must load whatever was loaded
    // before, however long it takes; Redis lifts the limit for its master
    // and AOF the same way.
    let timeout = (ctx.sess.id != 0).then_some(LOAD_TIMEOUT_MS);
    let gate = ctx.shared.script_gate.clone();
    let (name, lib, compiled) = compile(
        engine,
        code,
        replace,
        &ctx.inner.scripting.libraries,
        &gate,
        timeout,
    )
    .map_err(|e| Frame::error(format!("ERR {e}")))?;
    if let Some(old) = ctx.inner.scripting.libraries.remove(&name) {
        for f in old.functions {
            engine.functions.remove(&f.name.to_ascii_lowercase());
        }
    }
    for (fname, script) in compiled {
        // Redis finds functions by name whatever the case (FCALL TEST runs test).
        engine.functions.insert(fname.to_ascii_lowercase(), script);
    }
    ctx.inner.scripting.libraries.insert(name.clone(), lib);
    ctx.dirty += 1;
    Ok(name)
}

fn function_load(ctx: &mut Ctx) -> Reply {
    let mut replace = false;
    let mut i = 2;
    while i < ctx.args.len() - 1 {
        if ctx.arg_is(i, "replace") {
            replace = true;
            i += 1;
            continue;
        }
        return Err(Frame::error(format!(
            "ERR Unknown option given: {}",
            String::from_utf8_lossy(&ctx.args[i])
        )));
    }
    if i >= ctx.args.len() {
        return Err(err("ERR Function code is missing"));
    }
    let code = ctx.args[i].clone();
    with_engine(ctx, |ctx, engine| {
        load(ctx, engine, &code, replace).map(Frame::bulk)
    })
}

fn flag_names(fl: u32) -> Vec<Frame> {
    flags::NAMES
        .iter()
        .filter(|(_, b)| fl & b != 0)
        .map(|(n, _)| Frame::Simple(Bytes::from_static(n.as_bytes())))
        .collect()
}

fn function_list(ctx: &mut Ctx) -> Reply {
    let mut with_code = false;
    let mut pattern: Option<Bytes> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        if !with_code && ctx.arg_is(i, "withcode") {
            with_code = true;
        } else if pattern.is_none() && ctx.arg_is(i, "libraryname") {
            if i >= ctx.args.len() - 1 {
                return Err(err("ERR library name argument was not given"));
            }
            i += 1;
            pattern = Some(ctx.args[i].clone());
        } else {
            return Err(Frame::error(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(&ctx.args[i])
            )));
        }
        i += 1;
    }
    let mut out = Vec::new();
    for (name, lib) in &ctx.inner.scripting.libraries {
        if let Some(p) = &pattern {
            if !crate::glob::glob_match(p, name.as_bytes(), true) {
                continue;
            }
        }
        let fns = lib
            .functions
            .iter()
            .map(|f| {
                ctx.map(vec![
                    (Frame::bulk("name"), Frame::bulk(f.name.clone())),
                    (
                        Frame::bulk("description"),
                        f.desc.clone().map_or_else(|| ctx.null(), Frame::Bulk),
                    ),
                    (Frame::bulk("flags"), ctx.set_reply(flag_names(f.flags))),
                ])
            })
            .collect();
        let mut pairs = vec![
            (Frame::bulk("library_name"), Frame::bulk(name.clone())),
            (Frame::bulk("engine"), Frame::bulk("LUA")),
            (Frame::bulk("functions"), Frame::Array(fns)),
        ];
        if with_code {
            pairs.push((Frame::bulk("library_code"), Frame::Bulk(lib.code.clone())));
        }
        out.push(ctx.map(pairs));
    }
    Ok(Frame::Array(out))
}

fn function_delete(ctx: &mut Ctx) -> Reply {
    let name = String::from_utf8_lossy(&ctx.args[2]).into_owned();
    let Some(lib) = ctx.inner.scripting.libraries.remove(&name) else {
        return Err(err("ERR Library not found"));
    };
    if let Some(engine) = ctx.inner.scripting.functions.as_mut() {
        for f in lib.functions {
            engine.functions.remove(&f.name.to_ascii_lowercase());
        }
    }
    ctx.dirty += 1;
    Ok(Frame::simple("OK"))
}

fn function_flush(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() > 3 {
        return Err(crate::streams::subcommand_error_args(ctx.args));
    }
    let ok = match ctx.args.len() {
        2 => true,
        3 => ctx.arg_is(2, "sync") || ctx.arg_is(2, "async"),
        _ => false,
    };
    if !ok {
        return Err(err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"));
    }
    ctx.inner.scripting.libraries.clear();
    ctx.inner.scripting.functions = None;
    ctx.dirty += 1;
    Ok(Frame::simple("OK"))
}

/// The FUNCTION DUMP payload of these libraries (format in the module docs).
pub(crate) fn dump(libs: impl Iterator<Item = Bytes>) -> Bytes {
    let mut out = DUMP_HEADER.to_vec();
    for code in libs {
        out.extend_from_slice(code.len().to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&code);
    }
    Bytes::from(out)
}

fn undump(payload: &[u8]) -> Option<Vec<Bytes>> {
    let mut rest = payload.strip_prefix(DUMP_HEADER)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let len: usize = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
        let body = rest.get(nl + 1..nl + 1 + len)?;
        out.push(Bytes::copy_from_slice(body));
        rest = &rest[nl + 1 + len..];
    }
    Some(out)
}

fn function_dump(ctx: &mut Ctx) -> Reply {
    let libs = ctx
        .inner
        .scripting
        .libraries
        .values()
        .map(|l| l.code.clone());
    Ok(Frame::Bulk(dump(libs)))
}

fn function_restore(ctx: &mut Ctx) -> Reply {
    #[derive(PartialEq)]
    enum Policy {
        Flush,
        Append,
        Replace,
    }
    let policy =
        match ctx.args.len() {
            3 => Policy::Append,
            4 if ctx.arg_is(3, "flush") => Policy::Flush,
            4 if ctx.arg_is(3, "append") => Policy::Append,
            4 if ctx.arg_is(3, "replace") => Policy::Replace,
            // Redis's function container checks the count before the policy.
            n if n > 4 => {
                return Err(Frame::error(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try FUNCTION HELP.",
                String::from_utf8_lossy(&ctx.args[1])
            )))
            }
            _ => return Err(err(
                "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
            )),
        };
    let Some(libs) = undump(&ctx.args[2]) else {
        return Err(err("ERR DUMP payload version or checksum are wrong"));
    };
    if policy == Policy::Append {
        for code in &libs {
            if let Ok((_, name, _)) = metadata(code) {
                if ctx.inner.scripting.libraries.contains_key(&name) {
                    return Err(Frame::error(format!("ERR Library {name} already exists")));
                }
            }
        }
    }
    if policy == Policy::Flush {
        ctx.inner.scripting.libraries.clear();
        ctx.inner.scripting.functions = None;
    }
    with_engine(ctx, |ctx, engine| {
        for code in &libs {
            load(ctx, engine, code, policy != Policy::Append)?;
        }
        ctx.dirty += 1;
        Ok(Frame::simple("OK"))
    })
}

/// Reached with the lock held, so nothing is running (see `gate`).
fn function_kill(_ctx: &mut Ctx) -> Reply {
    Err(err(gate::NOT_BUSY))
}

fn function_stats(ctx: &mut Ctx) -> Reply {
    let libs = ctx.inner.scripting.libraries.len() as i64;
    let fns: usize = ctx
        .inner
        .scripting
        .libraries
        .values()
        .map(|l| l.functions.len())
        .sum();
    let lua = ctx.map(vec![
        (Frame::bulk("libraries_count"), Frame::Integer(libs)),
        (Frame::bulk("functions_count"), Frame::Integer(fns as i64)),
    ]);
    let engines = ctx.map(vec![(Frame::bulk("LUA"), lua)]);
    Ok(ctx.map(vec![
        (Frame::bulk("running_script"), ctx.null()),
        (Frame::bulk("engines"), engines),
    ]))
}

fn fcall(ctx: &mut Ctx) -> Reply {
    fcall_generic(ctx, false)
}

fn fcall_ro(ctx: &mut Ctx) -> Reply {
    fcall_generic(ctx, true)
}

fn fcall_generic(ctx: &mut Ctx, ro: bool) -> Reply {
    let name = String::from_utf8_lossy(&ctx.args[1]).into_owned();
    with_engine(ctx, |ctx, engine| {
        let engine = &*engine;
        let Some(script) = engine.functions.get(&name.to_ascii_lowercase()) else {
            return Err(err("ERR Function not found"));
        };
        let numkeys = crate::num::parse_i64(&ctx.args[2])
            .ok_or_else(|| err("ERR Bad number of keys provided"))?;
        let argc = ctx.args.len() as i64;
        if numkeys > argc - 3 {
            return Err(err(
                "ERR Number of keys can't be greater than number of args",
            ));
        }
        if numkeys < 0 {
            return Err(err("ERR Number of keys can't be negative"));
        }
        let prepared = prepare(ctx, script.flags, ro)?;
        execute(
            ctx,
            engine,
            &script.func,
            numkeys as usize,
            &name,
            prepared,
            false,
        )
    })
}

fn function_help(_ctx: &mut Ctx) -> Reply {
    Ok(super::help(
        "FUNCTION",
        &[
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Create a new library with the given library name and code.",
            "DELETE <LIBRARY NAME>",
            "    Delete the given library.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    Return general information on all the libraries:",
            "    * Library name",
            "    * The engine used to run the Library",
            "    * Library description",
            "    * Functions list",
            "    * Library code (if WITHCODE is given)",
            "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
            "STATS",
            "    Return information about the current function running:",
            "    * Function name",
            "    * Command used to run the function",
            "    * Duration in MS that the function is running",
            "    If no function is running, return nil",
            "    In addition, returns a list of available engines.",
            "KILL",
            "    Kill the current running function.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete all the libraries.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the libraries.",
            "    * SYNC: Synchronously flush the libraries.",
            "DUMP",
            "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
            "    control how to handle existing libraries (default APPEND):",
            "    * FLUSH: delete all existing libraries.",
            "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
            "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
            "      libraries with the new libraries (notice that even on this option there is a chance of failure",
            "      in case of functions name collision with another library).",
        ],
    ))
}
