//! # weir: record-at-a-time stream processing with exactly-once state
//!
//! A job is a dataflow graph of operators connected by bounded channels.
//! Sources inject checkpoint barriers at exact positions; every task
//! snapshots its RocksDB keyed state when the barrier has arrived on all its
//! inputs; after a crash the job restarts from the last complete checkpoint,
//! so state and committed output are exactly-once.
//!
//! ```no_run
//! use weir::connectors::{file_sink::FileSink, generator::{Generator, W1Event}};
//! use weir::{JobBuilder, JobConfig};
//!
//! let job = JobBuilder::new("sums").default_parallelism(2);
//! job.source("generator", Generator::w1_factory(Some(1_000_000), None))
//!     .uid("generator")
//!     .map(|e: W1Event| (e.key, e.value))
//!     .key_by(|r: &(u64, u64)| r.0)
//!     .reduce("sum", |a, b| (a.0, a.1 + b.1))
//!     .uid("sum")
//!     .sink("out", FileSink::factory("out", |r: &(u64, u64), line: &mut String| line.push_str(&format!("{},{}", r.0, r.1))))
//!     .uid("out");
//! let summary = job.build()?.run(JobConfig::with_checkpoint_dir("checkpoints"))?;
//! println!("last checkpoint: {:?}", summary.last_checkpoint);
//! # Ok::<(), weir::WeirError>(())
//! ```
//!
//! ## The parts
//! - [`graph`]: the typed builder ([`JobBuilder`], [`Stream`], [`KeyedStream`]) and its validation.
//! - `runtime`: tasks on threads, operator chains, barrier alignment, the coordinator thread.
//! - [`checkpoint`]: the pure coordinator, the manifest format, the store on disk.
//! - `state`: RocksDB instances, the write-back cache, snapshots.
//! - [`connectors`]: sources and sinks (generator, exactly-once files, test sinks).
//! - [`jobs`]: the built-in demo and benchmark jobs.
//! - [`nexmark`]: the Nexmark events, generator and queries (`weir nexmark`).
//! - The operator contract and built-in operators live in crate [`weir_operators`].

pub mod bench;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod connectors;
pub mod error;
pub mod failpoint;
pub mod graph;
pub mod jobs;
pub mod nexmark;
pub(crate) mod runtime;
pub(crate) mod state;

pub use config::JobConfig;
pub use error::{Result, WeirError};
pub use graph::{Job, JobBuilder, KeyedStream, SinkRef, Stream};
pub use runtime::{
    Backlog, CheckpointStatus, JobController, JobHandle, JobStatus, JobSummary, LastCheckpoint, LatencySummary,
    PartitionLag, TaskStatus,
};
pub use weir_operators as operators;
