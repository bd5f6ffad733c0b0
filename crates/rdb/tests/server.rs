//! Against a real redis-server 7.0: write keys configured so Redis picks
//! each encoding (checked with OBJECT ENCODING), SAVE, decode dump.rdb,
//! and compare with exactly what was written.

mod common;

use bytes::Bytes;
use common::{decode_all, find, save, Conn, Reply};
use rdb::{Record, StreamId, Value};
use test_support::RedisServer;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn sorted(mut v: Vec<Bytes>) -> Vec<Bytes> {
    v.sort();
    v
}

fn list_of(r: &Record) -> &Vec<Bytes> {
    match &r.value {
        Value::List(v) => v,
        other => panic!("{:?} is not a list: {other:?}", r.key),
    }
}

fn set_of(r: &Record) -> Vec<Bytes> {
    match &r.value {
        Value::Set(v) => sorted(v.clone()),
        other => panic!("{:?} is not a set: {other:?}", r.key),
    }
}

#[test]
fn strings_integers_lzf_expiry_dbs_and_aux() {
    let server = RedisServer::start(&["--rdbcompression", "yes"]);
    let mut c = Conn::new(server.port());
    let ints = [
        "0",
        "-1",
        "127",
        "-128",
        "128",
        "-129",
        "32767",
        "-32768",
        "32768",
        "2147483647",
        "-2147483648",
        "2147483648",
        "9223372036854775807",
        "-9223372036854775808",
    ];
    for (i, v) in ints.iter().enumerate() {
        c.call(&["SET", &format!("int:{i}"), v]);
        assert_eq!(c.encoding(&format!("int:{i}")), "int", "{v}");
    }
    c.call(&["SET", "lead0", "0123"]);
    c.call(&["SET", "empty", ""]);
    c.call(&["SET", "raw", "hello world"]);
    let long = "abcdefgh".repeat(1000);
    c.call(&["SET", "lzf", &long]);
    let bin_key: &[u8] = b"\x00\xff\r\nkey";
    let bin_val: &[u8] = b"\x00\x01\xfe\xff\r\n";
    c.call(&[b"SET".as_ref(), bin_key, bin_val]);
    c.call(&["SET", "exp", "v", "PX", "100000000"]);
    c.call(&["PEXPIREAT", "exp", "4102444800123"]);
    c.call(&["SELECT", "3"]);
    c.call(&["SET", "in3", "three"]);
    c.call(&["SELECT", "15"]);
    c.call(&["SET", "in15", "fifteen"]);

    let file = save(&server);
    assert!(
        file.len() < long.len(),
        "the 8000-byte string should be LZF-compressed"
    );
    let (records, reader) = decode_all(&file);
    assert_eq!(reader.version(), 10);
    for (i, v) in ints.iter().enumerate() {
        assert_eq!(
            find(&records, 0, format!("int:{i}").as_bytes()).value,
            Value::String(b(v))
        );
    }
    assert_eq!(find(&records, 0, b"lead0").value, Value::String(b("0123")));
    assert_eq!(
        find(&records, 0, b"empty").value,
        Value::String(Bytes::new())
    );
    assert_eq!(
        find(&records, 0, b"raw").value,
        Value::String(b("hello world"))
    );
    assert_eq!(find(&records, 0, b"lzf").value, Value::String(b(&long)));
    assert_eq!(
        find(&records, 0, bin_key).value,
        Value::String(Bytes::from_static(bin_val))
    );
    assert_eq!(find(&records, 0, b"exp").expire_at_ms, Some(4102444800123));
    assert_eq!(find(&records, 0, b"raw").expire_at_ms, None);
    assert_eq!(find(&records, 3, b"in3").value, Value::String(b("three")));
    assert_eq!(
        find(&records, 15, b"in15").value,
        Value::String(b("fifteen"))
    );
    assert_eq!(records.len(), ints.len() + 8);
    let aux = |k: &str| {
        reader
            .aux()
            .iter()
            .find(|(a, _)| a.as_ref() == k.as_bytes())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(aux("redis-ver"), Some(b("7.0.15")));
    assert_eq!(aux("redis-bits"), Some(b("64")));
    assert!(aux("ctime").is_some());
    assert!(aux("used-mem").is_some());
    assert_eq!(aux("aof-base"), Some(b("0")));
}

#[test]
fn lru_idle_and_lfu_freq_are_kept() {
    let lru = RedisServer::start(&["--maxmemory-policy", "allkeys-lru"]);
    Conn::new(lru.port()).call(&["SET", "k", "v"]);
    let (records, _) = decode_all(&save(&lru));
    assert!(records[0].idle_secs.is_some(), "{:?}", records[0]);

    let lfu = RedisServer::start(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut c = Conn::new(lfu.port());
    c.call(&["SET", "k", "v"]);
    for _ in 0..50 {
        c.call(&["GET", "k"]);
    }
    let (records, _) = decode_all(&save(&lfu));
    let freq = records[0].lfu_freq.expect("FREQ kept");
    let reported: u8 = c.call(&["OBJECT", "FREQ", "k"]).text().parse().unwrap();
    assert_eq!(freq, reported);
}

/// Listpack integers of every width and strings of every length class.
fn listpack_elements() -> Vec<String> {
    let mut v: Vec<String> = [
        0i64,
        1,
        127,
        128,
        -1,
        -4096,
        4095,
        4096,
        -4097,
        32767,
        -32768,
        32768,
        8388607,
        -8388608,
        8388608,
        2147483647,
        -2147483648,
        2147483648,
        i64::MAX,
        i64::MIN,
    ]
    .iter()
    .map(|i| i.to_string())
    .collect();
    v.push(String::new());
    v.push("short".into());
    v.push("m".repeat(63));
    v.push("x".repeat(64));
    v.push("y".repeat(4095));
    v.push("z".repeat(4096));
    v.push("007".into());
    v.push("1.5".into());
    v
}

#[test]
fn lists_quicklist_listpack_nodes_compressed_and_plain() {
    let server = RedisServer::start(&[
        "--list-max-listpack-size",
        "8",
        "--list-compress-depth",
        "1",
        // Off, so only nodes the quicklist itself compressed are stored as
        // LZF (rdbSaveLzfBlob); everything else is written raw.
        "--rdbcompression",
        "no",
        "--enable-debug-command",
        "yes",
    ]);
    let mut c = Conn::new(server.port());
    let els = listpack_elements();
    for e in &els {
        c.call(&["RPUSH", "lp", e]);
    }
    assert_eq!(c.encoding("lp"), "quicklist");
    // Many compressible elements: several nodes, inner ones LZF-compressed.
    let many: Vec<String> = (0..400)
        .map(|i| format!("item-{i:05}-{}", "abc".repeat(20)))
        .collect();
    for e in &many {
        c.call(&["RPUSH", "many", e]);
    }
    c.call(&["LPUSH", "many", "head"]);
    // Elements of 100+ bytes become PLAIN nodes once the threshold is low.
    c.call(&["DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100"]);
    let big_a = "P".repeat(500);
    let big_b: String = (0..300u32)
        .map(|i| char::from(b'!' + (i * 7919 % 90) as u8))
        .collect();
    c.call(&["RPUSH", "plain", "small1"]);
    c.call(&["RPUSH", "plain", &big_a]);
    c.call(&["RPUSH", "plain", "small2"]);
    c.call(&["RPUSH", "plain", &big_b]);
    c.call(&["RPUSH", "plain", "-42"]);
    let file = save(&server);
    let raw: usize = many.iter().chain(&els).map(|s| s.len()).sum();
    assert!(
        file.len() < raw / 2,
        "inner quicklist nodes should be stored LZF-compressed ({} bytes of RDB for {raw} of elements)",
        file.len()
    );
    let (records, _) = decode_all(&file);
    assert_eq!(
        list_of(find(&records, 0, b"lp")),
        &els.iter().map(|s| b(s)).collect::<Vec<_>>()
    );
    let mut want = vec![b("head")];
    want.extend(many.iter().map(|s| b(s)));
    assert_eq!(list_of(find(&records, 0, b"many")), &want);
    assert_eq!(
        list_of(find(&records, 0, b"plain")),
        &vec![b("small1"), b(&big_a), b("small2"), b(&big_b), b("-42")]
    );
}

#[test]
fn sets_intset_widths_and_hashtable() {
    let server = RedisServer::start(&[]);
    let mut c = Conn::new(server.port());
    c.call(&["SADD", "i16", "1", "-5", "32767", "-32768"]);
    c.call(&["SADD", "i32", "1", "100000", "-2147483648"]);
    c.call(&[
        "SADD",
        "i64",
        "7",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967296",
    ]);
    c.call(&["SADD", "strs", "a", "b", "", "12", "longer member"]);
    for k in ["i16", "i32", "i64"] {
        assert_eq!(c.encoding(k), "intset");
    }
    assert_eq!(c.encoding("strs"), "hashtable");
    let (records, _) = decode_all(&save(&server));
    let want = |v: &[&str]| sorted(v.iter().map(|s| b(s)).collect());
    assert_eq!(
        set_of(find(&records, 0, b"i16")),
        want(&["1", "-5", "32767", "-32768"])
    );
    assert_eq!(
        set_of(find(&records, 0, b"i32")),
        want(&["1", "100000", "-2147483648"])
    );
    assert_eq!(
        set_of(find(&records, 0, b"i64")),
        want(&[
            "7",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967296"
        ])
    );
    assert_eq!(
        set_of(find(&records, 0, b"strs")),
        want(&["a", "b", "", "12", "longer member"])
    );
    // The intset is stored sorted.
    match &find(&records, 0, b"i16").value {
        Value::Set(v) => assert_eq!(v, &vec![b("-32768"), b("-5"), b("1"), b("32767")]),
        _ => unreachable!(),
    }
}

fn zadd_all(c: &mut Conn, key: &str) -> Vec<(Bytes, f64)> {
    let members: Vec<(&str, &str, f64)> = vec![
        ("neg-inf", "-inf", f64::NEG_INFINITY),
        ("pos-inf", "+inf", f64::INFINITY),
        ("frac", "1.5", 1.5),
        ("negfrac", "-2.25", -2.25),
        ("zero", "0", 0.0),
        ("big", "1e300", 1e300),
        ("tiny", "0.1", 0.1),
        ("int", "42", 42.0),
        ("bigint", "123456789012", 123456789012.0),
        ("12", "7", 7.0),
    ];
    for (m, s, _) in &members {
        c.call(&["ZADD", key, s, m]);
    }
    let mut want: Vec<(Bytes, f64)> = members.iter().map(|(m, _, s)| (b(m), *s)).collect();
    want.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap().then(a.0.cmp(&b.0)));
    want
}

#[test]
fn zsets_listpack_and_skiplist() {
    let lp = RedisServer::start(&[]);
    let mut c = Conn::new(lp.port());
    let want = zadd_all(&mut c, "z");
    assert_eq!(c.encoding("z"), "listpack");
    let (records, _) = decode_all(&save(&lp));
    assert_eq!(find(&records, 0, b"z").value, Value::ZSet(want.clone()));

    let sl = RedisServer::start(&["--zset-max-listpack-entries", "0"]);
    let mut c = Conn::new(sl.port());
    let want = zadd_all(&mut c, "z");
    assert_eq!(c.encoding("z"), "skiplist");
    let (records, _) = decode_all(&save(&sl));
    // Redis saves a skiplist from the greatest score to the smallest.
    let mut desc = want;
    desc.reverse();
    assert_eq!(find(&records, 0, b"z").value, Value::ZSet(desc));
}

#[test]
fn hashes_listpack_and_hashtable() {
    let els = listpack_elements();
    let pairs: Vec<(Bytes, Bytes)> = els
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                if i % 3 == 0 {
                    b(&i.to_string())
                } else {
                    b(&format!("f{i}"))
                },
                b(v),
            )
        })
        .collect();
    for (flag, enc) in [("128", "listpack"), ("0", "hashtable")] {
        let server = RedisServer::start(&[
            "--hash-max-listpack-entries",
            flag,
            "--hash-max-listpack-value",
            "5000",
        ]);
        let mut c = Conn::new(server.port());
        for (f, v) in &pairs {
            c.call(&[b"HSET".as_ref(), b"h", f, v]);
        }
        assert_eq!(c.encoding("h"), enc);
        let (records, _) = decode_all(&save(&server));
        match &find(&records, 0, b"h").value {
            Value::Hash(got) => {
                if enc == "listpack" {
                    assert_eq!(got, &pairs, "listpack keeps insertion order");
                } else {
                    let mut g = got.clone();
                    g.sort();
                    let mut w = pairs.clone();
                    w.sort();
                    assert_eq!(g, w);
                }
            }
            other => panic!("not a hash: {other:?}"),
        }
    }
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

