//! Redis comes back before health says so (the prober wants `up_after`
//! good probes): until then reads are still served from the near-cache, so
//! the tracker must not reconnect and flush it in between (found by the
//! redis-py session test in tests/clients/python/test_app_sessions.py:
//! users logged out for a moment as Redis returned).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proxy::near_cache::{spawn_tracker, Lookup, NearCache, Tracked, TrackerConfig};
use test_support::RedisServer;
use upstream::{HealthConfig, State, UpstreamUrl};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const WITHIN: Duration = Duration::from_secs(10);

async fn wait_state(h: &mut tokio::sync::watch::Receiver<upstream::Health>, s: State) {
    tokio::time::timeout(WITHIN, h.wait_for(|x| x.state == s))
        .await
        .unwrap_or_else(|_| panic!("health did not become {s:?}"))
        .expect("prober runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_serving_until_health_leaves_down() {
    let mut redis = RedisServer::new();
    let url = UpstreamUrl::parse(&redis.url()).unwrap();
    // About a second between Redis accepting again and health saying Up.
    let health = upstream::health::spawn_prober(
        url,
        HealthConfig {
            interval_ms: 50,
            timeout_ms: 100,
            down_after: 2,
            up_after: 20,
        },
    );
    let mut h = health.subscribe();
    wait_state(&mut h, State::Up).await;
    let cache = Arc::new(NearCache::new(
        1 << 20,
        300_000,
        Tracked::from_patterns(["sess:*"]).unwrap(),
    ));
    let within = WITHIN;
    let mut cfg = TrackerConfig::new(redis.addr(), upstream::Handshake::default());
    // Quick retries: without the fix it reconnects as soon as Redis accepts.
    cfg.backoff_base = Duration::from_millis(10);
    cfg.backoff_cap = Duration::from_millis(20);
    let tracker = spawn_tracker(cache.clone(), cfg, health.clone());
    let mut status = tracker.status();
    tokio::time::timeout(within, status.wait_for(|s| s.connected))
        .await
        .unwrap()
        .unwrap();
    let key = Bytes::from_static(b"sess:1");
    let t = cache.ticket(&key);
    assert!(cache.put_string(t, 0, key.clone(), Bytes::from_static(b"alice"), -1));

    redis.kill();
    wait_state(&mut h, State::Down).await;
    let within = WITHIN;
    redis.restart(); // returns once Redis accepts connections
    let start = Instant::now();
    let mut checks = 0;
    while health.state() == State::Down {
        assert!(start.elapsed() < within, "health never left Down");
        assert_eq!(
            cache.get_string(0, b"sess:1", now_ms()),
            Lookup::Hit(Bytes::from_static(b"alice")),
            "near-cache flushed while health still says Down ({:?} after Redis accepted; tracker {:?})",
            start.elapsed(),
            *status.borrow()
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        checks > 10,
        "the window was too short to tell: {checks} checks"
    );
    // Once Up, tracking restarts and the cache is flushed as before
    // (invalidations may have been missed).
    tokio::time::timeout(within, status.wait_for(|s| s.connects >= 2))
        .await
        .unwrap()
        .unwrap();
    assert!(cache.is_tracking() && cache.is_empty());
}
