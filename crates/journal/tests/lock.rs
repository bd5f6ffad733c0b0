//! The data dir lock against another process: a live holder is refused at
//! once, an exiting one is waited for (and the wait is logged), one that
//! stays exiting past the patience is refused with what was seen.
//!
//! The holder is this test binary run again as a child
//! ([`lock_holder_child`]). "Exiting" is made deterministic with job
//! control: a stopped process does not act on SIGTERM, so after SIGSTOP
//! and SIGTERM it holds the lock with SIGTERM pending, exactly what
//! `/proc` shows of a process killed inside an fsync; SIGCONT lets it die.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use journal::lock::{holder_state, Holder};
use journal::{DataDirLock, LockError};
use test_support::wait_for;

/// Set in the child's environment: the data dir it must lock.
const HOLDER_DIR: &str = "REDOUBT_TEST_LOCK_HOLDER_DIR";

/// Not a test of its own: the body of the child process that holds the
/// lock. Run normally (the variable unset) it does nothing.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var(HOLDER_DIR) else {
        return;
    };
    let _lock = DataDirLock::acquire(&dir).expect("child: lock the data dir");
    let mut out = std::io::stdout();
    writeln!(out, "locked").unwrap();
    out.flush().unwrap();
    // Hold the lock until the parent closes our stdin (or kills us).
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

/// A child process holding the lock of `dir`; killed on drop.
struct HolderChild {
    child: Child,
}

impl HolderChild {
    fn spawn(dir: &Path) -> HolderChild {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["lock_holder_child", "--exact", "--nocapture"])
            .env(HOLDER_DIR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the lock holder");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l == "locked" => break,
                Some(Ok(_)) => continue,
                other => panic!("the holder exited before locking: {other:?}"),
            }
        }
        HolderChild { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} {}", self.pid());
    }

    /// Stopped, then SIGTERM: alive, holding the lock, with a fatal signal
    /// pending.
    fn make_exiting(&self) {
        self.signal("-STOP");
        // SIGTERM must arrive after the stop took effect; sent together,
        // SIGTERM (15) would be delivered before SIGSTOP (19).
        let status = format!("/proc/{}/status", self.pid());
        wait_for("the holder to stop", Duration::from_secs(10), || {
            std::fs::read_to_string(&status).is_ok_and(|s| s.contains("State:\tT"))
        });
        self.signal("-TERM");
        assert_eq!(
            holder_state(self.pid()),
            Holder::Exiting("has SIGTERM pending")
        );
    }
}

impl Drop for HolderChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log lines written while `f` runs on this thread, sent to `tx` as they
/// are written.
fn with_log<T>(tx: mpsc::Sender<String>, f: impl FnOnce() -> T) -> T {
    struct Line(mpsc::Sender<String>);
    impl Write for Line {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.send(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Line(tx.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, f)
}

#[test]
fn a_live_holder_in_another_process_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let holder = HolderChild::spawn(tmp.path());
    let start = Instant::now();
    let err = DataDirLock::acquire_waiting(tmp.path(), Duration::from_secs(30)).unwrap_err();
    match &err {
        LockError::Held { pid, .. } => assert_eq!(*pid, Some(holder.pid())),
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a live holder is not waited for: {:?}",
        start.elapsed()
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("pid {}", holder.pid())) && text.contains("not started"),
        "{text}"
    );
}

#[test]
fn an_exiting_holder_is_waited_for_and_the_wait_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut holder = HolderChild::spawn(tmp.path());
    holder.make_exiting();
    // Today's refusal, for contrast: one try sees a held lock.
    assert!(matches!(
        DataDirLock::acquire(tmp.path()),
        Err(LockError::Held { .. })
    ));

    let (tx, rx) = mpsc::channel();
    let dir = tmp.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        with_log(tx, || {
            DataDirLock::acquire_waiting(&dir, Duration::from_secs(30))
        })
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = String::new();
    while !log.contains("waiting for it to release the lock") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => log.push_str(&line),
            Err(e) => panic!("no 'waiting' log line ({e}); log so far:\n{log}"),
        }
    }
    assert!(
        log.contains(&format!("pid={}", holder.pid())) && log.contains("has SIGTERM pending"),
        "the log names the holder and why it is waited for:\n{log}"
    );
    assert!(!waiter.is_finished(), "the holder still has the lock");

    // Let it act on the SIGTERM: it dies, the kernel releases the lock.
    holder.signal("-CONT");
    let lock = waiter.join().unwrap().expect("locked once the holder died");
    assert_eq!(lock.dir(), tmp.path());
    log.extend(rx.try_iter());
    assert!(
        log.contains("released by the exiting process"),
        "the log says when it is over:\n{log}"
    );
    let status = holder.child.wait().unwrap();
    assert!(
        !status.success(),
        "the holder died of its SIGTERM: {status}"
    );
}

#[test]
fn an_exiting_holder_that_stays_is_refused_after_the_patience() {
    let tmp = tempfile::tempdir().unwrap();
    let holder = HolderChild::spawn(tmp.path());
    holder.make_exiting();
    let patience = Duration::from_millis(300);
    let start = Instant::now();
    let err = DataDirLock::acquire_waiting(tmp.path(), patience).unwrap_err();
    assert!(start.elapsed() >= patience, "waited the patience out");
    match &err {
        LockError::StillHeld { pid, why, .. } => {
            assert_eq!(*pid, holder.pid());
            assert_eq!(*why, "has SIGTERM pending");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    for needle in [
        &format!("pid {}", holder.pid()) as &str,
        "has SIGTERM pending",
        "not started",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
}
