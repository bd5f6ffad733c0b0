//! Append throughput under each fsync policy, with one appender and with
//! many concurrent appenders (where group commit shares fsyncs).
//!
//! `cargo bench -p journal --bench append` (uses the disk under the
//! system temp dir; put TMPDIR on the disk whose figures you want).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use journal::{Entry, Fsync, Journal, JournalConfig};

fn entry(i: u64) -> Entry {
    Entry::command(
        0,
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from(format!("key:{i:012}")),
            Bytes::from_static(&[b'x'; 32]),
        ],
        i,
    )
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (name, fsync) in [
        ("always", Fsync::Always),
        ("everysec", Fsync::EverySec),
        ("no", Fsync::No),
    ] {
        for appenders in [1u64, 64] {
            let tmp = tempfile::tempdir().unwrap();
            // Large enough never to fill during a run; rotation is part of the cost.
            let cfg = JournalConfig {
                fsync,
                max_bytes: u64::MAX,
                ..JournalConfig::default()
            };
            let (j, _) = Journal::open(tmp.path(), cfg).unwrap();
            let j = Arc::new(j);
            g.bench_function(
                BenchmarkId::new(name, format!("{appenders}_appenders")),
                |b| {
                    b.iter_custom(|iters| {
                        let per_task = iters.div_ceil(appenders);
                        rt.block_on(async {
                            let start = Instant::now();
                            let tasks: Vec<_> = (0..appenders)
                                .map(|t| {
                                    let j = j.clone();
                                    tokio::spawn(async move {
                                        for i in 0..per_task {
                                            j.append(entry(t << 32 | i)).await.unwrap();
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                            // Report time per append actually made.
                            start
                                .elapsed()
                                .mul_f64(iters as f64 / (per_task * appenders) as f64)
                        })
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
