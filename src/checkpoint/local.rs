//! The checkpoint store's backend on a local (or mounted) file system, and
//! the file helpers every durable write of weir goes through (create-only
//! and atomic writes, directory fsyncs).

use super::backend::Backend;
use crate::error::{Result, WeirError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A job's checkpoint store in a directory.
#[derive(Debug)]
pub(crate) struct LocalBackend {
    dir: PathBuf,
}

impl LocalBackend {
    /// The store in `dir` (not created here).
    pub(crate) fn new(dir: PathBuf) -> Self {
        LocalBackend { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(rel)
        }
    }
}

impl Backend for LocalBackend {
    fn location(&self, rel: &str) -> PathBuf {
        self.path(rel)
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn put_file(&self, src: &Path, rel: &str) -> Result<(u64, u32)> {
        crate::failpoint::hit("store-put-file");
        let dest = self.path(rel);
        if let Some(parent) = dest.parent() {
            create_dir_durable(parent)?;
        }
        store_file(src, &dest, true)
    }

    fn sync(&self, rel_dir: &str) -> Result<()> {
        let dir = self.path(rel_dir);
        if dir.is_dir() {
            sync_dir(&dir)
        } else {
            // Nothing was put there.
            Ok(())
        }
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| WeirError::io("cannot create", parent, e))?;
        }
        write_atomic(&path, bytes)
    }

    fn create(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| WeirError::io("cannot create", parent, e))?;
        }
        create_only(&path, bytes)
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(rel);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WeirError::io("cannot read", path, e)),
        }
    }

    fn size(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.path(rel);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WeirError::io("cannot look at", path, e)),
        }
    }

    fn checksum(&self, rel: &str) -> Result<Option<u32>> {
        Ok(Some(file_crc32(&self.path(rel))?.1))
    }

    fn fetch(&self, rel: &str, dest: &Path) -> Result<Option<u32>> {
        let src = self.path(rel);
        if fs::hard_link(&src, dest).is_err() {
            fs::copy(&src, dest).map_err(|e| WeirError::io("cannot restore state file", &src, e))?;
        }
        Ok(None)
    }

    fn list(&self, rel_dir: &str) -> Result<Vec<String>> {
        let dir = self.path(rel_dir);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(WeirError::io("cannot list", dir, e)),
        };
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect())
    }

    fn list_files(&self, rel_dir: &str) -> Result<Vec<String>> {
        let mut files = Vec::new();
        let mut todo = vec![rel_dir.to_string()];
        while let Some(rel) = todo.pop() {
            let dir = self.path(&rel);
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let child = super::backend::join(&rel, &name);
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(child);
                } else {
                    files.push(child);
                }
            }
        }
        Ok(files)
    }

    fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WeirError::io("cannot delete", path, e)),
        }
    }

    fn delete_dir(&self, rel_dir: &str) -> Result<()> {
        let path = self.path(rel_dir);
        match fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(WeirError::io("cannot delete", path, e)),
        }
    }

    fn reserve(&self, rel_dir: &str) -> Result<()> {
        let dir = self.path(rel_dir);
        match fs::create_dir(&dir) {
            // The entry outlives a power cut before the manifest does.
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(WeirError::Fenced {
                what: format!("checkpoint {}", dir.display()),
            }),
            Err(e) => Err(WeirError::io("cannot create checkpoint directory", &dir, e)),
        }
    }
}

/// Creates `path` with `bytes` only if it does not exist, atomically: a
/// temporary file, fsync, a hard link to `path` (which fails if it exists),
/// fsync of the directory.
///
/// # Errors
/// [`WeirError::Fenced`] when `path` exists; [`WeirError::Io`] naming the path.
pub(crate) fn create_only(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    written.map_err(|e| WeirError::io("cannot write", &tmp, e))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(WeirError::Fenced {
                what: path.display().to_string(),
            })
        }
        Err(e) => return Err(WeirError::io("cannot create", path, e)),
    }
    // Linked: the file exists. If its entry cannot be made durable the
    // outcome is unknown, which is not an ordinary failure to retry.
    match path.parent() {
        Some(dir) => sync_dir(dir).map_err(|e| WeirError::Checkpoint {
            path: path.to_path_buf(),
            message: format!("created, but its directory entry could not be made durable: {e}"),
        }),
        None => Ok(()),
    }
}

/// 16 hex digits from the kernel's random source (the clock and pid when it
/// cannot be read): ids that must differ between stores and runs.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    let read = fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id()).rotate_left(40)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync dir.
///
/// # Errors
/// [`WeirError::Io`] naming the path.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| WeirError::io("cannot create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| WeirError::io("cannot write", &tmp, e))?;
    f.sync_all().map_err(|e| WeirError::io("cannot fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| WeirError::io("cannot rename into place", path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs a directory so that renames and new files in it are durable.
///
/// # Errors
/// [`WeirError::Io`] naming the directory.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WeirError::io("cannot fsync directory", dir, e))
}

/// Creates `dir` and its missing parents, and makes each new directory's
/// entry durable (an fsync of its parent): a SIGKILL cannot lose an entry,
/// a power cut can, and a manifest must never outlive a directory its files
/// are in. Nothing is synced when `dir` exists.
///
/// # Errors
/// [`WeirError::Io`] naming the directory.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        at = d.parent();
    }
    fs::create_dir_all(dir).map_err(|e| WeirError::io("cannot create directory", dir, e))?;
    for d in missing.iter().rev() {
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

/// Puts an immutable file into the store at `dest`: a hard link when both
/// are on one file system (SSTs never change), otherwise a copy; either way
/// through a temporary name and a rename, so `dest` is whole or absent.
///
/// # Errors
/// [`WeirError::Io`] naming the file.
pub(crate) fn store_file(src: &Path, dest: &Path, durable: bool) -> Result<(u64, u32)> {
    let tmp = dest.with_extension("partial");
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp).map_err(|e| WeirError::io("cannot copy state file to", &tmp, e))?;
        if durable {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| WeirError::io("cannot fsync", &tmp, e))?;
        }
    }
    let (size, crc) = file_crc32(&tmp)?;
    fs::rename(&tmp, dest).map_err(|e| WeirError::io("cannot rename into place", dest, e))?;
    Ok((size, crc))
}

/// The length and CRC-32 of a file's bytes (read in 1 MiB pieces).
///
/// # Errors
/// [`WeirError::Io`] naming the file.
pub(crate) fn file_crc32(path: &Path) -> Result<(u64, u32)> {
    let read = || -> std::io::Result<(u64, u32)> {
        let mut file = fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut hasher, mut len) = (crc32fast::Hasher::new(), 0u64);
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                return Ok((len, hasher.finalize()));
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
    };
    read().map_err(|e| WeirError::io("cannot read state file", path, e))
}
