//! The replayer against real `redis-server` processes and a real journal:
//! order across databases and segments, resume after a crash of Redoubt
//! (SIGKILL of a child process) and of Redis (SIGKILL with `appendfsync
//! always`), failures recorded in `replay-failed.jsonl`, OOM pausing, the
//! checkpoint key and the metrics.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use journal::{Entry, Fsync, Journal, JournalConfig, Position};
use proxy::replay::{
    checkpoint_key, read_failed_log, replay_dir, ReplayConfig, ReplayOutcome, Replayer,
    REPLAYED_COMMANDS_TOTAL, REPLAY_ERRORS_TOTAL,
};
use test_support::{wait_for, RedisServer};

const NODE: &str = "node-a";

fn open(dir: &std::path::Path, segment_bytes: u64) -> Arc<Journal> {
    let cfg = JournalConfig {
        fsync: Fsync::No,
        segment_bytes,
        ..JournalConfig::default()
    };
    let (j, rec) = Journal::open(dir, cfg).unwrap();
    assert!(rec.corruption.is_none());
    Arc::new(j)
}

fn args(a: &[&str]) -> Vec<Bytes> {
    a.iter()
        .map(|s| Bytes::copy_from_slice(s.as_bytes()))
        .collect()
}

/// Runs `f` on a thread of its own: `append_blocking` may not block a
/// thread that drives the tests' async runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

fn append(j: &Journal, db: u32, a: &[&str]) -> Position {
    let entry = Entry::command(db, args(a), 1_700_000_000_000);
    off_runtime(|| j.append_blocking(entry).unwrap())
}

fn append_tx(j: &Journal, db: u32, cmds: &[&[&str]]) -> Position {
    let entry = Entry {
        db,
        commands: cmds.iter().map(|c| args(c)).collect(),
        time_ms: 1_700_000_000_000,
    };
    off_runtime(|| j.append_blocking(entry).unwrap())
}

fn config(redis: &RedisServer, data_dir: &std::path::Path, batch: usize) -> ReplayConfig {
    let mut cfg = ReplayConfig::new(redis.addr(), data_dir);
    cfg.batch_records = batch;
    cfg.reply_timeout = Duration::from_secs(10);
    cfg
}

fn client(redis: &RedisServer, db: u32) -> redis::Connection {
    redis::Client::open(format!("{}/{db}", redis.url()))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

fn lrange(con: &mut redis::Connection, key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(con)
        .unwrap()
}

/// The checkpoint text a journal's end should leave in Redis.
fn end_checkpoint(j: &Journal) -> String {
    j.checkpoint(j.end()).to_string()
}

/// Appends `n` entries: `INCR c{i % 10}` and `RPUSH q item-{i}` alternately.
fn counters_and_queue(j: &Journal, n: usize) {
    counters_and_queue_from(j, 0, n)
}

/// Every INCR counted exactly once and every queue item present once, in
/// journal order.
fn assert_counters_and_queue(redis: &RedisServer, n: usize) {
    let mut con = client(redis, 0);
    let incrs = n.div_ceil(2);
    for k in 0..10 {
        let expected = (0..incrs).filter(|i| i % 10 == k).count();
        let got: usize = get(&mut con, &format!("c{k}")).map_or(0, |v| v.parse().unwrap());
        assert_eq!(got, expected, "counter c{k}");
    }
    let items: Vec<String> = (0..n)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("item-{i}"))
        .collect();
    assert_eq!(
        lrange(&mut con, "q"),
        items,
        "queue items exactly once, in order"
    );
}

