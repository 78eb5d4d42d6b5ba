//! Kafka sink: none, at-least-once, or exactly-once.
//!
//! # Exactly-once without resuming a transaction
//! librdkafka cannot resume a transaction opened by another process, so the
//! sink never keeps one open across a checkpoint. Instead:
//!
//! 1. Records of epoch `n` (after barrier `n-1`, up to barrier `n`) are
//!    serialized and kept by the sink.
//! 2. At barrier `n` they become *pending for checkpoint `n`* and are part of
//!    the sink's state in snapshot `n` (a file of the checkpoint when large).
//! 3. When checkpoint `n` is complete, the sink writes them in one Kafka
//!    transaction together with a *marker* record `n`, and commits. Markers go
//!    to the marker topic of the (job, sink), `weir-markers.<job>.<sink uid>`,
//!    partition = subtask: only this subtask's producer ever writes there.
//!    The transaction runs on the sink's commit thread (`Committer`, which
//!    owns the producer), in checkpoint order, while the sink goes on
//!    reading epoch `n+1`; epoch `n` stays pending (and in every snapshot)
//!    until its commit is done. Two completed epochs may wait for the
//!    thread; a third makes the sink wait.
//! 4. On recovery from checkpoint `m`, the sink first fences its predecessor
//!    (`init_transactions` aborts a transaction it left open), then reads the
//!    newest committed marker of its partition (read_committed) and commits
//!    again exactly the pending epochs above it, in order. Because no other
//!    producer writes to that partition, no open transaction of another
//!    subtask or job can hold its last stable offset back and hide a marker.
//!
//! A crash between "checkpoint complete" and "transaction committed" thus
//! leaves the epoch pending in the checkpoint and unmarked: it is committed
//! by the restarted job. A crash during the transaction leaves it open; the
//! restarted producer has the same `transactional.id` (stable per job, sink
//! and subtask), so `init_transactions` aborts it (zombie fencing).
//!
//! Output becomes visible to read_committed consumers when a checkpoint
//! completes, as with Flink's exactly-once Kafka sink.

use super::format::Serializer;
use super::kafka_error;
use crate::connectors::{ConnectorContext, Sink};
use crate::error::{Result, WeirError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_operators::CheckpointId;

/// Delivery guarantee of a [`KafkaSink`]; written `none`, `at-least-once` or
/// `exactly-once` in config files and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Fire and forget.
    None,
    /// Every record acknowledged by the broker before a checkpoint completes;
    /// a restart may write some again.
    AtLeastOnce,
    /// read_committed consumers see every record exactly once.
    ExactlyOnce,
}

impl Delivery {
    /// The name used in config files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::None => "none",
            Delivery::AtLeastOnce => "at-least-once",
            Delivery::ExactlyOnce => "exactly-once",
        }
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        [Delivery::None, Delivery::AtLeastOnce, Delivery::ExactlyOnce]
            .into_iter()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| format!("must be `none`, `at-least-once` or `exactly-once`, not `{text}`"))
    }
}

/// A Kafka sink, described; [`KafkaSink::factory`] makes it a sink for
/// [`crate::Stream::sink`].
#[derive(Clone)]
pub struct KafkaSink<T, S> {
    brokers: String,
    topic: String,
    delivery: Delivery,
    serializer: S,
    properties: Vec<(String, String)>,
    marker_prefix: String,
    transaction_timeout: Duration,
    _t: PhantomData<fn(T)>,
}

/// The default prefix of the exactly-once commit-marker topics.
pub const DEFAULT_MARKER_PREFIX: &str = "weir-markers";

