//! The coordinator thread: feeds the pure [`Coordinator`] with acks and
//! time, carries out its actions on the tasks and the store, and ends the
//! job (in bounded time when it fails or is cancelled).

use super::handle::JobSummary;
use super::status::{self, StatusBoard};
use crate::checkpoint::coordinator::{Action, Coordinator};
use crate::checkpoint::lock::DirLock;
use crate::checkpoint::manifest::{Manifest, OperatorSnapshot, SubtaskState, MANIFEST_FORMAT};
use crate::checkpoint::store::CheckpointStore;
use crate::error::{Result, WeirError};
use crate::task::run::{RuntimeEvent, TaskCommand};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_operators::{Barrier, CheckpointId};

/// What one task acknowledges: (operator uid, subtask, state) per stateful operator.
pub(super) type TaskSnapshot = Vec<(String, usize, SubtaskState)>;

pub(super) struct RunningTask {
    pub(super) name: String,
    pub(super) is_source: bool,
    pub(super) commands: Sender<TaskCommand>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) snapshotter: Option<std::thread::JoinHandle<()>>,
}

/// How long a failed or cancelled job waits for its tasks to stop.
pub(super) const CANCEL_GRACE: Duration = Duration::from_secs(10);

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

pub(super) struct Driver {
    pub(super) job: String,
    pub(super) store: CheckpointStore,
    /// The store's lock (and the local state directory's): released when
    /// the driver, which outlives every task, is dropped.
    pub(super) locks: Vec<DirLock>,
    /// Every source ended and event time jumped to its end (bounded + drain).
    pub(super) drained: bool,
    /// [`JobConfig::drain_at_end`].
    pub(super) drain_at_end: bool,
    /// How long committing a manifest may take: [`JobConfig::checkpoint_timeout`].
    pub(super) persist_timeout: Duration,
    /// Store work that did not answer in time (see `on_store`).
    pub(super) lingering: Vec<std::thread::JoinHandle<()>>,
    /// Tasks that did not stop within the grace of a cancel.
    pub(super) stuck: Vec<RunningTask>,
    pub(super) coordinator: Coordinator<TaskSnapshot>,
    pub(super) tasks: Vec<RunningTask>,
    pub(super) events: Receiver<RuntimeEvent>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) started: Instant,
    /// [`JobSummary::restore_time`].
    pub(super) restore_time: Duration,
    /// [`JobSummary::checkpoint_uploads`].
    pub(super) uploads: Vec<crate::checkpoint::UploadStats>,
    pub(super) restored_from: Option<u64>,
    pub(super) completed: u64,
    pub(super) last: Option<u64>,
    pub(super) parallelism_by_uid: BTreeMap<String, usize>,
    pub(super) triggered_at: Option<Instant>,
    /// Wall clock (ms since the epoch) of the trigger of the checkpoint in flight.
    pub(super) triggered_wall_ms: i64,
    /// The task whose failure ended the job.
    pub(super) failed_task: Option<String>,
    pub(super) durations: Vec<Duration>,
    /// Trigger times of the completed checkpoints, since the start.
    pub(super) started_at: Vec<Duration>,
    pub(super) skipped: Vec<String>,
    pub(super) board: Arc<StatusBoard>,
    /// When the status board was last sampled.
    pub(super) sampled: Instant,
    /// State bytes of the checkpoint being persisted.
    pub(super) last_bytes: u64,
    /// [`JobSummary::state_entries_written_behind`], counted by the state.
    pub(super) written_behind: Arc<std::sync::atomic::AtomicU64>,
    /// [`JobSummary::timers_kept`], counted by the state.
    pub(super) timers_kept: Arc<std::sync::atomic::AtomicU64>,
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

    /// Drives the job to its end and returns how it went.
    pub(super) fn run(&mut self) -> Result<JobSummary> {
        let result = self.drive();
        let state = match &result {
            Ok(()) => status::JobState::Finished,
            Err(WeirError::Cancelled) => status::JobState::Cancelled,
            Err(e) => {
                let mut causes = Vec::new();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    causes.push(c.to_string());
                    cause = c.source();
                }
                status::JobState::Failed {
                    task: self.failed_task.clone(),
                    error: e.to_string(),
                    causes,
                }
            }
        };
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
        let timers_kept = self.timers_kept.load(Ordering::Relaxed);
        if result.is_ok() && timers_kept > 0 {
            tracing::info!(
                "job {}: the final checkpoint keeps {timers_kept} timer(s) (windows waiting for their end among them) \
                 for the next run; drain_at_end (--drain) fires them at the end instead",
                self.job
            );
        }
        // The final counters, then the outcome: a UI shows the end as it was.
        self.board.sample();
        if let Ok(mut s) = self.board.state.lock() {
            *s = state;
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
            checkpoint_uploads: std::mem::take(&mut self.uploads),
            restore_time: self.restore_time,
            state_entries_written_behind: self.written_behind.load(Ordering::Relaxed),
            timers_kept,
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
                    self.failed_task = Some(self.tasks[task].name.clone());
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
                match self.on_store("reserving the checkpoint", move |store| store.reserve(id)) {
                    Ok(()) => {}
                    // The older writer this run fenced reserved the id just
                    // before: give the id up, the next checkpoint takes the next.
                    Err(WeirError::Fenced { .. })
                        if self.on_store("checking the claim", |store| store.holds_claim())? =>
                    {
                        let reason = format!("checkpoint id {id} was taken by the fenced previous writer");
                        return Ok(self.coordinator.on_decline(id, reason));
                    }
                    Err(e @ WeirError::Fenced { .. }) => return Err(e),
                    // The store did not answer (in time): an id reserved or
                    // not is harmless (ids are never reused), so this
                    // checkpoint is given up and a later one tries again.
                    Err(e) => return Ok(self.coordinator.on_decline(id, e.to_string())),
                }
                tracing::info!("checkpoint {id} triggered{}", if then_stop { " (final)" } else { "" });
                self.triggered_at = Some(Instant::now());
                self.triggered_wall_ms = crate::clock::wall_clock_ms();
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
                let upload = self.store.take_upload_stats();
                if triggered.is_some() {
                    self.uploads.push(upload);
                }
                let labels = [("job", self.job.clone())];
                metrics::counter!("weir_checkpoint_uploaded_bytes_total", &labels).increment(upload.bytes_uploaded);
                metrics::counter!("weir_checkpoint_uploaded_files_total", &labels).increment(upload.files_uploaded);
                metrics::counter!("weir_checkpoint_reused_files_total", &labels).increment(upload.files_reused);
                metrics::histogram!("weir_checkpoint_upload_seconds", &labels).record(upload.upload_seconds);
                let (completed, bytes) = (self.completed, self.last_bytes);
                let record = status::CheckpointRecord {
                    id: id.0,
                    status: "completed",
                    triggered_unix_ms: self.triggered_wall_ms,
                    duration,
                    alignment: self.board.longest_alignment(),
                    bytes,
                    upload,
                    final_checkpoint: then_stop,
                    reason: None,
                };
                self.update_checkpoints(|c| {
                    c.completed = completed;
                    c.in_flight = None;
                    c.last = Some(status::LastCheckpoint {
                        id: id.0,
                        duration,
                        bytes,
                        final_checkpoint: then_stop,
                        upload,
                    });
                    c.record(record);
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
                let record = status::CheckpointRecord {
                    id: id.0,
                    status: "aborted",
                    triggered_unix_ms: self.triggered_wall_ms,
                    duration: self.triggered_at.take().map(|t| t.elapsed()).unwrap_or_default(),
                    alignment: self.board.longest_alignment(),
                    bytes: 0,
                    upload: Default::default(),
                    final_checkpoint: then_stop,
                    reason: Some(reason.clone()),
                };
                self.update_checkpoints(|c| {
                    c.aborted += 1;
                    c.in_flight = None;
                    c.record(record);
                });
                self.broadcast(TaskCommand::Abort(id), false);
                if then_stop {
                    tracing::warn!("the final checkpoint was aborted; retrying");
                }
                Ok(Vec::new())
            }
            Action::Prune { remove, keep } => {
                match self.on_store("pruning", move |store| store.prune_in_run(&remove, &keep)) {
                    // A newer writer holds the store: stop before touching it again.
                    Err(e @ WeirError::Fenced { .. }) => return Err(e),
                    Err(e) => tracing::warn!("pruning old checkpoints: {e}"),
                    Ok(()) => {}
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
