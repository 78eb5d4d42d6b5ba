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
//!    (`init_transactions` aborts a transaction it left open, and waits for
//!    one it committed to be complete), then reads the newest committed
//!    marker of its partition (read_committed) and commits again exactly the
//!    pending epochs above it, in order. Other subtasks never write to the
//!    partition, but another incarnation of the job (another checkpoint store
//!    of the same job name on the same cluster) does, and an open transaction
//!    of theirs would hold the last stable offset back and hide our newest
//!    marker: the read first waits until the last stable offset reaches the
//!    high watermark it saw (see `commit::last_committed_epoch`).
//!
//! A crash between "checkpoint complete" and "transaction committed" thus
//! leaves the epoch pending in the checkpoint and unmarked: it is committed
//! by the restarted job. A crash during the transaction leaves it open; the
//! restarted producer has the same `transactional.id` (stable per store
//! incarnation, job, sink and subtask), so `init_transactions` aborts it
//! (zombie fencing). A producer fenced by a newer one stops for good
//! (`WeirError::Fenced`): it never retries on a new producer, which would
//! fence the newer one back.
//!
//! Output becomes visible to read_committed consumers when a checkpoint
//! completes, as with Flink's exactly-once Kafka sink.

use super::admin::{self, AdminError};
use super::connection::KafkaConnection;
use super::format::{Serializer, SinkEvent};
use super::{bootstrap_of, broker_error, connector_error, kafka_error};
use crate::connectors::{ConnectorContext, Sink};
use crate::error::{Result, WeirError};
use commit::{Committer, Output};
use epoch::EpochOutput;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_operators::CheckpointId;

mod commit;
mod epoch;

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
pub struct KafkaSink<T, S> {
    cluster: KafkaConnection,
    topic: String,
    delivery: Delivery,
    serializer: S,
    properties: Vec<(String, String)>,
    marker_prefix: String,
    transaction_timeout: Duration,
    max_epoch_bytes: usize,
    _t: PhantomData<fn(T)>,
}

// Not derived: that would ask `T: Clone` of the records.
impl<T, S: Clone> Clone for KafkaSink<T, S> {
    fn clone(&self) -> Self {
        KafkaSink {
            cluster: self.cluster.clone(),
            topic: self.topic.clone(),
            delivery: self.delivery,
            serializer: self.serializer.clone(),
            properties: self.properties.clone(),
            marker_prefix: self.marker_prefix.clone(),
            transaction_timeout: self.transaction_timeout,
            max_epoch_bytes: self.max_epoch_bytes,
            _t: PhantomData,
        }
    }
}

/// The default bound of one checkpoint's output of an exactly-once sink
/// (see [`KafkaSink::max_epoch_bytes`]).
pub const DEFAULT_MAX_EPOCH_BYTES: usize = 64 << 20;

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
    /// A sink writing to `topic` of `cluster` (bootstrap servers
    /// `host:port,...`, or a [`KafkaConnection`] with TLS/SASL properties)
    /// with `serializer`, exactly-once.
    pub fn new(cluster: impl Into<KafkaConnection>, topic: &str, serializer: S) -> Self {
        KafkaSink {
            cluster: cluster.into(),
            topic: topic.to_string(),
            delivery: Delivery::ExactlyOnce,
            serializer,
            properties: Vec::new(),
            marker_prefix: DEFAULT_MARKER_PREFIX.to_string(),
            transaction_timeout: Duration::from_secs(60),
            max_epoch_bytes: DEFAULT_MAX_EPOCH_BYTES,
            _t: PhantomData,
        }
    }
    /// The delivery guarantee (default exactly-once).
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }
    /// Sets a librdkafka producer property. A [connection
    /// property](super::connection::is_connection_property) (TLS, SASL,
    /// sockets) reaches every client of the sink: its producer, the commit
    /// marker reader and the admin client that creates the marker topic.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        if super::connection::is_connection_property(key) {
            self.cluster.set(key, value);
        }
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

    /// Exactly-once: when the output of the current checkpoint interval
    /// passes this many bytes, the sink asks for a checkpoint at once instead
    /// of waiting for the interval (default 64 MiB). That output is held in
    /// memory, in the checkpoint and in one transaction until its checkpoint
    /// completes: an unbounded epoch ends in a transaction timeout or out of
    /// memory, on every restart.
    pub fn max_epoch_bytes(mut self, bytes: usize) -> Self {
        self.max_epoch_bytes = bytes.max(1);
        self
    }

    /// The factory for [`crate::Stream::sink`].
    pub fn factory(self) -> impl Fn(ConnectorContext) -> Result<KafkaWriter<T, S>> + Send + 'static {
        move |ctx| Ok(KafkaWriter::new(&self, &ctx))
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

