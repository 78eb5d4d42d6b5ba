//! Live status of a running job, read from the job's handle without scraping
//! metrics, and the one place that exports per-task metrics.
//!
//! Each task owns a [`crate::stats::TaskStats`] of plain atomics that only it writes (one
//! relaxed add per batch, never per record). The coordinator thread samples
//! every task once a second: it turns the counters into rates and
//! backpressure ratios, and sets the Prometheus metrics from them, so the hot
//! path never touches the `metrics` registry.

use super::describe::JobGraph;
use crate::stats::{PartitionLag, TaskStats};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Checkpoints kept in [`CheckpointStatus::history`].
const CHECKPOINT_HISTORY: usize = 100;
/// Samples kept for [`crate::JobController::history`]: ten minutes.
const SAMPLE_HISTORY: usize = 600;

/// What a running job is doing, from [`crate::JobHandle::status`].
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Time since the job started.
    #[serde(serialize_with = "as_secs")]
    pub uptime: Duration,
    /// Every task (one subtask of a chain of operators), in graph order.
    pub tasks: Vec<TaskStatus>,
    /// Checkpoints of this run.
    pub checkpoints: CheckpointStatus,
    /// Running, finished, cancelled or failed (with the error).
    #[serde(flatten)]
    pub state: JobState,
    /// The checkpoint this run restored, if any.
    pub restored_from: Option<u64>,
    /// A bounded run's progress, when every source task knows what it still reads.
    pub progress: Option<Progress>,
}

/// How a job stands. In JSON: `"state": "running"` and, when failed, the
/// error's fields beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobState {
    /// Its tasks are running.
    #[default]
    Running,
    /// Every task ended after the final checkpoint (a bounded run's end, or a stop).
    Finished,
    /// Cancelled.
    Cancelled,
    /// The job failed.
    Failed {
        /// The task whose failure ended the job (`vertex[subtask]`), when a task's did.
        task: Option<String>,
        /// The error that ended it.
        error: String,
        /// Its causes, outermost first.
        causes: Vec<String>,
    },
}

/// How far a bounded run is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// Records the sources read in this run.
    pub read: u64,
    /// Records they still read before their end.
    pub remaining: u64,
    /// `read / (read + remaining)`, 0 to 1.
    pub fraction: f64,
    /// Seconds to the end at the sources' current rate.
    pub eta_s: Option<f64>,
}

/// One checkpoint of this run, completed or aborted.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRecord {
    /// Its id.
    pub id: u64,
    /// `completed` or `aborted`.
    pub status: &'static str,
    /// When it was triggered, ms since the Unix epoch.
    pub triggered_unix_ms: i64,
    /// From trigger to complete (or abort).
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// The longest barrier alignment of a task in it.
    #[serde(serialize_with = "as_secs")]
    pub alignment: Duration,
    /// Bytes of state it references (completed only).
    pub bytes: u64,
    /// What its snapshots put into the store; `upload_seconds` is the
    /// asynchronous part (completed only).
    pub upload: crate::checkpoint::store::UploadStats,
    /// A final checkpoint.
    pub final_checkpoint: bool,
    /// Why it was aborted.
    pub reason: Option<String>,
}

/// The job's throughput and latency over one sampling second.
#[derive(Debug, Clone, Serialize)]
pub struct RateSample {
    /// Seconds since the job started.
    pub uptime_s: f64,
    /// Records per second read by the source tasks.
    pub source_records_per_sec: f64,
    /// Records per second written by the tasks that end in a sink.
    pub sink_records_per_sec: f64,
    /// End-to-end latency of the markers that reached a sink in this second.
    pub latency: Option<LatencySummary>,
}

/// One task of a running job.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// `<vertex>[<subtask>]`, the vertex named after its first operator.
    pub name: String,
    /// A source task (its `records_in` are the records it read).
    pub is_source: bool,
    /// Records received from channels (a source task: records read from its source).
    pub records_in: u64,
    /// Records sent to channels or written to a sink.
    pub records_out: u64,
    /// Records in per second over the last sampling second.
    pub records_in_per_sec: f64,
    /// Records out per second over the last sampling second.
    pub records_out_per_sec: f64,
    /// Milliseconds per second the task waited for room in a full output
    /// channel (backpressure from downstream; Flink's backPressuredTimeMsPerSecond).
    pub backpressured_ms_per_sec: f64,
    /// Batches waiting in the last output channel the task sent to, and its
    /// capacity (`None` for a task ending in a sink).
    pub output_queue: Option<(u64, u64)>,
    /// Event time in ms since the epoch, once a watermark arrived.
    pub watermark_ms: Option<i64>,
    /// Barrier alignment time of the newest checkpoint this task aligned.
    #[serde(serialize_with = "as_secs")]
    pub last_alignment: Duration,
    /// The task has ended.
    pub finished: bool,
    /// Per-partition lag of a Kafka source task (empty otherwise).
    pub kafka_lag: Vec<PartitionLag>,
    /// End-to-end latency at a sink task (source to sink, from latency markers).
    pub latency: Option<LatencySummary>,
    /// A keyed task: bytes of its RocksDB state in the last checkpoint.
    pub state_bytes: Option<u64>,
    /// A keyed task: the share of records over the last second whose key's
    /// state was in the write-back cache (the others read RocksDB).
    pub state_cache_hit_rate: Option<f64>,
    /// A sink task: the newest checkpoint whose output its sink committed
    /// (for the exactly-once Kafka sink, the epoch of its last committed
    /// transaction).
    pub committed_checkpoint: Option<u64>,
}

