//! Near-cache hot path: a hit, a put (ticket + insert, evicting once
//! full), an invalidation, and hits from several threads at once (the
//! shard locks under contention).
//!
//! `cargo bench -p proxy --bench near_cache`

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use proxy::near_cache::{NearCache, Tracked, DEFAULT_MAX_BYTES, DEFAULT_MAX_STALE_MS};

const KEYS: usize = 100_000;

fn keys() -> Vec<Bytes> {
    (0..KEYS)
        .map(|i| Bytes::from(format!("sess:{i:08}")))
        .collect()
}

/// A default-sized cache holding every key with a 100-byte value.
fn filled(keys: &[Bytes]) -> Arc<NearCache> {
    let c = Arc::new(NearCache::new(
        DEFAULT_MAX_BYTES,
        DEFAULT_MAX_STALE_MS,
        Tracked::Everything,
    ));
    c.start_tracking();
    let v = Bytes::from(vec![b'v'; 100]);
    for k in keys {
        let t = c.ticket(k);
        c.put_string(t, 0, k.clone(), v.clone(), -1);
    }
    c
}

fn single_thread(c: &mut Criterion) {
    let keys = keys();
    let cache = filled(&keys);
    let mut g = c.benchmark_group("near_cache");
    g.throughput(Throughput::Elements(1));

    let mut i = 0usize;
    g.bench_function("get_string_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(cache.get_string(0, &keys[i], 1))
        })
    });
    // The same, over 1,000 keys: the cost without cache-line misses.
    g.bench_function("get_string_hit_hot", |b| {
        b.iter(|| {
            i = (i + 7919) % 1000;
            black_box(cache.get_string(0, &keys[i], 1))
        })
    });
    g.bench_function("get_string_miss", |b| {
        b.iter(|| black_box(cache.get_string(1, &keys[0], 1)))
    });

    // Puts into a full, small cache: each one evicts.
    let small = NearCache::new(1 << 20, DEFAULT_MAX_STALE_MS, Tracked::Everything);
    small.start_tracking();
    let v = Bytes::from(vec![b'v'; 100]);
    g.bench_function("put_string_evicting", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let t = small.ticket(&keys[i]);
            black_box(small.put_string(t, 0, keys[i].clone(), v.clone(), -1))
        })
    });
    g.bench_function("invalidate_then_put", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            cache.invalidate(&keys[i]);
            let t = cache.ticket(&keys[i]);
            black_box(cache.put_string(t, 0, keys[i].clone(), v.clone(), -1))
        })
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let keys = Arc::new(keys());
    let cache = filled(&keys);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(4)
        .min(8);
    let mut g = c.benchmark_group("near_cache_contended");
    g.throughput(Throughput::Elements(threads as u64));
    g.bench_function(format!("get_string_hit_{threads}_threads"), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (cache, keys) = (&cache, &keys);
                    s.spawn(move || {
                        let mut i = t * 1013;
                        for _ in 0..iters {
                            i = (i + 7919) % KEYS;
                            black_box(cache.get_string(0, &keys[i], 1));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