/// What the sink stores in a checkpoint: output of epochs not known to be committed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SinkState {
    pending: BTreeMap<u64, EpochOutput>,
}

/// Output of epochs not known to be committed, shared by the sink and its
/// committer thread (which removes an epoch once committed).
type Pending = Arc<Mutex<BTreeMap<u64, Arc<EpochOutput>>>>;

/// [`SinkState`] borrowed, for encoding: the same bytes.
struct SinkStateRef<'a> {
    pending: &'a BTreeMap<u64, Arc<EpochOutput>>,
}

impl Serialize for SinkStateRef<'_> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> std::result::Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeStruct;
        struct Epochs<'a>(&'a BTreeMap<u64, Arc<EpochOutput>>);
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
    /// (exactly-once); `None` until open.
    out: Option<Writes>,
    /// Opens the subtask (taken by the first open).
    opener: Option<Opener>,
    /// Records of the current epoch (exactly-once).
    epoch: EpochOutput,
    /// Their bytes (keys and values), and the bound past which a checkpoint
    /// is asked for, once per epoch.
    epoch_bytes: usize,
    max_epoch_bytes: usize,
    asked: bool,
    checkpoint_request: crate::connectors::CheckpointRequest,
    pending: Pending,
    /// The newest epoch handed to the committer.
    handed: u64,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    /// Control records the serializer asked for ([`Serializer::control`]).
    control_buf: Vec<(i32, Vec<u8>)>,
    _t: PhantomData<fn(T)>,
}

/// Opens a sink subtask, given its pending epochs (restored ones go there).
type Opener = Box<dyn FnOnce(&Pending) -> Result<Writes> + Send>;

/// Where a sink's records go.
enum Writes {
    /// Straight to the producer.
    Direct(Output),
    /// In transactions, one per completed checkpoint, on a thread of their own.
    Transactions(Committer),
}

/// How long a producer call (flush, transaction, metadata) may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

