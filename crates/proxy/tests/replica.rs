//! The replica of the durable keyspaces: loaded from Redis's RDB, kept up
//! by the replication stream, and what an outage then serves.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use proxy::replica::Knowledge;
use resp::Frame;
use upstream::State;

fn keyspaces() -> Keyspaces {
    Keyspaces::new(vec![("context:*".into(), Policy::Durable)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_bot_reads_and_rewrites_its_contexts_through_an_outage() {
    let mut redis = aof_redis();
    // Conversations that existed before Redoubt started: they arrive in
    // the RDB, with every type and an expiry.
    for p in 0..50 {
        redis.cmd(&[
            "SET",
            &format!("context:{p}"),
            &format!("turn-0-of-{p}"),
            "EX",
            "86400",
        ]);
    }
    redis.cmd(&["HSET", "context:h", "a", "1", "b", "2"]);
    redis.cmd(&["RPUSH", "context:l", "x", "y", "z"]);
    redis.cmd(&["SADD", "context:s", "m"]);
    redis.cmd(&["ZADD", "context:z", "1.5", "one", "2", "two"]);
    redis.cmd(&["SET", "counter:other", "1"]);
    let s = start_local(&redis.url(), keyspaces(), "bot", Default::default(), false).await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    assert_eq!(
        replica.lookup(0, b"counter:other"),
        Knowledge::Unknown,
        "keys outside the durable keyspaces are not kept"
    );
    let full = replica.status().last_full_sync.expect("a full resync");
    assert_eq!(full.keys, 54, "{full:?}");

    // The bot's traffic while Redis is up: read the context, write it back.
    let mut c = s.f.raw().await;
    for turn in 1..=3 {
        for p in 0..60 {
            let key = format!("context:{p}");
            let got = c.cmd(&["GET", &key]).await;
            if p < 50 || turn > 1 {
                assert_ne!(got, Frame::NullBulk, "{key}");
            }
            let v = format!("turn-{turn}-of-{p}");
            assert_eq!(
                c.cmd(&["SET", &key, &v, "EX", "86400"]).await,
                Frame::simple("OK")
            );
        }
    }
    // Another app writes to Redis directly: the replica sees that too.
    redis.cmd(&["HSET", "context:h", "c", "3"]);
    redis.cmd(&["INCRBY", "context:n", "41"]);
    wait_caught_up(&redis, &replica).await;

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Every conversation reads what was last written, new ones read empty
    // and can start, and value-dependent writes work on any key.
    for p in 0..60 {
        let key = format!("context:{p}");
        assert_eq!(
            c.cmd(&["GET", &key]).await,
            Frame::bulk(format!("turn-3-of-{p}")),
            "{key}"
        );
        let ttl = c.cmd(&["TTL", &key]).await;
        assert!(
            matches!(ttl, Frame::Integer(t) if (86_000..=86_400).contains(&t)),
            "{key}: {ttl:?}"
        );
        assert_eq!(
            c.cmd(&["SET", &key, &format!("turn-4-of-{p}"), "EX", "86400"])
                .await,
            Frame::simple("OK")
        );
    }
    assert_eq!(c.cmd(&["GET", "context:new"]).await, Frame::NullBulk);
    assert_eq!(c.cmd(&["EXISTS", "context:new"]).await, Frame::Integer(0));
    assert_eq!(
        c.cmd(&["SET", "context:new", "hello", "EX", "86400"]).await,
        Frame::simple("OK")
    );
    assert_eq!(c.cmd(&["INCR", "context:n"]).await, Frame::Integer(42));
    assert_eq!(c.cmd(&["HGET", "context:h", "c"]).await, Frame::bulk("3"));
    assert_eq!(c.cmd(&["HLEN", "context:h"]).await, Frame::Integer(3));
    assert_eq!(
        c.cmd(&["LRANGE", "context:l", "0", "-1"]).await,
        Frame::Array(vec![Frame::bulk("x"), Frame::bulk("y"), Frame::bulk("z")])
    );
    assert_eq!(
        c.cmd(&["SISMEMBER", "context:s", "m"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        c.cmd(&["ZSCORE", "context:z", "one"]).await,
        Frame::bulk("1.5")
    );
    assert_eq!(
        c.cmd(&["HINCRBY", "context:h", "a", "10"]).await,
        Frame::Integer(11)
    );
    assert_eq!(c.cmd(&["TYPE", "context:z"]).await, Frame::simple("zset"));

    // Back: the outage's writes replayed on top of what Redis kept.
    redis.restart();
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    test_support::wait_for("the journal to drain", Duration::from_secs(10), || {
        s.journal.pending_entries() == 0
    });
    for p in 0..60 {
        assert_eq!(
            redis.cmd(&["GET", &format!("context:{p}")]),
            format!("turn-4-of-{p}")
        );
    }
    assert_eq!(redis.cmd(&["GET", "context:new"]), "hello");
    assert_eq!(redis.cmd(&["GET", "context:n"]), "42");
    assert_eq!(redis.cmd(&["HGET", "context:h", "a"]), "11");
    let ttl: i64 = redis.cmd(&["TTL", "context:7"])[1..].parse().unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
}

/// A write that replaces whole values during an outage (`SET`, `SETEX`,
/// `MSET`) is served without the earlier value, and replaces its expiry
/// and type too; `SET … KEEPTTL` keeps the expiry Redis had set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_value_writes_during_an_outage_replace_value_type_and_expiry_as_redis_does() {
    let mut redis = aof_redis();
    redis.cmd(&["SET", "context:a", "old", "EX", "1000"]);
    redis.cmd(&["SET", "context:b", "old", "EX", "1000"]);
    redis.cmd(&["HSET", "context:c", "f", "v"]);
    redis.cmd(&["SET", "context:d", "old"]);
    let s = start_local(
        &redis.url(),
        keyspaces(),
        "whole",
        Default::default(),
        false,
    )
    .await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    wait_caught_up(&redis, &replica).await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;

    let mut c = s.f.raw().await;
    let ok = Frame::simple("OK");
    let ttl_in = |t: Frame, r: std::ops::RangeInclusive<i64>| matches!(t, Frame::Integer(t) if r.contains(&t));
    assert_eq!(c.cmd(&["SET", "context:a", "new"]).await, ok);
    assert_eq!(c.cmd(&["GET", "context:a"]).await, Frame::bulk("new"));
    assert_eq!(
        c.cmd(&["TTL", "context:a"]).await,
        Frame::Integer(-1),
        "SET drops the expiry"
    );
    assert_eq!(c.cmd(&["SET", "context:b", "new", "KEEPTTL"]).await, ok);
    let t = c.cmd(&["TTL", "context:b"]).await;
    assert!(
        ttl_in(t.clone(), 900..=1000),
        "KEEPTTL keeps Redis's expiry: {t:?}"
    );
    assert_eq!(c.cmd(&["SET", "context:c", "str"]).await, ok);
    assert_eq!(c.cmd(&["TYPE", "context:c"]).await, Frame::simple("string"));
    assert_eq!(c.cmd(&["GET", "context:c"]).await, Frame::bulk("str"));
    assert_eq!(c.cmd(&["SETEX", "context:d", "500", "v"]).await, ok);
    let t = c.cmd(&["TTL", "context:d"]).await;
    assert!(ttl_in(t.clone(), 400..=500), "{t:?}");
    assert_eq!(
        c.cmd(&["MSET", "context:b", "m", "context:e", "y"]).await,
        ok
    );
    assert_eq!(
        c.cmd(&["TTL", "context:b"]).await,
        Frame::Integer(-1),
        "MSET drops it"
    );
    assert_eq!(c.cmd(&["GET", "context:b"]).await, Frame::bulk("m"));
    assert_eq!(c.cmd(&["GET", "context:e"]).await, Frame::bulk("y"));

    redis.restart();
    s.f.wait_state(State::Up, Duration::from_secs(10)).await;
    test_support::wait_for("the journal to drain", Duration::from_secs(10), || {
        s.journal.pending_entries() == 0
    });
    assert_eq!(redis.cmd(&["GET", "context:a"]), "new");
    assert_eq!(redis.cmd(&["TTL", "context:a"]), ":-1");
    assert_eq!(redis.cmd(&["GET", "context:b"]), "m");
    assert_eq!(redis.cmd(&["TTL", "context:b"]), ":-1");
    assert_eq!(redis.cmd(&["TYPE", "context:c"]), "+string");
    let ttl: i64 = redis.cmd(&["TTL", "context:d"])[1..].parse().unwrap();
    assert!((400..=500).contains(&ttl), "{ttl}");
    assert_eq!(redis.cmd(&["GET", "context:e"]), "y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_continues_where_it_stopped() {
    let redis = aof_redis();
    let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), false).await;
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    let mut direct = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for round in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("context:{round}"))
            .arg(round)
            .query_async(&mut direct)
            .await
            .unwrap();
        // Cut the replication link under Redoubt.
        let killed: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "replica"])
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(killed, 1, "round {round}");
        let _: () = redis::cmd("RPUSH")
            .arg("context:l")
            .arg(round)
            .query_async(&mut direct)
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while replica.status().partial_syncs < round + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}",
                replica.status()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        wait_caught_up(&redis, &replica).await;
    }
    let st = replica.status();
    assert_eq!(st.full_syncs, 1, "every reconnect continued: {st:?}");
    assert!(st.lag_bytes.is_some(), "lag from the prober's INFO: {st:?}");
    for round in 0..5 {
        match replica.lookup(0, format!("context:{round}").as_bytes()) {
            Knowledge::Value(v, None) => {
                assert_eq!(*v, store::value::Value::Str(round.to_string().into()))
            }
            other => panic!("context:{round}: {other:?}"),
        }
    }
    match replica.lookup(0, b"context:l") {
        Knowledge::Value(v, None) => assert_eq!(
            *v,
            store::value::Value::list((0..5).map(|i| bytes::Bytes::from(i.to_string())))
        ),
        other => panic!("context:l: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_psync_is_said_once_and_the_near_cache_serves() {
    let redis = aof_redis();
    redis.cmd(&[
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-psync", "-sync",
    ]);
    let url = format!("redis://app:pw@127.0.0.1:{}", redis.port());
    let s = start_local(&url, keyspaces(), "n", Default::default(), false).await;
    let link = proxy::replica::link_config(
        &upstream::UpstreamUrl::parse(&url).unwrap(),
        0,
        s.dir.path(),
        1 << 20,
    );
    let replica = proxy::replica::Replica::spawn(
        keyspaces(),
        proxy::replica::ReplicaConfig {
            link,
            max_bytes: 1 << 20,
            restore: true,
            cache: false,
        },
        Some(s.f.health.clone()),
    );
    s.outage.attach_replica(replica.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while replica.status().state != "refused" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            replica.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let st = replica.status();
    assert!(
        st.reason.as_deref().is_some_and(|r| r.contains("NOPERM")),
        "{st:?}"
    );
    assert!(!replica.is_complete());
    assert_eq!(replica.lookup(0, b"context:1"), Knowledge::Unknown);
}

/// Durable keys of every type, with and without expiry, and one other key.
fn seed(redis: &RedisServer) {
    redis.cmd(&["SET", "context:s1", "hello", "EX", "86400"]);
    redis.cmd(&["SET", "context:n", "41"]);
    redis.cmd(&["HSET", "context:h", "f", "v", "g", "w"]);
    redis.cmd(&["RPUSH", "context:l", "a", "b", "c"]);
    redis.cmd(&["SADD", "context:set", "x", "y"]);
    redis.cmd(&["ZADD", "context:z", "-inf", "lo", "2.5", "mid"]);
    redis.cmd(&["SET", "other:k", "not durable"]);
}

async fn restarted_empty(restore: bool) -> (RedisServer, Local) {
    // No persistence: a restart comes back empty, as with a wiped volume.
    let mut redis = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    seed(&redis);
    let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), false).await;
    s.wait_knows("default");
    let url = upstream::UpstreamUrl::parse(&redis.url()).unwrap();
    let link = proxy::replica::link_config(&url, 0, s.dir.path(), 1 << 28);
    let replica = proxy::replica::Replica::spawn(
        keyspaces(),
        proxy::replica::ReplicaConfig {
            link,
            max_bytes: 1 << 28,
            restore,
            cache: false,
        },
        Some(s.f.health.clone()),
    );
    s.outage.attach_replica(replica.clone());
    let r = replica.clone();
    tokio::task::spawn_blocking(move || {
        test_support::wait_for("the first sync", Duration::from_secs(10), || {
            r.is_complete()
        })
    })
    .await
    .unwrap();
    let mut c = s.f.raw().await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // A write during the outage, on top of a key Redis will have lost.
    assert_eq!(c.cmd(&["INCR", "context:n"]).await, Frame::Integer(42));
    assert_eq!(c.cmd(&["SET", "context:w", "v"]).await, Frame::simple("OK"));
    // Watch for the first Up: which durable keys Redis holds at that
    // instant.
    let mut states = s.f.health.subscribe();
    let addr = redis.addr();
    let at_up = tokio::spawn(async move {
        states.wait_for(|h| h.state == State::Up).await.unwrap();
        let mut direct = Raw::connect(&addr).await;
        direct
            .cmd(&[
                "EXISTS",
                "context:s1",
                "context:n",
                "context:h",
                "context:l",
                "context:set",
                "context:z",
                "context:w",
            ])
            .await
    });
    // Durable keys are served from the copy while Redis is down…
    let got = c.cmd(&["HGET", "context:h", "g"]).await;
    assert!(matches!(&got, Frame::Bulk(b) if &b[..] == b"w"), "{got:?}");
    redis.start_again();
    // …and, with a restore, while Redis is checked and restored (the
    // restore holds them local). Replay-only has no such hold: once Redis
    // answers, keys the outage did not write are Redis's.
    if restore {
        let got = c.cmd(&["HGET", "context:h", "g"]).await;
        assert!(matches!(&got, Frame::Bulk(b) if &b[..] == b"w"), "{got:?}");
    }
    let size = tokio::time::timeout(Duration::from_secs(20), at_up)
        .await
        .expect("Up within 20 s")
        .unwrap();
    let want = if restore { 7 } else { 2 };
    assert_eq!(
        size,
        Frame::Integer(want),
        "restored and replayed before Up"
    );
    test_support::wait_for("the journal to drain", Duration::from_secs(10), || {
        s.journal.pending_entries() == 0
    });
    assert!(!replica.restoring());
    let facts = replica.status().last_restore;
    if restore {
        let f = facts.expect("a restore was recorded");
        assert_eq!((f.keys, f.failed), (6, 0), "{f:?}");
    } else {
        assert!(facts.is_none());
    }
    (redis, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_empty_gets_the_durable_keyspaces_back_before_up() {
    let (redis, _s) = restarted_empty(true).await;
    assert_eq!(redis.cmd(&["GET", "context:s1"]), "hello");
    let ttl: i64 = redis.cmd(&["TTL", "context:s1"])[1..].parse().unwrap();
    assert!((86_000..=86_400).contains(&ttl), "{ttl}");
    assert_eq!(redis.cmd(&["TTL", "context:n"]), ":-1");
    assert_eq!(
        redis.cmd(&["GET", "context:n"]),
        "42",
        "restored, then the journal"
    );
    assert_eq!(redis.cmd(&["HGET", "context:h", "f"]), "v");
    assert_eq!(redis.cmd(&["LINDEX", "context:l", "2"]), "c");
    assert_eq!(redis.cmd(&["LLEN", "context:l"]), ":3");
    assert_eq!(redis.cmd(&["SISMEMBER", "context:set", "y"]), ":1");
    assert_eq!(redis.cmd(&["ZCOUNT", "context:z", "-inf", "-inf"]), ":1");
    assert_eq!(redis.cmd(&["ZSCORE", "context:z", "mid"]), "2.5");
    assert_eq!(redis.cmd(&["TYPE", "context:z"]), "+zset");
    assert_eq!(
        redis.cmd(&["EXISTS", "other:k"]),
        ":0",
        "only durable keyspaces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replay_only_a_redis_that_comes_back_empty_gets_only_the_journal() {
    let (redis, _s) = restarted_empty(false).await;
    assert_eq!(redis.cmd(&["GET", "context:w"]), "v");
    // The journal holds the INCR as the client sent it: on an empty Redis
    // it counts from 0.
    assert_eq!(redis.cmd(&["GET", "context:n"]), "1");
    assert_eq!(redis.cmd(&["EXISTS", "context:s1", "context:h"]), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_exact_copy_pops_conditional_writes_and_renames_replay_as_told() {
    let mut redis = aof_redis();
    redis.cmd(&["RPUSH", "context:q", "job-1", "job-2", "job-3"]);
    redis.cmd(&["SET", "context:lock", "held"]);
    redis.cmd(&["SADD", "context:set", "only"]);
    redis.cmd(&["HSET", "context:old", "f", "v"]);
    let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), false).await;
    s.wait_knows("default");
    attach_replica(&s, &redis.url(), keyspaces()).await;
    let mut c = s.f.raw().await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["LPOP", "context:q"]).await, Frame::bulk("job-1"));
    assert_eq!(
        c.cmd(&["LMOVE", "context:q", "context:done", "LEFT", "RIGHT"])
            .await,
        Frame::bulk("job-2")
    );
    assert_eq!(
        c.cmd(&["SET", "context:lock", "mine", "NX"]).await,
        Frame::NullBulk
    );
    assert_eq!(
        c.cmd(&["SET", "context:lock2", "mine", "NX", "GET"]).await,
        Frame::NullBulk
    );
    assert_eq!(c.cmd(&["SPOP", "context:set"]).await, Frame::bulk("only"));
    assert_eq!(
        c.cmd(&["RENAME", "context:old", "context:new"]).await,
        Frame::simple("OK")
    );
    // Scripts run on the copy too (tests/scripts.rs has their traffic).
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('LLEN', KEYS[1])",
            "1",
            "context:q"
        ])
        .await,
        c.cmd(&["LLEN", "context:q"]).await
    );

    redis.start_again();
    test_support::wait_for("the journal to drain", Duration::from_secs(15), || {
        s.journal.pending_entries() == 0
    });
    assert_eq!(redis.cmd(&["LLEN", "context:q"]), ":1");
    assert_eq!(redis.cmd(&["LINDEX", "context:q", "0"]), "job-3");
    assert_eq!(redis.cmd(&["LINDEX", "context:done", "0"]), "job-2");
    assert_eq!(redis.cmd(&["GET", "context:lock"]), "held");
    assert_eq!(redis.cmd(&["GET", "context:lock2"]), "mine");
    assert_eq!(redis.cmd(&["EXISTS", "context:set", "context:old"]), ":0");
    assert_eq!(redis.cmd(&["HGET", "context:new", "f"]), "v");
}

