//! Real `redis-server` processes put into each state the doctor should
//! recognise; every test asserts the check id and the exit code.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use doctor::{diagnose, DoctorOptions, Report, Severity, Thresholds};
use test_support::{wait_for, RedisServer};

/// Ids whose outcome depends on the machine, not on the Redis under test.
const MACHINE_DEPENDENT: &[&str] = &[
    "host.thp",
    "host.overcommit",
    "host.somaxconn",
    "host.clocksource",
    "host.swap",
    "server.version",
];

async fn doctor(url: &str) -> Report {
    diagnose(url, &DoctorOptions::default()).await
}

async fn doctor_with(url: &str, f: impl FnOnce(&mut DoctorOptions)) -> Report {
    let mut o = DoctorOptions::default();
    f(&mut o);
    diagnose(url, &o).await
}

fn info_field(r: &RedisServer, section: &str, field: &str) -> String {
    let text = r.cmd(&["INFO", section]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[track_caller]
fn assert_fires(r: &Report, id: &str, sev: Severity) {
    let f = r
        .get(id)
        .unwrap_or_else(|| panic!("{id} did not fire:\n{}", r.render_text(false)));
    assert_eq!(f.severity, sev, "{id}:\n{}", r.render_text(false));
}

#[track_caller]
fn assert_silent(r: &Report, id: &str) {
    assert!(
        !r.has(id),
        "{id} fired unexpectedly:\n{}",
        r.render_text(false)
    );
}

/// A connection that has been accepted and served once.
fn open_client(r: &RedisServer) -> TcpStream {
    let mut s = TcpStream::connect(r.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "+PONG\r\n");
    s
}

#[tokio::test]
async fn healthy_server_has_no_critical_and_no_server_side_warning() {
    let r = RedisServer::new();
    r.cmd(&["SET", "user:1", "alice"]);
    let rep = doctor(&r.url()).await;
    assert!(rep.diagnosable);
    assert_eq!(
        rep.worst().max(Severity::Warn),
        Severity::Warn,
        "{}",
        rep.render_text(false)
    );
    for f in rep.findings.iter().filter(|f| f.severity >= Severity::Warn) {
        assert!(
            MACHINE_DEPENDENT.contains(&f.id.as_str()),
            "server-side warning {}:\n{}",
            f.id,
            rep.render_text(false)
        );
    }
    let machine_warns = rep.findings.iter().any(|f| f.severity == Severity::Warn);
    assert_eq!(rep.exit_code(), if machine_warns { 1 } else { 0 });
    // test-support runs without persistence, and the latency monitor is off by default.
    assert_fires(&rep, "persistence.off", Severity::Info);
    assert_fires(&rep, "latency.monitor-off", Severity::Info);
    assert_fires(&rep, "server.recent-restart", Severity::Info);
    assert!(rep.host_checks, "127.0.0.1 is local");
    // Redis 7.0 (the test machine's) is outside the supported lines.
    let v = rep.redis_version.clone().unwrap();
    assert_eq!(
        rep.has("server.version"),
        v.starts_with("7.0") || v.starts_with("6.0") || v.starts_with('5'),
        "{v}"
    );
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    assert_eq!(rep.has("host.overcommit"), overcommit.trim() != "1");
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    assert_eq!(rep.has("host.thp"), thp.contains("[always]"));
    assert!(rep.checks_run >= 35, "{}", rep.checks_run);
}

#[tokio::test]
async fn full_noeviction_cache_is_critical_and_flags_the_policy() {
    let r = RedisServer::start(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let value = "x".repeat(50_000);
    let mut i = 0;
    loop {
        let reply = r
            .cmd_raw(&["SET", &format!("cache:{i}"), &value, "EX", "3600"])
            .unwrap();
        if reply.starts_with("-OOM") {
            break;
        }
        assert_eq!(reply, "+OK");
        i += 1;
        assert!(i < 1000, "never reached maxmemory");
    }
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "memory.near-maxmemory", Severity::Critical);
    assert_fires(&rep, "memory.noeviction-cache", Severity::Warn);
    assert_eq!(rep.exit_code(), 2);
    // Past the limit (Redis refused the last SET with OOM) it is not
    // "close to maxmemory (104%)".
    let f = rep.get("memory.near-maxmemory").unwrap();
    assert_eq!(
        f.title,
        "Redis is over maxmemory — writes are being refused",
        "{}",
        rep.render_text(false)
    );
    assert!(f.detail.contains("noeviction"), "{}", f.detail);
}

#[tokio::test]
async fn vital_signs_come_first_and_ignored_checks_do_not_count() {
    let r = RedisServer::start(&["--maxmemory", "100mb"]);
    r.cmd(&["SET", "a", "1"]);
    r.cmd(&["GET", "a"]);
    r.cmd(&["GET", "missing"]);
    let rep = doctor_with(&r.url(), |o| {
        o.ignore = vec!["persistence.off".into(), "latency".into(), "host.*".into()]
    })
    .await;
    let v = rep.vitals.as_ref().expect("vitals read");
    assert_eq!(v.maxmemory, Some(100 * 1024 * 1024));
    assert!(v.clients.is_some_and(|c| c >= 1), "{v:?}");
    // One hit, one miss (the doctor's own reads use no keys).
    assert_eq!(v.hit_rate, Some(0.5), "{v:?}");
    assert_eq!(v.evicted_keys, Some(0));
    assert!(v.ping_us.is_some());
    let text = rep.render_text(false);
    let line = text.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with("memory ")
            && line.contains("of 100.0 MiB")
            && line.contains("hit rate 50%")
            && line.contains("ping "),
        "vital signs on the second line:\n{text}"
    );
    for muted in ["persistence.off", "latency.monitor-off"] {
        assert_silent(&rep, muted);
        assert!(rep.ignored.iter().any(|i| i == muted), "{:?}", rep.ignored);
    }
    assert!(rep.findings.iter().all(|f| !f.id.starts_with("host.")));
    assert!(text.contains("ignored (muted, not counted): "), "{text}");
}

#[tokio::test]
async fn a_password_from_the_options_is_used_when_the_url_has_none() {
    let r = RedisServer::start(&["--requirepass", "s3cret"]);
    let addr = format!("127.0.0.1:{}", r.port());
    let rep = doctor(&addr).await;
    assert!(rep.has("connection.noauth"), "{}", rep.render_text(false));
    let rep = doctor_with(&addr, |o| o.password = Some("s3cret".into())).await;
    assert!(rep.diagnosable, "{}", rep.render_text(false));
    // A password in the URL wins over the fallback.
    let rep = doctor_with(&format!("redis://:wrong@{addr}"), |o| {
        o.password = Some("s3cret".into())
    })
    .await;
    assert!(!rep.diagnosable, "{}", rep.render_text(false));
}

#[tokio::test]
async fn between_the_thresholds_memory_only_warns() {
    let r = RedisServer::start(&["--maxmemory", "8mb", "--maxmemory-policy", "noeviction"]);
    let value = "y".repeat(20_000);
    let ratio = || {
        let used: f64 = info_field(&r, "memory", "used_memory").parse().unwrap();
        used / (8.0 * 1024.0 * 1024.0)
    };
    let mut i = 0;
    while ratio() < 0.82 {
        r.cmd(&["SET", &format!("k{i}"), &value]);
        i += 1;
    }
    assert!(ratio() < 0.95);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "memory.near-maxmemory", Severity::Warn);
    // Plain keys without TTL are not cache-like.
    assert_silent(&rep, "memory.noeviction-cache");
}

