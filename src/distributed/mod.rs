//! Scale-out across processes with Kafka as the distributed engine.
//!
//! A **member** is one process of a job; run the same member on more
//! machines (or more times on one) to scale out, stop one to scale in. A
//! job is one or more **stages** (sub-topologies), each reading one topic:
//! the job's input, or a repartition topic (see [`repartition`]) that an
//! upstream stage writes where the graph is cut at a `key_by`. The members
//! of a job form one Kafka consumer group, `weir-<job>`, subscribed to every
//! stage's topic with the cooperative-sticky assignor (as Kafka Streams
//! runs all sub-topologies of an application in one group): the group
//! coordinator does membership, failure detection and assignment, weir adds
//! no cluster manager. The group's consumer only holds membership (its
//! partitions stay paused); each topic partition it is assigned is a
//! **shard**, run as a job of its own, `<job>-<stage>-p<partition>`
//! (`<job>-p<partition>` for a job of one unnamed stage), reading only that
//! partition, with its own checkpoints in the shared store (an object
//! store, so that any member can restore it) and its own Kafka
//! transactional ids. So every shard keeps the single-process proof: a
//! shard that moves is restored from its newest checkpoint exactly as a
//! restarted job is, and a zombie (a paused or cut-off member) is fenced
//! by the store's claims and by its transactional ids.
//!
//! - **Revoked** (a member joins, or this one leaves): the shard stops with
//!   a final checkpoint (its sinks commit) inside the rebalance callback,
//!   before the partition is released.
//! - **Assigned**: the shard job starts and restores its newest checkpoint.
//! - **Lost** (this member missed its session; others took the shards):
//!   the shard is stopped all the same; its writes are fenced.
//! - **Bounded** ([`MemberOptions::bounded`]): a shard whose job ended (its
//!   input read to the end) stays with the member, finished; a stage that
//!   feeds a repartition topic then tells every partition of it where the
//!   shard ended ([`repartition::write_end`]), and the downstream shards end
//!   once all upstream shards did. The member leaves when all its shards
//!   are finished.
//!
//! Keyed state stays correct because a key's records all live in one
//! partition of the stage's topic: the repartition topic's partitioner put
//! them there, or the input was produced partitioned by the key (Kafka
//! Streams' default and Flink's `reinterpretAsKeyedStream`: no hop).
//! Between stages, exactly-once holds as inside one: the upstream shard's
//! transactions commit with its checkpoints, the downstream shard reads
//! `read_committed` and keeps its offsets in its own checkpoints.

mod prefetch;
pub mod repartition;

use crate::config::JobConfig;
use crate::connectors::kafka::KafkaConnection;
use crate::error::{Result, WeirError};
use crate::graph::Job;
use crate::runtime::JobHandle;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A sub-topology of a distributed job: the shards of stage `name` are the
/// partitions of `topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Its name in shard job names (`<job>-<name>-p<partition>`); empty for
    /// the only stage of a job (`<job>-p<partition>`).
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    /// The repartition topic it writes, if any (its shards are the
    /// upstream shards of that topic's readers).
    pub feeds: Option<Feeds>,
}

/// The repartition topic a stage writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feeds {
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: u16,
}

/// How a member joins its job.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    /// The job's name: the group is `weir-<job>`.
    pub job: String,
    /// The Kafka cluster (bootstrap servers, TLS/SASL properties).
    pub cluster: KafkaConnection,
    /// The stages; every partition of their topics is a shard. Topics must
    /// exist when the member starts (create repartition topics with
    /// [`repartition::ensure_topic`]).
    pub stages: Vec<Stage>,
    /// This member's name in logs and in the group (`client.id`).
    pub member_id: String,
    /// How long the group waits for a silent member before its shards move
    /// (Kafka's `session.timeout.ms`; default 10 s).
    pub session_timeout: Duration,
    /// The settings of every shard job (the checkpoint store is shared).
    pub config: JobConfig,
    /// Shard jobs end at the end of their input (their sources are built
    /// bounded); the member leaves once all its shards finished.
    pub bounded: bool,
    /// Download the newest SSTs of the shards this member does not run
    /// this often (off by default), so that a takeover finds them on local
    /// disk: takeovers of large state get fast, at the cost of every
    /// member holding a copy of the job's state and the store traffic.
    pub prefetch_every: Option<Duration>,
}

