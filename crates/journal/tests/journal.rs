//! Behaviour of an open journal: round trips, torn tails, corruption,
//! group commit, the size bound, rotation, release and retention,
//! snapshots.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use journal::{Entry, Fsync, Journal, JournalConfig, JournalError, Position, Record};

fn set(i: u64) -> Entry {
    Entry::command(
        (i % 3) as u32,
        vec![
            Bytes::from("SET"),
            Bytes::from(format!("key:{i}")),
            Bytes::from(format!("value:{i}")),
        ],
        1_700_000_000_000 + i,
    )
}

fn cfg(fsync: Fsync) -> JournalConfig {
    JournalConfig {
        fsync,
        ..JournalConfig::default()
    }
}

fn open(dir: &Path, cfg: JournalConfig) -> (Journal, journal::Recovery) {
    Journal::open(dir, cfg).expect("open journal")
}

fn all_records(j: &Journal) -> Vec<Record> {
    j.reader(Position::START)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn segment_file(dir: &Path, seg: u64) -> PathBuf {
    dir.join("journal").join(format!("{seg:020}.seg"))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to.join("journal")).unwrap();
    for e in fs::read_dir(from.join("journal")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join("journal").join(e.file_name())).unwrap();
    }
}

#[test]
fn entries_round_trip_through_reopen_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let tx = Entry {
        db: 5,
        commands: vec![
            vec![Bytes::from("INCR"), Bytes::from("c")],
            vec![
                Bytes::from("PEXPIREAT"),
                Bytes::from("c"),
                Bytes::from("1800000000000"),
            ],
        ],
        time_ms: 42,
    };
    let mut written = vec![
        set(0),
        tx,
        Entry::command(0, vec![Bytes::from("SET"), Bytes::new(), Bytes::new()], 0),
    ];
    written.extend((1..50).map(set));
    let positions: Vec<Position> = {
        let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
        assert!(rec.created && rec.is_clean());
        written
            .iter()
            .map(|e| j.append_blocking(e.clone()).unwrap())
            .collect()
    };
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions increase"
    );
    let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
    assert!(!rec.created && rec.is_clean(), "{rec}");
    assert_eq!(rec.records(), written.len() as u64);
    let got = all_records(&j);
    assert_eq!(
        got.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        written
    );
    assert_eq!(
        got.iter().map(|r| r.position).collect::<Vec<_>>(),
        positions
    );
    assert_eq!(
        got.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=written.len() as u64).collect::<Vec<_>>()
    );
    assert!(got.windows(2).all(|w| w[0].next == w[1].position));
    let replayed: Vec<Entry> = j.replay_all().unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(replayed, written);
}

#[tokio::test]
async fn always_syncs_once_per_lone_append_and_no_never_does() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(tmp.path(), cfg(Fsync::Always));
        for i in 0..5 {
            let before = j.fsyncs();
            j.append(set(i)).await.unwrap();
            assert_eq!(
                j.fsyncs(),
                before + 1,
                "append {i} returned before its fsync"
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::No));
    for i in 0..5 {
        j.append(set(i)).await.unwrap();
    }
    assert_eq!(j.fsyncs(), 0);
    drop(j);
    let (j, _) = open(tmp.path(), cfg(Fsync::No));
    assert_eq!(
        all_records(&j).len(),
        5,
        "clean shutdown keeps fsync=no appends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_fsyncs_between_concurrent_appenders() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::Always));
    let j = Arc::new(j);
    let (tasks, per_task) = (64u64, 20u64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let j = j.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..per_task {
                out.push(j.append(set(t * 1000 + i)).await.unwrap());
            }
            out
        }));
    }
    let mut positions = Vec::new();
    for h in handles {
        positions.extend(h.await.unwrap());
    }
    let total = tasks * per_task;
    let syncs = j.fsyncs();
    assert!(syncs >= 1);
    assert!(
        syncs * 4 <= total,
        "{syncs} fsyncs for {total} appends: group commit is not sharing syncs"
    );
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len() as u64, total);
    assert_eq!(all_records(&j).len() as u64, total);
}

