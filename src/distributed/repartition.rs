//! Repartition topics: where a distributed job's graph is cut at a `key_by`
//! that must bring keys together across processes.
//!
//! The upstream sub-topology ends in an exactly-once Kafka sink writing each
//! record to the partition that owns its key's key group; the downstream one
//! starts with a `read_committed` Kafka source reading it. The partition
//! count divides the job's max parallelism, so a partition is exactly a
//! contiguous key-group range (the ranges keyed state is rescaled by).
//!
//! Every value starts with a one-byte tag: data, or a control record of
//! upstream shard `u` of `n` that every partition gets (its watermark, or
//! that it is idle), so the downstream shard's event time is the minimum
//! over the upstream shards (see [`crate::connectors::kafka::source::Control`]).
//! A reader refuses a tag it does not know, naming it.
//!
//! Wire format (little-endian): data `0, payload`; a batch of data `4,
//! count: u32, (len: u32, payload) * count`; watermark `1, u: u32, n: u32,
//! at: i64`; idle `2, u: u32, n: u32`; end `3, u: u32, n: u32, offset: i64`
//! (written by the member once a bounded upstream shard finished, see
//! [`write_end`]). The upstream sink gathers the records of each write into
//! one batch per partition (at most 256 records or 256 KiB): a Kafka record
//! costs the producer, the broker and the consumer about what weir spends
//! on a whole record, so one per record would double the hop's cost.

use crate::connectors::kafka::source::Control;
use crate::connectors::kafka::{Deserializer, KafkaConnection, KafkaRecord, Serializer, SinkEvent};
use crate::error::{Result, WeirError};
use std::time::{Duration, Instant};
use weir_operators::{key_group_of, subtask_for_key_group, StateKey};

/// The tag of a data record.
const TAG_RECORD: u8 = 0;
/// The tag of an upstream shard's watermark.
const TAG_WATERMARK: u8 = 1;
/// The tag of an upstream shard that turned idle.
const TAG_IDLE: u8 = 2;
/// The tag of an upstream shard that ended (bounded run).
const TAG_END: u8 = 3;
/// The tag of a batch of data records.
const TAG_BATCH: u8 = 4;
/// A batch goes out at this many records, or bytes, at the latest.
const BATCH_RECORDS: u32 = 256;
const BATCH_BYTES: usize = 256 << 10;
/// Between two watermark records of an upstream shard at least this long
/// (a checkpoint sends the newest one anyway; under exactly-once nothing is
/// visible before it commits).
const WATERMARK_EVERY: Duration = Duration::from_millis(200);

/// The name of the repartition topic in front of the operator `uid` of job
/// `job`: `weir-<job>-<uid>-repartition` (Kafka Streams' naming).
pub fn topic_name(job: &str, uid: &str) -> String {
    format!("weir-{job}-{uid}-repartition")
}

/// The partition (of `partitions`) that owns `key`: its key group's range.
/// `partitions` should divide `max_parallelism` (a partition then holds
/// whole key groups only); at most `max_parallelism`.
#[inline]
pub fn partition_of<K: StateKey>(key: &K, partitions: u16, max_parallelism: u16, scratch: &mut Vec<u8>) -> i32 {
    scratch.clear();
    key.encode_key(scratch);
    let group = key_group_of(scratch, max_parallelism);
    subtask_for_key_group(group, max_parallelism, usize::from(partitions.max(1))) as i32
}

/// The partition count of a repartition topic for an input of `input`
/// partitions: the smallest power of two at or above it (so it divides a
/// power-of-two max parallelism), at most `max_parallelism`.
pub fn default_partitions(input: usize, max_parallelism: u16) -> u16 {
    let wanted = input
        .max(1)
        .next_power_of_two()
        .min(usize::from(max_parallelism.max(1)));
    wanted as u16
}

