//! One Lua 5.1 state set up as Redis 7.0 sets up its scripting engine:
//! the allowed globals only, read-only globals and libraries, the `redis`
//! table (its Lua half is `prelude.lua`), Redis's `math.random`, the
//! instruction hook that times scripts out, and the conversions between
//! Lua values and replies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, Value as LuaValue, VmState};
use resp::Frame;

use super::gate::Gate;
use crate::num;

/// Chunk name of our own Lua code: frames from it are skipped when an
/// error is located, so errors point into the user's script.
const INTERNAL: &str = "=redoubt";
pub(crate) const KILLED: &str = "ERR Script killed by user with SCRIPT KILL...";

/// The globals a script may see (Redis's allow lists in
/// `script_lua.c`); anything else a library installs is dropped.
const ALLOWED_GLOBALS: &[&str] = &[
    "string",
    "cjson",
    "bit",
    "cmsgpack",
    "math",
    "table",
    "struct",
    "xpcall",
    "tostring",
    "getfenv",
    "setmetatable",
    "next",
    "assert",
    "tonumber",
    "rawequal",
    "collectgarbage",
    "getmetatable",
    "rawset",
    "pcall",
    "coroutine",
    "type",
    "_G",
    "select",
    "unpack",
    "gcinfo",
    "pairs",
    "rawget",
    "loadstring",
    "ipairs",
    "_VERSION",
    "setfenv",
    "load",
    "error",
    "newproxy",
];

/// Script flags from a `#!lua flags=...` line (Redis's `SCRIPT_FLAG_*`).
pub(crate) mod flags {
    pub const NO_WRITES: u32 = 1;
    pub const ALLOW_OOM: u32 = 1 << 1;
    pub const ALLOW_STALE: u32 = 1 << 2;
    pub const NO_CLUSTER: u32 = 1 << 3;
    pub const ALLOW_CROSS_SLOT: u32 = 1 << 4;
    /// No shebang: EVAL as before Redis 7.0.
    pub const EVAL_COMPAT: u32 = 1 << 5;

    pub const NAMES: &[(&str, u32)] = &[
        ("no-writes", NO_WRITES),
        ("allow-oom", ALLOW_OOM),
        ("allow-stale", ALLOW_STALE),
        ("no-cluster", NO_CLUSTER),
        ("allow-cross-slot-keys", ALLOW_CROSS_SLOT),
    ];
}

/// A compiled EVAL script.
#[derive(Clone)]
pub(crate) struct Script {
    pub flags: u32,
    pub func: Function,
}

/// The Lua state and what the store keeps about it.
pub(crate) struct Engine {
    pub lua: Lua,
    /// Where the globals really live (the visible globals table is an
    /// empty read-only proxy in front of it).
    pub hidden: Table,
    /// Per-run control fields shared with `prelude.lua` (`raw`, `resp`).
    pub ctl: Table,
    runner: Function,
    handler: Function,
    /// EVAL scripts by SHA1 (lower-case hex).
    pub scripts: HashMap<String, Script>,
    /// Registered functions by name (the functions engine only).
    pub functions: HashMap<String, Script>,
    /// The `redis` table behind its read-only proxy.
    pub redis: Table,
    /// The scripts' own client, reused between runs (a cell: a run
    /// borrows the engine and its script together).
    pub session: std::cell::Cell<Option<crate::session::Session>>,
    /// Set when the caller's key hook refused the script: nothing may
    /// catch the error that unwinds it.
    pub abort: Arc<AtomicBool>,
}

/// Redis's `redisLrand48`: the 48-bit linear congruential generator of
/// `rand48`, so `math.random` gives Redis's sequence on every platform.
pub(crate) struct Rand48(AtomicU64);

impl Rand48 {
    const MASK: u64 = (1 << 48) - 1;

    pub fn new() -> Rand48 {
        Rand48(AtomicU64::new(0x1234_ABCD_330E))
    }

    fn next(&self) -> f64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x = (x.wrapping_mul(0x5_DEEC_E66D).wrapping_add(0xB)) & Self::MASK;
        self.0.store(x, Ordering::Relaxed);
        let v = (x >> 17) as i64;
        let max = i32::MAX as i64;
        (v % max) as f64 / max as f64
    }

    fn seed(&self, s: i32) {
        self.0
            .store(((s as u32 as u64) << 16) | 0x330E, Ordering::Relaxed);
    }
}

