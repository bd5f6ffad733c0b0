//! What client libraries see at the edges of an outage: a refused connect
//! is an outage at once, blocking commands wait as Redis would have them
//! wait, a blocked command whose connection broke closes the client (which
//! libraries retry), and commands may be held, bounded, for Redis.

mod common;

use std::time::Duration;

use common::*;
use proxy::policy::{Keyspaces, Policy};
use proxy::LimitsConfig;
use resp::Frame;
use upstream::{HealthConfig, State};

async fn wait_no_connections(f: &Fixture) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.upstream.shared_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pooled connection should see Redis gone"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Redoubt with `pattern` durable in front of `redis`, its prober slow to
/// notice on its own (every 10 s, Down after two failed probes), once it
/// knows the default user.
async fn with_a_slow_prober(redis: &RedisServer, pattern: &str) -> Local {
    let slow = HealthConfig {
        interval_ms: 10_000,
        timeout_ms: 500,
        down_after: 2,
        up_after: 1,
    };
    let s = start_local_health(
        &redis.url(),
        Keyspaces::new(vec![(pattern.into(), Policy::Durable)]),
        "n",
        Default::default(),
        false,
        journal::JournalConfig::default(),
        slow,
    )
    .await;
    s.wait_knows("default");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_an_outage_at_once_and_wakes_the_prober() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = with_a_slow_prober(&redis, "sess:*").await;
    let mut c = s.f.raw().await;
    assert_eq!(c.cmd(&["SET", "plain", "1"]).await, Frame::simple("OK"));
    redis.kill();
    wait_no_connections(&s.f).await;
    assert_eq!(
        s.f.health.state(),
        State::Up,
        "the prober has not looked yet"
    );
    // The durable write is journaled at once, not refused "cannot reach".
    assert_eq!(c.cmd(&["SET", "sess:a", "v"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["GET", "sess:a"]).await, Frame::bulk("v"));
    let text = err_text(&c.cmd(&["GET", "plain"]).await);
    assert!(text.starts_with("UNAVAILABLE"), "{text}");
    // Each refused connect had the prober look at once.
    s.f.wait_state(State::Down, Duration::from_secs(3)).await;
    assert_eq!(s.journal.pending_entries(), 1);
    redis.start_again();
    test_support::wait_for("the replay", Duration::from_secs(30), || {
        s.journal.pending_entries() == 0
    });
    assert_eq!(redis.cmd(&["GET", "sess:a"]), "v");
}

/// Redoubt with `q:*` durable (and a replica of it) in front of a Redis
/// that was just killed, whose slow prober has not said Down yet.
async fn killed_before_the_prober_looked() -> (RedisServer, Local) {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let s = with_a_slow_prober(&redis, "q:*").await;
    redis.cmd(&["RPUSH", "q:jobs", "j1"]);
    let keyspaces = Keyspaces::new(vec![("q:*".into(), Policy::Durable)]);
    let replica = attach_replica(&s, &redis.url(), keyspaces).await;
    wait_caught_up(&redis, &replica).await;
    redis.kill();
    wait_no_connections(&s.f).await;
    assert_eq!(
        s.f.health.state(),
        State::Up,
        "the prober has not looked yet"
    );
    (redis, s)
}

/// Waits for the replay and Up after Redis restarted, having the slow
/// prober of [`killed_before_the_prober_looked`] look meanwhile.
fn back_up(s: &Local) {
    test_support::wait_for("the replay", Duration::from_secs(30), || {
        s.f.health.poke();
        s.journal.pending_entries() == 0 && s.f.health.state() == State::Up
    });
}

/// A blocking command that needs a connection of its own, sent after the
/// kill but before the prober has looked (a queue worker's next BLPOP
/// after its connection broke): the refused connect has the prober look,
/// and the command is served as during the outage, not refused "cannot
/// reach".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_refused_its_connection_waits_for_the_verdict() {
    let (mut redis, s) = killed_before_the_prober_looked().await;
    let mut worker = s.f.raw().await;
    let mut producer = s.f.raw().await;
    // The job queued before the kill is taken from the local copy.
    assert_eq!(
        worker.cmd(&["BLPOP", "q:jobs", "5"]).await,
        Frame::Array(vec![Frame::bulk("q:jobs"), Frame::bulk("j1")])
    );
    assert_eq!(s.f.health.state(), State::Down);
    // The worker blocks again; a job pushed during the outage wakes it.
    worker.send_cmd(&["BLPOP", "q:jobs", "5"]).await;
    wait_blocked_locally(&s, 1).await;
    assert_eq!(
        producer.cmd(&["RPUSH", "q:jobs", "j2"]).await,
        Frame::Integer(1)
    );
    assert_eq!(
        worker.read().await,
        Some(Frame::Array(vec![Frame::bulk("q:jobs"), Frame::bulk("j2")]))
    );
    redis.start_again();
    back_up(&s);
    assert_eq!(redis.cmd(&["LLEN", "q:jobs"]), ":0");
}

