//! Kafka source: manual assignment, offsets in checkpoints, bounded runs.
//!
//! # Assignment
//! At start each subtask reads the topics' metadata, numbers the partitions
//! (topics in the given order, partitions ascending) and takes those whose
//! number `% parallelism == subtask`. Each assigned partition gets its own
//! librdkafka queue, so end-of-partition and errors are known per partition.
//!
//! The rules of numbering and of start offsets are pure functions in
//! `kafka/assign.rs`; the reader (`source/reader.rs`) asks the broker for
//! what they need.
//!
//! # Positions
//! The position of a partition is the next offset to read (a
//! [`NextOffset`](super::NextOffset)). It is resolved to a concrete number at
//! start (restored offset, else the configured [`StartPosition`], clamped into
//! the partition's range) and advanced past every record handed downstream,
//! so a checkpoint holds exactly what was consumed. A partition not in the
//! restored checkpoint (added since) starts from the configured position.
//!
//! # Bounded runs
//! With [`KafkaSource::bounded`] each partition stops at the end offset read
//! at start (the last stable offset under read_committed): records at or past
//! it are left for the next run, and reaching the end of a partition (which
//! also skips trailing transaction markers) completes it. When every assigned
//! partition is complete the source ends and the job takes its final checkpoint.

use super::connection::KafkaConnection;
use super::format::{Deserializer, KafkaRecord};
use crate::connectors::ConnectorContext;
use crate::error::Result;
use rdkafka::ClientConfig;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

mod dead_letter;
mod partition;
mod reader;
mod upstream;

pub use upstream::{Control, Upstreams};

/// Tells a control record (see [`KafkaSource::control`]) from data.
pub type ControlDecoder = fn(&KafkaRecord<'_>) -> Option<Control>;

pub use super::assign::StartPosition;
pub use reader::KafkaReader;

/// What to do with a record the deserializer rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Fail the job, naming topic, partition and offset (the default).
    Fail,
    /// Skip it and count it (`weir_kafka_records_skipped_total`).
    Skip,
    /// Write it unchanged to this topic, with the error and its origin in headers.
    DeadLetter(String),
}

/// What to do when input the job has not read was deleted before it could
/// read it: the offset in the restored checkpoint is below the partition's
/// log start (retention or a deletion removed the records while the job was
/// down), or the consumer's position falls off the log while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LostInputPolicy {
    /// Fail the job, naming topic, partition, the offset to read and the log
    /// start (the default: silently resuming past lost input is data loss).
    #[default]
    Fail,
    /// Go on from the log start, with a warning, and count the offsets
    /// skipped (`weir_kafka_offsets_lost_total`, [`Progress::lost`]): Flink's
    /// behaviour, chosen explicitly.
    Skip,
}

/// Event time from the Kafka record timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatermarkStrategy {
    /// Records may be this much older than the newest seen in their partition.
    pub out_of_orderness_ms: i64,
    /// A partition without records for this long no longer holds the watermark back.
    pub idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Records may arrive up to `ms` later than newer ones of their partition
    /// (Flink's `forBoundedOutOfOrderness`): watermark = newest − `ms` − 1.
    pub fn bounded_out_of_orderness(ms: i64) -> Self {
        WatermarkStrategy {
            out_of_orderness_ms: ms,
            idle_timeout: None,
        }
    }

    /// Timestamps never decrease within a partition (Flink's `forMonotonousTimestamps`).
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(0)
    }

    /// A partition without records for `timeout` stops holding the watermark back.
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

/// A Kafka source, described; [`KafkaSource::factory`] makes it a source for
/// [`crate::JobBuilder::source`].
#[derive(Clone)]
pub struct KafkaSource<T, D> {
    cluster: KafkaConnection,
    topics: Vec<String>,
    only_partitions: Option<Vec<i32>>,
    group_id: Option<String>,
    properties: Vec<(String, String)>,
    start: StartPosition,
    bounded: bool,
    read_committed: bool,
    bad_records: BadRecordPolicy,
    lost_input: LostInputPolicy,
    watermarks: Option<WatermarkStrategy>,
    event_time: Option<fn(&T) -> i64>,
    control: Option<ControlDecoder>,
    upstream_input: Option<String>,
    deserializer: D,
    progress: Arc<Progress>,
    _t: PhantomData<fn() -> T>,
}

/// Records consumed and (bounded runs) to consume, over every subtask.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records consumed in this run.
    pub done: AtomicU64,
    /// Offsets to consume in this run (bounded runs; includes transaction markers).
    pub total: AtomicU64,
    /// Records skipped as bad.
    pub skipped: AtomicU64,
    /// Offsets skipped because their records were deleted before they were
    /// read ([`LostInputPolicy::Skip`]).
    pub lost: AtomicU64,
}

