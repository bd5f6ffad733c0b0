//! Subscribers stay connected through an outage: no error reply on their
//! connection, local `PUBLISH` reaches them while Redis is down, and they
//! are subscribed again upstream when it is back.

mod common;

use std::time::Duration;

use common::*;
use resp::Frame;
use upstream::State;

fn push(parts: &[&str]) -> Frame {
    Frame::Array(parts.iter().map(Frame::bulk).collect())
}

fn confirm(kind: &str, name: &str, n: i64) -> Frame {
    Frame::Array(vec![
        Frame::bulk(kind),
        Frame::bulk(name),
        Frame::Integer(n),
    ])
}

/// Waits until Redis has `n` subscribers on `channel`.
fn wait_numsub(redis: &RedisServer, channel: &str, n: usize) {
    test_support::wait_for(
        &format!("{n} subscribers on {channel} in redis"),
        Duration::from_secs(10),
        || {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &redis.port().to_string(), "PUBSUB", "NUMSUB", channel])
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .nth(1)
                .is_some_and(|l| l.trim() == n.to_string())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_rides_through_a_kill_and_is_resubscribed() {
    let mut redis = RedisServer::new();
    let f = start(&redis).await;
    let mut sub = f.raw().await;
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "news"]).await,
        confirm("subscribe", "news", 1)
    );
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "sse:*"]).await,
        confirm("psubscribe", "sse:*", 2)
    );
    wait_numsub(&redis, "news", 1);

    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Still connected, answered here, and no error reply.
    assert_eq!(sub.cmd(&["PING"]).await, push(&["pong", ""]));
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "extra"]).await,
        confirm("subscribe", "extra", 3)
    );
    // A PUBLISH through this Redoubt reaches it while Redis is away.
    let mut publisher = f.raw().await;
    assert_eq!(
        publisher.cmd(&["PUBLISH", "news", "during"]).await,
        Frame::Integer(1)
    );
    assert_eq!(sub.read().await, Some(push(&["message", "news", "during"])));
    assert_eq!(
        publisher.cmd(&["PUBLISH", "sse:7", "p"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        sub.read().await,
        Some(Frame::Array(vec![
            Frame::bulk("pmessage"),
            Frame::bulk("sse:*"),
            Frame::bulk("sse:7"),
            Frame::bulk("p"),
        ]))
    );

    redis.start_again();
    f.wait_state(State::Up, Duration::from_secs(10)).await;
    wait_numsub(&redis, "extra", 1);
    wait_numsub(&redis, "news", 1);
    // Messages published in Redis after it is back arrive, and nothing
    // of the resubscribe is shown again.
    redis.cmd(&["PUBLISH", "news", "after"]);
    redis.cmd(&["PUBLISH", "extra", "e"]);
    redis.cmd(&["PUBLISH", "sse:1", "s"]);
    assert_eq!(sub.read().await, Some(push(&["message", "news", "after"])));
    assert_eq!(sub.read().await, Some(push(&["message", "extra", "e"])));
    assert_eq!(
        sub.read().await,
        Some(Frame::Array(vec![
            Frame::bulk("pmessage"),
            Frame::bulk("sse:*"),
            Frame::bulk("sse:1"),
            Frame::bulk("s"),
        ]))
    );
    // And Redis answers it again.
    assert_eq!(
        sub.cmd(&["UNSUBSCRIBE", "extra"]).await,
        confirm("unsubscribe", "extra", 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_during_an_outage_is_attached_when_redis_returns() {
    let mut redis = RedisServer::new();
    let f = start(&redis).await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    let mut sub = f.raw().await;
    sub.cmd(&["HELLO", "3"]).await;
    assert_eq!(
        sub.cmd(&["SUBSCRIBE", "jobs"]).await,
        Frame::Push(vec![
            Frame::bulk("subscribe"),
            Frame::bulk("jobs"),
            Frame::Integer(1)
        ])
    );
    redis.start_again();
    f.wait_state(State::Up, Duration::from_secs(10)).await;
    wait_numsub(&redis, "jobs", 1);
    redis.cmd(&["PUBLISH", "jobs", "j1"]);
    assert_eq!(
        sub.read().await,
        Some(Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("jobs"),
            Frame::bulk("j1")
        ]))
    );
}
