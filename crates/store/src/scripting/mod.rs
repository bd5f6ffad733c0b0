//! Lua scripting as Redis 7.0 runs it: EVAL, EVALSHA, their `_RO`
//! variants and SCRIPT LOAD|EXISTS|FLUSH|KILL; functions (FUNCTION, FCALL)
//! in `functions`.
//!
//! One Lua state per store ([`engine::Engine`]), created on first use and
//! kept in [`crate::store::Inner`] behind the store lock; a script runs
//! with the lock held, so it is atomic like in Redis. Its `redis.call`s go
//! through the store's own dispatch ([`crate::store::run`], never
//! blocking), so they answer exactly as the commands do. A script is
//! journaled by its effects: the effects of every command it ran, in order,
//! replayed as one transaction; a script that fails half-way keeps (and
//! journals) what it wrote before the error, as Redis does.
//!
//! - `engine`: the Lua state, sandbox and value conversions
//!   (`prelude.lua` is its Lua half).
//! - `gate`: the busy/kill state other clients read without the lock.
//! - `keyhook`: [`KeyAccess`] / [`KeyHook`], the caller's say over each key
//!   (the proxy's outage mode), with the undo log a refusal needs.

pub(crate) mod engine;
pub(crate) mod functions;
pub(crate) mod gate;
pub(crate) mod keyhook;
mod tailcall;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use mlua::Value as LuaValue;
use resp::command::{F_DENYOOM, F_MAY_REPLICATE, F_NOSCRIPT, F_WRITE};
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply};
use crate::session::Session;
use crate::store::{is_container, resolve_row, run, Inner, Resolved, Shared, Store};
use crate::Effect;
use engine::{err_table, flags, frame_to_lua, lua_to_frame, sha1_hex, Engine, Script};
use keyhook::KeyGuard;
pub use keyhook::{CommandHook, KeyAccess, KeyHook};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("eval", eval),
    ("evalsha", evalsha),
    ("eval_ro", eval_ro),
    ("evalsha_ro", evalsha_ro),
    ("script|load", script_load),
    ("script|exists", script_exists),
    ("script|flush", script_flush),
    ("script|kill", script_kill),
    ("script|help", script_help),
    ("script|debug", script_debug),
];

const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// What the store keeps for scripting, behind the lock.
#[derive(Default)]
pub(crate) struct Scripting {
    /// The EVAL engine; `None` until first used and after SCRIPT FLUSH.
    pub eval: Option<Box<Engine>>,
    /// The functions engine; `None` until first used and after FUNCTION
    /// FLUSH.
    pub functions: Option<Box<Engine>>,
    /// Loaded function libraries by name.
    pub libraries: std::collections::BTreeMap<String, functions::Library>,
}

/// Takes the engine out of `inner` (creating it on first use) for the
/// length of `f`: the script's commands need `inner` mutably meanwhile.
fn with_engine(ctx: &mut Ctx, f: impl FnOnce(&mut Ctx, &mut Engine) -> Reply) -> Reply {
    let mut engine = match ctx.inner.scripting.eval.take() {
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
    ctx.inner.scripting.eval = Some(engine);
    out
}

/// True when the script `args` runs (EVAL, EVALSHA, FCALL) declares
/// `no-writes`, as far as `inner` knows it: Redis's flags for CLIENT PAUSE
/// WRITE, which holds back only scripts that may write.
pub(crate) fn declares_no_writes(inner: &Inner, args: &[Bytes]) -> bool {
    let no_writes = |fl: u32| fl & flags::EVAL_COMPAT == 0 && fl & flags::NO_WRITES != 0;
    let Some(name) = args.first() else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"eval") {
        return args
            .get(1)
            .is_some_and(|b| shebang(b).is_ok_and(|(fl, _)| no_writes(fl)));
    }
    if name.eq_ignore_ascii_case(b"evalsha") {
        let sha = args
            .get(1)
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
        return inner.scripting.eval.as_ref().is_some_and(|e| {
            sha.as_deref()
                .and_then(|sha| e.scripts.get(sha))
                .is_some_and(|s| no_writes(s.flags))
        });
    }
    if name.eq_ignore_ascii_case(b"fcall") {
        let Some(f) = args.get(1).map(|f| String::from_utf8_lossy(f).into_owned()) else {
            return false;
        };
        return inner
            .scripting
            .libraries
            .values()
            .flat_map(|l| l.functions.iter())
            .any(|func| func.name == f && func.flags & flags::NO_WRITES != 0);
    }
    false
}

