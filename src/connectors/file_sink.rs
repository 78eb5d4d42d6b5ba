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

use super::{ConnectorContext, Sink};
use crate::checkpoint::store::sync_dir;
use crate::error::{Result, WeirError};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use weir_operators::CheckpointId;

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileSinkState {
    /// The last barrier seen: names the next in-progress file.
    last_barrier: u64,
    /// (checkpoint, in-progress file name) sealed but not yet committed.
    pending: Vec<(u64, String)>,
}

/// A sink writing one line per record into committed part files.
pub struct FileSink<F> {
    dir: PathBuf,
    subtask: usize,
    name: String,
    format: F,
    file: Option<(String, BufWriter<fs::File>)>,
    state: FileSinkState,
    line: String,
}

impl<F> FileSink<F> {
    /// A factory for [`crate::graph::Stream::sink`]: writes into `dir`, one
    /// line per record, formatted by `format` (append to the `String`; no newline).
    pub fn factory<T>(
        dir: impl Into<PathBuf>,
        format: F,
    ) -> impl Fn(ConnectorContext) -> Result<FileSink<F>> + Send + 'static
    where
        F: Fn(&T, &mut String) + Clone + Send + 'static,
    {
        let dir = dir.into();
        move |ctx| FileSink::open(&dir, &ctx, format.clone())
    }

    /// The committed name of the output of `checkpoint` by `subtask`.
    pub fn committed_name(subtask: usize, checkpoint: u64) -> String {
        format!("part-{subtask:04}-{checkpoint:010}")
    }

    fn in_progress_name(&self) -> String {
        format!(".part-{:04}-{:010}.inprogress", self.subtask, self.state.last_barrier)
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
    /// When the directory is unusable or a file pending in the restored
    /// checkpoint is gone (its records would be lost).
    pub fn open(dir: &Path, ctx: &ConnectorContext, format: F) -> Result<Self> {
        let mut sink = FileSink {
            dir: dir.to_path_buf(),
            subtask: ctx.subtask,
            name: ctx.uid.clone(),
            format,
            file: None,
            state: FileSinkState::default(),
            line: String::new(),
        };
        fs::create_dir_all(dir).map_err(|e| sink.io("cannot create output directory", dir, e))?;
        if let Some(bytes) = &ctx.restored {
            sink.state =
                postcard::from_bytes(bytes).map_err(|e| sink.error(format!("restored sink state is damaged: {e}")))?;
            let pending = std::mem::take(&mut sink.state.pending);
            for (checkpoint, name) in &pending {
                sink.commit_file(*checkpoint, name)?;
            }
        }
        // In-progress files left now hold records after the restored checkpoint: replayed, so discarded.
        let prefix = format!(".part-{:04}-", ctx.subtask);
        let entries = fs::read_dir(dir).map_err(|e| sink.io("cannot list output directory", dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".inprogress") {
                fs::remove_file(entry.path())
                    .map_err(|e| sink.io("cannot delete uncommitted output", &entry.path(), e))?;
            }
        }
        sync_dir(dir)?;
        Ok(sink)
    }

    fn commit_file(&self, checkpoint: u64, name: &str) -> Result<()> {
        let from = self.dir.join(name);
        let to = self.dir.join(Self::committed_name(self.subtask, checkpoint));
        match fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(_) if to.exists() => Ok(()), // committed before the crash
            Err(e) => Err(self.error(format!(
                "output of checkpoint {checkpoint} is lost: cannot commit {}: {e}",
                from.display()
            ))),
        }
    }
}

impl<T, F: Fn(&T, &mut String) + Send + 'static> Sink<T> for FileSink<F> {
    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            let name = self.in_progress_name();
            let path = self.dir.join(&name);
            let f = fs::File::create(&path).map_err(|e| self.io("cannot create", &path, e))?;
            self.file = Some((name, BufWriter::with_capacity(1 << 16, f)));
        }
        let Some((name, w)) = self.file.as_mut() else {
            return Ok(());
        };
        for r in records.drain(..) {
            self.line.clear();
            (self.format)(&r, &mut self.line);
            self.line.push('\n');
            if let Err(e) = w.write_all(self.line.as_bytes()) {
                let path = self.dir.join(&*name);
                return Err(WeirError::Connector {
                    connector: format!("{}[{}]", self.name, self.subtask),
                    message: format!("cannot write {}: {e}", path.display()),
                });
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        if let Some((name, mut w)) = self.file.take() {
            let path = self.dir.join(&name);
            w.flush().map_err(|e| self.io("cannot flush", &path, e))?;
            w.get_ref().sync_all().map_err(|e| self.io("cannot fsync", &path, e))?;
            self.state.pending.push((id.0, name));
        }
        self.state.last_barrier = id.0;
        postcard::to_stdvec(&self.state).map_err(|e| self.error(format!("cannot encode sink state: {e}")))
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
        if let Some((name, _)) = &self.file {
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
