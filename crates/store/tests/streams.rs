//! Streams against a real `redis-server`, reply for reply (RESP2 and
//! RESP3), plus the store's own guarantees: effects and snapshots rebuild
//! the same stream.
//!
//! Only inherently time-dependent numbers are masked: idle times and
//! delivery/seen times (both servers read their own clock).

mod common;

use bytes::Bytes;
use common::{parse, Pair};
use resp::Frame;
use test_support::RedisServer;

const MASKED_KEYS: &[&[u8]] = &[b"idle", b"seen-time"];

/// Replaces time-dependent numbers with 0.
fn mask(f: &Frame, cmd: &str) -> Frame {
    match f {
        Frame::Map(pairs) => Frame::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), mask_value(k, v, cmd)))
                .collect(),
        ),
        Frame::Array(items) if cmd == "xpending" => Frame::Array(
            items
                .iter()
                .map(|e| match e {
                    Frame::Array(inner) if inner.len() == 4 => {
                        let mut inner = inner.clone();
                        inner[2] = Frame::Integer(0);
                        Frame::Array(inner)
                    }
                    other => other.clone(),
                })
                .collect(),
        ),
        Frame::Array(items) if cmd == "xinfo" => {
            // RESP2 maps are flat (key, value) arrays; lists of maps are
            // arrays of those.
            let flat_map = items.len() % 2 == 0
                && items.iter().step_by(2).all(|k| matches!(k, Frame::Bulk(_)))
                && !items.is_empty()
                && items
                    .first()
                    .and_then(|k| k.as_bytes())
                    .is_some_and(|k| k.iter().all(|c| c.is_ascii_lowercase() || *c == b'-'));
            if flat_map {
                let mut out = Vec::new();
                for pair in items.chunks(2) {
                    out.push(pair[0].clone());
                    out.push(mask_value(&pair[0], &pair[1], cmd));
                }
                Frame::Array(out)
            } else {
                Frame::Array(items.iter().map(|i| mask(i, cmd)).collect())
            }
        }
        other => other.clone(),
    }
}

fn mask_value(k: &Frame, v: &Frame, cmd: &str) -> Frame {
    let key = k.as_bytes().unwrap_or_default();
    if MASKED_KEYS.contains(&key) {
        return Frame::Integer(0);
    }
    if key == b"pending" {
        if let Frame::Array(entries) = v {
            return Frame::Array(
                entries
                    .iter()
                    .map(|e| match e {
                        Frame::Array(inner) if inner.len() >= 3 => {
                            let mut inner = inner.clone();
                            let t = inner.len() - 2;
                            inner[t] = Frame::Integer(0);
                            Frame::Array(inner)
                        }
                        other => other.clone(),
                    })
                    .collect(),
            );
        }
    }
    mask(v, cmd)
}