impl<T: Send + 'static, S: Serializer<T>> KafkaWriter<T, S> {
    /// The subtask, not connected yet: the cluster is reached in
    /// [`Sink::open`], which the runtime calls on the task's own thread, so
    /// that the sink subtasks of a job (each an access check, a producer,
    /// `init_transactions`, the marker topic and the re-commit of restored
    /// epochs: ~0.1–0.4 s) open side by side instead of one after another.
    fn new(config: &KafkaSink<T, S>, ctx: &ConnectorContext) -> Self {
        let name = format!("{}[{}]", ctx.uid, ctx.subtask);
        let (opening_config, opening_ctx, opening_name) = (config.clone(), ctx.clone(), name.clone());
        KafkaWriter {
            name,
            delivery: config.delivery,
            serializer: config.serializer.clone(),
            out: None,
            opener: Some(Box::new(move |pending: &Pending| {
                open_writes(&opening_config, &opening_ctx, &opening_name, pending)
            })),
            epoch: EpochOutput::default(),
            epoch_bytes: 0,
            max_epoch_bytes: config.max_epoch_bytes,
            asked: false,
            checkpoint_request: ctx.checkpoint_request.clone(),
            pending: Pending::default(),
            handed: 0,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            control_buf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Opens the subtask unless it is open: [`Sink::open`] when the runtime
    /// runs it, else at the first call that needs the cluster.
    fn ensure_open(&mut self) -> Result<&mut Writes> {
        if self.out.is_none() {
            let opener = self.opener.take().ok_or_else(|| WeirError::Connector {
                connector: self.name.clone(),
                message: "an earlier attempt to open the sink failed".into(),
            })?;
            self.out = Some(opener(&self.pending)?);
        }
        self.out
            .as_mut()
            .ok_or_else(|| WeirError::Internal(format!("sink {} is not open", self.name)))
    }
}

/// Reaches the cluster for a sink subtask: the access check, its producer,
/// and for exactly-once `init_transactions` (fencing what a predecessor
/// left), the marker topic, the re-commit of restored epochs above the
/// newest committed marker, and the commit thread.
fn open_writes<T: Send + 'static, S: Serializer<T>>(
    config: &KafkaSink<T, S>,
    ctx: &ConnectorContext,
    name: &str,
    pending: &Pending,
) -> Result<Writes> {
    let opening = std::time::Instant::now();
    // A wrong password or certificate fails here, saying so, at once.
    config
        .cluster
        .check_access(CLIENT_TIMEOUT)
        .map_err(|e| e.into_error(name, &config.cluster))?;
    tracing::debug!("{name}: cluster access checked after {:?}", opening.elapsed());
    let c = match config.delivery {
        Delivery::ExactlyOnce => exactly_once_client(config, ctx, ctx.subtask),
        direct => {
            let mut c = config.cluster.client_config();
            c.set("linger.ms", "5");
            if direct == Delivery::None {
                c.set("acks", "1");
            } else {
                c.set("enable.idempotence", "true");
            }
            for (k, v) in &config.properties {
                c.set(k, v);
            }
            c
        }
    };
    let mut out = output(config, ctx, name, ctx.subtask, c)?;
    if config.delivery != Delivery::ExactlyOnce {
        return Ok(Writes::Direct(out));
    }
    init_transactions(config, name, &out)?;
    tracing::debug!("{name}: transactions initialized after {:?}", opening.elapsed());
    let topic = out.marker_topic.clone();
    let formers = ctx.adopted.iter().map(|(j, _)| j + 1).max().unwrap_or(0);
    ensure_topic(&config.cluster, &topic, ctx.parallelism.max(formers))
        .map_err(|e| e.into_error(name, &format!("marker topic `{topic}`"), &config.cluster.describe()))?;
    tracing::debug!("{name}: marker topic checked after {:?}", opening.elapsed());
    if let Some(bytes) = &ctx.restored {
        commit_restored(name, &mut out, bytes)?;
    }
    // After a change of parallelism: each former subtask's pending epochs
    // are committed with its own transactional id (fencing whatever it left
    // open) and marked in its own marker partition.
    for (former, bytes) in &ctx.adopted {
        if *former == ctx.subtask {
            commit_restored(name, &mut out, bytes)?;
            continue;
        }
        let who = format!("{name} (for former subtask {former})");
        let mut theirs = output(config, ctx, &who, *former, exactly_once_client(config, ctx, *former))?;
        init_transactions(config, &who, &theirs)?;
        commit_restored(&who, &mut theirs, bytes)?;
    }
    let writes = Writes::Transactions(Committer::start(out, pending.clone())?);
    tracing::debug!("{name}: open after {:?}", opening.elapsed());
    Ok(writes)
}