/// `REDIS_VERSION_NUM`: 0x00MMmmpp.
fn version_num(v: &str) -> i64 {
    let mut n = 0i64;
    for part in v.split('.').take(3) {
        n = (n << 8) | part.parse::<i64>().unwrap_or(0);
    }
    n
}

/// Where Redis's `cjson`, `cmsgpack`, `bit` and `struct` globals are
/// installed (the `scriptlib` crate), before the sandbox is sealed.
fn install_libraries(lua: &Lua) -> mlua::Result<()> {
    scriptlib::register(lua)
}

impl Engine {
    pub fn new(gate: Arc<Gate>) -> mlua::Result<Engine> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        install_libraries(&lua)?;
        let globals = lua.globals();
        let hidden = lua.create_table()?;
        for pair in globals.pairs::<LuaValue, LuaValue>() {
            let (k, v) = pair?;
            if let LuaValue::String(s) = &k {
                if ALLOWED_GLOBALS
                    .iter()
                    .any(|n| s.as_bytes().as_ref() == n.as_bytes())
                {
                    hidden.raw_set(k, v)?;
                }
            }
        }
        let ctl = lua.create_table()?;
        ctl.raw_set("resp", 2)?;
        let fail = lua.create_table()?;
        ctl.raw_set("FAIL", fail.clone())?;
        let fail_pos = lua.create_table()?;
        ctl.raw_set("FAILPOS", fail_pos.clone())?;
        let abort = Arc::new(AtomicBool::new(false));
        let rng = gate.rng.clone();

        let rust = lua.create_table()?;
        {
            let gate = gate.clone();
            let abort = abort.clone();
            rust.raw_set(
                "stop",
                lua.create_function(
                    move |_, ()| Ok(gate.killed() || abort.load(Ordering::SeqCst)),
                )?,
            )?;
        }
        rust.raw_set(
            "sha1hex",
            lua.create_function(|_, s: mlua::LuaString| Ok(sha1_hex(&s.as_bytes())))?,
        )?;
        rust.raw_set(
            "log",
            lua.create_function(|_, (level, msg): (i64, mlua::LuaString)| {
                let msg = msg.to_string_lossy();
                match level {
                    0 => tracing::debug!(target: "store::script", "{msg}"),
                    1 | 2 => tracing::info!(target: "store::script", "{msg}"),
                    _ => tracing::warn!(target: "store::script", "{msg}"),
                }
                Ok(())
            })?,
        )?;
        {
            let rng = rng.clone();
            rust.raw_set("rng", lua.create_function(move |_, ()| Ok(rng.next()))?)?;
        }
        rust.raw_set(
            "seed",
            lua.create_function(move |_, s: f64| {
                rng.seed(s as i64 as i32);
                Ok(())
            })?,
        )?;
        rust.raw_set(
            "errtext",
            lua.create_function(|_, e: LuaValue| {
                Ok(match e {
                    LuaValue::Error(e) => Some(error_message(&e)),
                    _ => None,
                })
            })?,
        )?;
        rust.raw_set(
            "known_command",
            lua.create_function(|_, args: mlua::Variadic<LuaValue>| {
                let words: Vec<Vec<u8>> = args
                    .iter()
                    .map(|v| match v {
                        LuaValue::String(s) => s.as_bytes().to_vec(),
                        other => lua_text(other).unwrap_or_default().into_bytes(),
                    })
                    .collect();
                Ok(match resp::lookup(&words) {
                    Some(spec) => {
                        !(words.len() >= 2
                            && !spec.name.contains('|')
                            && crate::store::is_container(spec.name))
                    }
                    None => false,
                })
            })?,
        )?;
        rust.raw_set("version", resp::command::REDIS_VERSION)?;
        rust.raw_set("version_num", version_num(resp::command::REDIS_VERSION))?;