#[tokio::test]
async fn replays_in_order_across_dbs_and_segments() {
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 2048);
    for i in 0..200 {
        append(&j, 0, &["RPUSH", "q", &i.to_string()]);
        append(&j, 0, &["INCR", "c"]);
        append(&j, 3, &["SET", &format!("s:{i}"), &format!("v{i}")]);
    }
    append_tx(&j, 5, &[&["SET", "t", "1"], &["INCRBY", "t", "41"]]);
    append(&j, 3, &["DEL", "s:0"]);
    assert!(j.segments().len() > 3, "the journal spans segments");
    assert_eq!(j.pending_entries(), 602);

    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 64));
    let progress = r.progress();
    let released = r.watch_released();
    assert_eq!(*released.borrow(), Position::START);
    let out = r.run_until_drained().await.unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 603,
            failed: 0
        }
    );
    assert_eq!(*released.borrow(), j.end());

    let mut db0 = client(&redis, 0);
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(lrange(&mut db0, "q"), want);
    assert_eq!(get(&mut db0, "c").as_deref(), Some("200"));
    let mut db3 = client(&redis, 3);
    assert_eq!(
        get(&mut db3, "s:0"),
        None,
        "the later DEL ran after the SET"
    );
    assert_eq!(get(&mut db3, "s:199").as_deref(), Some("v199"));
    let mut db5 = client(&redis, 5);
    assert_eq!(get(&mut db5, "t").as_deref(), Some("42"));

    // The checkpoint: literal braces, db 0 only, the journal's end.
    assert_eq!(checkpoint_key(NODE), "redoubt:replay:{node-a}");
    assert_eq!(
        get(&mut db0, "redoubt:replay:{node-a}"),
        Some(end_checkpoint(&j))
    );
    assert_eq!(get(&mut db3, "redoubt:replay:{node-a}"), None);
    assert_eq!(get(&mut db5, "redoubt:replay:{node-a}"), None);
    assert_eq!(j.pending_entries(), 0, "replayed records are released");
    // Drained: the key outlives the released segments (kept for
    // retain_after_replay) by the margin, then Redis drops it.
    let ttl_ms = |db0: &mut redis::Connection| -> i64 {
        redis::cmd("PTTL")
            .arg("redoubt:replay:{node-a}")
            .query(db0)
            .unwrap()
    };
    let life = (j.retain_after_replay() + proxy::replay::CHECKPOINT_MARGIN).as_millis() as i64;
    let ttl = ttl_ms(&mut db0);
    assert!(
        ttl > life - 60_000 && ttl <= life,
        "PTTL {ttl}, life {life}"
    );
    // The next batch's SET makes it lasting again until that run drains.
    append(&j, 0, &["INCR", "c"]);
    let out = r.run_until_drained().await.unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 1,
            failed: 0
        }
    );
    assert_eq!(get(&mut db0, "c").as_deref(), Some("201"));
    let ttl = ttl_ms(&mut db0);
    assert!(
        ttl > life - 60_000 && ttl <= life,
        "PTTL {ttl}, life {life}"
    );

    let p = progress.snapshot();
    assert_eq!((p.replayed, p.failed, p.remaining), (604, 0, 0));
    assert_eq!(p.checkpoint, Some(j.checkpoint(j.end())));
    assert_eq!(p.paused, None);
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["checkpoint"], end_checkpoint(&j));
}

#[tokio::test]
async fn a_new_replayer_resumes_after_the_checkpoint() {
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 4096);
    counters_and_queue(&j, 300);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 300,
            failed: 0
        }
    );

    // A fresh replayer (as after a restart: nothing released in memory)
    // must take the checkpoint from Redis, or it would replay all 600.
    counters_and_queue_from(&j, 300, 600);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 300,
            failed: 0
        }
    );
    assert_counters_and_queue(&redis, 600);
}

#[tokio::test]
async fn a_missing_checkpoint_never_replays_what_was_released_unless_redis_is_empty() {
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 4096);
    counters_and_queue(&j, 300);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert!(matches!(out, ReplayOutcome::Drained { replayed: 300, .. }));
    counters_and_queue_from(&j, 300, 600);
    drop(j);

    // The checkpoint key alone goes missing (deleted, evicted, another
    // node id) while Redis keeps the data; Redoubt restarts.
    redis.cmd(&["DEL", "redoubt:replay:{node-a}"]);
    let j = open(tmp.path(), 4096);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 300,
            failed: 0
        },
        "only what was not released"
    );
    assert_counters_and_queue(&redis, 600);
    drop(j);

    // A Redis that came back empty gets what the journal still keeps.
    redis.cmd(&["FLUSHALL"]);
    let j = open(tmp.path(), 4096);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert!(
        matches!(out, ReplayOutcome::Drained { replayed: 600, .. }),
        "{out:?}"
    );
    assert_counters_and_queue(&redis, 600);
}

