//! Sources and sinks: the contracts and the built-in connectors.
//!
//! A [`Source`] produces records and can say where it is (its position is
//! stored in each checkpoint and handed back on restore). A [`Sink`] writes
//! records and takes part in checkpoints: `snapshot` at the barrier
//! (pre-commit), `commit` once the checkpoint is complete.

pub mod collect;
pub mod file_sink;
pub mod generator;
pub mod kafka;
pub mod line_source;
pub mod memory;
pub mod pace;

use crate::error::Result;
use std::time::Duration;
use weir_operators::{CheckpointId, Timestamp};

/// What a source or sink subtask is told when it is created.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    /// The job's name.
    pub job: String,
    /// This subtask's index, `0..parallelism`.
    pub subtask: usize,
    /// Number of subtasks.
    pub parallelism: usize,
    /// The operator's uid (or name when stateless).
    pub uid: String,
    /// The state this subtask stored in the checkpoint being restored, if any.
    pub restored: Option<Vec<u8>>,
    /// The incarnation of the job's checkpoint store (see
    /// [`crate::checkpoint::CheckpointStore::incarnation`]): a sink names
    /// what it commits with it, so output of another incarnation is never
    /// taken for this one's.
    pub incarnation: String,
    /// The states every subtask of this operator stored (Flink's union list
    /// state): a source whose splits may move between subtasks (Kafka
    /// partitions, when partitions are added) finds its offsets here.
    pub restored_all: Vec<Vec<u8>>,
    /// The states of former subtasks this sink subtask takes over, with
    /// their subtask index: after a change of parallelism, the state of
    /// former subtask `j` goes to subtask `j % parallelism` of a sink with
    /// [`Sink::ADOPTS_STATE`] (it commits what they had pending, as Flink
    /// redistributes a sink's committables). Empty otherwise.
    pub adopted: Vec<(usize, Vec<u8>)>,
    /// Asks the job for a checkpoint now: for a sink whose uncommitted output
    /// outgrows what it should hold (see [`CheckpointRequest`]).
    pub checkpoint_request: CheckpointRequest,
    /// Where a source that knows its backlog (how far it is behind the end of
    /// its input) reports it, for [`crate::JobHandle::status`] and metrics.
    pub backlog: crate::stats::Backlog,
}

impl ConnectorContext {
    /// Whether split `index` (a file, a partition, an element) belongs to
    /// this subtask: `index % parallelism == subtask`, the way the built-in
    /// sources deal their splits.
    pub fn owns(&self, index: usize) -> bool {
        index % self.parallelism.max(1) == self.subtask
    }

    /// A context outside a running job, for unit tests of a source or sink:
    /// job `test`, nothing restored.
    pub fn standalone(uid: &str, subtask: usize, parallelism: usize) -> Self {
        ConnectorContext {
            job: "test".into(),
            subtask,
            parallelism,
            uid: uid.into(),
            restored: None,
            incarnation: "test".into(),
            restored_all: Vec::new(),
            adopted: Vec::new(),
            checkpoint_request: CheckpointRequest::none(),
            backlog: Default::default(),
        }
    }
}

/// Asks the running job for a checkpoint now (it waits for one in flight;
/// several asks meanwhile make one checkpoint). A connector that buffers
/// output until a checkpoint completes (the exactly-once Kafka sink) uses it
/// to bound what it holds, instead of waiting for the interval.
#[derive(Clone)]
pub struct CheckpointRequest(Option<std::sync::Arc<dyn Fn() + Send + Sync>>);

impl CheckpointRequest {
    /// A request that goes nowhere (outside a running job).
    pub fn none() -> Self {
        CheckpointRequest(None)
    }

    /// A request that calls `ask`.
    pub(crate) fn new(ask: impl Fn() + Send + Sync + 'static) -> Self {
        CheckpointRequest(Some(std::sync::Arc::new(ask)))
    }

    /// Asks for a checkpoint.
    pub fn request(&self) {
        if let Some(ask) = &self.0 {
            ask();
        }
    }
}

impl std::fmt::Debug for CheckpointRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "CheckpointRequest"
        } else {
            "CheckpointRequest(none)"
        })
    }
}

/// The outcome of [`Source::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records were appended.
    Ready,
    /// Nothing now; poll again after at most this long.
    Idle(Duration),
    /// No more records, ever (bounded input).
    End,
}