/// The marker topic of a (job, sink): `<prefix>.<job>.<uid>`, with characters
/// Kafka does not allow in topic names replaced by `_`.
pub fn marker_topic(prefix: &str, job: &str, uid: &str) -> String {
    format!("{prefix}.{job}.{uid}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl<T: Send + 'static, S: Serializer<T>> KafkaSink<T, S> {
    /// A sink writing to `topic` with `serializer`, exactly-once.
    pub fn new(brokers: &str, topic: &str, serializer: S) -> Self {
        KafkaSink {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            delivery: Delivery::ExactlyOnce,
            serializer,
            properties: Vec::new(),
            marker_prefix: DEFAULT_MARKER_PREFIX.to_string(),
            transaction_timeout: Duration::from_secs(60),
            _t: PhantomData,
        }
    }
    /// The delivery guarantee (default exactly-once).
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }
    /// Sets a librdkafka producer property.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }
    /// The prefix of the exactly-once commit-marker topic (default `weir-markers`;
    /// the topic is `<prefix>.<job>.<sink uid>`, one partition per subtask).
    pub fn marker_prefix(mut self, prefix: &str) -> Self {
        self.marker_prefix = prefix.to_string();
        self
    }
    /// `transaction.timeout.ms` of the exactly-once producer (default 60 s):
    /// a transaction lasts only while one checkpoint's output is committed.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }

    /// The factory for [`crate::Stream::sink`].
    pub fn factory(self) -> impl Fn(ConnectorContext) -> Result<KafkaWriter<T, S>> + Send + 'static {
        move |ctx| KafkaWriter::open(&self, &ctx)
    }
}

/// Remembers the first failed delivery, so that a flush can tell whether
/// everything before a checkpoint really reached the broker.
#[derive(Default)]
pub struct DeliveryReport {
    failed: Mutex<Option<String>>,
}

impl DeliveryReport {
    /// The first failed delivery since the last call, if any.
    pub fn take_failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, m)) = result {
            if let Ok(mut f) = self.failed.lock() {
                f.get_or_insert_with(|| format!("delivery to {}/{} failed: {e}", m.topic(), m.partition()));
            }
        }
    }
}

/// One serialized output record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OutRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    partition: Option<i32>,
}

/// What the sink stores in a checkpoint: output of epochs not known to be committed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SinkState {
    pending: BTreeMap<u64, Vec<OutRecord>>,
}

/// Output of epochs not known to be committed, shared by the sink and its
/// committer thread (which removes an epoch once committed).
type Pending = Arc<Mutex<BTreeMap<u64, Arc<Vec<OutRecord>>>>>;

/// [`SinkState`] borrowed, for encoding: the same bytes.
struct SinkStateRef<'a> {
    pending: &'a BTreeMap<u64, Arc<Vec<OutRecord>>>,
}

impl Serialize for SinkStateRef<'_> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeStruct;
        struct Epochs<'a>(&'a BTreeMap<u64, Arc<Vec<OutRecord>>>);
        impl Serialize for Epochs<'_> {
            fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
                s.collect_map(self.0.iter().map(|(epoch, records)| (epoch, &**records)))
            }
        }
        let mut state = s.serialize_struct("SinkState", 1)?;
        state.serialize_field("pending", &Epochs(self.pending))?;
        state.end()
    }
}

/// A running Kafka sink subtask.
pub struct KafkaWriter<T, S> {
    name: String,
    delivery: Delivery,
    serializer: S,
    /// The producer (none, at-least-once), or the thread that owns it
    /// (exactly-once).
    out: Writes,
    /// Records of the current epoch (exactly-once).
    epoch: Vec<OutRecord>,
    pending: Pending,
    /// The newest epoch handed to the committer.
    handed: u64,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

/// Where a sink's records go.
enum Writes {
    /// Straight to the producer.
    Direct(Output),
    /// In transactions, one per completed checkpoint, on a thread of their own.
    Transactions(Committer),
}

/// The producer of a sink subtask and what it needs to write and commit.
struct Output {
    /// The producer's configuration, to create it again after a fatal error.
    client: ClientConfig,
    brokers: String,
    name: String,
    topic: String,
    producer: BaseProducer<DeliveryReport>,
    marker_topic: String,
    marker_partition: i32,
    marker_key: String,
}

/// Commits the output of completed checkpoints in order, on its own thread,
/// so the sink goes on reading the next epoch's records meanwhile (a
/// commit produces a whole interval's output and waits for the broker).
/// At most [`COMMITS_QUEUED`] epochs wait for it: then the sink waits too.
struct Committer {
    epochs: Option<crossbeam_channel::Sender<(u64, Arc<Vec<OutRecord>>)>>,
    /// Why committing failed: the sink fails with it at its next call.
    failure: Arc<Mutex<Option<String>>>,
    /// Set when the sink is dropped without finishing (cancelled, or another
    /// task failed): the thread starts no further epoch and ends, so it never
    /// races the producer of the next run (which fences it) over the same
    /// epochs; those stay pending in the checkpoint.
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.epochs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // the epoch in flight ends first
        }
    }
}

