//! The checkpoint store on a local (or mounted) file system.
//!
//! ```text
//! <checkpoint-dir>/<job>/
//!   shared/<instance-id>/<sst>   SST files, referenced by manifests
//!   chk-<n>/MANIFEST             the checkpoint (JSON, see manifest.rs)
//!   chk-<n>/<uid>-<subtask>/     private RocksDB metadata files of checkpoint n
//!   LATEST                       name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is complete exactly when its MANIFEST exists: the manifest is
//! written to a temporary file, fsynced and renamed, after every file it names
//! is durable. Recovery takes the newest readable manifest whose files are all
//! present, falling back to older ones with a warning naming the path.

use super::lock::DirLock;
use super::manifest::{Manifest, SubtaskState, MANIFEST_FORMAT};
use crate::error::{Result, WeirError};
use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use weir_operators::CheckpointId;

/// A job's checkpoint directory.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    job: String,
    dir: PathBuf,
    /// See [`CheckpointStore::incarnation`].
    incarnation: String,
}

const MANIFEST: &str = "MANIFEST";

/// The file that holds a store's incarnation id.
const INCARNATION: &str = "INCARNATION";

/// The incarnation of a store created by a weir that did not write one yet:
/// its output and markers keep their old names.
pub const LEGACY_INCARNATION: &str = "legacy";

impl CheckpointStore {
    /// Opens (creating if needed) `<root>/<job>` and checks that it is writable.
    ///
    /// # Errors
    /// [`WeirError::Io`] naming the directory when it cannot be created or written.
    pub fn open(root: &Path, job: &str) -> Result<Self> {
        let dir = root.join(job);
        create_dir_durable(&dir.join("shared"))?;
        let probe = dir.join(".write-probe");
        fs::write(&probe, b"weir").map_err(|e| WeirError::io("checkpoint directory is not writable", &dir, e))?;
        let _ = fs::remove_file(&probe);
        let mut store = CheckpointStore {
            job: job.to_string(),
            dir,
            incarnation: String::new(),
        };
        store.incarnation = store.read_or_create_incarnation()?;
        Ok(store)
    }

    /// This store's incarnation: a random id given when the store was
    /// created. Output part names and Kafka commit markers carry it, so the
    /// output and markers of another incarnation (a wiped or different
    /// checkpoint directory, a reused job name) are never taken for this
    /// one's. A store older than incarnations is [`LEGACY_INCARNATION`].
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    fn read_or_create_incarnation(&self) -> Result<String> {
        let path = self.dir.join(INCARNATION);
        if let Ok(text) = fs::read_to_string(&path) {
            let id = text.trim();
            if !id.is_empty() {
                return Ok(id.to_string());
            }
        }
        // A store with checkpoints but no id was made before ids existed.
        let id = if self.checkpoint_ids()?.is_empty() {
            random_id()
        } else {
            LEGACY_INCARNATION.to_string()
        };
        match create_only(&path, format!("{id}\n").as_bytes()) {
            Ok(()) => Ok(id),
            // Created meanwhile by another opener: theirs stands.
            Err(WeirError::Fenced { .. }) => Ok(fs::read_to_string(&path)
                .map_err(|e| WeirError::io("cannot read", &path, e))?
                .trim()
                .to_string()),
            Err(e) => Err(e),
        }
    }

