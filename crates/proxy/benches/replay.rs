//! Replay rate against `redis-cli --pipe` of the same commands, exported
//! with `journal export --format resp` (issue 5's aim: at least 0.5× with
//! the checkpointing).
//!
//! `cargo bench -p proxy --bench replay` (needs `redis-server` and
//! `redis-cli` on the PATH). Both sides start from an empty Redis each
//! iteration; the ratio is printed at the end (`-- ratio` skips the
//! criterion runs and prints only that). `REPLAY_BENCH_N` sets the number
//! of `SET`s (default 200 000), `REPLAY_BENCH_BATCH` the records per
//! transaction (default [`proxy::replay::DEFAULT_BATCH_RECORDS`]).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use journal::{Entry, Fsync, Journal, JournalConfig};
use proxy::replay::{ReplayConfig, ReplayOutcome, Replayer};
use test_support::RedisServer;

fn n() -> u64 {
    std::env::var("REPLAY_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

struct Setup {
    redis: RedisServer,
    journal: Arc<Journal>,
    dir: tempfile::TempDir,
    export: Vec<u8>,
    rt: tokio::runtime::Runtime,
}

fn setup(n: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        fsync: Fsync::No,
        max_bytes: u64::MAX,
        ..JournalConfig::default()
    };
    let (j, _) = Journal::open(dir.path(), cfg).unwrap();
    let value = Bytes::from_static(&[b'x'; 32]);
    for i in 0..n {
        let args = vec![
            Bytes::from_static(b"SET"),
            Bytes::from(format!("key:{i:012}")),
            value.clone(),
        ];
        j.append_blocking(Entry::command(0, args, 0)).unwrap();
    }
    let mut export = Vec::new();
    let report = journal::export_resp(dir.path(), &mut export).unwrap();
    assert_eq!(report.commands, n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Setup {
        redis: RedisServer::new(),
        journal: Arc::new(j),
        dir,
        export,
        rt,
    }
}

impl Setup {
    fn replay_once(&self) -> Duration {
        // An empty Redis has no checkpoint, so a fresh replayer starts at
        // the journal's first record again.
        self.redis.cmd(&["FLUSHALL"]);
        let mut cfg = ReplayConfig::new(self.redis.addr(), self.dir.path());
        if let Some(b) = std::env::var("REPLAY_BENCH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            cfg.batch_records = b;
        }
        let mut r = Replayer::new(self.journal.clone(), "bench", cfg);
        let start = Instant::now();
        let out = self.rt.block_on(r.run_until_drained()).unwrap();
        let took = start.elapsed();
        assert_eq!(
            out,
            ReplayOutcome::Drained {
                replayed: n(),
                failed: 0
            }
        );
        took
    }

    fn pipe_once(&self) -> Duration {
        self.redis.cmd(&["FLUSHALL"]);
        let start = Instant::now();
        let mut child = Command::new("redis-cli")
            .args(["-p", &self.redis.port().to_string(), "--pipe"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-cli on the PATH");
        child.stdin.take().unwrap().write_all(&self.export).unwrap();
        assert!(child.wait().unwrap().success());
        start.elapsed()
    }
}

fn replay_vs_pipe(c: &mut Criterion) {
    let n = n();
    let s = setup(n);
    let mut g = c.benchmark_group(format!("replay_{n}_sets"));
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(n));
    g.bench_function("replayer", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| s.replay_once()).sum())
    });
    g.bench_function("redis_cli_pipe", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| s.pipe_once()).sum())
    });
    g.finish();

    // The figure the issue asks for. The two alternate, so a busy machine
    // slows both alike; medians of nine runs each.
    let mut replay = Vec::new();
    let mut pipe = Vec::new();
    for _ in 0..9 {
        replay.push(s.replay_once());
        pipe.push(s.pipe_once());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (replay, pipe) = (median(&mut replay), median(&mut pipe));
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "replay {n} SETs (median of 9, alternating): replayer {:.0} cmd/s ({replay:?}), redis-cli --pipe {:.0} cmd/s ({pipe:?}), ratio {:.2}",
        rate(replay),
        rate(pipe),
        rate(replay) / rate(pipe)
    );
}

criterion_group!(benches, replay_vs_pipe);
criterion_main!(benches);
