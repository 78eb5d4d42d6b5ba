//! # weir: record-at-a-time stream processing with exactly-once state
//!
//! A job is a dataflow graph of operators connected by bounded channels.
//! Sources inject checkpoint barriers at exact positions; every task
//! snapshots its RocksDB keyed state when the barrier has arrived on all its
//! inputs; after a crash the job restarts from the last complete checkpoint,
//! so state and committed output are exactly-once.
//!
//! ```
//! use weir::connectors::{file_sink::FileSink, generator::{Generator, W1Event}};
//! use weir::{JobBuilder, JobConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let job = JobBuilder::new("sums").default_parallelism(2);
//! job.source("generator", Generator::w1_factory(Some(10_000), None))
//!     .uid("generator")
//!     .map(|e: W1Event| (e.key, e.value))
//!     .key_by(|r: &(u64, u64)| r.0)
//!     .reduce("sum", |a, b| (a.0, a.1 + b.1))
//!     .uid("sum")
//!     .sink("out", FileSink::factory(dir.path().join("out"), |r: &(u64, u64), line: &mut String| {
//!         line.push_str(&format!("{},{}", r.0, r.1))
//!     }))
//!     .uid("out");
//! let summary = job.build()?.run(JobConfig::with_checkpoint_dir(dir.path().join("checkpoints")))?;
//! // A bounded run ends with a final checkpoint; the next run resumes there.
//! assert!(summary.last_checkpoint.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The layers
//! Each layer uses only the ones below it (a test keeps it so; see
//! ARCHITECTURE.md for the diagram):
//! - leaves: errors ([`WeirError`]), the [`clock`], [`JobConfig`], task
//!   counters ([`Backlog`], [`PartitionLag`]), [`logging`] for programs that
//!   embed weir, failpoints for crash tests;
//! - [`checkpoint`]: the manifest format, the store on disk, the pure coordinator;
//! - [`connectors`]: the [`connectors::Source`] and [`connectors::Sink`]
//!   contracts and their implementations (generator, files, Kafka, memory);
//! - task: the per-task contract (stages, channel tails, task loops, aligner);
//! - state: RocksDB instances, the write-back cache, timers, snapshots;
//! - runtime: a planned job's threads, the coordinator thread, the
//!   [`JobHandle`] / [`JobController`] and the [`JobStatus`];
//! - graph: the typed builder ([`JobBuilder`], [`Stream`], [`KeyedStream`])
//!   that compiles a job into the runtime's plan, and [`Job`];
//! - [`ui`]: the web UI of a running job (a page and a JSON API over a
//!   [`JobController`]); beside it [`distributed`]: a member of a job
//!   scaled out over processes, one shard job per input partition.
//!
//! The operator contract and built-in operators live in crate
//! [`weir_operators`] (re-exported as [`operators`]); the demo jobs, Nexmark
//! and the benchmarks in `weir-workloads`; the `weir` command in `weir-cli`.

pub mod checkpoint;
pub mod clock;
mod config;
pub mod connectors;
pub mod distributed;
mod error;
mod failpoint;
mod fxhash;
mod graph;
pub mod logging;
mod runtime;
mod state;
mod stats;
mod task;
pub mod ui;

pub use config::{is_secret_setting, redact_url, JobConfig, StoreOptions, REDACTED};
pub use error::{Result, WeirError};
pub use graph::{Job, JobBuilder, KeyedStream, SinkRef, Stream};
pub use runtime::{
    CheckpointRecord, CheckpointStatus, GraphEdge, GraphVertex, JobController, JobGraph, JobHandle, JobState,
    JobStatus, JobSummary, LastCheckpoint, LatencySummary, Progress, RateSample, TaskStatus,
};
pub use stats::{Backlog, PartitionLag};
pub use weir_operators as operators;

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
