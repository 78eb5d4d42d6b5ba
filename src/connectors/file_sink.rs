//! Exactly-once file sink (Flink's FileSink pattern).
//!
//! Each subtask writes the records of one checkpoint epoch to a hidden
//! in-progress file `.part-<subtask>-<n>.inprogress` (records after barrier
//! `n`). At barrier `m` the file is flushed and fsynced and becomes
//! *pending* for checkpoint `m`; the list of pending files is the sink's
//! state in checkpoint `m`. When `m` completes, its pending files are renamed
//! to `part-<subtask>-<m>` and only then are visible.
//!
//! Recovery from checkpoint `m`: the files pending in `m` are committed if
//! they were not yet (the process may have died between "checkpoint complete"
//! and the rename); every other in-progress file of the subtask holds records
//! after `m`, which the sources replay, so it is deleted. Each record ends up
//! in the committed output exactly once.
//!
//! With [`Rolling::AtSize`] a part stays open across checkpoints until it
//! holds that many bytes or the input ends (Flink's rolling policy for row
//! formats): fewer, larger files, visible when they roll. The checkpoint then
//! stores the open part's length at the barrier, and recovery truncates the
//! part to it and goes on appending (what came after is replayed).

use super::{ConnectorContext, DeferredSync, Sink};
use crate::checkpoint::local::{create_dir_durable, sync_dir};
use crate::checkpoint::store::LEGACY_INCARNATION;
use crate::error::{Result, WeirError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use weir_operators::CheckpointId;

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileSinkState {
    /// The last barrier seen: names the next in-progress file.
    last_barrier: u64,
    /// (checkpoint, in-progress file name) sealed but not yet committed.
    pending: Vec<(u64, String)>,
}

/// The part left open at a barrier ([`Rolling::AtSize`]): its name and length then.
/// Encoded after [`FileSinkState`], so states written without it still decode.
type OpenPart = (String, u64);

/// The part file being written.
struct Part {
    name: String,
    file: fs::File,
    /// Its length with the lines not yet written.
    len: u64,
    /// Bytes up to which the kernel was asked to start writing back.
    writeback_from: u64,
}

/// When a part file is closed, to be committed with the next checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rolling {
    /// At every checkpoint: rows are visible once their checkpoint completes.
    #[default]
    OnCheckpoint,
    /// At the first checkpoint at which the part holds at least this many
    /// bytes, and at the final one: fewer, larger files, visible when they
    /// roll (`u64::MAX`: one part per subtask and run).
    AtSize(u64),
}

/// How a [`FileSink`] closes its parts and what it reports.
#[derive(Debug, Clone, Default)]
pub struct FileSinkOptions {
    /// When a part is closed (default: at every checkpoint).
    pub rolling: Rolling,
    /// Counts the records written by every subtask of this run (bumped once
    /// per batch). In a run that ends with its final checkpoint, all of them
    /// are committed.
    pub records_written: Option<Arc<AtomicU64>>,
}

/// A sink writing one line per record into committed part files.
pub struct FileSink<F> {
    dir: PathBuf,
    subtask: usize,
    name: String,
    /// The checkpoint store's incarnation, in every file name this sink
    /// creates: another job or store writing the same directory never takes
    /// (or deletes) this one's files.
    incarnation: String,
    format: F,
    rolling: Rolling,
    records_written: Option<Arc<AtomicU64>>,
    /// The in-progress part.
    file: Option<Part>,
    state: FileSinkState,
    /// Lines formatted and not yet written to the part (formatted in place:
    /// no copy of each line into a writer's buffer).
    buffered: String,
    /// Parts written up to a barrier, to fsync before its checkpoint
    /// completes, and whether a part was created since the last one (its
    /// directory entry to fsync too).
    unsynced: Vec<(fs::File, PathBuf)>,
    created_part: bool,
    /// A deferred fsync failed: the data may be gone from the page cache
    /// (a second fsync would not say so), so the job fails and recovers.
    sync_failure: Arc<OnceLock<String>>,
}

