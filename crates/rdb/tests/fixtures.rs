//! Hand-built RDB bytes for the layouts redis-server 7.0 does not write
//! (RDB 11 types, pre-7.0 encodings, module data, rare opcodes) and for
//! the error paths. Each fixture is built from the layout in `rdb.c` and
//! the blob formats' sources; the comment on each says which.

mod common;

use bytes::Bytes;
use common::{
    dump_payload, intset, len, listpack, lzf_string, rdb_file, string, ziplist, zipmap, El,
};
use rdb::{Error, Limits, Reader, StreamId, Value};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Decodes a file expected to hold exactly one key, `k`.
fn one(file: &[u8]) -> rdb::Record {
    let mut r = Reader::new(file).expect("header");
    let rec = r.next_record().expect("record").expect("a record");
    assert_eq!(rec.key, b("k"));
    assert!(r.next_record().expect("EOF").is_none());
    rec
}

/// One key `k` of type `ty` with value bytes `v`, in an RDB of `version`.
fn key_file(version: u32, ty: u8, v: &[u8]) -> Vec<u8> {
    let mut body = vec![ty];
    string(&mut body, b"k");
    body.extend_from_slice(v);
    rdb_file(version, &body)
}

fn blob(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, bytes);
    v
}

fn mixed() -> Vec<El> {
    let mut els: Vec<El> = [
        0i64,
        12,
        13,
        127,
        128,
        -1,
        -128,
        -129,
        4095,
        -4096,
        4096,
        32767,
        -32768,
        32768,
        8388607,
        -8388608,
        8388608,
        2147483647,
        -2147483648,
        2147483648,
        i64::MAX,
        i64::MIN,
    ]
    .into_iter()
    .map(El::Int)
    .collect();
    for n in [0usize, 1, 63, 64, 300, 4095, 4096, 20000] {
        els.push(El::Str((0..n).map(|i| b'a' + (i % 26) as u8).collect()));
    }
    els.push(El::Str(b"\x00\xff binary".to_vec()));
    els
}

fn texts(els: &[El]) -> Vec<Bytes> {
    els.iter().map(|e| Bytes::from(e.text())).collect()
}

#[test]
fn set_listpack_type_20() {
    // RDB 11 (Redis 7.2): RDB_TYPE_SET_LISTPACK, one listpack blob of members.
    let els = mixed();
    let rec = one(&key_file(11, 20, &blob(&listpack(&els))));
    assert_eq!(rec.value, Value::Set(texts(&els)));
}

#[test]
fn list_ziplist_type_10_every_entry_encoding() {
    // RDB_TYPE_LIST_ZIPLIST: immediates 0..12, int8/16/24/32/64, strings
    // with 6-, 14- and 32-bit lengths, and 5-byte prevlens after long entries.
    let els = mixed();
    let rec = one(&key_file(6, 10, &blob(&ziplist(&els))));
    assert_eq!(rec.value, Value::List(texts(&els)));
}

#[test]
fn quicklist_type_14_of_ziplists_one_lzf_compressed() {
    // RDB_TYPE_LIST_QUICKLIST (Redis 3.2–6.2): node count, then each
    // node a ziplist blob; the second stored LZF-compressed.
    let a = vec![El::Str(b"first".to_vec()), El::Int(5)];
    let bb: Vec<El> = (0..50)
        .map(|i| El::Str(format!("repeat-repeat-{i}").into_bytes()))
        .collect();
    let mut v = Vec::new();
    len(&mut v, 2);
    string(&mut v, &ziplist(&a));
    lzf_string(&mut v, &ziplist(&bb));
    let rec = one(&key_file(9, 14, &v));
    let mut want = texts(&a);
    want.extend(texts(&bb));
    assert_eq!(rec.value, Value::List(want));
}