        let (runner, redis): (Function, Table) = lua
            .load(include_str!("prelude.lua"))
            .set_name(INTERNAL)
            .call((hidden.clone(), globals, ctl.clone(), rust.clone()))?;
        for name in ["sha1hex", "log", "setresp", "set_repl", "acl_check_cmd"] {
            let f: Function = redis.raw_get(name)?;
            redis.raw_set(name, raising(&lua, f, fail.clone(), false)?)?;
        }
        // redis.call and redis.pcall are Lua functions: one takes any
        // number of arguments where a C function takes at most 8,000
        // values on its stack (tailcall.rs says why user code never
        // tail-calls them). They hand the arguments to the run's command
        // function (`ctl.raw`) themselves: up to 8 strings as they are,
        // read straight off the stack; more, or any other value, packed in
        // one table with their count in `n`. A failure is raised from a C
        // function, as Redis's own redis.call raises it, so the error names
        // the script's line.
        let raise =
            lua.create_function(|_, (text, counted): (LuaValue, bool)| -> mlua::Result<()> {
                let text = lua_text(&text).unwrap_or_else(|| "ERR unknown error".into());
                Err(raised(text, counted))
            })?;
        let stop: Function = rust.raw_get("stop")?;
        for name in ["call", "pcall"] {
            let f: Function = redis.raw_get(name)?;
            let f: Function = lua.load(CALL_WRAPPER).set_name(INTERNAL).call((
                f,
                raise.clone(),
                hidden.raw_get::<Function>("select")?,
                ctl.clone(),
                name == "pcall",
                stop.clone(),
            ))?;
            redis.raw_set(name, f)?;
        }
        let math: Table = hidden.raw_get::<Table>("math")?;
        // `math` in the globals is the read-only proxy; the functions live
        // in the table behind it.
        let math_real: Table = match math.metatable() {
            Some(mt) => mt.raw_get("__index")?,
            None => math,
        };
        for name in ["random", "randomseed"] {
            let f: Function = math_real.raw_get(name)?;
            math_real.raw_set(name, raising(&lua, f, fail_pos.clone(), true)?)?;
        }