/// Under `always`, a running relay answers the writer thread's appends
/// from its own runtime: an append already written waits while that
/// runtime is held, is answered once it runs again, and once the relay is
/// gone the writer thread answers by itself again.
#[test]
fn a_running_relay_answers_appends_from_its_runtime_and_the_writer_again_once_it_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::Always));
    let j = Arc::new(j);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(j.relay());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // Runs after the relay's first poll (same thread, spawned after it),
    // then holds the thread as a blocked runtime would.
    rt.spawn(async move {
        held_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        rt.block_on(async {
            let _ = stop_rx.await;
        });
    });
    held_rx.recv().unwrap();
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let second =
        local.block_on(async { tokio::time::timeout(Duration::from_secs(10), j.relay()).await });
    assert!(
        second.is_ok(),
        "a second relay kept running beside the first"
    );

    let mut end = j.watch_end();
    end.borrow_and_update();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let appender = std::thread::spawn({
        let j = j.clone();
        move || done_tx.send(j.append_blocking(set(1))).unwrap()
    });
    local
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), end.changed()).await })
        .expect("the append was written")
        .unwrap();
    assert!(
        done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "answered while the relay's runtime was held: the writer did not relay"
    );
    release_tx.send(()).unwrap();
    let first = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("answered once the relay's runtime ran again")
        .unwrap();
    appender.join().unwrap();

    stop_tx.send(()).unwrap();
    driver.join().unwrap();
    let after = j
        .append_blocking(set(2))
        .expect("the writer answers without a relay");
    assert!(after > first);
    assert_eq!(all_records(&j).len(), 2);
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record_is_truncated_and_reported() {
    let src = tempfile::tempdir().unwrap();
    let (last, end) = {
        let (j, _) = open(src.path(), cfg(Fsync::Always));
        j.append_blocking(set(1)).unwrap();
        j.append_blocking(set(2)).unwrap();
        (j.append_blocking(set(3)).unwrap(), j.end())
    };
    assert_eq!(last.segment, end.segment);
    for cut in last.offset + 1..end.offset {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(src.path(), tmp.path());
        let seg = segment_file(tmp.path(), last.segment);
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
        let torn = rec
            .torn_tail
            .clone()
            .unwrap_or_else(|| panic!("cut at {cut}: no torn tail in {rec}"));
        assert_eq!(torn.position, last, "cut at {cut}");
        assert_eq!(torn.bytes_dropped, cut - last.offset, "cut at {cut}");
        assert!(rec.corruption.is_none(), "cut at {cut}: {rec}");
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            last.offset,
            "file truncated to the last whole record"
        );
        let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
        assert_eq!(got, vec![set(1), set(2)], "cut at {cut}");
        // The journal goes on: the next append takes the dropped record's place.
        assert_eq!(j.append_blocking(set(9)).unwrap(), last);
        assert_eq!(all_records(&j).last().map(|r| r.seq), Some(3));
    }
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let end = {
        let (j, _) = open(tmp.path(), cfg(Fsync::Always));
        j.append_blocking(set(1)).unwrap();
        j.end()
    };
    let seg = segment_file(tmp.path(), end.segment);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(end.offset + 4096)
        .unwrap();
    let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
    assert_eq!(
        rec.torn_tail
            .as_ref()
            .map(|t| (t.position, t.bytes_dropped)),
        Some((end, 4096))
    );
    assert!(rec.corruption.is_none());
    assert_eq!(all_records(&j).len(), 1);
}

#[test]
fn flipped_byte_in_the_middle_record_stops_there_with_its_position() {
    let src = tempfile::tempdir().unwrap();
    let (middle, last) = {
        let (j, _) = open(src.path(), cfg(Fsync::Always));
        j.append_blocking(set(1)).unwrap();
        let m = j.append_blocking(set(2)).unwrap();
        let l = j.append_blocking(set(3)).unwrap();
        (m, l)
    };
    for at in middle.offset..last.offset {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(src.path(), tmp.path());
        let seg = segment_file(tmp.path(), middle.segment);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[at as usize] ^= 0x40;
        fs::write(&seg, &bytes).unwrap();

        let report = journal::inspect(tmp.path()).unwrap();
        assert_eq!(
            report.corruption.as_ref().map(|c| c.position),
            Some(middle),
            "flip at {at}"
        );
        assert!(!report.is_healthy());

        let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
        let c = rec
            .corruption
            .clone()
            .unwrap_or_else(|| panic!("flip at {at}: not reported: {rec}"));
        assert_eq!(c.position, middle, "flip at {at}");
        assert_eq!(c.bytes_after, bytes.len() as u64 - middle.offset);
        assert!(rec.torn_tail.is_none());
        assert_eq!(
            fs::read(&seg).unwrap(),
            bytes,
            "a corrupt journal is not modified"
        );

        let mut reader = j.reader(Position::START).unwrap();
        assert_eq!(reader.next_record().unwrap().map(|r| r.entry), Some(set(1)));
        match reader.next_record() {
            Err(JournalError::Corrupt(c)) => assert_eq!(c.position, middle),
            other => panic!("flip at {at}: expected corruption, got {other:?}"),
        }
        assert!(
            reader.next_record().is_err(),
            "the reader stays stopped at the corruption"
        );
        let replayed: Vec<_> = j.replay_all().unwrap().collect();
        assert_eq!(replayed.len(), 2);
        assert_eq!(replayed[0].as_ref().unwrap(), &set(1));
        assert!(matches!(&replayed[1], Err(JournalError::Corrupt(_))));

        let err = j.append_blocking(set(4)).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("durable writes refused"), "{err}");
        assert!(j.refusal().is_some());
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_even_at_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 300,
        ..cfg(Fsync::Always)
    };
    let positions: Vec<Position> = {
        let (j, _) = open(tmp.path(), small.clone());
        (0..12)
            .map(|i| j.append_blocking(set(i)).unwrap())
            .collect()
    };
    let first_seg = positions[0].segment;
    let last_in_first = *positions.iter().rfind(|p| p.segment == first_seg).unwrap();
    assert!(positions.last().unwrap().segment > first_seg);
    let seg = segment_file(tmp.path(), first_seg);
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let (_j, rec) = open(tmp.path(), small);
    let c = rec
        .corruption
        .expect("a cut sealed segment is corruption, not a torn tail");
    assert_eq!(c.position, last_in_first);
    assert!(c.later_segments >= 1);
    assert!(rec.torn_tail.is_none());
}

