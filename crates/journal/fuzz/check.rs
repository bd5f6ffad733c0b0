//! The property the `reader` fuzz target checks, shared with the stable
//! test that replays the corpus (`tests/fuzz_corpus.rs`).
//!
//! Input: the first byte picks how many valid entries (low 3 bits) are
//! appended through the journal and whether the rest of the input is
//! appended to the segment as garbage or written as a snapshot file (high
//! bit). Then `inspect`, `open`, reading and `export_resp` must not panic,
//! the valid entries must come back first and unchanged whatever follows
//! them, and `inspect` and `open` must agree about corruption.

use std::fs::{self, OpenOptions};
use std::io::Write;

use bytes::Bytes;
use journal::{Entry, Fsync, Journal, JournalConfig, Position};

fn config() -> JournalConfig {
    JournalConfig {
        fsync: Fsync::No,
        ..JournalConfig::default()
    }
}

/// Runs the property on one input; panics on a violation.
pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(first & 7);
    let garbage_as_snapshot = first & 0x80 != 0;
    let entries: Vec<Entry> = (0..n)
        .map(|i| {
            let v = Bytes::copy_from_slice(&rest[..rest.len().min(i * 3)]);
            Entry::command(
                i as u32 % 3,
                vec![Bytes::from("SET"), Bytes::from(format!("k{i}")), v],
                i as u64,
            )
        })
        .collect();
    let tmp = tempfile::tempdir().expect("temp dir");
    {
        let (j, _) = Journal::open(tmp.path(), config()).expect("open a new journal");
        for e in &entries {
            j.append_blocking(e.clone()).expect("append");
        }
    }
    let jdir = tmp.path().join("journal");
    if garbage_as_snapshot {
        fs::write(jdir.join(format!("snapshot-{:020}.snap", 1)), rest).expect("write snapshot");
    } else {
        let seg = jdir.join(format!("{:020}.seg", 1));
        let mut f = OpenOptions::new()
            .append(true)
            .open(seg)
            .expect("open segment");
        f.write_all(rest).expect("append garbage");
    }

    let report = journal::inspect(tmp.path()).expect("inspect");
    let _ = report.to_string();
    let mut sink = Vec::new();
    let _ = journal::export_resp(tmp.path(), &mut sink).expect("export");

    let (j, rec) = Journal::open(tmp.path(), config()).expect("open");
    assert_eq!(
        report.corruption.as_ref().map(|c| c.position),
        rec.corruption.as_ref().map(|c| c.position),
        "inspect and open disagree"
    );
    let reader = match j.reader(Position::START) {
        Ok(r) => r,
        Err(e) => {
            assert!(
                garbage_as_snapshot,
                "reader refused without a bad snapshot: {e}"
            );
            return;
        }
    };
    let mut got = Vec::new();
    for r in reader {
        match r {
            Ok(r) => got.push(r.entry),
            Err(_) => break,
        }
    }
    if !garbage_as_snapshot {
        assert!(
            got.len() >= n,
            "valid records lost: {} of {n} read; {rec}",
            got.len()
        );
        assert_eq!(&got[..n], &entries[..], "valid records changed");
        if rec.corruption.is_none() {
            j.append_blocking(Entry::command(0, vec![Bytes::from("PING")], 0))
                .expect("append after recovery");
        }
    }
}
