//! Lua-like argument checks and the wrapper that raises failures as Lua
//! strings.
//!
//! The C libraries check their arguments with `luaL_check*`, whose messages
//! scripts see ("bad argument #1 to 'encode' (expected 1 argument)"); the
//! helpers here build the same messages. Lua 5.1 coerces numeric strings to
//! numbers and numbers to strings in those checks; so do these.

use mlua::{Function, Lua, MultiValue, Table, Value};

/// Why a library function failed. All but `Lua` are raised as Lua strings.
pub(crate) enum Fault {
    /// `luaL_error`: the message after the caller's "source:line: ".
    Raise(Vec<u8>),
    /// `luaL_argerror`: "bad argument #n to 'name' (msg)", where the name
    /// is how the caller called the function, also after the position.
    Arg(usize, Vec<u8>),
    /// An error the Lua core raises inside a C function (`lua_settable`'s
    /// "table index is nil"): no position.
    Bare(Vec<u8>),
    /// An error mlua itself reported (out of memory, a metamethod's error).
    Lua(mlua::Error),
}

impl From<mlua::Error> for Fault {
    fn from(e: mlua::Error) -> Self {
        Fault::Lua(e)
    }
}

/// A message to raise, as `luaL_error` would.
pub(crate) fn raise(msg: impl Into<Vec<u8>>) -> Fault {
    Fault::Raise(msg.into())
}

pub(crate) type Outcome<T> = Result<T, Fault>;

/// `lua_typename` of a value; `None` is an absent argument.
pub(crate) fn typename(v: Option<&Value>) -> &'static str {
    match v {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// A Lua number as a double (Lua 5.1 has no integer subtype; mlua reports
/// integral numbers as `Integer`).
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

/// C's `(ptrdiff_t)d` on x86-64, as `lua_tointeger` does it: truncation,
/// and the "integer indefinite" value when out of range.
pub(crate) fn trunc_i64(d: f64) -> i64 {
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&d) {
        i64::MIN
    } else {
        d as i64
    }
}

/// The arguments of one call.
pub(crate) struct Args<'l> {
    lua: &'l Lua,
    vals: Vec<Value>,
}

impl<'l> Args<'l> {
    pub(crate) fn new(lua: &'l Lua, mv: MultiValue) -> Self {
        Args {
            lua,
            vals: mv.into_iter().collect(),
        }
    }

    /// `lua_gettop`.
    pub(crate) fn len(&self) -> usize {
        self.vals.len()
    }

    /// Argument `i` (1-based), `None` when absent.
    pub(crate) fn get(&self, i: usize) -> Option<&Value> {
        i.checked_sub(1).and_then(|i| self.vals.get(i))
    }

    /// Pushes a value after the arguments, where a C function's own stack
    /// use shows through in later argument checks.
    pub(crate) fn push(&mut self, v: Value) {
        self.vals.push(v);
    }

    /// Drops arguments after the first `n` (`lua_settop`).
    pub(crate) fn truncate(&mut self, n: usize) {
        self.vals.truncate(n);
    }

    /// `luaL_argerror`.
    pub(crate) fn arg_error(&self, i: usize, msg: &str) -> Fault {
        self.arg_error_bytes(i, msg.as_bytes())
    }

    pub(crate) fn arg_error_bytes(&self, i: usize, msg: &[u8]) -> Fault {
        Fault::Arg(i, msg.to_vec())
    }

    /// `luaL_typerror`.
    pub(crate) fn type_error(&self, i: usize, expected: &str) -> Fault {
        self.arg_error(
            i,
            &format!("{expected} expected, got {}", typename(self.get(i))),
        )
    }

    /// `lua_tonumber`: numbers, and strings Lua reads as numbers.
    pub(crate) fn to_number(&self, i: usize) -> Outcome<Option<f64>> {
        Ok(match self.get(i) {
            Some(v @ (Value::Integer(_) | Value::Number(_))) => number(v),
            Some(v @ Value::String(_)) => self.lua.coerce_number(v.clone())?,
            _ => None,
        })
    }

    /// `luaL_checknumber`.
    pub(crate) fn check_number(&self, i: usize) -> Outcome<f64> {
        self.to_number(i)?
            .ok_or_else(|| self.type_error(i, "number"))
    }

    /// `luaL_checkinteger`.
    pub(crate) fn check_integer(&self, i: usize) -> Outcome<i64> {
        self.check_number(i).map(trunc_i64)
    }

    /// `luaL_optinteger`.
    pub(crate) fn opt_integer(&self, i: usize, default: i64) -> Outcome<i64> {
        match self.get(i) {
            None | Some(Value::Nil) => Ok(default),
            _ => self.check_integer(i),
        }
    }

    /// `luaL_checklstring`: strings, and numbers as `%.14g`.
    pub(crate) fn check_bytes(&self, i: usize) -> Outcome<Vec<u8>> {
        match self.get(i) {
            Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
            Some(v @ (Value::Integer(_) | Value::Number(_))) => {
                match self.lua.coerce_string(v.clone())? {
                    Some(s) => Ok(s.as_bytes().to_vec()),
                    None => Err(self.type_error(i, "string")),
                }
            }
            _ => Err(self.type_error(i, "string")),
        }
    }
}