/// Percentiles of the latency markers that reached a sink, since the start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySummary {
    /// Markers measured.
    pub count: u64,
    /// Median, in ms.
    pub p50_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
    /// Maximum, in ms.
    pub max_ms: f64,
}

/// Checkpoints of a running job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStatus {
    /// Completed in this run.
    pub completed: u64,
    /// Aborted (declined, failed to persist, or timed out) in this run.
    pub aborted: u64,
    /// The newest complete checkpoint of this run.
    pub last: Option<LastCheckpoint>,
    /// The checkpoint in flight, if any.
    pub in_flight: Option<u64>,
    /// The last checkpoints of this run (at most 100), oldest first.
    pub history: VecDeque<CheckpointRecord>,
}

impl CheckpointStatus {
    /// Adds a checkpoint to the history, dropping the oldest past 100.
    pub(crate) fn record(&mut self, record: CheckpointRecord) {
        if self.history.len() == CHECKPOINT_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }
}

/// The newest complete checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct LastCheckpoint {
    /// Its id.
    pub id: u64,
    /// From trigger to complete.
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// Bytes of state it references (RocksDB files, also those shared with
    /// earlier checkpoints, plus inline and file state).
    pub bytes: u64,
    /// A final checkpoint (end of a bounded run, or stop).
    pub final_checkpoint: bool,
    /// What its snapshots put into the checkpoint store (new files only:
    /// checkpoints are incremental).
    pub upload: crate::checkpoint::store::UploadStats,
}