impl MemberOptions {
    /// Options of a job of one stage reading `input`, with a 10 s session
    /// timeout and `host-pid` as member id.
    pub fn new(job: &str, cluster: KafkaConnection, input: &str, config: JobConfig) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        MemberOptions {
            job: job.to_string(),
            cluster,
            stages: vec![Stage {
                name: String::new(),
                topic: input.to_string(),
                feeds: None,
            }],
            member_id: format!("{host}-{}", std::process::id()),
            session_timeout: Duration::from_secs(10),
            config,
            bounded: false,
            prefetch_every: None,
        }
    }

    /// Options of a job of `stages` (named, in graph order).
    pub fn staged(job: &str, cluster: KafkaConnection, stages: Vec<Stage>, config: JobConfig) -> Self {
        MemberOptions {
            stages,
            ..MemberOptions::new(job, cluster, "", config)
        }
    }

    /// The name of the job of `stage`'s shard `partition`.
    pub fn shard_job_name(&self, stage: &str, partition: i32) -> String {
        if stage.is_empty() {
            format!("{}-p{partition}", self.job)
        } else {
            format!("{}-{stage}-p{partition}", self.job)
        }
    }

    fn topics(&self) -> String {
        self.stages
            .iter()
            .map(|s| s.topic.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A shard: a topic partition.
type ShardId = (String, i32);

/// A shard at most this many offsets behind its partition's end is caught
/// up ([`MemberHandle::readiness`]).
pub const READY_LAG: i64 = 10_000;

/// What a shard job is built for.
#[derive(Debug, Clone)]
pub struct ShardContext {
    /// The name the shard's job must have ([`MemberOptions::shard_job_name`]):
    /// its directory in the checkpoint store and the root of its
    /// transactional ids.
    pub job_name: String,
    /// The stage ([`Stage::name`]) the shard belongs to.
    pub stage: String,
    /// The topic it reads.
    pub topic: String,
    /// The partition this shard reads (its only one).
    pub partition: i32,
}

/// A shard this member runs.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    /// `<topic>/<partition>`.
    pub shard: String,
    /// Its job's name.
    pub job: String,
    /// The checkpoint it restored when this member took it.
    pub restored_from: Option<u64>,
    /// Seconds from the assignment to the shard's state restored.
    pub takeover_s: f64,
}

/// What a member is doing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemberStatus {
    /// The job's name.
    pub job: String,
    /// This member's id.
    pub member_id: String,
    /// The shards it runs now.
    pub shards: Vec<ShardStatus>,
    /// Rebalances it went through.
    pub rebalances: u64,
    /// The group's generation at the last rebalance (`-1` before the first).
    pub generation: i32,
    /// Shards it took over (started) since it joined.
    pub takeovers: u64,
    /// Shards it gave up (revoked or lost) since it joined.
    pub released: u64,
    /// Shards whose jobs finished (bounded members).
    pub finished: u64,
}

struct Running {
    handle: JobHandle,
    status: ShardStatus,
}

/// State shared between the member's loop and the rebalance callbacks
/// (which run inside the group consumer's poll, on the member's thread).
#[derive(Default)]
struct Shared {
    running: Mutex<BTreeMap<ShardId, Running>>,
    /// Shards of a bounded member whose jobs finished (kept, not restarted).
    finished: Mutex<std::collections::BTreeSet<ShardId>>,
    /// Shard jobs starting or running here: prefetch keeps out of their
    /// local directories.
    busy: Mutex<std::collections::BTreeSet<String>>,
    assigned: Mutex<Vec<ShardId>>,
    status: Mutex<MemberStatus>,
    /// A shard failed to stop cleanly or its job failed: the member ends with it.
    failure: Mutex<Option<WeirError>>,
}

impl Shared {
    fn is_busy(&self, job: &str) -> bool {
        self.busy.lock().map(|b| b.contains(job)).unwrap_or(true)
    }

    /// Runs `f` unless `job` is busy, holding off its start meanwhile;
    /// whether it ran and did its work.
    fn unless_busy(&self, job: &str, f: impl FnOnce() -> Result<bool>) -> Result<bool> {
        let Ok(busy) = self.busy.lock() else { return Ok(false) };
        if busy.contains(job) {
            return Ok(false);
        }
        let done = f()?;
        drop(busy);
        Ok(done)
    }

    fn set_busy(&self, job: &str, busy: bool) {
        if let Ok(mut b) = self.busy.lock() {
            if busy {
                b.insert(job.to_string());
            } else {
                b.remove(job);
            }
        }
    }