impl<F> FileSink<F> {
    /// A factory for [`crate::graph::Stream::sink`]: writes into `dir`, one
    /// line per record, formatted by `format` (append to the `String`; no
    /// newline); a part per checkpoint ([`Rolling::OnCheckpoint`]).
    pub fn factory<T>(
        dir: impl Into<PathBuf>,
        format: F,
    ) -> impl Fn(ConnectorContext) -> Result<FileSink<F>> + Send + 'static
    where
        F: Fn(&T, &mut String) + Clone + Send + 'static,
    {
        Self::factory_with(dir, format, FileSinkOptions::default())
    }

    /// [`FileSink::factory`] with `options`.
    pub fn factory_with<T>(
        dir: impl Into<PathBuf>,
        format: F,
        options: FileSinkOptions,
    ) -> impl Fn(ConnectorContext) -> Result<FileSink<F>> + Send + 'static
    where
        F: Fn(&T, &mut String) + Clone + Send + 'static,
    {
        let dir = dir.into();
        move |ctx| FileSink::open(&dir, &ctx, format.clone(), options.clone())
    }

    /// The committed name of the output of `checkpoint` by `subtask` of the
    /// store incarnation `incarnation`: `part-<incarnation>-<subtask>-<checkpoint>`
    /// (`part-<subtask>-<checkpoint>` for a store older than incarnations).
    pub fn committed_name(incarnation: &str, subtask: usize, checkpoint: u64) -> String {
        if incarnation == LEGACY_INCARNATION {
            format!("part-{subtask:04}-{checkpoint:010}")
        } else {
            format!("part-{incarnation}-{subtask:04}-{checkpoint:010}")
        }
    }

    /// The prefix of this subtask's in-progress files.
    fn in_progress_prefix(&self) -> String {
        self.in_progress_prefix_of(self.subtask)
    }

    /// The prefix of subtask `subtask`'s in-progress files.
    fn in_progress_prefix_of(&self, subtask: usize) -> String {
        if self.incarnation == LEGACY_INCARNATION {
            format!(".part-{subtask:04}-")
        } else {
            format!(".part-{}-{subtask:04}-", self.incarnation)
        }
    }

    fn in_progress_name(&self) -> String {
        format!(
            "{}{:010}.inprogress",
            self.in_progress_prefix(),
            self.state.last_barrier
        )
    }

    fn error(&self, message: String) -> WeirError {
        WeirError::Connector {
            connector: format!("{}[{}]", self.name, self.subtask),
            message,
        }
    }

    fn io(&self, action: &str, path: &Path, e: std::io::Error) -> WeirError {
        self.error(format!("{action} {}: {e}", path.display()))
    }

