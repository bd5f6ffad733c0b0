//! The near-cache: LRU under its byte bound, absolute expiry, staleness
//! after invalidations stop, and the tracker against a real `redis-server`
//! (writes by other clients, `FLUSHALL`, untracked keys, Redis killed and
//! restarted, Redis stopped while its socket stays open).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proxy::near_cache::{
    spawn_tracker, Cached, Lookup, NearCache, Tracked, Tracker, TrackerConfig, TrackerStatus,
    ENTRY_OVERHEAD, FIELD_OVERHEAD,
};
use test_support::RedisServer;
use tokio::sync::watch;
use upstream::{Credentials, Handshake, HealthConfig, HealthHandle, State, UpstreamUrl};

/// Every await on an event is bounded, so a broken tracker fails the test
/// instead of hanging it.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
const STALE: u64 = 300_000;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn tracked(globs: &[&str]) -> Tracked {
    Tracked::from_patterns(globs).expect("some patterns")
}

/// A cache with tracking marked as running, for tests of the cache alone.
fn live_cache(max_bytes: usize) -> NearCache {
    let c = NearCache::new(max_bytes, STALE, Tracked::Everything);
    c.start_tracking();
    c
}

fn put(c: &NearCache, db: u32, key: &str, value: &str, expire_at_ms: i64) -> bool {
    let t = c.ticket(key.as_bytes());
    c.put_string(t, db, b(key), b(value), expire_at_ms)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn wait_status(
    rx: &mut watch::Receiver<TrackerStatus>,
    what: &str,
    cond: impl FnMut(&TrackerStatus) -> bool,
) -> TrackerStatus {
    let got = match tokio::time::timeout(EVENT_TIMEOUT, rx.wait_for(cond)).await {
        Ok(Ok(s)) => Some(s.clone()),
        Ok(Err(_)) => panic!("tracker status channel closed while waiting for {what}"),
        Err(_) => None,
    };
    got.unwrap_or_else(|| panic!("timed out waiting for {what}; status {:?}", rx.borrow()))
}

/// A cache for `globs`, its tracker on `redis`, and the tracker connected.
async fn tracked_cache(
    redis: &RedisServer,
    globs: &[&str],
    health: HealthHandle,
) -> (Arc<NearCache>, Tracker, watch::Receiver<TrackerStatus>) {
    let cache = Arc::new(NearCache::new(1 << 20, STALE, tracked(globs)));
    let cfg = TrackerConfig::new(redis.addr(), Handshake::default());
    let tracker = spawn_tracker(cache.clone(), cfg, health);
    let mut rx = tracker.status();
    wait_status(&mut rx, "the first tracking connection", |s| s.connected).await;
    (cache, tracker, rx)
}

// ----- the cache alone -----

#[test]
fn lru_evicts_the_least_recently_used_entry_under_the_byte_bound() {
    // Each entry costs overhead + 2-byte key + 150-byte value; four fit in
    // 1000 bytes, five do not. (Under 1 MiB the cache is one shard, so the
    // order is exact LRU.)
    let size = ENTRY_OVERHEAD + 2 + 150;
    let c = live_cache(4 * size + 10);
    let v = "x".repeat(150);
    for k in ["k1", "k2", "k3", "k4"] {
        assert!(put(&c, 0, k, &v, -1), "{k} fits");
    }
    assert_eq!((c.len(), c.bytes()), (4, 4 * size));
    // Touch k1, so k2 is now the least recently used.
    assert!(c.get_string(0, b"k1", 0).hit().is_some());
    assert!(put(&c, 0, "k5", &v, -1));
    assert_eq!(c.get_string(0, b"k2", 0), Lookup::Miss, "k2 evicted");
    for k in ["k1", "k3", "k4", "k5"] {
        assert_eq!(c.get_string(0, k.as_bytes(), 0), Lookup::Hit(b(&v)), "{k}");
    }
    assert_eq!((c.len(), c.bytes()), (4, 4 * size));
    assert!(c.bytes() <= c.max_bytes());
}

#[test]
fn a_big_cache_stays_within_its_bound_across_shards() {
    let c = live_cache(4 << 20);
    let v = "v".repeat(1000);
    for i in 0..20_000 {
        put(&c, i % 4, &format!("key:{i}"), &v, -1);
        assert!(c.bytes() <= c.max_bytes());
    }
    // Most of the budget is in use: eviction frees only what is needed.
    assert!(c.bytes() > c.max_bytes() * 9 / 10, "{} bytes", c.bytes());
    assert_eq!(
        c.len() * (ENTRY_OVERHEAD + 1000),
        c.bytes() - extra_key_bytes(&c)
    );
}

/// The key bytes of everything cached (keys vary in length).
fn extra_key_bytes(c: &NearCache) -> usize {
    (0..20_000u32)
        .map(|i| format!("key:{i}"))
        .filter(|k| (0..4).any(|db| c.get_string(db, k.as_bytes(), 0).hit().is_some()))
        .map(|k| k.len())
        .sum()
}

#[test]
fn hashes_are_charged_per_field_and_answer_hget() {
    let c = live_cache(1 << 20);
    let t = c.ticket(b"h");
    let fields = vec![(b("f1"), b("one")), (b("f2"), b("two"))];
    assert!(c.put_hash(t, 0, b("h"), fields, -1));
    assert_eq!(
        c.bytes(),
        ENTRY_OVERHEAD + 1 + 2 * FIELD_OVERHEAD + (2 + 3) * 2
    );
    assert_eq!(c.hget(0, b"h", b"f2", 0), Lookup::Hit(Some(b("two"))));
    assert_eq!(c.hget(0, b"h", b"nope", 0), Lookup::Hit(None));
    let all = c.get_hash(0, b"h", 0).hit().expect("hash cached");
    assert_eq!(all.len(), 2);
    // Type mismatches answer as Redis would.
    assert_eq!(c.get_string(0, b"h", 0), Lookup::WrongType);
    assert!(put(&c, 0, "s", "v", -1));
    assert_eq!(c.hget(0, b"s", b"f", 0), Lookup::WrongType);
    assert!(matches!(c.get(0, b"s", 0), Lookup::Hit(Cached::String(_))));
    // An empty HGETALL is a missing key: nothing to cache.
    let t = c.ticket(b"empty");
    assert!(!c.put_hash(t, 0, b("empty"), Vec::new(), -1));
}

#[test]
fn keys_are_per_db_and_invalidate_drops_the_key_in_every_db() {
    let c = live_cache(1 << 20);
    assert!(put(&c, 0, "k", "zero", -1));
    assert!(put(&c, 5, "k", "five", -1));
    assert!(put(&c, 5, "other", "x", -1));
    assert_eq!(c.get_string(0, b"k", 0), Lookup::Hit(b("zero")));
    assert_eq!(c.get_string(5, b"k", 0), Lookup::Hit(b("five")));
    assert_eq!(c.get_string(1, b"k", 0), Lookup::Miss);
    c.invalidate(b"k");
    assert_eq!(c.get_string(0, b"k", 0), Lookup::Miss);
    assert_eq!(c.get_string(5, b"k", 0), Lookup::Miss);
    assert_eq!(c.get_string(5, b"other", 0), Lookup::Hit(b("x")));
    assert_eq!(c.len(), 1);
}

#[test]
fn absolute_expiry_is_honoured_and_expired_entries_are_removed() {
    let c = live_cache(1 << 20);
    assert!(put(&c, 0, "past", "v", 1_000));
    assert!(put(&c, 0, "future", "v", 5_000));
    assert!(put(&c, 0, "forever", "v", -1));
    assert_eq!(c.len(), 3);
    assert_eq!(c.get_string(0, b"past", 2_000), Lookup::Miss);
    assert_eq!(c.len(), 2, "the expired entry was removed, not just hidden");
    // Redis's rule: a key lives through its expiry millisecond.
    assert_eq!(c.get_string(0, b"future", 5_000), Lookup::Hit(b("v")));
    assert_eq!(c.expire_at(0, b"future", 5_000), Lookup::Hit(Some(5_000)));
    assert_eq!(c.expire_at(0, b"forever", 5_000), Lookup::Hit(None));
    assert_eq!(c.get_string(0, b"future", 5_001), Lookup::Miss);
    assert_eq!(c.get_string(0, b"forever", u64::MAX), Lookup::Hit(b("v")));
    // PEXPIRETIME -2: the key was gone by the time the TTL was read.
    assert!(!put(&c, 0, "gone", "v", -2));
    assert_eq!(c.len(), 1);
}

#[test]
fn puts_with_outdated_tickets_or_without_tracking_are_refused() {
    let c = NearCache::new(1 << 20, STALE, tracked(&["sess:*"]));
    assert!(!put(&c, 0, "sess:1", "v", -1), "tracking never started");
    c.start_tracking();
    assert!(put(&c, 0, "sess:1", "v", -1));
    assert!(
        !put(&c, 0, "other:1", "v", -1),
        "Redis would not report writes to it"
    );

    // An invalidation between the read and the put: the reply is outdated.
    let t = c.ticket(b"sess:2");
    c.invalidate(b"sess:2");
    assert!(!c.put_string(t, 0, b("sess:2"), b("old"), -1));
    // A flush between them (FLUSHALL, tracking restart).
    let t = c.ticket(b"sess:2");
    c.flush();
    assert!(!c.put_string(t, 0, b("sess:2"), b("old"), -1));
    // Tracking stopped after the ticket was taken.
    let t = c.ticket(b"sess:2");
    c.stop_tracking(now_ms());
    assert!(!c.put_string(t, 0, b("sess:2"), b("v"), -1));
    assert!(c.is_empty());
}

#[test]
fn after_max_stale_ms_from_the_stop_the_whole_cache_answers_miss() {
    let c = NearCache::new(1 << 20, 1_000, Tracked::Everything);
    c.start_tracking();
    assert!(put(&c, 0, "k", "v", -1));
    assert_eq!(c.stopped_at_ms(), None);
    c.stop_tracking(10_000);
    // A later stop for the same outage (health after connection loss)
    // does not move the clock.
    c.stop_tracking(10_500);
    assert_eq!(c.stopped_at_ms(), Some(10_000));
    assert!(!c.is_tracking());
    assert_eq!(c.get_string(0, b"k", 11_000), Lookup::Hit(b("v")));
    assert_eq!(c.expire_at(0, b"k", 11_001), Lookup::Miss);
    assert!(c.is_empty(), "a stale entry is dropped once seen");
    assert!(c.set_local_string(0, b("k2"), b("v"), -1));
    assert!(c.set_local_string(0, b("k3"), b("v"), -1));
    assert_eq!(c.get_string(0, b"k2", 10_001), Lookup::Hit(b("v")));
    // An earlier moment wins.
    c.stop_tracking(9_000);
    assert_eq!(c.stopped_at_ms(), Some(9_000));
    assert!(c.is_fresh(10_000) && !c.is_fresh(10_001));
    assert_eq!(c.get_string(0, b"k3", 10_001), Lookup::Hit(b("v")), "local");
    // Tracking back: flushed (may have missed invalidations), fresh again.
    c.start_tracking();
    assert_eq!(c.stopped_at_ms(), None);
    assert!(c.is_empty());
    assert!(put(&c, 0, "k", "new", -1));
    assert_eq!(c.get_string(0, b"k", u64::MAX), Lookup::Hit(b("new")));
}

#[test]
fn local_writes_during_an_outage_outlive_max_stale_and_are_dropped_when_tracking_restarts() {
    let c = NearCache::new(1 << 20, 1_000, Tracked::Everything);
    c.start_tracking();
    assert!(put(&c, 0, "read", "from-redis", -1));
    c.stop_tracking(10_000);
    assert!(c.set_local_string(0, b("written"), b("locally"), -1));
    assert!(c.set_local_string(0, b("short"), b("v"), 12_000));
    assert_eq!(c.get_string(0, b"read", 20_000), Lookup::Miss);
    assert_eq!(
        c.get_string(0, b"written", 20_000),
        Lookup::Hit(b("locally"))
    );
    assert_eq!(
        c.get_string(0, b"short", 12_001),
        Lookup::Miss,
        "its own expiry holds"
    );

    // EXPIRE / PERSIST / DEL while down.
    assert!(c.expire_local(0, b"written", Some(30_000), 20_000));
    assert_eq!(
        c.expire_at(0, b"written", 20_000),
        Lookup::Hit(Some(30_000))
    );
    assert!(c.expire_local(0, b"written", None, 20_000));
    assert_eq!(c.expire_at(0, b"written", 20_000), Lookup::Hit(None));
    assert!(
        !c.expire_local(0, b"read", None, 20_000),
        "stale: not known"
    );
    assert!(c.delete_local(0, b"written", 20_000));
    assert!(!c.delete_local(0, b"written", 20_000));
    assert_eq!(c.get_string(0, b"written", 20_000), Lookup::Miss);

    assert!(c.set_local_string(0, b("written"), b("again"), -1));
    c.start_tracking();
    assert_eq!(c.get_string(0, b"written", 20_000), Lookup::Miss);
    assert!(c.is_empty());
}

#[test]
fn hset_and_hdel_during_an_outage_edit_only_hashes_known_whole() {
    let c = NearCache::new(1 << 20, 1_000, Tracked::Everything);
    c.start_tracking();
    let t = c.ticket(b"h");
    assert!(c.put_hash(t, 0, b("h"), vec![(b("a"), b("1"))], -1));
    let before = c.get_hash(0, b"h", 0).hit().expect("cached");
    c.stop_tracking(10_000);

    let pairs = vec![(b("a"), b("one")), (b("bb"), b("2"))];
    assert_eq!(c.hset_local(0, b"h", pairs, 10_500), Lookup::Hit(1));
    assert_eq!(c.hget(0, b"h", b"a", 10_500), Lookup::Hit(Some(b("one"))));
    assert_eq!(c.hget(0, b"h", b"bb", 10_500), Lookup::Hit(Some(b("2"))));
    assert_eq!(
        before.get(&b("a")),
        Some(&b("1")),
        "earlier readers keep their snapshot"
    );
    assert_eq!(
        c.bytes(),
        ENTRY_OVERHEAD + 1 + 2 * FIELD_OVERHEAD + (1 + 3) + (2 + 1),
        "recharged for the new fields"
    );
    let gone: [&[u8]; 2] = [b"a", b"zz"];
    assert_eq!(c.hdel_local(0, b"h", gone, 10_500), Lookup::Hit(1));
    assert_eq!(c.hget(0, b"h", b"a", 10_500), Lookup::Hit(None));

    // Unknown or mistyped keys are not made up.
    assert_eq!(
        c.hset_local(0, b"nope", vec![(b("f"), b("v"))], 10_500),
        Lookup::Miss
    );
    assert!(c.set_local_string(0, b("s"), b("v"), -1));
    assert_eq!(
        c.hset_local(0, b"s", vec![(b("f"), b("v"))], 10_500),
        Lookup::WrongType
    );
    assert_eq!(
        c.get_string(0, b"s", 10_500),
        Lookup::Hit(b("v")),
        "left alone"
    );

    // The last field gone: the hash is gone, as in Redis.
    let last: [&[u8]; 1] = [b"bb"];
    assert_eq!(c.hdel_local(0, b"h", last, 10_500), Lookup::Hit(1));
    assert_eq!(c.get_hash(0, b"h", 10_500), Lookup::Miss);
    // A hash read from Redis stays under max_stale_ms even once edited.
    let t = c.ticket(b"h2");
    c.start_tracking();
    let t2 = c.ticket(b"h2");
    assert!(!c.put_hash(t, 0, b("h2"), vec![(b("f"), b("v"))], -1));
    assert!(c.put_hash(t2, 0, b("h2"), vec![(b("f"), b("v"))], -1));
    c.stop_tracking(20_000);
    assert_eq!(
        c.hset_local(0, b"h2", vec![(b("g"), b("w"))], 20_500),
        Lookup::Hit(1)
    );
    assert_eq!(c.hget(0, b"h2", b"g", 21_001), Lookup::Miss);
}

#[test]
fn tickets_never_let_an_outdated_read_outlive_its_invalidation() {
    // A model of the race tickets close: "Redis" is an atomic version;
    // the writer changes it, then delivers the invalidation (as Redis
    // does: write, then push); readers take a ticket, read, then put what
    // they read, racing the writer from other threads. Whatever the
    // interleaving, once all is done the cache holds the last version or
    // nothing, never an older one.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    for round in 0..3 {
        let c = Arc::new(live_cache(1 << 20));
        let redis = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (c, redis, done, attempts) =
                    (c.clone(), redis.clone(), done.clone(), attempts.clone());
                std::thread::spawn(move || {
                    let mut puts = 0u64;
                    while !done.load(Ordering::Acquire) {
                        let t = c.ticket(b"k");
                        let v = redis.load(Ordering::SeqCst);
                        if c.put_string(t, 0, b("k"), Bytes::from(v.to_string()), -1) {
                            puts += 1;
                        }
                        attempts.fetch_add(1, Ordering::Release);
                    }
                    puts
                })
            })
            .collect();
        for v in 1..=1_000u64 {
            // Let the readers run between bursts of writes even on a busy
            // machine.
            if v % 10 == 0 {
                let seen = attempts.load(Ordering::Acquire);
                while attempts.load(Ordering::Acquire) == seen {
                    std::thread::yield_now();
                }
            }
            redis.store(v, Ordering::SeqCst);
            c.invalidate(b"k");
        }
        done.store(true, Ordering::Release);
        let puts: u64 = readers
            .into_iter()
            .map(|r| r.join().expect("reader thread"))
            .sum();
        assert!(puts > 0, "round {round}: some puts must have been accepted");
        match c.get_string(0, b"k", 0) {
            Lookup::Miss => {}
            Lookup::Hit(v) => assert_eq!(v, b("1000"), "round {round}: outdated value kept"),
            Lookup::WrongType => panic!("a string was put"),
        }
        assert!(c.len() <= 1);
    }
}