#[tokio::test]
async fn a_lost_release_point_is_recovered_from_the_checkpoint() {
    // Found by the chaos suite: a Redoubt killed after its journal had
    // drained came back with every retained record pending again (then
    // the journal kept no release point; now it keeps one, unsynced, which
    // a host crash can lose), replayed none of them (the checkpoint was at
    // the end) and so never drained: recovery spun, the keys were served
    // locally for good. The checkpoint in Redis is the authority.
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 4096);
    counters_and_queue(&j, 300);
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert!(matches!(out, ReplayOutcome::Drained { replayed: 300, .. }));
    drop(j);

    // The release point lost, as a host crash may lose it.
    let _ = std::fs::remove_file(tmp.path().join("journal").join("released"));
    let j = open(tmp.path(), 4096);
    assert_eq!(j.pending_entries(), 300, "retained, not known replayed");
    let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 32))
        .run_until_drained()
        .await
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 0,
            failed: 0
        }
    );
    assert_eq!(j.pending_entries(), 0, "released up to the checkpoint");
    assert_counters_and_queue(&redis, 300);
}

/// Entries `from..to` of [`counters_and_queue`].
fn counters_and_queue_from(j: &Journal, from: usize, to: usize) {
    off_runtime(|| {
        for i in from..to {
            let a = if i % 2 == 0 {
                args(&["INCR", &format!("c{}", (i / 2) % 10)])
            } else {
                args(&["RPUSH", "q", &format!("item-{i}")])
            };
            j.append_blocking(Entry::command(0, a, 1_700_000_000_000))
                .unwrap();
        }
    })
}

#[tokio::test]
async fn a_checkpoint_of_another_journal_or_garbage_replays_from_the_start() {
    for stale in ["12345:1:40", "not a checkpoint"] {
        let redis = RedisServer::new();
        redis.cmd(&["SET", "redoubt:replay:{node-a}", stale]);
        let tmp = tempfile::tempdir().unwrap();
        let j = open(tmp.path(), 4096);
        assert_ne!(j.epoch(), 12345);
        counters_and_queue(&j, 50);
        let out = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 8))
            .run_until_drained()
            .await
            .unwrap();
        assert_eq!(
            out,
            ReplayOutcome::Drained {
                replayed: 50,
                failed: 0
            }
        );
        assert_counters_and_queue(&redis, 50);
        assert_eq!(
            get(&mut client(&redis, 0), "redoubt:replay:{node-a}"),
            Some(end_checkpoint(&j))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_during_a_run_are_replayed_before_it_reports_drained() {
    let redis = Arc::new(RedisServer::new());
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    counters_and_queue(&j, 20_000);
    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 16));
    let progress = r.progress();
    let appender = {
        let (j, redis) = (j.clone(), redis.clone());
        tokio::task::spawn_blocking(move || {
            wait_for("replay progress", Duration::from_secs(10), || {
                progress.snapshot().replayed > 0
            });
            // With Redis frozen the run cannot finish: these appends land
            // while it is under way.
            redis.pause();
            let remaining = progress.snapshot().remaining;
            counters_and_queue_from(&j, 20_000, 20_100);
            redis.resume();
            remaining
        })
    };
    let out = r.run_until_drained().await.unwrap();
    let remaining = appender.await.unwrap();
    assert!(
        remaining > 0,
        "the run was still under way when the appends came"
    );
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 20_100,
            failed: 0
        }
    );
    assert_counters_and_queue(&redis, 20_100);
    assert_eq!(j.pending_entries(), 0);
}