#[tokio::test]
async fn evictions_of_sessions_are_critical() {
    let r = RedisServer::start(&["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"]);
    let value = "z".repeat(50_000);
    let mut i = 0;
    while info_field(&r, "stats", "evicted_keys") == "0" {
        r.cmd(&["SET", &format!("filler:{i}"), &value]);
        i += 1;
        assert!(i < 1000, "never evicted");
    }
    for s in 0..3 {
        r.cmd(&["SET", &format!("sess:{s}"), "u", "EX", "600"]);
    }
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "memory.evictions", Severity::Warn);
    assert_fires(&rep, "memory.evicting-sessions", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
}

#[tokio::test]
async fn failing_bgsave_is_critical_and_says_writes_are_refused() {
    let r = RedisServer::start(&["--save", "3600 1", "--enable-protected-configs", "yes"]);
    // Root ignores permissions, so make the save dir vanish instead: the
    // fork child cannot create its temp file in a deleted directory.
    let gone = tempdir_path("doctor-gone");
    std::fs::create_dir_all(&gone).unwrap();
    r.cmd(&["CONFIG", "SET", "dir", gone.to_str().unwrap()]);
    std::fs::remove_dir(&gone).unwrap();
    r.cmd(&["BGSAVE"]);
    wait_for("bgsave to fail", Duration::from_secs(10), || {
        info_field(&r, "persistence", "rdb_last_bgsave_status") == "err"
    });
    assert!(
        r.cmd_raw(&["SET", "k", "v"])
            .unwrap()
            .starts_with("-MISCONF"),
        "writes are refused"
    );
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "persistence.bgsave-failed", Severity::Critical);
    assert!(rep
        .get("persistence.bgsave-failed")
        .unwrap()
        .detail
        .contains("MISCONF"));
    assert_silent(&rep, "persistence.off");
    assert_eq!(rep.exit_code(), 2);
}