    fn stop_shards(&self, shards: &[ShardId], why: &str) {
        let stopping: Vec<(ShardId, Running)> = {
            let Ok(mut running) = self.running.lock() else { return };
            shards
                .iter()
                .filter_map(|p| running.remove(p).map(|r| (p.clone(), r)))
                .collect()
        };
        // A final checkpoint each, all at once (the rebalance waits for the
        // slowest, not for their sum): the sinks commit before the
        // partitions are released.
        let started = Instant::now();
        for (_, shard) in &stopping {
            shard.handle.stop();
        }
        for ((topic, partition), shard) in stopping {
            let job = shard.status.job.clone();
            match shard.handle.join() {
                Ok(summary) => tracing::info!(
                    "shard {} ({why}): stopped at checkpoint {:?} in {} ms",
                    shard.status.shard,
                    summary.last_checkpoint,
                    started.elapsed().as_millis()
                ),
                // Fenced: another member owns it already (a lost assignment).
                Err(e @ WeirError::Fenced { .. }) => {
                    tracing::warn!("shard {} ({why}): {e}", shard.status.shard)
                }
                Err(e) => {
                    tracing::error!("shard job {job} ({topic}/{partition}, {why}) failed: {e}");
                    if let Ok(mut f) = self.failure.lock() {
                        f.get_or_insert(e);
                    }
                }
            }
            self.set_busy(&job, false);
            if let Ok(mut s) = self.status.lock() {
                s.released += 1;
                s.shards.retain(|x| x.job != job);
                metrics::gauge!("weir_member_shards", "job" => s.job.clone()).set(s.shards.len() as f64);
            }
        }
    }
}

struct MemberContext(Arc<Shared>);

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let shards = shard_ids(tpl);
            tracing::info!("shards revoked: {}", describe(&shards));
            self.0.stop_shards(&shards, "revoked");
            if let Ok(mut finished) = self.0.finished.lock() {
                for shard in &shards {
                    finished.remove(shard);
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let generation = group_generation(consumer);
        if let Ok(mut s) = self.0.status.lock() {
            s.rebalances += 1;
            s.generation = generation;
        }
        if let Rebalance::Assign(tpl) = rebalance {
            // Membership only: the shard jobs read their partitions themselves.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!("cannot pause the group consumer's partitions: {e}");
            }
            let shards = shard_ids(tpl);
            tracing::info!("shards assigned: {}", describe(&shards));
            if let Ok(mut a) = self.0.assigned.lock() {
                a.extend(shards);
            }
        }
    }
}

/// The group generation this member is in (`-1` when not known).
fn group_generation(consumer: &BaseConsumer<MemberContext>) -> i32 {
    use rdkafka::bindings as rd;
    // SAFETY: the handle is the live consumer's; the metadata it returns is
    // ours to free, and freed before returning.
    unsafe {
        let metadata = rd::rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if metadata.is_null() {
            return -1;
        }
        let generation = rd::rd_kafka_consumer_group_metadata_generation_id(metadata);
        rd::rd_kafka_consumer_group_metadata_destroy(metadata);
        generation
    }
}

fn shard_ids(tpl: &rdkafka::TopicPartitionList) -> Vec<ShardId> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

