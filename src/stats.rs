//! The live counters of each task, shared between the task's thread (the
//! only writer) and the status board that samples them once a second.
//!
//! A leaf: tasks, sources and the runtime all write or read these, so they
//! live below every one of them.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters of one task, written by the task's thread.
#[derive(Debug)]
pub(crate) struct TaskStats {
    pub(crate) records_in: AtomicU64,
    pub(crate) records_out: AtomicU64,
    /// Event time of the task in ms (`i64::MIN` before the first watermark).
    pub(crate) watermark: AtomicI64,
    /// Nanoseconds spent waiting for room in a full output channel.
    pub(crate) blocked_ns: AtomicU64,
    /// Fill of the last output channel sent to, in batches.
    pub(crate) output_queue: AtomicU64,
    /// Capacity of each output channel, in batches (0: the task ends in a sink).
    pub(crate) output_capacity: AtomicU64,
    /// Time from the first to the last barrier of the newest aligned checkpoint.
    pub(crate) last_alignment_ns: AtomicU64,
    pub(crate) finished: AtomicBool,
    /// Sources that know their backlog (Kafka) report it here.
    pub(crate) backlog: Backlog,
    /// The `records_in` at which a source task reaches its end in this run
    /// (a bounded run): its count then plus
    /// [`crate::connectors::Source::remaining`]; -1: unknown or endless.
    pub(crate) end_at: AtomicI64,
    /// Sinks: end-to-end latency of the latency markers that reached them.
    pub(crate) latency: Mutex<Option<hdrhistogram::Histogram<u64>>>,
    /// The task keeps keyed state (the fields below mean something).
    pub(crate) keyed: AtomicBool,
    /// Keys read from RocksDB: not in the write-back cache (its misses).
    pub(crate) state_reads: AtomicU64,
    /// Bytes of its RocksDB state in the last checkpoint it took part in.
    pub(crate) state_bytes: AtomicU64,
    /// A sink task: the newest checkpoint whose output its sink committed
    /// (the exactly-once Kafka sink's transaction, the file sink's parts); 0: none.
    pub(crate) committed_checkpoint: AtomicU64,
}

impl Default for TaskStats {
    fn default() -> Self {
        TaskStats {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
            blocked_ns: AtomicU64::new(0),
            output_queue: AtomicU64::new(0),
            output_capacity: AtomicU64::new(0),
            last_alignment_ns: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            backlog: Backlog::default(),
            end_at: AtomicI64::new(-1),
            latency: Mutex::new(None),
            keyed: AtomicBool::new(false),
            state_reads: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            committed_checkpoint: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter that only one thread writes: a plain load and store,
/// no locked read-modify-write on the hot path.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

impl TaskStats {
    /// Records one latency marker's travel time at a sink.
    pub(crate) fn record_latency(&self, latency: Duration) {
        let Ok(mut h) = self.latency.lock() else { return };
        let h = match &mut *h {
            Some(h) => h,
            None => match hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3) {
                Ok(n) => h.insert(n),
                Err(_) => return,
            },
        };
        h.saturating_record(latency.as_nanos().max(1) as u64);
    }
}

/// The backlog of a source, for sources that can tell it (the Kafka source:
/// per partition, its position and the partition's end). A cloneable handle
/// given to sources in [`crate::connectors::ConnectorContext::backlog`].
#[derive(Debug, Clone, Default)]
pub struct Backlog(Arc<Mutex<Vec<PartitionLag>>>);

impl Backlog {
    /// Replaces the reported backlog (call it at most a few times a second).
    pub fn report(&self, partitions: Vec<PartitionLag>) {
        if let Ok(mut b) = self.0.lock() {
            *b = partitions;
        }
    }

    /// The latest report.
    pub(crate) fn get(&self) -> Vec<PartitionLag> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// How far a source is behind the end of one Kafka partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the source reads.
    pub position: i64,
    /// The partition's end offset as last seen by the consumer.
    pub end: i64,
    /// `end - position` (never negative): records (and transaction markers) still to read.
    pub lag: i64,
}