/// The client settings of the exactly-once producer of `subtask`. Its
/// transactional id is stable per (store incarnation, job, sink, subtask):
/// a restarted run of the same store fences its predecessor (and aborts
/// what it left open); runs of other stores never fence each other.
fn exactly_once_client<T, S>(config: &KafkaSink<T, S>, ctx: &ConnectorContext, subtask: usize) -> ClientConfig {
    let mut c = config.cluster.client_config();
    c.set("linger.ms", "5")
        .set(
            "transactional.id",
            transactional_id(&ctx.job, &ctx.uid, subtask, &ctx.incarnation),
        )
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout.as_millis().to_string(),
        );
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// The producer of `subtask` (this subtask's, or a former one's) and where
/// it writes.
fn output<T, S>(
    config: &KafkaSink<T, S>,
    ctx: &ConnectorContext,
    name: &str,
    subtask: usize,
    c: ClientConfig,
) -> Result<Output> {
    let producer: BaseProducer<DeliveryReport> = c
        .create_with_context(DeliveryReport::default())
        .map_err(|e| broker_error(name, "cannot create producer", &bootstrap_of(&c), e))?;
    Ok(Output {
        client: c,
        cluster: config.cluster.clone(),
        name: name.to_string(),
        topic: config.topic.clone(),
        producer,
        marker_topic: marker_topic(&config.marker_prefix, &ctx.job, &ctx.uid),
        marker_partition: subtask as i32,
        marker_key: marker_key(&ctx.job, &ctx.uid, subtask, &ctx.incarnation),
    })
}

/// Commits again the restored epochs in `bytes` that the newest marker of
/// `out`'s partition does not cover, in order.
fn commit_restored(name: &str, out: &mut Output, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Ok(()); // a sink that was not exactly-once then
    }
    let state: SinkState =
        postcard::from_bytes(bytes).map_err(|e| connector_error(name, "restored sink state is damaged", e))?;
    if state.pending.is_empty() {
        return Ok(());
    }
    let committed = out.committed_epoch(None)?;
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
    Ok(())
}

/// `init_transactions` of `out`'s producer: fences (and aborts what was
/// left open by) every earlier producer of its transactional id.
fn init_transactions<T, S>(config: &KafkaSink<T, S>, name: &str, out: &Output) -> Result<()> {
    if let Err(e) = out.producer.init_transactions(CLIENT_TIMEOUT) {
        let invalid_timeout =
            matches!(&e, KafkaError::Transaction(t) if t.code() == RDKafkaErrorCode::InvalidTransactionTimeout);
        return Err(if invalid_timeout {
            WeirError::Kafka {
                connector: name.to_string(),
                message: format!(
                    "the broker refuses the transaction timeout: transaction.timeout.ms={} is above the \
                     broker's transaction.max.timeout.ms: lower it with KafkaSink::transaction_timeout or raise \
                     transaction.max.timeout.ms on the broker ({e})",
                    config.transaction_timeout.as_millis()
                ),
                source: Box::new(e),
            }
        } else {
            broker_error(name, "cannot initialize transactions", &bootstrap_of(&out.client), e)
        });
    }
    Ok(())
}

impl<T: Send + 'static, S: Serializer<T>> KafkaWriter<T, S> {
    /// Writes the control records the serializer asks for on `event`, as
    /// keyless records among the data.
    fn control(&mut self, event: SinkEvent) -> Result<()> {
        self.serializer.control(event, &mut self.control_buf);
        if self.control_buf.is_empty() {
            return Ok(());
        }
        self.ensure_open()?;
        for (partition, value) in self.control_buf.drain(..) {
            match &self.out {
                Some(Writes::Transactions(_)) => {
                    self.epoch_bytes += value.len();
                    self.epoch.push(None, &value, Some(partition))
                }
                Some(Writes::Direct(out)) => out.send(&out.topic, None, &value, Some(partition))?,
                None => return Err(WeirError::Internal(format!("sink {} is not open", self.name))),
            }
        }
        Ok(())
    }
}