async fn check(family: &str, seqs: &[&str]) {
    let server = RedisServer::new();
    let mut pair = Pair::new(&server);
    let mut mismatches = Vec::new();
    for resp3 in [false, true] {
        for seq in seqs {
            pair.reset().await;
            let mut cmds = parse(seq);
            if resp3 {
                cmds.insert(0, common::args(&["HELLO", "3"]));
            }
            for cmd in &cmds {
                let name = String::from_utf8_lossy(&cmd[0]).to_ascii_lowercase();
                let (theirs, ours) = pair.run(cmd).await;
                let ok = name == "hello"
                    || (theirs.len() == ours.len()
                        && theirs
                            .iter()
                            .zip(&ours)
                            .all(|(t, o)| mask(t, &name) == mask(o, &name)));
                if !ok {
                    let shown: Vec<String> = cmd
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    mismatches.push(format!(
                        "resp3={resp3} {shown:?}\n    redis: {theirs:?}\n    store: {ours:?}"
                    ));
                }
            }
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
async fn xadd_xrange_xdel_xtrim_match_redis() {
    check(
        "streams basic",
        &[
            "XADD s 1-1 a 1; XADD s 1-2 b 2 c 3; XADD s 1-* d 4; XADD s 2-* e 5; XLEN s; XRANGE s - +; XREVRANGE s + -; TYPE s; OBJECT ENCODING s",
            "XADD s 0-0 a 1; XADD s 0 a 1; XADD s 0-1 a 1; XADD s 0-1 a 1; XADD s 0-* a 1; XADD s 5 a; XADD s 5 a 1 b; XADD s abc a 1; XADD s - a 1; XADD s + a 1; XADD s 1-x a 1",
            "XADD s NOMKSTREAM 1-1 a 1; EXISTS s; XADD s 1-1 a 1; XADD s NOMKSTREAM 2-1 a 1; XLEN s",
            "SET k v; XADD k 1-1 a 1; XLEN k; XRANGE k - +; XLEN nokey; XRANGE nokey - +; XREVRANGE nokey + -",
            "XADD s 1-1 a 1; XADD s 2-1 a 1; XADD s 3-1 a 1; XRANGE s (1-1 +; XRANGE s - (3-1; XRANGE s (1-1 (3-1; XRANGE s 2 2; XRANGE s - + COUNT 2; XRANGE s - + COUNT 0; XRANGE s - + COUNT -1; XREVRANGE s + - COUNT 1; XRANGE s - + COUNT; XRANGE s - + LIMIT 1; XRANGE s (- +; XRANGE s - (+; XRANGE s (18446744073709551615-18446744073709551615 +; XRANGE s - (0-0; XRANGE s x +",
            "XADD s 1-1 a 1; XADD s 2-1 a 1; XADD s 3-1 a 1; XDEL s 2-1 9-9; XDEL s 2-1; XDEL s x; XDEL nokey 1-1; XLEN s; XINFO STREAM s; XDEL s 1-1; XINFO STREAM s; XDEL s 3-1; XINFO STREAM s; XADD s 4-1 a 1; XINFO STREAM s",
            "XADD s MAXLEN 2 1-1 a 1; XADD s MAXLEN 2 2-1 a 1; XADD s MAXLEN 2 3-1 a 1; XRANGE s - +; XADD s MINID 3 4-1 a 1; XRANGE s - +; XADD s MAXLEN = 1 5-1 a 1; XRANGE s - +; XADD s MAXLEN ~ 0 6-1 a 1; XRANGE s - +; XINFO STREAM s",
            "XADD s MAXLEN -1 1-1 a 1; XADD s MAXLEN x 1-1 a 1; XADD s MAXLEN 1 MINID 1 1-1 a 1; XADD s LIMIT 10 1-1 a 1; XADD s MAXLEN 1 LIMIT 10 1-1 a 1; XADD s MAXLEN ~ 1 LIMIT -1 1-1 a 1; XADD s LIMIT 0 1-1 a 1; XADD s MINID ~ x 1-1 a 1; EXISTS s",
            "XTRIM s MAXLEN 1; XADD s 1-1 a 1; XADD s 2-1 a 1; XADD s 3-1 a 1; XTRIM s; XTRIM s FOO 1; XTRIM s MAXLEN 1 LIMIT 1; XTRIM s MAXLEN ~ 1; XLEN s; XTRIM s MINID 3; XRANGE s - +; XTRIM s MAXLEN 0; XINFO STREAM s; XADD s 4-1 a 1; XINFO STREAM s",
            "XADD s 99999999999999-5 a 1; XADD s * b 2; XADD s 99999999999999-* c 3; XADD s 5-18446744073709551615 d 4; XADD s 99999999999999-18446744073709551615 e 5; XADD s 99999999999999-* f 6; XADD s * g 7; XRANGE s - +",
            "XADD s 18446744073709551615-18446744073709551615 a 1; XADD s * a 1; XADD s 1-1 a 1; XSETID s 18446744073709551615-18446744073709551615; XINFO STREAM s; XADD t 18446744073709551615-* a 1; XADD t 18446744073709551615-* a 1",
            "XADD s 1-1 a 1; XRANGE s - + COUNT 99999999999999999; XRANGE s - + COUNT 9223372036854775807; XREAD COUNT 9223372036854775807 STREAMS s 0; XADD s 00002-0001 b 2; XADD s +3-1 c 3; XRANGE s -1 +; XRANGE s 1-1- +; XDEL s 00002-0001; XLEN s",
            "XADD s 1-1 a 1; SET str v; SCAN 0 TYPE stream; XGROUP CREATE s g 0; XREADGROUP GROUP g c STREAMS s >; COPY s d; XINFO STREAM d FULL; RENAME d e; TYPE e; OBJECT ENCODING e; SORT s; LPUSH s x; GET s; EXISTS s e; DEL s; XLEN s; XINFO STREAM e",
            "XSETID s 1-1; XADD s 5-1 a 1; XSETID s 4-1; XSETID s 6-1; XADD s 6-1 a 1; XSETID s 7-1 ENTRIESADDED 0; XSETID s 7-1 ENTRIESADDED -1; XSETID s 7-1 MAXDELETEDID 8-1; XSETID s 9-1 ENTRIESADDED 10 MAXDELETEDID 3-3; XINFO STREAM s; XSETID s 9-1 FOO; XSETID s x",
        ],
    )
    .await;
}

#[tokio::test]
async fn approximate_trims_follow_redis_nodes() {
    let mut adds = String::new();
    for i in 1..=350 {
        adds.push_str(&format!("XADD s {i}-1 f {i}; "));
    }
    let mut big = String::new();
    for i in 1..=60 {
        big.push_str(&format!(
            "XADD b {i}-1 field{} {}; ",
            i % 3,
            "v".repeat(40 + i)
        ));
    }
    let seqs = [
        format!("{adds}XINFO STREAM s; XTRIM s MAXLEN ~ 120; XLEN s; XTRIM s MINID ~ 330; XLEN s; XINFO STREAM s; XTRIM s MAXLEN ~ 5 LIMIT 100; XLEN s"),
        format!("{adds}XDEL s 101-1 150-1 201-1; XTRIM s MAXLEN ~ 200; XLEN s; XADD s MAXLEN ~ 10 LIMIT 50 400-1 f v; XLEN s; XINFO STREAM s FULL COUNT 2"),
        format!("{big}XINFO STREAM b; XTRIM b MAXLEN ~ 30; XLEN b; XINFO STREAM b"),
        // Node limits follow CONFIG (put back at the end: reset keeps them).
        format!("CONFIG SET stream-node-max-entries 7; CONFIG SET stream-node-max-bytes 300; {adds}XINFO STREAM s; XTRIM s MAXLEN ~ 100; XLEN s; XTRIM s MINID ~ 200; XLEN s; CONFIG SET stream-node-max-entries 0; XADD s MAXLEN ~ 3 999-1 a b; XLEN s; CONFIG SET stream-node-max-entries 100; CONFIG SET stream-node-max-bytes 4096"),
    ];
    let refs: Vec<&str> = seqs.iter().map(|s| s.as_str()).collect();
    check("streams approx trim", &refs).await;
}

#[tokio::test]
async fn xread_matches_redis() {
    check(
        "streams xread",
        &[
            "XADD a 1-1 f 1; XADD a 2-1 f 2; XADD b 1-1 g 1; XREAD STREAMS a b 0 0; XREAD COUNT 1 STREAMS a b 1-1 0-0; XREAD STREAMS a $; XREAD STREAMS a nokey 0 0; XREAD STREAMS nokey 0",
            "XREAD STREAMS a; XREAD STREAMS a b 0; XREAD COUNT x STREAMS a 0; XREAD FOO STREAMS a 0; XREAD GROUP g c STREAMS a 0; XREAD NOACK STREAMS a 0; XREAD STREAMS a >; XREAD STREAMS a x; XREAD BLOCK x STREAMS a 0; XREAD BLOCK -1 STREAMS a 0",
            "SET k v; XREAD STREAMS k 0; XADD a 1-1 f 1; XREAD BLOCK 10 STREAMS a $; XREAD COUNT -5 STREAMS a 0",
            "XADD a 1-1 f 1; MULTI; XREAD BLOCK 0 STREAMS a $; EXEC",
        ],
    )
    .await;
}

#[tokio::test]
async fn consumer_groups_match_redis() {
    check(
        "streams groups",
        &[
            "XGROUP CREATE s g $; XGROUP CREATE s g $ MKSTREAM; XGROUP CREATE s g $ MKSTREAM; XINFO STREAM s; XINFO GROUPS s; XGROUP CREATE s g2 0 ENTRIESREAD 5; XGROUP CREATE s g3 0 ENTRIESREAD -2; XGROUP CREATE s g3 0 FOO; XGROUP CREATE s g3 x; XINFO GROUPS s",
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XADD s 3-1 c 3; XGROUP CREATE s g 0; XREADGROUP GROUP g c1 COUNT 1 STREAMS s >; XREADGROUP GROUP g c2 STREAMS s >; XREADGROUP GROUP g c2 STREAMS s >; XPENDING s g; XPENDING s g - + 10; XPENDING s g - + 10 c1; XPENDING s g - + 10 nobody; XPENDING s g IDLE 0 - + 10; XINFO GROUPS s; XINFO CONSUMERS s g; XINFO STREAM s FULL",
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XGROUP CREATE s g 0; XREADGROUP GROUP g c1 STREAMS s >; XREADGROUP GROUP g c1 STREAMS s 0; XREADGROUP GROUP g c1 COUNT 1 STREAMS s 1-1; XDEL s 1-1; XREADGROUP GROUP g c1 STREAMS s 0; XPENDING s g - + 10; XACK s g 1-1 2-1 9-9; XACK s g x; XACK s nog 1-1; XACK nokey g 1-1; XPENDING s g",
            "XADD s 1-1 a 1; XGROUP CREATE s g 0; XREADGROUP GROUP g c NOACK STREAMS s >; XPENDING s g; XINFO GROUPS s; XINFO CONSUMERS s g",
            "XREADGROUP GROUP g c STREAMS s >; XADD s 1-1 a 1; XREADGROUP GROUP g c STREAMS s >; XGROUP CREATE s g 0; XREADGROUP GROUP g c STREAMS s $; XREADGROUP GROUP g c STREAMS s; XREADGROUP STREAMS s >; XREADGROUP GROUP g c BLOCK 10 STREAMS s >; XREADGROUP GROUP g c BLOCK 10 STREAMS s >",
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XGROUP CREATE s g 0; XGROUP CREATECONSUMER s g c; XGROUP CREATECONSUMER s g c; XGROUP CREATECONSUMER s nog c; XGROUP CREATECONSUMER nokey g c; XREADGROUP GROUP g c STREAMS s >; XGROUP DELCONSUMER s g c; XGROUP DELCONSUMER s g c; XPENDING s g; XGROUP SETID s g 1-1; XINFO GROUPS s; XGROUP SETID s g $ ENTRIESREAD 2; XINFO GROUPS s; XGROUP SETID s nog 0; XGROUP SETID s g 0 FOO 1; XGROUP DESTROY s g; XGROUP DESTROY s g; XINFO GROUPS s",
            "XGROUP HELP; XINFO HELP; XGROUP FOO; XINFO FOO s; XINFO STREAM nokey; XINFO GROUPS nokey; XADD s 1-1 a 1; XINFO STREAM s FOO; XINFO STREAM s FULL COUNT; XINFO STREAM s FULL FOO 1; XINFO STREAM s FULL COUNT x; XINFO CONSUMERS s nog; SET k v; XINFO STREAM k; XGROUP CREATE k g 0",
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XADD s 3-1 c 3; XDEL s 2-1; XGROUP CREATE s g 0; XINFO GROUPS s; XREADGROUP GROUP g c COUNT 1 STREAMS s >; XINFO GROUPS s; XREADGROUP GROUP g c STREAMS s >; XINFO GROUPS s; XADD s 4-1 d 4; XINFO GROUPS s; XINFO STREAM s FULL",
        ],
    )
    .await;
}

#[tokio::test]
async fn claims_match_redis() {
    check(
        "streams claims",
        &[
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XADD s 3-1 c 3; XGROUP CREATE s g 0; XREADGROUP GROUP g c1 STREAMS s >; XCLAIM s g c2 0 1-1 2-1; XPENDING s g - + 10; XCLAIM s g c2 0 1-1 JUSTID; XPENDING s g - + 10; XCLAIM s g c3 0 3-1 RETRYCOUNT 7 JUSTID; XPENDING s g - + 10; XCLAIM s g c3 100000 2-1; XCLAIM s g c3 0 9-9 FORCE; XDEL s 2-1; XCLAIM s g c3 0 2-1; XPENDING s g; XINFO CONSUMERS s g",
            "XADD s 1-1 a 1; XGROUP CREATE s g $; XCLAIM s g c 0 1-1 FORCE; XPENDING s g - + 10; XCLAIM s g c 0 1-1 LASTID 5-5; XINFO GROUPS s; XCLAIM s g c x 1-1; XCLAIM s g c 0 1-1 IDLE x; XCLAIM s g c 0 1-1 TIME x; XCLAIM s g c 0 1-1 RETRYCOUNT x; XCLAIM s g c 0 1-1 LASTID x; XCLAIM s g c 0 1-1 BOGUS; XCLAIM s g c 0 1-1 FORCE 2-2; XCLAIM s nog c 0 1-1; XCLAIM nokey g c 0 1-1",
            "XADD s 1-1 a 1; XADD s 2-1 b 2; XADD s 3-1 c 3; XADD s 4-1 d 4; XGROUP CREATE s g 0; XREADGROUP GROUP g c1 STREAMS s >; XDEL s 2-1; XAUTOCLAIM s g c2 0 0 COUNT 2; XPENDING s g - + 10; XAUTOCLAIM s g c2 0 0 JUSTID; XAUTOCLAIM s g c3 0 (3-1; XAUTOCLAIM s g c3 1000000 0; XAUTOCLAIM s g c3 0 0 COUNT 0; XAUTOCLAIM s g c3 0 0 COUNT x; XAUTOCLAIM s g c3 x 0; XAUTOCLAIM s g c3 0 x; XAUTOCLAIM s g c3 0 0 FOO; XAUTOCLAIM s nog c 0 0; XINFO CONSUMERS s g",
        ],
    )
    .await;
}

mod replay {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use resp::Frame;
    use store::{Clock, Store, StoreConfig};

    fn manual(t: &Arc<AtomicU64>) -> Store {
        Store::new(StoreConfig {
            clock: Clock::Manual(t.clone()),
            ..StoreConfig::default()
        })
    }

    fn args(s: &str) -> Vec<Bytes> {
        s.split_whitespace()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    /// A workload touching every kind of stream effect: generated IDs,
    /// approximate trims, deletions, group reads (NOACK too), history
    /// reads, claims, auto-claims, acks and group administration.
    fn workload() -> Vec<String> {
        let mut w = Vec::new();
        for i in 0..250 {
            w.push(format!("XADD s * f {i} g {}", i * 7));
        }
        w.extend(
            [
                "XADD s MAXLEN ~ 120 * f x",
                "XADD s 9999999999999-* f y",
                "XDEL s 9999999999999-0",
                "XGROUP CREATE s g 0",
                "XGROUP CREATE s h $ MKSTREAM",
                "XGROUP CREATE t g $ MKSTREAM",
                "XREADGROUP GROUP g alice COUNT 5 STREAMS s >",
                "XREADGROUP GROUP g bob COUNT 3 STREAMS s >",
                "XREADGROUP GROUP g carol NOACK COUNT 2 STREAMS s >",
                "XREADGROUP GROUP g alice STREAMS s 0",
                "XGROUP CREATECONSUMER s g dave",
                "XTRIM s MINID ~ 0-1",
                "XAUTOCLAIM s g dave 0 0 COUNT 3",
                "XACK s g 0-0",
                "XGROUP SETID s h 0 ENTRIESREAD 3",
                "XREADGROUP GROUP h erin COUNT 4 STREAMS s >",
                "XTRIM s MAXLEN ~ 20",
                "XAUTOCLAIM s h frank 0 0",
                "XGROUP DELCONSUMER s g bob",
                "XSETID s 99999999999999-5",
                "XADD s MINID ~ 0-0 LIMIT 5 * f z",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        w
    }

    async fn info(store: &Store, key: &str) -> Frame {
        let mut s = store.session();
        store
            .execute(&mut s, args(&format!("XINFO STREAM {key} FULL COUNT 0")))
            .await
            .reply
    }

    /// XADD's reply is the ID it made, and XCLAIM needs real IDs: this
    /// turns the first pending ID and XADD replies into the arguments of
    /// later commands.
    fn rewrite(cmd: &str, ids: &[Bytes]) -> String {
        let id = |i: usize| String::from_utf8_lossy(&ids[i.min(ids.len() - 1)]).into_owned();
        cmd.replace("0-0", &id(0)).replace("0-1", &id(40))
    }

    #[tokio::test]
    async fn effects_replayed_rebuild_the_same_stream() {
        let t = Arc::new(AtomicU64::new(1_700_000_000_000));
        let a = manual(&t);
        let tb = Arc::new(AtomicU64::new(t.load(Ordering::Relaxed)));
        let b = manual(&tb);
        let mut sa = a.session();
        let mut ids: Vec<Bytes> = Vec::new();
        for (n, cmd) in workload().iter().enumerate() {
            // Several entries per millisecond, then time moves on.
            if n % 3 == 0 {
                t.fetch_add(1, Ordering::Relaxed);
            }
            let cmd = if ids.is_empty() {
                cmd.clone()
            } else {
                rewrite(cmd, &ids)
            };
            let out = a.execute(&mut sa, args(&cmd)).await;
            assert!(
                !matches!(out.reply, Frame::Error(_)),
                "{cmd}: {:?}",
                out.reply
            );
            if let Frame::Bulk(id) = &out.reply {
                ids.push(id.clone());
            }
            tb.store(t.load(Ordering::Relaxed), Ordering::Relaxed);
            for e in &out.effects {
                let r = b.apply(e.db, &e.args);
                assert!(!matches!(r, Frame::Error(_)), "{:?}: {r:?}", e.args);
            }
        }
        for key in ["s", "t"] {
            assert_eq!(info(&a, key).await, info(&b, key).await, "stream {key}");
        }
    }

    #[tokio::test]
    async fn a_replayed_xclaim_keeps_its_time_on_a_frozen_clock() {
        // The replica's copy runs with its clock stopped at 0.
        let t = Arc::new(AtomicU64::new(0));
        let s = manual(&t);
        for c in [
            "XADD k 1-1 a b",
            "XGROUP CREATE k g 0",
            "XCLAIM k g c 0 1-1 TIME 1700000000000 RETRYCOUNT 3 FORCE JUSTID LASTID 1-1",
        ] {
            let r = s.apply(0, &args(c));
            assert!(!matches!(r, Frame::Error(_)), "{c}: {r:?}");
        }
        let mut sess = s.session();
        let p = s
            .execute(&mut sess, args("XINFO STREAM k FULL"))
            .await
            .reply;
        let text = format!("{p:?}");
        assert!(
            text.contains("Integer(1700000000000), Integer(3)"),
            "{text}"
        );
    }

    #[test]
    fn what_redis_propagates_for_a_limited_trim_replays() {
        // Redis propagates `XADD … MAXLEN ~ n LIMIT l` as `MAXLEN = m LIMIT l`.
        let s = Store::new(StoreConfig::default());
        for c in [
            "XADD k 1-1 a b",
            "XADD k 2-1 a b",
            "XADD k MAXLEN = 1 LIMIT 100 3-1 a b",
            "XTRIM k MINID = 3-1 LIMIT 5",
        ] {
            let r = s.apply(0, &args(c));
            assert!(!matches!(r, Frame::Error(_)), "{c}: {r:?}");
        }
    }

    /// Replaces the values of these fields (flat RESP2 maps) with 0.
    fn mask(f: &Frame, keys: &[&[u8]]) -> Frame {
        match f {
            Frame::Array(v) => {
                let mut out = Vec::with_capacity(v.len());
                let mut i = 0;
                while i < v.len() {
                    if let Some(k) = v[i].as_bytes() {
                        if keys.contains(&k) && i + 1 < v.len() {
                            out.push(v[i].clone());
                            out.push(Frame::Integer(0));
                            i += 2;
                            continue;
                        }
                    }
                    out.push(mask(&v[i], keys));
                    i += 1;
                }
                Frame::Array(out)
            }
            other => other.clone(),
        }
    }

    #[tokio::test]
    async fn snapshot_commands_rebuild_the_same_stream() {
        let t = Arc::new(AtomicU64::new(1_700_000_000_000));
        let a = manual(&t);
        let mut sa = a.session();
        let mut ids: Vec<Bytes> = Vec::new();
        for (n, cmd) in workload().iter().enumerate() {
            if n % 3 == 0 {
                t.fetch_add(1, Ordering::Relaxed);
            }
            let cmd = if ids.is_empty() {
                cmd.clone()
            } else {
                rewrite(cmd, &ids)
            };
            let out = a.execute(&mut sa, args(&cmd)).await;
            if let Frame::Bulk(id) = &out.reply {
                ids.push(id.clone());
            }
        }
        // A pending entry whose message is gone must survive too.
        let out = a
            .execute(&mut sa, args("XREADGROUP GROUP g zed COUNT 2 STREAMS s >"))
            .await;
        assert!(matches!(out.reply, Frame::Array(_)));
        let gone = String::from_utf8_lossy(ids.last().expect("ids")).into_owned();
        a.execute(&mut sa, args(&format!("XDEL s {gone}"))).await;
        a.execute(&mut sa, args("XADD empty MAXLEN 0 5-5 a b"))
            .await;
        let tc = Arc::new(AtomicU64::new(t.load(Ordering::Relaxed)));
        let c = manual(&tc);
        for e in a.snapshot().commands() {
            let r = c.apply(e.db, &e.args);
            assert!(!matches!(r, Frame::Error(_)), "{:?}: {r:?}", e.args);
        }
        // Seen-times become the replay time, and the node layout follows
        // the replayed XADDs (as with Redis's own AOF rewrite).
        let masked: &[&[u8]] = &[b"seen-time", b"radix-tree-keys", b"radix-tree-nodes"];
        for key in ["s", "t", "empty"] {
            assert_eq!(
                mask(&info(&a, key).await, masked),
                mask(&info(&c, key).await, masked),
                "stream {key}"
            );
        }
    }
}

mod blocking {
    use std::time::Duration;

    use bytes::Bytes;
    use resp::Frame;
    use store::{Store, StoreConfig};

    fn args(s: &str) -> Vec<Bytes> {
        s.split_whitespace()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    /// Waits until a client is blocked (rather than sleeping and hoping).
    async fn until_blocked(store: &Store) {
        let mut s = store.session();
        for _ in 0..400 {
            let info = store.execute(&mut s, args("INFO clients")).await.reply;
            let text = String::from_utf8_lossy(info.as_bytes().unwrap_or_default()).into_owned();
            if text.contains("blocked_clients:1\r\n") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no client blocked");
    }

    #[tokio::test]
    async fn xread_block_dollar_wakes_on_new_entries_only() {
        let store = Store::new(StoreConfig::default());
        let mut w = store.session();
        store.execute(&mut w, args("XADD s 1-1 a 1")).await;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = store.session();
                store
                    .execute(&mut r, args("XREAD BLOCK 5000 STREAMS s $"))
                    .await
            })
        };
        until_blocked(&store).await;
        // A write that adds nothing after `$` must not end the wait early
        // with old entries.
        store.execute(&mut w, args("XGROUP CREATE s g 0")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.execute(&mut w, args("XADD s 2-1 b 2")).await;
        let out = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("woken")
            .expect("task");
        let want = Frame::Array(vec![Frame::Array(vec![
            Frame::bulk("s"),
            Frame::Array(vec![Frame::Array(vec![
                Frame::bulk("2-1"),
                Frame::Array(vec![Frame::bulk("b"), Frame::bulk("2")]),
            ])]),
        ])]);
        assert_eq!(out.reply, want);
        assert!(out.effects.is_empty());
    }

    #[tokio::test]
    async fn xreadgroup_block_is_served_and_journaled() {
        let store = Store::new(StoreConfig::default());
        let mut w = store.session();
        store
            .execute(&mut w, args("XGROUP CREATE s g $ MKSTREAM"))
            .await;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = store.session();
                store
                    .execute(&mut r, args("XREADGROUP GROUP g c BLOCK 0 STREAMS s >"))
                    .await
            })
        };
        until_blocked(&store).await;
        store.execute(&mut w, args("XADD s 7-1 k v")).await;
        let out = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("woken")
            .expect("task");
        assert!(matches!(&out.reply, Frame::Array(v) if v.len() == 1));
        let names: Vec<&[u8]> = out.effects.iter().map(|e| &e.args[0][..]).collect();
        assert_eq!(names, vec![&b"XGROUP"[..], b"XCLAIM", b"XGROUP"]);
        let p = store.execute(&mut w, args("XPENDING s g")).await.reply;
        assert!(matches!(&p, Frame::Array(v) if v[0] == Frame::Integer(1)));
    }

    /// Blocks a consumer on `s`, runs `then` from another client, and
    /// returns what the consumer got.
    async fn blocked_consumer_after(then: &str) -> Frame {
        let store = Store::new(StoreConfig::default());
        let mut w = store.session();
        store
            .execute(&mut w, args("XGROUP CREATE s g $ MKSTREAM"))
            .await;
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = store.session();
                store
                    .execute(&mut r, args("XREADGROUP GROUP g c BLOCK 0 STREAMS s >"))
                    .await
            })
        };
        until_blocked(&store).await;
        store.execute(&mut w, args(then)).await;
        tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("woken")
            .expect("task")
            .reply
    }

    #[tokio::test]
    async fn a_blocked_consumer_hears_its_group_or_key_is_gone() {
        assert_eq!(
            blocked_consumer_after("XGROUP DESTROY s g").await,
            Frame::error("NOGROUP the consumer group this client was blocked on no longer exists")
        );
        assert_eq!(
            blocked_consumer_after("DEL s").await,
            Frame::error("UNBLOCKED the stream key no longer exists")
        );
    }

    #[tokio::test]
    async fn a_woken_reader_is_served_from_one_stream() {
        let store = Store::new(StoreConfig::default());
        let mut w = store.session();
        let reader = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut r = store.session();
                store
                    .execute(&mut r, args("XREAD BLOCK 0 STREAMS a b $ $"))
                    .await
            })
        };
        until_blocked(&store).await;
        for c in ["MULTI", "XADD a 1-1 f v", "XADD b 1-1 f v", "EXEC"] {
            store.execute(&mut w, args(c)).await;
        }
        let out = tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .expect("woken")
            .expect("task");
        let want = Frame::Array(vec![Frame::Array(vec![
            Frame::bulk("a"),
            Frame::Array(vec![Frame::Array(vec![
                Frame::bulk("1-1"),
                Frame::Array(vec![Frame::bulk("f"), Frame::bulk("v")]),
            ])]),
        ])]);
        assert_eq!(out.reply, want);
    }

    #[tokio::test]
    async fn xread_block_times_out_with_a_null_array() {
        let store = Store::new(StoreConfig::default());
        let mut r = store.session();
        let out = store
            .execute(&mut r, args("XREAD BLOCK 30 STREAMS nokey $"))
            .await;
        assert_eq!(out.reply, Frame::NullArray);
    }
}

