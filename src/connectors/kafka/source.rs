//! Kafka source: manual assignment, offsets in checkpoints, bounded runs.
//!
//! # Assignment
//! At start each subtask reads the topics' metadata, numbers the partitions
//! (topics in the given order, partitions ascending) and takes those whose
//! number `% parallelism == subtask`. Each assigned partition gets its own
//! librdkafka queue, so end-of-partition and errors are known per partition.
//!
//! # Positions
//! The position of a partition is the next offset to read. It is resolved to
//! a concrete number at start (restored offset, else the configured
//! [`StartPosition`]) and advanced past every record handed downstream, so a
//! checkpoint holds exactly what was consumed. A partition not in the
//! restored checkpoint (added since) starts from the configured position.
//!
//! # Bounded runs
//! With [`KafkaSource::bounded`] each partition stops at the end offset read
//! at start (the last stable offset under read_committed): records at or past
//! it are left for the next run, and reaching the end of a partition (which
//! also skips trailing transaction markers) completes it. When every assigned
//! partition is complete the source ends and the job takes its final checkpoint.

use super::format::{Deserializer, KafkaRecord};
use super::kafka_error;
use super::sink::DeliveryReport;
use super::QuietEof;
use crate::connectors::{ConnectorContext, Source, SourcePoll};
use crate::error::{Result, WeirError};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_operators::{CheckpointId, Timestamp};

/// Where a partition starts when the checkpoint has no offset for it.
#[derive(Debug, Clone, PartialEq)]
pub enum StartPosition {
    /// The oldest retained record.
    Earliest,
    /// After the newest record.
    Latest,
    /// The consumer group's committed offset, else the oldest record.
    Committed,
    /// The first record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
    /// These offsets (topic, partition, offset); other partitions from the oldest record.
    Offsets(Vec<(String, i32, i64)>),
}

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
    brokers: String,
    topics: Vec<String>,
    group_id: Option<String>,
    properties: Vec<(String, String)>,
    start: StartPosition,
    bounded: bool,
    read_committed: bool,
    bad_records: BadRecordPolicy,
    watermarks: Option<WatermarkStrategy>,
    event_time: Option<fn(&T) -> i64>,
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
}

impl KafkaSource<Vec<u8>, fn(&KafkaRecord<'_>) -> std::result::Result<Vec<u8>, String>> {
    /// A source reading `topics` from `brokers` (`host:port,...`) as raw value
    /// bytes, from the earliest offsets, read_committed, unbounded, failing on
    /// bad records.
    pub fn new(brokers: &str, topics: &[&str]) -> Self {
        fn raw(r: &KafkaRecord<'_>) -> std::result::Result<Vec<u8>, String> {
            Ok(r.payload.unwrap_or_default().to_vec())
        }
        KafkaSource {
            brokers: brokers.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            group_id: None,
            properties: Vec::new(),
            start: StartPosition::Earliest,
            bounded: false,
            read_committed: true,
            bad_records: BadRecordPolicy::Fail,
            watermarks: None,
            event_time: None,
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
            brokers: self.brokers,
            topics: self.topics,
            group_id: self.group_id,
            properties: self.properties,
            start: self.start,
            bounded: self.bounded,
            read_committed: self.read_committed,
            bad_records: self.bad_records,
            watermarks: self.watermarks,
            event_time: None,
            deserializer,
            progress: self.progress,
            _t: PhantomData,
        }
    }
    /// The consumer group to commit checkpointed offsets to (for monitoring;
    /// default `weir-<job>-<uid>`).
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_string());
        self
    }
    /// Sets a librdkafka consumer property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
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
    /// Counters of this source (all subtasks): records done / total, skipped.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The factory for [`crate::JobBuilder::source`].
    pub fn factory(self) -> impl Fn(ConnectorContext) -> Result<KafkaReader<T, D>> + Send + 'static {
        move |ctx| KafkaReader::open(&self, &ctx)
    }

    fn client_config(&self, ctx: &ConnectorContext) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set(
                "group.id",
                self.group_id
                    .clone()
                    .unwrap_or_else(|| format!("weir-{}-{}", ctx.job, ctx.uid)),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
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

/// The offset of one partition in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
    /// The partition's watermark, if event time is on.
    pub watermark: Option<i64>,
}

/// A Kafka source subtask's position: what a checkpoint stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KafkaPosition {
    /// Per assigned partition.
    pub partitions: Vec<PartitionPosition>,
}

