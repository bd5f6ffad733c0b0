//! [`DataDirLock`]: one process per `data_dir`, so two never share a
//! journal or a node id.
//!
//! The lock is an OS advisory lock (`flock`) on `<data_dir>/redoubt.lock`,
//! released by the kernel when the process dies, so a `kill -9` leaves no
//! stale lock behind. The holder writes its pid into the file so the
//! refusal can name it.
//!
//! "When the process dies" is not "when `kill -9` returns": a process
//! inside `fsync` (or any uninterruptible disk wait) dies only when that
//! call returns, and its threads exit one by one. A supervisor restarting
//! Redoubt at once meets a lock that is still held by a process that is
//! already on its way out. [`DataDirLock::acquire_waiting`] tells the two
//! apart by reading the holder's `/proc/PID/status` ([`holder_state`]):
//! a predecessor that is exiting is waited for, a bounded time, saying so
//! in the log; a live one is refused at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// File name of the lock inside the data dir.
pub const LOCK_FILE: &str = "redoubt.lock";

/// How long a starting Redoubt waits for a predecessor that is exiting to
/// release the data dir. An fsync stuck behind a slow disk can take
/// seconds; much longer than this and something is wrong with the disk,
/// which an operator should hear about rather than a supervisor loop.
pub const EXITING_HOLDER_PATIENCE: Duration = Duration::from_secs(30);

/// How often the lock is tried again while waiting. Short: the gap
/// between the holder's death and our start is downtime.
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// How often the wait is reported in the log, so an operator watching a
/// silent start knows why it is silent.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A holder writes its pid right after it takes the lock; an empty file
/// is a holder inside that window, so it is given this long to finish.
const NO_PID_GRACE: Duration = Duration::from_secs(1);

/// Why the data dir could not be locked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock and is not exiting.
    #[error("data_dir {} is in use by another Redoubt process{}: not started; stop that process or use another data_dir", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The holder was exiting but did not release the lock in time.
    #[error("data_dir {} is still locked by Redoubt process {pid}, which {why}, after waiting {} s for it to exit: not started; \
             a process stuck in a disk write (ps -o pid,stat,wchan -p {pid}: state D) exits when the write returns, \
             so check the disk, then start again once pid {pid} is gone", dir.display(), waited.as_secs())]
    StillHeld {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: u32,
        /// What the last look at the holder showed.
        why: &'static str,
        /// How long this process waited.
        waited: Duration,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock data_dir {}: {source}: not started; check that the directory exists and is writable", dir.display())]
    Io {
        /// The data dir.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
}

/// What the process named in the lock file is doing, as far as a
/// bystander can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Running, with no fatal signal pending: it will keep the lock.
    Live,
    /// On its way out (why, in words for the log): it will release the
    /// lock when its last thread exits.
    Exiting(&'static str),
}

/// Looks at `/proc/PID/status`: a holder is exiting when it no longer
/// exists, is a zombie (its main thread exited; another may still be in a
/// disk write holding the files open), or has SIGKILL or SIGTERM pending
/// (a `kill -9` not yet acted on because the process is in an
/// uninterruptible wait). Where `/proc` is not available nothing can be
/// told, and the holder is taken as live: refusing is the safe side.
pub fn holder_state(pid: u32) -> Holder {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => classify(&status),
        Err(e) if e.kind() == io::ErrorKind::NotFound && Path::new("/proc/self").exists() => {
            Holder::Exiting("no longer exists")
        }
        Err(_) => Holder::Live,
    }
}

/// SIGKILL is 9 and SIGTERM 15 on every Linux architecture; the masks in
/// `/proc/PID/status` have bit `signal - 1` set for a pending signal.
const SIGKILL_BIT: u64 = 1 << (9 - 1);
const SIGTERM_BIT: u64 = 1 << (15 - 1);

/// The classification of one `/proc/PID/status` text.
fn classify(status: &str) -> Holder {
    let mut pending = 0u64;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            // "Z (zombie)", "X (dead)".
            "State" if value.starts_with('Z') => return Holder::Exiting("is a zombie"),
            "State" if value.starts_with('X') => return Holder::Exiting("is dead"),
            // Pending for the main thread, and for the whole process.
            "SigPnd" | "ShdPnd" => pending |= u64::from_str_radix(value, 16).unwrap_or(0),
            _ => {}
        }
    }
    if pending & SIGKILL_BIT != 0 {
        Holder::Exiting("has SIGKILL pending")
    } else if pending & SIGTERM_BIT != 0 {
        Holder::Exiting("has SIGTERM pending")
    } else {
        Holder::Live
    }
}

/// One try at the lock.
enum Attempt {
    Locked(DataDirLock),
    /// Someone holds it; their pid as written in the file, if any.
    Busy(Option<u32>),
}

