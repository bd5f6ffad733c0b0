//! Replays the reader fuzz corpus (`fuzz/corpus/reader`) on stable, and
//! runs the same property on random inputs, so the fuzz target's checks
//! guard every CI run.

use std::path::Path;

use proptest::prelude::*;

#[path = "../fuzz/check.rs"]
mod check;

#[test]
fn reader_fuzz_corpus_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        check::check(&data);
        n += 1;
    }
    assert!(n >= 8, "corpus has {n} inputs");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reader_survives_random_tails(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check::check(&data);
    }
}
