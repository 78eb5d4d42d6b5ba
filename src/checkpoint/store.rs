//! The checkpoint store: a directory on a local (or mounted) file system,
//! or a prefix of an object store (`s3://bucket/prefix`), laid out alike.
//!
//! ```text
//! <checkpoint-dir>/<job>/
//!   INCARNATION                  random id of this store (output names carry it)
//!   shared/<instance-id>/<sst>   SST files, referenced by manifests
//!   chk-<n>/MANIFEST             the checkpoint (JSON, see manifest.rs)
//!   chk-<n>/<uid>-<subtask>/     private RocksDB metadata files of checkpoint n
//!   LATEST                       name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is complete exactly when its MANIFEST exists: the manifest is
//! created (create-only: a file system's hard link, an object store's
//! `If-None-Match: *` put) after every file it names is durable. Recovery
//! lists the checkpoints and takes the newest readable manifest whose files
//! are all present, falling back to older ones with a warning naming the
//! path; `LATEST` is for people, never trusted.

mod owner;

use super::backend::Backend;
use super::local::{create_dir_durable, random_id, LocalBackend};
use super::manifest::{Manifest, SubtaskState, MANIFEST_FORMAT};
use super::object::{is_object_url, ObjectBackend};
use crate::config::StoreOptions;
use crate::error::{Result, WeirError};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use weir_operators::CheckpointId;

/// A job's checkpoint store.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    job: String,
    backend: Arc<dyn Backend>,
    /// See [`CheckpointStore::incarnation`].
    incarnation: String,
    /// The ownership this process claimed of an object store (see
    /// [`CheckpointStore::lock`]); 0 before a claim. Shared by clones.
    owner: Arc<AtomicU64>,
    /// What snapshots put into the store since [`CheckpointStore::take_upload_stats`].
    traffic: Arc<Traffic>,
    /// The run id of the RocksDB instances this process writes, once set:
    /// pruning leaves their shared files alone (see [`CheckpointStore::prune`]).
    live_run: Arc<std::sync::OnceLock<String>>,
}

/// What the snapshots of one checkpoint put into the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct UploadStats {
    /// New files put into the store.
    pub files_uploaded: u64,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Files referenced again, already in the store (incremental checkpoints).
    pub files_reused: u64,
    /// Time spent putting files, summed over the snapshot threads.
    pub upload_seconds: f64,
}

#[derive(Debug, Default)]
struct Traffic {
    files: AtomicU64,
    bytes: AtomicU64,
    reused: AtomicU64,
    micros: AtomicU64,
}

const MANIFEST: &str = "MANIFEST";

/// The file that holds a store's incarnation id.
const INCARNATION: &str = "INCARNATION";

/// The incarnation of a store created by a weir that did not write one yet:
/// its output and markers keep their old names.
pub const LEGACY_INCARNATION: &str = "legacy";

/// `root` as a local directory: a plain path, or a `file://` URL.
fn local_path(root: &Path) -> PathBuf {
    match root.to_str().and_then(|r| r.strip_prefix("file://")) {
        Some(path) => PathBuf::from(path),
        None => root.to_path_buf(),
    }
}

/// `root` as an object store URL (scheme in lower case), when it is one.
fn object_url(root: &Path) -> Option<String> {
    let root = root.to_str()?;
    let (scheme, rest) = root.split_once("://")?;
    let url = format!("{}://{rest}", scheme.to_ascii_lowercase());
    is_object_url(&url).then_some(url)
}

