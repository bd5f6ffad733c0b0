//! Mutation fuzzing on stable Rust: real RDB files from redis-server and
//! hand-built RDB 11 fixtures, mutated by a seeded RNG (bit flips,
//! truncation, inserted and removed bytes, huge length prefixes). Every
//! mutant must give records or an error: no panic, no hang, and no large
//! allocation (a counting global allocator watches the biggest request
//! and the peak of live bytes while decoding).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{intset, len, listpack, lzf_string, rdb_file, string, ziplist, zipmap, Conn, El};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdb::Limits;
use test_support::RedisServer;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BIGGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        BIGGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        BIGGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counters are global: the two tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A real RDB with every encoding Redis 7.0 writes.
fn server_rdb() -> Vec<u8> {
    let server = RedisServer::start(&[
        "--list-max-listpack-size",
        "4",
        "--list-compress-depth",
        "1",
        "--stream-node-max-entries",
        "3",
        "--maxmemory-policy",
        "allkeys-lfu",
    ]);
    let mut c = Conn::new(server.port());
    c.call(&["SET", "s", "string"]);
    c.call(&["SET", "i", "-70000"]);
    c.call(&["SET", "lzf", &"abcabcabc".repeat(20)]);
    c.call(&["SET", "e", "x", "PX", "99999999"]);
    for i in 0..30 {
        c.call(&["RPUSH", "l", &format!("elem-{i}-{}", "zz".repeat(i))]);
        c.call(&["HSET", "h", &format!("f{i}"), &(i * 1000).to_string()]);
        c.call(&["ZADD", "z", &format!("{}.5", i), &format!("m{i}")]);
        c.call(&["SADD", "si", &(i * 100_000).to_string()]);
        c.call(&["SADD", "ss", &format!("m{i}")]);
        c.call(&["XADD", "x", "*", "a", &i.to_string(), "b", "v"]);
    }
    for i in 0..200 {
        c.call(&["HSET", "hbig", &format!("field-{i}"), "v"]);
        c.call(&["ZADD", "zbig", &i.to_string(), &format!("member-{i}")]);
    }
    c.call(&["XADD", "x", "*", "other", "fields"]);
    c.call(&["XGROUP", "CREATE", "x", "g", "0"]);
    c.call(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "COUNT",
        "3",
        "STREAMS",
        "x",
        ">",
    ]);
    c.call(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=l\nredis.register_function('f', function() return 1 end)",
    ]);
    c.call(&["SELECT", "2"]);
    c.call(&["SET", "db2", "v"]);
    common::save(&server)
}

/// RDB 11 and old encodings, built by hand.
fn fixture_rdb() -> Vec<u8> {
    let mut body = Vec::new();
    let els: Vec<El> = vec![
        El::Int(1),
        El::Int(-300),
        El::Int(70000),
        El::Int(1 << 40),
        El::Str(b"str".to_vec()),
        El::Str(vec![b'q'; 100]),
    ];
    for (ty, blob) in [
        (20u8, listpack(&els)),
        (10, ziplist(&els)),
        (13, ziplist(&els)),
    ] {
        body.push(ty);
        string(&mut body, format!("k{ty}").as_bytes());
        string(&mut body, &blob);
    }
    body.push(18);
    string(&mut body, b"ql");
    len(&mut body, 2);
    len(&mut body, 1);
    lzf_string(&mut body, &b"plainplainplain".repeat(4));
    len(&mut body, 2);
    lzf_string(&mut body, &listpack(&els));
    body.push(11);
    string(&mut body, b"is");
    string(&mut body, &intset(4, &[-70000, 1, 70000]));
    body.push(9);
    string(&mut body, b"zm");
    string(
        &mut body,
        &zipmap(&[(b"a", b"1"), (b"bb", &[b'v'; 300])], 2),
    );
    body.push(7); // module-2 value: ID, uint, string, double, EOF
    string(&mut body, b"mod");
    len(&mut body, 12345 << 10);
    len(&mut body, 2);
    len(&mut body, 99);
    len(&mut body, 5);
    string(&mut body, b"module string");
    len(&mut body, 4);
    body.extend_from_slice(&1.5f64.to_le_bytes());
    len(&mut body, 0);
    rdb_file(11, &body)
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        if v.is_empty() {
            break;
        }
        let at = rng.gen_range(0..v.len());
        match rng.gen_range(0..7) {
            0 => v[at] ^= 1 << rng.gen_range(0..8),
            1 => v[at] = rng.gen(),
            2 => v.truncate(at),
            3 => {
                let n = rng.gen_range(1..16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                v.splice(at..at, bytes);
            }
            4 => {
                let end = (at + rng.gen_range(1..32)).min(v.len());
                v.drain(at..end);
            }
            5 => {
                // A huge 32- or 64-bit length prefix.
                let huge: Vec<u8> = if rng.gen() {
                    let mut h = vec![0x80];
                    h.extend_from_slice(&rng.gen_range(1u32 << 20..=u32::MAX).to_be_bytes());
                    h
                } else {
                    let mut h = vec![0x81];
                    h.extend_from_slice(&rng.gen_range(1u64 << 20..=u64::MAX).to_be_bytes());
                    h
                };
                let end = (at + huge.len()).min(v.len());
                v.splice(at..end, huge);
            }
            _ => {
                // A huge 14-bit/6-bit element: overwrite with a big count inside blobs.
                let end = (at + 4).min(v.len());
                v[at..end].fill(0xff);
            }
        }
    }
    v
}