/// The exclusive lock on a data dir, held until dropped (for the life of the
/// process).
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the lock; it is held only for that.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says who holds it. One try:
    /// for tools an operator runs by hand, who can run them again.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<DataDirLock, LockError> {
        let dir = dir.as_ref().to_path_buf();
        match Self::attempt(&dir)? {
            Attempt::Locked(lock) => Ok(lock),
            Attempt::Busy(pid) => Err(LockError::Held { dir, pid }),
        }
    }

    /// Like [`acquire`](Self::acquire), but a holder that is exiting
    /// ([`holder_state`]) is waited for, up to `patience`, with a warning
    /// in the log when the wait starts and every few seconds after. A live
    /// holder is refused at once. Blocks the calling thread.
    pub fn acquire_waiting(
        dir: impl AsRef<Path>,
        patience: Duration,
    ) -> Result<DataDirLock, LockError> {
        let dir = dir.as_ref().to_path_buf();
        let start = Instant::now();
        let mut reported: Option<Instant> = None;
        loop {
            let pid = match Self::attempt(&dir)? {
                Attempt::Locked(lock) => {
                    if reported.is_some() {
                        tracing::info!(
                            data_dir = %dir.display(),
                            waited_ms = start.elapsed().as_millis() as u64,
                            "data_dir lock released by the exiting process; starting"
                        );
                    }
                    return Ok(lock);
                }
                Attempt::Busy(pid) => pid,
            };
            let waited = start.elapsed();
            let (pid, why) = match pid {
                Some(p) => match holder_state(p) {
                    Holder::Live => return Err(LockError::Held { dir, pid }),
                    Holder::Exiting(why) => (p, why),
                },
                None if waited < NO_PID_GRACE.min(patience) => {
                    std::thread::sleep(RETRY_EVERY);
                    continue;
                }
                None => return Err(LockError::Held { dir, pid }),
            };
            if waited >= patience {
                return Err(LockError::StillHeld {
                    dir,
                    pid,
                    why,
                    waited,
                });
            }
            if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                tracing::warn!(
                    data_dir = %dir.display(),
                    pid,
                    holder = why,
                    waited_s = waited.as_secs(),
                    patience_s = patience.as_secs(),
                    "data_dir is still locked by the previous Redoubt process, which is exiting; waiting for it to release the lock"
                );
                reported = Some(Instant::now());
            }
            std::thread::sleep(RETRY_EVERY.min(patience - waited));
        }
    }

    /// Creates `dir` if needed and tries the lock once.
    fn attempt(dir: &Path) -> Result<Attempt, LockError> {
        let io_err = |e: io::Error| LockError::Io {
            dir: dir.to_path_buf(),
            source: Arc::new(e),
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Ok(Attempt::Busy(text.trim().parse().ok()));
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // Only the holder writes, so the pid read by a refused process is
        // the holder's (or empty while it is being written).
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Attempt::Locked(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        }))
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_dir_fails_and_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(tmp.path()).unwrap();
        let err = DataDirLock::acquire(tmp.path()).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("not started"), "{text}");
        drop(first);
        DataDirLock::acquire(tmp.path()).expect("lock is free again once dropped");
    }

    #[test]
    fn a_live_holder_is_refused_at_once_even_when_waiting_is_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDirLock::acquire(tmp.path()).unwrap();
        let start = Instant::now();
        let err = DataDirLock::acquire_waiting(tmp.path(), Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "did not wait");
    }

    #[test]
    fn proc_status_tells_exiting_from_live() {
        let status = |state: &str, sigpnd: &str, shdpnd: &str| {
            format!("Name:\tredoubt\nState:\t{state}\nPid:\t42\nSigQ:\t0/1\nSigPnd:\t{sigpnd}\nShdPnd:\t{shdpnd}\nSigBlk:\t0000000000000000\n")
        };
        let zero = "0000000000000000";
        for (text, want) in [
            (status("S (sleeping)", zero, zero), Holder::Live),
            (status("D (disk sleep)", zero, zero), Holder::Live),
            (status("T (stopped)", zero, zero), Holder::Live),
            // SIGHUP (1) and SIGUSR1 (10) pending: not on the way out.
            (
                status("S (sleeping)", "0000000000000201", zero),
                Holder::Live,
            ),
            (
                status("D (disk sleep)", "0000000000000100", zero),
                Holder::Exiting("has SIGKILL pending"),
            ),
            (
                status("D (disk sleep)", zero, "0000000000000100"),
                Holder::Exiting("has SIGKILL pending"),
            ),
            (
                status("T (stopped)", zero, "0000000000004000"),
                Holder::Exiting("has SIGTERM pending"),
            ),
            (
                status("Z (zombie)", zero, zero),
                Holder::Exiting("is a zombie"),
            ),
            (status("X (dead)", zero, zero), Holder::Exiting("is dead")),
            // Garbage is not a reason to think it is exiting.
            ("SigPnd:\tnot-hex\n".to_string(), Holder::Live),
        ] {
            assert_eq!(classify(&text), want, "{text}");
        }
    }

    #[test]
    fn this_process_is_live_and_a_gone_pid_is_exiting() {
        assert_eq!(holder_state(std::process::id()), Holder::Live);
        // Pids are bounded by pid_max (at most 2^22 on Linux).
        assert_eq!(
            holder_state(u32::MAX - 1),
            Holder::Exiting("no longer exists")
        );
    }
}
