//! Running a job: tasks on OS threads, channels between them, and the
//! checkpoint coordinator driving barriers, manifests and recovery.
//!
//! # Start
//! 1. Open the checkpoint store and pick the restore point (newest usable
//!    complete checkpoint, see [`crate::checkpoint::store`]).
//! 2. Check that the job's operators match the checkpoint (every uid with
//!    state exists, same parallelism).
//! 3. Create the channels, then each task (sources seek to their stored
//!    position, keyed tasks rebuild their RocksDB from the stored files,
//!    sinks finish or discard leftovers), then start the threads.
//!
//! # Run
//! The coordinator thread feeds the pure [`crate::checkpoint::Coordinator`]
//! with acks and time and carries out its actions. A failing task fails the
//! job: every other task is cancelled and [`JobHandle::join`] returns the
//! first error.

pub(crate) mod plan;
pub(crate) mod status;

pub use status::{CheckpointStatus, JobStatus, LastCheckpoint, LatencySummary, TaskStatus};

use crate::checkpoint::coordinator::{Action, Coordinator, CoordinatorConfig};
use crate::checkpoint::lock::DirLock;
use crate::checkpoint::manifest::{Manifest, OperatorSnapshot, SubtaskState, MANIFEST_FORMAT};
use crate::checkpoint::store::CheckpointStore;
use crate::config::JobConfig;
use crate::connectors::CheckpointRequest;
use crate::error::{panic_message, Result, WeirError};
use crate::state::StateEnv;
use crate::stats::TaskStats;
use crate::task::run::{spawn_snapshotter, RuntimeEvent, TaskCommand, TaskRuntime};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use plan::{JobEnv, OperatorInfo, Plan, TaskContext};
use status::StatusBoard;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_operators::{Barrier, CheckpointId};

/// What one task acknowledges: (operator uid, subtask, state) per stateful operator.
type TaskSnapshot = Vec<(String, usize, SubtaskState)>;

/// How a finished job went.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// The job's name.
    pub job: String,
    /// The checkpoint the run started from, if any.
    pub restored_from: Option<u64>,
    /// Checkpoints completed during this run.
    pub checkpoints_completed: u64,
    /// The newest complete checkpoint at the end (the final one of a bounded run).
    pub last_checkpoint: Option<u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Newer checkpoints skipped at start because they were damaged (why, with the path).
    pub skipped_checkpoints: Vec<String>,
    /// For each checkpoint completed in this run: time from trigger to complete.
    pub checkpoint_durations: Vec<Duration>,
    /// For each checkpoint completed in this run: when it was triggered,
    /// since the job started (same order as `checkpoint_durations`).
    pub checkpoint_started: Vec<Duration>,
    /// Changed state entries written to RocksDB between checkpoints by
    /// write-behind ([`crate::JobConfig::state_write_behind_entries`]).
    pub state_entries_written_behind: u64,
}

/// A running job: wait for it, read its status, trigger checkpoints, stop or
/// cancel it.
///
/// ```no_run
/// use weir::connectors::{collect::CountingSink, generator::{Generator, W1Event}};
/// use weir::{JobBuilder, JobConfig};
///
/// let job = JobBuilder::new("embedded");
/// job.source("generator", Generator::w1_factory(None, Some(100_000)))
///     .uid("generator")
///     .map(|e: W1Event| (e.key, e.value))
///     .key_by(|r: &(u64, u64)| r.0)
///     .reduce("sum", |a, b| (a.0, a.1 + b.1))
///     .uid("sum")
///     .sink("count", CountingSink::factory());
/// let handle = job.build()?.start(JobConfig::with_checkpoint_dir("checkpoints"))?;
/// // A cloneable controller for an HTTP handler or a signal thread.
/// let controller = handle.controller();
/// std::thread::sleep(std::time::Duration::from_secs(2));
/// let status = controller.status();
/// println!("{status}"); // one line per task: records, rates, backpressure, lag
/// let sink_rate: f64 = status.tasks.iter().filter(|t| t.name.contains("count")).map(|t| t.records_out_per_sec).sum();
/// println!("{sink_rate:.0} records/s into the sink");
/// controller.stop(); // a final checkpoint, then every task ends
/// let summary = handle.join()?;
/// println!("stopped at checkpoint {:?}", summary.last_checkpoint);
/// # Ok::<(), weir::WeirError>(())
/// ```
pub struct JobHandle {
    controller: JobController,
    driver: std::thread::JoinHandle<Result<JobSummary>>,
}

