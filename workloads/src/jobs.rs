//! Built-in jobs: the demo run by `weir run demo` (and the crash tests), and
//! W1 of the benchmark workloads.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use weir::connectors::collect::{CountingSink, SinkStats};
use weir::connectors::file_sink::FileSink;
use weir::connectors::generator::{Generator, W1Event};
use weir::Result;
use weir::{Job, JobBuilder};
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
    /// A second, identical copy of the output in this directory, through
    /// `Stream::tee` into a second exactly-once file sink (fan-out under the
    /// kill tests).
    pub tee_output: Option<PathBuf>,
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
    let counted = job
        .source("generator", Generator::w1_factory(options.records, options.rate))
        .uid("generator")
        .key_by(|e: &W1Event| e.key)
        .process("running-count-sum", RunningCountSum)
        .uid("running-count-sum");
    let line = |r: &DemoOutput, line: &mut String| {
        let _ = write!(line, "{},{},{},{}", r.index, r.key, r.count, r.sum);
    };
    let counted = match &options.tee_output {
        Some(dir) => {
            let (counted, copy) = counted.tee();
            copy.sink("file-sink-tee", FileSink::factory(dir.clone(), line))
                .uid("file-sink-tee");
            counted
        }
        None => counted,
    };
    counted
        .sink("file-sink", FileSink::factory(options.output.clone(), line))
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
    w1_job_with(
        records,
        rate,
        weir::connectors::generator::W1_KEYS,
        parallelism,
        CountingSink::factory_with(stats),
    )
}

/// W1 (W2 when paced) with `keys` distinct keys and any sink of
/// `(key, running_sum, emit_ns)`; `emit_ns` is the scheduled emit time of a
/// paced run, so `now - emit_ns` at the sink is latency without coordinated omission.
///
/// # Errors
/// An invalid parallelism.
pub fn w1_job_with<S, F>(records: Option<u64>, rate: Option<u64>, keys: u64, parallelism: usize, sink: F) -> Result<Job>
where
    S: weir::connectors::Sink<(u64, u64, u64)>,
    F: Fn(weir::connectors::ConnectorContext) -> Result<S> + Send + 'static,
{
    let job = JobBuilder::new("w1").default_parallelism(parallelism);
    job.source("generator", Generator::w1_factory_keys(records, rate, keys))
        .uid("generator")
        .key_by(|e: &W1Event| e.key)
        .process("running-sum", RunningSum)
        .uid("running-sum")
        .sink("sink", sink);
    job.build()
}

/// Options of the Kafka job (`weir run kafka-count`).
#[derive(Debug, Clone)]
pub struct KafkaCountOptions {
    /// Job name (its directory in the checkpoint store).
    pub job: String,
    /// Bootstrap servers and client properties (TLS, SASL) of every client.
    pub cluster: weir::connectors::kafka::KafkaConnection,
    /// Input topic: values `id,key,value` (UTF-8 integers).
    pub input: String,
    /// Output topic: values `id,key,count,sum`.
    pub output: String,
    /// Parallelism of every vertex.
    pub parallelism: usize,
    /// Stop at the input's end offsets seen at start (final checkpoint, exit).
    pub bounded: bool,
    /// Delivery guarantee of the output.
    pub delivery: weir::connectors::kafka::Delivery,
    /// What to do with input values that do not parse.
    pub bad_records: weir::connectors::kafka::BadRecordPolicy,
    /// Input deleted before it was read: fail (default) or skip and count.
    pub lost_input: weir::connectors::kafka::LostInputPolicy,
    /// Extra librdkafka properties of the source's consumer.
    pub source_properties: Vec<(String, String)>,
    /// Extra librdkafka properties of the sink's producer.
    pub sink_properties: Vec<(String, String)>,
    /// Read only these input partitions (a distributed member's shard).
    pub only_partitions: Option<Vec<i32>>,
    /// Which part of the job this is: all of it, or one side of a
    /// repartition topic (a distributed job whose input is not partitioned
    /// by key).
    pub stage: KafkaCountStage,
}