        let handler = {
            let gate = gate.clone();
            let abort = abort.clone();
            lua.create_function(move |lua, e: LuaValue| {
                locate_error(lua, e, gate.killed() && !abort.load(Ordering::SeqCst))
            })?
        };
        {
            let abort = abort.clone();
            lua.set_global_hook(
                HookTriggers::new().every_nth_instruction(100_000),
                move |_, _| {
                    if abort.load(Ordering::SeqCst) {
                        return Err(mlua::Error::external(ScriptError(KILLED.into())));
                    }
                    match gate.tick() {
                        Some(why) => Err(mlua::Error::external(ScriptError(why.into()))),
                        None => Ok(VmState::Continue),
                    }
                },
            )?;
        }
        Ok(Engine {
            lua,
            hidden,
            ctl,
            runner,
            handler,
            scripts: HashMap::new(),
            functions: HashMap::new(),
            redis,
            session: std::cell::Cell::new(None),
            abort,
        })
    }

    /// Compiles a chunk named like Redis names it (`@user_script`), so
    /// error positions read `user_script:<line>`.
    /// Its tail calls become plain calls (tailcall.rs says why).
    pub fn compile(&self, code: &[u8], name: &str) -> Result<Function, String> {
        // Parsed as text whatever it starts with, as Redis's Lua parses it
        // (no bytecode from a client is ever run): a leading ESC gets the
        // parser's own syntax error, as there.
        let code = match code.first() {
            Some(27) => [b" ", code].concat(),
            _ => code.to_vec(),
        };
        let f = self
            .lua
            .load(code)
            .set_name(name)
            .set_mode(mlua::chunk::ChunkMode::Text)
            .into_function()
            .map_err(|e| match e {
                mlua::Error::SyntaxError { message, .. } => message,
                other => other.to_string(),
            })?;
        match super::tailcall::without_tail_calls(&f.dump(false)) {
            Some(dump) => self
                .lua
                .load(dump)
                .set_name(name)
                .set_mode(mlua::chunk::ChunkMode::Binary)
                .into_function()
                .map_err(|e| e.to_string()),
            None => Ok(f),
        }
    }

    /// Runs `f` under the error handler: `Ok` with the result, or the error
    /// table (`err`, `source`, `line`) turned into Redis's reply text,
    /// `funcname` being what Redis names in it (the SHA1 for EVAL).
    pub fn call(
        &self,
        f: &Function,
        raw: &Function,
        keys: Keys<'_>,
        funcname: &str,
    ) -> (Result<LuaValue, (String, bool)>, u8) {
        let mut resp = 2;
        let out = self.run(f, raw, keys).map(|(ok, v, r)| {
            resp = resp_of(&r);
            (ok, v)
        });
        if out.is_err() {
            // The runner failed before its own cleanup.
            let _ = self.ctl.raw_set("raw", LuaValue::Nil);
        }
        let out = self.protected(out).map_err(|e| match e {
            Failure::Located {
                msg,
                source,
                line,
                counted,
            } => (
                format!("{msg} script: {funcname}, on {source}:{line}."),
                counted,
            ),
            Failure::Bare(msg, counted) => (msg, counted),
            Failure::Other(m) => {
                let m: String = m.chars().take(100).collect();
                (format!("ERR Error running script {funcname}, {m} "), false)
            }
        });
        (out, resp)
    }

    /// One call into the runner: `raw` set as the run's command function,
    /// KEYS and ARGV given as `keys` says.
    fn run(
        &self,
        f: &Function,
        raw: &Function,
        keys: Keys<'_>,
    ) -> mlua::Result<(bool, LuaValue, LuaValue)> {
        let fcall = keys.fcall;
        let (nkeys, items) = (keys.nkeys, keys.items);
        if items.len() <= INLINE_KEYS {
            let values = items
                .iter()
                .map(|a| self.lua_bytes(a))
                .collect::<mlua::Result<Vec<_>>>()?;
            self.runner.call((
                f,
                &self.handler,
                raw,
                fcall,
                nkeys as i64,
                items.len().saturating_sub(nkeys) as i64,
                mlua::Variadic::from_iter(values),
            ))
        } else {
            let k = self.array(&items[..nkeys])?;
            let a = self.array(&items[nkeys..])?;
            self.runner
                .call((f, &self.handler, raw, fcall, -1, 0, k, a))
        }
    }

    /// A value for Lua: valid UTF-8 (nearly every key and argument) goes
    /// onto Lua's stack as it is; other bytes become a Lua string first.
    fn lua_bytes<'a>(&self, b: &'a [u8]) -> mlua::Result<mlua::Either<&'a str, mlua::LuaString>> {
        Ok(match std::str::from_utf8(b) {
            Ok(s) => mlua::Either::Left(s),
            Err(_) => mlua::Either::Right(self.lua.create_string(b)?),
        })
    }

    /// Runs `f` under the error handler; on failure, the error message
    /// without its location.
    pub fn call_bare(&self, f: &Function) -> Result<LuaValue, String> {
        let out = self.runner.call((f, &self.handler));
        self.protected(out).map_err(|e| match e {
            Failure::Located { msg, .. } | Failure::Bare(msg, _) | Failure::Other(msg) => msg,
        })
    }

    fn protected(&self, out: mlua::Result<(bool, LuaValue)>) -> Result<LuaValue, Failure> {
        match out {
            Ok((true, v)) => Ok(v),
            Ok((false, LuaValue::Table(t))) => {
                let msg = t
                    .raw_get::<LuaValue>("err")
                    .ok()
                    .and_then(|v| lua_text(&v))
                    .unwrap_or_else(|| "ERR unknown error".into());
                let source = t
                    .raw_get::<LuaValue>("source")
                    .ok()
                    .and_then(|v| lua_text(&v));
                let line = t
                    .raw_get::<LuaValue>("line")
                    .ok()
                    .and_then(|v| lua_text(&v));
                let counted = matches!(t.raw_get(COUNTED), Ok(LuaValue::Boolean(true)));
                Err(match (source, line) {
                    (Some(source), Some(line)) => Failure::Located {
                        msg,
                        source,
                        line,
                        counted,
                    },
                    _ => Failure::Bare(msg, counted),
                })
            }
            Ok((false, other)) => Err(Failure::Other(
                lua_text(&other).unwrap_or_else(|| "execution failure".into()),
            )),
            Err(e) => Err(Failure::Other(e.to_string())),
        }
    }

    /// A Lua array of strings (KEYS, ARGV).
    pub fn array(&self, items: &[Bytes]) -> mlua::Result<Table> {
        let t = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (i, a) in items.iter().enumerate() {
            t.raw_set(i + 1, self.lua.create_string(a)?)?;
        }
        Ok(t)
    }
}