fn tempdir_path(prefix: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        test_support::free_port()
    ))
}

#[tokio::test]
async fn nearly_full_maxclients_warns_then_rejections_are_critical() {
    let r = RedisServer::start(&["--maxclients", "10"]);
    let mut held: Vec<TcpStream> = (0..8).map(|_| open_client(&r)).collect();
    // 8 held + the doctor's own = 9 of 10.
    let before = doctor(&r.url()).await;
    assert_fires(&before, "clients.near-maxclients", Severity::Warn);
    assert_silent(&before, "clients.rejected");
    assert!(before.exit_code() >= 1);

    held.push(open_client(&r));
    held.push(open_client(&r));
    // All 10 slots taken: the doctor itself is refused, and says why.
    let rep = doctor(&r.url()).await;
    assert!(!rep.diagnosable);
    assert_fires(&rep, "connection.max-clients", Severity::Critical);
    assert_eq!(rep.exit_code(), 3);

    held.truncate(5);
    // Until Redis has seen the closes, the probe itself may be refused.
    wait_for("held clients to close", Duration::from_secs(5), || {
        r.cmd_raw(&["INFO", "clients"])
            .is_ok_and(|t| t.contains("connected_clients:6\r\n"))
    });
    // Against the counters of the first run, the refusals are new: critical.
    let baseline = before.counters.clone();
    let rep = doctor_with(&r.url(), |o| o.baseline = Some(baseline)).await;
    assert_fires(&rep, "clients.rejected", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
    // Without a baseline only the lifetime count is known: a warning.
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "clients.rejected", Severity::Warn);
    // Nothing new since the last run: silent.
    let again = doctor_with(&r.url(), |o| o.baseline = Some(rep.counters.clone())).await;
    assert_silent(&again, "clients.rejected");
}

#[tokio::test]
async fn many_blocked_clients_warn() {
    let r = RedisServer::new();
    let mut held = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(r.addr()).unwrap();
        s.write_all(format!("*3\r\n$5\r\nBLPOP\r\n$4\r\nq:{i:02}\r\n$1\r\n0\r\n").as_bytes())
            .unwrap();
        held.push(s);
    }
    wait_for("10 blocked clients", Duration::from_secs(5), || {
        info_field(&r, "clients", "blocked_clients") == "10"
    });
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "clients.blocked", Severity::Warn);
    assert!(rep
        .get("clients.blocked")
        .unwrap()
        .detail
        .contains("10 blocked"));
    assert!(rep.exit_code() >= 1);
}