/// Controls a running job from anywhere (a signal handler, another thread):
/// a cloneable part of [`JobHandle`].
#[derive(Clone)]
pub struct JobController {
    events: Sender<RuntimeEvent>,
    board: Arc<StatusBoard>,
}

impl JobController {
    /// What the job is doing now: per task records in/out and their rates,
    /// backpressure, watermark, Kafka lag, latency; the last checkpoint.
    /// Rates and backpressure are over the last second.
    pub fn status(&self) -> JobStatus {
        self.board.status()
    }

    /// Asks for a checkpoint now (it waits for one in flight).
    pub fn trigger_checkpoint(&self) {
        let _ = self.events.send(RuntimeEvent::Request { then_stop: false });
    }

    /// Stops gracefully: a final checkpoint (sources stop at its barrier,
    /// sinks commit), then every task ends.
    pub fn stop(&self) {
        let _ = self.events.send(RuntimeEvent::Request { then_stop: true });
    }

    /// Cancels at once, without a final checkpoint.
    pub fn cancel(&self) {
        let _ = self.events.send(RuntimeEvent::Cancel);
    }
}

impl JobHandle {
    /// A cloneable controller of this job.
    pub fn controller(&self) -> JobController {
        self.controller.clone()
    }

    /// What the job is doing now: see [`JobController::status`].
    pub fn status(&self) -> JobStatus {
        self.controller.status()
    }

    /// Asks for a checkpoint now: see [`JobController::trigger_checkpoint`].
    pub fn trigger_checkpoint(&self) {
        self.controller.trigger_checkpoint()
    }

    /// Stops gracefully: see [`JobController::stop`].
    pub fn stop(&self) {
        self.controller.stop()
    }

    /// Cancels at once: see [`JobController::cancel`].
    pub fn cancel(&self) {
        self.controller.cancel()
    }

    /// Waits for the job to end without blocking an async task: for a tokio
    /// (or any) service. The waiting happens on a thread of its own.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the job: it keeps running and its
    /// result is discarded. Keep a [`JobController`] (from
    /// [`JobHandle::controller`] before calling this) to stop or cancel it.
    ///
    /// # Errors
    /// As [`JobHandle::join`].
    pub async fn wait(self) -> Result<JobSummary> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("weir-wait".into())
            .spawn(move || {
                let _ = tx.send(self.join());
            })
            .map_err(|e| WeirError::io("cannot spawn thread", "weir-wait", e))?;
        rx.await.unwrap_or(Err(WeirError::Cancelled))
    }

    /// Waits for the job to end.
    ///
    /// # Errors
    /// The first error of any task, or of the checkpoint store.
    pub fn join(self) -> Result<JobSummary> {
        match self.driver.join() {
            Ok(r) => r,
            Err(p) => Err(WeirError::Panic {
                task: "coordinator".into(),
                message: panic_message(&p),
            }),
        }
    }
}

