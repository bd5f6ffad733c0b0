-- The Lua half of the scripting API (loaded once per Lua state by
-- engine.rs): the `redis` table, the sandbox and the runner. What needs the
-- keyspace or Rust (commands, SHA1, logging, the random generator, the
-- kill flag) comes in as arguments; the per-run command function is
-- `ctl.raw`, present only while a script runs.
local H, G, ctl, rust = ...
local real_pcall, real_xpcall, real_error, real_rawset = pcall, xpcall, error, rawset
local type, select, tostring, tonumber, setmetatable = type, select, tostring, tonumber, setmetatable
local floor, concat, next, ipairs = math.floor, table.concat, next, ipairs
local stop, sha1hex, log, rng, seed = rust.stop, rust.sha1hex, rust.log, rust.rng, rust.seed

local function ro()
  real_error("Attempt to modify a readonly table", 2)
end
-- For the library-load API table (functions.rs), read-only as Redis's.
ctl.readonly = ro

-- Tables the script may read but not change (Redis 7.0 makes every table
-- reachable from the globals read-only).
local protected = setmetatable({}, { __mode = "k" })
-- getmetatable on a protected table gives an empty table, as Redis's
-- does (a table whose fields a script cannot reach).
local function proxy(t)
  local p = setmetatable({}, { __index = t, __newindex = ro, __metatable = setmetatable({}, { __newindex = ro }) })
  protected[p] = true
  return p
end

-- Redis's luaPushErrorBuff: "-CODE msg" keeps its code, anything else
-- becomes "ERR msg"; CR/LF trimmed from both ends.
local function err_table(buf)
  local code, msg
  if buf:sub(1, 1) == "-" then
    local sp = buf:find(" ", 1, true)
    if sp then
      code, msg = buf:sub(2, sp - 1), buf:sub(sp + 1)
    else
      code, msg = "ERR", buf:sub(2)
    end
  else
    code, msg = "ERR", buf
  end
  msg = (msg:gsub("^[\r\n]+", ""))
  msg = (msg:gsub("[\r\n]+$", ""))
  return { err = code .. " " .. msg }
end

-- Functions a script calls directly are wrapped by engine.rs in C
-- functions, as Redis's are; call and pcall then in a Lua function that
-- packs their arguments (a C function's stack is too small for Redis's
-- maximum), which user code never tail-calls (tailcall.rs), so an error
-- still names the script's line. They return FAIL and the error text
-- instead of raising; the C wrapper raises it.
local FAIL = ctl.FAIL
local function fail(text)
  return FAIL, err_table(text).err
end

local function toint(x)
  if x >= 0 then return floor(x) end
  return -floor(-x)
end

local R = {}

-- What redis.call and redis.pcall answer outside a run. Inside one,
-- engine.rs's wrapper around them hands the arguments to the run's
-- command function (`ctl.raw`) itself.
function R.call()
  return fail("redis.call/pcall can only be called inside a script invocation")
end
R.pcall = R.call

function R.error_reply(...)
  local e = ...
  if select("#", ...) ~= 1 or type(e) ~= "string" then
    return err_table("wrong number or type of arguments")
  end
  if e:sub(1, 1) ~= "-" then e = "-" .. e end
  return err_table(e)
end

function R.status_reply(...)
  local s = ...
  if select("#", ...) ~= 1 or type(s) ~= "string" then
    return err_table("wrong number or type of arguments")
  end
  return { ok = s }
end

function R.sha1hex(...)
  if select("#", ...) ~= 1 then return fail("wrong number of arguments") end
  local s = ...
  if type(s) == "number" then s = tostring(s) elseif type(s) ~= "string" then s = "" end
  return sha1hex(s)
end

