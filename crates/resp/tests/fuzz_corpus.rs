//! Replays the cargo-fuzz corpus on stable, so CI checks the fuzz property
//! on every input the fuzzer ever kept, plus seeded random inputs.

use proptest::prelude::*;

#[test]
fn corpus_inputs_hold_the_roundtrip_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("dir entry").path();
        resp::decode::check_roundtrip(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n >= 5, "corpus has {n} files");
}

proptest! {
    #[test]
    fn random_bytes_hold_the_roundtrip_property(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        resp::decode::check_roundtrip(&data);
    }

    #[test]
    fn random_commands_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..32), 1..8)) {
        let mut out = bytes::BytesMut::new();
        resp::frame::encode_command(&mut out, &args);
        let mut buf = out.clone();
        let req = resp::parse_request(&mut buf, &resp::Limits::default()).unwrap().unwrap();
        prop_assert_eq!(req.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
        prop_assert_eq!(&req.raw[..], &out[..]);
        resp::decode::check_roundtrip(&out);
    }
}