/// `entries-read` of a group as XINFO GROUPS reports it (nil → None).
fn xinfo_entries_read(c: &mut Conn, key: &str, group: &str) -> Option<u64> {
    let Reply::Array(Some(groups)) = c.call(&["XINFO", "GROUPS", key]) else {
        panic!("XINFO GROUPS");
    };
    for g in groups {
        let Reply::Array(Some(kv)) = g else { continue };
        let name = kv
            .iter()
            .position(|r| r.text() == "name")
            .map(|i| kv[i + 1].text());
        if name.as_deref() == Some(group) {
            let i = kv
                .iter()
                .position(|r| matches!(r, Reply::Bulk(Some(x)) if x == b"entries-read"))
                .unwrap();
            return match &kv[i + 1] {
                Reply::Int(n) => Some(*n as u64),
                _ => None,
            };
        }
    }
    panic!("group {group} not in XINFO GROUPS");
}

#[test]
fn streams_with_deletions_groups_pel_consumers() {
    let server = RedisServer::start(&["--stream-node-max-entries", "3"]);
    let mut c = Conn::new(server.port());
    let mut want: Vec<(StreamId, Vec<(Bytes, Bytes)>)> = Vec::new();
    for i in 1..=10u64 {
        let fields: Vec<(String, String)> = if i % 4 == 0 {
            vec![("other".into(), format!("{i}")), ("x".into(), "-77".into())]
        } else {
            vec![
                ("name".into(), format!("n{i}")),
                ("count".into(), format!("{}", i * 1000)),
            ]
        };
        let idtxt = format!("{}-{}", 1000 + i / 3, i);
        let mut args = vec!["XADD".to_string(), "s".into(), idtxt];
        for (f, v) in &fields {
            args.push(f.clone());
            args.push(v.clone());
        }
        c.call(&args);
        want.push((
            id(1000 + i / 3, i),
            fields.iter().map(|(f, v)| (b(f), b(v))).collect(),
        ));
    }
    c.call(&["XDEL", "s", "1001-5", "1000-1"]);
    want.retain(|(i, _)| *i != id(1001, 5) && *i != id(1000, 1));
    c.call(&["XGROUP", "CREATE", "s", "g1", "0"]);
    c.call(&["XGROUP", "CREATE", "s", "g2", "$"]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "alice",
        "COUNT",
        "2",
        "STREAMS",
        "s",
        ">",
    ]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g1",
        "bob",
        "COUNT",
        "1",
        "STREAMS",
        "s",
        ">",
    ]);
    c.call(&["XCLAIM", "s", "g1", "bob", "0", "1000-2"]);
    c.call(&["XGROUP", "CREATECONSUMER", "s", "g1", "carol"]);
    c.call(&["XADD", "empty", "1-1", "a", "b"]);
    c.call(&["XDEL", "empty", "1-1"]);

    let (records, _) = decode_all(&save(&server));
    let s = match &find(&records, 0, b"s").value {
        Value::Stream(s) => s.clone(),
        other => panic!("not a stream: {other:?}"),
    };
    let got: Vec<(StreamId, Vec<(Bytes, Bytes)>)> =
        s.entries.iter().map(|e| (e.id, e.fields.clone())).collect();
    assert_eq!(got, want);
    assert_eq!(s.length, 8);
    assert_eq!(s.last_id, id(1003, 10));
    assert_eq!(s.first_id, id(1000, 2));
    assert_eq!(s.max_deleted_entry_id, id(1001, 5));
    assert_eq!(s.entries_added, 10);
    assert_eq!(s.groups.len(), 2);
    let g1 = s.groups.iter().find(|g| g.name == b("g1")).unwrap();
    let g2 = s.groups.iter().find(|g| g.name == b("g2")).unwrap();
    assert_eq!(g1.last_delivered_id, id(1001, 4));
    // Redis stores entries-read as invalid (-1) when deletions make it unknowable.
    assert_eq!(g1.entries_read, xinfo_entries_read(&mut c, "s", "g1"));
    assert_eq!(g2.last_delivered_id, id(1003, 10));
    assert!(g2.pel.is_empty() && g2.consumers.is_empty());
    let pel: Vec<(StreamId, u64)> = g1.pel.iter().map(|p| (p.id, p.delivery_count)).collect();
    assert_eq!(
        pel,
        vec![(id(1000, 2), 2), (id(1001, 3), 1), (id(1001, 4), 1)]
    );
    let consumers: Vec<(Bytes, Vec<StreamId>)> = g1
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending.clone()))
        .collect();
    assert_eq!(
        consumers,
        vec![
            (b("alice"), vec![id(1001, 3)]),
            (b("bob"), vec![id(1000, 2), id(1001, 4)]),
            (b("carol"), vec![])
        ]
    );
    assert!(g1
        .consumers
        .iter()
        .all(|c| c.seen_time_ms > 1_600_000_000_000 && c.active_time_ms.is_none()));
    assert!(g1
        .pel
        .iter()
        .all(|p| p.delivery_time_ms > 1_600_000_000_000));

    let e = match &find(&records, 0, b"empty").value {
        Value::Stream(s) => s.clone(),
        other => panic!("not a stream: {other:?}"),
    };
    assert!(e.entries.is_empty());
    assert_eq!(e.length, 0);
    assert_eq!(e.last_id, id(1, 1));
}