    /// Opens subtask `ctx.subtask`, finishing or discarding what an earlier
    /// run left behind (see the module docs).
    ///
    /// # Errors
    /// When the directory is unusable or a file pending in (or left open by)
    /// the restored checkpoint is gone or short (its records would be lost).
    pub fn open(dir: &Path, ctx: &ConnectorContext, format: F, options: FileSinkOptions) -> Result<Self> {
        let mut sink = FileSink {
            dir: dir.to_path_buf(),
            subtask: ctx.subtask,
            name: ctx.uid.clone(),
            incarnation: ctx.incarnation.clone(),
            format,
            rolling: options.rolling,
            records_written: options.records_written,
            file: None,
            state: FileSinkState::default(),
            buffered: String::new(),
            unsynced: Vec::new(),
            created_part: false,
            sync_failure: Arc::default(),
        };
        create_dir_durable(dir)?;
        let mut open_part = None;
        if let Some(bytes) = &ctx.restored {
            let (state, rest) = postcard::take_from_bytes::<FileSinkState>(bytes)
                .map_err(|e| sink.error(format!("restored sink state is damaged: {e}")))?;
            sink.state = state;
            if !rest.is_empty() {
                let part: OpenPart = postcard::from_bytes(rest)
                    .map_err(|e| sink.error(format!("restored sink state is damaged: {e}")))?;
                open_part = Some(part);
            }
            let pending = std::mem::take(&mut sink.state.pending);
            for (checkpoint, name) in &pending {
                sink.commit_file(*checkpoint, name)?;
            }
        }
        if let Some((name, len)) = open_part {
            let committed = dir.join(Self::committed_name(
                &sink.incarnation,
                sink.subtask,
                sink.state.last_barrier,
            ));
            // Unless a rescaled restore of this checkpoint adopted the part
            // and committed it (then crashed): then it is final and a new
            // part follows.
            if dir.join(&name).exists() || !committed.exists() {
                sink.reopen(name, len)?;
            }
        }
        for (former, bytes) in &ctx.adopted {
            sink.adopt(*former, bytes)?;
        }
        // In-progress files left now hold records after the restored checkpoint: replayed, so discarded.
        let prefix = sink.in_progress_prefix();
        let entries = fs::read_dir(dir).map_err(|e| sink.io("cannot list output directory", dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let continued = sink.file.as_ref().is_some_and(|part| part.name == name);
            if name.starts_with(&prefix) && name.ends_with(".inprogress") && !continued {
                fs::remove_file(entry.path())
                    .map_err(|e| sink.io("cannot delete uncommitted output", &entry.path(), e))?;
            }
        }
        sync_dir(dir)?;
        Ok(sink)
    }

    /// Takes over the state of former subtask `former` (the job restored
    /// with another parallelism): its pending parts are committed under its
    /// names, the part it had open is cut back to the restored checkpoint
    /// and committed too (it held only records of completed checkpoints),
    /// and its other in-progress files (records after the checkpoint, which
    /// are replayed) are deleted.
    fn adopt(&mut self, former: usize, bytes: &[u8]) -> Result<()> {
        let (state, rest) = postcard::take_from_bytes::<FileSinkState>(bytes)
            .map_err(|e| self.error(format!("restored state of former subtask {former} is damaged: {e}")))?;
        for (checkpoint, name) in &state.pending {
            self.commit_file_of(former, *checkpoint, name)?;
        }
        if !rest.is_empty() {
            let (name, len): OpenPart = postcard::from_bytes(rest)
                .map_err(|e| self.error(format!("restored state of former subtask {former} is damaged: {e}")))?;
            let path = self.dir.join(&name);
            let committed = self
                .dir
                .join(Self::committed_name(&self.incarnation, former, state.last_barrier));
            if !path.exists() && committed.exists() {
                // Adopted and committed by an earlier try of this restore.
                return self.drop_in_progress_of(former, &state);
            }
            let file = fs::OpenOptions::new().write(true).open(&path);
            let cut = file.and_then(|f| {
                let found = f.metadata()?.len();
                if found < len {
                    return Err(std::io::Error::other(format!(
                        "it has {found} bytes, the checkpoint {len}"
                    )));
                }
                f.set_len(len)?;
                f.sync_all()
            });
            cut.map_err(|e| {
                self.error(format!(
                    "output of the restored checkpoint is lost: {} of former subtask {former}: {e}",
                    path.display()
                ))
            })?;
            self.commit_file_of(former, state.last_barrier, &name)?;
        }
        self.drop_in_progress_of(former, &state)
    }

    /// Deletes former subtask `former`'s in-progress files (records after
    /// the restored checkpoint) once its state is adopted.
    fn drop_in_progress_of(&mut self, former: usize, state: &FileSinkState) -> Result<()> {
        let prefix = self.in_progress_prefix_of(former);
        let entries = fs::read_dir(&self.dir).map_err(|e| self.io("cannot list output directory", &self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".inprogress") {
                fs::remove_file(entry.path())
                    .map_err(|e| self.io("cannot delete uncommitted output", &entry.path(), e))?;
            }
        }
        // New in-progress names never meet the former subtask's.
        self.state.last_barrier = self.state.last_barrier.max(state.last_barrier);
        Ok(())
    }

    /// Goes on with the part left open at the restored checkpoint: cut to its
    /// length then (what follows is replayed) and append.
    fn reopen(&mut self, name: String, len: u64) -> Result<()> {
        let path = self.dir.join(&name);
        let lost = |what: String| {
            self.error(format!(
                "output of the restored checkpoint is lost: {} {what}",
                path.display()
            ))
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| lost(format!("cannot be opened: {e}")))?;
        let found = file.metadata().map_err(|e| lost(format!("cannot be read: {e}")))?.len();
        if found < len {
            return Err(lost(format!("has {found} bytes, the checkpoint {len}")));
        }
        file.set_len(len)
            .and_then(|()| file.seek(std::io::SeekFrom::Start(len)))
            .and_then(|_| file.sync_all())
            .map_err(|e| self.io("cannot cut back", &path, e))?;
        self.file = Some(Part {
            name,
            file,
            len,
            writeback_from: len,
        });
        Ok(())
    }

    /// Makes a sealed part visible under its committed name, never replacing
    /// a file: a hard link (which fails if the name exists), then the
    /// in-progress name is removed.
    fn commit_file(&self, checkpoint: u64, name: &str) -> Result<()> {
        self.commit_file_of(self.subtask, checkpoint, name)
    }

    /// [`FileSink::commit_file`] under the name of subtask `subtask` (a
    /// former subtask's, after a change of parallelism).
    fn commit_file_of(&self, subtask: usize, checkpoint: u64, name: &str) -> Result<()> {
        let from = self.dir.join(name);
        let to = self
            .dir
            .join(Self::committed_name(&self.incarnation, subtask, checkpoint));
        match fs::hard_link(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                use std::os::unix::fs::MetadataExt;
                match (fs::metadata(&from), fs::metadata(&to)) {
                    // Linked before a crash, not yet unlinked: the same file.
                    (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev() => {}
                    // Committed before the crash.
                    (Err(_), Ok(_)) => return Ok(()),
                    _ => {
                        return Err(self.error(format!(
                            "cannot commit the output of checkpoint {checkpoint}: {} exists and is another file; \
                             it was written by another job or checkpoint store in the same output directory \
                             (nothing was replaced)",
                            to.display()
                        )))
                    }
                }
            }
            Err(_) if !from.exists() && to.exists() => return Ok(()), // committed before the crash
            Err(e) => {
                return Err(self.error(format!(
                    "output of checkpoint {checkpoint} is lost: cannot commit {}: {e}",
                    from.display()
                )))
            }
        }
        fs::remove_file(&from).map_err(|e| self.io("cannot remove the committed in-progress name", &from, e))
    }
}

/// Bytes buffered before a write to the part file.
const WRITE_BUFFER: usize = 1 << 18;

impl<F> FileSink<F> {
    /// At a barrier: make the open part durable; close it (pending for `id`)
    /// when `rolling` or `last` says so.
    fn at_barrier(&mut self, id: CheckpointId, last: bool) -> Result<Vec<u8>> {
        self.check_synced()?;
        let mut open = None;
        if let Some(mut part) = self.file.take() {
            let path = self.dir.join(&part.name);
            self.write_lines(&mut part)?;
            // The fsync runs on the snapshot thread (the checkpoint completes after it);
            // writing goes on meanwhile.
            let handle = part.file.try_clone().map_err(|e| self.io("cannot fsync", &path, e))?;
            self.unsynced.push((handle, path));
            let roll = match self.rolling {
                Rolling::OnCheckpoint => true,
                Rolling::AtSize(bytes) => last || part.len >= bytes,
            };
            if roll {
                self.state.pending.push((id.0, part.name));
            } else {
                open = Some((part.name.clone(), part.len));
                self.file = Some(part);
            }
        }
        self.state.last_barrier = id.0;
        let mut bytes =
            postcard::to_stdvec(&self.state).map_err(|e| self.error(format!("cannot encode sink state: {e}")))?;
        if let Some(part) = open {
            let part: OpenPart = part;
            bytes.extend(postcard::to_stdvec(&part).map_err(|e| self.error(format!("cannot encode sink state: {e}")))?);
        }
        Ok(bytes)
    }