/// Starts a planned job: opens the checkpoint store, picks the restore
/// point, makes every task, starts the threads and the coordinator.
pub(crate) fn start(plan: Plan, config: JobConfig) -> Result<JobHandle> {
    let Plan {
        name,
        vertices,
        edges,
        operators,
    } = plan;
    config.validate()?;
    let started = Instant::now();
    let store = CheckpointStore::open(&config.checkpoint_dir, &name)?;
    // One writer per store, from before the restore point is read until the
    // driver ends: a second run of the job on this directory is refused at
    // once, naming this one.
    let mut locks = vec![store.lock()?];
    let (restore, skipped) = if config.restore {
        store.restore_point_and_skipped()?
    } else {
        (None, Vec::new())
    };
    if let (Some(m), false) = (&restore, skipped.is_empty()) {
        if !config.allow_replay {
            return Err(WeirError::ReplayRefused {
                dir: store.job_dir().to_path_buf(),
                damaged: skipped.join("\n"),
                usable: m.checkpoint_id,
            });
        }
        tracing::warn!(
            "job {name}: restoring checkpoint {} past {} damaged newer checkpoint(s) (allow_replay): the output \
             committed after checkpoint {} is written again",
            m.checkpoint_id,
            skipped.len(),
            m.checkpoint_id
        );
    }
    let parallelism: Vec<usize> = vertices.iter().map(|v| v.parallelism).collect();
    let mut restore = restore;
    let mut union_only = BTreeMap::new();
    if let Some(m) = &mut restore {
        union_only = reconcile(&operators, &parallelism, m, &store, config.allow_non_restored_state)?;
        tracing::info!("job {}: restoring from checkpoint {}", name, m.checkpoint_id);
        if m.drained {
            tracing::info!(
                "job {name}: checkpoint {} ended a drained run: its windows and timers have fired and event time \
                 is at its end, so records older than the input read so far are late",
                m.checkpoint_id
            );
        }
    }
    // Working directories of different jobs never share a folder; one job's
    // is locked like its store (two stores, one local directory).
    let local_root = match &config.local_state_dir {
        Some(dir) => {
            let root = dir.join(&name);
            locks.push(DirLock::acquire(&root, &name)?);
            root
        }
        None => store.job_dir().join("local"),
    };
    let state = Arc::new(StateEnv::new(
        store.clone(),
        local_root,
        config.state_block_cache_bytes,
        config.state_write_buffer_bytes,
    )?);
    state.clean_stale_local_dirs();
    let written_behind = state.written_behind.clone();
    let next_id = store.checkpoint_ids()?.last().map_or(1, |c| c.0 + 1);
    let existing = store.complete_ids()?;

    for edge in &edges {
        let (from, to) = edge.endpoints();
        edge.materialize(parallelism[from], parallelism[to], config.channel_capacity);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let restored_from = restore.as_ref().map(|m| m.checkpoint_id);
    let env = JobEnv {
        job: name.clone(),
        parallelism: parallelism.clone(),
        batch_size: config.batch_size,
        drain_at_end: config.drain_at_end,
        state_cache_entries: config.state_cache_entries,
        state_write_behind_entries: config.state_write_behind_entries,
        checkpoint_interval_ms: config.checkpoint_interval.map(|d| d.as_millis() as i64),
        cancel: cancel.clone(),
        operators: operators.clone(),
        restore,
        union_only,
        state,
    };
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let mut bodies = Vec::new();
    for v in &vertices {
        let Some(make) = &v.make else { continue };
        for s in 0..v.parallelism {
            let stats = Arc::new(TaskStats::default());
            let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
            let asks = events_tx.clone();
            let body = make(&TaskContext {
                env: &env,
                subtask: s,
                stats: stats.clone(),
                snapshot_jobs: jobs_tx.clone(),
                checkpoint_request: CheckpointRequest::new(move || {
                    let _ = asks.send(RuntimeEvent::Request { then_stop: false });
                }),
            })?;
            bodies.push((
                format!("{}[{}]", v.name, s),
                v.is_source,
                body,
                stats,
                (jobs_tx, jobs_rx),
            ));
        }
    }
    drop(env);
    crate::failpoint::hit("restored");
    let board = Arc::new(StatusBoard::new(
        name.clone(),
        started,
        bodies
            .iter()
            .map(|(name, is_source, _, stats, _)| (name.clone(), *is_source, stats.clone()))
            .collect(),
    ));
    let mut tasks = Vec::new();
    for (index, (name, is_source, body, stats, (snapshots, jobs))) in bodies.into_iter().enumerate() {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let snapshotter = spawn_snapshotter(index, name.clone(), events_tx.clone(), jobs)?;
        let rt = TaskRuntime {
            name: name.clone(),
            commands: cmd_rx,
            events: events_tx.clone(),
            cancel: cancel.clone(),
            snapshots,
            stats: stats.clone(),
        };
        let events = events_tx.clone();
        let task_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(rt)));
                stats.finished.store(true, Ordering::Relaxed);
                let event = match result {
                    Ok(Ok(())) => RuntimeEvent::Finished { task: index },
                    Ok(Err(error)) => RuntimeEvent::Failed { task: index, error },
                    Err(p) => RuntimeEvent::Failed {
                        task: index,
                        error: WeirError::Panic {
                            task: task_name,
                            message: panic_message(&p),
                        },
                    },
                };
                let _ = events.send(event);
            })
            .map_err(|e| WeirError::io("cannot spawn task thread", &name, e))?;
        tasks.push(RunningTask {
            name,
            is_source,
            commands: cmd_tx,
            thread: Some(thread),
            snapshotter: Some(snapshotter),
        });
    }
    let coordinator = Coordinator::new(
        CoordinatorConfig {
            interval_ms: config.checkpoint_interval.map(|d| d.as_millis() as u64),
            timeout_ms: config.checkpoint_timeout.as_millis() as u64,
            retained: config.retained_checkpoints,
        },
        tasks.len(),
        next_id,
        existing,
    );
    let mut driver = Driver {
        job: name.clone(),
        store,
        locks,
        drained: false,
        drain_at_end: config.drain_at_end,
        persist_timeout: config.checkpoint_timeout,
        lingering: Vec::new(),
        stuck: Vec::new(),
        coordinator,
        tasks,
        events: events_rx,
        cancel,
        started,
        restored_from,
        completed: 0,
        last: restored_from,
        parallelism_by_uid: parallelism_by_uid(&operators, &parallelism),
        triggered_at: None,
        durations: Vec::new(),
        started_at: Vec::new(),
        skipped,
        board: board.clone(),
        // Sample at once, so that rates are known after the first second.
        sampled: Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now),
        last_bytes: 0,
        written_behind,
    };
    let thread = std::thread::Builder::new()
        .name("weir-coordinator".into())
        .spawn(move || driver.run())
        .map_err(|e| WeirError::io("cannot spawn coordinator thread", "weir-coordinator", e))?;
    Ok(JobHandle {
        controller: JobController {
            events: events_tx,
            board,
        },
        driver: thread,
    })
}

