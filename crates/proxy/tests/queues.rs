//! Job queues on durable keys through an outage: workers blocked on a
//! queue go on taking jobs from the local copy while Redis is down, and
//! what they took is replayed once, so Redis ends as if it had served them.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

fn keyspaces() -> Keyspaces {
    Keyspaces::new(vec![("rq:*".into(), Policy::Durable)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_workers_take_jobs_pushed_during_an_outage_and_redis_hears_of_it_once() {
    let mut redis = aof_redis();
    redis.cmd(&["RPUSH", "rq:queue:default", "job-1", "job-2"]);
    let s = start_local(&redis.url(), keyspaces(), "w", Default::default(), false).await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    wait_caught_up(&redis, &replica).await;
    let mut producer = s.f.raw().await;
    let mut worker = s.f.raw().await;

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Jobs queued before the outage are taken from the copy, oldest first.
    let take = ["BLMOVE", "rq:queue:default", "rq:wip", "LEFT", "RIGHT", "5"];
    assert_eq!(worker.cmd(&take).await, Frame::bulk("job-1"));
    assert_eq!(worker.cmd(&take).await, Frame::bulk("job-2"));
    // An idle worker blocks; a job pushed meanwhile wakes it at once.
    worker.send_cmd(&take).await;
    wait_blocked_locally(&s, 1).await;
    assert_eq!(
        producer.cmd(&["RPUSH", "rq:queue:default", "job-3"]).await,
        Frame::Integer(1)
    );
    let woke = tokio::time::timeout(Duration::from_secs(2), worker.read())
        .await
        .expect("the blocked worker is woken by the push, not by its 5 s timeout");
    assert_eq!(woke, Some(Frame::bulk("job-3")));
    // With nothing to take it answers nil at its own timeout, as Redis.
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        worker
            .cmd(&["BLPOP", "rq:queue:default", "rq:queue:high", "0.3"])
            .await,
        Frame::NullArray
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // An RQ-style enqueue: one transaction with a stream entry in it.
    let tx = [
        &["HSET", "rq:job:4", "status", "queued"][..],
        &["RPUSH", "rq:queue:default", "job-4"],
        &["SADD", "rq:queues", "rq:queue:default"],
        &["XADD", "rq:results:4", "*", "status", "queued"],
    ];
    assert_eq!(producer.cmd(&["MULTI"]).await, Frame::simple("OK"));
    for cmd in tx {
        assert_eq!(producer.cmd(cmd).await, Frame::simple("QUEUED"));
    }
    let Frame::Array(replies) = producer.cmd(&["EXEC"]).await else {
        panic!("EXEC answers an array")
    };
    assert_eq!(
        replies[..3],
        [Frame::Integer(1), Frame::Integer(1), Frame::Integer(1)]
    );
    let Frame::Bulk(entry_id) = &replies[3] else {
        panic!("XADD answers the new entry's id: {replies:?}")
    };
    let entry_id = String::from_utf8(entry_id.to_vec()).unwrap();
    assert_eq!(worker.cmd(&take).await, Frame::bulk("job-4"));

    // RQ finishes a job under WATCH: held by the local copy, and it
    // guards the transaction as Redis's would.
    assert_eq!(
        worker.cmd(&["WATCH", "rq:job:4"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        set_status(&mut worker, "rq:job:4", "finished").await,
        Frame::Array(vec![Frame::Integer(0)])
    );
    assert_eq!(
        worker.cmd(&["WATCH", "rq:job:4"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        producer.cmd(&["HSET", "rq:job:4", "by", "other"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        set_status(&mut worker, "rq:job:4", "lost").await,
        Frame::NullArray
    );

    redis.start_again();
    test_support::wait_for("the replay", Duration::from_secs(30), || {
        s.journal.pending_entries() == 0
    });
    assert_eq!(redis.cmd(&["LLEN", "rq:queue:default"]), ":0");
    assert_eq!(redis.cmd(&["LRANGE", "rq:wip", "0", "-1"]), "*4");
    assert_eq!(redis.cmd(&["LINDEX", "rq:wip", "0"]), "job-1");
    assert_eq!(redis.cmd(&["LINDEX", "rq:wip", "3"]), "job-4");
    assert_eq!(redis.cmd(&["HGET", "rq:job:4", "status"]), "finished");
    assert_eq!(redis.cmd(&["HGET", "rq:job:4", "by"]), "other");
    // The entry has the id its producer was told.
    assert_eq!(redis.cmd(&["XLEN", "rq:results:4"]), ":1");
    assert_eq!(
        redis.cmd(&["XRANGE", "rq:results:4", &entry_id, &entry_id]),
        "*1"
    );
}

/// A WATCH held by the local copy does not outlive the hand-back to
/// Redis: the copy it guarded is gone, so the transaction after it is not
/// run (nil, as when a watched key changed) and the client retries it
/// against Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_held_locally_aborts_a_transaction_run_after_the_hand_back() {
    let mut redis = aof_redis();
    redis.cmd(&["HSET", "rq:job:9", "status", "started"]);
    let s = start_local(&redis.url(), keyspaces(), "w", Default::default(), false).await;
    s.wait_knows("default");
    let replica = attach_replica(&s, &redis.url(), keyspaces()).await;
    wait_caught_up(&redis, &replica).await;
    let mut worker = s.f.raw().await;
    let mut producer = s.f.raw().await;

    redis.kill();
    s.f.wait_state(State::Down, Duration::from_secs(5)).await;
    assert_eq!(
        worker.cmd(&["WATCH", "rq:job:9"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        producer.cmd(&["RPUSH", "rq:queue:default", "job-9"]).await,
        Frame::Integer(1)
    );
    redis.start_again();
    s.f.wait_state(State::Up, Duration::from_secs(30)).await;
    assert_eq!(s.journal.pending_entries(), 0);
    // Redis's copy changes meanwhile: the watch could not have seen it.
    redis.cmd(&["HSET", "rq:job:9", "status", "requeued"]);

    assert_eq!(
        set_status(&mut worker, "rq:job:9", "finished").await,
        Frame::NullArray
    );
    assert_eq!(redis.cmd(&["HGET", "rq:job:9", "status"]), "requeued");
    // The retry runs in Redis, guarded there.
    assert_eq!(
        worker.cmd(&["WATCH", "rq:job:9"]).await,
        Frame::simple("OK")
    );
    assert_eq!(
        set_status(&mut worker, "rq:job:9", "finished").await,
        Frame::Array(vec![Frame::Integer(0)])
    );
    assert_eq!(redis.cmd(&["HGET", "rq:job:9", "status"]), "finished");
    assert_eq!(redis.cmd(&["LINDEX", "rq:queue:default", "0"]), "job-9");
}

/// `MULTI`, `HSET key status …`, `EXEC`: the transaction a worker ends a
/// job with; returns `EXEC`'s reply.
async fn set_status(worker: &mut Raw, key: &str, status: &str) -> Frame {
    assert_eq!(worker.cmd(&["MULTI"]).await, Frame::simple("OK"));
    assert_eq!(
        worker.cmd(&["HSET", key, "status", status]).await,
        Frame::simple("QUEUED")
    );
    worker.cmd(&["EXEC"]).await
}