/// The parts of `kafka-count` when it runs distributed over a repartition
/// topic: `parse` reads the input and writes each record to the partition
/// of the repartition topic that owns its key; `count` reads that topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaCountStage {
    /// Input -> key_by -> count -> output, in one job.
    Whole,
    /// Input -> repartition topic (exactly-once, partitioned by key group).
    Parse {
        /// The repartition topic.
        repartition: String,
        /// Its partition count (divides the max parallelism).
        partitions: u16,
        /// The input's partition count (the upstream shards).
        upstreams: u32,
    },
    /// Repartition topic (read_committed) -> key_by -> count -> output.
    Count {
        /// The repartition topic.
        repartition: String,
    },
}

/// The repartition topic of distributed `kafka-count` named `job`.
pub fn kafka_count_repartition_topic(job: &str) -> String {
    weir::distributed::repartition::topic_name(job, "running-count-sum")
}

/// A record in the repartition topic: index, key, value and emit time,
/// little-endian (the emit time keeps end-to-end latency across the hop).
fn encode_event(e: &W1Event, out: &mut Vec<u8>) {
    for v in [e.index, e.key, e.value, e.emit_ns] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn decode_event(bytes: &[u8]) -> std::result::Result<W1Event, String> {
    let field = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?)) };
    match (bytes.len(), field(0), field(1), field(2), field(3)) {
        (32, Some(index), Some(key), Some(value), Some(emit_ns)) => Ok(W1Event {
            index,
            key,
            value,
            emit_ns,
        }),
        (n, ..) => Err(format!("a kafka-count repartition record has 32 bytes, this one {n}")),
    }
}

/// Parses an input value `id,key,value`.
fn parse_input(r: &weir::connectors::kafka::KafkaRecord<'_>) -> std::result::Result<W1Event, String> {
    let text = std::str::from_utf8(r.payload.unwrap_or_default()).map_err(|e| format!("value is not UTF-8: {e}"))?;
    let mut fields = text.split(',').map(|f| f.trim().parse::<u64>());
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(Ok(index)), Some(Ok(key)), Some(Ok(value)), None) => Ok(W1Event {
            index,
            key,
            value,
            emit_ns: weir::clock::now_ns(),
        }),
        _ => Err(format!("expected `id,key,value` (integers), got {text:?}")),
    }
}

/// Kafka -> key_by(key) -> running count and sum in RocksDB state -> Kafka:
/// input values `id,key,value`, output values `id,key,count,sum`.
///
/// # Errors
/// An invalid parallelism.
pub fn kafka_count_job(options: &KafkaCountOptions) -> Result<(Job, Arc<weir::connectors::kafka::source::Progress>)> {
    use weir::connectors::kafka::{format::display_value, KafkaSink, KafkaSource};
    use weir::distributed::repartition;
    let input = match &options.stage {
        KafkaCountStage::Whole | KafkaCountStage::Parse { .. } => options.input.as_str(),
        KafkaCountStage::Count { repartition } => repartition.as_str(),
    };
    let mut source = KafkaSource::new(&options.cluster, &[input]);
    for (k, v) in &options.source_properties {
        source = source.property(k, v);
    }
    if let Some(only) = &options.only_partitions {
        source = source.only_partitions(only);
    }
    let source = source
        .bounded(options.bounded)
        .on_bad_record(options.bad_records.clone())
        .on_lost_input(options.lost_input);
    let max_parallelism = weir_operators::DEFAULT_MAX_PARALLELISM;
    if let KafkaCountStage::Parse {
        repartition,
        partitions,
        upstreams,
    } = &options.stage
    {
        // One partition per shard: one subtask reads it and writes the hop.
        let source = source.deserializer(
            parse_input as fn(&weir::connectors::kafka::KafkaRecord<'_>) -> std::result::Result<W1Event, String>,
        );
        let progress = source.progress();
        let hop = repartition::Hop {
            partitions: *partitions,
            max_parallelism,
            upstream: options
                .only_partitions
                .as_deref()
                .and_then(<[i32]>::first)
                .copied()
                .unwrap_or(0) as u32,
            upstreams: *upstreams,
        };
        let serializer = repartition::serializer(hop, |e: &W1Event| e.key, encode_event);
        let mut sink = KafkaSink::new(&options.cluster, repartition, serializer);
        for (k, v) in &options.sink_properties {
            sink = sink.property(k, v);
        }
        let job = JobBuilder::new(&options.job).default_parallelism(1);
        job.source("kafka-in", source.factory())
            .uid("kafka-in")
            .sink("repartition", sink.factory())
            .uid("repartition");
        return Ok((job.build()?, progress));
    }
    let job = JobBuilder::new(&options.job).default_parallelism(options.parallelism);
    let (records, progress) = if let KafkaCountStage::Count { .. } = &options.stage {
        let mut source = source.read_committed(true).control(repartition::control);
        if options.bounded {
            // Ends once the parse shards did, not at the end seen at start.
            source = source.bounded(false).upstream_input(&options.input);
        }
        let source = source.deserializer(repartition::deserializer(decode_event));
        let progress = source.progress();
        (
            job.source("repartition-in", source.factory()).uid("repartition-in"),
            progress,
        )
    } else {
        let source = source.deserializer(
            parse_input as fn(&weir::connectors::kafka::KafkaRecord<'_>) -> std::result::Result<W1Event, String>,
        );
        let progress = source.progress();
        (job.source("kafka-in", source.factory()).uid("kafka-in"), progress)
    };
    let mut sink =
        KafkaSink::new(&options.cluster, &options.output, display_value::<OutputLine>()).delivery(options.delivery);
    for (k, v) in &options.sink_properties {
        sink = sink.property(k, v);
    }
    records
        .key_by(|e: &W1Event| e.key)
        .process("running-count-sum", RunningCountSum)
        .uid("running-count-sum")
        .map(|r: DemoOutput| OutputLine(r))
        .sink("kafka-out", sink.factory())
        .uid("kafka-out");
    Ok((job.build()?, progress))
}

/// `id,key,count,sum`.
#[derive(Debug, Clone, Copy)]
pub struct OutputLine(pub DemoOutput);

impl std::fmt::Display for OutputLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.0.index, self.0.key, self.0.count, self.0.sum)
    }
}

