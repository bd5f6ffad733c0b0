//! The Lua libraries Redis 7.0 gives scripts — `cjson`, `cmsgpack`, `bit`
//! and `struct` — written in Rust on `mlua`, behaving as the C libraries
//! Redis vendors in `deps/lua/src/` (`lua_cjson.c`, `lua_cmsgpack.c`,
//! `lua_bit.c`, `lua_struct.c`): the same encodings byte for byte, the same
//! number formatting, the same error messages.
//!
//! [`register`] installs the four tables as globals, with exactly the
//! functions and fields Redis 7.0 exposes. The store's scripting calls it on
//! a fresh state before it locks the globals.
//!
//! Errors are raised as plain Lua strings, as `luaL_error` raises them, so
//! `pcall(cjson.decode, s)` gives a script the same message Redis gives.
//! mlua would raise a Rust error as a userdata, so each function is a small
//! Lua wrapper (chunk name [`WRAPPER_SOURCE`]) around a Rust function that
//! returns its failure as a value; the wrapper raises it with `error(msg, 0)`.
//! A caller that builds "source:line:" prefixes from the stack should skip
//! frames whose source is [`WRAPPER_SOURCE`].
//!
//! # Differences from Redis
//! The differential tests (`tests/differential.rs`) run every case in a
//! real redis-server 7.0 and here and compare the results byte for byte;
//! what they do not cover, or cover as a known difference:
//! - An error raised when the script reached the function by a tail call
//!   (`return cjson.decode(s)`) has no "user_script:N: " prefix here:
//!   Lua drops the calling frame for a tail call into our Lua wrapper,
//!   where Redis's C function keeps it. The message is otherwise the same
//!   (argument errors still name the function, by its registered name).
//! - `cmsgpack.unpack` returning more than 7997 values at once fails with
//!   "too many results to unpack" (Lua's `unpack` spreads them); Redis
//!   allows up to 7999. Deeper or wider values are exact.
//! - `bit.tohex(x, -2^31)` gives 8 upper-case digits, as Redis after the
//!   CVE-2024-31449 fix; 7.0.15 itself overruns a buffer there.
//! - `cjson.decode` reads hex floats (`0x1.8p1`) by summing digits, exact
//!   up to 2^53 of mantissa; glibc's `strtod` rounds longer ones exactly.
//! - `cjson.encode_keep_buffer` only records its setting: there is no
//!   shared buffer to keep, and the output is the same either way.
//! - Running out of memory inside the libraries reaches the script as
//!   mlua's error value rather than Lua's "not enough memory" string.
//!
//! # Layout
//! - `args`: Lua-like argument checks (`luaL_check*`
//!   messages) and the wrapper that turns failures into Lua errors.
//! - `numfmt`: C's `%.14g` and `strtod`, which cjson's output and input
//!   follow.
//! - `cjson`: the table and its settings functions; `cjson::encode` and
//!   `cjson::decode` the two directions.
//! - `cmsgpack`: MessagePack pack/unpack.
//! - `pending`: containers being filled or walked, held in a Lua table so
//!   wide or deep values keep few mlua handles alive.
//! - `bit`: LuaBitOp's 32-bit operations.
//! - `structlib`: Roberto Ierusalimschy's `struct` (pack/unpack/size).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod bit;
mod cjson;
mod cmsgpack;
mod numfmt;
mod pending;
mod structlib;

use mlua::Lua;

/// The chunk name of the Lua wrappers around the library functions; error
/// positions pointing there are the library's, not the script's.
pub const WRAPPER_SOURCE: &str = "=scriptlib";

/// Installs `cjson`, `cmsgpack`, `bit` and `struct` as globals of `lua`,
/// each with the functions and fields Redis 7.0 gives scripts.
///
/// Needs the base library (the wrappers keep its `error`, `unpack` and
/// `next` from this moment, so a script replacing those globals later
/// changes nothing). `cjson.null` is a NULL light userdata, as in Redis.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let wrapper = args::Wrapper::new(lua)?;
    let globals = lua.globals();
    globals.set("cjson", cjson::open(lua, &wrapper)?)?;
    globals.set("struct", structlib::open(lua, &wrapper)?)?;
    globals.set("cmsgpack", cmsgpack::open(lua, &wrapper)?)?;
    globals.set("bit", bit::open(lua, &wrapper)?)?;
    Ok(())
}