/// Completed checkpoints whose output may wait for the committer thread.
const COMMITS_QUEUED: usize = 2;

impl Committer {
    fn start(mut out: Output, pending: Pending) -> Result<Self> {
        let (epochs, queue) = crossbeam_channel::bounded::<(u64, Arc<Vec<OutRecord>>)>(COMMITS_QUEUED);
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = out.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-commit"))
            .spawn(move || {
                for (epoch, records) in queue {
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = out.commit_durably(epoch, &records, &stopped) {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                        return; // the sink fails and restarts from the checkpoint
                    }
                    pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&epoch);
                }
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                // The sink finished: every record acknowledged.
                if let Err(e) = out
                    .producer
                    .flush(CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&out.name, "cannot flush at the end", e))
                    .and_then(|()| out.check_deliveries())
                {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            })
            .map_err(|e| WeirError::Connector {
                connector: name,
                message: format!("cannot start the commit thread: {e}"),
            })?;
        Ok(Committer {
            epochs: Some(epochs),
            failure,
            stop,
            thread: Some(thread),
        })
    }

    /// The commit thread's failure, if any.
    fn check(&self, name: &str) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(message) => Err(WeirError::Connector {
                connector: name.to_string(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Queues `epoch` for committing (waits while [`COMMITS_QUEUED`] wait).
    fn queue(&self, name: &str, epoch: u64, records: Arc<Vec<OutRecord>>) -> Result<()> {
        let sent = self.epochs.as_ref().is_some_and(|q| q.send((epoch, records)).is_ok());
        if !sent {
            self.check(name)?;
            return Err(WeirError::Connector {
                connector: name.to_string(),
                message: "the commit thread is gone".into(),
            });
        }
        Ok(())
    }

    /// Waits until everything queued is committed.
    fn finish(&mut self, name: &str) -> Result<()> {
        self.epochs = None; // the thread ends after the last queued epoch
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(WeirError::Connector {
                    connector: name.to_string(),
                    message: "the commit thread panicked".into(),
                });
            }
        }
        self.check(name)
    }
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

impl<T: Send + 'static, S: Serializer<T>> KafkaWriter<T, S> {
    fn open(config: &KafkaSink<T, S>, ctx: &ConnectorContext) -> Result<Self> {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let err = |action: &str, e: &dyn std::fmt::Display| kafka_error(&name, action, e);
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &config.brokers).set("linger.ms", "5");
        match config.delivery {
            Delivery::None => {
                c.set("acks", "1");
            }
            Delivery::AtLeastOnce => {
                c.set("enable.idempotence", "true");
            }
            Delivery::ExactlyOnce => {
                // Stable per (job, sink, subtask): a restarted process fences its predecessor.
                c.set(
                    "transactional.id",
                    format!("weir-{}-{}-{}", ctx.job, ctx.uid, ctx.subtask),
                )
                .set(
                    "transaction.timeout.ms",
                    config.transaction_timeout.as_millis().to_string(),
                );
            }
        }
        for (k, v) in &config.properties {
            c.set(k, v);
        }
        let producer: BaseProducer<DeliveryReport> = c
            .create_with_context(DeliveryReport::default())
            .map_err(|e| err("cannot create producer", &e))?;
        let mut out = Output {
            client: c,
            brokers: config.brokers.clone(),
            name: name.clone(),
            topic: config.topic.clone(),
            producer,
            marker_topic: marker_topic(&config.marker_prefix, &ctx.job, &ctx.uid),
            marker_partition: ctx.subtask as i32,
            marker_key: format!("{}/{}/{}", ctx.job, ctx.uid, ctx.subtask),
        };
        let writer = |out: Writes| KafkaWriter {
            name: name.clone(),
            delivery: config.delivery,
            serializer: config.serializer.clone(),
            out,
            epoch: Vec::new(),
            pending: Pending::default(),
            handed: 0,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            _t: PhantomData,
        };
        if config.delivery != Delivery::ExactlyOnce {
            return Ok(writer(Writes::Direct(out)));
        }
        if let Err(e) = out.producer.init_transactions(CLIENT_TIMEOUT) {
            let invalid_timeout =
                matches!(&e, KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::InvalidTransactionTimeout);
            return Err(if invalid_timeout {
                err(
                    "the broker refuses the transaction timeout",
                    &format!(
                        "transaction.timeout.ms={} is above the broker's transaction.max.timeout.ms: lower it with \
                         KafkaSink::transaction_timeout or raise transaction.max.timeout.ms on the broker ({e})",
                        config.transaction_timeout.as_millis()
                    ),
                )
            } else {
                err("cannot initialize transactions", &e)
            });
        }
        let topic = out.marker_topic.clone();
        ensure_topic(&config.brokers, &topic, ctx.parallelism)
            .map_err(|e| err(&format!("marker topic `{topic}`"), &e))?;
        if let Some(bytes) = &ctx.restored {
            let state: SinkState =
                postcard::from_bytes(bytes).map_err(|e| err("restored sink state is damaged", &e))?;
            if !state.pending.is_empty() {
                let committed = out.committed_epoch()?;
                for (epoch, records) in state.pending {
                    if committed.is_some_and(|c| epoch <= c) {
                        continue; // committed before the crash
                    }
                    tracing::info!(
                        "{name}: committing the output of checkpoint {epoch} again ({} records)",
                        records.len()
                    );
                    out.commit_durably(epoch, &records, &AtomicBool::new(false))?;
                }
            }
        }
        let pending = Pending::default();
        let mut w = writer(Writes::Transactions(Committer::start(out, pending.clone())?));
        w.pending = pending;
        Ok(w)
    }
}

