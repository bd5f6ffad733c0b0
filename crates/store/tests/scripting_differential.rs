//! Scripts must answer like Redis 7.0, byte for byte: every case runs on a
//! fresh keyspace and script cache against a real `redis-server` and the
//! store, as a RESP2 client and again as a RESP3 one.

mod common;

use bytes::Bytes;
use common::Pair;
use resp::Frame;
use test_support::RedisServer;

type Case<'a> = &'a [&'a [&'a str]];

fn to_args(c: &[&str]) -> Vec<Bytes> {
    c.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

async fn check(family: &str, cases: &[Case<'_>]) {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    for resp3 in [false, true] {
        for case in cases {
            pair.reset().await;
            pair.run(&to_args(&["SCRIPT", "FLUSH"])).await;
            pair.run(&to_args(&["FUNCTION", "FLUSH"])).await;
            let mut cmds: Vec<Vec<Bytes>> = case.iter().map(|c| to_args(c)).collect();
            if resp3 {
                cmds.insert(0, to_args(&["HELLO", "3"]));
            }
            pair.run_seq(&cmds, &mut mismatches).await;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{family}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn script_results_convert_like_redis() {
    check(
        "types",
        &[
            &[
                &["EVAL", "return 1", "0"],
                &["EVAL", "return 3.99", "0"],
                &["EVAL", "return -2.5", "0"],
                &["EVAL", "return 'hello'", "0"],
                &["EVAL", "return true", "0"],
                &["EVAL", "return false", "0"],
                &["EVAL", "return nil", "0"],
                &["EVAL", "return", "0"],
                &["EVAL", "return {1, 2.5, 'x', true, false, nil, 3}", "0"],
                &["EVAL", "return {{1, {2}}, {}}", "0"],
                &["EVAL", "return {ok='fine'}", "0"],
                &["EVAL", "return {err='My error'}", "0"],
                &["EVAL", "return redis.status_reply('PONG')", "0"],
                &["EVAL", "return redis.error_reply('My err')", "0"],
                &["EVAL", "return redis.error_reply('-WRONG thing')", "0"],
                &["EVAL", "return redis.error_reply('x')", "0"],
                &["EVAL", "return redis.error_reply(1, 2)", "0"],
                &["EVAL", "return redis.status_reply()", "0"],
                &["EVAL", "return {double=3.5}", "0"],
                &["EVAL", "return {big_number='123456789012345678901234567890'}", "0"],
                &["EVAL", "return {map={a=1}}", "0"],
                &["EVAL", "return {set={a=true}}", "0"],
                &["EVAL", "return redis.sha1hex('')", "0"],
                &["EVAL", "return redis.sha1hex('abc')", "0"],
                &["EVAL", "return redis.REDIS_VERSION", "0"],
                &["EVAL", "return redis.REDIS_VERSION_NUM", "0"],
                &["EVAL", "return {redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING}", "0"],
                &["EVAL", "redis.log(redis.LOG_WARNING, 'hello', 'from', 'lua'); return 1", "0"],
                &["EVAL", "return {KEYS[1], KEYS[2], ARGV[1], ARGV[2], #KEYS, #ARGV}", "2", "k1", "k2", "a1", "a2"],
            ],
            &[
                &["EVAL", "return redis.call('set', KEYS[1], ARGV[1])", "1", "k", "v"],
                &["EVAL", "return redis.call('get', KEYS[1])", "1", "k"],
                &["EVAL", "return redis.call('get', 'nokey')", "0"],
                &["EVAL", "return redis.call('incrby', 'n', 5)", "0"],
                &["EVAL", "return redis.call('incrbyfloat', 'f', 1.5)", "0"],
                &["EVAL", "return redis.call('set', 'x', 0.1)", "0"],
                &["GET", "x"],
                &["EVAL", "return redis.call('rpush', 'l', 'a', 'b', 'c')", "0"],
                &["EVAL", "return redis.call('lrange', 'l', 0, -1)", "0"],
                &["EVAL", "return redis.call('hset', 'h', 'f', 'v', 'g', 'w')", "0"],
                &["EVAL", "return redis.call('hgetall', 'h')", "0"],
                &["EVAL", "return redis.call('ping')", "0"],
                &["EVAL", "return type(redis.call('ping'))", "0"],
                &["EVAL", "return redis.call('ping')['ok']", "0"],
                &["EVAL", "return redis.call('exists', 'k', 'nokey')", "0"],
                &["EVAL", "return redis.call('mget', 'k', 'nokey', 'k')", "0"],
                &["EVAL", "return redis.call('zadd', 'z', 1.5, 'a', 2, 'b')", "0"],
                &["EVAL", "return redis.call('zrange', 'z', 0, -1, 'withscores')", "0"],
                &["EVAL", "return redis.call('zscore', 'z', 'a')", "0"],
            ],
        ],
    )
    .await;
}

#[tokio::test]
async fn resp3_in_scripts_matches_redis() {
    check(
        "resp3",
        &[&[
            &["HSET", "h", "f", "v"],
            &["ZADD", "z", "1.5", "a"],
            &["SADD", "s", "m"],
            &["EVAL", "redis.setresp(3); return redis.call('hgetall', 'h')", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('zscore', 'z', 'a')", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('smembers', 's')", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('get', 'nokey')", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('get', 'nokey') == nil", "0"],
            &["EVAL", "redis.setresp(3); return true", "0"],
            &["EVAL", "redis.setresp(3); return false", "0"],
            &["EVAL", "redis.setresp(3); return {double=0.5}", "0"],
            &["EVAL", "redis.setresp(3); local t = redis.call('hgetall', 'h'); return t['map']['f']", "0"],
            &["EVAL", "redis.setresp(3); local t = redis.call('zscore', 'z', 'a'); return tostring(t['double'])", "0"],
            &["EVAL", "redis.setresp(4)", "0"],
            &["EVAL", "redis.setresp()", "0"],
            &["EVAL", "return {verbatim_string={format='txt', string='hello'}}", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('zrange', 'z', 0, -1, 'withscores')", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('hello', '3')", "0"],
            &["EVAL", "redis.setresp(3); return {map={a={set={x=true}}}}", "0"],
            &["EVAL", "redis.setresp(3); return {1, {double=2.5}, {big_number='1'}, true}", "0"],
            &["EVAL", "redis.setresp(3); return redis.call('config', 'get', 'maxmemory')", "0"],
            &["EVAL", "return redis.call('config', 'get', 'maxmemory')", "0"],
            &["EVAL", "redis.setresp(2); return redis.call('hgetall', 'h')", "0"],
            &["MULTI"],
            &["EVAL", "return redis.call('incr', 'ctr')", "0"],
            &["EVAL", "return redis.call('nosuch')", "0"],
            &["EXEC"],
        ]],
    )
    .await;
}

#[tokio::test]
async fn script_errors_match_redis() {
    check(
        "errors",
        &[
            &[
                &["EVAL", "return redis.call('nosuch')", "0"],
                &["EVAL", "return redis.call('get')", "0"],
                &["EVAL", "return redis.call()", "0"],
                &["EVAL", "return redis.call({})", "0"],
                &["EVAL", "return redis.pcall('nosuch')", "0"],
                &["EVAL", "return redis.pcall('incr', 'a', 'b')", "0"],
                &["EVAL", "error('boom')", "0"],
                &["EVAL", "error({err='X y'})", "0"],
                &["EVAL", "error({err='X y'}, 0)", "0"],
                &["EVAL", "local x = nil; return x.y", "0"],
                &["EVAL", "\n\nreturn redis.call('nosuch')", "0"],
                // Redis's maximum of arguments, and its error in tail position.
                &["EVAL", "local a = {} for i=1,7999 do a[i] = 1 end return redis.call('lpush', 'l', unpack(a))", "0"],
                &["EVAL", "local a = {} for i=1,7999 do a[i] = 'x' end return redis.pcall('lpush', 'l', unpack(a))", "0"],
                &["EVAL", "local a = {} for i=1,7999 do a[i] = 1 end\nreturn redis.call('set', 'l', unpack(a))", "0"],
                &["EVAL", "local a = {} for i=1,7999 do a[i] = 1 end\nreturn redis.pcall('set', 'l', unpack(a))", "0"],
                &["EVAL", "local x = 1\nreturn redis.pcall('nosuch')", "0"],
                &["EVAL", "return redis.call('lpush', 'm', 'a', nil, 'b')", "0"],
                // Bytecode is never loaded: Redis's Lua parses it as text.
                &["EVAL", "local f, e = loadstring(string.dump(function() return 1 end)) return {type(f), e}", "0"],
                &["EVAL", "return loadstring(string.dump(function() return 1 end))()", "0"],
                &["EVAL", "local f, e = loadstring(string.dump(function() return 1 end), 'named') return e", "0"],
                &["EVAL", "\u{1b}LuaQ return 1", "0"],
                &["SCRIPT", "DEBUG", "NO"],
                &["SCRIPT", "DEBUG", "MAYBE"],
                // A set sorted by a constant is sorted anyway in a script.
                &["SADD", "myset", "b", "a", "c", "aa", "z"],
                &["EVAL", "return redis.call('sort', KEYS[1], 'by', '_')", "1", "myset"],
                &["EVAL", "return redis.call('sort', KEYS[1], 'by', '_', 'get', '#', 'get', '_:*')", "1", "myset"],
                &["EVAL", "local function f()\n  error('deep')\nend\nf()", "0"],
                &["EVAL", "return redis.call('blpop', 'x', 0)", "0"],
                &["EVAL", "return redis.pcall('xread','BLOCK',0,'STREAMS','s','$')", "1", "s"],
                &["EVAL", "return redis.call('xreadgroup','GROUP','g','c','BLOCK',0,'STREAMS','s','>')", "1", "s"],
                &["EVAL", "return redis.pcall('xread','COUNT',1,'STREAMS','s','0')", "1", "s"],
                &["EVAL", "return redis.call('eval', 'return 1', 0)", "0"],
                &["EVAL", "return redis.call('multi')", "0"],
                &["EVAL_RO", "return redis.call('set', 'x', 1)", "0"],
                &["EVAL_RO", "return redis.call('get', 'x')", "0"],
                &["EVAL", "return 1", "x"],
                &["EVAL", "return 1", "-1"],
                &["EVAL", "return 1", "2", "a"],
                &["EVAL", "return 1 +", "0"],
                &["EVAL", "x = 1", "0"],
                &["EVAL", "return y", "0"],
                &["EVAL", "redis.x = 1", "0"],
                &["EVAL", "string.x = 1", "0"],
                &["EVAL", "redis.call = nil", "0"],
                &["EVAL", "return loadfile", "0"],
                &["EVAL", "return dofile", "0"],
                &["EVAL", "return print", "0"],
                &["EVAL", "return os", "0"],
                &["EVAL", "return io", "0"],
                &["EVAL", "return require", "0"],
                &["EVAL", "return debug", "0"],
                &["EVAL", "return type(string.format)", "0"],
                &["EVAL", "return type(table.concat)", "0"],
                &["EVAL", "return type(pcall)", "0"],
                &["EVAL", "return {pcall(redis.call, 'nosuch')}", "0"],
                &["EVAL", "local ok, e = pcall(error, {err='MY table'}); return e", "0"],
                &["EVAL", "local ok, e = pcall(error, 'plain'); return e", "0"],
                &["EVAL", "redis.log()", "0"],
                &["EVAL", "redis.log('x', 'y')", "0"],
                &["EVAL", "redis.log(9, 'y')", "0"],
                &["EVAL", "return redis.sha1hex()", "0"],
                &["EVAL", "return redis.acl_check_cmd('get', 'k')", "0"],
                &["EVAL", "return redis.acl_check_cmd('nosuch')", "0"],
                &["EVAL", "return redis.acl_check_cmd()", "0"],
                &["EVAL", "return redis.acl_check_cmd('client', 'nosuch')", "0"],
                &["EVAL", "return redis.error_reply('ERR has\r\nnewline')", "0"],
                &["EVAL", "return redis.status_reply('two\r\nlines')", "0"],
                &["EVAL", "return redis.set_repl(redis.REPL_ALL)", "0"],
                &["EVAL", "return redis.set_repl(99)", "0"],
                &["EVAL", "return redis.replicate_commands()", "0"],
                &["EVAL", "rawset(_G, 'x', 1)", "0"],
                &["EVAL", "setmetatable(_G, nil)", "0"],
                &["EVAL", "return getmetatable(_G)", "0"],
                &["EVAL", "loadstring('x=1')()", "0"],
                &["EVAL", "_G.x = 1", "0"],
                &["EVAL", "string.len = nil", "0"],
                &["EVAL", "return _G.string ~= nil", "0"],
                &["EVAL", "error(nil)", "0"],
                &["EVAL", "error(123)", "0"],
                &["EVAL", "return pcall(redis.call)", "0"],
                &["EVAL", "local t = {}; t.x = 1; return t.x", "0"],
                &["EVAL", "return type(getmetatable('').__index)", "0"],
                &["EVAL", "return math.huge", "0"],
                &["EVAL", "return -math.huge", "0"],
                &["EVAL", "return 0/0", "0"],
                &["EVAL", "return {1, 2, {err='x'}}", "0"],
                &["EVAL", "return {ok=1}", "0"],
                &["EVAL", "return {err=1}", "0"],
                &["EVAL", "return redis.call('client', 'id')", "0"],
                &["EVAL", "redis.call('select', 1); redis.call('set', 'in1', 'v'); return redis.call('dbsize')", "0"],
                &["DBSIZE"],
            ],
            // Over `maxmemory`: Redis counts its own overhead, so a limit
            // of one byte refuses every write, in scripts and out.
            &[
                &["CONFIG", "SET", "maxmemory", "1"],
                &["EVAL", "redis.call('set', 'x', 1)", "0"],
                &["EVAL", "return redis.pcall('set', 'x', 1)", "0"],
                &["EVAL", "#!lua\nreturn redis.call('set', 'x', 1)", "0"],
                &["EVAL", "#!lua flags=no-writes\nreturn redis.call('get', 'x')", "0"],
                &["EVAL", "#!lua flags=\nreturn 1", "0"],
                &["EVAL", "#!lua flags=no-writes,\nreturn 1", "0"],
                &["EVAL", "#!lua flags=allow-oom\nreturn redis.call('set', 'x', 1)", "0"],
                &["SET", "y", "1"],
                &["GET", "x"],
                &["CONFIG", "SET", "maxmemory", "0"],
                &["SET", "y", "1"],
            ],
            &[
                &["SET", "k", "v"],
                &["EVAL", "redis.call('set', 'a', 1); redis.call('lpush', 'k', 'x'); redis.call('set', 'b', 2)", "0"],
                &["GET", "a"],
                &["GET", "b"],
                &["EVAL", "redis.call('set', 'c', 1); local r = redis.pcall('lpush', 'k', 'x'); return {r['err'], redis.call('get', 'c')}", "0"],
            ],
        ],
    )
    .await;
}

#[tokio::test]
async fn script_cache_matches_redis() {
    check(
        "cache",
        &[&[
            &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
            &["EVALSHA", "short", "0"],
            &["SCRIPT", "LOAD", "return 'loaded'"],
            &["EVALSHA", "f1a8a4c1d3bca4d9ab0ded2d2a9b1d94b1a3aaf3", "0"],
            &[
                "SCRIPT",
                "EXISTS",
                "dd33e2c1c8b9f4a5a1c4f1d6d7e1c6a1b2c3d4e5",
            ],
            &["EVAL", "return 'hi'", "0"],
            &[
                "SCRIPT",
                "EXISTS",
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
                "nosuch",
            ],
            &["SCRIPT", "LOAD", "return ARGV[1]"],
            &["EVALSHA", "d1c5b2d1a2a8b5d1c3c4c3f6d3c0f3b0e6c1d2a1", "0"],
            &[
                "EVALSHA",
                "4e6d8fc8bb01276962cce5371fa795a7763657ae",
                "0",
                "x",
            ],
            &[
                "EVALSHA",
                "4E6D8FC8BB01276962CCE5371FA795A7763657AE",
                "0",
                "y",
            ],
            &[
                "EVALSHA_RO",
                "4e6d8fc8bb01276962cce5371fa795a7763657ae",
                "0",
                "z",
            ],
            &["SCRIPT", "FLUSH", "FOO"],
            &["SCRIPT", "FLUSH", "ASYNC"],
            &[
                "EVALSHA",
                "4e6d8fc8bb01276962cce5371fa795a7763657ae",
                "0",
                "x",
            ],
            &["SCRIPT", "KILL"],
            &["SCRIPT", "HELP"],
            &["FUNCTION", "HELP"],
            &["SCRIPT", "LOAD", "return +"],
            &[
                "EVAL",
                "#!lua flags=no-writes\nreturn redis.call('set', 'x', 1)",
                "0",
            ],
            &[
                "EVAL",
                "#!lua flags=no-writes\nreturn redis.call('get', 'x')",
                "0",
            ],
            &["EVAL_RO", "#!lua\nreturn 1", "0"],
            &["EVAL_RO", "#!lua flags=no-writes\nreturn 1", "0"],
            &["EVAL", "#!lua flags=bogus\nreturn 1", "0"],
            &["EVAL", "#!python\nreturn 1", "0"],
            &["EVAL", "#!lua foo=bar\nreturn 1", "0"],
            &["EVAL", "#!lua\nreturn x", "0"],
        ]],
    )
    .await;
}

const LIB: &str = "#!lua name=mylib\nredis.register_function('echo', function(keys, args) return {keys[1], args[1]} end)\nredis.register_function{function_name='ro', callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}, description='reads'}\nredis.register_function('wr', function(keys, args) return redis.call('set', keys[1], args[1]) end)\nredis.register_function('oops', function() return redis.call('nosuch') end)\nredis.register_function('glob', function() return KEYS end)";

#[tokio::test]
async fn functions_match_redis() {
    check(
        "functions",
        &[
            &[
                &["FUNCTION", "LOAD", LIB],
                &["FUNCTION", "LOAD", LIB],
                &["FCALL", "echo", "1", "k", "a"],
                &["FCALL", "ECHO", "1", "k", "a"],
                &["FCALL", "wr", "1", "k", "v"],
                &["FCALL", "ro", "1", "k"],
                &["FCALL_RO", "ro", "1", "k"],
                &["FCALL_RO", "wr", "1", "k", "v"],
                &["FCALL", "oops", "0"],
                &["FCALL", "glob", "0"],
                &["FCALL", "nosuch", "0"],
                &["FCALL", "echo", "x"],
                &["FCALL", "echo", "5", "a"],
                &["FCALL", "echo", "-1"],
                &["FUNCTION", "LIST", "LIBRARYNAME", "other*"],
                &["FUNCTION", "LIST", "LIBRARYNAME"],
                &["FUNCTION", "LIST", "FOO"],
                &["FUNCTION", "STATS"],
                &["FUNCTION", "KILL"],
                &["FUNCTION", "DELETE", "nosuch"],
                &["FUNCTION", "DELETE", "mylib"],
                &["FCALL", "echo", "0"],
                &["FUNCTION", "STATS"],
                // One function per library: Redis lists a library's
                // functions in hash order.
                &["FUNCTION", "LOAD", "#!lua name=one\nredis.register_function{function_name='ro', callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes', 'allow-oom'}, description='reads'}"],
                &["FUNCTION", "LIST"],
                &["FUNCTION", "LIST", "WITHCODE"],
                &["FUNCTION", "LIST", "LIBRARYNAME", "on*"],
            ],
            &[
                &["FUNCTION", "LOAD", "return 1"],
                &["FUNCTION", "LOAD", "#!lua\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=a b=c\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=x name=y\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=\"quoted\"\nredis.register_function('q', function() return 1 end)"],
                &["FCALL", "q", "0"],
                &["FUNCTION", "FLUSH", "sync", "extra"],
                &["FUNCTION", "FLUSH", "bad"],
                &["FUNCTION", "LOAD", "REPLACE", "#!lua name=lib1\nlocal lib = redis\nlib.register_function('f1', function() lib.redis = redis; return {ok='OK'} end)\nlib.register_function('f2', function() lib.register_function('f3', function() return 1 end) end)"],
                &["FCALL", "f1", "0"],
                &["FCALL", "f2", "0"],
                &["FUNCTION", "LOAD", "#!lua name=\"open\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=bad-name\nreturn 1"],
                &["FUNCTION", "LOAD", "#!js name=x\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=x\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=x\nreturn +"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f')"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', 1)"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='f', callback=function() end, flags={'bogus'}}"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() end)\nredis.register_function('f', function() end)"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.call('ping')"],
                &["FUNCTION", "LOAD", "#!lua name=x\nerror('nope')"],
                &["FUNCTION", "LOAD", "#!lua name=x\nlocal i = 0\nwhile true do i = i + 1 end"],
                &["FUNCTION", "LOAD", "FOO", "#!lua name=x\nreturn 1"],
                &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return 1 end)"],
                &["FUNCTION", "LOAD", "#!lua name=y\nredis.register_function('f', function() return 2 end)"],
                &["FUNCTION", "LOAD", "REPLACE", "#!lua name=x\nredis.register_function('f', function() return 3 end)"],
                &["FCALL", "f", "0"],
                &["FUNCTION", "FLUSH", "FOO"],
                &["FUNCTION", "FLUSH"],
                &["FCALL", "f", "0"],
                &["FUNCTION", "RESTORE", "garbage"],
                &["FUNCTION", "RESTORE", "garbage", "BAD"],
                &["FUNCTION", "RESTORE", "garbage", "FLUSH", "extra"],
            ],
        ],
    )
    .await;
}

/// Redis's generator starts from the same state in a fresh server and a
/// fresh store, so the sequences match.
#[tokio::test]
async fn math_random_matches_redis() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    let cmds: Vec<Vec<Bytes>> = [
        &[
            "EVAL",
            "return {tostring(math.random()), math.random(10), math.random(5, 9)}",
            "0",
        ][..],
        &["EVAL", "return tostring(math.random())", "0"],
        &[
            "EVAL",
            "math.randomseed(42); return {tostring(math.random()), math.random(100)}",
            "0",
        ],
        &["EVAL", "return math.random(0)", "0"],
    ]
    .iter()
    .map(|c| to_args(c))
    .collect();
    pair.run_seq(&cmds, &mut mismatches).await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn redis_libraries_answer_like_redis_in_scripts() {
    // A BullMQ-style job: options packed with msgpack, data as JSON.
    let opts = "local o = cmsgpack.unpack(cmsgpack.pack({attempts=3, delay=0, jobId='j1', lifo=false})) \
return {o.attempts, o.jobId, tostring(o.lifo), cjson.encode({name='email', data={to='a@b', n=1.5}})}";
    check(
        "libraries",
        &[&[
            &["EVAL", opts, "0"],
            &["EVAL", "return cjson.decode('[1,2,{\"a\":null}]')[2]", "0"],
            &[
                "EVAL",
                "return bit.band(0xff, 0x0f) + bit.lshift(1, 4)",
                "0",
            ],
            &[
                "EVAL",
                "return struct.unpack('>I2', struct.pack('>I2', 513))",
                "0",
            ],
            &["EVAL", "local v = cjson.decode('{bad') return v", "0"],
            &["EVAL", "cjson = nil", "0"],
        ]],
    )
    .await;
}

/// `INFO errorstats`, `total_error_replies` and `INFO commandstats` without
/// the times: what a dashboard or Redis's own tests read after errors.
async fn error_counters(pair: &mut Pair) -> (Vec<String>, Vec<String>) {
    let info = |f: &Frame| -> String {
        match f {
            Frame::Bulk(b) | Frame::Verbatim(b) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    };
    let mut sides = Vec::new();
    let (theirs, ours) = pair
        .run(&to_args(&["INFO", "errorstats", "stats", "commandstats"]))
        .await;
    for f in [&theirs[0], &ours[0]] {
        let text = info(f);
        let lines = text
            .lines()
            .filter(|l| {
                l.starts_with("errorstat_")
                    || l.starts_with("total_error_replies:")
                    || l.starts_with("cmdstat_")
            })
            // The times differ; the counts must not.
            .map(|l| {
                l.split(',')
                    .filter(|p| !p.contains("usec"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            // INFO itself is counted once the reply is made.
            .filter(|l| !l.starts_with("cmdstat_info:"))
            .collect::<Vec<_>>();
        // Redis lists commands in its dictionary's order.
        let mut lines = lines;
        lines.sort();
        sides.push(lines);
    }
    let ours = sides.pop().unwrap_or_default();
    let theirs = sides.pop().unwrap_or_default();
    (theirs, ours)
}

#[tokio::test]
async fn error_and_command_stats_count_like_redis() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let oom = &["CONFIG", "SET", "maxmemory", "1"][..];
    let cases: &[Case<'_>] = &[
        // Redis's own "Consistent eval error reporting" sequence.
        &[oom, &["EVAL", "return redis.call('set','x','y')", "1", "x"]],
        &[
            oom,
            &[
                "EVAL",
                "local t = redis.pcall('set','x','y') if t['err'] then return 1 end return 0",
                "1",
                "x",
            ],
        ],
        &[
            oom,
            &["EVAL", "return redis.pcall('set','x','y')", "1", "x"],
        ],
        &[&["EVAL", "return redis.call('select',99)", "0"]],
        &[&[
            "EVAL",
            "local t = redis.pcall('select',99) return t['err']",
            "0",
        ]],
        &[&["EVAL_RO", "return redis.call('set','x','y')", "1", "x"]],
        &[&[
            "EVAL_RO",
            "local t = redis.pcall('set','x','y') return t['err']",
            "1",
            "x",
        ]],
        &[
            &["SET", "Sicily", "1"],
            &[
                "EVAL",
                "return redis.call('GEOADD', 'Sicily', '13.361389', '38.115556', 'Palermo')",
                "1",
                "x",
            ],
        ],
        // Errors outside scripts: arity, unknown, WRONGTYPE, a failed
        // command inside EXEC, and a transaction aborted at EXEC.
        &[
            &["SET", "k"],
            &["NOSUCHCOMMAND", "a"],
            &["SET", "s", "abc"],
            &["INCR", "s"],
            &["LPUSH", "s", "a"],
            &["MULTI"],
            &["INCR", "s"],
            &["SET", "t", "1"],
            &["EXEC"],
            &["MULTI"],
            &["GET"],
            &["EXEC"],
        ],
        // The script's own errors, counted once, at its reply.
        &[
            &["EVAL", "return redis.error_reply('MY thing')", "0"],
            &["EVAL", "error('boom')", "0"],
            &["EVAL", "return redis.call('nosuch')", "0"],
            &["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"],
            &["EVAL", "return {err='X y'}", "0"],
        ],
        // No replicas to satisfy min-replicas-to-write: writes refused.
        &[
            &["CONFIG", "SET", "min-replicas-to-write", "1"],
            &["SET", "x", "1"],
            &["GET", "x"],
            &["EVAL", "#!lua\nreturn redis.call('get','x')", "1", "x"],
            &[
                "EVAL",
                "#!lua flags=no-writes\nreturn redis.call('get','x')",
                "1",
                "x",
            ],
            &["EVAL", "return redis.call('set','x','1')", "1", "x"],
            &["MULTI"],
            &["SET", "x", "2"],
            &["EXEC"],
            &["CONFIG", "SET", "min-replicas-to-write", "0"],
        ],
    ];
    let mut mismatches = Vec::new();
    for case in cases {
        pair.reset().await;
        pair.run(&to_args(&["CONFIG", "RESETSTAT"])).await;
        let cmds: Vec<Vec<Bytes>> = case.iter().map(|c| to_args(c)).collect();
        pair.run_seq(&cmds, &mut mismatches).await;
        let (theirs, ours) = error_counters(&mut pair).await;
        if theirs != ours {
            mismatches.push(format!(
                "after {case:?}\n    redis: {theirs:?}\n    store: {ours:?}"
            ));
        }
    }
    pair.run(&to_args(&["CONFIG", "SET", "maxmemory", "0"]))
        .await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// KEYS, ARGV and `redis.call`'s arguments take two routes into and out of
/// Lua (a few strings as they are, else packed in tables): both must give
/// what Redis gives, at and past the boundaries, with numbers, binary
/// strings, nils and tables among them.
#[tokio::test]
async fn arguments_reach_scripts_and_commands_like_redis() {
    let many: Vec<String> = (1..=40).map(|i| format!("k{i}")).collect();
    let mut wide = vec![
        "EVAL",
        "return {#KEYS, #ARGV, KEYS[1], KEYS[40], ARGV[1], ARGV[2]}",
        "40",
    ];
    wide.extend(many.iter().map(String::as_str));
    wide.extend(["a1", "a2"]);
    let mut all_args = vec!["EVAL", "return {#KEYS, #ARGV, ARGV[33]}", "0"];
    all_args.extend(many.iter().map(String::as_str));
    let mut wide_fcall = vec!["FCALL", "f", "40"];
    wide_fcall.extend(many.iter().map(String::as_str));
    wide_fcall.extend(["a1", "a2"]);
    check(
        "arguments",
        &[
            &[
                &["EVAL", "return {#KEYS, #ARGV, KEYS[1], ARGV[1], ARGV[3]}", "1", "k", "a", "b", "c"],
                &["EVAL", "return {#KEYS, #ARGV, ARGV[1], ARGV[2]}", "0", "a", "b"],
                &["EVAL", "return {#KEYS, #ARGV, KEYS[3]}", "3", "x", "y", "z"],
                &["EVAL", "return {#KEYS, #ARGV, KEYS[1], ARGV[1]}", "0", "", ""],
                &wide,
                &all_args,
            ],
            &[
                &["EVAL", "redis.call('set', KEYS[1], 0.1) return redis.call('get', KEYS[1])", "1", "k"],
                &["EVAL", "redis.call('set', KEYS[1], 1e15) return redis.call('get', KEYS[1])", "1", "k"],
                &["EVAL", "redis.call('set', KEYS[1], 2^53 + 1) return redis.call('get', KEYS[1])", "1", "k"],
                &["EVAL", "return redis.call('incrby', KEYS[1], 5)", "1", "n"],
                &["EVAL", "return redis.call('rpush', KEYS[1], 'a', 'b', 'c', 'd', 'e', 'f')", "1", "l8"],
                &["EVAL", "return redis.call('rpush', KEYS[1], 'a', 'b', 'c', 'd', 'e', 'f', 'g')", "1", "l9"],
                &["EVAL", "return redis.call('rpush', KEYS[1], 'a', 'b', 'c', 'd', 'e', 6)", "1", "l8n"],
                &["EVAL", "return redis.call('rpush', KEYS[1], 1, 'b', 'c', 'd', 'e', 'f', 'g', 'h')", "1", "l10"],
                &["LRANGE", "l8", "0", "-1"],
                &["LRANGE", "l9", "0", "-1"],
                &["LRANGE", "l8n", "0", "-1"],
                &["LRANGE", "l10", "0", "-1"],
                &["EVAL", "redis.call('set', KEYS[1], '\\255\\0x') return redis.call('get', KEYS[1])", "1", "bin"],
                &["EVAL", "return redis.pcall('set', KEYS[1], {})", "1", "k"],
                &["EVAL", "return redis.pcall('set', KEYS[1], nil, 'x')", "1", "k"],
                &["EVAL", "return redis.pcall('set', KEYS[1], true)", "1", "k"],
                &["EVAL", "return redis.pcall()", "0"],
                &["EVAL", "return redis.call('ping')", "0"],
                &["EVAL", "return redis.call(KEYS[1])", "1", "ping"],
                &["EVAL", "return redis.pcall('get', KEYS[1], 'extra', 'args', 'here', 'too', 'many', 'now')", "1", "k"],
            ],
            &[
                &["FUNCTION", "LOAD", "#!lua name=argl\nredis.register_function('f', function(keys, args) return {#keys, #args, keys[1], args[2]} end)"],
                &["FCALL", "f", "1", "k", "a", "b"],
                &["FCALL", "f", "0"],
                &wide_fcall,
            ],
        ],
    )
    .await;
}

/// Keys and arguments that are not UTF-8 reach the script unchanged.
#[tokio::test]
async fn binary_keys_and_arguments_reach_scripts_like_redis() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    let bin = |b: &[u8]| Bytes::copy_from_slice(b);
    let cmds = vec![
        vec![
            bin(b"EVAL"),
            bin(b"redis.call('set', KEYS[1], ARGV[1]) return {KEYS[1], ARGV[1], redis.call('get', KEYS[1])}"),
            bin(b"1"),
            bin(b"k\xff\x00"),
            bin(b"v\xc3\x28"),
        ],
        vec![bin(b"GET"), bin(b"k\xff\x00")],
    ];
    pair.reset().await;
    pair.run_seq(&cmds, &mut mismatches).await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let (_, ours) = pair.run(&[bin(b"GET"), bin(b"k\xff\x00")]).await;
    assert_eq!(ours, vec![Frame::Bulk(bin(b"v\xc3\x28"))]);
}
