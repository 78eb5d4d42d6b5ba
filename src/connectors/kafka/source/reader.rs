//! A running Kafka source subtask: [`KafkaReader`].
//!
//! # Hot path
//! `poll` drains the partition queues round-robin into the batch; per record
//! it compares and stores [`NextOffset`]s (plain `i64`s) and calls the
//! deserializer: no allocation, lock or dynamic call is added per record.
//! The rest of this file runs at start, at barriers or once a second.

use super::super::admin;
use super::super::assign::{self, Restored, Watermarks};
use super::super::format::Deserializer;
use super::super::offset::NextOffset;
use super::super::position::{KafkaPosition, PartitionPosition};
use super::super::{bootstrap_of, broker_error, connector_error, kafka_error, QuietEof};
use super::dead_letter::{BadRecord, DeadLetters};
use super::partition::{accept, Incoming, PartitionState};
use super::upstream::{self, Merged};
use super::{BadRecordPolicy, ControlDecoder, KafkaSource, LostInputPolicy, Progress, Upstreams, WatermarkStrategy};
use crate::connectors::{ConnectorContext, Source, SourcePoll};
use crate::error::{Result, WeirError};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_operators::{CheckpointId, Timestamp};

/// A running Kafka source subtask.
pub struct KafkaReader<T, D> {
    name: String,
    consumer: Arc<BaseConsumer<QuietEof>>,
    partitions: Vec<PartitionState>,
    /// One queue per partition (same index as `partitions`).
    queues: Vec<PartitionQueue<QuietEof>>,
    deserializer: D,
    bad_records: BadRecordPolicy,
    lost_input: LostInputPolicy,
    dead_letters: Option<DeadLetters>,
    bounded: bool,
    watermarks: Option<WatermarkStrategy>,
    event_time: Option<fn(&T) -> i64>,
    control: Option<ControlDecoder>,
    /// See [`KafkaSource::upstream_input`], and when its ends were last checked.
    upstream_input: Option<String>,
    ends_checked: Option<Instant>,
    emitted_watermark: Option<i64>,
    at_barrier: Option<TopicPartitionList>,
    progress: Arc<Progress>,
    next_partition: usize,
    /// Polls in a row that found nothing (see [`IDLE_POLLS`]).
    empty_polls: u32,
    /// Where the per-partition lag goes, and when it was last reported.
    backlog: crate::stats::Backlog,
    backlog_reported: Instant,
    _t: PhantomData<fn() -> T>,
}