const POSITION_MAGIC: &[u8] = b"weir-kafka-1:";

impl KafkaPosition {
    /// Encodes for a checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = POSITION_MAGIC.to_vec();
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }
    /// Decodes what [`KafkaPosition::encode`] wrote; `None` for other bytes
    /// (another kind of source).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes.strip_prefix(POSITION_MAGIC)?).ok()
    }
}

/// A consumed record, borrowed from the consumer.
struct Incoming<'a> {
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
}

impl<'a> Incoming<'a> {
    fn of(msg: &'a rdkafka::message::BorrowedMessage<'a>) -> Self {
        Incoming {
            offset: msg.offset(),
            timestamp_ms: msg.timestamp().to_millis(),
            key: msg.key(),
            payload: msg.payload(),
        }
    }
}

/// A record the deserializer rejected, owned so that the consumer can be used again.
struct BadRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    why: String,
}

/// Takes one record of partition `p`: advances the position and emits it,
/// unless it lies past a bounded run's end. Returns it when it does not
/// deserialize.
fn accept<T, D: Deserializer<T>>(
    p: &mut PartitionState,
    deserializer: &mut D,
    event_time: Option<fn(&T) -> i64>,
    r: &Incoming<'_>,
    out: &mut Vec<T>,
    emitted: &mut usize,
) -> Option<BadRecord> {
    if r.offset < p.next_offset {
        return None; // already taken
    }
    if p.end.is_some_and(|end| r.offset >= end) {
        p.done = true; // later records belong to the next run
        return None;
    }
    p.next_offset = r.offset + 1;
    p.last_record = Instant::now();
    if let (Some(ts), None) = (r.timestamp_ms, event_time) {
        p.max_timestamp = Some(p.max_timestamp.map_or(ts, |m| m.max(ts)));
    }
    if p.end.is_some_and(|end| p.next_offset >= end) {
        p.done = true;
    }
    let record = KafkaRecord {
        topic: &p.topic,
        partition: p.partition,
        offset: r.offset,
        key: r.key,
        payload: r.payload,
        timestamp_ms: r.timestamp_ms,
    };
    match deserializer.deserialize(&record) {
        Ok(v) => {
            if let Some(of) = event_time {
                let ts = of(&v);
                p.max_timestamp = Some(p.max_timestamp.map_or(ts, |m| m.max(ts)));
            }
            out.push(v);
            *emitted += 1;
            None
        }
        Err(why) => Some(BadRecord {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: r.offset,
            key: r.key.map(<[u8]>::to_vec),
            payload: r.payload.map(<[u8]>::to_vec),
            why,
        }),
    }
}

struct PartitionState {
    topic: String,
    partition: i32,
    next_offset: i64,
    end: Option<i64>,
    done: bool,
    max_timestamp: Option<i64>,
    watermark: Option<i64>,
    last_record: Instant,
}

/// A running Kafka source subtask.
pub struct KafkaReader<T, D> {
    name: String,
    consumer: Arc<BaseConsumer<QuietEof>>,
    partitions: Vec<PartitionState>,
    /// One queue per partition (same index as `partitions`).
    queues: Vec<PartitionQueue<QuietEof>>,
    deserializer: D,
    bad_records: BadRecordPolicy,
    dead_letters: Option<BaseProducer<DeliveryReport>>,
    bounded: bool,
    watermarks: Option<WatermarkStrategy>,
    event_time: Option<fn(&T) -> i64>,
    emitted_watermark: Option<i64>,
    at_barrier: Option<TopicPartitionList>,
    progress: Arc<Progress>,
    next_partition: usize,
    /// Where the per-partition lag goes, and when it was last reported.
    backlog: crate::stats::Backlog,
    backlog_reported: Instant,
    _t: PhantomData<fn() -> T>,
}

/// How often a reader reports its lag.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

