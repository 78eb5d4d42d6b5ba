//! Where a checkpoint store keeps its files: a directory on a local (or
//! mounted) file system, or an object store (`s3://bucket/prefix`).
//!
//! The store ([`super::CheckpointStore`]) speaks in paths relative to the
//! job's root (`chk-3/MANIFEST`, `shared/<instance>/000012.sst`, always with
//! `/`); a backend maps them to files or objects. The commit protocol needs
//! only what both offer: whole-or-absent writes and a create-only write
//! (the manifest). Object stores have no rename and no directories: a
//! "directory" is a key prefix, and `reserve` creates a marker object.

use crate::error::Result;
use std::path::{Path, PathBuf};

/// The storage under one job's checkpoint store.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Where `rel` is, for messages and tools: a path or a URL.
    fn location(&self, rel: &str) -> PathBuf;

    /// The job's directory when the store is on a file system.
    fn local_root(&self) -> Option<&Path>;

    /// Puts the immutable local file `src` at `rel`, whole or not at all
    /// (a hard link when it can), and returns its size and CRC-32.
    fn put_file(&self, src: &Path, rel: &str) -> Result<(u64, u32)>;

    /// [`Backend::put_file`] of many files (`(src, rel)`), in parallel
    /// where the backend gains from it.
    fn put_files(&self, files: &[(PathBuf, String)]) -> Result<Vec<(u64, u32)>> {
        files.iter().map(|(src, rel)| self.put_file(src, rel)).collect()
    }

    /// Makes what was put under the directory `rel_dir` durable (a file
    /// system's directory fsync; object stores are durable per put).
    fn sync(&self, rel_dir: &str) -> Result<()>;

    /// Writes `bytes` at `rel`, replacing what is there, atomically.
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()>;

    /// Writes `bytes` at `rel` only if nothing is there.
    ///
    /// # Errors
    /// [`crate::WeirError::Fenced`] when `rel` exists.
    fn create(&self, rel: &str, bytes: &[u8]) -> Result<()>;

    /// The bytes at `rel`, `None` when absent.
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>>;

    /// The size of `rel`, `None` when absent.
    fn size(&self, rel: &str) -> Result<Option<u64>>;

    /// The CRC-32 of `rel` when reading it here is cheap enough to check a
    /// restore's files before choosing it (a file system); `None` when the
    /// backend checks it while fetching instead (an object store: one
    /// download, not two).
    fn checksum(&self, rel: &str) -> Result<Option<u32>>;

    /// Makes `rel` available as the local file `dest` (a hard link or a
    /// copy), returning the CRC-32 of the bytes when it computed one.
    fn fetch(&self, rel: &str, dest: &Path) -> Result<Option<u32>>;

    /// Names of the entries directly under `rel_dir` (`""`: the root), files
    /// and directories (key prefixes), unsorted.
    fn list(&self, rel_dir: &str) -> Result<Vec<String>>;

    /// Every file under `rel_dir`, at any depth, as relative paths.
    fn list_files(&self, rel_dir: &str) -> Result<Vec<String>>;

    /// Deletes the file `rel` (absent is fine).
    fn delete(&self, rel: &str) -> Result<()>;

    /// Deletes `rel_dir` and everything under it (absent is fine).
    fn delete_dir(&self, rel_dir: &str) -> Result<()>;

    /// Creates the directory `rel_dir` only if it is absent.
    ///
    /// # Errors
    /// [`crate::WeirError::Fenced`] when it exists.
    fn reserve(&self, rel_dir: &str) -> Result<()>;
}

/// `base` joined with a relative store path.
pub(crate) fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{}/{rel}", base.trim_end_matches('/')),
    }
}