function R.log(...)
  local n = select("#", ...)
  if n < 2 then return fail("redis.log() requires two arguments or more.") end
  local level = tonumber((...))
  if not level then return fail("First argument must be a number (log level).") end
  level = toint(level)
  if level < 0 or level > 3 then return fail("Invalid debug level.") end
  local parts = {}
  for j = 2, n do
    local s = select(j, ...)
    if type(s) == "string" or type(s) == "number" then parts[#parts + 1] = tostring(s) end
  end
  log(level, concat(parts, " "))
end

function R.setresp(...)
  if not ctl.raw then return fail("redis.setresp can only be called inside a script invocation") end
  if select("#", ...) ~= 1 then return fail("redis.setresp() requires one argument.") end
  local r = toint(tonumber((...)) or 0)
  if r ~= 2 and r ~= 3 then return fail("RESP version must be 2 or 3.") end
  ctl.resp = r
end

function R.set_repl(...)
  if not ctl.raw then return fail("redis.set_repl can only be called inside a script invocation") end
  if select("#", ...) ~= 1 then return fail("redis.set_repl() requires two arguments.") end
  local f = toint(tonumber((...)) or 0)
  if f < 0 or f > 3 then
    return fail("Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.")
  end
  -- Effects are always journaled: what the script changed is what gets
  -- replayed, so there is nothing to switch off.
end

-- There are no ACL users here: every existing command is permitted.
function R.acl_check_cmd(...)
  if not ctl.raw then return fail("redis.acl_check_cmd can only be called inside a script invocation") end
  local n = select("#", ...)
  if n == 0 then return fail("Please specify at least one argument for this redis lib call") end
  for i = 1, n do
    local t = type((select(i, ...)))
    if t ~= "string" and t ~= "number" then
      return fail("Lua redis lib command arguments must be strings or integers")
    end
  end
  if not rust.known_command(...) then return fail("Invalid command passed to redis.acl_check_cmd()") end
  return true
end

function R.replicate_commands() return true end
function R.breakpoint() return false end
function R.debug() end

R.LOG_DEBUG, R.LOG_VERBOSE, R.LOG_NOTICE, R.LOG_WARNING = 0, 1, 2, 3
R.REPL_NONE, R.REPL_AOF, R.REPL_SLAVE, R.REPL_REPLICA, R.REPL_ALL = 0, 1, 2, 2, 3
R.REDIS_VERSION = rust.version
R.REDIS_VERSION_NUM = rust.version_num

-- math.random with Redis's own generator (the same sequence on every
-- platform), argument rules as Lua 5.1's.
local M = H.math
-- Errors are returned as FAILPOS, text: the C wrapper raises them with the
-- script's position, as Lua's own argument errors read.
local FAILPOS = ctl.FAILPOS
function M.random(...)
  local n = select("#", ...)
  local a1, a2 = ...
  local r = rng()
  if n == 0 then return r end
  local function arg(i, v)
    local x = tonumber(v)
    if not x then
      return nil, "bad argument #" .. i .. " to 'random' (number expected, got " .. (v == nil and "no value" or type(v)) .. ")"
    end
    return toint(x)
  end
  if n == 1 then
    local u, e = arg(1, a1)
    if not u then return FAILPOS, e end
    if u < 1 then return FAILPOS, "bad argument #1 to 'random' (interval is empty)" end
    return floor(r * u) + 1
  elseif n == 2 then
    local l, e = arg(1, a1)
    if not l then return FAILPOS, e end
    local u, e2 = arg(2, a2)
    if not u then return FAILPOS, e2 end
    if l > u then return FAILPOS, "bad argument #2 to 'random' (interval is empty)" end
    return floor(r * (u - l + 1)) + l
  end
  return FAILPOS, "wrong number of arguments"
end
function M.randomseed(...)
  local s = ...
  local v = tonumber(s)
  if not v then
    return FAILPOS, "bad argument #1 to 'randomseed' (number expected, got " .. (s == nil and "no value" or type(s)) .. ")"
  end
  seed(toint(v))
end