/// Every fsync policy: `always` runs a writer thread, `everysec` and `no`
/// an inline writer; both must keep the same contract.
const POLICIES: [Fsync; 3] = [Fsync::Always, Fsync::EverySec, Fsync::No];

#[test]
fn full_journal_refuses_appends_and_says_what_to_do() {
    for fsync in POLICIES {
        full_journal_refuses_appends(fsync);
    }
}

fn full_journal_refuses_appends(fsync: Fsync) {
    let tmp = tempfile::tempdir().unwrap();
    let max = 40 + 3 * journal_record_len();
    let small = JournalConfig {
        max_bytes: max,
        ..cfg(fsync)
    };
    {
        let (j, _) = open(tmp.path(), small.clone());
        for i in 0..3 {
            j.append_blocking(set(i)).unwrap();
        }
        let err = j.append_blocking(set(3)).unwrap_err();
        assert!(matches!(err, JournalError::Full { max_bytes } if max_bytes == max));
        let text = err.to_string();
        assert!(text.starts_with("journal full ("), "{text}");
        assert!(text.contains("durable write not executed"), "{text}");
        assert!(text.contains("raise journal.max_bytes"), "{text}");
        assert_eq!(j.bytes(), max);
        assert_eq!(j.pending_entries(), 3);
    }
    let (j, _) = open(tmp.path(), small);
    let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
    assert_eq!(
        got,
        (0..3).map(set).collect::<Vec<_>>(),
        "the refused entry was not written"
    );
    assert!(matches!(
        j.append_blocking(set(4)),
        Err(JournalError::Full { .. })
    ));
}

/// `stage` + `durable` (what a session keeping the journal at hand uses)
/// answer as `append` does under every policy: positions in call order,
/// the records written, a full journal refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_appends_resolve_like_appends_under_every_policy() {
    for fsync in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let max = 40 + 3 * journal_record_len();
        let (j, _) = open(
            tmp.path(),
            JournalConfig {
                max_bytes: max,
                ..cfg(fsync)
            },
        );
        let staged: Vec<_> = (0..3).map(|i| j.stage(set(i))).collect();
        let refused = j.stage(set(3));
        let mut positions = Vec::new();
        for s in staged {
            positions.push(j.durable(s).await.expect("durable"));
        }
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{fsync:?}: {positions:?}"
        );
        assert!(
            matches!(j.durable(refused).await, Err(JournalError::Full { .. })),
            "{fsync:?}"
        );
        let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
        assert_eq!(got, (0..3).map(set).collect::<Vec<_>>(), "{fsync:?}");
    }
}

#[test]
fn a_refused_append_fences_the_ones_behind_it_until_unfenced() {
    for fsync in POLICIES {
        a_refused_append_fences(fsync);
    }
}

