//! What flows on a channel between tasks: records, watermarks, barriers, end.

use serde::{Deserialize, Serialize};

/// Identifies one checkpoint. Ids grow by one per triggered checkpoint and are
/// never reused by a job, also across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

impl std::fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Event time in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The end of time: a watermark of `MAX` fires every event-time window.
    pub const MAX: Timestamp = Timestamp(i64::MAX);
    /// Before any event: the watermark of an input that has said nothing yet.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
}

/// A checkpoint barrier: everything before it belongs to checkpoint `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    /// The checkpoint this barrier starts.
    pub id: CheckpointId,
    /// A final barrier: after it the sources end (bounded run or graceful stop).
    pub then_stop: bool,
}

/// One message on a channel between two tasks.
///
/// Records travel in small batches that a task still processes one record at a
/// time; control messages are never reordered with records.
#[derive(Debug)]
pub enum Message<T> {
    /// A batch of records (at most ~1024), in order.
    Records(Vec<T>),
    /// Event-time progress of the sending subtask: no later record is older.
    Watermark(Timestamp),
    /// The sender is idle (Flink's `WatermarkStatus.IDLE`): it has no input
    /// for now, so the receiver's event time must not wait for its
    /// watermark. Its next `Records` or `Watermark` makes it active again.
    Idle,
    /// Checkpoint barrier.
    Barrier(Barrier),
    /// The sender has no more input.
    End,
    /// A latency marker: the instant a source task sent it. It queues behind
    /// the records before it and takes one path to one sink, which records
    /// its age as the end-to-end latency (Flink's latency markers). Operators
    /// never see it.
    LatencyMarker(std::time::Instant),
}