/// Whether a consumer error says the position is outside the log (with
/// `auto.offset.reset=error`, librdkafka reports instead of jumping).
fn fell_off_the_log(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

/// Counts `gap` offsets skipped as lost input, with a warning.
fn lost_offsets(name: &str, progress: &Progress, gap: i64) {
    tracing::warn!("{name}: skipping {gap} offset(s) of input deleted before it was read (lost input skipped)");
    let gap = gap.max(0) as u64;
    progress.lost.fetch_add(gap, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("weir_kafka_offsets_lost_total", "source" => name.to_string()).increment(gap);
}

/// How often a reader reports its lag.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);

/// Empty polls in a row (each waits 1 ms for data) before a quiet source
/// waits [`IDLE_WAIT`] between polls.
const IDLE_POLLS: u32 = 50;
/// Between two polls of a quiet source: the most a record arriving after a
/// quiet spell waits, beside the fetch itself.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// How often a source ending with its upstream checks the upstream's ends.
const UPSTREAM_CHECK: Duration = Duration::from_millis(500);

/// How long a metadata or offset request at start may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

impl<T: Send + 'static, D: Deserializer<T>> KafkaReader<T, D> {
    /// Starts subtask `ctx.subtask`: numbers the partitions, resolves every
    /// start to a concrete offset (see `kafka/assign.rs`), assigns them and
    /// splits each into its own queue.
    pub(super) fn open(config: &KafkaSource<T, D>, ctx: &ConnectorContext) -> Result<Self> {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let client = config.client_config(ctx);
        let bootstrap = bootstrap_of(&client);
        let asked = |action: &str, e: KafkaError| broker_error(&name, action, &bootstrap, e);
        let consumer: Arc<BaseConsumer<QuietEof>> = Arc::new(
            client
                .create_with_context(QuietEof)
                .map_err(|e| asked("cannot create consumer", e))?,
        );
        // Offsets of every subtask: a partition may have been another subtask's
        // in the last run (partitions added to an earlier topic shift the numbering).
        let restored = Restored::decode(&ctx.restored_all)
            .ok_or_else(|| connector_error(&name, "restored position", "not a Kafka position"))?;

        // A wrong password or certificate fails here, saying so, at once.
        config
            .cluster
            .check_access(METADATA_TIMEOUT)
            .map_err(|e| e.into_error(&name, &config.cluster))?;
        let mut topics = Vec::with_capacity(config.topics.len());
        for topic in &config.topics {
            let ids = admin::partition_ids(&*consumer, topic, METADATA_TIMEOUT)
                .map_err(|e| asked(&format!("cannot read metadata of topic `{topic}`"), e))?;
            if ids.is_empty() {
                return Err(connector_error(
                    &name,
                    &format!("topic `{topic}`"),
                    "does not exist (or has no partitions)",
                ));
            }
            let ids = match &config.only_partitions {
                None => ids,
                Some(only) => {
                    if let Some(missing) = only.iter().find(|p| !ids.contains(p)) {
                        return Err(connector_error(
                            &name,
                            &format!("partition {topic}/{missing}"),
                            format!("does not exist (the topic has {} partitions)", ids.len()),
                        ));
                    }
                    ids.into_iter().filter(|p| only.contains(p)).collect()
                }
            };
            topics.push((topic.clone(), ids));
        }
        let mine = assign::plan(&topics, ctx.subtask, ctx.parallelism, &restored, &config.start);

        // Resolve every start to a concrete offset, so that a checkpoint is exact.
        let mut starts = Vec::with_capacity(mine.len());
        for planned in &mine {
            let (topic, partition) = (planned.tp.topic.as_str(), planned.tp.partition);
            let marks: Watermarks = admin::watermarks(&*consumer, topic, partition, METADATA_TIMEOUT)
                .map_err(|e| asked(&format!("cannot read offsets of {topic}/{partition}"), e))?;
            let (low, high) = (marks.low, marks.high);
            tracing::debug!("{name}: {topic}/{partition} holds offsets {low}..{high}");
            let looked_up = match planned.from {
                assign::StartFrom::Committed => admin::committed_offset(&*consumer, topic, partition, METADATA_TIMEOUT)
                    .map_err(|e| asked(&format!("cannot read committed offset of {topic}/{partition}"), e))?,
                assign::StartFrom::Timestamp(ts) => {
                    admin::offset_for_time(&*consumer, topic, partition, ts, METADATA_TIMEOUT)
                        .map_err(|e| asked(&format!("cannot find offset for time {ts} in {topic}/{partition}"), e))?
                }
                _ => None,
            };
            let start = assign::resolve_start(planned.from, marks, looked_up, config.bounded);
            if let Some(stored) = start.lost_from {
                let gap = start.offset.get() - stored.get();
                if config.lost_input == LostInputPolicy::Fail {
                    return Err(connector_error(
                        &name,
                        &format!(
                            "input lost: the checkpoint resumes {topic}/{partition} at offset {stored}, but the \
                             partition's log starts at {low}: {gap} offset(s) were deleted (retention?) before \
                             the job read them"
                        ),
                        "to go on from the log start and count the gap, build the source with \
                         .on_lost_input(LostInputPolicy::Skip)",
                    ));
                }
                lost_offsets(&name, &config.progress, gap);
            }
            if let Some(wanted) = start.clamped_from {
                tracing::warn!(
                    "{name}: offset {wanted} of {topic}/{partition} is outside the partition's range {low}..{high} \
                     (records deleted by retention, or the topic was recreated): starting at {}",
                    start.offset
                );
            }
            starts.push(start);
        }
        let mut tpl = TopicPartitionList::new();
        for (planned, start) in mine.iter().zip(&starts) {
            tpl.add_partition_offset(
                &planned.tp.topic,
                planned.tp.partition,
                Offset::Offset(start.offset.get()),
            )
            .map_err(|e| kafka_error(&name, "assign", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| asked("cannot assign partitions", e))?;
        let mut partitions = Vec::with_capacity(mine.len());
        let mut queues = Vec::with_capacity(mine.len());
        for (planned, start) in mine.into_iter().zip(starts) {
            let (topic, partition) = (planned.tp.topic, planned.tp.partition);
            let queue = consumer.split_partition_queue(&topic, partition).ok_or_else(|| {
                connector_error(&name, &format!("cannot read {topic}/{partition}"), "no partition queue")
            })?;
            if let Some(end) = start.end {
                config
                    .progress
                    .total
                    .fetch_add(start.offset.lag(end) as u64, Ordering::Relaxed);
            }
            queues.push(queue);
            partitions.push(PartitionState {
                done: start.end.is_some_and(|e| start.offset >= e),
                topic,
                partition,
                next_offset: start.offset,
                end: start.end,
                max_timestamp: None,
                watermark: planned.watermark,
                upstreams: config.control.map(|_| planned.upstreams.unwrap_or_default()),
                last_record: Instant::now(),
            });
        }
        let dead_letters = match &config.bad_records {
            BadRecordPolicy::DeadLetter(topic) => Some(DeadLetters::open(&name, &config.cluster, topic)?),
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
            lost_input: config.lost_input,
            dead_letters,
            bounded: config.bounded,
            watermarks: config.watermarks,
            event_time: config.event_time,
            control: config.control,
            upstream_input: config.upstream_input.clone(),
            ends_checked: None,
            emitted_watermark,
            at_barrier: None,
            progress: config.progress.clone(),
            next_partition: 0,
            empty_polls: 0,
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
    /// Whether this source ends: a bounded run, or one that ends with its upstream.
    fn ends(&self) -> bool {
        self.bounded || self.upstream_input.is_some()
    }

    /// Completes the partitions whose upstream shards all ended at the
    /// current end of their input partitions (asked at most twice a second;
    /// an input that grew since waits for the shard's next end).
    fn check_upstream_ends(&mut self) {
        if self.ends_checked.is_some_and(|t| t.elapsed() < UPSTREAM_CHECK) {
            return;
        }
        self.ends_checked = Some(Instant::now());
        let Some(input) = self.upstream_input.clone() else {
            return;
        };
        let mut input_end: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
        for i in 0..self.partitions.len() {
            let p = &self.partitions[i];
            let Some(ends) = p.upstreams.as_ref().and_then(Upstreams::all_ended).filter(|_| !p.done) else {
                continue;
            };
            let consumer = &*self.consumer;
            let complete = upstream::reached_input_end(&ends, |u| match input_end.get(&u) {
                Some(high) => Ok(*high),
                None => admin::watermarks(consumer, &input, u, METADATA_TIMEOUT)
                    .map(|marks| *input_end.entry(u).or_insert(marks.high.get())),
            });
            let complete = match complete {
                Ok(complete) => complete,
                Err(e) => {
                    tracing::warn!(
                        "{}: cannot read the end of input {input}: {e} (asking again)",
                        self.name
                    );
                    return;
                }
            };
            if complete {
                let p = &mut self.partitions[i];
                tracing::info!(
                    "{}: {}/{} is complete: its {} upstream shard(s) ended at the end of {input}",
                    self.name,
                    p.topic,
                    p.partition,
                    ends.len()
                );
                p.done = true;
            }
        }
    }

    /// With a control decoder: the minimum over the partitions of their
    /// upstream shards' merged event time (idle partitions left out), never
    /// backwards.
    fn watermark_of_upstreams(&mut self) -> Option<Timestamp> {
        let mut min: Option<i64> = None;
        for p in &mut self.partitions {
            match p.upstreams.as_ref().map_or(Merged::Unknown, Upstreams::merged) {
                Merged::Unknown => return None,
                Merged::Idle => continue,
                Merged::At(w) => {
                    p.watermark = Some(p.watermark.map_or(w, |old| old.max(w)));
                    min = Some(min.map_or(w, |m| m.min(w)));
                }
            }
        }
        let w = min?;
        if self.emitted_watermark.is_some_and(|e| w <= e) {
            return None;
        }
        self.emitted_watermark = Some(w);
        Some(Timestamp(w))
    }

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
                    NextOffset::new(high)
                } else {
                    p.end?
                };
                // `PartitionLag` (a status type of `stats`) keeps plain
                // numbers: it is reported as JSON and Prometheus gauges.
                Some(crate::stats::PartitionLag {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    position: p.next_offset.get(),
                    end: end.get(),
                    lag: p.next_offset.lag(end),
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
                    Offset::Offset(o) => Some(NextOffset::new(o)),
                    _ => None,
                })
        });
        if let Some(pos) = position {
            // Never backwards, never past a bounded run's end.
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
                    self.control,
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
            Err(e) if fell_off_the_log(&e) => self.fell_off_the_log(None)?,
            Err(e) => tracing::warn!("{}: {e}", self.name),
        }
        Ok(())
    }

    /// The consumer's position of partition `i` (or, when librdkafka did not
    /// say which, of any partition) is no longer in the log: its records were
    /// deleted before they were read. Fails the job, or (lost input skipped)
    /// goes on from the log start, counting the gap.
    fn fell_off_the_log(&mut self, i: Option<usize>) -> Result<()> {
        let candidates: Vec<usize> = match i {
            Some(i) => vec![i],
            None => (0..self.partitions.len()).collect(),
        };
        let mut below_start = false;
        for i in candidates.iter().copied() {
            let p = &self.partitions[i];
            let (topic, partition, next) = (p.topic.clone(), p.partition, p.next_offset);
            let low = admin::watermarks(&*self.consumer, &topic, partition, METADATA_TIMEOUT)
                .map_err(|e| kafka_error(&self.name, &format!("cannot read offsets of {topic}/{partition}"), e))?
                .low;
            if low <= next {
                continue;
            }
            below_start = true;
            let gap = low.get() - next.get();
            if self.lost_input == LostInputPolicy::Fail {
                return Err(connector_error(
                    &self.name,
                    &format!(
                        "input lost: {topic}/{partition} was to be read from offset {next}, but the partition's log \
                         now starts at {low}: {gap} offset(s) were deleted (retention?) before the job read them"
                    ),
                    "to go on from the log start and count the gap, build the source with \
                     .on_lost_input(LostInputPolicy::Skip)",
                ));
            }
            lost_offsets(&self.name, &self.progress, gap);
            self.consumer
                .seek(&topic, partition, Offset::Offset(low.get()), METADATA_TIMEOUT)
                .map_err(|e| kafka_error(&self.name, &format!("cannot seek {topic}/{partition}"), e))?;
            self.partitions[i].next_offset = low;
        }
        if !below_start {
            // Out of range but not below the log start: past the end (a topic
            // recreated, an unclean leader election). librdkafka stops
            // fetching the partition; going on would stall without a word.
            let at: Vec<String> = candidates
                .iter()
                .map(|&i| {
                    let p = &self.partitions[i];
                    format!("{}/{} at offset {}", p.topic, p.partition, p.next_offset)
                })
                .collect();
            return Err(connector_error(
                &self.name,
                &format!("the position is outside the partition's offsets: {}", at.join(", ")),
                "the partition was truncated or recreated (an unclean leader election, a deleted topic): \
                 records may be lost; restart from a checkpoint after checking the topic",
            ));
        }
        Ok(())
    }

    fn bad_record(&mut self, bad: BadRecord) -> Result<()> {
        match &self.bad_records {
            BadRecordPolicy::Fail => {
                let BadRecord {
                    topic,
                    partition,
                    offset,
                    why,
                    ..
                } = bad;
                Err(WeirError::Connector {
                    connector: self.name.clone(),
                    message: format!(
                        "cannot deserialize the record at topic `{topic}` partition {partition} offset {offset}: {why}"
                    ),
                })
            }
            BadRecordPolicy::Skip => {
                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("weir_kafka_records_skipped_total", "source" => self.name.clone()).increment(1);
                Ok(())
            }
            BadRecordPolicy::DeadLetter(_) => {
                let Some(dead_letters) = &self.dead_letters else {
                    return Ok(());
                };
                dead_letters.send(&self.name, &bad)?;
                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

impl<T: Send + 'static, D: Deserializer<T>> Source<T> for KafkaReader<T, D> {
    // Offsets are kept per partition in every subtask's state.
    const POSITIONS_BY_SPLIT: bool = true;

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
        if self.ends() && emitted == 0 && self.partitions.iter().all(|p| p.done) {
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
                            self.control,
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
                    Err(e) if fell_off_the_log(&e) => {
                        self.fell_off_the_log(Some(i))?;
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
        if let Some(d) = &self.dead_letters {
            d.poll();
        }
        if self.upstream_input.is_some() {
            self.check_upstream_ends();
        }
        if emitted > 0 {
            self.empty_polls = 0;
            self.progress.done.fetch_add(emitted as u64, Ordering::Relaxed);
            return Ok(SourcePoll::Ready);
        }
        if self.ends() && self.partitions.iter().all(|p| p.done) {
            return Ok(SourcePoll::End);
        }
        // Each empty poll already waited 1 ms for data; after a while of
        // nothing the task waits longer between polls, so an idle source (a
        // distributed member's quiet shard) costs little.
        self.empty_polls = self.empty_polls.saturating_add(1);
        Ok(SourcePoll::Idle(if self.empty_polls < IDLE_POLLS {
            Duration::ZERO
        } else {
            IDLE_WAIT
        }))
    }

    /// With event time: a subtask without partitions (more subtasks than
    /// partitions) is idle from the start, as Flink's split-less readers
    /// are, and one whose partitions are all quiet past the idleness timeout
    /// is idle until a record comes.
    fn remaining(&self) -> Option<u64> {
        if !self.bounded {
            return None;
        }
        // Offsets to each partition's end (transaction markers count too).
        self.partitions
            .iter()
            .map(|p| p.end.map(|end| p.next_offset.lag(end).max(0) as u64))
            .sum()
    }

    fn is_idle(&self) -> bool {
        if self.control.is_some() {
            // Idle when every partition's upstream shards are.
            return self
                .partitions
                .iter()
                .all(|p| p.upstreams.as_ref().is_some_and(|u| u.merged() == Merged::Idle));
        }
        let Some(strategy) = self.watermarks else {
            return false;
        };
        if self.partitions.is_empty() {
            return true;
        }
        let Some(timeout) = strategy.idle_timeout else {
            return false;
        };
        let now = Instant::now();
        self.partitions
            .iter()
            .all(|p| now.duration_since(p.last_record) > timeout)
    }

    fn watermark(&mut self) -> Option<Timestamp> {
        if self.control.is_some() {
            return self.watermark_of_upstreams();
        }
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
        if let Some(d) = &self.dead_letters {
            // A dead letter the broker refused must fail the checkpoint, not be skipped.
            d.flush(&self.name)?;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &self.partitions {
            let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset.get()));
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
                    upstreams: p.upstreams.clone(),
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
