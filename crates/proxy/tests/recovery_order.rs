//! A durable key written while Redis comes back: its commands reach Redis in
//! the order they were acknowledged, even when the replay drains while one
//! of its journal appends is still being written (found by the ioredis
//! producer test in tests/clients/node/test/app-events.test.js).

mod common;

use std::time::Duration;

use common::*;
use proxy::outage::Outage;
use proxy::policy::{Keyspaces, Policy};
use resp::Frame;
use upstream::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_recovery_reach_redis_in_acknowledged_order() {
    let mut redis = RedisServer::start(&[]);
    let s = start_local(
        &redis.url(),
        Keyspaces::new(vec![("q:*".into(), Policy::Durable)]),
        "test-node",
        Default::default(),
        false,
    )
    .await;
    // Local data goes only to sessions whose Redis user is known: here
    // unauthenticated ones, Redis's `default`.
    s.wait_knows("default");
    let (f, journal, outage) = (&s.f, &s.journal, &s.outage);
    let mut c = f.raw().await;

    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    let mut n = 0u32;
    for _ in 0..50 {
        n += 1;
        push(&mut c, n).await;
    }
    // One client pushing one item after another while Redis comes back
    // and the journal drains: at the moment the replay finds the journal
    // empty, one of its appends is usually still on its way to disk.
    redis.restart();
    let serving_locally = |o: &Outage| o.status_json()["serving_locally"] == true;
    while serving_locally(outage) || journal.pending_entries() > 0 {
        n += 1;
        push(&mut c, n).await;
    }
    for _ in 0..100 {
        n += 1;
        push(&mut c, n).await;
    }
    test_support::wait_for("the journal to drain", Duration::from_secs(10), || {
        journal.pending_entries() == 0 && !serving_locally(outage)
    });
    let mut direct = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let got: Vec<u32> = redis::cmd("LRANGE")
        .arg("q:events")
        .arg(0)
        .arg(-1)
        .query_async(&mut direct)
        .await
        .unwrap();
    let want: Vec<u32> = (1..=n).collect();
    if got != want {
        let first = got.iter().zip(&want).position(|(g, w)| g != w);
        panic!(
            "{} items in redis for {n} pushed; first out of place at index {first:?}: {:?}",
            got.len(),
            first.map(|i| &got[i.saturating_sub(2)..(i + 3).min(got.len())])
        );
    }
}

async fn push(c: &mut Raw, item: u32) {
    let r = c.cmd(&["RPUSH", "q:events", &item.to_string()]).await;
    assert!(matches!(r, Frame::Integer(_)), "RPUSH {item}: {r:?}");
}
