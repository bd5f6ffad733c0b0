//! The near-cache in the data path: values of `durable` and `cache` keys
//! read while Redis is Up answer during an outage; `cache` keys follow
//! their own rules while Down; Recovering lasts until the journal drains.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

/// Durable `sess:*` and cache `cache:*`, with a near-cache; returns once
/// Redoubt knows `default`'s permissions (unauthenticated sessions).
async fn setup(redis: &RedisServer) -> Local {
    let keyspaces = Keyspaces::new(vec![
        ("sess:*".into(), Policy::Durable),
        ("cache:*".into(), Policy::Cache),
    ]);
    let s = start_local(
        &redis.url(),
        keyspaces,
        "near-node",
        Default::default(),
        true,
    )
    .await;
    s.wait_knows("default");
    s
}

fn unavailable(f: &Frame, why: &str) {
    let text = err_text(f);
    assert!(
        text.starts_with("UNAVAILABLE") && text.contains(why),
        "expected UNAVAILABLE … {why}, got {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_before_the_outage_answer_during_it() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = setup(&redis).await;
    let near = s.outage.near_cache().unwrap().clone();
    let mut c = s.f.raw().await;
    for cmd in [
        &["SET", "sess:alice", "a1", "EX", "100"][..],
        &["HSET", "sess:h", "user", "bob", "role", "admin"],
        &["SET", "sess:ctr", "10"],
        &["SET", "sess:never-read", "x"],
        &["SET", "cache:page", "<html>"],
        &["SET", "cache:gone", "old"],
    ] {
        assert!(!c.cmd(cmd).await.is_error(), "{cmd:?}");
    }
    // Reading them through Redoubt is what puts them in the near-cache.
    assert_eq!(c.cmd(&["GET", "sess:alice"]).await, Frame::bulk("a1"));
    c.cmd(&["HGETALL", "sess:h"]).await;
    assert_eq!(c.cmd(&["GET", "sess:ctr"]).await, Frame::bulk("10"));
    assert_eq!(c.cmd(&["GET", "cache:page"]).await, Frame::bulk("<html>"));
    assert_eq!(c.cmd(&["GET", "cache:gone"]).await, Frame::bulk("old"));
    assert_eq!(near.len(), 5, "five values kept: {near:?}");
    // A fail-fast key is never kept, and the hidden PEXPIRETIME replies
    // never reach the client: the next reply is the next command's.
    assert_eq!(c.cmd(&["SET", "other", "1"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["GET", "other"]).await, Frame::bulk("1"));
    assert_eq!(near.len(), 5);

    // Another client changes a value behind Redoubt: Redis's invalidation
    // drops the copy, and the next read keeps the new value.
    redis.cmd(&["SET", "sess:alice", "a2", "EX", "100"]);
    test_support::wait_for("the invalidation", Duration::from_secs(5), || {
        near.get(0, b"sess:alice", 0).is_miss()
    });
    assert_eq!(c.cmd(&["GET", "sess:alice"]).await, Frame::bulk("a2"));

    // Redis's clock is measured, so relative expiries journaled during the
    // outage become absolute on Redis's clock (same host: tiny offset).
    let offset = s.f.health.current().facts.clock_offset_ms;
    assert!(offset.is_some_and(|o| o.abs() < 1000), "{offset:?}");

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Durable keys: the copies answer every read, with their expiry.
    assert_eq!(c.cmd(&["GET", "sess:alice"]).await, Frame::bulk("a2"));
    match c.cmd(&["TTL", "sess:alice"]).await {
        Frame::Integer(t) => assert!((90..=100).contains(&t), "ttl {t}"),
        other => panic!("TTL: {other:?}"),
    }
    assert_eq!(
        c.cmd(&["HGET", "sess:h", "role"]).await,
        Frame::bulk("admin")
    );
    match c.cmd(&["HGETALL", "sess:h"]).await {
        Frame::Array(items) => assert_eq!(items.len(), 4),
        other => panic!("HGETALL: {other:?}"),
    }
    // A client reconnecting with RESP3 gets RESP3 answers.
    let mut c3 = s.f.raw().await;
    assert!(!c3.cmd(&["HELLO", "3"]).await.is_error());
    match c3.cmd(&["HGETALL", "sess:h"]).await {
        Frame::Map(items) => assert_eq!(items.len(), 2),
        other => panic!("HGETALL over RESP3: {other:?}"),
    }
    // A value-dependent write on a copied value is accepted and journaled.
    assert_eq!(c.cmd(&["INCR", "sess:ctr"]).await, Frame::Integer(11));
    assert_eq!(c.cmd(&["GET", "sess:ctr"]).await, Frame::bulk("11"));
    // Never read through Redoubt: unknown, never a made-up nil.
    unavailable(
        &c.cmd(&["GET", "sess:never-read"]).await,
        "value unknown locally",
    );
    // Cache keys: copies answer, a miss is nil, SETs stay local, DEL is
    // journaled so Redis hears of it.
    assert_eq!(c.cmd(&["GET", "cache:page"]).await, Frame::bulk("<html>"));
    assert_eq!(c.cmd(&["GET", "cache:nothing"]).await, Frame::NullBulk);
    assert_eq!(
        c.cmd(&["SET", "cache:new", "local", "EX", "100"]).await,
        Frame::simple("OK")
    );
    assert_eq!(c.cmd(&["GET", "cache:new"]).await, Frame::bulk("local"));
    assert_eq!(c.cmd(&["DEL", "cache:gone"]).await, Frame::Integer(1));
    assert_eq!(c.cmd(&["GET", "cache:gone"]).await, Frame::NullBulk);
    unavailable(
        &c.cmd(&["INCR", "cache:page"]).await,
        "not served during an outage",
    );
    unavailable(
        &c.cmd(&["MGET", "cache:page", "sess:alice"]).await,
        "mixes keyspaces",
    );
    // The handshake: INFO with the last-known facts.
    match c.cmd(&["INFO"]).await {
        Frame::Bulk(b) => {
            let t = String::from_utf8_lossy(&b);
            assert!(
                t.contains("redis_version:7.") && t.contains("loading:0"),
                "{t}"
            );
        }
        other => panic!("INFO: {other:?}"),
    }
    assert!(s.outage.fallback_keys() >= 5);
    assert_eq!(
        s.journal.pending_entries(),
        2,
        "the INCR and the DEL are journaled; the cache SET is not"
    );

    let mut states = s.f.health.subscribe();
    redis.restart();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let st = states.borrow_and_update().state;
            if seen.last() != Some(&st) {
                seen.push(st);
            }
            if st == State::Up {
                break;
            }
            states.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never Up again; states seen {seen:?}"));
    assert!(
        seen.contains(&State::Recovering),
        "Redis answered while the journal was pending: Recovering first; saw {seen:?}"
    );
    assert_eq!(s.journal.pending_entries(), 0, "Up only once drained");
    assert_eq!(redis.cmd(&["GET", "sess:ctr"]), "11");
    assert_eq!(redis.cmd(&["EXISTS", "cache:gone"]), ":0");
    assert_eq!(
        redis.cmd(&["EXISTS", "cache:new"]),
        ":0",
        "a cache SET during the outage stays local"
    );
    // Back upstream: the local cache SET is gone with the flush.
    assert_eq!(c.cmd(&["GET", "cache:new"]).await, Frame::NullBulk);
    assert_eq!(c.cmd(&["GET", "sess:alice"]).await, Frame::bulk("a2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_an_earlier_outage_never_answers_a_later_one() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = setup(&redis).await;
    let mut c = s.f.raw().await;
    c.cmd(&["SET", "sess:k", "v1"]).await;
    assert_eq!(c.cmd(&["GET", "sess:k"]).await, Frame::bulk("v1"));
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["GET", "sess:k"]).await, Frame::bulk("v1"));
    redis.restart();
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    let near = s.outage.near_cache().unwrap().clone();
    test_support::wait_for("tracking to restart", Duration::from_secs(5), || {
        near.is_tracking()
    });
    // Changed while Up, and never read again through Redoubt.
    assert_eq!(c.cmd(&["SET", "sess:k", "v2"]).await, Frame::simple("OK"));
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    unavailable(&c.cmd(&["GET", "sess:k"]).await, "value unknown locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_of_durable_commands_is_served_whole_or_refused_whole() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = setup(&redis).await;
    let mut c = s.f.raw().await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;

    let r = block(
        &mut c,
        vec![
            vec!["SET", "sess:m1", "a"],
            vec!["SET", "sess:m2", "5"],
            vec!["INCR", "sess:m2"],
            vec!["GET", "sess:m1"],
        ],
    )
    .await;
    assert_eq!(
        r,
        Frame::Array(vec![
            Frame::simple("OK"),
            Frame::simple("OK"),
            Frame::Integer(6),
            Frame::bulk("a"),
        ])
    );
    assert_eq!(s.journal.pending_entries(), 1, "one record for the block");
    // Refused whole: an unknown value, a key outside the durable keyspaces.
    let r = block(
        &mut c,
        vec![vec!["SET", "sess:m3", "x"], vec!["INCR", "sess:unknown"]],
    )
    .await;
    unavailable(&r, "value unknown locally");
    let r = block(
        &mut c,
        vec![vec!["SET", "sess:m3", "x"], vec!["SET", "plain", "y"]],
    )
    .await;
    unavailable(&r, "not on durable keys");
    assert_eq!(
        s.journal.pending_entries(),
        1,
        "nothing of the refused blocks"
    );
    unavailable(&c.cmd(&["GET", "sess:m3"]).await, "value unknown locally");

    redis.restart();
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    assert_eq!(redis.cmd(&["GET", "sess:m1"]), "a");
    assert_eq!(redis.cmd(&["GET", "sess:m2"]), "6");
    assert_eq!(redis.cmd(&["EXISTS", "sess:m3"]), ":0");
}

/// Sends `MULTI`, `cmds`, `EXEC`; checks the `+OK`/`+QUEUED`s and returns
/// EXEC's reply.
async fn block(c: &mut Raw, cmds: Vec<Vec<&str>>) -> Frame {
    let mut out = bytes::BytesMut::new();
    resp::frame::encode_command(&mut out, &["MULTI"]);
    for cmd in &cmds {
        resp::frame::encode_command(&mut out, cmd);
    }
    resp::frame::encode_command(&mut out, &["EXEC"]);
    c.send(&out).await;
    assert_eq!(c.read().await.unwrap(), Frame::simple("OK"));
    for _ in &cmds {
        assert_eq!(c.read().await.unwrap(), Frame::simple("QUEUED"));
    }
    c.read().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_rejected_by_redis_are_journaled_and_replayed_once_it_accepts_them() {
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let s = setup(&redis).await;
    let mut c = s.f.raw().await;
    assert_eq!(c.cmd(&["SET", "sess:pre", "p"]).await, Frame::simple("OK"));
    // Full: Redis answers reads and refuses writes with OOM.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let oom = c.cmd(&["SET", "plain", "x"]).await;
    assert!(err_text(&oom).starts_with("OOM"), "{oom:?}");
    s.f.wait_state(State::WritesDown, Duration::from_secs(5))
        .await;
    // Durable writes are journaled instead of failing …
    assert_eq!(c.cmd(&["SET", "sess:w", "v"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["RPUSH", "sess:q", "a"]).await, Frame::Integer(1));
    // … a key with pending writes is read locally, others from Redis …
    assert_eq!(c.cmd(&["GET", "sess:w"]).await, Frame::bulk("v"));
    assert_eq!(c.cmd(&["GET", "sess:pre"]).await, Frame::bulk("p"));
    // … and other keys' writes get Redis's own answer.
    let oom = c.cmd(&["SET", "plain", "y"]).await;
    assert!(err_text(&oom).starts_with("OOM"), "{oom:?}");
    assert_eq!(s.journal.pending_entries(), 2);

    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    assert_eq!(s.journal.pending_entries(), 0);
    assert_eq!(redis.cmd(&["GET", "sess:w"]), "v");
    assert_eq!(redis.cmd(&["LINDEX", "sess:q", "0"]), "a");
    assert_eq!(redis.cmd(&["LLEN", "sess:q"]), ":1");
    assert_eq!(c.cmd(&["GET", "sess:w"]).await, Frame::bulk("v"));
}
