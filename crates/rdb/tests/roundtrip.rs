//! Property tests: small encoders written here from the formats'
//! sources, decoded through the public API, must give back the input
//! (encode ∘ decode = id) for listpacks, ziplists, intsets and LZF.

mod common;

use bytes::Bytes;
use common::{
    dump_payload, intset, listpack, lzf_compress, lzf_string, rdb_file, string, ziplist, El,
};
use proptest::prelude::*;
use rdb::Value;

fn element() -> impl Strategy<Value = El> {
    prop_oneof![
        any::<i64>().prop_map(El::Int),
        (-5000i64..5000).prop_map(El::Int),
        (-10_000_000i64..10_000_000).prop_map(El::Int),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(El::Str),
        proptest::collection::vec(any::<u8>(), 60..300).prop_map(El::Str),
        (4090usize..4200, any::<u8>()).prop_map(|(n, c)| El::Str(vec![c; n])),
    ]
}

fn decode_one(ty: u8, value: &[u8]) -> Value {
    let mut body = vec![ty];
    string(&mut body, b"k");
    body.extend_from_slice(value);
    let file = rdb_file(11, &body);
    let mut r = rdb::Reader::new(&file[..]).unwrap();
    let rec = r.next_record().unwrap().unwrap();
    assert!(r.next_record().unwrap().is_none());
    rec.value
}

fn blob(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    string(&mut v, bytes);
    v
}

fn texts(els: &[El]) -> Vec<Bytes> {
    els.iter().map(|e| Bytes::from(e.text())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn listpack_round_trip(els in proptest::collection::vec(element(), 1..40)) {
        let lp = listpack(&els);
        prop_assert_eq!(decode_one(20, &blob(&lp)), Value::Set(texts(&els)));
        prop_assert_eq!(rdb::decode_dump(&dump_payload(20, &blob(&lp), 11)).unwrap(), Value::Set(texts(&els)));
    }

    #[test]
    fn ziplist_round_trip(els in proptest::collection::vec(element(), 1..40)) {
        prop_assert_eq!(decode_one(10, &blob(&ziplist(&els))), Value::List(texts(&els)));
    }

    #[test]
    fn intset_round_trip(width in prop_oneof![Just(2u32), Just(4), Just(8)], raw in proptest::collection::vec(any::<i64>(), 1..100)) {
        let bits = width * 8;
        let mut vals: Vec<i64> = raw
            .iter()
            .map(|v| if bits == 64 { *v } else { (v << (64 - bits)) >> (64 - bits) })
            .collect();
        vals.sort();
        vals.dedup();
        let want: Vec<Bytes> = vals.iter().map(|v| Bytes::from(v.to_string())).collect();
        prop_assert_eq!(decode_one(11, &blob(&intset(width, &vals))), Value::Set(want));
    }

    #[test]
    fn lzf_round_trip(
        parts in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 1..20), 1usize..40), 1..20)
    ) {
        // Repeated runs give the compressor back references of every length.
        let data: Vec<u8> = parts.iter().flat_map(|(p, n)| p.iter().cycle().take(p.len() * n).copied().collect::<Vec<_>>()).collect();
        let mut v = Vec::new();
        lzf_string(&mut v, &data);
        prop_assert!(lzf_compress(&data).len() <= data.len() + data.len() / 32 + 1);
        prop_assert_eq!(decode_one(0, &v), Value::String(Bytes::from(data)));
    }
}
