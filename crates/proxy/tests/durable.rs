//! Durable keyspaces through a real outage: writes accepted and journaled
//! while Redis is down, replayed into it exactly once when it is back.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_ride_out_a_kill_and_reach_redis_exactly_once() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = durable(&redis, "sess:*").await;
    let (f, journal) = (&s.f, &s.journal);
    let mut c = f.raw().await;
    assert_eq!(
        c.cmd(&["SET", "sess:pre", "before"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        journal.pending_entries(),
        0,
        "while Up, writes go to Redis, not the journal"
    );

    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Accepted and journaled: blind writes, and value-dependent ones on
    // values written during the outage.
    assert_eq!(c.cmd(&["SET", "sess:1", "a"]).await, Frame::simple("OK"));
    assert_eq!(
        c.cmd(&["SET", "sess:n", "5", "EX", "1000"]).await,
        Frame::simple("OK")
    );
    assert_eq!(c.cmd(&["INCR", "sess:n"]).await, Frame::Integer(6));
    assert_eq!(
        c.cmd(&["RPUSH", "sess:q", "x", "y"]).await,
        Frame::Integer(2)
    );
    assert_eq!(c.cmd(&["GET", "sess:1"]).await, Frame::bulk("a"));
    // Health checks of reconnecting clients pass.
    assert_eq!(c.cmd(&["PING"]).await, Frame::simple("PONG"));
    assert_eq!(c.cmd(&["ECHO", "hi"]).await, Frame::bulk("hi"));
    // Refused, honestly: unknown values, unreplayable commands, other keys.
    for (cmd, why) in [
        (&["GET", "sess:pre"][..], "value unknown locally"),
        (&["INCR", "sess:other"], "value unknown locally"),
        (&["LRANGE", "sess:q", "0", "-1"], "value unknown locally"),
        (&["LPOP", "sess:q"], "not allowed during an outage"),
        (
            &["SET", "sess:1", "b", "NX"],
            "not allowed during an outage",
        ),
        (&["GET", "plain"], "not in a durable or cache keyspace"),
        (&["SET", "plain", "1"], "not in a durable or cache keyspace"),
    ] {
        let text = err_text(&c.cmd(cmd).await);
        assert!(
            text.starts_with("UNAVAILABLE") && text.contains(why) && text.contains("not executed"),
            "{cmd:?}: {text}"
        );
    }
    assert_eq!(
        journal.pending_entries(),
        4,
        "four acknowledged writes journaled"
    );

    redis.restart();
    // Replayed once Redis is back; the journal drains.
    test_support::wait_for(
        "the journal to drain into redis",
        Duration::from_secs(10),
        || journal.pending_entries() == 0,
    );
    assert_eq!(redis.cmd(&["GET", "sess:1"]), "a");
    assert_eq!(redis.cmd(&["GET", "sess:n"]), "6");
    let ttl: i64 = redis.cmd(&["TTL", "sess:n"])[1..].parse().unwrap();
    assert!(
        (990..=1000).contains(&ttl),
        "the expiry was journaled as an absolute time: {ttl}"
    );
    assert_eq!(
        redis.cmd(&["LLEN", "sess:q"]),
        ":2",
        "pushed once, not twice"
    );
    assert_eq!(redis.cmd(&["GET", "sess:pre"]), "before");
    assert!(redis
        .cmd(&["GET", "redoubt:replay:{test-node}"])
        .contains(':'));
    // And the client, on the same connection, now reads from Redis.
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["GET", "sess:pre"]).await, Frame::bulk("before"));
    assert_eq!(c.cmd(&["INCR", "sess:n"]).await, Frame::Integer(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_journal_refuses_is_undone_locally_and_never_replayed() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = start_local_journal(
        &redis.url(),
        Keyspaces::new(vec![("sess:*".into(), Policy::Durable)]),
        "test-node",
        Default::default(),
        false,
        journal::JournalConfig {
            max_bytes: 64 << 10,
            ..Default::default()
        },
    )
    .await;
    s.wait_knows("default");
    let (f, journal) = (&s.f, &s.journal);
    let mut c = f.raw().await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["SET", "sess:n", "5"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["INCR", "sess:n"]).await, Frame::Integer(6));
    // One record, known only once it ran: two 40 KiB values do not fit.
    let value = "v".repeat(40 << 10);
    assert_eq!(c.cmd(&["MULTI"]).await, Frame::simple("OK"));
    for cmd in [
        &["SET", "sess:big", value.as_str()][..],
        &["INCR", "sess:n"],
        &["SET", "sess:big2", value.as_str()],
    ] {
        assert_eq!(c.cmd(cmd).await, Frame::simple("QUEUED"));
    }
    let text = err_text(&c.cmd(&["EXEC"]).await);
    assert!(
        text.starts_with("UNAVAILABLE") && text.contains("journal full"),
        "{text}"
    );
    // `/readyz` and `/status` say writes are being refused, and why.
    let refusing = || s.outage.write_refusal();
    assert!(
        refusing().is_some_and(|r| r.contains("journal full")),
        "{:?}",
        refusing()
    );
    assert_eq!(
        s.outage.status_json()["refusing"],
        serde_json::json!(refusing())
    );
    // Undone: what it wrote is not served, from any client.
    let mut other = f.raw().await;
    for cl in [&mut c, &mut other] {
        for key in ["sess:big", "sess:n"] {
            let text = err_text(&cl.cmd(&["GET", key]).await);
            assert!(text.contains("value unknown locally"), "{key}: {text}");
        }
    }
    // Writes that fit go on.
    assert_eq!(
        c.cmd(&["SET", "sess:after", "x"]).await,
        Frame::simple("OK")
    );
    assert_eq!(refusing(), None, "a write that fits ends the refusal");
    assert_eq!(journal.pending_entries(), 3);
    let huge = "v".repeat(80 << 10);
    let text = err_text(&c.cmd(&["SET", "sess:huge", &huge]).await);
    assert!(text.contains("journal full"), "{text}");
    assert!(refusing().is_some());

    redis.restart();
    test_support::wait_for(
        "the journal to drain into redis",
        Duration::from_secs(10),
        || journal.pending_entries() == 0,
    );
    assert_eq!(refusing(), None, "the replay freed the journal");
    assert_eq!(redis.cmd(&["GET", "sess:n"]), "6");
    assert_eq!(redis.cmd(&["EXISTS", "sess:big", "sess:big2"]), ":0");
    assert_eq!(redis.cmd(&["GET", "sess:after"]), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_journal_cannot_confirm_in_time_is_uncertain_not_hung() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = durable(&redis, "sess:*").await;
    let (f, journal) = (&s.f, &s.journal);
    let mut c = f.raw().await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["SET", "sess:a", "1"]).await, Frame::simple("OK"));
    // The disk stalls for 4 s: the client is answered at its deadline
    // (limits.command_timeout_ms, 1 s by default), not when the disk is back.
    journal.stall_writer(Duration::from_secs(4)).unwrap();
    let asked = std::time::Instant::now();
    let text = err_text(&c.cmd(&["SET", "sess:b", "2"]).await);
    let waited = asked.elapsed();
    assert!(
        text.starts_with("UNCERTAIN the journal did not confirm this write on disk within 1000 ms"),
        "{text}"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
    // The client goes on; the write was not dropped: it lands once the
    // disk is back and reaches Redis with the rest.
    test_support::wait_for(
        "the stalled append to land",
        Duration::from_secs(10),
        || journal.pending_entries() == 2,
    );
    redis.restart();
    test_support::wait_for(
        "the journal to drain into redis",
        Duration::from_secs(10),
        || journal.pending_entries() == 0,
    );
    assert_eq!(redis.cmd(&["GET", "sess:a"]), "1");
    assert_eq!(redis.cmd(&["GET", "sess:b"]), "2");
}