/// The partitions of `topic` (an input whose count sizes a repartition topic).
///
/// # Errors
/// The cluster cannot be asked, or `topic` does not exist.
pub fn partition_count(cluster: &KafkaConnection, topic: &str) -> Result<usize> {
    use crate::connectors::kafka::admin;
    let n = admin::partitions_of(cluster, topic, std::time::Duration::from_secs(30)).map_err(|e| {
        admin::AdminError::from(e).into_error(
            &format!("topic {topic}"),
            "cannot read its metadata",
            cluster.bootstrap(),
        )
    })?;
    if n == 0 {
        return Err(WeirError::Config {
            key: "input".into(),
            message: format!("topic `{topic}` does not exist on {}", cluster.bootstrap()),
        });
    }
    Ok(n)
}

/// Creates the repartition topic `topic` with `partitions` partitions, or
/// checks that the existing one has that many: another count would move
/// keys between partitions, and with them between shards' state.
///
/// # Errors
/// [`WeirError::Kafka`] / [`WeirError::Connector`] when the cluster cannot be
/// asked or refuses, [`WeirError::Config`] (key `repartition_partitions`)
/// when the topic exists with another partition count.
pub fn ensure_topic(cluster: &KafkaConnection, topic: &str, partitions: u16) -> Result<()> {
    use crate::connectors::kafka::admin;
    let connector = format!("repartition topic {topic}");
    let timeout = std::time::Duration::from_secs(30);
    let bootstrap = cluster.bootstrap().to_string();
    let existing = admin::partitions_of(cluster, topic, timeout)
        .map_err(|e| admin::AdminError::from(e).into_error(&connector, "cannot read its metadata", &bootstrap))?;
    if existing == 0 {
        let replication = admin::broker_count(cluster, timeout)
            .map_err(|e| admin::AdminError::from(e).into_error(&connector, "cannot list the brokers", &bootstrap))?
            .clamp(1, 3) as i32;
        let spec = admin::TopicSpec {
            partitions: usize::from(partitions),
            replication,
            config: &[],
        };
        admin::create_topic(cluster, topic, spec)
            .map_err(|e| e.into_error(&connector, "cannot create it", &bootstrap))?;
        tracing::info!("created repartition topic {topic} with {partitions} partitions");
        return Ok(());
    }
    if existing != usize::from(partitions) {
        return Err(WeirError::Config {
            key: "repartition_partitions".into(),
            message: format!(
                "the repartition topic `{topic}` has {existing} partitions, this job asks for {partitions}: a key's \
                 partition (and so its shard and state) would change; keep {existing}, or start the job under a new name"
            ),
        });
    }
    Ok(())
}

/// Where an upstream shard writes: the repartition topic's partition count,
/// the job's max parallelism, and which upstream shard this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// Partitions of the repartition topic (divides `max_parallelism`).
    pub partitions: u16,
    /// The job's max parallelism (key groups).
    pub max_parallelism: u16,
    /// This upstream shard's index (its input partition).
    pub upstream: u32,
    /// How many upstream shards write into the topic (the input's partitions).
    pub upstreams: u32,
}

/// The serializer of an upstream stage's sink (see [`serializer`]).
#[derive(Clone)]
pub struct RepartitionSerializer<KF, E> {
    hop: Hop,
    key_of: KF,
    encode: E,
    /// Per partition: the batch being gathered, and its record count.
    batches: Vec<Vec<u8>>,
    counts: Vec<u32>,
    /// Full batches waiting for the next flush, in order.
    ready: Vec<(i32, Vec<u8>)>,
    scratch: Vec<u8>,
    /// The newest watermark, and the last one written (when).
    watermark: Option<i64>,
    sent: Option<i64>,
    sent_at: Option<Instant>,
    idle_sent: bool,
}

/// The serializer of an upstream stage's sink: the key's stable encoding
/// as the Kafka key, the tag and `encode(record)` as the value, the
/// partition of the key's key group; and the shard's watermarks (at most
/// every 200 ms, and at each checkpoint) and idleness into every partition.
pub fn serializer<T, K, KF, E>(hop: Hop, key_of: KF, encode: E) -> RepartitionSerializer<KF, E>
where
    K: StateKey,
    KF: Fn(&T) -> K + Clone + Send + 'static,
    E: Fn(&T, &mut Vec<u8>) + Clone + Send + 'static,
{
    let partitions = usize::from(hop.partitions.max(1));
    RepartitionSerializer {
        hop,
        key_of,
        encode,
        batches: vec![Vec::new(); partitions],
        counts: vec![0; partitions],
        ready: Vec::new(),
        scratch: Vec::new(),
        watermark: None,
        sent: None,
        sent_at: None,
        idle_sent: false,
    }
}