/// Splits a `#!lua flags=...` first line off: the flags, and how many
/// bytes to skip (the newline stays, so line numbers hold).
fn shebang(body: &[u8]) -> Result<(u32, usize), String> {
    if !body.starts_with(b"#!") {
        return Ok((flags::EVAL_COMPAT, 0));
    }
    let Some(end) = body.iter().position(|&b| b == b'\n') else {
        return Err("Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_whitespace();
    let Some(engine) = parts.next() else {
        return Err("Invalid engine in script shebang".into());
    };
    if engine != "#!lua" {
        return Err(format!("Unexpected engine in script shebang: {engine}"));
    }
    let mut out = 0;
    for p in parts {
        let Some(list) = p.strip_prefix("flags=") else {
            return Err(format!("Unknown lua shebang option: {p}"));
        };
        // `flags=` alone declares no flags (Redis splits an empty list
        // into nothing); an empty item in a list is still refused.
        for f in list.split(',').filter(|_| !list.is_empty()) {
            match flags::NAMES.iter().find(|(n, _)| *n == f) {
                Some((_, bit)) => out |= bit,
                None => return Err(format!("Unexpected flag in script shebang: {f}")),
            }
        }
    }
    Ok((out, end))
}

/// Redis's `luaCreateFunction`: the cached script for `body`, compiling it
/// on first sight.
fn create(engine: &mut Engine, body: &[u8]) -> Result<(String, Script), Frame> {
    let sha = sha1_hex(body);
    if let Some(s) = engine.scripts.get(&sha) {
        return Ok((sha, s.clone()));
    }
    let (fl, skip) = shebang(body).map_err(|e| Frame::error(format!("ERR {e}")))?;
    let func = engine
        .compile(&body[skip..], "@user_script")
        .map_err(|e| Frame::error(format!("ERR Error compiling script (new function): {e}")))?;
    let script = Script { flags: fl, func };
    engine.scripts.insert(sha.clone(), script.clone());
    Ok((sha, script))
}

fn eval(ctx: &mut Ctx) -> Reply {
    eval_generic(ctx, false, false)
}
fn evalsha(ctx: &mut Ctx) -> Reply {
    eval_generic(ctx, true, false)
}
fn eval_ro(ctx: &mut Ctx) -> Reply {
    eval_generic(ctx, false, true)
}
fn evalsha_ro(ctx: &mut Ctx) -> Reply {
    eval_generic(ctx, true, true)
}

fn eval_generic(ctx: &mut Ctx, by_sha: bool, ro: bool) -> Reply {
    let numkeys = ctx.arg_i64(2)?;
    let argc = ctx.args.len() as i64;
    if numkeys > argc - 3 {
        return Err(err(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    if numkeys < 0 {
        return Err(err("ERR Number of keys can't be negative"));
    }
    if by_sha && ctx.args[1].len() != 40 {
        return Err(err(NOSCRIPT));
    }
    with_engine(ctx, |ctx, engine| {
        let sha: Cow<str> = if by_sha {
            // Clients send the digest SCRIPT LOAD gave them: lower case,
            // looked up as it is.
            let args = ctx.args;
            match std::str::from_utf8(&args[1]) {
                Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
                _ => Cow::Owned(String::from_utf8_lossy(&args[1]).to_ascii_lowercase()),
            }
        } else {
            let body = ctx.args[1].clone();
            Cow::Owned(create(engine, &body)?.0)
        };
        let engine = &*engine;
        let Some(script) = engine.scripts.get(sha.as_ref()) else {
            return Err(err(NOSCRIPT));
        };
        let prepared = prepare(ctx, script.flags, ro)?;
        execute(
            ctx,
            engine,
            &script.func,
            numkeys as usize,
            &sha,
            prepared,
            true,
        )
    })
}

/// How a script run starts, from its flags and the memory at its start.
pub(crate) struct Prepared {
    read_only: bool,
    /// `allow-oom`: its writes are not refused over `maxmemory`.
    allow_oom: bool,
    /// Keys evicted to make room before it ran, journaled with its effects.
    evicted: Vec<Effect>,
}

/// Redis's checks before a script runs: `processCommand`'s (a script that
/// declares flags, neither `allow-oom` nor `no-writes`, is a deny-oom
/// command: keys are evicted as the policy says, else it is refused with
/// Redis's plain OOM error) and `scriptPrepareForRun`'s (the same inside
/// EXEC, worded as there).
fn prepare(ctx: &mut Ctx, fl: u32, ro: bool) -> Result<Prepared, Frame> {
    let mut evicted = Vec::new();
    if fl & flags::EVAL_COMPAT == 0 {
        if fl & flags::NO_WRITES == 0 && ro {
            return Err(err(
                "ERR Can not execute a script with write flag using *_ro command.",
            ));
        }
        if fl & flags::NO_WRITES == 0 && ctx.inner.config.no_replicas {
            ctx.rejected = true;
            return Err(err(crate::store::NOREPLICAS));
        }
        if fl & (flags::ALLOW_OOM | flags::NO_WRITES) == 0
            && !crate::eviction::make_room(ctx.inner, ctx.now, &mut evicted)
        {
            if !evicted.is_empty() {
                ctx.effects = Some(evicted);
                ctx.keep_effects = true;
            }
            return Err(if ctx.no_block {
                err("OOM allow-oom flag is not set on the script, can not run it when used memory > 'maxmemory'")
            } else {
                ctx.inner.stats.rejected_calls += 1;
                ctx.rejected = true;
                err(crate::eviction::OOM)
            });
        }
    }
    Ok(Prepared {
        read_only: ro || (fl & flags::EVAL_COMPAT == 0 && fl & flags::NO_WRITES != 0),
        allow_oom: fl & flags::EVAL_COMPAT == 0 && fl & flags::ALLOW_OOM != 0,
        evicted,
    })
}

/// What `redis.call` hands the run (see `engine::CALL_WRAPPER`): the
/// protocol, then the count and up to 8 strings, or one table of them.
type RawArgs = (
    LuaValue,
    LuaValue,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
    Option<mlua::BString>,
);

/// One script run's state, reached from `redis.call`.
struct Run<'a> {
    inner: &'a mut Inner,
    shared: &'a Shared,
    /// The script's own client: its database and protocol are the
    /// script's (SELECT inside a script does not move the caller).
    sess: Session,
    now: u64,
    read_only: bool,
    allow_oom: bool,
    effects: Vec<Effect>,
    keys: Option<KeyGuard>,
    denied: Option<String>,
    wrote: bool,
}

impl Run<'_> {
    /// `redis.call` / `redis.pcall`: `(true, reply)` or `(false, error
    /// table)`; raising is left to the Lua side.
    fn call(&mut self, lua: &mlua::Lua, args: RawArgs) -> mlua::Result<(bool, LuaValue)> {
        let (resp, first, a1, a2, a3, a4, a5, a6, a7, a8) = args;
        let resp = engine::resp_of(&resp);
        let argv =
            match first {
                // Up to 8 strings, as they were on Lua's stack.
                LuaValue::Integer(n) => [a1, a2, a3, a4, a5, a6, a7, a8]
                    .into_iter()
                    .take(n.clamp(0, 8) as usize)
                    .map(|a| Bytes::from(Vec::from(a.unwrap_or_default())))
                    .collect(),
                LuaValue::Table(args) => {
                    let n: usize = args.raw_get("n")?;
                    let mut argv = Vec::with_capacity(n);
                    for i in 1..=n {
                        match args.raw_get::<LuaValue>(i)? {
                            LuaValue::String(s) => argv.push(Bytes::copy_from_slice(&s.as_bytes())),
                            LuaValue::Integer(i) => {
                                argv.push(Bytes::from(crate::num::fmt_g17(i as f64)))
                            }
                            LuaValue::Number(n) => argv.push(Bytes::from(crate::num::fmt_g17(n))),
                            _ => return fail(
                                lua,
                                "ERR Lua redis lib command arguments must be strings or integers",
                            ),
                        }
                    }
                    argv
                }
                _ => Vec::new(),
            };
        if argv.is_empty() {
            return fail(
                lua,
                "ERR Please specify at least one argument for this redis lib call",
            );
        }
        let row = resp::command::lookup_id(&argv);
        let spec = match row {
            Some((_, s)) if !(argv.len() >= 2 && !s.name.contains('|') && is_container(s.name)) => {
                s
            }
            _ => return self.refuse(lua, None, "ERR Unknown Redis command called from script"),
        };
        let cmd = Some(spec.name);
        if !spec.arity_ok(argv.len()) {
            return self.refuse(
                lua,
                cmd,
                "ERR Wrong number of args calling Redis command from script",
            );
        }
        if spec.flags & F_NOSCRIPT != 0 {
            return self.refuse(
                lua,
                cmd,
                "ERR This Redis command is not allowed from script",
            );
        }
        if matches!(spec.name, "xread" | "xreadgroup") && blocks(&argv) {
            // A script cannot wait: Redis refuses the option itself.
            return self.refuse(
                lua,
                cmd,
                &format!(
                    "ERR {} command is not allowed with BLOCK option from scripts",
                    spec.name
                ),
            );
        }
        if self.read_only && spec.flags & (F_WRITE | F_MAY_REPLICATE) != 0 {
            return self.refuse(
                lua,
                cmd,
                "ERR Write commands are not allowed from read-only scripts.",
            );
        }
        if spec.flags & F_WRITE != 0 && self.inner.config.no_replicas {
            return self.refuse(lua, cmd, crate::store::NOREPLICAS);
        }
        let (name, handler, fl, row) = match resolve_row(&argv, row) {
            Resolved::Run(n, h, f, r) => (n, h, f, r),
            Resolved::Reject(e, cmd) => {
                self.inner.stats.refused(&e, cmd);
                return Ok((false, counted(frame_to_lua(lua, &e)?)?));
            }
        };
        let db = self.sess.db;
        if let Some(guard) = self.keys.as_mut() {
            let keyless_write = matches!(name, "flushdb" | "flushall" | "swapdb" | "move")
                || (name == "copy" && argv.iter().any(|a| a.eq_ignore_ascii_case(b"db")));
            if keyless_write {
                return self.refuse(
                    lua,
                    cmd,
                    &format!(
                        "ERR {} is not allowed in a script while keys are checked by the caller",
                        name.to_ascii_uppercase()
                    ),
                );
            }
            if let Err(msg) = guard.check_command(db, &argv) {
                // As Redis's ACL check of a script's command: this call
                // fails, the script goes on (or not) as it handles that.
                return self.refuse(lua, cmd, &msg);
            }
            for i in spec.key_indices(&argv) {
                if let Err(msg) = guard.check(self.inner, db, &argv[i], self.now) {
                    self.denied = Some(msg.clone());
                    return Ok((false, err_table(lua, &msg)?));
                }
            }
        }
        if fl & F_DENYOOM != 0 && !self.wrote && !self.allow_oom && self.inner.config.maxmemory > 0
        {
            let mut evicted = Vec::new();
            let room = crate::eviction::make_room(self.inner, self.now, &mut evicted);
            self.effects.extend(evicted);
            if !room {
                return self.refuse(lua, cmd, &format!("-{OOM}"));
            }
        }
        if fl & F_WRITE != 0 {
            self.wrote = true;
            self.shared.script_gate.wrote.store(true, Ordering::SeqCst);
            if let Some(guard) = self.keys.as_mut() {
                for i in spec.key_indices(&argv) {
                    guard.save(self.inner, db, &argv[i]);
                }
            }
        }
        self.sess.resp = resp;
        let ran = run(
            self.inner,
            self.shared,
            &mut self.sess,
            &argv,
            (row, name),
            handler,
            (self.now, None),
            true,
        );
        self.effects.extend(ran.effects);
        if matches!(ran.reply, Frame::Error(_) | Frame::BulkError(_)) {
            // `run` counted the error.
            return Ok((false, counted(frame_to_lua(lua, &ran.reply)?)?));
        }
        Ok((true, frame_to_lua(lua, &ran.reply)?))
    }

    /// A command of the script refused before it ran: counted as Redis's
    /// `scriptCall` counts it (the error, and the command's rejected call).
    fn refuse(
        &mut self,
        lua: &mlua::Lua,
        cmd: Option<&'static str>,
        text: &str,
    ) -> mlua::Result<(bool, LuaValue)> {
        let (ok, table) = fail(lua, text)?;
        if let LuaValue::Table(t) = &table {
            if let Ok(LuaValue::String(e)) = t.raw_get::<LuaValue>("err") {
                self.inner.stats.error(&e.as_bytes());
            }
        }
        if let Some(cmd) = cmd {
            self.inner.stats.rejected(cmd);
        }
        Ok((ok, counted(table)?))
    }
}

/// Marks an error table as counted in the error stats already, so the
/// script's reply does not count it again (Redis's field, which scripts
/// can see).
fn counted(v: LuaValue) -> mlua::Result<LuaValue> {
    if let LuaValue::Table(t) = &v {
        t.raw_set(engine::COUNTED, true)?;
    }
    Ok(v)
}

/// An error from the scripting layer itself (Redis's `luaPushError`).
fn fail(lua: &mlua::Lua, text: &str) -> mlua::Result<(bool, LuaValue)> {
    let t = match text.strip_prefix('-') {
        Some(raw) => engine::error_text(raw.as_bytes()),
        None => text.to_string(),
    };
    Ok((false, err_table(lua, &t)?))
}

/// Runs a prepared script or function with the lock held and turns its
/// outcome into the reply and effects.
fn execute(
    ctx: &mut Ctx,
    engine: &Engine,
    func: &mlua::Function,
    nkeys: usize,
    funcname: &str,
    prepared: Prepared,
    eval_mode: bool,
) -> Reply {
    let gate: &gate::Gate = &ctx.shared.script_gate;
    let libraries = &ctx.inner.scripting.libraries;
    let functions = libraries.values().map(|l| l.functions.len() as i64).sum();
    gate.set_stats(funcname, ctx.args, libraries.len() as i64, functions);
    gate.begin(eval_mode, ctx.inner.config.busy_reply_ms);
    // Ends the run however `execute` is left, a panic in a command
    // included: a gate left "running" would make every client poll.
    struct Ended<'a>(&'a gate::Gate);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let ended = Ended(gate);
    engine.abort.store(false, Ordering::Release);
    // The script's client is kept between runs (making one costs a
    // channel and two allocations); only its database and protocol carry
    // state, and both start from the caller's and RESP2 again.
    let mut sess = engine
        .session
        .take()
        .unwrap_or_else(|| Store::internal_session(ctx.sess.db));
    sess.db = ctx.sess.db;
    sess.resp = 2;
    sess.script = true;
    let caller_resp = ctx.sess.resp;
    let hook = ctx.sess.key_hook.clone();
    let command_hook = ctx.sess.command_hook.clone();
    let evicted_before = prepared.evicted.len();
    let run_state = RefCell::new(Run {
        inner: &mut *ctx.inner,
        shared: ctx.shared,
        sess,
        now: ctx.now,
        read_only: prepared.read_only,
        allow_oom: prepared.allow_oom,
        effects: prepared.evicted,
        keys: hook.map(|h| KeyGuard::new(h, command_hook)),
        denied: None,
        wrote: false,
    });
    let abort = engine.abort.clone();
    let mut error_counted = false;
    let keys = engine::Keys {
        items: &ctx.args[3..],
        nkeys,
        fcall: !eval_mode,
    };
    let result = engine.lua.scope(|scope| {
        let raw = scope.create_function_mut(|lua, args: RawArgs| {
            let mut r = run_state.borrow_mut();
            let out = r.call(lua, args);
            if r.denied.is_some() {
                abort.store(true, Ordering::SeqCst);
            }
            out
        })?;
        let (out, script_resp) = engine.call(func, &raw, keys, funcname);
        Ok(match out {
            Ok(v) => {
                if let LuaValue::Table(t) = &v {
                    error_counted =
                        matches!(t.raw_get(engine::COUNTED), Ok(LuaValue::Boolean(true)));
                }
                Ok(lua_to_frame(&v, script_resp, caller_resp))
            }
            Err((msg, was_counted)) => {
                error_counted = was_counted;
                Err(Frame::Error(Bytes::from(msg.replace(['\r', '\n'], " "))))
            }
        })
    });
    drop(ended);
    ctx.error_counted = error_counted;
    engine.abort.store(false, Ordering::Release);
    let Run {
        sess,
        effects,
        keys,
        denied,
        ..
    } = run_state.into_inner();
    engine.session.set(Some(sess));
    if let Some(msg) = denied {
        if let Some(guard) = keys {
            guard.undo(ctx.inner);
        }
        // The keys evicted before the run stay evicted: journaled.
        let mut evicted = effects;
        evicted.truncate(evicted_before);
        if !evicted.is_empty() {
            ctx.effects = Some(evicted);
            ctx.keep_effects = true;
        }
        return Err(Frame::Error(Bytes::from(msg)));
    }
    // Redis keeps what a failed script wrote, so its effects are journaled
    // whatever the reply; several effects replay as one transaction.
    ctx.keep_effects = true;
    ctx.atomic = effects.len() > 1;
    ctx.effects = Some(effects);
    match result {
        Ok(reply) => reply,
        Err(e) => Err(Frame::error(format!("ERR {e}"))),
    }
}

fn script_load(ctx: &mut Ctx) -> Reply {
    let body = ctx.args[2].clone();
    with_engine(ctx, |_, engine| {
        let (sha, _) = create(engine, &body)?;
        Ok(Frame::bulk(sha))
    })
}

fn script_exists(ctx: &mut Ctx) -> Reply {
    let known = |a: &Bytes| {
        ctx.inner
            .scripting
            .eval
            .as_ref()
            .is_some_and(|e| std::str::from_utf8(a).is_ok_and(|s| e.scripts.contains_key(s)))
    };
    let out = ctx.args[2..]
        .iter()
        .map(|a| Frame::Integer(known(a) as i64))
        .collect();
    Ok(Frame::Array(out))
}

fn script_flush(ctx: &mut Ctx) -> Reply {
    let ok = match ctx.args.len() {
        2 => true,
        3 => ctx.arg_is(2, "sync") || ctx.arg_is(2, "async"),
        _ => false,
    };
    if !ok {
        return Err(err("ERR SCRIPT FLUSH only support SYNC|ASYNC option"));
    }
    // A fresh Lua state, as Redis's scriptingReset: globals a script
    // managed to leave behind go too.
    ctx.inner.scripting.eval = None;
    Ok(Frame::simple("OK"))
}

/// `SCRIPT DEBUG NO` (debugging off, which it always is here) answers OK,
/// as in Redis. `YES`/`SYNC` would turn the client's connection into an
/// interactive debugger session holding the store (`SYNC`) or a copy of
/// it (`YES`): a development tool, refused here by design, as `DEBUG` and
/// `MONITOR` are, with where to go instead.
fn script_debug(ctx: &mut Ctx) -> Reply {
    if ctx.arg_is(2, "no") {
        return Ok(Frame::simple("OK"));
    }
    if ctx.arg_is(2, "yes") || ctx.arg_is(2, "sync") {
        return Err(err(
            "ERR the Lua debugger (SCRIPT DEBUG YES|SYNC) is not available in redoubt: nothing was changed; debug the script against a redis-server (redis-cli --ldb), then run it here",
        ));
    }
    Err(err("ERR Use SCRIPT DEBUG YES/SYNC/NO"))
}

/// Reached with the lock held, so no script is running (a running one is
/// killed from [`crate::Store`] before the lock, see `gate`).
fn script_kill(_ctx: &mut Ctx) -> Reply {
    Err(err(gate::NOT_BUSY))
}

/// Redis's `addReplyHelp`: the header, the lines, then HELP itself.
pub(crate) fn help(cmd: &str, lines: &[&'static str]) -> Frame {
    let mut out = vec![Frame::Simple(Bytes::from(format!(
        "{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )))];
    out.extend(
        lines
            .iter()
            .chain(&["HELP", "    Prints this help."])
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes()))),
    );
    Frame::Array(out)
}

fn script_help(_ctx: &mut Ctx) -> Reply {
    Ok(help(
        "SCRIPT",
        &[
            "DEBUG (YES|SYNC|NO)",
            "    Set the debug mode for subsequent scripts executed.",
            "EXISTS <sha1> [<sha1> ...]",
            "    Return information about the existence of the scripts in the script cache.",
            "FLUSH [ASYNC|SYNC]",
            "    Flush the Lua scripts cache. Very dangerous on replicas.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the scripts cache.",
            "    * SYNC: Synchronously flush the scripts cache.",
            "KILL",
            "    Kill the currently executing Lua script.",
            "LOAD <script>",
            "    Load a script into the scripts cache without executing it.",
        ],
    ))
}

/// True when an XREAD/XREADGROUP asks to BLOCK (before its STREAMS).
fn blocks(argv: &[Bytes]) -> bool {
    let opts = &argv[1..];
    opts.iter()
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .enumerate()
        .any(|(i, a)| a.eq_ignore_ascii_case(b"BLOCK") && i + 1 < opts.len())
}