fn summary_of(h: &hdrhistogram::Histogram<u64>) -> LatencySummary {
    LatencySummary {
        count: h.len(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e6,
        max_ms: h.max() as f64 / 1e6,
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Shared between the coordinator thread (which samples and updates it) and
/// every handle of the job (which read it).
pub(crate) struct StatusBoard {
    job: String,
    started: Instant,
    tasks: Vec<(String, bool, Arc<TaskStats>)>,
    pub(crate) checkpoints: Mutex<CheckpointStatus>,
    sample: Mutex<Sample>,
    pub(crate) state: Mutex<JobState>,
    restored_from: Option<u64>,
    pub(crate) graph: JobGraph,
    pub(crate) config: serde_json::Value,
    history: Mutex<VecDeque<RateSample>>,
}

/// Counters at the previous sampling, and the rates derived from them.
#[derive(Default)]
struct Sample {
    at: Option<Instant>,
    counters: Vec<(u64, u64, u64, u64)>,
    rates: Vec<(f64, f64, f64, Option<f64>)>,
    /// Every sink's latency markers until the last sampling (merged).
    latency: Option<hdrhistogram::Histogram<u64>>,
}

impl StatusBoard {
    pub(crate) fn new(
        job: String,
        started: Instant,
        tasks: Vec<(String, bool, Arc<TaskStats>)>,
        restored_from: Option<u64>,
        graph: JobGraph,
        config: serde_json::Value,
    ) -> Self {
        StatusBoard {
            job,
            started,
            tasks,
            checkpoints: Mutex::new(CheckpointStatus::default()),
            sample: Mutex::new(Sample::default()),
            state: Mutex::new(JobState::Running),
            restored_from,
            graph,
            config,
            history: Mutex::new(VecDeque::new()),
        }
    }

    /// The samples of the last ten minutes, oldest first.
    pub(crate) fn history(&self) -> Vec<RateSample> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The longest barrier alignment over the tasks' newest.
    pub(crate) fn longest_alignment(&self) -> Duration {
        let ns = self
            .tasks
            .iter()
            .map(|(_, _, s)| s.last_alignment_ns.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        Duration::from_nanos(ns)
    }

    /// Every sink's latency markers so far, merged.
    fn merged_latency(&self) -> Option<hdrhistogram::Histogram<u64>> {
        let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
        for (_, _, s) in &self.tasks {
            let Ok(h) = s.latency.lock() else { continue };
            if let Some(h) = h.as_ref() {
                match &mut merged {
                    Some(m) => {
                        let _ = m.add(h);
                    }
                    None => merged = Some(h.clone()),
                }
            }
        }
        merged
    }

    /// Appends the sample of the last second to the history.
    fn record_sample(&self, sample: &mut Sample, uptime: Duration) {
        let (mut source, mut sink) = (0.0, 0.0);
        for (i, (_, is_source, s)) in self.tasks.iter().enumerate() {
            let (in_rate, out_rate, _, _) = sample.rates.get(i).copied().unwrap_or_default();
            if *is_source {
                source += in_rate;
            }
            if s.output_capacity.load(Ordering::Relaxed) == 0 {
                sink += out_rate;
            }
        }
        let now = self.merged_latency();
        let latency = match (&now, &sample.latency) {
            (Some(now), Some(before)) => {
                let mut second = now.clone();
                second.subtract(before).ok().map(|_| second)
            }
            (Some(now), None) => Some(now.clone()),
            _ => None,
        }
        .filter(|h| !h.is_empty())
        .map(|h| summary_of(&h));
        sample.latency = now;
        if let Ok(mut history) = self.history.lock() {
            if history.len() == SAMPLE_HISTORY {
                history.pop_front();
            }
            history.push_back(RateSample {
                uptime_s: uptime.as_secs_f64(),
                source_records_per_sec: source,
                sink_records_per_sec: sink,
                latency,
            });
        }
    }

    /// Updates the rates (the coordinator calls this about once a second)
    /// and exports every task's metrics.
    pub(crate) fn sample(&self) {
        let now = Instant::now();
        let Ok(mut sample) = self.sample.lock() else { return };
        let counters: Vec<(u64, u64, u64, u64)> = self
            .tasks
            .iter()
            .map(|(_, _, s)| {
                (
                    s.records_in.load(Ordering::Relaxed),
                    s.records_out.load(Ordering::Relaxed),
                    s.blocked_ns.load(Ordering::Relaxed),
                    s.state_reads.load(Ordering::Relaxed),
                )
            })
            .collect();
        if let Some(at) = sample.at {
            let secs = now.duration_since(at).as_secs_f64().max(1e-3);
            sample.rates = counters
                .iter()
                .zip(&sample.counters)
                .map(|(c, p)| {
                    let records = c.0.saturating_sub(p.0);
                    let reads = c.3.saturating_sub(p.3);
                    (
                        records as f64 / secs,
                        c.1.saturating_sub(p.1) as f64 / secs,
                        c.2.saturating_sub(p.2) as f64 / 1e6 / secs,
                        (records > 0).then(|| 1.0 - (reads.min(records) as f64 / records as f64)),
                    )
                })
                .collect();
        }
        let first = sample.at.is_none();
        sample.at = Some(now);
        sample.counters = counters;
        if !first {
            self.record_sample(&mut sample, self.started.elapsed());
        }
        drop(sample);
        self.export_metrics();
    }

    fn export_metrics(&self) {
        let wall_ms = crate::clock::wall_clock_ms();
        for (name, _, s) in &self.tasks {
            metrics::counter!("weir_task_records_in_total", "task" => name.clone())
                .absolute(s.records_in.load(Ordering::Relaxed));
            metrics::counter!("weir_task_records_out_total", "task" => name.clone())
                .absolute(s.records_out.load(Ordering::Relaxed));
            metrics::counter!("weir_task_backpressured_ms_total", "task" => name.clone())
                .absolute(s.blocked_ns.load(Ordering::Relaxed) / 1_000_000);
            let capacity = s.output_capacity.load(Ordering::Relaxed);
            if capacity > 0 {
                metrics::gauge!("weir_task_output_queue_fill_ratio", "task" => name.clone())
                    .set(s.output_queue.load(Ordering::Relaxed) as f64 / capacity as f64);
            }
            let w = s.watermark.load(Ordering::Relaxed);
            if w != i64::MIN && w != i64::MAX {
                metrics::gauge!("weir_watermark_ms", "task" => name.clone()).set(w as f64);
                metrics::gauge!("weir_watermark_lag_seconds", "task" => name.clone())
                    .set((wall_ms - w) as f64 / 1000.0);
            }
            for p in s.backlog.get() {
                metrics::gauge!(
                    "weir_kafka_consumer_lag",
                    "task" => name.clone(), "topic" => p.topic.clone(), "partition" => p.partition.to_string()
                )
                .set(p.lag as f64);
            }
        }
    }

    /// The job's status now (counters now, rates from the last sampling).
    pub(crate) fn status(&self) -> JobStatus {
        let rates = self.sample.lock().map(|s| s.rates.clone()).unwrap_or_default();
        let tasks = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, (name, is_source, s))| {
                let (in_rate, out_rate, blocked, hit_rate) = rates.get(i).copied().unwrap_or_default();
                let keyed = s.keyed.load(Ordering::Relaxed);
                let capacity = s.output_capacity.load(Ordering::Relaxed);
                let w = s.watermark.load(Ordering::Relaxed);
                let latency = s.latency.lock().ok().and_then(|h| h.as_ref().map(summary_of));
                TaskStatus {
                    name: name.clone(),
                    is_source: *is_source,
                    records_in: s.records_in.load(Ordering::Relaxed),
                    records_out: s.records_out.load(Ordering::Relaxed),
                    records_in_per_sec: in_rate,
                    records_out_per_sec: out_rate,
                    backpressured_ms_per_sec: blocked.min(1000.0),
                    output_queue: (capacity > 0).then(|| (s.output_queue.load(Ordering::Relaxed), capacity)),
                    watermark_ms: (w != i64::MIN).then_some(w),
                    last_alignment: Duration::from_nanos(s.last_alignment_ns.load(Ordering::Relaxed)),
                    finished: s.finished.load(Ordering::Relaxed),
                    kafka_lag: s.backlog.get(),
                    latency,
                    state_bytes: keyed.then(|| s.state_bytes.load(Ordering::Relaxed)),
                    state_cache_hit_rate: if keyed { hit_rate } else { None },
                    committed_checkpoint: match s.committed_checkpoint.load(Ordering::Relaxed) {
                        0 => None,
                        id => Some(id),
                    },
                }
            })
            .collect::<Vec<TaskStatus>>();
        let progress = self.progress(&tasks);
        JobStatus {
            job: self.job.clone(),
            uptime: self.started.elapsed(),
            tasks,
            checkpoints: self.checkpoints.lock().map(|c| c.clone()).unwrap_or_default(),
            state: self.state.lock().map(|s| s.clone()).unwrap_or_default(),
            restored_from: self.restored_from,
            progress,
        }
    }

    /// A bounded run's progress: known when every source task reports
    /// what it still reads.
    fn progress(&self, tasks: &[TaskStatus]) -> Option<Progress> {
        let (mut read, mut remaining, mut rate) = (0u64, 0u64, 0.0);
        for ((_, is_source, s), t) in self.tasks.iter().zip(tasks) {
            if !is_source {
                continue;
            }
            let end_at = s.end_at.load(Ordering::Relaxed);
            if end_at < 0 {
                return None;
            }
            read += t.records_in;
            remaining += (end_at as u64).saturating_sub(t.records_in);
            rate += t.records_in_per_sec;
        }
        let total = read + remaining;
        (total > 0).then(|| Progress {
            read,
            remaining,
            fraction: read as f64 / total as f64,
            eta_s: if remaining == 0 {
                Some(0.0)
            } else {
                (rate > 0.0).then(|| remaining as f64 / rate)
            },
        })
    }
}

impl std::fmt::Display for JobStatus {
    /// A table for people: one line per task, then the checkpoints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "job {} up {:.1} s", self.job, self.uptime.as_secs_f64())?;
        let width = self.tasks.iter().map(|t| t.name.len()).max().unwrap_or(0).max(4);
        writeln!(
            f,
            "{:<width$} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9} {:>10}",
            "task", "in", "out", "in/s", "out/s", "bp ms/s", "queue", "lag"
        )?;
        for t in &self.tasks {
            let queue = t.output_queue.map_or("-".to_string(), |(q, c)| format!("{q}/{c}"));
            let lag: i64 = t.kafka_lag.iter().map(|p| p.lag).sum();
            let lag = if t.kafka_lag.is_empty() {
                "-".to_string()
            } else {
                lag.to_string()
            };
            writeln!(
                f,
                "{:<width$} {:>12} {:>12} {:>10.0} {:>10.0} {:>8.0} {:>9} {:>10}{}",
                t.name,
                t.records_in,
                t.records_out,
                t.records_in_per_sec,
                t.records_out_per_sec,
                t.backpressured_ms_per_sec,
                queue,
                lag,
                if t.finished { " (finished)" } else { "" }
            )?;
        }
        let c = &self.checkpoints;
        write!(f, "checkpoints: {} completed, {} aborted", c.completed, c.aborted)?;
        if let Some(l) = &c.last {
            write!(
                f,
                "; last {} took {:.0} ms, {} bytes ({} files / {} bytes uploaded in {:.0} ms, {} files reused)",
                l.id,
                l.duration.as_secs_f64() * 1000.0,
                l.bytes,
                l.upload.files_uploaded,
                l.upload.bytes_uploaded,
                l.upload.upload_seconds * 1000.0,
                l.upload.files_reused
            )?;
        }
        Ok(())
    }
}