fn describe(shards: &[ShardId]) -> String {
    shards
        .iter()
        .map(|(t, p)| format!("{t}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running member: its status while it runs.
#[derive(Clone)]
pub struct MemberHandle {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl MemberHandle {
    /// What the member runs now.
    pub fn status(&self) -> MemberStatus {
        self.shared.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Leaves the group: every shard stops with a final checkpoint and the
    /// group hands it to the other members.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`MemberHandle::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Each shard job's live status, by shard (`topic/partition`).
    pub fn shard_statuses(&self) -> Vec<(String, crate::runtime::JobStatus)> {
        let Ok(running) = self.shared.running.lock() else {
            return Vec::new();
        };
        running
            .values()
            .map(|r| (r.status.shard.clone(), r.handle.status()))
            .collect()
    }

    /// The member's status and, per shard, its Kafka lag (offsets behind
    /// the end of its partition), for people: one line per shard.
    pub fn report(&self) -> String {
        let status = self.status();
        let mut out = format!(
            "member {}: {} shard(s), {} takeover(s), {} release(s), {} finished, {} rebalance(s), generation {}\n",
            status.member_id,
            status.shards.len(),
            status.takeovers,
            status.released,
            status.finished,
            status.rebalances,
            status.generation
        );
        let lags: BTreeMap<String, i64> = self
            .shard_statuses()
            .into_iter()
            .map(|(shard, s)| (shard, s.tasks.iter().flat_map(|t| &t.kafka_lag).map(|l| l.lag).sum()))
            .collect();
        for shard in &status.shards {
            out.push_str(&format!(
                "  shard {:<20} job {:<28} restored {:<8} took {:>6.0} ms  lag {}\n",
                shard.shard,
                shard.job,
                shard.restored_from.map_or("-".to_string(), |c| c.to_string()),
                shard.takeover_s * 1000.0,
                lags.get(&shard.shard).map_or("-".to_string(), |l| l.to_string())
            ));
        }
        out
    }

    /// Whether this member is ready (a Kubernetes readiness probe: see the
    /// member UI's `api/ready`): it is in its group (a rebalance happened)
    /// and every shard it runs is restored and caught up, its sources at
    /// most [`READY_LAG`] offsets behind their partitions' ends. A member
    /// that holds no shard (more members than shards) is ready: it stands by.
    ///
    /// # Errors
    /// Why it is not ready, naming the shard that is behind.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        let status = self.status();
        if status.rebalances == 0 {
            return Err(format!("member {} is not in its group yet", status.member_id));
        }
        for (shard, s) in self.shard_statuses() {
            let lag: i64 = s.tasks.iter().flat_map(|t| &t.kafka_lag).map(|l| l.lag).sum();
            if lag > READY_LAG {
                return Err(format!("shard {shard} is {lag} offsets behind"));
            }
        }
        Ok(())
    }

    /// The controller of the shard job named `job`, while this member runs it.
    pub fn shard_controller(&self, job: &str) -> Option<crate::runtime::JobController> {
        let running = self.shared.running.lock().ok()?;
        running
            .values()
            .find(|r| r.status.job == job)
            .map(|r| r.handle.controller())
    }
}

/// Joins the job's group and runs the shards the group assigns to this
/// member, each built by `make`, until [`MemberHandle::stop`] (then every
/// shard stops with a final checkpoint and the member leaves the group) or
/// a shard job fails (then the member ends with its error: the group moves
/// its shards to the other members, which restore them).
///
/// # Errors
/// The group consumer cannot be created or subscribe; a shard job cannot be
/// built (`make` failed, or named its job other than
/// [`ShardContext::job_name`]) or failed.
pub fn run_member<F>(options: MemberOptions, make: F, handle: &MemberHandle) -> Result<MemberStatus>
where
    F: Fn(&ShardContext) -> Result<Job> + Sync,
{
    let shared = handle.shared.clone();
    if let Ok(mut s) = shared.status.lock() {
        s.member_id = options.member_id.clone();
        s.job = options.job.clone();
        s.generation = -1;
    }
    if options.stages.is_empty() {
        return Err(WeirError::InvalidGraph(format!(
            "distributed job {} has no stage",
            options.job
        )));
    }
    let group = format!("weir-{}", options.job);
    let kafka = |e: rdkafka::error::KafkaError| {
        WeirError::kafka(
            format!("member {}", options.member_id),
            format!("cannot join group {group} on topic(s) {}", options.topics()),
            e,
        )
    };
    let consumer: BaseConsumer<MemberContext> = options
        .cluster
        .client_config()
        .set("group.id", &group)
        .set("client.id", &options.member_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", options.session_timeout.as_millis().to_string())
        .set(
            "heartbeat.interval.ms",
            (options.session_timeout.as_millis() / 4).max(100).to_string(),
        )
        .create_with_context(MemberContext(shared.clone()))
        .map_err(kafka)?;
    let topics: Vec<&str> = options.stages.iter().map(|s| s.topic.as_str()).collect();
    consumer.subscribe(&topics).map_err(kafka)?;
    let joined = Instant::now();
    let prefetch_stop = Arc::new(AtomicBool::new(false));
    let prefetcher = options.prefetch_every.map(|every| {
        let (o, sh, stop) = (options.clone(), shared.clone(), prefetch_stop.clone());
        std::thread::Builder::new()
            .name("weir-prefetch".into())
            .spawn(move || prefetch::run(o, sh, every, stop))
    });
    tracing::info!(
        "member {} joined group {group} on topic(s) {}",
        options.member_id,
        options.topics()
    );

    let result = loop {
        if handle.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Some(e) = shared.failure.lock().ok().and_then(|mut f| f.take()) {
            break Err(e);
        }
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::warn!("member {}: group consumer: {e}", options.member_id);
        }
        let assigned: Vec<ShardId> = shared
            .assigned
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        // Side by side: a takeover of several shards waits for the slowest
        // restore, not for their sum. (Rebalance callbacks run inside
        // `poll`, on this thread, so none comes while they start.)
        let (o, m, sh) = (&options, &make, &shared);
        let started: Vec<Result<()>> = std::thread::scope(|scope| {
            let starting: Vec<_> = assigned
                .into_iter()
                .map(|shard| scope.spawn(move || start_shard(o, m, sh, shard)))
                .collect();
            starting
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(WeirError::Internal("building a shard's job panicked".into())))
                })
                .collect()
        });
        if let Some(e) = started.into_iter().find_map(Result::err) {
            break Err(e);
        }
        // A shard job that ended by itself failed (a shard never ends while owned).
        let ended: Vec<ShardId> = shared
            .running
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, s)| s.handle.is_finished())
                    .map(|(p, _)| p.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !ended.is_empty() {
            if options.bounded {
                if let Err(e) = finish_shards(&options, &shared, &ended) {
                    break Err(e);
                }
            } else {
                shared.stop_shards(&ended, "ended by itself");
            }
            if let Some(e) = shared.failure.lock().ok().and_then(|mut f| f.take()) {
                break Err(e);
            }
        }
        if options.bounded && bounded_done(&shared, joined.elapsed() > options.session_timeout) {
            tracing::info!("member {}: every shard it holds finished", options.member_id);
            break Ok(());
        }
    };
    // Leaving: every shard stops with a final checkpoint, then the group
    // hands the partitions to the others.
    let all: Vec<ShardId> = shared
        .running
        .lock()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    prefetch_stop.store(true, Ordering::Relaxed);
    if let Some(Ok(t)) = prefetcher {
        let _ = t.join();
    }
    shared.stop_shards(&all, "member leaving");
    consumer.unsubscribe();
    let status = shared.status.lock().map(|s| s.clone()).unwrap_or_default();
    tracing::info!(
        "member {} left group {group} after {} takeover(s) and {} release(s)",
        options.member_id,
        status.takeovers,
        status.released
    );
    result.map(|()| status)
}