impl<T: Send + 'static, S: Serializer<T>> Sink<T> for KafkaWriter<T, S> {
    // A former subtask's pending epochs are committed under its
    // transactional id and marker partition by whoever adopts it.
    const ADOPTS_STATE: bool = true;

    fn open(&mut self) -> Result<()> {
        self.ensure_open().map(|_| ())
    }

    fn write(&mut self, records: &mut Vec<T>) -> Result<()> {
        self.ensure_open()?;
        if self.serializer.gathers() {
            for r in records.drain(..) {
                self.serializer.gather(&r).map_err(|e| WeirError::Connector {
                    connector: self.name.clone(),
                    message: format!("cannot serialize a record: {e}"),
                })?;
            }
            return self.control(SinkEvent::Flush);
        }
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
            let key = (!self.key_buf.is_empty()).then_some(&self.key_buf[..]);
            match &self.out {
                Some(Writes::Transactions(_)) => {
                    self.epoch_bytes += self.key_buf.len() + self.value_buf.len();
                    self.epoch.push(key, &self.value_buf, partition)
                }
                Some(Writes::Direct(out)) => out.send(&out.topic, key, &self.value_buf, partition)?,
                None => return Err(WeirError::Internal(format!("sink {} is not open", self.name))),
            }
        }
        if let Some(Writes::Direct(out)) = &self.out {
            out.producer.poll(Duration::ZERO);
        }
        if self.epoch_bytes >= self.max_epoch_bytes && !self.asked {
            self.asked = true;
            tracing::info!(
                "{}: the output since the last checkpoint passed {} bytes: asking for a checkpoint now",
                self.name,
                self.max_epoch_bytes
            );
            self.checkpoint_request.request();
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: weir_operators::Timestamp) -> Result<()> {
        self.control(SinkEvent::Watermark(watermark.0))
    }

    fn idle(&mut self) -> Result<()> {
        self.control(SinkEvent::Idle)
    }

    fn snapshot(&mut self, id: CheckpointId) -> Result<Vec<u8>> {
        self.ensure_open()?;
        self.control(SinkEvent::Checkpoint)?;
        match &self.out {
            None => Err(WeirError::Internal(format!("sink {} is not open", self.name))),
            Some(Writes::Direct(_)) if self.delivery == Delivery::None => Ok(Vec::new()),
            Some(Writes::Direct(out)) => {
                super::flush(&out.producer, CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&self.name, "cannot flush before the checkpoint", e))?;
                out.check_deliveries()?;
                Ok(Vec::new())
            }
            Some(Writes::Transactions(committer)) => {
                committer.check(&self.name)?;
                let epoch = std::mem::take(&mut self.epoch);
                (self.epoch_bytes, self.asked) = (0, false);
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
        self.ensure_open()?;
        let Some(Writes::Transactions(committer)) = &self.out else {
            return Ok(());
        };
        committer.check(&self.name)?;
        if id.0 <= self.handed {
            return Ok(()); // handed over already
        }
        let ready: Vec<(u64, Arc<EpochOutput>)> = self
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
        let name = self.name.clone();
        match self.ensure_open()? {
            Writes::Direct(out) => {
                super::flush(&out.producer, CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&name, "cannot flush at the end", e))?;
                out.check_deliveries()
            }
            Writes::Transactions(committer) => committer.finish(&name),
        }
    }
}

/// The key of a sink subtask's commit markers: `<job>/<uid>/<subtask>` and
/// the checkpoint store's incarnation (`@<incarnation>`), so that markers of
/// another incarnation of the same job and sink (a wiped or different
/// checkpoint directory) are never taken for this one's. A store older than
/// incarnations keeps the key it always had.
pub(super) fn marker_key(job: &str, uid: &str, subtask: usize, incarnation: &str) -> String {
    if incarnation == crate::checkpoint::store::LEGACY_INCARNATION {
        format!("{job}/{uid}/{subtask}")
    } else {
        format!("{job}/{uid}/{subtask}@{incarnation}")
    }
}