/// The same for a WATCH: held on the local copy, so the transaction
/// after it runs there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_refused_its_connection_waits_for_the_verdict() {
    let (mut redis, s) = killed_before_the_prober_looked().await;
    let mut c = s.f.raw().await;
    assert_eq!(c.cmd(&["WATCH", "q:n"]).await, Frame::simple("OK"));
    assert_eq!(s.f.health.state(), State::Down);
    assert_eq!(c.cmd(&["MULTI"]).await, Frame::simple("OK"));
    assert_eq!(c.cmd(&["INCR", "q:n"]).await, Frame::simple("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        Frame::Array(vec![Frame::Integer(1)])
    );
    redis.start_again();
    back_up(&s);
    assert_eq!(redis.cmd(&["GET", "q:n"]), "1");
    assert_eq!(redis.cmd(&["LLEN", "q:jobs"]), ":1");
}

/// Writers busy at the instant Redis is killed: a command that never
/// left Redoubt (its connection died first) is routed as during the
/// outage, not answered "not sent", which an app such as BullMQ takes for
/// a failed job. Each reply is OK, or UNCERTAIN for one that was sent and
/// lost; every OK is in Redis after the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_caught_unsent_by_the_kill_are_served_as_during_the_outage() {
    let mut redis = aof_redis();
    let s = durable(&redis, "sess:*").await;
    // A few kills: the window (a command queued on a connection that dies
    // before writing it) is narrow.
    for round in 0..6 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..16 {
            let mut c = s.f.raw().await;
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut refused = Vec::new();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("sess:{round}:{w}:{i}");
                    match c.cmd(&["SET", &key, "v"]).await {
                        Frame::Simple(_) => acked.push(key),
                        f => {
                            let text = err_text(&f);
                            if !text.starts_with("UNCERTAIN") {
                                refused.push(format!("{key}: {text}"));
                            }
                        }
                    }
                    i += 1;
                }
                (acked, refused)
            }));
        }
        let before: u64 = redis
            .cmd(&["DBSIZE"])
            .trim_start_matches(':')
            .parse()
            .unwrap();
        test_support::wait_for("writes flowing", Duration::from_secs(5), || {
            redis
                .cmd(&["DBSIZE"])
                .trim_start_matches(':')
                .parse::<u64>()
                .unwrap_or(0)
                > before + 200
        });
        redis.kill();
        s.f.wait_state(State::Down, Duration::from_secs(5)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            let (a, refused) = w.await.unwrap();
            assert!(
                refused.is_empty(),
                "round {round}: refused at the kill: {refused:?}"
            );
            acked.extend(a);
        }
        redis.start_again();
        test_support::wait_for("the replay", Duration::from_secs(30), || {
            s.journal.pending_entries() == 0 && s.f.health.state() == State::Up
        });
        let missing: Vec<&String> = acked
            .iter()
            .filter(|k| redis.cmd(&["EXISTS", k]) != ":1")
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged writes missing: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_wait_through_down_as_redis_would_have_them_wait() {
    let mut redis = RedisServer::start(&["--appendonly", "yes"]);
    let f = start_with(&redis.url(), fast_health(), LimitsConfig::default()).await;
    // Up first: the prober starts Down ("not probed yet"), so a wait for
    // Down right after the kill must not see that start instead.
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut c = f.raw().await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    // Their own timeout passes: nil, as Redis answers.
    let started = tokio::time::Instant::now();
    assert_eq!(c.cmd(&["BLPOP", "q", "0.2"]).await, Frame::NullArray);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        c.cmd(&["BLMOVE", "q", "r", "LEFT", "LEFT", "0.05"]).await,
        Frame::NullBulk
    );
    let mut c3 = f.raw().await;
    c3.cmd(&["HELLO", "3"]).await;
    assert_eq!(c3.cmd(&["BRPOP", "q", "0.05"]).await, Frame::Null);
    // Blocked for ever: sent to Redis once it is back, and served.
    c.send_cmd(&["BRPOP", "q", "0"]).await;
    redis.start_again();
    f.wait_state(State::Up, Duration::from_secs(10)).await;
    wait_blocked(&redis, 1);
    redis.cmd(&["LPUSH", "q", "x"]);
    assert_eq!(
        c.read().await,
        Some(Frame::Array(vec![Frame::bulk("q"), Frame::bulk("x")]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_command_whose_connection_broke_closes_the_client() {
    let mut redis = RedisServer::new();
    let f = start(&redis).await;
    let mut c = f.raw().await;
    assert_eq!(c.cmd(&["PING"]).await, Frame::simple("PONG"));
    c.send_cmd(&["BLMOVE", "jobs", "active", "RIGHT", "LEFT", "0"])
        .await;
    wait_blocked(&redis, 1);
    redis.kill();
    // No error reply a worker would take as the answer: the connection
    // closes, and client libraries reconnect.
    assert_eq!(c.read().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_held_for_redis_up_to_the_configured_bound() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    redis.cmd(&["SET", "k", "kept"]);
    let limits = LimitsConfig {
        hold_during_outage_ms: 20_000,
        ..LimitsConfig::default()
    };
    // Probes that tolerate a loaded machine: a healthy Redis flapping to
    // Down would refuse the held command for a reason this test is not
    // about.
    let steady = HealthConfig {
        interval_ms: 50,
        timeout_ms: 1000,
        down_after: 2,
        up_after: 1,
    };
    let f = start_with(&redis.url(), steady, limits).await;
    // Up first: the prober starts Down ("not probed yet"), so a wait for
    // Down right after the kill must not see that start instead.
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut c = f.raw().await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    c.send_cmd(&["GET", "k"]).await;
    redis.start_again();
    // Held, then answered by the Redis that came back.
    assert_eq!(c.read().await, Some(Frame::bulk("kept")));

    let short = LimitsConfig {
        hold_during_outage_ms: 150,
        ..LimitsConfig::default()
    };
    let f2 = start_with(&redis.url(), fast_health(), short).await;
    // Up first: the prober starts Down ("not probed yet"), so a wait for
    // Down right after the kill must not see that start instead.
    f2.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut c2 = f2.raw().await;
    redis.kill();
    f2.wait_state(State::Down, Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    let text = err_text(&c2.cmd(&["GET", "k"]).await);
    assert!(text.starts_with("UNAVAILABLE"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_sent_on_after_an_outage_keeps_only_what_is_left_of_its_timeout() {
    let mut redis = RedisServer::start(&["--appendonly", "yes"]);
    let f = start_with(&redis.url(), fast_health(), LimitsConfig::default()).await;
    // Up first: the prober starts Down ("not probed yet"), so a wait for
    // Down right after the kill must not see that start instead.
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut c = f.raw().await;
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    let started = tokio::time::Instant::now();
    c.send_cmd(&["BLPOP", "never", "2"]).await;
    // Down for about half of its block time, then Redis is back.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.start_again();
    assert_eq!(c.read().await, Some(Frame::NullArray));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(2700),
        "BLPOP 2 answered after {took:?}: its whole timeout again after the outage would be ~3 s"
    );
}