-- Redis 7.0's pcall hands back the message of an error table, and nothing
-- may catch the error that stops a killed or refused script.
local errtext = rust.errtext
local function after_pcall(ok, ...)
  if ok then return true, ... end
  local e = ...
  if stop() then real_error(e, 0) end
  if type(e) == "userdata" then
    local m = errtext(e)
    if m then return false, m end
  end
  if type(e) == "table" then
    local m = e.err
    if type(m) == "string" or type(m) == "number" then return false, m end
  end
  return false, e
end
H.pcall = function(f, ...) return after_pcall(real_pcall(f, ...)) end

local function after_xpcall(ok, ...)
  if not ok and stop() then real_error((...), 0) end
  return ok, ...
end
H.xpcall = function(f, h) return after_xpcall(real_xpcall(f, h)) end

-- Redis's copy of Lua parses every chunk as text (it has no binary
-- loader): a dumped function is a syntax error, never bytecode run
-- unchecked. With a space in front, Lua's own parser says the same, and
-- the chunk keeps the name Lua would have given it.
local real_loadstring = H.loadstring
H.loadstring = function(s, name)
  if type(s) == "string" and s:byte(1) == 27 then
    return real_loadstring(" " .. s, name or s)
  end
  return real_loadstring(s, name)
end

-- Redis raises these from C, so without a position.
local real_setmetatable = setmetatable
H.rawset = function(t, k, v)
  if protected[t] then real_error("Attempt to modify a readonly table", 0) end
  return real_rawset(t, k, v)
end
H.setmetatable = function(t, mt)
  if protected[t] then real_error("Attempt to modify a readonly table", 0) end
  return real_setmetatable(t, mt)
end

-- The globals: every name lives in H; G itself stays empty so that every
-- assignment to a global reaches __newindex, and a missing name is an
-- error rather than nil.
for _, lib in ipairs({ "string", "math", "table", "coroutine", "cjson", "bit", "cmsgpack", "struct" }) do
  if type(H[lib]) == "table" then H[lib] = proxy(H[lib]) end
end
H.redis = proxy(R)
H._G = G
setmetatable(H, {
  __index = function(_, k)
    real_error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
  end,
})
local names = {}
for k in next, G do names[#names + 1] = k end
for _, k in ipairs(names) do real_rawset(G, k, nil) end
setmetatable(G, { __index = H, __newindex = ro, __metatable = setmetatable({}, { __newindex = ro }) })
protected[G] = true

-- Runs a compiled script (f_<sha> for EVAL) or a registered function
-- (given KEYS and ARGV as arguments) under the error handler that records
-- where the error happened; one result, as Redis keeps. Without `raw`
-- (FUNCTION LOAD's code) nothing else is set. With it, the run's
-- redis.call, RESP2 to start with, and KEYS and ARGV: for a few, `nkeys`
-- and `nargs` then the keys and the arguments themselves (one call from
-- Rust instead of one per value and table); else -1, 0 then the two
-- tables.
-- Returns ok, the result, and the protocol the script chose.
local function first(ok, r) return ok, r end
local function unset(ok, r)
  ctl.raw = nil
  return ok, r, ctl.resp
end
return function(f, handler, raw, fcall, nkeys, nargs, ...)
  if not raw then return first(real_xpcall(f, handler)) end
  ctl.raw, ctl.resp = raw, 2
  local keys, args
  if nkeys < 0 then
    keys, args = ...
  elseif nargs == 0 then
    keys, args = { ... }, {}
  elseif nkeys == 0 then
    keys, args = {}, { ... }
  else
    keys, args = { ... }, { select(nkeys + 1, ...) }
    for i = nkeys + nargs, nkeys + 1, -1 do keys[i] = nil end
  end
  if fcall then
    return unset(real_xpcall(function() return f(keys, args) end, handler))
  end
  real_rawset(H, "KEYS", keys)
  real_rawset(H, "ARGV", args)
  return unset(real_xpcall(f, handler))
end, R