#[test]
fn tracked_prefixes_come_from_the_literal_part_of_the_globs() {
    let t = tracked(&["sess:*", "sess:admin:*", "user:?:profile", "cart:[0-9]*"]);
    assert_eq!(
        t,
        Tracked::Prefixes(vec![b("cart:"), b("sess:"), b("user:")])
    );
    assert_eq!(tracked(&["sess:*", "*"]), Tracked::Everything);
}

// ----- the tracker against a real Redis -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_client_invalidates_the_cached_entry() {
    let redis = RedisServer::new();
    let (cache, _tracker, mut rx) =
        tracked_cache(&redis, &["sess:*"], HealthHandle::fixed(State::Up)).await;
    assert!(cache.is_tracking());
    assert!(put(&cache, 0, "sess:1", "alice", -1));
    assert!(put(&cache, 0, "sess:2", "bob", -1));

    redis.cmd(&["SET", "sess:1", "mallory"]);
    wait_status(&mut rx, "the invalidation of sess:1", |s| {
        s.invalidations >= 1
    })
    .await;
    assert_eq!(cache.get_string(0, b"sess:1", now_ms()), Lookup::Miss);
    assert_eq!(
        cache.get_string(0, b"sess:2", now_ms()),
        Lookup::Hit(b("bob")),
        "only the written key goes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_drops_everything() {
    let redis = RedisServer::new();
    let (cache, _tracker, mut rx) = tracked_cache(
        &redis,
        &["sess:*", "cache:*"],
        HealthHandle::fixed(State::Up),
    )
    .await;
    assert!(put(&cache, 0, "sess:1", "a", -1));
    assert!(put(&cache, 3, "cache:1", "b", -1));
    assert_eq!(cache.len(), 2);
    redis.cmd(&["FLUSHALL"]);
    wait_status(&mut rx, "the FLUSHALL invalidation", |s| {
        s.invalidations >= 1
    })
    .await;
    assert!(cache.is_empty());
    assert!(cache.is_tracking(), "a flush is not a stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_the_prefixes_are_neither_cached_nor_reported() {
    let redis = RedisServer::new();
    let (cache, _tracker, mut rx) =
        tracked_cache(&redis, &["sess:*"], HealthHandle::fixed(State::Up)).await;
    assert!(!put(&cache, 0, "other:1", "v", -1));
    assert!(put(&cache, 0, "sess:sentinel", "v", -1));
    // Redis sends pushes in order on one connection: once the sentinel's
    // invalidation is applied, one for other:1 would have been too.
    redis.cmd(&["SET", "other:1", "x"]);
    redis.cmd(&["SET", "sess:sentinel", "x"]);
    // Wait for the counter too: the entry goes before the count is published.
    let s = wait_status(&mut rx, "the sentinel's invalidation", |s| {
        s.invalidations >= 1 && cache.get_string(0, b"sess:sentinel", now_ms()).is_miss()
    })
    .await;
    assert_eq!(s.invalidations, 1, "no push for the untracked key: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_globs_are_accepted_by_redis_as_one_prefix() {
    let redis = RedisServer::new();
    // Redis refuses overlapping prefixes on one connection; connecting at
    // all shows they were merged.
    let (cache, _tracker, mut rx) = tracked_cache(
        &redis,
        &["sess:*", "sess:admin:*"],
        HealthHandle::fixed(State::Up),
    )
    .await;
    assert!(put(&cache, 0, "sess:admin:1", "root", -1));
    redis.cmd(&["SET", "sess:admin:1", "x"]);
    wait_status(&mut rx, "the invalidation", |s| s.invalidations >= 1).await;
    assert_eq!(cache.get_string(0, b"sess:admin:1", now_ms()), Lookup::Miss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_without_literal_prefix_tracks_every_key() {
    let redis = RedisServer::new();
    let (cache, _tracker, mut rx) =
        tracked_cache(&redis, &["*:session"], HealthHandle::fixed(State::Up)).await;
    assert_eq!(cache.tracked(), &Tracked::Everything);
    assert!(put(&cache, 2, "anything", "v", -1));
    redis.cmd(&["SET", "anything", "x"]);
    wait_status(&mut rx, "the invalidation", |s| s.invalidations >= 1).await;
    assert_eq!(cache.get_string(2, b"anything", now_ms()), Lookup::Miss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_is_replaced_and_the_cache_flushed() {
    let redis = RedisServer::new();
    let (cache, _tracker, mut rx) =
        tracked_cache(&redis, &["sess:*"], HealthHandle::fixed(State::Up)).await;
    assert!(put(&cache, 0, "sess:1", "alice", -1));
    // Operators can find it by name.
    let clients = redis.cmd(&["CLIENT", "LIST"]);
    let line = clients
        .lines()
        .find(|l| l.contains("name=redoubt-tracking"))
        .unwrap_or_else(|| panic!("no tracking connection in {clients}"));
    let id = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("id="))
        .expect("id field");
    redis.cmd(&["CLIENT", "KILL", "ID", id]);
    // Redis stays up: the tracker reconnects on its own, and whatever was
    // cached while no invalidation could arrive is gone.
    let s = wait_status(&mut rx, "a new tracking connection", |s| s.connects >= 2).await;
    assert_eq!(s.disconnects, 1);
    assert!(cache.is_tracking() && cache.is_empty());
    assert_eq!(cache.stopped_at_ms(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_starts_the_staleness_clock_and_restart_flushes_and_refreshes() {
    let mut redis = RedisServer::new();
    let (cache, _tracker, mut rx) =
        tracked_cache(&redis, &["sess:*"], HealthHandle::fixed(State::Up)).await;
    assert!(put(&cache, 0, "sess:1", "alice", -1));

    let before = now_ms();
    redis.kill();
    let s = wait_status(&mut rx, "the lost connection", |s| !s.connected).await;
    let after = now_ms();
    assert_eq!(s.disconnects, 1);
    let stopped = cache.stopped_at_ms().expect("staleness clock started");
    assert!(
        before <= stopped && stopped <= after,
        "{before} <= {stopped} <= {after}"
    );
    assert!(!cache.is_tracking());
    // Served through the outage until max_stale_ms, then not at all.
    assert_eq!(
        cache.get_string(0, b"sess:1", stopped + STALE),
        Lookup::Hit(b("alice"))
    );
    assert_eq!(
        cache.get_string(0, b"sess:1", stopped + STALE + 1),
        Lookup::Miss
    );
    // No new values while nobody would invalidate them.
    assert!(!put(&cache, 0, "sess:2", "bob", -1));

    redis.restart();
    let s = wait_status(&mut rx, "the tracker to reconnect", |s| s.connects >= 2).await;
    assert!(s.connected);
    assert!(cache.is_tracking());
    assert_eq!(cache.stopped_at_ms(), None);
    assert!(
        cache.is_empty(),
        "flushed: invalidations may have been missed"
    );
    // And tracking works on the new connection.
    assert!(put(&cache, 0, "sess:1", "alice", -1));
    redis.cmd(&["SET", "sess:1", "mallory"]);
    wait_status(&mut rx, "an invalidation after the restart", |s| {
        s.invalidations >= 1
    })
    .await;
    assert_eq!(cache.get_string(0, b"sess:1", now_ms()), Lookup::Miss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_down_stops_tracking_even_while_the_socket_stays_open() {
    let redis = RedisServer::new();
    let url = UpstreamUrl::parse(&redis.url()).expect("url");
    let health = upstream::health::spawn_prober(
        url,
        HealthConfig {
            interval_ms: 20,
            timeout_ms: 50,
            down_after: 2,
            up_after: 1,
        },
    );
    let mut h = health.subscribe();
    tokio::time::timeout(EVENT_TIMEOUT, h.wait_for(|h| h.state == State::Up))
        .await
        .expect("prober sees Redis up")
        .expect("prober runs");
    let (cache, _tracker, mut rx) = tracked_cache(&redis, &["sess:*"], health.clone()).await;
    assert!(put(&cache, 0, "sess:1", "alice", -1));

    // SIGSTOP: the kernel keeps the connection open, Redis sends nothing.
    redis.pause();
    let s = wait_status(&mut rx, "the tracker to react to Down", |s| !s.connected).await;
    assert_eq!(s.disconnects, 1);
    let down = health.current();
    assert_eq!(down.state, State::Down);
    let since = down
        .since
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    assert_eq!(
        cache.stopped_at_ms(),
        Some(since),
        "the clock starts at the outage"
    );
    assert_eq!(
        cache.get_string(0, b"sess:1", since + 1),
        Lookup::Hit(b("alice"))
    );

    redis.resume();
    let s = wait_status(&mut rx, "the tracker to reconnect", |s| s.connects >= 2).await;
    assert!(s.connected);
    assert!(cache.is_empty() && cache.is_tracking());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_authenticates_with_the_upstream_credentials() {
    let redis = RedisServer::start(&["--requirepass", "s3cret"]);
    let with = |password: &str| Handshake {
        auth: Some(Credentials {
            user: None,
            password: password.to_string(),
        }),
        ..Handshake::default()
    };
    // A wrong password: Redis's refusal is reported, tracking never starts.
    let cache = Arc::new(NearCache::new(1 << 20, STALE, tracked(&["sess:*"])));
    let tracker = spawn_tracker(
        cache.clone(),
        TrackerConfig::new(redis.addr(), with("wrong")),
        HealthHandle::fixed(State::Up),
    );
    let mut rx = tracker.status();
    let s = wait_status(&mut rx, "the refusal", |s| s.last_error.is_some()).await;
    let why = s.last_error.unwrap_or_default();
    assert!(why.contains("WRONGPASS"), "{why}");
    assert!(!cache.is_tracking());
    tracker.stop().await;

    let tracker = spawn_tracker(
        cache.clone(),
        TrackerConfig::new(redis.addr(), with("s3cret")),
        HealthHandle::fixed(State::Up),
    );
    let mut rx = tracker.status();
    wait_status(&mut rx, "an authenticated tracking connection", |s| {
        s.connected
    })
    .await;
    assert!(put(&cache, 0, "sess:1", "v", -1));
    // Stopping the tracker stops the cache's freshness with it.
    tracker.stop().await;
    assert!(!cache.is_tracking());
    assert!(cache.stopped_at_ms().is_some());
}

/// What the cache keeps arrives as slices of a connection's read buffer
/// (Redis's reply, a client's request): an entry holding such a slice
/// holds the whole buffer alive, so a 64 MiB cache of 100-byte values took
/// over a gigabyte. Every way in keeps a copy of its own.
#[test]
fn a_cached_entry_does_not_hold_the_buffer_it_arrived_in() {
    let c = live_cache(1 << 20);
    let buf: Bytes = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let inside = |b: &Bytes| {
        let start = buf.as_ptr() as usize;
        (start..start + buf.len()).contains(&(b.as_ptr() as usize))
    };
    let (k1, k2, k3, f, v) = (
        buf.slice(0..2),
        buf.slice(2..4),
        buf.slice(4..6),
        buf.slice(10..20),
        buf.slice(100..200),
    );
    let t = c.ticket(&k1);
    assert!(c.put_string(t, 0, k1.clone(), v.clone(), -1));
    let t = c.ticket(&k2);
    assert!(c.put_hash(t, 0, k2.clone(), [(f.clone(), v.clone())], -1));
    assert!(c.set_local_string(1, k3.clone(), v.clone(), -1));
    assert_eq!(
        c.hset_local(0, &k2, [(b("g"), v.clone())], now_ms()),
        Lookup::Hit(1)
    );
    let Lookup::Hit(s) = c.get_string(0, &k1, now_ms()) else {
        panic!("k1 cached")
    };
    assert_eq!(s, v);
    assert!(
        !inside(&s),
        "a value read from Redis is a slice of its reply's buffer"
    );
    let Lookup::Hit(h) = c.get_hash(0, &k2, now_ms()) else {
        panic!("k2 cached")
    };
    assert_eq!(h.len(), 2);
    for (field, value) in h.iter() {
        assert!(
            !inside(field) && !inside(value),
            "a hash field is a slice of its buffer"
        );
    }
    let Lookup::Hit(l) = c.get_string(1, &k3, now_ms()) else {
        panic!("k3 written")
    };
    assert!(
        !inside(&l),
        "a local write's value is a slice of the client's request"
    );
}
