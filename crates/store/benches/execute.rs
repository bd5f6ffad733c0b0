//! The hot path: one SET and one GET through `Store::execute`, including
//! dispatch, the lock and effect building (no sockets).

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
}

criterion_group!(benches, bench_execute);
criterion_main!(benches);