impl KafkaSource<Vec<u8>, fn(&KafkaRecord<'_>) -> std::result::Result<Vec<u8>, String>> {
    /// A source reading `topics` from `cluster` (bootstrap servers
    /// `host:port,...`, or a [`KafkaConnection`] with TLS/SASL properties) as
    /// raw value bytes, from the earliest offsets, read_committed, unbounded,
    /// failing on bad records.
    pub fn new(cluster: impl Into<KafkaConnection>, topics: &[&str]) -> Self {
        fn raw(r: &KafkaRecord<'_>) -> std::result::Result<Vec<u8>, String> {
            Ok(r.payload.unwrap_or_default().to_vec())
        }
        KafkaSource {
            cluster: cluster.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            only_partitions: None,
            group_id: None,
            properties: Vec::new(),
            start: StartPosition::Earliest,
            bounded: false,
            read_committed: true,
            bad_records: BadRecordPolicy::Fail,
            lost_input: LostInputPolicy::Fail,
            watermarks: None,
            event_time: None,
            control: None,
            upstream_input: None,
            deserializer: raw,
            progress: Arc::new(Progress::default()),
            _t: PhantomData,
        }
    }
}

impl<T: Send + 'static, D: Deserializer<T>> KafkaSource<T, D> {
    /// Reads values with `deserializer` (see [`super::format`]).
    pub fn deserializer<T2: Send + 'static, D2: Deserializer<T2>>(self, deserializer: D2) -> KafkaSource<T2, D2> {
        KafkaSource {
            cluster: self.cluster,
            topics: self.topics,
            only_partitions: self.only_partitions,
            group_id: self.group_id,
            properties: self.properties,
            start: self.start,
            bounded: self.bounded,
            read_committed: self.read_committed,
            bad_records: self.bad_records,
            lost_input: self.lost_input,
            watermarks: self.watermarks,
            event_time: None,
            control: self.control,
            upstream_input: self.upstream_input,
            deserializer,
            progress: self.progress,
            _t: PhantomData,
        }
    }
    /// Reads only these partitions of each topic (a distributed member's
    /// shard, see [`crate::distributed`]); a missing one is an error naming it.
    pub fn only_partitions(mut self, partitions: &[i32]) -> Self {
        self.only_partitions = Some(partitions.to_vec());
        self
    }
    /// The consumer group to commit checkpointed offsets to (for monitoring;
    /// default `weir-<job>-<uid>`).
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_string());
        self
    }
    /// Sets a librdkafka consumer property. A [connection
    /// property](super::connection::is_connection_property) (TLS, SASL,
    /// sockets) reaches every client of the source, its dead-letter producer too.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        if super::connection::is_connection_property(key) {
            self.cluster.set(key, value);
        }
        self.properties.push((key.to_string(), value.to_string()));
        self
    }
    /// Where partitions without a checkpointed offset start (default earliest).
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }
    /// Stop every partition at the end offset seen at start (default: run forever).
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }
    /// read_committed (default) or read_uncommitted.
    pub fn read_committed(mut self, read_committed: bool) -> Self {
        self.read_committed = read_committed;
        self
    }
    /// What to do with records that do not deserialize (default: fail).
    pub fn on_bad_record(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// What to do when unread input was deleted (default: fail the job).
    pub fn on_lost_input(mut self, policy: LostInputPolicy) -> Self {
        self.lost_input = policy;
        self
    }
    /// Event time and watermarks from the record timestamps.
    pub fn watermarks(mut self, strategy: WatermarkStrategy) -> Self {
        self.watermarks = Some(strategy);
        self
    }
    /// Event time from a field of the record (ms since the epoch) instead of
    /// the Kafka record timestamp. Set it after [`KafkaSource::deserializer`].
    pub fn event_time(mut self, of: fn(&T) -> i64) -> Self {
        self.event_time = Some(of);
        self
    }
    /// Reads a topic other jobs' shards write (a repartition topic, see
    /// [`crate::distributed::repartition`]): records `decoder` recognises
    /// are control records, not data. The event time of a partition is
    /// then the minimum of its upstream shards' watermarks (idle ones left
    /// out), kept in checkpoints, instead of its records' timestamps.
    pub fn control(mut self, decoder: ControlDecoder) -> Self {
        self.control = Some(decoder);
        self
    }
    /// With [`KafkaSource::control`]: the upstream shards read `topic` (the
    /// job's input), shard `u` its partition `u`. A partition is complete
    /// once every upstream shard sent its end ([`Control::End`]) at or past
    /// the current end of its input partition, and the source ends when all
    /// of its partitions are: a bounded distributed run ends downstream of
    /// a repartition topic when its upstream did.
    pub fn upstream_input(mut self, topic: &str) -> Self {
        self.upstream_input = Some(topic.to_string());
        self
    }
    /// Counters of this source (all subtasks): records done / total, skipped.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The factory for [`crate::JobBuilder::source`].
    pub fn factory(self) -> impl Fn(ConnectorContext) -> Result<KafkaReader<T, D>> + Send + 'static {
        move |ctx| KafkaReader::open(&self, &ctx)
    }

    fn client_config(&self, ctx: &ConnectorContext) -> ClientConfig {
        let mut c = self.cluster.client_config();
        c.set(
            "group.id",
            self.group_id
                .clone()
                .unwrap_or_else(|| format!("weir-{}-{}", ctx.job, ctx.uid)),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Never jump silently: a position that falls off the log is an
        // error the reader handles by the lost-input policy.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "20")
        // librdkafka waits this long after a fetch that came back empty (a
        // partition at its end) before fetching it again: its 500 ms default
        // put up to half a second between a record's arrival and its read.
        .set("fetch.error.backoff.ms", "20")
        .set(
            "isolation.level",
            if self.read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