fn a_refused_append_fences(fsync: Fsync) {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        max_bytes: 40 + 3 * journal_record_len(),
        ..cfg(fsync)
    };
    let (j, _) = open(tmp.path(), small);
    j.append_blocking(set(0)).unwrap();
    // Queued together: the one that does not fit, then two that would.
    let big = Entry::command(
        0,
        vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"big"),
            Bytes::from(vec![b'x'; 4096]),
        ],
        0,
    );
    let refused = j.append(big);
    let behind = j.append(set(1));
    let barrier = j.barrier_blocking();
    assert!(barrier.is_ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(matches!(
        rt.block_on(refused),
        Err(JournalError::Full { .. })
    ));
    let err = rt.block_on(behind).unwrap_err();
    assert!(matches!(err, JournalError::Fenced));
    assert!(
        err.to_string().contains("durable write not executed"),
        "{err}"
    );
    assert!(j.is_fenced());
    assert!(matches!(
        j.append_blocking(set(2)),
        Err(JournalError::Fenced)
    ));
    j.unfence();
    j.append_blocking(set(3)).unwrap();
    let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
    assert_eq!(
        got,
        vec![set(0), set(3)],
        "only what was acknowledged is there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_keep_call_order_under_every_policy() {
    for fsync in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let (j, _) = open(tmp.path(), cfg(fsync));
        let j = Arc::new(j);
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let j = j.clone();
                tokio::spawn(async move {
                    let mut positions = Vec::new();
                    for i in 0..300 {
                        // Two appends called before either is awaited:
                        // they share a write, in call order.
                        let a = j.append(set(t * 1000 + 2 * i));
                        let b = j.append(set(t * 1000 + 2 * i + 1));
                        positions.push(a.await.unwrap());
                        positions.push(b.await.unwrap());
                    }
                    positions
                })
            })
            .collect();
        let mut by_task = Vec::new();
        for t in tasks {
            by_task.push(t.await.unwrap());
        }
        for p in &by_task {
            assert!(
                p.windows(2).all(|w| w[0] < w[1]),
                "{fsync:?}: one task's order"
            );
        }
        let records = all_records(&j);
        assert_eq!(records.len(), 2400, "{fsync:?}");
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=2400).collect::<Vec<_>>(),
            "{fsync:?}"
        );
        for (t, positions) in by_task.iter().enumerate() {
            for (i, p) in positions.iter().enumerate() {
                let r = records.iter().find(|r| r.position == *p).unwrap();
                assert_eq!(r.entry, set(t as u64 * 1000 + i as u64), "{fsync:?}");
            }
        }
    }
}

#[tokio::test]
async fn an_append_nobody_awaits_is_still_written() {
    for fsync in [Fsync::EverySec, Fsync::No] {
        let tmp = tempfile::tempdir().unwrap();
        {
            let (j, _) = open(tmp.path(), cfg(fsync));
            let mut end = j.watch_end();
            end.borrow_and_update();
            // The caller gave up (a client gone): the entry has its place
            // in the journal all the same, written within a second.
            drop(j.append(set(1)));
            tokio::time::timeout(Duration::from_secs(5), end.changed())
                .await
                .expect("written by the background writer")
                .unwrap();
            assert_eq!(all_records(&j).len(), 1, "{fsync:?}");
            drop(j.append(set(2)));
            // And at shutdown, however soon it comes.
        }
        let (j, _) = open(tmp.path(), cfg(fsync));
        let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
        assert_eq!(got, vec![set(1), set(2)], "{fsync:?}");
    }
}

/// Frame length of `set(i)` for single-digit `i`.
fn journal_record_len() -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::No));
    let p = j.append_blocking(set(0)).unwrap();
    j.end().offset - p.offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_follows_appends_across_segment_rotations() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 256,
        ..cfg(Fsync::EverySec)
    };
    let (j, _) = open(tmp.path(), small.clone());
    let mut reader = j.reader(Position::START).unwrap();
    assert!(reader.next_record().unwrap().is_none(), "empty journal");
    let end = j.watch_end();
    for i in 0..40 {
        j.append(set(i)).await.unwrap();
    }
    assert!(end.has_changed().unwrap(), "watchers hear of new records");
    assert!(j.segments().len() >= 10, "segments: {:?}", j.segments());
    let mut seen = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        seen.push(r);
    }
    assert_eq!(seen.len(), 40);
    for i in 40..60 {
        j.append(set(i)).await.unwrap();
    }
    while let Some(r) = reader.next_record().unwrap() {
        seen.push(r);
    }
    assert_eq!(
        seen.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        (0..60).map(set).collect::<Vec<_>>()
    );
    assert_eq!(
        seen.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));

    // Resuming from any record's `next` (a checkpoint) yields exactly the rest.
    for k in [0usize, 7, 20, 58, 59] {
        let rest: Vec<u64> = j
            .reader(seen[k].next)
            .unwrap()
            .map(|r| r.unwrap().seq)
            .collect();
        assert_eq!(
            rest,
            (seen[k].seq + 1..=60).collect::<Vec<_>>(),
            "from after record {k}"
        );
    }
    // A position inside a record is refused, not read as garbage.
    let inside = Position::new(seen[3].position.segment, seen[3].position.offset + 5);
    assert!(matches!(
        j.reader(inside),
        Err(JournalError::InvalidPosition { .. })
    ));
    let cp = j.checkpoint(seen[10].next);
    assert_eq!(cp.to_string().parse::<journal::Checkpoint>().unwrap(), cp);
    drop(reader);
    drop(j);
    let (j, rec) = open(tmp.path(), small);
    assert_eq!(rec.records(), 60);
    assert_eq!(j.epoch(), cp.epoch, "the epoch survives a restart");
    assert_eq!(all_records(&j).len(), 60);
}

