//! Turns the tail calls of compiled user code into plain calls.
//!
//! Redis's `redis.call` is a C function, and Lua 5.1 never tail-calls a C
//! function: under `return redis.call(...)` the script's frame stays on
//! the stack, and an error names the script's line. Ours is a Lua function
//! (a C function may take at most 8,000 values on its stack, fewer than the
//! 7,999 arguments plus its own working room Redis allows, so the Lua
//! wrapper packs them into one table first). A Lua function in tail
//! position replaces the caller's frame, and the line would be lost. So the
//! user's chunk is compiled, dumped, and each `TAILCALL` rewritten to the
//! `CALL` the parser had emitted before it turned it into a tail call
//! (`TAILCALL A B 0` is always followed by `RETURN A 0`, which returns the
//! same values from a plain call). The one behaviour that changes: a
//! tail-recursive script deeper than Lua's 20,000 nested calls fails with
//! "stack overflow" instead of running in constant stack.
//!
//! The walk follows Lua 5.1's dump format (`ldump.c`): a 12-byte header,
//! then per function its source, line range, four bytes of counts, the
//! code, the constants, the nested functions, and the debug information.

/// Lua 5.1's opcodes, the low 6 bits of an instruction.
const OP_CALL: u32 = 28;
const OP_TAILCALL: u32 = 29;
/// With `C == 0` the next word is `SETLIST`'s operand, not an instruction.
const OP_SETLIST: u32 = 34;

const HEADER: usize = 12;

/// `dump` with every tail call made a plain call, or `None` if it is not
/// a chunk this walker understands (then the caller keeps the original).
pub(crate) fn without_tail_calls(dump: &[u8]) -> Option<Vec<u8>> {
    // "\x1bLua", version 5.1, official format, little-endian, 4-byte int,
    // 8-byte size_t, 4-byte instruction, 8-byte number, floating point.
    if dump.get(..HEADER)? != b"\x1bLua\x51\x00\x01\x04\x08\x04\x08\x00" {
        return None;
    }
    let mut out = dump.to_vec();
    let mut pos = HEADER;
    function(&mut out, &mut pos)?;
    (pos == out.len()).then_some(out)
}

fn function(b: &mut [u8], pos: &mut usize) -> Option<()> {
    string(b, pos)?; // source
    int(b, pos)?; // linedefined
    int(b, pos)?; // lastlinedefined
    take(b, pos, 4)?; // nups, numparams, is_vararg, maxstacksize
    let n = count(b, pos)?;
    let mut i = 0;
    while i < n {
        let at = *pos + 4 * i;
        let word = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        match word & 0x3f {
            OP_TAILCALL => {
                let call = (word & !0x3f) | OP_CALL;
                b[at..at + 4].copy_from_slice(&call.to_le_bytes());
            }
            // C is the top 9 bits.
            OP_SETLIST if word >> 23 == 0 => i += 1,
            _ => {}
        }
        i += 1;
    }
    take(b, pos, 4 * n)?;
    for _ in 0..count(b, pos)? {
        match *b.get(*pos)? {
            0 => take(b, pos, 1)?, // nil
            1 => take(b, pos, 2)?, // boolean
            3 => take(b, pos, 9)?, // number
            4 => {
                take(b, pos, 1)?;
                string(b, pos)?;
            }
            _ => return None,
        }
    }
    for _ in 0..count(b, pos)? {
        function(b, pos)?;
    }
    let lines = count(b, pos)?;
    take(b, pos, 4 * lines)?;
    for _ in 0..count(b, pos)? {
        string(b, pos)?;
        take(b, pos, 8)?; // startpc, endpc
    }
    for _ in 0..count(b, pos)? {
        string(b, pos)?;
    }
    Some(())
}

fn take(b: &[u8], pos: &mut usize, n: usize) -> Option<()> {
    let end = pos.checked_add(n)?;
    (end <= b.len()).then(|| *pos = end)
}

fn int(b: &[u8], pos: &mut usize) -> Option<i32> {
    let v = i32::from_le_bytes(b.get(*pos..*pos + 4)?.try_into().ok()?);
    *pos += 4;
    Some(v)
}

fn count(b: &[u8], pos: &mut usize) -> Option<usize> {
    usize::try_from(int(b, pos)?).ok()
}

/// A `size_t` length (0 for no string) and that many bytes.
fn string(b: &[u8], pos: &mut usize) -> Option<()> {
    let len = u64::from_le_bytes(b.get(*pos..*pos + 8)?.try_into().ok()?);
    *pos += 8;
    take(b, pos, usize::try_from(len).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::{chunk::ChunkMode, Lua};

    fn rewritten(lua: &Lua, code: &str) -> mlua::Function {
        let f = lua.load(code).set_name("@t").into_function().unwrap();
        let dump = without_tail_calls(&f.dump(false)).expect("a 5.1 chunk");
        lua.load(dump)
            .set_mode(ChunkMode::Binary)
            .into_function()
            .unwrap()
    }

    #[test]
    fn a_lua_function_called_in_tail_position_still_sees_its_caller() {
        let lua = Lua::new();
        // `where` raises an error positioned at the frame that called it.
        lua.load("function where() error('here', 2) end")
            .exec()
            .unwrap();
        let code = "local x = 1\nreturn where()";
        let message = |f: mlua::Function| match f.call::<()>(()) {
            // The first line: mlua appends a traceback.
            Err(mlua::Error::RuntimeError(m)) => m.lines().next().unwrap_or_default().to_string(),
            other => panic!("{other:?}"),
        };
        // With the tail call, the caller's frame is gone.
        let plain = lua.load(code).set_name("@t").into_function().unwrap();
        assert_eq!(message(plain), "here");
        assert_eq!(message(rewritten(&lua, code)), "t:2: here");
    }

    #[test]
    fn results_are_those_of_the_tail_call_in_nested_functions_and_after_setlists() {
        let lua = Lua::new();
        // A table of more than 50 items ends its SETLIST with a data word;
        // nested functions, varargs and every constant type.
        let items: Vec<String> = (1..=600).map(|i| i.to_string()).collect();
        let code = format!(
            "local t = {{{}}}\n\
             local function inner(...) return select('#', ...), ... end\n\
             local function outer(a) if a == nil or a == true then return inner(1, nil, 3) end return inner(a, 'x', 2.5) end\n\
             return #t, outer(false), outer(nil)",
            items.join(",")
        );
        let want: Vec<mlua::Value> = lua
            .load(&code)
            .call::<mlua::MultiValue>(())
            .unwrap()
            .into_iter()
            .collect();
        let got: Vec<mlua::Value> = rewritten(&lua, &code)
            .call::<mlua::MultiValue>(())
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    #[test]
    fn anything_but_a_lua_5_1_chunk_is_left_alone() {
        assert_eq!(without_tail_calls(b"return 1"), None);
        let lua = Lua::new();
        let mut dump = lua.load("return 1").into_function().unwrap().dump(false);
        dump.truncate(dump.len() - 3);
        assert_eq!(without_tail_calls(&dump), None);
    }
}