impl<T: Send + 'static, D: Deserializer<T>> KafkaReader<T, D> {
    fn open(config: &KafkaSource<T, D>, ctx: &ConnectorContext) -> Result<Self> {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let err = |action: &str, e: &dyn std::fmt::Display| kafka_error(&name, action, e);
        let consumer: Arc<BaseConsumer<QuietEof>> = Arc::new(
            config
                .client_config(ctx)
                .create_with_context(QuietEof)
                .map_err(|e| err("cannot create consumer", &e))?,
        );
        // Offsets of every subtask: a partition may have been another subtask's
        // in the last run (partitions added to an earlier topic shift the numbering).
        let mut restored_positions = Vec::new();
        for b in &ctx.restored_all {
            restored_positions
                .push(KafkaPosition::decode(b).ok_or_else(|| err("restored position", &"not a Kafka position"))?);
        }
        let restored: HashMap<(String, i32), &PartitionPosition> = restored_positions
            .iter()
            .flat_map(|p| p.partitions.iter())
            .map(|p| ((p.topic.clone(), p.partition), p))
            .collect();

        // Number every partition of every topic; take ours.
        let mut all = Vec::new();
        for topic in &config.topics {
            let md = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| err(&format!("cannot read metadata of topic `{topic}`"), &e))?;
            let t = md.topics().iter().find(|t| t.name() == topic);
            match t {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                    ps.sort_unstable();
                    all.extend(ps.into_iter().map(|p| (topic.clone(), p)));
                }
                _ => {
                    return Err(err(
                        &format!("topic `{topic}`"),
                        &"does not exist (or has no partitions)",
                    ))
                }
            }
        }
        let mine: Vec<(String, i32)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % ctx.parallelism.max(1) == ctx.subtask)
            .map(|(_, tp)| tp)
            .collect();

        // Resolve every start to a concrete offset, so that a checkpoint is exact.
        let mut starts = Vec::with_capacity(mine.len());
        for (topic, partition) in &mine {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, METADATA_TIMEOUT)
                .map_err(|e| err(&format!("cannot read offsets of {topic}/{partition}"), &e))?;
            tracing::debug!("{name}: {topic}/{partition} holds offsets {low}..{high}");
            let start = match restored.get(&(topic.clone(), *partition)) {
                Some(p) => p.next_offset,
                None => match &config.start {
                    StartPosition::Earliest => low,
                    StartPosition::Latest => high,
                    StartPosition::Committed => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(topic, *partition);
                        let committed = consumer
                            .committed_offsets(tpl, METADATA_TIMEOUT)
                            .map_err(|e| err(&format!("cannot read committed offset of {topic}/{partition}"), &e))?;
                        match committed.find_partition(topic, *partition).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => low,
                        }
                    }
                    StartPosition::Timestamp(ts) => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(topic, *partition, Offset::Offset(*ts))
                            .map_err(|e| err("timestamp start", &e))?;
                        let found = consumer.offsets_for_times(tpl, METADATA_TIMEOUT).map_err(|e| {
                            err(&format!("cannot find offset for time {ts} in {topic}/{partition}"), &e)
                        })?;
                        match found.find_partition(topic, *partition).map(|e| e.offset()) {
                            Some(Offset::Offset(o)) => o,
                            _ => high,
                        }
                    }
                    StartPosition::Offsets(list) => list
                        .iter()
                        .find(|(t, p, _)| t == topic && p == partition)
                        .map_or(low, |(_, _, o)| *o),
                },
            };
            let end = if config.bounded { Some(high) } else { None };
            let clamped = start.clamp(low, high.max(low));
            if clamped != start {
                tracing::warn!(
                    "{name}: offset {start} of {topic}/{partition} is outside the partition's range {low}..{high} \
                     (records deleted by retention, or the topic was recreated): starting at {clamped}"
                );
            }
            starts.push((clamped, end));
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), (start, _)) in mine.iter().zip(&starts) {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*start))
                .map_err(|e| err("assign", &e))?;
        }
        consumer.assign(&tpl).map_err(|e| err("cannot assign partitions", &e))?;
        let mut partitions = Vec::with_capacity(mine.len());
        let mut queues = Vec::with_capacity(mine.len());
        for ((topic, partition), (start, end)) in mine.into_iter().zip(starts) {
            let queue = consumer
                .split_partition_queue(&topic, partition)
                .ok_or_else(|| err(&format!("cannot read {topic}/{partition}"), &"no partition queue"))?;
            let restored_wm = restored.get(&(topic.clone(), partition)).and_then(|p| p.watermark);
            if let Some(end) = end {
                config
                    .progress
                    .total
                    .fetch_add(end.saturating_sub(start).max(0) as u64, Ordering::Relaxed);
            }
            queues.push(queue);
            partitions.push(PartitionState {
                done: end.is_some_and(|e| start >= e),
                topic,
                partition,
                next_offset: start,
                end,
                max_timestamp: None,
                watermark: restored_wm,
                last_record: Instant::now(),
            });
        }
        let dead_letters = match &config.bad_records {
            BadRecordPolicy::DeadLetter(_) => {
                let mut c = ClientConfig::new();
                c.set("bootstrap.servers", &config.brokers)
                    .set("enable.idempotence", "true");
                Some(
                    c.create_with_context(DeliveryReport::default())
                        .map_err(|e| err("cannot create dead-letter producer", &e))?,
                )
            }
            _ => None,
        };
        let emitted_watermark = partitions.iter().filter_map(|p| p.watermark).min();
        tracing::info!(
            "{name}: reading {} partition(s){}",
            partitions.len(),
            if config.bounded { " up to their current end" } else { "" }
        );
        Ok(KafkaReader {
            name,
            consumer,
            partitions,
            queues,
            deserializer: config.deserializer.clone(),
            bad_records: config.bad_records.clone(),
            dead_letters,
            bounded: config.bounded,
            watermarks: config.watermarks,
            event_time: config.event_time,
            emitted_watermark,
            at_barrier: None,
            progress: config.progress.clone(),
            next_partition: 0,
            backlog: ctx.backlog.clone(),
            backlog_reported: Instant::now()
                .checked_sub(BACKLOG_INTERVAL)
                .unwrap_or_else(Instant::now),
            _t: PhantomData,
        })
    }

    /// Reports each partition's lag: the end offset the consumer last saw
    /// (librdkafka's cached high watermark, no request to the broker) minus
    /// the next offset to read. Partitions whose end is not known yet are left out.
    fn report_backlog(&mut self) {
        self.backlog_reported = Instant::now();
        let client = self.consumer.client().native_ptr();
        let lags = self
            .partitions
            .iter()
            .filter_map(|p| {
                let topic = std::ffi::CString::new(p.topic.as_str()).ok()?;
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: `client` is the live handle of `self.consumer`, `topic` a
                // NUL-terminated string that outlives the call, and the out
                // pointers point to locals; the call only reads cached values.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        client,
                        topic.as_ptr(),
                        p.partition,
                        &mut low,
                        &mut high,
                    )
                };
                let end = if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
                    high
                } else {
                    p.end?
                };
                Some(crate::stats::PartitionLag {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    position: p.next_offset,
                    end,
                    lag: (end - p.next_offset).max(0),
                })
            })
            .collect();
        self.backlog.report(lags);
    }

    /// End of partition `i` reached: everything up to the consumer's position
    /// was delivered; records it skipped (transaction markers, aborted
    /// records) count as consumed. The position, not the end seen at start,
    /// decides: a restarting broker may report an end of partition too early.
    fn reached_end(&mut self, i: usize) {
        let p = &mut self.partitions[i];
        let position = self.consumer.position().ok().and_then(|tpl| {
            tpl.find_partition(&p.topic, p.partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
        });
        if let Some(pos) = position {
            p.next_offset = p.next_offset.max(p.end.map_or(pos, |end| pos.min(end)));
        }
        if p.end.is_some_and(|end| p.next_offset >= end) {
            p.done = true;
        }
        tracing::debug!(
            "{}: end of {}/{} at {position:?}; next offset {}",
            self.name,
            p.topic,
            p.partition,
            p.next_offset
        );
    }

    /// Handles what the consumer's own queue returned.
    fn take_from_main(
        &mut self,
        polled: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
        out: &mut Vec<T>,
        emitted: &mut usize,
    ) -> Result<()> {
        match polled {
            Ok(msg) => {
                let (partition, offset) = (msg.partition(), msg.offset());
                let Some(i) = self
                    .partitions
                    .iter()
                    .position(|p| p.topic == msg.topic() && p.partition == partition)
                else {
                    tracing::warn!(
                        "{}: ignoring a record of {}/{partition} at {offset}: not assigned",
                        self.name,
                        msg.topic()
                    );
                    return Ok(());
                };
                let record = Incoming::of(&msg);
                if let Some(bad) = accept(
                    &mut self.partitions[i],
                    &mut self.deserializer,
                    self.event_time,
                    &record,
                    out,
                    emitted,
                ) {
                    drop(msg);
                    self.bad_record(bad)?;
                }
            }
            // Only the partition number is known here: the position decides per topic.
            Err(KafkaError::PartitionEOF(partition)) => {
                for i in 0..self.partitions.len() {
                    if self.partitions[i].partition == partition {
                        self.reached_end(i);
                    }
                }
            }
            Err(e) => tracing::warn!("{}: {e}", self.name),
        }
        Ok(())
    }

    fn bad_record(&mut self, bad: BadRecord) -> Result<()> {
        let BadRecord {
            topic,
            partition,
            offset,
            key,
            payload,
            why,
        } = bad;
        let (topic, key, payload) = (topic.as_str(), key.as_deref(), payload.as_deref());
        match &self.bad_records {
            BadRecordPolicy::Fail => Err(WeirError::Connector {
                connector: self.name.clone(),
                message: format!(
                    "cannot deserialize the record at topic `{topic}` partition {partition} offset {offset}: {why}"
                ),
            }),
            BadRecordPolicy::Skip => {
                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("weir_kafka_records_skipped_total", "source" => self.name.clone()).increment(1);
                Ok(())
            }
            BadRecordPolicy::DeadLetter(dlq) => {
                let Some(producer) = &self.dead_letters else {
                    return Ok(());
                };
                let (p, o) = (partition.to_string(), offset.to_string());
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "weir.error",
                        value: Some(why.as_bytes()),
                    })
                    .insert(Header {
                        key: "weir.source.topic",
                        value: Some(topic.as_bytes()),
                    })
                    .insert(Header {
                        key: "weir.source.partition",
                        value: Some(p.as_bytes()),
                    })
                    .insert(Header {
                        key: "weir.source.offset",
                        value: Some(o.as_bytes()),
                    });
                let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(dlq).headers(headers);
                if let Some(k) = key {
                    record = record.key(k);
                }
                if let Some(v) = payload {
                    record = record.payload(v);
                }
                let mut record = record;
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                            producer.poll(Duration::from_millis(10));
                            record = r;
                        }
                        Err((e, _)) => {
                            return Err(kafka_error(
                                &self.name,
                                &format!("cannot write to dead-letter topic `{dlq}`"),
                                e,
                            ))
                        }
                    }
                }
                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