/// The transactional id of a sink subtask: `weir-<job>-<uid>-<subtask>` and,
/// for a store with an incarnation, `-<incarnation>`. Only one run of a
/// store exists at a time (its lock), so only a dead or paused predecessor
/// can hold the id; another store's run of the same job has an id of its own
/// and can neither fence this one nor be fenced by it.
pub(super) fn transactional_id(job: &str, uid: &str, subtask: usize, incarnation: &str) -> String {
    if incarnation == crate::checkpoint::store::LEGACY_INCARNATION {
        format!("weir-{job}-{uid}-{subtask}")
    } else {
        format!("weir-{job}-{uid}-{subtask}-{incarnation}")
    }
}

/// Creates the marker topic with one partition per subtask unless it exists,
/// and refuses one with too few partitions. Markers are state: the topic is
/// compacted (only the newest marker per key matters, and it is never
/// deleted by retention) and replicated like the broker's own state, up to
/// three copies with two in sync (one with fewer brokers, so that one broker
/// down never stops the commits).
fn ensure_topic(cluster: &KafkaConnection, topic: &str, partitions: usize) -> std::result::Result<(), AdminError> {
    // An existing topic needs no admin request (and no runtime).
    if admin::partitions_of(cluster, topic, CLIENT_TIMEOUT)? == 0 {
        let replication = admin::broker_count(cluster, CLIENT_TIMEOUT)?.clamp(1, 3) as i32;
        // Two in sync where a broker may fail without stopping commits (3 replicas).
        let in_sync = (replication - 1).clamp(1, 2).to_string();
        admin::create_topic(
            cluster,
            topic,
            admin::TopicSpec {
                partitions,
                replication,
                // Short segments: compaction (which never touches the active
                // segment) keeps what a restart reads back small.
                config: &[
                    ("cleanup.policy", "compact"),
                    ("min.insync.replicas", &in_sync),
                    ("segment.ms", "3600000"),
                ],
            },
        )?;
    }
    let have = admin::partitions_of(cluster, topic, CLIENT_TIMEOUT)?;
    if have < partitions {
        // More subtasks than before (the job was rescaled): one partition each.
        admin::add_partitions(cluster, topic, partitions)?;
        let now = admin::partitions_of(cluster, topic, CLIENT_TIMEOUT)?;
        if now < partitions {
            return Err(AdminError::Other(format!(
                "it has {now} partitions and the sink has {partitions} subtasks: it needs one partition per \
                 subtask (add partitions, or choose another prefix with KafkaSink::marker_prefix)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_are_per_store_incarnation() {
        assert_eq!(transactional_id("q5", "rows", 1, "legacy"), "weir-q5-rows-1");
        assert_eq!(transactional_id("q5", "rows", 1, "0a1b"), "weir-q5-rows-1-0a1b");
    }

    #[test]
    fn markers_of_each_store_incarnation_have_their_own_key() {
        assert_eq!(marker_key("q5", "rows", 1, "legacy"), "q5/rows/1");
        assert_eq!(marker_key("q5", "rows", 1, "0a1b"), "q5/rows/1@0a1b");
        assert_ne!(marker_key("q5", "rows", 1, "0a1b"), marker_key("q5", "rows", 1, "0a1c"));
    }

    #[test]
    fn the_borrowed_state_encodes_as_the_state_decodes() {
        type Record<'a> = (&'a [u8], Option<&'a [u8]>, Option<i32>);
        let epoch = |records: &[Record<'_>]| {
            let mut out = EpochOutput::default();
            for (value, key, partition) in records {
                out.push(*key, value, *partition);
            }
            out
        };
        let pending = BTreeMap::from([
            (3, epoch(&[(b"a", None, None), (b"b", Some(b"k"), Some(2))])),
            (5, epoch(&[(b"", None, Some(0))])),
        ]);
        let shared: BTreeMap<u64, Arc<EpochOutput>> = pending.iter().map(|(e, r)| (*e, Arc::new(r.clone()))).collect();
        let bytes = postcard::to_stdvec(&SinkStateRef { pending: &shared }).unwrap();
        let state: SinkState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(state.pending, pending);
    }
}