#[test]
fn quicklist2_type_18_plain_and_packed_nodes() {
    // RDB_TYPE_LIST_QUICKLIST_2: per node a container (1 plain, 2 packed)
    // then the blob; a plain node is one element.
    let mut v = Vec::new();
    len(&mut v, 3);
    len(&mut v, 2);
    string(&mut v, &listpack(&[El::Int(-7), El::Str(b"x".to_vec())]));
    len(&mut v, 1);
    lzf_string(&mut v, &b"plain ".repeat(100));
    len(&mut v, 2);
    lzf_string(&mut v, &listpack(&mixed()));
    let rec = one(&key_file(10, 18, &v));
    let mut want = vec![b("-7"), b("x"), Bytes::from(b"plain ".repeat(100))];
    want.extend(texts(&mixed()));
    assert_eq!(rec.value, Value::List(want));
    // A container that is neither 1 nor 2 is corrupt.
    let mut bad = Vec::new();
    len(&mut bad, 1);
    len(&mut bad, 3);
    string(&mut bad, b"x");
    let err = Reader::new(&key_file(10, 18, &bad)[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(err.to_string().contains("container 3"), "{err}");
}

#[test]
fn hash_zipmap_type_9() {
    // RDB_TYPE_HASH_ZIPMAP (Redis < 2.6): count byte, len/key, len/free/value
    // (+ free bytes), a 5-byte length for a 300-byte value, 0xFF.
    let long = vec![b'v'; 300];
    let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"name", &long), (b"", b"empty field")];
    let rec = one(&key_file(3, 9, &blob(&zipmap(&pairs, 3))));
    let want: Vec<(Bytes, Bytes)> = pairs
        .iter()
        .map(|(k, v)| (Bytes::copy_from_slice(k), Bytes::copy_from_slice(v)))
        .collect();
    assert_eq!(rec.value, Value::Hash(want));
}

#[test]
fn plain_list_set_hash_types_1_2_4_with_int_encoded_strings() {
    // RDB_TYPE_LIST/SET/HASH: a count then strings; strings here use the
    // int8/int16/int32 encodings (0xC0/0xC1/0xC2) and 14/32/64-bit lengths.
    let mut v = Vec::new();
    len(&mut v, 5);
    v.extend_from_slice(&[0xC0, 0x85]); // int8 -123
    v.extend_from_slice(&[0xC1, 0x39, 0x30]); // int16 12345
    v.extend_from_slice(&[0xC2, 0xFF, 0xFF, 0xFF, 0x7F]); // int32 2147483647
    string(&mut v, &[b'L'; 100]); // 14-bit length
    v.push(0x81); // 64-bit length form for a 3-byte string
    v.extend_from_slice(&3u64.to_be_bytes());
    v.extend_from_slice(b"abc");
    let want = vec![
        b("-123"),
        b("12345"),
        b("2147483647"),
        Bytes::from(vec![b'L'; 100]),
        b("abc"),
    ];
    assert_eq!(one(&key_file(9, 1, &v)).value, Value::List(want.clone()));
    assert_eq!(one(&key_file(9, 2, &v)).value, Value::Set(want));

    let mut h = Vec::new();
    len(&mut h, 2);
    string(&mut h, b"f1");
    string(&mut h, &vec![b'z'; 20000]); // 32-bit length
    h.extend_from_slice(&[0xC0, 0x07]);
    string(&mut h, b"");
    assert_eq!(
        one(&key_file(9, 4, &h)).value,
        Value::Hash(vec![
            (b("f1"), Bytes::from(vec![b'z'; 20000])),
            (b("7"), Bytes::new())
        ])
    );
}

