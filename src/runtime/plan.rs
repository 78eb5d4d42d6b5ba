//! What the runtime runs: a *plan* of vertices (each a task maker run by
//! `parallelism` tasks), the edges between them and the operators' uids,
//! and the context a task maker gets when the job starts.
//!
//! The graph API above compiles a job into a [`Plan`]; the runtime never sees
//! the typed streams. Every task maker receives an explicit [`TaskContext`]:
//! the job-wide [`JobEnv`] plus what belongs to that one task (its subtask
//! index, its counters, its snapshot thread's queue).

use crate::checkpoint::manifest::{from_hex, Manifest, RocksHandle, SubtaskState};
use crate::connectors::CheckpointRequest;
use crate::error::{Result, WeirError};
use crate::state::StateEnv;
use crate::stats::TaskStats;
use crate::task::run::{SnapshotJob, TaskRuntime};
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use weir_operators::CheckpointId;

/// The body of one task, run on its own thread.
pub(crate) type TaskBody = Box<dyn FnOnce(TaskRuntime) -> Result<()> + Send>;
/// Creates the body of one subtask of a vertex.
pub(crate) type TaskMaker = Box<dyn Fn(&TaskContext<'_>) -> Result<TaskBody> + Send>;

/// A job as the runtime runs it.
pub(crate) struct Plan {
    /// The job's name (its directory in the checkpoint store).
    pub(crate) name: String,
    /// Chains of operators, each run by `parallelism` tasks.
    pub(crate) vertices: Vec<Vertex>,
    /// The channels between vertices, created at start.
    pub(crate) edges: Vec<Arc<dyn ErasedEdge>>,
    /// Every operator, for uids and restore checks.
    pub(crate) operators: Vec<OperatorInfo>,
}

/// One operator as the runtime sees it (for validation and state lookup).
#[derive(Debug, Clone)]
pub(crate) struct OperatorInfo {
    /// Name given in the graph.
    pub(crate) name: String,
    /// Stable id naming its state in checkpoints.
    pub(crate) uid: Option<String>,
    /// Whether it has checkpointed state (then it needs a uid).
    pub(crate) stateful: bool,
    /// The vertex it is chained into.
    pub(crate) vertex: usize,
    /// Whether it is a source (its positions can be found by split in the
    /// states of all its former subtasks).
    pub(crate) is_source: bool,
    /// A source with [`crate::connectors::Source::POSITIONS_BY_SPLIT`]:
    /// it restores with another parallelism as it is.
    pub(crate) positions_by_split: bool,
    /// A sink with [`crate::connectors::Sink::ADOPTS_STATE`].
    pub(crate) adopts_state: bool,
}

/// A vertex: a chain of operators run by `parallelism` tasks.
pub(crate) struct Vertex {
    /// The chain's operator names, joined by " -> ".
    pub(crate) name: String,
    /// How many tasks run it.
    pub(crate) parallelism: usize,
    /// Whether it starts with a source (sources receive the barriers).
    pub(crate) is_source: bool,
    /// Creates each subtask (`None` only while the graph is being built).
    pub(crate) make: Option<TaskMaker>,
}

/// The channels between two vertices, created when the job starts (the
/// typed implementation lives with the graph that knows the record type).
pub(crate) trait ErasedEdge: Send + Sync {
    /// (from vertex, to vertex).
    fn endpoints(&self) -> (usize, usize);
    /// How records are routed: `key_by`, `rebalance` or `union`.
    fn kind(&self) -> &'static str;
    /// Creates one bounded channel per (sending subtask, receiving subtask).
    fn materialize(&self, from_parallelism: usize, to_parallelism: usize, capacity: usize);
}

/// What every task maker of a job sees when the job starts.
pub(crate) struct JobEnv {
    /// The job's name.
    pub(crate) job: String,
    /// Parallelism of each vertex.
    pub(crate) parallelism: Vec<usize>,
    /// Records per batch on channels.
    pub(crate) batch_size: usize,
    /// Bounded + drain: sources emit `Watermark(MAX)` before the final barrier.
    pub(crate) drain_at_end: bool,
    /// Entries in each keyed task's write-back cache.
    pub(crate) state_cache_entries: usize,
    /// Changed entries a keyed task may write to RocksDB between checkpoints.
    pub(crate) state_write_behind_entries: usize,
    /// The checkpoint interval in ms (write-behind places its slices by it).
    pub(crate) checkpoint_interval_ms: Option<i64>,
    /// Set when the job is cancelled: blocked senders give up.
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) operators: Vec<OperatorInfo>,
    pub(crate) restore: Option<Manifest>,
    /// States of operators whose parallelism changed (dropped per subtask by
    /// `allow_non_restored_state`): readable only as a whole.
    pub(crate) union_only: BTreeMap<String, Vec<SubtaskState>>,
    pub(crate) state: Arc<StateEnv>,
}

/// What one task maker gets: the job's environment and what is this task's own.
pub(crate) struct TaskContext<'a> {
    /// The job-wide environment.
    pub(crate) env: &'a JobEnv,
    /// The subtask index within its vertex.
    pub(crate) subtask: usize,
    /// The task's live counters.
    pub(crate) stats: Arc<TaskStats>,
    /// The queue of the task's snapshot thread: work sent there runs in order
    /// with the task's snapshots.
    pub(crate) snapshot_jobs: Sender<SnapshotJob>,
    /// Asks the coordinator for a checkpoint now.
    pub(crate) checkpoint_request: CheckpointRequest,
}