/// The Lua side of every library function: calls the Rust function, which
/// returns `true, results...` or `false, message`, and raises the message
/// with level 0: the Rust side has already put the caller's position in
/// front, as `luaL_error` does (it cannot be computed here once `finish`
/// runs as a tail call).
///
/// A status that is a number `n` means the results are the `n` items of
/// the table that follows, which Lua's `unpack` spreads: many results then
/// cost no mlua handles (see `pending`).
const WRAPPER: &str = r#"
local raw = ...
local error, unpack = error, unpack
local function finish(ok, ...)
  if ok == true then return ... end
  if ok then return unpack((...), 1, ok) end
  error((...), 0)
end
return function(...) return finish(raw(...)) end
"#;

/// Builds library functions: a Rust body behind the Lua [`WRAPPER`].
#[derive(Clone)]
pub(crate) struct Wrapper {
    factory: Function,
    /// The base library's `next`, taken at registration (a script may
    /// replace the global later): how encoders walk a table a step at a
    /// time without holding its pairs.
    pub(crate) next: Function,
}

impl Wrapper {
    pub(crate) fn new(lua: &Lua) -> mlua::Result<Self> {
        let factory = lua
            .load(WRAPPER)
            .set_name(crate::WRAPPER_SOURCE)
            .into_function()?;
        let next = lua.globals().raw_get("next")?;
        Ok(Wrapper { factory, next })
    }

    /// A Lua function running `body`. Argument errors name it as the
    /// caller did, as C does; `name` stands in when a tail call lost that.
    pub(crate) fn wrap<F>(&self, lua: &Lua, name: &'static str, body: F) -> mlua::Result<Function>
    where
        F: Fn(&Lua, Args<'_>) -> Outcome<MultiValue> + mlua::MaybeSend + 'static,
    {
        self.make(lua, name, move |lua, a| {
            body(lua, a).map(|mut out| {
                out.push_front(Value::Boolean(true));
                out
            })
        })
    }

    /// Like [`Wrapper::wrap`] for a body that gives its results as the
    /// first `n` items of a table.
    pub(crate) fn wrap_spread<F>(
        &self,
        lua: &Lua,
        name: &'static str,
        body: F,
    ) -> mlua::Result<Function>
    where
        F: Fn(&Lua, Args<'_>) -> Outcome<(Table, usize)> + mlua::MaybeSend + 'static,
    {
        self.make(lua, name, move |lua, a| {
            body(lua, a)
                .map(|(t, n)| MultiValue::from_iter([Value::Integer(n as i64), Value::Table(t)]))
        })
    }

    /// `body`'s output starts with the status the wrapper reads.
    fn make<F>(&self, lua: &Lua, name: &'static str, body: F) -> mlua::Result<Function>
    where
        F: Fn(&Lua, Args<'_>) -> Outcome<MultiValue> + mlua::MaybeSend + 'static,
    {
        let raw = lua.create_function(move |lua, mv: MultiValue| {
            let msg = match body(lua, Args::new(lua, mv)) {
                Ok(out) => return Ok(out),
                Err(Fault::Lua(e)) => return Err(e),
                Err(Fault::Bare(msg)) => msg,
                Err(Fault::Raise(msg)) => [where_(lua), msg].concat(),
                Err(Fault::Arg(n, msg)) => arg_message(lua, name, n, &msg),
            };
            Ok(MultiValue::from_iter([
                Value::Boolean(false),
                Value::String(lua.create_string(msg)?),
            ]))
        })?;
        self.factory.call(raw)
    }
}

// Stack levels seen from the Rust function: 0 is itself, 1 the Lua
// wrapper, 2 whoever called the wrapper, which is what the C function's
// level 1 was.
const WRAPPER_LEVEL: usize = 1;
const CALLER_LEVEL: usize = 2;

/// `luaL_where(L, 1)` of the C function: "source:line: " of its caller
/// when that is Lua code, else nothing. (When the script reached the
/// function by a tail call, Lua has dropped the script's frame and we give
/// nothing, where Redis still names the line.)
fn where_(lua: &Lua) -> Vec<u8> {
    lua.inspect_stack(CALLER_LEVEL, |d| {
        let line = d.current_line().unwrap_or(0);
        match d.source().short_src {
            Some(src) if line > 0 => format!("{src}:{line}: ").into_bytes(),
            _ => Vec::new(),
        }
    })
    .unwrap_or_default()
}

/// `luaL_argerror`'s message, with the name the caller used (`?` when
/// unknown, e.g. under `pcall(f, ...)`). After a tail call Lua no longer
/// knows the name, where Redis's C function still would: `registered`
/// stands in then.
fn arg_message(lua: &Lua, registered: &str, mut n: usize, msg: &[u8]) -> Vec<u8> {
    let (name, what) = lua
        .inspect_stack(WRAPPER_LEVEL, |d| {
            let names = d.names();
            (names.name.map(|s| s.into_owned()), names.name_what)
        })
        .unwrap_or((None, None));
    let lost_to_tail_call = lua
        .inspect_stack(CALLER_LEVEL, |d| d.source().what == "tail")
        .unwrap_or(false);
    let name = match name {
        Some(name) => name,
        None if lost_to_tail_call => registered.to_string(),
        None => "?".to_string(),
    };
    let mut out = where_(lua);
    if what == Some("method") {
        n = n.wrapping_sub(1);
        if n == 0 {
            out.extend_from_slice(format!("calling '{name}' on bad self (").as_bytes());
            out.extend_from_slice(msg);
            out.push(b')');
            return out;
        }
    }
    out.extend_from_slice(format!("bad argument #{n} to '{name}' (").as_bytes());
    out.extend_from_slice(msg);
    out.push(b')');
    out
}

/// One return value.
pub(crate) fn one(v: Value) -> MultiValue {
    MultiValue::from_iter([v])
}