#[test]
fn release_and_retention_delete_only_replayed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let retain = Duration::from_secs(3600);
    let small = JournalConfig {
        segment_bytes: 256,
        retain_after_replay: retain,
        ..cfg(Fsync::No)
    };
    let (j, _) = open(tmp.path(), small.clone());
    for i in 0..30 {
        j.append_blocking(set(i)).unwrap();
    }
    let records = all_records(&j);
    let segs_before = j.segments();
    assert_eq!(j.pending_entries(), 30);
    let bytes_before = j.bytes();

    let upto = records[14].next;
    j.release(upto).unwrap();
    assert_eq!(j.pending_entries(), 15);
    assert!(j.bytes() < bytes_before);
    let now = Instant::now();
    assert_eq!(
        j.gc(now).unwrap(),
        Vec::<u64>::new(),
        "nothing deleted before the retention"
    );
    let deleted = j.gc(now + retain + Duration::from_secs(1)).unwrap();
    // Exactly the segments whose every record is among the 15 released.
    let fully_released = |s: u64| {
        records
            .iter()
            .filter(|r| r.position.segment == s)
            .all(|r| r.seq <= 15)
    };
    let expected: Vec<u64> = segs_before
        .iter()
        .copied()
        .filter(|&s| fully_released(s))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(deleted, expected);
    for s in &segs_before {
        assert_eq!(
            segment_file(tmp.path(), *s).exists(),
            !fully_released(*s),
            "segment {s}"
        );
    }
    // Unreplayed records are all still readable, from the start too.
    let rest: Vec<u64> = j
        .reader(Position::START)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    let first_kept = records
        .iter()
        .find(|r| !fully_released(r.position.segment))
        .unwrap()
        .seq;
    assert_eq!(rest.first().copied(), Some(first_kept));
    assert!(first_kept <= 16);
    assert_eq!(rest.last().copied(), Some(30));
    assert!(matches!(
        j.reader(records[0].position),
        Err(JournalError::Gone { .. })
    ));

    // Releasing an older position does nothing; releasing everything keeps
    // the segment being appended to.
    j.release(records[2].next).unwrap();
    assert_eq!(j.pending_entries(), 15);
    j.release(j.end()).unwrap();
    assert_eq!(j.pending_entries(), 0);
    j.gc(now + retain * 2).unwrap();
    assert_eq!(j.segments(), vec![j.end().segment]);
    drop(j);
    let (j, rec) = open(tmp.path(), small);
    assert!(rec.is_clean(), "{rec}");
    assert_eq!(j.append_blocking(set(99)).map(|_| ()).ok(), Some(()));
    assert_eq!(all_records(&j).last().map(|r| r.seq), Some(31));
}

#[test]
fn rotation_deletes_segments_past_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 256,
        retain_after_replay: Duration::ZERO,
        ..cfg(Fsync::No)
    };
    let (j, _) = open(tmp.path(), small);
    for i in 0..10 {
        j.append_blocking(set(i)).unwrap();
    }
    let first = j.segments()[0];
    j.release(j.end()).unwrap();
    for i in 10..20 {
        j.append_blocking(set(i)).unwrap();
    }
    assert!(
        !j.segments().contains(&first),
        "rotation ran the retention: {:?}",
        j.segments()
    );
    assert_eq!(j.pending_entries(), 10);
}