/// Downloads the SSTs of job `job`'s newest checkpoint that its local
/// state directory lacks (what a member with
/// [`MemberOptions::prefetch_every`] does for the shards it does not run),
/// so that a start of `job` with this `config` restores them from local
/// disk. Returns the files and bytes downloaded. The job must not be
/// running in this process.
///
/// # Errors
/// The store cannot be read, or a file cannot be downloaded or written.
pub fn prefetch_job(config: &JobConfig, job: &str) -> Result<(u64, u64)> {
    let f = prefetch::shard(config, &Shared::default(), job)?;
    Ok((f.files, f.bytes))
}

/// Whether a bounded member is done: nothing runs or waits to start, and it
/// finished a shard (or held none for a session timeout: more members than
/// shards).
fn bounded_done(shared: &Shared, waited: bool) -> bool {
    let idle = shared.running.lock().map(|r| r.is_empty()).unwrap_or(false)
        && shared.assigned.lock().map(|a| a.is_empty()).unwrap_or(false);
    let finished = shared.finished.lock().map(|f| !f.is_empty()).unwrap_or(false);
    idle && (finished || waited)
}

/// A bounded member's shard jobs that ended: each one's summary is taken;
/// a shard that feeds a repartition topic tells its partitions where it
/// ended (the input offset of its final checkpoint).
fn finish_shards(options: &MemberOptions, shared: &Shared, shards: &[ShardId]) -> Result<()> {
    for shard in shards {
        let Some(running) = shared.running.lock().ok().and_then(|mut r| r.remove(shard)) else {
            continue;
        };
        let job = running.status.job.clone();
        let summary = running.handle.join();
        shared.set_busy(&job, false);
        let summary = summary?;
        tracing::info!(
            "shard {} (job {job}) finished at checkpoint {:?}",
            running.status.shard,
            summary.last_checkpoint
        );
        let (topic, partition) = shard;
        if let Some(feeds) = options
            .stages
            .iter()
            .find(|s| &s.topic == topic)
            .and_then(|s| s.feeds.as_ref())
        {
            let offset = ended_at(options, &job, topic, *partition)?;
            let upstreams = repartition::partition_count(&options.cluster, topic)? as u32;
            repartition::write_end(
                &options.cluster,
                &feeds.topic,
                feeds.partitions,
                *partition as u32,
                upstreams,
                offset,
            )?;
            tracing::info!(
                "shard {topic}/{partition} ended at offset {offset}: told the {} partition(s) of {}",
                feeds.partitions,
                feeds.topic
            );
        }
        if let Ok(mut f) = shared.finished.lock() {
            f.insert(shard.clone());
        }
        if let Ok(mut s) = shared.status.lock() {
            s.shards.retain(|x| x.job != job);
            s.finished += 1;
        }
    }
    Ok(())
}

