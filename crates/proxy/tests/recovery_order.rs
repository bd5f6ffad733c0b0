//! A durable key written while Redis comes back: its commands reach Redis in
//! the order they were acknowledged, even when the replay drains while one
//! of its journal appends is still being written (found by the ioredis
//! producer test in tests/clients/node/test/app-events.test.js).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use proxy::outage::Outage;
use proxy::policy::{Keyspaces, Policy};
use proxy::{LimitsConfig, Proxy, ProxySettings};
use resp::Frame;
use upstream::health::spawn_prober;
use upstream::{State, Upstream, UpstreamConfig, UpstreamUrl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_recovery_reach_redis_in_acknowledged_order() {
    let mut redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        journal::Journal::open(dir.path(), journal::JournalConfig::default()).unwrap();
    let journal = Arc::new(journal);
    let keyspaces = Keyspaces::new(vec![("q:*".into(), Policy::Durable)]);
    let outage = Outage::new(keyspaces, journal.clone(), Arc::default()).unwrap();
    let url = UpstreamUrl::parse(&redis.url()).unwrap();
    let health = spawn_prober(
        url.clone(),
        upstream::HealthConfig {
            interval_ms: 50,
            timeout_ms: 500,
            down_after: 2,
            up_after: 2,
        },
    );
    outage.spawn_recovery(
        url.clone(),
        dir.path().to_path_buf(),
        "test-node".into(),
        health.clone(),
    );
    let proxy = Proxy::start(
        ProxySettings {
            listen: "127.0.0.1:0".into(),
            limits: LimitsConfig::default(),
            outage: Some(outage.clone()),
            auth: Default::default(),
        },
        Upstream::new(url.clone(), UpstreamConfig::default()),
        health.clone(),
    )
    .await
    .unwrap();
    let f = Fixture {
        proxy,
        health,
        upstream: Upstream::new(url, UpstreamConfig::default()),
    };
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    // Local data goes only to sessions whose Redis user is known: here
    // unauthenticated ones, Redis's `default`.
    let access = f.proxy.access().unwrap().clone();
    test_support::wait_for("default's ACL", Duration::from_secs(5), || {
        access.knows("default")
    });
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
    while serving_locally(&outage) || journal.pending_entries() > 0 {
        n += 1;
        push(&mut c, n).await;
    }
    for _ in 0..100 {
        n += 1;
        push(&mut c, n).await;
    }
    test_support::wait_for("the journal to drain", Duration::from_secs(10), || {
        journal.pending_entries() == 0 && !serving_locally(&outage)
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