fn backend_for(root: &Path, job: &str, options: &StoreOptions) -> Result<Arc<dyn Backend>> {
    // Another scheme would otherwise become a local directory named `gs:`.
    // (A URL scheme is a letter then letters, digits, `+`, `-`, `.`: a path
    // like `./a://b` is a path.)
    let is_scheme = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    };
    if let Some((scheme, _)) = root
        .to_str()
        .and_then(|r| r.split_once("://"))
        .filter(|(s, _)| is_scheme(s))
    {
        let scheme = scheme.to_ascii_lowercase();
        if !is_object_url(&format!("{scheme}://")) && scheme != "file" {
            return Err(WeirError::Config {
                key: "checkpoint_dir".into(),
                message: format!(
                    "`{}`: {scheme}:// stores are not supported; use a directory, file://, s3:// (also any \
                     S3-compatible server through AWS_ENDPOINT_URL) or az://",
                    crate::config::redact_url(&root.display().to_string())
                ),
            });
        }
    }
    Ok(match object_url(root) {
        Some(url) => Arc::new(ObjectBackend::open(&url, job, options)?),
        None => Arc::new(LocalBackend::new(local_path(root).join(job))),
    })
}

impl CheckpointStore {
    /// Opens (creating if needed) the store of `job` under `root` (a
    /// directory, `file://...` or `s3://bucket/prefix`) and checks that it
    /// is writable.
    ///
    /// # Errors
    /// [`WeirError::Io`] naming the directory when it cannot be created or
    /// written; [`WeirError::Checkpoint`] naming the URL when the object
    /// store refuses a write; [`WeirError::Config`] for a malformed URL.
    pub fn open(root: &Path, job: &str) -> Result<Self> {
        Self::open_with(root, job, &StoreOptions::default())
    }