/// The offset of `topic/partition` in the newest checkpoint of shard job `job`.
fn ended_at(options: &MemberOptions, job: &str, topic: &str, partition: i32) -> Result<i64> {
    let store = crate::checkpoint::CheckpointStore::open_existing_with(
        &options.config.checkpoint_dir,
        job,
        &options.config.checkpoint_store_options,
    )?;
    let manifest = store.restore_point()?.ok_or_else(|| WeirError::Checkpoint {
        path: options.config.checkpoint_dir.join(job),
        message: format!("shard job {job} finished without a checkpoint"),
    })?;
    crate::connectors::kafka::stored_offsets(&manifest)
        .into_iter()
        .find(|o| o.topic == topic && o.partition == partition)
        .map(|o| o.next_offset.get())
        .ok_or_else(|| WeirError::Checkpoint {
            path: options.config.checkpoint_dir.join(job),
            message: format!("the final checkpoint of shard job {job} holds no offset of {topic}/{partition}"),
        })
}

impl Default for MemberHandle {
    fn default() -> Self {
        MemberHandle {
            shared: Arc::new(Shared::default()),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn build_and_start<F>(options: &MemberOptions, make: &F, ctx: &ShardContext) -> Result<JobHandle>
where
    F: Fn(&ShardContext) -> Result<Job> + Sync,
{
    let job = make(ctx)?;
    if job.name() != ctx.job_name {
        return Err(WeirError::InvalidGraph(format!(
            "the job of shard {}/{} is named `{}`; a shard's job must be named `{}` (ShardContext::job_name)",
            ctx.topic,
            ctx.partition,
            job.name(),
            ctx.job_name
        )));
    }
    job.start(options.config.clone())
}

fn start_shard<F>(options: &MemberOptions, make: &F, shared: &Arc<Shared>, shard: ShardId) -> Result<()>
where
    F: Fn(&ShardContext) -> Result<Job> + Sync,
{
    let (topic, partition) = shard.clone();
    let Some(stage) = options.stages.iter().find(|s| s.topic == topic) else {
        return Err(WeirError::InvalidGraph(format!(
            "the group assigned {topic}/{partition}, a topic no stage of job {} reads",
            options.job
        )));
    };
    let ctx = ShardContext {
        job_name: options.shard_job_name(&stage.name, partition),
        stage: stage.name.clone(),
        topic,
        partition,
    };
    let assigned_at = Instant::now();
    shared.set_busy(&ctx.job_name, true);
    let started = build_and_start(options, make, &ctx);
    if started.is_err() {
        shared.set_busy(&ctx.job_name, false);
    }
    let handle = started?;
    let restored_from = handle.status().restored_from;
    let status = ShardStatus {
        shard: format!("{}/{partition}", ctx.topic),
        job: ctx.job_name.clone(),
        restored_from,
        takeover_s: assigned_at.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "member {} runs shard {} (job {}): restored checkpoint {:?} in {:.0} ms",
        options.member_id,
        status.shard,
        status.job,
        restored_from,
        status.takeover_s * 1000.0
    );
    let labels = [("job", options.job.clone())];
    metrics::counter!("weir_member_takeovers_total", &labels).increment(1);
    metrics::histogram!("weir_member_takeover_seconds", &labels).record(status.takeover_s);
    if let Ok(mut s) = shared.status.lock() {
        s.takeovers += 1;
        s.shards.push(status.clone());
        metrics::gauge!("weir_member_shards", &labels).set(s.shards.len() as f64);
    }
    if let Ok(mut r) = shared.running.lock() {
        r.insert(shard, Running { handle, status });
    }
    Ok(())
}