/// Redis killed between persisting a write and sending it anywhere (its
/// fsync comes before its socket writes under `appendfsync always`): the
/// client was told `UNCERTAIN`, the copy never saw the write, and the
/// client ran it again on the copy during the outage. Redis comes back
/// holding the first run. The keys the outage used are made what the copy
/// held before the journal replays, so each write lands once; a key the
/// outage never used keeps what Redis has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_redis_kept_but_never_streamed_is_undone_before_the_journal_replays() {
    let mut redis = aof_redis();
    redis.cmd(&["RPUSH", "context:q", "job-1", "job-2"]);
    redis.cmd(&["HSET", "context:job", "state", "waiting"]);
    redis.cmd(&["SET", "context:other", "before"]);
    let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), false).await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    let mut c = s.f.raw().await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;

    // What the dead Redis ran and kept but never streamed: another
    // redis-server on its data directory appends it to the same AOF.
    let dir = redis.dir().to_str().unwrap().to_string();
    let mut unseen = test_support::RedisServer::start(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir,
    ]);
    assert_eq!(unseen.cmd(&["LPOP", "context:q"]), "job-1");
    unseen.cmd(&["HINCRBY", "context:job", "ats", "1"]);
    unseen.cmd(&["SET", "context:lock", "first-run"]);
    unseen.cmd(&["SET", "context:other", "after"]);
    unseen.shutdown();
    let aof = std::fs::read_dir(redis.dir().join("appendonlydir"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    assert!(
        aof.windows(9).any(|w| w == b"first-run"),
        "the AOF holds the unseen run"
    );

    // The client's retry, on the copy.
    assert_eq!(c.cmd(&["LPOP", "context:q"]).await, Frame::bulk("job-1"));
    assert_eq!(
        c.cmd(&["HINCRBY", "context:job", "ats", "1"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        c.cmd(&["SET", "context:lock", "retry", "NX"]).await,
        Frame::simple("OK")
    );

    redis.start_again();
    test_support::wait_for("the journal to drain", Duration::from_secs(15), || {
        s.journal.pending_entries() == 0
    });
    s.f.wait_state(State::Up, Duration::from_secs(5)).await;
    assert_eq!(redis.cmd(&["LLEN", "context:q"]), ":1");
    assert_eq!(redis.cmd(&["LINDEX", "context:q", "0"]), "job-2");
    assert_eq!(redis.cmd(&["HGET", "context:job", "ats"]), "1");
    assert_eq!(redis.cmd(&["HGET", "context:job", "state"]), "waiting");
    assert_eq!(redis.cmd(&["GET", "context:lock"]), "retry");
    assert_eq!(redis.cmd(&["GET", "context:other"]), "after");
    let f = replica
        .status()
        .last_restore
        .expect("a restore was recorded");
    assert_eq!((f.keys, f.diverged, f.failed), (3, 3, 0), "{f:?}");
    // The copy follows what was written back.
    assert_eq!(c.cmd(&["LLEN", "context:q"]).await, Frame::Integer(1));
}

/// `[replica] cache_keyspaces = true`: a cache keyspace never read through
/// Redoubt still answers during an outage, from the copy, every type, and
/// the outage's own cache writes and deletes answer over the copy. Not
/// kept (the default), the same reads find nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keyspaces_kept_in_the_replica_answer_during_an_outage() {
    for keep in [true, false] {
        let mut redis = aof_redis();
        redis.cmd(&["SET", "page:a", "<a>", "EX", "3600"]);
        redis.cmd(&["HSET", "page:h", "title", "t", "body", "b"]);
        redis.cmd(&["RPUSH", "page:l", "x", "y"]);
        redis.cmd(&["SET", "page:del", "d"]);
        let keyspaces = || {
            Keyspaces::new(vec![
                ("context:*".into(), Policy::Durable),
                ("page:*".into(), Policy::Cache),
            ])
        };
        let s = start_local(&redis.url(), keyspaces(), "n", Default::default(), true).await;
        s.wait_knows("default");
        let replica = attach_replica_keeping(&s, &redis.url(), keyspaces(), keep).await;
        let full = replica.status().last_full_sync.expect("a full resync");
        assert_eq!(full.keys, if keep { 4 } else { 0 }, "{full:?}");
        // Written while the copy streams, never read through Redoubt.
        let mut c = s.f.raw().await;
        assert_eq!(c.cmd(&["SET", "page:new", "n"]).await, Frame::simple("OK"));
        if keep {
            test_support::wait_for("the copy to hold page:new", Duration::from_secs(5), || {
                matches!(replica.lookup(0, b"page:new"), Knowledge::Value(..))
            });
        }
        redis.kill();
        s.f.wait_state(State::Down, Duration::from_secs(5)).await;

        let got = c.cmd(&["GET", "page:a"]).await;
        if !keep {
            assert_eq!(got, Frame::NullBulk, "not kept: a near-cache miss is nil");
            continue;
        }
        assert_eq!(got, Frame::bulk("<a>"));
        let ttl = c.cmd(&["TTL", "page:a"]).await;
        assert!(
            matches!(ttl, Frame::Integer(t) if t > 3500 && t <= 3600),
            "{ttl:?}"
        );
        assert_eq!(c.cmd(&["GET", "page:new"]).await, Frame::bulk("n"));
        assert_eq!(c.cmd(&["HGET", "page:h", "title"]).await, Frame::bulk("t"));
        assert_eq!(
            c.cmd(&["LRANGE", "page:l", "0", "-1"]).await,
            Frame::Array(vec![Frame::bulk("x"), Frame::bulk("y")])
        );
        assert_eq!(c.cmd(&["GET", "page:missing"]).await, Frame::NullBulk);
        // The outage's writes answer over the copy.
        assert_eq!(c.cmd(&["SET", "page:a", "<a2>"]).await, Frame::simple("OK"));
        assert_eq!(c.cmd(&["GET", "page:a"]).await, Frame::bulk("<a2>"));
        assert_eq!(
            c.cmd(&["HSET", "page:h", "title", "t2"]).await,
            Frame::Integer(0)
        );
        assert_eq!(
            c.cmd(&["HGET", "page:h", "body"]).await,
            Frame::bulk("b"),
            "the rest of the hash is Redis's"
        );
        assert_eq!(c.cmd(&["HGET", "page:h", "title"]).await, Frame::bulk("t2"));
        assert_eq!(
            c.cmd(&["DEL", "page:del", "page:l", "page:missing"]).await,
            Frame::Integer(2)
        );
        assert_eq!(
            c.cmd(&["GET", "page:del"]).await,
            Frame::NullBulk,
            "deleted, not the copy's value"
        );
        assert_eq!(c.cmd(&["EXISTS", "page:l"]).await, Frame::Integer(0));
        assert_eq!(
            c.cmd(&["EXPIRE", "page:new", "100"]).await,
            Frame::Integer(1)
        );
        let ttl = c.cmd(&["TTL", "page:new"]).await;
        assert!(
            matches!(ttl, Frame::Integer(t) if t > 90 && t <= 100),
            "{ttl:?}"
        );

        // The deletes reach Redis when it is back; the cache keys are not
        // restored from the copy.
        redis.start_again();
        test_support::wait_for("the journal to drain", Duration::from_secs(15), || {
            s.journal.pending_entries() == 0 && s.f.health.state() == State::Up
        });
        assert_eq!(redis.cmd(&["EXISTS", "page:del"]), ":0");
        assert_eq!(redis.cmd(&["EXISTS", "page:l"]), ":0");
        assert_eq!(redis.cmd(&["GET", "page:new"]), "n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_with_default_settings_delays_the_first_sync_and_the_copy_still_loads() {
    // Redis's defaults: diskless sync, 5 s after the replica asks, so
    // `+FULLRESYNC` comes only then (newlines meanwhile).
    let redis = RedisServer::start(&[]);
    redis.cmd(&["SET", "context:a", "1"]);
    let tmp = tempfile::tempdir().unwrap();
    let link = proxy::replica::link_config(
        &upstream::UpstreamUrl::parse(&redis.url()).unwrap(),
        0,
        tmp.path(),
        1 << 20,
    );
    let replica = proxy::replica::Replica::spawn(
        keyspaces(),
        proxy::replica::ReplicaConfig {
            link,
            max_bytes: 1 << 20,
            restore: false,
            cache: false,
        },
        None,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !replica.is_complete() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            replica.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = replica.status();
    assert_eq!(st.full_syncs, 1, "{st:?}");
    assert!(matches!(
        replica.lookup(0, b"context:a"),
        Knowledge::Value(..)
    ));
}