#[tokio::test]
async fn wrongtype_inside_exec_is_recorded_and_replay_goes_on() {
    let redis = RedisServer::new();
    redis.cmd(&["RPUSH", "lst", "x"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    append(&j, 0, &["SET", "a", "1"]);
    let bad = append(&j, 0, &["INCR", "lst"]);
    append(&j, 0, &["SET", "b", "2"]);
    let bad_tx = append_tx(&j, 2, &[&["INCR", "lst2"], &["SET", "c", "3"]]);
    append(&j, 0, &["SET", "d", "4"]);
    redis::cmd("RPUSH")
        .arg("lst2")
        .arg("y")
        .exec(&mut client(&redis, 2))
        .unwrap();

    let mut cfg = config(&redis, tmp.path(), 2);
    cfg.failed_log_path = tmp.path().join("replay-failed.jsonl");
    let mut r = Replayer::new(j.clone(), NODE, cfg);
    let out = r.run_until_drained().await.unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 4,
            failed: 2
        }
    );
    assert_eq!(r.progress().snapshot().failed, 2);

    let mut db0 = client(&redis, 0);
    assert_eq!(get(&mut db0, "a").as_deref(), Some("1"));
    assert_eq!(get(&mut db0, "b").as_deref(), Some("2"));
    assert_eq!(get(&mut db0, "d").as_deref(), Some("4"));
    // Inside a client's transaction the other command still ran, as in Redis.
    assert_eq!(get(&mut client(&redis, 2), "c").as_deref(), Some("3"));
    assert_eq!(lrange(&mut db0, "lst"), ["x"]);

    let lines = read_failed_log(tmp.path().join("replay-failed.jsonl")).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].position, j.checkpoint(bad).to_string());
    assert_eq!(lines[0].command, ["INCR", "lst"]);
    assert_eq!(lines[0].db, 0);
    assert_eq!(lines[0].seq, 2);
    assert_eq!(lines[0].journal_time_ms, 1_700_000_000_000);
    assert!(
        lines[0].error.starts_with("WRONGTYPE"),
        "{}",
        lines[0].error
    );
    assert!(lines[0].time_ms > 1_700_000_000_000);
    assert_eq!(lines[1].position, j.checkpoint(bad_tx).to_string());
    assert_eq!(
        (lines[1].db, lines[1].command.clone()),
        (2, vec!["INCR".to_string(), "lst2".into()])
    );
    assert_eq!(j.pending_entries(), 0);
    assert_eq!(
        get(&mut db0, "redoubt:replay:{node-a}"),
        Some(end_checkpoint(&j))
    );
}

#[tokio::test]
async fn records_that_cannot_run_in_a_transaction_are_recorded_and_the_rest_replayed() {
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    append(&j, 0, &["SET", "a", "1"]);
    // Unknown to Redis: refused when queued, which would abort the batch.
    append(&j, 0, &["NO.SUCH.COMMAND", "x"]);
    append(&j, 0, &["INCR", "n"]);
    append(&j, 0, &["SET", "k"]); // wrong arity: caught before sending
    append(&j, 999, &["SET", "z", "1"]); // no db 999
    append_tx(&j, 0, &[&["INCR", "n"], &["EXEC"]]); // would end our MULTI
    append(&j, 4, &["SET", "b", "2"]);
    append(&j, 0, &["INCR", "n"]);

    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 64));
    let out = r.run_until_drained().await.unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 4,
            failed: 5
        }
    );
    let mut db0 = client(&redis, 0);
    assert_eq!(get(&mut db0, "a").as_deref(), Some("1"));
    assert_eq!(
        get(&mut db0, "n").as_deref(),
        Some("2"),
        "INCR once each, none from the refused transaction, none repeated by the resend"
    );
    assert_eq!(get(&mut client(&redis, 4), "b").as_deref(), Some("2"));

    let lines = read_failed_log(tmp.path().join("replay-failed.jsonl")).unwrap();
    let commands: Vec<String> = lines.iter().map(|l| l.command.join(" ")).collect();
    assert_eq!(
        commands,
        ["SET k", "SET z 1", "INCR n", "EXEC", "NO.SUCH.COMMAND x"],
        "{lines:?}"
    );
    assert!(
        lines[1].error.contains("DB index is out of range"),
        "{}",
        lines[1].error
    );
    assert!(
        lines[4].error.contains("unknown command"),
        "{}",
        lines[4].error
    );
    assert_eq!(j.pending_entries(), 0);
}

