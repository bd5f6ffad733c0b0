//! Each case of `cases.rs` in our state, against the answer redis-server
//! 7.0.15 gave (recorded with `regenerate_expected` in `differential.rs`),
//! so the libraries are checked where no redis-server is installed.

mod cases;
mod common;

use common::{ours, run_ours};

/// What Redis answered for `cases::CASES`, in order: the count of values
/// `pcall` returned, then each rendered.
const EXPECTED: &[&str] = &[
    "2:true \"{}\"",
    "2:true \"[1,\"two\",true,false,null]\"",
    "2:true \"{\"a\":{\"b\":[1,2]}}\"",
    "2:true \"\"x\\/y\\\"z\\\\\\n\\u0001\\u007f\"\"",
    "5:true \"0.1\" \"1e+15\" \"-0\" \"1.2345678901234e+14\"",
    "2:false \"user_script:25: Cannot serialise table: excessively sparse array\"",
    "2:true \"[1,null,3]\"",
    "2:false \"user_script:25: Cannot serialise number: must not be NaN or Inf\"",
    "2:false \"user_script:25: Cannot serialise boolean: table key must be a number or string\"",
    "2:false \"user_script:25: Cannot serialise function: type not supported\"",
    "2:true {\"a\"={1=1,2=2.5,3=\"x\",4=true,5=null},\"b\"={}}",
    "2:true \"\\xe2\\x82\\xac/\\xf0\\x9f\\x98\\x80\"",
    "4:true 1.2345678901234567e+19 16 -inf",
    "2:false \"user_script:25: Expected value but found T_ARR_END at character 4\"",
    "2:false \"user_script:25: Expected colon but found T_NUMBER at character 6\"",
    "2:false \"user_script:25: Expected value but found unexpected end of string at character 5\"",
    "2:false \"user_script:25: Expected value but found T_END at character 1\"",
    "5:true true \"userdata\" \"cjson\" \"2.1.0\"",
    "3:true true \"{\"1\":1,\"100\":2}\"",
    "4:true 2 false \"Cannot serialise, excessive nesting (3)\"",
    "4:true 2 false \"Found too many nested data structures (3) at character 3\"",
    "3:true 3 \"3.14\"",
    "3:true false \"[1]\"",
    "3:true \"null\" \"[null]\"",
    "4:true false false \"Expected value but found invalid number at character 1\"",
    "2:false \"user_script:25: bad argument #1 to 'encode_number_precision' (expected integer between 1 and 14)\"",
    "2:true \"\\x00\\x7f\\xcc\\x80\\xce\\x00\\x01\\x00\\x00\\xff\\xd0\\xdf\\xd2\\xff\\xff\\x7f\\xff\\xcf\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\xca?\\x00\\x00\\x00\\xcb?\\xb9\\x99\\x99\\x99\\x99\\x99\\x9a\"",
    "2:true \"\\xa0\\xd9(xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\xc3\\xc2\\xc0\"",
    "2:true \"\\x90\\x92\\x01\\x02\\x81\\xa1a\\x01\\x81\\x02\\x01\"",
    "2:false \"user_script:25: bad argument #0 to 'pack' (MessagePack pack needs input.)\"",
    "5:true 1 \"two\" {1=3,2={\"four\"=4}} false",
    "2:true -1",
    "2:false \"user_script:25: Bad data format in input.\"",
    "2:false \"user_script:25: Missing bytes in input.\"",
    "2:false \"table index is nil\"",
    "4:true 1 -1 3",
    "5:true 2 -1 2 3",
    "2:false \"user_script:25: Start offset 5 greater than input length 1.\"",
    "2:false \"user_script:25: Invalid request to unpack with offset of 0 and limit of 1.\"",
    "5:true 5 -1 2 2",
    "5:true -1 7 7 6",
    "5:true -2147483648 15 -16 2",
    "4:true 591751041 -2128394905 2018915346",
    "4:true \"000000ff\" \"00FF\" \"ff\"",
    "2:false \"user_script:25: bad argument #2 to 'band' (number expected, got table)\"",
    "2:true \"\\x01\\x02\\xfe\\xff\\xff\\xff\\xff\\xff\"",
    "4:true \"\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00\" \"?\\xf8\\x00\\x00\\x00\\x00\\x00\\x00\" \"abchi\\x00\"",
    "4:true 258 -2 7",
    "2:false \"user_script:25: format 'c0' needs a previous size\"",
    "3:true \"xy\" 4",
    "2:false \"user_script:25: bad argument #2 to 'unpack' (data string too short)\"",
    "3:true 16 10",
    "2:false \"user_script:25: bad argument #1 to 'size' (option 's' has no fixed size)\"",
    "2:false \"user_script:25: bad argument #1 to 'pack' (invalid format option 'q')\"",
];

