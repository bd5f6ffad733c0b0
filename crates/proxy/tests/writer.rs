//! Two Redoubts in front of one Redis: during an outage only the holder of
//! the outage-writer lease takes durable writes, so two clients are never
//! told conflicting things (two `INCR` replies of 43).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use proxy::writer::Writer;
use resp::Frame;
use upstream::State;

fn keyspaces() -> Keyspaces {
    Keyspaces::new(vec![("count:*".into(), Policy::Durable)])
}

async fn instance(redis: &RedisServer, node: &str, writer: Arc<Writer>) -> Local {
    instance_at(&redis.url(), node, writer).await
}

async fn instance_at(url: &str, node: &str, writer: Arc<Writer>) -> Local {
    let s = start_local(url, keyspaces(), node, Default::default(), false).await;
    attach_replica(&s, url, keyspaces()).await;
    writer.spawn_lease(
        upstream::UpstreamUrl::parse(url).unwrap(),
        node.into(),
        s.f.health.clone(),
        {
            let j = s.journal.clone();
            move || j.pending_entries() > 0
        },
    );
    s.outage.attach_writer(writer);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_takes_durable_writes_during_an_outage() {
    let mut redis = aof_redis();
    redis.cmd(&["SET", "count:visits", "42"]);
    let (wa, wb) = (Writer::alone(), Writer::alone());
    // Before Redis answers, holding is only the default of one alone, and
    // `/status` says it is not an answer yet.
    assert!(wa.holds() && !wa.answered());
    assert_eq!(wa.status_json()["lease_answered"], false);
    let a = instance(&redis, "node-a", wa.clone()).await;
    a.wait_knows("default");
    test_support::wait_for("node-a to hold the lease", Duration::from_secs(5), || {
        redis
            .cmd(&["GET", proxy::writer::LEASE_KEY])
            .starts_with("node-a ")
    });
    test_support::wait_for("node-a's claim answered", Duration::from_secs(5), || {
        wa.answered()
    });
    assert!(!wb.answered());
    let b = instance(&redis, "node-b", wb.clone()).await;
    b.wait_knows("default");
    test_support::wait_for(
        "node-b to see the lease is taken",
        Duration::from_secs(5),
        || !wb.holds(),
    );
    assert!(wb.answered() && wb.status_json()["lease_answered"] == true);
    assert!(wa.holds());
    let (mut ca, mut cb) = (a.f.raw().await, b.f.raw().await);

    redis.kill();
    a.f.wait_state(State::Down, Duration::from_secs(5)).await;
    b.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(ca.cmd(&["INCR", "count:visits"]).await, Frame::Integer(43));
    let refused = err_text(&cb.cmd(&["INCR", "count:visits"]).await);
    assert!(
        refused.starts_with("UNAVAILABLE")
            && refused.contains("node-a")
            && refused.contains("not executed"),
        "{refused}"
    );
    let refused = err_text(&cb.cmd(&["SET", "count:other", "1"]).await);
    assert!(refused.contains("node-a"), "{refused}");
    // Reads are served by both: what Redis had, and what the writer wrote.
    assert_eq!(cb.cmd(&["GET", "count:visits"]).await, Frame::bulk("42"));
    assert_eq!(ca.cmd(&["GET", "count:visits"]).await, Frame::bulk("43"));

    redis.start_again();
    test_support::wait_for(
        "the writer's journal to drain",
        Duration::from_secs(15),
        || a.journal.pending_entries() == 0,
    );
    assert_eq!(b.journal.pending_entries(), 0, "node-b journaled nothing");
    assert_eq!(redis.cmd(&["GET", "count:visits"]), "43");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_configured_never_serves_reads_only() {
    let mut redis = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    redis.cmd(&["SET", "count:x", "1"]);
    let s = instance(&redis, "solo", Writer::never()).await;
    s.wait_knows("default");
    let mut c = s.f.raw().await;
    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(c.cmd(&["GET", "count:x"]).await, Frame::bulk("1"));
    let refused = err_text(&c.cmd(&["INCR", "count:x"]).await);
    assert!(refused.contains("writer = \"never\""), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_writer_restores_a_redis_that_came_back_so_consumed_jobs_stay_consumed() {
    let mut redis = aof_redis();
    for j in 1..=3 {
        redis.cmd(&["SET", &format!("count:job:{j}"), "queued"]);
    }
    // node-b logs in as its own user, which a restart forgets (it was
    // made with ACL SETUSER): so node-b resyncs only when let back in.
    let bee = ["ACL", "SETUSER", "bee", "on", ">pw", "+@all", "~*", "&*"];
    redis.cmd(&bee);
    let (wa, wb) = (Writer::alone(), Writer::alone());
    let a = instance(&redis, "node-a", wa.clone()).await;
    test_support::wait_for("node-a to hold the lease", Duration::from_secs(5), || {
        wa.holds()
    });
    let b_url = format!("redis://bee:pw@127.0.0.1:{}", redis.port());
    let b = instance_at(&b_url, "node-b", wb.clone()).await;
    test_support::wait_for(
        "node-b to see the lease taken",
        Duration::from_secs(5),
        || !wb.holds(),
    );
    let replica_b = b.outage.replica().unwrap().clone();
    redis.kill();
    a.f.wait_state(State::Down, Duration::from_secs(5)).await;
    redis.start_again();
    a.f.wait_state(State::Up, Duration::from_secs(10)).await;
    // node-a's worker consumes a job once Redis is back.
    let mut ca = a.f.raw().await;
    assert_eq!(ca.cmd(&["DEL", "count:job:1"]).await, Frame::Integer(1));
    // node-b comes back only now, with a copy that still has the job.
    redis.cmd(&bee);
    let replid = redis.cmd(&["INFO", "replication"]);
    let replid = replid
        .lines()
        .find_map(|l| l.strip_prefix("master_replid:"))
        .unwrap()
        .trim();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while replica_b.status().replid.as_deref() != Some(replid) || replica_b.restoring() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b did not resync: {:?}",
            replica_b.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restored = replica_b.status().last_restore;
    assert!(
        restored.is_none(),
        "node-b restored keys node-a's clients had deleted: {restored:?}"
    );
    assert_eq!(redis.cmd(&["EXISTS", "count:job:1"]), ":0");
    assert_eq!(redis.cmd(&["EXISTS", "count:job:2"]), ":1");
}

/// The other Redoubt is played by the lease key itself, as the writer's
/// renewals write it (`NODE SEQ REPLAYING`): so the window where Redis is
/// back and the writer has not replayed yet is held open for as long as
/// the test needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_others_wait_until_the_writer_has_replayed() {
    let mut redis = aof_redis();
    redis.cmd(&["SET", "count:jobs", "7"]);
    let lease = |redis: &RedisServer, v: &str| {
        let set = ["SET", proxy::writer::LEASE_KEY, v, "PX", "600000"];
        assert_eq!(redis.cmd(&set), "+OK");
    };
    lease(&redis, "node-a 5 0");
    let wb = Writer::alone();
    let b = instance(&redis, "node-b", wb.clone()).await;
    b.wait_knows("default");
    test_support::wait_for(
        "node-b to see node-a's lease",
        Duration::from_secs(5),
        || !wb.holds(),
    );
    let mut cb = b.f.raw().await;

    redis.kill();
    b.f.wait_state(State::Down, Duration::from_secs(5)).await;
    test_support::wait_for("node-b to wait for node-a", Duration::from_secs(5), || {
        wb.waiting()
    });
    redis.start_again();
    // node-a is back and replaying what it took during the outage.
    lease(&redis, "node-a 6 1");
    b.f.wait_state(State::Recovering, Duration::from_secs(10))
        .await;
    let refused = err_text(&cb.cmd(&["INCR", "count:jobs"]).await);
    assert!(
        refused.starts_with("UNAVAILABLE")
            && refused.contains("another Redoubt (node node-a)")
            && refused.contains("replaying")
            && refused.contains("not executed"),
        "{refused}"
    );
    assert_eq!(cb.cmd(&["GET", "count:jobs"]).await, Frame::bulk("7"));
    assert_eq!(
        redis.cmd(&["GET", "count:jobs"]),
        "7",
        "nothing reached redis"
    );
    assert!(wb.waiting());

    // node-a's journal is drained: node-b sends writes to Redis again.
    redis.cmd(&["SET", "count:jobs", "9"]);
    lease(&redis, "node-a 7 0");
    b.f.wait_state(State::Up, Duration::from_secs(10)).await;
    assert!(!wb.waiting());
    assert_eq!(cb.cmd(&["INCR", "count:jobs"]).await, Frame::Integer(10));
    assert_eq!(redis.cmd(&["GET", "count:jobs"]), "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_silent_past_a_lease_life_after_the_outage_is_taken_as_gone() {
    let mut redis = aof_redis();
    let set = [
        "SET",
        proxy::writer::LEASE_KEY,
        "node-a 5 0",
        "PX",
        "600000",
    ];
    assert_eq!(redis.cmd(&set), "+OK");
    let wb = Writer::alone();
    let b = instance(&redis, "node-b", wb.clone()).await;
    b.wait_knows("default");
    test_support::wait_for(
        "node-b to see node-a's lease",
        Duration::from_secs(5),
        || !wb.holds(),
    );
    redis.kill();
    b.f.wait_state(State::Down, Duration::from_secs(5)).await;
    redis.start_again();
    b.f.wait_state(State::Recovering, Duration::from_secs(10))
        .await;
    let held = std::time::Instant::now();
    // node-a never renews: after a lease's life and one renewal period,
    // node-b stops waiting.
    b.f.wait_state(State::Up, Duration::from_secs(20)).await;
    let waited = held.elapsed();
    assert!(
        waited >= Duration::from_millis(proxy::writer::LEASE_MS),
        "stopped waiting after {waited:?}"
    );
    let mut cb = b.f.raw().await;
    assert_eq!(cb.cmd(&["SET", "count:x", "1"]).await, Frame::simple("OK"));
    assert_eq!(redis.cmd(&["GET", "count:x"]), "1");
}