    /// [`CheckpointStore::open`] with settings for an object store (over
    /// the `AWS_*` environment variables).
    ///
    /// # Errors
    /// As [`CheckpointStore::open`]; [`WeirError::Config`] naming an
    /// unknown setting.
    pub fn open_with(root: &Path, job: &str, options: &StoreOptions) -> Result<Self> {
        let backend = backend_for(root, job, options)?;
        if let Some(dir) = backend.local_root() {
            create_dir_durable(&dir.join("shared"))?;
        }
        let probe = ".write-probe";
        backend.put(probe, b"weir").map_err(|e| match e {
            WeirError::Io { path, source, .. } => WeirError::io("checkpoint directory is not writable", path, source),
            other => other,
        })?;
        let _ = backend.delete(probe);
        let mut store = CheckpointStore {
            job: job.to_string(),
            backend,
            incarnation: String::new(),
            owner: Arc::default(),
            traffic: Arc::default(),
            live_run: Arc::default(),
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
        if let Some(bytes) = self.backend.get(INCARNATION)? {
            let text = String::from_utf8_lossy(&bytes);
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
        match self.backend.create(INCARNATION, format!("{id}\n").as_bytes()) {
            Ok(()) => Ok(id),
            // Created meanwhile by another opener: theirs stands.
            Err(WeirError::Fenced { .. }) => Ok(String::from_utf8_lossy(&self.read(INCARNATION)?).trim().to_string()),
            Err(e) => Err(e),
        }
    }

    /// Opens the store of a job that has run before, for tools that only
    /// look (`weir checkpoints`, `weir offsets`): nothing is created.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] when the job has no store under `root`,
    /// naming what was looked for and the jobs `root` does hold.
    pub fn open_existing(root: &Path, job: &str) -> Result<Self> {
        Self::open_existing_with(root, job, &StoreOptions::default())
    }

    /// [`CheckpointStore::open_existing`] with the object store's settings
    /// of a [`crate::JobConfig`].
    ///
    /// # Errors
    /// As [`CheckpointStore::open_existing`].
    pub fn open_existing_with(root: &Path, job: &str, options: &StoreOptions) -> Result<Self> {
        let backend = backend_for(root, job, options)?;
        let exists = match backend.local_root() {
            Some(dir) => dir.is_dir(),
            None => !backend.list("")?.is_empty(),
        };
        if !exists {
            let jobs = Self::jobs_in(root);
            let holds = if backend.local_root().is_some() && !local_path(root).is_dir() {
                "the directory does not exist".to_string()
            } else if jobs.is_empty() {
                "it holds no job's checkpoints".to_string()
            } else {
                format!("it holds the checkpoints of job(s): {}", jobs.join(", "))
            };
            return Err(WeirError::Checkpoint {
                path: backend.location(""),
                message: format!("no checkpoints of job `{job}` in {} ({holds})", root.display()),
            });
        }
        let incarnation = backend
            .get(INCARNATION)
            .ok()
            .flatten()
            .map(|t| String::from_utf8_lossy(&t).trim().to_string())
            .unwrap_or_else(|| LEGACY_INCARNATION.to_string());
        Ok(CheckpointStore {
            job: job.to_string(),
            backend,
            incarnation,
            owner: Arc::default(),
            traffic: Arc::default(),
            live_run: Arc::default(),
        })
    }

    /// The names of the jobs with a checkpoint store under `root` (sorted).
    pub fn jobs_in(root: &Path) -> Vec<String> {
        let Ok(backend) = backend_for(root, "", &StoreOptions::default()) else {
            return Vec::new();
        };
        let Ok(names) = backend.list("") else {
            return Vec::new();
        };
        let mut jobs: Vec<String> = names
            .into_iter()
            .filter(|job| {
                backend
                    .list(job)
                    .is_ok_and(|entries| entries.iter().any(|e| e == "shared" || e == INCARNATION))
            })
            .collect();
        jobs.sort();
        jobs
    }

    /// Where the job's checkpoints are: its directory, or its URL.
    pub fn job_dir(&self) -> PathBuf {
        self.backend.location("")
    }

    /// The job's directory when the store is on a file system (`None` on
    /// an object store).
    pub fn local_dir(&self) -> Option<&Path> {
        self.backend.local_root()
    }

    /// Where checkpoint `id` is: its directory, or its URL prefix.
    pub fn checkpoint_path(&self, id: CheckpointId) -> PathBuf {
        self.backend.location(&format!("chk-{}", id.0))
    }

    /// Where a store path (as manifests record them) is: a path or a URL.
    pub fn location_of(&self, rel: &str) -> PathBuf {
        self.backend.location(rel)
    }

    /// The store path of a task's private files of checkpoint `id`.
    pub(crate) fn private_rel(&self, id: CheckpointId, task: &str) -> String {
        format!("chk-{}/{task}", id.0)
    }

    /// The store path of an instance's shared SSTs.
    pub(crate) fn shared_rel(&self, instance: &str) -> String {
        format!("shared/{instance}")
    }

    /// Puts immutable local files into the store (`(src, store path)`), in
    /// parallel where the store gains from it, and makes them durable.
    /// Returns each file's size and CRC-32.
    pub(crate) fn put_files(&self, files: &[(PathBuf, String)], dirs: &[&str]) -> Result<Vec<(u64, u32)>> {
        let started = std::time::Instant::now();
        let stored = self.backend.put_files(files)?;
        for dir in dirs {
            self.backend.sync(dir)?;
        }
        let t = &self.traffic;
        t.files.fetch_add(stored.len() as u64, Ordering::Relaxed);
        t.bytes
            .fetch_add(stored.iter().map(|(size, _)| size).sum(), Ordering::Relaxed);
        t.micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(stored)
    }

    /// Names the run whose instances (`<task>-<run>`) this process writes:
    /// their shared files are never pruned while it runs, so a snapshot may
    /// reference a file it put earlier without asking the store whether it
    /// is still there (a request per file on an object store).
    pub(crate) fn set_live_run(&self, run: &str) {
        let _ = self.live_run.set(run.to_string());
    }

    /// Counts files a snapshot referenced again instead of putting them.
    pub(crate) fn note_reused(&self, files: u64) {
        self.traffic.reused.fetch_add(files, Ordering::Relaxed);
    }

    /// What snapshots put into the store since the last call (the driver
    /// takes it when a checkpoint completes).
    pub(crate) fn take_upload_stats(&self) -> UploadStats {
        let t = &self.traffic;
        UploadStats {
            files_uploaded: t.files.swap(0, Ordering::Relaxed),
            bytes_uploaded: t.bytes.swap(0, Ordering::Relaxed),
            files_reused: t.reused.swap(0, Ordering::Relaxed),
            upload_seconds: t.micros.swap(0, Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Writes a small file of a checkpoint (atomically, replacing).
    pub(crate) fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.backend.put(rel, bytes)
    }

    /// Reads a file of the store.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] naming it when it is missing.
    pub(crate) fn read(&self, rel: &str) -> Result<Vec<u8>> {
        self.backend.get(rel)?.ok_or_else(|| WeirError::Checkpoint {
            path: self.backend.location(rel),
            message: "missing".into(),
        })
    }

    /// Makes the stored file `rel` available as the local file `dest`,
    /// checking its bytes against `crc32` when the fetch read them.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] naming the file when its bytes differ.
    pub(crate) fn fetch(&self, rel: &str, dest: &Path, crc32: Option<u32>) -> Result<()> {
        crate::failpoint::hit("restore-fetch");
        if let (Some(found), Some(expected)) = (self.backend.fetch(rel, dest)?, crc32) {
            if found != expected {
                return Err(WeirError::Checkpoint {
                    path: self.backend.location(rel),
                    message: format!(
                        "state file has another checksum than recorded (crc32 {found:08x}, recorded \
                         {expected:08x}): it is corrupt"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Ids of every `chk-<n>` directory, complete or not, and of those moved
    /// aside as `chk-<n>.<anything>`, ascending, without repeats.
    ///
    /// # Errors
    /// When the store cannot be listed.
    pub fn checkpoint_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut ids = Vec::new();
        for name in self.backend.list("")? {
            // `chk-<n>` and anything named after it (`chk-7.damaged`, moved
            // aside by hand): an id once used is never used again, or a
            // Kafka commit marker of the old checkpoint n would be taken for
            // the new one's.
            let Some(rest) = name.strip_prefix("chk-") else {
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

    fn manifest_rel(id: CheckpointId) -> String {
        format!("chk-{}/{MANIFEST}", id.0)
    }

    /// Ids of complete checkpoints (a MANIFEST exists), ascending.
    ///
    /// # Errors
    /// When the store cannot be listed.
    pub fn complete_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut complete = Vec::new();
        for id in self.checkpoint_ids()? {
            if let Some(size) = self.backend.size(&Self::manifest_rel(id))? {
                if !self.is_tombstone(id, size)? {
                    complete.push(id);
                }
            }
        }
        Ok(complete)
    }

    /// Reads and checks one manifest: it parses, belongs to this job, and
    /// every file it names exists with the recorded size.
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] naming the manifest or the missing file.
    pub fn read_manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let manifest = self.parse_manifest(id)?;
        let path = self.backend.location(&Self::manifest_rel(id));
        let bad = |message: String| {
            Err(WeirError::Checkpoint {
                path: path.clone(),
                message,
            })
        };
        for (uid, op) in &manifest.operators {
            for state in &op.subtasks {
                let files: Vec<(&str, u64)> = match state {
                    SubtaskState::File { path: rel, size } => vec![(rel.as_str(), *size)],
                    SubtaskState::Rocks(handle) => handle
                        .shared
                        .iter()
                        .chain(&handle.private)
                        .map(|f| (f.path.as_str(), f.size))
                        .collect(),
                    SubtaskState::Bytes { .. } => Vec::new(),
                };
                for (rel, size) in files {
                    let p = self.backend.location(rel);
                    match self.backend.size(rel) {
                        Ok(Some(found)) if found == size => {}
                        Ok(Some(found)) => {
                            return bad(format!(
                                "state file {} of operator `{uid}` has {found} bytes, expected {size}",
                                p.display()
                            ))
                        }
                        Ok(None) => return bad(format!("state file {} of operator `{uid}` is missing", p.display())),
                        Err(e) => {
                            return bad(format!(
                                "state file {} of operator `{uid}` cannot be looked at: {e}",
                                p.display()
                            ))
                        }
                    }
                }
            }
        }
        Ok(manifest)
    }

    /// Reads one manifest and checks that it parses and belongs to this
    /// job, without looking at the files it names.
    fn parse_manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let rel = Self::manifest_rel(id);
        let bad = |message: String| {
            Err(WeirError::Checkpoint {
                path: self.backend.location(&rel),
                message,
            })
        };
        let Some(bytes) = self.backend.get(&rel)? else {
            return bad("cannot read manifest: it is missing".into());
        };
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => return bad(format!("damaged manifest: {e}")),
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
        Ok(manifest)
    }

    /// Reads every state file `manifest` records a checksum for and compares:
    /// a file of the right size with other bytes (a flipped bit, a torn
    /// write) makes the checkpoint damaged. Done for the checkpoint being
    /// restored only (it reads all its files). On an object store the
    /// bytes are checked while they are downloaded for the restore instead.
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
                    let Some(found) = self.backend.checksum(&file.path)? else {
                        continue;
                    };
                    if found != expected {
                        return Err(WeirError::Checkpoint {
                            path: self.backend.location(&Self::manifest_rel(id)),
                            message: format!(
                                "state file {} of operator `{uid}` has the recorded size but another checksum \
                                 (crc32 {found:08x}, recorded {expected:08x}): it is corrupt",
                                self.backend.location(&file.path).display()
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
                dir: self.job_dir(),
                count: problems.len(),
                details: problems.join("\n"),
            })
        }
    }

    /// Reserves checkpoint `id` for this run: its directory (its marker
    /// object) is created only if absent, so ids are never reused (also
    /// after a crash, output staged for an abandoned checkpoint is never
    /// taken for a later one's), and a second writer that picked the same
    /// id learns it is fenced off.
    ///
    /// # Errors
    /// [`WeirError::Fenced`] when it exists; [`WeirError::Io`].
    pub(crate) fn reserve(&self, id: CheckpointId) -> Result<()> {
        self.check_owner()?;
        self.backend.reserve(&format!("chk-{}", id.0))
    }

    /// Commits `manifest`: the checkpoint exists from the moment its MANIFEST
    /// does. It is created only if no MANIFEST exists (a file system's hard
    /// link of a synced file, an object store's conditional put); `LATEST`
    /// then names it (for people and tools; recovery lists the checkpoints
    /// instead of trusting it).
    ///
    /// # Errors
    /// [`WeirError::Fenced`] when another writer committed this checkpoint
    /// first; [`WeirError::Io`] naming the file that could not be written.
    pub(crate) fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let id = CheckpointId(manifest.checkpoint_id);
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| WeirError::Checkpoint {
            path: self.checkpoint_path(id),
            message: format!("cannot encode manifest: {e}"),
        })?;
        crate::failpoint::hit("before-manifest");
        self.check_owner()?;
        self.backend.create(&Self::manifest_rel(id), &bytes)?;
        crate::failpoint::hit("manifest-written");
        // The checkpoint exists now; LATEST is only a pointer for people.
        if let Err(e) = self.backend.put("LATEST", format!("chk-{}\n", id.0).as_bytes()) {
            tracing::warn!("checkpoint {id} is complete, but LATEST was not updated: {e}");
        }
        Ok(())
    }

    /// Deletes the checkpoints in `remove`, any incomplete checkpoint older
    /// than the newest in `keep`, and every shared file that no manifest in
    /// `keep` references, except those of the instances of this process's
    /// live run (a later snapshot may reference a file an aborted one put;
    /// the next run's pruning takes what stays unreferenced). Call only
    /// while no checkpoint is in flight.
    ///
    /// # Errors
    /// When a retained manifest cannot be read (nothing is deleted then).
    pub fn prune(&self, remove: &[CheckpointId], keep: &[CheckpointId]) -> Result<()> {
        self.prune_with(remove, keep, true)
    }

    /// [`CheckpointStore::prune`] by a running job. On an object store it
    /// deletes only in the instance directories that the manifests it reads
    /// name: a directory no manifest names may be a newer writer's first
    /// uploads (this job may be a zombie that has not learnt it is fenced),
    /// so such leftovers of crashed runs wait for `weir checkpoints gc`.
    pub(crate) fn prune_in_run(&self, remove: &[CheckpointId], keep: &[CheckpointId]) -> Result<()> {
        self.prune_with(remove, keep, self.backend.local_root().is_some())
    }

    fn prune_with(&self, remove: &[CheckpointId], keep: &[CheckpointId], orphans: bool) -> Result<()> {
        self.check_owner()?;
        let mut referenced = HashSet::new();
        let mut named = HashSet::new();
        for (id, kept) in keep
            .iter()
            .map(|id| (id, true))
            .chain(remove.iter().map(|id| (id, false)))
        {
            let m = match self.parse_manifest(*id) {
                Ok(m) => m,
                // A removed checkpoint that does not read names nothing.
                Err(_) if !kept => continue,
                Err(e) => return Err(e),
            };
            for op in m.operators.values() {
                for s in &op.subtasks {
                    if let SubtaskState::Rocks(h) = s {
                        named.insert(h.instance.clone());
                        // Reused files live in the directory of the instance that put them.
                        named.extend(
                            h.shared
                                .iter()
                                .filter_map(|f| f.path.split('/').nth(1).map(str::to_string)),
                        );
                        if kept {
                            referenced.extend(h.shared.iter().map(|f| f.path.clone()));
                        }
                    }
                }
            }
        }
        let newest_kept = keep.iter().max().copied().unwrap_or(CheckpointId(0));
        let complete: HashSet<CheckpointId> = keep.iter().copied().collect();
        for id in self.checkpoint_ids()? {
            if remove.contains(&id) || (id < newest_kept && !complete.contains(&id)) {
                let rel = format!("chk-{}", id.0);
                if let Err(e) = self.backend.delete_dir(&rel) {
                    tracing::warn!(
                        "cannot delete old checkpoint {}: {e}",
                        self.backend.location(&rel).display()
                    );
                }
            }
        }
        let live = self.live_run.get().map(|run| format!("-{run}"));
        for instance in self.backend.list("shared")? {
            if live.as_ref().is_some_and(|suffix| instance.ends_with(suffix.as_str()))
                || (!orphans && !named.contains(&instance))
            {
                continue;
            }
            // Each directory's deletions after a fresh look at the claims.
            self.check_owner()?;
            let dir = format!("shared/{instance}");
            let mut left = 0;
            for rel in self.backend.list_files(&dir)? {
                if referenced.contains(&rel) {
                    left += 1;
                } else if let Err(e) = self.backend.delete(&rel) {
                    tracing::warn!("cannot delete unreferenced state file: {e}");
                }
            }
            if left == 0 {
                let _ = self.backend.delete_dir(&dir);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;

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
    fn a_store_url_of_another_scheme_is_refused_not_made_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("gs://{}/bucket", dir.path().display());
        let e = CheckpointStore::open(Path::new(&url), "job").unwrap_err();
        assert!(e.to_string().contains("gs:// stores are not supported"), "{e}");
        assert!(e.to_string().contains("checkpoint_dir"), "{e}");
        assert!(!Path::new("gs:").exists());
        // A path that merely contains `://` is a path.
        let odd = dir.path().join("odd://name");
        CheckpointStore::open(&odd, "job").unwrap();
        assert!(odd.join("job").is_dir());
        // file:// URLs are local directories.
        let local = format!("file://{}", dir.path().display());
        CheckpointStore::open(Path::new(&local), "job").unwrap();
        assert!(dir.path().join("job").is_dir());
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
        let held = store.lock().unwrap().unwrap();
        assert!(matches!(store.lock(), Err(WeirError::StoreInUse { .. })));
        drop(held);
        store.lock().unwrap();
    }
}