#[test]
fn intset_type_11_all_widths() {
    // RDB_TYPE_SET_INTSET: width, count, little-endian members.
    for (w, vals) in [
        (2u32, vec![-32768i64, -1, 0, 32767]),
        (4, vec![-2147483648, 5, 2147483647]),
        (8, vec![i64::MIN, 0, i64::MAX]),
    ] {
        let rec = one(&key_file(9, 11, &blob(&intset(w, &vals))));
        assert_eq!(
            rec.value,
            Value::Set(vals.iter().map(|v| b(&v.to_string())).collect())
        );
    }
    // A count that does not fit the blob is corrupt.
    let mut bad = intset(4, &[1, 2]);
    bad[4] = 3;
    let err = Reader::new(&key_file(9, 11, &blob(&bad))[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn zset_ziplist_type_12_and_hash_ziplist_type_13() {
    // Pairs of member/score (score as text or integer) and field/value.
    let z = vec![
        El::Str(b"a".to_vec()),
        El::Int(-3),
        El::Str(b"b".to_vec()),
        El::Str(b"1.5".to_vec()),
        El::Int(9),
        El::Str(b"inf".to_vec()),
    ];
    assert_eq!(
        one(&key_file(9, 12, &blob(&ziplist(&z)))).value,
        Value::ZSet(vec![(b("a"), -3.0), (b("b"), 1.5), (b("9"), f64::INFINITY)])
    );
    let h = vec![
        El::Str(b"f".to_vec()),
        El::Int(100000),
        El::Int(1),
        El::Str(b"v".to_vec()),
    ];
    assert_eq!(
        one(&key_file(9, 13, &blob(&ziplist(&h)))).value,
        Value::Hash(vec![(b("f"), b("100000")), (b("1"), b("v"))])
    );
    // An odd number of elements is corrupt.
    let odd = vec![El::Str(b"f".to_vec())];
    assert!(Reader::new(&key_file(9, 13, &blob(&ziplist(&odd)))[..])
        .unwrap()
        .next_record()
        .is_err());
}

#[test]
fn zset_type_3_text_doubles_and_type_5_binary() {
    // RDB_TYPE_ZSET: score as a length byte + text, 253 NaN, 254 +inf, 255 -inf.
    let mut v = Vec::new();
    len(&mut v, 4);
    string(&mut v, b"nan");
    v.push(253);
    string(&mut v, b"pinf");
    v.push(254);
    string(&mut v, b"ninf");
    v.push(255);
    string(&mut v, b"x");
    v.push(4);
    v.extend_from_slice(b"3.25");
    let Value::ZSet(got) = one(&key_file(6, 3, &v)).value else {
        panic!()
    };
    assert!(got[0].1.is_nan());
    assert_eq!(
        got[1..],
        [
            (b("pinf"), f64::INFINITY),
            (b("ninf"), f64::NEG_INFINITY),
            (b("x"), 3.25)
        ]
    );

    // RDB_TYPE_ZSET_2: 8-byte little-endian IEEE doubles.
    let mut v = Vec::new();
    len(&mut v, 2);
    string(&mut v, b"m");
    v.extend_from_slice(&(-0.125f64).to_le_bytes());
    string(&mut v, b"n");
    v.extend_from_slice(&1e300f64.to_le_bytes());
    assert_eq!(
        one(&key_file(9, 5, &v)).value,
        Value::ZSet(vec![(b("m"), -0.125), (b("n"), 1e300)])
    );
}

/// Flags, ID and fields of a stream entry to encode.
type TestEntry<'a> = (i64, StreamId, Vec<(&'a str, &'a str)>);

/// A stream listpack: master entry then entries, as `streamAppendItem` writes.
fn stream_lp(master: StreamId, master_fields: &[&str], entries: &[TestEntry]) -> Vec<u8> {
    let mut els = vec![
        El::Int(entries.iter().filter(|e| e.0 & 1 == 0).count() as i64),
        El::Int(entries.iter().filter(|e| e.0 & 1 != 0).count() as i64),
        El::Int(master_fields.len() as i64),
    ];
    els.extend(master_fields.iter().map(|f| El::Str(f.as_bytes().to_vec())));
    els.push(El::Int(0));
    for (flags, id, fields) in entries {
        els.push(El::Int(*flags));
        els.push(El::Int((id.ms - master.ms) as i64));
        els.push(El::Int(id.seq as i64 - master.seq as i64));
        let same = flags & 2 != 0;
        if !same {
            els.push(El::Int(fields.len() as i64));
        }
        for (f, v) in fields {
            if !same {
                els.push(El::Str(f.as_bytes().to_vec()));
            }
            els.push(match v.parse::<i64>() {
                Ok(i) => El::Int(i),
                Err(_) => El::Str(v.as_bytes().to_vec()),
            });
        }
        els.push(El::Int(if same {
            fields.len() + 3
        } else {
            2 * fields.len() + 4
        } as i64));
    }
    listpack(&els)
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId { ms, seq }
}

fn raw_id(out: &mut Vec<u8>, i: StreamId) {
    out.extend_from_slice(&i.ms.to_be_bytes());
    out.extend_from_slice(&i.seq.to_be_bytes());
}

#[test]
fn stream_type_21_with_same_fields_deleted_groups_active_time() {
    // RDB_TYPE_STREAM_LISTPACKS_3 (Redis 7.2): listpacks keyed by 16-byte
    // big-endian master IDs; metadata with first ID, max deleted ID and
    // entries-added; groups with entries-read; consumers with active time.
    let m1 = id(100, 0);
    let lp1 = stream_lp(
        m1,
        &["a", "b"],
        &[
            (2, id(100, 0), vec![("a", "1"), ("b", "x")]),
            (3, id(100, 1), vec![("a", "2"), ("b", "y")]),
            (0, id(105, 0), vec![("c", "-5000000000")]),
        ],
    );
    let m2 = id(200, 7);
    let lp2 = stream_lp(m2, &["k"], &[(2, id(200, 7), vec![("k", "v")])]);
    let mut v = Vec::new();
    len(&mut v, 2);
    let mut key = Vec::new();
    raw_id(&mut key, m1);
    string(&mut v, &key);
    string(&mut v, &lp1);
    key.clear();
    raw_id(&mut key, m2);
    string(&mut v, &key);
    lzf_string(&mut v, &lp2);
    len(&mut v, 3); // length
    len(&mut v, 200); // last id
    len(&mut v, 7);
    len(&mut v, 100); // first id
    len(&mut v, 0);
    len(&mut v, 100); // max deleted
    len(&mut v, 1);
    len(&mut v, 4); // entries added
    len(&mut v, 1); // groups
    string(&mut v, b"grp");
    len(&mut v, 105);
    len(&mut v, 0);
    len(&mut v, 2); // entries read
    len(&mut v, 2); // PEL
    raw_id(&mut v, id(100, 0));
    v.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
    len(&mut v, 1);
    raw_id(&mut v, id(105, 0));
    v.extend_from_slice(&1_700_000_000_001i64.to_le_bytes());
    len(&mut v, 3);
    len(&mut v, 1); // consumers
    string(&mut v, b"alice");
    v.extend_from_slice(&1_700_000_000_002i64.to_le_bytes());
    v.extend_from_slice(&1_700_000_000_003i64.to_le_bytes());
    len(&mut v, 2);
    raw_id(&mut v, id(100, 0));
    raw_id(&mut v, id(105, 0));
    let rec = one(&key_file(11, 21, &v));
    let Value::Stream(s) = rec.value else {
        panic!("not a stream")
    };
    let entries: Vec<(StreamId, Vec<(Bytes, Bytes)>)> =
        s.entries.iter().map(|e| (e.id, e.fields.clone())).collect();
    assert_eq!(
        entries,
        vec![
            (id(100, 0), vec![(b("a"), b("1")), (b("b"), b("x"))]),
            (id(105, 0), vec![(b("c"), b("-5000000000"))]),
            (id(200, 7), vec![(b("k"), b("v"))]),
        ]
    );
    assert_eq!(
        (
            s.length,
            s.last_id,
            s.first_id,
            s.max_deleted_entry_id,
            s.entries_added
        ),
        (3, id(200, 7), id(100, 0), id(100, 1), 4)
    );
    let g = &s.groups[0];
    assert_eq!(
        (g.name.clone(), g.last_delivered_id, g.entries_read),
        (b("grp"), id(105, 0), Some(2))
    );
    assert_eq!(
        g.pel
            .iter()
            .map(|p| (p.id, p.delivery_time_ms, p.delivery_count))
            .collect::<Vec<_>>(),
        vec![
            (id(100, 0), 1_700_000_000_000, 1),
            (id(105, 0), 1_700_000_000_001, 3)
        ]
    );
    let c = &g.consumers[0];
    assert_eq!(
        (
            c.name.clone(),
            c.seen_time_ms,
            c.active_time_ms,
            c.pending.clone()
        ),
        (
            b("alice"),
            1_700_000_000_002,
            Some(1_700_000_000_003),
            vec![id(100, 0), id(105, 0)]
        )
    );

    // The same stream as type 19 lacks active time: reading it as 19 misparses,
    // and a consumer PEL entry missing from the group PEL is corrupt.
    let mut bad = v.clone();
    let pos = bad.len() - 16;
    bad[pos + 7] = 0x55;
    let err = Reader::new(&key_file(11, 21, &bad)[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(err.to_string().contains("not in its group's PEL"), "{err}");
}

#[test]
fn stream_type_15_derives_first_id_and_entries_added() {
    // RDB_TYPE_STREAM_LISTPACKS (Redis 5–6.2): no first/max-deleted/added,
    // no entries-read, no active time.
    let m = id(5, 5);
    let lp = stream_lp(
        m,
        &["f"],
        &[
            (3, id(5, 5), vec![("f", "gone")]),
            (2, id(6, 0), vec![("f", "kept")]),
        ],
    );
    let mut v = Vec::new();
    len(&mut v, 1);
    let mut key = Vec::new();
    raw_id(&mut key, m);
    string(&mut v, &key);
    string(&mut v, &lp);
    len(&mut v, 1);
    len(&mut v, 6);
    len(&mut v, 0);
    len(&mut v, 1);
    string(&mut v, b"g");
    len(&mut v, 0);
    len(&mut v, 0);
    len(&mut v, 0);
    len(&mut v, 1);
    string(&mut v, b"c");
    v.extend_from_slice(&42i64.to_le_bytes());
    len(&mut v, 0);
    let Value::Stream(s) = one(&key_file(9, 15, &v)).value else {
        panic!()
    };
    assert_eq!(s.entries.len(), 1);
    assert_eq!(
        (s.first_id, s.entries_added, s.max_deleted_entry_id),
        (id(6, 0), 1, id(0, 0))
    );
    assert_eq!(s.groups[0].entries_read, None);
    assert_eq!(s.groups[0].consumers[0].active_time_ms, None);
    assert_eq!(s.groups[0].consumers[0].seen_time_ms, 42);
}

fn module_id(name: &str, encver: u64) -> u64 {
    let cs = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = 0u64;
    for ch in name.bytes() {
        id = (id << 6) | cs.iter().position(|&c| c == ch).unwrap() as u64;
    }
    (id << 10) | encver
}

#[test]
fn module2_values_and_module_aux_are_skipped_module1_refused() {
    // RDB_TYPE_MODULE_2: module ID, then opcodes (1 sint, 2 uint, 3 float,
    // 4 double, 5 string) up to 0 (EOF). MODULE_AUX (247): ID, when-opcode
    // 2, when, opcodes, EOF.
    let mid = module_id("ReJSON-RL", 3);
    assert_eq!(rdb::module_type_name(mid), "ReJSON-RL");
    let mut body = vec![247];
    len(&mut body, mid);
    len(&mut body, 2);
    len(&mut body, 1);
    len(&mut body, 5);
    string(&mut body, b"aux data");
    len(&mut body, 0);
    body.push(7);
    string(&mut body, b"k");
    len(&mut body, mid);
    len(&mut body, 1);
    len(&mut body, 300);
    len(&mut body, 2);
    len(&mut body, u64::MAX);
    len(&mut body, 3);
    body.extend_from_slice(&1.5f32.to_le_bytes());
    len(&mut body, 4);
    body.extend_from_slice(&2.5f64.to_le_bytes());
    len(&mut body, 5);
    lzf_string(&mut body, &b"json json json json json ".repeat(10));
    len(&mut body, 0);
    body.push(0);
    string(&mut body, b"after");
    string(&mut body, b"ok");
    let file = rdb_file(10, &body);
    let mut r = Reader::new(&file[..]).unwrap();
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(
        rec.value,
        Value::Module {
            type_name: "ReJSON-RL".into()
        }
    );
    assert_eq!(
        r.next_record().unwrap().unwrap().value,
        Value::String(b("ok"))
    );
    assert!(r.next_record().unwrap().is_none());

    // RDB_TYPE_MODULE_PRE_GA (6) has no opcodes to skip by.
    let mut v = Vec::new();
    len(&mut v, module_id("oldmodule", 0));
    v.extend_from_slice(b"opaque");
    let err = Reader::new(&key_file(8, 6, &v)[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(&err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("oldmodule"), "{err}");
}

#[test]
fn opcodes_expiry_seconds_resizedb_idle_freq_selectdb_aux_functions() {
    let mut body = vec![250];
    string(&mut body, b"redis-ver");
    string(&mut body, b"7.2.4");
    body.push(245); // FUNCTION2: the library code as one string
    string(
        &mut body,
        b"#!lua name=lib\nredis.register_function('f', function() return 1 end)",
    );
    body.push(254);
    len(&mut body, 9);
    body.push(251);
    len(&mut body, 2);
    len(&mut body, 1);
    body.push(253); // EXPIRETIME in seconds (4 bytes LE)
    body.extend_from_slice(&2_000_000_000i32.to_le_bytes());
    body.push(248); // IDLE
    len(&mut body, 77);
    body.push(0);
    string(&mut body, b"a");
    string(&mut body, b"1");
    body.push(252); // EXPIRETIME_MS
    body.extend_from_slice(&1_234_567_890_123i64.to_le_bytes());
    body.push(249); // FREQ
    body.push(9);
    body.push(0);
    string(&mut body, b"b");
    string(&mut body, b"2");
    let file = rdb_file(11, &body);
    let mut r = Reader::new(&file[..]).unwrap();
    let a = r.next_record().unwrap().unwrap();
    assert_eq!(
        (a.db, a.expire_at_ms, a.idle_secs, a.lfu_freq),
        (9, Some(2_000_000_000_000), Some(77), None)
    );
    let bb = r.next_record().unwrap().unwrap();
    assert_eq!(
        (bb.db, bb.expire_at_ms, bb.idle_secs, bb.lfu_freq),
        (9, Some(1_234_567_890_123), None, Some(9))
    );
    assert!(r.next_record().unwrap().is_none());
    assert!(r.next_record().unwrap().is_none());
    assert_eq!(r.aux(), &[(b("redis-ver"), b("7.2.4"))]);
    assert_eq!(r.functions().len(), 1);
    assert_eq!(r.version(), 11);
}

#[test]
fn function_pre_ga_is_refused() {
    let mut body = vec![246];
    string(&mut body, b"lib");
    let err = Reader::new(&rdb_file(10, &body)[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { at: 9, .. }), "{err}");
}

#[test]
fn versions_and_checksums() {
    let mut body = vec![0];
    string(&mut body, b"k");
    string(&mut body, b"v");
    // Newer than 11 is refused, saying which version and what we read.
    let err = Reader::new(&rdb_file(12, &body)[..]).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("12") && text.contains("11"), "{text}");
    assert!(Reader::new(&b"RDB00009"[..]).is_err());
    assert!(Reader::new(&b"REDIS00x9"[..]).is_err());

    // A bad checksum is an error; 0 means "not computed" and is accepted.
    let mut file = rdb_file(10, &body);
    let n = file.len();
    file[n - 1] ^= 1;
    let mut r = Reader::new(&file[..]).unwrap();
    r.next_record().unwrap().unwrap();
    assert!(matches!(r.next_record(), Err(Error::Checksum { .. })));
    assert!(matches!(r.next_record(), Err(Error::Stopped)));
    file[n - 8..].fill(0);
    assert_eq!(one(&file).value, Value::String(b("v")));

    // Before RDB 5 there is no checksum at all; the reader stops right
    // after what it consumed.
    let mut old = b"REDIS0004".to_vec();
    old.extend_from_slice(&body);
    old.push(255);
    old.extend_from_slice(b"+TRAILING");
    let mut r = Reader::new(&old[..]).unwrap();
    assert!(r.next_record().unwrap().is_some());
    assert!(r.next_record().unwrap().is_none());
    assert_eq!(r.into_inner(), b"+TRAILING");

    let mut file = rdb_file(10, &body);
    file.extend_from_slice(b"+NEXT");
    let mut r = Reader::new(&file[..]).unwrap();
    assert_eq!(r.by_ref().count(), 1);
    assert_eq!(r.into_inner(), b"+NEXT");
}

#[test]
fn empty_collections_are_skipped_like_redis() {
    let mut body = vec![10];
    string(&mut body, b"empty");
    string(&mut body, &ziplist(&[]));
    body.push(0);
    string(&mut body, b"k");
    string(&mut body, b"v");
    assert_eq!(one(&rdb_file(9, &body)).value, Value::String(b("v")));
}

#[test]
fn lengths_beyond_limits_are_errors_not_allocations() {
    let limits = Limits {
        max_string: 1 << 20,
        max_elements: 1000,
    };
    // A 32-bit length of 4 GiB for a string.
    let mut v = vec![0x80];
    v.extend_from_slice(&u32::MAX.to_be_bytes());
    let err = Reader::with_limits(&key_file(10, 0, &v)[..], limits)
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Limit { at: 12, .. }), "{err}");
    // Within the limit but past the end of the input: corrupt, and only
    // what arrived was buffered.
    let mut v = vec![0x80];
    v.extend_from_slice(&(1000u32).to_be_bytes());
    v.extend_from_slice(b"short");
    let err = Reader::with_limits(&key_file(10, 0, &v)[..], limits)
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    // A 64-bit element count.
    let mut v = vec![0x81];
    v.extend_from_slice(&u64::MAX.to_be_bytes());
    let err = Reader::with_limits(&key_file(10, 1, &v)[..], limits)
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
    // An LZF string claiming a huge decompressed size.
    let v = [0xC3, 0x02, 0x80, 0x7F, 0xFF, 0xFF, 0xFF, 0x00, b'a'];
    let err = Reader::with_limits(&key_file(10, 0, &v)[..], limits)
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
    // ... and with no limit hit, one it cannot expand to.
    let v = [0xC3, 0x02, 0x80, 0x00, 0x10, 0x00, 0x00, 0x00, b'a'];
    let err = Reader::new(&key_file(10, 0, &v)[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn corrupt_blob_errors_name_the_byte() {
    // A listpack whose last string entry claims more bytes than the blob has.
    let lp = listpack(&[El::Str(b"abc".to_vec()), El::Str(b"defg".to_vec())]);
    let mut bad = lp.clone();
    // Entry 2 starts at 6 + 1+3+1 = 11: 6-bit string header.
    assert_eq!(bad[11], 0x84);
    bad[11] = 0x80 | 40;
    let file = key_file(11, 20, &blob(&bad));
    // key_file: "REDIS0011"(9) + type(1) + key(2) + blob length byte(1) = 13.
    let err = Reader::new(&file[..]).unwrap().next_record().unwrap_err();
    match &err {
        Error::Corrupt { at, what } => {
            assert_eq!(*at, 13 + 11, "{err}");
            assert!(what.contains("runs past"), "{err}");
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .starts_with("RDB corrupt at byte 24: set listpack"),
        "{err}"
    );
    // A wrong backlen.
    let mut bad = lp.clone();
    bad[10] = 9;
    assert!(Reader::new(&key_file(11, 20, &blob(&bad))[..])
        .unwrap()
        .next_record()
        .is_err());
    // A truncated file says where it ended.
    let file = key_file(11, 20, &blob(&lp));
    let err = Reader::new(&file[..20]).unwrap().next_record().unwrap_err();
    assert!(
        err.to_string().contains("at byte 20") && err.to_string().contains("ends inside"),
        "{err}"
    );
    // Unknown type byte.
    let err = Reader::new(&rdb_file(11, &[30])[..])
        .unwrap()
        .next_record()
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown opcode or value type 30"),
        "{err}"
    );
}

#[test]
fn dump_payloads_of_rdb11_types() {
    // A DUMP of a set listpack as Redis 7.2 would send it.
    let els = vec![El::Str(b"a".to_vec()), El::Int(5)];
    let p = dump_payload(20, &blob(&listpack(&els)), 11);
    assert_eq!(
        rdb::decode_dump(&p).unwrap(),
        Value::Set(vec![b("a"), b("5")])
    );
    // Trailing bytes after the value are corrupt.
    let mut v = blob(&listpack(&els));
    v.push(0);
    assert!(matches!(
        rdb::decode_dump(&dump_payload(20, &v, 11)),
        Err(Error::Corrupt { .. })
    ));
    assert!(rdb::decode_dump(&[1, 2, 3]).is_err());
}

/// Hands out one byte per `read`, as a slow socket might.
struct OneByte<'a>(&'a [u8]);

impl std::io::Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&x, rest)), Some(slot)) => {
                *slot = x;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn short_reads_give_the_same_records() {
    let els = mixed();
    let mut body = vec![20];
    string(&mut body, b"set");
    lzf_string(&mut body, &listpack(&els));
    body.push(10);
    string(&mut body, b"list");
    string(&mut body, &ziplist(&els));
    let file = rdb_file(11, &body);
    let whole: Vec<rdb::Record> = Reader::new(&file[..])
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let trickled: Vec<rdb::Record> = Reader::new(OneByte(&file))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(whole.len(), 2);
    assert_eq!(whole, trickled);
    // Cut anywhere, the trickled input reports the offset where it ended.
    for cut in [10, 15, 200, file.len() - 3] {
        let mut r = Reader::new(OneByte(&file[..cut])).unwrap();
        let err = loop {
            match r.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a cut file decoded to the end"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, Error::Corrupt { at, .. } if at == cut as u64),
            "cut at {cut}: {err}"
        );
    }
}