#[tokio::test]
async fn oom_pauses_replay_and_resuming_loses_and_repeats_nothing() {
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    counters_and_queue(&j, 100);
    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 16));
    assert_eq!(
        r.run_until_drained().await.unwrap(),
        ReplayOutcome::Drained {
            replayed: 100,
            failed: 0
        }
    );
    let first_end = end_checkpoint(&j);

    counters_and_queue_from(&j, 100, 300);
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let progress = r.progress();
    match r.run_until_drained().await.unwrap() {
        ReplayOutcome::Paused {
            reason,
            replayed,
            failed,
        } => {
            assert!(reason.contains("OOM"), "{reason}");
            assert_eq!((replayed, failed), (0, 0));
        }
        other => panic!("expected a pause, got {other:?}"),
    }
    let p = progress.snapshot();
    assert!(
        p.paused.as_deref().is_some_and(|r| r.contains("OOM")),
        "{p:?}"
    );
    assert_eq!(p.remaining, 200, "nothing released while paused");
    assert_eq!(redis.cmd(&["GET", "redoubt:replay:{node-a}"]), first_end);
    assert_counters_and_queue(&redis, 100);

    // Still full: still paused, still nothing applied.
    assert!(matches!(
        r.run_until_drained().await.unwrap(),
        ReplayOutcome::Paused { .. }
    ));
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(
        r.run_until_drained().await.unwrap(),
        ReplayOutcome::Drained {
            replayed: 200,
            failed: 0
        }
    );
    assert_counters_and_queue(&redis, 300);
    assert_eq!(progress.snapshot().paused, None);
    assert_eq!(j.pending_entries(), 0);
}

#[tokio::test]
async fn unreachable_redis_is_reported_as_connection_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    counters_and_queue(&j, 10);
    let port = test_support::refused_port();
    let cfg = ReplayConfig::new(format!("127.0.0.1:{port}"), tmp.path());
    let out = Replayer::new(j.clone(), NODE, cfg)
        .run_until_drained()
        .await
        .unwrap();
    assert!(
        matches!(out, ReplayOutcome::ConnectionLost { replayed: 0, .. }),
        "{out:?}"
    );
    assert_eq!(j.pending_entries(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_replay_loses_and_repeats_nothing() {
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    let n = 6000;
    counters_and_queue(&j, n);
    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 8));
    let run = tokio::spawn(async move {
        let out = r.run_until_drained().await.unwrap();
        (r, out)
    });
    let redis = tokio::task::spawn_blocking(move || {
        wait_for("the first checkpoint", Duration::from_secs(20), || {
            redis
                .cmd_raw(&["GET", "redoubt:replay:{node-a}"])
                .is_ok_and(|v| !v.is_empty())
        });
        redis.kill();
        redis
    })
    .await
    .unwrap();
    let (mut r, out) = run.await.unwrap();
    let first = match out {
        ReplayOutcome::ConnectionLost { replayed, .. } => replayed,
        other => panic!("expected the connection lost mid-replay, got {other:?}"),
    };
    assert!(
        first > 0 && (first as usize) < n,
        "killed mid-replay ({first} of {n})"
    );

    let mut redis = redis;
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let out = r.run_until_drained().await.unwrap();
    let ReplayOutcome::Drained {
        replayed,
        failed: 0,
    } = out
    else {
        panic!("{out:?}")
    };
    // Redis kept what it acknowledged, and perhaps the last EXEC whose
    // reply was lost (its checkpoint with it): the second run did the rest.
    let rest = (n - first as usize) as u64;
    assert!(
        replayed <= rest && replayed + 8 >= rest,
        "{replayed} of {rest}"
    );
    assert_counters_and_queue(&redis, n);
    assert_eq!(
        get(&mut client(&redis, 0), "redoubt:replay:{node-a}"),
        Some(end_checkpoint(&j))
    );
}

/// Child-process side of `replayer_killed_mid_replay_…`: replays the data
/// dir named in the environment in small batches (so the run lasts) and
/// exits. Does nothing when run alone.
#[test]
#[ignore = "run as a child process by replayer_killed_mid_replay_loses_and_repeats_nothing"]
fn child_replays_a_data_dir() {
    let (Ok(dir), Ok(addr)) = (
        std::env::var("REPLAY_CHILD_DIR"),
        std::env::var("REPLAY_CHILD_ADDR"),
    ) else {
        return;
    };
    let j = open(std::path::Path::new(&dir), 1 << 20);
    let mut cfg = ReplayConfig::new(addr, &dir);
    cfg.batch_records = 16;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt
        .block_on(Replayer::new(j, NODE, cfg).run_until_drained())
        .unwrap();
    println!("{out:?}");
}

