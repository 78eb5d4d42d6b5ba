//! The exactly-once sink's commits: [`Output`] (the producer and the
//! marker partition of a sink subtask) and [`Committer`], the thread that
//! commits completed checkpoints' output in order. See the invariants in the
//! sink's module doc.

use super::super::admin::AdminError;
use super::super::connection::KafkaConnection;
use super::super::offset::NextOffset;
use super::super::{bootstrap_of, broker_error, kafka_error, QuietEof};
use super::epoch::EpochOutput;
use super::{DeliveryReport, Pending, CLIENT_TIMEOUT};
use crate::error::{Result, WeirError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The producer of a sink subtask and what it needs to write and commit.
pub(super) struct Output {
    /// The producer's configuration, to create it again after a fatal error.
    pub(super) client: ClientConfig,
    pub(super) cluster: KafkaConnection,
    pub(super) name: String,
    pub(super) topic: String,
    pub(super) producer: BaseProducer<DeliveryReport>,
    pub(super) marker_topic: String,
    pub(super) marker_partition: i32,
    pub(super) marker_key: String,
}

/// Commits the output of completed checkpoints in order, on its own thread,
/// so the sink goes on reading the next epoch's records meanwhile (a
/// commit produces a whole interval's output and waits for the broker).
/// At most [`COMMITS_QUEUED`] epochs wait for it: then the sink waits too.
pub(super) struct Committer {
    epochs: Option<crossbeam_channel::Sender<(u64, Arc<EpochOutput>)>>,
    /// Why committing failed: the sink fails with it at its next call.
    failure: Arc<Mutex<Option<CommitFailure>>>,
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

/// Why the commit thread stopped, kept for the sink's next call.
enum CommitFailure {
    /// A newer producer took the transactional id over.
    Fenced(String),
    /// Anything else, as text.
    Other(String),
}

impl CommitFailure {
    fn of(e: &WeirError) -> Self {
        match e {
            WeirError::Fenced { what } => CommitFailure::Fenced(what.clone()),
            other => CommitFailure::Other(other.to_string()),
        }
    }
}

/// Completed checkpoints whose output may wait for the committer thread.
const COMMITS_QUEUED: usize = 2;

impl Committer {
    /// Starts the commit thread, which owns `out` and removes each epoch
    /// from `pending` once committed.
    pub(super) fn start(mut out: Output, pending: Pending) -> Result<Self> {
        let (epochs, queue) = crossbeam_channel::bounded::<(u64, Arc<EpochOutput>)>(COMMITS_QUEUED);
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
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(CommitFailure::of(&e));
                        return; // the sink fails and restarts from the checkpoint
                    }
                    pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&epoch);
                }
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                // The sink finished: every record acknowledged.
                if let Err(e) = super::super::flush(&out.producer, CLIENT_TIMEOUT)
                    .map_err(|e| kafka_error(&out.name, "cannot flush at the end", e))
                    .and_then(|()| out.check_deliveries())
                {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(CommitFailure::of(&e));
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
    pub(super) fn check(&self, name: &str) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|p| p.into_inner()) {
            // Fenced stays fenced: not retryable, so no supervisor restarts a zombie.
            Some(CommitFailure::Fenced(what)) => Err(WeirError::Fenced { what: what.clone() }),
            Some(CommitFailure::Other(message)) => Err(WeirError::Connector {
                connector: name.to_string(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Queues `epoch` for committing (waits while [`COMMITS_QUEUED`] wait).
    pub(super) fn queue(&self, name: &str, epoch: u64, records: Arc<EpochOutput>) -> Result<()> {
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
    pub(super) fn finish(&mut self, name: &str) -> Result<()> {
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

impl Output {
    /// The newest epoch whose marker is committed. Waits for transactions
    /// of other writers of the marker partition (see
    /// [`last_committed_epoch`]) at most this sink's transaction timeout plus
    /// 30 s (90 s at least), or until `stop` is set.
    pub(super) fn committed_epoch(&self, stop: Option<&AtomicBool>) -> Result<Option<u64>> {
        let transaction_timeout = self
            .client
            .get("transaction.timeout.ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let settle = (transaction_timeout + Duration::from_secs(30)).max(MIN_SETTLE);
        last_committed_epoch(
            &self.cluster,
            (&self.marker_topic, self.marker_partition),
            &self.marker_key,
            (settle, stop),
        )
        .map_err(|e| {
            e.into_error(
                &self.name,
                &format!("cannot read commit markers from `{}`", self.marker_topic),
                &self.cluster.describe(),
            )
        })
    }

    /// Commits epoch `epoch`, riding out broker trouble: after a failed attempt
    /// the producer is created again (`init_transactions` aborts what the old
    /// one left open) and the marker decides whether the failed attempt had in
    /// fact committed, so that nothing is written twice.
    /// Gives up between attempts once `stop` is set (the sink is gone; the
    /// epoch stays pending in its checkpoint for the next run).
    pub(super) fn commit_durably(&mut self, epoch: u64, records: &EpochOutput, stop: &AtomicBool) -> Result<()> {
        const ATTEMPTS: u32 = 6;
        let mut last_error = match self.commit_epoch(epoch, records) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        for attempt in 1..ATTEMPTS {
            if stop.load(Ordering::Acquire) {
                break;
            }
            // A newer producer with this transactional id exists: this sink is
            // a zombie. A new producer of ours would fence the newer one back
            // (and both would write), so this instance stops here.
            if is_fenced(&last_error) {
                return Err(self.fenced(&last_error));
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
                        last_error = broker_error(&self.name, "cannot create producer", &bootstrap_of(&self.client), e);
                        continue;
                    }
                };
            if let Err(e) = producer.init_transactions(CLIENT_TIMEOUT) {
                last_error = broker_error(
                    &self.name,
                    "cannot initialize transactions",
                    &bootstrap_of(&self.client),
                    e,
                );
                continue;
            }
            self.producer = producer;
            match self.committed_epoch(Some(stop)) {
                // The failed attempt did commit (markers are this incarnation's only).
                Ok(Some(c)) if c >= epoch => return Ok(()),
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
        if is_fenced(&last_error) {
            return Err(self.fenced(&last_error));
        }
        Err(last_error)
    }

    /// The fatal error of a sink fenced off by a newer producer.
    fn fenced(&self, cause: &WeirError) -> WeirError {
        let id = self.client.get("transactional.id").unwrap_or("?");
        tracing::error!("{}: fenced off by a newer producer: {cause}", self.name);
        WeirError::Fenced {
            what: format!("the Kafka transactional id `{id}` of {}", self.name),
        }
    }

    /// Sends one record (waiting while the producer's queue is full).
    pub(super) fn send(&self, topic: &str, key: Option<&[u8]>, value: &[u8], partition: Option<i32>) -> Result<()> {
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

    /// The first failed delivery since the last check, as an error.
    pub(super) fn check_deliveries(&self) -> Result<()> {
        match self.producer.context().take_failure() {
            Some(message) => Err(WeirError::Connector {
                connector: self.name.clone(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Writes `records` of checkpoint `epoch` and its marker in one transaction.
    fn commit_epoch(&mut self, epoch: u64, records: &EpochOutput) -> Result<()> {
        let fail = |name: &str, action: &str, e: KafkaError| broker_error(name, action, &bootstrap_of(&self.client), e);
        let began = Instant::now();
        self.producer
            .begin_transaction()
            .map_err(|e| fail(&self.name, "cannot begin transaction", e))?;
        for r in records.iter() {
            self.send(&self.topic, r.key, r.value, r.partition)?;
        }
        self.send(
            &self.marker_topic,
            Some(self.marker_key.as_bytes()),
            epoch.to_string().as_bytes(),
            Some(self.marker_partition),
        )?;
        crate::failpoint::hit("kafka-before-commit");
        let sent = began.elapsed();
        // Acknowledged first (see `flush`): commit_transaction's own flush costs 100 ms.
        let committed = super::super::flush(&self.producer, CLIENT_TIMEOUT)
            .and_then(|()| self.producer.commit_transaction(CLIENT_TIMEOUT));
        if let Err(e) = committed {
            let _ = self.producer.abort_transaction(CLIENT_TIMEOUT);
            return Err(fail(
                &self.name,
                &format!("cannot commit the output of checkpoint {epoch}"),
                e,
            ));
        }
        tracing::debug!(
            "{}: committed checkpoint {epoch}'s {} record(s): sent in {sent:?}, committed after {:?}",
            self.name,
            records.len(),
            began.elapsed()
        );
        // Committed, and the checkpoint still lists the epoch as pending: a
        // restart must find the marker and not commit it again.
        crate::failpoint::hit("kafka-after-commit");
        Ok(())
    }
}

/// Whether `error` says a newer producer with the same transactional id
/// exists (this one is fenced), which no retry may undo.
fn is_fenced(error: &WeirError) -> bool {
    let WeirError::Kafka { source, .. } = error else {
        return false;
    };
    let fenced_code = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
        )
    };
    match &**source {
        KafkaError::Transaction(e) => fenced_code(e.code()),
        other => other.rdkafka_error_code().is_some_and(fenced_code),
    }
}

/// Offsets read back from the end of a marker partition at a time when
/// looking for a subtask's newest marker: one window normally holds it, as a
/// subtask writes a marker every checkpoint into a partition of its own.
const MARKER_WINDOW: i64 = 1_000;

/// The shortest wait of a marker read for transactions of other writers of
/// the marker partition to end: longer than weir's default transaction
/// timeout (60 s) plus the broker's check for timed-out transactions (10 s),
/// so an abandoned transaction is aborted by the broker before the wait
/// gives up.
const MIN_SETTLE: Duration = Duration::from_secs(90);

/// The newest epoch with a committed marker for `key`, reading the marker
/// partition read_committed backwards from its end, a window at a time,
/// until a window holds one (so a long history is never scanned whole).
/// Markers of other incarnations of the same (job, sink, subtask) are not
/// this run's: they are ignored, and their presence is logged.
///
/// Other incarnations (another checkpoint store of a job of the same name
/// on the same cluster) write into the same partition, and a transaction of
/// theirs that is open holds the last stable offset back below this
/// subtask's newest marker, which a read_committed read would then not
/// reach: the epoch would look uncommitted and be written twice. So the
/// read first waits until the last stable offset reaches the high
/// watermark it saw at the start (every transaction that may hold a marker
/// of ours before it has ended), and reads up to that watermark.
/// The wait gives up after `settle`, or when `stop` is set.
fn last_committed_epoch(
    cluster: &KafkaConnection,
    (topic, partition): (&str, i32),
    key: &str,
    (settle, stop): (Duration, Option<&AtomicBool>),
) -> std::result::Result<Option<u64>, AdminError> {
    let client = |isolation: &str| -> std::result::Result<BaseConsumer<QuietEof>, AdminError> {
        Ok(cluster
            .client_config()
            .set("group.id", "weir-marker-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .set("fetch.wait.max.ms", "20")
            // A window whose start was compacted or deleted meanwhile reads from
            // what is left, never silently from the end.
            .set("auto.offset.reset", "earliest")
            .create_with_context(QuietEof)?)
    };
    let consumer = client("read_committed")?;
    // A read_uncommitted client is answered with the high watermark, a
    // read_committed one with the last stable offset.
    let high = super::super::admin::watermarks(&client("read_uncommitted")?, topic, partition, CLIENT_TIMEOUT)?;
    let (low, end) = (high.low.get(), high.high.get());
    let settling = Instant::now();
    loop {
        let stable = super::super::admin::watermarks(&consumer, topic, partition, CLIENT_TIMEOUT)?
            .high
            .get();
        if stable >= end {
            break;
        }
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Err(AdminError::Other(format!(
                "stopped while waiting for a transaction on `{topic}` partition {partition} to end"
            )));
        }
        if settling.elapsed() > settle {
            return Err(AdminError::Other(format!(
                "a transaction of another writer of `{topic}` partition {partition} has been open for \
                 {settle:?} (last stable offset {stable}, high watermark {end}): the newest commit marker \
                 cannot be read yet; another store of a job of this name is writing there (a transaction \
                 left hanging can be listed and aborted with Kafka's kafka-transactions.sh \
                 --find-hanging / abort)"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let same_sink = key.split('@').next().unwrap_or(key);
    let mut others = false;
    let mut window_end = end;
    let mut newest = None;
    while window_end > low && newest.is_none() {
        let start = (window_end - MARKER_WINDOW).max(low);
        let window = read_markers(
            &consumer,
            (topic, partition),
            (start, window_end),
            deadline,
            |k, epoch| {
                if k == key.as_bytes() {
                    newest = Some(newest.map_or(epoch, |n: u64| n.max(epoch)));
                } else if k.starts_with(same_sink.as_bytes()) {
                    others = true;
                }
            },
        );
        window?;
        window_end = start;
    }
    if others {
        tracing::info!(
            "`{topic}` partition {partition} holds commit markers of another incarnation of this sink \
             (another checkpoint store of the job): they are ignored, only `{key}` counts"
        );
    }
    Ok(newest)
}

/// Calls `seen(key, epoch)` for every committed marker in offsets
/// `[start, end)` of the partition.
fn read_markers(
    consumer: &BaseConsumer<QuietEof>,
    (topic, partition): (&str, i32),
    (start, end): (i64, i64),
    deadline: Instant,
    mut seen: impl FnMut(&[u8], u64),
) -> std::result::Result<(), AdminError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    loop {
        if Instant::now() > deadline {
            return Err(AdminError::Other(format!(
                "timed out reading `{topic}` partition {partition} from offset {start} to {end}"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
            Some(Err(e)) => tracing::warn!("reading commit markers of `{topic}` partition {partition}: {e}"),
            Some(Ok(m)) => {
                if m.offset() >= end {
                    return Ok(()); // past the window (aborted records and markers hide its last offsets)
                }
                let epoch = m
                    .payload()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|s| s.parse::<u64>().ok());
                if let (Some(k), Some(epoch)) = (m.key(), epoch) {
                    seen(k, epoch);
                }
                if NextOffset::after(m.offset()).get() >= end {
                    return Ok(());
                }
            }
        }
    }
}
