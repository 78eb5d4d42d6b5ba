//! The handle of a running job and the summary of a finished one.

use super::status::{JobStatus, StatusBoard};
use crate::error::{panic_message, Result, WeirError};
use crate::task::run::RuntimeEvent;
use crossbeam_channel::Sender;
use std::sync::Arc;
use std::time::Duration;

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
    /// For each checkpoint completed in this run: the files it put into the
    /// store and how long that took (same order as `checkpoint_durations`).
    pub checkpoint_uploads: Vec<crate::checkpoint::UploadStats>,
    /// Time from the start until every task was made: on a restore, the
    /// state fetched, opened and (after a change of parallelism) rebuilt
    /// by key group.
    pub restore_time: Duration,
    /// Timers (event-time windows waiting for their end among them) that the
    /// final checkpoint keeps for the next run: a bounded run without
    /// `drain_at_end` does not fire them, unlike Flink's bounded input.
    pub timers_kept: u64,
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
    pub(super) controller: JobController,
    pub(super) driver: std::thread::JoinHandle<Result<JobSummary>>,
}

/// Controls a running job from anywhere (a signal handler, another thread):
/// a cloneable part of [`JobHandle`].
#[derive(Clone)]
pub struct JobController {
    pub(super) events: Sender<RuntimeEvent>,
    pub(super) board: Arc<StatusBoard>,
}

impl JobController {
    /// What the job is doing now: per task records in/out and their rates,
    /// backpressure, watermark, Kafka lag, latency; the last checkpoint.
    /// Rates and backpressure are over the last second.
    pub fn status(&self) -> JobStatus {
        self.board.status()
    }

    /// The job graph: vertices (chained operators, parallelism, task
    /// names) and the exchanges between them.
    pub fn graph(&self) -> &super::JobGraph {
        &self.board.graph
    }

    /// Throughput and latency of each of the last 600 sampling seconds,
    /// oldest first.
    pub fn history(&self) -> Vec<super::RateSample> {
        self.board.history()
    }

    /// The job's settings as JSON, secrets redacted ([`crate::JobConfig::describe`]).
    pub fn config(&self) -> &serde_json::Value {
        &self.board.config
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
    /// Whether the job has ended (then [`JobHandle::join`] returns at once).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

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