#[test]
fn function_libraries_are_kept() {
    let server = RedisServer::start(&[]);
    let mut c = Conn::new(server.port());
    let code =
        "#!lua name=mylib\nredis.register_function('myfunc', function(keys, args) return 1 end)";
    c.call(&["FUNCTION", "LOAD", code]);
    c.call(&["SET", "k", "v"]);
    let file = save(&server);
    let (records, reader) = decode_all(&file);
    assert_eq!(reader.functions(), &[b(code)]);
    assert_eq!(records.len(), 1);
}

#[test]
fn dump_payloads_decode_like_the_rdb() {
    let server = RedisServer::start(&["--stream-node-max-entries", "2"]);
    let mut c = Conn::new(server.port());
    c.call(&["SET", "str", "hello"]);
    c.call(&["SET", "int", "-123456"]);
    c.call(&["SET", "lzf", &"q".repeat(500)]);
    let els = listpack_elements();
    for e in &els {
        c.call(&["RPUSH", "list", e]);
        c.call(&["HSET", "hash", &format!("f-{e}"), e]);
    }
    c.call(&["SADD", "intset", "1", "2", "-70000"]);
    c.call(&["SADD", "set", "a", "b"]);
    zadd_all(&mut c, "zset");
    for i in 1..=5 {
        c.call(&["XADD", "stream", &format!("{i}-0"), "f", &i.to_string()]);
    }
    c.call(&["XGROUP", "CREATE", "stream", "g", "0"]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "2",
        "STREAMS",
        "stream",
        ">",
    ]);
    let keys = [
        "str", "int", "lzf", "list", "hash", "intset", "set", "zset", "stream",
    ];
    let (records, _) = decode_all(&save(&server));
    for k in keys {
        let payload = c.call(&["DUMP", k]).bulk();
        let v = rdb::decode_dump(&payload).unwrap_or_else(|e| panic!("DUMP of {k}: {e}"));
        assert_eq!(v, find(&records, 0, k.as_bytes()).value, "{k}");

        // A flipped bit in the value is caught by the checksum.
        let mut bad = payload.clone();
        bad[1] ^= 0x10;
        assert!(
            matches!(rdb::decode_dump(&bad), Err(rdb::Error::Checksum { .. })),
            "{k}"
        );
    }
    // A payload claiming a newer RDB version is refused (with a valid checksum).
    let payload = c.call(&["DUMP", "str"]).bulk();
    let body = &payload[..payload.len() - 10];
    let newer = common::dump_payload(body[0], &body[1..], 12);
    let err = rdb::decode_dump(&newer).unwrap_err();
    assert!(
        matches!(err, rdb::Error::Version { found: 12, .. }),
        "{err}"
    );
}