const MAX_STRING: usize = 1 << 20;

fn decode(file: &[u8]) -> (usize, bool) {
    let limits = Limits {
        max_string: MAX_STRING,
        max_elements: 100_000,
    };
    let Ok(mut r) = rdb::Reader::with_limits(file, limits) else {
        return (0, false);
    };
    let mut n = 0;
    loop {
        match r.next_record() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, true),
            Err(e) => {
                // Errors render (offsets and all) without panicking.
                let _ = e.to_string();
                return (n, false);
            }
        }
        assert!(n <= file.len(), "more records than bytes");
    }
}

#[test]
fn mutated_rdb_files_never_panic_or_allocate_much() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = [server_rdb(), fixture_rdb()];
    for file in &corpus {
        BIGGEST.store(0, Ordering::Relaxed);
        let (n, ok) = decode(file);
        assert!(ok && n > 3, "the unmutated corpus decodes");
        assert!(
            BIGGEST.load(Ordering::Relaxed) > 0,
            "the counting allocator sees the decoder"
        );
    }
    let mut records = 0;
    let mut rng = StdRng::seed_from_u64(0x05ee_d0db);
    let mut errors = 0;
    let rounds = 40_000;
    for round in 0..rounds {
        let file = &corpus[round % corpus.len()];
        let mut m = mutate(&mut rng, file);
        // Half the time zero the checksum, so mutants that still parse are
        // accepted to the end rather than stopped by it.
        if round % 2 == 0 && m.len() >= 8 {
            let n = m.len();
            m[n - 8..].fill(0);
        }
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        BIGGEST.store(0, Ordering::Relaxed);
        let (n, ok) = decode(&m);
        errors += usize::from(!ok);
        records += n;
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        let biggest = BIGGEST.load(Ordering::Relaxed);
        assert!(
            biggest <= 4 * MAX_STRING,
            "round {round}: one allocation of {biggest} bytes"
        );
        assert!(
            peak <= 32 * MAX_STRING,
            "round {round}: {peak} bytes live at once"
        );
    }
    assert!(
        errors > rounds / 2,
        "most mutants should be refused ({errors} of {rounds})"
    );
    assert!(errors < rounds, "some mutants should still decode");
    eprintln!(
        "{rounds} mutants: {errors} refused, {records} records decoded before the end or an error"
    );
}

#[test]
fn mutated_dump_payloads_with_fixed_checksums() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = RedisServer::start(&[]);
    let mut c = Conn::new(server.port());
    c.call(&["RPUSH", "l", "a", "1", "-70000", "long string value here"]);
    c.call(&["HSET", "h", "f", "v", "n", "12"]);
    c.call(&["ZADD", "z", "1.5", "a", "-inf", "b"]);
    c.call(&["SADD", "s", "1", "2", "300000"]);
    c.call(&["XADD", "x", "1-1", "f", "v"]);
    c.call(&["XGROUP", "CREATE", "x", "g", "0"]);
    c.call(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "x", ">"]);
    let payloads: Vec<Vec<u8>> = ["l", "h", "z", "s", "x"]
        .iter()
        .map(|k| c.call(&["DUMP", k]).bulk())
        .collect();
    let mut rng = StdRng::seed_from_u64(42);
    for round in 0..20_000 {
        let p = &payloads[round % payloads.len()];
        let body = &p[..p.len() - 10];
        let m = mutate(&mut rng, body);
        if m.is_empty() {
            continue;
        }
        // Re-sign the mutant so the value decoder, not the checksum, meets it.
        let fixed = common::dump_payload(m[0], &m[1..], 10);
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let _ = rdb::decode_dump_with_limits(
            &fixed,
            Limits {
                max_string: MAX_STRING,
                max_elements: 100_000,
            },
        );
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        assert!(
            peak <= 32 * MAX_STRING,
            "round {round}: {peak} bytes live at once"
        );
    }
}