/// KEYS and ARGV of a run: `items[..nkeys]` are the keys, the rest the
/// arguments; `fcall` passes them to the function (FCALL) instead of
/// setting the globals (EVAL).
pub(crate) struct Keys<'a> {
    pub items: &'a [Bytes],
    pub nkeys: usize,
    pub fcall: bool,
}

/// Up to this many keys and arguments go to Lua as values in the run's one
/// call; more go as two tables made first (Lua's stack for a call from
/// Rust is not made for thousands).
const INLINE_KEYS: usize = 32;

/// `redis.call` / `redis.pcall` as scripts see them (see `Engine::new`).
const CALL_WRAPPER: &str = "local outside, raise, select, ctl, is_pcall, stop = ...
local type = type
return function(...)
  local raw = ctl.raw
  if not raw then
    local _, e = outside()
    return raise(e, false)
  end
  local n = select('#', ...)
  local ok, r
  if n <= 8 then
    local a1, a2, a3, a4, a5, a6, a7, a8 = ...
    if type(a1) == 'string' and (n < 2 or type(a2) == 'string') and (n < 3 or type(a3) == 'string')
      and (n < 4 or type(a4) == 'string') and (n < 5 or type(a5) == 'string')
      and (n < 6 or type(a6) == 'string') and (n < 7 or type(a7) == 'string')
      and (n < 8 or type(a8) == 'string') then
      ok, r = raw(ctl.resp, n, a1, a2, a3, a4, a5, a6, a7, a8)
    else
      ok, r = raw(ctl.resp, { n = n, ... })
    end
  else
    ok, r = raw(ctl.resp, { n = n, ... })
  end
  if ok or (is_pcall and not stop()) then return r end
  return raise(r.err, r.ignore_error_stats_update == true)
end";

/// How a protected call failed.
enum Failure {
    /// An error table with the user code's position.
    Located {
        msg: String,
        source: String,
        line: String,
        /// Counted in the error stats already (see [`COUNTED`]).
        counted: bool,
    },
    /// An error table without one.
    Bare(String, bool),
    /// Not an error table at all.
    Other(String),
}

/// An error raised on behalf of the script, its text complete with the
/// error code (`ERR ...`, `WRONGTYPE ...`).
#[derive(Debug)]
pub(crate) struct ScriptError(pub String);

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScriptError {}

/// A `redis.call` error the error stats counted when its command failed
/// (see [`COUNTED`]): raised with its text, counted once.
#[derive(Debug)]
struct CountedError(String);

impl std::fmt::Display for CountedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CountedError {}

/// True for an error raised from a [`CountedError`].
fn counted_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::CallbackError { cause, .. } => counted_error(cause),
        mlua::Error::ExternalError(x) => x.downcast_ref::<CountedError>().is_some(),
        _ => false,
    }
}

/// Wraps a `prelude.lua` function that returns `FAIL, text` instead of
/// raising into a C function that raises: the script's own frame stays on
/// the stack under it, so the error names the script's line.
/// With `positioned`, the text is a plain message that gets Redis's `ERR`
/// and the calling script's `file:line: ` prefix, as Lua's own argument
/// errors read.
fn raising(lua: &Lua, f: Function, fail: Table, positioned: bool) -> mlua::Result<Function> {
    lua.create_function(move |lua, args: mlua::MultiValue| {
        let out: mlua::MultiValue = f.call(args)?;
        if let Some(LuaValue::Table(t)) = out.front() {
            if *t == fail {
                let text = out
                    .iter()
                    .nth(1)
                    .and_then(lua_text)
                    .unwrap_or_else(|| "ERR unknown error".into());
                let text = if positioned {
                    format!("ERR {}{text}", caller_position(lua))
                } else {
                    text
                };
                let counted = matches!(out.iter().nth(2), Some(LuaValue::Boolean(true)));
                return Err(raised(text, counted));
            }
        }
        Ok(out)
    })
}

/// The error a failed call of the `redis` table raises; `counted` when
/// the error stats have counted it already (see [`COUNTED`]).
fn raised(text: String, counted: bool) -> mlua::Error {
    if counted {
        mlua::Error::external(CountedError(text))
    } else {
        mlua::Error::external(ScriptError(text))
    }
}