    /// Opens the store of a job that has run before, for tools that only
    /// look (`weir checkpoints`, `weir offsets`): nothing is created.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] when `<root>/<job>` does not exist, naming
    /// what was looked for and the jobs `root` does hold.
    pub fn open_existing(root: &Path, job: &str) -> Result<Self> {
        let dir = root.join(job);
        if !dir.is_dir() {
            let jobs = Self::jobs_in(root);
            let holds = if !root.is_dir() {
                "the directory does not exist".to_string()
            } else if jobs.is_empty() {
                "it holds no job's checkpoints".to_string()
            } else {
                format!("it holds the checkpoints of job(s): {}", jobs.join(", "))
            };
            return Err(WeirError::Checkpoint {
                path: dir,
                message: format!("no checkpoints of job `{job}` in {} ({holds})", root.display()),
            });
        }
        let incarnation = fs::read_to_string(dir.join(INCARNATION))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| LEGACY_INCARNATION.to_string());
        Ok(CheckpointStore {
            job: job.to_string(),
            dir,
            incarnation,
        })
    }

    /// The names of the jobs with a checkpoint store under `root` (sorted).
    pub fn jobs_in(root: &Path) -> Vec<String> {
        let Ok(entries) = fs::read_dir(root) else {
            return Vec::new();
        };
        let mut jobs: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("shared").is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        jobs.sort();
        jobs
    }

    /// The job's directory in the store.
    pub fn job_dir(&self) -> &Path {
        &self.dir
    }

    /// `chk-<id>` directory.
    pub fn checkpoint_path(&self, id: CheckpointId) -> PathBuf {
        self.dir.join(format!("chk-{}", id.0))
    }

    /// Where a task's private files of checkpoint `id` go (relative path too).
    pub(crate) fn private_dir(&self, id: CheckpointId, task: &str) -> (PathBuf, String) {
        let rel = format!("chk-{}/{}", id.0, task);
        (self.dir.join(&rel), rel)
    }

    /// Where an instance's shared SSTs go (relative path too).
    pub(crate) fn shared_dir(&self, instance: &str) -> (PathBuf, String) {
        let rel = format!("shared/{instance}");
        (self.dir.join(&rel), rel)
    }

    /// Ids of every `chk-<n>` directory, complete or not, and of those moved
    /// aside as `chk-<n>.<anything>`, ascending, without repeats.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn checkpoint_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut ids = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(|e| WeirError::io("cannot list checkpoint directory", &self.dir, e))?;
        for entry in entries.flatten() {
            // `chk-<n>` and anything named after it (`chk-7.damaged`, moved
            // aside by hand): an id once used is never used again, or a
            // Kafka commit marker of the old checkpoint n would be taken for
            // the new one's.
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("chk-")) else {
                continue;
            };
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if let Ok(n) = rest[..digits].parse() {
                ids.push(CheckpointId(n));
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Ids of complete checkpoints (a MANIFEST exists), ascending.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn complete_ids(&self) -> Result<Vec<CheckpointId>> {
        Ok(self
            .checkpoint_ids()?
            .into_iter()
            .filter(|id| self.checkpoint_path(*id).join(MANIFEST).exists())
            .collect())
    }

    /// Reads and checks one manifest: it parses, belongs to this job, and
    /// every file it names exists with the recorded size.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] naming the manifest or the missing file.
    pub fn read_manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let path = self.checkpoint_path(id).join(MANIFEST);
        let bytes = fs::read(&path).map_err(|e| WeirError::io("cannot read manifest", &path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| WeirError::Checkpoint {
            path: path.clone(),
            message: format!("damaged manifest: {e}"),
        })?;
        let bad = |message: String| {
            Err(WeirError::Checkpoint {
                path: path.clone(),
                message,
            })
        };
        if manifest.format != MANIFEST_FORMAT {
            return bad(format!(
                "manifest format {} is not supported (this weir reads {MANIFEST_FORMAT})",
                manifest.format
            ));
        }
        if manifest.job != self.job || manifest.checkpoint_id != id.0 {
            return bad(format!(
                "manifest is for job `{}` checkpoint {}",
                manifest.job, manifest.checkpoint_id
            ));
        }
        for (uid, op) in &manifest.operators {
            for state in &op.subtasks {
                if let SubtaskState::File { path: rel, size } = state {
                    let p = self.dir.join(rel);
                    match fs::metadata(&p) {
                        Ok(m) if m.len() == *size => {}
                        _ => {
                            return bad(format!(
                                "state file {} of operator `{uid}` is missing or has the wrong size",
                                p.display()
                            ))
                        }
                    }
                }
                if let SubtaskState::Rocks(handle) = state {
                    for file in handle.shared.iter().chain(&handle.private) {
                        let p = self.dir.join(&file.path);
                        match fs::metadata(&p) {
                            Ok(m) if m.len() == file.size => {}
                            Ok(m) => {
                                return bad(format!(
                                    "state file {} of operator `{uid}` has {} bytes, expected {}",
                                    p.display(),
                                    m.len(),
                                    file.size
                                ))
                            }
                            Err(e) => {
                                return bad(format!(
                                    "state file {} of operator `{uid}` is missing: {e}",
                                    p.display()
                                ))
                            }
                        }
                    }
                }
            }
        }
        Ok(manifest)
    }

    /// Reads every state file `manifest` records a checksum for and compares:
    /// a file of the right size with other bytes (a flipped bit, a torn
    /// write) makes the checkpoint damaged. Done for the checkpoint being
    /// restored only (it reads all its files).
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] naming the corrupt file.
    pub fn verify_contents(&self, manifest: &Manifest) -> Result<()> {
        let id = CheckpointId(manifest.checkpoint_id);
        for (uid, op) in &manifest.operators {
            for state in &op.subtasks {
                let SubtaskState::Rocks(handle) = state else { continue };
                for file in handle.shared.iter().chain(&handle.private) {
                    let Some(expected) = file.crc32 else { continue };
                    let p = self.dir.join(&file.path);
                    let (_, found) = file_crc32(&p)?;
                    if found != expected {
                        return Err(WeirError::Checkpoint {
                            path: self.checkpoint_path(id).join(MANIFEST),
                            message: format!(
                                "state file {} of operator `{uid}` has the recorded size but another checksum \
                                 (crc32 {found:08x}, recorded {expected:08x}): it is corrupt",
                                p.display()
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The checkpoint a job would restore from, as tools see it: the newest
    /// complete one whose manifest reads and whose files exist with their
    /// sizes (a restore also verifies their checksums). Damaged newer ones are skipped with a warning naming the path.
    ///
    /// # Errors
    /// [`WeirError::NoUsableCheckpoint`] when checkpoints exist but none is
    /// usable: starting empty would silently drop state.
    pub fn restore_point(&self) -> Result<Option<Manifest>> {
        Ok(self.newest_usable(false)?.0)
    }

    /// Like [`CheckpointStore::restore_point`], also returning why each newer
    /// checkpoint was skipped (each message names the damaged path).
    ///
    /// # Errors
    /// As [`CheckpointStore::restore_point`].
    pub(crate) fn restore_point_and_skipped(&self) -> Result<(Option<Manifest>, Vec<String>)> {
        self.newest_usable(true)
    }

    /// The newest checkpoint that reads and checks (its files' contents too
    /// when `verify`: a restore reads them all; a tool that only looks does
    /// not), and why each newer one was skipped.
    fn newest_usable(&self, verify: bool) -> Result<(Option<Manifest>, Vec<String>)> {
        let ids = self.complete_ids()?;
        let mut problems = Vec::new();
        for id in ids.iter().rev() {
            let checked = self.read_manifest(*id).and_then(|m| {
                if verify {
                    self.verify_contents(&m).map(|()| m)
                } else {
                    Ok(m)
                }
            });
            match checked {
                Ok(m) => {
                    for p in &problems {
                        tracing::warn!("skipped damaged checkpoint: {p}");
                    }
                    return Ok((Some(m), problems));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if problems.is_empty() {
            Ok((None, problems))
        } else {
            Err(WeirError::NoUsableCheckpoint {
                dir: self.dir.clone(),
                count: problems.len(),
                details: problems.join("\n"),
            })
        }
    }

    /// Takes the store's lock for a run (or `weir checkpoints gc`): one
    /// writer per store. Hold it until the run ends.
    ///
    /// # Errors
    /// [`WeirError::StoreInUse`] naming the directory and the holder.
    pub fn lock(&self) -> Result<DirLock> {
        DirLock::acquire(&self.dir, &self.job)
    }

    /// Reserves checkpoint `id` for this run: its directory is created only
    /// if absent, so ids are never reused (also after a crash, output staged
    /// for an abandoned checkpoint is never taken for a later one's), and a
    /// second writer that picked the same id learns it is fenced off.
    ///
    /// # Errors
    /// [`WeirError::Fenced`] when the directory exists; [`WeirError::Io`].
    pub(crate) fn reserve(&self, id: CheckpointId) -> Result<()> {
        let dir = self.checkpoint_path(id);
        match fs::create_dir(&dir) {
            // The entry outlives a power cut before the manifest does.
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(WeirError::Fenced {
                what: format!("checkpoint {}", dir.display()),
            }),
            Err(e) => Err(WeirError::io("cannot create checkpoint directory", &dir, e)),
        }
    }

    /// Commits `manifest`: the checkpoint exists from the moment its MANIFEST
    /// does. The file is written aside, synced, then linked into place only
    /// if no MANIFEST exists (create-only, as an object store's conditional
    /// put), and the directory is synced; `LATEST` then names it (for people
    /// and tools; recovery lists the checkpoints instead of trusting it).
    ///
    /// # Errors
    /// [`WeirError::Fenced`] when another writer committed this checkpoint
    /// first; [`WeirError::Io`] naming the file that could not be written.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let id = CheckpointId(manifest.checkpoint_id);
        let dir = self.checkpoint_path(id);
        fs::create_dir_all(&dir).map_err(|e| WeirError::io("cannot create checkpoint", &dir, e))?;
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| WeirError::Checkpoint {
            path: dir.clone(),
            message: format!("cannot encode manifest: {e}"),
        })?;
        create_only(&dir.join(MANIFEST), &bytes)?;
        crate::failpoint::hit("manifest-written");
        // The checkpoint exists now; LATEST is only a pointer for people.
        if let Err(e) = write_atomic(&self.dir.join("LATEST"), format!("chk-{}\n", id.0).as_bytes()) {
            tracing::warn!("checkpoint {id} is complete, but LATEST was not updated: {e}");
        }
        Ok(())
    }

    /// Deletes the checkpoints in `remove`, any incomplete checkpoint older
    /// than the newest in `keep`, and every shared file that no manifest in
    /// `keep` references. Call only while no checkpoint is in flight.
    ///
    /// # Errors
    /// When a retained manifest cannot be read (nothing is deleted then).
    pub fn prune(&self, remove: &[CheckpointId], keep: &[CheckpointId]) -> Result<()> {
        let mut referenced = HashSet::new();
        for id in keep {
            let m = self.read_manifest(*id)?;
            for op in m.operators.values() {
                for s in &op.subtasks {
                    if let SubtaskState::Rocks(h) = s {
                        referenced.extend(h.shared.iter().map(|f| f.path.clone()));
                    }
                }
            }
        }
        let newest_kept = keep.iter().max().copied().unwrap_or(CheckpointId(0));
        let complete: HashSet<CheckpointId> = keep.iter().copied().collect();
        for id in self.checkpoint_ids()? {
            if remove.contains(&id) || (id < newest_kept && !complete.contains(&id)) {
                let p = self.checkpoint_path(id);
                if let Err(e) = fs::remove_dir_all(&p) {
                    tracing::warn!("cannot delete old checkpoint {}: {e}", p.display());
                }
            }
        }
        let shared = self.dir.join("shared");
        for instance in fs::read_dir(&shared)
            .map_err(|e| WeirError::io("cannot list", &shared, e))?
            .flatten()
        {
            let Ok(files) = fs::read_dir(instance.path()) else {
                continue;
            };
            let mut left = 0;
            for f in files.flatten() {
                let rel = format!(
                    "shared/{}/{}",
                    instance.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                if referenced.contains(&rel) {
                    left += 1;
                } else if let Err(e) = fs::remove_file(f.path()) {
                    tracing::warn!("cannot delete unreferenced state file {}: {e}", f.path().display());
                }
            }
            if left == 0 {
                let _ = fs::remove_dir(instance.path());
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn manifest(job: &str, id: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            job: job.into(),
            checkpoint_id: id,
            created_unix_ms: 0,
            final_checkpoint: false,
            drained: false,
            operators: Default::default(),
        }
    }

    #[test]
    fn of_two_writers_of_one_checkpoint_id_the_second_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            CheckpointStore::open(dir.path(), "job").unwrap(),
            CheckpointStore::open(dir.path(), "job").unwrap(),
        );
        a.reserve(CheckpointId(1)).unwrap();
        assert!(matches!(b.reserve(CheckpointId(1)), Err(WeirError::Fenced { .. })));
        a.write_manifest(&manifest("job", 1)).unwrap();
        let mut other = manifest("job", 1);
        other.final_checkpoint = true;
        let err = b.write_manifest(&other).unwrap_err();
        assert!(matches!(err, WeirError::Fenced { .. }), "{err}");
        assert_eq!(
            a.read_manifest(CheckpointId(1)).unwrap(),
            manifest("job", 1),
            "the first manifest stays as it was written"
        );
        assert_eq!(a.complete_ids().unwrap(), [CheckpointId(1)]);
    }

    #[test]
    fn a_checkpoint_moved_aside_keeps_its_id_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "job").unwrap();
        for id in [1, 2] {
            store.reserve(CheckpointId(id)).unwrap();
            store.write_manifest(&manifest("job", id)).unwrap();
        }
        fs::rename(
            store.checkpoint_path(CheckpointId(2)),
            store.job_dir().join("chk-2.damaged"),
        )
        .unwrap();
        assert_eq!(store.checkpoint_ids().unwrap(), [CheckpointId(1), CheckpointId(2)]);
        assert_eq!(store.complete_ids().unwrap(), [CheckpointId(1)]);
    }

    #[test]
    fn a_store_has_one_lock_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "job").unwrap();
        let held = store.lock().unwrap();
        assert!(matches!(store.lock(), Err(WeirError::StoreInUse { .. })));
        drop(held);
        store.lock().unwrap();
    }
}