/// Applies SET / DEL entries to a map, standing in for the store.
fn apply(state: &mut HashMap<(u32, Bytes), Bytes>, e: &Entry) {
    for c in &e.commands {
        match &c[0][..] {
            b"SET" => drop(state.insert((e.db, c[1].clone()), c[2].clone())),
            b"DEL" => drop(state.remove(&(e.db, c[1].clone()))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn as_entries(state: &HashMap<(u32, Bytes), Bytes>) -> Vec<Entry> {
    state
        .iter()
        .map(|((db, k), v)| Entry::command(*db, vec![Bytes::from("SET"), k.clone(), v.clone()], 0))
        .collect()
}

#[tokio::test]
async fn snapshot_compaction_and_reopen_restore_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 512,
        ..cfg(Fsync::Always)
    };
    let mut state = HashMap::new();
    let workload = |i: u64| {
        if i % 7 == 3 {
            Entry::command(
                0,
                vec![Bytes::from("DEL"), Bytes::from(format!("k{}", i % 5))],
                i,
            )
        } else {
            Entry::command(
                (i % 2) as u32,
                vec![
                    Bytes::from("SET"),
                    Bytes::from(format!("k{}", i % 5)),
                    Bytes::from(format!("v{i}")),
                ],
                i,
            )
        }
    };
    {
        let (j, _) = open(tmp.path(), small.clone());
        for i in 0..40 {
            let e = workload(i);
            apply(&mut state, &e);
            j.append(e).await.unwrap();
        }
        let old_segments = j.segments();
        let base = j.rotate().await.unwrap();
        assert!(base > *old_segments.last().unwrap());
        let info = j.write_snapshot(base, as_entries(&state)).unwrap();
        assert_eq!(info.entries, state.len() as u64);
        for s in old_segments {
            assert!(
                !segment_file(tmp.path(), s).exists(),
                "segment {s} folded into the snapshot"
            );
        }
        for i in 40..60 {
            let e = workload(i);
            apply(&mut state, &e);
            j.append(e).await.unwrap();
        }
        // A second compaction replaces the first snapshot.
        let base2 = j.rotate().await.unwrap();
        j.write_snapshot(base2, as_entries(&state)).unwrap();
        assert!(!info.path.exists(), "older snapshot deleted");
        for i in 60..70 {
            let e = workload(i);
            apply(&mut state, &e);
            j.append(e).await.unwrap();
        }
    }
    // A crash in the middle of writing a snapshot leaves a temp file.
    let leftover = tmp
        .path()
        .join("journal")
        .join("snapshot-00000000000000000099.snap.tmp");
    fs::write(&leftover, b"half a snapshot").unwrap();
    let (j, rec) = open(tmp.path(), small);
    assert!(rec.is_clean(), "{rec}");
    assert!(rec.snapshot.is_some());
    assert_eq!(rec.removed, vec![leftover.clone()]);
    assert!(!leftover.exists());
    let mut rebuilt = HashMap::new();
    for e in j.replay_all().unwrap() {
        apply(&mut rebuilt, &e.unwrap());
    }
    assert_eq!(rebuilt, state);
    // Appends continue with the right sequence numbers after a snapshot.
    let p = j.append(workload(70)).await.unwrap();
    assert_eq!(j.reader(p).unwrap().next().unwrap().unwrap().seq, 71);
}

#[tokio::test]
async fn rotate_on_an_empty_segment_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::Always));
    let a = j.rotate().await.unwrap();
    assert_eq!(a, j.end().segment);
    j.append(set(1)).await.unwrap();
    let b = j.rotate().await.unwrap();
    assert_eq!(b, a + 1);
    let p = j.append(set(2)).await.unwrap();
    assert_eq!(p.segment, b, "appends after rotate go to the new segment");
}

#[test]
fn corrupt_snapshot_is_reported_not_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let path = {
        let (j, _) = open(tmp.path(), cfg(Fsync::Always));
        j.append_blocking(set(1)).unwrap();
        let base = j.rotate_blocking().unwrap();
        j.write_snapshot(base, vec![set(1), set(2)]).unwrap().path
    };
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
    let c = rec.corruption.expect("corrupt snapshot reported");
    assert!(c.snapshot);
    assert!(j.replay_all().is_err());
    assert!(matches!(
        j.append_blocking(set(3)),
        Err(JournalError::Corrupt(_))
    ));
}

#[test]
fn missing_middle_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 256,
        ..cfg(Fsync::No)
    };
    {
        let (j, _) = open(tmp.path(), small.clone());
        for i in 0..20 {
            j.append_blocking(set(i)).unwrap();
        }
    }
    fs::remove_file(segment_file(tmp.path(), 3)).unwrap();
    let (_j, rec) = open(tmp.path(), small);
    let c = rec.corruption.expect("gap reported");
    assert_eq!(c.position, Position::new(3, 0));
    assert!(c.reason.contains("missing"), "{}", c.reason);
}