/// The W1 generator with event time `ts_ms = index / 1000` (W3 of the
/// workloads: 1 M records per event-second, monotone), watermark = newest
/// event time − 1.
pub struct W3Generator {
    inner: Generator,
    newest: Option<i64>,
}

impl weir::connectors::Source<W1Event> for W3Generator {
    fn poll(&mut self, out: &mut Vec<W1Event>, max: usize) -> Result<weir::connectors::SourcePoll> {
        let poll = self.inner.poll(out, max)?;
        if let Some(last) = out.last() {
            self.newest = Some(w3_time(last));
        }
        Ok(poll)
    }
    fn watermark(&mut self) -> Option<weir_operators::Timestamp> {
        self.newest.map(|t| weir_operators::Timestamp(t - 1))
    }
    fn position(&mut self) -> Result<Vec<u8>> {
        self.inner.position()
    }
    fn describe_position(&self) -> String {
        self.inner.describe_position()
    }
}

/// W3's event time of a generated record: `index / 1000` ms.
pub fn w3_time(e: &W1Event) -> i64 {
    (e.index / 1000) as i64
}

/// W3: generator (event time `index / 1000` ms) -> key_by(key) -> tumbling
/// 1 s event-time window count per key in RocksDB keyed state -> `(key,
/// window_start, count)` -> `sink`. Bounded + drain fires the last windows.
///
/// # Errors
/// An invalid parallelism.
pub fn w3_job<S, F>(records: u64, parallelism: usize, sink: F) -> Result<Job>
where
    S: weir::connectors::Sink<(u64, i64, u64)>,
    F: Fn(weir::connectors::ConnectorContext) -> Result<S> + Send + 'static,
{
    use weir_operators::{aggregators::Count, Tumbling, Windowed};
    let job = JobBuilder::new("w3").default_parallelism(parallelism);
    job.source("generator", move |ctx: weir::connectors::ConnectorContext| {
        Ok(W3Generator {
            inner: Generator::new(&ctx, Some(records), None)?,
            newest: None,
        })
    })
    .uid("generator")
    .key_by(|e: &W1Event| e.key)
    .window_aggregate("window-count", Tumbling::of(1_000), w3_time, Count)
    .uid("window-count")
    .flat_map(|(key, w): (u64, Windowed<u64, W1Event>)| match w {
        Windowed::Result { window, value } => Some((key, window.start, value)),
        Windowed::Late(_) => None,
    })
    .sink("sink", sink);
    job.build()
}