impl JobEnv {
    /// The uid of operator `op` (the graph checked that stateful ones have one).
    pub(crate) fn uid(&self, op: usize) -> Result<String> {
        let info = self
            .operators
            .get(op)
            .ok_or_else(|| WeirError::Internal(format!("no operator {op} in the plan")))?;
        info.uid
            .clone()
            .ok_or_else(|| WeirError::Internal(format!("operator `{}` passed validation without a uid", info.name)))
    }

    /// The restored state of one subtask of `uid`, if the checkpoint has it.
    pub(crate) fn restored(&self, uid: &str, subtask: usize) -> Option<&SubtaskState> {
        self.restore.as_ref()?.operators.get(uid)?.subtasks.get(subtask)
    }

    /// The checkpointed RocksDB instances of keyed operator `uid` whose key
    /// groups overlap `groups` (`start..end`): the one of the same range
    /// when the parallelism is unchanged, the several to rebuild this
    /// range from after a change (rescaling).
    ///
    /// # Errors
    /// [`WeirError::Checkpoint`] when `uid` stored something else than keyed
    /// state, or when its instances do not cover `groups` (the max
    /// parallelism, the number of key groups, changed: keys would move).
    pub(crate) fn restored_keyed(
        &self,
        uid: &str,
        groups: (u16, u16),
        max_parallelism: u16,
    ) -> Result<Vec<&RocksHandle>> {
        let Some(op) = self.restore.as_ref().and_then(|m| m.operators.get(uid)) else {
            return Ok(Vec::new());
        };
        let mut handles = Vec::new();
        for state in &op.subtasks {
            let SubtaskState::Rocks(h) = state else {
                return Err(WeirError::Checkpoint {
                    path: self.store_dir(),
                    message: format!("state of `{uid}` is not keyed state"),
                });
            };
            handles.push(h);
        }
        let mut covered: Vec<(u16, u16)> = handles.iter().map(|h| h.key_groups).collect();
        covered.sort_unstable();
        let whole = covered.first().map(|c| c.0) == Some(0)
            && covered.windows(2).all(|w| w[0].1 == w[1].0)
            && covered.last().map(|c| c.1) == Some(max_parallelism);
        if !whole {
            return Err(WeirError::Checkpoint {
                path: self.store_dir(),
                message: format!(
                    "the keyed state of `{uid}` covers key groups {covered:?}, not the 0..{max_parallelism} of this \
                     job: the max parallelism (the number of key groups) changed, which moves every key; restore \
                     with the max parallelism the checkpoint was taken with"
                ),
            });
        }
        handles.retain(|h| h.key_groups.0.max(groups.0) < h.key_groups.1.min(groups.1));
        Ok(handles)
    }

    /// The states of the former subtasks of sink `uid` that `subtask` takes
    /// over after a change of parallelism: former `j` goes to `j % parallelism`.
    pub(crate) fn adopted(&self, uid: &str, subtask: usize, parallelism: usize) -> Result<Vec<(usize, Vec<u8>)>> {
        let Some(states) = self.union_only.get(uid) else {
            return Ok(Vec::new());
        };
        let mut adopted = Vec::new();
        for (former, state) in states.iter().enumerate() {
            if former % parallelism.max(1) == subtask {
                adopted.push((former, self.bytes_of(uid, former, state)?));
            }
        }
        Ok(adopted)
    }

    /// The restored bytes (position, sink state) of one subtask of `uid`.
    pub(crate) fn restored_bytes(&self, uid: &str, subtask: usize) -> Result<Option<Vec<u8>>> {
        match self.restored(uid, subtask) {
            None => Ok(None),
            Some(state) => self.bytes_of(uid, subtask, state).map(Some),
        }
    }

    fn bytes_of(&self, uid: &str, subtask: usize, state: &SubtaskState) -> Result<Vec<u8>> {
        match state {
            SubtaskState::Bytes { hex, .. } => from_hex(hex).ok_or_else(|| WeirError::Checkpoint {
                path: self.store_dir(),
                message: format!("state of `{uid}` subtask {subtask} is not valid hex"),
            }),
            SubtaskState::File { path, .. } => self.state.store.read(path),
            SubtaskState::Rocks(_) => Err(WeirError::Checkpoint {
                path: self.store_dir(),
                message: format!("state of `{uid}` is keyed state, expected a position"),
            }),
        }
    }

    /// The states every subtask of `uid` stored in the restored checkpoint
    /// (also when its parallelism changed and the per-subtask state was
    /// dropped: a source finds its splits' positions here).
    pub(crate) fn restored_all(&self, uid: &str) -> Result<Vec<Vec<u8>>> {
        let subtasks: &[SubtaskState] = match self.restore.as_ref().and_then(|m| m.operators.get(uid)) {
            Some(o) => &o.subtasks,
            None => self.union_only.get(uid).map_or(&[], Vec::as_slice),
        };
        let mut all = Vec::with_capacity(subtasks.len());
        for (s, state) in subtasks.iter().enumerate() {
            if !matches!(state, SubtaskState::Rocks(_)) {
                all.push(self.bytes_of(uid, s, state)?);
            }
        }
        Ok(all)
    }

    /// The restored checkpoint's directory, or the job's when starting empty.
    pub(crate) fn store_dir(&self) -> PathBuf {
        match &self.restore {
            Some(m) => self.state.store.checkpoint_path(CheckpointId(m.checkpoint_id)),
            None => self.state.store.job_dir().to_path_buf(),
        }
    }

    /// The process's state environment (store, block cache, local dirs).
    pub(crate) fn state(&self) -> &StateEnv {
        &self.state
    }
}