/// The protocol a script asked for with `redis.setresp`: 3, else 2.
pub(crate) fn resp_of(v: &LuaValue) -> u8 {
    match v {
        LuaValue::Integer(3) => 3,
        LuaValue::Number(n) if *n == 3.0 => 3,
        _ => 2,
    }
}

/// `short_src:line: ` of the innermost frame of user code.
fn caller_position(lua: &Lua) -> String {
    for level in 1..200 {
        let Some((what, source, short, line)) = lua.inspect_stack(level, |d| {
            let s = d.source();
            (
                s.what,
                s.source.map(|c| c.into_owned()),
                s.short_src.map(|c| c.into_owned()),
                d.current_line(),
            )
        }) else {
            break;
        };
        // Skipped: C functions, our own and the libraries' Lua glue, and
        // the pseudo-frame Lua 5.1 leaves where a tail call was.
        if what == "C"
            || what == "tail"
            || matches!(
                source.as_deref(),
                Some(INTERNAL | scriptlib::WRAPPER_SOURCE)
            )
        {
            continue;
        }
        return match (short, line) {
            (Some(s), Some(l)) => format!("{s}:{l}: "),
            _ => String::new(),
        };
    }
    String::new()
}

/// The text of an error raised from Rust: ours as is, anything else with
/// Redis's generic `ERR` code.
fn error_message(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => error_message(cause),
        mlua::Error::ExternalError(x) => match x.downcast_ref::<ScriptError>() {
            Some(s) => s.0.clone(),
            None => match x.downcast_ref::<CountedError>() {
                Some(s) => s.0.clone(),
                None => format!("ERR {x}"),
            },
        },
        mlua::Error::RuntimeError(m) => format!("ERR {m}"),
        other => format!("ERR {other}"),
    }
}

/// The error handler: makes the error a table with `err` (Redis's text)
/// and, from the innermost frame of user code, `source` and `line`.
fn locate_error(lua: &Lua, e: LuaValue, killed: bool) -> mlua::Result<Table> {
    let t = match e {
        LuaValue::Table(t) if !killed => t,
        other => {
            let t = lua.create_table()?;
            let msg = if killed {
                KILLED.to_string()
            } else {
                match &other {
                    LuaValue::Error(e) => error_message(e),
                    v => format!(
                        "ERR {}",
                        lua_text(v).unwrap_or_else(|| v.type_name().into())
                    ),
                }
            };
            t.raw_set("err", msg)?;
            if matches!(&other, LuaValue::Error(e) if !killed && counted_error(e)) {
                t.raw_set(COUNTED, true)?;
            }
            t
        }
    };
    for level in 1..200 {
        let Some((what, source, line)) = lua.inspect_stack(level, |d| {
            let s = d.source();
            (s.what, s.source.map(|c| c.into_owned()), d.current_line())
        }) else {
            break;
        };
        // Skipped: C functions, our own and the libraries' Lua glue, and
        // the pseudo-frame Lua 5.1 leaves where a tail call was.
        if what == "C"
            || what == "tail"
            || matches!(
                source.as_deref(),
                Some(INTERNAL | scriptlib::WRAPPER_SOURCE)
            )
        {
            continue;
        }
        if let Some(src) = source {
            t.raw_set("source", src)?;
        }
        if let Some(l) = line {
            t.raw_set("line", l as i64)?;
        }
        break;
    }
    Ok(t)
}

/// A string or number as text (Lua's `lua_isstring` values).
fn lua_text(v: &LuaValue) -> Option<String> {
    match v {
        LuaValue::String(s) => Some(s.to_string_lossy()),
        LuaValue::Integer(i) => Some(i.to_string()),
        LuaValue::Number(n) => Some(num::fmt_g17(*n)),
        _ => None,
    }
}