#[tokio::test]
async fn idle_clients_with_timeout_zero_warn() {
    let r = RedisServer::new();
    let _held: Vec<TcpStream> = (0..3).map(|_| open_client(&r)).collect();
    wait_for("clients idle for 1 s", Duration::from_secs(5), || {
        r.cmd(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| !l.contains(" idle=0 "))
            .count()
            >= 3
    });
    let tune = |o: &mut DoctorOptions| {
        o.thresholds = Thresholds {
            idle_client_secs: 1,
            idle_clients_warn: 3,
            ..Thresholds::default()
        };
    };
    let rep = doctor_with(&r.url(), tune).await;
    assert_fires(&rep, "clients.idle", Severity::Warn);
    assert!(rep
        .get("clients.idle")
        .unwrap()
        .detail
        .contains("127.0.0.1 ×3"));
    // With a server-side timeout the idle connections will be reaped.
    r.cmd(&["CONFIG", "SET", "timeout", "300"]);
    let rep = doctor_with(&r.url(), tune).await;
    assert_silent(&rep, "clients.idle");
}

#[tokio::test]
async fn session_keys_without_ttl_warn() {
    let r = RedisServer::new();
    r.cmd(&["SET", "sess:abc", "{}"]);
    r.cmd(&["SET", "sess:def", "{}", "EX", "600"]);
    r.cmd(&["HSET", "session:ghi", "user", "1"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "keys.session-no-ttl", Severity::Warn);
    let d = &rep.get("keys.session-no-ttl").unwrap().detail;
    assert!(d.starts_with("2 of 3"), "{d}");
    assert!(!d.contains("sess:def"), "{d}");
}

#[tokio::test]
async fn big_keys_are_found_by_sampling() {
    let r = RedisServer::new();
    r.cmd(&["SETRANGE", "blob", "200000", "x"]);
    let items: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
    let mut rpush = vec!["RPUSH", "biglist"];
    rpush.extend(items.iter().map(String::as_str));
    r.cmd(&rpush);
    r.cmd(&["SET", "small", "1"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "keys.big", Severity::Warn);
    let d = &rep.get("keys.big").unwrap().detail;
    assert!(
        d.contains("biglist (list 1500 items)") && d.contains("blob (string"),
        "{d}"
    );
    assert!(!d.contains("small"), "{d}");
}

#[tokio::test]
async fn sampling_is_bounded() {
    let r = RedisServer::start(&["--enable-debug-command", "yes"]);
    r.cmd(&["DEBUG", "POPULATE", "5000"]);
    let rep = doctor_with(&r.url(), |o| o.thresholds.scan_sample_keys = 300).await;
    assert!(rep.diagnosable);
    assert_eq!(rep.keys_sampled, 300);
    // No big keys among the populated ones, and the run stays quick.
    assert_silent(&rep, "keys.big");
    assert!(rep.elapsed_ms < 5000, "{}", rep.elapsed_ms);
}

#[tokio::test]
async fn slowlog_entries_warn_and_name_keys() {
    let r = RedisServer::new();
    r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    r.cmd(&["KEYS", "*"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "slowlog.entries", Severity::Warn);
    assert!(rep
        .get("slowlog.entries")
        .unwrap()
        .detail
        .contains("KEYS was used"));
}

#[tokio::test]
async fn latency_events_warn() {
    let r = RedisServer::start(&["--enable-debug-command", "yes"]);
    r.cmd(&["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    r.cmd(&["DEBUG", "SLEEP", "0.05"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "latency.events", Severity::Warn);
    assert!(rep
        .get("latency.events")
        .unwrap()
        .detail
        .contains("command"));
    assert_silent(&rep, "latency.monitor-off");
}

#[tokio::test]
async fn replica_of_a_dead_master_is_critical() {
    // A port that stays closed: a free one could become another test's
    // Redis, and the link would come up.
    let dead = test_support::refused_port().to_string();
    let r = RedisServer::start(&["--replicaof", "127.0.0.1", &dead]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "replication.link-down", Severity::Critical);
    assert!(rep
        .get("replication.link-down")
        .unwrap()
        .detail
        .contains(&format!("127.0.0.1:{dead}")));
    assert_fires(&rep, "replication.replica-endpoint", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
}

#[tokio::test]
async fn read_only_replica_used_as_primary_is_critical() {
    let master = RedisServer::new();
    let port = master.port().to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &port]);
    wait_for("replica link up", Duration::from_secs(10), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    assert!(replica
        .cmd_raw(&["SET", "k", "v"])
        .unwrap()
        .starts_with("-READONLY"));
    let rep = doctor(&replica.url()).await;
    assert_fires(&rep, "replication.replica-endpoint", Severity::Critical);
    assert_silent(&rep, "replication.link-down");
    assert_eq!(rep.exit_code(), 2);
    // The master has a replica and no persistence: a restart empties both.
    let rep = doctor(&master.url()).await;
    assert_fires(&rep, "persistence.off", Severity::Warn);
    // Losing the replica is seen against the previous diagnosis.
    let baseline = rep.counters.clone();
    drop(replica);
    wait_for(
        "master to notice the replica is gone",
        Duration::from_secs(10),
        || info_field(&master, "replication", "connected_slaves") == "0",
    );
    let rep = doctor_with(&master.url(), |o| o.baseline = Some(baseline)).await;
    assert_fires(&rep, "replication.replica-lost", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
}

#[tokio::test]
async fn no_password_on_a_public_bind_is_reported() {
    let r = RedisServer::start(&["--bind", "0.0.0.0"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "security.exposed-no-auth", Severity::Warn);
    let r = RedisServer::start(&["--bind", "0.0.0.0", "--protected-mode", "no"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "security.exposed-no-auth", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
    // A password closes it.
    r.cmd(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let rep = doctor(&format!("redis://:s3cret@{}", r.addr())).await;
    assert!(rep.diagnosable);
    assert_silent(&rep, "security.exposed-no-auth");
}

#[tokio::test]
async fn app_user_with_dangerous_commands_warns() {
    let r = RedisServer::new();
    r.cmd(&["ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all"]);
    let as_app = |o: &mut DoctorOptions| o.app_user = Some("app".into());
    let rep = doctor_with(&r.url(), as_app).await;
    assert_fires(&rep, "security.dangerous-commands", Severity::Warn);
    assert!(rep
        .get("security.dangerous-commands")
        .unwrap()
        .detail
        .contains("FLUSHALL"));
    r.cmd(&["ACL", "SETUSER", "app", "-@dangerous"]);
    let rep = doctor_with(&r.url(), as_app).await;
    assert_silent(&rep, "security.dangerous-commands");
}

#[tokio::test]
async fn many_cached_scripts_warn() {
    let r = RedisServer::new();
    for i in 0..6 {
        r.cmd(&["SCRIPT", "LOAD", &format!("return {i}")]);
    }
    let rep = doctor_with(&r.url(), |o| o.thresholds.cached_scripts_warn = 5).await;
    assert_fires(&rep, "scripts.cached", Severity::Warn);
    assert!(rep
        .get("scripts.cached")
        .unwrap()
        .detail
        .starts_with("6 scripts"));
}

#[tokio::test]
async fn database_in_the_url_is_selected() {
    let r = RedisServer::new();
    r.cmd(&["SELECT", "0"]);
    let rep = doctor(&format!("{}/3", r.url())).await;
    assert!(rep.diagnosable, "{}", rep.render_text(false));
    assert_eq!(rep.target, format!("{}/3", r.url()));
}

#[tokio::test]
async fn mass_expiry_is_an_expire_storm() {
    let r = RedisServer::start(&["--enable-debug-command", "yes"]);
    r.cmd(&["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    r.cmd(&["DEBUG", "POPULATE", "100000"]);
    // Every key gets the same expiry: the active expire cycle then runs
    // to its time limit, which the latency monitor records.
    r.cmd(&[
        "EVAL",
        "for i=0,99999 do redis.call('PEXPIRE','key:'..i,200) end return 1",
        "0",
    ]);
    wait_for(
        "an expire-cycle latency event",
        Duration::from_secs(10),
        || r.cmd(&["LATENCY", "DOCTOR"]).contains("expire-cycle"),
    );
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "memory.expire-storm", Severity::Warn);
}

#[tokio::test]
async fn loading_replica_is_critical() {
    let master = RedisServer::start(&[
        "--repl-diskless-sync-delay",
        "0",
        "--enable-debug-command",
        "yes",
    ]);
    master.cmd(&["DEBUG", "POPULATE", "20000"]);
    // Slow the load down per key and let it answer clients between small
    // chunks, so the doctor can look while loading lasts (about 6 s).
    let replica = RedisServer::start(&[
        "--key-load-delay",
        "300",
        "--loading-process-events-interval-bytes",
        "1024",
    ]);
    replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    wait_for("the replica to be loading", Duration::from_secs(10), || {
        info_field(&replica, "persistence", "loading") == "1"
    });
    let rep = doctor(&replica.url()).await;
    assert!(rep.diagnosable, "{}", rep.render_text(false));
    assert_fires(&rep, "server.loading", Severity::Critical);
    assert_eq!(rep.exit_code(), 2);
}

#[tokio::test]
async fn failing_aof_rewrite_warns() {
    let dir = tempdir_path("doctor-aof");
    std::fs::create_dir_all(&dir).unwrap();
    let r = RedisServer::start(&["--appendonly", "yes", "--dir", dir.to_str().unwrap()]);
    r.cmd(&["SET", "k", "v"]);
    // The rewrite must create files in a directory that no longer exists.
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = r.cmd_raw(&["BGREWRITEAOF"]);
    wait_for("the rewrite to fail", Duration::from_secs(10), || {
        info_field(&r, "persistence", "aof_last_bgrewrite_status") == "err"
    });
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "persistence.aof-errors", Severity::Warn);
    assert!(rep
        .get("persistence.aof-errors")
        .unwrap()
        .detail
        .contains("aof_last_bgrewrite_status:err"));
}

#[tokio::test]
async fn unsaved_changes_over_the_threshold_warn() {
    let r = RedisServer::start(&["--save", "3600 1000000"]);
    for i in 0..10 {
        r.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    let rep = doctor_with(&r.url(), |o| o.thresholds.unsaved_changes_warn = 5).await;
    assert_fires(&rep, "persistence.stale-snapshot", Severity::Warn);
    assert!(rep
        .get("persistence.stale-snapshot")
        .unwrap()
        .detail
        .starts_with("10 changes"));
    let rep = doctor(&r.url()).await;
    assert_silent(&rep, "persistence.stale-snapshot");
}

#[tokio::test]
async fn memory_left_from_a_peak_is_reported() {
    let r = RedisServer::start(&["--enable-debug-command", "yes"]);
    r.cmd(&["DEBUG", "POPULATE", "200000", "key", "100"]);
    // Free three quarters: the data shrinks, the resident memory does not.
    r.cmd(&[
        "EVAL",
        "for i=0,149999 do redis.call('DEL','key:'..i) end return 1",
        "0",
    ]);
    let rep = doctor(&r.url()).await;
    let f = rep
        .get("memory.fragmentation")
        .unwrap_or_else(|| panic!("{}", rep.render_text(false)));
    assert!(
        f.severity == Severity::Warn || f.severity == Severity::Info,
        "{f:?}"
    );
    assert!(f.detail.contains("MiB"), "{}", f.detail);
}

#[tokio::test]
async fn client_not_reading_its_replies_fills_its_output_buffer() {
    let r = RedisServer::new();
    r.cmd(&["SETRANGE", "big", "1048575", "x"]);
    // Ask for 1 MiB forty times and never read: Redis holds what the
    // kernel's socket buffers cannot.
    let mut s = TcpStream::connect(r.addr()).unwrap();
    let get = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(40);
    s.write_all(&get).unwrap();
    wait_for("output buffer to pile up", Duration::from_secs(10), || {
        r.cmd(&["CLIENT", "LIST"]).lines().any(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("omem="))
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > 4 << 20)
        })
    });
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "clients.output-buffers", Severity::Warn);
    assert!(rep
        .get("clients.output-buffers")
        .unwrap()
        .detail
        .contains("cmd=get"));
}

#[tokio::test]
async fn stalled_replica_shows_as_lag_on_the_master() {
    let master = RedisServer::new();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
    wait_for("replica link up", Duration::from_secs(10), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    replica.pause();
    // The master's lag counts seconds since the replica last acknowledged.
    wait_for("lag of 2 s on the master", Duration::from_secs(10), || {
        let line = info_field(&master, "replication", "slave0");
        line.split(',').any(|kv| {
            kv.strip_prefix("lag=")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|l| l >= 2)
        })
    });
    let rep = doctor_with(&master.url(), |o| o.thresholds.replica_lag_warn_secs = 1).await;
    replica.resume();
    assert_fires(&rep, "replication.lag", Severity::Warn);
}

#[tokio::test]
async fn cluster_node_without_slots_is_down() {
    let r = RedisServer::start(&["--cluster-enabled", "yes"]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "cluster.state", Severity::Critical);
    assert!(rep
        .get("cluster.state")
        .unwrap()
        .detail
        .starts_with("cluster_state:fail"));
    assert_eq!(rep.exit_code(), 2);
}

#[tokio::test]
async fn tcp_backlog_above_somaxconn_warns_for_a_local_redis() {
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let backlog = (somaxconn + 1).to_string();
    let r = RedisServer::start(&["--tcp-backlog", &backlog]);
    let rep = doctor(&r.url()).await;
    assert_fires(&rep, "host.somaxconn", Severity::Warn);
    // The same Redis seen as remote gets no host checks at all.
    let rep = doctor_with(&r.url(), |o| o.host_checks = doctor::HostChecks::Off).await;
    assert!(!rep.host_checks);
    assert!(
        rep.findings.iter().all(|f| !f.id.starts_with("host.")),
        "{}",
        rep.render_text(false)
    );
}

#[tokio::test]
async fn many_keys_in_one_database_warn() {
    let r = RedisServer::start(&["--enable-debug-command", "yes"]);
    r.cmd(&["DEBUG", "POPULATE", "2000"]);
    let rep = doctor_with(&r.url(), |o| o.thresholds.many_keys = 1000).await;
    assert_fires(&rep, "keys.big", Severity::Warn);
    assert!(rep
        .get("keys.big")
        .unwrap()
        .detail
        .contains("db0 holds 2000 keys"));
}

#[tokio::test]
async fn a_user_that_cannot_attach_as_a_replica_is_told_the_grant() {
    let r = RedisServer::new();
    r.cmd(&[
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-psync", "-sync",
    ]);
    // Too restricted to ask ACL DRYRUN: asked REPLCONF itself.
    r.cmd(&[
        "ACL",
        "SETUSER",
        "lim",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-acl",
        "-replconf",
        "-psync",
    ]);
    let port = r.port();
    let rep = doctor(&format!("redis://app:pw@127.0.0.1:{port}")).await;
    assert_fires(&rep, "redoubt.replica-grant", Severity::Warn);
    let f = rep.get("redoubt.replica-grant").unwrap();
    assert!(
        f.detail.contains("psync") && f.fix.contains("+psync +replconf"),
        "{f:?}"
    );
    let rep = doctor(&format!("redis://lim:pw@127.0.0.1:{port}")).await;
    assert_fires(&rep, "redoubt.replica-grant", Severity::Warn);
    let rep = doctor(&r.url()).await;
    assert_silent(&rep, "redoubt.replica-grant");
}
