//! [`DataDirLock`]: one process per `data_dir`, so two never share a
//! journal or a node id.
//!
//! The lock is an OS advisory lock (`flock`) on `<data_dir>/redoubt.lock`,
//! released by the kernel when the process dies, so a `kill -9` leaves no
//! stale lock behind. The holder writes its pid into the file so the
//! refusal can name it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the lock inside the data dir.
pub const LOCK_FILE: &str = "redoubt.lock";

/// Why the data dir could not be locked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("data_dir {} is in use by another Redoubt process{}: not started; stop that process or use another data_dir", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
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

/// The exclusive lock on a data dir, held until dropped (for the life of the
/// process).
#[derive(Debug)]
pub struct DataDirLock {
    // Closing the file releases the lock; it is held only for that.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says who holds it.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<DataDirLock, LockError> {
        let dir = dir.as_ref().to_path_buf();
        let io_err = |e: io::Error| LockError::Io {
            dir: dir.clone(),
            source: Arc::new(e),
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
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
                return Err(LockError::Held {
                    dir,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // Only the holder writes, so the pid read by a refused process is
        // the holder's (or empty while it is being written).
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(DataDirLock { _file: file, dir })
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
}