#[test]
fn replayer_killed_mid_replay_loses_and_repeats_nothing() {
    let redis = RedisServer::new();
    let tmp = tempfile::tempdir().unwrap();
    let n = 40_000;
    let end = {
        let j = open(tmp.path(), 1 << 20);
        counters_and_queue(&j, n);
        end_checkpoint(&j)
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_replays_a_data_dir",
            "--ignored",
            "--nocapture",
        ])
        .env("REPLAY_CHILD_DIR", tmp.path())
        .env("REPLAY_CHILD_ADDR", redis.addr())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the child's first checkpoint",
        Duration::from_secs(20),
        || {
            redis
                .cmd_raw(&["GET", "redoubt:replay:{node-a}"])
                .is_ok_and(|v| !v.is_empty())
        },
    );
    // Freeze Redis so the child is certainly mid-replay when it dies.
    redis.pause();
    child.kill().unwrap();
    child.wait().unwrap();
    redis.resume();
    let mid = redis.cmd(&["GET", "redoubt:replay:{node-a}"]);
    assert_ne!(mid, end, "the child was killed before the end");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt
        .block_on(replay_dir(tmp.path(), &redis.url(), Some(NODE)))
        .unwrap();
    assert!(
        matches!(out, ReplayOutcome::Drained { failed: 0, .. }),
        "{out:?}"
    );
    assert_counters_and_queue(&redis, n);
    assert_eq!(redis.cmd(&["GET", "redoubt:replay:{node-a}"]), end);
}

#[test]
fn replay_dir_refuses_a_dir_without_a_journal_or_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(replay_dir(tmp.path(), "redis://127.0.0.1:1", None))
        .unwrap_err();
    assert!(e.to_string().contains("holds no journal"), "{e}");
    drop(open(tmp.path(), 1 << 20));
    let e = rt
        .block_on(replay_dir(tmp.path(), "redis://127.0.0.1:1", None))
        .unwrap_err();
    assert!(e.to_string().contains("no node id"), "{e}");
}

/// `key`'s value on the primary serving its slot.
fn on_cluster(cluster: &test_support::cluster::ClusterSet, key: &str) -> String {
    let slot = upstream::cluster::key_slot(key.as_bytes());
    cluster.node_of_slot(slot).cmd(&["GET", key])
}

#[test]
fn a_journal_replays_into_a_cluster_slot_by_slot_exactly_once() {
    let cluster = test_support::cluster::ClusterSet::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a");
    let copy = tmp.path().join("b");
    let n = 3000;
    {
        let j = open(&data, 1 << 20);
        // Counters over many slots, and runs of one slot (a hash tag).
        for i in 0..n {
            append(&j, 0, &["INCR", &format!("c{}", i % 300)]);
            append(&j, 0, &["INCR", &format!("{{t}}c{}", i % 3)]);
        }
        // A client's transaction on one slot runs whole.
        append_tx(&j, 0, &[&["SET", "{u}x", "1"], &["SET", "{u}y", "2"]]);
        // Keys in two slots: no cluster node runs it; recorded, not sent.
        append(&j, 0, &["MSET", "a", "1", "b", "2"]);
    }
    // The same journal, nothing released: as if Redoubt died after the
    // transactions ran and before it noted that they had.
    let out = Command::new("cp")
        .arg("-r")
        .arg(&data)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.url();
    let out = rt.block_on(replay_dir(&data, &url, Some(NODE))).unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 2 * n as u64 + 2,
            failed: 1
        }
    );
    let check = || {
        for k in 0..300 {
            let got = on_cluster(&cluster, &format!("c{k}"));
            assert_eq!(got, (n / 300).to_string(), "c{k}");
        }
        for k in 0..3 {
            let got = on_cluster(&cluster, &format!("{{t}}c{k}"));
            assert_eq!(got, (n / 3).to_string(), "{{t}}c{k}");
        }
        assert_eq!(on_cluster(&cluster, "{u}x"), "1");
        assert_eq!(on_cluster(&cluster, "{u}y"), "2");
        assert_eq!(on_cluster(&cluster, "a"), "");
        assert_eq!(on_cluster(&cluster, "b"), "");
    };
    check();
    let failed = read_failed_log(data.join(proxy::replay::FAILED_LOG_FILE)).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].error.starts_with("CROSSSLOT"), "{failed:?}");
    // Each slot's checkpoint is on its own primary: the copy replays
    // nothing again.
    let out = rt.block_on(replay_dir(&copy, &url, Some(NODE))).unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 0,
            failed: 1
        }
    );
    check();
    let key = proxy::replay::slot_key(NODE, upstream::cluster::key_slot(b"t"));
    assert!(!on_cluster(&cluster, &key).is_empty(), "{key}");
}