/// A tiny deterministic generator (xorshift), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

fn random_id(r: &mut Rng) -> String {
    match r.below(10) {
        0 => r.pick(&["-", "+", "0", "0-0"]).to_string(),
        1 => format!("{}", r.below(12)),
        2 => format!("({}-{}", r.below(12), r.below(3)),
        _ => format!("{}-{}", r.below(12), r.below(3)),
    }
}

fn random_stream_command(r: &mut Rng) -> String {
    let key = r.pick(&["s", "s", "s", "t"]);
    let group = r.pick(&["g", "g", "h"]);
    let consumer = r.pick(&["c1", "c2", "c3"]);
    let n = r.below(6);
    let trim = |r: &mut Rng| -> String {
        let how = r.pick(&["MAXLEN", "MINID"]);
        let op = r.pick(&["", "~ ", "= "]);
        let val = if how == "MAXLEN" {
            r.below(5).to_string()
        } else {
            format!("{}-{}", r.below(12), r.below(3))
        };
        let limit = if op == "~ " && r.chance(30) {
            format!(" LIMIT {}", r.below(3))
        } else {
            String::new()
        };
        format!("{how} {op}{val}{limit}")
    };
    match r.below(22) {
        0..=4 => {
            let id = match r.below(5) {
                0 => format!("{}-*", r.below(14)),
                1 => format!("{}", r.below(14)),
                _ => format!("{}-{}", r.below(14), r.below(4)),
            };
            let opts = if r.chance(25) {
                format!("{} ", trim(r))
            } else {
                String::new()
            };
            let nomk = if r.chance(10) { "NOMKSTREAM " } else { "" };
            let fields = if r.chance(30) { "f v g w" } else { "f v" };
            format!("XADD {key} {nomk}{opts}{id} {fields}")
        }
        5 => format!("XDEL {key} {} {}", random_id(r), random_id(r)),
        6 => format!("XTRIM {key} {}", trim(r)),
        7 => format!(
            "{} {key} {} {} COUNT {n}",
            r.pick(&["XRANGE", "XREVRANGE"]),
            random_id(r),
            random_id(r)
        ),
        8 => format!(
            "XREAD COUNT {n} STREAMS s t {} {}",
            random_id(r),
            r.pick(&["$", "0", "3-1"])
        ),
        9 => format!(
            "XGROUP CREATE {key} {group} {} {}",
            r.pick(&["$", "0", "3-1", "5"]),
            r.pick(&["", "MKSTREAM", "ENTRIESREAD 2", "ENTRIESREAD -1"])
        ),
        10 => format!(
            "XGROUP SETID {key} {group} {} {}",
            r.pick(&["$", "0", "3-1", "5"]),
            r.pick(&["", "ENTRIESREAD 1"])
        ),
        11 => format!(
            "XGROUP {} {key} {group} {consumer}",
            r.pick(&["CREATECONSUMER", "DELCONSUMER"])
        ),
        12 if r.chance(20) => format!("XGROUP DESTROY {key} {group}"),
        12..=14 => format!(
            "XREADGROUP GROUP {group} {consumer} COUNT {n} {}STREAMS {key} {}",
            if r.chance(15) { "NOACK " } else { "" },
            r.pick(&[">", ">", "0", "2-0"])
        ),
        15 => format!("XACK {key} {group} {} {}", random_id(r), random_id(r)),
        16 => match r.below(3) {
            0 => format!("XPENDING {key} {group}"),
            1 => format!("XPENDING {key} {group} - + {n}"),
            _ => format!("XPENDING {key} {group} - + {n} {consumer}"),
        },
        17 => format!(
            "XCLAIM {key} {group} {consumer} 0 {} {} {}",
            random_id(r),
            random_id(r),
            r.pick(&[
                "",
                "JUSTID",
                "FORCE",
                "RETRYCOUNT 5",
                "LASTID 9-9",
                "FORCE JUSTID",
                "TIME 1000 RETRYCOUNT 2",
                "FORCE TIME 5 LASTID 3-0",
                "IDLE 0",
            ])
        ),
        18 => format!(
            "XAUTOCLAIM {key} {group} {consumer} 0 {} COUNT {} {}",
            random_id(r),
            n + 1,
            r.pick(&["", "JUSTID"])
        ),
        19 => format!(
            "XSETID {key} {}-{} {}",
            r.below(16),
            r.below(3),
            r.pick(&["", "ENTRIESADDED 20", "MAXDELETEDID 2-0", "ENTRIESADDED 1"])
        ),
        20 => r
            .pick(&[
                "XINFO STREAM s",
                "XINFO STREAM s FULL",
                "XINFO GROUPS s",
                "XINFO CONSUMERS s g",
                "XINFO STREAM t FULL COUNT 2",
                "XLEN s",
            ])
            .to_string(),
        _ => r
            .pick(&[
                "XINFO STREAM s FULL",
                "XINFO GROUPS s",
                "DEL t",
                "SET t x",
                "XREAD COUNT 2 STREAMS s t $ 0",
                "XINFO CONSUMERS s h",
                "XREADGROUP GROUP g c1 STREAMS s t > >",
                "XGROUP CREATE t g 0 MKSTREAM ENTRIESREAD 9",
                "XADD s MINID ~ 5 LIMIT 1 15-* f v",
            ])
            .to_string(),
    }
}

