//! Replays the cargo-fuzz corpora on stable, so CI checks each fuzz property
//! on every input the fuzzer ever kept, plus seeded random inputs.

use proptest::prelude::*;

/// Every file of the corpus of fuzz target `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|entry| std::fs::read(entry.expect("dir entry").path()).expect("corpus file"))
        .collect();
    assert!(
        inputs.len() >= 5,
        "corpus {target} has {} files",
        inputs.len()
    );
    inputs
}

#[test]
fn corpus_inputs_hold_the_roundtrip_property() {
    for input in corpus("decode") {
        resp::decode::check_roundtrip(&input);
    }
}

#[test]
fn corpus_inputs_hold_the_chunked_property() {
    // The `decode` corpus is a good source of request streams too: its
    // first byte becomes the cutting seed.
    for input in corpus("decode_chunked").into_iter().chain(corpus("decode")) {
        resp::request_decoder::check_chunked(&input);
    }
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