#[test]
fn metrics_count_replayed_and_failed_commands() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let redis = RedisServer::new();
    redis.cmd(&["RPUSH", "lst", "x"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    append(&j, 0, &["SET", "a", "1"]);
    append(&j, 0, &["INCR", "lst"]);
    append(&j, 0, &["SET", "b", "2"]);
    // Handles are bound when the replayer is made, on this thread.
    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 64));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(r.run_until_drained()).unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 2,
            failed: 1
        }
    );
    let text = handle.render();
    assert!(
        text.contains(&format!("{REPLAYED_COMMANDS_TOTAL} 2")),
        "{text}"
    );
    assert!(text.contains(&format!("{REPLAY_ERRORS_TOTAL} 1")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconf_pauses_replay_until_redis_can_persist_again() {
    let redis = RedisServer::start(&["--enable-protected-configs", "yes"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    counters_and_queue(&j, 100);

    // A failed background save with `save` configured makes Redis refuse
    // writes with MISCONF: save into a directory that no longer exists.
    let gone = tempfile::tempdir().unwrap();
    redis.cmd(&["CONFIG", "SET", "dir", gone.path().to_str().unwrap()]);
    let gone_path = gone.path().to_path_buf();
    drop(gone);
    assert!(!gone_path.exists());
    redis.cmd(&["CONFIG", "SET", "save", "3600 1"]);
    redis.cmd(&["BGSAVE"]);
    wait_for(
        "the background save to fail",
        Duration::from_secs(10),
        || {
            redis
                .cmd_raw(&["INFO", "persistence"])
                .is_ok_and(|i| i.contains("rdb_last_bgsave_status:err"))
        },
    );

    let mut r = Replayer::new(j.clone(), NODE, config(&redis, tmp.path(), 16));
    match r.run_until_drained().await.unwrap() {
        ReplayOutcome::Paused { reason, .. } => assert!(reason.contains("MISCONF"), "{reason}"),
        other => panic!("expected a pause, got {other:?}"),
    }
    assert_eq!(j.pending_entries(), 100);
    assert_eq!(redis.cmd_raw(&["DBSIZE"]).unwrap(), ":0");

    // Persistence works again: replay resumes and applies everything once.
    redis.cmd(&["CONFIG", "SET", "dir", redis.dir().to_str().unwrap()]);
    redis.cmd(&["BGSAVE"]);
    wait_for("a good background save", Duration::from_secs(10), || {
        redis
            .cmd_raw(&["INFO", "persistence"])
            .is_ok_and(|i| i.contains("rdb_last_bgsave_status:ok"))
    });
    assert_eq!(
        r.run_until_drained().await.unwrap(),
        ReplayOutcome::Drained {
            replayed: 100,
            failed: 0
        }
    );
    assert_counters_and_queue(&redis, 100);
}

#[tokio::test]
async fn a_stream_entry_redis_has_since_passed_is_added_under_a_new_id() {
    let redis = RedisServer::new();
    // Redis came back with an entry the outage's copy never saw.
    redis.cmd(&["XADD", "events", "5000-0", "seen", "by-redis-only"]);
    let tmp = tempfile::tempdir().unwrap();
    let j = open(tmp.path(), 1 << 20);
    // The outage's entries, journaled under the IDs its clients were told.
    append_tx(
        &j,
        0,
        &[
            &["XADD", "events", "4000-0", "job", "1"],
            &["SET", "after", "x"],
        ],
    );
    append(&j, 0, &["XADD", "fresh", "4000-1", "job", "2"]);
    // As the local store journals a trimmed XADD (BullMQ's events).
    append(
        &j,
        0,
        &["XADD", "events", "MAXLEN", "=", "10", "4500-0", "job", "1b"],
    );
    // Any other XADD error is still an error, recorded as such.
    append(&j, 0, &["SET", "notastream", "v"]);
    append(&j, 0, &["XADD", "notastream", "4000-2", "job", "3"]);
    let mut cfg = config(&redis, tmp.path(), 10);
    cfg.failed_log_path = tmp.path().join("replay-failed.jsonl");
    let out = Replayer::new(j.clone(), NODE, cfg)
        .run_until_drained()
        .await
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: 5,
            failed: 1
        }
    );
    assert_eq!(redis.cmd(&["XLEN", "events"]), ":3");
    // Newest entry: the outage's, after Redis's own.
    let mut con = client(&redis, 0);
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg("events")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut con)
        .unwrap();
    assert_eq!(newest[0].1, vec![("job".to_string(), "1b".to_string())]);
    let ms: u64 = newest[0].0.split('-').next().unwrap().parse().unwrap();
    assert!(ms > 5000, "{newest:?}");
    // A stream that had not moved keeps the journaled ID.
    let fresh: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("fresh")
        .arg("-")
        .arg("+")
        .query(&mut con)
        .unwrap();
    assert_eq!(fresh[0].0, "4000-1");
    assert_eq!(get(&mut con, "after").as_deref(), Some("x"));
    let lines = read_failed_log(tmp.path().join("replay-failed.jsonl")).unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].error.starts_with("WRONGTYPE"),
        "{}",
        lines[0].error
    );
}

