//! One writer per store: an exclusive `flock` on `<dir>/LOCK`, held for a
//! whole run (as Kafka Streams locks its state directory).
//!
//! The kernel drops the lock when the holder's file is closed, also when the
//! process is killed, so a crashed run never leaves a stale lock behind; a
//! *paused* run (SIGSTOP, a frozen VM) keeps it, and its replacement is
//! refused until it is really gone. The file holds who took the lock (pid,
//! host, since when, which job), only to name the holder in the refusal.
//!
//! A lock file protects a directory on one machine's file system. Object
//! stores have no locks: there a writer claims the store with a create-only
//! `owners/<n>` object and checks for a newer claim before each commit
//! ([`super::store::CheckpointStore::lock`]), and a checkpoint's manifest is
//! created only if absent, so of two writers racing for a checkpoint id
//! exactly one wins and the other stops.

use crate::error::{Result, WeirError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The name of the lock file in a locked directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a directory, released when dropped.
#[derive(Debug)]
pub struct DirLock {
    /// The open lock file: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (creating it) for `job`, or fails at once.
    ///
    /// # Errors
    /// [`WeirError::StoreInUse`] naming the directory and the holder when
    /// another process (or another run in this one) holds it;
    /// [`WeirError::Io`] when the lock file cannot be opened.
    pub fn acquire(dir: &Path, job: &str) -> Result<Self> {
        super::local::create_dir_durable(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| WeirError::io("cannot open lock file", &path, e))?;
        // SAFETY: flock on a file descriptor this function owns (it lives in
        // `file` until the end of the call or of the returned lock).
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(WeirError::io("cannot lock", &path, error));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(WeirError::StoreInUse {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "a process that has not written its name yet".into()
                } else {
                    holder.to_string()
                },
            });
        }
        let since = crate::clock::format_utc(crate::clock::wall_clock_ms().max(0) as u64);
        let holder = format!(
            "job `{job}`, pid {} on host {}, since {since}",
            std::process::id(),
            hostname()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .and_then(|()| file.flush());
        written.map_err(|e| WeirError::io("cannot write lock file", &path, e))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// This machine's host name, or `unknown`.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length, and gethostname
    // writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_directory_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "sums").unwrap();
        let err = DirLock::acquire(dir.path(), "sums").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, WeirError::StoreInUse { .. }), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())) && text.contains("job `sums`"),
            "{text}"
        );
        drop(first);
        DirLock::acquire(dir.path(), "sums").unwrap();
    }
}