fn parallelism_by_uid(operators: &[OperatorInfo], parallelism: &[usize]) -> BTreeMap<String, usize> {
    operators
        .iter()
        .filter_map(|o| Some((o.uid.clone()?, parallelism[o.vertex])))
        .collect()
}

/// A checkpoint must fit the job: same uids with state, same parallelism.
/// With `allow_non_restored` (Flink's `--allowNonRestoredState`) what does
/// not fit is dropped instead, with a warning naming it: state of uids the
/// job no longer has, and the per-subtask state of operators whose
/// parallelism changed. The latter's states stay readable as a whole
/// (`JobEnv::restored_all`), so a source that finds its splits there (Kafka
/// partitions) keeps its positions.
fn reconcile(
    operators: &[OperatorInfo],
    parallelism: &[usize],
    m: &mut Manifest,
    store: &CheckpointStore,
    allow_non_restored: bool,
) -> Result<BTreeMap<String, Vec<SubtaskState>>> {
    let path = store.checkpoint_path(CheckpointId(m.checkpoint_id));
    let choice = "start with JobConfig::allow_non_restored_state (--allow-non-restored-state) to drop it knowingly";
    let mut union_only = BTreeMap::new();
    let uids: Vec<String> = m.operators.keys().cloned().collect();
    for uid in uids {
        let Some(snap) = m.operators.get(&uid) else { continue };
        let Some(op) = operators.iter().find(|o| o.uid.as_deref() == Some(uid.as_str())) else {
            if !allow_non_restored {
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "it holds state of operator uid `{uid}`, which this job does not have (was a uid renamed?); \
                         {choice}"
                    ),
                });
            }
            tracing::warn!(
                "checkpoint {}: dropping the state of uid `{uid}`, which the job no longer has",
                m.checkpoint_id
            );
            m.operators.remove(&uid);
            continue;
        };
        let p = parallelism[op.vertex];
        if snap.parallelism != p {
            if !allow_non_restored {
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "operator `{uid}` ran with parallelism {} and now has {p}; changing the parallelism of \
                         stateful operators is not supported yet; {choice}",
                        snap.parallelism
                    ),
                });
            }
            let keyed = snap.subtasks.iter().any(|s| matches!(s, SubtaskState::Rocks(_)));
            if !keyed && !op.is_source {
                // A sink's state holds output not yet committed (its last
                // checkpoint's epochs): dropping it would lose that output.
                return Err(WeirError::Checkpoint {
                    path,
                    message: format!(
                        "sink `{uid}` ran with parallelism {} and now has {p}: its state may hold output of the last \
                         checkpoint that is not committed yet, which would be lost; run it once more with parallelism \
                         {} (a bounded run or a stop commits it), then change it",
                        snap.parallelism, snap.parallelism
                    ),
                });
            }
            tracing::warn!(
                "checkpoint {}: operator `{uid}` ran with parallelism {} and now has {p}: {}",
                m.checkpoint_id,
                snap.parallelism,
                if keyed {
                    "its keyed state is dropped"
                } else {
                    "its positions are looked up by split (Kafka partitions) in the states of all its former subtasks"
                }
            );
            if let Some(snap) = m.operators.remove(&uid) {
                if !keyed {
                    union_only.insert(uid, snap.subtasks);
                }
            }
        }
    }
    Ok(union_only)
}