impl Output {
    /// The newest epoch whose marker is committed.
    fn committed_epoch(&self) -> Result<Option<u64>> {
        last_committed_epoch(
            &self.brokers,
            &self.marker_topic,
            self.marker_partition,
            &self.marker_key,
        )
        .map_err(|e| {
            kafka_error(
                &self.name,
                &format!("cannot read commit markers from `{}`", self.marker_topic),
                e,
            )
        })
    }

    /// Commits epoch `epoch`, riding out broker trouble: after a failed attempt
    /// the producer is created again (`init_transactions` aborts what the old
    /// one left open) and the marker decides whether the failed attempt had in
    /// fact committed, so that nothing is written twice.
    /// Gives up between attempts once `stop` is set (the sink is gone; the
    /// epoch stays pending in its checkpoint for the next run).
    fn commit_durably(&mut self, epoch: u64, records: &[OutRecord], stop: &AtomicBool) -> Result<()> {
        const ATTEMPTS: u32 = 6;
        let mut last_error = match self.commit_epoch(epoch, records) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        for attempt in 1..ATTEMPTS {
            if stop.load(Ordering::Acquire) {
                break;
            }
            tracing::warn!(
                "{}: {last_error}; retrying (attempt {attempt} of {})",
                self.name,
                ATTEMPTS - 1
            );
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            // A fresh producer with the same transactional.id: `init_transactions`
            // fences the old one and aborts what it left open. Until that and the
            // marker read both succeed, the failed attempt's outcome is unknown,
            // and nothing is sent again.
            let producer: BaseProducer<DeliveryReport> =
                match self.client.create_with_context(DeliveryReport::default()) {
                    Ok(p) => p,
                    Err(e) => {
                        last_error = kafka_error(&self.name, "cannot create producer", e);
                        continue;
                    }
                };
            if let Err(e) = producer.init_transactions(CLIENT_TIMEOUT) {
                last_error = kafka_error(&self.name, "cannot initialize transactions", e);
                continue;
            }
            self.producer = producer;
            match self.committed_epoch() {
                Ok(Some(c)) if c >= epoch => return Ok(()), // the failed attempt did commit
                Ok(_) => {}
                Err(e) => {
                    last_error = e;
                    continue;
                }
            }
            match self.commit_epoch(epoch, records) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8], partition: Option<i32>) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    self.producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => return Err(kafka_error(&self.name, &format!("cannot write to `{topic}`"), e)),
            }
        }
    }

    fn check_deliveries(&self) -> Result<()> {
        match self.producer.context().take_failure() {
            Some(message) => Err(WeirError::Connector {
                connector: self.name.clone(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Writes `records` of checkpoint `epoch` and its marker in one transaction.
    fn commit_epoch(&mut self, epoch: u64, records: &[OutRecord]) -> Result<()> {
        let fail = |name: &str, action: &str, e: KafkaError| kafka_error(name, action, e);
        self.producer
            .begin_transaction()
            .map_err(|e| fail(&self.name, "cannot begin transaction", e))?;
        for r in records {
            self.send(&self.topic, r.key.as_deref(), &r.value, r.partition)?;
        }
        self.send(
            &self.marker_topic,
            Some(self.marker_key.as_bytes()),
            epoch.to_string().as_bytes(),
            Some(self.marker_partition),
        )?;
        crate::failpoint::hit("kafka-before-commit");
        if let Err(e) = self.producer.commit_transaction(CLIENT_TIMEOUT) {
            let _ = self.producer.abort_transaction(CLIENT_TIMEOUT);
            return Err(fail(
                &self.name,
                &format!("cannot commit the output of checkpoint {epoch}"),
                e,
            ));
        }
        Ok(())
    }
}

impl<T: Send + 'static, S: Serializer<T>> Sink<T> for KafkaWriter<T, S> {
    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        for r in records.drain(..) {
            self.key_buf.clear();
            self.value_buf.clear();
            let partition = self
                .serializer
                .serialize(&r, &mut self.key_buf, &mut self.value_buf)
                .map_err(|e| WeirError::Connector {
                    connector: self.name.clone(),
                    message: format!("cannot serialize a record: {e}"),
                })?;
            let key = (!self.key_buf.is_empty()).then(|| self.key_buf.clone());
            match &self.out {
                Writes::Transactions(_) => self.epoch.push(OutRecord {
                    key,
                    value: self.value_buf.clone(),
                    partition,
                }),
                Writes::Direct(out) => out.send(&out.topic, key.as_deref(), &self.value_buf, partition)?,
            }
        }
        if let Writes::Direct(out) = &self.out {
            out.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        match &self.out {
            Writes::Direct(_) if self.delivery == Delivery::None => Ok(Vec::new()),
            Writes::Direct(out) => {
                out.producer
                    .flush(CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&self.name, "cannot flush before the checkpoint", e))?;
                out.check_deliveries()?;
                Ok(Vec::new())
            }
            Writes::Transactions(committer) => {
                committer.check(&self.name)?;
                let epoch = std::mem::take(&mut self.epoch);
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                if !epoch.is_empty() {
                    pending.insert(id.0, Arc::new(epoch));
                }
                // Every epoch not known to be committed, also those the
                // committer is writing now; encoded from a borrow (a deep
                // copy of a second's output held the barrier up).
                let state = SinkStateRef { pending: &pending };
                postcard::to_stdvec(&state).map_err(|e| WeirError::Connector {
                    connector: self.name.clone(),
                    message: format!("cannot encode sink state: {e}"),
                })
            }
        }
    }

    fn commit(&mut self, id: CheckpointId) -> Result<()> {
        let Writes::Transactions(committer) = &self.out else {
            return Ok(());
        };
        committer.check(&self.name)?;
        if id.0 <= self.handed {
            return Ok(()); // handed over already
        }
        let ready: Vec<(u64, Arc<Vec<OutRecord>>)> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .range(self.handed + 1..=id.0)
            .map(|(epoch, records)| (*epoch, records.clone()))
            .collect();
        for (epoch, records) in ready {
            committer.queue(&self.name, epoch, records)?;
            self.handed = epoch;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        match &mut self.out {
            Writes::Direct(out) => {
                out.producer
                    .flush(CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&self.name, "cannot flush at the end", e))?;
                out.check_deliveries()
            }
            Writes::Transactions(committer) => committer.finish(&self.name),
        }
    }
}

fn ensure_topic(brokers: &str, topic: &str, partitions: usize) -> std::result::Result<(), String> {
    // An existing topic needs no admin request (and no runtime).
    if partitions_of(brokers, topic)? == 0 {
        create_topic(brokers, topic, partitions)?;
    }
    let have = partitions_of(brokers, topic)?;
    if have < partitions {
        return Err(format!(
            "it has {have} partitions and the sink has {partitions} subtasks: it needs one partition per subtask \
             (add partitions, or choose another prefix with KafkaSink::marker_prefix)"
        ));
    }
    Ok(())
}

/// Partitions of `topic` in the cluster's metadata (0: no such topic).
fn partitions_of(brokers: &str, topic: &str) -> std::result::Result<usize, String> {
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let md = probe
        .fetch_metadata(Some(topic), CLIENT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}

/// Creates `topic` through the admin API. The admin client is async: it runs
/// on a runtime of its own, on a thread of its own, so that a job started
/// from inside a tokio runtime does not nest one runtime in another.
fn create_topic(brokers: &str, topic: &str, partitions: usize) -> std::result::Result<(), String> {
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    let create = move || -> std::result::Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let new = NewTopic::new(&topic, partitions as i32, TopicReplication::Fixed(1));
        let results = rt
            .block_on(admin.create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .map_err(|e| e.to_string())?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(format!("cannot create topic `{t}`: {code}")),
            }
        }
        Ok(())
    };
    std::thread::Builder::new()
        .name("weir-create-topic".into())
        .spawn(create)
        .map_err(|e| e.to_string())?
        .join()
        .unwrap_or_else(|_| Err("the thread creating the topic panicked".into()))
}

/// The newest epoch with a committed marker for `key`, reading the marker
/// partition read_committed up to its last stable offset.
fn last_committed_epoch(
    brokers: &str,
    topic: &str,
    partition: i32,
    key: &str,
) -> std::result::Result<Option<u64>, String> {
    let consumer: BaseConsumer<super::QuietEof> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "weir-marker-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "20")
        .create_with_context(super::QuietEof)
        .map_err(|e| e.to_string())?;
    let (_, end) = consumer
        .fetch_watermarks(topic, partition, CLIENT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    if end == 0 {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut newest = None;
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        if Instant::now() > deadline {
            return Err(format!("timed out reading `{topic}` up to offset {end}"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(newest),
            Some(Err(e)) => tracing::warn!("reading commit markers: {e}"),
            Some(Ok(m)) => {
                if m.key() == Some(key.as_bytes()) {
                    if let Some(epoch) = m
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        newest = Some(newest.map_or(epoch, |n: u64| n.max(epoch)));
                    }
                }
                if m.offset() + 1 >= end {
                    return Ok(newest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_state_encodes_as_the_state_decodes() {
        let record = |v: &[u8], k: Option<&[u8]>, p| OutRecord {
            key: k.map(<[u8]>::to_vec),
            value: v.to_vec(),
            partition: p,
        };
        let pending = BTreeMap::from([
            (3, vec![record(b"a", None, None), record(b"b", Some(b"k"), Some(2))]),
            (5, vec![record(b"", None, Some(0))]),
        ]);
        let shared: BTreeMap<u64, Arc<Vec<OutRecord>>> =
            pending.iter().map(|(e, r)| (*e, Arc::new(r.clone()))).collect();
        let bytes = postcard::to_stdvec(&SinkStateRef { pending: &shared }).unwrap();
        let state: SinkState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(state.pending, pending);
    }
}