impl<KF, E> RepartitionSerializer<KF, E> {
    fn broadcast(&self, tag: u8, at: Option<i64>, out: &mut Vec<(i32, Vec<u8>)>) {
        for partition in 0..i32::from(self.hop.partitions) {
            let mut value = Vec::with_capacity(17);
            value.push(tag);
            value.extend_from_slice(&self.hop.upstream.to_le_bytes());
            value.extend_from_slice(&self.hop.upstreams.to_le_bytes());
            if let Some(at) = at {
                value.extend_from_slice(&at.to_le_bytes());
            }
            out.push((partition, value));
        }
    }

    /// Moves the batch of `partition` (its count filled in) to `ready`.
    fn seal(&mut self, partition: usize) {
        let mut batch = std::mem::take(&mut self.batches[partition]);
        if let Some(count) = batch.get_mut(1..5) {
            count.copy_from_slice(&self.counts[partition].to_le_bytes());
            self.ready.push((partition as i32, batch));
        }
        self.counts[partition] = 0;
    }

    /// Every gathered record goes out (before any control record, so the
    /// order of data and watermarks holds in each partition).
    fn flush(&mut self, out: &mut Vec<(i32, Vec<u8>)>) {
        for p in 0..self.batches.len() {
            if !self.batches[p].is_empty() {
                self.seal(p);
            }
        }
        out.append(&mut self.ready);
    }

    fn send_watermark(&mut self, out: &mut Vec<(i32, Vec<u8>)>) {
        if let Some(w) = self.watermark.filter(|w| self.sent.is_none_or(|s| *w > s)) {
            self.broadcast(TAG_WATERMARK, Some(w), out);
            (self.sent, self.sent_at, self.idle_sent) = (Some(w), Some(Instant::now()), false);
        }
    }
}

