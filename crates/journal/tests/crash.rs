//! Crash safety: a child process appends with `fsync = always` from many
//! tasks and prints every acknowledged append; it is killed with SIGKILL;
//! after reopening, every acknowledged append must be there, intact.
//!
//! The child is this test binary itself, re-run with an environment
//! variable that turns the ignored `crash_child_appender` into the writer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use journal::{Entry, Fsync, Journal, JournalConfig, Position};

const CHILD_ENV: &str = "JOURNAL_CRASH_CHILD_DIR";

fn config() -> JournalConfig {
    // Small segments so the kill can land during a rotation too.
    JournalConfig {
        fsync: Fsync::Always,
        segment_bytes: 8 << 10,
        ..JournalConfig::default()
    }
}

/// The child: appends forever from 8 tasks, printing
/// `ACK <segment> <offset> <value>` after each acknowledged append.
#[test]
#[ignore = "run only as the child of acknowledged_appends_survive_sigkill"]
fn crash_child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (j, _) = Journal::open(&dir, config()).unwrap();
        let j = Arc::new(j);
        let mut tasks = Vec::new();
        for t in 0..8u32 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let value = format!("{t}-{i}");
                    let args = vec![
                        Bytes::from("SET"),
                        Bytes::from(format!("k{t}")),
                        Bytes::from(value.clone()),
                    ];
                    let pos = j.append(Entry::command(t, args, i)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {} {value}", pos.segment, pos.offset).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Kills the child if the test fails before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn parse_ack(line: &str) -> Option<(Position, String)> {
    let mut w = line.strip_prefix("ACK ")?.split(' ');
    let seg = w.next()?.parse().ok()?;
    let off = w.next()?.parse().ok()?;
    Some((Position::new(seg, off), w.next()?.to_string()))
}

#[test]
fn acknowledged_appends_survive_sigkill_of_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new(exe)
            .args([
                "--exact",
                "crash_child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        // Kill after a few hundred acknowledgements, mid-stream.
        while acked.len() < 300 {
            let line = lines.next().expect("child ended early").unwrap();
            acked.extend(parse_ack(&line));
        }
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        // Lines already in the pipe were acknowledged before the kill too.
        for line in lines {
            acked.extend(parse_ack(&line.unwrap()));
        }

        let (j, rec) = Journal::open(tmp.path(), config()).unwrap();
        assert!(rec.corruption.is_none(), "round {round}: {rec}");
        let on_disk: HashMap<Position, Bytes> = j
            .reader(Position::START)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.position, r.entry.commands[0][2].clone())
            })
            .collect();
        for (pos, value) in &acked {
            assert_eq!(
                on_disk.get(pos).map(|b| &b[..]),
                Some(value.as_bytes()),
                "round {round}: acknowledged append {value} at {pos} lost"
            );
        }
        assert!(
            acked.len() >= 300 && on_disk.len() >= acked.len(),
            "{} acked, {} on disk",
            acked.len(),
            on_disk.len()
        );
        eprintln!(
            "round {round}: {} acknowledged appends, {} records on disk, {}",
            acked.len(),
            on_disk.len(),
            rec
        );
    }
}