/// Resident memory of this test's process (nextest runs each test in a
/// process of its own).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// An app writing many distinct keys during an outage, one request per
/// read (sessions created by web requests): what the outage remembers of
/// each key must not keep the client's whole read buffer alive. It did:
/// 100,000 keys held over a gigabyte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_during_an_outage_do_not_hold_their_clients_read_buffers() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 5_000;
    let mut redis = RedisServer::start(&[]);
    let s = durable(&redis, "sess:*").await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    let before = rss_bytes();
    let mut writers = Vec::new();
    for c in 0..CLIENTS {
        let mut conn = s.f.raw().await;
        writers.push(tokio::spawn(async move {
            // A session app's request: create the session, read it back,
            // rewrite it.
            for i in 0..PER_CLIENT {
                let key = format!("sess:{c}:{i}");
                assert_eq!(
                    conn.cmd(&["SET", &key, "new"]).await,
                    Frame::simple("OK"),
                    "{key}"
                );
                assert_eq!(conn.cmd(&["GET", &key]).await, Frame::bulk("new"), "{key}");
                assert_eq!(
                    conn.cmd(&["SET", &key, "seen"]).await,
                    Frame::simple("OK"),
                    "{key}"
                );
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let grown = rss_bytes().saturating_sub(before);
    let keys = (CLIENTS * PER_CLIENT) as u64;
    // Each key costs a few hundred bytes here (store, journal bookkeeping,
    // the outage's key sets); a held read buffer costs at least a page.
    assert!(
        grown < keys * 1024,
        "{keys} keys written during the outage grew resident memory by {} MiB",
        grown >> 20
    );
    assert_eq!(
        s.journal.pending_entries(),
        2 * keys,
        "every write journaled"
    );
}