impl<T, K, KF, E> Serializer<T> for RepartitionSerializer<KF, E>
where
    K: StateKey,
    KF: Fn(&T) -> K + Clone + Send + 'static,
    E: Fn(&T, &mut Vec<u8>) + Clone + Send + 'static,
{
    #[inline]
    fn serialize(
        &mut self,
        record: &T,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> std::result::Result<Option<i32>, String> {
        let k = (self.key_of)(record);
        let partition = partition_of(&k, self.hop.partitions, self.hop.max_parallelism, key);
        value.push(TAG_RECORD);
        (self.encode)(record, value);
        Ok(Some(partition))
    }

    fn gathers(&self) -> bool {
        true
    }

    #[inline]
    fn gather(&mut self, record: &T) -> std::result::Result<(), String> {
        let k = (self.key_of)(record);
        let p = partition_of(&k, self.hop.partitions, self.hop.max_parallelism, &mut self.scratch) as usize;
        let batch = &mut self.batches[p];
        if batch.is_empty() {
            batch.push(TAG_BATCH);
            batch.extend_from_slice(&[0; 4]);
        }
        let at = batch.len();
        batch.extend_from_slice(&[0; 4]);
        (self.encode)(record, batch);
        let len = u32::try_from(batch.len() - at - 4).map_err(|_| "a record of 4 GiB or more".to_string())?;
        batch[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.counts[p] += 1;
        if self.counts[p] >= BATCH_RECORDS || batch.len() >= BATCH_BYTES {
            self.seal(p);
        }
        Ok(())
    }

    fn control(&mut self, event: SinkEvent, out: &mut Vec<(i32, Vec<u8>)>) {
        self.flush(out);
        match event {
            SinkEvent::Flush => {}
            SinkEvent::Watermark(w) => {
                self.watermark = Some(self.watermark.map_or(w, |old| old.max(w)));
                if self.idle_sent || self.sent_at.is_none_or(|t| t.elapsed() >= WATERMARK_EVERY) {
                    self.send_watermark(out);
                }
            }
            SinkEvent::Checkpoint => self.send_watermark(out),
            SinkEvent::Idle => {
                self.send_watermark(out);
                if !self.idle_sent {
                    self.broadcast(TAG_IDLE, None, out);
                    self.idle_sent = true;
                }
            }
        }
    }
}

/// The control decoder of a downstream stage's source
/// ([`crate::connectors::kafka::KafkaSource::control`]).
pub fn control(record: &KafkaRecord<'_>) -> Option<Control> {
    let value = record.payload?;
    let (&tag, rest) = value.split_first()?;
    let word = |at: usize| -> Option<u32> { Some(u32::from_le_bytes(rest.get(at..at + 4)?.try_into().ok()?)) };
    match tag {
        TAG_WATERMARK => Some(Control::Watermark {
            upstream: word(0)?,
            upstreams: word(4)?,
            at: i64::from_le_bytes(rest.get(8..16)?.try_into().ok()?),
        }),
        TAG_IDLE => Some(Control::Idle {
            upstream: word(0)?,
            upstreams: word(4)?,
        }),
        TAG_END => Some(Control::End {
            upstream: word(0)?,
            upstreams: word(4)?,
            offset: i64::from_le_bytes(rest.get(8..16)?.try_into().ok()?),
        }),
        _ => None,
    }
}

fn end_record(upstream: u32, upstreams: u32, offset: i64) -> Vec<u8> {
    let mut value = vec![TAG_END];
    value.extend_from_slice(&upstream.to_le_bytes());
    value.extend_from_slice(&upstreams.to_le_bytes());
    value.extend_from_slice(&offset.to_le_bytes());
    value
}

/// Tells every partition of the repartition topic `topic` that upstream
/// shard `upstream` (of `upstreams`) ended at input offset `offset`: after
/// its final checkpoint committed, so the marker follows all its records.
/// Written without a transaction (read_committed readers see it at once)
/// and idempotent: a repeated marker changes nothing.
///
/// # Errors
/// The producer cannot be created or a write is not acknowledged.
pub fn write_end(
    cluster: &KafkaConnection,
    topic: &str,
    partitions: u16,
    upstream: u32,
    upstreams: u32,
    offset: i64,
) -> Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
    /// Counts the markers the cluster refused.
    struct Refusals(std::sync::atomic::AtomicUsize);
    impl rdkafka::ClientContext for Refusals {}
    impl ProducerContext for Refusals {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            if result.is_err() {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    let connector = format!("repartition topic {topic}");
    let failed =
        |action: &str, e: rdkafka::error::KafkaError| WeirError::kafka(connector.clone(), action.to_string(), e);
    let producer: BaseProducer<Refusals> = cluster
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create_with_context(Refusals(std::sync::atomic::AtomicUsize::new(0)))
        .map_err(|e| failed("cannot create the producer of end markers", e))?;
    let value = end_record(upstream, upstreams, offset);
    for partition in 0..i32::from(partitions) {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).partition(partition).payload(&value))
            .map_err(|(e, _)| failed("cannot write an end marker", e))?;
    }
    crate::connectors::kafka::flush(&producer, std::time::Duration::from_secs(30))
        .map_err(|e| failed("the end markers were not acknowledged", e))?;
    let refused = producer.context().0.load(std::sync::atomic::Ordering::Relaxed);
    if refused > 0 {
        return Err(WeirError::Connector {
            connector,
            message: format!("the cluster refused {refused} end marker(s) of upstream shard {upstream}"),
        });
    }
    Ok(())
}

/// The deserializer of a downstream stage's source (see [`deserializer`]).
#[derive(Clone)]
pub struct RepartitionDeserializer<D> {
    decode: D,
}

/// The deserializer of a downstream stage's source: checks the tag and
/// decodes each record (one, or each of a batch) with `decode`.
pub fn deserializer<T, D>(decode: D) -> RepartitionDeserializer<D>
where
    D: Fn(&[u8]) -> std::result::Result<T, String> + Clone + Send + 'static,
{
    RepartitionDeserializer { decode }
}

fn foreign(tag: u8) -> String {
    format!("not a record of a weir repartition topic (tag {tag}; a newer weir may have written it)")
}

impl<T, D> Deserializer<T> for RepartitionDeserializer<D>
where
    D: Fn(&[u8]) -> std::result::Result<T, String> + Clone + Send + 'static,
{
    fn deserialize(&mut self, record: &KafkaRecord<'_>) -> std::result::Result<T, String> {
        match record.payload.unwrap_or_default().split_first() {
            Some((&TAG_RECORD, rest)) => (self.decode)(rest),
            Some((&TAG_BATCH, _)) => Err("a batch of records: read with deserialize_into".into()),
            Some((&tag, _)) => Err(foreign(tag)),
            None => Err("an empty value in a weir repartition topic".into()),
        }
    }

    fn deserialize_into(&mut self, record: &KafkaRecord<'_>, out: &mut Vec<T>) -> std::result::Result<usize, String> {
        let value = record.payload.unwrap_or_default();
        let Some((&TAG_BATCH, mut rest)) = value.split_first() else {
            out.push(self.deserialize(record)?);
            return Ok(1);
        };
        let word = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?)) };
        let count = word(rest).ok_or("a batch without its count")?;
        rest = &rest[4..];
        let before = out.len();
        for i in 0..count {
            let parsed = word(rest)
                .and_then(|len| rest.get(4..4 + len as usize))
                .ok_or_else(|| format!("record {i} of a batch of {count} is cut short"))
                .and_then(|bytes| {
                    rest = &rest[4 + bytes.len()..];
                    (self.decode)(bytes).map_err(|e| format!("record {i} of a batch of {count}: {e}"))
                });
            match parsed {
                Ok(v) => out.push(v),
                Err(e) => {
                    out.truncate(before);
                    return Err(e);
                }
            }
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_operators::key_group_range;

    #[test]
    fn a_partition_holds_exactly_the_key_groups_of_its_range() {
        let (max, partitions) = (128u16, 8u16);
        let mut scratch = Vec::new();
        for key in 0u64..20_000 {
            let p = partition_of(&key, partitions, max, &mut scratch);
            scratch.clear();
            key.encode_key(&mut scratch);
            let group = key_group_of(&scratch, max).0;
            let range = key_group_range(p as usize, max, usize::from(partitions));
            assert!(
                range.contains(&group),
                "key {key}: group {group} not in partition {p}'s {range:?}"
            );
        }
    }

    #[test]
    fn default_partition_counts_divide_the_max_parallelism() {
        assert_eq!(default_partitions(0, 128), 1);
        assert_eq!(default_partitions(3, 128), 4);
        assert_eq!(default_partitions(6, 128), 8);
        assert_eq!(default_partitions(16, 128), 16);
        assert_eq!(default_partitions(500, 128), 128);
        for n in 1..300 {
            assert_eq!(128 % default_partitions(n, 128), 0);
        }
    }

    const HOP: Hop = Hop {
        partitions: 4,
        max_parallelism: 128,
        upstream: 1,
        upstreams: 3,
    };

    fn record(payload: &[u8]) -> KafkaRecord<'_> {
        KafkaRecord {
            topic: "t",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(payload),
            timestamp_ms: None,
        }
    }

    #[test]
    fn watermarks_and_idleness_reach_every_partition_and_decode() {
        let mut ser = serializer(
            HOP,
            |r: &u64| *r,
            |r: &u64, out: &mut Vec<u8>| out.extend_from_slice(&r.to_le_bytes()),
        );
        let mut out = Vec::new();
        Serializer::<u64>::control(&mut ser, SinkEvent::Watermark(10), &mut out);
        assert_eq!(
            out.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            vec![0, 1, 2, 3],
            "one per partition"
        );
        let watermark = Control::Watermark {
            upstream: 1,
            upstreams: 3,
            at: 10,
        };
        assert_eq!(control(&record(&out[2].1)), Some(watermark));
        // Within 200 ms only a checkpoint sends the newer one.
        out.clear();
        Serializer::<u64>::control(&mut ser, SinkEvent::Watermark(20), &mut out);
        assert!(out.is_empty());
        Serializer::<u64>::control(&mut ser, SinkEvent::Checkpoint, &mut out);
        assert_eq!(out.len(), 4);
        out.clear();
        Serializer::<u64>::control(&mut ser, SinkEvent::Checkpoint, &mut out);
        assert!(out.is_empty(), "nothing new");
        Serializer::<u64>::control(&mut ser, SinkEvent::Idle, &mut out);
        let idle = Control::Idle {
            upstream: 1,
            upstreams: 3,
        };
        assert_eq!(control(&record(&out[0].1)), Some(idle));
        out.clear();
        Serializer::<u64>::control(&mut ser, SinkEvent::Idle, &mut out);
        assert!(out.is_empty(), "idle once");
        // Active again: the next watermark goes at once.
        Serializer::<u64>::control(&mut ser, SinkEvent::Watermark(30), &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(
            control(&record(&end_record(1, 3, 77))),
            Some(Control::End {
                upstream: 1,
                upstreams: 3,
                offset: 77
            })
        );
        // Data is not control.
        let (mut key, mut value) = (Vec::new(), Vec::new());
        ser.serialize(&7, &mut key, &mut value).unwrap();
        assert_eq!(control(&record(&value)), None);
    }

    #[test]
    fn records_round_trip_and_foreign_values_are_refused_by_name() {
        let mut ser = serializer(
            HOP,
            |r: &(u64, String)| r.0,
            |r: &(u64, String), out: &mut Vec<u8>| out.extend_from_slice(r.1.as_bytes()),
        );
        let mut de = deserializer(|b: &[u8]| std::str::from_utf8(b).map(str::to_owned).map_err(|e| e.to_string()));
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let partition = ser.serialize(&(7, "seven".into()), &mut key, &mut value).unwrap();
        assert!(matches!(partition, Some(p) if (0..4).contains(&p)));
        let mut read = |payload: &[u8]| Deserializer::<String>::deserialize(&mut de, &record(payload));
        assert_eq!(read(&value).unwrap(), "seven");
        assert!(read(b"\x07abc").unwrap_err().contains("tag 7"));
        assert!(read(b"").unwrap_err().contains("empty"));
    }

    #[test]
    fn gathered_batches_keep_each_partitions_order_and_come_before_a_watermark() {
        let mut ser = serializer(
            HOP,
            |r: &u64| *r % 50,
            |r: &u64, out: &mut Vec<u8>| out.extend_from_slice(&r.to_le_bytes()),
        );
        let mut de = deserializer(|b: &[u8]| Ok(u64::from_le_bytes(b.try_into().map_err(|_| "8 bytes")?)));
        // 600 records: some partitions pass 256 and send a batch early.
        for r in 0..600u64 {
            Serializer::<u64>::gather(&mut ser, &r).unwrap();
        }
        let mut out = Vec::new();
        Serializer::<u64>::control(&mut ser, SinkEvent::Watermark(5), &mut out);
        let mut by_partition: Vec<Vec<u64>> = vec![Vec::new(); 4];
        let mut watermark_seen = [false; 4];
        for (p, value) in &out {
            if control(&record(value)).is_some() {
                watermark_seen[*p as usize] = true;
                continue;
            }
            assert!(
                !watermark_seen[*p as usize],
                "data after the watermark in partition {p}"
            );
            let n = de
                .deserialize_into(&record(value), &mut by_partition[*p as usize])
                .unwrap();
            assert!(n <= 256);
        }
        assert!(watermark_seen.iter().all(|w| *w));
        let mut scratch = Vec::new();
        for (p, got) in by_partition.iter().enumerate() {
            let want: Vec<u64> = (0..600u64)
                .filter(|r| partition_of(&(r % 50), 4, 128, &mut scratch) as usize == p)
                .collect();
            assert_eq!(got, &want, "partition {p}");
        }
        // A batch cut short is refused naming the record, appending nothing.
        let (_, batch) = out.iter().find(|(_, v)| v[0] == TAG_BATCH).unwrap();
        let mut into = vec![1u64];
        let err = de
            .deserialize_into(&record(&batch[..batch.len() - 3]), &mut into)
            .unwrap_err();
        assert!(err.contains("cut short"), "{err}");
        assert_eq!(into, vec![1]);
    }
}