struct RunningTask {
    name: String,
    is_source: bool,
    commands: Sender<TaskCommand>,
    thread: Option<std::thread::JoinHandle<()>>,
    snapshotter: Option<std::thread::JoinHandle<()>>,
}

/// How long a failed or cancelled job waits for its tasks to stop.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

impl RunningTask {
    /// Whether the task's thread (or, after it, its snapshot thread) still runs.
    fn is_running(&self) -> bool {
        [&self.thread, &self.snapshotter]
            .into_iter()
            .flatten()
            .any(|h| !h.is_finished())
    }

    /// Moves the threads out (to another thread that waits for them).
    fn take(&mut self) -> RunningTask {
        RunningTask {
            name: self.name.clone(),
            is_source: self.is_source,
            commands: self.commands.clone(),
            thread: self.thread.take(),
            snapshotter: self.snapshotter.take(),
        }
    }

    /// Waits for the task's thread, then its snapshot thread (whose queue
    /// closes when the task is gone).
    fn join(&mut self) {
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
        if let Some(h) = self.snapshotter.take() {
            let _ = h.join();
        }
    }
}

struct Driver {
    job: String,
    store: CheckpointStore,
    /// The store's lock (and the local state directory's): released when
    /// the driver, which outlives every task, is dropped.
    locks: Vec<DirLock>,
    /// Every source ended and event time jumped to its end (bounded + drain).
    drained: bool,
    /// [`JobConfig::drain_at_end`].
    drain_at_end: bool,
    /// How long committing a manifest may take: [`JobConfig::checkpoint_timeout`].
    persist_timeout: Duration,
    /// Store work that did not answer in time (see `on_store`).
    lingering: Vec<std::thread::JoinHandle<()>>,
    /// Tasks that did not stop within the grace of a cancel.
    stuck: Vec<RunningTask>,
    coordinator: Coordinator<TaskSnapshot>,
    tasks: Vec<RunningTask>,
    events: Receiver<RuntimeEvent>,
    cancel: Arc<AtomicBool>,
    started: Instant,
    restored_from: Option<u64>,
    completed: u64,
    last: Option<u64>,
    parallelism_by_uid: BTreeMap<String, usize>,
    triggered_at: Option<Instant>,
    durations: Vec<Duration>,
    /// Trigger times of the completed checkpoints, since the start.
    started_at: Vec<Duration>,
    skipped: Vec<String>,
    board: Arc<StatusBoard>,
    /// When the status board was last sampled.
    sampled: Instant,
    /// State bytes of the checkpoint being persisted.
    last_bytes: u64,
    /// [`JobSummary::state_entries_written_behind`], counted by the state.
    written_behind: Arc<std::sync::atomic::AtomicU64>,
}