    /// Fails once a deferred fsync failed.
    fn check_synced(&self) -> Result<()> {
        match self.sync_failure.get() {
            Some(failure) => Err(self.error(failure.clone())),
            None => Ok(()),
        }
    }

    /// Writes the formatted lines to `part`.
    fn write_lines(&mut self, part: &mut Part) -> Result<()> {
        // `Write` is implemented for `&File`.
        if let Err(e) = (&part.file).write_all(self.buffered.as_bytes()) {
            return Err(self.io("cannot write", &self.dir.join(&part.name), e));
        }
        self.buffered.clear();
        start_writeback(part);
        Ok(())
    }
}

/// Bytes written before the kernel is asked to start writing them to disk.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// Starts the disk writes of what the part holds beyond `writeback_from`
/// once that is `WRITEBACK_BYTES` (as RocksDB's `bytes_per_sync`), without
/// waiting: the fsync at the next barrier then finds little left to write
/// (the final checkpoint of a 280 MB q0 run waited ~90 ms in it).
fn start_writeback(part: &mut Part) {
    let written = part.len;
    if written - part.writeback_from < WRITEBACK_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor and a byte range; the call only
        // schedules writeback (a hint: its failure is left to the fsync).
        unsafe {
            libc::sync_file_range(
                part.file.as_raw_fd(),
                part.writeback_from as libc::off64_t,
                (written - part.writeback_from) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    part.writeback_from = written;
}

impl<T, F: Fn(&T, &mut String) + Send + 'static> Sink<T> for FileSink<F> {
    // A former subtask's pending and open parts are committed by whoever adopts it.
    const ADOPTS_STATE: bool = true;

    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.check_synced()?;
        let mut part = match self.file.take() {
            Some(part) => part,
            None => {
                let name = self.in_progress_name();
                let path = self.dir.join(&name);
                let file = fs::File::create(&path).map_err(|e| self.io("cannot create", &path, e))?;
                self.created_part = true;
                Part {
                    name,
                    file,
                    len: 0,
                    writeback_from: 0,
                }
            }
        };
        if let Some(counter) = &self.records_written {
            counter.fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        let before = self.buffered.len();
        for r in records.drain(..) {
            (self.format)(&r, &mut self.buffered);
            self.buffered.push('\n');
        }
        part.len += (self.buffered.len() - before) as u64;
        let written = if self.buffered.len() >= WRITE_BUFFER {
            self.write_lines(&mut part)
        } else {
            Ok(())
        };
        self.file = Some(part);
        written
    }

    fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        self.at_barrier(id, false)
    }

    fn snapshot_final(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        self.at_barrier(id, true)
    }

    fn deferred_sync(&mut self) -> Option<DeferredSync> {
        if self.unsynced.is_empty() && !self.created_part {
            return None;
        }
        let files = std::mem::take(&mut self.unsynced);
        let dir = std::mem::take(&mut self.created_part).then(|| self.dir.clone());
        let failure = self.sync_failure.clone();
        let connector = format!("{}[{}]", self.name, self.subtask);
        Some(Box::new(move || {
            // In order on the snapshot thread: after a failure, later checkpoints fail too.
            let sync = || -> std::result::Result<(), String> {
                if let Some(earlier) = failure.get() {
                    return Err(earlier.clone());
                }
                for (file, path) in &files {
                    file.sync_all()
                        .map_err(|e| format!("cannot fsync {}: {e}", path.display()))?;
                }
                if let Some(dir) = &dir {
                    fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| format!("cannot fsync directory {}: {e}", dir.display()))?;
                }
                Ok(())
            };
            sync().map_err(|message| {
                let _ = failure.set(message.clone());
                WeirError::Connector { connector, message }
            })
        }))
    }