pub(crate) fn sha1_hex(data: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let d = Sha1::digest(data);
    let mut s = String::with_capacity(40);
    for b in d.iter() {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// Redis's `luaPushErrorBuff` on a reply error: "-CODE msg" keeps its code,
/// a bare word gets "ERR"; CR/LF trimmed.
pub(crate) fn error_text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let (code, msg) = match s.split_once(' ') {
        Some((c, m)) => (c.to_string(), m.to_string()),
        None => ("ERR".to_string(), s.to_string()),
    };
    let msg = msg.trim_matches(|c| c == '\r' || c == '\n');
    format!("{code} {msg}")
}

/// The field of an error table that says the error stats counted it when
/// the command failed (Redis's name for it).
pub(crate) const COUNTED: &str = "ignore_error_stats_update";

/// An error table `{err = text}`.
pub(crate) fn err_table(lua: &Lua, text: &str) -> mlua::Result<LuaValue> {
    let t = lua.create_table()?;
    t.raw_set("err", text)?;
    Ok(LuaValue::Table(t))
}

/// A command's reply as Lua sees it (Redis's `redisProtocolToLuaType`).
pub(crate) fn frame_to_lua(lua: &Lua, f: &Frame) -> mlua::Result<LuaValue> {
    let single = |k: &str, v: LuaValue| -> mlua::Result<LuaValue> {
        let t = lua.create_table()?;
        t.raw_set(k, v)?;
        Ok(LuaValue::Table(t))
    };
    Ok(match f {
        Frame::Integer(i) => LuaValue::Number(*i as f64),
        Frame::Bulk(b) => LuaValue::String(lua.create_string(b)?),
        Frame::Simple(s) => single("ok", LuaValue::String(lua.create_string(s)?))?,
        Frame::Error(e) | Frame::BulkError(e) => err_table(lua, &error_text(e))?,
        Frame::NullBulk | Frame::NullArray => LuaValue::Boolean(false),
        Frame::Null => LuaValue::Nil,
        Frame::Boolean(b) => LuaValue::Boolean(*b),
        Frame::Double(d) => {
            let v = num::parse_f64(d).unwrap_or(0.0);
            single("double", LuaValue::Number(v))?
        }
        Frame::BigNumber(n) => single("big_number", LuaValue::String(lua.create_string(n)?))?,
        Frame::Verbatim(p) => {
            let (fmt, body) = if p.len() >= 4 && p[3] == b':' {
                (&p[..3], &p[4..])
            } else {
                (&b"txt"[..], &p[..])
            };
            let inner = lua.create_table()?;
            inner.raw_set("string", lua.create_string(body)?)?;
            inner.raw_set("format", lua.create_string(fmt)?)?;
            single("verbatim_string", LuaValue::Table(inner))?
        }
        Frame::Array(items) | Frame::Push(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, it) in items.iter().enumerate() {
                t.raw_set(i + 1, frame_to_lua(lua, it)?)?;
            }
            LuaValue::Table(t)
        }
        Frame::Map(pairs) => {
            let m = lua.create_table()?;
            for (k, v) in pairs {
                let k = frame_to_lua(lua, k)?;
                if !k.is_nil() {
                    m.raw_set(k, frame_to_lua(lua, v)?)?;
                }
            }
            single("map", LuaValue::Table(m))?
        }
        Frame::Set(items) => {
            let s = lua.create_table()?;
            for it in items {
                let k = frame_to_lua(lua, it)?;
                if !k.is_nil() {
                    s.raw_set(k, true)?;
                }
            }
            single("set", LuaValue::Table(s))?
        }
        Frame::Attribute(_, inner) => frame_to_lua(lua, inner)?,
        // Never made for a script's own client; read back if one arrives.
        Frame::Encoded(w) => match resp::parse_frame(w, &resp::Limits::upstream()) {
            Ok(Some((f, _))) => frame_to_lua(lua, &f)?,
            _ => LuaValue::Boolean(false),
        },
    })
}

/// A script's result as a reply (Redis's `luaReplyToRedisReply`):
/// `script_resp` is what the script chose with `redis.setresp`, `caller`
/// the protocol of the client that called it.
pub(crate) fn lua_to_frame(v: &LuaValue, script_resp: u8, caller: u8) -> Frame {
    to_frame(v, script_resp, caller, 0)
}

fn null(caller: u8) -> Frame {
    if caller == 3 {
        Frame::Null
    } else {
        Frame::NullBulk
    }
}

fn no_newlines(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// C's `(long long)` of a double as x86-64 does it: NaN and values out of
/// range become `i64::MIN` (Redis returns `math.huge` as that), where
/// Rust's `as` would saturate.
fn c_cast(n: f64) -> i64 {
    if n.is_nan() || !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&n) {
        i64::MIN
    } else {
        n as i64
    }
}