impl Driver {
    fn update_checkpoints(&self, update: impl FnOnce(&mut status::CheckpointStatus)) {
        if let Ok(mut c) = self.board.checkpoints.lock() {
            update(&mut c);
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(&mut self) -> Result<JobSummary> {
        let result = self.drive();
        if result.is_err() {
            self.cancel.store(true, Ordering::Relaxed);
            for t in &self.tasks {
                let _ = t.commands.send(TaskCommand::Cancel);
            }
            // A failed or cancelled job ends in bounded time, even when a
            // task is stuck in a call that does not see the cancel (a sink
            // committing to a broker that stopped answering).
            let deadline = Instant::now() + CANCEL_GRACE;
            while Instant::now() < deadline && self.tasks.iter().any(RunningTask::is_running) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let stuck: Vec<RunningTask> = self
                .tasks
                .iter_mut()
                .filter(|t| t.is_running())
                .map(RunningTask::take)
                .collect();
            if !stuck.is_empty() {
                let names: Vec<&str> = stuck.iter().map(|t| t.name.as_str()).collect();
                tracing::warn!(
                    "job {}: {} did not stop within {CANCEL_GRACE:?} of the cancel; the job ends without them, and \
                     their store stays locked until they do",
                    self.job,
                    names.join(", ")
                );
                self.stuck.extend(stuck);
            }
        }
        let (stuck, lingering) = (std::mem::take(&mut self.stuck), std::mem::take(&mut self.lingering));
        if !stuck.is_empty() || !lingering.is_empty() {
            // Threads that may still write keep the store's locks until they
            // end: no next run may write beside them meanwhile.
            let locks = std::mem::take(&mut self.locks);
            let held = Arc::new(Mutex::new(Some(locks)));
            let keep = held.clone();
            let reaper = std::thread::Builder::new().name("weir-reaper".into()).spawn(move || {
                for mut t in stuck {
                    t.join();
                }
                for t in lingering {
                    let _ = t.join();
                }
                let locks = keep.lock().ok().and_then(|mut l| l.take());
                drop(locks);
            });
            if reaper.is_err() {
                // No thread to wait with: never release the locks in this process.
                if let Ok(mut l) = held.lock() {
                    std::mem::forget(l.take());
                }
            }
        }
        for t in &mut self.tasks {
            t.join();
        }
        result.map(|()| JobSummary {
            job: self.job.clone(),
            restored_from: self.restored_from,
            checkpoints_completed: self.completed,
            last_checkpoint: self.last,
            elapsed: self.started.elapsed(),
            skipped_checkpoints: std::mem::take(&mut self.skipped),
            checkpoint_durations: std::mem::take(&mut self.durations),
            checkpoint_started: std::mem::take(&mut self.started_at),
            state_entries_written_behind: self.written_behind.load(Ordering::Relaxed),
        })
    }

    fn drive(&mut self) -> Result<()> {
        let sources = self.tasks.iter().filter(|t| t.is_source).count();
        let (mut sources_at_end, mut finished) = (0, 0);
        loop {
            let now = self.now_ms();
            let wait = self
                .coordinator
                .next_deadline()
                .map_or(100, |d| d.saturating_sub(now))
                .min(100);
            let actions = match self.events.recv_timeout(Duration::from_millis(wait)) {
                Ok(RuntimeEvent::Ack { task, id, states }) => self.coordinator.on_ack(task, id, states),
                Ok(RuntimeEvent::Decline { task, id, reason }) => {
                    tracing::warn!("checkpoint {id} declined by {}: {reason}", self.tasks[task].name);
                    self.coordinator.on_decline(id, reason)
                }
                Ok(RuntimeEvent::SourceAtEnd) => {
                    sources_at_end += 1;
                    if sources_at_end == sources {
                        tracing::info!("all sources reached the end of their input: final checkpoint");
                        self.drained = self.drain_at_end;
                        self.coordinator.request(self.now_ms(), true)
                    } else {
                        Vec::new()
                    }
                }
                Ok(RuntimeEvent::Request { then_stop }) => self.coordinator.request(self.now_ms(), then_stop),
                Ok(RuntimeEvent::Finished { task }) => {
                    tracing::debug!("{} finished", self.tasks[task].name);
                    finished += 1;
                    if finished == self.tasks.len() {
                        return Ok(());
                    }
                    Vec::new()
                }
                Ok(RuntimeEvent::Failed { task, error }) => {
                    if matches!(error, WeirError::Cancelled) {
                        tracing::debug!("{} cancelled", self.tasks[task].name);
                        continue;
                    }
                    tracing::error!("task {} failed: {error}", self.tasks[task].name);
                    return Err(error);
                }
                Ok(RuntimeEvent::Cancel) => return Err(WeirError::Cancelled),
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => return Err(WeirError::Cancelled),
            };
            if self.sampled.elapsed() >= Duration::from_secs(1) {
                self.sampled = Instant::now();
                self.board.sample();
            }
            let mut queue: std::collections::VecDeque<_> = actions.into();
            queue.extend(self.coordinator.tick(self.now_ms()));
            while let Some(action) = queue.pop_front() {
                queue.extend(self.execute(action)?);
            }
        }
    }

    fn broadcast(&self, command: TaskCommand, sources_only: bool) {
        for t in self.tasks.iter().filter(|t| t.is_source || !sources_only) {
            let _ = t.commands.send(command);
        }
    }

    fn execute(&mut self, action: Action<TaskSnapshot>) -> Result<Vec<Action<TaskSnapshot>>> {
        match action {
            Action::Trigger { id, then_stop } => {
                self.on_store("reserving the checkpoint", move |store| store.reserve(id))?;
                tracing::info!("checkpoint {id} triggered{}", if then_stop { " (final)" } else { "" });
                self.triggered_at = Some(Instant::now());
                self.update_checkpoints(|c| c.in_flight = Some(id.0));
                self.broadcast(TaskCommand::Trigger(Barrier { id, then_stop }), true);
                Ok(Vec::new())
            }
            Action::Persist {
                id,
                snapshots,
                then_stop,
            } => {
                let manifest = self.manifest(id, snapshots, then_stop);
                self.last_bytes = manifest.state_bytes();
                match self.on_store("writing the manifest", move |store| store.write_manifest(&manifest)) {
                    Ok(()) => Ok(self.coordinator.on_persisted(id)),
                    // The store did not answer: whether the manifest will
                    // appear is unknown, so the job stops (its restart decides
                    // from what the store holds) instead of going on.
                    Err(e @ WeirError::Checkpoint { .. }) => Err(e),
                    // Another writer owns this checkpoint: never retry over it.
                    Err(e @ WeirError::Fenced { .. }) => Err(e),
                    Err(e) => {
                        tracing::warn!("checkpoint {id}: {e}");
                        Ok(self.coordinator.on_persist_failed(id, e.to_string()))
                    }
                }
            }
            Action::NotifyComplete { id, then_stop } => {
                crate::failpoint::hit("before-notify");
                self.completed += 1;
                let triggered = self.triggered_at.take();
                let duration = triggered.map(|t| t.elapsed());
                if let (Some(d), Some(t)) = (duration, triggered) {
                    self.durations.push(d);
                    self.started_at.push(t.saturating_duration_since(self.started));
                    metrics::histogram!("weir_checkpoint_duration_seconds", "job" => self.job.clone())
                        .record(d.as_secs_f64());
                }
                let duration = duration.unwrap_or_default();
                metrics::gauge!("weir_last_checkpoint_bytes", "job" => self.job.clone()).set(self.last_bytes as f64);
                let (completed, bytes) = (self.completed, self.last_bytes);
                self.update_checkpoints(|c| {
                    c.completed = completed;
                    c.in_flight = None;
                    c.last = Some(status::LastCheckpoint {
                        id: id.0,
                        duration,
                        bytes,
                        final_checkpoint: then_stop,
                    });
                });
                metrics::counter!("weir_checkpoints_completed_total", "job" => self.job.clone()).increment(1);
                metrics::gauge!("weir_last_checkpoint_id", "job" => self.job.clone()).set(id.0 as f64);
                self.last = Some(id.0);
                tracing::info!("checkpoint {id} complete{}", if then_stop { " (final)" } else { "" });
                self.broadcast(TaskCommand::Complete(id), false);
                Ok(Vec::new())
            }
            Action::Abort { id, reason, then_stop } => {
                tracing::warn!("checkpoint {id} aborted: {reason}");
                metrics::counter!("weir_checkpoints_aborted_total", "job" => self.job.clone()).increment(1);
                self.triggered_at = None;
                self.update_checkpoints(|c| {
                    c.aborted += 1;
                    c.in_flight = None;
                });
                self.broadcast(TaskCommand::Abort(id), false);
                if then_stop {
                    tracing::warn!("the final checkpoint was aborted; retrying");
                }
                Ok(Vec::new())
            }
            Action::Prune { remove, keep } => {
                if let Err(e) = self.on_store("pruning", move |store| store.prune(&remove, &keep)) {
                    tracing::warn!("pruning old checkpoints: {e}");
                }
                Ok(Vec::new())
            }
        }
    }

    /// Runs `work` on the store on a thread of its own and waits at most the
    /// checkpoint timeout: a store that stops answering cannot hold the
    /// coordinator (and with it cancel and every other checkpoint). A thread
    /// that does not answer in time is kept, and the store's locks with it,
    /// until it ends (see `run`).
    fn on_store<T: Send + 'static>(
        &mut self,
        what: &str,
        work: impl FnOnce(&CheckpointStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = crossbeam_channel::bounded(1);
        let store = self.store.clone();
        let thread = std::thread::Builder::new()
            .name("weir-store".into())
            .spawn(move || {
                let _ = done.send(work(&store));
            })
            .map_err(|e| WeirError::io("cannot spawn thread", "weir-store", e))?;
        match result.recv_timeout(self.persist_timeout) {
            Ok(answer) => {
                let _ = thread.join();
                answer
            }
            Err(_) => {
                self.lingering.push(thread);
                Err(WeirError::Checkpoint {
                    path: self.store.job_dir().to_path_buf(),
                    message: format!(
                        "{what} did not finish within {:?} (the checkpoint timeout): the store does not answer",
                        self.persist_timeout
                    ),
                })
            }
        }
    }

    fn manifest(&self, id: CheckpointId, snapshots: BTreeMap<usize, TaskSnapshot>, then_stop: bool) -> Manifest {
        let mut operators: BTreeMap<String, OperatorSnapshot> = BTreeMap::new();
        for (uid, subtask, state) in snapshots.into_values().flatten() {
            let parallelism = self.parallelism_by_uid.get(&uid).copied().unwrap_or(subtask + 1);
            let entry = operators.entry(uid).or_insert_with(|| OperatorSnapshot {
                parallelism,
                subtasks: Vec::new(),
            });
            if entry.subtasks.len() <= subtask {
                entry.subtasks.resize(
                    subtask + 1,
                    SubtaskState::Bytes {
                        hex: String::new(),
                        describe: String::new(),
                    },
                );
            }
            entry.subtasks[subtask] = state;
        }
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Manifest {
            format: MANIFEST_FORMAT,
            job: self.job.clone(),
            checkpoint_id: id.0,
            created_unix_ms,
            final_checkpoint: then_stop,
            drained: then_stop && self.drained,
            operators,
        }
    }
}
