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
}

const MANIFEST: &str = "MANIFEST";

impl CheckpointStore {
    /// Opens (creating if needed) `<root>/<job>` and checks that it is writable.
    ///
    /// # Errors
    /// [`WeirError::Io`] naming the directory when it cannot be created or written.
    pub fn open(root: &Path, job: &str) -> Result<Self> {
        let dir = root.join(job);
        fs::create_dir_all(dir.join("shared"))
            .map_err(|e| WeirError::io("cannot create checkpoint directory", &dir, e))?;
        let probe = dir.join(".write-probe");
        fs::write(&probe, b"weir").map_err(|e| WeirError::io("checkpoint directory is not writable", &dir, e))?;
        let _ = fs::remove_file(&probe);
        Ok(CheckpointStore {
            job: job.to_string(),
            dir,
        })
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
        Ok(CheckpointStore {
            job: job.to_string(),
            dir,
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

    /// Ids of every `chk-<n>` directory, complete or not, ascending.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn checkpoint_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut ids = Vec::new();
        let entries =
            fs::read_dir(&self.dir).map_err(|e| WeirError::io("cannot list checkpoint directory", &self.dir, e))?;
        for entry in entries.flatten() {
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse().ok())
            {
                ids.push(CheckpointId(n));
            }
        }
        ids.sort();
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

    /// The checkpoint to restore from: the newest complete one that reads and
    /// checks. Damaged newer ones are skipped with a warning naming the path.
    ///
    /// # Errors
    /// [`WeirError::NoUsableCheckpoint`] when checkpoints exist but none is
    /// usable: starting empty would silently drop state.
    pub fn restore_point(&self) -> Result<Option<Manifest>> {
        Ok(self.restore_point_and_skipped()?.0)
    }

    /// Like [`CheckpointStore::restore_point`], also returning why each newer
    /// checkpoint was skipped (each message names the damaged path).
    ///
    /// # Errors
    /// As [`CheckpointStore::restore_point`].
    pub(crate) fn restore_point_and_skipped(&self) -> Result<(Option<Manifest>, Vec<String>)> {
        let ids = self.complete_ids()?;
        let mut problems = Vec::new();
        for id in ids.iter().rev() {
            match self.read_manifest(*id) {
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

    /// Writes `manifest` atomically (temporary file, fsync, rename, fsync of
    /// the directory), then points `LATEST` at it.
    ///
    /// # Errors
    /// [`WeirError::Io`] naming the file that could not be written.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let id = CheckpointId(manifest.checkpoint_id);
        let dir = self.checkpoint_path(id);
        fs::create_dir_all(&dir).map_err(|e| WeirError::io("cannot create checkpoint", &dir, e))?;
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| WeirError::Checkpoint {
            path: dir.clone(),
            message: format!("cannot encode manifest: {e}"),
        })?;
        write_atomic(&dir.join(MANIFEST), &bytes)?;
        crate::failpoint::hit("manifest-written");
        write_atomic(&self.dir.join("LATEST"), format!("chk-{}\n", id.0).as_bytes())
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

/// Puts an immutable file into the store at `dest`: a hard link when both
/// are on one file system (SSTs never change), otherwise a copy; either way
/// through a temporary name and a rename, so `dest` is whole or absent.
///
/// # Errors
/// [`WeirError::Io`] naming the file.
pub(crate) fn store_file(src: &Path, dest: &Path, durable: bool) -> Result<u64> {
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
    fs::rename(&tmp, dest).map_err(|e| WeirError::io("cannot rename into place", dest, e))?;
    fs::metadata(dest)
        .map(|m| m.len())
        .map_err(|e| WeirError::io("cannot stat", dest, e))
}
