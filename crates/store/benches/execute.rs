//! The hot path: one SET and one GET through `Store::execute`, including
//! dispatch, the lock and effect building (no sockets); and EVALSHA of a
//! small cached script (one `redis.call` and its effect).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use store::{Store, StoreConfig};

fn args(v: &[&str]) -> Vec<Bytes> {
    v.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

fn bench_execute(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = Store::new(StoreConfig::default());
    let mut session = store.session();
    let set = args(&["SET", "key:000001", "some value of moderate size"]);
    let get = args(&["GET", "key:000001"]);
    c.bench_function("execute SET", |b| {
        b.iter(|| rt.block_on(store.execute(&mut session, set.clone())))
    });
    c.bench_function("execute GET", |b| {
        b.iter(|| rt.block_on(store.execute(&mut session, get.clone())))
    });
    // As redis-benchmark -r 100000 does: a key among 100 000, so lookups
    // miss the CPU caches as they do under real load.
    const KEYS: usize = 100_000;
    for i in 0..KEYS {
        let k = format!("key:{i:012}");
        rt.block_on(store.execute(&mut session, args(&["SET", &k, "xxx"])));
    }
    let gets: Vec<Vec<Bytes>> = (0..KEYS)
        .map(|i| args(&["GET", &format!("key:{:012}", (i * 7919) % KEYS)]))
        .collect();
    let mut n = 0;
    c.bench_function("execute GET of 100k keys", |b| {
        b.iter(|| {
            n = (n + 1) % KEYS;
            rt.block_on(store.execute(&mut session, gets[n].clone()))
        })
    });
    let script = "return redis.call('incr', KEYS[1])";
    let load = rt.block_on(store.execute(&mut session, args(&["SCRIPT", "LOAD", script])));
    let sha = match load.reply {
        resp::Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("SCRIPT LOAD: {other:?}"),
    };
    let evalsha = args(&["EVALSHA", &sha, "1", "counter"]);
    c.bench_function("execute EVALSHA incr", |b| {
        b.iter(|| rt.block_on(store.execute(&mut session, evalsha.clone())))
    });
}

criterion_group!(benches, bench_execute);
criterion_main!(benches);
