//! Hot paths of the data path: parsing client commands and measuring
//! upstream replies; and the cost of a large command trickled in over many
//! reads, parsed again after each read (`parse_request`, what sessions did)
//! or resumed by a `RequestDecoder`, measured in CPU time of the thread.
use bytes::BytesMut;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use resp::{frame::encode_command, frame_len, parse_request, Limits, RequestDecoder};

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
    g.bench_function("decoder_x16", |b| {
        b.iter(|| {
            let mut decoder = RequestDecoder::new(limits);
            let mut buf = BytesMut::from(&pipeline[..]);
            while let Some(r) = decoder.decode(&mut buf).unwrap() {
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

/// Socket read size the trickle benches feed.
const READ: usize = 4096;

fn command(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_command(&mut out, args);
    out.to_vec()
}

/// How the trickled command is parsed after each read.
#[derive(Clone, Copy)]
enum Way {
    /// Only append the reads: the floor every way pays.
    FeedOnly,
    /// `parse_request` after every read, from the first byte each time.
    Reparse,
    /// One `RequestDecoder` resumed after every read.
    Decoder,
}

/// Feeds `stream` in `READ`-byte reads into a buffer sized up front (so
/// buffer growth is not measured), parsing after each read as `way` says.
fn trickle(stream: &[u8], way: Way) {
    let limits = Limits::default();
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::with_capacity(stream.len());
    let mut requests = 0;
    for read in stream.chunks(READ) {
        buf.extend_from_slice(read);
        let req = match way {
            Way::FeedOnly => continue,
            Way::Reparse => parse_request(&mut buf, &limits),
            Way::Decoder => decoder.decode(&mut buf),
        };
        if let Some(req) = req.expect("valid command") {
            requests += 1;
            black_box(req);
        }
    }
    assert!(matches!(way, Way::FeedOnly) || requests == 1);
}

fn bench_trickled(c: &mut Criterion<CpuTime>) {
    let mb = 1_000_000;
    let shapes = [
        (
            "1000_args_of_100kB",
            command(
                &(0..1000)
                    .map(|i| vec![b'a' + (i % 26) as u8; 100_000])
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "one_bulk_of_100MB",
            command(&[b"SET".to_vec(), b"k".to_vec(), vec![b'v'; 100 * mb]]),
        ),
        // Small arguments are where re-parsing hurts most; at 100 MB it
        // would take minutes per run, so this shape is 4 MB.
        (
            "160k_args_of_16B",
            command(
                &(0..160_000)
                    .map(|i| format!("member:{i:09}").into_bytes())
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    let mut g = c.benchmark_group("trickled_4KiB_reads");
    g.sample_size(10);
    for (name, stream) in &shapes {
        g.throughput(Throughput::Bytes(stream.len() as u64));
        for (way, label) in [
            (Way::FeedOnly, "feed_only"),
            (Way::Reparse, "parse_request_each_read"),
            (Way::Decoder, "request_decoder"),
        ] {
            g.bench_with_input(BenchmarkId::new(label, name), stream, |b, s| {
                b.iter(|| trickle(s, way))
            });
        }
    }
    g.finish();
}

/// CPU time of the calling thread, from `/proc/thread-self/schedstat`
/// (Linux): the benches above are single-threaded, and on a shared machine
/// CPU time is what says how much a parse starves other tasks.
struct CpuTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux) gives the thread's CPU time")
}

/// Formats nanoseconds as time, like wall-clock results.
static NANOS: WallTime = WallTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        NANOS.formatter()
    }
}

criterion_group!(benches, bench);
criterion_group! {
    name = trickled;
    config = Criterion::default().with_measurement(CpuTime);
    targets = bench_trickled
}
criterion_main!(benches, trickled);
