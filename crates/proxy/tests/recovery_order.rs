//! A durable key written while Redis comes back: its commands reach Redis in
//! the order they were acknowledged, even when the replay drains while one
//! of its journal appends is still being written (found by the ioredis
//! producer test in tests/clients/node/test/app-events.test.js).

mod common;

use std::time::Duration;

use common::*;
use proxy::outage::Outage;
use resp::Frame;
use upstream::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_during_recovery_reach_redis_in_acknowledged_order() {
    let mut redis = RedisServer::start(&[]);
    let s = durable(&redis, "q:*").await;
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

/// Sessions read and rewrite their keys without pause while Redis comes
/// back: every read answers the value last acknowledged for the key, also
/// at the moment the drained replay hands the keys back to Redis (a read
/// that chose the local store just before must not answer from the store
/// emptied under it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_the_hand_back_to_redis_answer_the_last_write() {
    const CLIENTS: usize = 8;
    const KEYS: usize = 16;
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = durable(&redis, "s:*").await;
    let (f, journal, outage) = (&s.f, &s.journal, &s.outage);
    let addr = f.addr();
    for round in 0..3 {
        redis.kill();
        f.wait_state(State::Down, Duration::from_secs(5)).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (addr, stop) = (addr.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut conn = Raw::connect(&addr).await;
                let keys: Vec<String> = (0..KEYS).map(|k| format!("s:{round}:{c}:{k}")).collect();
                let mut last: Vec<Option<String>> = vec![None; KEYS];
                let mut n = 0u64;
                let mut wrong = Vec::new();
                // Every key written once during the outage, then read and
                // rewritten in turn.
                while n < KEYS as u64 || !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let k = (n as usize) % KEYS;
                    if let Some(want) = &last[k] {
                        let got = conn.cmd(&["GET", &keys[k]]).await;
                        if got != Frame::Bulk(bytes::Bytes::from(want.clone())) {
                            wrong.push((keys[k].clone(), want.clone(), got));
                        }
                    }
                    let v = format!("v{n}");
                    match conn.cmd(&["SET", &keys[k], &v]).await {
                        Frame::Simple(ok) if ok == "OK" => last[k] = Some(v),
                        other => panic!("SET {}: {other:?}", keys[k]),
                    }
                    n += 1;
                }
                (n, wrong)
            }));
        }
        redis.restart();
        let serving_locally = |o: &Outage| o.status_json()["serving_locally"] == true;
        test_support::wait_for("the journal to drain", Duration::from_secs(15), || {
            journal.pending_entries() == 0 && !serving_locally(outage)
        });
        stop.store(true, std::sync::atomic::Ordering::Release);
        for t in tasks {
            let (n, wrong) = t.await.unwrap();
            assert!(n >= KEYS as u64);
            assert!(
                wrong.is_empty(),
                "round {round}: {} of {n} reads differed from the last acknowledged write, first: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(3)]
            );
        }
    }
}