#[test]
fn every_function_answers_as_redis_did() {
    assert_eq!(cases::CASES.len(), EXPECTED.len());
    let lua = ours();
    let mut wrong = Vec::new();
    for (body, want) in cases::CASES.iter().zip(EXPECTED) {
        let got = run_ours(&lua, body);
        if got != *want {
            wrong.push(format!("{body}\n  redis: {want}\n  ours:  {got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn register_installs_the_four_tables_with_redis_functions() {
    let lua = ours();
    let names: Vec<(&str, &[&str])> = vec![
        (
            "cjson",
            &[
                "encode",
                "decode",
                "encode_sparse_array",
                "encode_max_depth",
                "decode_max_depth",
                "encode_number_precision",
                "encode_keep_buffer",
                "encode_invalid_numbers",
                "decode_invalid_numbers",
                "new",
            ],
        ),
        (
            "cmsgpack",
            &["pack", "unpack", "unpack_one", "unpack_limit"],
        ),
        (
            "bit",
            &[
                "tobit", "bnot", "band", "bor", "bxor", "lshift", "rshift", "arshift", "rol",
                "ror", "bswap", "tohex",
            ],
        ),
        ("struct", &["pack", "unpack", "size"]),
    ];
    for (lib, funcs) in names {
        let t: mlua::Table = lua.globals().get(lib).expect(lib);
        let mut count = 0;
        for pair in t.pairs::<String, mlua::Value>() {
            let (k, v) = pair.expect("pairs");
            if v.is_function() {
                assert!(funcs.contains(&k.as_str()), "{lib}.{k} is not in Redis");
                count += 1;
            }
        }
        assert_eq!(count, funcs.len(), "{lib} functions");
    }
}

#[test]
fn malformed_input_is_a_lua_error_not_a_panic() {
    let lua = ours();
    // Every prefix of valid encodings, and some noise, through each decoder.
    let packed: mlua::LuaString = lua
        .load("return cmsgpack.pack({a = {1, 2.5, 'x'}, b = true, [3] = {c = 'long string here, over 31 bytes'}})")
        .eval()
        .expect("pack");
    let packed = packed.as_bytes().to_vec();
    let json = br#"{"a":[1,2.5e3,"x\u00e9\ud83d\ude00"],"b":true,"c":null}"#.to_vec();
    let unpack: mlua::Function = lua.load("return cmsgpack.unpack").eval().expect("unpack");
    let decode: mlua::Function = lua.load("return cjson.decode").eval().expect("decode");
    let s_unpack: mlua::Function = lua
        .load("return struct.unpack")
        .eval()
        .expect("struct.unpack");
    for cut in 0..packed.len() {
        let s = lua.create_string(&packed[..cut]).expect("string");
        let _ = unpack.call::<mlua::MultiValue>(s);
    }
    for cut in 0..json.len() {
        let s = lua.create_string(&json[..cut]).expect("string");
        let _ = decode.call::<mlua::MultiValue>(s);
    }
    let mut noise: u32 = 0x1234_5678;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..16)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            })
            .collect();
        let s = lua.create_string(&bytes).expect("string");
        let _ = unpack.call::<mlua::MultiValue>(s.clone());
        let _ = decode.call::<mlua::MultiValue>(s.clone());
        let _ = s_unpack.call::<mlua::MultiValue>((s.clone(), s));
    }
}

/// The one known difference in messages (see the crate docs): after a
/// tail call Lua has dropped the caller's frame, so there is no position.
#[test]
fn error_after_a_tail_call_has_no_position() {
    let lua = ours();
    let direct: String = lua
        .load("local ok, e = pcall(function() local r = cjson.decode('') return r end) return e")
        .set_name("=user_script")
        .eval()
        .expect("run");
    assert_eq!(
        direct,
        "user_script:1: Expected value but found T_END at character 1"
    );
    let tail: String = lua
        .load("local ok, e = pcall(function() return cjson.decode('') end) return e")
        .set_name("=user_script")
        .eval()
        .expect("run");
    assert_eq!(tail, "Expected value but found T_END at character 1");
}

/// After a tail call the argument error still names the function (Redis
/// does), though the position is gone.
#[test]
fn argument_error_after_a_tail_call_names_the_function() {
    let lua = ours();
    let tail: String = lua
        .load("local ok, e = pcall(function() return bit.tobit('x') end) return e")
        .set_name("=user_script")
        .eval()
        .expect("run");
    assert_eq!(
        tail,
        "bad argument #1 to 'tobit' (number expected, got string)"
    );
}
