//! Built-in jobs: the demo run by `weir run demo` (and the crash tests), and
//! W1 of the benchmark workloads.

use crate::connectors::collect::{CountingSink, SinkStats};
use crate::connectors::file_sink::FileSink;
use crate::connectors::generator::{Generator, W1Event};
use crate::error::Result;
use crate::graph::{Job, JobBuilder};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use weir_operators::{KeyedContext, KeyedProcess, OperatorError};

/// Options of the demo job.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Records to generate in total; `None` = endless.
    pub records: Option<u64>,
    /// Records per second in total; `None` = as fast as possible.
    pub rate: Option<u64>,
    /// Parallelism of every vertex.
    pub parallelism: usize,
    /// Directory of the committed output files.
    pub output: PathBuf,
}

/// One output line of the demo: record `index` was the `count`-th of its key,
/// and the key's values summed to `sum` with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoOutput {
    /// The record's global index.
    pub index: u64,
    /// Its key.
    pub key: u64,
    /// How many records of this key so far, this one included.
    pub count: u64,
    /// Sum of the key's values so far.
    pub sum: u64,
}

/// Running count and sum per key.
#[derive(Debug, Clone, Copy)]
pub struct RunningCountSum;

impl KeyedProcess<u64, W1Event, DemoOutput> for RunningCountSum {
    type State = (u64, u64);
    #[inline]
    fn process(
        &mut self,
        key: &u64,
        state: &mut Option<(u64, u64)>,
        e: W1Event,
        ctx: &mut KeyedContext<'_, DemoOutput>,
    ) -> Result<(), OperatorError> {
        let (count, sum) = state.get_or_insert((0, 0));
        *count += 1;
        *sum += e.value;
        ctx.emit(DemoOutput {
            index: e.index,
            key: *key,
            count: *count,
            sum: *sum,
        });
        Ok(())
    }
}

/// generator -> key_by(key) -> running count and sum in RocksDB state ->
/// exactly-once file sink, lines `index,key,count,sum`.
///
/// # Errors
/// An invalid parallelism.
pub fn demo_job(options: &DemoOptions) -> Result<Job> {
    let job = JobBuilder::new("demo").default_parallelism(options.parallelism);
    job.source("generator", Generator::w1_factory(options.records, options.rate))
        .uid("generator")
        .key_by(|e: &W1Event| e.key)
        .process("running-count-sum", RunningCountSum)
        .uid("running-count-sum")
        .sink(
            "file-sink",
            FileSink::factory(options.output.clone(), |r: &DemoOutput, line: &mut String| {
                let _ = write!(line, "{},{},{},{}", r.index, r.key, r.count, r.sum);
            }),
        )
        .uid("file-sink");
    job.build()
}

/// Running sum per key (W1).
#[derive(Debug, Clone, Copy)]
pub struct RunningSum;

impl KeyedProcess<u64, W1Event, (u64, u64, u64)> for RunningSum {
    type State = u64;
    #[inline]
    fn process(
        &mut self,
        key: &u64,
        sum: &mut Option<u64>,
        e: W1Event,
        ctx: &mut KeyedContext<'_, (u64, u64, u64)>,
    ) -> Result<(), OperatorError> {
        let s = sum.get_or_insert(0);
        *s += e.value;
        ctx.emit((*key, *s, e.emit_ns));
        Ok(())
    }
}

/// W1: generator -> key_by(key) -> running sum in RocksDB keyed state ->
/// `(key, running_sum, ingest_ns)` -> counting sink.
///
/// # Errors
/// An invalid parallelism.
pub fn w1_job(records: Option<u64>, rate: Option<u64>, parallelism: usize, stats: Arc<SinkStats>) -> Result<Job> {
    let job = JobBuilder::new("w1").default_parallelism(parallelism);
    job.source("generator", Generator::w1_factory(records, rate))
        .uid("generator")
        .key_by(|e: &W1Event| e.key)
        .process("running-sum", RunningSum)
        .uid("running-sum")
        .sink("count", CountingSink::factory_with(stats));
    job.build()
}
