//! The store must answer like Redis 7.0, reply for reply: hand-written
//! command sequences per family, each run on a fresh keyspace against a
//! real `redis-server` and against the store. Every mismatch is a bug in
//! the store.

mod common;

use bytes::Bytes;
use common::{parse, Pair};
use resp::Frame;
use test_support::RedisServer;

async fn check(family: &str, seqs: &[&str]) {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    // Every sequence runs twice: as a RESP2 client, then as a RESP3 one
    // (maps, sets, doubles and nulls must match Redis's RESP3 replies too).
    for resp3 in [false, true] {
        for seq in seqs {
            pair.reset().await;
            let mut cmds = parse(seq);
            if resp3 {
                cmds.insert(0, common::args(&["HELLO", "3"]));
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
async fn core_and_errors_match_redis() {
    check(
        "core",
        &[
            "PING; PING hello; PING a b; ECHO hi; ECHO",
            "NOSUCHCMD; NOSUCHCMD a b c; nosuch 1",
            "GET; SET k; GET a b",
            "CLIENT; CLIENT NOSUCH; CONFIG NOSUCH x; OBJECT nosuch k",
            "SELECT 1; SET k v; SELECT 0; GET k; SELECT 1; GET k; SELECT 16; SELECT -1; SELECT x",
            "HELLO 3; SET k v; GET k; GET nokey; HGETALL nokey; HELLO 2; GET nokey",
            "HELLO 4; HELLO x; HELLO 3 SETNAME myname; CLIENT GETNAME; CLIENT SETNAME \"\"; CLIENT GETNAME",
            "CLIENT SETNAME a b; CLIENT SETNAME ok; CLIENT GETNAME; CLIENT ID x",
            "AUTH x; AUTH a b; AUTH default x; HELLO 3 AUTH bob x; HELLO 3 AUTH default x; HELLO 2 FOO",
        ],
    )
    .await;
}

#[tokio::test]
async fn server_introspection_matches_a_module_less_non_cluster_redis() {
    check(
        "introspection",
        &[
            "CLIENT HELP; COMMAND HELP; CONFIG HELP; LATENCY HELP",
            "MEMORY HELP; MODULE HELP; PUBSUB HELP; SLOWLOG HELP",
            "ASKING; READONLY; READWRITE; CLUSTER INFO; CLUSTER NODES; CLUSTER SLOTS; CLUSTER KEYSLOT k; CLUSTER HELP",
            "MEMORY PURGE; MODULE LIST; MODULE LOAD /x; MODULE UNLOAD x; LATENCY GRAPH command",
            "COMMAND GETKEYSANDFLAGS SET k v; COMMAND GETKEYSANDFLAGS LMOVE a b LEFT RIGHT; COMMAND GETKEYSANDFLAGS GET; COMMAND GETKEYSANDFLAGS PING; COMMAND GETKEYSANDFLAGS NOSUCH k",
            "COMMAND GETKEYSANDFLAGS EVAL s 2 a b; COMMAND GETKEYSANDFLAGS SORT k BY w GET x STORE d; COMMAND GETKEYSANDFLAGS MSET a 1 b 2; COMMAND GETKEYSANDFLAGS XREADGROUP GROUP g c STREAMS s1 s2 0 0",
            "CLIENT GETREDIR; CLIENT TRACKINGINFO; CLIENT CACHING yes; CLIENT TRACKING off; CLIENT TRACKING maybe",
            "REPLICAOF NO ONE; SLAVEOF NO ONE; RESTORE-ASKING k 0 x",
        ],
    )
    .await;
}

#[tokio::test]
async fn strings_match_redis() {
    check(
        "strings",
        &[
            "SET k v; GET k; SET k v2 NX; GET k; SET k v3 XX; GET k; SET n v XX; GET n; SET n v NX; GET n",
            "SET k v GET; SET k w GET; GET k; SET k x NX GET; SET j y XX GET; LPUSH l a; SET l v GET; GET l",
            "SET k v EX 100; TTL k; SET k v PX 100000; PTTL k; SET k v KEEPTTL; TTL k; SET k v; TTL k",
            "SET k v EX 0; SET k v EX -1; SET k v PX 0; SET k v EX abc; SET k v EX; SET k v NX XX; SET k v EX 10 PX 10; SET k v KEEPTTL EX 10; SET k v FOO",
            "SET k v EX 9223372036854775807; SET k v EXAT 99999999999; TTL k; SET k v PXAT 1; GET k; EXISTS k",
            "SETNX k v; SETNX k w; GET k; SETEX k 100 v; TTL k; SETEX k 0 v; SETEX k x v; PSETEX k 100000 v; PTTL k; PSETEX k -5 v",
            "SET k v; GETEX k; GETEX k EX 100; TTL k; GETEX k PERSIST; TTL k; GETEX k PX 50000; PTTL k; GETEX k EX 0; GETEX k FOO; GETEX nokey EX 10; GETEX k EXAT 1; GET k",
            "SET k v; GETDEL k; GETDEL k; LPUSH l a; GETDEL l; GETSET k a; GETSET k b; GET k",
            "MSET a 1 b 2 c 3; MGET a b c d; MSET a; MSETNX a 9 z 9; MGET a z; MSETNX y 1 z 2; MGET y z; LPUSH l x; MGET a l",
            "INCR c; INCR c; DECR c; INCRBY c 10; DECRBY c 3; INCRBY c x; INCRBY c 1.5; GET c; SET s abc; INCR s; SET big 9223372036854775807; INCR big; DECRBY c -9223372036854775808; SET neg -9223372036854775808; DECR neg",
            "SET c 012; INCR c; SET c \"\"; INCR c; SET c +1; INCR c; LPUSH l a; INCR l; DECRBY c 9223372036854775807",
            "INCRBYFLOAT f 1.5; INCRBYFLOAT f 0.25; INCRBYFLOAT f -3; INCRBYFLOAT f abc; INCRBYFLOAT f inf; SET f 0.1; INCRBYFLOAT f 0.2; SET f 10; INCRBYFLOAT f 1e2; SET t abc; INCRBYFLOAT t 1; SET k 5; EXPIRE k 100; INCRBYFLOAT k 1; TTL k",
            "APPEND k hello; APPEND k ' world'; GET k; STRLEN k; STRLEN nokey; LPUSH l a; APPEND l x; STRLEN l",
            "SET k Hello; GETRANGE k 0 3; GETRANGE k -3 -1; GETRANGE k 0 -1; GETRANGE k 10 20; GETRANGE k -1 -5; GETRANGE k 3 1; GETRANGE nokey 0 1; GETRANGE k a b; SUBSTR k 1 2",
            "SETRANGE k 6 Redis; GET k; SETRANGE k 0 XY; GET k; SETRANGE k -1 x; SETRANGE k 0 \"\"; SETRANGE nokey 5 \"\"; EXISTS nokey; STRLEN k",
            "SETBIT b 7 1; GETBIT b 7; GETBIT b 6; GETBIT b 100; GET b; SETBIT b 7 0; SETBIT b 7 2; SETBIT b -1 1; SETBIT b x 1; BITCOUNT b; SET s foobar; BITCOUNT s; BITCOUNT s 0 0; BITCOUNT s 1 1; BITCOUNT s 1 1 BIT; BITCOUNT s 5 30 BIT; BITCOUNT s 0; BITCOUNT s 0 1 FOO; BITCOUNT nokey",
            "SET s \u{ff}\u{f0}; BITPOS s 0; BITPOS s 1; BITPOS nokey 1; BITPOS nokey 0; BITPOS s 2; SET z abc; BITPOS z 1 1; BITPOS z 0 1 2; BITPOS z 1 2 -1 BIT; BITPOS z 1 x",
            "MSET a ohmytext b mynewtext; LCS a b; LCS a b LEN; LCS a b IDX; LCS a b IDX MINMATCHLEN 4; LCS a b IDX WITHMATCHLEN; LCS a nokey; LCS nokey nokey2 IDX; LCS a b LEN IDX; LCS a b FOO; LCS a b MINMATCHLEN x; LPUSH l x; LCS l a; SET c aaaa; SET d aa; LCS c d IDX WITHMATCHLEN",
            "SET k v; OBJECT ENCODING k; SET n 123; OBJECT ENCODING n; OBJECT ENCODING nokey; OBJECT REFCOUNT n",
        ],
    )
    .await;
}

#[tokio::test]
async fn bitop_and_sort_match_redis() {
    check(
        "bitop+sort",
        &[
            "SET a abc; SET b xyzw; BITOP AND d a b; GET d; BITOP OR d a b; GET d; BITOP XOR d a b nokey; GET d; BITOP NOT d a; GET d; BITOP NOT d a b; BITOP FOO d a; BITOP AND d; BITOP AND d nokey; EXISTS d; LPUSH l x; BITOP OR d a l; OBJECT ENCODING d",
            "RPUSH l 3 1 2 10; SORT l; SORT l DESC; SORT l ALPHA; SORT l ALPHA DESC LIMIT 1 2; SORT l LIMIT 1; SORT l FOO; SORT l LIMIT -1 2; SORT l LIMIT 2 -1; SORT l BY nosort; SORT nokey; SET s v; SORT s",
            "RPUSH l a 1; SORT l; SORT l ALPHA; SORT_RO l ALPHA; SORT_RO l ALPHA STORE d",
            "RPUSH l 1 2 3; MSET w_1 30 w_2 20 w_3 10 o_1 one o_2 two; SORT l BY w_*; SORT l BY w_* GET o_* GET #; SORT l BY nosort GET o_*; SORT l BY w_* STORE d; LRANGE d 0 -1; SORT l BY w_* GET o_* STORE d; LRANGE d 0 -1; SORT l BY missing_*",
            "RPUSH l 1 2; HSET h_1 f 9; HSET h_2 f 3; SORT l BY h_*->f GET h_*->f; SADD s 5 3 9; SORT s; SORT s DESC LIMIT 0 2; SORT s BY nosort STORE d; LRANGE d 0 -1; ZADD z 3 a 1 b 2 c; SORT z ALPHA; SORT z BY nosort; SORT z BY nosort DESC; SORT z BY nosort LIMIT 1 1",
            "RPUSH l 2 1; SORT l STORE d; LRANGE d 0 -1; SORT nokey STORE d; EXISTS d",
            "ZADD z 1 a; SORT z ALPHA; OBJECT ENCODING z; SADD s 1 x; SREM s x; OBJECT ENCODING s; HSET h f 0123456789012345678901234567890123456789012345678901234567890123456789; HSET h f v; OBJECT ENCODING h",
        ],
    )
    .await;
}

#[tokio::test]
async fn bitfield_matches_redis() {
    check(
        "bitfield",
        &[
            "BITFIELD k SET i8 0 100 GET i8 0 INCRBY i8 0 100 GET u4 0 GET i64 0; GET k; STRLEN k",
            "BITFIELD k INCRBY u2 100 1 OVERFLOW SAT INCRBY u2 102 1; BITFIELD k INCRBY u2 100 1 OVERFLOW SAT INCRBY u2 102 1; BITFIELD k INCRBY u2 100 1 OVERFLOW SAT INCRBY u2 102 1; BITFIELD k OVERFLOW FAIL INCRBY u2 102 1; STRLEN k",
            "BITFIELD k SET u8 #0 255 SET u8 #1 200 GET u8 #0 GET u8 #1 GET u16 0 GET i16 0; BITFIELD_RO k GET u8 #1; BITFIELD_RO k SET u8 0 1; BITFIELD_RO k",
            "BITFIELD k OVERFLOW WRAP SET i8 0 128 GET i8 0 SET i8 0 -129 GET i8 0 OVERFLOW SAT SET i8 0 1000 GET i8 0 SET i8 0 -1000 GET i8 0 OVERFLOW FAIL SET i8 0 1000 GET i8 0",
            "BITFIELD k SET i64 0 -1 INCRBY i64 0 1 INCRBY i64 0 -9223372036854775808 OVERFLOW SAT INCRBY i64 0 -1 OVERFLOW WRAP INCRBY i64 0 -1 OVERFLOW FAIL INCRBY i64 0 -1",
            "BITFIELD k SET u63 0 9223372036854775807 INCRBY u63 0 1 OVERFLOW SAT INCRBY u63 0 5 INCRBY u63 0 -9223372036854775808 SET u8 3 -1 GET u8 3",
            "BITFIELD nokey GET u8 0 GET i5 3; EXISTS nokey; BITFIELD nokey OVERFLOW FAIL INCRBY u2 0 9; EXISTS nokey; STRLEN nokey; BITFIELD nokey2; EXISTS nokey2",
            "BITFIELD k GET u64 0; BITFIELD k GET i65 0; BITFIELD k GET x8 0; BITFIELD k GET u0 0; BITFIELD k GET \"\" 0; BITFIELD k GET i8 -1; BITFIELD k GET i8 x; BITFIELD k GET i8 #x; BITFIELD k GET i8 4294967296; BITFIELD k SET i8 0 x; BITFIELD k OVERFLOW FOO; BITFIELD k OVERFLOW; BITFIELD k GET i8; BITFIELD k FOO i8 0; BITFIELD k SET i8 0",
            "LPUSH l a; BITFIELD l GET u8 0; BITFIELD l SET u8 0 1; BITFIELD_RO l GET u8 0; SET s abc; BITFIELD s GET u8 8 SET u4 4 15 GET u8 0; GET s; BITFIELD s GET i8 #9223372036854775807",
            "SET n 12345; BITFIELD n GET u8 0 INCRBY u8 0 1; GET n; OBJECT ENCODING n",
        ],
    )
    .await;
}

#[tokio::test]
async fn restore_refuses_what_redis_refuses() {
    check(
        "restore",
        &[
            "DUMP nokey; RESTORE k 0 garbage; RESTORE k -1 garbage; RESTORE k x garbage; EXISTS k",
            "SET k v; RESTORE k 0 garbage; RESTORE k 0 garbage FOO; RESTORE k 0 garbage IDLETIME; RESTORE k 0 garbage IDLETIME -1; RESTORE k 0 garbage FREQ 256; RESTORE k 0 garbage IDLETIME 1 FREQ 1; RESTORE k 0 garbage FREQ x; RESTORE k 0 garbage REPLACE; GET k",
        ],
    )
    .await;
}

/// A value DUMPed by one side RESTOREs on the other to the same value:
/// Redis's compact encodings into the store, the store's plain ones into
/// Redis (the bytes differ; the values must not).
#[tokio::test]
async fn dump_payloads_restore_across_redis_and_the_store() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let stream_setup = (1..=150)
        .map(|i| format!("XADD x 1-{i} f v{i}"))
        .collect::<Vec<_>>()
        .join(";");
    let setups = [
        "SET s hello",
        "SET n 12345",
        "SET big xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "RPUSH l a b 3 -7 c",
        "SADD st x y 1 2",
        "SADD si 1 2 3 100000",
        "HSET h f1 v1 f2 2 f3 v3",
        "ZADD z 1.5 a -2 b 3 c 1e100 d",
        // Streams: more than one listpack node, other field sets, a
        // deletion; a group with pending entries and consumers.
        &stream_setup,
        "XADD x 2-1 a 1 b 2",
        "XADD x 2-2 other v",
        "XDEL x 1-5",
        "XADD xg 1-1 a 1",
        "XADD xg 1-2 a 2",
        "XADD xg 1-3 b 3",
        "XGROUP CREATE xg g 0",
        "XREADGROUP GROUP g c1 COUNT 2 STREAMS xg >",
        "XGROUP CREATE xg g2 $",
        "XGROUP CREATECONSUMER xg g2 idle",
    ];
    let reads: &[(&str, &str)] = &[
        ("s", "GET"),
        ("n", "GET"),
        ("big", "GET"),
        ("l", "LRANGE"),
        ("st", "SMEMBERS"),
        ("si", "SMEMBERS"),
        ("h", "HGETALL"),
        ("z", "ZRANGE"),
        ("x", "XRANGE"),
        ("xg", "XRANGE"),
        ("xg", "XGROUPS"),
        ("xg", "XPENDING"),
    ];
    let read = |key: &str, how: &str| -> Vec<Bytes> {
        match how {
            "LRANGE" => common::args(&["LRANGE", key, "0", "-1"]),
            "ZRANGE" => common::args(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "XRANGE" => common::args(&["XRANGE", key, "-", "+"]),
            "XGROUPS" => common::args(&["XINFO", "GROUPS", key]),
            "XPENDING" => common::args(&["XPENDING", key, "g"]),
            other => common::args(&[other, key]),
        }
    };
    let mut mismatches = Vec::new();
    pair.run_seq(&parse(&setups.join(";")), &mut mismatches)
        .await;
    for (key, how) in reads {
        let dump = common::args(&["DUMP", key]);
        let (theirs, ours) = pair.run(&dump).await;
        let (Frame::Bulk(from_redis), Frame::Bulk(from_store)) = (&theirs[0], &ours[0]) else {
            panic!("DUMP {key}: {theirs:?} / {ours:?}");
        };
        let copy = format!("{key}:copy:{how}");
        // Redis's payload into the store, the store's into Redis, with a TTL.
        let into_store = vec![
            Bytes::from_static(b"RESTORE"),
            Bytes::from(copy.clone()),
            Bytes::from_static(b"100000"),
            from_redis.clone(),
        ];
        let into_redis = vec![
            Bytes::from_static(b"RESTORE"),
            Bytes::from(copy.clone()),
            Bytes::from_static(b"100000"),
            from_store.clone(),
        ];
        let ours = pair.store.execute(&mut pair.session, into_store).await;
        let theirs = pair.redis.cmd(&into_redis);
        assert_eq!(ours.reply, Frame::simple("OK"), "store RESTORE {key}");
        assert_eq!(theirs, Frame::simple("OK"), "redis RESTORE {key}");
        for cmd in [
            read(&copy, how),
            common::args(&["TTL", &copy]),
            read(key, how),
        ] {
            pair.run_seq(&[cmd], &mut mismatches).await;
        }
        // BUSYKEY, then REPLACE, the same on both.
        let again = common::args(&["RESTORE", &copy, "0", "x"]);
        pair.run_seq(&[again], &mut mismatches).await;
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn pfdebug_and_pfselftest_match_redis() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    // A sparse HyperLogLog as Redis writes it (the store writes dense
    // ones), set on both sides.
    pair.redis
        .cmd(&common::args(&["PFADD", "tmp", "a", "b", "c"]));
    let Frame::Bulk(sparse) = pair.redis.cmd(&common::args(&["GET", "tmp"])) else {
        panic!("GET of a HyperLogLog is a string")
    };
    let mut mismatches = Vec::new();
    let set = vec![Bytes::from_static(b"SET"), Bytes::from_static(b"h"), sparse];
    pair.run_seq(&[set], &mut mismatches).await;
    pair.run_seq(
        &parse(
            "PFDEBUG ENCODING h; PFDEBUG DECODE h; PFCOUNT h; PFDEBUG GETREG h; \
             PFDEBUG ENCODING h; PFDEBUG DECODE h; PFDEBUG TODENSE h; PFCOUNT h; \
             PFDEBUG NOSUCH h; PFDEBUG GETREG missing; SET s x; PFDEBUG ENCODING s; \
             PFDEBUG GETREG; PFSELFTEST; PFSELFTEST x",
        ),
        &mut mismatches,
    )
    .await;
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn hyperloglog_matches_redis() {
    check(
        "hyperloglog",
        &[
            "PFADD h a b c; PFCOUNT h; PFADD h a; PFADD h d; PFCOUNT h; PFCOUNT h; PFCOUNT h nokey; PFADD h2 x y; PFCOUNT h h2; PFMERGE m h h2; PFCOUNT m; PFMERGE m2 nokey; PFCOUNT m2; EXISTS m2",
            "PFADD e; PFCOUNT e; EXISTS e; PFADD e; PFCOUNT nokey; PFCOUNT nokey nokey2",
            "SET s notanhll; PFADD s a; PFCOUNT s; PFMERGE s nokey; PFMERGE d s; SET t HYLLxxxxxxxxxxxxxxxxxxxxxx; PFCOUNT t; LPUSH l x; PFADD l a; PFCOUNT l; PFADD h a; PFCOUNT h l; PFMERGE l h",
            "PFADD h a; EXPIRE h 100; PFADD h b; TTL h; PFMERGE h h; TTL h; PFCOUNT h",
        ],
    )
    .await;
}

/// Thousands of elements (Redis's own encoding then dense, the cached
/// count in the header): the strings themselves are equal; and a small
/// sparse HyperLogLog written by Redis is read by the store.
#[tokio::test]
async fn hyperloglog_strings_match_redis_byte_for_byte_once_dense() {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    for chunk in 0..10 {
        let mut cmd = common::args(&["PFADD", "big"]);
        cmd.extend((0..1000).map(|i| Bytes::from(format!("el:{chunk}:{i}"))));
        pair.run_seq(&[cmd], &mut mismatches).await;
        pair.run_seq(&[common::args(&["PFCOUNT", "big"])], &mut mismatches)
            .await;
        // Redis goes dense past hll-sparse-max-bytes; until then only the
        // registers (the counts above) are comparable.
        let (theirs, ours) = pair.run(&common::args(&["GET", "big"])).await;
        if let Frame::Bulk(b) = &theirs[0] {
            if b[4] == 0 && theirs != ours {
                mismatches.push(format!(
                    "GET big after {} elements differs",
                    (chunk + 1) * 1000
                ));
            }
        }
    }
    let Frame::Bulk(b) = pair.redis.cmd(&common::args(&["GET", "big"])) else {
        panic!("GET big");
    };
    assert_eq!(b[4], 0, "Redis made it dense by 10000 elements");
    let mut other = common::args(&["PFADD", "other"]);
    other.extend((0..3000).map(|i| Bytes::from(format!("x{i}"))));
    for c in [
        other,
        common::args(&["PFCOUNT", "big", "other"]),
        common::args(&["PFMERGE", "big", "other"]),
        common::args(&["GET", "big"]),
        common::args(&["PFCOUNT", "big"]),
        common::args(&["GET", "big"]),
    ] {
        pair.run_seq(&[c], &mut mismatches).await;
    }
    // Redis's sparse string, as the replica would import it.
    pair.redis
        .cmd(&common::args(&["PFADD", "small", "a", "b", "c", "d"]));
    let Frame::Bulk(sparse) = pair.redis.cmd(&common::args(&["GET", "small"])) else {
        panic!("GET small");
    };
    assert_eq!(sparse[4], 1, "Redis keeps a small HyperLogLog sparse");
    let set = vec![
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"copy"),
        sparse,
    ];
    for c in [
        set,
        common::args(&["PFCOUNT", "copy"]),
        common::args(&["GET", "copy"]),
        common::args(&["PFADD", "copy", "a", "e", "f"]),
        common::args(&["PFCOUNT", "copy"]),
        common::args(&["PFCOUNT", "copy", "big"]),
    ] {
        pair.run_seq(&[c], &mut mismatches).await;
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn geo_matches_redis() {
    const SICILY: &str = "GEOADD s 13.361389 38.115556 Palermo 15.087269 37.502669 Catania 12.758489 38.788135 edge1 17.241510 38.788135 edge2 13.583333 37.316667 Agrigento";
    let seqs = [
        format!("{SICILY}; ZRANGE s 0 -1 WITHSCORES; GEOPOS s Palermo Catania nosuch; GEOPOS nokey a; GEOHASH s Palermo Catania nosuch; GEOHASH nokey a"),
        format!("{SICILY}; GEODIST s Palermo Catania; GEODIST s Palermo Catania km; GEODIST s Palermo Catania mi; GEODIST s Palermo Catania ft; GEODIST s Palermo nosuch; GEODIST nokey a b; GEODIST s Palermo Catania parsec; GEODIST s Palermo Catania km x; GEODIST s Palermo Palermo"),
        format!("{SICILY}; GEORADIUS s 15 37 200 km; GEORADIUS s 15 37 200 km WITHDIST WITHCOORD WITHHASH; GEORADIUS s 15 37 200 km ASC WITHDIST; GEORADIUS s 15 37 200 km DESC COUNT 2 WITHDIST; GEORADIUS s 15 37 100 km COUNT 1 ANY; GEORADIUS s 15 37 200 km ANY; GEORADIUS s 15 37 1 m; GEORADIUS nokey 15 37 200 km"),
        format!("{SICILY}; GEORADIUSBYMEMBER s Palermo 100 km ASC WITHDIST; GEORADIUSBYMEMBER s nosuch 100 km; GEORADIUSBYMEMBER nokey nosuch 100 km; GEORADIUSBYMEMBER_RO s Palermo 300 km COUNT 3 ASC; GEORADIUS_RO s 15 37 200 km STORE d; GEORADIUSBYMEMBER_RO s Palermo 100 km STOREDIST d"),
        format!("{SICILY}; GEORADIUS s 15 37 200 km STORE d; ZRANGE d 0 -1 WITHSCORES; GEORADIUS s 15 37 200 km STOREDIST d2 ASC; ZRANGE d2 0 -1 WITHSCORES; GEORADIUS s 15 37 1 m STORE d; EXISTS d; GEORADIUS s 15 37 200 km STORE d WITHDIST; GEORADIUS nokey 15 37 1 km STORE d2; EXISTS d2"),
        format!("{SICILY}; GEOSEARCH s FROMLONLAT 15 37 BYRADIUS 200 km ASC; GEOSEARCH s FROMMEMBER Palermo BYBOX 400 400 km ASC WITHCOORD WITHDIST; GEOSEARCH s FROMLONLAT 15 37 BYBOX 400 400 km; GEOSEARCH s FROMMEMBER nosuch BYRADIUS 1 km; GEOSEARCH s BYRADIUS 1 km; GEOSEARCH s FROMLONLAT 15 37; GEOSEARCH s FROMLONLAT 15 37 FROMMEMBER Palermo BYRADIUS 1 km; GEOSEARCH s FROMLONLAT 15 37 BYRADIUS 1 km BYBOX 1 1 km; GEOSEARCH s FROMLONLAT 15 37 BYRADIUS 10 km STORE d; GEOSEARCH nokey FROMMEMBER x BYRADIUS 10 km"),
        format!("{SICILY}; GEOSEARCHSTORE d s FROMLONLAT 15 37 BYRADIUS 200 km ASC COUNT 2; ZRANGE d 0 -1 WITHSCORES; GEOSEARCHSTORE d s FROMLONLAT 15 37 BYRADIUS 200 km STOREDIST; ZRANGE d 0 -1 WITHSCORES; GEOSEARCHSTORE d s FROMLONLAT 15 37 BYRADIUS 200 km WITHDIST; GEOSEARCHSTORE d nokey FROMLONLAT 15 37 BYRADIUS 200 km; EXISTS d"),
        // The box's width is measured at each point's latitude.
        "GEOADD c 12.758489 38.788135 edge1 17.241510 38.788135 edge2 17.250000 35.202000 edge3 12.750000 35.202000 edge4 12.748489955781654 37 edge5 15 38.798135872540925 edge6 17.251510044218346 37 edge7 15 35.201864127459075 edge8 12.692799634687903 38.798135872540925 corner1 17.200560937451133 35.201864127459075 corner3 12.799439062548865 35.201864127459075 corner4; GEOSEARCH c FROMLONLAT 15 37 BYBOX 400 400 km ASC; GEOSEARCH c FROMLONLAT 15 37 BYBOX 400 400 km ASC WITHDIST".to_string(),
        "GEOADD g 181 10 x; GEOADD g 10 86 x; GEOADD g x 10 m; GEOADD g 10 x m; GEOADD g 1 2; GEOADD g NX XX 1 2 m; GEOADD g 1 2 m 3; GEOADD g NX 1 2 m; GEOADD g NX 3 4 m; GEOPOS g m; GEOADD g XX CH 3 4 m n 5 6; GEOADD g CH 5 6 m 5 6 n; ZCARD g; GEOADD g -180 -85.05112878 sw 180 85.05112878 ne; GEOPOS g sw ne; GEOHASH g sw ne".to_string(),
        "GEOADD g 1 2 m; GEORADIUS g 1 2 -1 km; GEORADIUS g 1 2 x km; GEORADIUS g 1 2 1 parsec; GEORADIUS g 1 2 1 km COUNT 0; GEORADIUS g 1 2 1 km COUNT x; GEORADIUS g 1 2 1 km ANY; GEORADIUS g 1 2 1 km FOO; GEORADIUS g 1 2 1 km COUNT; GEOSEARCH g FROMLONLAT 1 2 BYBOX -1 1 km; GEOSEARCH g FROMLONLAT 1 2 BYBOX x 1 km; GEOSEARCH g FROMLONLAT 1 2 BYBOX 1 x km; SET str v; GEOADD str 1 2 m; GEOPOS str m; GEODIST str a b; GEORADIUS str 1 2 1 km; GEOHASH str m".to_string(),
    ];
    let seqs: Vec<&str> = seqs.iter().map(String::as_str).collect();
    check("geo", &seqs).await;
}

#[tokio::test]
async fn keys_match_redis() {
    check(
        "keys",
        &[
            "SET a 1; SET b 2; DEL a b c; EXISTS a b; SET a 1; EXISTS a a a; UNLINK a; TYPE a; SET s v; TYPE s; LPUSH l x; TYPE l; HSET h f v; TYPE h; SADD t m; TYPE t",
            "SET a 1; RENAME a b; GET a; GET b; RENAME nokey x; RENAME b b; SET c 3; RENAMENX b c; RENAMENX b d; GET d; RENAMENX d d; RENAMENX nokey z",
            "SET a 1; EXPIRE a 100; RENAME a b; TTL b; TTL a",
            "SET a 1; COPY a b; GET b; COPY a b; COPY a b REPLACE; COPY a a; COPY a c DB 1; SELECT 1; GET c; SELECT 0; COPY nokey x; COPY a b DB 99; COPY a b FOO; LPUSH l 1 2; COPY l l2; LRANGE l2 0 -1",
            "SET a 1; EXPIRE a 100; TTL a; EXPIRE a 50 NX; EXPIRE a 50 XX; TTL a; EXPIRE a 200 GT; TTL a; EXPIRE a 10 GT; EXPIRE a 10 LT; TTL a; EXPIRE a 10 NX XX; EXPIRE a 10 GT LT; EXPIRE a 10 FOO; EXPIRE a x",
            "SET a 1; EXPIRE a 10 GT; EXPIRE a 10 LT; TTL a; PERSIST a; PERSIST a; TTL a; TTL nokey; PTTL nokey; EXPIRE nokey 10",
            "SET a 1; PEXPIRE a 100000; PTTL a; EXPIREAT a 99999999999; EXPIRETIME a; PEXPIREAT a 99999999999000; PEXPIRETIME a; EXPIRETIME nokey; SET b 1; EXPIRETIME b; EXPIRE a 0; EXISTS a; SET c 1; EXPIREAT c 1; GET c; SET d 1; EXPIRE d 9223372036854775807",
            "MSET one 1 two 2 three 3 four 4; KEYS *o*; KEYS t??; KEYS *; KEYS [ot]*; KEYS nomatch; KEYS f\\our",
            "MSET a 1 b 2 c 3; DBSIZE; FLUSHDB; DBSIZE; SET x 1; FLUSHDB ASYNC; FLUSHDB FOO; FLUSHALL SYNC; DBSIZE",
            "SET a 1; SWAPDB 0 1; GET a; SELECT 1; GET a; SWAPDB 0 x; SWAPDB 0 99; SWAPDB x 0",
            "SET a 1; MOVE a 1; EXISTS a; SELECT 1; GET a; MOVE a 1; SET b 1; SELECT 0; SET b 2; SELECT 1; MOVE b 0; MOVE nokey 0; MOVE b 99; MOVE b x",
            "RANDOMKEY; SET a 1; RANDOMKEY; OBJECT FREQ a",
            "SET a 1; TOUCH a b",
            "MSET a 1 b 2; SCAN x; SCAN 0 COUNT 0; SCAN 0 FOO bar; SCAN 0 MATCH; SCAN 0 COUNT x",
        ],
    )
    .await;
}

#[tokio::test]
async fn hashes_match_redis() {
    check(
        "hashes",
        &[
            "HSET h a 1 b 2; HGET h a; HGET h z; HGETALL h; HSET h a 3 c 4; HGETALL h; HLEN h; HKEYS h; HVALS h; HSET h x; HMSET h d 5; HMSET h e",
            "HSET h a 1 b 2 c 3; HDEL h b z; HGETALL h; HDEL h a c; EXISTS h; HDEL nokey a",
            "HSETNX h a 1; HSETNX h a 2; HGET h a; HEXISTS h a; HEXISTS h z; HSTRLEN h a; HSTRLEN h z; HMGET h a z; HMGET nokey a",
            "HINCRBY h n 5; HINCRBY h n -2; HINCRBY h n x; HSET h s abc; HINCRBY h s 1; HSET h big 9223372036854775807; HINCRBY h big 1",
            "HINCRBYFLOAT h f 1.5; HINCRBYFLOAT h f 0.1; HINCRBYFLOAT h f x; HSET h s abc; HINCRBYFLOAT h s 1; HINCRBYFLOAT h f inf",
            "SET s v; HGET s a; HSET s a 1; HGETALL s; HLEN s; HDEL s a",
            "HSET h a 1 b 2 c 3; HSCAN h 0; HSCAN h 0 MATCH a*; HSCAN nokey 0; HSCAN h 0 COUNT 1",
            "HELLO 3; HSET h a 1 b 2; HGETALL h; HRANDFIELD nokey; HRANDFIELD h 0",
            "HSET h a 1; HRANDFIELD h 5 WITHVALUES; HRANDFIELD h -3; HRANDFIELD h 1 FOO; HRANDFIELD h x",
        ],
    )
    .await;
}

#[tokio::test]
async fn lists_match_redis() {
    check(
        "lists",
        &[
            "LPUSH l a b c; RPUSH l d e; LRANGE l 0 -1; LLEN l; LINDEX l 0; LINDEX l -1; LINDEX l 99; LINDEX l x; LRANGE l 1 2; LRANGE l -2 -1; LRANGE l 5 1; LRANGE nokey 0 -1",
            "LPUSHX l a; RPUSHX l a; EXISTS l; RPUSH l a; LPUSHX l b; RPUSHX l c; LRANGE l 0 -1",
            "RPUSH l a b c d e; LPOP l; RPOP l; LPOP l 2; RPOP l 0; LPOP l 5; EXISTS l; LPOP nokey; LPOP nokey 2; LPOP l -1; RPOP l x",
            "RPUSH l a b c; LSET l 0 x; LSET l -1 z; LSET l 5 q; LSET nokey 0 a; LRANGE l 0 -1",
            "RPUSH l a b a c a; LREM l 2 a; LRANGE l 0 -1; RPUSH l a; LREM l -1 a; LRANGE l 0 -1; LREM l 0 a; LRANGE l 0 -1; LREM l 0 nothing; LREM nokey 0 a",
            "RPUSH l a b c d e; LTRIM l 1 -2; LRANGE l 0 -1; LTRIM l 5 10; EXISTS l; LTRIM nokey 0 1",
            "RPUSH l a b c; LINSERT l BEFORE b x; LINSERT l AFTER c y; LINSERT l AFTER q z; LINSERT l MIDDLE b z; LINSERT nokey BEFORE a b; LRANGE l 0 -1",
            "RPUSH l a b c a b c; LPOS l b; LPOS l b RANK 2; LPOS l b RANK -1; LPOS l b COUNT 0; LPOS l b COUNT 1; LPOS l z; LPOS l z COUNT 0; LPOS l b RANK 0; LPOS l b COUNT -1; LPOS l b MAXLEN 2; LPOS l b MAXLEN -1; LPOS l c RANK -2 COUNT 2; LPOS l b FOO 1",
            "RPUSH a 1 2 3; LMOVE a b LEFT RIGHT; LMOVE a b RIGHT LEFT; LRANGE a 0 -1; LRANGE b 0 -1; LMOVE a a LEFT RIGHT; LRANGE a 0 -1; LMOVE nokey b LEFT LEFT; LMOVE a b UP LEFT; SET s v; LMOVE a s LEFT LEFT; LRANGE a 0 -1; RPOPLPUSH a b; LRANGE b 0 -1",
            "RPUSH a 1 2 3; RPUSH b 4; LMPOP 2 nokey a LEFT; LMPOP 2 a b RIGHT COUNT 5; LMPOP 1 a LEFT; LMPOP 0 a LEFT; LMPOP 1 a UP; LMPOP 1 b LEFT COUNT 0; LMPOP 2 nokey nokey2 LEFT",
            "SET s v; LPUSH s a; LRANGE s 0 -1; LLEN s; LPOP s; RPUSH l a; BLPOP l 0; BLPOP nokey 0.01; BRPOP nokey x 1; BLPOP l -1; BLPOP l x",
            "RPUSH l a b; BLMOVE l m LEFT LEFT 0; BRPOPLPUSH l m 0; LRANGE m 0 -1; BLMPOP 0 1 m RIGHT COUNT 2; BLMPOP 0.01 1 nokey LEFT",
            "RPUSH l a; OBJECT ENCODING l",
        ],
    )
    .await;
}

#[tokio::test]
async fn sets_match_redis() {
    check(
        "sets",
        &[
            "SADD s a b c; SADD s a d; SCARD s; SISMEMBER s a; SISMEMBER s z; SMISMEMBER s a z b; SMEMBERS s; SREM s a z; SREM s b c d; EXISTS s; SCARD nokey; SMEMBERS nokey",
            "SADD s 3 1 2 10; SMEMBERS s; OBJECT ENCODING s; SADD s x; OBJECT ENCODING s; SSCAN s 0 COUNT 100",
            "SADD a 1 2 3 4; SADD b 3 4 5; SADD c 4 6; SINTER a b; SINTER a b c; SINTER a nokey; SUNION a b; SDIFF a b; SDIFF a b c; SDIFF nokey a",
            "SADD a 1 2 3; SADD b 2 3 4; SINTERSTORE d a b; SMEMBERS d; SUNIONSTORE d a b; SMEMBERS d; SDIFFSTORE d a b; SMEMBERS d; SINTERSTORE d a nokey; EXISTS d; SET str v; SINTERSTORE str a b; TYPE str",
            "SADD a 1 2 3; SADD b 2 3 4; SINTERCARD 2 a b; SINTERCARD 2 a b LIMIT 1; SINTERCARD 0 a; SINTERCARD 3 a b; SINTERCARD 2 a b LIMIT -1; SINTERCARD 2 a b FOO; SINTERCARD x a",
            "SADD a x y; SMOVE a b x; SMEMBERS a; SMEMBERS b; SMOVE a b nope; SMOVE nokey b x; SET s v; SMOVE a s y; SMOVE a a y",
            "SADD s only; SPOP s; SPOP s; SADD t 1 2 3; SPOP t 5; SPOP t 0; SPOP t -1; SPOP nokey 2; SRANDMEMBER nokey; SRANDMEMBER nokey 3",
            "SADD s a b c; SRANDMEMBER s 0; SRANDMEMBER s 10; SRANDMEMBER s -5; SRANDMEMBER s x",
            "SET str v; SADD str a; SMEMBERS str; SINTER str; SUNION a str; SCARD str",
        ],
    )
    .await;
}

#[tokio::test]
async fn sorted_sets_match_redis() {
    check(
        "zsets",
        &[
            "ZADD z 1 a 2 b 3 c; ZADD z 4 a; ZRANGE z 0 -1 WITHSCORES; ZCARD z; ZSCORE z a; ZSCORE z nope; ZMSCORE z a nope c; ZRANK z b; ZREVRANK z b; ZRANK z nope",
            "ZADD z NX 1 a; ZADD z NX 2 a; ZADD z XX 3 a; ZADD z XX 1 b; ZADD z CH 5 a 1 c; ZADD z GT 1 a; ZADD z LT 1 a; ZADD z GT CH 10 a; ZRANGE z 0 -1 WITHSCORES",
            "ZADD z NX XX 1 a; ZADD z GT LT 1 a; ZADD z NX GT 1 a; ZADD z INCR 1 a 2 b; ZADD z 1; ZADD z x a; ZADD z; ZADD z 1 a 2; ZADD z nan a",
            "ZADD z INCR 5 a; ZADD z INCR 1.5 a; ZADD z NX INCR 1 a; ZADD z XX INCR 1 nope; ZINCRBY z 2 a; ZINCRBY z x a; ZADD z inf b; ZINCRBY z -inf b; ZSCORE z a; ZADD z 1.1 f; ZSCORE z f",
            "ZADD z 1 a 2 b 3 c 4 d; ZREM z a x; ZRANGE z 0 -1; ZREM z b c d; EXISTS z; ZREM nokey a",
            "ZADD z 1 a 2 b 3 c 4 d 5 e; ZRANGE z 1 3; ZRANGE z -2 -1 WITHSCORES; ZRANGE z 0 -1 REV; ZREVRANGE z 0 1 WITHSCORES; ZRANGE z 2 (4 BYSCORE; ZRANGE z (1 +inf BYSCORE LIMIT 1 2; ZRANGE z 5 1 BYSCORE REV WITHSCORES; ZRANGE z 0 -1 LIMIT 0 1; ZRANGE z x 1; ZRANGE z 0 1 FOO",
            "ZADD z 1 a 2 b 3 c; ZRANGEBYSCORE z -inf +inf; ZRANGEBYSCORE z (1 3 WITHSCORES; ZRANGEBYSCORE z 1 3 LIMIT 1 1; ZREVRANGEBYSCORE z 3 1; ZREVRANGEBYSCORE z +inf -inf WITHSCORES LIMIT 0 2; ZRANGEBYSCORE z x 1; ZRANGEBYSCORE z 1 3 LIMIT -1 2; ZCOUNT z 1 2; ZCOUNT z (1 +inf; ZCOUNT z a b",
            "ZADD z 0 a 0 b 0 c 0 d; ZRANGEBYLEX z - +; ZRANGEBYLEX z [b (d; ZREVRANGEBYLEX z + - LIMIT 1 2; ZRANGE z [a [c BYLEX; ZRANGE z (d - BYLEX REV; ZRANGE z - + BYLEX WITHSCORES; ZLEXCOUNT z - +; ZLEXCOUNT z [b +; ZRANGEBYLEX z a c; ZLEXCOUNT z a b",
            "ZADD z 1 a 2 b 3 c 4 d; ZRANGESTORE dst z 1 2; ZRANGE dst 0 -1 WITHSCORES; ZRANGESTORE dst z 10 20; EXISTS dst; ZRANGESTORE dst z 0 -1 WITHSCORES; ZRANGESTORE dst z (1 3 BYSCORE LIMIT 0 1; ZRANGE dst 0 -1",
            "ZADD z 1 a 2 b 3 c 4 d 5 e; ZREMRANGEBYRANK z 0 1; ZRANGE z 0 -1; ZREMRANGEBYSCORE z (3 4; ZRANGE z 0 -1; ZADD y 0 a 0 b 0 c; ZREMRANGEBYLEX y [a (c; ZRANGE y 0 -1; ZREMRANGEBYSCORE z x 1; ZREMRANGEBYLEX y a b; ZREMRANGEBYRANK nokey 0 1",
            "ZADD a 1 x 2 y; ZADD b 3 y 4 z; ZUNION 2 a b WITHSCORES; ZINTER 2 a b WITHSCORES; ZDIFF 2 a b WITHSCORES; ZUNION 2 a b WEIGHTS 2 3 AGGREGATE MAX WITHSCORES; ZINTER 2 a b AGGREGATE MIN WITHSCORES; ZUNION 0 a; ZUNION 3 a b; ZUNION 2 a b WEIGHTS 1; ZUNION 2 a b WEIGHTS 1 x; ZUNION 2 a b AGGREGATE AVG; ZDIFF 2 a b WEIGHTS 1 1",
            "ZADD a 1 x 2 y; SADD s y w; ZUNIONSTORE d 2 a s; ZRANGE d 0 -1 WITHSCORES; ZINTERSTORE d 2 a s; ZRANGE d 0 -1 WITHSCORES; ZDIFFSTORE d 2 a s; ZRANGE d 0 -1 WITHSCORES; ZINTERSTORE d 2 a nokey; EXISTS d; SET str v; ZUNION 2 a str; ZINTERCARD 2 a s; ZINTERCARD 2 a s LIMIT 1; ZINTERCARD 0 a; ZINTERCARD x a; ZINTERCARD 3 a; ZINTERCARD 1 a LIMIT -1",
            "ZADD z 1 a 2 b 3 c 4 d; ZPOPMIN z; ZPOPMAX z; ZPOPMIN z 5; ZPOPMIN z; ZPOPMIN nokey 2; ZPOPMIN z -1; ZADD z 1 a; ZPOPMAX z 0",
            "HELLO 3; ZADD z 1 a 2 b 3 c; ZPOPMIN z; ZPOPMAX z 2; ZADD z 1.5 a 2 b; ZRANGE z 0 -1 WITHSCORES; ZSCORE z a; ZMSCORE z a b nope; ZINCRBY z 1 a; ZUNION 1 z WITHSCORES; ZMPOP 1 z MIN COUNT 1; BZPOPMIN z 0",
            "ZADD a 1 x 2 y; ZADD b 5 z; ZMPOP 2 nokey a MAX COUNT 5; ZMPOP 1 b MIN; ZMPOP 1 b MIN; ZMPOP 0 a MIN; ZMPOP 1 a FOO; ZMPOP 1 a MIN COUNT 0; ZADD c 1 q; BZPOPMAX c 0; BZPOPMIN nokey 0.01; BZMPOP 0.01 1 nokey MIN; BZPOPMIN c x",
            "ZADD z 1 a 2 b; ZSCAN z 0; ZSCAN z 0 MATCH a; ZSCAN nokey 0; OBJECT ENCODING z; ZRANDMEMBER nokey; ZRANDMEMBER z 0; ZRANDMEMBER z 1 FOO; ZRANDMEMBER z 5 WITHSCORES",
            "SET s v; ZADD s 1 a; ZRANGE s 0 -1; ZSCORE s a; ZCARD s; ZPOPMIN s; ZINCRBY s 1 a",
        ],
    )
    .await;
}

#[tokio::test]
async fn transactions_match_redis() {
    check(
        "transactions",
        &[
            "MULTI; SET a 1; INCR a; GET a; EXEC; GET a",
            "MULTI; SET a 1; GET; EXEC; GET a",
            "MULTI; SET a 1; NOSUCH; EXEC",
            "MULTI; MULTI; SET a 1; EXEC",
            "EXEC; DISCARD; MULTI; SET a 1; DISCARD; GET a; EXEC",
            "MULTI; WATCH a; EXEC",
            "MULTI; SET s v; LPUSH s a; INCR s; EXEC",
            "WATCH a; SET a 1; MULTI; GET a; EXEC",
            "WATCH a; MULTI; GET a; EXEC; UNWATCH",
            "SET a 1; WATCH a; UNWATCH; SET a 2; MULTI; GET a; EXEC",
            "MULTI; SELECT 1; SET x 1; EXEC; GET x; SELECT 0; GET x",
            "MULTI; BLPOP nokey 0; EXEC",
        ],
    )
    .await;
}

#[tokio::test]
async fn server_commands_match_redis() {
    check(
        "server",
        &[
            "CONFIG GET maxmemory; CONFIG SET maxmemory 10mb; CONFIG GET maxmemory; CONFIG SET maxmemory abc; CONFIG SET foo bar; CONFIG GET nosuch",
            "CONFIG SET maxmemory-policy allkeys-lru; CONFIG GET maxmemory-policy; CONFIG SET maxmemory-policy abc; CONFIG GET maxmemory*; CONFIG SET hz abc; CONFIG SET appendonly maybe",
            "CONFIG SET maxmemory 1 maxmemory 2; CONFIG SET maxmemory; CONFIG GET; CONFIG SET maxmemory 0 maxmemory-policy volatile-ttl; CONFIG GET maxmemory maxmemory-policy; CONFIG SET loglevel abc; CONFIG RESETSTAT; CONFIG GET *lfu*",
            "HELLO 3; CONFIG GET maxmemory; CONFIG GET maxmemory-*",
            "COMMAND COUNT; COMMAND GETKEYS SET a b; COMMAND GETKEYS GET a b; COMMAND GETKEYS PING x; COMMAND GETKEYS nosuch a; COMMAND GETKEYS MSET a 1 b 2; COMMAND LIST FILTERBY PATTERN xa*",
            "PUBSUB CHANNELS; PUBSUB NUMPAT; PUBSUB NUMSUB a b; PUBSUB NUMSUB; PUBLISH ch m; PUBSUB FOO",
            "CLIENT UNBLOCK x; CLIENT UNBLOCK 99 FOO; CLIENT UNBLOCK 999999; CLIENT KILL ID x; CLIENT KILL 1.2.3.4:5; CLIENT KILL FOO bar; CLIENT KILL ID 999999; CLIENT LIST TYPE foo; CLIENT LIST ID x",
            "ROLE; MEMORY USAGE nokey; MEMORY USAGE nokey FOO; MEMORY USAGE nokey SAMPLES x",
            "TIME; HELLO 3; ECHO x; PING; PING m; OBJECT FREQ nokey; OBJECT IDLETIME nokey; SET k v; OBJECT FREQ k; OBJECT IDLETIME k",
            // Switching LRU -> LFU at runtime leaves Redis reading LRU clock
            // bits as a counter (time-dependent), so keys are made after it.
            "CONFIG SET maxmemory-policy allkeys-lfu; SET k v; OBJECT IDLETIME k; OBJECT FREQ k; GET k; OBJECT FREQ k",
        ],
    )
    .await;
}

/// Runs `(client, command)` steps over two clients of each server.
async fn check_two_clients(family: &str, steps: &[(usize, &str)]) {
    let server = RedisServer::new();
    let mut a = Pair::new(&server);
    a.reset().await;
    let mut b = a.another(&server);
    let mut mismatches = Vec::new();
    for (who, cmd) in steps {
        if let Some(ms) = cmd.strip_prefix("SLEEP ") {
            // Both sides run on the wall clock: let a short TTL pass.
            tokio::time::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0))).await;
            continue;
        }
        let p = if *who == 0 { &mut a } else { &mut b };
        p.run_seq(&parse(cmd), &mut mismatches).await;
    }
    assert!(
        mismatches.is_empty(),
        "{family}: {} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn watch_sees_other_clients_writes_like_redis() {
    check_two_clients(
        "watch",
        &[
            (0, "WATCH k"),
            (1, "SET k 1"),
            (0, "MULTI; GET k; EXEC"),
            (0, "WATCH k"),
            (1, "GET k"),
            (0, "MULTI; SET k 2; EXEC"),
            (0, "SET w 1; WATCH w nokey"),
            (1, "FLUSHDB"),
            (0, "MULTI; PING; EXEC"),
            (0, "WATCH nokey"),
            (1, "FLUSHALL"),
            (0, "MULTI; PING; EXEC"),
            (0, "SET e 1; WATCH e"),
            (1, "EXPIRE e 100"),
            (0, "MULTI; PING; EXEC"),
            (0, "SELECT 1; WATCH s; SELECT 0"),
            (1, "SET s 1"),
            (0, "MULTI; PING; EXEC"),
            (0, "WATCH q"),
            (1, "RPUSH q a; LPOP q"),
            (0, "MULTI; PING; EXEC; CLIENT GETNAME"),
            // A watched key that expires fails EXEC even if nobody touched
            // it; one already expired at WATCH time does not.
            (0, "SET t v PX 100; WATCH t"),
            (0, "SLEEP 150"),
            (0, "MULTI; PING; EXEC"),
            (0, "SET t2 v PX 50"),
            (0, "SLEEP 80"),
            (0, "WATCH t2"),
            (1, "GET t2"),
            (0, "MULTI; PING; EXEC"),
            (0, "SET t3 v PX 100; WATCH t3"),
            (0, "SLEEP 150"),
            (1, "GET t3"),
            (0, "MULTI; PING; EXEC"),
        ],
    )
    .await;
}

#[tokio::test]
async fn pubsub_between_clients_matches_redis() {
    let server = RedisServer::new();
    let mut sub = Pair::new(&server);
    let mut publisher = sub.another(&server);
    let mut mismatches = Vec::new();
    for (p, cmd) in [
        (&mut sub, "SUBSCRIBE ch other; PSUBSCRIBE c*"),
        (
            &mut publisher,
            "PUBLISH ch hello; PUBSUB NUMPAT; PUBSUB CHANNELS c*",
        ),
    ] {
        p.run_seq(&parse(cmd), &mut mismatches).await;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    for _ in 0..2 {
        let theirs = sub.redis.read();
        let ours = sub.session.pushes().recv().await.expect("a push frame");
        assert_eq!(theirs, ours);
    }
    // A bare UNSUBSCRIBE lists channels in Redis's dict order (arbitrary),
    // so one is dropped by name first and the bare form has one left.
    sub.run_seq(&parse("GET k; PING; UNSUBSCRIBE other nope; UNSUBSCRIBE; PUNSUBSCRIBE; UNSUBSCRIBE; HELLO 3; SUBSCRIBE x"), &mut mismatches).await;
    publisher
        .run_seq(&parse("PUBLISH x m"), &mut mismatches)
        .await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let theirs = sub.redis.read();
    let ours = sub.session.pushes().recv().await.expect("a push frame");
    assert_eq!(theirs, ours);
}

#[tokio::test]
async fn sharded_pubsub_between_clients_matches_redis() {
    let server = RedisServer::new();
    let mut sub = Pair::new(&server);
    let mut publisher = sub.another(&server);
    let mut mismatches = Vec::new();
    for (p, cmd) in [
        (&mut sub, "SSUBSCRIBE sh other; SUBSCRIBE sh"),
        (
            &mut publisher,
            "SPUBLISH sh hello; PUBLISH sh plain; SPUBLISH nobody x; PUBSUB SHARDCHANNELS s*; PUBSUB SHARDCHANNELS o*; PUBSUB SHARDNUMSUB sh nobody; PUBSUB NUMSUB sh",
        ),
    ] {
        p.run_seq(&parse(cmd), &mut mismatches).await;
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // smessage from SPUBLISH, message from PUBLISH: two namespaces.
    for _ in 0..2 {
        let theirs = sub.redis.read();
        let ours = sub.session.pushes().recv().await.expect("a push frame");
        assert_eq!(theirs, ours);
    }
    sub.run_seq(
        &parse("GET k; SUNSUBSCRIBE other nope; SUNSUBSCRIBE; SUNSUBSCRIBE; UNSUBSCRIBE; RESET; SSUBSCRIBE a; RESET"),
        &mut mismatches,
    )
    .await;
    publisher
        .run_seq(
            &parse("PUBSUB SHARDCHANNELS; SPUBLISH a m"),
            &mut mismatches,
        )
        .await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn scan_visits_every_key_like_redis() {
    let server = RedisServer::new();
    let mut p = Pair::new(&server);
    p.reset().await;
    let mut mset = vec![Bytes::from_static(b"MSET")];
    for i in 0..300 {
        mset.push(Bytes::from(format!("key:{i}")));
        mset.push(Bytes::from(if i % 3 == 0 { "v" } else { "w" }));
    }
    p.run(&mset).await;
    p.run(&common::args(&["SADD", "key:set", "m"])).await;
    for extra in [
        &[][..],
        &["MATCH", "key:1*"],
        &["TYPE", "set"],
        &["MATCH", "nomatch*"],
    ] {
        let mut seen: [Vec<Bytes>; 2] = [Vec::new(), Vec::new()];
        let mut cursors = [Bytes::from_static(b"0"), Bytes::from_static(b"0")];
        let mut done = [false, false];
        let mut rounds = 0;
        while !(done[0] && done[1]) && rounds < 1000 {
            rounds += 1;
            for side in 0..2 {
                if done[side] {
                    continue;
                }
                let mut cmd = vec![
                    Bytes::from_static(b"SCAN"),
                    cursors[side].clone(),
                    Bytes::from_static(b"COUNT"),
                    Bytes::from_static(b"17"),
                ];
                cmd.extend(extra.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())));
                let reply = if side == 0 {
                    p.redis.cmd(&cmd)
                } else {
                    p.store.execute(&mut p.session, cmd).await.reply
                };
                let resp::Frame::Array(parts) = reply else {
                    panic!("SCAN reply {reply:?}")
                };
                let (resp::Frame::Bulk(c), resp::Frame::Array(keys)) = (&parts[0], &parts[1])
                else {
                    panic!("SCAN parts {parts:?}")
                };
                seen[side].extend(
                    keys.iter()
                        .filter_map(|k| k.as_bytes().map(Bytes::copy_from_slice)),
                );
                done[side] = &c[..] == b"0";
                cursors[side] = c.clone();
            }
        }
        for s in seen.iter_mut() {
            s.sort();
            s.dedup();
        }
        assert!(done[0] && done[1], "both scans end");
        assert_eq!(seen[0], seen[1], "SCAN {extra:?} visits the same keys");
    }
}

/// INFO's values differ between two servers (pids, uptimes, memory), so
/// this checks structure: the sections and the fields clients and tools
/// read exist in both, and the keyspace line counts the same keys.
#[tokio::test]
async fn info_has_redis_sections_and_fields() {
    let server = RedisServer::new();
    let mut p = Pair::new(&server);
    p.reset().await;
    p.run_seq(
        &parse("SET a 1; SET b 2 EX 100; SELECT 2; SET c 3; SELECT 0"),
        &mut Vec::new(),
    )
    .await;
    let (theirs, ours) = p.run(&common::args(&["INFO"])).await;
    let text =
        |f: &resp::Frame| String::from_utf8_lossy(f.as_bytes().unwrap_or_default()).into_owned();
    let (theirs, ours) = (text(&theirs[0]), text(&ours[0]));
    for field in [
        "# Server",
        "redis_version:",
        "redis_mode:",
        "run_id:",
        "tcp_port:",
        "uptime_in_seconds:",
        "# Clients",
        "connected_clients:",
        "blocked_clients:",
        "# Memory",
        "used_memory:",
        "used_memory_human:",
        "maxmemory:",
        "maxmemory_policy:",
        "used_memory_startup:",
        "number_of_cached_scripts:",
        "# Persistence",
        "loading:0",
        "rdb_changes_since_last_save:",
        "# Stats",
        "total_connections_received:",
        "total_commands_processed:",
        "expired_keys:",
        "evicted_keys:",
        "keyspace_hits:",
        "keyspace_misses:",
        "# Replication",
        "role:master",
        "# Keyspace",
        "db0:keys=2,expires=1,",
        "db2:keys=1,expires=0,",
    ] {
        assert!(theirs.contains(field), "redis INFO lacks {field}");
        assert!(ours.contains(field), "store INFO lacks {field}:\n{ours}");
    }
    assert!(ours.contains("redis_version:7.0.15\r\n"));
    let (theirs, ours) = p.run(&common::args(&["INFO", "keyspace"])).await;
    assert_eq!(
        text(&theirs[0]).lines().next(),
        text(&ours[0]).lines().next()
    );
    assert!(
        !text(&ours[0]).contains("# Server"),
        "INFO keyspace has only that section"
    );
}

/// With `notify-keyspace-events KEA`, every write publishes the same
/// keyspace and keyevent messages, in the same order, as Redis.
#[tokio::test]
async fn keyspace_notifications_match_redis() {
    keyspace_notifications("KEA").await;
}

/// `n` adds a `new` event whenever a key is created.
#[tokio::test]
async fn new_key_notifications_match_redis() {
    keyspace_notifications("KEAn").await;
}

async fn keyspace_notifications(flags: &str) {
    let server = RedisServer::new();
    let mut sub = Pair::new(&server);
    sub.reset().await;
    let mut writer = sub.another(&server);
    let mut mismatches = Vec::new();
    writer
        .run_seq(
            &parse(&format!(
                "CONFIG SET notify-keyspace-events {flags}; CONFIG GET notify-keyspace-events"
            )),
            &mut mismatches,
        )
        .await;
    sub.run_seq(&parse("PSUBSCRIBE __key*__:*"), &mut mismatches)
        .await;
    let script = "SET k v; SET k v EX 100; EXPIRE k 200; PERSIST k; DEL k nokey; INCR c; INCRBYFLOAT c 1.5; APPEND c x; \
                  SETRANGE c 1 y; SETBIT c 1 1; GETSET c z; GETDEL c; LPUSH l a b; RPOP l; LPOP l; RPUSH l a b c; LSET l 0 x; \
                  LREM l 1 b; LINSERT l BEFORE c w; LTRIM l 0 0; LMOVE l l2 LEFT RIGHT; HSET h f v g w; HINCRBY h n 1; \
                  HINCRBYFLOAT h n 1.5; HDEL h f g n; SADD s a b; SREM s a; SMOVE s s2 b; SADD s x; SINTERSTORE d s s; \
                  SUNIONSTORE d nokey; ZADD z 1 a 2 b; ZADD z 1 a; ZINCRBY z 1 a; ZADD z INCR 1 b; ZREM z a; ZPOPMIN z; \
                  ZADD z 1 a 2 b 3 c; ZREMRANGEBYRANK z 0 0; ZUNIONSTORE u 1 z; ZRANGESTORE r z 0 0; MSET a 1 b 2; \
                  RENAME a a2; COPY a2 a3; MOVE a3 1; SET e v PX 1; SETEX f 100 v; GETEX f PERSIST; GETEX f EX 50; \
                  EXPIRE f 0; SET g v; EXPIRE g -1; FLUSHALL";
    writer.run_seq(&parse(script), &mut mismatches).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    writer.run_seq(&parse("GET e"), &mut mismatches).await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // A PING through the subscriber is answered after every message Redis
    // queued for it: read up to its reply.
    let (theirs_pong, _) = sub.run(&common::args(&["PING"])).await;
    let mut theirs = Vec::new();
    let mut first = theirs_pong[0].clone();
    loop {
        if let resp::Frame::Array(items) = &first {
            if items.first().and_then(|f| f.as_bytes()) == Some(b"pong") {
                break;
            }
        }
        theirs.push(first);
        first = sub.redis.read();
    }
    let mut ours = Vec::new();
    while let Ok(f) = sub.session.pushes().try_recv() {
        ours.push(f);
    }
    let show = |v: &[resp::Frame]| {
        v.iter()
            .map(|f| match f {
                resp::Frame::Array(items) => items
                    .iter()
                    .skip(2)
                    .map(|i| String::from_utf8_lossy(i.as_bytes().unwrap_or_default()).into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(show(&theirs), show(&ours));
}