impl<T: Send + 'static, D: Deserializer<T>> Source<T> for KafkaReader<T, D> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourcePoll> {
        let n = self.partitions.len();
        let mut emitted = 0;
        if self.backlog_reported.elapsed() >= BACKLOG_INTERVAL {
            self.report_backlog();
        }
        // First the consumer's own queue: events, and records fetched in the
        // instant between `assign` and the split into partition queues. They
        // precede everything in the partition queues, so they go first.
        let consumer = self.consumer.clone();
        while emitted < max {
            let Some(polled) = consumer.poll(Duration::ZERO) else {
                break;
            };
            self.take_from_main(polled, out, &mut emitted)?;
        }
        // Records taken above may have completed every partition: hand them
        // over first (`End` carries no records), and end on the next poll.
        if self.bounded && emitted == 0 && self.partitions.iter().all(|p| p.done) {
            return Ok(SourcePoll::End);
        }
        for step in 0..n {
            let i = (self.next_partition + step) % n;
            while emitted < max && !self.partitions[i].done {
                let Some(polled) = self.queues[i].poll(Duration::ZERO) else {
                    break;
                };
                match polled {
                    Ok(msg) => {
                        let record = Incoming::of(&msg);
                        if let Some(bad) = accept(
                            &mut self.partitions[i],
                            &mut self.deserializer,
                            self.event_time,
                            &record,
                            out,
                            &mut emitted,
                        ) {
                            drop(msg);
                            self.bad_record(bad)?;
                        }
                    }
                    Err(KafkaError::PartitionEOF(_)) => {
                        self.reached_end(i);
                        break;
                    }
                    Err(e) => {
                        let p = &self.partitions[i];
                        tracing::warn!("{}: {}/{}: {e} (retrying)", self.name, p.topic, p.partition);
                        break;
                    }
                }
            }
            if emitted >= max {
                self.next_partition = (i + 1) % n.max(1);
                break;
            }
        }
        if emitted == 0 {
            // Nothing ready: serve the client and wait a little for data.
            if let Some(polled) = consumer.poll(Duration::from_millis(1)) {
                self.take_from_main(polled, out, &mut emitted)?;
            }
        }
        if let Some(p) = &self.dead_letters {
            p.poll(Duration::ZERO);
        }
        if emitted > 0 {
            self.progress.done.fetch_add(emitted as u64, Ordering::Relaxed);
            return Ok(SourcePoll::Ready);
        }
        if self.bounded && self.partitions.iter().all(|p| p.done) {
            return Ok(SourcePoll::End);
        }
        Ok(SourcePoll::Idle(Duration::ZERO))
    }

    fn watermark(&mut self) -> Option<Timestamp> {
        let strategy = self.watermarks?;
        let now = Instant::now();
        let mut min: Option<i64> = None;
        for p in &mut self.partitions {
            if let Some(ts) = p.max_timestamp {
                let w = ts - strategy.out_of_orderness_ms - 1;
                p.watermark = Some(p.watermark.map_or(w, |old| old.max(w)));
            }
            let idle = strategy
                .idle_timeout
                .is_some_and(|t| now.duration_since(p.last_record) > t);
            // A partition that reached a bounded run's end still holds the watermark:
            // the next run continues it, as a continuous run would.
            if idle {
                continue;
            }
            match p.watermark {
                Some(w) => min = Some(min.map_or(w, |m| m.min(w))),
                None => return None, // a live partition without event time holds everything back
            }
        }
        let w = min?;
        // Never backwards, also not below what a restored checkpoint had emitted.
        if self.emitted_watermark.is_some_and(|e| w <= e) {
            return None;
        }
        self.emitted_watermark = Some(w);
        Some(Timestamp(w))
    }

    fn position(&mut self) -> Result<Vec<u8>> {
        if let Some(p) = &self.dead_letters {
            p.flush(Duration::from_secs(60))
                .map_err(|e| kafka_error(&self.name, "cannot flush the dead-letter topic", e))?;
            // A dead letter the broker refused must fail the checkpoint, not be skipped.
            if let Some(failure) = p.context().take_failure() {
                return Err(kafka_error(
                    &self.name,
                    "cannot write to the dead-letter topic",
                    failure,
                ));
            }
        }
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset));
        }
        self.at_barrier = Some(tpl);
        Ok(KafkaPosition {
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionPosition {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset: p.next_offset,
                    watermark: p.watermark,
                })
                .collect(),
        }
        .encode())
    }

    fn describe_position(&self) -> String {
        self.partitions
            .iter()
            .map(|p| format!("{}/{}={}", p.topic, p.partition, p.next_offset))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn checkpoint_complete(&mut self, _id: CheckpointId) -> Result<()> {
        // For monitoring and tools only: recovery trusts the checkpoint's offsets.
        if let Some(tpl) = self.at_barrier.take() {
            if tpl.count() > 0 {
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!("{}: cannot commit offsets to the consumer group: {e}", self.name);
                }
            }
        }
        Ok(())
    }
}