    fn commit(&mut self, id: CheckpointId) -> Result<()> {
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.state.pending)
            .into_iter()
            .partition(|(c, _)| *c <= id.0);
        self.state.pending = later;
        for (checkpoint, name) in &ready {
            self.commit_file(*checkpoint, name)?;
        }
        if !ready.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(mut part) = self.file.take() {
            self.write_lines(&mut part)?;
            let name = &part.name;
            tracing::warn!(
                "{}[{}]: records after the final checkpoint stay uncommitted in {name}",
                self.name,
                self.subtask
            );
        }
        Ok(())
    }
}

/// Formats `Display` records, one per line.
pub fn display_line<T: std::fmt::Display>(record: &T, out: &mut String) {
    let _ = write!(out, "{record}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &u32, out: &mut String) {
        let _ = write!(out, "{r}");
    }

    fn open(dir: &Path, restored: Option<Vec<u8>>, rolling: Rolling) -> FileSink<fn(&u32, &mut String)> {
        let ctx = ConnectorContext {
            restored,
            incarnation: "test".into(),
            checkpoint_request: crate::connectors::CheckpointRequest::none(),
            ..ConnectorContext::standalone("files", 0, 1)
        };
        let options = FileSinkOptions {
            rolling,
            records_written: None,
        };
        FileSink::open(dir, &ctx, line as fn(&u32, &mut String), options).unwrap()
    }

    /// A barrier as the runtime runs it: snapshot, then the deferred fsync.
    fn barrier(sink: &mut FileSink<fn(&u32, &mut String)>, id: u64, last: bool) -> Vec<u8> {
        let id = CheckpointId(id);
        let state = if last {
            Sink::<u32>::snapshot_final(sink, id)
        } else {
            Sink::<u32>::snapshot(sink, id)
        };
        if let Some(sync) = Sink::<u32>::deferred_sync(sink) {
            sync().unwrap();
        }
        state.unwrap()
    }

    fn committed(dir: &Path) -> Vec<(String, String)> {
        let mut parts: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("part-"))
            .map(|n| {
                let text = fs::read_to_string(dir.join(&n)).unwrap();
                (n, text)
            })
            .collect();
        parts.sort();
        parts
    }

    #[test]
    fn a_part_per_checkpoint_visible_once_it_completes() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::OnCheckpoint);
        sink.write(&mut vec![1, 2]).unwrap();
        barrier(&mut sink, 1, false);
        assert!(
            committed(dir.path()).is_empty(),
            "nothing visible before the checkpoint completes"
        );
        Sink::<u32>::commit(&mut sink, CheckpointId(1)).unwrap();
        sink.write(&mut vec![3]).unwrap();
        barrier(&mut sink, 2, false);
        Sink::<u32>::commit(&mut sink, CheckpointId(2)).unwrap();
        assert_eq!(
            committed(dir.path()),
            [
                ("part-test-0000-0000000001".to_string(), "1\n2\n".to_string()),
                ("part-test-0000-0000000002".to_string(), "3\n".to_string())
            ]
        );
    }

    #[test]
    fn an_open_part_is_cut_back_to_the_checkpoint_and_continued() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::AtSize(u64::MAX));
        sink.write(&mut vec![1, 2]).unwrap();
        barrier(&mut sink, 1, false);
        Sink::<u32>::commit(&mut sink, CheckpointId(1)).unwrap();
        sink.write(&mut vec![3]).unwrap();
        let state = barrier(&mut sink, 2, false);
        Sink::<u32>::commit(&mut sink, CheckpointId(2)).unwrap();
        assert!(committed(dir.path()).is_empty(), "the part rolls only at the end");
        // Records after checkpoint 2 reach the file, then the process dies.
        sink.write(&mut vec![4; 100_000]).unwrap();
        let _ = Sink::<u32>::snapshot(&mut sink, CheckpointId(3)).unwrap();
        drop(sink);
        let mut again = open(dir.path(), Some(state), Rolling::AtSize(u64::MAX));
        again.write(&mut vec![5]).unwrap();
        barrier(&mut again, 3, true);
        Sink::<u32>::commit(&mut again, CheckpointId(3)).unwrap();
        assert_eq!(
            committed(dir.path()),
            [("part-test-0000-0000000003".to_string(), "1\n2\n3\n5\n".to_string())]
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no in-progress file is left");
    }

    #[test]
    fn a_part_rolls_at_the_first_checkpoint_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::AtSize(6));
        sink.write(&mut vec![1, 2]).unwrap();
        barrier(&mut sink, 1, false);
        sink.write(&mut vec![3]).unwrap();
        barrier(&mut sink, 2, false);
        sink.write(&mut vec![4]).unwrap();
        barrier(&mut sink, 3, false);
        Sink::<u32>::commit(&mut sink, CheckpointId(3)).unwrap();
        assert_eq!(
            committed(dir.path()),
            [("part-test-0000-0000000002".to_string(), "1\n2\n3\n".to_string())],
            "6 bytes reached at checkpoint 2; the 4 waits in the next part"
        );
    }

    #[test]
    fn a_state_without_an_open_part_still_restores() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::OnCheckpoint);
        sink.write(&mut vec![7]).unwrap();
        let state = barrier(&mut sink, 1, false);
        drop(sink);
        // As written before open parts existed: the state alone.
        let old = postcard::to_stdvec(&FileSinkState {
            last_barrier: 1,
            pending: vec![(1, ".part-test-0000-0000000000.inprogress".into())],
        })
        .unwrap();
        assert_eq!(state, old);
        let _ = open(dir.path(), Some(old), Rolling::AtSize(u64::MAX));
        assert_eq!(
            committed(dir.path()),
            [("part-test-0000-0000000001".to_string(), "7\n".to_string())],
            "the pending part of the restored checkpoint is committed"
        );
    }

    fn open_as(dir: &Path, incarnation: &str, restored: Option<Vec<u8>>) -> FileSink<fn(&u32, &mut String)> {
        let ctx = ConnectorContext {
            restored,
            incarnation: incarnation.into(),
            ..ConnectorContext::standalone("files", 0, 1)
        };
        FileSink::open(dir, &ctx, line as fn(&u32, &mut String), FileSinkOptions::default()).unwrap()
    }

    #[test]
    fn two_stores_writing_one_directory_keep_each_others_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = open_as(dir.path(), "aaaa", None);
        a.write(&mut vec![1]).unwrap();
        let a_state = barrier(&mut a, 1, false);
        // A second job (another store) starts on the directory while `a` has
        // an uncommitted part, and commits its own checkpoint 1.
        let mut b = open_as(dir.path(), "bbbb", None);
        b.write(&mut vec![2]).unwrap();
        barrier(&mut b, 1, false);
        b.commit(CheckpointId(1)).unwrap();
        // `a` restarts from its checkpoint 1 and commits what it had pending.
        drop(a);
        let _a = open_as(dir.path(), "aaaa", Some(a_state));
        assert_eq!(
            committed(dir.path()),
            [
                ("part-aaaa-0000-0000000001".to_string(), "1\n".to_string()),
                ("part-bbbb-0000-0000000001".to_string(), "2\n".to_string())
            ]
        );
    }

    #[test]
    fn a_commit_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::OnCheckpoint);
        sink.write(&mut vec![1]).unwrap();
        barrier(&mut sink, 1, false);
        fs::write(dir.path().join("part-test-0000-0000000001"), "someone else's\n").unwrap();
        let e = sink.commit(CheckpointId(1)).unwrap_err().to_string();
        assert!(
            e.contains("part-test-0000-0000000001") && e.contains("nothing was replaced"),
            "{e}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("part-test-0000-0000000001")).unwrap(),
            "someone else's\n"
        );
    }

    #[test]
    fn a_store_older_than_incarnations_keeps_its_part_names() {
        assert_eq!(
            FileSink::<fn(&u32, &mut String)>::committed_name("legacy", 3, 7),
            "part-0003-0000000007"
        );
        assert_eq!(
            FileSink::<fn(&u32, &mut String)>::committed_name("00ff", 3, 7),
            "part-00ff-0003-0000000007"
        );
    }

    #[test]
    fn a_lost_open_part_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::AtSize(u64::MAX));
        sink.write(&mut vec![1]).unwrap();
        let state = barrier(&mut sink, 1, false);
        drop(sink);
        fs::write(dir.path().join(".part-test-0000-0000000000.inprogress"), "").unwrap();
        let ctx = ConnectorContext {
            restored: Some(state),
            incarnation: "test".into(),
            checkpoint_request: crate::connectors::CheckpointRequest::none(),
            ..ConnectorContext::standalone("files", 0, 1)
        };
        let e = FileSink::open(
            dir.path(),
            &ctx,
            line as fn(&u32, &mut String),
            FileSinkOptions {
                rolling: Rolling::AtSize(u64::MAX),
                records_written: None,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains(".part-test-0000-0000000000.inprogress") && e.contains("lost"),
            "{e}"
        );
    }

    #[test]
    fn after_a_failed_deferred_fsync_the_sink_and_later_checkpoints_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = open(dir.path(), None, Rolling::AtSize(u64::MAX));
        sink.write(&mut vec![1]).unwrap();
        let _ = Sink::<u32>::snapshot(&mut sink, CheckpointId(1)).unwrap();
        let sync = Sink::<u32>::deferred_sync(&mut sink).expect("the part and its directory entry to sync");
        // As if that fsync had failed on the snapshot thread.
        sink.sync_failure.set("cannot fsync part: EIO".into()).unwrap();
        let e = sync().unwrap_err().to_string();
        assert!(e.contains("EIO"), "{e}");
        let e = sink.write(&mut vec![2]).unwrap_err().to_string();
        assert!(e.contains("EIO"), "the sink fails the job: {e}");
        assert!(Sink::<u32>::snapshot(&mut sink, CheckpointId(2)).is_err());
    }
}