#[test]
fn full_journal_accepts_again_once_replay_releases_records() {
    let tmp = tempfile::tempdir().unwrap();
    let rec_len = journal_record_len();
    // max_bytes below segment_bytes: only releasing inside the segment
    // being appended to can make room.
    let small = JournalConfig {
        max_bytes: 40 + 4 * rec_len,
        ..cfg(Fsync::No)
    };
    let (j, _) = open(tmp.path(), small);
    let mut accepted = 0;
    while j.append_blocking(set(accepted)).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted, 4);
    let records = all_records(&j);
    j.release(records[1].next).unwrap();
    assert_eq!(j.pending_entries(), 2);
    // The refused append fenced the journal until its owner undid it.
    assert!(matches!(
        j.append_blocking(set(9)),
        Err(JournalError::Fenced)
    ));
    j.unfence();
    j.append_blocking(set(10)).unwrap();
    j.append_blocking(set(11)).unwrap();
    assert!(matches!(
        j.append_blocking(set(12)),
        Err(JournalError::Full { .. })
    ));
}

#[test]
fn zeros_after_a_record_whose_payload_never_reached_the_disk_are_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (second, end) = {
        let (j, _) = open(tmp.path(), cfg(Fsync::Always));
        j.append_blocking(set(1)).unwrap();
        let p = j.append_blocking(set(2)).unwrap();
        (p, j.end())
    };
    let seg = segment_file(tmp.path(), second.segment);
    let mut bytes = fs::read(&seg).unwrap();
    // Header intact, payload zeroed, and the file extended with zeros.
    for b in &mut bytes[second.offset as usize + 12..end.offset as usize] {
        *b = 0;
    }
    bytes.extend([0u8; 100]);
    fs::write(&seg, &bytes).unwrap();
    let (j, rec) = open(tmp.path(), cfg(Fsync::Always));
    assert_eq!(rec.torn_tail.map(|t| t.position), Some(second));
    assert!(rec.corruption.is_none());
    assert_eq!(all_records(&j).len(), 1);
}

#[test]
fn inspect_reports_segments_records_time_range_and_torn_tail_without_changing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 256,
        ..cfg(Fsync::No)
    };
    let end = {
        let (j, _) = open(tmp.path(), small);
        for i in 1..=10 {
            j.append_blocking(set(i)).unwrap();
        }
        j.end()
    };
    let seg = segment_file(tmp.path(), end.segment);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(end.offset - 3)
        .unwrap();
    let report = journal::inspect(tmp.path()).unwrap();
    assert_eq!(report.records, 9);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(9)));
    assert_eq!(
        (report.first_time_ms, report.last_time_ms),
        (Some(1_700_000_000_001), Some(1_700_000_000_009))
    );
    assert!(report.segments.len() > 1);
    assert_eq!(report.segments.iter().map(|s| s.records).sum::<u64>(), 9);
    let torn = report.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        torn.bytes_dropped,
        fs::metadata(&seg).unwrap().len() - torn.position.offset
    );
    assert!(report.is_healthy());
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        end.offset - 3,
        "inspect does not truncate"
    );
    let text = report.to_string();
    assert!(
        text.contains("records    9") && text.contains("torn tail in segment"),
        "{text}"
    );
    let json = serde_json::to_string(&report).unwrap();
    let back: journal::InspectReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    // Pointing at the journal directory itself works too.
    assert_eq!(
        journal::inspect(tmp.path().join("journal"))
            .unwrap()
            .records,
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everysec_syncs_in_the_background_only_when_there_is_new_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::EverySec));
    j.append(set(1)).await.unwrap();
    // The background sync is an event in another thread with no hook to
    // await: poll for it, bounded.
    test_support::wait_for("the everysec sync", Duration::from_secs(5), || {
        j.fsyncs() >= 1
    });
    let after = j.fsyncs();
    let end = j.watch_end();
    j.append(set(2)).await.unwrap();
    assert!(end.has_changed().unwrap());
    test_support::wait_for("the second everysec sync", Duration::from_secs(5), || {
        j.fsyncs() > after
    });
}