/// One Kafka offset stored in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    /// The source operator's uid.
    pub source: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
}

/// The Kafka offsets stored in `manifest`, by source, topic and partition.
pub fn stored_offsets(manifest: &crate::checkpoint::Manifest) -> Vec<StoredOffset> {
    let mut out = Vec::new();
    for (uid, op) in &manifest.operators {
        for state in &op.subtasks {
            let crate::checkpoint::SubtaskState::Bytes { hex, .. } = state else {
                continue;
            };
            let Some(position) = crate::checkpoint::manifest::from_hex(hex).and_then(|b| KafkaPosition::decode(&b))
            else {
                continue;
            };
            out.extend(position.partitions.into_iter().map(|p| StoredOffset {
                source: uid.clone(),
                topic: p.topic,
                partition: p.partition,
                next_offset: p.next_offset,
            }));
        }
    }
    out.sort_by(|a, b| (&a.source, &a.topic, a.partition).cmp(&(&b.source, &b.topic, b.partition)));
    out
}

/// The current end offsets (last stable offsets, read_committed) of these partitions.
///
/// # Errors
/// When the brokers cannot be reached.
pub fn end_offsets<'a>(
    brokers: &str,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> Result<HashMap<(String, i32), i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-offsets")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| kafka_error("weir offsets", "cannot create consumer", e))?;
    let mut out = HashMap::new();
    for (topic, partition) in partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
            .map_err(|e| {
                kafka_error(
                    "weir offsets",
                    &format!("cannot read the end of {topic}/{partition}"),
                    e,
                )
            })?;
        out.insert((topic.to_string(), partition), high);
    }
    Ok(out)
}
