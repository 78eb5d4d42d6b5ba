//! Nexmark, the field's standard streaming benchmark, built in: the events
//! ([`model`]), a deterministic generator ([`generator`]) and the queries
//! ([`queries`]), wired to a source (generator, Kafka topic of JSON events,
//! or a JSON-lines file) and a sink (Kafka exactly-once, committed files,
//! memory, or latency statistics) by [`nexmark_job`]. `weir nexmark` runs it.

pub mod distributed;
pub mod generator;
mod json;
pub mod model;
pub mod queries;

use generator::{GeneratorConfig, NexmarkGenerator};
use model::Event;
use queries::{Output, Query, OUT_OF_ORDERNESS_MS};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir::connectors::collect::CollectSink;
use weir::connectors::file_sink::{FileSink, FileSinkOptions, Rolling};
use weir::connectors::kafka::source::{Progress, WatermarkStrategy};
use weir::connectors::kafka::{KafkaRecord, KafkaSink, KafkaSource};
use weir::connectors::line_source::LineSource;
use weir::connectors::{ConnectorContext, Sink};
use weir::Result;
use weir::{Job, JobBuilder, Stream};
use weir_operators::CheckpointId;

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum EventSource {
    /// The built-in generator.
    Generator(GeneratorConfig),
    /// A Kafka topic of JSON events (one per message value; key ignored).
    Kafka {
        /// Bootstrap servers and client properties.
        cluster: weir::connectors::kafka::KafkaConnection,
        /// The topic.
        topic: String,
        /// Stop at the end offsets seen at start.
        bounded: bool,
    },
    /// A file of JSON events, one per line (bounded).
    File {
        /// The file.
        path: PathBuf,
        /// Helper threads parsing ahead of each source subtask (see [`LineSource::parse_threads`]).
        parse_threads: usize,
    },
}

/// Where the result rows go.
#[derive(Clone)]
pub enum RowSink {
    /// A Kafka topic, exactly-once: one JSON object per message value.
    Kafka {
        /// Bootstrap servers and client properties.
        cluster: weir::connectors::kafka::KafkaConnection,
        /// The topic.
        topic: String,
    },
    /// Committed part files (one JSON object per line) in this directory, one
    /// per subtask and run (committed by the run's final checkpoint).
    Files {
        /// The directory.
        dir: PathBuf,
        /// Counts the rows this run writes.
        rows_written: Arc<std::sync::atomic::AtomicU64>,
    },
    /// Memory (tests).
    Collect(Arc<Mutex<Vec<Output>>>),
    /// Count rows and record their latency (benchmarks).
    Stats(Arc<RunStats>),
}

