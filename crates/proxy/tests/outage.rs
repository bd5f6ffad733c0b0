//! Outages made for real: SIGSTOP, SIGKILL, restart, CLIENT KILL, idle
//! timeouts, write rejections. Every client must be answered within its
//! deadline; recovery must be noticed within the probe budget.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proxy::LimitsConfig;
use resp::Frame;
use upstream::State;

const TIMEOUT_MS: u64 = 400;

fn limits() -> LimitsConfig {
    LimitsConfig {
        command_timeout_ms: TIMEOUT_MS,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_never_leaves_a_client_waiting_past_its_deadline() {
    let redis = RedisServer::new();
    // Slow probes so the in-flight commands meet their deadline before
    // Down is declared: this is the case that hangs twemproxy.
    let health = upstream::HealthConfig {
        interval_ms: 250,
        timeout_ms: 250,
        down_after: 4,
        up_after: 2,
    };
    let f = start_with(&redis.url(), health, limits()).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut r = f.raw().await;
        assert_eq!(r.cmd(&["PING"]).await, Frame::simple("PONG"));
        clients.push(r);
    }
    redis.pause();
    let mut tasks = Vec::new();
    for (i, mut r) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let reply = if i % 2 == 0 {
                r.cmd(&["SET", "k", "v"]).await
            } else {
                r.cmd(&["GET", "k"]).await
            };
            (i, start.elapsed(), reply, r)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        let (i, took, reply, r) = t.await.unwrap();
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS + 100),
            "client {i} waited {took:?}"
        );
        let text = err_text(&reply);
        if i % 2 == 0 {
            assert!(
                text.starts_with("UNCERTAIN") && text.contains("may have been executed"),
                "{text}"
            );
        } else {
            assert!(
                text.starts_with("UNAVAILABLE") && text.contains("not executed"),
                "{text}"
            );
        }
        clients.push(r);
    }
    redis.resume();
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    // The same client connections work again; the late replies to the
    // commands that timed out were discarded, not handed to anyone.
    for (i, r) in clients.iter_mut().enumerate() {
        let key = format!("after{i}");
        assert_eq!(r.cmd(&["SET", &key, "1"]).await, Frame::simple("OK"));
        assert_eq!(r.cmd(&["GET", &key]).await, Frame::bulk("1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_redis_fails_fast_then_recovers_after_restart() {
    let mut redis = RedisServer::new();
    let f = start_with(&redis.url(), fast_health(), limits()).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut r = f.raw().await;
    assert_eq!(r.cmd(&["SET", "a", "1"]).await, Frame::simple("OK"));
    redis.kill();
    f.wait_state(State::Down, Duration::from_secs(5)).await;
    for cmd in [
        &["GET", "a"][..],
        &["SET", "a", "2"][..],
        &["INCR", "n"][..],
    ] {
        let start = Instant::now();
        let reply = r.cmd(cmd).await;
        let took = start.elapsed();
        assert!(
            took <= Duration::from_millis(50),
            "{cmd:?} took {took:?} while Down"
        );
        let text = err_text(&reply);
        assert!(
            text.starts_with("UNAVAILABLE") && text.contains("command not executed"),
            "{text}"
        );
    }
    redis.restart();
    let back = Instant::now();
    let budget = Duration::from_millis(2 * 50 * 12 / 10 + 200);
    loop {
        if r.cmd(&["GET", "a"]).await.error_text().is_none() {
            break;
        }
        assert!(
            back.elapsed() <= budget,
            "not serving {:?} after Redis came back",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        back.elapsed() <= budget,
        "served again after {:?}",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redoubt_started_before_redis_waits_for_it() {
    let port = test_support::free_port();
    let f = start_with(
        &format!("redis://127.0.0.1:{port}"),
        fast_health(),
        limits(),
    )
    .await;
    let mut r = f.raw().await;
    let text = err_text(&r.cmd(&["GET", "x"]).await);
    assert!(text.starts_with("UNAVAILABLE"), "{text}");
    assert_eq!(f.health.state(), State::Down);
    let redis = RedisServer::start_on_port(port, &[]);
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    assert_eq!(r.cmd(&["SET", "x", "1"]).await, Frame::simple("OK"));
    assert_eq!(redis.cmd(&["GET", "x"]), "1");
}

/// Records every state the prober publishes until dropped.
fn record_states(f: &Fixture) -> std::sync::Arc<std::sync::Mutex<Vec<State>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rx = f.health.subscribe();
    let s = seen.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let st = rx.borrow().state;
            s.lock().unwrap().push(st);
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_and_idle_timeout_do_not_mark_redis_down() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let mut r = f.raw().await;
    assert_eq!(r.cmd(&["SET", "k", "v"]).await, Frame::simple("OK"));
    let seen = record_states(&f);
    // Kill every connection Redis has, the prober's included.
    let killed = redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    // The session reconnects underneath and the read succeeds.
    assert_eq!(r.cmd(&["GET", "k"]).await, Frame::bulk("v"));
    // Redis closes idle connections after 1 s: ours too, then reconnect.
    redis.cmd(&["CONFIG", "SET", "timeout", "1"]);
    let before = redis.cmd(&["INFO", "stats"]);
    let conns = |info: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let start_total = conns(&before);
    // Wait until Redis has really dropped the idle pooled connection: the
    // next command then has to open a new one.
    test_support::wait_for(
        "redis to close idle connections",
        Duration::from_secs(10),
        || {
            redis
                .cmd(&["INFO", "clients"])
                .lines()
                .any(|l| l.trim() == "connected_clients:2")
        },
    );
    assert_eq!(r.cmd(&["GET", "k"]).await, Frame::bulk("v"));
    assert!(
        conns(&redis.cmd(&["INFO", "stats"])) > start_total + 1,
        "a new pooled connection was opened"
    );
    // Ten probe intervals after all that, the state never left Up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let states = seen.lock().unwrap().clone();
    assert!(
        states.iter().all(|s| *s == State::Up),
        "states seen: {states:?}"
    );
    assert_eq!(f.health.state(), State::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rejection_is_seen_as_writes_down() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    redis.cmd(&["SET", "filler", "xxxxxxxxxxxxxxxxxxxxxxxx"]);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    f.wait_state(State::WritesDown, Duration::from_secs(5))
        .await;
    let mut r = f.raw().await;
    // Reads still pass; Redis itself rejects the write.
    assert_eq!(
        r.cmd(&["GET", "filler"]).await,
        Frame::bulk("xxxxxxxxxxxxxxxxxxxxxxxx")
    );
    assert!(err_text(&r.cmd(&["SET", "x", "y"]).await).starts_with("OOM"));
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    f.wait_state(State::Up, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_connects_leave_no_upstream_connections_behind() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    let addr = f.addr();
    let mut handles = Vec::new();
    for batch in 0..20 {
        for i in 0..50 {
            let addr = addr.clone();
            handles.push(tokio::spawn(async move {
                let mut r = Raw::connect(&addr).await;
                match i % 5 {
                    0 => assert_eq!(r.cmd(&["BLPOP", "nothing", "0.01"]).await, Frame::NullArray),
                    1 => {
                        assert_eq!(r.cmd(&["WATCH", "w"]).await, Frame::simple("OK"));
                    }
                    2 => {
                        let _ = r.cmd(&["SUBSCRIBE", "c"]).await;
                    }
                    _ => assert_eq!(
                        r.cmd(&["SET", &format!("k{batch}-{i}"), "v"]).await,
                        Frame::simple("OK")
                    ),
                }
            }));
        }
        for h in handles.drain(..) {
            h.await.unwrap();
        }
    }
    test_support::wait_for(
        "sessions to finish closing",
        Duration::from_secs(10),
        || f.proxy.clients() == 0,
    );
    test_support::wait_for(
        "dedicated connections to close",
        Duration::from_secs(10),
        || f.upstream.dedicated_in_use() == 0,
    );
    // Redis sees only the shared pool (2), the prober, and our CLIENT LIST;
    // a closed socket takes Redis a moment to notice, hence the wait.
    test_support::wait_for(
        "redis to see only pooled connections",
        Duration::from_secs(10),
        || redis.cmd(&["CLIENT", "LIST"]).lines().count() <= 2 + 1 + 1,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_get_protocol_errors_and_others_carry_on() {
    let redis = RedisServer::new();
    let lim = LimitsConfig {
        proto_max_bulk_len: 1 << 20,
        max_query_buffer_bytes: 4 << 20,
        ..Default::default()
    };
    let f = start_with(&redis.url(), fast_health(), lim).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut bystander = f.raw().await;
    assert_eq!(bystander.cmd(&["SET", "b", "1"]).await, Frame::simple("OK"));

    for (bad, expect) in [
        (&b"*abc\r\n"[..], "Protocol error: invalid multibulk length"),
        (
            &b"*1\r\n:5\r\n"[..],
            "Protocol error: expected '$', got ':'",
        ),
        (
            &b"*2\r\n$3\r\nSET\r\n$2000000\r\n"[..],
            "exceeds limits.proto_max_bulk_len",
        ),
        (
            &b"SET \"unterminated\r\n"[..],
            "Protocol error: unbalanced quotes",
        ),
    ] {
        let mut r = f.raw().await;
        // A good command before the bad bytes is still answered first.
        let mut out = bytes::BytesMut::new();
        resp::frame::encode_command(&mut out, &["PING"]);
        out.extend_from_slice(bad);
        r.send(&out).await;
        assert_eq!(r.read().await, Some(Frame::simple("PONG")));
        let text = err_text(&r.read().await.expect("an error reply"));
        assert!(
            text.starts_with("ERR Protocol error")
                && text.contains(expect)
                && text.contains("connection closed"),
            "{text}"
        );
        assert_eq!(
            r.read().await,
            None,
            "connection closed after a protocol error"
        );
    }
    let nested = "*1\r\n".repeat(1000);
    let mut r = f.raw().await;
    r.send(nested.as_bytes()).await;
    // Requests must be arrays of bulk strings: a nested array is refused.
    assert!(err_text(&r.read().await.unwrap()).contains("Protocol error"));
    assert_eq!(bystander.cmd(&["GET", "b"]).await, Frame::bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_beyond_max_clients_are_told_and_closed() {
    let redis = RedisServer::new();
    let lim = LimitsConfig {
        max_clients: 3,
        ..Default::default()
    };
    let f = start_with(&redis.url(), fast_health(), lim).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut r = f.raw().await;
        assert_eq!(r.cmd(&["PING"]).await, Frame::simple("PONG"));
        held.push(r);
    }
    let mut extra = f.raw().await;
    let text = err_text(&extra.read().await.expect("an error before closing"));
    assert!(text.contains("max number of clients reached"), "{text}");
    assert_eq!(extra.read().await, None);
    // One leaves; a newcomer gets in.
    drop(held.pop());
    test_support::wait_for("the slot to free up", Duration::from_secs(5), || {
        f.proxy.clients() == 2
    });
    let mut r = f.raw().await;
    assert_eq!(r.cmd(&["PING"]).await, Frame::simple("PONG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_pipeline_is_throttled_not_refused() {
    let redis = RedisServer::new();
    let lim = LimitsConfig {
        max_inflight_per_client: 8,
        ..Default::default()
    };
    let f = start_with(&redis.url(), fast_health(), lim).await;
    f.wait_state(State::Up, Duration::from_secs(5)).await;
    let mut r = f.raw().await;
    // 2,000 INCRs in one write: far beyond 8 in flight. Redoubt reads them
    // as replies free up, and every one is answered, in order.
    let mut out = bytes::BytesMut::new();
    for _ in 0..2000 {
        resp::frame::encode_command(&mut out, &["INCR", "p"]);
    }
    r.send(&out).await;
    for i in 1..=2000 {
        assert_eq!(r.read().await.unwrap(), Frame::Integer(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prober_keeps_probing_while_client_work_holds_every_worker() {
    let redis = RedisServer::new();
    let f = start(&redis).await;
    // Both workers of the data path's runtime busy for 3.5 s (the test
    // body itself runs on another thread).
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(3500)) }))
        .collect();
    // Meanwhile Redis keeps seeing probes: the probe connection is never
    // idle much longer than the probe interval.
    let started = Instant::now();
    let mut longest_idle = 0u64;
    while started.elapsed() < Duration::from_millis(3300) {
        let list = redis.cmd(&["CLIENT", "LIST"]);
        let idle = list
            .lines()
            .filter(|l| l.contains("name=redoubt-probe"))
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix("idle="))?
                    .parse::<u64>()
                    .ok()
            })
            .min()
            .expect("the probe connection");
        longest_idle = longest_idle.max(idle);
        std::thread::sleep(Duration::from_millis(100));
    }
    for b in busy {
        b.await.unwrap();
    }
    assert!(
        longest_idle <= 1,
        "the probe connection sat idle {longest_idle} s while client work held the workers"
    );
    assert_eq!(f.health.state(), State::Up);
}