#[tokio::test]
async fn random_stream_sequences_match_redis() {
    let seqs: Vec<String> = (0..200u64)
        .map(|seed| {
            let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            (0..60)
                .map(|_| random_stream_command(&mut r))
                .collect::<Vec<_>>()
                .join("; ")
                + "; XINFO STREAM s FULL; XINFO STREAM t FULL; XINFO GROUPS s"
        })
        .collect();
    let refs: Vec<&str> = seqs.iter().map(|s| s.as_str()).collect();
    check("random streams", &refs).await;
}

async fn stream_notifications(flags: &str) {
    let server = RedisServer::new();
    let mut sub = Pair::new(&server);
    sub.reset().await;
    let mut writer = sub.another(&server);
    let mut mismatches = Vec::new();
    writer
        .run_seq(
            &parse(&format!("CONFIG SET notify-keyspace-events {flags}")),
            &mut mismatches,
        )
        .await;
    sub.run_seq(&parse("PSUBSCRIBE __key*__:*"), &mut mismatches)
        .await;
    let script = "XADD s 1-1 a 1; XADD s MAXLEN 1 2-1 a 1; XDEL s 2-1; XDEL s 2-1; XADD s 3-1 a 1; \
                  XTRIM s MAXLEN 0; XTRIM s MAXLEN 0; XADD s NOMKSTREAM 4-1 a 1; XADD n NOMKSTREAM 4-1 a 1; \
                  XGROUP CREATE s g 0; XGROUP CREATE s2 g $ MKSTREAM; XGROUP CREATECONSUMER s g c; \
                  XADD s 5-1 a 1; XREADGROUP GROUP g c2 STREAMS s >; XCLAIM s g c3 0 5-1; \
                  XAUTOCLAIM s g c4 0 0; XGROUP SETID s g 0; XSETID s 9-9; XGROUP DELCONSUMER s g c; \
                  XGROUP DELCONSUMER s g nobody; XACK s g 5-1; XGROUP DESTROY s g; XGROUP DESTROY s g; DEL s s2";
    writer.run_seq(&parse(script), &mut mismatches).await;
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let (theirs_pong, _) = sub.run(&common::args(&["PING"])).await;
    let mut theirs = Vec::new();
    let mut first = theirs_pong[0].clone();
    loop {
        if let Frame::Array(items) = &first {
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
    assert_eq!(theirs, ours);
}

#[tokio::test]
async fn stream_keyspace_notifications_match_redis() {
    stream_notifications("KEA").await;
    stream_notifications("KEAn").await;
}

/// Random stream workloads: replaying the effects into a second store, and
/// loading a snapshot's commands into a third, give the same streams.
#[tokio::test]
async fn random_workloads_replay_and_snapshot_to_the_same_streams() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use store::{Clock, Store, StoreConfig};

    let manual = |t: &Arc<AtomicU64>| {
        Store::new(StoreConfig {
            clock: Clock::Manual(t.clone()),
            ..StoreConfig::default()
        })
    };
    let args = |s: &str| -> Vec<Bytes> {
        s.split_whitespace()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    };
    async fn full(store: &store::Store, key: &str) -> Frame {
        let mut s = store.session();
        let a: Vec<Bytes> = ["XINFO", "STREAM", key, "FULL", "COUNT", "0"]
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        store.execute(&mut s, a).await.reply
    }
    /// Seen-times become the replay time in a snapshot, and node layout
    /// follows the replayed XADDs.
    fn unseen(f: &Frame, nodes_too: bool) -> Frame {
        match f {
            Frame::Array(v) => {
                let mut out = Vec::new();
                let mut i = 0;
                while i < v.len() {
                    let k = v[i].as_bytes().unwrap_or_default();
                    let node = matches!(k, b"radix-tree-keys" | b"radix-tree-nodes");
                    if (k == b"seen-time" || (nodes_too && node)) && i + 1 < v.len() {
                        out.push(v[i].clone());
                        out.push(Frame::Integer(0));
                        i += 2;
                        continue;
                    }
                    out.push(unseen(&v[i], nodes_too));
                    i += 1;
                }
                Frame::Array(out)
            }
            other => other.clone(),
        }
    }
    let server = RedisServer::new();
    let mut redis = common::Redis::connect(&server);
    for seed in 0..400u64 {
        let mut r = Rng(0xD1B5_4A32_D192_ED03 ^ (seed + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let t = Arc::new(AtomicU64::new(1_700_000_000_000));
        let tb = Arc::new(AtomicU64::new(1_700_000_000_000));
        let (a, b) = (manual(&t), manual(&tb));
        let mut sa = a.session();
        let mut cmds = Vec::new();
        for n in 0..80 {
            if n % 4 == 0 {
                t.fetch_add(3, Ordering::Relaxed);
            }
            let cmd = random_stream_command(&mut r);
            let out = a.execute(&mut sa, args(&cmd)).await;
            tb.store(t.load(Ordering::Relaxed), Ordering::Relaxed);
            for e in &out.effects {
                let reply = b.apply(e.db, &e.args);
                assert!(
                    !matches!(reply, Frame::Error(_)),
                    "seed {seed}: {cmd} journaled {:?}: {reply:?}",
                    e.args
                );
            }
            cmds.push(cmd);
        }
        let tc = Arc::new(AtomicU64::new(t.load(Ordering::Relaxed)));
        let c = manual(&tc);
        for e in a.snapshot().commands() {
            let reply = c.apply(e.db, &e.args);
            assert!(
                !matches!(reply, Frame::Error(_)),
                "seed {seed}: snapshot {:?}: {reply:?}",
                e.args
            );
        }
        // The same commands rebuild the stream in Redis too (the replica
        // writes a stream back into a Redis that lost it this way).
        if seed < 60 {
            redis.cmd(&args("FLUSHALL"));
            for e in a.snapshot().commands() {
                let reply = redis.cmd(&e.args);
                assert!(
                    !matches!(reply, Frame::Error(_)),
                    "seed {seed}: redis refused {:?}: {reply:?}",
                    e.args
                );
            }
            for key in ["s", "t"] {
                let theirs = redis.cmd(&args(&format!("XINFO STREAM {key} FULL COUNT 0")));
                assert_eq!(
                    unseen(&theirs, false),
                    unseen(&full(&c, key).await, false),
                    "seed {seed} redis {key}"
                );
            }
        }
        for key in ["s", "t"] {
            let (fa, fb, fc) = (
                full(&a, key).await,
                full(&b, key).await,
                full(&c, key).await,
            );
            // A read that delivers nothing still refreshes a consumer's
            // seen-time, which no command can journal (nor does Redis).
            assert_eq!(
                unseen(&fa, false),
                unseen(&fb, false),
                "seed {seed} replay {key}\n{}",
                cmds.join("\n")
            );
            assert_eq!(
                unseen(&fa, true),
                unseen(&fc, true),
                "seed {seed} snapshot {key}\n{}",
                cmds.join("\n")
            );
        }
    }
}