/// How far a Nexmark job's source got, for summaries.
#[derive(Debug, Clone, Default)]
pub struct SourceProgress {
    /// The Kafka source's counters (Kafka runs).
    pub kafka: Option<Arc<Progress>>,
    /// Events read from the file (file runs) or generated (generator runs).
    pub events_read: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl SourceProgress {
    /// Events read (or generated) in this run so far.
    pub fn events(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.kafka.as_ref().map_or(0, |p| p.done.load(Relaxed))
            + self.events_read.as_ref().map_or(0, |n| n.load(Relaxed))
    }
}

/// Builds the job `name` running `query` from `source` into `sink`, with
/// every vertex at `parallelism`; also returns counters of the source.
///
/// # Errors
/// An invalid graph (parallelism 0 or above the maximum).
pub fn nexmark_job(
    name: &str,
    query: Query,
    source: &EventSource,
    sink: RowSink,
    parallelism: usize,
) -> Result<(Job, SourceProgress)> {
    let job = JobBuilder::new(name).default_parallelism(parallelism);
    let mut progress = SourceProgress::default();
    // Events keep only the text the query reads.
    let parse = query.event_parser();
    let events: Stream<Event> = match source {
        EventSource::Generator(config) => {
            let (config, counter) = (*config, Arc::new(std::sync::atomic::AtomicU64::new(0)));
            progress.events_read = Some(counter.clone());
            job.source("nexmark-generator", move |ctx: ConnectorContext| {
                Ok(NexmarkGenerator::new(&ctx, config)?.counting(counter.clone()))
            })
        }
        EventSource::Kafka {
            cluster,
            topic,
            bounded,
        } => {
            let source = KafkaSource::new(cluster, &[topic.as_str()])
                .bounded(*bounded)
                .deserializer(move |r: &KafkaRecord<'_>| parse(r.payload.unwrap_or_default()))
                .event_time(Event::date_time)
                .watermarks(WatermarkStrategy::bounded_out_of_orderness(OUT_OF_ORDERNESS_MS));
            progress.kafka = Some(source.progress());
            job.source("nexmark-kafka", source.factory())
        }
        EventSource::File { path, parse_threads } => {
            let source = LineSource::new(path, parse)
                .event_time(Event::date_time, OUT_OF_ORDERNESS_MS)
                .parse_threads(*parse_threads);
            progress.events_read = Some(source.records_read());
            job.source("nexmark-file", source.factory())
        }
    }
    .uid("nexmark-source");
    let rows = queries::build(query, events);
    match sink {
        RowSink::Kafka { cluster, topic } => {
            let serialize = |o: &Output, _key: &mut Vec<u8>, value: &mut Vec<u8>| {
                serde_json::to_writer(value, &o.row)
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            };
            rows.sink(
                "nexmark-kafka-out",
                KafkaSink::new(cluster, &topic, serialize).factory(),
            )
            .uid("nexmark-sink");
        }
        RowSink::Files { dir, rows_written } => {
            rows.sink(
                "nexmark-files",
                // One part per subtask and run: the rows of a file run are gathered into one file at its end.
                FileSink::factory_with(
                    dir,
                    |o: &Output, line: &mut String| o.row.write_json(line),
                    FileSinkOptions {
                        rolling: Rolling::AtSize(u64::MAX),
                        records_written: Some(rows_written),
                    },
                ),
            )
            .uid("nexmark-sink");
        }
        RowSink::Collect(out) => {
            rows.sink("nexmark-collect", CollectSink::factory(out));
        }
        RowSink::Stats(stats) => {
            rows.sink("nexmark-stats", move |_ctx: ConnectorContext| {
                Ok(StatsSink {
                    stats: stats.clone(),
                    local: LocalStats::new(),
                })
            });
        }
    }
    Ok((job.build()?, progress))
}

/// Row counts and latencies over every subtask of a stats sink.
#[derive(Debug)]
pub struct RunStats {
    /// Maps a row's due event time to the wall-clock time the generator
    /// scheduled it ([`weir::clock::now_ns`] scale); `None`: no latency.
    schedule: Option<Schedule>,
    merged: Mutex<LocalStats>,
}

/// The generator's pacing, to tell when a row was due in wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The generator's configuration (event time of each event).
    pub config: GeneratorConfig,
    /// Wall clock ([`weir::clock::now_ns`]) at which event 0 was scheduled.
    pub origin_ns: u64,
    /// Events per second (all subtasks).
    pub rate: u64,
}

impl Schedule {
    /// When the generator scheduled the first event at or after `due_ms`.
    fn scheduled_ns(&self, due_ms: i64) -> u64 {
        let n = self.config.first_event_at(due_ms);
        self.origin_ns + (n as f64 * 1e9 / self.rate.max(1) as f64) as u64
    }
}

#[derive(Debug)]
struct LocalStats {
    rows: u64,
    /// 1 µs .. 1 h at 3 significant digits (`None` only if the library refused those bounds).
    latency_us: Option<hdrhistogram::Histogram<u64>>,
}

impl LocalStats {
    fn new() -> Self {
        LocalStats {
            rows: 0,
            latency_us: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).ok(),
        }
    }
}

impl RunStats {
    /// Statistics without latency.
    pub fn new() -> Arc<Self> {
        Self::with_schedule(None)
    }

    /// Statistics with latency measured against `schedule`.
    pub fn with_schedule(schedule: Option<Schedule>) -> Arc<Self> {
        Arc::new(RunStats {
            schedule,
            merged: Mutex::new(LocalStats::new()),
        })
    }

    /// Rows seen by every finished subtask.
    pub fn rows(&self) -> u64 {
        self.merged.lock().map(|s| s.rows).unwrap_or(0)
    }

    /// Latency quantile `q` (0..=1) in ms, if latency was measured.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        self.schedule?;
        let s = self.merged.lock().ok()?;
        let h = s.latency_us.as_ref()?;
        (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The largest latency in ms, if latency was measured.
    pub fn latency_max_ms(&self) -> Option<f64> {
        self.schedule?;
        let s = self.merged.lock().ok()?;
        let h = s.latency_us.as_ref()?;
        (!h.is_empty()).then(|| h.max() as f64 / 1000.0)
    }
}

/// Counts rows and records latencies into a local histogram, merged into
/// the shared [`RunStats`] when the subtask ends.
struct StatsSink {
    stats: Arc<RunStats>,
    local: LocalStats,
}

impl Sink<Output> for StatsSink {
    fn is_stateful() -> bool {
        false
    }
    fn write(&mut self, records: &mut Vec<Output>) -> Result<()> {
        self.local.rows += records.len() as u64;
        if let (Some(schedule), Some(histogram)) = (&self.stats.schedule, &mut self.local.latency_us) {
            let now = weir::clock::now_ns();
            for o in records.iter() {
                let latency_us = now.saturating_sub(schedule.scheduled_ns(o.due_ms)) / 1000;
                histogram.saturating_record(latency_us.max(1));
            }
        }
        records.clear();
        Ok(())
    }
    fn snapshot(&mut self, _id: CheckpointId) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn commit(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
}

impl Drop for StatsSink {
    fn drop(&mut self) {
        if let Ok(mut merged) = self.stats.merged.lock() {
            merged.rows += self.local.rows;
            if let (Some(into), Some(from)) = (&mut merged.latency_us, &self.local.latency_us) {
                let _ = into.add(from);
            }
        }
    }
}
