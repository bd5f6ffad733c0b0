//! Hot paths of the data path: parsing client commands and measuring
//! upstream replies.
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use resp::{frame_len, parse_request, Limits};

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let one = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000012345\r\n$3\r\nxyz\r\n";
    let pipeline: Vec<u8> = one.iter().copied().cycle().take(one.len() * 16).collect();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(16));
    g.bench_function("parse_request_x16", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&pipeline[..]);
            while let Some(r) = parse_request(&mut buf, &limits).unwrap() {
                black_box(r);
            }
        })
    });
    let reply = b"*4\r\n$5\r\nhello\r\n:42\r\n$-1\r\n*2\r\n+OK\r\n$3\r\nabc\r\n";
    g.bench_function("frame_len_array", |b| {
        b.iter(|| frame_len(black_box(reply), &limits).unwrap())
    });
    g.bench_function("lookup", |b| {
        b.iter(|| resp::lookup(black_box(&[&b"zrangebyscore"[..]])))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
