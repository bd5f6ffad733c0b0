//! Shared by the test files: run a Lua body in our state or in Redis's,
//! rendering every result (and any error) as one printable line.

#![allow(dead_code)]

use mlua::Lua;

/// Wraps `body` so it returns a printable rendering of `pcall(body)`:
/// the count of values, then each value (strings with non-printable bytes
/// as `\xNN`, numbers as `%.17g`, tables in `pairs` order).
pub fn chunk(body: &str) -> String {
    let body = untail(body);
    format!(
        r#"
local function hex(s)
  return (string.gsub(s, '[^%w%p ]', function(c) return string.format('\\x%02x', string.byte(c)) end))
end
local dump
dump = function(v, d)
  local t = type(v)
  if t == 'string' then return '"' .. hex(v) .. '"'
  elseif t == 'number' then return string.format('%.17g', v)
  elseif t == 'table' then
    if d > 20 then return '{{...}}' end
    local parts = {{}}
    for k, x in pairs(v) do parts[#parts + 1] = dump(k, d + 1) .. '=' .. dump(x, d + 1) end
    return '{{' .. table.concat(parts, ',') .. '}}'
  elseif v == cjson.null then return 'null'
  else return tostring(v) end
end
local function all(...)
  local n = select('#', ...)
  local parts = {{}}
  for i = 1, n do parts[i] = dump((select(i, ...)), 0) end
  return n .. ':' .. table.concat(parts, ' ')
end
local function id(...) return ... end
return all(pcall(function() {body} end))
"#
    )
}

/// The body with its last `return a, b` made `return id(a, b)`, so the
/// library functions are not reached by a tail call: Lua drops the
/// caller's frame then, and our error positions come from that frame.
fn untail(body: &str) -> String {
    match body.rfind("return ") {
        Some(i) => format!("{}return id({})", &body[..i], &body[i + 7..]),
        None => body.to_string(),
    }
}

/// A Lua state with the libraries, as the store will set it up.
pub fn ours() -> Lua {
    let lua = Lua::new();
    scriptlib::register(&lua).expect("register the libraries");
    lua
}

/// The rendering of `body` run in `lua`.
pub fn run_ours(lua: &Lua, body: &str) -> String {
    match lua
        .load(chunk(body))
        .set_name("=user_script")
        .eval::<mlua::LuaString>()
    {
        Ok(s) => String::from_utf8_lossy(&s.as_bytes()).into_owned(),
        Err(e) => format!("-ERR {e}"),
    }
}