fn to_frame(v: &LuaValue, script_resp: u8, caller: u8, depth: usize) -> Frame {
    if depth > 1000 {
        return Frame::error("ERR reached lua stack limit");
    }
    let deeper = |v: &LuaValue| to_frame(v, script_resp, caller, depth + 1);
    match v {
        LuaValue::String(s) => Frame::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        LuaValue::Boolean(b) => {
            if script_resp == 2 {
                if *b {
                    Frame::Integer(1)
                } else {
                    null(caller)
                }
            } else if caller == 2 {
                Frame::Integer(*b as i64)
            } else {
                Frame::Boolean(*b)
            }
        }
        LuaValue::Integer(i) => Frame::Integer(*i),
        LuaValue::Number(n) => Frame::Integer(c_cast(*n)),
        LuaValue::Table(t) => {
            let field = |k: &str| t.raw_get::<LuaValue>(k).unwrap_or(LuaValue::Nil);
            if let LuaValue::String(e) = field("err") {
                return Frame::Error(Bytes::from(no_newlines(&e.to_string_lossy())));
            }
            if let LuaValue::String(s) = field("ok") {
                return Frame::Simple(Bytes::from(no_newlines(&s.to_string_lossy())));
            }
            if let Some(d) = match field("double") {
                LuaValue::Number(d) => Some(d),
                LuaValue::Integer(i) => Some(i as f64),
                _ => None,
            } {
                let text = Bytes::from(num::fmt_g17(d));
                return if caller == 3 {
                    Frame::Double(text)
                } else {
                    Frame::Bulk(text)
                };
            }
            if let LuaValue::String(n) = field("big_number") {
                let text = Bytes::from(no_newlines(&n.to_string_lossy()));
                return if caller == 3 {
                    Frame::BigNumber(text)
                } else {
                    Frame::Bulk(text)
                };
            }
            if let LuaValue::Table(vt) = field("verbatim_string") {
                let fmt = vt.raw_get::<LuaValue>("format").unwrap_or(LuaValue::Nil);
                let body = vt.raw_get::<LuaValue>("string").unwrap_or(LuaValue::Nil);
                if let (LuaValue::String(fmt), LuaValue::String(body)) = (fmt, body) {
                    let body = body.as_bytes();
                    return if caller == 3 {
                        let mut p = Vec::with_capacity(body.len() + 4);
                        p.extend_from_slice(&fmt.as_bytes()[..fmt.as_bytes().len().min(3)]);
                        p.push(b':');
                        p.extend_from_slice(&body);
                        Frame::Verbatim(Bytes::from(p))
                    } else {
                        Frame::Bulk(Bytes::copy_from_slice(&body))
                    };
                }
            }
            if let LuaValue::Table(m) = field("map") {
                let mut pairs = Vec::new();
                for (k, v) in m.pairs::<LuaValue, LuaValue>().flatten() {
                    pairs.push((deeper(&k), deeper(&v)));
                }
                return if caller == 3 {
                    Frame::Map(pairs)
                } else {
                    Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
                };
            }
            if let LuaValue::Table(s) = field("set") {
                let items: Vec<Frame> = s
                    .pairs::<LuaValue, LuaValue>()
                    .flatten()
                    .map(|(k, _)| deeper(&k))
                    .collect();
                return if caller == 3 {
                    Frame::Set(items)
                } else {
                    Frame::Array(items)
                };
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<LuaValue>(i) {
                    Ok(LuaValue::Nil) | Err(_) => break,
                    Ok(v) => items.push(deeper(&v)),
                }
            }
            Frame::Array(items)
        }
        _ => null(caller),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand48_matches_redis() {
        // redis-server 7.0: the second math.random() after start-up is
        // 0.84048536971234 (as tostring prints it).
        let r = Rand48::new();
        r.next();
        let second = r.next();
        assert_eq!(format!("{second:.14}"), "0.84048536971234");
    }

    #[test]
    fn error_text_keeps_or_adds_the_code() {
        assert_eq!(error_text(b"WRONGTYPE Operation"), "WRONGTYPE Operation");
        assert_eq!(error_text(b"FOO"), "ERR FOO");
    }

    #[test]
    fn engine_starts() {
        if let Err(e) = Engine::new(std::sync::Arc::new(Gate::new())) {
            panic!("{e}");
        }
    }

    #[test]
    fn version_num_packs_bytes() {
        assert_eq!(version_num("7.0.15"), 0x07000f);
    }
}