#[test]
fn a_shard_that_cannot_be_reached_holds_back_only_its_own_slots() {
    let mut cluster =
        test_support::cluster::ClusterSet::start_with(&["--cluster-require-full-coverage", "no"]);
    let tmp = tempfile::tempdir().unwrap();
    let n = 2000;
    {
        let j = open(tmp.path(), 1 << 20);
        for i in 0..n {
            append(&j, 0, &["INCR", &format!("c{}", i % 200)]);
        }
    }
    let down = cluster.node_of_slot(0).addr();
    let idx = cluster.nodes.iter().position(|x| x.addr() == down).unwrap();
    let down_slots: Vec<bool> = cluster
        .slot_owners()
        .iter()
        .map(|o| o.as_deref() == Some(down.as_str()))
        .collect();
    let on_down = |k: &str| down_slots[upstream::cluster::key_slot(k.as_bytes()) as usize];
    // And its replica: its slots stay down until they are back.
    let port = down.rsplit(':').next().unwrap().to_string();
    let replica = cluster
        .nodes
        .iter()
        .position(|x| {
            x.cmd_raw(&["INFO", "replication"])
                .is_ok_and(|i| i.contains(&format!("master_port:{port}\r\n")))
        })
        .unwrap();
    cluster.nodes[replica].kill();
    cluster.nodes[idx].kill();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.url();
    let out = rt
        .block_on(replay_dir(tmp.path(), &url, Some(NODE)))
        .unwrap();
    let live: u64 = (0..n)
        .filter(|i| !on_down(&format!("c{}", i % 200)))
        .count() as u64;
    match &out {
        ReplayOutcome::ConnectionLost {
            reason, replayed, ..
        } => {
            assert_eq!(*replayed, live, "{out:?}");
            assert!(reason.contains("wait for a primary"), "{out:?}");
        }
        other => panic!("{other:?}"),
    }
    for k in 0..200 {
        let key = format!("c{k}");
        if !on_down(&key) {
            assert_eq!(on_cluster(&cluster, &key), (n / 200).to_string(), "{key}");
        }
    }
    // Back (empty: no persistence): its slots' records go there, and no
    // other slot's twice.
    cluster.nodes[idx].start_again();
    cluster.nodes[replica].start_again();
    cluster.wait_ok();
    let out = rt
        .block_on(replay_dir(tmp.path(), &url, Some(NODE)))
        .unwrap();
    assert_eq!(
        out,
        ReplayOutcome::Drained {
            replayed: n as u64 - live,
            failed: 0
        }
    );
    for k in 0..200 {
        let key = format!("c{k}");
        assert_eq!(on_cluster(&cluster, &key), (n / 200).to_string(), "{key}");
    }
}