#[test]
fn repair_moves_the_corrupt_data_aside_and_the_journal_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let small = JournalConfig {
        segment_bytes: 300,
        ..cfg(Fsync::Always)
    };
    let positions: Vec<Position> = {
        let (j, _) = open(tmp.path(), small.clone());
        (0..12)
            .map(|i| j.append_blocking(set(i)).unwrap())
            .collect()
    };
    let bad = positions[2];
    let seg = segment_file(tmp.path(), bad.segment);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[bad.offset as usize + 20] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();

    let lock = journal::DataDirLock::acquire(tmp.path()).unwrap();
    let report = journal::repair(&lock)
        .unwrap()
        .expect("corruption repaired");
    assert_eq!(report.corruption.position, bad);
    let tail = &report.moved[0];
    assert_eq!(
        fs::read(tail).unwrap(),
        bytes[bad.offset as usize..],
        "the cut-off bytes are kept"
    );
    let later: Vec<u64> = positions
        .iter()
        .map(|p| p.segment)
        .filter(|&s| s > bad.segment)
        .collect();
    assert!(!later.is_empty());
    for s in later {
        assert!(
            !segment_file(tmp.path(), s).exists(),
            "segment {s} moved to the quarantine"
        );
    }
    assert!(
        journal::repair(&lock).unwrap().is_none(),
        "nothing left to repair"
    );

    let (j, rec) = open(tmp.path(), small);
    assert!(rec.is_clean(), "{rec}");
    let got: Vec<Entry> = all_records(&j).into_iter().map(|r| r.entry).collect();
    assert_eq!(got, vec![set(0), set(1)]);
    let p = j.append_blocking(set(100)).unwrap();
    assert_eq!(p, bad, "appends continue where the good data ends");
    assert_eq!(all_records(&j).last().map(|r| r.seq), Some(3));
}

#[test]
fn the_release_point_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let records = {
        let (j, _) = open(tmp.path(), cfg(Fsync::Always));
        for i in 0..5 {
            j.append_blocking(set(i)).unwrap();
        }
        let records = all_records(&j);
        j.release(records[2].next).unwrap();
        assert_eq!(j.pending_entries(), 2);
        records
    };
    let (j, _) = open(tmp.path(), cfg(Fsync::Always));
    assert_eq!(
        j.pending_entries(),
        2,
        "replayed records are not pending again"
    );
    assert_eq!(j.released(), records[2].next);
    let rest: Vec<Entry> = j
        .reader(j.released())
        .unwrap()
        .map(|r| r.unwrap().entry)
        .collect();
    assert_eq!(rest, vec![set(3), set(4)]);
    // A point kept for another journal (another epoch) is not trusted.
    drop(j);
    let p = tmp.path().join("journal").join("released");
    let kept = fs::read_to_string(&p).expect("the release point is kept in the journal dir");
    let (_, rest) = kept.split_once(' ').unwrap();
    fs::write(&p, format!("1 {rest}")).unwrap();
    let (j, _) = open(tmp.path(), cfg(Fsync::Always));
    assert_eq!(
        j.pending_entries(),
        5,
        "a point of another epoch is not trusted"
    );
}

/// `append_then` calls its hook once per append, with the append's
/// result, before the append's future resolves and also when nobody holds
/// that future any more: under `always` when the writer answers, under
/// `everysec` and `no` when any appender writes what is staged (at the
/// latest the once-a-second syncer); a refused append's hook hears why.
#[test]
fn append_then_tells_every_outcome_whether_or_not_the_future_is_held() {
    for fsync in POLICIES {
        let tmp = tempfile::tempdir().unwrap();
        let max = 40 + 3 * journal_record_len();
        let (j, _) = open(
            tmp.path(),
            JournalConfig {
                max_bytes: max,
                ..cfg(fsync)
            },
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let hook = |i: u64| -> journal::Then {
            let tx = tx.clone();
            Box::new(move |r: &journal::Result<Position>| {
                tx.send((i, r.as_ref().map(|p| *p).map_err(|e| e.to_string())))
                    .unwrap()
            })
        };
        // Dropped at once: nobody waits for it.
        drop(j.append_then(set(0), hook(0)));
        let (i, r) = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{fsync:?}: no outcome for an append nobody waits for"));
        assert_eq!(i, 0);
        let first = r.expect("durable");
        // Held: its hook is told before it resolves.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let held = j.append_then(set(1), hook(1));
        let pos = rt.block_on(held).expect("durable");
        let (i, r) = rx.try_recv().expect("told before the future resolved");
        assert_eq!((i, r), (1, Ok(pos)));
        assert!(first < pos, "{fsync:?}");
        j.append_blocking(set(2)).unwrap();
        // Refused: the journal is full.
        let refused = j.append_then(set(3), hook(3));
        let err = rt.block_on(refused).unwrap_err();
        assert!(matches!(err, JournalError::Full { .. }), "{fsync:?}: {err}");
        let (i, r) = rx.try_recv().expect("told the refusal");
        assert_eq!(i, 3);
        assert!(r.unwrap_err().starts_with("journal full"), "{fsync:?}");
        assert!(rx.try_recv().is_err(), "{fsync:?}: told twice");
    }
}