/// A source subtask.
///
/// # Every subtask is an instance
/// The factory given to [`crate::JobBuilder::source`] makes one source per
/// subtask, and each emits what it reads: a source that reads the same input
/// in every subtask emits it `parallelism` times (a count at parallelism 2
/// doubles). Split the input by [`ConnectorContext::subtask`] and
/// [`ConnectorContext::parallelism`]: [`ConnectorContext::owns`] says whether
/// split `i` (a file, a partition, an index) is this subtask's, as the
/// built-in sources deal them (`i % parallelism == subtask`).
///
/// # Positions
/// [`Source::position`] is stored in each checkpoint and handed back in
/// [`ConnectorContext::restored`] (this subtask's) and
/// [`ConnectorContext::restored_all`] (every subtask's: keep positions per
/// split in them, and a source finds its splits again when they move between
/// subtasks).
pub trait Source<T>: Send + 'static {
    /// Whether the source keeps its positions per split in
    /// [`ConnectorContext::restored_all`] and deals splits by
    /// [`ConnectorContext::owns`] (Kafka partitions): then it restores with
    /// another parallelism (rescaling) as it is. A source whose position is
    /// per subtask (`false`, the default) is refused there unless
    /// [`crate::JobConfig::allow_non_restored_state`].
    const POSITIONS_BY_SPLIT: bool = false;

    /// Appends up to `max` records to `out`.
    ///
    /// # Errors
    /// A failure ends the job with this error.
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourcePoll>;
    /// Event-time progress after the records returned so far (no later record
    /// is older), polled after each batch; `None` = no event time.
    fn watermark(&mut self) -> Option<Timestamp> {
        None
    }
    /// Whether the subtask is idle: it has nothing to read for now (no
    /// split, or its splits quiet past an idleness timeout), so the tasks
    /// after it must not hold their event time back for its watermark.
    /// Asked when a poll returns [`SourcePoll::Idle`]; the subtask counts
    /// as active again with its next records or watermark. Default: never.
    fn is_idle(&self) -> bool {
        false
    }
    /// Records this subtask still reads before its end in this run (a
    /// bounded run: the generator's records left, a bounded Kafka source's
    /// offsets to its end offsets), for progress and ETA in the status.
    /// Asked a few times a second. Default: unknown.
    fn remaining(&self) -> Option<u64> {
        None
    }
    /// The position after the last record returned, to store in a checkpoint
    /// (called at a barrier; also the moment to make side outputs durable).
    ///
    /// # Errors
    /// A failure declines the checkpoint and fails the job.
    fn position(&mut self) -> Result<Vec<u8>>;
    /// A readable form of the position for tools.
    fn describe_position(&self) -> String {
        String::new()
    }
    /// Checkpoint `id` (which holds the position taken at its barrier) is complete.
    ///
    /// # Errors
    /// A failure ends the job.
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
}

/// See [`Sink::deferred_sync`].
pub type DeferredSync = Box<dyn FnOnce() -> Result<()> + Send>;

/// A sink subtask.
pub trait Sink<T>: Send + 'static {
    /// Whether the sink restores with another parallelism: each former
    /// subtask's state then goes to one subtask in
    /// [`ConnectorContext::adopted`], which must commit (or finish) what it
    /// had pending. `false` (the default): such a restore is refused,
    /// naming the sink.
    const ADOPTS_STATE: bool = false;

    /// Whether the sink has state to checkpoint (then it needs a uid).
    fn is_stateful() -> bool
    where
        Self: Sized,
    {
        true
    }
    /// Connects and recovers before the first record (Flink's `open`): the
    /// runtime calls it on the task's own thread, so the subtasks of a job
    /// open side by side; whatever the factory did ran one subtask after
    /// another. By default nothing.
    ///
    /// # Errors
    /// A failure ends the job.
    fn open(&mut self) -> Result<()> {
        Ok(())
    }
    /// Writes (drains) a batch.
    ///
    /// # Errors
    /// A failure ends the job.
    fn write(&mut self, records: &mut Vec<T>) -> Result<()>;
    /// The sink's input watermark advanced (event time, after the records
    /// written so far). By default ignored; a sink that feeds another job
    /// (a repartition topic) passes it on.
    ///
    /// # Errors
    /// A failure ends the job.
    fn watermark(&mut self, _watermark: Timestamp) -> Result<()> {
        Ok(())
    }
    /// The sink's input turned idle: no watermark will come until records
    /// do. By default ignored.
    ///
    /// # Errors
    /// A failure ends the job.
    fn idle(&mut self) -> Result<()> {
        Ok(())
    }
    /// Barrier `id` arrived: make everything written so far ready to commit
    /// and return what recovery needs to commit or discard it.
    ///
    /// # Errors
    /// A failure declines the checkpoint.
    fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<u8>>;
    /// [`Sink::snapshot`] at a final barrier (the sources end after it: a
    /// bounded run or a stop): the moment to close what stays open across
    /// checkpoints. By default the same as `snapshot`.
    ///
    /// # Errors
    /// A failure declines the checkpoint.
    fn snapshot_final(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        self.snapshot(id)
    }
    /// Work that must be done before the checkpoint just snapshotted may
    /// complete, run off the record path (an fsync of what was written);
    /// asked right after each snapshot. By default none.
    fn deferred_sync(&mut self) -> Option<DeferredSync> {
        None
    }
    /// Checkpoint `id` is complete: make its output visible.
    ///
    /// # Errors
    /// A failure ends the job; recovery commits again from the checkpoint.
    fn commit(&mut self, id: CheckpointId) -> Result<()>;
    /// The input ended (after the final checkpoint committed).
    ///
    /// # Errors
    /// A failure ends the job.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}
